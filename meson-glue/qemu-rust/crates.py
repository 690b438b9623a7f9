#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU's crates for a QEMU tree that has the wraps but not their meson files.

crates.py SRC

QEMU configured with --enable-rust builds the crates its
subprojects/*-rs.wrap files name.  Each wrap downloads a crate from
crates.io and has meson lay a meson.build over it from
subprojects/packagefiles/NAME; QEMU's release tarball has those
directories, Debian's source package ("+ds") drops them.  This script

1. fetches the crates with cargo: QEMU's rust/Cargo.lock pins the same
   versions as the wraps, so `cargo fetch --locked` on QEMU's workspace
   downloads exactly them, from the registry cargo is set up to use,
   into cargo's cache (nothing is downloaded when they are there);
2. copies each wrap's crate into subprojects/packagecache, under the
   wrap's source_filename and checked against its source_hash: meson
   takes a download from there and never goes to the network for it
   (configure runs with --disable-download);
3. unless the tree has packagefiles of its own, writes
   subprojects/packagefiles/NAME/meson.build for every wrap: one Rust
   library with the crate's edition, the features cargo resolves for
   QEMU's workspace, the crates it depends on (each a subproject of its
   own) and what the crate's build script would tell rustc.  A crate
   that proc-macro code uses is built for the build machine (native),
   as QEMU's rust/meson.build asks for it.

A crate meson has already unpacked under subprojects/ keeps the meson
file it was unpacked with; when the written file differs, the unpacked
copy is removed and meson unpacks it again.
"""
import configparser
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

# What each crate's build.rs tells rustc, for rustc 1.83 or later
# (QEMU's minimum), where the script probes the compiler.  A crate
# with a build script that is not listed here stops the script: read
# its build.rs and add it.
BUILD_SCRIPT_CFGS = {
    # std's Backtrace is stable since 1.65
    "anyhow": ["std_backtrace"],
    # its build.rs only has pkg-config find glib; QEMU links glib itself
    "glib-sys": [],
    # one cfg per language feature the compiler has; all of them here
    "libc": ["freebsd11", "libc_priv_mod_use", "libc_union",
             "libc_const_size_of", "libc_align", "libc_int128",
             "libc_core_cvoid", "libc_packedN", "libc_cfg_target_vendor",
             "libc_non_exhaustive", "libc_long_array", "libc_ptr_addr_of",
             "libc_underscore_const_names", "libc_const_extern_fn"],
    # proc_macro's unstable API is not there on a stable compiler
    "proc-macro-error": ["use_fallback"],
    # only asks about compilers older than 1.37
    "proc-macro-error-attr": [],
    # wraps the compiler's proc_macro, as with its proc-macro feature,
    # which QEMU's crates turn on
    "proc-macro2": ["wrap_proc_macro"],
}

MARKER = ".written-by-qemu-monitor-hotplug"


def die(msg):
    sys.exit("crates.py: " + msg)


def read_wraps(src):
    """{wrap name: its [wrap-file] section} for QEMU's crates"""
    wraps = {}
    for path in sorted(glob.glob(os.path.join(src, "subprojects", "*-rs.wrap"))):
        ini = configparser.ConfigParser(interpolation=None)
        ini.read(path, encoding="utf-8")
        if ini.has_section("wrap-file"):
            wraps[os.path.basename(path)[:-len(".wrap")]] = dict(ini["wrap-file"])
    if not wraps:
        die(f"no subprojects/*-rs.wrap in {src}")
    return wraps


def cargo(*args, manifest):
    """cargo on QEMU's workspace: from cargo's cache if it has everything,
    from the network otherwise"""
    cmd = ["cargo", *args, "--locked", "--manifest-path", manifest]
    env = dict(os.environ, CARGO_NET_OFFLINE="true")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        env["CARGO_NET_OFFLINE"] = "false"
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout


def api(version):
    """the part of a version that semver keeps compatible, as in the
    wraps' names: 1.0.98 -> 1, 0.2.9 -> 0.2"""
    major, minor = version.split(".")[:2]
    return major if major != "0" else f"0.{minor}"


class Crate:
    def __init__(self, pkg, node, wrap):
        self.pkg, self.node, self.wrap = pkg, node, wrap
        self.name, self.version = pkg["name"], pkg["version"]
        libs = [t for t in pkg["targets"]
                if set(t["kind"]) & {"lib", "rlib", "proc-macro"}]
        if len(libs) != 1:
            die(f"{self.name}: no library target")
        self.lib = libs[0]
        self.proc_macro = "proc-macro" in self.lib["kind"]
        self.has_build_script = any("custom-build" in t["kind"] for t in pkg["targets"])
        self.machines = set()          # "host", "native"
        self.deps = []                 # Crate

    @property
    def meson_name(self):
        return f"{self.name}-{api(self.version)}-rs"

    def rust_args(self):
        args = ["--cap-lints", "allow"]
        for f in sorted(self.node["features"]):
            args += ["--cfg", f'feature="{f}"']
        if self.has_build_script:
            if self.name not in BUILD_SCRIPT_CFGS:
                die(f"{self.name} {self.version} has a build script that "
                    "crates.py does not know: add what it emits to BUILD_SCRIPT_CFGS")
            for c in BUILD_SCRIPT_CFGS[self.name]:
                args += ["--cfg", c]
        return args

    def meson_build(self):
        """the meson.build meson lays over the unpacked crate"""
        if len(self.machines) != 1:
            die(f"{self.name} is needed for the host and the build machine:"
                " crates.py builds a crate for one of them only")
        # a proc-macro runs in the compiler, and so do its dependencies;
        # its own dependency object is looked up for the crate using it
        native = "native" in self.machines and not self.proc_macro
        deps_native = native or self.proc_macro
        edition = self.pkg.get("edition", "2015")
        path = os.path.relpath(self.lib["src_path"],
                               os.path.dirname(self.pkg["manifest_path"]))
        args = self.rust_args()
        out = [
            f"# {self.name} {self.version} for QEMU's meson build, written by",
            "# qemu-monitor-hotplug's qemu-rust/crates.py from what cargo resolves",
            "# for QEMU's rust/Cargo.lock (features, dependencies) and what the",
            "# crate's build script would emit.",
            f"project({quote(self.meson_name)}, 'rust', version: {quote(self.version)},",
            f"  license: {quote(self.pkg.get('license') or 'unknown')},"
            " meson_version: '>=1.5.0')",
            "",
            "deps = []",
        ]
        for d in self.deps:
            out.append(f"subproject({quote(d.meson_name)})")
            out.append(f"deps += dependency({quote(d.meson_name)},"
                       f" native: {meson_bool(deps_native)})")
        out += [
            "",
            "lib = " + ("import('rust').proc_macro(" if self.proc_macro
                        else "static_library(") + f"{quote(self.lib['name'])}, {quote(path)},",
            f"  override_options: ['rust_std={edition}', 'build.rust_std={edition}'],",
            "  rust_args: [",
            *(f"    {quote(a)}, {quote(b)}," for a, b in zip(args[::2], args[1::2])),
            "  ],",
            "  dependencies: deps,",
        ]
        if not self.proc_macro:
            out += ["  rust_abi: 'rust',", f"  native: {meson_bool(native)},"]
        out += [
            ")",
            f"meson.override_dependency({quote(self.meson_name)},",
            f"  declare_dependency(link_with: lib), native: {meson_bool(native)})",
            "",
        ]
        return "\n".join(out)


def quote(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def meson_bool(b):
    return "true" if b else "false"


def resolve(src, wraps):
    """the wraps' crates as cargo resolves QEMU's workspace, with their
    dependencies and the machines they are built for"""
    manifest = os.path.join(src, "rust", "Cargo.toml")
    host = subprocess.run(["rustc", "-vV"], check=True, capture_output=True,
                          text=True).stdout.split("host: ")[1].split()[0]
    cargo("fetch", "--target", host, manifest=manifest)
    meta = json.loads(cargo("metadata", "--format-version", "1",
                            "--filter-platform", host, manifest=manifest))
    pkgs = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    by_wrap = {}
    crates = {}
    for pid, pkg in pkgs.items():
        if pkg["source"] is None:
            continue                    # QEMU's own, built by rust/meson.build
        name = f"{pkg['name']}-{api(pkg['version'])}-rs"
        if name in wraps:
            if name in by_wrap:
                die(f"two versions of {pkg['name']} in QEMU's Cargo.lock for {name}")
            crates[pid] = by_wrap[name] = Crate(pkg, nodes[pid], wraps[name])
    missing = set(wraps) - set(by_wrap)
    if missing:
        die(f"not in QEMU's rust/Cargo.lock: {', '.join(sorted(missing))}")

    # what each crate needs at run time (normal dependencies; build
    # scripts and their dependencies are replaced by BUILD_SCRIPT_CFGS)
    def normal_deps(pid):
        for d in nodes[pid]["deps"]:
            if any(k["kind"] is None for k in d["dep_kinds"]):
                yield d
    for pid, c in crates.items():
        for d in normal_deps(pid):
            if d["pkg"] not in crates:
                die(f"{c.name} needs {pkgs[d['pkg']]['name']}, which no wrap provides")
            dep = crates[d["pkg"]]
            if d["name"] != dep.lib["name"]:
                die(f"{c.name} renames {dep.name} to {d['name']}: crates.py"
                    " cannot say that to meson")
            c.deps.append(dep)

    # machines: QEMU's own crates run on the host, except proc-macros,
    # whose dependencies run in the compiler
    def is_proc_macro(pid):
        return any("proc-macro" in t["kind"] for t in pkgs[pid]["targets"])
    seen = set()
    def mark(pid, machine):
        if (pid, machine) in seen:
            return
        seen.add((pid, machine))
        if pid in crates:
            crates[pid].machines.add(machine)
        below = "native" if is_proc_macro(pid) else machine
        for d in normal_deps(pid):
            mark(d["pkg"], below)
    for pid in meta["workspace_members"]:
        mark(pid, "host")
    for c in crates.values():
        if not c.machines:
            die(f"{c.name}: not used by QEMU's workspace")
    return by_wrap


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    if len(sys.argv) != 2:
        die("usage: crates.py QEMU_SRC")
    src = os.path.abspath(sys.argv[1])
    sub = os.path.join(src, "subprojects")
    wraps = read_wraps(src)
    crates = resolve(src, wraps)

    cache = os.path.join(sub, "packagecache")
    os.makedirs(cache, exist_ok=True)
    for name, c in sorted(crates.items()):
        # cargo keeps the .crate it downloaded next to where it unpacked it
        unpacked = os.path.dirname(c.pkg["manifest_path"])
        archive = unpacked.replace(os.sep + os.path.join("registry", "src") + os.sep,
                                   os.sep + os.path.join("registry", "cache") + os.sep) + ".crate"
        if sha256(archive) != c.wrap["source_hash"]:
            die(f"{archive} is not what {name}.wrap names (source_hash)")
        dest = os.path.join(cache, c.wrap["source_filename"])
        if not os.path.exists(dest) or sha256(dest) != c.wrap["source_hash"]:
            shutil.copyfile(archive, dest + ".tmp")
            os.replace(dest + ".tmp", dest)

    files = os.path.join(sub, "packagefiles")
    if os.path.isdir(files) and not os.path.exists(os.path.join(files, MARKER)):
        print(f"crates.py: {files} is the tree's own: used as it is")
        return
    os.makedirs(files, exist_ok=True)
    open(os.path.join(files, MARKER), "w").close()
    for name, c in sorted(crates.items()):
        patch_dir = c.wrap.get("patch_directory")
        if patch_dir is None:
            continue
        text = c.meson_build()
        os.makedirs(os.path.join(files, patch_dir), exist_ok=True)
        path = os.path.join(files, patch_dir, "meson.build")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        # an unpacked crate with another meson.build is unpacked anew
        unpacked = os.path.join(sub, c.wrap["directory"])
        if os.path.isdir(unpacked):
            try:
                with open(os.path.join(unpacked, "meson.build"), encoding="utf-8") as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != text:
                shutil.rmtree(unpacked)
    print(f"crates.py: {len(crates)} crates in {cache}, their meson files in {files}")


if __name__ == "__main__":
    main()
