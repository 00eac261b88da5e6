"""The read-only status page at ``/`` of the HTTP listener: HTML from :func:`director.status.
build_status`'s dict (pure; the listener runs it in a worker thread).

The page is complete without JavaScript (the server-rendered snapshot, reloaded every
``REFRESH_NOSCRIPT`` seconds by a ``<noscript>`` meta refresh). With JavaScript, a small inline
script fetches ``/status.json`` every ``REFRESH`` seconds and redraws the same tables with DOM
calls (text is only ever set as text, never parsed as HTML). When the last good fetch is older
than ``STALE_PERIODS`` refreshes, or the data's ``generated_at`` stops advancing, or the daemon
itself says its data is old, a red banner says so and nothing on the page stays green.

Everything that comes from the config or from a server (names, errors) is escaped; the
Content-Security-Policy (:data:`CSP`) allows only this page's own script and style.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from html import escape
from typing import Any

from director.pause import Pause, no_pause
from director.status_page_js import script
from director.status_words import BANNER_LEVELS

REFRESH = 2.0  # seconds between fetches of /status.json
STALE_PERIODS = 3  # refreshes without fresh data: the page says the data is stale
REFRESH_NOSCRIPT = 5  # seconds: the meta refresh without JavaScript

# Keys of the status the page shows in its header or not at all; any other key is a section.
HEADER_KEYS = frozenset(
    {
        "config_path", "config_loaded_at", "reload_error", "last_sync", "sysctl_problems",
        "kernel_error", "checks", "director_faults", "generated_at", "generation",
        "stats_interval", "stale", "role", "stats_at", "drains", "probe_local_failures",
        "process",
    }
)  # fmt: skip
SECTION_ORDER = ("vrrp", "bgp", "services", "events", "config", "peer_check")
TITLES = {"peer_check": "Peer config", "bgp": "BGP"}  # a section's heading; by default its name

CSS = """
body{font:14px/1.35 system-ui,sans-serif;margin:0;padding:0 .6em 2em;color:#111;background:#fff}
h1{font-size:1.25em;margin:.5em 0}h2{font-size:1.1em;margin:1.1em 0 .3em}
h3{font-size:1em;margin:.8em 0 .2em;word-break:break-all}
.banner{background:#b00;color:#fff;padding:.6em;font-weight:bold;margin:0 -.6em}
.banner[hidden]{display:none}
.banner.warn{background:#e8a000;color:#000}
#peer-banner .banner,#bgp-banner .banner{margin-bottom:.2em}
.fault{background:#fdd;border-left:4px solid #b00;padding:.3em .5em;margin:.2em 0}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.2em .4em;border-bottom:1px solid #ddd;vertical-align:top}
td.num,th.num{text-align:right}
.up,.master{background:#cfc}.down,.fault-state{background:#fcc}.drain{background:#ffd}
.backup{background:#eef}
body.stale .up,body.stale .master,body.stale .backup{background:#ddd;color:#555}
body.stale main{opacity:.65}
.muted{color:#666}.err{word-break:break-word}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em .8em}
dd{margin:0;word-break:break-all}
@media (max-width:640px){
 thead{display:none}table,tbody,tr,td{display:block;width:auto}
 tr{border:1px solid #ccc;margin:.4em 0;padding:.2em}
 td{border:0;text-align:left!important;padding:.1em .3em}
 td::before{content:attr(data-label) ": ";color:#666}
}
"""

SERVER_COLUMNS = (
    "Real server", "Forward", "Weight (kernel / config)", "Agent", "ActConn", "InActConn",
    "Conn/s", "Health", "Last error", "Since", "Drain",
)  # fmt: skip
VRRP_COLUMNS = ("Instance", "Interface", "VRID", "State", "Priority", "Peer heard", "Dropped")
EVENT_COLUMNS = ("Time", "Kind", "Event")
PEER_COLUMNS = ("Peer", "State", "Since", "Status")
BGP_SESSION_COLUMNS = ("BGP peer", "State", "Reason")
BGP_ROUTE_COLUMNS = ("Prefix", "State", "Reason", "For")
# the class of a text at each level of director.status_words (None: no colour)
LEVEL_CLASS: dict[str, str | None] = {"ok": "up", "info": None, "warn": "drain", "alarm": "down"}

# The script mirrors the Python renderers below, word for word: keep them together.
SCRIPT = script(
    period=REFRESH,
    stale=STALE_PERIODS,
    columns={
        "vrrp": VRRP_COLUMNS,
        "server": SERVER_COLUMNS,
        "event": EVENT_COLUMNS,
        "peer": PEER_COLUMNS,
        "bgp_session": BGP_SESSION_COLUMNS,
        "bgp_route": BGP_ROUTE_COLUMNS,
    },
    order=SECTION_ORDER,
    titles=TITLES,
    levels=LEVEL_CLASS,
    banner_levels=BANNER_LEVELS,
    header=HEADER_KEYS,
)


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (
    f"default-src 'none'; script-src {_sha(SCRIPT)}; style-src {_sha(CSS)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def when(at: object) -> str:
    if not isinstance(at, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _clock(at: object) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at)) if isinstance(at, int | float) else "-"


def _t(value: object) -> str:
    return "-" if value is None else escape(str(value))


def _table(cols: tuple[str, ...], rows: list[tuple[str, list[tuple[object, str | None]]]]) -> str:
    out = ['<div class="wrap"><table><thead><tr>']
    out += [f"<th>{escape(c)}</th>" for c in cols]
    out.append("</tr></thead><tbody>")
    labels = [escape(c, quote=True) for c in cols]
    for attrs, cells in rows:
        out.append(f"<tr{attrs}>")
        for n, (value, cls) in enumerate(cells):
            klass = f' class="{escape(cls, quote=True)}"' if cls else ""
            out.append(f'<td{klass} data-label="{labels[n]}">{_t(value)}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _health(h: dict[str, Any] | None) -> tuple[str, str | None]:
    if h is None:
        return "no check", None
    text = ("up" if h.get("up") else "DOWN") + f" {h.get('type')}"
    if h.get("latency_ms") is not None:
        text += f" {h['latency_ms']} ms"
    return text, "up" if h.get("up") else "down"


def _weight(rs: dict[str, Any]) -> str:
    if not rs.get("in_kernel"):
        kernel = "out"
    else:
        kernel = "-" if rs.get("weight") is None else str(rs["weight"])
    return f"{kernel} / {rs.get('config_weight')}"


def _agent(agent: Any) -> tuple[str, str | None]:
    if not isinstance(agent, dict):
        return "", None
    return str(agent.get("text") or ""), LEVEL_CLASS.get(str(agent.get("level")))


def _dropped(d: object) -> str:
    if not isinstance(d, dict) or not d:
        return "-"
    return ", ".join(f"{k} {d[k]}" for k in sorted(d))


def _vrrp(v: Any, pause: Pause) -> str:
    if not v:
        return "<p>no instances (this director is master on its own)</p>"
    rows: list[tuple[str, list[tuple[object, str | None]]]] = []
    for i in v:
        st = str(i.get("state") or "-")
        peers = i.get("peers")
        peer = i.get("peer") or (f"(none; peers {', '.join(peers)})" if peers else "-")
        cells: list[tuple[object, str | None]] = [
            (i.get("name"), None), (i.get("interface"), None), (i.get("vrid"), None),
            (st.upper(), "fault-state" if st == "fault" else st), (i.get("priority"), None),
            (peer, None), (_dropped(i.get("adverts_dropped")), None),
        ]  # fmt: skip
        rows.append(("", cells))
    return _table(VRRP_COLUMNS, rows)


def _services(svcs: Any, pause: Pause) -> str:
    out = ["<div>"]
    for s in svcs or []:
        pause()
        extra = f" persistent {s['persistence_timeout']}" if s.get("persistence_timeout") else ""
        missing = "" if s.get("in_kernel") else "   (not in the kernel table)"
        title = f"{s['key']} {s['scheduler']}{extra}  [{s['name']}]{missing}"
        out.append(f"<h3>{_t(title)}</h3>")
        rows: list[tuple[str, list[tuple[object, str | None]]]] = []
        for rs in s.get("servers") or []:
            h = rs.get("health") or {}
            rate = rs.get("rate")
            name = f" ({rs['name']})" if rs.get("name") else ""
            cells: list[tuple[object, str | None]] = [
                (f"{rs['address']}{name}", None), (rs.get("forwarding"), None),
                (_weight(rs), "num"), _agent(rs.get("agent")),
                (rs.get("active"), "num"), (rs.get("inactive"), "num"),
                ("-" if rate is None else rate.get("cps"), "num"), _health(rs.get("health")),
                (h.get("last_error") or "", "err"),
                ("-" if h.get("since") is None else when(h.get("since")), None),
                (rs.get("maintenance") or "", "drain" if rs.get("maintenance") else None),
            ]  # fmt: skip
            rows.append((f' data-server="{escape(str(rs["address"]), quote=True)}"', cells))
        out.append(_table(SERVER_COLUMNS, rows))
    out.append("</div>")
    return "".join(out)


def _events(evs: Any, pause: Pause) -> str:
    if not evs:
        return "<p>none yet</p>"
    rows: list[tuple[str, list[tuple[object, str | None]]]] = [
        ("", [(_clock(e.get("at")), None), (e.get("kind"), None), (e.get("text"), None)])
        for e in evs
    ]
    return _table(EVENT_COLUMNS, rows)


def _generic(v: Any, pause: Pause) -> str:
    if not isinstance(v, dict):
        return f"<p>{escape(json.dumps(v, default=str))}</p>"
    out = ["<dl>"]
    for k in sorted(v):
        x = v[k]
        structured = isinstance(x, dict | list | bool)  # the script's JSON.stringify / String(x)
        text = escape(json.dumps(x, default=str)) if structured else _t(x)
        out.append(f"<dt>{escape(str(k))}</dt><dd>{text}</dd>")
    out.append("</dl>")
    return "".join(out)


def _config(v: Any, pause: Pause) -> str:
    if not isinstance(v, dict):
        return _generic(v, pause)
    rows = (
        ("file", _t(v.get("path"))),
        ("loaded", escape(when(v.get("loaded_at")))),
        ("sha256", _t(v.get("sha256"))),
    )
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{x}</dd>" for k, x in rows) + "</dl>"


def _peer_check(v: Any, pause: Pause) -> str:
    if not isinstance(v, dict):
        return _generic(v, pause)
    head = f"<dl><dt>this config</dt><dd>{_t(v.get('head'))}</dd>"
    head += f"<dt>listening</dt><dd>{_t(v.get('listen_address') or 'no')}</dd></dl>"
    peers = v.get("peers") or []
    if not peers:
        return head + "<p>no peers configured</p>"
    lines = {str(x.get("peer")): x for x in v.get("lines") or []}
    rows: list[tuple[str, list[tuple[object, str | None]]]] = []
    for p in peers:
        line = lines.get(str(p.get("peer"))) or {}
        cells: list[tuple[object, str | None]] = [
            (p.get("peer"), None), (p.get("state"), None), (when(p.get("since")), None),
            (line.get("text"), LEVEL_CLASS.get(str(line.get("level")))),
        ]  # fmt: skip
        rows.append((f' data-peer="{escape(str(p.get("peer")), quote=True)}"', cells))
    return head + _table(PEER_COLUMNS, rows)


def _level(line: Any) -> str | None:
    return LEVEL_CLASS.get(str(line.get("level"))) if isinstance(line, dict) else None


def _bgp(v: Any, pause: Pause) -> str:
    """The speaker's line, problems, the sessions and the routes, in :func:`director.
    status_words.bgp_words`'s words (``bgp.words``) coloured by their levels."""
    w = v.get("words") if isinstance(v, dict) else None
    if not isinstance(w, dict):
        return _generic(v, pause)
    head = w.get("head") or {}
    klass = _level(head)
    attr = f' class="{klass}"' if klass else ""
    out = [f'<p id="bgp-head"{attr}>{_t(head.get("text"))}</p>']
    for p in w.get("problems") or []:
        out.append(f'<div class="fault">{_t(p.get("text"))}</div>')
    sessions: list[tuple[str, list[tuple[object, str | None]]]] = [
        (
            f' data-bgp-peer="{escape(str(x.get("peer")), quote=True)}"',
            [(x.get("peer"), None), (x.get("state"), _level(x)), (x.get("reason"), "err")],
        )
        for x in w.get("sessions") or []
    ]
    if sessions:
        out.append(_table(BGP_SESSION_COLUMNS, sessions))
    routes: list[tuple[str, list[tuple[object, str | None]]]] = [
        (
            f' data-prefix="{escape(str(x.get("prefix")), quote=True)}"',
            [
                (x.get("prefix"), None),
                (x.get("state"), _level(x)),
                (x.get("reason"), "err"),
                (x.get("for"), None),
            ],
        )
        for x in w.get("routes") or []
    ]
    out.append(_table(BGP_ROUTE_COLUMNS, routes) if routes else "<p>no routes configured</p>")
    return "".join(out)


def _bgp_banner(st: dict[str, Any]) -> str:
    """A banner when the director is drained or a BGP session is not established (amber)."""
    bgp = st.get("bgp")
    w = bgp.get("words") if isinstance(bgp, dict) else None
    shown = "".join(
        f'<div class="banner{"" if x.get("level") == "alarm" else " warn"}">'
        f"BGP: {_t(x.get('text'))}</div>"
        for x in (w.get("banners") if isinstance(w, dict) else None) or []
    )
    return f'<div id="bgp-banner">{shown}</div>'


def _peer_banner(st: dict[str, Any]) -> str:
    """A banner per peer whose config differs (red) or that cannot be checked (amber)."""
    pc = st.get("peer_check")
    lines = pc.get("lines") if isinstance(pc, dict) else None
    shown = "".join(
        f'<div class="banner{"" if x.get("level") == "alarm" else " warn"}">'
        f"PEER: {_t(x.get('text'))}</div>"
        for x in lines or []
        if x.get("level") in BANNER_LEVELS
    )
    return f'<div id="peer-banner">{shown}</div>'


SECTIONS: dict[str, Callable[[Any, Pause], str]] = {
    "peer_check": _peer_check,
    "bgp": _bgp,
    "config": _config,
    "vrrp": _vrrp,
    "services": _services,
    "events": _events,
}


def _faults(st: dict[str, Any]) -> str:
    lines = [f"FAULT: {f}" for f in st.get("director_faults") or []]
    if st.get("reload_error"):
        lines.append(f"reload FAILED, running the previous config: {st['reload_error']}")
    if st.get("kernel_error"):
        lines.append(f"kernel: {st['kernel_error']}")
    lines += [f"sysctl: {p}" for p in st.get("sysctl_problems") or []]
    shown = "".join(f'<div class="fault">{_t(x)}</div>' for x in lines)
    return f'<div id="faults">{shown}</div>'


def render_page(st: dict[str, Any], pause: Pause = no_pause) -> bytes:
    """The whole page for the status ``st`` (escaped; pure). ``pause`` is called after each
    service (see :func:`director.status.build_status`)."""
    role = str(st.get("role") or "-")
    stale = [str(x) for x in st.get("stale") or []]
    names = [n for n in SECTION_ORDER if n in st]
    names += sorted(k for k in st if k not in HEADER_KEYS and k not in SECTION_ORDER)
    sections = "".join(
        f'<section id="section-{escape(n, quote=True)}"><h2>{escape(TITLES.get(n, n))}</h2>'
        f"{SECTIONS.get(n, _generic)(st[n], pause)}</section>"
        for n in names
    )
    banner = (
        f'<div id="stale" class="banner">STALE DATA: {escape("; ".join(stale))}. '
        "What follows is the last data seen.</div>"
        if stale
        else '<div id="stale" class="banner" hidden></div>'
    )
    generated = st.get("generated_at")
    body_class = ' class="stale"' if stale else ""
    generated_attr = escape(str(generated), quote=True) if generated is not None else ""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>director {escape(role.upper())}</title>"
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_NOSCRIPT}"></noscript>'
        f"<style>{CSS}</style></head>"
        f'<body{body_class} data-generated="{generated_attr}">'
        f"{banner}"
        f'<main id="main">{_bgp_banner(st)}{_peer_banner(st)}'
        f'<h1>director: <span id="role" class="{escape(role, quote=True)}">'
        f"{escape(role.upper())}</span></h1>"
        f'<p class="muted">config {_t(st.get("config_path"))} \u00b7 data of {when(generated)}'
        f" \u00b7 counters read {when(st.get('stats_at'))}</p>"
        f"{_faults(st)}{sections}</main>"
        f"<script>{SCRIPT}</script></body></html>"
    )
    return page.encode()
