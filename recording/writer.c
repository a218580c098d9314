/* The writer thread: one per rec_store, doing every disk operation of
 * every recording (create, write, fdatasync, sign), so the loop never
 * waits for the disk.
 *
 * Each open recording has a small buffer of whole event lines. It is
 * written when the next line would not fit, when its oldest byte is
 * REC_FLUSH_MS old, and at the end: a killed gateway leaves whole lines up
 * to the last write, which asciinema reads. Bytes are hashed (file SHA-256
 * and chunk chain) as they are written, so signing never re-reads the file.
 *
 * The writer takes the whole job queue at once and works outside the
 * lock; it takes the lock again per job only to update the recording's
 * queued-byte count, which is what back-pressure reads. */
#include "recording/internal.h"

#include "common/err.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Per open recording. Small on purpose: a gateway may hold a thousand
 * idle consoles; heavy output only means more frequent write()s. */
#define REC_WBUF_SIZE (32u << 10)
#define NS_PER_MS UINT64_C(1000000)

/* Marks r failed (once): no more writes, no .sig, and on_failed on the
 * loop unless the loop already failed it. */
static void fail(rec_store *st, recording *r, int code, const char *what)
{
    if (r->w.failed)
        return;
    r->w.failed = true;
    log_event(LOG_ERROR, "recording.failed", "sid=%s file=%s step=%s err=%s",
              r->meta.session_id, r->file, what, log_q(pst_strerror(code)));
    uv_mutex_lock(&st->lock);
    bool post = r->error == 0;
    if (post) {
        r->error = code;
        snprintf(r->message, sizeof(r->message), "recording cannot be written: %s",
                 pst_strerror(code));
        rec_note_push_locked(st, &r->note_failed);
    }
    uv_mutex_unlock(&st->lock);
    if (post)
        uv_async_send(&st->async);
}

static int write_fully(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes bytes to the .cast and feeds them to the chain. */
static void put_file(rec_store *st, recording *r, const char *p, size_t n)
{
    if (r->w.failed || n == 0)
        return;
    int rc = write_fully(r->w.fd, p, n);
    if (rc != 0) {
        fail(st, r, rc, "write");
        return;
    }
    if ((rc = rec_chain_update(&r->w.chain, p, n)) != 0)
        fail(st, r, rc, "hash");
}

static void flush(rec_store *st, recording *r)
{
    if (r->w.used == 0)
        return;
    put_file(st, r, r->w.buf, r->w.used);
    r->w.used = 0;
}

/* Appends whole lines to r's buffer, writing first when they do not fit. */
static void append(rec_store *st, recording *r, const char *p, size_t n)
{
    rec_wstate *w = &r->w;
    if (w->failed || n == 0)
        return;
    if (w->used + n > REC_WBUF_SIZE)
        flush(st, r);
    if (n > REC_WBUF_SIZE) {
        put_file(st, r, p, n);
        return;
    }
    if (w->used == 0)
        w->first_ns = uv_hrtime();
    memcpy(w->buf + w->used, p, n);
    w->used += n;
}

/* mkdir -p for one level below parent, never through a symlink. A
 * descriptor or a negative code. */
static int subdir(int parent, const char *name)
{
    bool made = mkdirat(parent, name, 0700) == 0;
    if (!made && errno != EEXIST)
        return -errno;
    int fd = rec_open_dir_at(parent, name);
    /* A new entry is durable once its directory is synced; the day's own
     * folder is synced again when the .sig lands in it. */
    if (fd >= 0 && made)
        fsync(parent);
    return fd;
}

/* Opens (creating) recordings/YYYY/MM/DD. A descriptor or a negative
 * code. */
static int open_day(rec_store *st, int y, int m, int d)
{
    char name[16];
    /* recordings/ itself may be a symlink (to another disk); nothing
     * below it is followed. */
    int top = open(st->recordings_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0)
        return -errno;
    snprintf(name, sizeof(name), "%04d", y);
    int yfd = subdir(top, name);
    close(top);
    if (yfd < 0)
        return yfd;
    snprintf(name, sizeof(name), "%02d", m);
    int mfd = subdir(yfd, name);
    close(yfd);
    if (mfd < 0)
        return mfd;
    snprintf(name, sizeof(name), "%02d", d);
    int dfd = subdir(mfd, name);
    close(mfd);
    return dfd;
}

static void open_file(rec_store *st, recording *r)
{
    rec_wstate *w = &r->w;
    int y, m, d, rc = 0;
    rec_day_of(r->meta.started_ms, &y, &m, &d);
    /* A sweep may remove a folder it found empty just after we made it:
     * one more try then. */
    rc = open_day(st, y, m, d);
    if (rc == -ENOENT)
        rc = open_day(st, y, m, d);
    if (rc < 0)
        goto out;
    w->dayfd = rc;
    rc = 0;
    w->fd = openat(w->dayfd, r->file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        rc = -errno;
        goto out;
    }
    if (!(w->buf = malloc(REC_WBUF_SIZE))) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = rec_chain_init(&w->chain)) != 0)
        goto out;
    w->chain_ready = true;
    char *header = rec_cast_header(&r->meta);
    if (!header) {
        rc = -ENOMEM;
        goto out;
    }
    append(st, r, header, strlen(header));
    free(header);
    log_event(LOG_INFO, "recording.open", "sid=%s path=%04d/%02d/%02d/%s", r->meta.session_id, y,
              m, d, r->file);
    uv_mutex_lock(&st->lock);
    rec_note_push_locked(st, &r->note_ready);
    uv_mutex_unlock(&st->lock);
    uv_async_send(&st->async);
out:
    if (rc != 0)
        fail(st, r, rc, "create");
    /* On the list even when failed: FINISH finds and removes it. */
    w->wnext = st->wlist;
    st->wlist = r;
}

static void event(rec_store *st, recording *r, const rec_job *j)
{
    rec_wstate *w = &r->w;
    if (w->failed)
        return;
    uint64_t t_us = (j->t_ns - r->t0_ns) / 1000;
    w->last_us = t_us;
    if (j->kind == REC_JOB_RESIZE) {
        char size[32];
        rec_utf8_carry none = {0};
        int n = snprintf(size, sizeof(size), "%dx%d", j->cols, j->rows);
        append(st, r, st->scratch,
               rec_cast_event(st->scratch, t_us, 'r', (const uint8_t *)size, (size_t)n, &none,
                              true));
        return;
    }
    char type = j->kind == REC_JOB_INPUT ? 'i' : 'o';
    rec_utf8_carry *carry = j->kind == REC_JOB_INPUT ? &w->in_carry : &w->out_carry;
    /* Big reads become several events of one time: lines stay bounded. */
    for (size_t off = 0; off < j->len && !w->failed; off += REC_EVENT_DATA_MAX) {
        size_t n = j->len - off < REC_EVENT_DATA_MAX ? j->len - off : REC_EVENT_DATA_MAX;
        append(st, r, st->scratch,
               rec_cast_event(st->scratch, t_us, type, j->data + off, n, carry, false));
    }
}

/* Writes <id>.cast.sig beside the recording: temporary file, fsync,
 * rename, directory fsync. 0 or a negative code. */
static int sign(rec_store *st, recording *r)
{
    rec_wstate *w = &r->w;
    rec_manifest m = {0};
    int rc = rec_chain_final(&w->chain, m.sha256);
    if (rc != 0)
        return rc;
    memcpy(m.file, r->file, sizeof(m.file));
    m.length = w->chain.length;
    m.chunk_size = REC_CHUNK_SIZE;
    m.links = w->chain.links;
    m.nlinks = w->chain.nlinks;
    memcpy(m.key_sha256, st->key_id, REC_SHA256_LEN);
    /* rec_open bounded every string to these sizes. */
    snprintf(m.session_id, sizeof(m.session_id), "%s", r->meta.session_id);
    snprintf(m.user, sizeof(m.user), "%s", r->meta.user);
    snprintf(m.vm, sizeof(m.vm), "%s", r->meta.vm);
    snprintf(m.source, sizeof(m.source), "%s", r->meta.source);
    snprintf(m.instance, sizeof(m.instance), "%s", r->meta.instance);
    snprintf(m.protocol, sizeof(m.protocol), "%s", r->meta.protocol);
    m.started_ms = r->meta.started_ms;
    m.ended_ms = r->ended_ms;
    m.cols = r->meta.cols;
    m.rows = r->meta.rows;

    char *text = NULL;
    size_t len = 0;
    if ((rc = rec_manifest_build(&m, st->key, &text, &len)) != 0)
        return rc;
    char sig[REC_ID_MAX + 16], tmp[REC_ID_MAX + 24];
    snprintf(sig, sizeof(sig), "%s.sig", r->file);
    snprintf(tmp, sizeof(tmp), "%s.sig.tmp", r->file);
    /* A crash may have left one; the name is ours alone (one writer per
     * session id). */
    unlinkat(w->dayfd, tmp, 0);
    int fd = openat(w->dayfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = write_fully(fd, text, len);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && renameat(w->dayfd, tmp, w->dayfd, sig) != 0)
        rc = -errno;
    if (rc == 0 && fsync(w->dayfd) != 0)
        rc = -errno;
    if (rc != 0)
        unlinkat(w->dayfd, tmp, 0);
out:
    free(text);
    return rc;
}

static void unlist(rec_store *st, recording *r)
{
    for (recording **p = &st->wlist; *p; p = &(*p)->w.wnext) {
        if (*p == r) {
            *p = r->w.wnext;
            return;
        }
    }
}

/* Flushes, syncs and signs r, then hands it back to the loop to free. */
static void finish(rec_store *st, recording *r)
{
    rec_wstate *w = &r->w;
    uv_mutex_lock(&st->lock);
    if (r->error)
        w->failed = true; /* the loop failed it (queue overflow) */
    uv_mutex_unlock(&st->lock);

    if (!w->failed) {
        /* A sequence still cut at the end becomes U+FFFD. */
        append(st, r, st->scratch,
               rec_cast_event(st->scratch, w->last_us, 'o', NULL, 0, &w->out_carry, true));
        append(st, r, st->scratch,
               rec_cast_event(st->scratch, w->last_us, 'i', NULL, 0, &w->in_carry, true));
        flush(st, r);
    }
    if (!w->failed && fdatasync(w->fd) != 0)
        fail(st, r, -errno, "fdatasync");
    if (w->fd >= 0 && close(w->fd) != 0)
        fail(st, r, -errno, "close");
    if (!w->failed) {
        int rc = sign(st, r);
        if (rc != 0)
            log_event(LOG_ERROR, "recording.sign_failed", "sid=%s file=%s err=%s",
                      r->meta.session_id, r->file, log_q(pst_strerror(rc)));
        else
            log_event(LOG_INFO, "recording.signed", "sid=%s file=%s bytes=%llu",
                      r->meta.session_id, r->file, (unsigned long long)w->chain.length);
    }
    if (w->dayfd >= 0)
        close(w->dayfd);
    if (w->chain_ready)
        rec_chain_free(&w->chain);
    free(w->buf);
    w->buf = NULL;
    w->fd = w->dayfd = -1;
    unlist(st, r);

    /* Last touch: once queued, the loop may free r at any moment. */
    uv_mutex_lock(&st->lock);
    rec_note_push_locked(st, &r->note_done);
    uv_mutex_unlock(&st->lock);
    uv_async_send(&st->async);
}

/* Job done: its bytes leave the queue, which may owe an on_drain. */
static void account(rec_store *st, recording *r, size_t cost)
{
    bool post = false;
    uv_mutex_lock(&st->lock);
    r->queued -= cost;
    if (r->error)
        r->w.failed = true;
    if (r->want_drain && r->queued < REC_QUEUE_LOW) {
        r->want_drain = false;
        rec_note_push_locked(st, &r->note_drain);
        post = true;
    }
    uv_mutex_unlock(&st->lock);
    if (post)
        uv_async_send(&st->async);
}

static void run_job(rec_store *st, rec_job *j)
{
    recording *r = j->r;
    switch (j->kind) {
    case REC_JOB_OPEN:
        open_file(st, r);
        break;
    case REC_JOB_OUTPUT:
    case REC_JOB_INPUT:
    case REC_JOB_RESIZE:
        event(st, r, j);
        break;
    case REC_JOB_FINISH:
        finish(st, r); /* r and j may be gone after this */
        return;
    }
    account(st, r, j->cost);
    if (j->owned)
        free(j);
}

/* When the oldest buffered byte of any recording must be written; 0 when
 * nothing waits. */
static uint64_t next_due(const rec_store *st)
{
    uint64_t due = 0;
    for (const recording *r = st->wlist; r; r = r->w.wnext) {
        if (r->w.used == 0)
            continue;
        uint64_t t = r->w.first_ns + REC_FLUSH_MS * NS_PER_MS;
        if (!due || t < due)
            due = t;
    }
    return due;
}

static void flush_due(rec_store *st)
{
    uint64_t now = uv_hrtime();
    for (recording *r = st->wlist; r; r = r->w.wnext)
        if (r->w.used > 0 && now >= r->w.first_ns + REC_FLUSH_MS * NS_PER_MS)
            flush(st, r);
}

/* After a round with work, the writer naps this long before it looks
 * again, instead of being woken for each event: output then arrives in
 * batches (fewer wakeups, fewer lock handoffs) at the cost of a few ms of
 * memory, far inside REC_FLUSH_MS. */
#define REC_NAP_NS (2 * NS_PER_MS)

void rec_writer_main(void *arg)
{
    rec_store *st = arg;
    bool busy = false;
    uv_mutex_lock(&st->lock);
    for (;;) {
        if (st->held && !st->stop) {
            uv_cond_wait(&st->wake, &st->lock); /* rec_store_close signals stop */
            continue;
        }
        if (!st->jobs) {
            if (st->stop)
                break;
            /* wlist and the buffers are the writer's own: reading them
             * under the lock is only for convenience. */
            uint64_t due = next_due(st), now = uv_hrtime();
            if (busy) {
                st->napping = true;
                (void)uv_cond_timedwait(&st->wake, &st->lock, REC_NAP_NS);
                st->napping = false;
            } else if (!due) {
                uv_cond_wait(&st->wake, &st->lock);
            } else if (due > now) {
                (void)uv_cond_timedwait(&st->wake, &st->lock, due - now);
            }
        }
        busy = st->jobs != NULL;
        rec_job *batch = st->jobs;
        st->jobs = st->jobs_tail = NULL;
        uv_mutex_unlock(&st->lock);
        while (batch) {
            rec_job *j = batch;
            batch = j->next;
            run_job(st, j);
        }
        flush_due(st);
        uv_mutex_lock(&st->lock);
    }
    uv_mutex_unlock(&st->lock);
}
