/* Tests for `postern recording` (cli/postern.c), running the real binary
 * ($POSTERN, set by ctest) on recordings made here: verify's one line per
 * file and exit codes (0 all OK, 1 any not, 2 usage), the key found from
 * the path, --public-key, --state-dir, and public-key's output. */
#include "rec_fixture.h"

#include <sys/wait.h>

typedef struct {
    rec_fx *f;
    char a[2048], b[2048]; /* two signed recordings */
    char pub[2048];        /* <state>/keys/recording.pub */
    char out[8192];
} cfx;

static int cfx_setup(void **state)
{
    if (!getenv("POSTERN")) {
        fprintf(stderr, "set POSTERN to the postern binary (ctest does)\n");
        return -1;
    }
    if (rec_fx_setup_store(state) != 0)
        return -1;
    rec_fx *f = *state;
    cfx *c = calloc(1, sizeof(*c));
    c->f = f;
    rec_fx_record(f, "aa", REC_T0_MS, "first");
    rec_fx_record(f, "bb", REC_T0_MS, "second");
    rec_fx_close_store(f);
    rec_fx_path(f, "aa", c->a, sizeof(c->a));
    rec_fx_path(f, "bb", c->b, sizeof(c->b));
    snprintf(c->pub, sizeof(c->pub), "%s/keys/recording.pub", f->dir);
    *state = c;
    return 0;
}

static int cfx_teardown(void **state)
{
    cfx *c = *state;
    void *f = c->f;
    free(c);
    return rec_fx_teardown(&f);
}

/* Runs `$POSTERN args` (args are shell words we control: paths from
 * mkdtemp); returns the exit code, stdout in c->out. */
static int run(cfx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int run(cfx *c, const char *fmt, ...)
{
    char args[8192], cmd[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "'%s' %s 2>/dev/null", getenv("POSTERN"), args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(c->out, 1, sizeof(c->out) - 1, p);
    c->out[n] = '\0';
    int st = pclose(p);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_cli__verify_ok_key_from_path(void **state)
{
    cfx *c = *state;
    assert_int_equal(run(c, "recording verify '%s' '%s'", c->a, c->b), 0);
    char want[5000];
    snprintf(want, sizeof(want), "%s: OK\n%s: OK\n", c->a, c->b);
    assert_string_equal(c->out, want);
}

static void test_cli__verify_with_options(void **state)
{
    cfx *c = *state;
    assert_int_equal(run(c, "recording verify --public-key '%s' '%s'", c->pub, c->a), 0);
    assert_int_equal(run(c, "recording verify --state-dir '%s' '%s'", c->f->dir, c->a), 0);
    /* A copy outside the tree: the key must then be named. */
    char copy[2100], sig[2200];
    snprintf(copy, sizeof(copy), "%s/aa.cast", c->f->dir);
    size_t n;
    char *s = rec_fx_read(c->a, &n);
    rec_fx_write(copy, s, n);
    free(s);
    snprintf(sig, sizeof(sig), "%s.sig", c->a);
    s = rec_fx_read(sig, &n);
    snprintf(sig, sizeof(sig), "%s.sig", copy);
    rec_fx_write(sig, s, n);
    free(s);
    assert_int_equal(run(c, "recording verify '%s'", copy), 1);
    assert_contains(c->out, ": ERROR (no public key");
    assert_int_equal(run(c, "recording verify --state-dir '%s' '%s'", c->f->dir, copy), 0);
}

static void test_cli__verify_reports_each_file(void **state)
{
    cfx *c = *state;
    size_t n;
    char *s = rec_fx_read(c->b, &n);
    s[n - 3] ^= 1;
    rec_fx_write(c->b, s, n);
    free(s);
    assert_int_equal(run(c, "recording verify '%s' '%s'", c->a, c->b), 1);
    char want[5000];
    snprintf(want, sizeof(want), "%s: OK\n%s: MODIFIED (", c->a, c->b);
    assert_starts_with(c->out, want);

    char sig[2100];
    snprintf(sig, sizeof(sig), "%s.sig", c->a);
    unlink(sig);
    assert_int_equal(run(c, "recording verify '%s'", c->a), 1);
    assert_contains(c->out, ": UNSIGNED (");
    assert_int_equal(run(c, "recording verify '%s/none.cast'", c->f->dir), 1);
    assert_contains(c->out, ": ERROR (");
}

static void test_cli__usage_errors(void **state)
{
    cfx *c = *state;
    assert_int_equal(run(c, "recording verify"), 2);
    assert_int_equal(run(c, "recording verify --public-key '%s'", c->pub), 2);
    assert_int_equal(run(c, "recording verify --public-key x --state-dir y '%s'", c->a), 2);
    assert_int_equal(run(c, "recording verify --bogus '%s'", c->a), 2);
    assert_int_equal(run(c, "recording frobnicate"), 2);
    assert_int_equal(run(c, "recording public-key"), 2);
}

static void test_cli__public_key(void **state)
{
    cfx *c = *state;
    assert_int_equal(run(c, "recording public-key --state-dir '%s'", c->f->dir), 0);
    char *pem = rec_fx_read(c->pub, NULL);
    assert_string_equal(c->out, pem);
    free(pem);
    assert_int_equal(run(c, "recording public-key --state-dir '%s/none'", c->f->dir), 1);
    /* A key file that is not one is an error on each line. */
    assert_int_equal(run(c, "recording verify --public-key '%s' '%s'", c->a, c->a), 1);
    assert_contains(c->out, ": ERROR (");
    assert_contains(c->out, "not a PEM Ed25519 public key");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, cfx_setup, cfx_teardown)
        T(test_cli__verify_ok_key_from_path),
        T(test_cli__verify_with_options),
        T(test_cli__verify_reports_each_file),
        T(test_cli__usage_errors),
        T(test_cli__public_key),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
