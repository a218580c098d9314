/* rec_store and the loop side of each recording.
 *
 * The loop never touches the disk: each call stamps the time, copies the
 * bytes into a job and queues it for the store's writer thread
 * (writer.c). The writer answers through three notification nodes held
 * by each recording (failed, drained, done), queued under the same lock
 * and delivered by one uv_async; sends coalesce, so the callback drains
 * the whole list.
 *
 * Lifetime: a recording is freed on the loop when its "done" note
 * arrives, which the writer posts last, after it has finished with the
 * file. Notes are delivered in order, so no note can outlive its
 * recording; rec_finish sets "finished", which silences callbacks from
 * notes still on their way. */
#include "recording/internal.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* A caller that ignores rec_output's 1 and keeps writing would grow the
 * queue without bound: past this the recording fails instead. */
#define REC_QUEUE_MAX (8u * REC_QUEUE_HIGH)

void rec_note_push_locked(rec_store *st, rec_note *n)
{
    if (n->queued)
        return;
    n->queued = true;
    n->next = NULL;
    if (st->notes_tail)
        st->notes_tail->next = n;
    else
        st->notes = n;
    st->notes_tail = n;
}

/* Appends j to the writer's queue. The caller holds st->lock and decides
 * whether to signal st->wake (enqueue does not while the writer naps). */
static void job_push_locked(rec_store *st, rec_job *j)
{
    j->next = NULL;
    if (st->jobs_tail)
        st->jobs_tail->next = j;
    else
        st->jobs = j;
    st->jobs_tail = j;
}

static void free_recording(recording *r)
{
    free((char *)r->meta.session_id);
    free((char *)r->meta.user);
    free((char *)r->meta.vm);
    free((char *)r->meta.source);
    free((char *)r->meta.instance);
    free((char *)r->meta.protocol);
    free(r);
}

static void unlink_live(recording *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        r->st->live = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

/* Delivers every queued note. Loop thread. */
static void drain_notes(rec_store *st)
{
    uv_mutex_lock(&st->lock);
    rec_note *head = st->notes;
    /* The writer may queue a node again as soon as it is marked
     * unqueued, which rewrites its next: walk a private copy. */
    for (rec_note *n = head; n; n = n->next) {
        n->queued = false;
        n->lnext = n->next;
    }
    st->notes = st->notes_tail = NULL;
    uv_mutex_unlock(&st->lock);

    for (rec_note *n = head, *next; n; n = next) {
        next = n->lnext;
        recording *r = n->r;
        switch (n->kind) {
        case REC_NOTE_FAILED:
            if (!r->finished && !r->failed_told) {
                r->failed_told = true;
                /* Written before the note was queued, never after. */
                r->cb.on_failed(r->ud, r->message);
            }
            break;
        case REC_NOTE_DRAIN:
            if (!r->finished && r->cb.on_drain)
                r->cb.on_drain(r->ud);
            break;
        case REC_NOTE_READY:
            if (!r->finished && !r->failed_told && r->cb.on_ready)
                r->cb.on_ready(r->ud);
            break;
        case REC_NOTE_DONE:
            unlink_live(r);
            free_recording(r);
            break;
        }
    }
}

static void on_async(uv_async_t *h) { drain_notes(h->data); }

static int make_dir(const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (mkdir(path, 0700) != 0 && (errno != EEXIST || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        int rc = errno == EEXIST ? -ENOTDIR : -errno;
        snprintf(err, errlen, "cannot create directory %s: %s", path, pst_strerror(rc));
        return rc;
    }
    return 0;
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (s) {
        memcpy(s, dir, a);
        s[a] = '/';
        memcpy(s + a + 1, name, b + 1);
    }
    return s;
}

static void on_store_closed(uv_handle_t *h)
{
    rec_store *st = h->data;
    free(st->pub_pem);
    free(st);
}

int rec_store_open(uv_loop_t *loop, const char *state_dir, rec_store **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    int rc = -ENOMEM;
    char *keys_dir = NULL;
    rec_store *st = calloc(1, sizeof(*st));
    if (!st)
        goto nomem;
    st->loop = loop;
    st->recordings_dir = join(state_dir, "recordings");
    keys_dir = join(state_dir, "keys");
    st->scratch = malloc(REC_EVENT_LINE_MAX);
    if (!st->recordings_dir || !keys_dir || !st->scratch)
        goto nomem;
    if ((rc = make_dir(st->recordings_dir, err, errlen)) != 0 ||
        (rc = make_dir(keys_dir, err, errlen)) != 0 ||
        (rc = rec_key_load_or_create(keys_dir, &st->key, &st->pub_pem, err, errlen)) != 0)
        goto fail;
    if ((rc = rec_key_id(st->key, st->key_id)) != 0) {
        snprintf(err, errlen, "cannot hash the recording public key");
        goto fail;
    }
    if ((rc = uv_mutex_init(&st->lock)) != 0)
        goto fail_uv;
    if ((rc = uv_cond_init(&st->wake)) != 0) {
        uv_mutex_destroy(&st->lock);
        goto fail_uv;
    }
    if ((rc = uv_thread_create(&st->thread, rec_writer_main, st)) != 0)
        goto fail_sync;
    if ((rc = uv_async_init(loop, &st->async, on_async)) != 0) {
        uv_mutex_lock(&st->lock);
        st->stop = true;
        uv_cond_signal(&st->wake);
        uv_mutex_unlock(&st->lock);
        uv_thread_join(&st->thread);
        goto fail_sync;
    }
    st->async.data = st;
    /* The store must not keep the loop alive: at shutdown the gateway
     * runs its loop dry and only then calls rec_store_close(), which
     * delivers what is left itself. An active async handle made that
     * uv_run() never return (SIGTERM hung until SIGKILL, leaving the
     * recordings of the sessions it had just ended unsigned). */
    uv_unref((uv_handle_t *)&st->async);
    free(keys_dir);
    *out = st;
    return 0;

nomem:
    snprintf(err, errlen, "out of memory");
    goto fail;
fail_sync:
    uv_cond_destroy(&st->wake);
    uv_mutex_destroy(&st->lock);
fail_uv:
    snprintf(err, errlen, "cannot start the recording writer: %s", uv_strerror(rc));
fail:
    if (st) {
        EVP_PKEY_free(st->key);
        free(st->pub_pem);
        free(st->recordings_dir);
        free(st->scratch);
    }
    free(st);
    free(keys_dir);
    return rc;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Queues the FINISH job. Loop thread. */
static void finish(recording *r)
{
    rec_store *st = r->st;
    r->finished = true;
    r->ended_ms = wall_ms();
    if (r->ended_ms < r->meta.started_ms)
        r->ended_ms = r->meta.started_ms; /* the wall clock stepped back */
    rec_job *j = &r->job_finish;
    uv_mutex_lock(&st->lock);
    job_push_locked(st, j);
    uv_cond_signal(&st->wake);
    uv_mutex_unlock(&st->lock);
}

void rec_store_close(rec_store *st)
{
    if (!st)
        return;
    st->closing = true;
    for (recording *r = st->live; r; r = r->next)
        if (!r->finished)
            finish(r);
    uv_mutex_lock(&st->lock);
    st->stop = true;
    uv_cond_signal(&st->wake);
    uv_mutex_unlock(&st->lock);
    /* The writer empties its queue first: every recording is flushed and
     * signed before this returns. This is the one place the loop waits
     * for the disk, at shutdown, when finishing matters more. */
    uv_thread_join(&st->thread);
    drain_notes(st);
    /* Every recording got its "done" note; free any the writer never saw
     * as a guard against leaks, not as a path expected to run. */
    while (st->live) {
        recording *r = st->live;
        unlink_live(r);
        free_recording(r);
    }
    uv_cond_destroy(&st->wake);
    uv_mutex_destroy(&st->lock);
    EVP_PKEY_free(st->key);
    free(st->recordings_dir);
    free(st->scratch);
    /* pub_pem lives until the handle is closed: "valid as long as the
     * store". */
    uv_close((uv_handle_t *)&st->async, on_store_closed);
}

void rec_store_hold(rec_store *st)
{
    if (!st)
        return;
    uv_mutex_lock(&st->lock);
    st->held = true;
    uv_mutex_unlock(&st->lock);
}

const char *rec_store_public_key_pem(const rec_store *st) { return st->pub_pem; }

bool rec_store_writing(const rec_store *st, const char *session_id)
{
    for (const recording *r = st->live; r; r = r->next)
        if (strcmp(r->meta.session_id, session_id) == 0)
            return true;
    return false;
}

/* A repaired copy of s (NULL counts as ""), at most max bytes. */
static int copy_meta(const char **dst, const char *s, size_t max)
{
    if (!s)
        s = "";
    if (strlen(s) > max)
        return -EINVAL;
    char *c = rec_utf8_repair(s);
    if (!c)
        return -ENOMEM;
    /* Repair can lengthen a string (one bad byte, three good ones). */
    if (strlen(c) > max) {
        free(c);
        return -EINVAL;
    }
    *dst = c;
    return 0;
}

static bool size_valid(int cols, int rows)
{
    return cols >= 1 && cols <= 65535 && rows >= 1 && rows <= 65535;
}

int rec_open(rec_store *st, const rec_meta *m, const rec_callbacks *cb, void *ud,
             recording **out)
{
    *out = NULL;
    if (!st || st->closing || !cb || !cb->on_failed)
        return PST_E_STATE;
    if (!rec_id_valid(m->session_id))
        return PST_E_PARSE;
    if (!size_valid(m->cols, m->rows) || m->started_ms < 0)
        return -EINVAL;
    recording *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->st = st;
    r->meta = *m;
    r->meta.session_id = r->meta.user = r->meta.vm = NULL;
    r->meta.source = r->meta.instance = r->meta.protocol = NULL;
    int rc;
    if ((rc = copy_meta(&r->meta.session_id, m->session_id, REC_ID_MAX)) != 0 ||
        (rc = copy_meta(&r->meta.user, m->user, REC_USER_MAX)) != 0 ||
        (rc = copy_meta(&r->meta.vm, m->vm, REC_VM_MAX)) != 0 ||
        (rc = copy_meta(&r->meta.source, m->source, REC_SOURCE_MAX)) != 0 ||
        (rc = copy_meta(&r->meta.instance, m->instance, REC_INSTANCE_MAX)) != 0 ||
        (rc = copy_meta(&r->meta.protocol, m->protocol, REC_PROTOCOL_MAX)) != 0) {
        free_recording(r);
        return rc;
    }
    snprintf(r->file, sizeof(r->file), "%s.cast", m->session_id);
    r->t0_ns = uv_hrtime();
    r->cb = *cb;
    r->ud = ud;
    r->note_failed = (rec_note){.r = r, .kind = REC_NOTE_FAILED};
    r->note_drain = (rec_note){.r = r, .kind = REC_NOTE_DRAIN};
    r->note_ready = (rec_note){.r = r, .kind = REC_NOTE_READY};
    r->note_done = (rec_note){.r = r, .kind = REC_NOTE_DONE};
    r->job_open = (rec_job){.r = r, .kind = REC_JOB_OPEN, .t_ns = r->t0_ns};
    r->job_finish = (rec_job){.r = r, .kind = REC_JOB_FINISH};
    r->w.fd = -1;
    r->w.dayfd = -1;

    r->next = st->live;
    if (st->live)
        st->live->prev = r;
    st->live = r;

    uv_mutex_lock(&st->lock);
    job_push_locked(st, &r->job_open);
    uv_cond_signal(&st->wake);
    uv_mutex_unlock(&st->lock);
    *out = r;
    return 0;
}

/* Queues an event job: 0, 1 (pause), or the recording's error. */
static int enqueue(recording *r, rec_job_kind kind, const void *buf, size_t len, int cols,
                   int rows)
{
    rec_store *st = r->st;
    if (r->finished)
        return PST_E_STATE;
    uint64_t now = uv_hrtime();
    rec_job *j = malloc(sizeof(*j) + len);
    if (!j)
        return -ENOMEM;
    *j = (rec_job){.r = r, .kind = kind, .owned = true, .t_ns = now, .cols = cols,
                   .rows = rows, .len = len, .data = (uint8_t *)(j + 1)};
    /* The job's own size counts: a flood of one-byte reads costs memory
     * too. */
    j->cost = sizeof(*j) + len;
    if (len)
        memcpy(j->data, buf, len);

    bool notify = false;
    int rc;
    uv_mutex_lock(&st->lock);
    if (r->error) {
        rc = r->error;
        free(j);
    } else if (r->queued + j->cost > REC_QUEUE_MAX) {
        rc = r->error = -ENOBUFS;
        snprintf(r->message, sizeof(r->message),
                 "recording cannot be written: %s (the source did not pause)",
                 pst_strerror(rc));
        rec_note_push_locked(st, &r->note_failed);
        notify = true;
        free(j);
    } else {
        bool was_empty = st->jobs == NULL;
        job_push_locked(st, j);
        r->queued += j->cost;
        if (r->queued > REC_QUEUE_HIGH)
            r->want_drain = true;
        /* Once paused, stay paused until on_drain: the source may still
         * deliver what it had read. */
        rc = r->want_drain ? 1 : 0;
        /* The writer re-checks the queue before it sleeps: waking it is
         * only needed when it may be asleep on an empty queue, and not
         * while it naps between busy rounds. */
        if (was_empty && !st->napping)
            uv_cond_signal(&st->wake);
    }
    uv_mutex_unlock(&st->lock);
    if (notify) {
        log_event(LOG_ERROR, "recording.failed", "sid=%s err=%s", r->meta.session_id,
                  log_q("queue overflow: the source did not pause"));
        uv_async_send(&st->async);
    }
    return rc;
}

int rec_output(recording *r, const void *buf, size_t len)
{
    return enqueue(r, REC_JOB_OUTPUT, buf, len, 0, 0);
}

int rec_input(recording *r, const void *buf, size_t len)
{
    if (!r->meta.record_input)
        return 0;
    return enqueue(r, REC_JOB_INPUT, buf, len, 0, 0);
}

int rec_resize(recording *r, int cols, int rows)
{
    if (!size_valid(cols, rows))
        return -EINVAL;
    return enqueue(r, REC_JOB_RESIZE, NULL, 0, cols, rows);
}

void rec_finish(recording *r)
{
    if (r && !r->finished)
        finish(r);
}
