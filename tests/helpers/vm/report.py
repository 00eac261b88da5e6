"""Guest side: ``pytest -p tests.helpers.vm.report --vm-report=PATH`` records every test's outcome.

PATH gets a JSON object, rewritten after each report so that a crash keeps what was done:
``{"exitstatus": int | null, "collect_errors": [str], "tests": {nodeid: Outcome}}`` where an
Outcome is ``{"outcome": "passed" | "failed" | "skipped" | "xfailed", "text": str,
"duration": float}``; text is the failure report or the skip/xfail reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

RANK = {"passed": 0, "xfailed": 1, "skipped": 1, "failed": 2}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--vm-report", type=Path, help="write per-test outcomes to this JSON file")


def pytest_configure(config: pytest.Config) -> None:
    path: Path | None = config.getoption("vm_report")
    if path is not None:
        config.pluginmanager.register(Recorder(path), "vm-report-recorder")


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return report.longreprtext


def _failure_text(report: pytest.TestReport) -> str:
    parts = [report.longreprtext]
    parts += [f"{'-' * 20} {title} {'-' * 20}\n{body}" for title, body in report.sections]
    prefix = "" if report.when == "call" else f"error in {report.when}:\n"
    return prefix + "\n".join(parts)


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tests: dict[str, dict[str, Any]] = {}
        self.collect_errors: list[str] = []
        self.exitstatus: int | None = None
        self._write()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid}: {report.longreprtext}")
            self._write()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(
            report.nodeid, {"outcome": "passed", "text": "", "duration": 0.0}
        )
        entry["duration"] += report.duration
        wasxfail = getattr(report, "wasxfail", None)
        outcome, text = "passed", ""
        if report.failed:
            outcome, text = "failed", _failure_text(report)
        elif report.skipped and wasxfail is not None:
            outcome, text = "xfailed", str(wasxfail)
        elif report.skipped:
            outcome, text = "skipped", _skip_reason(report)
        if RANK[outcome] > RANK[entry["outcome"]]:
            entry["outcome"], entry["text"] = outcome, text
        elif outcome == "failed":
            entry["text"] += "\n\n" + text
        if report.when == "teardown":  # the test is complete: save, in case the guest dies
            self._write()

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.exitstatus = int(exitstatus)
        self._write()

    def _write(self) -> None:
        data = {
            "exitstatus": self.exitstatus,
            "collect_errors": self.collect_errors,
            "tests": self.tests,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)
