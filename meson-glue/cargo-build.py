#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Run cargo for QEMU's meson build and report what ninja must watch.

Meson passes its source and build directories; build.rs needs both to
run bindgen against config-host.h and the generated QAPI headers.  The
depfile lists every input of the staticlib, so ninja reruns this when
Rust code, the C shim, the wrapper header or the manifest changes, and
cargo's own fingerprints keep the rerun cheap.

With --localize (QEMU configured with its own Rust), the staticlib is
turned into an archive of one relocatable object in which only the
functions C calls stay global: the crate's copy of Rust's standard
library becomes private to it, so it cannot clash with the copy in
QEMU's own Rust staticlib when both are linked into one binary.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile


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


def c_symbols(archive, crate_name):
    """The global symbols the crate and its C shim define for C: the
    #[no_mangle] functions and the shim's helpers, not Rust-mangled or
    compiler-generated ones."""
    members = subprocess.run(["ar", "t", archive], check=True,
                             capture_output=True, text=True).stdout.split()
    own = [m for m in members
           if m.startswith(crate_name + "-") or m.endswith("-shim.o")]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["ar", "x", os.path.abspath(archive)] + own,
                       cwd=tmp, check=True)
        out = subprocess.run(["nm", "-g", "--defined-only", "--format=posix"]
                             + own, cwd=tmp, check=True,
                             capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        words = line.split()
        if len(words) < 2 or words[0].endswith(":") or words[0].endswith("]:"):
            continue
        name = words[0]
        if not name.startswith(("_ZN", "_R", "anon.")):
            syms.add(name)
    return sorted(syms)


def localize(archive, output, crate_name):
    """Link the staticlib's members that C needs into one object, keep
    only the C symbols global, and archive that object as OUTPUT."""
    syms = c_symbols(archive, crate_name)
    if not syms:
        sys.exit("cargo-build.py: no C symbols in " + archive)
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, crate_name + ".o")
        keep = os.path.join(tmp, "keep")
        with open(keep, "w", encoding="utf-8") as f:
            f.write("\n".join(syms) + "\n")
        ld = os.environ.get("LD", "ld")
        subprocess.run([ld, "-r", "-o", obj]
                       + [a for s in syms for a in ("-u", s)]
                       + [archive], check=True)
        # the bitcode rustc embeds is of no use to the final link, and
        # binutils' LLVM plugin cannot read it once ld -r has joined it
        subprocess.run(["objcopy", "--keep-global-symbols=" + keep,
                        "--remove-section=.llvmbc",
                        "--remove-section=.llvmcmd", obj], check=True)
        tmp_out = output + ".tmp"
        if os.path.exists(tmp_out):
            os.unlink(tmp_out)
        subprocess.run(["ar", "rcs", tmp_out, obj], check=True)
        os.replace(tmp_out, output)


def main():
    ap = argparse.ArgumentParser()
    for opt in ("crate", "qemu-src", "qemu-build", "target-dir",
                "output", "depfile"):
        ap.add_argument("--" + opt, required=True)
    ap.add_argument("--localize", action="store_true",
                    help="keep only the C symbols global (QEMU's own Rust"
                         " is linked into the same binary)")
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
    if args.localize:
        localize(built + ".a", args.output, "qemu_monitor_hotplug")
    else:
        shutil.copyfile(built + ".a", args.output)
    with open(args.depfile, "w", encoding="utf-8") as f:
        deps = [d.replace(" ", "\\ ") for d in depfile_inputs(built + ".d",
                                                               args.crate)]
        f.write(args.output + ": " + " ".join(deps) + "\n")


if __name__ == "__main__":
    main()
