"""The Debian package as built (scripts/build-deb): lintian, its contents and its metadata.

Installing it and running it under systemd is tests/vm/test_package.py, in the systemd guest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import package
from tests.helpers.vm.initramfs import REPO


@pytest.fixture(scope="module")
def deb() -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is missing (Debian only)")
    package.build_all()
    return package.path(package.CURRENT)


def field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True
    ).stdout.strip()


def contents(deb: Path) -> dict[str, str]:
    """Path -> the ``ls -l`` style mode and link of every entry."""
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    out = {}
    for line in listing.splitlines():
        mode, _owner, _size, _date, _time, name = line.split(maxsplit=5)
        name, _, target = name.partition(" -> ")
        out[name.removeprefix(".")] = f"{mode} {target}".strip()
    return out


def test_lintian_finds_nothing_unexplained(deb: Path) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian is missing (apt-get install lintian)")
    done = subprocess.run(["lintian", "--info", str(deb)], capture_output=True, text=True)
    tags = [x for x in done.stdout.splitlines() if re.match(r"[EWIXO]: ", x)]
    assert tags == [], "\n".join(tags)
    overrides = (REPO / "debian/lintian-overrides").read_text().split("\n\n")
    # every override is explained by a comment right above it
    assert all(block.lstrip().startswith("#") for block in overrides if block.strip())


def test_metadata(deb: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert field(deb, "Package") == "director"
    assert field(deb, "Version") == f"{project}-1"
    depends = field(deb, "Depends")
    for needed in ("python3 (>= 3.11)", "python3 (<< 3.12)", "nftables", "iproute2", "kmod"):
        assert needed in depends
    control = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(deb)], check=True, capture_output=True
    ).stdout
    assert (
        b"./conffiles"
        in subprocess.run(["tar", "-t"], input=control, check=True, capture_output=True).stdout
    )


def test_files_and_links(deb: Path) -> None:
    files = contents(deb)
    assert files["/usr/sbin/directord"].endswith("/opt/director/bin/directord")
    assert files["/usr/sbin/directorctl"].endswith("/opt/director/bin/directorctl")
    assert files["/opt/director/bin/python3"].endswith("/usr/bin/python3")
    for path in (
        "/lib/systemd/system/directord.service",
        "/usr/lib/tmpfiles.d/director.conf",
        "/usr/lib/modules-load.d/director.conf",
        "/etc/director/director.toml",
        "/usr/share/man/man8/directord.8.gz",
        "/usr/share/doc/director/copyright",
    ):
        assert files[path].startswith("-rw-r--r--"), path
    # Only the two entry points in the environment's bin/, no pip, no activate scripts.
    scripts = {p for p in files if p.startswith("/opt/director/bin/") and p[-1] != "/"}
    assert scripts == {f"/opt/director/bin/{n}" for n in
                       ("directord", "directorctl", "python", "python3", "python3.11")}  # fmt: skip
    assert not any("/site-packages/pip/" in p for p in files)


def test_the_environment_is_the_pinned_set(deb: Path) -> None:
    names = {
        re.sub(r"[-_.]+", "-", m.group(1)).lower(): m.group(2)
        for p in contents(deb)
        if (m := re.search(r"site-packages/([^/]+)-([^-/]+)\.dist-info/$", p))
    }
    pins = {}
    for line in (REPO / "debian/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert names == pins | {"director": project["version"]}
    for requirement in project["dependencies"]:  # the project's own pins agree
        name, _, version = requirement.partition("==")
        assert pins[name] == version, requirement


def test_the_shipped_config_is_valid_and_its_example_too(deb: Path, tmp_path: Path) -> None:
    text = (REPO / "debian/director.toml").read_text()
    shipped = tmp_path / "shipped.toml"
    shipped.write_text(text)
    example = tmp_path / "example.toml"
    start = text.index("# [daemon]")
    example.write_text(re.sub(r"(?m)^# ?", "", text[start:]))
    for path in (shipped, example):
        argv = [str(Path(sys.executable).with_name("directord")), "--check-config", str(path)]
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "1 virtual service" in done.stdout


def test_maintainer_scripts_are_posix_sh(deb: Path) -> None:
    for script in ("postinst", "prerm", "postrm"):
        path = REPO / "debian" / script
        assert path.read_text().startswith("#!/bin/sh\n")
        subprocess.run(["sh", "-n", str(path)], check=True)
        assert path.stat().st_mode & 0o111
