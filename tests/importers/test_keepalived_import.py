"""keepalived.conf files in the styles used in the field -> director config data and notes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from director.importers.from_keepalived import import_keepalived
from director.importers.notes import ImportParseError
from tests.importers.conftest import DATA, keepalived, notes_text, validated

KEEPALIVED_FILES = sorted(p.name for p in DATA.glob("*.conf"))
# Blocks whose lines are data (addresses, names), not keywords.
LIST_BLOCKS = (
    "group",
    "virtual_ipaddress",
    "unicast_peer",
    "track_interface",
    "track_script",
    "notification_email",
    "virtual_server_group",
)


@pytest.mark.parametrize("name", [*KEEPALIVED_FILES, "include/keepalived.conf"])
def test_every_import_loads_as_a_director_config(name: str) -> None:
    config = validated(keepalived(name))
    assert config.virtual_servers or config.vrrp_instances


def test_nat_with_http_get() -> None:
    imported = keepalived("nat_http.conf")
    web, tls = imported.config["virtual_server"]
    assert web | {"check": None, "real_server": None} == {
        "protocol": "tcp",
        "address": "198.18.0.10",
        "port": 80,
        "scheduler": "wlc",
        "forwarding": "nat",
        "persistence_timeout": 300,
        "persistence_netmask": "255.255.255.0",
        "sorry_server": {"address": "198.18.2.9", "port": 8080},
        "check": None,
        "real_server": None,
    }
    # the same checker on both real servers becomes the service's check
    assert web["check"] == {
        "type": "http",
        "interval": 6.0,
        "timeout": 3.0,
        "rise": 1,
        "fall": 1,
        "attempts": 4,  # nb_get_retry 3: four probes before keepalived gives up
        "retry_delay": 2.0,
        "http_version": "1.0",
        "path": "/healthz",
        "expect_status": ["200-299", 301],
    }
    assert [(r["address"], r["port"], r["weight"]) for r in web["real_server"]] == [
        ("198.18.1.11", 8080, 3),
        ("198.18.1.12", 8080, 1),
    ]
    assert tls["on_failure"] == "quiesce"
    assert tls["check"]["host"] == "www.example.com"  # virtualhost of the service
    assert tls["check"]["timeout"] == 10.0  # connect_timeout 12 > delay_loop 10
    text = notes_text(imported)
    assert "nat_http.conf:63: not carried: url digest" in text
    assert "nat_http.conf:65: not carried: HTTP_GET url /other" in text
    assert "nat_http.conf:60: changed: HTTP_GET timeout" in text
    assert "router_id LVS_WEB1" in text
    assert "smtp_server" in text


def test_direct_routing_resets_ports_like_keepalived() -> None:
    imported = keepalived("dr.conf")
    tcp, udp = imported.config["virtual_server"]
    assert tcp["forwarding"] == "dr"
    assert tcp["scheduler_flags"] == ["sh-fallback", "sh-port"]
    assert tcp["on_failure"] == "quiesce"
    assert [r.get("port") for r in tcp["real_server"]] == [None, None]
    assert tcp["real_server"][0]["upper_threshold"] == 2000
    assert tcp["check"]["type"] == "tcp"
    assert tcp["check"]["attempts"] == 3
    assert udp["one_packet"] is True
    assert udp["protocol"] == "udp"
    text = notes_text(imported)
    assert "dr.conf:22: changed: real_server 198.18.1.22 8443" in text
    assert "ha_suspend" in text


def test_fwmark_and_misc_checks_recognised() -> None:
    imported = keepalived("fwmark_misc.conf")
    exchange, rdp, app, portal = imported.config["virtual_server"]
    assert exchange["fwmark"] == 80
    assert exchange["check"]["type"] == "exchange"
    assert exchange["check"]["vdirs"] == ["owa", "ecp", "ews", "Microsoft-Server-ActiveSync"]
    assert exchange["check"]["port"] == 443
    assert exchange["check"]["verify"] is False
    assert rdp["check"]["type"] == "rdp"
    assert rdp["check"]["port"] == 3389
    # a script of its own stays a script, the server's address and port as placeholders
    assert app["check"]["command"] == ["/usr/local/bin/check_app.sh", "{address}", "{port}"]
    assert app["check"]["timeout"] == 5.0  # no misc_timeout: keepalived allows delay_loop
    assert portal["check"] | {"interval": 0} == {
        "type": "https",
        "interval": 0,
        "timeout": 4.0,
        "rise": 1,
        "fall": 1,
        "attempts": 1,
        "retry_delay": 1.0,
        "port": 443,
        "path": "/portal/ping",
        "verify": False,
        "expect_status": ["200-399"],
    }
    text = notes_text(imported)
    assert "misc_dynamic" in text
    assert "user nobody" in text
    assert text.count("recognised") == 4


def test_vrrp_instances_sync_group_and_notify() -> None:
    imported = keepalived("vrrp_sync.conf")
    config = imported.config
    assert config["sync_daemon"] == {"interface": "eth1", "instance": "VG_1", "sync_id": 7}
    out, inside = config["vrrp_instance"]
    assert out == {
        "name": "VI_OUT",
        "interface": "eth0",
        "vrid": 51,
        "advert_interval": 1.0,
        "password": "longsecr",
        "virtual_addresses": [
            {"address": "198.18.0.10/24", "device": "eth0", "label": "eth0:1"},
            {"address": "198.18.0.11/24", "device": "eth0", "label": "eth0:2"},
        ],
        # state MASTER clears nopreempt (keepalived 2.2.7 vrrp.c vrrp_complete_instance:3112)
        "garp_count": 3,
        "garp_repeat_after": 5.0,
        "track_interfaces": [
            {"interface": "eth0", "weight": 0},
            {"interface": "eth2", "weight": 20},
        ],
        "priority": 150,
        "notify": ["/usr/local/sbin/vrrp-notify.sh"],
    }
    assert inside["primary_address"] == "198.18.1.2"
    assert inside["unicast_peers"] == ["198.18.1.3"]
    # state MASTER clears preempt_delay too (vrrp.c:3118)
    assert "preempt_delay" not in inside
    assert config["vrrp_sync_group"] == [
        {
            "name": "VG_1",
            "instances": ["VI_OUT", "VI_IN"],
            "notify_master": ["/usr/local/sbin/lvs-notify", "GROUP", "master"],
            "notify_backup": ["/usr/local/sbin/lvs-notify", "GROUP", "backup"],
            "notify_fault": ["/usr/local/sbin/lvs-fault"],
        }
    ]
    text = notes_text(imported)
    for what in ("state MASTER", "auth_pass", "notify_stop", "track_script", "vrrp_script"):
        assert what in text


def test_ssl_get_and_smtp_check() -> None:
    imported = keepalived("ssl_smtp.conf")
    https, smtp = imported.config["virtual_server"]
    assert https["check"]["type"] == "https"
    assert https["check"]["verify"] is False
    assert https["check"]["sni"] == https["check"]["host"] == "mail.example.com"
    assert https["check"]["path"] == "/owa/healthcheck.htm"
    assert smtp["check"]["type"] == "smtp"
    assert smtp["check"]["helo_name"] == "director.example.com"
    assert "DNS_CHECK" in notes_text(imported)


def test_virtual_server_group_becomes_one_service_per_member() -> None:
    services = keepalived("vsg.conf").config["virtual_server"]
    keys = [(s.get("address"), s.get("port"), s.get("fwmark")) for s in services]
    assert keys == [
        ("198.18.0.50", 80, None),
        ("198.18.0.51", 80, None),
        ("198.18.0.52", 80, None),
        ("198.18.0.60", 80, None),
        (None, None, 7),
    ]
    assert {s["forwarding"] for s in services} == {"dr"}
    assert len({s["name"] for s in services}) == 5


def test_unknown_keywords_are_listed_with_their_line() -> None:
    text = notes_text(keepalived("unknown.conf"))
    assert "unknown.conf:4: not carried: virtual_server 198.18.0.80 80 > frobnicate_mode" in text
    assert "unknown.conf:7: not carried: " in text
    assert "quantum_entangle yes" in text
    assert "unknown.conf:10: not carried: mystery_block" in text


@pytest.mark.parametrize("name", KEEPALIVED_FILES)
def test_nothing_is_dropped_silently(tmp_path: Path, name: str) -> None:
    """An unknown keyword in every block of every field config shows up in the notes (or the
    whole block it is in is listed as not carried)."""
    lines = (DATA / name).read_text().splitlines()
    out: list[str] = []
    planted: dict[int, str] = {}
    for text in lines:
        out.append(text)
        opens = re.search(r"\{\s*(#.*|!.*)?$", text) and not text.strip().startswith(("!", "#"))
        if opens and not text.split()[0].startswith(LIST_BLOCKS):
            word = f"zz_planted_{len(planted)}"
            out.append(f"  {word} 1")
            planted[len(out)] = word  # the block opened on the line before
    assert planted
    path = tmp_path / name
    path.write_text("\n".join(out) + "\n")
    imported = import_keepalived(path)
    notes = notes_text(imported)
    for line, word in planted.items():
        alone = re.search(rf"{name}:{line}: not carried: .*{word}", notes)
        block = re.search(rf"{name}:{line - 1}: not carried: ", notes)
        assert alone or block, (word, notes)


def test_no_protocol_follows_keepalived(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(
        "virtual_server 198.18.0.9 0 {\n  real_server 198.18.1.9 0 {\n  }\n}\n"
        "virtual_server 198.18.0.8 80 {\n}\n"
    )
    imported = import_keepalived(path)
    (vs,) = imported.config["virtual_server"]
    assert vs["protocol"] == "udp"
    assert vs["persistence_timeout"] == 360
    text = notes_text(imported)
    assert "keepalived 2.2 programs UDP" in text
    assert "k.conf:5: not carried: virtual_server 198.18.0.8 80: no real servers" in text


def test_conditional_lines_and_parameters(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(
        "$IFACE=eth0\n@main $PRIO=150\n@^main $PRIO=90\n$BASE=198.18.${SUB}\n$SUB=0\n"
        "vrrp_instance VI_1 {\n  interface $IFACE\n  virtual_router_id 5\n"
        "  priority $PRIO\n  @main nopreempt\n  virtual_ipaddress {\n    ${BASE}.10/24\n"
        '  }\n  notify_master "/bin/echo $UNDEFINED"\n}\n'
        "~SEQ(N, 1, 3) real_server 198.18.1.$N 80\n"
    )
    main = import_keepalived(path, "main")
    (vi,) = main.config["vrrp_instance"]
    assert vi == {
        "name": "VI_1",
        "interface": "eth0",
        "vrid": 5,
        "virtual_addresses": ["198.18.0.10/24"],
        "preempt": False,
        "priority": 150,
        "notify_master": ["/bin/echo", "$UNDEFINED"],
    }
    text = notes_text(main)
    assert "k.conf:3: not carried: @^main $PRIO=90: for config id not main" in text
    assert "k.conf:16: not carried: ~SEQ(N, 1, 3)" in text
    (other,) = import_keepalived(path).config["vrrp_instance"]
    assert other["priority"] == 90
    assert "preempt" not in other
    assert "for config id main (this import: none given" in notes_text(import_keepalived(path))


def test_a_multiline_definition_inside_a_line_is_an_error(tmp_path: Path) -> None:
    # multi-line definitions are expanded (test_keepalived_adjustments); one with text after
    # it on its line is refused
    path = tmp_path / "k.conf"
    path.write_text("$ADDRS=198.18.0.1 \\\n  198.18.0.2\nfoo $ADDRS bar\n")
    with pytest.raises(ImportParseError) as exc:
        import_keepalived(path)
    assert str(exc.value) == f"{path}:3: $ADDRS is a multi-line definition: put it last on its line"


def test_vrrp_edges(tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(
        "global_defs {\n  vrrp_version 3\n  vrrp_garp_master_refresh 60\n}\n"
        "vrrp_instance V6 {\n  interface eth0\n  virtual_router_id 9\n  priority 100\n"
        "  advert_int 0.1\n  authentication {\n    auth_type AH\n    auth_pass x\n  }\n"
        "  virtual_ipaddress {\n    2001:db8::10/64 dev eth0 scope global\n  }\n"
        "  virtual_ipaddress_excluded {\n    2001:db8::11\n  }\n"
        "  track_interface {\n    eth1 weight 10\n    eth2 weight -5 reverse\n  }\n"
        '  notify_master "/usr/bin/logger master" root\n'
        "  lvs_sync_daemon_interface eth3\n}\n"
    )
    imported = import_keepalived(path)
    (vi,) = imported.config["vrrp_instance"]
    assert vi == {
        "name": "V6",
        "interface": "eth0",
        "vrid": 9,
        "advert_interval": 0.1,
        "virtual_addresses": [{"address": "2001:db8::10/64", "device": "eth0"}],
        "excluded_addresses": ["2001:db8::11/128"],
        "version": 3,
        "garp_refresh": 60.0,
        "track_interfaces": [
            {"interface": "eth1", "weight": 10},
            {"interface": "eth2", "weight": 5},
        ],
        "priority": 110,  # +10 while eth1 is up, as keepalived's positive weight
        "notify_master": ["/usr/bin/logger", "master"],
    }
    assert imported.config["sync_daemon"] == {"interface": "eth3", "instance": "V6"}
    text = notes_text(imported)
    for what in ("auth_type AH", "scope global", "reverse"):
        assert what in text
    assert "run as user root" in text
    assert "positive track_interface weights: priority 100 + 10" in text
    validated(imported)


SAMPLES = Path("/usr/share/doc/keepalived/samples")


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="Debian's keepalived package is not installed")
def test_keepalived_own_samples_import_and_load() -> None:
    """Every sample config shipped with keepalived imports into a config the daemon loads."""
    samples = sorted(SAMPLES.glob("keepalived.conf.*"))
    assert len(samples) >= 20
    for sample in samples:
        imported = import_keepalived(sample)
        config = validated(imported)
        assert config.virtual_servers or config.vrrp_instances, sample
    old_style = import_keepalived(SAMPLES / "keepalived.conf.vrrp.lvs_syncd")
    assert old_style.config["vrrp_sync_group"][0]["instances"] == ["VI_2", "VI_3"]


def test_a_regex_only_pcre_takes_is_dropped_with_the_reason(tmp_path: Path) -> None:
    """keepalived's HTTP_GET regex is PCRE; directord matches with RE2 (linear time, so a
    server's body can never stall VRRP). A pattern RE2 cannot run is not carried, and says
    why, so the import still validates; one it can run is carried."""
    path = tmp_path / "k.conf"
    server = (
        "  real_server 198.18.1.{n} 80 {{\n    HTTP_GET {{\n      url {{\n        path /\n"
        '        regex "{regex}"\n      }}\n    }}\n  }}\n'
    )
    path.write_text(
        "virtual_server 198.18.0.9 80 {\n  protocol TCP\n"
        + server.format(n=1, regex="status: (?=ok)")
        + "}\n"
        + "virtual_server 198.18.0.10 80 {\n  protocol TCP\n"
        + server.format(n=2, regex="status: ok")
        + "}\n"
    )
    imported = import_keepalived(path)
    config = validated(imported)
    checks = [vs.real_servers[0].health_check(vs) for vs in config.virtual_servers]
    assert [c.body_regex if c else None for c in checks] == [None, "status: ok"]
    assert "not carried: url regex status: (?=ok)" in notes_text(imported)
    assert "is a lookahead, which a linear-time engine (RE2) cannot match" in notes_text(imported)


def test_excluded_addresses_are_held_not_advertised_and_keep_the_version(tmp_path: Path) -> None:
    """keepalived 2.2.7: ``virtual_ipaddress_excluded`` addresses are added and removed with
    the state (vrrp.c, vrrp_handle_ipaddress: both vip and evip) but the advert is built from
    ``vip`` only (vrrp.c, vrrp_build_vrrp) and received adverts are checked against ``vip``
    only (vrrp.c, vrrp_in_chk_vips); an excluded address may be of the other family and does
    not make the instance VRRPv3 (vrrp_parser.c, vrrp_evip_handler). Merged into the advertised
    list, keepalived and directord drop each other's adverts and both become master."""
    path = tmp_path / "k.conf"
    path.write_text(
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  priority 100\n"
        "  virtual_ipaddress {\n    198.18.0.10/24\n  }\n"
        "  virtual_ipaddress_excluded {\n    198.18.0.11/32\n    2001:db8::11/64 dev eth1\n"
        "    198.18.0.10\n  }\n}\n"
    )
    imported = import_keepalived(path)
    (vi,) = imported.config["vrrp_instance"]
    assert vi["virtual_addresses"] == ["198.18.0.10/24"]
    assert vi["excluded_addresses"] == [
        "198.18.0.11/32",
        {"address": "2001:db8::11/64", "device": "eth1"},
    ]
    assert "version" not in vi  # stays 2: the IPv6 address is excluded
    assert "listed already" in notes_text(imported)  # 198.18.0.10 twice: first line kept
    validated(imported)
