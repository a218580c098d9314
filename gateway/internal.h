/* Gateway-internal types shared by server.c and the HTTP handlers. Not part
 * of any public interface. Loop thread only. */
#ifndef PST_GATEWAY_INTERNAL_H
#define PST_GATEWAY_INTERNAL_H

#include "gateway/config.h"
#include "gateway/http_path.h"
#include "gateway/metrics.h"
#include "gateway/sessions.h"
#include "gateway/server.h"
#include "gateway/tls_cert.h"
#include "gateway/ws_conn.h"

#include "auth/auth.h"

#include <libwebsockets.h>
#include <stdbool.h>

typedef struct {
    char name[GW_HOST_MAX + 16];
    char iface[GW_HOST_MAX + 1];
} gw_vhost_strings;

struct gw_server {
    uv_loop_t *loop;
    struct lws_context *lws;
    gw_config *cfg;
    gw_metrics metrics;
    bool draining;
    bool stopping;
    bool terminating; /* grace over: sessions are being told */
    bool lws_first_destroy_done;
    uv_timer_t grace_timer;
    bool grace_timer_open;
    gw_server_stopped_cb stopped;
    void *stopped_data;
    char cert_path[TLS_PATH_MAX];
    char key_path[TLS_PATH_MAX];
    char fingerprint[TLS_FINGERPRINT_LEN];
    gw_vhost_strings *vhost_strings; /* one per vhost, as long as lws runs */
    size_t nvhosts;
    gw_sessions sessions;     /* live sessions, for caps */
    /* identity */
    auth_users *users;        /* replaced whole on SIGHUP */
    auth_store *store;        /* <state_dir>/state.db */
    auth_throttle *throttle_users;
    auth_throttle *throttle_addrs;
    auth_audit *audit;        /* <state_dir>/audit.log */
    char dummy_hash[AUTH_HASH_MAX];
    uv_timer_t audit_sync_timer; /* every second; also runs the trim below */
    bool audit_sync_running;
    bool audit_timer_open;
    bool trim_wanted;         /* the last session ended: malloc_trim on the next tick */

    /* recordings */
    struct rec_store *recordings; /* NULL when the store could not be opened */
    char instance[GW_NAME_MAX + 1];
    uv_timer_t sweep_timer;       /* the daily retention sweep */
    bool sweep_timer_open;
    bool sweep_running;
};

/* Largest HTTP response body we build in memory (metrics, JSON). */
#define GW_HTTP_BODY_MAX (1u << 20)

#define GW_SESSION_COOKIE "postern_session"

typedef struct gw_http_job gw_http_job;
typedef struct gw_http_file gw_http_file;

/* Who made a request, as gw_identify() found out. */
typedef struct {
    char user[AUTH_NAME_MAX + 1];
    const auth_user *account;   /* in srv->users; valid during this callback */
    bool via_cookie;
    bool via_token;
    bool mfa;
    unsigned allowed_actions;   /* a token's restriction; ~0u for sessions */
    int64_t expires;            /* when the login session or token ends */
    char session_id[AUTH_SESSION_ID_LEN + 1];
    char token_id[AUTH_TOKEN_ID_LEN + 1];
} gw_identity;

/* Largest request body accepted (JSON API calls); larger gets 413. */
#define GW_HTTP_REQ_BODY_MAX (64u << 10)

/* Per-connection HTTP state (lws allocates it as the protocol's
 * per-session data and zeroes it; gw_http_conn_release frees what it
 * holds). One request at a time: lws does not pipeline. */
typedef struct gw_http_conn {
    /* the request being read */
    int method;                     /* LWSHUMETH_* */
    char path[GW_PATH_MAX + 1];
    unsigned char *req_body;        /* malloc'd, at most GW_HTTP_REQ_BODY_MAX */
    size_t req_len;
    bool req_too_large;
    bool awaiting_body;
    /* the response being written */
    const unsigned char *body;      /* points into owned_body or static data */
    unsigned char *owned_body;
    size_t body_len;
    size_t body_sent;
    int status;
    bool close_after;               /* close instead of keeping alive */
    /* work on the thread pool (http_job.c), then its answer */
    gw_http_job *job;
    gw_http_job *job_done;
    /* a body streamed from a file (http_file.c) */
    gw_http_file *file;
} gw_http_conn;

typedef struct {
    const char *name; /* with trailing colon, lowercase: "location:" */
    const char *value;
} gw_http_header;

/* Sends a complete response: status line, the security headers, extra
 * headers, then the body. The body is not copied: static data is passed
 * with owned=false; a malloc'd body with owned=true becomes the
 * connection's and is freed once sent (or when the connection dies).
 * Returns 0 to keep the connection, -1 to close it (the lws convention). */
int gw_http_respond(struct lws *wsi, gw_http_conn *conn, int status,
                    const char *content_type, const void *body, size_t len, bool owned,
                    const gw_http_header *extra, size_t nextra, bool head_only);

/* {"error": message} with the given status. */
int gw_http_error_json(struct lws *wsi, gw_http_conn *conn, int status,
                       const char *message);

/* Sends the next chunk of a pending body; called from HTTP_WRITEABLE. */
int gw_http_write_body(struct lws *wsi, gw_http_conn *conn);

/* Ends a transaction once its response is out: keeps the connection for
 * the next request (0) unless it must close (-1). */
int gw_http_transaction_done(struct lws *wsi, gw_http_conn *conn);

/* ---- http_job.c: request work that would block the loop (directory
 * walks, hashing whole files) runs on the libuv thread pool. The job
 * outlives its connection if the client goes away (it then only frees
 * itself). The caller allocates the job with its own struct around it
 * (gw_http_job first) and fills the three functions. */
struct gw_http_job {
    uv_work_t work;
    gw_server *srv;
    struct lws *wsi;   /* NULL once the connection went away */
    gw_http_conn *conn;
    void (*run)(gw_http_job *job);  /* thread pool: no lws, no srv state */
    /* loop, from HTTP_WRITEABLE: writes the response (gw_http_respond...) */
    int (*answer)(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_http_job *job);
    void (*free)(gw_http_job *job);
};
/* Queues job for conn; 0, or a negative code (the job was freed). */
int gw_http_job_start(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_http_job *job);
/* From HTTP_WRITEABLE when conn->job_done is set. */
int gw_http_job_answer(gw_server *srv, struct lws *wsi, gw_http_conn *conn);
/* The connection is going away. */
void gw_http_job_abandon(gw_http_conn *conn);

/* ---- http_file.c: a response body read from a file with libuv's fs
 * requests, one chunk at a time, so a slow disk never holds the loop. */
/* Sends status and headers, then len bytes of fd from offset. fd becomes
 * the connection's (closed when done or abandoned). */
int gw_http_respond_file(struct lws *wsi, gw_http_conn *conn, int status,
                         const char *content_type, int fd, uint64_t offset, uint64_t len,
                         const gw_http_header *extra, size_t nextra, bool head_only);
/* From HTTP_WRITEABLE when conn->file is set. */
int gw_http_file_write(struct lws *wsi, gw_http_conn *conn);
void gw_http_file_abandon(gw_http_conn *conn);

/* Frees what a connection holds (from CLOSED_HTTP / WSI_DESTROY). */
void gw_http_conn_release(gw_http_conn *conn);

/* A request's headers arrived (LWS_CALLBACK_HTTP): answers it, or waits
 * for its body. */
int gw_http_on_request(gw_server *srv, struct lws *wsi, gw_http_conn *conn, const char *uri);

/* Body bytes (LWS_CALLBACK_HTTP_BODY) and the end of the body
 * (LWS_CALLBACK_HTTP_BODY_COMPLETION), after which the request is routed. */
int gw_http_on_body(gw_server *srv, struct lws *wsi, gw_http_conn *conn, const void *in,
                    size_t len);
int gw_http_on_body_done(gw_server *srv, struct lws *wsi, gw_http_conn *conn);

/* JSON helpers. gw_http_json answers with body (taking the reference).
 * gw_http_json_body parses the request body as a JSON object: NULL and
 * *out set, or a message for a 400. */
int gw_http_json(struct lws *wsi, gw_http_conn *conn, int status, json_t *body);
const char *gw_http_json_body(gw_http_conn *conn, json_t **out);

/* identity.c: 0 with *id filled when the request carries a valid bearer
 * token or session cookie of an enabled user, PST_E_NOTFOUND otherwise. */
int gw_identify(gw_server *srv, struct lws *wsi, gw_identity *id);
/* 0 when the request's Origin is one of ours (or absent and !required). */
int gw_origin_check(gw_server *srv, struct lws *wsi, bool required);
void gw_peer_address(struct lws *wsi, char *out, size_t n);
unsigned gw_identity_actions(const gw_server *srv, const gw_identity *id, const gw_vm *vm);
/* auth_may through the identity's token restriction; logs denials. */
int gw_may(gw_server *srv, const gw_identity *id, unsigned action, const gw_vm *vm,
           char *why, size_t whylen);

/* ws_admit.c: a WebSocket upgrade that passed admission. */
struct gw_ws_request {
    gw_identity id;        /* id.account is refreshed by gw_ws_authorize */
    char vm_name[GW_NAME_MAX + 1];
    const gw_endpoint *ep; /* the endpoint the path named */
    int port;              /* ?port=N where the endpoint takes one, else 0 */
    unsigned granted;      /* of the endpoint's actions, what the user holds on the VM */
    char source[64];
};

/* Decides an upgrade (LWS_CALLBACK_HTTP_CONFIRM_UPGRADE): 0 admits it with
 * *req filled; >0 means a refusal was written (return it to lws); <0
 * hangs up. */
int gw_ws_admit(gw_server *srv, struct lws *wsi, gw_ws_request *req);
/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, whichever protocol lws delivers it
 * to: admits (stashing the request on the wsi) or refuses. */
int gw_ws_on_confirm_upgrade(gw_server *srv, struct lws *wsi);
/* Frees an admission that was never taken up (LWS_CALLBACK_WSI_DESTROY,
 * which lws delivers to whichever protocol the connection ended in). */
void gw_ws_request_drop(struct lws *wsi);
/* Answers an upgrade with status and {"error": message}; returns what the
 * upgrade callback must return. */
int gw_ws_refuse(gw_server *srv, struct lws *wsi, int status, const char *message);
/* After the upgrade: the VM exists and offers the endpoint's protocol (and
 * port), and the user holds one of its actions there (req->granted). 0, or
 * a reason code in *reason (static) and words in why; audited. */
int gw_ws_authorize(gw_server *srv, gw_ws_request *req, const char **reason, char *why,
                    size_t whylen);

/* A registered session ended: a drain may now be complete. */
void gw_server_session_ended(gw_server *srv);

/* api_auth.c */
int gw_api_route(gw_server *srv, struct lws *wsi, gw_http_conn *conn);

/* api_recordings.c: /api/recordings... (id already identified) */
int gw_api_recordings(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_identity *id);
/* The auditor pages: true when path is one (recordings.html, player.html). */
bool gw_recordings_page(const char *path);
/* May this identity audit at least one VM (or any recording)? */
bool gw_may_audit_any(gw_server *srv, const gw_identity *id);
/* The retention sweep (daily, and once at start). */
void gw_recordings_sweep_start(gw_server *srv);

/* Number of live sessions (all protocols). */
unsigned gw_server_live_sessions(const gw_server *srv);

#endif
