"""Host side of the ``vm`` marker: run every selected vm test in ONE guest boot.

On the host, each collected item marked ``vm`` is replaced by a fixture-less proxy with the same
node id. The first proxy to run boots the guest, which runs pytest on all of those node ids and
writes each outcome to a JSON file (see report.py); every proxy then reports its own test's
outcome. In the guest (DIRECTOR_IN_GUEST=1) this plugin does nothing and vm tests run normally.
DIRECTOR_SKIP_VM=1 skips the proxies instead of booting.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import TerminalRepr, TracebackStyle

from tests.helpers.vm.guest import (
    DEFAULT_TIMEOUT,
    GuestError,
    console_tail,
    new_log_path,
    run_in_guest,
)
from tests.helpers.vm.initramfs import REPO, VmSetupError

IN_GUEST = os.environ.get("DIRECTOR_IN_GUEST") == "1"
# Markers the guest evaluates; on the proxy they would be evaluated again, on the wrong machine.
GUEST_ONLY_MARKS = {"skip", "skipif", "xfail", "usefixtures", "filterwarnings", "parametrize"}
GUEST_ONLY_MARKS |= {"asyncio"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vm", "real-kernel QEMU guest")
    group.addoption(
        "--vm-timeout",
        type=float,
        default=float(os.environ.get("DIRECTOR_VM_TIMEOUT", DEFAULT_TIMEOUT)),
        help="seconds before the guest running the vm tests is killed (DIRECTOR_VM_TIMEOUT)",
    )


class GuestTestFailed(Exception):
    """The test failed in the guest; the message is the guest's failure report."""


class GuestUnavailable(Exception):
    """The guest did not produce this test's outcome (no boot, crash, timeout, no result)."""


class GuestRun:
    """The one guest boot shared by all proxies of a session (one per ``init``: the tests
    marked ``vm(init="systemd")`` get a second boot with systemd as PID 1)."""

    def __init__(self, config: pytest.Config, init: str = "sh") -> None:
        self.config = config
        self.init = init
        self.nodeids: list[str] = []
        self.tests: dict[str, dict[str, Any]] | None = None  # None until the guest has run
        self.collect_errors: list[str] = []
        self.failure: str | None = None  # why the guest did not finish, with the console tail
        self.summary = ""
        self.console: Path | None = None

    def outcome(self, nodeid: str) -> dict[str, Any]:
        if self.tests is None:
            self._boot()
        assert self.tests is not None
        if nodeid in self.tests:  # even if the guest died later, this test's outcome stands
            return self.tests[nodeid]
        if self.failure is not None:
            raise GuestUnavailable(self.failure)
        lines = ["the guest reported no result for this test", self.summary]
        lines += [f"collection error in the guest: {error}" for error in self.collect_errors]
        if self.console is not None:
            lines += ["--- console tail ---", console_tail(self.console)]
        raise GuestUnavailable("\n".join(lines))

    def _argv(self, results: Path) -> list[str]:
        root = self.config.rootpath
        ids = self.nodeids if root == REPO else [str(root / nodeid) for nodeid in self.nodeids]
        tb = self.config.getoption("tbstyle")
        return [
            sys.executable, "-m", "pytest", "-p", "tests.helpers.vm.report",
            f"--vm-report={results}", "-p", "no:cacheprovider", f"--rootdir={root}",
            f"--tb={tb}", "-v", *ids,
        ]  # fmt: skip

    def _say(self, line: str) -> None:
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    def _boot(self) -> None:
        results = new_log_path("results", "json")
        capture = self.config.pluginmanager.getplugin("capturemanager")
        stream = self.config.getoption("verbose") > 0 or self.config.getoption("capture") == "no"
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            self._say(
                f"\nvm: booting one QEMU guest ({self.init} as PID 1) for {len(self.nodeids)} tests"
            )
            try:
                if self.init == "systemd":  # its tests install the Debian package: build it here
                    from tests.helpers import package

                    self._say(f"vm: built {', '.join(p.name for p in package.build_all())}")
                result = run_in_guest(
                    self._argv(results),
                    timeout=self.config.getoption("vm_timeout"),
                    console_log=None,
                    stream=stream,
                    init=self.init,
                )
            except (GuestError, VmSetupError) as exc:
                self.failure = self.summary = f"the vm guest failed: {exc}"
            except subprocess.CalledProcessError as exc:  # the package build
                tail = "\n".join(str(exc.stderr or "").splitlines()[-30:])
                self.failure = self.summary = f"the vm guest did not boot: {exc}\n{tail}"
            else:
                self.console = result.console_log
                self.summary = (
                    f"vm: guest pytest exited {result.returncode} after {result.duration:.1f} s "
                    f"(boot {result.boot_seconds or 0:.1f} s); console log: {result.console_log}"
                )
                self._say(self.summary)
        try:
            data = json.loads(results.read_text())
        except (OSError, ValueError):
            data = {"tests": {}, "collect_errors": [f"no readable results in {results}"]}
        self.tests = data["tests"]
        self.collect_errors = data["collect_errors"]


RUNS = pytest.StashKey[list[GuestRun]]()


class VmProxy(pytest.Item):
    """Stands for a vm test on the host: reports the outcome it had in the guest."""

    def __init__(self, *, run: GuestRun, location: tuple[str, int | None, str], **kw: Any) -> None:
        super().__init__(**kw)
        self.run = run
        self._location = location

    @classmethod
    def replacing(cls, item: pytest.Item, run: GuestRun) -> VmProxy:
        path, line, domain = item.reportinfo()
        proxy: VmProxy = cls.from_parent(
            item.session,
            name=item.name,
            nodeid=item.nodeid,
            path=item.path,
            run=run,
            location=(str(path), line, domain),
        )
        for mark in item.iter_markers():
            if mark.name not in GUEST_ONLY_MARKS:
                proxy.own_markers.append(mark)
                proxy.keywords[mark.name] = mark
        return proxy

    def reportinfo(self) -> tuple[str, int | None, str]:
        return self._location

    def runtest(self) -> None:
        if os.environ.get("DIRECTOR_SKIP_VM") == "1":
            reason = "DIRECTOR_SKIP_VM=1: real-kernel tests not run"
            raise pytest.skip.Exception(reason, _use_item_location=True)
        result = self.run.outcome(self.nodeid)
        self.user_properties.append(("guest_duration", result["duration"]))
        if result["outcome"] == "skipped":  # reported at the test's location, as in the guest
            raise pytest.skip.Exception(result["text"], _use_item_location=True)
        if result["outcome"] == "xfailed":
            pytest.xfail(result["text"])
        if result["outcome"] == "failed":
            raise GuestTestFailed(result["text"])

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, GuestTestFailed):
            return f"[in the vm guest]\n{excinfo.value}"
        if isinstance(excinfo.value, GuestUnavailable):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only selected vm tests boot the guest
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_GUEST:
        return
    runs: dict[str, GuestRun] = {}
    for index, item in enumerate(items):
        if (mark := item.get_closest_marker("vm")) is not None:
            init = mark.kwargs.get("init", "sh")
            run = runs.setdefault(init, GuestRun(config, init))
            items[index] = VmProxy.replacing(item, run)
            run.nodeids.append(item.nodeid)
    config.stash[RUNS] = list(runs.values())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    for run in config.stash.get(RUNS, []):
        if run.summary:
            terminalreporter.write_line("\n".join(run.summary.splitlines()[:2]))
