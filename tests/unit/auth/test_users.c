/* The users file: JSON lines, errors naming their line, atomic save,
 * round trip of every field. */
#include "unit_test.h"

#include "auth/auth.h"
#include "common/err.h"

#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define HASH "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"

static auth_users *parse_ok(const char *text)
{
    auth_users *u = NULL;
    char err[256] = "";
    int rc = auth_users_parse("users", text, strlen(text), &u, err, sizeof(err));
    if (rc != 0)
        fail_msg("parse failed: %s", err);
    return u;
}

static void parse_err(const char *text, const char *where)
{
    auth_users *u = NULL;
    char err[256] = "";
    assert_int_equal(auth_users_parse("users", text, strlen(text), &u, err, sizeof(err)),
                     PST_E_CONFIG);
    assert_null(u);
    assert_starts_with(err, where);
}

static void test_users__lines_comments_blank(void **state)
{
    (void)state;
    auth_users *u = parse_ok("# comment\n\n{\"name\":\"alice\",\"roles\":[\"ops\",\"dba\"],"
                             "\"password\":\"" HASH "\"}\n"
                             "{\"name\":\"bob\",\"disabled\":true}");
    assert_int_equal(u->n, 2);
    auth_user *a = auth_users_find(u, "alice");
    assert_non_null(a);
    assert_int_equal(a->nroles, 2);
    assert_string_equal(a->roles[1], "dba");
    assert_string_equal(a->password_hash, HASH);
    assert_int_equal(a->line, 3);
    auth_user *b = auth_users_find(u, "bob");
    assert_true(b->disabled);
    assert_null(b->password_hash);
    assert_null(auth_users_find(u, "carol"));
    auth_users_free(u);
}

static void test_users__errors_name_the_line(void **state)
{
    (void)state;
    parse_err("{\"name\":\"alice\"}\n{\"name\":\"bob\"", "users:2: invalid JSON");
    parse_err("{\"name\":\"alice\"}\n\n{\"name\":\"a\\nb\"}", "users:3: name");
    parse_err("{\"name\":\"alice\",\"role\":[]}", "users:1: unknown key \"role\"");
    parse_err("{\"name\":\"alice\",\"password\":\"plain\"}", "users:1: password");
    parse_err("{\"name\":\"alice\",\"disabled\":\"yes\"}", "users:1: disabled");
    parse_err("{\"name\":\"alice\",\"roles\":[\"o ps\"]}", "users:1: roles[0]");
    parse_err("{\"name\":\"alice\",\"totp_secret\":\"ABC\"}", "users:1: totp_secret");
    parse_err("{\"name\":\"alice\"}\n{\"name\":\"alice\"}", "users:2: user \"alice\" is already");
    parse_err("[1,2]", "users:1: expected a JSON object");
}

static void test_users__name_rules(void **state)
{
    (void)state;
    assert_true(auth_name_valid("alice"));
    assert_true(auth_name_valid("a.b-c_d@example.com"));
    assert_false(auth_name_valid(""));
    assert_false(auth_name_valid("a b"));
    assert_false(auth_name_valid("a\x01"));
    assert_false(auth_name_valid("a/b"));
    char long_name[AUTH_NAME_MAX + 2];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_false(auth_name_valid(long_name));
    long_name[AUTH_NAME_MAX] = '\0';
    assert_true(auth_name_valid(long_name));
}

static void test_users__save_round_trip_is_private(void **state)
{
    (void)state;
    char dir[] = "/tmp/postern-users-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/users.jsonl", dir);

    auth_users *u = NULL;
    assert_int_equal(auth_users_load(path, &u, err, sizeof(err)), 0); /* missing: empty */
    assert_int_equal(u->n, 0);
    auth_user *a = NULL;
    assert_int_equal(auth_users_add(u, "alice", &a), 0);
    assert_int_equal(auth_users_add(u, "alice", &a), -EEXIST);
    a = auth_users_find(u, "alice");
    assert_int_equal(auth_user_add_role(a, "ops"), 0);
    assert_int_equal(auth_user_add_role(a, "ops"), 0); /* no duplicate */
    assert_int_equal(auth_user_set_password_hash(a, HASH), 0);
    memcpy(a->totp_key, "12345678901234567890", 20);
    a->totp_key_len = 20;
    assert_int_equal(auth_users_save(u, path, err, sizeof(err)), 0);
    auth_users_free(u);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(auth_users_load(path, &u, err, sizeof(err)), 0);
    a = auth_users_find(u, "alice");
    assert_non_null(a);
    assert_int_equal(a->nroles, 1);
    assert_string_equal(a->password_hash, HASH);
    assert_int_equal(a->totp_key_len, 20);
    assert_memory_equal(a->totp_key, "12345678901234567890", 20);
    auth_users_free(u);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_users__lines_comments_blank),
        cmocka_unit_test(test_users__errors_name_the_line),
        cmocka_unit_test(test_users__name_rules),
        cmocka_unit_test(test_users__save_round_trip_is_private),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
