/* Postern error codes.
 *
 * Every function that can fail returns 0 or a negative code: either a
 * negative errno value (libuv's UV_E* codes are the same values and pass
 * through unchanged) or one of the PST_E_* codes below, which sit far below
 * any errno so the two never collide. pst_strerror() names both.
 */
#ifndef PST_COMMON_ERR_H
#define PST_COMMON_ERR_H

#define PST_ERRORS(X)                                                   \
    X(PST_E_CONFIG,     -10001, "invalid configuration")                \
    X(PST_E_INCOMPLETE, -10002, "incomplete data")                      \
    X(PST_E_PARSE,      -10003, "malformed input")                      \
    X(PST_E_TLS,        -10004, "TLS setup failed")                     \
    X(PST_E_CRYPTO,     -10005, "cryptographic operation failed")       \
    X(PST_E_NOTFOUND,   -10006, "not found")                            \
    X(PST_E_DENIED,     -10007, "permission denied")                    \
    X(PST_E_LIMIT,      -10008, "limit reached")                        \
    X(PST_E_LWS,        -10009, "libwebsockets failed")                 \
    X(PST_E_STATE,      -10010, "invalid state")

enum {
#define PST_ERR_ENUM(name, value, text) name = value,
    PST_ERRORS(PST_ERR_ENUM)
#undef PST_ERR_ENUM
};

/* A static string naming err (a PST_E_* code or a negative errno). */
const char *pst_strerror(int err);

#endif
