/* Fencing: writers may send to Memcached only while this process holds a
 * fresh proof that the consumer group still counts it as a member, so a
 * member that was paused or cut off from Kafka never writes over the values
 * of the partitions' new owner. Not the commit logic (committer.c) and not
 * the rebalance logic (group.c): they renew and revoke the proof here.
 *
 * The proof (a lease). A generation-checked OffsetCommit that the
 * coordinator accepted was received while the member was in the group. Real
 * Kafka coordinators (classic protocol) count such a commit as a heartbeat;
 * librdkafka's mock cluster does not, it refreshes a member's session only
 * on Heartbeat, JoinGroup and SyncGroup. So the lease does not rely on it:
 * while the member runs, librdkafka sends a heartbeat every
 * heartbeat.interval.ms, so the last heartbeat the coordinator received
 * before a commit sent at t_send was sent after t_send - heartbeat.interval.ms.
 * The coordinator cannot evict the member before that heartbeat's arrival +
 * session.timeout.ms. Writers may therefore send until
 *     t_send + session.timeout.ms - heartbeat.interval.ms - margin
 * where margin covers the time from a writer's last check to the bytes
 * reaching memcached. t_send is read before the commit is handed to
 * librdkafka, so it is never later than the real send.
 *
 * Clock: k2mc_now_ms (clock.h), CLOCK_BOOTTIME, which keeps counting while
 * the host is suspended (CLOCK_MONOTONIC does not): a suspended host must
 * come back with its lease expired, as the coordinator sees it. */
#ifndef K2MC_FENCE_H
#define K2MC_FENCE_H

#include <stdint.h>

#include "core/clock.h" /* every fence time is a k2mc_now_ms() value */

struct k2mc_fence;

/* lease_ms: session.timeout.ms - heartbeat.interval.ms - margin (> 0). */
struct k2mc_fence *k2mc_fence_new(int64_t lease_ms);
void k2mc_fence_free(struct k2mc_fence *f);

/* Committer (or main's synchronous commit): a commit sent at sent_at_ms was
 * acknowledged without error, for generation `gen` (k2mc_fence_generation at
 * the time it was sent). A renewal for an older generation than the current
 * one is ignored: it proves nothing about the new assignment. */
void k2mc_fence_renew(struct k2mc_fence *f, uint64_t gen, int64_t sent_at_ms);

/* Main thread: the assignment changed or was lost; or the committer: a
 * commit was refused because the coordinator does not know this member.
 * Ends the lease at once and starts a new generation; writers send nothing
 * until a commit made after this call is acknowledged. */
uint64_t k2mc_fence_revoke(struct k2mc_fence *f);
/* Main thread: a rebalance began. A commit the coordinator accepts during the
 * join phase extends the member's session, not its membership: the phase
 * ends, and members that have not rejoined are removed, at most
 * max.poll.interval.ms (the rebalance timeout) after it began. So until the
 * next revoke no renewal extends the lease past at_ms (fence clock), and a
 * lease already past it is shortened to it. */
void k2mc_fence_cap(struct k2mc_fence *f, int64_t at_ms);
uint64_t k2mc_fence_generation(const struct k2mc_fence *f);

/* Writers, before and while sending (acquire): the fence-clock time until
 * which sending is allowed; 0 when there is no lease. A NULL fence allows
 * everything (tools that are not group members): INT64_MAX. */
int64_t k2mc_fence_deadline(const struct k2mc_fence *f);
/* Convenience: k2mc_now_ms() < k2mc_fence_deadline(f). */
int k2mc_fence_held(const struct k2mc_fence *f);

/* The lease length, for messages and the committer's renewal interval. */
int64_t k2mc_fence_lease_ms(const struct k2mc_fence *f);

#endif
