/* The file's SHA-256 and the hash chain over REC_CHUNK_SIZE chunks,
 * computed on the writer thread from the bytes as they are written, so
 * finishing a long recording never re-reads it.
 *
 * Why a chain and not just one hash: a file cut short (a full disk, a
 * crash after signing was impossible, a careless copy) still has whole
 * chunks that match their links, which tells "truncated" apart from
 * "edited". Why chained rather than independent chunk hashes: a link
 * commits to everything before it, so chunks cannot be reordered or
 * spliced in from another recording without breaking every later link. */
#include "recording/internal.h"

#include "common/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int start_link(rec_chain *c)
{
    if (EVP_DigestInit_ex(c->link, EVP_sha256(), NULL) != 1)
        return PST_E_CRYPTO;
    if (c->nlinks > 0 && EVP_DigestUpdate(c->link, c->links[c->nlinks - 1], REC_SHA256_LEN) != 1)
        return PST_E_CRYPTO;
    return 0;
}

/* Closes the current chunk into a new link. */
static int end_link(rec_chain *c)
{
    if (c->nlinks == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 64;
        void *nl = realloc(c->links, ncap * sizeof(*c->links));
        if (!nl)
            return -ENOMEM;
        c->links = nl;
        c->cap = ncap;
    }
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(c->link, c->links[c->nlinks], &n) != 1 || n != REC_SHA256_LEN)
        return PST_E_CRYPTO;
    c->nlinks++;
    c->fill = 0;
    return start_link(c);
}

int rec_chain_init(rec_chain *c)
{
    memset(c, 0, sizeof(*c));
    c->file = EVP_MD_CTX_new();
    c->link = EVP_MD_CTX_new();
    if (!c->file || !c->link || EVP_DigestInit_ex(c->file, EVP_sha256(), NULL) != 1 ||
        start_link(c) != 0) {
        rec_chain_free(c);
        return PST_E_CRYPTO;
    }
    return 0;
}

int rec_chain_update(rec_chain *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (EVP_DigestUpdate(c->file, p, len) != 1)
        return PST_E_CRYPTO;
    c->length += len;
    while (len > 0) {
        size_t take = REC_CHUNK_SIZE - c->fill;
        if (take > len)
            take = len;
        if (EVP_DigestUpdate(c->link, p, take) != 1)
            return PST_E_CRYPTO;
        c->fill += take;
        p += take;
        len -= take;
        if (c->fill == REC_CHUNK_SIZE) {
            int rc = end_link(c);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

int rec_chain_final(rec_chain *c, uint8_t sha256[REC_SHA256_LEN])
{
    if (c->fill > 0) {
        int rc = end_link(c);
        if (rc != 0)
            return rc;
    }
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(c->file, sha256, &n) != 1 || n != REC_SHA256_LEN)
        return PST_E_CRYPTO;
    return 0;
}

void rec_chain_free(rec_chain *c)
{
    EVP_MD_CTX_free(c->file);
    EVP_MD_CTX_free(c->link);
    free(c->links);
    memset(c, 0, sizeof(*c));
}

int rec_chain_link(const uint8_t *prev, const uint8_t *chunk, size_t len,
                   uint8_t out[REC_SHA256_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             (!prev || EVP_DigestUpdate(ctx, prev, REC_SHA256_LEN) == 1) &&
             EVP_DigestUpdate(ctx, chunk, len) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1 &&
             n == REC_SHA256_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : PST_E_CRYPTO;
}
