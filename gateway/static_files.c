#include "gateway/static_files.h"

#include <stdlib.h>
#include <string.h>

static int by_path(const void *key, const void *elem)
{
    return strcmp(key, ((const gw_static_file *)elem)->path);
}

const gw_static_file *gw_static_find(const char *path)
{
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    return bsearch(path, gw_static_files, gw_static_files_count, sizeof(gw_static_file),
                   by_path);
}

static const struct {
    const char *ext;
    const char *type;
} mime_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".map", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".woff2", "font/woff2"},
    {".txt", "text/plain; charset=utf-8"},
    {".wasm", "application/wasm"},
};

const char *gw_mime_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/')) {
        for (size_t i = 0; i < sizeof(mime_types) / sizeof(mime_types[0]); i++)
            if (strcmp(dot, mime_types[i].ext) == 0)
                return mime_types[i].type;
    }
    /* Unknown types are never sniffed into something executable. */
    return "application/octet-stream";
}
