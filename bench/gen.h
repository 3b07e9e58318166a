/* The generated record stream shared by k2mc-mock (which produces it to
 * Kafka) and mc-ceiling (which writes it straight to Memcached): the same
 * --seed/--keys/--value-size/--tombstones give the same records in both.
 * Header-only (static inline); not a general-purpose PRNG or data generator.
 *
 * Record seq (counting from 0): key index = splitmix64 % keys; tombstone when
 * tombstones > 0 and the next splitmix64 draw, as a double in [0, 1), is below
 * the fraction (no draw at all when tombstones == 0); key "key-%08u"; value
 * "v:<key>:<seq>:" padded to value_size with 'a' + seq % 26 (or cut to it). */
#ifndef K2MC_BENCH_GEN_H
#define K2MC_BENCH_GEN_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* keeps "key-%08u" at GEN_KEY_LEN bytes */
#define GEN_MAX_KEYS 100000000u
#define GEN_KEY_LEN 12
/* a key buffer: GEN_KEY_LEN plus the terminator, with room */
#define GEN_KEY_BUF 32

struct gen {
	uint64_t prng;
	uint64_t seq; /* the next record's sequence number */
	uint32_t keys;
	uint32_t value_size;
	double tomb; /* tombstone fraction in [0, 1] */
};

/* One record's identity; its key and value are derived from it. */
struct gen_rec {
	uint32_t idx; /* key index in [0, keys) */
	bool dead; /* tombstone: NULL value */
	uint64_t seq;
};

/* splitmix64: tiny, full-period, good enough to spread keys; deterministic
 * per seed so two runs (and two tools) produce the same records. */
static inline uint64_t gen_prng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* keys in [1, GEN_MAX_KEYS], tombstone_pct in [0, 100] (the callers check) */
static inline void gen_init(struct gen *g, uint64_t seed, uint32_t keys,
			    uint32_t value_size, double tombstone_pct)
{
	*g = (struct gen){
		.prng = seed,
		.seq = 0,
		.keys = keys,
		.value_size = value_size,
		.tomb = tombstone_pct / 100.0,
	};
}

/* Draws the next record. The draws per record are fixed (one, or two with
 * tombstones), so record i is the same whoever asks and whenever. */
static inline void gen_next(struct gen *g, struct gen_rec *r)
{
	r->idx = (uint32_t)(gen_prng_next(&g->prng) % g->keys);
	/* top 53 bits as a uniform double in [0, 1) */
	r->dead = g->tomb > 0 &&
		  (double)(gen_prng_next(&g->prng) >> 11) * 0x1p-53 < g->tomb;
	r->seq = g->seq++;
}

/* Writes the key and its terminator; returns its length (GEN_KEY_LEN for
 * every idx below GEN_MAX_KEYS). size >= GEN_KEY_BUF is always enough. */
static inline int gen_key(char *buf, size_t size, uint32_t idx)
{
	return snprintf(buf, size, "key-%08" PRIu32, idx);
}

/* value = "v:<key>:<seq>:" padded to exactly size bytes with a filler that
 * depends on seq only, so it can be regenerated from (key, seq); truncated if
 * size is shorter than the prefix. Printable, no whitespace: it must be
 * storable as-is in Memcached's text protocol and comparable line by line.
 * Not terminated. */
static inline void gen_value(char *buf, uint32_t size, const char *key,
			     uint64_t seq)
{
	char prefix[64];
	int n = snprintf(prefix, sizeof(prefix), "v:%s:%" PRIu64 ":", key, seq);
	uint32_t plen = (uint32_t)n < size ? (uint32_t)n : size;

	memcpy(buf, prefix, plen);
	memset(buf + plen, 'a' + (int)(seq % 26), size - plen);
}

/* The same record as a JSON document of exactly size bytes, for template
 * benchmarks (--key 'user:{json:/id}' --value '{json:/profile}'):
 * {"id":"<key>","seq":<seq>,"profile":{"name":"<key>","seq":<seq>,"bio":"<filler>"}}
 * with gen_value's filler for seq; gen_value's bytes instead when size is too
 * short for the document (under about 90 bytes). */
static inline void gen_json_value(char *buf, uint32_t size, const char *key, uint64_t seq)
{
	char head[160];
	int n = snprintf(head, sizeof(head),
			 "{\"id\":\"%s\",\"seq\":%" PRIu64 ",\"profile\":{\"name\":\"%s\",\"seq\":%" PRIu64
			 ",\"bio\":\"",
			 key, seq, key, seq);

	if (n < 0 || (uint32_t)n + 3 > size) {
		gen_value(buf, size, key, seq);
		return;
	}
	memcpy(buf, head, (size_t)n);
	memset(buf + n, 'a' + (int)(seq % 26), size - (uint32_t)n - 3);
	memcpy(buf + size - 3, "\"}}", 3);
}

#endif
