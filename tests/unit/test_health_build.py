"""Config checks -> scheduler checks and probe specs; verdicts -> engine -> kernel table."""

from __future__ import annotations

import asyncio
import grp
import ipaddress
import pwd
import random
from pathlib import Path

import pytest

from checks.model import HealthChanged
from checks.probes import exchange, http, rdp, script, smtp, tcp
from checks.regex import Regex
from director.config import load_config, parse_config
from director.engine import Engine
from director.health import HealthChecks, build_checks
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import DestKey, ServiceKey
from director.reconcile.owned import MemoryOwnedStore

CONFIG = """
[[virtual_server]]
fwmark = 80
[virtual_server.check]
type = "exchange"
verify = false
vdirs = ["owa", "ecp"]
attempts = 2
  [[virtual_server.real_server]]
  address = "198.18.1.11"
  [[virtual_server.real_server]]
  address = "198.18.1.12"
  check = { type = "rdp", port = 3389, interval = 10, timeout = 2 }
  [[virtual_server.real_server]]
  address = "198.18.1.13"
  check = { type = "tcp", port = 25, send = "EHLO x\\r\\n", expect = "^250", expect_regex = true }
  [[virtual_server.real_server]]
  address = "198.18.1.14"
  check = { type = "smtp", port = 25, starttls = true, sni = "mail.example.com" }
  [[virtual_server.real_server]]
  address = "198.18.1.15"
  check = { type = "script", command = ["/bin/check", "{address}", "{port}"] }
  [[virtual_server.real_server]]
  address = "198.18.1.16"
  check = { type = "https", path = "/owa/healthcheck.htm", username = "u", password = "p" }
  [[virtual_server.real_server]]
  address = "198.18.1.17"
  check = { type = "none" }
"""


def test_every_kind_maps_to_its_probe() -> None:
    checks = build_checks(parse_config(CONFIG))
    assert len(checks) == 6
    by_host = {str(c.spec.target.address): c for c in checks}
    ex = by_host["198.18.1.11"]
    assert isinstance(ex.spec.spec, exchange.ExchangeSpec)
    assert ex.spec.spec.vdirs == ("owa", "ecp")
    assert not ex.spec.spec.verify
    assert ex.spec.target.port == 443
    assert ex.params.attempts == 2
    assert ex.id == (ServiceKey.mark(80), DestKey.of(ipaddress.IPv4Address("198.18.1.11"), 0))
    rdp_check = by_host["198.18.1.12"]
    assert isinstance(rdp_check.spec.spec, rdp.RdpSpec)
    assert (rdp_check.params.interval, rdp_check.params.timeout, rdp_check.spec.timeout) == (
        10.0,
        2.0,
        2.0,
    )
    t = by_host["198.18.1.13"].spec.spec
    assert isinstance(t, tcp.TcpSpec)
    assert t.send == b"EHLO x\r\n"
    assert t.expect == Regex(b"^250")
    s = by_host["198.18.1.14"].spec.spec
    assert isinstance(s, smtp.SmtpSpec)
    assert (s.starttls, s.server_name) == (True, "mail.example.com")
    sc = by_host["198.18.1.15"].spec.spec
    assert isinstance(sc, script.ScriptSpec)
    assert sc.argv == ("/bin/check", "{address}", "{port}")
    h = by_host["198.18.1.16"].spec.spec
    assert isinstance(h, http.HttpSpec)
    # verify = false comes from the service's table: a server's table overrides single keys
    assert (h.tls, h.path, h.basic_auth, h.verify) == (
        True,
        "/owa/healthcheck.htm",
        ("u", "p"),
        False,
    )
    assert "198.18.1.17" not in by_host


def test_unchanged_checks_compare_equal_across_reloads() -> None:
    assert build_checks(parse_config(CONFIG)) == build_checks(parse_config(CONFIG))


WEB = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.20"
port = 80
on_failure = "{on_failure}"
sorry_server = {{ address = "198.18.2.9" }}
[virtual_server.check]
type = "http"
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  [[virtual_server.real_server]]
  address = "198.18.1.22"
"""


@pytest.mark.parametrize(
    ("on_failure", "first_down", "all_down"),
    [
        ("remove", ["198.18.1.22:80/1"], ["198.18.2.9:80/1"]),
        (
            "quiesce",
            ["198.18.1.21:80/0", "198.18.1.22:80/1"],
            ["198.18.1.21:80/0", "198.18.1.22:80/0", "198.18.2.9:80/1"],
        ),
    ],
)
def test_verdicts_reach_the_kernel_table(
    tmp_path: Path, on_failure: str, first_down: list[str], all_down: list[str]
) -> None:
    path = tmp_path / "d.toml"
    path.write_text(WEB.format(on_failure=on_failure))
    kernel = MemoryIPVS()
    engine = Engine(load_config(path), kernel, MemoryOwnedStore(), config_path=path)
    ids = [c.id for c in build_checks(engine.config)]

    def table() -> list[str]:
        dests = next(iter(kernel.table.dests.values())).values()
        return sorted(f"{d.key}/{d.weight}" for d in dests)

    async def scenario() -> tuple[list[str], list[str]]:
        await engine.start()
        engine.record_health([HealthChanged(ids[0], False, 1.0, "HTTP 503")])
        await engine.sync_health()
        one = table()
        engine.record_health([HealthChanged(ids[1], False, 2.0, "refused")])
        await engine.sync_health()
        return one, table()

    assert asyncio.run(scenario()) == (first_down, all_down)


SCRIPTS = """
[daemon]
script_user = "nobody"

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.30"
port = 80
[virtual_server.check]
type = "script"
command = ["/bin/true"]
  [[virtual_server.real_server]]
  address = "198.18.1.31"
  [[virtual_server.real_server]]
  address = "198.18.1.32"
  check = { user = "root:nogroup" }
  [[virtual_server.real_server]]
  address = "198.18.1.33"
  check = { type = "tcp" }
"""


def test_scripts_run_as_the_daemons_script_user_or_their_own() -> None:
    nobody, root = pwd.getpwnam("nobody"), pwd.getpwnam("root")
    nogroup = grp.getgrnam("nogroup").gr_gid
    specs = {str(c.spec.target.address): c.spec.spec for c in build_checks(parse_config(SCRIPTS))}
    first, second = specs["198.18.1.31"], specs["198.18.1.32"]
    assert isinstance(first, script.ScriptSpec) and isinstance(second, script.ScriptSpec)
    assert first.user is not None and second.user is not None
    assert (first.user.uid, first.user.gid, first.user.home) == (
        nobody.pw_uid,
        nobody.pw_gid,
        nobody.pw_dir,
    )
    assert (second.user.uid, second.user.gid) == (root.pw_uid, nogroup)
    # initgroups(3): the group given, and the groups that list the user as a member
    member_of = {g.gr_gid for g in grp.getgrall() if "root" in g.gr_mem}
    assert set(second.user.groups) == {nogroup} | member_of
    no_user = build_checks(parse_config(SCRIPTS.replace('script_user = "nobody"', "")))
    assert [c.spec.spec.user for c in no_user if isinstance(c.spec.spec, script.ScriptSpec)] == [
        None,
        second.user,
    ]


def test_probe_targets_name_the_metric_series_of_the_checks_now() -> None:
    async def targets() -> set[tuple[str, str]]:
        checks = HealthChecks(lambda changes: None, rng=random.Random(1))
        checks.update(parse_config(SCRIPTS))
        try:
            return checks.probe_targets()
        finally:
            await checks.stop()

    assert asyncio.run(targets()) == {
        ("script", "198.18.1.31:80"),
        ("script", "198.18.1.32:80"),
        ("tcp", "198.18.1.33:80"),
    }
