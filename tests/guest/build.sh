#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# build.sh OUT DOWNLOADS
# The test guest, from Debian packages: the distribution's kernel
# (OUT/vmlinuz) and an initramfs of busybox-static and tests/guest/init
# (OUT/initrd.img).  The packages are downloaded, not installed.
set -eu
out=$1 dl=$2
here=$(cd "$(dirname "$0")" && pwd)
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

# linux-image-amd64 names the current kernel package
kernel=$(apt-cache depends linux-image-amd64 2>/dev/null |
         sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
if [ -z "$kernel" ]; then
    $SUDO apt-get update -qq
    kernel=$(apt-cache depends linux-image-amd64 |
             sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
fi
[ -n "$kernel" ] || { echo "guest: no linux-image-amd64 in apt" >&2; exit 1; }

mkdir -p "$dl"
for pkg in "$kernel" busybox-static; do
    ls "$dl/${pkg}_"*.deb >/dev/null 2>&1 ||
        (cd "$dl" && apt-get download -qq "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    ls "$dl/${pkg}_"*.deb >/dev/null 2>&1 || { echo "guest: cannot download $pkg" >&2; exit 1; }
done

rm -rf "$out" && mkdir -p "$out/root/bin" "$out/root/proc" "$out/root/sys" "$out/root/dev"
dpkg-deb --fsys-tarfile "$dl/${kernel}_"*.deb | tar -x -C "$out" --wildcards './boot/vmlinuz-*'
mv "$out"/boot/vmlinuz-* "$out/vmlinuz" && rmdir "$out/boot"

dpkg-deb --fsys-tarfile "$dl/busybox-static_"*.deb | tar -x -C "$out" ./bin/busybox
mv "$out/bin/busybox" "$out/root/bin/busybox" && rmdir "$out/bin"
cp "$here/init" "$out/root/init"
chmod 755 "$out/root/init"
(cd "$out/root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc --owner=0:0) | gzip -1 > "$out/initrd.img"
rm -rf "$out/root"
echo "guest: $kernel and busybox in $out"
