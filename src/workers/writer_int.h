/* The writer pool's own structures, shared by its two files and no one
 * else: writer.c (batches: gather, map, decide, queue, acknowledge; the
 * pool's lifecycle) and writer_exchange.c (the lease, then send, retry,
 * eject until every reply is in). Not a public interface: writer.h is. */
#ifndef K2MC_WRITER_INT_H
#define K2MC_WRITER_INT_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/fence.h"
#include "workers/decode.h"
#include "workers/dlq.h"
#include "workers/mapping.h"
#include "workers/mcconn.h"
#include "workers/placement.h"
#include "workers/policy.h"
#include "workers/refill.h"
#include "workers/writer.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define IDLE_PARK_MS 100

/* What becomes of a record of the batch. */
enum item_state {
	ITEM_SERVER = 0, /* its command is queued on server `server` (or about to be) */
	ITEM_ACK,        /* no command; acknowledged when the batch completes (skipped) */
	ITEM_KEEP,       /* no command, not acknowledged here (a dead letter in flight,
			  * or at or past a record --on-invalid fail refused) */
	ITEM_QUEUE,      /* to be queued on the server its key maps to (between
			  * classify and the first successful queueing) */
};

/* item.sup: the record is not superseded (otherwise: the index of the later
 * record of the batch whose write replaces it) */
#define NO_SUP UINT32_MAX

/* One record of the batch: 48 bytes, what every pass over the batch reads
 * (classify, coalesce, queue, complete). Its mapping (key, value, flags,
 * expiry, operation) is maps[i], apart: about 300 bytes, mostly the key. */
struct item {
	rd_kafka_message_t *m;     /* the record (the prepared one's, when keyed) */
	uint64_t tag;              /* its ring tag, for k2mc_part_ack */
	struct k2mc_part *part;
	struct k2mc_prepared *pre; /* what the consumer computed, or NULL */
	uint32_t cmd;              /* command index within its connection */
	uint32_t sup;              /* NO_SUP, or the record whose write replaces it */
	int16_t server;            /* ITEM_SERVER: the server index */
	uint8_t state;             /* enum item_state */
	uint8_t hashed;            /* the reason its key was hashed for, 0: not hashed */
	uint8_t reason;            /* what k2mc_mapping_map said (enum k2mc_map_reason) */
	uint8_t inval;             /* the reason it is skipped with its key deleted in
				    * its place (K2MC_FATE_INVALIDATE), 0: none */
	/* copied from the record by gather(), for complete(): its lines are
	 * cold again by then */
	int64_t offset;
	int64_t ts;                /* rd_kafka_message_timestamp(), -1: none */
};
/* one cache line: each pass walks the whole batch */
_Static_assert(sizeof(void *) != 8 || sizeof(struct item) == 64, "struct item grew");

/* Per writer, written by that writer only (k2mc_count), read by anyone. */
struct invalid_counters {
	_Alignas(64) k2mc_counter hashed[K2MC_MAP_NREASONS];
	k2mc_counter refused;
};

/* One batch's dealings with the lease (writer-local). */
struct fence_wait {
	int counted;   /* this batch is counted in fence_waits */
	int holding;   /* records held now for lack of a lease */
	int64_t since; /* k2mc_now_ms() when this hold began */
};

struct writer {
	int id;
	struct k2mc_writers *pool;
	pthread_t thread;
	struct k2mc_placement *place; /* key -> server index (--distribution, --mc-eject);
				       * this writer's own */
	struct mc_conn **conns;       /* [nservers], in -m order (place's server indexes) */
	struct k2mc_writer_stats *stats;
	struct invalid_counters *inv;
	struct park *bell;
	/* --mc-eject: consecutive failed attempts per server, reset when the
	 * server answers (who is ejected, and until when, is place's) */
	uint32_t *fails;
	/* [nservers]: the largest value the batch queued on server s may carry,
	 * as it was when that share was built (value_limit); a reconnect that
	 * reads another limit rebuilds the share */
	size_t *limit;
	/* what the last value refused before sending was measured against, for
	 * messages: the limit and its server */
	size_t refused_limit;
	int refused_server;
	/* 1 after a batch could not be built for lack of memory, until one is */
	int nomem;
	/* its decoding context (decode.h) when values are Avro, else NULL */
	struct k2mc_decode_ctx *dec;
	/* k2mc_now_ms when the current wait for the Schema Registry began, 0:
	 * not waiting */
	int64_t registry_since;

	/* batch scratch, reused: [--batch] each */
	struct item *batch;
	struct ring_item *peek;       /* what ring_peek copies out, before batch */
	uint64_t gathered_bytes;      /* the batch's budget bytes (k2mc_record_bytes and
				       * the prepared keys), summed by gather() */
	/* what each record maps to (key, value, flags, expiry, operation), once
	 * per batch; the values it builds live in arena until the next batch */
	struct k2mc_mapped *maps;
	struct k2mc_arena *arena;
	/* coalescing: open addressing over the batch's keys; a slot is in use
	 * when its gen is this batch's (no clearing between batches) */
	struct coal_slot {
		uint64_t hash;
		uint32_t gen;
		uint32_t idx; /* the key's nearest later record that is sent */
	} *coal;
	size_t coal_mask;
	uint32_t coal_gen;
	struct seg {
		struct k2mc_part *p;
		size_t n;
	} *segs;                      /* [seg_cap], one per table position */
	size_t seg_cap;
	size_t rr;                    /* round-robin start over partitions */
};

struct k2mc_writers {
	const struct k2mc_config *cfg;
	k2mc_table_ref *table;
	/* the compiled templates (mapping.h), the caller's; immutable */
	const struct k2mc_mapping *map;
	/* --refill: the keys written on servers under refill are noted here
	 * (refill.h); NULL without --refill. The caller's, immutable pointer */
	struct k2mc_refill_filter *filter;
	/* --on-invalid, --max-value-bytes: what the shared decision (policy.h)
	 * needs; immutable */
	struct k2mc_policy policy;
	int n;
	struct writer *w;
	struct park *bells;
	struct k2mc_writer_stats *stats;
	struct invalid_counters *inv; /* [n] */
	/* NULL unless a policy can send records to cfg->dlq_topic */
	struct k2mc_dlq *dlq;
	/* set by main before the threads start (pthread_create orders it),
	 * then read-only; NULL = no fencing */
	const struct k2mc_fence *fence;
	/* main -> writers: stop when idle / give up on the current batch
	 * (release by main, acquire by writers; abort also by the transports
	 * of their connections, mcconn_set_cancel, which leave their waits
	 * within 100 ms of it) */
	_Atomic int stop;
	_Atomic int abort;
	/* any writer: 1 from the warning that records are held for lack of a
	 * lease until a writer sees the lease again and says so (exchange, so
	 * each is said once per episode); relaxed: only log lines depend on it */
	_Atomic int fence_holding;
	/* any writer: last reported state per server, so a state change is
	 * logged once by whichever writer sees it first (atomic exchange) */
	_Atomic int *server_state;
	/* any writer: first skipped record per reason is logged (exchange) */
	_Atomic int skip_logged[K2MC_MAP_NREASONS + 1];
	/* any writer: records skipped since the last summary line per reason
	 * (fetch_add / exchange), and the earliest time of the next one (CAS
	 * claims it); relaxed: only log lines depend on them */
	_Atomic uint64_t skip_unreported[K2MC_MAP_NREASONS];
	_Atomic int64_t skip_next_report_ms[K2MC_MAP_NREASONS];
	/* any writer: first record per reason that --on-invalid hash could
	 * not hash, and first hashed / dead-lettered per reason (exchange) */
	_Atomic int fallback_logged[K2MC_MAP_NREASONS];
	_Atomic int hash_logged[K2MC_MAP_NREASONS];
	_Atomic int dlq_logged[K2MC_MAP_NREASONS];
	/* any writer: --on-tombstone invalidate met a classic-only server
	 * (exchange: said once) */
	_Atomic int invalidate_text_logged;
	/* any writer: a --cdc truncate event was met (exchange: said once) */
	_Atomic int truncate_logged;
	/* any writer: until when connection slots are short (k2mc_now_ms; a
	 * full server's refusal pushes it), and the earliest time of the next
	 * line saying so (CAS claims it); relaxed: a writer that sees it late
	 * gives its connections back one batch later */
	_Atomic int64_t slots_short_until;
	_Atomic int64_t slots_next_report_ms;
	/* first writer to hit a fatal record claims it (exchange 0 -> 1), then
	 * writes fatal_msg and publishes it with release on fatal_ready; main
	 * reads with acquire */
	_Atomic int fatal_claimed;
	_Atomic int fatal_ready;
	char fatal_msg[512];
};

static inline int writer_ejecting(const struct k2mc_writers *ws)
{
	return ws->cfg->mc_eject && ws->cfg->nservers > 1;
}

/* The largest value server s takes now: its item size limit as read on the
 * last connect, capped by --max-value-bytes. An unknown limit (not
 * connected yet, or a proxy without "stats settings") refuses nothing:
 * memcached answers "too large" itself, and drops the key's old item. */
static inline size_t writer_value_limit(const struct writer *w, int s)
{
	return k2mc_policy_value_limit(&w->pool->policy, mcconn_item_limit(w->conns[s]));
}

/* writer.c: batch building, again (writer_exchange.c calls them between
 * rounds, with no reply outstanding on the connections they touch). */
int writer_queue_all(struct writer *w, size_t n);
int writer_requeue_server(struct writer *w, size_t n, int s);

/* writer_exchange.c */
int writer_batch_abandoned(struct writer *w, size_t nsegs_scan);
void writer_backoff(struct writer *w, int *ms);
void writer_nap(struct writer *w, int ms);
int writer_await_lease(struct writer *w, size_t nsegs_scan, struct fence_wait *fw);
void writer_slots_give_back(struct writer *w);
int writer_exchange(struct writer *w, size_t n, size_t nsegs_scan, struct fence_wait *fw);

#endif
