/* An SSH client session to a VM, driven by libssh in non-blocking mode on
 * the libuv loop: one uv_poll on the session's socket, no thread, no busy
 * polling. The TCP connection is made here (libssh's own connect would
 * resolve names with a blocking getaddrinfo) and handed to libssh. */
#include "proxy/proxy.h"

#include "common/err.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Work per wakeup is bounded so one busy session cannot starve the loop:
 * libssh reads at most 4 KiB of the socket per round of its packet loop,
 * and the rest waits for the next wakeup (the poll is level-triggered). */
#define ROUNDS_PER_WAKEUP 16
/* A round that delivered some output, but less than this, drained the
 * socket: stop there rather than pay one more poll(2) to learn that
 * nothing is left. */
#define ROUND_FULL 2048
#define READ_CHUNK 16384

typedef enum {
    ST_RESOLVING,
    ST_TCP,
    ST_HANDSHAKE,
    ST_AUTH,
    ST_CHANNEL,
    ST_PTY,
    ST_SHELL,
    ST_RUNNING,
    ST_ENDED,
} state;

typedef struct sshp sshp;

struct sshp {
    proxy_session base; /* first: the interface's view */
    uv_loop_t *loop;
    state st;
    proxy_callbacks cb;
    void *ud;

    uv_getaddrinfo_t gai;
    bool gai_pending;
    uv_poll_t poll;
    bool poll_open;
    int poll_events;
    uv_timer_t timer; /* connect timeout; once running, a "come back" kick */
    bool timer_open;
    int handles_closing;
    bool closing;
    int fd;
    bool fd_in_libssh; /* handed over by ssh_connect: libssh may close it */

    ssh_session ssh;
    ssh_event event; /* libssh's packet loop over this one session */
    ssh_channel ch;
    ssh_key key;
    struct ssh_channel_callbacks_struct ch_cb;
    int exit_status;

    char *host;
    int port;
    char *username;
    char *password;
    char *private_key;
    char *passphrase;
    char *pinned;
    char *learned;
    bool tofu;
    int cols, rows;
    bool resize_pending;
    bool paused;
    unsigned busy;        /* inside libssh: its callbacks may call us back */
    bool close_deferred;  /* sshp_close() came while busy */
    size_t round_bytes;   /* channel bytes delivered in this round */

    char *in_buf; /* keystrokes not yet taken by the channel */
    size_t in_len, in_cap;
    bool input_full; /* told the caller to stop: tell it when it drains */
};

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void drop_secrets(sshp *s)
{
    wipe_free(s->password);
    wipe_free(s->private_key);
    wipe_free(s->passphrase);
    s->password = s->private_key = s->passphrase = NULL;
    if (s->key) {
        ssh_key_free(s->key);
        s->key = NULL;
    }
}

static void run(sshp *s);
static bool enter_running(sshp *s);
static bool drain_held(sshp *s);
static int on_channel_data(ssh_session session, ssh_channel channel, void *data, uint32_t len,
                           int is_stderr, void *userdata);
static void on_timer(uv_timer_t *t);

static void end(sshp *s, proxy_end why, const char *detail)
{
    if (s->st == ST_ENDED)
        return;
    s->st = ST_ENDED;
    drop_secrets(s);
    if (s->poll_open)
        uv_poll_stop(&s->poll);
    if (s->timer_open)
        uv_timer_stop(&s->timer);
    if (s->cb.on_end && !s->closing)
        s->cb.on_end(s->ud, why, why == PROXY_END_CLOSED ? s->exit_status : -1,
                     detail ? detail : "");
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches the socket for what libssh waits for: input, and output while
 * libssh holds bytes the kernel did not take. Paused sessions stop
 * watching input so that the kernel buffers and then the SSH window fill
 * up (unless keystrokes wait for a window adjust). Every change costs
 * epoll_ctl calls, so a running session asks for output only when bytes
 * are really queued: libssh's own poll flags say "writable wanted" after
 * every send, even a complete one. */
static void arm(sshp *s)
{
    if (!s->poll_open || s->st == ST_ENDED)
        return;
    int ev = 0;
    if (s->st == ST_TCP) {
        ev = UV_WRITABLE;
    } else if (s->st == ST_RUNNING) {
        if (!s->paused || s->in_len)
            ev |= UV_READABLE;
        if (ssh_get_status(s->ssh) & SSH_WRITE_PENDING)
            ev |= UV_WRITABLE;
    } else {
        ev |= UV_READABLE;
        if (s->ssh && (ssh_get_poll_flags(s->ssh) & SSH_WRITE_PENDING))
            ev |= UV_WRITABLE;
    }
    if (ev == s->poll_events)
        return;
    s->poll_events = ev;
    if (ev)
        uv_poll_start(&s->poll, ev, on_poll);
    else
        uv_poll_stop(&s->poll);
}

static void on_exit_status(ssh_session session, ssh_channel channel, int status,
                           void *userdata)
{
    (void)session;
    (void)channel;
    ((sshp *)userdata)->exit_status = status;
}

/* The terminal size asked for last, if the VM has not been told yet. */
static void send_resize(sshp *s)
{
    if (!s->resize_pending)
        return;
    s->resize_pending = false;
    ssh_channel_change_pty_size(s->ch, s->cols, s->rows);
}

static bool check_host_key(sshp *s)
{
    ssh_key key = NULL;
    unsigned char *hash = NULL;
    size_t hlen = 0;
    char *fp = NULL;
    bool ok = false;
    if (ssh_get_server_publickey(s->ssh, &key) != SSH_OK ||
        ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) != 0 ||
        !(fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen))) {
        end(s, PROXY_END_PROTOCOL, "cannot read the VM's host key");
        goto out;
    }
    const char *expect = s->pinned ? s->pinned : s->learned;
    if (expect) {
        if (strcmp(fp, expect) == 0) {
            ok = true;
        } else {
            char detail[256];
            snprintf(detail, sizeof(detail), "expected %s, the VM offered %s", expect, fp);
            end(s, PROXY_END_HOSTKEY_MISMATCH, detail);
        }
    } else if (s->tofu) {
        if (s->cb.on_identity)
            s->cb.on_identity(s->ud, fp);
        ok = true;
    } else {
        end(s, PROXY_END_HOSTKEY_UNKNOWN, fp);
    }
out:
    ssh_string_free_char(fp);
    ssh_clean_pubkey_hash(&hash);
    ssh_key_free(key);
    return ok;
}

static void status(sshp *s, proxy_state st, const char *msg)
{
    if (s->cb.on_state)
        s->cb.on_state(s->ud, st, msg);
}

/* libssh makes a socket it was handed blocking as soon as it sees it
 * connected (inside ssh_connect); a send into a full kernel buffer would
 * then stop the whole loop, handshake included. Ours stays non-blocking:
 * libssh sends only after poll said there is room, and keeps what the
 * kernel did not take. Checked after each ssh_connect step, the only calls
 * that switch it. */
static bool keep_nonblocking(sshp *s)
{
    int fl = fcntl(s->fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) != 0)) {
        end(s, PROXY_END_LOCAL, strerror(errno));
        return false;
    }
    return true;
}

static int do_auth(sshp *s)
{
    if (s->private_key) {
        if (!s->key && ssh_pki_import_privkey_base64(s->private_key, s->passphrase, NULL, NULL,
                                                     &s->key) != SSH_OK) {
            end(s, PROXY_END_AUTH_FAILED,
                "the private key cannot be read (wrong passphrase or not a key)");
            return SSH_AUTH_ERROR;
        }
        return ssh_userauth_publickey(s->ssh, NULL, s->key);
    }
    if (s->password)
        return ssh_userauth_password(s->ssh, NULL, s->password);
    end(s, PROXY_END_AUTH_FAILED, "no password or key was given");
    return SSH_AUTH_ERROR;
}

/* Advances the set-up state machine as far as libssh lets it without
 * waiting; each libssh call that says AGAIN is repeated, with the same
 * arguments, when the socket is ready. */
static void advance(sshp *s)
{
    for (;;) {
        int rc;
        switch (s->st) {
        case ST_HANDSHAKE:
            s->fd_in_libssh = true;
            rc = ssh_connect(s->ssh);
            if (!keep_nonblocking(s))
                return;
            if (rc == SSH_AGAIN)
                return;
            if (rc != SSH_OK) {
                end(s, PROXY_END_PROTOCOL, ssh_get_error(s->ssh));
                return;
            }
            if (!check_host_key(s))
                return;
            s->st = ST_AUTH;
            status(s, PROXY_STATE_AUTHENTICATING, "authenticating");
            break;
        case ST_AUTH:
            rc = do_auth(s);
            if (s->st == ST_ENDED)
                return;
            if (rc == SSH_AUTH_AGAIN)
                return;
            if (rc == SSH_AUTH_SUCCESS) {
                drop_secrets(s);
                s->st = ST_CHANNEL;
                break;
            }
            if (rc == SSH_AUTH_ERROR)
                end(s, PROXY_END_PROTOCOL, ssh_get_error(s->ssh));
            else
                end(s, PROXY_END_AUTH_FAILED, "the VM refused the user name or credentials");
            return;
        case ST_CHANNEL:
            if (!s->ch) {
                s->ch = ssh_channel_new(s->ssh);
                if (!s->ch) {
                    end(s, PROXY_END_PROTOCOL, "cannot create a channel");
                    return;
                }
                memset(&s->ch_cb, 0, sizeof(s->ch_cb));
                s->ch_cb.userdata = s;
                s->ch_cb.channel_exit_status_function = on_exit_status;
                s->ch_cb.channel_data_function = on_channel_data;
                ssh_callbacks_init(&s->ch_cb);
                ssh_set_channel_callbacks(s->ch, &s->ch_cb);
            }
            rc = ssh_channel_open_session(s->ch);
            if (rc == SSH_AGAIN)
                return;
            if (rc != SSH_OK) {
                end(s, PROXY_END_PROTOCOL, ssh_get_error(s->ssh));
                return;
            }
            s->st = ST_PTY;
            break;
        case ST_PTY:
            rc = ssh_channel_request_pty_size(s->ch, "xterm-256color", s->cols, s->rows);
            if (rc == SSH_AGAIN)
                return;
            if (rc != SSH_OK) {
                end(s, PROXY_END_PROTOCOL, "the VM refused a terminal");
                return;
            }
            s->resize_pending = false;
            s->st = ST_SHELL;
            break;
        case ST_SHELL:
            rc = ssh_channel_request_shell(s->ch);
            if (rc == SSH_AGAIN)
                return;
            if (rc != SSH_OK) {
                end(s, PROXY_END_PROTOCOL, "the VM refused a shell");
                return;
            }
            if (!enter_running(s))
                return;
            uv_timer_stop(&s->timer);
            status(s, PROXY_STATE_READY, "connected");
            if (s->st != ST_RUNNING)
                return;
            send_resize(s);
            /* Output that came with the shell's reply waits in libssh. */
            if (drain_held(s))
                uv_timer_start(&s->timer, on_timer, 0, 0);
            return;
        default:
            return;
        }
    }
}

/* ---- the running session ------------------------------------------------
 *
 * Output arrives through libssh's channel data callback, which runs
 * whichever libssh call takes a packet off the socket (our packet loop, or
 * a write waiting for window): bytes are handed on at once and never left
 * in libssh's buffers with nothing to wake us. While paused the callback
 * takes nothing: libssh keeps the bytes and, past its window limit, stops
 * granting the VM more window, so the VM's sshd waits. */

static bool socket_writable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLOUT);
}

/* One round of libssh's packet loop without waiting: reads what the
 * socket holds, sends what libssh queued, runs the callbacks. */
static int packet_round(sshp *s)
{
    s->round_bytes = 0;
    s->busy++;
    int rc = ssh_event_dopoll(s->event, 0);
    s->busy--;
    return rc;
}

static int on_channel_data(ssh_session session, ssh_channel channel, void *data, uint32_t len,
                           int is_stderr, void *userdata)
{
    sshp *s = userdata;
    (void)session;
    (void)channel;
    (void)is_stderr;
    if (s->st == ST_ENDED || s->close_deferred)
        return (int)len; /* ending: nobody to give it to */
    if (s->st != ST_RUNNING || s->paused)
        return 0; /* held by libssh until drain_held() */
    s->round_bytes += len;
    if (s->cb.on_data)
        s->cb.on_data(s->ud, data, len);
    return (int)len;
}

static void flush_input(sshp *s)
{
    if (!s->in_len)
        return;
    /* libssh sends only after its own poll saw the socket writable, and
     * forgets that after every send: each keystroke would wait a loop turn
     * (and two epoll_ctl) for a POLLOUT wakeup. Tell it when the kernel
     * has room; a send that fails with EAGAIN would be fatal to libssh. */
    if (!(ssh_get_status(s->ssh) & SSH_WRITE_PENDING) && socket_writable(s->fd))
        ssh_set_fd_towrite(s->ssh);
    s->busy++;
    while (s->in_len && s->st == ST_RUNNING) {
        int n = ssh_channel_write(s->ch, s->in_buf, (uint32_t)s->in_len);
        if (n == SSH_ERROR) {
            s->busy--;
            end(s, PROXY_END_PROTOCOL, ssh_get_error(s->ssh));
            return;
        }
        if (n <= 0)
            break; /* the VM's window is full: the rest waits */
        memmove(s->in_buf, s->in_buf + n, s->in_len - (size_t)n);
        s->in_len -= (size_t)n;
    }
    s->busy--;
    if (s->input_full && s->in_len < PROXY_INPUT_MAX / 2) {
        s->input_full = false;
        if (s->cb.on_writable)
            s->cb.on_writable(s->ud);
    }
}

/* Output libssh kept while we were paused: read it out now, a bounded
 * amount per call (a kick brings us back for the rest). True when some
 * is left. */
static bool drain_held(sshp *s)
{
    char buf[READ_CHUNK];
    bool more = true;
    s->busy++;
    for (int round = 0; round < ROUNDS_PER_WAKEUP && more; round++) {
        more = false;
        for (int is_stderr = 0; is_stderr <= 1; is_stderr++) {
            if (s->st != ST_RUNNING || s->paused || s->close_deferred)
                break;
            if (ssh_channel_poll(s->ch, is_stderr) <= 0)
                continue;
            int n = ssh_channel_read_nonblocking(s->ch, buf, sizeof(buf), is_stderr);
            if (n > 0) {
                more = true;
                if (s->cb.on_data)
                    s->cb.on_data(s->ud, buf, (size_t)n);
            }
        }
    }
    s->busy--;
    return more && s->st == ST_RUNNING && !s->paused && !s->close_deferred;
}

/* OpenSSH sends EOF, then the exit status, then CLOSE: the session is over
 * once the channel is closed (or at EOF with the status known) and nothing
 * it sent is still held for a paused reader. */
static bool finished(sshp *s)
{
    if (!ssh_channel_is_closed(s->ch) &&
        !(ssh_channel_is_eof(s->ch) && s->exit_status >= 0))
        return false;
    return ssh_channel_poll(s->ch, 0) <= 0 && ssh_channel_poll(s->ch, 1) <= 0;
}

/* The shell is up: from now on libssh's packet loop runs on our wakeups. */
static bool enter_running(sshp *s)
{
    s->event = ssh_event_new();
    if (!s->event || ssh_event_add_session(s->event, s->ssh) != SSH_OK) {
        end(s, PROXY_END_LOCAL, "cannot start the SSH event loop");
        return false;
    }
    s->st = ST_RUNNING;
    return true;
}

/* Runs the session after a wakeup: packets in and out, then keystrokes
 * that were waiting for window, then the end check. */
static void run(sshp *s)
{
    if (s->st != ST_RUNNING)
        return;
    int rc = SSH_OK;
    if (!s->paused || s->in_len) {
        for (int round = 0; round < ROUNDS_PER_WAKEUP; round++) {
            rc = packet_round(s);
            /* Go on while the socket had bytes and either a big piece of
             * output came out or none did (a packet still incomplete: bulk
             * output arrives 4 KiB a round in packets of up to 32 KiB). A
             * small piece (an echo) means the socket is drained. */
            if (rc != SSH_OK || s->st != ST_RUNNING || s->paused || s->close_deferred ||
                (s->round_bytes > 0 && s->round_bytes < ROUND_FULL))
                break;
        }
    }
    if (s->close_deferred || s->st != ST_RUNNING)
        return;
    if ((rc == SSH_ERROR || !ssh_is_connected(s->ssh)) && !ssh_channel_is_eof(s->ch)) {
        end(s, PROXY_END_PROTOCOL, "the connection to the VM was lost");
        return;
    }
    flush_input(s); /* a window adjust may have come in */
    if (s->st != ST_RUNNING || s->close_deferred)
        return;
    if (!s->paused && finished(s)) {
        end(s, PROXY_END_CLOSED, "the session ended");
        return;
    }
    arm(s);
}

static void close_now(sshp *s);
static void sshp_close(proxy_session *base);

/* Every entry from the loop counts as busy: a callback that closes the
 * session (from inside libssh or ours) only marks it, and the close is
 * finished here, once nothing up the stack uses the session. */
static void settle(sshp *s)
{
    if (--s->busy == 0 && s->close_deferred)
        close_now(s);
}

static void handle_poll(sshp *s, int st)
{
    if (s->st == ST_TCP) {
        int err = st < 0 ? -st : 0;
        socklen_t len = sizeof(err);
        if (!err)
            getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            end(s, err == ECONNREFUSED ? PROXY_END_REFUSED
                   : err == ETIMEDOUT  ? PROXY_END_TIMEOUT
                                       : PROXY_END_UNREACHABLE,
                strerror(err));
            return;
        }
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        s->ssh = ssh_new();
        int verbosity = SSH_LOG_NOLOG;
        int no = 0;
        long timeout = 0;
        if (!s->ssh || ssh_options_set(s->ssh, SSH_OPTIONS_FD, &s->fd) ||
            ssh_options_set(s->ssh, SSH_OPTIONS_HOST, s->host) ||
            ssh_options_set(s->ssh, SSH_OPTIONS_USER, s->username) ||
            ssh_options_set(s->ssh, SSH_OPTIONS_PROCESS_CONFIG, &no) ||
            ssh_options_set(s->ssh, SSH_OPTIONS_LOG_VERBOSITY, &verbosity) ||
            ssh_options_set(s->ssh, SSH_OPTIONS_TIMEOUT, &timeout) ||
            /* Host keys are ours to check: keep libssh away from
             * known_hosts files and the user database (a blocking
             * getpwuid on the loop, slow with LDAP). */
            ssh_options_set(s->ssh, SSH_OPTIONS_SSH_DIR, "/nonexistent") ||
            ssh_options_set(s->ssh, SSH_OPTIONS_KNOWNHOSTS, "/dev/null") ||
            ssh_options_set(s->ssh, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null")) {
            end(s, PROXY_END_PROTOCOL, "cannot set up the SSH client");
            return;
        }
        ssh_set_blocking(s->ssh, 0);
        s->st = ST_HANDSHAKE;
        status(s, PROXY_STATE_NEGOTIATING, "negotiating");
    }
    if (s->st < ST_RUNNING)
        advance(s);
    if (s->st == ST_RUNNING)
        run(s);
    else
        arm(s);
}

static void on_poll(uv_poll_t *h, int st, int events)
{
    sshp *s = h->data;
    (void)events;
    s->busy++;
    if (!s->close_deferred)
        handle_poll(s, st);
    settle(s);
}

/* The connect timeout; once running, a kick to come back for work left
 * over (held output after a pause, a resize asked for inside a callback). */
static void on_timer(uv_timer_t *t)
{
    sshp *s = t->data;
    s->busy++;
    if (s->close_deferred) {
        /* nothing: settle() finishes the close */
    } else if (s->st == ST_RUNNING) {
        send_resize(s);
        if (drain_held(s))
            uv_timer_start(&s->timer, on_timer, 0, 0);
        else
            run(s);
    } else if (s->st != ST_ENDED) {
        end(s, PROXY_END_TIMEOUT, "the VM did not complete the connection in time");
    }
    settle(s);
}

static void start_tcp(sshp *s, const struct sockaddr *sa, socklen_t salen)
{
    s->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        end(s, PROXY_END_UNREACHABLE, strerror(errno));
        return;
    }
    if (connect(s->fd, sa, salen) != 0 && errno != EINPROGRESS) {
        int err = errno;
        end(s, err == ECONNREFUSED ? PROXY_END_REFUSED : PROXY_END_UNREACHABLE, strerror(err));
        return;
    }
    if (uv_poll_init_socket(s->loop, &s->poll, s->fd) != 0) {
        end(s, PROXY_END_LOCAL, "cannot watch the socket");
        return;
    }
    s->poll.data = s;
    s->poll_open = true;
    s->st = ST_TCP;
    status(s, PROXY_STATE_CONNECTING, "connecting");
    arm(s);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    sshp *s = req->data;
    s->gai_pending = false;
    if (s->closing) {
        uv_freeaddrinfo(res);
        sshp_close(&s->base); /* finish the close that waited for us */
        return;
    }
    if (status != 0 || !res) {
        end(s, PROXY_END_UNREACHABLE, uv_strerror(status));
        uv_freeaddrinfo(res);
        return;
    }
    start_tcp(s, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
}

static char *dup_or_null(const char *v) { return v ? strdup(v) : NULL; }

static int sshp_open(uv_loop_t *loop, const proxy_target *p, const proxy_callbacks *cb,
                     void *ud, proxy_session **out)
{
    *out = NULL;
    if (!p->host || !p->ssh.username || (!p->ssh.password && !p->ssh.private_key))
        return -EINVAL;
    sshp *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->cb = *cb;
    s->ud = ud;
    s->fd = -1;
    s->exit_status = -1;
    s->port = p->port;
    s->base.ops = &proxy_ssh_ops;
    s->cols = p->ssh.cols > 0 ? p->ssh.cols : 80;
    s->rows = p->ssh.rows > 0 ? p->ssh.rows : 24;
    s->tofu = p->trust_on_first_use;
    s->host = strdup(p->host);
    s->username = strdup(p->ssh.username);
    s->password = dup_or_null(p->ssh.password);
    s->private_key = dup_or_null(p->ssh.private_key);
    s->passphrase = dup_or_null(p->ssh.passphrase);
    s->pinned = dup_or_null(p->pinned_sha256);
    s->learned = dup_or_null(p->learned_sha256);
    if (!s->host || !s->username) {
        sshp_close(&s->base);
        return -ENOMEM;
    }
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->timer_open = true;
    uv_timer_start(&s->timer, on_timer,
                   (uint64_t)(p->connect_timeout_ms > 0 ? p->connect_timeout_ms : 10000), 0);

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    *out = &s->base;
    if (inet_pton(AF_INET, p->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)p->port);
        start_tcp(s, (struct sockaddr *)a4, sizeof(*a4));
    } else if (inet_pton(AF_INET6, p->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)p->port);
        start_tcp(s, (struct sockaddr *)a6, sizeof(*a6));
    } else {
        char port[8];
        snprintf(port, sizeof(port), "%d", p->port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
        s->gai.data = s;
        s->st = ST_RESOLVING;
        status(s, PROXY_STATE_CONNECTING, "resolving");
        if (uv_getaddrinfo(loop, &s->gai, on_resolved, p->host, port, &hints) != 0)
            end(s, PROXY_END_UNREACHABLE, "cannot resolve the VM's address");
        else
            s->gai_pending = true;
    }
    return 0;
}

static int sshp_write(proxy_session *base, const void *buf, size_t len)
{
    sshp *s = (sshp *)base;
    if (s->st == ST_ENDED)
        return -EPIPE;
    if (s->in_len + len > s->in_cap) {
        size_t cap = s->in_cap ? s->in_cap : 4096;
        while (cap < s->in_len + len)
            cap *= 2;
        char *grown = realloc(s->in_buf, cap);
        if (!grown)
            return -ENOMEM;
        s->in_buf = grown;
        s->in_cap = cap;
    }
    memcpy(s->in_buf + s->in_len, buf, len);
    s->in_len += len;
    if (s->st == ST_RUNNING) {
        if (s->busy) {
            /* Called back from inside libssh: no writing from there. */
            uv_timer_start(&s->timer, on_timer, 0, 0);
        } else {
            s->busy++;
            flush_input(s);
            arm(s);
            settle(s);
            if (s->st == ST_ENDED)
                return -EPIPE;
        }
    }
    if (s->in_len > PROXY_INPUT_MAX) {
        s->input_full = true;
        return -ENOBUFS;
    }
    return 0;
}

static void sshp_resize(proxy_session *base, int cols, int rows)
{
    sshp *s = (sshp *)base;
    if (cols < 1 || rows < 1 || cols > 1000 || rows > 1000)
        return;
    s->cols = cols;
    s->rows = rows;
    s->resize_pending = true; /* sent once the shell is up, or by the kick */
    if (s->st == ST_RUNNING && !s->busy) {
        send_resize(s);
        arm(s);
    } else if (s->st == ST_RUNNING) {
        uv_timer_start(&s->timer, on_timer, 0, 0);
    }
}

static void sshp_pause(proxy_session *base, bool paused)
{
    sshp *s = (sshp *)base;
    if (s->paused == paused)
        return;
    s->paused = paused;
    if (s->st != ST_RUNNING)
        return;
    if (!paused)
        uv_timer_start(&s->timer, on_timer, 0, 0); /* drain what libssh holds */
    if (!s->busy)
        arm(s); /* inside a callback the caller up the stack re-arms */
}

static void free_session(sshp *s)
{
    free(s->in_buf);
    free(s->host);
    free(s->username);
    free(s->pinned);
    free(s->learned);
    free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    sshp *s = h->data;
    if (--s->handles_closing == 0)
        free_session(s);
}

static void sshp_close(proxy_session *base)
{
    sshp *s = (sshp *)base;
    if (!s)
        return;
    s->closing = true;
    end(s, PROXY_END_LOCAL, NULL);
    if (s->busy) {
        s->close_deferred = true; /* settle() finishes it */
        return;
    }
    close_now(s);
}

static void close_now(sshp *s)
{
    if (s->gai_pending) {
        uv_cancel((uv_req_t *)&s->gai); /* on_resolved comes back here */
        return;
    }
    if (s->ch) {
        ssh_channel_close(s->ch); /* best effort: a non-blocking send */
        ssh_channel_free(s->ch);
        s->ch = NULL;
    }
    if (s->event) {
        ssh_event_remove_session(s->event, s->ssh);
        ssh_event_free(s->event);
        s->event = NULL;
    }
    if (s->ssh) {
        /* libssh closes the socket itself when it fails (a reset, the VM
         * gone) and then reports no descriptor. Closing it again would
         * close whatever another thread opened under that number since (a
         * recording's signature file, once). */
        if (s->fd_in_libssh && ssh_get_fd(s->ssh) == SSH_INVALID_SOCKET)
            s->fd = -1;
        ssh_disconnect(s->ssh);
        ssh_free(s->ssh);
        s->ssh = NULL;
    }
    drop_secrets(s);
    if (s->poll_open) {
        s->handles_closing++;
        uv_close((uv_handle_t *)&s->poll, on_handle_closed);
        s->poll_open = false;
    }
    if (s->fd >= 0) {
        close(s->fd); /* libssh closes a descriptor it was given only on failure */
        s->fd = -1;
    }
    if (s->timer_open) {
        s->handles_closing++;
        uv_close((uv_handle_t *)&s->timer, on_handle_closed);
        s->timer_open = false;
    }
    if (s->handles_closing == 0)
        free_session(s);
}


const proxy_ops proxy_ssh_ops = {
    .name = "ssh",
    .open = sshp_open,
    .write = sshp_write,
    .input = NULL, /* a console has no half-close */
    .resize = sshp_resize,
    .pause = sshp_pause,
    .close = sshp_close,
};
