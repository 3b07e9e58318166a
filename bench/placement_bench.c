/* placement-bench: what choosing a key's server costs (placement.h), per key,
 * for every --distribution at 3 and 16 servers, and at 16 with one server
 * ejected (--mc-eject: the failover paths). One thread, keys of the mock's
 * format ("key-%08u", 12 bytes) built beforehand, CPU time of the process.
 * Prints one JSON object per line for bench.py. Not a test: it checks
 * nothing about where keys go (tests/test_placement.c does). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "workers/placement.h"

#define NKEYS  (1u << 18)
#define KEYLEN 12
#define ROUNDS 5

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ns per key, the best of ROUNDS passes over the keys; -1 if refused */
static double measure(enum k2mc_distribution d, int nservers, int eject, const char *keys,
                      char *err, size_t errlen)
{
	static struct k2mc_config c;
	struct k2mc_placement *p;
	double best = 1e30;
	uint64_t sink = 0;

	memset(&c, 0, sizeof(c));
	for (int s = 0; s < nservers; s++) {
		/* IP literals: spymemcached would resolve a host name */
		snprintf(c.servers[s].host, sizeof(c.servers[s].host), "10.0.0.%d", s + 1);
		c.servers[s].port = 11211;
		c.servers[s].weight = 1;
	}
	c.nservers = nservers;
	c.distribution = d;
	c.mc_eject = eject;
	p = k2mc_placement_new(&c, err, errlen);
	if (p == NULL)
		return -1;
	if (eject)
		k2mc_placement_eject(p, 0, time(NULL) + 3600);
	for (int r = 0; r < ROUNDS; r++) {
		double t0 = cpu_s(), t;

		for (unsigned i = 0; i < NKEYS; i++)
			sink +=
			    (uint64_t)k2mc_placement_server(p, keys + (size_t)i * KEYLEN, KEYLEN);
		t = cpu_s() - t0;
		if (t < best)
			best = t;
	}
	k2mc_placement_free(p);
	/* keeps the calls from being optimised away */
	if (sink == UINT64_MAX)
		fputs("", stderr);
	return best * 1e9 / NKEYS;
}

int main(void)
{
	char *keys = malloc((size_t)NKEYS * KEYLEN + 1);
	char err[512];

	if (keys == NULL)
		return 1;
	for (unsigned i = 0; i < NKEYS; i++) {
		char k[32];

		snprintf(k, sizeof(k), "key-%08u", i * 2654435761u % 100000000u);
		memcpy(keys + (size_t)i * KEYLEN, k, KEYLEN);
	}
	for (int d = K2MC_DIST_KETAMA; d <= K2MC_DIST_SPYMEMCACHED; d++) {
		double n3 = measure(d, 3, 0, keys, err, sizeof(err));
		double n16 = measure(d, 16, 0, keys, err, sizeof(err));
		/* modula and crc32 refuse --mc-eject: -1 */
		double e16 = measure(d, 16, 1, keys, err, sizeof(err));

		printf("{\"distribution\": \"%s\", \"keys\": %u, \"key_len\": %d, "
		       "\"ns_per_key_3\": %.1f, \"ns_per_key_16\": %.1f, "
		       "\"ns_per_key_16_one_ejected\": %.1f}\n",
		       k2mc_distribution_name((enum k2mc_distribution)d), NKEYS, KEYLEN, n3, n16,
		       e16);
	}
	free(keys);
	return 0;
}
