#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# accels.sh QEMU GUEST_DIR
# Prints the accelerators that boot the test guest, comma-separated:
# "kvm,tcg" where /dev/kvm opens and the guest boots under it within
# 20 s, else "tcg".  /dev/kvm can open and still not run a standard
# guest: a nested host with a paravirtual KVM (kvm-pvm) does that.
set -u
qemu=$1 guest=$2
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    if timeout 20 "$qemu" -M pc -accel kvm -m 256 -nodefaults -display none \
        -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
        -append "console=ttyS0 quiet panic=-1 qmh.probe" -serial stdio \
        </dev/null 2>/dev/null | grep -q "qmh: ready"; then
        echo kvm,tcg
        exit 0
    fi
    echo "accels.sh: /dev/kvm opens, but the guest does not boot under KVM: TCG only" >&2
fi
echo tcg
