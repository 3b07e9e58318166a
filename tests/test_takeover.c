/* takeover.c: the metadata a commit carries and the wait a new owner
 * derives from it (the rule is in src/core/takeover.h). */
#include <criterion/criterion.h>
#include <string.h>

#include "core/takeover.h"

static int64_t hold(int64_t committed, const char *md, int64_t own, enum k2mc_takeover_why *w)
{
	return k2mc_takeover_hold_ms(committed, md, md ? strlen(md) : 0, own, w);
}

Test(takeover, released_is_written_at_once)
{
	char md[K2MC_TAKEOVER_MD_MAX];
	enum k2mc_takeover_why w;

	k2mc_takeover_metadata(md, sizeof(md), 1, 37500);
	cr_expect_eq(hold(120, md, 40000, &w), 0);
	cr_expect_eq(w, K2MC_TAKEOVER_RELEASED);
}

Test(takeover, lease_recorded_is_waited)
{
	char md[K2MC_TAKEOVER_MD_MAX];
	enum k2mc_takeover_why w;

	k2mc_takeover_metadata(md, sizeof(md), 0, 4400);
	cr_expect_str_eq(md, "k2mc/1 lease_ms=4400");
	/* the previous owner's lease, not ours */
	cr_expect_eq(hold(0, md, 40000, &w), 4400);
	cr_expect_eq(w, K2MC_TAKEOVER_LEASE);
}

Test(takeover, no_commit_no_wait)
{
	enum k2mc_takeover_why w;

	cr_expect_eq(hold(-1001, NULL, 40000, &w), 0);
	cr_expect_eq(w, K2MC_TAKEOVER_NEW);
}

Test(takeover, foreign_or_bad_metadata_waits_our_lease)
{
	static const char *const bad[] = { NULL, "", "released", "k2mc/1 lease_ms=",
					   "k2mc/1 lease_ms=-5", "k2mc/1 lease_ms=12x",
					   "k2mc/1 lease_ms=99999999999", "k2mc/2 released" };
	enum k2mc_takeover_why w;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_eq(hold(5, bad[i], 37500, &w), 37500, "metadata '%s'",
			     bad[i] ? bad[i] : "(none)");
		cr_expect_eq(w, K2MC_TAKEOVER_UNKNOWN, "metadata '%s'", bad[i] ? bad[i] : "(none)");
	}
	/* not NUL-terminated, longer than k2mc ever writes */
	char big[200];
	memset(big, 'k', sizeof(big));
	cr_expect_eq(k2mc_takeover_hold_ms(5, big, sizeof(big), 37500, &w), 37500);
}
