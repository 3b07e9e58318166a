/* Creation and destruction of the SPSC ring; the hot path is inline in ring.h. */
#include "ring/ring.h"

#include <stdlib.h>

struct ring *ring_new(size_t size, uint64_t start)
{
	struct ring *r;

	if (size < 2 || (size & (size - 1)) != 0)
		return NULL;
	r = aligned_alloc(64, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->slots = calloc(size, sizeof(*r->slots));
	if (r->slots == NULL) {
		free(r);
		return NULL;
	}
	r->mask = size - 1;
	atomic_init(&r->head, start);
	atomic_init(&r->tail, start);
	r->tail_cache = start;
	r->head_cache = start;
	return r;
}

void ring_free(struct ring *r)
{
	if (r == NULL)
		return;
	free(r->slots);
	free(r);
}
