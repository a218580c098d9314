/* Trust in the gateway's TLS certificate, for every connection the CLI
 * makes (HTTPS API calls and the tunnel's WebSocket).
 *
 * Three ways, no fourth: the system's CAs (the default), a CA file
 * (--ca), or a pinned certificate fingerprint (--pin, the SHA-256 that
 * posternd logs at start as tls.certificate sha256=...). There is no
 * insecure mode. A pin is checked before a byte of the request (which
 * carries the token) is written. */
#ifndef POSTERN_CLI_TRUST_H
#define POSTERN_CLI_TRUST_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#define CLI_FINGERPRINT_TEXT 104 /* "SHA256:" + 95 + NUL, with room */

typedef struct cli_trust {
    const char *ca_file;        /* NULL: the system's CAs; borrowed */
    bool has_pin;
    unsigned char pin[32];
    /* Why the last verification failed, for the user; "" when none. */
    char failure[512];
} cli_trust;

/* Parses a pin: "SHA256:" then 32 bytes as 64 hex digits (colons allowed,
 * as posternd and `openssl x509 -fingerprint` print them) or as 43
 * base64 characters. The "SHA256:" prefix is optional. 0, or -1. */
int cli_pin_parse(const char *text, unsigned char out[32]);

/* "SHA256:AB:CD:..." for a digest. */
void cli_fingerprint_text(const unsigned char md[32], char out[CLI_FINGERPRINT_TEXT]);

/* A client SSL_CTX (TLS 1.2 or later) that verifies as t says. t must
 * outlive it (the verification writes t->failure). The caller frees it
 * with SSL_CTX_free. NULL with err filled when the CA file is unusable. */
SSL_CTX *cli_tls_ctx_new(cli_trust *t, char *err, size_t errlen);

#endif
