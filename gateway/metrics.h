/* Gateway counters, rendered in Prometheus text format for GET /metrics.
 *
 * Plain integers, written only on the loop thread (worker threads hand their
 * numbers to the loop first), so no atomics are needed. One instance lives
 * in the gw_server.
 */
#ifndef PST_GATEWAY_METRICS_H
#define PST_GATEWAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { GW_PROTO_SSH = 0, GW_PROTO_RDP, GW_PROTO_TUNNEL, GW_PROTO_COUNT } gw_proto;

typedef enum {
    GW_ERR_HTTP_CLIENT = 0, /* 4xx answers */
    GW_ERR_HTTP_SERVER,     /* 5xx answers */
    GW_ERR_CONFIG_RELOAD,   /* SIGHUP with a broken config */
    GW_ERR_SESSION,         /* sessions that ended in an error */
    GW_ERR_COUNT
} gw_error_kind;

/* HTTP status codes counted by value; anything else is counted as "other". */
#define GW_METRICS_CODES {200, 204, 206, 301, 304, 308, 400, 401, 403, 404, 405, 411, \
                          409, 413, 414, 429, 431, 500, 503}
#define GW_METRICS_NCODES 19

typedef struct {
    uint64_t connections_total;
    uint64_t connections_active;
    uint64_t http_requests[GW_METRICS_NCODES + 1]; /* last: other codes */
    uint64_t sessions_active[GW_PROTO_COUNT];
    uint64_t sessions_total[GW_PROTO_COUNT];
    uint64_t bytes_in;  /* client -> target */
    uint64_t bytes_out; /* target -> client */
    uint64_t errors[GW_ERR_COUNT];
    uint64_t config_reloads;
    uint64_t logins;          /* successful */
    uint64_t login_failures;  /* wrong password, unknown user, bad code */
    uint64_t login_throttled; /* refused before checking: back-off or lock */
    uint64_t lockouts;        /* keys that became locked */
    uint64_t locked_keys;     /* locked now; set before rendering */
    int draining;
    double start_time; /* seconds since the epoch */
} gw_metrics;

void gw_metrics_init(gw_metrics *m);
void gw_metrics_count_http(gw_metrics *m, int status);
const char *gw_proto_name(gw_proto p);

/* Renders m into a new buffer (*out, malloc'd, caller frees) of *len bytes.
 * 0 or -ENOMEM. */
int gw_metrics_render(const gw_metrics *m, char **out, size_t *len);

#endif
