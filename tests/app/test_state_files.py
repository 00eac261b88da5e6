"""State files: one atomic write; corrupt files are reported and never crash the director nor
cost a service it cannot prove it owns."""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path

import pytest

from director.app import Director
from director.intents import Intents
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Dest, DestKey, Protocol, Service, ServiceKey
from director.ipvs.ops import AddDest, AddService
from director.reconcile.owned import FileOwnedStore
from director.statefile import StateFileError, load_json, write_atomic
from tests.app.conftest import run, service, write
from tests.helpers.director import running, world_in
from tests.helpers.servers import NamespaceLoop

FOREIGN = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.99"), 443)
OURS = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.20"), 80)


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.json"
    write_atomic(path, b"one")
    first = path.stat().st_ino
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert path.stat().st_ino != first  # a new file renamed over the old one, not rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_a_failed_write_changes_nothing_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.mkdir()  # the rename onto it fails, as a full disk or a read-only mount would
    (target / "keep").write_text("")
    with pytest.raises(IsADirectoryError):
        write_atomic(target, b"new")
    assert (target / "keep").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_load_json_names_the_file_and_the_fault(tmp_path: Path) -> None:
    def shape(doc: object) -> dict[str, int]:
        if not isinstance(doc, dict):
            raise ValueError(f"expected an object, found {type(doc).__name__}")
        return doc

    path = tmp_path / "s.json"
    assert load_json(path, shape) is None
    path.write_text("{")
    with pytest.raises(StateFileError, match=r"s\.json: not JSON"):
        load_json(path, shape)

    path.write_text("[1]")
    with pytest.raises(StateFileError, match=r"s\.json: expected an object, found list"):
        load_json(path, shape)


@pytest.mark.parametrize(
    ("content", "salvaged"),
    [
        ('{"services": [null]}', False),  # the crash: AttributeError at start
        ('{"services": ["tcp:198.18.0.99:443", null, 7, "udp:nonsense"]}', True),
        ("{not json", False),
        ('{"services": {"a": 1}}', False),
        ('["tcp:198.18.0.99:443"]', False),
        ('{"services": ["fwm:ipv5:3", "tcp:198.18.0.99:99999", "sctp:198.18.0.99"]}', False),
        (b"\xff\xfe garbage".decode("latin-1"), False),
    ],
)
@pytest.mark.netns
def test_a_corrupt_owned_services_file_is_reported_and_owns_nothing_unproven(
    content: str, salvaged: bool, tmp_path: Path, inside: NamespaceLoop
) -> None:
    """A service in the kernel that is not in the config is removed only when the file names
    it correctly (it was ours); a corrupt file never makes the director remove it."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "owned-services.json").write_text(content)
    kernel = MemoryIPVS()
    kernel.execute(
        [
            AddService(Service(FOREIGN, "rr")),
            AddDest(FOREIGN, Dest(DestKey.of(ipaddress.IPv4Address("198.18.1.9"), 443))),
        ]
    )
    path = write(tmp_path, service())
    world = world_in(tmp_path, path, kernel=kernel)

    async def scenario() -> list[str]:
        async with running(world) as r:
            return list(r.director.engine.status.director_faults)

    faults = run(inside, scenario)
    assert len(faults) == 1
    assert str(state / "owned-services.json") in faults[0]
    assert (FOREIGN in kernel.table.services) is not salvaged
    assert OURS in kernel.table.services
    kept = [p.name for p in state.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1 and (state / kept[0]).read_text() == content
    # and the file is whole again: a restart reads it without complaint
    again = FileOwnedStore(state)
    assert OURS in again.load() and again.problem is None


@pytest.mark.netns
def test_a_corrupt_maintenance_file_keeps_the_drains_it_can_read(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    drains = [{"server": "198.18.1.22", "since": 1.0}, {"server": None}, "junk"]
    (state / "maintenance.json").write_text(json.dumps({"drains": drains}))
    kernel = MemoryIPVS()
    world = world_in(tmp_path, write(tmp_path, service()), kernel=kernel)

    async def scenario() -> tuple[list[str], dict[str, object]]:
        async with running(world) as r:
            return list(r.director.engine.status.director_faults), r.director.status()

    faults, status = run(inside, scenario)
    assert len(faults) == 1 and "maintenance.json" in faults[0] and "2 drain(s)" in faults[0]
    weights = {str(d.key): d.weight for d in kernel.table.dests[OURS].values()}
    assert weights == {"198.18.1.21:80": 1, "198.18.1.22:80": 0}  # the readable drain stands
    assert status["director_faults"] == faults


@pytest.mark.netns
def test_status_json_is_whole_after_every_sync(tmp_path: Path, inside: NamespaceLoop) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text("{garbage")
    world = world_in(tmp_path, write(tmp_path, service()), kernel=MemoryIPVS())

    async def scenario() -> None:
        director = Director(world.loader(world.config_path), world, Intents())
        await director.start()
        await director.stop()

    run(inside, scenario)
    status = json.loads((state / "status.json").read_text())
    assert status["last_sync"]["services"] == 1
