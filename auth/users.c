/* The users file: one JSON object per line, so that an error names its
 * line and a hand edit cannot silently break its neighbours.
 *
 *   {"name":"alice","roles":["ops"],"password":"$argon2id$...",
 *    "disabled":false,"totp_secret":"BASE32..."}
 *
 * Blank lines and lines starting with '#' are ignored. Saved atomically
 * (temporary file, fsync, rename) with mode 0600: it holds password hashes
 * and TOTP secrets. */
#include "auth/auth.h"

#include "common/atomic_file.h"
#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define USERS_FILE_MAX (16u << 20)

bool auth_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > AUTH_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._-@", *p))
            return false;
    return true;
}

static void user_clear(auth_user *u)
{
    free(u->name);
    for (size_t i = 0; i < u->nroles; i++)
        free(u->roles[i]);
    free(u->roles);
    if (u->password_hash) {
        OPENSSL_cleanse(u->password_hash, strlen(u->password_hash));
        free(u->password_hash);
    }
    OPENSSL_cleanse(u->totp_key, sizeof(u->totp_key));
    memset(u, 0, sizeof(*u));
}

void auth_users_free(auth_users *users)
{
    if (!users)
        return;
    for (size_t i = 0; i < users->n; i++)
        user_clear(&users->v[i]);
    free(users->v);
    free(users);
}

static int line_fail(char *err, size_t errlen, const char *path, size_t line,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int line_fail(char *err, size_t errlen, const char *path, size_t line,
                     const char *fmt, ...)
{
    int n = snprintf(err, errlen, "%s:%zu: ", path, line);
    if (n >= 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return PST_E_CONFIG;
}

static int parse_user(json_t *obj, auth_user *u, const char *path, size_t line, char *err,
                      size_t errlen)
{
    static const char *const keys[] = {"name", "roles", "password", "disabled",
                                       "totp_secret", NULL};
    const char *k;
    json_t *v;
    if (!json_is_object(obj))
        return line_fail(err, errlen, path, line, "expected a JSON object");
    json_object_foreach(obj, k, v) {
        bool known = false;
        for (const char *const *a = keys; *a; a++)
            known |= strcmp(k, *a) == 0;
        if (!known)
            return line_fail(err, errlen, path, line, "unknown key \"%s\"", k);
    }
    json_t *name = json_object_get(obj, "name");
    if (!json_is_string(name) || !auth_name_valid(json_string_value(name)))
        return line_fail(err, errlen, path, line,
                         "name: expected 1 to %d letters, digits, '.', '_', '-', '@'",
                         AUTH_NAME_MAX);
    u->name = strdup(json_string_value(name));
    u->line = line;

    json_t *pw = json_object_get(obj, "password");
    if (pw && (!json_is_string(pw) || strncmp(json_string_value(pw), "$argon2id$", 10) != 0))
        return line_fail(err, errlen, path, line, "password: expected an argon2id hash");
    if (pw)
        u->password_hash = strdup(json_string_value(pw));

    json_t *dis = json_object_get(obj, "disabled");
    if (dis && !json_is_boolean(dis))
        return line_fail(err, errlen, path, line, "disabled: expected true or false");
    u->disabled = json_is_true(dis);

    json_t *roles = json_object_get(obj, "roles");
    if (roles && !json_is_array(roles))
        return line_fail(err, errlen, path, line, "roles: expected a list of role names");
    size_t nr = json_array_size(roles);
    if (nr) {
        u->roles = calloc(nr, sizeof(*u->roles));
        if (!u->roles)
            return -ENOMEM;
        for (size_t i = 0; i < nr; i++) {
            json_t *r = json_array_get(roles, i);
            if (!json_is_string(r) || !auth_name_valid(json_string_value(r)))
                return line_fail(err, errlen, path, line, "roles[%zu]: expected a role name",
                                 i);
            u->roles[u->nroles++] = strdup(json_string_value(r));
        }
    }

    json_t *totp = json_object_get(obj, "totp_secret");
    if (totp) {
        size_t n = 0;
        if (!json_is_string(totp) ||
            auth_base32_decode(json_string_value(totp), u->totp_key, sizeof(u->totp_key),
                               &n) != 0 ||
            n < 10)
            return line_fail(err, errlen, path, line,
                             "totp_secret: expected a base32 secret of at least 80 bits");
        u->totp_key_len = n;
    }
    return 0;
}

int auth_users_parse(const char *path, const char *text, size_t len, auth_users **out,
                     char *err, size_t errlen)
{
    *out = NULL;
    auth_users *users = calloc(1, sizeof(*users));
    if (!users)
        return -ENOMEM;
    size_t line = 0, cap = 0;
    const char *p = text, *end = text + len;
    int rc = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        line++;
        const char *s = p;
        while (s < eol && isspace((unsigned char)*s))
            s++;
        if (s < eol && *s != '#') {
            json_error_t jerr;
            json_t *obj = json_loadb(p, (size_t)(eol - p), JSON_REJECT_DUPLICATES, &jerr);
            if (!obj) {
                rc = line_fail(err, errlen, path, line, "invalid JSON: %s", jerr.text);
                goto fail;
            }
            if (users->n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                auth_user *grown = realloc(users->v, ncap * sizeof(*grown));
                if (!grown) {
                    json_decref(obj);
                    rc = -ENOMEM;
                    goto fail;
                }
                users->v = grown;
                cap = ncap;
            }
            auth_user *u = &users->v[users->n++];
            memset(u, 0, sizeof(*u));
            rc = parse_user(obj, u, path, line, err, errlen);
            json_decref(obj);
            if (rc)
                goto fail;
            for (size_t i = 0; i + 1 < users->n; i++) {
                if (strcmp(users->v[i].name, u->name) == 0) {
                    rc = line_fail(err, errlen, path, line,
                                   "user \"%s\" is already defined on line %zu", u->name,
                                   users->v[i].line);
                    goto fail;
                }
            }
        }
        p = nl ? nl + 1 : end;
    }
    *out = users;
    return 0;
fail:
    auth_users_free(users);
    return rc;
}

int auth_users_load(const char *path, auth_users **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        if (errno == ENOENT) {
            /* No file yet: no users. `postern user add` creates it. */
            *out = calloc(1, sizeof(**out));
            return *out ? 0 : -ENOMEM;
        }
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size > (off_t)USERS_FILE_MAX) {
        close(fd);
        snprintf(err, errlen, "%s: unreadable or larger than %u bytes", path, USERS_FILE_MAX);
        return PST_E_CONFIG;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    ssize_t n = read(fd, buf, (size_t)st.st_size);
    close(fd);
    if (n != (ssize_t)st.st_size) {
        free(buf);
        snprintf(err, errlen, "%s: short read", path);
        return -EIO;
    }
    int rc = auth_users_parse(path, buf, (size_t)n, out, err, errlen);
    free(buf);
    return rc;
}

static json_t *user_json(const auth_user *u)
{
    json_t *obj = json_object();
    json_t *roles = json_array();
    json_object_set_new(obj, "name", json_string(u->name));
    for (size_t i = 0; i < u->nroles; i++)
        json_array_append_new(roles, json_string(u->roles[i]));
    json_object_set_new(obj, "roles", roles);
    if (u->password_hash)
        json_object_set_new(obj, "password", json_string(u->password_hash));
    if (u->disabled)
        json_object_set_new(obj, "disabled", json_true());
    if (u->totp_key_len) {
        char b32[AUTH_TOTP_KEY_LEN * 4];
        auth_base32_encode(u->totp_key, u->totp_key_len, b32, sizeof(b32));
        json_object_set_new(obj, "totp_secret", json_string(b32));
        OPENSSL_cleanse(b32, sizeof(b32));
    }
    return obj;
}

static int emit_users(FILE *f, void *ctx)
{
    const auth_users *users = ctx;
    bool ok = fputs("# Postern users: one JSON object per line. Edit with `postern user`.\n",
                    f) >= 0;
    for (size_t i = 0; ok && i < users->n; i++) {
        json_t *obj = user_json(&users->v[i]);
        ok = json_dumpf(obj, f, JSON_COMPACT | JSON_PRESERVE_ORDER) == 0 && fputc('\n', f) != EOF;
        json_decref(obj);
    }
    return ok;
}

int auth_users_save(const auth_users *users, const char *path, char *err, size_t errlen)
{
    /* 0600: the file holds password hashes and TOTP secrets. */
    return pst_write_file_atomic(path, 0600, emit_users, (void *)users, err, errlen);
}

auth_user *auth_users_find(const auth_users *users, const char *name)
{
    for (size_t i = 0; users && i < users->n; i++)
        if (strcmp(users->v[i].name, name) == 0)
            return &users->v[i];
    return NULL;
}

int auth_users_add(auth_users *users, const char *name, auth_user **out)
{
    if (!auth_name_valid(name))
        return PST_E_PARSE;
    if (auth_users_find(users, name))
        return -EEXIST;
    auth_user *grown = realloc(users->v, (users->n + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    users->v = grown;
    auth_user *u = &users->v[users->n];
    memset(u, 0, sizeof(*u));
    if (!(u->name = strdup(name)))
        return -ENOMEM;
    users->n++;
    *out = u;
    return 0;
}

int auth_user_add_role(auth_user *u, const char *role)
{
    if (!auth_name_valid(role))
        return PST_E_PARSE;
    for (size_t i = 0; i < u->nroles; i++)
        if (strcmp(u->roles[i], role) == 0)
            return 0;
    char **grown = realloc(u->roles, (u->nroles + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    u->roles = grown;
    if (!(u->roles[u->nroles] = strdup(role)))
        return -ENOMEM;
    u->nroles++;
    return 0;
}

int auth_user_set_password_hash(auth_user *u, const char *encoded)
{
    char *copy = strdup(encoded);
    if (!copy)
        return -ENOMEM;
    if (u->password_hash) {
        OPENSSL_cleanse(u->password_hash, strlen(u->password_hash));
        free(u->password_hash);
    }
    u->password_hash = copy;
    return 0;
}
