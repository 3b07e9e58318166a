/* Criterion suite for the SPSC ring (ring/ring.h) and the parking it is paired
 * with (ring/park.h): single-thread edge cases with indices at the 64-bit wrap,
 * then two-thread stress runs that check every tagged item arrives exactly once
 * and in order. Not a benchmark: bench/ measures speed. */
#include "ring/park.h"
#include "ring/ring.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* TSan makes every atomic and every slot access an instrumented call; half
 * the items (~15,000 laps of a 64-slot ring) keep each run near a second. */
#ifdef UNDER_TSAN
#define STRESS_ITEMS 1000000ULL
#else
#define STRESS_ITEMS 2000000ULL
#endif
#define STRESS_RING 64
#define STRESS_BATCH 64

/* Like ck's test_valid: indices start just below the wrap point, so the
 * free-running 64-bit head and tail overflow within the first few items. */
#define NEAR_WRAP (UINT64_MAX - 2)

/* An item says who pushed it and which of its sequence numbers it is: ptr
 * carries (producer id << 48 | low 48 bits of seq), tag carries seq. A torn or
 * stale slot shows up as a ptr that does not match its tag. */
static struct ring_item make_item(uint64_t producer, uint64_t seq)
{
	struct ring_item it = {
		.ptr = (void *)(uintptr_t)((producer << 48) | (seq & ((1ULL << 48) - 1))),
		.tag = seq,
	};
	return it;
}

static int item_is(const struct ring_item *it, uint64_t producer, uint64_t seq)
{
	struct ring_item want = make_item(producer, seq);

	return it->ptr == want.ptr && it->tag == want.tag;
}

Test(ring, bad_sizes_are_rejected)
{
	const size_t bad[] = { 0, 1, 3, 6, 12, 100, ((size_t)1 << 20) + 1 };
	const size_t good[] = { 2, 4, 64, 4096 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_null(ring_new(bad[i], 0), "ring_new(%zu) must fail", bad[i]);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct ring *r = ring_new(good[i], NEAR_WRAP);

		cr_assert_not_null(r, "ring_new(%zu) must succeed", good[i]);
		cr_expect_eq(ring_size(r), good[i]);
		ring_free(r);
	}
	ring_free(NULL);
}

Test(ring, empty_ring_peeks_nothing)
{
	struct ring *r = ring_new(8, NEAR_WRAP);
	struct ring_item out[8];

	cr_assert_not_null(r);
	cr_expect_eq(ring_size(r), 8);
	cr_expect_eq(ring_count(r), 0);
	cr_expect_eq(ring_peek(r, out, 8), 0);
	cr_expect_eq(ring_peek(r, out, 1), 0);
	cr_expect_eq(ring_peek(r, out, 0), 0);
	ring_free(r);
}

Test(ring, fills_to_exactly_size_then_push_fails)
{
	const uint64_t starts[] = { 0, NEAR_WRAP, UINT64_MAX, UINT64_MAX - 7 };

	for (size_t s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		struct ring *r = ring_new(8, starts[s]);
		struct ring_item it, out[16];

		cr_assert_not_null(r);
		for (uint64_t i = 0; i < 8; i++) {
			it = make_item(1, i);
			cr_assert_eq(ring_push(r, &it), 0, "push %" PRIu64 " of 8 (start %" PRIu64 ")",
				     i, starts[s]);
			cr_assert_eq(ring_count(r), i + 1);
		}
		it = make_item(1, 8);
		cr_expect_eq(ring_push(r, &it), -1, "push into a full ring (start %" PRIu64 ")",
			     starts[s]);
		cr_expect_eq(ring_push(r, &it), -1, "a failed push must not change the ring");
		cr_expect_eq(ring_count(r), 8);
		cr_assert_eq(ring_peek(r, out, 16), 8, "peek returns what is there, not max");
		for (uint64_t i = 0; i < 8; i++)
			cr_expect(item_is(&out[i], 1, i), "slot %" PRIu64 " (start %" PRIu64 ")", i,
				  starts[s]);
		ring_free(r);
	}
}

Test(ring, peek_does_not_consume)
{
	struct ring *r = ring_new(8, NEAR_WRAP);
	struct ring_item it, a[8], b[8];

	cr_assert_not_null(r);
	for (uint64_t i = 0; i < 3; i++) {
		it = make_item(2, i);
		cr_assert_eq(ring_push(r, &it), 0);
	}
	cr_assert_eq(ring_peek(r, a, 8), 3);
	cr_assert_eq(ring_peek(r, b, 8), 3, "a second peek sees the same items");
	cr_expect_eq(ring_count(r), 3);
	for (uint64_t i = 0; i < 3; i++) {
		cr_expect(item_is(&a[i], 2, i));
		cr_expect(item_is(&b[i], 2, i));
	}
	cr_assert_eq(ring_peek(r, b, 2), 2, "peek stops at max");
	cr_expect(item_is(&b[0], 2, 0));
	cr_expect(item_is(&b[1], 2, 1));
	/* After a partial release the next peek starts at the first unreleased. */
	ring_release(r, 1);
	cr_assert_eq(ring_peek(r, b, 8), 2);
	cr_expect(item_is(&b[0], 2, 1));
	cr_expect(item_is(&b[1], 2, 2));
	ring_free(r);
}

Test(ring, release_frees_slots)
{
	struct ring *r = ring_new(4, NEAR_WRAP);
	struct ring_item it, out[4];
	uint64_t seq = 0;

	cr_assert_not_null(r);
	for (; seq < 4; seq++) {
		it = make_item(3, seq);
		cr_assert_eq(ring_push(r, &it), 0);
	}
	it = make_item(3, seq);
	cr_assert_eq(ring_push(r, &it), -1);
	/* A peek alone frees nothing: the writer holds items until acknowledged. */
	cr_assert_eq(ring_peek(r, out, 4), 4);
	cr_assert_eq(ring_push(r, &it), -1, "peek must not free a slot");
	ring_release(r, 1);
	cr_expect_eq(ring_count(r), 3);
	cr_assert_eq(ring_push(r, &it), 0, "one release frees exactly one slot");
	seq++;
	it = make_item(3, seq);
	cr_assert_eq(ring_push(r, &it), -1);
	/* ring_release hands back peeked slots only (ring.h), so peek first. */
	cr_assert_eq(ring_peek(r, out, 4), 4);
	cr_expect(item_is(&out[0], 3, 1));
	cr_expect(item_is(&out[3], 3, 4));
	ring_release(r, 4);
	cr_expect_eq(ring_count(r), 0);
	cr_expect_eq(ring_peek(r, out, 4), 0);
	for (uint64_t i = 0; i < 4; i++) {
		it = make_item(3, seq + i);
		cr_assert_eq(ring_push(r, &it), 0, "a fully released ring takes size items again");
	}
	cr_assert_eq(ring_peek(r, out, 4), 4);
	for (uint64_t i = 0; i < 4; i++)
		cr_expect(item_is(&out[i], 3, seq + i));
	ring_free(r);
}

Test(ring, fifo_order)
{
	struct ring *r = ring_new(16, NEAR_WRAP);
	struct ring_item it, out[16];
	uint64_t pushed = 0, seen = 0;

	cr_assert_not_null(r);
	/* Interleave pushes and partial drains so order is checked across a
	 * ring that never fills or empties in step with the slot index. */
	for (int round = 0; round < 100; round++) {
		for (int i = 0; i < 1 + round % 7; i++) {
			it = make_item(4, pushed);
			if (ring_push(r, &it) == 0)
				pushed++;
		}
		size_t n = ring_peek(r, out, 1 + (size_t)(round % 5));

		for (size_t i = 0; i < n; i++)
			cr_assert(item_is(&out[i], 4, seen + i), "round %d: item %zu is tag %" PRIu64
				  ", expected %" PRIu64, round, i, out[i].tag, seen + i);
		ring_release(r, n);
		seen += n;
	}
	cr_expect_eq(ring_count(r), pushed - seen);
	ring_free(r);
}

/* Many laps around small rings from several starting indices, with every fill
 * level, so both the 64-bit counter overflow and the slot index wrap are
 * exercised with items in flight across them. */
Test(ring, indices_across_the_64_bit_wrap)
{
	const uint64_t starts[] = { NEAR_WRAP, UINT64_MAX, UINT64_MAX - 63, 0 };
	const size_t sizes[] = { 2, 4, 8, 64 };

	for (size_t s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
			size_t size = sizes[z];
			struct ring *r = ring_new(size, starts[s]);
			struct ring_item it, out[64];
			uint64_t pushed = 0, seen = 0;

			cr_assert_not_null(r);
			for (int lap = 0; lap < 5000; lap++) {
				size_t fill = 1 + (size_t)lap % size;

				while (ring_count(r) < fill) {
					it = make_item(5, pushed);
					cr_assert_eq(ring_push(r, &it), 0);
					pushed++;
				}
				if (ring_count(r) == size) {
					it = make_item(5, pushed);
					cr_assert_eq(ring_push(r, &it), -1, "full at start %" PRIu64
						     " size %zu lap %d", starts[s], size, lap);
				}
				size_t n = ring_peek(r, out, size);

				cr_assert_eq(n, ring_count(r));
				for (size_t i = 0; i < n; i++)
					cr_assert(item_is(&out[i], 5, seen + i),
						  "start %" PRIu64 " size %zu lap %d: got tag %" PRIu64
						  ", expected %" PRIu64,
						  starts[s], size, lap, out[i].tag, seen + i);
				/* release all but a rotating remainder */
				size_t rel = n - (size_t)lap % (n + 1);

				ring_release(r, rel);
				seen += rel;
			}
			cr_expect_gt(pushed, 4 * size, "the test must lap the ring");
			ring_free(r);
		}
	}
}

/* Two-thread stress: one producer, one consumer, a small ring so that full
 * and empty transitions happen constantly. */
enum stress_failure {
	STRESS_OK,
	STRESS_BAD_ITEM,      /* wrong sequence, or ptr not matching its tag */
	STRESS_BAD_PEEK,      /* peek returned more than asked or than the ring holds */
	STRESS_LOST_NOTIFY_P, /* the producer slept until the timeout */
	STRESS_LOST_NOTIFY_C, /* the consumer slept until the timeout */
};

struct stress {
	struct ring *r;
	int use_park;
	uint64_t items;
	/* the producer waits here when the ring is full; the consumer notifies */
	struct park not_full;
	/* the consumer waits here when the ring is empty; the producer notifies */
	struct park not_empty;
	/* first failure, set once by either thread (CAS); both poll it to stop */
	_Atomic int failed;
	/* written by the consumer only, read after join */
	uint64_t bad_at, bad_tag, bad_n, received, consumer_empty;
	void *bad_ptr;
	/* written by the producer only, read after join */
	uint64_t producer_full;
};

#define STRESS_PRODUCER 7
/* park_wait's timeout only backs up a lost notify: a wait that runs into it
 * means a notify was lost, and the run stops as failed. */
#define PARK_TIMEOUT_MS 2000
#define LATE_NS (1500LL * 1000000LL)

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int stress_failed(struct stress *s)
{
	return atomic_load_explicit(&s->failed, memory_order_relaxed) != STRESS_OK;
}

/* Records the first failure and wakes both sides so they see it. */
static void stress_stop(struct stress *s, enum stress_failure why)
{
	int none = STRESS_OK;

	atomic_compare_exchange_strong(&s->failed, &none, (int)why);
	if (s->use_park) {
		park_notify(&s->not_full);
		park_notify(&s->not_empty);
	}
}

/* Sleeps until notified; a wait that runs into the timeout fails the run. */
static void stress_park(struct stress *s, struct park *p, enum stress_failure why)
{
	int64_t t0 = now_ns();

	park_wait(p, PARK_TIMEOUT_MS);
	if (now_ns() - t0 >= LATE_NS && !stress_failed(s))
		stress_stop(s, why);
}

static void *stress_producer(void *arg)
{
	struct stress *s = arg;
	uint64_t seq = 0;

	while (seq < s->items && !stress_failed(s)) {
		struct ring_item it = make_item(STRESS_PRODUCER, seq);

		if (ring_push(s->r, &it) == 0) {
			seq++;
			if (s->use_park)
				park_notify(&s->not_empty);
			continue;
		}
		s->producer_full++;
		if (!s->use_park) {
			sched_yield();
			continue;
		}
		/* Announce, re-check, then sleep: a release that landed after
		 * the failed push is seen by the second push, or its notify
		 * sees us waiting (park.h's Dekker argument). */
		park_prepare(&s->not_full);
		if (ring_push(s->r, &it) == 0) {
			park_cancel(&s->not_full);
			seq++;
			park_notify(&s->not_empty);
			continue;
		}
		stress_park(s, &s->not_full, STRESS_LOST_NOTIFY_P);
	}
	return NULL;
}

static void *stress_consumer(void *arg)
{
	struct stress *s = arg;
	struct ring_item buf[STRESS_BATCH];
	uint64_t expected = 0;
	unsigned round = 0;

	while (expected < s->items && !stress_failed(s)) {
		/* Batches of 1..64, and sometimes release only part of a batch:
		 * the unreleased rest must come back first on the next peek. */
		size_t max = 1 + round % STRESS_BATCH;
		size_t n = ring_peek(s->r, buf, max);

		round++;
		if (n == 0) {
			s->consumer_empty++;
			if (!s->use_park) {
				sched_yield();
				continue;
			}
			park_prepare(&s->not_empty);
			if (ring_count(s->r) != 0) {
				park_cancel(&s->not_empty);
				continue;
			}
			stress_park(s, &s->not_empty, STRESS_LOST_NOTIFY_C);
			continue;
		}
		if (n > max || n > STRESS_RING) {
			s->bad_at = expected;
			s->bad_n = n;
			stress_stop(s, STRESS_BAD_PEEK);
			break;
		}
		for (size_t i = 0; i < n; i++) {
			if (!item_is(&buf[i], STRESS_PRODUCER, expected + i)) {
				s->bad_at = expected + i;
				s->bad_tag = buf[i].tag;
				s->bad_ptr = buf[i].ptr;
				stress_stop(s, STRESS_BAD_ITEM);
				goto out;
			}
		}
		size_t rel = (round % 3 == 0 && n > 1) ? n / 2 : n;

		ring_release(s->r, rel);
		expected += rel;
		if (s->use_park)
			park_notify(&s->not_full);
	}
out:
	s->received = expected;
	return NULL;
}

static void run_stress(int use_park)
{
	struct stress s = { .use_park = use_park, .items = STRESS_ITEMS };
	pthread_t prod, cons;
	int failed;

	s.r = ring_new(STRESS_RING, NEAR_WRAP);
	cr_assert_not_null(s.r);
	park_init(&s.not_full);
	park_init(&s.not_empty);
	atomic_init(&s.failed, STRESS_OK);
	cr_assert_eq(pthread_create(&cons, NULL, stress_consumer, &s), 0);
	cr_assert_eq(pthread_create(&prod, NULL, stress_producer, &s), 0);
	pthread_join(prod, NULL);
	pthread_join(cons, NULL);

	failed = atomic_load(&s.failed);
	cr_assert_neq(failed, STRESS_BAD_ITEM,
		      "at sequence %" PRIu64 ": got tag %" PRIu64 " ptr %p, expected tag %" PRIu64
		      " ptr %p",
		      s.bad_at, s.bad_tag, s.bad_ptr, s.bad_at,
		      make_item(STRESS_PRODUCER, s.bad_at).ptr);
	cr_assert_neq(failed, STRESS_BAD_PEEK, "at sequence %" PRIu64 ": peek returned %" PRIu64
		      " items", s.bad_at, s.bad_n);
	cr_assert_neq(failed, STRESS_LOST_NOTIFY_P, "the producer slept through a notify");
	cr_assert_neq(failed, STRESS_LOST_NOTIFY_C, "the consumer slept through a notify");
	cr_assert_eq(s.received, s.items, "received %" PRIu64 " of %" PRIu64, s.received, s.items);
	cr_expect_eq(ring_count(s.r), 0);
	/* Not a timing claim: with a 64-slot ring and a million items both
	 * sides must have met the other's boundary, else the test tested little. */
	cr_expect_gt(s.producer_full, 0, "the ring never filled");
	cr_expect_gt(s.consumer_empty, 0, "the ring never emptied");
	cr_log_info("%s: %" PRIu64 " items, producer saw full %" PRIu64 " times, consumer saw empty %"
		    PRIu64 " times",
		    use_park ? "park" : "spin", s.items, s.producer_full, s.consumer_empty);
	ring_free(s.r);
}

Test(ring, stress_two_threads_parking, .timeout = 60)
{
	run_stress(1);
}

Test(ring, stress_two_threads_spinning, .timeout = 60)
{
	run_stress(0);
}
