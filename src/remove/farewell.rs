// SPDX-License-Identifier: GPL-2.0-or-later
//! The end of a removed monitor's connection.  The monitor's chardev is
//! free again at once (monitor-add or chardev-remove may follow right
//! away), but its client is still owed what the monitor had queued:
//! earlier replies and, for a self-removal, the removal's own reply.
//! A duplicate of the socket outlives the chardev's connection; this
//! module writes the owed bytes to it, shuts down the sending side, and
//! closes it once the client has read everything (the socket's send
//! queue is empty) or closed its end, reading and dropping the client's
//! input meanwhile, so that closing never resets a connection whose
//! data is still in flight.  A client that keeps reading gets
//! everything, however long that takes; one that takes no byte for
//! [`TIMEOUT`] is cut off.  Memory: the owed bytes, freed once sent.
//!
//! Thread: the main loop thread, whose default `GMainContext` runs the
//! `GSource` that drives each connection.

use std::{
    ffi::{c_int, c_void},
    os::fd::{AsRawFd, OwnedFd},
    time::Duration,
};

use glib_sys::{
    gboolean, gpointer, GIOCondition, GSourceFunc, G_IO_ERR, G_IO_HUP, G_IO_IN, G_IO_OUT,
};

/// How long a client may take no byte before it is cut off: no `send()`
/// takes any and the socket's unread send queue does not shrink.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Input read and dropped per wake-up, so that a client that keeps
/// sending cannot hold the main loop.
const DISCARD_MAX: usize = 64 * 1024;

/// How often the send queue is looked at while it holds bytes for the
/// client: the kernel has no event for the client taking some of them
/// (POLLOUT comes only once most are taken) or all of them.
const TICK_US: i64 = 10_000;

/// When the client last took a byte, as far as the socket shows.  Pure
/// logic on monotonic times in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The socket's unread send queue when last looked at.
    unread: c_int,
    /// When the client last took a byte, or the hand-off began.
    at_us: i64,
}

impl Progress {
    fn new(now_us: i64, unread: c_int) -> Self {
        Progress {
            unread,
            at_us: now_us,
        }
    }

    /// The queue holds `unread` bytes at `now_us`, after a `send()` that
    /// took bytes if `sent`: the client took some if either happened or
    /// the queue shrank.
    fn update(&mut self, now_us: i64, unread: c_int, sent: bool) {
        if sent || unread < self.unread {
            self.at_us = now_us;
        }
        self.unread = unread;
    }

    /// When the connection is cut off unless the client takes a byte.
    fn deadline_us(&self) -> i64 {
        let timeout = i64::try_from(TIMEOUT.as_micros()).unwrap_or(i64::MAX);
        self.at_us.saturating_add(timeout)
    }

    /// When to look again: the next tick, or the deadline if sooner.
    fn wake_us(&self, now_us: i64) -> i64 {
        self.deadline_us().min(now_us.saturating_add(TICK_US))
    }
}

/// One connection being closed.
struct Farewell {
    fd: OwnedFd,
    owed: Vec<u8>,
    sent: usize,
    /// The sending side is shut down: the client saw (or will see) EOF.
    shut: bool,
    progress: Progress,
}

/// What a connection waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Room to write, or input to drop.
    Writable,
    /// All is sent: the client to read it, or input to drop, or EOF.
    Drained,
    /// Nothing: close now.
    Done,
}

fn now_us() -> i64 {
    // SAFETY: g_get_monotonic_time has no preconditions.
    unsafe { glib_sys::g_get_monotonic_time() }
}

/// Writes `owed` to the client on `fd`, then closes the connection
/// gracefully, in the background.  `fd` is a non-blocking stream socket
/// that no one else reads or writes.
pub fn start(fd: OwnedFd, owed: Vec<u8>) {
    let unread = unread(&fd);
    let mut farewell = Farewell {
        fd,
        owed,
        sent: 0,
        shut: false,
        progress: Progress::new(now_us(), unread),
    };
    match farewell.step() {
        Next::Done => {}
        next => farewell.wait_for(next),
    }
}

/// Bytes sent on `fd` that the client has not read yet (TCP: not yet
/// acknowledged; Unix: the kernel buffers that hold them, each freed
/// once the client has read all of it); 0 if the socket cannot tell.
fn unread(fd: &OwnedFd) -> c_int {
    let mut n: c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int; fd is our socket.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        0
    } else {
        n
    }
}

impl Farewell {
    /// Does what can be done without blocking, and says what to wait for.
    fn step(&mut self) -> Next {
        let now = now_us();
        self.progress.update(now, unread(&self.fd), false);
        if now >= self.progress.deadline_us() {
            return Next::Done;
        }
        let client_closed = self.discard_input();
        if self.sent < self.owed.len() {
            match self.send() {
                Ok(0) => return Next::Writable,
                Ok(_) => {
                    self.progress.update(now, unread(&self.fd), true);
                    if self.sent < self.owed.len() {
                        return Next::Writable;
                    }
                }
                Err(()) => return Next::Done,
            }
        }
        if !self.shut {
            // Everything owed is sent: the client sees EOF after it.
            // SAFETY: fd is an open socket we own.
            unsafe {
                libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR);
            }
            self.shut = true;
            self.owed = Vec::new();
            self.sent = 0;
        }
        if client_closed || self.progress.unread == 0 {
            Next::Done
        } else {
            Next::Drained
        }
    }

    /// Sends what the socket takes now; how many bytes it took.  Err if
    /// the connection is gone.
    fn send(&mut self) -> Result<usize, ()> {
        let rest = &self.owed[self.sent..];
        // SAFETY: rest is a valid buffer of rest.len() bytes; fd is ours.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        match usize::try_from(n) {
            Ok(n) => {
                self.sent += n;
                Ok(n)
            }
            Err(_) => match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(()),
            },
        }
    }

    /// Reads and drops the client's input.  True once the client closed
    /// its end (EOF) or the connection failed.
    fn discard_input(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < DISCARD_MAX {
            // SAFETY: buf is a valid, writable buffer; fd is ours.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match usize::try_from(n) {
                Ok(0) => return true,
                Ok(n) => total += n,
                Err(_) => {
                    return !matches!(
                        std::io::Error::last_os_error().raw_os_error(),
                        Some(libc::EAGAIN | libc::EINTR)
                    )
                }
            }
        }
        false
    }

    /// Hands the connection to a `GSource` on the main loop's context
    /// that runs [`Self::step`] when `next` happens or at the next tick
    /// (see [`Progress::wake_us`]).  The source owns the connection from
    /// here on.
    fn wait_for(self, next: Next) {
        let cond = match next {
            Next::Writable => G_IO_OUT | G_IO_IN | G_IO_HUP | G_IO_ERR,
            Next::Drained | Next::Done => G_IO_IN | G_IO_HUP | G_IO_ERR,
        };
        let fd = self.fd.as_raw_fd();
        let wake = self.progress.wake_us(now_us());
        let data = Box::into_raw(Box::new(Some((self, next)))).cast::<c_void>();
        // SAFETY: GLib calls a unix fd source's callback with the
        // GUnixFDSourceFunc signature, which is what `dispatch` has; this
        // cast is how GLib's own G_SOURCE_FUNC() registers one.
        let func: GSourceFunc = Some(unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(c_int, GIOCondition, gpointer) -> gboolean,
                unsafe extern "C" fn(gpointer) -> gboolean,
            >(dispatch)
        });
        // SAFETY: the source owns fd through data, which free_slot frees
        // once; the default context (NULL) is run by the main loop thread.
        unsafe {
            let source = glib_sys::g_unix_fd_source_new(fd, cond);
            glib_sys::g_source_set_ready_time(source, wake);
            glib_sys::g_source_set_callback(source, func, data, Some(free_slot));
            glib_sys::g_source_attach(source, std::ptr::null_mut());
            glib_sys::g_source_unref(source);
        }
    }
}

/// The `GSource`'s data: the connection and what its source waits for,
/// taken out when the source hands the connection on or closes it.
type Slot = Option<(Farewell, Next)>;

unsafe extern "C" fn dispatch(_fd: c_int, _cond: GIOCondition, data: gpointer) -> gboolean {
    // SAFETY: data is the Slot that wait_for() boxed for this source, and
    // only this source's callbacks and free_slot use it, one at a time.
    let slot = unsafe { &mut *data.cast::<Slot>() };
    let Some((mut farewell, waiting_for)) = slot.take() else {
        return glib_sys::GFALSE;
    };
    match farewell.step() {
        Next::Done => glib_sys::GFALSE,
        next if next == waiting_for => {
            let wake = farewell.progress.wake_us(now_us());
            // SAFETY: this runs in the dispatch of the current source.
            unsafe {
                glib_sys::g_source_set_ready_time(glib_sys::g_main_current_source(), wake);
            }
            *slot = Some((farewell, next));
            glib_sys::GTRUE
        }
        next => {
            farewell.wait_for(next);
            glib_sys::GFALSE
        }
    }
}

unsafe extern "C" fn free_slot(data: gpointer) {
    // SAFETY: data is the Box made in wait_for(); GLib calls this once.
    drop(unsafe { Box::from_raw(data.cast::<Slot>()) });
}

// Built by tests/removal.rs: the crate builds this module only inside
// QEMU (src/lib.rs), though the logic tested here needs no QEMU symbol.
#[cfg(test)]
mod tests {
    use super::{Progress, TICK_US, TIMEOUT};

    const T: i64 = TIMEOUT.as_micros() as i64;

    #[test]
    fn a_client_that_takes_no_byte_is_cut_off_after_the_timeout() {
        let mut p = Progress::new(1_000, 50_000);
        for now in (1_000..1_000 + T).step_by(TICK_US as usize) {
            p.update(now, 50_000, false);
            assert!(now < p.deadline_us());
        }
        assert_eq!(p.deadline_us(), 1_000 + T);
        // Input it sends, or a queue that grows, is no byte taken.
        p.update(2_000, 60_000, false);
        assert_eq!(p.deadline_us(), 1_000 + T);
    }

    #[test]
    fn a_client_that_keeps_taking_bytes_is_never_cut_off() {
        // A minute of a queue that shrinks every 200 ms, refilled by a
        // send every second.
        let mut p = Progress::new(0, 200_000);
        let mut unread = 200_000;
        for tick in 1..300 {
            let now = tick * 200_000;
            unread -= 10_000;
            p.update(now, unread, false);
            assert_eq!(p.deadline_us(), now + T, "tick {tick}");
            if tick % 5 == 0 {
                unread = 200_000;
                p.update(now, unread, true);
            }
        }
    }

    #[test]
    fn the_bound_runs_from_the_last_byte_taken() {
        let mut p = Progress::new(0, 100_000);
        p.update(3 * T, 90_000, false);
        assert_eq!(p.deadline_us(), 4 * T);
        // A send refills the queue: only a shrink from there counts.
        p.update(3 * T + 10, 150_000, true);
        p.update(3 * T + 20, 150_000, false);
        assert_eq!(p.deadline_us(), 4 * T + 10);
        p.update(4 * T - 1, 149_000, false);
        assert_eq!(p.deadline_us(), 5 * T - 1);
    }

    #[test]
    fn it_looks_every_tick_and_wakes_at_the_deadline_if_sooner() {
        let p = Progress::new(0, 1);
        assert_eq!(p.wake_us(0), TICK_US);
        assert_eq!(p.wake_us(T - 1), T);
        assert_eq!(p.wake_us(i64::MAX), T);
    }
}
