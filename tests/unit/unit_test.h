/* Shared helpers for the cmocka unit tests. Header-only; include it instead
 * of <cmocka.h>, which needs its four prerequisites first. */
#ifndef PST_TESTS_UNIT_TEST_H
#define PST_TESTS_UNIT_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Makes a fresh directory "$TMPDIR/postern-ut-TAG-XXXXXX" into out (size n).
 * Returns out, or NULL when it cannot. The test removes it. */
static inline char *unit_tmpdir(char *out, size_t n, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    if ((size_t)snprintf(out, n, "%s/postern-ut-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag) >= n)
        return NULL;
    return mkdtemp(out);
}

/* cmocka has no string-containment assertions; these print both strings
 * on failure, which is what one needs to read an error-message test. */
#define assert_contains(hay, needle)                                               \
    do {                                                                           \
        const char *hay_ = (hay), *needle_ = (needle);                             \
        if (!hay_ || !strstr(hay_, needle_))                                       \
            fail_msg("\"%s\" does not contain \"%s\"", hay_ ? hay_ : "(null)",     \
                     needle_);                                                     \
    } while (0)

#define assert_not_contains(hay, needle)                                           \
    do {                                                                           \
        const char *hay_ = (hay), *needle_ = (needle);                             \
        if (!hay_ || strstr(hay_, needle_))                                        \
            fail_msg("\"%s\" contains \"%s\"", hay_ ? hay_ : "(null)", needle_);   \
    } while (0)

#define assert_starts_with(s, prefix)                                              \
    do {                                                                           \
        const char *s_ = (s), *prefix_ = (prefix);                                 \
        if (!s_ || strncmp(s_, prefix_, strlen(prefix_)) != 0)                     \
            fail_msg("\"%s\" does not start with \"%s\"", s_ ? s_ : "(null)",      \
                     prefix_);                                                     \
    } while (0)

#endif
