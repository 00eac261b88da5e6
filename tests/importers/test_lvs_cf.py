"""Piranha lvs.cf files -> director config data and notes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from director.importers.lvs_cf import import_lvs_cf
from director.importers.notes import ImportParseError
from tests.importers.conftest import DATA, lvs_cf, notes_text, validated


@pytest.mark.parametrize("name", ["lvs_nat.cf", "lvs_dr_fwmark.cf", "parity_lvs.cf"])
@pytest.mark.parametrize("node", ["primary", "backup"])
def test_every_import_loads_as_a_director_config(name: str, node: str) -> None:
    config = validated(lvs_cf(name, "primary" if node == "primary" else "backup"))
    assert config.virtual_servers
    assert config.vrrp_instances


def test_nat_with_send_expect_and_heartbeat() -> None:
    imported = lvs_cf("lvs_nat.cf")
    config = imported.config
    (instance,) = config["vrrp_instance"]
    assert instance == {
        "name": "lvs",
        "interface": "eth0",
        "vrid": 50,
        "priority": 150,
        "primary_address": "198.18.0.2",
        "unicast_peers": ["198.18.0.3"],
        "advert_interval": 6.0,
        "virtual_addresses": [
            {"address": "198.18.0.10/24", "device": "eth0", "label": "eth0:1"},
            {"address": "198.18.1.254/24", "device": "eth1", "label": "eth1:1"},
        ],
    }
    assert config["sync_daemon"] == {"interface": "eth1", "instance": "lvs", "sync_id": 3}
    http, app = config["virtual_server"]
    assert http["forwarding"] == "nat"
    assert http["on_failure"] == "quiesce"
    assert http["sorry_server"] == {"address": "198.18.2.9"}
    assert http["check"] == {
        "type": "tcp",
        "interval": 6.0,
        "rise": 1,
        "fall": 1,
        "timeout": 6.0,
        "reentry": 15.0,
        "send": "GET / HTTP/1.0\r\n\r\n",
        "expect": "HTTP",
    }
    assert [(r["name"], r["port"], r["weight"]) for r in http["real_server"]] == [
        ("web1", 8080, 2),
        ("web2", 8080, 1),
    ]
    assert app["check"]["command"] == [
        "/usr/local/bin/check_app",
        "--host",
        "{address}",
        "--port",
        "8000",
    ]
    text = notes_text(imported)
    assert "lvs_nat.cf:6: changed: heartbeat: Piranha's heartbeat becomes VRRP" in text
    assert "lvs_nat.cf:45: not carried: server web3: active = 0" in text
    assert "lvs_nat.cf:67: not carried: virtual old" in text
    assert "lvs_nat.cf:72: not carried: failover ftp" in text
    assert "load_monitor" in text
    assert "send_program with expect = OK" in text


def test_backup_node_swaps_the_peers() -> None:
    (instance,) = lvs_cf("lvs_nat.cf", "backup").config["vrrp_instance"]
    assert instance["priority"] == 100
    assert instance["primary_address"] == "198.18.0.3"
    assert instance["unicast_peers"] == ["198.18.0.2"]


def test_direct_routing_fwmark_persistence_and_check_x224() -> None:
    imported = lvs_cf("lvs_dr_fwmark.cf")
    exchange, rdp = imported.config["virtual_server"]
    assert exchange["fwmark"] == 80
    assert "address" not in exchange
    assert exchange["persistence_timeout"] == 1800
    assert exchange["persistence_netmask"] == "255.255.255.0"
    assert exchange["forwarding"] == "dr"
    assert exchange["check"]["command"] == ["/usr/local/bin/check_exchange.sh", "{address}"]
    assert rdp["check"]["type"] == "rdp"
    assert rdp["check"]["port"] == 3389
    assert "port" not in rdp["real_server"][0]
    text = notes_text(imported)
    assert "recognised Nagios check_x224" in text
    assert "server ts1 port = 3390" in text


def test_unknown_keys_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "lvs.cf"
    path.write_text(
        "primary = 198.18.0.2\nfrobnicate = 1\nvirtual v {\n  address = 198.18.0.10 eth0:1\n"
        "  port = 80\n  wobble = yes\n  server s {\n    address = 198.18.1.1\n    zap = 2\n"
        "  }\n}\n"
    )
    text = notes_text(import_lvs_cf(path))
    assert "lvs.cf:2: not carried: frobnicate = 1" in text
    assert "lvs.cf:6: not carried: virtual v > wobble = yes" in text
    assert "lvs.cf:9: not carried: server s > zap = 2" in text


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("virtual v {\n  port = 80\n", "lvs.cf:1:", "never closed"),
        ("primary = 198.18.0.2\n}\n", "lvs.cf:2:", "closes no block"),
        ("primary 198.18.0.2\n", "lvs.cf:1:", "expected 'key = value'"),
        ('virtual v {\n  send = "GET\n}\n', "lvs.cf:2:", "unterminated"),
        ("real x {\n}\n", "lvs.cf:1:", "expected 'virtual NAME {'"),
    ],
)
def test_parse_errors_name_file_and_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = tmp_path / "lvs.cf"
    path.write_text(text)
    with pytest.raises(ImportParseError) as exc:
        import_lvs_cf(path)
    assert str(exc.value).startswith(str(tmp_path / where))
    assert message in str(exc.value)


@pytest.mark.parametrize("name", ["lvs_nat.cf", "lvs_dr_fwmark.cf", "parity_lvs.cf"])
def test_nothing_is_dropped_silently(tmp_path: Path, name: str) -> None:
    """An unknown key at the top and in every block shows up in the notes (or the whole block
    it is in is listed as not carried)."""
    out = ["zz_top = 1"]
    planted = {1: "zz_top"}
    for text in (DATA / name).read_text().splitlines():
        out.append(text)
        if text.rstrip().endswith("{"):
            out.append(f"  zz_planted_{len(planted)} = 1")
            planted[len(out)] = f"zz_planted_{len(planted)}"
    path = tmp_path / name
    path.write_text("\n".join(out) + "\n")
    notes = notes_text(import_lvs_cf(path))
    for line, word in planted.items():
        alone = re.search(rf"{name}:{line}: not carried: .*{word}", notes)
        block = re.search(rf"{name}:{line - 1}: not carried: ", notes)
        assert alone or block, (word, notes)
