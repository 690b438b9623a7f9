/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * libFuzzer target: QEMU's JSON parser as a QMP monitor feeds it.
 *
 * A QMP monitor hands what its chardev reads to a JSONMessageParser
 * one byte at a time (monitor_qmp_feed_unparsed()), stops after a byte
 * whose request suspended it and goes on from the next byte later; it
 * never flushes the parser, but destroys and re-initialises it when the
 * client leaves.  Each value or error the parser emits goes to
 * handle_qmp_command(), then to qmp_dispatch(), or, for an error, to
 * qmp_error_response(); the reply is written with qobject_to_json().
 *
 * The input: byte 0 is a header, the rest is the stream the monitor
 * reads.
 *   header bits 0-2: N, the number of chunk-length bytes after it;
 *   header bit 3:    the chunked run ends as a session does (destroy,
 *                    no flush) instead of flushing;
 *   header bit 4:    OOB is enabled (qmp_dispatch()'s allow_oob);
 *   bytes 1..N:      chunk lengths, used in turn (0: an empty feed).
 * A printable header makes readable seeds: ' ' (0x20) is "no chunks,
 * no OOB", '0' the same with OOB, '2' two chunk lengths and a flush,
 * ':' two chunk lengths and no flush, both with OOB.
 *
 * The stream is parsed three times:
 *   1. whole: one json_message_parser_feed() and a flush; each value
 *      and error goes the monitor's way (checks below);
 *   2. byte by byte, as the monitor feeds it, and a flush;
 *   3. in the header's chunks (when N > 0), ending per bit 3.
 * Each run records its results in order: a value as its
 * qobject_to_json() text, an error as "error: " and its message.
 *
 * Invariants (a violation aborts, which libFuzzer reports as a crash):
 * - no ASan, UBSan or LeakSanitizer report: every QObject and Error
 *   the parser emits is freed, also when a session ends mid-message;
 * - the emit callback gets exactly one of a value and an error
 *   (handle_qmp_command() asserts it);
 * - runs 2 and 3 (when flushed) give the same results as run 1, and
 *   run 3 without a flush gives a prefix of them: chunking never
 *   changes what is parsed;
 * - one byte fed completes at most two results (a number or keyword
 *   ends only on the byte after it, which may complete a second one,
 *   as in "1}"): handle_qmp_command() assumes that the request queue
 *   gets at most one request after the one that suspended the monitor;
 * - the text qobject_to_json() writes for a value, and for the reply
 *   to it, reads back as the same value, numbers compared as numbers
 *   (unless the value holds a number beyond double's range: QEMU
 *   writes "inf", json_writer_double()'s known FIXME);
 * - the reply qmp_dispatch() makes (no command exists here) is an
 *   error with a class and a description, carrying the request's id;
 *   with OOB off, an exec-oob request never gets as far as the command
 *   lookup.
 *
 * Reproduce a failure: build/fuzz/qmp-json-fuzz CRASH-FILE
 * (docs/testing.md).
 */

#include "qemu/osdep.h"
#include <math.h>
#include "qapi/error.h"
#include "qapi/qmp-registry.h"
#include "qemu/unicode.h"
#include "qobject/json-parser.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "qobject/qnum.h"
#include "qobject/qstring.h"

#define HDR_CHUNKS      0x07
#define HDR_NO_FLUSH    0x08
#define HDR_OOB         0x10

/* handle_qmp_command() queues one request more than QMP_REQ_QUEUE_LEN_MAX */
#define MAX_RESULTS_PER_BYTE 2

typedef struct Run {
    JSONMessageParser parser;
    GPtrArray *results;         /* char *: JSON text or "error: ..." */
    unsigned emitted;           /* results completed by the current feed */
    bool monitor;               /* take each result the monitor's way */
    bool allow_oob;
    GHashTable *replied;        /* results already taken the monitor's way */
} Run;

/* Commands: none, so every request ends in an error reply */
static QmpCommandList no_commands = QTAILQ_HEAD_INITIALIZER(no_commands);

static G_NORETURN G_GNUC_PRINTF(1, 2) void fail(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "qmp-json-fuzz: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

/* Does @obj hold a number that qobject_to_json() writes as inf or nan? */
static bool has_nonfinite(const QObject *obj)
{
    const QDictEntry *ent;
    const QListEntry *lent;

    switch (qobject_type(obj)) {
    case QTYPE_QNUM: {
        const QNum *num = qobject_to(QNum, obj);

        return num->kind == QNUM_DOUBLE && !isfinite(num->u.dbl);
    }
    case QTYPE_QDICT:
        for (ent = qdict_first(qobject_to(QDict, obj)); ent;
             ent = qdict_next(qobject_to(QDict, obj), ent)) {
            if (has_nonfinite(qdict_entry_value(ent))) {
                return true;
            }
        }
        return false;
    case QTYPE_QLIST:
        QLIST_FOREACH_ENTRY(qobject_to(QList, obj), lent) {
            if (has_nonfinite(qlist_entry_obj(lent))) {
                return true;
            }
        }
        return false;
    default:
        return false;
    }
}

/* Does @s hold bytes that the JSON writer replaces by U+FFFD? */
static bool has_bad_utf8(const char *s)
{
    char *end;

    for (; *s; s = end) {
        if (mod_utf8_codepoint(s, 6, &end) < 0) {
            return true;
        }
    }
    return false;
}

/*
 * Are @a and @b the same JSON value?  Numbers compare as numbers: the
 * writer prints a double without a fraction as an integer (1.0 as 1,
 * -0.0 as -0, which reads back as the integer 0).  A string that is not
 * (modified) UTF-8, such as the stray byte an error message quotes, is
 * written with U+FFFD in place of each bad sequence: any valid string
 * will do for it.
 */
static bool same_value(const QObject *a, const QObject *b)
{
    const QDictEntry *ent;
    const QListEntry *la, *lb;
    QNum *na, *nb;
    QDict *da, *db;
    QObject *other;
    const char *sa, *sb;

    if (qobject_type(a) != qobject_type(b)) {
        return false;
    }
    switch (qobject_type(a)) {
    case QTYPE_QNUM:
        na = qobject_to(QNum, a);
        nb = qobject_to(QNum, b);
        if (na->kind == QNUM_DOUBLE || nb->kind == QNUM_DOUBLE) {
            return qnum_get_double(na) == qnum_get_double(nb);
        }
        return qobject_is_equal(a, b);
    case QTYPE_QDICT:
        da = qobject_to(QDict, a);
        db = qobject_to(QDict, b);
        if (qdict_size(da) != qdict_size(db)) {
            return false;
        }
        for (ent = qdict_first(da); ent; ent = qdict_next(da, ent)) {
            other = qdict_get(db, qdict_entry_key(ent));
            if (!other || !same_value(qdict_entry_value(ent), other)) {
                return false;
            }
        }
        return true;
    case QTYPE_QLIST:
        la = qlist_first(qobject_to(QList, a));
        lb = qlist_first(qobject_to(QList, b));
        for (; la && lb; la = qlist_next(la), lb = qlist_next(lb)) {
            if (!same_value(qlist_entry_obj(la), qlist_entry_obj(lb))) {
                return false;
            }
        }
        return !la && !lb;
    case QTYPE_QSTRING:
        sa = qstring_get_str(qobject_to(QString, a));
        sb = qstring_get_str(qobject_to(QString, b));
        return !strcmp(sa, sb) || (has_bad_utf8(sa) && !has_bad_utf8(sb));
    default:
        return qobject_is_equal(a, b);
    }
}

/* @text, written for @obj, must read back as the same value */
static void check_round_trip(const QObject *obj, const char *text)
{
    Error *err = NULL;
    QObject *back;
    GString *again;

    if (has_nonfinite(obj)) {
        return;
    }
    back = qobject_from_json(text, &err);
    if (!back) {
        fail("written JSON does not parse (%s): %s",
             error_get_pretty(err), text);
    }
    if (!same_value(obj, back)) {
        again = qobject_to_json(back);
        fail("written JSON reads back as another value:\n  %s\n  %s",
             text, again->str);
    }
    qobject_unref(back);
}

/* The reply the monitor would write: an error, with the request's id */
static void check_reply(QDict *rsp, const QObject *req)
{
    QDict *error = qdict_get_qdict(rsp, "error");
    QDict *req_dict = qobject_to(QDict, req);
    QObject *id = req_dict ? qdict_get(req_dict, "id") : NULL;
    GString *text;

    if (!error || !qdict_get_try_str(error, "class")
        || !qdict_get_try_str(error, "desc")) {
        text = qobject_to_json(QOBJECT(rsp));
        fail("reply without an error class and description: %s", text->str);
    }
    if (!qobject_is_equal(id, qdict_get(rsp, "id"))) {
        text = qobject_to_json(QOBJECT(rsp));
        fail("reply without the request's id: %s", text->str);
    }
    text = qobject_to_json(QOBJECT(rsp));
    check_round_trip(QOBJECT(rsp), text->str);
    g_string_free(text, true);
}

/*
 * handle_qmp_command(), then what the dispatcher does with the result.
 * A result seen before in this run is not taken the monitor's way
 * again: the same text gets the same reply (a stream of a thousand
 * NULs is a thousand errors "stray '\0'", each reply a few QDicts).
 */
static void emit(void *opaque, QObject *json, Error *err)
{
    Run *run = opaque;
    QDict *req, *rsp;
    GString *text;
    char *msg;

    if (!json == !err) {
        fail("the parser emitted %s", json ? "a value and an error"
             : "neither a value nor an error");
    }
    run->emitted++;

    if (err) {
        msg = g_strdup_printf("error: %s", error_get_pretty(err));
        g_ptr_array_add(run->results, msg);
        if (run->monitor && g_hash_table_add(run->replied, msg)) {
            /* monitor_qmp_dispatcher_co(): qmp_error_response() frees it */
            rsp = qmp_error_response(err);
            check_reply(rsp, NULL);
            qobject_unref(rsp);
        } else {
            error_free(err);
        }
        return;
    }

    text = qobject_to_json(json);
    if (run->monitor && g_hash_table_add(run->replied, text->str)) {
        check_round_trip(json, text->str);
        rsp = qmp_dispatch(&no_commands, json, run->allow_oob, NULL);
        check_reply(rsp, json);
        /*
         * handle_qmp_command() runs a request qmp_is_oob() at once and
         * queues any other; with OOB off, qmp_dispatch() must refuse
         * it before looking for its command
         */
        req = qobject_to(QDict, json);
        if (req && qmp_is_oob(req) && !run->allow_oob
            && !g_strcmp0(qdict_get_try_str(qdict_get_qdict(rsp, "error"),
                                            "class"), "CommandNotFound")) {
            fail("an exec-oob request got past qmp_dispatch()'s checks"
                 " with OOB off");
        }
        qobject_unref(rsp);
    }
    g_ptr_array_add(run->results, g_string_free(text, false));
    qobject_unref(json);
}

static void run_init(Run *run, bool monitor, bool allow_oob)
{
    run->results = g_ptr_array_new_with_free_func(g_free);
    run->emitted = 0;
    run->monitor = monitor;
    run->allow_oob = allow_oob;
    run->replied = g_hash_table_new(g_str_hash, g_str_equal);
    json_message_parser_init(&run->parser, emit, run, NULL);
}

static void run_feed(Run *run, const uint8_t *buf, size_t len)
{
    run->emitted = 0;
    json_message_parser_feed(&run->parser, (const char *)buf, len);
}

/* Flush, or end the session as CHR_EVENT_CLOSED does */
static void run_end(Run *run, bool flush)
{
    if (flush) {
        json_message_parser_flush(&run->parser);
    }
    json_message_parser_destroy(&run->parser);
}

static void check_same(const char *what, GPtrArray *ref, GPtrArray *got,
                       bool prefix)
{
    guint i;

    if (prefix ? got->len > ref->len : got->len != ref->len) {
        fail("%s: %u results, fed whole: %u", what, got->len, ref->len);
    }
    for (i = 0; i < got->len; i++) {
        if (strcmp(g_ptr_array_index(ref, i), g_ptr_array_index(got, i))) {
            fail("%s: result %u differs:\n  fed whole: %s\n  here:      %s",
                 what, i, (char *)g_ptr_array_index(ref, i),
                 (char *)g_ptr_array_index(got, i));
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* LeakSanitizer must see GLib's allocations (GQueue links, GStrings) */
    setenv("G_SLICE", "always-malloc", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *stream, *lens;
    size_t len, pos, n, i, zeros, chunk;
    bool flush;
    Run whole, bytes, chunks;

    if (size < 1) {
        return 0;
    }
    n = data[0] & HDR_CHUNKS;
    if (size < 1 + n) {
        return 0;
    }
    flush = !(data[0] & HDR_NO_FLUSH);
    lens = data + 1;
    stream = data + 1 + n;
    len = size - 1 - n;

    /* 1. whole, and each result taken as the monitor takes it */
    run_init(&whole, true, data[0] & HDR_OOB);
    run_feed(&whole, stream, len);
    run_end(&whole, true);

    /* 2. byte by byte, as monitor_qmp_feed_unparsed() feeds it */
    run_init(&bytes, false, false);
    for (pos = 0; pos < len; pos++) {
        run_feed(&bytes, stream + pos, 1);
        if (bytes.emitted > MAX_RESULTS_PER_BYTE) {
            fail("byte %zu (0x%02x) completed %u results",
                 pos, stream[pos], bytes.emitted);
        }
    }
    run_end(&bytes, true);
    check_same("byte by byte", whole.results, bytes.results, false);
    g_hash_table_destroy(bytes.replied);
    g_ptr_array_free(bytes.results, true);

    /* 3. in chunks of the header's lengths */
    if (n) {
        run_init(&chunks, false, false);
        pos = 0;
        i = 0;
        zeros = 0;
        while (pos < len) {
            chunk = lens[i++ % n];
            if (!chunk) {
                run_feed(&chunks, stream + pos, 0);
                if (++zeros < n) {
                    continue;
                }
                /* only empty feeds: the rest in one */
                chunk = len - pos;
            }
            zeros = 0;
            chunk = MIN(chunk, len - pos);
            run_feed(&chunks, stream + pos, chunk);
            pos += chunk;
        }
        run_end(&chunks, flush);
        check_same(flush ? "in chunks" : "in chunks, session ended",
                   whole.results, chunks.results, !flush);
        g_hash_table_destroy(chunks.replied);
        g_ptr_array_free(chunks.results, true);
    }

    g_hash_table_destroy(whole.replied);
    g_ptr_array_free(whole.results, true);
    return 0;
}
