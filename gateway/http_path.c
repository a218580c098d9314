#include "gateway/http_path.h"

#include "common/err.h"

#include <stdbool.h>

static bool path_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '/' || c == '.' || c == '-' || c == '_' || c == '~';
}

int gw_http_path_check(const char *path, size_t len)
{
    if (len == 0 || len > GW_PATH_MAX || path[0] != '/')
        return PST_E_PARSE;
    size_t seg_start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || path[i] == '/') {
            size_t seg_len = i - seg_start;
            const char *seg = path + seg_start;
            /* "" is allowed only as the final segment ("/", "/dir/"). */
            if (seg_len == 0 && i != len)
                return PST_E_PARSE;
            if ((seg_len == 1 && seg[0] == '.') ||
                (seg_len == 2 && seg[0] == '.' && seg[1] == '.'))
                return PST_E_PARSE;
            seg_start = i + 1;
            continue;
        }
        if (!path_char_ok((unsigned char)path[i]))
            return PST_E_PARSE;
    }
    return 0;
}
