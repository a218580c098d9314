/* Tests for recording/asciicast.c: event lines are valid JSON that
 * jansson parses back to the text; UTF-8 cut between calls is joined;
 * ill-formed UTF-8 becomes U+FFFD per maximal subpart; control characters
 * are escaped; times have microseconds; the header carries our fields. */
#include "unit_test.h"

#include "recording/internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define FFFD "\xef\xbf\xbd"

typedef struct {
    char *line;
    rec_utf8_carry carry;
} enc;

static enc *enc_new(void)
{
    enc *e = calloc(1, sizeof(*e));
    e->line = malloc(REC_EVENT_LINE_MAX);
    return e;
}

static void enc_free(enc *e)
{
    free(e->line);
    free(e);
}

/* Encodes one call and returns the decoded string ("" when no line was
 * written); the line must be one JSON array ending in '\n'. */
static char *event_text(enc *e, uint64_t t_us, const void *data, size_t len, bool last)
{
    size_t n = rec_cast_event(e->line, t_us, 'o', data, len, &e->carry, last);
    if (n == 0)
        return strdup("");
    assert_true(n <= REC_EVENT_LINE_MAX);
    assert_int_equal(e->line[n - 1], '\n');
    assert_null(memchr(e->line, '\n', n - 1));
    json_error_t err;
    json_t *j = json_loadb(e->line, n - 1, JSON_ALLOW_NUL, &err);
    if (!j)
        fail_msg("not JSON (%s): %.*s", err.text, (int)n, e->line);
    assert_int_equal(json_array_size(j), 3);
    assert_string_equal(json_string_value(json_array_get(j, 1)), "o");
    json_t *s = json_array_get(j, 2);
    char *out = malloc(json_string_length(s) + 1);
    memcpy(out, json_string_value(s), json_string_length(s) + 1);
    json_decref(j);
    return out;
}

/* All of data in one call, last. */
static char *whole(const char *data, size_t len)
{
    enc *e = enc_new();
    char *s = event_text(e, 0, data, len, true);
    enc_free(e);
    return s;
}

#define assert_repairs(in, want)                                                   \
    do {                                                                           \
        char *got_ = whole(in, sizeof(in) - 1);                                    \
        assert_string_equal(got_, want);                                           \
        free(got_);                                                                \
    } while (0)

static void test_asciicast__plain_text(void **state)
{
    assert_repairs("hello", "hello");
    assert_repairs("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
}

/* Every split point of every length of sequence gives the same text. */
static void test_asciicast__utf8_split_across_calls(void **state)
{
    const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    for (size_t c = 0; c < 3; c++) {
        char in[16];
        int n = snprintf(in, sizeof(in), "a%sb", chars[c]);
        for (int cut = 1; cut < n; cut++) {
            enc *e = enc_new();
            char *one = event_text(e, 0, in, (size_t)cut, false);
            char *two = event_text(e, 1, in + cut, (size_t)(n - cut), false);
            char joined[32];
            snprintf(joined, sizeof(joined), "%s%s", one, two);
            assert_string_equal(joined, in);
            assert_int_equal(e->carry.n, 0);
            free(one);
            free(two);
            enc_free(e);
        }
    }
    /* One byte at a time through a four-byte character. */
    enc *e = enc_new();
    const char *smile = "\xf0\x9f\x98\x80";
    for (int i = 0; i < 3; i++) {
        char *s = event_text(e, 0, smile + i, 1, false);
        assert_string_equal(s, ""); /* nothing to write yet */
        free(s);
    }
    char *s = event_text(e, 0, smile + 3, 1, false);
    assert_string_equal(s, smile);
    free(s);
    enc_free(e);
}

static void test_asciicast__invalid_bytes_become_fffd(void **state)
{
    assert_repairs("\xff", FFFD);
    assert_repairs("a\x80z", "a" FFFD "z");
    assert_repairs("\xc0\xaf", FFFD FFFD);                    /* overlong lead */
    assert_repairs("\xe0\x80\xaf", FFFD FFFD FFFD);           /* overlong 3-byte */
    assert_repairs("\xed\xa0\x80", FFFD FFFD FFFD);           /* a surrogate */
    assert_repairs("\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD);  /* past U+10FFFF */
    assert_repairs("\xe2\x82" "A", FFFD "A");                 /* cut short: one U+FFFD */
    assert_repairs("\xf0\x9f\x98" "\xf0\x9f\x98\x80", FFFD "\xf0\x9f\x98\x80");
    assert_repairs("\xe2\x82", FFFD);                         /* cut at the end, last */
}

/* A sequence broken by the next call's first byte. */
static void test_asciicast__split_then_invalid(void **state)
{
    enc *e = enc_new();
    char *a = event_text(e, 0, "x\xe2\x82", 3, false);
    assert_string_equal(a, "x");
    char *b = event_text(e, 0, "y", 1, false);
    assert_string_equal(b, FFFD "y");
    free(a);
    free(b);
    enc_free(e);
}

static void test_asciicast__controls_escaped(void **state)
{
    const char in[] = "\x1b[31mred\x1b[0m\x07\b\f\t\r\n\"q\"\\\x7f\x01";
    enc *e = enc_new();
    char *s = event_text(e, 0, in, sizeof(in) - 1, true);
    assert_string_equal(s, in);
    free(s);
    /* No raw control byte in the line itself. */
    size_t n = rec_cast_event(e->line, 0, 'o', (const uint8_t *)in, sizeof(in) - 1, &e->carry,
                              true);
    for (size_t i = 0; i + 1 < n; i++)
        assert_true((unsigned char)e->line[i] >= 0x20 && e->line[i] != 0x7f);
    assert_non_null(strstr(e->line, "\\u001b[31m"));
    enc_free(e);
    /* NUL is output like any other byte. */
    e = enc_new();
    n = rec_cast_event(e->line, 0, 'o', (const uint8_t *)"a\0b", 3, &e->carry, true);
    assert_starts_with(e->line, "[0.000000, \"o\", \"a\\u0000b\"]\n");
    enc_free(e);
}

static void test_asciicast__time_has_microseconds(void **state)
{
    enc *e = enc_new();
    size_t n = rec_cast_event(e->line, 1234567, 'o', (const uint8_t *)"x", 1, &e->carry, false);
    assert_true(n > 0);
    assert_starts_with(e->line, "[1.234567, \"o\", \"x\"]\n");
    n = rec_cast_event(e->line, 5, 'r', (const uint8_t *)"80x24", 5, &e->carry, false);
    assert_starts_with(e->line, "[0.000005, \"r\", \"80x24\"]\n");
    enc_free(e);
}

/* The worst case (every byte escaped to six) fits the stated bound. */
static void test_asciicast__worst_case_fits(void **state)
{
    enc *e = enc_new();
    uint8_t *data = calloc(1, REC_EVENT_DATA_MAX);
    e->carry.n = 3;
    memcpy(e->carry.b, "\xf0\x9f\x98", 3);
    size_t n = rec_cast_event(e->line, UINT64_MAX, 'o', data, REC_EVENT_DATA_MAX, &e->carry,
                              true);
    assert_true(n > REC_EVENT_DATA_MAX * 6);
    assert_true(n <= REC_EVENT_LINE_MAX);
    free(data);
    enc_free(e);
}

static void test_asciicast__header(void **state)
{
    rec_meta m = {.session_id = "abc", .user = "al\"ice", .vm = "web01", .source = "::1",
                  .instance = "gw", .protocol = "ssh", .started_ms = 1700000000999,
                  .cols = 120, .rows = 40};
    char *h = rec_cast_header(&m);
    assert_non_null(h);
    size_t n = strlen(h);
    assert_int_equal(h[n - 1], '\n');
    json_t *j = json_loadb(h, n - 1, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "width")), 120);
    assert_int_equal(json_integer_value(json_object_get(j, "height")), 40);
    assert_int_equal(json_integer_value(json_object_get(j, "timestamp")), 1700000000);
    json_t *p = json_object_get(j, "postern");
    assert_string_equal(json_string_value(json_object_get(p, "user")), "al\"ice");
    assert_string_equal(json_string_value(json_object_get(p, "protocol")), "ssh");
    assert_int_equal(json_integer_value(json_object_get(p, "started_ms")), 1700000000999);
    json_decref(j);
    free(h);
}

static void test_asciicast__repair_metadata(void **state)
{
    char *s = rec_utf8_repair("ok\xc3\xa9\xff\xe2\x82");
    assert_string_equal(s, "ok\xc3\xa9" FFFD FFFD);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_asciicast__plain_text),
        cmocka_unit_test(test_asciicast__utf8_split_across_calls),
        cmocka_unit_test(test_asciicast__invalid_bytes_become_fffd),
        cmocka_unit_test(test_asciicast__split_then_invalid),
        cmocka_unit_test(test_asciicast__controls_escaped),
        cmocka_unit_test(test_asciicast__time_has_microseconds),
        cmocka_unit_test(test_asciicast__worst_case_fits),
        cmocka_unit_test(test_asciicast__header),
        cmocka_unit_test(test_asciicast__repair_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
