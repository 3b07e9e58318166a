/* Takeover: the commit metadata that tells a partition's next owner whether
 * to wait out the previous owner's lease (the rule and its argument are in
 * takeover.h). */
#include "core/takeover.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MD_RELEASED "k2mc/1 released"
#define MD_LEASE "k2mc/1 lease_ms="
/* a recorded lease longer than this is not believed: our own is used (a
 * lease is shorter than session.timeout.ms, at most 1 hour in Kafka) */
#define LEASE_MAX_MS (3600 * 1000)

char *k2mc_takeover_metadata(char *buf, size_t len, int released, int64_t lease_ms)
{
	if (released)
		snprintf(buf, len, "%s", MD_RELEASED);
	else
		snprintf(buf, len, "%s%" PRId64, MD_LEASE, lease_ms > 0 ? lease_ms : 0);
	return buf;
}

const char *k2mc_takeover_why_name(enum k2mc_takeover_why w)
{
	static const char *const names[] = {
		[K2MC_TAKEOVER_NEW] = "no commit yet",
		[K2MC_TAKEOVER_RELEASED] = "released cleanly",
		[K2MC_TAKEOVER_LEASE] = "not released: the previous owner's lease",
		[K2MC_TAKEOVER_UNKNOWN] = "committed without k2mc's metadata: our own lease",
	};
	return (unsigned)w < sizeof(names) / sizeof(names[0]) ? names[w] : "?";
}

int64_t k2mc_takeover_hold_ms(int64_t committed, const void *md, size_t mdlen,
			      int64_t own_lease_ms, enum k2mc_takeover_why *why)
{
	char s[K2MC_TAKEOVER_MD_MAX];
	size_t nl = strlen(MD_LEASE);

	if (committed < 0) {
		*why = K2MC_TAKEOVER_NEW;
		return 0;
	}
	if (md != NULL && mdlen > 0 && mdlen < sizeof(s)) {
		memcpy(s, md, mdlen);
		s[mdlen] = '\0';
		if (strcmp(s, MD_RELEASED) == 0) {
			*why = K2MC_TAKEOVER_RELEASED;
			return 0;
		}
		if (strncmp(s, MD_LEASE, nl) == 0 && s[nl] >= '0' && s[nl] <= '9') {
			char *end;
			long long v = strtoll(s + nl, &end, 10);

			if (*end == '\0' && v >= 0 && v <= LEASE_MAX_MS) {
				*why = K2MC_TAKEOVER_LEASE;
				return (int64_t)v;
			}
		}
	}
	*why = K2MC_TAKEOVER_UNKNOWN;
	return own_lease_ms > 0 ? own_lease_ms : 0;
}
