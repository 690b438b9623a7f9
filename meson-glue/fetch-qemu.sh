#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# fetch-qemu.sh VERSION DEST DOWNLOADS [MORE_DOWNLOADS...]
# Unpacks Debian's qemu source package VERSION (Debian patches applied)
# into DEST.  A .dsc already in DOWNLOADS or in one of MORE_DOWNLOADS
# (another checkout's downloads, say) is used as it is; otherwise it is
# downloaded into DOWNLOADS, after adding deb-src entries for sid and
# trixie, with the archive URI taken from this machine's own apt
# sources, if apt does not know the version yet.
set -eu
version=$1 dest=$2 dl=$3
shift 3
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

unpack() {
    rm -rf "$dest"
    mkdir -p "$(dirname "$dest")"
    dpkg-source --no-check -x "$1" "$dest" >/dev/null
    echo "fetch-qemu: qemu $version in $dest (from $(dirname "$1"))"
}

for d in "$dl" "$@"; do
    if [ -f "$d/qemu_${version#*:}.dsc" ]; then
        unpack "$d/qemu_${version#*:}.dsc"
        exit 0
    fi
done

known() { apt-cache showsrc qemu 2>/dev/null | grep -qx "Version: $version"; }

if ! known; then
    # The machine's Debian archive: the first URI that is not a security one.
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
              /etc/apt/sources.list.d/*.list 2>/dev/null |
          sed -n -e 's/^URIs:[[:space:]]*//p' \
                 -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' |
          tr ' ' '\n' | grep '/debian/\?$' | grep -v security | head -n 1)
    [ -n "$uri" ] || { echo "fetch-qemu: no Debian archive in the apt sources" >&2; exit 1; }
    $SUDO tee /etc/apt/sources.list.d/qemu-monitor-hotplug-src.sources >/dev/null <<EOS
Types: deb-src
URIs: $uri
Suites: sid trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
    $SUDO apt-get update -qq
    known || { echo "fetch-qemu: qemu $version is not in $uri (sid, trixie)" >&2; exit 1; }
fi

mkdir -p "$dl"
(cd "$dl" && apt-get source --download-only -qq "qemu=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
unpack "$(ls "$dl"/qemu_"${version#*:}".dsc)"
