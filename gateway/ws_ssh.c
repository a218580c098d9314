/* The browser SSH console: one WebSocket per session (/ws/ssh?vm=NAME).
 *
 *   client -> gateway   text   {"type":"connect","username",...,"cols","rows"} (first)
 *                       text   {"type":"resize","cols","rows"}
 *                       binary keystrokes
 *   gateway -> client   text   {"type":"status"|"error"|"closed","message",...}
 *                       binary terminal output
 *
 * Flow control: output from the VM is queued toward the browser up to
 * WS_OUT_HIGH bytes; above it the SSH channel is no longer read (the VM's
 * sshd then waits on its window) until the queue drains below WS_OUT_LOW.
 * Input is bounded the same way in the other direction. */
#include "gateway/internal.h"

#include "common/atomic_file.h"
#include "common/err.h"
#include "common/log.h"
#include "proxy/proxy.h"
#include "recording/recording.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WS_MSG_MAX (64u << 10)  /* one client message, reassembled */
#define WS_OUT_HIGH (128u << 10) /* stop reading the VM above this */
#define WS_OUT_LOW (32u << 10)   /* and resume below this */
#define WS_CONNECT_TIMEOUT_MS 10000
#define WS_DIRECT_MAX 4096       /* output written at once when the path is clear */
/* lws_write's close opcode: lws 4.1 leaves it out of its public enum (its
 * comment sends callers to lws_close_reason) but handles the value 4 as a
 * close frame. The integration tests check a real close code arrives. */
#define WS_WRITE_CLOSE ((enum lws_write_protocol)4)

typedef struct out_frame {
    struct out_frame *next;
    size_t len;
    bool text;
    unsigned char data[]; /* LWS_PRE headroom, then the payload */
} out_frame;

typedef enum { WS_AWAIT_CONNECT, WS_CONNECTING, WS_RUNNING, WS_ENDING } ws_state;

struct gw_ws_session {
    gw_server *srv;
    struct lws *wsi;
    gw_ws_request *req; /* admission result, owned; req->vm not used after open */
    ws_state st;
    proxy_ssh *ssh;
    gw_session_entry entry;
    bool registered;
    char vm_name[GW_NAME_MAX + 1];
    out_frame *out_head, *out_tail;
    size_t out_bytes;
    bool out_full;      /* the queue toward the browser is above WS_OUT_HIGH */
    bool rec_full;      /* the recorder's queue is above REC_QUEUE_HIGH */
    recording *rec;     /* NULL: not recorded (or the recording stopped) */
    bool rec_required;
    bool rec_waiting;   /* required, and the file is not confirmed yet */
    bool rx_paused;
    unsigned char *msg;  /* grows to the largest message, at most WS_MSG_MAX */
    size_t msg_cap;
    size_t msg_len;
    bool msg_binary;
    char end_reason[160];
    int close_code;
    bool close_sent;
    /* timeouts, in uv_now() milliseconds */
    uint64_t started_ms;
    uint64_t last_input_ms;
    int idle_s, max_s; /* copied from the config at connect */
    bool warned_idle, warned_max;
};

/* A warning goes out this long before a timeout cuts the session (or half
 * the timeout, when that is shorter). */
#define WS_WARN_MS 60000ull

static int64_t now_s(void) { return (int64_t)time(NULL); }
static void arm_timeouts(gw_ws_session *ws);

static int queue(gw_ws_session *ws, const void *data, size_t len, bool text)
{
    out_frame *f = malloc(sizeof(*f) + LWS_PRE + len);
    if (!f)
        return -ENOMEM;
    f->next = NULL;
    f->len = len;
    f->text = text;
    memcpy(f->data + LWS_PRE, data, len);
    if (ws->out_tail)
        ws->out_tail->next = f;
    else
        ws->out_head = f;
    ws->out_tail = f;
    ws->out_bytes += len;
    lws_callback_on_writable(ws->wsi);
    return 0;
}

/* The VM is read only while both the browser and the recorder keep up
 * (and a required recording is ready). The proxy ignores a repeat. */
static void apply_pause(gw_ws_session *ws)
{
    if (ws->ssh)
        proxy_ssh_pause(ws->ssh, ws->out_full || ws->rec_full || ws->rec_waiting);
}

static void send_json(gw_ws_session *ws, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text) {
        queue(ws, text, strlen(text), true);
        free(text);
    }
}

static void send_status(gw_ws_session *ws, const char *msg)
{
    send_json(ws, json_pack("{s:s,s:s}", "type", "status", "message", msg));
}

static void audit(gw_ws_session *ws, const char *event, json_t *fields)
{
    auth_audit_write(ws->srv->audit, event, fields);
    json_decref(fields);
}

/* Ends the session: tells the client why (as a message it can show, and
 * as the close reason), then closes once the queue has drained. */
static void finish(gw_ws_session *ws, bool error, const char *message, int exit_status,
                   int close_code)
{
    if (ws->st == WS_ENDING)
        return;
    ws->st = WS_ENDING;
    size_t n = strnlen(message, sizeof(ws->end_reason) - 1); /* cut, on purpose */
    memcpy(ws->end_reason, message, n);
    ws->end_reason[n] = '\0';
    ws->close_code = close_code;
    json_t *m = json_pack("{s:s,s:s}", "type", error ? "error" : "closed", "message", message);
    if (exit_status >= 0)
        json_object_set_new(m, "exit_status", json_integer(exit_status));
    send_json(ws, m);
    lws_callback_on_writable(ws->wsi);
}

static void unregister(gw_ws_session *ws, const char *reason)
{
    if (!ws->registered)
        return;
    gw_server *srv = ws->srv;
    ws->registered = false;
    gw_sessions_remove(&srv->sessions, &ws->entry);
    if (srv->metrics.sessions_active[GW_PROTO_SSH])
        srv->metrics.sessions_active[GW_PROTO_SSH]--;
    audit(ws, "session.end",
          json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s}", "session", ws->entry.id, "user",
                    ws->entry.user, "vm", ws->entry.vm, "protocol", "ssh", "bytes_in",
                    (json_int_t)ws->entry.bytes_in, "bytes_out",
                    (json_int_t)ws->entry.bytes_out, "duration",
                    (json_int_t)(now_s() - ws->entry.started), "reason", reason));
    log_event(LOG_INFO, "session.end", "sid=%s user=%s vm=%s bytes_in=%llu bytes_out=%llu "
              "reason=%s", ws->entry.id, ws->entry.user, ws->entry.vm,
              (unsigned long long)ws->entry.bytes_in, (unsigned long long)ws->entry.bytes_out,
              log_q(reason));
    gw_server_session_ended(srv);
}

/* ---- recording --------------------------------------------------------- */

static void stop_recording(gw_ws_session *ws)
{
    if (!ws->rec)
        return;
    rec_finish(ws->rec); /* the writer flushes and signs it */
    ws->rec = NULL;
    ws->rec_full = false;
}

/* The session's two back ends, the VM's SSH and the recording, end. */
static void close_backends(gw_ws_session *ws)
{
    if (ws->ssh) {
        proxy_ssh_close(ws->ssh);
        ws->ssh = NULL;
    }
    stop_recording(ws);
}

/* A recording that could not start or stopped: logged and audited. */
static void note_recording_failed(gw_ws_session *ws, const char *reason)
{
    log_event(LOG_ERROR, "recording.failed", "sid=%s vm=%s required=%d err=%s", ws->entry.id,
              ws->vm_name, ws->rec_required, log_q(reason));
    audit(ws, "recording.failed",
          json_pack("{s:s,s:s,s:s,s:b,s:s}", "session", ws->entry.id, "user", ws->entry.user,
                    "vm", ws->vm_name, "required", ws->rec_required, "reason", reason));
}

/* The file could not be written. A VM that requires recording loses the
 * session rather than have it go on unrecorded; otherwise the user is told
 * and the session goes on. */
static void on_rec_failed(void *ud, const char *message)
{
    gw_ws_session *ws = ud;
    note_recording_failed(ws, message);
    stop_recording(ws);
    if (!ws->rec_required) {
        send_status(ws, "the session is no longer recorded: the recording cannot be written");
        apply_pause(ws);
        return;
    }
    char reason[256];
    snprintf(reason, sizeof(reason), "this VM requires session recording, and %s", message);
    close_backends(ws);
    unregister(ws, "recording_failed");
    finish(ws, true, reason, -1, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
}

static void on_rec_drain(void *ud)
{
    gw_ws_session *ws = ud;
    ws->rec_full = false;
    apply_pause(ws);
}

/* A VM that requires recording shows nothing until the file exists: its
 * output waits in the SSH channel, unread, till then. */
static void on_rec_ready(void *ud)
{
    gw_ws_session *ws = ud;
    ws->rec_waiting = false;
    apply_pause(ws);
}

static const rec_callbacks rec_cbs = {
    .on_failed = on_rec_failed, .on_drain = on_rec_drain, .on_ready = on_rec_ready};

/* Starts the session's recording when the VM's policy asks for one. False
 * when the session must be refused (why is set). */
static bool start_recording(gw_ws_session *ws, const gw_vm *vm, int cols, int rows, char *why,
                            size_t whylen)
{
    gw_server *srv = ws->srv;
    if (vm->recording == GW_REC_OFF)
        return true;
    ws->rec_required = vm->recording == GW_REC_REQUIRED;
    int rc = PST_E_STATE;
    if (srv->recordings) {
        rec_meta m = {
            .session_id = ws->entry.id,
            .user = ws->entry.user,
            .vm = vm->name,
            .source = ws->entry.source,
            .instance = srv->instance,
            .protocol = "ssh",
            .started_ms = (int64_t)ws->entry.started * 1000,
            .cols = cols,
            .rows = rows,
            .record_input = srv->cfg->recording.input,
        };
        rc = rec_open(srv->recordings, &m, &rec_cbs, ws, &ws->rec);
    }
    if (rc == 0) {
        ws->rec_waiting = ws->rec_required;
        return true;
    }
    ws->rec = NULL;
    const char *cause = srv->recordings ? pst_strerror(rc) : "the recording store is unavailable";
    if (ws->rec_required) {
        snprintf(why, whylen, "this VM requires session recording, and the recording cannot be "
                              "started (%s)", cause);
        note_recording_failed(ws, why);
        return false; /* the caller refuses */
    }
    /* "on": the session goes on, but nobody may be left thinking it is
     * recorded. */
    note_recording_failed(ws, cause);
    send_status(ws, "this session is not recorded: the recording cannot be started");
    return true;
}

/* ---- callbacks from the SSH back end ------------------------------------ */

static void on_ssh_status(void *ud, const char *message) { send_status(ud, message); }

static void on_ssh_ready(void *ud)
{
    gw_ws_session *ws = ud;
    ws->st = WS_RUNNING;
    send_json(ws, json_pack("{s:s,s:s}", "type", "status", "message", "connected"));
}

/* Interactive output (an echo, a prompt) goes out at once when nothing is
 * queued, instead of waiting a loop turn for WRITEABLE: that wait costs
 * lws two poll-mask changes (each an epoll_ctl pair in libuv) and a wakeup
 * per keystroke. What the kernel does not take, lws keeps and sends before
 * any later write (over HTTP/1.1 with no extension nothing else orders our
 * frames); while it holds such a remainder, output queues as usual. So lws
 * never holds more than one frame of WS_DIRECT_MAX, and no poll(2) is
 * needed to ask the socket first. True when written. */
static bool write_direct(gw_ws_session *ws, const char *buf, size_t len)
{
    if (ws->out_head || ws->st != WS_RUNNING || len > WS_DIRECT_MAX ||
        lws_partial_buffered(ws->wsi))
        return false;
    unsigned char frame[LWS_PRE + WS_DIRECT_MAX];
    memcpy(frame + LWS_PRE, buf, len);
    if (lws_write(ws->wsi, frame + LWS_PRE, len, LWS_WRITE_BINARY) < 0)
        lws_set_timeout(ws->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
    return true;
}

static void on_ssh_data(void *ud, const char *buf, size_t len)
{
    gw_ws_session *ws = ud;
    /* Into the recording before the browser: what the user saw is what
     * the auditor sees. */
    if (ws->rec && rec_output(ws->rec, buf, len) == 1 && !ws->rec_full) {
        ws->rec_full = true;
        apply_pause(ws);
    }
    if (write_direct(ws, buf, len)) {
        ws->entry.bytes_out += len;
        ws->srv->metrics.bytes_out += len;
        return;
    }
    if (queue(ws, buf, len, false) != 0) {
        finish(ws, true, "the gateway is out of memory", -1, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
        return;
    }
    ws->entry.bytes_out += len;
    ws->srv->metrics.bytes_out += len;
    if (!ws->out_full && ws->out_bytes > WS_OUT_HIGH) {
        ws->out_full = true;
        apply_pause(ws);
    }
}

static void on_ssh_writable(void *ud)
{
    gw_ws_session *ws = ud;
    if (ws->rx_paused) {
        ws->rx_paused = false;
        lws_rx_flow_control(ws->wsi, 1);
    }
}

static int known_key_path(gw_ws_session *ws, char *out, size_t n)
{
    char dir[TLS_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/known_hosts", ws->srv->cfg->state_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    if ((size_t)snprintf(out, n, "%s/%s.ssh", dir, ws->vm_name) >= n)
        return -ENAMETOOLONG;
    return 0;
}

static int emit_string(FILE *f, void *ctx) { return fputs(ctx, f) >= 0; }

static void on_ssh_key_learned(void *ud, const char *sha256)
{
    gw_ws_session *ws = ud;
    char path[TLS_PATH_MAX + 64], err[256];
    if (known_key_path(ws, path, sizeof(path)) != 0 ||
        pst_write_file_atomic(path, 0600, emit_string, (void *)sha256, err, sizeof(err)) != 0) {
        log_event(LOG_ERROR, "hostkey.store_failed", "vm=%s", ws->vm_name);
        return;
    }
    audit(ws, "hostkey.learned",
          json_pack("{s:s,s:s,s:s}", "vm", ws->vm_name, "sha256", sha256, "user", ws->entry.user));
    log_event(LOG_INFO, "hostkey.learned", "vm=%s sha256=%s", ws->vm_name, sha256);
}

static const char *end_words(proxy_end why)
{
    switch (why) {
    case PROXY_END_CLOSED: return "the session ended";
    case PROXY_END_UNREACHABLE: return "the VM is unreachable";
    case PROXY_END_REFUSED: return "the VM refused the connection (is SSH running on it?)";
    case PROXY_END_TIMEOUT: return "the VM did not answer in time";
    case PROXY_END_AUTH_FAILED: return "authentication failed: wrong user name, password or key";
    case PROXY_END_HOSTKEY_MISMATCH:
        return "the VM's host key does not match the pinned key: refusing to connect "
               "(possible impostor)";
    case PROXY_END_HOSTKEY_UNKNOWN: return "no host key is pinned for this VM";
    case PROXY_END_PROTOCOL: return "the VM did not speak SSH correctly";
    case PROXY_END_LOCAL: return "closed by the gateway";
    }
    return "the session ended";
}

static void on_ssh_end(void *ud, proxy_end why, int exit_status, const char *detail)
{
    gw_ws_session *ws = ud;
    char message[256];
    if (why == PROXY_END_CLOSED && exit_status >= 0)
        snprintf(message, sizeof(message), "the session ended (exit status %d)", exit_status);
    else
        snprintf(message, sizeof(message), "%s", end_words(why));
    if (why == PROXY_END_HOSTKEY_MISMATCH)
        audit(ws, "hostkey.mismatch",
              json_pack("{s:s,s:s,s:s}", "vm", ws->vm_name, "user", ws->entry.user, "detail",
                        detail));
    if (why != PROXY_END_CLOSED)
        ws->srv->metrics.errors[GW_ERR_SESSION]++;
    log_event(why == PROXY_END_CLOSED ? LOG_INFO : LOG_WARN, "ssh.end",
              "sid=%s vm=%s why=%s detail=%s", ws->entry.id, ws->vm_name, proxy_end_name(why),
              log_q(detail));
    stop_recording(ws);
    unregister(ws, proxy_end_name(why));
    finish(ws, why != PROXY_END_CLOSED, message, exit_status,
           why == PROXY_END_CLOSED ? LWS_CLOSE_STATUS_NORMAL : LWS_CLOSE_STATUS_POLICY_VIOLATION);
}

static const proxy_ssh_callbacks ssh_callbacks = {
    .on_status = on_ssh_status,
    .on_ready = on_ssh_ready,
    .on_data = on_ssh_data,
    .on_key_learned = on_ssh_key_learned,
    .on_end = on_ssh_end,
    .on_writable = on_ssh_writable,
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

static char *read_small_file(const char *path, size_t max)
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

static void wipe_json_strings(json_t *o)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (json_is_string(v))
            OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
    }
}

static void terminate_entry(gw_session_entry *e, const char *reason)
{
    gw_ws_session *ws = (gw_ws_session *)((char *)e - offsetof(gw_ws_session, entry));
    close_backends(ws);
    unregister(ws, "terminated");
    finish(ws, true, reason, -1, LWS_CLOSE_STATUS_GOINGAWAY);
}

static void handle_connect(gw_ws_session *ws, json_t *msg)
{
    gw_server *srv = ws->srv;
    const gw_vm *vm = gw_config_find_vm(srv->cfg, ws->vm_name);
    if (!vm || !vm->ssh.enabled) {
        finish(ws, true, "this VM is no longer configured for SSH", -1,
               LWS_CLOSE_STATUS_POLICY_VIOLATION);
        return;
    }
    const char *username = jstr(msg, "username");
    const char *password = jstr(msg, "password");
    const char *key = jstr(msg, "private_key");
    const char *passphrase = jstr(msg, "passphrase");
    int cols = 80, rows = 24;
    if (!size_ok(msg, &cols, &rows)) {
        finish(ws, true, "connect needs cols and rows from 1 to 1000", -1,
               LWS_CLOSE_STATUS_INVALID_PAYLOAD);
        return;
    }
    /* Without credentials of their own, the user asks for the gateway's
     * (credential injection): that is the admin login. */
    bool injected = !password && !key;
    unsigned need = injected ? AUTH_ACT_SSH_ADMIN_LOGIN : AUTH_ACT_SSH_LOGIN;
    char why[256];
    if (!(ws->req->granted & need)) {
        snprintf(why, sizeof(why), "you may not %s on %s", injected
                 ? "log in with the gateway's credentials" : "log in", vm->name);
        audit(ws, "access.denied",
              json_pack("{s:s,s:s,s:s,s:s,s:s}", "user", ws->req->id.user, "action",
                        auth_action_name(need), "vm", vm->name, "source", ws->req->source,
                        "reason", why));
        finish(ws, true, why, -1, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        return;
    }
    char *key_text = NULL;
    if (injected) {
        if (!vm->ssh.key_file) {
            finish(ws, true, "give a password or a private key: this VM has no gateway-held "
                             "key", -1, LWS_CLOSE_STATUS_POLICY_VIOLATION);
            return;
        }
        key_text = read_small_file(vm->ssh.key_file, 64 << 10);
        if (!key_text) {
            log_event(LOG_ERROR, "ssh.key_file", "vm=%s path=%s err=unreadable", vm->name,
                      log_q(vm->ssh.key_file));
            finish(ws, true, "the gateway cannot read this VM's key", -1,
                   LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
            return;
        }
        key = key_text;
        passphrase = NULL;
    }
    if (vm->ssh.username)
        username = vm->ssh.username; /* the config decides where it names one */
    if (!username || !*username || strlen(username) > 255) {
        finish(ws, true, "give a user name for the VM", -1, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        goto out;
    }

    snprintf(ws->entry.user, sizeof(ws->entry.user), "%s", ws->req->id.user);
    snprintf(ws->entry.vm, sizeof(ws->entry.vm), "%s", vm->name);
    snprintf(ws->entry.source, sizeof(ws->entry.source), "%s", ws->req->source);
    ws->entry.proto = GW_PROTO_SSH;
    ws->entry.terminate = terminate_entry;
    memcpy(ws->entry.login, ws->req->id.session_id, sizeof(ws->entry.login));
    if (gw_sessions_add(&srv->sessions, srv->cfg, vm, &ws->entry, why, sizeof(why)) != 0) {
        audit(ws, "access.denied",
              json_pack("{s:s,s:s,s:s,s:s,s:s}", "user", ws->req->id.user, "action",
                        auth_action_name(need), "vm", vm->name, "source", ws->req->source,
                        "reason", why));
        finish(ws, true, why, -1, (enum lws_close_status)1013);
        goto out;
    }
    /* Recorded before the VM is touched; no audit, no session. */
    json_t *start = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "session", ws->entry.id, "user",
                              ws->entry.user, "vm", vm->name, "protocol", "ssh", "action",
                              auth_action_name(need), "login", username, "source",
                              ws->req->source);
    int arc = auth_audit_write(srv->audit, "session.start", start);
    json_decref(start);
    if (arc != 0) {
        gw_sessions_remove(&srv->sessions, &ws->entry);
        finish(ws, true, "the audit log cannot be written; refusing the session", -1,
               LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
        goto out;
    }
    ws->registered = true;
    srv->metrics.sessions_active[GW_PROTO_SSH]++;
    srv->metrics.sessions_total[GW_PROTO_SSH]++;
    if (!start_recording(ws, vm, cols, rows, why, sizeof(why))) {
        unregister(ws, "recording_failed");
        finish(ws, true, why, -1, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
        goto out;
    }

    char known[TLS_PATH_MAX + 64];
    char *learned = NULL;
    if (!vm->ssh.host_key_sha256 && known_key_path(ws, known, sizeof(known)) == 0)
        learned = read_small_file(known, 128);
    if (learned)
        learned[strcspn(learned, "\r\n")] = '\0';
    proxy_ssh_params p = {
        .host = vm->address,
        .port = vm->ssh.port,
        .host_key_sha256 = vm->ssh.host_key_sha256,
        .learned_key = learned,
        .trust_on_first_use = vm->ssh.trust_on_first_use,
        .username = username,
        .password = key ? NULL : password,
        .private_key = key,
        .passphrase = passphrase,
        .cols = cols,
        .rows = rows,
        .connect_timeout_ms = WS_CONNECT_TIMEOUT_MS,
    };
    ws->st = WS_CONNECTING;
    ws->started_ms = ws->last_input_ms = uv_now(srv->loop);
    ws->idle_s = srv->cfg->limits.idle_timeout_seconds;
    ws->max_s = srv->cfg->limits.max_session_seconds;
    /* A console ends no later than the login (or token) it was opened on. */
    int64_t login_left = ws->req->id.expires - now_s();
    if (login_left < 1)
        login_left = 1;
    if (ws->max_s == 0 || login_left < ws->max_s)
        ws->max_s = (int)(login_left < INT32_MAX ? login_left : INT32_MAX);
    arm_timeouts(ws);
    log_event(LOG_INFO, "session.start", "sid=%s user=%s vm=%s source=%s", ws->entry.id,
              ws->entry.user, vm->name, log_q(ws->req->source));
    int rc = proxy_ssh_open(srv->loop, &p, &ssh_callbacks, ws, &ws->ssh);
    free(learned);
    if (rc == 0)
        apply_pause(ws); /* held while a required recording is not ready */
    if (rc != 0) {
        unregister(ws, "open_failed");
        finish(ws, true, "the gateway could not start the connection", -1,
               LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
    }
out:
    if (key_text) {
        OPENSSL_cleanse(key_text, strlen(key_text));
        free(key_text);
    }
}

/* "8 h", "90 min", "45 s": a configured duration as the user reads it. */
static void say_duration(int seconds, char *out, size_t n)
{
    if (seconds >= 3600 && seconds % 3600 == 0)
        snprintf(out, n, "%d h", seconds / 3600);
    else if (seconds >= 60 && seconds % 60 == 0)
        snprintf(out, n, "%d min", seconds / 60);
    else
        snprintf(out, n, "%d s", seconds);
}

static uint64_t warn_ms(int timeout_s)
{
    uint64_t t = (uint64_t)timeout_s * 1000;
    return t / 2 < WS_WARN_MS ? t / 2 : WS_WARN_MS;
}

/* Arms the lws timer for the next thing that can happen: a warning or a
 * cut. One timer per session, set to the nearest deadline, so idle
 * sessions cost no wakeups. */
static void arm_timeouts(gw_ws_session *ws)
{
    uint64_t now = uv_now(ws->srv->loop), next = UINT64_MAX;
    if (ws->idle_s) {
        uint64_t cut = ws->last_input_ms + (uint64_t)ws->idle_s * 1000;
        uint64_t warn = cut - warn_ms(ws->idle_s);
        next = ws->warned_idle || warn <= now ? cut : warn;
    }
    if (ws->max_s) {
        uint64_t cut = ws->started_ms + (uint64_t)ws->max_s * 1000;
        uint64_t warn = cut - warn_ms(ws->max_s);
        uint64_t t = ws->warned_max || warn <= now ? cut : warn;
        if (t < next)
            next = t;
    }
    if (next == UINT64_MAX)
        return;
    uint64_t delay = next > now ? next - now : 1;
    lws_set_timer_usecs(ws->wsi, (lws_usec_t)delay * 1000);
}

static void on_timer(gw_ws_session *ws)
{
    if (ws->st != WS_RUNNING && ws->st != WS_CONNECTING)
        return;
    uint64_t now = uv_now(ws->srv->loop);
    char msg[160], limit[32];
    if (ws->max_s) {
        uint64_t cut = ws->started_ms + (uint64_t)ws->max_s * 1000;
        if (now >= cut) {
            say_duration(ws->max_s, limit, sizeof(limit));
            snprintf(msg, sizeof(msg), "the session reached its maximum duration of %s", limit);
            unregister(ws, "max_duration");
            finish(ws, false, msg, -1, LWS_CLOSE_STATUS_POLICY_VIOLATION);
            return;
        }
        if (!ws->warned_max && now + warn_ms(ws->max_s) >= cut) {
            ws->warned_max = true;
            snprintf(msg, sizeof(msg), "the session will end in %llu s: maximum duration",
                     (unsigned long long)((cut - now + 999) / 1000));
            send_json(ws, json_pack("{s:s,s:s,s:s}", "type", "status", "message", msg,
                                    "warning", "max_duration"));
        }
    }
    if (ws->idle_s) {
        uint64_t cut = ws->last_input_ms + (uint64_t)ws->idle_s * 1000;
        if (now >= cut) {
            say_duration(ws->idle_s, limit, sizeof(limit));
            snprintf(msg, sizeof(msg), "the session was idle for %s and has been closed", limit);
            unregister(ws, "idle");
            finish(ws, false, msg, -1, LWS_CLOSE_STATUS_POLICY_VIOLATION);
            return;
        }
        if (!ws->warned_idle && now + warn_ms(ws->idle_s) >= cut) {
            ws->warned_idle = true;
            snprintf(msg, sizeof(msg), "the session will close in %llu s unless you type",
                     (unsigned long long)((cut - now + 999) / 1000));
            send_json(ws, json_pack("{s:s,s:s,s:s}", "type", "status", "message", msg,
                                    "warning", "idle"));
        }
    }
    arm_timeouts(ws);
}

static void handle_text(gw_ws_session *ws)
{
    json_t *msg = json_loadb((const char *)ws->msg, ws->msg_len, JSON_REJECT_DUPLICATES, NULL);
    /* The connect message carries a password or key: wipe the raw bytes
     * now and the parsed copies before freeing. */
    OPENSSL_cleanse(ws->msg, ws->msg_len);
    const char *type = msg && json_is_object(msg) ? jstr(msg, "type") : NULL;
    if (!type) {
        finish(ws, true, "control messages are JSON objects with a \"type\"", -1,
               LWS_CLOSE_STATUS_INVALID_PAYLOAD);
    } else if (strcmp(type, "connect") == 0) {
        if (ws->st != WS_AWAIT_CONNECT)
            finish(ws, true, "already connected", -1, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        else
            handle_connect(ws, msg);
    } else if (strcmp(type, "resize") == 0) {
        int cols, rows;
        if (!size_ok(msg, &cols, &rows))
            send_json(ws, json_pack("{s:s,s:s}", "type", "error", "message",
                                    "resize needs cols and rows from 1 to 1000"));
        else if (ws->ssh) {
            proxy_ssh_resize(ws->ssh, cols, rows);
            if (ws->rec)
                rec_resize(ws->rec, cols, rows);
        }
    } else {
        send_json(ws, json_pack("{s:s,s:s}", "type", "error", "message",
                                "unknown message type"));
    }
    if (msg) {
        wipe_json_strings(msg);
        json_decref(msg);
    }
}

static void handle_binary(gw_ws_session *ws)
{
    if (ws->st != WS_RUNNING && ws->st != WS_CONNECTING) {
        if (ws->st == WS_AWAIT_CONNECT)
            finish(ws, true, "send the connect message first", -1,
                   LWS_CLOSE_STATUS_POLICY_VIOLATION);
        return;
    }
    ws->entry.bytes_in += ws->msg_len;
    ws->srv->metrics.bytes_in += ws->msg_len;
    ws->last_input_ms = uv_now(ws->srv->loop);
    ws->warned_idle = false; /* the timer re-reads last_input when it fires */
    if (ws->rec)
        rec_input(ws->rec, ws->msg, ws->msg_len); /* kept only when the config asks */
    if (proxy_ssh_write(ws->ssh, ws->msg, ws->msg_len) == -ENOBUFS && !ws->rx_paused) {
        /* The VM is not taking input: stop reading the browser. */
        ws->rx_paused = true;
        lws_rx_flow_control(ws->wsi, 0);
    }
}

static int on_receive(gw_ws_session *ws, const void *in, size_t len)
{
    if (ws->st == WS_ENDING)
        return 0;
    if (lws_is_first_fragment(ws->wsi)) {
        ws->msg_len = 0;
        ws->msg_binary = lws_frame_is_binary(ws->wsi);
    }
    if (ws->msg_len + len > WS_MSG_MAX) {
        finish(ws, true, "message too large", -1, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
        return 0;
    }
    if (ws->msg_len + len > ws->msg_cap) {
        /* Grow, wiping the old copy: it may hold a password. */
        size_t cap = ws->msg_cap ? ws->msg_cap : 1024;
        while (cap < ws->msg_len + len)
            cap *= 2;
        if (cap > WS_MSG_MAX)
            cap = WS_MSG_MAX;
        unsigned char *grown = malloc(cap);
        if (!grown)
            return -1;
        if (ws->msg) {
            memcpy(grown, ws->msg, ws->msg_len);
            OPENSSL_cleanse(ws->msg, ws->msg_cap);
            free(ws->msg);
        }
        ws->msg = grown;
        ws->msg_cap = cap;
    }
    if (len)
        memcpy(ws->msg + ws->msg_len, in, len);
    ws->msg_len += len;
    if (!lws_is_final_fragment(ws->wsi))
        return 0;
    if (ws->msg_binary)
        handle_binary(ws);
    else
        handle_text(ws);
    ws->msg_len = 0;
    return 0;
}

static int on_writable(gw_ws_session *ws)
{
    out_frame *f = ws->out_head;
    if (f) {
        ws->out_head = f->next;
        if (!ws->out_head)
            ws->out_tail = NULL;
        ws->out_bytes -= f->len;
        int n = lws_write(ws->wsi, f->data + LWS_PRE, f->len,
                          f->text ? LWS_WRITE_TEXT : LWS_WRITE_BINARY);
        free(f);
        if (n < 0)
            return -1;
        if (ws->out_full && ws->out_bytes < WS_OUT_LOW) {
            ws->out_full = false;
            apply_pause(ws);
        }
        if (ws->out_head || ws->st == WS_ENDING)
            lws_callback_on_writable(ws->wsi);
        return 0;
    }
    if (ws->st == WS_ENDING && !ws->close_sent) {
        /* Send the close frame ourselves: with Debian's lws on libuv,
         * lws_close_reason() followed by -1 drops the connection without
         * one (the browser would see 1006 and no reason). The client's
         * answering close ends the connection; a client that never
         * answers is cut after a few seconds. */
        unsigned char buf[LWS_PRE + 125];
        size_t rlen = strlen(ws->end_reason);
        if (rlen > 123)
            rlen = 123;
        buf[LWS_PRE] = (unsigned char)(ws->close_code >> 8);
        buf[LWS_PRE + 1] = (unsigned char)(ws->close_code & 0xff);
        memcpy(buf + LWS_PRE + 2, ws->end_reason, rlen);
        ws->close_sent = true;
        if (lws_write(ws->wsi, buf + LWS_PRE, rlen + 2, WS_WRITE_CLOSE) < 0)
            return -1;
        lws_set_timeout(ws->wsi, PENDING_TIMEOUT_CLOSE_ACK, 3);
    }
    return 0;
}

static void release(gw_ws_session *ws)
{
    close_backends(ws);
    unregister(ws, ws->end_reason[0] ? ws->end_reason : "client closed");
    while (ws->out_head) {
        out_frame *f = ws->out_head;
        ws->out_head = f->next;
        free(f);
    }
    ws->out_tail = NULL;
    if (ws->msg) {
        OPENSSL_cleanse(ws->msg, ws->msg_cap);
        free(ws->msg);
        ws->msg = NULL;
    }
    free(ws->req);
    ws->req = NULL;
}

/* lws's per-session data is just a pointer: the session is allocated at
 * ESTABLISHED and freed at CLOSED, so its size is this file's business. */
int gw_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    gw_ws_session **slot = user;
    gw_ws_session *ws = slot ? *slot : NULL;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
        gw_server *srv = lws_context_user(lws_get_context(wsi));
        gw_ws_request *req = lws_get_opaque_user_data(wsi);
        lws_set_opaque_user_data(wsi, NULL);
        if (!req || !slot) {
            /* Not admitted through CONFIRM_UPGRADE: never happens unless
             * lws changes how it upgrades; refuse rather than guess. */
            log_event(LOG_ERROR, "ws.unadmitted", "has_req=%d", req != NULL);
            free(req);
            return -1;
        }
        ws = calloc(1, sizeof(*ws));
        if (!ws) {
            free(req);
            return -1;
        }
        *slot = ws;
        ws->srv = srv;
        ws->wsi = wsi;
        ws->req = req;
        snprintf(ws->vm_name, sizeof(ws->vm_name), "%s", req->vm_name);
        char why[256];
        if (strcmp(req->protocol, "ssh") != 0) {
            finish(ws, true, "this back end is not available in this build", -1,
                   LWS_CLOSE_STATUS_POLICY_VIOLATION);
            return 0;
        }
        if (gw_ws_authorize(srv, req, why, sizeof(why)) != 0) {
            finish(ws, true, why, -1, LWS_CLOSE_STATUS_POLICY_VIOLATION);
            return 0;
        }
        send_status(ws, "ready: send connect");
        return 0;
    }
    case LWS_CALLBACK_RECEIVE:
        return ws && ws->srv ? on_receive(ws, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws && ws->srv ? on_writable(ws) : -1;
    case LWS_CALLBACK_CLOSED:
        if (ws) {
            release(ws);
            free(ws);
            *slot = NULL;
        }
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        gw_ws_request_drop(wsi); /* admitted but never established */
        return 0;
    case LWS_CALLBACK_TIMER:
        if (ws)
            on_timer(ws);
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* The client answered the close frame we wrote ourselves; lws does
         * not know we sent one and would send a second. Just close. */
        return ws && ws->close_sent ? -1 : 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* lws hands the upgrade to the vhost's default protocol: us. */
        return gw_ws_on_confirm_upgrade(lws_context_user(lws_get_context(wsi)), wsi);
    default:
        return 0;
    }
}
