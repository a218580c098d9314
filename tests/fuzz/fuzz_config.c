/* Fuzz target: gw_config_parse() on arbitrary bytes.
 *
 * It must never crash or leak (the sanitizers and libFuzzer's leak check
 * watch that). When it fails, the message is terminated inside the buffer,
 * starts with the file name and is one line (gateway/config.h): no CR or
 * LF. When it succeeds, the result satisfies every rule the validator
 * claims to enforce (IP-literal listen addresses, ranges, pins, unique
 * names, ...), so a rule skipped on some path shows up here. A violated
 * property aborts.
 */
#include "common/err.h"
#include "gateway/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME "fuzz.json"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void violated(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

static bool ip_literal(const char *host)
{
    struct in6_addr a;
    return inet_pton(AF_INET, host, &a) == 1 || inet_pton(AF_INET6, host, &a) == 1;
}

static void check_pin(const char *what, bool enabled, int port, const char *pin, bool tofu)
{
    if (!enabled)
        return;
    if (port < 1 || port > 65535)
        violated(what, "port out of range");
    if (!pin == !tofu)
        violated(what, "needs exactly one of a pin and trust_on_first_use");
    if (pin && !*pin)
        violated(what, "empty pin");
}

static void check_config(const gw_config *cfg)
{
    if (!cfg->path || strcmp(cfg->path, NAME) != 0)
        violated("path", cfg->path);
    if (cfg->nlisten == 0 || !cfg->listen)
        violated("no listen address", NULL);
    for (size_t i = 0; i < cfg->nlisten; i++) {
        if (cfg->listen[i].port < 1 || cfg->listen[i].port > 65535)
            violated("listen port", cfg->listen[i].host);
        if (!ip_literal(cfg->listen[i].host))
            violated("listen host is not an IP literal", cfg->listen[i].host);
    }
    if (cfg->has_http_redirect &&
        (cfg->http_redirect.port < 1 || cfg->http_redirect.port > 65535 ||
         !ip_literal(cfg->http_redirect.host)))
        violated("http_redirect", cfg->http_redirect.host);
    if (!cfg->state_dir || !*cfg->state_dir)
        violated("state_dir", NULL);
    if (!cfg->tls_cert != !cfg->tls_key)
        violated("tls cert without key or key without cert", NULL);
    if (cfg->norigins == 0)
        violated("origins empty", NULL);
    for (size_t i = 0; i < cfg->norigins; i++)
        if (strncmp(cfg->origins[i], "https://", 8) != 0 &&
            strncmp(cfg->origins[i], "http://", 7) != 0)
            violated("origin without scheme", cfg->origins[i]);
    if ((int)cfg->log_level < LOG_DEBUG || (int)cfg->log_level > LOG_ERROR)
        violated("log_level", NULL);
    if (cfg->users_file && !*cfg->users_file)
        violated("empty users_file", NULL);

    const gw_limits *l = &cfg->limits;
    if (l->max_sessions < 1 || l->max_sessions > 1000000 || l->max_sessions_per_user < 1 ||
        l->max_sessions_per_user > 1000000 || l->shutdown_grace_seconds < 0 ||
        l->shutdown_grace_seconds > 86400 || l->handshake_timeout_seconds < 1 ||
        l->handshake_timeout_seconds > 300)
        violated("limits out of range", NULL);

    const gw_auth_settings *a = &cfg->auth;
    if (a->session_idle_seconds < 5 || a->session_idle_seconds > 7 * 86400 ||
        a->session_max_seconds < 5 || a->session_max_seconds > 30 * 86400 ||
        a->token_max_seconds < 5 || a->token_max_seconds > 366 * 86400)
        violated("auth lifetimes out of range", NULL);
    if (a->throttle.free_failures < 0 || a->throttle.free_failures > 1000 ||
        a->throttle.max_delay < 0 || a->throttle.max_delay > 3600 ||
        a->throttle.lock_failures < 1 || a->throttle.lock_failures > 1000 ||
        a->throttle.lock_seconds < 1 || a->throttle.lock_seconds > 86400)
        violated("auth throttle out of range", NULL);

    for (size_t i = 0; i < cfg->nroles; i++) {
        const auth_role *r = &cfg->roles[i];
        if (!name_ok(r->name))
            violated("role name", r->name);
        if (r->actions & ~0xffu)
            violated("role action bits", r->name);
        for (size_t k = 0; k < r->nselectors; k++)
            if (!r->selectors[k] || !*r->selectors[k])
                violated("empty role selector", r->name);
    }

    for (size_t i = 0; i < cfg->nvms; i++) {
        const gw_vm *vm = &cfg->vms[i];
        if (!name_ok(vm->name))
            violated("VM name", vm->name);
        if (!vm->address || !*vm->address)
            violated("VM address", vm->name);
        if (gw_config_find_vm(cfg, vm->name) != vm)
            violated("VM name not unique", vm->name);
        for (size_t k = 0; k < vm->ntags; k++)
            if (!name_ok(vm->tags[k]))
                violated("tag", vm->tags[k]);
        if (vm->max_sessions < 0 || vm->max_sessions > 1000000)
            violated("VM max_sessions", vm->name);
        if (vm->recording != GW_REC_OFF && vm->recording != GW_REC_ON &&
            vm->recording != GW_REC_REQUIRED)
            violated("VM recording", vm->name);
        if (!vm->ssh.enabled && !vm->rdp.enabled)
            violated("VM without ssh or rdp", vm->name);
        check_pin("ssh", vm->ssh.enabled, vm->ssh.port, vm->ssh.host_key_sha256,
                  vm->ssh.trust_on_first_use);
        check_pin("rdp", vm->rdp.enabled, vm->rdp.port, vm->rdp.cert_sha256,
                  vm->rdp.trust_on_first_use);
        if (vm->ssh.host_key_sha256 && (strncmp(vm->ssh.host_key_sha256, "SHA256:", 7) != 0 ||
                                        strlen(vm->ssh.host_key_sha256) != 50))
            violated("ssh pin format", vm->ssh.host_key_sha256);
        const gw_vm_jit *jit = &vm->jit;
        if (jit->default_duration < 60 || jit->max_duration > 86400 ||
            jit->default_duration > jit->max_duration)
            violated("jit durations", vm->name);
        if (!jit->ports != !jit->nports)
            violated("jit ports and count disagree", vm->name);
        for (size_t k = 0; k < jit->nports; k++)
            if (jit->ports[k] < 1 || jit->ports[k] > 65535)
                violated("jit port", vm->name);
    }
}

static void check_error(const char *err, size_t errlen, int rc)
{
    if (!memchr(err, '\0', errlen))
        violated("error message not terminated inside the buffer", NULL);
    if (!*err)
        violated("failed without a message", NULL);
    if (strncmp(err, NAME, strlen(NAME)) != 0 ||
        (err[strlen(NAME)] != ':' && err[strlen(NAME)] != '\0'))
        violated("error message does not start with the file name", err);
    if (rc != PST_E_CONFIG && rc != -ENOMEM)
        violated("unexpected error code", err);
    /* One line: the message goes to stderr and into logs as is. (Other
     * control bytes can come from jansson's "near '...'" excerpt.) */
    if (strpbrk(err, "\r\n"))
        violated("error message is not one line", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    gw_config *cfg = NULL;
    /* A poisoned buffer: a message must terminate itself, not rely on us. */
    memset(err, 0xa5, sizeof(err));
    int rc = gw_config_parse(NAME, (const char *)data, size, &cfg, err, sizeof(err));
    if (rc == 0) {
        if (!cfg)
            violated("success without a config", NULL);
        check_config(cfg);
        gw_config_free(cfg);
        return 0;
    }
    if (cfg)
        violated("failure with a config", NULL);
    check_error(err, sizeof(err), rc);

    /* The same input into a buffer too small for most messages: cut, still
     * terminated, and the verdict does not change. */
    char small[16];
    memset(small, 0xa5, sizeof(small));
    int rc2 = gw_config_parse(NAME, (const char *)data, size, &cfg, small, sizeof(small));
    if (rc2 != rc || cfg)
        violated("verdict depends on the error buffer", NULL);
    if (!memchr(small, '\0', sizeof(small)) || strncmp(small, NAME, strlen(NAME)) != 0)
        violated("cut error message", NULL);
    return 0;
}
