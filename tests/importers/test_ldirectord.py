"""ldirectord.cf -> director config data and notes: real files, each directive, errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from director import cli
from director.config import parse_config
from director.importers.ldirectord import import_ldirectord
from director.importers.notes import Imported, ImportParseError
from tests.importers.conftest import DATA, notes_text, validated

REAL = DATA / "ldirectord"
REAL_FILES = ["resource-agents.cf", "populis.cf", "radius.cf", "mariadb.cf", "gprs3.cf"]


def ldirectord(name: str) -> Imported:
    return import_ldirectord(REAL / name)


def imported(tmp_path: Path, text: str) -> Imported:
    path = tmp_path / "ldirectord.cf"
    path.write_text(text)
    return import_ldirectord(path)


def services(tmp_path: Path, text: str) -> list[dict[str, Any]]:
    result = imported(tmp_path, text)
    validated(result)
    out = result.config.get("virtual_server", [])
    assert isinstance(out, list)
    return out


def by_address(found: Imported, address: str, port: int) -> dict[str, Any]:
    found_: list[dict[str, Any]] = [
        v
        for v in found.config["virtual_server"]
        if v.get("address") == address and v.get("port") == port and v.get("protocol") == "tcp"
    ]
    (vs,) = found_
    return vs


# --- the real files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("resource-agents.cf", (1, 3)),
        ("populis.cf", (70, 193)),
        ("radius.cf", (2, 4)),
        ("mariadb.cf", (1, 2)),
        ("gprs3.cf", (11, 33)),
    ],
)
def test_every_real_file_loads_as_a_director_config(name: str, counts: tuple[int, int]) -> None:
    assert validated(ldirectord(name)).count() == counts


def test_the_sample_shipped_with_ldirectord() -> None:
    found = ldirectord("resource-agents.cf")
    assert found.config == {
        "virtual_server": [
            {
                "name": "Web Site",
                "protocol": "tcp",
                "address": "192.168.6.240",
                "port": 80,
                "scheduler": "rr",
                "forwarding": "dr",
                "sorry_server": {"address": "127.0.0.1"},
                "check": {
                    "type": "http",
                    "port": 80,
                    "interval": 1.0,
                    "timeout": 1.0,
                    "rise": 1,
                    "fall": 1,
                    "path": "/index.html",
                    "host": "www.x.y.z",
                    "expect_status": ["200-399"],
                    "body_contains": "Test Page",
                },
                "real_server": [
                    {"address": "192.168.6.2", "weight": 1},
                    {"address": "192.168.6.3", "weight": 1},
                    {"address": "192.168.6.6", "weight": 1},
                ],
            }
        ]
    }
    text = notes_text(found)
    assert "resource-agents.cf:12: changed: check timeout: 3 s is longer than checkinterval" in text
    assert "resource-agents.cf:16: not carried: autoreload=yes: directord does not watch" in text
    assert "resource-agents.cf:27: not carried: virtual=192.168.6.240:80 > comment=" in text
    assert "followed redirects" in text
    assert "cleanstop: ldirectord's default (yes) removed its virtual services" in text
    assert "no [[vrrp_instance]] is made" in text
    assert "quiescent" not in text  # quiescent=no is said, and is directord's default


def test_a_production_director() -> None:
    found = ldirectord("populis.cf")
    dns_tcp, dns_udp = found.config["virtual_server"][:2]
    # virtual=10.0.16.1:domain with protocol=tcp / udp; service=dns has no directord check
    assert (dns_tcp["protocol"], dns_tcp["port"], dns_tcp["check"]["type"]) == ("tcp", 53, "tcp")
    assert (dns_udp["protocol"], dns_udp["port"], "check" in dns_udp) == ("udp", 53, False)
    web = by_address(found, "10.0.16.2", 80)  # virtual=10.0.16.2:www
    assert web["scheduler"] == "sed"
    assert web["forwarding"] == "dr"
    assert web["on_failure"] == "quiesce"  # global quiescent=yes
    assert web["check"] == {
        "type": "http",
        "interval": 2.0,
        "timeout": 2.0,  # checktimeout=10 cut to checkinterval=2 (noted)
        "rise": 1,
        "fall": 1,
        "path": "/.testpage",
        "expect_status": ["200-399"],
        "body_contains": "test",
    }
    assert [r["weight"] for r in web["real_server"]] == [100, 100, 100, 100]
    assert "port" not in web["real_server"][0]
    tls = by_address(found, "10.0.16.10", 443)
    assert tls["persistence_timeout"] == 1
    assert (tls["check"]["type"], tls["check"]["verify"]) == ("https", False)
    assert [r["weight"] for r in tls["real_server"]][:6] == [140, 140, 140, 140, 140, 100]
    assert len(by_address(found, "10.0.16.10", 80)["real_server"]) == 16  # comments in between
    assert by_address(found, "10.0.16.58", 80)["scheduler"] == "wrr"  # ldirectord's default
    ldap = by_address(found, "10.0.16.24", 389)
    assert ldap["check"] == {"type": "tcp", "port": 389} | {
        k: ldap["check"][k] for k in ("interval", "timeout", "rise", "fall")
    }
    mysql = by_address(found, "10.0.16.111", 3306)  # fallback=10.0.112.2:mysql (gate)
    assert mysql["sorry_server"] == {"address": "10.0.112.2"}
    assert mysql["check"]["type"] == "tcp"
    sphinx = by_address(found, "10.0.16.62", 9312)  # no service: none for port 9312
    assert "check" not in sphinx
    assert sphinx["persistence_timeout"] == 10
    text = notes_text(found)
    assert "populis.cf:7: not carried: emailalertfreq=1800: directord sends no mail" in text
    assert "populis.cf:8: not carried: emailalert=" in text
    assert "populis.cf:14: changed: virtual=10.0.16.1:domain > service=dns" in text
    assert "populis.cf:25: not carried: virtual=10.0.16.1:domain > service=dns" in text
    assert "mysql has no directord check: ldirectord logged in and ran the request query" in text
    assert "login, passwd not carried" in text


def test_external_checks_on_udp() -> None:
    found = ldirectord("radius.cf")
    radius, acct = found.config["virtual_server"]
    assert radius["protocol"] == "udp"
    assert radius["forwarding"] == "nat"
    assert "on_failure" not in radius  # quiescent=no
    assert radius["check"] == {
        "type": "script",
        "interval": 15.0,
        # the block's negotiatetimeout comes before the global checktimeout (ldirectord's order)
        "timeout": 10.0,
        "rise": 1,
        "fall": 1,
        "command": [
            "/usr/local/bin/check_radius.sh",
            "192.168.202.50",
            "1812",
            "{address}",
            "{port}",
        ],
    }
    assert acct["check"]["command"][:3] == ["/usr/local/bin/check_udp.sh", "192.168.202.50", "1813"]
    assert [(r["address"], r["weight"]) for r in radius["real_server"]] == [
        ("192.168.221.124", 2),
        ("192.168.221.126", 2),
    ]


def test_no_global_section_takes_ldirectords_defaults() -> None:
    found = ldirectord("mariadb.cf")
    (vs,) = found.config["virtual_server"]
    assert vs["scheduler"] == "wlc"
    assert "persistence_netmask" not in vs
    assert vs["check"] == {
        "type": "tcp",
        "interval": 10.0,
        "timeout": 10.0,
        "rise": 1,
        "fall": 1,
    }
    text = notes_text(found)
    assert "30 s is longer than checkinterval (10 s)" in text
    assert "mariadb.cf:5: not carried: virtual=192.168.208.150:3306 > netmask=255.255.255.255" in (
        text
    )
    assert "request, login, passwd, database not carried" in text
    assert "not set: ldirectord since 2009" in text


def test_services_of_a_patched_ldirectord() -> None:
    found = ldirectord("gprs3.cf")
    for vs in found.config["virtual_server"]:
        assert vs["check"]["type"] == "tcp"
        assert vs["forwarding"] == "nat"
        assert vs["on_failure"] == "quiesce"
    text = notes_text(found)
    assert "service pingpong_master is not a service ldirectord knows (a patched" in text
    assert text.count("a tcp connect stands in") == 11


# --- directives ---------------------------------------------------------------------------


def test_range_ipv6_fwmark_and_thresholds(tmp_path: Path) -> None:
    text = (
        "checkinterval=5\nfallback6=[::1]:8080 masq\nquiescent=yes\n"
        "virtual=192.0.2.10:80\n"
        "\treal=198.51.100.2->198.51.100.4:8080 masq 3 l:10 u:20\n"
        "\treal=198.51.100.9:8080 gate\n"
        '\tservice=http\n\trequest="health"\n\treceive="^OK$"\n\tquiescent=no\n'
        "virtual6=[2001:db8::10]:443\n"
        "    real6=[2001:db8:1::2]:443 masq\n    service=https\n    checktype=connect\n"
        'virtual=80\n    real=198.51.100.2 gate\n    real=198.51.100.3 gate 5 "/ping", "pong"\n'
        "    service=http\n    checkport=8080\n    persistent=600\n    netmask=255.255.255.0\n"
    )
    web, tls, mark = services(tmp_path, text)
    assert [r["address"] for r in web["real_server"]] == [
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "198.51.100.9",
    ]
    first = web["real_server"][0]
    assert first == {
        "address": "198.51.100.2",
        "port": 8080,
        "weight": 3,
        "upper_threshold": 20,
        "lower_threshold": 10,
    }
    assert web["forwarding"] == "nat"
    # gate keeps the service's port (noted); ldirectord still checked the written port
    assert web["real_server"][3] == {
        "address": "198.51.100.9",
        "weight": 1,
        "forwarding": "dr",
        "check": {"port": 8080},
    }
    assert web["check"]["body_regex"] == "^OK$"
    assert "on_failure" not in web  # the block's quiescent=no wins
    assert tls["address"] == "2001:db8::10"
    assert tls["sorry_server"] == {"address": "::1"}  # the local node: the service's port
    assert tls["on_failure"] == "quiesce"
    assert tls["check"]["type"] == "tcp"  # checktype=connect
    assert mark["fwmark"] == 80
    assert mark["persistence_netmask"] == "255.255.255.0"
    assert mark["check"]["port"] == 8080
    assert mark["real_server"][1]["check"] == {"path": "/ping", "body_contains": "pong"}
    assert "sorry_server" not in mark  # the global fallback6 is for IPv6 address services
    notes = notes_text(imported(tmp_path, text))
    assert "ldirectord.cf:6: changed: virtual=192.0.2.10:80 > real=198.51.100.9:8080: gate" in notes
    assert "> fallback6=[::1]:8080 masq: the local node keeps the service's port" in notes


def test_checktypes(tmp_path: Path) -> None:
    text = (
        "checktimeout=4\nnegotiatetimeout=8\ncheckinterval=10\nfailurecount=3\n"
        "virtual=192.0.2.1:25\n    real=198.51.100.1:25 masq\n"
        "virtual=192.0.2.1:7\n    real=198.51.100.1:7 masq\n    service=simpletcp\n"
        '    request="PING\\n"\n    receive="^PONG"\n'
        "virtual=192.0.2.1:8080\n    real=198.51.100.1:8080 masq\n    checktype=3\n"
        "    service=http\n    httpmethod=HEAD\n"
        "virtual=192.0.2.1:22\n    real=198.51.100.1:22 masq\n    checktype=external\n"
        '    checkcommand="/usr/local/bin/check_ssh"\n'
        "virtual=192.0.2.1:23\n    real=198.51.100.1:23 masq\n    checktype=ping\n"
        "    checkcount=3\n"
        "virtual=192.0.2.1:24\n    real=198.51.100.1:24 masq\n    checktype=on\n"
        '    login="monitor"\n'
        "virtual=192.0.2.1:26\n    real=198.51.100.1:26 masq\n    checktype=off\n"
        "    fallback=127.0.0.1:26\n"
    )
    smtp, simpletcp, http, external, ping, on, off = services(tmp_path, text)
    assert smtp["check"] == {"type": "smtp", "interval": 10.0, "timeout": 8.0, "rise": 1, "fall": 3}
    assert simpletcp["check"]["send"] == "PING\n"
    assert simpletcp["check"]["expect"] == "(?m)^PONG"
    assert simpletcp["check"]["expect_regex"] is True
    assert (http["check"]["type"], http["check"]["method"]) == ("http", "HEAD")
    assert external["check"]["command"] == [
        "/usr/local/bin/check_ssh",
        "192.0.2.1",
        "22",
        "{address}",
        "{port}",
    ]
    assert external["check"]["timeout"] == 4.0  # checktimeout, not negotiatetimeout
    assert (ping["check"]["type"], ping["check"]["attempts"]) == ("tcp", 3)
    assert "check" not in on
    assert "real_server" not in off
    assert "sorry_server" not in off
    notes = notes_text(imported(tmp_path, text))
    assert "checktype=3: ldirectord negotiated (http) once after every 3 connects" in notes
    assert "checktype=ping: directord has no ICMP check" in notes
    assert "checktype=off: ldirectord adds neither the real servers nor the fallback" in notes
    assert "ldirectord.cf:28: not carried: virtual=192.0.2.1:24 > login: not used with" in notes


def test_global_settings(tmp_path: Path) -> None:
    result = imported(
        tmp_path,
        "cleanstop=yes\nfork=yes\ncheckinterval=10\nmaintenancedir=/etc/ha.d/maint\n"
        'callback="/usr/local/sbin/sync-cf"\nsupervised\nreaddquiescent=no\n'
        "fallback=192.0.2.99:80 masq\nemailalertstatus=all\nhostname=lb1\n"
        "virtual=192.0.2.1:53\n    real=198.51.100.1:53 gate\n    checkinterval=3\n"
        "    checktype=connect\n    servicename=dns\n"
        "virtual=192.0.2.2:53\n    real=198.51.100.1:53 gate\n    protocol=tcp\n"
        "    service=none\n    servicename=dns\n    ops=yes\n",
    )
    validated(result)
    assert result.config["daemon"] == {"keep_table_on_stop": False}
    udp, tcp = result.config["virtual_server"]
    assert (udp["name"], tcp["name"]) == ("dns", "dns#2")
    assert udp["protocol"] == "udp"  # ldirectord's default on port 53
    assert "check" not in udp  # a connect check of a UDP service is a ping in ldirectord
    assert udp["sorry_server"] == {"address": "192.0.2.99", "port": 80, "forwarding": "nat"}
    text = notes_text(result)
    for expected in (
        "ldirectord.cf:1: carried: cleanstop=yes: keep_table_on_stop = false",
        "ldirectord.cf:4: not carried: maintenancedir=/etc/ha.d/maint: directord reads no",
        "ldirectord.cf:5: not carried: callback=",
        "ldirectord.cf:6: not carried: supervised=yes",
        "ldirectord.cf:7: not carried: readdquiescent=no",
        "ldirectord.cf:9: not carried: emailalertstatus=all: directord sends no mail",
        "ldirectord.cf:10: not carried: hostname=lb1: not an ldirectord directive",
        "ldirectord.cf:11: carried: virtual=192.0.2.1:53: no protocol on port 53",
        "ldirectord.cf:14: not carried: virtual=192.0.2.1:53 > checktype=connect: ldirectord "
        "pinged UDP real servers; directord has no UDP or ICMP check",
        "ldirectord.cf:21: not carried: virtual=192.0.2.2:53 > ops=yes",
    ):
        assert expected in text, expected


def test_host_names_and_duplicates_are_noted(tmp_path: Path) -> None:
    result = imported(
        tmp_path,
        "virtual=www.example.com:80\n    real=198.51.100.1:80 gate\n"
        "virtual=192.0.2.1:80\n    real=web1:80 gate\n    real=198.51.100.1:80 gate\n"
        "    real=198.51.100.1:8080 gate\n    fallback=sorry.example.com:80\n",
    )
    validated(result)
    (vs,) = result.config["virtual_server"]
    assert vs["real_server"] == [{"address": "198.51.100.1", "weight": 1}]
    text = notes_text(result)
    assert "ldirectord.cf:1: not carried: virtual=www.example.com:80: www.example.com is" in text
    assert "ldirectord.cf:4: not carried: virtual=192.0.2.1:80 > real=web1: a host name" in text
    assert "ldirectord.cf:6: not carried: virtual=192.0.2.1:80 > real=198.51.100.1: the same" in (
        text
    )
    assert "ldirectord.cf:7: not carried: virtual=192.0.2.1:80 > fallback=sorry" in text


def test_line_endings_comments_and_indentation(tmp_path: Path) -> None:
    """CRLF, a tab or 4+ spaces, comments at the end of a line and between block lines."""
    lf = services(tmp_path, (REAL / "radius.cf").read_text())
    crlf = (REAL / "radius.cf").read_text().replace("\n", "\r\n")
    assert services(tmp_path, crlf) == lf
    text = (
        "quiescent=yes # comment\nvirtual=192.0.2.1:80 # web\n"
        "  \treal=198.51.100.1 gate 2 # a tab after 2 spaces\n# a comment in the block\n"
        "     real=198.51.100.2 gate\n\tscheduler=rr\n"
    )
    (vs,) = services(tmp_path, text)
    assert [r["weight"] for r in vs["real_server"]] == [2, 1]
    assert (vs["scheduler"], vs["on_failure"]) == ("rr", "quiesce")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("virtual=192.0.2.1\n", 1, "virtual: expected ADDRESS:PORT like 192.0.2.10:80, or a"),
        ("virtual=0\n", 1, "virtual: expected a firewall mark from 1 to 4294967295, found '0'"),
        ("virtual=[2001:db8::1]:80\n", 1, "virtual: expected an IPv4 address (use virtual6="),
        ("virtual=192.0.2.1:0\n  real=198.51.100.1 gate\n", 2, "expected a line indented by 4"),
        ("virtual=192.0.2.1:80\n\n    real=198.51.100.1 gate\n", 3, "expected a global direct"),
        ("virtual=192.0.2.1:80\n    real=198.51.100.1:80\n", 2, "real: expected ADDRESS[:PORT]"),
        ("virtual=192.0.2.1:80\n    real=198.51.100.1:80 nat\n", 2, "real: expected the forward"),
        ("virtual=192.0.2.1:80\n    real=198.51.100.1 gate 70000\n", 2, "real: expected a weight"),
        ("virtual=192.0.2.1:80\n    real=198.51.100.1 gate x\n", 2, "real: expected nothing af"),
        ("virtual=192.0.2.1:80\n    real=198.51.100.9->198.51.100.1 gate\n", 2, "real: expected"),
        ("virtual=192.0.2.1:80\n    real6=[2001:db8::1]:80 gate\n", 2, "real6: expected real="),
        ("virtual=192.0.2.1:80\n    scheduler=fastest\n", 2, "scheduler: expected one of the"),
        ("virtual=192.0.2.1:80\n    protocol=sctp\n", 2, "protocol: expected tcp or udp, fou"),
        ("virtual=1\n    protocol=tcp\n", 2, "protocol: expected fwm for a firewall-mark service"),
        ("virtual=192.0.2.1:80\n    checktype=maybe\n", 2, "checktype: expected one of connec"),
        ("virtual=192.0.2.1:80\n    persistent=0\n", 2, "persistent: expected a whole number"),
        ("virtual=192.0.2.1:80\n    netmask=255.0.255.0\n", 2, "netmask: expected a contiguous"),
        ('virtual=192.0.2.1:80\n    receive=""\n', 2, "receive: expected a regular expres"),
        ("virtual=192.0.2.1:80\n    httpmethod=POST\n", 2, "httpmethod: expected GET or HEAD"),
        ("virtual=192.0.2.1:80\n    quiescent=maybe\n", 2, "quiescent: expected yes or no, fou"),
        ("virtual=192.0.2.1:80\n    fork=yes\n", 2, "fork: expected fork= at the start of"),
        ("real=198.51.100.1:80 gate\n", 1, "real: expected real= indented under a virtual= line"),
        ("checktimeout=0\n", 1, "checktimeout: expected a whole number of seconds from 1 to"),
        ("checkinterval=\n", 1, "checkinterval: expected a whole number of seconds from 1 to"),
        ("virtual=192.0.2.1:80\nvirtual=192.0.2.1:80\n", 2, "virtual: expected each virtual s"),
        ("virtual=192.0.2.1:nosuchport\n", 1, "virtual: expected a port number or a service"),
        ("fallback=[::1]:80\n", 1, "fallback: expected an IPv4 address (use fallback6=)"),
        ("quiescent yes\n", 1, "expected 'keyword = value' at the start of a line, found 'q"),
    ],
)
def test_errors_name_file_line_and_keyword(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "ldirectord.cf"
    path.write_text(text)
    with pytest.raises(ImportParseError) as exc:
        import_ldirectord(path)
    assert str(exc.value).startswith(f"{path}:{line}: {message}"), str(exc.value)


def test_nothing_is_dropped_silently(tmp_path: Path) -> None:
    """An unknown directive after every line, at the top or in the block, is listed."""
    for name in REAL_FILES:
        out: list[str] = []
        planted: dict[int, str] = {}
        for line in (REAL / name).read_text().splitlines():
            out.append(line)
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            indent = "    " if line[:1] in " \t" or line.startswith("virtual") else ""
            word = f"zz_planted_{len(planted)}"
            out.append(f"{indent}{word}=1")
            planted[len(out)] = word
        path = tmp_path / name
        path.write_text("\n".join(out) + "\n")
        notes = notes_text(import_ldirectord(path))
        for line_no, word in planted.items():
            assert re.search(rf"{name}:{line_no}: not carried: .*{word}=1: not an ldir", notes), (
                name,
                word,
            )


# --- the command --------------------------------------------------------------------------


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["import", "ldirectord", str(REAL / "populis.cf")]) == 0
    out, err = capsys.readouterr()
    assert parse_config(out).count() == (70, 193)
    assert out.startswith("# director config imported from")
    assert "(ldirectord)" in out.splitlines()[0]
    assert err.rstrip().endswith("5 settings not carried, 16 carried differently (see above)")
    bad = tmp_path / "ldirectord.cf"
    bad.write_text("virtual=192.0.2.1:80\n    real=198.51.100.1:80 bridge\n")
    assert cli.main(["import", "ldirectord", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"directorctl import: {bad}:2: real: expected the forwarding method gate, masq or ipip, "
        "found 'bridge'\n"
    )
