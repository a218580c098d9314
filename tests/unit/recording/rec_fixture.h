/* What the recording tests share: a temporary state directory, a real uv
 * loop with a store on it, callbacks that count, and small file helpers.
 * Header-only (static functions), included once per test program. */
#ifndef PST_TESTS_UNIT_RECORDING_REC_FIXTURE_H
#define PST_TESTS_UNIT_RECORDING_REC_FIXTURE_H

#include "unit_test.h"

#include "common/log.h"
#include "recording/recording.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

/* 2023-11-14T22:13:20.123Z: any fixed start; the date folder follows. */
#define REC_T0_MS INT64_C(1700000000123)
#define REC_T0_DAY "2023/11/14"

typedef struct {
    char dir[1024]; /* the state directory, removed in teardown */
    uv_loop_t loop;
    rec_store *st;
    char err[512];
    /* callback counts */
    int failed, drained, ready;
    char failed_msg[256];
} rec_fx;

static inline int rec_fx_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static inline void rec_fx_on_failed(void *ud, const char *msg)
{
    rec_fx *f = ud;
    f->failed++;
    snprintf(f->failed_msg, sizeof(f->failed_msg), "%s", msg);
}

static inline void rec_fx_on_drain(void *ud) { ((rec_fx *)ud)->drained++; }

static inline void rec_fx_on_ready(void *ud) { ((rec_fx *)ud)->ready++; }

static const rec_callbacks rec_fx_cb = {rec_fx_on_failed, rec_fx_on_drain, rec_fx_on_ready};

static inline void rec_fx_open_store(rec_fx *f)
{
    int rc = rec_store_open(&f->loop, f->dir, &f->st, f->err, sizeof(f->err));
    if (rc != 0)
        fail_msg("rec_store_open: %d %s", rc, f->err);
}

/* Closes the store and runs the loop until its handle is gone: every
 * recording is then flushed, signed and freed. */
static inline void rec_fx_close_store(rec_fx *f)
{
    if (!f->st)
        return;
    rec_store_close(f->st);
    f->st = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static inline int rec_fx_setup(void **state)
{
    rec_fx *f = calloc(1, sizeof(*f));
    if (!f || !unit_tmpdir(f->dir, sizeof(f->dir), "rec")) {
        free(f);
        return -1;
    }
    /* Failures are logged as errors; the tests check them otherwise. */
    static int null_fd = -1;
    if (null_fd < 0)
        null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    log_set_fd(null_fd);
    if (uv_loop_init(&f->loop) != 0)
        return -1;
    *state = f;
    return 0;
}

/* rec_fx_setup and a store. */
static inline int rec_fx_setup_store(void **state)
{
    if (rec_fx_setup(state) != 0)
        return -1;
    rec_fx *f = *state;
    return rec_store_open(&f->loop, f->dir, &f->st, f->err, sizeof(f->err)) == 0 ? 0 : -1;
}

static inline int rec_fx_teardown(void **state)
{
    rec_fx *f = *state;
    rec_fx_close_store(f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&f->loop) != 0)
        fail_msg("the loop still has handles");
    nftw(f->dir, rec_fx_rm, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static inline void rec_fx_tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until *flag becomes nonzero or ms pass; false on timeout. */
static inline bool rec_fx_run_until(rec_fx *f, const int *flag, int ms)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, rec_fx_tick, 10, 10); /* wakes UV_RUN_ONCE regularly */
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    while (!*flag && uv_hrtime() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return *flag != 0;
}

static inline rec_meta rec_fx_meta(const char *id)
{
    rec_meta m = {
        .session_id = id,
        .user = "alice",
        .vm = "web01",
        .source = "192.0.2.7",
        .instance = "gw-a",
        .protocol = "ssh",
        .started_ms = REC_T0_MS,
        .cols = 80,
        .rows = 24,
    };
    return m;
}

static inline void rec_fx_path(const rec_fx *f, const char *id, char *out, size_t n)
{
    if ((size_t)snprintf(out, n, "%s/recordings/" REC_T0_DAY "/%s.cast", f->dir, id) >= n)
        fail_msg("path too long");
}

/* The whole file, malloc'd and NUL-terminated (NULL when missing). */
static inline char *rec_fx_read(const char *path, size_t *len)
{
    if (len)
        *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

static inline void rec_fx_write(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static inline bool rec_fx_exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* Records one finished session of id with the given output. */
static inline void rec_fx_record(rec_fx *f, const char *id, int64_t started_ms, const char *out)
{
    rec_meta m = rec_fx_meta(id);
    m.started_ms = started_ms;
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    if (out)
        assert_true(rec_output(r, out, strlen(out)) >= 0);
    rec_finish(r);
}

#endif
