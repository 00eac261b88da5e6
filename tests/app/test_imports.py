"""The daemon imports what its config needs: the real ``directord`` entry point started in a
namespace (a VRRP instance and an nftables SNAT rule: no ip_vs needed), stopped, and the
modules it had loaded compared with what that config does not use. Plus :mod:`director.lean`
on its own."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import Background, Namespace, Topology

ROOT = Path(__file__).resolve().parents[2]

# Started through main() as directord does; at exit it writes the modules loaded by then and by
# the end of the start, and whether the cyclic collector was on when the start settled the heap
# and when the director served.
RUN = """
import atexit, gc, json, sys
import dataclasses
from director import codecache, lean
codecache.install()  # as main() does first, before the daemon's imports below
lean.lean_imports()
import director.app as app
import director.early as early
seen = {"daemon_table_reads": 0}
daemon_table = early.daemon_table
def counted(path):
    seen["daemon_table_reads"] += 1
    return daemon_table(path)
early.daemon_table = counted
settle, serve = app.settle_heap, app.Director.serve
def settle_heap():
    seen["collector_at_settle"] = gc.isenabled()
    seen["modules_at_ready"] = sorted(sys.modules)  # the end of the start, after READY=1
    seen["dataclass_code"] = dataclasses._create_fn.__module__
    from director.config.model import Config  # its validator built by this start, or not
    seen["config_validator_built"] = Config.__pydantic_complete__
    settle()
async def served(self):
    seen["collector_serving"] = gc.isenabled()
    await serve(self)
app.settle_heap, app.Director.serve = settle_heap, served
atexit.register(
    lambda: open(sys.argv[1], "w").write(json.dumps({"modules": sorted(sys.modules), **seen}))
)
from director.daemon import main
sys.exit(main(["--config", sys.argv[2]]))
"""

SCRAPE = (  # the metrics, then the status page (its module imported at the first page)
    "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9469/metrics').read());"
    " print(u.urlopen('http://127.0.0.1:9469/').read())"
)

CONFIG = """
[daemon]
state_dir = "{state}"
control_socket = "{state}/control.sock"
metrics_address = "127.0.0.1:9469"
log_format = "json"

[[vrrp_instance]]
name = "VI_1"
interface = "d0"
vrid = 51
priority = 100
virtual_addresses = ["198.18.0.10/24"]

[[snat]]
source = "198.18.1.0/24"
to = "198.18.0.10"
master_only = true
"""

# Never in the daemon: a packet library, and what this config does not ask for.
ABSENT = [
    "scapy",
    "exabgp",
    "director.bgp.exabgp",
    "director.bgp.exabgp_api",
    "director.bgp.kernel_routes",
    "director.bgp.vips",
    # pyroute2's __init__ did not run (director.lean): none of the modules only it imports
    "pyroute2.ipdb",
    "pyroute2.ndb",
    "pyroute2.conntrack",
    "pyroute2.iwutil",
    "pyroute2.plan9",
    "pyroute2.wiset",
    # nor its IPRoute: our rules, the VRRP interface's addresses and the virtual addresses are
    # read on plain rtnetlink sockets (director.network.routes, vrrp.rtnl); IPRoute is for
    # policy routes only (none here), with its every message class, mock engine and unittest
    "pyroute2.iproute",
    "pyroute2.netlink.rtnl.iprsocket",
    "pyroute2.netlink.rtnl.tcmsg",
    "unittest",
    # no aiohttp module at all: its client is for HTTP checks and [peer] only (director.lean),
    # and the metrics server is the daemon's own (director.http)
    "aiohttp.",
    "yarl",
    "multidict",
    # no check in this config: no probe module (director.health imports them for the first
    # check that needs one), no RE2 (director.config.checks: for the first pattern)
    "checks.probes.dispatch",
    "checks.probes.http",
    "checks.probes.tcp",
    "checks.probes.exchange",
    "checks.probes.smtp",
    "checks.probes.rdp",
    "checks.probes.script",
    "checks.regex",
    "re2",
    # prometheus_client's exposition (an HTTP server, urllib, email...): the first scrape's
    "prometheus_client.exposition",
    # what only an invalid config needs: line numbers for its errors, "did you mean"
    "director.config.lines",
    "difflib",
    # the status page's module (its script, styles, html escaping): the first page's
    "director.status_page",
    "html",
    "http.server",
    "wsgiref",
    # a start's arguments are read without argparse (director.daemon.start_args)
    "argparse",
    "gettext",
    # libc's malloc_trim is found among the process's own symbols (director.heap), not by
    # ctypes.util.find_library (an ldconfig subprocess, and these modules)
    "ctypes.util",
    "lzma",
    "bz2",
    # pydantic's plugin search (director.lean.no_pydantic_plugins) and what it imports
    "importlib.metadata",
    "email",
    "zipfile",
]
# Not even later (at exit, after a scrape): a packet library, BGP, aiohttp.
NEVER = ["scapy", "exabgp", "director.bgp.exabgp", "director.bgp.kernel_routes", "aiohttp."]


def wait_ready(notify: socket.socket, daemon: Background, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and daemon.proc.poll() is None:
        notify.settimeout(0.2)
        try:
            if "READY=1" in notify.recv(4096).decode().split("\n"):
                return
        except TimeoutError:
            continue
    raise AssertionError(f"no READY=1 within {within} s:\n{daemon.output()}")


def start_and_stop(
    ns: Namespace, tmp_path: Path, scrape: bool = True, text: str = CONFIG
) -> dict[str, Any]:
    """directord started with ``text`` (:data:`CONFIG`; state in ``tmp_path``) until READY
    (and a scrape), stopped; what RUN recorded."""
    config = tmp_path / "director.toml"
    config.write_text(text.format(state=tmp_path))
    modules = tmp_path / "modules.json"
    modules.unlink(missing_ok=True)
    (tmp_path / "notify.sock").unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify.sock"))
        daemon = ns.spawn(
            "env",
            "-C",
            str(ROOT),
            f"NOTIFY_SOCKET={tmp_path / 'notify.sock'}",
            sys.executable,
            "-c",
            RUN,
            str(modules),
            str(config),
        )
        try:
            wait_ready(notify, daemon, 60)
            if scrape:
                scraped = ns.run(sys.executable, "-c", SCRAPE)  # the daemon's own HTTP server
                assert "director_" in scraped.stdout
                assert "<!doctype html>" in scraped.stdout.lower()  # the page after READY
        finally:
            daemon.stop(timeout=30)
    assert daemon.proc.returncode == 0, daemon.output()
    found: dict[str, Any] = json.loads(modules.read_text())
    return found


@pytest.mark.netns
def test_directord_leaves_out_what_the_config_does_not_use(
    topology: Topology, tmp_path: Path
) -> None:
    ns: Namespace = topology.namespace("d")
    topology.veth(ns, "d0", topology.namespace("peer"), "eth0", a_addr="198.18.0.1/24")
    found = start_and_stop(ns, tmp_path)
    # no cyclic collection through the start (main), on again once ready (run_director)
    assert (found["collector_at_settle"], found["collector_serving"]) == (False, True)
    assert found["dataclass_code"] == "director.codecache"  # from the cache when it has it
    assert found["daemon_table_reads"] == 1  # the TOML parsed once for [daemon] before READY
    at_ready = set(found["modules_at_ready"])
    # it did start: the daemon proper, its rtnetlink and nftables parts
    assert {"director.app", "vrrp.rtnl", "director.network.nft"} <= at_ready
    assert not among(at_ready, ABSENT)
    loaded = set(found["modules"])
    assert "prometheus_client.exposition" in loaded  # the scrape's, after the start
    assert "director.status_page" in loaded  # the page's, after the start
    assert not among(loaded, NEVER)


@pytest.mark.netns
def test_a_restart_of_the_same_config_takes_it_from_the_start_cache(
    topology: Topology, tmp_path: Path
) -> None:
    """The first start validates (the config models' validators built) and keeps the result
    after READY (director.config.startcache); the next start of the same file builds none and
    runs the same; an edited file is validated again."""
    ns: Namespace = topology.namespace("d")
    topology.veth(ns, "d0", topology.namespace("peer"), "eth0", a_addr="198.18.0.1/24")
    cache = tmp_path / "config-cache.pickle"
    first = start_and_stop(ns, tmp_path, scrape=False)
    assert first["config_validator_built"] is True
    assert cache.is_file()
    second = start_and_stop(ns, tmp_path, scrape=False)
    assert second["config_validator_built"] is False
    edited = CONFIG.replace("priority = 100", "priority = 101")
    third = start_and_stop(ns, tmp_path, scrape=False, text=edited)
    assert third["config_validator_built"] is True


def among(modules: set[str], names: list[str]) -> list[str]:
    """The modules that are one of names or in one of them ("pkg." : any module in pkg)."""
    return sorted(
        m
        for m in modules
        for a in names
        if (m.startswith(a) if a.endswith(".") else (m == a or m.startswith(a + ".")))
    )


def test_a_lean_package_still_gives_what_its_init_defines() -> None:
    """pyroute2 and aiohttp registered lean: their modules import without their __init__; a
    name only the __init__ defines still comes, by running it then."""
    code = """
import sys
from director.lean import lean_imports, lean_package, load_whole
assert lean_imports() == ["pyroute2", "aiohttp", "prometheus_client"], sys.modules.get("aiohttp")
import pydantic
class Model(pydantic.BaseModel):  # validated without a plugin search
    x: int
assert Model(x=1).x == 1 and "importlib.metadata" not in sys.modules
from prometheus_client.metrics import Counter  # the metric classes, without the exposition
assert "prometheus_client.exposition" not in sys.modules
from prometheus_client import generate_latest  # defined by the __init__ only: it runs now
assert "prometheus_client.exposition" in sys.modules and Counter and generate_latest
from aiohttp import web  # reads aiohttp.__version__: taken from the __init__'s text
import aiohttp
assert "aiohttp.connector" not in sys.modules and aiohttp.__version__
assert aiohttp.__version__ == __import__("importlib.metadata").metadata.version("aiohttp")
from aiohttp.client_proto import ResponseHandler
assert "aiohttp.connector" not in sys.modules
assert issubclass(aiohttp.ClientOSError, aiohttp.ClientError)  # the __init__ runs now
assert "aiohttp.connector" in sys.modules and aiohttp.ClientSession
load_whole("aiohttp")  # once only: nothing more
assert not lean_package("pyroute2")  # once only
from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2 import config  # a submodule, without the __init__
assert "pyroute2.ndb" not in sys.modules and "pyroute2.ipdb" not in sys.modules
import pyroute2
try:
    pyroute2.__wrapped__  # a dunder the package does not define: no __init__ for it
except AttributeError:
    assert "pyroute2.ndb" not in sys.modules
else:
    raise AssertionError("pyroute2.__wrapped__ did not raise AttributeError")
from pyroute2 import IPRoute  # defined by the __init__ only: it runs now
assert "pyroute2.ndb" in sys.modules and pyroute2.__version__
assert IPRoute.__module__ == "pyroute2.iproute.linux" and AsyncIPRoute
try:
    pyroute2.no_such_name
except AttributeError:
    pass
else:
    raise AssertionError("an unknown name did not raise AttributeError")
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def checked_config(check: str) -> str:
    """A service with two real servers, the second checked with ``check``."""
    return f"""
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 443
  [[virtual_server.real_server]]
  address = "198.18.1.11"
  [[virtual_server.real_server]]
  address = "198.18.1.12"
  check = {{ type = "{check}" }}
"""


@pytest.mark.parametrize(
    ("check", "client"),
    [("tcp", False), ("http", True), ("https", True), ("exchange", True), ("smtp", False)],
)
def test_the_http_client_is_loaded_at_start_for_http_checks(check: str, client: bool) -> None:
    from director.config import parse_config
    from director.daemon import uses_http_client

    text = checked_config(check)
    assert uses_http_client(parse_config(text, "<test>")) is client
    none = text.replace(f'type = "{check}"', 'type = "none"')
    assert not uses_http_client(parse_config(none, "<test>"))


@pytest.mark.parametrize(
    ("check", "probes", "client"),
    [("none", False, False), ("tcp", True, False), ("smtp", True, False), ("http", True, True)],
)
def test_a_reload_loads_what_its_checks_need_in_the_loader(
    tmp_path: Path, check: str, probes: bool, client: bool
) -> None:
    """The reload's loader (run in a worker thread) imports the probe modules, and aiohttp whole
    for an HTTP check, so a reload that brings a config its first check does not import them on
    the loop; a config without checks imports neither."""
    config = tmp_path / "director.toml"
    config.write_text(checked_config(check))
    code = f"""
import sys
from director import lean
lean.lean_imports()
from director.daemon import load_prepared
before = {{m for m in sys.modules if m.startswith(("checks.probes", "aiohttp."))}}
load_prepared({str(config)!r})
print(sorted(before), "checks.probes.tcp" in sys.modules, "checks.probes.http" in sys.modules,
      "aiohttp.client" in sys.modules)  # aiohttp's __init__ ran (lean: only its parts)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", str(probes), str(probes), str(client)], done.stdout
