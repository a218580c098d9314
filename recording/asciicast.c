/* The asciicast v2 encoder: event lines and the header line.
 *
 * Terminal output is arbitrary bytes, while a JSON string must be valid
 * UTF-8: sequences are checked against Unicode's table of well-formed
 * UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF), and an
 * ill-formed "maximal subpart" becomes one U+FFFD, as the Unicode standard
 * recommends and as terminals (and Python's decoder) do. A sequence cut
 * at the end of one output call is held back and joined to the next, so a
 * character split across two reads of the SSH channel survives whole.
 *
 * Control characters are escaped (\n, \u001b, ...): Python's json module,
 * which asciinema uses, refuses them raw. */
#include "recording/internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t replacement[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */

/* The length of the sequence lead starts (0: it starts none) and the
 * range its second byte must fall in (Unicode 15, table 3-7). */
static int seq_len(uint8_t lead, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        return 2;
    if (lead == 0xE0) {
        *lo = 0xA0; /* below: overlong */
        return 3;
    }
    if (lead == 0xED) {
        *hi = 0x9F; /* above: surrogates */
        return 3;
    }
    if (lead >= 0xE1 && lead <= 0xEF)
        return 3;
    if (lead == 0xF0) {
        *lo = 0x90; /* below: overlong */
        return 4;
    }
    if (lead >= 0xF1 && lead <= 0xF3)
        return 4;
    if (lead == 0xF4) {
        *hi = 0x8F; /* above: past U+10FFFF */
        return 4;
    }
    return 0; /* 0x80-0xC1 (continuation, overlong lead), 0xF5-0xFF */
}

/* The bytes to walk: a carried tail followed by new data. */
typedef struct {
    const uint8_t *carry;
    size_t ncarry;
    const uint8_t *data;
    size_t len;
} source;

static uint8_t at(const source *s, size_t i)
{
    return i < s->ncarry ? s->carry[i] : s->data[i - s->ncarry];
}

/* Where repaired text goes: raw, or escaped for a JSON string. */
typedef struct {
    char *p;
    bool json;
} sink;

static void put(sink *k, const uint8_t *b, size_t n)
{
    if (n > 1 || !k->json) {
        memcpy(k->p, b, n);
        k->p += n;
        return;
    }
    static const char hexd[] = "0123456789abcdef";
    uint8_t c = b[0];
    char esc = 0;
    switch (c) {
    case '"': esc = '"'; break;
    case '\\': esc = '\\'; break;
    case '\n': esc = 'n'; break;
    case '\r': esc = 'r'; break;
    case '\t': esc = 't'; break;
    case '\b': esc = 'b'; break;
    case '\f': esc = 'f'; break;
    default: break;
    }
    if (esc) {
        *k->p++ = '\\';
        *k->p++ = esc;
    } else if (c < 0x20 || c == 0x7f) {
        memcpy(k->p, "\\u00", 4);
        k->p[4] = hexd[c >> 4];
        k->p[5] = hexd[c & 15];
        k->p += 6;
    } else {
        *k->p++ = (char)c;
    }
}

/* Writes s as repaired text into k; returns how many bytes were used. The
 * rest (fewer than 4: the start of a sequence that may still complete)
 * is left for the next call unless last. */
/* Printable ASCII other than '"' and '\\': copied as they are, which is
 * most of what terminals print. */
static bool plain(uint8_t c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; }

static size_t walk(const source *s, bool last, sink *k)
{
    size_t total = s->ncarry + s->len, i = 0;
    while (i < total) {
        /* Fast path: a run of plain bytes in the new data, in one copy
         * (per-byte work was most of the writer's time on bulk output). */
        if (i >= s->ncarry && plain(s->data[i - s->ncarry])) {
            const uint8_t *run = s->data + (i - s->ncarry);
            size_t n = 1, left = total - i;
            while (n < left && plain(run[n]))
                n++;
            memcpy(k->p, run, n);
            k->p += n;
            i += n;
            continue;
        }
        uint8_t seq[4], lo, hi;
        seq[0] = at(s, i);
        int n = seq_len(seq[0], &lo, &hi);
        if (n == 1) {
            put(k, seq, 1);
            i++;
            continue;
        }
        if (n == 0) {
            put(k, replacement, sizeof(replacement));
            i++;
            continue;
        }
        int got = 1;
        for (; got < n && i + (size_t)got < total; got++) {
            uint8_t c = at(s, i + (size_t)got);
            if (c < (got == 1 ? lo : 0x80) || c > (got == 1 ? hi : 0xBF))
                break;
            seq[got] = c;
        }
        if (got == n) {
            put(k, seq, (size_t)n);
            i += (size_t)n;
            continue;
        }
        if (i + (size_t)got == total && !last)
            break; /* a sequence the next call may complete */
        /* The maximal subpart so far is one error; the byte that broke
         * it starts afresh. */
        put(k, replacement, sizeof(replacement));
        i += (size_t)got;
    }
    return i;
}

size_t rec_cast_event(char *out, uint64_t t_us, char type, const uint8_t *data, size_t len,
                      rec_utf8_carry *carry, bool last)
{
    if (len > REC_EVENT_DATA_MAX)
        len = REC_EVENT_DATA_MAX; /* callers split; never overrun out */
    int head = snprintf(out, 64, "[%llu.%06llu, \"%c\", \"", (unsigned long long)(t_us / 1000000),
                        (unsigned long long)(t_us % 1000000), type);
    if (head < 0 || head >= 64)
        return 0;
    source s = {carry->b, carry->n, data, len};
    sink k = {out + head, true};
    size_t used = walk(&s, last, &k);

    /* Keep the unused tail (it may include carried bytes) for next time. */
    uint8_t tail[sizeof(carry->b)];
    size_t ntail = s.ncarry + s.len - used;
    for (size_t j = 0; j < ntail; j++)
        tail[j] = at(&s, used + j);
    memcpy(carry->b, tail, ntail);
    carry->n = (uint8_t)ntail;

    if (k.p == out + head)
        return 0;
    memcpy(k.p, "\"]\n", 3);
    return (size_t)(k.p + 3 - out);
}

char *rec_utf8_repair(const char *str)
{
    size_t n = strlen(str);
    /* Each byte becomes at most the three bytes of U+FFFD. */
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    source s = {NULL, 0, (const uint8_t *)str, n};
    sink k = {out, false};
    walk(&s, true, &k);
    *k.p = '\0';
    return out;
}

char *rec_cast_header(const rec_meta *m)
{
    json_t *h = json_pack("{s:i, s:i, s:i, s:I, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:b}}",
                          "version", 2, "width", m->cols, "height", m->rows, "timestamp",
                          (json_int_t)(m->started_ms / 1000), "postern", "session_id",
                          m->session_id, "user", m->user, "vm", m->vm, "source", m->source,
                          "instance", m->instance, "protocol", m->protocol, "started_ms",
                          (json_int_t)m->started_ms, "record_input", (int)m->record_input);
    if (!h)
        return NULL;
    char *s = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *line = malloc(n + 2);
    if (line) {
        memcpy(line, s, n);
        memcpy(line + n, "\n", 2);
    }
    free(s);
    return line;
}
