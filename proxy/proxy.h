/* proxy: the back ends that carry a session's bytes to a target.
 *
 * One session interface for every back end: the SSH console (libssh,
 * ssh_session.c), the raw TCP tunnel (uv_tcp, tcp_tunnel.c) and, later, the
 * RDP console (FreeRDP on a worker thread). A back end knows no HTTP,
 * WebSocket or user: the gateway hands it a target, credentials and
 * callbacks, and moves bytes.
 *
 * Threads: every function here is called on the loop thread, and every
 * callback runs on the loop thread. A back end that works on threads of its
 * own (RDP) hands its results to the loop first (a bounded queue and
 * uv_async_send), so the caller never sees another thread.
 *
 * Ownership: proxy_session_open() gives the caller a session it must end
 * with proxy_session_close(); after that no callback fires and the memory
 * is freed once the back end's handles are closed. Secrets in the target
 * are copied where needed and wiped after authentication; the caller wipes
 * its own.
 */
#ifndef PST_PROXY_PROXY_H
#define PST_PROXY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct proxy_session proxy_session;

typedef enum {
    PROXY_SSH = 0, /* a shell on a pty (the browser console) */
    PROXY_TCP,     /* raw bytes to a port (the native tunnel) */
    PROXY_KIND_COUNT
} proxy_kind;

/* Progress, in the order a session goes through it. */
typedef enum {
    PROXY_STATE_CONNECTING = 0, /* resolving the name, opening TCP */
    PROXY_STATE_NEGOTIATING,    /* the protocol's handshake */
    PROXY_STATE_AUTHENTICATING,
    PROXY_STATE_READY,          /* bytes flow both ways */
    PROXY_STATE_EOF,            /* the target sends no more; input may go on */
} proxy_state;

/* "connecting", "negotiating", "authenticating", "connected", "eof". */
const char *proxy_state_name(proxy_state st);

/* Why a session ended; the gateway turns these into words for the user. */
typedef enum {
    PROXY_END_CLOSED = 0,     /* the shell exited, or both sides closed */
    PROXY_END_UNREACHABLE,    /* no route, host unknown */
    PROXY_END_REFUSED,        /* connection refused */
    PROXY_END_TIMEOUT,        /* connect or handshake took too long */
    PROXY_END_AUTH_FAILED,    /* the VM refused the credentials */
    PROXY_END_HOSTKEY_MISMATCH,
    PROXY_END_HOSTKEY_UNKNOWN, /* nothing pinned and TOFU not allowed */
    PROXY_END_PROTOCOL,       /* not SSH, or a protocol error */
    PROXY_END_LOCAL,          /* closed by the gateway (proxy_session_close) */
    PROXY_END_RESET,          /* the target reset an established connection */
} proxy_end;

const char *proxy_end_name(proxy_end e);

/* What a target is and how to reach it. Strings are read during
 * proxy_session_open() only. */
typedef struct {
    proxy_kind kind;
    const char *host;            /* IP literal or name (resolved off-loop) */
    int port;
    int connect_timeout_ms;      /* TCP, and the handshake and auth where there are */
    /* The target's identity (SSH host key, RDP certificate), where it has one. */
    const char *pinned_sha256;   /* "SHA256:..." pinned, or NULL */
    const char *learned_sha256;  /* learned before by trust on first use, or NULL */
    bool trust_on_first_use;
    struct {
        const char *username;
        const char *password;    /* one of password / private_key */
        const char *private_key; /* OpenSSH or PEM text */
        const char *passphrase;  /* for private_key, may be NULL */
        int cols, rows;
    } ssh;
} proxy_target;

typedef struct {
    /* Progress; message is in words for the user (may be NULL). READY means
     * output may follow, EOF that the target will send nothing more. */
    void (*on_state)(void *ud, proxy_state st, const char *message);
    /* Bytes from the target. The buffer is valid during the call only. */
    void (*on_data)(void *ud, const char *buf, size_t len);
    /* First use of an unpinned target: its identity's fingerprint, to be
     * stored and given as learned_sha256 next time. Optional. */
    void (*on_identity)(void *ud, const char *sha256);
    /* Written input has drained below half of PROXY_INPUT_MAX. */
    void (*on_writable)(void *ud);
    /* The session ended; exit_status is -1 when none was reported. The
     * session must still be closed with proxy_session_close(). */
    void (*on_end)(void *ud, proxy_end why, int exit_status, const char *detail);
} proxy_callbacks;

/* Input events other than bytes. */
typedef enum {
    PROXY_INPUT_EOF = 0, /* the client sends no more bytes (half-close) */
} proxy_input_kind;

typedef struct {
    proxy_input_kind kind;
} proxy_input;

/* What each back end implements. A back end's session struct starts with
 * a proxy_session whose ops point at its table. */
typedef struct proxy_ops {
    const char *name;
    int (*open)(uv_loop_t *loop, const proxy_target *t, const proxy_callbacks *cb, void *ud,
                proxy_session **out);
    int (*write)(proxy_session *s, const void *buf, size_t len);
    int (*input)(proxy_session *s, const proxy_input *in); /* NULL: none taken */
    void (*resize)(proxy_session *s, int cols, int rows);  /* NULL: no screen */
    void (*pause)(proxy_session *s, bool paused);
    void (*close)(proxy_session *s);
} proxy_ops;

struct proxy_session {
    const proxy_ops *ops;
};

extern const proxy_ops proxy_ssh_ops;
extern const proxy_ops proxy_tcp_ops;

/* Starts connecting to t with the back end of t->kind. 0 with *out, or a
 * negative code (nothing started, no callback will fire). */
int proxy_session_open(uv_loop_t *loop, const proxy_target *t, const proxy_callbacks *cb,
                       void *ud, proxy_session **out);

/* Queues bytes for the target (also before READY: held until then).
 * Returns 0, or -ENOBUFS when the queue is above PROXY_INPUT_MAX (the bytes
 * were taken; the caller should stop reading its client until
 * on_writable). */
int proxy_session_write(proxy_session *s, const void *buf, size_t len);
#define PROXY_INPUT_MAX (64u << 10)

/* An input event: 0, or -ENOTSUP when this back end takes no such event. */
int proxy_session_input(proxy_session *s, const proxy_input *in);

/* Changes the screen size (held and coalesced until the session is up);
 * nothing for back ends without a screen. */
void proxy_session_resize(proxy_session *s, int cols, int rows);

/* Back-pressure: while paused, the target is not read (SSH: the window
 * fills and the VM's sshd waits; TCP: the VM's send window fills). Memory
 * stays bounded. Asking for the state already in force does nothing. */
void proxy_session_pause(proxy_session *s, bool paused);

/* Ends the session (if still running) and frees it once its handles are
 * closed. No callback fires after this call. NULL is ignored. */
void proxy_session_close(proxy_session *s);

#endif
