/* The membership lease; see fence.h for the argument that makes it safe. */
#include "core/fence.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

struct k2mc_fence {
	int64_t lease_ms; /* immutable */
	/* written by the committer and main (CAS to the maximum, release);
	 * read by writers (acquire): the fence-clock ms until which sending is
	 * allowed. Release/acquire pairs the commit result the renewal is based
	 * on with the writers' sends, though only the value itself matters. */
	_Alignas(64) _Atomic int64_t until;
	/* written by main (k2mc_fence_revoke, fetch_add, seq_cst), read by the
	 * committer when it sends and when it renews (seq_cst). seq_cst because
	 * revoke is a store to gen followed by a store to until, and renew is a
	 * load of gen followed by a CAS on until: the total order guarantees a
	 * renewal that saw the old generation cannot land after the revoke's
	 * reset of until without also being checked against the new gen (renew
	 * re-reads gen after its CAS and undoes it, see below). */
	_Atomic uint64_t gen;
};

int64_t k2mc_fence_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct k2mc_fence *k2mc_fence_new(int64_t lease_ms)
{
	struct k2mc_fence *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return NULL;
	f->lease_ms = lease_ms > 0 ? lease_ms : 1;
	atomic_init(&f->until, 0);
	atomic_init(&f->gen, 1);
	return f;
}

void k2mc_fence_free(struct k2mc_fence *f)
{
	free(f);
}

void k2mc_fence_renew(struct k2mc_fence *f, uint64_t gen, int64_t sent_at_ms)
{
	int64_t want = sent_at_ms + f->lease_ms;
	int64_t cur;

	if (f == NULL || atomic_load(&f->gen) != gen)
		return;
	cur = atomic_load_explicit(&f->until, memory_order_relaxed);
	while (want > cur) {
		if (atomic_compare_exchange_weak_explicit(&f->until, &cur, want,
							  memory_order_seq_cst,
							  memory_order_relaxed))
			break;
	}
	/* A revoke between our generation check and the CAS: it reset until
	 * to 0 after bumping gen, and our CAS may have come after that reset.
	 * Seeing the new generation now (seq_cst) means undo what we stored;
	 * if the revoke's gen bump comes later in the total order, its reset
	 * of until comes later too and wins. */
	if (atomic_load(&f->gen) != gen) {
		int64_t mine = want;

		atomic_compare_exchange_strong(&f->until, &mine, 0);
	}
}

uint64_t k2mc_fence_revoke(struct k2mc_fence *f)
{
	uint64_t g;

	if (f == NULL)
		return 0;
	g = atomic_fetch_add(&f->gen, 1) + 1;
	atomic_store(&f->until, 0);
	return g;
}

uint64_t k2mc_fence_generation(const struct k2mc_fence *f)
{
	return f == NULL ? 0 : atomic_load(&((struct k2mc_fence *)f)->gen);
}

int64_t k2mc_fence_deadline(const struct k2mc_fence *f)
{
	if (f == NULL)
		return INT64_MAX;
	return atomic_load_explicit(&((struct k2mc_fence *)f)->until, memory_order_acquire);
}

int k2mc_fence_held(const struct k2mc_fence *f)
{
	return k2mc_fence_now_ms() < k2mc_fence_deadline(f);
}

int64_t k2mc_fence_lease_ms(const struct k2mc_fence *f)
{
	return f == NULL ? 0 : f->lease_ms;
}
