/* Parking a thread until another thread has news for it, without a lock on the
 * hot path: the waiter announces itself, re-checks its condition and sleeps on
 * a futex; the notifier pays one load (plus a syscall only if someone sleeps).
 * Not a queue and not a lock: the condition itself lives with the caller. */
#ifndef K2MC_PARK_H
#define K2MC_PARK_H

#include <stdatomic.h>
#include <stdint.h>

struct park {
	/* written by the waiter (1 before re-checking, 0 after waking) and by the
	 * notifier (0 before waking); seq_cst, see park_prepare/park_notify */
	_Alignas(64) _Atomic int32_t waiting;
};

void park_init(struct park *p);

/* Waiter, step 1: announce. The caller must re-check its condition after
 * this and call park_cancel if it now holds, else park_wait. */
void park_prepare(struct park *p);
void park_cancel(struct park *p);
/* Waiter, step 2: sleep until notified or timeout_ms elapses. */
void park_wait(struct park *p, int timeout_ms);

/* Notifier: call after publishing the news (e.g. after ring_push). */
void park_notify(struct park *p);

/* n parks, each initialised and on a cache line of its own (the doorbells
 * of n writers: their consumers ring, each writer waits on its own), or
 * NULL. Freed with park_array_free, after every thread that rings or waits
 * has been joined. */
struct park *park_array_new(int n);
void park_array_free(struct park *a);

#endif
