"""Run commands in a QEMU guest booted on Debian's cloud kernel (which has IPVS).

The guest sees this machine's root filesystem read-only (with a tmpfs overlay on top) and the
project directory read-write at the same absolute path, so the project's venv works unchanged.
"""

from tests.helpers.vm.guest import GuestError, GuestResult, run_in_guest
from tests.helpers.vm.initramfs import REPO, Kernel, build_initramfs, find_kernel

__all__ = [
    "REPO",
    "GuestError",
    "GuestResult",
    "Kernel",
    "build_initramfs",
    "find_kernel",
    "run_in_guest",
]
