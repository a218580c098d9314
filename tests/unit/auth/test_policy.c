/* Permissions: names and globs, tags, deny by default, user vs admin
 * login, non-VM actions, disabled accounts, MFA-required roles. */
#include "unit_test.h"

#include "auth/auth.h"
#include "common/err.h"

static const char *ops_sel[] = {"web*", "tag:linux"};
static const char *dba_sel[] = {"db-?"};
static const char *audit_sel[] = {"*"};

static const auth_role roles[] = {
    {.name = "ops", .selectors = ops_sel, .nselectors = 2,
     .actions = AUTH_ACT_SSH_LOGIN | AUTH_ACT_TUNNEL},
    {.name = "dba", .selectors = dba_sel, .nselectors = 1,
     .actions = AUTH_ACT_SSH_ADMIN_LOGIN, .mfa_required = true},
    {.name = "auditors", .selectors = audit_sel, .nselectors = 1,
     .actions = AUTH_ACT_AUDITOR},
    {.name = "empty", .selectors = NULL, .nselectors = 0, .actions = AUTH_ACT_SSH_LOGIN},
};
#define NROLES (sizeof(roles) / sizeof(roles[0]))

static auth_user user_with(char **r, size_t n)
{
    auth_user u = {.name = "alice", .roles = r, .nroles = n};
    return u;
}

static const char *linux_tags[] = {"linux", "prod"};
static const auth_target web01 = {.name = "web01"};
static const auth_target app7 = {.name = "app7", .tags = linux_tags, .ntags = 2};
static const auth_target win1 = {.name = "win1"};
static const auth_target db1 = {.name = "db-1"};
static const auth_target db10 = {.name = "db-10"};

static void test_policy__name_glob(void **state)
{
    (void)state;
    char *r[] = {"ops"};
    auth_user u = user_with(r, 1);
    char why[256];
    assert_int_equal(auth_may(roles, NROLES, &u, AUTH_ACT_SSH_LOGIN, &web01, why, sizeof(why)), 0);
    assert_int_equal(auth_may(roles, NROLES, &u, AUTH_ACT_SSH_LOGIN, &win1, why, sizeof(why)),
                     PST_E_DENIED);
    assert_contains(why, "win1");
}

static void test_policy__question_mark_is_one_character(void **state)
{
    (void)state;
    char *r[] = {"dba"};
    auth_user u = user_with(r, 1);
    char why[256];
    assert_int_equal(
        auth_may(roles, NROLES, &u, AUTH_ACT_SSH_ADMIN_LOGIN, &db1, why, sizeof(why)), 0);
    assert_int_equal(
        auth_may(roles, NROLES, &u, AUTH_ACT_SSH_ADMIN_LOGIN, &db10, why, sizeof(why)),
        PST_E_DENIED);
}

static void test_policy__tag_selector(void **state)
{
    (void)state;
    char *r[] = {"ops"};
    auth_user u = user_with(r, 1);
    char why[256];
    assert_true(auth_selector_matches("tag:linux", &app7));
    assert_false(auth_selector_matches("tag:lin", &app7));
    assert_false(auth_selector_matches("tag:linux", &web01));
    assert_int_equal(auth_may(roles, NROLES, &u, AUTH_ACT_TUNNEL, &app7, why, sizeof(why)), 0);
}

static void test_policy__deny_by_default(void **state)
{
    (void)state;
    char why[256];
    auth_user nobody = user_with(NULL, 0);
    assert_int_equal(auth_may(roles, NROLES, &nobody, AUTH_ACT_SSH_LOGIN, &web01, why,
                              sizeof(why)), PST_E_DENIED);
    /* A role named by the user but not configured grants nothing. */
    char *ghost[] = {"ghost"};
    auth_user g = user_with(ghost, 1);
    assert_int_equal(auth_may(roles, NROLES, &g, AUTH_ACT_SSH_LOGIN, &web01, why, sizeof(why)),
                     PST_E_DENIED);
    /* A role without selectors covers no VM. */
    char *empty[] = {"empty"};
    auth_user e = user_with(empty, 1);
    assert_int_equal(auth_may(roles, NROLES, &e, AUTH_ACT_SSH_LOGIN, &web01, why, sizeof(why)),
                     PST_E_DENIED);
}

static void test_policy__user_login_is_not_admin_login(void **state)
{
    (void)state;
    char *r[] = {"ops"};
    auth_user u = user_with(r, 1);
    char why[256];
    assert_int_equal(auth_may(roles, NROLES, &u, AUTH_ACT_SSH_ADMIN_LOGIN, &web01, why,
                              sizeof(why)), PST_E_DENIED);
    assert_contains(why, "ssh-admin-login");
    char *d[] = {"dba"};
    auth_user a = user_with(d, 1);
    assert_int_equal(auth_may(roles, NROLES, &a, AUTH_ACT_SSH_LOGIN, &db1, why, sizeof(why)),
                     PST_E_DENIED);
}

static void test_policy__roles_add_up(void **state)
{
    (void)state;
    char *r[] = {"ops", "dba"};
    auth_user u = user_with(r, 2);
    assert_int_equal(auth_actions_on(roles, NROLES, &u, &web01),
                     AUTH_ACT_SSH_LOGIN | AUTH_ACT_TUNNEL);
    assert_int_equal(auth_actions_on(roles, NROLES, &u, &db1), AUTH_ACT_SSH_ADMIN_LOGIN);
    assert_int_equal(auth_actions_on(roles, NROLES, &u, &win1), 0);
}

static void test_policy__non_vm_actions(void **state)
{
    (void)state;
    char why[256];
    char *a[] = {"auditors"};
    auth_user aud = user_with(a, 1);
    assert_int_equal(auth_may(roles, NROLES, &aud, AUTH_ACT_AUDITOR, NULL, why, sizeof(why)), 0);
    assert_int_equal(auth_may(roles, NROLES, &aud, AUTH_ACT_ADMIN, NULL, why, sizeof(why)),
                     PST_E_DENIED);
    char *o[] = {"ops"};
    auth_user ops = user_with(o, 1);
    assert_int_equal(auth_may(roles, NROLES, &ops, AUTH_ACT_AUDITOR, NULL, why, sizeof(why)),
                     PST_E_DENIED);
}

static void test_policy__disabled_user_may_nothing(void **state)
{
    (void)state;
    char *r[] = {"ops"};
    auth_user u = user_with(r, 1);
    u.disabled = true;
    char why[256];
    assert_int_equal(auth_may(roles, NROLES, &u, AUTH_ACT_SSH_LOGIN, &web01, why, sizeof(why)),
                     PST_E_DENIED);
    assert_contains(why, "disabled");
    assert_int_equal(auth_actions_on(roles, NROLES, &u, &web01), 0);
}

static void test_policy__mfa_required_by_role(void **state)
{
    (void)state;
    char *o[] = {"ops"}, *d[] = {"ops", "dba"};
    auth_user ops = user_with(o, 1), dba = user_with(d, 2);
    assert_false(auth_mfa_required(roles, NROLES, &ops));
    assert_true(auth_mfa_required(roles, NROLES, &dba));
}

static void test_policy__action_names_round_trip(void **state)
{
    (void)state;
    const char *names[] = {"ssh-login", "ssh-admin-login", "rdp-login", "rdp-admin-login",
                           "tunnel", "auditor", "approver", "admin"};
    for (size_t i = 0; i < 8; i++) {
        unsigned f = auth_action_parse(names[i]);
        assert_int_not_equal(f, 0);
        assert_string_equal(auth_action_name(f), names[i]);
    }
    assert_int_equal(auth_action_parse("root"), 0);
    assert_int_equal(auth_action_parse("SSH-LOGIN"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy__name_glob),
        cmocka_unit_test(test_policy__question_mark_is_one_character),
        cmocka_unit_test(test_policy__tag_selector),
        cmocka_unit_test(test_policy__deny_by_default),
        cmocka_unit_test(test_policy__user_login_is_not_admin_login),
        cmocka_unit_test(test_policy__roles_add_up),
        cmocka_unit_test(test_policy__non_vm_actions),
        cmocka_unit_test(test_policy__disabled_user_may_nothing),
        cmocka_unit_test(test_policy__mfa_required_by_role),
        cmocka_unit_test(test_policy__action_names_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
