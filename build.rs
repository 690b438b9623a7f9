// SPDX-License-Identifier: GPL-2.0-or-later
//! Generates Rust bindings for the QEMU API the crate uses and compiles
//! the C shim, both with the flags QEMU's own build uses for
//! monitor/qmp.c.  QEMU's meson passes its directories through
//! `QEMU_SRC_DIR` and `QEMU_BUILD_DIR` (cargo-build.py, next to the
//! meson.build that runs it).

use std::{
    env,
    path::{Path, PathBuf},
};

fn required_dir(var: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let dir = env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} is not set: build the crate through QEMU's meson"));
    assert!(dir.is_dir(), "{var}={} is not a directory", dir.display());
    dir
}

/// The preprocessor flags QEMU compiles monitor/qmp.c with, made
/// absolute, from meson's `compile_commands.json`; and, for a QEMU
/// built with ThreadSanitizer, the include directory of the sanitizer's
/// headers (see [`tsan_include`]).
fn qemu_cflags(build: &Path) -> (Vec<String>, Option<PathBuf>) {
    let db = build.join("compile_commands.json");
    println!("cargo:rerun-if-changed={}", db.display());
    let text = std::fs::read_to_string(&db)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", db.display()));
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", db.display()));
    let entry = entries
        .iter()
        .find(|e| {
            e["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("monitor/qmp.c"))
        })
        .unwrap_or_else(|| panic!("monitor/qmp.c is not in {}", db.display()));
    let dir = PathBuf::from(entry["directory"].as_str().expect("directory"));
    let words: Vec<String> = match entry["command"].as_str() {
        Some(cmd) => shell_split(cmd),
        None => entry["arguments"]
            .as_array()
            .expect("command or arguments")
            .iter()
            .map(|a| a.as_str().expect("argument").to_owned())
            .collect(),
    };
    let abs = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let tsan = tsan_include(&words);
    let mut flags = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if let Some(p) = w.strip_prefix("-I") {
            let p = if p.is_empty() {
                it.next().expect("-I path").as_str()
            } else {
                p
            };
            flags.push(format!("-I{}", abs(p)));
        } else if w == "-iquote" || w == "-isystem" || w == "-include" {
            flags.push(w.clone());
            flags.push(abs(it.next().expect("path after flag")));
        } else if w.starts_with("-D") || w.starts_with("-U") || w.starts_with("-std=") {
            flags.push(w.clone());
        }
    }
    (flags, tsan)
}

/// `--enable-tsan` (`CONFIG_TSAN`) has include/qemu/thread.h include
/// `sanitizer/tsan_interface.h`, a header of gcc's own include directory,
/// which libclang (bindgen) does not search.  For a QEMU compiled with
/// `-fsanitize=thread` (`words`, monitor/qmp.c's command line), returns
/// that directory of the compiler that built QEMU
/// (`gcc -print-file-name=include`).
fn tsan_include(words: &[String]) -> Option<PathBuf> {
    if !words.iter().any(|w| w == "-fsanitize=thread") {
        return None;
    }
    let mut compiler = words.iter().filter(|w| !w.starts_with('-'));
    let mut cc = compiler.next().expect("the compiler");
    if cc.ends_with("ccache") {
        cc = compiler.next().expect("the compiler after ccache");
    }
    let out = std::process::Command::new(cc)
        .arg("-print-file-name=include")
        .output()
        .unwrap_or_else(|e| panic!("{cc} -print-file-name=include: {e}"));
    let dir = String::from_utf8(out.stdout).expect("a UTF-8 path");
    let dir = Path::new(dir.trim());
    assert!(
        out.status.success() && dir.join("sanitizer/tsan_interface.h").is_file(),
        "{cc} -print-file-name=include: no sanitizer/tsan_interface.h in {}",
        dir.display()
    );
    Some(dir.to_owned())
}

/// Minimal POSIX-shell word splitting, enough for meson's quoting.
fn shell_split(cmd: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote = None;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => cur.get_or_insert_default().extend(chars.next()),
            (Some(_), c) => cur.get_or_insert_default().push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.get_or_insert_default();
            }
            (None, c) if c.is_whitespace() => words.extend(cur.take()),
            (None, c) => cur.get_or_insert_default().push(c),
        }
    }
    words.extend(cur);
    words
}

/// Types Rust only passes by pointer (or, for `QemuMutex`, embeds without
/// looking inside): bindgen keeps their size and alignment, not fields.
const OPAQUE: &str = "Chardev|MonitorQMP|QEMUBH|IOThread|AioContext|Coroutine|Error|QemuMutex\
                      |QIOChannel|Object|UserCreatable";

/// The header of the monitor-qmp and monitor-hmp objects, which the
/// series adds after the commands: a tree without it (a prefix of the
/// series) builds the crate without the objects' hooks.
const OBJECTS_HEADER: &str = "include/monitor/monitor-object.h";

fn main() {
    let src = required_dir("QEMU_SRC_DIR");
    let build = required_dir("QEMU_BUILD_DIR");
    let (mut cflags, tsan_include) = qemu_cflags(&build);
    // monitor-internal.h lives outside include/
    cflags.push(format!("-I{}", src.display()));
    cflags.push(format!(
        "-I{}",
        PathBuf::from("src").canonicalize().expect("src").display()
    ));

    println!("cargo:rerun-if-changed=src/wrapper.h");
    let objects_header = src.join(OBJECTS_HEADER);
    println!("cargo:rerun-if-changed={}", objects_header.display());
    println!("cargo::rustc-check-cfg=cfg(qemu_monitor_objects)");
    if objects_header.exists() {
        println!("cargo:rustc-cfg=qemu_monitor_objects");
        // and for src/wrapper.h, in bindgen and in the shim
        cflags.push("-DQMH_MONITOR_OBJECTS".to_owned());
    }
    println!("cargo:rerun-if-changed=src/shim.c");

    let mut shim = cc::Build::new();
    shim.file("src/shim.c").warnings(false);
    for f in &cflags {
        shim.flag(f);
    }
    // Not instrumented for ThreadSanitizer, like the Rust code: the
    // test binaries that link the crate (for its constants) have no
    // sanitizer runtime for an instrumented object's constructor
    shim.compile("qmh_shim");

    // gcc's directory after libclang's own, so that clang's stddef.h
    // and friends still win
    if let Some(dir) = &tsan_include {
        cflags.push("-idirafter".to_owned());
        cflags.push(dir.display().to_string());
    }

    let bindings = bindgen::Builder::default()
        .header("src/wrapper.h")
        .clang_args(&cflags)
        .rust_target("1.81.0".parse().expect("rust target"))
        .disable_header_comment()
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .use_core()
        .derive_default(false)
        .generate_comments(false)
        .layout_tests(true)
        // glib's structs come from glib-sys; its scalar typedefs are generated
        .blocklist_type("G[A-Z].*")
        .raw_line("#[allow(unused_imports)] use glib_sys::*;")
        .raw_line("#[allow(unused_imports)] use libc::*;")
        .allowlist_type(
            "CharFrontend|Monitor|MonitorInfo|MonitorInfoList|MonitorMode|MonitorQMPCloseAction\
             |strList",
        )
        .allowlist_type("qmh_.*_fn|MonitorObject")
        .allowlist_var("TYPE_MONITOR_(OBJECT|QMP|HMP)")
        .allowlist_var("mon_iothread|qmp_dispatcher_mon")
        .allowlist_function(
            "qmh_.*|qapi_free_MonitorInfoList|error_free|error_propagate|error_setg_internal",
        )
        .allowlist_function("aio_bh_schedule_oneshot_full|iohandler_get_aio_context")
        .allowlist_function(
            "monitor_init_qmp_full|monitor_cur|monitor_data_destroy\
             |monitor_qmp_cleanup_queue_and_resume|monitor_qmp_end_session\
             |monitor_drop_output_locked|monitor_cancel_bottom_halves\
             |qemu_chr_find|qemu_chr_fe_set_handlers|qemu_chr_fe_disconnect\
             |iothread_get_aio_context|iothread_get_g_main_context\
             |aio_wait_bh_oneshot|monitor_check_new_id\
             |qmp_chardev_remove|warn_report_err|bql_locked|qemu_in_coroutine\
             |monitor_close_action_supported|monitor_run_close_action",
        )
        .allowlist_function(
            "monitor_init_hmp_full|user_creatable_del|object_get_objects_root\
             |object_resolve_path_component|object_dynamic_cast\
             |object_get_canonical_path_component|object_new\
             |object_property_try_add_child|object_unref",
        )
        // C enums that Rust reads from C, as Rust enums: QAPI only ever
        // stores the values of the enum
        .rustified_enum("MonitorQMPCloseAction|MonitorMode")
        .allowlist_type(OPAQUE)
        .opaque_type(OPAQUE)
        .generate()
        .expect("bindgen failed on src/wrapper.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs");
}
