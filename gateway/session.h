/* The session core: what every back end's session shares, whatever the
 * endpoint. Admission (the JIT gate and the caps), the registry entry, the
 * audit events session.start and session.end (with bytes each way and the
 * duration), the metrics, the recording policy, and the wiring between a
 * proxy session and its WebSocket: bytes and back-pressure both ways, the
 * target's identity learned on first use, and the end in words.
 *
 * An endpoint's per-connection state starts with a gw_session; the
 * endpoint fills in the hooks and calls the functions below. Loop thread
 * only. The session owns its proxy session and recording and releases
 * both in gw_session_stop (idempotent).
 */
#ifndef PST_GATEWAY_SESSION_H
#define PST_GATEWAY_SESSION_H

#include "gateway/internal.h"
#include "gateway/ws_conn.h"
#include "proxy/proxy.h"

struct recording;

typedef struct gw_session gw_session;

typedef struct {
    /* Words for the user when the target ends the session (message is
     * n bytes); the session core adds the reason code and close code. */
    void (*end_words)(gw_session *s, proxy_end why, int exit_status, char *message, size_t n);
    /* Progress of the target; the endpoint says it to its client. */
    void (*on_state)(gw_session *s, proxy_state st, const char *message);
    /* Bytes from the target, before they are sent to the client (the
     * console records them). NULL: none. */
    void (*on_output)(gw_session *s, const char *buf, size_t len);
    /* The session ended normally (both sides closed, shell exited): the
     * endpoint's last message. NULL: {"type":"closed"} with the words. */
    json_t *(*closed_message)(gw_session *s, const char *words, int exit_status);
} gw_session_hooks;

struct gw_session {
    gw_ws_conn *ws;
    gw_server *srv;
    const gw_session_hooks *hooks;
    gw_session_entry entry;  /* id, user, VM, bytes: the registry's view */
    bool registered;
    proxy_session *proxy;
    char vm_name[GW_NAME_MAX + 1];
    int port;                /* the VM port this session reaches */
    bool touch_on_output;    /* output counts as activity (tunnels) */
    /* why the target is not read: any of these pauses it */
    bool out_full;           /* the client's queue is above GW_WS_OUT_HIGH */
    bool rec_full;           /* the recorder's queue is above its mark */
    bool rec_waiting;        /* a required recording is not confirmed yet */
    bool rx_paused;          /* the target does not take input: client not read */
    struct recording *rec;   /* NULL: not recorded (or the recording stopped) */
    bool rec_required;
};

/* Binds s to its connection (from the endpoint's on_open). */
void gw_session_init(gw_session *s, gw_ws_conn *c, const gw_session_hooks *hooks);

/* Admits the session on vm for action at port: the JIT gate, then the
 * caps, then session.start in the audit log (nothing starts unaudited),
 * then the registry and metrics. 0; or the refusal was audited and sent to
 * the client (the connection is ending) and a negative code returned.
 * login is the VM account it logs into (audit), or NULL. */
int gw_session_admit(gw_session *s, const gw_vm *vm, unsigned action, const char *login);

/* Starts the recording the VM's policy asks for (consoles). 0, or the
 * session was refused (required and impossible) and is ending. */
int gw_session_record(gw_session *s, const gw_vm *vm, int cols, int rows);

/* Opens the target. The session's timers start here, from the config
 * (and no later than the login or token ends). 0, or the session is
 * ending with the reason told. */
int gw_session_connect(gw_session *s, const proxy_target *t);

/* Client bytes toward the target: counted, recorded when the config asks,
 * back-pressure applied. */
void gw_session_input(gw_session *s, const void *buf, size_t len);

/* Closes the proxy session and the recording, unregisters with reason
 * (audit session.end). Safe to repeat. */
void gw_session_stop(gw_session *s, const char *reason);

/* Stops, then ends the connection with an error message. */
void gw_session_fail(gw_session *s, const char *reason, const char *message, int close_code);

/* The target is read only while the client and the recorder keep up (and
 * a required recording is ready). */
void gw_session_apply_pause(gw_session *s);

/* For gw_endpoint.on_output_full / on_cut / on_closed of endpoints whose
 * state starts with a gw_session. */
void gw_session_on_output_full(gw_ws_conn *c, bool full);
void gw_session_on_cut(gw_ws_conn *c, const char *reason);
void gw_session_on_closed(gw_ws_conn *c);

/* A small file's text (at most max bytes), NUL-terminated; NULL when it
 * cannot be read or is empty. The caller frees. */
char *gw_read_small_file(const char *path, size_t max);

/* The JIT gate (jit.c): 0 when vm needs no grant for port, or the
 * identity holds a live one from source; else PST_E_DENIED with why. */
int gw_jit_admit(gw_server *srv, const gw_vm *vm, const gw_identity *id, int port,
                 const char *source, char *why, size_t whylen);

#endif
