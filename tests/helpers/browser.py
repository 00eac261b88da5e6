"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium, inside a
network namespace, so a page served on the namespace's 127.0.0.1 is reachable.

The test side (:class:`Browser`) starts ``python -m tests.helpers.browser PROFILE`` with ``ip
netns exec`` in its own session, and talks to it in JSON lines over stdin/stdout: ``get`` a URL,
run a ``js`` expression and return its value, read the browser's console ``log``. Selenium
never downloads anything: ``SE_OFFLINE`` is set and the service is ``/usr/bin/chromedriver``.
On :meth:`Browser.close` the driver quits, and whatever is left of the session (chromedriver,
chromium and its helpers, all started by this process) is killed by process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers.netns import Namespace

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]


def available() -> bool:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return False
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return True


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium in ``ns``; its profile and log under ``tmp``."""

    def __init__(self, ns: Namespace, tmp: Path) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp))
        self.stderr_path = tmp / "browser.log"
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(ROOT),
            "HOME": str(self.profile),
            "SE_OFFLINE": "true",  # Selenium Manager: never a download
        }
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                ns.argv("env", *(f"{k}={v}" for k, v in env.items()),
                        sys.executable, "-m", __name__, str(self.profile)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )  # fmt: skip
        self.call("hello", timeout=60)

    def call(self, op: str, timeout: float = 30, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BrowserError(f"the driver has gone: {self.log_tail()}") from None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise BrowserError(f"{op}: no answer within {timeout} s: {self.log_tail()}")
        line = self.proc.stdout.readline()
        if not line:
            raise BrowserError(f"{op}: the driver exited: {self.log_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise BrowserError(f"{op}: {answer['error']}")
        return answer.get("value")

    def get(self, url: str) -> None:
        self.call("get", url=url)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        return self.call("js", script=f"return ({expression});")

    def size(self, width: int, height: int) -> None:
        self.call("size", width=width, height=height)

    def console(self) -> list[dict[str, Any]]:
        """The console entries since the last call (Chromium hands each out once)."""
        entries: list[dict[str, Any]] = self.call("log")
        return entries

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(errors="replace")[-2000:]
        return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrowserError, OSError, ValueError):
                self.call("quit", timeout=15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        # Anything left in the session (chromedriver, chromium's helpers) was started by us.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def leftovers(self) -> list[int]:
        """Processes still running with this browser's profile in their command line."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if str(self.profile).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
        return found


def _serve(profile: str) -> int:
    """The driver side: one Chromium, commands from stdin, answers on stdout."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request["op"]
            try:
                if op == "hello":
                    value: Any = driver.capabilities.get("browserVersion")
                elif op == "get":
                    driver.get(request["url"])
                    value = None
                elif op == "js":
                    value = driver.execute_script(request["script"])
                elif op == "size":
                    driver.set_window_size(request["width"], request["height"])
                    value = None
                elif op == "log":
                    value = driver.get_log("browser")  # type: ignore[no-untyped-call]
                elif op == "quit":
                    print(json.dumps({"value": None}), flush=True)
                    return 0
                else:
                    raise ValueError(f"unknown op {op!r}")
            except Exception as exc:  # the test gets the message
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            else:
                print(json.dumps({"value": value}), flush=True)
    finally:
        started = time.monotonic()
        driver.quit()
        print(f"driver quit in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1]))
