/* Takeover: when a new owner of a partition may start writing it. The
 * write lease (fence.h) keeps a member from writing once the coordinator
 * may have given its partitions away through a session expiry. Partitions
 * also change hands without one: a static member replaced by a new process
 * with the same group.instance.id (FENCED_INSTANCE_ID, no rebalance), a
 * member removed at the end of a join phase, a LeaveGroup sent by
 * librdkafka after max.poll.interval.ms. Then the old owner's lease may
 * still run while the new owner writes, and an old batch sent in that
 * window overwrites newer values for good.
 *
 * The rule. Every commit k2mc makes carries metadata (it travels with the
 * offset and comes back from OffsetFetch): "k2mc/1 released" when the
 * partition was revoked and drained with nothing left in flight, so its
 * owner will write it no more; "k2mc/1 lease_ms=N" otherwise, N being the
 * committing member's lease. A new owner reads it at assignment:
 * - released: it writes at once (a clean rebalance costs no wait);
 * - lease_ms=N: it hands out nothing for N ms from the assignment;
 * - a commit without k2mc's metadata (another tool, an older k2mc): it waits
 *   its own lease, as the best guess of the old owner's;
 * - no commit at all: no wait (the group is new; see below).
 * Why N from the assignment is enough: the old owner writes only while its
 * lease holds, which ends N ms after the send of its last commit that the
 * coordinator accepted (fence.h). That commit was accepted before this
 * assignment was made (after it, the coordinator refuses the old member's
 * commits: fenced, unknown member or stale generation), so it was sent
 * earlier still, and the lease ends before assignment + N. The lease's own
 * margin covers the bytes still on the wire.
 * Limits: a partition that an owner wrote but never committed (it was lost
 * within the first commit interval of a new group) has no commit, and its
 * new owner does not wait; a member that was only paused, not replaced,
 * could then write for the rest of its lease. The cost: a takeover after a
 * crash waits the old lease (about 38 s at librdkafka's defaults) before
 * the partition is written again.
 * Pure functions: no thread, no state. */
#ifndef K2MC_TAKEOVER_H
#define K2MC_TAKEOVER_H

#include <stddef.h>
#include <stdint.h>

/* Longest metadata k2mc writes, with its NUL (Kafka's default limit,
 * offset.metadata.max.bytes, is 4096). */
#define K2MC_TAKEOVER_MD_MAX 64

/* The metadata of a commit: released (1: drained and revoked) or the
 * committing member's lease in ms. Returns buf. */
char *k2mc_takeover_metadata(char *buf, size_t len, int released, int64_t lease_ms);

/* Why a new owner waits, or does not. */
enum k2mc_takeover_why {
	K2MC_TAKEOVER_NEW = 0,  /* no commit: a new group or partition */
	K2MC_TAKEOVER_RELEASED, /* the previous owner released it cleanly */
	K2MC_TAKEOVER_LEASE,    /* it did not: its recorded lease */
	K2MC_TAKEOVER_UNKNOWN,  /* committed without k2mc's metadata, or unreadable:
				 * our own lease */
};
const char *k2mc_takeover_why_name(enum k2mc_takeover_why w);

/* How long a new owner hands out nothing, from its assignment, given the
 * partition's committed offset (< 0: none) and that commit's metadata. */
int64_t k2mc_takeover_hold_ms(int64_t committed, const void *md, size_t mdlen,
			      int64_t own_lease_ms, enum k2mc_takeover_why *why);

#endif
