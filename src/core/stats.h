/* Counters: each is written by exactly one thread (its owner) and read by the
 * main thread for stats lines and the exit summary. Owners add with a relaxed
 * load+store (no locked instruction on the hot path); readers load relaxed:
 * a stats line may be a few records stale, never torn. */
#ifndef K2MC_STATS_H
#define K2MC_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#include "workers/keymap.h"

typedef _Atomic uint64_t k2mc_counter;

/* Owner thread only. */
static inline void k2mc_count(k2mc_counter *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t k2mc_read(k2mc_counter *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* End-to-end latency, record timestamp -> Memcached acknowledgement, in
 * milliseconds (Kafka timestamps have ms resolution); the last bucket holds
 * everything from K2MC_LAT_MAX_MS up. */
#define K2MC_LAT_MAX_MS 10000

/* One per writer thread, written by that writer. */
struct k2mc_writer_stats {
	_Alignas(64) k2mc_counter written;      /* sets acknowledged (STORED) */
	k2mc_counter deleted;                   /* deletes acknowledged (DELETED/NOT_FOUND) */
	k2mc_counter skipped[K2MC_KEY_NREASONS]; /* records Memcached cannot take, per reason */
	k2mc_counter bytes;                     /* value bytes acknowledged */
	k2mc_counter batches;                   /* pipelined exchanges completed */
	k2mc_counter mc_errors;                 /* connection failures and error replies */
	k2mc_counter retries;                   /* batches resent after a failure */
	k2mc_counter latency_ms[K2MC_LAT_MAX_MS + 1];
};

/* Totals over all writers, computed by the reader. */
struct k2mc_totals {
	uint64_t written, deleted, skipped, bytes, batches, mc_errors, retries;
	uint64_t skipped_by[K2MC_KEY_NREASONS];
};

void k2mc_stats_sum(struct k2mc_writer_stats *ws, int n, struct k2mc_totals *t);

/* Latency quantile q (0..1) over all writers in ms, or -1 with no samples. */
int64_t k2mc_stats_latency(struct k2mc_writer_stats *ws, int n, double q);

#endif
