/* The gateway's configuration: one JSON file, validated whole.
 *
 * gw_config_load() either returns a complete, checked configuration or an
 * error naming the file, the JSON path (vms[2].address) and what was
 * expected. Unknown keys are errors: a typo must not silently disable a
 * security setting. Files the config names (TLS certificate, users file,
 * keys) are not opened here; the modules that use them report their errors.
 *
 * Ownership: a gw_config is immutable once loaded and owned by whoever
 * loaded it; every string in it lives as long as the gw_config (they point
 * into the parsed JSON document it keeps). Free with gw_config_free().
 * A reload builds a new gw_config and swaps it in whole.
 */
#ifndef PST_GATEWAY_CONFIG_H
#define PST_GATEWAY_CONFIG_H

#include "auth/auth.h"
#include "common/log.h"

#include <stdbool.h>
#include <stddef.h>

#define GW_CONFIG_MAX_BYTES (4u << 20) /* a config larger than 4 MiB is a mistake */
#define GW_NAME_MAX 64                 /* VM, tag and role names */
#define GW_HOST_MAX 255

typedef struct {
    char host[GW_HOST_MAX + 1]; /* without brackets for IPv6 */
    int port;
} gw_addr;

/* "host:port" or "[v6]:port". 0 or PST_E_PARSE. */
int gw_addr_parse(const char *text, gw_addr *out);

typedef enum { GW_REC_OFF = 0, GW_REC_ON, GW_REC_REQUIRED } gw_recording;

/* The "recording" key. */
typedef struct {
    gw_recording mode;  /* for VMs without their own "recording"; default off */
    int retention_days; /* 0: kept until deleted by hand */
    bool input;         /* record keystrokes too ("i" events); default off */
} gw_recording_settings;

typedef struct {
    bool enabled;
    int port;
    const char *host_key_sha256; /* "SHA256:<base64>", or NULL */
    bool trust_on_first_use;
    const char *username;        /* NULL: the user types it */
    const char *key_file;        /* gateway-held key (credential injection) */
} gw_vm_ssh;

typedef struct {
    bool enabled;
    int port;
    const char *cert_sha256;
    bool trust_on_first_use;
    const char *username;
    const char *password_file;
} gw_vm_rdp;

typedef struct {
    bool required;
    int *ports;
    size_t nports;
    int default_duration; /* seconds */
    int max_duration;     /* seconds */
} gw_vm_jit;

typedef struct {
    const char *name;
    const char *address;
    const char **tags;
    size_t ntags;
    int max_sessions; /* 0: no per-VM cap */
    gw_recording recording;
    gw_vm_ssh ssh;
    gw_vm_rdp rdp;
    gw_vm_jit jit;
    int *tunnel_ports;    /* more ports the native tunnel may reach, beyond ssh/rdp's */
    size_t ntunnel_ports;
} gw_vm;

/* Identity settings (the "auth" key). */
typedef struct {
    int session_idle_seconds;  /* default 1800 */
    int session_max_seconds;   /* default 28800 */
    int token_max_seconds;     /* longest API token; default 90 days */
    auth_throttle_params throttle;
} gw_auth_settings;

typedef struct {
    int max_sessions;
    int max_sessions_per_user;
    int shutdown_grace_seconds;
    int handshake_timeout_seconds;
    int idle_timeout_seconds;  /* no keystroke for this long ends a session; 0 off */
    int max_session_seconds;   /* no session lasts longer; 0 off */
} gw_limits;

typedef struct gw_config {
    char *path;
    gw_addr *listen;
    size_t nlisten;
    bool has_http_redirect;
    gw_addr http_redirect;
    const char *state_dir;
    const char *tls_cert; /* both NULL: self-signed, generated */
    const char *tls_key;
    const char **origins; /* never empty: derived from listen when absent */
    size_t norigins;
    log_level log_level;
    const char *users_file;
    auth_role *roles;  /* what auth_may() decides with */
    size_t nroles;
    gw_auth_settings auth;
    bool audit_syslog; /* "audit": {"syslog": true} */
    gw_recording_settings recording;
    const char *instance; /* this gateway's name in recordings; NULL: the host name */
    gw_limits limits;
    gw_vm *vms;
    size_t nvms;

    void *doc_; /* private: the JSON document the strings point into */
    char **owned_; /* private: strings made here (derived origins) */
    size_t nowned_;
} gw_config;

/* Loads and validates path. 0 with *out set (caller frees with
 * gw_config_free), or PST_E_CONFIG with a one-line message in err
 * ("FILE: JSON.PATH: what was expected"). */
int gw_config_load(const char *path, gw_config **out, char *err, size_t errlen);

/* The same, from a string in memory; name is used in messages. */
int gw_config_parse(const char *name, const char *text, size_t len,
                    gw_config **out, char *err, size_t errlen);

void gw_config_free(gw_config *cfg);

/* The VM of that name, or NULL. */
const gw_vm *gw_config_find_vm(const gw_config *cfg, const char *name);

/* Whether port is one of the VM's management ports: ssh.port, rdp.port
 * (where enabled) or one of tunnel_ports. Nothing else may be tunnelled. */
bool gw_vm_management_port(const gw_vm *vm, int port);

/* The view of a VM that permission checks take. */
auth_target gw_vm_target(const gw_vm *vm);

#endif
