"""bench.localinstall: the local copy bench.startup times a start from holds everything the
daemon imports, with valid byte-code, and nothing is read from where it was copied from."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.localinstall import build, entry_point
from bench.startup import IMPORTS, our_config

REPORT = (
    "import json, sys; print(json.dumps({'prefix': sys.base_prefix, 'files': [getattr(m,"
    " '__file__', None) for m in list(sys.modules.values())]}))"
)


def test_the_daemons_imports_come_from_the_copy_with_its_byte_code(tmp_path: Path) -> None:
    dest = tmp_path / "local"
    python = build(dest)
    built = max(p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file())
    # run from elsewhere than the checkout, as the bench does: the tree is not on the path
    out = subprocess.run(
        [str(python), "-c", f"{IMPORTS}; import director.daemon; {REPORT}"],
        cwd=dest,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out)
    assert report["prefix"] == str(dest / "python")
    files = [f for f in report["files"] if f]
    assert len(files) > 300  # the daemon's imports: the standard library's, the deps', ours
    assert [f for f in files if not f.startswith(f"{dest}/")] == []
    assert any(f.endswith("site-packages/director/app.py") for f in files)
    assert any(f.endswith("site-packages/pydantic/main.py") for f in files)
    # the byte-code copied is used as it is: no .pyc (nor anything else) written by the start
    written = [p for p in dest.rglob("*") if p.is_file() and p.stat().st_mtime_ns > built]
    assert written == []
    assert next(dest.glob("venv/lib/python3.*/site-packages/director/__pycache__")).is_dir()


def test_its_directord_is_the_copys_daemon(tmp_path: Path) -> None:
    dest = tmp_path / "local"
    build(dest)
    directord = entry_point(dest)
    config = tmp_path / "director.toml"
    config.write_text(our_config(tmp_path))
    checked = subprocess.run(
        [str(directord), "--check-config", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    where = subprocess.run(
        [f"{directord.parent}/python", "-c", "import director; print(director.__file__)"],
        cwd=tmp_path,  # not the checkout: -c puts the working directory first on the path
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(f"{dest}/venv/")
    assert directord.read_text().startswith(f"#!{dest}/venv/bin/python\n")
