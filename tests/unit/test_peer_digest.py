"""Without [peer_check] the running config's digest is made in a child process (a large
config's canonical form never reaches the daemon's heap) and is the form's digest."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import director.peer.service
from director.config import parse_config
from director.config.model import Config
from director.metrics import Metrics
from director.peer.canonical import Form, canonical_form, digest
from director.peer.service import PeerCheck

CONFIG = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.20"
port = 80
  [[virtual_server.real_server]]
  address = "198.18.1.{n}"
"""


def test_the_digest_without_peer_check_is_made_in_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made_by = tmp_path / "made-by"

    def recorded(config: Config, key: bytes | None) -> Form:
        made_by.write_text(str(os.getpid()))
        return canonical_form(config, key)

    monkeypatch.setattr(director.peer.service, "canonical_form", recorded)
    first, second = parse_config(CONFIG.format(n=21)), parse_config(CONFIG.format(n=22))

    async def scenario() -> list[tuple[str, int]]:
        check = PeerCheck(Metrics(), tmp_path / "state")
        seen = []
        for config in (first, second, second):
            await check.apply(config, None)
            assert check.snapshot is not None
            seen.append((check.snapshot.digest, check.snapshot.generation))
        await check.stop()
        return seen

    seen = asyncio.run(scenario())
    assert int(made_by.read_text()) != os.getpid()
    want = [digest(canonical_form(c, None)) for c in (first, second, second)]
    assert [d for d, _ in seen] == want and want[0] != want[1]
    assert [g for _, g in seen] == [1, 2, 2]
