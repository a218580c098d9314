/* `postern tunnel`: see tunnel.h.
 *
 * One `conn` per tunnel: a libwebsockets client connection to
 * /ws/tunnel and its local side (stdin/stdout, or an accepted TCP
 * connection). Bytes from the local side become binary frames queued
 * toward the gateway; above TX_HIGH queued bytes the local side is no
 * longer read. Binary frames from the gateway become uv writes; above
 * RX_HIGH bytes not yet written the WebSocket is no longer read, so the
 * gateway (and behind it the VM) waits. Everything runs on one libuv
 * loop; a conn is freed once its WebSocket and its local handles are all
 * gone. */
#include "cli/tunnel.h"

#include "cli/exit_codes.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

/* The gateway takes messages of at most 64 KiB; a read fills one frame. */
#define READ_MAX (60 * 1024)
#define TX_HIGH (256 * 1024)
#define TX_LOW (64 * 1024)
#define RX_HIGH (256 * 1024)
#define RX_LOW (64 * 1024)
#define TEXT_MAX 4096

typedef struct frame {
    struct frame *next;
    size_t len;
    bool text;
    unsigned char pre[LWS_PRE]; /* lws writes the frame header here */
    unsigned char data[];
} frame;

typedef union local_stream {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tty_t tty;
    uv_tcp_t tcp;
} local_stream;

typedef struct run run;

typedef struct conn {
    run *r;
    struct conn *prev, *next;
    unsigned id;
    struct lws *wsi;
    /* The local side: in and out are the same handle for TCP. */
    local_stream tcp;
    uv_stream_t *in, *out;
    int local_handles;          /* open handles this conn must close */
    uv_shutdown_t shutdown_req;
    bool shutdown_started, shutdown_done, close_after_shutdown, local_closing;
    /* Toward the gateway. */
    frame *head, *tail;
    size_t queued;
    bool reading, local_eof, want_close, established, connected;
    /* Toward the local side. */
    size_t writing;
    bool rx_paused, remote_eof;
    /* The end, as the gateway said it. */
    bool ws_done, told;
    int code;
    char message[1100];
    char text[TEXT_MAX];
    size_t text_len;
    bool text_overflow;
} conn;

struct run {
    const cli_tunnel_opts *o;
    uv_loop_t *loop;
    struct lws_context *lws;
    SSL_CTX *ssl;
    char path[1024];
    char host_header[300];
    conn *conns;
    unsigned next_id;
    int exit_code;
    bool stopping;
    /* --stdio */
    local_stream std_in, std_out;
    bool std_in_open, std_out_open;
    /* --listen */
    uv_tcp_t listener;
    bool listener_open;
    int local_port;
    /* spawn */
    uv_process_t child;
    bool child_running;
    uv_signal_t sigint, sigterm;
};

static void conn_maybe_free(conn *c);
static void conn_local_close(conn *c);
static void on_local_handle_closed(uv_handle_t *h);
static void start_reading(conn *c);
static void run_stop(run *r, int code);

/* ---- messages -------------------------------------------------------- */

/* A line on stderr; with --listen it names the connection. */
static void say(const conn *c, const char *what)
{
    if (c->r->o->stdio)
        fprintf(stderr, "postern: %s\n", what);
    else
        fprintf(stderr, "postern: connection %u: %s\n", c->id, what);
}

static void set_end(conn *c, int code, const char *message)
{
    if (c->told)
        return;
    c->told = true;
    c->code = code;
    snprintf(c->message, sizeof(c->message), "%s", message);
}

static void refused_upgrade(conn *c, int status, const char *lws_why)
{
    const cli_tunnel_opts *o = c->r->o;
    char msg[sizeof(c->message)];
    if (o->trust->failure[0]) {
        set_end(c, CLI_TLS, o->trust->failure);
        return;
    }
    switch (status) {
    case 401:
        if (o->token_expires && time(NULL) >= o->token_expires) {
            set_end(c, CLI_TOKEN_EXPIRED,
                    "your login has expired: run `postern login` again");
        } else {
            set_end(c, CLI_TOKEN_INVALID,
                    "the gateway refused the token (revoked, expired, or not one of this "
                    "gateway's): run `postern login` again");
        }
        return;
    case 403:
        set_end(c, CLI_NOT_PERMITTED, "the gateway refused the connection (403 Forbidden)");
        return;
    case 400:
        set_end(c, CLI_USAGE, "the gateway refused the request as malformed (400): check --vm "
                              "and --port");
        return;
    case 404:
        set_end(c, CLI_FAILED, "the gateway has no tunnel endpoint (404): is this a Postern "
                               "gateway of this version?");
        return;
    case 503:
        set_end(c, CLI_GATEWAY_UNREACHABLE, "the gateway is shutting down (503): try again");
        return;
    default:
        break;
    }
    if (status)
        snprintf(msg, sizeof(msg), "the gateway refused the tunnel (HTTP %d)", status);
    else
        snprintf(msg, sizeof(msg), "cannot reach the gateway %s: %s", o->gateway->url,
                 lws_why && *lws_why ? lws_why : "connection failed");
    set_end(c, status ? CLI_FAILED : CLI_GATEWAY_UNREACHABLE, msg);
}

static void close_local_now(conn *c);

/* The VM sent its last byte and all of it was written: the local side
 * sees end of file. A pipe cannot be half-closed, so stdout is closed. */
static void on_eof_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    conn *c = req->data;
    c->shutdown_done = true;
    run *r = c->r;
    if (c->close_after_shutdown)
        close_local_now(c);
    else if (r->o->stdio && r->std_out_open && !uv_is_closing(&r->std_out.handle))
        uv_close(&r->std_out.handle, on_local_handle_closed);
}

static void on_control(conn *c, const char *text, size_t len)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *state = json_string_value(json_object_get(j, "state"));
    const char *reason = json_string_value(json_object_get(j, "reason"));
    const char *message = json_string_value(json_object_get(j, "message"));
    if (!type) {
        /* Not ours to act on; a newer gateway may say more. */
    } else if (strcmp(type, "status") == 0) {
        if (state && strcmp(state, "connected") == 0 && !c->connected) {
            c->connected = true;
            if (!c->r->o->stdio && !c->r->o->quiet)
                fprintf(stderr, "postern: connection %u: connected to %s port %d\n", c->id,
                        c->r->o->vm, c->r->o->port);
        } else if (message && json_object_get(j, "warning")) {
            say(c, message);
        }
    } else if (strcmp(type, "eof") == 0) {
        c->remote_eof = true;
        if (c->out && !c->shutdown_started && !c->local_closing) {
            c->shutdown_started = true;
            c->shutdown_req.data = c;
            if (uv_shutdown(&c->shutdown_req, c->out, on_eof_shutdown) != 0)
                on_eof_shutdown(&c->shutdown_req, -1);
        }
    } else if (strcmp(type, "error") == 0) {
        set_end(c, cli_exit_for_reason(reason), message ? message : "the tunnel failed");
    } else if (strcmp(type, "closed") == 0) {
        /* A cut by a timer carries a reason; a tunnel that simply ended
         * does not. */
        set_end(c, reason ? CLI_FAILED : CLI_OK, message ? message : "the tunnel ended");
    }
    json_decref(j);
}

/* ---- toward the local side --------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    conn *c;
    size_t len;
    char data[];
} write_req;

static void on_local_written(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;
    c->writing -= w->len;
    free(w);
    if (status < 0 && status != UV_ECANCELED && !c->local_closing) {
        /* The local program went away: end the tunnel. */
        c->want_close = true;
        if (c->wsi)
            lws_callback_on_writable(c->wsi);
    }
    if (c->rx_paused && c->writing < RX_LOW && c->wsi) {
        c->rx_paused = false;
        lws_rx_flow_control(c->wsi, 1);
    }
}

static void write_local(conn *c, const void *data, size_t len)
{
    if (!c->out || c->local_closing || c->shutdown_started || !len)
        return;
    write_req *w = malloc(sizeof(*w) + len);
    if (!w) {
        c->want_close = true;
        return;
    }
    w->c = c;
    w->len = len;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, c->out, &b, 1, on_local_written) != 0) {
        free(w);
        c->want_close = true;
        return;
    }
    c->writing += len;
    if (c->writing > RX_HIGH && !c->rx_paused && c->wsi) {
        c->rx_paused = true;
        lws_rx_flow_control(c->wsi, 0);
    }
}

/* ---- toward the gateway ------------------------------------------------ */

static void enqueue(conn *c, frame *f)
{
    f->next = NULL;
    if (c->tail)
        c->tail->next = f;
    else
        c->head = f;
    c->tail = f;
    if (!f->text)
        c->queued += f->len;
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    frame *f = malloc(sizeof(frame) + READ_MAX);
    *buf = f ? uv_buf_init((char *)f->data, READ_MAX) : uv_buf_init(NULL, 0);
}

static void stop_reading(conn *c)
{
    if (c->reading && c->in)
        uv_read_stop(c->in);
    c->reading = false;
}

static void on_local_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    frame *f = buf->base ? (frame *)(buf->base - offsetof(frame, data)) : NULL;
    if (nread > 0) {
        f->len = (size_t)nread;
        f->text = false;
        enqueue(c, f);
        if (c->queued >= TX_HIGH)
            stop_reading(c);
        return;
    }
    free(f);
    if (nread == 0)
        return;
    stop_reading(c);
    if (nread == UV_EOF) {
        c->local_eof = true;
        frame *e = malloc(sizeof(frame) + 16);
        if (!e) {
            c->want_close = true;
            return;
        }
        e->len = (size_t)snprintf((char *)e->data, 16, "{\"type\":\"eof\"}");
        e->text = true;
        enqueue(c, e);
        return;
    }
    /* A reset or another error on the local side: the tunnel ends. */
    c->local_eof = true;
    c->want_close = true;
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

static void start_reading(conn *c)
{
    if (c->reading || c->local_eof || !c->in || c->local_closing || c->want_close)
        return;
    if (uv_read_start(c->in, on_alloc, on_local_read) == 0)
        c->reading = true;
}

static int on_writeable(conn *c)
{
    if (c->want_close) {
        static const char why[] = "the client closed";
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)why, sizeof(why) - 1);
        return -1;
    }
    frame *f = c->head;
    if (!f)
        return 0;
    c->head = f->next;
    if (!c->head)
        c->tail = NULL;
    int n = lws_write(c->wsi, f->data, f->len, f->text ? LWS_WRITE_TEXT : LWS_WRITE_BINARY);
    if (!f->text)
        c->queued -= f->len;
    free(f);
    if (n < 0)
        return -1;
    if (c->head)
        lws_callback_on_writable(c->wsi);
    if (c->queued < TX_LOW)
        start_reading(c);
    return 0;
}

/* ---- the end of a conn --------------------------------------------------- */

static void close_local_now(conn *c)
{
    if (c->r->o->stdio) {
        run *r = c->r;
        if (r->std_in_open && !uv_is_closing(&r->std_in.handle)) {
            uv_close(&r->std_in.handle, on_local_handle_closed);
        }
        if (r->std_out_open && !uv_is_closing(&r->std_out.handle)) {
            uv_close(&r->std_out.handle, on_local_handle_closed);
        }
    } else if (!uv_is_closing(&c->tcp.handle)) {
        uv_close(&c->tcp.handle, on_local_handle_closed);
    }
}

static void on_final_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    conn *c = req->data;
    c->shutdown_done = true;
    close_local_now(c);
}

/* Flushes what is still to be written locally, then closes the local
 * side. */
static void conn_local_close(conn *c)
{
    if (c->local_closing)
        return;
    c->local_closing = true;
    stop_reading(c);
    if (c->shutdown_started && !c->shutdown_done) {
        c->close_after_shutdown = true; /* the eof's shutdown flushes first */
        return;
    }
    if (c->out && !c->shutdown_started) {
        c->shutdown_started = true;
        c->shutdown_req.data = c;
        if (uv_shutdown(&c->shutdown_req, c->out, on_final_shutdown) == 0)
            return;
    }
    close_local_now(c);
}

static void free_frames(conn *c)
{
    while (c->head) {
        frame *f = c->head;
        c->head = f->next;
        free(f);
    }
    c->tail = NULL;
}

static void conn_maybe_free(conn *c)
{
    if (!c->ws_done || c->local_handles > 0)
        return;
    run *r = c->r;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free_frames(c);
    if (r->o->stdio) {
        r->exit_code = c->code;
        free(c);
        run_stop(r, r->exit_code);
        return;
    }
    free(c);
}

static void conn_ws_done(conn *c)
{
    if (c->ws_done)
        return;
    c->ws_done = true;
    c->wsi = NULL;
    if (!c->told)
        set_end(c, CLI_FAILED, "the gateway closed the tunnel without saying why");
    if (c->code != CLI_OK || !c->r->o->stdio) {
        if (c->code != CLI_OK || !c->r->o->quiet)
            say(c, c->message);
    }
    conn_local_close(c);
    conn_maybe_free(c);
}

/* ---- the lws side -------------------------------------------------------- */

static int tunnel_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                           void *in, size_t len)
{
    conn *c = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        if (!c)
            return 0;
        unsigned char **p = in, *end = *p + len;
        char value[300];
        int n = snprintf(value, sizeof(value), "Bearer %s", c->r->o->token);
        int rc = n < 0 || (size_t)n >= sizeof(value) ||
                 lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                              (unsigned char *)value, n, p, end);
        OPENSSL_cleanse(value, sizeof(value));
        return rc ? -1 : 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (c) {
            c->established = true;
            start_reading(c);
            if (c->head)
                lws_callback_on_writable(wsi);
        }
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!c)
            return 0;
        if (lws_frame_is_binary(wsi)) {
            write_local(c, in, len);
        } else {
            if (c->text_len + len > sizeof(c->text))
                c->text_overflow = true;
            else {
                memcpy(c->text + c->text_len, in, len);
                c->text_len += len;
            }
            if (lws_is_final_fragment(wsi)) {
                if (!c->text_overflow)
                    on_control(c, c->text, c->text_len);
                c->text_len = 0;
                c->text_overflow = false;
            }
        }
        if (c->want_close)
            lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return c ? on_writeable(c) : 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c && !c->told && len > 2) {
            char why[130];
            size_t n = len - 2 < sizeof(why) - 1 ? len - 2 : sizeof(why) - 1;
            memcpy(why, (const char *)in + 2, n);
            why[n] = '\0';
            set_end(c, CLI_FAILED, why);
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c) {
            refused_upgrade(c, (int)lws_http_client_http_response(wsi), in ? (const char *)in : "");
            conn_ws_done(c);
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c)
            conn_ws_done(c);
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {"postern-tunnel", tunnel_callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

/* ---- starting a conn ----------------------------------------------------- */

static void on_local_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    c->local_handles--;
    conn_maybe_free(c);
}

static conn *conn_new(run *r)
{
    conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->r = r;
    c->id = ++r->next_id;
    c->next = r->conns;
    if (r->conns)
        r->conns->prev = c;
    r->conns = c;
    return c;
}

static int conn_connect(conn *c)
{
    run *r = c->r;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = r->lws;
    ci.address = r->o->gateway->host;
    ci.port = r->o->gateway->port;
    ci.ssl_connection = LCCSCF_USE_SSL;
    if (r->o->trust->has_pin) /* the pin names the certificate; no name to check */
        ci.ssl_connection |= LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK;
    ci.path = r->path;
    ci.host = r->host_header;
    ci.origin = NULL; /* a bearer token needs none (docs/protocol.md) */
    ci.protocol = NULL;
    ci.local_protocol_name = protocols[0].name;
    ci.ietf_version_or_minus_one = -1;
    ci.opaque_user_data = c;
    ci.pwsi = &c->wsi;
    if (!lws_client_connect_via_info(&ci)) {
        c->wsi = NULL;
        if (!c->told)
            refused_upgrade(c, 0, "cannot start the connection");
        return -1;
    }
    return 0;
}

static void on_accept(uv_stream_t *server, int status)
{
    run *r = server->data;
    if (status < 0 || r->stopping)
        return;
    conn *c = conn_new(r);
    if (!c)
        return;
    uv_tcp_init(r->loop, &c->tcp.tcp);
    c->tcp.handle.data = c;
    c->local_handles = 1;
    c->in = c->out = &c->tcp.stream;
    if (uv_accept(server, c->in) != 0) {
        c->ws_done = true;
        c->told = true;
        conn_local_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp.tcp, 1);
    if (conn_connect(c) != 0)
        conn_ws_done(c);
}

/* ---- the run --------------------------------------------------------------- */

static void run_stop(run *r, int code)
{
    if (r->stopping)
        return;
    r->stopping = true;
    r->exit_code = code;
    uv_stop(r->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    run *r = s->data;
    if (r->child_running)
        uv_process_kill(&r->child, signum);
    else
        run_stop(r, CLI_OK);
}

static void on_child_exit(uv_process_t *p, int64_t status, int term_signal)
{
    run *r = p->data;
    r->child_running = false;
    run_stop(r, term_signal ? 128 + term_signal : (int)status);
}

static int open_std(run *r, local_stream *s, int fd, bool readable, const char *what)
{
    int rc;
    switch (uv_guess_handle(fd)) {
    case UV_TTY:
        rc = uv_tty_init(r->loop, &s->tty, fd, readable);
        break;
    case UV_NAMED_PIPE:
        rc = uv_pipe_init(r->loop, &s->pipe, 0);
        if (rc == 0 && (rc = uv_pipe_open(&s->pipe, fd)) != 0)
            uv_close(&s->handle, NULL);
        break;
    case UV_TCP:
        rc = uv_tcp_init(r->loop, &s->tcp);
        if (rc == 0 && (rc = uv_tcp_open(&s->tcp, fd)) != 0)
            uv_close(&s->handle, NULL);
        break;
    default:
        fprintf(stderr, "postern: %s must be a pipe, a socket or a terminal for --stdio\n", what);
        return -1;
    }
    if (rc != 0) {
        fprintf(stderr, "postern: cannot use %s: %s\n", what, uv_strerror(rc));
        return -1;
    }
    return 0;
}

static int start_stdio(run *r)
{
    if (open_std(r, &r->std_in, 0, true, "stdin") != 0)
        return CLI_FAILED;
    r->std_in_open = true;
    if (open_std(r, &r->std_out, 1, false, "stdout") != 0)
        return CLI_FAILED;
    r->std_out_open = true;
    conn *c = conn_new(r);
    if (!c)
        return CLI_FAILED;
    r->std_in.handle.data = r->std_out.handle.data = c;
    c->in = &r->std_in.stream;
    c->out = &r->std_out.stream;
    c->local_handles = 2;
    if (conn_connect(c) != 0)
        conn_ws_done(c);
    return CLI_OK;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    return sa->sa_family == AF_INET6 &&
           IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

static int parse_listen(const char *spec, struct sockaddr_storage *ss)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof(host))
        return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    char *e;
    long port = strtol(colon + 1, &e, 10);
    if (*e || e == colon + 1 || port < 0 || port > 65535)
        return -1;
    if (strcmp(host, "localhost") == 0 || !host[0])
        snprintf(host, sizeof(host), "127.0.0.1");
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || host[n - 1] != ']')
            return -1;
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
    }
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
}

static char *replace_port(const char *arg, int port)
{
    char num[8];
    snprintf(num, sizeof(num), "%d", port);
    size_t n = 0;
    for (const char *p = arg; (p = strstr(p, "{port}")); p += 6)
        n++;
    char *out = malloc(strlen(arg) + n * strlen(num) + 1), *w = out;
    if (!out)
        return NULL;
    for (const char *p = arg; *p;) {
        if (strncmp(p, "{port}", 6) == 0) {
            w = stpcpy(w, num);
            p += 6;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    return out;
}

static int start_child(run *r)
{
    size_t n = 0;
    while (r->o->spawn_argv[n])
        n++;
    char **argv = calloc(n + 1, sizeof(char *));
    if (!argv)
        return CLI_FAILED;
    for (size_t i = 0; i < n; i++)
        argv[i] = replace_port(r->o->spawn_argv[i], r->local_port);
    uv_process_options_t po;
    memset(&po, 0, sizeof(po));
    uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = 0},
                                     {.flags = UV_INHERIT_FD, .data.fd = 1},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    po.file = argv[0];
    po.args = argv;
    po.exit_cb = on_child_exit;
    po.stdio = stdio;
    po.stdio_count = 3;
    r->child.data = r;
    int rc = uv_spawn(r->loop, &r->child, &po);
    for (size_t i = 0; i < n; i++)
        free(argv[i]);
    free(argv);
    if (rc != 0) {
        fprintf(stderr, "postern: cannot start %s: %s\n", r->o->spawn_argv[0], uv_strerror(rc));
        uv_close((uv_handle_t *)&r->child, NULL);
        return CLI_FAILED;
    }
    r->child_running = true;
    return CLI_OK;
}

static int start_listen(run *r)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (parse_listen(r->o->listen, &ss) != 0) {
        fprintf(stderr, "postern: --listen wants HOST:PORT (e.g. 127.0.0.1:2222), not '%s'\n",
                r->o->listen);
        return CLI_USAGE;
    }
    if (!is_loopback((struct sockaddr *)&ss)) {
        fprintf(stderr, "postern: --listen %s: only a loopback address (127.0.0.1, [::1]): a "
                        "listener others can reach would lend them your login\n",
                r->o->listen);
        return CLI_USAGE;
    }
    uv_tcp_init(r->loop, &r->listener);
    r->listener_open = true;
    r->listener.data = r;
    int rc = uv_tcp_bind(&r->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&r->listener, 128, on_accept);
    if (rc != 0) {
        fprintf(stderr, "postern: cannot listen on %s: %s\n", r->o->listen, uv_strerror(rc));
        return CLI_FAILED;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&r->listener, (struct sockaddr *)&bound, &blen);
    r->local_port = ntohs(bound.ss_family == AF_INET6
                              ? ((struct sockaddr_in6 *)&bound)->sin6_port
                              : ((struct sockaddr_in *)&bound)->sin_port);
    {   /* always: with port 0 it is how the user learns the port */
        char name[64] = "";
        if (bound.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&bound, name, sizeof(name));
        else
            uv_ip4_name((struct sockaddr_in *)&bound, name, sizeof(name));
        fprintf(stderr, "postern: listening on %s%s%s:%d for %s port %d\n",
                bound.ss_family == AF_INET6 ? "[" : "", name,
                bound.ss_family == AF_INET6 ? "]" : "", r->local_port, r->o->vm, r->o->port);
        fflush(stderr);
    }
    return r->o->spawn_argv ? start_child(r) : CLI_OK;
}

static void url_escape(const char *in, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && w + 4 < len; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            out[w++] = (char)*p;
        } else {
            out[w++] = '%';
            out[w++] = hex[*p >> 4];
            out[w++] = hex[*p & 15];
        }
    }
    out[w] = '\0';
}

static void close_handle(uv_handle_t *h, bool *open)
{
    if (*open && !uv_is_closing(h))
        uv_close(h, NULL);
    *open = false;
}

/* Ends every conn and closes every handle, as API-NOTES says a foreign
 * loop wants: destroy the lws context, close ours, run the loop dry. */
static void teardown(run *r)
{
    r->stopping = true;
    for (conn *c = r->conns; c; c = c->next) {
        c->told = true; /* no message for a conn we end ourselves */
        stop_reading(c);
        if (!c->local_closing) {
            c->local_closing = true;
            close_local_now(c);
        }
    }
    /* With a foreign loop lws tears down in two passes (as the gateway
     * does): the first closes its handles, the second, once the loop has
     * run their callbacks, frees the context. */
    struct lws_context *lws = r->lws;
    if (lws)
        lws_context_destroy(lws);
    r->lws = NULL;
    /* Conns whose WebSocket lws did not report closed. */
    for (conn *c = r->conns, *next; c; c = next) {
        next = c->next;
        c->ws_done = true;
        c->wsi = NULL;
    }
    close_handle((uv_handle_t *)&r->listener, &r->listener_open);
    if (r->child_running)
        uv_process_kill(&r->child, SIGTERM);
    if (uv_is_active((uv_handle_t *)&r->child) || r->child.data)
        if (!uv_is_closing((uv_handle_t *)&r->child))
            uv_close((uv_handle_t *)&r->child, NULL);
    if (!uv_is_closing((uv_handle_t *)&r->sigint))
        uv_close((uv_handle_t *)&r->sigint, NULL);
    if (!uv_is_closing((uv_handle_t *)&r->sigterm))
        uv_close((uv_handle_t *)&r->sigterm, NULL);
    while (uv_run(r->loop, UV_RUN_DEFAULT) != 0)
        ; /* a conn freed here may uv_stop: run on until all is closed */
    if (lws) {
        lws_context_destroy(lws);
        while (uv_run(r->loop, UV_RUN_DEFAULT) != 0)
            ;
    }
    /* Conns whose handles closed before they were marked done. */
    while (r->conns) {
        conn *c = r->conns;
        r->conns = c->next;
        free_frames(c);
        free(c);
    }
}

int cli_tunnel_run(const cli_tunnel_opts *o)
{
    run r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    char vm[600];
    url_escape(o->vm, vm, sizeof(vm));
    snprintf(r.path, sizeof(r.path), "/ws/tunnel?vm=%s&port=%d", vm, o->port);
    bool v6 = strchr(o->gateway->host, ':') != NULL;
    snprintf(r.host_header, sizeof(r.host_header), "%s%s%s:%d", v6 ? "[" : "", o->gateway->host,
             v6 ? "]" : "", o->gateway->port);
    signal(SIGPIPE, SIG_IGN);

    char err[256];
    r.ssl = cli_tls_ctx_new(o->trust, err, sizeof(err));
    if (!r.ssl) {
        fprintf(stderr, "postern: %s\n", err);
        return CLI_TLS;
    }
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        SSL_CTX_free(r.ssl);
        return CLI_FAILED;
    }
    r.loop = &loop;
    uv_signal_init(&loop, &r.sigint);
    uv_signal_init(&loop, &r.sigterm);
    r.sigint.data = r.sigterm.data = &r;
    uv_signal_start(&r.sigint, on_signal, SIGINT);
    uv_signal_start(&r.sigterm, on_signal, SIGTERM);

    lws_set_log_level(getenv("POSTERN_DEBUG") ? LLL_ERR | LLL_WARN | LLL_NOTICE : 0, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    void *loops[] = {&loop};
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.foreign_loops = loops;
    info.provided_client_ssl_ctx = r.ssl;
    /* As on the gateway: a buffer larger than a TLS record, so a record
     * is never left half-read inside OpenSSL on the libuv loop. */
    info.pt_serv_buf_size = 32768;
    info.user = &r;
    r.lws = lws_create_context(&info);
    int code = CLI_OK;
    if (!r.lws) {
        fprintf(stderr, "postern: cannot start the WebSocket client\n");
        code = CLI_FAILED;
    } else {
        code = o->stdio ? start_stdio(&r) : start_listen(&r);
    }
    if (code == CLI_OK && !r.stopping)
        uv_run(&loop, UV_RUN_DEFAULT);
    if (code == CLI_OK)
        code = r.exit_code;
    teardown(&r);
    uv_loop_close(&loop);
    SSL_CTX_free(r.ssl);
    return code;
}
