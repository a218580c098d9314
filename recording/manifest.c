/* The signed manifest, <id>.cast.sig (docs/recording.md):
 *
 *   line 1: the manifest, one line of compact JSON
 *   line 2: base64 of the Ed25519 signature of line 1's bytes
 *
 * The signature covers line 1 exactly as stored, so verification needs no
 * canonical JSON: check the bytes, then parse them. The parser is strict
 * (every field, its type and range, no unknown keys, no duplicates): a
 * signed manifest is ours or it is not, and nothing it says is used
 * before the signature has been checked by the caller. */
#include "recording/internal.h"

#include "common/err.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIG_B64_LEN 88 /* base64 of 64 bytes, with "==" */
#define HEX_LEN (REC_SHA256_LEN * 2)

int rec_manifest_build(const rec_manifest *m, EVP_PKEY *key, char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    char sha[HEX_LEN + 1], kid[HEX_LEN + 1], link[HEX_LEN + 1];
    rec_hex(m->sha256, REC_SHA256_LEN, sha);
    rec_hex(m->key_sha256, REC_SHA256_LEN, kid);

    json_t *chain = json_array();
    for (size_t i = 0; chain && i < m->nlinks; i++) {
        rec_hex(m->links[i], REC_SHA256_LEN, link);
        if (json_array_append_new(chain, json_string(link)) != 0) {
            json_decref(chain);
            chain = NULL;
        }
    }
    if (!chain)
        return -ENOMEM;
    /* "o" hands chain over to the manifest, even when packing fails. */
    json_t *j = json_pack(
        "{s:s, s:i, s:s, s:I, s:s, s:I, s:o, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:I, "
        "s:I, s:i, s:i}}",
        "format", REC_MANIFEST_FORMAT, "version", REC_MANIFEST_VERSION, "file", m->file, "length",
        (json_int_t)m->length, "sha256", sha, "chunk_size", (json_int_t)m->chunk_size, "chain",
        chain, "algorithm", "ed25519", "key_sha256", kid, "session", "session_id", m->session_id,
        "user", m->user, "vm", m->vm, "source", m->source, "instance", m->instance, "protocol",
        m->protocol, "started_ms", (json_int_t)m->started_ms, "ended_ms",
        (json_int_t)m->ended_ms, "cols", m->cols, "rows", m->rows);
    if (!j)
        return -ENOMEM;
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!body)
        return -ENOMEM;
    size_t blen = strlen(body);

    int rc = PST_E_CRYPTO;
    uint8_t sig[REC_SIG_LEN];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) != 1 ||
        EVP_DigestSign(ctx, sig, &siglen, (const uint8_t *)body, blen) != 1 ||
        siglen != REC_SIG_LEN)
        goto out;
    char *text = malloc(blen + 1 + SIG_B64_LEN + 2);
    if (!text) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(text, body, blen);
    text[blen] = '\n';
    int n = EVP_EncodeBlock((unsigned char *)text + blen + 1, sig, REC_SIG_LEN);
    if (n != SIG_B64_LEN) {
        free(text);
        goto out;
    }
    text[blen + 1 + SIG_B64_LEN] = '\n';
    text[blen + 2 + SIG_B64_LEN] = '\0';
    *out = text;
    *outlen = blen + 2 + SIG_B64_LEN;
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    free(body);
    return rc;
}

static int bad(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fills detail with a reason. jansson's messages quote the input ("near
 * '...'"), and a hostile manifest's bytes must not reach a terminal as
 * escape sequences: anything but printable ASCII becomes '?'. */
static int bad(char *detail, size_t len, const char *fmt, ...)
{
    if (len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, len, fmt, ap);
        va_end(ap);
        for (char *p = detail; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                *p = '?';
    }
    return PST_E_PARSE;
}

static bool b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

static int decode_sig(const char *s, size_t n, uint8_t sig[REC_SIG_LEN])
{
    if (n != SIG_B64_LEN || s[SIG_B64_LEN - 2] != '=' || s[SIG_B64_LEN - 1] != '=')
        return PST_E_PARSE;
    for (size_t i = 0; i < SIG_B64_LEN - 2; i++)
        if (!b64_char(s[i]))
            return PST_E_PARSE;
    uint8_t raw[SIG_B64_LEN / 4 * 3];
    if (EVP_DecodeBlock(raw, (const unsigned char *)s, SIG_B64_LEN) != (int)sizeof(raw))
        return PST_E_PARSE;
    memcpy(sig, raw, REC_SIG_LEN);
    return 0;
}

/* Copies a string field that must fit. */
static bool copy_str(char *dst, size_t dstlen, const char *src)
{
    size_t n = strlen(src);
    if (n >= dstlen)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

int rec_manifest_parse(const char *buf, size_t len, rec_manifest *m, char *detail,
                       size_t detaillen)
{
    memset(m, 0, sizeof(*m));
    if (detaillen > 0)
        detail[0] = '\0';
    const char *nl1 = memchr(buf, '\n', len);
    if (!nl1)
        return bad(detail, detaillen, "manifest has no signature line");
    size_t l1 = (size_t)(nl1 - buf);
    const char *line2 = nl1 + 1;
    size_t rest = len - l1 - 1;
    const char *nl2 = memchr(line2, '\n', rest);
    if (!nl2 || (size_t)(nl2 - line2) + 1 != rest)
        return bad(detail, detaillen, "manifest is not two lines");
    if (decode_sig(line2, (size_t)(nl2 - line2), m->sig) != 0)
        return bad(detail, detaillen, "signature line is not a base64 Ed25519 signature");

    json_error_t jerr;
    json_t *j = json_loadb(buf, l1, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return bad(detail, detaillen, "manifest is not valid JSON (%s)", jerr.text);

    const char *format, *file, *sha, *alg, *kid, *sid, *user, *vm, *source, *instance, *proto;
    json_int_t version, length, chunk, started, ended, cols, rows;
    json_t *chain;
    int rc = PST_E_PARSE;
    if (json_unpack_ex(j, &jerr, JSON_STRICT,
                       "{s:s, s:I, s:s, s:I, s:s, s:I, s:o, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, "
                       "s:s, s:I, s:I, s:I, s:I}}",
                       "format", &format, "version", &version, "file", &file, "length", &length,
                       "sha256", &sha, "chunk_size", &chunk, "chain", &chain, "algorithm", &alg,
                       "key_sha256", &kid, "session", "session_id", &sid, "user", &user, "vm",
                       &vm, "source", &source, "instance", &instance, "protocol", &proto,
                       "started_ms", &started, "ended_ms", &ended, "cols", &cols, "rows",
                       &rows) != 0) {
        bad(detail, detaillen, "manifest fields: %s", jerr.text);
        goto out;
    }
    if (strcmp(format, REC_MANIFEST_FORMAT) != 0 || version != REC_MANIFEST_VERSION) {
        bad(detail, detaillen, "not a version %d Postern manifest", REC_MANIFEST_VERSION);
        goto out;
    }
    if (strcmp(alg, "ed25519") != 0) {
        bad(detail, detaillen, "unknown signature algorithm");
        goto out;
    }
    char id[REC_ID_MAX + 1];
    if (!rec_cast_name_parse(file, id) || strcmp(id, sid) != 0) {
        bad(detail, detaillen, "manifest names no valid recording file");
        goto out;
    }
    memcpy(m->file, file, strlen(file) + 1);
    memcpy(m->session_id, sid, strlen(sid) + 1);
    if (length < 0 || chunk < (json_int_t)REC_CHUNK_MIN || chunk > (json_int_t)REC_CHUNK_MAX) {
        bad(detail, detaillen, "length or chunk size out of range");
        goto out;
    }
    m->length = (uint64_t)length;
    m->chunk_size = (uint32_t)chunk;
    if (rec_unhex(sha, strlen(sha), m->sha256, REC_SHA256_LEN) != 0 ||
        rec_unhex(kid, strlen(kid), m->key_sha256, REC_SHA256_LEN) != 0) {
        bad(detail, detaillen, "sha256 or key_sha256 is not 64 hex digits");
        goto out;
    }
    if (!copy_str(m->user, sizeof(m->user), user) || !copy_str(m->vm, sizeof(m->vm), vm) ||
        !copy_str(m->source, sizeof(m->source), source) ||
        !copy_str(m->instance, sizeof(m->instance), instance) ||
        !copy_str(m->protocol, sizeof(m->protocol), proto)) {
        bad(detail, detaillen, "a session field is too long");
        goto out;
    }
    if (started < 0 || ended < started || cols < 1 || cols > 65535 || rows < 1 || rows > 65535) {
        bad(detail, detaillen, "session times or size out of range");
        goto out;
    }
    m->started_ms = started;
    m->ended_ms = ended;
    m->cols = (int)cols;
    m->rows = (int)rows;

    uint64_t want = m->length / m->chunk_size + (m->length % m->chunk_size != 0);
    if (!json_is_array(chain) || json_array_size(chain) != want) {
        bad(detail, detaillen, "chain does not have one link per chunk");
        goto out;
    }
    if (want > 0) {
        m->links = malloc((size_t)want * sizeof(*m->links));
        if (!m->links) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < (size_t)want; i++) {
        const char *s = json_string_value(json_array_get(chain, i));
        if (!s || rec_unhex(s, strlen(s), m->links[i], REC_SHA256_LEN) != 0) {
            bad(detail, detaillen, "chain link %zu is not 64 hex digits", i);
            goto out;
        }
    }
    m->nlinks = (size_t)want;
    m->signed_bytes = buf;
    m->signed_len = l1;
    rc = 0;
out:
    json_decref(j);
    if (rc != 0) {
        free(m->links);
        m->links = NULL;
    }
    return rc;
}

void rec_manifest_free(rec_manifest *m)
{
    free(m->links);
    m->links = NULL;
    m->nlinks = 0;
}

int rec_manifest_verify_sig(const rec_manifest *m, EVP_PKEY *key)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return PST_E_CRYPTO;
    int rc = PST_E_CRYPTO;
    if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1) {
        int v = EVP_DigestVerify(ctx, m->sig, REC_SIG_LEN, (const uint8_t *)m->signed_bytes,
                                 m->signed_len);
        rc = v == 1 ? 0 : v == 0 ? PST_E_DENIED : PST_E_CRYPTO;
    }
    EVP_MD_CTX_free(ctx);
    return rc;
}
