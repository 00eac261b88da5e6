"""The Debian package for the tests: built on the host (scripts/build-deb) before the systemd
guest boots, found by the tests in the guest.

Two versions, for the upgrade test: the package of this checkout (revision 1), and the same
package relabelled with the lower revision 0, standing in for the previous release (this is the
first packaged release, so there is no older one to install). Both are cached in .vmcache/deb
under a digest of what goes into them.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

from tests.helpers.vm.initramfs import CACHE, REPO

OUT = CACHE / "deb"
INPUTS = ("pyproject.toml", "director", "checks", "vrrp", "systemd", "debian", "docs", "scripts")
CURRENT, PREVIOUS = "1", "0"


def version(revision: str) -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return f"{project}-{revision}"


def path(revision: str) -> Path:
    """Where the package of ``revision`` is (in the guest: built by the host beforehand)."""
    return OUT / f"director_{version(revision)}_amd64.deb"


def _digest() -> str:
    digest = hashlib.sha256()
    for top in INPUTS:
        root = REPO / top
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def build_all() -> list[Path]:
    """Build (or reuse) both packages; raises CalledProcessError if the build fails."""
    stamp = OUT / "inputs.sha256"
    digest = _digest()
    wanted = [path(CURRENT), path(PREVIOUS)]
    if all(p.is_file() for p in wanted) and stamp.is_file() and stamp.read_text() == digest:
        return wanted
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    build = [str(REPO / "scripts/build-deb"), "--revision", CURRENT, "--out", str(OUT)]
    done = subprocess.run(build, capture_output=True, text=True)
    if done.returncode != 0:  # pip's output only when it matters
        raise subprocess.CalledProcessError(done.returncode, build, done.stdout, done.stderr)
    relabel(path(CURRENT), path(PREVIOUS), version(PREVIOUS))
    stamp.write_text(digest)
    return wanted


def relabel(deb: Path, target: Path, new_version: str) -> None:
    """The same package with another version in its control file."""
    with tempfile.TemporaryDirectory(prefix="relabel-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
        control = tree / "DEBIAN/control"
        lines = control.read_text().splitlines()
        lines = [f"Version: {new_version}" if x.startswith("Version:") else x for x in lines]
        control.write_text("\n".join(lines) + "\n")
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(target)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
