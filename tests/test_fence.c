/* Unit suite for the membership lease (fence.h): renewals extend it only
 * forward, a revocation ends it at once and makes older renewals void, and
 * a renewal racing a revocation never survives it. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/fence.h"

Test(fence, no_lease_until_renewed)
{
	struct k2mc_fence *f = k2mc_fence_new(5000);

	cr_assert_not(k2mc_fence_held(f), "a new fence holds no lease");
	k2mc_fence_renew(f, k2mc_fence_generation(f), k2mc_now_ms());
	cr_assert(k2mc_fence_held(f));
	k2mc_fence_free(f);
}

Test(fence, lease_is_measured_from_the_send_time)
{
	struct k2mc_fence *f = k2mc_fence_new(5000);
	int64_t now = k2mc_now_ms();

	/* a commit sent 6 s ago and answered now proves nothing any more */
	k2mc_fence_renew(f, k2mc_fence_generation(f), now - 6000);
	cr_assert_not(k2mc_fence_held(f));
	k2mc_fence_renew(f, k2mc_fence_generation(f), now - 1000);
	cr_assert_eq(k2mc_fence_deadline(f), now + 4000);
	/* a late answer to an older commit does not shorten it */
	k2mc_fence_renew(f, k2mc_fence_generation(f), now - 3000);
	cr_assert_eq(k2mc_fence_deadline(f), now + 4000);
	k2mc_fence_free(f);
}

Test(fence, revoke_ends_the_lease_and_voids_older_generations)
{
	struct k2mc_fence *f = k2mc_fence_new(5000);
	uint64_t g0 = k2mc_fence_generation(f), g1;

	k2mc_fence_renew(f, g0, k2mc_now_ms());
	cr_assert(k2mc_fence_held(f));
	g1 = k2mc_fence_revoke(f);
	cr_assert_neq(g0, g1);
	cr_assert_not(k2mc_fence_held(f), "held after revoke");
	/* the answer to a commit sent before the revocation */
	k2mc_fence_renew(f, g0, k2mc_now_ms());
	cr_assert_not(k2mc_fence_held(f), "an old generation's renewal counted");
	k2mc_fence_renew(f, g1, k2mc_now_ms());
	cr_assert(k2mc_fence_held(f));
	k2mc_fence_free(f);
}

Test(fence, null_fence_allows_everything)
{
	cr_assert(k2mc_fence_held(NULL));
	cr_assert_eq(k2mc_fence_deadline(NULL), INT64_MAX);
}

/* A renewer keeps renewing generation g while the main thread revokes: once
 * a revoke has returned, no renewal of an older generation may be visible,
 * whatever the interleaving. */
struct race {
	struct k2mc_fence *f;
	_Atomic uint64_t gen_seen;
	_Atomic int stop;
};

static void *renewer(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->stop)) {
		uint64_t g = atomic_load(&r->gen_seen);

		k2mc_fence_renew(r->f, g, k2mc_now_ms());
	}
	return NULL;
}

Test(fence, renewal_racing_a_revoke_never_survives_it)
{
	struct race r = { .f = k2mc_fence_new(60000) };
	pthread_t t;

	atomic_store(&r.gen_seen, k2mc_fence_generation(r.f));
	cr_assert_eq(pthread_create(&t, NULL, renewer, &r), 0);
	for (int i = 0; i < 2000; i++) {
		/* the renewer still uses the old generation: after revoke
		 * returns, the lease must stay at 0 */
		k2mc_fence_revoke(r.f);
		cr_assert_eq(k2mc_fence_deadline(r.f), 0, "iteration %d: revoked lease visible", i);
		for (int k = 0; k < 10; k++)
			cr_assert_eq(k2mc_fence_deadline(r.f), 0,
				     "iteration %d: an old-generation renewal landed after revoke", i);
		/* let the renewer move to the new generation, then revoke again */
		atomic_store(&r.gen_seen, k2mc_fence_generation(r.f));
		while (k2mc_fence_deadline(r.f) == 0)
			;
	}
	atomic_store(&r.stop, 1);
	pthread_join(t, NULL);
	k2mc_fence_free(r.f);
}

/* A rebalance began: renewals during the join phase extend the session, not
 * the membership, so none may carry the lease past the cap; a revoke lifts
 * it for the next generation. */
Test(fence, cap_bounds_renewals_until_revoke)
{
	struct k2mc_fence *f = k2mc_fence_new(10000);
	uint64_t g = k2mc_fence_generation(f);
	int64_t now = k2mc_now_ms();

	k2mc_fence_renew(f, g, now);
	cr_assert_eq(k2mc_fence_deadline(f), now + 10000);
	k2mc_fence_cap(f, now + 3000);
	cr_expect_eq(k2mc_fence_deadline(f), now + 3000, "a running lease is shortened");
	k2mc_fence_renew(f, g, now + 1000);
	cr_expect_eq(k2mc_fence_deadline(f), now + 3000, "a renewal does not pass the cap");
	k2mc_fence_cap(f, now + 5000);
	cr_expect_eq(k2mc_fence_deadline(f), now + 3000, "a later cap does not lift an earlier");
	g = k2mc_fence_revoke(f);
	k2mc_fence_renew(f, g, now + 1000);
	cr_expect_eq(k2mc_fence_deadline(f), now + 11000, "the revoke lifted the cap");
	k2mc_fence_free(f);
}
