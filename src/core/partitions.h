/* The partition table: the assigned partitions, as every thread other than
 * a partition's own consumer sees them (writers, the committer, refill, the
 * group, the snapshot). A leaf of the shared model: it names a partition
 * (struct k2mc_part, opaque) and what may be read or signalled on it from
 * outside; the partition's thread and its life (new, start, stop, join) are
 * workers/consumer.h's, and consumer.c, which owns struct k2mc_part,
 * implements the accessors below. Not a place for consumer logic. */
#ifndef K2MC_PARTITIONS_H
#define K2MC_PARTITIONS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <urcu.h>

struct k2mc_budget;
struct ring;

struct k2mc_part;

/* The set of assigned partitions: immutable once published. The main thread
 * publishes a new table (k2mc_table_publish) and frees the old one after an
 * RCU grace period; writers and the committer read it inside
 * k2mc_table_read_lock/unlock. liburcu supplies the grace periods; the
 * pointer is a C11 atomic (release/acquire) rather than rcu_assign_pointer/
 * rcu_dereference so that ThreadSanitizer sees the publication, and the two
 * annotations below tell it what synchronize_rcu guarantees: every read-side
 * section that saw the old table happens-before the grace period ends. */
struct k2mc_part_table {
	size_t n;
	struct k2mc_part *parts[];
};

typedef struct k2mc_part_table *_Atomic k2mc_table_ref;

/* The grace-period annotations need an address of their own: TSan treats a
 * release store to the table pointer as overwriting that address's history,
 * which would drop the readers' releases. */
extern char k2mc_table_grace;
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define K2MC_TSAN_RELEASE() __tsan_release(&k2mc_table_grace)
#define K2MC_TSAN_ACQUIRE() __tsan_acquire(&k2mc_table_grace)
#else
#define K2MC_TSAN_RELEASE() ((void)0)
#define K2MC_TSAN_ACQUIRE() ((void)0)
#endif

/* Reader side (thread registered with rcu_register_thread). */
static inline struct k2mc_part_table *k2mc_table_read_lock(k2mc_table_ref *ref)
{
	rcu_read_lock();
	return atomic_load_explicit(ref, memory_order_acquire);
}

static inline void k2mc_table_read_unlock(k2mc_table_ref *ref)
{
	(void)ref;
	K2MC_TSAN_RELEASE();
	rcu_read_unlock();
}

/* Publisher side (the main thread only): returns the old table, which no
 * reader can hold any more. */
static inline struct k2mc_part_table *k2mc_table_publish(k2mc_table_ref *ref,
							  struct k2mc_part_table *t)
{
	struct k2mc_part_table *old = atomic_load_explicit(ref, memory_order_relaxed);

	atomic_store_explicit(ref, t, memory_order_release);
	synchronize_rcu();
	K2MC_TSAN_ACQUIRE();
	return old;
}

/* ---- one partition, from outside its thread ------------------------------- */

const char *k2mc_part_topic(const struct k2mc_part *p);
int32_t k2mc_part_id(const struct k2mc_part *p);

/* Writer side. */
struct ring *k2mc_part_ring(struct k2mc_part *p, int writer);
/* The budget its records were counted in (the same for every part of a
 * process; NULL: none): a writer gives back k2mc_record_bytes of every
 * record it destroys, once per batch. */
struct k2mc_budget *k2mc_part_budget(const struct k2mc_part *p);
void k2mc_part_ack(struct k2mc_part *p, uint64_t tag);
void k2mc_part_wake(struct k2mc_part *p);
/* Set when k2mc gives up on a partition's pending records: by the main
 * thread (shutdown timeout, a lost assignment), or by the committer when a
 * commit shows the group no longer counts this member while the partition
 * drains. Writers drop batches that hold its records, and its drain ends at
 * once. */
void k2mc_part_abandon(struct k2mc_part *p);
int k2mc_part_abandoned(const struct k2mc_part *p);
/* Any thread (acquire): 1 once k2mc_part_request_stop was called, i.e.
 * while the partition drains and after. */
int k2mc_part_stop_requested(const struct k2mc_part *p);

/* --on-invalid fail (or a dead letter that cannot be delivered): the record
 * at `offset` must never be acknowledged, nor anything after it. Any thread;
 * the lowest offset reported wins. From then on the consumer thread fetches
 * nothing more, writers neither send nor acknowledge this partition's
 * records at or past it, and a stop drains only the records below it, so
 * the watermark (and every commit) ends exactly at it. */
void k2mc_part_fail(struct k2mc_part *p, int64_t offset);
/* The offset given to k2mc_part_fail, or INT64_MAX if none. Any thread. */
int64_t k2mc_part_failed_at(const struct k2mc_part *p);

/* Unique for the life of the process (a freed part's address may be reused
 * by a new one; its uid is not): lets a thread that only remembers a part
 * find out whether it is still the one in the table. */
uint64_t k2mc_part_uid(const struct k2mc_part *p);

/* Any thread. */
int64_t k2mc_part_watermark(const struct k2mc_part *p);  /* -1 = nothing yet */
int k2mc_part_done(const struct k2mc_part *p);           /* -e: at end, all acknowledged */
uint64_t k2mc_part_consumed(const struct k2mc_part *p);
uint64_t k2mc_part_ring_fill(struct k2mc_part *p);       /* records in its rings */
/* Records deleted by retention before this assignment read them: the
 * offset it was to read next (the committed one at first) had left the log
 * and librdkafka resumed at the log start. */
uint64_t k2mc_part_lost(const struct k2mc_part *p);

/* Offset last handed to rd_kafka_commit: written by the committer while p is
 * in the table, by the main thread after p left it (an RCU grace period
 * separates the two); read by the thread that writes it. */
int64_t k2mc_part_committed(const struct k2mc_part *p);
void k2mc_part_set_committed(struct k2mc_part *p, int64_t off);
/* Immutable: the group's committed offset when the part was assigned, -1
 * if none or unknown. */
int64_t k2mc_part_assigned_at(const struct k2mc_part *p);
/* Any thread: 1 while the takeover wait (k2mc_part_opts.hold_until_ms)
 * still runs. */
int k2mc_part_holding(const struct k2mc_part *p);
/* Main thread, after the part's thread is joined with nothing left
 * unacknowledged: its last commit says so (group.c, takeover), so the next
 * owner need not wait. Read by the thread that commits it. */
void k2mc_part_set_released(struct k2mc_part *p);
int k2mc_part_released(const struct k2mc_part *p);

/* What the snapshot shows of a partition, read at one moment (any thread;
 * the main thread in practice, about once a second). */
struct k2mc_part_view {
	const char *topic;  /* valid while p is */
	int32_t partition;
	uint64_t consumed;  /* this assignment */
	uint64_t lost;      /* lost to retention, this assignment */
	int64_t committed;  /* offset last handed to a commit, -1 = none */
	int64_t watermark;  /* every record below it acknowledged; -1 = unknown */
	uint64_t ring_fill; /* records in its rings */
	/* the log start and end (high watermark) as librdkafka last saw them in
	 * a fetch response (no request is made); -1 = unknown */
	int64_t log_start, end;
};
void k2mc_part_view(struct k2mc_part *p, struct k2mc_part_view *v);

#endif
