//! Runtime QMP monitors for QEMU: the `monitor-add`, `monitor-remove`
//! and `query-monitors` commands, linked into QEMU as a staticlib.
//!
//! Layout:
//! - [`errors`]: every error the commands report, with its message;
//! - [`removal`]: the plan of a removal (pure logic);
//! - `bindings`, `qemu`: the bindgen'd QEMU API and small safe wrappers
//!   over it (lock guards, an `Error **` writer, running in a thread);
//! - `monitors`: monitors on `mon_list`, and monitor-add;
//! - `removed`: monitors taken off `mon_list` and the removal steps;
//! - `farewell`: closing a removed monitor's connection gracefully;
//! - `info`: the list query-monitors returns;
//! - `commands`: the functions QEMU's C code calls.
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
mod farewell;
#[cfg(not(test))]
mod info;
#[cfg(not(test))]
mod monitors;
#[cfg(not(test))]
mod qapi_error;
#[cfg(not(test))]
mod qemu;
#[cfg(not(test))]
mod removed;
