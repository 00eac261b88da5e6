"""A local copy of what the Debian package installs, for timing a start from local files.

In the guest, the host's / and the project tree (with its ``.venv``) are virtiofs mounts: every
file an import looks at (directory listings, stats, opens, reads) is a FUSE request, each one
expensive under TCG - about a third of the daemon's imports there (``bench/startup.py``). A
user's ``/opt/director`` and ``/usr/lib/python3.11`` are on a local disk. :func:`build` lays
out the same files in a local directory (a tmpfs in the guest):

- ``python/``: the interpreter's executable and its standard library (byte-code included, file
  times kept so that the ``.pyc`` stay valid), less what Debian ships in other packages or the
  daemon cannot import (the test suite, IDLE, tkinter, lib2to3, distutils, ensurepip, the
  ``config-*`` build directory) and less the interpreter's own site-packages. The interpreter
  finds its prefix from where its executable is (``lib/python3.11/os.py`` beside it); its
  shared library stays where it is (its run path names it; mapped once, not read per import);
- ``venv/``: a virtual environment on that interpreter, as ``scripts/build-deb`` makes
  ``/opt/director``: the pinned runtime dependencies (``debian/constraints.txt``, the files
  their distributions list: packages, byte-code and metadata) and the project's packages
  (``director``, ``vrrp``, ``checks``, with their byte-code and the dataclasses' code cache,
  :mod:`director.codecache`), installed as packages rather than as the tree's editable install,
  and ``bin/directord``, the entry point as pip writes it (``/usr/sbin/directord`` links to
  the package's).

Nothing else differs: the same interpreter, the same byte-code, the same code; only where the
files are. (The byte-code is the tree's and the venv's, checked against the sources' file times
as it is loaded; the package's own is compiled ``unchecked-hash``, which spares it a ``stat`` of
each source: if anything, the copy is a little slower than the package.)
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("director", "vrrp", "checks")
# top-level names of the standard library that Debian ships apart (or not at all) and that the
# daemon does not import, and what a venv's interpreter does not read
STDLIB_LEFT_OUT = frozenset(
    {
        "site-packages",
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "lib2to3",
        "ensurepip",
        "distutils",
        "pydoc_data",
        f"config-{sysconfig.get_python_version()}-{sys.implementation._multiarch}",
    }
)


# pip's console script for ``directord = "director.daemon:main"`` (pyproject.toml)
ENTRY_POINT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from director.daemon import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def pinned(constraints: Path = ROOT / "debian" / "constraints.txt") -> list[str]:
    """The runtime dependencies' distribution names, as the package pins them."""
    names = []
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.partition("==")[0])
    return names


def distribution_files(names: list[str]) -> list[Path]:
    """Every file the installed distributions list (relative to their site-packages), less
    their scripts and anything outside site-packages."""
    out: set[Path] = set()
    for name in names:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or ():
            if file.parts[0] != ".." and file.suffix != ".pth":
                out.add(Path(*file.parts))
    return sorted(out)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)  # keeps the file times the .pyc were written against


def _pycache_ignore(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n in (".pytest_cache", ".mypy_cache")]


def build(dest: Path, site_packages: Path | None = None, tree: Path = ROOT) -> Path:
    """Lay out the interpreter, its standard library and the package's environment under
    ``dest``; returns the environment's python. ``tree``: the checkout whose packages go in
    (another commit's, for a baseline; the dependencies are this environment's)."""
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"])
    version = f"python{sysconfig.get_python_version()}"
    python = dest / "python"
    (python / "bin").mkdir(parents=True)
    executable = Path(os.path.realpath(sys.executable))
    shutil.copy2(executable, python / "bin" / version)
    shutil.copytree(
        stdlib,
        python / "lib" / version,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if Path(d) == stdlib and n in STDLIB_LEFT_OUT],
    )
    (python / "lib" / version / "site-packages").mkdir()

    venv = dest / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to(python / "bin" / version)
    (venv / "bin" / "python").symlink_to("python3")
    (venv / "pyvenv.cfg").write_text(
        f"home = {python / 'bin'}\ninclude-system-site-packages = false\n"
        f"version = {'.'.join(map(str, sys.version_info[:3]))}\n"
    )
    sp_src = site_packages or Path(sysconfig.get_paths()["purelib"])
    sp = venv / "lib" / version / "site-packages"
    sp.mkdir(parents=True)
    for rel in distribution_files(pinned()):
        src = sp_src / rel
        if src.is_file():  # RECORD lists byte-code that --no-compile installs may lack
            _copy(src, sp / rel)
    for name in PROJECT_PACKAGES:
        shutil.copytree(tree / name, sp / name, symlinks=True, ignore=_pycache_ignore)
    script = entry_point(dest)
    script.write_text(ENTRY_POINT.format(python=venv / "bin" / "python"))
    script.chmod(0o755)
    return venv / "bin" / "python"


def entry_point(dest: Path) -> Path:
    """The ``directord`` of the copy :func:`build` made in ``dest``."""
    return dest / "venv" / "bin" / "directord"
