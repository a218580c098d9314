#include "common/log.h"

#include "common/err.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int current_level = LOG_INFO;
static atomic_int out_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level level) { atomic_store(&current_level, (int)level); }
log_level log_get_level(void) { return (log_level)atomic_load(&current_level); }
bool log_enabled(log_level level) { return (int)level >= atomic_load(&current_level); }
void log_set_fd(int fd) { atomic_store(&out_fd, fd); }

const char *log_level_name(log_level level)
{
    if ((int)level < 0 || (int)level > LOG_ERROR)
        return "unknown";
    return level_names[level];
}

int log_level_parse(const char *name, log_level *out)
{
    for (int i = 0; i <= LOG_ERROR; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return PST_E_PARSE;
}

#define LOG_Q_SLOTS 8
#define LOG_Q_MAX 512

const char *log_q(const char *s)
{
    static _Thread_local char slots[LOG_Q_SLOTS][LOG_Q_MAX];
    static _Thread_local unsigned next;
    char *out = slots[next++ % LOG_Q_SLOTS];
    size_t o = 0;
    /* Leave room for an escape sequence, "..." and the closing quote. */
    const size_t limit = LOG_Q_MAX - 10;

    out[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (o >= limit) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

void log_event(log_level level, const char *event, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;

    char line[LOG_LINE_MAX];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);

    int n = snprintf(line, sizeof(line),
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                     log_level_name(level), event);
    size_t len = n < 0 ? 0 : (size_t)n;
    if (fmt && *fmt && len < sizeof(line) - 2) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
        va_end(ap);
        if (n > 0)
            len += (size_t)n;
    }
    /* Cut lines: the message is still one line, marked as cut. */
    if (len >= sizeof(line) - 1) {
        len = sizeof(line) - 5;
        memcpy(line + len, "...", 3);
        len += 3;
    }
    /* Formatted fields may not contain raw newlines; values that could are
     * passed through log_q(). This is the last guard against line forging. */
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    }
    line[len++] = '\n';

    int fd = atomic_load(&out_fd);
    const char *p = line;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w <= 0)
            break; /* Nowhere else to report a failing log. */
        p += w;
        len -= (size_t)w;
    }
}
