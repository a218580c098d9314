/* Structured logging: one event per line on stderr.
 *
 *   ts=2026-11-23T10:41:00.123Z level=info event=session.open sid=... vm=web01
 *
 * The event name is a stable dotted identifier that operators grep and alert
 * on; fields are key=value. Any value that did not come from our own code
 * (paths, user names, error text, anything a client sent) must be wrapped in
 * log_q(), which quotes it and escapes control characters so that a hostile
 * value cannot forge a second log line. Secrets are never passed at all.
 *
 * Thread-safe: a line is assembled in a local buffer and written with one
 * write(2), so lines from threads never interleave.
 */
#ifndef PST_COMMON_LOG_H
#define PST_COMMON_LOG_H

#include <stdbool.h>

typedef enum {
    LOG_DEBUG = 0,
    LOG_INFO = 1,
    LOG_WARN = 2,
    LOG_ERROR = 3,
} log_level;

/* Longest line written; longer lines are cut and end with "...". */
#define LOG_LINE_MAX 2048

void log_set_level(log_level level);
log_level log_get_level(void);
bool log_enabled(log_level level);

/* Parses "debug" | "info" | "warn" | "error". 0 or PST_E_PARSE. */
int log_level_parse(const char *name, log_level *out);
const char *log_level_name(log_level level);

/* Writes one event line if level is enabled. fmt holds the fields. */
void log_event(log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns s as a double-quoted, escaped value, valid until this thread's
 * eighth following log_q() call; long values are cut. NULL gives "". */
const char *log_q(const char *s);

/* Where lines go; default stderr. Tests point it at a pipe. */
void log_set_fd(int fd);

#endif
