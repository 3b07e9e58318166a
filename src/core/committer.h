/* Offset commits, and through them the membership lease (fence.h): a thread
 * (k2mc-commit) commits every assigned partition's watermark each interval,
 * moved or not, on a queue of its own, and renews the lease with each commit
 * the coordinator acknowledges; k2mc_commit_parts_sync commits a set of
 * partitions and waits for the answer until a deadline (revocation,
 * shutdown). Never commits past a watermark: the watermark is the only
 * source of offsets. */
#ifndef K2MC_COMMITTER_H
#define K2MC_COMMITTER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "core/fence.h"
#include "core/partitions.h"

struct k2mc_committer;

/* interval_ms: the commit interval; the lease is renewed at least every
 * lease/3 whatever it says, and every 100 ms while no lease is held.
 * fence may be NULL (no lease to renew). */
struct k2mc_committer *k2mc_committer_start(rd_kafka_t *rk, k2mc_table_ref *table,
					     int interval_ms, struct k2mc_fence *fence);
void k2mc_committer_stop(struct k2mc_committer *c);
/* Committer thread -> main (relaxed; for the stats and the summary): the
 * error of the last commit answered, RD_KAFKA_RESP_ERR_NO_ERROR if it went
 * through, and how many commits failed in all. */
rd_kafka_resp_err_t k2mc_committer_last_error(const struct k2mc_committer *c);
uint64_t k2mc_committer_failures(const struct k2mc_committer *c);

/* Commits the watermark of every part that has one and waits for the
 * coordinator's answer until deadline_ms (k2mc_now_ms, clock.h): NO_ERROR, the error, or RD_KAFKA_RESP_ERR__TIMED_OUT.
 * Acknowledged offsets are recorded with k2mc_part_set_committed, and an
 * acknowledgement renews the fence. Caller must be the thread allowed to
 * write the parts' committed field (see partitions.h). */
rd_kafka_resp_err_t k2mc_commit_parts_sync(rd_kafka_t *rk, struct k2mc_part **parts, size_t n,
					   struct k2mc_fence *fence, int64_t deadline_ms);

#endif
