/* Who is making this request: a login session's cookie or an API token,
 * and whether the request's Origin is one of ours. */
#include "gateway/internal.h"

#include "common/err.h"
#include "common/log.h"

#include <openssl/crypto.h>
#include <string.h>
#include <time.h>

#define BEARER_PREFIX "Bearer "

static int identify_cookie(gw_server *srv, struct lws *wsi, gw_identity *id)
{
    char value[AUTH_SESSION_ID_LEN + 8];
    size_t max = sizeof(value);
    if (lws_http_cookie_get(wsi, GW_SESSION_COOKIE, value, &max) != 0 || max == 0)
        return PST_E_NOTFOUND;
    if (strlen(value) != AUTH_SESSION_ID_LEN)
        return PST_E_NOTFOUND;
    auth_session s;
    const gw_auth_settings *a = &srv->cfg->auth;
    int rc = auth_session_lookup(srv->store, value, (int64_t)time(NULL),
                                 a->session_idle_seconds, a->session_max_seconds, &s);
    if (rc == 0) {
        memcpy(id->user, s.user, sizeof(id->user));
        memcpy(id->session_id, value, sizeof(value) < sizeof(id->session_id)
                                          ? sizeof(value) : sizeof(id->session_id));
        id->session_id[AUTH_SESSION_ID_LEN] = '\0';
        id->via_cookie = true;
        id->mfa = s.mfa;
        id->allowed_actions = ~0u;
        id->expires = s.created + a->session_max_seconds;
    }
    OPENSSL_cleanse(value, sizeof(value));
    return rc;
}

static int identify_bearer(gw_server *srv, struct lws *wsi, gw_identity *id)
{
    char value[AUTH_TOKEN_MAX + sizeof(BEARER_PREFIX) + 8];
    int n = lws_hdr_copy(wsi, value, sizeof(value), WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 0)
        return PST_E_NOTFOUND;
    int rc = PST_E_NOTFOUND;
    if (strncmp(value, BEARER_PREFIX, strlen(BEARER_PREFIX)) == 0) {
        auth_token t;
        rc = auth_token_lookup(srv->store, value + strlen(BEARER_PREFIX), (int64_t)time(NULL),
                               &t);
        if (rc == 0) {
            memcpy(id->user, t.user, sizeof(id->user));
            memcpy(id->token_id, t.id, sizeof(id->token_id));
            id->via_token = true;
            id->mfa = true; /* minting the token required the session's factors */
            id->allowed_actions = t.actions ? t.actions : ~0u;
            id->expires = t.expires;
        }
    }
    OPENSSL_cleanse(value, sizeof(value));
    return rc;
}

int gw_identify(gw_server *srv, struct lws *wsi, gw_identity *id)
{
    memset(id, 0, sizeof(*id));
    int rc = identify_bearer(srv, wsi, id);
    if (rc == PST_E_NOTFOUND)
        rc = identify_cookie(srv, wsi, id);
    if (rc != 0)
        return rc;
    /* The account may have been disabled or removed since the session
     * began: that ends the session's rights at once. */
    id->account = auth_users_find(srv->users, id->user);
    if (!id->account || id->account->disabled)
        return PST_E_NOTFOUND;
    return 0;
}

int gw_origin_check(gw_server *srv, struct lws *wsi, bool required)
{
    char origin[256];
    int n = lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN);
    if (n <= 0)
        return required ? PST_E_DENIED : 0;
    for (size_t i = 0; i < srv->cfg->norigins; i++)
        if (strcmp(origin, srv->cfg->origins[i]) == 0)
            return 0;
    log_event(LOG_INFO, "origin.refused", "origin=%s", log_q(origin));
    return PST_E_DENIED;
}

void gw_peer_address(struct lws *wsi, char *out, size_t n)
{
    out[0] = '\0';
    lws_get_peer_simple(wsi, out, n);
}

unsigned gw_identity_actions(const gw_server *srv, const gw_identity *id, const gw_vm *vm)
{
    auth_target t = gw_vm_target(vm);
    return auth_actions_on(srv->cfg->roles, srv->cfg->nroles, id->account, &t) &
           id->allowed_actions;
}

int gw_may(gw_server *srv, const gw_identity *id, unsigned action, const gw_vm *vm,
           char *why, size_t whylen)
{
    auth_target t;
    if (vm)
        t = gw_vm_target(vm);
    if (!(id->allowed_actions & action)) {
        snprintf(why, whylen, "the API token does not carry %s", auth_action_name(action));
        return PST_E_DENIED;
    }
    int rc = auth_may(srv->cfg->roles, srv->cfg->nroles, id->account, action, vm ? &t : NULL,
                      why, whylen);
    if (rc != 0)
        log_event(LOG_INFO, "access.denied", "user=%s action=%s vm=%s reason=%s", id->user,
                  auth_action_name(action), vm ? vm->name : "-", log_q(why));
    return rc;
}
