/* Tests for auth/throttle.c: free failures, growing and capped waits, the
 * lock and its end, clearing, forgetting idle keys, the bounded table and
 * the locked count. Time is passed in, so nothing sleeps. */
#include "unit_test.h"

#include "auth/auth.h"
#include "common/err.h"
#include "common/log.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define T0 1700000000 /* any fixed "now" */

/* check() as one value: 0 when allowed, else the wait; *locked as given. */
static int wait_for(auth_throttle *t, const char *key, int64_t now, bool *locked)
{
    int retry = -1;
    bool l = true;
    int rc = auth_throttle_check(t, key, now, &retry, &l);
    if (locked)
        *locked = l;
    if (rc == 0) {
        assert_int_equal(retry, 0);
        assert_false(l);
        return 0;
    }
    assert_int_equal(rc, PST_E_LIMIT);
    assert_true(retry > 0);
    return retry;
}

static void test_throttle__unknown_key_passes(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    int retry = 7;
    bool locked = true;
    assert_int_equal(auth_throttle_check(t, "user:alice", T0, &retry, &locked), 0);
    assert_int_equal(retry, 0);
    assert_false(locked);
    assert_int_equal(auth_throttle_locked_count(t, T0), 0);
    auth_throttle_free(t);
}

static void test_throttle__defaults(void **state)
{
    assert_int_equal(auth_throttle_default.free_failures, 3);
    assert_int_equal(auth_throttle_default.max_delay, 60);
    assert_int_equal(auth_throttle_default.lock_failures, 10);
    assert_int_equal(auth_throttle_default.lock_seconds, 900);
}

static void test_throttle__free_failures(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    for (int i = 0; i < 3; i++) {
        assert_false(auth_throttle_fail(t, "user:alice", T0));
        assert_int_equal(wait_for(t, "user:alice", T0, NULL), 0);
    }
    /* The fourth is the first that costs a wait. */
    assert_false(auth_throttle_fail(t, "user:alice", T0));
    assert_int_equal(wait_for(t, "user:alice", T0, NULL), 2);
    /* Other keys are not affected. */
    assert_int_equal(wait_for(t, "user:bob", T0, NULL), 0);
    assert_int_equal(wait_for(t, "addr:127.0.0.1", T0, NULL), 0);
    auth_throttle_free(t);
}

static void test_throttle__growing_delays(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    int64_t now = T0;
    for (int i = 0; i < 3; i++)
        auth_throttle_fail(t, "addr:127.0.0.1", now);
    /* Failures 4..8 wait 2, 4, 8, 16, 32 s, each counted from that failure. */
    const int expect[] = {2, 4, 8, 16, 32};
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        assert_false(auth_throttle_fail(t, "addr:127.0.0.1", now));
        bool locked = true;
        assert_int_equal(wait_for(t, "addr:127.0.0.1", now, &locked), expect[i]);
        assert_false(locked);
        assert_int_equal(wait_for(t, "addr:127.0.0.1", now + 1, NULL), expect[i] - 1);
        assert_int_equal(wait_for(t, "addr:127.0.0.1", now + expect[i] - 1, NULL), 1);
        assert_int_equal(wait_for(t, "addr:127.0.0.1", now + expect[i], NULL), 0);
        now += expect[i] + 5;
    }
    auth_throttle_free(t);
}

static void test_throttle__delay_is_capped(void **state)
{
    /* No lock within reach, so the cap shows over many failures. */
    const auth_throttle_params p = {.free_failures = 3, .max_delay = 60, .lock_failures = 100,
                                    .lock_seconds = 900};
    auth_throttle *t = auth_throttle_new(&p, 16);
    assert_non_null(t);
    int64_t now = T0;
    for (int n = 1; n <= 60; n++) {
        assert_false(auth_throttle_fail(t, "user:alice", now));
        int want = n <= 3 ? 0 : (n - 3 >= 6 ? 60 : 1 << (n - 3));
        assert_int_equal(wait_for(t, "user:alice", now, NULL), want);
        now += want;
    }
    /* A smaller cap taken on later applies from the next failure. */
    const auth_throttle_params q = {.free_failures = 3, .max_delay = 5, .lock_failures = 100,
                                    .lock_seconds = 900};
    auth_throttle_set_params(t, &q);
    assert_false(auth_throttle_fail(t, "user:alice", now));
    assert_int_equal(wait_for(t, "user:alice", now, NULL), 5);
    auth_throttle_free(t);
}

static void test_throttle__lock_at_n(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    int64_t now = T0;
    for (int n = 1; n < 10; n++) {
        assert_false(auth_throttle_fail(t, "user:alice", now));
        bool locked = true;
        int w = wait_for(t, "user:alice", now, &locked);
        assert_false(locked);
        now += w; /* a patient attacker waits out every delay */
    }
    assert_int_equal(auth_throttle_locked_count(t, now), 0);
    assert_true(auth_throttle_fail(t, "user:alice", now)); /* the tenth locks */
    bool locked = false;
    assert_int_equal(wait_for(t, "user:alice", now, &locked), 900);
    assert_true(locked);
    assert_int_equal(wait_for(t, "user:alice", now + 899, &locked), 1);
    assert_true(locked);
    assert_int_equal(auth_throttle_locked_count(t, now), 1);
    /* A late failure (an attempt let through before the lock) neither
     * reports a new lock nor extends it. */
    assert_false(auth_throttle_fail(t, "user:alice", now + 100));
    assert_int_equal(wait_for(t, "user:alice", now + 100, &locked), 800);
    assert_true(locked);
    auth_throttle_free(t);
}

static void test_throttle__lock_expiry_starts_fresh(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    int64_t now = T0;
    bool locked_now = false;
    for (int n = 1; n <= 10; n++)
        locked_now = auth_throttle_fail(t, "user:alice", now);
    assert_true(locked_now);
    int64_t end = now + 900;
    assert_int_equal(wait_for(t, "user:alice", end - 1, NULL), 1);
    assert_int_equal(wait_for(t, "user:alice", end, NULL), 0);
    assert_int_equal(auth_throttle_locked_count(t, end), 0);
    /* Fresh: three free failures again, then 2 s. */
    for (int n = 1; n <= 3; n++) {
        assert_false(auth_throttle_fail(t, "user:alice", end));
        assert_int_equal(wait_for(t, "user:alice", end, NULL), 0);
    }
    assert_false(auth_throttle_fail(t, "user:alice", end));
    assert_int_equal(wait_for(t, "user:alice", end, NULL), 2);
    auth_throttle_free(t);
}

static void test_throttle__lock_expiry_without_check(void **state)
{
    /* The lock ends at its time even if nobody checked in between: the
     * next failure after it counts as the first. */
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    for (int n = 1; n <= 10; n++)
        auth_throttle_fail(t, "user:alice", T0);
    assert_false(auth_throttle_fail(t, "user:alice", T0 + 900));
    assert_int_equal(wait_for(t, "user:alice", T0 + 900, NULL), 0);
    auth_throttle_free(t);
}

static void test_throttle__clear_on_success(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    for (int n = 1; n <= 6; n++) {
        auth_throttle_fail(t, "user:alice", T0);
        auth_throttle_fail(t, "addr:127.0.0.1", T0);
    }
    assert_int_equal(wait_for(t, "user:alice", T0, NULL), 8);
    auth_throttle_clear(t, "user:alice");
    auth_throttle_clear(t, "addr:127.0.0.1");
    auth_throttle_clear(t, "user:nobody"); /* unknown: nothing happens */
    assert_int_equal(wait_for(t, "user:alice", T0, NULL), 0);
    assert_int_equal(wait_for(t, "addr:127.0.0.1", T0, NULL), 0);
    /* The count starts over: three free failures. */
    for (int n = 1; n <= 3; n++)
        auth_throttle_fail(t, "user:alice", T0);
    assert_int_equal(wait_for(t, "user:alice", T0, NULL), 0);
    auth_throttle_free(t);
}

static void test_throttle__clear_ends_lock(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    for (int n = 1; n <= 10; n++)
        auth_throttle_fail(t, "user:alice", T0);
    assert_int_equal(auth_throttle_locked_count(t, T0), 1);
    auth_throttle_clear(t, "user:alice");
    assert_int_equal(auth_throttle_locked_count(t, T0), 0);
    assert_int_equal(wait_for(t, "user:alice", T0, NULL), 0);
    auth_throttle_free(t);
}

static void test_throttle__idle_key_forgotten(void **state)
{
    /* Idle longer than max(lock_seconds, 2 * max_delay) = 900 s: the old
     * failures no longer count. */
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    for (int n = 1; n <= 5; n++)
        auth_throttle_fail(t, "user:alice", T0);
    assert_false(auth_throttle_fail(t, "user:alice", T0 + 900));
    assert_int_equal(wait_for(t, "user:alice", T0 + 900, NULL), 8); /* sixth: still counted */
    assert_false(auth_throttle_fail(t, "user:alice", T0 + 900 + 901));
    assert_int_equal(wait_for(t, "user:alice", T0 + 900 + 901, NULL), 0); /* first again */
    auth_throttle_free(t);
}

static void test_throttle__long_keys_stay_distinct(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 16);
    assert_non_null(t);
    char a[300], b[300];
    memset(a, 'x', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(b));
    b[sizeof(b) - 2] = 'y'; /* differs only past any truncation point */
    for (int n = 1; n <= 10; n++)
        auth_throttle_fail(t, a, T0);
    bool locked = false;
    assert_int_equal(wait_for(t, a, T0, &locked), 900);
    assert_true(locked);
    assert_int_equal(wait_for(t, b, T0, NULL), 0);
    auth_throttle_clear(t, a);
    assert_int_equal(wait_for(t, a, T0, NULL), 0);
    auth_throttle_free(t);
}

static void test_throttle__bounded_table(void **state)
{
    /* Every failure locks, so locked_count shows how many keys the table
     * holds: never more than max_keys, whatever number of keys came. */
    const auth_throttle_params p = {.free_failures = 0, .max_delay = 60, .lock_failures = 1,
                                    .lock_seconds = 86400};
    enum { MAX_KEYS = 1000, NKEYS = 100000 };
    auth_throttle *t = auth_throttle_new(&p, MAX_KEYS);
    assert_non_null(t);
    /* Giving up a key that still holds a lock is worth a (rare) warning. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    log_set_fd(fds[1]);
    char key[64];
    for (int i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "addr:10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        assert_true(auth_throttle_fail(t, key, T0 + i / 100));
        if (i % 10000 == 9999)
            assert_true(auth_throttle_locked_count(t, T0 + i / 100) <= MAX_KEYS);
    }
    int64_t now = T0 + NKEYS / 100;
    log_set_fd(2);
    char logbuf[8192];
    ssize_t got = read(fds[0], logbuf, sizeof(logbuf) - 1);
    close(fds[0]);
    close(fds[1]);
    assert_true(got > 0);
    logbuf[got] = '\0';
    assert_contains(logbuf, "event=auth.throttle_full max_keys=1000");
    /* Rate-limited: a line per minute of (test) time, not one per key. */
    size_t lines = 0;
    for (ssize_t j = 0; j < got; j++)
        lines += logbuf[j] == '\n';
    assert_true(lines <= (size_t)(NKEYS / 100 / 60 + 1));
    assert_int_equal(auth_throttle_locked_count(t, now), MAX_KEYS);
    /* The last MAX_KEYS keys are exactly the ones kept, still locked. */
    for (int i = NKEYS - MAX_KEYS; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "addr:10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        bool locked = false;
        int w = wait_for(t, key, now, &locked);
        assert_true(locked);
        assert_int_equal(w, T0 + i / 100 + 86400 - now);
    }
    /* The older ones were given up, oldest first. */
    snprintf(key, sizeof(key), "addr:10.%d.%d.%d", 0, 0, 0);
    assert_int_equal(wait_for(t, key, now, NULL), 0);
    int i = NKEYS - MAX_KEYS - 1;
    snprintf(key, sizeof(key), "addr:10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    assert_int_equal(wait_for(t, key, now, NULL), 0);
    /* A new key still works as usual. */
    assert_true(auth_throttle_fail(t, "user:alice", now));
    bool locked = false;
    assert_int_equal(wait_for(t, "user:alice", now, &locked), 86400);
    assert_true(locked);
    assert_int_equal(auth_throttle_locked_count(t, now), MAX_KEYS);
    auth_throttle_free(t);
}

static void test_throttle__active_key_survives_flood(void **state)
{
    /* Eviction takes the key idle longest: one that keeps failing stays
     * while thousands of others come and go. */
    const auth_throttle_params p = {.free_failures = 3, .max_delay = 60, .lock_failures = 0,
                                    .lock_seconds = 0};
    auth_throttle *t = auth_throttle_new(&p, 100);
    assert_non_null(t);
    char key[64];
    for (int i = 0; i < 10000; i++) {
        if (i % 50 == 0)
            auth_throttle_fail(t, "user:alice", T0);
        snprintf(key, sizeof(key), "addr:%d", i);
        for (int n = 0; n < 4; n++)
            auth_throttle_fail(t, key, T0);
    }
    assert_int_equal(wait_for(t, "user:alice", T0, NULL), 60); /* 200 failures: capped */
    assert_int_equal(wait_for(t, "addr:9999", T0, NULL), 2);
    assert_int_equal(wait_for(t, "addr:9000", T0, NULL), 0); /* given up */
    assert_int_equal(wait_for(t, "addr:0", T0, NULL), 0);
    auth_throttle_free(t);
}

static void test_throttle__locked_count(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 64);
    assert_non_null(t);
    const char *keys[] = {"user:a", "user:b", "addr:192.0.2.1"};
    for (size_t k = 0; k < 3; k++)
        for (int n = 1; n <= 10; n++)
            auth_throttle_fail(t, keys[k], T0 + (int64_t)k * 100);
    for (int n = 1; n <= 9; n++) /* slowed, not locked */
        auth_throttle_fail(t, "user:c", T0);
    assert_int_equal(auth_throttle_locked_count(t, T0 + 200), 3);
    assert_int_equal(auth_throttle_locked_count(t, T0 + 899), 3);
    assert_int_equal(auth_throttle_locked_count(t, T0 + 900), 2);
    assert_int_equal(auth_throttle_locked_count(t, T0 + 1000), 1);
    assert_int_equal(auth_throttle_locked_count(t, T0 + 1100), 0);
    auth_throttle_free(t);
}

static void test_throttle__null_outputs_allowed(void **state)
{
    auth_throttle *t = auth_throttle_new(NULL, 4);
    assert_non_null(t);
    for (int n = 1; n <= 10; n++)
        auth_throttle_fail(t, "user:alice", T0);
    assert_int_equal(auth_throttle_check(t, "user:alice", T0, NULL, NULL), PST_E_LIMIT);
    auth_throttle_free(t);
    auth_throttle_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_throttle__unknown_key_passes),
        cmocka_unit_test(test_throttle__defaults),
        cmocka_unit_test(test_throttle__free_failures),
        cmocka_unit_test(test_throttle__growing_delays),
        cmocka_unit_test(test_throttle__delay_is_capped),
        cmocka_unit_test(test_throttle__lock_at_n),
        cmocka_unit_test(test_throttle__lock_expiry_starts_fresh),
        cmocka_unit_test(test_throttle__lock_expiry_without_check),
        cmocka_unit_test(test_throttle__clear_on_success),
        cmocka_unit_test(test_throttle__clear_ends_lock),
        cmocka_unit_test(test_throttle__idle_key_forgotten),
        cmocka_unit_test(test_throttle__long_keys_stay_distinct),
        cmocka_unit_test(test_throttle__bounded_table),
        cmocka_unit_test(test_throttle__active_key_survives_flood),
        cmocka_unit_test(test_throttle__locked_count),
        cmocka_unit_test(test_throttle__null_outputs_allowed),
    };
    return cmocka_run_group_tests_name("auth/throttle", tests, NULL, NULL);
}
