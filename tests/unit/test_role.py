"""The role broadcast: followers run in order, see every publish, and one failure stops none."""

from __future__ import annotations

import pytest

from director.role import Role, RoleBroadcast


@pytest.mark.asyncio
async def test_followers_run_in_order_and_survive_a_failing_one() -> None:
    seen: list[tuple[str, Role]] = []

    async def rules(role: Role) -> None:
        seen.append(("rules", role))

    async def broken(role: Role) -> None:
        raise OSError("nft failed")

    async def sync_daemon(role: Role) -> None:
        seen.append(("sync", role))

    roles = RoleBroadcast(Role.BACKUP)
    roles.follow("rules", rules)
    roles.follow("broken", broken)
    roles.follow("sync", sync_daemon)
    await roles.publish(Role.MASTER)
    await roles.publish(Role.MASTER)
    assert roles.role is Role.MASTER
    assert seen == [("rules", Role.MASTER), ("sync", Role.MASTER)] * 2


@pytest.mark.parametrize("role", list(Role))
def test_role_prints_its_name(role: Role) -> None:
    assert str(role) == role.name.lower()
