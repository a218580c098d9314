/* ssh_loadgen: the load generator behind tests/bench/ssh_bench.py.
 *
 * One process drives N interactive SSH sessions in one of two ways:
 *
 *   --mode ws    as the browser console does: TLS + WebSocket to the
 *                gateway's /ws/ssh?vm=NAME (docs/protocol.md), which logs in
 *                to sshd with libssh and carries the pty's bytes;
 *   --mode ssh   "direct": libssh straight to sshd, connected the way the
 *                gateway's proxy/ssh_session.c connects (own TCP socket,
 *                TCP_NODELAY, handed to libssh), same key login, same pty
 *                size and terminal type.
 *
 * Both modes then put the shell in `stty raw -echo; exec cat`, so each
 * byte typed comes back once, from a user-space program, as it would from
 * a shell's line editor. The client is C (epoll, one thread while
 * measuring) so that its own cost per keystroke is a few microseconds and
 * the same in both modes; see README.md for why not Python.
 *
 * Control (the driver speaks on stdin/stdout, one JSON object a line):
 *   1. the sessions are opened (--parallel at a time, blocking calls on
 *      worker threads); prints {"event":"open",...}
 *   2. waits for a line: "go" runs the measurement (keystrokes, or the
 *      bulk transfer with --bulk), prints {"event":"latency"|"bulk",...};
 *      "quit" skips it
 *   3. waits for "quit", closes every session cleanly (WebSocket close
 *      frame / SSH channel close + disconnect), prints {"event":"closed"}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libssh/libssh.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SETUP_TIMEOUT_MS 30000
#define WS_FRAME_MAX (16u << 20)
#define BULK_MARK "BULKEND"
#define READY_MARK "READY\n"
#define PROBE_BYTE '!'

enum mode { MODE_WS, MODE_SSH };

static struct {
    enum mode mode;
    const char *host;
    int port;
    int sessions;
    int parallel;
    const char *vm, *origin, *cookie, *login, *key_path;
    char *key_text;
    int keys, warmup;
    double rate, jitter, echo_timeout;
    long long bulk_bytes;
    const char *trace_path;
} opt = {
    .host = "127.0.0.1", .sessions = 1, .parallel = 16, .keys = 200, .rate = 10.0,
    .jitter = 0.5, .echo_timeout = 10.0,
};

typedef struct sess {
    int idx;
    int fd;
    bool dead;
    char err[256];
    /* ws */
    SSL *ssl;
    unsigned char *rb;
    size_t rlen, rcap;
    int frag_op;
    char text[4096]; /* the last text message, NUL-terminated, cut */
    size_t text_len;
    bool connected, ended, got_close, sent_close;
    /* ssh */
    ssh_session ssh;
    ssh_channel ch;
    /* output matching */
    const char *pat;
    size_t pat_m;
    bool pat_found;
    /* keystrokes */
    int sent, done;
    bool outstanding, want_send;
    unsigned char expect;
    uint64_t t_sent, t_next;
    int heap_pos;
    /* bulk */
    bool bulk_active;
    unsigned long long bulk_rx;
    ssh_key key;
} sess;

static sess *S;
static SSL_CTX *tls_ctx;
static int next_to_open;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

/* measurement state (main thread only) */
static uint32_t *samples, *warm_samples;
static size_t nsamples, nwarm;
static FILE *trace; /* --trace: one line per key */
static uint64_t trace_t0;
static long long lost, deferred, unexpected, dead_sessions;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(sess *s, const char *fmt, ...)
{
    if (s->dead)
        return;
    s->dead = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ssh_loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* JSON string body (no quotes) of s into out; cut to fit. */
static void json_escape(char *out, size_t n, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, n - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* ---- output matching ---------------------------------------------------- */

/* Looks for s->pat in the terminal output, across chunk boundaries. The
 * patterns used have no proper prefix that is also a suffix, so a
 * mismatch can restart from the current byte alone. */
static void match_feed(sess *s, const unsigned char *p, size_t len)
{
    if (!s->pat || s->pat_found)
        return;
    size_t plen = strlen(s->pat);
    for (size_t i = 0; i < len; i++) {
        if (s->pat_m == 0) {
            const unsigned char *q = memchr(p + i, s->pat[0], len - i);
            if (!q)
                return;
            i = (size_t)(q - p);
        }
        if (p[i] == (unsigned char)s->pat[s->pat_m])
            s->pat_m++;
        else
            s->pat_m = p[i] == (unsigned char)s->pat[0] ? 1 : 0;
        if (s->pat_m == plen) {
            s->pat_found = true;
            return;
        }
    }
}

static void expect_pattern(sess *s, const char *pat)
{
    s->pat = pat;
    s->pat_m = 0;
    s->pat_found = false;
}

/* ---- keystroke scheduling: a binary heap on t_next ---------------------- */

static sess **heap;
static int heap_n;

static void heap_swap(int a, int b)
{
    sess *t = heap[a];
    heap[a] = heap[b];
    heap[b] = t;
    heap[a]->heap_pos = a;
    heap[b]->heap_pos = b;
}

static void heap_push(sess *s)
{
    int i = heap_n++;
    heap[i] = s;
    s->heap_pos = i;
    while (i > 0 && heap[(i - 1) / 2]->t_next > heap[i]->t_next) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static sess *heap_pop(void)
{
    sess *top = heap[0];
    heap_n--;
    if (heap_n > 0) {
        heap[0] = heap[heap_n];
        heap[0]->heap_pos = 0;
        int i = 0;
        for (;;) {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < heap_n && heap[l]->t_next < heap[m]->t_next)
                m = l;
            if (r < heap_n && heap[r]->t_next < heap[m]->t_next)
                m = r;
            if (m == i)
                break;
            heap_swap(i, m);
            i = m;
        }
    }
    top->heap_pos = -1;
    return top;
}

/* ---- TLS + WebSocket ---------------------------------------------------- */

static int tcp_connect(sess *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.host, &a.sin_addr) != 1)
        die("--host must be an IPv4 address");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail(s, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        fail(s, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    /* As browsers and the gateway's own SSH sockets do: no Nagle delay on
     * single keystrokes. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int wait_fd(int fd, short ev, int ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r;
}

/* Writes all of buf. Works on blocking and non-blocking sockets (waits
 * for the socket when TLS says so: rare, keystrokes are tiny). */
static int tls_write_all(sess *s, const void *buf, int len)
{
    for (;;) {
        int n = SSL_write(s->ssl, buf, len);
        if (n == len)
            return 0;
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE && wait_fd(s->fd, POLLOUT, 5000) > 0)
            continue;
        if (e == SSL_ERROR_WANT_READ && wait_fd(s->fd, POLLIN, 5000) > 0)
            continue;
        fail(s, "TLS write failed (ssl error %d)", e);
        return -1;
    }
}

static int ws_send(sess *s, int opcode, const void *payload, size_t len)
{
    unsigned char frame[14 + 256];
    unsigned char *buf = len <= 256 ? frame : malloc(14 + len);
    if (!buf)
        return -1;
    size_t h = 0;
    buf[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        buf[h++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        buf[h++] = 0x80 | 126;
        buf[h++] = (unsigned char)(len >> 8);
        buf[h++] = (unsigned char)len;
    } else {
        buf[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            buf[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    /* RFC 6455 5.3: a fresh, unpredictable masking key per frame. */
    unsigned char *mask = buf + h;
    if (RAND_bytes(mask, 4) != 1)
        die("RAND_bytes failed");
    h += 4;
    const unsigned char *p = payload;
    for (size_t i = 0; i < len; i++)
        buf[h + i] = p[i] ^ mask[i & 3];
    int rc = tls_write_all(s, buf, (int)(h + len));
    if (buf != frame)
        free(buf);
    return rc;
}

static void on_term_output(sess *s, const unsigned char *p, size_t len, uint64_t t);

static void on_text(sess *s, const unsigned char *p, size_t len)
{
    size_t n = len < sizeof(s->text) - 1 ? len : sizeof(s->text) - 1;
    memcpy(s->text, p, n);
    s->text[n] = '\0';
    s->text_len = n;
    /* Small fixed messages from ws_ssh.c; a substring test is enough. */
    if (strstr(s->text, "\"type\":\"status\"") && strstr(s->text, "\"message\":\"connected\""))
        s->connected = true;
    if (strstr(s->text, "\"type\":\"error\"") || strstr(s->text, "\"type\":\"closed\"")) {
        s->ended = true;
        fail(s, "gateway: %s", s->text);
    }
}

/* Parses whole frames from s->rb; terminal bytes go to on_term_output. */
static void ws_parse(sess *s, uint64_t t)
{
    size_t off = 0;
    while (s->rlen - off >= 2) {
        unsigned char *f = s->rb + off;
        size_t avail = s->rlen - off;
        bool fin = f[0] & 0x80;
        int op = f[0] & 0x0f;
        if (f[1] & 0x80) {
            fail(s, "the server sent a masked frame");
            return;
        }
        uint64_t plen = f[1] & 0x7f;
        size_t h = 2;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | f[2 + i];
            h = 10;
        }
        if (plen > WS_FRAME_MAX) {
            fail(s, "frame of %llu bytes", (unsigned long long)plen);
            return;
        }
        if (avail < h + plen)
            break;
        unsigned char *p = f + h;
        off += h + (size_t)plen;
        if (op >= 8) { /* control: never fragmented */
            if (op == 0x8) {
                s->got_close = true;
                if (!s->sent_close) {
                    s->sent_close = true;
                    ws_send(s, 0x8, p, plen >= 2 ? 2 : 0);
                }
            } else if (op == 0x9) {
                ws_send(s, 0xA, p, (size_t)plen);
            }
            continue;
        }
        if (op == 0)
            op = s->frag_op;
        else
            s->frag_op = fin ? 0 : op;
        if (fin && op != 0)
            s->frag_op = 0;
        if (op == 0x2)
            on_term_output(s, p, (size_t)plen, t);
        else if (op == 0x1)
            on_text(s, p, (size_t)plen); /* gateway text messages are never fragmented */
        else
            fail(s, "unexpected opcode %d", op);
    }
    if (off) {
        memmove(s->rb, s->rb + off, s->rlen - off);
        s->rlen -= off;
    }
}

/* Reads what TLS has now (non-blocking socket) or waits up to ms for
 * something (blocking use during set-up). Returns bytes read, 0 when
 * nothing was there, -1 on EOF/error. */
static int ws_read(sess *s, uint64_t t)
{
    int total = 0;
    for (;;) {
        if (s->rcap - s->rlen < 16384) {
            size_t cap = s->rcap ? s->rcap * 2 : 65536;
            unsigned char *nb = realloc(s->rb, cap);
            if (!nb)
                die("out of memory");
            s->rb = nb;
            s->rcap = cap;
        }
        int n = SSL_read(s->ssl, s->rb + s->rlen, (int)(s->rcap - s->rlen));
        if (n > 0) {
            s->rlen += (size_t)n;
            total += n;
            ws_parse(s, t);
            if (s->dead)
                return -1;
            continue;
        }
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return total;
        if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) {
            if (!s->got_close)
                fail(s, "the gateway closed the connection%s%s", s->text_len ? "; last: " : "",
                     s->text);
            return -1;
        }
        fail(s, "TLS read failed (ssl error %d)", e);
        return -1;
    }
}

/* Blocking read of one batch, with a deadline. */
static int ws_read_wait(sess *s, uint64_t deadline)
{
    while (!s->dead) {
        if (SSL_pending(s->ssl) == 0) {
            uint64_t t = now_ns();
            if (t >= deadline) {
                fail(s, "timed out (last message: %s)", s->text);
                return -1;
            }
            int r = wait_fd(s->fd, POLLIN, (int)((deadline - t) / 1000000 + 1));
            if (r <= 0)
                continue;
        }
        /* The socket is non-blocking from the start: ws_read returns what
         * is there. */
        int n = ws_read(s, now_ns());
        if (n != 0)
            return n;
    }
    return -1;
}

static bool b64_accept_ok(const char *key, const char *resp)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char cat[128];
    unsigned char sha[SHA_DIGEST_LENGTH];
    unsigned char b64[64];
    snprintf(cat, sizeof(cat), "%s%s", key, guid);
    SHA1((unsigned char *)cat, strlen(cat), sha);
    EVP_EncodeBlock(b64, sha, SHA_DIGEST_LENGTH);
    const char *h = strcasestr(resp, "\r\nSec-WebSocket-Accept:");
    if (!h)
        return false;
    h += strlen("\r\nSec-WebSocket-Accept:");
    while (*h == ' ')
        h++;
    return strncmp(h, (char *)b64, strlen((char *)b64)) == 0;
}

static int ws_open(sess *s, const char *shell_cmd)
{
    uint64_t deadline = now_ns() + (uint64_t)SETUP_TIMEOUT_MS * 1000000ull;
    s->fd = tcp_connect(s);
    if (s->fd < 0)
        return -1;
    s->ssl = SSL_new(tls_ctx);
    if (!s->ssl || SSL_set_fd(s->ssl, s->fd) != 1) {
        fail(s, "SSL_new failed");
        return -1;
    }
    if (SSL_connect(s->ssl) != 1) {
        fail(s, "TLS handshake failed: %s", ERR_reason_error_string(ERR_get_error()));
        return -1;
    }
    unsigned char raw[16];
    char key[32];
    RAND_bytes(raw, sizeof(raw));
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof(raw));
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "GET /ws/ssh?vm=%s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Origin: %s\r\n"
                     "Cookie: postern_session=%s\r\n"
                     "User-Agent: postern-ssh-bench\r\n\r\n",
                     opt.vm, opt.host, opt.port, key, opt.origin, opt.cookie);
    if (tls_write_all(s, req, n) != 0)
        return -1;
    char resp[4096];
    size_t rl = 0;
    char *end = NULL;
    while (!end) {
        if (rl >= sizeof(resp) - 1) {
            fail(s, "upgrade response too long");
            return -1;
        }
        int r = SSL_read(s->ssl, resp + rl, (int)(sizeof(resp) - 1 - rl));
        if (r <= 0) {
            fail(s, "no upgrade response (ssl error %d)", SSL_get_error(s->ssl, r));
            return -1;
        }
        rl += (size_t)r;
        resp[rl] = '\0';
        end = strstr(resp, "\r\n\r\n");
    }
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
        char first[200];
        json_escape(first, sizeof(first), resp);
        fail(s, "upgrade refused: %s", first);
        return -1;
    }
    if (!b64_accept_ok(key, resp)) {
        fail(s, "wrong Sec-WebSocket-Accept");
        return -1;
    }
    /* Frames may already follow the header in the same read. */
    size_t hdr = (size_t)(end + 4 - resp);
    s->rcap = 65536;
    s->rb = malloc(s->rcap);
    if (!s->rb)
        die("out of memory");
    s->rlen = rl - hdr;
    memcpy(s->rb, resp + hdr, s->rlen);
    fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
    ws_parse(s, now_ns());
    while (!s->dead && !strstr(s->text, "ready: send connect"))
        if (ws_read_wait(s, deadline) < 0)
            return -1;

    size_t cap = strlen(opt.key_text) * 2 + 1024;
    char *esc = malloc(cap), *msg = malloc(cap + 256);
    if (!esc || !msg)
        die("out of memory");
    json_escape(esc, cap, opt.key_text);
    n = snprintf(msg, cap + 256,
                 "{\"type\":\"connect\",\"username\":\"%s\",\"private_key\":\"%s\","
                 "\"cols\":80,\"rows\":24}",
                 opt.login, esc);
    int rc = ws_send(s, 0x1, msg, (size_t)n);
    free(esc);
    free(msg);
    if (rc != 0)
        return -1;
    while (!s->dead && !s->connected)
        if (ws_read_wait(s, deadline) < 0)
            return -1;

    expect_pattern(s, READY_MARK);
    if (ws_send(s, 0x2, shell_cmd, strlen(shell_cmd)) != 0)
        return -1;
    while (!s->dead && !s->pat_found)
        if (ws_read_wait(s, deadline) < 0)
            return -1;
    return s->dead ? -1 : 0;
}

/* ---- libssh, direct ----------------------------------------------------- */

static int ssh_read_wait(sess *s, uint64_t deadline)
{
    unsigned char buf[16384];
    uint64_t t = now_ns();
    if (t >= deadline) {
        fail(s, "timed out waiting for the shell");
        return -1;
    }
    int n = ssh_channel_read_timeout(s->ch, buf, sizeof(buf), 0,
                                     (int)((deadline - t) / 1000000 + 1));
    if (n == SSH_ERROR) {
        fail(s, "read: %s", ssh_get_error(s->ssh));
        return -1;
    }
    if (n == 0 && ssh_channel_is_eof(s->ch)) {
        fail(s, "the shell ended");
        return -1;
    }
    if (n > 0)
        on_term_output(s, buf, (size_t)n, now_ns());
    return n;
}

static int ssh_open(sess *s, const char *shell_cmd)
{
    uint64_t deadline = now_ns() + (uint64_t)SETUP_TIMEOUT_MS * 1000000ull;
    s->fd = tcp_connect(s);
    if (s->fd < 0)
        return -1;
    s->ssh = ssh_new();
    int no = 0, verbosity = SSH_LOG_NOLOG;
    long timeout = SETUP_TIMEOUT_MS / 1000;
    if (!s->ssh || ssh_options_set(s->ssh, SSH_OPTIONS_FD, &s->fd) ||
        ssh_options_set(s->ssh, SSH_OPTIONS_HOST, opt.host) ||
        ssh_options_set(s->ssh, SSH_OPTIONS_USER, opt.login) ||
        ssh_options_set(s->ssh, SSH_OPTIONS_PROCESS_CONFIG, &no) ||
        ssh_options_set(s->ssh, SSH_OPTIONS_LOG_VERBOSITY, &verbosity) ||
        ssh_options_set(s->ssh, SSH_OPTIONS_TIMEOUT, &timeout)) {
        fail(s, "cannot set up libssh");
        return -1;
    }
    if (ssh_connect(s->ssh) != SSH_OK) {
        fail(s, "ssh_connect: %s", ssh_get_error(s->ssh));
        return -1;
    }
    /* The host key is not checked: the bench's own sshd on loopback (the
     * gateway side checks its pinned key as configured). */
    /* A key object per session: the opener threads sign concurrently. */
    if (ssh_pki_import_privkey_base64(opt.key_text, NULL, NULL, NULL, &s->key) != SSH_OK) {
        fail(s, "cannot read the key %s", opt.key_path);
        return -1;
    }
    if (ssh_userauth_publickey(s->ssh, NULL, s->key) != SSH_AUTH_SUCCESS) {
        fail(s, "key login refused: %s", ssh_get_error(s->ssh));
        return -1;
    }
    s->ch = ssh_channel_new(s->ssh);
    if (!s->ch || ssh_channel_open_session(s->ch) != SSH_OK ||
        ssh_channel_request_pty_size(s->ch, "xterm-256color", 80, 24) != SSH_OK ||
        ssh_channel_request_shell(s->ch) != SSH_OK) {
        fail(s, "channel/pty/shell: %s", ssh_get_error(s->ssh));
        return -1;
    }
    expect_pattern(s, READY_MARK);
    if (ssh_channel_write(s->ch, shell_cmd, (uint32_t)strlen(shell_cmd)) !=
        (int)strlen(shell_cmd)) {
        fail(s, "write: %s", ssh_get_error(s->ssh));
        return -1;
    }
    while (!s->dead && !s->pat_found)
        if (ssh_read_wait(s, deadline) < 0)
            return -1;
    return s->dead ? -1 : 0;
}

/* ---- both modes --------------------------------------------------------- */

static int send_bytes(sess *s, const void *p, size_t len)
{
    if (opt.mode == MODE_WS)
        return ws_send(s, 0x2, p, len);
    if (ssh_channel_write(s->ch, p, (uint32_t)len) != (int)len) {
        fail(s, "write: %s", ssh_get_error(s->ssh));
        return -1;
    }
    if (ssh_get_poll_flags(s->ssh) & SSH_WRITE_PENDING)
        ssh_blocking_flush(s->ssh, 5000);
    return 0;
}

/* Blocking read of whatever comes next (set-up, bulk). */
static int read_wait(sess *s, uint64_t deadline)
{
    return opt.mode == MODE_WS ? ws_read_wait(s, deadline) : ssh_read_wait(s, deadline);
}

static const char *shell_command(void)
{
    /* RE''ADY: the echo of the command line must not match the mark. */
    return opt.bulk_bytes ? "stty raw -echo; echo RE''ADY\n"
                          : "stty raw -echo; echo RE''ADY; exec cat\n";
}

static int open_one(sess *s)
{
    const char *cmd = shell_command();
    int rc = opt.mode == MODE_WS ? ws_open(s, cmd) : ssh_open(s, cmd);
    if (rc != 0 || opt.bulk_bytes)
        return rc;
    /* One probe: cat is running and the path is warm before measuring. */
    uint64_t deadline = now_ns() + (uint64_t)SETUP_TIMEOUT_MS * 1000000ull;
    static const char probe[2] = {PROBE_BYTE, 0};
    expect_pattern(s, probe);
    char b = PROBE_BYTE;
    if (send_bytes(s, &b, 1) != 0)
        return -1;
    while (!s->dead && !s->pat_found)
        if (read_wait(s, deadline) < 0)
            return -1;
    s->pat = NULL;
    return s->dead ? -1 : 0;
}

static void *opener(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&open_lock);
        int i = next_to_open < opt.sessions ? next_to_open++ : -1;
        pthread_mutex_unlock(&open_lock);
        if (i < 0)
            return NULL;
        open_one(&S[i]);
    }
}

static void on_term_output(sess *s, const unsigned char *p, size_t len, uint64_t t)
{
    if (s->bulk_active) {
        s->bulk_rx += len;
        match_feed(s, p, len);
        return;
    }
    if (s->pat) {
        match_feed(s, p, len);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (s->outstanding && p[i] == s->expect) {
            uint64_t us = t > s->t_sent ? (t - s->t_sent) / 1000 : 0;
            uint32_t v = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
            if (trace)
                fprintf(trace, "%d,%.3f,%u,%d\n", s->idx, (s->t_sent - trace_t0) / 1e6, v,
                        s->done < opt.warmup);
            if (s->done < opt.warmup)
                warm_samples[nwarm++] = v;
            else
                samples[nsamples++] = v;
            s->outstanding = false;
            s->done++;
        } else {
            unexpected++;
        }
    }
}

static uint64_t interval_ns(void)
{
    double base = 1e9 / opt.rate;
    double r = (double)random() / RAND_MAX;
    double f = 1.0 - opt.jitter + 2.0 * opt.jitter * r;
    return (uint64_t)(base * f);
}

static void send_key(sess *s)
{
    unsigned char b = (unsigned char)('a' + s->sent % 26);
    s->expect = b;
    s->outstanding = true;
    s->t_sent = now_ns();
    s->sent++;
    if (send_bytes(s, &b, 1) != 0) {
        s->outstanding = false;
        return;
    }
    if (s->sent < opt.warmup + opt.keys) {
        s->t_next = s->t_sent + interval_ns();
        heap_push(s);
    }
}

static void pump_readable(sess *s, uint64_t t)
{
    if (s->dead)
        return;
    if (opt.mode == MODE_WS) {
        ws_read(s, t);
    } else {
        unsigned char buf[16384];
        for (;;) {
            int n = ssh_channel_read_nonblocking(s->ch, buf, sizeof(buf), 0);
            if (n == SSH_ERROR) {
                fail(s, "read: %s", ssh_get_error(s->ssh));
                break;
            }
            if (n <= 0) {
                if (ssh_channel_is_eof(s->ch) || ssh_channel_is_closed(s->ch))
                    fail(s, "the shell ended");
                break;
            }
            on_term_output(s, buf, (size_t)n, t);
        }
    }
    if (s->want_send && !s->outstanding && !s->dead) {
        s->want_send = false;
        send_key(s);
    }
}

static bool session_finished(sess *s)
{
    return s->dead || (s->sent >= opt.warmup + opt.keys && !s->outstanding);
}

static void print_errors(FILE *out, int max)
{
    fputs("[", out);
    int shown = 0;
    for (int i = 0; i < opt.sessions && shown < max; i++) {
        if (!S[i].dead)
            continue;
        char e[600];
        json_escape(e, sizeof(e), S[i].err);
        fprintf(out, "%s\"session %d: %s\"", shown ? "," : "", i, e);
        shown++;
    }
    fputs("]", out);
}

static int count_dead(void)
{
    int d = 0;
    for (int i = 0; i < opt.sessions; i++)
        d += S[i].dead;
    return d;
}

static void run_latency(int ep)
{
    samples = calloc((size_t)opt.sessions * (size_t)opt.keys + 1, sizeof(*samples));
    warm_samples = calloc((size_t)opt.sessions * (size_t)opt.warmup + 1, sizeof(*warm_samples));
    heap = calloc((size_t)opt.sessions + 1, sizeof(*heap));
    if (!samples || !warm_samples || !heap)
        die("out of memory");
    double cpu0 = cpu_seconds();
    uint64_t start = now_ns();
    if (opt.trace_path) {
        trace = fopen(opt.trace_path, "w");
        if (!trace)
            die("cannot write %s: %s", opt.trace_path, strerror(errno));
        /* Send times are ms after this CLOCK_MONOTONIC instant (ns). */
        fprintf(trace, "# start_monotonic_ns=%llu\n", (unsigned long long)start);
        fputs("session,sent_ms,latency_us,warmup\n", trace);
        trace_t0 = start;
    }
    for (int i = 0; i < opt.sessions; i++) {
        sess *s = &S[i];
        if (s->dead)
            continue;
        /* Staggered starts: the sessions do not type in step. */
        s->t_next = start + (uint64_t)((double)random() / RAND_MAX * 1e9 / opt.rate);
        heap_push(s);
    }
    uint64_t phase_deadline =
        start + (uint64_t)(((opt.warmup + opt.keys) / opt.rate * 3.0 + opt.echo_timeout + 30.0) * 1e9);
    uint64_t next_sweep = start + 1000000000ull;
    uint64_t echo_to = (uint64_t)(opt.echo_timeout * 1e9);
    struct epoll_event evs[256];
    for (;;) {
        uint64_t t = now_ns();
        while (heap_n && heap[0]->t_next <= t) {
            sess *s = heap_pop();
            if (s->dead)
                continue;
            if (s->outstanding) {
                /* The echo of the previous key is late: type on its arrival. */
                s->want_send = true;
                deferred++;
            } else {
                send_key(s);
            }
        }
        if (t >= next_sweep) {
            /* Fresh time: keys sent just above are newer than t. */
            t = now_ns();
            next_sweep = t + 1000000000ull;
            bool all = true;
            for (int i = 0; i < opt.sessions; i++) {
                sess *s = &S[i];
                if (s->outstanding && t > s->t_sent && t - s->t_sent > echo_to) {
                    lost++;
                    s->outstanding = false;
                    if (s->want_send) {
                        s->want_send = false;
                        send_key(s);
                    }
                }
                all = all && session_finished(s);
            }
            if (all || t > phase_deadline)
                break;
        }
        uint64_t wake = next_sweep;
        if (heap_n && heap[0]->t_next < wake)
            wake = heap[0]->t_next;
        t = now_ns();
        int ms = wake > t ? (int)((wake - t + 999999) / 1000000) : 0;
        int n = epoll_wait(ep, evs, 256, ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        /* One arrival time per batch: the moment the loop saw the data,
         * not after decrypting the sessions before it in the batch. */
        uint64_t tb = now_ns();
        for (int i = 0; i < n; i++)
            pump_readable(&S[evs[i].data.u32], tb);
        /* Finished early? Check without waiting for the sweep. */
        if (n > 0 && heap_n == 0) {
            bool all = true;
            for (int i = 0; i < opt.sessions && all; i++)
                all = session_finished(&S[i]);
            if (all)
                break;
        }
    }
    double secs = (now_ns() - start) / 1e9;
    double cpu = cpu_seconds() - cpu0;
    if (trace)
        fclose(trace);
    long long sent = 0;
    for (int i = 0; i < opt.sessions; i++)
        sent += S[i].sent;
    dead_sessions = count_dead();
    printf("{\"event\":\"latency\",\"sessions\":%d,\"keys_per_session\":%d,\"rate\":%g,"
           "\"seconds\":%.3f,\"client_cpu_seconds\":%.3f,\"sent\":%lld,\"echoed\":%zu,"
           "\"lost\":%lld,\"deferred\":%lld,\"unexpected_bytes\":%lld,\"dead_sessions\":%lld,"
           "\"errors\":",
           opt.sessions, opt.keys, opt.rate, secs, cpu, sent, nsamples, lost, deferred,
           unexpected, dead_sessions);
    print_errors(stdout, 5);
    printf(",\"warmup_keys_per_session\":%d,\"warmup_samples_us\":[", opt.warmup);
    for (size_t i = 0; i < nwarm; i++)
        printf(i ? ",%u" : "%u", warm_samples[i]);
    printf("],\"samples_us\":[");
    for (size_t i = 0; i < nsamples; i++)
        printf(i ? ",%u" : "%u", samples[i]);
    printf("]}\n");
    fflush(stdout);
}

static void run_bulk(void)
{
    sess *s = &S[0];
    if (s->dead) {
        printf("{\"event\":\"bulk\",\"error\":\"the session is not open\"}\n");
        fflush(stdout);
        return;
    }
    char cmd[256];
    /* BULK''END: the mark appears only when the command has finished. */
    snprintf(cmd, sizeof(cmd), "head -c %lld /dev/zero | base64; echo BULK''END\n",
             opt.bulk_bytes);
    expect_pattern(s, BULK_MARK);
    s->bulk_rx = 0;
    s->bulk_active = true;
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns(), first = 0;
    uint64_t deadline = t0 + 600ull * 1000000000ull;
    if (send_bytes(s, cmd, strlen(cmd)) == 0) {
        while (!s->dead && !s->pat_found) {
            if (read_wait(s, deadline) < 0)
                break;
            if (!first && s->bulk_rx)
                first = now_ns();
        }
    }
    uint64_t t1 = now_ns();
    s->bulk_active = false;
    double cpu = cpu_seconds() - cpu0;
    char e[600] = "";
    if (s->dead)
        json_escape(e, sizeof(e), s->err);
    printf("{\"event\":\"bulk\",\"requested_bytes\":%lld,\"received_bytes\":%llu,"
           "\"seconds\":%.4f,\"first_byte_seconds\":%.4f,\"client_cpu_seconds\":%.3f,"
           "\"complete\":%s,\"error\":\"%s\"}\n",
           opt.bulk_bytes, s->bulk_rx, (t1 - t0) / 1e9, first ? (first - t0) / 1e9 : -1.0, cpu,
           s->pat_found ? "true" : "false", e);
    fflush(stdout);
}

static void close_all(int ep)
{
    if (opt.mode == MODE_WS) {
        static const unsigned char code[2] = {0x03, 0xe8}; /* 1000 */
        for (int i = 0; i < opt.sessions; i++) {
            sess *s = &S[i];
            if (s->ssl && !s->dead && !s->sent_close) {
                s->sent_close = true;
                ws_send(s, 0x8, code, 2);
            }
        }
        /* The gateway answers each close frame, then hangs up. */
        uint64_t deadline = now_ns() + 5000000000ull;
        struct epoll_event evs[256];
        for (;;) {
            bool all = true;
            for (int i = 0; i < opt.sessions && all; i++)
                all = S[i].dead || S[i].got_close || !S[i].ssl;
            if (all || now_ns() >= deadline)
                break;
            int n = epoll_wait(ep, evs, 256, 100);
            for (int i = 0; i < n; i++) {
                sess *s = &S[evs[i].data.u32];
                if (!s->dead && !s->got_close) {
                    ws_read(s, now_ns());
                    if (s->dead || s->got_close)
                        epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                }
            }
        }
        for (int i = 0; i < opt.sessions; i++) {
            if (S[i].ssl)
                SSL_free(S[i].ssl);
            if (S[i].fd >= 0)
                close(S[i].fd);
            free(S[i].rb);
        }
    } else {
        for (int i = 0; i < opt.sessions; i++) {
            sess *s = &S[i];
            if (s->ssh) {
                ssh_set_blocking(s->ssh, 1);
                if (s->ch) {
                    ssh_channel_close(s->ch);
                    ssh_channel_free(s->ch);
                }
                ssh_disconnect(s->ssh);
                ssh_free(s->ssh);
            }
            if (s->key)
                ssh_key_free(s->key);
            if (s->fd >= 0)
                close(s->fd);
        }
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ssh_loadgen --mode ws|ssh --port N --login USER --key FILE [--sessions N]\n"
            "       [--parallel N] [--keys N] [--warmup N] [--rate KEYS_PER_S] [--jitter F]\n"
            "       [--echo-timeout S] [--bulk BYTES] [--trace FILE.csv]\n"
            "       ws: --vm NAME --origin URL --cookie VALUE\n");
    exit(2);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot read %s: %s", path, strerror(errno));
    char *buf = calloc(1, 65537);
    size_t n = fread(buf, 1, 65536, f);
    fclose(f);
    if (!n)
        die("%s is empty", path);
    return buf;
}

int main(int argc, char **argv)
{
    const char *mode = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--mode"))
            mode = v;
        else if (!strcmp(a, "--host"))
            opt.host = v;
        else if (!strcmp(a, "--port"))
            opt.port = atoi(v);
        else if (!strcmp(a, "--sessions"))
            opt.sessions = atoi(v);
        else if (!strcmp(a, "--parallel"))
            opt.parallel = atoi(v);
        else if (!strcmp(a, "--vm"))
            opt.vm = v;
        else if (!strcmp(a, "--origin"))
            opt.origin = v;
        else if (!strcmp(a, "--cookie"))
            opt.cookie = v;
        else if (!strcmp(a, "--login"))
            opt.login = v;
        else if (!strcmp(a, "--key"))
            opt.key_path = v;
        else if (!strcmp(a, "--keys"))
            opt.keys = atoi(v);
        else if (!strcmp(a, "--trace"))
            opt.trace_path = v;
        else if (!strcmp(a, "--warmup"))
            opt.warmup = atoi(v);
        else if (!strcmp(a, "--rate"))
            opt.rate = atof(v);
        else if (!strcmp(a, "--jitter"))
            opt.jitter = atof(v);
        else if (!strcmp(a, "--echo-timeout"))
            opt.echo_timeout = atof(v);
        else if (!strcmp(a, "--bulk"))
            opt.bulk_bytes = atoll(v);
        else
            usage();
    }
    if (!mode || !opt.port || !opt.login || !opt.key_path || opt.sessions < 1 ||
        opt.parallel < 1 || opt.keys < 1 || opt.warmup < 0 || opt.rate <= 0 || opt.jitter < 0 || opt.jitter >= 1)
        usage();
    if (!strcmp(mode, "ws")) {
        opt.mode = MODE_WS;
        if (!opt.vm || !opt.origin || !opt.cookie)
            usage();
    } else if (!strcmp(mode, "ssh")) {
        opt.mode = MODE_SSH;
    } else {
        usage();
    }
    if (opt.bulk_bytes)
        opt.sessions = 1;
    opt.key_text = read_file(opt.key_path);
    srandom((unsigned)(now_ns() ^ (uint64_t)getpid()));

    if (ssh_init() != SSH_OK)
        die("ssh_init failed");
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL); /* the bench's self-signed gateway */
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(tls_ctx, alpn, sizeof(alpn) - 1);

    S = calloc((size_t)opt.sessions, sizeof(*S));
    if (!S)
        die("out of memory");
    for (int i = 0; i < opt.sessions; i++) {
        S[i].idx = i;
        S[i].fd = -1;
        S[i].heap_pos = -1;
    }

    uint64_t t0 = now_ns();
    int nthreads = opt.parallel < opt.sessions ? opt.parallel : opt.sessions;
    pthread_t *th = calloc((size_t)nthreads, sizeof(*th));
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, opener, NULL) != 0)
            die("pthread_create failed");
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    free(th);
    double open_s = (now_ns() - t0) / 1e9;

    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < opt.sessions; i++) {
        sess *s = &S[i];
        if (s->dead)
            continue;
        if (opt.mode == MODE_SSH && !opt.bulk_bytes)
            ssh_set_blocking(s->ssh, 0);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) != 0)
            die("epoll_ctl: %s", strerror(errno));
    }
    const char *cipher = "";
    if (opt.mode == MODE_SSH && S[0].ssh && !S[0].dead)
        cipher = ssh_get_cipher_out(S[0].ssh);
    else if (opt.mode == MODE_WS && S[0].ssl && !S[0].dead)
        cipher = SSL_get_cipher_name(S[0].ssl);
    printf("{\"event\":\"open\",\"mode\":\"%s\",\"sessions\":%d,\"failed\":%d,\"seconds\":%.3f,"
           "\"cipher\":\"%s\",\"libssh\":\"%s\",\"pid\":%d,\"errors\":",
           mode, opt.sessions, count_dead(), open_s, cipher ? cipher : "",
           ssh_version(0), (int)getpid());
    print_errors(stdout, 5);
    printf("}\n");
    fflush(stdout);

    char line[64];
    bool quit = false;
    while (!quit && fgets(line, sizeof(line), stdin)) {
        if (!strncmp(line, "go", 2)) {
            if (opt.bulk_bytes)
                run_bulk();
            else
                run_latency(ep);
        } else if (!strncmp(line, "quit", 4)) {
            quit = true;
        }
    }
    close_all(ep);
    printf("{\"event\":\"closed\",\"dead\":%d}\n", count_dead());
    fflush(stdout);
    return 0;
}
