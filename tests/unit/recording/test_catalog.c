/* Tests for recording/catalog.c, recording/search.c and recording/names.c:
 * rec_path_find (ids checked, symlinks and stray names ignored, newest
 * day first), rec_info_read, rec_list (order, range, max), rec_sweep
 * (retention, callbacks, emptied folders, running sessions kept),
 * rec_search_text (escapes removed, case folded, across events),
 * rec_state_dir_of, and the date arithmetic. */
#include "rec_fixture.h"

#include "common/err.h"
#include "recording/internal.h"

#include <errno.h>

#define DAY_MS INT64_C(86400000)

static void mkdirs(const char *root, const char *rel)
{
    char path[2048], *p;
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    mkdir(path, 0700);
}

static void test_catalog__path_find_checks_the_id(void **state)
{
    rec_fx *f = *state;
    char out[1024];
    assert_int_equal(rec_path_find(f->dir, "../x", out, sizeof(out)), PST_E_PARSE);
    assert_int_equal(rec_path_find(f->dir, "", out, sizeof(out)), PST_E_PARSE);
    assert_int_equal(rec_path_find(f->dir, "ABCD", out, sizeof(out)), PST_E_PARSE);
    assert_int_equal(rec_path_find(f->dir, "ab/cd", out, sizeof(out)), PST_E_PARSE);
    assert_int_equal(rec_path_find(f->dir, "abc.cast", out, sizeof(out)), PST_E_PARSE);
    char longid[REC_ID_MAX + 2];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(rec_path_find(f->dir, longid, out, sizeof(out)), PST_E_PARSE);
    longid[REC_ID_MAX] = '\0'; /* exactly the maximum is fine */
    assert_int_equal(rec_path_find(f->dir, longid, out, sizeof(out)), PST_E_NOTFOUND);
    assert_int_equal(rec_path_find(f->dir, "abc", out, sizeof(out)), PST_E_NOTFOUND);
}

static void test_catalog__path_find(void **state)
{
    rec_fx *f = *state;
    rec_fx_record(f, "a1", REC_T0_MS, "one");
    rec_fx_record(f, "b2", REC_T0_MS + 3 * DAY_MS, "two");
    rec_fx_close_store(f);
    char out[1024], want[1024];
    assert_int_equal(rec_path_find(f->dir, "a1", out, sizeof(out)), 0);
    rec_fx_path(f, "a1", want, sizeof(want));
    assert_string_equal(out, want);
    assert_int_equal(rec_path_find(f->dir, "b2", out, sizeof(out)), 0);
    assert_contains(out, "/recordings/2023/11/17/b2.cast");
    assert_int_equal(rec_path_find(f->dir, "b2", out, 10), -ENAMETOOLONG);

    /* A symlink named like a recording, and one named like a day folder,
     * lead nowhere. */
    char link[2048];
    snprintf(link, sizeof(link), "%s/recordings/" REC_T0_DAY "/c3.cast", f->dir);
    assert_int_equal(symlink("/etc/hostname", link), 0);
    assert_int_equal(rec_path_find(f->dir, "c3", out, sizeof(out)), PST_E_NOTFOUND);
    mkdirs(f->dir, "elsewhere");
    snprintf(link, sizeof(link), "%s/elsewhere/d4.cast", f->dir);
    rec_fx_write(link, "{}\n", 3);
    snprintf(link, sizeof(link), "%s/recordings/2023/11/20", f->dir);
    char target[2048];
    snprintf(target, sizeof(target), "%s/elsewhere", f->dir);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(rec_path_find(f->dir, "d4", out, sizeof(out)), PST_E_NOTFOUND);
    /* Folders of the wrong shape are not entered. */
    mkdirs(f->dir, "recordings/2023/11/1/");
    mkdirs(f->dir, "recordings/2023/13/01");
    mkdirs(f->dir, "recordings/2023/02/30");
    snprintf(link, sizeof(link), "%s/recordings/2023/02/30/e5.cast", f->dir);
    rec_fx_write(link, "{}\n", 3);
    assert_int_equal(rec_path_find(f->dir, "e5", out, sizeof(out)), PST_E_NOTFOUND);
}

/* The same id on two days (it cannot happen with random ids, but the
 * answer must not depend on readdir order). */
static void test_catalog__path_find_newest_first(void **state)
{
    rec_fx *f = *state;
    rec_fx_record(f, "aa", REC_T0_MS, "old");
    rec_fx_record(f, "aa", REC_T0_MS + 40 * DAY_MS, "new");
    rec_fx_close_store(f);
    char out[1024];
    assert_int_equal(rec_path_find(f->dir, "aa", out, sizeof(out)), 0);
    assert_contains(out, "/2023/12/24/aa.cast");
}

static void test_catalog__info(void **state)
{
    rec_fx *f = *state;
    recording *r;
    rec_meta m = rec_fx_meta("c0ffee");
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    rec_output(r, "x", 1);
    char path[2048];
    rec_fx_path(f, "c0ffee", path, sizeof(path));
    /* Running: the header is there within the flush interval, no manifest. */
    rec_info info;
    for (int i = 0; i < 300 && rec_info_read(path, &info) != 0; i++)
        usleep(10000);
    assert_int_equal(rec_info_read(path, &info), 0);
    assert_false(info.signed_);
    assert_int_equal(info.ended_ms, 0);
    rec_finish(r);
    rec_fx_close_store(f);

    assert_int_equal(rec_info_read(path, &info), 0);
    assert_string_equal(info.id, "c0ffee");
    assert_string_equal(info.user, "alice");
    assert_string_equal(info.vm, "web01");
    assert_string_equal(info.source, "192.0.2.7");
    assert_string_equal(info.instance, "gw-a");
    assert_string_equal(info.protocol, "ssh");
    assert_int_equal(info.started_ms, REC_T0_MS);
    assert_true(info.ended_ms >= REC_T0_MS);
    assert_true(info.signed_);
    assert_string_equal(info.path, path);
    struct stat sb;
    stat(path, &sb);
    assert_int_equal(info.size, (uint64_t)sb.st_size);

    /* A file that is not asciicast: what is known is still filled. */
    rec_fx_write(path, "garbage", 7);
    assert_int_equal(rec_info_read(path, &info), PST_E_PARSE);
    assert_string_equal(info.id, "c0ffee");
    assert_int_equal(info.size, 7);
}

static void test_catalog__list(void **state)
{
    rec_fx *f = *state;
    rec_fx_record(f, "01", REC_T0_MS, "a");
    rec_fx_record(f, "02", REC_T0_MS + 1000, "b");
    rec_fx_record(f, "03", REC_T0_MS + DAY_MS, "c");
    rec_fx_record(f, "04", REC_T0_MS + 400 * DAY_MS, "d");
    rec_fx_close_store(f);
    char junk[2048];
    snprintf(junk, sizeof(junk), "%s/recordings/" REC_T0_DAY "/notes.txt", f->dir);
    rec_fx_write(junk, "x", 1);

    rec_info *v;
    size_t n;
    assert_int_equal(rec_list(f->dir, 0, 0, 100, &v, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].id, "04");
    assert_string_equal(v[1].id, "03");
    assert_string_equal(v[2].id, "02");
    assert_string_equal(v[3].id, "01");
    assert_true(v[3].signed_);
    free(v);

    assert_int_equal(rec_list(f->dir, 0, 0, 2, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[1].id, "03");
    free(v);

    /* The first day only: its folder lies in the range. */
    assert_int_equal(rec_list(f->dir, REC_T0_MS, REC_T0_MS + 10, 100, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].id, "02");
    free(v);
    assert_int_equal(rec_list(f->dir, REC_T0_MS + DAY_MS, 0, 100, &v, &n), 0);
    assert_int_equal(n, 2);
    free(v);
    assert_int_equal(rec_list(f->dir, 1, 2, 100, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_null(v);
}

static int deleted;
static char deleted_ids[8][REC_ID_MAX + 1];

static void on_deleted(void *ud, const rec_info *info)
{
    if (deleted < 8)
        snprintf(deleted_ids[deleted], sizeof(deleted_ids[0]), "%s", info->id);
    deleted++;
    assert_string_equal(info->user, "alice");
}

static void test_catalog__sweep(void **state)
{
    rec_fx *f = *state;
    int64_t now = REC_T0_MS + 31 * DAY_MS;
    rec_fx_record(f, "01d", REC_T0_MS, "old");
    rec_fx_record(f, "0e", REC_T0_MS + DAY_MS, "kept: 30 days old");
    rec_fx_record(f, "0f", now, "today");
    rec_fx_close_store(f);
    char p[2048];
    /* A manifest without its recording and a crash's temporary, in an
     * old folder: leftovers that go too. */
    snprintf(p, sizeof(p), "%s/recordings/" REC_T0_DAY "/aa.cast.sig", f->dir);
    rec_fx_write(p, "x", 1);
    snprintf(p, sizeof(p), "%s/recordings/" REC_T0_DAY "/bb.cast.sig.tmp", f->dir);
    rec_fx_write(p, "x", 1);

    deleted = 0;
    assert_int_equal(rec_sweep(f->dir, 0, now, on_deleted, NULL), -EINVAL);
    assert_int_equal(rec_sweep(f->dir, 30, now, on_deleted, NULL), 0);
    assert_int_equal(deleted, 1);
    assert_string_equal(deleted_ids[0], "01d");
    /* The emptied day, month and year are gone; younger ones stay. */
    snprintf(p, sizeof(p), "%s/recordings/" REC_T0_DAY, f->dir);
    assert_false(rec_fx_exists(p));
    snprintf(p, sizeof(p), "%s/recordings/2023/11/15/0e.cast", f->dir);
    assert_true(rec_fx_exists(p));
    char out[1024];
    assert_int_equal(rec_path_find(f->dir, "0f", out, sizeof(out)), 0);
    assert_int_equal(rec_sweep(f->dir, 30, now, on_deleted, NULL), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(rec_sweep(f->dir, 1, now, on_deleted, NULL), 0);
    assert_int_equal(deleted, 2);
    snprintf(p, sizeof(p), "%s/recordings/2023/11", f->dir);
    assert_false(rec_fx_exists(p));
}

/* An old folder holding a file the sweep does not know stays, with it. */
static void test_catalog__sweep_keeps_foreign_files(void **state)
{
    rec_fx *f = *state;
    rec_fx_record(f, "01", REC_T0_MS, "old");
    rec_fx_close_store(f);
    char p[2048];
    snprintf(p, sizeof(p), "%s/recordings/" REC_T0_DAY "/README", f->dir);
    rec_fx_write(p, "x", 1);
    deleted = 0;
    assert_int_equal(rec_sweep(f->dir, 7, REC_T0_MS + 30 * DAY_MS, on_deleted, NULL), 0);
    assert_int_equal(deleted, 1);
    assert_true(rec_fx_exists(p));
}

/* An unsigned recording written to lately is a session still running. */
static void test_catalog__sweep_keeps_running_sessions(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta("0a");
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    rec_output(r, "x", 1);
    char path[2048];
    rec_fx_path(f, "0a", path, sizeof(path));
    for (int i = 0; i < 300 && !rec_fx_exists(path); i++)
        usleep(10000);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000;
    deleted = 0;
    /* Its day (2023) is far older than a day, its mtime is now. */
    assert_int_equal(rec_sweep(f->dir, 1, now, on_deleted, NULL), 0);
    assert_int_equal(deleted, 0);
    assert_true(rec_fx_exists(path));
    rec_finish(r);
}

static void search_fixture(rec_fx *f, const char *id, const char *const *outs, size_t n)
{
    rec_meta m = rec_fx_meta(id);
    m.record_input = true;
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    for (size_t i = 0; i < n; i++)
        rec_output(r, outs[i], strlen(outs[i]));
    rec_output(r, "nul\0-after\r\n", 12); /* a NUL: \u0000 in the line */
    rec_input(r, "typed-secret", 12);
    rec_finish(r);
}

static bool search(const char *path, const char *needle)
{
    bool found = false;
    int rc = rec_search_text(path, needle, &found);
    if (rc != 0)
        fail_msg("rec_search_text(%s): %s", needle, pst_strerror(rc));
    return found;
}

static void test_catalog__search(void **state)
{
    rec_fx *f = *state;
    const char *outs[] = {
        "$ ls\r\n",
        "\x1b[1;34mDocu",          /* a colour, then a word cut across events */
        "ments\x1b[0m  Mus\x1b",   /* ESC at the end of one event ... */
        "[0mic\r\n",               /* ... its sequence in the next */
        "\x1b]0;window-title\x07", /* OSC title: not text on screen */
        "\x1b]8;;http://x/\x1b\\link\x1b]8;;\x1b\\\r\n", /* hyperlink: text stays */
        "caf\xc3\xa9 \302\23331mred\r\n", /* an 8-bit CSI (U+009B) in UTF-8 */
        "bell\x07here\r\n",
    };
    search_fixture(f, "5e", outs, sizeof(outs) / sizeof(outs[0]));
    rec_fx_close_store(f);
    char path[2048];
    rec_fx_path(f, "5e", path, sizeof(path));
    assert_true(search(path, "Documents"));
    assert_true(search(path, "documents  music"));
    assert_true(search(path, "DOCUMENTS"));
    assert_true(search(path, "link\n"));
    assert_true(search(path, "caf\xc3\xa9 red"));
    assert_true(search(path, "bellhere"));
    assert_true(search(path, "-after")); /* a line holding \u0000 is read */
    assert_true(search(path, "ls\ndocuments"));
    assert_false(search(path, "window-title"));
    assert_false(search(path, "34m"));
    assert_false(search(path, "http"));
    assert_false(search(path, "typed-secret")); /* input, not output */
    assert_false(search(path, "nowhere"));

    bool found;
    assert_int_equal(rec_search_text(path, "", &found), PST_E_PARSE);
    char big[REC_SEARCH_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(rec_search_text(path, big, &found), PST_E_PARSE);
    char nope[2100];
    snprintf(nope, sizeof(nope), "%s.none", path);
    assert_int_equal(rec_search_text(nope, "x", &found), -ENOENT);
}

/* KMP restarts: a partial match that fails must not skip a real one. */
static void test_catalog__search_overlaps(void **state)
{
    rec_fx *f = *state;
    const char *outs[] = {"aab", "aaab", "abababc"};
    search_fixture(f, "6e", outs, 3);
    rec_fx_close_store(f);
    char path[2048];
    rec_fx_path(f, "6e", path, sizeof(path));
    assert_true(search(path, "aaab"));
    assert_true(search(path, "ababc"));
    assert_true(search(path, "baaaba"));
    assert_false(search(path, "aaaa"));
}

static void test_catalog__search_hostile_file(void **state)
{
    rec_fx *f = *state;
    rec_fx_close_store(f);
    char path[2048];
    snprintf(path, sizeof(path), "%s/x.cast", f->dir);
    /* A line longer than any we write, garbage, and a cut last line. */
    size_t n = REC_EVENT_LINE_MAX * 3;
    char *s = malloc(n);
    memset(s, 'x', n);
    memcpy(s, "{}\n[0.1, \"o\", \"", 16);
    const char *tail = "\"]\n[1, \"o\", \"found me\"]\n[2, \"o\", \"cu";
    memcpy(s + n - 40, tail, strlen(tail));
    rec_fx_write(path, s, n - 40 + strlen(tail));
    free(s);
    assert_true(search(path, "found me"));
    assert_false(search(path, "xxxx"));
    assert_false(search(path, "cu"));
}

static void test_catalog__state_dir_of(void **state)
{
    char out[256];
    assert_int_equal(rec_state_dir_of("/var/lib/postern/recordings/2024/01/31/ab.cast", out,
                                      sizeof(out)),
                     0);
    assert_string_equal(out, "/var/lib/postern");
    assert_int_equal(rec_state_dir_of("recordings/2024/01/31/ab.cast", out, sizeof(out)), 0);
    assert_string_equal(out, ".");
    assert_int_equal(rec_state_dir_of("/recordings/2024/01/31/ab.cast", out, sizeof(out)), 0);
    assert_string_equal(out, "/");
    assert_int_equal(rec_state_dir_of("s//recordings/2024/01/31/ab.cast", out, sizeof(out)), 0);
    assert_string_equal(out, "s");
    assert_int_equal(rec_state_dir_of("/x/recordings/2024/1/31/ab.cast", out, sizeof(out)),
                     PST_E_PARSE);
    assert_int_equal(rec_state_dir_of("/x/records/2024/01/31/ab.cast", out, sizeof(out)),
                     PST_E_PARSE);
    assert_int_equal(rec_state_dir_of("/x/recordings/2024/01/31/AB.cast", out, sizeof(out)),
                     PST_E_PARSE);
    assert_int_equal(rec_state_dir_of("2024/01/31/ab.cast", out, sizeof(out)), PST_E_PARSE);
    assert_int_equal(rec_state_dir_of("ab.cast", out, sizeof(out)), PST_E_PARSE);
    assert_int_equal(rec_state_dir_of("/long/recordings/2024/01/31/ab.cast", out, 4),
                     -ENAMETOOLONG);
}

static void test_catalog__dates(void **state)
{
    int y, m, d;
    rec_day_of(0, &y, &m, &d);
    assert_true(y == 1970 && m == 1 && d == 1);
    rec_day_of(REC_T0_MS, &y, &m, &d);
    assert_true(y == 2023 && m == 11 && d == 14);
    rec_day_of(INT64_C(951782400000), &y, &m, &d); /* 2000-02-29 */
    assert_true(y == 2000 && m == 2 && d == 29);
    rec_day_of(-1, &y, &m, &d);
    assert_true(y == 1969 && m == 12 && d == 31);
    assert_int_equal(rec_day_start_ms(2000, 2, 29), INT64_C(951782400000));
    assert_true(rec_day_valid(2024, 2, 29));
    assert_false(rec_day_valid(2023, 2, 29));
    assert_false(rec_day_valid(2023, 4, 31));
    assert_false(rec_day_valid(2023, 13, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, rec_fx_setup_store, rec_fx_teardown)
        T(test_catalog__path_find_checks_the_id),
        T(test_catalog__path_find),
        T(test_catalog__path_find_newest_first),
        T(test_catalog__info),
        T(test_catalog__list),
        T(test_catalog__sweep),
        T(test_catalog__sweep_keeps_foreign_files),
        T(test_catalog__sweep_keeps_running_sessions),
        T(test_catalog__search),
        T(test_catalog__search_overlaps),
        T(test_catalog__search_hostile_file),
        T(test_catalog__state_dir_of),
        T(test_catalog__dates),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
