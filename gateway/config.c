#include "gateway/config.h"

#include "common/err.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 256

/* Validation state: the first error wins and stops the walk. */
typedef struct {
    const char *file;
    char *err;
    size_t errlen;
    gw_config *cfg;
} cfg_ctx;

/* Messages quote the file (keys, jansson's "near" text): a control
 * character there must not make the message span lines or forge a log
 * line. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

static int fail(cfg_ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(cfg_ctx *c, const char *path, const char *fmt, ...)
{
    int n = snprintf(c->err, c->errlen, "%s: %s%s", c->file, path, *path ? ": " : "");
    if (n >= 0 && (size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    one_line(c->err);
    return PST_E_CONFIG;
}

/* Paths longer than PATH_MAX_LEN are cut: they only ever name a place in
 * an error message. */
static void path_key(char *out, const char *path, const char *key)
{
    if (snprintf(out, PATH_MAX_LEN, "%s%s%s", path, *path ? "." : "", key) >= PATH_MAX_LEN)
        out[PATH_MAX_LEN - 1] = '\0';
}

static void path_index(char *out, const char *path, size_t i)
{
    if (snprintf(out, PATH_MAX_LEN, "%s[%zu]", path, i) >= PATH_MAX_LEN)
        out[PATH_MAX_LEN - 1] = '\0';
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* Every key of obj must be in allowed (NULL-terminated). */
static int check_keys(cfg_ctx *c, const char *path, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(key, *a) == 0)
                known = true;
        if (!known) {
            char sub[PATH_MAX_LEN];
            char list[512] = "";
            size_t o = 0;
            for (const char *const *a = allowed; *a && o < sizeof(list); a++) {
                int n = snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "", *a);
                if (n > 0)
                    o += (size_t)n;
            }
            path_key(sub, path, key);
            return fail(c, sub, "unknown key (expected one of: %s)", list);
        }
    }
    return 0;
}

static int want_object(cfg_ctx *c, const char *path, json_t *v)
{
    if (!json_is_object(v))
        return fail(c, path, "expected an object, got %s", json_kind(v));
    return 0;
}

static int missing(cfg_ctx *c, const char *path, const char *key)
{
    return fail(c, path, "missing required key \"%s\"", key);
}

/* Optional string: absent leaves *out untouched. Empty strings are refused:
 * an empty path or name is always a mistake. */
static int get_string(cfg_ctx *c, const char *path, json_t *obj, const char *key,
                      bool required, const char **out)
{
    json_t *v = json_object_get(obj, key);
    char sub[PATH_MAX_LEN];
    path_key(sub, path, key);
    if (!v)
        return required ? missing(c, path, key) : 0;
    if (!json_is_string(v))
        return fail(c, sub, "expected a string, got %s", json_kind(v));
    if (json_string_length(v) == 0)
        return fail(c, sub, "expected a non-empty string");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(c, sub, "expected a string without NUL characters");
    *out = json_string_value(v);
    return 0;
}

static int get_int(cfg_ctx *c, const char *path, json_t *obj, const char *key,
                   bool required, long min, long max, int *out)
{
    json_t *v = json_object_get(obj, key);
    char sub[PATH_MAX_LEN];
    path_key(sub, path, key);
    if (!v)
        return required ? missing(c, path, key) : 0;
    if (!json_is_integer(v))
        return fail(c, sub, "expected an integer from %ld to %ld, got %s", min, max,
                    json_kind(v));
    json_int_t n = json_integer_value(v);
    if (n < min || n > max)
        return fail(c, sub, "expected an integer from %ld to %ld, got %lld", min, max,
                    (long long)n);
    *out = (int)n;
    return 0;
}

static int get_bool(cfg_ctx *c, const char *path, json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    char sub[PATH_MAX_LEN];
    path_key(sub, path, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return fail(c, sub, "expected true or false, got %s", json_kind(v));
    *out = json_is_true(v);
    return 0;
}

static bool name_char_ok(int ch)
{
    return isalnum(ch) || ch == '.' || ch == '_' || ch == '-';
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_NAME_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!name_char_ok((unsigned char)*p))
            return false;
    return true;
}

/* A list of non-empty strings. *out is an array owned by the config. */
static int get_string_list(cfg_ctx *c, const char *path, json_t *obj, const char *key,
                           bool names_only, const char ***out, size_t *count)
{
    json_t *v = json_object_get(obj, key);
    char sub[PATH_MAX_LEN], item[PATH_MAX_LEN];
    path_key(sub, path, key);
    *out = NULL;
    *count = 0;
    if (!v)
        return 0;
    if (!json_is_array(v))
        return fail(c, sub, "expected a list of strings, got %s", json_kind(v));
    size_t n = json_array_size(v);
    if (n == 0)
        return 0;
    const char **arr = calloc(n, sizeof(*arr));
    if (!arr)
        return fail(c, sub, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        path_index(item, sub, i);
        if (!json_is_string(e) || json_string_length(e) == 0) {
            free(arr);
            return fail(c, item, "expected a non-empty string, got %s", json_kind(e));
        }
        if (names_only && !valid_name(json_string_value(e))) {
            free(arr);
            return fail(c, item, "expected a name of letters, digits, '.', '_', '-' "
                                 "(at most %d)", GW_NAME_MAX);
        }
        arr[i] = json_string_value(e);
    }
    *out = arr;
    *count = n;
    return 0;
}

int gw_addr_parse(const char *text, gw_addr *out)
{
    const char *host = text, *colon;
    size_t hostlen;
    memset(out, 0, sizeof(*out));
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return PST_E_PARSE;
        host = text + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
        char tmp[GW_HOST_MAX + 1];
        struct in6_addr a6;
        if (hostlen == 0 || hostlen > GW_HOST_MAX)
            return PST_E_PARSE;
        memcpy(tmp, host, hostlen);
        tmp[hostlen] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return PST_E_PARSE;
    } else {
        colon = strrchr(text, ':');
        if (!colon || strchr(text, ':') != colon) /* bare IPv6 needs brackets */
            return PST_E_PARSE;
        hostlen = (size_t)(colon - host);
        if (hostlen == 0 || hostlen > GW_HOST_MAX)
            return PST_E_PARSE;
        for (size_t i = 0; i < hostlen; i++)
            if (!isalnum((unsigned char)host[i]) && host[i] != '.' && host[i] != '-')
                return PST_E_PARSE;
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) > 5)
        return PST_E_PARSE;
    long port = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return PST_E_PARSE;
        port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535)
        return PST_E_PARSE;
    memcpy(out->host, host, hostlen);
    out->host[hostlen] = '\0';
    out->port = (int)port;
    return 0;
}

/* Listen addresses must be IP literals: binding by host name would need a
 * resolver at start and could silently pick another interface. */
static int parse_addr_value(cfg_ctx *c, const char *path, json_t *v, gw_addr *out)
{
    struct in6_addr a6;
    if (!json_is_string(v))
        return fail(c, path, "expected a string \"IP:port\", got %s", json_kind(v));
    if (gw_addr_parse(json_string_value(v), out) != 0 ||
        (inet_pton(AF_INET, out->host, &a6) != 1 && inet_pton(AF_INET6, out->host, &a6) != 1))
        return fail(c, path, "expected \"IPv4:port\" or \"[IPv6]:port\" with a port "
                             "from 1 to 65535, got %s", log_q(json_string_value(v)));
    return 0;
}

static int parse_listen(cfg_ctx *c, json_t *root)
{
    gw_config *cfg = c->cfg;
    json_t *v = json_object_get(root, "listen");
    if (!v)
        return missing(c, "", "listen");
    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (n == 0)
            return fail(c, "listen", "expected at least one \"host:port\"");
        cfg->listen = calloc(n, sizeof(*cfg->listen));
        if (!cfg->listen)
            return fail(c, "listen", "out of memory");
        for (size_t i = 0; i < n; i++) {
            char sub[PATH_MAX_LEN];
            path_index(sub, "listen", i);
            if (parse_addr_value(c, sub, json_array_get(v, i), &cfg->listen[i]))
                return PST_E_CONFIG;
            cfg->nlisten++;
        }
        return 0;
    }
    cfg->listen = calloc(1, sizeof(*cfg->listen));
    if (!cfg->listen)
        return fail(c, "listen", "out of memory");
    if (parse_addr_value(c, "listen", v, &cfg->listen[0]))
        return PST_E_CONFIG;
    cfg->nlisten = 1;
    return 0;
}

static int parse_tls(cfg_ctx *c, json_t *root)
{
    static const char *const keys[] = {"cert", "key", NULL};
    json_t *v = json_object_get(root, "tls");
    if (!v)
        return 0;
    if (want_object(c, "tls", v) || check_keys(c, "tls", v, keys) ||
        get_string(c, "tls", v, "cert", false, &c->cfg->tls_cert) ||
        get_string(c, "tls", v, "key", false, &c->cfg->tls_key))
        return PST_E_CONFIG;
    if (!c->cfg->tls_cert != !c->cfg->tls_key)
        return fail(c, "tls", "expected both \"cert\" and \"key\", or neither "
                              "(a self-signed certificate is then generated)");
    return 0;
}

static bool valid_origin(const char *s)
{
    const char *rest;
    if (strncmp(s, "https://", 8) == 0)
        rest = s + 8;
    else if (strncmp(s, "http://", 7) == 0)
        rest = s + 7;
    else
        return false;
    if (!*rest)
        return false;
    for (const char *p = rest; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(".-:[]", *p))
            return false; /* no path, query, user info or wildcard */
    return true;
}

static char *owned_printf(gw_config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *owned_printf(gw_config *cfg, const char *fmt, ...)
{
    char **grown = realloc(cfg->owned_, (cfg->nowned_ + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    cfg->owned_ = grown;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (s)
        cfg->owned_[cfg->nowned_++] = s;
    return s;
}

/* https://HOST[:PORT] for each listen address; wildcard addresses stand for
 * the names a browser on this machine would use. */
static int derive_origins(cfg_ctx *c)
{
    gw_config *cfg = c->cfg;
    size_t cap = cfg->nlisten * 3;
    cfg->origins = calloc(cap, sizeof(*cfg->origins));
    if (!cfg->origins)
        return fail(c, "origins", "out of memory");
    for (size_t i = 0; i < cfg->nlisten; i++) {
        const gw_addr *a = &cfg->listen[i];
        const char *hosts[3] = {a->host, NULL, NULL};
        if (strcmp(a->host, "0.0.0.0") == 0 || strcmp(a->host, "::") == 0) {
            hosts[0] = "localhost";
            hosts[1] = "127.0.0.1";
        }
        for (int h = 0; h < 3 && hosts[h]; h++) {
            bool v6 = strchr(hosts[h], ':') != NULL;
            char port[16] = "";
            if (a->port != 443)
                snprintf(port, sizeof(port), ":%d", a->port);
            char *o = owned_printf(cfg, "https://%s%s%s%s", v6 ? "[" : "", hosts[h],
                                   v6 ? "]" : "", port);
            if (!o)
                return fail(c, "origins", "out of memory");
            cfg->origins[cfg->norigins++] = o;
        }
    }
    return 0;
}

static int parse_origins(cfg_ctx *c, json_t *root)
{
    gw_config *cfg = c->cfg;
    if (get_string_list(c, "", root, "origins", false, &cfg->origins, &cfg->norigins))
        return PST_E_CONFIG;
    for (size_t i = 0; i < cfg->norigins; i++) {
        if (!valid_origin(cfg->origins[i])) {
            char sub[PATH_MAX_LEN];
            path_index(sub, "origins", i);
            return fail(c, sub, "expected \"https://host[:port]\" (scheme, host and "
                                "optional port only), got %s", log_q(cfg->origins[i]));
        }
    }
    if (cfg->norigins == 0) {
        free(cfg->origins);
        cfg->origins = NULL;
        return derive_origins(c);
    }
    return 0;
}

static bool valid_selector(const char *s)
{
    if (strncmp(s, "tag:", 4) == 0)
        return valid_name(s + 4);
    size_t n = strlen(s);
    if (n == 0 || n > GW_NAME_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!name_char_ok((unsigned char)*p) && *p != '*' && *p != '?')
            return false;
    return true;
}

static int parse_roles(cfg_ctx *c, json_t *root)
{
    static const char *const keys[] = {"vms", "actions", "mfa_required", NULL};
    gw_config *cfg = c->cfg;
    json_t *roles = json_object_get(root, "roles");
    if (!roles)
        return 0;
    if (want_object(c, "roles", roles))
        return PST_E_CONFIG;
    size_t n = json_object_size(roles);
    if (n == 0)
        return 0;
    cfg->roles = calloc(n, sizeof(*cfg->roles));
    if (!cfg->roles)
        return fail(c, "roles", "out of memory");
    const char *name;
    json_t *r;
    json_object_foreach(roles, name, r) {
        char path[PATH_MAX_LEN], sub[PATH_MAX_LEN];
        auth_role *role = &cfg->roles[cfg->nroles++];
        path_key(path, "roles", name);
        if (!valid_name(name))
            return fail(c, path, "expected a role name of letters, digits, '.', '_', '-'");
        role->name = name;
        if (want_object(c, path, r) || check_keys(c, path, r, keys))
            return PST_E_CONFIG;
        if (get_string_list(c, path, r, "vms", false, &role->selectors, &role->nselectors) ||
            get_bool(c, path, r, "mfa_required", &role->mfa_required))
            return PST_E_CONFIG;
        for (size_t i = 0; i < role->nselectors; i++) {
            path_key(sub, path, "vms");
            char item[PATH_MAX_LEN];
            path_index(item, sub, i);
            if (!valid_selector(role->selectors[i]))
                return fail(c, item, "expected a VM name pattern (letters, digits, '.', "
                                     "'_', '-', '*', '?') or \"tag:TAG\", got %s",
                            log_q(role->selectors[i]));
        }
        json_t *acts = json_object_get(r, "actions");
        path_key(sub, path, "actions");
        if (!acts)
            return missing(c, path, "actions");
        if (!json_is_array(acts))
            return fail(c, sub, "expected a list of actions, got %s", json_kind(acts));
        for (size_t i = 0; i < json_array_size(acts); i++) {
            json_t *a = json_array_get(acts, i);
            char item[PATH_MAX_LEN];
            path_index(item, sub, i);
            unsigned flag = json_is_string(a) ? auth_action_parse(json_string_value(a)) : 0;
            if (!flag)
                return fail(c, item, "expected one of ssh-login, ssh-admin-login, "
                                     "rdp-login, rdp-admin-login, tunnel, auditor, "
                                     "approver, admin");
            role->actions |= flag;
        }
    }
    return 0;
}

static int parse_limits(cfg_ctx *c, json_t *root)
{
    static const char *const keys[] = {"max_sessions", "max_sessions_per_user",
                                       "shutdown_grace_seconds",
                                       "handshake_timeout_seconds", "idle_timeout_seconds",
                                       "max_session_seconds", NULL};
    gw_limits *l = &c->cfg->limits;
    l->max_sessions = 1000;
    l->max_sessions_per_user = 20;
    l->shutdown_grace_seconds = 30;
    l->handshake_timeout_seconds = 10;
    l->idle_timeout_seconds = 1800;
    l->max_session_seconds = 8 * 3600;
    json_t *v = json_object_get(root, "limits");
    if (!v)
        return 0;
    if (want_object(c, "limits", v) || check_keys(c, "limits", v, keys) ||
        get_int(c, "limits", v, "max_sessions", false, 1, 1000000, &l->max_sessions) ||
        get_int(c, "limits", v, "max_sessions_per_user", false, 1, 1000000,
                &l->max_sessions_per_user) ||
        get_int(c, "limits", v, "shutdown_grace_seconds", false, 0, 86400,
                &l->shutdown_grace_seconds) ||
        get_int(c, "limits", v, "handshake_timeout_seconds", false, 1, 300,
                &l->handshake_timeout_seconds) ||
        get_int(c, "limits", v, "idle_timeout_seconds", false, 0, 7 * 86400,
                &l->idle_timeout_seconds) ||
        get_int(c, "limits", v, "max_session_seconds", false, 0, 7 * 86400,
                &l->max_session_seconds))
        return PST_E_CONFIG;
    return 0;
}

static int parse_auth(cfg_ctx *c, json_t *root)
{
    static const char *const keys[] = {"session_idle_seconds", "session_max_seconds",
                                       "token_max_seconds", "throttle", NULL};
    static const char *const tkeys[] = {"free_failures", "max_delay_seconds",
                                        "lock_failures", "lock_seconds", NULL};
    gw_auth_settings *a = &c->cfg->auth;
    a->session_idle_seconds = 1800;
    a->session_max_seconds = 8 * 3600;
    a->token_max_seconds = 90 * 86400;
    a->throttle = auth_throttle_default;
    json_t *v = json_object_get(root, "auth");
    if (!v)
        return 0;
    if (want_object(c, "auth", v) || check_keys(c, "auth", v, keys) ||
        get_int(c, "auth", v, "session_idle_seconds", false, 5, 7 * 86400,
                &a->session_idle_seconds) ||
        get_int(c, "auth", v, "session_max_seconds", false, 5, 30 * 86400,
                &a->session_max_seconds) ||
        get_int(c, "auth", v, "token_max_seconds", false, 5, 366 * 86400,
                &a->token_max_seconds))
        return PST_E_CONFIG;
    json_t *t = json_object_get(v, "throttle");
    if (!t)
        return 0;
    if (want_object(c, "auth.throttle", t) || check_keys(c, "auth.throttle", t, tkeys) ||
        get_int(c, "auth.throttle", t, "free_failures", false, 0, 1000,
                &a->throttle.free_failures) ||
        get_int(c, "auth.throttle", t, "max_delay_seconds", false, 0, 3600,
                &a->throttle.max_delay) ||
        get_int(c, "auth.throttle", t, "lock_failures", false, 1, 1000,
                &a->throttle.lock_failures) ||
        get_int(c, "auth.throttle", t, "lock_seconds", false, 1, 86400,
                &a->throttle.lock_seconds))
        return PST_E_CONFIG;
    return 0;
}

static int parse_audit(cfg_ctx *c, json_t *root)
{
    static const char *const keys[] = {"syslog", NULL};
    json_t *v = json_object_get(root, "audit");
    if (!v)
        return 0;
    if (want_object(c, "audit", v) || check_keys(c, "audit", v, keys) ||
        get_bool(c, "audit", v, "syslog", &c->cfg->audit_syslog))
        return PST_E_CONFIG;
    return 0;
}

static int parse_recording_mode(cfg_ctx *c, const char *path, const char *text,
                                gw_recording *out)
{
    if (strcmp(text, "off") == 0)
        *out = GW_REC_OFF;
    else if (strcmp(text, "on") == 0)
        *out = GW_REC_ON;
    else if (strcmp(text, "required") == 0)
        *out = GW_REC_REQUIRED;
    else
        return fail(c, path, "expected \"off\", \"on\" or \"required\", got %s",
                    log_q(text));
    return 0;
}

/* "recording": {"mode", "retention_days", "input"}: the default for VMs
 * that say nothing, how long recordings are kept, and whether keystrokes
 * are recorded (off: they include passwords typed at prompts). */
static int parse_recording(cfg_ctx *c, json_t *root)
{
    static const char *const keys[] = {"mode", "retention_days", "input", NULL};
    gw_recording_settings *r = &c->cfg->recording;
    r->mode = GW_REC_OFF;
    r->retention_days = 0;
    r->input = false;
    json_t *v = json_object_get(root, "recording");
    if (!v)
        return 0;
    const char *mode = NULL;
    if (want_object(c, "recording", v) || check_keys(c, "recording", v, keys) ||
        get_string(c, "recording", v, "mode", false, &mode) ||
        get_int(c, "recording", v, "retention_days", false, 0, 36500, &r->retention_days) ||
        get_bool(c, "recording", v, "input", &r->input))
        return PST_E_CONFIG;
    if (mode && parse_recording_mode(c, "recording.mode", mode, &r->mode))
        return PST_E_CONFIG;
    return 0;
}

/* "SHA256:" + 43 base64 characters, as ssh-keygen -l prints. */
static bool valid_ssh_fingerprint(const char *s)
{
    if (strncmp(s, "SHA256:", 7) != 0 || strlen(s + 7) != 43)
        return false;
    for (const char *p = s + 7; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '/')
            return false;
    return true;
}

/* 64 hex digits, bare or as 32 colon-separated pairs (what openssl x509
 * -fingerprint prints). */
static bool valid_hex_sha256(const char *s)
{
    size_t n = strlen(s);
    if (n == 64) {
        for (size_t i = 0; i < n; i++)
            if (!isxdigit((unsigned char)s[i]))
                return false;
        return true;
    }
    if (n != 95)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool colon_slot = i % 3 == 2;
        if (colon_slot ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

static int parse_pin(cfg_ctx *c, const char *path, json_t *obj, const char *pin_key,
                     bool (*valid)(const char *), const char *pin_desc,
                     const char **pin, bool *tofu)
{
    char sub[PATH_MAX_LEN];
    if (get_string(c, path, obj, pin_key, false, pin) ||
        get_bool(c, path, obj, "trust_on_first_use", tofu))
        return PST_E_CONFIG;
    path_key(sub, path, pin_key);
    if (*pin && !valid(*pin))
        return fail(c, sub, "expected %s, got %s", pin_desc, log_q(*pin));
    if (*pin && *tofu)
        return fail(c, path, "expected either \"%s\" or \"trust_on_first_use\": true, "
                             "not both", pin_key);
    if (!*pin && !*tofu)
        return fail(c, path, "expected \"%s\" (%s) or \"trust_on_first_use\": true; "
                             "an unpinned target would accept any impostor",
                    pin_key, pin_desc);
    return 0;
}

static int parse_vm_ssh(cfg_ctx *c, const char *path, json_t *vm, gw_vm_ssh *ssh)
{
    static const char *const keys[] = {"port", "host_key_sha256", "trust_on_first_use",
                                       "username", "key_file", NULL};
    char sub[PATH_MAX_LEN];
    json_t *v = json_object_get(vm, "ssh");
    path_key(sub, path, "ssh");
    if (!v)
        return 0;
    ssh->enabled = true;
    ssh->port = 22;
    if (want_object(c, sub, v) || check_keys(c, sub, v, keys) ||
        get_int(c, sub, v, "port", false, 1, 65535, &ssh->port) ||
        parse_pin(c, sub, v, "host_key_sha256", valid_ssh_fingerprint,
                  "\"SHA256:\" and 43 base64 characters, as ssh-keygen -lf prints",
                  &ssh->host_key_sha256, &ssh->trust_on_first_use) ||
        get_string(c, sub, v, "username", false, &ssh->username) ||
        get_string(c, sub, v, "key_file", false, &ssh->key_file))
        return PST_E_CONFIG;
    return 0;
}

static int parse_vm_rdp(cfg_ctx *c, const char *path, json_t *vm, gw_vm_rdp *rdp)
{
    static const char *const keys[] = {"port", "cert_sha256", "trust_on_first_use",
                                       "username", "password_file", NULL};
    char sub[PATH_MAX_LEN];
    json_t *v = json_object_get(vm, "rdp");
    path_key(sub, path, "rdp");
    if (!v)
        return 0;
    rdp->enabled = true;
    rdp->port = 3389;
    if (want_object(c, sub, v) || check_keys(c, sub, v, keys) ||
        get_int(c, sub, v, "port", false, 1, 65535, &rdp->port) ||
        parse_pin(c, sub, v, "cert_sha256", valid_hex_sha256,
                  "64 hex digits, colons allowed", &rdp->cert_sha256,
                  &rdp->trust_on_first_use) ||
        get_string(c, sub, v, "username", false, &rdp->username) ||
        get_string(c, sub, v, "password_file", false, &rdp->password_file))
        return PST_E_CONFIG;
    return 0;
}

/* obj[key], when present: a non-empty list of port numbers, into a new
 * array (freed with the config). */
static int parse_port_list(cfg_ctx *c, const char *path, json_t *obj, const char *key,
                           int **out, size_t *nout)
{
    char sub[PATH_MAX_LEN];
    json_t *ports = json_object_get(obj, key);
    path_key(sub, path, key);
    if (!ports)
        return 0;
    if (!json_is_array(ports) || json_array_size(ports) == 0)
        return fail(c, sub, "expected a non-empty list of port numbers");
    *nout = json_array_size(ports);
    *out = calloc(*nout, sizeof(**out));
    if (!*out)
        return fail(c, sub, "out of memory");
    for (size_t i = 0; i < *nout; i++) {
        json_t *p = json_array_get(ports, i);
        char item[PATH_MAX_LEN];
        path_index(item, sub, i);
        if (!json_is_integer(p) || json_integer_value(p) < 1 ||
            json_integer_value(p) > 65535)
            return fail(c, item, "expected a port number from 1 to 65535");
        (*out)[i] = (int)json_integer_value(p);
    }
    return 0;
}

#define JIT_MAX_SECONDS 86400 /* a grant lasts at most 24 h */

static int parse_vm_jit(cfg_ctx *c, const char *path, json_t *vm, gw_vm_jit *jit)
{
    static const char *const keys[] = {"required", "ports", "default_duration",
                                       "max_duration", NULL};
    char sub[PATH_MAX_LEN];
    json_t *v = json_object_get(vm, "jit");
    path_key(sub, path, "jit");
    jit->default_duration = 3 * 3600;
    jit->max_duration = JIT_MAX_SECONDS;
    if (!v)
        return 0;
    if (want_object(c, sub, v) || check_keys(c, sub, v, keys) ||
        get_bool(c, sub, v, "required", &jit->required) ||
        get_int(c, sub, v, "default_duration", false, 60, JIT_MAX_SECONDS,
                &jit->default_duration) ||
        get_int(c, sub, v, "max_duration", false, 60, JIT_MAX_SECONDS, &jit->max_duration))
        return PST_E_CONFIG;
    if (jit->default_duration > jit->max_duration)
        return fail(c, sub, "expected default_duration (%d) no longer than "
                            "max_duration (%d)", jit->default_duration, jit->max_duration);
    return parse_port_list(c, sub, v, "ports", &jit->ports, &jit->nports);
}

static bool valid_address(const char *s)
{
    struct in6_addr a6;
    if (inet_pton(AF_INET6, s, &a6) == 1)
        return true;
    if (strlen(s) > GW_HOST_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
            return false;
    return true;
}

static int parse_vm(cfg_ctx *c, const char *path, json_t *v, gw_vm *vm)
{
    static const char *const keys[] = {"name", "address", "tags", "max_sessions",
                                       "recording", "ssh", "rdp", "jit", "tunnel_ports",
                                       NULL};
    char sub[PATH_MAX_LEN];
    const char *rec = NULL;
    if (want_object(c, path, v) || check_keys(c, path, v, keys) ||
        get_string(c, path, v, "name", true, &vm->name))
        return PST_E_CONFIG;
    path_key(sub, path, "name");
    if (!valid_name(vm->name))
        return fail(c, sub, "expected a name of letters, digits, '.', '_', '-' "
                            "(at most %d), got %s", GW_NAME_MAX, log_q(vm->name));
    if (get_string(c, path, v, "address", true, &vm->address))
        return PST_E_CONFIG;
    path_key(sub, path, "address");
    if (!valid_address(vm->address))
        return fail(c, sub, "expected an IP address or host name, got %s",
                    log_q(vm->address));
    if (get_string_list(c, path, v, "tags", true, &vm->tags, &vm->ntags) ||
        get_int(c, path, v, "max_sessions", false, 0, 1000000, &vm->max_sessions) ||
        get_string(c, path, v, "recording", false, &rec))
        return PST_E_CONFIG;
    vm->recording = c->cfg->recording.mode; /* parsed before the VMs */
    if (rec) {
        path_key(sub, path, "recording");
        if (parse_recording_mode(c, sub, rec, &vm->recording))
            return PST_E_CONFIG;
    }
    if (parse_vm_ssh(c, path, v, &vm->ssh) || parse_vm_rdp(c, path, v, &vm->rdp) ||
        parse_vm_jit(c, path, v, &vm->jit) ||
        parse_port_list(c, path, v, "tunnel_ports", &vm->tunnel_ports, &vm->ntunnel_ports))
        return PST_E_CONFIG;
    if (!vm->ssh.enabled && !vm->rdp.enabled)
        return fail(c, path, "expected at least one of \"ssh\" or \"rdp\"");
    return 0;
}

static int parse_vms(cfg_ctx *c, json_t *root)
{
    gw_config *cfg = c->cfg;
    json_t *vms = json_object_get(root, "vms");
    if (!vms)
        return 0;
    if (!json_is_array(vms))
        return fail(c, "vms", "expected a list of VM objects, got %s", json_kind(vms));
    size_t n = json_array_size(vms);
    if (n == 0)
        return 0;
    cfg->vms = calloc(n, sizeof(*cfg->vms));
    if (!cfg->vms)
        return fail(c, "vms", "out of memory");
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX_LEN];
        path_index(path, "vms", i);
        gw_vm *vm = &cfg->vms[cfg->nvms++];
        if (parse_vm(c, path, json_array_get(vms, i), vm))
            return PST_E_CONFIG;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->vms[j].name, vm->name) == 0) {
                char sub[PATH_MAX_LEN];
                path_key(sub, path, "name");
                return fail(c, sub, "expected a unique name; %s is already vms[%zu]",
                            log_q(vm->name), j);
            }
        }
    }
    return 0;
}

static int parse_root(cfg_ctx *c, json_t *root)
{
    static const char *const keys[] = {"listen", "http_redirect", "state_dir", "tls",
                                       "origins", "log_level", "users_file", "roles",
                                       "limits", "auth", "audit", "recording", "instance",
                                       "vms", NULL};
    gw_config *cfg = c->cfg;
    const char *level = NULL;
    if (want_object(c, "", root) || check_keys(c, "", root, keys) ||
        parse_listen(c, root))
        return PST_E_CONFIG;
    json_t *redirect = json_object_get(root, "http_redirect");
    if (redirect) {
        if (parse_addr_value(c, "http_redirect", redirect, &cfg->http_redirect))
            return PST_E_CONFIG;
        cfg->has_http_redirect = true;
    }
    if (get_string(c, "", root, "state_dir", true, &cfg->state_dir) ||
        parse_tls(c, root) || parse_origins(c, root) ||
        get_string(c, "", root, "log_level", false, &level) ||
        get_string(c, "", root, "users_file", false, &cfg->users_file) ||
        parse_roles(c, root) || parse_limits(c, root) || parse_auth(c, root) ||
        parse_audit(c, root) || parse_recording(c, root) ||
        get_string(c, "", root, "instance", false, &cfg->instance) || parse_vms(c, root))
        return PST_E_CONFIG;
    if (cfg->instance && !valid_name(cfg->instance))
        return fail(c, "instance", "expected a name of letters, digits, '.', '_', '-' "
                                   "(at most %d), got %s", GW_NAME_MAX, log_q(cfg->instance));
    cfg->log_level = LOG_INFO;
    if (level && log_level_parse(level, &cfg->log_level) != 0)
        return fail(c, "log_level", "expected \"debug\", \"info\", \"warn\" or "
                                    "\"error\", got %s", log_q(level));
    return 0;
}

int gw_config_parse(const char *name, const char *text, size_t len, gw_config **out,
                    char *err, size_t errlen)
{
    cfg_ctx c = {.file = name, .err = err, .errlen = errlen};
    json_error_t jerr;
    *out = NULL;

    /* Duplicate keys would let a later "tls" silently replace an earlier one. */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "%s:%d:%d: invalid JSON: %s", name, jerr.line,
                 jerr.column, jerr.text);
        one_line(err);
        return PST_E_CONFIG;
    }
    c.cfg = calloc(1, sizeof(*c.cfg));
    if (!c.cfg || !(c.cfg->path = strdup(name))) {
        free(c.cfg);
        json_decref(root);
        snprintf(err, errlen, "%s: out of memory", name);
        return -ENOMEM;
    }
    c.cfg->doc_ = root;
    if (parse_root(&c, root) != 0) {
        gw_config_free(c.cfg);
        return PST_E_CONFIG;
    }
    *out = c.cfg;
    return 0;
}

int gw_config_load(const char *path, gw_config **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return PST_E_CONFIG;
    }
    char *buf = malloc(GW_CONFIG_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    size_t n = fread(buf, 1, GW_CONFIG_MAX_BYTES + 1, f);
    int read_err = ferror(f);
    fclose(f);
    int rc;
    if (read_err) {
        snprintf(err, errlen, "%s: cannot read", path);
        rc = PST_E_CONFIG;
    } else if (n > GW_CONFIG_MAX_BYTES) {
        snprintf(err, errlen, "%s: larger than %u bytes", path, GW_CONFIG_MAX_BYTES);
        rc = PST_E_CONFIG;
    } else {
        rc = gw_config_parse(path, buf, n, out, err, errlen);
    }
    free(buf);
    return rc;
}

void gw_config_free(gw_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nvms; i++) {
        free(cfg->vms[i].tags);
        free(cfg->vms[i].jit.ports);
        free(cfg->vms[i].tunnel_ports);
    }
    free(cfg->vms);
    for (size_t i = 0; i < cfg->nroles; i++)
        free(cfg->roles[i].selectors);
    free(cfg->roles);
    free(cfg->origins);
    for (size_t i = 0; i < cfg->nowned_; i++)
        free(cfg->owned_[i]);
    free(cfg->owned_);
    free(cfg->listen);
    json_decref(cfg->doc_);
    free(cfg->path);
    free(cfg);
}

const gw_vm *gw_config_find_vm(const gw_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nvms; i++)
        if (strcmp(cfg->vms[i].name, name) == 0)
            return &cfg->vms[i];
    return NULL;
}

auth_target gw_vm_target(const gw_vm *vm)
{
    auth_target t = {.name = vm->name, .tags = (const char *const *)vm->tags,
                     .ntags = vm->ntags};
    return t;
}

bool gw_vm_management_port(const gw_vm *vm, int port)
{
    if ((vm->ssh.enabled && vm->ssh.port == port) || (vm->rdp.enabled && vm->rdp.port == port))
        return true;
    for (size_t i = 0; i < vm->ntunnel_ports; i++)
        if (vm->tunnel_ports[i] == port)
            return true;
    return false;
}
