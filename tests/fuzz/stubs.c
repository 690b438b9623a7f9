/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Stubs for qmp-json-fuzz: what qapi/qmp-dispatch.c needs only to run a
 * command.  The fuzz target's command list is empty, so qmp_dispatch()
 * never gets that far; without these, linking libqemuutil.a pulls in
 * the coroutines, the main loop and, through them, QOM.  Each aborts,
 * which libFuzzer would report: a command run is a bug of the target.
 */

#include "qemu/osdep.h"
#include "block/aio.h"
#include "qemu/coroutine.h"
#include "qemu/main-loop.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/qobject-output-visitor.h"
#include "qapi/visitor.h"

void aio_bh_schedule_oneshot_full(AioContext *ctx, QEMUBHFunc *cb,
                                  void *opaque, const char *name)
{
    abort();
}

void aio_co_schedule(AioContext *ctx, Coroutine *co)
{
    abort();
}

void aio_co_wake(Coroutine *co)
{
    abort();
}

AioContext *qemu_get_aio_context(void)
{
    abort();
}

AioContext *iohandler_get_aio_context(void)
{
    abort();
}

Coroutine *qemu_coroutine_self(void)
{
    abort();
}

void coroutine_fn qemu_coroutine_yield(void)
{
    abort();
}

bool qemu_in_coroutine(void)
{
    abort();
}

Visitor *qobject_input_visitor_new(QObject *obj)
{
    abort();
}

Visitor *qobject_output_visitor_new(QObject **result)
{
    abort();
}

void visit_set_policy(Visitor *v, CompatPolicy *policy)
{
    abort();
}
