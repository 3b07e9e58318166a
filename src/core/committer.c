/* Periodic commits of watermarks, and the membership lease they renew; see
 * committer.h and fence.h. Commit results come back as events on a queue
 * this module owns (rd_kafka_commit_queue + rd_kafka_queue_poll), so a
 * renewal never waits for the main thread, which may be busy draining a
 * revocation for up to --shutdown-timeout-ms. */
#include "core/committer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/takeover.h"

/* While no lease is held, try this often: writers are waiting. */
#define UNLEASED_PERIOD_MS 100
/* Longest single wait on the result queue: bounds how late a stop is seen
 * besides rd_kafka_queue_yield. */
#define POLL_SLICE_MS 100

/* Commit errors by which the coordinator says it does not know this member
 * at all: it was evicted (session or poll interval ran out) or fenced by a
 * newer instance of its group.instance.id. Its partitions belong to others
 * now. ILLEGAL_GENERATION and REBALANCE_IN_PROGRESS are not here: they are
 * also what a member that is still in the group meets during a rebalance. */
static const rd_kafka_resp_err_t evicted_errs[] = {
	RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
	RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID,
};

/* One commit in flight: what its result proves (fence.h) and whose offsets
 * it carries. Linked into the committer's list so that a stop can free the
 * ones whose answer never came. */
struct commit_req {
	struct commit_req *next, *prev;
	int64_t sent_at;   /* fence clock, read before the commit is handed over */
	uint64_t gen;      /* fence generation when sent */
	size_t n;
	uint64_t uid[];    /* k2mc_part_uid of each part committed */
};

struct k2mc_committer {
	rd_kafka_t *rk;
	k2mc_table_ref *table;
	struct k2mc_fence *fence;
	int64_t period_ms;
	rd_kafka_queue_t *q;
	pthread_t thread;
	/* committer thread only */
	struct commit_req outstanding;
	int warned;
	/* an eviction was acted on: evicted_gen is the generation its revoke
	 * started, whose commits are refused the same way and prove nothing
	 * new */
	int evicted;
	uint64_t evicted_gen;
	/* main -> committer: stop (release/acquire) */
	_Atomic int stop;
	/* committer -> main, relaxed: reporting only */
	_Atomic int last_err;
	_Atomic uint64_t failures;
};

static int has_uid(const struct commit_req *r, uint64_t uid)
{
	for (size_t i = 0; i < r->n; i++) {
		if (r->uid[i] == uid)
			return 1;
	}
	return 0;
}

/* Builds and hands over one commit of every part with a watermark. Returns
 * the request (the event's opaque), NULL when there was nothing to commit
 * or on error (*err set). */
static struct commit_req *send_commit(rd_kafka_t *rk, rd_kafka_queue_t *q,
				      struct k2mc_part **parts, size_t n,
				      struct k2mc_fence *fence, rd_kafka_resp_err_t *err)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)(n ? n : 1));
	struct commit_req *r = calloc(1, sizeof(*r) + (n ? n : 1) * sizeof(r->uid[0]));

	*err = RD_KAFKA_RESP_ERR_NO_ERROR;
	if (l == NULL || r == NULL) {
		*err = RD_KAFKA_RESP_ERR__FAIL;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		int64_t wm = k2mc_part_watermark(parts[i]);

		/* -1: nothing consumed in this assignment yet. The offset it
		 * started from (its previous owner's commit) is committed again:
		 * that moves nothing, but proves membership (the lease: refill,
		 * and the writers of other partitions, need one while this
		 * partition is idle or in its takeover wait) and records this
		 * member's metadata. No commit at all: nothing to commit. */
		if (wm < 0)
			wm = k2mc_part_assigned_at(parts[i]);
		if (wm < 0)
			continue;
		rd_kafka_topic_partition_t *e = rd_kafka_topic_partition_list_add(
			l, k2mc_part_topic(parts[i]), k2mc_part_id(parts[i]));
		char md[K2MC_TAKEOVER_MD_MAX];

		e->offset = wm;
		/* the next owner reads it (takeover.h); the list frees it */
		k2mc_takeover_metadata(md, sizeof(md), k2mc_part_released(parts[i]),
				       fence != NULL ? k2mc_fence_lease_ms(fence) : 0);
		e->metadata = strdup(md);
		e->metadata_size = e->metadata != NULL ? strlen(md) : 0;
		r->uid[r->n++] = k2mc_part_uid(parts[i]);
	}
	if (l->cnt == 0)
		goto fail;
	/* Read before the hand-over: the real send is later, never earlier,
	 * so the lease measured from here is never too long. */
	r->gen = k2mc_fence_generation(fence);
	r->sent_at = k2mc_now_ms();
	*err = rd_kafka_commit_queue(rk, l, q, NULL, r);
	if (*err != RD_KAFKA_RESP_ERR_NO_ERROR)
		goto fail;
	rd_kafka_topic_partition_list_destroy(l);
	return r;
fail:
	if (l != NULL)
		rd_kafka_topic_partition_list_destroy(l);
	free(r);
	return NULL;
}

/* An answer to request r: records the acknowledged offsets of the parts
 * (of those still among parts[] and committed by r) and renews the fence.
 * Returns the commit's error: the request's, else the first partition's. */
static rd_kafka_resp_err_t apply_result(rd_kafka_event_t *ev, const struct commit_req *r,
					struct k2mc_part **parts, size_t n,
					struct k2mc_fence *fence)
{
	rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
	const rd_kafka_topic_partition_list_t *l = rd_kafka_event_topic_partition_list(ev);
	int proven = 0;

	for (int i = 0; l != NULL && i < l->cnt; i++) {
		const rd_kafka_topic_partition_t *e = &l->elems[i];

		if (e->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
				err = e->err;
			continue;
		}
		/* the coordinator checked our member id and generation for
		 * this request: any accepted partition proves membership */
		proven = 1;
		for (size_t k = 0; k < n; k++) {
			struct k2mc_part *p = parts[k];

			if (k2mc_part_id(p) != e->partition || strcmp(k2mc_part_topic(p), e->topic) ||
			    !has_uid(r, k2mc_part_uid(p)))
				continue;
			/* results may arrive out of order: keep the highest */
			if (e->offset > k2mc_part_committed(p))
				k2mc_part_set_committed(p, e->offset);
		}
	}
	if (proven && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NO_ERROR)
		k2mc_fence_renew(fence, r->gen, r->sent_at);
	return err;
}

static int is_eviction(rd_kafka_resp_err_t err)
{
	for (size_t i = 0; i < sizeof(evicted_errs) / sizeof(evicted_errs[0]); i++) {
		if (evicted_errs[i] == err)
			return 1;
	}
	return 0;
}

/* A commit sent for the current fence generation was refused because the
 * coordinator does not know this member (err): nothing more may be written
 * (the lease is revoked), and every partition that is draining now is
 * abandoned, so that the drain, which the main thread waits for inside the
 * rebalance callback, ends at once instead of at --shutdown-timeout-ms;
 * group.c then releases those partitions as lost, without committing.
 * Partitions not draining are left to librdkafka, which reports the
 * assignment lost once the main thread polls again. Once per eviction: the
 * commits of the generation its revoke starts are refused alike. */
static void on_evicted(struct k2mc_committer *c, const struct commit_req *r,
		       rd_kafka_resp_err_t err)
{
	struct k2mc_part_table *t;
	size_t n = 0;

	if (r->gen != k2mc_fence_generation(c->fence) || (c->evicted && r->gen == c->evicted_gen))
		return;
	c->evicted = 1;
	c->evicted_gen = k2mc_fence_revoke(c->fence);
	t = k2mc_table_read_lock(c->table);
	for (size_t i = 0; t != NULL && i < t->n; i++) {
		if (k2mc_part_stop_requested(t->parts[i]) && !k2mc_part_abandoned(t->parts[i])) {
			k2mc_part_abandon(t->parts[i]);
			n++;
		}
	}
	k2mc_table_read_unlock(c->table);
	k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(err),
			"offset commit refused (%s): the group no longer counts this member; "
			"writing nothing more%s",
			rd_kafka_err2str(err),
			n > 0 ? ", and the draining partitions are abandoned to their new owner"
			      : "");
}

static void link_req(struct k2mc_committer *c, struct commit_req *r)
{
	r->next = c->outstanding.next;
	r->prev = &c->outstanding;
	c->outstanding.next->prev = r;
	c->outstanding.next = r;
}

static void unlink_req(struct commit_req *r)
{
	r->prev->next = r->next;
	r->next->prev = r->prev;
}

static void on_event(struct k2mc_committer *c, rd_kafka_event_t *ev)
{
	struct commit_req *r = rd_kafka_event_opaque(ev);
	struct k2mc_part_table *t;
	rd_kafka_resp_err_t err;

	if (rd_kafka_event_type(ev) != RD_KAFKA_EVENT_OFFSET_COMMIT || r == NULL)
		return;
	t = k2mc_table_read_lock(c->table);
	err = apply_result(ev, r, t ? t->parts : NULL, t ? t->n : 0, c->fence);
	k2mc_table_read_unlock(c->table);
	atomic_store_explicit(&c->last_err, err, memory_order_relaxed);
	if (is_eviction(err))
		on_evicted(c, r, err);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
		atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
		/* once per run of failures: every interval would flood the log */
		if (!c->warned)
			k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(err),
					"offset commit failed: %s; committing again every interval",
					rd_kafka_err2str(err));
		c->warned = 1;
	} else if (c->warned) {
		k2mc_info("offset commits go through again");
		c->warned = 0;
	}
	unlink_req(r);
	free(r);
}

static void *committer_main(void *arg)
{
	struct k2mc_committer *c = arg;
	int64_t next_send = 0;

	pthread_setname_np(pthread_self(), "k2mc-commit");
	rcu_register_thread();
	while (!atomic_load_explicit(&c->stop, memory_order_acquire)) {
		int64_t now = k2mc_now_ms(), wait;
		rd_kafka_event_t *ev;

		if (now >= next_send) {
			struct k2mc_part_table *t = k2mc_table_read_lock(c->table);
			rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
			struct commit_req *r = NULL;

			if (t != NULL && t->n > 0)
				r = send_commit(c->rk, c->q, t->parts, t->n, c->fence, &err);
			k2mc_table_read_unlock(c->table);
			if (r != NULL)
				link_req(c, r);
			else if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
				k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(err),
						"offset commit not sent: %s", rd_kafka_err2str(err));
			next_send = now + (k2mc_fence_held(c->fence) || c->fence == NULL
						   ? c->period_ms
						   : (c->period_ms < UNLEASED_PERIOD_MS ? c->period_ms
											: UNLEASED_PERIOD_MS));
		}
		wait = next_send - k2mc_now_ms();
		if (wait > POLL_SLICE_MS)
			wait = POLL_SLICE_MS;
		ev = rd_kafka_queue_poll(c->q, (int)(wait > 0 ? wait : 0));
		if (ev != NULL) {
			on_event(c, ev);
			rd_kafka_event_destroy(ev);
		}
	}
	rcu_unregister_thread();
	return NULL;
}

struct k2mc_committer *k2mc_committer_start(rd_kafka_t *rk, k2mc_table_ref *table,
					     int interval_ms, struct k2mc_fence *fence)
{
	struct k2mc_committer *c = calloc(1, sizeof(*c));
	int64_t lease = k2mc_fence_lease_ms(fence);
	int rc;

	if (c == NULL)
		return NULL;
	c->rk = rk;
	c->table = table;
	c->fence = fence;
	c->period_ms = interval_ms;
	/* a lease renewed at least three times over its length survives one
	 * or two lost commits */
	if (fence != NULL && lease / 3 < c->period_ms)
		c->period_ms = lease / 3 > 0 ? lease / 3 : 1;
	c->outstanding.next = c->outstanding.prev = &c->outstanding;
	c->q = rd_kafka_queue_new(rk);
	if (c->q == NULL) {
		free(c);
		return NULL;
	}
	rc = pthread_create(&c->thread, NULL, committer_main, c);
	if (rc != 0) {
		k2mc_err("cannot start the commit thread: %s", strerror(rc));
		rd_kafka_queue_destroy(c->q);
		free(c);
		return NULL;
	}
	return c;
}

rd_kafka_resp_err_t k2mc_committer_last_error(const struct k2mc_committer *c)
{
	if (c == NULL)
		return RD_KAFKA_RESP_ERR_NO_ERROR;
	return atomic_load_explicit(&((struct k2mc_committer *)c)->last_err, memory_order_relaxed);
}

uint64_t k2mc_committer_failures(const struct k2mc_committer *c)
{
	if (c == NULL)
		return 0;
	return atomic_load_explicit(&((struct k2mc_committer *)c)->failures, memory_order_relaxed);
}

void k2mc_committer_stop(struct k2mc_committer *c)
{
	struct commit_req *r, *next;

	if (c == NULL)
		return;
	atomic_store_explicit(&c->stop, 1, memory_order_release);
	rd_kafka_queue_yield(c->q);
	pthread_join(c->thread, NULL);
	/* answers that came meanwhile; those still out are dropped with the
	 * queue (their opaque is never touched by librdkafka) */
	for (rd_kafka_event_t *ev; (ev = rd_kafka_queue_poll(c->q, 0)) != NULL;) {
		struct commit_req *er = rd_kafka_event_opaque(ev);

		if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT && er != NULL) {
			unlink_req(er);
			free(er);
		}
		rd_kafka_event_destroy(ev);
	}
	for (r = c->outstanding.next; r != &c->outstanding; r = next) {
		next = r->next;
		free(r);
	}
	rd_kafka_queue_destroy(c->q);
	free(c);
}

rd_kafka_resp_err_t k2mc_commit_parts_sync(rd_kafka_t *rk, struct k2mc_part **parts, size_t n,
					   struct k2mc_fence *fence, int64_t deadline_ms)
{
	rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
	struct commit_req *r;

	if (q == NULL)
		return RD_KAFKA_RESP_ERR__FAIL;
	r = send_commit(rk, q, parts, n, fence, &err);
	while (r != NULL) {
		int64_t left = deadline_ms - k2mc_now_ms();
		rd_kafka_event_t *ev;

		if (left <= 0) {
			err = RD_KAFKA_RESP_ERR__TIMED_OUT;
			break;
		}
		ev = rd_kafka_queue_poll(q, (int)(left < POLL_SLICE_MS ? left : POLL_SLICE_MS));
		if (ev == NULL)
			continue;
		if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT &&
		    rd_kafka_event_opaque(ev) == r) {
			err = apply_result(ev, r, parts, n, fence);
			rd_kafka_event_destroy(ev);
			break;
		}
		rd_kafka_event_destroy(ev);
	}
	/* an answer after the deadline goes to the destroyed queue: librdkafka
	 * drops it without touching r */
	free(r);
	rd_kafka_queue_destroy(q);
	return err;
}
