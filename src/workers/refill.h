/* --refill: notices that a memcached server lost its contents (a restart, by
 * "stats" pid/uptime; a flush or silent loss, by per-partition sentinel
 * items) and rewrites the held partitions' records that map to it, without
 * ever putting an older value over a newer one (the argument is in
 * refill.c). Its own thread (k2mc-refill), its own librdkafka handle (no
 * group membership, never commits) and its own connections. Not the live
 * path (writer.c), which only notes, per server under refill, the keys it
 * writes (k2mc_refill_note). */
#ifndef K2MC_REFILL_H
#define K2MC_REFILL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/fence.h"
#include "workers/consumer.h"

struct k2mc_refill;

/* What the live path tells refill: per server under refill, a Bloom filter
 * of every key the writers write or delete there (refill.c argues why).
 * Made before the writers and the refill, which both hold it; freed after
 * both. Inline because the writers look at mask before each command. */
struct k2mc_refill_filter {
	/* Bit s: server s is under refill, and its filter must learn every
	 * key the live path writes or deletes there. Written by the refill
	 * thread (seq_cst, after the filter is cleared and published); read by
	 * the writers (seq_cst) before each command is queued. */
	_Atomic uint64_t mask;
	/* [s]: allocated by the refill thread before bit s of the mask is first
	 * set (the seq_cst store of the mask publishes it); freed only by
	 * k2mc_refill_filter_free. */
	_Atomic uint64_t *_Atomic bloom[K2MC_MAX_SERVERS];
};

/* NULL for lack of memory. */
struct k2mc_refill_filter *k2mc_refill_filter_new(void);
/* After the writers and the refill that held it. */
void k2mc_refill_filter_free(struct k2mc_refill_filter *f);
void k2mc_refill_note_slow(struct k2mc_refill_filter *f, int s, const char *key, size_t klen);

/* Writer side, for every command queued on server s, before any byte of it
 * is sent: cheap (one load) while no refill runs. f NULL: no --refill. */
static inline void k2mc_refill_note(struct k2mc_refill_filter *f, int s, const char *key,
				    size_t klen)
{
	if (f != NULL && atomic_load_explicit(&f->mask, memory_order_seq_cst) & (1ull << s))
		k2mc_refill_note_slow(f, s, key, klen);
}

/* Refill's librdkafka consumer configuration (the group's id, its own
 * client.id, end-of-partition events, then every -X property), without
 * callbacks. NULL with the reason in err. */
rd_kafka_conf_t *k2mc_refill_conf(const struct k2mc_config *cfg, char *err, size_t errlen);
/* cfg, table (the group's, partitions.h), map (the compiled templates, the
 * writers' too) and filter (not NULL: the one the writers note keys in) must outlive
 * it. fence: the membership lease; refill sends a batch only while it holds
 * and the batch's partition is still ours in the same generation, as the
 * writers do (NULL: no check). NULL with the reason in err. */
struct k2mc_refill *k2mc_refill_new(const struct k2mc_config *cfg, k2mc_table_ref *table,
				    const struct k2mc_mapping *map,
				    struct k2mc_refill_filter *filter, struct k2mc_fence *fence,
				    char *err, size_t errlen);
int k2mc_refill_start(struct k2mc_refill *rf);
/* Asks the thread to end, without waiting: it leaves any exchange with a
 * server within 100 ms (transport_set_cancel) and a Kafka call within its
 * own timeout. The shutdown asks first and joins (k2mc_refill_stop) after
 * the drain, so that the refill's wait never adds to the drain's. */
void k2mc_refill_request_stop(struct k2mc_refill *rf);
/* Ends the thread (a refill in progress stops where it is; its sentinels
 * stay missing, so the next run refills again). Before the table is freed. */
void k2mc_refill_stop(struct k2mc_refill *rf);
void k2mc_refill_free(struct k2mc_refill *rf);

/* Any thread (relaxed): records rewritten so far, losses seen, and 1 while
 * server s is being refilled. */
uint64_t k2mc_refill_records(const struct k2mc_refill *rf);
uint64_t k2mc_refill_losses(const struct k2mc_refill *rf);
int k2mc_refill_active(const struct k2mc_refill *rf, int s);

/* A server's refill, as the state line and --stats-json show it. */
enum k2mc_refill_state {
	K2MC_REFILL_IDLE = 0,   /* no loss seen in this run */
	K2MC_REFILL_DETECTING,  /* loss seen: end offsets read, waiting for the live
				 * path to acknowledge every record below them, first
				 * reading pass */
	K2MC_REFILL_REFILLING,  /* writing (a partition's second pass has begun) */
	K2MC_REFILL_DONE,       /* the last refill of it ended (done or given up) */
};
/* "idle", "detecting", "refilling", "done" */
const char *k2mc_refill_state_name(enum k2mc_refill_state st);

struct k2mc_refill_view {
	enum k2mc_refill_state state;
	uint64_t records;  /* rewritten by its current (or last) refill */
	int64_t lag;       /* records its refill still has to read, both passes; 0 when done */
	double rate;       /* records rewritten per second since that refill began */
	uint64_t ends;     /* refills of it that ended in this run */
};
/* Any thread: server s's refill, consistent (taken under the refill's lock). */
void k2mc_refill_view(const struct k2mc_refill *rf, int s, struct k2mc_refill_view *v);

/* Remaining lag of one partition of the current (or last) refill: the
 * records it still has to read, first pass and second, between its read
 * position and the end offset P of the loss; 0 once its refill is over. */
struct k2mc_refill_lag {
	char topic[256];
	int32_t partition;
	int64_t records;
};
/* The most rows there are (partitions looked at per refill). */
#define K2MC_REFILL_MAX_LAG_ROWS 1024
/* Any thread: copies up to max rows (the partitions of the refill running
 * or last run; none before the first loss) and returns how many there are. */
size_t k2mc_refill_lags(const struct k2mc_refill *rf, struct k2mc_refill_lag *rows, size_t max);

#endif
