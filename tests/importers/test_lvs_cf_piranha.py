"""Piranha's built-in defaults and conventions, reproduced by the lvs.cf import.

Each test states what Piranha does (source read from ssocopsacc/piranha, a copy of Red Hat's
piranha 0.8.x: lvsconfig.c, lvsd.c, nanny.c) and asserts the import's output and note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from director.config import ConfigError
from director.importers.lvs_cf import import_lvs_cf
from director.importers.notes import Imported, ImportParseError
from tests.importers.conftest import notes_text, validated

HEAD = "primary = 198.18.0.2\nbackup = 198.18.0.3\nheartbeat = 1\nkeepalive = 6\nnetwork = nat\n"


def lvs(virtual: str, server: str = "", head: str = HEAD) -> str:
    return (
        f"{head}virtual web {{\n  address = 198.18.0.10 eth0:1\n{virtual}\n"
        f"  server web1 {{\n    address = 198.18.1.11\n{server}\n  }}\n}}\n"
    )


def imported(tmp_path: Path, text: str) -> Imported:
    path = tmp_path / "lvs.cf"
    path.write_text(text)
    result = import_lvs_cf(path)
    validated(result)
    return result


def vs(result: Imported) -> dict[str, Any]:
    first: dict[str, Any] = result.config["virtual_server"][0]
    return first


def test_no_port_is_port_80(tmp_path: Path) -> None:
    # lvsconfig.c:lvsInitVirtualServer:2351 vs->port = 80 ("http"); a server's port starts as
    # the virtual's (lvsconfig.c:1364 servers[i].port = vserver->port)
    result = imported(tmp_path, lvs('  send = "x"\n  expect = "y"'))
    assert vs(result)["port"] == 80
    assert "persistence_timeout" not in vs(result)  # not a port-0 service
    assert "Piranha's default port 80" in notes_text(result)


@pytest.mark.parametrize(("name", "number"), [("http", 80), ("https", 443), ("smtp", 25)])
def test_port_by_service_name(tmp_path: Path, name: str, number: int) -> None:
    # lvsconfig.c:getPort:568-588: a number, else getservbyname(NAME, "tcp"); the importer's
    # built-in table stands for /etc/services
    result = imported(tmp_path, lvs(f"  port = {name}"))
    assert vs(result)["port"] == number
    assert f"port {number}: Piranha looks the name up with getservbyname" in notes_text(result)


@pytest.mark.parametrize("name", ["HTTP", "no-such-service"])
def test_unknown_service_name_refused(tmp_path: Path, name: str) -> None:
    # getservbyname is case-sensitive and fails for an unknown name: lvsconfig.c returns
    # LVS_ERROR_BADARGUMENT and Piranha does not start
    path = tmp_path / "lvs.cf"
    path.write_text(lvs(f"  port = {name}"))
    with pytest.raises(ImportParseError) as info:
        import_lvs_cf(path)
    assert "lvs.cf:8: port: expected a port number or a well-known service name" in str(info.value)
    assert "not this machine's /etc/services" in str(info.value)


def test_zero_vip_nmask_means_none(tmp_path: Path) -> None:
    # lvsconfig.c: vip_nmask is read with inet_aton; pulse adds the VIP with the mask only when
    # s_addr is not zero: 0.0.0.0 is "none given"
    result = imported(tmp_path, lvs("  port = 80\n  vip_nmask = 0.0.0.0"))
    (instance,) = result.config["vrrp_instance"]
    assert instance["virtual_addresses"][0]["address"] == "198.18.0.10/32"
    assert "Piranha reads a zero mask as none given" in notes_text(result)


def test_zero_pmask_means_none(tmp_path: Path) -> None:
    # lvsconfig.c:1189-1210 pmask via inet_aton; "if (eserver->pmask.s_addr)": zero = no mask
    result = imported(tmp_path, lvs("  port = 80\n  persistent = 600\n  pmask = 0.0.0.0"))
    assert vs(result)["persistence_timeout"] == 600
    assert "persistence_netmask" not in vs(result)


def test_nanny_defaults_timeout_10_reentry_180(tmp_path: Path) -> None:
    # lvsconfig.c:2354-2355 timeout = 10, reentryTime = 180; lvsd.c:435-440 starts nanny with
    # "-a reentry -t timeout", and nanny's -t is its interval (nanny.c:1524); one failed probe
    # takes the server out; reentry 180 s of good probes bring it back (nanny.c:1658-1695)
    result = imported(tmp_path, lvs('  port = 8080\n  send = "x"\n  expect = "y"'))
    check = vs(result)["check"]
    assert (check["interval"], check["timeout"], check["fall"], check["reentry"]) == (
        10.0,
        10.0,
        1,
        180.0,
    )
    text = notes_text(result)
    assert "Piranha's default 10 s" in text
    assert "Piranha's default 180 s" in text


def test_timeout_is_nannys_interval_not_the_heartbeat(tmp_path: Path) -> None:
    # lvsd.c:439 "-t" timeoutNum: the probe interval follows the virtual's timeout, not the
    # director's keepalive (that is the heartbeat between the two directors)
    result = imported(tmp_path, lvs('  port = 8080\n  timeout = 3\n  reentry = 30\n  send = "x"'))
    check = vs(result)["check"]
    assert (check["interval"], check["timeout"], check["reentry"]) == (3.0, 3.0, 30.0)


def test_port_80_without_send_or_expect_is_an_http_probe(tmp_path: Path) -> None:
    # nanny.c:1725-1730 port 80 and no send, expect or send_program: "no monitor configured,
    # assuming web service on port 80": send "GET / HTTP/1.0\r\n\r\n", expect "HTTP"
    result = imported(tmp_path, lvs("  port = 80"))
    check = vs(result)["check"]
    assert (check["send"], check["expect"]) == ("GET / HTTP/1.0\r\n\r\n", "HTTP")
    other = imported(tmp_path, lvs("  port = 8080"))
    assert "send" not in vs(other)["check"]  # a plain connect on another port


def test_fwmark_without_port_probes_80(tmp_path: Path) -> None:
    # lvsconfig.c:2351: an fwmark virtual has port 80 too unless it says otherwise; lvsd.c
    # passes it as nanny's -p (and -r for servers without a port of their own)
    result = imported(tmp_path, lvs("  fwmark = 5"))
    assert vs(result)["fwmark"] == 5
    assert vs(result)["check"]["port"] == 80


def test_keepalive_default_is_2(tmp_path: Path) -> None:
    # lvsconfig.c:2132 config->keepAliveTime = 2 (deadtime 5): the heartbeat interval
    result = imported(tmp_path, lvs("  port = 80", head=HEAD.replace("keepalive = 6\n", "")))
    (instance,) = result.config["vrrp_instance"]
    assert instance["advert_interval"] == 2.0
    assert "Piranha's default 2 s" in notes_text(result)


def test_check_config_refuses_a_slash_zero_virtual_address() -> None:
    # what a literal 0.0.0.0 netmask would have become: check-config refuses a /0 VIP
    from director.config import parse_config

    text = (
        '[[vrrp_instance]]\nname = "VI_1"\ninterface = "eth0"\nvrid = 1\n'
        'virtual_addresses = ["198.18.0.10/0"]\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "director.toml")
    assert "a /0 address claims every address as on-link" in str(info.value)
