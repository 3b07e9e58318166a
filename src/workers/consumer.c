/* Consumer thread of one partition; see consumer.h. The thread is the only
 * producer of its rings and the only owner of its watermark's window. */
#include "workers/consumer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "core/log.h"
#include "core/rdkversion.h"
#include "core/watermark.h"
#include "workers/decode.h"
#include "workers/mapping.h"

/* Most records one fetch takes; fewer when byte credit is short (see
 * fetch_size): records fetched and not yet handed out are outside every
 * bound, the budget's and librdkafka's queued.max.messages.kbytes alike. */
#define CONSUME_BATCH 1024
/* How long one blocking fetch may last; stop requests also wake it. */
#define CONSUME_TIMEOUT_MS 200
/* Upper bound on one park; parks normally end early by notification. */
#define PARK_MS 50
/* Wait before trying again to allocate a record's prepared key. */
#define NOMEM_RETRY_MS 10
/* Waits for a Schema Registry that is unreachable: from the first to the
 * last, doubling (the registry client asks again at most every
 * negative.cache.ms anyway) */
#define REGISTRY_RETRY_MIN_MS 100
#define REGISTRY_RETRY_MAX_MS 5000
/* An empty partition queue for this long, with records on the broker past
 * the ones fetched, is taken for librdkafka's prefetch stall (wake_fetch):
 * the fallback for when the wake-up after a drain was not sent or did not
 * take. Not shorter: each expiry is a sleep and a wake-up for nothing. */
#define WAKE_AFTER_MS 20
/* Bound on one wake_fetch request (a broker round trip): no longer than a
 * fetch wait, so a stop is answered as promptly; after a failed one (the
 * leader unreachable: librdkafka reconnects by itself) the next waits this
 * long */
#define WAKE_TIMEOUT_MS CONSUME_TIMEOUT_MS
#define WAKE_BACKOFF_MS 1000

struct k2mc_part {
	char *topic;
	int32_t partition;
	rd_kafka_t *rk;
	rd_kafka_queue_t *queue;
	/* thread only: offset after the last record consumed, -1 = none yet */
	int64_t next_offset;
	/* immutable after k2mc_part_new: the group's committed offset at
	 * assignment, -1 = none or unknown */
	int64_t assigned_at;
	/* thread only: the offset the next record has if no record is missing
	 * (assigned_at, then the one after the last record or the end offset
	 * at the last end of partition), -1 = unknown; see note_gap */
	int64_t expect;
	/* thread only: no wake_fetch before this (k2mc_now_ms) */
	int64_t wake_not_before;
	/* immutable after k2mc_part_new: see k2mc_part_opts */
	int64_t hold_until_ms;
	/* main thread only, after the join (k2mc_part_set_released) */
	int released;
	/* immutable after k2mc_part_new: the linked librdkafka has the stall
	 * that wake_fetch works around (before 2.2) */
	int stall_wake;
	/* immutable after k2mc_part_new: librdkafka's queued.max.messages.kbytes
	 * (in bytes) and queued.min.messages, the thresholds over which its
	 * broker thread stops fetching this partition (wake_fetch) */
	uint64_t prefetch_bytes;
	uint64_t prefetch_msgs;
	/* thread only: value bytes and messages taken from the queue since it
	 * was last seen empty, or since the last wake_fetch request (the most
	 * the queue can have held in that time) */
	uint64_t run_bytes;
	uint64_t run_msgs;
	int nwriters;
	struct park *bells;
	int exit_at_eof;
	pthread_t thread;
	int started;

	struct ring **rings;            /* [nwriters], this thread produces */
	struct k2mc_watermark *wm;      /* window owned by this thread */
	/* parked on by this thread when a ring or the window is full;
	 * writers notify it after releasing slots or acknowledging */
	struct park space;
	/* immutable after k2mc_part_new (NULL: no byte bound) */
	struct k2mc_budget *budget;
	/* the thread's credit from budget, spent per record (thread only,
	 * opened and closed by it; given back before it parks, on an idle
	 * fetch and when it ends) */
	struct k2mc_credit credit;
	/* thread only: running average of k2mc_record_bytes, 0 = none yet */
	uint64_t avg_bytes;
	/* immutable after k2mc_part_new: the installed mapping when its key
	 * template needs the consumer to produce each record's Memcached key
	 * (it routes on that key, and hands it to the writer); NULL when
	 * routing on the record key is enough (mapping.h) */
	const struct k2mc_mapping *map;
	/* thread only: said once that a prepared key found no memory */
	int nomem_said;
	/* thread only: its decoding context when the key template reads an
	 * Avro key or value (made on first need, freed when the thread ends) */
	struct k2mc_decode_ctx *dec;
	int dec_in_key; /* the last decode's failure was the key's */

	/* main -> thread: stop fetching (release), read with acquire */
	_Atomic int stop;
	/* main -> thread: drain deadline, written before stop (ordered by it) */
	int64_t deadline_ms;
	/* main -> writers: drop batches holding our records (release/acquire) */
	_Atomic int abandoned;
	/* writers / the dead letter thread -> everyone: the lowest offset that
	 * must never be acknowledged, INT64_MAX if none (CAS to the minimum,
	 * relaxed: it only ever narrows what may be acknowledged, and the
	 * writer that sets it does not acknowledge that record whatever order
	 * the others see it in) */
	_Atomic int64_t failed_at;
	/* immutable after k2mc_part_new */
	uint64_t uid;
	/* thread -> main: at end of partition and all acknowledged (release/acquire) */
	_Atomic int done;
	/* thread -> anyone: records consumed (relaxed counter) */
	_Atomic uint64_t consumed;
	/* thread -> anyone: records lost to retention (relaxed counter) */
	_Atomic uint64_t lost;
	/* thread -> main after join: records still unacknowledged */
	uint64_t left;
	/* see consumer.h */
	_Atomic int64_t committed;
};

/* Set from a signal handler (a second SIGINT/SIGTERM), read by draining
 * consumer threads: lock-free atomics are async-signal-safe. Relaxed: a
 * drain that sees it one park later is still prompt. */
static _Atomic int hurry;

void k2mc_parts_hurry(void)
{
	atomic_store_explicit(&hurry, 1, memory_order_relaxed);
}

int k2mc_parts_hurried(void)
{
	return atomic_load_explicit(&hurry, memory_order_relaxed);
}

/* k2mc_part_uid: 0 is never handed out */
static _Atomic uint64_t next_uid = 1;

static uint32_t next_pow2(uint64_t v)
{
	uint64_t p = 2;

	while (p < v)
		p <<= 1;
	return p > (1u << 30) ? (1u << 30) : (uint32_t)p;
}

/* A numeric librdkafka property of rk's configuration, or dflt. */
static uint64_t conf_u64(rd_kafka_t *rk, const char *name, uint64_t dflt)
{
	char v[64];
	size_t n = sizeof(v);
	char *end;
	unsigned long long x;

	if (rd_kafka_conf_get(rd_kafka_conf(rk), name, v, &n) != RD_KAFKA_CONF_OK)
		return dflt;
	x = strtoull(v, &end, 10);
	return end == v ? dflt : (uint64_t)x;
}

struct k2mc_part *k2mc_part_new(rd_kafka_t *rk, const char *topic, int32_t partition,
				const struct k2mc_part_opts *o)
{
	struct k2mc_part *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->topic = strdup(topic);
	p->partition = partition;
	p->rk = rk;
	p->next_offset = -1;
	p->assigned_at = o->committed >= 0 ? o->committed : -1;
	p->expect = p->assigned_at;
	p->prefetch_bytes = conf_u64(rk, "queued.max.messages.kbytes", 65536) * 1024;
	p->prefetch_msgs = conf_u64(rk, "queued.min.messages", 100000);
	p->stall_wake = rd_kafka_version() < K2MC_RDKAFKA_FETCH_BACKOFF;
	p->hold_until_ms = o->hold_until_ms;
	p->nwriters = o->nwriters;
	p->bells = o->bells;
	p->exit_at_eof = o->exit_at_eof;
	p->budget = o->budget;
	p->map = o->map;
	if (p->map != NULL && k2mc_mapping_routes_by_record_key(p->map))
		p->map = NULL;
	p->rings = calloc((size_t)o->nwriters, sizeof(*p->rings));
	/* The window covers every slot of every ring, so a full window
	 * means full rings: one bound, not two. */
	p->wm = k2mc_watermark_new(next_pow2((uint64_t)o->nwriters * o->ring_size), -1);
	if (p->topic == NULL || p->rings == NULL || p->wm == NULL)
		goto fail;
	for (int w = 0; w < o->nwriters; w++) {
		p->rings[w] = ring_new(o->ring_size, 0);
		if (p->rings[w] == NULL)
			goto fail;
	}
	/* Take the partition's own queue and stop librdkafka forwarding it
	 * to the consumer queue: this thread alone reads it, in order. */
	p->queue = rd_kafka_queue_get_partition(rk, topic, partition);
	if (p->queue == NULL)
		goto fail;
	rd_kafka_queue_forward(p->queue, NULL);
	park_init(&p->space);
	atomic_init(&p->committed, -1);
	atomic_init(&p->failed_at, INT64_MAX);
	p->uid = atomic_fetch_add_explicit(&next_uid, 1, memory_order_relaxed);
	return p;
fail:
	k2mc_log_partition(K2MC_LOG_ERR, topic, partition, NULL,
			   "%s [%d]: cannot set up partition state (out of memory or unknown "
			   "partition)",
			   topic, partition);
	k2mc_part_free(p);
	return NULL;
}

const char *k2mc_part_topic(const struct k2mc_part *p)
{
	return p->topic;
}

int32_t k2mc_part_id(const struct k2mc_part *p)
{
	return p->partition;
}

struct ring *k2mc_part_ring(struct k2mc_part *p, int writer)
{
	return p->rings[writer];
}

struct k2mc_budget *k2mc_part_budget(const struct k2mc_part *p)
{
	return p->budget;
}

void k2mc_part_ack(struct k2mc_part *p, uint64_t tag)
{
	k2mc_watermark_ack(p->wm, tag);
}

void k2mc_part_wake(struct k2mc_part *p)
{
	park_notify(&p->space);
}

void k2mc_part_abandon(struct k2mc_part *p)
{
	atomic_store_explicit(&p->abandoned, 1, memory_order_release);
	/* a drain parked on it ends now, not one park later */
	park_notify(&p->space);
}

int k2mc_part_stop_requested(const struct k2mc_part *p)
{
	return atomic_load_explicit(&((struct k2mc_part *)p)->stop, memory_order_acquire);
}

int k2mc_part_abandoned(const struct k2mc_part *p)
{
	return atomic_load_explicit(&((struct k2mc_part *)p)->abandoned, memory_order_acquire);
}

void k2mc_part_fail(struct k2mc_part *p, int64_t offset)
{
	int64_t cur = atomic_load_explicit(&p->failed_at, memory_order_relaxed);

	while (offset < cur &&
	       !atomic_compare_exchange_weak_explicit(&p->failed_at, &cur, offset,
						      memory_order_relaxed, memory_order_relaxed))
		;
	park_notify(&p->space);
	/* a thread waiting for byte credit stops waiting */
	k2mc_budget_kick(p->budget);
}

int64_t k2mc_part_failed_at(const struct k2mc_part *p)
{
	return atomic_load_explicit(&((struct k2mc_part *)p)->failed_at, memory_order_relaxed);
}

uint64_t k2mc_part_uid(const struct k2mc_part *p)
{
	return p->uid;
}

int64_t k2mc_part_watermark(const struct k2mc_part *p)
{
	return k2mc_watermark_get(p->wm);
}

int k2mc_part_done(const struct k2mc_part *p)
{
	return atomic_load_explicit(&((struct k2mc_part *)p)->done, memory_order_acquire);
}

uint64_t k2mc_part_consumed(const struct k2mc_part *p)
{
	return atomic_load_explicit(&((struct k2mc_part *)p)->consumed, memory_order_relaxed);
}

uint64_t k2mc_part_lost(const struct k2mc_part *p)
{
	return atomic_load_explicit(&((struct k2mc_part *)p)->lost, memory_order_relaxed);
}

uint64_t k2mc_part_ring_fill(struct k2mc_part *p)
{
	uint64_t n = 0;

	for (int w = 0; w < p->nwriters; w++)
		n += ring_count(p->rings[w]);
	return n;
}

int64_t k2mc_part_committed(const struct k2mc_part *p)
{
	return atomic_load_explicit(&((struct k2mc_part *)p)->committed, memory_order_relaxed);
}

void k2mc_part_set_committed(struct k2mc_part *p, int64_t off)
{
	atomic_store_explicit(&p->committed, off, memory_order_relaxed);
}

int64_t k2mc_part_assigned_at(const struct k2mc_part *p)
{
	return p->assigned_at;
}

int k2mc_part_holding(const struct k2mc_part *p)
{
	return k2mc_now_ms() < p->hold_until_ms;
}

void k2mc_part_set_released(struct k2mc_part *p)
{
	p->released = 1;
}

int k2mc_part_released(const struct k2mc_part *p)
{
	return p->released;
}

static int stop_requested(struct k2mc_part *p)
{
	return atomic_load_explicit(&p->stop, memory_order_acquire);
}

/* Stop fetching: asked to, or a record of ours must never be acknowledged
 * (nothing fetched after it could be committed anyway). */
static int stopping(struct k2mc_part *p)
{
	return stop_requested(p) || k2mc_part_failed_at(p) != INT64_MAX;
}

static int stopping_cb(void *p)
{
	return stopping(p);
}

/* How many records the next fetch may take: what k2mc_credit_fetch_bytes
 * allows at the average record size; 1 when the budget is full (that one
 * then waits for credit). The first fetch takes one record, to learn the
 * size. */
static size_t fetch_size(struct k2mc_part *p)
{
	uint64_t n;

	if (p->budget == NULL)
		return CONSUME_BATCH;
	if (p->avg_bytes == 0)
		return 1;
	n = k2mc_credit_fetch_bytes(&p->credit) / p->avg_bytes;
	return n < 1 ? 1 : n > CONSUME_BATCH ? CONSUME_BATCH : (size_t)n;
}

/* Up to max records of p's queue: waits up to timeout_ms for the first,
 * then takes only what is queued already. librdkafka's batch call waits
 * until the whole batch is there or its timeout passes, so records that
 * arrive one by one (a database's changes) each waited out the timeout
 * before any was written (perf/FINDINGS.md, issue 26). */
static ssize_t consume_some(struct k2mc_part *p, int timeout_ms, rd_kafka_message_t **msgs,
			    size_t max)
{
	ssize_t n = rd_kafka_consume_batch_queue(p->queue, timeout_ms, msgs, 1), more;

	if (n <= 0 || max <= 1)
		return n;
	more = rd_kafka_consume_batch_queue(p->queue, 0, msgs + 1, max - 1);
	/* an error with a record in hand: the next call reports it */
	return more > 0 ? n + more : n;
}

/* Registers the record with the watermark, blocking while the window is
 * full. Returns its tag, or -1 on stop. Writers are rung before parking: a
 * window waiting on a sleeping writer would never move. */
static int64_t reserve(struct k2mc_part *p, int64_t offset)
{
	int64_t tag = k2mc_watermark_track(p->wm, offset);

	while (tag < 0) {
		k2mc_watermark_advance(p->wm);
		tag = k2mc_watermark_track(p->wm, offset);
		if (tag >= 0 || stopping(p))
			break;
		/* credit unspent while parked would only narrow the others' */
		k2mc_credit_return(&p->credit);
		for (int i = 0; i < p->nwriters; i++)
			park_notify(&p->bells[i]);
		park_prepare(&p->space);
		k2mc_watermark_advance(p->wm);
		tag = k2mc_watermark_track(p->wm, offset);
		if (tag >= 0) {
			park_cancel(&p->space);
			break;
		}
		park_wait(&p->space, PARK_MS);
	}
	return tag;
}

static int push(struct k2mc_part *p, int w, const struct ring_item *it)
{
	while (ring_push(p->rings[w], it) != 0) {
		if (stopping(p))
			return -1;
		k2mc_credit_return(&p->credit);
		park_notify(&p->bells[w]);
		park_prepare(&p->space);
		if (ring_count(p->rings[w]) < ring_size(p->rings[w])) {
			park_cancel(&p->space);
			continue;
		}
		park_wait(&p->space, PARK_MS);
	}
	return 0;
}

static int route(const struct k2mc_part *p, const rd_kafka_message_t *m, uint64_t tag)
{
	/* One key -> one writer: that writer's FIFO keeps the key's records in
	 * offset order. Keyless records cannot be written; any writer will do. */
	if (m->key == NULL || m->key_len == 0)
		return (int)(tag % (uint64_t)p->nwriters);
	return (int)(XXH3_64bits(m->key, m->key_len) % (uint64_t)p->nwriters);
}

/* The key template reads an Avro key or value: rec's key / value become
 * their JSON text (decode.h). 0, an invalid reason (> 0; p->dec_in_key says
 * whose), or -1 when asked to stop meanwhile. A registry that cannot be
 * reached is waited for, the record held (and so every later one of the
 * partition, and the offsets: nothing past it is committed), with a
 * doubling backoff; logged when the wait starts and when it ends. */
static int decode(struct k2mc_part *p, const rd_kafka_message_t *m, struct k2mc_record *rec)
{
	struct k2mc_decoder *d = k2mc_mapping_decoder(p->map);
	int64_t since = 0, backoff = REGISTRY_RETRY_MIN_MS;
	int key, value, r;

	k2mc_mapping_key_reads(p->map, &key, &value);
	key = key && k2mc_decoder_key_avro(d);
	value = value && k2mc_decoder_value_avro(d);
	if (!key && !value)
		return 0;
	for (;;) {
		while (p->dec == NULL && (p->dec = k2mc_decode_ctx_new(d)) == NULL) {
			if (stopping(p))
				return -1;
			nanosleep(&(struct timespec){ 0, NOMEM_RETRY_MS * 1000000L }, NULL);
		}
		r = k2mc_decode_record(p->dec, rec, key, value, &p->dec_in_key);
		if (r != K2MC_DECODE_AGAIN)
			break;
		if (since == 0) {
			since = k2mc_now_ms();
			k2mc_decode_note_wait(d);
			k2mc_log_record(K2MC_LOG_WARN, p->topic, p->partition, m->offset,
					"registry_unreachable",
					"%s [%d] @%lld: the Schema Registry is unreachable (%s); the "
					"partition waits for it, nothing past this record is written "
					"or committed",
					p->topic, p->partition, (long long)m->offset,
					k2mc_decode_explain(p->dec));
		}
		for (int64_t until = k2mc_now_ms() + backoff; k2mc_now_ms() < until;) {
			if (stopping(p))
				return -1;
			nanosleep(&(struct timespec){ 0, PARK_MS * 1000000L }, NULL);
		}
		backoff = backoff * 2 > REGISTRY_RETRY_MAX_MS ? REGISTRY_RETRY_MAX_MS : backoff * 2;
		k2mc_record_of(p->map, (rd_kafka_message_t *)m, rec);
	}
	if (since != 0)
		k2mc_log_record(K2MC_LOG_INFO, p->topic, p->partition, m->offset,
				"registry_unreachable",
				"%s [%d] @%lld: the Schema Registry answers again, after %lld ms",
				p->topic, p->partition, (long long)m->offset,
				(long long)(k2mc_now_ms() - since));
	return r;
}

/* The key template needs the record itself (a JSON field, a header, the
 * value): the Memcached key is produced here, routed on (one Memcached key
 * -> one writer, whatever Kafka keys its records carry), and travels with
 * the record so that the writer does not produce it again. Waits while
 * there is no memory for it; NULL when asked to stop meanwhile. */
static struct k2mc_prepared *prepare(struct k2mc_part *p, rd_kafka_message_t *m, uint64_t *h)
{
	struct k2mc_prepared *pre;
	struct k2mc_record rec;
	int r;

	k2mc_record_of(p->map, m, &rec);
	r = decode(p, m, &rec);
	if (r < 0)
		return NULL;
	while ((pre = r > 0 ? k2mc_mapping_prepare_refused(p->map, m, r, p->dec_in_key, h)
			    : k2mc_mapping_prepare(p->map, m, &rec, h)) == NULL) {
		struct timespec ts = { 0, NOMEM_RETRY_MS * 1000000L };

		if (!p->nomem_said) {
			p->nomem_said = 1;
			k2mc_log_record(K2MC_LOG_WARN, p->topic, p->partition, m->offset, NULL,
					"%s [%d] @%lld: out of memory producing the record's key; "
					"retrying", p->topic, p->partition, (long long)m->offset);
		}
		if (stopping(p))
			return NULL;
		nanosleep(&ts, NULL);
	}
	return pre;
}

/* Owner thread: advances the watermark; 1 when nothing handed out is still
 * waiting to be acknowledged (for a failed partition: nothing below the
 * failed record). */
static int drained(struct k2mc_part *p)
{
	int64_t wm = k2mc_watermark_advance(p->wm);

	return k2mc_watermark_inflight(p->wm) == 0 || wm >= k2mc_part_failed_at(p);
}

/* librdkafka before 2.2 (Debian bookworm's 2.0.2, make RDKAFKA=system)
 * decides whether to fetch a partition only when its
 * broker thread wakes (a response, a request to send, its 1 s timeout):
 * a partition whose queue was over queued.max.messages.kbytes (or
 * queued.min.messages) at that moment is not fetched again when this
 * thread drains the queue, for up to 1 s when no other partition of the
 * broker is being fetched (librdkafka 2.2 added fetch.queue.backoff.ms for
 * it). From 2.2 on, a partition over a threshold is not fetched until
 * that backoff has passed, whatever wakes the broker thread, so this
 * request would be a round trip for nothing: there k2mc sets that backoff
 * short (group.c, prefetch_defaults) and wake_fetch does nothing. That stall is what kept the prefetch large (perf/FINDINGS.md), and
 * the prefetch is memory per partition outside --max-buffer-bytes. So when
 * this thread has emptied the queue and the partition may be in that state,
 * it asks the partition's leader for its end offset: the request wakes that
 * broker's thread, which decides again and fetches. The partition may be
 * in that state when
 * - the broker holds records past the last one fetched (the high watermark
 *   librdkafka cached from the last response): catching up, every response
 *   fills the queue; or
 * - what was taken since the queue was last seen empty reached a threshold:
 *   the queue may have held that much when the broker thread looked, even
 *   with the partition caught up (one large response at the end of a burst);
 *   without this, the records produced next would wait up to 1 s.
 * One round trip, only from a thread with nothing to do. Returns 1 when the
 * request was sent, 0 when the partition cannot be stalled, -1 when it may
 * be but no request was sent (backed off after a failure). */
static int wake_fetch(struct k2mc_part *p)
{
	rd_kafka_topic_partition_list_t *parts;
	rd_kafka_resp_err_t err;
	int64_t lo, hi;

	if (!p->stall_wake || p->next_offset < 0)
		return 0;
	if (p->run_bytes < p->prefetch_bytes && p->run_msgs < p->prefetch_msgs &&
	    (rd_kafka_get_watermark_offsets(p->rk, p->topic, p->partition, &lo, &hi) !=
		     RD_KAFKA_RESP_ERR_NO_ERROR ||
	     hi <= p->next_offset))
		return 0;
	if (k2mc_now_ms() < p->wake_not_before)
		return -1;
	parts = rd_kafka_topic_partition_list_new(1);
	if (parts == NULL)
		return -1;
	/* timestamp -1: the end offset */
	rd_kafka_topic_partition_list_add(parts, p->topic, p->partition)->offset = -1;
	/* Not rd_kafka_query_watermark_offsets: in librdkafka 2.0.2 it waits
	 * for the reply past its timeout (up to socket.timeout.ms) when the
	 * leader is connected but silent, and this thread must answer a stop
	 * or a lost assignment promptly. offsets_for_times keeps its
	 * timeout; a late reply is dropped. The offsets are not needed. */
	err = rd_kafka_offsets_for_times(p->rk, parts, WAKE_TIMEOUT_MS);
	rd_kafka_topic_partition_list_destroy(parts);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		p->wake_not_before = k2mc_now_ms() + WAKE_BACKOFF_MS;
		return -1;
	}
	p->run_bytes = p->run_msgs = 0;
	return 1;
}

/* The offsets jumped from p->expect to `at` (the next record's offset, or
 * the end offset at an end of partition). If the log now starts past
 * p->expect, the records in between were deleted (retention, or
 * DeleteRecords) before this thread read them: librdkafka got
 * OFFSET_OUT_OF_RANGE fetching p->expect and, by auto.offset.reset=earliest
 * (group.c), went on at the log start. They are counted and said once per
 * such reset. Any other gap is one the log itself has (compaction,
 * transaction markers): the log start is at or below p->expect, nothing is
 * counted. The log start is librdkafka's, from the latest fetch response
 * (each carries it; no request is made), read once per batch: *lo is
 * INT64_MIN until then, -1 if librdkafka has none (then nothing is counted).
 * What it cannot tell apart: a gap the log has anyway, met while retention
 * passes records already fetched (this thread within librdkafka's prefetch
 * of the log start), is counted too, at most the gap's width. (Why not
 * librdkafka's own report of the reset: group.c, where auto.offset.reset is
 * set.) */
static void note_gap(struct k2mc_part *p, int64_t at, int64_t *lo)
{
	/* nothing read yet in this assignment: it was to start there */
	int from_commit = p->next_offset < 0 && p->expect == p->assigned_at;
	int64_t hi, upto, n;

	if (*lo == INT64_MIN &&
	    rd_kafka_get_watermark_offsets(p->rk, p->topic, p->partition, lo, &hi) !=
		    RD_KAFKA_RESP_ERR_NO_ERROR)
		*lo = -1;
	if (*lo <= p->expect)
		return;
	/* a record delivered below a log start that moved on since is still
	 * there: only what lies before the first of them is gone */
	upto = *lo < at ? *lo : at;
	n = upto - p->expect;
	atomic_fetch_add_explicit(&p->lost, (uint64_t)n, memory_order_relaxed);
	k2mc_log_record(K2MC_LOG_WARN, p->topic, p->partition, p->expect, "RETENTION",
			"%s [%d]: %lld record(s) lost to retention: %s offset %lld is no longer in "
			"the log, which starts at %lld; resumed at %lld",
			p->topic, p->partition, (long long)n,
			from_commit ? "committed" : "next", (long long)p->expect,
			(long long)*lo, (long long)at);
}

static void *consumer_main(void *arg)
{
	struct k2mc_part *p = arg;
	rd_kafka_message_t *msgs[CONSUME_BATCH];
	int64_t eof_offset = -1;
	uint64_t fetch_errors = 0;
	/* records librdkafka handed out again, below one already handed out */
	uint64_t redelivered = 0;
	/* the last batch emptied the queue and wake_fetch sent its request */
	int woke = 0;
	char name[16];

	snprintf(name, sizeof(name), "k2mc-c/%d", p->partition);
	pthread_setname_np(pthread_self(), name);
	k2mc_credit_open(&p->credit, p->budget);
	/* a takeover: nothing is handed out while the previous owner may
	 * still write (its lease); a stop or a lost assignment ends the wait */
	while (!stopping(p) && k2mc_now_ms() < p->hold_until_ms) {
		int64_t left = p->hold_until_ms - k2mc_now_ms();

		nanosleep(&(struct timespec){ 0, (left < PARK_MS ? left : PARK_MS) * 1000000L }, NULL);
	}

	while (!stopping(p)) {
		size_t want = fetch_size(p);
		/* just woken after a drain: its fetch is on the way */
		ssize_t n = consume_some(p, woke || !p->stall_wake ? CONSUME_TIMEOUT_MS : WAKE_AFTER_MS,
					 msgs, want);
		uint8_t rung[256] = { 0 };
		uint64_t got = 0, bytes = 0;
		/* the log start, for note_gap: read at most once per batch */
		int64_t lo = INT64_MIN;
		ssize_t i;

		if (n == 0 && !woke && p->stall_wake && !stopping(p)) {
			(void)wake_fetch(p);
			n = consume_some(p, CONSUME_TIMEOUT_MS, msgs, want);
		}
		if (n < 0) {
			k2mc_log_partition(K2MC_LOG_ERR, p->topic, p->partition,
					   rd_kafka_err2name(rd_kafka_last_error()),
					   "%s [%d]: consume failed: %s", p->topic, p->partition,
					   rd_kafka_err2str(rd_kafka_last_error()));
			n = 0;
		}
		p->run_msgs += (uint64_t)n;
		for (i = 0; i < n; i++) {
			rd_kafka_message_t *m = msgs[i];
			struct k2mc_prepared *pre;
			struct ring_item it;
			uint64_t need;
			int64_t tag;
			int w;

			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				eof_offset = m->offset;
				/* (-e) retention may have left no record past the
				 * lost ones to show the gap */
				if (p->expect >= 0 && m->offset > p->expect)
					note_gap(p, m->offset, &lo);
				if (m->offset > p->expect)
					p->expect = m->offset;
				rd_kafka_message_destroy(m);
				continue;
			}
			if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
				/* librdkafka retries fetch errors itself; log the
				 * first and then every 1000th, never per record */
				if (fetch_errors++ % 1000 == 0)
					k2mc_log_record(K2MC_LOG_WARN, p->topic, p->partition,
							m->offset, rd_kafka_err2name(m->err),
							"%s [%d]: fetch error: %s (%llu so far)",
							p->topic, p->partition,
							rd_kafka_message_errstr(m),
							(unsigned long long)fetch_errors);
				rd_kafka_message_destroy(m);
				continue;
			}
			p->run_bytes += m->len;
			if (m->offset < p->next_offset) {
				/* librdkafka 2.0.2 can deliver a range again within
				 * one assignment (a fetch response of the old leader
				 * and one of the new racing after a leader change,
				 * seen under injected NOT_LEADER errors and a broker
				 * down). This thread has handed those records out
				 * already: handing them out again would write older
				 * values over newer ones and track offsets behind the
				 * window. A consumer's position only moves forward
				 * (as a Java consumer's does without a seek); a new
				 * assignment starts from the committed offsets with a
				 * new partition state. Logged first and every 1000th. */
				if (redelivered++ % 1000 == 0)
					k2mc_log_record(K2MC_LOG_WARN, p->topic, p->partition,
							m->offset, "REDELIVERED",
							"%s [%d]: offset %lld delivered again below "
							"%lld, already handed out: skipped (%llu so far)",
							p->topic, p->partition, (long long)m->offset,
							(long long)p->next_offset,
							(unsigned long long)redelivered);
				rd_kafka_message_destroy(m);
				continue;
			}
			if (eof_offset >= 0) {
				eof_offset = -1;
				atomic_store_explicit(&p->done, 0, memory_order_release);
			}
			if (p->expect >= 0 && m->offset > p->expect)
				note_gap(p, m->offset, &lo);
			else if (p->next_offset < 0 && m->offset < p->expect)
				/* fetching the committed offset got
				 * OFFSET_OUT_OF_RANGE above the log end, and
				 * librdkafka went on at the log start */
				k2mc_log_record(K2MC_LOG_WARN, p->topic, p->partition, p->expect,
						"OFFSET_OUT_OF_RANGE",
						"%s [%d]: committed offset %lld is past the end of the "
						"log (recreated or truncated); resumed at its oldest "
						"record, %lld",
						p->topic, p->partition, (long long)p->expect,
						(long long)m->offset);
			p->expect = m->offset + 1;
			p->next_offset = m->offset + 1;
			/* with the key it travels with, when the consumer
			 * produces it (the writer gives both back) */
			need = k2mc_record_bytes(m) + (p->map ? k2mc_prepared_bytes(p->map) : 0);
			if (p->credit.left < need && p->budget != NULL) {
				/* the refill may wait for writers to give bytes
				 * back: what this batch handed out is theirs */
				for (int k = 0; k < p->nwriters; k++)
					if (rung[k & 255])
						park_notify(&p->bells[k]);
			}
			if (k2mc_credit_spend(&p->credit, need, stopping_cb, p) != 0)
				break;
			tag = reserve(p, m->offset);
			if (tag < 0) {
				k2mc_credit_unspend(&p->credit, need);
				break;
			}
			it.ptr = m;
			it.tag = (uint64_t)tag;
			pre = NULL;
			if (p->map == NULL) {
				w = route(p, m, it.tag);
			} else {
				uint64_t h;

				pre = prepare(p, m, &h);
				if (pre == NULL) {
					k2mc_watermark_untrack_last(p->wm);
					k2mc_credit_unspend(&p->credit, need);
					break;
				}
				it.ptr = k2mc_item_wrap(pre);
				w = (int)((h == UINT64_MAX ? it.tag : h) % (uint64_t)p->nwriters);
			}
			if (push(p, w, &it) != 0) {
				/* Tracked but never handed out: forget it, so the
				 * drain does not wait for it and the watermark
				 * stays at or below it. */
				k2mc_watermark_untrack_last(p->wm);
				k2mc_credit_unspend(&p->credit, need);
				k2mc_prepared_free(pre);
				break;
			}
			rung[w & 255] = 1;
			got++;
			bytes += need;
		}
		/* Records not handed out because of a stop go back to librdkafka
		 * (destroyed); the watermark never passed them. */
		for (; i < n; i++)
			rd_kafka_message_destroy(msgs[i]);
		if (got > 0) {
			uint64_t avg = bytes / got;

			atomic_fetch_add_explicit(&p->consumed, got, memory_order_relaxed);
			for (int w = 0; w < p->nwriters; w++) {
				if (rung[w & 255])
					park_notify(&p->bells[w]);
			}
			p->avg_bytes = p->avg_bytes == 0 ? avg : (3 * p->avg_bytes + avg) / 4;
		} else {
			/* idle (or stopping): credit is for partitions
			 * that have records */
			k2mc_credit_return(&p->credit);
		}
		/* took all the queue had: let the broker fetch the next
		 * response while the writers work on this one */
		woke = 0;
		if (n > 0 && (size_t)n < want && !stopping(p) &&
		    rd_kafka_queue_length(p->queue) == 0) {
			int r = wake_fetch(p);

			woke = r > 0;
			/* seen empty, and never over a threshold since it was
			 * last: a new run starts */
			if (r == 0)
				p->run_bytes = p->run_msgs = 0;
		}
		k2mc_watermark_advance(p->wm);
		if (eof_offset >= 0 && p->exit_at_eof && k2mc_watermark_inflight(p->wm) == 0) {
			k2mc_watermark_skip_to(p->wm, eof_offset);
			if (k2mc_watermark_advance(p->wm) == eof_offset)
				atomic_store_explicit(&p->done, 1, memory_order_release);
		}
	}
	/* nothing more is handed out: unspent credit is anyone's */
	k2mc_credit_close(&p->credit);
	k2mc_decode_ctx_free(p->dec);
	p->dec = NULL;

	/* Drain: everything handed out must be acknowledged before the owner
	 * may commit, or the deadline passes and the watermark stays put. A
	 * failed partition (k2mc_part_fail) is drained up to the failed record
	 * only: nothing at or past it will ever be acknowledged. It can get
	 * here before main asks it to stop; it keeps advancing the watermark
	 * (so acknowledgements below the failed record still count) until
	 * then, and p->deadline_ms is only valid once the stop is seen. An
	 * abandoned partition's records are dropped by the writers, so its
	 * drain waits for nothing (the committer abandons a draining
	 * partition once a commit shows the group no longer counts this
	 * member). */
	for (;;) {
		if (drained(p) && stop_requested(p))
			break;
		if (stop_requested(p) && (k2mc_now_ms() >= p->deadline_ms || k2mc_parts_hurried() ||
					  k2mc_part_abandoned(p)))
			break;
		for (int w = 0; w < p->nwriters; w++)
			park_notify(&p->bells[w]);
		park_prepare(&p->space);
		if (drained(p) && stop_requested(p)) {
			park_cancel(&p->space);
			break;
		}
		park_wait(&p->space, PARK_MS);
	}
	p->left = k2mc_watermark_inflight(p->wm);
	return NULL;
}

int k2mc_part_start(struct k2mc_part *p)
{
	int rc = pthread_create(&p->thread, NULL, consumer_main, p);

	if (rc != 0) {
		k2mc_log_partition(K2MC_LOG_ERR, p->topic, p->partition, NULL,
				   "%s [%d]: cannot start consumer thread: %s", p->topic, p->partition,
				   strerror(rc));
		return -rc;
	}
	p->started = 1;
	return 0;
}

void k2mc_part_request_stop(struct k2mc_part *p, int64_t deadline_ms)
{
	p->deadline_ms = deadline_ms;
	atomic_store_explicit(&p->stop, 1, memory_order_release);
	rd_kafka_queue_yield(p->queue);
	park_notify(&p->space);
	k2mc_budget_kick(p->budget);
}

uint64_t k2mc_part_join(struct k2mc_part *p)
{
	if (p->started) {
		pthread_join(p->thread, NULL);
		p->started = 0;
	}
	return p->left;
}

void k2mc_part_free(struct k2mc_part *p)
{
	struct ring_item it;
	uint64_t bytes = 0;

	if (p == NULL)
		return;
	for (int w = 0; p->rings != NULL && w < p->nwriters; w++) {
		if (p->rings[w] == NULL)
			continue;
		/* Records nobody will write: their offsets were never passed
		 * by the watermark, so they will be consumed again. */
		while (ring_peek(p->rings[w], &it, 1) == 1) {
			rd_kafka_message_t *m = k2mc_item_record(it.ptr);

			bytes += k2mc_record_bytes(m);
			if (k2mc_item_prepared(it.ptr) != NULL)
				bytes += k2mc_prepared_bytes(p->map);
			rd_kafka_message_destroy(m);
			k2mc_prepared_free(k2mc_item_prepared(it.ptr));
			ring_release(p->rings[w], 1);
		}
		ring_free(p->rings[w]);
	}
	/* the thread gave back its own credit when it ended */
	k2mc_budget_release(p->budget, bytes);
	if (p->queue != NULL)
		rd_kafka_queue_destroy(p->queue);
	k2mc_watermark_free(p->wm);
	free(p->rings);
	free(p->topic);
	free(p);
}

/* ---- the partition's view (partitions.h) -------------------------------------- */

void k2mc_part_view(struct k2mc_part *p, struct k2mc_part_view *v)
{
	int64_t lo = -1, hi = -1;

	v->topic = p->topic;
	v->partition = p->partition;
	v->consumed = k2mc_part_consumed(p);
	v->lost = k2mc_part_lost(p);
	v->committed = k2mc_part_committed(p);
	v->watermark = k2mc_part_watermark(p);
	v->ring_fill = k2mc_part_ring_fill(p);
	/* librdkafka's cached values from fetch responses: no request is made */
	if (rd_kafka_get_watermark_offsets(p->rk, p->topic, p->partition, &lo, &hi) !=
	    RD_KAFKA_RESP_ERR_NO_ERROR)
		lo = hi = -1;
	v->log_start = lo >= 0 ? lo : -1;
	v->end = hi >= 0 ? hi : -1;
}
