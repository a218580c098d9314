/* Tests for gateway/config.c: parsing and validating the JSON config.
 *
 * Configs are written with single quotes for readability; j() turns them
 * into JSON. Error tests check that the message starts with
 * "test.json: <JSON path>: ", i.e. names the file and the exact key. */
#include "unit_test.h"

#include "common/err.h"
#include "gateway/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NAME "test.json"
#define TEXT_MAX 16384

static char text_buf[TEXT_MAX];
static char err_buf[1024];

/* JSON from a single-quoted config (no single quotes inside values). */
static const char *j(const char *s)
{
    size_t n = strlen(s);
    assert_true(n < TEXT_MAX);
    for (size_t i = 0; i <= n; i++)
        text_buf[i] = s[i] == '\'' ? '"' : s[i];
    return text_buf;
}

/* A minimal config with extra root members appended ("" for none). */
static const char *with(const char *extra)
{
    char tmp[TEXT_MAX];
    if (snprintf(tmp, sizeof(tmp), "{'listen': '127.0.0.1:8443', 'state_dir': '/var/lib/pst'%s%s}",
                 *extra ? ", " : "", extra) >= (int)sizeof(tmp))
        fail_msg("test config longer than %d bytes", TEXT_MAX);
    return j(tmp);
}

/* A config whose "vms" list is vms_json. */
static const char *with_vms(const char *vms_json)
{
    char tmp[TEXT_MAX];
    snprintf(tmp, sizeof(tmp), "'vms': %s", vms_json);
    return with(tmp);
}

/* Failures are reported at the caller's line, with the config. */
static void report_refused(const char *file, int line, const char *json, int rc)
{
    print_error("%s:%d: config refused (rc %d): %s\nconfig: %s\n", file, line, rc, err_buf,
                json);
    _fail(file, line);
}

static gw_config *parse_ok_(const char *json, const char *file, int line)
{
    gw_config *cfg = NULL;
    err_buf[0] = '\0';
    int rc = gw_config_parse(NAME, json, strlen(json), &cfg, err_buf, sizeof(err_buf));
    if (rc != 0 || !cfg)
        report_refused(file, line, json, rc);
    return cfg;
}

#define parse_ok(json) parse_ok_((json), __FILE__, __LINE__)

/* Asserts the config is refused with "test.json: PATH: ..." (path "" for
 * the root object; NULL for a JSON syntax error, "test.json:LINE:COL: invalid
 * JSON: ..."), the message containing `fragment` (if not NULL). */
static void parse_err_(const char *json, const char *path, const char *fragment,
                       const char *file, int line)
{
    gw_config *cfg = (gw_config *)1;
    memset(err_buf, 0, sizeof(err_buf));
    int rc = gw_config_parse(NAME, json, strlen(json), &cfg, err_buf, sizeof(err_buf));
    char prefix[300];
    if (!path)
        snprintf(prefix, sizeof(prefix), "%s:", NAME);
    else if (*path)
        snprintf(prefix, sizeof(prefix), "%s: %s: ", NAME, path);
    else
        snprintf(prefix, sizeof(prefix), "%s: ", NAME);
    if (rc != PST_E_CONFIG || cfg != NULL) {
        print_error("%s:%d: config accepted (rc %d), expected an error at %s\nconfig: %s\n",
                    file, line, rc, !path ? "(JSON syntax)" : *path ? path : "(root)", json);
        gw_config_free(rc == 0 ? cfg : NULL);
        _fail(file, line);
    }
    /* JSON syntax errors carry a position instead: "FILE:LINE:COL: invalid JSON". */
    int l = -1, c = -1, used = 0;
    if (!path && (sscanf(err_buf + strlen(prefix), "%d:%d: invalid JSON%n", &l, &c, &used) != 2 ||
                  used == 0 || l < 0 || c < 0)) {
        print_error("%s:%d: error \"%s\" is not \"%sLINE:COL: invalid JSON...\"\n", file,
                    line, err_buf, prefix);
        _fail(file, line);
    }
    if (strncmp(err_buf, prefix, strlen(prefix)) != 0) {
        print_error("%s:%d: error \"%s\" does not start with \"%s\"\n", file, line, err_buf,
                    prefix);
        _fail(file, line);
    }
    if (fragment && !strstr(err_buf, fragment)) {
        print_error("%s:%d: error \"%s\" does not contain \"%s\"\n", file, line, err_buf,
                    fragment);
        _fail(file, line);
    }
}

#define parse_err(json, path, fragment) parse_err_((json), (path), (fragment), __FILE__, __LINE__)

/* ---- whole configs ------------------------------------------------------- */

static void test_config__minimal(void **state)
{
    gw_config *cfg = parse_ok(with(""));
    assert_string_equal(cfg->path, NAME);
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0].host, "127.0.0.1");
    assert_int_equal(cfg->listen[0].port, 8443);
    assert_false(cfg->has_http_redirect);
    assert_string_equal(cfg->state_dir, "/var/lib/pst");
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    assert_int_equal(cfg->norigins, 1);
    assert_string_equal(cfg->origins[0], "https://127.0.0.1:8443");
    assert_int_equal(cfg->log_level, LOG_INFO);
    assert_null(cfg->users_file);
    assert_int_equal(cfg->nroles, 0);
    assert_int_equal(cfg->nvms, 0);
    assert_int_equal(cfg->limits.max_sessions, 1000);
    assert_int_equal(cfg->limits.max_sessions_per_user, 20);
    assert_int_equal(cfg->limits.shutdown_grace_seconds, 30);
    assert_int_equal(cfg->limits.handshake_timeout_seconds, 10);
    assert_int_equal(cfg->auth.session_idle_seconds, 1800);
    assert_int_equal(cfg->auth.session_max_seconds, 8 * 3600);
    assert_int_equal(cfg->auth.token_max_seconds, 90 * 86400);
    assert_memory_equal(&cfg->auth.throttle, &auth_throttle_default,
                        sizeof(auth_throttle_default));
    assert_null(gw_config_find_vm(cfg, "web01"));
    gw_config_free(cfg);
}

static const char full_config[] =
    "{\n"
    "  'listen': ['0.0.0.0:443', '[::1]:8443'],\n"
    "  'http_redirect': '0.0.0.0:80',\n"
    "  'state_dir': '/var/lib/postern',\n"
    "  'tls': {'cert': '/etc/pst/fullchain.pem', 'key': '/etc/pst/privkey.pem'},\n"
    "  'origins': ['https://bastion.example.com', 'https://bastion.example.com:8443'],\n"
    "  'log_level': 'debug',\n"
    "  'users_file': '/etc/pst/users.json',\n"
    "  'roles': {\n"
    "    'ops': {'vms': ['web*', 'tag:linux', 'db-?'],\n"
    "            'actions': ['ssh-login', 'ssh-admin-login', 'rdp-login', 'rdp-admin-login',\n"
    "                        'tunnel']},\n"
    "    'security': {'vms': ['*'], 'actions': ['auditor', 'approver', 'admin'],\n"
    "                 'mfa_required': true}\n"
    "  },\n"
    "  'limits': {'max_sessions': 500, 'max_sessions_per_user': 5,\n"
    "             'shutdown_grace_seconds': 0, 'handshake_timeout_seconds': 300},\n"
    "  'auth': {'session_idle_seconds': 600, 'session_max_seconds': 3600,\n"
    "           'token_max_seconds': 86400,\n"
    "           'throttle': {'free_failures': 0, 'max_delay_seconds': 30,\n"
    "                        'lock_failures': 5, 'lock_seconds': 300}},\n"
    "  'vms': [\n"
    "    {'name': 'web01', 'address': '10.0.1.11', 'tags': ['linux', 'prod'],\n"
    "     'max_sessions': 10, 'recording': 'on',\n"
    "     'ssh': {'port': 2222, 'host_key_sha256': "
    "'SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc0',\n"
    "             'username': 'deploy', 'key_file': '/etc/pst/keys/web01'}},\n"
    "    {'name': 'db.primary_1', 'address': 'db-primary.internal.example.com',\n"
    "     'recording': 'required',\n"
    "     'ssh': {'trust_on_first_use': true},\n"
    "     'jit': {'required': true, 'ports': [22, 5432], 'default_duration': 3600,\n"
    "             'max_duration': 14400}},\n"
    "    {'name': 'win-jump', 'address': 'fd00::20', 'recording': 'off',\n"
    "     'rdp': {'port': 3390,\n"
    "             'cert_sha256': "
    "'3A:9F:1C:07:B2:64:E8:5D:90:4E:AB:12:C7:F3:68:0D:5B:E1:29:84:76:AF:03:DC:41:9B:E7:2C:58:B0:"
    "6F:13',\n"
    "             'username': 'EXAMPLE\\\\support', 'password_file': '/etc/pst/win.pw'},\n"
    "     'ssh': {'host_key_sha256': 'SHA256:7Yq0k1pXo2vS8mW4tC6bJ9dR3hF5nL0aE2gU8iZ1xKw'}}\n"
    "  ]\n"
    "}\n";

static void test_config__full(void **state)
{
    gw_config *cfg = parse_ok(j(full_config));

    assert_int_equal(cfg->nlisten, 2);
    assert_string_equal(cfg->listen[0].host, "0.0.0.0");
    assert_int_equal(cfg->listen[0].port, 443);
    assert_string_equal(cfg->listen[1].host, "::1");
    assert_int_equal(cfg->listen[1].port, 8443);
    assert_true(cfg->has_http_redirect);
    assert_string_equal(cfg->http_redirect.host, "0.0.0.0");
    assert_int_equal(cfg->http_redirect.port, 80);
    assert_string_equal(cfg->state_dir, "/var/lib/postern");
    assert_string_equal(cfg->tls_cert, "/etc/pst/fullchain.pem");
    assert_string_equal(cfg->tls_key, "/etc/pst/privkey.pem");
    assert_int_equal(cfg->norigins, 2);
    assert_string_equal(cfg->origins[0], "https://bastion.example.com");
    assert_string_equal(cfg->origins[1], "https://bastion.example.com:8443");
    assert_int_equal(cfg->log_level, LOG_DEBUG);
    assert_string_equal(cfg->users_file, "/etc/pst/users.json");

    assert_int_equal(cfg->nroles, 2);
    assert_string_equal(cfg->roles[0].name, "ops");
    assert_int_equal(cfg->roles[0].nselectors, 3);
    assert_string_equal(cfg->roles[0].selectors[0], "web*");
    assert_string_equal(cfg->roles[0].selectors[1], "tag:linux");
    assert_string_equal(cfg->roles[0].selectors[2], "db-?");
    assert_int_equal(cfg->roles[0].actions, AUTH_ACT_SSH_LOGIN | AUTH_ACT_SSH_ADMIN_LOGIN |
                                                AUTH_ACT_RDP_LOGIN | AUTH_ACT_RDP_ADMIN_LOGIN |
                                                AUTH_ACT_TUNNEL);
    assert_string_equal(cfg->roles[1].name, "security");
    assert_int_equal(cfg->roles[1].nselectors, 1);
    assert_int_equal(cfg->roles[1].actions, AUTH_ACT_AUDITOR | AUTH_ACT_APPROVER | AUTH_ACT_ADMIN);
    assert_false(cfg->roles[0].mfa_required);
    assert_true(cfg->roles[1].mfa_required);

    assert_int_equal(cfg->limits.max_sessions, 500);
    assert_int_equal(cfg->limits.max_sessions_per_user, 5);
    assert_int_equal(cfg->limits.shutdown_grace_seconds, 0);
    assert_int_equal(cfg->limits.handshake_timeout_seconds, 300);

    assert_int_equal(cfg->auth.session_idle_seconds, 600);
    assert_int_equal(cfg->auth.session_max_seconds, 3600);
    assert_int_equal(cfg->auth.token_max_seconds, 86400);
    assert_int_equal(cfg->auth.throttle.free_failures, 0);
    assert_int_equal(cfg->auth.throttle.max_delay, 30);
    assert_int_equal(cfg->auth.throttle.lock_failures, 5);
    assert_int_equal(cfg->auth.throttle.lock_seconds, 300);

    assert_int_equal(cfg->nvms, 3);
    const gw_vm *web = gw_config_find_vm(cfg, "web01");
    assert_ptr_equal(web, &cfg->vms[0]);
    assert_string_equal(web->address, "10.0.1.11");
    assert_int_equal(web->ntags, 2);
    assert_string_equal(web->tags[0], "linux");
    assert_string_equal(web->tags[1], "prod");
    assert_int_equal(web->max_sessions, 10);
    assert_int_equal(web->recording, GW_REC_ON);
    assert_true(web->ssh.enabled);
    assert_int_equal(web->ssh.port, 2222);
    assert_string_equal(web->ssh.host_key_sha256,
                        "SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc0");
    assert_false(web->ssh.trust_on_first_use);
    assert_string_equal(web->ssh.username, "deploy");
    assert_string_equal(web->ssh.key_file, "/etc/pst/keys/web01");
    assert_false(web->rdp.enabled);
    assert_false(web->jit.required);
    assert_int_equal(web->jit.nports, 0);

    const gw_vm *db = gw_config_find_vm(cfg, "db.primary_1");
    assert_ptr_equal(db, &cfg->vms[1]);
    assert_int_equal(db->recording, GW_REC_REQUIRED);
    assert_int_equal(db->ntags, 0);
    assert_int_equal(db->max_sessions, 0);
    assert_true(db->ssh.enabled);
    assert_int_equal(db->ssh.port, 22);
    assert_null(db->ssh.host_key_sha256);
    assert_true(db->ssh.trust_on_first_use);
    assert_null(db->ssh.username);
    assert_true(db->jit.required);
    assert_int_equal(db->jit.nports, 2);
    assert_int_equal(db->jit.ports[0], 22);
    assert_int_equal(db->jit.ports[1], 5432);
    assert_int_equal(db->jit.default_duration, 3600);
    assert_int_equal(db->jit.max_duration, 14400);

    const gw_vm *win = gw_config_find_vm(cfg, "win-jump");
    assert_ptr_equal(win, &cfg->vms[2]);
    assert_string_equal(win->address, "fd00::20");
    assert_int_equal(win->recording, GW_REC_OFF);
    assert_true(win->rdp.enabled);
    assert_int_equal(win->rdp.port, 3390);
    assert_string_equal(win->rdp.cert_sha256, "3A:9F:1C:07:B2:64:E8:5D:90:4E:AB:12:C7:F3:68:"
                                              "0D:5B:E1:29:84:76:AF:03:DC:41:9B:E7:2C:58:B0:"
                                              "6F:13");
    assert_string_equal(win->rdp.username, "EXAMPLE\\support");
    assert_string_equal(win->rdp.password_file, "/etc/pst/win.pw");
    assert_true(win->ssh.enabled);

    assert_null(gw_config_find_vm(cfg, "web"));
    assert_null(gw_config_find_vm(cfg, "WEB01"));
    gw_config_free(cfg);
}

/* Keys may come in any order, and whitespace and CRLF do not matter. */
static void test_config__key_order_and_whitespace(void **state)
{
    gw_config *cfg = parse_ok(j("\r\n{ 'state_dir' :\t'/s' ,\r\n 'vms': [], 'roles': {},"
                                " 'listen' : '127.0.0.1:1' }\r\n"));
    assert_string_equal(cfg->listen[0].host, "127.0.0.1");
    assert_int_equal(cfg->listen[0].port, 1);
    assert_int_equal(cfg->nvms, 0);
    assert_int_equal(cfg->nroles, 0);
    gw_config_free(cfg);
}

static void test_config__load_file(void **state)
{
    const char *tmpdir = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/postern-ut-config-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    const char *json = with("'log_level': 'warn'");
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);

    gw_config *cfg = NULL;
    assert_int_equal(gw_config_load(tmpl, &cfg, err_buf, sizeof(err_buf)), 0);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, tmpl);
    assert_int_equal(cfg->log_level, LOG_WARN);
    gw_config_free(cfg);

    /* Errors from a file name it. */
    fd = open(tmpl, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    json = with("'log_level': 'loud'");
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    cfg = (gw_config *)1;
    assert_int_equal(gw_config_load(tmpl, &cfg, err_buf, sizeof(err_buf)), PST_E_CONFIG);
    assert_null(cfg);
    assert_starts_with(err_buf, tmpl);
    assert_contains(err_buf, ": log_level: ");
    unlink(tmpl);

    /* A missing file. */
    cfg = (gw_config *)1;
    assert_int_equal(gw_config_load(tmpl, &cfg, err_buf, sizeof(err_buf)), PST_E_CONFIG);
    assert_null(cfg);
    assert_starts_with(err_buf, tmpl);
    assert_contains(err_buf, strerror(ENOENT));
}

static void test_config__load_too_large(void **state)
{
    const char *tmpdir = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/postern-ut-big-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    /* Valid JSON padded with whitespace past the limit. */
    const char *json = with("");
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    assert_int_equal(ftruncate(fd, (off_t)GW_CONFIG_MAX_BYTES + 1), 0);
    close(fd);
    gw_config *cfg = (gw_config *)1;
    assert_int_equal(gw_config_load(tmpl, &cfg, err_buf, sizeof(err_buf)), PST_E_CONFIG);
    assert_null(cfg);
    assert_starts_with(err_buf, tmpl);
    assert_contains(err_buf, "larger than");
    unlink(tmpl);
}

static void test_config__free_null(void **state) { gw_config_free(NULL); }

/* ---- listen, redirect, tls ------------------------------------------------- */

static void test_config__listen_list(void **state)
{
    gw_config *cfg = parse_ok(j("{'listen': ['127.0.0.1:8443', '[::1]:8443', "
                                "'10.0.0.5:443'], 'state_dir': '/s'}"));
    assert_int_equal(cfg->nlisten, 3);
    assert_string_equal(cfg->listen[1].host, "::1");
    assert_int_equal(cfg->listen[1].port, 8443);
    assert_string_equal(cfg->listen[2].host, "10.0.0.5");
    assert_int_equal(cfg->listen[2].port, 443);
    gw_config_free(cfg);
}

static void test_config__listen_errors(void **state)
{
    parse_err(j("{'state_dir': '/s'}"), "", "missing required key \"listen\"");
    parse_err(j("{'listen': 8443, 'state_dir': '/s'}"), "listen", "an integer");
    parse_err(j("{'listen': '', 'state_dir': '/s'}"), "listen", NULL);
    parse_err(j("{'listen': '8443', 'state_dir': '/s'}"), "listen", "\"8443\"");
    parse_err(j("{'listen': [], 'state_dir': '/s'}"), "listen", NULL);
    parse_err(j("{'listen': ['127.0.0.1:1', 8443], 'state_dir': '/s'}"), "listen[1]", NULL);
    parse_err(j("{'listen': ['127.0.0.1:1', '::1:8443'], 'state_dir': '/s'}"), "listen[1]",
              NULL);
    parse_err(j("{'listen': ['127.0.0.1:0'], 'state_dir': '/s'}"), "listen[0]", NULL);
    parse_err(j("{'listen': {'host': 'a'}, 'state_dir': '/s'}"), "listen", "an object");
    parse_err(j("{'listen': null, 'state_dir': '/s'}"), "listen", "null");
}

/* Listen addresses are IP literals: a host name would need a resolver at
 * start and could bind another interface than meant. */
static void test_config__listen_ip_only(void **state)
{
    parse_err(j("{'listen': 'gw.example.com:443', 'state_dir': '/s'}"), "listen",
              "\"gw.example.com:443\"");
    parse_err(j("{'listen': 'localhost:8443', 'state_dir': '/s'}"), "listen", NULL);
    parse_err(j("{'listen': ['127.0.0.1:1', 'gw:2'], 'state_dir': '/s'}"), "listen[1]", NULL);
    parse_err(j("{'listen': '999.1.1.1:1', 'state_dir': '/s'}"), "listen", NULL);
    parse_err(j("{'listen': '10.0.0:1', 'state_dir': '/s'}"), "listen", NULL);
    parse_err(with("'http_redirect': 'localhost:80'"), "http_redirect", NULL);
}

static void test_config__http_redirect(void **state)
{
    gw_config *cfg = parse_ok(with("'http_redirect': '[::]:80'"));
    assert_true(cfg->has_http_redirect);
    assert_string_equal(cfg->http_redirect.host, "::");
    assert_int_equal(cfg->http_redirect.port, 80);
    gw_config_free(cfg);
    parse_err(with("'http_redirect': '0.0.0.0'"), "http_redirect", NULL);
    parse_err(with("'http_redirect': 80"), "http_redirect", NULL);
    parse_err(with("'http_redirect': true"), "http_redirect", NULL);
}

static void test_config__tls(void **state)
{
    gw_config *cfg = parse_ok(with("'tls': {'cert': '/c.pem', 'key': '/k.pem'}"));
    assert_string_equal(cfg->tls_cert, "/c.pem");
    assert_string_equal(cfg->tls_key, "/k.pem");
    gw_config_free(cfg);
    cfg = parse_ok(with("'tls': {}"));
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    gw_config_free(cfg);

    parse_err(with("'tls': {'cert': '/c.pem'}"), "tls", "\"key\"");
    parse_err(with("'tls': {'key': '/k.pem'}"), "tls", "\"cert\"");
    parse_err(with("'tls': {'cert': '/c.pem', 'key': ''}"), "tls.key", "non-empty");
    parse_err(with("'tls': {'cert': 1, 'key': '/k'}"), "tls.cert", "a string");
    parse_err(with("'tls': {'cert': '/c', 'key': '/k', 'chain': '/x'}"), "tls.chain",
              "unknown key");
    parse_err(with("'tls': '/c.pem'"), "tls", "an object");
}

/* ---- origins ---------------------------------------------------------------- */

static void test_config__origins_valid(void **state)
{
    gw_config *cfg = parse_ok(with("'origins': ['https://gw.example.com', "
                                   "'http://localhost:8080', 'https://[::1]:8443', "
                                   "'https://10.0.0.1']"));
    assert_int_equal(cfg->norigins, 4);
    assert_string_equal(cfg->origins[0], "https://gw.example.com");
    assert_string_equal(cfg->origins[1], "http://localhost:8080");
    assert_string_equal(cfg->origins[2], "https://[::1]:8443");
    assert_string_equal(cfg->origins[3], "https://10.0.0.1");
    gw_config_free(cfg);
}

static void test_config__origins_invalid(void **state)
{
    parse_err(with("'origins': ['https://gw.example.com/']"), "origins[0]", NULL);
    parse_err(with("'origins': ['https://ok', 'https://gw.example.com/console']"),
              "origins[1]", "\"https://gw.example.com/console\"");
    parse_err(with("'origins': ['ftp://gw.example.com']"), "origins[0]", NULL);
    parse_err(with("'origins': ['gw.example.com']"), "origins[0]", NULL);
    parse_err(with("'origins': ['https://']"), "origins[0]", NULL);
    parse_err(with("'origins': ['https://*.example.com']"), "origins[0]", NULL);
    parse_err(with("'origins': ['https://user@gw']"), "origins[0]", NULL);
    parse_err(with("'origins': ['https://gw?x=1']"), "origins[0]", NULL);
    parse_err(with("'origins': ['*']"), "origins[0]", NULL);
    parse_err(with("'origins': ['']"), "origins[0]", NULL);
    parse_err(with("'origins': [1]"), "origins[0]", NULL);
    parse_err(with("'origins': 'https://gw.example.com'"), "origins", "a list");
}

static void test_config__origins_derived(void **state)
{
    gw_config *cfg = parse_ok(j("{'listen': ['10.0.0.5:443', '10.1.2.3:8443', "
                                "'[fd00::1]:443', '[::1]:9443'], 'state_dir': '/s'}"));
    assert_int_equal(cfg->norigins, 4);
    assert_string_equal(cfg->origins[0], "https://10.0.0.5"); /* 443 elided */
    assert_string_equal(cfg->origins[1], "https://10.1.2.3:8443");
    assert_string_equal(cfg->origins[2], "https://[fd00::1]");
    assert_string_equal(cfg->origins[3], "https://[::1]:9443");
    gw_config_free(cfg);

    /* An empty list means "derive", as if absent. */
    cfg = parse_ok(with("'origins': []"));
    assert_int_equal(cfg->norigins, 1);
    assert_string_equal(cfg->origins[0], "https://127.0.0.1:8443");
    gw_config_free(cfg);
}

static void test_config__origins_derived_wildcard(void **state)
{
    gw_config *cfg = parse_ok(j("{'listen': '0.0.0.0:8443', 'state_dir': '/s'}"));
    assert_int_equal(cfg->norigins, 2);
    assert_string_equal(cfg->origins[0], "https://localhost:8443");
    assert_string_equal(cfg->origins[1], "https://127.0.0.1:8443");
    gw_config_free(cfg);

    cfg = parse_ok(j("{'listen': ['0.0.0.0:443', '[::]:443'], 'state_dir': '/s'}"));
    assert_int_equal(cfg->norigins, 4);
    assert_string_equal(cfg->origins[0], "https://localhost");
    assert_string_equal(cfg->origins[1], "https://127.0.0.1");
    assert_string_equal(cfg->origins[2], "https://localhost");
    assert_string_equal(cfg->origins[3], "https://127.0.0.1");
    gw_config_free(cfg);
}

/* ---- log_level, users_file, state_dir ----------------------------------------- */

static void test_config__log_level(void **state)
{
    static const struct {
        const char *name;
        log_level level;
    } levels[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        char extra[64];
        snprintf(extra, sizeof(extra), "'log_level': '%s'", levels[i].name);
        gw_config *cfg = parse_ok(with(extra));
        assert_int_equal(cfg->log_level, levels[i].level);
        gw_config_free(cfg);
    }
    parse_err(with("'log_level': 'verbose'"), "log_level", "\"verbose\"");
    parse_err(with("'log_level': 'INFO'"), "log_level", NULL);
    parse_err(with("'log_level': ''"), "log_level", NULL);
    parse_err(with("'log_level': 2"), "log_level", "a string");
}

static void test_config__users_file_and_state_dir(void **state)
{
    gw_config *cfg = parse_ok(with("'users_file': '/etc/pst/users.json'"));
    assert_string_equal(cfg->users_file, "/etc/pst/users.json");
    gw_config_free(cfg);
    parse_err(with("'users_file': ''"), "users_file", "non-empty");
    parse_err(with("'users_file': ['/a']"), "users_file", "a list");
    parse_err(j("{'listen': '127.0.0.1:1'}"), "", "missing required key \"state_dir\"");
    parse_err(j("{'listen': '127.0.0.1:1', 'state_dir': ''}"), "state_dir", "non-empty");
    parse_err(j("{'listen': '127.0.0.1:1', 'state_dir': false}"), "state_dir", "a boolean");
}

/* ---- roles -------------------------------------------------------------------- */

static void test_config__roles(void **state)
{
    gw_config *cfg = parse_ok(with("'roles': {'viewer': {'vms': ['tag:prod'], "
                                   "'actions': ['auditor']}, "
                                   "'r.2_x-y': {'actions': ['tunnel', 'tunnel']}}"));
    assert_int_equal(cfg->nroles, 2);
    assert_string_equal(cfg->roles[0].name, "viewer");
    assert_int_equal(cfg->roles[0].actions, AUTH_ACT_AUDITOR);
    assert_string_equal(cfg->roles[1].name, "r.2_x-y");
    assert_int_equal(cfg->roles[1].nselectors, 0);
    assert_int_equal(cfg->roles[1].actions, AUTH_ACT_TUNNEL);
    assert_false(cfg->roles[0].mfa_required);
    gw_config_free(cfg);

    cfg = parse_ok(with("'roles': {'admins': {'actions': ['admin'], 'mfa_required': true}, "
                        "'ops': {'actions': ['ssh-login'], 'mfa_required': false}}"));
    assert_true(cfg->roles[0].mfa_required);
    assert_false(cfg->roles[1].mfa_required);
    gw_config_free(cfg);
}

static void test_config__roles_errors(void **state)
{
    parse_err(with("'roles': {'ops': {'vms': ['*'], 'actions': ['sudo']}}"),
              "roles.ops.actions[0]", NULL);
    parse_err(with("'roles': {'ops': {'actions': ['tunnel', 'SSH-LOGIN']}}"),
              "roles.ops.actions[1]", NULL);
    parse_err(with("'roles': {'ops': {'actions': [7]}}"), "roles.ops.actions[0]", NULL);
    parse_err(with("'roles': {'ops': {'actions': 'admin'}}"), "roles.ops.actions", "a string");
    parse_err(with("'roles': {'ops': {'vms': ['*']}}"), "roles.ops",
              "missing required key \"actions\"");
    parse_err(with("'roles': {'ops': {'vm': ['*'], 'actions': []}}"), "roles.ops.vm",
              "unknown key");
    parse_err(with("'roles': {'ops': {'vms': ['web/*'], 'actions': []}}"), "roles.ops.vms[0]",
              NULL);
    parse_err(with("'roles': {'ops': {'vms': ['web*', 'tag:'], 'actions': []}}"),
              "roles.ops.vms[1]", NULL);
    parse_err(with("'roles': {'ops': {'vms': ['tag:a*'], 'actions': []}}"), "roles.ops.vms[0]",
              NULL);
    parse_err(with("'roles': {'ops': {'vms': [''], 'actions': []}}"), "roles.ops.vms[0]", NULL);
    parse_err(with("'roles': {'ops': {'vms': 'web*', 'actions': []}}"), "roles.ops.vms", NULL);
    parse_err(with("'roles': {'bad name': {'actions': []}}"), "roles.bad name", NULL);
    parse_err(with("'roles': {'ops': {'actions': [], 'mfa_required': 'yes'}}"),
              "roles.ops.mfa_required", "true or false");
    parse_err(with("'roles': {'ops': {'actions': [], 'mfa': true}}"), "roles.ops.mfa",
              "unknown key");
    parse_err(with("'roles': {'ops': []}"), "roles.ops", "an object");
    parse_err(with("'roles': ['ops']"), "roles", "an object");
}

/* ---- limits ------------------------------------------------------------------- */

static void test_config__limits(void **state)
{
    gw_config *cfg = parse_ok(with("'limits': {'max_sessions': 1, 'max_sessions_per_user': "
                                   "1000000, 'shutdown_grace_seconds': 86400, "
                                   "'handshake_timeout_seconds': 1}"));
    assert_int_equal(cfg->limits.max_sessions, 1);
    assert_int_equal(cfg->limits.max_sessions_per_user, 1000000);
    assert_int_equal(cfg->limits.shutdown_grace_seconds, 86400);
    assert_int_equal(cfg->limits.handshake_timeout_seconds, 1);
    gw_config_free(cfg);

    /* Keys left out keep their defaults. */
    cfg = parse_ok(with("'limits': {'max_sessions': 7}"));
    assert_int_equal(cfg->limits.max_sessions, 7);
    assert_int_equal(cfg->limits.max_sessions_per_user, 20);
    assert_int_equal(cfg->limits.shutdown_grace_seconds, 30);
    assert_int_equal(cfg->limits.handshake_timeout_seconds, 10);
    gw_config_free(cfg);
}

static void test_config__limits_errors(void **state)
{
    parse_err(with("'limits': {'max_sessions': 0}"), "limits.max_sessions", "got 0");
    parse_err(with("'limits': {'max_sessions': 1000001}"), "limits.max_sessions", NULL);
    parse_err(with("'limits': {'max_sessions': -5}"), "limits.max_sessions", NULL);
    parse_err(with("'limits': {'max_sessions': 99999999999999999}"), "limits.max_sessions",
              NULL);
    parse_err(with("'limits': {'max_sessions': '10'}"), "limits.max_sessions", "a string");
    parse_err(with("'limits': {'max_sessions': 10.5}"), "limits.max_sessions", "a number");
    parse_err(with("'limits': {'max_sessions_per_user': 0}"), "limits.max_sessions_per_user",
              NULL);
    parse_err(with("'limits': {'shutdown_grace_seconds': -1}"), "limits.shutdown_grace_seconds",
              NULL);
    parse_err(with("'limits': {'shutdown_grace_seconds': 86401}"),
              "limits.shutdown_grace_seconds", NULL);
    parse_err(with("'limits': {'handshake_timeout_seconds': 0}"),
              "limits.handshake_timeout_seconds", NULL);
    parse_err(with("'limits': {'handshake_timeout_seconds': 301}"),
              "limits.handshake_timeout_seconds", NULL);
    parse_err(with("'limits': {'max_sesions': 10}"), "limits.max_sesions", "unknown key");
    parse_err(with("'limits': 10"), "limits", "an object");
}

/* ---- auth ---------------------------------------------------------------------- */

static void test_config__auth(void **state)
{
    gw_config *cfg = parse_ok(with("'auth': {'session_idle_seconds': 5, "
                                   "'session_max_seconds': 2592000, "
                                   "'token_max_seconds': 31622400, "
                                   "'throttle': {'free_failures': 1000, 'max_delay_seconds': 3600, "
                                   "'lock_failures': 1, 'lock_seconds': 86400}}"));
    assert_int_equal(cfg->auth.session_idle_seconds, 5);
    assert_int_equal(cfg->auth.session_max_seconds, 30 * 86400);
    assert_int_equal(cfg->auth.token_max_seconds, 366 * 86400);
    assert_int_equal(cfg->auth.throttle.free_failures, 1000);
    assert_int_equal(cfg->auth.throttle.max_delay, 3600);
    assert_int_equal(cfg->auth.throttle.lock_failures, 1);
    assert_int_equal(cfg->auth.throttle.lock_seconds, 86400);
    gw_config_free(cfg);

    /* Keys left out keep their defaults, inside "throttle" too. */
    cfg = parse_ok(with("'auth': {'token_max_seconds': 60, 'throttle': {'lock_seconds': 60}}"));
    assert_int_equal(cfg->auth.session_idle_seconds, 1800);
    assert_int_equal(cfg->auth.token_max_seconds, 60);
    assert_int_equal(cfg->auth.throttle.free_failures, auth_throttle_default.free_failures);
    assert_int_equal(cfg->auth.throttle.max_delay, auth_throttle_default.max_delay);
    assert_int_equal(cfg->auth.throttle.lock_failures, auth_throttle_default.lock_failures);
    assert_int_equal(cfg->auth.throttle.lock_seconds, 60);
    gw_config_free(cfg);
}

static void test_config__auth_errors(void **state)
{
    parse_err(with("'auth': {'session_idle_seconds': 4}"), "auth.session_idle_seconds", "got 4");
    parse_err(with("'auth': {'session_idle_seconds': 604801}"), "auth.session_idle_seconds",
              NULL);
    parse_err(with("'auth': {'session_max_seconds': 2592001}"), "auth.session_max_seconds",
              NULL);
    parse_err(with("'auth': {'token_max_seconds': 0}"), "auth.token_max_seconds", NULL);
    parse_err(with("'auth': {'token_max_seconds': '90d'}"), "auth.token_max_seconds",
              "a string");
    parse_err(with("'auth': {'session_idle': 60}"), "auth.session_idle", "unknown key");
    parse_err(with("'auth': {'throttle': {'free_failures': -1}}"), "auth.throttle.free_failures",
              NULL);
    parse_err(with("'auth': {'throttle': {'free_failures': 1001}}"),
              "auth.throttle.free_failures", NULL);
    parse_err(with("'auth': {'throttle': {'max_delay_seconds': 3601}}"),
              "auth.throttle.max_delay_seconds", NULL);
    parse_err(with("'auth': {'throttle': {'lock_failures': 0}}"), "auth.throttle.lock_failures",
              NULL);
    parse_err(with("'auth': {'throttle': {'lock_seconds': 86401}}"), "auth.throttle.lock_seconds",
              NULL);
    parse_err(with("'auth': {'throttle': {'max_delay': 5}}"), "auth.throttle.max_delay",
              "max_delay_seconds");
    parse_err(with("'auth': {'throttle': [3]}"), "auth.throttle", "an object");
    parse_err(with("'auth': true"), "auth", "an object");
}

/* ---- vms ---------------------------------------------------------------------- */

#define SSH_TOFU "'ssh': {'trust_on_first_use': true}"
#define SSH_PIN "SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc0"
#define RDP_PIN "3a9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f13"

static void test_config__vm_defaults(void **state)
{
    gw_config *cfg = parse_ok(with_vms("[{'name': 'a', 'address': '10.0.0.1', " SSH_TOFU "}, "
                                       "{'name': 'b', 'address': 'host-b', "
                                       "'rdp': {'trust_on_first_use': true}}]"));
    assert_int_equal(cfg->nvms, 2);
    const gw_vm *a = &cfg->vms[0], *b = &cfg->vms[1];
    assert_int_equal(a->ssh.port, 22);
    assert_true(a->ssh.enabled);
    assert_false(a->rdp.enabled);
    assert_int_equal(a->recording, GW_REC_OFF);
    assert_int_equal(a->max_sessions, 0);
    assert_int_equal(a->ntags, 0);
    assert_false(a->jit.required);
    assert_int_equal(a->jit.default_duration, 3 * 3600);
    assert_int_equal(a->jit.max_duration, 86400);
    assert_int_equal(b->rdp.port, 3389);
    assert_true(b->rdp.enabled);
    assert_false(b->ssh.enabled);
    assert_true(b->rdp.trust_on_first_use);
    assert_null(b->rdp.cert_sha256);
    assert_ptr_equal(gw_config_find_vm(cfg, "b"), b);
    gw_config_free(cfg);

    cfg = parse_ok(with_vms("[]"));
    assert_int_equal(cfg->nvms, 0);
    gw_config_free(cfg);
}

static void test_config__vm_ssh_and_rdp_ports(void **state)
{
    gw_config *cfg = parse_ok(with_vms("[{'name': 'a', 'address': 'a', "
                                       "'ssh': {'port': 1, 'trust_on_first_use': true}, "
                                       "'rdp': {'port': 65535, 'trust_on_first_use': true}}]"));
    assert_int_equal(cfg->vms[0].ssh.port, 1);
    assert_int_equal(cfg->vms[0].rdp.port, 65535);
    gw_config_free(cfg);

    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU "}, "
                       "{'name': 'b', 'address': 'b', 'ssh': {'port': 0, "
                       "'trust_on_first_use': true}}]"),
              "vms[1].ssh.port", "from 1 to 65535");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU "}, "
                       "{'name': 'b', 'address': 'b', 'ssh': {'port': 65536, "
                       "'trust_on_first_use': true}}]"),
              "vms[1].ssh.port", "65536");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'port': '22', "
                       "'trust_on_first_use': true}}]"),
              "vms[0].ssh.port", "a string");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'rdp': {'port': 0, "
                       "'trust_on_first_use': true}}]"),
              "vms[0].rdp.port", NULL);
}

static void test_config__vm_ssh_pins(void **state)
{
    gw_config *cfg = parse_ok(with_vms("[{'name': 'a', 'address': 'a', 'ssh': "
                                       "{'host_key_sha256': 'SHA256:+/09azAZ"
                                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}}]"));
    assert_string_equal(cfg->vms[0].ssh.host_key_sha256,
                        "SHA256:+/09azAZaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_false(cfg->vms[0].ssh.trust_on_first_use);
    gw_config_free(cfg);

    static const char *const bad[] = {
        "SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc",   /* 42 */
        "SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc0A", /* 44 */
        "SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc=",  /* padding */
        "sha256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc0",
        "n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc0",
        "MD5:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hTqZc0",
        "SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hT-Zc0", /* base64url */
        "SHA256:n3rHfbnWq1jfBwm5Eqn0mVWuQnRNprkVnZ2b7hT Zc0",
        "SHA256:",
        RDP_PIN,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char vms[512];
        snprintf(vms, sizeof(vms),
                 "[{'name': 'a', 'address': 'a', 'ssh': {'host_key_sha256': '%s'}}]", bad[i]);
        parse_err(with_vms(vms), "vms[0].ssh.host_key_sha256", "43 base64");
    }
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'host_key_sha256': ''}}]"),
              "vms[0].ssh.host_key_sha256", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'host_key_sha256': true}}]"),
              "vms[0].ssh.host_key_sha256", NULL);
}

static void test_config__vm_rdp_pins(void **state)
{
    static const char *const good[] = {
        RDP_PIN,
        "3A9F1C07B264E85D904EAB12C7F3680D5BE1298476AF03DC419BE72C58B06F13",
        ("3A:9F:1C:07:B2:64:E8:5D:90:4E:AB:12:C7:F3:68:0D:5B:E1:29:84:76:AF:03:DC:41:9B:E7:2C:58:"
         "B0:6F:13"),
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char vms[512];
        snprintf(vms, sizeof(vms), "[{'name': 'a', 'address': 'a', 'rdp': {'cert_sha256': '%s'}}]",
                 good[i]);
        gw_config *cfg = parse_ok(with_vms(vms));
        assert_string_equal(cfg->vms[0].rdp.cert_sha256, good[i]);
        gw_config_free(cfg);
    }
    static const char *const bad[] = {
        "3a9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f1",   /* 63 */
        "3a9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f131", /* 65 */
        "3a9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f1g",  /* not hex */
        "3a9f1c07-b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f13",
        "3a 9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f13",
        SSH_PIN,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char vms[512];
        snprintf(vms, sizeof(vms), "[{'name': 'a', 'address': 'a', 'rdp': {'cert_sha256': '%s'}}]",
                 bad[i]);
        parse_err(with_vms(vms), "vms[0].rdp.cert_sha256", "64 hex digits");
    }
}

/* "colons between pairs allowed" (config.c): colons anywhere else are not
 * the openssl format and suggest a pasted value that lost a digit pair's
 * alignment. */
static void test_config__vm_rdp_pin_colons_between_pairs(void **state)
{
    static const char *const bad[] = {
        ":3a9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f13",
        "3a9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f13:",
        "3a::9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f13",
        "3:a9f1c07b264e85d904eab12c7f3680d5be1298476af03dc419be72c58b06f13",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char vms[512];
        snprintf(vms, sizeof(vms), "[{'name': 'a', 'address': 'a', 'rdp': {'cert_sha256': '%s'}}]",
                 bad[i]);
        parse_err(with_vms(vms), "vms[0].rdp.cert_sha256", "64 hex digits");
    }
}

static void test_config__vm_pin_and_tofu(void **state)
{
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'host_key_sha256': '" SSH_PIN
                       "', 'trust_on_first_use': true}}]"),
              "vms[0].ssh", "not both");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'port': 22}}]"), "vms[0].ssh",
              "host_key_sha256");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {}}]"), "vms[0].ssh", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'trust_on_first_use': false}}]"),
              "vms[0].ssh", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'trust_on_first_use': 'yes'}}]"),
              "vms[0].ssh.trust_on_first_use", "true or false");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'rdp': {'cert_sha256': '" RDP_PIN
                       "', 'trust_on_first_use': true}}]"),
              "vms[0].rdp", "not both");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'rdp': {'username': 'u'}}]"), "vms[0].rdp",
              "cert_sha256");
    /* A pin next to tofu=false is just a pin. */
    gw_config *cfg = parse_ok(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'host_key_sha256':"
                                       " '" SSH_PIN "', 'trust_on_first_use': false}}]"));
    assert_false(cfg->vms[0].ssh.trust_on_first_use);
    gw_config_free(cfg);
}

static void test_config__vm_names(void **state)
{
    /* 64 characters: the longest name. */
    gw_config *cfg = parse_ok(with_vms("[{'name': "
                                       "'a123456789b123456789c123456789d123456789e123456789f1234"
                                       "56789g123', 'address': 'a', " SSH_TOFU "}]"));
    assert_int_equal(strlen(cfg->vms[0].name), 64);
    gw_config_free(cfg);

    static const char *const bad[] = {
        "web 01", "web/01", "web*", "web:01", "tag:x", "caf\\u00e9", "a\\tb",
        "a123456789b123456789c123456789d123456789e123456789f123456789g1234", /* 65 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char vms[512];
        snprintf(vms, sizeof(vms), "[{'name': 'ok', 'address': 'a', " SSH_TOFU "}, "
                                   "{'name': '%s', 'address': 'a', " SSH_TOFU "}]",
                 bad[i]);
        parse_err(with_vms(vms), "vms[1].name", NULL);
    }
    parse_err(with_vms("[{'name': '', 'address': 'a', " SSH_TOFU "}]"), "vms[0].name", NULL);
    parse_err(with_vms("[{'name': 5, 'address': 'a', " SSH_TOFU "}]"), "vms[0].name",
              "an integer");
}

static void test_config__vm_duplicate_names(void **state)
{
    parse_err(with_vms("[{'name': 'web01', 'address': 'a', " SSH_TOFU "}, "
                       "{'name': 'db', 'address': 'b', " SSH_TOFU "}, "
                       "{'name': 'web01', 'address': 'c', " SSH_TOFU "}]"),
              "vms[2].name", "vms[0]");
    /* Names are case-sensitive: these are two VMs. */
    gw_config *cfg = parse_ok(with_vms("[{'name': 'web01', 'address': 'a', " SSH_TOFU "}, "
                                       "{'name': 'WEB01', 'address': 'b', " SSH_TOFU "}]"));
    assert_int_equal(cfg->nvms, 2);
    gw_config_free(cfg);
}

static void test_config__vm_required_keys(void **state)
{
    parse_err(with_vms("[{'address': 'a', " SSH_TOFU "}]"), "vms[0]",
              "missing required key \"name\"");
    parse_err(with_vms("[{'name': 'ok', 'address': 'a', " SSH_TOFU "}, {'name': 'b', " SSH_TOFU
                       "}]"),
              "vms[1]", "missing required key \"address\"");
    parse_err(with_vms("[{'name': 'a', 'address': 'a'}]"), "vms[0]", "\"ssh\" or \"rdp\"");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'tags': ['x']}]"), "vms[0]",
              "\"ssh\" or \"rdp\"");
}

static void test_config__vm_address(void **state)
{
    static const char *const good[] = {"10.0.0.1", "fd00::1", "::1", "db.internal", "h-1"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char vms[256];
        snprintf(vms, sizeof(vms), "[{'name': 'a', 'address': '%s', " SSH_TOFU "}]", good[i]);
        gw_config *cfg = parse_ok(with_vms(vms));
        assert_string_equal(cfg->vms[0].address, good[i]);
        gw_config_free(cfg);
    }
    static const char *const bad[] = {"", "10.0.0.1:22", "a b", "a;rm", "[fd00::1]",
                                      "http://x", "a/b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char vms[256];
        snprintf(vms, sizeof(vms), "[{'name': 'a', 'address': '%s', " SSH_TOFU "}]", bad[i]);
        parse_err(with_vms(vms), "vms[0].address", NULL);
    }
    parse_err(with_vms("[{'name': 'a', 'address': ['10.0.0.1'], " SSH_TOFU "}]"),
              "vms[0].address", "a list");
}

static void test_config__vm_tags_recording_sessions(void **state)
{
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'tags': 'linux', " SSH_TOFU "}]"),
              "vms[0].tags", "a string");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'tags': ['ok', ''], " SSH_TOFU "}]"),
              "vms[0].tags[1]", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'tags': ['ok', 'not ok'], " SSH_TOFU "}]"),
              "vms[0].tags[1]", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'tags': [null], " SSH_TOFU "}]"),
              "vms[0].tags[0]", "null");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'recording': 'yes', " SSH_TOFU "}]"),
              "vms[0].recording", "\"yes\"");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'recording': true, " SSH_TOFU "}]"),
              "vms[0].recording", "a boolean");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'max_sessions': -1, " SSH_TOFU "}]"),
              "vms[0].max_sessions", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'max_sessions': 1000001, " SSH_TOFU "}]"),
              "vms[0].max_sessions", NULL);
}

static void test_config__vm_optional_strings(void **state)
{
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'trust_on_first_use': true, "
                       "'username': ''}}]"),
              "vms[0].ssh.username", "non-empty");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'trust_on_first_use': true, "
                       "'key_file': 1}}]"),
              "vms[0].ssh.key_file", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'rdp': {'trust_on_first_use': true, "
                       "'password_file': ''}}]"),
              "vms[0].rdp.password_file", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': 'yes'}]"), "vms[0].ssh",
              "an object");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'rdp': true}]"), "vms[0].rdp",
              "an object");
}

static void test_config__vm_jit(void **state)
{
    gw_config *cfg = parse_ok(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", "
                                       "'jit': {'required': true, 'default_duration': 60, "
                                       "'max_duration': 60, 'ports': [22, 65535, 1]}}]"));
    const gw_vm_jit *jit = &cfg->vms[0].jit;
    assert_true(jit->required);
    assert_int_equal(jit->default_duration, 60);
    assert_int_equal(jit->max_duration, 60);
    assert_int_equal(jit->nports, 3);
    assert_int_equal(jit->ports[1], 65535);
    gw_config_free(cfg);

    cfg = parse_ok(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", 'jit': {}}]"));
    assert_false(cfg->vms[0].jit.required);
    assert_int_equal(cfg->vms[0].jit.default_duration, 10800);
    assert_int_equal(cfg->vms[0].jit.max_duration, 86400);
    assert_int_equal(cfg->vms[0].jit.nports, 0);
    assert_null(cfg->vms[0].jit.ports);
    gw_config_free(cfg);
}

static void test_config__vm_jit_errors(void **state)
{
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", "
                       "'jit': {'default_duration': 7200, 'max_duration': 3600}}]"),
              "vms[0].jit", "default_duration");
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", "
                       "'jit': {'default_duration': 59}}]"),
              "vms[0].jit.default_duration", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", "
                       "'jit': {'max_duration': 86401}}]"),
              "vms[0].jit.max_duration", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", "
                       "'jit': {'required': 1}}]"),
              "vms[0].jit.required", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", 'jit': {'ports': []}}]"),
              "vms[0].jit.ports", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", 'jit': {'ports': 22}}]"),
              "vms[0].jit.ports", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", "
                       "'jit': {'ports': [22, 0]}}]"),
              "vms[0].jit.ports[1]", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", "
                       "'jit': {'ports': [65536]}}]"),
              "vms[0].jit.ports[0]", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", "
                       "'jit': {'ports': ['22']}}]"),
              "vms[0].jit.ports[0]", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", 'jit': true}]"),
              "vms[0].jit", "an object");
}

static void test_config__vms_wrong_types(void **state)
{
    parse_err(with_vms("{'name': 'a'}"), "vms", "an object");
    parse_err(with_vms("'web01'"), "vms", "a string");
    parse_err(with_vms("[{'name': 'ok', 'address': 'a', " SSH_TOFU "}, 'web01']"), "vms[1]",
              "a string");
    parse_err(with_vms("[[]]"), "vms[0]", "a list");
}

/* ---- unknown keys, JSON errors -------------------------------------------------- */

static void test_config__unknown_keys_everywhere(void **state)
{
    parse_err(with("'listne': '127.0.0.1:1'"), "listne", "unknown key");
    parse_err(with("'Listen': '127.0.0.1:1'"), "Listen", "unknown key");
    parse_err(with("'tls': {'cert': '/c', 'key': '/k', 'ca': '/x'}"), "tls.ca", NULL);
    parse_err(with("'limits': {'max_sesions': 1}"), "limits.max_sesions", NULL);
    parse_err(with("'auth': {'throttle': {'lockout': 1}}"), "auth.throttle.lockout", NULL);
    parse_err(with("'roles': {'ops': {'actions': [], 'vmz': []}}"), "roles.ops.vmz", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'sssh': {}}]"), "vms[0].sssh", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'ssh': {'trust_on_first_use': true, "
                       "'hostkey': 'x'}}]"),
              "vms[0].ssh.hostkey", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', 'rdp': {'trust_on_first_use': true, "
                       "'cert': 'x'}}]"),
              "vms[0].rdp.cert", NULL);
    parse_err(with_vms("[{'name': 'a', 'address': 'a', " SSH_TOFU ", 'jit': {'durration': 1}}]"),
              "vms[0].jit.durration", NULL);
    /* The message lists what was expected. */
    parse_err(with("'limits': {'max_sesions': 1}"), "limits.max_sesions", "max_sessions");
}

static void test_config__recording_settings(void **state)
{
    gw_config *c = parse_ok(with("'recording': {'mode': 'required', 'retention_days': 30, "
                                 "'input': true}, 'instance': 'gw-1', 'vms': ["
                                 "{'name': 'a', 'address': 'a', " SSH_TOFU "},"
                                 "{'name': 'b', 'address': 'b', 'recording': 'off', " SSH_TOFU
                                 "}]"));
    assert_int_equal(c->recording.mode, GW_REC_REQUIRED);
    assert_int_equal(c->recording.retention_days, 30);
    assert_true(c->recording.input);
    assert_string_equal(c->instance, "gw-1");
    /* A VM without its own policy takes the global one; its own wins. */
    assert_int_equal(c->vms[0].recording, GW_REC_REQUIRED);
    assert_int_equal(c->vms[1].recording, GW_REC_OFF);
    gw_config_free(c);

    c = parse_ok(with(""));
    assert_int_equal(c->recording.mode, GW_REC_OFF);
    assert_int_equal(c->recording.retention_days, 0);
    assert_false(c->recording.input);
    assert_null(c->instance);
    gw_config_free(c);

    parse_err(with("'recording': {'mode': 'always'}"), "recording.mode", "\"always\"");
    parse_err(with("'recording': {'retention_days': -1}"), "recording.retention_days", NULL);
    parse_err(with("'recording': {'input': 'yes'}"), "recording.input", NULL);
    parse_err(with("'recording': {'keep': 1}"), "recording.keep", "unknown key");
    parse_err(with("'recording': 'on'"), "recording", NULL);
    parse_err(with("'instance': 'gw 1'"), "instance", NULL);
}

static void test_config__duplicate_json_keys(void **state)
{
    parse_err(j("{'listen': '127.0.0.1:1', 'state_dir': '/s', 'listen': '0.0.0.0:1'}"),
              NULL, "duplicate");
    parse_err(j("{'listen': '127.0.0.1:1', 'state_dir': '/s',\n"
                " 'tls': {'cert': '/a', 'key': '/b', 'cert': '/c'}}"),
              NULL, "duplicate");
    assert_starts_with(err_buf, NAME ":2:");
    parse_err(j("{'listen': '127.0.0.1:1', 'state_dir': '/s', 'vms': [{'name': 'a', "
                "'address': 'a', 'name': 'b', " SSH_TOFU "}]}"),
              NULL, "duplicate");
}

static void test_config__invalid_json_line_col(void **state)
{
    parse_err(j("{\n  'listen': '127.0.0.1:1',\n  'state_dir': '/s',\n}\n"), NULL, "invalid JSON");
    assert_starts_with(err_buf, NAME ":4:1: invalid JSON");

    parse_err(j("{\n'listen': '127.0.0.1:1'\n'state_dir': '/s'}"), NULL, "invalid JSON");
    assert_starts_with(err_buf, NAME ":3:");

    parse_err("", NULL, "invalid JSON");
    assert_starts_with(err_buf, NAME ":1:0: invalid JSON");
    parse_err("   \n ", NULL, "invalid JSON");
    parse_err(j("{'listen': '127.0.0.1:1', 'state_dir': '/s'} {}"), NULL, "invalid JSON");
    parse_err(j("{'listen': 'a\x01" "b'}"), NULL, "invalid JSON");
    parse_err(j("{'listen': '\\u0000'}"), NULL, "invalid JSON");
    parse_err("{\"listen\": \"\xff\"}", NULL, "invalid JSON");
    parse_err(j("// comment\n{}"), NULL, "invalid JSON");
}

static void test_config__root_not_object(void **state)
{
    parse_err("[]", "", "expected an object, got a list");
    parse_err("{\"listen\": 1", NULL, NULL);
    /* jansson refuses scalars at the top level: a syntax error here. */
    parse_err("\"x\"", NULL, NULL);
    parse_err("null", NULL, NULL);
    parse_err("42", NULL, NULL);
}

/* Only len bytes are parsed: text need not be NUL-terminated. */
static void test_config__length_is_authoritative(void **state)
{
    const char *json = with("");
    size_t n = strlen(json);
    char *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, json, n); /* no NUL: ASan catches a read past n */
    gw_config *cfg = NULL;
    assert_int_equal(gw_config_parse(NAME, copy, n, &cfg, err_buf, sizeof(err_buf)), 0);
    gw_config_free(cfg);
    assert_int_equal(gw_config_parse(NAME, copy, n - 1, &cfg, err_buf, sizeof(err_buf)),
                     PST_E_CONFIG);
    assert_null(cfg);
    free(copy);
}

/* A small error buffer gets a cut, terminated message. */
static void test_config__small_error_buffer(void **state)
{
    char small[16];
    memset(small, 'X', sizeof(small));
    gw_config *cfg = NULL;
    const char *json = with("'limits': {'max_sesions': 10}");
    assert_int_equal(gw_config_parse(NAME, json, strlen(json), &cfg, small, sizeof(small)),
                     PST_E_CONFIG);
    assert_non_null(memchr(small, '\0', sizeof(small)));
    assert_starts_with(small, "test.json: limi");

    memset(small, 'X', sizeof(small));
    assert_int_equal(gw_config_parse(NAME, "{", 1, &cfg, small, sizeof(small)), PST_E_CONFIG);
    assert_non_null(memchr(small, '\0', sizeof(small)));
    assert_starts_with(small, "test.json:1:");
}

/* The header promises a one-line message, and --check-config prints it as
 * is: neither keys from the file (an unknown key, a role name) nor the
 * excerpt of a JSON syntax error may bring line breaks into it. Values are
 * quoted with log_q(). */
static void test_config__error_is_one_line(void **state)
{
    static const char *const cases[] = {
        "{'listen': '127.0.0.1:1', 'state_dir': '/s', 'bad\\nkey': 1}",
        "{'listen': '127.0.0.1:1', 'state_dir': '/s', 'limits': {'x\\r\\ny': 1}}",
        "{'listen': '127.0.0.1:1', 'state_dir': '/s', 'roles': {'r\\nx': {'actions': []}}}",
        ("{'listen': '127.0.0.1:1', 'state_dir': '/s', 'vms': [{'name': 'a\\nb', "
         "'address': 'a', 'ssh': {'trust_on_first_use': true}}]}"),
        "{'listen': 'a\\nb:1', 'state_dir': '/s'}",
        /* A JSON syntax error: jansson's "near '...'" excerpt holds the raw
         * bytes of the bad token, here a line break after a cut escape. */
        "{'listen': '127.0.0.1:1', 'state_dir': '/s', 'x': 'a\\ud80\n'}",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_config *cfg = NULL;
        const char *json = j(cases[i]);
        assert_int_equal(gw_config_parse(NAME, json, strlen(json), &cfg, err_buf,
                                         sizeof(err_buf)),
                         PST_E_CONFIG);
        if (strpbrk(err_buf, "\r\n"))
            fail_msg("case %zu: line break in error \"%s\"", i, err_buf);
    }
}

/* ---- gw_addr_parse -------------------------------------------------------------- */

static void test_config__addr_parse_valid(void **state)
{
    static const struct {
        const char *text, *host;
        int port;
    } ok[] = {
        {"127.0.0.1:8443", "127.0.0.1", 8443},
        {"0.0.0.0:1", "0.0.0.0", 1},
        {"localhost:65535", "localhost", 65535},
        {"gw-1.example.com:443", "gw-1.example.com", 443},
        {"[::1]:8443", "::1", 8443},
        {"[::]:443", "::", 443},
        {"[2001:db8::1:2]:80", "2001:db8::1:2", 80},
        {"[::ffff:10.0.0.1]:22", "::ffff:10.0.0.1", 22},
        {"h:00080", "h", 80},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        gw_addr a;
        memset(&a, 0x55, sizeof(a));
        if (gw_addr_parse(ok[i].text, &a) != 0)
            fail_msg("gw_addr_parse(\"%s\") refused", ok[i].text);
        assert_string_equal(a.host, ok[i].host);
        assert_int_equal(a.port, ok[i].port);
    }
}

static void test_config__addr_parse_invalid(void **state)
{
    static const char *const bad[] = {
        "",                 /* empty */
        "127.0.0.1",        /* no port */
        "127.0.0.1:",       /* empty port */
        ":8443",            /* no host */
        "127.0.0.1:0",      /* port 0 */
        "127.0.0.1:65536",  /* too big */
        "127.0.0.1:99999",
        "127.0.0.1:123456",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1: 80",
        "127.0.0.1:80 ",
        "127.0.0.1:8o",
        "127.0.0.1:0x50",
        "::1:8443",         /* bare IPv6 */
        "::1",
        "fe80::1:22",
        "[::1]",            /* no port */
        "[::1]:",
        "[::1]8443",
        "[]:80",
        "[::1:80",
        "::1]:80",
        "[127.0.0.1]:80",   /* brackets for IPv4 */
        "[not-v6]:80",
        "[fe80::1%eth0]:80", /* zone ids are not addresses */
        "[[::1]]:80",
        "host_name:80",     /* bad host characters */
        "host name:80",
        "host/x:80",
        "host@x:80",
        "h\xc3\xa9:80",
        "a:b:80",
        "*:443",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_addr a;
        if (gw_addr_parse(bad[i], &a) != PST_E_PARSE)
            fail_msg("gw_addr_parse(\"%s\") accepted: host \"%s\" port %d", bad[i], a.host,
                     a.port);
    }
}

static void test_config__addr_parse_long_host(void **state)
{
    char text[GW_HOST_MAX + 16];
    gw_addr a;
    memset(text, 'h', GW_HOST_MAX);
    snprintf(text + GW_HOST_MAX, sizeof(text) - GW_HOST_MAX, ":443");
    assert_int_equal(gw_addr_parse(text, &a), 0);
    assert_int_equal(strlen(a.host), GW_HOST_MAX);

    memset(text, 'h', GW_HOST_MAX + 1);
    snprintf(text + GW_HOST_MAX + 1, sizeof(text) - GW_HOST_MAX - 1, ":443");
    assert_int_equal(gw_addr_parse(text, &a), PST_E_PARSE);
}

/* ---- actions -------------------------------------------------------------------- */

static void test_config__actions(void **state)
{
    static const struct {
        const char *name;
        unsigned flag;
    } acts[] = {
        {"ssh-login", AUTH_ACT_SSH_LOGIN}, {"ssh-admin-login", AUTH_ACT_SSH_ADMIN_LOGIN},
        {"rdp-login", AUTH_ACT_RDP_LOGIN}, {"rdp-admin-login", AUTH_ACT_RDP_ADMIN_LOGIN},
        {"tunnel", AUTH_ACT_TUNNEL},       {"auditor", AUTH_ACT_AUDITOR},
        {"approver", AUTH_ACT_APPROVER},   {"admin", AUTH_ACT_ADMIN},
    };
    unsigned all = 0;
    for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
        assert_int_equal(auth_action_parse(acts[i].name), acts[i].flag);
        assert_string_equal(auth_action_name(acts[i].flag), acts[i].name);
        assert_int_equal(all & acts[i].flag, 0); /* distinct bits */
        all |= acts[i].flag;
    }
    static const char *const unknown[] = {"", "ssh", "SSH-LOGIN", "ssh-login ", "admins",
                                          "ssh_login", "rdp-login\n"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        assert_int_equal(auth_action_parse(unknown[i]), 0);
    assert_string_equal(auth_action_name(0), "unknown");
    assert_string_equal(auth_action_name(AUTH_ACT_SSH_LOGIN | AUTH_ACT_TUNNEL), "unknown");
    assert_string_equal(auth_action_name(1u << 20), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config__minimal),
        cmocka_unit_test(test_config__full),
        cmocka_unit_test(test_config__key_order_and_whitespace),
        cmocka_unit_test(test_config__load_file),
        cmocka_unit_test(test_config__load_too_large),
        cmocka_unit_test(test_config__free_null),
        cmocka_unit_test(test_config__listen_list),
        cmocka_unit_test(test_config__listen_errors),
        cmocka_unit_test(test_config__listen_ip_only),
        cmocka_unit_test(test_config__http_redirect),
        cmocka_unit_test(test_config__tls),
        cmocka_unit_test(test_config__origins_valid),
        cmocka_unit_test(test_config__origins_invalid),
        cmocka_unit_test(test_config__origins_derived),
        cmocka_unit_test(test_config__origins_derived_wildcard),
        cmocka_unit_test(test_config__log_level),
        cmocka_unit_test(test_config__users_file_and_state_dir),
        cmocka_unit_test(test_config__roles),
        cmocka_unit_test(test_config__roles_errors),
        cmocka_unit_test(test_config__limits),
        cmocka_unit_test(test_config__limits_errors),
        cmocka_unit_test(test_config__auth),
        cmocka_unit_test(test_config__auth_errors),
        cmocka_unit_test(test_config__vm_defaults),
        cmocka_unit_test(test_config__vm_ssh_and_rdp_ports),
        cmocka_unit_test(test_config__vm_ssh_pins),
        cmocka_unit_test(test_config__vm_rdp_pins),
        cmocka_unit_test(test_config__vm_rdp_pin_colons_between_pairs),
        cmocka_unit_test(test_config__vm_pin_and_tofu),
        cmocka_unit_test(test_config__vm_names),
        cmocka_unit_test(test_config__vm_duplicate_names),
        cmocka_unit_test(test_config__vm_required_keys),
        cmocka_unit_test(test_config__vm_address),
        cmocka_unit_test(test_config__vm_tags_recording_sessions),
        cmocka_unit_test(test_config__vm_optional_strings),
        cmocka_unit_test(test_config__vm_jit),
        cmocka_unit_test(test_config__vm_jit_errors),
        cmocka_unit_test(test_config__vms_wrong_types),
        cmocka_unit_test(test_config__unknown_keys_everywhere),
        cmocka_unit_test(test_config__recording_settings),
        cmocka_unit_test(test_config__duplicate_json_keys),
        cmocka_unit_test(test_config__invalid_json_line_col),
        cmocka_unit_test(test_config__root_not_object),
        cmocka_unit_test(test_config__length_is_authoritative),
        cmocka_unit_test(test_config__small_error_buffer),
        cmocka_unit_test(test_config__error_is_one_line),
        cmocka_unit_test(test_config__addr_parse_valid),
        cmocka_unit_test(test_config__addr_parse_invalid),
        cmocka_unit_test(test_config__addr_parse_long_host),
        cmocka_unit_test(test_config__actions),
    };
    return cmocka_run_group_tests_name("gateway/config", tests, NULL, NULL);
}
