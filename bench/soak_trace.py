"""The soak's daemon under tracemalloc (``bench.soak --trace``): where memory grows.

    python -m bench.soak_trace CONFIG STATE_DIR OUT_DIR

runs ``tests.helpers.director_proc`` unchanged, with tracemalloc on (``SOAK_TRACE_FRAMES``
frames, default 8). Each SIGUSR2 collects garbage and writes ``OUT_DIR/snapshot-N.pickle`` (the
tracemalloc snapshot), ``OUT_DIR/types-N.json`` (live objects by type) and ``OUT_DIR/done-N``.
:func:`diff` compares two of them: the allocation sites and object types that grew.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

from tests.helpers import director_proc


def dump(out: Path, n: int) -> None:
    gc.unfreeze()  # the daemon freezes its heap after start and reload: count everything
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    snapshot.dump(str(out / f"snapshot-{n}.pickle"))
    types = collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
    )
    (out / f"types-{n}.json").write_text(json.dumps(types))
    (out / f"done-{n}").touch()


def diff(out: Path, a: int, b: int, top: int = 12) -> list[str]:
    """What grew from snapshot ``a`` to ``b``: allocation sites (with their innermost frames of
    this project or the standard library) and live object counts by type."""
    old = tracemalloc.Snapshot.load(str(out / f"snapshot-{a}.pickle"))
    new = tracemalloc.Snapshot.load(str(out / f"snapshot-{b}.pickle"))
    total = sum(s.size for s in new.statistics("filename")) - sum(
        s.size for s in old.statistics("filename")
    )
    lines = [f"traced memory {total / 1024:+.1f} KiB from snapshot {a} to {b}; grew most:"]
    for stat in new.compare_to(old, "traceback")[:top]:
        if stat.size_diff <= 0:
            break
        frames = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in stat.traceback][-4:]
        lines.append(
            f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7} blocks  "
            + " <- ".join(reversed(frames))
        )
    before = json.loads((out / f"types-{a}.json").read_text())
    after = json.loads((out / f"types-{b}.json").read_text())
    grown = sorted(((after[k] - before.get(k, 0), k) for k in after), reverse=True)[:top]
    lines.append("live objects by type, grew most:")
    lines += [f"  {n:+8} {name} (now {after[name]})" for n, name in grown if n > 0]
    return lines


def main() -> int:
    config, state, out = (Path(arg) for arg in sys.argv[1:4])
    tracemalloc.start(int(os.environ.get("SOAK_TRACE_FRAMES", "8")))
    serial = itertools.count()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dump(out, next(serial))

    signal.signal(signal.SIGUSR2, on_signal)
    return asyncio.run(director_proc.main(config, state))


if __name__ == "__main__":
    sys.exit(main())
