/* Tests for auth/store.c: login sessions (lookup, idle and absolute expiry,
 * deletion), API tokens (format, lookup, wrong secret, revocation, expiry,
 * listing), the TOTP replay guard, persistence across a reopen, and that
 * the file never holds a cookie or a token in clear. Each test gets its own
 * temporary directory, removed afterwards; time is passed in. */
#include "unit_test.h"

#include "auth/auth.h"
#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0 1700000000 /* any fixed "now" */
#define IDLE 1800
#define MAX (12 * 3600)

typedef struct {
    char root[1024]; /* mkdtemp'd; removed in teardown */
    char path[1100]; /* root/state.db */
    auth_store *s;
    char err[512];
} fixture;

static int tmp_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    if (!unit_tmpdir(f->root, sizeof(f->root), "store")) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/state.db", f->root);
    *state = f;
    return 0;
}

/* tmp_setup, and the store opened. */
static int store_setup(void **state)
{
    if (tmp_setup(state) != 0)
        return -1;
    fixture *f = *state;
    return auth_store_open(f->path, &f->s, f->err, sizeof(f->err)) == 0 ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int tmp_teardown(void **state)
{
    fixture *f = *state;
    auth_store_close(f->s);
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void reopen(fixture *f)
{
    auth_store_close(f->s);
    f->s = NULL;
    int rc = auth_store_open(f->path, &f->s, f->err, sizeof(f->err));
    if (rc != 0)
        fail_msg("auth_store_open: %d %s", rc, f->err);
}

/* One integer from the file through a second connection, as an outsider
 * (a backup, an operator with sqlite3) would see it. */
static int64_t db_int(fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void db_exec(fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* The bytes of a file (empty when it does not exist); caller frees. */
static char *slurp(const char *path, size_t *len)
{
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return calloc(1, 1);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(fp);
    *len = n;
    return buf;
}

/* Whether needle occurs in the database file or its -wal / -shm files. */
static bool files_contain(fixture *f, const char *needle)
{
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    bool found = false;
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        char p[1200];
        snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
        size_t len;
        char *buf = slurp(p, &len);
        if (memmem(buf, len, needle, strlen(needle)))
            found = true;
        free(buf);
    }
    return found;
}

static bool b64url_only(const char *s)
{
    for (; *s; s++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *s))
            return false;
    return true;
}

/* The secret part of pst_<id>_<secret> (which may itself hold '_'). */
static const char *token_secret(const char *token)
{
    return token + 4 + AUTH_TOKEN_ID_LEN + 1;
}

static void new_session(fixture *f, const char *user, bool mfa, int64_t now, char *id)
{
    int rc = auth_session_create(f->s, user, mfa, now, id);
    if (rc != 0)
        fail_msg("auth_session_create: %s", pst_strerror(rc));
}

static void new_token(fixture *f, const char *user, const char *name, unsigned actions,
                      int64_t now, int64_t expires, char *token, auth_token *out)
{
    int rc = auth_token_create(f->s, user, name, actions, now, expires, token, out);
    if (rc != 0)
        fail_msg("auth_token_create: %s", pst_strerror(rc));
}

/* ---- open --------------------------------------------------------------- */

static void test_store__open_creates_private_file(void **state)
{
    fixture *f = *state;
    assert_int_equal(auth_store_open(f->path, &f->s, f->err, sizeof(f->err)), 0);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* SQLite gives its side files the main file's mode. */
    char wal[1200];
    snprintf(wal, sizeof(wal), "%s-wal", f->path);
    assert_int_equal(stat(wal, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(db_int(f, "SELECT version FROM schema_version"), 1);
    assert_int_equal(db_int(f, "SELECT count(*) FROM schema_version"), 1);
    /* WAL stays in the file's header: a second connection sees it. */
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void test_store__open_tightens_mode(void **state)
{
    fixture *f = *state;
    int fd = open(f->path, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    fchmod(fd, 0644);
    close(fd);
    assert_int_equal(auth_store_open(f->path, &f->s, f->err, sizeof(f->err)), 0);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_store__open_errors(void **state)
{
    fixture *f = *state;
    char p[1200];
    snprintf(p, sizeof(p), "%s/missing/state.db", f->root);
    assert_int_equal(auth_store_open(p, &f->s, f->err, sizeof(f->err)), -ENOENT);
    assert_null(f->s);
    assert_contains(f->err, p);

    /* Not a database. */
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite file\n", fp);
    fclose(fp);
    assert_int_equal(auth_store_open(f->path, &f->s, f->err, sizeof(f->err)), PST_E_STATE);
    assert_null(f->s);
    assert_contains(f->err, f->path);
}

static void test_store__newer_schema_refused(void **state)
{
    fixture *f = *state;
    auth_store_close(f->s);
    f->s = NULL;
    db_exec(f, "UPDATE schema_version SET version = 99");
    assert_int_equal(auth_store_open(f->path, &f->s, f->err, sizeof(f->err)), PST_E_STATE);
    assert_null(f->s);
    assert_contains(f->err, "schema version 99");
    /* Refused without touching it. */
    assert_int_equal(db_int(f, "SELECT version FROM schema_version"), 99);
}

/* ---- sessions ----------------------------------------------------------- */

static void test_store__session_create_lookup(void **state)
{
    fixture *f = *state;
    char id[AUTH_SESSION_ID_LEN + 1], id2[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", true, T0, id);
    assert_int_equal(strlen(id), AUTH_SESSION_ID_LEN);
    assert_true(b64url_only(id));
    new_session(f, "bob", false, T0, id2);
    assert_string_not_equal(id, id2);

    auth_session s;
    memset(&s, 0xa5, sizeof(s));
    assert_int_equal(auth_session_lookup(f->s, id, T0 + 5, IDLE, MAX, &s), 0);
    assert_string_equal(s.user, "alice");
    assert_true(s.mfa);
    assert_int_equal(s.created, T0);
    assert_int_equal(s.last_seen, T0);
    assert_int_equal(auth_session_lookup(f->s, id2, T0 + 5, IDLE, MAX, &s), 0);
    assert_string_equal(s.user, "bob");
    assert_false(s.mfa);
}

static void test_store__session_unknown_ids(void **state)
{
    fixture *f = *state;
    char id[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", false, T0, id);
    auth_session s;
    char other[AUTH_SESSION_ID_LEN + 1];
    memcpy(other, id, sizeof(other));
    other[0] = other[0] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_session_lookup(f->s, other, T0, IDLE, MAX, &s), PST_E_NOTFOUND);
    assert_int_equal(auth_session_lookup(f->s, NULL, T0, IDLE, MAX, &s), PST_E_NOTFOUND);
    assert_int_equal(auth_session_lookup(f->s, "", T0, IDLE, MAX, &s), PST_E_NOTFOUND);
    char shorter[AUTH_SESSION_ID_LEN];
    memcpy(shorter, id, sizeof(shorter) - 1);
    shorter[sizeof(shorter) - 1] = '\0';
    assert_int_equal(auth_session_lookup(f->s, shorter, T0, IDLE, MAX, &s), PST_E_NOTFOUND);
    char longer[AUTH_SESSION_ID_LEN + 2];
    snprintf(longer, sizeof(longer), "%sA", id);
    assert_int_equal(auth_session_lookup(f->s, longer, T0, IDLE, MAX, &s), PST_E_NOTFOUND);
    memcpy(other, id, sizeof(other));
    other[10] = '\'';
    assert_int_equal(auth_session_lookup(f->s, other, T0, IDLE, MAX, &s), PST_E_NOTFOUND);
    /* The real one is still there. */
    assert_int_equal(auth_session_lookup(f->s, id, T0, IDLE, MAX, &s), 0);
}

static void test_store__session_idle_expiry(void **state)
{
    fixture *f = *state;
    char id[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", false, T0, id);
    auth_session s;
    /* Exactly idle_seconds after the last use is still alive (and used). */
    assert_int_equal(auth_session_lookup(f->s, id, T0 + IDLE, IDLE, MAX, &s), 0);
    assert_int_equal(s.last_seen, T0 + IDLE);
    assert_int_equal(auth_session_lookup(f->s, id, T0 + 2 * IDLE, IDLE, MAX, &s), 0);
    /* One second more idle is too much; the row goes. */
    assert_int_equal(auth_session_lookup(f->s, id, T0 + 3 * IDLE + 1, IDLE, MAX, &s),
                     PST_E_NOTFOUND);
    assert_int_equal(db_int(f, "SELECT count(*) FROM sessions"), 0);
    /* Gone for good, even for a lookup with a longer limit. */
    assert_int_equal(auth_session_lookup(f->s, id, T0 + 3 * IDLE + 1, 10 * IDLE, MAX, &s),
                     PST_E_NOTFOUND);
}

static void test_store__session_absolute_expiry(void **state)
{
    fixture *f = *state;
    char id[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", false, T0, id);
    auth_session s;
    /* Used every 10 minutes: never idle, but not older than MAX either. */
    int64_t now = T0;
    for (; now + 600 <= T0 + MAX; now += 600)
        assert_int_equal(auth_session_lookup(f->s, id, now + 600, IDLE, MAX, &s), 0);
    assert_int_equal(auth_session_lookup(f->s, id, T0 + MAX, IDLE, MAX, &s), 0);
    assert_int_equal(auth_session_lookup(f->s, id, T0 + MAX + 1, IDLE, MAX, &s),
                     PST_E_NOTFOUND);
    assert_int_equal(db_int(f, "SELECT count(*) FROM sessions"), 0);
}

static void test_store__session_touch_is_rate_limited(void **state)
{
    fixture *f = *state;
    char id[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", false, T0, id);
    auth_session s;
    /* Within a minute of the last write: nothing written. */
    for (int i = 1; i < 60; i += 7) {
        assert_int_equal(auth_session_lookup(f->s, id, T0 + i, IDLE, MAX, &s), 0);
        assert_int_equal(s.last_seen, T0);
    }
    assert_int_equal(db_int(f, "SELECT last_seen FROM sessions"), T0);
    assert_int_equal(auth_session_lookup(f->s, id, T0 + 60, IDLE, MAX, &s), 0);
    assert_int_equal(s.last_seen, T0 + 60);
    assert_int_equal(db_int(f, "SELECT last_seen FROM sessions"), T0 + 60);
    /* A short idle limit refreshes more often, so an active session lives. */
    for (int64_t now = T0 + 70; now < T0 + 400; now += 10)
        assert_int_equal(auth_session_lookup(f->s, id, now, 20, MAX, &s), 0);
}

static void test_store__session_delete(void **state)
{
    fixture *f = *state;
    char id[AUTH_SESSION_ID_LEN + 1], keep[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", false, T0, id);
    new_session(f, "alice", false, T0, keep);
    assert_int_equal(auth_session_delete(f->s, id), 0);
    auth_session s;
    assert_int_equal(auth_session_lookup(f->s, id, T0, IDLE, MAX, &s), PST_E_NOTFOUND);
    assert_int_equal(auth_session_delete(f->s, id), PST_E_NOTFOUND);
    assert_int_equal(auth_session_delete(f->s, "nonsense"), PST_E_NOTFOUND);
    assert_int_equal(auth_session_delete(f->s, NULL), PST_E_NOTFOUND);
    assert_int_equal(auth_session_lookup(f->s, keep, T0, IDLE, MAX, &s), 0);
}

static void test_store__session_delete_user(void **state)
{
    fixture *f = *state;
    char a1[AUTH_SESSION_ID_LEN + 1], a2[AUTH_SESSION_ID_LEN + 1], b[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", false, T0, a1);
    new_session(f, "alice", true, T0 + 1, a2);
    new_session(f, "bob", false, T0, b);
    assert_int_equal(auth_session_delete_user(f->s, "alice"), 0);
    auth_session s;
    assert_int_equal(auth_session_lookup(f->s, a1, T0 + 2, IDLE, MAX, &s), PST_E_NOTFOUND);
    assert_int_equal(auth_session_lookup(f->s, a2, T0 + 2, IDLE, MAX, &s), PST_E_NOTFOUND);
    assert_int_equal(auth_session_lookup(f->s, b, T0 + 2, IDLE, MAX, &s), 0);
    assert_string_equal(s.user, "bob");
    /* A user without sessions is no error. */
    assert_int_equal(auth_session_delete_user(f->s, "carol"), 0);
}

static void test_store__expired_sessions_purged_on_create(void **state)
{
    fixture *f = *state;
    char old1[AUTH_SESSION_ID_LEN + 1], old2[AUTH_SESSION_ID_LEN + 1];
    char fresh[AUTH_SESSION_ID_LEN + 1], id[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", false, T0, old1);
    new_session(f, "bob", false, T0, old2);
    new_session(f, "carol", false, T0 + 3 * IDLE, fresh);
    auth_session s; /* a lookup tells the store the limits in force */
    assert_int_equal(auth_session_lookup(f->s, fresh, T0 + 3 * IDLE, IDLE, MAX, &s), 0);
    assert_int_equal(db_int(f, "SELECT count(*) FROM sessions"), 3);
    new_session(f, "dave", false, T0 + 3 * IDLE + 100, id);
    assert_int_equal(db_int(f, "SELECT count(*) FROM sessions"), 2); /* carol and dave */
    assert_int_equal(auth_session_lookup(f->s, fresh, T0 + 3 * IDLE + 100, IDLE, MAX, &s), 0);
}

static void test_store__session_persists(void **state)
{
    fixture *f = *state;
    char id[AUTH_SESSION_ID_LEN + 1];
    new_session(f, "alice", true, T0, id);
    reopen(f);
    auth_session s;
    assert_int_equal(auth_session_lookup(f->s, id, T0 + 10, IDLE, MAX, &s), 0);
    assert_string_equal(s.user, "alice");
    assert_true(s.mfa);
    assert_int_equal(s.created, T0);
    /* And a deletion persists too. */
    assert_int_equal(auth_session_delete(f->s, id), 0);
    reopen(f);
    assert_int_equal(auth_session_lookup(f->s, id, T0 + 10, IDLE, MAX, &s), PST_E_NOTFOUND);
}

/* ---- secrets at rest ---------------------------------------------------- */

static void test_store__no_secret_in_file(void **state)
{
    fixture *f = *state;
    char id[AUTH_SESSION_ID_LEN + 1], token[AUTH_TOKEN_MAX];
    auth_token t;
    new_session(f, "alice-secret-check", false, T0, id);
    new_token(f, "alice-secret-check", "laptop", 0, T0, T0 + 86400, token, &t);
    const char *secret = token_secret(token);
    assert_int_equal(strlen(secret), 43);

    /* While open (the rows may still sit in the -wal file) and after a
     * close (checkpointed into the main file). The user name and the
     * token's public id are there, which shows the search reads the rows. */
    for (int pass = 0; pass < 2; pass++) {
        assert_true(files_contain(f, "alice-secret-check"));
        assert_true(files_contain(f, t.id));
        assert_false(files_contain(f, id));
        assert_false(files_contain(f, token));
        assert_false(files_contain(f, secret));
        if (pass == 0)
            reopen(f); /* the close checkpoints the WAL into the file */
    }
    auth_session s;
    assert_int_equal(auth_session_lookup(f->s, id, T0, IDLE, MAX, &s), 0);
    assert_int_equal(auth_token_lookup(f->s, token, T0, &t), 0);
}

/* ---- tokens ------------------------------------------------------------- */

static void test_store__token_create_lookup(void **state)
{
    fixture *f = *state;
    char token[AUTH_TOKEN_MAX];
    auth_token t;
    new_token(f, "alice", "ci", AUTH_ACT_TUNNEL | AUTH_ACT_SSH_LOGIN, T0, T0 + 3600, token, &t);
    /* pst_<16 hex>_<43 base64url> */
    assert_int_equal(strlen(token), 4 + AUTH_TOKEN_ID_LEN + 1 + 43);
    assert_starts_with(token, "pst_");
    assert_int_equal(strspn(token + 4, "0123456789abcdef"), AUTH_TOKEN_ID_LEN);
    assert_int_equal(token[4 + AUTH_TOKEN_ID_LEN], '_');
    assert_true(b64url_only(token_secret(token)));
    assert_int_equal(memcmp(token + 4, t.id, AUTH_TOKEN_ID_LEN), 0);
    assert_string_equal(t.user, "alice");
    assert_string_equal(t.name, "ci");
    assert_int_equal(t.created, T0);
    assert_int_equal(t.expires, T0 + 3600);
    assert_int_equal(t.actions, AUTH_ACT_TUNNEL | AUTH_ACT_SSH_LOGIN);

    auth_token got;
    memset(&got, 0xa5, sizeof(got));
    assert_int_equal(auth_token_lookup(f->s, token, T0 + 1, &got), 0);
    assert_string_equal(got.id, t.id);
    assert_string_equal(got.user, "alice");
    assert_string_equal(got.name, "ci");
    assert_int_equal(got.created, T0);
    assert_int_equal(got.expires, T0 + 3600);
    assert_int_equal(got.actions, AUTH_ACT_TUNNEL | AUTH_ACT_SSH_LOGIN);

    char token2[AUTH_TOKEN_MAX];
    auth_token t2;
    new_token(f, "alice", "ci", 0, T0, T0 + 3600, token2, &t2);
    assert_string_not_equal(token, token2);
    assert_string_not_equal(t.id, t2.id);
}

static void test_store__token_wrong_secret(void **state)
{
    fixture *f = *state;
    char token[AUTH_TOKEN_MAX], bad[AUTH_TOKEN_MAX];
    auth_token t;
    new_token(f, "alice", "ci", 0, T0, T0 + 3600, token, &t);
    /* Right id, secret changed in its last character. */
    memcpy(bad, token, sizeof(bad));
    size_t n = strlen(bad);
    bad[n - 1] = bad[n - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_token_lookup(f->s, bad, T0, &t), PST_E_NOTFOUND);
    /* Right secret, another id. */
    memcpy(bad, token, sizeof(bad));
    bad[4] = bad[4] == '0' ? '1' : '0';
    assert_int_equal(auth_token_lookup(f->s, bad, T0, &t), PST_E_NOTFOUND);
    /* Not a token at all. */
    const char *junk[] = {"", "pst_", "pst__", "Bearer x", "pst_0123456789abcdef_short"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        assert_int_equal(auth_token_lookup(f->s, junk[i], T0, &t), PST_E_NOTFOUND);
    assert_int_equal(auth_token_lookup(f->s, NULL, T0, &t), PST_E_NOTFOUND);
    /* Upper-case id: not what we issue. */
    memcpy(bad, token, sizeof(bad));
    for (char *p = bad + 4; p < bad + 4 + AUTH_TOKEN_ID_LEN; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    if (strcmp(bad, token) != 0)
        assert_int_equal(auth_token_lookup(f->s, bad, T0, &t), PST_E_NOTFOUND);
    /* The real one still works. */
    assert_int_equal(auth_token_lookup(f->s, token, T0, &t), 0);
}

static void test_store__token_revoked(void **state)
{
    fixture *f = *state;
    char token[AUTH_TOKEN_MAX];
    auth_token t;
    new_token(f, "alice", "ci", 0, T0, T0 + 3600, token, &t);
    /* Only its owner revokes it. */
    assert_int_equal(auth_token_revoke(f->s, "bob", t.id), PST_E_NOTFOUND);
    assert_int_equal(auth_token_lookup(f->s, token, T0, NULL), 0);
    assert_int_equal(auth_token_revoke(f->s, "alice", t.id), 0);
    assert_int_equal(auth_token_lookup(f->s, token, T0, &t), PST_E_NOTFOUND);
    assert_int_equal(auth_token_revoke(f->s, "alice", t.id), PST_E_NOTFOUND);
    assert_int_equal(auth_token_revoke(f->s, "alice", "0000000000000000"), PST_E_NOTFOUND);
    reopen(f);
    assert_int_equal(auth_token_lookup(f->s, token, T0, NULL), PST_E_NOTFOUND);
}

static void test_store__token_expired(void **state)
{
    fixture *f = *state;
    char token[AUTH_TOKEN_MAX];
    auth_token t;
    new_token(f, "alice", "ci", 0, T0, T0 + 3600, token, &t);
    assert_int_equal(auth_token_lookup(f->s, token, T0 + 3599, NULL), 0);
    assert_int_equal(auth_token_lookup(f->s, token, T0 + 3600, NULL), PST_E_NOTFOUND);
    assert_int_equal(auth_token_lookup(f->s, token, T0 + 999999, NULL), PST_E_NOTFOUND);
    /* No token is born expired or eternal. */
    assert_int_equal(auth_token_create(f->s, "alice", "x", 0, T0, T0, token, &t), -EINVAL);
    assert_int_equal(auth_token_create(f->s, "alice", "x", 0, T0, 0, token, &t), -EINVAL);
}

static json_t *list_of(fixture *f, const char *user, int64_t now)
{
    json_t *arr = NULL;
    assert_int_equal(auth_token_list(f->s, user, now, &arr), 0);
    assert_true(json_is_array(arr));
    return arr;
}

static void test_store__token_list(void **state)
{
    fixture *f = *state;
    char tok[4][AUTH_TOKEN_MAX];
    auth_token t[4];
    new_token(f, "alice", "laptop", AUTH_ACT_TUNNEL | AUTH_ACT_SSH_LOGIN, T0, T0 + 3600, tok[0],
              &t[0]);
    new_token(f, "alice", "revoked", 0, T0 + 1, T0 + 3600, tok[1], &t[1]);
    new_token(f, "alice", "short", 0, T0 + 2, T0 + 100, tok[2], &t[2]);
    new_token(f, "bob", "bobs", 0, T0, T0 + 3600, tok[3], &t[3]);
    assert_int_equal(auth_token_revoke(f->s, "alice", t[1].id), 0);

    json_t *arr = list_of(f, "alice", T0 + 10);
    assert_int_equal(json_array_size(arr), 2);
    json_t *o = json_array_get(arr, 0);
    assert_string_equal(json_string_value(json_object_get(o, "id")), t[0].id);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "laptop");
    assert_int_equal(json_integer_value(json_object_get(o, "created")), T0);
    assert_int_equal(json_integer_value(json_object_get(o, "expires")), T0 + 3600);
    json_t *acts = json_object_get(o, "actions");
    assert_true(json_is_array(acts));
    assert_int_equal(json_array_size(acts), 2);
    assert_string_equal(json_string_value(json_array_get(acts, 0)), "ssh-login");
    assert_string_equal(json_string_value(json_array_get(acts, 1)), "tunnel");
    o = json_array_get(arr, 1);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "short");
    assert_int_equal(json_array_size(json_object_get(o, "actions")), 0);
    /* Neither the secret nor its hash is listed. */
    char *dump = json_dumps(arr, 0);
    assert_non_null(dump);
    assert_not_contains(dump, token_secret(tok[0]));
    assert_not_contains(dump, "hash");
    free(dump);
    json_decref(arr);

    arr = list_of(f, "alice", T0 + 100); /* "short" has expired */
    assert_int_equal(json_array_size(arr), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "name")),
                        "laptop");
    json_decref(arr);

    arr = list_of(f, "carol", T0);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
}

static void test_store__token_cap_per_user(void **state)
{
    fixture *f = *state;
    char token[AUTH_TOKEN_MAX], first_id[AUTH_TOKEN_ID_LEN + 1] = "";
    auth_token t;
    int rc = 0, made = 0;
    while ((rc = auth_token_create(f->s, "alice", "bulk", 0, T0, T0 + 3600, token, &t)) == 0) {
        if (!made)
            memcpy(first_id, t.id, sizeof(first_id));
        if (++made > 1000)
            break;
    }
    assert_int_equal(rc, PST_E_LIMIT);
    assert_true(made >= 10 && made <= 1000);
    /* Others are not affected; a revocation makes room. */
    new_token(f, "bob", "one", 0, T0, T0 + 3600, token, &t);
    assert_int_equal(auth_token_revoke(f->s, "alice", first_id), 0);
    new_token(f, "alice", "again", 0, T0, T0 + 3600, token, &t);
    json_t *arr = list_of(f, "alice", T0);
    assert_int_equal(json_array_size(arr), (size_t)made);
    json_decref(arr);
}

static void test_store__token_persists(void **state)
{
    fixture *f = *state;
    char token[AUTH_TOKEN_MAX];
    auth_token t;
    new_token(f, "alice", "ci", AUTH_ACT_TUNNEL, T0, T0 + 3600, token, &t);
    reopen(f);
    auth_token got;
    assert_int_equal(auth_token_lookup(f->s, token, T0 + 1, &got), 0);
    assert_string_equal(got.id, t.id);
    assert_int_equal(got.actions, AUTH_ACT_TUNNEL);
}

/* ---- TOTP ---------------------------------------------------------------- */

static void test_store__totp_last_step(void **state)
{
    fixture *f = *state;
    assert_int_equal(auth_totp_last_step(f->s, "alice"), 0);
    assert_int_equal(auth_totp_set_last_step(f->s, "alice", 56666666), 0);
    assert_int_equal(auth_totp_last_step(f->s, "alice"), 56666666);
    assert_int_equal(auth_totp_last_step(f->s, "bob"), 0);
    assert_int_equal(auth_totp_set_last_step(f->s, "alice", 56666667), 0);
    assert_int_equal(auth_totp_last_step(f->s, "alice"), 56666667);
    /* Never lowered: an older step would let a used code in again. */
    assert_int_equal(auth_totp_set_last_step(f->s, "alice", 5), 0);
    assert_int_equal(auth_totp_last_step(f->s, "alice"), 56666667);
    assert_int_equal(auth_totp_set_last_step(f->s, "alice", UINT64_MAX), -ERANGE);
    reopen(f);
    assert_int_equal(auth_totp_last_step(f->s, "alice"), 56666667);
    assert_int_equal(auth_totp_last_step(f->s, "bob"), 0);
}

/* ---- database failures ---------------------------------------------------- */

static void test_store__db_errors(void **state)
{
    fixture *f = *state;
    char token[AUTH_TOKEN_MAX];
    auth_token t;
    new_token(f, "alice", "ci", 0, T0, T0 + 3600, token, &t);
    /* Tables taken away behind the store's back: every call reports a
     * database error (not "not found"), and the TOTP guard fails closed. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    log_set_fd(fds[1]);
    db_exec(f, "DROP TABLE tokens; DROP TABLE totp_steps; DROP TABLE sessions");
    assert_int_equal(auth_token_lookup(f->s, token, T0, &t), PST_E_STATE);
    assert_int_equal(auth_token_revoke(f->s, "alice", t.id), PST_E_STATE);
    json_t *arr = (json_t *)&arr;
    assert_int_equal(auth_token_list(f->s, "alice", T0, &arr), PST_E_STATE);
    assert_null(arr);
    assert_int_equal(auth_totp_last_step(f->s, "alice"), UINT64_MAX);
    assert_int_equal(auth_totp_set_last_step(f->s, "alice", 1), PST_E_STATE);
    char id[AUTH_SESSION_ID_LEN + 1] = "";
    assert_int_equal(auth_session_create(f->s, "alice", false, T0, id), PST_E_STATE);
    assert_string_equal(id, "");
    log_set_fd(2);
    char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    close(fds[1]);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_contains(buf, "event=store.error op=token.lookup err=\"no such table: tokens\"");
    assert_contains(buf, "op=totp.get");
    assert_contains(buf, "op=session.create");
}

#define T(name) cmocka_unit_test_setup_teardown(name, tmp_setup, tmp_teardown)
#define S(name) cmocka_unit_test_setup_teardown(name, store_setup, tmp_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_store__open_creates_private_file),
        T(test_store__open_tightens_mode),
        T(test_store__open_errors),
        S(test_store__newer_schema_refused),
        S(test_store__session_create_lookup),
        S(test_store__session_unknown_ids),
        S(test_store__session_idle_expiry),
        S(test_store__session_absolute_expiry),
        S(test_store__session_touch_is_rate_limited),
        S(test_store__session_delete),
        S(test_store__session_delete_user),
        S(test_store__expired_sessions_purged_on_create),
        S(test_store__session_persists),
        S(test_store__no_secret_in_file),
        S(test_store__token_create_lookup),
        S(test_store__token_wrong_secret),
        S(test_store__token_revoked),
        S(test_store__token_expired),
        S(test_store__token_list),
        S(test_store__token_cap_per_user),
        S(test_store__token_persists),
        S(test_store__totp_last_step),
        S(test_store__db_errors),
    };
    return cmocka_run_group_tests_name("auth/store", tests, NULL, NULL);
}
