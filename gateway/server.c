/* The libwebsockets context, its vhosts and protocol callbacks, TLS policy,
 * drain and reload. */
#include "gateway/internal.h"

#include "common/err.h"
#include "common/log.h"
#include "recording/recording.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* TLS 1.2 only with forward-secret AEAD suites; TLS 1.3 suites are all
 * AEAD and listed in preference order. */
#define GW_TLS12_CIPHERS                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"              \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"              \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define GW_TLS13_CIPHERS \
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* The console loads only its own scripts, styles and images and talks only
 * to its own origin (wss included under 'self'); nothing may frame it. */
#define GW_CSP                                                                  \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' " \
    "data: blob:; font-src 'self'; connect-src 'self'; manifest-src 'self'; "  \
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

/* Given to each vhost as its canned headers: lws adds them to every
 * response it writes, ours and its own error pages alike, so no answer
 * can leave without them. A linked list, as lws wants it. */
static const struct lws_protocol_vhost_options gw_security_headers[] = {
#define H(i, name, value) {i < 7 ? &gw_security_headers[i + 1] : NULL, NULL, name, value}
    H(0, "strict-transport-security:", "max-age=63072000; includeSubDomains"),
    H(1, "content-security-policy:", GW_CSP),
    H(2, "x-content-type-options:", "nosniff"),
    H(3, "x-frame-options:", "DENY"),
    H(4, "referrer-policy:", "no-referrer"),
    H(5, "cross-origin-opener-policy:", "same-origin"),
    H(6, "cross-origin-resource-policy:", "same-origin"),
    H(7, "permissions-policy:", "camera=(), microphone=(), geolocation=(), payment=()"),
#undef H
};

/* Login throttling remembers at most this many accounts and addresses. */
#define GW_THROTTLE_KEYS 100000

/* Request headers a client may send in all; a 1 MiB request line is cut
 * off here instead of being buffered. */
#define GW_MAX_HEADER_BYTES 8192
/* Connections that may hold a header table at once. */
#define GW_HEADER_POOL 1024

unsigned gw_server_live_sessions(const gw_server *srv)
{
    unsigned n = 0;
    for (int p = 0; p < GW_PROTO_COUNT; p++)
        n += (unsigned)srv->metrics.sessions_active[p];
    return n;
}

/* lws reports client mistakes (bad requests, failed handshakes) as
 * warnings and errors: any client could flood the log with them. At most
 * LWS_LOG_BURST lines per LWS_LOG_WINDOW seconds pass; the rest are
 * counted and the count is logged when the window turns. */
#define LWS_LOG_BURST 20
#define LWS_LOG_WINDOW 10

static void lws_log_bridge(int level, const char *line)
{
    static time_t window_start;
    static unsigned in_window, suppressed;
    time_t now = time(NULL);
    if (now - window_start >= LWS_LOG_WINDOW) {
        if (suppressed)
            log_event(LOG_WARN, "lws.suppressed", "lines=%u", suppressed);
        window_start = now;
        in_window = suppressed = 0;
    }
    if (++in_window > LWS_LOG_BURST) {
        suppressed++;
        return;
    }
    char msg[512];
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (n >= sizeof(msg))
        n = sizeof(msg) - 1;
    memcpy(msg, line, n);
    msg[n] = '\0';
    log_event(level & LLL_ERR ? LOG_ERROR : LOG_WARN, "lws", "msg=%s", log_q(msg));
}

static void count_connection(gw_server *srv, int delta)
{
    if (delta > 0) {
        srv->metrics.connections_total++;
        srv->metrics.connections_active++;
    } else if (srv->metrics.connections_active > 0) {
        srv->metrics.connections_active--;
    }
}

/* Shared by both vhosts' protocols: what every connection needs. */
static int common_callback(gw_server *srv, struct lws *wsi, enum lws_callback_reasons reason,
                           void *user, void *in, size_t len, bool *handled)
{
    gw_http_conn *conn = user;
    *handled = true;
    switch (reason) {
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        /* user is the vhost's SSL_CTX: enforce the protocol floor here as
         * well as through ssl_options_set, whatever OpenSSL's defaults are. */
        if (user && (!SSL_CTX_set_min_proto_version(user, TLS1_2_VERSION) ||
                     !SSL_CTX_set_max_proto_version(user, 0)))
            return 1;
        SSL_CTX_set_options(user, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                      SSL_OP_NO_COMPRESSION);
        return 0;
    case LWS_CALLBACK_WSI_CREATE:
        if (srv)
            count_connection(srv, +1);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY: {
        if (srv)
            count_connection(srv, -1);
        gw_ws_request_drop(wsi);
        return 0;
    }
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (conn && conn->job_done)
            return gw_http_job_answer(srv, wsi, conn);
        if (conn && conn->file)
            return gw_http_file_write(wsi, conn);
        return conn ? gw_http_write_body(wsi, conn) : -1;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (conn) {
            gw_http_job_abandon(conn);
            gw_http_conn_release(conn);
        }
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return gw_ws_on_confirm_upgrade(srv, wsi);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* No WebSocket endpoint is served by this protocol. */
        return 1;
    default:
        break;
    }
    (void)in;
    (void)len;
    *handled = false;
    return 0;
}

static gw_server *server_of(struct lws *wsi)
{
    struct lws_context *ctx = lws_get_context(wsi);
    return ctx ? lws_context_user(ctx) : NULL;
}

static int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                         void *in, size_t len)
{
    gw_server *srv = server_of(wsi);
    bool handled;
    int rc = common_callback(srv, wsi, reason, user, in, len, &handled);
    if (handled)
        return rc;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return gw_http_on_request(srv, wsi, user, in);
    case LWS_CALLBACK_HTTP_BODY:
        return gw_http_on_body(srv, wsi, user, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return gw_http_on_body_done(srv, wsi, user);
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* The host part of a Host header or origin ("h:1", "[::1]:2" -> "h", "[::1]"). */
static size_t host_part(const char *s, size_t n)
{
    if (n && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        return close ? (size_t)(close - s) + 1 : n;
    }
    const char *colon = memchr(s, ':', n);
    return colon ? (size_t)(colon - s) : n;
}

/* Redirect to the origin whose host the client asked for, else to the
 * first origin: never to a host the client made up. */
static const char *redirect_origin(gw_server *srv, struct lws *wsi)
{
    char host[256];
    int n = lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST);
    if (n > 0) {
        size_t hlen = host_part(host, (size_t)n);
        for (size_t i = 0; i < srv->cfg->norigins; i++) {
            const char *o = srv->cfg->origins[i];
            const char *oh = strstr(o, "://");
            if (!oh || strncmp(o, "https://", 8) != 0)
                continue;
            oh += 3;
            size_t ohlen = host_part(oh, strlen(oh));
            if (ohlen == hlen && strncasecmp(oh, host, hlen) == 0)
                return o;
        }
    }
    for (size_t i = 0; i < srv->cfg->norigins; i++)
        if (strncmp(srv->cfg->origins[i], "https://", 8) == 0)
            return srv->cfg->origins[i];
    return srv->cfg->origins[0];
}

static int redirect_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len)
{
    gw_server *srv = server_of(wsi);
    bool handled;
    int rc = common_callback(srv, wsi, reason, user, in, len, &handled);
    if (handled)
        return rc;
    if (reason != LWS_CALLBACK_HTTP)
        return lws_callback_http_dummy(wsi, reason, user, in, len);

    const char *path = in;
    char location[2048];
    if (!path || path[0] != '/' || strlen(path) > 1024)
        path = "/";
    /* Drop anything that could split the header. */
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == 0x7f)
            path = "/";
    snprintf(location, sizeof(location), "%s%s", redirect_origin(srv, wsi), path);
    gw_http_header loc = {"location:", location};
    return gw_http_respond(wsi, user, 308, "text/plain; charset=utf-8", "redirect\n", 9,
                           false, &loc, 1, false);
}

/* rx_buffer_size bounds what lws reads per callback; our own reassembly
 * bound is in ws_conn.c. */
static const struct lws_protocols https_protocols[] = {
    {"http", http_callback, sizeof(gw_http_conn), 32768, 0, NULL, 0},
    {"postern-ws", gw_ws_callback, sizeof(gw_ws_conn *), 16384, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Upgrades carry no Sec-WebSocket-Protocol: the endpoint is the path.
 * This option makes postern-ws the vhost's protocol for them. */
static const struct lws_protocol_vhost_options ws_default_option = {NULL, NULL, "default", "1"};
static const struct lws_protocol_vhost_options ws_protocol_options = {
    NULL, &ws_default_option, "postern-ws", ""};

static const struct lws_protocols redirect_protocols[] = {
    {"http-redirect", redirect_callback, sizeof(gw_http_conn), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Binding first ourselves turns a busy port into a clear message; lws only
 * logs a generic failure. The socket is closed again at once. */
static int probe_bind(const gw_addr *a, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, a->host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)a->port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, a->host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)a->port);
        sl = sizeof(*s6);
    } else {
        return 0; /* a host name: lws resolves it and reports */
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    int rc = 0;
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot listen on %s:%d: %s", a->host, a->port,
                 errno == EADDRINUSE ? "address already in use" : strerror(errno));
    }
    close(fd);
    return rc;
}

static void addr_text(const gw_addr *a, char *out, size_t n)
{
    bool v6 = strchr(a->host, ':') != NULL;
    snprintf(out, n, "%s%s%s:%d", v6 ? "[" : "", a->host, v6 ? "]" : "", a->port);
}

static int create_vhost(gw_server *srv, const gw_addr *a, bool tls, char *err, size_t errlen)
{
    struct lws_context_creation_info info;
    int rc = probe_bind(a, err, errlen);
    if (rc)
        return rc;

    /* lws keeps these pointers for the vhost's life (ASan caught it using
     * a stack copy): they live in the server, not in a config a reload
     * frees. */
    gw_vhost_strings *vs = &srv->vhost_strings[srv->nvhosts++];
    addr_text(a, vs->name, sizeof(vs->name));
    snprintf(vs->iface, sizeof(vs->iface), "%s", a->host);
    const char *name = vs->name;
    memset(&info, 0, sizeof(info));
    info.vhost_name = vs->name;
    info.iface = vs->iface;
    info.port = a->port;
    info.user = srv;
    info.headers = gw_security_headers;
    /* lws binds the IPv6 wildcard unless told the address family: an IPv4
     * address gets an IPv4-only vhost, an IPv6 one a v6-only socket. */
    if (strchr(a->host, ':'))
        info.options = LWS_SERVER_OPTION_IPV6_V6ONLY_MODIFY |
                       LWS_SERVER_OPTION_IPV6_V6ONLY_VALUE;
    else
        info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    info.keepalive_timeout = 30;
    /* TCP keepalive on every client: a client that died while we were not
     * reading it (its FIN queued behind bytes our zero window refuses) is
     * only found by a probe the dead host answers with a reset. */
    info.ka_time = 60;
    info.ka_probes = 3;
    info.ka_interval = 10;
    /* A connection must finish its TLS handshake and its request headers
     * in this time; a client that stalls is dropped, holding nothing. */
    info.timeout_secs = (unsigned)srv->cfg->limits.handshake_timeout_seconds;
    info.timeout_secs_ah_idle = (unsigned)srv->cfg->limits.handshake_timeout_seconds;
    if (tls) {
        info.protocols = https_protocols;
        info.pvo = &ws_protocol_options;
        info.ssl_cert_filepath = srv->cert_path;
        info.ssl_private_key_filepath = srv->key_path;
        info.ssl_cipher_list = GW_TLS12_CIPHERS;
        info.tls1_3_plus_cipher_list = GW_TLS13_CIPHERS;
        info.ssl_options_set = SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 |
                               SSL_OP_NO_TLSv1_1 | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE;
        /* HTTP/1.1 only: WebSockets over h2 would need RFC 8441 everywhere. */
        info.alpn = "http/1.1";
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    } else {
        info.protocols = redirect_protocols;
    }
    if (!lws_create_vhost(srv->lws, &info)) {
        snprintf(err, errlen, "cannot listen on %s (libwebsockets refused the vhost; "
                              "see its log lines above)", name);
        return PST_E_LWS;
    }
    log_event(LOG_INFO, "listen", "addr=%s scheme=%s", name, tls ? "https" : "http-redirect");
    return 0;
}

static int setup_tls(gw_server *srv, char *err, size_t errlen)
{
    gw_config *cfg = srv->cfg;
    int rc;
    if (cfg->tls_cert) {
        snprintf(srv->cert_path, sizeof(srv->cert_path), "%s", cfg->tls_cert);
        snprintf(srv->key_path, sizeof(srv->key_path), "%s", cfg->tls_key);
        if ((rc = tls_cert_check_pair(srv->cert_path, srv->key_path, err, errlen)) != 0)
            return PST_E_CONFIG;
    } else {
        bool generated;
        const char **hosts = calloc(cfg->nlisten, sizeof(*hosts));
        if (!hosts)
            return -ENOMEM;
        for (size_t i = 0; i < cfg->nlisten; i++)
            hosts[i] = cfg->listen[i].host;
        rc = tls_cert_ensure_self_signed(cfg->state_dir, hosts, cfg->nlisten, srv->cert_path,
                                         srv->key_path, &generated, err, errlen);
        free(hosts);
        if (rc)
            return rc;
        if (generated)
            log_event(LOG_INFO, "tls.certificate.generated", "path=%s",
                      log_q(srv->cert_path));
    }
    if ((rc = tls_cert_fingerprint(srv->cert_path, srv->fingerprint, err, errlen)) != 0)
        return rc;
    log_event(LOG_INFO, "tls.certificate", "path=%s sha256=%s self_signed=%s",
              log_q(srv->cert_path), srv->fingerprint, cfg->tls_cert ? "false" : "true");
    return 0;
}

/* fdatasync of the audit log on the thread pool, at most once a second:
 * events are already written when acknowledged; this bounds what a power
 * loss could take, without the loop ever waiting for the disk. */
static void audit_sync_work(uv_work_t *w)
{
    gw_server *srv = w->data;
    int rc = auth_audit_sync(srv->audit);
    if (rc)
        log_event(LOG_ERROR, "audit.sync.failed", "err=%s", pst_strerror(rc));
}

static void audit_sync_done(uv_work_t *w, int status)
{
    gw_server *srv = w->data;
    (void)status;
    srv->audit_sync_running = false;
    free(w);
}

static void audit_sync_tick(uv_timer_t *t)
{
    gw_server *srv = t->data;
    /* A tick after the last session ended, its memory has been freed too
     * (the WebSocket's, libssh's close callbacks, the recording's). */
    if (srv->trim_wanted && gw_server_live_sessions(srv) == 0) {
        srv->trim_wanted = false;
        malloc_trim(0);
    }
    if (srv->audit_sync_running)
        return;
    uv_work_t *w = calloc(1, sizeof(*w));
    if (!w)
        return;
    w->data = srv;
    srv->audit_sync_running = true;
    if (uv_queue_work(srv->loop, w, audit_sync_work, audit_sync_done) != 0) {
        srv->audit_sync_running = false;
        free(w);
    }
}

static int load_users(const gw_config *cfg, auth_users **out, char *err, size_t errlen)
{
    if (!cfg->users_file) {
        *out = calloc(1, sizeof(**out));
        return *out ? 0 : -ENOMEM;
    }
    return auth_users_load(cfg->users_file, out, err, errlen);
}

static int setup_identity(gw_server *srv, char *err, size_t errlen)
{
    const gw_config *cfg = srv->cfg;
    char path[TLS_PATH_MAX];
    int rc;
    if ((rc = load_users(cfg, &srv->users, err, errlen)) != 0)
        return PST_E_CONFIG;
    snprintf(path, sizeof(path), "%s/state.db", cfg->state_dir);
    if ((rc = auth_store_open(path, &srv->store, err, errlen)) != 0)
        return rc;
    snprintf(path, sizeof(path), "%s/audit.log", cfg->state_dir);
    if ((rc = auth_audit_open(path, &srv->audit, err, errlen)) != 0)
        return rc;
    auth_audit_set_syslog(srv->audit, cfg->audit_syslog);
    /* Accounts and addresses in separate tables: failures from many
     * addresses can then never push a locked account out. */
    srv->throttle_users = auth_throttle_new(&cfg->auth.throttle, GW_THROTTLE_KEYS);
    srv->throttle_addrs = auth_throttle_new(&cfg->auth.throttle, GW_THROTTLE_KEYS);
    if (!srv->throttle_users || !srv->throttle_addrs)
        return -ENOMEM;
    if ((rc = auth_password_dummy_hash(srv->dummy_hash, sizeof(srv->dummy_hash))) != 0) {
        snprintf(err, errlen, "cannot prepare password hashing: %s", pst_strerror(rc));
        return rc;
    }
    uv_timer_init(srv->loop, &srv->audit_sync_timer);
    srv->audit_sync_timer.data = srv;
    uv_timer_start(&srv->audit_sync_timer, audit_sync_tick, 1000, 1000);
    srv->audit_timer_open = true;
    log_event(LOG_INFO, "identity.ready", "users=%zu users_file=%s", srv->users->n,
              log_q(cfg->users_file ? cfg->users_file : "-"));
    return 0;
}

#define GW_SWEEP_FIRST_MS 10000ull          /* after start, once things settle */
#define GW_SWEEP_EVERY_MS (24ull * 3600 * 1000)

static void sweep_tick(uv_timer_t *t) { gw_recordings_sweep_start(t->data); }

/* The recording store is not a condition of starting: without it the
 * gateway still serves the VMs that do not require recording, and those
 * that do refuse their sessions with the reason. */
static void setup_recordings(gw_server *srv)
{
    const gw_config *cfg = srv->cfg;
    if (cfg->instance) {
        snprintf(srv->instance, sizeof(srv->instance), "%s", cfg->instance);
    } else if (gethostname(srv->instance, sizeof(srv->instance) - 1) != 0 ||
               !srv->instance[0]) {
        snprintf(srv->instance, sizeof(srv->instance), "postern");
    }
    char err[512];
    int rc = rec_store_open(srv->loop, cfg->state_dir, &srv->recordings, err, sizeof(err));
    if (rc != 0) {
        srv->recordings = NULL;
        log_event(LOG_ERROR, "recording.unavailable", "err=%s", log_q(err));
    } else {
        log_event(LOG_INFO, "recording.ready", "dir=%s/recordings instance=%s",
                  log_q(cfg->state_dir), log_q(srv->instance));
    }
    uv_timer_init(srv->loop, &srv->sweep_timer);
    srv->sweep_timer.data = srv;
    srv->sweep_timer_open = true;
    uv_timer_start(&srv->sweep_timer, sweep_tick, GW_SWEEP_FIRST_MS, GW_SWEEP_EVERY_MS);
}

static void log_origins(const gw_config *cfg)
{
    char list[1024] = "";
    size_t o = 0;
    for (size_t i = 0; i < cfg->norigins && o < sizeof(list); i++) {
        int n = snprintf(list + o, sizeof(list) - o, "%s%s", i ? "," : "", cfg->origins[i]);
        if (n > 0)
            o += (size_t)n;
    }
    log_event(LOG_INFO, "config.origins", "origins=%s", log_q(list));
}

int gw_server_open(uv_loop_t *loop, gw_config *cfg, gw_server_stopped_cb stopped,
                   void *stopped_data, gw_server **out, char *err, size_t errlen)
{
    struct lws_context_creation_info info;
    void *foreign_loops[1] = {loop};
    int rc;

    *out = NULL;
    gw_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        gw_config_free(cfg);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    srv->loop = loop;
    srv->cfg = cfg;
    srv->stopped = stopped;
    srv->stopped_data = stopped_data;
    gw_metrics_init(&srv->metrics);

    /* Everything the gateway keeps lives here; nobody else may read it. */
    if (mkdir(cfg->state_dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(err, errlen, "cannot create state_dir %s: %s", cfg->state_dir,
                 strerror(errno));
        goto fail;
    }
    if ((rc = setup_tls(srv, err, errlen)) != 0 ||
        (rc = setup_identity(srv, err, errlen)) != 0)
        goto fail;
    setup_recordings(srv);

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_bridge);
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                   LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = foreign_loops;
    info.user = srv;
    info.max_http_header_data = GW_MAX_HEADER_BYTES;
    info.max_http_header_pool = GW_HEADER_POOL;
    /* lws reads TLS into a per-thread buffer of this size. With the 4 KiB
     * default, the rest of a 16 KiB TLS record stayed decrypted inside
     * OpenSSL and, on the libuv loop, was not read until some other socket
     * woke the loop: a 12 KiB POST body hung. A buffer larger than a TLS
     * record drains every record in one read. */
    info.pt_serv_buf_size = 32768;
    info.server_string = "postern";
    srv->lws = lws_create_context(&info);
    if (!srv->lws) {
        snprintf(err, errlen, "cannot create the libwebsockets context (is the package "
                              "libwebsockets-evlib-uv installed?)");
        rc = PST_E_LWS;
        goto fail;
    }
    srv->vhost_strings = calloc(cfg->nlisten + 1, sizeof(*srv->vhost_strings));
    if (!srv->vhost_strings) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < cfg->nlisten; i++)
        if ((rc = create_vhost(srv, &cfg->listen[i], true, err, errlen)) != 0)
            goto fail;
    if (cfg->has_http_redirect &&
        (rc = create_vhost(srv, &cfg->http_redirect, false, err, errlen)) != 0)
        goto fail;
    log_origins(cfg);
    *out = srv;
    return 0;

fail:
    gw_server_free(srv);
    return rc;
}

static bool same_addrs(const gw_config *a, const gw_config *b)
{
    if (a->nlisten != b->nlisten || a->has_http_redirect != b->has_http_redirect)
        return false;
    for (size_t i = 0; i < a->nlisten; i++)
        if (strcmp(a->listen[i].host, b->listen[i].host) || a->listen[i].port != b->listen[i].port)
            return false;
    if (a->has_http_redirect && (strcmp(a->http_redirect.host, b->http_redirect.host) ||
                                 a->http_redirect.port != b->http_redirect.port))
        return false;
    return true;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_secret(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* A login session or token must not outlive what it was granted on: when
 * an account is removed, disabled, or its password or second factor
 * changes, its sessions end and its tokens are revoked. (Re-enabling the
 * account later brings none of them back.) */
static void revoke_changed_accounts(gw_server *srv, const auth_users *old_users,
                                    const auth_users *new_users)
{
    for (size_t i = 0; i < old_users->n; i++) {
        const auth_user *was = &old_users->v[i];
        const auth_user *now = auth_users_find(new_users, was->name);
        const char *why = !now                                            ? "removed"
                          : now->disabled && !was->disabled               ? "disabled"
                          : !same_secret(now->password_hash, was->password_hash)
                              ? "password_changed"
                          : now->totp_key_len != was->totp_key_len ||
                                  CRYPTO_memcmp(now->totp_key, was->totp_key, was->totp_key_len)
                              ? "second_factor_changed"
                              : NULL;
        if (!why)
            continue;
        int a = auth_session_delete_user(srv->store, was->name);
        int b = auth_token_revoke_user(srv->store, was->name);
        /* Live consoles stand on those credentials too. */
        gw_sessions_terminate_user(&srv->sessions, was->name,
                                   "your account was changed or disabled: log in again");
        json_t *f = json_pack("{s:s,s:s}", "user", was->name, "reason", why);
        auth_audit_write(srv->audit, "credentials.revoked", f);
        json_decref(f);
        log_event(a || b ? LOG_ERROR : LOG_INFO, "credentials.revoked", "user=%s reason=%s%s",
                  was->name, why, a || b ? " err=store" : "");
    }
}

void gw_server_reload(gw_server *srv, gw_config *cfg)
{
    if (!same_addrs(srv->cfg, cfg))
        log_event(LOG_WARN, "config.reload.restart_needed", "setting=listen");
    if (!same_str(srv->cfg->tls_cert, cfg->tls_cert) ||
        !same_str(srv->cfg->tls_key, cfg->tls_key) ||
        strcmp(srv->cfg->state_dir, cfg->state_dir) != 0)
        log_event(LOG_WARN, "config.reload.restart_needed", "setting=tls_or_state_dir");
    /* Users come with the config: a broken users file keeps the old users
     * (and the old config with them), like a broken config does. */
    char err[1024];
    auth_users *users;
    if (load_users(cfg, &users, err, sizeof(err)) != 0) {
        gw_server_note_reload_failure(srv);
        log_event(LOG_ERROR, "config.reload", "result=failed err=%s", log_q(err));
        gw_config_free(cfg);
        return;
    }
    revoke_changed_accounts(srv, srv->users, users);
    auth_users_free(srv->users);
    srv->users = users;
    auth_audit_set_syslog(srv->audit, cfg->audit_syslog);
    auth_throttle_set_params(srv->throttle_users, &cfg->auth.throttle);
    auth_throttle_set_params(srv->throttle_addrs, &cfg->auth.throttle);
    /* Nothing outlives a request but sessions, and sessions copy what they
     * need from the config when they open: the old one can go now. */
    gw_config_free(srv->cfg);
    srv->cfg = cfg;
    log_set_level(cfg->log_level);
    srv->metrics.config_reloads++;
    log_event(LOG_INFO, "config.reload", "result=ok path=%s log_level=%s vms=%zu users=%zu",
              log_q(cfg->path), log_level_name(cfg->log_level), cfg->nvms, users->n);
    log_origins(cfg);
}

void gw_server_note_reload_failure(gw_server *srv)
{
    srv->metrics.errors[GW_ERR_CONFIG_RELOAD]++;
}

static void stop_now(gw_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    if (srv->audit_timer_open) {
        uv_close((uv_handle_t *)&srv->audit_sync_timer, NULL);
        srv->audit_timer_open = false;
    }
    if (srv->sweep_timer_open) {
        uv_close((uv_handle_t *)&srv->sweep_timer, NULL);
        srv->sweep_timer_open = false;
    }
    if (srv->grace_timer_open) {
        uv_timer_stop(&srv->grace_timer);
        uv_close((uv_handle_t *)&srv->grace_timer, NULL);
        srv->grace_timer_open = false;
    }
    log_event(LOG_INFO, "gateway.stop", "live_sessions=%u", gw_server_live_sessions(srv));
    /* lws closes a descriptor twice while its context is destroyed: the
     * recording writer must not open files until that is over. */
    rec_store_hold(srv->recordings);
    /* First pass: closes every connection (sessions end through their
     * CLOSED callbacks) and the listeners; the second pass is in
     * gw_server_free once the loop has run dry. */
    lws_context_destroy(srv->lws);
    srv->lws_first_destroy_done = true;
    if (srv->stopped)
        srv->stopped(srv, srv->stopped_data);
}

static void flush_done(uv_timer_t *t)
{
    stop_now(t->data);
}

void gw_server_session_ended(gw_server *srv)
{
    if (gw_server_live_sessions(srv) != 0)
        return;
    /* glibc keeps freed session memory in its arenas: after a busy hour
     * the idle gateway would hold its peak. Hand it back once the last
     * session's memory is freed, which is after this call (rare enough
     * that the trim's cost does not matter). */
    srv->trim_wanted = true;
    if (srv->draining && !srv->stopping && !srv->terminating && srv->grace_timer_open) {
        log_event(LOG_INFO, "drain.complete", "live_sessions=0");
        /* Not from here: we are inside the ending session's callbacks, and
         * stopping destroys every connection, that session's included. */
        uv_timer_start(&srv->grace_timer, flush_done, 0, 0);
    }
}

/* Grace is over: every live session is told why it ends (a message and a
 * close frame); a second later, time for those to leave, everything
 * closes. */
static void grace_expired(uv_timer_t *t)
{
    gw_server *srv = t->data;
    log_event(LOG_WARN, "drain.grace_expired", "live_sessions=%u",
              gw_server_live_sessions(srv));
    srv->terminating = true;
    gw_sessions_terminate_all(&srv->sessions, "the gateway is shutting down");
    uv_timer_start(&srv->grace_timer, flush_done, 1000, 0);
}

void gw_server_drain(gw_server *srv)
{
    if (srv->draining) {
        log_event(LOG_WARN, "drain.forced", "live_sessions=%u", gw_server_live_sessions(srv));
        stop_now(srv); /* a second signal: no more waiting */
        return;
    }
    srv->draining = true;
    srv->metrics.draining = 1;
    unsigned live = gw_server_live_sessions(srv);
    log_event(LOG_INFO, "drain.start", "live_sessions=%u grace_seconds=%d", live,
              srv->cfg->limits.shutdown_grace_seconds);
    if (live == 0 || srv->cfg->limits.shutdown_grace_seconds == 0) {
        stop_now(srv);
        return;
    }
    uv_timer_init(srv->loop, &srv->grace_timer);
    srv->grace_timer.data = srv;
    srv->grace_timer_open = true;
    uv_timer_start(&srv->grace_timer, grace_expired,
                   (uint64_t)srv->cfg->limits.shutdown_grace_seconds * 1000, 0);
}

void gw_server_free(gw_server *srv)
{
    if (!srv)
        return;
    if (srv->audit_timer_open) {
        uv_close((uv_handle_t *)&srv->audit_sync_timer, NULL);
        srv->audit_timer_open = false;
    }
    if (srv->sweep_timer_open) {
        uv_close((uv_handle_t *)&srv->sweep_timer, NULL);
        srv->sweep_timer_open = false;
    }
    if (srv->grace_timer_open) {
        uv_close((uv_handle_t *)&srv->grace_timer, NULL);
        srv->grace_timer_open = false;
    }
    if (srv->lws) {
        /* With a foreign loop lws tears down in two passes: the first
         * closes its uv handles asynchronously; once their callbacks have
         * run, the second releases the context itself. */
        if (!srv->lws_first_destroy_done) {
            rec_store_hold(srv->recordings); /* as in stop_now */
            lws_context_destroy(srv->lws);
        }
        uv_run(srv->loop, UV_RUN_DEFAULT);
        lws_context_destroy(srv->lws);
        uv_run(srv->loop, UV_RUN_DEFAULT);
    } else {
        uv_run(srv->loop, UV_RUN_NOWAIT);
    }
    /* Sessions are gone (their recordings finished); sign what is left. */
    if (srv->recordings) {
        rec_store_close(srv->recordings);
        srv->recordings = NULL;
        uv_run(srv->loop, UV_RUN_DEFAULT);
    }
    auth_audit_close(srv->audit);
    auth_store_close(srv->store);
    auth_throttle_free(srv->throttle_users);
    auth_throttle_free(srv->throttle_addrs);
    auth_users_free(srv->users);
    OPENSSL_cleanse(srv->dummy_hash, sizeof(srv->dummy_hash));
    free(srv->vhost_strings);
    gw_config_free(srv->cfg);
    free(srv);
}
