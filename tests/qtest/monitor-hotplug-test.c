/*
 * QTest for runtime QMP monitors: monitor-add, monitor-remove and
 * query-monitors, and QEMU 11.1's spelling of the same monitors, the
 * monitor-qmp and monitor-hmp objects (-object, object-add, object-del).
 * The "qom" cases port QEMU 11.1's own qmp-test cases and hold their
 * outcomes to exact messages and to both views of the monitors,
 * query-monitors and /objects.
 *
 * Each test starts QEMU with libqtest's own QMP monitor (an anonymous
 * "-mon", so its id is generated) and drives the commands through it,
 * while separate client sockets talk to the monitors being added and
 * removed.
 *
 * Every wait on those client sockets is bounded (CLIENT_TIMEOUT_S), so
 * that a hang fails with a message saying what was awaited, before the
 * test harness's timeout for the whole test.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "libqtest.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "qobject/qstring.h"

/* Seconds a client socket waits for QEMU, and a poll loop for a state */
#define CLIENT_TIMEOUT_S 10

typedef struct {
    QTestState *qts;
    char *dir;
} Fixture;

static char *sock_path(Fixture *f, const char *name)
{
    return g_strdup_printf("%s/%s.sock", f->dir, name);
}

/* Start QEMU with @extra, where %s in @extra is the socket directory. */
static void start(Fixture *f, const char *extra)
{
    g_autofree char *args = NULL;

    f->dir = g_dir_make_tmp("qmh-qtest-XXXXXX", NULL);
    g_assert(f->dir);
    args = g_strdup_printf(extra ? extra : "", f->dir, f->dir, f->dir);
    f->qts = qtest_initf("-M none %s", args);
}

static void stop(Fixture *f)
{
    GDir *dir;
    const char *name;

    qtest_quit(f->qts);
    dir = g_dir_open(f->dir, 0, NULL);
    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *path = g_build_filename(f->dir, name, NULL);
        unlink(path);
    }
    g_dir_close(dir);
    rmdir(f->dir);
    g_free(f->dir);
}

static void add_socket_chardev(Fixture *f, const char *id)
{
    g_autofree char *path = sock_path(f, id);

    qtest_qmp_assert_success(f->qts,
        "{'execute': 'chardev-add', 'arguments': {'id': %s, 'backend':"
        " {'type': 'socket', 'data': {'addr': {'type': 'unix',"
        " 'data': {'path': %s}}, 'server': true, 'wait': false}}}}",
        id, path);
}

static QDict *monitor_add(Fixture *f, const char *id, const char *chardev)
{
    return qtest_qmp(f->qts, "{'execute': 'monitor-add',"
                     " 'arguments': {'id': %s, 'chardev': %s}}", id, chardev);
}

static QDict *monitor_remove(Fixture *f, const char *id)
{
    return qtest_qmp(f->qts, "{'execute': 'monitor-remove',"
                     " 'arguments': {'id': %s}}", id);
}

/* Assert @rsp is a GenericError saying exactly @desc. */
static void assert_error(QDict *rsp, const char *desc)
{
    QDict *error = qdict_get_qdict(rsp, "error");

    g_assert(error);
    g_assert_cmpstr(qdict_get_str(error, "class"), ==, "GenericError");
    g_assert_cmpstr(qdict_get_str(error, "desc"), ==, desc);
    qobject_unref(rsp);
}

static void assert_ok(QDict *rsp)
{
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
}

/*
 * A client socket.  SO_RCVTIMEO and SO_SNDTIMEO bound every read and
 * write, also those of qmp_fd_receive() in the middle of a message
 * (which then aborts); wait_readable() reports the usual case, nothing
 * at all coming, with what was awaited.
 */
static int connect_client(Fixture *f, const char *chardev)
{
    g_autofree char *path = sock_path(f, chardev);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct timeval timeout = { .tv_sec = CLIENT_TIMEOUT_S };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    g_assert(fd >= 0);
    g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout,
                               sizeof(timeout)), ==, 0);
    g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout,
                               sizeof(timeout)), ==, 0);
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    return fd;
}

/* Wait at most CLIENT_TIMEOUT_S for @fd to have input (or EOF). */
static void wait_readable(int fd, const char *what)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int ret;

    do {
        ret = poll(&pfd, 1, CLIENT_TIMEOUT_S * 1000);
    } while (ret < 0 && errno == EINTR);
    if (ret == 0) {
        g_test_message("timed out after %d s waiting for %s",
                       CLIENT_TIMEOUT_S, what);
    }
    g_assert_cmpint(ret, ==, 1);
}

static QDict *client_receive(int fd, const char *what)
{
    wait_readable(fd, what);
    return qmp_fd_receive(fd);
}

/* qmp_fd(), with the wait for the reply bounded */
static QDict *client_qmp(int fd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static QDict *client_qmp(int fd, const char *fmt, ...)
{
    g_autofree char *what = g_strdup_printf("the reply to %s", fmt);
    va_list ap;

    va_start(ap, fmt);
    qmp_fd_vsend(fd, fmt, ap);
    va_end(ap);
    return client_receive(fd, what);
}

/* Read the greeting and negotiate; return the greeting's capabilities. */
static QList *handshake(int fd)
{
    QDict *greeting = client_receive(fd, "the QMP greeting");
    QList *caps = qdict_get_qlist(qdict_get_qdict(greeting, "QMP"),
                                  "capabilities");
    QDict *rsp;

    g_assert(caps);
    qobject_ref(caps);
    qobject_unref(greeting);

    rsp = client_qmp(fd, "{'execute': 'query-name'}");
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(rsp, "error"), "class"),
                    ==, "CommandNotFound");
    qobject_unref(rsp);
    assert_ok(client_qmp(fd, "{'execute': 'qmp_capabilities'}"));
    return caps;
}

/*
 * The peer closed the connection with nothing left to read but the line
 * end after the last reply (qmp_fd_receive() stops at the closing brace).
 */
static void assert_eof(int fd)
{
    char c;
    ssize_t n;

    do {
        wait_readable(fd, "the end of the connection");
        n = recv(fd, &c, 1, 0);
        g_assert(n != 1 || c == '\r' || c == '\n');
    } while (n == 1);
    g_assert_cmpint(n, ==, 0);
    close(fd);
}

/*
 * query-monitors, as "id:mode:chardev:dynamic[:close-action]" entries
 * joined by ' ', with the close-action only where it is not "none".
 */
static char *list_monitors(Fixture *f)
{
    QDict *rsp = qtest_qmp(f->qts, "{'execute': 'query-monitors'}");
    GString *s = g_string_new(NULL);
    const QListEntry *e;

    for (e = qlist_first(qdict_get_qlist(rsp, "return")); e;
         e = qlist_next(e)) {
        QDict *m = qobject_to(QDict, qlist_entry_obj(e));

        const char *action = qdict_get_try_str(m, "close-action");

        g_assert_cmpint(!action, ==,
                        !strcmp(qdict_get_str(m, "mode"), "readline"));
        g_string_append_printf(s, "%s%s:%s:%s:%s%s%s", s->len ? " " : "",
                               qdict_get_str(m, "id"),
                               qdict_get_str(m, "mode"),
                               qdict_get_str(m, "chardev"),
                               qdict_get_bool(m, "dynamic") ? "dyn" : "cli",
                               action && strcmp(action, "none") ? ":" : "",
                               action && strcmp(action, "none") ? action : "");
    }
    qobject_unref(rsp);
    return g_string_free(s, false);
}

#define LIBQTEST_MON "compat_monitor0:control:char0:cli"
/* ...and its object: every monitor is one */
#define LIBQTEST_OBJ "compat_monitor0:monitor-qmp"

static void test_add_talk_remove(void)
{
    Fixture f;
    g_autofree char *before = NULL, *during = NULL, *after = NULL;
    QList *caps;
    QDict *rsp;
    int fd;

    start(&f, NULL);
    add_socket_chardev(&f, "c1");
    before = list_monitors(&f);
    g_assert_cmpstr(before, ==, LIBQTEST_MON);

    assert_ok(monitor_add(&f, "m1", "c1"));
    during = list_monitors(&f);
    g_assert_cmpstr(during, ==, LIBQTEST_MON " m1:control:c1:dyn");

    fd = connect_client(&f, "c1");
    caps = handshake(fd);
    /* A socket chardev runs in the I/O thread and offers OOB */
    g_assert_cmpstr(qstring_get_str(qobject_to(QString,
                    qlist_peek(caps))), ==, "oob");
    qobject_unref(caps);
    rsp = client_qmp(fd, "{'execute': 'query-status'}");
    g_assert(qdict_haskey(qdict_get_qdict(rsp, "return"), "status"));
    qobject_unref(rsp);

    assert_ok(monitor_remove(&f, "m1"));
    assert_eof(fd);
    after = list_monitors(&f);
    g_assert_cmpstr(after, ==, LIBQTEST_MON);
    stop(&f);
}

static void test_errors(void)
{
    Fixture f;

    start(&f, "-chardev socket,id=h0,path=%s/h0.sock,server=on,wait=off "
              "-mon chardev=h0,mode=readline,id=hmp0");
    add_socket_chardev(&f, "c1");
    add_socket_chardev(&f, "c2");
    assert_ok(monitor_add(&f, "m1", "c1"));

    assert_error(monitor_add(&f, "m1", "c2"),
                 "Monitor id 'm1' is already in use");
    assert_error(monitor_add(&f, "compat_monitor0", "c2"),
                 "Monitor id 'compat_monitor0' is already in use");
    assert_error(monitor_add(&f, "hmp0", "c2"),
                 "Monitor id 'hmp0' is already in use");
    assert_error(monitor_add(&f, "1m", "c2"),
                 "Invalid monitor id '1m': an id must start with a letter "
                 "and contain only letters, digits, '-', '.' and '_'");
    assert_error(monitor_add(&f, "m2", "nope"), "Chardev 'nope' not found");
    assert_error(monitor_add(&f, "m2", "c1"),
                 "Chardev 'c1' is already in use by another frontend");
    assert_error(monitor_add(&f, "m2", "h0"),
                 "Chardev 'h0' is already in use by another frontend");
    assert_error(monitor_remove(&f, "nope"), "No monitor with id 'nope'");
    assert_error(monitor_remove(&f, "hmp0"),
                 "Monitor 'hmp0' is an HMP monitor; only QMP monitors can "
                 "be removed");
    /* A chardev with a monitor cannot go away under it */
    {
        QDict *rsp = qtest_qmp(f.qts, "{'execute': 'chardev-remove',"
                               " 'arguments': {'id': 'c1'}}");
        g_assert(qdict_haskey(rsp, "error"));
        qobject_unref(rsp);
    }

    /* None of the failures created anything */
    {
        g_autofree char *list = list_monitors(&f);
        g_assert_cmpstr(list, ==, LIBQTEST_MON " hmp0:readline:h0:cli"
                        " m1:control:c1:dyn");
    }
    assert_ok(monitor_remove(&f, "m1"));
    assert_error(monitor_remove(&f, "m1"), "No monitor with id 'm1'");
    stop(&f);
}

static void test_readd_and_chardev_remove(void)
{
    Fixture f;
    int fd, i;

    start(&f, NULL);
    add_socket_chardev(&f, "c1");
    for (i = 0; i < 3; i++) {
        assert_ok(monitor_add(&f, "m1", "c1"));
        fd = connect_client(&f, "c1");
        qobject_unref(handshake(fd));
        assert_ok(monitor_remove(&f, "m1"));
        assert_eof(fd);
    }
    /* Removed at once after being added, with no client ever */
    assert_ok(monitor_add(&f, "m1", "c1"));
    assert_ok(monitor_remove(&f, "m1"));
    qtest_qmp_assert_success(f.qts, "{'execute': 'chardev-remove',"
                             " 'arguments': {'id': 'c1'}}");
    stop(&f);
}

static void test_self_removal(void)
{
    Fixture f;
    g_autofree char *list = NULL;
    QDict *rsp;
    int fd;

    start(&f, NULL);
    add_socket_chardev(&f, "c1");
    assert_ok(monitor_add(&f, "m1", "c1"));
    fd = connect_client(&f, "c1");
    qobject_unref(handshake(fd));
    rsp = client_qmp(fd, "{'execute': 'monitor-remove',"
                     " 'arguments': {'id': 'm1'}}");
    assert_ok(rsp);
    assert_eof(fd);
    list = list_monitors(&f);
    g_assert_cmpstr(list, ==, LIBQTEST_MON);
    /* The chardev is free again */
    assert_ok(monitor_add(&f, "m2", "c1"));
    stop(&f);
}

static void test_remove_cli_monitors(void)
{
    Fixture f;
    g_autofree char *before = NULL, *after = NULL;
    int qmp_fd, mon_fd;

    /*
     * -qmp names its chardev and monitor "compat_monitor0" while the
     * command line is parsed, so libqtest's anonymous -mon, which comes
     * first on the command line and is created first, gets the next
     * free name, compat_monitor1.
     */
    start(&f, "-qmp unix:%s/c0.sock,server=on,wait=off "
              "-chardev socket,id=c3,path=%s/c3.sock,server=on,wait=off "
              "-mon chardev=c3,mode=control,id=mymon");
    before = list_monitors(&f);
    g_assert_cmpstr(before, ==, "compat_monitor1:control:char0:cli "
                    "compat_monitor0:control:compat_monitor0:cli "
                    "mymon:control:c3:cli");

    qmp_fd = connect_client(&f, "c0");
    qobject_unref(handshake(qmp_fd));
    mon_fd = connect_client(&f, "c3");
    qobject_unref(handshake(mon_fd));
    assert_ok(monitor_remove(&f, "compat_monitor0"));
    assert_eof(qmp_fd);
    assert_ok(monitor_remove(&f, "mymon"));
    assert_eof(mon_fd);
    after = list_monitors(&f);
    g_assert_cmpstr(after, ==, "compat_monitor1:control:char0:cli");

    /* Their chardevs stay and can carry new monitors */
    assert_ok(monitor_add(&f, "mymon", "c3"));
    assert_ok(monitor_add(&f, "compat_monitor0", "compat_monitor0"));
    stop(&f);
}

static bool has_chardev(Fixture *f, const char *label)
{
    QDict *rsp = qtest_qmp(f->qts, "{'execute': 'query-chardev'}");
    const QListEntry *e;
    bool found = false;

    for (e = qlist_first(qdict_get_qlist(rsp, "return")); e;
         e = qlist_next(e)) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));
        found |= !strcmp(qdict_get_str(c, "label"), label);
    }
    qobject_unref(rsp);
    return found;
}

static void test_close_action_delete(void)
{
    Fixture f;
    g_autofree char *during = NULL;
    gint64 deadline;
    int fd;

    start(&f, NULL);
    add_socket_chardev(&f, "c1");
    add_socket_chardev(&f, "c2");
    assert_ok(qtest_qmp(f.qts, "{'execute': 'monitor-add', 'arguments':"
                        " {'id': 'm1', 'chardev': 'c1',"
                        " 'close-action': 'delete'}}"));
    assert_ok(qtest_qmp(f.qts, "{'execute': 'monitor-add', 'arguments':"
                        " {'id': 'm2', 'chardev': 'c2',"
                        " 'close-action': 'delete'}}"));
    during = list_monitors(&f);
    g_assert_cmpstr(during, ==, LIBQTEST_MON " m1:control:c1:dyn:delete"
                    " m2:control:c2:dyn:delete");

    /* The client leaves: monitor and chardev go, in a bottom half */
    fd = connect_client(&f, "c1");
    qobject_unref(handshake(fd));
    close(fd);
    deadline = g_get_monotonic_time() + CLIENT_TIMEOUT_S * G_TIME_SPAN_SECOND;
    while (has_chardev(&f, "c1")) {
        if (g_get_monotonic_time() > deadline) {
            g_test_message("timed out after %d s waiting for chardev c1 to go"
                           " with its client", CLIENT_TIMEOUT_S);
            g_assert_not_reached();
        }
        g_usleep(10 * 1000);
    }
    assert_error(monitor_remove(&f, "m1"), "No monitor with id 'm1'");

    /* Removed by the manager: the chardev is the manager's to remove */
    fd = connect_client(&f, "c2");
    qobject_unref(handshake(fd));
    assert_ok(monitor_remove(&f, "m2"));
    assert_eof(fd);
    g_assert(has_chardev(&f, "c2"));
    qtest_qmp_assert_success(f.qts, "{'execute': 'chardev-remove',"
                             " 'arguments': {'id': 'c2'}}");
    {
        g_autofree char *after = list_monitors(&f);
        g_assert_cmpstr(after, ==, LIBQTEST_MON);
    }
    stop(&f);
}

/*
 * Batches: many requests in one write.  QMP reads its input in chunks
 * and must parse no further than a request queue with room allows; the
 * rest of a chunk waits for the monitor to be resumed.  These check
 * that every request of a batch is answered exactly once and in order,
 * with OOB off and on, on a command-line and on a dynamic monitor; that
 * an exec-oob in a batch overtakes queued in-band requests; that file
 * descriptors reach the command they were sent with; and that removing
 * a monitor with input still unparsed drops it.
 */

/* A QMP client that reads replies line by line, buffered */
typedef struct {
    int fd;
    GString *in;
    size_t pos;
} Client;

static void client_init(Client *c, int fd)
{
    c->fd = fd;
    c->in = g_string_new(NULL);
    c->pos = 0;
}

static void client_close(Client *c)
{
    close(c->fd);
    g_string_free(c->in, true);
}

/* The next message, or NULL at the end of the connection */
static QDict *client_next(Client *c, const char *what)
{
    char *nl;

    while (!(nl = memchr(c->in->str + c->pos, '\n', c->in->len - c->pos))) {
        char buf[65536];
        ssize_t n;

        wait_readable(c->fd, what);
        n = recv(c->fd, buf, sizeof(buf), 0);
        g_assert_cmpint(n, >=, 0);
        if (n == 0) {
            g_assert_cmpuint(c->pos, ==, c->in->len);
            return NULL;
        }
        if (c->pos > c->in->len / 2) {
            g_string_erase(c->in, 0, c->pos);
            c->pos = 0;
        }
        g_string_append_len(c->in, buf, n);
    }
    {
        g_autofree char *line = g_strndup(c->in->str + c->pos,
                                          nl - (c->in->str + c->pos));
        QDict *msg = qobject_to(QDict, qobject_from_json(line, &error_abort));

        c->pos = nl + 1 - c->in->str;
        g_assert(msg);
        return msg;
    }
}

/* Send all of @buf in one sendmsg(), with @nfds file descriptors */
static void client_send(Client *c, const char *buf, int *fds, size_t nfds)
{
    size_t len = strlen(buf);
    size_t done = 0;

    while (done < len) {
        struct iovec iov = {
            .iov_base = (char *)buf + done, .iov_len = len - done
        };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        char control[CMSG_SPACE(sizeof(int) * 4)] = { 0 };
        ssize_t n;

        if (nfds && !done) {
            struct cmsghdr *cmsg;

            g_assert_cmpuint(nfds, <=, 4);
            msg.msg_control = control;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            cmsg = CMSG_FIRSTHDR(&msg);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
        }
        n = sendmsg(c->fd, &msg, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        g_assert_cmpint(n, >, 0);
        done += n;
    }
}

/* Connect to @chardev's monitor and negotiate, with OOB if @oob */
static void client_open(Client *c, Fixture *f, const char *chardev, bool oob)
{
    QDict *msg;

    client_init(c, connect_client(f, chardev));
    msg = client_next(c, "the QMP greeting");
    g_assert(qdict_haskey(msg, "QMP"));
    qobject_unref(msg);
    client_send(c, oob ? "{'execute': 'qmp_capabilities', 'arguments':"
                " {'enable': ['oob']}}" : "{'execute': 'qmp_capabilities'}",
                NULL, 0);
    assert_ok(client_next(c, "the reply to qmp_capabilities"));
}

/* Assert @msg is the reply with id @id, a success if @ok */
static void assert_reply(QDict *msg, const char *id, bool ok)
{
    g_assert(msg);
    g_assert_cmpstr(qdict_get_try_str(msg, "id"), ==, id);
    g_assert_cmpint(qdict_haskey(msg, "return"), ==, ok);
    g_assert_cmpint(qdict_haskey(msg, "error"), ==, !ok);
    qobject_unref(msg);
}

static void expect_reply(Client *c, const char *id, bool ok)
{
    g_autofree char *what = g_strdup_printf("the reply to '%s'", id);

    assert_reply(client_next(c, what), id, ok);
}

static void expect_error(Client *c, const char *id, const char *desc)
{
    g_autofree char *what = g_strdup_printf("the reply to '%s'", id);
    QDict *msg = client_next(c, what);

    g_assert(msg);
    g_assert_cmpstr(qdict_get_try_str(msg, "id"), ==, id);
    assert_error(msg, desc);
}

/* Append @n query-name requests with ids @prefix<first> on */
static void add_queries(GString *batch, const char *prefix, int first, int n)
{
    int i;

    for (i = first; i < first + n; i++) {
        g_string_append_printf(batch, "{\"execute\": \"query-name\","
                               " \"id\": \"%s%d\"}", prefix, i);
    }
}

static void expect_queries(Client *c, const char *prefix, int first, int n)
{
    int i;

    for (i = first; i < first + n; i++) {
        g_autofree char *id = g_strdup_printf("%s%d", prefix, i);

        expect_reply(c, id, true);
    }
}

/* Nothing more comes: the next reply is the one to a new request */
static void expect_nothing_more(Client *c)
{
    client_send(c, "{'execute': 'query-name', 'id': 'last'}", NULL, 0);
    expect_reply(c, "last", true);
}

#define BATCH_ARGS \
    "-chardev socket,id=cli,path=%s/cli.sock,server=on,wait=off " \
    "-mon chardev=cli,mode=control,id=climon"

/* QEMU with a command-line monitor on "cli" and a dynamic one on "dyn" */
static void start_batch(Fixture *f)
{
    start(f, BATCH_ARGS);
    add_socket_chardev(f, "dyn");
    assert_ok(monitor_add(f, "dynmon", "dyn"));
}

static const char *const batch_chardevs[] = { "cli", "dyn" };

static void test_batches(void)
{
    static const int sizes[] = { 1, 8, 9, 100, 10000 };
    Fixture f;
    size_t m, i;
    int oob;

    start_batch(&f);
    for (m = 0; m < ARRAY_SIZE(batch_chardevs); m++) {
        for (oob = 0; oob < 2; oob++) {
            for (i = 0; i < ARRAY_SIZE(sizes); i++) {
                g_autoptr(GString) batch = g_string_new(NULL);
                Client c;

                client_open(&c, &f, batch_chardevs[m], oob);
                add_queries(batch, "r", 0, sizes[i]);
                client_send(&c, batch->str, NULL, 0);
                expect_queries(&c, "r", 0, sizes[i]);
                expect_nothing_more(&c);
                client_close(&c);
            }
        }
    }
    stop(&f);
}

static int compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * The monitor objects in /objects, as "id:type" entries sorted and
 * joined by ' ' (qom-list's order is a hash table's), where type is
 * monitor-qmp or monitor-hmp.
 */
static char *list_monitor_objects(Fixture *f)
{
    QDict *rsp = qtest_qmp(f->qts, "{'execute': 'qom-list',"
                           " 'arguments': {'path': '/objects'}}");
    g_autoptr(GPtrArray) found = g_ptr_array_new_with_free_func(g_free);
    const QListEntry *e;

    for (e = qlist_first(qdict_get_qlist(rsp, "return")); e;
         e = qlist_next(e)) {
        QDict *p = qobject_to(QDict, qlist_entry_obj(e));
        const char *type = qdict_get_str(p, "type");

        if (g_str_has_prefix(type, "child<monitor-")) {
            g_ptr_array_add(found, g_strdup_printf("%s:%.*s",
                            qdict_get_str(p, "name"),
                            (int)strlen(type) - 7, type + 6));
        }
    }
    qobject_unref(rsp);
    g_ptr_array_sort(found, compare_strings);
    g_ptr_array_add(found, NULL);
    return g_strjoinv(" ", (char **)found->pdata);
}

static void assert_monitors(Fixture *f, const char *monitors,
                            const char *objects)
{
    g_autofree char *list = list_monitors(f);
    g_autofree char *objs = list_monitor_objects(f);

    g_assert_cmpstr(list, ==, monitors);
    g_assert_cmpstr(objs, ==, objects);
}

static void add_null_chardev(Fixture *f, const char *id)
{
    qtest_qmp_assert_success(f->qts,
        "{'execute': 'chardev-add', 'arguments': {'id': %s,"
        " 'backend': {'type': 'null', 'data': {}}}}", id);
}

static QDict *object_add(Fixture *f, const char *type, const char *id,
                         const char *chardev)
{
    return qtest_qmp(f->qts, "{'execute': 'object-add', 'arguments':"
                     " {'qom-type': %s, 'id': %s, 'chardev': %s}}",
                     type, id, chardev);
}

static QDict *object_del(Fixture *f, const char *id)
{
    return qtest_qmp(f->qts, "{'execute': 'object-del',"
                     " 'arguments': {'id': %s}}", id);
}

/* 11.1's qmp/monitor-add-remove: add, delete, add again, delete */
static void test_qom_add_remove(void)
{
    Fixture f;
    int i;

    start(&f, NULL);
    add_null_chardev(&f, "monitor-chardev");
    for (i = 0; i < 2; i++) {
        assert_ok(object_add(&f, "monitor-qmp", "dyn-mon", "monitor-chardev"));
        assert_monitors(&f, LIBQTEST_MON
                        " dyn-mon:control:monitor-chardev:dyn",
                        LIBQTEST_OBJ " dyn-mon:monitor-qmp");
        assert_ok(object_del(&f, "dyn-mon"));
        assert_monitors(&f, LIBQTEST_MON, LIBQTEST_OBJ);
    }
    qtest_qmp_assert_success(f.qts, "{'execute': 'chardev-remove',"
                             " 'arguments': {'id': 'monitor-chardev'}}");
    stop(&f);
}

/* 11.1's qmp/monitor-error-paths, and the other errors of object-add */
static void test_qom_error_paths(void)
{
    Fixture f;

    start(&f, NULL);
    assert_error(object_add(&f, "monitor-qmp", "bad-mon", "nonexistent"),
                 "chardev \"nonexistent\" not found");
    assert_error(object_add(&f, "monitor-hmp", "bad-mon", "nonexistent"),
                 "chardev \"nonexistent\" not found");
    add_null_chardev(&f, "c1");
    add_null_chardev(&f, "c2");
    /* libqtest's monitor is an object too */
    assert_error(object_add(&f, "monitor-qmp", "compat_monitor0", "c1"),
                 "attempt to add duplicate property 'compat_monitor0' to"
                 " object (type 'container')");
    /* monitor-hmp has no 'pretty', as in QEMU 11.1 */
    assert_error(qtest_qmp(f.qts, "{'execute': 'object-add', 'arguments':"
                           " {'qom-type': 'monitor-hmp', 'id': 'h1',"
                           " 'chardev': 'c1', 'pretty': false}}"),
                 "Parameter 'pretty' is unexpected");
    assert_error(qtest_qmp(f.qts, "{'execute': 'object-add', 'arguments':"
                           " {'qom-type': 'monitor-qmp', 'id': 'm1'}}"),
                 "Parameter 'chardev' is missing");
    /* Failed complete steps leave neither a monitor nor an object */
    assert_monitors(&f, LIBQTEST_MON, LIBQTEST_OBJ);
    stop(&f);
}

/* 11.1's qmp/monitor-chardev-in-use */
static void test_qom_chardev_in_use(void)
{
    Fixture f;

    start(&f, NULL);
    add_null_chardev(&f, "shared-chr");
    assert_ok(object_add(&f, "monitor-qmp", "mon-1", "shared-chr"));
    assert_error(object_add(&f, "monitor-qmp", "mon-2", "shared-chr"),
                 "chardev 'shared-chr' is already in use");
    assert_error(object_add(&f, "monitor-hmp", "mon-2", "shared-chr"),
                 "chardev 'shared-chr' is already in use");
    /* monitor-add keeps its own words */
    assert_error(monitor_add(&f, "mon-2", "shared-chr"),
                 "Chardev 'shared-chr' is already in use by another frontend");
    assert_monitors(&f, LIBQTEST_MON " mon-1:control:shared-chr:dyn",
                    LIBQTEST_OBJ " mon-1:monitor-qmp");
    assert_ok(object_del(&f, "mon-1"));
    qtest_qmp_assert_success(f.qts, "{'execute': 'chardev-remove',"
                             " 'arguments': {'id': 'shared-chr'}}");
    stop(&f);
}

/* 11.1's qmp/monitor-remove-cli, with the JSON form of -object too */
static void test_qom_remove_cli(void)
{
    Fixture f;

    start(&f, "-chardev null,id=cli-chr"
              " -object monitor-qmp,id=cli-mon,chardev=cli-chr,pretty=on"
              " -chardev null,id=json-chr"
              " -object '{\"qom-type\": \"monitor-qmp\", \"id\": \"json-mon\","
              " \"chardev\": \"json-chr\", \"close-action\": \"delete\"}'");
    /*
     * -object monitors are created with the other late objects, which
     * come before the -mon monitors (libqtest's among them)
     */
    assert_monitors(&f, "cli-mon:control:cli-chr:cli"
                    " json-mon:control:json-chr:cli:delete " LIBQTEST_MON,
                    "cli-mon:monitor-qmp " LIBQTEST_OBJ
                    " json-mon:monitor-qmp");
    assert_ok(object_del(&f, "cli-mon"));
    qtest_qmp_assert_success(f.qts, "{'execute': 'chardev-remove',"
                             " 'arguments': {'id': 'cli-chr'}}");
    /* monitor-remove takes the object along */
    assert_ok(monitor_remove(&f, "json-mon"));
    assert_monitors(&f, LIBQTEST_MON, LIBQTEST_OBJ);
    qtest_qmp_assert_success(f.qts, "{'execute': 'chardev-remove',"
                             " 'arguments': {'id': 'json-chr'}}");
    stop(&f);
}

/* 11.1's qmp/monitor-remove-hmp: HMP monitors cannot be deleted */
static void test_qom_remove_hmp(void)
{
    Fixture f;

    start(&f, "-chardev null,id=hmp-chr"
              " -object monitor-hmp,id=hmp-mon,chardev=hmp-chr");
    add_null_chardev(&f, "hmp-chr2");
    assert_ok(object_add(&f, "monitor-hmp", "hmp-mon2", "hmp-chr2"));
    assert_error(object_del(&f, "hmp-mon"),
                 "Deleting HMP monitors is not supported");
    assert_error(object_del(&f, "hmp-mon2"),
                 "Deleting HMP monitors is not supported");
    assert_error(monitor_remove(&f, "hmp-mon2"),
                 "Monitor 'hmp-mon2' is an HMP monitor; only QMP monitors "
                 "can be removed");
    assert_monitors(&f, "hmp-mon:readline:hmp-chr:cli " LIBQTEST_MON
                    " hmp-mon2:readline:hmp-chr2:dyn",
                    LIBQTEST_OBJ " hmp-mon2:monitor-hmp hmp-mon:monitor-hmp");
    stop(&f);
}

/*
 * A request that blocks the main loop (and so the dispatcher) until
 * unblock() opens @fifo for writing: blkdebug reads its config from it.
 */
static void add_blocking_request(GString *batch, const char *fifo,
                                 const char *id)
{
    g_string_append_printf(batch, "{\"execute\": \"blockdev-add\","
                           " \"id\": \"%s\", \"arguments\": {"
                           " \"driver\": \"blkdebug\", \"node-name\": \"%s\","
                           " \"config\": \"%s\", \"image\": {"
                           " \"driver\": \"null-co\"}}}", id, id, fifo);
}

static char *make_fifo(Fixture *f, const char *name)
{
    char *path = g_strdup_printf("%s/%s.fifo", f->dir, name);

    g_assert_cmpint(mkfifo(path, 0600), ==, 0);
    return path;
}

/* Let the blocked request go on: QEMU opens @fifo to read, we write */
static void unblock(const char *fifo)
{
    gint64 deadline = g_get_monotonic_time() +
        CLIENT_TIMEOUT_S * G_TIME_SPAN_SECOND;
    int fd;

    /* Without a reader yet, a non-blocking open fails with ENXIO */
    while ((fd = open(fifo, O_WRONLY | O_NONBLOCK)) < 0) {
        g_assert_cmpint(errno, ==, ENXIO);
        g_assert(g_get_monotonic_time() < deadline);
        g_usleep(1000);
    }
    close(fd);
}

/*
 * With OOB on, an exec-oob behind in-band requests that wait for a
 * blocked dispatcher runs at once, from the same write.
 */
static void test_batch_oob_overtakes(void)
{
    Fixture f;
    size_t m;

    start_batch(&f);
    for (m = 0; m < ARRAY_SIZE(batch_chardevs); m++) {
        g_autofree char *fifo = make_fifo(&f, batch_chardevs[m]);
        g_autoptr(GString) batch = g_string_new(NULL);
        Client c;

        client_open(&c, &f, batch_chardevs[m], true);
        add_blocking_request(batch, fifo, batch_chardevs[m]);
        add_queries(batch, "q", 0, 5);
        g_string_append(batch, "{\"exec-oob\": \"migrate-pause\","
                        " \"id\": \"oob\"}");
        add_queries(batch, "q", 5, 1);
        client_send(&c, batch->str, NULL, 0);
        /* migrate-pause fails: no migration to pause */
        expect_reply(&c, "oob", false);
        unblock(fifo);
        expect_reply(&c, batch_chardevs[m], true);
        expect_queries(&c, "q", 0, 6);
        expect_nothing_more(&c);
        client_close(&c);
    }
    stop(&f);
}

/*
 * Behind a blocked dispatcher, more requests than the queue holds: the
 * monitor stops parsing when the queue is full (OOB on) or holds one
 * request (OOB off), and goes on when the dispatcher takes them.
 */
static void test_batch_full_queue(void)
{
    Fixture f;
    size_t m;
    int oob;

    start_batch(&f);
    for (m = 0; m < ARRAY_SIZE(batch_chardevs); m++) {
        for (oob = 0; oob < 2; oob++) {
            g_autofree char *name = g_strdup_printf("%s%d",
                                                    batch_chardevs[m], oob);
            g_autofree char *fifo = make_fifo(&f, name);
            g_autoptr(GString) batch = g_string_new(NULL);
            Client c;

            client_open(&c, &f, batch_chardevs[m], oob);
            add_blocking_request(batch, fifo, name);
            add_queries(batch, "q", 0, 30);
            client_send(&c, batch->str, NULL, 0);
            unblock(fifo);
            expect_reply(&c, name, true);
            expect_queries(&c, "q", 0, 30);
            expect_nothing_more(&c);
            client_close(&c);
        }
    }
    stop(&f);
}

static int open_null(void)
{
    int fd = open("/dev/null", O_RDONLY);

    g_assert(fd >= 0);
    return fd;
}

/* closefd of @name succeeds if QEMU holds an fd of that name */
static void expect_fd_held(Client *c, const char *name, bool held)
{
    g_autofree char *req = g_strdup_printf(
        "{\"execute\": \"closefd\", \"arguments\": {\"fdname\": \"%s\"},"
        " \"id\": \"close-%s\"}", name, name);
    g_autofree char *id = g_strdup_printf("close-%s", name);
    g_autofree char *desc = g_strdup_printf(
        "File descriptor named '%s' not found", name);

    client_send(c, req, NULL, 0);
    if (held) {
        expect_reply(c, id, true);
    } else {
        expect_error(c, id, desc);
    }
}

static void add_getfd(GString *batch, const char *name)
{
    g_string_append_printf(batch, "{\"execute\": \"getfd\", \"arguments\":"
                           " {\"fdname\": \"%s\"}, \"id\": \"%s\"}",
                           name, name);
}

/*
 * File descriptors sent with SCM_RIGHTS reach the command they were
 * sent with: getfd and add-fd in the middle of a batch; two getfd in
 * one write with two fds, where the first takes one and the other is
 * closed, as before; getfd in its own write behind a full queue, and
 * in the same write as the requests that fill the queue.
 */
static void test_batch_fds(void)
{
    Fixture f;
    size_t m;
    int oob;

    start_batch(&f);
    for (m = 0; m < ARRAY_SIZE(batch_chardevs); m++) {
        for (oob = 0; oob < 2; oob++) {
            g_autofree char *name = g_strdup_printf("%s%d",
                                                    batch_chardevs[m], oob);
            g_autofree char *fifo1 = g_strdup_printf("%s-1", name);
            g_autofree char *fifo2 = g_strdup_printf("%s-2", name);
            g_autofree char *path1 = make_fifo(&f, fifo1);
            g_autofree char *path2 = make_fifo(&f, fifo2);
            int fds[2] = { open_null(), open_null() };
            g_autoptr(GString) batch = g_string_new(NULL);
            QDict *msg;
            Client c;

            client_open(&c, &f, batch_chardevs[m], oob);

            /* getfd and add-fd in a batch */
            add_queries(batch, "a", 0, 3);
            add_getfd(batch, "in-batch");
            add_queries(batch, "a", 3, 3);
            client_send(&c, batch->str, fds, 1);
            expect_queries(&c, "a", 0, 3);
            expect_reply(&c, "in-batch", true);
            expect_queries(&c, "a", 3, 3);
            expect_fd_held(&c, "in-batch", true);

            g_string_truncate(batch, 0);
            add_queries(batch, "b", 0, 3);
            g_string_append(batch, "{\"execute\": \"add-fd\", \"arguments\":"
                            " {\"fdset-id\": 7}, \"id\": \"add-fd\"}");
            add_queries(batch, "b", 3, 3);
            client_send(&c, batch->str, fds, 1);
            expect_queries(&c, "b", 0, 3);
            msg = client_next(&c, "the reply to add-fd");
            g_assert_cmpint(qdict_get_int(qdict_get_qdict(msg, "return"),
                                          "fdset-id"), ==, 7);
            assert_reply(msg, "add-fd", true);
            expect_queries(&c, "b", 3, 3);
            client_send(&c, "{'execute': 'remove-fd', 'arguments':"
                        " {'fdset-id': 7}, 'id': 'remove-fd'}", NULL, 0);
            expect_reply(&c, "remove-fd", true);

            /* Two getfd and two fds in one write */
            g_string_truncate(batch, 0);
            add_getfd(batch, "first");
            add_getfd(batch, "second");
            client_send(&c, batch->str, fds, 2);
            expect_reply(&c, "first", true);
            expect_error(&c, "second",
                         "No file descriptor supplied via SCM_RIGHTS");
            expect_fd_held(&c, "first", true);
            expect_fd_held(&c, "second", false);

            /* getfd in its own write, behind a full queue */
            g_string_truncate(batch, 0);
            add_blocking_request(batch, path1, fifo1);
            add_queries(batch, "c", 0, 12);
            client_send(&c, batch->str, NULL, 0);
            g_string_truncate(batch, 0);
            add_getfd(batch, "behind");
            client_send(&c, batch->str, fds, 1);
            unblock(path1);
            expect_reply(&c, fifo1, true);
            expect_queries(&c, "c", 0, 12);
            expect_reply(&c, "behind", true);
            expect_fd_held(&c, "behind", true);

            /* getfd in the write whose requests fill the queue */
            g_string_truncate(batch, 0);
            add_blocking_request(batch, path2, fifo2);
            add_queries(batch, "d", 0, 12);
            add_getfd(batch, "same-write");
            add_queries(batch, "d", 12, 2);
            client_send(&c, batch->str, fds, 1);
            unblock(path2);
            expect_reply(&c, fifo2, true);
            expect_queries(&c, "d", 0, 12);
            expect_reply(&c, "same-write", true);
            expect_queries(&c, "d", 12, 2);
            expect_fd_held(&c, "same-write", true);

            expect_nothing_more(&c);
            client_close(&c);
            close(fds[0]);
            close(fds[1]);
        }
    }
    stop(&f);
}

/*
 * A monitor that removes itself in the middle of a batch answers what
 * came before and the removal, and nothing after: the rest of the
 * batch, parsed or not, is dropped with the monitor.
 */
static void test_batch_self_removal(void)
{
    Fixture f;
    int oob;

    start(&f, NULL);
    add_socket_chardev(&f, "c1");
    for (oob = 0; oob < 2; oob++) {
        g_autoptr(GString) batch = g_string_new(NULL);
        Client c;

        assert_ok(monitor_add(&f, "m1", "c1"));
        client_open(&c, &f, "c1", oob);
        add_queries(batch, "q", 0, 20);
        g_string_append(batch, "{\"execute\": \"monitor-remove\","
                        " \"arguments\": {\"id\": \"m1\"}, \"id\": \"rm\"}");
        add_queries(batch, "q", 20, 1000);
        client_send(&c, batch->str, NULL, 0);
        expect_queries(&c, "q", 0, 20);
        expect_reply(&c, "rm", true);
        g_assert_null(client_next(&c, "the end of the connection"));
        client_close(&c);
        {
            g_autofree char *list = list_monitors(&f);
            g_assert_cmpstr(list, ==, LIBQTEST_MON);
        }
    }
    stop(&f);
}

/*
 * Removal by the manager, and a one-shot monitor whose client leaves,
 * while a big batch is being read: the client gets replies in order
 * and then the end of the connection.
 */
static void test_batch_removed(void)
{
    Fixture f;
    int oob;

    start(&f, NULL);
    add_socket_chardev(&f, "c1");
    for (oob = 0; oob < 2; oob++) {
        g_autoptr(GString) batch = g_string_new(NULL);
        QDict *msg;
        Client c;
        int i = 0;

        assert_ok(monitor_add(&f, "m1", "c1"));
        client_open(&c, &f, "c1", oob);
        add_queries(batch, "q", 0, 10000);
        client_send(&c, batch->str, NULL, 0);
        assert_ok(monitor_remove(&f, "m1"));
        while ((msg = client_next(&c, "a reply or the end"))) {
            g_autofree char *id = g_strdup_printf("q%d", i++);

            assert_reply(msg, id, true);
        }
        client_close(&c);
    }

    for (oob = 0; oob < 2; oob++) {
        g_autoptr(GString) batch = g_string_new(NULL);
        gint64 deadline;
        Client c;

        add_socket_chardev(&f, "c2");
        assert_ok(qtest_qmp(f.qts, "{'execute': 'monitor-add', 'arguments':"
                            " {'id': 'm2', 'chardev': 'c2',"
                            " 'close-action': 'delete'}}"));
        client_open(&c, &f, "c2", oob);
        add_queries(batch, "q", 0, 10000);
        client_send(&c, batch->str, NULL, 0);
        client_close(&c);
        deadline = g_get_monotonic_time() +
            CLIENT_TIMEOUT_S * G_TIME_SPAN_SECOND;
        while (has_chardev(&f, "c2")) {
            g_assert(g_get_monotonic_time() < deadline);
            g_usleep(10 * 1000);
        }
    }
    {
        g_autofree char *list = list_monitors(&f);
        g_assert_cmpstr(list, ==, LIBQTEST_MON);
    }
    stop(&f);
}

/*
 * A client that leaves right after a batch of exec-oob: the replies
 * that QEMU writes while parsing the batch fail, which disconnects the
 * client in the middle of the parse.  The monitor drops the rest and
 * takes the next client.
 */
static void test_batch_client_vanishes(void)
{
    Fixture f;
    size_t m;
    int i;

    start_batch(&f);
    for (m = 0; m < ARRAY_SIZE(batch_chardevs); m++) {
        for (i = 0; i < 5; i++) {
            g_autoptr(GString) batch = g_string_new(NULL);
            Client c;
            int k;

            client_open(&c, &f, batch_chardevs[m], true);
            for (k = 0; k < 2000; k++) {
                g_string_append(batch, "{\"exec-oob\": \"query-yank\"}");
            }
            client_send(&c, batch->str, NULL, 0);
            client_close(&c);
        }
        {
            Client c;

            client_open(&c, &f, batch_chardevs[m], true);
            expect_nothing_more(&c);
            client_close(&c);
        }
    }
    stop(&f);
}

/*
 * One namespace of ids, two views that never disagree: every monitor,
 * however it was made, is an object in /objects, which object-del
 * removes and monitor-remove takes along.  An object of another kind
 * takes its id from monitors too.
 */
static void test_qom_one_namespace(void)
{
    Fixture f;

    start(&f, "-chardev null,id=mon-chr"
              " -mon chardev=mon-chr,mode=control,id=cli-mon");
    add_null_chardev(&f, "c1");
    add_null_chardev(&f, "c2");
    add_null_chardev(&f, "c3");
    assert_ok(monitor_add(&f, "m1", "c1"));
    assert_error(object_add(&f, "monitor-qmp", "m1", "c2"),
                 "attempt to add duplicate property 'm1' to object"
                 " (type 'container')");
    assert_error(object_add(&f, "monitor-qmp", "cli-mon", "c2"),
                 "attempt to add duplicate property 'cli-mon' to object"
                 " (type 'container')");
    assert_ok(object_add(&f, "monitor-qmp", "o1", "c2"));
    assert_error(monitor_add(&f, "o1", "c3"),
                 "Monitor id 'o1' is already in use");
    assert_monitors(&f, LIBQTEST_MON " cli-mon:control:mon-chr:cli"
                    " m1:control:c1:dyn o1:control:c2:dyn",
                    "cli-mon:monitor-qmp " LIBQTEST_OBJ
                    " m1:monitor-qmp o1:monitor-qmp");

    /* object-del removes monitors made any way, monitor-remove too */
    assert_ok(object_del(&f, "m1"));
    assert_ok(object_del(&f, "cli-mon"));
    assert_ok(monitor_remove(&f, "o1"));
    assert_monitors(&f, LIBQTEST_MON, LIBQTEST_OBJ);

    /* An object of another kind keeps its id from monitors */
    qtest_qmp_assert_success(f.qts, "{'execute': 'object-add', 'arguments':"
                             " {'qom-type': 'secret', 'id': 's1',"
                             " 'data': 'x'}}");
    assert_error(monitor_add(&f, "s1", "c1"),
                 "An object with id 's1' already exists");
    assert_error(object_add(&f, "monitor-qmp", "s1", "c1"),
                 "attempt to add duplicate property 's1' to object"
                 " (type 'container')");
    qtest_qmp_assert_success(f.qts, "{'execute': 'object-del',"
                             " 'arguments': {'id': 's1'}}");
    assert_monitors(&f, LIBQTEST_MON, LIBQTEST_OBJ);
    stop(&f);
}

/* The properties read back, and are fixed once the monitor exists */
static void test_qom_properties(void)
{
    Fixture f;
    QDict *rsp;

    start(&f, "-chardev null,id=c1"
              " -object monitor-qmp,id=m1,chardev=c1,close-action=delete"
              " -chardev null,id=c2 -mon chardev=c2,mode=readline,id=h1"
              " -chardev null,id=c3"
              " -object monitor-hmp,id=h2,chardev=c3,readline=off");
    rsp = qtest_qmp(f.qts, "{'execute': 'qom-get', 'arguments':"
                    " {'path': '/objects/m1', 'property': 'close-action'}}");
    g_assert_cmpstr(qdict_get_str(rsp, "return"), ==, "delete");
    qobject_unref(rsp);
    rsp = qtest_qmp(f.qts, "{'execute': 'qom-get', 'arguments':"
                    " {'path': '/objects/m1', 'property': 'chardev'}}");
    g_assert_cmpstr(qdict_get_str(rsp, "return"), ==, "c1");
    qobject_unref(rsp);
    /* The objects of monitors made otherwise read what they were made with */
    rsp = qtest_qmp(f.qts, "{'execute': 'qom-get', 'arguments':"
                    " {'path': '/objects/compat_monitor0',"
                    " 'property': 'chardev'}}");
    g_assert_cmpstr(qdict_get_str(rsp, "return"), ==, "char0");
    qobject_unref(rsp);
    rsp = qtest_qmp(f.qts, "{'execute': 'qom-get', 'arguments':"
                    " {'path': '/objects/compat_monitor0',"
                    " 'property': 'pretty'}}");
    g_assert_false(qdict_get_bool(rsp, "return"));
    qobject_unref(rsp);
    rsp = qtest_qmp(f.qts, "{'execute': 'qom-get', 'arguments':"
                    " {'path': '/objects/h1', 'property': 'readline'}}");
    g_assert_true(qdict_get_bool(rsp, "return"));
    qobject_unref(rsp);
    rsp = qtest_qmp(f.qts, "{'execute': 'qom-get', 'arguments':"
                    " {'path': '/objects/h2', 'property': 'readline'}}");
    g_assert_false(qdict_get_bool(rsp, "return"));
    qobject_unref(rsp);
    assert_error(qtest_qmp(f.qts, "{'execute': 'qom-set', 'arguments':"
                           " {'path': '/objects/m1', 'property': 'pretty',"
                           " 'value': true}}"),
                 "Property 'pretty' can no longer be set");
    assert_error(qtest_qmp(f.qts, "{'execute': 'qom-set', 'arguments':"
                           " {'path': '/objects/h1', 'property': 'readline',"
                           " 'value': false}}"),
                 "Property 'readline' can no longer be set");
    stop(&f);
}

/*
 * 11.1's test_self_removal: object-del of the calling monitor fails,
 * while monitor-remove of itself works and takes the object along.
 */
static void test_qom_self_delete(void)
{
    Fixture f;
    QDict *rsp;
    int fd;

    start(&f, NULL);
    add_socket_chardev(&f, "c1");
    assert_ok(object_add(&f, "monitor-qmp", "m1", "c1"));
    fd = connect_client(&f, "c1");
    qobject_unref(handshake(fd));
    rsp = client_qmp(fd, "{'execute': 'object-del',"
                     " 'arguments': {'id': 'm1'}}");
    assert_error(rsp, "Cannot delete the current QMP monitor");
    assert_error(object_del(&f, "compat_monitor0"),
                 "Cannot delete the current QMP monitor");
    assert_monitors(&f, LIBQTEST_MON " m1:control:c1:dyn",
                    LIBQTEST_OBJ " m1:monitor-qmp");
    rsp = client_qmp(fd, "{'execute': 'monitor-remove',"
                     " 'arguments': {'id': 'm1'}}");
    assert_ok(rsp);
    assert_eof(fd);
    assert_monitors(&f, LIBQTEST_MON, LIBQTEST_OBJ);
    stop(&f);
}

/* 11.1's test_auto_delete: close-action=delete takes the object along */
static void test_qom_close_action_delete(void)
{
    Fixture f;
    gint64 deadline;
    int fd;

    start(&f, NULL);
    add_socket_chardev(&f, "c1");
    assert_ok(qtest_qmp(f.qts, "{'execute': 'object-add', 'arguments':"
                        " {'qom-type': 'monitor-qmp', 'id': 'm1',"
                        " 'chardev': 'c1', 'close-action': 'delete'}}"));
    fd = connect_client(&f, "c1");
    qobject_unref(handshake(fd));
    assert_monitors(&f, LIBQTEST_MON " m1:control:c1:dyn:delete",
                    LIBQTEST_OBJ " m1:monitor-qmp");
    close(fd);
    deadline = g_get_monotonic_time() + CLIENT_TIMEOUT_S * G_TIME_SPAN_SECOND;
    while (has_chardev(&f, "c1")) {
        if (g_get_monotonic_time() > deadline) {
            g_test_message("timed out after %d s waiting for chardev c1 to go"
                           " with its client", CLIENT_TIMEOUT_S);
            g_assert_not_reached();
        }
        g_usleep(10 * 1000);
    }
    assert_monitors(&f, LIBQTEST_MON, LIBQTEST_OBJ);
    assert_error(object_del(&f, "m1"), "object 'm1' not found");
    stop(&f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    qtest_add_func("qmp/monitor-hotplug/add-talk-remove",
                   test_add_talk_remove);
    qtest_add_func("qmp/monitor-hotplug/errors", test_errors);
    qtest_add_func("qmp/monitor-hotplug/readd", test_readd_and_chardev_remove);
    qtest_add_func("qmp/monitor-hotplug/self-removal", test_self_removal);
    qtest_add_func("qmp/monitor-hotplug/remove-cli",
                   test_remove_cli_monitors);
    qtest_add_func("qmp/monitor-hotplug/close-action",
                   test_close_action_delete);
    qtest_add_func("qmp/monitor-hotplug/batch/sizes", test_batches);
    qtest_add_func("qmp/monitor-hotplug/batch/oob-overtakes",
                   test_batch_oob_overtakes);
    qtest_add_func("qmp/monitor-hotplug/batch/full-queue",
                   test_batch_full_queue);
    qtest_add_func("qmp/monitor-hotplug/batch/fds", test_batch_fds);
    qtest_add_func("qmp/monitor-hotplug/batch/self-removal",
                   test_batch_self_removal);
    qtest_add_func("qmp/monitor-hotplug/batch/removed", test_batch_removed);
    qtest_add_func("qmp/monitor-hotplug/batch/client-vanishes",
                   test_batch_client_vanishes);
    qtest_add_func("qmp/monitor-hotplug/qom/monitor-add-remove",
                   test_qom_add_remove);
    qtest_add_func("qmp/monitor-hotplug/qom/monitor-error-paths",
                   test_qom_error_paths);
    qtest_add_func("qmp/monitor-hotplug/qom/monitor-chardev-in-use",
                   test_qom_chardev_in_use);
    qtest_add_func("qmp/monitor-hotplug/qom/monitor-remove-cli",
                   test_qom_remove_cli);
    qtest_add_func("qmp/monitor-hotplug/qom/monitor-remove-hmp",
                   test_qom_remove_hmp);
    qtest_add_func("qmp/monitor-hotplug/qom/one-namespace",
                   test_qom_one_namespace);
    qtest_add_func("qmp/monitor-hotplug/qom/properties", test_qom_properties);
    qtest_add_func("qmp/monitor-hotplug/qom/self-delete", test_qom_self_delete);
    qtest_add_func("qmp/monitor-hotplug/qom/close-action",
                   test_qom_close_action_delete);

    return g_test_run();
}
