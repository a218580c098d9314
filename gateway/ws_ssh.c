/* The browser SSH console: one WebSocket per session (/ws/ssh?vm=NAME).
 *
 *   client -> gateway   text   {"type":"connect","username",...,"cols","rows"} (first)
 *                       text   {"type":"resize","cols","rows"}
 *                       binary keystrokes
 *   gateway -> client   text   {"type":"status"|"error"|"closed","state",
 *                               "message",...}
 *                       binary terminal output
 *
 * Only what is SSH's lives here: the connect message and its credentials,
 * the terminal size, and the words for how a session ended. Transport,
 * flow control and timers are the WebSocket core's (ws_conn.c); admission,
 * audit, recording and the wiring to the back end the session core's
 * (session.c). */
#include "gateway/session.h"

#include "common/err.h"
#include "common/log.h"
#include "recording/recording.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

typedef enum { SSH_AWAIT_CONNECT, SSH_CONNECTING, SSH_RUNNING } ssh_state;

typedef struct {
    gw_session s; /* first: the session core's view */
    ssh_state st;
} ssh_console;

static ssh_console *of(gw_ws_conn *c) { return gw_ws_state(c); }

static void end_words(gw_session *s, proxy_end why, int exit_status, char *out, size_t n)
{
    const char *w = "the session ended";
    switch (why) {
    case PROXY_END_CLOSED:
        if (exit_status >= 0) {
            snprintf(out, n, "the session ended (exit status %d)", exit_status);
            return;
        }
        break;
    case PROXY_END_UNREACHABLE: w = "the VM is unreachable"; break;
    case PROXY_END_REFUSED: w = "the VM refused the connection (is SSH running on it?)"; break;
    case PROXY_END_TIMEOUT: w = "the VM did not answer in time"; break;
    case PROXY_END_AUTH_FAILED: w = "authentication failed: wrong user name, password or key"; break;
    case PROXY_END_HOSTKEY_MISMATCH:
        w = "the VM's host key does not match the pinned key: refusing to connect "
            "(possible impostor)";
        break;
    case PROXY_END_HOSTKEY_UNKNOWN: w = "no host key is pinned for this VM"; break;
    case PROXY_END_PROTOCOL: w = "the VM did not speak SSH correctly"; break;
    case PROXY_END_LOCAL: w = "closed by the gateway"; break;
    case PROXY_END_RESET: w = "the connection to the VM was reset"; break;
    }
    (void)s;
    snprintf(out, n, "%s", w);
}

static void on_state(gw_session *s, proxy_state st, const char *message)
{
    ssh_console *sc = (ssh_console *)s;
    if (st == PROXY_STATE_READY)
        sc->st = SSH_RUNNING;
    if (st != PROXY_STATE_EOF)
        gw_ws_set_state(s->ws, proxy_state_name(st), message ? message : proxy_state_name(st));
}

static const gw_session_hooks hooks = {
    .end_words = end_words,
    .on_state = on_state,
};

/* ---- client messages ---------------------------------------------------- */

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool size_ok(json_t *o, int *cols, int *rows)
{
    json_t *c = json_object_get(o, "cols"), *r = json_object_get(o, "rows");
    if (!json_is_integer(c) || !json_is_integer(r))
        return false;
    json_int_t cv = json_integer_value(c), rv = json_integer_value(r);
    if (cv < 1 || cv > 1000 || rv < 1 || rv > 1000)
        return false;
    *cols = (int)cv;
    *rows = (int)rv;
    return true;
}

static void wipe_json_strings(json_t *o)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (json_is_string(v))
            OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
    }
}

static void refuse(ssh_console *sc, const char *reason, const char *why, int code)
{
    gw_session_fail(&sc->s, reason, why, code);
}

static void handle_connect(ssh_console *sc, json_t *msg)
{
    gw_session *s = &sc->s;
    gw_server *srv = s->srv;
    gw_ws_request *req = gw_ws_req(s->ws);
    const gw_vm *vm = gw_config_find_vm(srv->cfg, s->vm_name);
    if (!vm || !vm->ssh.enabled) {
        refuse(sc, "unknown_vm", "this VM is no longer configured for SSH", GW_WS_CLOSE_POLICY);
        return;
    }
    const char *username = jstr(msg, "username");
    const char *password = jstr(msg, "password");
    const char *key = jstr(msg, "private_key");
    const char *passphrase = jstr(msg, "passphrase");
    int cols = 80, rows = 24;
    if (!size_ok(msg, &cols, &rows)) {
        refuse(sc, "bad_message", "connect needs cols and rows from 1 to 1000",
               GW_WS_CLOSE_INVALID);
        return;
    }
    /* Without credentials of their own, the user asks for the gateway's
     * (credential injection): that is the admin login. */
    bool injected = !password && !key;
    unsigned need = injected ? AUTH_ACT_SSH_ADMIN_LOGIN : AUTH_ACT_SSH_LOGIN;
    char why[256];
    if (!(req->granted & need)) {
        snprintf(why, sizeof(why), "you may not %s on %s",
                 injected ? "log in with the gateway's credentials" : "log in", vm->name);
        json_t *f = json_pack("{s:s,s:s,s:s,s:s,s:s}", "user", req->id.user, "action",
                              auth_action_name(need), "vm", vm->name, "source", req->source,
                              "reason", why);
        auth_audit_write(srv->audit, "access.denied", f);
        json_decref(f);
        refuse(sc, "not_permitted", why, GW_WS_CLOSE_POLICY);
        return;
    }
    char *key_text = NULL;
    if (injected) {
        if (!vm->ssh.key_file) {
            refuse(sc, "no_credentials",
                   "give a password or a private key: this VM has no gateway-held key",
                   GW_WS_CLOSE_POLICY);
            return;
        }
        key_text = gw_read_small_file(vm->ssh.key_file, 64 << 10);
        if (!key_text) {
            log_event(LOG_ERROR, "ssh.key_file", "vm=%s path=%s err=unreadable", vm->name,
                      log_q(vm->ssh.key_file));
            refuse(sc, "internal", "the gateway cannot read this VM's key", GW_WS_CLOSE_INTERNAL);
            return;
        }
        key = key_text;
        passphrase = NULL;
    }
    if (vm->ssh.username)
        username = vm->ssh.username; /* the config decides where it names one */
    if (!username || !*username || strlen(username) > 255) {
        refuse(sc, "no_credentials", "give a user name for the VM", GW_WS_CLOSE_POLICY);
        goto out;
    }
    s->port = vm->ssh.port;
    if (gw_session_admit(s, vm, need, username) != 0 ||
        gw_session_record(s, vm, cols, rows) != 0)
        goto out;
    proxy_target t = {
        .kind = PROXY_SSH,
        .host = vm->address,
        .port = vm->ssh.port,
        .pinned_sha256 = vm->ssh.host_key_sha256,
        .trust_on_first_use = vm->ssh.trust_on_first_use,
        .ssh = {.username = username,
                .password = key ? NULL : password,
                .private_key = key,
                .passphrase = passphrase,
                .cols = cols,
                .rows = rows},
    };
    sc->st = SSH_CONNECTING;
    gw_session_connect(s, &t);
out:
    if (key_text) {
        OPENSSL_cleanse(key_text, strlen(key_text));
        free(key_text);
    }
}

static void handle_text(ssh_console *sc, unsigned char *buf, size_t len)
{
    gw_ws_conn *c = sc->s.ws;
    json_t *msg = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    /* The connect message carries a password or key: the core wipes the
     * raw bytes after this call, and the parsed copies go before freeing. */
    const char *type = msg && json_is_object(msg) ? jstr(msg, "type") : NULL;
    if (!type) {
        refuse(sc, "bad_message", "control messages are JSON objects with a \"type\"",
               GW_WS_CLOSE_INVALID);
    } else if (strcmp(type, "connect") == 0) {
        if (sc->st != SSH_AWAIT_CONNECT)
            refuse(sc, "bad_message", "already connected", GW_WS_CLOSE_POLICY);
        else
            handle_connect(sc, msg);
    } else if (strcmp(type, "resize") == 0) {
        int cols, rows;
        if (!size_ok(msg, &cols, &rows))
            gw_ws_send_json(c, json_pack("{s:s,s:s}", "type", "error", "message",
                                         "resize needs cols and rows from 1 to 1000"));
        else if (sc->s.proxy) {
            proxy_session_resize(sc->s.proxy, cols, rows);
            if (sc->s.rec)
                rec_resize(sc->s.rec, cols, rows);
        }
    } else {
        gw_ws_send_json(c, json_pack("{s:s,s:s}", "type", "error", "message",
                                     "unknown message type"));
    }
    if (msg) {
        wipe_json_strings(msg);
        json_decref(msg);
    }
}

static void on_message(gw_ws_conn *c, bool binary, unsigned char *msg, size_t len)
{
    ssh_console *sc = of(c);
    if (gw_ws_ending(c))
        return;
    if (!binary) {
        handle_text(sc, msg, len);
        return;
    }
    if (sc->st == SSH_AWAIT_CONNECT)
        refuse(sc, "bad_message", "send the connect message first", GW_WS_CLOSE_POLICY);
    else
        gw_session_input(&sc->s, msg, len);
}

static void on_open(gw_ws_conn *c)
{
    ssh_console *sc = of(c);
    gw_session_init(&sc->s, c, &hooks);
    gw_ws_set_state(c, "awaiting_connect", "ready: send connect");
}

const gw_endpoint gw_endpoint_ssh = {
    .path = "/ws/ssh",
    .protocol = "ssh",
    .proto = GW_PROTO_SSH,
    .actions = AUTH_ACT_SSH_LOGIN | AUTH_ACT_SSH_ADMIN_LOGIN,
    .needs_port = false,
    .state_size = sizeof(ssh_console),
    .on_open = on_open,
    .on_message = on_message,
    .on_output_full = gw_session_on_output_full,
    .on_cut = gw_session_on_cut,
    .on_closed = gw_session_on_closed,
};
