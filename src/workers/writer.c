/* Writer threads; see writer.h. A batch is: peek records from this writer's
 * rings -> wait for the membership lease -> map keys (applying --on-invalid
 * to records Memcached cannot take) -> queue commands per server -> one
 * pipelined exchange -> every reply read -> acknowledge watermarks ->
 * release ring slots.
 * Invariants:
 * - A record is acknowledged only after Memcached answered it, or it was
 *   skipped and counted, or (dead letters) after Kafka acknowledged its copy;
 *   and a writer never starts a batch before the previous one is fully
 *   answered, so each key's writes stay in offset order. A record refused by
 *   --on-invalid fail, and every later record of its partition, is never
 *   acknowledged.
 * - Fencing: no byte of a command leaves this process unless the
 *   membership lease (fence.h) holds at that moment. A batch does not start
 *   while it is not held, and every exchange passes the lease's deadline to
 *   mcconn_exchange, which checks it before each send(); replies already
 *   outstanding are still read. So a member the group may have evicted
 *   (paused, or cut off from Kafka) never writes over the partitions' new
 *   owner.
 * - No stale value: when the newest record of a valid key cannot be stored
 *   (its value over the server's item size limit or --max-value-bytes, or a
 *   bad TTL or flags header, a missing field, a value that is not JSON: the
 *   reasons mapping.c's table marks) and the record is skipped, the key is
 *   deleted in its place, in order, and the record is acknowledged once the
 *   delete is answered (policy.h decides; refill.c applies the same
 *   decision). (When memcached itself answers "too large", it has already
 *   dropped the key's old item.)
 * - Coalescing: within one batch only the last write of each Memcached key
 *   is sent (a later set or delete replaces everything before it; an
 *   --on-tombstone invalidate does not, since it keeps the value under it).
 *   A record it replaces is acknowledged with the batch, which completes
 *   only once every reply, the replacing write's too, is in. Only records
 *   whose write is certain supersede: refusals (skip, dead letter, fail,
 *   values over a server's limit) are decided first, so an invalid record
 *   is still dead-lettered and never hides an older valid one (a key
 *   deleted for its skipped newest record is a write, and supersedes); a
 *   batch that is built again (reconnect, ejection, no memory) is built
 *   uncoalesced. */
#include "workers/writer.h"

#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu.h>
#include <xxhash.h>

#include "core/clock.h"
#include "core/fence.h"
#include "core/log.h"
#include "workers/dlq.h"
#include "workers/mapping.h"
#include "workers/mcconn.h"
#include "workers/placement.h"
#include "workers/policy.h"
#include "workers/refill.h"

#define EXCHANGE_SLICE_MS 1000
/* A server that has not answered for this long is reported once. */
#define STALL_REPORT_MS 5000
#define CONNECT_TIMEOUT_MS 2000
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define IDLE_PARK_MS 100
/* How often a writer holding records for lack of a lease looks again (the
 * lease is renewed by commits, which ring no bell). */
#define FENCE_PARK_MS 50
/* After the first record skipped for a reason, at most one line per reason
 * this often says how many more were skipped. */
#define SKIP_REPORT_MS 10000
/* --mc-eject, with libmemcached's meaning: a server is ejected after this
 * many consecutive failed attempts (connect refused or timed out, connection
 * broken), and put back into the hashing after MEMCACHED_BEHAVIOR_RETRY_TIMEOUT
 * seconds (libmemcached's default, MEMCACHED_SERVER_FAILURE_RETRY_TIMEOUT)
 * to be tried again. Two, not one: a restarted server costs one broken
 * connection and answers the reconnect. */
#define EJECT_FAILURE_LIMIT 2
#define EJECT_RETRY_S MEMCACHED_SERVER_FAILURE_RETRY_TIMEOUT
/* A server at its connection limit (memcached -c) refused a connection:
 * until this long after the last such refusal, connection slots count as
 * short, and a writer keeps a connection open only while its share of the
 * batch on it is not complete. Holding idle connections while waiting for another server's slot
 * is how every writer ended up waiting for the others (each held one
 * server's slots and wanted the other's): a stall with nothing lost and no
 * end. Said at most once per SLOTS_REPORT_MS while it lasts. */
#define SLOTS_SHORT_MS 5000
#define SLOTS_REPORT_MS 10000
/* How long the dead letter producer may flush at stop; the drain before it
 * already waited for every delivery it could. */
#define DLQ_STOP_FLUSH_MS 1000

/* item_server values that are not a server index. ITEM_ACK: no command,
 * acknowledged when the batch completes (skipped). ITEM_KEEP: no command,
 * not acknowledged here (a dead letter in flight, or at or past a record
 * --on-invalid fail refused). ITEM_QUEUE: to be queued on the server its key
 * maps to (between classify and the first successful queueing). */
#define ITEM_ACK   (-1)
#define ITEM_KEEP  (-2)
#define ITEM_QUEUE (-3)
/* item_sup: the record is not superseded (otherwise: the index of the later
 * record of the batch whose write replaces it) */
#define NO_SUP UINT32_MAX

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

	/* batch scratch, reused */
	struct ring_item *items;
	struct k2mc_part **item_part;
	int32_t *item_server;         /* server index, ITEM_ACK, ITEM_KEEP or ITEM_QUEUE */
	uint32_t *item_cmd;           /* command index within its connection */
	uint8_t *item_hashed;         /* the reason its key was hashed for, 0: not hashed */
	uint8_t *item_reason;         /* what k2mc_mapping_map said (enum k2mc_map_reason) */
	/* what each record maps to (key, value, flags, expiry, operation), once
	 * per batch; the values it builds live in arena until the next batch */
	struct k2mc_mapped *maps;
	struct k2mc_prepared **item_pre; /* what the consumer computed, or NULL */
	struct k2mc_arena *arena;
	uint8_t *item_inval;          /* the reason it is skipped with its key deleted in
				       * its place (K2MC_FATE_INVALIDATE), 0: none */
	uint32_t *item_sup;           /* NO_SUP, or the record whose write replaces it */
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
	/* the compiled templates (mapping.h): main's, or own_map when none was
	 * installed; immutable */
	const struct k2mc_mapping *map;
	struct k2mc_mapping *own_map;
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

static void set_fatal(struct k2mc_writers *ws, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_fatal(struct k2mc_writers *ws, const char *fmt, ...)
{
	va_list ap;

	if (atomic_exchange_explicit(&ws->fatal_claimed, 1, memory_order_relaxed))
		return;
	va_start(ap, fmt);
	vsnprintf(ws->fatal_msg, sizeof(ws->fatal_msg), fmt, ap);
	va_end(ap);
	atomic_store_explicit(&ws->fatal_ready, 1, memory_order_release);
}

static int ejecting(const struct k2mc_writers *ws)
{
	return ws->cfg->mc_eject && ws->cfg->nservers > 1;
}

/* why: the connection's error (DOWN), the error reply (DOWN, OOM), or the
 * last error reply of a batch that never completes (STALLED; "" if none). */
static void report_server(struct k2mc_writers *ws, int s, enum k2mc_server_state st,
			  const char *name, const char *why)
{
	int old = atomic_exchange_explicit(&ws->server_state[s], st, memory_order_relaxed);
	/* the log's server field: as /metrics labels it */
	char srv[K2MC_SERVER_LABEL_MAX];

	if (old == (int)st)
		return;
	k2mc_server_label(&ws->cfg->servers[s], srv, sizeof(srv));
	switch (st) {
	case K2MC_SERVER_UP:
		if (old != K2MC_SERVER_UNKNOWN)
			k2mc_log_server(K2MC_LOG_INFO, srv, NULL, "memcached %s: back, writing again",
					name);
		break;
	case K2MC_SERVER_DOWN:
		if (ejecting(ws))
			k2mc_log_server(K2MC_LOG_WARN, srv, why,
					"memcached %s: down (%s); --mc-eject: after %d failed "
					"attempts its keys go to the other servers, and it is tried "
					"again every %d s",
					name, why, EJECT_FAILURE_LIMIT, EJECT_RETRY_S);
		else
			k2mc_log_server(K2MC_LOG_WARN, srv, why,
					"memcached %s: down (%s); its records wait and are retried",
					name, why);
		break;
	case K2MC_SERVER_OOM:
		k2mc_log_server(K2MC_LOG_WARN, srv, why, "memcached %s: out of memory (%s); retrying",
				name, why);
		break;
	case K2MC_SERVER_STALLED:
		if (why[0] != '\0')
			k2mc_log_server(K2MC_LOG_WARN, srv, why,
					"memcached %s: answers errors but never completes the batch "
					"(last: '%s'); waiting on the same connection",
					name, why);
		else
			k2mc_log_server(K2MC_LOG_WARN, srv, "no answer",
					"memcached %s: no answer for %d ms; waiting on the same "
					"connection",
					name, STALL_REPORT_MS);
		break;
	default:
		break;
	}
}

/* The largest value server s takes now: its item size limit as read on the
 * last connect, capped by --max-value-bytes. An unknown limit (not
 * connected yet, or a proxy without "stats settings") refuses nothing:
 * memcached answers "too large" itself, and drops the key's old item. */
static size_t value_limit(const struct writer *w, int s)
{
	return k2mc_policy_value_limit(&w->pool->policy, mcconn_item_limit(w->conns[s]));
}

/* ---- records Memcached cannot take ----------------------------------------*/

/* The shared decision (policy.h) for record i placed on server s, or with
 * no key (s < 0: no server, no limit). */
static struct k2mc_decision decide(const struct writer *w, size_t i, int s)
{
	return k2mc_policy_decide(&w->pool->policy, w->item_reason[i], &w->maps[i],
				  s >= 0 ? w->limit[s] : SIZE_MAX);
}

/* What was wrong with record i, for reason r: one line for logs and the
 * k2mc.error.message header. */
static void describe(const struct writer *w, char *buf, size_t len, size_t i,
		     enum k2mc_map_reason r)
{
	const struct k2mc_writers *ws = w->pool;
	size_t vlen = w->maps[i].value_len;
	struct k2mc_record rec;

	if (r != K2MC_VALUE_TOO_LARGE) {
		k2mc_record_of(ws->map, w->items[i].ptr, &rec);
		k2mc_mapping_explain(ws->map, &rec, &w->maps[i], r, buf, len);
	} else if (w->refused_server < 0) {
		snprintf(buf, len, "value of %zu bytes, refused by the server as too large", vlen);
	} else if (w->refused_limit == ws->policy.max_value) {
		snprintf(buf, len, "value of %zu bytes, over --max-value-bytes %zu", vlen,
			 ws->policy.max_value);
	} else {
		snprintf(buf, len, "value of %zu bytes, over the item size limit of memcached "
			 "%s (%zu bytes)", vlen, mcconn_name(w->conns[w->refused_server]),
			 w->refused_limit);
	}
}

/* --on-invalid hash fell back for reason r: said once per reason. */
static void note_fallback(struct k2mc_writers *ws, enum k2mc_map_reason r, enum k2mc_fate f)
{
	if (ws->cfg->on_invalid != K2MC_INVALID_HASH ||
	    atomic_exchange_explicit(&ws->fallback_logged[r], 1, memory_order_relaxed))
		return;
	if (f == K2MC_FATE_DLQ)
		k2mc_log_reason(K2MC_LOG_WARN, k2mc_map_reason_name(r),
				"--on-invalid hash: %s records cannot be hashed; they go to the dead "
				"letter topic %s",
				k2mc_map_reason_name(r), ws->cfg->dlq_topic);
	else
		k2mc_log_reason(K2MC_LOG_WARN, k2mc_map_reason_name(r),
				"--on-invalid hash: %s records cannot be hashed; they are skipped "
				"(no --dlq-topic)",
				k2mc_map_reason_name(r));
}

/* Counts record i as skipped for reason r, and logs the first of each
 * reason (then a count every SKIP_REPORT_MS). invalidated: its key was
 * deleted in its place. */
static void count_skip(struct writer *w, size_t i, enum k2mc_map_reason r, int invalidated)
{
	struct k2mc_writers *ws = w->pool;
	rd_kafka_message_t *m = w->items[i].ptr;
	int64_t now, next;
	char detail[200];

	k2mc_count(&w->stats->skipped[r], 1);
	if (invalidated)
		k2mc_count(&w->stats->invalidated, 1);
	if (atomic_exchange_explicit(&ws->skip_logged[r], 1, memory_order_relaxed) == 0) {
		atomic_store_explicit(&ws->skip_next_report_ms[r], k2mc_now_ms() + SKIP_REPORT_MS,
				      memory_order_relaxed);
		describe(w, detail, sizeof(detail), i, r);
		k2mc_log_record(K2MC_LOG_WARN, rd_kafka_topic_name(m->rkt), m->partition, m->offset,
				k2mc_map_reason_name(r),
				"%s [%d] @%lld: skipped, %s (%s; key %zu bytes, value %zu bytes)%s; "
				"further records skipped for this reason are counted in the stats "
				"line",
				rd_kafka_topic_name(m->rkt), m->partition, (long long)m->offset,
				k2mc_map_reason_name(r), detail, m->key_len, m->len,
				invalidated ? "; its key was deleted, so that no older value stays"
					    : "");
		return;
	}
	atomic_fetch_add_explicit(&ws->skip_unreported[r], 1, memory_order_relaxed);
	now = k2mc_now_ms();
	next = atomic_load_explicit(&ws->skip_next_report_ms[r], memory_order_relaxed);
	if (now >= next && atomic_compare_exchange_strong_explicit(
				   &ws->skip_next_report_ms[r], &next, now + SKIP_REPORT_MS,
				   memory_order_relaxed, memory_order_relaxed)) {
		uint64_t n = atomic_exchange_explicit(&ws->skip_unreported[r], 0,
						      memory_order_relaxed);

		k2mc_log_record(K2MC_LOG_WARN, rd_kafka_topic_name(m->rkt), m->partition, m->offset,
				k2mc_map_reason_name(r),
				"%llu more record(s) skipped as %s in the last %d s; the latest: "
				"%s [%d] @%lld",
				(unsigned long long)n, k2mc_map_reason_name(r),
				SKIP_REPORT_MS / 1000, rd_kafka_topic_name(m->rkt), m->partition,
				(long long)m->offset);
	}
}

static void skip_record(struct writer *w, size_t i, enum k2mc_map_reason r)
{
	w->item_server[i] = ITEM_ACK;
	count_skip(w, i, r, 0);
}

static void dead_letter(struct writer *w, size_t i, enum k2mc_map_reason r)
{
	struct k2mc_writers *ws = w->pool;
	rd_kafka_message_t *m = w->items[i].ptr;
	char detail[200];

	describe(w, detail, sizeof(detail), i, r);
	/* acknowledged by the delivery report, never here; on failure the
	 * record stays unacknowledged and k2mc_writers_fatal says why */
	w->item_server[i] = ITEM_KEEP;
	if (k2mc_dlq_send(ws->dlq, w->item_part[i], w->items[i].tag, m, r, detail, &ws->abort) != 0)
		return;
	if (atomic_exchange_explicit(&ws->dlq_logged[r], 1, memory_order_relaxed) == 0)
		k2mc_log_record(K2MC_LOG_WARN, rd_kafka_topic_name(m->rkt), m->partition, m->offset,
				k2mc_map_reason_name(r),
				"%s [%d] @%lld: %s (%s); sent to the dead letter topic %s, and so "
				"are further records of this kind (counted in the summary)",
				rd_kafka_topic_name(m->rkt), m->partition, (long long)m->offset,
				k2mc_map_reason_name(r), detail, ws->cfg->dlq_topic);
}

static void fail_record(struct writer *w, size_t i, enum k2mc_map_reason r)
{
	struct k2mc_writers *ws = w->pool;
	rd_kafka_message_t *m = w->items[i].ptr;
	char detail[200];

	describe(w, detail, sizeof(detail), i, r);
	w->item_server[i] = ITEM_KEEP;
	k2mc_part_fail(w->item_part[i], m->offset);
	k2mc_count(&w->inv->refused, 1);
	set_fatal(ws, "--on-invalid fail: %s [%d] @%lld: %s (%s); stopping, nothing at or past "
		  "this offset is committed", rd_kafka_topic_name(m->rkt), m->partition,
		  (long long)m->offset, k2mc_map_reason_name(r), detail);
}

/* Record i cannot be stored as it is, for reason r (found before sending,
 * or in the server's reply), and no key is deleted for it: skip,
 * dead-letter or refuse it (k2mc_policy_refusal). A record whose key is
 * deleted in its place (K2MC_FATE_INVALIDATE) is not handled here but
 * queued (queue_on) and counted once the delete is answered. */
static void refuse(struct writer *w, size_t i, enum k2mc_map_reason r)
{
	enum k2mc_fate f = k2mc_policy_refusal(&w->pool->policy);

	note_fallback(w->pool, r, f);
	switch (f) {
	case K2MC_FATE_DLQ:
		dead_letter(w, i, r);
		break;
	case K2MC_FATE_FAIL:
		fail_record(w, i, r);
		break;
	default:
		skip_record(w, i, r);
		break;
	}
}

/* ---- batches --------------------------------------------------------------*/

/* Peeks up to --batch records from this writer's rings, fairly, and stops
 * taking more once they hold over K2MC_BATCH_MAX_BYTES of keys and values
 * (a prefix of a ring's records: peeking consumes nothing, and only the
 * kept ones are released). Caller holds the RCU read lock, which keeps
 * every part in the table alive. */
static size_t gather(struct writer *w, struct k2mc_part_table *t)
{
	size_t max = (size_t)w->pool->cfg->batch, n = 0, bytes = 0;

	if (t == NULL || t->n == 0)
		return 0;
	for (size_t k = 0; k < t->n && n < max && bytes <= K2MC_BATCH_MAX_BYTES; k++) {
		struct k2mc_part *p = t->parts[(w->rr + k) % t->n];
		size_t got, keep = 0;

		if (k2mc_part_abandoned(p))
			continue;
		got = ring_peek(k2mc_part_ring(p, w->id), w->items + n, max - n);
		/* the first record always fits, however large */
		while (keep < got && (n + keep == 0 || bytes <= K2MC_BATCH_MAX_BYTES)) {
			struct ring_item *it = &w->items[n + keep];
			const rd_kafka_message_t *m;

			/* a record the consumer keyed travels with its key
			 * (consumer.h); the batch keeps both, the ring is
			 * untouched until release */
			w->item_pre[n + keep] = k2mc_item_prepared(it->ptr);
			if (w->item_pre[n + keep] != NULL)
				it->ptr = w->item_pre[n + keep]->m;
			m = it->ptr;
			/* The writer's first touch of a record that librdkafka's
			 * fetch thread wrote, often on the other core: start
			 * loading its key and value (map_all) and the line after
			 * the public message struct, where librdkafka keeps the
			 * timestamp count_latency reads, for the whole batch at
			 * once rather than one miss at a time. A prefetch is a
			 * hint: it never faults, on NULL neither. */
			__builtin_prefetch(m->key);
			__builtin_prefetch(m->payload);
			__builtin_prefetch((const char *)(m + 1));

			bytes += m->key_len + m->len;
			w->item_part[n + keep] = p;
			keep++;
		}
		if (keep == 0)
			continue;
		w->segs[k].p = p;
		w->segs[k].n = keep;
		n += keep;
	}
	w->rr++;
	return n;
}

/* Queues record i's command (its mapping, maps[i]) on server s, deciding
 * its fate there again (policy.h): the batch may be built again after a
 * reconnect read another item size limit. A value over the server's limit
 * is refused here, where the server is known. A record skipped as its key's
 * newest state (K2MC_FATE_INVALIDATE) has its key deleted instead, at the
 * same position in the key's order, so no older value outlives it.
 * --on-tombstone invalidate on a server that speaks only the classic
 * protocol (found once connected: a proxy, or memcached < 1.6.10) deletes
 * instead, said once: the tombstone's key must not keep its value, and
 * classic memcached has no stale items. 0 or -ENOMEM (nothing queued for
 * it). */
static int queue_on(struct writer *w, size_t i, int s)
{
	struct k2mc_writers *ws = w->pool;
	const struct k2mc_mapped *mp = &w->maps[i];
	struct mc_conn *c = w->conns[s];
	struct k2mc_decision d = decide(w, i, s);
	int rc;

	w->item_server[i] = s;
	w->item_inval[i] = 0;
	w->item_cmd[i] = (uint32_t)mcconn_queued(c);
	if (d.fate != K2MC_FATE_WRITE && d.fate != K2MC_FATE_INVALIDATE) {
		/* only a value over a limit that changed since classify can
		 * end here: the other refusals never reach a server */
		w->refused_limit = w->limit[s];
		w->refused_server = s;
		refuse(w, i, d.reason);
		return 0;
	}
	/* --refill: a server under refill learns every key the live path
	 * writes or deletes there, before any byte of it is sent (refill.c) */
	k2mc_refill_note(s, mp->key, mp->key_len);
	if (d.fate == K2MC_FATE_INVALIDATE) {
		note_fallback(ws, d.reason, K2MC_FATE_SKIP);
		w->item_inval[i] = (uint8_t)d.reason;
		if (d.reason == K2MC_VALUE_TOO_LARGE) {
			w->refused_limit = w->limit[s];
			w->refused_server = s;
		}
		return mcconn_queue_delete(c, mp->key, mp->key_len);
	}
	switch (mp->op) {
	case K2MC_OP_DELETE:
		return mcconn_queue_delete(c, mp->key, mp->key_len);
	case K2MC_OP_INVALIDATE:
		rc = mcconn_queue_invalidate(c, mp->key, mp->key_len, ws->cfg->invalidate_grace_s);
		if (rc != -EPROTONOSUPPORT)
			return rc;
		if (atomic_exchange_explicit(&ws->invalidate_text_logged, 1,
					     memory_order_relaxed) == 0)
			k2mc_log_server(K2MC_LOG_ERR, mcconn_name(c), NULL,
					"memcached %s speaks only the classic protocol, which has no "
					"invalidation: --on-tombstone invalidate:%u needs meta (memcached "
					">= 1.6.10, not through a proxy); tombstones delete their key there "
					"instead (said once)",
					mcconn_name(c), ws->cfg->invalidate_grace_s);
		return mcconn_queue_delete(c, mp->key, mp->key_len);
	default:
		return mcconn_queue_set(c, mp->key, mp->key_len, mp->value, mp->value_len, mp->flags,
					mp->exptime);
	}
}

/* Queues record i on the connection of the server its key maps to now. */
static int queue_one(struct writer *w, size_t i)
{
	/* the server the readers' client looks on (placement.h; no hashing
	 * with one server) */
	int s = k2mc_placement_server(w->place, w->maps[i].key, w->maps[i].key_len);

	return queue_on(w, i, s);
}

static void refresh_limits(struct writer *w)
{
	for (int s = 0; s < w->pool->cfg->nservers; s++)
		w->limit[s] = value_limit(w, s);
}

/* Whether record j's write replaces whatever its key held: a set or a
 * delete does, and so does the delete of a key whose newest record is
 * skipped; an invalidate keeps the value under it (marked stale), so the
 * records before it must still be written. */
static int replaces(const struct writer *w, size_t j)
{
	return w->item_inval[j] != 0 || w->maps[j].op == K2MC_OP_SET ||
	       w->maps[j].op == K2MC_OP_DELETE;
}

/* From the batch's end back: a placed record whose key a later placed
 * record replaces is superseded by it (item_sup) and not sent. One hash
 * and one probe per record, no allocation. */
static void coalesce(struct writer *w, size_t n)
{
	if (++w->coal_gen == 0) {
		/* wrapped: no slot may look used */
		memset(w->coal, 0, (w->coal_mask + 1) * sizeof(*w->coal));
		w->coal_gen = 1;
	}
	for (size_t k = n; k-- > 0;) {
		const struct k2mc_mapped *mk = &w->maps[k];
		uint64_t h;
		size_t pos;

		if (w->item_server[k] < 0)
			continue;
		h = XXH3_64bits(mk->key, mk->key_len);
		for (pos = (size_t)h & w->coal_mask;; pos = (pos + 1) & w->coal_mask) {
			struct coal_slot *sl = &w->coal[pos];
			const struct k2mc_mapped *mj;

			if (sl->gen != w->coal_gen) {
				sl->gen = w->coal_gen;
				sl->hash = h;
				sl->idx = (uint32_t)k;
				break;
			}
			mj = &w->maps[sl->idx];
			if (sl->hash != h || mj->key_len != mk->key_len ||
			    memcmp(mj->key, mk->key, mk->key_len) != 0)
				continue;
			if (replaces(w, sl->idx))
				w->item_sup[k] = sl->idx;
			else
				sl->idx = (uint32_t)k;
			break;
		}
	}
}

/* Decides each record's fate once per batch (policy.h: its mapping's
 * reason, --on-invalid, a value over its server's limit; the effects of a
 * refusal, counts and dead letters, happen here and only here), coalesces
 * what is left and queues it. 0, or -ENOMEM: every record is classified,
 * but the commands are incomplete (queue_all builds them again). */
static int classify(struct writer *w, size_t n)
{
	struct k2mc_writers *ws = w->pool;
	struct k2mc_part *last = NULL;
	int64_t failed_at = INT64_MAX;

	refresh_limits(w);
	for (size_t i = 0; i < n; i++) {
		rd_kafka_message_t *m = w->items[i].ptr;
		const struct k2mc_mapped *mp = &w->maps[i];
		struct k2mc_decision d;
		int s;

		/* the records of a part are consecutive: one load per part */
		if (w->item_part[i] != last) {
			last = w->item_part[i];
			failed_at = k2mc_part_failed_at(last);
		}
		w->item_hashed[i] = 0;
		w->item_inval[i] = 0;
		w->item_sup[i] = NO_SUP;
		if (m->offset >= failed_at) {
			/* at or past a refused record: never written, never
			 * acknowledged, consumed again after a restart */
			w->item_server[i] = ITEM_KEEP;
			continue;
		}
		/* the server the readers' client looks on (placement.h; no
		 * hashing with one server), hashed keys included */
		s = mp->key_len > 0 ? k2mc_placement_server(w->place, mp->key, mp->key_len) : -1;
		d = decide(w, i, s);
		if (d.reason == K2MC_VALUE_TOO_LARGE) {
			/* for messages (describe) */
			w->refused_limit = w->limit[s];
			w->refused_server = s;
		}
		switch (d.fate) {
		case K2MC_FATE_WRITE:
			w->item_server[i] = s;
			if (d.hashed == K2MC_MAP_OK)
				break;
			w->item_hashed[i] = (uint8_t)d.hashed;
			if (atomic_exchange_explicit(&ws->hash_logged[d.hashed], 1,
						     memory_order_relaxed) == 0)
				k2mc_log_record(K2MC_LOG_WARN, rd_kafka_topic_name(m->rkt),
						m->partition, m->offset, k2mc_map_reason_name(d.hashed),
						"%s [%d] @%lld: %s; stored under its hashed key "
						"(prefix + xxh128 hex), and so are further records of "
						"this kind",
						rd_kafka_topic_name(m->rkt), m->partition,
						(long long)m->offset, k2mc_map_reason_name(d.hashed));
			break;
		case K2MC_FATE_INVALIDATE:
			/* its key is deleted instead (queue_on); if a later
			 * record supersedes it, it is still counted skipped */
			w->item_server[i] = s;
			w->item_inval[i] = (uint8_t)d.reason;
			break;
		case K2MC_FATE_IGNORE:
			/* --on-tombstone ignore: acknowledged unwritten */
			w->item_server[i] = ITEM_ACK;
			k2mc_count(&w->stats->ignored, 1);
			break;
		default:
			refuse(w, i, d.reason);
			if (w->item_server[i] == ITEM_KEEP)
				failed_at = k2mc_part_failed_at(last);
			break;
		}
	}
	coalesce(w, n);
	for (size_t i = 0; i < n; i++) {
		int rc;

		if (w->item_server[i] < 0 || w->item_sup[i] != NO_SUP)
			continue;
		rc = queue_on(w, i, w->item_server[i]);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* The whole batch again, every record still to be written on the server
 * its key maps to now: after an ejection (with no reply outstanding on any
 * connection), or after a failed allocation. Records the up servers already
 * stored are sent again (idempotent, and in order, so each key's last write
 * still wins). 0 or -ENOMEM. */
static int queue_all(struct writer *w, size_t n)
{
	struct k2mc_part *last = NULL;
	int64_t failed_at = INT64_MAX;

	for (int s = 0; s < w->pool->cfg->nservers; s++)
		mcconn_reset_batch(w->conns[s]);
	refresh_limits(w);
	for (size_t i = 0; i < n; i++) {
		int rc;

		/* built again uncoalesced: the servers may have moved */
		w->item_sup[i] = NO_SUP;
		if (w->item_server[i] < 0 && w->item_server[i] != ITEM_QUEUE)
			continue;
		if (w->item_part[i] != last) {
			last = w->item_part[i];
			failed_at = k2mc_part_failed_at(last);
		}
		if (((rd_kafka_message_t *)w->items[i].ptr)->offset >= failed_at) {
			w->item_server[i] = ITEM_KEEP;
			continue;
		}
		rc = queue_one(w, i);
		if (rc != 0) {
			w->item_server[i] = ITEM_QUEUE;
			return rc;
		}
		if (w->item_server[i] == ITEM_KEEP)
			failed_at = k2mc_part_failed_at(last);
	}
	return 0;
}

/* The connection to server s was (re)made speaking the other dialect, or
 * with another item size limit: build its share of the batch again, in the
 * same order, on the same server. 0 or -ENOMEM. */
static int requeue_server(struct writer *w, size_t n, int s)
{
	mcconn_reset_batch(w->conns[s]);
	w->limit[s] = value_limit(w, s);
	for (size_t i = 0; i < n; i++) {
		int rc;

		if (w->item_server[i] != s)
			continue;
		/* built again uncoalesced: the limit may have changed */
		w->item_sup[i] = NO_SUP;
		rc = queue_on(w, i, s);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* --mc-eject: server s failed EJECT_FAILURE_LIMIT times in a row. Until
 * its retry time its keys go where the readers' client sends them while it
 * is down (placement.h: libmemcached's continuum rebuilt without it,
 * pymemcache's hasher without it, Dalli's and spymemcached's failover
 * rehashing); k2mc_placement_restore puts it back then. The last server is
 * not ejected: with every server down, records wait. Returns 1 if placement
 * changed. */
static int eject(struct writer *w, int s)
{
	return k2mc_placement_eject(w->place, s, time(NULL) + EJECT_RETRY_S);
}

static int batch_abandoned(struct writer *w, size_t nsegs_scan)
{
	if (atomic_load_explicit(&w->pool->abort, memory_order_acquire))
		return 1;
	for (size_t k = 0; k < nsegs_scan; k++) {
		if (w->segs[k].p != NULL && k2mc_part_abandoned(w->segs[k].p))
			return 1;
	}
	return 0;
}

/* Sleeps *ms (doubling it for next time), in slices that end it early
 * once the writers are aborted. */
static void backoff(struct writer *w, int *ms)
{
	int64_t end = k2mc_now_ms() + *ms, left;

	while ((left = end - k2mc_now_ms()) > 0 &&
	       !atomic_load_explicit(&w->pool->abort, memory_order_acquire)) {
		if (left > IDLE_PARK_MS)
			left = IDLE_PARK_MS;
		nanosleep(&(struct timespec){ 0, (long)left * 1000000L }, NULL);
	}
	*ms = *ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *ms * 2;
}

/* Sleeps up to ms on the writer's bell (consumers, stop and abort ring it). */
static void nap(struct writer *w, int ms)
{
	park_prepare(w->bell);
	park_wait(w->bell, ms);
}

/* A failed attempt on server s; with --mc-eject, returns 1 when s is to be
 * ejected now. */
static int server_failed(struct writer *w, int s)
{
	if (!ejecting(w->pool))
		return 0;
	if (++w->fails[s] < EJECT_FAILURE_LIMIT)
		return 0;
	return eject(w, s);
}

/* ---- the membership lease -------------------------------------------------*/

/* The lease does not hold now and records of this batch wait. Counted once
 * per batch; said once per episode: at once when a lease lapsed, but when
 * none was granted yet in this generation (deadline 0: the start, or a new
 * assignment, whose first commit is on its way) only once the wait has
 * outlasted a whole lease, since waiting for that commit is routine. */
static void fence_hold(struct writer *w, struct fence_wait *fw)
{
	struct k2mc_writers *ws = w->pool;
	int64_t now = k2mc_now_ms(), lease = k2mc_fence_lease_ms(ws->fence);

	if (!fw->holding) {
		fw->holding = 1;
		fw->since = now;
		if (!fw->counted) {
			fw->counted = 1;
			k2mc_count(&w->stats->fence_waits, 1);
		}
	}
	if (atomic_load_explicit(&ws->fence_holding, memory_order_relaxed) ||
	    (k2mc_fence_deadline(ws->fence) == 0 && now - fw->since < lease))
		return;
	if (atomic_exchange_explicit(&ws->fence_holding, 1, memory_order_relaxed) == 0)
		k2mc_warn("membership in the consumer group not proven (no acknowledged commit "
			  "within the lease of %lld ms): holding records, writing nothing until it is",
			  (long long)lease);
}

/* The lease holds (seen by any writer, waiting or not): ends the episode. */
static void fence_resume(struct writer *w, struct fence_wait *fw)
{
	struct k2mc_writers *ws = w->pool;

	fw->holding = 0;
	if (atomic_load_explicit(&ws->fence_holding, memory_order_relaxed) &&
	    atomic_exchange_explicit(&ws->fence_holding, 0, memory_order_relaxed))
		k2mc_info("membership in the consumer group proven again (commit acknowledged): "
			  "writing");
}

/* Before a batch starts: waits while the lease does not hold. 0 once it
 * does, -1 if the batch was given up meanwhile (abort, or its partitions
 * abandoned: main does that when the assignment is lost). */
static int await_lease(struct writer *w, size_t nsegs_scan, struct fence_wait *fw)
{
	const struct k2mc_fence *f = w->pool->fence;

	if (f == NULL)
		return 0;
	while (!k2mc_fence_held(f)) {
		fence_hold(w, fw);
		if (batch_abandoned(w, nsegs_scan))
			return -1;
		park_prepare(w->bell);
		if (k2mc_fence_held(f)) {
			park_cancel(w->bell);
			break;
		}
		park_wait(w->bell, FENCE_PARK_MS);
	}
	fence_resume(w, fw);
	return 0;
}

/* ---- the exchange ----------------------------------------------------------*/

/* Replies that settle a command; anything else (SERVER_ERROR, out of
 * memory, CLIENT_ERROR, none) is a server failure and the batch is resent. */
static int reply_final(enum mc_reply r)
{
	return r == MC_STORED || r == MC_DELETED || r == MC_NOT_FOUND || r == MC_TOO_LARGE;
}

/* What a failed mcconn_ensure counts as (k2mc_memcached_errors_total). */
static enum k2mc_mc_error connect_error_kind(int rc)
{
	if (rc == -ECONNREFUSED || rc == -ENOENT || rc == -EUSERS)
		return K2MC_MC_ERR_REFUSED;
	return rc == -ETIMEDOUT ? K2MC_MC_ERR_TIMEOUT : K2MC_MC_ERR_CONNECTION;
}

/* ---- connection slots -------------------------------------------------------*/

static int slots_short(const struct k2mc_writers *ws)
{
	return k2mc_now_ms() <
	       atomic_load_explicit(&((struct k2mc_writers *)ws)->slots_short_until,
				    memory_order_relaxed);
}

/* Server s refused writer w's connection at its connection limit: slots
 * are short from now on, and the line that says so and what to change comes
 * again every SLOTS_REPORT_MS while they are. Not a server down: it is
 * alive, so it is neither reported down nor ejected. */
static void slots_refused(struct writer *w, int s)
{
	struct k2mc_writers *ws = w->pool;
	int64_t now = k2mc_now_ms(),
		next = atomic_load_explicit(&ws->slots_next_report_ms, memory_order_relaxed);
	char srv[K2MC_SERVER_LABEL_MAX];

	atomic_store_explicit(&ws->slots_short_until, now + SLOTS_SHORT_MS, memory_order_relaxed);
	if (now < next || !atomic_compare_exchange_strong_explicit(
				  &ws->slots_next_report_ms, &next, now + SLOTS_REPORT_MS,
				  memory_order_relaxed, memory_order_relaxed))
		return;
	k2mc_server_label(&ws->cfg->servers[s], srv, sizeof(srv));
	k2mc_log_server(K2MC_LOG_WARN, srv, "too many connections",
			"memcached %s refuses connections at its limit (%s): k2mc opens up to "
			"--writers %d connections to each of its %d server(s)%s, more than it "
			"accepts; until they fit, a writer closes a connection as soon as it "
			"owes no reply on it (a reconnect per batch: slower). Raise the server's "
			"connection limit (memcached -c) or lower --writers (said every %d s "
			"while it lasts)",
			mcconn_name(w->conns[s]), mcconn_error(w->conns[s]), ws->cfg->writers,
			ws->cfg->nservers, ws->cfg->refill ? ", plus one for --refill" : "",
			SLOTS_REPORT_MS / 1000);
}

/* While slots are short: gives back every connection of w whose share of
 * the batch is complete (all of them between batches), so that no writer
 * sits on a slot another one waits for. A writer then holds a slot only
 * while it has commands on it, which the server answers: no wait cycle. */
static void slots_give_back(struct writer *w)
{
	if (!slots_short(w->pool))
		return;
	for (int s = 0; s < w->pool->cfg->nservers; s++)
		mcconn_release(w->conns[s]);
}

/* Runs the exchange until every queued command on every server has its
 * reply and none of them asks for a retry. Returns 0, -1 if the batch was
 * given up (abort or abandoned partition), or -ENOMEM if its commands could
 * not be built again: nothing is acknowledged then. */
static int exchange(struct writer *w, size_t n, size_t nsegs_scan, struct fence_wait *fw)
{
	struct k2mc_writers *ws = w->pool;
	int ns = ws->cfg->nservers;
	struct mc_conn *busy[K2MC_MAX_SERVERS];
	int busy_idx[K2MC_MAX_SERVERS];
	enum mc_exchange res[K2MC_MAX_SERVERS];
	int64_t waiting_since = k2mc_now_ms();
	int delay = BACKOFF_MIN_MS, want_reroute = 0, first = 1;
	/* servers already counted as timed out in this batch (bit s) */
	uint64_t stalled = 0;

	for (;;) {
		int nb = 0, failed = 0, pending = 0;
		/* re-read each round: commits renew the lease meanwhile */
		int64_t until = k2mc_fence_deadline(ws->fence);
		int fenced = ws->fence != NULL && k2mc_now_ms() >= until;

		for (int s = 0; s < ns; s++) {
			struct mc_conn *c = w->conns[s];

			if (mcconn_done(c))
				continue;
			/* on the first round of a batch, ensure also notices a
			 * connection the server closed while idle, and remakes
			 * it quietly: that is no outage */
			if (first || !mcconn_connected(c)) {
				int rc = mcconn_ensure(c, CONNECT_TIMEOUT_MS);

				if (rc == -EUSERS) {
					k2mc_count_mc_error(w->stats, s, connect_error_kind(rc));
					slots_refused(w, s);
					failed++;
					continue;
				}
				if (rc != 0) {
					k2mc_count_mc_error(w->stats, s, connect_error_kind(rc));
					report_server(ws, s, K2MC_SERVER_DOWN, mcconn_name(c),
						      mcconn_error(c));
					want_reroute |= server_failed(w, s);
					failed++;
					continue;
				}
				if (mcconn_batch_stale(c) || value_limit(w, s) != w->limit[s]) {
					if (requeue_server(w, n, s) != 0)
						return -ENOMEM;
					if (mcconn_done(c))
						continue;
				}
			}
			busy[nb] = c;
			busy_idx[nb++] = s;
		}
		first = 0;
		if (fenced)
			fence_hold(w, fw);
		else if (ws->fence != NULL)
			fence_resume(w, fw);
		if (nb > 0) {
			int64_t t0 = k2mc_now_ms(), took;

			/* fenced: nothing is sent, replies still owed are read */
			mcconn_exchange(busy, (size_t)nb, fenced ? FENCE_PARK_MS : EXCHANGE_SLICE_MS,
					until, res);
			if (fenced) {
				took = k2mc_now_ms() - t0;
				if (took < FENCE_PARK_MS)
					nap(w, (int)(FENCE_PARK_MS - took));
				/* a fenced wait is not the server's silence */
				waiting_since = k2mc_now_ms();
			}
		}
		for (int b = 0; b < nb; b++) {
			struct mc_conn *c = busy[b];
			int s = busy_idx[b];

			if (res[b] == MC_X_FAILED) {
				k2mc_count_mc_error(w->stats, s, K2MC_MC_ERR_CONNECTION);
				report_server(ws, s, K2MC_SERVER_DOWN, mcconn_name(c), mcconn_error(c));
				want_reroute |= server_failed(w, s);
				failed++;
			} else if (res[b] == MC_X_PENDING) {
				pending++;
				if (!fenced && k2mc_now_ms() - waiting_since >= STALL_REPORT_MS) {
					if (!(stalled & (1ull << s)))
						k2mc_count_mc_error(w->stats, s, K2MC_MC_ERR_TIMEOUT);
					stalled |= 1ull << s;
					report_server(ws, s, K2MC_SERVER_STALLED, mcconn_name(c),
						      mcconn_last_reply_text(c));
				}
			} else {
				int errors = 0, oom = 0;

				for (size_t i = 0; i < mcconn_queued(c); i++) {
					enum mc_reply r = mcconn_reply(c, i);

					if (!reply_final(r)) {
						errors++;
						oom += r == MC_OOM;
					}
				}
				if (errors > 0) {
					/* the server is alive but did not apply
					 * everything: all of it again, in order */
					k2mc_count_mc_error(w->stats, s, K2MC_MC_ERR_REPLY);
					report_server(ws, s,
						      oom == errors ? K2MC_SERVER_OOM : K2MC_SERVER_DOWN,
						      mcconn_name(c), mcconn_last_reply_text(c));
					mcconn_rewind(c);
					failed++;
				} else {
					w->fails[s] = 0;
					report_server(ws, s, K2MC_SERVER_UP, mcconn_name(c), "");
				}
			}
		}
		/* a share that is complete needs its connection no more */
		slots_give_back(w);
		/* Replies are matched to commands by position: the batch may be
		 * rebuilt only when no connection still owes any. */
		if (want_reroute && pending == 0) {
			want_reroute = 0;
			if (queue_all(w, n) != 0)
				return -ENOMEM;
			continue;
		}
		if (failed == 0 && pending == 0)
			return 0;
		if (batch_abandoned(w, nsegs_scan))
			return -1;
		if (failed > 0) {
			k2mc_count(&w->stats->retries, 1);
			backoff(w, &delay);
			waiting_since = k2mc_now_ms();
		}
	}
}

/* ---- completion -------------------------------------------------------------*/

/* All replies are in: count, acknowledge, free the records, free the slots. */
static void count_latency(struct writer *w, const rd_kafka_message_t *m, int64_t now)
{
	int64_t ts = rd_kafka_message_timestamp(m, NULL), d;

	if (ts < 0)
		return;
	d = now - ts;
	if (d < 0)
		d = 0; /* producer clock ahead of ours */
	k2mc_count(&w->stats->latency_ms[d < K2MC_LAT_MAX_MS ? d : K2MC_LAT_MAX_MS], 1);
}

static void complete(struct writer *w, size_t n, size_t nsegs_scan)
{
	/* one clock read per batch: every record of it was acknowledged now */
	int64_t now = k2mc_wall_ms();
	struct k2mc_part *last = NULL;
	int64_t failed_at = INT64_MAX;
	/* what the consumers took from the byte budget for these records,
	 * given back in one call */
	uint64_t spent = 0;

	for (size_t i = 0; i < n; i++) {
		rd_kafka_message_t *m = w->items[i].ptr;

		if (w->item_part[i] != last) {
			last = w->item_part[i];
			failed_at = k2mc_part_failed_at(last);
		}
		if (w->item_server[i] >= 0 && w->item_sup[i] != NO_SUP) {
			/* superseded: every reply of the batch is in, the
			 * write that replaced it included. A record skipped
			 * as its key's newest state is counted as skipped, as
			 * it would be unsuperseded (its key was not deleted
			 * for it). */
			if (w->item_inval[i]) {
				count_skip(w, i, w->item_inval[i], 0);
			} else {
				k2mc_count(&w->stats->coalesced, 1);
				if (w->item_hashed[i])
					k2mc_count(&w->inv->hashed[w->item_hashed[i]], 1);
			}
		} else if (w->item_server[i] >= 0) {
			struct mc_conn *c = w->conns[w->item_server[i]];

			/* exchange() resent every other reply until it was one
			 * of these */
			switch (mcconn_reply(c, w->item_cmd[i])) {
			case MC_STORED:
				k2mc_count(&w->stats->written, 1);
				k2mc_count(&w->stats->bytes, w->maps[i].value_len);
				if (w->item_hashed[i])
					k2mc_count(&w->inv->hashed[w->item_hashed[i]], 1);
				break;
			case MC_DELETED:
			case MC_NOT_FOUND:
				if (w->item_inval[i]) {
					count_skip(w, i, w->item_inval[i], 1);
					break;
				}
				k2mc_count(&w->stats->deleted, 1);
				/* its expiry had passed: deleted, not written */
				if (w->maps[i].expired)
					k2mc_count(&w->stats->expired, 1);
				if (w->item_hashed[i])
					k2mc_count(&w->inv->hashed[w->item_hashed[i]], 1);
				break;
			case MC_TOO_LARGE:
				/* memcached refused the value and dropped the
				 * key's old item itself */
				w->refused_server = -1;
				refuse(w, i, K2MC_VALUE_TOO_LARGE);
				break;
			default:
				/* not reached: exchange() resends a batch until
				 * every reply is one of the above */
				break;
			}
			if (w->item_server[i] == ITEM_KEEP)
				failed_at = k2mc_part_failed_at(last);
		}
		/* a record this batch wrote after one of its partition that
		 * was refused (--on-invalid fail, here or by another writer)
		 * is not acknowledged either */
		if (w->item_server[i] != ITEM_KEEP && m->offset < failed_at) {
			count_latency(w, m, now);
			k2mc_part_ack(w->item_part[i], w->items[i].tag);
		}
		spent += k2mc_record_bytes(m);
		if (w->item_pre[i] != NULL)
			spent += k2mc_prepared_bytes(w->pool->map);
		rd_kafka_message_destroy(m);
		k2mc_prepared_free(w->item_pre[i]);
	}
	/* every part of the process shares one budget */
	if (n > 0)
		k2mc_budget_release(k2mc_part_budget(w->item_part[0]), spent);
	for (size_t k = 0; k < nsegs_scan; k++) {
		if (w->segs[k].p == NULL)
			continue;
		ring_release(k2mc_part_ring(w->segs[k].p, w->id), w->segs[k].n);
		k2mc_part_wake(w->segs[k].p);
	}
	k2mc_count(&w->stats->batches, 1);
}

/* The batch's commands could not be allocated: nothing of it was sent or
 * acknowledged. Said when it starts and when it ends, counted each time. */
static void out_of_memory(struct writer *w, size_t n)
{
	k2mc_count(&w->stats->alloc_failures, 1);
	if (w->nomem)
		return;
	w->nomem = 1;
	k2mc_warn("writer %d: out of memory building a batch of %zu records; nothing of it is "
		  "acknowledged, retrying the same records", w->id, n);
}

/* Maps every record of the batch (mapping.h: one call each), before any
 * decision about them: 0, or -ENOMEM when a built value found no memory
 * (nothing was decided or counted yet, so the batch can map again). */
static int map_all(struct writer *w, size_t n)
{
	const struct k2mc_mapping *map = w->pool->map;
	/* one clock read per batch: the expiries of --ttl-from-timestamp */
	int64_t now = k2mc_wall_ms();

	k2mc_arena_reset(w->arena);
	for (size_t i = 0; i < n; i++) {
		struct k2mc_record rec;
		int r;

		k2mc_record_of(map, w->items[i].ptr, &rec);
		r = k2mc_mapping_map(map, &rec, w->item_pre[i], now, w->arena, &w->maps[i]);
		if (r < 0)
			return r;
		w->item_reason[i] = (uint8_t)r;
	}
	return 0;
}

/* One batch, from the lease to every reply: 0 (complete() may run), or -1
 * when it was given up. */
static int run_batch(struct writer *w, size_t n, size_t nsegs)
{
	struct fence_wait fw = { 0, 0, 0 };
	int delay = BACKOFF_MIN_MS, rc;

	if (await_lease(w, nsegs, &fw) != 0)
		return -1;
	/* --mc-eject: servers whose retry time has come are placed to again */
	if (ejecting(w->pool))
		k2mc_placement_restore(w->place, time(NULL));
	while (map_all(w, n) != 0) {
		out_of_memory(w, n);
		if (batch_abandoned(w, nsegs))
			return -1;
		backoff(w, &delay);
	}
	rc = classify(w, n);
	for (;;) {
		if (rc == 0)
			rc = exchange(w, n, nsegs, &fw);
		if (rc != -ENOMEM)
			break;
		out_of_memory(w, n);
		/* closes connections that still owe replies: the next
		 * attempt must not read this one's */
		for (int s = 0; s < w->pool->cfg->nservers; s++)
			mcconn_reset_batch(w->conns[s]);
		if (batch_abandoned(w, nsegs))
			return -1;
		backoff(w, &delay);
		rc = queue_all(w, n);
	}
	if (rc == 0 && w->nomem) {
		w->nomem = 0;
		k2mc_info("writer %d: memory for batches again", w->id);
	}
	return rc;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct k2mc_writers *ws = w->pool;
	int parked = 0;
	char name[16];

	snprintf(name, sizeof(name), "k2mc-w/%d", w->id);
	pthread_setname_np(pthread_self(), name);
	rcu_register_thread();
	for (;;) {
		struct k2mc_part_table *t;
		size_t n, nsegs;
		int rc;

		t = k2mc_table_read_lock(ws->table);
		nsegs = t ? t->n : 0;
		if (nsegs > w->seg_cap) {
			struct seg *ns = realloc(w->segs, nsegs * sizeof(*ns));

			if (ns == NULL) {
				/* retried on the next round; nothing was peeked */
				k2mc_table_read_unlock(ws->table);
				nap(w, IDLE_PARK_MS);
				continue;
			}
			w->segs = ns;
			w->seg_cap = nsegs;
		}
		for (size_t k = 0; k < nsegs; k++)
			w->segs[k].p = NULL;
		/* after a shutdown gave up on Memcached, no new batch starts:
		 * it would only be given up again (and its dead letters sent
		 * twice) */
		n = atomic_load_explicit(&ws->abort, memory_order_acquire) ? 0 : gather(w, t);
		if (n == 0) {
			k2mc_table_read_unlock(ws->table);
			/* idle: its slots are for writers that have records */
			slots_give_back(w);
			if (atomic_load_explicit(&ws->stop, memory_order_acquire))
				break;
			if (!parked) {
				/* announce, then look once more before sleeping */
				park_prepare(w->bell);
				parked = 1;
				continue;
			}
			park_wait(w->bell, IDLE_PARK_MS);
			parked = 0;
			continue;
		}
		if (parked) {
			park_cancel(w->bell);
			parked = 0;
		}
		rc = run_batch(w, n, nsegs);
		if (rc == 0)
			complete(w, n, nsegs);
		for (int s = 0; s < ws->cfg->nservers; s++)
			mcconn_reset_batch(w->conns[s]);
		slots_give_back(w);
		k2mc_table_read_unlock(ws->table);
		if (rc != 0) {
			/* given up: wait for the main thread to drop the
			 * partitions rather than spin on the same records */
			nap(w, IDLE_PARK_MS);
		}
	}
	rcu_unregister_thread();
	return NULL;
}

static int writer_init(struct k2mc_writers *ws, struct writer *w, int id)
{
	const struct k2mc_config *cfg = ws->cfg;
	size_t b = (size_t)cfg->batch;

	w->id = id;
	w->pool = ws;
	w->stats = &ws->stats[id];
	w->inv = &ws->inv[id];
	w->bell = &ws->bells[id];
	park_init(w->bell);
	{
		char why[512];

		/* where the readers' client looks for each key (main checked
		 * the combination at start: k2mc_placement_check) */
		w->place = k2mc_placement_new(cfg, why, sizeof(why));
		if (w->place == NULL) {
			k2mc_err("%s", why);
			return -EINVAL;
		}
	}
	w->conns = calloc((size_t)cfg->nservers, sizeof(*w->conns));
	w->fails = calloc((size_t)cfg->nservers, sizeof(*w->fails));
	w->limit = calloc((size_t)cfg->nservers, sizeof(*w->limit));
	w->refused_server = -1;
	if (w->conns == NULL || w->fails == NULL || w->limit == NULL)
		return -ENOMEM;
	for (int s = 0; s < cfg->nservers; s++) {
		char why[512];

		/* libmemcached's position s is cfg->servers[s] (added in order
		 * above); TCP or unix socket, --mc-protocol, --mc-tls* */
		w->conns[s] = mcconn_new_server(&cfg->servers[s], cfg, why, sizeof(why));
		if (w->conns[s] == NULL) {
			k2mc_err("%s", why);
			return -EINVAL;
		}
		/* a shutdown that gives up on Memcached (k2mc_writers_abort)
		 * takes the writer out of a connect or an exchange at once: the
		 * table's grace period, and so the stop, waits for that */
		mcconn_set_cancel(w->conns[s], &ws->abort);
	}
	w->items = calloc(b, sizeof(*w->items));
	w->item_part = calloc(b, sizeof(*w->item_part));
	w->item_server = calloc(b, sizeof(*w->item_server));
	w->item_cmd = calloc(b, sizeof(*w->item_cmd));
	w->item_hashed = calloc(b, sizeof(*w->item_hashed));
	w->item_reason = calloc(b, sizeof(*w->item_reason));
	w->item_pre = calloc(b, sizeof(*w->item_pre));
	w->maps = calloc(b, sizeof(*w->maps));
	w->arena = k2mc_arena_new();
	if (w->item_reason == NULL || w->item_pre == NULL || w->maps == NULL || w->arena == NULL)
		return -ENOMEM;
	w->item_inval = calloc(b, sizeof(*w->item_inval));
	w->item_sup = calloc(b, sizeof(*w->item_sup));
	/* at most half full */
	for (w->coal_mask = 1; w->coal_mask < 2 * b; w->coal_mask <<= 1)
		;
	w->coal = calloc(w->coal_mask, sizeof(*w->coal));
	w->coal_mask--;
	if (w->item_sup == NULL || w->coal == NULL)
		return -ENOMEM;
	if (w->items == NULL || w->item_part == NULL || w->item_server == NULL ||
	    w->item_cmd == NULL || w->item_hashed == NULL || w->item_inval == NULL)
		return -ENOMEM;
	return 0;
}

struct k2mc_writers *k2mc_writers_new(const struct k2mc_config *cfg, k2mc_table_ref *table,
				      const struct k2mc_fence *fence, size_t max_value)
{
	struct k2mc_writers *ws = calloc(1, sizeof(*ws));
	char err[512];

	if (ws == NULL)
		return NULL;
	ws->cfg = cfg;
	ws->table = table;
	ws->fence = fence;
	ws->n = cfg->writers;
	/* main compiled and installed the templates; a caller that did not
	 * gets them compiled here, and installed for the consumers (which
	 * exist only after the writers) */
	ws->map = k2mc_mapping_installed();
	if (ws->map == NULL) {
		ws->own_map = k2mc_mapping_new(cfg, err, sizeof(err));
		if (ws->own_map == NULL) {
			k2mc_err("%s", err);
			free(ws);
			return NULL;
		}
		k2mc_mapping_install(ws->own_map);
		ws->map = ws->own_map;
	}
	/* values are checked against the chosen server's limit (queue_on) */
	k2mc_policy_init(&ws->policy, cfg);
	ws->policy.max_value = max_value;
	ws->w = calloc((size_t)ws->n, sizeof(*ws->w));
	ws->bells = aligned_alloc(64, sizeof(*ws->bells) * (size_t)ws->n);
	ws->stats = aligned_alloc(64, sizeof(*ws->stats) * (size_t)ws->n);
	ws->inv = aligned_alloc(64, sizeof(*ws->inv) * (size_t)ws->n);
	ws->server_state = calloc((size_t)cfg->nservers, sizeof(*ws->server_state));
	if (ws->w == NULL || ws->bells == NULL || ws->stats == NULL || ws->inv == NULL ||
	    ws->server_state == NULL)
		goto fail;
	memset(ws->stats, 0, sizeof(*ws->stats) * (size_t)ws->n);
	memset(ws->inv, 0, sizeof(*ws->inv) * (size_t)ws->n);
	if (k2mc_dlq_wanted(cfg)) {
		ws->dlq = k2mc_dlq_new(cfg, table, err, sizeof(err));
		if (ws->dlq == NULL) {
			k2mc_err("%s", err);
			k2mc_writers_free(ws);
			return NULL;
		}
	}
	for (int i = 0; i < ws->n; i++) {
		if (writer_init(ws, &ws->w[i], i) != 0)
			goto fail;
	}
	return ws;
fail:
	k2mc_err("cannot set up %d writers (out of memory or bad server list)", cfg->writers);
	k2mc_writers_free(ws);
	return NULL;
}

int k2mc_writers_start(struct k2mc_writers *ws)
{
	int started = 0;

	if (ws->dlq != NULL && k2mc_dlq_start(ws->dlq) != 0) {
		ws->n = 0;
		return -EAGAIN;
	}
	for (int i = 0; i < ws->n; i++) {
		int rc = pthread_create(&ws->w[i].thread, NULL, writer_main, &ws->w[i]);

		if (rc != 0) {
			k2mc_err("cannot start writer thread %d: %s", i, strerror(rc));
			ws->n = started;
			return -rc;
		}
		started++;
	}
	return 0;
}

const char *k2mc_writers_fatal(struct k2mc_writers *ws)
{
	if (atomic_load_explicit(&ws->fatal_ready, memory_order_acquire))
		return ws->fatal_msg;
	return ws->dlq != NULL ? k2mc_dlq_fatal(ws->dlq) : NULL;
}

struct park *k2mc_writers_bells(struct k2mc_writers *ws)
{
	return ws->bells;
}

struct k2mc_writer_stats *k2mc_writers_stats(struct k2mc_writers *ws)
{
	return ws->stats;
}

void k2mc_writers_invalid(struct k2mc_writers *ws, struct k2mc_invalid_totals *t)
{
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < ws->cfg->writers; i++) {
		for (int r = 1; r < K2MC_MAP_NREASONS; r++)
			t->hashed[r] += k2mc_read(&ws->inv[i].hashed[r]);
		t->refused += k2mc_read(&ws->inv[i].refused);
	}
	for (int r = 1; r < K2MC_MAP_NREASONS; r++) {
		t->hashed_total += t->hashed[r];
		if (ws->dlq != NULL) {
			t->dead_lettered[r] = k2mc_dlq_delivered(ws->dlq, (enum k2mc_map_reason)r);
			t->dead_lettered_total += t->dead_lettered[r];
		}
	}
	if (ws->dlq != NULL) {
		uint64_t sent = k2mc_dlq_sent(ws->dlq);

		t->dead_letters_undelivered =
			sent > t->dead_lettered_total ? sent - t->dead_lettered_total : 0;
	}
}

void k2mc_writers_abort(struct k2mc_writers *ws)
{
	atomic_store_explicit(&ws->abort, 1, memory_order_release);
	/* a writer holding records for lack of a lease naps on its bell.
	 * cfg->writers, not n (which k2mc_writers_stop changes): this runs in
	 * a signal handler too, and park_notify is an atomic and a futex call */
	for (int i = 0; i < ws->cfg->writers; i++)
		park_notify(&ws->bells[i]);
}

/* One line at exit when a policy other than skip did anything: what the
 * summary line (skips only) does not say. */
static void report_invalid(struct k2mc_writers *ws)
{
	struct k2mc_invalid_totals t;
	char by[512] = "";
	size_t o = 0;

	k2mc_writers_invalid(ws, &t);
	if (t.hashed_total == 0 && ws->dlq == NULL && t.refused == 0)
		return;
	/* every reason, in enum order: "missing_key N key_too_long N ..." */
	for (int r = 1; r < K2MC_MAP_NREASONS && o < sizeof(by); r++)
		o += (size_t)snprintf(by + o, sizeof(by) - o, "%s%s %llu", r > 1 ? " " : "",
				      k2mc_map_reason_name((enum k2mc_map_reason)r),
				      (unsigned long long)t.dead_lettered[r]);
	k2mc_info("invalid records: hashed %llu (key_too_long %llu key_bad_bytes %llu); "
		  "dead-lettered %llu to %s (%s), undelivered %llu; refused %llu",
		  (unsigned long long)t.hashed_total,
		  (unsigned long long)t.hashed[K2MC_KEY_TOO_LONG],
		  (unsigned long long)t.hashed[K2MC_KEY_BAD_BYTES],
		  (unsigned long long)t.dead_lettered_total,
		  ws->cfg->dlq_topic ? ws->cfg->dlq_topic : "-", by,
		  (unsigned long long)t.dead_letters_undelivered, (unsigned long long)t.refused);
}

void k2mc_writers_stop(struct k2mc_writers *ws)
{
	atomic_store_explicit(&ws->stop, 1, memory_order_release);
	for (int i = 0; i < ws->n; i++)
		park_notify(&ws->bells[i]);
	for (int i = 0; i < ws->n; i++)
		pthread_join(ws->w[i].thread, NULL);
	ws->n = 0;
	/* the partition table, which delivery reports look parts up in, is
	 * still alive here; it is not when k2mc_writers_free runs */
	if (ws->dlq != NULL)
		k2mc_dlq_stop(ws->dlq, DLQ_STOP_FLUSH_MS);
	report_invalid(ws);
}

void k2mc_writers_free(struct k2mc_writers *ws)
{
	if (ws == NULL)
		return;
	for (int i = 0; ws->w != NULL && i < ws->cfg->writers; i++) {
		struct writer *w = &ws->w[i];

		for (int s = 0; w->conns != NULL && s < ws->cfg->nservers; s++)
			mcconn_free(w->conns[s]);
		free(w->conns);
		free(w->fails);
		free(w->limit);
		k2mc_placement_free(w->place);
		free(w->items);
		free(w->item_part);
		free(w->item_server);
		free(w->item_cmd);
		free(w->item_hashed);
		free(w->item_reason);
		free(w->item_pre);
		free(w->maps);
		k2mc_arena_free(w->arena);
		free(w->item_inval);
		free(w->item_sup);
		free(w->coal);
		free(w->segs);
	}
	k2mc_dlq_free(ws->dlq);
	if (ws->own_map != NULL) {
		k2mc_mapping_install(NULL);
		k2mc_mapping_free(ws->own_map);
	}
	free(ws->w);
	free(ws->bells);
	free(ws->stats);
	free(ws->inv);
	free(ws->server_state);
	free(ws);
}

static const char *const server_state_names[] = {
	[K2MC_SERVER_UNKNOWN] = "unknown",
	[K2MC_SERVER_UP] = "up",
	[K2MC_SERVER_DOWN] = "down",
	[K2MC_SERVER_STALLED] = "not answering",
	[K2MC_SERVER_OOM] = "out of memory",
};

const char *k2mc_server_state_name(int st)
{
	if (st < 0 || (size_t)st >= sizeof(server_state_names) / sizeof(server_state_names[0]))
		return "unknown";
	return server_state_names[st];
}

int k2mc_writers_server_state(struct k2mc_writers *ws, int s)
{
	return atomic_load_explicit(&ws->server_state[s], memory_order_relaxed);
}

int k2mc_writers_server_ok(struct k2mc_writers *ws, int s)
{
	int st = k2mc_writers_server_state(ws, s);

	return st != K2MC_SERVER_DOWN && st != K2MC_SERVER_STALLED && st != K2MC_SERVER_OOM;
}

int k2mc_writers_fence_held(struct k2mc_writers *ws)
{
	return ws->fence == NULL || k2mc_fence_held(ws->fence);
}
