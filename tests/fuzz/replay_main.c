/* A stand-in for libFuzzer's driver, so that fuzz targets run as ordinary
 * tests in every build (gcc included):
 *
 *   fuzz_NAME_replay [-n MUTATIONS] [-s SEED] [-m MAXLEN] [-d DICT] PATH...
 *
 * Each PATH is a file or a directory of files (not recursive). Every input
 * runs through LLVMFuzzerTestOneInput once as is; then MUTATIONS inputs
 * (default 20000) are derived from them by a seeded pseudo-random mutator
 * (bit flips, byte edits, deletions, duplications, splices, tokens from an
 * optional libFuzzer-style dictionary) and run too. The same seed and corpus
 * give the same inputs, so a failure reproduces exactly.
 *
 * There is no coverage feedback: this is a regression net that runs in
 * seconds, not a replacement for real fuzzing (see README.md). Each input
 * is passed in a heap buffer of exactly its size, so ASan reports any read
 * past the end. When an input crashes the target, it is first saved to
 * ./crash-replay-<program>; run the program on that file to reproduce.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define REPLAY_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define REPLAY_SANITIZER 1
#endif
#ifdef REPLAY_SANITIZER
#include <sanitizer/common_interface_defs.h>
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define DEFAULT_MUTATIONS 20000
#define DEFAULT_MAX_LEN 4096
#define MAX_FILE_BYTES (1u << 20) /* corpus files are small; a big one is a mistake */
#define MAX_TOKENS 512
#define MAX_TOKEN_LEN 128

typedef struct {
    uint8_t *data;
    size_t len;
    char *name;
} unit;

typedef struct {
    unit *v;
    size_t n, cap;
} unit_list;

/* ---- the input being run, for the crash handlers ------------------------------ */

static const uint8_t *volatile current_data;
static volatile size_t current_len;
static char crash_path[512];

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w <= 0)
            return;
        c += w;
        n -= (size_t)w;
    }
}

/* Async-signal-safe: open, write, close. */
static void save_current_input(void)
{
    const uint8_t *d = current_data;
    if (!d) /* not inside the target: nothing to save */
        return;
    int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    write_all(fd, d, current_len);
    close(fd);
    static const char msg1[] = "replay: the failing input was saved to ";
    write_all(2, msg1, sizeof(msg1) - 1);
    write_all(2, crash_path, strlen(crash_path));
    write_all(2, "\n", 1);
}

static void on_fatal_signal(int sig)
{
    save_current_input();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_crash_handlers(const char *argv0)
{
    const char *base = strrchr(argv0, '/');
    base = base ? base + 1 : argv0;
    snprintf(crash_path, sizeof(crash_path), "crash-replay-%s", base);
#ifdef REPLAY_SANITIZER
    /* The sanitizers report and exit on their own; let them, and save the
     * input from their death callback. Only abort() (a target's assertion)
     * is left to us. */
    __sanitizer_set_death_callback(save_current_input);
    signal(SIGABRT, on_fatal_signal);
#else
    static const int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], on_fatal_signal);
#endif
}

/* ---- deterministic randomness (splitmix64) --------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform enough in [0, n); n > 0. */
static size_t rng_below(size_t n) { return (size_t)(rng_next() % n); }

/* ---- corpus and dictionary ------------------------------------------------------- */

static int read_file(const char *path, unit *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = malloc(MAX_FILE_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_FILE_BYTES + 1, f) : 0;
    int bad = !buf || ferror(f) || n > MAX_FILE_BYTES;
    fclose(f);
    if (bad) {
        fprintf(stderr, "replay: cannot read %s (or larger than %u bytes)\n", path,
                MAX_FILE_BYTES);
        free(buf);
        return -1;
    }
    out->data = buf;
    out->len = n;
    out->name = strdup(path);
    return out->name ? 0 : -1;
}

static int list_add(unit_list *l, unit u)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        unit *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = u;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const unit *)a)->name, ((const unit *)b)->name);
}

static int load_path(const char *path, unit_list *corpus)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        unit u;
        return read_file(path, &u) == 0 ? list_add(corpus, u) : -1;
    }
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t first = corpus->n;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char full[4096];
        snprintf(full, sizeof(full), "%s/%s", path, e->d_name);
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        unit u;
        rc = read_file(full, &u) == 0 ? list_add(corpus, u) : -1;
    }
    closedir(d);
    /* readdir order is the filesystem's: sort so a seed means one sequence. */
    qsort(corpus->v + first, corpus->n - first, sizeof(unit), by_name);
    return rc;
}

typedef struct {
    uint8_t bytes[MAX_TOKEN_LEN];
    size_t len;
} token;

static token tokens[MAX_TOKENS];
static size_t ntokens;

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* libFuzzer's dictionary format: one token per line, [name=]"value", with
 * \\, \" and \xNN escapes; '#' starts a comment line. */
static int load_dict(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "replay: cannot open dictionary %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || *p == '\0')
            continue;
        char *q = strchr(p, '"');
        char *end = strrchr(p, '"');
        if (!q || end == q || ntokens == MAX_TOKENS) {
            fprintf(stderr, "replay: %s:%d: expected [name=]\"value\"\n", path, lineno);
            fclose(f);
            return -1;
        }
        token *t = &tokens[ntokens];
        t->len = 0;
        for (q++; q < end && t->len < MAX_TOKEN_LEN; q++) {
            if (*q == '\\' && q + 1 < end && (q[1] == '\\' || q[1] == '"')) {
                t->bytes[t->len++] = (uint8_t)*++q;
            } else if (*q == '\\' && q + 3 < end && q[1] == 'x' && hexval(q[2]) >= 0 &&
                       hexval(q[3]) >= 0) {
                t->bytes[t->len++] = (uint8_t)(hexval(q[2]) * 16 + hexval(q[3]));
                q += 3;
            } else {
                t->bytes[t->len++] = (uint8_t)*q;
            }
        }
        if (t->len > 0)
            ntokens++;
    }
    fclose(f);
    return 0;
}

/* ---- mutation -------------------------------------------------------------------- */

/* Bytes that tend to matter to text parsers. */
static const uint8_t interesting[] = {0,   '\n', '\r', '\t', ' ', '"', '\\', '/', '.', '%',
                                      ':', ',',  '[',  ']',  '{', '}', '-',  '0', '9', 'e',
                                      0x7f, 0x80, 0xc3, 0xff};

static uint8_t random_byte(void)
{
    if (rng_below(2))
        return interesting[rng_below(sizeof(interesting))];
    return (uint8_t)rng_next();
}

/* Inserts src[0..n) at pos, keeping *len <= max. */
static void insert_bytes(uint8_t *buf, size_t *len, size_t max, size_t pos, const uint8_t *src,
                         size_t n)
{
    if (*len + n > max)
        n = max - *len;
    if (n == 0)
        return;
    memmove(buf + pos + n, buf + pos, *len - pos);
    memcpy(buf + pos, src, n);
    *len += n;
}

static void mutate_once(uint8_t *buf, size_t *len, size_t max, const unit_list *corpus)
{
    size_t n = *len;
    switch (rng_below(11)) {
    case 0: /* flip one bit */
        if (n)
            buf[rng_below(n)] ^= (uint8_t)(1u << rng_below(8));
        break;
    case 1: /* overwrite one byte */
        if (n)
            buf[rng_below(n)] = random_byte();
        break;
    case 2: { /* insert one byte */
        uint8_t b = random_byte();
        insert_bytes(buf, len, max, rng_below(n + 1), &b, 1);
        break;
    }
    case 3: { /* delete a short range */
        if (!n)
            break;
        size_t pos = rng_below(n), del = 1 + rng_below(n - pos < 16 ? n - pos : 16);
        memmove(buf + pos, buf + pos + del, n - pos - del);
        *len -= del;
        break;
    }
    case 4: { /* duplicate a range somewhere else */
        if (!n)
            break;
        size_t from = rng_below(n), cnt = 1 + rng_below(n - from < 64 ? n - from : 64);
        uint8_t tmp[64];
        memcpy(tmp, buf + from, cnt);
        insert_bytes(buf, len, max, rng_below(n + 1), tmp, cnt);
        break;
    }
    case 5: /* nudge a byte (digits become other digits, '.' becomes '/') */
        if (n)
            buf[rng_below(n)] += (uint8_t)(rng_below(2) ? 1 : -1);
        break;
    case 6: /* cut the end */
        if (n)
            *len = rng_below(n);
        break;
    case 7: { /* insert a dictionary token */
        if (!ntokens)
            break;
        const token *t = &tokens[rng_below(ntokens)];
        insert_bytes(buf, len, max, rng_below(n + 1), t->bytes, t->len);
        break;
    }
    case 8: { /* overwrite with a dictionary token */
        if (!ntokens || !n)
            break;
        const token *t = &tokens[rng_below(ntokens)];
        size_t pos = rng_below(n);
        size_t cnt = t->len < n - pos ? t->len : n - pos;
        memcpy(buf + pos, t->bytes, cnt);
        break;
    }
    case 9: { /* splice: our head, another input's tail */
        const unit *o = &corpus->v[rng_below(corpus->n)];
        size_t head = rng_below(n + 1), from = rng_below(o->len + 1);
        size_t tail = o->len - from;
        if (head + tail > max)
            tail = max - head;
        memcpy(buf + head, o->data + from, tail);
        *len = head + tail;
        break;
    }
    case 10: { /* swap two bytes */
        if (n < 2)
            break;
        size_t a = rng_below(n), b = rng_below(n);
        uint8_t t = buf[a];
        buf[a] = buf[b];
        buf[b] = t;
        break;
    }
    }
}

/* ---- running --------------------------------------------------------------------- */

/* Runs one input from an exactly sized heap copy. */
static void run_one(const uint8_t *data, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) {
        fprintf(stderr, "replay: out of memory\n");
        exit(2);
    }
    memcpy(copy, data, len);
    current_data = copy;
    current_len = len;
    LLVMFuzzerTestOneInput(copy, len);
    current_data = NULL;
    current_len = 0;
    free(copy);
}

static void usage(void)
{
    fprintf(stderr, "usage: fuzz_NAME_replay [-n MUTATIONS] [-s SEED] [-m MAXLEN] [-d DICT] "
                    "PATH...\n");
    exit(2);
}

static bool parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return false;
    *out = (size_t)v;
    return true;
}

int main(int argc, char **argv)
{
    size_t mutations = DEFAULT_MUTATIONS, max_len = DEFAULT_MAX_LEN, seed = 1;
    const char *dict = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "n:s:m:d:")) != -1) {
        switch (opt) {
        case 'n':
            if (!parse_size(optarg, &mutations))
                usage();
            break;
        case 's':
            if (!parse_size(optarg, &seed))
                usage();
            break;
        case 'm':
            if (!parse_size(optarg, &max_len) || max_len == 0)
                usage();
            break;
        case 'd':
            dict = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind >= argc)
        usage();

    install_crash_handlers(argv[0]);
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    if (dict && load_dict(dict) != 0)
        return 2;

    unit_list corpus = {0};
    for (int i = optind; i < argc; i++)
        if (load_path(argv[i], &corpus) != 0)
            return 2;
    if (corpus.n == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 2;
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < corpus.n; i++) {
        if (corpus.v[i].len > max_len)
            max_len = corpus.v[i].len;
        run_one(corpus.v[i].data, corpus.v[i].len);
    }

    rng_state = seed;
    uint8_t *buf = malloc(max_len);
    if (!buf)
        return 2;
    for (size_t m = 0; m < mutations; m++) {
        const unit *base = &corpus.v[rng_below(corpus.n)];
        size_t len = base->len;
        memcpy(buf, base->data, len);
        /* Stack a few mutations: single edits rarely leave a parser's
         * well-trodden paths. */
        for (size_t k = 1 + rng_below(4); k > 0; k--)
            mutate_once(buf, &len, max_len, &corpus);
        run_one(buf, len);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);

    fprintf(stderr, "replay: %zu corpus inputs and %zu mutations (seed %zu) ran in %.2f s\n",
            corpus.n, mutations, seed,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    free(buf);
    for (size_t i = 0; i < corpus.n; i++) {
        free(corpus.v[i].data);
        free(corpus.v[i].name);
    }
    free(corpus.v);
    return 0;
}
