#!/usr/bin/env bash
# Build the test guest of the real-guest tests: Debian's cloud kernel and an initramfs with
# busybox, the QEMU guest agent and the virtio modules. No download beyond Debian packages
# (linux-image-cloud-amd64, busybox-static, qemu-guest-agent).
#   build-test-guest.sh [CACHE]   prints the folder holding vmlinuz and initrd.img
# The result is cached under CACHE (default ${XDG_CACHE_HOME:-~/.cache}/vmsnap/test-guest),
# keyed by the packages' versions and this script's own hash, so a rebuild happens only
# when one of them changes.
#
# The guest's /init loads the virtio modules, mounts every virtio disk /dev/vdX (ext4) at
# /mnt/vdX, and runs qemu-ga on the virtio port org.qemu.guest_agent.0 (respawned unless
# /run/no-agent exists). qemu-ga's guest-shutdown runs /sbin/shutdown, which syncs,
# unmounts the disks and powers off.
set -euo pipefail
export LC_ALL=C
cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/vmsnap/test-guest}

version() {
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || {
        echo "error: Debian package $1 is not installed (see .ci/run)" >&2
        exit 2
    }
}

kernel_package=$(dpkg-query -W -f='${Depends}' linux-image-cloud-amd64 2>/dev/null |
    tr ',' '\n' | grep -o 'linux-image-[^ ]*-cloud-amd64' | head -1) || true
if [ -z "$kernel_package" ]; then
    echo "error: Debian package linux-image-cloud-amd64 is not installed (see .ci/run)" >&2
    exit 2
fi
release=${kernel_package#linux-image-}
key=$(printf '%s\n' "$release" "$(version "$kernel_package")" "$(version busybox-static)" \
    "$(version qemu-guest-agent)" "$(sha256sum "$0" | cut -d' ' -f1)" | sha256sum | cut -c1-16)
out="$cache/$key"
if [ -s "$out/initrd.img" ] && [ -s "$out/vmlinuz" ]; then
    echo "$out"
    exit 0
fi

for file in /boot/vmlinuz-"$release" /bin/busybox /usr/sbin/qemu-ga; do
    [ -e "$file" ] || {
        echo "error: $file is missing (see .ci/run)" >&2
        exit 2
    }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,mnt,var,etc,lib/modules}
ln -s ../run "$root/var/run"
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

# qemu-ga and the shared libraries it needs, at the paths ldd names.
cp /usr/sbin/qemu-ga "$root/sbin/qemu-ga"
for lib in $(ldd /usr/sbin/qemu-ga | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

# virtio_ring first; the PCI helpers before virtio_pci.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    virtio_console virtio_blk)
for module in "${modules[@]}"; do
    found=$(find "/lib/modules/$release" -name "$module.ko*" | head -1)
    [ -n "$found" ] || {
        echo "error: kernel module $module not found for $release" >&2
        exit 2
    }
    case "$found" in
    *.ko.xz) xz -dc "$found" >"$root/lib/modules/$module.ko" ;;
    *.ko.zst) zstd -qdc "$found" >"$root/lib/modules/$module.ko" ;;
    *) cp "$found" "$root/lib/modules/$module.ko" ;;
    esac
done

cat >"$root/init" <<EOF
#!/bin/sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
for module in ${modules[*]}; do
    insmod /lib/modules/\$module.ko 2>/dev/null
done
for _ in \$(seq 1 50); do
    ls /dev/vport*p1 >/dev/null 2>&1 && break
    sleep 0.1
done
for disk in /dev/vd?; do
    [ -b "\$disk" ] || continue
    mkdir -p "/mnt/\${disk#/dev/}"
    mount -t ext4 "\$disk" "/mnt/\${disk#/dev/}" || echo "vmsnap-guest: cannot mount \$disk"
done
echo "vmsnap-guest: ready:" /dev/vport* /dev/vd* "\$(grep /mnt /proc/mounts | cut -d' ' -f2)"
while [ ! -e /run/no-agent ]; do
    port=\$(ls /dev/vport*p1 2>/dev/null | head -1)
    [ -n "\$port" ] && qemu-ga -m virtio-serial -p "\$port"
    sleep 1
done
echo "vmsnap-guest: agent stopped for good"
while true; do sleep 3600; done
EOF
cat >"$root/sbin/shutdown" <<'EOF'
#!/bin/sh
# Called by qemu-ga's guest-shutdown: flush and unmount the disks, then power off.
touch /run/no-agent
sync
for mountpoint in /mnt/vd?; do umount "$mountpoint" 2>/dev/null; done
poweroff -f
EOF
chmod +x "$root/init" "$root/sbin/shutdown"

mkdir -p "$out.tmp"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp/initrd.img"
cp /boot/vmlinuz-"$release" "$out.tmp/vmlinuz"
printf 'kernel %s\nkey %s\n' "$release" "$key" >"$out.tmp/MANIFEST"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
