/* The WebSocket connection core (ws_conn.h): reassembly, the output queue,
 * the last message and close frame, flow control and timers, for every
 * endpoint. */
#include "gateway/internal.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>

#define WS_DIRECT_MAX 4096 /* output written at once when the path is clear */
/* lws_write's close opcode: lws 4.1 leaves it out of its public enum (its
 * comment sends callers to lws_close_reason) but handles the value 4 as a
 * close frame. The integration tests check a real close code arrives. */
#define WS_WRITE_CLOSE ((enum lws_write_protocol)4)
/* A warning goes out this long before a timeout cuts the session (or half
 * the timeout, when that is shorter). */
#define WS_WARN_MS 60000ull
/* While the client is not read (its target takes nothing), lws does not
 * watch its socket and would never see it die: it is probed this often. */
#define WS_PROBE_MS 5000ull

typedef struct out_frame {
    struct out_frame *next;
    size_t len;
    bool text;
    unsigned char data[]; /* LWS_PRE headroom, then the payload */
} out_frame;

struct gw_ws_conn {
    gw_server *srv;
    struct lws *wsi;
    const gw_endpoint *ep;
    gw_ws_request *req; /* admission result, owned */
    void *state;        /* the endpoint's, ep->state_size bytes */
    const char *state_name; /* said in status messages (static) */
    bool ending;
    out_frame *out_head, *out_tail;
    size_t out_bytes;
    bool out_full;
    bool rx_paused;
    unsigned char *msg;  /* grows to the largest message, at most GW_WS_MSG_MAX */
    size_t msg_cap;
    size_t msg_len;
    bool msg_binary;
    char end_reason[124]; /* the close frame's reason: 123 bytes at most */
    int close_code;
    bool close_sent;
    /* timeouts, in uv_now() milliseconds */
    uint64_t started_ms;
    uint64_t last_active_ms;
    int idle_s, max_s;
    bool warned_idle, warned_max;
};

static void arm_timeouts(gw_ws_conn *c);

gw_server *gw_ws_server(const gw_ws_conn *c) { return c->srv; }
void *gw_ws_state(const gw_ws_conn *c) { return c->state; }
gw_ws_request *gw_ws_req(const gw_ws_conn *c) { return c->req; }
bool gw_ws_ending(const gw_ws_conn *c) { return c->ending; }

static void note_output(gw_ws_conn *c)
{
    if (!c->out_full && c->out_bytes > GW_WS_OUT_HIGH) {
        c->out_full = true;
        if (c->ep->on_output_full)
            c->ep->on_output_full(c, true);
    }
}

int gw_ws_send(gw_ws_conn *c, const void *data, size_t len, bool text)
{
    out_frame *f = malloc(sizeof(*f) + LWS_PRE + len);
    if (!f) {
        /* Nothing more can be said; cut the connection. */
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
        return -ENOMEM;
    }
    f->next = NULL;
    f->len = len;
    f->text = text;
    memcpy(f->data + LWS_PRE, data, len);
    if (c->out_tail)
        c->out_tail->next = f;
    else
        c->out_head = f;
    c->out_tail = f;
    c->out_bytes += len;
    lws_callback_on_writable(c->wsi);
    note_output(c);
    return 0;
}

/* Interactive output (an echo, a prompt) goes out at once when nothing is
 * queued, instead of waiting a loop turn for WRITEABLE: that wait costs
 * lws two poll-mask changes (each an epoll_ctl pair in libuv) and a wakeup
 * per keystroke. What the kernel does not take, lws keeps and sends before
 * any later write (over HTTP/1.1 with no extension nothing else orders our
 * frames); while it holds such a remainder, output queues as usual. So lws
 * never holds more than one frame of WS_DIRECT_MAX, and no poll(2) is
 * needed to ask the socket first. */
int gw_ws_send_output(gw_ws_conn *c, const void *data, size_t len)
{
    if (c->out_head || c->ending || len > WS_DIRECT_MAX || lws_partial_buffered(c->wsi))
        return gw_ws_send(c, data, len, false);
    unsigned char frame[LWS_PRE + WS_DIRECT_MAX];
    memcpy(frame + LWS_PRE, data, len);
    if (lws_write(c->wsi, frame + LWS_PRE, len, LWS_WRITE_BINARY) < 0)
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
    return 0;
}

void gw_ws_send_json(gw_ws_conn *c, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text) {
        gw_ws_send(c, text, strlen(text), true);
        free(text);
    }
}

void gw_ws_set_state(gw_ws_conn *c, const char *state, const char *message)
{
    c->state_name = state;
    gw_ws_status(c, message, NULL);
}

void gw_ws_status(gw_ws_conn *c, const char *message, const char *warning)
{
    json_t *m = json_pack("{s:s,s:s,s:s}", "type", "status", "state",
                          c->state_name ? c->state_name : "open", "message", message);
    if (m && warning)
        json_object_set_new(m, "warning", json_string(warning));
    gw_ws_send_json(c, m);
}

void gw_ws_end(gw_ws_conn *c, json_t *last, int close_code)
{
    if (c->ending) {
        json_decref(last);
        return;
    }
    c->ending = true;
    c->state_name = "closed";
    json_t *m = json_object_get(last, "message");
    const char *reason = json_is_string(m) ? json_string_value(m) : "";
    size_t n = strnlen(reason, sizeof(c->end_reason) - 1); /* cut, on purpose */
    memcpy(c->end_reason, reason, n);
    c->end_reason[n] = '\0';
    c->close_code = close_code;
    gw_ws_send_json(c, last);
    lws_callback_on_writable(c->wsi);
}

void gw_ws_fail(gw_ws_conn *c, const char *reason, const char *message, int close_code)
{
    gw_ws_end(c, json_pack("{s:s,s:s,s:s,s:s}", "type", "error", "state", "closed", "reason",
                           reason, "message", message),
              close_code);
}

void gw_ws_rx_pause(gw_ws_conn *c, bool paused)
{
    if (c->rx_paused == paused)
        return;
    c->rx_paused = paused;
    lws_rx_flow_control(c->wsi, paused ? 0 : 1);
    if (paused)
        arm_timeouts(c); /* the probe */
}

/* ---- timers ---------------------------------------------------------- */

void gw_say_duration(int seconds, char *out, size_t n)
{
    if (seconds >= 3600 && seconds % 3600 == 0)
        snprintf(out, n, "%d h", seconds / 3600);
    else if (seconds >= 60 && seconds % 60 == 0)
        snprintf(out, n, "%d min", seconds / 60);
    else
        snprintf(out, n, "%d s", seconds);
}

static uint64_t warn_ms(int timeout_s)
{
    uint64_t t = (uint64_t)timeout_s * 1000;
    return t / 2 < WS_WARN_MS ? t / 2 : WS_WARN_MS;
}

/* Arms the lws timer for the next thing that can happen: a warning or a
 * cut. One timer per connection, set to the nearest deadline, so idle
 * sessions cost no wakeups. */
static void arm_timeouts(gw_ws_conn *c)
{
    uint64_t now = uv_now(c->srv->loop), next = UINT64_MAX;
    if (c->idle_s) {
        uint64_t cut = c->last_active_ms + (uint64_t)c->idle_s * 1000;
        uint64_t warn = cut - warn_ms(c->idle_s);
        next = c->warned_idle || warn <= now ? cut : warn;
    }
    if (c->max_s) {
        uint64_t cut = c->started_ms + (uint64_t)c->max_s * 1000;
        uint64_t warn = cut - warn_ms(c->max_s);
        uint64_t t = c->warned_max || warn <= now ? cut : warn;
        if (t < next)
            next = t;
    }
    if (c->rx_paused && now + WS_PROBE_MS < next)
        next = now + WS_PROBE_MS;
    if (next == UINT64_MAX)
        return;
    uint64_t delay = next > now ? next - now : 1;
    lws_set_timer_usecs(c->wsi, (lws_usec_t)delay * 1000);
}

void gw_ws_set_timeouts(gw_ws_conn *c, int idle_s, int max_s)
{
    c->started_ms = c->last_active_ms = uv_now(c->srv->loop);
    c->idle_s = idle_s;
    c->max_s = max_s;
    arm_timeouts(c);
}

void gw_ws_touch(gw_ws_conn *c)
{
    c->last_active_ms = uv_now(c->srv->loop);
    c->warned_idle = false; /* the timer re-reads last_active when it fires */
}

static void cut(gw_ws_conn *c, const char *reason, const char *message)
{
    if (c->ep->on_cut)
        c->ep->on_cut(c, reason);
    gw_ws_end(c, json_pack("{s:s,s:s,s:s,s:s}", "type", "closed", "state", "closed", "reason",
                           reason, "message", message),
              GW_WS_CLOSE_POLICY);
}

/* A client that is not read may have gone. Its unread bytes still sit in
 * the socket, ahead of its FIN, so a read would not tell; POLLRDHUP does
 * (a WebSocket client never half-closes TCP while it means to go on). */
static bool client_gone(gw_ws_conn *c)
{
    struct pollfd p = {.fd = lws_get_socket_fd(c->wsi), .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void on_timer(gw_ws_conn *c)
{
    if (c->ending)
        return;
    if (c->rx_paused && client_gone(c)) {
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
        return;
    }
    uint64_t now = uv_now(c->srv->loop);
    char msg[160], limit[32];
    if (c->max_s) {
        uint64_t end = c->started_ms + (uint64_t)c->max_s * 1000;
        if (now >= end) {
            gw_say_duration(c->max_s, limit, sizeof(limit));
            snprintf(msg, sizeof(msg), "the session reached its maximum duration of %s", limit);
            cut(c, "max_duration", msg);
            return;
        }
        if (!c->warned_max && now + warn_ms(c->max_s) >= end) {
            c->warned_max = true;
            snprintf(msg, sizeof(msg), "the session will end in %llu s: maximum duration",
                     (unsigned long long)((end - now + 999) / 1000));
            gw_ws_status(c, msg, "max_duration");
        }
    }
    if (c->idle_s) {
        uint64_t end = c->last_active_ms + (uint64_t)c->idle_s * 1000;
        if (now >= end) {
            gw_say_duration(c->idle_s, limit, sizeof(limit));
            snprintf(msg, sizeof(msg), "the session was idle for %s and has been closed", limit);
            cut(c, "idle", msg);
            return;
        }
        if (!c->warned_idle && now + warn_ms(c->idle_s) >= end) {
            c->warned_idle = true;
            snprintf(msg, sizeof(msg), "the session will close in %llu s unless you type",
                     (unsigned long long)((end - now + 999) / 1000));
            gw_ws_status(c, msg, "idle");
        }
    }
    arm_timeouts(c);
}

/* ---- the lws side ------------------------------------------------------ */

static int on_receive(gw_ws_conn *c, const void *in, size_t len)
{
    if (c->ending)
        return 0;
    if (lws_is_first_fragment(c->wsi)) {
        c->msg_len = 0;
        c->msg_binary = lws_frame_is_binary(c->wsi);
    }
    if (c->msg_len + len > GW_WS_MSG_MAX) {
        if (c->ep->on_cut)
            c->ep->on_cut(c, "message_too_large");
        gw_ws_fail(c, "message_too_large", "message too large", GW_WS_CLOSE_TOO_BIG);
        return 0;
    }
    if (c->msg_len + len > c->msg_cap) {
        /* Grow, wiping the old copy: it may hold a password. */
        size_t cap = c->msg_cap ? c->msg_cap : 1024;
        while (cap < c->msg_len + len)
            cap *= 2;
        if (cap > GW_WS_MSG_MAX)
            cap = GW_WS_MSG_MAX;
        unsigned char *grown = malloc(cap);
        if (!grown)
            return -1;
        if (c->msg) {
            memcpy(grown, c->msg, c->msg_len);
            OPENSSL_cleanse(c->msg, c->msg_cap);
            free(c->msg);
        }
        c->msg = grown;
        c->msg_cap = cap;
    }
    if (len)
        memcpy(c->msg + c->msg_len, in, len);
    c->msg_len += len;
    if (!lws_is_final_fragment(c->wsi))
        return 0;
    size_t n = c->msg_len;
    c->msg_len = 0;
    c->ep->on_message(c, c->msg_binary, c->msg, n);
    if (!c->msg_binary && c->msg)
        OPENSSL_cleanse(c->msg, n); /* a connect message carries secrets */
    return 0;
}

static int on_writable(gw_ws_conn *c)
{
    out_frame *f = c->out_head;
    if (f) {
        c->out_head = f->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_bytes -= f->len;
        int n = lws_write(c->wsi, f->data + LWS_PRE, f->len,
                          f->text ? LWS_WRITE_TEXT : LWS_WRITE_BINARY);
        free(f);
        if (n < 0)
            return -1;
        if (c->out_full && c->out_bytes < GW_WS_OUT_LOW) {
            c->out_full = false;
            if (c->ep->on_output_full)
                c->ep->on_output_full(c, false);
        }
        if (c->out_head || c->ending)
            lws_callback_on_writable(c->wsi);
        return 0;
    }
    if (c->ending && !c->close_sent) {
        /* Send the close frame ourselves: with Debian's lws on libuv,
         * lws_close_reason() followed by -1 drops the connection without
         * one (the browser would see 1006 and no reason). The client's
         * answering close ends the connection; a client that never
         * answers is cut after a few seconds. */
        unsigned char buf[LWS_PRE + 125];
        size_t rlen = strlen(c->end_reason);
        buf[LWS_PRE] = (unsigned char)(c->close_code >> 8);
        buf[LWS_PRE + 1] = (unsigned char)(c->close_code & 0xff);
        memcpy(buf + LWS_PRE + 2, c->end_reason, rlen);
        c->close_sent = true;
        if (lws_write(c->wsi, buf + LWS_PRE, rlen + 2, WS_WRITE_CLOSE) < 0)
            return -1;
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, 3);
    }
    return 0;
}

static void conn_free(gw_ws_conn *c)
{
    if (c->state) {
        if (c->ep->on_closed)
            c->ep->on_closed(c);
        free(c->state);
    }
    while (c->out_head) {
        out_frame *f = c->out_head;
        c->out_head = f->next;
        free(f);
    }
    if (c->msg) {
        OPENSSL_cleanse(c->msg, c->msg_cap);
        free(c->msg);
    }
    free(c->req);
    free(c);
}

static int on_established(struct lws *wsi, gw_ws_conn **slot)
{
    gw_server *srv = lws_context_user(lws_get_context(wsi));
    gw_ws_request *req = lws_get_opaque_user_data(wsi);
    lws_set_opaque_user_data(wsi, NULL);
    if (!req || !slot || !req->ep) {
        /* Not admitted through CONFIRM_UPGRADE: never happens unless lws
         * changes how it upgrades; refuse rather than guess. */
        log_event(LOG_ERROR, "ws.unadmitted", "has_req=%d", req != NULL);
        free(req);
        return -1;
    }
    gw_ws_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        free(req);
        return -1;
    }
    c->srv = srv;
    c->wsi = wsi;
    c->req = req;
    c->ep = req->ep;
    c->state = calloc(1, c->ep->state_size);
    if (!c->state) {
        conn_free(c);
        return -1;
    }
    *slot = c;
    const char *reason = NULL;
    char why[256];
    if (gw_ws_authorize(srv, req, &reason, why, sizeof(why)) != 0) {
        gw_ws_fail(c, reason, why, GW_WS_CLOSE_POLICY);
        return 0;
    }
    c->ep->on_open(c);
    return 0;
}

/* lws's per-session data is just a pointer: the connection is allocated at
 * ESTABLISHED and freed at CLOSED, so its size is this file's business. */
int gw_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    gw_ws_conn **slot = user;
    gw_ws_conn *c = slot ? *slot : NULL;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(wsi, slot);
    case LWS_CALLBACK_RECEIVE:
        return c ? on_receive(c, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return c ? on_writable(c) : -1;
    case LWS_CALLBACK_CLOSED:
        if (c) {
            *slot = NULL;
            conn_free(c);
        }
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        gw_ws_request_drop(wsi); /* admitted but never established */
        return 0;
    case LWS_CALLBACK_TIMER:
        if (c)
            on_timer(c);
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* The client answered the close frame we wrote ourselves; lws does
         * not know we sent one and would send a second. Just close. */
        return c && c->close_sent ? -1 : 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* lws hands the upgrade to the vhost's default protocol: us. */
        return gw_ws_on_confirm_upgrade(lws_context_user(lws_get_context(wsi)), wsi);
    default:
        return 0;
    }
}
