/* rec_search_text: does a recording's output contain some text?
 *
 * What a person saw is the output stream without the terminal's control
 * language: escape sequences (CSI "ESC [ ... final", OSC "ESC ] ... BEL or
 * ST", DCS/SOS/PM/APC strings, two- and three-byte ESC sequences, and
 * their 8-bit C1 forms) and control characters are dropped, except line
 * feed and tab; carriage returns vanish so "a\r\nb" reads "a\nb". Matching
 * runs over that text as a stream (Knuth-Morris-Pratt), across event
 * boundaries, folding ASCII case only.
 *
 * Memory is bounded whatever the file: one line buffer (our event lines
 * are at most REC_EVENT_LINE_MAX; a longer line is not ours and is
 * skipped) and the needle's table. */
#include "recording/internal.h"

#include "common/err.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEARCH_BUF (REC_EVENT_LINE_MAX + 1)
/* An OSC or DCS string never closed would hide all text after it. Real
 * ones (titles, hyperlinks, sixel images aside) are short: give up on one
 * after this many bytes and read text again. */
#define STRING_SEQ_MAX (64u << 10)

typedef enum {
    S_TEXT,
    S_C2,       /* 0xC2 seen: a C1 control may follow, in UTF-8 */
    S_ESC,      /* ESC seen */
    S_ESC_INTER, /* ESC and intermediate bytes: waiting for the final one */
    S_CSI,
    S_OSC,     /* ends with BEL or ST */
    S_STR,     /* DCS, SOS, PM, APC: end with ST */
    S_STR_ESC, /* ESC inside a string: '\' makes ST */
} strip_state;

typedef struct {
    strip_state st;
    size_t inside; /* bytes inside the current OSC/DCS string */
    /* the matcher */
    const uint8_t *needle; /* ASCII-folded */
    size_t n;
    size_t *fail;
    size_t q; /* needle bytes matched so far */
    bool found;
} searcher;

static uint8_t fold(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c; }

static void match(searcher *s, uint8_t c)
{
    c = fold(c);
    while (s->q > 0 && s->needle[s->q] != c)
        s->q = s->fail[s->q - 1];
    if (s->needle[s->q] == c)
        s->q++;
    if (s->q == s->n) {
        s->found = true;
        s->q = s->fail[s->q - 1];
    }
}

static void text_byte(searcher *s, uint8_t c)
{
    if (c == 0x1B)
        s->st = S_ESC;
    else if (c == 0xC2)
        s->st = S_C2;
    else if (c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7F))
        match(s, c);
    /* other controls (CR, BEL, BS, ...) draw nothing */
}

static void start_string(searcher *s, strip_state st)
{
    s->st = st;
    s->inside = 0;
}

static void strip(searcher *s, uint8_t c)
{
    switch (s->st) {
    case S_TEXT:
        text_byte(s, c);
        break;
    case S_C2:
        s->st = S_TEXT;
        if (c == 0x9B)
            s->st = S_CSI;
        else if (c == 0x9D)
            start_string(s, S_OSC);
        else if (c == 0x90 || c == 0x98 || c == 0x9E || c == 0x9F)
            start_string(s, S_STR);
        else if (c < 0x80 || c > 0x9F) {
            match(s, 0xC2); /* an ordinary character after all */
            text_byte(s, c);
        }
        break;
    case S_ESC:
        if (c == '[')
            s->st = S_CSI;
        else if (c == ']')
            start_string(s, S_OSC);
        else if (c == 'P' || c == 'X' || c == '^' || c == '_')
            start_string(s, S_STR);
        else if (c >= 0x20 && c <= 0x2F)
            s->st = S_ESC_INTER;
        else if (c != 0x1B)
            s->st = S_TEXT;
        break;
    case S_ESC_INTER:
        if (c < 0x20 || c > 0x2F)
            s->st = S_TEXT;
        break;
    case S_CSI:
        if (c == 0x1B)
            s->st = S_ESC;
        else if ((c >= 0x40 && c <= 0x7E) || c >= 0x80)
            s->st = S_TEXT; /* the final byte, or garbage that ends it */
        break;
    case S_OSC:
    case S_STR:
        if (c == 0x1B)
            s->st = S_STR_ESC;
        else if ((c == 0x07 && s->st == S_OSC) || ++s->inside > STRING_SEQ_MAX)
            s->st = S_TEXT;
        break;
    case S_STR_ESC:
        if (c == '\\') {
            s->st = S_TEXT;
        } else {
            s->st = S_ESC; /* a new sequence cuts the string short */
            strip(s, c);
        }
        break;
    }
}

/* One event line: output events feed the stripper, others are skipped,
 * and so is anything that is not an event (a cut last line, garbage). */
static void line(searcher *s, const char *p, size_t len)
{
    /* NUL is legal terminal output, written as \u0000. */
    json_t *ev = json_loadb(p, len, JSON_ALLOW_NUL, NULL);
    const char *type = json_string_value(json_array_get(ev, 1));
    json_t *data = json_array_get(ev, 2);
    if (json_is_array(ev) && json_array_size(ev) == 3 && type && strcmp(type, "o") == 0 &&
        json_is_string(data)) {
        const uint8_t *b = (const uint8_t *)json_string_value(data);
        size_t n = json_string_length(data);
        for (size_t i = 0; i < n && !s->found; i++)
            strip(s, b[i]);
    }
    json_decref(ev);
}

int rec_search_text(const char *cast_path, const char *needle, bool *found)
{
    *found = false;
    size_t n = needle ? strlen(needle) : 0;
    if (n == 0 || n > REC_SEARCH_MAX)
        return PST_E_PARSE;
    uint8_t folded[REC_SEARCH_MAX];
    size_t fail[REC_SEARCH_MAX];
    for (size_t i = 0; i < n; i++)
        folded[i] = fold((uint8_t)needle[i]);
    /* KMP: fail[i] = length of the longest proper border of needle[0..i]. */
    fail[0] = 0;
    for (size_t i = 1, k = 0; i < n; i++) {
        while (k > 0 && folded[i] != folded[k])
            k = fail[k - 1];
        if (folded[i] == folded[k])
            k++;
        fail[i] = k;
    }
    searcher s = {.st = S_TEXT, .needle = folded, .n = n, .fail = fail};

    uint64_t size;
    int fd = rec_open_regular(cast_path, &size);
    if (fd < 0)
        return fd;
    char *buf = malloc(SEARCH_BUF);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    int rc = 0;
    size_t have = 0;
    bool header = true, skipping = false;
    while (!s.found) {
        ssize_t r = read(fd, buf + have, SEARCH_BUF - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            break;
        }
        have += (size_t)r;
        size_t start = 0;
        char *nl;
        while (!s.found && (nl = memchr(buf + start, '\n', have - start)) != NULL) {
            size_t len = (size_t)(nl - (buf + start));
            if (!header && !skipping)
                line(&s, buf + start, len);
            header = skipping = false;
            start += len + 1;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
        if (have == SEARCH_BUF) {
            skipping = true; /* longer than any line we write */
            have = 0;
        }
        if (r == 0) {
            if (have > 0 && !header && !skipping)
                line(&s, buf, have);
            break;
        }
    }
    free(buf);
    close(fd);
    *found = s.found;
    return rc;
}
