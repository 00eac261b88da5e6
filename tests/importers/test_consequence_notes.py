"""Notes say the consequence, not only the fact: when an import changes what goes on the wire
or how many probes run, the note says so (issue 14, item 4)."""

from __future__ import annotations

from pathlib import Path

from director.importers.from_keepalived import import_keepalived
from director.importers.lvs_cf import import_lvs_cf
from director.importers.notes import Imported
from tests.importers.conftest import notes_text, validated


def imported(tmp_path: Path, text: str) -> Imported:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    result = import_keepalived(path)
    validated(result)
    return result


def test_group_expansion_says_how_many_times_the_probes(tmp_path: Path) -> None:
    text = (
        "virtual_server_group WEB {\n  198.18.0.10 80\n  198.18.0.11 80\n  198.18.0.12 80\n}\n"
        "virtual_server group WEB {\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n"
        "  real_server 198.18.1.11 80 {\n    TCP_CHECK {\n      connect_timeout 2\n    }\n  }\n"
        "  real_server 198.18.1.12 80 {\n    TCP_CHECK {\n      connect_timeout 2\n    }\n  }\n}\n"
    )
    result = imported(tmp_path, text)
    assert len(result.config["virtual_server"]) == 3
    assert all("check" in vs for vs in result.config["virtual_server"])
    text = notes_text(result)
    assert "one service per member of group WEB (3)" in text
    assert "probed 3 times as often as keepalived probed them" in text
    assert "6 checks instead of 2" in text


def test_dropped_authentication_says_what_the_adverts_carry(tmp_path: Path) -> None:
    text = (
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  version 3\n"
        "  virtual_ipaddress {\n    198.18.0.10/24\n  }\n"
        "  authentication {\n    auth_type PASS\n    auth_pass x\n  }\n}\n"
    )
    note = notes_text(imported(tmp_path, text))
    assert "the adverts carry no password (authentication type 0)" in note
    assert "from a peer that still sends one are dropped" in note


def test_version_change_says_what_the_adverts_become(tmp_path: Path) -> None:
    text = (
        "vrrp_instance VI_6 {\n  interface eth0\n  virtual_router_id 51\n  version 2\n"
        "  virtual_ipaddress {\n    2001:db8::10/64\n  }\n}\n"
    )
    note = notes_text(imported(tmp_path, text))
    assert "IPv6: version = 3, as keepalived sets it; the adverts are VRRPv3" in note


def test_fewer_urls_says_fewer_requests(tmp_path: Path) -> None:
    text = (
        "virtual_server 198.18.0.10 80 {\n  lb_kind NAT\n  protocol TCP\n"
        "  real_server 198.18.1.11 80 {\n    HTTP_GET {\n"
        "      url {\n        path /a\n      }\n      url {\n        path /b\n      }\n"
        "      url {\n        path /c\n      }\n    }\n  }\n}\n"
    )
    note = notes_text(imported(tmp_path, text))
    assert "directord requests 1 URL a round where keepalived requested 3" in note


def test_state_master_note_says_preemption(tmp_path: Path) -> None:
    text = (
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  state MASTER\n"
        "  priority 150\n  nopreempt\n  virtual_ipaddress {\n    198.18.0.10/24\n  }\n}\n"
    )
    note = notes_text(imported(tmp_path, text))
    assert "takes the addresses back from a lower-priority master when it returns" in note


def test_heartbeat_note_says_pulse_and_vrrp_do_not_mix(tmp_path: Path) -> None:
    path = tmp_path / "lvs.cf"
    path.write_text(
        "primary = 198.18.0.2\nbackup = 198.18.0.3\nheartbeat = 1\nnetwork = nat\n"
        "virtual web {\n  address = 198.18.0.10 eth0:1\n  port = 8080\n"
        "  server a {\n    address = 198.18.1.11\n  }\n}\n"
    )
    note = notes_text(import_lvs_cf(path))
    assert "a director still running pulse and this one would both be master" in note
