"""The peer exchange's authentication (director.peer.auth), the per-peer verdicts
(director.peer.state), the [peer_check] table, the metrics and how directorctl shows them:
pure, stepped clock."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from director.config import ConfigError, parse_config
from director.config.peer import KeyFileError, PeerCheckSettings, read_key
from director.metrics import Metrics, Sources
from director.peer import auth
from director.peer.command import exit_status, render, status_lines
from director.peer.state import Answered, Failed, PeerTracker, Verdict

KEY = auth.auth_key(b"0123456789abcdef0123456789abcdef")
OTHER = auth.auth_key(b"fedcba9876543210fedcba9876543210")
NOW = 1_800_000_000.0
PATH = "/peer/v1/digest"


def signed(key: bytes = KEY, now: float = NOW, nonce: bytes = b"\x01" * 16) -> dict[str, str]:
    return auth.sign_request(key, "GET", PATH, b"", now, nonce)


def verify(headers: dict[str, str], guard: auth.ReplayGuard, now: float = NOW) -> str | None:
    refusal = auth.verify_request(KEY, "GET", PATH, b"", headers, now, guard)
    return None if refusal is None else f"{refusal.status} {refusal.reason}"


def test_a_signed_request_is_accepted_once() -> None:
    guard = auth.ReplayGuard(30)
    headers = signed()
    assert verify(headers, guard) is None
    assert verify(headers, guard, NOW + 1) == "403 replayed"
    assert verify(signed(nonce=b"\x02" * 16), guard, NOW + 1) is None


def test_unsigned_wrongly_keyed_or_tampered_requests_get_401_and_nothing_else() -> None:
    guard = auth.ReplayGuard(30)
    assert verify({}, guard) == "401 missing"
    assert verify(signed(OTHER), guard) == "401 bad_signature"
    tampered = {**signed(), auth.TIME: f"{NOW + 1:.3f}"}
    assert verify(tampered, guard) == "401 bad_signature"
    refusal = auth.verify_request(KEY, "GET", "/peer/v1/canonical", b"", signed(), NOW, guard)
    assert refusal is not None and refusal.reason == "bad_signature"  # another path
    refusal = auth.verify_request(KEY, "GET", PATH, b"x", signed(), NOW, guard)
    assert refusal is not None and refusal.text == auth.UNAUTHORIZED  # another body
    assert verify({**signed(), auth.SIGNATURE: "zz" * 200}, guard) == "401 missing"
    assert len(guard) == 0  # nothing unauthenticated is remembered


def test_clock_skew_beyond_the_window_is_refused_both_ways() -> None:
    guard = auth.ReplayGuard(30)
    assert verify(signed(now=NOW - 31), guard) == "403 clock_skew"
    assert verify(signed(now=NOW + 31), guard) == "403 clock_skew"
    assert verify(signed(now=NOW - 29), guard) is None


def test_a_replay_after_the_window_is_stale_and_nonces_are_forgotten_then() -> None:
    guard = auth.ReplayGuard(30)
    headers = signed()
    assert verify(headers, guard) is None
    assert verify(headers, guard, NOW + 45) == "403 clock_skew"
    for i in range(10):
        assert (
            verify(signed(now=NOW + 100 + i, nonce=bytes([i]) * 16), guard, NOW + 100 + i) is None
        )
    assert len(guard) == 10  # the first one is gone (older than twice the window)


def test_the_answer_is_bound_to_the_request() -> None:
    body = b'{"digest": "x"}'
    headers = auth.sign_response(KEY, "aa" * 16, 200, body, NOW)
    assert auth.verify_response(KEY, "aa" * 16, 200, body, headers, NOW, 30) is None
    # a recorded answer to another request, another body, another key, no signature
    assert auth.verify_response(KEY, "bb" * 16, 200, body, headers, NOW, 30) is not None
    assert auth.verify_response(KEY, "aa" * 16, 200, b"{}", headers, NOW, 30) is not None
    assert auth.verify_response(OTHER, "aa" * 16, 200, body, headers, NOW, 30) is not None
    assert auth.verify_response(KEY, "aa" * 16, 200, body, {}, NOW, 30) == (
        "the answer is not signed"
    )


# -- verdicts ----------------------------------------------------------------------------------


def verdict(tracker: PeerTracker) -> Verdict:
    return tracker.view.verdict


def test_a_peer_verdict_is_logged_once_per_change() -> None:
    tracker = PeerTracker("198.18.0.2:9470")
    assert verdict(tracker) is Verdict.UNKNOWN
    changed = tracker.polled(Answered("a", 1), "a", NOW)
    assert changed is not None and changed.previous is Verdict.UNKNOWN
    assert verdict(tracker) is Verdict.MATCH and tracker.view.since == NOW
    assert tracker.polled(Answered("a", 1), "a", NOW + 3) is None
    # the peer reloads another config
    assert tracker.needs_details("a", "b")
    changed = tracker.polled(Answered("b", 2), "a", NOW + 6, ("virtual_service X",))
    assert changed is not None and verdict(tracker) is Verdict.MISMATCH
    assert tracker.view.sections == ("virtual_service X",)
    assert not tracker.needs_details("a", "b")  # compared already
    assert tracker.polled(Answered("b", 2), "a", NOW + 9) is None
    assert tracker.view.sections == ("virtual_service X",)
    # it edits again: still a mismatch, but another one: logged again
    assert tracker.needs_details("a", "c")
    changed = tracker.polled(Answered("c", 3), "a", NOW + 12, ("kernel",))
    assert changed is not None and changed.previous is Verdict.MISMATCH
    assert tracker.view.since == NOW + 6  # mismatched since the first difference
    # unreachable, then back with our config
    changed = tracker.polled(Failed(Verdict.UNREACHABLE, "refused"), "a", NOW + 15)
    assert changed is not None and tracker.view.detail == "refused"
    assert tracker.polled(Failed(Verdict.UNREACHABLE, "timeout"), "a", NOW + 18) is None
    changed = tracker.polled(Answered("a", 4), "a", NOW + 21)
    assert changed is not None and changed.previous is Verdict.UNREACHABLE
    assert tracker.view.as_dict()["differs"] == [] and tracker.view.last_contact == NOW + 21


def test_what_differed_is_forgotten_when_the_digests_move_and_cannot_be_compared() -> None:
    tracker = PeerTracker("p")
    tracker.polled(Answered("b", 2), "a", NOW, ("kernel",))
    assert tracker.view.as_dict()["differs"] == ["kernel"]
    # the peer changes again and its canonical form cannot be fetched this time
    assert tracker.needs_details("a", "c")
    changed = tracker.polled(Answered("c", 3), "a", NOW + 3, None)
    assert changed is not None and tracker.view.as_dict()["differs"] == []
    assert tracker.needs_details("a", "c")  # asked again at the next poll
    tracker.polled(Answered("c", 3), "a", NOW + 6, ("virtual_service X",))
    assert tracker.view.as_dict()["differs"] == ["virtual_service X"]
    assert not tracker.needs_details("a", "c")


# -- [peer_check] ------------------------------------------------------------------------------


def key_file(tmp_path: Path, mode: int = 0o600, data: bytes = b"k" * 32) -> Path:
    path = tmp_path / "peer.key"
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def config_text(key: Path, extra: str = "") -> str:
    return (
        "[peer_check]\n"
        'listen_address = "198.18.0.1:9470"\n'
        'peers = ["198.18.0.2:9470", "[2001:db8::2]:9470", "d2.example.net:9470"]\n'
        f'key_file = "{key}"\n' + extra
    )


def test_the_peer_check_table(tmp_path: Path) -> None:
    config = parse_config(config_text(key_file(tmp_path)))
    assert config.peer_check is not None
    assert config.peer_check.interval == 3.0 and config.peer_check.timeout == 2.0
    assert config.peer_check.listen() == ("198.18.0.1", 9470)


def test_a_key_file_others_may_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o644)
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(path))
    text = str(info.value)
    assert "peer_check.key_file (line 4)" in text
    assert f'found mode 0644 on "{path}": chmod 600 {path}' in text
    with pytest.raises(KeyFileError, match="at least 16 bytes"):
        read_key(str(key_file(tmp_path, 0o600, b"short\n")))
    with pytest.raises(KeyFileError, match="no such file"):
        read_key(str(tmp_path / "missing"))
    assert read_key(str(key_file(tmp_path, 0o400, b"  " + b"k" * 20 + b"\n"))) == b"k" * 20


def test_every_peer_check_mistake_at_once(tmp_path: Path) -> None:
    text = (
        "[peer_check]\n"
        'listen_address = "d1.example.net:9470"\n'
        'peers = ["d1.example.net:9470", "198.18.0.2"]\n'
        f'key_file = "{key_file(tmp_path)}"\n'
        "interval = 1\n"
        "timeout = 2\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert 'peer_check.peers[1] (line 3): expected "ADDRESS:PORT"' in str(info.value)
    text = text.replace(', "198.18.0.2"', "")
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert "3 problems" in message, message
    assert "peer_check.timeout (line 6): expected a timeout shorter than interval (1 s)" in message
    assert "this one's own listen_address" in message
    assert "peer_check.listen_address (line 2): expected an IP address to listen on" in message


# -- how directorctl shows it ------------------------------------------------------------------


def test_status_lines() -> None:
    st = {
        "peer_check": {
            "digest": "0123456789abcdef" * 4,
            "generation": 3,
            "peers": [
                {"peer": "198.18.0.2:9470", "state": "match", "generation": 5},
                {
                    "peer": "198.18.0.3:9470",
                    "state": "mismatch",
                    "since": NOW - 90,
                    "differs": ["virtual_service TCP 198.18.0.10:443", "kernel"],
                },
                {"peer": "198.18.0.4:9470", "state": "unauthenticated", "since": NOW,
                 "detail": "the peer refused our request"},
            ],
        }
    }  # fmt: skip
    assert status_lines(st, NOW) == [
        "config:   generation 3, digest 0123456789ab",
        "peer:     198.18.0.2:9470 same config (generation 5)",
        "PEER:     CONFIG DIFFERS from 198.18.0.3:9470 for 90 s: virtual_service TCP "
        "198.18.0.10:443, kernel; run directorctl diff-peer 198.18.0.3:9470",
        "PEER:     198.18.0.4:9470 UNAUTHENTICATED for 0 s: the peer refused our request",
    ]
    assert status_lines({}) == []


def test_diff_peer_exit_status_and_output() -> None:
    same = {"peer": "p", "state": "match", "here": {"digest": "ab" * 32, "generation": 2},
            "there": {"generation": 7}}  # fmt: skip
    line = "kernel: tcp_timeout: here 1, peer 2"
    differ = {"peer": "q", "state": "mismatch", "here": {"generation": 2},
              "there": {"generation": 8}, "differences": [line]}  # fmt: skip
    down = {"peer": "r", "state": "unreachable", "error": "cannot connect"}
    assert exit_status({"peers": [same]}) == 0
    assert exit_status({"peers": [same, differ]}) == 1
    assert exit_status({"peers": [same, differ, down]}) == 2
    assert exit_status({"peers": []}) == 2
    assert render({"peers": [same, differ, down]}).splitlines() == [
        "peer p: same shared config (digest abababababab, generation here 2, peer 7)",
        "peer q: 1 difference (generation here 2, peer 8)",
        "  kernel: tcp_timeout: here 1, peer 2",
        "peer r: UNREACHABLE: cannot connect",
    ]


def test_the_peer_metrics() -> None:
    peers = [
        {"peer": "198.18.0.2:9470", "state": "match", "generation": 4, "last_contact": NOW},
        {"peer": "198.18.0.3:9470", "state": "mismatch", "generation": 9, "last_contact": NOW},
        {"peer": "198.18.0.4:9470", "state": "unreachable", "generation": None},
    ]
    metrics = Metrics(Sources(peers=lambda: {"generation": 3, "peers": peers}))
    metrics.peer_refused("bad_signature")
    text = metrics.render().decode()
    lines = set(text.splitlines())
    assert "director_config_generation 3.0" in lines
    assert 'director_peer_config_match{peer="198.18.0.2:9470"} 1.0' in lines
    assert 'director_peer_config_match{peer="198.18.0.3:9470"} 0.0' in lines
    assert 'director_peer_config_match{peer="198.18.0.4:9470"}' not in text  # unknown, not 0
    assert 'director_peer_check_state{peer="198.18.0.4:9470",state="unreachable"} 1.0' in lines
    assert 'director_peer_check_state{peer="198.18.0.4:9470",state="match"} 0.0' in lines
    assert 'director_peer_config_generation{peer="198.18.0.3:9470"} 9.0' in lines
    assert 'director_peer_requests_refused_total{reason="bad_signature"} 1.0' in lines
    # without [peer_check]: the generation only; before the first config: nothing
    alone = Metrics(Sources(peers=lambda: {"generation": 1, "peers": []})).render().decode()
    assert "director_config_generation 1.0" in alone and "director_peer_config" not in alone
    assert "director_config_generation" not in Metrics().render().decode()


def test_the_reference_documents_every_peer_check_key_and_its_example_is_valid(
    tmp_path: Path,
) -> None:
    reference = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    text = reference.read_text()
    for name in PeerCheckSettings.model_fields:
        assert f"| `{name}` |" in text, name
    section = text[text.index("## `[peer_check]`") :]
    [example] = re.findall(r"```toml\n(.*?)```", section[: section.index("\n## ")], re.S)
    key = key_file(tmp_path)
    config = parse_config(example.replace("/etc/director/peer.key", str(key)))
    assert config.peer_check is not None and config.peer_check.peers == ("198.18.0.2:9470",)
