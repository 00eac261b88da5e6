"""The status model (:mod:`director.status`), the page (:mod:`director.status_page`) and the
event ring (:mod:`director.events`): pure, plus the HTTP side on a running director."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import re
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from director.config import parse_config
from director.control import ctl
from director.control.ctl import _bgp_lines, agent_line
from director.events import Events
from director.http import status_json
from director.ipvs.model import Dest, DestKey, Protocol, Service, ServiceKey
from director.ipvs.stats import Counters, DestStats, StatsSnapshot
from director.peer.command import status_lines
from director.status import StatsPair, StatusInputs, build_status, stale_reasons
from director.status_page import (
    BGP_ROUTE_COLUMNS,
    BGP_SESSION_COLUMNS,
    CSP,
    LEVEL_CLASS,
    PEER_COLUMNS,
    SCRIPT,
    SERVER_COLUMNS,
    TITLES,
    render_page,
)
from tests.unit.test_control_cli import Daemon, daemon

__all__ = ["daemon"]  # fixture, used by name

EVIL = '<script>alert("name")</script>'
EVIL_ERROR = '"><img src=x onerror=alert(1)>'
CONFIG = f"""
[daemon]
stats_interval = 2
[[virtual_server]]
name = '{EVIL}'
protocol = "tcp"
address = "198.18.0.20"
port = 80
  [[virtual_server.real_server]]
  name = "web1"
  address = "198.18.1.21"
  weight = 4
  [[virtual_server.real_server]]
  name = "web2"
  address = "198.18.1.22"
"""
WEB = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.20"), 80)
R1 = DestKey.of(ipaddress.IPv4Address("198.18.1.21"), 80)


def reading(at: float, conns: int, inbytes: int) -> StatsSnapshot:
    snap = StatsSnapshot(at=at)
    snap.services[WEB] = (Service(WEB), Counters())
    snap.dests[WEB] = {R1: DestStats(Dest(R1, weight=4), 3, 7, 0, Counters(conns, 0, 0, inbytes))}
    return snap


def inputs(now: float = 1000.0, **kw: object) -> StatusInputs:
    config = parse_config(CONFIG)
    stats = StatsPair().observe(reading(now - 12, 100, 5000)).observe(reading(now - 2, 150, 9000))
    fields: dict[str, object] = {
        "now": now,
        "generation": 7,
        "config": config,
        "config_sha256": "ab" * 32,
        "engine_status": {"config_path": "/etc/director/director.toml", "director_faults": []},
        "stats": stats,
        "checks": [
            {
                "service": str(WEB),
                "destination": str(R1),
                "type": "http",
                "up": False,
                "last_latency_ms": 1.5,
                "last_error": EVIL_ERROR,
            }
        ],
        "health_since": {(str(WEB), str(R1)): now - 30},
        "overrides": {},
        "removed_why": {},
        "drains": [],
        "role": "master",
        "vrrp": [],
        "events": Events().recent(),
    }
    fields.update(kw)
    return StatusInputs(**fields)  # type: ignore[arg-type]


class Text(HTMLParser):
    """Every element and text node of a page, as a browser would parse it."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: bytes) -> Text:
    p = Text()
    p.feed(page.decode())
    return p


def test_events_ring_is_bounded_and_newest_first() -> None:
    events = Events(size=3)
    for n in range(5):
        events.record(100.0 + n, "health", f"event {n}")
    assert [e.text for e in events.recent()] == ["event 4", "event 3", "event 2"]
    assert [e.seq for e in events.recent(2)] == [5, 4]
    assert events.total == 5
    assert events.recent()[0].to_json() == {
        "at": 104.0,
        "kind": "health",
        "text": "event 4",
        "seq": 5,
    }
    with pytest.raises(ValueError, match="size: expected at least 1, found 0"):
        Events(size=0)


def test_model_joins_config_kernel_health_and_rates() -> None:
    st = build_status(inputs())
    services: Any = st["services"]
    (svc,) = services
    web1, web2 = svc["servers"]
    assert web1["address"] == "198.18.1.21:80"
    assert (web1["weight"], web1["config_weight"], web1["active"], web1["inactive"]) == (4, 4, 3, 7)
    # 50 connections and 4,000 bytes in the 10 s between the two readings
    assert web1["rate"] == {"cps": 5.0, "in_bps": 400.0, "out_bps": 0.0}
    assert web1["health"] == {
        "up": False, "type": "http", "latency_ms": 1.5, "last_error": EVIL_ERROR, "since": 970.0,
    }  # fmt: skip
    assert web2["in_kernel"] is False and web2["health"] is None and web2["rate"] is None
    assert st["config"] == {
        "path": "/etc/director/director.toml", "loaded_at": None, "sha256": "ab" * 32,
    }  # fmt: skip
    assert (st["generated_at"], st["generation"], st["stats_at"], st["stale"]) == (
        1000.0,
        7,
        998,
        [],
    )
    # The same reading twice is one reading: no rate from a zero span.
    again = StatsPair().observe(reading(5, 1, 1))
    assert again.observe(again.current) is again


def test_counters_that_stop_advancing_are_stale() -> None:
    assert stale_reasons(100.0, 95.0, 2.0) == []
    (why,) = stale_reasons(100.0, 90.0, 2.0)
    assert "last read 10 s ago (every 2 s expected)" in why
    assert stale_reasons(100.0, None, 2.0) == []  # no IPVS: nothing to be stale
    page = render_page(build_status(dataclasses.replace(inputs(), now=1100.0)))
    assert b'<body class="stale"' in page
    assert b'<div id="stale" class="banner">STALE DATA: the kernel' in page
    fresh = render_page(build_status(inputs()))
    assert b'<div id="stale" class="banner" hidden>' in fresh and b'class="stale"' not in fresh


def test_page_escapes_config_names_and_server_errors() -> None:
    st = build_status(inputs())
    page = render_page(st)
    html = page.decode()
    assert EVIL not in html and EVIL_ERROR not in html
    assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    p = parsed(page)
    assert "img" not in p.tags
    assert p.tags.count("script") == 1  # the page's own, nothing from the data
    text = "".join(p.text)
    assert EVIL in text and EVIL_ERROR in text  # shown to the reader as written
    assert "DOWN http 1.5 ms" in text and "4 / 4" in text and "out / 1" in text
    assert "1970-01-01 00:16:10 UTC" in text  # since
    assert "sha256" + "ab" * 32 in text
    # The JSON is JSON: the evil strings are data, and the CSP allows only the page's script.
    assert json.loads(status_json(inputs()))["services"][0]["name"] == EVIL
    assert "script-src 'sha256-" in CSP and "unsafe-inline" not in CSP.split("style-src")[0]


def test_unknown_sections_are_shown_and_absent_ones_are_not() -> None:
    st = build_status(inputs(sections={"lab": {"state": "<established>", "peers": [1, 2]}}))
    del st["vrrp"]
    html = render_page(st).decode()
    assert 'id="section-lab"' in html and "&lt;established&gt;" in html and "[1, 2]" in html
    assert 'id="section-vrrp"' not in html
    assert 'id="section-peer_check"' not in html  # absent here: the director adds it
    order = [m for m in re.findall(r'id="section-(\w+)"', html)]
    assert order == ["services", "events", "config", "lab"]


def test_script_mirrors_the_python_words() -> None:
    """The words both renderers use: a change on one side only fails here."""
    for words in ('"up" : "DOWN"', '"out"', '"no check"', "no instances (this director is",
                  "(not in the kernel table)", "STALE DATA: ", '" / "', '"none yet"',
                  '"PEER: "', '"no peers configured"', '"this config"', '"listening"',
                  '"banner warn"', '"BGP: " + x.text', '"no routes configured"',
                  '"bgp-banner"', '"bgp-head"', "head.text", "p.text"):  # fmt: skip
        assert words in SCRIPT, words
    # the tables both take from Python: headings, columns, the colour of each level
    assert json.dumps(TITLES, sort_keys=True) in SCRIPT
    assert json.dumps(LEVEL_CLASS, sort_keys=True) in SCRIPT
    assert json.dumps(list(PEER_COLUMNS)) in SCRIPT and json.dumps(list(SERVER_COLUMNS)) in SCRIPT
    assert json.dumps(list(BGP_SESSION_COLUMNS)) in SCRIPT
    assert json.dumps(list(BGP_ROUTE_COLUMNS)) in SCRIPT
    # the agent's and the peers' words are the model's (director.status_words), shown as is
    assert "a.text" in SCRIPT and "line.text" in SCRIPT and '"PEER: " + x.text' in SCRIPT
    assert "innerHTML" not in SCRIPT and "eval(" not in SCRIPT


EVIL_LINE = "</td><script>alert('agent')</script>"
EVIL_DIFFERS = "virtual_service <img src=x onerror=alert(2)>"


def agent_summary(**kw: object) -> dict[str, object]:
    """One agent as :meth:`director.agents.FeedbackAgents.summary` gives it (web1's)."""
    out: dict[str, object] = {
        "service": str(WEB), "destination": str(R1), "target": "198.18.1.21:3009",
        "state": "ready", "percent": 75, "config_weight": 4, "weight": 3, "maxconn": None,
        "asked_percent": 75, "held": None, "last_line": "75%", "last_reply_at": 990.0,
        "last_error": None, "last_error_at": None, "keeping_since": None, "errors": {},
    }  # fmt: skip
    out.update(kw)
    return out


def cells(page: bytes, column: str) -> dict[str, tuple[str, str]]:
    """Server address -> (text, class) of one column of the services table, as parsed."""

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.row: str | None = None
            self.cell: str | None = None
            self.found: dict[str, tuple[str, str]] = {}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "tr" and a.get("data-server"):
                self.row = a["data-server"]
            elif tag == "td" and self.row and a.get("data-label") == column:
                self.cell = a.get("class") or ""
                self.found[self.row] = ("", self.cell)
            elif self.cell is not None:
                raise AssertionError(f"a <{tag}> inside the {column} cell")

        def handle_endtag(self, tag: str) -> None:
            if tag == "td":
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None and self.row:
                text, klass = self.found[self.row]
                self.found[self.row] = (text + data, klass)

    p = Rows()
    p.feed(page.decode())
    return p.found


@pytest.mark.parametrize(
    ("agent", "words", "klass"),
    [
        ({}, "ready 75%  weight 3 of 4  said '75%'", "up"),
        ({"state": "drain", "weight": 0}, "drain 75%  weight 0 of 4", "drain"),
        ({"state": "maint", "weight": 0}, "maint 75%  weight 0 of 4", "drain"),
        ({"state": "down", "weight": 0, "last_line": "down"}, "down 75%  weight 0 of 4", "down"),
        ({"state": "none", "last_line": None}, "no answer yet  weight 3 of 4", ""),
        (
            {"keeping_since": 988.0, "last_error": "timed out after 1 s",
             "errors": {"timeout": 2, "garbage": 1}},
            "keeping the last value: no answer for 12 s (timed out after 1 s)  "
            "errors: garbage 1, timeout 2",
            "drain",
        ),
        ({"last_line": EVIL_LINE, "maxconn": 10}, f"maxconn 10  said {EVIL_LINE!r}", "up"),
    ],
)  # fmt: skip
def test_agent_column_shows_the_effective_weight_in_directorctl_s_words(
    agent: dict[str, object], words: str, klass: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = build_status(inputs(agents=[agent_summary(**agent)]))
    web1, web2 = st["services"][0]["servers"]  # type: ignore[index]
    assert words in web1["agent"]["text"] and web2["agent"] is None
    page = render_page(st)
    column = cells(page, "Agent")  # fails on any tag inside the cell (the hostile line)
    assert column["198.18.1.21:80"] == (web1["agent"]["text"], klass)
    assert column["198.18.1.22:80"] == ("", "")
    assert "<script>alert" not in page.decode() and parsed(page).tags.count("script") == 1
    # directorctl status: the same words under the server's row (its clock at the status's)
    monkeypatch.setattr(ctl, "time", SimpleNamespace(time=lambda: 1000.0))
    assert agent_line(web1) == f"     agent: {web1['agent']['text']}"


NOW = 1000.0


def peer_status(*peers: dict[str, object]) -> StatusInputs:
    return inputs(
        sections={
            "peer_check": {
                "digest": "0123456789abcdef" * 4, "generation": 3,
                "listen_address": "198.18.0.1:9470", "peers": list(peers),
            }
        }
    )  # fmt: skip


def banners(page: bytes) -> list[tuple[str, str]]:
    """(class, text) of each banner in #peer-banner."""
    found = re.search(r'<div id="peer-banner">(.*?)</div><h1>', page.decode())
    assert found, "no #peer-banner before the heading"
    out = []
    for klass, inner in re.findall(r'<div class="([^"]*)">(.*?)</div>', found.group(1)):
        text = "".join(parsed(inner.encode()).text)
        out.append((klass, text))
    return out


MATCH = {"peer": "198.18.0.2:9470", "state": "match", "generation": 3, "since": NOW - 50}
MISMATCH = {"peer": "198.18.0.3:9470", "state": "mismatch", "generation": 4, "since": NOW - 90,
            "differs": [EVIL_DIFFERS, "kernel"], "detail": None}  # fmt: skip
REFUSED = {"peer": "198.18.0.4:9470", "state": "unauthenticated", "since": NOW - 5,
           "detail": "the peer refused our request: <b>bad signature</b>"}  # fmt: skip
DOWN = {"peer": "198.18.0.5:9470", "state": "unreachable", "since": NOW - 300,
        "detail": "cannot connect"}  # fmt: skip


def test_peer_section_and_banner_in_directorctl_status_s_words() -> None:
    # No peers, or all the same: the section, no banner.
    for peers in ((), (MATCH,), (MATCH, {"peer": "198.18.0.9:9470", "state": "unknown"})):
        st = build_status(peer_status(*peers))
        page = render_page(st)
        assert banners(page) == [], peers
        text = "".join(parsed(page.split(b"<script>")[0]).text)  # not the script's words
        assert "Peer config" in text and "generation 3, digest 0123456789ab" in text
        assert ("no peers configured" in text) == (not peers)
    assert "198.18.0.2:9470 same config (generation 3)" in text and "not asked yet" in text

    # One differs (red), two cannot be checked (amber): a banner each, the words of directorctl.
    st = build_status(peer_status(MATCH, MISMATCH, REFUSED, DOWN))
    page = render_page(st)
    html = page.decode()
    assert "<img" not in html and "<b>" not in html and "img" not in parsed(page).tags
    red = (
        f"CONFIG DIFFERS from 198.18.0.3:9470 for 90 s: {EVIL_DIFFERS}, kernel; "
        "run directorctl diff-peer 198.18.0.3:9470"
    )
    assert banners(page) == [
        ("banner", f"PEER: {red}"),
        ("banner warn", "PEER: 198.18.0.4:9470 UNAUTHENTICATED for 5 s: the peer refused our "
                        "request: <b>bad signature</b>"),
        ("banner warn", "PEER: 198.18.0.5:9470 UNREACHABLE for 5 min: cannot connect"),
    ]  # fmt: skip
    ctl = status_lines(st, NOW)
    assert ctl[0] == "config:   generation 3, digest 0123456789ab"
    assert [x[len("PEER:     ") :] for x in ctl if x.startswith("PEER:")] == [
        b[len("PEER: ") :] for _, b in banners(page)
    ]
    # the section's table: state, since, the same line coloured by its level
    assert re.search(r'<tr data-peer="198.18.0.3:9470">.*?<td class="down"', html)
    assert re.search(r'<tr data-peer="198.18.0.2:9470">.*?<td class="up"', html)
    assert "1970-01-01 00:15:10 UTC" in "".join(parsed(page).text)  # MISMATCH's since
    peer_check: Any = json.loads(status_json(peer_status(MISMATCH)))["peer_check"]
    assert peer_check["lines"] == [{"peer": "198.18.0.3:9470", "level": "alarm", "text": red}]
    assert peer_check["head"] == "generation 3, digest 0123456789ab"


# -- BGP route health injection ---------------------------------------------------------------

EVIL_REASON = "</td><script>alert('bgp')</script>"
EVIL_PROBLEM = '<img src=x onerror="alert(3)"> drain file'
ROUTER = "198.18.100.254"


def bgp_section(
    *,
    drained: bool = False,
    state: str = "up",
    reason: str = "",
    announced: bool = True,
    why: str = "healthy (web 2; quorum 1)",
    problem: str | None = None,
) -> dict[str, object]:
    """The section as :meth:`director.bgp.service.BgpService.summary` gives it (ExaBGP)."""
    return {
        "backend": "exabgp",
        "drain": {"drained": drained, "since": NOW - 5 if drained else None,
                  "until": NOW + 25 if drained else None,
                  "seconds_left": 25.0 if drained else None},
        "problem": problem,
        "vip_errors": [],
        "routes": [
            {"prefix": "198.18.0.10/32", "announced": announced, "reason": why,
             "for_seconds": 42.0},
            {"prefix": "198.18.0.11/32", "announced": True, "reason": "healthy (api 1; quorum 1)",
             "for_seconds": 300.0},
        ],
        "speaker": {
            "backend": "exabgp", "pid": 4242, "restarts": 1, "api_connected": True,
            "sessions": [{"peer": ROUTER, "state": state, "reason": reason, "for_seconds": 3.0,
                          "flaps": 0}],
            "announced": ["198.18.0.10/32"],
        },
    }  # fmt: skip


def bgp_banners(page: bytes) -> list[tuple[str, str]]:
    """(class, text) of each banner in #bgp-banner."""
    found = re.search(r'<div id="bgp-banner">(.*?)</div><div id="peer-banner">', page.decode())
    assert found, "no #bgp-banner before the peer banners"
    return [
        (klass, "".join(parsed(inner.encode()).text))
        for klass, inner in re.findall(r'<div class="([^"]*)">(.*?)</div>', found.group(1))
    ]


def row_cells(page: bytes, attr: str) -> dict[str, list[tuple[str, str]]]:
    """The rows carrying ``attr`` (data-bgp-peer, data-prefix): key -> [(text, class)] per cell;
    fails on any tag inside a cell."""

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.row: str | None = None
            self.cell = False
            self.found: dict[str, list[tuple[str, str]]] = {}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if self.cell:
                raise AssertionError(f"a <{tag}> inside a cell of {self.row}")
            if tag == "tr":
                self.row = a.get(attr)
                if self.row:
                    self.found[self.row] = []
            elif tag == "td" and self.row:
                self.cell = True
                self.found[self.row].append(("", a.get("class") or ""))

        def handle_endtag(self, tag: str) -> None:
            if tag == "td":
                self.cell = False
            elif tag == "tr":
                self.row = None

        def handle_data(self, data: str) -> None:
            if self.cell and self.row:
                text, klass = self.found[self.row][-1]
                self.found[self.row][-1] = (text + data, klass)

    p = Rows()
    p.feed(page.split(b"<script>")[0].decode())
    return p.found


def bgp_head(page: bytes) -> tuple[str, str]:
    found = re.search(r'<p id="bgp-head"(?: class="(\w+)")?>(.*?)</p>', page.decode())
    assert found, "no #bgp-head"
    return found.group(1) or "", "".join(parsed(found.group(2).encode()).text)


def test_bgp_section_established_and_announced_is_green_without_a_banner() -> None:
    st = build_status(inputs(sections={"bgp": bgp_section()}))
    page = render_page(st)
    html = page.decode()
    order = re.findall(r'id="section-(\w+)"', html)
    assert order[:2] == ["vrrp", "bgp"] and "<h2>BGP</h2>" in html
    assert bgp_head(page) == ("up", "exabgp  pid 4242  restarts 1")
    assert row_cells(page, "data-bgp-peer") == {ROUTER: [(ROUTER, ""), ("UP", "up"), ("", "err")]}
    assert row_cells(page, "data-prefix") == {
        "198.18.0.10/32": [("198.18.0.10/32", ""), ("announced", "up"),
                           ("healthy (web 2; quorum 1)", "err"), ("42 s", "")],
        "198.18.0.11/32": [("198.18.0.11/32", ""), ("announced", "up"),
                           ("healthy (api 1; quorum 1)", "err"), ("5 min", "")],
    }  # fmt: skip
    assert bgp_banners(page) == []
    # directorctl status: the same words
    assert _bgp_lines(st["bgp"]) == [  # type: ignore[arg-type]
        "bgp:      exabgp  pid 4242  restarts 1",
        f"          peer {ROUTER}  UP",
        "          198.18.0.10/32       announced  healthy (web 2; quorum 1)  (for 42 s)",
        "          198.18.0.11/32       announced  healthy (api 1; quorum 1)  (for 5 min)",
    ]


def test_bgp_drained_director_is_amber_with_a_banner_in_directorctl_s_words() -> None:
    st = build_status(
        inputs(sections={"bgp": bgp_section(drained=True, announced=False, why="drained")})
    )
    page = render_page(st)
    head = "exabgp  pid 4242  restarts 1  DRAINED (25.0 s of flows left)"
    assert bgp_head(page) == ("drain", head)
    route = row_cells(page, "data-prefix")["198.18.0.10/32"]
    assert route[1:3] == [("withdrawn", "drain"), ("drained", "err")]
    drained = (
        "this director is DRAINED: its routes are withdrawn, 25.0 s of flows left; "
        "run directorctl enable-director to announce them again"
    )
    assert bgp_banners(page) == [("banner warn", f"BGP: {drained}")]
    lines = _bgp_lines(st["bgp"])  # type: ignore[arg-type]
    assert lines[0] == f"bgp:      {head}" and lines[-1] == f"BGP:      {drained}"
    assert "          198.18.0.10/32       withdrawn  drained  (for 42 s)" in lines


def test_bgp_session_down_and_quorum_lost_escape_hostile_words() -> None:
    """A session down (amber banner), a route withdrawn for lost quorum (red), a reason and a
    problem with markup: shown as text, in directorctl status's words."""
    section = bgp_section(
        state="down", reason=EVIL_REASON, announced=False,
        why="quorum lost (web 0/1 healthy)", problem=EVIL_PROBLEM,
    )  # fmt: skip
    st = build_status(inputs(sections={"bgp": section}))
    page = render_page(st)
    html = page.split(b"<script>")[0].decode()
    assert "<script>alert" not in html and "<img" not in html
    assert parsed(page).tags.count("script") == 1 and "img" not in parsed(page).tags
    assert row_cells(page, "data-bgp-peer") == {  # fails on a tag inside a cell
        ROUTER: [(ROUTER, ""), ("DOWN", "drain"), (EVIL_REASON, "err")]
    }
    route = row_cells(page, "data-prefix")["198.18.0.10/32"]
    assert route[1:3] == [("withdrawn", "down"), ("quorum lost (web 0/1 healthy)", "err")]
    assert row_cells(page, "data-prefix")["198.18.0.11/32"][1] == ("announced", "up")
    session = f"session with peer {ROUTER}  DOWN  {EVIL_REASON}"
    withdrawn = (
        "route 198.18.0.10/32 WITHDRAWN: quorum lost (web 0/1 healthy) (for 42 s); "
        "see the services below"
    )
    # the route out for lack of healthy servers first (red), then the session (amber)
    assert bgp_banners(page) == [
        ("banner", f"BGP: {withdrawn}"),
        ("banner warn", f"BGP: {session}"),
    ]
    assert EVIL_PROBLEM in "".join(parsed(page.split(b"<script>")[0]).text)
    assert bgp_head(page) == ("up", "exabgp  pid 4242  restarts 1")  # the speaker runs
    lines = _bgp_lines(st["bgp"])  # type: ignore[arg-type]
    assert lines == [
        "bgp:      exabgp  pid 4242  restarts 1",
        f"          peer {ROUTER}  DOWN  {EVIL_REASON}",
        "          198.18.0.10/32       withdrawn  quorum lost (web 0/1 healthy)  (for 42 s)",
        "          198.18.0.11/32       announced  healthy (api 1; quorum 1)  (for 5 min)",
        f"          {EVIL_PROBLEM}",
        f"BGP:      {withdrawn}",
        f"BGP:      {session}",
    ]
    # /status.json carries the same words (the script shows them as is)
    words: Any = json.loads(status_json(inputs(sections={"bgp": section})))["bgp"]["words"]
    assert words["banners"] == [
        {"level": "alarm", "text": withdrawn},
        {"level": "warn", "text": session},
    ]
    assert words["routes"][0]["level"] == "alarm" and words["sessions"][0]["level"] == "warn"


def test_bgp_kernel_backend_and_no_bgp() -> None:
    kernel = {
        "backend": "kernel", "drain": {"drained": False, "seconds_left": None}, "problem": None,
        "vip_errors": ["adding 198.18.0.10/32 on lo: Operation not permitted"],
        "routes": [{"prefix": "198.18.0.10/32", "announced": False,
                    "reason": "below quorum_up (web 0/1 healthy)", "for_seconds": 1.0}],
        "speaker": {"backend": "kernel", "table": 100, "protocol": 186, "installed": [],
                    "errors": 0},
    }  # fmt: skip
    page = render_page(build_status(inputs(sections={"bgp": kernel})))
    assert bgp_head(page) == ("up", "kernel  table 100")
    assert row_cells(page, "data-bgp-peer") == {}
    assert bgp_banners(page) == [
        (
            "banner",
            "BGP: route 198.18.0.10/32 WITHDRAWN: below quorum_up (web 0/1 healthy) (for 1 s); "
            "see the services below",
        )
    ]
    assert row_cells(page, "data-prefix")["198.18.0.10/32"][1] == ("withdrawn", "down")
    assert "VIP: adding 198.18.0.10/32 on lo: Operation not permitted" in page.decode()
    # no [bgp]: the director's section reads None; nothing on the page, nothing in the JSON
    st = build_status(inputs(sections={"bgp": None}))
    assert "bgp" not in st
    page = render_page(st)
    assert 'id="section-bgp"' not in page.decode() and bgp_banners(page) == []
    assert "bgp" not in json.loads(status_json(inputs(sections={"bgp": None})))


async def fetch(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{port}{path}"
    async with (
        aiohttp.ClientSession() as http,
        asyncio.timeout(10),
        http.request(method, url) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.netns
def test_page_and_status_json_are_directorctl_status(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from director import http as http_module

    monkeypatch.setattr(http_module, "STATUS_MAX_AGE", 0.0)  # each request reads afresh
    assert daemon.run is not None
    director = daemon.run.director
    assert director.http is not None
    port = director.http.bound_port
    code, head, body = daemon.inside.run(fetch(port, "GET", "/status.json"))
    assert code == 200 and head["Content-Type"] == "application/json"
    assert head["Cache-Control"] == "no-store"
    over_http = json.loads(body)
    code, out, _ = daemon.ctl("status", "--json")
    over_socket = json.loads(out)
    assert code == 0
    for key in ("services", "vrrp", "role", "drains", "config", "peer_check"):
        assert over_http[key] == over_socket[key], key
    # no [peer_check] in this config: the shared config's digest and generation, no peers
    peer_check = over_http["peer_check"]
    assert over_http["config"]["sha256"] and len(peer_check["digest"]) == 64
    assert peer_check["generation"] == 1
    assert peer_check["listen_address"] is None and peer_check["peers"] == []
    assert over_socket["generation"] > over_http["generation"]
    assert [e["kind"] for e in over_http["events"]][-2:] == ["start", "role"]  # newest first
    code, _, _ = daemon.ctl("drain", "web2")
    assert code == 0
    code, out, _ = daemon.ctl("status")
    assert "maintenance drain web2" in out and "config:   sha256 " in out

    code, head, page = daemon.inside.run(fetch(port, "GET", "/"))
    assert code == 200 and head["Content-Type"] == "text/html; charset=utf-8"
    assert head["Content-Security-Policy"] == CSP
    text = "".join(parsed(page).text)
    assert "TCP 198.18.0.20:80 rr  [web]" in text and "198.18.1.22:80 (web2)" in text
    assert "draining" in text and "drain web2" in text
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        code, _, _ = daemon.inside.run(fetch(port, method, "/"))
        assert code == 405, method
        code, _, _ = daemon.inside.run(fetch(port, method, "/status.json"))
        assert code == 405, method
    code, _, _ = daemon.inside.run(fetch(port, "GET", "/nothing"))
    assert code == 404


@pytest.mark.asyncio
async def test_requests_share_one_rendering_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any number of open pages cost one rendering per kind per STATUS_MAX_AGE: concurrent
    requests share the one in progress, later ones the cached body; then it is taken again."""
    from director import http as http_module
    from director.http import MetricsServer
    from director.metrics import Metrics
    from tests.helpers.director import free_port

    monkeypatch.setattr(http_module, "STATUS_MAX_AGE", 0.5)
    taken: list[int] = []

    def source() -> StatusInputs:
        taken.append(len(taken) + 1)
        return inputs(generation=len(taken))

    server = MetricsServer(Metrics(), f"127.0.0.1:{free_port()}", status=source)
    await server.start()
    try:
        port = server.bound_port
        answers = await asyncio.gather(*(fetch(port, "GET", "/status.json") for _ in range(6)))
        assert {json.loads(body)["generation"] for _, _, body in answers} == {1}
        _, _, page = await fetch(port, "GET", "/")
        assert len(taken) == 1  # the page is rendered from the same reading
        assert b'data-generated="1000.0"' in page
        _, _, body = await fetch(port, "GET", "/status.json")
        assert json.loads(body)["generation"] == 1  # cached
        await asyncio.sleep(0.6)
        _, _, body = await fetch(port, "GET", "/status.json")
        assert json.loads(body)["generation"] == 2
        code, _, _ = await fetch(port, "POST", "/status.json")
        assert code == 405
    finally:
        await server.stop()
