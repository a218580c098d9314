/* rec_verify_file: a recording against its signed manifest.
 *
 * Order matters: nothing the manifest says is believed before its
 * signature checks out with the given key, and the recording is read in
 * chunk_size pieces (never whole), comparing each whole chunk with its
 * link as it goes. The file's own length decides the verdict:
 *
 *   equal      every link and the file hash match: OK; else MODIFIED
 *   longer     MODIFIED (bytes were added after the signed end)
 *   shorter    TRUNCATED when every whole chunk present matches (the
 *              trailing partial chunk cannot be checked: its link covers
 *              bytes that are gone); MODIFIED when one does not
 */
#include "recording/internal.h"

#include "common/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *rec_verify_result_name(rec_verify_result r)
{
    switch (r) {
    case REC_VERIFY_OK: return "OK";
    case REC_VERIFY_MODIFIED: return "MODIFIED";
    case REC_VERIFY_TRUNCATED: return "TRUNCATED";
    case REC_VERIFY_UNSIGNED: return "UNSIGNED";
    case REC_VERIFY_ERROR: return "ERROR";
    }
    return "ERROR";
}

static rec_verify_result say(rec_verify_result res, char *detail, size_t len, const char *fmt,
                             ...) __attribute__((format(printf, 4, 5)));

static rec_verify_result say(rec_verify_result res, char *detail, size_t len, const char *fmt,
                             ...)
{
    if (len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, len, fmt, ap);
        va_end(ap);
    }
    return res;
}

/* Reads up to n bytes (fewer only at the end of the file). */
static ssize_t read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Streams the recording against m's chain and hash. */
static rec_verify_result check_bytes(const char *path, const rec_manifest *m, char *detail,
                                     size_t dl)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return say(REC_VERIFY_ERROR, detail, dl, "cannot open the recording: %s",
                   strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return say(REC_VERIFY_ERROR, detail, dl, "the recording is not a regular file");
    }
    uint8_t *buf = malloc(m->chunk_size);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    rec_verify_result res = REC_VERIFY_ERROR;
    if (!buf || !ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        say(res, detail, dl, "out of memory");
        goto out;
    }
    uint64_t total = 0;
    uint8_t link[REC_SHA256_LEN];
    size_t whole = 0; /* signed chunks present whole, all matching */
    for (size_t i = 0;; i++) {
        ssize_t n = read_full(fd, buf, m->chunk_size);
        if (n < 0) {
            say(res, detail, dl, "cannot read the recording: %s", strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) {
            say(res, detail, dl, "SHA-256 failed");
            goto out;
        }
        uint64_t start = total;
        total += (uint64_t)n;
        if (i >= m->nlinks)
            break; /* past the signed end: longer, no need to read on */
        uint64_t want = m->length - start < m->chunk_size ? m->length - start : m->chunk_size;
        if ((uint64_t)n < want)
            break; /* a partial chunk: the file ends here */
        if (rec_chain_link(i ? link : NULL, buf, (size_t)want, link) != 0) {
            say(res, detail, dl, "SHA-256 failed");
            goto out;
        }
        if (memcmp(link, m->links[i], REC_SHA256_LEN) != 0) {
            res = say(REC_VERIFY_MODIFIED, detail, dl,
                      "chunk %zu (bytes %llu-%llu) differs from the signed recording", i,
                      (unsigned long long)start, (unsigned long long)(start + want - 1));
            goto out;
        }
        whole++;
        if ((uint64_t)n > want)
            break; /* the last signed chunk matched, and more follows */
    }
    if (total > m->length) {
        res = say(REC_VERIFY_MODIFIED, detail, dl,
                  "the file is longer than the %llu signed bytes (the signed part matches)",
                  (unsigned long long)m->length);
        goto out;
    }
    if (total < m->length) {
        uint64_t checked = (uint64_t)whole * m->chunk_size;
        uint64_t tail = total - checked;
        if (tail > 0)
            res = say(REC_VERIFY_TRUNCATED, detail, dl,
                      "%llu of %llu signed bytes present; the %zu whole chunk(s) match; the "
                      "last %llu bytes (a partial chunk) cannot be checked",
                      (unsigned long long)total, (unsigned long long)m->length, whole,
                      (unsigned long long)tail);
        else
            res = say(REC_VERIFY_TRUNCATED, detail, dl,
                      "%llu of %llu signed bytes present; the %zu whole chunk(s) match",
                      (unsigned long long)total, (unsigned long long)m->length, whole);
        goto out;
    }
    uint8_t sha[REC_SHA256_LEN];
    unsigned int shalen = 0;
    if (EVP_DigestFinal_ex(ctx, sha, &shalen) != 1 || shalen != REC_SHA256_LEN) {
        say(res, detail, dl, "SHA-256 failed");
        goto out;
    }
    if (memcmp(sha, m->sha256, REC_SHA256_LEN) != 0) {
        res = say(REC_VERIFY_MODIFIED, detail, dl, "the file's SHA-256 differs from the signed one");
        goto out;
    }
    res = say(REC_VERIFY_OK, detail, dl, "%llu bytes, %zu chunk(s), signature good",
              (unsigned long long)total, m->nlinks);
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return res;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

rec_verify_result rec_verify_file(const char *cast_path, const char *pub_pem, char *detail,
                                  size_t detaillen)
{
    char *dl = detail;
    size_t dn = detaillen;
    if (dn > 0)
        dl[0] = '\0';
    char sigpath[4200];
    if ((size_t)snprintf(sigpath, sizeof(sigpath), "%s.sig", cast_path) >= sizeof(sigpath))
        return say(REC_VERIFY_ERROR, dl, dn, "path too long");

    struct stat sb;
    if (stat(cast_path, &sb) != 0)
        return say(REC_VERIFY_ERROR, dl, dn, "cannot open the recording: %s", strerror(errno));
    char *text = NULL;
    size_t len = 0;
    int rc = rec_read_small_file(AT_FDCWD, sigpath, REC_MANIFEST_MAX, false, &text, &len, NULL);
    if (rc == -ENOENT)
        return say(REC_VERIFY_UNSIGNED, dl, dn,
                   "no manifest (.sig): still being recorded, or the gateway stopped before "
                   "signing");
    if (rc == -EFBIG)
        return say(REC_VERIFY_MODIFIED, dl, dn, "the manifest is larger than any we write");
    if (rc != 0)
        return say(REC_VERIFY_ERROR, dl, dn, "cannot read the manifest: %s", pst_strerror(rc));

    rec_verify_result res = REC_VERIFY_ERROR;
    EVP_PKEY *key = NULL;
    rec_manifest m;
    bool parsed = false;
    uint8_t kid[REC_SHA256_LEN];
    char why[256];
    if (!pub_pem || rec_key_from_pem(pub_pem, &key) != 0 || rec_key_id(key, kid) != 0) {
        say(res, dl, dn, "no usable public key (PEM Ed25519) to check with");
        goto out;
    }
    rc = rec_manifest_parse(text, len, &m, why, sizeof(why));
    if (rc == PST_E_PARSE) {
        res = say(REC_VERIFY_MODIFIED, dl, dn, "the manifest is not valid: %s", why);
        goto out;
    }
    if (rc != 0) {
        say(res, dl, dn, "cannot parse the manifest: %s", pst_strerror(rc));
        goto out;
    }
    parsed = true;
    rc = rec_manifest_verify_sig(&m, key);
    if (rc != 0 && memcmp(m.key_sha256, kid, REC_SHA256_LEN) != 0) {
        char want[2 * REC_SHA256_LEN + 1], have[2 * REC_SHA256_LEN + 1];
        rec_hex(m.key_sha256, REC_SHA256_LEN, want);
        rec_hex(kid, REC_SHA256_LEN, have);
        say(res, dl, dn, "signed by another key (key sha256 %s), not the one given (%s)", want,
            have);
        goto out;
    }
    if (rc == PST_E_DENIED) {
        res = say(REC_VERIFY_MODIFIED, dl, dn, "signature does not match the manifest");
        goto out;
    }
    if (rc != 0) {
        say(res, dl, dn, "cannot check the signature: %s", pst_strerror(rc));
        goto out;
    }
    if (strcmp(m.file, base_name(cast_path)) != 0) {
        res = say(REC_VERIFY_MODIFIED, dl, dn, "the manifest is for %s, not this file", m.file);
        goto out;
    }
    res = check_bytes(cast_path, &m, dl, dn);
out:
    if (parsed)
        rec_manifest_free(&m);
    EVP_PKEY_free(key);
    free(text);
    return res;
}
