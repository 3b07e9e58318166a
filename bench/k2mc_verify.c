/* k2mc-verify: checks a Memcached cluster against an expected final state
 * (the file k2mc-mock --expect writes: "S key value" / "D key" lines), using
 * libmemcached with the same ketama distribution k2mc writes with. For the
 * demo and benchmarks; the test suite has its own checks in tests/harness.c. */
#include <getopt.h>
#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

static void usage(FILE *out)
{
	fprintf(out, "Usage: k2mc-verify -m HOST:PORT[,...] --expect FILE [--key-prefix P] "
		     "[--sample N]\n"
		     "Exit 0 when every checked key holds its expected value (or is absent for a\n"
		     "delete), 1 on any difference, 2 on bad usage.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "expect", required_argument, NULL, 'x' },
		{ "key-prefix", required_argument, NULL, 'p' },
		{ "sample", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct k2mc_config cfg;
	const char *expect = NULL, *prefix = "", *servers = "127.0.0.1:11211";
	long sample = 0;
	char err[256], line[65536], key[K2MC_MC_KEY_MAX + 1];
	unsigned long checked = 0, ok = 0, wrong = 0, missing = 0, present = 0, lineno = 0;
	memcached_st *mc;
	FILE *f;
	int opt;

	while ((opt = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'm': servers = optarg; break;
		case 'x': expect = optarg; break;
		case 'p': prefix = optarg; break;
		case 's': sample = strtol(optarg, NULL, 10); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	memset(&cfg, 0, sizeof(cfg));
	if (expect == NULL || k2mc_config_parse_servers(&cfg, servers, err, sizeof(err)) != 0) {
		fprintf(stderr, "k2mc-verify: %s\n", expect ? err : "missing --expect FILE");
		usage(stderr);
		return 2;
	}
	f = fopen(expect, "r");
	if (f == NULL) {
		perror(expect);
		return 2;
	}
	mc = memcached_create(NULL);
	memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA, 1);
	for (int i = 0; i < cfg.nservers; i++)
		memcached_server_add(mc, cfg.servers[i].host, (in_port_t)cfg.servers[i].port);
	while (fgets(line, sizeof(line), f) != NULL) {
		char *k, *v, *got;
		size_t glen, klen;
		uint32_t flags;
		memcached_return_t rc;

		lineno++;
		if (sample > 0 && (lineno * 2654435761u) % 1000 >= (unsigned long)sample)
			continue;
		line[strcspn(line, "\n")] = '\0';
		k = strchr(line, ' ');
		if (k == NULL)
			continue;
		k++;
		v = strchr(k, ' ');
		if (v != NULL)
			*v++ = '\0';
		klen = (size_t)snprintf(key, sizeof(key), "%s%s", prefix, k);
		got = memcached_get(mc, key, klen, &glen, &flags, &rc);
		checked++;
		if (line[0] == 'S') {
			if (got == NULL) {
				if (missing++ < 5)
					fprintf(stderr, "missing: %s (%s)\n", key, memcached_strerror(mc, rc));
			} else if (glen != strlen(v) || memcmp(got, v, glen) != 0) {
				if (wrong++ < 5)
					fprintf(stderr, "wrong value: %s = %.*s, expected %s\n", key,
						(int)(glen > 60 ? 60 : glen), got, v);
			} else {
				ok++;
			}
		} else if (got != NULL) {
			if (present++ < 5)
				fprintf(stderr, "deleted key present: %s\n", key);
		} else {
			ok++;
		}
		free(got);
	}
	fclose(f);
	memcached_free(mc);
	printf("verified %lu keys: %lu right, %lu missing, %lu wrong, %lu deleted-but-present\n",
	       checked, ok, missing, wrong, present);
	return ok == checked ? 0 : 1;
}
