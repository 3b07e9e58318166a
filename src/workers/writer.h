/* The writer pool: each writer thread drains its ring of every assigned
 * partition, writes the records to Memcached in pipelined batches, and only
 * after every reply of a batch is in does it acknowledge the offsets. It
 * applies --on-invalid to records Memcached cannot take (and owns the dead
 * letter producer, dlq.c) and --mc-eject to servers that are down. Not the
 * wire protocol (mcconn.c) and not the mapping of records (mapping.c). */
#ifndef K2MC_WRITER_H
#define K2MC_WRITER_H

#include <stddef.h>

#include "core/config.h"
#include "core/counters.h"
#include "ring/park.h"
#include "workers/consumer.h"
#include "workers/mapping.h"

struct k2mc_writers;
struct k2mc_fence;

/* A batch stops taking records once their keys and values hold more than
 * this many bytes (it always takes one): what a writer holds in flight is
 * bounded in bytes as well as in records (--batch). */
#define K2MC_BATCH_MAX_BYTES ((size_t)64 << 20)

struct k2mc_refill_filter;

/* table: the RCU-published partition table (partitions.h) the writers read.
 * fence (fence.h): the membership lease; writers send only while it holds;
 * NULL = no fencing, for tools that are not group members. map: the
 * compiled templates (mapping.h). max_value: --max-value-bytes, 0 = none.
 * Each server's own item size limit (read on every (re)connect,
 * mcconn_item_limit) applies too; a server whose limit is unknown is sent
 * the value and answers "too large" itself. filter: --refill's (refill.h),
 * where every key written on a server under refill is noted; NULL without
 * --refill. bells: cfg->writers doorbells (park_array_new), writer i waits
 * on bells[i] and the consumers ring it. cfg, table, fence, map, filter and
 * bells must outlive the writers. */
struct k2mc_writers *k2mc_writers_new(const struct k2mc_config *cfg, k2mc_table_ref *table,
				      const struct k2mc_fence *fence,
				      const struct k2mc_mapping *map, size_t max_value,
				      struct k2mc_refill_filter *filter, struct park *bells);
int k2mc_writers_start(struct k2mc_writers *ws);
struct k2mc_writer_stats *k2mc_writers_stats(struct k2mc_writers *ws);
/* A writer met a record --on-invalid fail refuses, or a dead letter could
 * not be delivered: the reason (naming the topic, partition and offset), or
 * NULL. Any thread. Nothing at or past that record is acknowledged, and its
 * partition drains only up to it, so a shutdown after this is prompt. */
const char *k2mc_writers_fatal(struct k2mc_writers *ws);

/* What --on-invalid did besides skipping (skips are in the writer stats'
 * skipped[]), per reason (enum k2mc_map_reason; [0] unused). Any thread,
 * relaxed: a few records stale at most. */
struct k2mc_invalid_totals {
	uint64_t hashed[K2MC_MAP_NREASONS];        /* written under the hashed key (hash) */
	uint64_t hashed_total;
	uint64_t dead_lettered[K2MC_MAP_NREASONS]; /* delivered to --dlq-topic: done */
	uint64_t dead_lettered_total;
	uint64_t dead_letters_undelivered;         /* handed over, not (yet) delivered */
	uint64_t refused;                          /* met by --on-invalid fail */
};
void k2mc_writers_invalid(struct k2mc_writers *ws, struct k2mc_invalid_totals *t);
/* Stop retrying a batch that cannot be written (shutdown timeout), and
 * start no new one: its records stay unacknowledged and are consumed again
 * after a restart. Any thread, async-signal-safe. */
void k2mc_writers_abort(struct k2mc_writers *ws);
/* Ends the threads once the rings they drain are empty or abandoned, then
 * the dead letter producer (copies not delivered within 1 s are purged;
 * their records stay uncommitted), and logs one "invalid records:" line if
 * a policy other than skip did anything. Call before the partition table
 * is freed (k2mc_group_close). */
void k2mc_writers_stop(struct k2mc_writers *ws);
void k2mc_writers_free(struct k2mc_writers *ws);

/* What the writers last saw of a server. */
enum k2mc_server_state {
	K2MC_SERVER_UNKNOWN = 0, /* no exchange yet */
	K2MC_SERVER_UP,
	K2MC_SERVER_DOWN,        /* connection refused or broken, or an error reply */
	K2MC_SERVER_STALLED,     /* a batch unanswered (or never completed) for 5 s */
	K2MC_SERVER_OOM,         /* SERVER_ERROR out of memory: alive, storing nothing */
};
/* "unknown", "up", "down", "not answering", "out of memory". */
const char *k2mc_server_state_name(int st);

/* Any thread (relaxed; for /readyz and metrics): the state of server s
 * (cfg->servers order, which is libmemcached's). */
int k2mc_writers_server_state(struct k2mc_writers *ws, int s);
/* 1 unless server s is down, stalled or out of memory; 1 before the first
 * exchange too. */
int k2mc_writers_server_ok(struct k2mc_writers *ws, int s);
/* Any thread: 1 while the writers may send (the lease holds, or there is no
 * fence), 0 while they hold records for lack of a lease. */
int k2mc_writers_fence_held(struct k2mc_writers *ws);

#endif
