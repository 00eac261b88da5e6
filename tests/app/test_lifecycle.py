"""The application object: start, serve intents, reload (overlapping ones too), stop, and a
failure at each start step leaving nothing behind. In-memory kernel, in a network namespace
(VRRP on a veth to a silent peer, nft and rtnetlink see only the namespace)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from director.app import Director, StartError
from director.config import Config, load_config
from director.control.client import request
from director.control.protocol import ControlError
from director.desired import compile_table
from director.intents import Intents, Reload, ReloadRejected
from director.ipvs.kernel import IPVSKernel, KernelError
from director.ipvs.memory import MemoryIPVS
from director.ipvs.ops import Op, OpFailure
from tests.app.conftest import run, service, vrrp, write
from tests.helpers.director import Recorder, running, world_in
from tests.helpers.servers import NamespaceLoop

pytestmark = pytest.mark.netns
T = TypeVar("T")


def vrrp_runners(vrid: int) -> int:
    """Instances of ``vrid`` running anywhere in this process: their worker tasks on any loop
    and their threads (an instance on a thread of its own is named after its VRID too)."""
    name = f"vrrp-{vrid}"
    threads = sum(1 for t in threading.enumerate() if t.name == name)
    return threads + sum(1 for t in _all_tasks() if t.get_name() == name and not t.done())


def _all_tasks() -> list[asyncio.Task[Any]]:
    try:
        return list(asyncio.all_tasks())
    except RuntimeError:
        return []


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_start_serve_stop_programs_and_keeps_the_table(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    path = write(tmp_path, service())
    kernel = MemoryIPVS()
    told = Recorder()
    world = world_in(tmp_path, path, kernel=kernel, lifecycle=told)

    async def scenario() -> dict[str, Any]:
        async with running(world) as r:
            assert kernel.table == compile_table(load_config(path))
            assert told.events[-1].startswith("ready ")
            return r.director.status()

    status = run(inside, scenario)
    assert status["role"] == "master"
    assert [s["in_kernel"] for s in status["services"]] == [True]
    assert told.events[-1] == "stopping"
    assert len(kernel.table.services) == 1  # keep_table_on_stop: connections survive a restart
    on_disk = json.loads((tmp_path / "state/status.json").read_text())
    assert on_disk["last_sync"]["services"] == 1
    assert json.loads((tmp_path / "state/owned-services.json").read_text()) == {
        "services": ["tcp:198.18.0.20:80"]
    }
    assert (tmp_path / "sys/net/ipv4/ip_forward").read_text() == "1\n"


class Watched(Recorder):
    """A lifecycle under a systemd watchdog whose pings are a minute apart."""

    def watchdog_interval(self) -> float | None:
        return 60.0


def test_the_first_watchdog_ping_comes_as_serving_begins(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    """systemd's watchdog runs from READY; the work after READY (the config digest, the
    caches written) must not delay the first ping by a whole interval."""
    told = Watched()
    world = world_in(tmp_path, write(tmp_path, service()), lifecycle=told)

    async def scenario() -> None:
        async with running(world):
            for _ in range(100):
                if "watchdog" in told.events:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"no watchdog ping within 2 s of serving: {told.events}")

    run(inside, scenario)


def test_stop_removes_the_table_when_asked(tmp_path: Path, inside: NamespaceLoop) -> None:
    kernel = MemoryIPVS()
    world = world_in(tmp_path, write(tmp_path, service(keep="false")), kernel=kernel)

    async def scenario() -> None:
        async with running(world):
            assert len(kernel.table.services) == 1

    run(inside, scenario)
    assert kernel.table.services == {}


def test_reloads_good_bad_good(tmp_path: Path, inside: NamespaceLoop) -> None:
    path = write(tmp_path, service())
    kernel = MemoryIPVS()
    world = world_in(tmp_path, path, kernel=kernel)

    def weights() -> list[int]:
        return sorted(d.weight for d in next(iter(kernel.table.dests.values())).values())

    async def scenario() -> None:
        async with running(world) as r:
            path.write_text(service(weight=5))
            result = await r.director.ask(Reload("control"))
            assert isinstance(result, dict) and result["last_sync"]["operations"] == 1
            assert weights() == [1, 5]
            before = kernel.requests
            path.write_text(service(weight=-1) + "\n[bogus]\n")
            with pytest.raises(ReloadRejected) as rejected:
                await r.director.ask(Reload("control"))
            assert "weight" in str(rejected.value) and "bogus" in str(rejected.value)
            assert kernel.requests == before  # nothing reached the kernel
            assert weights() == [1, 5]
            status = r.director.status()
            assert "weight" in str(status["reload_error"])
            await r.director.engine.flush_status()
            on_disk = json.loads((tmp_path / "state/status.json").read_text())
            assert "bogus" in on_disk["reload_error"]
            path.write_text(service(weight=7))
            r.intents.put(Reload("signal"))  # SIGHUP: no answer, same queue
            for _ in range(100):
                if weights() == [1, 7]:
                    break
                await asyncio.sleep(0.02)
            assert weights() == [1, 7]
            assert r.director.status()["reload_error"] is None

    run(inside, scenario)


def test_overlapping_reloads_run_one_at_a_time_with_one_instance_per_vrid(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    """SIGHUP and directorctl reload at once, each changing the instance's priority (a
    restart of the instance): they are applied in turn and one instance runs at the end."""
    path = write(tmp_path, vrrp(priority=100))
    world = world_in(tmp_path, path, kernel=MemoryIPVS())

    async def scenario() -> tuple[int, int]:
        async with running(world) as r:
            for priority in (110, 120, 130):
                path.write_text(vrrp(priority=priority))
                r.intents.put(Reload("signal"))
                path.write_text(vrrp(priority=priority + 1))
                asks = [r.director.ask(Reload("control")) for _ in range(2)]
                await asyncio.gather(*asks)
            await asyncio.sleep(0.5)
            members = r.director.vrrp.summary()
            assert [m["priority"] for m in members] == [131]
            return len(members), vrrp_runners(51)

    assert run(inside, scenario) == (1, 1)
    assert vrrp_runners(51) == 0


def test_control_reload_answers_through_the_socket(tmp_path: Path, inside: NamespaceLoop) -> None:
    path = write(tmp_path, service())
    world = world_in(tmp_path, path, kernel=MemoryIPVS())
    sock = world.control_socket
    assert sock is not None

    async def scenario() -> tuple[object, str]:
        async with running(world):
            path.write_text(service(weight=3))
            ok = await asyncio.to_thread(request, sock, "reload")
            path.write_text("[daemon\n")
            try:
                await asyncio.to_thread(request, sock, "reload")
            except ControlError as exc:
                return ok, str(exc)
            return ok, ""

    ok, refused = run(inside, scenario)
    assert isinstance(ok, dict) and ok["last_sync"]["operations"] == 1
    assert refused.startswith("the config was rejected; still running the previous one")


# -- a failure at each step of start ----------------------------------------------------------


class FailingKernel(MemoryIPVS):
    def execute(self, ops: Sequence[Op]) -> list[OpFailure]:
        raise KernelError("applying the table", errno.EPERM)


async def _leftovers_fail(config: Config) -> list[str]:
    raise OSError(errno.ENODEV, "no such device (test)")


def _no_ipvs(load: bool) -> IPVSKernel:
    raise KernelError("opening the IPVS generic netlink family", errno.ENOENT)


STEPS: dict[str, tuple[str, dict[str, Any]]] = {
    "removing leftover virtual addresses": (service(), {"remove_leftovers": _leftovers_fail}),
    "opening IPVS": (service(), {"kernel": _no_ipvs}),
    "programming the IPVS table": (service(), {"kernel": FailingKernel()}),
    "starting VRRP": (
        service() + vrrp().replace('interface = "d0"', 'interface = "nosuch0"'),
        {},
    ),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_failed_start_says_where_and_leaves_nothing(
    step: str, tmp_path: Path, inside: NamespaceLoop
) -> None:
    text, world_args = STEPS[step]
    path = write(tmp_path, text)
    world = world_in(tmp_path, path, **world_args)
    sock = world.control_socket
    assert sock is not None

    async def scenario() -> tuple[set[str], set[str], list[str]]:
        await asyncio.sleep(0)
        tasks_before = {t.get_name() for t in asyncio.all_tasks()}
        fds_before = open_fds()
        director = Director(load_config(path), world, Intents())
        with pytest.raises(StartError) as failed:
            await director.start()
        assert failed.value.step == step
        await asyncio.sleep(0.05)  # anything cancelled gets to end
        left = [
            t.get_name()
            for t in asyncio.all_tasks()
            if t.get_name() not in tasks_before and t is not asyncio.current_task()
        ]
        return fds_before, open_fds(), left

    fds_before, fds_after, tasks_left = run(inside, scenario)
    assert tasks_left == []
    assert fds_after <= fds_before, f"left open: {sorted(fds_after - fds_before)}"
    assert not sock.exists()
    assert not world.kernel.available and not world.sync_kernel.available
    assert vrrp_runners(51) == 0


def test_a_listener_that_cannot_start_does_not_stop_the_director(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    path = write(tmp_path, service())
    world = world_in(tmp_path, path, kernel=MemoryIPVS())
    assert world.control_socket is not None
    world.control_socket.write_text("not a socket")  # refused: the director runs without it

    async def scenario() -> bool:
        async with running(world) as r:
            return bool(r.director.engine.status.last_sync["services"] == 1)

    assert run(inside, scenario)


# -- VRRP without ip_vs -----------------------------------------------------------------------


def test_a_vrrp_only_director_runs_without_ip_vs(tmp_path: Path, inside: NamespaceLoop) -> None:
    path = write(tmp_path, vrrp(priority=200))
    world = world_in(tmp_path, path, kernel=_no_ipvs)

    async def scenario() -> tuple[str, str, str]:
        async with running(world) as r:
            for _ in range(100):
                if r.director.status()["role"] == "master":
                    break
                await asyncio.sleep(0.02)
            role = str(r.director.status()["role"])
            path.write_text(vrrp(priority=200) + service())
            with pytest.raises(ReloadRejected) as rejected:
                await r.director.ask(Reload("control"))
            return role, str(rejected.value), str(r.director.status()["sysctl_problems"])

    role, rejected, sysctl = run(inside, scenario)
    assert role == "master"
    assert "ip_vs is not available" in rejected and "virtual services" in rejected
    assert sysctl == "[]"  # the net.ipv4.vs.* defaults are not forced on a kernel without it


def test_a_reload_drops_the_metric_series_of_removed_targets(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    checked = service() + '  [virtual_server.check]\n  type = "tcp"\n  interval = 0.1\n'
    checked += "  timeout = 0.1\n"
    path = write(tmp_path, checked)
    world = world_in(tmp_path, path, kernel=MemoryIPVS())

    async def scenario() -> tuple[str, str]:
        async with running(world) as r:
            await asyncio.sleep(0.4)  # a few probes each (they fail: nothing answers)
            before = r.director.metrics.render().decode()
            second = '  [[virtual_server.real_server]]\n  address = "198.18.1.22"\n'
            assert second in checked
            path.write_text(checked.replace(second, ""))
            await r.director.ask(Reload("control"))
            await asyncio.sleep(0.3)
            return before, r.director.metrics.render().decode()

    before, after = run(inside, scenario)
    probes = 'director_check_probes_total{result="failed",target="198.18.1.22:80",type="tcp"}'
    assert probes in before and probes not in after
    assert 'target="198.18.1.22:80"' not in after
    assert 'destination="198.18.1.22:80"' not in after
    assert 'director_check_probes_total{result="failed",target="198.18.1.21:80"' in after


class RefusingKernel(MemoryIPVS):
    """Accepts changes until told to refuse them all (a kernel error on the whole sync)."""

    refuse = False

    def execute(self, ops: Sequence[Op]) -> list[OpFailure]:
        if self.refuse and ops:
            raise KernelError("applying the table", errno.ENOMEM)
        return super().execute(ops)


def test_a_reload_the_kernel_refuses_still_applies_the_rest_and_says_so(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    path = write(tmp_path, service() + vrrp(priority=100))
    kernel = RefusingKernel()
    told = Recorder()
    world = world_in(tmp_path, path, kernel=kernel, lifecycle=told)

    async def scenario() -> tuple[object, list[object]]:
        async with running(world) as r:
            kernel.refuse = True
            path.write_text(service(weight=4) + vrrp(priority=120))
            result = await r.director.ask(Reload("control"))
            return result, [m["priority"] for m in r.director.vrrp.summary()]

    result, priorities = run(inside, scenario)
    assert isinstance(result, dict) and "Cannot allocate memory" in str(result["kernel_error"])
    assert priorities == [120]  # VRRP followed the new config
    assert "reloading" in told.events
    assert [e for e in told.events if e.startswith("ready")][-1].count("kernel error") == 1


class DigestAtReady(Recorder):
    """A lifecycle that notes, as READY is told, whether the peer check had its digest."""

    director: Director | None = None
    digest_at_ready: list[bool]

    def __init__(self) -> None:
        super().__init__()
        self.digest_at_ready = []

    def ready(self, status: str) -> None:
        assert self.director is not None
        self.digest_at_ready.append(self.director.peer.snapshot is not None)
        super().ready(status)


def test_without_peer_check_the_digest_is_made_right_after_ready(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    """Without [peer_check] the config digest (a child process) is nothing READY stands for:
    made after READY, still within the start."""
    path = write(tmp_path, service())
    told = DigestAtReady()
    world = world_in(tmp_path, path, kernel=MemoryIPVS(), lifecycle=told)

    async def scenario() -> bool:
        director = Director(load_config(path), world, Intents())
        told.director = director
        await director.start()
        try:
            return director.peer.snapshot is not None
        finally:
            await director.stop()

    after_start = run(inside, scenario)
    assert told.digest_at_ready == [False]
    assert after_start
