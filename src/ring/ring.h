/* Bounded single-producer/single-consumer ring of record references.
 * One ring connects one consumer thread (producer side) to one writer thread
 * (consumer side); it never allocates after creation and never blocks: waiting
 * is the caller's business (see park.h). This header and ring.c are the only
 * places whose correctness rests on the memory-ordering rules written below. */
#ifndef K2MC_RING_H
#define K2MC_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* What travels through a ring: an opaque record pointer and a tag (the
 * partition-local sequence number the watermark tracks). */
struct ring_item {
	void *ptr;
	uint64_t tag;
};

/* Inline because push/peek/release run once per record. Indices are free-running
 * 64-bit counters: slot = index & mask, full when head - tail == size. */
struct ring {
	/* P: written by the producer only (release, P2); read by the consumer with acquire (C1) */
	_Alignas(64) _Atomic uint64_t head;
	/* producer-private copy of tail, refreshed only when the ring looks full */
	uint64_t tail_cache;
	/* C: written by the consumer only (release, C2); read by the producer with acquire (P1) */
	_Alignas(64) _Atomic uint64_t tail;
	/* consumer-private copy of head, refreshed only when the ring looks empty */
	uint64_t head_cache;
	/* immutable after ring_new */
	_Alignas(64) uint64_t mask;
	struct ring_item *slots;
};

/* size must be a power of two >= 2; start is the initial index (tests start
 * just below the 64-bit wrap point). Returns NULL on bad size or ENOMEM. */
struct ring *ring_new(size_t size, uint64_t start);
void ring_free(struct ring *r);

static inline size_t ring_size(const struct ring *r)
{
	return (size_t)r->mask + 1;
}

/* Producer side. Returns 0, or -1 when the ring is full. */
static inline int ring_push(struct ring *r, const struct ring_item *it)
{
	uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);

	if (h - r->tail_cache > r->mask) {
		/* P1: acquire tail, pairs with C2's release in ring_release: the
		 * consumer's tail update is our licence to overwrite the slot it
		 * has finished reading. */
		r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
		if (h - r->tail_cache > r->mask)
			return -1;
	}
	r->slots[h & r->mask] = *it;
	/* P2: release head, pairs with C1's acquire in ring_peek: the slot
	 * contents are visible before the consumer can see the new head. */
	atomic_store_explicit(&r->head, h + 1, memory_order_release);
	return 0;
}

/* Consumer side: copy up to max items from the oldest, without consuming
 * them; the writer releases them only once Memcached acknowledged them. */
static inline size_t ring_peek(struct ring *r, struct ring_item *out, size_t max)
{
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
	size_t n = 0;

	/* head_cache >= tail always: the consumer never passes a head it saw. */
	if (r->head_cache - t < max) {
		/* C1: acquire head, pairs with P2's release in ring_push. */
		r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
	}
	while (n < max && t != r->head_cache) {
		out[n++] = r->slots[t & r->mask];
		t++;
	}
	return n;
}

/* Consumer side: hand n peeked slots back to the producer. */
static inline void ring_release(struct ring *r, size_t n)
{
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);

	/* C2: release tail, pairs with P1's acquire in ring_push: our reads of
	 * the slots happen before the producer may overwrite them. */
	atomic_store_explicit(&r->tail, t + n, memory_order_release);
}

/* Either side, for stats and drain checks: items pushed and not released.
 * Both loads are acquire so a thread that sees 0 also sees the releases. */
static inline size_t ring_count(struct ring *r)
{
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);

	return (size_t)(h - t);
}

#endif
