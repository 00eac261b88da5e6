"""The words of the status that both ``directorctl status`` and the page show, decided once.

Pure: time comes in as ``now`` (wall clock, like the status's ``*_at`` and ``since`` fields).
:func:`director.status.build_status` puts these words into the status itself (``agent.text``,
``peer_check.head`` and ``peer_check.lines``), so the page's two renderers (the server's HTML
and the script that redraws it from ``/status.json``) show them as they are; ``directorctl
status`` calls the same functions. Each text comes with a *level*, one of :data:`LEVELS`, that
the renderers turn into a colour (and the peer check's ``warn``/``alarm`` into a banner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LEVELS = ("ok", "info", "warn", "alarm")
BANNER_LEVELS = ("warn", "alarm")  # a peer line at these levels is a banner


def short(digest: object) -> str:
    """A digest as people compare it: the first 12 hex digits."""
    return str(digest)[:12] if digest else "-"


def ago(seconds: float) -> str:
    if seconds < 120:
        return f"{max(0, seconds):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _num(value: object) -> str:
    return "-" if value is None else str(value)


# -- feedback agents -------------------------------------------------------------------------


def agent_words(agent: Mapping[str, object], config_weight: object, now: float) -> str:
    """One real server's feedback agent: its last word and the weight it gives out of the
    configured one, what it said, whether its last value is kept (and since when), errors."""
    state = agent.get("state")
    weight = f"weight {_num(agent.get('weight'))} of {_num(config_weight)}"
    if state == "none":
        text = f"no answer yet  {weight}"
    else:
        text = f"{state} {_num(agent.get('percent'))}%  {weight}"
    if agent.get("maxconn") is not None:
        text += f"  maxconn {agent['maxconn']}"
    if agent.get("last_line") is not None:
        text += f"  said {agent['last_line']!r}"
    since = agent.get("keeping_since")
    if isinstance(since, int | float):
        text += (
            f"  keeping the last value: no answer for {max(0.0, now - since):.0f} s"
            f" ({agent.get('last_error')})"
        )
    if agent.get("held"):
        text += f"  ({agent['held']})"
    errors = agent.get("errors")
    if isinstance(errors, Mapping) and errors:
        text += "  errors: " + ", ".join(f"{k} {errors[k]}" for k in sorted(errors))
    return text


def agent_level(agent: Mapping[str, object]) -> str:
    """ok: ready and answering; warn: drained, in maintenance, or silent (its last value
    kept); alarm: it says down; info: no answer yet."""
    state = agent.get("state")
    if state == "down":
        return "alarm"
    if state in ("drain", "maint") or agent.get("keeping_since") is not None:
        return "warn"
    return "info" if state == "none" else "ok"


# -- peer config check -----------------------------------------------------------------------


def peer_head(peer_check: Mapping[str, object]) -> str | None:
    """This director's shared config: its generation and short digest (None: not computed)."""
    if not peer_check.get("generation"):
        return None
    return f"generation {peer_check['generation']}, digest {short(peer_check.get('digest'))}"


def peer_line(view: Mapping[str, object], now: float) -> tuple[str, str]:
    """(level, text) for one peer: ``alarm`` when the shared config differs, ``warn`` when the
    peer cannot be checked (unreachable, unauthenticated), ``ok`` the same, ``info`` not yet."""
    peer, state, since = view.get("peer"), view.get("state"), view.get("since")
    for_ = f" for {ago(now - since)}" if isinstance(since, int | float) else ""
    if state == "match":
        return "ok", f"{peer} same config (generation {view.get('generation')})"
    if state == "mismatch":
        found = view.get("differs")
        differs = [str(d) for d in found] if isinstance(found, list) else []
        what = ": " + ", ".join(differs[:5]) + (" ..." if len(differs) > 5 else "")
        return "alarm", (
            f"CONFIG DIFFERS from {peer}{for_}{what if differs else ''}; "
            f"run directorctl diff-peer {peer}"
        )
    if state == "unknown":
        return "info", f"{peer} not asked yet"
    return "warn", f"{peer} {str(state).upper()}{for_}: {view.get('detail')}"


def peer_lines(peer_check: Mapping[str, object], now: float) -> list[dict[str, object]]:
    """Each peer's line: {peer, level, text}."""
    out: list[dict[str, object]] = []
    peers = peer_check.get("peers")
    for view in peers if isinstance(peers, list) else []:
        level, text = peer_line(view, now)
        out.append({"peer": view.get("peer"), "level": level, "text": text})
    return out


# -- BGP route health injection --------------------------------------------------------------

# a withdrawn route's reason (director.bgp.decision.decide) -> its level; any other: warn
ROUTE_ALARMS = ("quorum lost", "below quorum_up")  # the services behind it are not healthy


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Mapping[str, object]]:
    return [x for x in value if isinstance(x, Mapping)] if isinstance(value, list) else []


def bgp_head(bgp: Mapping[str, object]) -> tuple[str, str]:
    """(level, text) for the speaker: its backend, ExaBGP's pid and restarts (the kernel
    backend's table), DRAINED with the time established flows have left. ``warn`` drained,
    ``info`` no speaker running, else ``ok``."""
    speaker, drain = _mapping(bgp.get("speaker")), _mapping(bgp.get("drain"))
    text = str(bgp.get("backend"))
    if speaker.get("backend") == "exabgp":
        text += f"  pid {speaker.get('pid') or '-'}  restarts {speaker.get('restarts', 0)}"
    elif speaker.get("backend") == "kernel":
        text += f"  table {_num(speaker.get('table'))}"
    elif not speaker:
        text += "  (speaker not running)"
    if drain.get("drained"):
        return "warn", text + f"  DRAINED ({_num(drain.get('seconds_left'))} s of flows left)"
    return ("ok" if speaker else "info"), text


def bgp_session(session: Mapping[str, object]) -> dict[str, object]:
    """One BGP session: {peer, state, reason, level, text}; ``ok`` established (ExaBGP's
    ``up``), else ``warn``."""
    peer, state = session.get("peer"), str(session.get("state")).upper()
    reason = str(session.get("reason") or "")
    text = f"peer {peer}  {state}" + (f"  {reason}" if reason else "")
    level = "ok" if session.get("state") == "up" else "warn"
    return {"peer": peer, "state": state, "reason": reason, "level": level, "text": text}


def bgp_route(route: Mapping[str, object]) -> dict[str, object]:
    """One announcement: {prefix, state, reason, for, level, text}; ``ok`` announced, ``alarm``
    withdrawn because its services lack healthy servers, ``warn`` withdrawn otherwise (drained,
    stopping)."""
    reason = str(route.get("reason") or "")
    seconds = route.get("for_seconds")
    for_ = ago(seconds) if isinstance(seconds, int | float) else "-"
    if route.get("announced"):
        state, level = "announced", "ok"
    else:
        state = "withdrawn"
        level = "alarm" if reason.startswith(ROUTE_ALARMS) else "warn"
    text = f"{route.get('prefix')!s:20} {state:9}  {reason}  (for {for_})"
    return {
        "prefix": route.get("prefix"), "state": state, "reason": reason, "for": for_,
        "level": level, "text": text,
    }  # fmt: skip


def bgp_banners(bgp: Mapping[str, object]) -> list[dict[str, object]]:
    """The banners at the top: each route withdrawn because its services lack healthy servers
    (alarm: the router sends none of its flows here), the director drained and each session
    not established (warn)."""
    out: list[dict[str, object]] = []
    for route in _list(bgp.get("routes")):
        words = bgp_route(route)
        if words["level"] == "alarm":
            out.append(
                {
                    "level": "alarm",
                    "text": f"route {words['prefix']} WITHDRAWN: {words['reason']} "
                    f"(for {words['for']}); see the services below",
                }
            )
    drain = _mapping(bgp.get("drain"))
    if drain.get("drained"):
        out.append(
            {
                "level": "warn",
                "text": "this director is DRAINED: its routes are withdrawn, "
                f"{_num(drain.get('seconds_left'))} s of flows left; "
                "run directorctl enable-director to announce them again",
            }
        )
    for session in _list(_mapping(bgp.get("speaker")).get("sessions")):
        words = bgp_session(session)
        if words["level"] != "ok":
            out.append({"level": "warn", "text": f"session with {words['text']}"})
    return out


def bgp_words(bgp: Mapping[str, object]) -> dict[str, Any]:
    """Every word of the ``bgp`` status section (:meth:`director.bgp.service.BgpService.
    summary`): the speaker's line, each session and route, problems, banners."""
    level, text = bgp_head(bgp)
    speaker = _mapping(bgp.get("speaker"))
    problems = [str(bgp["problem"])] if bgp.get("problem") else []
    vip_errors = bgp.get("vip_errors")
    problems += [f"VIP: {e}" for e in vip_errors] if isinstance(vip_errors, list) else []
    return {
        "head": {"level": level, "text": text},
        "sessions": [bgp_session(s) for s in _list(speaker.get("sessions"))],
        "routes": [bgp_route(r) for r in _list(bgp.get("routes"))],
        "problems": [{"level": "warn", "text": p} for p in problems],
        "banners": bgp_banners(bgp),
    }
