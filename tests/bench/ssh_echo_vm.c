/* ssh_echo_vm: a light stand-in for 500 VMs' sshd in tests/bench/ssh_bench.py.
 *
 * Why it exists: on the bench's two cores, OpenSSH spends ~290 µs of CPU
 * per keystroke (the session's sshd wakes for the socket, writes the pty,
 * `cat` wakes and echoes, sshd wakes again for the pty and sends). 500
 * sessions at 10 keys/s would need ~1.4 cores for the stand-in VMs alone,
 * so the latency figures would measure a saturated stand-in, not the
 * gateway. In production the VMs are other machines. This server does the
 * SSH part of a VM's work and nothing else: one thread per connection
 * (so one slow session cannot stall another), and each byte the client
 * types is sent straight back from the channel read, one wake-up per
 * keystroke.
 *
 * Threads, not processes: this machine's kernel runs a memory monitor
 * (kdamond, DAMON on physical addresses) every half second, whose cost
 * grows with the number of page-table mappings of each shared page. 500
 * sshd-like processes mapping libcrypto make each of its runs stall the
 * whole machine for tens of milliseconds, which real VMs, living on other
 * machines, would not do to the gateway's host.
 *
 * Both sides of the comparison (through the gateway, and direct) talk to
 * it the same way, so "added" still means what the gateway adds.
 *
 * The "shell" understands just what ssh_loadgen types after the shell
 * starts: it reads a line, answers "READY\n" if the line asks for it
 * (the loadgen's `... echo RE''ADY; exec cat`), and from then on echoes
 * every byte. Public-key login only, for the one key given.
 *
 *   ssh_echo_vm --port N --host-key FILE --authorized-key FILE.pub
 *
 * Prints "listening\n" on stdout once it accepts connections; runs until
 * killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_ADDR "127.0.0.1"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "ssh_echo_vm: %s: %s\n", what, detail ? detail : "");
    exit(2);
}

/* One connection, served by its own thread. */
typedef struct conn {
    ssh_key authorized;
    ssh_channel chan;
    struct ssh_channel_callbacks_struct chan_cb;
    char line[512]; /* the set-up line being read */
    size_t line_len;
    bool echoing, done;
} conn;

/* Public-key login for the one authorised key; everything else refused.
 * libssh asks twice: once for the key alone (state NONE), once with the
 * signature checked (VALID). */
static int on_auth_pubkey(ssh_session session, const char *user, struct ssh_key_struct *key,
                          char signature_state, void *userdata)
{
    conn *c = userdata;
    (void)session;
    (void)user;
    if (ssh_key_cmp(key, c->authorized, SSH_KEY_CMP_PUBLIC) != 0)
        return SSH_AUTH_DENIED;
    if (signature_state == SSH_PUBLICKEY_STATE_NONE || signature_state == SSH_PUBLICKEY_STATE_VALID)
        return SSH_AUTH_SUCCESS;
    return SSH_AUTH_DENIED;
}

/* The fake shell: wait for the loadgen's set-up line, then echo. */
static int on_data(ssh_session session, ssh_channel chan, void *data, uint32_t len, int is_stderr,
                   void *userdata)
{
    conn *c = userdata;
    const char *p = data;
    uint32_t off = 0;
    (void)session;
    (void)is_stderr;
    while (!c->echoing && off < len) {
        char ch = p[off++];
        if (ch != '\n') {
            if (c->line_len + 1 < sizeof(c->line))
                c->line[c->line_len++] = ch;
            continue;
        }
        c->line[c->line_len] = '\0';
        c->line_len = 0;
        if (strstr(c->line, "RE''ADY")) {
            if (ssh_channel_write(chan, "READY\n", 6) != 6)
                c->done = true;
            c->echoing = strstr(c->line, "exec cat") != NULL;
        }
    }
    if (c->echoing && off < len && ssh_channel_write(chan, p + off, len - off) != (int)(len - off))
        c->done = true;
    return (int)len;
}

static int accept_request(ssh_session session, ssh_channel chan, void *userdata)
{
    (void)session;
    (void)chan;
    (void)userdata;
    return 0;
}

static int on_pty_request(ssh_session session, ssh_channel chan, const char *term, int cols,
                          int rows, int py, int px, void *userdata)
{
    (void)term;
    (void)cols;
    (void)rows;
    (void)py;
    (void)px;
    return accept_request(session, chan, userdata);
}

static int on_window_change(ssh_session session, ssh_channel chan, int cols, int rows, int py,
                            int px, void *userdata)
{
    (void)cols;
    (void)rows;
    (void)py;
    (void)px;
    return accept_request(session, chan, userdata);
}

static void on_channel_end(ssh_session session, ssh_channel chan, void *userdata)
{
    conn *c = userdata;
    (void)session;
    (void)chan;
    c->done = true;
}

static ssh_channel on_channel_open(ssh_session session, void *userdata)
{
    conn *c = userdata;
    if (c->chan)
        return NULL; /* one session channel per connection */
    c->chan = ssh_channel_new(session);
    if (!c->chan)
        return NULL;
    memset(&c->chan_cb, 0, sizeof(c->chan_cb));
    c->chan_cb.userdata = c;
    c->chan_cb.channel_data_function = on_data;
    c->chan_cb.channel_pty_request_function = on_pty_request;
    c->chan_cb.channel_shell_request_function = accept_request;
    c->chan_cb.channel_pty_window_change_function = on_window_change;
    c->chan_cb.channel_eof_function = on_channel_end;
    c->chan_cb.channel_close_function = on_channel_end;
    ssh_callbacks_init(&c->chan_cb);
    ssh_set_channel_callbacks(c->chan, &c->chan_cb);
    return c->chan;
}

/* Serves one accepted connection until the client closes it. */
static void serve(ssh_session session, ssh_key authorized)
{
    conn c = {.authorized = authorized};
    struct ssh_server_callbacks_struct cb = {
        .userdata = &c,
        .auth_pubkey_function = on_auth_pubkey,
        .channel_open_request_session_function = on_channel_open,
    };
    ssh_callbacks_init(&cb);
    ssh_set_server_callbacks(session, &cb);
    ssh_set_auth_methods(session, SSH_AUTH_METHOD_PUBLICKEY);
    if (ssh_handle_key_exchange(session) != SSH_OK)
        return;
    ssh_event ev = ssh_event_new();
    if (!ev)
        return;
    if (ssh_event_add_session(ev, session) != SSH_OK) {
        ssh_event_free(ev);
        return;
    }
    while (!c.done && ssh_is_connected(session))
        if (ssh_event_dopoll(ev, -1) == SSH_ERROR)
            break;
    if (c.chan && ssh_channel_is_open(c.chan)) {
        ssh_channel_request_send_exit_status(c.chan, 0);
        ssh_channel_send_eof(c.chan);
        ssh_channel_close(c.chan);
    }
    ssh_event_remove_session(ev, session);
    ssh_event_free(ev);
}

typedef struct conn_start {
    ssh_session session;
    ssh_key authorized;
} conn_start;

static void *connection_thread(void *arg)
{
    conn_start *cs = arg;
    /* As sshd does for a session with a pty: no Nagle delay. */
    int one = 1;
    setsockopt(ssh_get_fd(cs->session), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    serve(cs->session, cs->authorized);
    ssh_disconnect(cs->session);
    ssh_free(cs->session);
    free(cs);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *host_key = NULL, *auth_path = NULL;
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--host-key"))
            host_key = argv[i + 1];
        else if (!strcmp(argv[i], "--authorized-key"))
            auth_path = argv[i + 1];
        else
            die("unknown option", argv[i]);
    }
    if (!port || !host_key || !auth_path)
        die("usage", "ssh_echo_vm --port N --host-key FILE --authorized-key FILE.pub");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (ssh_init() != SSH_OK)
        die("ssh_init", "failed");
    ssh_key authorized = NULL;
    if (ssh_pki_import_pubkey_file(auth_path, &authorized) != SSH_OK)
        die("cannot read the authorised key", auth_path);

    ssh_bind bind = ssh_bind_new();
    if (!bind || ssh_bind_options_set(bind, SSH_BIND_OPTIONS_BINDADDR, LISTEN_ADDR) ||
        ssh_bind_options_set(bind, SSH_BIND_OPTIONS_BINDPORT, &port) ||
        ssh_bind_options_set(bind, SSH_BIND_OPTIONS_HOSTKEY, host_key))
        die("bind options", bind ? ssh_get_error(bind) : "out of memory");
    if (ssh_bind_listen(bind) != SSH_OK)
        die("listen", ssh_get_error(bind));
    printf("listening\n");
    fflush(stdout);

    for (;;) {
        conn_start *cs = calloc(1, sizeof(*cs));
        ssh_session session = cs ? ssh_new() : NULL;
        if (!session)
            die("ssh_new", "out of memory");
        if (ssh_bind_accept(bind, session) != SSH_OK) {
            fprintf(stderr, "ssh_echo_vm: accept: %s\n", ssh_get_error(bind));
            ssh_free(session);
            free(cs);
            continue;
        }
        cs->session = session;
        cs->authorized = authorized;
        pthread_t t;
        int rc = pthread_create(&t, &attr, connection_thread, cs);
        if (rc != 0) {
            fprintf(stderr, "ssh_echo_vm: thread: %s\n", strerror(rc));
            ssh_free(session);
            free(cs);
        }
    }
}
