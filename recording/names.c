/* Names under <state_dir>/recordings: session ids, "<id>.cast", and the
 * YYYY/MM/DD date folders, with the civil-date arithmetic they need (UTC,
 * proleptic Gregorian; no timegm, whose time_t may be 32 bits and which
 * consults the environment); the state directory read back from a
 * recording's path; and the bounded read of the small files that sit
 * beside recordings (manifests, keys). */
#include "recording/internal.h"

#include "common/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool rec_id_valid(const char *id)
{
    size_t n = 0;
    if (!id)
        return false;
    for (; id[n]; n++) {
        if (n == REC_ID_MAX)
            return false;
        if (!((id[n] >= '0' && id[n] <= '9') || (id[n] >= 'a' && id[n] <= 'f')))
            return false;
    }
    return n > 0;
}

bool rec_cast_name_parse(const char *name, char id[REC_ID_MAX + 1])
{
    size_t n = strlen(name);
    if (n <= 5 || n - 5 > REC_ID_MAX || strcmp(name + n - 5, ".cast") != 0)
        return false;
    char tmp[REC_ID_MAX + 1];
    memcpy(tmp, name, n - 5);
    tmp[n - 5] = '\0';
    if (!rec_id_valid(tmp))
        return false;
    memcpy(id, tmp, n - 4);
    return true;
}

/* Days since 1970-01-01 of a civil date, and back (H. Hinnant's
 * algorithms: exact for every int year we can meet). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

void rec_day_of(int64_t ms, int *year, int *month, int *day)
{
    int64_t days = ms / REC_MS_PER_DAY - (ms % REC_MS_PER_DAY < 0);
    int64_t y;
    civil_from_days(days, &y, month, day);
    *year = (int)y;
}

int64_t rec_day_start_ms(int year, int month, int day)
{
    return days_from_civil(year, month, day) * REC_MS_PER_DAY;
}

bool rec_day_valid(int year, int month, int day)
{
    if (month < 1 || month > 12 || day < 1 || day > 31)
        return false;
    int y2, m2, d2;
    rec_day_of(rec_day_start_ms(year, month, day), &y2, &m2, &d2);
    return y2 == year && m2 == month && d2 == day;
}

int rec_open_dir_at(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static int cmp_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

int rec_dir_stream(int dirfd, DIR **out)
{
    /* fdopendir takes the descriptor over: give it a copy. */
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    *out = fdopendir(fd);
    if (!*out) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return 0;
}

int rec_open_regular(const char *path, uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    *size = (uint64_t)sb.st_size;
    return fd;
}

int rec_dir_numbers(int dirfd, int width, int lo, int hi, int **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d;
    int drc = rec_dir_stream(dirfd, &d);
    if (drc != 0)
        return drc;
    int *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        int val = 0, i = 0;
        for (; i < width && s[i] >= '0' && s[i] <= '9'; i++)
            val = val * 10 + (s[i] - '0');
        if (i != width || s[i] != '\0' || val < lo || val > hi)
            continue;
        struct stat sb;
        if (fstatat(dirfd, s, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(sb.st_mode))
            continue;
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            int *nv = realloc(v, ncap * sizeof(*nv));
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        v[cnt++] = val;
        errno = 0;
    }
    if (rc == 0 && errno != 0)
        rc = -errno;
    closedir(d);
    if (rc != 0) {
        free(v);
        return rc;
    }
    if (cnt)
        qsort(v, cnt, sizeof(*v), cmp_desc);
    *out = v;
    *n = cnt;
    return 0;
}

void rec_hex(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int rec_unhex(const char *in, size_t inlen, uint8_t *out, size_t len)
{
    if (inlen != 2 * len)
        return PST_E_PARSE;
    for (size_t i = 0; i < len; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return PST_E_PARSE;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int rec_read_small_file(int dirfd, const char *path, size_t max, bool nofollow, char **out,
                        size_t *outlen, mode_t *mode)
{
    *out = NULL;
    *outlen = 0;
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | (nofollow ? O_NOFOLLOW : 0));
    if (fd < 0)
        return -errno;
    int rc = 0;
    char *buf = NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        rc = -errno;
        goto out;
    }
    /* A FIFO or a device could block or never end. */
    if (!S_ISREG(sb.st_mode)) {
        rc = -EINVAL;
        goto out;
    }
    if ((uint64_t)sb.st_size > max) {
        rc = -EFBIG;
        goto out;
    }
    /* The size may change under us: read at most max + 1 bytes, whatever
     * fstat said, and refuse the file if the extra byte arrives. */
    size_t cap = (size_t)sb.st_size + 1, len = 0;
    buf = malloc(cap + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap > max) {
                rc = -EFBIG;
                goto out;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                rc = -ENOMEM;
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len > max) {
        rc = -EFBIG;
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    if (mode)
        *mode = sb.st_mode;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

int rec_state_dir_of(const char *cast_path, char *out, size_t outlen)
{
    /* From the end: <id>.cast, DD, MM, YYYY, "recordings". */
    static const int widths[] = {0, 2, 2, 4};
    const char *end = cast_path + strlen(cast_path);
    const char *seg_end = end;
    for (int k = 0; k < 5; k++) {
        const char *s = seg_end;
        while (s > cast_path && s[-1] != '/')
            s--;
        size_t len = (size_t)(seg_end - s);
        if (k == 0) {
            char name[NAME_MAX + 1], id[REC_ID_MAX + 1];
            if (len > NAME_MAX)
                return PST_E_PARSE;
            memcpy(name, s, len);
            name[len] = '\0';
            if (!rec_cast_name_parse(name, id))
                return PST_E_PARSE;
        } else if (k < 4) {
            if (len != (size_t)widths[k])
                return PST_E_PARSE;
            for (size_t i = 0; i < len; i++)
                if (s[i] < '0' || s[i] > '9')
                    return PST_E_PARSE;
        } else if (len != strlen("recordings") || memcmp(s, "recordings", len) != 0) {
            return PST_E_PARSE;
        }
        if (s == cast_path && k < 4)
            return PST_E_PARSE; /* the path ran out before "recordings" */
        seg_end = s - (k < 4 ? 1 : 0);
    }
    /* seg_end is where "recordings" starts: the state dir is before it. */
    size_t plen = (size_t)(seg_end - cast_path);
    while (plen > 1 && cast_path[plen - 1] == '/')
        plen--;
    const char *dir = cast_path;
    if (plen == 0) {
        dir = ".";
        plen = 1;
    }
    if (plen >= outlen)
        return -ENAMETOOLONG;
    memcpy(out, dir, plen);
    out[plen] = '\0';
    return 0;
}
