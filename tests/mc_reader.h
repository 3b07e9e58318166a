/* A reader of the cache for integration tests: a thread that fetches every
 * key of a k2mc-mock key space ("key-%08u", values "v:<key>:<seq>:...",
 * bench/gen.h) from one memcached over and over, and counts the keys that
 * ever go back to an older value (a smaller seq than one it saw before) or
 * vanish after it saw them: what a client of the cache would see during a
 * hand-off. It compares seq numbers, so the records it watches must come
 * from one producer (one seq stream: k2mc-mock's "produce" commands continue
 * it), and the topic should have no tombstones (a delete would count as a
 * vanished key). Not a check of the final state: h_verify_memcached is. */
#ifndef K2MC_TEST_MC_READER_H
#define K2MC_TEST_MC_READER_H

#include <stddef.h>
#include <stdint.h>

struct h_reader;

struct h_reader_opts {
	const char *host;
	int port;
	const char *prefix; /* before "key-%08u" in Memcached (--key-prefix), or NULL */
	uint32_t keys;      /* key indexes 0..keys-1 */
	int pause_ms;       /* between two sweeps; 0: none */
};

struct h_reader_stats {
	uint64_t sweeps;        /* complete passes over every key */
	uint64_t failed;        /* passes cut short by an error (server frozen, down) */
	size_t went_back;       /* keys seen at least once with a smaller seq than before */
	size_t vanished;        /* keys seen, then missing */
	uint64_t events;        /* every read of an older value or a missing key, summed */
	size_t seen;            /* keys read at least once */
	int64_t first_ms;       /* h_now_ms of the first event, 0 if none */
	int64_t last_ms;        /* ... and of the last */
	char first[1024];       /* the first few events, one per line */
};

/* Starts the thread; NULL on failure (out of memory, no thread). */
struct h_reader *h_reader_start(const struct h_reader_opts *o);
/* A copy of the counts so far. */
void h_reader_stats(struct h_reader *r, struct h_reader_stats *s);
/* Waits until n more sweeps have completed than when called: a sweep that
 * began after the call has read every key. 0 or -ETIMEDOUT. */
int h_reader_wait_sweeps(struct h_reader *r, uint64_t n, int timeout_ms);
/* Starts the counts afresh (the seq each key was last seen at is kept):
 * what goes back after this point, e.g. once a new owner has written
 * everything, is counted apart from what went back before. */
void h_reader_reset(struct h_reader *r);
/* Stops and joins the thread, copies the final counts to s (may be NULL)
 * and frees r. NULL is a no-op. */
void h_reader_stop(struct h_reader *r, struct h_reader_stats *s);

#endif
