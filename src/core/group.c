/* Group membership and rebalances; see group.h. Everything here runs on the
 * main thread, inside rd_kafka_consumer_poll's callbacks or between polls. */
#include "core/group.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <urcu.h>

#include "core/log.h"
#include "core/rdkversion.h"
#include "core/takeover.h"
#include "core/threads.h"
#include "workers/consumer.h"

/* The last commit of released partitions may take this long after the
 * drain's deadline: a shutdown with Kafka unreachable ends within
 * --shutdown-timeout-ms plus about a second, commits included. */
#define COMMIT_GRACE_MS 500
/* wait between two attempts of that commit */
#define COMMIT_RETRY_MS 200
/* no -X socket.connection.setup.timeout.ms: librdkafka's default, 30 s */
#define BROKER_CHECK_DEFAULT_MS 30000
/* the start-up broker check asks in slices this long, so a signal is
 * answered within one */
#define BROKER_CHECK_SLICE_MS 500
/* on_assign reads the committed offsets of the partitions it is given in
 * slices this long (a signal is answered within one), for this long at most */
#define COMMITTED_SLICE_MS 1000
#define COMMITTED_QUERY_MS 10000
/* librdkafka's prefetch per partition queue, derived from --max-buffer-bytes
 * (see prefetch_defaults): budget / 256, within these bounds */
#define PREFETCH_SHARE 256
#define PREFETCH_MIN_KBYTES 64
#define PREFETCH_MAX_KBYTES 65536
/* queued.min.messages = the prefetch bytes / this: it binds only for records
 * smaller than this on average (librdkafka's op per message, ~300 bytes,
 * is not in queued.max.messages.kbytes) */
#define PREFETCH_MIN_RECORD 64
/* fetch.max.bytes, what one Fetch response may carry for all partitions
 * together = the budget / this (see prefetch_defaults), within librdkafka's
 * floor (message.max.bytes, 1,000,000 by default) and its own default */
#define FETCH_SHARE 4
#define FETCH_MIN_BYTES 1000000
#define FETCH_MAX_BYTES 52428800
/* librdkafka's wait before it looks again at a partition over its prefetch
 * threshold (see prefetch_defaults) */
#define FETCH_QUEUE_BACKOFF_MS 10
/* the longest a broker holds a fetch with nothing to return (ditto) */
#define FETCH_WAIT_MAX_MS 100
/* the committed offsets and their metadata, at assignment (takeover) */
#define TAKEOVER_FETCH_MS 10000
#define STR_(x) #x
#define STR(x) STR_(x)

struct k2mc_group {
	const struct k2mc_config *cfg;
	rd_kafka_t *rk;
	/* written by the main thread only (k2mc_table_publish), which also reads
	 * it without the read lock; other threads see partitions.h */
	k2mc_table_ref table;
	struct park *bells;
	int nwriters;
	struct k2mc_budget *budget;      /* NULL: no byte bound */
	const struct k2mc_mapping *map; /* deps->map: for the consumer threads */
	struct k2mc_committer *committer;
	struct k2mc_fence *fence;        /* NULL: no fencing */
	int (*interrupted)(void);        /* NULL: never */
	/* main thread only: the last synchronous commit's outcome */
	rd_kafka_resp_err_t last_commit_err;
	uint64_t lost_assignments;
	/* immutable: k2mc_config_join_lease_ms */
	int64_t join_lease_ms;
	/* main thread: partitions whose takeover waited (takeover_holds) */
	uint64_t takeover_waits;
	/* main thread only: drains ended because the group evicted this member */
	uint64_t drains_evicted;
	char fatal[512];
	int have_fatal;
	int fatal_released; /* on_fatal ran: every partition abandoned */
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
		g->released[i].lost = 0;
		if (g->released[i].topic == NULL)
			return;
		g->nreleased++;
	}
	if (off >= 0)
		g->released[i].committed = off;
	g->released[i].consumed += k2mc_part_consumed(p);
	g->released[i].lost += k2mc_part_lost(p);
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

/* Ring slots are allocated per partition and writer: with many partitions
 * a large --ring-size can ask for more than the machine has. Said once per
 * assignment that crosses half the physical memory. */
static void warn_ring_memory(struct k2mc_group *g, size_t nparts)
{
	uint64_t per = k2mc_config_ring_bytes_per_partition(g->cfg);
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
	uint64_t phys = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;

	if (phys == 0 || per * nparts <= phys / 2)
		return;
	k2mc_warn("%zu partitions x %d writers x --ring-size %u: the rings can take %.1f GiB, "
		  "over half of this machine's %.1f GiB; lower --ring-size or --writers",
		  nparts, g->cfg->writers, g->cfg->ring_size,
		  (double)(per * nparts) / (1 << 30), (double)phys / (1 << 30));
}

/* The group's committed offsets of the partitions about to be assigned: a
 * copy of tps whose offsets are the committed ones (RD_KAFKA_OFFSET_INVALID:
 * none; elems[].err per partition), or NULL, said once, when they cannot be
 * read. Asked in slices, so that a signal is answered within one. Read here,
 * before the assignment, where librdkafka reads them again after it: nobody
 * else commits a partition of ours in between (its previous owner committed
 * before it released it). */
static rd_kafka_topic_partition_list_t *read_committed(struct k2mc_group *g,
							const rd_kafka_topic_partition_list_t *tps)
{
	/* (librdkafka's allocations abort rather than fail) */
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(tps);
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
	int64_t until = k2mc_now_ms() + COMMITTED_QUERY_MS;

	while (k2mc_now_ms() < until && !(g->interrupted && g->interrupted())) {
		err = rd_kafka_committed(g->rk, l, COMMITTED_SLICE_MS);
		if (err != RD_KAFKA_RESP_ERR__TIMED_OUT)
			break;
	}
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return l;
	k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(err),
			"cannot read the committed offsets of %d assigned partition(s): %s; "
			"librdkafka reads them itself, but records lost to retention before "
			"them are not counted%s",
			tps->cnt, rd_kafka_err2str(err),
			g->cfg->offset_beginning ? ""
						 : ", and one without a committed offset starts at "
						   "the beginning (-o end needs to know it has none)");
	rd_kafka_topic_partition_list_destroy(l);
	return NULL;
}

/* The takeover rule (takeover.h): for each newly assigned partition, the
 * k2mc_now_ms time before which its consumer hands out nothing, from the
 * metadata of its committed offset (committed: read_committed's list, NULL
 * when it could not be read: then every partition waits our own lease, the
 * safe guess). Main thread, in the rebalance callback, before the
 * assignment; now is when the assignment arrived. */
static void takeover_holds(struct k2mc_group *g, const rd_kafka_topic_partition_list_t *tps,
			   const rd_kafka_topic_partition_list_t *committed, int64_t now,
			   int64_t *hold)
{
	int64_t own, longest = 0;
	int nheld = 0;
	enum k2mc_takeover_why why = K2MC_TAKEOVER_NEW;

	if (g->fence == NULL || tps->cnt == 0)
		return;
	own = k2mc_fence_lease_ms(g->fence);
	for (int i = 0; i < tps->cnt; i++) {
		const rd_kafka_topic_partition_t *c =
			committed == NULL ? NULL
					  : rd_kafka_topic_partition_list_find(
						    committed, tps->elems[i].topic,
						    tps->elems[i].partition);
		enum k2mc_takeover_why w;
		int64_t ms;

		if (c == NULL || c->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			w = K2MC_TAKEOVER_UNKNOWN;
			ms = own;
		} else {
			ms = k2mc_takeover_hold_ms(c->offset, c->metadata, c->metadata_size, own, &w);
		}
		if (ms <= 0)
			continue;
		hold[i] = now + ms;
		nheld++;
		if (ms > longest) {
			longest = ms;
			why = w;
		}
	}
	if (nheld == 0)
		return;
	g->takeover_waits += (uint64_t)nheld;
	k2mc_log_reason(K2MC_LOG_WARN, "takeover",
			"takeover: %d of %d assigned partition(s) are not written for up to %lld ms: "
			"their previous owner did not release them (crashed, replaced, removed or "
			"left) and may still hold its write lease (%s)",
			nheld, tps->cnt, (long long)longest,
			committed == NULL ? "committed offsets unreadable: our own lease"
					  : k2mc_takeover_why_name(why));
}

/* One consumer thread per partition (consumer.c): an assignment that would
 * pass a limit on the process's threads is refused whole, with the limit
 * named, before any thread or partition queue is made, rather than failing
 * at the thread that does not fit. THREAD_MARGIN leaves room for what else
 * may start meanwhile (librdkafka's thread for a broker not yet seen, the
 * DLQ's and refill's handles). 1 if refused (fatal set). */
#define THREAD_MARGIN 16

static int threads_refused(struct k2mc_group *g, int nnew)
{
	char why[1100];
	int64_t room;

	if (nnew <= 0 || k2mc_threads_room(&room, why, sizeof(why)) != 0 ||
	    (int64_t)nnew + THREAD_MARGIN <= room)
		return 0;
	set_fatal(g,
		  "assignment of %d partition(s) refused: k2mc runs one consumer thread per "
		  "partition, and %d more threads (and %d for librdkafka and k2mc's own) do not "
		  "fit in %s, %lld more allowed. Raise that limit, or run more members of group "
		  "%s so that each gets fewer partitions (README: Tuning)",
		  nnew, nnew, THREAD_MARGIN, why, (long long)room, g->cfg->group);
	return 1;
}

static void on_assign(struct k2mc_group *g, rd_kafka_topic_partition_list_t *tps, int incremental)
{
	struct k2mc_part_opts o = { .nwriters = g->nwriters, .ring_size = g->cfg->ring_size,
				    .bells = g->bells, .exit_at_eof = g->cfg->exit_at_eof,
				    .budget = g->budget, .map = g->map };
	struct k2mc_part_table *cur = own_table(g);
	size_t have = cur ? cur->n : 0;
	struct k2mc_part **all;
	/* before the OffsetFetch: the takeover wait counts from here */
	int64_t t_assign = k2mc_now_ms();
	rd_kafka_topic_partition_list_t *committed;
	rd_kafka_error_t *e = NULL;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
	size_t n = have;
	int64_t *hold;
	int at_end = 0;

	/* nothing is assigned: main sees the fatal error, stops and leaves
	 * the group, whose other members take the partitions */
	if (threads_refused(g, tps->cnt))
		return;
	all = calloc(have + (size_t)tps->cnt + 1, sizeof(*all));
	committed = read_committed(g, tps);
	hold = calloc((size_t)tps->cnt + 1, sizeof(*hold));
	/* without hold[] the takeover wait could not be kept: refuse, as for
	 * the table */
	if (all == NULL || hold == NULL) {
		free(all);
		free(hold);
		set_fatal(g, "out of memory on assignment");
		if (committed != NULL)
			rd_kafka_topic_partition_list_destroy(committed);
		return;
	}
	if (have)
		memcpy(all, cur->parts, have * sizeof(*all));
	takeover_holds(g, tps, committed, t_assign, hold);
	/* Partition queues are taken and detached before the assignment
	 * starts fetching, so no record ever reaches the consumer queue. */
	for (int i = 0; i < tps->cnt; i++) {
		rd_kafka_topic_partition_t *c =
			committed == NULL ? NULL
					  : rd_kafka_topic_partition_list_find(
						    committed, tps->elems[i].topic,
						    tps->elems[i].partition);
		struct k2mc_part *p;

		o.hold_until_ms = hold[i];

		/* -o applies to a partition with no committed offset only:
		 * librdkafka's auto.offset.reset is earliest (k2mc_group_new),
		 * so -o end is the start offset given here */
		o.committed = c != NULL && c->err == RD_KAFKA_RESP_ERR_NO_ERROR && c->offset >= 0
				      ? c->offset
				      : -1;
		if (c != NULL && c->err == RD_KAFKA_RESP_ERR_NO_ERROR && c->offset < 0 &&
		    !g->cfg->offset_beginning &&
		    tps->elems[i].offset == RD_KAFKA_OFFSET_INVALID) {
			tps->elems[i].offset = RD_KAFKA_OFFSET_END;
			at_end++;
		}
		p = k2mc_part_new(g->rk, tps->elems[i].topic, tps->elems[i].partition, &o);

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
	if (at_end > 0)
		k2mc_info("assigned %d partition(s), %zu in total; %d without a committed offset "
			  "start at the end (-o end)",
			  tps->cnt, n, at_end);
	else
		k2mc_info("assigned %d partition(s), %zu in total", tps->cnt, n);
	warn_ring_memory(g, n);
	free(hold);
	if (committed != NULL)
		rd_kafka_topic_partition_list_destroy(committed);
	free(all);
}

/* The last commit of released parts, waiting for the answer until
 * deadline. Every watermark is sent, moved or not: an asynchronous commit of
 * the same offset may have failed. A failure the coordinator may recover
 * from (it moved, it is loading) is tried again while time is left; one
 * that says we are no longer the member that owned them is final. */
static void commit_released(struct k2mc_group *g, struct k2mc_part **gone, size_t ngone,
			    int64_t deadline)
{
	for (;;) {
		rd_kafka_resp_err_t err = k2mc_commit_parts_sync(g->rk, gone, ngone, g->fence, deadline);

		g->last_commit_err = err;
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
			return;
		if (err == RD_KAFKA_RESP_ERR__TIMED_OUT || k2mc_now_ms() + COMMIT_RETRY_MS >= deadline ||
		    k2mc_parts_hurried() || err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
		    err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
		    err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID || err == RD_KAFKA_RESP_ERR__FATAL) {
			k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(err),
					"commit of %zu released partition(s) failed: %s; their offsets "
					"past the last acknowledged commit stay uncommitted and will be "
					"consumed again",
					ngone, err == RD_KAFKA_RESP_ERR__TIMED_OUT
						? "no answer from Kafka before the deadline"
						: rd_kafka_err2str(err));
			return;
		}
		k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(err),
				"commit of %zu released partition(s) failed (%s); trying again", ngone,
				rd_kafka_err2str(err));
		nanosleep(&(struct timespec){ 0, COMMIT_RETRY_MS * 1000000L }, NULL);
	}
}

/* The assignment was lost (session timed out, fenced by the coordinator,
 * a fatal error): other members may own these partitions already and be
 * writing them. So nothing more is written (the fence is revoked first, and
 * the parts are abandoned, which makes writers drop batches holding their
 * records) and nothing is committed: the new owner starts from the last
 * commit, and writes every key of ours again in order. */
static void release_lost(struct k2mc_group *g, rd_kafka_topic_partition_list_t *tps,
			 const char *why)
{
	struct k2mc_part_table *cur = own_table(g);
	size_t have = cur ? cur->n : 0, nkeep = 0, ngone = 0;
	struct k2mc_part **keep = calloc(have + 1, sizeof(*keep));
	struct k2mc_part **gone = calloc(have + 1, sizeof(*gone));
	uint64_t held = 0;

	k2mc_fence_revoke(g->fence);
	if (keep == NULL || gone == NULL) {
		free(keep);
		free(gone);
		set_fatal(g, "out of memory on a lost assignment");
		return;
	}
	for (size_t i = 0; i < have; i++) {
		struct k2mc_part *p = cur->parts[i];

		if (tps == NULL || rd_kafka_topic_partition_list_find(tps, k2mc_part_topic(p),
								      k2mc_part_id(p)) != NULL)
			gone[ngone++] = p;
		else
			keep[nkeep++] = p;
	}
	for (size_t i = 0; i < ngone; i++) {
		k2mc_part_abandon(gone[i]);
		k2mc_part_request_stop(gone[i], k2mc_now_ms());
	}
	for (size_t i = 0; i < ngone; i++)
		held += k2mc_part_join(gone[i]);
	publish(g, keep, nkeep);
	for (size_t i = 0; i < ngone; i++) {
		note_released(g, gone[i]);
		g->consumed_released += k2mc_part_consumed(gone[i]);
		k2mc_part_free(gone[i]);
	}
	if (ngone == 0) {
		free(keep);
		free(gone);
		return;
	}
	g->lost_assignments++;
	k2mc_warn("assignment lost (%s): %zu partition(s) dropped without writing the %llu "
		  "record(s) they held and without committing; their new owner writes them",
		  why, ngone, (unsigned long long)held);
	free(keep);
	free(gone);
}

/* Stops the given parts (all if tps == NULL), drains them until deadline,
 * unpublishes them, commits and frees them. A drain the committer abandoned
 * (a commit showed the group no longer counts this member: committer.c) is
 * a lost assignment instead: nothing more is written or committed. */
static uint64_t release(struct k2mc_group *g, rd_kafka_topic_partition_list_t *tps,
			int64_t deadline, void (*on_timeout)(void *), void *arg)
{
	struct k2mc_part_table *cur = own_table(g);
	size_t have = cur ? cur->n : 0, nkeep = 0, ngone = 0;
	struct k2mc_part **keep = calloc(have + 1, sizeof(*keep));
	struct k2mc_part **gone = calloc(have + 1, sizeof(*gone));
	uint64_t left = 0, evicted_left = 0;
	int evicted = 0;

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

		/* only the committer abandons a part while it drains */
		if (k2mc_part_abandoned(gone[i])) {
			evicted = 1;
			evicted_left += l;
			left += l;
			continue;
		}
		/* drained, nothing in flight: its last commit says released, and
		 * its next owner writes at once (takeover.h) */
		if (l == 0 && k2mc_part_failed_at(gone[i]) == INT64_MAX)
			k2mc_part_set_released(gone[i]);
		if (l > 0) {
			int64_t failed_at = k2mc_part_failed_at(gone[i]);

			if (failed_at != INT64_MAX)
				k2mc_log_record(K2MC_LOG_WARN, k2mc_part_topic(gone[i]),
						k2mc_part_id(gone[i]), failed_at, "refused record",
						"%s [%d]: stopped at offset %lld, which must not be "
						"committed; %llu record(s) from there on left "
						"uncommitted",
						k2mc_part_topic(gone[i]), k2mc_part_id(gone[i]),
						(long long)failed_at, (unsigned long long)l);
			else
				k2mc_log_partition(K2MC_LOG_WARN, k2mc_part_topic(gone[i]),
						   k2mc_part_id(gone[i]), "deadline",
						   "%s [%d]: %llu record(s) not acknowledged by "
						   "Memcached before the deadline; left uncommitted, "
						   "they will be consumed again",
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
	if (evicted) {
		/* the coordinator refuses our commits: none is sent, and the new
		 * owners start from the last one it accepted */
		for (size_t i = 0; i < ngone; i++)
			k2mc_part_abandon(gone[i]);
		g->lost_assignments++;
		g->drains_evicted++;
		k2mc_warn("assignment lost (the group no longer counts this member: %s on a commit "
			  "during the drain): %zu partition(s) released without writing the %llu "
			  "record(s) they held and without committing; their new owner writes them",
			  g->committer != NULL
				  ? rd_kafka_err2name(k2mc_committer_last_error(g->committer))
				  : "evicted",
			  ngone, (unsigned long long)evicted_left);
	} else if (ngone > 0) {
		commit_released(g, gone, ngone,
				(deadline > k2mc_now_ms() ? deadline : k2mc_now_ms()) + COMMIT_GRACE_MS);
	}
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
	if (rd_kafka_assignment_lost(rk)) {
		release_lost(g, tps, err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
					     ? "librdkafka: the group no longer counts this member"
					     : rd_kafka_err2str(err));
	} else {
		if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
			k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(err),
					"rebalance error: %s; releasing partitions",
					rd_kafka_err2str(err));
		/* A revocation waits for the writers like a shutdown does; the
		 * lease still holds while it drains (the coordinator waits for
		 * our rejoin), but not past the end of the join phase, when a
		 * member that has not rejoined is removed whatever its session
		 * says (k2mc_fence_cap): the drain ends there too, and what is
		 * left is abandoned and counted as unwritten. The lease ends with
		 * the drain: the next assignment is a new generation that needs
		 * its own proof. */
		int64_t drain = g->cfg->shutdown_timeout_ms;

		if (g->fence != NULL) {
			k2mc_fence_cap(g->fence, k2mc_now_ms() + g->join_lease_ms);
			if (g->join_lease_ms < drain)
				drain = g->join_lease_ms;
		}
		release(g, tps, k2mc_now_ms() + drain, NULL, NULL);
		k2mc_fence_revoke(g->fence);
	}
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

/* A property of the consumer's configuration for a message, or "(unset)". */
static const char *conf_val(rd_kafka_t *rk, const char *name, char *buf, size_t len)
{
	size_t n = len;

	if (rd_kafka_conf_get(rd_kafka_conf(rk), name, buf, &n) != RD_KAFKA_CONF_OK || buf[0] == '\0')
		snprintf(buf, len, "(unset)");
	return buf;
}

/* A fatal librdkafka error, e.g. FENCED_INSTANCE_ID: another process with
 * this group.instance.id owns these partitions now and may be writing them.
 * librdkafka will not commit again, so the lease could only run out; stop
 * every write now instead (release_lost revokes the fence and abandons what
 * the rings hold), and main exits non-zero with the reason. Main thread
 * (consumer poll). Once. */
static void on_fatal(struct k2mc_group *g)
{
	char buf[512];

	if (g->fatal_released)
		return;
	g->fatal_released = 1;
	rd_kafka_fatal_error(g->rk, buf, sizeof(buf));
	set_fatal(g, "fatal Kafka error: %s", buf);
	release_lost(g, NULL, "fatal Kafka error");
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct k2mc_group *g = opaque;

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		/* librdkafka raises a consumer's fatal errors on the consumer
		 * queue (k2mc_group_poll), not here; a later version may not */
		on_fatal(g);
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
		/* A broker refused the SASL login (wrong password or user, a
		 * mechanism it does not enable for this listener). librdkafka
		 * retries it forever and no retry can succeed, so k2mc would only
		 * sit in the start-up broker check, or consume nothing, until it
		 * gave up 30 s later saying "no broker reachable". Fatal at once,
		 * at start or later: reason names the broker
		 * ("sasl_ssl://host:port/id: SASL authentication error: ..."),
		 * and the mechanism and user are said here. Main thread. */
		char proto[64], mech[64], user[128];

		set_fatal(g,
			  "Kafka authentication failed (security.protocol=%s, sasl.mechanisms=%s, "
			  "sasl.username=%s): %s; check sasl.username, sasl.password and that the "
			  "broker's listener enables this mechanism for the user",
			  conf_val(rk, "security.protocol", proto, sizeof(proto)),
			  conf_val(rk, "sasl.mechanisms", mech, sizeof(mech)),
			  conf_val(rk, "sasl.username", user, sizeof(user)), reason);
		return;
	}
	k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name((rd_kafka_resp_err_t)err), "kafka: %s: %s",
			rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* group.protocol=consumer (KIP-848) against a broker without the
 * ConsumerGroupHeartbeat API (Kafka 3.x, unless its early-access preview is
 * on; measured on 3.9.1: group.coordinator.rebalance.protocols=
 * classic,consumer alone does not offer it): librdkafka 2.14
 * checks the broker's ApiVersions before each heartbeat, marks the
 * coordinator dead and looks it up again, forever, and says so only in a
 * cgrp debug line (rdkafka_request.c, rd_kafka_ConsumerGroupHeartbeatRequest:
 * rd_kafka_cgrp_coord_dead with this reason). No error event, no fatal
 * error: k2mc would wait for an assignment for ever. So under that protocol
 * k2mc turns on the cgrp debug context when -X debug is not set (and drops
 * the debug lines the user did not ask for), and log_cb watches for the
 * reason. Process-wide, not in struct k2mc_group: log_cb runs on librdkafka's
 * threads, which may outlive the group when close gives up on them. */
#define KIP848_REFUSED_MARK "ConsumerGroupHeartbeatRequest not supported by broker"
/* log_cb: written once (claimed by the exchange), then published with the
 * release store on kip848_refused; the main thread reads it after an
 * acquire load of kip848_refused */
static _Atomic int kip848_claimed, kip848_refused;
static char kip848_line[256];
/* set before rd_kafka_new, read by log_cb: drop level-7 lines (they come
 * only from the cgrp context k2mc turned on itself) */
static int drop_debug;

/* librdkafka's own lines (broker connections, CONFWARN) through k2mc's
 * logger: --log-format json leaves no plain-text line. Any librdkafka thread. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	if (strstr(buf, KIP848_REFUSED_MARK) != NULL &&
	    atomic_exchange_explicit(&kip848_claimed, 1, memory_order_relaxed) == 0) {
		snprintf(kip848_line, sizeof(kip848_line), "%s", buf);
		/* pairs with the acquire load in k2mc_group_poll */
		atomic_store_explicit(&kip848_refused, 1, memory_order_release);
	}
	if (level >= 7 && drop_debug)
		return;
	k2mc_log_kafka("kafka", level, fac, buf);
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

/* See KIP848_REFUSED_MARK. Under group.protocol=consumer with no -X debug:
 * debug=cgrp, its lines dropped by log_cb. */
static int kip848_watch(rd_kafka_conf_t *conf, char *err, size_t errlen)
{
	char v[256];
	size_t n = sizeof(v);

	if (rd_kafka_conf_get(conf, "group.protocol", v, &n) != RD_KAFKA_CONF_OK ||
	    strcasecmp(v, "consumer") != 0)
		return 0;
	n = sizeof(v);
	if (rd_kafka_conf_get(conf, "debug", v, &n) == RD_KAFKA_CONF_OK && v[0] != '\0')
		return 0; /* the user's debug contexts: watched only if they hold cgrp */
	drop_debug = 1;
	return conf_set(conf, "debug", "cgrp", err, errlen);
}

/* librdkafka's prefetch, per partition queue (k2mc detaches each
 * partition's queue, so the limits apply per partition), derived from the
 * byte budget; -X sets any of them and wins (applied after these).
 * - queued.max.messages.kbytes = budget / 256: 64 KiB at the 16 MiB default.
 *   librdkafka's own default, 65536, times hundreds of partitions is
 *   gigabytes held before the budget sees them, and each queued message
 *   also holds a librdkafka op and pins its fetch buffer (peak RSS at 64
 *   partitions against this share: perf/FINDINGS.md, issue 14's third
 *   round).
 * - queued.min.messages = those bytes / 64: the count that bounds tiny
 *   records, whose per-message op the byte limit does not see.
 * - fetch.queue.backoff.ms = 10 (librdkafka 2.2 and later). librdkafka
 *   decides whether to fetch a partition when a response has just been
 *   queued; over a threshold it waits this long before it looks again,
 *   whatever happens meanwhile (1 s by default: every partition waited
 *   that long between two responses, since one producer batch is larger
 *   than 64 KiB). The consumer thread drains a 64 KiB queue in well under a
 *   millisecond once its writers have room; looking 100 times a second at
 *   a partition held back costs nothing measurable. Before 2.2 the option
 *   does not exist and consumer.c's wake_fetch answers the stall instead.
 * - fetch.wait.max.ms = 100 (librdkafka's and Java's default: 500). A broker
 *   connection has one Fetch in flight; when it names only caught-up
 *   partitions the broker holds it this long, and a partition that was
 *   held back meanwhile waits for it, which is most of the end of a
 *   backlog (perf/FINDINGS.md, issue 20: the end of a backlog with 100 ms
 *   and with 500). An idle consumer sends 10 fetches a second per broker
 *   instead of 2.
 * - fetch.max.bytes = budget / 4: 4 MiB at the default. Unset, librdkafka
 *   lowers it to queued.max.messages.kbytes, then raises it to
 *   message.max.bytes: 1,000,000 bytes per response for all partitions,
 *   about what one partition's max.partition.fetch.bytes (1 MiB) fills, so
 *   a backlog took a Fetch round trip per megabyte, each naming every
 *   partition under its threshold, and the broker spent several times the
 *   floor's CPU per record serving them (perf/FINDINGS.md, issue 25: a
 *   plain consumer held to 1 MB responses costs the broker as much).
 * The bound this keeps: librdkafka fetches a partition only while its queue
 * is under queued.max.messages.kbytes, and one response adds at most
 * max.partition.fetch.bytes (librdkafka's 1 MiB; a first batch larger than
 * that comes whole) to it, so librdkafka queues at most budget/256 + 1 MiB
 * per partition outside the budget, whatever fetch.max.bytes is. What
 * fetch.max.bytes changes is the buffer a held record pins: librdkafka
 * keeps a whole response alive while any record of it is queued or in
 * k2mc's rings, so the worst case (every partition holding a record of a
 * different response) is partitions x budget/4 where it was partitions x
 * 1 MB. Measured (perf/FINDINGS.md, issue 25): a higher peak RSS at 64
 * partitions with memcached keeping up, the same with memcached frozen
 * (tests/test_memory.c). */
struct prefetch {
	char kbytes[24], messages[24], fetch_bytes[24];
};

static void prefetch_defaults(const struct k2mc_config *cfg, struct prefetch *pf)
{
	uint64_t kb = cfg->max_buffer_bytes / PREFETCH_SHARE / 1024, fb;

	if (kb < PREFETCH_MIN_KBYTES)
		kb = PREFETCH_MIN_KBYTES;
	if (kb > PREFETCH_MAX_KBYTES)
		kb = PREFETCH_MAX_KBYTES;
	snprintf(pf->kbytes, sizeof(pf->kbytes), "%llu", (unsigned long long)kb);
	snprintf(pf->messages, sizeof(pf->messages), "%llu",
		 (unsigned long long)(kb * 1024 / PREFETCH_MIN_RECORD));
	fb = cfg->max_buffer_bytes / FETCH_SHARE;
	if (fb < FETCH_MIN_BYTES)
		fb = FETCH_MIN_BYTES;
	if (fb > FETCH_MAX_BYTES)
		fb = FETCH_MAX_BYTES;
	snprintf(pf->fetch_bytes, sizeof(pf->fetch_bytes), "%llu", (unsigned long long)fb);
}

static int64_t conf_int(rd_kafka_conf_t *conf, const char *name)
{
	char v[32];
	size_t n = sizeof(v);

	return rd_kafka_conf_get(conf, name, v, &n) == RD_KAFKA_CONF_OK ? strtoll(v, NULL, 10) : -1;
}

/* librdkafka refuses a fetch.max.bytes under message.max.bytes, or over
 * receive.message.max.bytes - 512, when they are set: k2mc's derived value
 * (still there: no -X fetch.max.bytes) gives way to a -X of either, as
 * librdkafka's own default would. */
static int fit_fetch_bytes(rd_kafka_conf_t *conf, const struct prefetch *pf, char *err,
			   size_t errlen)
{
	int64_t fb = conf_int(conf, "fetch.max.bytes"), want = fb;
	int64_t msg = conf_int(conf, "message.max.bytes");
	int64_t recv = conf_int(conf, "receive.message.max.bytes");
	char v[24], e[256];

	if (fb != strtoll(pf->fetch_bytes, NULL, 10))
		return 0; /* the user's */
	if (recv > 512 && want > recv - 512)
		want = recv - 512;
	if (msg > want)
		want = msg;
	if (want == fb)
		return 0;
	snprintf(v, sizeof(v), "%lld", (long long)want);
	if (rd_kafka_conf_set(conf, "fetch.max.bytes", v, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "consumer: fetch.max.bytes=%s: %s", v, e);
		return -1;
	}
	return 0;
}

/* Offsets are ours to commit: only watermarks, never librdkafka's idea of
 * "consumed".
 * auto.offset.reset=earliest whatever -o says: librdkafka applies it to a
 * partition with no committed offset and also to one whose offset has left
 * the log (retention deleted it while k2mc was stopped or behind:
 * OFFSET_OUT_OF_RANGE). That one must resume at its oldest surviving record,
 * since a cache that skips survivors keeps values older than the log's; -o
 * end is applied by on_assign instead, to partitions with no committed offset
 * only. librdkafka reports such a reset as a log line only.
 * auto.offset.reset=error would report it as ERR__AUTO_OFFSET_RESET on the
 * partition's queue, but leaves the partition unfetched (rd_kafka_seek
 * refuses it: __STATE) until it is assigned again, which in an eager group
 * means every partition; so the consumer thread counts the loss from the
 * offsets and the log start (consumer.c, note_gap). Then the prefetch
 * defaults above, then every -X (config.c's builder). */
rd_kafka_conf_t *k2mc_group_conf(const struct k2mc_config *cfg, char *err, size_t errlen)
{
	struct prefetch pf;
	const char *own[32];
	rd_kafka_conf_t *conf;
	int n = 0;

	prefetch_defaults(cfg, &pf);
	own[n++] = "bootstrap.servers";
	own[n++] = cfg->brokers;
	own[n++] = "group.id";
	own[n++] = cfg->group;
	own[n++] = "client.id";
	own[n++] = "k2mc";
	own[n++] = "enable.auto.commit";
	own[n++] = "false";
	own[n++] = "enable.auto.offset.store";
	own[n++] = "false";
	own[n++] = "auto.offset.reset";
	own[n++] = "earliest";
	own[n++] = "enable.partition.eof";
	own[n++] = cfg->exit_at_eof ? "true" : "false";
	own[n++] = "queued.max.messages.kbytes";
	own[n++] = pf.kbytes;
	own[n++] = "queued.min.messages";
	own[n++] = pf.messages;
	own[n++] = "fetch.wait.max.ms";
	own[n++] = STR(FETCH_WAIT_MAX_MS);
	if (rd_kafka_version() >= K2MC_RDKAFKA_FETCH_BACKOFF) {
		own[n++] = "fetch.queue.backoff.ms";
		own[n++] = STR(FETCH_QUEUE_BACKOFF_MS);
	}
	own[n++] = "fetch.max.bytes";
	own[n++] = pf.fetch_bytes;
	own[n] = NULL;
	conf = k2mc_config_rdkafka(cfg, "consumer", own, err, errlen);
	if (conf != NULL && fit_fetch_bytes(conf, &pf, err, errlen) < 0) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

/* SASL/SCRAM through a librdkafka that Kafka 4 refuses (make RDKAFKA=system
 * on bookworm): said once at start, with the fix, since the broker's answer
 * ("invalid credentials") points at the password instead. */
static void warn_old_scram(rd_kafka_conf_t *conf)
{
	char mech[64];
	size_t len = sizeof(mech);

	if (rd_kafka_version() >= K2MC_RDKAFKA_SCRAM_FIX ||
	    rd_kafka_conf_get(conf, "sasl.mechanisms", mech, &len) != RD_KAFKA_CONF_OK ||
	    strncasecmp(mech, "SCRAM", 5) != 0)
		return;
	k2mc_warn("sasl.mechanisms=%s with librdkafka %s: Kafka 4 refuses its SCRAM login as "
		  "invalid credentials (the nonce is sent twice; fixed in librdkafka 2.6.1). Build "
		  "k2mc with the librdkafka it pins (make RDKAFKA=vendored) for Kafka 4",
		  mech, rd_kafka_version_str());
}

/* The check's handle says nothing: its warnings (no bootstrap.servers) are
 * about the check itself. */
static void quiet_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	(void)level;
	(void)fac;
	(void)buf;
}

/* SASL set-ups that act when the handle is made: GSSAPI runs kinit,
 * OAUTHBEARER with sasl.oauthbearer.method=oidc fetches a token. */
static int sasl_acts_at_start(rd_kafka_conf_t *conf)
{
	char proto[32], mech[32], method[32];
	size_t n;

	n = sizeof(proto);
	if (rd_kafka_conf_get(conf, "security.protocol", proto, &n) != RD_KAFKA_CONF_OK ||
	    strncasecmp(proto, "sasl", 4) != 0)
		return 0;
	n = sizeof(mech);
	if (rd_kafka_conf_get(conf, "sasl.mechanisms", mech, &n) != RD_KAFKA_CONF_OK)
		return 0;
	if (strcasecmp(mech, "GSSAPI") == 0)
		return 1;
	n = sizeof(method);
	return strcasecmp(mech, "OAUTHBEARER") == 0 &&
	       rd_kafka_conf_get(conf, "sasl.oauthbearer.method", method, &n) == RD_KAFKA_CONF_OK &&
	       strcasecmp(method, "oidc") == 0;
}

int k2mc_group_check(const struct k2mc_config *cfg, char *err, size_t errlen, int *partial)
{
	rd_kafka_conf_t *conf = k2mc_group_conf(cfg, err, errlen);
	rd_kafka_t *rk;
	char e[512];

	*partial = 0;
	if (conf == NULL)
		return -EINVAL;
	if (sasl_acts_at_start(conf)) {
		*partial = 1;
		rd_kafka_conf_destroy(conf);
		return 0;
	}
	/* no broker to connect to; everything else as the run has it */
	if (rd_kafka_conf_set(conf, "bootstrap.servers", "", e, sizeof(e)) != RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "consumer: bootstrap.servers: %s", e);
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	rd_kafka_conf_set_log_cb(conf, quiet_log_cb);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
	if (rk == NULL) {
		snprintf(err, errlen, "cannot create Kafka consumer: %s", e);
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	return 0;
}

struct k2mc_group *k2mc_group_new(const struct k2mc_config *cfg,
				  const struct k2mc_group_deps *deps, char *err, size_t errlen,
				  int *usage)
{
	struct k2mc_group *g = calloc(1, sizeof(*g));
	rd_kafka_conf_t *conf = NULL;
	char e[512];

	*usage = 0;
	if (g == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	g->cfg = cfg;
	g->fence = deps->fence;
	g->budget = deps->budget;
	g->map = deps->map;
	g->bells = deps->bells;
	g->nwriters = deps->nwriters;
	g->interrupted = deps->interrupted;
	g->join_lease_ms = k2mc_config_join_lease_ms(cfg);
	conf = k2mc_group_conf(cfg, err, errlen);
	if (conf == NULL) {
		*usage = 1;
		goto fail;
	}
	warn_old_scram(conf);
	if (kip848_watch(conf, err, errlen))
		goto fail;
	rd_kafka_conf_set_opaque(conf, g);
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	rd_kafka_conf_set_log_cb(conf, log_cb);
	g->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
	if (g->rk == NULL) {
		/* librdkafka refused the configuration as a whole (a file it
		 * reads, a combination of properties): as --check-config would */
		snprintf(err, errlen, "cannot create Kafka consumer: %s", e);
		*usage = 1;
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

int k2mc_group_start_committer(struct k2mc_group *g, int interval_ms)
{
	g->committer = k2mc_committer_start(g->rk, &g->table, interval_ms, g->fence);
	return g->committer != NULL ? 0 : -EAGAIN;
}

void k2mc_group_stop_committer(struct k2mc_group *g)
{
	struct k2mc_committer *c;

	if (g == NULL || g->committer == NULL)
		return;
	c = g->committer;
	g->committer = NULL;
	k2mc_committer_stop(c);
}

rd_kafka_resp_err_t k2mc_group_last_commit_error(const struct k2mc_group *g)
{
	return g->last_commit_err;
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
	for (int64_t until = k2mc_now_ms() + ms;;) {
		int64_t left = until - k2mc_now_ms();

		err = rd_kafka_metadata(g->rk, 0, NULL, &md,
					(int)(left < BROKER_CHECK_SLICE_MS ? (left > 1 ? left : 1)
									   : BROKER_CHECK_SLICE_MS));
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR || left <= BROKER_CHECK_SLICE_MS)
			break;
		if (g->interrupted != NULL && g->interrupted())
			return -EINTR;
		/* error_cb runs only when the consumer queue is served: an
		 * authentication failure ends the wait here (nothing is
		 * subscribed yet, so no record can arrive) */
		k2mc_group_poll(g, 0);
		if (g->have_fatal) {
			k2mc_err("%s", g->fatal);
			return -EACCES;
		}
	}
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
	int rc;

	rc = check_brokers(g);
	if (rc != 0) {
		rd_kafka_topic_partition_list_destroy(l);
		return rc;
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

	/* pairs with the release store in log_cb */
	if (atomic_load_explicit(&kip848_refused, memory_order_acquire))
		set_fatal(g,
			  "group.protocol=consumer (KIP-848): the group coordinator found through "
			  "%s does not offer the ConsumerGroupHeartbeat API (librdkafka: \"%s\"); "
			  "Kafka 4.0 and later offer it, Kafka 3.x only as an early-access preview "
			  "(group.coordinator.rebalance.protocols=classic,consumer and the "
			  "group.version=1 feature). Use -X group.protocol=classic with this cluster",
			  g->cfg->brokers, kip848_line);
	if (m == NULL)
		return;
	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		const char *t = m->rkt ? rd_kafka_topic_name(m->rkt) : "subscription";

		if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
			/* librdkafka 2.x hands a high-level consumer's fatal error
			 * to the application as a consumer error, here, and not to
			 * error_cb (rdkafka.c, rd_kafka_set_fatal_error0). Measured
			 * on Kafka 4.1.1: a static member resumed after its
			 * replacement logged "Static consumer fenced" and went on
			 * writing 51,103 records until SIGTERM 30 s later, exit 0. */
			k2mc_log_reason(K2MC_LOG_ERR, rd_kafka_err2name(m->err), "kafka: %s",
					rd_kafka_message_errstr(m));
			on_fatal(g);
		} else if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && t[0] == '^') {
			/* a pattern that matches no topic yet: librdkafka
			 * subscribes to matching topics as they appear */
			if (!g->pattern_warned)
				k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(m->err),
						"%s: no topic matches yet; waiting for one", t);
			g->pattern_warned = 1;
		} else if (m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
			   m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
			   m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
			set_fatal(g, "%s: %s", t, rd_kafka_message_errstr(m));
		} else {
			k2mc_log_reason(K2MC_LOG_WARN, rd_kafka_err2name(m->err), "kafka: %s",
					rd_kafka_message_errstr(m));
		}
	} else {
		/* Cannot happen while partition queues are detached; if it did,
		 * the record is dropped uncommitted and will be consumed again. */
		k2mc_log_record(K2MC_LOG_ERR, rd_kafka_topic_name(m->rkt), m->partition, m->offset,
				NULL, "%s [%d] @%lld: record arrived on the consumer queue; not written",
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

/* see k2mc_group_close */
static rd_kafka_t *abandoned_rk;

void k2mc_group_close(struct k2mc_group *g, int64_t deadline_ms)
{
	if (g == NULL)
		return;
	if (g->rk != NULL) {
		/* Leaving the group waits for the coordinator, which may be
		 * unreachable: close in librdkafka's background, serve its
		 * queue until closed or the deadline, and then go without it. */
		rd_kafka_queue_t *q = rd_kafka_queue_new(g->rk);
		rd_kafka_error_t *e = q ? rd_kafka_consumer_close_queue(g->rk, q) : NULL;
		int closed = q != NULL && e == NULL;

		if (e != NULL) {
			k2mc_warn("leaving the consumer group: %s", rd_kafka_error_string(e));
			rd_kafka_error_destroy(e);
		}
		while (closed && !rd_kafka_consumer_closed(g->rk)) {
			int64_t left = deadline_ms - k2mc_now_ms();

			if (left <= 0) {
				closed = 0;
				break;
			}
			/* serves the final revocation through rebalance_cb */
			rd_kafka_queue_poll_callback(q, (int)(left < 100 ? left : 100));
		}
		if (q != NULL)
			rd_kafka_queue_destroy(q);
		if (closed) {
			rd_kafka_destroy(g->rk);
		} else {
			/* rd_kafka_destroy would wait seconds more for its
			 * threads (perf/FINDINGS.md, issue 24); the process is
			 * about to exit and they end with it. The handle stays reachable, so leak
			 * checkers do not report it. */
			k2mc_warn("left without the coordinator's answer to LeaveGroup (Kafka not "
				  "answering); the group notices after session.timeout.ms");
			abandoned_rk = g->rk;
		}
	}
	for (size_t i = 0; i < g->nreleased; i++)
		free(g->released[i].topic);
	free(g->released);
	free(own_table(g));
	free(g);
}

uint64_t k2mc_group_takeover_waits(const struct k2mc_group *g)
{
	return g->takeover_waits;
}

uint64_t k2mc_group_drains_evicted(const struct k2mc_group *g)
{
	return g->drains_evicted;
}

void k2mc_group_stats(struct k2mc_group *g, struct k2mc_group_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->consumed = g->consumed_released;
	for (size_t i = 0; i < g->nreleased; i++)
		s->lost += g->released[i].lost;
	struct k2mc_part_table *t = own_table(g);

	if (t == NULL)
		return;
	s->partitions = t->n;
	for (size_t i = 0; i < t->n; i++) {
		struct k2mc_part *p = t->parts[i];
		int64_t lo, hi, wm = k2mc_part_watermark(p);

		s->consumed += k2mc_part_consumed(p);
		s->lost += k2mc_part_lost(p);
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
