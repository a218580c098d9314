#include "common/err.h"

#include <string.h>

const char *pst_strerror(int err)
{
    switch (err) {
#define PST_ERR_CASE(name, value, text) case name: return text;
        PST_ERRORS(PST_ERR_CASE)
#undef PST_ERR_CASE
    default:
        break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}
