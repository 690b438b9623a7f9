// SPDX-License-Identifier: GPL-2.0-or-later
//! Runtime QMP monitors for QEMU: the `monitor-add`, `monitor-remove`
//! and `query-monitors` commands and the monitor-qmp and monitor-hmp
//! objects, linked into QEMU as a staticlib.
//!
//! Two layers.  [`qemu`] wraps QEMU's C API in safe types that know
//! nothing of runtime monitors.  On top of it, by what each module
//! holds:
//! - [`errors`]: every error the feature reports, with its message;
//! - `add`: making a monitor (monitor-add, an object's complete step);
//! - [`remove`]: removing one, with its plan and the farewell of its
//!   connection;
//! - [`restrict`]: what a restricted session may run;
//! - `query`: the list query-monitors returns;
//! - `objects`: the steps of the monitor-qmp and monitor-hmp objects
//!   (QEMU 11.1's spelling), on trees that have them;
//! - `commands`: the functions QEMU's C code calls.
//!
//! Everything C can reach returns errors instead of panicking; the
//! profile aborts on panic so that a bug can never unwind into C.

// QEMU's own lint table (rust/Cargo.toml in its tree), which includes
// undocumented_unsafe_blocks: every unsafe block says why it is sound.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags,
    rustdoc::invalid_rust_codeblocks,
    rustdoc::bare_urls,
    rustdoc::unescaped_backticks,
    rustdoc::redundant_explicit_links
)]
#![allow(
    clippy::result_unit_err,
    clippy::unused_self,
    clippy::upper_case_acronyms
)]
#![deny(
    clippy::should_implement_trait,
    clippy::as_ptr_cast_mut,
    clippy::as_underscore,
    clippy::assertions_on_result_states,
    clippy::bool_to_int_with_if,
    clippy::cast_lossless,
    clippy::dbg_macro,
    clippy::debug_assert_with_mut_call,
    clippy::derive_partial_eq_without_eq,
    clippy::doc_markdown,
    clippy::empty_structs_with_brackets,
    clippy::ignored_unit_patterns,
    clippy::implicit_clone,
    clippy::macro_use_imports,
    clippy::missing_safety_doc,
    clippy::mut_mut,
    clippy::needless_bitwise_bool,
    clippy::needless_pass_by_ref_mut,
    clippy::needless_update,
    clippy::no_effect_underscore_binding,
    clippy::option_option,
    clippy::or_fun_call,
    clippy::ptr_as_ptr,
    clippy::ptr_cast_constness,
    clippy::pub_underscore_fields,
    clippy::redundant_clone,
    clippy::redundant_closure_for_method_calls,
    clippy::redundant_else,
    clippy::redundant_pub_crate,
    clippy::ref_binding_to_reference,
    clippy::ref_option_ref,
    clippy::return_self_not_must_use,
    clippy::same_name_method,
    clippy::semicolon_inside_block,
    clippy::shadow_unrelated,
    clippy::significant_drop_in_scrutinee,
    clippy::significant_drop_tightening,
    clippy::suspicious_operation_groupings,
    clippy::transmute_ptr_to_ptr,
    clippy::transmute_undefined_repr,
    clippy::type_repetition_in_bounds,
    clippy::uninlined_format_args,
    clippy::used_underscore_binding,
    clippy::cognitive_complexity,
    clippy::undocumented_unsafe_blocks
)]

pub mod errors;
pub mod remove;
pub mod restrict;

// What calls QEMU links only inside QEMU; unit tests cover the rest,
// and the integration tests in tests/ the whole.
#[cfg(not(test))]
mod add;
#[cfg(not(test))]
mod commands;
#[cfg(all(not(test), qemu_monitor_objects))]
mod objects;
#[cfg(not(test))]
pub mod qemu;
#[cfg(not(test))]
mod query;
