/* json-bench: what mapping one record costs, per template and JSON engine.
 * k2mc's purpose-built extractor (workers/mapping.c: one pass, only the
 * pointers the templates name, the whole value validated) against the two
 * Debian JSON libraries it could have used instead, jansson and json-c,
 * each doing the same job: key "user:" + the string at /id, value the
 * compact text of /profile. Also the default templates against what the
 * old hot path (keymap.c: check the key, copy prefix + key) did. One thread,
 * CPU time of the thread (CLOCK_THREAD_CPUTIME_ID); outputs are checked
 * equal across engines before timing. Not a Kafka or Memcached benchmark
 * (bench.py runs k2mc end to end for that).
 * Usage: json-bench [--records N] [--json]   (one JSON object per line) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "workers/mapping.h"

#define NVALUES 1024

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A user record of about size bytes: the profile (a sub-document with a
 * string, a number, an array and a padded bio) is most of it. */
static size_t make_value(char *buf, size_t cap, unsigned i, size_t size)
{
	int n = snprintf(buf, cap,
			 "{\"id\": \"u%07u\", \"profile\": {\"name\": \"User %u\", \"score\": %u.5, "
			 "\"tags\": [\"a\", \"b\"], \"bio\": \"",
			 i, i, i % 100);
	size_t len = (size_t)n;

	while (len + 4 < size && len + 4 < cap) {
		buf[len] = (char)('a' + (len % 26));
		len++;
	}
	memcpy(buf + len, "\"}}", 4);
	return len + 3;
}

struct result {
	const char *engine, *what;
	size_t size;
	double ns_cpu, rps;
};

static struct result results[32];
static int nresults;

static void report(const char *engine, const char *what, size_t size, uint64_t n, double cpu,
		   double wall)
{
	struct result *r = &results[nresults++];

	r->engine = engine;
	r->what = what;
	r->size = size;
	r->ns_cpu = cpu * 1e9 / (double)n;
	r->rps = (double)n / wall;
}

/* ---- k2mc's mapping -------------------------------------------------------------- */

struct k2mc_case {
	struct k2mc_config cfg;
	struct k2mc_mapping *map;
	struct k2mc_arena *arena;
};

static void k2mc_setup(struct k2mc_case *c, const char *key, const char *value,
		       const char *prefix)
{
	char err[512];

	memset(&c->cfg, 0, sizeof(c->cfg));
	c->cfg.key_template = key;
	c->cfg.value_template = value;
	c->cfg.key_prefix = prefix;
	c->cfg.key_prefix_len = strlen(prefix);
	c->map = k2mc_mapping_new(&c->cfg, err, sizeof(err));
	if (c->map == NULL) {
		fprintf(stderr, "json-bench: %s\n", err);
		exit(1);
	}
	c->arena = k2mc_arena_new();
}

static void k2mc_run(const char *what, const char *key, const char *value, const char *prefix,
		     char **vals, size_t *lens, char **keys, size_t size, uint64_t n)
{
	struct k2mc_case c;
	struct k2mc_mapped out;
	double c0, w0;
	uint64_t sink = 0;

	k2mc_setup(&c, key, value, prefix);
	c0 = cpu_s();
	w0 = wall_s();
	for (uint64_t i = 0; i < n; i++) {
		size_t j = i % NVALUES;
		struct k2mc_record r = { "t", 0, 0, -1, keys[j], strlen(keys[j]), vals[j], lens[j],
					 NULL };

		/* the writer resets its arena once per batch of 512 */
		if ((i & 511) == 0)
			k2mc_arena_reset(c.arena);
		if (k2mc_mapping_map(c.map, &r, NULL, 0, c.arena, &out) != 0)
			abort();
		sink += out.key_len + out.value_len + (unsigned char)out.key[0];
	}
	report("k2mc", what, size, n, cpu_s() - c0, wall_s() - w0);
	if (sink == 0)
		abort();
	k2mc_arena_free(c.arena);
	k2mc_mapping_free(c.map);
}

/* What keymap.c did per record before templates: check the key bytes, then
 * (at queue time) copy prefix + key; the value went as it was. */
static void keymap_run(char **vals, size_t *lens, char **keys, size_t size, uint64_t n)
{
	char key[K2MC_MC_KEY_MAX];
	double c0 = cpu_s(), w0 = wall_s();
	uint64_t sink = 0;

	for (uint64_t i = 0; i < n; i++) {
		size_t j = i % NVALUES, kl = strlen(keys[j]);
		const unsigned char *k = (const unsigned char *)keys[j];
		int bad = kl == 0 || 4 + kl > K2MC_MC_KEY_MAX;

		for (size_t b = 0; b < kl && !bad; b++)
			bad = k[b] <= 0x20 || k[b] == 0x7f;
		if (bad)
			abort();
		memcpy(key, "app:", 4);
		memcpy(key + 4, k, kl);
		/* keep the copy and the value from being optimized away */
		__asm__ volatile("" : : "r"(key), "r"(vals[j]) : "memory");
		sink += kl + 4 + lens[j];
	}
	report("keymap (before)", "default: prefix + {key}, {value}", size, n, cpu_s() - c0,
	       wall_s() - w0);
	if (sink == 0)
		abort();
}

/* ---- the libraries (bench/json_bench_libs.c: jansson and json-c cannot share a
 * translation unit, both define json_object_get) ---------------------------------- */

void jansson_map(const char *v, size_t len, char *key, size_t *klen, char **value);
void *jsonc_tokener(void);
void jsonc_tokener_free(void *tok);
void jsonc_map(void *tok, const char *v, size_t len, char *key, size_t *klen, const char **value,
	       void **root);
void jsonc_put(void *root);

static void jansson_run(char **vals, size_t *lens, size_t size, uint64_t n)
{
	char key[K2MC_MC_KEY_MAX];
	double c0 = cpu_s(), w0 = wall_s();
	uint64_t sink = 0;

	for (uint64_t i = 0; i < n; i++) {
		size_t j = i % NVALUES, kl;
		char *v;

		jansson_map(vals[j], lens[j], key, &kl, &v);
		sink += kl + strlen(v);
		free(v);
	}
	report("jansson 2.14", "user:{json:/id} + {json:/profile}", size, n, cpu_s() - c0,
	       wall_s() - w0);
	if (sink == 0)
		abort();
}

static void jsonc_run(char **vals, size_t *lens, size_t size, uint64_t n)
{
	void *tok = jsonc_tokener();
	char key[K2MC_MC_KEY_MAX];
	double c0 = cpu_s(), w0 = wall_s();
	uint64_t sink = 0;

	for (uint64_t i = 0; i < n; i++) {
		size_t j = i % NVALUES, kl;
		const char *v;
		void *root;

		jsonc_map(tok, vals[j], lens[j], key, &kl, &v, &root);
		sink += kl + strlen(v);
		jsonc_put(root);
	}
	report("json-c 0.16", "user:{json:/id} + {json:/profile}", size, n, cpu_s() - c0,
	       wall_s() - w0);
	jsonc_tokener_free(tok);
	if (sink == 0)
		abort();
}

/* The three engines give the same key and value for every test value. */
static void cross_check(char **vals, size_t *lens)
{
	struct k2mc_case c;
	void *tok = jsonc_tokener();

	k2mc_setup(&c, "user:{json:/id}", "{json:/profile}", "");
	for (size_t j = 0; j < NVALUES; j++) {
		struct k2mc_record r = { "t", 0, 0, -1, "k", 1, vals[j], lens[j], NULL };
		struct k2mc_mapped o;
		char jk[K2MC_MC_KEY_MAX], ck[K2MC_MC_KEY_MAX], *jv;
		const char *cv;
		size_t jkl, ckl;
		void *root;

		if (k2mc_mapping_map(c.map, &r, NULL, 0, c.arena, &o) != 0)
			abort();
		jansson_map(vals[j], lens[j], jk, &jkl, &jv);
		jsonc_map(tok, vals[j], lens[j], ck, &ckl, &cv, &root);
		if (o.key_len != jkl || memcmp(o.key, jk, jkl) != 0 || ckl != jkl ||
		    memcmp(ck, jk, jkl) != 0 || o.value_len != strlen(jv) ||
		    memcmp(o.value, jv, o.value_len) != 0 || strcmp(cv, jv) != 0) {
			fprintf(stderr, "json-bench: engines disagree on value %zu:\n k2mc %.*s\n "
				"jansson %s\n json-c %s\n", j, (int)o.value_len,
				(const char *)o.value, jv, cv);
			exit(1);
		}
		free(jv);
		jsonc_put(root);
	}
	jsonc_tokener_free(tok);
	k2mc_arena_free(c.arena);
	k2mc_mapping_free(c.map);
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = { 100, 1024 };
	uint64_t n = 500000;
	int as_json = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--records") == 0 && i + 1 < argc)
			n = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--json") == 0)
			as_json = 1;
		else {
			fprintf(stderr, "usage: json-bench [--records N] [--json]\n");
			return 2;
		}
	}
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		char *vals[NVALUES], *keys[NVALUES];
		size_t lens[NVALUES];

		size_t total = 0, mean;

		for (unsigned i = 0; i < NVALUES; i++) {
			vals[i] = malloc(sizes[s] + 256);
			lens[i] = make_value(vals[i], sizes[s] + 256, i, sizes[s]);
			total += lens[i];
			keys[i] = malloc(16);
			snprintf(keys[i], 16, "key-%08u", i);
		}
		/* what is reported: the values' real mean size (the smallest
		 * document is a little over 100 bytes) */
		mean = total / NVALUES;
		cross_check(vals, lens);
		keymap_run(vals, lens, keys, mean, n);
		k2mc_run("default: prefix + {key}, {value}", "{key}", "{value}", "app:", vals, lens,
			 keys, mean, n);
		k2mc_run("user:{key}, {value}", "user:{key}", "{value}", "", vals, lens, keys,
			 mean, n);
		k2mc_run("user:{json:/id}, {value}", "user:{json:/id}", "{value}", "", vals, lens,
			 keys, mean, n);
		k2mc_run("user:{json:/id} + {json:/profile}", "user:{json:/id}", "{json:/profile}", "",
			 vals, lens, keys, mean, n);
		jansson_run(vals, lens, mean, n / 4);
		jsonc_run(vals, lens, mean, n / 4);
		for (unsigned i = 0; i < NVALUES; i++) {
			free(vals[i]);
			free(keys[i]);
		}
	}
	for (int i = 0; i < nresults; i++) {
		struct result *r = &results[i];

		if (as_json)
			printf("{\"engine\":\"%s\",\"templates\":\"%s\",\"value_bytes\":%zu,"
			       "\"cpu_ns_per_record\":%.1f,\"records_per_s\":%.0f}\n",
			       r->engine, r->what, r->size, r->ns_cpu, r->rps);
		else
			printf("%-16s %-36s %5zu B  %8.1f ns CPU/record  %10.0f records/s\n",
			       r->engine, r->what, r->size, r->ns_cpu, r->rps);
	}
	return 0;
}
