#!/bin/sh
# PID 1 in the guest after switch_root (run by the host's /bin/sh, seen through the overlay).
# Mounts the API filesystems, loads IPVS and friends, runs the command from the kernel command
# line in the project directory, reports its exit status on the second serial port, powers off.
# Whatever fails, the guest still reports a status and powers off.

STATUS_PORT=/dev/ttyS1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "guest-init: $*"; }

power_off() {
    sync
    /bin/busybox poweroff -f
    echo o > /proc/sysrq-trigger
    sleep 60
}

report() { echo "$1" > "$STATUS_PORT"; }

trap 'report "DT-VM-FAIL guest-init interrupted"; power_off' HUP INT TERM

param() {  # the base64-decoded value of dt.<name>= on the kernel command line
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            "dt.$1="*) echo "${arg#dt."$1"=}" | base64 -d; return 0 ;;
        esac
    done
    return 1
}

if [ "${DT_UNDER_SYSTEMD:-}" = 1 ]; then
    # Run by dt-command.service with systemd as PID 1: the API filesystems, /run and /tmp are
    # systemd's (/tmp stays the overlay's, so a project under it stays visible).
    mkdir -p /run/netns /run/lock
else
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts /dev/shm
    mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    mkdir -p /run/netns /run/lock
fi
echo director-vm > /proc/sys/kernel/hostname
ip link set lo up

modprobe -a ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh \
    ip_vs_sh ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh nf_conntrack \
    || say "WARNING: could not load ip_vs and its schedulers"
modprobe -a -q veth bridge br_netfilter nfnetlink nf_tables nf_nat nft_chain_nat nft_ct \
    nft_nat nft_masq nft_fib_inet nft_reject_inet nft_compat || say "note: some modules missing"

PROJECT=$(param project) || { report "DT-VM-FAIL no dt.project"; power_off; }
case "${DT_UNDER_SYSTEMD:-}:$PROJECT" in
    :/tmp | :/tmp/* | *:/run | *:/run/*)  # hidden by a tmpfs mounted since: mount the share again
        mkdir -p "$PROJECT"
        mount -t virtiofs project "$PROJECT" \
            || { report "DT-VM-FAIL cannot mount the project at $PROJECT"; power_off; }
        ;;
esac
VENV_BIN=$(param venv) || VENV_BIN="$PROJECT/.venv/bin"
if COMMAND=$(param cmd); then
    printf '%s\n' "$COMMAND" > /run/dt-command.sh
elif COMMAND_FILE=$(param cmdfile); then
    cp "$COMMAND_FILE" /run/dt-command.sh || { report "DT-VM-FAIL cannot read $COMMAND_FILE"; power_off; }
else
    report "DT-VM-FAIL no dt.cmd or dt.cmdfile"
    power_off
fi

export DIRECTOR_IN_GUEST=1 HOME=/root LANG=C.UTF-8 PYTHONUNBUFFERED=1 TERM=dumb
export PATH="$VENV_BIN:$PATH"
cd "$PROJECT" || { report "DT-VM-FAIL cannot cd to $PROJECT"; power_off; }

read -r uptime _ < /proc/uptime
echo "DT-VM-COMMAND-START uptime=$uptime"
sh /run/dt-command.sh < /dev/null
status=$?
read -r uptime _ < /proc/uptime
echo "DT-VM-COMMAND-END status=$status uptime=$uptime"
report "DT-VM-STATUS $status"
power_off
