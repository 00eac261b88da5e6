"""The BGP section of the status page on a live director: the BIRD lab of
``tests.helpers.bgp_lab`` (one director running ExaBGP, peering with BIRD in a router
namespace), its HTTP listener on 127.0.0.1 in the director's namespace.

``/status.json`` and ``/`` (fetched in the namespace, the HTML parsed) show the session
established and the route announced (green, no banner); after ``directorctl drain-director`` the
route is withdrawn (amber) under an amber banner in ``directorctl status``'s words, gone after
``enable-director``; the real server stopped: the route withdrawn for lost quorum (red); BIRD
killed: the session is not established (amber, a banner). With Chromium (when installed) the
same page, open all along, follows each change without a reload (the script's renderer).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from director.control.client import request
from director.control.ctl import render_status
from tests.app.test_process import wait_for
from tests.helpers import browser as browser_helper
from tests.helpers.bgp_lab import ROUTER, VIP, Director, build, until
from tests.helpers.browser import Browser
from tests.helpers.netns import Namespace, Topology
from tests.unit.test_status_page import bgp_banners, bgp_head, row_cells

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (apt install bird2)"),
]

HTTP = "127.0.0.1:9100"  # in the director's namespace
PREFIX = f"{VIP}/32"
GET = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"  # noqa: E501
# the backgrounds of the page's classes (director.status_page.CSS)
GREEN, AMBER, RED = "rgb(204, 255, 204)", "rgb(255, 255, 221)", "rgb(255, 204, 204)"
BANNER_AMBER, BANNER_RED = "rgb(232, 160, 0)", "rgb(187, 0, 0)"


def get(d: Director, path: str) -> str:
    return d.ns.run(sys.executable, "-c", GET, f"http://{HTTP}{path}", timeout=20).stdout


def words(d: Director) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(get(d, "/status.json"))["bgp"]["words"]
    return out


def page(d: Director) -> bytes:
    return get(d, "/").encode()


def page_when(d: Director, what: str, check: Callable[[bytes], object]) -> bytes:
    """The page once ``check`` holds (the listener serves a status up to ``STATUS_MAX_AGE``
    old)."""
    html: list[bytes] = []

    def shows() -> object:
        html[:] = [page(d)]
        return check(html[0])

    wait_for(what, shows, within=5)
    return html[0]


def route_state(d: Director, want: str) -> bytes:
    return page_when(
        d,
        f"the route {want} on the page",
        lambda html: row_cells(html, "data-prefix")[PREFIX][1][0] == want,
    )


def ctl_banners(d: Director) -> list[str]:
    """``directorctl status``'s BGP banner lines, without their heading."""
    text = render_status(request(d.state / "control.sock", "status"))
    return [x[len("BGP:      ") :] for x in text.splitlines() if x.startswith("BGP:")]


class Page:
    """The page open in Chromium (or nothing when it is not installed)."""

    def __init__(self, ns: Namespace, tmp: Path) -> None:
        self.b = Browser(ns, tmp) if browser_helper.available() else None
        if self.b is not None:
            self.b.get(f"http://{HTTP}/")
            self.b.js("(window.loadedOnce = 7)")

    def state(self, row: str) -> tuple[str, str]:
        """(text, background) of the State cell of a BGP row, as the script drew it."""
        assert self.b is not None
        found = self.b.js(
            f"(function () {{ const r = document.querySelector('{row}');"
            " if (!r) return ['', '']; const c = r.children[1];"
            " return [c.textContent, getComputedStyle(c).backgroundColor]; })()"
        )
        return str(found[0]), str(found[1])

    def banners(self) -> list[list[str]]:
        assert self.b is not None
        found = self.b.js(
            "Array.from(document.querySelectorAll('#bgp-banner .banner'))"
            ".map(e => [e.textContent, getComputedStyle(e).backgroundColor])"
        )
        return [[str(t), str(c)] for t, c in found]

    def follows(self, what: str, row: str, want: tuple[str, str], banners: int) -> None:
        if self.b is None:
            return
        wait_for(
            f"the page shows {what}",
            lambda: self.state(row) == want and len(self.banners()) == banners,
            within=10,
        )

    def close(self) -> None:
        if self.b is None:
            return
        assert self.b.js("window.loadedOnce") == 7  # the same page all along
        console = [e for e in self.b.console() if e.get("level") in ("SEVERE", "WARNING")]
        self.b.close()
        assert not self.b.leftovers(), "browser processes left running"
        assert not console, console


@pytest.fixture
def lab(topology: Topology, tmp_path: Path) -> Iterator[tuple[Namespace, Director]]:
    router, (d1,) = build(topology, tmp_path, directors=1, hold_time=9, metrics=HTTP)
    yield router, d1
    if d1.daemon.proc.poll() is None:
        d1.daemon.stop()
    assert "Traceback" not in d1.daemon.output(), d1.daemon.output()[-3000:]


ROUTE_ROW = f'tr[data-prefix="{PREFIX}"]'
PEER_ROW = f'tr[data-bgp-peer="{ROUTER}"]'


def test_status_page_shows_sessions_routes_drain_and_a_lost_session(
    lab: tuple[Namespace, Director], tmp_path: Path
) -> None:
    router, d1 = lab
    started = time.monotonic()
    until(router, lambda hops: hops == {d1.address}, within=30)
    sock = d1.state / "control.sock"
    wait_for("the session up", lambda: words(d1)["sessions"][0]["state"] == "UP", within=10)

    # 1. established and announced: green, no banner, on the page and in /status.json
    w = words(d1)
    assert [(s["peer"], s["level"]) for s in w["sessions"]] == [(ROUTER, "ok")]
    [route] = w["routes"]
    assert (route["prefix"], route["state"], route["level"]) == (PREFIX, "announced", "ok")
    assert w["banners"] == [] and w["head"]["text"].startswith("exabgp  pid ")
    html = page(d1)
    assert row_cells(html, "data-bgp-peer")[ROUTER][:2] == [(ROUTER, ""), ("UP", "up")]
    assert row_cells(html, "data-prefix")[PREFIX][1] == ("announced", "up")
    assert bgp_banners(html) == [] and bgp_head(html)[0] == "up"
    shown = Page(d1.ns, tmp_path)
    try:
        shown.follows("the route announced", ROUTE_ROW, ("announced", GREEN), banners=0)
        if shown.b is not None:
            assert shown.state(PEER_ROW) == ("UP", GREEN)

        # 2. drained: the route withdrawn (amber) under an amber banner, directorctl's words
        request(sock, "drain-director", {"timeout": 60})
        until(router, lambda hops: not hops, within=5)
        html = route_state(d1, "withdrawn")
        assert row_cells(html, "data-prefix")[PREFIX][1:3] == [
            ("withdrawn", "drain"),
            ("drained", "err"),
        ]
        [(klass, banner)] = bgp_banners(html)
        assert klass == "banner warn" and banner.startswith("BGP: this director is DRAINED: ")
        [line] = ctl_banners(d1)
        # the same words (but for the seconds of flows left, read a moment later)
        assert line.split(" s of flows left")[1] == banner.split(" s of flows left")[1]
        assert bgp_head(html)[0] == "drain" and "DRAINED (" in bgp_head(html)[1]
        shown.follows("the drain", ROUTE_ROW, ("withdrawn", AMBER), banners=1)
        if shown.b is not None:
            [[text, colour]] = shown.banners()
            assert text.startswith("BGP: this director is DRAINED: ") and colour == BANNER_AMBER

        request(sock, "enable-director")
        until(router, lambda hops: hops == {d1.address}, within=10)
        assert bgp_banners(route_state(d1, "announced")) == [] and ctl_banners(d1) == []
        shown.follows("the route back", ROUTE_ROW, ("announced", GREEN), banners=0)

        # 3. the real server stops: quorum lost, the route withdrawn in red, and a red banner
        d1.server.stop()
        until(router, lambda hops: not hops, within=10)
        html = route_state(d1, "withdrawn")
        state, reason = row_cells(html, "data-prefix")[PREFIX][1:3]
        assert state == ("withdrawn", "down") and reason[0].startswith("quorum lost (web 0/1")
        shown.follows("quorum lost", ROUTE_ROW, ("withdrawn", RED), banners=1)
        if shown.b is not None:
            [[text, colour]] = shown.banners()
            assert text.startswith(f"BGP: route {PREFIX} WITHDRAWN: quorum lost")
            assert colour == BANNER_RED
        assert [b["level"] for b in words(d1)["banners"]] == ["alarm"]
        d1.start_server()
        until(router, lambda hops: hops == {d1.address}, within=15)
        shown.follows("the route back after quorum", ROUTE_ROW, ("announced", GREEN), banners=0)

        # 4. BIRD killed: the session is not established (amber) and a banner says so
        bird = subprocess.run(
            ["pgrep", "-f", f"bird -f -c {tmp_path}/bird.conf"], capture_output=True, text=True
        ).stdout.split()
        assert len(bird) == 1, bird
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", bird[0]], check=True)
        killed = time.monotonic()
        wait_for("the session down", lambda: words(d1)["banners"], within=15)
        lost = time.monotonic() - killed
        html = page_when(d1, "the session's banner on the page", bgp_banners)
        peer = row_cells(html, "data-bgp-peer")[ROUTER]
        assert peer[1][1] == "drain" and peer[1][0] != "UP"
        [(klass, banner)] = bgp_banners(html)
        assert klass == "banner warn" and banner.startswith(f"BGP: session with peer {ROUTER}  ")
        assert ctl_banners(d1) == [banner[len("BGP: ") :]]
        if shown.b is not None:
            wait_for("the session banner in the browser", shown.banners, within=10)
            [[text, colour]] = shown.banners()
            assert text.startswith(f"BGP: session with peer {ROUTER}  ") and colour == BANNER_AMBER
            assert shown.state(PEER_ROW)[1] == AMBER
    finally:
        shown.close()
    print(
        f"\nBGP on the status page: session loss on the page {lost:.1f} s after BIRD was "
        f"killed; chromium {'yes' if shown.b is not None else 'no'}; "
        f"test {time.monotonic() - started:.1f} s"
    )
