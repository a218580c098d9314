/* Login throttling: failures per key ("user:alice", "addr:192.0.2.7"),
 * growing waits, then a lock.
 *
 * The table is fixed in size (max_keys entries, allocated once) because an
 * attacker chooses the keys: every new source address would otherwise cost
 * us memory. Entries sit on two lists: a hash chain for lookup and a
 * recency list ordered by last failure, whose head is the entry to give up
 * when the table is full. Keys are hashed with SipHash under a random key
 * so that nobody can choose addresses that all land in one chain.
 *
 * Only failures count as activity: a check never extends an entry's life,
 * so polling a locked key does not keep it locked, and an entry idle longer
 * than max(lock_seconds, 2 * max_delay) is forgotten (any wait or lock it
 * held has run out by then). */
#include "auth/auth.h"

#include "common/err.h"
#include "common/log.h"

#include <limits.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longer keys are replaced by "sha256:" and their hash (71 characters):
 * cutting them instead would let two long keys share a counter. */
#define THROTTLE_KEY_MAX 128
#define THROTTLE_KEYS_DEFAULT 4096    /* max_keys 0 */
#define THROTTLE_KEYS_LIMIT (1u << 20) /* ~190 MB of entries; far above any need */
#define THROTTLE_FULL_LOG_SECONDS 60  /* "table full" is logged this rarely */
#define NIL UINT32_MAX

const auth_throttle_params auth_throttle_default = {3, 60, 10, 900};

typedef struct {
    char key[THROTTLE_KEY_MAX + 1];
    uint64_t hash;
    uint32_t chain;            /* next in the hash bucket, or the free list */
    uint32_t older, newer;     /* recency list, by last failure */
    int failures;              /* since the key was last fresh */
    int64_t last;              /* time of the last failure */
    int64_t wait_until;        /* no check before this (0: none) */
    int64_t locked_until;      /* locked before this (0: not locked) */
} throttle_entry;

struct auth_throttle {
    auth_throttle_params p;
    throttle_entry *e;         /* max_keys entries; e[0..used) have been handed out */
    size_t max_keys;
    size_t used;
    uint32_t free_list;        /* entries given back by clear or expiry */
    uint32_t *bucket;          /* nbuckets heads, nbuckets a power of two */
    size_t nbuckets;
    uint32_t oldest, newest;   /* ends of the recency list */
    uint64_t sip_k0, sip_k1;
    bool full_logged;
    int64_t full_logged_at;
};

/* ---- SipHash-2-4 (Aumasson and Bernstein, 2012) --------------------------- */

static uint64_t rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND()                                                                          \
    do {                                                                                    \
        v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);                       \
        v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                                            \
        v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                                            \
        v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);                       \
    } while (0)

static uint64_t siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (int j = 7; j >= 0; j--)
            m = (m << 8) | p[i + (size_t)j];
        v3 ^= m;
        SIPROUND();
        SIPROUND();
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t j = 0; j < (len & 7); j++)
        b |= (uint64_t)p[whole + j] << (8 * j);
    v3 ^= b;
    SIPROUND();
    SIPROUND();
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND();
    SIPROUND();
    SIPROUND();
    SIPROUND();
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- table -------------------------------------------------------------- */

static void key_normalize(const char *key, char out[THROTTLE_KEY_MAX + 1])
{
    if (!key)
        key = "";
    size_t n = strnlen(key, THROTTLE_KEY_MAX + 1);
    if (n <= THROTTLE_KEY_MAX) {
        memcpy(out, key, n + 1);
        return;
    }
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, strlen(key), md);
    int o = snprintf(out, THROTTLE_KEY_MAX + 1, "sha256:");
    for (size_t i = 0; i < sizeof(md); i++)
        o += snprintf(out + o, (size_t)(THROTTLE_KEY_MAX + 1 - o), "%02x", md[i]);
}

static void params_set(auth_throttle *t, const auth_throttle_params *p)
{
    t->p = p ? *p : auth_throttle_default;
    /* Negative values would make no sense; read them as "none". */
    if (t->p.free_failures < 0)
        t->p.free_failures = 0;
    if (t->p.max_delay < 0)
        t->p.max_delay = 0;
    if (t->p.lock_failures < 0)
        t->p.lock_failures = 0;
    if (t->p.lock_seconds < 0)
        t->p.lock_seconds = 0;
}

/* After this long without a failure an entry has nothing left to enforce. */
static int64_t idle_window(const auth_throttle *t)
{
    int64_t w = 2 * (int64_t)t->p.max_delay;
    return t->p.lock_seconds > w ? t->p.lock_seconds : w;
}

/* True when e holds nothing any more: its lock ran out (the key starts
 * fresh), or it went unlocked and idle past the window. */
static bool entry_spent(const auth_throttle *t, const throttle_entry *e, int64_t now)
{
    if (e->locked_until)
        return now >= e->locked_until;
    return now - e->last > idle_window(t);
}

static void recency_unlink(auth_throttle *t, uint32_t i)
{
    throttle_entry *e = &t->e[i];
    if (e->older != NIL)
        t->e[e->older].newer = e->newer;
    else
        t->oldest = e->newer;
    if (e->newer != NIL)
        t->e[e->newer].older = e->older;
    else
        t->newest = e->older;
    e->older = e->newer = NIL;
}

static void recency_push(auth_throttle *t, uint32_t i)
{
    throttle_entry *e = &t->e[i];
    e->newer = NIL;
    e->older = t->newest;
    if (t->newest != NIL)
        t->e[t->newest].newer = i;
    else
        t->oldest = i;
    t->newest = i;
}

static uint32_t *bucket_of(auth_throttle *t, uint64_t hash)
{
    return &t->bucket[hash & (t->nbuckets - 1)];
}

static uint32_t entry_find(auth_throttle *t, const char *key, uint64_t hash)
{
    for (uint32_t i = *bucket_of(t, hash); i != NIL; i = t->e[i].chain)
        if (t->e[i].hash == hash && strcmp(t->e[i].key, key) == 0)
            return i;
    return NIL;
}

/* Takes entry i off both lists and gives it to the free list. */
static void entry_remove(auth_throttle *t, uint32_t i)
{
    throttle_entry *e = &t->e[i];
    uint32_t *link = bucket_of(t, e->hash);
    while (*link != i)
        link = &t->e[*link].chain;
    *link = e->chain;
    recency_unlink(t, i);
    memset(e, 0, sizeof(*e));
    e->older = e->newer = NIL;
    e->chain = t->free_list;
    t->free_list = i;
}

/* A fresh entry for key: a free one, or the one whose last failure is
 * oldest. Evicting a key that still holds a wait or lock is what bounds
 * the memory; it is logged (rarely) so that an operator can raise max_keys. */
static uint32_t entry_insert(auth_throttle *t, const char *key, uint64_t hash, int64_t now)
{
    uint32_t i;
    if (t->free_list != NIL) {
        i = t->free_list;
        t->free_list = t->e[i].chain;
    } else if (t->used < t->max_keys) {
        i = (uint32_t)t->used++;
    } else {
        i = t->oldest;
        if (!entry_spent(t, &t->e[i], now) &&
            (!t->full_logged || now - t->full_logged_at >= THROTTLE_FULL_LOG_SECONDS ||
             now < t->full_logged_at)) {
            t->full_logged = true;
            t->full_logged_at = now;
            log_event(LOG_WARN, "auth.throttle_full", "max_keys=%zu", t->max_keys);
        }
        entry_remove(t, i);
        t->free_list = t->e[i].chain;
    }
    throttle_entry *e = &t->e[i];
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key, strlen(key) + 1);
    e->hash = hash;
    uint32_t *head = bucket_of(t, hash);
    e->chain = *head;
    *head = i;
    e->older = e->newer = NIL;
    recency_push(t, i);
    return i;
}

/* ---- public ------------------------------------------------------------- */

auth_throttle *auth_throttle_new(const auth_throttle_params *p, size_t max_keys)
{
    if (max_keys == 0)
        max_keys = THROTTLE_KEYS_DEFAULT;
    if (max_keys > THROTTLE_KEYS_LIMIT)
        max_keys = THROTTLE_KEYS_LIMIT;
    auth_throttle *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    params_set(t, p);
    t->max_keys = max_keys;
    t->nbuckets = 1;
    while (t->nbuckets < max_keys)
        t->nbuckets <<= 1;
    uint8_t seed[16];
    t->e = calloc(max_keys, sizeof(*t->e));
    t->bucket = malloc(t->nbuckets * sizeof(*t->bucket));
    if (!t->e || !t->bucket || RAND_bytes(seed, sizeof(seed)) != 1) {
        auth_throttle_free(t);
        return NULL;
    }
    memcpy(&t->sip_k0, seed, 8);
    memcpy(&t->sip_k1, seed + 8, 8);
    for (size_t i = 0; i < t->nbuckets; i++)
        t->bucket[i] = NIL;
    t->free_list = t->oldest = t->newest = NIL;
    return t;
}

void auth_throttle_free(auth_throttle *t)
{
    if (!t)
        return;
    free(t->e);
    free(t->bucket);
    free(t);
}

/* Counts and waits already set stay as they are; the new values apply
 * from the next failure on. */
void auth_throttle_set_params(auth_throttle *t, const auth_throttle_params *p)
{
    params_set(t, p);
}

int auth_throttle_check(auth_throttle *t, const char *key, int64_t now, int *retry_after,
                        bool *locked)
{
    if (retry_after)
        *retry_after = 0;
    if (locked)
        *locked = false;
    char k[THROTTLE_KEY_MAX + 1];
    key_normalize(key, k);
    uint64_t hash = siphash24(t->sip_k0, t->sip_k1, k, strlen(k));
    uint32_t i = entry_find(t, k, hash);
    if (i == NIL)
        return 0;
    throttle_entry *e = &t->e[i];
    if (entry_spent(t, e, now)) {
        entry_remove(t, i);
        return 0;
    }
    int64_t until = e->locked_until ? e->locked_until : e->wait_until;
    if (now >= until)
        return 0;
    if (retry_after) {
        int64_t wait = until - now;
        *retry_after = wait > INT32_MAX ? INT32_MAX : (int)wait;
    }
    if (locked)
        *locked = e->locked_until != 0;
    return PST_E_LIMIT;
}

bool auth_throttle_fail(auth_throttle *t, const char *key, int64_t now)
{
    char k[THROTTLE_KEY_MAX + 1];
    key_normalize(key, k);
    uint64_t hash = siphash24(t->sip_k0, t->sip_k1, k, strlen(k));
    uint32_t i = entry_find(t, k, hash);
    if (i != NIL && entry_spent(t, &t->e[i], now)) {
        entry_remove(t, i);
        i = NIL;
    }
    if (i == NIL)
        i = entry_insert(t, k, hash, now);
    throttle_entry *e = &t->e[i];
    /* A failure while locked comes from an attempt the check let through
     * before the lock (hashing runs off the loop): the lock stands as set,
     * it is not extended, so a locked-out user is not kept out forever. */
    if (e->locked_until)
        return false;
    if (e->failures < INT_MAX)
        e->failures++;
    e->last = now;
    recency_unlink(t, i);
    recency_push(t, i);
    if (t->p.lock_failures > 0 && e->failures >= t->p.lock_failures) {
        e->locked_until = now + (t->p.lock_seconds > 0 ? t->p.lock_seconds : 0);
        e->wait_until = 0;
        if (e->locked_until == now) /* lock_seconds 0: a lock that is already over */
            entry_remove(t, i);
        return true;
    }
    if (e->failures > t->p.free_failures && t->p.max_delay > 0) {
        int over = e->failures - t->p.free_failures;
        int64_t delay = over >= 31 ? t->p.max_delay : (int64_t)1 << over;
        if (delay > t->p.max_delay)
            delay = t->p.max_delay;
        e->wait_until = now + delay;
    }
    return false;
}

void auth_throttle_clear(auth_throttle *t, const char *key)
{
    char k[THROTTLE_KEY_MAX + 1];
    key_normalize(key, k);
    uint64_t hash = siphash24(t->sip_k0, t->sip_k1, k, strlen(k));
    uint32_t i = entry_find(t, k, hash);
    if (i != NIL)
        entry_remove(t, i);
}

size_t auth_throttle_locked_count(auth_throttle *t, int64_t now)
{
    size_t n = 0;
    for (uint32_t i = t->oldest; i != NIL; i = t->e[i].newer)
        n += t->e[i].locked_until && now < t->e[i].locked_until;
    return n;
}
