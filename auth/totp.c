/* TOTP (RFC 6238 over RFC 4226 HOTP) and the base32 secrets authenticator
 * apps exchange. */
#include "auth/auth.h"
#include "auth/internal.h"

#include "common/err.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

static const char b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int auth_base32_encode(const uint8_t *in, size_t len, char *out, size_t outlen)
{
    size_t need = (len * 8 + 4) / 5 + 1;
    if (outlen < need)
        return -ENOSPC;
    auth_encode_bits(in, len, b32_alphabet, 5, out);
    return 0;
}

int auth_base32_decode(const char *in, uint8_t *out, size_t outlen, size_t *n)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (const char *p = in; *p; p++) {
        char c = *p;
        if (c == '=' || c == ' ' || c == '-')
            continue; /* padding and the groupings people type */
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        const char *pos = strchr(b32_alphabet, c);
        if (!pos || !c)
            return PST_E_PARSE;
        acc = (acc << 5) | (uint32_t)(pos - b32_alphabet);
        bits += 5;
        if (bits >= 8) {
            if (o >= outlen)
                return -ENOSPC;
            out[o++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    *n = o;
    return 0;
}

uint32_t auth_totp_code(const uint8_t *key, size_t keylen, uint64_t step, int digits)
{
    uint8_t msg[8], mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    for (int i = 7; i >= 0; i--) {
        msg[i] = (uint8_t)(step & 0xff);
        step >>= 8;
    }
    if (!HMAC(EVP_sha1(), key, (int)keylen, msg, sizeof(msg), mac, &maclen) || maclen < 20)
        return UINT32_MAX;
    /* RFC 4226 section 5.3: dynamic truncation. */
    int off = mac[maclen - 1] & 0x0f;
    uint32_t bin = ((uint32_t)(mac[off] & 0x7f) << 24) | ((uint32_t)mac[off + 1] << 16) |
                   ((uint32_t)mac[off + 2] << 8) | (uint32_t)mac[off + 3];
    uint32_t mod = 1;
    for (int i = 0; i < digits; i++)
        mod *= 10;
    return bin % mod;
}

int auth_totp_verify(const uint8_t *key, size_t keylen, const char *code, int64_t now,
                     uint64_t last_step, uint64_t *matched_step)
{
    if (!code || strlen(code) != AUTH_TOTP_DIGITS)
        return PST_E_DENIED;
    uint32_t given = 0;
    for (const char *p = code; *p; p++) {
        if (*p < '0' || *p > '9')
            return PST_E_DENIED;
        given = given * 10 + (uint32_t)(*p - '0');
    }
    if (now < 0)
        return PST_E_DENIED;
    uint64_t step = (uint64_t)now / AUTH_TOTP_PERIOD;
    int found = 0;
    uint64_t hit = 0;
    /* Check all three windows every time so the timing does not tell which
     * one matched; compare in constant time. */
    for (int d = -AUTH_TOTP_SKEW; d <= AUTH_TOTP_SKEW; d++) {
        if (d < 0 && step < (uint64_t)-d)
            continue;
        uint64_t s = step + (uint64_t)(int64_t)d;
        char want[16], got[16];
        snprintf(want, sizeof(want), "%0*u", AUTH_TOTP_DIGITS,
                 auth_totp_code(key, keylen, s, AUTH_TOTP_DIGITS));
        snprintf(got, sizeof(got), "%0*u", AUTH_TOTP_DIGITS, given);
        if (CRYPTO_memcmp(want, got, AUTH_TOTP_DIGITS) == 0 && !found) {
            found = 1;
            hit = s;
        }
    }
    /* A code is good once: anything at or before the last accepted step is
     * a replay, even inside its validity window. */
    if (!found || hit <= last_step)
        return PST_E_DENIED;
    if (matched_step)
        *matched_step = hit;
    return 0;
}

int auth_totp_uri(const char *issuer, const char *account, const char *secret_b32, char *out,
                  size_t outlen)
{
    /* issuer and account are names we validated (letters, digits, . _ -),
     * so they need no percent-encoding. */
    int n = snprintf(out, outlen,
                     "otpauth://totp/%s:%s?secret=%s&issuer=%s&algorithm=SHA1&digits=%d"
                     "&period=%d",
                     issuer, account, secret_b32, issuer, AUTH_TOTP_DIGITS, AUTH_TOTP_PERIOD);
    return n < 0 || (size_t)n >= outlen ? -ENOSPC : 0;
}
