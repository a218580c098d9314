/* Tests for gateway/session.c, the session core, in isolation: admission
 * (the JIT gate, the caps per VM, per user and per instance, the audit
 * that must succeed), session.start/session.end and their fields, byte
 * counting both ways, back-pressure both ways (gw_session_apply_pause and
 * the client's rx pause), the recording policy, the end in words and the
 * last message, the identity learned on first use, the timers' bounds.
 *
 * The seams: the WebSocket core (gw_ws_*), the audit log
 * (auth_audit_write), the recorder (rec_*) and the back ends (the
 * proxy_tcp_ops / proxy_ssh_ops tables that proxy/session.c dispatches to)
 * are fakes below that record what the session asked of them. The
 * registry (sessions.c), the JIT gate (jit.c) and the dispatch are real. */
#include "unit_test.h"

#include "common/err.h"
#include "gateway/session.h"
#include "recording/recording.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- fake WebSocket core ---------------------------------------------- */

struct gw_ws_conn {
    gw_server *srv;
    gw_ws_request req;
    void *state;
    int fails;
    char fail_reason[64];
    char fail_message[256];
    int fail_code;
    int ends;
    json_t *last;
    int end_code;
    int statuses;
    char status_message[256];
    int touches;
    int rx_pause_calls;
    bool rx_paused;
    int timeouts_set, idle_s, max_s;
    char out[4096];
    size_t out_len;
    int send_rc;
};

gw_server *gw_ws_server(const gw_ws_conn *c) { return c->srv; }
void *gw_ws_state(const gw_ws_conn *c) { return c->state; }
gw_ws_request *gw_ws_req(const gw_ws_conn *c) { return (gw_ws_request *)&c->req; }

void gw_ws_fail(gw_ws_conn *c, const char *reason, const char *message, int close_code)
{
    c->fails++;
    snprintf(c->fail_reason, sizeof(c->fail_reason), "%s", reason);
    snprintf(c->fail_message, sizeof(c->fail_message), "%s", message);
    c->fail_code = close_code;
}

void gw_ws_end(gw_ws_conn *c, json_t *last, int close_code)
{
    c->ends++;
    json_decref(c->last);
    c->last = last;
    c->end_code = close_code;
}

void gw_ws_status(gw_ws_conn *c, const char *message, const char *warning)
{
    c->statuses++;
    snprintf(c->status_message, sizeof(c->status_message), "%s", message);
}

int gw_ws_send_output(gw_ws_conn *c, const void *data, size_t len)
{
    if (c->send_rc)
        return c->send_rc;
    assert_true(c->out_len + len <= sizeof(c->out));
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 0;
}

void gw_ws_touch(gw_ws_conn *c) { c->touches++; }

void gw_ws_rx_pause(gw_ws_conn *c, bool paused)
{
    c->rx_pause_calls++;
    c->rx_paused = paused;
}

void gw_ws_set_timeouts(gw_ws_conn *c, int idle_s, int max_s)
{
    c->timeouts_set++;
    c->idle_s = idle_s;
    c->max_s = max_s;
}

static int sessions_ended; /* gw_server_session_ended calls */
void gw_server_session_ended(gw_server *srv) { sessions_ended++; }

/* ---- fake audit log ----------------------------------------------------- */

#define MAX_EVENTS 32
static struct {
    char event[32];
    json_t *fields; /* a deep copy */
} events[MAX_EVENTS];
static int nevents;
static const char *audit_fail_event; /* this event's write fails */

int auth_audit_write(auth_audit *a, const char *event, json_t *fields)
{
    assert_non_null(a);
    if (audit_fail_event && strcmp(event, audit_fail_event) == 0)
        return -EIO;
    assert_true(nevents < MAX_EVENTS);
    snprintf(events[nevents].event, sizeof(events[nevents].event), "%s", event);
    events[nevents].fields = fields ? json_deep_copy(fields) : NULL;
    nevents++;
    return 0;
}

static int count_events(const char *event)
{
    int n = 0;
    for (int i = 0; i < nevents; i++)
        n += strcmp(events[i].event, event) == 0;
    return n;
}

/* The fields of the last event of that name; fails when there is none. */
static json_t *last_event(const char *event)
{
    for (int i = nevents - 1; i >= 0; i--)
        if (strcmp(events[i].event, event) == 0) {
            assert_non_null(events[i].fields);
            return events[i].fields;
        }
    fail_msg("no %s event audited", event);
    return NULL;
}

static const char *fstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("field %s is not a string", key);
    return json_string_value(v);
}

static json_int_t fint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("field %s is not an integer", key);
    return json_integer_value(v);
}

/* ---- fake recorder ------------------------------------------------------ */

struct recording {
    int id;
};
static struct recording the_recording;
static struct {
    int opens, finishes;
    int open_rc;
    int output_rc;
    size_t output_bytes, input_bytes;
    const rec_callbacks *cb;
    void *ud;
    char session_id[64], user[80], vm[80], source[64], instance[80], protocol[16];
    int64_t started_ms;
    int cols, rows;
    bool record_input;
} rec;

int rec_open(rec_store *st, const rec_meta *m, const rec_callbacks *cb, void *ud,
             recording **out)
{
    assert_non_null(st);
    rec.opens++;
    if (rec.open_rc)
        return rec.open_rc;
    rec.cb = cb;
    rec.ud = ud;
    snprintf(rec.session_id, sizeof(rec.session_id), "%s", m->session_id);
    snprintf(rec.user, sizeof(rec.user), "%s", m->user);
    snprintf(rec.vm, sizeof(rec.vm), "%s", m->vm);
    snprintf(rec.source, sizeof(rec.source), "%s", m->source);
    snprintf(rec.instance, sizeof(rec.instance), "%s", m->instance);
    snprintf(rec.protocol, sizeof(rec.protocol), "%s", m->protocol);
    rec.started_ms = m->started_ms;
    rec.cols = m->cols;
    rec.rows = m->rows;
    rec.record_input = m->record_input;
    *out = &the_recording;
    return 0;
}

int rec_output(recording *r, const void *buf, size_t len)
{
    assert_ptr_equal(r, &the_recording);
    rec.output_bytes += len;
    return rec.output_rc;
}

int rec_input(recording *r, const void *buf, size_t len)
{
    assert_ptr_equal(r, &the_recording);
    rec.input_bytes += len;
    return 0;
}

void rec_finish(recording *r)
{
    assert_ptr_equal(r, &the_recording);
    rec.finishes++;
}

/* ---- fake back end, behind the real proxy/session.c dispatch ------------ */

static struct {
    proxy_session base;
    int opens, closes;
    int open_rc;
    int write_rc;
    proxy_kind kind;
    char host[64];
    int port;
    int connect_timeout_ms;
    char learned[160];
    bool learned_set;
    uv_loop_t *loop;
    proxy_callbacks cb;
    void *ud;
    char in[4096];
    size_t in_len;
    int pause_calls;
    bool paused;
} be;

static int fake_open(const proxy_ops *ops, uv_loop_t *loop, const proxy_target *t,
                     const proxy_callbacks *cb, void *ud, proxy_session **out)
{
    be.opens++;
    be.base.ops = ops; /* the table the dispatch chose */
    be.kind = t->kind;
    snprintf(be.host, sizeof(be.host), "%s", t->host ? t->host : "");
    be.port = t->port;
    be.connect_timeout_ms = t->connect_timeout_ms;
    be.learned_set = t->learned_sha256 != NULL;
    snprintf(be.learned, sizeof(be.learned), "%s", t->learned_sha256 ? t->learned_sha256 : "");
    be.loop = loop;
    if (be.open_rc)
        return be.open_rc;
    be.cb = *cb;
    be.ud = ud;
    *out = &be.base;
    return 0;
}

static int fake_write(proxy_session *s, const void *buf, size_t len)
{
    assert_ptr_equal(s, &be.base);
    assert_true(be.in_len + len <= sizeof(be.in));
    memcpy(be.in + be.in_len, buf, len);
    be.in_len += len;
    return be.write_rc;
}

static void fake_pause(proxy_session *s, bool paused)
{
    assert_ptr_equal(s, &be.base);
    be.pause_calls++;
    be.paused = paused;
}

static void fake_close(proxy_session *s)
{
    assert_ptr_equal(s, &be.base);
    be.closes++;
}

static int fake_open_tcp(uv_loop_t *loop, const proxy_target *t, const proxy_callbacks *cb,
                         void *ud, proxy_session **out)
{
    return fake_open(&proxy_tcp_ops, loop, t, cb, ud, out);
}

static int fake_open_ssh(uv_loop_t *loop, const proxy_target *t, const proxy_callbacks *cb,
                         void *ud, proxy_session **out)
{
    return fake_open(&proxy_ssh_ops, loop, t, cb, ud, out);
}

const proxy_ops proxy_tcp_ops = {.name = "fake-tcp", .open = fake_open_tcp,
                                 .write = fake_write, .pause = fake_pause, .close = fake_close};
const proxy_ops proxy_ssh_ops = {.name = "fake-ssh", .open = fake_open_ssh,
                                 .write = fake_write, .pause = fake_pause, .close = fake_close};

/* ---- the endpoint's hooks ----------------------------------------------- */

static struct {
    int words_calls;
    proxy_end why;
    int exit_status;
    int states;
    proxy_state last_state;
    size_t output_bytes;
    int closed_messages;
} hk;

static void hook_end_words(gw_session *s, proxy_end why, int exit_status, char *message, size_t n)
{
    hk.words_calls++;
    hk.why = why;
    hk.exit_status = exit_status;
    snprintf(message, n, "words for %s", proxy_end_name(why));
}

static void hook_on_state(gw_session *s, proxy_state st, const char *message)
{
    hk.states++;
    hk.last_state = st;
}

static void hook_on_output(gw_session *s, const char *buf, size_t len)
{
    hk.output_bytes += len;
}

static json_t *hook_closed_message(gw_session *s, const char *words, int exit_status)
{
    hk.closed_messages++;
    return json_pack("{s:s,s:s,s:I}", "type", "closed", "words", words, "bytes_out",
                     (json_int_t)s->entry.bytes_out);
}

static const gw_session_hooks hooks = {
    .end_words = hook_end_words,
    .on_state = hook_on_state,
    .on_output = hook_on_output,
};

static const gw_session_hooks hooks_closed = {
    .end_words = hook_end_words,
    .closed_message = hook_closed_message,
};

static const gw_endpoint ep_tunnel = {
    .path = "/ws/tunnel", .protocol = "tunnel", .proto = GW_PROTO_TUNNEL,
    .actions = AUTH_ACT_TUNNEL, .needs_port = true};
static const gw_endpoint ep_ssh = {
    .path = "/ws/ssh", .protocol = "ssh", .proto = GW_PROTO_SSH, .actions = AUTH_ACT_SSH_LOGIN};

/* ---- fixture ------------------------------------------------------------ */

#define NCONN 4

typedef struct {
    gw_server srv;
    gw_config cfg;
    gw_vm vm, vm2;
    int jit_ports[2];
    char state_dir[256];
    gw_ws_conn c[NCONN];
    gw_session s[NCONN];
} fixture;

static int fake_audit_token, fake_store_token, fake_loop_token;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    if (!unit_tmpdir(f->state_dir, sizeof(f->state_dir), "session"))
        return -1;
    f->cfg.state_dir = f->state_dir;
    f->cfg.limits.max_sessions = 100;
    f->cfg.limits.max_sessions_per_user = 10;
    f->cfg.limits.idle_timeout_seconds = 300;
    f->cfg.limits.max_session_seconds = 3600;
    f->vm.name = "web01";
    f->vm.address = "10.0.0.5";
    f->vm2.name = "db01";
    f->vm2.address = "10.0.0.6";
    f->srv.cfg = &f->cfg;
    f->srv.audit = (auth_audit *)&fake_audit_token;
    f->srv.recordings = (struct rec_store *)&fake_store_token;
    f->srv.loop = (uv_loop_t *)&fake_loop_token;
    snprintf(f->srv.instance, sizeof(f->srv.instance), "gw-test");
    memset(&be, 0, sizeof(be));
    memset(&rec, 0, sizeof(rec));
    memset(&hk, 0, sizeof(hk));
    nevents = 0;
    audit_fail_event = NULL;
    sessions_ended = 0;
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < NCONN; i++) {
        if (f->c[i].srv)
            gw_session_stop(&f->s[i], "test over");
        json_decref(f->c[i].last);
    }
    for (int i = 0; i < nevents; i++)
        json_decref(events[i].fields);
    nevents = 0;
    nftw(f->state_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Session i: user on vm_name through endpoint ep at port, as the endpoint's
 * on_open would make it. */
static gw_session *conn(fixture *f, int i, const gw_endpoint *ep, const char *user,
                        const char *vm_name, int port, const gw_session_hooks *h)
{
    gw_ws_conn *c = &f->c[i];
    gw_session *s = &f->s[i];
    assert_false(s->registered); /* reused only once it ended */
    json_decref(c->last);
    memset(c, 0, sizeof(*c));
    memset(s, 0, sizeof(*s));
    c->srv = &f->srv;
    c->state = &f->s[i];
    snprintf(c->req.id.user, sizeof(c->req.id.user), "%s", user);
    snprintf(c->req.id.session_id, sizeof(c->req.id.session_id), "login-%s-%d", user, i);
    c->req.id.expires = (int64_t)time(NULL) + 86400;
    snprintf(c->req.vm_name, sizeof(c->req.vm_name), "%s", vm_name);
    c->req.ep = ep;
    c->req.port = port;
    snprintf(c->req.source, sizeof(c->req.source), "192.0.2.%d", 10 + i);
    gw_session_init(s, c, h ? h : &hooks);
    s->port = port;
    return s;
}

static gw_session *tunnel(fixture *f, int i, const char *user, const gw_vm *vm, int port)
{
    return conn(f, i, &ep_tunnel, user, vm->name, port, NULL);
}

/* Admitted and connected: the back end holds the session's callbacks. */
static gw_session *connected(fixture *f, int i)
{
    gw_session *s = tunnel(f, i, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    proxy_target t = {.kind = PROXY_TCP, .host = f->vm.address, .port = 22};
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_ptr_equal(s->proxy, &be.base);
    assert_ptr_equal(be.ud, s);
    return s;
}

/* ---- admission ---------------------------------------------------------- */

static void test_session__admit_registers_and_audits_start(void **state)
{
    fixture *f = *state;
    gw_session *s = tunnel(f, 0, "alice", &f->vm, 22);
    assert_string_equal(s->vm_name, "web01");
    assert_ptr_equal(s->srv, &f->srv);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, "root"), 0);
    assert_true(s->registered);
    assert_int_equal(f->srv.sessions.count, 1);
    assert_ptr_equal(f->srv.sessions.head, &s->entry);
    assert_string_equal(s->entry.user, "alice");
    assert_string_equal(s->entry.vm, "web01");
    assert_string_equal(s->entry.source, "192.0.2.10");
    assert_string_equal(s->entry.login, "login-alice-0");
    assert_int_equal(s->entry.proto, GW_PROTO_TUNNEL);
    assert_non_null(s->entry.terminate);
    assert_int_equal(strlen(s->entry.id), 32);
    assert_int_equal(f->srv.metrics.sessions_active[GW_PROTO_TUNNEL], 1);
    assert_int_equal(f->srv.metrics.sessions_total[GW_PROTO_TUNNEL], 1);
    assert_int_equal(f->srv.metrics.sessions_active[GW_PROTO_SSH], 0);
    assert_int_equal(f->c[0].fails, 0);

    assert_int_equal(count_events("session.start"), 1);
    json_t *e = last_event("session.start");
    assert_string_equal(fstr(e, "session"), s->entry.id);
    assert_string_equal(fstr(e, "user"), "alice");
    assert_string_equal(fstr(e, "vm"), "web01");
    assert_string_equal(fstr(e, "protocol"), "tunnel");
    assert_string_equal(fstr(e, "action"), "tunnel");
    assert_int_equal(fint(e, "port"), 22);
    assert_string_equal(fstr(e, "source"), "192.0.2.10");
    assert_string_equal(fstr(e, "login"), "root");

    /* Without a login the field is absent. */
    gw_session *s2 = conn(f, 1, &ep_ssh, "bob", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s2, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    e = last_event("session.start");
    assert_string_equal(fstr(e, "protocol"), "ssh");
    assert_string_equal(fstr(e, "action"), "ssh-login");
    assert_null(json_object_get(e, "login"));
    assert_string_not_equal(s2->entry.id, s->entry.id);
    assert_int_equal(f->srv.metrics.sessions_active[GW_PROTO_SSH], 1);
}

static void check_denied(fixture *f, int i, const char *reason, int code, const char *words)
{
    assert_int_equal(f->c[i].fails, 1);
    assert_string_equal(f->c[i].fail_reason, reason);
    assert_int_equal(f->c[i].fail_code, code);
    assert_string_equal(f->c[i].fail_message, words);
    json_t *e = last_event("access.denied");
    assert_string_equal(fstr(e, "reason"), words);
    assert_string_equal(fstr(e, "user"), f->c[i].req.id.user);
    assert_string_equal(fstr(e, "vm"), f->c[i].req.vm_name);
    assert_string_equal(fstr(e, "source"), f->c[i].req.source);
    assert_false(f->s[i].registered);
}

static void test_session__admit_jit_gate(void **state)
{
    fixture *f = *state;
    /* jit.required with no port list covers every port; no grant exists. */
    f->vm.jit.required = true;
    gw_session *s = tunnel(f, 0, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), PST_E_DENIED);
    check_denied(f, 0, "jit_required", GW_WS_CLOSE_POLICY,
                 "web01 requires just-in-time access for port 22, and you hold no live grant "
                 "for it: request access first");
    assert_string_equal(fstr(last_event("access.denied"), "action"), "tunnel");
    assert_int_equal(f->srv.sessions.count, 0);
    assert_int_equal(f->srv.metrics.sessions_total[GW_PROTO_TUNNEL], 0);
    assert_int_equal(count_events("session.start"), 0);

    /* Covering 3389 only: 22 passes, 3389 does not. */
    f->jit_ports[0] = 3389;
    f->vm.jit.ports = f->jit_ports;
    f->vm.jit.nports = 1;
    s = tunnel(f, 1, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    assert_int_equal(f->c[1].fails, 0);
    s = tunnel(f, 2, "alice", &f->vm, 3389);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), PST_E_DENIED);
    assert_int_equal(f->c[2].fails, 1);
    assert_string_equal(f->c[2].fail_reason, "jit_required");
    assert_int_equal(f->srv.sessions.count, 1);

    /* Not required: ports are not consulted. */
    f->vm.jit.required = false;
    s = tunnel(f, 3, "alice", &f->vm, 3389);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    assert_int_equal(f->srv.sessions.count, 2);
}

static void test_session__admit_vm_cap(void **state)
{
    fixture *f = *state;
    f->vm.max_sessions = 1;
    gw_session *s0 = tunnel(f, 0, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s0, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    gw_session *s1 = tunnel(f, 1, "bob", &f->vm, 22);
    assert_int_equal(gw_session_admit(s1, &f->vm, AUTH_ACT_TUNNEL, NULL), PST_E_LIMIT);
    check_denied(f, 1, "cap_reached", GW_WS_CLOSE_TRY_LATER,
                 "VM web01 already has its maximum of 1 sessions");
    assert_int_equal(f->srv.sessions.count, 1);
    assert_int_equal(f->srv.metrics.sessions_active[GW_PROTO_TUNNEL], 1);
    /* Another VM is not capped by this one. */
    gw_session *s2 = tunnel(f, 2, "bob", &f->vm2, 22);
    assert_int_equal(gw_session_admit(s2, &f->vm2, AUTH_ACT_TUNNEL, NULL), 0);
    /* Once the first ends, its slot is free again. */
    gw_session_stop(s0, "client closed");
    gw_session *s3 = tunnel(f, 3, "bob", &f->vm, 22);
    assert_int_equal(gw_session_admit(s3, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    assert_int_equal(f->c[3].fails, 0);
}

static void test_session__admit_user_cap(void **state)
{
    fixture *f = *state;
    f->cfg.limits.max_sessions_per_user = 2;
    gw_session *s;
    s = tunnel(f, 0, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    s = tunnel(f, 1, "alice", &f->vm2, 22);
    assert_int_equal(gw_session_admit(s, &f->vm2, AUTH_ACT_TUNNEL, NULL), 0);
    s = tunnel(f, 2, "alice", &f->vm2, 22);
    assert_int_equal(gw_session_admit(s, &f->vm2, AUTH_ACT_TUNNEL, NULL), PST_E_LIMIT);
    check_denied(f, 2, "cap_reached", GW_WS_CLOSE_TRY_LATER,
                 "you already have your maximum of 2 sessions");
    s = tunnel(f, 3, "bob", &f->vm2, 22);
    assert_int_equal(gw_session_admit(s, &f->vm2, AUTH_ACT_TUNNEL, NULL), 0);
    assert_int_equal(f->srv.sessions.count, 3);
}

static void test_session__admit_instance_cap(void **state)
{
    fixture *f = *state;
    f->cfg.limits.max_sessions = 2;
    /* The VM cap is named first when both refuse: it is the narrower. */
    f->vm.max_sessions = 1;
    gw_session *s;
    s = tunnel(f, 0, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    s = tunnel(f, 1, "bob", &f->vm2, 22);
    assert_int_equal(gw_session_admit(s, &f->vm2, AUTH_ACT_TUNNEL, NULL), 0);
    s = tunnel(f, 2, "carol", &f->vm2, 22);
    assert_int_equal(gw_session_admit(s, &f->vm2, AUTH_ACT_TUNNEL, NULL), PST_E_LIMIT);
    check_denied(f, 2, "cap_reached", GW_WS_CLOSE_TRY_LATER,
                 "this gateway already carries its maximum of 2 sessions");
    s = tunnel(f, 3, "carol", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), PST_E_LIMIT);
    assert_string_equal(f->c[3].fail_message, "VM web01 already has its maximum of 1 sessions");
}

/* Nothing starts unaudited: a failed session.start write refuses the
 * session and leaves no trace in the registry or metrics. */
static void test_session__admit_refused_when_audit_fails(void **state)
{
    fixture *f = *state;
    audit_fail_event = "session.start";
    gw_session *s = tunnel(f, 0, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), -EIO);
    assert_false(s->registered);
    assert_int_equal(f->srv.sessions.count, 0);
    assert_null(f->srv.sessions.head);
    assert_int_equal(f->srv.metrics.sessions_active[GW_PROTO_TUNNEL], 0);
    assert_int_equal(f->srv.metrics.sessions_total[GW_PROTO_TUNNEL], 0);
    assert_int_equal(f->c[0].fails, 1);
    assert_string_equal(f->c[0].fail_reason, "internal");
    assert_int_equal(f->c[0].fail_code, GW_WS_CLOSE_INTERNAL);
    /* Never started, so never ended. */
    gw_session_stop(s, "client closed");
    assert_int_equal(count_events("session.end"), 0);
    assert_int_equal(sessions_ended, 0);
}

/* ---- the end of a session ---------------------------------------------- */

static void test_session__stop_audits_end_once(void **state)
{
    fixture *f = *state;
    gw_session *s = connected(f, 0);
    char id[33];
    snprintf(id, sizeof(id), "%s", s->entry.id);
    gw_session_input(s, "abc", 3);
    gw_session_stop(s, "client closed");
    assert_null(s->proxy);
    assert_int_equal(be.closes, 1);
    assert_false(s->registered);
    assert_int_equal(f->srv.sessions.count, 0);
    assert_int_equal(f->srv.metrics.sessions_active[GW_PROTO_TUNNEL], 0);
    assert_int_equal(f->srv.metrics.sessions_total[GW_PROTO_TUNNEL], 1);
    assert_int_equal(sessions_ended, 1);
    assert_int_equal(count_events("session.end"), 1);
    json_t *e = last_event("session.end");
    assert_string_equal(fstr(e, "session"), id);
    assert_string_equal(fstr(e, "user"), "alice");
    assert_string_equal(fstr(e, "vm"), "web01");
    assert_string_equal(fstr(e, "protocol"), "tunnel");
    assert_int_equal(fint(e, "port"), 22);
    assert_int_equal(fint(e, "bytes_in"), 3);
    assert_int_equal(fint(e, "bytes_out"), 0);
    json_int_t d = fint(e, "duration");
    assert_true(d >= 0 && d <= 2);
    assert_string_equal(fstr(e, "reason"), "client closed");

    gw_session_stop(s, "again");
    gw_session_on_closed(&f->c[0]);
    assert_int_equal(be.closes, 1);
    assert_int_equal(count_events("session.end"), 1);
    assert_int_equal(sessions_ended, 1);
    f->c[0].srv = NULL; /* done: teardown leaves it */
}

static void test_session__cut_closed_and_fail_reasons(void **state)
{
    fixture *f = *state;
    gw_session *s = connected(f, 0);
    gw_session_on_cut(&f->c[0], "idle");
    assert_string_equal(fstr(last_event("session.end"), "reason"), "idle");
    assert_null(s->proxy);
    assert_int_equal(f->c[0].fails, 0); /* the core sends the words itself */

    s = tunnel(f, 1, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    gw_session_on_closed(&f->c[1]);
    assert_string_equal(fstr(last_event("session.end"), "reason"), "client closed");

    s = tunnel(f, 2, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    gw_session_fail(s, "bad_message", "bytes after eof", GW_WS_CLOSE_POLICY);
    assert_string_equal(fstr(last_event("session.end"), "reason"), "bad_message");
    assert_int_equal(f->c[2].fails, 1);
    assert_string_equal(f->c[2].fail_message, "bytes after eof");
    assert_int_equal(f->c[2].fail_code, GW_WS_CLOSE_POLICY);
    assert_int_equal(count_events("session.end"), 3);
    assert_int_equal(f->srv.sessions.count, 0);
}

/* The registry ends a session (drain, logout): stopped, told, audited. */
static void test_session__terminate_from_registry(void **state)
{
    fixture *f = *state;
    gw_session *s0 = connected(f, 0);
    gw_session *s1 = conn(f, 1, &ep_tunnel, "bob", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s1, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    gw_sessions_terminate_user(&f->srv.sessions, "alice", "your account was disabled");
    assert_null(s0->proxy);
    assert_false(s0->registered);
    assert_true(s1->registered);
    assert_int_equal(f->c[0].fails, 1);
    assert_string_equal(f->c[0].fail_reason, "terminated");
    assert_string_equal(f->c[0].fail_message, "your account was disabled");
    assert_int_equal(f->c[0].fail_code, GW_WS_CLOSE_GOING_AWAY);
    assert_string_equal(fstr(last_event("session.end"), "reason"), "terminated");
    assert_string_equal(fstr(last_event("session.end"), "user"), "alice");
    gw_sessions_terminate_all(&f->srv.sessions, "the gateway is shutting down");
    assert_false(s1->registered);
    assert_int_equal(f->c[1].fails, 1);
    assert_int_equal(f->srv.sessions.count, 0);
    assert_int_equal(f->srv.metrics.sessions_active[GW_PROTO_TUNNEL], 0);
}

/* ---- bytes ---------------------------------------------------------------- */

static void test_session__bytes_counted_both_ways(void **state)
{
    fixture *f = *state;
    gw_session *s = connected(f, 0);
    int touches = f->c[0].touches;
    gw_session_input(s, "hello", 5);
    gw_session_input(s, " world", 6);
    assert_int_equal(be.in_len, 11);
    assert_memory_equal(be.in, "hello world", 11);
    assert_int_equal(s->entry.bytes_in, 11);
    assert_int_equal(f->srv.metrics.bytes_in, 11);
    assert_int_equal(f->c[0].touches, touches + 2); /* input is activity */

    be.cb.on_data(be.ud, "0123456789", 10);
    be.cb.on_data(be.ud, "abc", 3);
    assert_int_equal(f->c[0].out_len, 13);
    assert_memory_equal(f->c[0].out, "0123456789abc", 13);
    assert_int_equal(hk.output_bytes, 13);
    assert_int_equal(s->entry.bytes_out, 13);
    assert_int_equal(f->srv.metrics.bytes_out, 13);
    assert_int_equal(f->c[0].touches, touches + 2); /* console output is not */
    s->touch_on_output = true;                      /* a tunnel's is */
    be.cb.on_data(be.ud, "z", 1);
    assert_int_equal(f->c[0].touches, touches + 3);

    gw_session_stop(s, "client closed");
    json_t *e = last_event("session.end");
    assert_int_equal(fint(e, "bytes_in"), 11);
    assert_int_equal(fint(e, "bytes_out"), 14);
    /* No back end any more: input is neither sent nor counted. */
    gw_session_input(s, "late", 4);
    assert_int_equal(s->entry.bytes_in, 11);
    assert_int_equal(be.in_len, 11);
}

static void test_session__input_before_connect_is_dropped(void **state)
{
    fixture *f = *state;
    gw_session *s = tunnel(f, 0, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    gw_session_input(s, "early", 5);
    assert_int_equal(s->entry.bytes_in, 0);
    assert_int_equal(f->srv.metrics.bytes_in, 0);
    assert_int_equal(f->c[0].touches, 0);
}

/* A client that cannot be queued for stops the session's output. */
static void test_session__send_failure_stops(void **state)
{
    fixture *f = *state;
    gw_session *s = connected(f, 0);
    f->c[0].send_rc = -ENOMEM;
    be.cb.on_data(be.ud, "abc", 3);
    assert_null(s->proxy);
    assert_int_equal(be.closes, 1);
    assert_string_equal(fstr(last_event("session.end"), "reason"), "out_of_memory");
    assert_int_equal(fint(last_event("session.end"), "bytes_out"), 3);
}

/* ---- back-pressure ------------------------------------------------------ */

/* The target takes no more input: the client is not read till on_writable. */
static void test_session__input_backpressure(void **state)
{
    fixture *f = *state;
    gw_session *s = connected(f, 0);
    be.write_rc = -ENOBUFS;
    gw_session_input(s, "a", 1);
    assert_true(s->rx_paused);
    assert_int_equal(f->c[0].rx_pause_calls, 1);
    assert_true(f->c[0].rx_paused);
    gw_session_input(s, "b", 1); /* already paused: said once */
    assert_int_equal(f->c[0].rx_pause_calls, 1);
    assert_int_equal(be.in_len, 2); /* the bytes were taken */
    assert_int_equal(s->entry.bytes_in, 2);

    be.write_rc = 0;
    be.cb.on_writable(be.ud);
    assert_false(s->rx_paused);
    assert_int_equal(f->c[0].rx_pause_calls, 2);
    assert_false(f->c[0].rx_paused);
    be.cb.on_writable(be.ud); /* not paused: nothing */
    assert_int_equal(f->c[0].rx_pause_calls, 2);

    /* Other errors do not pause the client. */
    be.write_rc = -EPIPE;
    gw_session_input(s, "c", 1);
    assert_int_equal(f->c[0].rx_pause_calls, 2);
}

/* The target is read only while the client's queue and the recorder keep
 * up: any of the three reasons pauses it, and it resumes when none holds. */
static void test_session__apply_pause_wiring(void **state)
{
    fixture *f = *state;
    gw_session *s = connected(f, 0);
    assert_int_equal(be.pause_calls, 1); /* gw_session_connect applies it once */
    assert_false(be.paused);

    gw_session_on_output_full(&f->c[0], true);
    assert_true(s->out_full);
    assert_true(be.paused);
    gw_session_on_output_full(&f->c[0], false);
    assert_false(be.paused);

    s->rec_full = true;
    gw_session_apply_pause(s);
    assert_true(be.paused);
    gw_session_on_output_full(&f->c[0], true);
    s->rec_full = false;
    gw_session_apply_pause(s);
    assert_true(be.paused); /* the client's queue still holds it */
    gw_session_on_output_full(&f->c[0], false);
    assert_false(be.paused);

    s->rec_waiting = true;
    gw_session_apply_pause(s);
    assert_true(be.paused);
    s->rec_waiting = false;
    gw_session_apply_pause(s);
    assert_false(be.paused);

    /* The client's rx pause is the other direction: not the target's. */
    s->rx_paused = true;
    gw_session_apply_pause(s);
    assert_false(be.paused);

    /* Without a back end there is nothing to pause. */
    int calls = be.pause_calls;
    gw_session_stop(s, "client closed");
    gw_session_on_output_full(&f->c[0], true);
    assert_int_equal(be.pause_calls, calls);
}

/* ---- recording ---------------------------------------------------------- */

static void test_session__record_off_does_nothing(void **state)
{
    fixture *f = *state;
    gw_session *s = connected(f, 0);
    f->vm.recording = GW_REC_OFF;
    assert_int_equal(gw_session_record(s, &f->vm, 80, 24), 0);
    assert_int_equal(rec.opens, 0);
    assert_null(s->rec);
    assert_int_equal(count_events("recording.failed"), 0);
}

static void test_session__record_opens_with_meta(void **state)
{
    fixture *f = *state;
    f->cfg.recording.input = true;
    f->vm.recording = GW_REC_ON;
    gw_session *s = conn(f, 0, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, "root"), 0);
    assert_int_equal(gw_session_record(s, &f->vm, 120, 40), 0);
    assert_ptr_equal(s->rec, &the_recording);
    assert_false(s->rec_required);
    assert_false(s->rec_waiting);
    assert_string_equal(rec.session_id, s->entry.id);
    assert_string_equal(rec.user, "alice");
    assert_string_equal(rec.vm, "web01");
    assert_string_equal(rec.source, "192.0.2.10");
    assert_string_equal(rec.instance, "gw-test");
    assert_string_equal(rec.protocol, "ssh");
    assert_int_equal(rec.started_ms, s->entry.started * 1000);
    assert_int_equal(rec.cols, 120);
    assert_int_equal(rec.rows, 40);
    assert_true(rec.record_input);
    assert_ptr_equal(rec.ud, s);

    proxy_target t = {.kind = PROXY_SSH, .host = f->vm.address, .port = 22};
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_false(be.paused);
    /* Both directions reach the recorder. */
    gw_session_input(s, "ls\r", 3);
    be.cb.on_data(be.ud, "file\r\n", 6);
    assert_int_equal(rec.input_bytes, 3);
    assert_int_equal(rec.output_bytes, 6);

    /* A recorder above its mark pauses the target until it drains. */
    rec.output_rc = 1;
    be.cb.on_data(be.ud, "more", 4);
    assert_true(s->rec_full);
    assert_true(be.paused);
    assert_int_equal(f->c[0].out_len, 10); /* what was read still goes out */
    rec.output_rc = 0;
    rec.cb->on_drain(rec.ud);
    assert_false(s->rec_full);
    assert_false(be.paused);

    gw_session_stop(s, "client closed");
    assert_int_equal(rec.finishes, 1);
    assert_null(s->rec);
    gw_session_stop(s, "client closed");
    assert_int_equal(rec.finishes, 1);
}

/* A VM that requires recording shows nothing until the file exists. */
static void test_session__record_required_waits_for_ready(void **state)
{
    fixture *f = *state;
    f->vm.recording = GW_REC_REQUIRED;
    gw_session *s = conn(f, 0, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    assert_int_equal(gw_session_record(s, &f->vm, 80, 24), 0);
    assert_true(s->rec_required);
    assert_true(s->rec_waiting);
    proxy_target t = {.kind = PROXY_SSH, .host = f->vm.address, .port = 22};
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_true(be.paused); /* held from the start */
    rec.cb->on_ready(rec.ud);
    assert_false(s->rec_waiting);
    assert_false(be.paused);

    /* The recording then fails: the session goes with it. */
    rec.cb->on_failed(rec.ud, "the disk is full");
    assert_int_equal(rec.finishes, 1);
    assert_null(s->rec);
    assert_null(s->proxy);
    assert_int_equal(be.closes, 1);
    assert_int_equal(f->c[0].fails, 1);
    assert_string_equal(f->c[0].fail_reason, "recording_failed");
    assert_string_equal(f->c[0].fail_message,
                        "this VM requires session recording, and the disk is full");
    assert_int_equal(f->c[0].fail_code, GW_WS_CLOSE_INTERNAL);
    json_t *e = last_event("recording.failed");
    assert_true(json_is_true(json_object_get(e, "required")));
    assert_string_equal(fstr(e, "reason"), "the disk is full");
    assert_string_equal(fstr(last_event("session.end"), "reason"), "recording_failed");
}

/* "on": a failing recording is said and audited, the session goes on. */
static void test_session__record_on_failure_goes_on(void **state)
{
    fixture *f = *state;
    f->vm.recording = GW_REC_ON;
    gw_session *s = conn(f, 0, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    assert_int_equal(gw_session_record(s, &f->vm, 80, 24), 0);
    proxy_target t = {.kind = PROXY_SSH, .host = f->vm.address, .port = 22};
    assert_int_equal(gw_session_connect(s, &t), 0);
    rec.output_rc = 1;
    be.cb.on_data(be.ud, "x", 1);
    assert_true(be.paused);
    rec.cb->on_failed(rec.ud, "the disk is full");
    assert_int_equal(rec.finishes, 1);
    assert_null(s->rec);
    assert_false(s->rec_full);
    assert_false(be.paused); /* no recorder to wait for any more */
    assert_non_null(s->proxy);
    assert_int_equal(f->c[0].fails, 0);
    assert_int_equal(f->c[0].statuses, 1);
    assert_string_equal(f->c[0].status_message,
                        "the session is no longer recorded: the recording cannot be written");
    assert_true(json_is_false(json_object_get(last_event("recording.failed"), "required")));
    be.cb.on_data(be.ud, "y", 1); /* no recorder: not called */
    assert_int_equal(rec.output_bytes, 1);
}

static void test_session__record_cannot_start(void **state)
{
    fixture *f = *state;
    /* "on" without a store: told, audited, admitted. */
    f->srv.recordings = NULL;
    f->vm.recording = GW_REC_ON;
    gw_session *s = conn(f, 0, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    assert_int_equal(gw_session_record(s, &f->vm, 80, 24), 0);
    assert_null(s->rec);
    assert_int_equal(rec.opens, 0);
    assert_int_equal(f->c[0].statuses, 1);
    assert_string_equal(f->c[0].status_message,
                        "this session is not recorded: the recording cannot be started");
    assert_string_equal(fstr(last_event("recording.failed"), "reason"),
                        "the recording store is unavailable");
    assert_int_equal(f->c[0].fails, 0);

    /* "required" without a store: refused. */
    f->vm.recording = GW_REC_REQUIRED;
    s = conn(f, 1, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    assert_int_equal(gw_session_record(s, &f->vm, 80, 24), PST_E_STATE);
    assert_int_equal(f->c[1].fails, 1);
    assert_string_equal(f->c[1].fail_reason, "recording_failed");
    assert_contains(f->c[1].fail_message, "the recording store is unavailable");
    assert_false(s->registered);

    /* "required" and the store refuses: the cause is named. */
    f->srv.recordings = (struct rec_store *)&fake_store_token;
    rec.open_rc = -ENOSPC;
    s = conn(f, 2, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    assert_int_equal(gw_session_record(s, &f->vm, 80, 24), -ENOSPC);
    assert_null(s->rec);
    assert_int_equal(f->c[2].fails, 1);
    assert_contains(f->c[2].fail_message, pst_strerror(-ENOSPC));
    assert_string_equal(fstr(last_event("session.end"), "reason"), "recording_failed");
}

/* ---- connecting ---------------------------------------------------------- */

static void test_session__connect_target_and_timers(void **state)
{
    fixture *f = *state;
    gw_session *s = tunnel(f, 0, "alice", &f->vm, 2222);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    proxy_target t = {.kind = PROXY_TCP, .host = "10.0.0.5", .port = 2222};
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_int_equal(be.opens, 1);
    assert_int_equal(be.kind, PROXY_TCP);
    assert_string_equal(be.base.ops->name, "fake-tcp");
    assert_string_equal(be.host, "10.0.0.5");
    assert_int_equal(be.port, 2222);
    assert_int_equal(be.connect_timeout_ms, 10000); /* the default */
    assert_ptr_equal(be.loop, f->srv.loop);
    assert_int_equal(f->c[0].timeouts_set, 1);
    assert_int_equal(f->c[0].idle_s, 300);
    assert_int_equal(f->c[0].max_s, 3600); /* the login lasts longer */
    /* The back end's progress reaches the endpoint. */
    be.cb.on_state(be.ud, PROXY_STATE_READY, "connected");
    assert_int_equal(hk.states, 1);
    assert_int_equal(hk.last_state, PROXY_STATE_READY);
    gw_session_stop(s, "client closed");

    /* A login that ends sooner bounds the session; a timeout given stays. */
    s = tunnel(f, 1, "alice", &f->vm, 22);
    f->c[1].req.id.expires = (int64_t)time(NULL) + 100;
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    t.connect_timeout_ms = 750;
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_int_equal(be.connect_timeout_ms, 750);
    assert_true(f->c[1].max_s >= 99 && f->c[1].max_s <= 100);
    gw_session_stop(s, "client closed");

    /* No configured maximum: the login's end still is one. */
    f->cfg.limits.max_session_seconds = 0;
    f->cfg.limits.idle_timeout_seconds = 0;
    s = tunnel(f, 2, "alice", &f->vm, 22);
    f->c[2].req.id.expires = (int64_t)time(NULL) + 50;
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_int_equal(f->c[2].idle_s, 0);
    assert_true(f->c[2].max_s >= 49 && f->c[2].max_s <= 50);
}

static void test_session__connect_failure(void **state)
{
    fixture *f = *state;
    gw_session *s = tunnel(f, 0, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    be.open_rc = -ENOMEM;
    proxy_target t = {.kind = PROXY_TCP, .host = "10.0.0.5", .port = 22};
    assert_int_equal(gw_session_connect(s, &t), -ENOMEM);
    assert_null(s->proxy);
    assert_int_equal(be.closes, 0);
    assert_int_equal(f->c[0].fails, 1);
    assert_string_equal(f->c[0].fail_reason, "internal");
    assert_string_equal(f->c[0].fail_message, "the gateway could not start the connection");
    assert_int_equal(f->c[0].fail_code, GW_WS_CLOSE_INTERNAL);
    assert_false(s->registered);
    assert_string_equal(fstr(last_event("session.end"), "reason"), "internal");

    /* A kind no back end serves is refused by the dispatch. */
    be.open_rc = 0;
    s = tunnel(f, 1, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    t.kind = PROXY_KIND_COUNT;
    assert_int_equal(gw_session_connect(s, &t), -EINVAL);
    assert_int_equal(be.opens, 1);
    assert_int_equal(f->c[1].fails, 1);
}

/* ---- the end, in words --------------------------------------------------- */

static void test_session__end_reasons_and_close_codes(void **state)
{
    static const struct {
        proxy_end why;
        const char *reason; /* the client's reason code; NULL: a "closed" message */
        int code;
    } cases[] = {
        {PROXY_END_CLOSED, NULL, GW_WS_CLOSE_NORMAL},
        {PROXY_END_UNREACHABLE, "unreachable", GW_WS_CLOSE_POLICY},
        {PROXY_END_REFUSED, "unreachable", GW_WS_CLOSE_POLICY},
        {PROXY_END_TIMEOUT, "unreachable", GW_WS_CLOSE_POLICY},
        {PROXY_END_AUTH_FAILED, "auth_failed", GW_WS_CLOSE_POLICY},
        {PROXY_END_HOSTKEY_MISMATCH, "hostkey_mismatch", GW_WS_CLOSE_POLICY},
        {PROXY_END_HOSTKEY_UNKNOWN, "hostkey_unknown", GW_WS_CLOSE_POLICY},
        {PROXY_END_PROTOCOL, "protocol", GW_WS_CLOSE_POLICY},
        {PROXY_END_LOCAL, "internal", GW_WS_CLOSE_POLICY},
        {PROXY_END_RESET, "reset", GW_WS_CLOSE_NORMAL},
    };
    fixture *f = *state;
    uint64_t errors = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_session *s = connected(f, 0);
        be.closes = 0;
        f->c[0].ends = 0;
        be.cb.on_end(be.ud, cases[i].why, -1, "detail");
        assert_int_equal(hk.why, cases[i].why);
        assert_int_equal(hk.exit_status, -1);
        assert_int_equal(be.closes, 1);
        assert_null(s->proxy);
        assert_false(s->registered);
        assert_int_equal(f->c[0].ends, 1);
        assert_int_equal(f->c[0].end_code, cases[i].code);
        json_t *last = f->c[0].last;
        assert_non_null(last);
        char words[64];
        snprintf(words, sizeof(words), "words for %s", proxy_end_name(cases[i].why));
        assert_string_equal(fstr(last, "message"), words);
        assert_string_equal(fstr(last, "state"), "closed");
        if (cases[i].reason) {
            assert_string_equal(fstr(last, "type"), "error");
            assert_string_equal(fstr(last, "reason"), cases[i].reason);
            errors++;
        } else {
            assert_string_equal(fstr(last, "type"), "closed");
            assert_null(json_object_get(last, "exit_status"));
        }
        assert_int_equal(f->srv.metrics.errors[GW_ERR_SESSION], errors);
        /* session.end names the back end's end. */
        assert_string_equal(fstr(last_event("session.end"), "reason"),
                            proxy_end_name(cases[i].why));
    }
    assert_int_equal(count_events("session.end"), 10);
    assert_int_equal(count_events("hostkey.mismatch"), 1);
    json_t *m = last_event("hostkey.mismatch");
    assert_string_equal(fstr(m, "vm"), "web01");
    assert_string_equal(fstr(m, "user"), "alice");
    assert_string_equal(fstr(m, "detail"), "detail");
    assert_int_equal(f->srv.sessions.count, 0);
}

/* The endpoint's own last message, with the exit status added; bytes are
 * counted before the back end is closed. */
static void test_session__closed_message_and_exit_status(void **state)
{
    fixture *f = *state;
    gw_session *s = conn(f, 0, &ep_ssh, "alice", "web01", 22, &hooks_closed);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    proxy_target t = {.kind = PROXY_SSH, .host = "10.0.0.5", .port = 22};
    assert_int_equal(gw_session_connect(s, &t), 0);
    be.cb.on_data(be.ud, "bye\r\n", 5);
    be.cb.on_end(be.ud, PROXY_END_CLOSED, 3, "");
    assert_int_equal(hk.closed_messages, 1);
    assert_int_equal(hk.exit_status, 3);
    json_t *last = f->c[0].last;
    assert_string_equal(fstr(last, "type"), "closed");
    assert_string_equal(fstr(last, "words"), "words for closed");
    assert_int_equal(fint(last, "bytes_out"), 5);
    assert_int_equal(fint(last, "exit_status"), 3);
    assert_int_equal(f->c[0].end_code, GW_WS_CLOSE_NORMAL);
    assert_int_equal(f->srv.metrics.errors[GW_ERR_SESSION], 0);

    /* The default closed message carries the exit status too. */
    s = conn(f, 1, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    assert_int_equal(gw_session_connect(s, &t), 0);
    be.cb.on_end(be.ud, PROXY_END_CLOSED, 0, "");
    assert_int_equal(fint(f->c[1].last, "exit_status"), 0);
    assert_string_equal(fstr(f->c[1].last, "message"), "words for closed");
}

/* ---- identity learned on first use -------------------------------------- */

static void test_session__identity_learned_then_offered(void **state)
{
    fixture *f = *state;
    gw_session *s = conn(f, 0, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    proxy_target t = {.kind = PROXY_SSH, .host = "10.0.0.5", .port = 22,
                      .trust_on_first_use = true};
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_string_equal(be.base.ops->name, "fake-ssh");
    assert_false(be.learned_set); /* nothing learned yet */
    be.cb.on_identity(be.ud, "SHA256:first-key");
    char path[512];
    snprintf(path, sizeof(path), "%s/known_hosts/web01.ssh", f->state_dir);
    char *text = gw_read_small_file(path, 128);
    assert_non_null(text);
    assert_string_equal(text, "SHA256:first-key");
    free(text);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    json_t *e = last_event("hostkey.learned");
    assert_string_equal(fstr(e, "vm"), "web01");
    assert_string_equal(fstr(e, "sha256"), "SHA256:first-key");
    assert_string_equal(fstr(e, "user"), "alice");
    gw_session_stop(s, "client closed");

    /* The next session is offered what was learned. */
    s = conn(f, 1, &ep_ssh, "bob", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_true(be.learned_set);
    assert_string_equal(be.learned, "SHA256:first-key");
    gw_session_stop(s, "client closed");

    /* A pinned key, or no trust on first use: the file is not consulted. */
    s = conn(f, 2, &ep_ssh, "bob", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    t.pinned_sha256 = "SHA256:pinned";
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_false(be.learned_set);
    gw_session_stop(s, "client closed");
    s = conn(f, 3, &ep_ssh, "bob", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    t.pinned_sha256 = NULL;
    t.trust_on_first_use = false;
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_false(be.learned_set);
}

/* A fingerprint file written by hand, with its newline, is read without it;
 * each protocol keeps its own file. */
static void test_session__learned_identity_is_one_line(void **state)
{
    fixture *f = *state;
    char path[512];
    snprintf(path, sizeof(path), "%s/known_hosts", f->state_dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/known_hosts/web01.tunnel", f->state_dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("SHA256:by-hand\r\nsecond line\n", fp);
    fclose(fp);
    gw_session *s = tunnel(f, 0, "alice", &f->vm, 22);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_TUNNEL, NULL), 0);
    proxy_target t = {.kind = PROXY_TCP, .host = "10.0.0.5", .port = 22,
                      .trust_on_first_use = true};
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_string_equal(be.learned, "SHA256:by-hand");
    gw_session_stop(s, "client closed");

    s = conn(f, 1, &ep_ssh, "alice", "web01", 22, NULL);
    assert_int_equal(gw_session_admit(s, &f->vm, AUTH_ACT_SSH_LOGIN, NULL), 0);
    assert_int_equal(gw_session_connect(s, &t), 0);
    assert_false(be.learned_set); /* web01.ssh does not exist */
}

/* A state directory that cannot hold the file: logged, not audited. */
static void test_session__identity_store_failure(void **state)
{
    fixture *f = *state;
    char path[512];
    snprintf(path, sizeof(path), "%s/known_hosts", f->state_dir);
    FILE *fp = fopen(path, "w"); /* a file where the directory should be */
    assert_non_null(fp);
    fclose(fp);
    gw_session *s = connected(f, 0);
    be.cb.on_identity(be.ud, "SHA256:lost");
    assert_int_equal(count_events("hostkey.learned"), 0);
    assert_non_null(s->proxy); /* the session goes on */
}

static void test_session__read_small_file(void **state)
{
    fixture *f = *state;
    char path[512];
    snprintf(path, sizeof(path), "%s/small", f->state_dir);
    assert_null(gw_read_small_file(path, 16)); /* missing */
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_null(gw_read_small_file(path, 16)); /* empty */
    fp = fopen(path, "w");
    fputs("0123456789abcdefXYZ", fp);
    fclose(fp);
    char *t = gw_read_small_file(path, 16);
    assert_non_null(t);
    assert_string_equal(t, "0123456789abcdef"); /* cut at max, terminated */
    free(t);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_session__admit_registers_and_audits_start),
        T(test_session__admit_jit_gate),
        T(test_session__admit_vm_cap),
        T(test_session__admit_user_cap),
        T(test_session__admit_instance_cap),
        T(test_session__admit_refused_when_audit_fails),
        T(test_session__stop_audits_end_once),
        T(test_session__cut_closed_and_fail_reasons),
        T(test_session__terminate_from_registry),
        T(test_session__bytes_counted_both_ways),
        T(test_session__input_before_connect_is_dropped),
        T(test_session__send_failure_stops),
        T(test_session__input_backpressure),
        T(test_session__apply_pause_wiring),
        T(test_session__record_off_does_nothing),
        T(test_session__record_opens_with_meta),
        T(test_session__record_required_waits_for_ready),
        T(test_session__record_on_failure_goes_on),
        T(test_session__record_cannot_start),
        T(test_session__connect_target_and_timers),
        T(test_session__connect_failure),
        T(test_session__end_reasons_and_close_codes),
        T(test_session__closed_message_and_exit_status),
        T(test_session__identity_learned_then_offered),
        T(test_session__learned_identity_is_one_line),
        T(test_session__identity_store_failure),
        T(test_session__read_small_file),
    };
#undef T
    /* The session core logs each start and end; keep the test output to
     * cmocka's own lines. */
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0)
        log_set_fd(devnull);
    return cmocka_run_group_tests_name("gateway/session", tests, NULL, NULL);
}
