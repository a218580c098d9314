/* Tests for recording/verify.c and recording/manifest.c: a signed
 * recording of several chunks is OK; then one change at a time: a byte
 * flipped (MODIFIED, the chunk named), the tail cut (TRUNCATED, inside a
 * chunk and at a chunk boundary), bytes appended, the manifest edited,
 * re-signed by another key, renamed, deleted (UNSIGNED), and garbage or
 * huge manifests (never a crash). */
#include "rec_fixture.h"

#include "recording/internal.h"

#include <errno.h>
#include <openssl/pem.h>

#define ID "feed01"
#define OUT_BYTES (200u << 10) /* about 3.5 chunks of file */

typedef struct {
    rec_fx *f;
    char path[2048], sig[2100];
    char *pem;
    char *cast, *man; /* pristine copies */
    size_t castlen, manlen;
    char detail[512];
} vfx;

static int vfx_setup(void **state)
{
    if (rec_fx_setup_store(state) != 0)
        return -1;
    rec_fx *f = *state;
    vfx *v = calloc(1, sizeof(*v));
    v->f = f;
    rec_meta m = rec_fx_meta(ID);
    recording *r;
    if (rec_open(f->st, &m, &rec_fx_cb, f, &r) != 0)
        return -1;
    char line[81];
    memset(line, '#', sizeof(line));
    for (unsigned i = 0; i < OUT_BYTES / 80; i++) {
        snprintf(line, sizeof(line), "%08u ....................................................."
                                     "..............\r\n", i);
        rec_output(r, line, strlen(line));
    }
    rec_finish(r);
    v->pem = strdup(rec_store_public_key_pem(f->st));
    rec_fx_close_store(f);
    rec_fx_path(f, ID, v->path, sizeof(v->path));
    snprintf(v->sig, sizeof(v->sig), "%s.sig", v->path);
    v->cast = rec_fx_read(v->path, &v->castlen);
    v->man = rec_fx_read(v->sig, &v->manlen);
    if (!v->cast || !v->man || v->castlen < 3 * REC_CHUNK_SIZE)
        return -1;
    *state = v;
    return 0;
}

static int vfx_teardown(void **state)
{
    vfx *v = *state;
    void *f = v->f;
    free(v->pem);
    free(v->cast);
    free(v->man);
    free(v);
    return rec_fx_teardown(&f);
}

static rec_verify_result check(vfx *v)
{
    return rec_verify_file(v->path, v->pem, v->detail, sizeof(v->detail));
}

#define assert_verdict(v, want)                                                    \
    do {                                                                           \
        rec_verify_result got_ = check(v);                                         \
        if (got_ != (want))                                                        \
            fail_msg("got %s (%s), wanted %s", rec_verify_result_name(got_),       \
                     (v)->detail, rec_verify_result_name(want));                   \
    } while (0)

static void test_verify__ok(void **state)
{
    vfx *v = *state;
    assert_verdict(v, REC_VERIFY_OK);
    assert_string_equal(rec_verify_result_name(REC_VERIFY_OK), "OK");
}

static void test_verify__flipped_byte(void **state)
{
    vfx *v = *state;
    size_t at = REC_CHUNK_SIZE * 2 + 100; /* in chunk 2 */
    v->cast[at] ^= 0x01;
    rec_fx_write(v->path, v->cast, v->castlen);
    assert_verdict(v, REC_VERIFY_MODIFIED);
    assert_contains(v->detail, "chunk 2");
}

static void test_verify__flipped_byte_in_last_partial_chunk(void **state)
{
    vfx *v = *state;
    v->cast[v->castlen - 5] ^= 0x20;
    rec_fx_write(v->path, v->cast, v->castlen);
    assert_verdict(v, REC_VERIFY_MODIFIED);
}

static void test_verify__cut_inside_a_chunk(void **state)
{
    vfx *v = *state;
    rec_fx_write(v->path, v->cast, 2 * REC_CHUNK_SIZE + 1000);
    assert_verdict(v, REC_VERIFY_TRUNCATED);
    assert_contains(v->detail, "2 whole chunk(s) match");
    assert_contains(v->detail, "cannot be checked");
}

static void test_verify__cut_at_chunk_boundary(void **state)
{
    vfx *v = *state;
    rec_fx_write(v->path, v->cast, REC_CHUNK_SIZE);
    assert_verdict(v, REC_VERIFY_TRUNCATED);
    assert_contains(v->detail, "1 whole chunk(s) match");
}

static void test_verify__cut_and_modified(void **state)
{
    vfx *v = *state;
    v->cast[10] ^= 0x01;
    rec_fx_write(v->path, v->cast, 2 * REC_CHUNK_SIZE + 1000);
    assert_verdict(v, REC_VERIFY_MODIFIED);
    assert_contains(v->detail, "chunk 0");
}

static void test_verify__empty_file(void **state)
{
    vfx *v = *state;
    rec_fx_write(v->path, "", 0);
    assert_verdict(v, REC_VERIFY_TRUNCATED);
}

static void test_verify__appended(void **state)
{
    vfx *v = *state;
    char *more = malloc(v->castlen + 10);
    memcpy(more, v->cast, v->castlen);
    memcpy(more + v->castlen, "[9.0, \"o\", \"x\"]\n", 10);
    rec_fx_write(v->path, more, v->castlen + 10);
    free(more);
    assert_verdict(v, REC_VERIFY_MODIFIED);
    assert_contains(v->detail, "longer");
}

static void test_verify__no_manifest(void **state)
{
    vfx *v = *state;
    assert_int_equal(unlink(v->sig), 0);
    assert_verdict(v, REC_VERIFY_UNSIGNED);
    /* Unsigned is told even without a key. */
    assert_int_equal(rec_verify_file(v->path, NULL, v->detail, sizeof(v->detail)),
                     REC_VERIFY_UNSIGNED);
}

static void test_verify__missing_recording(void **state)
{
    vfx *v = *state;
    assert_int_equal(unlink(v->path), 0);
    assert_verdict(v, REC_VERIFY_ERROR);
}

/* Any edit of the signed line breaks the signature. */
static void test_verify__manifest_edited(void **state)
{
    vfx *v = *state;
    char *p = strstr(v->man, "\"user\":\"alice\"");
    assert_non_null(p);
    p[9] = 'A';
    rec_fx_write(v->sig, v->man, v->manlen);
    assert_verdict(v, REC_VERIFY_MODIFIED);
    assert_contains(v->detail, "signature");
}

static void test_verify__signature_edited(void **state)
{
    vfx *v = *state;
    char *nl = strchr(v->man, '\n');
    nl[5] = nl[5] == 'A' ? 'B' : 'A';
    rec_fx_write(v->sig, v->man, v->manlen);
    assert_verdict(v, REC_VERIFY_MODIFIED);
}

static void test_verify__wrong_key(void **state)
{
    vfx *v = *state;
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *other = malloc((size_t)n + 1); /* data is not NUL-terminated */
    memcpy(other, data, (size_t)n);
    other[n] = '\0';
    BIO_free(b);
    EVP_PKEY_free(k);
    assert_int_equal(rec_verify_file(v->path, other, v->detail, sizeof(v->detail)),
                     REC_VERIFY_ERROR);
    assert_contains(v->detail, "another key");
    free(other);
    assert_int_equal(rec_verify_file(v->path, "not a key", v->detail, sizeof(v->detail)),
                     REC_VERIFY_ERROR);
    assert_contains(v->detail, "public key");
}

/* A recording copied under another id does not pass as that session. */
static void test_verify__renamed(void **state)
{
    vfx *v = *state;
    char other[2100], othersig[2200];
    snprintf(other, sizeof(other), "%s/recordings/" REC_T0_DAY "/beef.cast", v->f->dir);
    snprintf(othersig, sizeof(othersig), "%s.sig", other);
    rec_fx_write(other, v->cast, v->castlen);
    rec_fx_write(othersig, v->man, v->manlen);
    assert_int_equal(rec_verify_file(other, v->pem, v->detail, sizeof(v->detail)),
                     REC_VERIFY_MODIFIED);
    assert_contains(v->detail, "for " ID ".cast");
}

static void test_verify__garbage_manifests(void **state)
{
    vfx *v = *state;
    const char *bad[] = {
        "",
        "\n",
        "{}\n\n",
        "garbage",
        "{\"format\":1}\nAAAA\n",
        "\xff\xfe\x00\n==\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rec_fx_write(v->sig, bad[i], strlen(bad[i]) + (i == 5 ? 3 : 0));
        assert_verdict(v, REC_VERIFY_MODIFIED);
    }
    /* The real manifest's JSON with the signature line gone. */
    char *nl = strchr(v->man, '\n');
    rec_fx_write(v->sig, v->man, (size_t)(nl - v->man) + 1);
    assert_verdict(v, REC_VERIFY_MODIFIED);
}

/* A manifest past REC_MANIFEST_MAX is refused without reading it all. */
static void test_verify__huge_manifest(void **state)
{
    vfx *v = *state;
    int fd = open(v->sig, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)REC_MANIFEST_MAX + 1), 0);
    close(fd);
    assert_verdict(v, REC_VERIFY_MODIFIED);
    assert_contains(v->detail, "larger");
}

static void test_verify__parse_round_trip(void **state)
{
    vfx *v = *state;
    rec_manifest m;
    char why[256];
    assert_int_equal(rec_manifest_parse(v->man, v->manlen, &m, why, sizeof(why)), 0);
    assert_string_equal(m.file, ID ".cast");
    assert_int_equal(m.length, v->castlen);
    assert_int_equal(m.chunk_size, REC_CHUNK_SIZE);
    assert_int_equal(m.nlinks, (v->castlen + REC_CHUNK_SIZE - 1) / REC_CHUNK_SIZE);
    assert_string_equal(m.user, "alice");
    assert_int_equal(m.started_ms, REC_T0_MS);
    /* link_0 = SHA256(chunk_0), link_1 = SHA256(link_0 || chunk_1) */
    uint8_t l0[REC_SHA256_LEN], l1[REC_SHA256_LEN];
    assert_int_equal(rec_chain_link(NULL, (uint8_t *)v->cast, REC_CHUNK_SIZE, l0), 0);
    assert_int_equal(rec_chain_link(l0, (uint8_t *)v->cast + REC_CHUNK_SIZE, REC_CHUNK_SIZE, l1),
                     0);
    assert_memory_equal(m.links[0], l0, REC_SHA256_LEN);
    assert_memory_equal(m.links[1], l1, REC_SHA256_LEN);
    rec_manifest_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, vfx_setup, vfx_teardown)
        T(test_verify__ok),
        T(test_verify__flipped_byte),
        T(test_verify__flipped_byte_in_last_partial_chunk),
        T(test_verify__cut_inside_a_chunk),
        T(test_verify__cut_at_chunk_boundary),
        T(test_verify__cut_and_modified),
        T(test_verify__empty_file),
        T(test_verify__appended),
        T(test_verify__no_manifest),
        T(test_verify__missing_recording),
        T(test_verify__manifest_edited),
        T(test_verify__signature_edited),
        T(test_verify__wrong_key),
        T(test_verify__renamed),
        T(test_verify__garbage_manifests),
        T(test_verify__huge_manifest),
        T(test_verify__parse_round_trip),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
