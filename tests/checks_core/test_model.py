"""The per-probe value types keep a dataclass's contract with their faster __init__."""

from __future__ import annotations

import dataclasses

import pytest

from checks.model import ProbeOutcome, ProbeResult, StartProbe


def test_per_probe_types_keep_the_dataclass_contract() -> None:
    result = ProbeResult(True, 0.25, None)
    assert result.weight is None and result.local is None  # the defaults
    assert result == ProbeResult(ok=True, latency=0.25, error=None, weight=None, local=None)
    assert hash(result) == hash(ProbeResult(True, 0.25, None, None))
    assert result != ProbeResult(True, 0.25, None, 3)
    assert result != ProbeResult(True, 0.25, None, None, "EMFILE")
    assert repr(result) == (
        "ProbeResult(ok=True, latency=0.25, error=None, weight=None, local=None)"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        ProbeResult(True)  # type: ignore[call-arg]
    start = StartProbe(7, "web", "spec", 2, 1.0, 1.5, 3.0)
    assert (start.probe_id, start.check_id, start.attempt, start.timeout) == (7, "web", 2, 3.0)
    assert start.lag == 0.5
    assert dataclasses.replace(start, attempt=3).attempt == 3
    outcome = ProbeOutcome(False, 0.1, "refused", None, 9.0, 1)
    assert dataclasses.astuple(outcome) == (False, 0.1, "refused", None, 9.0, 1)
