/* The gateway's address and its HTTPS API, as the CLI uses them: one
 * blocking request at a time (login, tokens, logout, status), on a TLS
 * connection verified by cli/trust.h. */
#ifndef POSTERN_CLI_HTTPS_H
#define POSTERN_CLI_HTTPS_H

#include "cli/trust.h"

#include <stddef.h>

typedef struct cli_gateway {
    char url[512];      /* as given, without a trailing slash */
    char host[256];     /* without brackets for IPv6 */
    int port;
    char origin[300];   /* "https://host[:port]", sent where a cookie needs it */
} cli_gateway;

/* Parses "https://HOST[:PORT][/]". 0, or -1 with err filled. */
int cli_gateway_parse(const char *url, cli_gateway *g, char *err, size_t errlen);

typedef struct cli_response {
    int status;
    char *body;         /* NUL-terminated; owned, freed by cli_response_free */
    size_t body_len;
    char cookie[512];   /* the postern_session value it set, or "" */
} cli_response;

/* One request. extra_headers: NULL or lines each ending in "\r\n". body:
 * NULL or JSON. Returns 0 (r filled, any status), CLI_TLS when the
 * certificate is refused (t->failure says why), or
 * CLI_GATEWAY_UNREACHABLE; err says why. */
int cli_https_request(const cli_gateway *g, cli_trust *t, const char *method, const char *path,
                      const char *extra_headers, const char *body, cli_response *r, char *err,
                      size_t errlen);

void cli_response_free(cli_response *r);

/* The "error" string of a JSON body, or fallback. */
const char *cli_response_error(const cli_response *r, const char *fallback);

#endif
