"""Boot the cloud kernel in QEMU (TCG) with the host's root and the project shared over virtiofs.

Knobs (environment): DIRECTOR_VM_SMP (default 1: faster than 2 on a 2-core host),
DIRECTOR_VM_MEMORY (2G), DIRECTOR_VM_CPU (max), DIRECTOR_VM_ACCEL (tcg; kvm where it works),
DIRECTOR_VM_APPEND (extra kernel parameters, e.g. loglevel=7 to see the whole boot).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.helpers.vm.initramfs import CACHE, REPO, build_initramfs, find_kernel, require_tools

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
DEFAULT_TIMEOUT = 20 * 60.0
MAX_INLINE_COMMAND = 1200  # base64 characters; the whole x86 kernel command line is 2048 bytes
KEEP_LOGS = 20
COMMAND_START = "DT-VM-COMMAND-START"
# Serve the host's / read-only: a read-only bind mount inside a private mount namespace.
ROOT_SERVER = (
    'mount --bind / "$1" && mount -o remount,bind,ro "$1" && '
    'exec "$2" --socket-path="$3" -o source="$1" -o cache=always -o log_level=warn'
)
VIRTIOFSD_NOISE = r"fv_remove_watch: TODO|Unexpected poll revents"  # printed on every exit
SKIP_COMPILE = r"/\.(venv|vmcache|git|mypy_cache|ruff_cache|pytest_cache|hypothesis)(/|$)"


@dataclass(frozen=True)
class GuestResult:
    returncode: int
    duration: float
    console_log: Path
    boot_seconds: float | None  # from starting QEMU to the guest starting the command


class GuestError(RuntimeError):
    """The guest did not run the command to completion (no boot, crash, timeout)."""

    def __init__(self, message: str, console_log: Path | None = None) -> None:
        if console_log is not None:
            tail = console_tail(console_log) or "(empty)"
            message += f"\nconsole log: {console_log}\n--- console tail ---\n{tail}"
        super().__init__(message)
        self.console_log = console_log


def console_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILLed if the harness dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise GuestError(f"virtiofsd for {path.name} did not start:\n{console_tail(log)}")
        time.sleep(0.02)


def precompile() -> None:
    """Byte-compile the project and the venv on the host: Python in the guest is ~25x slower."""
    for tree, exclude in ((REPO, SKIP_COMPILE), (Path(sysconfig.get_paths()["purelib"]), None)):
        argv = [sys.executable, "-m", "compileall", "-q", str(tree)]
        if exclude:
            argv[4:4] = ["-x", exclude]
        subprocess.run(argv, check=False, stdout=subprocess.DEVNULL)


class _ConsoleWatcher(threading.Thread):
    """Follows the console log: streams it if asked, notes when the command starts."""

    def __init__(self, path: Path, out: IO[str] | None, started: float) -> None:
        super().__init__(daemon=True)
        self.path, self.out, self.started = path, out, started
        self.boot_seconds: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.path.exists():
            if self.stop.wait(0.05):
                return
        pending = ""
        with self.path.open("r", errors="replace") as log:
            while True:
                stopping = self.stop.is_set()  # after the stop, read what is left once more
                chunk = log.read()
                *lines, pending = (pending + chunk.replace("\r", "")).split("\n")
                for line in lines:
                    self._line(line)
                if stopping:
                    break
                if not chunk:
                    time.sleep(0.05)
        if pending:
            self._line(pending)

    def _line(self, line: str) -> None:
        if self.boot_seconds is None and line.startswith(COMMAND_START):
            self.boot_seconds = time.monotonic() - self.started
        if self.out is not None:
            self.out.write(line + "\n")
            self.out.flush()


def new_log_path(kind: str, suffix: str) -> Path:
    """A fresh .vmcache/logs/<kind>-<time>-<pid>.<suffix>; only the newest few of a kind stay."""
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in sorted(logs.glob(f"{kind}-*.{suffix}"))[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)
    return logs / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.{suffix}"


def _qemu_argv(image: Path, initrd: Path, append: str, tmp: Path, console: Path) -> list[str]:
    smp = os.environ.get("DIRECTOR_VM_SMP", "1")
    accel = os.environ.get("DIRECTOR_VM_ACCEL", "tcg")
    mem = os.environ.get("DIRECTOR_VM_MEMORY", "2G")
    cpu = os.environ.get("DIRECTOR_VM_CPU", "max")
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-no-reboot"]
    argv += ["-machine", "q35", "-accel", accel, "-cpu", cpu, "-smp", smp, "-m", mem]
    argv += ["-object", f"memory-backend-memfd,id=mem,size={mem},share=on"]
    argv += ["-numa", "node,memdev=mem", "-display", "none", "-nic", "none"]
    argv += ["-kernel", str(image), "-initrd", str(initrd), "-append", append]
    argv += ["-chardev", f"file,id=console,path={console}", "-serial", "chardev:console"]
    argv += ["-chardev", f"file,id=status,path={tmp / 'status'}", "-serial", "chardev:status"]
    for tag in ("rootfs", "project"):
        argv += ["-chardev", f"socket,id={tag},path={tmp / tag}.sock"]
        argv += ["-device", f"vhost-user-fs-pci,chardev={tag},tag={tag}"]
    return argv


def _start_virtiofsd(tmp: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """Serve / read-only (tag rootfs) and the project read-write (tag project).

    Started processes are appended to procs at once, so the caller can always kill them.
    """
    (tmp / "root").mkdir()
    unshare = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", ROOT_SERVER]
    project = [VIRTIOFSD, f"--socket-path={tmp / 'project.sock'}", "-o", f"source={REPO}"]
    servers = {
        "rootfs": [*unshare, "sh", str(tmp / "root"), VIRTIOFSD, str(tmp / "rootfs.sock")],
        "project": [*project, "-o", "cache=auto", "-o", "log_level=warn"],
    }
    for tag, argv in servers.items():
        log = tmp / f"virtiofsd-{tag}.log"
        procs.append(_spawn(argv, log))
        _wait_for_socket(tmp / f"{tag}.sock", procs[-1], log)


# With systemd as PID 1: only dt.target (basic.target and the command); nothing that could take
# the dpkg lock or the network (the host's root enables apt timers and timesyncd).
SYSTEMD_PARAMS = [
    "dt.init=systemd",
    "systemd.unit=dt.target",
    "systemd.mask=timers.target",
    "systemd.mask=systemd-timesyncd.service",
    "systemd.show_status=error",
]


def _kernel_cmdline(command: str, init: str = "sh") -> str:
    params = ["console=ttyS0", "rdinit=/init", "panic=-1", "tsc=reliable", "loglevel=4"]
    if init == "systemd":
        params += SYSTEMD_PARAMS
    params += ["random.trust_cpu=on", "mitigations=off", f"dt.project={_b64(str(REPO))}"]
    params += [f"dt.venv={_b64(str(Path(sys.executable).parent))}", command]
    params += os.environ.get("DIRECTOR_VM_APPEND", "").split()  # e.g. loglevel=7 to debug a boot
    return " ".join(params)


@contextlib.contextmanager
def _command_params(argv: list[str]) -> Iterator[str]:
    """The command as kernel parameters: inline if short, else a file in the project share."""
    script = "exec " + shlex.join(argv)
    if len(_b64(script)) <= MAX_INLINE_COMMAND:
        yield f"dt.cmd={_b64(script)}"
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=CACHE, prefix="command-", suffix=".sh")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(script + "\n")
        yield f"dt.cmdfile={_b64(name)}"
    finally:
        os.unlink(name)


def _status(tmp: Path) -> str:
    path = tmp / "status"
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = [line.strip() for line in text.splitlines() if line.startswith("DT-VM-")]
    return lines[-1] if lines else ""


def run_in_guest(
    argv: list[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    console_log: Path | None = None,
    stream: bool = False,
    init: str = "sh",
) -> GuestResult:
    """Run argv in the project directory inside a fresh guest; its exit status comes back.

    ``init``: "sh" runs the command from a shell as PID 1 (fast); "systemd" boots systemd as
    PID 1 and runs it from a service (dt-command.service), for tests of the unit itself.
    Raises GuestError if the guest could not boot, crashed, or ran past timeout seconds; the
    guest (QEMU and both virtiofsd) is always killed and its temporary files removed.
    """
    require_tools()
    kernel = find_kernel()
    initrd = build_initramfs(kernel)
    precompile()
    console = console_log or new_log_path("console", "log")
    console.parent.mkdir(parents=True, exist_ok=True)
    console.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dt-vm-"))
    procs: list[subprocess.Popen[bytes]] = []
    watcher: _ConsoleWatcher | None = None
    try:
        _start_virtiofsd(tmp, procs)
        with _command_params(argv) as command:
            started = time.monotonic()
            watcher = _ConsoleWatcher(console, sys.stdout if stream else None, started)
            watcher.start()
            cmdline = _kernel_cmdline(command, init)
            qemu_argv = _qemu_argv(kernel.image, initrd, cmdline, tmp, console)
            qemu = _spawn(qemu_argv, tmp / "qemu.log")
            procs.append(qemu)
            try:
                qemu.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise GuestError(f"guest timed out after {timeout:.0f} s", console) from None
        duration = time.monotonic() - started
        status = _status(tmp)
        if status.startswith("DT-VM-STATUS "):
            return GuestResult(int(status.split()[1]), duration, console, watcher.boot_seconds)
        reason = status.removeprefix("DT-VM-FAIL ") or "the guest reported no exit status"
        reason += f" (qemu exited {qemu.returncode})"
        for log in sorted(tmp.glob("*.log")):  # qemu's and virtiofsd's own complaints
            lines = console_tail(log, 10).splitlines()
            if text := "\n".join(x for x in lines if not re.search(VIRTIOFSD_NOISE, x)):
                reason += f"\n--- {log.name} ---\n{text}"
        raise GuestError(reason, console)
    finally:
        for proc in reversed(procs):
            _kill(proc)
        if watcher is not None:
            watcher.stop.set()
            watcher.join(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
