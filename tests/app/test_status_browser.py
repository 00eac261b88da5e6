"""The status page in a real browser: Debian's headless Chromium (Selenium, in the namespace)
against a live ``directord`` (a process on the in-memory IPVS table) with real web servers.

It renders the service and both servers; a web server stopped shows DOWN and started again
shows up, within the refresh and without a reload of the page; a real server's name that is an
XSS attempt is shown as text and never runs; stopping the daemon turns the page red (banner,
nothing green); and the console has no error while the daemon runs (after it stops, only the
failed fetches of ``/status.json``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from director.control.client import request
from director.status_page import REFRESH, STALE_PERIODS
from tests.app.test_peer_check import Node, pair, states
from tests.app.test_process import SERVED, director_ns, spawn_director, wait_for
from tests.helpers import browser as browser_helper
from tests.helpers.browser import Browser
from tests.helpers.director import free_port
from tests.helpers.netns import Background, Namespace, Topology

__all__ = ["director_ns", "pair"]  # fixtures, used by name

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        not browser_helper.available(),
        reason="apt-get install chromium chromium-driver; pip install the dev extras (selenium)",
    ),
]

XSS = '<img src=x onerror="window.pwned=1;console.error(1)">'
CONFIG = SERVED.replace(
    '  address = "198.18.1.22"', f"  address = \"198.18.1.22\"\n  name = '{XSS}'"
)
GREEN = "rgb(204, 255, 204)"
ROW = "document.querySelector('tr[data-server=\"{}\"]')"


class Farm:
    """Two web servers, each its own process (stopped by its pid, started again)."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.servers: dict[str, Background] = {}

    def start(self, address: str) -> None:
        self.servers[address] = self.ns.spawn(
            sys.executable, "-m", "http.server", "--bind", address, "80"
        )

    def stop(self, address: str) -> None:
        self.servers.pop(address).stop()


@pytest.fixture
def farm(topology: Topology, director_ns: Namespace) -> Farm:
    servers = topology.namespace("s")
    topology.veth(director_ns, "r0", servers, "eth0", a_addr="198.18.1.1/24")
    farm = Farm(servers)
    for address in ("198.18.1.21", "198.18.1.22"):
        servers.add_address("eth0", f"{address}/24")
        farm.start(address)
    return farm


@pytest.fixture
def chromium(director_ns: Namespace, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(director_ns, tmp_path)
    try:
        yield b
    finally:
        b.close()
        left = b.leftovers()
        assert not left, f"browser processes left running: {left}"


def row(b: Browser, address: str) -> str:
    text = b.js(f"{ROW.format(address)}?.textContent || ''")
    return str(text)


def background(b: Browser, element: str) -> str:
    return str(b.js(f"getComputedStyle({element}).backgroundColor"))


def errors(entries: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in entries if e.get("level") in ("SEVERE", "WARNING")]


def test_status_page_in_chromium_follows_a_server_down_and_up_and_flags_a_stopped_daemon(
    tmp_path: Path, director_ns: Namespace, farm: Farm, chromium: Browser
) -> None:
    started = time.monotonic()
    state, sock, port = tmp_path / "state", tmp_path / "control.sock", free_port()
    config = tmp_path / "director.toml"
    config.write_text(CONFIG.format(state=state, sock=sock, port=port))
    daemon = spawn_director(director_ns, config, state)
    try:
        try:
            wait_for("the daemon's listeners", lambda: request(sock, "status", wait=5), 30)
        except AssertionError:
            raise AssertionError(daemon.output()[-3000:]) from None
        chromium.get(f"http://127.0.0.1:{port}/")
        assert chromium.js("document.title") in ("director MASTER", "director -")
        chromium.js("(window.loadedOnce = 42)")  # gone if the page were reloaded
        wait_for(
            "both servers up on the page",
            lambda: (
                "up http" in row(chromium, "198.18.1.21:80")
                and "up http" in row(chromium, "198.18.1.22:80")
            ),
            within=20,
        )
        assert "TCP 198.18.0.20:80 wlc  [web]" in chromium.js("document.body.textContent")
        assert XSS in row(chromium, "198.18.1.22:80")  # shown as text
        assert chromium.js("document.querySelectorAll('main img').length") == 0
        assert chromium.js("window.pwned === undefined")
        assert chromium.js("document.getElementById('stale').hidden")
        # On a phone: one card per row, nothing wider than the screen.
        chromium.size(390, 844)
        assert chromium.js("document.documentElement.scrollWidth") <= chromium.js(
            "document.documentElement.clientWidth"
        )
        assert chromium.js("getComputedStyle(document.querySelector('thead')).display") == "none"
        chromium.size(1200, 900)

        # A server stops: DOWN within the check's fall (2 x 0.3 s) plus one refresh.
        farm.stop("198.18.1.22")
        stopped = time.monotonic()
        wait_for("DOWN on the page", lambda: "DOWN http" in row(chromium, "198.18.1.22:80"), 10)
        down_after = time.monotonic() - stopped
        line = row(chromium, "198.18.1.22:80")
        assert "UTC" in line, line  # since when
        assert "up http" in row(chromium, "198.18.1.21:80")
        events = chromium.js("document.getElementById('section-events').innerText")
        assert "198.18.1.22:80 in TCP 198.18.0.20:80: DOWN" in events
        farm.start("198.18.1.22")
        restarted = time.monotonic()
        wait_for("up again on the page", lambda: "up http" in row(chromium, "198.18.1.22:80"), 10)
        up_after = time.monotonic() - restarted
        assert chromium.js("window.loadedOnce") == 42  # the same page all along
        assert (
            chromium.js("getComputedStyle(document.querySelector('td.up')).backgroundColor")
            == GREEN
        )
        assert not errors(chromium.console()), "console errors while the daemon runs"

        # The daemon stops: red banner within STALE_PERIODS refreshes, nothing green left.
        daemon.stop(timeout=15)
        assert daemon.proc.returncode == 0, daemon.output()[-2000:]
        gone = time.monotonic()
        wait_for(
            "the stale banner",
            lambda: not chromium.js("document.getElementById('stale').hidden"),
            within=STALE_PERIODS * REFRESH + 3 * REFRESH,
        )
        stale_after = time.monotonic() - gone
        banner = chromium.js("document.getElementById('stale').textContent")
        assert banner.startswith("STALE DATA: no fresh data from the daemon for"), banner
        assert "is directord running?" in banner
        assert chromium.js("document.body.classList.contains('stale')")
        colours = chromium.js(
            "Array.from(document.querySelectorAll('td, span, div, h1, p'))"
            ".map(e => getComputedStyle(e).backgroundColor)"
        )
        assert GREEN not in colours
        assert chromium.js(
            "getComputedStyle(document.getElementById('stale')).backgroundColor"
        ) == ("rgb(187, 0, 0)")
        after = errors(chromium.console())
        assert all("status.json" in str(e.get("message")) for e in after), after
    finally:
        daemon.stop(timeout=15)
    print(
        f"DOWN on the page {down_after:.1f} s after the server stopped, up {up_after:.1f} s "
        f"after it started; stale banner {stale_after:.1f} s after the daemon stopped; "
        f"test {time.monotonic() - started:.1f} s"
    )


# -- a feedback agent on the page --------------------------------------------------------------

AGENT_PORT = 3009
# A tiny agent: on each connection, writes what the file says now and closes.
AGENT_PY = """
import socket, sys
from pathlib import Path
said = Path(sys.argv[3])
with socket.create_server((sys.argv[1], int(sys.argv[2]))) as s:
    while True:
        c, _ = s.accept()
        with c:
            c.sendall(said.read_bytes())
"""
AGENT_CONFIG = SERVED.replace(
    '  address = "198.18.1.21"',
    '  address = "198.18.1.21"\n  weight = 4\n'
    f"  agent = {{{{ port = {AGENT_PORT}, interval = 0.2, timeout = 0.2 }}}}",
)
HOSTILE_WORD = '<img src=x onerror="window.pwned=2">'


def agent_cell(b: Browser, address: str) -> tuple[str, str]:
    cell = f"{ROW.format(address)}?.querySelector('td[data-label=\"Agent\"]')"
    text = b.js(f"{cell}?.textContent || ''")
    return str(text), str(b.js(f"{cell}?.className || ''"))


def agent_text(sock: Path) -> str:
    status = request(sock, "status", wait=5)
    return str(status["services"][0]["servers"][0]["agent"]["text"])


def test_status_page_in_chromium_follows_a_feedback_agent_without_a_reload(
    tmp_path: Path, director_ns: Namespace, farm: Farm, chromium: Browser
) -> None:
    """The agent says 100%, then 50%, then drain, then garbage with markup: each shows in the
    Agent column (the words of directorctl status) and the kernel weight within the refresh,
    on the same page; the markup stays text."""
    started = time.monotonic()
    said = tmp_path / "agent-says"
    said.write_bytes(b"100%\n")
    agent = farm.ns.spawn(sys.executable, "-c", AGENT_PY, "198.18.1.21", str(AGENT_PORT), str(said))
    state, sock, port = tmp_path / "state", tmp_path / "control.sock", free_port()
    config = tmp_path / "director.toml"
    config.write_text(AGENT_CONFIG.format(state=state, sock=sock, port=port))
    daemon = spawn_director(director_ns, config, state)
    took: dict[str, float] = {}
    in_status: dict[str, float] = {}
    kernel: dict[str, float] = {}
    try:
        try:
            wait_for("the daemon's listeners", lambda: request(sock, "status", wait=5), 30)
        except AssertionError:
            raise AssertionError(daemon.output()[-3000:] + agent.output()) from None
        chromium.get(f"http://127.0.0.1:{port}/")
        chromium.js("(window.loadedOnce = 7)")
        server = "198.18.1.21:80"
        wait_for(
            "the agent's 100% on the page",
            lambda: agent_cell(chromium, server)[0].startswith("ready 100%  weight 4 of 4"),
            within=20,
        )
        assert "said '100%'" in agent_cell(chromium, server)[0]
        assert agent_cell(chromium, server)[1] == "up"
        assert agent_cell(chromium, "198.18.1.22:80") == ("", "")  # no agent there

        def step(answer: bytes, text: str, klass: str, weight: str) -> None:
            said.write_bytes(answer)
            changed = time.monotonic()
            wait_for(
                f"{answer!r} in the status",
                lambda: agent_text(sock).startswith(text),
                within=10,
            )
            in_status[answer.decode().strip()] = time.monotonic() - changed
            wait_for(
                f"{answer!r} on the page",
                lambda: agent_cell(chromium, server)[0].startswith(text),
                within=10,
            )
            took[answer.decode().strip()] = time.monotonic() - changed
            # the kernel's weight: from the next reading of the table (stats_interval, 5 s)
            wait_for(f"kernel weight {weight}", lambda: f"{weight} / 4" in row(chromium, server))
            kernel[answer.decode().strip()] = time.monotonic() - changed
            assert agent_cell(chromium, server)[1] == klass, agent_cell(chromium, server)

        step(b"50%\n", "ready 50%  weight 2 of 4", "up", "2")
        step(b"drain\n", "drain 50%  weight 0 of 4", "drain", "0")
        # garbage (markup included) is ignored and counted: drained still, shown as text
        said.write_bytes(f"{HOSTILE_WORD}\n".encode())
        try:
            wait_for(
                "the garbage counted",
                lambda: "errors: garbage" in agent_cell(chromium, server)[0],
                within=10,
            )
        except AssertionError as exc:  # whether the daemon counted it, or the page is behind
            shown = agent_cell(chromium, server)[0]
            raise AssertionError(
                f"{exc}\npage: {shown!r}\nstatus: {agent_text(sock)!r}\n"
                + daemon.output()[-3000:]
                + agent.output()[-1000:]
            ) from None
        text, klass = agent_cell(chromium, server)
        assert text.startswith("drain 50%  weight 0 of 4") and klass == "drain", text
        assert f"said {HOSTILE_WORD!r}" in text  # its last word, as text
        assert chromium.js("document.querySelectorAll('main img').length") == 0
        assert chromium.js("window.pwned === undefined")
        step(b"ready 100%\n", "ready 100%  weight 4 of 4", "up", "4")
        assert chromium.js("window.loadedOnce") == 7  # the same page all along
        status = request(sock, "status", wait=5)
        rs = status["services"][0]["servers"][0]
        assert rs["agent"]["text"].startswith("ready 100%  weight 4 of 4")
        assert not errors(chromium.console()), "console errors"
    finally:
        daemon.stop(timeout=15)
        agent.stop()
    print(
        "agent answer in directorctl status after "
        + ", ".join(f"{k} {v:.1f} s" for k, v in in_status.items())
        + "; on the page after "
        + ", ".join(f"{k} {v:.1f} s" for k, v in took.items())
        + "; the kernel's weight on the page after "
        + ", ".join(f"{k} {v:.1f} s" for k, v in kernel.items())
        + f"; test {time.monotonic() - started:.1f} s"
    )


# -- the peer config check on the page ---------------------------------------------------------

BANNERS = "Array.from(document.querySelectorAll('#peer-banner .banner'))"
RED, AMBER = "rgb(187, 0, 0)", "rgb(232, 160, 0)"


def peer_banners(b: Browser) -> list[list[str]]:
    """[text, background colour] of each peer banner on the page."""
    found = b.js(f"{BANNERS}.map(e => [e.textContent, getComputedStyle(e).backgroundColor])")
    return [[str(text), str(colour)] for text, colour in found]


def test_status_page_in_chromium_shows_a_peer_config_banner_and_clears_it(
    tmp_path: Path, pair: tuple[Node, Node]
) -> None:
    """Two live directors that agree: no banner, the Peer config section says the same. A real
    server's weight changed on d2: d1's open page shows the red banner (the words of
    ``directorctl status``) within 10 s, and it goes once the change is reverted; d2 stopped:
    an amber banner on d1's page."""
    d1, d2 = pair
    started = time.monotonic()
    wait_for("both agree", lambda: states(d1, d2) == ["match", "match"], within=20)
    b = Browser(d1.ns, tmp_path)
    figures: dict[str, float] = {}
    try:
        b.get(f"http://127.0.0.1:{d1.metrics}/")
        b.js("(window.loadedOnce = 3)")
        section = "document.getElementById('section-peer_check')"
        wait_for(
            "the peer's line",
            lambda: "198.18.0.2:9470 same config" in str(b.js(f"{section}?.textContent")),
            within=10,
        )
        text = str(b.js(f"{section}.textContent"))
        assert text.startswith("Peer config") and "this config" in text
        assert f"digest {d1.status()['peer_check']['digest'][:12]}" in text
        assert peer_banners(b) == []

        d2.write(weight=3)
        d2.reload()
        changed = time.monotonic()
        wait_for("the red banner", lambda: peer_banners(b), within=10)
        figures["appeared"] = time.monotonic() - changed
        [[banner, colour]] = peer_banners(b)
        service = "virtual_service TCP 198.18.0.51:80"
        assert banner.startswith("PEER: CONFIG DIFFERS from 198.18.0.2:9470 for "), banner
        assert banner.endswith(f": {service}; run directorctl diff-peer 198.18.0.2:9470")
        assert colour == RED
        # directorctl status on d1: the same line (but for its own "for N s")
        ctl = d1.ctl("status").stdout
        [line] = [x for x in ctl.splitlines() if x.startswith("PEER:")]
        assert line.split(" for ")[0] == "PEER:     CONFIG DIFFERS from 198.18.0.2:9470"
        assert line.split(" s: ")[1] == banner.split(" s: ")[1]
        row = "document.querySelector('tr[data-peer=\"198.18.0.2:9470\"]')"
        assert "mismatch" in str(b.js(f"{row}.textContent"))

        d2.write(weight=1)
        d2.reload()
        reverted = time.monotonic()
        wait_for("no banner", lambda: not peer_banners(b), within=10)
        figures["disappeared"] = time.monotonic() - reverted
        assert "198.18.0.2:9470 same config" in str(b.js(f"{section}.textContent"))

        assert d2.proc is not None
        d2.proc.stop(timeout=15)
        stopped = time.monotonic()
        wait_for("the amber banner", lambda: peer_banners(b), within=15)
        figures["unreachable"] = time.monotonic() - stopped
        [[banner, colour]] = peer_banners(b)
        assert banner.startswith("PEER: 198.18.0.2:9470 UNREACHABLE for "), banner
        assert colour == AMBER
        assert b.js("window.loadedOnce") == 3  # the same page all along
        assert not errors(b.console()), "console errors"
    finally:
        b.close()
        left = b.leftovers()
        assert not left, f"browser processes left running: {left}"
    print(
        f"peer banner on the page {figures['appeared']:.1f} s after the change, gone "
        f"{figures['disappeared']:.1f} s after the revert; amber "
        f"{figures['unreachable']:.1f} s after the peer stopped; "
        f"test {time.monotonic() - started:.1f} s"
    )
