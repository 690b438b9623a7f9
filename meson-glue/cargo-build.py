#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Run cargo for QEMU's meson build and report what ninja must watch.

Meson passes its source and build directories; build.rs needs both to
run bindgen against config-host.h and the generated QAPI headers.  The
depfile lists every input of the staticlib, so ninja reruns this when
Rust code, the C shim, the wrapper header or the manifest changes, and
cargo's own fingerprints keep the rerun cheap.
"""
import argparse
import os
import shutil
import subprocess
import sys


def depfile_inputs(cargo_dep, crate):
    """Inputs from cargo's dep-info, plus build inputs it does not list."""
    inputs = []
    with open(cargo_dep, encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        if ":" not in line:
            continue
        _, deps = line.split(":", 1)
        parts = deps.replace("\\ ", "\0").split()
        inputs += [p.replace("\0", " ") for p in parts]
    for extra in ("Cargo.toml", "Cargo.lock", "build.rs",
                  "src/wrapper.h", "src/shim.c"):
        inputs.append(os.path.join(crate, extra))
    return sorted(set(inputs))


def main():
    ap = argparse.ArgumentParser()
    for opt in ("crate", "qemu-src", "qemu-build", "target-dir",
                "output", "depfile"):
        ap.add_argument("--" + opt, required=True)
    args = ap.parse_args()

    env = dict(os.environ,
               QEMU_SRC_DIR=os.path.abspath(args.qemu_src),
               QEMU_BUILD_DIR=os.path.abspath(args.qemu_build))
    cmd = ["cargo", "build", "--release", "--locked", "--lib",
           "--manifest-path", os.path.join(args.crate, "Cargo.toml"),
           "--target-dir", os.path.abspath(args.target_dir)]
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        sys.exit(rc)

    built = os.path.join(args.target_dir, "release", "libqemu_monitor_hotplug")
    shutil.copyfile(built + ".a", args.output)
    with open(args.depfile, "w", encoding="utf-8") as f:
        deps = [d.replace(" ", "\\ ") for d in depfile_inputs(built + ".d",
                                                               args.crate)]
        f.write(args.output + ": " + " ".join(deps) + "\n")


if __name__ == "__main__":
    main()
