"""The canonical destination order of mh/sh services: independent of config order and of the
reload and failure history, on the in-memory kernel that lists destinations newest first."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from director.config import parse_config
from director.desired import compile_table
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Dest, DestKey, Protocol, Service, ServiceKey, Table
from director.ipvs.ops import AddDest, AddService, DelDest, EditDest
from director.reconcile.order import canonical_key, kept_tail, reorder_dests
from director.reconcile.plan import plan

VIP = ipaddress.IPv4Address("198.18.0.10")
KEY = ServiceKey.inet(Protocol.TCP, VIP, 80)
SERVERS = [
    "198.18.1.10",
    "198.18.1.9",
    "198.18.1.200",
    "198.18.2.1",
    "198.18.1.10:8080",
    "198.18.1.100",
]


def config_text(servers: list[str], scheduler: str = "mh") -> str:
    text = f"""
[[virtual_server]]
protocol = "tcp"
address = "{VIP}"
port = 80
scheduler = "{scheduler}"
forwarding = "nat"
"""
    for s in servers:
        address, _, port = s.partition(":")
        text += f'[[virtual_server.real_server]]\naddress = "{address}"\n'
        text += f"port = {port or 80}\n"
    return text


def listed(kernel: MemoryIPVS) -> list[DestKey]:
    return list(kernel.dump().dests_of(KEY))


def dkey(text: str) -> DestKey:
    address, _, port = text.partition(":")
    return DestKey.of(ipaddress.ip_address(address), int(port or 80))


CANONICAL = sorted((dkey(s) for s in SERVERS), key=canonical_key)


def test_the_canonical_key_is_family_address_bytes_port() -> None:
    # by address bytes, not by text: .9 before .10 before .100 before .200; port last
    assert [f"{k.address}:{k.port}" for k in CANONICAL] == [
        "198.18.1.9:80",
        "198.18.1.10:80",
        "198.18.1.10:8080",
        "198.18.1.100:80",
        "198.18.1.200:80",
        "198.18.2.1:80",
    ]
    v6 = DestKey.of(ipaddress.ip_address("2001:db8::1"), 80)
    assert canonical_key(v6) > canonical_key(CANONICAL[-1])  # IPv4 first


def test_the_memory_kernel_lists_newest_first_like_ip_vs_ctl() -> None:
    kernel = MemoryIPVS()
    a, b = (Dest(key=dkey(s)) for s in ("198.18.1.9", "198.18.1.10"))
    assert kernel.execute([AddService(Service(KEY, "mh")), AddDest(KEY, a), AddDest(KEY, b)]) == []
    assert listed(kernel) == [b.key, a.key]
    assert kernel.execute([DelDest(KEY, a.key), AddDest(KEY, a)]) == []  # back at the head
    assert listed(kernel) == [a.key, b.key]


@settings(max_examples=50, deadline=None)
@given(st.permutations(SERVERS))
def test_desired_order_is_canonical_whatever_the_config_order(servers: list[str]) -> None:
    table = compile_table(parse_config(config_text(servers)))
    assert list(table.dests_of(KEY)) == CANONICAL
    # other schedulers keep the config's order: their tables do not depend on it
    table = compile_table(parse_config(config_text(servers, "wlc")))
    assert list(table.dests_of(KEY)) == [dkey(s) for s in servers]


def test_a_new_service_is_added_last_key_first() -> None:
    desired = compile_table(parse_config(config_text(SERVERS)))
    ops = plan(desired, Table())
    adds = [op.dest.key for op in ops if isinstance(op, AddDest)]
    assert adds == CANONICAL[::-1]
    kernel = MemoryIPVS()
    assert kernel.execute(ops) == []
    assert listed(kernel) == CANONICAL


@settings(max_examples=200, deadline=None)
@given(
    orders=st.lists(st.permutations(SERVERS), min_size=1, max_size=4),
    history=st.lists(
        st.tuples(st.sets(st.sampled_from(SERVERS)), st.sampled_from(["mh", "sh", "wlc"])),
        max_size=6,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_reload_and_failure_history_ends_in_the_canonical_list(
    orders: list[list[str]], history: list[tuple[set[str], str]], seed: int
) -> None:
    """Each step is a reload (servers in some config order, some of them failed and removed,
    maybe another scheduler); after every step of an mh/sh config the kernel's list is canonical
    and planning again changes nothing."""
    rng = random.Random(seed)
    kernel = MemoryIPVS()
    owned = [KEY]
    for failed, scheduler in [*history, (set(), "mh")]:
        servers = rng.choice(orders)
        up = [s for s in servers if s not in failed]
        desired = compile_table(parse_config(config_text(up, scheduler)))
        assert kernel.execute(plan(desired, kernel.dump(), owned)) == []
        assert plan(desired, kernel.dump(), owned) == []
        if scheduler != "wlc":
            assert listed(kernel) == sorted((dkey(s) for s in up), key=canonical_key)
    assert listed(kernel) == CANONICAL


def test_two_directors_with_different_histories_have_the_same_list() -> None:
    """d1 starts with every server; d2 starts with two failed (removed), and they come back."""
    full = compile_table(parse_config(config_text(SERVERS)))
    d1, d2 = MemoryIPVS(), MemoryIPVS()
    assert d1.execute(plan(full, Table())) == []
    partial = compile_table(parse_config(config_text(SERVERS[2:][::-1])))
    assert d2.execute(plan(partial, Table())) == []
    assert d2.execute(plan(full, d2.dump(), [KEY])) == []
    assert listed(d1) == listed(d2) == CANONICAL


def test_without_the_reorder_the_lists_would_differ() -> None:
    """The property the planner keeps is not free: plain adds leave d2 in history order."""
    full = compile_table(parse_config(config_text(SERVERS)))
    partial = compile_table(parse_config(config_text(SERVERS[2:])))
    d2 = MemoryIPVS()
    assert d2.execute(plan(partial, Table())) == []
    have = d2.dump().dests_of(KEY)
    plain = [AddDest(KEY, d) for k, d in full.dests_of(KEY).items() if k not in have]
    assert d2.execute(plain) == []
    assert listed(d2) != CANONICAL


def dest(text: str, weight: int = 1) -> Dest:
    return Dest(key=dkey(text), weight=weight)


def test_kept_tail() -> None:
    a, b, c, d = "abcd"
    assert kept_tail([a, b, c], [a, b, c]) == 0
    assert kept_tail([a, b, c], [b, c]) == 1
    assert kept_tail([a, b, c], [c, a, b]) == 2  # a and b go back before c
    assert kept_tail([a, b, c], [c, b, a]) == 2
    assert kept_tail([a, b, c], []) == 3
    assert kept_tail([a, b, c, d], [a, d, b, c]) == 3  # only d stays


def test_reorder_touches_only_what_is_out_of_order() -> None:
    nine, ten, hundred = dest("198.18.1.9"), dest("198.18.1.10"), dest("198.18.1.100")
    want = {d.key: d for d in (nine, ten, hundred)}
    # a new smallest key goes to the head: one add, nothing moves
    have = {ten.key: ten, hundred.key: hundred}
    assert reorder_dests(KEY, want, have) == ([AddDest(KEY, nine)], [])
    # a new largest key: everything before it is added again, last key first
    have = {nine.key: nine, ten.key: ten}
    changes, removals = reorder_dests(KEY, want, have)
    assert changes == [
        AddDest(KEY, hundred),
        DelDest(KEY, ten.key),
        AddDest(KEY, ten),
        DelDest(KEY, nine.key),
        AddDest(KEY, nine),
    ]
    assert removals == []
    # in order already: only edits and removals
    heavier = dest("198.18.1.10", weight=5)
    extra = dest("198.18.3.1")
    have = {nine.key: nine, extra.key: extra, ten.key: ten, hundred.key: hundred}
    want = {nine.key: nine, heavier.key: heavier, hundred.key: hundred}
    assert reorder_dests(KEY, want, have) == (
        [EditDest(KEY, heavier)],
        [DelDest(KEY, extra.key)],
    )
