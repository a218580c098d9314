/* Tests for gateway/metrics.c: counting and the Prometheus text rendering. */
#include "unit_test.h"

#include "gateway/metrics.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static const char *const families[] = {
    "postern_up",
    "postern_start_time_seconds",
    "postern_draining",
    "postern_connections_total",
    "postern_connections_active",
    "postern_http_requests_total",
    "postern_sessions_active",
    "postern_sessions_total",
    "postern_bytes_total",
    "postern_errors_total",
    "postern_config_reloads_total",
    "postern_logins_total",
    "postern_login_lockouts_total",
    "postern_login_locked",
};
#define NFAMILIES (sizeof(families) / sizeof(families[0]))

static char *render(const gw_metrics *m)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(gw_metrics_render(m, &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

/* The value on the line that starts with "series " (the exact series,
 * labels included). Fails when the series is absent or appears twice. */
static double sample(const char *text, const char *series)
{
    char want[256];
    snprintf(want, sizeof(want), "%s ", series);
    const char *found = NULL;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        if (strncmp(line, want, strlen(want)) == 0) {
            if (found)
                fail_msg("series %s appears twice", series);
            found = line + strlen(want);
        }
        if (!end)
            break;
        line = end + 1;
    }
    if (!found)
        fail_msg("series %s missing from:\n%s", series, text);
    return strtod(found, NULL);
}

/* ---- a small Prometheus text-format (0.0.4) checker ----------------------- */

static bool is_name_start(int c) { return isalpha(c) || c == '_' || c == ':'; }
static bool is_name_char(int c) { return isalnum(c) || c == '_' || c == ':'; }

/* Reads a metric name at *p; returns its length (0: none). */
static size_t metric_name(const char *p)
{
    size_t n = 0;
    if (!is_name_start((unsigned char)p[0]))
        return 0;
    while (is_name_char((unsigned char)p[n]))
        n++;
    return n;
}

typedef struct {
    char name[128];
    char type[16];
    bool help;
} family_seen;

/* Checks every line; fails with the offending line. Each sample must belong
 * to a family whose HELP and TYPE came first, each family is declared once,
 * and counters end in _total. */
static void check_exposition(const char *text)
{
    family_seen fam[64];
    size_t nfam = 0;
    size_t len = strlen(text);
    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n');

    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        char buf[512];
        size_t n = (size_t)(end - line);
        assert_true(n < sizeof(buf));
        memcpy(buf, line, n);
        buf[n] = '\0';
        line = end + 1;

        if (n == 0)
            fail_msg("empty line in exposition");
        if (buf[0] == '#') {
            char kind[8], name[128], rest[256];
            if (sscanf(buf, "# %7s %127s %255[^\n]", kind, name, rest) != 3)
                fail_msg("bad comment line: %s", buf);
            if (metric_name(name) != strlen(name))
                fail_msg("bad metric name: %s", buf);
            family_seen *f = NULL;
            for (size_t i = 0; i < nfam; i++)
                if (strcmp(fam[i].name, name) == 0)
                    f = &fam[i];
            if (!f) {
                assert_true(nfam < 64);
                f = &fam[nfam++];
                memset(f, 0, sizeof(*f));
                snprintf(f->name, sizeof(f->name), "%s", name);
            }
            if (strcmp(kind, "HELP") == 0) {
                if (f->help || f->type[0])
                    fail_msg("HELP repeated or after TYPE: %s", buf);
                f->help = true;
            } else if (strcmp(kind, "TYPE") == 0) {
                if (f->type[0])
                    fail_msg("TYPE repeated: %s", buf);
                if (strcmp(rest, "counter") && strcmp(rest, "gauge") &&
                    strcmp(rest, "histogram") && strcmp(rest, "summary") &&
                    strcmp(rest, "untyped"))
                    fail_msg("bad TYPE: %s", buf);
                if (strcmp(rest, "counter") == 0 &&
                    (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total") != 0))
                    fail_msg("counter not named *_total: %s", buf);
                snprintf(f->type, sizeof(f->type), "%.15s", rest);
            } else {
                fail_msg("unknown comment kind: %s", buf);
            }
            continue;
        }

        size_t nl = metric_name(buf);
        if (nl == 0)
            fail_msg("sample without a metric name: %s", buf);
        const char *p = buf + nl;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                size_t ln = metric_name(p);
                if (ln == 0 || p[ln] != '=' || p[ln + 1] != '"')
                    fail_msg("bad label: %s", buf);
                p += ln + 2;
                while (*p && *p != '"') {
                    if (*p == '\\' && (p[1] == '\\' || p[1] == '"' || p[1] == 'n'))
                        p++;
                    else if (*p == '\\')
                        fail_msg("bad escape in label value: %s", buf);
                    p++;
                }
                if (*p != '"')
                    fail_msg("unterminated label value: %s", buf);
                p++;
                if (*p == ',')
                    p++;
                else if (*p != '}')
                    fail_msg("bad label list: %s", buf);
            }
            p++;
        }
        if (*p != ' ')
            fail_msg("no space before the value: %s", buf);
        p++;
        char *vend;
        double v = strtod(p, &vend);
        if (vend == p || *vend != '\0' || isnan(v))
            fail_msg("bad value: %s", buf);

        family_seen *f = NULL;
        for (size_t i = 0; i < nfam; i++)
            if (strlen(fam[i].name) == nl && strncmp(fam[i].name, buf, nl) == 0)
                f = &fam[i];
        if (!f || !f->help || !f->type[0])
            fail_msg("sample before its HELP and TYPE: %s", buf);
        if (strcmp(f->type, "counter") == 0 && v < 0)
            fail_msg("negative counter: %s", buf);
    }
}

/* ---- tests ----------------------------------------------------------------- */

static void test_metrics__init_zeroes_and_stamps(void **state)
{
    gw_metrics m;
    memset(&m, 0xab, sizeof(m));
    struct timeval before;
    gettimeofday(&before, NULL);
    gw_metrics_init(&m);
    assert_int_equal(m.connections_total, 0);
    assert_int_equal(m.connections_active, 0);
    for (size_t i = 0; i <= GW_METRICS_NCODES; i++)
        assert_int_equal(m.http_requests[i], 0);
    for (int e = 0; e < GW_ERR_COUNT; e++)
        assert_int_equal(m.errors[e], 0);
    assert_int_equal(m.draining, 0);
    assert_true(m.start_time >= (double)before.tv_sec);
    assert_true(m.start_time < (double)before.tv_sec + 5);
}

static void test_metrics__render_has_families(void **state)
{
    gw_metrics m;
    gw_metrics_init(&m);
    char *text = render(&m);
    for (size_t i = 0; i < NFAMILIES; i++) {
        char help[160], type[160];
        snprintf(help, sizeof(help), "# HELP %s ", families[i]);
        snprintf(type, sizeof(type), "# TYPE %s ", families[i]);
        assert_contains(text, help);
        assert_contains(text, type);
    }
    assert_int_equal(sample(text, "postern_up"), 1);
    assert_int_equal(sample(text, "postern_draining"), 0);
    assert_true(fabs(sample(text, "postern_start_time_seconds") - m.start_time) < 0.01);
    free(text);
}

static void test_metrics__render_is_valid_exposition(void **state)
{
    gw_metrics m;
    gw_metrics_init(&m);
    char *text = render(&m);
    check_exposition(text);
    free(text);

    /* And with every counter at its largest value. */
    memset(&m, 0xff, sizeof(m));
    m.draining = 1;
    m.start_time = 1.7e9;
    text = render(&m);
    check_exposition(text);
    assert_contains(text, "postern_connections_total 18446744073709551615\n");
    assert_contains(text, "postern_http_requests_total{code=\"other\"} 18446744073709551615\n");
    assert_contains(text, "postern_draining 1\n");
    free(text);
}

static void test_metrics__counts_by_status(void **state)
{
    gw_metrics m;
    gw_metrics_init(&m);
    for (int i = 0; i < 3; i++)
        gw_metrics_count_http(&m, 200);
    gw_metrics_count_http(&m, 404);
    gw_metrics_count_http(&m, 404);
    gw_metrics_count_http(&m, 503);
    gw_metrics_count_http(&m, 429);
    gw_metrics_count_http(&m, 101);

    char *text = render(&m);
    assert_int_equal(sample(text, "postern_http_requests_total{code=\"200\"}"), 3);
    assert_int_equal(sample(text, "postern_http_requests_total{code=\"404\"}"), 2);
    assert_int_equal(sample(text, "postern_http_requests_total{code=\"503\"}"), 1);
    assert_int_equal(sample(text, "postern_http_requests_total{code=\"429\"}"), 1);
    assert_int_equal(sample(text, "postern_http_requests_total{code=\"500\"}"), 0);
    assert_int_equal(sample(text, "postern_http_requests_total{code=\"other\"}"), 1);
    assert_int_equal(sample(text, "postern_errors_total{kind=\"http_client\"}"), 3);
    assert_int_equal(sample(text, "postern_errors_total{kind=\"http_server\"}"), 1);
    free(text);
}

/* Every code in GW_METRICS_CODES has its own series, rendered even at 0. */
static void test_metrics__every_counted_code_rendered(void **state)
{
    static const int codes[GW_METRICS_NCODES] = GW_METRICS_CODES;
    gw_metrics m;
    gw_metrics_init(&m);
    for (size_t i = 0; i < GW_METRICS_NCODES; i++)
        for (size_t k = 0; k <= i; k++)
            gw_metrics_count_http(&m, codes[i]);
    char *text = render(&m);
    for (size_t i = 0; i < GW_METRICS_NCODES; i++) {
        char series[80];
        snprintf(series, sizeof(series), "postern_http_requests_total{code=\"%d\"}", codes[i]);
        assert_int_equal(sample(text, series), (double)(i + 1));
    }
    assert_int_equal(sample(text, "postern_http_requests_total{code=\"other\"}"), 0);
    free(text);
}

static void test_metrics__other_bucket(void **state)
{
    static const int others[] = {0, -1, 100, 201, 302, 402, 418, 451, 499, 502, 504, 599,
                                 600, 99999};
    gw_metrics m;
    gw_metrics_init(&m);
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        gw_metrics_count_http(&m, others[i]);
    assert_int_equal(m.http_requests[GW_METRICS_NCODES], sizeof(others) / sizeof(others[0]));
    for (size_t i = 0; i < GW_METRICS_NCODES; i++)
        assert_int_equal(m.http_requests[i], 0);
    char *text = render(&m);
    assert_int_equal(sample(text, "postern_http_requests_total{code=\"other\"}"),
                     (double)(sizeof(others) / sizeof(others[0])));
    free(text);
}

static void test_metrics__error_kinds_by_class(void **state)
{
    gw_metrics m;
    gw_metrics_init(&m);
    gw_metrics_count_http(&m, 399);
    assert_int_equal(m.errors[GW_ERR_HTTP_CLIENT], 0);
    assert_int_equal(m.errors[GW_ERR_HTTP_SERVER], 0);
    gw_metrics_count_http(&m, 400);
    gw_metrics_count_http(&m, 499);
    assert_int_equal(m.errors[GW_ERR_HTTP_CLIENT], 2);
    gw_metrics_count_http(&m, 500);
    gw_metrics_count_http(&m, 599);
    assert_int_equal(m.errors[GW_ERR_HTTP_SERVER], 2);
    assert_int_equal(m.errors[GW_ERR_HTTP_CLIENT], 2);
}

static void test_metrics__sessions_bytes_errors(void **state)
{
    gw_metrics m;
    gw_metrics_init(&m);
    m.connections_total = 12;
    m.connections_active = 3;
    m.sessions_active[GW_PROTO_SSH] = 2;
    m.sessions_active[GW_PROTO_RDP] = 1;
    m.sessions_total[GW_PROTO_SSH] = 40;
    m.sessions_total[GW_PROTO_RDP] = 7;
    m.sessions_total[GW_PROTO_TUNNEL] = 5;
    m.bytes_in = 1234;
    m.bytes_out = 987654321012ull;
    m.errors[GW_ERR_CONFIG_RELOAD] = 2;
    m.errors[GW_ERR_SESSION] = 4;
    m.config_reloads = 6;
    m.draining = 1;

    char *text = render(&m);
    check_exposition(text);
    assert_int_equal(sample(text, "postern_connections_total"), 12);
    assert_int_equal(sample(text, "postern_connections_active"), 3);
    assert_int_equal(sample(text, "postern_sessions_active{protocol=\"ssh\"}"), 2);
    assert_int_equal(sample(text, "postern_sessions_active{protocol=\"rdp\"}"), 1);
    assert_int_equal(sample(text, "postern_sessions_active{protocol=\"tunnel\"}"), 0);
    assert_int_equal(sample(text, "postern_sessions_total{protocol=\"ssh\"}"), 40);
    assert_int_equal(sample(text, "postern_sessions_total{protocol=\"rdp\"}"), 7);
    assert_int_equal(sample(text, "postern_sessions_total{protocol=\"tunnel\"}"), 5);
    assert_int_equal(sample(text, "postern_bytes_total{direction=\"in\"}"), 1234);
    assert_contains(text, "postern_bytes_total{direction=\"out\"} 987654321012\n");
    assert_int_equal(sample(text, "postern_errors_total{kind=\"config_reload\"}"), 2);
    assert_int_equal(sample(text, "postern_errors_total{kind=\"session\"}"), 4);
    assert_int_equal(sample(text, "postern_config_reloads_total"), 6);
    assert_int_equal(sample(text, "postern_draining"), 1);
    free(text);
}

static void test_metrics__logins(void **state)
{
    gw_metrics m;
    gw_metrics_init(&m);
    m.logins = 11;
    m.login_failures = 4;
    m.login_throttled = 2;
    m.lockouts = 1;
    m.locked_keys = 3;
    char *text = render(&m);
    check_exposition(text);
    assert_int_equal(sample(text, "postern_logins_total{result=\"success\"}"), 11);
    assert_int_equal(sample(text, "postern_logins_total{result=\"failure\"}"), 4);
    assert_int_equal(sample(text, "postern_logins_total{result=\"throttled\"}"), 2);
    assert_int_equal(sample(text, "postern_login_lockouts_total"), 1);
    assert_int_equal(sample(text, "postern_login_locked"), 3);
    free(text);
}

static void test_metrics__proto_names(void **state)
{
    assert_string_equal(gw_proto_name(GW_PROTO_SSH), "ssh");
    assert_string_equal(gw_proto_name(GW_PROTO_RDP), "rdp");
    assert_string_equal(gw_proto_name(GW_PROTO_TUNNEL), "tunnel");
    assert_string_equal(gw_proto_name(GW_PROTO_COUNT), "unknown");
    assert_string_equal(gw_proto_name((gw_proto)-1), "unknown");
}

/* The helpers' own contract: a series is matched whole, so code="1" is
 * never read from the code="10" line. */
static void test_metrics__sample_matches_exact_series(void **state)
{
    const char *text = "# HELP a_total x\n# TYPE a_total counter\n"
                       "a_total{k=\"1\"} 5\na_total{k=\"10\"} 7\n";
    check_exposition(text);
    assert_int_equal(sample(text, "a_total{k=\"1\"}"), 5);
    assert_int_equal(sample(text, "a_total{k=\"10\"}"), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics__init_zeroes_and_stamps),
        cmocka_unit_test(test_metrics__render_has_families),
        cmocka_unit_test(test_metrics__render_is_valid_exposition),
        cmocka_unit_test(test_metrics__counts_by_status),
        cmocka_unit_test(test_metrics__every_counted_code_rendered),
        cmocka_unit_test(test_metrics__other_bucket),
        cmocka_unit_test(test_metrics__error_kinds_by_class),
        cmocka_unit_test(test_metrics__sessions_bytes_errors),
        cmocka_unit_test(test_metrics__logins),
        cmocka_unit_test(test_metrics__proto_names),
        cmocka_unit_test(test_metrics__sample_matches_exact_series),
    };
    return cmocka_run_group_tests_name("gateway/metrics", tests, NULL, NULL);
}
