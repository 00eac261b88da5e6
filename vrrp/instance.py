"""One VRRP instance on asyncio: feeds a ``Machine`` and performs what it asks.

The adapter owns the clock (``loop.time()``), the ``Transport`` and the ``AddressManager``.
Inputs (start, received adverts, the timer, stop) go to the machine; the actions that come back
are performed in order: adverts, address changes (one blocking rtnetlink request each, answered
at once), gratuitous ARPs and state callbacks at once while nothing is pending, anything else by
one worker task (what comes after it waits too, so a gratuitous ARP never goes out before its
address is up). A takeover's log line and state callback come after its advert, addresses and
first gratuitous ARP: the hot path of a takeover is timer -> machine -> advert bytes encoded
beforehand -> sendmsg -> rtnetlink -> gratuitous ARP. One timer (a timerfd, else
``loop.call_at``) is re-armed from ``machine.next_deadline()`` after every input, including
timer calls that did nothing (asyncio may fire a little early). A takeover is prepared: a
backup's timerfd wakes ``SPIN_LEAD`` before the Master_Down_Timer, a copy of the machine says
what it will do then (``Machine.preview_timer``), those packets are built, and the deadline is
waited out reading the socket; if no advert came in, the advert, address request and first GARP
leave as the deadline passes (never before), then the machine runs for real. The takeover
starts at its deadline, not a process wake-up (0.1-0.35 ms measured) and a Python machine run
after it.

Fault and priority inputs: the instance's own interface is followed (``vrrp.link``; off with
``track_interface=False``) and its loss is a fault, as in keepalived; tracking elsewhere in the
daemon reports its own reasons with ``set_fault(reason, faulty)`` and priority changes with
``set_priority``. IPv4 and IPv6 (v3, primary address = the interface's link-local) alike;
``virtual`` places each virtual address on its own device with its own prefix and label.

Drift: rtnetlink address events (``vrrp.addrwatch``) tell the machine when one of its virtual
addresses is deleted from its device; a master puts it back and announces it (``vip_restored``
in the log, ``vips_restored`` in the counters). Logs: structlog, logger ``vrrp``, one
``vrrp_transition`` line per change of state with its cause as the machine gave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from vrrp.actions import (
    Action,
    AddAddresses,
    RemoveAddresses,
    RestoreAddresses,
    SendAdvert,
    SendGratuitous,
    StateChanged,
)
from vrrp.addresses import AddressManager, VirtualAddress
from vrrp.addrwatch import AddressWatch
from vrrp.config import Config
from vrrp.link import LinkWatch
from vrrp.machine import Machine
from vrrp.packet import Advertisement, DropReason, IPAddress
from vrrp.table import State
from vrrp.timer import TimerFd
from vrrp.transport import Transport

log = structlog.get_logger("vrrp")

OnState = Callable[[State], None]
WAKE_LEAD = 0.02  # seconds: the last poll before a VRRP deadline is at most this long
# A backup's timerfd wakes this long before its Master_Down_Timer and the rest is waited out on
# the CPU (a takeover costs at most this much CPU), so that the wake-up latency of a sleeping
# process (0.1-0.35 ms measured on a VM) does not add to the failover time.
SPIN_LEAD = 0.001


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot for metrics and status output."""

    adverts_sent: int
    adverts_received: int
    drops: dict[DropReason, int] = field(default_factory=dict)
    transitions: dict[tuple[State, State], int] = field(default_factory=dict)
    action_errors: int = 0
    answers_suppressed: int = 0  # lower priority / priority 0 adverts a master held its answer to
    vips_restored: int = 0  # virtual addresses put back after someone deleted them


class Instance:
    def __init__(
        self,
        config: Config,
        interface: str,
        *,
        peers: Sequence[IPAddress] = (),
        prefixlen: int | None = None,
        label: str | None = None,
        on_state: OnState | None = None,
        virtual: Sequence[VirtualAddress] = (),
        track_interface: bool = True,
        name: str | None = None,
    ) -> None:
        """``name``: the instance's name in the config, for the log (vrid and interface are
        always there)."""
        unknown = {v.address for v in virtual} - set(config.held_addresses)
        if unknown:
            listed = ", ".join(sorted(map(str, unknown)))
            raise ValueError(f"VRRP vrid {config.vrid}: {listed} not among its virtual addresses")
        self.config = config
        self.interface = interface
        self.name = name
        context = {"instance": name} if name is not None else {}
        # lazy (not log.bind, which would fix the processors in force now)
        self._log = structlog.get_logger("vrrp", **context, vrid=config.vrid, interface=interface)
        self.machine = Machine(config)
        self.on_state = on_state
        self.transport = Transport(
            interface, config.primary_address, config.expected(), self._received, peers=peers
        )
        self.addresses = AddressManager(
            interface, prefixlen=prefixlen, label=label, virtual=virtual
        )
        self.link = LinkWatch(interface, self._link_changed) if track_interface else None
        self.watch = AddressWatch(self._addresses_deleted, self._address_events_lost)
        self._vips_restored = 0
        self._faults: set[str] = set()
        self._transitions: Counter[tuple[State, State]] = Counter()
        self._action_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timerfd: TimerFd | None = None
        self._spin_to: float | None = None  # the deadline a timerfd armed SPIN_LEAD early is for
        self._inputs = 0  # adverts handed to the machine
        self._queue: asyncio.Queue[Action] = asyncio.Queue()
        self._in_flight = 0  # queued or being performed by the worker
        self._worker: asyncio.Task[None] | None = None

    @property
    def state(self) -> State:
        return self.machine.state

    def counters(self) -> Counters:
        return Counters(
            adverts_sent=self.transport.sent,
            adverts_received=self.transport.received,
            drops=dict(self.transport.drops),
            transitions=dict(self._transitions),
            action_errors=self._action_errors,
            answers_suppressed=self.machine.answers_suppressed,
            vips_restored=self._vips_restored,
        )

    @property
    def faults(self) -> frozenset[str]:
        """Why the instance is in fault (empty: it is not): ``link <interface>``, tracking."""
        return frozenset(self._faults)

    async def start(self) -> None:
        """Open the sockets, clear leftover virtual addresses, then start the machine."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        await self.addresses.open()
        try:
            stale = await self.addresses.remove_stale(self.config.held_addresses)
            if stale:
                self._log.info("vips_leftover_removed", addresses=sorted(map(str, stale)))
            self.watch.open(loop)
            self.transport.open(loop)
            self.transport.prepare(self.config.advertisement(self.machine.priority))
            if self.link is not None and not self.link.open(loop):
                self.set_fault(f"link {self.interface}", True)
        except BaseException:
            self._close_sockets()
            raise
        try:
            self._timerfd = TimerFd(loop, self._on_timer)
        except OSError as exc:
            self._log.warning("vrrp_no_timerfd", error=str(exc), timers="call_at")
        self._worker = loop.create_task(self._work(), name=f"vrrp-{self.config.vrid}")
        self._feed(self.machine.start(loop.time()))

    async def stop(self) -> None:
        """Shut the machine down (a master sends priority 0 and drops its addresses), close."""
        loop = self._require_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timerfd is not None:
            self._timerfd.close()
            self._timerfd = None
        self._perform_later(self.machine.shutdown(loop.time()))
        try:
            async with asyncio.timeout(10):
                await self._queue.join()
        finally:
            if self._worker is not None:
                self._worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker
                self._worker = None
            self._close_sockets()

    def _close_sockets(self) -> None:
        self.watch.close()
        self.transport.close()
        if self.link is not None:
            self.link.close()
        self.addresses.close()

    def set_fault(self, reason: str, faulty: bool) -> None:
        """Report (``faulty``) or clear one reason for fault (a tracked interface or check).

        The instance is in fault while any reason stands: a master leaves with a priority 0
        advert and drops its addresses; when the last reason clears it comes back as backup
        (or master, if it owns the addresses). Callable before ``start``.
        """
        before = frozenset(self._faults)
        if faulty:
            self._faults.add(reason)
        else:
            self._faults.discard(reason)
        if bool(before) == bool(self._faults):  # no change of state, so no transition line
            if before != self._faults:
                self._log.info("vrrp_fault_reasons", faults=sorted(self._faults))
            return
        now = self._loop.time() if self._loop is not None else 0.0
        change = self.machine.fault if faulty else self.machine.recover
        actions = change(now, reason)
        if self._loop is not None:
            self._feed(actions)

    def set_priority(self, priority: int) -> None:
        """Tracking changed the effective priority (1..255); a master advertises it at once."""
        now = self._loop.time() if self._loop is not None else 0.0
        actions = self.machine.set_priority(priority, now)
        if self._loop is not None:
            self._feed(actions)

    # -- inputs ------------------------------------------------------------------------------

    def _received(self, advert: Advertisement, src: IPAddress, age: float) -> None:
        """``age``: how long ago the kernel received it; the machine gets the arrival time."""
        arrival = self._require_loop().time() - age
        self._inputs += 1
        self._feed(self.machine.receive(advert, src, arrival))

    def _link_changed(self, running: bool) -> None:
        self.set_fault(f"link {self.interface}", not running)

    def _addresses_deleted(self, deleted: list[tuple[int, IPAddress]]) -> None:
        """Address events: which of ours went from the device it belongs on."""
        if self.machine.state is not State.MASTER:
            return  # only a master restores; our own removals come while leaving master
        vips = self.config.held_addresses
        lost = tuple(a for i, a in deleted if a in vips and i == self.addresses.index_of(a))
        if lost:
            self._feed(self.machine.address_lost(lost, self._require_loop().time()))

    def _address_events_lost(self) -> None:
        """The kernel dropped address events: look at the master's addresses afresh."""
        if self.machine.state is State.MASTER and self._loop is not None:
            self._loop.create_task(self._recheck_addresses())

    async def _recheck_addresses(self) -> None:
        try:
            present = await self.addresses.present(self.config.held_addresses)
        except Exception as exc:
            self._log.warning("vrrp_address_check_failed", error=str(exc))
            return
        missing = tuple(a for a in self.config.held_addresses if a not in present)
        if missing:
            self._feed(self.machine.address_lost(missing, self._require_loop().time()))

    def _on_timer(self) -> None:
        self._timer = None
        target, self._spin_to = self._spin_to, None
        if target is None:
            self._feed(self.machine.handle_timer(self._require_loop().time()))
            return
        # Woken SPIN_LEAD early (a timerfd never fires before its time): ask a copy of the
        # machine what it will do at the deadline and build those packets, then wait out the
        # rest here reading the socket, so that an advert that arrives in time still counts
        # (one that arrives within the last read, a few tens of microseconds, is taken as
        # after the deadline).
        prepared = self._prepare(target) if target - time.monotonic() > SPIN_LEAD / 2 else []
        inputs = self._inputs
        limit = time.monotonic() + 2 * SPIN_LEAD
        while True:  # at least one read, however late the wake-up was
            self.transport.receive_pending()
            now = time.monotonic()
            if now >= target or now >= limit or self._inputs != inputs:
                break
        if not prepared or self._inputs != inputs or self._in_flight:
            self._feed(self.machine.handle_timer(self._require_loop().time()))
            return
        # Nothing came in: the machine, at ``target``, does what its copy said. Its packets
        # (advert, address request, first GARP) leave now; the machine then runs for real and
        # what it returns beyond them is performed as usual.
        done = [action for action in prepared if self._perform_now(action)]
        actions = _advert_first(self.machine.handle_timer(target))
        if actions[: len(done)] == done:
            actions = actions[len(done) :]
        else:  # cannot happen (the machine is a pure function of its state and the time)
            self._action_errors += 1
            self._log.error("vrrp_takeover_mismatch", done=repr(done), asked=repr(actions))
        self._perform_later(actions, ordered=True)
        self._rearm()

    def _prepare(self, at: float) -> list[Action]:
        """What the machine will do first at ``at`` if nothing comes in before: its leading
        advert, address and GARP actions, their packets built (nothing is sent or changed)."""
        try:
            head: list[Action] = []
            for action in _advert_first(self.machine.preview_timer(at)):
                if isinstance(action, SendAdvert):
                    self.transport.prepare(self.config.advertisement(action.priority))
                elif isinstance(action, AddAddresses):
                    self.addresses.prepare(action.addresses)
                elif not isinstance(action, SendGratuitous):
                    break
                head.append(action)
                if isinstance(action, SendGratuitous):
                    break  # the first GARP round: the rest of the burst waits for the machine
            return head
        except Exception:  # only a head start: the takeover itself reports its errors
            self._log.debug("vrrp_takeover_prepare_failed", exc_info=True)
            return []

    def _feed(self, actions: list[Action]) -> None:
        self._perform_later(actions)
        self._rearm()

    def _rearm(self) -> None:
        """Wake the machine at its next deadline: on the timerfd, else with ``call_at``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.machine.next_deadline()
        if self._timerfd is not None:
            self._spin_to = None
            if (
                deadline is not None
                and self.machine.state is State.BACKUP
                and deadline - self._require_loop().time() > 2 * SPIN_LEAD
            ):
                self._spin_to = deadline  # the Master_Down_Timer: the takeover's start
                deadline -= SPIN_LEAD
            self._timerfd.arm(deadline)
            return
        if deadline is not None:
            loop = self._require_loop()
            # Linux lets a poll/epoll timeout run late by 0.1% of its length (timer slack:
            # 3.6 ms on a v2 Master_Down_Interval). Wake LEAD early and wait the rest in a
            # short poll; the machine ignores the early call and the timer is armed again.
            if deadline - loop.time() > 2 * WAKE_LEAD:
                deadline -= WAKE_LEAD
            self._timer = loop.call_at(deadline, self._on_timer)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("VRRP instance not started")
        return self._loop

    # -- actions -----------------------------------------------------------------------------

    def _perform_later(self, actions: list[Action], *, ordered: bool = False) -> None:
        """Perform at once what needs no await while nothing is queued or in flight (an advert
        leaves from the timer callback itself, not a loop iteration later behind whatever
        else is ready); queue the rest, and everything behind it, for the worker, in order."""
        for action in actions if ordered else _advert_first(actions):
            if self._in_flight == 0 and self._perform_now(action):
                continue
            self._in_flight += 1
            self._queue.put_nowait(action)
        self._confirm_addresses()

    def _confirm_addresses(self) -> None:
        """Read the kernel's answers to the address changes sent (after their GARPs)."""
        try:
            self.addresses.confirm()
        except Exception:
            self._action_errors += 1
            self._log.exception("vrrp_add_addresses_failed")

    async def _work(self) -> None:
        while True:
            action = await self._queue.get()
            try:
                if not self._perform_now(action):
                    await self._perform(action)
                self._confirm_addresses()
            except Exception:
                self._action_errors += 1
                self._log.exception("vrrp_action_failed", action=repr(action))
            finally:
                self._in_flight -= 1
                self._queue.task_done()

    def _perform_now(self, action: Action) -> bool:
        """Perform ``action`` if it needs no await (errors counted and logged); whether it did."""
        try:
            match action:
                case StateChanged(previous, state):
                    self._transitions[previous, state] += 1
                    self._log.info("vrrp_transition", **self._transition_fields(action))
                    if self.on_state is not None:
                        self.on_state(state)
                case SendAdvert(priority):
                    self.transport.send(self.config.advertisement(priority))
                case SendGratuitous(addresses):
                    self.addresses.gratuitous(addresses)
                case AddAddresses(addresses):
                    self.addresses.add_now(addresses)
                case RemoveAddresses(addresses):
                    self.addresses.remove_now(addresses)
                case RestoreAddresses(addresses):
                    for address in self.addresses.restore(addresses):
                        self._vips_restored += 1
                        self._log.warning("vip_restored", address=str(address))
                case _:
                    return False
        except Exception:
            self._action_errors += 1
            self._log.exception("vrrp_action_failed", action=repr(action))
        return True

    def _transition_fields(self, change: StateChanged) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "previous": str(change.previous),
            "state": str(change.state),
            "cause": change.cause,
            "trigger": str(change.event),
            "priority": self.machine.priority,
        }
        if change.source is not None:
            fields["source"] = str(change.source)
            fields["source_priority"] = change.source_priority
        if change.reason is not None:
            fields["reason"] = change.reason
        return fields

    async def _perform(self, action: Action) -> None:
        match action:
            case AddAddresses(addresses):
                await self.addresses.add(addresses)
            case RemoveAddresses(addresses):
                await self.addresses.remove(addresses)
            case _:
                raise AssertionError(f"not an awaited action: {action}")


def _advert_first(actions: list[Action]) -> list[Action]:
    """A takeover's state change (its log line and ``on_state`` callback: a print, a notify,
    the sync daemon, the network rules) goes after its advert, its addresses and its first
    gratuitous ARP, so that those leave first; everything else keeps the machine's order."""
    if (
        len(actions) > 1
        and isinstance(actions[0], StateChanged)
        and isinstance(actions[1], SendAdvert)
    ):
        rest = actions[1:]
        at = next((i for i, a in enumerate(rest) if isinstance(a, SendGratuitous)), len(rest) - 1)
        return [*rest[: at + 1], actions[0], *rest[at + 1 :]]
    return actions
