"""Config checks -> scheduler checks and probe specs; verdicts -> engine -> kernel table."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from pathlib import Path

import pytest

from checks.model import HealthChanged
from checks.probes import exchange, http, rdp, script, smtp, tcp
from director.config import load_config, parse_config
from director.engine import Engine
from director.health import build_checks
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
    assert t.expect == re.compile(b"^250")
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
    engine = Engine(load_config(path), path, kernel, MemoryOwnedStore(), load_config)
    ids = [c.id for c in build_checks(engine.config)]

    def table() -> list[str]:
        dests = next(iter(kernel.table.dests.values())).values()
        return sorted(f"{d.key}/{d.weight}" for d in dests)

    async def scenario() -> tuple[list[str], list[str]]:
        await engine.start()
        engine.on_health([HealthChanged(ids[0], False, 1.0, "HTTP 503")])
        await asyncio.sleep(0.05)
        one = table()
        engine.on_health([HealthChanged(ids[1], False, 2.0, "refused")])
        await asyncio.sleep(0.05)
        return one, table()

    assert asyncio.run(scenario()) == (first_down, all_down)
