/* Fuzz target: gw_http_path_check() on arbitrary bytes.
 *
 * Whatever it accepts must be safe to route (gateway/http_path.h): an
 * absolute path of plain characters, with no leftover encoding, backslash,
 * control or non-ASCII byte, dot segment or empty segment (a trailing "/"
 * is the one empty segment allowed). And the plain paths our own URLs use
 * must not be refused. A violated property aborts, which both libFuzzer and
 * the replay driver report as a crash.
 */
#include "common/err.h"
#include "gateway/http_path.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void violated(const char *what, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_http_path: %s: \"", what);
    for (size_t i = 0; i < size && i < 200; i++) {
        if (data[i] >= 0x20 && data[i] < 0x7f && data[i] != '"' && data[i] != '\\')
            fputc(data[i], stderr);
        else
            fprintf(stderr, "\\x%02x", data[i]);
    }
    fprintf(stderr, "\"%s (%zu bytes)\n", size > 200 ? "..." : "", size);
    abort();
}

/* A path of letters, digits, '-', '_' and '.' segments: what our routes
 * and embedded files look like. */
static bool plain_path(const uint8_t *p, size_t n)
{
    if (n == 0 || n > GW_PATH_MAX || p[0] != '/')
        return false;
    size_t seg = 1;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || p[i] == '/') {
            size_t len = i - seg;
            if (len == 0 && i != n)
                return false;
            if ((len == 1 && p[seg] == '.') || (len == 2 && p[seg] == '.' && p[seg + 1] == '.'))
                return false;
            seg = i + 1;
            continue;
        }
        uint8_t c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int rc = gw_http_path_check((const char *)data, size);
    if (rc != 0 && rc != PST_E_PARSE)
        violated("returned neither 0 nor PST_E_PARSE", data, size);
    if (rc != 0) {
        if (plain_path(data, size))
            violated("refused a plain path", data, size);
        return 0;
    }

    if (size == 0 || size > GW_PATH_MAX)
        violated("accepted a bad length", data, size);
    if (data[0] != '/')
        violated("accepted a relative path", data, size);
    for (size_t i = 0; i < size; i++) {
        uint8_t c = data[i];
        if (c < 0x21 || c >= 0x7f)
            violated("accepted a control, space or non-ASCII byte", data, size);
        if (c == '%')
            violated("accepted '%' (leftover encoding)", data, size);
        if (c == '\\')
            violated("accepted a backslash", data, size);
        if (c == '?' || c == '#' || c == ';')
            violated("accepted a query, fragment or parameter delimiter", data, size);
        if (c == '/' && i + 1 < size && data[i + 1] == '/')
            violated("accepted \"//\" (an empty segment)", data, size);
    }
    /* Dot segments: "." or ".." between slashes or at the end. A longer
     * run of dots, or dots inside a name ("a..b"), is a plain name. */
    size_t seg = 1;
    for (size_t i = 1; i <= size; i++) {
        if (i == size || data[i] == '/') {
            size_t len = i - seg;
            if ((len == 1 && data[seg] == '.') ||
                (len == 2 && data[seg] == '.' && data[seg + 1] == '.'))
                violated("accepted a dot segment", data, size);
            seg = i + 1;
        }
    }
    return 0;
}
