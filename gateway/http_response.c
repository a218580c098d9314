/* Writing HTTP responses: every answer the gateway gives goes through
 * gw_http_respond(), so every one carries the same security headers. */
#include "gateway/internal.h"

#include "common/log.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* The console loads only its own scripts, styles and images and talks only
 * to its own origin (wss included under 'self'); nothing may frame it. */
#define GW_CSP                                                                  \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' " \
    "data: blob:; font-src 'self'; connect-src 'self'; manifest-src 'self'; "  \
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

static const gw_http_header security_headers[] = {
    {"strict-transport-security:", "max-age=63072000; includeSubDomains"},
    {"content-security-policy:", GW_CSP},
    {"x-content-type-options:", "nosniff"},
    {"x-frame-options:", "DENY"},
    {"referrer-policy:", "no-referrer"},
    {"cross-origin-opener-policy:", "same-origin"},
    {"cross-origin-resource-policy:", "same-origin"},
    {"permissions-policy:", "camera=(), microphone=(), geolocation=(), payment=()"},
};

/* Headers of one response; the CSP alone is ~300 bytes. */
#define GW_HTTP_HEADER_SPACE 4096

static int add_header(struct lws *wsi, const gw_http_header *h, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)h->name,
                                       (const unsigned char *)h->value,
                                       (int)strlen(h->value), p, end);
}

void gw_http_conn_release(gw_http_conn *conn)
{
    free(conn->owned_body);
    conn->owned_body = NULL;
    conn->body = NULL;
    conn->body_len = conn->body_sent = 0;
}

int gw_http_respond(struct lws *wsi, gw_http_conn *conn, int status,
                    const char *content_type, const void *body, size_t len, bool owned,
                    const gw_http_header *extra, size_t nextra, bool head_only)
{
    gw_server *srv = lws_context_user(lws_get_context(wsi));
    unsigned char buf[LWS_PRE + GW_HTTP_HEADER_SPACE];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof(buf) - 1;

    gw_http_conn_release(conn);
    conn->status = status;
    gw_metrics_count_http(&srv->metrics, status);

    if (lws_add_http_common_headers(wsi, (unsigned)status, content_type, len, &p, end))
        goto fail;
    for (size_t i = 0; i < sizeof(security_headers) / sizeof(security_headers[0]); i++)
        if (add_header(wsi, &security_headers[i], &p, end))
            goto fail;
    for (size_t i = 0; i < nextra; i++)
        if (add_header(wsi, &extra[i], &p, end))
            goto fail;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        goto fail;

    if (head_only || len == 0) {
        if (owned)
            free((void *)body);
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    conn->body = body;
    conn->owned_body = owned ? (unsigned char *)body : NULL;
    conn->body_len = len;
    conn->body_sent = 0;
    lws_callback_on_writable(wsi);
    return 0;

fail:
    if (owned)
        free((void *)body);
    log_event(LOG_ERROR, "http.respond.failed", "status=%d", status);
    return -1;
}

/* One chunk per WRITEABLE callback, as lws requires; 16 KiB keeps a single
 * TLS record per write and the stack frame small. */
#define GW_HTTP_CHUNK 16384

int gw_http_write_body(struct lws *wsi, gw_http_conn *conn)
{
    if (!conn->body)
        return 0;
    unsigned char buf[LWS_PRE + GW_HTTP_CHUNK];
    size_t n = conn->body_len - conn->body_sent;
    if (n > GW_HTTP_CHUNK)
        n = GW_HTTP_CHUNK;
    memcpy(buf + LWS_PRE, conn->body + conn->body_sent, n);
    bool last = conn->body_sent + n == conn->body_len;
    if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
        (int)n)
        return -1;
    conn->body_sent += n;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    gw_http_conn_release(conn);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int gw_http_error_json(struct lws *wsi, gw_http_conn *conn, int status,
                       const char *message)
{
    json_t *obj = json_pack("{s:s}", "error", message);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text)
        return -1;
    static const gw_http_header no_store[] = {{"cache-control:", "no-store"}};
    return gw_http_respond(wsi, conn, status, "application/json", text, strlen(text), true,
                           no_store, 1, false);
}
