"""``directord``: the composition root. The only module that touches signals and systemd.

Signal handlers only record intent (reload, stop) on a queue; the main loop acts on it, one
action at a time, and also runs the periodic full resync and the systemd watchdog.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from checks.model import HealthChanged, ProbeResult
from checks.probes.result import Target
from director import __version__, logs
from director.commands import handlers
from director.config import Config, ConfigError, check_config, load_config
from director.control import ControlError, ControlServer, Handler
from director.desired import compile_table
from director.engine import Engine
from director.health import HealthChecks, ProbeJob
from director.ipvs.kernel import KernelError
from director.ipvs.netlink import NetlinkIPVS
from director.maintenance import Maintenance, MaintenanceError
from director.metrics import Metrics, MetricsServer
from director.network import NetworkRules, NftError, RouteError
from director.reconcile.owned import FileOwnedStore
from director.reconcile.plan import plan
from director.role import RoleBroadcast
from director.sdnotify import Notifier
from director.sync_daemon import SyncDaemonFollower
from director.vrrp_service import VrrpService
from director.vrrp_service import cleanup as vrrp_cleanup

DEFAULT_CONFIG = Path("/etc/director/director.toml")
log = structlog.get_logger("director")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="directord", description="IPVS director daemon")
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="config file")
    p.add_argument("--check-config", type=Path, metavar="FILE", help="validate FILE and exit")
    p.add_argument(
        "--dry-run", action="store_true", help="print the IPVS changes the config needs and exit"
    )
    p.add_argument("--log-format", choices=["json", "logfmt"], help="overrides [daemon]")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--state-dir", type=Path, help="overrides [daemon] state_dir")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove every configured VRRP address and stop the sync daemon, then exit "
        "(ExecStopPost after a crash)",
    )
    p.add_argument("--version", action="version", version=f"directord {__version__}")
    return p.parse_args(argv)


def open_kernel() -> NetlinkIPVS:
    """The netlink IPVS handle; loads ip_vs once if its generic-netlink family is missing."""
    try:
        return NetlinkIPVS()
    except KernelError:
        subprocess.run(["modprobe", "ip_vs"], check=False, capture_output=True)
        return NetlinkIPVS()


async def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    logs.configure(
        args.log_format or config.daemon.log_format, args.log_level or config.daemon.log_level
    )
    state_dir = args.state_dir or Path(config.daemon.state_dir)
    notifier = Notifier()
    try:
        maintenance = Maintenance(state_dir / "maintenance.json").load()
    except MaintenanceError as exc:
        log.error("start_failed", error=str(exc))
        notifier.notify(f"STATUS=start failed: {exc}")
        return 1
    try:
        kernel = open_kernel()
    except KernelError as exc:
        log.error("start_failed", error=str(exc))
        notifier.notify(f"STATUS=start failed: {exc}")
        return 1
    engine = Engine(
        config,
        args.config,
        kernel,
        FileOwnedStore(state_dir),
        load_config,
        status_path=state_dir / "status.json",
        maintenance=maintenance,
    )
    metrics = Metrics()

    def on_health(changes: list[HealthChanged]) -> None:
        ids = [(str(c.check_id[0]), str(c.check_id[1])) for c in changes]  # type: ignore[index]
        metrics.health_changed(ids, time.time())
        engine.on_health(changes)
        vrrp.health_changed()  # track_checks quorums

    labels: dict[Target, str] = {}  # per probe, so formatted once per target

    def on_probe(job: ProbeJob, result: ProbeResult) -> None:
        target = labels.get(job.target)
        if target is None:
            target = labels[job.target] = f"{job.target.address}:{job.target.port}"
        metrics.probed(job.kind, target, result.ok, result.latency)

    checks = HealthChecks(on_health, max_in_flight=config.daemon.max_concurrent_probes)
    checks.on_probe = on_probe
    # nftables marks/NAT and policy routes (director.network): they follow the role and
    # every reload; a restart or stop keeps them, like the IPVS table.
    rules = NetworkRules(config)

    def on_config(new: Config) -> None:
        checks.update(new)
        rules.config_changed(new)

    engine.on_config = on_config
    engine.checks_summary = checks.summary
    engine.on_synced = metrics.synced
    engine.on_reloaded = metrics.reloaded
    # VRRP publishes the role; the sync daemon, network rules and notify hooks follow it.
    roles = RoleBroadcast()
    roles.follow("rules", rules.set_role)
    # The IPVS connection-sync daemon, on its own netlink socket (the engine's is used from
    # worker threads); VRRP instances, tracking, sync groups and notify hooks publish the role.
    try:
        sync_kernel = open_kernel()
    except KernelError as exc:
        log.error("start_failed", error=str(exc))
        notifier.notify(f"STATUS=start failed: {exc}")
        kernel.close()
        return 1
    syncd = SyncDaemonFollower(sync_kernel, config.sync_daemon)
    roles.follow("sync_daemon", syncd)
    vrrp = VrrpService(config, roles.publish, health=lambda: engine.health)
    # Per VRRP instance, for directorctl status, doctor and metrics: the VRRP service plugs in
    # here (vrrp_summary = service.summary). Each dict: name, state ("master"/"backup"/"fault"/
    # "init"), priority, transitions, adverts_received, adverts_dropped ({reason: count}), and
    # peer (the master address this instance hears) or peers.
    vrrp_summary: Callable[[], list[dict[str, object]]] = vrrp.summary
    metrics.sources.stats = lambda: engine.stats
    metrics.sources.checks = checks.summary
    metrics.sources.role = lambda: str(roles.role)
    metrics.sources.vrrp = lambda: vrrp_summary()
    metrics.sources.drains = lambda: len(engine.maintenance.drains)
    loop = asyncio.get_running_loop()
    intents: asyncio.Queue[str] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGHUP, intents.put_nowait, "reload")
    loop.add_signal_handler(signal.SIGTERM, intents.put_nowait, "stop")
    loop.add_signal_handler(signal.SIGINT, intents.put_nowait, "stop")
    checks.update(config)
    try:
        await engine.start()
    except KernelError as exc:
        notifier.notify(f"STATUS=start failed: {exc}")
        await checks.stop()
        return 1
    try:
        await vrrp.start()  # publishes the first role (master without VRRP instances)
    except (OSError, ValueError) as exc:
        log.error("start_failed", error=f"VRRP: {exc}")
        notifier.notify(f"STATUS=start failed: VRRP: {exc}")
        await checks.stop()
        sync_kernel.close()
        kernel.close()
        return 1

    async def reload() -> bool:
        notifier.notify("RELOADING=1")
        ok = await engine.reload()
        if ok:
            try:
                await vrrp.reload(engine.config)
            except (OSError, ValueError) as exc:  # e.g. a new instance's interface is missing
                log.error("vrrp_reload_failed", error=str(exc))
            await syncd.update(engine.config.sync_daemon)
        notifier.notify("READY=1", f"STATUS={engine.status.summary()}")
        return ok

    servers = await start_servers(
        config.daemon.control_socket,
        config.daemon.metrics_address,
        handlers(engine, checks.summary, lambda: str(roles.role), lambda: vrrp_summary(), reload),
        metrics,
    )
    with contextlib.suppress(KernelError):
        await engine.refresh_stats()
    notifier.notify("READY=1", f"STATUS={engine.status.summary()}")
    log.info("ready", version=__version__, config=str(args.config))
    watchdog = notifier.watchdog_interval()
    next_resync = loop.time() + engine.config.daemon.resync_interval
    next_ping = loop.time() + watchdog if watchdog else None
    next_stats = loop.time() + engine.config.daemon.stats_interval
    try:
        while True:
            deadline = min(t for t in (next_resync, next_ping, next_stats) if t is not None)
            try:
                intent = await asyncio.wait_for(intents.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                intent = ""
            now = loop.time()
            if next_ping is not None and watchdog and now >= next_ping:
                notifier.notify("WATCHDOG=1")
                next_ping = now + watchdog
            if intent == "stop":
                notifier.notify("STOPPING=1")
                await vrrp.stop()  # priority 0: the backup takes over at once
                with contextlib.suppress(KernelError):  # logged
                    await syncd.stop()
                await checks.stop()
                await engine.stop()
                if not engine.config.daemon.keep_table_on_stop:
                    with contextlib.suppress(NftError, RouteError):  # logged
                        await rules.remove()
                return 0
            try:
                if intent == "reload":
                    await reload()
                elif now >= next_resync:
                    await engine.resync()
                    await rules.resync()
                    await syncd.apply()  # a sync daemon stopped by hand comes back
                    notifier.notify(f"STATUS={engine.status.summary()}")
                if now >= next_stats:
                    next_stats = now + engine.config.daemon.stats_interval
                    await engine.refresh_stats()
            except KernelError as exc:
                notifier.notify(f"STATUS=kernel error: {exc}")
            if now >= next_resync or intent == "reload":
                next_resync = now + engine.config.daemon.resync_interval
    finally:
        for server in servers:
            await server.stop()
        kernel.close()
        sync_kernel.close()
        notifier.close()


async def start_servers(
    control_socket: str,
    metrics_address: str,
    commands: dict[str, Handler],
    metrics: Metrics,
) -> list[ControlServer | MetricsServer]:
    """The control socket and the metrics endpoint. Either failing is logged and the daemon
    runs on without it: the director's job is the traffic, not its own tooling."""
    started: list[ControlServer | MetricsServer] = []
    servers: list[ControlServer | MetricsServer] = [ControlServer(Path(control_socket), commands)]
    if metrics_address:
        servers.append(MetricsServer(metrics, metrics_address))
    for server in servers:
        try:
            await server.start()
        except (OSError, ControlError) as exc:
            what = "control socket" if isinstance(server, ControlServer) else "metrics"
            log.error("listen_failed", what=what, error=str(exc))
        else:
            started.append(server)
    return started


def dry_run(config_path: Path, state_dir: Path | None) -> int:
    config = load_config(config_path)
    owned = FileOwnedStore(state_dir or Path(config.daemon.state_dir)).load()
    kernel = open_kernel()
    try:
        ops = plan(compile_table(config), kernel.dump(), owned)
    finally:
        kernel.close()
    for op in ops:
        print(op.describe())
    print(f"{len(ops)} operation(s)")
    return 0


def cleanup(config_path: Path) -> int:
    """Remove the VIPs and sync daemons a crashed ``directord`` may have left behind."""
    config = load_config(config_path)
    removed = asyncio.run(vrrp_cleanup(config))
    stopped = []
    if config.sync_daemon is not None:
        kernel = open_kernel()
        try:
            for daemon in kernel.sync_daemons():
                kernel.stop_sync_daemon(daemon.state)
                stopped.append(str(daemon))
        finally:
            kernel.close()
    print(f"removed {len(removed)} virtual address(es): {', '.join(removed) or '-'}")
    print(f"stopped {len(stopped)} sync daemon(s): {', '.join(stopped) or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_config is not None:
        ok, message = check_config(args.check_config)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    try:
        if args.cleanup:
            return cleanup(args.config)
        if args.dry_run:
            return dry_run(args.config, args.state_dir)
        return asyncio.run(run(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KernelError as exc:
        print(f"directord: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
