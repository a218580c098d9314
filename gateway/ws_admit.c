/* Admission of WebSocket upgrades, decided while the request is still
 * HTTP (LWS_CALLBACK_HTTP_CONFIRM_UPGRADE) so that a refusal is a real HTTP
 * status with a JSON reason, not a dropped connection:
 *
 *   path     one of our endpoints (/ws/ssh, /ws/rdp, /ws/tunnel)   else 404
 *   Origin   present and ours (browsers always send it)             else 403
 *   identity a login session or API token                           else 401
 *   vm=      named                                                   else 400
 *   draining no new sessions while shutting down                     else 503
 *
 * and, once the WebSocket is open (gw_ws_authorize), in words over it:
 *   vm       a configured VM offering that protocol
 *   may      a role grants one of the endpoint's actions on it
 *
 * Every deny that concerns a VM is written to the audit log. */
#include "gateway/internal.h"

#include "common/err.h"
#include "common/log.h"

#include <string.h>

typedef struct {
    const char *path;
    unsigned actions; /* any of these admits */
    const char *protocol;
} ws_endpoint;

static const ws_endpoint endpoints[] = {
    {"/ws/ssh", AUTH_ACT_SSH_LOGIN | AUTH_ACT_SSH_ADMIN_LOGIN, "ssh"},
    {"/ws/rdp", AUTH_ACT_RDP_LOGIN | AUTH_ACT_RDP_ADMIN_LOGIN, "rdp"},
    {"/ws/tunnel", AUTH_ACT_TUNNEL, "tunnel"},
};

/* Writes a complete small response at once: the upgrade callback must
 * have answered when it returns. */
int gw_ws_refuse(gw_server *srv, struct lws *wsi, int status, const char *message)
{
    unsigned char buf[LWS_PRE + 2048];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof(buf) - 1;
    json_t *o = json_pack("{s:s}", "error", message);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body)
        return -1;
    size_t len = strlen(body);
    gw_metrics_count_http(&srv->metrics, status);
    int rc = -1;
    if (lws_add_http_common_headers(wsi, (unsigned)status, "application/json", len, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        goto out;
    if (len + LWS_PRE > sizeof(buf))
        goto out;
    memcpy(buf + LWS_PRE, body, len);
    if (lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) != (int)len)
        goto out;
    rc = 1;
out:
    free(body);
    return rc;
}

static void audit_denied(gw_server *srv, const char *user, const char *action, const char *vm,
                         const char *addr, const char *reason)
{
    json_t *f = json_pack("{s:s,s:s,s:s,s:s,s:s}", "user", user, "action", action, "vm", vm,
                          "source", addr, "reason", reason);
    auth_audit_write(srv->audit, "access.denied", f);
    json_decref(f);
}

int gw_ws_admit(gw_server *srv, struct lws *wsi, gw_ws_request *req)
{
    char path[GW_PATH_MAX + 1], addr[64];
    memset(req, 0, sizeof(*req));
    gw_peer_address(wsi, addr, sizeof(addr));
    if (lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) <= 0)
        return gw_ws_refuse(srv, wsi, 400, "a WebSocket upgrade must be a GET");

    const ws_endpoint *ep = NULL;
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
        if (strcmp(path, endpoints[i].path) == 0)
            ep = &endpoints[i];
    if (!ep)
        return gw_ws_refuse(srv, wsi, 404, "no such WebSocket endpoint");

    if (gw_origin_check(srv, wsi, true) != 0) {
        audit_denied(srv, "-", ep->protocol, "-", addr, "foreign or missing Origin");
        return gw_ws_refuse(srv, wsi, 403, "WebSocket from a foreign or missing Origin");
    }
    if (gw_identify(srv, wsi, &req->id) != 0)
        return gw_ws_refuse(srv, wsi, 401, "not logged in, or the session expired");

    /* lws copies "vm=NAME" into the buffer and returns where NAME starts. */
    char arg[GW_NAME_MAX + 8] = "";
    const char *vm = lws_get_urlarg_by_name(wsi, "vm=", arg, sizeof(arg));
    if (!vm || !*vm || strlen(vm) > GW_NAME_MAX)
        return gw_ws_refuse(srv, wsi, 400, "name the VM: ?vm=NAME");
    if (srv->draining)
        return gw_ws_refuse(srv, wsi, 503, "the gateway is shutting down; try again shortly");

    snprintf(req->vm_name, sizeof(req->vm_name), "%s", vm);
    req->protocol = ep->protocol;
    req->actions = ep->actions;
    snprintf(req->source, sizeof(req->source), "%s", addr);
    return 0;
}

/* The VM-level decisions come after the upgrade so that a browser, which
 * cannot read the body of a refused upgrade, is told why in words. */
int gw_ws_authorize(gw_server *srv, gw_ws_request *req, char *why, size_t whylen)
{
    const gw_vm *v = gw_config_find_vm(srv->cfg, req->vm_name);
    bool offers = v && ((req->actions & AUTH_ACT_SSH_LOGIN && v->ssh.enabled) ||
                        (req->actions & AUTH_ACT_RDP_LOGIN && v->rdp.enabled) ||
                        req->actions & AUTH_ACT_TUNNEL);
    if (!offers) {
        snprintf(why, whylen, "no VM named %s offers %s", req->vm_name, req->protocol);
        audit_denied(srv, req->id.user, req->protocol, req->vm_name, req->source, "unknown VM");
        return PST_E_NOTFOUND;
    }
    /* The account may have changed since the upgrade: look it up again. */
    req->id.account = auth_users_find(srv->users, req->id.user);
    if (!req->id.account || req->id.account->disabled) {
        snprintf(why, whylen, "your account is disabled");
        return PST_E_DENIED;
    }
    req->granted = gw_identity_actions(srv, &req->id, v) & req->actions;
    if (!req->granted) {
        snprintf(why, whylen, "you may not use %s on %s", req->protocol, v->name);
        audit_denied(srv, req->id.user, req->protocol, v->name, req->source, why);
        log_event(LOG_INFO, "access.denied", "user=%s action=%s vm=%s source=%s",
                  req->id.user, req->protocol, v->name, log_q(req->source));
        return PST_E_DENIED;
    }
    return 0;
}

int gw_ws_on_confirm_upgrade(gw_server *srv, struct lws *wsi)
{
    gw_ws_request *req = calloc(1, sizeof(*req));
    if (!req)
        return -1;
    int rc = gw_ws_admit(srv, wsi, req);
    if (rc != 0) {
        free(req);
        return rc;
    }
    /* Carried across the switch to the WebSocket protocol, whose
     * ESTABLISHED takes it; WSI_DESTROY frees it if that never comes. */
    lws_set_opaque_user_data(wsi, req);
    return 0;
}

void gw_ws_request_drop(struct lws *wsi)
{
    gw_ws_request *req = lws_get_opaque_user_data(wsi);
    if (req) {
        lws_set_opaque_user_data(wsi, NULL);
        free(req);
    }
}
