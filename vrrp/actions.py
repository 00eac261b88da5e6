"""What the VRRP machine asks its adapter to do, in the order given."""

from __future__ import annotations

from dataclasses import dataclass

from vrrp.packet import IPAddress
from vrrp.table import Event, State


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send ``Config.advertisement(priority)`` to the VRRP group; priority 0 = releasing."""

    priority: int


@dataclass(frozen=True, slots=True)
class AddAddresses:
    """Bring the virtual addresses up on the interface (becoming master)."""

    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class RemoveAddresses:
    """Take the virtual addresses down (leaving master)."""

    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class RestoreAddresses:
    """Put back virtual addresses someone deleted while master (followed by a gratuitous
    round for them); the adapter logs and counts those it really had to add."""

    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class SendGratuitous:
    """One round: a gratuitous ARP (IPv4) or unsolicited neighbour advert (IPv6) per address."""

    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class StateChanged:
    """For logs, metrics, notify hooks and the IPVS role; comes first in its action list.

    ``event`` is the table's event that made the change; ``source`` and ``source_priority``
    are the advert behind it: the one received (advert events), or for a timer (master down,
    preempt) the last one heard as backup, None if none was; ``reason`` says why for a fault,
    a recovery or a start in fault. ``cause`` puts it in words for the log.
    """

    previous: State
    state: State
    event: Event
    source: IPAddress | None = None
    source_priority: int | None = None
    reason: str | None = None

    @property
    def cause(self) -> str:
        heard = f"{self.source} priority {self.source_priority}"
        match self.event:
            case Event.START:
                return "startup"
            case Event.START_AS_OWNER:
                return "startup as the address owner (priority 255)"
            case Event.START_IN_FAULT:
                return f"startup in fault: {self.reason}"
            case Event.SHUTDOWN:
                return "shutdown"
            case Event.FAULT:
                return f"fault: {self.reason}"
            case Event.RECOVER | Event.RECOVER_AS_OWNER:
                return f"recovered: {self.reason} cleared"
            case Event.PREEMPT:
                return f"preempt: master {heard} is lower than ours"
            case Event.MASTER_DOWN_TIMER if self.source is None:
                return "master_down timer expired, no master heard"
            case Event.MASTER_DOWN_TIMER if self.source_priority == 0:
                return f"master {self.source} released (priority 0), skew timer expired"
            case Event.MASTER_DOWN_TIMER:
                return f"master_down timer expired, last advert from {heard}"
            case Event.ADVERT_HIGHER:
                return f"advert from {heard}: higher priority"
            case Event.ADVERT_EQUAL_HIGHER_ADDRESS:
                return f"advert from {heard}: equal priority, higher address"
            case _:
                return str(self.event)


Action = (
    SendAdvert | AddAddresses | RemoveAddresses | RestoreAddresses | SendGratuitous | StateChanged
)
