/* Futex-based parking; see park.h for the protocol. */
#include "ring/park.h"

#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long futex(_Atomic int32_t *uaddr, int op, int32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, (int32_t *)uaddr, op, val, ts, NULL, 0);
}

void park_init(struct park *p)
{
	atomic_init(&p->waiting, 0);
}

/* seq_cst on both sides is the argument here (a Dekker pattern): the waiter
 * stores waiting=1 then loads the condition; the notifier stores the
 * condition then loads waiting. With only acquire/release both loads could
 * see old values and the waiter would sleep through the news. */
void park_prepare(struct park *p)
{
	atomic_store_explicit(&p->waiting, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
}

void park_cancel(struct park *p)
{
	atomic_store_explicit(&p->waiting, 0, memory_order_relaxed);
}

void park_wait(struct park *p, int timeout_ms)
{
	struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };

	/* Returns at once if a notifier already cleared waiting (EAGAIN). */
	futex(&p->waiting, FUTEX_WAIT_PRIVATE, 1, &ts);
	atomic_store_explicit(&p->waiting, 0, memory_order_relaxed);
}

void park_notify(struct park *p)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&p->waiting, memory_order_relaxed) != 0) {
		atomic_store_explicit(&p->waiting, 0, memory_order_relaxed);
		futex(&p->waiting, FUTEX_WAKE_PRIVATE, 1, NULL);
	}
}

struct park *park_array_new(int n)
{
	struct park *a = aligned_alloc(_Alignof(struct park), sizeof(*a) * (size_t)n);

	if (a != NULL)
		for (int i = 0; i < n; i++)
			park_init(&a[i]);
	return a;
}

void park_array_free(struct park *a)
{
	free(a);
}
