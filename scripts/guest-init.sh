#!/guest/busybox sh
# PID 1 of the rbdvol test guest (scripts/guest.sh builds it in): mounts the
# kernel's filesystems, brings up virtio-net, reads /guest.env and runs
# /scenario.sh — both from the cpio archive the test appended — then powers
# off. Lines starting with "GUEST " are for the test; nothing here prints
# the key.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /var/lib
mount -t tmpfs varlib /var/lib
echo "GUEST BOOTED $(cut -d' ' -f1 /proc/uptime)"
modprobe virtio_pci && modprobe virtio_net || echo "GUEST FAIL no network driver"
if [ ! -f /guest.env ] || [ ! -f /scenario.sh ]; then
    echo "GUEST FAIL no /guest.env or /scenario.sh appended"
    poweroff -f
fi
set -a
. /guest.env
set +a
ip link set lo up
ip link set eth0 up
ip addr add "$t_ip" dev eth0
i=0
until ping -c1 -W1 "$t_host" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 20 ] && { echo "GUEST FAIL host $t_host unreachable"; poweroff -f; }
done
echo "GUEST NET UP $(cut -d' ' -f1 /proc/uptime)"
sh /scenario.sh
echo "GUEST SCENARIO EXIT $? $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
