/* Offset commits: a thread (k2mc-commit) commits every partition's watermark
 * asynchronously each interval when it moved; k2mc_commit_parts commits a set
 * of partitions synchronously (revocation, shutdown). Never commits past a
 * watermark: the watermark is the only source of offsets. */
#ifndef K2MC_COMMITTER_H
#define K2MC_COMMITTER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "workers/consumer.h"

struct k2mc_committer;

struct k2mc_committer *k2mc_committer_start(rd_kafka_t *rk, k2mc_table_ref *table,
					     int interval_ms);
/* A commit failed: send every watermark on the next round, moved or not. */
void k2mc_committer_force(struct k2mc_committer *c);
void k2mc_committer_stop(struct k2mc_committer *c);

/* Commits the watermarks of parts that moved since their last commit.
 * async=0 waits for the broker. Returns the librdkafka error (NO_ERROR when
 * nothing needed committing). Caller must be the thread allowed to write the
 * parts' committed field (see consumer.h). */
rd_kafka_resp_err_t k2mc_commit_parts(rd_kafka_t *rk, struct k2mc_part **parts, size_t n,
				      int async, int force);

#endif
