/* The writer pool: each writer thread drains its ring of every assigned
 * partition, writes the records to Memcached in pipelined batches, and only
 * after every reply of a batch is in does it acknowledge the offsets. It
 * applies --on-invalid to records Memcached cannot take (and owns the dead
 * letter producer, dlq.c) and --mc-eject to servers that are down. Not the
 * wire protocol (mcconn.c) and not the key rules (keymap.c). */
#ifndef K2MC_WRITER_H
#define K2MC_WRITER_H

#include <stddef.h>

#include "core/config.h"
#include "core/stats.h"
#include "ring/park.h"
#include "workers/consumer.h"
#include "workers/keymap.h"

struct k2mc_writers;

/* table: the RCU-published partition table (consumer.h) the writers read.
 * max_value: largest value sent to Memcached (the servers' item size). */
struct k2mc_writers *k2mc_writers_new(const struct k2mc_config *cfg,
				      k2mc_table_ref *table, size_t max_value);
int k2mc_writers_start(struct k2mc_writers *ws);
/* Doorbells consumers ring after pushing to writer i's rings: [nwriters]. */
struct park *k2mc_writers_bells(struct k2mc_writers *ws);
struct k2mc_writer_stats *k2mc_writers_stats(struct k2mc_writers *ws);
/* A writer met a record --on-invalid fail refuses, or a dead letter could
 * not be delivered: the reason (naming the topic, partition and offset), or
 * NULL. Any thread. Nothing at or past that record is acknowledged, and its
 * partition drains only up to it, so a shutdown after this is prompt. */
const char *k2mc_writers_fatal(struct k2mc_writers *ws);

/* What --on-invalid did besides skipping (skips are in the writer stats'
 * skipped[]), per reason (enum k2mc_keymap_reason; [0] unused). Any thread,
 * relaxed: a few records stale at most. */
struct k2mc_invalid_totals {
	uint64_t hashed[K2MC_KEY_NREASONS];        /* written under the hashed key (hash) */
	uint64_t hashed_total;
	uint64_t dead_lettered[K2MC_KEY_NREASONS]; /* delivered to --dlq-topic: done */
	uint64_t dead_lettered_total;
	uint64_t dead_letters_undelivered;         /* handed over, not (yet) delivered */
	uint64_t refused;                          /* met by --on-invalid fail */
};
void k2mc_writers_invalid(struct k2mc_writers *ws, struct k2mc_invalid_totals *t);
/* Stop retrying a batch that cannot be written (shutdown timeout), and
 * start no new one: its records stay unacknowledged and are consumed again
 * after a restart. */
void k2mc_writers_abort(struct k2mc_writers *ws);
/* Ends the threads once the rings they drain are empty or abandoned, then
 * the dead letter producer (copies not delivered within 1 s are purged;
 * their records stay uncommitted), and logs one "invalid records:" line if
 * a policy other than skip did anything. Call before the partition table
 * is freed (k2mc_group_close). */
void k2mc_writers_stop(struct k2mc_writers *ws);
void k2mc_writers_free(struct k2mc_writers *ws);

/* Asks each server its item size limit ("stats settings"); returns the
 * smallest, or `fallback` if no server answers within timeout_ms. */
size_t k2mc_writers_probe_item_size(const struct k2mc_config *cfg, size_t fallback,
				    int timeout_ms);

/* Any thread (relaxed; for /readyz and metrics): 0 if the last exchange with
 * server s (cfg->servers order, which is libmemcached's) failed or has gone
 * unanswered for a while, 1 otherwise, including before the first one. */
int k2mc_writers_server_ok(struct k2mc_writers *ws, int s);

#endif
