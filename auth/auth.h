/* auth: who is this, and may they do this to that VM.
 *
 * The identity module used by every endpoint (console, tunnel, recordings,
 * JIT). It knows users, passwords, second factors, login sessions, API
 * tokens, roles and the audit log; it never touches a target and never
 * reaches into the gateway: the gateway hands it what it needs.
 *
 * Threads: unless a function says otherwise, call it from the loop thread.
 * Password hashing is slow on purpose; the gateway runs auth_password_*
 * on the libuv thread pool. The audit log may be written from any thread.
 */
#ifndef PST_AUTH_AUTH_H
#define PST_AUTH_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- passwords (argon2id) ------------------------------------------- */

#define AUTH_PASSWORD_MAX 1024 /* longer passwords are refused, not hashed */
#define AUTH_HASH_MAX 256      /* room for an encoded argon2id hash */

typedef struct {
    uint32_t t_cost;      /* passes */
    uint32_t m_cost_kib;  /* memory, KiB */
    uint32_t parallelism; /* lanes */
} auth_kdf_params;

extern const auth_kdf_params auth_kdf_default;

/* Hashes password into out as an encoded argon2id string (parameters and
 * salt included). p NULL: defaults. 0 or negative code. Any thread. */
int auth_password_hash(const char *password, size_t len, const auth_kdf_params *p,
                       char *out, size_t outlen);

/* 0 when password matches encoded, PST_E_DENIED when not, PST_E_PARSE when
 * encoded is no argon2id hash. Constant time in the password. Any thread. */
int auth_password_verify(const char *encoded, const char *password, size_t len);

/* A hash of a random secret: verifying unknown users against it makes
 * their failures cost what a wrong password costs. Any thread. */
int auth_password_dummy_hash(char *out, size_t outlen);

/* ---- TOTP (RFC 6238: HMAC-SHA-1, 30 s steps, 6 digits, +-1 step) ------- */

#define AUTH_TOTP_PERIOD 30
#define AUTH_TOTP_DIGITS 6
#define AUTH_TOTP_SKEW 1
#define AUTH_TOTP_KEY_LEN 20 /* 160-bit secrets, as RFC 4226 recommends */

/* The HOTP value for a time step, reduced to digits digits. */
uint32_t auth_totp_code(const uint8_t *key, size_t keylen, uint64_t step, int digits);

/* 0 when code is valid at time now (+-AUTH_TOTP_SKEW steps) for a step
 * later than last_step (so a code is never accepted twice); the step it
 * matched goes to *matched_step. PST_E_DENIED otherwise. */
int auth_totp_verify(const uint8_t *key, size_t keylen, const char *code, int64_t now,
                     uint64_t last_step, uint64_t *matched_step);

/* RFC 4648 base32 without padding (what authenticator apps exchange).
 * encode: out needs (len*8+4)/5+1 bytes. decode ignores '=', ' ', '-' and
 * case; *n gets the byte count. 0, -ENOSPC or PST_E_PARSE. */
int auth_base32_encode(const uint8_t *in, size_t len, char *out, size_t outlen);
int auth_base32_decode(const char *in, uint8_t *out, size_t outlen, size_t *n);

/* otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=... for enrolment. */
int auth_totp_uri(const char *issuer, const char *account, const char *secret_b32, char *out,
                  size_t outlen);

/* ---- audit log ------------------------------------------------------ */

typedef struct auth_audit auth_audit;

/* Opens (creating 0600) the audit log at path and resumes its hash chain
 * from the last line. 0 with *out (close with auth_audit_close), or a
 * negative code with a message in err: a torn last line is refused. */
int auth_audit_open(const char *path, auth_audit **out, char *err, size_t errlen);

/* Appends one event: {"ts","seq","event", fields..., "prev"}. fields may be
 * NULL and stays the caller's. Written (not necessarily synced) when this
 * returns 0; a negative code means the event is NOT recorded and the
 * action it describes must not be acknowledged. Any thread. */
int auth_audit_write(auth_audit *a, const char *event, json_t *fields);

/* fdatasync when anything was written since the last call. Any thread
 * (the gateway calls it from the thread pool once a second). */
int auth_audit_sync(auth_audit *a);

/* Also sends each event line to syslog (facility authpriv), for a central
 * collector; the file stays the record of reference. Any thread. */
void auth_audit_set_syslog(auth_audit *a, bool on);

void auth_audit_close(auth_audit *a);

typedef struct {
    size_t lines;        /* lines read */
    size_t bad_line;     /* first line that breaks the chain, 0 if none */
    char reason[256];
    char last_hash[65];  /* SHA-256 (hex) of the last good line */
} auth_audit_report;

/* Walks an audit log: 0 when every line chains to the one before,
 * PST_E_DENIED with rep->bad_line and rep->reason when not, -EIO. */
int auth_audit_verify(FILE *in, auth_audit_report *rep);

/* ---- users ---------------------------------------------------------- */

#define AUTH_NAME_MAX 64

/* Letters, digits, '.', '_', '-', '@'; 1 to AUTH_NAME_MAX characters. */
bool auth_name_valid(const char *name);

typedef struct {
    char *name;
    char **roles;
    size_t nroles;
    char *password_hash; /* encoded argon2id; NULL: password login off */
    bool disabled;
    uint8_t totp_key[64]; /* TOTP secret; totp_key_len 0: not enrolled */
    size_t totp_key_len;
    size_t line; /* where it stood in the file */
} auth_user;

/* All users of one file. Owned by whoever loaded it; free with
 * auth_users_free (which wipes hashes and secrets). */
typedef struct {
    auth_user *v;
    size_t n;
} auth_users;

/* Loads a users file (JSON lines). A missing file is an empty set. On a
 * broken entry: PST_E_CONFIG and "FILE:LINE: what" in err, nothing kept. */
int auth_users_load(const char *path, auth_users **out, char *err, size_t errlen);
int auth_users_parse(const char *path, const char *text, size_t len, auth_users **out,
                     char *err, size_t errlen);

/* Writes users to path atomically (temp file, fsync, rename), mode 0600. */
int auth_users_save(const auth_users *users, const char *path, char *err, size_t errlen);

/* The user of that name (pointer into users), or NULL. */
auth_user *auth_users_find(const auth_users *users, const char *name);

/* Appends a user with no roles and no password. -EEXIST, PST_E_PARSE (bad
 * name) or 0 with *out pointing into users (valid until the next add). */
int auth_users_add(auth_users *users, const char *name, auth_user **out);
int auth_user_add_role(auth_user *u, const char *role);
int auth_user_set_password_hash(auth_user *u, const char *encoded);

void auth_users_free(auth_users *users);

/* ---- roles and permissions ----------------------------------------- */

/* Actions a role may grant; bit flags so a role's grants are one word. */
typedef enum {
    AUTH_ACT_SSH_LOGIN = 1u << 0,
    AUTH_ACT_SSH_ADMIN_LOGIN = 1u << 1,
    AUTH_ACT_RDP_LOGIN = 1u << 2,
    AUTH_ACT_RDP_ADMIN_LOGIN = 1u << 3,
    AUTH_ACT_TUNNEL = 1u << 4,
    AUTH_ACT_AUDITOR = 1u << 5,
    AUTH_ACT_APPROVER = 1u << 6,
    AUTH_ACT_ADMIN = 1u << 7,
} auth_action;

/* "ssh-login" -> AUTH_ACT_SSH_LOGIN; 0 for an unknown name. */
unsigned auth_action_parse(const char *name);
const char *auth_action_name(unsigned flag);

/* A role as the configuration declares it. The strings belong to whoever
 * built the array (the gateway's config). */
typedef struct {
    const char *name;
    const char **selectors; /* VM name globs, or "tag:TAG" */
    size_t nselectors;
    unsigned actions;       /* auth_action flags */
    bool mfa_required;
} auth_role;

/* What a permission check needs to know of a VM. */
typedef struct {
    const char *name;
    const char *const *tags;
    size_t ntags;
} auth_target;

bool auth_selector_matches(const char *selector, const auth_target *vm);
const auth_role *auth_role_find(const auth_role *roles, size_t nroles, const char *name);

/* May user do action to vm (NULL for the non-VM actions auditor, approver,
 * admin, whose selectors then do not matter)? 0 when a role grants it;
 * PST_E_DENIED with the reason in why otherwise. Deny by default. */
int auth_may(const auth_role *roles, size_t nroles, const auth_user *user, unsigned action,
             const auth_target *vm, char *why, size_t whylen);

/* Every action user's roles grant on vm. */
unsigned auth_actions_on(const auth_role *roles, size_t nroles, const auth_user *user,
                         const auth_target *vm);

/* True when one of user's roles demands a second factor. */
bool auth_mfa_required(const auth_role *roles, size_t nroles, const auth_user *user);

/* ---- login throttling ----------------------------------------------- */

/* Failed logins are counted per account and per source address. After
 * free_failures, each further failure makes the key wait 2^(n-free) s
 * (capped at max_delay) before the next attempt is even checked; at
 * lock_failures the key is locked for lock_seconds. A success clears the
 * account's key and the address's key. A refused attempt never reveals
 * whether the password was right: it is refused before it is checked. */
typedef struct {
    int free_failures;  /* default 3 */
    int max_delay;      /* seconds, default 60 */
    int lock_failures;  /* default 10 */
    int lock_seconds;   /* default 900 */
} auth_throttle_params;

extern const auth_throttle_params auth_throttle_default;

typedef struct auth_throttle auth_throttle;

/* At most max_keys keys are remembered (the oldest idle ones are dropped
 * first), so an attacker cycling addresses cannot grow it without bound. */
auth_throttle *auth_throttle_new(const auth_throttle_params *p, size_t max_keys);
void auth_throttle_free(auth_throttle *t);
void auth_throttle_set_params(auth_throttle *t, const auth_throttle_params *p);

/* 0 when an attempt for key may be checked now; otherwise PST_E_LIMIT with
 * the seconds to wait in *retry_after and *locked true when the key is
 * locked (not merely slowed). */
int auth_throttle_check(auth_throttle *t, const char *key, int64_t now, int *retry_after,
                        bool *locked);
/* Records a failure; returns true when this failure locked the key. */
bool auth_throttle_fail(auth_throttle *t, const char *key, int64_t now);
void auth_throttle_clear(auth_throttle *t, const char *key);
/* Keys locked now (for /metrics). */
size_t auth_throttle_locked_count(auth_throttle *t, int64_t now);

/* ---- runtime state: login sessions and API tokens ----------------------
 *
 * Kept in a SQLite file in the state directory (WAL mode), so sessions
 * and tokens survive a restart and stay revocable. Secrets are stored only
 * as SHA-256 hashes: reading the file gives no usable cookie or token.
 * Loop thread only. */

#define AUTH_SESSION_ID_LEN 43 /* 256 random bits, base64url without padding */
#define AUTH_TOKEN_MAX 80      /* "pst_" + id + "_" + secret */
#define AUTH_TOKEN_ID_LEN 16   /* public id: 64 random bits in hex */

typedef struct auth_store auth_store;

int auth_store_open(const char *path, auth_store **out, char *err, size_t errlen);
void auth_store_close(auth_store *s);

typedef struct {
    char user[AUTH_NAME_MAX + 1];
    int64_t created;
    int64_t last_seen;
    bool mfa;            /* the login included a second factor */
} auth_session;

/* Creates a login session for user; the cookie value goes to id (NUL
 * terminated, AUTH_SESSION_ID_LEN + 1 bytes). */
int auth_session_create(auth_store *s, const char *user, bool mfa, int64_t now, char *id);

/* Finds a live session: 0 with *out filled (and last_seen refreshed);
 * PST_E_NOTFOUND when unknown, or expired (idle longer than idle_seconds
 * or older than max_seconds; an expired one is deleted). */
int auth_session_lookup(auth_store *s, const char *id, int64_t now, int idle_seconds,
                        int max_seconds, auth_session *out);
int auth_session_delete(auth_store *s, const char *id);
/* Ends every session of user (password changed, account disabled). */
int auth_session_delete_user(auth_store *s, const char *user);

typedef struct {
    char id[AUTH_TOKEN_ID_LEN + 1];
    char user[AUTH_NAME_MAX + 1];
    char name[AUTH_NAME_MAX + 1];
    int64_t created;
    int64_t expires;
    unsigned actions; /* 0: all of the user's actions; else at most these */
} auth_token;

/* Issues a token; the secret form goes to token (AUTH_TOKEN_MAX bytes),
 * shown once and never stored. The record goes to *out. */
int auth_token_create(auth_store *s, const char *user, const char *name, unsigned actions,
                      int64_t now, int64_t expires, char *token, auth_token *out);
/* 0 with *out when token is valid at now; PST_E_NOTFOUND otherwise
 * (unknown, revoked or expired). Compared by hash. */
int auth_token_lookup(auth_store *s, const char *token, int64_t now, auth_token *out);
/* The user's unexpired tokens as a JSON array of objects (id, name,
 * created, expires, actions); the caller owns the array. */
int auth_token_list(auth_store *s, const char *user, int64_t now, json_t **out);
/* Revokes one of user's tokens: 0, or PST_E_NOTFOUND. */
int auth_token_revoke(auth_store *s, const char *user, const char *id);
/* Revokes every token of user (account disabled, password changed). */
int auth_token_revoke_user(auth_store *s, const char *user);

/* The last TOTP step accepted for user (0 if none), and recording one:
 * kept here so that a code cannot be replayed across a restart either. */
uint64_t auth_totp_last_step(auth_store *s, const char *user);
int auth_totp_set_last_step(auth_store *s, const char *user, uint64_t step);

#endif
