/* Request-path checking: the one gate every URL passes before routing.
 *
 * libwebsockets has already percent-decoded the path once and folded "/../"
 * segments. We accept only the plain characters our own URLs use, so any
 * leftover encoding (a double-encoded "%252e" arrives here as "%2e"),
 * backslash, NUL, control character, dot segment or empty segment is
 * refused instead of being interpreted. Pure function; any thread.
 */
#ifndef PST_GATEWAY_HTTP_PATH_H
#define PST_GATEWAY_HTTP_PATH_H

#include <stddef.h>

#define GW_PATH_MAX 1024

/* 0 when path[0..len) is an acceptable absolute path, PST_E_PARSE when not. */
int gw_http_path_check(const char *path, size_t len);

#endif
