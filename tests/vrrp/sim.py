"""A fake LAN for VRRP machines: a stepped clock and a lossy, delaying link.

Every advert goes through the real codec (``encode`` at the sender, ``check_ttl`` + ``parse`` at
each receiver). The clock jumps from event to event (or, with ``tick``, wakes only on multiples of
it, like a coarse timer); at one instant, deliveries go before timers. After every call into a
machine the simulator checks the invariants any run must keep, so every scenario also proves:
only a master advertises (priority 0 aside), addresses are held exactly while master, and a
machine never asks to be woken in the past.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from vrrp import (
    VRRP_GROUP_V4,
    VRRP_GROUP_V6,
    Action,
    AddAddresses,
    Config,
    Dropped,
    IPAddress,
    Machine,
    RemoveAddresses,
    SendAdvert,
    State,
    StateChanged,
    check_ttl,
    encode,
    parse,
)


@dataclass(frozen=True, slots=True)
class Transmission:
    """One advert from ``src`` to one receiver ``dst``; ``lost`` if the link dropped it."""

    time: float
    src: str
    dst: str
    priority: int
    lost: bool


@dataclass
class Node:
    name: str
    machine: Machine
    alive: bool = True
    holding: bool = False  # the virtual addresses are up
    history: list[tuple[float, Action]] = field(default_factory=list)
    drops: list[Dropped] = field(default_factory=list)

    @property
    def state(self) -> State:
        return self.machine.state

    def became(self, state: State) -> list[float]:
        """When this node entered ``state``."""
        return [t for t, a in self.history if isinstance(a, StateChanged) and a.state is state]

    def adverts(self) -> list[tuple[float, int]]:
        """(time, priority) of every advert this node sent."""
        return [(t, a.priority) for t, a in self.history if isinstance(a, SendAdvert)]


@dataclass(order=True)
class _Delivery:
    time: float
    seq: int
    src: str = field(compare=False)
    dst: str = field(compare=False)
    data: bytes = field(compare=False)


class Sim:
    def __init__(
        self,
        *,
        loss: float = 0.0,
        delay: float = 0.0,
        seed: int = 0,
        tick: float | None = None,
        drop: Callable[[float, str, str], bool] | None = None,
    ) -> None:
        self.now = 0.0
        self.loss, self.delay, self.tick, self.drop = loss, delay, tick, drop
        self.rng = random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self.transmissions: list[Transmission] = []
        self._cut: set[frozenset[str]] = set()
        self._queue: list[_Delivery] = []
        self._seq = 0

    # -- building and driving --------------------------------------------------------------

    def add(self, name: str, config: Config) -> Node:
        self.nodes[name] = node = Node(name, Machine(config))
        return node

    def start(self, *names: str) -> None:
        for name in names:
            self._call(self.nodes[name], "start", lambda m: m.start(self.now))

    def shutdown(self, name: str) -> None:
        self._call(self.nodes[name], "shutdown", lambda m: m.shutdown(self.now))

    def call(self, name: str, what: str, fn: Callable[[Machine], list[Action]]) -> None:
        """Any other input: ``sim.call("a", "track", lambda m: m.set_priority(90, sim.now))``."""
        self._call(self.nodes[name], what, fn)

    def kill(self, name: str) -> None:
        """A crash: no release advert, nothing more from this node."""
        self.nodes[name].alive = False

    def cut(self, a: str, b: str) -> None:
        self._cut.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self._cut.discard(frozenset((a, b)))

    def masters(self) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.alive and n.state is State.MASTER)

    def run_until(self, until: float) -> None:
        steps_now = 0
        while (at := self._next_time()) is not None and at <= until:
            steps_now = steps_now + 1 if at <= self.now else 0
            assert steps_now < 1000, f"no progress at {self.now}: a timer that never clears"
            self.now = max(self.now, at)
            self._step()
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # -- internals ---------------------------------------------------------------------------

    def _wake_time(self, node: Node) -> float | None:
        deadline = node.machine.next_deadline() if node.alive else None
        if deadline is None or self.tick is None:
            return deadline
        ticks = math.ceil(deadline / self.tick - 1e-9)
        while ticks * self.tick < deadline:  # float rounding must never wake it early
            ticks += 1
        return ticks * self.tick

    def _next_time(self) -> float | None:
        times = [w for n in self.nodes.values() if (w := self._wake_time(n)) is not None]
        if self._queue:
            times.append(self._queue[0].time)
        return min(times, default=None)

    def _step(self) -> None:
        while self._queue and self._queue[0].time <= self.now:
            self._deliver(heapq.heappop(self._queue))
        for node in self.nodes.values():
            wake = self._wake_time(node)
            if wake is not None and wake <= self.now:
                self._call(node, "timer", lambda m: m.handle_timer(self.now))

    def _deliver(self, packet: _Delivery) -> None:
        node, sender = self.nodes[packet.dst], self.nodes[packet.src]
        if not node.alive:
            return
        src = sender.machine.config.primary_address
        result = check_ttl(255) or parse(
            packet.data, src, _group(src.version), node.machine.config.expected()
        )
        if isinstance(result, Dropped):
            node.drops.append(result)
            return
        self._call(node, "receive", lambda m: m.receive(result, src, self.now))

    def _call(self, node: Node, what: str, fn: Callable[[Machine], list[Action]]) -> None:
        if not node.alive:
            return
        before = node.state
        actions = fn(node.machine)
        node.history.extend((self.now, a) for a in actions)
        self._check(node, what, before, actions)
        for action in actions:
            if isinstance(action, SendAdvert):
                self._transmit(node, action.priority)

    def _transmit(self, node: Node, priority: int) -> None:
        config = node.machine.config
        src = config.primary_address
        data = encode(config.advertisement(priority), src, _group(src.version))
        for other in self.nodes:
            if other == node.name:
                continue
            lost = (
                frozenset((node.name, other)) in self._cut
                or (self.drop is not None and self.drop(self.now, node.name, other))
                or (self.loss > 0 and self.rng.random() < self.loss)
            )
            self.transmissions.append(Transmission(self.now, node.name, other, priority, lost))
            if not lost:
                self._seq += 1
                delivery = _Delivery(self.now + self.delay, self._seq, node.name, other, data)
                heapq.heappush(self._queue, delivery)

    def _check(self, node: Node, what: str, before: State, actions: list[Action]) -> None:
        where = f"{node.name} at {self.now} on {what}: {actions}"
        state = node.state
        for action in actions:
            if isinstance(action, SendAdvert) and action.priority > 0:
                assert state is State.MASTER, f"a non-master advertised: {where}"
            if isinstance(action, AddAddresses):
                assert not node.holding, f"added addresses twice: {where}"
                node.holding = True
            if isinstance(action, RemoveAddresses):
                assert node.holding, f"removed addresses not held: {where}"
                node.holding = False
        assert node.holding == (state is State.MASTER), f"addresses vs state: {where}"
        changes = [a for a in actions if isinstance(a, StateChanged)]
        assert len(changes) <= 1 and all(c.previous is before for c in changes), where
        deadline = node.machine.next_deadline()
        if state in (State.INITIALIZE, State.FAULT):
            assert deadline is None, f"a timer armed in {state}: {where}"
        else:
            assert deadline is not None, f"no timer in {state}: {where}"
            assert what != "timer" or deadline > self.now, f"wants waking in the past: {where}"


def _group(version: int) -> IPAddress:
    return VRRP_GROUP_V4 if version == 4 else VRRP_GROUP_V6
