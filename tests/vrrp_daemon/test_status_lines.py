"""``directorctl status`` (plain text): the VRRP lines show dropped adverts by reason."""

from __future__ import annotations

from director.control.ctl import render_status


def vrrp_lines(instance: dict[str, object]) -> list[str]:
    text = render_status({"role": "backup", "vrrp": [instance]})
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("vrrp:"))
    end = next(i for i, line in enumerate(lines) if i > first and not line.startswith(" " * 10))
    return lines[first:end]


def test_dropped_adverts_by_reason_under_their_instance() -> None:
    instance: dict[str, object] = {
        "name": "VI_1",
        "state": "backup",
        "priority": 100,
        "peer": "198.18.0.2",
        "adverts_dropped": {"socket_overflow": 490, "bad_checksum": 3},
        "answers_suppressed": 0,
        "vips_restored": 0,
    }
    assert vrrp_lines(instance) == [
        "vrrp:     VI_1  BACKUP  prio 100  master heard 198.18.0.2",
        "          adverts dropped: bad_checksum 3, socket_overflow 490",
    ]


def test_quiet_when_nothing_was_dropped_and_held_answers_and_restores_shown() -> None:
    quiet: dict[str, object] = {"name": "VI_1", "state": "master", "priority": 150}
    assert vrrp_lines({**quiet, "adverts_dropped": {}}) == ["vrrp:     VI_1  MASTER  prio 150"]
    assert vrrp_lines({**quiet, "answers_suppressed": 1990, "vips_restored": 1}) == [
        "vrrp:     VI_1  MASTER  prio 150",
        "          answers held back 1990, VIPs restored 1",
    ]
