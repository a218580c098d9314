/* Tests for common/log.c: log_q() quoting, log_event() line format and
 * level filtering, level names. Lines are captured through a pipe set with
 * log_set_fd(). */
#include "unit_test.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- capture ------------------------------------------------------------ */

typedef struct {
    int rd, wr;
} capture;

static int capture_setup(void **state)
{
    capture *c = calloc(1, sizeof(*c));
    int fds[2];
    if (!c || pipe(fds) != 0)
        return -1;
    /* Non-blocking read end: "nothing was logged" reads as EAGAIN, not a hang. */
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    c->rd = fds[0];
    c->wr = fds[1];
    log_set_fd(c->wr);
    log_set_level(LOG_INFO);
    *state = c;
    return 0;
}

static int capture_teardown(void **state)
{
    capture *c = *state;
    log_set_fd(2);
    log_set_level(LOG_INFO);
    close(c->rd);
    close(c->wr);
    free(c);
    return 0;
}

/* Everything written so far, NUL-terminated, in buf. Returns the length. */
static size_t capture_read(capture *c, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(c->rd, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static size_t count_char(const char *s, char ch)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == ch;
    return n;
}

/* ---- log_q --------------------------------------------------------------- */

static void test_log__q_plain(void **state)
{
    assert_string_equal(log_q("web01"), "\"web01\"");
    assert_string_equal(log_q(""), "\"\"");
    assert_string_equal(log_q("a b=c"), "\"a b=c\"");
}

static void test_log__q_null_is_empty(void **state)
{
    assert_string_equal(log_q(NULL), "\"\"");
}

static void test_log__q_escapes_quotes_and_backslashes(void **state)
{
    assert_string_equal(log_q("say \"hi\""), "\"say \\\"hi\\\"\"");
    assert_string_equal(log_q("C:\\dir\\"), "\"C:\\\\dir\\\\\"");
    assert_string_equal(log_q("\\\""), "\"\\\\\\\"\"");
}

static void test_log__q_escapes_newlines(void **state)
{
    const char *q = log_q("a\nlevel=error event=forged");
    assert_string_equal(q, "\"a\\nlevel=error event=forged\"");
    assert_null(strchr(q, '\n'));
}

static void test_log__q_escapes_control_chars(void **state)
{
    assert_string_equal(log_q("\r"), "\"\\x0d\"");
    assert_string_equal(log_q("\t"), "\"\\x09\"");
    assert_string_equal(log_q("\x01\x1b[31m"), "\"\\x01\\x1b[31m\"");
    assert_string_equal(log_q("\x1f"), "\"\\x1f\"");
    assert_string_equal(log_q("\x7f"), "\"\\x7f\"");
    /* Only control characters are escaped: UTF-8 passes through. */
    assert_string_equal(log_q("caf\xc3\xa9 ~"), "\"caf\xc3\xa9 ~\"");
}

static void test_log__q_no_control_char_survives(void **state)
{
    char in[2];
    in[1] = '\0';
    for (int ch = 1; ch < 256; ch++) {
        in[0] = (char)ch;
        const char *q = log_q(in);
        for (const unsigned char *p = (const unsigned char *)q; *p; p++)
            if (*p < 0x20 || *p == 0x7f)
                fail_msg("log_q(0x%02x) leaves byte 0x%02x in its output", ch, *p);
    }
}

static void test_log__q_long_values_cut(void **state)
{
    char *in = malloc(5000);
    assert_non_null(in);
    memset(in, 'a', 4999);
    in[4999] = '\0';
    const char *q = log_q(in);
    size_t n = strlen(q);
    assert_true(n < 512);
    assert_true(n > 400); /* cut, not emptied */
    assert_int_equal(q[0], '"');
    assert_string_equal(q + n - 4, "...\"");
    for (size_t i = 1; i < n - 4; i++)
        assert_int_equal(q[i], 'a');
    free(in);
}

static void test_log__q_short_values_not_cut(void **state)
{
    char in[401];
    memset(in, 'b', 400);
    in[400] = '\0';
    const char *q = log_q(in);
    assert_int_equal(strlen(q), 402);
    assert_not_contains(q, "...");
}

/* A cut must not split an escape sequence: after the opening quote the
 * value is whole "\x01" units, then "...". */
static void test_log__q_cut_keeps_escapes_whole(void **state)
{
    char in[700];
    memset(in, 0x01, sizeof(in) - 1);
    in[sizeof(in) - 1] = '\0';
    const char *q = log_q(in);
    size_t n = strlen(q);
    assert_true(n < 512);
    assert_string_equal(q + n - 4, "...\"");
    size_t body = n - 1 - 4;
    assert_int_equal(body % 4, 0);
    for (size_t i = 1; i < 1 + body; i += 4)
        assert_memory_equal(q + i, "\\x01", 4);
}

/* The header promises eight live results per thread. */
static void test_log__q_eight_results_stay_valid(void **state)
{
    const char *r[8];
    char in[8][8];
    for (int i = 0; i < 8; i++) {
        snprintf(in[i], sizeof(in[i]), "v%d", i);
        r[i] = log_q(in[i]);
    }
    for (int i = 0; i < 8; i++) {
        char want[16];
        snprintf(want, sizeof(want), "\"v%d\"", i);
        assert_string_equal(r[i], want);
    }
}

/* ---- log_event ----------------------------------------------------------- */

static void test_log__event_writes_one_line(void **state)
{
    capture *c = *state;
    char buf[4096];
    log_event(LOG_INFO, "session.open", "sid=%d vm=%s", 42, log_q("web01"));
    size_t n = capture_read(c, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(count_char(buf, '\n'), 1);
    assert_int_equal(buf[n - 1], '\n');

    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                             "\\.[0-9]{3}Z level=info event=session\\.open "
                             "sid=42 vm=\"web01\"\n$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    int m = regexec(&re, buf, 0, NULL, 0);
    regfree(&re);
    if (m != 0)
        fail_msg("unexpected line: %s", buf);
}

static void test_log__event_without_fields(void **state)
{
    capture *c = *state;
    char buf[4096];
    /* An empty field list adds no trailing space. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-zero-length"
    log_event(LOG_WARN, "gateway.draining", "");
#pragma GCC diagnostic pop
    capture_read(c, buf, sizeof(buf));
    assert_contains(buf, " level=warn event=gateway.draining\n");
}

static void test_log__event_respects_level(void **state)
{
    capture *c = *state;
    char buf[4096];

    log_set_level(LOG_WARN);
    assert_false(log_enabled(LOG_DEBUG));
    assert_false(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_WARN));
    assert_true(log_enabled(LOG_ERROR));
    log_event(LOG_DEBUG, "t.debug", "n=1");
    log_event(LOG_INFO, "t.info", "n=2");
    assert_int_equal(capture_read(c, buf, sizeof(buf)), 0);
    log_event(LOG_WARN, "t.warn", "n=3");
    log_event(LOG_ERROR, "t.error", "n=4");
    capture_read(c, buf, sizeof(buf));
    assert_int_equal(count_char(buf, '\n'), 2);
    assert_contains(buf, "level=warn event=t.warn n=3\n");
    assert_contains(buf, "level=error event=t.error n=4\n");

    log_set_level(LOG_DEBUG);
    assert_int_equal(log_get_level(), LOG_DEBUG);
    log_event(LOG_DEBUG, "t.debug", "n=5");
    capture_read(c, buf, sizeof(buf));
    assert_contains(buf, "level=debug event=t.debug n=5\n");

    log_set_level(LOG_ERROR);
    log_event(LOG_WARN, "t.warn", "n=6");
    assert_int_equal(capture_read(c, buf, sizeof(buf)), 0);
}

static void test_log__event_replaces_raw_newlines(void **state)
{
    capture *c = *state;
    char buf[4096];
    /* A caller that forgot log_q(): the line must still be one line. */
    log_event(LOG_INFO, "t.forge", "user=%s", "eve\nts=x level=error event=fake\r\n");
    size_t n = capture_read(c, buf, sizeof(buf));
    assert_int_equal(count_char(buf, '\n'), 1);
    assert_int_equal(buf[n - 1], '\n');
    assert_null(strchr(buf, '\r'));
    assert_contains(buf, "user=eve ts=x level=error event=fake  \n");
}

static void test_log__event_long_line_cut(void **state)
{
    capture *c = *state;
    char *big = malloc(6000);
    char *buf = malloc(8192);
    assert_non_null(big);
    assert_non_null(buf);
    memset(big, 'x', 5999);
    big[5999] = '\0';
    log_event(LOG_INFO, "t.long", "v=%s", big);
    size_t n = capture_read(c, buf, 8192);
    assert_true(n <= LOG_LINE_MAX);
    assert_int_equal(count_char(buf, '\n'), 1);
    assert_string_equal(buf + n - 4, "...\n");
    assert_contains(buf, "event=t.long v=xxxx");
    free(big);
    free(buf);
}

/* Lines just below and at the limit are complete and end in one newline. */
static void test_log__event_near_limit(void **state)
{
    capture *c = *state;
    char *buf = malloc(8192);
    char *v = malloc(LOG_LINE_MAX + 1);
    assert_non_null(buf);
    assert_non_null(v);
    for (size_t fill = LOG_LINE_MAX - 120; fill < LOG_LINE_MAX - 10; fill++) {
        memset(v, 'y', fill);
        v[fill] = '\0';
        log_event(LOG_INFO, "t.edge", "%s", v);
        size_t n = capture_read(c, buf, 8192);
        assert_true(n <= LOG_LINE_MAX);
        assert_int_equal(count_char(buf, '\n'), 1);
        assert_int_equal(buf[n - 1], '\n');
    }
    free(v);
    free(buf);
}

/* Lines from threads never interleave: each is written with one write(2). */
#define THREADS 4
#define LINES_PER_THREAD 300

static atomic_int writers_done;

static void *writer_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    char pad[200];
    memset(pad, 'a' + id, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++)
        log_event(LOG_INFO, "t.thread", "id=%d i=%d pad=%s end", id, i, pad);
    atomic_fetch_add(&writers_done, 1);
    return NULL;
}

static void test_log__event_threads_do_not_interleave(void **state)
{
    capture *c = *state;
    pthread_t th[THREADS];
    size_t cap = (size_t)THREADS * LINES_PER_THREAD * 400, len = 0;
    char *all = malloc(cap);
    assert_non_null(all);
    atomic_store(&writers_done, 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, writer_thread, (void *)(intptr_t)t),
                         0);
    /* Read while they write (the pipe holds only 64 KiB), until all are
     * done and the pipe is empty: missing lines fail below, not hang. */
    for (;;) {
        bool done = atomic_load(&writers_done) == THREADS;
        ssize_t r = read(c->rd, all + len, cap - 1 - len);
        if (r > 0) {
            len += (size_t)r;
        } else if (r < 0 && errno == EAGAIN) {
            if (done)
                break;
            usleep(1000);
        } else {
            fail_msg("pipe read failed");
        }
        assert_true(len < cap - 1);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    all[len] = '\0';

    int seen[THREADS] = {0};
    char *save = NULL;
    for (char *line = strtok_r(all, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int id, i, consumed = 0;
        char *f = strstr(line, " event=t.thread id=");
        if (!f || sscanf(f, " event=t.thread id=%d i=%d pad=%n", &id, &i, &consumed) != 2 ||
            id < 0 || id >= THREADS)
            fail_msg("mangled line: %s", line);
        const char *p = f + consumed;
        for (int k = 0; k < 199; k++)
            if (p[k] != 'a' + id)
                fail_msg("mangled line: %s", line);
        assert_string_equal(p + 199, " end");
        seen[id]++;
    }
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(seen[t], LINES_PER_THREAD);
    free(all);
}

/* ---- levels -------------------------------------------------------------- */

static void test_log__level_parse(void **state)
{
    static const struct {
        const char *name;
        log_level level;
    } ok[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        log_level l = (log_level)-1;
        assert_int_equal(log_level_parse(ok[i].name, &l), 0);
        assert_int_equal(l, ok[i].level);
        assert_string_equal(log_level_name(l), ok[i].name);
    }
}

static void test_log__level_parse_rejects(void **state)
{
    static const char *const bad[] = {"", "INFO", "Debug", "warning", "err", "info ",
                                      " info", "fatal", "0", "infox"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        log_level l = LOG_WARN;
        if (log_level_parse(bad[i], &l) != PST_E_PARSE)
            fail_msg("log_level_parse(\"%s\") accepted", bad[i]);
        assert_int_equal(l, LOG_WARN); /* untouched on failure */
    }
}

static void test_log__level_name_out_of_range(void **state)
{
    assert_string_equal(log_level_name((log_level)4), "unknown");
    assert_string_equal(log_level_name((log_level)-1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log__q_plain),
        cmocka_unit_test(test_log__q_null_is_empty),
        cmocka_unit_test(test_log__q_escapes_quotes_and_backslashes),
        cmocka_unit_test(test_log__q_escapes_newlines),
        cmocka_unit_test(test_log__q_escapes_control_chars),
        cmocka_unit_test(test_log__q_no_control_char_survives),
        cmocka_unit_test(test_log__q_long_values_cut),
        cmocka_unit_test(test_log__q_short_values_not_cut),
        cmocka_unit_test(test_log__q_cut_keeps_escapes_whole),
        cmocka_unit_test(test_log__q_eight_results_stay_valid),
        cmocka_unit_test_setup_teardown(test_log__event_writes_one_line, capture_setup,
                                        capture_teardown),
        cmocka_unit_test_setup_teardown(test_log__event_without_fields, capture_setup,
                                        capture_teardown),
        cmocka_unit_test_setup_teardown(test_log__event_respects_level, capture_setup,
                                        capture_teardown),
        cmocka_unit_test_setup_teardown(test_log__event_replaces_raw_newlines, capture_setup,
                                        capture_teardown),
        cmocka_unit_test_setup_teardown(test_log__event_long_line_cut, capture_setup,
                                        capture_teardown),
        cmocka_unit_test_setup_teardown(test_log__event_near_limit, capture_setup,
                                        capture_teardown),
        cmocka_unit_test_setup_teardown(test_log__event_threads_do_not_interleave,
                                        capture_setup, capture_teardown),
        cmocka_unit_test(test_log__level_parse),
        cmocka_unit_test(test_log__level_parse_rejects),
        cmocka_unit_test(test_log__level_name_out_of_range),
    };
    return cmocka_run_group_tests_name("common/log", tests, NULL, NULL);
}
