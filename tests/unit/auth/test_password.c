/* argon2id hashing: round trip, wrong password, parameters carried in the
 * hash, malformed hashes. */
#include "unit_test.h"

#include "auth/auth.h"
#include "common/err.h"

#include <errno.h>

/* Small parameters keep the tests fast; the code path is the same. */
static const auth_kdf_params fast = {.t_cost = 1, .m_cost_kib = 1024, .parallelism = 1};

static void test_password__round_trip(void **state)
{
    (void)state;
    char hash[AUTH_HASH_MAX];
    assert_int_equal(auth_password_hash("s3cret pw", 9, &fast, hash, sizeof(hash)), 0);
    assert_starts_with(hash, "$argon2id$v=19$m=1024,t=1,p=1$");
    assert_not_contains(hash, "s3cret");
    assert_int_equal(auth_password_verify(hash, "s3cret pw", 9), 0);
}

static void test_password__wrong_password(void **state)
{
    (void)state;
    char hash[AUTH_HASH_MAX];
    assert_int_equal(auth_password_hash("s3cret pw", 9, &fast, hash, sizeof(hash)), 0);
    assert_int_equal(auth_password_verify(hash, "s3cret pW", 9), PST_E_DENIED);
    assert_int_equal(auth_password_verify(hash, "s3cret p", 8), PST_E_DENIED);
    assert_int_equal(auth_password_verify(hash, "", 0), PST_E_DENIED);
}

static void test_password__salted(void **state)
{
    (void)state;
    char a[AUTH_HASH_MAX], b[AUTH_HASH_MAX];
    assert_int_equal(auth_password_hash("same", 4, &fast, a, sizeof(a)), 0);
    assert_int_equal(auth_password_hash("same", 4, &fast, b, sizeof(b)), 0);
    assert_string_not_equal(a, b);
}

static void test_password__default_parameters(void **state)
{
    (void)state;
    char hash[AUTH_HASH_MAX];
    assert_int_equal(auth_password_hash("pw", 2, NULL, hash, sizeof(hash)), 0);
    assert_contains(hash, "m=19456,t=2,p=1");
    assert_int_equal(auth_password_verify(hash, "pw", 2), 0);
}

static void test_password__malformed_hash(void **state)
{
    (void)state;
    assert_int_equal(auth_password_verify(NULL, "pw", 2), PST_E_PARSE);
    assert_int_equal(auth_password_verify("$2b$10$abcdefghijkl", "pw", 2), PST_E_PARSE);
    assert_int_equal(auth_password_verify("$argon2id$v=19$m=1024,t=1,p=1$garbage", "pw", 2),
                     PST_E_PARSE);
}

static void test_password__too_long(void **state)
{
    (void)state;
    static char big[AUTH_PASSWORD_MAX + 2];
    char hash[AUTH_HASH_MAX];
    memset(big, 'x', sizeof(big) - 1);
    assert_int_equal(auth_password_hash(big, sizeof(big) - 1, &fast, hash, sizeof(hash)),
                     -EMSGSIZE);
}

static void test_password__dummy_hash_matches_nothing_typed(void **state)
{
    (void)state;
    char hash[AUTH_HASH_MAX];
    assert_int_equal(auth_password_dummy_hash(hash, sizeof(hash)), 0);
    assert_int_equal(auth_password_verify(hash, "", 0), PST_E_DENIED);
    assert_int_equal(auth_password_verify(hash, "password", 8), PST_E_DENIED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password__round_trip),
        cmocka_unit_test(test_password__wrong_password),
        cmocka_unit_test(test_password__salted),
        cmocka_unit_test(test_password__default_parameters),
        cmocka_unit_test(test_password__malformed_hash),
        cmocka_unit_test(test_password__too_long),
        cmocka_unit_test(test_password__dummy_hash_matches_nothing_typed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
