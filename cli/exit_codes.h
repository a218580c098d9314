/* The exit codes of the postern commands that talk to a gateway.
 *
 * Scripts act on them, so they are part of the interface (docs/tunnel.md
 * lists them): one per thing a user can do something about. */
#ifndef POSTERN_CLI_EXIT_CODES_H
#define POSTERN_CLI_EXIT_CODES_H

enum cli_exit {
    CLI_OK = 0,
    CLI_FAILED = 1,             /* anything not below; the message says what */
    CLI_USAGE = 2,              /* bad command line */
    CLI_NOT_LOGGED_IN = 3,      /* no token: run `postern login` */
    CLI_TOKEN_EXPIRED = 4,      /* the stored token is past its end */
    CLI_TOKEN_INVALID = 5,      /* revoked, or not a token of this gateway */
    CLI_NOT_PERMITTED = 6,      /* no role grants it, or recording required */
    CLI_JIT_REQUIRED = 7,       /* the VM needs a just-in-time grant */
    CLI_CAP_REACHED = 8,        /* a session cap (VM, user, gateway) */
    CLI_PORT_NOT_ALLOWED = 9,   /* not one of the VM's management ports */
    CLI_VM_UNREACHABLE = 10,    /* the VM's port refused, timed out, or reset */
    CLI_UNKNOWN_VM = 11,        /* no VM of that name */
    CLI_TLS = 12,               /* the gateway's certificate is not trusted */
    CLI_GATEWAY_UNREACHABLE = 13 /* no connection to the gateway, or draining */
};

/* The exit code for a gateway's `reason` field (docs/protocol.md). */
int cli_exit_for_reason(const char *reason);

#endif
