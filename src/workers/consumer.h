/* One assigned partition and its consumer thread: fetch from the partition's
 * own librdkafka queue -> route each record by key hash -> the ring of the
 * writer that owns that key. Also owns the partition's watermark. Not the
 * group logic (group.c) and not the Memcached side (writer.c). */
#ifndef K2MC_CONSUMER_H
#define K2MC_CONSUMER_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "ring/park.h"
#include "ring/ring.h"

struct k2mc_part;

/* The set of assigned partitions. Published by the main thread with
 * rcu_assign_pointer, immutable once published, read by writers and the
 * committer under rcu_read_lock. */
struct k2mc_part_table {
	size_t n;
	struct k2mc_part *parts[];
};

struct k2mc_part_opts {
	int nwriters;
	uint32_t ring_size;   /* slots per (partition, writer) ring */
	struct park *bells;   /* nwriters doorbells: "your rings have records" */
	int exit_at_eof;
};

struct k2mc_part *k2mc_part_new(rd_kafka_t *rk, const char *topic, int32_t partition,
				const struct k2mc_part_opts *o);
/* Starts the thread (named k2mc-c/<partition>): 0 or -errno. */
int k2mc_part_start(struct k2mc_part *p);
/* Asks the thread to stop fetching; it then waits until every record it
 * handed out is acknowledged or `deadline_ms` (CLOCK_MONOTONIC ms) passes. */
void k2mc_part_request_stop(struct k2mc_part *p, int64_t deadline_ms);
/* Joins the thread. Returns the number of records left unacknowledged. */
uint64_t k2mc_part_join(struct k2mc_part *p);
/* Only after join and after no writer can reach p (RCU grace period). */
void k2mc_part_free(struct k2mc_part *p);

const char *k2mc_part_topic(const struct k2mc_part *p);
int32_t k2mc_part_id(const struct k2mc_part *p);

/* Writer side. */
struct ring *k2mc_part_ring(struct k2mc_part *p, int writer);
void k2mc_part_ack(struct k2mc_part *p, uint64_t tag);
void k2mc_part_wake(struct k2mc_part *p);
/* Set by the main thread when it gives up on a partition's pending records
 * (shutdown timeout): writers drop batches that hold its records. */
void k2mc_part_abandon(struct k2mc_part *p);
int k2mc_part_abandoned(const struct k2mc_part *p);

/* Any thread. */
int64_t k2mc_part_watermark(const struct k2mc_part *p);  /* -1 = nothing yet */
int k2mc_part_done(const struct k2mc_part *p);           /* -e: at end, all acknowledged */
uint64_t k2mc_part_consumed(const struct k2mc_part *p);
uint64_t k2mc_part_ring_fill(struct k2mc_part *p);       /* records in its rings */

/* Offset last handed to rd_kafka_commit: written by the committer while p is
 * in the table, by the main thread after p left it (an RCU grace period
 * separates the two); read by the thread that writes it. */
int64_t k2mc_part_committed(const struct k2mc_part *p);
void k2mc_part_set_committed(struct k2mc_part *p, int64_t off);

int64_t k2mc_now_ms(void);

#endif
