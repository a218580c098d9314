/* Tests for gateway/http_path.c: the gate every request path passes. */
#include "unit_test.h"

#include "common/err.h"
#include "gateway/http_path.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int check(const char *path) { return gw_http_path_check(path, strlen(path)); }

#define assert_path_ok(p)                                                          \
    do {                                                                           \
        if (check(p) != 0)                                                         \
            fail_msg("path \"%s\" refused, expected accepted", p);                 \
    } while (0)

#define assert_path_refused(p)                                                     \
    do {                                                                           \
        if (check(p) != PST_E_PARSE)                                               \
            fail_msg("path \"%s\" accepted, expected PST_E_PARSE", p);             \
    } while (0)

static void test_http_path__plain_paths(void **state)
{
    assert_path_ok("/");
    assert_path_ok("/index.html");
    assert_path_ok("/app.js");
    assert_path_ok("/api/vms");
    assert_path_ok("/api/jit/requests/42/approve");
    assert_path_ok("/ws/ssh");
    assert_path_ok("/.well-known/security.txt");
    assert_path_ok("/~user/a-b_c.d");
    assert_path_ok("/ABCxyz0129");
}

static void test_http_path__trailing_slash(void **state)
{
    assert_path_ok("/dir/");
    assert_path_ok("/a/b/c/");
    assert_path_refused("/dir//");
}

static void test_http_path__must_be_absolute(void **state)
{
    assert_path_refused("index.html");
    assert_path_refused("");
    assert_path_refused(".");
    assert_path_refused("a/");
    assert_path_refused("*");
    assert_int_equal(gw_http_path_check("/", 0), PST_E_PARSE);
}

static void test_http_path__dot_segments(void **state)
{
    assert_path_refused("/.");
    assert_path_refused("/..");
    assert_path_refused("/./");
    assert_path_refused("/../");
    assert_path_refused("/../etc/passwd");
    assert_path_refused("/a/../b");
    assert_path_refused("/a/./b");
    assert_path_refused("/a/..");
    assert_path_refused("/a/.");
    assert_path_refused("/a/b/../../..");
    /* Dots inside a name are plain characters to an exact-match table. */
    assert_path_ok("/.hidden");
    assert_path_ok("/..x");
    assert_path_ok("/x..");
    assert_path_ok("/a.b.c");
}

static void test_http_path__empty_segments(void **state)
{
    assert_path_refused("//");
    assert_path_refused("//etc/passwd");
    assert_path_refused("/a//b");
    assert_path_refused("/a///");
}

static void test_http_path__encoding_left_over(void **state)
{
    assert_path_refused("/%2e%2e/etc/passwd"); /* double-encoded "../" */
    assert_path_refused("/a%2fb");
    assert_path_refused("/%00");
    assert_path_refused("/index.html%");
    assert_path_refused("/a+b");
}

static void test_http_path__backslash_and_specials(void **state)
{
    assert_path_refused("/..\\..\\windows");
    assert_path_refused("/a\\b");
    assert_path_refused("/a b");
    assert_path_refused("/a?x=1");
    assert_path_refused("/a#frag");
    assert_path_refused("/a;b");
    assert_path_refused("/a:b");
    assert_path_refused("/a\"b");
    assert_path_refused("/a<b>");
    assert_path_refused("/caf\xc3\xa9");
}

static void test_http_path__control_chars(void **state)
{
    char p[4] = {'/', 'a', 0, 0};
    for (int ch = 0; ch < 0x21; ch++) {
        p[2] = (char)ch;
        if (gw_http_path_check(p, 3) != PST_E_PARSE)
            fail_msg("path with byte 0x%02x accepted", ch);
    }
    p[2] = 0x7f;
    assert_int_equal(gw_http_path_check(p, 3), PST_E_PARSE);
    p[2] = (char)0xff;
    assert_int_equal(gw_http_path_check(p, 3), PST_E_PARSE);
}

/* The length is authoritative: an embedded NUL is a byte like any other,
 * and bytes past len are never read. */
static void test_http_path__length_is_authoritative(void **state)
{
    assert_int_equal(gw_http_path_check("/a\0b", 4), PST_E_PARSE);
    assert_int_equal(gw_http_path_check("/ok/../x", 3), 0);
    assert_int_equal(gw_http_path_check("/ok//", 3), 0);
    /* Exactly sized heap copy: ASan reports any read past the end. */
    char *heap = malloc(6);
    assert_non_null(heap);
    memcpy(heap, "/a/b/", 5);
    heap[5] = 'X';
    assert_int_equal(gw_http_path_check(heap, 5), 0);
    free(heap);
}

static void test_http_path__length_limit(void **state)
{
    char *p = malloc(GW_PATH_MAX + 2);
    assert_non_null(p);
    memset(p, 'a', GW_PATH_MAX + 1);
    p[0] = '/';
    assert_int_equal(gw_http_path_check(p, GW_PATH_MAX), 0);
    assert_int_equal(gw_http_path_check(p, GW_PATH_MAX + 1), PST_E_PARSE);
    free(p);
}

/* Every byte value alone in a segment: only the documented set passes. */
static void test_http_path__allowed_bytes(void **state)
{
    for (int ch = 0; ch < 256; ch++) {
        char p[3] = {'/', 'x', (char)ch};
        bool want = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
                    ch == '~' || ch == '/';
        int rc = gw_http_path_check(p, 3);
        if (want && rc != 0)
            fail_msg("\"/x\\x%02x\" refused", ch);
        if (!want && rc != PST_E_PARSE)
            fail_msg("\"/x\\x%02x\" accepted", ch);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_path__plain_paths),
        cmocka_unit_test(test_http_path__trailing_slash),
        cmocka_unit_test(test_http_path__must_be_absolute),
        cmocka_unit_test(test_http_path__dot_segments),
        cmocka_unit_test(test_http_path__empty_segments),
        cmocka_unit_test(test_http_path__encoding_left_over),
        cmocka_unit_test(test_http_path__backslash_and_specials),
        cmocka_unit_test(test_http_path__control_chars),
        cmocka_unit_test(test_http_path__length_is_authoritative),
        cmocka_unit_test(test_http_path__length_limit),
        cmocka_unit_test(test_http_path__allowed_bytes),
    };
    return cmocka_run_group_tests_name("gateway/http_path", tests, NULL, NULL);
}
