/* Tests for gateway/tls_cert.c: the generated self-signed certificate, its
 * reuse, fingerprints and pair checks. Each test gets its own temporary
 * state directory, removed afterwards. */
#include "unit_test.h"

#include "common/err.h"
#include "gateway/tls_cert.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char root[1024];  /* mkdtemp'd; removed in teardown */
    char state[2048]; /* root/state: created by the code under test */
    char cert[TLS_PATH_MAX];
    char key[TLS_PATH_MAX];
    char err[1024];
} fixture;

static int tmp_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    if (!unit_tmpdir(f->root, sizeof(f->root), "tls")) {
        free(f);
        return -1;
    }
    snprintf(f->state, sizeof(f->state), "%s/state", f->root);
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int tmp_teardown(void **state)
{
    fixture *f = *state;
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Generates (or reuses) the pair under f->state, asserting success. */
static bool ensure(fixture *f, const char *const *hosts, size_t nhosts)
{
    bool generated = false;
    f->err[0] = '\0';
    int rc = tls_cert_ensure_self_signed(f->state, hosts, nhosts, f->cert, f->key,
                                         &generated, f->err, sizeof(f->err));
    if (rc != 0)
        fail_msg("tls_cert_ensure_self_signed: %d %s", rc, f->err);
    return generated;
}

static void fingerprint(const char *cert, char out[TLS_FINGERPRINT_LEN])
{
    char err[512] = "";
    int rc = tls_cert_fingerprint(cert, out, err, sizeof(err));
    if (rc != 0)
        fail_msg("tls_cert_fingerprint: %d %s", rc, err);
}

static X509 *read_cert(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(x);
    return x;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char *buf = malloc(65536);
    assert_non_null(buf);
    *len = fread(buf, 1, 65535, fp);
    buf[*len] = '\0';
    fclose(fp);
    return buf;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

/* The subjectAltName entries as "DNS:name" / "IP:addr" strings, joined by
 * ",". */
static void san_list(X509 *x, char *out, size_t cap)
{
    out[0] = '\0';
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_non_null(names);
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char item[INET6_ADDRSTRLEN + 300] = "";
        if (g->type == GEN_DNS) {
            snprintf(item, sizeof(item), "DNS:%.*s", ASN1_STRING_length(g->d.dNSName),
                     (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        } else if (g->type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN];
            int n = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *b = ASN1_STRING_get0_data(g->d.iPAddress);
            assert_true(n == 4 || n == 16);
            inet_ntop(n == 4 ? AF_INET : AF_INET6, b, ip, sizeof(ip));
            snprintf(item, sizeof(item), "IP:%s", ip);
        }
        size_t o = strlen(out);
        snprintf(out + o, cap - o, "%s%s", o ? "," : "", item);
    }
    GENERAL_NAMES_free(names);
}

static bool san_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; (p = strstr(p, item)) != NULL; p++)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* ---- tests ----------------------------------------------------------------- */

static void test_tls_cert__generates_pair(void **state)
{
    fixture *f = *state;
    assert_true(ensure(f, NULL, 0));

    char want[PATH_MAX + 32];
    snprintf(want, sizeof(want), "%s/tls/cert.pem", f->state);
    assert_string_equal(f->cert, want);
    snprintf(want, sizeof(want), "%s/tls/key.pem", f->state);
    assert_string_equal(f->key, want);
    assert_int_equal(access(f->cert, R_OK), 0);
    assert_int_equal(access(f->key, R_OK), 0);

    /* No temporary files left behind. */
    snprintf(want, sizeof(want), "%s.tmp", f->cert);
    assert_int_equal(access(want, F_OK), -1);
    snprintf(want, sizeof(want), "%s.tmp", f->key);
    assert_int_equal(access(want, F_OK), -1);

    char err[512] = "";
    assert_int_equal(tls_cert_check_pair(f->cert, f->key, err, sizeof(err)), 0);
}

static void test_tls_cert__key_is_private(void **state)
{
    fixture *f = *state;
    mode_t old = umask(0); /* even with a permissive umask */
    ensure(f, NULL, 0);
    umask(old);

    struct stat st;
    assert_int_equal(stat(f->key, &st), 0);
    if ((st.st_mode & 07777) != 0600)
        fail_msg("key mode %04o, expected 0600", (unsigned)(st.st_mode & 07777));

    char dir[PATH_MAX + 8];
    snprintf(dir, sizeof(dir), "%s/tls", f->state);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
    assert_int_equal(stat(f->state, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
}

static void test_tls_cert__certificate_contents(void **state)
{
    fixture *f = *state;
    static const char *const hosts[] = {"gw.example.com", "0.0.0.0", "192.0.2.7", "::",
                                        "2001:db8::1"};
    ensure(f, hosts, sizeof(hosts) / sizeof(hosts[0]));

    X509 *x = read_cert(f->cert);
    EVP_PKEY *pub = X509_get0_pubkey(x);
    assert_non_null(pub);
    assert_true(EVP_PKEY_is_a(pub, "EC"));
    char group[64] = "";
    size_t glen = 0;
    assert_int_equal(EVP_PKEY_get_group_name(pub, group, sizeof(group), &glen), 1);
    assert_string_equal(group, "prime256v1");

    /* Self-signed: its own key verifies it. */
    assert_int_equal(X509_verify(x, pub), 1);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);

    /* Valid now and for years, not a day. */
    time_t now = time(NULL);
    time_t later = now + 800L * 86400;
    assert_true(X509_cmp_time(X509_get0_notBefore(x), &now) < 0);
    assert_true(X509_cmp_time(X509_get0_notAfter(x), &later) > 0);

    /* A server certificate, not a CA. */
    assert_int_equal(X509_check_ca(x), 0);
    assert_true(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);

    char san[4096];
    san_list(x, san, sizeof(san));
    assert_true(san_has(san, "DNS:localhost"));
    assert_true(san_has(san, "IP:127.0.0.1"));
    assert_true(san_has(san, "IP:::1"));
    assert_true(san_has(san, "DNS:gw.example.com"));
    assert_true(san_has(san, "IP:192.0.2.7"));
    assert_true(san_has(san, "IP:2001:db8::1"));
    /* Wildcard listen addresses name no host. */
    assert_false(san_has(san, "IP:0.0.0.0"));
    assert_false(san_has(san, "IP:::"));
    X509_free(x);
}

/* Each listen host is in the certificate, even when its text is a prefix
 * of another entry's ("10.0.0.1" next to "10.0.0.10", "gw" next to
 * "gw.example.com", "local" next to "localhost"). */
static void test_tls_cert__san_keeps_prefix_hosts(void **state)
{
    fixture *f = *state;
    static const char *const hosts[] = {"10.0.0.10", "10.0.0.1", "gw.example.com", "gw",
                                        "local"};
    ensure(f, hosts, sizeof(hosts) / sizeof(hosts[0]));
    X509 *x = read_cert(f->cert);
    char san[4096];
    san_list(x, san, sizeof(san));
    X509_free(x);
    static const char *const want[] = {"IP:10.0.0.10", "IP:10.0.0.1", "DNS:gw.example.com",
                                       "DNS:gw", "DNS:local"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!san_has(san, want[i]))
            fail_msg("subjectAltName lacks %s: %s", want[i], san);
}

static void test_tls_cert__second_call_reuses(void **state)
{
    fixture *f = *state;
    char fp1[TLS_FINGERPRINT_LEN], fp2[TLS_FINGERPRINT_LEN];
    assert_true(ensure(f, NULL, 0));
    fingerprint(f->cert, fp1);
    size_t len1, len2;
    char *key1 = read_file(f->key, &len1);

    assert_false(ensure(f, NULL, 0));
    fingerprint(f->cert, fp2);
    assert_string_equal(fp1, fp2);
    char *key2 = read_file(f->key, &len2);
    assert_int_equal(len1, len2);
    assert_memory_equal(key1, key2, len1);
    free(key1);
    free(key2);
}

static void test_tls_cert__fingerprint_format(void **state)
{
    fixture *f = *state;
    char fp[TLS_FINGERPRINT_LEN];
    ensure(f, NULL, 0);
    memset(fp, 'Z', sizeof(fp));
    fingerprint(f->cert, fp);
    assert_int_equal(strlen(fp), 95);
    for (int i = 0; i < 95; i++) {
        if (i % 3 == 2)
            assert_int_equal(fp[i], ':');
        else if (!((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'A' && fp[i] <= 'F')))
            fail_msg("fingerprint %s: bad character at %d", fp, i);
    }
}

/* The same value as openssl x509 -noout -fingerprint -sha256: SHA-256 over
 * the certificate's DER encoding, computed here independently. */
static void test_tls_cert__fingerprint_matches_openssl(void **state)
{
    fixture *f = *state;
    char fp[TLS_FINGERPRINT_LEN];
    ensure(f, NULL, 0);
    fingerprint(f->cert, fp);

    X509 *x = read_cert(f->cert);
    unsigned char *der = NULL;
    int dlen = i2d_X509(x, &der);
    assert_true(dlen > 0);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(der, (size_t)dlen, md, &mdlen, EVP_sha256(), NULL), 1);
    assert_int_equal(mdlen, 32);
    OPENSSL_free(der);
    X509_free(x);

    char want[TLS_FINGERPRINT_LEN];
    for (unsigned i = 0; i < 32; i++)
        snprintf(want + i * 3, sizeof(want) - i * 3, "%02X%s", md[i], i < 31 ? ":" : "");
    assert_string_equal(fp, want);

    /* When the openssl command is there, ask it too. */
    if (access("/usr/bin/openssl", X_OK) == 0) {
        char cmd[TLS_PATH_MAX + 100], line[256] = "";
        snprintf(cmd, sizeof(cmd), "/usr/bin/openssl x509 -noout -fingerprint -sha256 -in '%s'",
                 f->cert);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        char *got = fgets(line, sizeof(line), p);
        assert_int_equal(pclose(p), 0);
        assert_non_null(got);
        line[strcspn(line, "\n")] = '\0';
        const char *eq = strchr(line, '=');
        assert_non_null(eq);
        assert_string_equal(eq + 1, fp);
    }
}

/* A damaged certificate is reported, never silently replaced: users may
 * have pinned the old fingerprint. */
static void test_tls_cert__corrupt_cert_is_error(void **state)
{
    fixture *f = *state;
    ensure(f, NULL, 0);
    write_file(f->cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                        "-----END CERTIFICATE-----\n");

    bool generated = true;
    char cert[TLS_PATH_MAX], key[TLS_PATH_MAX];
    f->err[0] = '\0';
    int rc = tls_cert_ensure_self_signed(f->state, NULL, 0, cert, key, &generated, f->err,
                                         sizeof(f->err));
    assert_true(rc < 0);
    assert_false(generated);
    assert_contains(f->err, f->cert);
    assert_contains(f->err, "delete both files");

    size_t len;
    char *now = read_file(f->cert, &len);
    assert_contains(now, "not base64 at all"); /* untouched */
    free(now);
}

static void test_tls_cert__corrupt_key_is_error(void **state)
{
    fixture *f = *state;
    ensure(f, NULL, 0);
    char fp1[TLS_FINGERPRINT_LEN], fp2[TLS_FINGERPRINT_LEN];
    fingerprint(f->cert, fp1);
    write_file(f->key, "garbage\n");

    bool generated = true;
    char cert[TLS_PATH_MAX], key[TLS_PATH_MAX];
    int rc = tls_cert_ensure_self_signed(f->state, NULL, 0, cert, key, &generated, f->err,
                                         sizeof(f->err));
    assert_true(rc < 0);
    assert_false(generated);
    assert_contains(f->err, f->key);
    fingerprint(f->cert, fp2);
    assert_string_equal(fp1, fp2);
}

static void test_tls_cert__mismatched_pair(void **state)
{
    fixture *f = *state;
    ensure(f, NULL, 0);
    char cert_a[TLS_PATH_MAX], key_a[TLS_PATH_MAX];
    memcpy(cert_a, f->cert, sizeof(cert_a));
    memcpy(key_a, f->key, sizeof(key_a));

    snprintf(f->state, sizeof(f->state), "%s/other", f->root);
    ensure(f, NULL, 0);

    char err[2 * TLS_PATH_MAX] = "";
    assert_int_equal(tls_cert_check_pair(cert_a, key_a, err, sizeof(err)), 0);
    assert_int_equal(tls_cert_check_pair(cert_a, f->key, err, sizeof(err)), PST_E_TLS);
    assert_contains(err, cert_a);
    assert_contains(err, f->key);
    assert_contains(err, "do not belong together");

    /* Put the foreign key in place: the next start must refuse, not
     * regenerate over the operator's files. */
    size_t len;
    char *foreign = read_file(f->key, &len);
    write_file(key_a, foreign);
    free(foreign);
    snprintf(f->state, sizeof(f->state), "%s/state", f->root);
    bool generated = true;
    int rc = tls_cert_ensure_self_signed(f->state, NULL, 0, f->cert, f->key, &generated,
                                         err, sizeof(err));
    assert_int_equal(rc, PST_E_TLS);
    assert_false(generated);
}

static void test_tls_cert__check_pair_missing_files(void **state)
{
    fixture *f = *state;
    char err[2 * TLS_PATH_MAX] = "";
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof(missing), "%s/nope.pem", f->root);

    assert_true(tls_cert_check_pair(missing, missing, err, sizeof(err)) < 0);
    assert_contains(err, missing);

    ensure(f, NULL, 0);
    err[0] = '\0';
    assert_int_equal(tls_cert_check_pair(f->cert, missing, err, sizeof(err)), -ENOENT);
    assert_contains(err, missing);

    /* A key where the certificate should be. */
    err[0] = '\0';
    assert_true(tls_cert_check_pair(f->key, f->key, err, sizeof(err)) < 0);
    assert_contains(err, "no PEM certificate");
}

static void test_tls_cert__fingerprint_errors(void **state)
{
    fixture *f = *state;
    char fp[TLS_FINGERPRINT_LEN], err[1024] = "";
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/nope.pem", f->root);
    assert_true(tls_cert_fingerprint(path, fp, err, sizeof(err)) < 0);
    assert_contains(err, path);

    snprintf(path, sizeof(path), "%s/empty.pem", f->root);
    write_file(path, "");
    err[0] = '\0';
    assert_true(tls_cert_fingerprint(path, fp, err, sizeof(err)) < 0);
    assert_contains(err, path);
}

/* Writes a self-signed pair into state/tls that expires in `days`. */
static void write_short_lived_pair(fixture *f, long days)
{
    char dir[sizeof(f->state) + 8];
    assert_int_equal(mkdir(f->state, 0700), 0);
    snprintf(dir, sizeof(dir), "%s/tls", f->state);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(f->cert, sizeof(f->cert), "%s/cert.pem", dir);
    snprintf(f->key, sizeof(f->key), "%s/key.pem", dir);

    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_NAME *name = X509_get_subject_name(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -86400));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), days * 86400));
    assert_int_equal(X509_set_pubkey(x, key), 1);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"old", -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);

    FILE *fp = fopen(f->key, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(fp);
    fp = fopen(f->cert, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_X509(fp, x), 1);
    fclose(fp);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void test_tls_cert__near_expiry_is_replaced(void **state)
{
    fixture *f = *state;
    char old_fp[TLS_FINGERPRINT_LEN], new_fp[TLS_FINGERPRINT_LEN];
    write_short_lived_pair(f, 10);
    fingerprint(f->cert, old_fp);

    assert_true(ensure(f, NULL, 0));
    fingerprint(f->cert, new_fp);
    assert_string_not_equal(old_fp, new_fp);
    char err[2 * TLS_PATH_MAX] = "";
    assert_int_equal(tls_cert_check_pair(f->cert, f->key, err, sizeof(err)), 0);
}

static void test_tls_cert__far_expiry_is_kept(void **state)
{
    fixture *f = *state;
    char old_fp[TLS_FINGERPRINT_LEN], new_fp[TLS_FINGERPRINT_LEN];
    write_short_lived_pair(f, 90);
    fingerprint(f->cert, old_fp);
    assert_false(ensure(f, NULL, 0));
    fingerprint(f->cert, new_fp);
    assert_string_equal(old_fp, new_fp);
}

static void test_tls_cert__bad_state_dir(void **state)
{
    fixture *f = *state;
    char cert[TLS_PATH_MAX], key[TLS_PATH_MAX], err[512] = "";
    bool generated = true;

    /* Parent missing: reported with the path, nothing created. */
    char deep[PATH_MAX + 32];
    snprintf(deep, sizeof(deep), "%s/no/such/dir", f->root);
    int rc = tls_cert_ensure_self_signed(deep, NULL, 0, cert, key, &generated, err,
                                         sizeof(err));
    assert_int_equal(rc, -ENOENT);
    assert_false(generated);
    assert_contains(err, deep);

    /* A path longer than any buffer. */
    char *longdir = malloc(TLS_PATH_MAX + 100);
    assert_non_null(longdir);
    memset(longdir, 'd', TLS_PATH_MAX + 99);
    longdir[0] = '/';
    longdir[TLS_PATH_MAX + 99] = '\0';
    rc = tls_cert_ensure_self_signed(longdir, NULL, 0, cert, key, &generated, err,
                                     sizeof(err));
    assert_int_equal(rc, -ENAMETOOLONG);
    free(longdir);
}

#define T(name) cmocka_unit_test_setup_teardown(name, tmp_setup, tmp_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_tls_cert__generates_pair),
        T(test_tls_cert__key_is_private),
        T(test_tls_cert__certificate_contents),
        T(test_tls_cert__san_keeps_prefix_hosts),
        T(test_tls_cert__second_call_reuses),
        T(test_tls_cert__fingerprint_format),
        T(test_tls_cert__fingerprint_matches_openssl),
        T(test_tls_cert__corrupt_cert_is_error),
        T(test_tls_cert__corrupt_key_is_error),
        T(test_tls_cert__mismatched_pair),
        T(test_tls_cert__check_pair_missing_files),
        T(test_tls_cert__fingerprint_errors),
        T(test_tls_cert__near_expiry_is_replaced),
        T(test_tls_cert__far_expiry_is_kept),
        T(test_tls_cert__bad_state_dir),
    };
    return cmocka_run_group_tests_name("gateway/tls_cert", tests, NULL, NULL);
}
