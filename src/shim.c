/*
 * C helpers for what Rust cannot call directly: macros (locks, QTAILQ,
 * container_of, error_setg) and fields of structs that bindgen is told
 * to keep opaque.  Each is a one-liner; all logic lives in Rust.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "wrapper.h"

void qmh_monitor_lock(void)
{
    qemu_mutex_lock(&monitor_lock);
}

void qmh_monitor_unlock(void)
{
    qemu_mutex_unlock(&monitor_lock);
}

void qmh_mutex_lock(QemuMutex *mutex)
{
    qemu_mutex_lock(mutex);
}

void qmh_mutex_unlock(QemuMutex *mutex)
{
    qemu_mutex_unlock(mutex);
}

/* mon_list walkers: caller holds monitor_lock */
Monitor *qmh_mon_list_first(void)
{
    return QTAILQ_FIRST(&mon_list);
}

Monitor *qmh_mon_list_next(Monitor *mon)
{
    return QTAILQ_NEXT(mon, entry);
}

void qmh_mon_list_remove(Monitor *mon)
{
    QTAILQ_REMOVE(&mon_list, mon, entry);
}

MonitorQMP *qmh_monitor_qmp(Monitor *mon)
{
    assert(monitor_is_qmp(mon));
    return container_of(mon, MonitorQMP, common);
}

const char *qmh_chr_label(Chardev *chr)
{
    return chr->label;
}

/*
 * Any frontend, as chardev-remove's "busy" check: a mux chardev's fe is
 * only the frontend that has the focus, NULL when that one left.
 */
bool qmh_chr_has_frontend(Chardev *chr)
{
    return qemu_chr_is_busy(chr);
}

bool qmh_chr_is_mux(Chardev *chr)
{
    return object_dynamic_cast(OBJECT(chr), TYPE_CHARDEV_MUX);
}

/* Options of a monitor, set at creation and never changed */
bool qmh_monitor_qmp_pretty(Monitor *mon)
{
    return qmh_monitor_qmp(mon)->pretty;
}

bool qmh_monitor_hmp_readline(Monitor *mon)
{
    assert(!monitor_is_qmp(mon));
    return container_of(mon, MonitorHMP, common)->use_readline;
}

static SocketChardev *qmh_socket_chardev(Chardev *chr)
{
    return (SocketChardev *)object_dynamic_cast(OBJECT(chr),
                                                TYPE_CHARDEV_SOCKET);
}

/*
 * The socket of a socket chardev's connected client, when the chardev
 * writes to it as it is (no TLS, no websocket framing); otherwise -1.
 */
int qmh_chr_socket_fd(Chardev *chr)
{
    SocketChardev *s = qmh_socket_chardev(chr);

    if (!s || s->state != TCP_CHARDEV_STATE_CONNECTED ||
        s->ioc != QIO_CHANNEL(s->sioc)) {
        return -1;
    }
    return s->sioc->fd;
}

/* A QMP monitor's command lists, immutable once it is published */
bool qmh_monitor_has_allow_commands(Monitor *mon)
{
    return qmh_monitor_qmp(mon)->has_allow_commands;
}

const strList *qmh_monitor_allow_commands(Monitor *mon)
{
    return qmh_monitor_qmp(mon)->allow_commands;
}

const strList *qmh_monitor_deny_commands(Monitor *mon)
{
    return qmh_monitor_qmp(mon)->deny_commands;
}

/* A socket chardev without client that can never get one */
bool qmh_chr_socket_defunct(Chardev *chr)
{
    SocketChardev *s = qmh_socket_chardev(chr);

    return s && s->state == TCP_CHARDEV_STATE_DISCONNECTED &&
        !s->is_listen && !s->reconnect_time_ms;
}

/*
 * ThreadSanitizer annotations (no-ops unless QEMU is configured with
 * --enable-tsan): what one thread did before happens_before(addr) is
 * seen by another thread after its happens_after(addr).  For the
 * orderings QEMU provides with fences, which TSan cannot follow.
 */
void qmh_tsan_happens_before(void *addr)
{
    QEMU_TSAN_ANNOTATE_HAPPENS_BEFORE(addr);
}

void qmh_tsan_happens_after(void *addr)
{
    QEMU_TSAN_ANNOTATE_HAPPENS_AFTER(addr);
}
