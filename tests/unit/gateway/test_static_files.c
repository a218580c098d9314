/* Tests for gateway/static_files.c and the generated table it searches. */
#include "unit_test.h"

#include "gateway/http_path.h"
#include "gateway/static_files.h"

#include <ctype.h>
#include <string.h>

static void test_static_files__root_is_index(void **state)
{
    const gw_static_file *index = gw_static_find("/index.html");
    assert_non_null(index);
    assert_string_equal(index->path, "/index.html");
    assert_ptr_equal(gw_static_find("/"), index);
    assert_non_null(index->data);
    assert_true(index->len > 0);
}

static void test_static_files__unknown_is_null(void **state)
{
    static const char *const missing[] = {
        "/nope.html", "",           "index.html",  "/index.htm",  "/index.html/",
        "/index.htmlx", "//index.html", "/INDEX.HTML", "/./index.html", "/web/index.html",
        "/a",          "/~",         "/\x7f",
    };
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        if (gw_static_find(missing[i]) != NULL)
            fail_msg("gw_static_find(\"%s\") found a file", missing[i]);
}

static void test_static_files__table_sorted_and_unique(void **state)
{
    assert_true(gw_static_files_count > 0);
    for (size_t i = 1; i < gw_static_files_count; i++)
        if (strcmp(gw_static_files[i - 1].path, gw_static_files[i].path) >= 0)
            fail_msg("table not strictly sorted: \"%s\" then \"%s\"",
                     gw_static_files[i - 1].path, gw_static_files[i].path);
}

/* Every entry is reachable through the lookup, under a path that the
 * request gate would let through. */
static void test_static_files__every_entry_found(void **state)
{
    for (size_t i = 0; i < gw_static_files_count; i++) {
        const gw_static_file *f = &gw_static_files[i];
        assert_non_null(f->path);
        assert_int_equal(f->path[0], '/');
        if (gw_http_path_check(f->path, strlen(f->path)) != 0)
            fail_msg("embedded \"%s\" can never pass gw_http_path_check", f->path);
        assert_ptr_equal(gw_static_find(f->path), f);
        assert_true(f->data != NULL || f->len == 0);
    }
}

/* A strong validator: a quoted string of 16 hex digits, as embed writes. */
static void test_static_files__etags_quoted(void **state)
{
    for (size_t i = 0; i < gw_static_files_count; i++) {
        const char *e = gw_static_files[i].etag;
        assert_non_null(e);
        assert_int_equal(strlen(e), 18);
        assert_int_equal(e[0], '"');
        assert_int_equal(e[17], '"');
        for (int k = 1; k < 17; k++)
            assert_true(isxdigit((unsigned char)e[k]));
    }
}

static void test_static_files__mime_types(void **state)
{
    static const struct {
        const char *path, *type;
    } cases[] = {
        {"/index.html", "text/html; charset=utf-8"},
        {"/app.js", "text/javascript; charset=utf-8"},
        {"/mod.mjs", "text/javascript; charset=utf-8"},
        {"/app.css", "text/css; charset=utf-8"},
        {"/data.json", "application/json"},
        {"/app.js.map", "application/json"},
        {"/favicon.svg", "image/svg+xml"},
        {"/logo.png", "image/png"},
        {"/favicon.ico", "image/x-icon"},
        {"/font.woff2", "font/woff2"},
        {"/.well-known/security.txt", "text/plain; charset=utf-8"},
        {"/codec.wasm", "application/wasm"},
        {"/vendor/xterm/xterm.css", "text/css; charset=utf-8"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(gw_mime_type(cases[i].path), cases[i].type);
}

/* Unknown or missing extensions are never guessed into something a
 * browser would run. */
static void test_static_files__mime_unknown(void **state)
{
    static const char *const paths[] = {
        "/",          "/README",      "/file.",     "/a.exe",   "/a.htm",
        "/a.html.bak", "/dir.html/file", "/a.tar.gz", "",        "/.js/x",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        assert_string_equal(gw_mime_type(paths[i]), "application/octet-stream");
}

/* The embedded files themselves: the console pages get a real type. */
static void test_static_files__embedded_index_is_html(void **state)
{
    const gw_static_file *f = gw_static_find("/");
    assert_non_null(f);
    assert_string_equal(gw_mime_type(f->path), "text/html; charset=utf-8");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_files__root_is_index),
        cmocka_unit_test(test_static_files__unknown_is_null),
        cmocka_unit_test(test_static_files__table_sorted_and_unique),
        cmocka_unit_test(test_static_files__every_entry_found),
        cmocka_unit_test(test_static_files__etags_quoted),
        cmocka_unit_test(test_static_files__mime_types),
        cmocka_unit_test(test_static_files__mime_unknown),
        cmocka_unit_test(test_static_files__embedded_index_is_html),
    };
    return cmocka_run_group_tests_name("gateway/static_files", tests, NULL, NULL);
}
