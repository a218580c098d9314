/* The WebSocket connection core and the table of WebSocket endpoints.
 *
 * Every WebSocket the gateway serves (/ws/ssh, /ws/tunnel, later /ws/rdp)
 * goes through this core: it reassembles client messages (bounded), keeps a
 * bounded output queue, sends the last message and a real close frame with
 * code and reason, does flow control both ways, and runs the session's
 * idle and maximum-duration timers. What an endpoint does with the
 * messages is its own file (ws_ssh.c, ws_tunnel.c), reached through the
 * gw_endpoint table below.
 *
 * Loop thread only. The core allocates the endpoint's per-connection state
 * (state_size bytes, zeroed) when the WebSocket opens and frees it after
 * on_closed, when the connection is gone.
 */
#ifndef PST_GATEWAY_WS_CONN_H
#define PST_GATEWAY_WS_CONN_H

#include "gateway/metrics.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_server gw_server;
typedef struct gw_ws_conn gw_ws_conn;
typedef struct gw_ws_request gw_ws_request;

#define GW_WS_MSG_MAX (64u << 10)   /* one client message, reassembled */
#define GW_WS_OUT_HIGH (128u << 10) /* above this the endpoint stops reading its target */
#define GW_WS_OUT_LOW (32u << 10)   /* and resumes below this */

/* Close codes the endpoints use (RFC 6455 7.4.1). */
#define GW_WS_CLOSE_NORMAL 1000
#define GW_WS_CLOSE_GOING_AWAY 1001
#define GW_WS_CLOSE_INVALID 1007
#define GW_WS_CLOSE_POLICY 1008
#define GW_WS_CLOSE_TOO_BIG 1009
#define GW_WS_CLOSE_INTERNAL 1011
#define GW_WS_CLOSE_TRY_LATER 1013

typedef struct gw_endpoint {
    const char *path;     /* "/ws/ssh" */
    const char *protocol; /* "ssh": audit, metrics and messages */
    gw_proto proto;
    unsigned actions;     /* any of these on the VM admits the connection */
    bool needs_port;      /* ?port=N is part of the request (tunnel) */
    size_t state_size;    /* the endpoint's per-connection state */
    /* The WebSocket is open and the user may reach the VM (role checked). */
    void (*on_open)(gw_ws_conn *c);
    /* A whole client message. The buffer is the core's: valid during the
     * call, wiped after it. */
    void (*on_message)(gw_ws_conn *c, bool binary, unsigned char *msg, size_t len);
    /* The output queue went above GW_WS_OUT_HIGH (full) or back below
     * GW_WS_OUT_LOW (!full). */
    void (*on_output_full)(gw_ws_conn *c, bool full);
    /* A timer or the core ends the session (idle, max_duration): release
     * the back ends, unregister with reason. The core then sends message. */
    void (*on_cut)(gw_ws_conn *c, const char *reason);
    /* The connection is gone: release everything the state holds. */
    void (*on_closed)(gw_ws_conn *c);
} gw_endpoint;

/* The endpoint serving path, or NULL. */
const gw_endpoint *gw_endpoint_find(const char *path);

extern const gw_endpoint gw_endpoint_ssh;    /* ws_ssh.c */
extern const gw_endpoint gw_endpoint_tunnel; /* ws_tunnel.c */

/* ---- what endpoints call ------------------------------------------------ */

gw_server *gw_ws_server(const gw_ws_conn *c);
void *gw_ws_state(const gw_ws_conn *c);
/* The admission result: who, which VM, from where (owned by the core). */
gw_ws_request *gw_ws_req(const gw_ws_conn *c);
bool gw_ws_ending(const gw_ws_conn *c);

/* Queues a frame for the client. 0, or -ENOMEM (the core then ends the
 * connection with 1011). Output ahead of a slow client is bounded by the
 * endpoint stopping its source at on_output_full. */
int gw_ws_send(gw_ws_conn *c, const void *data, size_t len, bool text);
/* Sends data at once when nothing is queued and the socket took the last
 * frame whole (an echo: no wait for WRITEABLE); else queues it. */
int gw_ws_send_output(gw_ws_conn *c, const void *data, size_t len);
/* Sends obj as a text frame, taking the reference. */
void gw_ws_send_json(gw_ws_conn *c, json_t *obj);

/* The session's state, said in every status message as "state". Sets it
 * and sends {"type":"status","state":state,"message":message}. */
void gw_ws_set_state(gw_ws_conn *c, const char *state, const char *message);
/* A status message in the current state (a notice, a warning). */
void gw_ws_status(gw_ws_conn *c, const char *message, const char *warning);

/* Ends the connection: last is sent as the last message (taken; its
 * "message" is the close reason, cut to 123 bytes), then a close frame
 * with code once the queue has drained. Later calls do nothing. */
void gw_ws_end(gw_ws_conn *c, json_t *last, int close_code);
/* {"type":"error","state":"closed","reason":reason,"message":message}. */
void gw_ws_fail(gw_ws_conn *c, const char *reason, const char *message, int close_code);

/* Flow control toward the gateway: stops (or resumes) reading the client. */
void gw_ws_rx_pause(gw_ws_conn *c, bool paused);

/* Timers: the session ends after idle_s without gw_ws_touch and after
 * max_s in all (0: never), with a warning a minute before (or half the
 * time, when shorter). */
void gw_ws_set_timeouts(gw_ws_conn *c, int idle_s, int max_s);
void gw_ws_touch(gw_ws_conn *c);

/* "8 h", "90 min", "45 s". */
void gw_say_duration(int seconds, char *out, size_t n);

/* The lws protocol callback for every WebSocket endpoint. */
int gw_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len);

#endif
