// SPDX-License-Identifier: GPL-2.0-or-later
//! Removing monitors: the plan of a removal (pure logic), the steps
//! that carry it out on QEMU's monitors, and the graceful end of a
//! removed monitor's connection.

pub mod farewell;
pub mod plan;
#[cfg(not(test))]
mod removed;

#[cfg(not(test))]
pub use removed::{
    client_closed, release_after_reply, release_all_after_reply, remove, remove_serial,
};
