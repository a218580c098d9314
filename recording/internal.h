/* Helpers shared inside recording/ only; not part of its public interface.
 *
 *   names.c      ids, file names, date folders, bounded small-file reads
 *   asciicast.c  the asciicast v2 encoder (UTF-8 repair, JSON strings)
 *   chain.c      SHA-256 of the file and the chunk hash chain
 *   manifest.c   the signed manifest (.cast.sig): build and parse
 *   key.c        the Ed25519 signing key and its public half
 *   store.c      rec_store and the loop side of each recording
 *   writer.c     the writer thread: files, buffers, finishing, signing
 *   verify.c     rec_verify_file
 *   catalog.c    find, info, list, sweep
 *   search.c     text search in the recorded output
 */
#ifndef PST_RECORDING_INTERNAL_H
#define PST_RECORDING_INTERNAL_H

#include "recording/recording.h"

#include <openssl/evp.h>
#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define REC_SHA256_LEN 32
#define REC_SIG_LEN 64 /* Ed25519 signatures */

/* Longest metadata strings rec_open accepts: what rec_info can hold, so
 * that a listing never cuts a value we wrote ourselves. */
#define REC_USER_MAX (sizeof(((rec_info *)0)->user) - 1)
#define REC_VM_MAX (sizeof(((rec_info *)0)->vm) - 1)
#define REC_SOURCE_MAX (sizeof(((rec_info *)0)->source) - 1)
#define REC_INSTANCE_MAX (sizeof(((rec_info *)0)->instance) - 1)
#define REC_PROTOCOL_MAX (sizeof(((rec_info *)0)->protocol) - 1)

/* A .cast.sig is small (about 67 bytes of chain per 64 KiB recorded):
 * anything above this is not ours, and reading it whole would let a
 * hostile file exhaust memory. It bounds a verifiable recording at about
 * 30 GiB. */
#define REC_MANIFEST_MAX (32u << 20)
/* A header line is a few hundred bytes; ours are at most a few KiB. */
#define REC_HEADER_MAX (64u << 10)
/* Public-key PEM files are about 113 bytes. */
#define REC_PEM_MAX (64u << 10)

/* ---- names.c ---------------------------------------------------------- */

/* Epoch time counts no leap seconds: every UTC day is this long. */
#define REC_MS_PER_DAY INT64_C(86400000)

/* [0-9a-f]{1,REC_ID_MAX}. */
bool rec_id_valid(const char *id);

/* When name is "<id>.cast" with a valid id, copies the id and returns
 * true. */
bool rec_cast_name_parse(const char *name, char id[REC_ID_MAX + 1]);

/* The UTC day of ms since the epoch, and back: the start of a day in ms.
 * rec_day_valid() refuses dates that do not exist (2023-02-29). */
void rec_day_of(int64_t ms, int *year, int *month, int *day);
int64_t rec_day_start_ms(int year, int month, int day);
bool rec_day_valid(int year, int month, int day);

/* The names in a date folder level, parsed: digits of exactly width
 * characters, in [lo, hi]. Everything else (symlinks included: the walk
 * never follows one) is skipped. dirfd stays open. *out is malloc'd and
 * sorted descending (newest first); *n set. 0 or a negative code. */
int rec_dir_numbers(int dirfd, int width, int lo, int hi, int **out, size_t *n);

/* Opens name under dirfd as a directory without following a symlink.
 * A descriptor, or a negative code. */
int rec_open_dir_at(int dirfd, const char *name);

/* A DIR stream over dirfd's folder, leaving dirfd open (fdopendir takes
 * over a copy). 0 with *out (closedir it), or -errno. */
int rec_dir_stream(int dirfd, DIR **out);

/* Opens a regular file for reading, never through a symlink. The fd
 * (>= 0) with its size in *size, or -errno (-EINVAL: not a regular file). */
int rec_open_regular(const char *path, uint64_t *size);

/* Reads a whole regular file of at most max bytes (no symlink followed
 * when nofollow) into a malloc'd, NUL-terminated buffer. 0, -EFBIG when
 * larger, -EINVAL when not a regular file, or another negative code. On
 * success *mode, unless mode is NULL, is the st_mode of the file read: a
 * caller checking permissions looks at that file, not at whatever the path
 * names by then. */
int rec_read_small_file(int dirfd, const char *path, size_t max, bool nofollow, char **out,
                        size_t *outlen, mode_t *mode);

/* ---- asciicast.c -------------------------------------------------------- */

/* An incomplete UTF-8 sequence left at the end of one call's bytes, joined
 * to the next call's. One per event stream ("o", "i"). */
typedef struct {
    uint8_t b[3];
    uint8_t n;
} rec_utf8_carry;

/* The encoder takes at most this many bytes per event: larger outputs are
 * split into several events of the same time, so that every line stays
 * within REC_EVENT_LINE_MAX (each byte can become a 6-byte "\u001b"). */
#define REC_EVENT_DATA_MAX (16u << 10)
#define REC_EVENT_LINE_MAX ((REC_EVENT_DATA_MAX + sizeof(((rec_utf8_carry *)0)->b)) * 6 + 64)

/* Writes one event line, "[1.234567, "o", "..."]\n", into out (at least
 * REC_EVENT_LINE_MAX bytes) and returns its length. data (len at most
 * REC_EVENT_DATA_MAX) is appended to carry's bytes; a sequence still
 * incomplete at the end stays in carry unless last, where it becomes
 * U+FFFD. Returns 0 (nothing written) when there is no text to write. */
size_t rec_cast_event(char *out, uint64_t t_us, char type, const uint8_t *data, size_t len,
                      rec_utf8_carry *carry, bool last);

/* The header line (with its '\n'), malloc'd; NULL when out of memory. */
char *rec_cast_header(const rec_meta *m);

/* A copy of s with invalid UTF-8 replaced by U+FFFD, malloc'd (NULL when
 * out of memory). Metadata goes through this so that JSON can carry it. */
char *rec_utf8_repair(const char *s);

/* ---- chain.c ------------------------------------------------------------ */

/* The file's SHA-256 and the chain link_0 = SHA256(chunk_0),
 * link_i = SHA256(link_{i-1} || chunk_i), fed incrementally. */
typedef struct {
    EVP_MD_CTX *file; /* SHA-256 of everything */
    EVP_MD_CTX *link; /* the current chunk's link, prefixed by the last */
    size_t fill;      /* bytes of the current chunk seen */
    uint64_t length;
    uint8_t (*links)[REC_SHA256_LEN]; /* every finished link */
    size_t nlinks, cap;
} rec_chain;

/* 0 or a negative code (PST_E_CRYPTO, -ENOMEM). */
int rec_chain_init(rec_chain *c);
int rec_chain_update(rec_chain *c, const void *data, size_t len);
/* Closes the trailing partial chunk and writes the file's SHA-256. */
int rec_chain_final(rec_chain *c, uint8_t sha256[REC_SHA256_LEN]);
void rec_chain_free(rec_chain *c);

/* One link, for readers that hold a whole chunk: prev is NULL for chunk 0.
 * 0 or PST_E_CRYPTO. */
int rec_chain_link(const uint8_t *prev, const uint8_t *chunk, size_t len,
                   uint8_t out[REC_SHA256_LEN]);

/* ---- manifest.c --------------------------------------------------------- */

#define REC_MANIFEST_FORMAT "postern-recording-manifest"
#define REC_MANIFEST_VERSION 1
/* Chunk sizes a manifest may name (ours is REC_CHUNK_SIZE). */
#define REC_CHUNK_MIN 1024u
#define REC_CHUNK_MAX (16u << 20)

typedef struct {
    char file[REC_ID_MAX + sizeof(".cast")]; /* "<id>.cast" */
    uint64_t length;
    uint8_t sha256[REC_SHA256_LEN];
    uint32_t chunk_size;
    uint8_t (*links)[REC_SHA256_LEN]; /* ceil(length / chunk_size) of them */
    size_t nlinks;
    uint8_t key_sha256[REC_SHA256_LEN]; /* SHA-256 of the signer's SPKI (DER) */
    /* The session, as in the header, plus when it ended. */
    char session_id[REC_ID_MAX + 1];
    char user[REC_USER_MAX + 1];
    char vm[REC_VM_MAX + 1];
    char source[REC_SOURCE_MAX + 1];
    char instance[REC_INSTANCE_MAX + 1];
    char protocol[REC_PROTOCOL_MAX + 1];
    int64_t started_ms, ended_ms;
    int cols, rows;
    /* Parsed only: line 1 of the .sig (the signed bytes, pointing into the
     * buffer given to rec_manifest_parse) and line 2 decoded. */
    const char *signed_bytes;
    size_t signed_len;
    uint8_t sig[REC_SIG_LEN];
} rec_manifest;

/* The .sig content for m (its signed_bytes and sig are ignored): line 1
 * the manifest JSON, line 2 the base64 Ed25519 signature of line 1. *out
 * is malloc'd, *outlen set. 0 or a negative code. */
int rec_manifest_build(const rec_manifest *m, EVP_PKEY *key, char **out, size_t *outlen);

/* Parses a .sig (no signature check: see rec_manifest_verify_sig). On
 * success fills *m (free with rec_manifest_free; signed_bytes points into
 * buf, which must outlive m's use). PST_E_PARSE with the reason in detail
 * for anything that is not exactly our format; -ENOMEM. Never reads
 * outside buf[0..len). */
int rec_manifest_parse(const char *buf, size_t len, rec_manifest *m, char *detail,
                       size_t detaillen);
void rec_manifest_free(rec_manifest *m);

/* 0 when m's signature over its signed bytes verifies with key;
 * PST_E_DENIED when it does not; PST_E_CRYPTO. */
int rec_manifest_verify_sig(const rec_manifest *m, EVP_PKEY *key);

/* ---- key.c -------------------------------------------------------------- */

/* Loads <keys_dir>/recording.key or creates it (and recording.pub). On
 * success *key (EVP_PKEY_free) and *pub_pem (free) belong to the caller. 0
 * or a negative code with a reason in err. */
int rec_key_load_or_create(const char *keys_dir, EVP_PKEY **key, char **pub_pem, char *err,
                           size_t errlen);

/* An Ed25519 public key from PEM (SPKI). 0 or PST_E_PARSE. */
int rec_key_from_pem(const char *pem, EVP_PKEY **out);

/* SHA-256 of the key's SubjectPublicKeyInfo (DER): how manifests name
 * their signer. 0 or PST_E_CRYPTO. */
int rec_key_id(EVP_PKEY *key, uint8_t out[REC_SHA256_LEN]);

/* ---- hex (names.c) ------------------------------------------------------- */

/* out gets 2 * len hex digits and a NUL. */
void rec_hex(const uint8_t *in, size_t len, char *out);
/* Exactly 2 * len lowercase hex digits into out. 0 or PST_E_PARSE. */
int rec_unhex(const char *in, size_t inlen, uint8_t *out, size_t len);

/* ---- store.c and writer.c ----------------------------------------------- */

typedef enum {
    REC_JOB_OPEN,
    REC_JOB_OUTPUT,
    REC_JOB_INPUT,
    REC_JOB_RESIZE,
    REC_JOB_FINISH,
} rec_job_kind;

/* Loop -> writer. OPEN and FINISH live inside the recording (rec_finish
 * cannot fail); the others are malloc'd with their bytes and freed by the
 * writer. */
typedef struct rec_job {
    struct rec_job *next;
    recording *r;
    rec_job_kind kind;
    bool owned;      /* malloc'd: the writer frees it */
    size_t cost;     /* what it adds to the recording's queued bytes */
    uint64_t t_ns;   /* uv_hrtime() on the loop when the event happened */
    int cols, rows;  /* REC_JOB_RESIZE */
    size_t len;      /* bytes of data */
    /* REC_JOB_OUTPUT, REC_JOB_INPUT: the bytes, allocated with the job
     * right after it. (Not a flexible array member: OPEN and FINISH jobs
     * are members of struct recording, which C forbids for such types.) */
    uint8_t *data;
} rec_job;

typedef enum {
    REC_NOTE_FAILED,
    REC_NOTE_DRAIN,
    REC_NOTE_READY, /* the file was created */
    REC_NOTE_DONE, /* the writer is finished with the recording: free it */
} rec_note_kind;

/* Writer -> loop. Each recording holds one node per kind, so notifying
 * never allocates; a node already queued is not queued twice. */
typedef struct rec_note {
    struct rec_note *next;  /* in st->notes; under st->lock */
    struct rec_note *lnext; /* the loop's private list while draining */
    recording *r;
    rec_note_kind kind;
    bool queued; /* under st->lock */
} rec_note;

/* The writer's view of one recording: only the writer thread touches it. */
typedef struct {
    int fd;      /* the .cast, -1 before it is created or after closing */
    int dayfd;   /* its date folder, for the .sig beside it */
    bool failed; /* stop writing; no .sig at the end */
    char *buf;   /* whole event lines waiting for write(); REC_WBUF_SIZE */
    size_t used;
    uint64_t first_ns; /* when the oldest byte in buf arrived (uv_hrtime) */
    uint64_t last_us;  /* time of the last event, for the final one */
    rec_utf8_carry out_carry, in_carry;
    rec_chain chain;
    bool chain_ready;
    recording *wnext; /* in the writer's list of open files */
} rec_wstate;

struct recording {
    rec_store *st;
    /* Set in rec_open, then read-only (both threads). */
    rec_meta meta; /* strings are owned copies */
    char file[REC_ID_MAX + sizeof(".cast")];
    uint64_t t0_ns;
    int64_t ended_ms; /* set by rec_finish before the FINISH job is queued */

    /* Loop thread only. */
    rec_callbacks cb;
    void *ud;
    bool finished;      /* rec_finish was called: no more callbacks */
    bool failed_told;   /* on_failed has fired */
    recording *prev, *next; /* st->live */

    /* Under st->lock. */
    size_t queued;   /* bytes in jobs not yet encoded */
    bool want_drain; /* rec_output said 1: on_drain owed below REC_QUEUE_LOW */
    int error;       /* the failure's code, once failed; 0 before */
    char message[160]; /* on_failed's text */

    rec_note note_failed, note_drain, note_ready, note_done;
    rec_job job_open, job_finish;

    rec_wstate w;
};

struct rec_store {
    uv_loop_t *loop;
    uv_async_t async; /* the writer's notifications; data = the store */
    char *recordings_dir;
    EVP_PKEY *key;
    char *pub_pem;
    uint8_t key_id[REC_SHA256_LEN];
    recording *live; /* loop only: every recording not yet freed */
    bool closing;    /* loop only */

    uv_thread_t thread;
    uv_mutex_t lock; /* guards jobs, notes, stop and the per-recording
                      * fields marked "under st->lock" */
    uv_cond_t wake;  /* jobs arrived (unless napping), or stop */
    rec_job *jobs, *jobs_tail;
    rec_note *notes, *notes_tail;
    bool stop; /* the writer exits once jobs is empty */
    bool held; /* rec_store_hold: the writer waits for stop, touching nothing */
    /* The writer is napping after a busy round: it looks at the queue
     * again within REC_NAP_NS by itself, so output jobs need not wake it.
     * Under steady output this saves a futex wake per event. */
    bool napping;

    recording *wlist; /* writer only: recordings with an open file */
    char *scratch;    /* writer only: one event line, REC_EVENT_LINE_MAX */
};

/* Queues n for the loop unless it is queued already. The caller holds
 * st->lock, and calls uv_async_send(&st->async) after unlocking. */
void rec_note_push_locked(rec_store *st, rec_note *n);

/* The writer thread's body (writer.c). */
void rec_writer_main(void *arg);

#endif
