/* The byte budget; see budget.h. Fast path: one CAS on `used` per chunk of
 * credit and one fetch_sub per writer batch. Slow path: a FIFO of waiters
 * under a mutex, each on its own condition variable, woken by releases. Not
 * the consumer's per-record accounting (the inline functions in budget.h). */
#include "core/budget.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define CHUNK_MAX (256u << 10)
#define CHUNK_MIN (4u << 10)
/* backstop for a stop that nobody kicked; waits normally end by a release
 * or a kick */
#define WAIT_MS 100

struct waiter {
	pthread_cond_t cond;
	struct waiter *next;
};

struct k2mc_budget {
	/* Bytes granted: records held plus consumers' unspent credit. Any
	 * thread: consumers add (CAS in take()), releasers subtract. seq_cst,
	 * for the Dekker pair with `waiters` (W1/W2 in refill, R1/R2 in
	 * k2mc_budget_release): see there. */
	_Alignas(64) _Atomic uint64_t used;
	/* Threads in the slow path: incremented (W1) and decremented under
	 * `lock`; read by releasers without it (R2) and by the fast path
	 * (relaxed: a stale 0 only lets a consumer overtake the queue once). */
	_Alignas(64) _Atomic uint32_t waiters;
	/* guards the FIFO; the head is the only waiter that may take */
	pthread_mutex_t lock;
	struct waiter *head, *tail;
	/* consumer threads joined (k2mc_credit_open/close): relaxed, it only
	 * sizes fetches */
	_Atomic uint32_t consumers;
	/* written under lock, read by anyone (relaxed: statistics) */
	_Atomic uint64_t waits, timeouts;
	/* immutable after k2mc_budget_new (and set_backstop_ms) */
	uint64_t limit, chunk;
	int backstop_ms;
};

struct k2mc_budget *k2mc_budget_new(uint64_t limit)
{
	struct k2mc_budget *b = aligned_alloc(64, sizeof(*b));

	if (b == NULL)
		return NULL;
	atomic_init(&b->used, 0);
	atomic_init(&b->waiters, 0);
	atomic_init(&b->consumers, 0);
	atomic_init(&b->waits, 0);
	atomic_init(&b->timeouts, 0);
	b->backstop_ms = WAIT_MS;
	if (pthread_mutex_init(&b->lock, NULL) != 0) {
		free(b);
		return NULL;
	}
	b->head = b->tail = NULL;
	b->limit = limit ? limit : UINT64_MAX;
	b->chunk = b->limit / 64 < CHUNK_MAX ? b->limit / 64 : CHUNK_MAX;
	if (b->chunk < CHUNK_MIN)
		b->chunk = CHUNK_MIN;
	return b;
}

void k2mc_budget_free(struct k2mc_budget *b)
{
	if (b == NULL)
		return;
	pthread_mutex_destroy(&b->lock);
	free(b);
}

uint64_t k2mc_budget_limit(const struct k2mc_budget *b)
{
	return b->limit == UINT64_MAX ? 0 : b->limit;
}

uint64_t k2mc_budget_used(const struct k2mc_budget *b)
{
	return atomic_load_explicit(&((struct k2mc_budget *)b)->used, memory_order_relaxed);
}

uint64_t k2mc_budget_room(const struct k2mc_budget *b)
{
	uint64_t used = k2mc_budget_used(b);

	return used < b->limit ? b->limit - used : 0;
}

uint64_t k2mc_budget_chunk(const struct k2mc_budget *b)
{
	return b->chunk;
}

uint64_t k2mc_budget_waits(const struct k2mc_budget *b)
{
	return atomic_load_explicit(&((struct k2mc_budget *)b)->waits, memory_order_relaxed);
}

uint64_t k2mc_budget_timeouts(const struct k2mc_budget *b)
{
	return atomic_load_explicit(&((struct k2mc_budget *)b)->timeouts, memory_order_relaxed);
}

void k2mc_budget_set_backstop_ms(struct k2mc_budget *b, int ms)
{
	b->backstop_ms = ms;
}

/* Under lock: a relaxed add by the one writer the lock admits. */
static void bump(_Atomic uint64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

/* Takes between min and max bytes (as much of max as there is room for), or
 * min alone when nothing is held, or nothing. Returns what it took. */
static uint64_t take(struct k2mc_budget *b, uint64_t min, uint64_t max)
{
	/* W2 when called by a waiter: seq_cst load, after its W1 */
	uint64_t cur = atomic_load(&b->used);

	for (;;) {
		uint64_t room = cur < b->limit ? b->limit - cur : 0, n;

		if (room >= min)
			n = room < max ? room : max;
		else if (cur == 0)
			n = min; /* larger than the whole budget: alone */
		else
			return 0;
		if (atomic_compare_exchange_weak(&b->used, &cur, cur + n))
			return n;
	}
}

/* Caller holds lock: the head looks at the budget again. */
static void wake_head(struct k2mc_budget *b)
{
	if (b->head != NULL)
		pthread_cond_signal(&b->head->cond);
}

/* No lost wake-up, without a lock on the release path: a waiter increments
 * `waiters` (W1) and then reads `used` (W2); a releaser decrements `used`
 * (R1) and then reads `waiters` (R2); all four are seq_cst, so in their
 * single total order either W1 comes before R2 (the releaser sees a waiter
 * and signals the head under the lock) or R2 comes before W1, and then R1
 * does too and W2 sees the bytes given back. The waiter checks and goes to
 * sleep under the lock the releaser signals under, so the signal cannot
 * fall between its check and its sleep. Only the head can take, so the head
 * is the one to wake; a head that takes or leaves wakes the next. */
void k2mc_budget_release(struct k2mc_budget *b, uint64_t n)
{
	if (b == NULL || n == 0)
		return;
	atomic_fetch_sub(&b->used, n);           /* R1 */
	if (atomic_load(&b->waiters) != 0) {     /* R2 */
		pthread_mutex_lock(&b->lock);
		wake_head(b);
		pthread_mutex_unlock(&b->lock);
	}
}

void k2mc_budget_kick(struct k2mc_budget *b)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->lock);
	for (struct waiter *w = b->head; w != NULL; w = w->next)
		pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&b->lock);
}

static void deadline_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int k2mc_credit_refill(struct k2mc_credit *c, uint64_t need, k2mc_budget_stop_fn stop,
		       void *arg)
{
	struct k2mc_budget *b = c->b;
	uint64_t max = need > b->chunk ? need : b->chunk, got = 0;
	struct waiter me = { .next = NULL };
	pthread_condattr_t ca;
	struct timespec ts;
	int rc = 0;

	/* fast path: top up what is left, unless others queue already */
	if (atomic_load_explicit(&b->waiters, memory_order_relaxed) == 0) {
		got = take(b, need - c->left, max - c->left);
		if (got > 0) {
			c->left += got;
			return 0;
		}
	}
	/* A waiter holds nothing: two waiters each holding part of what the
	 * other needs would wait for ever. */
	k2mc_credit_return(c);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&me.cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_lock(&b->lock);
	if (b->tail != NULL)
		b->tail->next = &me;
	else
		b->head = &me;
	b->tail = &me;
	atomic_fetch_add(&b->waiters, 1); /* W1 */
	bump(&b->waits);
	for (;;) {
		if (b->head == &me && (got = take(b, need, max)) > 0)
			break;
		if (stop != NULL && stop(arg)) {
			rc = -1;
			break;
		}
		deadline_in(&ts, b->backstop_ms);
		if (pthread_cond_timedwait(&me.cond, &b->lock, &ts) == ETIMEDOUT)
			bump(&b->timeouts);
	}
	/* leave the FIFO: me is the head unless a stop took it out early */
	if (b->head == &me) {
		b->head = me.next;
	} else {
		struct waiter *w = b->head;

		while (w->next != &me)
			w = w->next;
		w->next = me.next;
		if (b->tail == &me)
			b->tail = w;
	}
	if (b->tail == &me)
		b->tail = NULL;
	atomic_fetch_sub(&b->waiters, 1);
	/* the next one may fit in what is left (or, if we gave up, in
	 * what we would have taken) */
	wake_head(b);
	pthread_mutex_unlock(&b->lock);
	pthread_cond_destroy(&me.cond);
	c->left += got;
	return rc;
}

void k2mc_credit_open(struct k2mc_credit *c, struct k2mc_budget *b)
{
	c->b = b;
	c->left = 0;
	if (b != NULL)
		atomic_fetch_add_explicit(&b->consumers, 1, memory_order_relaxed);
}

void k2mc_credit_close(struct k2mc_credit *c)
{
	if (c->b == NULL)
		return;
	k2mc_credit_return(c);
	atomic_fetch_sub_explicit(&c->b->consumers, 1, memory_order_relaxed);
	c->b = NULL;
}

uint64_t k2mc_credit_fetch_bytes(const struct k2mc_credit *c)
{
	uint32_t n;
	uint64_t share;

	if (c->b == NULL)
		return UINT64_MAX;
	n = atomic_load_explicit(&c->b->consumers, memory_order_relaxed);
	share = k2mc_budget_room(c->b) / (n > 0 ? n : 1);
	if (share > c->b->chunk)
		share = c->b->chunk;
	return share > c->left ? share : c->left;
}

void k2mc_credit_return(struct k2mc_credit *c)
{
	if (c->b == NULL || c->left == 0)
		return;
	k2mc_budget_release(c->b, c->left);
	c->left = 0;
}
