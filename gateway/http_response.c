/* Writing HTTP responses. The security headers are not added here: they
 * are the vhosts' canned headers (see gw_security_headers), which lws adds
 * to every response it writes, its own error pages included. */
#include "gateway/internal.h"

#include "common/log.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* Headers of one response; the CSP alone is ~300 bytes. */
#define GW_HTTP_HEADER_SPACE 4096

static int add_header(struct lws *wsi, const gw_http_header *h, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)h->name,
                                       (const unsigned char *)h->value,
                                       (int)strlen(h->value), p, end);
}

static void release_response(gw_http_conn *conn)
{
    free(conn->owned_body);
    conn->owned_body = NULL;
    conn->body = NULL;
    conn->body_len = conn->body_sent = 0;
}

void gw_http_conn_release(gw_http_conn *conn)
{
    release_response(conn);
    gw_http_file_abandon(conn);
    if (conn->req_body) {
        /* Request bodies carry passwords: wipe before freeing. */
        OPENSSL_cleanse(conn->req_body, conn->req_len);
        free(conn->req_body);
        conn->req_body = NULL;
    }
    conn->req_len = 0;
}

/* Ends a transaction: keep the connection for the next request unless the
 * response said otherwise (the client's body was refused unread). */
int gw_http_transaction_done(struct lws *wsi, gw_http_conn *conn)
{
    bool close = conn->close_after;
    gw_http_conn_release(conn);
    if (close)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int gw_http_respond(struct lws *wsi, gw_http_conn *conn, int status,
                    const char *content_type, const void *body, size_t len, bool owned,
                    const gw_http_header *extra, size_t nextra, bool head_only)
{
    gw_server *srv = lws_context_user(lws_get_context(wsi));
    unsigned char buf[LWS_PRE + GW_HTTP_HEADER_SPACE];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof(buf) - 1;

    release_response(conn);
    conn->status = status;
    gw_metrics_count_http(&srv->metrics, status);

    if (lws_add_http_common_headers(wsi, (unsigned)status, content_type, len, &p, end))
        goto fail;
    for (size_t i = 0; i < nextra; i++)
        if (add_header(wsi, &extra[i], &p, end))
            goto fail;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        goto fail;

    if (head_only || len == 0) {
        if (owned)
            free((void *)body);
        return gw_http_transaction_done(wsi, conn);
    }
    if (!body)
        return 0; /* streamed by the caller (gw_http_respond_file) */
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
    return gw_http_transaction_done(wsi, conn);
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

int gw_http_json(struct lws *wsi, gw_http_conn *conn, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return gw_http_error_json(wsi, conn, 500, "out of memory");
    static const gw_http_header no_store[] = {{"cache-control:", "no-store"}};
    return gw_http_respond(wsi, conn, status, "application/json", text, strlen(text), true,
                           no_store, 1, false);
}

/* JSON nesting a request may use; ours are flat. Deeper input is refused
 * before jansson recurses into it. */
#define GW_JSON_MAX_DEPTH 8

static bool depth_ok(const unsigned char *p, size_t n)
{
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > GW_JSON_MAX_DEPTH)
                return false;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return true;
}

const char *gw_http_json_body(gw_http_conn *conn, json_t **out)
{
    *out = NULL;
    if (!conn->req_body || conn->req_len == 0)
        return "expected a JSON object in the request body";
    if (!depth_ok(conn->req_body, conn->req_len))
        return "the JSON body is nested too deeply";
    json_error_t jerr;
    json_t *v = json_loadb((const char *)conn->req_body, conn->req_len, JSON_REJECT_DUPLICATES,
                           &jerr);
    if (!v)
        return "the request body is not valid JSON";
    if (!json_is_object(v)) {
        json_decref(v);
        return "expected a JSON object in the request body";
    }
    *out = v;
    return NULL;
}
