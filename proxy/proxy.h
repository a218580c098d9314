/* proxy: the back ends that carry a session's bytes to a target.
 *
 * A back end knows no HTTP, WebSocket or user: the gateway hands it a
 * target, credentials and callbacks, and moves bytes. Everything runs on
 * the caller's libuv loop thread; nothing here blocks (no thread per
 * session, no busy polling).
 *
 * Ownership: proxy_ssh_open() gives the caller a session it must end with
 * proxy_ssh_close(); after that no callback fires and the memory is freed
 * once libuv has closed the handles. Secrets in proxy_ssh_params are copied
 * where needed and wiped after authentication; the caller wipes its own.
 */
#ifndef PST_PROXY_PROXY_H
#define PST_PROXY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct proxy_ssh proxy_ssh;

/* Why a session ended; the gateway turns these into words for the user. */
typedef enum {
    PROXY_END_CLOSED = 0,     /* the shell exited or the channel closed */
    PROXY_END_UNREACHABLE,    /* no route, host unknown */
    PROXY_END_REFUSED,        /* connection refused */
    PROXY_END_TIMEOUT,        /* connect or handshake took too long */
    PROXY_END_AUTH_FAILED,    /* the VM refused the credentials */
    PROXY_END_HOSTKEY_MISMATCH,
    PROXY_END_HOSTKEY_UNKNOWN, /* nothing pinned and TOFU not allowed */
    PROXY_END_PROTOCOL,       /* not SSH, or a protocol error */
    PROXY_END_LOCAL,          /* closed by the gateway (proxy_ssh_close) */
} proxy_end;

const char *proxy_end_name(proxy_end e);

typedef struct {
    const char *host;            /* IP literal or name (resolved off-loop) */
    int port;
    const char *host_key_sha256; /* "SHA256:..." pinned, or NULL */
    const char *learned_key;     /* a TOFU fingerprint learned before, or NULL */
    bool trust_on_first_use;
    const char *username;
    const char *password;        /* one of password / private_key */
    const char *private_key;     /* OpenSSH or PEM text */
    const char *passphrase;      /* for private_key, may be NULL */
    int cols, rows;
    int connect_timeout_ms;      /* TCP + SSH handshake + auth */
} proxy_ssh_params;

typedef struct {
    /* Progress in words ("connecting", "authenticating"). Optional. */
    void (*on_status)(void *ud, const char *message);
    /* The shell is open; output may follow. */
    void (*on_ready)(void *ud);
    /* Output from the VM. The buffer is valid during the call only. */
    void (*on_data)(void *ud, const char *buf, size_t len);
    /* First use of an unpinned VM: its key fingerprint, to be stored. */
    void (*on_key_learned)(void *ud, const char *sha256);
    /* The session ended; exit_status is -1 when none was reported. The
     * session must still be closed with proxy_ssh_close(). */
    void (*on_end)(void *ud, proxy_end why, int exit_status, const char *detail);
    /* Written input has drained below the high-water mark. Optional. */
    void (*on_writable)(void *ud);
} proxy_ssh_callbacks;

/* Starts connecting. 0 with *out, or a negative code (nothing started). */
int proxy_ssh_open(uv_loop_t *loop, const proxy_ssh_params *p, const proxy_ssh_callbacks *cb,
                   void *ud, proxy_ssh **out);

/* Queues keystrokes for the VM. Returns 0, or -ENOBUFS when the queue is
 * above PROXY_SSH_INPUT_MAX (the caller should stop reading its client
 * until on_writable). */
int proxy_ssh_write(proxy_ssh *s, const void *buf, size_t len);
#define PROXY_SSH_INPUT_MAX (64u << 10)

/* Changes the terminal size (held and coalesced until the shell is up). */
void proxy_ssh_resize(proxy_ssh *s, int cols, int rows);

/* Back-pressure: while paused, the channel is not read, the SSH window
 * fills and the VM's sshd waits. Memory stays bounded. Asking for the
 * state already in force does nothing. */
void proxy_ssh_pause(proxy_ssh *s, bool paused);

/* Ends the session (if still running) and frees it once its handles are
 * closed. No callback fires after this call. */
void proxy_ssh_close(proxy_ssh *s);

#endif
