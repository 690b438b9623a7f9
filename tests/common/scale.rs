// SPDX-License-Identifier: GPL-2.0-or-later
//! `QMH_SCALE=P`: the heavy tests run P percent of their default rounds,
//! seeds and time (default 100).  `make check` runs the full size on the
//! product build and a quarter on the sanitizer and second-version
//! builds, whose value is in running every path at all, under ASan or on
//! another QEMU, not in running it often.

/// `n` scaled by `QMH_SCALE`, at least 1.
pub fn scaled(n: usize) -> usize {
    let percent = std::env::var("QMH_SCALE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100);
    (n * percent / 100).max(1)
}
