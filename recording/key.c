/* The recording signing key: Ed25519, <state_dir>/keys/recording.key (PEM
 * PKCS#8, 0600) and its public half recording.pub (PEM SPKI, 0644).
 *
 * Ed25519 because signatures are small and fast, there is no parameter to
 * get wrong, and OpenSSL 3 has it built in. Creation is race-free between
 * gateway instances sharing a state directory: the key is written whole
 * to a private temporary file and then link()ed into place, which fails if
 * another instance got there first; the loser loads the winner's key. A
 * rename() would let the second instance replace a key the first is
 * already signing with. */
#include "recording/internal.h"

#include "common/atomic_file.h"
#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_NAME "recording.key"
#define PUB_NAME "recording.pub"

/* OpenSSL would prompt on the terminal for an encrypted key: refuse. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) { return 0; }

static bool is_ed25519(EVP_PKEY *k) { return k && EVP_PKEY_is_a(k, "ED25519"); }

int rec_key_from_pem(const char *pem, EVP_PKEY **out)
{
    *out = NULL;
    BIO *b = BIO_new_mem_buf(pem, -1);
    if (!b)
        return -ENOMEM;
    EVP_PKEY *k = PEM_read_bio_PUBKEY(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (!is_ed25519(k)) {
        EVP_PKEY_free(k);
        return PST_E_PARSE;
    }
    *out = k;
    return 0;
}

int rec_key_id(EVP_PKEY *key, uint8_t out[REC_SHA256_LEN])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    if (n <= 0)
        return PST_E_CRYPTO;
    unsigned int mdlen = 0;
    int ok = EVP_Digest(der, (size_t)n, out, &mdlen, EVP_sha256(), NULL) == 1 &&
             mdlen == REC_SHA256_LEN;
    OPENSSL_free(der);
    return ok ? 0 : PST_E_CRYPTO;
}

/* The public half as PEM, malloc'd. */
static char *public_pem(EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b && PEM_write_bio_PUBKEY(b, key) == 1) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        if (n > 0 && (out = malloc((size_t)n + 1)) != NULL) {
            memcpy(out, p, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(b);
    return out;
}

static int emit_private(FILE *f, void *ctx)
{
    return PEM_write_PrivateKey(f, ctx, NULL, NULL, 0, NULL, NULL) == 1;
}

static int emit_text(FILE *f, void *ctx) { return fputs(ctx, f) >= 0; }

static int load_private(const char *path, EVP_PKEY **key, char *err, size_t errlen)
{
    char *pem = NULL;
    size_t len = 0;
    mode_t mode = 0;
    int rc = rec_read_small_file(AT_FDCWD, path, REC_PEM_MAX, true, &pem, &len, &mode);
    if (rc != 0) {
        if (rc != -ENOENT)
            snprintf(err, errlen, "cannot read %s: %s", path, pst_strerror(rc));
        return rc;
    }
    /* Like OpenSSH with its host keys: a signing key others can read is a
     * key others may have copied; say so rather than sign with it. The mode
     * is the one of the file read, not of what the path names now. */
    if ((mode & 077) != 0) {
        snprintf(err, errlen, "%s is accessible to others (mode %03o); chmod 600 it", path,
                 (unsigned)(mode & 0777));
        rc = PST_E_DENIED;
        goto out;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!is_ed25519(k)) {
        EVP_PKEY_free(k);
        snprintf(err, errlen, "%s is not an unencrypted PEM Ed25519 private key", path);
        rc = PST_E_CRYPTO;
        goto out;
    }
    *key = k;
out:
    OPENSSL_cleanse(pem, len);
    free(pem);
    return rc;
}

/* Generates a key and links it into place at path. 0, -EEXIST when
 * another process created one meanwhile, or a negative code. */
static int create_private(const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.%ld.new", path, (long)getpid()) >= sizeof(tmp)) {
        snprintf(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!k) {
        snprintf(err, errlen, "cannot generate an Ed25519 key");
        return PST_E_CRYPTO;
    }
    int rc = pst_write_file_atomic(tmp, 0600, emit_private, k, err, errlen);
    EVP_PKEY_free(k);
    if (rc != 0)
        return rc;
    if (link(tmp, path) != 0) {
        rc = -errno;
        if (rc != -EEXIST)
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    }
    unlink(tmp);
    if (rc == 0)
        log_event(LOG_INFO, "recording.key_created", "path=%s", log_q(path));
    return rc;
}

/* Rewrites recording.pub when it is missing or says something else: the
 * private key is the truth. */
static int sync_public(const char *path, const char *pem, char *err, size_t errlen)
{
    char *cur = NULL;
    size_t len = 0;
    int rc = rec_read_small_file(AT_FDCWD, path, REC_PEM_MAX, true, &cur, &len, NULL);
    bool same = rc == 0 && strcmp(cur, pem) == 0;
    free(cur);
    if (same)
        return 0;
    rc = pst_write_file_atomic(path, 0644, emit_text, (void *)pem, err, errlen);
    /* The umask may have narrowed it; the public half is meant to be read. */
    if (rc == 0 && chmod(path, 0644) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot chmod %s: %s", path, strerror(errno));
    }
    return rc;
}

int rec_key_load_or_create(const char *keys_dir, EVP_PKEY **key, char **pub_pem, char *err,
                           size_t errlen)
{
    *key = NULL;
    *pub_pem = NULL;
    char path[4096], pub[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/" KEY_NAME, keys_dir) >= sizeof(path) ||
        (size_t)snprintf(pub, sizeof(pub), "%s/" PUB_NAME, keys_dir) >= sizeof(pub)) {
        snprintf(err, errlen, "%s: path too long", keys_dir);
        return -ENAMETOOLONG;
    }
    EVP_PKEY *k = NULL;
    int rc = load_private(path, &k, err, errlen);
    if (rc == -ENOENT) {
        rc = create_private(path, err, errlen);
        if (rc == 0 || rc == -EEXIST)
            rc = load_private(path, &k, err, errlen);
        if (rc == -ENOENT)
            snprintf(err, errlen, "%s vanished while being created", path);
    }
    if (rc != 0)
        return rc;
    char *pem = public_pem(k);
    if (!pem) {
        EVP_PKEY_free(k);
        snprintf(err, errlen, "cannot encode the recording public key");
        return -ENOMEM;
    }
    rc = sync_public(pub, pem, err, errlen);
    if (rc != 0) {
        free(pem);
        EVP_PKEY_free(k);
        return rc;
    }
    *key = k;
    *pub_pem = pem;
    return 0;
}

int rec_public_key_read(const char *state_dir, char **pem, char *err, size_t errlen)
{
    *pem = NULL;
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/keys/" PUB_NAME, state_dir) >= sizeof(path)) {
        snprintf(err, errlen, "%s: path too long", state_dir);
        return -ENAMETOOLONG;
    }
    return rec_public_key_read_file(path, pem, err, errlen);
}

int rec_public_key_read_file(const char *path, char **pem, char *err, size_t errlen)
{
    *pem = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = rec_read_small_file(AT_FDCWD, path, REC_PEM_MAX, false, &buf, &len, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, pst_strerror(rc));
        return rc;
    }
    EVP_PKEY *k = NULL;
    if (strlen(buf) != len || rec_key_from_pem(buf, &k) != 0) {
        snprintf(err, errlen, "%s is not a PEM Ed25519 public key", path);
        free(buf);
        return PST_E_PARSE;
    }
    EVP_PKEY_free(k);
    *pem = buf;
    return 0;
}
