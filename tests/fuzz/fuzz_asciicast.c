/* Fuzz target: the asciicast event encoder (recording/asciicast.c) on
 * arbitrary terminal output.
 *
 * The first byte picks a piece size; the rest is the output, encoded once
 * whole and once in pieces of that size (cutting UTF-8 sequences at every
 * possible place). Every line written must be one JSON array [time, "o",
 * string] ending in its only '\n', within REC_EVENT_LINE_MAX, that jansson
 * parses (so its string is valid UTF-8); the pieces must decode to the
 * same text as the whole; and when the input was valid UTF-8 the text must
 * be the input itself. */
#include "recording/internal.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TEXT_MAX (REC_EVENT_DATA_MAX * 3 + 16) /* each byte: at most U+FFFD */

static void violated(const char *what, const char *line, size_t n)
{
    fprintf(stderr, "fuzz_asciicast: %s: %.*s\n", what, (int)(n > 300 ? 300 : n), line);
    abort();
}

/* Appends one event line's text to out; checks the line. */
static void take(const char *line, size_t n, uint64_t t_us, char *out, size_t *outlen)
{
    if (n == 0)
        return;
    if (n > REC_EVENT_LINE_MAX || line[n - 1] != '\n' || memchr(line, '\n', n - 1))
        violated("not one bounded line", line, n);
    json_error_t err;
    json_t *j = json_loadb(line, n - 1, JSON_ALLOW_NUL, &err);
    if (!j)
        violated("not JSON", line, n);
    json_t *t = json_array_get(j, 0), *s = json_array_get(j, 2);
    const char *type = json_string_value(json_array_get(j, 1));
    if (!json_is_array(j) || json_array_size(j) != 3 || !json_is_real(t) || !type ||
        strcmp(type, "o") != 0 || !json_is_string(s))
        violated("not [time, \"o\", string]", line, n);
    double want = (double)t_us / 1e6;
    if (json_real_value(t) < want - 1e-6 || json_real_value(t) > want + 1e-6)
        violated("wrong time", line, n);
    size_t len = json_string_length(s);
    if (len == 0)
        violated("an empty event", line, n);
    if (*outlen + len > TEXT_MAX)
        violated("text longer than three bytes per input byte", line, n);
    memcpy(out + *outlen, json_string_value(s), len);
    *outlen += len;
    json_decref(j);
}

/* Independent of the encoder's table: decode, then range-check. */
static bool valid_utf8(const uint8_t *p, size_t n)
{
    static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + j] & 0x3F);
        }
        if (cp < min[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t piece = (size_t)data[0] % 17 + 1;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (n > REC_EVENT_DATA_MAX)
        n = REC_EVENT_DATA_MAX;

    char *line = malloc(REC_EVENT_LINE_MAX);
    char *whole = malloc(TEXT_MAX), *pieces = malloc(TEXT_MAX);
    if (!line || !whole || !pieces)
        abort();
    size_t wlen = 0, plen = 0;

    rec_utf8_carry carry = {0};
    take(line, rec_cast_event(line, 7, 'o', body, n, &carry, true), 7, whole, &wlen);
    if (carry.n != 0)
        violated("bytes left after the last event", "", 0);

    memset(&carry, 0, sizeof(carry));
    for (size_t off = 0; off < n; off += piece) {
        size_t len = n - off < piece ? n - off : piece;
        uint64_t t = 1000000 + off;
        take(line, rec_cast_event(line, t, 'o', body + off, len, &carry, false), t, pieces,
             &plen);
        if (carry.n > 3)
            violated("carry overflow", "", 0);
    }
    take(line, rec_cast_event(line, 2, 'o', NULL, 0, &carry, true), 2, pieces, &plen);

    if (wlen != plen || memcmp(whole, pieces, wlen) != 0)
        violated("pieces decode differently from the whole", whole, wlen);
    if (valid_utf8(body, n) && (wlen != n || memcmp(whole, body, n) != 0))
        violated("valid UTF-8 did not survive unchanged", whole, wlen);
    free(line);
    free(whole);
    free(pieces);
    return 0;
}
