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
INIT=sh
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        dt.project=*) PROJECT=$(echo "${arg#dt.project=}" | base64 -d) ;;
        dt.init=systemd) INIT=systemd ;;
    esac
done
[ -n "$PROJECT" ] || fail "no dt.project= on the kernel command line"

mount -t virtiofs rootfs /lower || fail "mount the virtiofs root"
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "mount the overlay's tmpfs"
mkdir /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || fail "mount the overlay root"
if [ "$INIT" = systemd ]; then
    # An empty /tmp of its own, as under the shell init; tmpfiles may only create it, never
    # empty it (the project share may be mounted under it).
    mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "mount /tmp"
    mkdir -p /newroot/etc/tmpfiles.d
    echo "d /tmp 1777 root root -" > /newroot/etc/tmpfiles.d/tmp.conf
    mkdir -p "/newroot$PROJECT"
fi
mount -t virtiofs project "/newroot$PROJECT" || fail "mount the project at $PROJECT"

if [ "$INIT" = systemd ]; then
    # systemd as PID 1 (dt.init=systemd): it starts dt.target (systemd.unit= on the kernel
    # command line), whose one service runs guest-init.sh. A fixed machine id: no first-boot
    # presets on the host's unit files.
    HERE="/newroot$PROJECT/tests/helpers/vm"
    echo 0d1ec7000d1ec7000d1ec7000d1ec700 > /newroot/etc/machine-id
    # The host's root may come from a container image: systemd would then see "docker" and
    # take its settings from its own arguments instead of the kernel command line.
    rm -f /newroot/.dockerenv /newroot/run/.containerenv
    # ... and docker's policy-rc.d (exit 101), which makes deb-systemd-invoke refuse to start,
    # restart or stop anything from a package's maintainer scripts: not so on a real machine.
    rm -f /newroot/usr/sbin/policy-rc.d
    cat "$HERE/dt.target" > /newroot/etc/systemd/system/dt.target || fail "dt.target"
    cat "$HERE/dt-command.service" > /newroot/etc/systemd/system/dt-command.service \
        || fail "dt-command.service"
    cat "$HERE/guest-init.sh" > /newroot/etc/dt-guest-init.sh || fail "guest-init.sh"
    echo "initramfs: root and $PROJECT mounted, switching root to systemd"
    umount /proc /sys /dev
    exec switch_root /newroot /lib/systemd/systemd
    fail "switch_root to systemd"
fi
echo "initramfs: root and $PROJECT mounted, switching root"
umount /proc /sys /dev
exec switch_root /newroot /bin/sh "$PROJECT/tests/helpers/vm/guest-init.sh"
fail "switch_root"
