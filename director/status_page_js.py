# ruff: noqa: E501
"""The status page's inline script (see :mod:`director.status_page`): polls ``/status.json``,
redraws with DOM calls (text is set as text, never parsed as HTML), flags stale data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping


def script(
    *,
    period: float,
    stale: int,
    columns: Mapping[str, Iterable[str]],
    order: Iterable[str],
    header: Iterable[str],
    titles: Mapping[str, str],
    levels: Mapping[str, str | None],
    banner_levels: Iterable[str],
) -> str:
    values = {
        "period": str(int(period)),
        "stale": str(stale),
        "vrrp_cols": json.dumps(list(columns["vrrp"])),
        "server_cols": json.dumps(list(columns["server"])),
        "event_cols": json.dumps(list(columns["event"])),
        "peer_cols": json.dumps(list(columns["peer"])),
        "bgp_session_cols": json.dumps(list(columns["bgp_session"])),
        "bgp_route_cols": json.dumps(list(columns["bgp_route"])),
        "titles": json.dumps(dict(titles), sort_keys=True),
        "levels": json.dumps(dict(levels), sort_keys=True),
        "banner_levels": json.dumps(list(banner_levels)),
        "order": json.dumps(list(order)),
        "header": json.dumps(sorted(header)),
    }
    text = TEMPLATE
    for name, value in values.items():
        text = text.replace(f"%({name})", value)
    return text


TEMPLATE = """
"use strict";
(function () {
const PERIOD = %(period), STALE = %(stale);
const TITLES = %(titles), LEVELS = %(levels), BANNER_LEVELS = %(banner_levels);
let lastOk = Date.now(), lastGen = null, lastAt = null, serverStale = [];
function t(x) { return document.createTextNode(x == null ? "-" : String(x)); }
function el(tag, attrs) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) { if (attrs[k] != null) e.setAttribute(k, attrs[k]); }
  for (let i = 2; i < arguments.length; i++) {
    const c = arguments[i];
    if (c == null) continue;
    e.appendChild(typeof c === "object" ? c : t(c));
  }
  return e;
}
function when(at) {
  return at == null ? "-" : new Date(at * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC";
}
function clock(at) { return new Date(at * 1000).toISOString().slice(11, 19); }
function table(cols, rows) {
  const head = el("tr", {});
  cols.forEach(function (c) { head.appendChild(el("th", {}, c)); });
  const body = el("tbody", {});
  rows.forEach(function (r) {
    const tr = el("tr", r.attrs || {});
    r.cells.forEach(function (c, i) {
      tr.appendChild(el("td", {"class": c[1] || null, "data-label": cols[i]}, c[0]));
    });
    body.appendChild(tr);
  });
  return el("div", {"class": "wrap"}, el("table", {}, el("thead", {}, head), body));
}
function health(h) {
  if (h == null) return ["no check", null];
  let s = (h.up ? "up" : "DOWN") + " " + h.type;
  if (h.latency_ms != null) s += " " + h.latency_ms + " ms";
  return [s, h.up ? "up" : "down"];
}
function weight(rs) {
  return (rs.in_kernel ? (rs.weight == null ? "-" : rs.weight) : "out") + " / " + rs.config_weight;
}
function agent(a) {
  if (a == null || typeof a !== "object") return ["", null];
  return [a.text || "", LEVELS[a.level] || null];
}
function peerBanner(st) {
  const out = el("div", {"id": "peer-banner"}), pc = st.peer_check;
  ((pc && pc.lines) || []).forEach(function (x) {
    if (BANNER_LEVELS.indexOf(x.level) < 0) return;
    out.appendChild(el("div", {"class": x.level === "alarm" ? "banner" : "banner warn"}, "PEER: " + x.text));
  });
  return out;
}
function bgpBanner(st) {
  const out = el("div", {"id": "bgp-banner"}), w = st.bgp && st.bgp.words;
  ((w && w.banners) || []).forEach(function (x) {
    out.appendChild(el("div", {"class": x.level === "alarm" ? "banner" : "banner warn"}, "BGP: " + x.text));
  });
  return out;
}
function rate(r) { return r == null ? "-" : String(r.cps); }
function dropped(d) {
  const k = Object.keys(d || {}).sort();
  return k.length ? k.map(function (x) { return x + " " + d[x]; }).join(", ") : "-";
}
function faults(st) {
  const out = el("div", {"id": "faults"});
  (st.director_faults || []).forEach(function (f) { out.appendChild(el("div", {"class": "fault"}, "FAULT: " + f)); });
  if (st.reload_error) out.appendChild(el("div", {"class": "fault"}, "reload FAILED, running the previous config: " + st.reload_error));
  if (st.kernel_error) out.appendChild(el("div", {"class": "fault"}, "kernel: " + st.kernel_error));
  (st.sysctl_problems || []).forEach(function (p) { out.appendChild(el("div", {"class": "fault"}, "sysctl: " + p)); });
  return out;
}
const SECTIONS = {
  vrrp: function (v) {
    if (!v || !v.length) return el("p", {}, "no instances (this director is master on its own)");
    return table(%(vrrp_cols), v.map(function (i) {
      const st = String(i.state || "-");
      const peer = i.peer || (i.peers ? "(none; peers " + i.peers.join(", ") + ")" : "-");
      return {cells: [[i.name], [i.interface], [i.vrid], [st.toUpperCase(), st === "fault" ? "fault-state" : st],
        [i.priority], [peer], [dropped(i.adverts_dropped)]]};
    }));
  },
  services: function (svcs) {
    const out = el("div", {});
    (svcs || []).forEach(function (s) {
      const extra = s.persistence_timeout ? " persistent " + s.persistence_timeout : "";
      out.appendChild(el("h3", {}, s.key + " " + s.scheduler + extra + "  [" + s.name + "]" +
        (s.in_kernel ? "" : "   (not in the kernel table)")));
      out.appendChild(table(%(server_cols), (s.servers || []).map(function (rs) {
        const h = health(rs.health), hc = rs.health || {};
        return {attrs: {"data-server": rs.address}, cells: [
          [rs.address + (rs.name ? " (" + rs.name + ")" : "")], [rs.forwarding], [weight(rs), "num"],
          agent(rs.agent), [rs.active, "num"], [rs.inactive, "num"], [rate(rs.rate), "num"], h,
          [hc.last_error || "", "err"], [hc.since == null ? "-" : when(hc.since)],
          [rs.maintenance || "", rs.maintenance ? "drain" : null]]};
      })));
    });
    return out;
  },
  config: function (v) {
    if (v == null || typeof v !== "object") return generic(v);
    return el("dl", {}, el("dt", {}, "file"), el("dd", {}, v.path), el("dt", {}, "loaded"),
      el("dd", {}, when(v.loaded_at)), el("dt", {}, "sha256"), el("dd", {}, v.sha256));
  },
  peer_check: function (v) {
    if (v == null || typeof v !== "object") return generic(v);
    const out = el("div", {}, el("dl", {}, el("dt", {}, "this config"), el("dd", {}, v.head),
      el("dt", {}, "listening"), el("dd", {}, v.listen_address || "no")));
    const peers = v.peers || [];
    if (!peers.length) { out.appendChild(el("p", {}, "no peers configured")); return out; }
    const lines = {};
    (v.lines || []).forEach(function (x) { lines[String(x.peer)] = x; });
    out.appendChild(table(%(peer_cols), peers.map(function (p) {
      const line = lines[String(p.peer)] || {};
      return {attrs: {"data-peer": String(p.peer)}, cells: [[p.peer], [p.state], [when(p.since)],
        [line.text, LEVELS[line.level] || null]]};
    })));
    return out;
  },
  bgp: function (v) {
    const w = v && v.words;
    if (w == null || typeof w !== "object") return generic(v);
    const head = w.head || {};
    const out = el("div", {}, el("p", {"id": "bgp-head", "class": LEVELS[head.level] || null}, head.text));
    (w.problems || []).forEach(function (p) { out.appendChild(el("div", {"class": "fault"}, p.text)); });
    const sessions = w.sessions || [], routes = w.routes || [];
    if (sessions.length) {
      out.appendChild(table(%(bgp_session_cols), sessions.map(function (x) {
        return {attrs: {"data-bgp-peer": String(x.peer)}, cells: [[x.peer], [x.state, LEVELS[x.level] || null], [x.reason, "err"]]};
      })));
    }
    out.appendChild(routes.length ? table(%(bgp_route_cols), routes.map(function (x) {
      return {attrs: {"data-prefix": String(x.prefix)}, cells: [[x.prefix], [x.state, LEVELS[x.level] || null],
        [x.reason, "err"], [x["for"]]]};
    })) : el("p", {}, "no routes configured"));
    return out;
  },
  events: function (evs) {
    if (!evs || !evs.length) return el("p", {}, "none yet");
    return table(%(event_cols), evs.map(function (e) {
      return {cells: [[clock(e.at)], [e.kind], [e.text]]};
    }));
  },
};
function generic(v) {
  if (v == null || typeof v !== "object" || Array.isArray(v)) return el("p", {}, JSON.stringify(v));
  const dl = el("dl", {});
  Object.keys(v).sort().forEach(function (k) {
    const x = v[k];
    dl.appendChild(el("dt", {}, k));
    dl.appendChild(el("dd", {}, x != null && typeof x === "object" ? JSON.stringify(x) : (x == null ? "-" : String(x))));
  });
  return dl;
}
function render(st) {
  const main = el("main", {"id": "main"});
  const role = String(st.role || "-");
  main.appendChild(bgpBanner(st));
  main.appendChild(peerBanner(st));
  main.appendChild(el("h1", {}, "director: ", el("span", {"id": "role", "class": role}, role.toUpperCase())));
  main.appendChild(el("p", {"class": "muted"}, "config " + st.config_path + " \\u00b7 data of " + when(st.generated_at) +
    " \\u00b7 counters read " + when(st.stats_at)));
  main.appendChild(faults(st));
  const names = %(order).slice();
  Object.keys(st).sort().forEach(function (k) { if (names.indexOf(k) < 0 && HEADER.indexOf(k) < 0) names.push(k); });
  names.forEach(function (name) {
    if (!(name in st)) return;
    const view = SECTIONS[name] || generic;
    main.appendChild(el("section", {"id": "section-" + name}, el("h2", {}, Object.prototype.hasOwnProperty.call(TITLES, name) ? TITLES[name] : name), view(st[name])));
  });
  const old = document.getElementById("main");
  old.parentNode.replaceChild(main, old);
}
const HEADER = %(header);
function flag() {
  const age = (Date.now() - lastOk) / 1000, banner = document.getElementById("stale");
  let why = serverStale.slice();
  if (age > STALE * PERIOD) why.unshift("no fresh data from the daemon for " + Math.round(age) + " s (is directord running?)");
  document.body.classList.toggle("stale", why.length > 0);
  banner.hidden = why.length === 0;
  banner.textContent = why.length ? "STALE DATA: " + why.join("; ") + ". What follows is the last data seen." : "";
}
function poll() {
  fetch("status.json", {cache: "no-store"}).then(function (r) {
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }).then(function (st) {
    const moved = lastAt == null || st.generated_at > lastAt || st.generation !== lastGen;
    lastGen = st.generation; lastAt = st.generated_at;
    serverStale = (st.stale || []).slice();
    if (moved) { lastOk = Date.now(); render(st); }
  }).catch(function () {}).then(flag);
}
const first = document.body.getAttribute("data-generated");
if (first) { lastAt = Number(first); }
setInterval(poll, PERIOD * 1000);
poll();
})();
"""
