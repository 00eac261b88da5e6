"""The large metric families written as exposition text directly: the IPVS table and the checks.

On a 10,000 x 10 table these are ~1.2 million series. Through ``prometheus_client`` each one is
a ``Sample`` (a named tuple and a labels dict) sorted and formatted at every scrape: a minute of
CPU and hundreds of MB. Here the label set of a series is formatted once per scrape and shared
by the families, and the text is the same, byte for byte, as ``generate_latest`` of
:class:`director.metrics.SnapshotCollector` (``tests/unit/test_metrics_text.py`` compares
them). Pure; ``pause`` is called every :data:`PAUSE_EVERY` series, so a worker thread can hand
the GIL back to the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import utils

from director.ipvs.model import ServiceKey
from director.ipvs.stats import Counters, StatsSnapshot
from director.pause import Pause, no_pause

PAUSE_EVERY = 2000

# (family, attribute, help) as director.metrics._COUNTERS
COUNTERS = (
    ("connections", "conns", "Connections scheduled"),
    ("incoming_packets", "inpkts", "Packets received from clients"),
    ("outgoing_packets", "outpkts", "Packets sent to clients"),
    ("incoming_bytes", "inbytes", "Bytes received from clients"),
    ("outgoing_bytes", "outbytes", "Bytes sent to clients"),
)
BACKEND_GAUGES = (
    ("connections_active", "Active (established) connections", "active"),
    ("connections_inactive", "Inactive connections", "inactive"),
    ("connections_persistent", "Persistence templates", "persistent"),
    ("weight", "Weight in the kernel", None),
)


def _go(value: float) -> str:
    """The value as prometheus_client writes it (Go's float formatting)."""
    return str(utils.floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _head(name: str, text: str, kind: str) -> str:
    return f"# HELP {name} {_escape_help(text)}\n# TYPE {name} {kind}\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class _Values:
    """``floatToGoString`` with a memo: most counters of a large table share a few values."""

    def __init__(self) -> None:
        self.memo: dict[float, str] = {}

    def __call__(self, value: float) -> str:
        if value == 0 and math.copysign(1.0, value) < 0:
            return _go(value)  # -0.0 equals 0.0 as a key but is written "-0.0"
        text = self.memo.get(value)
        if text is None:
            text = _go(value)
            if len(self.memo) < 100_000:
                self.memo[value] = text
        return text


def _families(
    heads: Iterable[tuple[str, str, str]],
    rows: list[tuple[str, tuple[float, ...]]],
    pause: Pause,
) -> Iterator[str]:
    """One family per head; row ``(labels, values)`` gives each family ``values[i]``."""
    value = _Values()
    for i, (name, text, kind) in enumerate(heads):
        yield _head(name, text, kind)
        sample = f"{name}{{"
        for n, (labels, values) in enumerate(rows, 1):
            yield f"{sample}{labels}}} {value(values[i])}\n"
            if not n % PAUSE_EVERY:
                pause()


def _counter_values(c: Counters) -> tuple[int, int, int, int, int]:
    return (c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes)


def ipvs_text(
    snap: StatsSnapshot | None,
    labels_of: Callable[[ServiceKey], list[str]],
    pause: Pause = no_pause,
) -> Iterator[str]:
    """The IPVS families (``SnapshotCollector._ipvs``) a piece at a time: ``labels_of(service
    key)`` gives ``[local_address, local_port, proto, local_mark]``."""
    if snap is None:
        return
    value = _Values()
    yield _head(
        "director_ipvs_stats_timestamp_seconds",
        "When the IPVS counters below were read from the kernel",
        "gauge",
    )
    yield f"director_ipvs_stats_timestamp_seconds {value(snap.at)}\n"
    services: list[tuple[str, tuple[float, ...]]] = []
    backends: list[tuple[str, tuple[float, ...]]] = []
    for n, (key, (_, counters)) in enumerate(snap.services.items(), 1):
        address, port, proto, mark = (_escape(v) for v in labels_of(key))
        # label names sorted, as prometheus_client writes them
        prefix = (
            f'local_address="{address}",local_mark="{mark}",local_port="{port}",proto="{proto}"'
        )
        services.append((prefix, _counter_values(counters)))
        for dkey, ds in snap.dests.get(key, {}).items():
            remote = f'remote_address="{_escape(str(dkey.address))}",remote_port="{dkey.port}"'
            backends.append(
                (
                    f"{prefix},{remote}",
                    (
                        *_counter_values(ds.counters),
                        ds.active,
                        ds.inactive,
                        ds.persistent,
                        ds.dest.weight,
                    ),
                )
            )
        if not n % 200:
            pause()
    yield from _families(
        (
            (f"director_ipvs_service_{name}_total", f"{text}, per virtual service", "counter")
            for name, _, text in COUNTERS
        ),
        services,
        pause,
    )
    heads = [
        (f"director_ipvs_backend_{name}_total", f"{text}, per real server", "counter")
        for name, _, text in COUNTERS
    ]
    heads += [(f"director_ipvs_backend_{name}", text, "gauge") for name, text, _ in BACKEND_GAUGES]
    yield from _families(heads, backends, pause)


def checks_text(
    checks: list[dict[str, object]],
    changed_at: Mapping[tuple[str, str], float],
    pause: Pause = no_pause,
) -> Iterator[str]:
    """The check families (``SnapshotCollector._checks``) a piece at a time."""
    rows: list[tuple[str, tuple[float, ...]]] = []
    for n, c in enumerate(checks, 1):
        service, dest = str(c.get("service")), str(c.get("destination"))
        labels = (
            f'destination="{_escape(dest)}",service="{_escape(service)}",'
            f'type="{_escape(str(c.get("type")))}"'
        )
        count = c.get("transitions")
        rows.append(
            (
                labels,
                (
                    1.0 if c.get("up") else 0.0,
                    changed_at.get((service, dest), 0.0),
                    float(count) if isinstance(count, int) else 0.0,
                ),
            )
        )
        if not n % PAUSE_EVERY:
            pause()
    yield from _families(
        (
            ("director_check_up", "1 when the check passes", "gauge"),
            (
                "director_check_last_change_timestamp_seconds",
                "When the check's verdict last changed (0: not since start)",
                "gauge",
            ),
            ("director_check_transitions_total", "Verdict changes since start", "counter"),
        ),
        rows,
        pause,
    )
