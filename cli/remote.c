/* login, logout, status, tunnel, ssh, rdp: see remote.h. */
#include "cli/remote.h"

#include "cli/credentials.h"
#include "cli/exit_codes.h"
#include "cli/https.h"
#include "cli/trust.h"
#include "cli/tunnel.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define SECRET_MAX 1024

typedef struct command {
    const char *name;
    const char *synopsis;
    const char *summary;
    const char *details;
    cli_command_fn run;
} command;

static const command *find_command(const char *name);

/* What every command may be given. */
typedef struct options {
    const char *gateway, *ca, *pin, *user, *vm, *listen;
    int port;
    bool stdio, password_stdin, quiet, help;
    long expires_in;
    char **rest;        /* after "--" */
    int nrest;
    const char *positional;
} options;

/* What a command acts with, resolved from options, environment and the
 * stored login. */
typedef struct session {
    cli_gateway gw;
    cli_trust trust;
    cli_credentials creds;
    bool have_creds;        /* stored, and for this gateway */
    const char *token;      /* POSTERN_TOKEN or creds.token */
    char pin_text[128];
    char ca_path[PATH_MAX];
} session;

__attribute__((format(printf, 2, 3))) static int usage_error(const command *c,
                                                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "postern %s: ", c->name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: postern %s %s\n(postern %s --help says more)\n", c->name,
            c->synopsis, c->name);
    return CLI_USAGE;
}

static void print_help(const command *c)
{
    printf("usage: postern %s %s\n\n%s\n\n%s", c->name, c->synopsis, c->summary, c->details);
}

static int parse_port(const char *s, int *out)
{
    char *e;
    long p = strtol(s, &e, 10);
    if (!*s || *e || p < 1 || p > 65535)
        return -1;
    *out = (int)p;
    return 0;
}

/* Options a command does not take are refused, so a typo never passes. */
static int parse(const command *c, int argc, char **argv, const char *allowed, options *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            o->help = true;
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("postern %s\n", POSTERN_VERSION);
            exit(CLI_OK);
        }
        if (strcmp(a, "--") == 0) {
            o->rest = argv + i + 1;
            o->nrest = argc - i - 1;
            break;
        }
        if (a[0] != '-') {
            if (!strstr(allowed, " NAME ") || o->positional)
                return usage_error(c, "unexpected argument '%s'", a);
            o->positional = a;
            continue;
        }
        char key[40];
        snprintf(key, sizeof(key), " %s ", a);
        if (!strstr(allowed, key))
            return usage_error(c, "unknown option '%s'", a);
        bool flag = strcmp(a, "--stdio") == 0 || strcmp(a, "--password-stdin") == 0 ||
                    strcmp(a, "--quiet") == 0;
        if (flag) {
            if (strcmp(a, "--stdio") == 0)
                o->stdio = true;
            else if (strcmp(a, "--quiet") == 0)
                o->quiet = true;
            else
                o->password_stdin = true;
            continue;
        }
        if (i + 1 >= argc)
            return usage_error(c, "%s needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--gateway") == 0)
            o->gateway = v;
        else if (strcmp(a, "--ca") == 0)
            o->ca = v;
        else if (strcmp(a, "--pin") == 0)
            o->pin = v;
        else if (strcmp(a, "--user") == 0)
            o->user = v;
        else if (strcmp(a, "--vm") == 0)
            o->vm = v;
        else if (strcmp(a, "--listen") == 0)
            o->listen = v;
        else if (strcmp(a, "--port") == 0) {
            if (parse_port(v, &o->port) != 0)
                return usage_error(c, "--port wants a port from 1 to 65535, not '%s'", v);
        } else if (strcmp(a, "--expires-in") == 0) {
            char *e;
            o->expires_in = strtol(v, &e, 10);
            if (*e || o->expires_in < 1)
                return usage_error(c, "--expires-in wants seconds, not '%s'", v);
        }
    }
    if (o->ca && o->pin)
        return usage_error(c, "%s", "--ca and --pin exclude each other: a pin trusts one "
                                    "certificate, a CA the ones it signs");
    return 0;
}

/* The start every command shares: its options and --help. Returns 1 to
 * go on; 0 when the command is done, with *rc its exit code. */
static int begin(const char *name, int argc, char **argv, const char *allowed,
                 const command **c, options *o, int *rc)
{
    *c = find_command(name);
    if ((*rc = parse(*c, argc, argv, allowed, o)) != 0)
        return 0;
    if (o->help) {
        print_help(*c);
        *rc = CLI_OK;
        return 0;
    }
    return 1;
}

static bool same_gateway(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    while (la && a[la - 1] == '/')
        la--;
    while (lb && b[lb - 1] == '/')
        lb--;
    return la == lb && strncmp(a, b, la) == 0;
}

/* Resolves the gateway, the trust and the token. need_token: fail with
 * CLI_NOT_LOGGED_IN when there is none. */
static int open_session(const command *c, const options *o, bool need_token, session *s)
{
    memset(s, 0, sizeof(*s));
    char err[512];
    int lrc = cli_credentials_load(&s->creds, err, sizeof(err));
    if (lrc < 0) {
        fprintf(stderr, "postern %s: %s\n", c->name, err);
        if (need_token && !getenv("POSTERN_TOKEN"))
            return CLI_NOT_LOGGED_IN;
    }
    const char *url = o->gateway ? o->gateway : getenv("POSTERN_GATEWAY");
    if (!url && lrc == 0)
        url = s->creds.gateway;
    if ((!url || !*url) && strcmp(c->name, "login") != 0) {
        fprintf(stderr, "postern %s: not logged in: run `postern login --gateway "
                        "https://HOST[:PORT]` (or give --gateway and POSTERN_TOKEN)\n",
                c->name);
        return CLI_NOT_LOGGED_IN;
    }
    if (!url || !*url) {
        fprintf(stderr, "postern %s: which gateway? give --gateway https://HOST[:PORT] (or set "
                        "POSTERN_GATEWAY), or run `postern login` first\n",
                c->name);
        return strcmp(c->name, "login") != 0 ? CLI_NOT_LOGGED_IN : CLI_USAGE;
    }
    if (cli_gateway_parse(url, &s->gw, err, sizeof(err)) != 0) {
        fprintf(stderr, "postern %s: %s\n", c->name, err);
        return CLI_USAGE;
    }
    s->have_creds = lrc == 0 && same_gateway(s->creds.gateway, s->gw.url);
    const char *pin = o->pin, *ca = o->ca;
    if (!pin && !ca && s->have_creds) {
        pin = s->creds.pin[0] ? s->creds.pin : NULL;
        ca = s->creds.ca_file[0] ? s->creds.ca_file : NULL;
    }
    if (pin) {
        if (cli_pin_parse(pin, s->trust.pin) != 0) {
            fprintf(stderr, "postern %s: --pin wants the certificate's SHA-256 as posternd "
                            "prints it (SHA256:AB:CD:...), not '%s'\n",
                    c->name, pin);
            return CLI_USAGE;
        }
        s->trust.has_pin = true;
        snprintf(s->pin_text, sizeof(s->pin_text), "%s", pin);
    } else if (ca) {
        if (!realpath(ca, s->ca_path)) {
            fprintf(stderr, "postern %s: cannot read the CA file %s: %s\n", c->name, ca,
                    strerror(errno));
            return CLI_USAGE;
        }
        s->trust.ca_file = s->ca_path;
    }
    const char *env_token = getenv("POSTERN_TOKEN");
    if (env_token && *env_token)
        s->token = env_token;
    else if (s->have_creds)
        s->token = s->creds.token;
    if (need_token && !s->token) {
        if (lrc == 0)
            fprintf(stderr, "postern %s: not logged in to %s (the stored login is for %s): run "
                            "`postern login --gateway %s`\n",
                    c->name, s->gw.url, s->creds.gateway, s->gw.url);
        else
            fprintf(stderr, "postern %s: not logged in: run `postern login --gateway %s`\n",
                    c->name, s->gw.url);
        return CLI_NOT_LOGGED_IN;
    }
    return CLI_OK;
}

static void close_session(session *s)
{
    cli_credentials_wipe(&s->creds);
}

static int64_t token_expires(const session *s)
{
    return s->token == s->creds.token ? s->creds.expires : 0;
}

/* A request with the bearer token. */
static int api(const command *c, session *s, const char *method, const char *path,
               const char *body, cli_response *r)
{
    char hdr[400], err[700];
    hdr[0] = '\0';
    if (s->token)
        snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", s->token);
    int rc = cli_https_request(&s->gw, &s->trust, method, path, hdr, body, r, err, sizeof(err));
    OPENSSL_cleanse(hdr, sizeof(hdr));
    if (rc != 0)
        fprintf(stderr, "postern %s: %s\n", c->name, err);
    return rc;
}

static int token_refused(const command *c, const session *s)
{
    int64_t exp = token_expires(s);
    if (exp && time(NULL) >= exp) {
        fprintf(stderr, "postern %s: your login to %s has expired: run `postern login`\n",
                c->name, s->gw.url);
        return CLI_TOKEN_EXPIRED;
    }
    fprintf(stderr, "postern %s: the gateway refused the token (revoked, expired, or not one "
                    "of %s's): run `postern login`\n",
            c->name, s->gw.url);
    return CLI_TOKEN_INVALID;
}

/* ---- reading what the user types ----------------------------------------- */

static int read_line(FILE *in, char *buf, size_t len)
{
    if (!fgets(buf, (int)len, in))
        return -1;
    size_t n = strlen(buf);
    if (n == len - 1 && buf[n - 1] != '\n')
        return -1;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return 0;
}

/* From the terminal (not stdin: ssh or a pipe may hold stdin), without
 * echo when secret. */
static int ask(const char *prompt, bool secret, char *buf, size_t len)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty) {
        fprintf(stderr, "postern: no terminal to ask on; use --user NAME --password-stdin\n");
        return -1;
    }
    struct termios old, quiet;
    bool restore = false;
    fprintf(tty, "%s", prompt);
    fflush(tty);
    if (secret && tcgetattr(fileno(tty), &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(fileno(tty), TCSAFLUSH, &quiet) == 0;
    }
    int rc = read_line(tty, buf, len);
    if (restore) {
        tcsetattr(fileno(tty), TCSAFLUSH, &old);
        fprintf(tty, "\n");
    }
    fclose(tty);
    return rc;
}

/* ---- login ------------------------------------------------------------------ */

static int post_login(const command *c, session *s, const char *user, const char *password,
                      const char *totp, cli_response *r)
{
    json_t *b = json_pack("{s:s,s:s}", "user", user, "password", password);
    if (b && totp)
        json_object_set_new(b, "totp", json_string(totp));
    char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    /* jansson's copy of the password goes with b: wipe it first. */
    json_t *pw = b ? json_object_get(b, "password") : NULL;
    if (pw)
        OPENSSL_cleanse((char *)json_string_value(pw), json_string_length(pw));
    json_decref(b);
    if (!body)
        return CLI_FAILED;
    char err[700];
    int rc = cli_https_request(&s->gw, &s->trust, "POST", "/api/login", NULL, body, r, err,
                               sizeof(err));
    OPENSSL_cleanse(body, strlen(body));
    free(body);
    if (rc != 0)
        fprintf(stderr, "postern %s: %s\n", c->name, err);
    return rc;
}

static bool mfa_required(const cli_response *r)
{
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    bool yes = json_is_true(json_object_get(j, "mfa_required"));
    json_decref(j);
    return yes;
}

static int cmd_login(int argc, char **argv)
{
    const command *c;
    options o;
    int rc;
    if (!begin("login", argc, argv, " --gateway --ca --pin --user --password-stdin --expires-in ", &c, &o, &rc))
        return rc;
    session s;
    if ((rc = open_session(c, &o, false, &s)) != 0)
        return rc;
    char user[128], password[SECRET_MAX], totp[32], cookie_hdr[1400], body_tok[300];
    cli_response r = {0};
    password[0] = totp[0] = '\0';
    if (o.user)
        snprintf(user, sizeof(user), "%s", o.user);
    else if (ask("User: ", false, user, sizeof(user)) != 0)
        return CLI_USAGE;
    if (o.password_stdin ? read_line(stdin, password, sizeof(password)) != 0
                         : ask("Password: ", true, password, sizeof(password)) != 0) {
        fprintf(stderr, "postern login: no password given\n");
        rc = CLI_USAGE;
        goto out;
    }
    if ((rc = post_login(c, &s, user, password, NULL, &r)) != 0)
        goto out;
    if (r.status == 401 && mfa_required(&r)) {
        cli_response_free(&r);
        if (o.password_stdin ? read_line(stdin, totp, sizeof(totp)) != 0
                             : ask("One-time code: ", false, totp, sizeof(totp)) != 0) {
            fprintf(stderr, "postern login: a one-time code is required (with --password-stdin: "
                            "on the line after the password)\n");
            rc = CLI_USAGE;
            goto out;
        }
        if ((rc = post_login(c, &s, user, password, totp, &r)) != 0)
            goto out;
    }
    OPENSSL_cleanse(password, sizeof(password));
    if (r.status != 200 || !r.cookie[0]) {
        fprintf(stderr, "postern login: %s\n", cli_response_error(&r, "login failed"));
        rc = CLI_FAILED; /* the gateway's words say why: wrong password, throttled, ... */
        goto out;
    }
    /* A token for this machine, then the browser-style session is ended. */
    snprintf(cookie_hdr, sizeof(cookie_hdr), "Cookie: postern_session=%s\r\nOrigin: %s\r\n",
             r.cookie, s.gw.origin);
    cli_response_free(&r);
    char host[56] = "unknown";
    gethostname(host, sizeof(host));
    host[sizeof(host) - 1] = '\0';
    /* Token names are 1 to 64 of [A-Za-z0-9._@-]: "cli@HOST". */
    char name[65];
    snprintf(name, sizeof(name), "cli@%s", host);
    for (char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-' || *p == '@'))
            *p = '-';
    json_t *tb = json_pack("{s:s}", "name", name);
    if (o.expires_in)
        json_object_set_new(tb, "expires_in", json_integer(o.expires_in));
    char *tbody = json_dumps(tb, JSON_COMPACT);
    json_decref(tb);
    snprintf(body_tok, sizeof(body_tok), "%s", tbody ? tbody : "{}");
    free(tbody);
    char err[700];
    if ((rc = cli_https_request(&s.gw, &s.trust, "POST", "/api/tokens", cookie_hdr, body_tok, &r,
                                err, sizeof(err))) != 0) {
        fprintf(stderr, "postern login: %s\n", err);
        goto out_cookie;
    }
    json_t *j = r.status == 201 && r.body ? json_loads(r.body, 0, NULL) : NULL;
    const char *token = json_string_value(json_object_get(j, "token"));
    const char *id = json_string_value(json_object_get(j, "id"));
    if (!token || !id) {
        fprintf(stderr, "postern login: the gateway issued no token: %s\n",
                cli_response_error(&r, "unexpected answer"));
        json_decref(j);
        rc = CLI_FAILED;
        goto out_cookie;
    }
    cli_credentials creds;
    memset(&creds, 0, sizeof(creds));
    snprintf(creds.gateway, sizeof(creds.gateway), "%s", s.gw.url);
    snprintf(creds.user, sizeof(creds.user), "%s", user);
    snprintf(creds.token, sizeof(creds.token), "%s", token);
    snprintf(creds.token_id, sizeof(creds.token_id), "%s", id);
    creds.expires = (int64_t)json_integer_value(json_object_get(j, "expires"));
    if (s.trust.ca_file)
        snprintf(creds.ca_file, sizeof(creds.ca_file), "%s", s.trust.ca_file);
    if (s.trust.has_pin)
        snprintf(creds.pin, sizeof(creds.pin), "%s", s.pin_text);
    json_t *jt = json_object_get(j, "token");
    OPENSSL_cleanse((char *)json_string_value(jt), json_string_length(jt));
    json_decref(j);
    if (cli_credentials_save(&creds, err, sizeof(err)) != 0) {
        fprintf(stderr, "postern login: %s\n", err);
        rc = CLI_FAILED;
    } else {
        char path[1024], when[64];
        cli_credentials_path(path, sizeof(path));
        time_t t = (time_t)creds.expires;
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", gmtime(&t));
        printf("logged in to %s as %s; the token expires %s (stored in %s)\n", creds.gateway,
               creds.user, when, path);
        rc = CLI_OK;
    }
    cli_credentials_wipe(&creds);
out_cookie:
    cli_response_free(&r);
    /* The cookie session served only to issue the token. */
    if (cli_https_request(&s.gw, &s.trust, "POST", "/api/logout", cookie_hdr, NULL, &r, err,
                          sizeof(err)) == 0)
        cli_response_free(&r);
    OPENSSL_cleanse(cookie_hdr, sizeof(cookie_hdr));
out:
    cli_response_free(&r);
    OPENSSL_cleanse(password, sizeof(password));
    OPENSSL_cleanse(totp, sizeof(totp));
    close_session(&s);
    return rc;
}

/* ---- logout, status --------------------------------------------------------- */

static int cmd_logout(int argc, char **argv)
{
    const command *c;
    options o;
    int rc;
    if (!begin("logout", argc, argv, " --gateway --ca --pin ", &c, &o, &rc))
        return rc;
    session s;
    if ((rc = open_session(c, &o, false, &s)) != 0)
        return rc;
    if (!s.have_creds) {
        fprintf(stderr, "postern logout: not logged in to %s\n", s.gw.url);
        close_session(&s);
        return CLI_NOT_LOGGED_IN;
    }
    s.token = s.creds.token; /* revoke the stored one, whatever POSTERN_TOKEN says */
    char path[200], err[300];
    snprintf(path, sizeof(path), "/api/tokens/%s", s.creds.token_id);
    cli_response r;
    rc = api(c, &s, "DELETE", path, NULL, &r);
    if (rc != 0) {
        fprintf(stderr, "postern logout: the token was not revoked and stays stored; try again, "
                        "or remove the stored login by hand\n");
    } else if (r.status == 200 || r.status == 401 || r.status == 404) {
        if (cli_credentials_remove(err, sizeof(err)) != 0) {
            fprintf(stderr, "postern logout: %s\n", err);
            rc = CLI_FAILED;
        } else {
            printf(r.status == 200 ? "logged out of %s: the token is revoked\n"
                                   : "logged out of %s (the token was no longer valid)\n",
                   s.gw.url);
            rc = CLI_OK;
        }
    } else {
        fprintf(stderr, "postern logout: %s\n", cli_response_error(&r, "the gateway refused"));
        rc = CLI_FAILED;
    }
    cli_response_free(&r); /* zeroed by the request even when it failed */
    close_session(&s);
    return rc;
}

static int cmd_status(int argc, char **argv)
{
    const command *c;
    options o;
    int rc;
    if (!begin("status", argc, argv, " --gateway --ca --pin ", &c, &o, &rc))
        return rc;
    session s;
    if ((rc = open_session(c, &o, true, &s)) != 0)
        return rc;
    cli_response r;
    if ((rc = api(c, &s, "GET", "/api/me", NULL, &r)) != 0) {
        close_session(&s);
        return rc;
    }
    if (r.status == 401) {
        rc = token_refused(c, &s);
    } else if (r.status != 200) {
        fprintf(stderr, "postern status: %s\n", cli_response_error(&r, "unexpected answer"));
        rc = CLI_FAILED;
    } else {
        json_t *j = json_loads(r.body, 0, NULL);
        printf("gateway: %s\nuser:    %s\n", s.gw.url,
               json_string_value(json_object_get(j, "user")) ?: "?");
        if (token_expires(&s)) {
            char when[64];
            time_t t = (time_t)token_expires(&s);
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", gmtime(&t));
            printf("token:   valid until %s\n", when);
        } else {
            printf("token:   valid (from POSTERN_TOKEN)\n");
        }
        json_t *vms = json_object_get(j, "vms");
        printf("VMs:    ");
        for (size_t i = 0; i < json_array_size(vms); i++)
            printf(" %s", json_string_value(json_object_get(json_array_get(vms, i), "name")));
        printf("%s\n", json_array_size(vms) ? "" : " (none)");
        json_decref(j);
        rc = CLI_OK;
    }
    cli_response_free(&r);
    close_session(&s);
    return rc;
}

/* ---- tunnel, ssh, rdp --------------------------------------------------------- */

static int run_tunnel(session *s, const char *vm, int port, bool stdio, const char *listen,
                      char *const *spawn, bool quiet)
{
    cli_tunnel_opts t = {.gateway = &s->gw,
                         .trust = &s->trust,
                         .token = s->token,
                         .token_expires = token_expires(s),
                         .vm = vm,
                         .port = port,
                         .stdio = stdio,
                         .listen = listen,
                         .spawn_argv = spawn,
                         .quiet = quiet};
    return cli_tunnel_run(&t);
}

static int cmd_tunnel(int argc, char **argv)
{
    const command *c;
    options o;
    int rc;
    if (!begin("tunnel", argc, argv, " --gateway --ca --pin --vm --port --stdio --listen --quiet ", &c, &o, &rc))
        return rc;
    if (!o.vm)
        return usage_error(c, "%s", "--vm NAME is required");
    if (!o.port)
        return usage_error(c, "%s", "--port N is required (the VM's SSH or RDP port)");
    if (o.stdio == (o.listen != NULL))
        return usage_error(c, "%s", "give one of --stdio or --listen HOST:PORT");
    session s;
    if ((rc = open_session(c, &o, true, &s)) != 0)
        return rc;
    rc = run_tunnel(&s, o.vm, o.port, o.stdio, o.listen, NULL, o.quiet);
    close_session(&s);
    return rc;
}

/* The VM's port for a protocol, from /api/vms; 0 when not said. */
static int lookup_port(const command *c, session *s, const char *vm, const char *proto,
                       int *code)
{
    cli_response r;
    *code = CLI_OK;
    if ((*code = api(c, s, "GET", "/api/vms", NULL, &r)) != 0)
        return 0;
    if (r.status == 401) {
        cli_response_free(&r);
        *code = token_refused(c, s);
        return 0;
    }
    int port = 0;
    json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    json_t *list = json_is_array(j) ? j : json_object_get(j, "vms");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *v = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(v, "name"));
        if (name && strcmp(name, vm) == 0) {
            json_t *p = json_object_get(json_object_get(v, "ports"), proto);
            port = json_is_integer(p) ? (int)json_integer_value(p) : 0;
            if (!port) {
                fprintf(stderr, "postern %s: %s offers no %s\n", c->name, vm, proto);
                *code = CLI_PORT_NOT_ALLOWED;
            }
            json_decref(j);
            cli_response_free(&r);
            return port;
        }
    }
    json_decref(j);
    cli_response_free(&r);
    fprintf(stderr, "postern %s: no VM named %s is configured, or none you may reach\n", c->name,
            vm);
    *code = CLI_UNKNOWN_VM;
    return 0;
}

/* What `postern ssh` and `postern rdp` share: the VM's NAME, the
 * session, and the VM's port for proto (--port, else /api/vms). Returns
 * the port; 0 when the command is done, with *rc its exit code. */
static int begin_vm(const char *name, const char *proto, int argc, char **argv, options *o,
                    session *s, int *rc)
{
    const command *c;
    if (!begin(name, argc, argv, " NAME --gateway --ca --pin --port ", &c, o, rc))
        return 0;
    if (!o->positional) {
        *rc = usage_error(c, "%s", "which VM? give its NAME");
        return 0;
    }
    if ((*rc = open_session(c, o, true, s)) != 0)
        return 0;
    int port = o->port ? o->port : lookup_port(c, s, o->positional, proto, rc);
    if (!port)
        close_session(s);
    return port;
}

/* Quotes for the shell that runs ssh's ProxyCommand. */
static void shell_quote(char *out, size_t len, const char *s)
{
    size_t w = 0;
    if (w + 1 < len)
        out[w++] = '\'';
    for (; *s && w + 5 < len; s++) {
        if (*s == '\'') {
            memcpy(out + w, "'\\''", 4);
            w += 4;
        } else if (*s == '%') { /* ssh expands % in ProxyCommand */
            out[w++] = '%';
            out[w++] = '%';
        } else {
            out[w++] = *s;
        }
    }
    if (w + 1 < len)
        out[w++] = '\'';
    out[w] = '\0';
}

static int self_path(char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len - 1);
    if (n <= 0)
        return -1;
    out[n] = '\0';
    return 0;
}

static int cmd_ssh(int argc, char **argv)
{
    options o;
    session s;
    int rc;
    int port = begin_vm("ssh", "ssh", argc, argv, &o, &s, &rc);
    if (!port)
        return rc;
    char self[PATH_MAX], q[4][PATH_MAX + 16], proxy[4 * PATH_MAX + 200];
    if (self_path(self, sizeof(self)) != 0) {
        close_session(&s);
        return CLI_FAILED;
    }
    shell_quote(q[0], sizeof(q[0]), self);
    shell_quote(q[1], sizeof(q[1]), s.gw.url);
    shell_quote(q[2], sizeof(q[2]), o.positional);
    q[3][0] = '\0';
    const char *trust_opt = "";
    if (s.trust.has_pin && o.pin) {
        trust_opt = " --pin ";
        shell_quote(q[3], sizeof(q[3]), o.pin);
    } else if (s.trust.ca_file && o.ca) {
        trust_opt = " --ca ";
        shell_quote(q[3], sizeof(q[3]), s.trust.ca_file);
    }
    snprintf(proxy, sizeof(proxy), "ProxyCommand=%s tunnel --gateway %s%s%s --vm %s --port %d "
                                   "--stdio",
             q[0], q[1], trust_opt, q[3], q[2], port);
    const char *ssh = getenv("POSTERN_SSH");
    ssh = ssh && *ssh ? ssh : "ssh";
    char **args = calloc((size_t)o.nrest + 5, sizeof(char *));
    if (!args) {
        close_session(&s);
        return CLI_FAILED;
    }
    int n = 0;
    args[n++] = (char *)ssh;
    args[n++] = "-o";
    args[n++] = proxy;
    args[n++] = (char *)o.positional;
    for (int i = 0; i < o.nrest; i++)
        args[n++] = o.rest[i];
    args[n] = NULL;
    close_session(&s);
    fflush(NULL);
    execvp(ssh, args);
    fprintf(stderr, "postern ssh: cannot run %s: %s\n", ssh, strerror(errno));
    free(args);
    return CLI_FAILED;
}

static int cmd_rdp(int argc, char **argv)
{
    options o;
    session s;
    int rc;
    int port = begin_vm("rdp", "rdp", argc, argv, &o, &s, &rc);
    if (!port)
        return rc;
    const char *prog = getenv("POSTERN_XFREERDP");
    prog = prog && *prog ? prog : "xfreerdp";
    char **args = calloc((size_t)o.nrest + 3, sizeof(char *));
    if (!args) {
        close_session(&s);
        return CLI_FAILED;
    }
    int n = 0;
    args[n++] = (char *)prog;
    args[n++] = "/v:127.0.0.1:{port}";
    for (int i = 0; i < o.nrest; i++)
        args[n++] = o.rest[i];
    args[n] = NULL;
    rc = run_tunnel(&s, o.positional, port, false, "127.0.0.1:0", args, true);
    free(args);
    close_session(&s);
    return rc;
}

/* ---- the table -------------------------------------------------------------- */

#define TRUST_HELP                                                                           \
    "  --gateway URL   the gateway, https://HOST[:PORT] (default: POSTERN_GATEWAY, or the\n"  \
    "                  one you logged in to)\n"                                               \
    "  --ca FILE       trust the gateway's certificate if FILE's CA signed it\n"              \
    "  --pin SHA256:.. trust exactly the certificate with this fingerprint (posternd\n"       \
    "                  logs it at start: tls.certificate sha256=...)\n"                       \
    "Without --ca or --pin the system's CAs decide. There is no insecure mode.\n"

static const command commands[] = {
    {"login", "--gateway URL [--user NAME] [--password-stdin] [--expires-in SECONDS] [--ca FILE "
              "| --pin SHA256:...]",
     "Logs in to a gateway and stores an API token for the other commands.",
     "Asks for the user name, the password and, if the account has one, the one-time\n"
     "code, on the terminal without echo. --password-stdin reads the password (and a\n"
     "one-time code on the next line) from stdin, for scripts. The token is stored in\n"
     "$XDG_CONFIG_HOME/postern/credentials.json (~/.config/postern/), mode 0600, with\n"
     "the --ca or --pin given here, which later commands then use for that gateway.\n"
     "  --expires-in S  ask for a token that lives S seconds (default: the gateway's)\n" TRUST_HELP,
     cmd_login},
    {"logout", "[--gateway URL]", "Revokes the stored token at the gateway and forgets it.",
     "Exit 3 when not logged in.\n" TRUST_HELP, cmd_logout},
    {"status", "[--gateway URL]", "Says which gateway, as whom, until when, and which VMs.",
     "Asks the gateway, so an expired (exit 4) or revoked (exit 5) token shows.\n" TRUST_HELP,
     cmd_status},
    {"tunnel", "--vm NAME --port N (--stdio | --listen HOST:PORT) [--quiet]",
     "Carries TCP to a VM's management port through the gateway.",
     "  --stdio         one connection on stdin/stdout, e.g. as ssh's ProxyCommand:\n"
     "                    ssh -o ProxyCommand='postern tunnel --vm %h --port 22 --stdio' web01\n"
     "  --listen H:P    serve local connections on a loopback address, each through a\n"
     "                  tunnel of its own (port 0 picks one; the line on stderr says which)\n"
     "  --quiet         no line per connection\n"
     "The port must be one of the VM's management ports; the gateway checks your role,\n"
     "just-in-time grants and session caps as for the browser console.\n"
     "Exit codes: 3 not logged in, 4 token expired, 5 token revoked, 6 not permitted,\n"
     "7 JIT grant needed, 8 session cap reached, 9 not a management port, 10 VM\n"
     "unreachable or reset, 11 unknown VM, 12 certificate not trusted, 13 gateway\n"
     "unreachable.\n" TRUST_HELP,
     cmd_tunnel},
    {"ssh", "NAME [--port N] [-- SSH_ARGS...]",
     "Runs the system's ssh to VM NAME through a tunnel.",
     "Your own ssh, agent, keys and ~/.ssh/config apply; SSH_ARGS go to ssh after the\n"
     "host (e.g. -- -l alice uptime). The port is the VM's SSH port unless --port says\n"
     "otherwise. POSTERN_SSH names another ssh program.\n" TRUST_HELP,
     cmd_ssh},
    {"rdp", "NAME [--port N] [-- XFREERDP_ARGS...]",
     "Runs xfreerdp to VM NAME through a tunnel on a local port.",
     "XFREERDP_ARGS go to xfreerdp after /v:127.0.0.1:PORT (e.g. -- /u:alice /cert:tofu).\n"
     "Ends when xfreerdp does, with its exit status. POSTERN_XFREERDP names another\n"
     "program.\n" TRUST_HELP,
     cmd_rdp},
};

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

cli_command_fn cli_remote_command(const char *name)
{
    const command *c = find_command(name);
    return c ? c->run : NULL;
}

void cli_remote_usage(FILE *f)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
}
