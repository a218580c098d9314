/* HTTP routing: operations endpoints, the API namespace and static files.
 * Every request path passes gw_http_path_check() before anything else. */
#include "gateway/http_path.h"
#include "gateway/internal.h"
#include "gateway/static_files.h"

#include "common/log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *method_name(int m)
{
    switch (m) {
    case LWSHUMETH_GET: return "GET";
    case LWSHUMETH_POST: return "POST";
    case LWSHUMETH_OPTIONS: return "OPTIONS";
    case LWSHUMETH_PUT: return "PUT";
    case LWSHUMETH_PATCH: return "PATCH";
    case LWSHUMETH_DELETE: return "DELETE";
    case LWSHUMETH_CONNECT: return "CONNECT";
    case LWSHUMETH_HEAD: return "HEAD";
    default: return "OTHER";
    }
}

static int serve_health(gw_server *srv, struct lws *wsi, gw_http_conn *conn, bool head)
{
    static const gw_http_header no_store[] = {{"cache-control:", "no-store"}};
    if (srv->draining)
        return gw_http_respond(wsi, conn, 503, "text/plain; charset=utf-8", "draining\n",
                               9, false, no_store, 1, head);
    return gw_http_respond(wsi, conn, 200, "text/plain; charset=utf-8", "ok\n", 3, false,
                           no_store, 1, head);
}

static int serve_metrics(gw_server *srv, struct lws *wsi, gw_http_conn *conn, bool head)
{
    static const gw_http_header no_store[] = {{"cache-control:", "no-store"}};
    char *text;
    size_t len;
    int64_t now = (int64_t)time(NULL);
    srv->metrics.locked_keys = auth_throttle_locked_count(srv->throttle_users, now) +
                               auth_throttle_locked_count(srv->throttle_addrs, now);
    if (gw_metrics_render(&srv->metrics, &text, &len) != 0)
        return gw_http_error_json(wsi, conn, 500, "out of memory");
    return gw_http_respond(wsi, conn, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                           len, true, no_store, 1, head);
}

static int serve_static(struct lws *wsi, gw_http_conn *conn, const char *path, bool head)
{
    const gw_static_file *f = gw_static_find(path);
    if (!f)
        return gw_http_respond(wsi, conn, 404, "text/plain; charset=utf-8", "not found\n",
                               10, false, NULL, 0, head);
    const char *name = strcmp(path, "/") == 0 ? "/index.html" : path;
    gw_http_header extra[] = {
        {"etag:", f->etag},
        /* Revalidate each time: pages and scripts change with the binary. */
        {"cache-control:", "no-cache"},
    };
    char inm[64];
    if (lws_hdr_copy(wsi, inm, sizeof(inm), WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0 &&
        strcmp(inm, f->etag) == 0)
        return gw_http_respond(wsi, conn, 304, NULL, NULL, 0, false, extra, 2, true);
    return gw_http_respond(wsi, conn, 200, gw_mime_type(name), f->data, f->len, false,
                           extra, 2, head);
}

/* The auditor pages hold no data (that comes from the API, which checks
 * again), but a non-auditor has no business loading them: 403, and a
 * visitor who is not logged in goes to the login page. */
static int serve_auditor_page(gw_server *srv, struct lws *wsi, gw_http_conn *conn,
                              const char *uri, bool head)
{
    gw_identity id;
    if (gw_identify(srv, wsi, &id) != 0) {
        static const gw_http_header to_login[] = {{"location:", "/"},
                                                  {"cache-control:", "no-store"}};
        return gw_http_respond(wsi, conn, 303, "text/plain; charset=utf-8", "log in first\n",
                               13, false, to_login, 2, head);
    }
    if (!gw_may_audit_any(srv, &id))
        return gw_http_respond(wsi, conn, 403, "text/plain; charset=utf-8",
                               "recordings are for auditors\n", 28, false, NULL, 0, head);
    return serve_static(wsi, conn, uri, head);
}

/* Answers a complete request: path checked, body (if any) read. */
static int route(gw_server *srv, struct lws *wsi, gw_http_conn *conn)
{
    const char *uri = conn->path;
    int method = conn->method;
    bool head = method == LWSHUMETH_HEAD;
    bool read_only = method == LWSHUMETH_GET || head;
    int rc;

    if (gw_http_path_check(uri, strlen(uri))) {
        rc = gw_http_respond(wsi, conn, 400, "text/plain; charset=utf-8", "bad request\n",
                             12, false, NULL, 0, head);
    } else if (strcmp(uri, "/healthz") == 0 && read_only) {
        rc = serve_health(srv, wsi, conn, head);
    } else if (strcmp(uri, "/metrics") == 0 && read_only) {
        rc = serve_metrics(srv, wsi, conn, head);
    } else if (strncmp(uri, "/api/", 5) == 0 || strcmp(uri, "/api") == 0) {
        rc = gw_api_route(srv, wsi, conn);
    } else if (!read_only) {
        static const gw_http_header allow[] = {{"allow:", "GET, HEAD"}};
        rc = gw_http_respond(wsi, conn, 405, "text/plain; charset=utf-8",
                             "method not allowed\n", 19, false, allow, 1, false);
    } else if (gw_recordings_page(uri)) {
        rc = serve_auditor_page(srv, wsi, conn, uri, head);
    } else {
        rc = serve_static(wsi, conn, uri, head);
    }

    if (log_enabled(LOG_DEBUG)) {
        char peer[64] = "";
        lws_get_peer_simple(wsi, peer, sizeof(peer));
        log_event(LOG_DEBUG, "http.request", "method=%s path=%s status=%d peer=%s",
                  method_name(method), log_q(uri), conn->status, log_q(peer));
    }
    return rc;
}

static bool has_body(int method)
{
    return method == LWSHUMETH_POST || method == LWSHUMETH_PUT || method == LWSHUMETH_PATCH;
}

int gw_http_on_request(gw_server *srv, struct lws *wsi, gw_http_conn *conn, const char *uri)
{
    char *uri_ptr = NULL;
    int uri_len = 0;
    gw_http_conn_release(conn);
    conn->req_too_large = false;
    conn->awaiting_body = false;
    conn->close_after = false;
    conn->method = lws_http_get_uri_and_method(wsi, &uri_ptr, &uri_len);

    /* lws has decoded the path; one that held a NUL ("/a%00b") no longer
     * matches its own length. Such paths are refused, not truncated. */
    if (!uri || (size_t)uri_len != strlen(uri) || (size_t)uri_len > GW_PATH_MAX) {
        conn->path[0] = '\0';
        conn->close_after = has_body(conn->method);
        return gw_http_respond(wsi, conn, 400, "text/plain; charset=utf-8",
                               "bad request\n", 12, false, NULL, 0, false);
    }
    memcpy(conn->path, uri, (size_t)uri_len + 1);
    if (!has_body(conn->method))
        return route(srv, wsi, conn);

    static const gw_http_header close_hdr[] = {{"connection:", "close"}};
    /* Our clients send small JSON bodies with a Content-Length; a chunked
     * body would have to be read to learn its size, so it is refused. */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        conn->close_after = true;
        return gw_http_respond(wsi, conn, 411, "application/json",
                               "{\"error\":\"a Content-Length is required\"}", 40, false,
                               close_hdr, 1, false);
    }
    char cl[32];
    if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return route(srv, wsi, conn); /* no length, no body (RFC 9112 6.3) */
    /* Refuse an announced oversized body before reading a byte of it. */
    if (strtoull(cl, NULL, 10) > GW_HTTP_REQ_BODY_MAX) {
        conn->close_after = true;
        return gw_http_respond(wsi, conn, 413, "application/json",
                               "{\"error\":\"request body too large\"}", 34, false,
                               close_hdr, 1, false);
    }
    conn->awaiting_body = true;
    return 0;
}

int gw_http_on_body(gw_server *srv, struct lws *wsi, gw_http_conn *conn, const void *in,
                    size_t len)
{
    (void)srv;
    (void)wsi;
    if (!conn->awaiting_body || conn->req_too_large || len == 0 || !in)
        return 0;
    if (conn->req_len + len > GW_HTTP_REQ_BODY_MAX) {
        /* A chunked body that grew too large: stop keeping it. */
        conn->req_too_large = true;
        return 0;
    }
    unsigned char *grown = realloc(conn->req_body, conn->req_len + len + 1);
    if (!grown)
        return -1;
    conn->req_body = grown;
    memcpy(conn->req_body + conn->req_len, in, len);
    conn->req_len += len;
    conn->req_body[conn->req_len] = '\0';
    return 0;
}

int gw_http_on_body_done(gw_server *srv, struct lws *wsi, gw_http_conn *conn)
{
    if (!conn->awaiting_body)
        return 0;
    conn->awaiting_body = false;
    if (conn->req_too_large)
        return gw_http_respond(wsi, conn, 413, "application/json",
                               "{\"error\":\"request body too large\"}", 34, false, NULL,
                               0, false);
    return route(srv, wsi, conn);
}
