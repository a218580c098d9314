/* Finding, describing, listing and sweeping recordings: walks of
 * <state_dir>/recordings/YYYY/MM/DD, newest day first.
 *
 * Only names of the exact shape are looked at (4-digit year, 2-digit month
 * and day that exist, "<id>.cast"), every directory below recordings/ is
 * opened with O_NOFOLLOW and every file checked with lstat semantics, so
 * neither a stray file nor a planted symlink leads the walk (or a delete)
 * outside the tree. recordings/ itself may be a symlink: operators put
 * recordings on another disk that way. */
#include "recording/internal.h"

#include "common/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Called for each day folder in range, newest first: 0 to go on, 1 to
 * stop, or a negative code (which stops the walk and is returned). */
typedef int (*day_fn)(void *ctx, int dayfd, const char *daypath);

typedef struct {
    int64_t from_ms, to_ms; /* 0: unbounded */
    bool prune;             /* remove day, month, year folders left empty */
    day_fn fn;
    void *ctx;
} walk_opts;

static bool day_in_range(const walk_opts *o, int64_t start)
{
    if (o->to_ms && start > o->to_ms)
        return false;
    if (o->from_ms && start + REC_MS_PER_DAY - 1 < o->from_ms)
        return false;
    return true;
}

/* Removes an empty folder; a folder with something left in it stays. */
static void prune(int parent, const char *name)
{
    unlinkat(parent, name, AT_REMOVEDIR);
}

static int walk_month(const walk_opts *o, int mfd, const char *mpath, int y, int mo)
{
    int *days;
    size_t n;
    int rc = rec_dir_numbers(mfd, 2, 1, 31, &days, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!rec_day_valid(y, mo, days[i]) ||
            !day_in_range(o, rec_day_start_ms(y, mo, days[i])))
            continue;
        char name[8], path[4200];
        snprintf(name, sizeof(name), "%02d", days[i]);
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", mpath, name) >= sizeof(path)) {
            rc = -ENAMETOOLONG;
            break;
        }
        int dfd = rec_open_dir_at(mfd, name);
        if (dfd < 0)
            continue; /* vanished or replaced meanwhile */
        rc = o->fn(o->ctx, dfd, path);
        close(dfd);
        if (o->prune)
            prune(mfd, name);
    }
    free(days);
    return rc;
}

static int walk(const char *state_dir, const walk_opts *o)
{
    char top[4200];
    if ((size_t)snprintf(top, sizeof(top), "%s/recordings", state_dir) >= sizeof(top))
        return -ENAMETOOLONG;
    int tfd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tfd < 0)
        return errno == ENOENT ? 0 : -errno;
    int *years = NULL;
    size_t ny = 0;
    int rc = rec_dir_numbers(tfd, 4, 0, 9999, &years, &ny);
    for (size_t i = 0; rc == 0 && i < ny; i++) {
        int y = years[i];
        /* A whole year outside the range is skipped without a look. */
        if ((o->to_ms && rec_day_start_ms(y, 1, 1) > o->to_ms) ||
            (o->from_ms && rec_day_start_ms(y + 1, 1, 1) <= o->from_ms))
            continue;
        char yname[8], ypath[4300];
        snprintf(yname, sizeof(yname), "%04d", y);
        snprintf(ypath, sizeof(ypath), "%s/%s", top, yname);
        int yfd = rec_open_dir_at(tfd, yname);
        if (yfd < 0)
            continue;
        int *months = NULL;
        size_t nm = 0;
        rc = rec_dir_numbers(yfd, 2, 1, 12, &months, &nm);
        for (size_t j = 0; rc == 0 && j < nm; j++) {
            char mname[8], mpath[4400];
            snprintf(mname, sizeof(mname), "%02d", months[j]);
            snprintf(mpath, sizeof(mpath), "%s/%s", ypath, mname);
            int mfd = rec_open_dir_at(yfd, mname);
            if (mfd < 0)
                continue;
            rc = walk_month(o, mfd, mpath, y, months[j]);
            close(mfd);
            if (o->prune)
                prune(yfd, mname);
        }
        free(months);
        close(yfd);
        if (o->prune)
            prune(tfd, yname);
    }
    free(years);
    close(tfd);
    return rc < 0 ? rc : 0;
}

/* ---- rec_path_find ------------------------------------------------------ */

typedef struct {
    const char *file;
    char *out;
    size_t outlen;
    int rc;
} find_ctx;

static int find_day(void *vctx, int dayfd, const char *daypath)
{
    find_ctx *c = vctx;
    struct stat sb;
    if (fstatat(dayfd, c->file, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    if ((size_t)snprintf(c->out, c->outlen, "%s/%s", daypath, c->file) >= c->outlen)
        c->rc = -ENAMETOOLONG;
    else
        c->rc = 0;
    return 1;
}

int rec_path_find(const char *state_dir, const char *id, char *out, size_t outlen)
{
    if (!rec_id_valid(id))
        return PST_E_PARSE;
    char file[REC_ID_MAX + sizeof(".cast")];
    snprintf(file, sizeof(file), "%s.cast", id);
    find_ctx c = {file, out, outlen, PST_E_NOTFOUND};
    walk_opts o = {.fn = find_day, .ctx = &c};
    int rc = walk(state_dir, &o);
    return rc != 0 ? rc : c.rc;
}

/* ---- rec_info_read ------------------------------------------------------- */

/* Copies src into dst (size n), cut at a character boundary if need be. */
static void copy_text(char *dst, size_t n, const char *src)
{
    size_t len = strlen(src);
    if (len >= n) {
        len = n - 1;
        while (len > 0 && ((uint8_t)src[len] & 0xC0) == 0x80)
            len--; /* do not end inside a UTF-8 sequence */
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void info_strings(rec_info *out, json_t *pm)
{
    struct {
        const char *key;
        char *dst;
        size_t n;
    } f[] = {
        {"user", out->user, sizeof(out->user)},
        {"vm", out->vm, sizeof(out->vm)},
        {"source", out->source, sizeof(out->source)},
        {"instance", out->instance, sizeof(out->instance)},
        {"protocol", out->protocol, sizeof(out->protocol)},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        const char *s = json_string_value(json_object_get(pm, f[i].key));
        if (s)
            copy_text(f[i].dst, f[i].n, s);
    }
}

/* The first line of fd, at most REC_HEADER_MAX bytes, parsed. */
static int read_header(int fd, json_t **out)
{
    *out = NULL;
    char *buf = malloc(REC_HEADER_MAX);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    char *nl = NULL;
    while (!nl && len < REC_HEADER_MAX) {
        ssize_t r = read(fd, buf + len, REC_HEADER_MAX - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        nl = memchr(buf + len, '\n', (size_t)r);
        len += (size_t)r;
    }
    int rc = PST_E_PARSE;
    if (nl) {
        json_t *h = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
        if (json_is_object(h) && json_integer_value(json_object_get(h, "version")) == 2) {
            *out = h;
            rc = 0;
        } else {
            json_decref(h);
        }
    }
    free(buf);
    return rc;
}

int rec_info_read(const char *cast_path, rec_info *out)
{
    memset(out, 0, sizeof(*out));
    const char *slash = strrchr(cast_path, '/');
    if (!rec_cast_name_parse(slash ? slash + 1 : cast_path, out->id))
        return PST_E_PARSE;
    if (strlen(cast_path) >= sizeof(out->path))
        return -ENAMETOOLONG;
    memcpy(out->path, cast_path, strlen(cast_path) + 1);

    int fd = rec_open_regular(cast_path, &out->size);
    if (fd < 0)
        return fd;
    json_t *h = NULL;
    int rc = read_header(fd, &h);
    close(fd);
    if (rc == 0) {
        json_t *pm = json_object_get(h, "postern");
        json_t *started = json_object_get(pm, "started_ms");
        if (json_is_integer(started))
            out->started_ms = json_integer_value(started);
        else
            out->started_ms = json_integer_value(json_object_get(h, "timestamp")) * 1000;
        info_strings(out, pm);
        json_decref(h);
    }

    char sigpath[sizeof(out->path) + 8];
    snprintf(sigpath, sizeof(sigpath), "%s.sig", cast_path);
    char *text = NULL;
    size_t len = 0;
    int src = rec_read_small_file(AT_FDCWD, sigpath, REC_MANIFEST_MAX, true, &text, &len, NULL);
    if (src != -ENOENT) {
        out->signed_ = true;
        rec_manifest m;
        char why[128];
        /* Unverified: a listing shows what the manifest claims; trust is
         * rec_verify_file's business. */
        if (src == 0 && rec_manifest_parse(text, len, &m, why, sizeof(why)) == 0) {
            out->ended_ms = m.ended_ms;
            rec_manifest_free(&m);
        }
    }
    free(text);
    return rc;
}

/* ---- rec_list ------------------------------------------------------------ */

typedef struct {
    rec_info *v;
    size_t n, max;
    int rc;
} list_ctx;

static int newest_first(const void *a, const void *b)
{
    const rec_info *x = a, *y = b;
    if (x->started_ms != y->started_ms)
        return x->started_ms < y->started_ms ? 1 : -1;
    return strcmp(y->id, x->id);
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* The "<id>.cast" names in a day folder (regular files only), malloc'd. */
static int day_casts(int dayfd, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    DIR *d;
    int drc = rec_dir_stream(dayfd, &d);
    if (drc != 0)
        return drc;
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char id[REC_ID_MAX + 1];
        struct stat sb;
        if (!rec_cast_name_parse(e->d_name, id) ||
            fstatat(dayfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            char **nv = realloc(v, ncap * sizeof(*nv));
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        if (!(v[cnt] = strdup(e->d_name))) {
            rc = -ENOMEM;
            break;
        }
        cnt++;
    }
    closedir(d);
    if (rc != 0) {
        free_names(v, cnt);
        return rc;
    }
    *names = v;
    *n = cnt;
    return 0;
}

static int list_day(void *vctx, int dayfd, const char *daypath)
{
    list_ctx *c = vctx;
    char **names;
    size_t n;
    int rc = day_casts(dayfd, &names, &n);
    if (rc != 0)
        return rc;
    rec_info *day = n ? calloc(n, sizeof(*day)) : NULL;
    if (n && !day) {
        free_names(names, n);
        return -ENOMEM;
    }
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
        char path[sizeof(day->path)];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", daypath, names[i]) >= sizeof(path))
            continue;
        /* A recording whose header cannot be read is still listed, with
         * what is known (id, path, size): hiding it would hide tampering. */
        int irc = rec_info_read(path, &day[got]);
        if (irc == 0 || irc == PST_E_PARSE)
            got++;
    }
    free_names(names, n);
    if (got)
        qsort(day, got, sizeof(*day), newest_first);
    for (size_t i = 0; i < got && c->n < c->max; i++)
        c->v[c->n++] = day[i];
    free(day);
    return c->n == c->max ? 1 : 0;
}

int rec_list(const char *state_dir, int64_t from_ms, int64_t to_ms, size_t max, rec_info **out,
             size_t *count)
{
    *out = NULL;
    *count = 0;
    if (max == 0)
        return 0;
    /* Grown as days are read would be tidier, but max is the caller's
     * page size (small) and this keeps list_day simple. */
    list_ctx c = {calloc(max, sizeof(rec_info)), 0, max, 0};
    if (!c.v)
        return -ENOMEM;
    walk_opts o = {.from_ms = from_ms, .to_ms = to_ms, .fn = list_day, .ctx = &c};
    int rc = walk(state_dir, &o);
    if (rc != 0 || c.n == 0) {
        free(c.v);
        return rc;
    }
    *out = c.v;
    *count = c.n;
    return 0;
}

/* ---- rec_sweep ----------------------------------------------------------- */

typedef struct {
    int64_t cutoff_ms; /* day folders before this day go */
    void (*on_deleted)(void *ud, const rec_info *info);
    void *ud;
    int rc; /* the first failure; the sweep goes on past it */
} sweep_ctx;

static void sweep_leftovers(sweep_ctx *c, int dayfd)
{
    DIR *d;
    if (rec_dir_stream(dayfd, &d) != 0)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        /* Manifests whose recording is gone, and temporary manifests a
         * crash left: in a day this old nothing is still writing them. */
        size_t n = strlen(e->d_name);
        char id[REC_ID_MAX + 1], base[NAME_MAX + 1];
        struct stat sb;
        bool sig = n > 4 && strcmp(e->d_name + n - 4, ".sig") == 0;
        bool tmp = n > 8 && strcmp(e->d_name + n - 8, ".sig.tmp") == 0;
        if (!sig && !tmp)
            continue;
        memcpy(base, e->d_name, n - (sig ? 4 : 8));
        base[n - (sig ? 4 : 8)] = '\0';
        if (!rec_cast_name_parse(base, id))
            continue;
        if (sig && fstatat(dayfd, base, &sb, AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        if (unlinkat(dayfd, e->d_name, 0) != 0 && errno != ENOENT && c->rc == 0)
            c->rc = -errno;
    }
    closedir(d);
}

static int sweep_day(void *vctx, int dayfd, const char *daypath)
{
    sweep_ctx *c = vctx;
    char **names;
    size_t n;
    int rc = day_casts(dayfd, &names, &n);
    if (rc != 0) {
        if (c->rc == 0)
            c->rc = rc;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char sig[NAME_MAX + 1], path[sizeof(((rec_info *)0)->path)];
        struct stat sb;
        snprintf(sig, sizeof(sig), "%s.sig", names[i]);
        bool is_signed = fstatat(dayfd, sig, &sb, AT_SYMLINK_NOFOLLOW) == 0;
        /* An unsigned recording written to lately is a session still
         * running (one that began days ago): not ours to delete. */
        if (!is_signed && fstatat(dayfd, names[i], &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            (int64_t)sb.st_mtime * 1000 >= c->cutoff_ms)
            continue;
        rec_info info;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", daypath, names[i]) >= sizeof(path) ||
            (rec_info_read(path, &info) != 0 && info.id[0] == '\0')) {
            memset(&info, 0, sizeof(info));
            rec_cast_name_parse(names[i], info.id);
        }
        if (unlinkat(dayfd, names[i], 0) != 0) {
            if (errno != ENOENT && c->rc == 0)
                c->rc = -errno;
            continue;
        }
        if (unlinkat(dayfd, sig, 0) != 0 && errno != ENOENT && c->rc == 0)
            c->rc = -errno;
        if (c->on_deleted)
            c->on_deleted(c->ud, &info);
    }
    free_names(names, n);
    sweep_leftovers(c, dayfd);
    return 0;
}

int rec_sweep(const char *state_dir, int retention_days, int64_t now_ms,
              void (*on_deleted)(void *ud, const rec_info *info), void *ud)
{
    if (retention_days < 1)
        return -EINVAL;
    int y, m, d;
    rec_day_of(now_ms, &y, &m, &d);
    sweep_ctx c = {rec_day_start_ms(y, m, d) - (int64_t)retention_days * REC_MS_PER_DAY,
                   on_deleted, ud, 0};
    /* to_ms is inclusive: the last millisecond before the cutoff day. */
    walk_opts o = {.to_ms = c.cutoff_ms - 1, .prune = true, .fn = sweep_day, .ctx = &c};
    if (o.to_ms <= 0)
        return 0; /* nothing can be that old */
    int rc = walk(state_dir, &o);
    return rc != 0 ? rc : c.rc;
}
