# SPDX-License-Identifier: GPL-2.0-or-later
# The devices of the lab build (make LAB=1, --without-default-devices)
# when QEMU's own Rust is on (QEMU_RUST=1): the HPET alone, which QEMU
# then builds from its Rust implementation (X_HPET_RUST), so that QEMU's
# Rust code is linked into qemu-system-x86_64 next to the crate.  The
# Makefile links this file into the tree as
# configs/devices/x86_64-softmmu/qmh-rust-lab.mak.
CONFIG_HPET=y
