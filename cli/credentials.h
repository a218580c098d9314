/* What `postern login` stores: one gateway's API token and how to trust
 * that gateway, in $XDG_CONFIG_HOME/postern/credentials.json (default
 * ~/.config/postern/), the directory 0700 and the file 0600, written
 * atomically. The token is a secret: it is never printed or logged. */
#ifndef POSTERN_CLI_CREDENTIALS_H
#define POSTERN_CLI_CREDENTIALS_H

#include <stddef.h>
#include <stdint.h>

typedef struct cli_credentials {
    char gateway[512];      /* the URL logged in to */
    char user[128];
    char token[256];
    char token_id[64];
    int64_t expires;        /* unix seconds; 0 when unknown */
    char ca_file[1024];     /* --ca given at login (absolute), or "" */
    char pin[128];          /* --pin given at login, or "" */
} cli_credentials;

/* The file's path into out. 0, or -1 (no HOME). */
int cli_credentials_path(char *out, size_t len);

/* Loads the stored credentials. 0; 1 when there are none; -1 with err
 * filled when the file is unreadable or malformed. */
int cli_credentials_load(cli_credentials *c, char *err, size_t errlen);

/* Replaces the stored credentials. 0, or -1 with err filled. */
int cli_credentials_save(const cli_credentials *c, char *err, size_t errlen);

/* Removes them. 0 (also when there were none), or -1 with err filled. */
int cli_credentials_remove(char *err, size_t errlen);

/* Wipes the token from memory. */
void cli_credentials_wipe(cli_credentials *c);

#endif
