/*
 * The QEMU API the Rust side uses, for bindgen and for shim.c.
 * qemu/osdep.h must come first, as in every QEMU source file.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "qemu/osdep.h"

#include "block/aio-wait.h"
#include "chardev/char.h"
#include "chardev/char-fe.h"
#include "chardev/char-socket.h"
#include "io/channel.h"
#include "monitor/monitor.h"
#include "monitor/monitor-internal.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-char.h"
#include "qapi/qapi-commands-control.h"
#include "qemu/coroutine.h"
#include "qemu/error-report.h"
#include "qemu/id.h"
#include "qemu/main-loop.h"
#include "qemu/tsan.h"
#include "system/iothread.h"

/*
 * The one difference between the QEMU versions this builds against:
 * 10.2 renamed CharBackend to CharFrontend.
 */
#if QEMU_VERSION_MAJOR < 10 || \
    (QEMU_VERSION_MAJOR == 10 && QEMU_VERSION_MINOR < 2)
typedef CharBackend CharFrontend;
#endif

/*
 * Types of the functions QEMU calls in the Rust code, as QAPI generated
 * them.  src/commands.rs asserts that its definitions have these types.
 */
typedef __typeof__(&qmp_monitor_add) qmh_qmp_monitor_add_fn;
typedef __typeof__(&qmp_monitor_remove) qmh_qmp_monitor_remove_fn;
typedef __typeof__(&qmp_query_monitors) qmh_qmp_query_monitors_fn;
typedef __typeof__(&monitor_qmp_release_removed) qmh_release_removed_fn;
typedef __typeof__(&monitor_qmp_closed) qmh_closed_fn;
typedef __typeof__(&monitor_qmp_cleanup_removed) qmh_cleanup_removed_fn;
typedef __typeof__(&monitor_qmp_command_allowed) qmh_command_allowed_fn;

/*
 * The monitor-qmp and monitor-hmp objects, once the series has them
 * (build.rs defines QMH_MONITOR_OBJECTS when the header exists)
 */
#ifdef QMH_MONITOR_OBJECTS
#include "monitor/monitor-object.h"
#include "qom/object_interfaces.h"
typedef __typeof__(&monitor_object_complete) qmh_object_complete_fn;
typedef __typeof__(&monitor_object_check_delete) qmh_object_check_delete_fn;
typedef __typeof__(&monitor_object_unparent) qmh_object_unparent_fn;
typedef __typeof__(&monitor_object_adopt) qmh_object_adopt_fn;
#endif

/* shim.c: macros and static inline functions, made callable */
void qmh_monitor_lock(void);
void qmh_monitor_unlock(void);
void qmh_mutex_lock(QemuMutex *mutex);
void qmh_mutex_unlock(QemuMutex *mutex);
Monitor *qmh_mon_list_first(void);
Monitor *qmh_mon_list_next(Monitor *mon);
void qmh_mon_list_remove(Monitor *mon);
MonitorQMP *qmh_monitor_qmp(Monitor *mon);
const char *qmh_chr_label(Chardev *chr);
bool qmh_chr_has_frontend(Chardev *chr);
bool qmh_chr_is_mux(Chardev *chr);
bool qmh_monitor_qmp_pretty(Monitor *mon);
bool qmh_monitor_hmp_readline(Monitor *mon);
int qmh_chr_socket_fd(Chardev *chr);
bool qmh_chr_socket_defunct(Chardev *chr);
void qmh_tsan_happens_before(void *addr);
void qmh_tsan_happens_after(void *addr);
bool qmh_monitor_has_allow_commands(Monitor *mon);
const strList *qmh_monitor_allow_commands(Monitor *mon);
const strList *qmh_monitor_deny_commands(Monitor *mon);
