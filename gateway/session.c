/* The session core (session.h): admission, registry, audit, metrics,
 * recording policy, and the wiring of a proxy session to its WebSocket. */
#include "gateway/session.h"

#include "common/atomic_file.h"
#include "common/err.h"
#include "common/log.h"
#include "recording/recording.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define CONNECT_TIMEOUT_MS 10000

static int64_t now_s(void) { return (int64_t)time(NULL); }

static gw_session *of(gw_ws_conn *c) { return gw_ws_state(c); }

static const char *protocol(const gw_session *s) { return gw_ws_req(s->ws)->ep->protocol; }

static gw_proto proto(const gw_session *s) { return gw_ws_req(s->ws)->ep->proto; }

static void audit(gw_session *s, const char *event, json_t *fields)
{
    auth_audit_write(s->srv->audit, event, fields);
    json_decref(fields);
}

static void audit_denied(gw_session *s, const char *action, const char *why)
{
    gw_ws_request *req = gw_ws_req(s->ws);
    audit(s, "access.denied",
          json_pack("{s:s,s:s,s:s,s:s,s:s}", "user", req->id.user, "action", action, "vm",
                    s->vm_name, "source", req->source, "reason", why));
}

void gw_session_init(gw_session *s, gw_ws_conn *c, const gw_session_hooks *hooks)
{
    s->ws = c;
    s->srv = gw_ws_server(c);
    s->hooks = hooks;
    snprintf(s->vm_name, sizeof(s->vm_name), "%s", gw_ws_req(c)->vm_name);
}

void gw_session_apply_pause(gw_session *s)
{
    if (s->proxy)
        proxy_session_pause(s->proxy, s->out_full || s->rec_full || s->rec_waiting);
}

static void unregister(gw_session *s, const char *reason)
{
    if (!s->registered)
        return;
    gw_server *srv = s->srv;
    gw_proto p = proto(s);
    s->registered = false;
    gw_sessions_remove(&srv->sessions, &s->entry);
    if (srv->metrics.sessions_active[p])
        srv->metrics.sessions_active[p]--;
    audit(s, "session.end",
          json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:s}", "session", s->entry.id, "user",
                    s->entry.user, "vm", s->entry.vm, "protocol", protocol(s), "port", s->port,
                    "bytes_in", (json_int_t)s->entry.bytes_in, "bytes_out",
                    (json_int_t)s->entry.bytes_out, "duration",
                    (json_int_t)(now_s() - s->entry.started), "reason", reason));
    log_event(LOG_INFO, "session.end", "sid=%s user=%s vm=%s protocol=%s bytes_in=%llu "
              "bytes_out=%llu reason=%s", s->entry.id, s->entry.user, s->entry.vm, protocol(s),
              (unsigned long long)s->entry.bytes_in, (unsigned long long)s->entry.bytes_out,
              log_q(reason));
    gw_server_session_ended(srv);
}

static void stop_recording(gw_session *s)
{
    if (!s->rec)
        return;
    rec_finish(s->rec); /* the writer flushes and signs it */
    s->rec = NULL;
    s->rec_full = false;
}

void gw_session_stop(gw_session *s, const char *reason)
{
    if (s->proxy) {
        proxy_session_close(s->proxy);
        s->proxy = NULL;
    }
    stop_recording(s);
    unregister(s, reason);
}

void gw_session_fail(gw_session *s, const char *reason, const char *message, int close_code)
{
    gw_session_stop(s, reason);
    gw_ws_fail(s->ws, reason, message, close_code);
}

/* Ends the session from the registry (drain, an account change, logout). */
static void terminate_entry(gw_session_entry *e, const char *reason)
{
    gw_session *s = (gw_session *)((char *)e - offsetof(gw_session, entry));
    gw_session_stop(s, "terminated");
    gw_ws_fail(s->ws, "terminated", reason, GW_WS_CLOSE_GOING_AWAY);
}

int gw_session_admit(gw_session *s, const gw_vm *vm, unsigned action, const char *login)
{
    gw_server *srv = s->srv;
    gw_ws_request *req = gw_ws_req(s->ws);
    char why[256];
    int rc = gw_jit_admit(srv, vm, &req->id, s->port, req->source, why, sizeof(why));
    if (rc != 0) {
        audit_denied(s, auth_action_name(action), why);
        gw_ws_fail(s->ws, "jit_required", why, GW_WS_CLOSE_POLICY);
        return rc;
    }
    snprintf(s->entry.user, sizeof(s->entry.user), "%s", req->id.user);
    snprintf(s->entry.vm, sizeof(s->entry.vm), "%s", vm->name);
    snprintf(s->entry.source, sizeof(s->entry.source), "%s", req->source);
    s->entry.proto = proto(s);
    s->entry.terminate = terminate_entry;
    memcpy(s->entry.login, req->id.session_id, sizeof(s->entry.login));
    rc = gw_sessions_add(&srv->sessions, srv->cfg, vm, &s->entry, why, sizeof(why));
    if (rc != 0) {
        audit_denied(s, auth_action_name(action), why);
        gw_ws_fail(s->ws, "cap_reached", why, GW_WS_CLOSE_TRY_LATER);
        return rc;
    }
    /* Recorded before the VM is touched; no audit, no session. */
    json_t *start = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:s}", "session", s->entry.id, "user",
                              s->entry.user, "vm", vm->name, "protocol", protocol(s), "action",
                              auth_action_name(action), "port", s->port, "source",
                              req->source);
    if (start && login)
        json_object_set_new(start, "login", json_string(login));
    rc = auth_audit_write(srv->audit, "session.start", start);
    json_decref(start);
    if (rc != 0) {
        gw_sessions_remove(&srv->sessions, &s->entry);
        gw_ws_fail(s->ws, "internal", "the audit log cannot be written; refusing the session",
                   GW_WS_CLOSE_INTERNAL);
        return rc;
    }
    s->registered = true;
    srv->metrics.sessions_active[proto(s)]++;
    srv->metrics.sessions_total[proto(s)]++;
    log_event(LOG_INFO, "session.start", "sid=%s user=%s vm=%s protocol=%s port=%d source=%s",
              s->entry.id, s->entry.user, vm->name, protocol(s), s->port, log_q(req->source));
    return 0;
}

/* ---- recording --------------------------------------------------------- */

/* A recording that could not start or stopped: logged and audited. */
static void note_recording_failed(gw_session *s, const char *reason)
{
    log_event(LOG_ERROR, "recording.failed", "sid=%s vm=%s required=%d err=%s", s->entry.id,
              s->vm_name, s->rec_required, log_q(reason));
    audit(s, "recording.failed",
          json_pack("{s:s,s:s,s:s,s:b,s:s}", "session", s->entry.id, "user", s->entry.user,
                    "vm", s->vm_name, "required", s->rec_required, "reason", reason));
}

/* The file could not be written. A VM that requires recording loses the
 * session rather than have it go on unrecorded; otherwise the user is told
 * and the session goes on. */
static void on_rec_failed(void *ud, const char *message)
{
    gw_session *s = ud;
    note_recording_failed(s, message);
    stop_recording(s);
    if (!s->rec_required) {
        gw_ws_status(s->ws, "the session is no longer recorded: the recording cannot be written",
                     NULL);
        gw_session_apply_pause(s);
        return;
    }
    char reason[256];
    snprintf(reason, sizeof(reason), "this VM requires session recording, and %s", message);
    gw_session_fail(s, "recording_failed", reason, GW_WS_CLOSE_INTERNAL);
}

static void on_rec_drain(void *ud)
{
    gw_session *s = ud;
    s->rec_full = false;
    gw_session_apply_pause(s);
}

/* A VM that requires recording shows nothing until the file exists: its
 * output waits at the target, unread, till then. */
static void on_rec_ready(void *ud)
{
    gw_session *s = ud;
    s->rec_waiting = false;
    gw_session_apply_pause(s);
}

static const rec_callbacks rec_cbs = {
    .on_failed = on_rec_failed, .on_drain = on_rec_drain, .on_ready = on_rec_ready};

int gw_session_record(gw_session *s, const gw_vm *vm, int cols, int rows)
{
    gw_server *srv = s->srv;
    if (vm->recording == GW_REC_OFF)
        return 0;
    s->rec_required = vm->recording == GW_REC_REQUIRED;
    int rc = PST_E_STATE;
    if (srv->recordings) {
        rec_meta m = {
            .session_id = s->entry.id,
            .user = s->entry.user,
            .vm = vm->name,
            .source = s->entry.source,
            .instance = srv->instance,
            .protocol = protocol(s),
            .started_ms = (int64_t)s->entry.started * 1000,
            .cols = cols,
            .rows = rows,
            .record_input = srv->cfg->recording.input,
        };
        rc = rec_open(srv->recordings, &m, &rec_cbs, s, &s->rec);
    }
    if (rc == 0) {
        s->rec_waiting = s->rec_required;
        return 0;
    }
    s->rec = NULL;
    const char *cause = srv->recordings ? pst_strerror(rc) : "the recording store is unavailable";
    if (s->rec_required) {
        char why[256];
        snprintf(why, sizeof(why), "this VM requires session recording, and the recording "
                                   "cannot be started (%s)", cause);
        note_recording_failed(s, why);
        gw_session_fail(s, "recording_failed", why, GW_WS_CLOSE_INTERNAL);
        return rc;
    }
    /* "on": the session goes on, but nobody may be left thinking it is
     * recorded. */
    note_recording_failed(s, cause);
    gw_ws_status(s->ws, "this session is not recorded: the recording cannot be started", NULL);
    return 0;
}

/* ---- callbacks from the back end ------------------------------------- */

static void on_state(void *ud, proxy_state st, const char *message)
{
    gw_session *s = ud;
    if (s->hooks->on_state)
        s->hooks->on_state(s, st, message);
}

static void on_data(void *ud, const char *buf, size_t len)
{
    gw_session *s = ud;
    /* Into the recording before the client: what the user saw is what the
     * auditor sees. */
    if (s->hooks->on_output)
        s->hooks->on_output(s, buf, len);
    if (s->rec && rec_output(s->rec, buf, len) == 1 && !s->rec_full) {
        s->rec_full = true;
        gw_session_apply_pause(s);
    }
    s->entry.bytes_out += len;
    s->srv->metrics.bytes_out += len;
    if (s->touch_on_output)
        gw_ws_touch(s->ws);
    if (gw_ws_send_output(s->ws, buf, len) != 0)
        gw_session_stop(s, "out_of_memory");
}

static void on_writable(void *ud)
{
    gw_session *s = ud;
    if (s->rx_paused) {
        s->rx_paused = false;
        gw_ws_rx_pause(s->ws, false);
    }
}

static int known_identity_path(gw_session *s, char *out, size_t n)
{
    char dir[TLS_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/known_hosts", s->srv->cfg->state_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    if ((size_t)snprintf(out, n, "%s/%s.%s", dir, s->vm_name, protocol(s)) >= n)
        return -ENAMETOOLONG;
    return 0;
}

static int emit_string(FILE *f, void *ctx) { return fputs(ctx, f) >= 0; }

static void on_identity(void *ud, const char *sha256)
{
    gw_session *s = ud;
    char path[TLS_PATH_MAX + 64], err[256];
    if (known_identity_path(s, path, sizeof(path)) != 0 ||
        pst_write_file_atomic(path, 0600, emit_string, (void *)sha256, err, sizeof(err)) != 0) {
        log_event(LOG_ERROR, "hostkey.store_failed", "vm=%s", s->vm_name);
        return;
    }
    audit(s, "hostkey.learned",
          json_pack("{s:s,s:s,s:s}", "vm", s->vm_name, "sha256", sha256, "user", s->entry.user));
    log_event(LOG_INFO, "hostkey.learned", "vm=%s sha256=%s", s->vm_name, sha256);
}

/* The machine-readable reason a client may act on (docs/protocol.md). */
static const char *end_reason(proxy_end why)
{
    switch (why) {
    case PROXY_END_CLOSED: return "closed";
    case PROXY_END_UNREACHABLE:
    case PROXY_END_REFUSED:
    case PROXY_END_TIMEOUT: return "unreachable";
    case PROXY_END_AUTH_FAILED: return "auth_failed";
    case PROXY_END_HOSTKEY_MISMATCH: return "hostkey_mismatch";
    case PROXY_END_HOSTKEY_UNKNOWN: return "hostkey_unknown";
    case PROXY_END_PROTOCOL: return "protocol";
    case PROXY_END_LOCAL: return "internal";
    case PROXY_END_RESET: return "reset";
    }
    return "closed";
}

static void on_end(void *ud, proxy_end why, int exit_status, const char *detail)
{
    gw_session *s = ud;
    char message[256];
    s->hooks->end_words(s, why, exit_status, message, sizeof(message));
    if (why == PROXY_END_HOSTKEY_MISMATCH)
        audit(s, "hostkey.mismatch",
              json_pack("{s:s,s:s,s:s}", "vm", s->vm_name, "user", s->entry.user, "detail",
                        detail));
    if (why != PROXY_END_CLOSED)
        s->srv->metrics.errors[GW_ERR_SESSION]++;
    char event[32]; /* ssh.end, tunnel.end: each back end's own event */
    snprintf(event, sizeof(event), "%s.end", protocol(s));
    log_event(why == PROXY_END_CLOSED ? LOG_INFO : LOG_WARN, event,
              "sid=%s vm=%s protocol=%s why=%s detail=%s", s->entry.id, s->vm_name, protocol(s),
              proxy_end_name(why), log_q(detail));
    /* The proxy is closed after the bytes it delivered are counted. */
    json_t *last;
    if (why == PROXY_END_CLOSED) {
        last = s->hooks->closed_message
                   ? s->hooks->closed_message(s, message, exit_status)
                   : json_pack("{s:s,s:s,s:s}", "type", "closed", "state", "closed", "message",
                               message);
        if (last && exit_status >= 0)
            json_object_set_new(last, "exit_status", json_integer(exit_status));
    } else {
        last = json_pack("{s:s,s:s,s:s,s:s}", "type", "error", "state", "closed", "reason",
                         end_reason(why), "message", message);
    }
    gw_session_stop(s, proxy_end_name(why));
    /* A reset ends the exchange, not the protocol: no policy close. */
    int code = why == PROXY_END_CLOSED || why == PROXY_END_RESET ? GW_WS_CLOSE_NORMAL
                                                                  : GW_WS_CLOSE_POLICY;
    gw_ws_end(s->ws, last, code);
}

static const proxy_callbacks callbacks = {
    .on_state = on_state,
    .on_data = on_data,
    .on_identity = on_identity,
    .on_writable = on_writable,
    .on_end = on_end,
};

char *gw_read_small_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (buf && n == 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static char *read_learned(gw_session *s)
{
    char path[TLS_PATH_MAX + 64];
    char *fp = known_identity_path(s, path, sizeof(path)) == 0 ? gw_read_small_file(path, 128)
                                                                : NULL;
    if (fp)
        fp[strcspn(fp, "\r\n")] = '\0';
    return fp;
}

int gw_session_connect(gw_session *s, const proxy_target *target)
{
    gw_server *srv = s->srv;
    proxy_target t = *target;
    if (t.connect_timeout_ms <= 0)
        t.connect_timeout_ms = CONNECT_TIMEOUT_MS;
    char *learned = NULL;
    if (!t.pinned_sha256 && t.trust_on_first_use)
        t.learned_sha256 = learned = read_learned(s);

    /* A session ends no later than the login (or token) it was opened on. */
    int max_s = srv->cfg->limits.max_session_seconds;
    int64_t login_left = gw_ws_req(s->ws)->id.expires - now_s();
    if (login_left < 1)
        login_left = 1;
    if (max_s == 0 || login_left < max_s)
        max_s = (int)(login_left < INT32_MAX ? login_left : INT32_MAX);
    gw_ws_set_timeouts(s->ws, srv->cfg->limits.idle_timeout_seconds, max_s);

    int rc = proxy_session_open(srv->loop, &t, &callbacks, s, &s->proxy);
    free(learned);
    if (rc != 0) {
        s->proxy = NULL;
        gw_session_fail(s, "internal", "the gateway could not start the connection",
                        GW_WS_CLOSE_INTERNAL);
        return rc;
    }
    gw_session_apply_pause(s); /* held while a required recording is not ready */
    return 0;
}

void gw_session_input(gw_session *s, const void *buf, size_t len)
{
    if (!s->proxy)
        return;
    s->entry.bytes_in += len;
    s->srv->metrics.bytes_in += len;
    gw_ws_touch(s->ws);
    if (s->rec)
        rec_input(s->rec, buf, len); /* kept only when the config asks */
    if (proxy_session_write(s->proxy, buf, len) == -ENOBUFS && !s->rx_paused) {
        /* The target is not taking input: stop reading the client. */
        s->rx_paused = true;
        gw_ws_rx_pause(s->ws, true);
    }
}

void gw_session_on_output_full(gw_ws_conn *c, bool full)
{
    gw_session *s = of(c);
    s->out_full = full;
    gw_session_apply_pause(s);
}

void gw_session_on_cut(gw_ws_conn *c, const char *reason) { gw_session_stop(of(c), reason); }

void gw_session_on_closed(gw_ws_conn *c) { gw_session_stop(of(c), "client closed"); }
