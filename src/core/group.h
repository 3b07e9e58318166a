/* Consumer-group membership: the librdkafka consumer, subscription, and the
 * rebalance callback that turns assignments into running partitions and
 * revocations into drained, committed, freed ones. Runs on the main thread
 * (it serves the consumer queue); it owns the RCU-published partition table. */
#ifndef K2MC_GROUP_H
#define K2MC_GROUP_H

#include <librdkafka/rdkafka.h>
#include <stdio.h>

#include "core/committer.h"
#include "core/config.h"
#include "core/fence.h"
#include "core/partitions.h"
#include "ring/park.h"

struct k2mc_group;

/* The consumer's librdkafka configuration (k2mc's settings, the prefetch
 * derived from --max-buffer-bytes, then every -X), without callbacks. NULL
 * with the reason in err. */
rd_kafka_conf_t *k2mc_group_conf(const struct k2mc_config *cfg, char *err, size_t errlen);
/* --check-config: builds the consumer's configuration and has librdkafka
 * check it as a whole, as creating the consumer does (files it reads,
 * combinations of properties), through a handle that knows no broker, so
 * nothing is connected to. Not done for SASL GSSAPI or OAUTHBEARER OIDC,
 * whose set-up runs kinit or fetches a token (*partial set). 0, or -EINVAL
 * with the reason in err: what k2mc_group_new would stop at (exit 2). */
int k2mc_group_check(const struct k2mc_config *cfg, char *err, size_t errlen, int *partial);
/* What the group uses that is built before it (main builds bottom-up);
 * each must outlive the group. */
struct k2mc_budget;
struct k2mc_mapping;
struct park;
struct k2mc_group_deps {
	/* the writers' fence: revoked on every revocation and lost
	 * assignment, renewed by the synchronous commits of released
	 * partitions and by the committer's; NULL: no fencing */
	struct k2mc_fence *fence;
	/* --max-buffer-bytes (core/budget.h): assigned partitions take their
	 * byte credit from it; NULL: no bound */
	struct k2mc_budget *budget;
	/* the compiled templates, handed to every partition's consumer
	 * thread (consumer.h); must outlive the group. NULL: route by the
	 * record key */
	const struct k2mc_mapping *map;
	/* the writers' doorbells ([nwriters], park_array_new): each partition's
	 * consumer thread rings bells[i] after pushing to writer i's ring */
	struct park *bells;
	int nwriters;
	/* asked between the slices of slow start-up calls: non-zero = give up
	 * (a signal arrived); k2mc_group_subscribe then returns -EINTR. NULL:
	 * never */
	int (*interrupted)(void);
};
/* Builds the consumer from cfg (and its -X properties). On failure returns
 * NULL with a one-line reason in err; *usage is set when the reason is the
 * configuration, refused by librdkafka (exit 2), rather than a runtime
 * failure (exit 1). */
struct k2mc_group *k2mc_group_new(const struct k2mc_config *cfg,
				  const struct k2mc_group_deps *deps, char *err, size_t errlen,
				  int *usage);
k2mc_table_ref *k2mc_group_table(struct k2mc_group *g);
rd_kafka_t *k2mc_group_rk(struct k2mc_group *g);
/* Starts the group's committer thread (committer.h) on its consumer, its
 * partition table and its fence: every interval_ms, and its commits keep
 * the lease. 0, or -ENOMEM / -EAGAIN. */
int k2mc_group_start_committer(struct k2mc_group *g, int interval_ms);
/* Stops it (NULL g, or none started: nothing), so that the commits that
 * follow (the release's) are the synchronous ones. */
void k2mc_group_stop_committer(struct k2mc_group *g);
/* The outcome of the last synchronous commit (revocation, shutdown):
 * NO_ERROR, or why the offsets printed as committed are the last ones
 * Kafka acknowledged rather than the watermarks. */
rd_kafka_resp_err_t k2mc_group_last_commit_error(const struct k2mc_group *g);
/* Checks first that a broker answers a metadata request within -X
 * socket.connection.setup.timeout.ms (default 30 s): -EHOSTUNREACH, logged
 * with the brokers named, if none does (-EINTR if interrupted meanwhile;
 * -EACCES, logged, as soon as a broker refuses the SASL login); then
 * subscribes (0 or -EINVAL). */
int k2mc_group_subscribe(struct k2mc_group *g);

/* Serves rebalances, errors and commit results for up to timeout_ms. */
void k2mc_group_poll(struct k2mc_group *g, int timeout_ms);
/* k2mc_now_ms of the first assignment, 0 before it: rates in the
 * summary are measured from here, not from the group join. */
int64_t k2mc_group_first_assign_ms(const struct k2mc_group *g);
/* A fatal librdkafka error (or a refused SASL login) happened: the reason,
 * or NULL. */
const char *k2mc_group_fatal(struct k2mc_group *g);
/* -e: every assigned partition reached its end and is acknowledged. */
int k2mc_group_all_done(struct k2mc_group *g);

/* Stops, drains and commits every assigned partition (shutdown). Records
 * still unwritten at deadline_ms are left uncommitted; returns their count. */
uint64_t k2mc_group_release_all(struct k2mc_group *g, int64_t deadline_ms,
				void (*on_timeout)(void *), void *arg);
/* Leaves the group and destroys the consumer, waiting for the coordinator
 * no later than deadline_ms (k2mc_now_ms). */
void k2mc_group_close(struct k2mc_group *g, int64_t deadline_ms);

/* Main thread: sums for the stats line. */
struct k2mc_group_stats {
	size_t partitions;
	uint64_t consumed;   /* since start, including released partitions */
	uint64_t ring_fill;
	int64_t lag;         /* high watermark - watermark, over partitions */
	uint64_t lost;       /* lost to retention since start, released partitions too */
};
void k2mc_group_stats(struct k2mc_group *g, struct k2mc_group_stats *s);
/* Main thread: partitions assigned so far whose first writes waited for the
 * previous owner's lease (takeover.h). */
uint64_t k2mc_group_takeover_waits(const struct k2mc_group *g);
/* Main thread: revocation drains ended at once because a commit showed the
 * group no longer counts this member (committer.c), in this run. */
uint64_t k2mc_group_drains_evicted(const struct k2mc_group *g);
/* "topic[p]=offset ..." of every partition committed at release. */
void k2mc_group_print_committed(struct k2mc_group *g, FILE *out);

/* Main thread: every partition released so far (revocations, shutdown). */
struct k2mc_released_part {
	char *topic;
	int32_t partition;
	int64_t committed;   /* offset committed at its last release, -1 = none */
	uint64_t consumed;   /* records consumed over all its assignments */
	uint64_t lost;       /* records lost to retention over all its assignments */
};
/* Valid until the next k2mc_group_poll or release. */
const struct k2mc_released_part *k2mc_group_released(const struct k2mc_group *g, size_t *n);

#endif
