/* Group membership and rebalances; see group.h. Everything here runs on the
 * main thread, inside rd_kafka_consumer_poll's callbacks or between polls. */
#include "core/group.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu.h>

#include "core/log.h"

/* synchronous commits of released partitions: attempts, and the wait
 * between two */
#define COMMIT_ATTEMPTS 4
#define COMMIT_RETRY_MS 500
/* no -X socket.connection.setup.timeout.ms: librdkafka's default, 30 s */
#define BROKER_CHECK_DEFAULT_MS 30000

struct k2mc_group {
	const struct k2mc_config *cfg;
	rd_kafka_t *rk;
	/* written by the main thread only (k2mc_table_publish), which also reads
	 * it without the read lock; other threads see consumer.h */
	k2mc_table_ref table;
	struct park *bells;
	int nwriters;
	struct k2mc_committer *committer;
	char fatal[512];
	int have_fatal;
	int64_t first_assign_ms;
	/* main thread only */
	int pattern_warned;
	uint64_t consumed_released;
	struct k2mc_released_part *released;
	size_t nreleased, released_cap;
};

/* The main thread is the table's only writer: it reads its own stores. */
static struct k2mc_part_table *own_table(struct k2mc_group *g)
{
	return atomic_load_explicit(&g->table, memory_order_relaxed);
}

/* Remembers a released partition: its committed offset for the summary,
 * and what it consumed, summed over all its assignments. */
static void note_released(struct k2mc_group *g, struct k2mc_part *p)
{
	int64_t off = k2mc_part_committed(p);
	size_t i;

	for (i = 0; i < g->nreleased; i++) {
		if (g->released[i].partition == k2mc_part_id(p) &&
		    strcmp(g->released[i].topic, k2mc_part_topic(p)) == 0)
			break;
	}
	if (i == g->nreleased) {
		if (g->nreleased == g->released_cap) {
			size_t cap = g->released_cap ? g->released_cap * 2 : 16;
			struct k2mc_released_part *n = realloc(g->released, cap * sizeof(*n));

			if (n == NULL)
				return;
			g->released = n;
			g->released_cap = cap;
		}
		g->released[i].topic = strdup(k2mc_part_topic(p));
		g->released[i].partition = k2mc_part_id(p);
		g->released[i].committed = -1;
		g->released[i].consumed = 0;
		if (g->released[i].topic == NULL)
			return;
		g->nreleased++;
	}
	if (off >= 0)
		g->released[i].committed = off;
	g->released[i].consumed += k2mc_part_consumed(p);
}

/* Replaces the published table; the old one is freed after a grace period,
 * when no writer or committer can still be reading it. */
static int publish(struct k2mc_group *g, struct k2mc_part **parts, size_t n)
{
	struct k2mc_part_table *t = malloc(sizeof(*t) + n * sizeof(t->parts[0]));

	if (t == NULL)
		return -ENOMEM;
	t->n = n;
	memcpy(t->parts, parts, n * sizeof(parts[0]));
	free(k2mc_table_publish(&g->table, t));
	return 0;
}

static void set_fatal(struct k2mc_group *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_fatal(struct k2mc_group *g, const char *fmt, ...)
{
	va_list ap;

	if (g->have_fatal)
		return;
	va_start(ap, fmt);
	vsnprintf(g->fatal, sizeof(g->fatal), fmt, ap);
	va_end(ap);
	g->have_fatal = 1;
}

static void on_assign(struct k2mc_group *g, rd_kafka_topic_partition_list_t *tps, int incremental)
{
	struct k2mc_part_opts o = { .nwriters = g->nwriters, .ring_size = g->cfg->ring_size,
				    .bells = g->bells, .exit_at_eof = g->cfg->exit_at_eof };
	struct k2mc_part_table *cur = own_table(g);
	size_t have = cur ? cur->n : 0;
	struct k2mc_part **all = calloc(have + (size_t)tps->cnt + 1, sizeof(*all));
	rd_kafka_error_t *e = NULL;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
	size_t n = have;

	if (all == NULL) {
		set_fatal(g, "out of memory on assignment");
		return;
	}
	if (have)
		memcpy(all, cur->parts, have * sizeof(*all));
	/* Partition queues are taken and detached before the assignment
	 * starts fetching, so no record ever reaches the consumer queue. */
	for (int i = 0; i < tps->cnt; i++) {
		struct k2mc_part *p = k2mc_part_new(g->rk, tps->elems[i].topic,
						    tps->elems[i].partition, &o);

		if (p == NULL) {
			set_fatal(g, "cannot take partition queue of %s [%d]", tps->elems[i].topic,
				  tps->elems[i].partition);
			break;
		}
		all[n++] = p;
	}
	if (incremental)
		e = rd_kafka_incremental_assign(g->rk, tps);
	else
		err = rd_kafka_assign(g->rk, tps);
	if (e != NULL || err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		set_fatal(g, "assign failed: %s", e ? rd_kafka_error_string(e) : rd_kafka_err2str(err));
		if (e)
			rd_kafka_error_destroy(e);
	}
	for (size_t i = have; i < n; i++) {
		if (k2mc_part_start(all[i]) != 0)
			set_fatal(g, "cannot start consumer thread for %s [%d]", k2mc_part_topic(all[i]),
				  k2mc_part_id(all[i]));
	}
	if (publish(g, all, n) != 0)
		set_fatal(g, "out of memory on assignment");
	if (g->first_assign_ms == 0)
		g->first_assign_ms = k2mc_now_ms();
	k2mc_info("assigned %d partition(s), %zu in total", tps->cnt, n);
	free(all);
}

/* The last commit of released parts, synchronous. Every watermark is sent,
 * moved or not: an asynchronous commit of the same offset may have failed
 * after the committer marked it sent. A failure the coordinator may recover
 * from (it moved, it is loading, the request timed out) is tried again. */
static void commit_released(struct k2mc_group *g, struct k2mc_part **gone, size_t ngone)
{
	for (int attempt = 1;; attempt++) {
		rd_kafka_resp_err_t err = k2mc_commit_parts(g->rk, gone, ngone, 0, 1);

		if (err == RD_KAFKA_RESP_ERR_NO_ERROR || attempt == COMMIT_ATTEMPTS ||
		    err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
		    err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
		    err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID || err == RD_KAFKA_RESP_ERR__FATAL)
			return;
		k2mc_warn("commit of %zu released partition(s) failed (%s); trying again", ngone,
			  rd_kafka_err2str(err));
		nanosleep(&(struct timespec){ 0, COMMIT_RETRY_MS * 1000000L }, NULL);
	}
}

/* Stops the given parts (all if tps == NULL), drains them until deadline,
 * unpublishes them, commits synchronously and frees them. */
static uint64_t release(struct k2mc_group *g, rd_kafka_topic_partition_list_t *tps,
			int64_t deadline, void (*on_timeout)(void *), void *arg)
{
	struct k2mc_part_table *cur = own_table(g);
	size_t have = cur ? cur->n : 0, nkeep = 0, ngone = 0;
	struct k2mc_part **keep = calloc(have + 1, sizeof(*keep));
	struct k2mc_part **gone = calloc(have + 1, sizeof(*gone));
	uint64_t left = 0;

	if (keep == NULL || gone == NULL) {
		free(keep);
		free(gone);
		set_fatal(g, "out of memory on revocation");
		return 0;
	}
	for (size_t i = 0; i < have; i++) {
		struct k2mc_part *p = cur->parts[i];

		if (tps == NULL || rd_kafka_topic_partition_list_find(tps, k2mc_part_topic(p),
								      k2mc_part_id(p)) != NULL)
			gone[ngone++] = p;
		else
			keep[nkeep++] = p;
	}
	/* All stop together, then each drains: total wait is one deadline. */
	for (size_t i = 0; i < ngone; i++)
		k2mc_part_request_stop(gone[i], deadline);
	for (size_t i = 0; i < ngone; i++) {
		uint64_t l = k2mc_part_join(gone[i]);

		if (l > 0) {
			int64_t failed_at = k2mc_part_failed_at(gone[i]);

			if (failed_at != INT64_MAX)
				k2mc_warn("%s [%d]: stopped at offset %lld, which must not be "
					  "committed; %llu record(s) from there on left uncommitted",
					  k2mc_part_topic(gone[i]), k2mc_part_id(gone[i]),
					  (long long)failed_at, (unsigned long long)l);
			else
				k2mc_warn("%s [%d]: %llu record(s) not acknowledged by Memcached "
					  "before the deadline; left uncommitted, they will be "
					  "consumed again",
					  k2mc_part_topic(gone[i]), k2mc_part_id(gone[i]),
					  (unsigned long long)l);
			k2mc_part_abandon(gone[i]);
			left += l;
		}
	}
	if (left > 0 && on_timeout != NULL)
		on_timeout(arg);
	/* After this grace period no writer or committer holds a gone part. */
	publish(g, keep, nkeep);
	if (ngone > 0)
		commit_released(g, gone, ngone);
	for (size_t i = 0; i < ngone; i++) {
		note_released(g, gone[i]);
		g->consumed_released += k2mc_part_consumed(gone[i]);
		k2mc_part_free(gone[i]);
	}
	if (ngone > 0)
		k2mc_info("released %zu partition(s), %zu remain", ngone, nkeep);
	free(keep);
	free(gone);
	return left;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *tps, void *opaque)
{
	struct k2mc_group *g = opaque;
	int incremental = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		on_assign(g, tps, incremental);
		return;
	}
	if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
		k2mc_warn("rebalance error: %s; releasing partitions", rd_kafka_err2str(err));
	/* A revocation waits for the writers like a shutdown does. */
	release(g, tps, k2mc_now_ms() + g->cfg->shutdown_timeout_ms, NULL, NULL);
	if (incremental) {
		rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, tps);

		if (e != NULL) {
			k2mc_err("incremental unassign failed: %s", rd_kafka_error_string(e));
			rd_kafka_error_destroy(e);
		}
	} else {
		rd_kafka_assign(rk, NULL);
	}
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
		      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	struct k2mc_group *g = opaque;

	(void)rk;
	if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
		return;
	for (int i = 0; offsets && err == RD_KAFKA_RESP_ERR_NO_ERROR && i < offsets->cnt; i++)
		if (offsets->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR)
			err = offsets->elems[i].err;
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		k2mc_warn("offset commit failed: %s; will commit again", rd_kafka_err2str(err));
		if (g->committer != NULL)
			k2mc_committer_force(g->committer);
	}
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct k2mc_group *g = opaque;
	char buf[512];

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		rd_kafka_fatal_error(rk, buf, sizeof(buf));
		set_fatal(g, "fatal Kafka error: %s", buf);
		return;
	}
	k2mc_warn("kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *val, char *err,
		    size_t errlen)
{
	char e[256];

	if (rd_kafka_conf_set(conf, name, val, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "-X %s=%s: %s", name, val, e);
		return -EINVAL;
	}
	return 0;
}

struct k2mc_group *k2mc_group_new(const struct k2mc_config *cfg, char *err, size_t errlen,
				  int *usage)
{
	struct k2mc_group *g = calloc(1, sizeof(*g));
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512];

	*usage = 0;
	if (g == NULL || conf == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	g->cfg = cfg;
	/* Offsets are ours to commit: only watermarks, never librdkafka's
	 * idea of "consumed". */
	if (conf_set(conf, "bootstrap.servers", cfg->brokers, err, errlen) ||
	    conf_set(conf, "group.id", cfg->group, err, errlen) ||
	    conf_set(conf, "client.id", "k2mc", err, errlen) ||
	    conf_set(conf, "enable.auto.commit", "false", err, errlen) ||
	    conf_set(conf, "enable.auto.offset.store", "false", err, errlen) ||
	    conf_set(conf, "auto.offset.reset", cfg->offset_beginning ? "earliest" : "latest", err,
		     errlen) ||
	    conf_set(conf, "enable.partition.eof", cfg->exit_at_eof ? "true" : "false", err, errlen))
		goto fail;
	for (int i = 0; i < cfg->nxprops; i++) {
		char name[256];
		const char *eq = strchr(cfg->xprops[i], '=');
		size_t nl = (size_t)(eq - cfg->xprops[i]);

		if (nl >= sizeof(name)) {
			snprintf(err, errlen, "-X %s: property name too long", cfg->xprops[i]);
			*usage = 1;
			goto fail;
		}
		memcpy(name, cfg->xprops[i], nl);
		name[nl] = '\0';
		if (conf_set(conf, name, eq + 1, err, errlen) != 0) {
			*usage = 1;
			goto fail;
		}
	}
	rd_kafka_conf_set_opaque(conf, g);
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	g->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
	if (g->rk == NULL) {
		snprintf(err, errlen, "cannot create Kafka consumer: %s", e);
		goto fail;
	}
	conf = NULL;
	rd_kafka_poll_set_consumer(g->rk);
	return g;
fail:
	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	free(g);
	return NULL;
}

k2mc_table_ref *k2mc_group_table(struct k2mc_group *g)
{
	return &g->table;
}

rd_kafka_t *k2mc_group_rk(struct k2mc_group *g)
{
	return g->rk;
}

void k2mc_group_set_writers(struct k2mc_group *g, struct park *bells, int nwriters)
{
	g->bells = bells;
	g->nwriters = nwriters;
}

void k2mc_group_set_committer(struct k2mc_group *g, struct k2mc_committer *c)
{
	g->committer = c;
}

/* At start: librdkafka retries unreachable brokers forever, so without this
 * a wrong -b or a cluster that is down hangs k2mc with nothing but "broker
 * down" warnings. One metadata request must succeed within the connection
 * setup timeout (-X socket.connection.setup.timeout.ms, the time librdkafka
 * itself allows one connection to become usable). */
static int check_brokers(struct k2mc_group *g)
{
	const struct rd_kafka_metadata *md = NULL;
	char val[32];
	size_t vlen = sizeof(val);
	long ms = BROKER_CHECK_DEFAULT_MS;
	rd_kafka_resp_err_t err;

	if (rd_kafka_conf_get(rd_kafka_conf(g->rk), "socket.connection.setup.timeout.ms", val,
			      &vlen) == RD_KAFKA_CONF_OK)
		ms = strtol(val, NULL, 10);
	if (ms <= 0)
		ms = BROKER_CHECK_DEFAULT_MS;
	err = rd_kafka_metadata(g->rk, 0, NULL, &md, (int)ms);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		k2mc_err("no Kafka broker reachable at %s within %ld ms (%s); set -X "
			 "socket.connection.setup.timeout.ms to wait longer",
			 g->cfg->brokers, ms, rd_kafka_err2str(err));
		return -EHOSTUNREACH;
	}
	rd_kafka_metadata_destroy(md);
	return 0;
}

int k2mc_group_subscribe(struct k2mc_group *g)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(g->cfg->ntopics);
	rd_kafka_resp_err_t err;

	if (check_brokers(g) != 0) {
		rd_kafka_topic_partition_list_destroy(l);
		return -EHOSTUNREACH;
	}
	for (int i = 0; i < g->cfg->ntopics; i++)
		rd_kafka_topic_partition_list_add(l, g->cfg->topics[i], RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(g->rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		k2mc_err("subscribe failed: %s", rd_kafka_err2str(err));
		return -EINVAL;
	}
	return 0;
}

void k2mc_group_poll(struct k2mc_group *g, int timeout_ms)
{
	rd_kafka_message_t *m = rd_kafka_consumer_poll(g->rk, timeout_ms);

	if (m == NULL)
		return;
	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		const char *t = m->rkt ? rd_kafka_topic_name(m->rkt) : "subscription";

		if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && t[0] == '^') {
			/* a pattern that matches no topic yet: librdkafka
			 * subscribes to matching topics as they appear */
			if (!g->pattern_warned)
				k2mc_warn("%s: no topic matches yet; waiting for one", t);
			g->pattern_warned = 1;
		} else if (m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
			   m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
			   m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
			set_fatal(g, "%s: %s", t, rd_kafka_message_errstr(m));
		} else {
			k2mc_warn("kafka: %s", rd_kafka_message_errstr(m));
		}
	} else {
		/* Cannot happen while partition queues are detached; if it did,
		 * the record is dropped uncommitted and will be consumed again. */
		k2mc_err("%s [%d] @%lld: record arrived on the consumer queue; not written",
			 rd_kafka_topic_name(m->rkt), m->partition, (long long)m->offset);
	}
	rd_kafka_message_destroy(m);
}

int64_t k2mc_group_first_assign_ms(const struct k2mc_group *g)
{
	return g->first_assign_ms;
}

const char *k2mc_group_fatal(struct k2mc_group *g)
{
	return g->have_fatal ? g->fatal : NULL;
}

int k2mc_group_all_done(struct k2mc_group *g)
{
	struct k2mc_part_table *t = own_table(g);

	if (t == NULL || t->n == 0)
		return 0;
	for (size_t i = 0; i < t->n; i++) {
		if (!k2mc_part_done(t->parts[i]))
			return 0;
	}
	return 1;
}

uint64_t k2mc_group_release_all(struct k2mc_group *g, int64_t deadline_ms,
				void (*on_timeout)(void *), void *arg)
{
	return release(g, NULL, deadline_ms, on_timeout, arg);
}

void k2mc_group_close(struct k2mc_group *g)
{
	if (g == NULL)
		return;
	if (g->rk != NULL) {
		rd_kafka_consumer_close(g->rk);
		rd_kafka_destroy(g->rk);
	}
	for (size_t i = 0; i < g->nreleased; i++)
		free(g->released[i].topic);
	free(g->released);
	free(own_table(g));
	free(g);
}

void k2mc_group_stats(struct k2mc_group *g, struct k2mc_group_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->consumed = g->consumed_released;
	struct k2mc_part_table *t = own_table(g);

	if (t == NULL)
		return;
	s->partitions = t->n;
	for (size_t i = 0; i < t->n; i++) {
		struct k2mc_part *p = t->parts[i];
		int64_t lo, hi, wm = k2mc_part_watermark(p);

		s->consumed += k2mc_part_consumed(p);
		s->ring_fill += k2mc_part_ring_fill(p);
		if (wm >= 0 && rd_kafka_get_watermark_offsets(g->rk, k2mc_part_topic(p), k2mc_part_id(p),
							      &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
		    hi > wm)
			s->lag += hi - wm;
	}
}

void k2mc_group_print_committed(struct k2mc_group *g, FILE *out)
{
	int first = 1;

	for (size_t i = 0; i < g->nreleased; i++) {
		if (g->released[i].committed < 0)
			continue;
		fprintf(out, "%s%s[%d]=%lld", first ? "" : " ", g->released[i].topic,
			g->released[i].partition, (long long)g->released[i].committed);
		first = 0;
	}
}

const struct k2mc_released_part *k2mc_group_released(const struct k2mc_group *g, size_t *n)
{
	*n = g->nreleased;
	return g->released;
}
