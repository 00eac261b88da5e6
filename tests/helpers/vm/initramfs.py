"""Find the guest kernel and build (and cache) the tiny busybox initramfs that boots it."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".vmcache"
HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "initramfs-init.sh"
BUSYBOX = Path("/bin/busybox")
KERNEL_PACKAGE = "linux-image-cloud-amd64"
# What the initramfs needs to mount the shared root: virtio PCI transport, virtiofs, overlayfs.
BOOT_MODULES = ("virtio_pci", "virtiofs", "overlay")
APPLETS = (
    "sh",
    "mount",
    "umount",
    "insmod",
    "mkdir",
    "rm",
    "cat",
    "base64",
    "switch_root",
    "poweroff",
    "sleep",
)


class VmSetupError(RuntimeError):
    """The host lacks something needed to boot the guest."""


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path

    @property
    def modules(self) -> Path:
        return Path("/lib/modules") / self.version


def _version_key(version: str) -> list[int]:
    return [int(part) for part in re.findall(r"\d+", version)]


def find_kernel(boot: Path = Path("/boot")) -> Kernel:
    """The newest installed Debian cloud kernel (it has ip_vs; this machine's own may not)."""
    images = sorted(
        boot.glob("vmlinuz-*-cloud-amd64"),
        key=lambda p: _version_key(p.name.removeprefix("vmlinuz-")),
    )
    if not images:
        raise VmSetupError(
            f"no {boot}/vmlinuz-*-cloud-amd64: install the guest kernel with "
            f"`apt-get install {KERNEL_PACKAGE}`"
        )
    kernel = Kernel(images[-1].name.removeprefix("vmlinuz-"), images[-1])
    if not kernel.modules.is_dir():
        raise VmSetupError(f"{kernel.modules} is missing: reinstall {KERNEL_PACKAGE}")
    return kernel


def module_files(kernel: Kernel, names: tuple[str, ...] = BOOT_MODULES) -> list[Path]:
    """The .ko files for names and their dependencies, in load order, without duplicates."""
    ordered: list[Path] = []
    for name in names:
        done = subprocess.run(
            ["modprobe", "-S", kernel.version, "--show-depends", name],
            check=True,
            capture_output=True,
            text=True,
        )
        for line in done.stdout.splitlines():
            words = line.split()
            if words and words[0] == "insmod" and Path(words[1]) not in ordered:
                ordered.append(Path(words[1]))
    return ordered


def _decompressed(path: Path) -> bytes:
    """A module's ELF bytes: busybox insmod cannot load compressed modules."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return data


class Cpio:
    """A minimal writer of the "newc" cpio format that the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 0

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        self.ino += 1
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.out.write(name.encode() + b"\0")
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self) -> None:
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def _cache_key(kernel: Kernel, modules: list[Path]) -> str:
    digest = hashlib.sha256(kernel.version.encode())
    for path in [BUSYBOX, INIT_SCRIPT, Path(__file__), *modules]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_initramfs(kernel: Kernel | None = None, cache: Path = CACHE) -> Path:
    """The gzipped initramfs for kernel, built once per kernel version and content hash."""
    kernel = kernel or find_kernel()
    if not BUSYBOX.is_file():
        raise VmSetupError(f"{BUSYBOX} is missing: `apt-get install busybox-static`")
    modules = module_files(kernel)
    target = cache / f"initramfs-{kernel.version}-{_cache_key(kernel, modules)}.cpio.gz"
    if target.is_file():
        return target
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "lower", "rw", "newroot"):
        archive.directory(directory)
    archive.chardev("dev/console", 5, 1)
    archive.chardev("dev/ttyS1", 4, 65)  # where the exit status goes
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    names = []
    for path in modules:
        name = path.name.split(".ko")[0] + ".ko"
        archive.file(f"lib/modules/{name}", _decompressed(path))
        names.append(name)
    archive.file("modules.order", "".join(f"{n}\n" for n in names).encode())
    archive.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"initramfs-{kernel.version}-*.cpio.gz"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".initramfs-")
    with os.fdopen(fd, "wb") as out:
        out.write(gzip.compress(archive.finish(), compresslevel=1))
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def require_tools() -> None:
    """Fail early, naming the Debian package, if a host tool the guest needs is missing."""
    needed = {
        "qemu-system-x86_64": "qemu-system-x86",
        "/usr/lib/qemu/virtiofsd": "qemu-system-common",
        "modprobe": "kmod",
        "unshare": "util-linux",
    }
    for tool, package in needed.items():
        if shutil.which(tool) is None:
            raise VmSetupError(f"{tool} is missing: `apt-get install {package}`")
