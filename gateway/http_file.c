/* A response body streamed from a file: libuv fs requests read one chunk
 * at a time into the connection's buffer, HTTP_WRITEABLE sends it and
 * asks for the next. Memory per download is one chunk whatever the file's
 * size, and the loop never waits on the disk. */
#include "gateway/internal.h"

#include "common/log.h"

#include <stdlib.h>
#include <unistd.h>

#define GW_FILE_CHUNK 16384 /* one TLS record per write */

struct gw_http_file {
    uv_fs_t req;
    struct lws *wsi;     /* NULL once the connection went away */
    gw_http_conn *conn;
    int fd;
    uint64_t offset;     /* next byte to read */
    uint64_t left;       /* bytes still to read */
    size_t have;         /* bytes in buf waiting to be sent */
    bool reading;
    unsigned char buf[LWS_PRE + GW_FILE_CHUNK];
};

static void file_free(gw_http_file *f)
{
    if (f->fd >= 0)
        close(f->fd); /* a local file: close(2) does not wait on the disk */
    free(f);
}

static void on_read(uv_fs_t *req)
{
    gw_http_file *f = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    f->reading = false;
    if (!f->wsi) {
        file_free(f);
        return;
    }
    if (n <= 0) {
        /* The file shrank or failed under us: the promised length cannot
         * be kept, so the connection is cut rather than left hanging. */
        log_event(LOG_WARN, "http.file.read_failed", "err=%s",
                  n < 0 ? uv_strerror((int)n) : "end of file");
        lws_set_timeout(f->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
        return;
    }
    f->have = (size_t)n;
    f->offset += (uint64_t)n;
    f->left -= (uint64_t)n;
    lws_callback_on_writable(f->wsi);
}

static int start_read(gw_server *srv, gw_http_file *f)
{
    size_t want = f->left < GW_FILE_CHUNK ? (size_t)f->left : GW_FILE_CHUNK;
    uv_buf_t b = uv_buf_init((char *)f->buf + LWS_PRE, (unsigned)want);
    f->req.data = f;
    int rc = uv_fs_read(srv->loop, &f->req, f->fd, &b, 1, (int64_t)f->offset, on_read);
    if (rc == 0)
        f->reading = true;
    return rc;
}

int gw_http_respond_file(struct lws *wsi, gw_http_conn *conn, int status,
                         const char *content_type, int fd, uint64_t offset, uint64_t len,
                         const gw_http_header *extra, size_t nextra, bool head_only)
{
    gw_server *srv = lws_context_user(lws_get_context(wsi));
    gw_http_file *f = calloc(1, sizeof(*f));
    if (!f) {
        close(fd);
        return gw_http_error_json(wsi, conn, 500, "out of memory");
    }
    f->fd = fd;
    f->offset = offset;
    f->left = len;
    f->wsi = wsi;
    f->conn = conn;
    /* Headers now, with the length (no body pointer: it follows from
     * WRITEABLE); a HEAD or an empty body ends the transaction there. */
    int rc = gw_http_respond(wsi, conn, status, content_type, NULL, (size_t)len, false, extra,
                             nextra, head_only);
    if (rc != 0 || head_only || len == 0) {
        file_free(f);
        return rc;
    }
    conn->file = f;
    if (start_read(srv, f) != 0) {
        conn->file = NULL;
        file_free(f);
        return -1;
    }
    return 0;
}

int gw_http_file_write(struct lws *wsi, gw_http_conn *conn)
{
    gw_http_file *f = conn->file;
    gw_server *srv = lws_context_user(lws_get_context(wsi));
    if (f->reading || !f->have)
        return 0; /* on_read asks for WRITEABLE again */
    bool last = f->left == 0;
    int n = lws_write(wsi, f->buf + LWS_PRE, f->have, last ? LWS_WRITE_HTTP_FINAL
                                                           : LWS_WRITE_HTTP);
    if (n != (int)f->have)
        return -1;
    f->have = 0;
    if (last) {
        conn->file = NULL;
        file_free(f);
        return gw_http_transaction_done(wsi, conn);
    }
    return start_read(srv, f) == 0 ? 0 : -1;
}

void gw_http_file_abandon(gw_http_conn *conn)
{
    gw_http_file *f = conn->file;
    if (!f)
        return;
    conn->file = NULL;
    if (f->reading)
        f->wsi = NULL; /* on_read frees it */
    else
        file_free(f);
}
