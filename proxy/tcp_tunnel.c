/* A raw TCP connection to a VM's port, for the native tunnel: libuv's
 * uv_tcp on the loop, no protocol of its own. What it adds to a socket is
 * the session interface's contract: bounded input, back-pressure by not
 * reading, half-close both ways, and an end with a reason.
 *
 * Half-close: the client's EOF (PROXY_INPUT_EOF) becomes a shutdown(2)
 * after the bytes queued before it; the VM's EOF is reported as
 * PROXY_STATE_EOF. When both directions are closed the session ends with
 * PROXY_END_CLOSED. */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes read per callback. One buffer serves every tunnel on the loop:
 * libuv reads into it and hands it to us at once, and on_data is done with
 * it before the next read, so idle tunnels carry no read buffer. */
#define READ_BUF 65536

typedef struct write_rec {
    uv_write_t req;
    struct write_rec *next; /* while waiting for the connection */
    struct tcpt *owner;
    size_t len;
    char data[];
} write_rec;

typedef struct tcpt {
    proxy_session base; /* first: the interface's view */
    uv_loop_t *loop;
    proxy_callbacks cb;
    void *ud;

    uv_getaddrinfo_t gai;
    bool gai_pending;
    uv_tcp_t tcp;
    bool tcp_open;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    uv_timer_t timer; /* the connect timeout */
    bool timer_open;
    int handles_closing;
    int reqs_pending; /* connect, writes and shutdown not yet called back */

    bool connected;
    bool ended;
    bool closing;
    bool paused;
    bool reading;
    bool eof_wanted;  /* the client sent its EOF */
    bool shut_down;   /* ...and it was passed on */
    bool target_eof;  /* the VM sent its EOF */
    bool input_full;  /* told the caller to stop: tell it when it drains */
    size_t queued;    /* bytes taken but not yet written to the kernel */
    write_rec *waiting_head, *waiting_tail; /* before the connection is up */
    int port;
} tcpt;

static void maybe_free(tcpt *t);

static void end(tcpt *t, proxy_end why, const char *detail)
{
    if (t->ended)
        return;
    t->ended = true;
    if (t->timer_open)
        uv_timer_stop(&t->timer);
    if (t->reading) {
        uv_read_stop((uv_stream_t *)&t->tcp);
        t->reading = false;
    }
    if (t->cb.on_end && !t->closing)
        t->cb.on_end(t->ud, why, -1, detail ? detail : "");
}

static proxy_end end_of_errno(int uverr)
{
    switch (uverr) {
    case UV_ECONNREFUSED: return PROXY_END_REFUSED;
    case UV_ETIMEDOUT: return PROXY_END_TIMEOUT;
    case UV_ECONNRESET:
    case UV_EPIPE: return PROXY_END_RESET;
    default: return PROXY_END_UNREACHABLE;
    }
}

static void both_closed(tcpt *t)
{
    if (t->target_eof && t->shut_down && t->queued == 0)
        end(t, PROXY_END_CLOSED, "both sides closed");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static _Thread_local char read_buf[READ_BUF];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    tcpt *t = stream->data;
    if (t->ended || t->closing)
        return;
    if (n > 0) {
        if (t->cb.on_data)
            t->cb.on_data(t->ud, buf->base, (size_t)n);
        return;
    }
    if (n == 0)
        return; /* EAGAIN */
    uv_read_stop(stream);
    t->reading = false;
    if (n == UV_EOF) {
        t->target_eof = true;
        if (t->cb.on_state)
            t->cb.on_state(t->ud, PROXY_STATE_EOF, "the VM closed its side");
        if (!t->ended && !t->closing)
            both_closed(t);
        return;
    }
    end(t, end_of_errno((int)n), uv_strerror((int)n));
}

static void arm_reading(tcpt *t)
{
    bool want = t->connected && !t->paused && !t->target_eof && !t->ended && !t->closing;
    if (want == t->reading)
        return;
    if (want) {
        if (uv_read_start((uv_stream_t *)&t->tcp, on_alloc, on_read) == 0)
            t->reading = true;
    } else {
        uv_read_stop((uv_stream_t *)&t->tcp);
        t->reading = false;
    }
}

static void drained(tcpt *t)
{
    if (t->input_full && t->queued < PROXY_INPUT_MAX / 2) {
        t->input_full = false;
        if (t->cb.on_writable && !t->ended && !t->closing)
            t->cb.on_writable(t->ud);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    tcpt *t = req->data;
    t->reqs_pending--;
    if (!t->closing && !t->ended) {
        if (status < 0 && status != UV_ECANCELED)
            end(t, PROXY_END_RESET, uv_strerror(status));
        else
            both_closed(t);
    }
    maybe_free(t);
}

/* The client's EOF goes out after everything it sent before it: libuv
 * runs a shutdown once the writes queued ahead of it are done. */
static void pass_eof(tcpt *t)
{
    if (!t->eof_wanted || t->shut_down || !t->connected || t->ended)
        return;
    t->shutdown_req.data = t;
    if (uv_shutdown(&t->shutdown_req, (uv_stream_t *)&t->tcp, on_shutdown) != 0) {
        end(t, PROXY_END_RESET, "cannot close the VM's side");
        return;
    }
    t->reqs_pending++;
    t->shut_down = true;
}

static void on_written(uv_write_t *req, int status)
{
    write_rec *w = req->data;
    tcpt *t = w->owner;
    t->reqs_pending--;
    t->queued -= w->len;
    free(w);
    if (!t->closing && !t->ended) {
        if (status < 0)
            end(t, end_of_errno(status), uv_strerror(status));
        else
            drained(t);
    }
    maybe_free(t);
}

static int send_rec(tcpt *t, write_rec *w)
{
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    w->req.data = w;
    int rc = uv_write(&w->req, (uv_stream_t *)&t->tcp, &b, 1, on_written);
    if (rc == 0)
        t->reqs_pending++;
    return rc;
}

static write_rec *new_rec(tcpt *t, const void *buf, size_t len)
{
    write_rec *w = malloc(sizeof(*w) + len);
    if (!w)
        return NULL;
    w->owner = t;
    w->next = NULL;
    w->len = len;
    memcpy(w->data, buf, len);
    return w;
}

static void on_connected(uv_connect_t *req, int status)
{
    tcpt *t = req->data;
    t->reqs_pending--;
    if (t->closing || t->ended) {
        maybe_free(t);
        return;
    }
    if (status < 0) {
        end(t, end_of_errno(status), uv_strerror(status));
        return;
    }
    t->connected = true;
    uv_timer_stop(&t->timer);
    uv_tcp_nodelay(&t->tcp, 1);
    while (t->waiting_head) {
        write_rec *w = t->waiting_head;
        t->waiting_head = w->next;
        if (send_rec(t, w) != 0) {
            t->queued -= w->len;
            free(w);
            end(t, PROXY_END_RESET, "cannot write to the VM");
            return;
        }
    }
    t->waiting_tail = NULL;
    if (t->cb.on_state)
        t->cb.on_state(t->ud, PROXY_STATE_READY, "connected");
    if (t->ended || t->closing)
        return;
    pass_eof(t);
    arm_reading(t);
}

static void start_connect(tcpt *t, const struct sockaddr *sa)
{
    if (uv_tcp_init(t->loop, &t->tcp) != 0) {
        end(t, PROXY_END_LOCAL, "cannot make a socket");
        return;
    }
    t->tcp.data = t;
    t->tcp_open = true;
    t->connect_req.data = t;
    int rc = uv_tcp_connect(&t->connect_req, &t->tcp, sa, on_connected);
    if (rc != 0) {
        end(t, end_of_errno(rc), uv_strerror(rc));
        return;
    }
    t->reqs_pending++;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    tcpt *t = req->data;
    t->gai_pending = false;
    if (t->closing) {
        uv_freeaddrinfo(res);
        maybe_free(t);
        return;
    }
    if (t->ended) /* the connect timeout came first: connect nothing */
        ;
    else if (status != 0 || !res)
        end(t, PROXY_END_UNREACHABLE, uv_strerror(status));
    else
        start_connect(t, res->ai_addr);
    uv_freeaddrinfo(res);
}

static void on_timeout(uv_timer_t *timer)
{
    tcpt *t = timer->data;
    if (!t->connected)
        end(t, PROXY_END_TIMEOUT, "the VM's port did not answer in time");
}

static int tcpt_open(uv_loop_t *loop, const proxy_target *p, const proxy_callbacks *cb,
                     void *ud, proxy_session **out)
{
    *out = NULL;
    if (!p->host || p->port < 1 || p->port > 65535)
        return -EINVAL;
    tcpt *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->base.ops = &proxy_tcp_ops;
    t->loop = loop;
    t->cb = *cb;
    t->ud = ud;
    t->port = p->port;
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    t->timer_open = true;
    uv_timer_start(&t->timer, on_timeout,
                   (uint64_t)(p->connect_timeout_ms > 0 ? p->connect_timeout_ms : 10000), 0);
    *out = &t->base;
    if (t->cb.on_state)
        t->cb.on_state(ud, PROXY_STATE_CONNECTING, "connecting");
    if (t->closing) /* closed from that callback: connect nothing */
        return 0;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, p->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)p->port);
        start_connect(t, (struct sockaddr *)a4);
    } else if (inet_pton(AF_INET6, p->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)p->port);
        start_connect(t, (struct sockaddr *)a6);
    } else {
        /* A name: resolved on the thread pool, never on the loop. */
        char port[8];
        snprintf(port, sizeof(port), "%d", p->port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
        t->gai.data = t;
        if (uv_getaddrinfo(loop, &t->gai, on_resolved, p->host, port, &hints) != 0)
            end(t, PROXY_END_UNREACHABLE, "cannot resolve the VM's address");
        else
            t->gai_pending = true;
    }
    return 0;
}

static int tcpt_write(proxy_session *base, const void *buf, size_t len)
{
    tcpt *t = (tcpt *)base;
    if (t->ended || t->closing || t->eof_wanted)
        return -EPIPE;
    if (len == 0)
        return 0;
    size_t done = 0;
    /* The common case, a kernel with room: straight into the socket, no
     * copy, no request. */
    if (t->connected && t->queued == 0) {
        uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&t->tcp, &b, 1);
        if (n > 0)
            done = (size_t)n;
        else if (n < 0 && n != UV_EAGAIN) {
            end(t, end_of_errno(n), uv_strerror(n));
            return -EPIPE;
        }
    }
    if (done == len)
        return 0;
    write_rec *w = new_rec(t, (const char *)buf + done, len - done);
    if (!w)
        return -ENOMEM;
    t->queued += w->len;
    if (t->connected) {
        int rc = send_rec(t, w);
        if (rc != 0) {
            t->queued -= w->len;
            free(w);
            end(t, end_of_errno(rc), uv_strerror(rc));
            return -EPIPE;
        }
    } else {
        if (t->waiting_tail)
            t->waiting_tail->next = w;
        else
            t->waiting_head = w;
        t->waiting_tail = w;
    }
    if (t->queued > PROXY_INPUT_MAX) {
        t->input_full = true;
        return -ENOBUFS;
    }
    return 0;
}

static int tcpt_input(proxy_session *base, const proxy_input *in)
{
    tcpt *t = (tcpt *)base;
    if (in->kind != PROXY_INPUT_EOF)
        return -ENOTSUP;
    if (t->ended || t->closing)
        return -EPIPE;
    t->eof_wanted = true;
    pass_eof(t);
    return 0;
}

static void tcpt_pause(proxy_session *base, bool paused)
{
    tcpt *t = (tcpt *)base;
    if (t->paused == paused)
        return;
    t->paused = paused;
    arm_reading(t);
}

static void on_handle_closed(uv_handle_t *h)
{
    tcpt *t = h->data;
    t->handles_closing--;
    maybe_free(t);
}

/* Freed once nothing of libuv's still points at it: the resolver, the
 * handles, and the requests (which a closing handle calls back with
 * UV_ECANCELED). */
static void maybe_free(tcpt *t)
{
    if (!t->closing || t->gai_pending || t->handles_closing || t->reqs_pending ||
        t->tcp_open || t->timer_open)
        return;
    free(t);
}

static void tcpt_close(proxy_session *base)
{
    tcpt *t = (tcpt *)base;
    if (t->closing)
        return;
    t->closing = true;
    end(t, PROXY_END_LOCAL, NULL);
    while (t->waiting_head) {
        write_rec *w = t->waiting_head;
        t->waiting_head = w->next;
        free(w);
    }
    t->waiting_tail = NULL;
    if (t->gai_pending)
        uv_cancel((uv_req_t *)&t->gai); /* on_resolved frees, if it still must */
    if (t->tcp_open) {
        t->tcp_open = false;
        t->handles_closing++;
        uv_close((uv_handle_t *)&t->tcp, on_handle_closed);
    }
    if (t->timer_open) {
        t->timer_open = false;
        t->handles_closing++;
        uv_close((uv_handle_t *)&t->timer, on_handle_closed);
    }
    maybe_free(t);
}

const proxy_ops proxy_tcp_ops = {
    .name = "tcp",
    .open = tcpt_open,
    .write = tcpt_write,
    .input = tcpt_input,
    .resize = NULL,
    .pause = tcpt_pause,
    .close = tcpt_close,
};
