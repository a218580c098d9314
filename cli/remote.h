/* The postern commands that talk to a gateway: login, logout, status,
 * tunnel, ssh, rdp. Each takes argv from its own name on (argv[0] is
 * "login", ...) and returns an exit code of cli/exit_codes.h.
 *
 * Common to all: --gateway URL (or POSTERN_GATEWAY, or the one logged
 * in to), --ca FILE or --pin SHA256:... (or what login stored for that
 * gateway), the token from POSTERN_TOKEN or from `postern login`. A
 * stored token is only ever sent to the gateway it was issued by. */
#ifndef POSTERN_CLI_REMOTE_H
#define POSTERN_CLI_REMOTE_H

#include <stdio.h>

/* A command of this module by name, or NULL. */
typedef int (*cli_command_fn)(int argc, char **argv);
cli_command_fn cli_remote_command(const char *name);

/* One line per command, for `postern --help`. */
void cli_remote_usage(FILE *f);

#endif
