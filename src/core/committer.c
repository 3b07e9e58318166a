/* Periodic asynchronous commits of watermarks; see committer.h. Results come
 * back through the offset_commit_cb that the main thread serves. */
#include "core/committer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "core/log.h"
#include "ring/park.h"

struct k2mc_committer {
	rd_kafka_t *rk;
	k2mc_table_ref *table;
	int interval_ms;
	pthread_t thread;
	struct park bell;
	/* main -> committer: stop (release/acquire) */
	_Atomic int stop;
	/* main (commit callback) -> committer: recommit everything (relaxed;
	 * a lost race only delays the recommit by one interval) */
	_Atomic int force;
};

rd_kafka_resp_err_t k2mc_commit_parts(rd_kafka_t *rk, struct k2mc_part **parts, size_t n,
				      int async, int force)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (size_t i = 0; i < n; i++) {
		int64_t wm = k2mc_part_watermark(parts[i]);

		if (wm < 0 || (!force && wm == k2mc_part_committed(parts[i])))
			continue;
		rd_kafka_topic_partition_list_add(l, k2mc_part_topic(parts[i]),
						  k2mc_part_id(parts[i]))->offset = wm;
		k2mc_part_set_committed(parts[i], wm);
	}
	if (l->cnt > 0) {
		err = rd_kafka_commit(rk, l, async);
		if (!async && err != RD_KAFKA_RESP_ERR_NO_ERROR)
			k2mc_err("synchronous commit of %d partitions failed: %s", l->cnt,
				 rd_kafka_err2str(err));
	}
	rd_kafka_topic_partition_list_destroy(l);
	return err;
}

static void *committer_main(void *arg)
{
	struct k2mc_committer *c = arg;

	pthread_setname_np(pthread_self(), "k2mc-commit");
	rcu_register_thread();
	for (;;) {
		int64_t until = k2mc_now_ms() + c->interval_ms;
		struct k2mc_part_table *t;

		while (!atomic_load_explicit(&c->stop, memory_order_acquire) && k2mc_now_ms() < until) {
			park_prepare(&c->bell);
			if (atomic_load_explicit(&c->stop, memory_order_acquire)) {
				park_cancel(&c->bell);
				break;
			}
			park_wait(&c->bell, (int)(until - k2mc_now_ms() > 0 ? until - k2mc_now_ms() : 1));
		}
		if (atomic_load_explicit(&c->stop, memory_order_acquire))
			break;
		/* The read lock spans the commit call: a revoke's grace period
		 * then orders this async commit before its synchronous one. */
		t = k2mc_table_read_lock(c->table);
		if (t != NULL && t->n > 0) {
			int force = atomic_exchange_explicit(&c->force, 0, memory_order_relaxed);
			rd_kafka_resp_err_t err = k2mc_commit_parts(c->rk, t->parts, t->n, 1, force);

			if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
				k2mc_warn("async commit not sent: %s", rd_kafka_err2str(err));
				atomic_store_explicit(&c->force, 1, memory_order_relaxed);
			}
		}
		k2mc_table_read_unlock(c->table);
	}
	rcu_unregister_thread();
	return NULL;
}

struct k2mc_committer *k2mc_committer_start(rd_kafka_t *rk, k2mc_table_ref *table,
					     int interval_ms)
{
	struct k2mc_committer *c = calloc(1, sizeof(*c));
	int rc;

	if (c == NULL)
		return NULL;
	c->rk = rk;
	c->table = table;
	c->interval_ms = interval_ms;
	park_init(&c->bell);
	rc = pthread_create(&c->thread, NULL, committer_main, c);
	if (rc != 0) {
		k2mc_err("cannot start the commit thread: %s", strerror(rc));
		free(c);
		return NULL;
	}
	return c;
}

void k2mc_committer_force(struct k2mc_committer *c)
{
	atomic_store_explicit(&c->force, 1, memory_order_relaxed);
}

void k2mc_committer_stop(struct k2mc_committer *c)
{
	if (c == NULL)
		return;
	atomic_store_explicit(&c->stop, 1, memory_order_release);
	park_notify(&c->bell);
	pthread_join(c->thread, NULL);
	free(c);
}
