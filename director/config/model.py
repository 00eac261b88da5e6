"""The config file as frozen, validated models, and what they mean for the kernel.

The models mirror the TOML file one to one (``[[virtual_server]]`` is
:attr:`Config.virtual_servers`, ``[[virtual_server.real_server]]`` is
:attr:`VirtualServer.real_servers`); unknown keys are errors. Per-field checks live in
:mod:`director.config.fields`, checks across fields in :mod:`director.config.rules`. The
helpers at the bottom of each class are what the compiler (:mod:`director.desired`) needs to
build kernel keys and flags without knowing the file format.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NamedTuple, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from director.config import cross, rules
from director.config.agent import AgentConfig, ResolvedAgent
from director.config.agent import resolve as resolve_agent
from director.config.bgp import BgpSettings, announce_problems
from director.config.checks import CheckConfig, ResolvedCheck, User
from director.config.checks import resolve as resolve_check
from director.config.fields import (
    Address,
    Bool,
    DirPath,
    Finding,
    Fwmark,
    IPVSTimeout,
    Name,
    Netmask,
    PersistenceTimeout,
    Port,
    Seconds,
    SocketPath,
    SorryWeight,
    Threshold,
    TunnelPort,
    Weight,
    detail,
    error_details,
    fail,
    netmask_prefix,
    raise_findings,
    show,
    sysctl_value,
)
from director.config.network import (
    FwmarkRule,
    MasqueradeRule,
    NetworkSettings,
    PolicyRoute,
    SnatRule,
)
from director.config.peer import PeerCheckSettings
from director.config.vrrp import SyncDaemon, VrrpInstance, VrrpSyncGroup
from director.ipvs.model import (
    SCHED_FLAGS,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    TUN_F_CSUM,
    TUN_F_NOCSUM,
    TUN_F_REMCSUM,
    DestKey,
    Family,
    Forwarding,
    Protocol,
    ServiceKey,
    TunnelType,
)

ProtocolName = Literal["tcp", "udp", "sctp"]
FamilyName = Literal["ipv4", "ipv6"]
ForwardingName = Literal["nat", "dr", "tun"]
TunnelTypeName = Literal["ipip", "gue", "gre"]
TunnelChecksumName = Literal["none", "csum", "remcsum"]
SchedulerName = Literal[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"
]
SchedFlagName = Literal["sh-fallback", "sh-port", "mh-fallback", "mh-port"]

FORWARDING: dict[str, Forwarding] = {
    "nat": Forwarding.NAT,
    "dr": Forwarding.DR,
    "tun": Forwarding.TUNNEL,
}
TUNNEL_TYPES: dict[str, TunnelType] = {
    "ipip": TunnelType.IPIP,
    "gue": TunnelType.GUE,
    "gre": TunnelType.GRE,
}
TUNNEL_CHECKSUMS: dict[str, int] = {
    "none": TUN_F_NOCSUM,
    "csum": TUN_F_CSUM,
    "remcsum": TUN_F_REMCSUM,
}
TUNNEL_KEYS = ("tunnel_type", "tunnel_port", "tunnel_checksum")
# [kernel] keys that are sysctls, in the order they are applied.
NAMED_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("ip_forward", "net.ipv4.ip_forward"),
    ("ipv6_forwarding", "net.ipv6.conf.all.forwarding"),
    ("conntrack", "net.ipv4.vs.conntrack"),
    ("expire_nodest_conn", "net.ipv4.vs.expire_nodest_conn"),
    ("expire_quiescent_template", "net.ipv4.vs.expire_quiescent_template"),
)


def _probes_check(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        fail(f"expected an integer from 1 to 100000, found {show(value)}")
    return value


_probes = PlainValidator(_probes_check)


class _Model(BaseModel):
    # The loader validates by alias only (TOML keys); Python code may also use field names.
    model_config = ConfigDict(
        defer_build=True, frozen=True, extra="forbid", validate_by_alias=True, validate_by_name=True
    )


def listen_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9469"`` or ``"[::1]:9469"`` as (host, port); ValueError when it is not."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("no port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    else:
        ipaddress.IPv4Address(host)
    return host, int(port)


def _metrics_address_check(value: object) -> str:
    if value == "":
        return ""
    if isinstance(value, str):
        try:
            listen_address(value)
        except ValueError:
            pass
        else:
            return value
    fail(
        f'expected "ADDRESS:PORT" ("127.0.0.1:9469", "[::1]:9469") or "" (off), found {show(value)}'
    )


_metrics_address = PlainValidator(_metrics_address_check)


class DaemonSettings(_Model):
    log_format: Literal["json", "logfmt", "journal"] = "logfmt"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    resync_interval: Seconds = 60.0
    state_dir: DirPath = "/var/lib/director"
    control_socket: SocketPath = "/run/director/control.sock"
    keep_table_on_stop: Bool = True
    max_concurrent_probes: Annotated[int, _probes] = 256
    metrics_address: Annotated[str, _metrics_address] = "127.0.0.1:9469"
    stats_interval: Seconds = 5.0
    # who notify hooks and script checks run as ("USER" or "USER:GROUP"); None: as directord
    script_user: User | None = None


class KernelSettings(_Model):
    ip_forward: Bool | None = True
    ipv6_forwarding: Bool | None = None
    conntrack: Bool | None = None
    expire_nodest_conn: Bool | None = True
    expire_quiescent_template: Bool | None = True
    tcp_timeout: IPVSTimeout | None = None
    tcpfin_timeout: IPVSTimeout | None = None
    udp_timeout: IPVSTimeout | None = None
    # [kernel.sysctls] in the order written; a tuple of pairs keeps the model hashable.
    sysctls: tuple[tuple[str, int | str], ...] = ()

    @field_validator("sysctls", mode="before")
    @classmethod
    def _check_sysctls(cls, value: object) -> tuple[tuple[str, int | str], ...]:
        if isinstance(value, Mapping):
            pairs = list(value.items())
        elif isinstance(value, list | tuple) and all(
            isinstance(p, tuple) and len(p) == 2 for p in value
        ):
            pairs = list(value)
        else:
            fail(
                'expected a table of sysctls like "net.ipv4.vs.sloppy_tcp" = 1, '
                f"found {show(value)}"
            )
        details: list[InitErrorDetails] = []
        out: list[tuple[str, int | str]] = []
        for name, raw in pairs:
            problem = rules.sysctl_name_problem(str(name))
            if problem:
                details.append(detail((str(name),), problem, name))
                continue
            try:
                out.append((name, sysctl_value(raw)))
            except PydanticCustomError as exc:
                details.append(detail((str(name),), exc.message(), raw))
        if details:
            raise ValidationError.from_exception_data("sysctls", details)
        return tuple(out)

    @model_validator(mode="after")
    def _check_overlap(self) -> Self:
        named = {name: key for key, name in NAMED_SYSCTLS}
        findings = [
            (("sysctls", name), f"set {name} with kernel.{named[name]}, not in [kernel.sysctls]")
            for name, _ in self.sysctls
            if name in named
        ]
        if findings:
            raise_findings("KernelSettings", findings)
        return self

    def sysctl_items(self) -> list[tuple[str, str]]:
        """Every sysctl to apply as (name, kernel text): the named keys, then [kernel.sysctls]."""
        items = [
            (name, "1" if value else "0")
            for key, name in NAMED_SYSCTLS
            if (value := getattr(self, key)) is not None
        ]
        items += [(name, str(value)) for name, value in self.sysctls]
        return items

    def ipvs_timeouts(self) -> tuple[int | None, int | None, int | None]:
        """(tcp, tcpfin, udp) in seconds, None where the kernel's value is to be left alone."""
        return self.tcp_timeout, self.tcpfin_timeout, self.udp_timeout


class Tunnel(NamedTuple):
    """(type, port, checksum) in config words, as a server gets them (see ``_Server.tunnel``)."""

    type: str
    port: int | None
    checksum: str


class _Server(_Model):
    address: Address
    port: Port | None = None
    forwarding: ForwardingName | None = None
    # the encapsulation of forwarding = "tun" (see tunnel())
    tunnel_type: TunnelTypeName | None = None
    tunnel_port: TunnelPort | None = None
    tunnel_checksum: TunnelChecksumName | None = None

    @property
    def sets_tunnel(self) -> bool:
        return any(getattr(self, key) is not None for key in TUNNEL_KEYS)

    def fwd(self, vs: VirtualServer) -> Forwarding:
        """The forwarding method: the server's own, else the service's."""
        return FORWARDING[self.forwarding or vs.forwarding]

    def tunnel(self, vs: VirtualServer) -> Tunnel:
        """The encapsulation in words. A server that sets ``tunnel_type`` takes none of the
        service's tunnel keys; otherwise each key it leaves out is the service's."""
        if self.tunnel_type is not None:
            return Tunnel(self.tunnel_type, self.tunnel_port, self.tunnel_checksum or "none")
        return Tunnel(
            vs.tunnel_type or "ipip",
            self.tunnel_port if self.tunnel_port is not None else vs.tunnel_port,
            self.tunnel_checksum or vs.tunnel_checksum or "none",
        )

    def tunnel_fields(self, vs: VirtualServer) -> dict[str, int]:
        """``Dest``'s tun_type, tun_port, tun_flags; empty (all 0) when not a tunnel."""
        if self.fwd(vs) is not Forwarding.TUNNEL:
            return {}
        kind, port, checksum = self.tunnel(vs)
        return {
            "tun_type": TUNNEL_TYPES[kind],
            "tun_port": port or 0,
            "tun_flags": TUNNEL_CHECKSUMS[checksum],
        }

    def dest_key(self, vs: VirtualServer) -> DestKey:
        """The kernel key. dr/tun cannot change the port, so they use the service's."""
        if self.fwd(vs) is not Forwarding.NAT or self.port is None:
            return DestKey.of(self.address, vs.port or 0)
        return DestKey.of(self.address, self.port)


class RealServer(_Server):
    name: Name | None = None
    weight: Weight = 1
    upper_threshold: Threshold = 0
    lower_threshold: Threshold = 0
    check: CheckConfig | None = None
    agent: AgentConfig | None = None

    def feedback_agent(self, vs: VirtualServer) -> ResolvedAgent | None:
        """The feedback agent of this real server: the service's table overridden by its own;
        None if neither has one or it is turned off (``enabled = false``)."""
        table = vs.agent.merged(self.agent) if vs.agent is not None else self.agent
        return resolve_agent(table, str(self.address))

    def health_check(self, vs: VirtualServer) -> ResolvedCheck | None:
        """The check this real server gets: the service's, overridden by its own; None if none."""
        table = vs.check.merged(self.check) if vs.check is not None else self.check
        if table is None or table.type in (None, "none"):
            return None
        return resolve_check(table, self.dest_key(vs).port or (vs.port or 0))


class SorryServer(_Server):
    weight: SorryWeight = 1


class VirtualServer(_Model):
    name: Name | None = None
    protocol: ProtocolName | None = None
    address: Address | None = None
    port: Port | None = None
    fwmark: Fwmark | None = None
    # Given for fwmark services; for address services derived from the address when absent.
    family: FamilyName = "ipv4"
    scheduler: SchedulerName = "wlc"
    scheduler_flags: tuple[SchedFlagName, ...] = ()
    persistence_timeout: PersistenceTimeout = 0
    persistence_netmask: Netmask | None = None
    one_packet: Bool = False
    forwarding: ForwardingName = "nat"
    # defaults for the real servers with forwarding = "tun" (see _Server.tunnel())
    tunnel_type: TunnelTypeName | None = None
    tunnel_port: TunnelPort | None = None
    tunnel_checksum: TunnelChecksumName | None = None
    on_failure: Literal["remove", "quiesce"] = "remove"
    sorry_server: SorryServer | None = None
    check: CheckConfig | None = None
    agent: AgentConfig | None = None
    real_servers: tuple[RealServer, ...] = Field(default=(), alias="real_server")

    @model_validator(mode="wrap")
    @classmethod
    def _check(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        data = _with_family(data)
        try:
            vs = handler(data)
        except ValidationError as exc:
            findings = _partial_findings(cls, data, exc, handler)
            if not findings:
                raise
            details = [detail(loc, message, data) for loc, message in findings]
            raise ValidationError.from_exception_data(
                exc.title, [*error_details(exc), *details]
            ) from None
        findings = rules.virtual_server_problems(vs)
        if findings:
            raise_findings("VirtualServer", findings, data)
        return vs

    @property
    def sets_tunnel(self) -> bool:
        return any(getattr(self, key) is not None for key in TUNNEL_KEYS)

    @property
    def display_name(self) -> str:
        """The name, or one derived from the key: ``tcp/198.18.0.10:443``, ``fwmark/80``."""
        if self.name is not None:
            return self.name
        if self.fwmark is not None:
            return f"fwmark/{self.fwmark}" + ("/ipv6" if self.family == "ipv6" else "")
        host = f"[{self.address}]" if self.address and self.address.version == 6 else self.address
        return f"{self.protocol}/{host}:{self.port}"

    @property
    def family_enum(self) -> Family:
        if self.address is not None:
            return Family.of(self.address)
        return Family.INET6 if self.family == "ipv6" else Family.INET

    def service_key(self) -> ServiceKey:
        if self.fwmark is not None:
            return ServiceKey.mark(self.fwmark, self.family_enum)
        if self.protocol is None or self.address is None or self.port is None:
            raise ValueError(f"virtual server {self.display_name} has no key")
        return ServiceKey.inet(Protocol[self.protocol.upper()], self.address, self.port)

    @property
    def persistence_prefix(self) -> int:
        """The persistence granularity as a prefix length; the full host when unset."""
        mask = self.persistence_netmask
        if mask is None:
            return self.family_enum.max_prefix
        return netmask_prefix(mask) if isinstance(mask, str) else mask

    @property
    def svc_flags(self) -> int:
        flags = SVC_F_PERSISTENT if self.persistence_timeout > 0 else 0
        if self.one_packet:
            flags |= SVC_F_ONEPACKET
        for name in self.scheduler_flags:
            flags |= SCHED_FLAGS[name][1]
        return flags


def _with_family(data: object) -> object:
    """``data`` with the family of its address filled in when it has an address but no family."""
    if not isinstance(data, Mapping) or "family" in data:
        return data
    address = data.get("address")
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return data
    if isinstance(address, ipaddress.IPv6Address):
        return {**data, "family": "ipv6"}
    return data


# Keys whose default no cross-field rule would misread: when only these (or unknown keys) are
# invalid, the service is checked again without them, so its other mistakes are reported too.
_DROPPABLE = {
    "name",
    "one_packet",
    "scheduler_flags",
    "persistence_netmask",
    "on_failure",
    "sorry_server",
    "real_server",
    "check",
    "agent",
}


def _partial_findings(
    cls: type[VirtualServer],
    data: object,
    exc: ValidationError,
    handler: ModelWrapValidatorHandler[VirtualServer],
) -> list[Finding]:
    """Cross-field findings for a virtual server that has field errors, where they are sure."""
    if not isinstance(data, Mapping):
        return []
    known = {field.alias or name for name, field in cls.model_fields.items()}
    failed = {error["loc"][0] for error in exc.errors() if error["loc"]}
    if failed <= _DROPPABLE | (failed - known):
        try:
            partial = handler({k: v for k, v in data.items() if k not in failed})
        except ValidationError:
            pass
        else:
            findings = rules.virtual_server_problems(partial)
            return [(loc, msg) for loc, msg in findings if not (loc and loc[0] in failed)]
    kind = rules.service_kind_problem(k for k, v in data.items() if v is not None)
    return [((), kind)] if kind else []


def _share_real_servers(virtual_servers: tuple[VirtualServer, ...]) -> None:
    """Equal values in the services become one object (all frozen): 10,000 services over the
    same pool hold 10 real-server models, not 100,000 (~800 bytes each), and the same check
    table, the same strings and one set of each shape of the fields given (pydantic's
    ``model_fields_set``, 200-700 bytes a model; pydantic copies it before it changes one, in
    ``model_copy``): ~1.9 of the ~2.9 KB a service's models took at 10,000 services
    (``bench.scale``). Nothing is keyed by a model's identity; a real server's meaning within
    its service comes from the service (``rs.dest_key(vs)``, ``rs.health_check(vs)``)."""
    seen: dict[object, Any] = {}
    for vs in virtual_servers:
        try:
            shared = tuple(_shared_value(seen, rs) for rs in vs.real_servers)
        except TypeError:  # a field that cannot be hashed: this service keeps its own
            shared = vs.real_servers
        else:
            # one tuple for each list of the same (shared) real servers
            shared = seen.setdefault(("real_servers", *map(id, shared)), shared)
        if shared is not vs.real_servers:
            object.__setattr__(vs, "real_servers", shared)  # frozen: equal values, one object
        _share_fields(seen, vs, skip="real_servers")


def _shared_key(value: object) -> object:
    """What makes two values interchangeable: equal, of the same types throughout (1 is not
    1.0 nor True), and for a model the same fields given."""
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return (kind, value)
    if kind is tuple:
        return (tuple, tuple(map(_shared_key, value)))  # type: ignore[call-overload]
    if isinstance(value, BaseModel):
        given = frozenset(value.model_fields_set)
        return (kind, given, tuple(map(type, value.__dict__.values())), value)
    return (kind, value)


def _shared_value(seen: dict[object, Any], value: Any) -> Any:
    """The first value seen interchangeable with ``value`` (TypeError: it cannot be hashed).
    A model seen first has its own fields shared too."""
    key = _shared_key(value)
    first = seen.get(key)
    if first is None:
        first = seen[key] = value
        if isinstance(value, BaseModel):
            _share_fields(seen, value)
    return first


def _share_fields(seen: dict[object, Any], model: BaseModel, skip: str = "") -> None:
    """``model``'s field values and its set of fields given, each the first equal one seen."""
    fields = model.__dict__
    for name, value in fields.items():  # values replaced, no key added: iterating stays valid
        kind = type(value)
        if kind is str or kind is int or kind is float:  # most of them, inline
            fields[name] = seen.setdefault((kind, value), value)
        elif value is not None and kind is not bool and name != skip:
            with contextlib.suppress(TypeError):
                fields[name] = _shared_value(seen, value)
    given = model.model_fields_set
    object.__setattr__(
        model, "__pydantic_fields_set__", seen.setdefault(("fields", frozenset(given)), given)
    )


class Config(_Model):
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    kernel: KernelSettings = Field(default_factory=KernelSettings)
    virtual_servers: tuple[VirtualServer, ...] = Field(default=(), alias="virtual_server")
    vrrp_instances: tuple[VrrpInstance, ...] = Field(default=(), alias="vrrp_instance")
    vrrp_sync_groups: tuple[VrrpSyncGroup, ...] = Field(default=(), alias="vrrp_sync_group")
    sync_daemon: SyncDaemon | None = Field(default=None, alias="sync_daemon")
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    fwmarks: tuple[FwmarkRule, ...] = Field(default=(), alias="fwmark")
    snats: tuple[SnatRule, ...] = Field(default=(), alias="snat")
    masquerades: tuple[MasqueradeRule, ...] = Field(default=(), alias="masquerade")
    policy_routes: tuple[PolicyRoute, ...] = Field(default=(), alias="policy_route")
    peer_check: PeerCheckSettings | None = None
    bgp: BgpSettings | None = None  # [bgp]: route health injection (director.config.bgp)

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        findings = rules.duplicate_services(enumerate(self.virtual_servers))
        names = {vs.name for vs in self.virtual_servers if vs.name is not None}
        findings += cross.vrrp_problems(
            self.vrrp_instances, self.vrrp_sync_groups, self.sync_daemon, names
        )
        marks: dict[int, set[int]] = {}
        for vs in self.virtual_servers:
            if vs.fwmark is not None:
                marks.setdefault(vs.fwmark, set()).add(6 if vs.family == "ipv6" else 4)
        findings += cross.network_problems(self.fwmarks, self.policy_routes, marks)
        if self.bgp is not None:  # [bgp]
            findings += announce_problems(
                self.bgp,
                [(vs.display_name, vs.address) for vs in self.virtual_servers],
                {va.ip: vi.name for vi in self.vrrp_instances for va in vi.held_addresses},
            )
        if findings:
            raise_findings("Config", findings)
        _share_real_servers(self.virtual_servers)
        return self

    def count(self) -> tuple[int, int]:
        """(virtual services, real servers)."""
        return len(self.virtual_servers), sum(len(vs.real_servers) for vs in self.virtual_servers)
