//! Runtime QMP monitors for QEMU: the `monitor-add`, `monitor-remove`
//! and `query-monitors` commands, linked into QEMU as a staticlib.
//!
//! Layout:
//! - [`errors`]: every error the commands report, with its message;
//! - [`removal`]: which removal steps run where (pure logic);
//! - `bindings`, `qemu`: the bindgen'd QEMU API and small safe wrappers
//!   over it (lock guards, list walkers, an `Error **` writer);
//! - `monitors`: monitors on `mon_list` and the removal steps;
//! - `commands`: the `qmp_*` handlers QAPI's generated code calls.
//!
//! Everything C can reach returns errors instead of panicking; the
//! profile aborts on panic so that a bug can never unwind into C.
#![deny(unsafe_op_in_unsafe_fn, clippy::missing_safety_doc)]

pub mod errors;
pub mod removal;

// The parts that call QEMU only link inside QEMU; unit tests cover the
// pure logic above and the integration tests in tests/ cover the rest.
#[cfg(not(test))]
mod bindings;
#[cfg(not(test))]
mod commands;
#[cfg(not(test))]
mod info;
#[cfg(not(test))]
mod monitors;
#[cfg(not(test))]
mod qemu;
