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
class SendGratuitous:
    """One round: a gratuitous ARP (IPv4) or unsolicited neighbour advert (IPv6) per address."""

    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class StateChanged:
    """For logs, metrics, notify hooks and the IPVS role; comes first in its action list."""

    previous: State
    state: State
    event: Event


Action = SendAdvert | AddAddresses | RemoveAddresses | SendGratuitous | StateChanged
