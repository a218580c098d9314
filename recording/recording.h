/* recording: session recordings that auditors can trust.
 *
 * A recording is a file under <state_dir>/recordings/YYYY/MM/DD/<id>.cast
 * (mode 0600, directories 0700). SSH recordings are asciicast v2: a JSON
 * header line, then one JSON array per event ([t, "o"|"i"|"r", "data"]).
 * The header carries Postern's own fields under "postern" (session id,
 * user, VM, source address, gateway instance, protocol); asciinema ignores
 * unknown header keys, so `asciinema cat/play` read our files unchanged.
 *
 * Tamper evidence: when a recording ends, a manifest <id>.cast.sig is
 * written beside it (JSON, see docs/recording.md): the file's length and
 * SHA-256, the session metadata, and a hash chain over fixed-size chunks
 * (REC_CHUNK_SIZE), signed with the gateway's Ed25519 key
 * (<state_dir>/keys/recording.key, generated on first use, 0600; the public
 * half is recording.pub). The chain lets verification tell a file cut
 * short (every whole chunk still matches) from one that was edited. A
 * .cast without a .sig is a session still running or one whose gateway
 * died: UNSIGNED.
 *
 * Threads: one writer thread per rec_store does all disk work (open,
 * write, fdatasync, signing), so the loop never waits for the disk. The
 * loop hands it events through a bounded per-recording queue; when a
 * recording's queue passes REC_QUEUE_HIGH the caller is told to stop
 * reading its source (back-pressure), and on_drain says when to resume.
 * Data reaches the kernel at least every REC_FLUSH_MS and at the end: a
 * gateway killed with SIGKILL leaves a readable file up to the last flush.
 *
 * Unless stated otherwise, functions are for the loop thread only and
 * callbacks run on the loop thread.
 */
#ifndef PST_RECORDING_RECORDING_H
#define PST_RECORDING_RECORDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define REC_CHUNK_SIZE (64u << 10) /* bytes per link of the hash chain */
#define REC_FLUSH_MS 1000          /* longest time an event waits in memory */
#define REC_QUEUE_HIGH (1u << 20)  /* queued bytes above which the source pauses */
#define REC_QUEUE_LOW (256u << 10) /* ... and below which it resumes */
#define REC_ID_MAX 64              /* session ids: [0-9a-f], at most this long */
#define REC_SEARCH_MAX 256         /* longest text rec_search_text looks for */

typedef struct rec_store rec_store;
typedef struct recording recording;

/* Where recordings live and the key that signs them.
 * 0, or a negative code with a one-line reason in err. Creates
 * <state_dir>/recordings and <state_dir>/keys (0700), loads the signing
 * key or generates it, and starts the writer thread. Free with
 * rec_store_close(), which finishes (signs) every open recording first.
 * The store's uv_async handle keeps the loop alive until then. A key file
 * readable or writable by group or others is refused (as OpenSSH does). */
int rec_store_open(uv_loop_t *loop, const char *state_dir, rec_store **out, char *err,
                   size_t errlen);
/* Finishes every recording not yet finished, waits for the writer to
 * flush and sign them all (the one time the loop waits for the disk: at
 * shutdown), then closes the store's uv_async handle. No callback fires
 * after this call. As with any handle, the store's last memory is freed
 * in the close callback: run the loop once more. Not from a callback. */
void rec_store_close(rec_store *st);
/* From now until rec_store_close, the writer opens, writes and closes
 * nothing; rec_store_close then finishes and signs everything as usual.
 * For the shutdown of a process in which another library may close a
 * descriptor twice: libwebsockets 4.1 closes its event pipe twice while
 * its context is destroyed, which would close a file the writer had just
 * opened under the same number (a signature was lost that way). */
void rec_store_hold(rec_store *st);

/* The public key, PEM (SubjectPublicKeyInfo), NUL-terminated; valid as
 * long as the store. */
const char *rec_store_public_key_pem(const rec_store *st);

/* True while the recording of session_id is open or not yet signed (from
 * rec_open until the writer has signed it after rec_finish). Loop thread. */
bool rec_store_writing(const rec_store *st, const char *session_id);

/* The public key of the store under state_dir (<state_dir>/keys/
 * recording.pub), or of a PEM file anywhere, for verifying off the
 * gateway: checked to be an Ed25519 public key. 0 with *pem malloc'd
 * (caller frees), or a negative code with a reason in err. Any thread. */
int rec_public_key_read(const char *state_dir, char **pem, char *err, size_t errlen);
int rec_public_key_read_file(const char *path, char **pem, char *err, size_t errlen);

/* Who and what is recorded; copied by rec_open. */
typedef struct {
    const char *session_id; /* [0-9a-f]{1,REC_ID_MAX} */
    const char *user;
    const char *vm;
    const char *source;     /* the client's address */
    const char *instance;   /* this gateway's name */
    const char *protocol;   /* "ssh" */
    int64_t started_ms;     /* wall clock, ms since the epoch */
    int cols, rows;
    bool record_input;      /* "i" events: off unless the config asks */
} rec_meta;

typedef struct {
    /* The file could not be created or written (disk full, not
     * writable): the recording has stopped; message says why in words.
     * The caller still ends it with rec_finish(). */
    void (*on_failed)(void *ud, const char *message);
    /* The queue fell below REC_QUEUE_LOW after rec_output() returned
     * a positive value: the source may resume. Optional. */
    void (*on_drain)(void *ud);
    /* The file exists and its header is queued: what the source produces
     * from now on is recorded. A policy that requires recording waits for
     * this before it lets the session start. Optional. */
    void (*on_ready)(void *ud);
} rec_callbacks;

/* Starts a recording. The file is created on the writer thread; a
 * failure arrives through on_failed (required; on_drain is optional). 0
 * with *out, or a negative code: PST_E_PARSE for an invalid id, -EINVAL
 * for a size out of 1..65535 or a string longer than its rec_info field
 * holds, PST_E_STATE when the store is closing, -ENOMEM. Strings that are
 * not valid UTF-8 are recorded with U+FFFD in place of the bad bytes. */
int rec_open(rec_store *st, const rec_meta *m, const rec_callbacks *cb, void *ud,
             recording **out);

/* Events, timed on the loop when called. Output bytes need not be whole
 * UTF-8 sequences (a sequence cut between two calls is joined; invalid
 * bytes become U+FFFD). Each returns 0, or 1 when the queue is above
 * REC_QUEUE_HIGH (pause the source until on_drain; until then every call
 * returns 1, and still records its bytes), or a negative code once the
 * recording has failed (the bytes are dropped). A caller that ignores 1
 * and queues 8 * REC_QUEUE_HIGH fails the recording (-ENOBUFS). rec_input
 * is ignored (0) unless record_input. rec_resize takes 1..65535 (else
 * -EINVAL). */
int rec_output(recording *r, const void *buf, size_t len);
int rec_input(recording *r, const void *buf, size_t len);
int rec_resize(recording *r, int cols, int rows);

/* Ends the recording: the writer flushes, fsyncs and signs it, then frees
 * it. No callback fires after this call; r must not be used again. */
void rec_finish(recording *r);

/* The path of the recording of id under state_dir, checked: id must be
 * [0-9a-f]{1,REC_ID_MAX}. Found by a directory walk of the date folders,
 * newest first. 0 with the path in out, PST_E_PARSE for a bad id,
 * PST_E_NOTFOUND. Any thread. */
int rec_path_find(const char *state_dir, const char *id, char *out, size_t outlen);

/* ---- verification (any thread; used by `postern recording verify`) ---- */

typedef enum {
    REC_VERIFY_OK = 0,
    REC_VERIFY_MODIFIED,  /* bytes or manifest changed, or a bad signature */
    REC_VERIFY_TRUNCATED, /* shorter than signed, every whole chunk intact */
    REC_VERIFY_UNSIGNED,  /* no manifest: running, or the gateway died */
    REC_VERIFY_ERROR,     /* unreadable file, or no key to check with */
} rec_verify_result;

const char *rec_verify_result_name(rec_verify_result r); /* "OK", "MODIFIED", ... */

/* Checks cast_path against cast_path + ".sig" with the public key in
 * pub_pem (NUL-terminated PEM). detail gets a short reason in words
 * ("chunk 3 differs", "signature does not match"). */
rec_verify_result rec_verify_file(const char *cast_path, const char *pub_pem, char *detail,
                                  size_t detaillen);

/* ---- listing (any thread; the gateway runs it off the loop) ---- */

typedef struct {
    char id[REC_ID_MAX + 1];
    char user[128];
    char vm[128];
    char source[64];
    char instance[128];
    char protocol[16];
    int64_t started_ms;
    int64_t ended_ms;      /* 0: unfinished (no manifest) */
    uint64_t size;         /* bytes on disk now */
    bool signed_;          /* a manifest exists */
    char path[512];
} rec_info;

/* Reads the header line (and the manifest, when there is one) of one
 * recording. 0, or a negative code; PST_E_PARSE for a file name that is
 * not "<id>.cast", or a header that is not asciicast v2 (then id, path
 * and size are filled all the same). The manifest is parsed, not
 * verified: ended_ms is what it claims. A value too long for its field
 * is cut at a character boundary. Never follows a symlink. */
int rec_info_read(const char *cast_path, rec_info *out);

/* Every recording under state_dir whose date folder lies in
 * [from_ms, to_ms] (0 = unbounded), newest first, at most max entries.
 * *out is malloc'd (caller frees; NULL when none), *count set. A
 * recording whose header cannot be parsed is listed with only id, path
 * and size. 0 or a negative code. */
int rec_list(const char *state_dir, int64_t from_ms, int64_t to_ms, size_t max, rec_info **out,
             size_t *count);

/* Deletes recordings (and manifests) whose day is older than
 * retention_days, calling on_deleted for each one removed (for the audit
 * log). Removes emptied date folders. 0 or a negative code. Any thread.
 * A day folder goes when its day is more than retention_days (>= 1, else
 * -EINVAL) before now_ms's UTC day; an unsigned recording modified since
 * that cutoff is kept (a session still running). A failure to delete one
 * file does not stop the sweep: the first error is returned at the end. */
int rec_sweep(const char *state_dir, int retention_days, int64_t now_ms,
              void (*on_deleted)(void *ud, const rec_info *info), void *ud);

/* Whether needle (1..REC_SEARCH_MAX bytes) occurs in the text a recording
 * showed: its output events, streamed, with terminal escape sequences
 * (CSI, OSC, DCS, SOS, PM, APC, other ESC sequences, and their C1 forms)
 * and control characters other than line feed and tab removed, matched
 * across event boundaries; ASCII letters match either case, other
 * characters exactly. Memory stays bounded whatever the file. 0 with
 * *found set; PST_E_PARSE for a bad needle; a negative code when the file
 * cannot be read. Any thread. */
int rec_search_text(const char *cast_path, const char *needle, bool *found);

/* The state directory a recording lives under, from its path alone:
 * ".../recordings/YYYY/MM/DD/<id>.cast" gives "..." ("." when the path
 * starts at recordings/). 0, PST_E_PARSE when the path has another shape,
 * -ENAMETOOLONG. Any thread. */
int rec_state_dir_of(const char *cast_path, char *out, size_t outlen);

#endif
