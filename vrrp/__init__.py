"""VRRP v2/v3 run by directord: the wire codec and a sans-I/O state machine per instance.

``packet`` turns bytes into ``Advertisement`` (or ``Dropped``) and back; ``Machine`` takes
validated adverts, timer wake-ups and operator/tracking inputs with the time passed in, and
returns actions for the adapter (sockets, addresses, ARP) to perform.
"""

from vrrp.actions import (
    Action,
    AddAddresses,
    RemoveAddresses,
    RestoreAddresses,
    SendAdvert,
    SendGratuitous,
    StateChanged,
)
from vrrp.config import Config, Gratuitous, master_down_interval, skew_time
from vrrp.machine import Machine
from vrrp.packet import (
    IPPROTO_VRRP,
    REQUIRED_TTL,
    VRRP_GROUP_V4,
    VRRP_GROUP_V6,
    Advertisement,
    AuthType,
    Dropped,
    DropReason,
    Expected,
    IPAddress,
    check_ttl,
    decode,
    encode,
    parse,
    validate,
)
from vrrp.table import Event, State

__all__ = [
    "IPPROTO_VRRP",
    "REQUIRED_TTL",
    "VRRP_GROUP_V4",
    "VRRP_GROUP_V6",
    "Action",
    "AddAddresses",
    "Advertisement",
    "AuthType",
    "Config",
    "DropReason",
    "Dropped",
    "Event",
    "Expected",
    "Gratuitous",
    "IPAddress",
    "Machine",
    "RemoveAddresses",
    "RestoreAddresses",
    "SendAdvert",
    "SendGratuitous",
    "State",
    "StateChanged",
    "check_ttl",
    "decode",
    "encode",
    "master_down_interval",
    "parse",
    "skew_time",
    "validate",
]
