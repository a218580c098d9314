/* Runtime state that must survive a restart and stay revocable: login
 * sessions, API tokens and the last TOTP step of each user, in one SQLite
 * file in the state directory.
 *
 * Secrets never reach the file. A session is known by SHA-256 of its cookie
 * value; a token by its public id plus SHA-256 of the whole token. Reading
 * the file (or a backup of it) therefore yields nothing a browser or a
 * client could present.
 *
 * The file is opened in WAL mode with synchronous=NORMAL: a power cut may
 * lose the last few commits (a login or a last_seen refresh), never corrupt
 * the file, and no commit waits for an fsync on the loop thread. Every
 * statement is prepared once at open and kept, so a request costs one step
 * of an already compiled statement. */
#include "auth/auth.h"
#include "auth/internal.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Raised by every change to the tables below; migrations[v] takes a file
 * from version v to v + 1, so a newer Postern upgrades an older file in
 * place and an older Postern refuses a newer file instead of misreading it. */
#define STORE_SCHEMA_VERSION 1

/* Another process holding the write lock (a backup, `postern` on the same
 * file) makes us wait this long before a statement fails with BUSY. Long
 * enough for a checkpoint, short enough that the loop is not held hostage. */
#define STORE_BUSY_MS 3000

/* last_seen is rewritten at most this often, so a busy browser does not
 * turn every request into a write. Idle expiry is therefore up to this many
 * seconds early; with short idle limits the interval shrinks to half the
 * limit so that an active session never expires. */
#define STORE_TOUCH_SECONDS 60

/* Expired rows are deleted at most this often (on create), not per call. */
#define STORE_PURGE_SECONDS 60

/* Live tokens one user may hold: the token list is returned whole, and a
 * script creating tokens in a loop must not grow it without bound. */
#define STORE_TOKENS_PER_USER_MAX 100

#define SESSION_RAW_LEN 32 /* 256 bits */
#define TOKEN_ID_RAW_LEN 8 /* 64 bits, AUTH_TOKEN_ID_LEN hex digits */
#define TOKEN_SECRET_LEN 43 /* base64url of 32 random bytes */
#define TOKEN_PREFIX "pst_"
#define TOKEN_PREFIX_LEN 4
#define TOKEN_LEN (TOKEN_PREFIX_LEN + AUTH_TOKEN_ID_LEN + 1 + TOKEN_SECRET_LEN) /* 64 */

_Static_assert(TOKEN_LEN < AUTH_TOKEN_MAX, "a token and its NUL fit AUTH_TOKEN_MAX");

static const char *const migrations[STORE_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE sessions ("
    "  id_hash BLOB PRIMARY KEY," /* SHA-256 of the cookie value */
    "  user TEXT NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL,"
    "  mfa INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX sessions_user ON sessions(user);"
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY," /* public: AUTH_TOKEN_ID_LEN hex digits */
    "  user TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  hash BLOB NOT NULL," /* SHA-256 of the whole token */
    "  created INTEGER NOT NULL,"
    "  expires INTEGER NOT NULL,"
    "  actions INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX tokens_user ON tokens(user);"
    "CREATE TABLE totp_steps ("
    "  user TEXT PRIMARY KEY,"
    "  step INTEGER NOT NULL"
    ");",
};

enum {
    ST_SESSION_INSERT,
    ST_SESSION_GET,
    ST_SESSION_TOUCH,
    ST_SESSION_DELETE,
    ST_SESSION_DELETE_USER,
    ST_SESSION_PURGE,
    ST_TOKEN_INSERT,
    ST_TOKEN_GET,
    ST_TOKEN_COUNT_LIVE,
    ST_TOKEN_LIST,
    ST_TOKEN_REVOKE,
    ST_TOKEN_REVOKE_USER,
    ST_TOKEN_PURGE,
    ST_TOTP_GET,
    ST_TOTP_SET,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_SESSION_INSERT] = "INSERT INTO sessions (id_hash, user, created, last_seen, mfa)"
                          " VALUES (?1, ?2, ?3, ?3, ?4)",
    [ST_SESSION_GET] = "SELECT user, created, last_seen, mfa FROM sessions WHERE id_hash = ?1",
    [ST_SESSION_TOUCH] = "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1",
    [ST_SESSION_DELETE] = "DELETE FROM sessions WHERE id_hash = ?1",
    [ST_SESSION_DELETE_USER] = "DELETE FROM sessions WHERE user = ?1",
    [ST_SESSION_PURGE] = "DELETE FROM sessions WHERE last_seen < ?1 OR created < ?2",
    [ST_TOKEN_INSERT] = "INSERT INTO tokens (id, user, name, hash, created, expires, actions)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_TOKEN_GET] = "SELECT user, name, hash, created, expires, actions, revoked"
                     " FROM tokens WHERE id = ?1",
    [ST_TOKEN_COUNT_LIVE] = "SELECT count(*) FROM tokens"
                            " WHERE user = ?1 AND revoked = 0 AND expires > ?2",
    [ST_TOKEN_LIST] = "SELECT id, name, created, expires, actions FROM tokens"
                      " WHERE user = ?1 AND revoked = 0 AND expires > ?2"
                      " ORDER BY created, id",
    [ST_TOKEN_REVOKE] = "UPDATE tokens SET revoked = 1"
                        " WHERE id = ?1 AND user = ?2 AND revoked = 0",
    [ST_TOKEN_REVOKE_USER] = "UPDATE tokens SET revoked = 1 WHERE user = ?1 AND revoked = 0",
    [ST_TOKEN_PURGE] = "DELETE FROM tokens WHERE expires <= ?1",
    [ST_TOTP_GET] = "SELECT step FROM totp_steps WHERE user = ?1",
    /* Never lowered: going back would let an already used code in again. */
    [ST_TOTP_SET] = "INSERT INTO totp_steps (user, step) VALUES (?1, ?2)"
                    " ON CONFLICT(user) DO UPDATE SET step = max(step, excluded.step)",
};

struct auth_store {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    /* The session limits come with each lookup, not at open: the last ones
     * seen let create purge expired sessions (none before a lookup). */
    bool limits_known;
    int idle_seconds;
    int max_seconds;
    bool purged;
    int64_t purged_at;
};

/* ---- helpers ------------------------------------------------------------ */

static int db_fail(auth_store *s, const char *op)
{
    log_event(LOG_ERROR, "store.error", "op=%s err=%s", op, log_q(sqlite3_errmsg(s->db)));
    return PST_E_STATE;
}

/* Returns st to its initial state; the bound buffers may go after this. */
static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static bool text_ok(const char *v, size_t min, size_t max)
{
    if (!v)
        return false;
    size_t n = strnlen(v, max + 1);
    return n >= min && n <= max;
}

static void copy_col(char *dst, size_t cap, sqlite3_stmt *st, int col)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    snprintf(dst, cap, "%s", v ? (const char *)v : "");
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding; out needs (len * 4 + 2) / 3 + 1 bytes. */
static void b64url_encode(const uint8_t *in, size_t len, char *out)
{
    auth_encode_bits(in, len, b64url, 6, out);
}

static bool b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

static bool b64url_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!b64url_char(s[i]))
            return false;
    return true;
}

/* A cookie value we could have issued: exactly AUTH_SESSION_ID_LEN base64url
 * characters. Anything else is unknown without touching the database. */
static bool session_id_valid(const char *id)
{
    return id && strnlen(id, AUTH_SESSION_ID_LEN + 1) == AUTH_SESSION_ID_LEN &&
           b64url_valid(id, AUTH_SESSION_ID_LEN);
}

/* Deletes expired sessions and tokens, at most every STORE_PURGE_SECONDS.
 * Best effort: a failure is logged and the caller's operation goes on. */
static void store_purge(auth_store *s, int64_t now)
{
    if (s->purged && now >= s->purged_at && now - s->purged_at < STORE_PURGE_SECONDS)
        return;
    s->purged = true;
    s->purged_at = now;
    if (s->limits_known) {
        sqlite3_stmt *st = s->st[ST_SESSION_PURGE];
        if (sqlite3_bind_int64(st, 1, now - s->idle_seconds) != SQLITE_OK ||
            sqlite3_bind_int64(st, 2, now - s->max_seconds) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_DONE)
            db_fail(s, "session.purge");
        stmt_done(st);
    }
    sqlite3_stmt *st = s->st[ST_TOKEN_PURGE];
    if (sqlite3_bind_int64(st, 1, now) != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE)
        db_fail(s, "token.purge");
    stmt_done(st);
}

/* ---- open / close ------------------------------------------------------- */

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return PST_E_STATE;
}

/* The single integer a one-row query yields in *v; *found false for none. */
static int query_int(sqlite3 *db, const char *sql, int64_t *v, bool *found, char *err,
                     size_t errlen)
{
    sqlite3_stmt *st = NULL;
    *found = false;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
        return PST_E_STATE;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int64(st, 0);
        *found = true;
    } else if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return PST_E_STATE;
    }
    sqlite3_finalize(st);
    return 0;
}

/* Creates or upgrades the schema in one transaction: two processes opening
 * a new file at once cannot both create it. */
static int schema_ensure(sqlite3 *db, char *err, size_t errlen)
{
    int rc = exec_sql(db, "BEGIN IMMEDIATE", err, errlen, "begin");
    if (rc != 0)
        return rc;
    rc = exec_sql(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                  err, errlen, "schema_version");
    if (rc != 0)
        goto out;
    int64_t version = 0;
    bool found;
    rc = query_int(db, "SELECT version FROM schema_version", &version, &found, err, errlen);
    if (rc != 0)
        goto out;
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "schema version %" PRId64 " is not one this Postern knows (newest: %d); "
                 "was the file written by a newer version?",
                 version, STORE_SCHEMA_VERSION);
        rc = PST_E_STATE;
        goto out;
    }
    if (version == STORE_SCHEMA_VERSION)
        goto out;
    for (int64_t v = version; v < STORE_SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof(what), "migration to schema version %" PRId64, v + 1);
        rc = exec_sql(db, migrations[v], err, errlen, what);
        if (rc != 0)
            goto out;
    }
    char sql[96];
    snprintf(sql, sizeof(sql),
             "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d)",
             STORE_SCHEMA_VERSION);
    rc = exec_sql(db, sql, err, errlen, "schema_version");
out:
    if (rc == 0)
        return exec_sql(db, "COMMIT", err, errlen, "commit");
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Creates path 0600 (SQLite would use 0644 less the umask) and tightens an
 * existing file that others may read: user names and token names are not
 * secret, but they are nobody else's business. The -wal and -shm files
 * SQLite makes next to it take the same mode. */
static int file_prepare(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = -errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return rc;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, errlen, "%s is not a regular file", path);
    } else if ((st.st_mode & 077) != 0) {
        if (fchmod(fd, 0600) != 0) {
            rc = -errno;
            snprintf(err, errlen, "cannot chmod 0600 %s: %s", path, strerror(errno));
        } else {
            log_event(LOG_WARN, "store.mode_fixed", "path=%s was=%04o now=0600", log_q(path),
                      (unsigned)(st.st_mode & 07777));
        }
    }
    close(fd);
    return rc;
}

int auth_store_open(const char *path, auth_store **out, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    *out = NULL;
    err[0] = '\0';
    int rc = file_prepare(path, err, errlen);
    if (rc != 0)
        return rc;

    auth_store *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    /* From here on messages leave out the path; fail: puts it in front. */
    rc = PST_E_STATE;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s", s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, STORE_BUSY_MS);

    /* journal_mode answers with the mode in force: a file system without
     * shared memory (some network mounts) keeps the rollback journal. That
     * still works, with readers and the writer blocking each other. */
    sqlite3_stmt *jm = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &jm, NULL) != SQLITE_OK ||
        sqlite3_step(jm) != SQLITE_ROW) {
        snprintf(err, errlen, "journal_mode: %s", sqlite3_errmsg(s->db));
        sqlite3_finalize(jm);
        goto fail;
    }
    const unsigned char *mode = sqlite3_column_text(jm, 0);
    if (!mode || strcmp((const char *)mode, "wal") != 0)
        log_event(LOG_WARN, "store.no_wal", "path=%s journal_mode=%s", log_q(path),
                  log_q((const char *)mode));
    sqlite3_finalize(jm);

    if ((rc = exec_sql(s->db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", err, errlen,
                       "pragmas")) != 0 ||
        (rc = schema_ensure(s->db, err, errlen)) != 0)
        goto fail;

    rc = PST_E_STATE;
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "preparing \"%s\": %s", stmt_sql[i], sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    *out = s;
    return 0;

fail:
    if (err != dummy) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", err);
        snprintf(err, errlen, "%s: %s", path, msg);
    }
    auth_store_close(s);
    return rc;
}

void auth_store_close(auth_store *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    if (s->db && sqlite3_close(s->db) != SQLITE_OK)
        log_event(LOG_ERROR, "store.error", "op=close err=%s", log_q(sqlite3_errmsg(s->db)));
    free(s);
}

/* ---- sessions ----------------------------------------------------------- */

int auth_session_create(auth_store *s, const char *user, bool mfa, int64_t now, char *id)
{
    if (!text_ok(user, 1, AUTH_NAME_MAX) || !id)
        return -EINVAL;
    store_purge(s, now);

    uint8_t raw[SESSION_RAW_LEN];
    char value[AUTH_SESSION_ID_LEN + 1];
    uint8_t md[SHA256_DIGEST_LENGTH];
    int rc = 0;
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        rc = PST_E_CRYPTO;
        log_event(LOG_ERROR, "store.error", "op=session.create err=%s", "RAND_bytes");
        goto out;
    }
    b64url_encode(raw, sizeof(raw), value);
    SHA256((const unsigned char *)value, AUTH_SESSION_ID_LEN, md);

    sqlite3_stmt *st = s->st[ST_SESSION_INSERT];
    if (sqlite3_bind_blob(st, 1, md, sizeof(md), SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(st, 3, now) != SQLITE_OK ||
        sqlite3_bind_int(st, 4, mfa ? 1 : 0) != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(s, "session.create");
    stmt_done(st);
    if (rc == 0)
        memcpy(id, value, sizeof(value));
out:
    OPENSSL_cleanse(raw, sizeof(raw));
    OPENSSL_cleanse(value, sizeof(value));
    OPENSSL_cleanse(md, sizeof(md));
    return rc;
}

/* Deletes the session whose id hashes to md; *deleted says whether one was. */
static int session_delete_hash(auth_store *s, const uint8_t *md, bool *deleted)
{
    sqlite3_stmt *st = s->st[ST_SESSION_DELETE];
    int rc = 0;
    if (sqlite3_bind_blob(st, 1, md, SHA256_DIGEST_LENGTH, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(s, "session.delete");
    else if (deleted)
        *deleted = sqlite3_changes(s->db) > 0;
    stmt_done(st);
    return rc;
}

int auth_session_lookup(auth_store *s, const char *id, int64_t now, int idle_seconds,
                        int max_seconds, auth_session *out)
{
    s->limits_known = true;
    s->idle_seconds = idle_seconds;
    s->max_seconds = max_seconds;
    if (!session_id_valid(id))
        return PST_E_NOTFOUND;

    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)id, AUTH_SESSION_ID_LEN, md);

    auth_session found = {0};
    sqlite3_stmt *st = s->st[ST_SESSION_GET];
    int rc = 0;
    if (sqlite3_bind_blob(st, 1, md, sizeof(md), SQLITE_STATIC) != SQLITE_OK) {
        rc = db_fail(s, "session.lookup");
    } else {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            copy_col(found.user, sizeof(found.user), st, 0);
            found.created = sqlite3_column_int64(st, 1);
            found.last_seen = sqlite3_column_int64(st, 2);
            found.mfa = sqlite3_column_int(st, 3) != 0;
        } else if (step == SQLITE_DONE) {
            rc = PST_E_NOTFOUND;
        } else {
            rc = db_fail(s, "session.lookup");
        }
    }
    stmt_done(st);
    if (rc != 0)
        goto out;

    if (now - found.last_seen > idle_seconds || now - found.created > max_seconds) {
        rc = session_delete_hash(s, md, NULL);
        if (rc == 0)
            rc = PST_E_NOTFOUND;
        goto out;
    }

    int64_t touch = STORE_TOUCH_SECONDS;
    if (idle_seconds / 2 < touch)
        touch = idle_seconds / 2;
    if (now > found.last_seen && now - found.last_seen >= touch) {
        st = s->st[ST_SESSION_TOUCH];
        if (sqlite3_bind_blob(st, 1, md, sizeof(md), SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_int64(st, 2, now) != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE)
            rc = db_fail(s, "session.touch");
        stmt_done(st);
        if (rc != 0)
            goto out;
        found.last_seen = now;
    }
    if (out)
        *out = found;
out:
    OPENSSL_cleanse(md, sizeof(md));
    return rc;
}

/* 0 when the session existed, PST_E_NOTFOUND when there was none. */
int auth_session_delete(auth_store *s, const char *id)
{
    if (!session_id_valid(id))
        return PST_E_NOTFOUND;
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)id, AUTH_SESSION_ID_LEN, md);
    bool deleted = false;
    int rc = session_delete_hash(s, md, &deleted);
    OPENSSL_cleanse(md, sizeof(md));
    if (rc == 0 && !deleted)
        rc = PST_E_NOTFOUND;
    return rc;
}

int auth_session_delete_user(auth_store *s, const char *user)
{
    if (!user)
        return -EINVAL;
    sqlite3_stmt *st = s->st[ST_SESSION_DELETE_USER];
    int rc = 0;
    if (sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(s, "session.delete_user");
    stmt_done(st);
    return rc;
}

/* ---- API tokens --------------------------------------------------------- */

static bool hex_lower(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Splits "pst_<id>_<secret>" and copies the id out; false for anything
 * that is not a token we could have issued. */
static bool token_parse(const char *token, char id[AUTH_TOKEN_ID_LEN + 1])
{
    if (!token || strnlen(token, TOKEN_LEN + 1) != TOKEN_LEN ||
        memcmp(token, TOKEN_PREFIX, TOKEN_PREFIX_LEN) != 0)
        return false;
    const char *p = token + TOKEN_PREFIX_LEN;
    if (!hex_lower(p, AUTH_TOKEN_ID_LEN) || p[AUTH_TOKEN_ID_LEN] != '_' ||
        !b64url_valid(p + AUTH_TOKEN_ID_LEN + 1, TOKEN_SECRET_LEN))
        return false;
    memcpy(id, p, AUTH_TOKEN_ID_LEN);
    id[AUTH_TOKEN_ID_LEN] = '\0';
    return true;
}

static int token_count_live(auth_store *s, const char *user, int64_t now, int64_t *n)
{
    sqlite3_stmt *st = s->st[ST_TOKEN_COUNT_LIVE];
    int rc = 0;
    if (sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, now) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
        rc = db_fail(s, "token.count");
    else
        *n = sqlite3_column_int64(st, 0);
    stmt_done(st);
    return rc;
}

/* -EINVAL when expires is not after now: a token lives for a stated time,
 * there is no "never expires". PST_E_LIMIT when user already holds
 * STORE_TOKENS_PER_USER_MAX live tokens. */
int auth_token_create(auth_store *s, const char *user, const char *name, unsigned actions,
                      int64_t now, int64_t expires, char *token, auth_token *out)
{
    if (!text_ok(user, 1, AUTH_NAME_MAX) || !text_ok(name, 1, AUTH_NAME_MAX) || !token ||
        expires <= now)
        return -EINVAL;
    store_purge(s, now);
    int64_t live = 0;
    int rc = token_count_live(s, user, now, &live);
    if (rc != 0)
        return rc;
    if (live >= STORE_TOKENS_PER_USER_MAX)
        return PST_E_LIMIT;

    uint8_t raw_id[TOKEN_ID_RAW_LEN], raw_secret[32];
    char id[AUTH_TOKEN_ID_LEN + 1], secret[TOKEN_SECRET_LEN + 1], full[TOKEN_LEN + 1];
    uint8_t md[SHA256_DIGEST_LENGTH];
    /* A clash of 64-bit ids is unlikely but possible among many tokens:
     * the primary key refuses it and a fresh id is drawn. */
    for (int attempt = 0;; attempt++) {
        if (RAND_bytes(raw_id, sizeof(raw_id)) != 1 ||
            RAND_bytes(raw_secret, sizeof(raw_secret)) != 1) {
            log_event(LOG_ERROR, "store.error", "op=token.create err=%s", "RAND_bytes");
            rc = PST_E_CRYPTO;
            break;
        }
        for (size_t i = 0; i < sizeof(raw_id); i++)
            snprintf(id + 2 * i, 3, "%02x", raw_id[i]);
        b64url_encode(raw_secret, sizeof(raw_secret), secret);
        snprintf(full, sizeof(full), TOKEN_PREFIX "%s_%s", id, secret);
        SHA256((const unsigned char *)full, TOKEN_LEN, md);

        sqlite3_stmt *st = s->st[ST_TOKEN_INSERT];
        int step = SQLITE_MISUSE;
        if (sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC) == SQLITE_OK &&
            sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC) == SQLITE_OK &&
            sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC) == SQLITE_OK &&
            sqlite3_bind_blob(st, 4, md, sizeof(md), SQLITE_STATIC) == SQLITE_OK &&
            sqlite3_bind_int64(st, 5, now) == SQLITE_OK &&
            sqlite3_bind_int64(st, 6, expires) == SQLITE_OK &&
            sqlite3_bind_int64(st, 7, (int64_t)actions) == SQLITE_OK)
            step = sqlite3_step(st);
        bool retry = step == SQLITE_CONSTRAINT && attempt < 3; /* id taken */
        if (step == SQLITE_DONE)
            rc = 0;
        else if (!retry)
            rc = db_fail(s, "token.create");
        stmt_done(st);
        if (!retry)
            break;
    }
    if (rc == 0) {
        memcpy(token, full, sizeof(full));
        if (out) {
            memset(out, 0, sizeof(*out));
            memcpy(out->id, id, sizeof(out->id));
            snprintf(out->user, sizeof(out->user), "%s", user);
            snprintf(out->name, sizeof(out->name), "%s", name);
            out->created = now;
            out->expires = expires;
            out->actions = actions;
        }
    }
    OPENSSL_cleanse(raw_secret, sizeof(raw_secret));
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(full, sizeof(full));
    OPENSSL_cleanse(md, sizeof(md));
    return rc;
}

int auth_token_lookup(auth_store *s, const char *token, int64_t now, auth_token *out)
{
    char id[AUTH_TOKEN_ID_LEN + 1];
    if (!token_parse(token, id))
        return PST_E_NOTFOUND;
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, TOKEN_LEN, md);

    auth_token found = {0};
    bool match = false, revoked = false;
    sqlite3_stmt *st = s->st[ST_TOKEN_GET];
    int rc = 0;
    if (sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = db_fail(s, "token.lookup");
    } else {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            const void *stored = sqlite3_column_blob(st, 2);
            int storedlen = sqlite3_column_bytes(st, 2);
            match = stored && storedlen == (int)sizeof(md) &&
                    CRYPTO_memcmp(stored, md, sizeof(md)) == 0;
            memcpy(found.id, id, sizeof(found.id));
            copy_col(found.user, sizeof(found.user), st, 0);
            copy_col(found.name, sizeof(found.name), st, 1);
            found.created = sqlite3_column_int64(st, 3);
            found.expires = sqlite3_column_int64(st, 4);
            found.actions = (unsigned)sqlite3_column_int64(st, 5);
            revoked = sqlite3_column_int(st, 6) != 0;
        } else if (step == SQLITE_DONE) {
            rc = PST_E_NOTFOUND;
        } else {
            rc = db_fail(s, "token.lookup");
        }
    }
    stmt_done(st);
    OPENSSL_cleanse(md, sizeof(md));
    if (rc != 0)
        return rc;
    if (!match || revoked || now >= found.expires)
        return PST_E_NOTFOUND;
    if (out)
        *out = found;
    return 0;
}

/* Each object: {"id", "name", "created", "expires", "actions"}, actions
 * being the names of the granted actions, [] meaning all of the user's. */
static json_t *token_json(sqlite3_stmt *st)
{
    const unsigned char *id = sqlite3_column_text(st, 0);
    const unsigned char *name = sqlite3_column_text(st, 1);
    unsigned actions = (unsigned)sqlite3_column_int64(st, 4);
    json_t *acts = json_array();
    if (!acts)
        return NULL;
    for (unsigned bit = 1; bit && bit <= actions; bit <<= 1)
        if ((actions & bit) && json_array_append_new(acts, json_string(auth_action_name(bit))) != 0) {
            json_decref(acts);
            return NULL;
        }
    return json_pack("{s:s, s:s, s:I, s:I, s:o}", "id", id ? (const char *)id : "", "name",
                     name ? (const char *)name : "", "created",
                     (json_int_t)sqlite3_column_int64(st, 2), "expires",
                     (json_int_t)sqlite3_column_int64(st, 3), "actions", acts);
}

int auth_token_list(auth_store *s, const char *user, int64_t now, json_t **out)
{
    *out = NULL;
    if (!user)
        return -EINVAL;
    json_t *arr = json_array();
    if (!arr)
        return -ENOMEM;
    sqlite3_stmt *st = s->st[ST_TOKEN_LIST];
    int rc = 0;
    if (sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, now) != SQLITE_OK) {
        rc = db_fail(s, "token.list");
    } else {
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            json_t *obj = token_json(st);
            if (!obj || json_array_append_new(arr, obj) != 0) {
                rc = -ENOMEM;
                break;
            }
        }
        if (rc == 0 && step != SQLITE_DONE)
            rc = db_fail(s, "token.list");
    }
    stmt_done(st);
    if (rc != 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int auth_token_revoke(auth_store *s, const char *user, const char *id)
{
    if (!user || !id)
        return PST_E_NOTFOUND;
    sqlite3_stmt *st = s->st[ST_TOKEN_REVOKE];
    int rc = 0;
    if (sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(s, "token.revoke");
    else if (sqlite3_changes(s->db) == 0)
        rc = PST_E_NOTFOUND;
    stmt_done(st);
    return rc;
}

int auth_token_revoke_user(auth_store *s, const char *user)
{
    if (!user)
        return -EINVAL;
    sqlite3_stmt *st = s->st[ST_TOKEN_REVOKE_USER];
    int rc = 0;
    if (sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(s, "token.revoke_user");
    stmt_done(st);
    return rc;
}

/* ---- TOTP replay guard -------------------------------------------------- */

/* The signature has no room for an error: a database failure answers
 * UINT64_MAX, later than any step, so auth_totp_verify then refuses every
 * code. Failing closed costs a login; failing open would allow a replay. */
uint64_t auth_totp_last_step(auth_store *s, const char *user)
{
    if (!user)
        return UINT64_MAX;
    sqlite3_stmt *st = s->st[ST_TOTP_GET];
    uint64_t step = UINT64_MAX;
    if (sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC) != SQLITE_OK) {
        db_fail(s, "totp.get");
    } else {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            int64_t v = sqlite3_column_int64(st, 0);
            step = v < 0 ? UINT64_MAX : (uint64_t)v;
        } else if (rc == SQLITE_DONE) {
            step = 0;
        } else {
            db_fail(s, "totp.get");
        }
    }
    stmt_done(st);
    return step;
}

/* -ERANGE for a step SQLite cannot hold (beyond year 10^11 at 30 s). */
int auth_totp_set_last_step(auth_store *s, const char *user, uint64_t step)
{
    if (!text_ok(user, 1, AUTH_NAME_MAX))
        return -EINVAL;
    if (step > (uint64_t)INT64_MAX)
        return -ERANGE;
    sqlite3_stmt *st = s->st[ST_TOTP_SET];
    int rc = 0;
    if (sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, (int64_t)step) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(s, "totp.set");
    stmt_done(st);
    return rc;
}
