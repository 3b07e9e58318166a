/* Watermark window: a ring of (offset, done) indexed by tag, owned by the
 * partition's consumer thread; writers only ever set done flags. */
#include "core/watermark.h"

#include <stdatomic.h>
#include <stdlib.h>

struct k2mc_watermark {
	/* owner only: next tag to hand out, and the oldest tag not passed */
	uint64_t next;
	uint64_t low;
	/* owner only: offset the watermark moves to when low == next */
	int64_t next_offset;
	uint64_t mask;
	/* owner writes offsets[tag & mask] in track before the record is handed
	 * to a writer (published by the ring's release); read by owner only */
	int64_t *offsets;
	/* writers store 1 with release (A1); owner loads with acquire (A2) and
	 * resets to 0 before reusing the slot */
	_Atomic uint8_t *done;
	/* owner stores with release in advance; committer/stats load with acquire */
	_Alignas(64) _Atomic int64_t published;
};

struct k2mc_watermark *k2mc_watermark_new(uint32_t window, int64_t start)
{
	struct k2mc_watermark *wm;

	if (window < 2 || (window & (window - 1)) != 0)
		return NULL;
	wm = aligned_alloc(64, sizeof(*wm));
	if (wm == NULL)
		return NULL;
	wm->offsets = calloc(window, sizeof(*wm->offsets));
	wm->done = calloc(window, sizeof(*wm->done));
	if (wm->offsets == NULL || wm->done == NULL) {
		k2mc_watermark_free(wm);
		return NULL;
	}
	wm->next = 0;
	wm->low = 0;
	wm->mask = window - 1;
	wm->next_offset = start;
	atomic_init(&wm->published, start);
	return wm;
}

void k2mc_watermark_free(struct k2mc_watermark *wm)
{
	if (wm == NULL)
		return;
	free(wm->offsets);
	free((void *)wm->done);
	free(wm);
}

int64_t k2mc_watermark_track(struct k2mc_watermark *wm, int64_t offset)
{
	uint64_t tag = wm->next;

	if (tag - wm->low > wm->mask)
		return -1;
	wm->offsets[tag & wm->mask] = offset;
	wm->next = tag + 1;
	wm->next_offset = offset + 1;
	return (int64_t)tag;
}

void k2mc_watermark_untrack_last(struct k2mc_watermark *wm)
{
	if (wm->next == wm->low)
		return;
	wm->next--;
	wm->next_offset = wm->offsets[wm->next & wm->mask];
}

void k2mc_watermark_ack(struct k2mc_watermark *wm, uint64_t tag)
{
	/* A1: release, pairs with A2 in advance: the writer's acknowledgement
	 * happened-before the owner moves the watermark past this record. */
	atomic_store_explicit(&wm->done[tag & wm->mask], 1, memory_order_release);
}

int64_t k2mc_watermark_advance(struct k2mc_watermark *wm)
{
	int64_t wmark;

	while (wm->low != wm->next) {
		_Atomic uint8_t *d = &wm->done[wm->low & wm->mask];

		/* A2: acquire, pairs with A1 in ack. */
		if (atomic_load_explicit(d, memory_order_acquire) == 0)
			break;
		/* No writer can touch this flag again until the owner re-tracks
		 * the slot, and that hand-off goes through a ring release. */
		atomic_store_explicit(d, 0, memory_order_relaxed);
		wm->low++;
	}
	wmark = wm->low == wm->next ? wm->next_offset : wm->offsets[wm->low & wm->mask];
	atomic_store_explicit(&wm->published, wmark, memory_order_release);
	return wmark;
}

uint64_t k2mc_watermark_inflight(const struct k2mc_watermark *wm)
{
	return wm->next - wm->low;
}

void k2mc_watermark_skip_to(struct k2mc_watermark *wm, int64_t to)
{
	if (to > wm->next_offset)
		wm->next_offset = to;
}

int64_t k2mc_watermark_get(const struct k2mc_watermark *wm)
{
	return atomic_load_explicit(&((struct k2mc_watermark *)wm)->published, memory_order_acquire);
}
