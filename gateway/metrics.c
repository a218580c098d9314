#include "gateway/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static const int counted_codes[GW_METRICS_NCODES] = GW_METRICS_CODES;
static const char *const proto_names[GW_PROTO_COUNT] = {"ssh", "rdp", "tunnel"};
static const char *const error_names[GW_ERR_COUNT] = {"http_client", "http_server",
                                                      "config_reload", "session"};

void gw_metrics_init(gw_metrics *m)
{
    struct timeval tv;
    memset(m, 0, sizeof(*m));
    gettimeofday(&tv, NULL);
    m->start_time = (double)tv.tv_sec + tv.tv_usec / 1e6;
}

const char *gw_proto_name(gw_proto p)
{
    return (unsigned)p < GW_PROTO_COUNT ? proto_names[p] : "unknown";
}

void gw_metrics_count_http(gw_metrics *m, int status)
{
    size_t slot = GW_METRICS_NCODES;
    for (size_t i = 0; i < GW_METRICS_NCODES; i++)
        if (counted_codes[i] == status)
            slot = i;
    m->http_requests[slot]++;
    if (status >= 500)
        m->errors[GW_ERR_HTTP_SERVER]++;
    else if (status >= 400)
        m->errors[GW_ERR_HTTP_CLIENT]++;
}

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n;
        char *grown = realloc(t->buf, cap);
        if (!grown) {
            t->failed = 1;
            return;
        }
        t->buf = grown;
        t->cap = cap;
    }
}

static void family(text *t, const char *name, const char *type, const char *help)
{
    add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int gw_metrics_render(const gw_metrics *m, char **out, size_t *len)
{
    text t = {.cap = 4096};
    t.buf = malloc(t.cap);
    if (!t.buf)
        return -ENOMEM;

    family(&t, "postern_up", "gauge", "1 while the gateway runs.");
    add(&t, "postern_up 1\n");
    family(&t, "postern_start_time_seconds", "gauge", "Start time, seconds since the epoch.");
    add(&t, "postern_start_time_seconds %.3f\n", m->start_time);
    family(&t, "postern_draining", "gauge", "1 while shutting down (no new sessions).");
    add(&t, "postern_draining %d\n", m->draining);
    family(&t, "postern_connections_total", "counter", "Client connections accepted.");
    add(&t, "postern_connections_total %llu\n", (unsigned long long)m->connections_total);
    family(&t, "postern_connections_active", "gauge", "Client connections open now.");
    add(&t, "postern_connections_active %llu\n", (unsigned long long)m->connections_active);

    family(&t, "postern_http_requests_total", "counter", "HTTP responses by status code.");
    for (size_t i = 0; i < GW_METRICS_NCODES; i++)
        add(&t, "postern_http_requests_total{code=\"%d\"} %llu\n", counted_codes[i],
            (unsigned long long)m->http_requests[i]);
    add(&t, "postern_http_requests_total{code=\"other\"} %llu\n",
        (unsigned long long)m->http_requests[GW_METRICS_NCODES]);

    family(&t, "postern_sessions_active", "gauge", "Live sessions by protocol.");
    for (int p = 0; p < GW_PROTO_COUNT; p++)
        add(&t, "postern_sessions_active{protocol=\"%s\"} %llu\n", proto_names[p],
            (unsigned long long)m->sessions_active[p]);
    family(&t, "postern_sessions_total", "counter", "Sessions started by protocol.");
    for (int p = 0; p < GW_PROTO_COUNT; p++)
        add(&t, "postern_sessions_total{protocol=\"%s\"} %llu\n", proto_names[p],
            (unsigned long long)m->sessions_total[p]);

    family(&t, "postern_bytes_total", "counter",
           "Session bytes: in = client to target, out = target to client.");
    add(&t, "postern_bytes_total{direction=\"in\"} %llu\n", (unsigned long long)m->bytes_in);
    add(&t, "postern_bytes_total{direction=\"out\"} %llu\n",
        (unsigned long long)m->bytes_out);

    family(&t, "postern_errors_total", "counter", "Errors by kind.");
    for (int e = 0; e < GW_ERR_COUNT; e++)
        add(&t, "postern_errors_total{kind=\"%s\"} %llu\n", error_names[e],
            (unsigned long long)m->errors[e]);
    family(&t, "postern_config_reloads_total", "counter", "Successful config reloads.");
    add(&t, "postern_config_reloads_total %llu\n", (unsigned long long)m->config_reloads);

    family(&t, "postern_logins_total", "counter", "Login attempts by result.");
    add(&t, "postern_logins_total{result=\"success\"} %llu\n", (unsigned long long)m->logins);
    add(&t, "postern_logins_total{result=\"failure\"} %llu\n",
        (unsigned long long)m->login_failures);
    add(&t, "postern_logins_total{result=\"throttled\"} %llu\n",
        (unsigned long long)m->login_throttled);
    family(&t, "postern_login_lockouts_total", "counter",
           "Accounts or addresses locked after repeated failures.");
    add(&t, "postern_login_lockouts_total %llu\n", (unsigned long long)m->lockouts);
    family(&t, "postern_login_locked", "gauge", "Accounts and addresses locked now.");
    add(&t, "postern_login_locked %llu\n", (unsigned long long)m->locked_keys);

    if (t.failed) {
        free(t.buf);
        return -ENOMEM;
    }
    *out = t.buf;
    *len = t.len;
    return 0;
}
