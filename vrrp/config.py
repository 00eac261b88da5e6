"""One virtual router's settings, validated, and the RFC timer formulas. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from vrrp.packet import (
    PRIORITY_OWNER,
    V2_AUTH_LEN,
    V3_MAX_INTERVAL_CS,
    Advertisement,
    AuthType,
    Expected,
    IPAddress,
)

DOWN_TIMER_ADVERTS = 3  # Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time


def skew_time(version: int, priority: int, master_adver_interval: float) -> float:
    """RFC 3768: (256 - Priority) / 256 s. RFC 5798: scaled by Master_Adver_Interval."""
    if version == 2:
        return (256 - priority) / 256
    return (256 - priority) * master_adver_interval / 256


def master_down_interval(version: int, priority: int, master_adver_interval: float) -> float:
    """How long a backup waits without hearing the master before it takes over."""
    skew = skew_time(version, priority, master_adver_interval)
    return DOWN_TIMER_ADVERTS * master_adver_interval + skew


@dataclass(frozen=True, slots=True)
class Gratuitous:
    """Gratuitous ARP / unsolicited NA rounds a master sends (keepalived's ``garp_*`` names).

    One round is one ``SendGratuitous``: one packet per virtual address.
    """

    count: int = 5  # rounds right after becoming master (garp_master_repeat)
    spacing: float = 0.0  # seconds between the rounds of a burst (garp_interval)
    repeat_after: float | None = 5.0  # a second burst this long after (garp_master_delay)
    refresh: float | None = None  # then one round every this many seconds (garp_master_refresh)
    lower_priority_rounds: int = 1  # when a master hears a lower priority (garp_lower_prio_repeat)

    def problems(self) -> list[str]:
        found = []
        if self.count < 0 or self.lower_priority_rounds < 0:
            found.append("gratuitous counts must be >= 0")
        if self.spacing < 0:
            found.append(f"gratuitous spacing {self.spacing} must be >= 0")
        for name, value in (("repeat_after", self.repeat_after), ("refresh", self.refresh)):
            if value is not None and value <= 0:
                found.append(f"gratuitous {name} {value} must be > 0 (or None)")
        return found


@dataclass(frozen=True, slots=True)
class Config:
    """One VRRP instance. Raises ``ValueError`` naming every problem at once."""

    vrid: int
    priority: int  # 1..254, or 255 for the address owner
    primary_address: IPAddress  # this router's own address: the source of its adverts
    virtual_addresses: tuple[IPAddress, ...]
    version: int = 2  # keepalived's default; IPv6 needs 3
    advert_interval: float = 1.0  # seconds: whole for v2, centiseconds resolution for v3
    preempt: bool = True  # False: keepalived's nopreempt
    preempt_delay: float = 0.0  # keepalived: hold off preempting a lower-priority master
    password: bytes | None = None  # v2 auth type 1 (PASS), at most 8 bytes
    check_addresses: bool = True  # drop adverts whose address list differs (RFC "MAY")
    gratuitous: Gratuitous = field(default_factory=Gratuitous)
    # Held by the master like the virtual addresses but not listed in its adverts
    # (keepalived's virtual_ipaddress_excluded); of either family, any number.
    excluded_addresses: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        problems = list(self.gratuitous.problems())
        if not 1 <= self.vrid <= 255:
            problems.append(f"vrid {self.vrid} not in 1..255")
        if not 1 <= self.priority <= PRIORITY_OWNER:
            problems.append(f"priority {self.priority} not in 1..255")
        if self.version not in (2, 3):
            problems.append(f"version {self.version} is neither 2 nor 3")
        family = self.primary_address.version
        if self.version == 2 and family == 6:
            problems.append("VRRPv2 is IPv4 only: use version 3 for IPv6")
        if any(a.version != family for a in self.virtual_addresses):
            problems.append(f"virtual addresses must be IPv{family} like the primary address")
        if len(self.virtual_addresses) > 255:
            problems.append("at most 255 virtual addresses")
        if set(self.excluded_addresses) & set(self.virtual_addresses):
            problems.append("an address is both virtual and excluded")
        cs = round(self.advert_interval * 100)
        if abs(self.advert_interval * 100 - cs) > 1e-6:
            problems.append(f"advert_interval {self.advert_interval} is not whole centiseconds")
        elif self.version == 2 and (cs % 100 or not 1 <= cs // 100 <= 255):
            problems.append(f"advert_interval {self.advert_interval} not whole seconds 1..255")
        elif self.version == 3 and not 1 <= cs <= V3_MAX_INTERVAL_CS:
            problems.append(f"advert_interval {self.advert_interval} not in 0.01..40.95")
        if self.preempt_delay < 0:
            problems.append(f"preempt_delay {self.preempt_delay} must be >= 0")
        if self.password is not None and (self.version != 2 or len(self.password) > V2_AUTH_LEN):
            problems.append("password needs version 2 and at most 8 bytes")
        if problems:
            raise ValueError(f"VRRP instance vrid {self.vrid}: " + "; ".join(problems))

    @property
    def held_addresses(self) -> tuple[IPAddress, ...]:
        """Every address the master holds (and announces with GARP / NA): the advertised
        ones, then the excluded ones."""
        return self.virtual_addresses + self.excluded_addresses

    @property
    def interval_cs(self) -> int:
        return round(self.advert_interval * 100)

    @property
    def auth_type(self) -> AuthType:
        return AuthType.NONE if self.password is None else AuthType.SIMPLE

    def advertisement(self, priority: int) -> Advertisement:
        """What ``SendAdvert(priority)`` puts on the wire for this instance."""
        return Advertisement(
            version=self.version,
            vrid=self.vrid,
            priority=priority,
            interval_cs=self.interval_cs,
            addresses=self.virtual_addresses,
            auth_type=self.auth_type,
            auth_data=self.password or b"",
        )

    def expected(self) -> Expected:
        """The receive checks for this instance (``packet.parse``)."""
        return Expected(
            version=self.version,
            vrid=self.vrid,
            interval_cs=self.interval_cs,
            addresses=frozenset(self.virtual_addresses) if self.check_addresses else None,
            auth_type=self.auth_type,
            password=self.password or b"",
        )
