/* The writer pool: each writer thread drains its ring of every assigned
 * partition, writes the records to Memcached in pipelined batches, and only
 * after every reply of a batch is in does it acknowledge the offsets. Not the
 * wire protocol (mcconn.c) and not the key rules (keymap.c). */
#ifndef K2MC_WRITER_H
#define K2MC_WRITER_H

#include <stddef.h>

#include "core/config.h"
#include "core/stats.h"
#include "ring/park.h"
#include "workers/consumer.h"

struct k2mc_writers;

/* table: the RCU-published partition table (consumer.h) the writers read.
 * max_value: largest value sent to Memcached (the servers' item size). */
struct k2mc_writers *k2mc_writers_new(const struct k2mc_config *cfg,
				      k2mc_table_ref *table, size_t max_value);
int k2mc_writers_start(struct k2mc_writers *ws);
/* Doorbells consumers ring after pushing to writer i's rings: [nwriters]. */
struct park *k2mc_writers_bells(struct k2mc_writers *ws);
struct k2mc_writer_stats *k2mc_writers_stats(struct k2mc_writers *ws);
/* A writer met a record --on-invalid fail refuses: the reason (naming the
 * topic, partition and offset), or NULL. Any thread. */
const char *k2mc_writers_fatal(struct k2mc_writers *ws);
/* Stop retrying a batch that cannot be written (shutdown timeout): its
 * records stay unacknowledged and are consumed again after a restart. */
void k2mc_writers_abort(struct k2mc_writers *ws);
/* Ends the threads once the rings they drain are empty or abandoned. */
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
