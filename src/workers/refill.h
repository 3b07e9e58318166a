/* --refill: notices that a memcached server lost its contents (a restart, by
 * "stats" pid/uptime; a flush or silent loss, by per-partition sentinel
 * items) and rewrites the held partitions' records that map to it, without
 * ever putting an older value over a newer one (the argument is in
 * refill.c). Its own thread (k2mc-refill), its own librdkafka handle (no
 * group membership, never commits) and its own connections. Not the live
 * path (writer.c), which only notes, per server under refill, the keys it
 * writes (k2mc_refill_note). */
#ifndef K2MC_REFILL_H
#define K2MC_REFILL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "workers/consumer.h"

struct k2mc_refill;

/* Bit s: server s is under refill, and its filter (refill.c) must learn
 * every key the live path writes or deletes there. Written by the refill
 * thread (seq_cst, after the filter is cleared and published); read by the
 * writers (seq_cst) before each command is queued. */
extern _Atomic uint64_t k2mc_refill_mask;
void k2mc_refill_note_slow(int s, const char *key, size_t klen);

/* Writer side, for every command queued on server s, before any byte of it
 * is sent: cheap (one load) while no refill runs. */
static inline void k2mc_refill_note(int s, const char *key, size_t klen)
{
	if (atomic_load_explicit(&k2mc_refill_mask, memory_order_seq_cst) & (1ull << s))
		k2mc_refill_note_slow(s, key, klen);
}

/* cfg and table (the group's, consumer.h) must outlive it. NULL with the
 * reason in err. */
struct k2mc_refill *k2mc_refill_new(const struct k2mc_config *cfg, k2mc_table_ref *table,
				    char *err, size_t errlen);
int k2mc_refill_start(struct k2mc_refill *rf);
/* Ends the thread (a refill in progress stops where it is; its sentinels
 * stay missing, so the next run refills again). Before the table is freed. */
void k2mc_refill_stop(struct k2mc_refill *rf);
void k2mc_refill_free(struct k2mc_refill *rf);

/* Any thread (relaxed): records rewritten so far, losses seen, and 1 while
 * server s is being refilled. */
uint64_t k2mc_refill_records(const struct k2mc_refill *rf);
uint64_t k2mc_refill_losses(const struct k2mc_refill *rf);
int k2mc_refill_active(const struct k2mc_refill *rf, int s);

#endif
