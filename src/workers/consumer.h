/* One assigned partition and its consumer thread: fetch from the partition's
 * own librdkafka queue -> route each record by the hash of its Memcached key
 * (the record key, or what the key template makes of the record) -> the ring
 * of the writer that owns that key. Also owns the partition's watermark. Not the
 * group logic (group.c) and not the Memcached side (writer.c). What other
 * threads read of a partition, and the table of them, is core/partitions.h;
 * consumer.c implements it. */
#ifndef K2MC_CONSUMER_H
#define K2MC_CONSUMER_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/budget.h"
#include "core/clock.h"
#include "core/partitions.h"
#include "ring/park.h"
#include "ring/ring.h"
#include "workers/mapping.h"

/* What a ring item's ptr is: the record (rd_kafka_message_t *), or, when the
 * consumer produced the record's Memcached key (the key template needs the
 * record: mapping.h), a struct k2mc_prepared * with the low bit set (both
 * are malloc'd, so the bit is free). The writer frees both. */
static inline void *k2mc_item_wrap(struct k2mc_prepared *pre)
{
	return (void *)((uintptr_t)pre | 1u);
}

static inline struct k2mc_prepared *k2mc_item_prepared(void *ptr)
{
	return ((uintptr_t)ptr & 1u) ? (struct k2mc_prepared *)((uintptr_t)ptr & ~(uintptr_t)1)
				     : NULL;
}

static inline rd_kafka_message_t *k2mc_item_record(void *ptr)
{
	struct k2mc_prepared *pre = k2mc_item_prepared(ptr);

	return pre != NULL ? pre->m : (rd_kafka_message_t *)ptr;
}

struct k2mc_part_opts {
	int nwriters;
	uint32_t ring_size;   /* slots per (partition, writer) ring */
	struct park *bells;   /* nwriters doorbells: "your rings have records" */
	int exit_at_eof;
	/* --max-buffer-bytes, shared by every partition of the process: the
	 * thread takes credit for each record before handing it out, and
	 * blocks while there is none, as on a full ring. NULL: no bound. */
	struct k2mc_budget *budget;
	/* the compiled templates (mapping.h): the thread prepares each
	 * record's key for its writer with them; NULL, or a mapping that
	 * routes by the record key alone, = route by the record key. Must
	 * outlive the thread. */
	const struct k2mc_mapping *map;
	/* k2mc_now_ms time before which the thread hands out no record (0:
	 * none): the previous owner may still hold a write lease (group.c,
	 * takeover). librdkafka fetches and queues meanwhile. */
	int64_t hold_until_ms;
	/* the group's committed offset when the partition was assigned, -1 if
	 * none or unknown: where this assignment reads from unless retention
	 * has deleted it (then the records in between are counted as lost) */
	int64_t committed;
};

struct k2mc_part *k2mc_part_new(rd_kafka_t *rk, const char *topic, int32_t partition,
				const struct k2mc_part_opts *o);
/* Starts the thread (named k2mc-c/<partition>): 0 or -errno. */
int k2mc_part_start(struct k2mc_part *p);
/* Asks the thread to stop fetching; it then waits until every record it
 * handed out is acknowledged or `deadline_ms` (k2mc_now_ms) passes. */
void k2mc_part_request_stop(struct k2mc_part *p, int64_t deadline_ms);
/* Joins the thread. Returns the number of records left unacknowledged. */
uint64_t k2mc_part_join(struct k2mc_part *p);
/* Only after join and after no writer can reach p (RCU grace period).
 * Records still in its rings are destroyed and their bytes given back to
 * the budget. */
void k2mc_part_free(struct k2mc_part *p);

/* Any thread, async-signal-safe (a second SIGINT/SIGTERM): every drain in
 * progress or to come ends at once, as if its deadline had passed; what is
 * acknowledged stays committable, the rest is left uncommitted. */
void k2mc_parts_hurry(void);
int k2mc_parts_hurried(void);

#endif
