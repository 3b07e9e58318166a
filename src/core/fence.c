/* The membership lease; see fence.h for the argument that makes it safe. */
#include "core/fence.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/clock.h"

struct k2mc_fence {
	int64_t lease_ms; /* immutable */
	/* Renewals (committer thread, main's synchronous commits) and revokes
	 * (main) change gen and until under this lock: a renewal checks the
	 * generation and extends the lease in one step, so once a revoke has
	 * returned no renewal of an older generation can appear. It is taken
	 * about once per commit and rebalance; writers never take it. */
	pthread_mutex_t lock;
	uint64_t gen;     /* under lock; read by k2mc_fence_generation (lock) */
	/* under lock: no renewal extends the lease past this (k2mc_fence_cap);
	 * INT64_MAX = none; a revoke lifts it */
	int64_t cap;
	/* written under lock (release), read by writers without it (acquire):
	 * the fence-clock ms until which sending is allowed, 0 = no lease.
	 * The pair orders the commit result the renewal is based on before
	 * the writers' sends, though only the value itself matters. */
	_Alignas(64) _Atomic int64_t until;
};

struct k2mc_fence *k2mc_fence_new(int64_t lease_ms)
{
	struct k2mc_fence *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return NULL;
	f->lease_ms = lease_ms > 0 ? lease_ms : 1;
	pthread_mutex_init(&f->lock, NULL);
	f->gen = 1;
	f->cap = INT64_MAX;
	atomic_init(&f->until, 0);
	return f;
}

void k2mc_fence_free(struct k2mc_fence *f)
{
	if (f == NULL)
		return;
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void k2mc_fence_renew(struct k2mc_fence *f, uint64_t gen, int64_t sent_at_ms)
{
	int64_t want;

	if (f == NULL)
		return;
	want = sent_at_ms + f->lease_ms;
	pthread_mutex_lock(&f->lock);
	if (want > f->cap)
		want = f->cap;
	/* only forward: a late answer to an older commit proves less */
	if (f->gen == gen && want > atomic_load_explicit(&f->until, memory_order_relaxed))
		atomic_store_explicit(&f->until, want, memory_order_release);
	pthread_mutex_unlock(&f->lock);
}

uint64_t k2mc_fence_revoke(struct k2mc_fence *f)
{
	uint64_t g;

	if (f == NULL)
		return 0;
	pthread_mutex_lock(&f->lock);
	g = ++f->gen;
	f->cap = INT64_MAX;
	atomic_store_explicit(&f->until, 0, memory_order_release);
	pthread_mutex_unlock(&f->lock);
	return g;
}

void k2mc_fence_cap(struct k2mc_fence *f, int64_t at_ms)
{
	if (f == NULL)
		return;
	pthread_mutex_lock(&f->lock);
	if (at_ms < f->cap)
		f->cap = at_ms;
	if (atomic_load_explicit(&f->until, memory_order_relaxed) > f->cap)
		atomic_store_explicit(&f->until, f->cap, memory_order_release);
	pthread_mutex_unlock(&f->lock);
}

uint64_t k2mc_fence_generation(const struct k2mc_fence *f)
{
	struct k2mc_fence *m = (struct k2mc_fence *)f;
	uint64_t g;

	if (f == NULL)
		return 0;
	pthread_mutex_lock(&m->lock);
	g = m->gen;
	pthread_mutex_unlock(&m->lock);
	return g;
}

int64_t k2mc_fence_deadline(const struct k2mc_fence *f)
{
	if (f == NULL)
		return INT64_MAX;
	return atomic_load_explicit(&((struct k2mc_fence *)f)->until, memory_order_acquire);
}

int k2mc_fence_held(const struct k2mc_fence *f)
{
	return k2mc_now_ms() < k2mc_fence_deadline(f);
}

int64_t k2mc_fence_lease_ms(const struct k2mc_fence *f)
{
	return f == NULL ? 0 : f->lease_ms;
}
