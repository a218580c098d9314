/* The recordings API, for auditors:
 *
 *   GET /api/recordings?user=&vm=&from=YYYY-MM-DD&to=YYYY-MM-DD&q=TEXT
 *   GET /api/recordings/ID          metadata + verification
 *   GET /api/recordings/ID/cast     the asciicast file (Range: bytes=A-[B])
 *
 * An auditor sees the recordings of the VMs their roles audit. Listing,
 * verifying and reading files walk directories and hash whole files, so
 * all of it runs on the thread pool (http_job.c); a client's ID reaches
 * the filesystem only through rec_path_find, which takes [0-9a-f]+ alone.
 * Every listing, view and download (from its first byte) is audited. */
#include "gateway/internal.h"

#include "common/err.h"
#include "common/log.h"
#include "recording/recording.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LIST_SCAN_MAX 5000 /* recordings looked at per listing */
#define LIST_MAX 500       /* recordings returned */
#define GW_STATE_DIR_MAX 1024

enum job_kind { JOB_LIST, JOB_SHOW, JOB_CAST };

typedef struct {
    gw_http_job base;
    enum job_kind kind;
    char state_dir[GW_STATE_DIR_MAX];
    char *pub_pem; /* JOB_SHOW: the store's public key, copied */
    /* request */
    char source[64]; /* who asks is id_.user */
    char f_user[AUTH_NAME_MAX + 1], f_vm[GW_NAME_MAX + 1];
    char q[REC_SEARCH_MAX + 1];
    int64_t from_ms, to_ms;
    char id[REC_ID_MAX + 1];
    bool has_range;
    uint64_t range_start, range_end; /* inclusive; end UINT64_MAX: to the end */
    /* result */
    int rc;
    rec_info *infos;
    size_t ninfos;
    rec_info info;
    rec_verify_result verify;
    char detail[256];
    int fd;
    uint64_t size;
    gw_identity id_; /* the requester (account pointer not used off the loop) */
} rec_job;

static void job_free(gw_http_job *j)
{
    rec_job *job = (rec_job *)j;
    free(job->infos);
    free(job->pub_pem);
    if (job->fd >= 0)
        close(job->fd);
    free(job);
}

/* ---- permissions --------------------------------------------------------- */

bool gw_may_audit_any(gw_server *srv, const gw_identity *id)
{
    char why[256];
    return (id->allowed_actions & AUTH_ACT_AUDITOR) &&
           auth_may(srv->cfg->roles, srv->cfg->nroles, id->account, AUTH_ACT_AUDITOR, NULL, why,
                    sizeof(why)) == 0;
}

/* Auditing is scoped by the roles' VM selectors; a VM no longer in the
 * config is judged by its name alone. */
static bool may_audit_vm(gw_server *srv, const gw_identity *id, const char *vm_name)
{
    if (!(id->allowed_actions & AUTH_ACT_AUDITOR))
        return false;
    const gw_vm *vm = gw_config_find_vm(srv->cfg, vm_name);
    auth_target t = {.name = vm_name};
    if (vm)
        t = gw_vm_target(vm);
    char why[256];
    return auth_may(srv->cfg->roles, srv->cfg->nroles, id->account, AUTH_ACT_AUDITOR, &t, why,
                    sizeof(why)) == 0;
}

/* Live until signed: a session that just ended is still being finished
 * by the writer, and its manifest follows within moments. */
static bool is_live(gw_server *srv, const char *id)
{
    if (srv->recordings && rec_store_writing(srv->recordings, id))
        return true;
    for (gw_session_entry *e = srv->sessions.head; e; e = e->next)
        if (strcmp(e->id, id) == 0)
            return true;
    return false;
}

static int audit(gw_server *srv, const char *event, json_t *fields)
{
    int rc = auth_audit_write(srv->audit, event, fields);
    json_decref(fields);
    return rc;
}

/* "live" while its session runs, then "finished" once signed. */
static const char *state_name(gw_server *srv, const rec_info *r)
{
    return is_live(srv, r->id) ? "live" : r->signed_ ? "finished" : "unfinished";
}

static json_t *info_json(gw_server *srv, const rec_info *r)
{
    const char *state = state_name(srv, r);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:s}", "id", r->id, "user", r->user,
                          "vm", r->vm, "source", r->source, "instance", r->instance,
                          "protocol", r->protocol, "started", (json_int_t)r->started_ms, "size",
                          (json_int_t)r->size, "state", state);
    if (o)
        json_object_set_new(o, "ended",
                            r->ended_ms ? json_integer((json_int_t)r->ended_ms) : json_null());
    return o;
}

/* ---- query parsing ------------------------------------------------------- */

/* "YYYY-MM-DD" -> ms at the start of that UTC day (+ a day - 1 ms for the
 * end of a range). */
static int parse_day(const char *s, bool end_of_day, int64_t *out)
{
    int y, m, d;
    char extra;
    if (strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &extra) != 3 || y < 1970 ||
        y > 9999 || m < 1 || m > 12 || d < 1 || d > 31)
        return PST_E_PARSE;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return PST_E_PARSE;
    *out = (int64_t)t * 1000 + (end_of_day ? 86400000 - 1 : 0);
    return 0;
}

/* A query argument, or "" when absent. False when too long.
 * lws_get_urlarg_by_name() wants the name with its '=' (libwebsockets 4.1
 * matches a prefix and returns what follows it), and stops at the first
 * argument longer than its buffer as if neither it nor any later one were
 * there: such a request is refused rather than answered unfiltered. */
static bool query_arg(struct lws *wsi, const char *name, char *out, size_t outlen)
{
    char buf[512], key[32];
    out[0] = '\0';
    for (int i = 0; i < 64; i++) {
        int flen = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen <= 0)
            break;
        if ((size_t)flen >= sizeof(buf))
            return false;
    }
    snprintf(key, sizeof(key), "%s=", name);
    const char *v = lws_get_urlarg_by_name(wsi, key, buf, (int)sizeof(buf));
    if (!v)
        return true;
    size_t n = strlen(v);
    if (n >= outlen)
        return false;
    memcpy(out, v, n + 1);
    return true;
}

/* "bytes=A-" or "bytes=A-B": one range only; anything else is ignored, as
 * RFC 9110 allows, and the whole file is sent. */
static void parse_range(struct lws *wsi, rec_job *job)
{
    char h[128];
    if (lws_hdr_copy(wsi, h, sizeof(h), WSI_TOKEN_HTTP_RANGE) <= 0 || strncmp(h, "bytes=", 6))
        return;
    char *p = h + 6, *end;
    if (!isdigit((unsigned char)*p))
        return;
    errno = 0;
    unsigned long long a = strtoull(p, &end, 10);
    if (errno || *end != '-')
        return;
    p = end + 1;
    unsigned long long b = UINT64_MAX;
    if (*p) {
        if (!isdigit((unsigned char)*p))
            return;
        b = strtoull(p, &end, 10);
        if (errno || *end || b < a)
            return;
    }
    job->has_range = true;
    job->range_start = a;
    job->range_end = b;
}

/* ---- thread pool --------------------------------------------------------- */

static bool matches(const rec_job *job, const rec_info *r)
{
    if (job->f_user[0] && strcmp(job->f_user, r->user) != 0)
        return false;
    if (job->f_vm[0] && strcmp(job->f_vm, r->vm) != 0)
        return false;
    if (job->q[0]) {
        bool found = false;
        if (rec_search_text(r->path, job->q, &found) != 0 || !found)
            return false;
    }
    return true;
}

static void run_list(rec_job *job)
{
    rec_info *all = NULL;
    size_t n = 0;
    job->rc = rec_list(job->state_dir, job->from_ms, job->to_ms, LIST_SCAN_MAX, &all, &n);
    if (job->rc != 0)
        return;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (matches(job, &all[i]))
            all[kept++] = all[i];
    job->infos = all;
    job->ninfos = kept;
}

static void run_one(rec_job *job)
{
    char path[1024];
    job->rc = rec_path_find(job->state_dir, job->id, path, sizeof(path));
    if (job->rc != 0)
        return;
    if ((job->rc = rec_info_read(path, &job->info)) != 0)
        return;
    if (job->kind == JOB_SHOW) {
        job->verify = job->pub_pem ? rec_verify_file(path, job->pub_pem, job->detail,
                                                     sizeof(job->detail))
                                   : REC_VERIFY_ERROR;
        if (!job->pub_pem)
            snprintf(job->detail, sizeof(job->detail), "the recording key is not available");
        return;
    }
    job->fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (job->fd < 0 || fstat(job->fd, &st) != 0) {
        job->rc = -errno;
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        job->rc = PST_E_NOTFOUND;
        return;
    }
    job->size = (uint64_t)st.st_size;
}

static void job_run(gw_http_job *j)
{
    rec_job *job = (rec_job *)j;
    if (job->kind == JOB_LIST)
        run_list(job);
    else
        run_one(job);
}

/* ---- answers, on the loop ------------------------------------------------ */

static int answer_list(gw_server *srv, struct lws *wsi, gw_http_conn *conn, rec_job *job)
{
    if (job->rc != 0)
        return gw_http_error_json(wsi, conn, 500, "the recordings cannot be listed");
    json_t *list = json_array();
    size_t shown = 0;
    for (size_t i = 0; i < job->ninfos && shown < LIST_MAX; i++) {
        if (!may_audit_vm(srv, &job->id_, job->infos[i].vm))
            continue;
        json_array_append_new(list, info_json(srv, &job->infos[i]));
        shown++;
    }
    if (audit(srv, "recording.list",
              json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "user", job->id_.user, "source", job->source,
                        "filter_user", job->f_user, "filter_vm", job->f_vm, "text", job->q,
                        "count", (json_int_t)shown)) != 0) {
        json_decref(list);
        return gw_http_error_json(wsi, conn, 503, "the audit log cannot be written");
    }
    return gw_http_json(wsi, conn, 200, json_pack("{s:o}", "recordings", list));
}

static int answer_one(gw_server *srv, struct lws *wsi, gw_http_conn *conn, rec_job *job)
{
    if (job->rc == PST_E_PARSE)
        return gw_http_error_json(wsi, conn, 400, "a recording id is hexadecimal");
    /* Not permitted looks like not found: an ID reveals nothing. */
    if (job->rc != 0 || !may_audit_vm(srv, &job->id_, job->info.vm))
        return gw_http_error_json(wsi, conn, 404, "no such recording");
    bool download = job->kind == JOB_CAST;
    if (!download || !job->has_range || job->range_start == 0) {
        if (audit(srv, download ? "recording.download" : "recording.view",
                  json_pack("{s:s,s:s,s:s,s:s,s:s}", "user", job->id_.user, "source", job->source,
                            "recording", job->id, "recorded_user", job->info.user, "vm",
                            job->info.vm)) != 0)
            return gw_http_error_json(wsi, conn, 503, "the audit log cannot be written");
    }
    if (!download) {
        json_t *o = info_json(srv, &job->info);
        json_object_set_new(o, "verification",
                            json_pack("{s:s,s:s}", "result", rec_verify_result_name(job->verify),
                                      "detail", job->detail));
        return gw_http_json(wsi, conn, 200, json_pack("{s:o}", "recording", o));
    }
    uint64_t start = 0, len = job->size;
    int status = 200;
    char range[96], disposition[128];
    /* The state rides on every part of the file, so that a follower learns
     * that the session ended without asking for the metadata (which
     * verifies the whole file and is audited as a view). */
    const char *state = state_name(srv, &job->info);
    gw_http_header hdrs[5] = {
        {"accept-ranges:", "bytes"},
        {"cache-control:", "no-store"},
        {"x-recording-state:", state},
        {"content-disposition:", disposition},
        {"content-range:", range},
    };
    size_t nh = 4;
    snprintf(disposition, sizeof(disposition), "attachment; filename=\"%s.cast\"", job->id);
    if (job->has_range) {
        if (job->range_start >= job->size) {
            /* A live recording's follower asks past the end until it grows. */
            snprintf(range, sizeof(range), "bytes */%llu", (unsigned long long)job->size);
            gw_http_header unsatisfied[] = {{"content-range:", range},
                                            {"cache-control:", "no-store"},
                                            {"x-recording-state:", state}};
            static const char msg[] = "{\"error\":\"the range starts past the end\"}";
            return gw_http_respond(wsi, conn, 416, "application/json", msg, sizeof(msg) - 1,
                                   false, unsatisfied, 3, false);
        }
        uint64_t last = job->range_end < job->size ? job->range_end : job->size - 1;
        start = job->range_start;
        len = last - start + 1;
        status = 206;
        snprintf(range, sizeof(range), "bytes %llu-%llu/%llu", (unsigned long long)start,
                 (unsigned long long)last, (unsigned long long)job->size);
        nh = 5;
    }
    int fd = job->fd;
    job->fd = -1; /* the response owns it now */
    return gw_http_respond_file(wsi, conn, status, "application/x-asciicast", fd, start, len,
                                hdrs, nh, conn->method == LWSHUMETH_HEAD);
}

static int job_answer(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_http_job *j)
{
    rec_job *job = (rec_job *)j;
    /* The identity was taken when the request came in; the account may
     * have been reloaded since. Look it up again. */
    job->id_.account = auth_users_find(srv->users, job->id_.user);
    if (!job->id_.account || job->id_.account->disabled)
        return gw_http_error_json(wsi, conn, 401, "not logged in, or the session expired");
    return job->kind == JOB_LIST ? answer_list(srv, wsi, conn, job)
                                 : answer_one(srv, wsi, conn, job);
}

/* ---- routing ------------------------------------------------------------- */

int gw_api_recordings(gw_server *srv, struct lws *wsi, gw_http_conn *conn, gw_identity *id)
{
    const char *path = conn->path;
    if (conn->method != LWSHUMETH_GET && conn->method != LWSHUMETH_HEAD)
        return gw_http_error_json(wsi, conn, 405, "use GET");
    if (!gw_may_audit_any(srv, id))
        return gw_http_error_json(wsi, conn, 403, "recordings are for auditors");
    if (!srv->recordings)
        return gw_http_error_json(wsi, conn, 503, "recordings are not available");
    rec_job *job = calloc(1, sizeof(*job));
    if (!job)
        return gw_http_error_json(wsi, conn, 500, "out of memory");
    job->fd = -1;
    job->base.run = job_run;
    job->base.answer = job_answer;
    job->base.free = job_free;
    job->id_ = *id;
    job->id_.account = NULL;
    gw_peer_address(wsi, job->source, sizeof(job->source));
    snprintf(job->state_dir, sizeof(job->state_dir), "%s", srv->cfg->state_dir);

    const char *rest = path + strlen("/api/recordings");
    const char *err = NULL;
    if (*rest == '\0') {
        char from[16], to[16];
        job->kind = JOB_LIST;
        if (!query_arg(wsi, "user", job->f_user, sizeof(job->f_user)) ||
            !query_arg(wsi, "vm", job->f_vm, sizeof(job->f_vm)) ||
            !query_arg(wsi, "q", job->q, sizeof(job->q)) ||
            !query_arg(wsi, "from", from, sizeof(from)) || !query_arg(wsi, "to", to, sizeof(to)))
            err = "a query argument is too long";
        else if ((from[0] && parse_day(from, false, &job->from_ms)) ||
                 (to[0] && parse_day(to, true, &job->to_ms)))
            err = "from and to are dates: YYYY-MM-DD";
    } else if (*rest == '/') {
        rest++;
        const char *slash = strchr(rest, '/');
        size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
        if (slash && strcmp(slash, "/cast") != 0) {
            job_free(&job->base);
            return gw_http_error_json(wsi, conn, 404, "no such API endpoint");
        }
        /* Only the length is checked here, for the copy: the recording
         * library refuses any other id (PST_E_PARSE, answered as 400). */
        if (idlen == 0 || idlen > REC_ID_MAX) {
            err = "a recording id is hexadecimal";
        } else {
            memcpy(job->id, rest, idlen);
            job->id[idlen] = '\0';
        }
        job->kind = slash ? JOB_CAST : JOB_SHOW;
        if (job->kind == JOB_CAST)
            parse_range(wsi, job);
        if (job->kind == JOB_SHOW && srv->recordings &&
            !(job->pub_pem = strdup(rec_store_public_key_pem(srv->recordings))))
            err = "out of memory";
    } else {
        job_free(&job->base);
        return gw_http_error_json(wsi, conn, 404, "no such API endpoint");
    }
    if (err) {
        job_free(&job->base);
        return gw_http_error_json(wsi, conn, 400, err);
    }
    if (gw_http_job_start(srv, wsi, conn, &job->base) != 0)
        return gw_http_error_json(wsi, conn, 503, "the gateway is busy; try again");
    return 0;
}

bool gw_recordings_page(const char *path)
{
    return strcmp(path, "/recordings.html") == 0 || strcmp(path, "/player.html") == 0;
}

/* ---- retention ----------------------------------------------------------- */

typedef struct deleted {
    struct deleted *next;
    rec_info info;
} deleted;

typedef struct {
    uv_work_t work;
    gw_server *srv;
    char state_dir[GW_STATE_DIR_MAX];
    int retention_days;
    int rc;
    deleted *head;
    unsigned unnamed; /* deletions whose details could not be kept */
} sweep_job;

static void note_deleted(void *ud, const rec_info *info)
{
    sweep_job *job = ud;
    deleted *d = malloc(sizeof(*d));
    if (!d) {
        job->unnamed++; /* the file is gone: at least its count is audited */
        return;
    }
    d->info = *info;
    d->next = job->head;
    job->head = d;
}

static void sweep_run(uv_work_t *w)
{
    sweep_job *job = w->data;
    job->rc = rec_sweep(job->state_dir, job->retention_days, (int64_t)time(NULL) * 1000,
                        note_deleted, job);
}

static void sweep_done(uv_work_t *w, int status)
{
    sweep_job *job = w->data;
    gw_server *srv = job->srv;
    unsigned n = 0;
    (void)status;
    while (job->head) {
        deleted *d = job->head;
        job->head = d->next;
        audit(srv, "recording.deleted",
              json_pack("{s:s,s:s,s:s,s:I,s:s}", "recording", d->info.id, "user", d->info.user,
                        "vm", d->info.vm, "started", (json_int_t)d->info.started_ms, "reason",
                        "retention"));
        free(d);
        n++;
    }
    if (job->unnamed) {
        audit(srv, "recording.deleted",
              json_pack("{s:s,s:i,s:s}", "recording", "(out of memory: not named)", "count",
                        job->unnamed, "reason", "retention"));
        n += job->unnamed;
    }
    log_event(job->rc ? LOG_WARN : LOG_INFO, "recording.sweep", "deleted=%u retention_days=%d%s%s",
              n, job->retention_days, job->rc ? " err=" : "", job->rc ? pst_strerror(job->rc) : "");
    srv->sweep_running = false;
    free(job);
}

void gw_recordings_sweep_start(gw_server *srv)
{
    if (srv->sweep_running || srv->cfg->recording.retention_days <= 0 || srv->stopping)
        return;
    sweep_job *job = calloc(1, sizeof(*job));
    if (!job)
        return;
    job->srv = srv;
    job->work.data = job;
    job->retention_days = srv->cfg->recording.retention_days;
    snprintf(job->state_dir, sizeof(job->state_dir), "%s", srv->cfg->state_dir);
    if (uv_queue_work(srv->loop, &job->work, sweep_run, sweep_done) != 0) {
        free(job);
        return;
    }
    srv->sweep_running = true;
}
