/* The registry of live sessions (console and, later, tunnel): who, which
 * VM, which protocol, since when, bytes each way; and the caps that admit
 * a new one: per VM (vms[].max_sessions), per user
 * (limits.max_sessions_per_user), per instance (limits.max_sessions).
 *
 * Loop thread only. Entries are owned by the session that registered them
 * and must be removed by it before it is freed. */
#ifndef PST_GATEWAY_SESSIONS_H
#define PST_GATEWAY_SESSIONS_H

#include "gateway/config.h"
#include "gateway/metrics.h"

#include <stdint.h>

typedef struct gw_session_entry {
    char id[33];                 /* 128 random bits, hex */
    char user[AUTH_NAME_MAX + 1];
    char vm[GW_NAME_MAX + 1];
    char source[64];
    char login[AUTH_SESSION_ID_LEN + 1]; /* the login session it was opened on, or "" */
    gw_proto proto;
    int64_t started;             /* seconds since the epoch */
    uint64_t bytes_in;           /* client -> VM */
    uint64_t bytes_out;          /* VM -> client */
    /* Ends the session with a reason the user sees (drain, admin): set by
     * the owner; it unregisters the entry. */
    void (*terminate)(struct gw_session_entry *e, const char *reason);
    struct gw_session_entry *prev, *next;
} gw_session_entry;

typedef struct {
    gw_session_entry *head;
    unsigned count;
} gw_sessions;

/* Registers e (id, started filled here) if no cap refuses it: 0, or
 * PST_E_LIMIT with the refusing cap named in words in why. */
int gw_sessions_add(gw_sessions *reg, const gw_config *cfg, const gw_vm *vm,
                    gw_session_entry *e, char *why, size_t whylen);
void gw_sessions_remove(gw_sessions *reg, gw_session_entry *e);

/* Calls terminate on every entry (each removes itself); _user only on
 * those of one user. */
void gw_sessions_terminate_all(gw_sessions *reg, const char *reason);
void gw_sessions_terminate_user(gw_sessions *reg, const char *user, const char *reason);
/* Those opened on one login session (logout). */
void gw_sessions_terminate_login(gw_sessions *reg, const char *login, const char *reason);

unsigned gw_sessions_count_vm(const gw_sessions *reg, const char *vm);
unsigned gw_sessions_count_user(const gw_sessions *reg, const char *user);

#endif
