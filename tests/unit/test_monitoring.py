"""The alerting rules and the Grafana dashboard in docs/monitoring/.

promtool (Debian's ``prometheus`` package) checks and unit-tests the rules
(docs/monitoring/alerts_test.yml) and parses every dashboard expression; every metric the rules
and the dashboard name must be one director/metrics.py exposes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from director.ipvs.stats import StatsSnapshot
from director.metrics import Metrics, SnapshotCollector, Sources

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULES_TEST = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
# Metrics Prometheus itself records per target.
PROMETHEUS_OWN = {"up"}
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
# Grafana's variables, replaced so that promtool can parse the dashboard's expressions.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$job": ".*", "$instance": ".*"}


def exposed_names() -> set[str]:
    """Every sample name the daemon's metrics can expose (counters with ``_total``,
    histograms with ``_bucket``/``_sum``/``_count``), read from the families themselves."""
    sources = Sources(
        stats=lambda: StatsSnapshot(at=1.0),
        checks=lambda: [
            {
                "service": "TCP 192.0.2.1:80",
                "destination": "192.0.2.2:80",
                "type": "tcp",
                "up": True,
                "transitions": 1,
            }
        ],
        vrrp=lambda: [{"name": "VI_1", "state": "master", "adverts_dropped": {"bad_ttl": 1}}],
        role=lambda: "master",
        peers=lambda: {
            "generation": 1,
            "peers": [
                {"peer": "198.18.0.2:9470", "state": "match", "generation": 1, "last_contact": 1.0}
            ],
        },
    )
    metrics = Metrics(sources)
    families = [*metrics.registry.collect(), *SnapshotCollector(sources).collect()]
    names: set[str] = set()
    for family in families:
        for suffix in SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def rules() -> list[dict[str, str]]:
    """alerts.yml's alerts as {key: value} (alert, expr, for, severity, summary, description).
    A small reader for the file's own layout (the project has no YAML library); promtool checks
    that the file is what this reads."""
    out: list[dict[str, str]] = []
    lines = RULES.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(?:- )?(alert|expr|for|severity|summary|description):\s*(.*)$", lines[i])
        i += 1
        if m is None:
            continue
        key, value = m.groups()
        if key == "alert":
            out.append({})
        if value in (">-", ">", "|", "|-"):  # a block: the more indented lines that follow
            indent = len(lines[i]) - len(lines[i].lstrip())
            block = []
            while i < len(lines) and (len(lines[i]) - len(lines[i].lstrip())) >= indent:
                block.append(lines[i].strip())
                i += 1
            value = " ".join(block)
        elif value.startswith('"'):
            value = json.loads(value)
        out[-1][key] = value
    return out


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels(dashboard()["panels"]) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Metric-looking identifiers in a PromQL expression: strings, label matchers, ranges
    and grouping clauses removed, function names (followed by ``(``) and keywords left out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)
    found = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_WORDS:
            continue
        found.add(name)
    return found


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; scripts/setup-env)")
    return path


def run(*args: str, cwd: Path = MONITORING) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_rules() -> None:
    run(promtool(), "check", "rules", str(RULES))


def test_promtool_test_rules() -> None:
    run(promtool(), "test", "rules", str(RULES_TEST))


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    exprs = []
    for expr in dashboard_exprs():
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        exprs.append(expr)
    doc = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(doc))  # YAML reads JSON
    run(promtool(), "check", "rules", str(path), cwd=tmp_path)


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (job, exported_instance) (rate(director_vrrp_adverts_dropped_total{job=~"d.*",'
        ' reason!="x"}[$__rate_interval])) > 0 or up{job="a"} == 0 and on (job) foo:bar'
    )
    assert metric_names(expr) == {"director_vrrp_adverts_dropped_total", "up", "foo:bar"}


def test_rules_use_only_existing_metrics() -> None:
    known = exposed_names() | PROMETHEUS_OWN
    used = set()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, (rule["alert"], names - known)
        used |= names
    assert "up" in used and any(n.startswith("director_") for n in used)


def test_dashboard_uses_only_existing_metrics() -> None:
    known = exposed_names() | PROMETHEUS_OWN
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, expr
        assert names <= known, (expr, names - known)


def test_alerts_have_severity_summary_description() -> None:
    alerts = rules()
    assert {rule["alert"] for rule in alerts} >= {
        "DirectorDown",
        "DirectorVrrpNoMaster",
        "DirectorVrrpTwoMasters",
        "DirectorRealServerDown",
        "DirectorServiceNoHealthyServer",
        "DirectorReloadFailed",
        "DirectorVrrpAdvertsDropped",
    }
    for rule in alerts:
        assert rule.get("severity") in {"warning", "critical"}, rule
        assert rule.get("summary") and rule.get("description"), rule
        assert "{{ $labels." in rule["summary"] + rule["description"], rule["alert"]


def test_every_alert_is_unit_tested() -> None:
    tested = set(re.findall(r"^\s*alertname: (\w+)$", RULES_TEST.read_text(), re.M))
    assert tested == {rule["alert"] for rule in rules()}


def test_dashboard_is_valid_and_every_panel_has_a_datasource() -> None:
    dash = dashboard()
    assert dash["schemaVersion"] >= 36
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    ids = []
    for panel in panels(dash["panels"]):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert target["expr"].strip(), panel["title"]
    assert len(ids) == len(set(ids))
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == "${DS_PROMETHEUS}", var["name"]
