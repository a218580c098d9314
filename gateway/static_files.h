/* The browser console's files, embedded in the binary at build time.
 *
 * Lookup is by exact path in a sorted table: a client's path never reaches
 * the filesystem. The data is static and read-only; nothing to free.
 */
#ifndef PST_GATEWAY_STATIC_FILES_H
#define PST_GATEWAY_STATIC_FILES_H

#include <stddef.h>

typedef struct {
    const char *path; /* "/index.html" */
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted, as sent in the ETag header */
} gw_static_file;

/* Defined in the generated web_assets.c, sorted by path. */
extern const gw_static_file gw_static_files[];
extern const size_t gw_static_files_count;

/* The file for a checked request path ("/" means "/index.html"), or NULL. */
const gw_static_file *gw_static_find(const char *path);

/* The Content-Type for a path, from its extension. */
const char *gw_mime_type(const char *path);

#endif
