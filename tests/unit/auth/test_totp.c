/* TOTP (RFC 6238) and base32: the RFC's own test vectors, the skew window,
 * replay refusal and malformed codes. */
#include "unit_test.h"

#include "auth/auth.h"
#include "common/err.h"

#include <errno.h>

#include <stdio.h>

/* RFC 6238 appendix B: SHA-1 seed "12345678901234567890", 8 digits. */
static const uint8_t rfc_key[] = "12345678901234567890";
static const struct {
    int64_t time;
    uint32_t code;
} rfc_vectors[] = {
    {59, 94287082},         {1111111109, 7081804}, {1111111111, 14050471},
    {1234567890, 89005924}, {2000000000, 69279037}, {20000000000LL, 65353130},
};

static void test_totp__rfc6238_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rfc_vectors) / sizeof(rfc_vectors[0]); i++) {
        uint64_t step = (uint64_t)rfc_vectors[i].time / 30;
        assert_int_equal(auth_totp_code(rfc_key, 20, step, 8), rfc_vectors[i].code);
    }
}

static void code_at(int64_t t, char out[8])
{
    snprintf(out, 8, "%06u", auth_totp_code(rfc_key, 20, (uint64_t)t / 30, 6));
}

static void test_totp__verify_accepts_current_and_skew(void **state)
{
    (void)state;
    const int64_t now = 1234567890;
    char code[8];
    uint64_t step = 0;
    code_at(now, code);
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, 0, &step), 0);
    assert_int_equal(step, (uint64_t)now / 30);
    code_at(now - 30, code);
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, 0, &step), 0);
    assert_int_equal(step, (uint64_t)now / 30 - 1);
    code_at(now + 30, code);
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, 0, &step), 0);
}

static void test_totp__verify_refuses_outside_window(void **state)
{
    (void)state;
    const int64_t now = 1234567890;
    char code[8];
    code_at(now - 90, code);
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, 0, NULL), PST_E_DENIED);
    code_at(now + 90, code);
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, 0, NULL), PST_E_DENIED);
}

static void test_totp__replay_refused(void **state)
{
    (void)state;
    const int64_t now = 1234567890;
    char code[8];
    uint64_t step = 0;
    code_at(now, code);
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, 0, &step), 0);
    /* The same code, or an older one, after that step was used. */
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, step, NULL), PST_E_DENIED);
    code_at(now - 30, code);
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, step, NULL), PST_E_DENIED);
    code_at(now + 30, code);
    assert_int_equal(auth_totp_verify(rfc_key, 20, code, now, step, NULL), 0);
}

static void test_totp__malformed_codes(void **state)
{
    (void)state;
    const char *bad[] = {"", "12345", "1234567", "12a456", " 12345", NULL};
    assert_int_equal(auth_totp_verify(rfc_key, 20, NULL, 59, 0, NULL), PST_E_DENIED);
    for (int i = 0; bad[i]; i++)
        assert_int_equal(auth_totp_verify(rfc_key, 20, bad[i], 59, 0, NULL), PST_E_DENIED);
}

static void test_totp__base32_round_trip(void **state)
{
    (void)state;
    char b32[64];
    uint8_t back[40];
    size_t n = 0;
    assert_int_equal(auth_base32_encode(rfc_key, 20, b32, sizeof(b32)), 0);
    assert_string_equal(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_int_equal(auth_base32_decode("gezd gnbv-gy3tqojqgezdgnbvgy3tqojq==", back,
                                        sizeof(back), &n),
                     0);
    assert_int_equal(n, 20);
    assert_memory_equal(back, rfc_key, 20);
    assert_int_equal(auth_base32_decode("GEZ1", back, sizeof(back), &n), PST_E_PARSE);
    assert_int_equal(auth_base32_encode(rfc_key, 20, b32, 10), -ENOSPC);
}

static void test_totp__uri(void **state)
{
    (void)state;
    char uri[256];
    assert_int_equal(auth_totp_uri("Postern", "alice", "ABC", uri, sizeof(uri)), 0);
    assert_starts_with(uri, "otpauth://totp/Postern:alice?secret=ABC&issuer=Postern");
    assert_contains(uri, "digits=6");
    assert_contains(uri, "period=30");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_totp__rfc6238_vectors),
        cmocka_unit_test(test_totp__verify_accepts_current_and_skew),
        cmocka_unit_test(test_totp__verify_refuses_outside_window),
        cmocka_unit_test(test_totp__replay_refused),
        cmocka_unit_test(test_totp__malformed_codes),
        cmocka_unit_test(test_totp__base32_round_trip),
        cmocka_unit_test(test_totp__uri),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
