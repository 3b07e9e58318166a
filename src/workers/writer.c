/* Writer threads; see writer.h. A batch is: peek records from this writer's
 * rings -> wait for the membership lease -> map keys (applying --on-invalid
 * to records Memcached cannot take) -> queue commands per server -> one
 * pipelined exchange -> every reply read -> acknowledge watermarks ->
 * release ring slots. This file builds and acknowledges batches; the lease
 * and the exchange (send, retry, eject, fence) are writer_exchange.c's.
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
#include "workers/writer_int.h"

#include <errno.h>
#include <inttypes.h>
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
#include "core/log.h"
#include "workers/refill.h"
/* After the first record skipped for a reason, at most one line per reason
 * this often says how many more were skipped. */
#define SKIP_REPORT_MS 10000
/* How long the dead letter producer may flush at stop; the drain before it
 * already waited for every delivery it could. */
#define DLQ_STOP_FLUSH_MS 1000

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

/* ---- records Memcached cannot take ----------------------------------------*/

/* The shared decision (policy.h) for record i placed on server s, or with
 * no key (s < 0: no server, no limit). */
static struct k2mc_decision decide(const struct writer *w, size_t i, int s)
{
	return k2mc_policy_decide(&w->pool->policy, w->batch[i].reason, &w->maps[i],
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
		k2mc_record_of(ws->map, w->batch[i].m, &rec);
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
	rd_kafka_message_t *m = w->batch[i].m;
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
	w->batch[i].state = ITEM_ACK;
	count_skip(w, i, r, 0);
}

static void dead_letter(struct writer *w, size_t i, enum k2mc_map_reason r)
{
	struct k2mc_writers *ws = w->pool;
	rd_kafka_message_t *m = w->batch[i].m;
	char detail[200];

	describe(w, detail, sizeof(detail), i, r);
	/* acknowledged by the delivery report, never here; on failure the
	 * record stays unacknowledged and k2mc_writers_fatal says why */
	w->batch[i].state = ITEM_KEEP;
	if (k2mc_dlq_send(ws->dlq, w->batch[i].part, w->batch[i].tag, m, r, detail, &ws->abort) != 0)
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
	rd_kafka_message_t *m = w->batch[i].m;
	char detail[200];

	describe(w, detail, sizeof(detail), i, r);
	w->batch[i].state = ITEM_KEEP;
	k2mc_part_fail(w->batch[i].part, m->offset);
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

static void item_place(struct item *it, int s)
{
	it->state = ITEM_SERVER;
	it->server = (int16_t)s;
}

/* The lines of record m that a batch reads: its rd_kafka_message_t (72
 * bytes, over two or three lines), and the timestamp
 * rd_kafka_message_timestamp() reads just past it (librdkafka keeps it in
 * the rd_kafka_msg_t around the message, 24 bytes past its end). One
 * prefetch per 32 bytes of that span reaches every line of it, whatever
 * its alignment. */
static inline void prefetch_record(const rd_kafka_message_t *m)
{
	for (size_t off = 0; off < sizeof(*m) + 32; off += 32)
		__builtin_prefetch((const char *)m + off);
}

/* Peeks up to --batch records from this writer's rings, fairly, and keeps
 * a prefix of them that holds at most K2MC_BATCH_MAX_BYTES of keys and
 * values (the first record always fits, however large): peeking consumes
 * nothing, and only the kept ones are released. Caller holds the RCU read
 * lock, which keeps every part in the table alive.
 * The records were written by librdkafka's broker thread, on the other
 * core as often as not, and the batch is their first touch here: so every
 * record is asked for (prefetched) in one pass and read in the next, and
 * their misses overlap instead of adding up (perf/FINDINGS.md, issue 25).
 * What complete() needs of a record (its offset, timestamp and budget
 * bytes) is copied into its item now, while its lines are here: by then a
 * pipelined exchange has slept in poll() and the lines are gone. */
static size_t gather(struct writer *w, struct k2mc_part_table *t)
{
	size_t max = (size_t)w->pool->cfg->batch, n = 0, bytes = 0, k, i;
	int prepared = 0;

	w->gathered_bytes = 0;
	if (t == NULL || t->n == 0)
		return 0;
	for (k = 0; k < t->n && n < max; k++) {
		struct k2mc_part *p = t->parts[(w->rr + k) % t->n];
		size_t got;

		if (k2mc_part_abandoned(p))
			continue;
		got = ring_peek(k2mc_part_ring(p, w->id), w->peek, max - n);
		for (size_t j = 0; j < got; j++) {
			struct item *it = &w->batch[n + j];

			/* a record the consumer keyed travels with its key
			 * (consumer.h); the batch keeps both, the ring is
			 * untouched until release */
			it->tag = w->peek[j].tag;
			it->pre = k2mc_item_prepared(w->peek[j].ptr);
			it->part = p;
			if (it->pre != NULL) {
				it->m = NULL;
				prepared = 1;
				__builtin_prefetch(it->pre);
			} else {
				it->m = w->peek[j].ptr;
				prefetch_record(it->m);
			}
		}
		if (got == 0)
			continue;
		w->segs[k].p = p;
		w->segs[k].n = got;
		n += got;
	}
	w->rr++;
	if (prepared) {
		for (i = 0; i < n; i++) {
			struct item *it = &w->batch[i];

			if (it->pre != NULL) {
				it->m = it->pre->m;
				prefetch_record(it->m);
			}
		}
	}
	/* the records' own fields, and the byte limit: the batch is cut after
	 * the first record that takes it over K2MC_BATCH_MAX_BYTES */
	for (i = 0; i < n && (i == 0 || bytes <= K2MC_BATCH_MAX_BYTES); i++) {
		struct item *it = &w->batch[i];
		const rd_kafka_message_t *m = it->m;

		__builtin_prefetch(m->key);
		__builtin_prefetch(m->payload);
		it->offset = m->offset;
		it->ts = rd_kafka_message_timestamp(m, NULL);
		bytes += m->key_len + m->len;
		w->gathered_bytes += k2mc_record_bytes(m) +
				     (it->pre != NULL ? k2mc_prepared_bytes(w->pool->map) : 0);
	}
	if (i < n) {
		/* cut at item i: the segments are in batch order */
		size_t at = 0;

		for (k = 0; k < t->n; k++) {
			if (w->segs[k].p == NULL)
				continue;
			if (at >= i)
				w->segs[k].p = NULL;
			else if (at + w->segs[k].n > i)
				w->segs[k].n = i - at;
			at += w->segs[k].n;
		}
		n = i;
	}
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
	struct item *it = &w->batch[i];
	int rc;

	item_place(it, s);
	it->inval = 0;
	it->cmd = (uint32_t)mcconn_queued(c);
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
	k2mc_refill_note(ws->filter, s, mp->key, mp->key_len);
	if (d.fate == K2MC_FATE_INVALIDATE) {
		note_fallback(ws, d.reason, K2MC_FATE_SKIP);
		it->inval = (uint8_t)d.reason;
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
		w->limit[s] = writer_value_limit(w, s);
}

/* Whether record j's write replaces whatever its key held: a set or a
 * delete does, and so does the delete of a key whose newest record is
 * skipped; an invalidate keeps the value under it (marked stale), so the
 * records before it must still be written. */
static int replaces(const struct writer *w, size_t j)
{
	return w->batch[j].inval != 0 || w->maps[j].op == K2MC_OP_SET ||
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

		if (w->batch[k].state != ITEM_SERVER)
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
				w->batch[k].sup = sl->idx;
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
		struct item *it = &w->batch[i];
		rd_kafka_message_t *m = it->m;
		const struct k2mc_mapped *mp = &w->maps[i];
		struct k2mc_decision d;
		int s;

		/* the records of a part are consecutive: one load per part */
		if (it->part != last) {
			last = it->part;
			failed_at = k2mc_part_failed_at(last);
		}
		it->hashed = 0;
		it->inval = 0;
		it->sup = NO_SUP;
		if (it->offset >= failed_at) {
			/* at or past a refused record: never written, never
			 * acknowledged, consumed again after a restart */
			it->state = ITEM_KEEP;
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
			item_place(it, s);
			if (d.hashed == K2MC_MAP_OK)
				break;
			it->hashed = (uint8_t)d.hashed;
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
			item_place(it, s);
			it->inval = (uint8_t)d.reason;
			break;
		case K2MC_FATE_IGNORE:
			/* --on-tombstone ignore, or a --cdc truncate:
			 * acknowledged unwritten */
			it->state = ITEM_ACK;
			if (!mp->truncate) {
				k2mc_count(&w->stats->ignored, 1);
				break;
			}
			k2mc_count(&w->stats->cdc_truncates, 1);
			if (!atomic_exchange_explicit(&ws->truncate_logged, 1, memory_order_relaxed))
				k2mc_log_record(K2MC_LOG_WARN, rd_kafka_topic_name(m->rkt),
						m->partition, m->offset, "cdc_truncate",
						"%s [%d] @%lld: a truncate event (op t): the table was "
						"emptied, but k2mc cannot tell which keys it held, so the "
						"cache keeps them until they expire or are changed; "
						"counted (truncates), logged once",
						rd_kafka_topic_name(m->rkt), m->partition,
						(long long)m->offset);
			break;
		default:
			refuse(w, i, d.reason);
			if (it->state == ITEM_KEEP)
				failed_at = k2mc_part_failed_at(last);
			break;
		}
	}
	coalesce(w, n);
	for (size_t i = 0; i < n; i++) {
		const struct item *it = &w->batch[i];
		int rc;

		if (it->state != ITEM_SERVER || it->sup != NO_SUP)
			continue;
		rc = queue_on(w, i, it->server);
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
int writer_queue_all(struct writer *w, size_t n)
{
	struct k2mc_part *last = NULL;
	int64_t failed_at = INT64_MAX;

	for (int s = 0; s < w->pool->cfg->nservers; s++)
		mcconn_reset_batch(w->conns[s]);
	refresh_limits(w);
	for (size_t i = 0; i < n; i++) {
		struct item *it = &w->batch[i];
		int rc;

		/* built again uncoalesced: the servers may have moved */
		it->sup = NO_SUP;
		if (it->state == ITEM_ACK || it->state == ITEM_KEEP)
			continue;
		if (it->part != last) {
			last = it->part;
			failed_at = k2mc_part_failed_at(last);
		}
		if (it->m->offset >= failed_at) {
			it->state = ITEM_KEEP;
			continue;
		}
		rc = queue_one(w, i);
		if (rc != 0) {
			it->state = ITEM_QUEUE;
			return rc;
		}
		if (it->state == ITEM_KEEP)
			failed_at = k2mc_part_failed_at(last);
	}
	return 0;
}

/* The connection to server s was (re)made speaking the other dialect, or
 * with another item size limit: build its share of the batch again, in the
 * same order, on the same server. 0 or -ENOMEM. */
int writer_requeue_server(struct writer *w, size_t n, int s)
{
	mcconn_reset_batch(w->conns[s]);
	w->limit[s] = writer_value_limit(w, s);
	for (size_t i = 0; i < n; i++) {
		int rc;

		if (w->batch[i].state != ITEM_SERVER || w->batch[i].server != s)
			continue;
		/* built again uncoalesced: the limit may have changed */
		w->batch[i].sup = NO_SUP;
		rc = queue_on(w, i, s);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- completion -------------------------------------------------------------*/

/* All replies are in: count, acknowledge, free the records, free the slots. */
static void count_latency(struct writer *w, int64_t ts, int64_t now)
{
	int64_t d;

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
	/* what the consumers took from the byte budget for these records
	 * (gather counted it), given back in one call */
	uint64_t spent = w->gathered_bytes;

	for (size_t i = 0; i < n; i++) {
		struct item *it = &w->batch[i];
		rd_kafka_message_t *m = it->m;

		if (it->part != last) {
			last = it->part;
			failed_at = k2mc_part_failed_at(last);
		}
		if (it->state == ITEM_SERVER && it->sup != NO_SUP) {
			/* superseded: every reply of the batch is in, the
			 * write that replaced it included. A record skipped
			 * as its key's newest state is counted as skipped, as
			 * it would be unsuperseded (its key was not deleted
			 * for it). */
			if (it->inval) {
				count_skip(w, i, it->inval, 0);
			} else {
				k2mc_count(&w->stats->coalesced, 1);
				if (it->hashed)
					k2mc_count(&w->inv->hashed[it->hashed], 1);
			}
		} else if (it->state == ITEM_SERVER) {
			struct mc_conn *c = w->conns[it->server];

			/* exchange() resent every other reply until it was one
			 * of these */
			switch (mcconn_reply(c, it->cmd)) {
			case MC_STORED:
				k2mc_count(&w->stats->written, 1);
				k2mc_count(&w->stats->bytes, w->maps[i].value_len);
				if (it->hashed)
					k2mc_count(&w->inv->hashed[it->hashed], 1);
				break;
			case MC_DELETED:
			case MC_NOT_FOUND:
				if (it->inval) {
					count_skip(w, i, it->inval, 1);
					break;
				}
				k2mc_count(&w->stats->deleted, 1);
				/* its expiry had passed: deleted, not written */
				if (w->maps[i].expired)
					k2mc_count(&w->stats->expired, 1);
				if (it->hashed)
					k2mc_count(&w->inv->hashed[it->hashed], 1);
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
			if (it->state == ITEM_KEEP)
				failed_at = k2mc_part_failed_at(last);
		}
		/* a record this batch wrote after one of its partition that
		 * was refused (--on-invalid fail, here or by another writer)
		 * is not acknowledged either */
		if (it->state != ITEM_KEEP && it->offset < failed_at) {
			count_latency(w, it->ts, now);
			k2mc_part_ack(it->part, it->tag);
		}
		rd_kafka_message_destroy(m);
		k2mc_prepared_free(it->pre);
	}
	/* every part of the process shares one budget */
	if (n > 0)
		k2mc_budget_release(k2mc_part_budget(w->batch[0].part), spent);
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

/* --value-format avro: rec's value becomes its JSON text, copied into the
 * arena (the mapped value may point into it until the batch ends). 0, an
 * invalid reason, K2MC_DECODE_AGAIN (the registry is unreachable) or
 * -ENOMEM. */
static int decode_value(struct writer *w, struct k2mc_record *rec)
{
	int in_key, r;
	void *copy;

	if (w->dec == NULL && (w->dec = k2mc_decode_ctx_new(k2mc_mapping_decoder(w->pool->map))) ==
				      NULL)
		return -ENOMEM;
	r = k2mc_decode_record(w->dec, rec, 0, 1, &in_key);
	if (r != 0 || rec->value == NULL)
		return r;
	copy = k2mc_arena_alloc(w->arena, rec->value_len > 0 ? rec->value_len : 1);
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, rec->value, rec->value_len);
	rec->value = copy;
	return 0;
}

/* Maps every record of the batch (mapping.h: one call each), before any
 * decision about them: 0, -ENOMEM when a built value found no memory, or
 * K2MC_DECODE_AGAIN when a value's schema is on a registry that cannot be
 * reached (nothing was decided or counted yet, so the batch can map again). */
static int map_all(struct writer *w, size_t n)
{
	const struct k2mc_mapping *map = w->pool->map;
	/* one clock read per batch: the expiries of --ttl-from-timestamp */
	int64_t now = k2mc_wall_ms();
	int avro = k2mc_decoder_value_avro(k2mc_mapping_decoder(map)) &&
		   k2mc_mapping_value_read(map);

	k2mc_arena_reset(w->arena);
	for (size_t i = 0; i < n; i++) {
		struct k2mc_record rec;
		int r, dr = 0;

		k2mc_record_of(map, w->batch[i].m, &rec);
		if (avro) {
			dr = decode_value(w, &rec);
			if (dr < 0)
				return dr;
			if (dr > 0) /* mapped as the bytes it is, for its key */
				k2mc_record_of(map, w->batch[i].m, &rec);
		}
		r = k2mc_mapping_map(map, &rec, w->batch[i].pre, now, w->arena, &w->maps[i]);
		if (r < 0)
			return r;
		/* a value that does not decode is the record's reason, unless
		 * its key gives no key at all (that reason comes first) */
		if (dr > 0 && (w->maps[i].key_len > 0 || r == K2MC_MAP_OK)) {
			r = dr;
			w->maps[i].in_key = 0;
			w->maps[i].truncate = 0;
		}
		w->batch[i].reason = (uint8_t)r;
	}
	return 0;
}

/* The batch waits for an unreachable Schema Registry: said when the wait
 * begins and when it ends, counted once per wait. */
static void registry_wait(struct writer *w, int waiting)
{
	if (waiting && w->registry_since == 0) {
		w->registry_since = k2mc_now_ms();
		k2mc_decode_note_wait(k2mc_mapping_decoder(w->pool->map));
		k2mc_warn("writer %d: the Schema Registry is unreachable (%s); the batch waits for "
			  "it, nothing of it is written or acknowledged",
			  w->id, k2mc_decode_explain(w->dec));
	} else if (!waiting && w->registry_since != 0) {
		k2mc_info("writer %d: the Schema Registry answers again, after %lld ms", w->id,
			  (long long)(k2mc_now_ms() - w->registry_since));
		w->registry_since = 0;
	}
}

/* One batch, from the lease to every reply: 0 (complete() may run), or -1
 * when it was given up. */
static int run_batch(struct writer *w, size_t n, size_t nsegs)
{
	struct fence_wait fw = { 0, 0, 0 };
	int delay = BACKOFF_MIN_MS, rc;

	if (writer_await_lease(w, nsegs, &fw) != 0)
		return -1;
	/* --mc-eject: servers whose retry time has come are placed to again */
	if (writer_ejecting(w->pool))
		k2mc_placement_restore(w->place, time(NULL));
	while ((rc = map_all(w, n)) != 0) {
		if (rc == K2MC_DECODE_AGAIN)
			registry_wait(w, 1);
		else
			out_of_memory(w, n);
		if (writer_batch_abandoned(w, nsegs))
			return -1;
		writer_backoff(w, &delay);
	}
	registry_wait(w, 0);
	rc = classify(w, n);
	for (;;) {
		if (rc == 0)
			rc = writer_exchange(w, n, nsegs, &fw);
		if (rc != -ENOMEM)
			break;
		out_of_memory(w, n);
		/* closes connections that still owe replies: the next
		 * attempt must not read this one's */
		for (int s = 0; s < w->pool->cfg->nservers; s++)
			mcconn_reset_batch(w->conns[s]);
		if (writer_batch_abandoned(w, nsegs))
			return -1;
		writer_backoff(w, &delay);
		rc = writer_queue_all(w, n);
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
				writer_nap(w, IDLE_PARK_MS);
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
			writer_slots_give_back(w);
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
		writer_slots_give_back(w);
		k2mc_table_read_unlock(ws->table);
		if (rc != 0) {
			/* given up: wait for the main thread to drop the
			 * partitions rather than spin on the same records */
			writer_nap(w, IDLE_PARK_MS);
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
	w->batch = calloc(b, sizeof(*w->batch));
	w->peek = calloc(b, sizeof(*w->peek));
	w->maps = calloc(b, sizeof(*w->maps));
	w->arena = k2mc_arena_new();
	if (w->batch == NULL || w->peek == NULL || w->maps == NULL || w->arena == NULL)
		return -ENOMEM;
	/* at most half full */
	for (w->coal_mask = 1; w->coal_mask < 2 * b; w->coal_mask <<= 1)
		;
	w->coal = calloc(w->coal_mask, sizeof(*w->coal));
	w->coal_mask--;
	if (w->coal == NULL)
		return -ENOMEM;
	return 0;
}

struct k2mc_writers *k2mc_writers_new(const struct k2mc_config *cfg, k2mc_table_ref *table,
				      const struct k2mc_fence *fence,
				      const struct k2mc_mapping *map, size_t max_value,
				      struct k2mc_refill_filter *filter, struct park *bells)
{
	struct k2mc_writers *ws = calloc(1, sizeof(*ws));
	char err[512];

	if (ws == NULL)
		return NULL;
	ws->cfg = cfg;
	ws->table = table;
	ws->fence = fence;
	ws->n = cfg->writers;
	ws->map = map;
	ws->filter = filter;
	/* values are checked against the chosen server's limit (queue_on) */
	k2mc_policy_init(&ws->policy, cfg);
	ws->policy.max_value = max_value;
	ws->w = calloc((size_t)ws->n, sizeof(*ws->w));
	ws->bells = bells;
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
		free(w->batch);
		free(w->peek);
		free(w->maps);
		k2mc_arena_free(w->arena);
		/* its thread has ended (joined) */
		k2mc_decode_ctx_free(w->dec);
		free(w->coal);
		free(w->segs);
	}
	k2mc_dlq_free(ws->dlq);
	free(ws->w);
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

