"""The canonical form of the config two directors of a pair must share, and its digest (pure).

Both directors of a pair must agree on what they serve: the virtual services, their real servers
and checks, the VRRP routers' identity and addresses, the network rules. They must not agree on
what is theirs alone: priorities, interfaces, their own and their peers' addresses, paths, logs,
hooks. :data:`TABLES` classifies every key of the file, table by table (a unit test fails when a
key is added to the model and not classified here); :func:`canonical_form` builds, from the
validated model, a JSON document of the shared keys only, and :func:`digest` hashes it.

The form does not depend on how the file is written: it is built from the validated model, so
comments, formatting, key order and defaults spelled out or left implicit make no difference;
services, real servers, addresses and other sets are keyed or sorted, so their order in the file
makes no difference either (``[[snat]]`` and ``[[masquerade]]`` keep theirs: nftables applies the
first rule that matches). What the kernel sees is compared, not how it was said: a real server's
forwarding method is the one in force (its own or its service's), its check is the resolved one
(the service's check merged with the server's own, every default filled in), a persistence
netmask is its prefix length.

Secrets (a VRRP password, an HTTP check's password) never appear in clear: each is replaced by
an HMAC-SHA256 of its value under a key derived from the peers' shared key, so a different
password is still a difference while its value stays on the node. Without a shared key (no
``[peer_check]``) a secret shows only as ``"set"``.

Top-level entries are keyed in config terms (``virtual_service TCP 198.18.0.10:443``,
``vrrp_instance VI_1``), and so are real servers within a service (``real_server
198.18.1.12:443``): :mod:`director.peer.diff` prints paths of these keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass

from director.config.agent import ResolvedAgent
from director.config.bgp import BgpSettings
from director.config.checks import ResolvedCheck
from director.config.model import Config, RealServer, SorryServer, VirtualServer
from director.config.vrrp import VirtualAddress
from director.ipvs.model import Forwarding

FORMAT = 1  # the canonical form's own version: a director with another format differs in it
SECRET_PREFIX = "hmac-sha256:"
SECRET_CONTEXT = b"director-peer-v1 secrets"

Form = dict[str, object]


@dataclass(frozen=True)
class Table:
    """One table of the config file: which of its keys are shared, which host-local, and why."""

    path: str  # as written in the file
    shared: tuple[str, ...]
    local: tuple[str, ...]
    why_local: str = ""
    secret: tuple[str, ...] = ()  # shared keys compared as keyed hashes


_NOTIFY = ("notify_master", "notify_backup", "notify_fault", "notify")
_CHECK_KEYS = tuple(ResolvedCheck.model_fields)

TABLES: tuple[Table, ...] = (
    Table(
        "daemon",
        shared=(),
        local=(
            "log_format",
            "log_level",
            "resync_interval",
            "state_dir",
            "control_socket",
            "keep_table_on_stop",
            "max_concurrent_probes",
            "metrics_address",
            "stats_interval",
            "script_user",
        ),
        why_local="how this process runs: paths, logs, its own listeners, tuning, whom hooks "
        "run as (user ids differ between machines)",
    ),
    Table(
        "kernel",
        shared=(
            "ip_forward",
            "ipv6_forwarding",
            "conntrack",
            "expire_nodest_conn",
            "expire_quiescent_template",
            "tcp_timeout",
            "tcpfin_timeout",
            "udp_timeout",
        ),
        local=("sysctls",),
        why_local="free-form sysctls often name this machine's interfaces or hardware tuning",
    ),
    Table(
        "virtual_server",
        shared=(
            "name",
            "protocol",
            "address",
            "port",
            "fwmark",
            "family",
            "scheduler",
            "scheduler_flags",
            "persistence_timeout",
            "persistence_netmask",
            "one_packet",
            "forwarding",
            "tunnel_type",
            "tunnel_port",
            "tunnel_checksum",
            "on_failure",
            "sorry_server",
            "check",
            "agent",
            "real_server",
        ),
        local=(),
    ),
    Table(
        "virtual_server.real_server",
        shared=(
            "name",
            "address",
            "port",
            "forwarding",
            "tunnel_type",
            "tunnel_port",
            "tunnel_checksum",
            "weight",
            "upper_threshold",
            "lower_threshold",
            "check",
            "agent",
        ),
        local=(),
    ),
    Table(
        "virtual_server.sorry_server",
        shared=(
            "address",
            "port",
            "forwarding",
            "tunnel_type",
            "tunnel_port",
            "tunnel_checksum",
            "weight",
        ),
        local=(),
    ),
    Table("check", shared=_CHECK_KEYS, local=(), secret=("password",)),
    # The feedback agent a real server gets (the service's table merged with its own): both
    # directors must ask the same agents the same way, or their weights differ.
    Table("agent", shared=tuple(ResolvedAgent.model_fields), local=()),
    Table(
        "vrrp_instance",
        shared=(
            "name",
            "vrid",
            "version",
            "advert_interval",
            "password",
            "virtual_addresses",
            "excluded_addresses",
        ),
        local=(
            "interface",
            "priority",
            "preempt",
            "preempt_delay",
            "primary_address",
            "unicast_peers",
            "accept_only_peers",
            "garp_count",
            "garp_interval",
            "garp_repeat_after",
            "garp_refresh",
            "track_interfaces",
            "track_checks",
            *_NOTIFY,
        ),
        why_local="each director's own interface, priority and election policy, its own and "
        "its peers' addresses, what it tracks (weights are relative to its priority), its "
        "announcements and hooks",
        secret=("password",),
    ),
    Table(
        "vrrp_instance.virtual_addresses",
        shared=("address",),
        local=("device", "label"),
        why_local="interface names are the machine's own",
    ),
    Table(
        "vrrp_sync_group",
        shared=("name", "instances"),
        local=_NOTIFY,
        why_local="hooks are the machine's own",
    ),
    Table(
        "sync_daemon",
        shared=("sync_id", "instance", "mode"),
        local=("interface",),
        why_local="the interface is the machine's own",
    ),
    Table(
        "network",
        shared=("rp_filter",),
        local=("table",),
        why_local="the nftables table's name is the machine's own",
    ),
    Table("fwmark", shared=("mark", "address", "protocol", "ports", "master_only"), local=()),
    Table(
        "snat",
        shared=("source", "to", "master_only"),
        local=("out_interface",),
        why_local="interface names are the machine's own",
    ),
    Table(
        "masquerade",
        shared=("source", "master_only"),
        local=("out_interface",),
        why_local="interface names are the machine's own",
    ),
    Table(
        "policy_route",
        shared=("fwmark", "family"),
        local=("table", "priority"),
        why_local="routing table numbers and rule priorities are the machine's own routing setup",
    ),
    Table(
        "bgp",
        shared=("backend", "local_as", "drain_timeout", "neighbor", "announce"),
        local=(
            "router_id",
            "next_hop",
            "next_hop_ipv6",
            "exabgp",
            "route_table",
            "route_protocol",
            "vip_device",
        ),
        why_local="each director's own router id, next hop and addresses; where its programs, "
        "routing table and devices are",
        secret=(),
    ),
    Table(
        "bgp.neighbor",
        shared=("address", "peer_as", "hold_time", "password"),
        local=("local_address",),
        why_local="the address each director speaks from is its own",
        secret=("password",),
    ),
    Table(
        "bgp.announce",
        shared=("prefix", "virtual_servers", "quorum", "quorum_up", "communities", "med"),
        local=(),
    ),
    Table(
        "peer_check",
        shared=(),
        local=("listen_address", "peers", "key_file", "interval", "timeout", "max_clock_skew"),
        why_local="each director names the other; the key itself is proven by the exchange",
    ),
)


class Secrets:
    """Replaces a secret by its keyed hash (``"set"`` without a key)."""

    def __init__(self, key: bytes | None) -> None:
        self._key = hmac.new(key, SECRET_CONTEXT, hashlib.sha256).digest() if key else None

    def hide(self, value: str | None) -> str | None:
        if value is None:
            return None
        if self._key is None:
            return "set"
        mac = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return SECRET_PREFIX + mac


def canonical_form(config: Config, key: bytes | None = None) -> Form:
    """The shared part of ``config`` as a JSON-ready document (see the module docstring);
    ``key``: the peers' shared key, which the secrets' hashes are keyed with."""
    secrets = Secrets(key)
    form: Form = {"canonical_format": FORMAT}
    kernel = config.kernel
    form["kernel"] = {name: getattr(kernel, name) for name in _table("kernel").shared}
    form["network"] = {"rp_filter": config.network.rp_filter}
    for vs in config.virtual_servers:
        form[f"virtual_service {vs.service_key()}"] = _service(vs, secrets)
    for vi in config.vrrp_instances:
        form[f"vrrp_instance {vi.name}"] = {
            "vrid": vi.vrid,
            "version": vi.version,
            "advert_interval": vi.advert_interval,
            "password": secrets.hide(vi.password),
            "virtual_addresses": _addresses(vi.virtual_addresses),
            "excluded_addresses": _addresses(vi.excluded_addresses),
        }
    for group in config.vrrp_sync_groups:
        form[f"vrrp_sync_group {group.name}"] = {"instances": sorted(group.instances)}
    if config.sync_daemon is not None:
        form["sync_daemon"] = {
            "sync_id": config.sync_daemon.sync_id,
            "instance": config.sync_daemon.instance,
            "mode": config.sync_daemon.mode,
        }
    fwmarks: list[tuple[str, Form]] = []
    for rule in config.fwmarks:
        ports = ",".join(str(p) for p in sorted(rule.ports)) if rule.ports else "all"
        label = f"fwmark {rule.mark} {rule.protocol} {rule.address} ports {ports}"
        fwmarks.append((label, {"master_only": rule.master_only}))
    for label, value in _unique(fwmarks):
        form[label] = value
    for i, snat in enumerate(config.snats):
        form[f"snat[{i}]"] = {
            "source": str(snat.source),
            "to": str(snat.to),
            "master_only": snat.master_only,
        }
    for i, masq in enumerate(config.masquerades):
        form[f"masquerade[{i}]"] = {"source": str(masq.source), "master_only": masq.master_only}
    routes: list[tuple[str, Form]] = [
        (f"policy_route fwmark {r.fwmark} {r.family}", {}) for r in config.policy_routes
    ]
    for label, value in _unique(routes):
        form[label] = value
    if config.bgp is not None:
        _bgp(form, config.bgp, secrets)
    return form


def _bgp(form: Form, bgp: BgpSettings, secrets: Secrets) -> None:
    """[bgp]: what every active director must announce alike, and to the same router."""
    form["bgp"] = {
        "backend": bgp.backend,
        "local_as": bgp.local_as,
        "drain_timeout": bgp.drain_timeout,
    }
    for n in bgp.neighbors:
        form[f"bgp neighbor {n.address}"] = {
            "peer_as": n.peer_as,
            "hold_time": n.hold_time,
            "password": secrets.hide(n.password),
        }
    for a in bgp.announcements:
        form[f"bgp announce {a.prefix}"] = {
            "virtual_servers": sorted(a.virtual_servers),
            "quorum": a.quorum,
            "quorum_up": a.quorum_up if a.quorum_up is not None else a.quorum,
            "communities": sorted(str(c) for c in a.communities),
            "med": a.med,
        }


def _table(path: str) -> Table:
    return next(t for t in TABLES if t.path == path)


def _unique(items: Iterable[tuple[str, Form]]) -> list[tuple[str, Form]]:
    """Entries keyed by label; a label given twice gets ``#2``, ``#3`` (in a fixed order)."""
    ordered = sorted(items, key=lambda item: (item[0], encode(item[1])))
    seen: dict[str, int] = {}
    out = []
    for label, value in ordered:
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label} #{seen[label]}", value))
    return out


def _service(vs: VirtualServer, secrets: Secrets) -> Form:
    out: Form = {
        "name": vs.name,
        "scheduler": vs.scheduler,
        "scheduler_flags": sorted(vs.scheduler_flags),
        "persistence_timeout": vs.persistence_timeout,
        "persistence_prefix": vs.persistence_prefix,
        "one_packet": vs.one_packet,
        "on_failure": vs.on_failure,
    }
    if vs.sorry_server is not None:
        out["sorry_server"] = _sorry(vs.sorry_server, vs)
    servers: list[tuple[str, Form]] = [
        (f"real_server {rs.dest_key(vs)}", _real_server(rs, vs, secrets)) for rs in vs.real_servers
    ]
    for label, value in _unique(servers):
        out[label] = value
    return out


def _sorry(sorry: SorryServer, vs: VirtualServer) -> Form:
    return {
        "address": str(sorry.dest_key(vs)),
        "forwarding": sorry.fwd(vs).label,
        **_tunnel(sorry, vs),
        "weight": sorry.weight,
    }


def _tunnel(server: RealServer | SorryServer, vs: VirtualServer) -> Form:
    """The encapsulation in force (the server's keys or its service's), only for a tunnel."""
    if server.fwd(vs) is not Forwarding.TUNNEL:
        return {}
    kind, port, checksum = server.tunnel(vs)
    return {"tunnel_type": kind, "tunnel_port": port, "tunnel_checksum": checksum}


def _real_server(rs: RealServer, vs: VirtualServer, secrets: Secrets) -> Form:
    out: Form = {
        "name": rs.name,
        "forwarding": rs.fwd(vs).label,
        **_tunnel(rs, vs),
        "weight": rs.weight,
        "upper_threshold": rs.upper_threshold,
        "lower_threshold": rs.lower_threshold,
    }
    check = rs.health_check(vs)
    if check is not None:
        out["check"] = _check(check, secrets)
    agent = rs.feedback_agent(vs)
    if agent is not None:
        out["agent"] = agent.model_dump(mode="json")
    return out


def _check(check: ResolvedCheck, secrets: Secrets) -> Form:
    out: Form = check.model_dump(mode="json")
    out["password"] = secrets.hide(check.password)
    out["expect_status"] = sorted([list(pair) for pair in check.expect_status])
    out["vdirs"] = sorted(check.vdirs)
    out["command"] = list(check.command)
    return out


def _addresses(addresses: tuple[VirtualAddress, ...]) -> list[str]:
    ordered = sorted(addresses, key=lambda va: (va.address.version, va.address))
    return [str(va.address) for va in ordered]


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def encode(form: object) -> bytes:
    """The one byte encoding of a form: sorted keys, no spaces, ASCII. A form is encoded one
    top-level entry at a time (the same bytes as in one call): one call on a form of megabytes
    would hold the interpreter lock for a quarter of a second, and VRRP's threads need it."""
    if not isinstance(form, dict):
        return _dumps(form).encode()
    parts = [f"{_dumps(key)}:{_dumps(form[key])}" for key in sorted(form)]
    return ("{" + ",".join(parts) + "}").encode()


def encode_lines(head: dict[str, object], form: Form) -> bytes:
    """``head`` on the first line, then one ``[key, value]`` line per top-level entry of
    ``form``, sorted: the peer reads it a line at a time (see :func:`decode_lines`)."""
    lines = [_dumps(head)] + [_dumps([key, form[key]]) for key in sorted(form)]
    return "\n".join(lines).encode()


def decode_lines(body: bytes) -> dict[str, object]:
    """:func:`encode_lines`' ``head`` with the form under ``"canonical"``; ValueError when
    ``body`` is not that."""
    lines = body.split(b"\n")
    head = json.loads(lines[0])
    if not isinstance(head, dict):
        raise ValueError("the first line is not a JSON object")
    form: Form = {}
    for line in lines[1:]:
        pair = json.loads(line)
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError("expected [key, value] lines")
        form[pair[0]] = pair[1]
    head["canonical"] = form
    return head


def digest(form: Form) -> str:
    """SHA-256 of the form's encoding, in hex."""
    return hashlib.sha256(encode(form)).hexdigest()


def next_generation(stored: tuple[str, int] | None, current: str) -> int:
    """The config generation for digest ``current``, given the (digest, generation) last
    recorded: the same generation for the same digest, one more for another, 1 for the first."""
    if stored is None:
        return 1
    digest_before, generation = stored
    return generation if digest_before == current else generation + 1
