"""The sync daemon follows the role: pure plan, the in-memory kernel's rules, the wire format."""

from __future__ import annotations

import errno

import pytest

from director.config.vrrp import SyncDaemon as Settings
from director.ipvs import messages as m
from director.ipvs.kernel import KernelError, SyncDaemon, SyncState
from director.ipvs.memory import MemoryIPVS
from director.ipvs.netlink import daemon_payload, parse_daemon, reference_payload
from director.role import Role
from director.sync_daemon import SyncDaemonFollower, SyncPlan, plan, wanted

MASTER = SyncDaemon(SyncState.MASTER, "eth1", 7)
BACKUP = SyncDaemon(SyncState.BACKUP, "eth1", 7)
SETTINGS = Settings(interface="eth1", sync_id=7)


def test_wanted_by_role() -> None:
    assert wanted(SETTINGS, Role.MASTER) == {MASTER}
    assert wanted(SETTINGS, Role.BACKUP) == {BACKUP}
    assert wanted(SETTINGS, Role.FAULT) == frozenset()
    assert wanted(None, Role.MASTER) == frozenset()


@pytest.mark.parametrize(
    ("want", "running", "expected"),
    [
        ({MASTER}, [], SyncPlan((), (MASTER,))),
        ({MASTER}, [MASTER], SyncPlan((), ())),
        ({MASTER}, [BACKUP], SyncPlan((SyncState.BACKUP,), (MASTER,))),
        ({BACKUP}, [MASTER, BACKUP], SyncPlan((SyncState.MASTER,), ())),
        (set(), [MASTER, BACKUP], SyncPlan((SyncState.MASTER, SyncState.BACKUP), ())),
        # another interface or sync id is a restart
        (
            {MASTER},
            [SyncDaemon(SyncState.MASTER, "eth2", 7)],
            SyncPlan((SyncState.MASTER,), (MASTER,)),
        ),
        (
            {BACKUP},
            [SyncDaemon(SyncState.BACKUP, "eth1", 8)],
            SyncPlan((SyncState.BACKUP,), (BACKUP,)),
        ),
    ],
)
def test_plan(want: set[SyncDaemon], running: list[SyncDaemon], expected: SyncPlan) -> None:
    assert plan(frozenset(want), running) == expected


def test_memory_kernel_refuses_what_the_kernel_refuses() -> None:
    k = MemoryIPVS()
    k.start_sync_daemon(MASTER)
    with pytest.raises(KernelError) as info:
        k.start_sync_daemon(MASTER)
    assert info.value.errno == errno.EEXIST
    assert "starting the master sync daemon on eth1 (sync id 7)" in str(info.value)
    k.start_sync_daemon(BACKUP)  # one of each state may run at once
    assert k.sync_daemons() == [MASTER, BACKUP]
    k.stop_sync_daemon(SyncState.MASTER)
    with pytest.raises(KernelError) as info:
        k.stop_sync_daemon(SyncState.MASTER)
    assert info.value.errno == errno.ESRCH
    k.interfaces = frozenset({"eth0"})
    with pytest.raises(KernelError) as info:
        k.start_sync_daemon(MASTER)
    assert info.value.errno == errno.ENODEV


def test_wire_matches_pyroute2_reference() -> None:
    ours = daemon_payload(SyncState.MASTER, MASTER)
    ref = reference_payload(
        m.CMD_NEW_DAEMON,
        [
            (
                "IPVS_CMD_ATTR_DAEMON",
                {
                    "attrs": [
                        ("IPVS_DAEMON_ATTR_STATE", 1),
                        ("IPVS_DAEMON_ATTR_MCAST_IFN", "eth1"),
                        ("IPVS_DAEMON_ATTR_SYNC_ID", 7),
                    ]
                },
            )
        ],
    )
    assert ours == ref
    assert parse_daemon(ours) == MASTER
    stop = daemon_payload(SyncState.BACKUP)
    ref = reference_payload(
        m.CMD_DEL_DAEMON,
        [("IPVS_CMD_ATTR_DAEMON", {"attrs": [("IPVS_DAEMON_ATTR_STATE", 2)]})],
    )
    assert stop == ref
    assert parse_daemon(b"") is None


@pytest.mark.asyncio
async def test_follower_switches_with_the_role() -> None:
    k = MemoryIPVS()
    follower = SyncDaemonFollower(k, SETTINGS)
    await follower(Role.BACKUP)
    assert k.sync_daemons() == [BACKUP]
    await follower(Role.MASTER)
    assert k.sync_daemons() == [MASTER]
    requests = k.requests
    await follower(Role.MASTER)  # unchanged: one read, no change
    assert k.requests == requests + 1
    assert k.sync_daemons() == [MASTER]
    await follower(Role.FAULT)
    assert k.sync_daemons() == []
    await follower(Role.BACKUP)
    # a reload with another sync id restarts it; removing the section stops it
    await follower.update(Settings(interface="eth1", sync_id=8))
    assert k.sync_daemons() == [SyncDaemon(SyncState.BACKUP, "eth1", 8)]
    await follower.update(None)
    assert k.sync_daemons() == []
    await follower(Role.MASTER)
    assert k.sync_daemons() == []  # no section: left alone


@pytest.mark.asyncio
async def test_follower_without_config_leaves_daemons_alone() -> None:
    k = MemoryIPVS()
    k.start_sync_daemon(BACKUP)  # started by hand
    follower = SyncDaemonFollower(k, None)
    await follower(Role.MASTER)
    await follower.stop()
    assert k.sync_daemons() == [BACKUP]


@pytest.mark.asyncio
async def test_follower_reports_kernel_errors_and_stop_clears() -> None:
    k = MemoryIPVS()
    k.interfaces = frozenset({"eth0"})
    follower = SyncDaemonFollower(k, SETTINGS)
    with pytest.raises(KernelError, match="No such device"):
        await follower(Role.MASTER)
    assert follower.errors == 1 and k.sync_daemons() == []
    k.interfaces = None
    await follower(Role.MASTER)
    await follower.stop()
    assert k.sync_daemons() == []


@pytest.mark.asyncio
async def test_apply_repairs_a_daemon_stopped_by_hand() -> None:
    k = MemoryIPVS()
    follower = SyncDaemonFollower(k, SETTINGS)
    await follower(Role.MASTER)
    k.stop_sync_daemon(SyncState.MASTER)  # ipvsadm --stop-daemon master
    await follower.apply()  # the daemon's periodic resync
    assert k.sync_daemons() == [MASTER]


BOTH = Settings(interface="eth1", sync_id=7, mode="both")


def test_mode_both_wants_both_daemons_whatever_the_role() -> None:
    for role in Role:
        assert wanted(BOTH, role) == {MASTER, BACKUP}, role


@pytest.mark.asyncio
async def test_follower_in_mode_both_and_switching_modes_on_reload() -> None:
    k = MemoryIPVS()
    follower = SyncDaemonFollower(k, BOTH)
    await follower(Role.MASTER)
    assert k.sync_daemons() == [MASTER, BACKUP]
    requests = k.requests
    await follower(Role.FAULT)  # the role does not matter: nothing to do
    assert k.requests == requests + 1
    assert k.sync_daemons() == [MASTER, BACKUP]
    # a reload back to mode = "role": the backup of a director in fault goes too
    await follower.update(SETTINGS)
    assert k.sync_daemons() == []
    await follower(Role.BACKUP)
    assert k.sync_daemons() == [BACKUP]
    await follower.update(BOTH)  # and to "both" again: the master daemon joins it
    assert k.sync_daemons() == [MASTER, BACKUP]
    await follower.stop()
    assert k.sync_daemons() == []


def test_mode_both_has_no_instance() -> None:
    from director.config import ConfigError, parse_config

    text = (
        '[[vrrp_instance]]\nname = "VI_1"\ninterface = "eth0"\nvrid = 1\npriority = 100\n'
        'virtual_addresses = ["198.18.0.10/24"]\n'
        '[sync_daemon]\ninterface = "eth1"\nmode = "both"\ninstance = "VI_1"\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    [problem] = info.value.problems
    assert problem.location == "sync_daemon.instance"
    assert 'with mode = "both" no role drives the sync daemons' in problem.message
    assert 'found "VI_1"' in problem.message
    with pytest.raises(ConfigError) as info:
        parse_config('[sync_daemon]\ninterface = "eth1"\nmode = "active"\n', "t.toml")
    assert info.value.problems[0].location == "sync_daemon.mode"
    parse_config('[sync_daemon]\ninterface = "eth1"\nmode = "both"\n')
