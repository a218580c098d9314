/* Fuzz target: the recording manifest parser (recording/manifest.c), which
 * `postern recording verify` runs on .cast.sig files that may be hostile.
 *
 * On failure the reason must be terminated inside the buffer, non-empty,
 * and printable ASCII only (it reaches terminals). On success every stated invariant must hold (one link per chunk,
 * chunk size and times in range, a valid file name that matches the
 * session id, the signed bytes being line 1), and the manifest, signed
 * again with a key of our own, must parse back to the same values. */
#include "recording/internal.h"

#include "common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *key;

static void violated(const char *what)
{
    fprintf(stderr, "fuzz_rec_manifest: %s\n", what);
    abort();
}

static void check_invariants(const rec_manifest *m, const char *buf, size_t size)
{
    char id[REC_ID_MAX + 1];
    if (!rec_cast_name_parse(m->file, id) || strcmp(id, m->session_id) != 0)
        violated("file name and session id disagree");
    if (m->chunk_size < REC_CHUNK_MIN || m->chunk_size > REC_CHUNK_MAX)
        violated("chunk size out of range");
    if (m->nlinks != m->length / m->chunk_size + (m->length % m->chunk_size != 0))
        violated("not one link per chunk");
    if (m->nlinks && !m->links)
        violated("links missing");
    if (m->ended_ms < m->started_ms || m->started_ms < 0)
        violated("times out of order");
    if (m->cols < 1 || m->cols > 65535 || m->rows < 1 || m->rows > 65535)
        violated("size out of range");
    if (m->signed_bytes != buf || m->signed_len >= size || buf[m->signed_len] != '\n' ||
        memchr(buf, '\n', m->signed_len))
        violated("signed bytes are not line 1");
    if (strlen(m->user) >= sizeof(m->user) || strlen(m->protocol) >= sizeof(m->protocol))
        violated("unterminated string");
}

static void round_trip(const rec_manifest *m)
{
    char *text;
    size_t len;
    if (rec_manifest_build(m, key, &text, &len) != 0)
        violated("a parsed manifest cannot be built again");
    rec_manifest again;
    char why[256];
    if (rec_manifest_parse(text, len, &again, why, sizeof(why)) != 0)
        violated(why);
    if (rec_manifest_verify_sig(&again, key) != 0)
        violated("our own signature does not verify");
    if (again.length != m->length || again.chunk_size != m->chunk_size ||
        again.nlinks != m->nlinks || again.started_ms != m->started_ms ||
        again.ended_ms != m->ended_ms || again.cols != m->cols || again.rows != m->rows ||
        memcmp(again.sha256, m->sha256, REC_SHA256_LEN) != 0 ||
        memcmp(again.key_sha256, m->key_sha256, REC_SHA256_LEN) != 0 ||
        strcmp(again.file, m->file) != 0 || strcmp(again.user, m->user) != 0 ||
        strcmp(again.vm, m->vm) != 0 || strcmp(again.source, m->source) != 0 ||
        strcmp(again.instance, m->instance) != 0 || strcmp(again.protocol, m->protocol) != 0 ||
        (m->nlinks && memcmp(again.links, m->links, m->nlinks * REC_SHA256_LEN) != 0))
        violated("the round trip changed a value");
    rec_manifest_free(&again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key && !(key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")))
        violated("no key");
    rec_manifest m;
    char why[64];
    memset(why, 'x', sizeof(why));
    int rc = rec_manifest_parse((const char *)data, size, &m, why, sizeof(why));
    if (rc != 0) {
        if (rc != PST_E_PARSE && rc != -ENOMEM)
            violated("neither 0, PST_E_PARSE nor -ENOMEM");
        if (!memchr(why, '\0', sizeof(why)) || why[0] == '\0')
            violated("reason missing or unterminated");
        for (const char *p = why; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                violated("reason holds a control or non-ASCII byte");
        return 0;
    }
    check_invariants(&m, (const char *)data, size);
    round_trip(&m);
    rec_manifest_free(&m);
    return 0;
}
