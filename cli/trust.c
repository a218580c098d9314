/* Verification of the gateway's certificate: see trust.h. */
#include "cli/trust.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <string.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int cli_pin_parse(const char *text, unsigned char out[32])
{
    if (strncmp(text, "SHA256:", 7) == 0 || strncmp(text, "sha256:", 7) == 0)
        text += 7;
    size_t n = strlen(text);
    if (n == 43 || (n == 44 && text[43] == '=')) { /* base64, as ssh-keygen prints */
        unsigned char tmp[36];
        char padded[45];
        memcpy(padded, text, 43);
        padded[43] = '=';
        padded[44] = '\0';
        if (EVP_DecodeBlock(tmp, (const unsigned char *)padded, 44) != 33)
            return -1;
        memcpy(out, tmp, 32);
        return 0;
    }
    size_t got = 0;
    for (const char *p = text; *p; p++) {
        if (*p == ':')
            continue;
        int hi = hexval(p[0]), lo = p[1] ? hexval(p[1]) : -1;
        if (hi < 0 || lo < 0 || got == 32)
            return -1;
        out[got++] = (unsigned char)(hi << 4 | lo);
        p++;
    }
    return got == 32 ? 0 : -1;
}

void cli_fingerprint_text(const unsigned char md[32], char out[CLI_FINGERPRINT_TEXT])
{
    memcpy(out, "SHA256:", 7);
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + i * 3, 4, "%02X%s", md[i], i < 31 ? ":" : "");
}

/* Replaces OpenSSL's whole chain check (SSL_CTX_set_cert_verify_callback):
 * with a pin the leaf's digest is all that counts, whatever signed it;
 * otherwise the usual chain and host name check runs. Either way the
 * result is what SSL_get_verify_result reports afterwards. */
static int verify_certificate(X509_STORE_CTX *x, void *arg)
{
    cli_trust *t = arg;
    X509 *leaf = X509_STORE_CTX_get0_cert(x);
    unsigned char md[32];
    unsigned int len = 0;
    char got[CLI_FINGERPRINT_TEXT] = "(none)";
    if (leaf && X509_digest(leaf, EVP_sha256(), md, &len) && len == 32)
        cli_fingerprint_text(md, got);
    if (t->has_pin) {
        if (leaf && len == 32 && CRYPTO_memcmp(md, t->pin, 32) == 0) {
            X509_STORE_CTX_set_error(x, X509_V_OK);
            return 1;
        }
        char want[CLI_FINGERPRINT_TEXT];
        cli_fingerprint_text(t->pin, want);
        snprintf(t->failure, sizeof(t->failure),
                 "the gateway's certificate does not match the pinned fingerprint: "
                 "refusing to connect (an impostor, or the certificate was replaced)\n"
                 "  pinned:    %s\n  presented: %s",
                 want, got);
        X509_STORE_CTX_set_error(x, X509_V_ERR_CERT_REJECTED);
        return 0;
    }
    if (X509_verify_cert(x) == 1)
        return 1;
    int e = X509_STORE_CTX_get_error(x);
    snprintf(t->failure, sizeof(t->failure),
             "the gateway's certificate is not trusted: %s\n"
             "  its fingerprint is %s; if your administrator confirms it, use --pin %s,\n"
             "  or --ca FILE with the CA that issued it",
             X509_verify_cert_error_string(e), got, got);
    return 0;
}

SSL_CTX *cli_tls_ctx_new(cli_trust *t, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    t->failure[0] = '\0';
    if (!t->has_pin) {
        int ok = t->ca_file ? SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL)
                            : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            snprintf(err, errlen, "cannot load the CA certificates%s%s", t->ca_file ? " from " : "",
                     t->ca_file ? t->ca_file : "");
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    SSL_CTX_set_cert_verify_callback(ctx, verify_certificate, t);
    return ctx;
}
