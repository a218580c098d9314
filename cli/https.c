/* One blocking HTTPS request to the gateway: see https.h. */
#include "cli/https.h"

#include "cli/exit_codes.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/x509v3.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 10000
#define RESPONSE_MAX (1u << 20)

int cli_gateway_parse(const char *url, cli_gateway *g, char *err, size_t errlen)
{
    memset(g, 0, sizeof(*g));
    if (strncmp(url, "https://", 8) != 0) {
        snprintf(err, errlen, "the gateway URL must start with https:// (got '%s')", url);
        return -1;
    }
    const char *h = url + 8, *end = h + strcspn(h, "/?#");
    if (*end && strcmp(end, "/") != 0) {
        snprintf(err, errlen, "the gateway URL has no path: https://HOST[:PORT] (got '%s')", url);
        return -1;
    }
    const char *port = NULL, *hend = end;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            goto bad;
        if (rb + 1 < end) {
            if (rb[1] != ':')
                goto bad;
            port = rb + 2;
        }
        h++;
        hend = rb;
    } else {
        const char *colon = memchr(h, ':', (size_t)(end - h));
        if (colon) {
            port = colon + 1;
            hend = colon;
        }
    }
    if (hend == h || (size_t)(hend - h) >= sizeof(g->host))
        goto bad;
    memcpy(g->host, h, (size_t)(hend - h));
    g->port = 443;
    if (port) {
        char *e;
        long p = strtol(port, &e, 10);
        if (e != end || p < 1 || p > 65535)
            goto bad;
        g->port = (int)p;
    }
    size_t ulen = (size_t)(end - url);
    if (ulen >= sizeof(g->url))
        goto bad;
    memcpy(g->url, url, ulen);
    bool v6 = strchr(g->host, ':') != NULL;
    if (g->port == 443)
        snprintf(g->origin, sizeof(g->origin), "https://%s%s%s", v6 ? "[" : "", g->host,
                 v6 ? "]" : "");
    else
        snprintf(g->origin, sizeof(g->origin), "https://%s%s%s:%d", v6 ? "[" : "", g->host,
                 v6 ? "]" : "", g->port);
    return 0;
bad:
    snprintf(err, errlen, "cannot read the gateway URL '%s': expected https://HOST[:PORT]", url);
    return -1;
}

static int connect_tcp(const cli_gateway *g, char *err, size_t errlen)
{
    char port[8];
    snprintf(port, sizeof(port), "%d", g->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(g->host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve the gateway %s: %s", g->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, last = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            last = errno;
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int so = 0;
        socklen_t sl = sizeof(so);
        if (poll(&p, 1, CONNECT_TIMEOUT_MS) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) != 0 || so != 0) {
            last = so ? so : ETIMEDOUT;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot reach the gateway %s: %s", g->url, strerror(last));
        return -1;
    }
    /* Bounded waits for the blocking exchange that follows. */
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static void parse_response(char *buf, size_t len, cli_response *r)
{
    char *hend = strstr(buf, "\r\n\r\n");
    if (!hend || sscanf(buf, "HTTP/1.%*c %d", &r->status) != 1) {
        r->status = 0;
        return;
    }
    *hend = '\0';
    size_t content_length = (size_t)-1;
    for (char *line = strstr(buf, "\r\n"); line && line < hend; line = strstr(line + 2, "\r\n")) {
        char *l = line + 2;
        if (strncasecmp(l, "content-length:", 15) == 0)
            content_length = strtoul(l + 15, NULL, 10);
        if (strncasecmp(l, "set-cookie:", 11) == 0) {
            char *v = l + 11;
            while (*v == ' ')
                v++;
            if (strncmp(v, "postern_session=", 16) == 0) {
                v += 16;
                size_t n = strcspn(v, ";\r\n");
                if (n < sizeof(r->cookie)) {
                    memcpy(r->cookie, v, n);
                    r->cookie[n] = '\0';
                }
            }
        }
    }
    char *body = hend + 4;
    size_t blen = len - (size_t)(body - buf);
    if (content_length < blen)
        blen = content_length;
    r->body = malloc(blen + 1);
    if (r->body) {
        memcpy(r->body, body, blen);
        r->body[blen] = '\0';
        r->body_len = blen;
    }
}

static int set_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0 ? -1 : 0;
}

/* Reads the answer until the peer closes or the body's length is in. */
static size_t read_response(SSL *ssl, char *buf, size_t cap)
{
    size_t got = 0;
    while (got + 1 < cap) {
        int k = SSL_read(ssl, buf + got, (int)(cap - 1 - got));
        if (k <= 0)
            break;
        got += (size_t)k;
        buf[got] = '\0';
        char *hend = strstr(buf, "\r\n\r\n");
        char *cl = hend ? strcasestr(buf, "\r\ncontent-length:") : NULL;
        if (cl && cl < hend && got >= (size_t)(hend + 4 - buf) + strtoul(cl + 17, NULL, 10))
            break;
    }
    buf[got] = '\0';
    return got;
}

int cli_https_request(const cli_gateway *g, cli_trust *t, const char *method, const char *path,
                      const char *extra_headers, const char *body, cli_response *r, char *err,
                      size_t errlen)
{
    memset(r, 0, sizeof(*r));
    int fd = connect_tcp(g, err, errlen);
    if (fd < 0)
        return CLI_GATEWAY_UNREACHABLE;
    SSL_CTX *ctx = cli_tls_ctx_new(t, err, errlen);
    if (!ctx) {
        close(fd);
        return CLI_TLS;
    }
    int rc = CLI_GATEWAY_UNREACHABLE;
    size_t blen = body ? strlen(body) : 0;
    size_t cap = 2048 + blen + (extra_headers ? strlen(extra_headers) : 0);
    if (cap < RESPONSE_MAX)
        cap = RESPONSE_MAX;
    char *buf = malloc(cap);
    SSL *ssl = SSL_new(ctx);
    if (!ssl || !buf || set_blocking(fd) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, g->host);
    if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), g->host))
        SSL_set1_host(ssl, g->host);
    if (SSL_connect(ssl) != 1) {
        if (t->failure[0]) {
            snprintf(err, errlen, "%s", t->failure);
            rc = CLI_TLS;
        } else {
            snprintf(err, errlen, "TLS with the gateway %s failed", g->url);
        }
        goto out;
    }
    int n = snprintf(buf, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: postern\r\n"
                     "Accept: application/json\r\nConnection: close\r\n%s%s%zu\r\n\r\n",
                     method, path, g->origin + 8, extra_headers ? extra_headers : "",
                     body ? "Content-Type: application/json\r\nContent-Length: "
                          : "Content-Length: ",
                     blen);
    if (n < 0 || (size_t)n >= cap || SSL_write(ssl, buf, n) != n ||
        (blen && SSL_write(ssl, body, (int)blen) != (int)blen)) {
        snprintf(err, errlen, "cannot send the request to the gateway");
        goto out;
    }
    size_t got = read_response(ssl, buf, cap);
    parse_response(buf, got, r);
    if (!r->status) {
        snprintf(err, errlen, "the gateway's answer is not HTTP");
        goto out;
    }
    rc = 0;
out:
    if (buf) {
        OPENSSL_cleanse(buf, cap); /* it held a password or a token */
        free(buf);
    }
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    SSL_CTX_free(ctx);
    close(fd);
    return rc;
}

void cli_response_free(cli_response *r)
{
    if (r->body) {
        OPENSSL_cleanse(r->body, r->body_len);
        free(r->body);
    }
    OPENSSL_cleanse(r->cookie, sizeof(r->cookie));
    r->body = NULL;
}

const char *cli_response_error(const cli_response *r, const char *fallback)
{
    static char msg[512];
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    json_t *e = j ? json_object_get(j, "error") : NULL;
    if (json_is_string(e)) {
        snprintf(msg, sizeof(msg), "%s", json_string_value(e));
        json_decref(j);
        return msg;
    }
    json_decref(j);
    return fallback;
}
