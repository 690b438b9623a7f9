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
//! data is still in flight.  A client that does not read within
//! [`TIMEOUT`] is cut off.
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

/// How long a client may take to read what it is owed and close.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Input read and dropped per wake-up, so that a client that keeps
/// sending cannot hold the main loop.
const DISCARD_MAX: usize = 64 * 1024;

/// How often the send queue is looked at while the client reads: the
/// kernel has no event for "the peer read everything".
const DRAIN_TICK_US: i64 = 10_000;

/// One connection being closed.
struct Farewell {
    fd: OwnedFd,
    owed: Vec<u8>,
    sent: usize,
    /// The sending side is shut down: the client saw (or will see) EOF.
    shut: bool,
    /// `g_get_monotonic_time()` at which the connection is cut off.
    deadline_us: i64,
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

/// Writes `owed` to the client on `fd`, then closes the connection
/// gracefully, in the background.  `fd` is a non-blocking stream socket
/// that no one else reads or writes.
pub fn start(fd: OwnedFd, owed: Vec<u8>) {
    // SAFETY: g_get_monotonic_time has no preconditions.
    let now = unsafe { glib_sys::g_get_monotonic_time() };
    let timeout = i64::try_from(TIMEOUT.as_micros()).unwrap_or(i64::MAX);
    let mut farewell = Farewell {
        fd,
        owed,
        sent: 0,
        shut: false,
        deadline_us: now.saturating_add(timeout),
    };
    match farewell.step() {
        Next::Done => {}
        next => farewell.wait_for(next),
    }
}

impl Farewell {
    /// Does what can be done without blocking, and says what to wait for.
    fn step(&mut self) -> Next {
        // SAFETY: as in start().
        if unsafe { glib_sys::g_get_monotonic_time() } >= self.deadline_us {
            return Next::Done;
        }
        let client_closed = self.discard_input();
        if self.sent < self.owed.len() {
            match self.send() {
                Ok(()) if self.sent < self.owed.len() => return Next::Writable,
                Ok(()) => {}
                Err(()) => return Next::Done,
            }
        }
        if !self.shut {
            // Everything owed is sent: the client sees EOF after it.
            // SAFETY: fd is an open socket we own.
            unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
            self.shut = true;
        }
        if client_closed || self.unread() == 0 {
            Next::Done
        } else {
            Next::Drained
        }
    }

    /// Bytes sent that the client has not read yet (TCP: not yet
    /// acknowledged); 0 if the socket cannot tell.
    fn unread(&self) -> libc::c_int {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int; fd is our socket.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if rc < 0 {
            0
        } else {
            n
        }
    }

    /// When the source must run again even without an fd event.
    fn wake_time(&self, next: Next) -> i64 {
        match next {
            Next::Drained => {
                // SAFETY: as in start().
                let now = unsafe { glib_sys::g_get_monotonic_time() };
                self.deadline_us.min(now + DRAIN_TICK_US)
            }
            Next::Writable | Next::Done => self.deadline_us,
        }
    }

    /// Sends what the socket takes now.  Err if the connection is gone.
    fn send(&mut self) -> Result<(), ()> {
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
                Ok(())
            }
            Err(_) => match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(()),
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
    /// that runs [`Self::step`] when `next` happens or the deadline
    /// passes.  The source owns the connection from here on.
    fn wait_for(self, next: Next) {
        let cond = match next {
            Next::Writable => G_IO_OUT | G_IO_IN | G_IO_HUP | G_IO_ERR,
            Next::Drained | Next::Done => G_IO_IN | G_IO_HUP | G_IO_ERR,
        };
        let fd = self.fd.as_raw_fd();
        let wake = self.wake_time(next);
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
            // SAFETY: this runs in the dispatch of the current source.
            unsafe {
                glib_sys::g_source_set_ready_time(
                    glib_sys::g_main_current_source(),
                    farewell.wake_time(next),
                )
            };
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
