/* The audit log: JSON lines appended to one file, each carrying the
 * SHA-256 of the line before it ("prev"), so that editing or removing a
 * line breaks the chain at that point and `postern audit verify` names it.
 *
 * Each event is written with a single write(2) on an O_APPEND descriptor
 * before the action it records is acknowledged: a crash of the process
 * loses nothing already acknowledged. fdatasync runs off the caller's
 * thread (auth_audit_sync, driven by a timer) so the loop never waits for
 * the disk. */
#include "auth/auth.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define AUDIT_LINE_MAX (64u << 10) /* an event line longer than this is cut */
#define HEX_LEN (SHA256_DIGEST_LENGTH * 2)

struct auth_audit {
    int fd;
    pthread_mutex_t lock; /* guards seq, prev and the write order */
    uint64_t seq;
    char prev[HEX_LEN + 1];
    int dirty; /* written since the last sync */
    char *path;
    int to_syslog; /* also send each line to syslog (LOG_AUTHPRIV) */
};

static void sha256_hex(const void *data, size_t len, char out[HEX_LEN + 1])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + i * 2, 3, "%02x", md[i]);
}

/* Reads the last complete line of fd (up to AUDIT_LINE_MAX) into a new
 * buffer. *line is NULL for an empty file. */
static int read_last_line(int fd, char **line, size_t *len)
{
    struct stat st;
    *line = NULL;
    *len = 0;
    if (fstat(fd, &st) != 0)
        return -errno;
    if (st.st_size == 0)
        return 0;
    off_t want = st.st_size < (off_t)AUDIT_LINE_MAX + 2 ? st.st_size : (off_t)AUDIT_LINE_MAX + 2;
    char *buf = malloc((size_t)want + 1);
    if (!buf)
        return -ENOMEM;
    ssize_t n = pread(fd, buf, (size_t)want, st.st_size - want);
    if (n != (ssize_t)want) {
        free(buf);
        return n < 0 ? -errno : -EIO;
    }
    size_t end = (size_t)n;
    if (buf[end - 1] != '\n') {
        free(buf);
        return PST_E_PARSE; /* a torn last line: refuse to chain onto it */
    }
    end--;
    size_t start = end;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    if (start == 0 && want < st.st_size) {
        free(buf);
        return -EMSGSIZE;
    }
    memmove(buf, buf + start, end - start);
    buf[end - start] = '\0';
    *line = buf;
    *len = end - start;
    return 0;
}

int auth_audit_open(const char *path, auth_audit **out, char *err, size_t errlen)
{
    *out = NULL;
    auth_audit *a = calloc(1, sizeof(*a));
    if (!a || !(a->path = strdup(path))) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    int rfd = a->fd >= 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (a->fd < 0 || rfd < 0) {
        int rc = -errno;
        snprintf(err, errlen, "cannot open audit log %s: %s", path, strerror(errno));
        if (a->fd >= 0)
            close(a->fd);
        free(a->path);
        free(a);
        return rc;
    }
    char *last;
    size_t lastlen;
    int rc = read_last_line(rfd, &last, &lastlen);
    close(rfd);
    if (rc != 0) {
        snprintf(err, errlen, "audit log %s: cannot resume its hash chain: %s%s", path,
                 pst_strerror(rc),
                 rc == PST_E_PARSE ? " (the last line is incomplete; run postern audit "
                                     "verify and move the file aside)"
                                   : "");
        close(a->fd);
        free(a->path);
        free(a);
        return rc;
    }
    if (last) {
        sha256_hex(last, lastlen, a->prev);
        json_t *obj = json_loadb(last, lastlen, 0, NULL);
        json_t *seq = obj ? json_object_get(obj, "seq") : NULL;
        a->seq = json_is_integer(seq) ? (uint64_t)json_integer_value(seq) : 0;
        json_decref(obj);
        free(last);
    } else {
        memset(a->prev, '0', HEX_LEN);
        a->prev[HEX_LEN] = '\0';
    }
    pthread_mutex_init(&a->lock, NULL);
    *out = a;
    return 0;
}

static void iso_time(char *out, size_t n)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t len = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    int ms = (int)(tv.tv_usec / 1000) % 1000;
    if (len && len + 6 <= n)
        snprintf(out + len, n - len, ".%03dZ", ms);
}

int auth_audit_write(auth_audit *a, const char *event, json_t *fields)
{
    char ts[48];
    int rc = 0;
    iso_time(ts, sizeof(ts));
    json_t *obj = json_object();
    if (!obj)
        return -ENOMEM;

    pthread_mutex_lock(&a->lock);
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "seq", json_integer((json_int_t)(a->seq + 1)));
    json_object_set_new(obj, "event", json_string(event));
    if (fields) {
        const char *k;
        json_t *v;
        json_object_foreach(fields, k, v) {
            /* The envelope's keys are ours; a field cannot forge them. */
            if (strcmp(k, "ts") && strcmp(k, "seq") && strcmp(k, "event") && strcmp(k, "prev"))
                json_object_set(obj, k, v);
        }
    }
    json_object_set_new(obj, "prev", json_string(a->prev));
    /* ensure_ascii: a field's bytes can never make a line break or an
     * invalid UTF-8 sequence in the file. */
    char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(obj);
    if (!line) {
        rc = -ENOMEM;
        goto out;
    }
    size_t len = strlen(line);
    if (len > AUDIT_LINE_MAX) {
        free(line);
        rc = -EMSGSIZE;
        goto out;
    }
    char hash[HEX_LEN + 1];
    sha256_hex(line, len, hash);
    line[len] = '\n'; /* json_dumps leaves room: we overwrite its NUL */
    ssize_t w = write(a->fd, line, len + 1);
    if (w != (ssize_t)(len + 1)) {
        /* A short write leaves a torn line; the chain stays on the last
         * good one and the failure goes up to refuse the action. */
        rc = w < 0 ? -errno : -EIO;
        free(line);
        goto out;
    }
    memcpy(a->prev, hash, sizeof(hash));
    a->seq++;
    a->dirty = 1;
    if (a->to_syslog)
        syslog(LOG_AUTHPRIV | LOG_NOTICE, "%.*s", (int)len, line);
    free(line);
out:
    pthread_mutex_unlock(&a->lock);
    if (rc)
        log_event(LOG_ERROR, "audit.write.failed", "event=%s err=%s", event, pst_strerror(rc));
    return rc;
}

void auth_audit_set_syslog(auth_audit *a, bool on)
{
    pthread_mutex_lock(&a->lock);
    if (on && !a->to_syslog)
        openlog("posternd", LOG_PID | LOG_NDELAY, LOG_AUTHPRIV);
    a->to_syslog = on;
    pthread_mutex_unlock(&a->lock);
}

int auth_audit_sync(auth_audit *a)
{
    pthread_mutex_lock(&a->lock);
    int dirty = a->dirty;
    a->dirty = 0;
    pthread_mutex_unlock(&a->lock);
    if (dirty && fdatasync(a->fd) != 0)
        return -errno;
    return 0;
}

void auth_audit_close(auth_audit *a)
{
    if (!a)
        return;
    fdatasync(a->fd);
    close(a->fd);
    pthread_mutex_destroy(&a->lock);
    free(a->path);
    free(a);
}

int auth_audit_verify(FILE *in, auth_audit_report *rep)
{
    char prev[HEX_LEN + 1];
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t expect_seq = 0;
    memset(rep, 0, sizeof(*rep));
    memset(prev, '0', HEX_LEN);
    prev[HEX_LEN] = '\0';

    while ((n = getline(&line, &cap, in)) > 0) {
        rep->lines++;
        if (line[n - 1] != '\n') {
            rep->bad_line = rep->lines;
            snprintf(rep->reason, sizeof(rep->reason), "line %zu is incomplete", rep->lines);
            break;
        }
        line[--n] = '\0';
        json_t *obj = json_loadb(line, (size_t)n, 0, NULL);
        json_t *p = obj ? json_object_get(obj, "prev") : NULL;
        json_t *s = obj ? json_object_get(obj, "seq") : NULL;
        if (!json_is_string(p) || !json_is_integer(s)) {
            rep->bad_line = rep->lines;
            snprintf(rep->reason, sizeof(rep->reason),
                     "line %zu is not an audit event (no prev/seq)", rep->lines);
        } else if (strcmp(json_string_value(p), prev) != 0) {
            rep->bad_line = rep->lines;
            snprintf(rep->reason, sizeof(rep->reason),
                     "line %zu does not follow line %zu: a line was edited, removed or "
                     "inserted there", rep->lines, rep->lines - 1);
        } else if (expect_seq && (uint64_t)json_integer_value(s) != expect_seq) {
            rep->bad_line = rep->lines;
            snprintf(rep->reason, sizeof(rep->reason), "line %zu has seq %lld, expected %llu",
                     rep->lines, (long long)json_integer_value(s),
                     (unsigned long long)expect_seq);
        }
        if (json_is_integer(s))
            expect_seq = (uint64_t)json_integer_value(s) + 1;
        json_decref(obj);
        if (rep->bad_line)
            break;
        sha256_hex(line, (size_t)n, prev);
    }
    free(line);
    if (ferror(in)) {
        snprintf(rep->reason, sizeof(rep->reason), "read error");
        return -EIO;
    }
    memcpy(rep->last_hash, prev, sizeof(prev));
    return rep->bad_line ? PST_E_DENIED : 0;
}
