"""The network-rules service: follows the role and the config, keeps the kernel in step.

``set_role`` is a :class:`~director.role.RoleBroadcast` follower; ``apply`` is called on reload
and ``sync`` on the periodic resync (it repairs a table someone flushed by hand). Each sync reads
our table back, plans the difference (:func:`director.network.ruleset.plan`) and sends it as one
nft transaction, then brings the policy routes in line. Until the first role arrives the table
is left as found, so a restarting master keeps its marks and NAT until VRRP has decided.

Stopping the daemon leaves the rules in place (like the IPVS table, see ``keep_table_on_stop``):
a master being restarted keeps forwarding. :meth:`remove` takes everything away; the daemon calls
it on stop only when ``keep_table_on_stop = false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from director.config.model import Config
from director.network.nft import Nft, NftError
from director.network.routes import PolicyRoutes, RouteError, desired_routes, plan_routes
from director.network.ruleset import (
    FAMILY,
    JSON,
    Ruleset,
    compile_ruleset,
    full_replace,
    parse_table,
    plan,
)
from director.role import Role
from director.sysctl import PROC_SYS, apply_sysctls

log = structlog.get_logger("director")

RP_FILTER = "net.ipv4.conf.all.rp_filter"
ROLE_CHANGE = "role change"


class NetworkRules:
    def __init__(
        self,
        config: Config,
        nft: Nft | None = None,
        routes: PolicyRoutes | None = None,
        sysctl_root: Path | None = PROC_SYS,
    ) -> None:
        self.config = config
        self.nft = nft or Nft()
        self.routes = routes or PolicyRoutes()
        self.sysctl_root = sysctl_root  # None: never write sysctls (tests)
        self.role: Role | None = None
        self._lock = asyncio.Lock()
        self._stale_tables: set[str] = set()
        self._apply_task: asyncio.Task[None] | None = None
        self.last: dict[str, Any] = {}
        self.error: str | None = None  # the last sync's error, None after a good one
        # What the last good sync installed: a role change that wants the same (no rules, or
        # none that depend on the role) runs no nft at all; the periodic resync repairs drift.
        self._installed: Ruleset | None = None
        self._routes_synced = False

    async def set_role(self, role: Role) -> None:
        self.role = role
        await self.sync(ROLE_CHANGE)

    async def apply(self, config: Config) -> None:
        """A new (validated) config: apply what differs, in one nft transaction."""
        if config.network.table != self.config.network.table:
            self._stale_tables.add(self.config.network.table)
        self.config = config
        await self.sync("reload")

    def config_changed(self, config: Config) -> None:
        """The daemon reloaded ``config`` (called on the event loop): apply it soon, in order."""
        previous = self._apply_task

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            # errors are logged and kept in self.error; the next resync tries again
            with contextlib.suppress(NftError, RouteError):
                await self.apply(config)

        self._apply_task = asyncio.get_running_loop().create_task(run())

    async def resync(self) -> None:
        """The periodic full resync: repairs drift; errors are logged, never raised."""
        with contextlib.suppress(NftError, RouteError):
            await self.sync("resync")

    async def sync(self, reason: str = "resync") -> list[JSON]:
        """Bring our table and policy routes to what config and role want; the nft commands sent.

        Raises NftError (nothing changed in nftables) or RouteError (after trying every route).
        """
        async with self._lock:
            started = time.monotonic()
            cmds: list[JSON] = []
            try:
                if self.role is not None:
                    cmds = await self._sync_table(reason)
                route_ops: list[str] = []
                if reason != ROLE_CHANGE or not self._routes_synced:  # routes ignore the role
                    route_ops = await self._sync_routes()
                    self._routes_synced = True
            except (NftError, RouteError) as exc:
                self.error = str(exc)
                log.error("rules_sync_failed", reason=reason, error=str(exc))
                raise
            self.error = None
            self.last = {
                "reason": reason,
                "role": str(self.role) if self.role else None,
                "nft_commands": len(cmds),
                "route_operations": len(route_ops),
                "seconds": round(time.monotonic() - started, 4),
                "at": time.time(),
            }
            quiet = not cmds and not route_ops and reason == "resync"
            (log.debug if quiet else log.info)("rules_synced", **self.last)
            return cmds

    async def _sync_table(self, reason: str) -> list[JSON]:
        assert self.role is not None
        desired = compile_ruleset(self.config, self.role)
        if reason == ROLE_CHANGE and desired == self._installed and not self._stale_tables:
            return []
        self._installed = None
        listing = await self.nft.list_table(desired.table)
        observed = parse_table(listing, desired.table) if listing is not None else None
        cmds = plan(desired, observed)
        stale = sorted(self._stale_tables - {desired.table})
        for name in stale:  # a renamed table: the old one goes in the same transaction
            table = {"family": FAMILY, "name": name}
            cmds = [{"add": {"table": table}}, {"delete": {"table": table}}, *cmds]
        rules = len(desired.rules())
        doing = (
            f"applying table {FAMILY} {desired.table} ({rules} rule{'s' if rules != 1 else ''}, "
            f"role {self.role}, {reason})"
        )
        try:
            await self.nft.apply(cmds, doing)
        except NftError as exc:
            culprit = await self._culprit(desired)
            raise NftError(f"{exc}{culprit}; the previous ruleset stays in force") from None
        self._stale_tables.clear()
        self._installed = desired
        return cmds

    async def _culprit(self, desired: Ruleset) -> str:
        """After a refused batch: the first rule nft refuses on its own, as " (in KEY: TEXT)"."""
        for chain in desired.chains:
            for rule in chain.rules:
                alone = Ruleset(desired.table, (replace(chain, rules=(rule,)),), desired.family)
                try:
                    await self.nft.check(full_replace(alone)[2:], f"checking {rule.key}")
                except NftError:
                    return f" (in {rule.key}: {rule.text})"
        return ""

    async def _sync_routes(self) -> list[str]:
        desired = desired_routes(self.config)
        try:
            observed = await self.routes.observe(routes_wanted=bool(desired.routes))
        except OSError as exc:
            raise RouteError(f"reading policy routes: {exc}") from exc
        ops = plan_routes(desired, observed)
        errors = await self.routes.apply(ops)
        for op in ops:
            log.info("policy_route_changed", change=str(op))
        if desired.rules and self.config.network.rp_filter == "loose":
            self._loose_rp_filter()
        if errors:
            raise RouteError("; ".join(errors))
        return [str(op) for op in ops]

    def _loose_rp_filter(self) -> None:
        """Strict reverse-path filtering drops marked packets routed to lo: make it loose."""
        if self.sysctl_root is None:
            return
        path = self.sysctl_root / RP_FILTER.replace(".", "/")
        try:
            strict = path.read_text().strip() == "1"
        except OSError:
            return
        if strict:
            writes, problems = apply_sysctls([(RP_FILTER, "2")], self.sysctl_root)
            for name, value in writes:
                log.info("sysctl_set", name=name, value=value, why="policy_route")
            for problem in problems:
                log.error("sysctl_problem", problem=str(problem))

    async def remove(self) -> None:
        """Delete our table and our policy routes (keep_table_on_stop = false); errors logged."""
        try:
            await self._remove()
        except (NftError, RouteError) as exc:
            log.error("rules_remove_failed", error=str(exc))
            raise
        except OSError as exc:
            log.error("rules_remove_failed", error=str(exc))
            raise RouteError(f"removing policy routes: {exc}") from exc

    async def _remove(self) -> None:
        async with self._lock:
            self._installed, self._routes_synced = None, False
            table = {"family": FAMILY, "name": self.config.network.table}
            await self.nft.apply(
                [{"add": {"table": table}}, {"delete": {"table": table}}],
                f"removing table {FAMILY} {self.config.network.table}",
            )
            observed = await self.routes.observe(routes_wanted=False)
            ops = plan_routes(desired_routes(Config()), observed)
            errors = await self.routes.apply(ops)
            log.info("rules_removed", table=self.config.network.table, routes=len(ops))
            if errors:
                raise RouteError("; ".join(errors))
