/* Admission of WebSocket upgrades, decided while the request is still
 * HTTP (LWS_CALLBACK_HTTP_CONFIRM_UPGRADE) so that a refusal is a real HTTP
 * status with a JSON reason, not a dropped connection:
 *
 *   path     one of the endpoints in the table below                else 404
 *   identity a login session or API token                           else 401
 *   Origin   ours; required with a cookie (which a browser sends on
 *            any site's behalf), optional with a bearer token (which
 *            no browser adds by itself)                              else 403
 *   vm=      named (and port= where the endpoint takes one)         else 400
 *   draining no new sessions while shutting down                     else 503
 *
 * and, once the WebSocket is open (gw_ws_authorize), in words over it:
 *   vm       a configured VM offering that protocol (and that port)
 *   may      a role grants one of the endpoint's actions on it
 *
 * Every deny that concerns a VM is written to the audit log. */
#include "gateway/internal.h"

#include "common/err.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

/* Every WebSocket endpoint. /ws/rdp joins when its back end does. */
static const gw_endpoint *const endpoints[] = {&gw_endpoint_ssh, &gw_endpoint_tunnel};

const gw_endpoint *gw_endpoint_find(const char *path)
{
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
        if (strcmp(path, endpoints[i]->path) == 0)
            return endpoints[i];
    return NULL;
}

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

    const gw_endpoint *ep = gw_endpoint_find(path);
    if (!ep)
        return gw_ws_refuse(srv, wsi, 404, "no such WebSocket endpoint");

    /* A foreign Origin is refused whoever asks; a missing one only where
     * the identity is a cookie (which rides along on any site's request).
     * Without any identity the answer is 401, so that a client whose token
     * was revoked is told so. */
    int have_id = gw_identify(srv, wsi, &req->id);
    if (gw_origin_check(srv, wsi, have_id == 0 && req->id.via_cookie) != 0) {
        audit_denied(srv, have_id == 0 ? req->id.user : "-", ep->protocol, "-", addr,
                     "foreign or missing Origin");
        return gw_ws_refuse(srv, wsi, 403, "WebSocket from a foreign or missing Origin");
    }
    if (have_id != 0)
        return gw_ws_refuse(srv, wsi, 401, "not logged in, or the session expired");

    /* lws copies "vm=NAME" into the buffer and returns where NAME starts. */
    char arg[GW_NAME_MAX + 8] = "";
    const char *vm = lws_get_urlarg_by_name(wsi, "vm=", arg, sizeof(arg));
    if (!vm || !*vm || strlen(vm) > GW_NAME_MAX)
        return gw_ws_refuse(srv, wsi, 400, "name the VM: ?vm=NAME");
    snprintf(req->vm_name, sizeof(req->vm_name), "%s", vm);
    if (ep->needs_port) {
        char parg[24] = "";
        const char *port = lws_get_urlarg_by_name(wsi, "port=", parg, sizeof(parg));
        char *end = NULL;
        long p = port && *port ? strtol(port, &end, 10) : 0;
        if (!port || !*port || *end || p < 1 || p > 65535)
            return gw_ws_refuse(srv, wsi, 400, "name the VM's port: ?vm=NAME&port=N (1 to 65535)");
        req->port = (int)p;
    }
    if (srv->draining)
        return gw_ws_refuse(srv, wsi, 503, "the gateway is shutting down; try again shortly");

    req->ep = ep;
    snprintf(req->source, sizeof(req->source), "%s", addr);
    return 0;
}

/* The VM-level decisions come after the upgrade so that a browser, which
 * cannot read the body of a refused upgrade, is told why in words. */
static bool offers(const gw_vm *v, const gw_endpoint *ep)
{
    switch (ep->proto) {
    case GW_PROTO_SSH: return v->ssh.enabled;
    case GW_PROTO_RDP: return v->rdp.enabled;
    case GW_PROTO_TUNNEL: return true; /* the port decides, below */
    default: return false;
    }
}

int gw_ws_authorize(gw_server *srv, gw_ws_request *req, const char **reason, char *why,
                    size_t whylen)
{
    const gw_endpoint *ep = req->ep;
    const gw_vm *v = gw_config_find_vm(srv->cfg, req->vm_name);
    if (!v || !offers(v, ep)) {
        *reason = "unknown_vm";
        snprintf(why, whylen, "no VM named %s offers %s", req->vm_name, ep->protocol);
        audit_denied(srv, req->id.user, ep->protocol, req->vm_name, req->source, "unknown VM");
        return PST_E_NOTFOUND;
    }
    /* The account may have changed since the upgrade: look it up again. */
    req->id.account = auth_users_find(srv->users, req->id.user);
    if (!req->id.account || req->id.account->disabled) {
        *reason = "not_permitted";
        snprintf(why, whylen, "your account is disabled");
        return PST_E_DENIED;
    }
    req->granted = gw_identity_actions(srv, &req->id, v) & ep->actions;
    if (!req->granted) {
        *reason = "not_permitted";
        snprintf(why, whylen, "you may not use %s on %s", ep->protocol, v->name);
        audit_denied(srv, req->id.user, ep->protocol, v->name, req->source, why);
        log_event(LOG_INFO, "access.denied", "user=%s action=%s vm=%s source=%s",
                  req->id.user, ep->protocol, v->name, log_q(req->source));
        return PST_E_DENIED;
    }
    /* No open proxy: a tunnel reaches a management port of a configured
     * VM, nothing else. Checked after the role so that the answer does not
     * tell strangers which ports a VM has. */
    if (ep->needs_port && !gw_vm_management_port(v, req->port)) {
        *reason = "port_not_allowed";
        snprintf(why, whylen, "port %d is not a management port of %s", req->port, v->name);
        audit_denied(srv, req->id.user, ep->protocol, v->name, req->source, why);
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
