/* The native client tunnel: one WebSocket carries one TCP connection to a
 * management port of a configured VM (/ws/tunnel?vm=NAME&port=N).
 *
 *   either way        binary  the TCP bytes
 *   either way        text    {"type":"eof"}: this side sends no more
 *   gateway -> client text    {"type":"status","state":"connected"},
 *                             {"type":"closed"|"error",...} last
 *
 * The port was checked against the VM's management ports at admission
 * (gw_ws_authorize): the gateway never connects anywhere a client names.
 * A tunnel carries the client's own protocol end to end (SSH, RDP with
 * TLS): the gateway cannot read it, so a VM that requires session
 * recording refuses tunnels rather than let them pass unrecorded. */
#include "gateway/session.h"

#include "common/log.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    gw_session s; /* first: the session core's view */
    bool client_eof;
} tunnel;

static tunnel *of(gw_ws_conn *c) { return gw_ws_state(c); }

static void end_words(gw_session *s, proxy_end why, int exit_status, char *out, size_t n)
{
    (void)exit_status;
    switch (why) {
    case PROXY_END_CLOSED: snprintf(out, n, "the tunnel ended"); return;
    case PROXY_END_REFUSED:
        snprintf(out, n, "the VM %s refused the connection on port %d", s->vm_name, s->port);
        return;
    case PROXY_END_TIMEOUT:
        snprintf(out, n, "the VM %s did not answer on port %d in time", s->vm_name, s->port);
        return;
    case PROXY_END_RESET: snprintf(out, n, "the VM reset the connection"); return;
    case PROXY_END_LOCAL: snprintf(out, n, "closed by the gateway"); return;
    default: snprintf(out, n, "the VM %s is unreachable on port %d", s->vm_name, s->port); return;
    }
}

static void on_state(gw_session *s, proxy_state st, const char *message)
{
    (void)message;
    if (st == PROXY_STATE_READY)
        gw_ws_set_state(s->ws, "connected", "connected");
    else if (st == PROXY_STATE_EOF)
        gw_ws_send_json(s->ws, json_pack("{s:s}", "type", "eof"));
}

static json_t *closed_message(gw_session *s, const char *words, int exit_status)
{
    (void)exit_status;
    return json_pack("{s:s,s:s,s:s,s:I,s:I}", "type", "closed", "state", "closed", "message",
                     words, "bytes_in", (json_int_t)s->entry.bytes_in, "bytes_out",
                     (json_int_t)s->entry.bytes_out);
}

static const gw_session_hooks hooks = {
    .end_words = end_words,
    .on_state = on_state,
    .closed_message = closed_message,
};

static void handle_text(tunnel *t, const unsigned char *buf, size_t len)
{
    json_t *msg = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *type = msg ? json_object_get(msg, "type") : NULL;
    if (json_is_string(type) && strcmp(json_string_value(type), "eof") == 0) {
        if (!t->client_eof && t->s.proxy) {
            t->client_eof = true;
            proxy_session_input(t->s.proxy, &(proxy_input){.kind = PROXY_INPUT_EOF});
        }
    } else {
        gw_session_fail(&t->s, "bad_message",
                        "a tunnel's text messages are {\"type\":\"eof\"}; bytes go in binary "
                        "frames", GW_WS_CLOSE_INVALID);
    }
    json_decref(msg);
}

static void on_message(gw_ws_conn *c, bool binary, unsigned char *msg, size_t len)
{
    tunnel *t = of(c);
    if (gw_ws_ending(c))
        return;
    if (!binary)
        handle_text(t, msg, len);
    else if (t->client_eof)
        gw_session_fail(&t->s, "bad_message", "bytes after eof", GW_WS_CLOSE_POLICY);
    else
        gw_session_input(&t->s, msg, len);
}

static void on_open(gw_ws_conn *c)
{
    tunnel *t = of(c);
    gw_session *s = &t->s;
    gw_session_init(s, c, &hooks);
    gw_ws_request *req = gw_ws_req(c);
    s->port = req->port;
    s->touch_on_output = true; /* a download with nothing typed is not idle */
    const gw_vm *vm = gw_config_find_vm(s->srv->cfg, s->vm_name);
    if (!vm) { /* authorised a moment ago; a reload may have removed it */
        gw_session_fail(s, "unknown_vm", "this VM is no longer configured", GW_WS_CLOSE_POLICY);
        return;
    }
    if (vm->recording == GW_REC_REQUIRED) {
        char why[160];
        snprintf(why, sizeof(why), "%s requires session recording, which a native tunnel "
                                   "cannot give: use the browser console", vm->name);
        json_t *f = json_pack("{s:s,s:s,s:s,s:s,s:s}", "user", req->id.user, "action", "tunnel",
                              "vm", vm->name, "source", req->source, "reason", why);
        auth_audit_write(s->srv->audit, "access.denied", f);
        json_decref(f);
        gw_session_fail(s, "recording_required", why, GW_WS_CLOSE_POLICY);
        return;
    }
    if (gw_session_admit(s, vm, AUTH_ACT_TUNNEL, NULL) != 0)
        return;
    proxy_target target = {
        .kind = PROXY_TCP,
        .host = vm->address,
        .port = req->port,
    };
    gw_session_connect(s, &target);
}

const gw_endpoint gw_endpoint_tunnel = {
    .path = "/ws/tunnel",
    .protocol = "tunnel",
    .proto = GW_PROTO_TUNNEL,
    .actions = AUTH_ACT_TUNNEL,
    .needs_port = true,
    .state_size = sizeof(tunnel),
    .on_open = on_open,
    .on_message = on_message,
    .on_output_full = gw_session_on_output_full,
    .on_cut = gw_session_on_cut,
    .on_closed = gw_session_on_closed,
};
