/* Tests for recording/store.c and recording/writer.c on a real uv loop:
 * the file and its manifest after a whole session, the key files, the
 * flush while a session runs, failures (a regular file where a folder must
 * go; tests run as root, so permissions would not stop the writer),
 * silence after rec_finish, back-pressure, input events, bad arguments. */
#include "rec_fixture.h"

#include "common/err.h"

#include <errno.h>
#include <jansson.h>

#define ID "0123abcd"

/* The events of a .cast: every line after the header must be a JSON
 * array [time, type, string]. Concatenates the data of one type. */
typedef struct {
    json_t *header;
    size_t lines, outputs, inputs, resizes;
    char text[2 << 20];
    size_t textlen;
    char resize[64];
} parsed_cast;

static void parse_cast(const char *path, char type, parsed_cast *p)
{
    memset(p, 0, sizeof(*p));
    size_t len;
    char *s = rec_fx_read(path, &len);
    assert_non_null(s);
    char *line = s, *nl;
    while ((nl = strchr(line, '\n')) != NULL) {
        json_error_t e;
        json_t *j = json_loadb(line, (size_t)(nl - line), JSON_ALLOW_NUL, &e);
        if (!j)
            fail_msg("line %zu is not JSON: %s", p->lines + 1, e.text);
        if (p->lines++ == 0) {
            p->header = j;
        } else {
            assert_true(json_is_array(j) && json_array_size(j) == 3);
            assert_true(json_is_real(json_array_get(j, 0)));
            const char *t = json_string_value(json_array_get(j, 1));
            json_t *d = json_array_get(j, 2);
            assert_non_null(t);
            assert_true(json_is_string(d));
            p->outputs += t[0] == 'o';
            p->inputs += t[0] == 'i';
            if (t[0] == 'r') {
                p->resizes++;
                snprintf(p->resize, sizeof(p->resize), "%s", json_string_value(d));
            }
            if (t[0] == type) {
                size_t n = json_string_length(d);
                assert_true(p->textlen + n < sizeof(p->text));
                memcpy(p->text + p->textlen, json_string_value(d), n);
                p->textlen += n;
                p->text[p->textlen] = '\0';
            }
            json_decref(j);
        }
        line = nl + 1;
    }
    assert_int_equal(*line, '\0'); /* whole lines only */
    free(s);
}

static mode_t mode_of(const char *path)
{
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    return sb.st_mode & 07777;
}

static void test_store__session_file_and_manifest(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    /* A euro sign split across calls; a resize between outputs. */
    assert_int_equal(rec_output(r, "hello \xe2\x82", 8), 0);
    assert_int_equal(rec_output(r, "\xac world\r\n", 9), 0);
    assert_int_equal(rec_resize(r, 132, 43), 0);
    assert_int_equal(rec_input(r, "ls\r", 3), 0); /* not recorded: record_input off */
    assert_int_equal(rec_output(r, "\x1b[1mbold\x1b[0m\n", 13), 0);
    assert_int_equal(rec_output(r, "nul\0byte", 8), 0); /* legal output, \u0000 in JSON */
    rec_finish(r);
    rec_fx_close_store(f);
    assert_int_equal(f->failed, 0);

    char path[2048], sig[2100];
    rec_fx_path(f, ID, path, sizeof(path));
    snprintf(sig, sizeof(sig), "%s.sig", path);
    assert_int_equal(mode_of(path), 0600);
    assert_int_equal(mode_of(sig), 0600);
    char day[2048];
    snprintf(day, sizeof(day), "%s/recordings/" REC_T0_DAY, f->dir);
    assert_int_equal(mode_of(day), 0700);
    char keys[2048];
    snprintf(keys, sizeof(keys), "%s/keys/recording.key", f->dir);
    assert_int_equal(mode_of(keys), 0600);
    snprintf(keys, sizeof(keys), "%s/keys/recording.pub", f->dir);
    assert_int_equal(mode_of(keys), 0644);

    parsed_cast *p = malloc(sizeof(*p));
    parse_cast(path, 'o', p);
    json_t *h = p->header;
    assert_int_equal(json_integer_value(json_object_get(h, "version")), 2);
    assert_int_equal(json_integer_value(json_object_get(h, "width")), 80);
    assert_int_equal(json_integer_value(json_object_get(h, "height")), 24);
    assert_int_equal(json_integer_value(json_object_get(h, "timestamp")), REC_T0_MS / 1000);
    json_t *pm = json_object_get(h, "postern");
    assert_string_equal(json_string_value(json_object_get(pm, "session_id")), ID);
    assert_string_equal(json_string_value(json_object_get(pm, "user")), "alice");
    assert_string_equal(json_string_value(json_object_get(pm, "vm")), "web01");
    assert_string_equal(json_string_value(json_object_get(pm, "source")), "192.0.2.7");
    assert_string_equal(json_string_value(json_object_get(pm, "instance")), "gw-a");
    assert_string_equal(json_string_value(json_object_get(pm, "protocol")), "ssh");
    json_decref(h);
    assert_int_equal(p->textlen, 38);
    assert_memory_equal(p->text, "hello \xe2\x82\xac world\r\n\x1b[1mbold\x1b[0m\nnul\0byte", 38);
    assert_int_equal(p->inputs, 0);
    assert_int_equal(p->resizes, 1);
    assert_string_equal(p->resize, "132x43");
    free(p);

    /* The manifest: two lines, the first the JSON that was signed. */
    size_t slen;
    char *s = rec_fx_read(sig, &slen);
    assert_non_null(s);
    char *nl = strchr(s, '\n');
    assert_non_null(nl);
    json_t *man = json_loadb(s, (size_t)(nl - s), 0, NULL);
    assert_non_null(man);
    assert_string_equal(json_string_value(json_object_get(man, "file")), ID ".cast");
    assert_int_equal(json_integer_value(json_object_get(man, "chunk_size")), REC_CHUNK_SIZE);
    assert_int_equal(json_array_size(json_object_get(man, "chain")), 1);
    json_t *sess = json_object_get(man, "session");
    assert_int_equal(json_integer_value(json_object_get(sess, "started_ms")), REC_T0_MS);
    assert_true(json_integer_value(json_object_get(sess, "ended_ms")) >= REC_T0_MS);
    json_decref(man);
    free(s);

    char *pem, err[256];
    assert_int_equal(rec_public_key_read(f->dir, &pem, err, sizeof(err)), 0);
    char detail[512];
    assert_int_equal(rec_verify_file(path, pem, detail, sizeof(detail)), REC_VERIFY_OK);
    free(pem);
}

static void test_store__event_times(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_int_equal(rec_output(r, "a", 1), 0);
    usleep(30000);
    assert_int_equal(rec_output(r, "b", 1), 0);
    rec_finish(r);
    rec_fx_close_store(f);
    char path[2048];
    rec_fx_path(f, ID, path, sizeof(path));
    char *s = rec_fx_read(path, NULL);
    char *l2 = strchr(s, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
    /* [S.UUUUUU, "o", ...]: microseconds, six digits, increasing. */
    unsigned long s1, u1, s2, u2;
    assert_int_equal(sscanf(l2, "[%lu.%6lu, \"o\", \"a\"]", &s1, &u1), 2);
    assert_int_equal(sscanf(l3, "[%lu.%6lu, \"o\", \"b\"]", &s2, &u2), 2);
    assert_int_equal(l2[strcspn(l2, ".") + 7], ',');
    double d = (double)s2 + u2 / 1e6 - ((double)s1 + u1 / 1e6);
    assert_true(d >= 0.025 && d < 5.0);
    free(s);
}

/* What is in memory reaches the file within REC_FLUSH_MS, session or not:
 * a gateway killed now would leave this. */
static void test_store__flushes_while_running(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_int_equal(rec_output(r, "still running", 13), 0);
    char path[2048];
    rec_fx_path(f, ID, path, sizeof(path));
    char *s = NULL;
    for (int i = 0; i < 300 && !(s && strstr(s, "still running")); i++) {
        free(s);
        usleep(10000);
        s = rec_fx_read(path, NULL);
    }
    assert_non_null(s);
    assert_contains(s, "still running");
    assert_int_equal(s[strlen(s) - 1], '\n');
    free(s);
    char detail[256];
    assert_int_equal(rec_verify_file(path, rec_store_public_key_pem(f->st), detail,
                                     sizeof(detail)),
                     REC_VERIFY_UNSIGNED);
    rec_finish(r);
}

static void test_store__key_persists(void **state)
{
    rec_fx *f = *state;
    char *first = strdup(rec_store_public_key_pem(f->st));
    assert_starts_with(first, "-----BEGIN PUBLIC KEY-----");
    rec_fx_close_store(f);
    rec_fx_open_store(f);
    assert_string_equal(rec_store_public_key_pem(f->st), first);
    /* recording.pub is rewritten from the private key when it is off. */
    char pub[2048];
    snprintf(pub, sizeof(pub), "%s/keys/recording.pub", f->dir);
    rec_fx_write(pub, "junk\n", 5);
    rec_fx_close_store(f);
    rec_fx_open_store(f);
    char *now = rec_fx_read(pub, NULL);
    assert_string_equal(now, first);
    free(now);
    free(first);
}

static void test_store__key_open_to_others_refused(void **state)
{
    rec_fx *f = *state;
    rec_fx_close_store(f);
    char key[2048];
    snprintf(key, sizeof(key), "%s/keys/recording.key", f->dir);
    assert_int_equal(chmod(key, 0644), 0);
    rec_store *st = NULL;
    assert_int_not_equal(rec_store_open(&f->loop, f->dir, &st, f->err, sizeof(f->err)), 0);
    assert_null(st);
    assert_contains(f->err, "recording.key");
    assert_contains(f->err, "chmod 600");
}

/* Fails the recording's date folder: a regular file where it must go. */
static void test_store__fails_on_file_for_folder(void **state)
{
    rec_fx *f = *state;
    char year[2048];
    snprintf(year, sizeof(year), "%s/recordings/2023", f->dir);
    rec_fx_write(year, "x", 1);
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_true(rec_fx_run_until(f, &f->failed, 5000));
    assert_int_equal(f->failed, 1);
    assert_int_equal(f->ready, 0); /* never ready: a required policy never starts */
    assert_string_equal(f->failed_msg, "recording cannot be written: Not a directory");
    assert_int_equal(rec_output(r, "lost", 4), -ENOTDIR);
    assert_int_equal(rec_resize(r, 100, 30), -ENOTDIR);
    rec_finish(r);
    rec_fx_close_store(f);
    assert_int_equal(f->failed, 1);
}

/* on_ready: once the file exists, before any output was asked for. */
static void test_store__ready_once_file_exists(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    char path[2048];
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_true(rec_fx_run_until(f, &f->ready, 5000));
    assert_int_equal(f->ready, 1);
    rec_fx_path(f, ID, path, sizeof(path));
    assert_true(rec_fx_exists(path));
    rec_finish(r);
    rec_fx_close_store(f);
    assert_int_equal(f->ready, 1);
    assert_int_equal(f->failed, 0);
}

/* Writing from rec_open until the writer has signed it after rec_finish. */
static void test_store__writing_until_signed(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    char path[2048], sig[2100];
    assert_false(rec_store_writing(f->st, ID));
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_true(rec_store_writing(f->st, ID));
    assert_false(rec_store_writing(f->st, "abc"));
    rec_output(r, "x", 1);
    rec_finish(r);
    uv_timer_t t; /* the store's handle does not keep a loop alive */
    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, rec_fx_tick, 10, 10);
    for (int i = 0; i < 500 && rec_store_writing(f->st, ID); i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(rec_store_writing(f->st, ID));
    rec_fx_path(f, ID, path, sizeof(path));
    snprintf(sig, sizeof(sig), "%s.sig", path);
    assert_true(rec_fx_exists(sig)); /* no longer writing means signed */
    rec_fx_close_store(f);
}

/* A held store creates nothing until it closes, then signs as usual. */
static void test_store__held_until_close(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    char path[2048], sig[2100];
    rec_store_hold(f->st);
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    rec_output(r, "x", 1);
    rec_finish(r);
    usleep(300 * 1000); /* time enough for an unheld writer to sign */
    rec_fx_path(f, ID, path, sizeof(path));
    snprintf(sig, sizeof(sig), "%s.sig", path);
    assert_false(rec_fx_exists(path));
    rec_fx_close_store(f);
    assert_true(rec_fx_exists(sig));
}

/* The same with recordings/ itself replaced after the store opened. */
static void test_store__fails_when_recordings_dir_is_a_file(void **state)
{
    rec_fx *f = *state;
    char top[2048];
    snprintf(top, sizeof(top), "%s/recordings", f->dir);
    assert_int_equal(rmdir(top), 0);
    rec_fx_write(top, "x", 1);
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_true(rec_fx_run_until(f, &f->failed, 5000));
    assert_contains(f->failed_msg, "recording cannot be written: ");
    assert_true(rec_output(r, "lost", 4) < 0);
    rec_finish(r);
    rec_fx_close_store(f);
    assert_int_equal(f->failed, 1);
}

/* A day folder that exists but holds a file of the same id: the
 * recording fails, the other file stays as it was, no .sig appears. */
static void test_store__existing_file_not_overwritten(void **state)
{
    rec_fx *f = *state;
    char day[2048], path[2048], sig[2100];
    snprintf(day, sizeof(day), "%s/recordings/2023", f->dir);
    mkdir(day, 0700);
    snprintf(day, sizeof(day), "%s/recordings/2023/11", f->dir);
    mkdir(day, 0700);
    snprintf(day, sizeof(day), "%s/recordings/" REC_T0_DAY, f->dir);
    mkdir(day, 0700);
    rec_fx_path(f, ID, path, sizeof(path));
    rec_fx_write(path, "earlier\n", 8);
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_true(rec_fx_run_until(f, &f->failed, 5000));
    assert_string_equal(f->failed_msg, "recording cannot be written: File exists");
    rec_finish(r);
    rec_fx_close_store(f);
    char *s = rec_fx_read(path, NULL);
    assert_string_equal(s, "earlier\n");
    free(s);
    snprintf(sig, sizeof(sig), "%s.sig", path);
    assert_false(rec_fx_exists(sig));
}

/* rec_finish before the writer's failure reaches the loop: no callback. */
static void test_store__no_callback_after_finish(void **state)
{
    rec_fx *f = *state;
    char year[2048];
    snprintf(year, sizeof(year), "%s/recordings/2023", f->dir);
    rec_fx_write(year, "x", 1);
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%x", 0x100 + i);
        rec_meta m = rec_fx_meta(id);
        recording *r;
        assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
        rec_output(r, "x", 1);
        rec_finish(r);
    }
    usleep(50000); /* let the writer fail them all first */
    rec_fx_close_store(f);
    assert_int_equal(f->failed, 0);
    assert_int_equal(f->drained, 0);
}

static void test_store__back_pressure(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    size_t big = REC_QUEUE_HIGH + 4096;
    char *buf = malloc(big);
    memset(buf, 'x', big);
    /* Counted before the writer can take it: 1 without a race. */
    assert_int_equal(rec_output(r, buf, big), 1);
    assert_int_equal(f->drained, 0);
    assert_true(rec_fx_run_until(f, &f->drained, 10000));
    assert_int_equal(f->drained, 1);
    assert_int_equal(rec_output(r, "y", 1), 0);
    rec_finish(r);
    rec_fx_close_store(f);
    assert_int_equal(f->failed, 0);
    assert_int_equal(f->drained, 1);

    char path[2048];
    rec_fx_path(f, ID, path, sizeof(path));
    parsed_cast *p = malloc(sizeof(*p));
    parse_cast(path, 'o', p);
    json_decref(p->header);
    assert_int_equal(p->textlen, big + 1);
    assert_true(p->outputs > 1); /* split into bounded events */
    free(p);
    free(buf);
    char *pem, err[256], detail[256];
    assert_int_equal(rec_public_key_read(f->dir, &pem, err, sizeof(err)), 0);
    assert_int_equal(rec_verify_file(path, pem, detail, sizeof(detail)), REC_VERIFY_OK);
    free(pem);
}

/* A caller that never pauses loses the recording, not the memory. */
static void test_store__ignored_back_pressure_fails(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    size_t big = 2u << 20;
    char *buf = calloc(1, big);
    int rc = 0;
    for (int i = 0; i < 64 && rc >= 0; i++)
        rc = rec_output(r, buf, big);
    free(buf);
    assert_int_equal(rc, -ENOBUFS);
    assert_true(rec_fx_run_until(f, &f->failed, 10000));
    assert_contains(f->failed_msg, "recording cannot be written: ");
    rec_finish(r);
    rec_fx_close_store(f);
    char path[2048], sig[2100];
    rec_fx_path(f, ID, path, sizeof(path));
    snprintf(sig, sizeof(sig), "%s.sig", path);
    assert_false(rec_fx_exists(sig));
}

static void test_store__input_events_when_asked(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    m.record_input = true;
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_int_equal(rec_input(r, "ls -l\r", 6), 0);
    assert_int_equal(rec_output(r, "total 0\r\n", 9), 0);
    rec_finish(r);
    rec_fx_close_store(f);
    char path[2048];
    rec_fx_path(f, ID, path, sizeof(path));
    parsed_cast *p = malloc(sizeof(*p));
    parse_cast(path, 'i', p);
    json_decref(p->header);
    assert_int_equal(p->inputs, 1);
    assert_int_equal(p->outputs, 1);
    assert_string_equal(p->text, "ls -l\r");
    free(p);
}

/* A character cut at the very end of the session is not lost silently. */
static void test_store__cut_character_at_end(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_int_equal(rec_output(r, "ok\xe2\x82", 4), 0);
    rec_finish(r);
    rec_fx_close_store(f);
    char path[2048];
    rec_fx_path(f, ID, path, sizeof(path));
    parsed_cast *p = malloc(sizeof(*p));
    parse_cast(path, 'o', p);
    json_decref(p->header);
    assert_string_equal(p->text, "ok\xef\xbf\xbd");
    free(p);
}

static void test_store__open_refuses_bad_arguments(void **state)
{
    rec_fx *f = *state;
    recording *r;
    rec_meta m = rec_fx_meta("ABC");
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), PST_E_PARSE);
    m = rec_fx_meta("../x");
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), PST_E_PARSE);
    m = rec_fx_meta("");
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), PST_E_PARSE);
    m = rec_fx_meta("abc");
    m.cols = 0;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), -EINVAL);
    m = rec_fx_meta("abc");
    char longuser[300];
    memset(longuser, 'u', sizeof(longuser) - 1);
    longuser[sizeof(longuser) - 1] = '\0';
    m.user = longuser;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), -EINVAL);
    m = rec_fx_meta("abc");
    rec_callbacks none = {0};
    assert_int_equal(rec_open(f->st, &m, &none, f, &r), PST_E_STATE);

    /* Bad UTF-8 in metadata is repaired, not refused. */
    m = rec_fx_meta("abc");
    m.user = "b\xffob";
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_int_equal(rec_resize(r, 0, 10), -EINVAL);
    rec_finish(r);
    rec_fx_close_store(f);
    char path[2048];
    rec_fx_path(f, "abc", path, sizeof(path));
    rec_info info;
    assert_int_equal(rec_info_read(path, &info), 0);
    assert_string_equal(info.user, "b\xef\xbf\xbdob");
}

/* rec_store_close signs what the caller did not finish. */
static void test_store__close_finishes_open_recordings(void **state)
{
    rec_fx *f = *state;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    assert_int_equal(rec_open(f->st, &m, &rec_fx_cb, f, &r), 0);
    assert_int_equal(rec_output(r, "bye", 3), 0);
    rec_fx_close_store(f);
    char path[2048], *pem, err[256], detail[256];
    rec_fx_path(f, ID, path, sizeof(path));
    assert_int_equal(rec_public_key_read(f->dir, &pem, err, sizeof(err)), 0);
    assert_int_equal(rec_verify_file(path, pem, detail, sizeof(detail)), REC_VERIFY_OK);
    free(pem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, rec_fx_setup_store, rec_fx_teardown)
        T(test_store__session_file_and_manifest),
        T(test_store__event_times),
        T(test_store__flushes_while_running),
        T(test_store__key_persists),
        T(test_store__key_open_to_others_refused),
        T(test_store__ready_once_file_exists),
        T(test_store__writing_until_signed),
        T(test_store__held_until_close),
        T(test_store__fails_on_file_for_folder),
        T(test_store__fails_when_recordings_dir_is_a_file),
        T(test_store__existing_file_not_overwritten),
        T(test_store__no_callback_after_finish),
        T(test_store__back_pressure),
        T(test_store__ignored_back_pressure_fails),
        T(test_store__input_events_when_asked),
        T(test_store__cut_character_at_end),
        T(test_store__open_refuses_bad_arguments),
        T(test_store__close_finishes_open_recordings),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
