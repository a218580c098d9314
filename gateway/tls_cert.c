#include "gateway/tls_cert.h"

#include "common/atomic_file.h"
#include "common/err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CERT_DAYS 825          /* the longest validity clients commonly accept */
#define CERT_RENEW_DAYS 30     /* replace a certificate this close to expiry */
#define SAN_MAX 2048

static int ssl_fail(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
    return PST_E_TLS;
}

static int mkdir_private(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    int rc = -errno;
    snprintf(err, errlen, "cannot create directory %s: %s", path, strerror(errno));
    return rc;
}

static int emit_key(FILE *f, void *obj)
{
    return PEM_write_PrivateKey(f, obj, NULL, NULL, 0, NULL, NULL);
}

static int emit_cert(FILE *f, void *obj) { return PEM_write_X509(f, obj); }

static int add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static bool is_wildcard(const char *h)
{
    return strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0;
}

static void san_append(char *san, const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    bool ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
    char item[300], padded[SAN_MAX + 2];
    snprintf(item, sizeof(item), ",%s:%s,", ip ? "IP" : "DNS", host);
    /* Compare whole entries: "IP:10.0.0.1" is not "IP:10.0.0.10". */
    snprintf(padded, sizeof(padded), ",%s,", san);
    if (strstr(padded, item))
        return;
    size_t len = strlen(item) - 1; /* drop the trailing comma */
    if (strlen(san) + len >= SAN_MAX)
        return;
    strncat(san, item + (*san ? 0 : 1), *san ? len : len - 1);
}

static int generate(const char *cert_path, const char *key_path, const char *const *hosts,
                    size_t nhosts, char *err, size_t errlen)
{
    int rc = PST_E_TLS;
    X509 *cert = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (!key)
        return ssl_fail(err, errlen, "cannot generate an EC P-256 key");

    char san[SAN_MAX] = "";
    char hostname[256] = "";
    san_append(san, "localhost");
    san_append(san, "127.0.0.1");
    san_append(san, "::1");
    for (size_t i = 0; i < nhosts; i++)
        if (!is_wildcard(hosts[i]))
            san_append(san, hosts[i]);
    if (gethostname(hostname, sizeof(hostname) - 1) == 0 && hostname[0])
        san_append(san, hostname);

    unsigned char serial[16];
    cert = X509_new();
    if (!cert || RAND_bytes(serial, sizeof(serial)) != 1) {
        rc = ssl_fail(err, errlen, "cannot create a certificate");
        goto out;
    }
    serial[0] &= 0x7f; /* a positive serial number */
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    ASN1_INTEGER *sn = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    BN_free(bn);
    if (!sn || !X509_set_serialNumber(cert, sn)) {
        ASN1_INTEGER_free(sn);
        rc = ssl_fail(err, errlen, "cannot set the serial number");
        goto out;
    }
    ASN1_INTEGER_free(sn);

    X509_NAME *name = X509_get_subject_name(cert);
    if (!X509_set_version(cert, 2) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), (long)CERT_DAYS * 86400) ||
        !X509_set_pubkey(cert, key) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                    (const unsigned char *)"Postern", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const unsigned char *)(hostname[0] ? hostname
                                                                        : "localhost"),
                                    -1, -1, 0) ||
        !X509_set_issuer_name(cert, name) ||
        !add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_ext(cert, NID_key_usage, "critical,digitalSignature") ||
        !add_ext(cert, NID_ext_key_usage, "serverAuth") ||
        !add_ext(cert, NID_subject_key_identifier, "hash") ||
        !add_ext(cert, NID_subject_alt_name, san) || !X509_sign(cert, key, EVP_sha256())) {
        rc = ssl_fail(err, errlen, "cannot build the certificate");
        goto out;
    }
    /* Key first: a cert without its key is useless, the reverse is harmless. */
    if ((rc = pst_write_file_atomic(key_path, 0600, emit_key, key, err, errlen)) != 0 ||
        (rc = pst_write_file_atomic(cert_path, 0600, emit_cert, cert, err, errlen)) != 0)
        goto out;
    rc = 0;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

static X509 *load_cert(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x) {
        char what[TLS_PATH_MAX + 64];
        snprintf(what, sizeof(what), "%s holds no PEM certificate", path);
        ssl_fail(err, errlen, what);
    }
    return x;
}

int tls_cert_check_pair(const char *cert_path, const char *key_path, char *err,
                        size_t errlen)
{
    X509 *x = load_cert(cert_path, err, errlen);
    if (!x)
        return PST_E_TLS;
    FILE *f = fopen(key_path, "r");
    if (!f) {
        int rc = -errno;
        snprintf(err, errlen, "cannot open %s: %s", key_path, strerror(errno));
        X509_free(x);
        return rc;
    }
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    int rc = 0;
    if (!key) {
        char what[TLS_PATH_MAX + 64];
        snprintf(what, sizeof(what), "%s holds no unencrypted PEM private key", key_path);
        rc = ssl_fail(err, errlen, what);
    } else if (X509_check_private_key(x, key) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "%s and %s do not belong together", cert_path, key_path);
        rc = PST_E_TLS;
    }
    EVP_PKEY_free(key);
    X509_free(x);
    return rc;
}

/* True when the certificate at path is valid and not close to expiry. */
static bool cert_still_good(const char *path)
{
    char err[64];
    X509 *x = load_cert(path, err, sizeof(err));
    if (!x)
        return false;
    time_t limit = time(NULL) + (time_t)CERT_RENEW_DAYS * 86400;
    bool good = X509_cmp_time(X509_get0_notAfter(x), &limit) > 0;
    X509_free(x);
    return good;
}

int tls_cert_ensure_self_signed(const char *state_dir, const char *const *hosts,
                                size_t nhosts, char *cert_path, char *key_path,
                                bool *generated, char *err, size_t errlen)
{
    char dir[TLS_PATH_MAX - 16];
    int rc;
    *generated = false;
    if ((size_t)snprintf(dir, sizeof(dir), "%s/tls", state_dir) >= sizeof(dir) - 16) {
        snprintf(err, errlen, "state_dir path too long");
        return -ENAMETOOLONG;
    }
    if ((rc = mkdir_private(state_dir, err, errlen)) != 0 ||
        (rc = mkdir_private(dir, err, errlen)) != 0)
        return rc;
    snprintf(cert_path, TLS_PATH_MAX, "%s/cert.pem", dir);
    snprintf(key_path, TLS_PATH_MAX, "%s/key.pem", dir);

    bool have_cert = access(cert_path, F_OK) == 0;
    bool have_key = access(key_path, F_OK) == 0;
    if (have_cert && have_key) {
        /* A damaged pair is reported, not silently replaced: the operator
         * may have pinned it, and a new fingerprint needs their attention. */
        if ((rc = tls_cert_check_pair(cert_path, key_path, err, errlen)) != 0) {
            size_t n = strlen(err);
            snprintf(err + n, errlen - n, " (delete both files to generate a new pair)");
            return rc;
        }
        if (cert_still_good(cert_path))
            return 0;
    }
    if ((rc = generate(cert_path, key_path, hosts, nhosts, err, errlen)) != 0)
        return rc;
    *generated = true;
    return 0;
}

int tls_cert_fingerprint(const char *cert_path, char *out, char *err, size_t errlen)
{
    X509 *x = load_cert(cert_path, err, errlen);
    if (!x)
        return PST_E_TLS;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok = X509_digest(x, EVP_sha256(), md, &len);
    X509_free(x);
    if (!ok || len != 32)
        return ssl_fail(err, errlen, "cannot hash the certificate");
    for (unsigned i = 0; i < len; i++)
        snprintf(out + i * 3, 4, "%02X%s", md[i], i + 1 < len ? ":" : "");
    return 0;
}
