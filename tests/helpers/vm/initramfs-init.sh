#!/bin/sh
# PID 1 of the initramfs: load the modules for virtiofs and overlayfs, mount this machine's root
# (shared read-only) under a tmpfs overlay, mount the project (shared read-write) at its own path,
# then switch_root and run the project's guest init script.
export PATH=/bin

fail() {
    echo "initramfs: $*"
    echo "DT-VM-FAIL initramfs: $*" > /dev/ttyS1
    poweroff -f
    echo o > /proc/sysrq-trigger
    sleep 60
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
echo "initramfs: kernel $(cat /proc/sys/kernel/osrelease), mounting the shared root"

for module in $(cat /modules.order); do
    insmod "/lib/modules/$module" || fail "insmod $module"
done

PROJECT=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        dt.project=*) PROJECT=$(echo "${arg#dt.project=}" | base64 -d) ;;
    esac
done
[ -n "$PROJECT" ] || fail "no dt.project= on the kernel command line"

mount -t virtiofs rootfs /lower || fail "mount the virtiofs root"
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "mount the overlay's tmpfs"
mkdir /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || fail "mount the overlay root"
mount -t virtiofs project "/newroot$PROJECT" || fail "mount the project at $PROJECT"

echo "initramfs: root and $PROJECT mounted, switching root"
umount /proc /sys /dev
exec switch_root /newroot /bin/sh "$PROJECT/tests/helpers/vm/guest-init.sh"
fail "switch_root"
