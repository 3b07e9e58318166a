/* Per-partition watermark: the offset below which every record the consumer
 * handed to the writers has been acknowledged (by Memcached, or by a counted
 * skip). Writers acknowledge out of order; only the owning consumer thread
 * advances the watermark. Not a commit policy: committer.c decides when. */
#ifndef K2MC_WATERMARK_H
#define K2MC_WATERMARK_H

#include <stdint.h>

struct k2mc_watermark;

/* window: power of two, the most records that may be in flight at once (it
 * bounds memory and is the consumer's backpressure). start: the offset the
 * partition starts at, or -1 if not yet known (first track() sets it). */
struct k2mc_watermark *k2mc_watermark_new(uint32_t window, int64_t start);
void k2mc_watermark_free(struct k2mc_watermark *wm);

/* Owner thread. Registers the next record (offsets strictly increasing) and
 * returns its tag for k2mc_watermark_ack, or -1 if the window is full: call
 * k2mc_watermark_advance and retry later. */
int64_t k2mc_watermark_track(struct k2mc_watermark *wm, int64_t offset);

/* Owner thread: undo the last track() of a record that was never handed to
 * a writer (a stop arrived first). */
void k2mc_watermark_untrack_last(struct k2mc_watermark *wm);

/* Any thread: the record with this tag is done. Each tag exactly once. */
void k2mc_watermark_ack(struct k2mc_watermark *wm, uint64_t tag);

/* Owner thread: move past acknowledged records and publish the result.
 * Returns the committable offset (-1 while nothing is known). */
int64_t k2mc_watermark_advance(struct k2mc_watermark *wm);

/* Owner thread: records tracked and not yet passed by advance. */
uint64_t k2mc_watermark_inflight(const struct k2mc_watermark *wm);

/* Owner thread: there is no record at offsets [from, to): a gap in the log
 * (compaction, transaction markers, the end of the partition). Lets the
 * watermark move to `to` once everything before it is acknowledged. */
void k2mc_watermark_skip_to(struct k2mc_watermark *wm, int64_t to);

/* Any thread (acquire): the last value published by advance. */
int64_t k2mc_watermark_get(const struct k2mc_watermark *wm);

#endif
