#include "gateway/sessions.h"

#include "common/err.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

unsigned gw_sessions_count_vm(const gw_sessions *reg, const char *vm)
{
    unsigned n = 0;
    for (const gw_session_entry *e = reg->head; e; e = e->next)
        n += strcmp(e->vm, vm) == 0;
    return n;
}

unsigned gw_sessions_count_user(const gw_sessions *reg, const char *user)
{
    unsigned n = 0;
    for (const gw_session_entry *e = reg->head; e; e = e->next)
        n += strcmp(e->user, user) == 0;
    return n;
}

int gw_sessions_add(gw_sessions *reg, const gw_config *cfg, const gw_vm *vm,
                    gw_session_entry *e, char *why, size_t whylen)
{
    /* The narrowest cap is named first: it is the one the user can act on. */
    if (vm->max_sessions > 0 && gw_sessions_count_vm(reg, vm->name) >= (unsigned)vm->max_sessions) {
        snprintf(why, whylen, "VM %s already has its maximum of %d sessions", vm->name,
                 vm->max_sessions);
        return PST_E_LIMIT;
    }
    if (gw_sessions_count_user(reg, e->user) >= (unsigned)cfg->limits.max_sessions_per_user) {
        snprintf(why, whylen, "you already have your maximum of %d sessions",
                 cfg->limits.max_sessions_per_user);
        return PST_E_LIMIT;
    }
    if (reg->count >= (unsigned)cfg->limits.max_sessions) {
        snprintf(why, whylen, "this gateway already carries its maximum of %d sessions",
                 cfg->limits.max_sessions);
        return PST_E_LIMIT;
    }
    unsigned char rnd[16];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return PST_E_CRYPTO;
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(e->id + i * 2, 3, "%02x", rnd[i]);
    e->started = (int64_t)time(NULL);
    e->prev = NULL;
    e->next = reg->head;
    if (reg->head)
        reg->head->prev = e;
    reg->head = e;
    reg->count++;
    return 0;
}

void gw_sessions_remove(gw_sessions *reg, gw_session_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else if (reg->head == e)
        reg->head = e->next;
    else
        return; /* not registered */
    if (e->next)
        e->next->prev = e->prev;
    e->prev = e->next = NULL;
    reg->count--;
}

static void terminate_matching(gw_sessions *reg, const char *user, const char *login,
                               const char *reason)
{
    gw_session_entry *e = reg->head;
    while (e) {
        gw_session_entry *next = e->next; /* terminate unlinks e */
        if ((!user || strcmp(e->user, user) == 0) &&
            (!login || (e->login[0] && strcmp(e->login, login) == 0))) {
            if (e->terminate)
                e->terminate(e, reason);
            else
                gw_sessions_remove(reg, e);
        }
        e = next;
    }
}

void gw_sessions_terminate_all(gw_sessions *reg, const char *reason)
{
    terminate_matching(reg, NULL, NULL, reason);
}

void gw_sessions_terminate_user(gw_sessions *reg, const char *user, const char *reason)
{
    terminate_matching(reg, user, NULL, reason);
}

void gw_sessions_terminate_login(gw_sessions *reg, const char *login, const char *reason)
{
    terminate_matching(reg, NULL, login, reason);
}
