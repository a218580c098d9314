/* `postern tunnel`: TCP over the gateway's /ws/tunnel, one WebSocket per
 * connection (docs/protocol.md), on a libuv loop with a libwebsockets
 * client.
 *
 * --stdio carries this process's stdin/stdout (an ssh ProxyCommand);
 * --listen serves every local connection with a tunnel of its own. Both
 * ways are bounded: a local side that does not read stops the WebSocket
 * (and so the VM), a gateway that does not take bytes stops the local
 * reads. Half-close goes through as {"type":"eof"}. */
#ifndef POSTERN_CLI_TUNNEL_H
#define POSTERN_CLI_TUNNEL_H

#include "cli/https.h"
#include "cli/trust.h"

#include <stdint.h>

typedef struct cli_tunnel_opts {
    const cli_gateway *gateway;
    cli_trust *trust;            /* borrowed; must outlive the run */
    const char *token;           /* borrowed */
    int64_t token_expires;       /* 0: unknown; tells "expired" from "revoked" */
    const char *vm;
    int port;
    /* Exactly one of: stdio, or listen ("HOST:PORT"; port 0 picks one). */
    bool stdio;
    const char *listen;
    /* With listen: run this program (argv, NULL-terminated) once the
     * listener is up, with every "{port}" in its arguments replaced by the
     * local port, and stop when it exits, returning its exit status. NULL:
     * serve until interrupted. */
    char *const *spawn_argv;
    bool quiet;                  /* no "listening on" / per-connection lines */
} cli_tunnel_opts;

/* Runs until the tunnel (stdio) or the listener (listen) ends. Returns an
 * exit code of cli/exit_codes.h (for spawn: the program's status). Errors
 * are printed on stderr, in words. */
int cli_tunnel_run(const cli_tunnel_opts *o);

#endif
