/* Dead letter producer; see dlq.h. Writers produce (rd_kafka_producev is
 * thread-safe); the k2mc-dlq thread alone polls, so every delivery report,
 * and with it every acknowledgement of a dead-lettered record, runs there. */
#include "workers/dlq.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu.h>

#include "core/log.h"
#include "core/counters.h"

#define POLL_MS 100
#define QUEUE_FULL_WAIT_MS 10

/* What a delivery report needs to acknowledge the source record: the part
 * may have been revoked and freed meanwhile, so it is looked up again by
 * uid in the current table before anything touches it. */
struct letter {
	struct k2mc_part *p;
	uint64_t uid, tag;
	int64_t offset;
	int32_t partition;
	enum k2mc_map_reason reason;
	char topic[];
};

struct k2mc_dlq {
	const struct k2mc_config *cfg;
	k2mc_table_ref *table;
	rd_kafka_t *rk;
	pthread_t thread;
	int started;
	/* main -> thread: flush for this long, purge, and end (release/acquire) */
	_Atomic int stop;
	int flush_ms;
	/* thread only (delivery reports), read by anyone */
	k2mc_counter delivered[K2MC_MAP_NREASONS];
	/* writers, read by anyone (rare: one per dead letter) */
	_Atomic uint64_t sent;
	/* thread: first failed delivery claims it (exchange), writes the
	 * message, publishes it with release; readers acquire */
	_Atomic int fatal_claimed;
	_Atomic int fatal_ready;
	char fatal_msg[512];
	/* after stop: purged copies are not failures */
	int purging;
};

/* Returns 1 for the call that set the message (the first). */
static int set_fatal(struct k2mc_dlq *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_fatal(struct k2mc_dlq *d, const char *fmt, ...)
{
	va_list ap;

	if (atomic_exchange_explicit(&d->fatal_claimed, 1, memory_order_relaxed))
		return 0;
	va_start(ap, fmt);
	vsnprintf(d->fatal_msg, sizeof(d->fatal_msg), fmt, ap);
	va_end(ap);
	atomic_store_explicit(&d->fatal_ready, 1, memory_order_release);
	return 1;
}

/* The part the letter came from, if it is still assigned. Caller holds the
 * table's read lock. */
static struct k2mc_part *find_part(struct k2mc_part_table *t, const struct letter *l)
{
	for (size_t i = 0; t != NULL && i < t->n; i++) {
		if (t->parts[i] == l->p && k2mc_part_uid(t->parts[i]) == l->uid)
			return t->parts[i];
	}
	return NULL;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct k2mc_dlq *d = opaque;
	struct letter *l = m->_private;
	struct k2mc_part_table *t;
	struct k2mc_part *p;

	(void)rk;
	if (l == NULL)
		return;
	t = k2mc_table_read_lock(d->table);
	p = find_part(t, l);
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		k2mc_count(&d->delivered[l->reason], 1);
		/* revoked meanwhile: the offset was left uncommitted and the
		 * record will be consumed, and dead-lettered, again */
		if (p != NULL) {
			k2mc_part_ack(p, l->tag);
			k2mc_part_wake(p);
		}
	} else if (!d->purging) {
		/* main logs the first (the fatal message); the rest are counted
		 * as undelivered in the exit line */
		set_fatal(d, "dead letter topic %s: delivery of %s [%d] @%" PRId64 " failed: %s; "
			  "stopping, nothing at or past this offset is committed",
			  d->cfg->dlq_topic, l->topic, l->partition, l->offset,
			  rd_kafka_err2str(m->err));
		if (p != NULL)
			k2mc_part_fail(p, l->offset);
	}
	k2mc_table_read_unlock(d->table);
	free(l);
}

/* librdkafka logs through us: -X properties meant for the consumer are
 * reported by a producer as ignored (CONFWARN), which is expected here. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	k2mc_log_kafka("kafka (dead letters)", level <= 4 && strcmp(fac, "CONFWARN") != 0 ? level : 7,
		       fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct k2mc_dlq *d = opaque;
	char buf[512];

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		rd_kafka_fatal_error(rk, buf, sizeof(buf));
		set_fatal(d, "dead letter producer: fatal Kafka error: %s", buf);
		return;
	}
	k2mc_log_reason(K2MC_LOG_DEBUG, rd_kafka_err2name((rd_kafka_resp_err_t)err),
			"kafka (dead letters): %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err),
			reason);
}

int k2mc_dlq_wanted(const struct k2mc_config *cfg)
{
	return cfg->dlq_topic != NULL &&
	       (cfg->on_invalid == K2MC_INVALID_DLQ || cfg->on_invalid == K2MC_INVALID_HASH);
}

rd_kafka_conf_t *k2mc_dlq_conf(const struct k2mc_config *cfg, char *err, size_t errlen)
{
	/* then the consumer's -X properties: security settings apply to both */
	const char *const own[] = { "bootstrap.servers", cfg->brokers, "client.id", "k2mc-dlq",
				    NULL };

	return k2mc_config_rdkafka(cfg, "dead letter producer", own, err, errlen);
}

struct k2mc_dlq *k2mc_dlq_new(const struct k2mc_config *cfg, k2mc_table_ref *table, char *err,
			      size_t errlen)
{
	struct k2mc_dlq *d = calloc(1, sizeof(*d));
	rd_kafka_conf_t *conf = NULL;
	char e[512];

	if (d == NULL) {
		snprintf(err, errlen, "dead letter producer: out of memory");
		goto fail;
	}
	d->cfg = cfg;
	d->table = table;
	conf = k2mc_dlq_conf(cfg, err, errlen);
	if (conf == NULL)
		goto fail;
	rd_kafka_conf_set_opaque(conf, d);
	rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
	rd_kafka_conf_set_log_cb(conf, log_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	d->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
	if (d->rk == NULL) {
		snprintf(err, errlen, "cannot create the dead letter producer: %s", e);
		goto fail;
	}
	return d;
fail:
	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	free(d);
	return NULL;
}

static void *dlq_main(void *arg)
{
	struct k2mc_dlq *d = arg;

	pthread_setname_np(pthread_self(), "k2mc-dlq");
	rcu_register_thread();
	while (!atomic_load_explicit(&d->stop, memory_order_acquire))
		rd_kafka_poll(d->rk, POLL_MS);
	if (d->flush_ms > 0)
		rd_kafka_flush(d->rk, d->flush_ms);
	d->purging = 1;
	rd_kafka_purge(d->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	/* purged copies report back through the same callback, at once */
	for (int i = 0; i < 10 && rd_kafka_outq_len(d->rk) > 0; i++)
		rd_kafka_poll(d->rk, POLL_MS / 2);
	rcu_unregister_thread();
	return NULL;
}

int k2mc_dlq_start(struct k2mc_dlq *d)
{
	int rc = pthread_create(&d->thread, NULL, dlq_main, d);

	if (rc != 0) {
		k2mc_err("cannot start the dead letter thread: %s", strerror(rc));
		return -rc;
	}
	d->started = 1;
	return 0;
}

static int add_header(rd_kafka_headers_t *h, const char *name, const char *val)
{
	return rd_kafka_header_add(h, name, -1, val, -1) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -ENOMEM;
}

int k2mc_dlq_send(struct k2mc_dlq *d, struct k2mc_part *p, uint64_t tag, rd_kafka_message_t *m,
		  enum k2mc_map_reason r, const char *detail, _Atomic int *give_up)
{
	const char *topic = rd_kafka_topic_name(m->rkt);
	size_t tlen = strlen(topic);
	struct letter *l = malloc(sizeof(*l) + tlen + 1);
	rd_kafka_headers_t *src = NULL, *h;
	rd_kafka_timestamp_type_t tstype;
	int64_t ts = rd_kafka_message_timestamp(m, &tstype);
	rd_kafka_resp_err_t err;
	char part[16], off[24];

	if (l == NULL)
		goto nomem;
	l->p = p;
	l->uid = k2mc_part_uid(p);
	l->tag = tag;
	l->offset = m->offset;
	l->partition = m->partition;
	l->reason = r;
	memcpy(l->topic, topic, tlen + 1);
	h = rd_kafka_message_headers(m, &src) == RD_KAFKA_RESP_ERR_NO_ERROR
		    ? rd_kafka_headers_copy(src)
		    : rd_kafka_headers_new(5);
	snprintf(part, sizeof(part), "%" PRId32, m->partition);
	snprintf(off, sizeof(off), "%" PRId64, m->offset);
	if (h == NULL || add_header(h, K2MC_DLQ_H_REASON, k2mc_map_reason_name(r)) ||
	    add_header(h, K2MC_DLQ_H_TOPIC, topic) || add_header(h, K2MC_DLQ_H_PARTITION, part) ||
	    add_header(h, K2MC_DLQ_H_OFFSET, off) || add_header(h, K2MC_DLQ_H_MESSAGE, detail)) {
		if (h != NULL)
			rd_kafka_headers_destroy(h);
		free(l);
		goto nomem;
	}
	for (;;) {
		/* F_COPY: the consumed record is freed when its batch ends,
		 * long before the copy is delivered */
		err = rd_kafka_producev(d->rk, RD_KAFKA_V_TOPIC(d->cfg->dlq_topic),
					RD_KAFKA_V_KEY(m->key, m->key_len),
					RD_KAFKA_V_VALUE(m->payload, m->len),
					RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					RD_KAFKA_V_TIMESTAMP(ts > 0 ? ts : 0), RD_KAFKA_V_HEADERS(h),
					RD_KAFKA_V_OPAQUE(l), RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		/* backpressure: the k2mc-dlq thread's polls make room */
		if (give_up != NULL && atomic_load_explicit(give_up, memory_order_acquire)) {
			rd_kafka_headers_destroy(h);
			free(l);
			return -ECANCELED;
		}
		nanosleep(&(struct timespec){ 0, QUEUE_FULL_WAIT_MS * 1000000L }, NULL);
	}
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		/* on failure the headers are still ours */
		rd_kafka_headers_destroy(h);
		free(l);
		set_fatal(d, "dead letter topic %s: cannot produce the copy of %s [%d] @%" PRId64
			  ": %s; stopping, nothing at or past this offset is committed",
			  d->cfg->dlq_topic, topic, m->partition, m->offset, rd_kafka_err2str(err));
		k2mc_part_fail(p, m->offset);
		return -EIO;
	}
	atomic_fetch_add_explicit(&d->sent, 1, memory_order_relaxed);
	return 0;
nomem:
	set_fatal(d, "dead letter topic %s: out of memory copying %s [%d] @%" PRId64
		  "; stopping, nothing at or past this offset is committed",
		  d->cfg->dlq_topic, topic, m->partition, m->offset);
	k2mc_part_fail(p, m->offset);
	return -ENOMEM;
}

const char *k2mc_dlq_fatal(struct k2mc_dlq *d)
{
	return atomic_load_explicit(&d->fatal_ready, memory_order_acquire) ? d->fatal_msg : NULL;
}

const char *k2mc_dlq_topic(const struct k2mc_dlq *d)
{
	return d->cfg->dlq_topic;
}

uint64_t k2mc_dlq_delivered(struct k2mc_dlq *d, enum k2mc_map_reason r)
{
	return (unsigned)r < K2MC_MAP_NREASONS ? k2mc_read(&d->delivered[r]) : 0;
}

uint64_t k2mc_dlq_sent(struct k2mc_dlq *d)
{
	return atomic_load_explicit(&d->sent, memory_order_relaxed);
}

void k2mc_dlq_stop(struct k2mc_dlq *d, int flush_ms)
{
	if (d == NULL || !d->started)
		return;
	d->flush_ms = flush_ms;
	atomic_store_explicit(&d->stop, 1, memory_order_release);
	pthread_join(d->thread, NULL);
	d->started = 0;
}

void k2mc_dlq_free(struct k2mc_dlq *d)
{
	if (d == NULL)
		return;
	k2mc_dlq_stop(d, 0);
	if (d->rk != NULL)
		rd_kafka_destroy(d->rk);
	free(d);
}
