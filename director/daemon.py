"""``directord``: the composition root. Arguments, logging, systemd; then one :class:`Director`.

The only module that touches signals, ``sd_notify`` and the process's limits. Signal handlers
only put an intent on the director's queue (reload, stop); the director applies it
(:mod:`director.app`). ``--check-config``, ``--dry-run`` and ``--cleanup`` are one-shot modes.

Before it imports the daemon proper (about a second on a server, tens of seconds in an emulated
guest), ``main`` removes the VIPs a crashed run left behind (:mod:`director.early`): the imports
of the rest are inside the functions that need them, on purpose. It first has pyroute2 and
aiohttp imported lean (:mod:`director.lean`) and the code of the methods of its dataclasses taken
from a cache (:mod:`director.codecache`); the daemon then imports what the config needs (no
HTTP client without HTTP checks or ``[peer]``, no probe without a check, no BGP speaker without
``[bgp]``; ``tests/app/test_imports.py`` says which modules a start leaves out). A start's
arguments are read without argparse (:func:`start_args`); anything else goes to argparse.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from director import codecache

# Before the imports below: they create some 30 dataclasses (structlog's, director.logs', and
# vrrp's, through director.early), whose 123 methods were otherwise compiled from source before
# main() installed the cache (0.3 s of an emulated guest's start, under a profiler). Idempotent:
# main() installs it too, for callers that import this module another way.
codecache.install()

import structlog  # noqa: E402

from director import __version__, early, lean, logs  # noqa: E402

if TYPE_CHECKING:
    from director.app import World
    from director.config import Config
    from director.ipvs.netlink import NetlinkIPVS
    from director.sdnotify import Notifier

DEFAULT_CONFIG = Path("/etc/director/director.toml")
log = structlog.get_logger("director")


LOG_FORMATS: tuple[logs.LogFormat, ...] = ("json", "logfmt", "journal")
LOG_LEVELS = ("debug", "info", "warning", "error")
# a start's options, as the unit and the daemon's own tests give them: exact names, a value each
_START_OPTIONS = {
    "-c": "config",
    "--config": "config",
    "--log-format": "log_format",
    "--log-level": "log_level",
    "--state-dir": "state_dir",
}


@dataclass(frozen=True)
class Args:
    """directord's arguments (:func:`parse_args`)."""

    config: Path = DEFAULT_CONFIG
    check_config: Path | None = None
    dry_run: bool = False
    log_format: logs.LogFormat | None = None
    log_level: str | None = None
    state_dir: Path | None = None
    cleanup: bool = False


def parse_args(argv: list[str] | None = None) -> Args:
    """The arguments: a start's (:func:`start_args`) without argparse, anything else (help,
    ``--version``, the one-shot modes, abbreviations, errors) by argparse, as always."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return start_args(argv) or _parse_with_argparse(argv)


def start_args(argv: list[str]) -> Args | None:
    """The arguments of a start, read without importing argparse (and gettext and locale with
    it: a sixth of a second of an emulated guest's start): only ``-c``/``--config``,
    ``--log-format``, ``--log-level`` and ``--state-dir``, spelt out, each followed by a valid
    value that does not start with ``-``. None for anything else, which argparse then reads;
    where this reads, argparse reads the same (``tests/unit/test_daemon_args.py``)."""
    if len(argv) % 2:
        return None
    values: dict[str, str] = {}
    for option, value in zip(argv[::2], argv[1::2], strict=True):
        name = _START_OPTIONS.get(option)
        if name is None or value.startswith("-"):
            return None
        values[name] = value
    log_format, log_level = values.get("log_format"), values.get("log_level")
    if log_format not in (None, *LOG_FORMATS) or log_level not in (None, *LOG_LEVELS):
        return None
    state_dir = values.get("state_dir")
    return Args(
        config=Path(values["config"]) if "config" in values else DEFAULT_CONFIG,
        log_format=log_format,
        log_level=log_level,
        state_dir=Path(state_dir) if state_dir is not None else None,
    )


def _parse_with_argparse(argv: list[str]) -> Args:
    import argparse

    p = argparse.ArgumentParser(prog="directord", description="IPVS director daemon")
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="config file")
    p.add_argument("--check-config", type=Path, metavar="FILE", help="validate FILE and exit")
    p.add_argument(
        "--dry-run", action="store_true", help="print the IPVS changes the config needs and exit"
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="overrides [daemon] log_format. json and logfmt lines go to stderr, or natively to "
        "the journal (one field per key, the line as MESSAGE) when stderr is the journal "
        "($JOURNAL_STREAM); journal: always natively to the journal",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--state-dir", type=Path, help="overrides [daemon] state_dir")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove every configured VRRP address and stop the sync daemon, then exit "
        "(ExecStopPost after a crash)",
    )
    p.add_argument("--version", action="version", version=f"directord {__version__}")
    return Args(**vars(p.parse_args(argv)))


def open_kernel(load: bool = True) -> NetlinkIPVS:
    """The netlink IPVS handle; with ``load``, loads ip_vs once if its generic-netlink family
    is missing."""
    from director.ipvs.kernel import KernelError
    from director.ipvs.netlink import NetlinkIPVS

    try:
        return NetlinkIPVS()
    except KernelError:
        if not load:
            raise
        subprocess.run(["modprobe", "ip_vs"], check=False, capture_output=True)
        return NetlinkIPVS()


class Systemd:
    """The director's :class:`~director.app.Lifecycle` under systemd (``Type=notify``)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def ready(self, status: str) -> None:
        self.notifier.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        self.notifier.notify("RELOADING=1")

    def stopping(self) -> None:
        self.notifier.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self.notifier.notify(f"STATUS={text}")

    def watchdog(self) -> None:
        self.notifier.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        return self.notifier.watchdog_interval()


def world_for(config: Config, args: Args, notifier: Notifier) -> World:
    """The production world: netlink, the state directory, nft, rtnetlink, systemd."""
    from director.app import World, files_budget
    from director.ipvs.ondemand import OnDemandIPVS
    from director.limits import raise_nofile
    from director.reconcile.owned import FileOwnedStore
    from director.vrrp_service import cleanup as vrrp_cleanup

    state_dir = args.state_dir or Path(config.daemon.state_dir)
    return World(
        config_path=args.config,
        state_dir=state_dir,
        loader=load_prepared,
        kernel=OnDemandIPVS(open_kernel),
        sync_kernel=OnDemandIPVS(open_kernel),
        owned=FileOwnedStore(state_dir),
        remove_leftovers=vrrp_cleanup,
        nofile=raise_nofile(files_budget(config, 0).needed),
        lifecycle=Systemd(notifier),
    )


async def run(args: Args, daemon: dict[str, object] | None = None) -> int:
    """``daemon``: the file's ``[daemon]`` table as :func:`remove_leftovers_first` read it
    (read again when not given)."""
    from director.config.startcache import FILE_NAME, StartCache
    from director.sdnotify import Notifier

    # the last start's validated config when the file and the code are the same (the state
    # directory as the early removal of leftover VIPs finds it: --state-dir or [daemon])
    if daemon is None:
        daemon = early.daemon_table(args.config)
    cache = StartCache(early.state_dir_of(daemon, args.state_dir) / FILE_NAME)
    config = cache.load(args.config)
    logs.configure(
        args.log_format or config.daemon.log_format, args.log_level or config.daemon.log_level
    )
    prepare_imports(config)
    notifier = Notifier()
    try:
        return await run_director(config, world_for(config, args, notifier), cache.save)
    finally:
        notifier.close()
        logs.flush()  # counts of repeated lines still held back


PROBE_MODULES = tuple(  # what health.probe_spec imports at a config's first check
    f"checks.probes.{name}"
    for name in ("dispatch", "exchange", "http", "rdp", "script", "smtp", "tcp")
)


def load_prepared(path: Path) -> Config:
    """The config at ``path`` (:func:`director.config.load_config`), with the modules its
    checks need imported (:func:`prepare_imports`). A reload runs this in a worker thread, so
    the reload that brings the first check of a kind pays its imports there, not on the loop."""
    from director.config.apart import load_config_apart

    config = load_config_apart(path)  # a large one validated in a child (config.apart)
    prepare_imports(config)
    return config


def prepare_imports(config: Config) -> None:
    """Import what ``config``'s checks will need: the probe modules when it has a check, and
    aiohttp whole when one uses its client (its error paths name aiohttp's exceptions: paid
    here rather than on the loop at a probe's first failure). Nothing when it has no check."""
    if any(
        rs.health_check(vs) is not None for vs in config.virtual_servers for rs in vs.real_servers
    ):
        for probe in PROBE_MODULES:
            importlib.import_module(probe)
    if uses_http_client(config):
        lean.load_whole("aiohttp")


HTTP_CLIENT_CHECKS = ("http", "https", "exchange")  # their error paths name aiohttp's exceptions


def uses_http_client(config: Config) -> bool:
    """Whether a real server has a check that uses aiohttp's client side (:mod:`director.lean`)."""
    return any(
        check is not None and check.type in HTTP_CLIENT_CHECKS
        for vs in config.virtual_servers
        for rs in vs.real_servers
        for check in (rs.health_check(vs),)
    )


async def run_director(
    config: Config, world: World, after_ready: Callable[[], object] | None = None
) -> int:
    """Start a director, serve it until SIGTERM/SIGINT, stop it; the exit status.
    ``after_ready``: run in a worker thread once it is ready (the start cache's write)."""
    from director.app import Director, StartError
    from director.heap import tune_malloc
    from director.intents import Intents, Reload, Stop

    tune_malloc()  # before the start's threads and tables

    intents = Intents()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, intents.put, Reload("signal"))
    loop.add_signal_handler(signal.SIGTERM, intents.put, Stop("SIGTERM"))
    loop.add_signal_handler(signal.SIGINT, intents.put, Stop("SIGINT"))
    try:
        director = Director(config, world, intents)
        await director.start()
    except StartError as exc:
        world.lifecycle.status(f"start failed: {exc}")
        return 1
    gc.enable()  # ready, the heap settled (see main)
    # what the start compiled that the cache did not have (the first start of a tree): kept for
    # the next start, if the package's directory can be written (codecache)
    await asyncio.to_thread(codecache.save)
    if after_ready is not None:
        await asyncio.to_thread(after_ready)
    try:
        await director.serve()
    finally:
        await director.stop()
    return 0


def dry_run(config_path: Path, state_dir: Path | None) -> int:
    from director.config import load_config
    from director.desired import compile_table
    from director.reconcile.owned import FileOwnedStore
    from director.reconcile.plan import plan

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


def cleanup(config_path: Path, state_dir: Path | None) -> int:
    """Remove the VIPs and sync daemons a crashed ``directord`` may have left behind: the VIPs
    the last run recorded (its config may have been edited since), then the config's."""
    from director.config import load_config
    from director.vrrp_service import cleanup as vrrp_cleanup

    recorded, problems = early.remove_recorded(
        early.state_dir_of(early.daemon_table(config_path), state_dir)
    )
    for problem in problems:
        print(f"directord: {problem}", file=sys.stderr)
    config = load_config(config_path)
    removed = recorded + asyncio.run(vrrp_cleanup(config))
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
    if config.bgp is not None and config.bgp.backend == "kernel":  # [bgp]: a crash's routes
        from director.bgp.kernel_routes import remove_all

        routes = asyncio.run(remove_all(config.bgp))
        print(f"removed {len(routes)} BGP route(s): {', '.join(routes) or '-'}")
    return 0


def remove_leftovers_first(args: Args) -> dict[str, object]:
    """The VIPs the last run recorded, removed before the daemon's imports (see the module
    docstring); the log line comes out in the format the arguments or the file ask for. The
    file's ``[daemon]`` table, as read for this (for :func:`run`: the TOML parsed once a start,
    0.03 s of an emulated guest's start)."""
    daemon = early.daemon_table(args.config)
    removed, problems = early.remove_recorded(early.state_dir_of(daemon, args.state_dir))
    if not removed and not problems:
        return daemon
    fmt = args.log_format or daemon.get("log_format")
    level = args.log_level or daemon.get("log_level")
    logs.configure(
        fmt if fmt in ("json", "logfmt", "journal") else "logfmt",
        level if level in ("debug", "info", "warning", "error") else "info",
    )
    if removed:
        log.warning("leftover_vips_removed", addresses=removed, early=True)
    for problem in problems:
        log.error("leftover_vips_not_removed", problem=problem, early=True)
    return daemon


def main(argv: list[str] | None = None) -> int:
    # No cyclic collection while the daemon imports and starts: its objects live for good and
    # each full collection walks them all (several in a start; 6 % of the import time). The
    # start ends with one (app.settle_heap), then run_director enables the collector.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if gc_was_enabled:
            gc.enable()


def _main(argv: list[str] | None) -> int:
    codecache.install()  # before the daemon's dataclasses are created
    lean.lean_imports()  # before anything imports pyroute2, aiohttp or prometheus_client
    args = parse_args(argv)
    if args.check_config is not None:
        from director.config import check_config

        ok, message = check_config(args.check_config)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    daemon = None
    if not (args.cleanup or args.dry_run):
        daemon = remove_leftovers_first(args)  # before importing the rest
    from director.config import ConfigError
    from director.ipvs.kernel import KernelError

    try:
        if args.cleanup:
            return cleanup(args.config, args.state_dir)
        if args.dry_run:
            return dry_run(args.config, args.state_dir)
        return asyncio.run(run(args, daemon))
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
