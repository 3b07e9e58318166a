/* Criterion suite for the byte budget (core/budget.h): the accounting of
 * credit taken in chunks and given back, the rule that lets one record larger
 * than the whole budget through when nothing is held, a waiter that holds no
 * credit, stops that end a wait, and a multi-thread run in which producers
 * block on the budget and a writer's releases wake them, with tagged items
 * checked end to end. Not the consumer's fetch sizing (test_memory.c runs
 * the whole pipeline). */
#include "core/budget.h"
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

#define KiB 1024ull
#define MiB (1024ull * 1024ull)
/* Longer than any wait in these tests: a wait that ends by the backstop is a
 * lost wake-up, and shows as a timeout (and a slow test). */
#define LONG_BACKSTOP_MS 30000

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Polls cond(arg) for up to ms; 1 if it came true. */
static int eventually(int (*cond)(void *), void *arg, int ms)
{
	int64_t until = now_ms() + ms;

	while (!cond(arg)) {
		if (now_ms() >= until)
			return 0;
		sleep_ms(1);
	}
	return 1;
}

/* Per suite: with per-test timeouts and --jobs 2, Criterion 2.4.1's runner
 * leaks 48 bytes at exit, which fails the ASan run. Every wait below has a
 * bound of its own; this only stops a wedged test. */
TestSuite(budget, .timeout = 120);

/* ---- one thread ---------------------------------------------------------------*/

Test(budget, chunk_follows_the_limit)
{
	struct {
		uint64_t limit, chunk, reported;
	} cases[] = {
		{ 256 * MiB, 256 * KiB, 256 * MiB }, { 32 * MiB, 256 * KiB, 32 * MiB },
		{ 1 * MiB, 16 * KiB, 1 * MiB },      { 64 * KiB, 4 * KiB, 64 * KiB },
		{ 0, 256 * KiB, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct k2mc_budget *b = k2mc_budget_new(cases[i].limit);

		cr_assert_not_null(b);
		cr_expect_eq(k2mc_budget_chunk(b), cases[i].chunk, "limit %" PRIu64 ": chunk %" PRIu64,
			     cases[i].limit, k2mc_budget_chunk(b));
		cr_expect_eq(k2mc_budget_limit(b), cases[i].reported);
		cr_expect_eq(k2mc_budget_used(b), 0);
		k2mc_budget_free(b);
	}
}

Test(budget, record_bytes_are_key_value_and_overhead)
{
	rd_kafka_message_t m = { .key_len = 16, .len = 10000 };

	cr_assert_eq(k2mc_record_bytes(&m), 16 + 10000 + K2MC_RECORD_OVERHEAD);
	m.key_len = 0;
	m.len = 0;
	cr_assert_eq(k2mc_record_bytes(&m), K2MC_RECORD_OVERHEAD, "a tombstone still costs its op");
}

Test(budget, credit_is_taken_in_chunks_and_given_back)
{
	struct k2mc_budget *b = k2mc_budget_new(1 * MiB); /* chunk 16 KiB */
	struct k2mc_credit c = { .b = b };

	cr_assert_eq(k2mc_credit_spend(&c, 1000, NULL, NULL), 0);
	cr_assert_eq(k2mc_budget_used(b), 16 * KiB, "one chunk taken for the first record");
	cr_assert_eq(c.left, 16 * KiB - 1000);
	cr_assert_eq(k2mc_credit_spend(&c, 15000, NULL, NULL), 0);
	cr_assert_eq(k2mc_budget_used(b), 16 * KiB, "spent from the chunk in hand");
	cr_assert_eq(c.left, 384);
	/* 1000 > 384 left: topped up by what is missing up to a chunk */
	cr_assert_eq(k2mc_credit_spend(&c, 1000, NULL, NULL), 0);
	cr_assert_eq(k2mc_budget_used(b), 16 * KiB + 16 * KiB - 384);
	cr_assert_eq(c.left, 16 * KiB - 1000);
	/* a writer gives back what the three records cost */
	k2mc_budget_release(b, 1000 + 15000 + 1000);
	cr_assert_eq(k2mc_budget_used(b), c.left, "what is left is the unspent credit");
	/* a record spent for and then not handed out (a stop) */
	cr_assert_eq(k2mc_credit_spend(&c, 500, NULL, NULL), 0);
	k2mc_credit_unspend(&c, 500);
	cr_assert_eq(c.left, 16 * KiB - 1000);
	k2mc_credit_return(&c);
	cr_assert_eq(c.left, 0);
	cr_assert_eq(k2mc_budget_used(b), 0);
	cr_assert_eq(k2mc_budget_waits(b), 0, "nothing ever waited");
	k2mc_budget_free(b);
}

Test(budget, takes_what_fits_when_short_of_a_chunk)
{
	struct k2mc_budget *b = k2mc_budget_new(64 * KiB); /* chunk 4 KiB */
	struct k2mc_credit big = { .b = b }, small = { .b = b };

	/* larger than a chunk: exactly its own size */
	cr_assert_eq(k2mc_credit_spend(&big, 62 * KiB, NULL, NULL), 0);
	cr_assert_eq(k2mc_budget_used(b), 62 * KiB);
	cr_assert_eq(big.left, 0);
	/* 2 KiB of room: less than a chunk, enough for 1000 bytes */
	cr_assert_eq(k2mc_credit_spend(&small, 1000, NULL, NULL), 0);
	cr_assert_eq(k2mc_budget_used(b), 64 * KiB);
	cr_assert_eq(small.left, 2 * KiB - 1000);
	cr_assert_eq(k2mc_budget_room(b), 0);
	k2mc_credit_return(&small);
	k2mc_budget_release(b, 62 * KiB + 1000);
	cr_assert_eq(k2mc_budget_used(b), 0);
	k2mc_budget_free(b);
}

/* Records fetched but not yet paid for are outside the budget: each joined
 * thread may fetch its share of the room (at most a chunk), or what it
 * holds in credit. */
Test(budget, fetch_share_divides_the_room)
{
	struct k2mc_budget *b = k2mc_budget_new(1 * MiB); /* chunk 16 KiB */
	struct k2mc_credit c[4], hog = { .b = b }, none;

	k2mc_credit_open(&none, NULL);
	cr_assert_eq(k2mc_credit_fetch_bytes(&none), UINT64_MAX, "no budget, no bound");
	for (int i = 0; i < 4; i++)
		k2mc_credit_open(&c[i], b);
	cr_assert_eq(k2mc_credit_fetch_bytes(&c[0]), 16 * KiB, "plenty of room: a chunk");
	cr_assert_eq(k2mc_credit_spend(&hog, 1 * MiB - 40 * KiB, NULL, NULL), 0);
	cr_assert_eq(k2mc_credit_fetch_bytes(&c[0]), 10 * KiB, "40 KiB of room among 4 threads");
	cr_assert_eq(k2mc_credit_spend(&c[1], 1000, NULL, NULL), 0);
	cr_assert_eq(c[1].left, 16 * KiB - 1000);
	cr_assert_eq(k2mc_credit_fetch_bytes(&c[1]), 16 * KiB - 1000, "credit in hand");
	cr_assert_eq(k2mc_credit_fetch_bytes(&c[0]), 6 * KiB, "24 KiB left among 4");
	k2mc_credit_close(&c[1]);
	cr_assert_eq(k2mc_budget_used(b), 1 * MiB - 40 * KiB + 1000, "close gives credit back");
	cr_assert_eq(k2mc_credit_fetch_bytes(&c[0]), (40 * KiB - 1000) / 3, "3 threads left");
	k2mc_budget_release(b, 1 * MiB - 40 * KiB + 1000);
	for (int i = 0; i < 4; i++)
		if (i != 1)
			k2mc_credit_close(&c[i]);
	k2mc_credit_close(&none);
	cr_assert_eq(k2mc_budget_used(b), 0);
	k2mc_budget_free(b);
}

Test(budget, no_budget_lets_everything_through)
{
	struct k2mc_credit c = { .b = NULL };

	cr_assert_eq(k2mc_credit_spend(&c, 10 * MiB * 1024, NULL, NULL), 0);
	k2mc_credit_unspend(&c, 5);
	k2mc_credit_return(&c);
	cr_assert_eq(c.left, 0);
	k2mc_budget_release(NULL, 100);
	k2mc_budget_kick(NULL);
}

Test(budget, oversize_record_passes_at_once_when_nothing_is_held)
{
	struct k2mc_budget *b = k2mc_budget_new(64 * KiB);
	struct k2mc_credit c = { .b = b };

	cr_assert_eq(k2mc_credit_spend(&c, 5 * MiB, NULL, NULL), 0);
	cr_assert_eq(k2mc_budget_used(b), 5 * MiB, "alone, over the limit");
	cr_assert_eq(c.left, 0);
	cr_assert_eq(k2mc_budget_waits(b), 0);
	k2mc_budget_release(b, 5 * MiB);
	cr_assert_eq(k2mc_budget_used(b), 0);
	k2mc_budget_free(b);
}

/* ---- one waiter ---------------------------------------------------------------*/

struct waiter_arg {
	struct k2mc_budget *b;
	struct k2mc_credit c;
	uint64_t need;
	_Atomic int stop;
	_Atomic int done;
	int rc;
	int64_t ended_ms;
};

static int waiter_stop(void *arg)
{
	struct waiter_arg *w = arg;

	return atomic_load_explicit(&w->stop, memory_order_acquire);
}

static void *waiter_main(void *arg)
{
	struct waiter_arg *w = arg;

	w->rc = k2mc_credit_spend(&w->c, w->need, waiter_stop, w);
	w->ended_ms = now_ms();
	atomic_store_explicit(&w->done, 1, memory_order_release);
	return NULL;
}

static void start_waiter(struct waiter_arg *w, pthread_t *t, struct k2mc_budget *b,
			 uint64_t need)
{
	/* w->c may hold credit already: taken by this thread, handed over
	 * with the thread's creation */
	w->b = b;
	w->c.b = b;
	w->need = need;
	atomic_init(&w->stop, 0);
	atomic_init(&w->done, 0);
	cr_assert_eq(pthread_create(t, NULL, waiter_main, w), 0);
}

struct waits_arg {
	struct k2mc_budget *b;
	uint64_t n;
};

static int waits_reached(void *arg)
{
	struct waits_arg *a = arg;

	return k2mc_budget_waits(a->b) >= a->n;
}

static int is_done(void *arg)
{
	return atomic_load_explicit(&((struct waiter_arg *)arg)->done, memory_order_acquire);
}

Test(budget, release_from_another_thread_wakes_the_waiter)
{
	struct k2mc_budget *b = k2mc_budget_new(64 * KiB);
	struct k2mc_credit hog = { .b = b };
	struct waiter_arg w;
	struct waits_arg wa = { b, 1 };
	pthread_t t;
	int64_t released;

	k2mc_budget_set_backstop_ms(b, LONG_BACKSTOP_MS);
	cr_assert_eq(k2mc_credit_spend(&hog, 64 * KiB, NULL, NULL), 0);
	w.c.left = 0;
	start_waiter(&w, &t, b, 1000);
	cr_assert(eventually(waits_reached, &wa, 5000), "the waiter never waited");
	sleep_ms(50);
	cr_assert_eq(atomic_load(&w.done), 0, "it passed with the budget full");
	released = now_ms();
	k2mc_budget_release(b, 64 * KiB);
	pthread_join(t, NULL);
	cr_assert_eq(w.rc, 0);
	cr_assert_lt(w.ended_ms - released, 5000, "woken by the backstop, not the release");
	cr_assert_eq(k2mc_budget_timeouts(b), 0, "a lost wake-up");
	cr_assert_eq(k2mc_budget_used(b), 4 * KiB, "it took a chunk");
	k2mc_credit_return(&w.c);
	k2mc_budget_release(b, 1000);
	cr_assert_eq(k2mc_budget_used(b), 0);
	k2mc_budget_free(b);
}

/* Two waiters each holding part of what the other needs would wait for
 * ever: a thread gives its credit back before it waits. */
Test(budget, waiter_holds_no_credit)
{
	struct k2mc_budget *b = k2mc_budget_new(64 * KiB); /* chunk 4 KiB */
	struct k2mc_credit hog = { .b = b };
	struct waiter_arg w = { .c = { .b = b } };
	struct waits_arg wa = { b, 1 };
	pthread_t t;

	k2mc_budget_set_backstop_ms(b, LONG_BACKSTOP_MS);
	cr_assert_eq(k2mc_credit_spend(&w.c, 100, NULL, NULL), 0);
	cr_assert_eq(w.c.left, 4 * KiB - 100);
	cr_assert_eq(k2mc_credit_spend(&hog, 60 * KiB, NULL, NULL), 0);
	cr_assert_eq(k2mc_budget_used(b), 64 * KiB);
	/* 3996 left, 5000 needed, no room */
	start_waiter(&w, &t, b, 5000);
	cr_assert(eventually(waits_reached, &wa, 5000), "the waiter never waited");
	cr_assert_eq(k2mc_budget_used(b), 64 * KiB - (4 * KiB - 100),
		     "the waiter kept its unspent credit while waiting");
	k2mc_budget_release(b, 60 * KiB);
	pthread_join(t, NULL);
	cr_assert_eq(w.rc, 0);
	cr_assert_eq(w.c.left, 0, "it took exactly the 5000 it needed (more than a chunk)");
	cr_assert_eq(k2mc_budget_used(b), 100 + 5000);
	k2mc_budget_release(b, 100 + 5000);
	cr_assert_eq(k2mc_budget_timeouts(b), 0, "a lost wake-up");
	k2mc_budget_free(b);
}

/* The oversize rule is "nothing held", not "first come": a record larger than
 * the budget waits until every byte is given back, then passes alone. */
Test(budget, oversize_record_waits_for_an_empty_budget_then_passes)
{
	struct k2mc_budget *b = k2mc_budget_new(64 * KiB);
	struct k2mc_credit small = { .b = b };
	struct waiter_arg w = { .c = { .b = b } };
	struct waits_arg wa = { b, 1 };
	pthread_t t;

	k2mc_budget_set_backstop_ms(b, LONG_BACKSTOP_MS);
	cr_assert_eq(k2mc_credit_spend(&small, 1000, NULL, NULL), 0);
	start_waiter(&w, &t, b, 1 * MiB);
	cr_assert(eventually(waits_reached, &wa, 5000), "the oversize record did not wait");
	sleep_ms(50);
	cr_assert_eq(atomic_load(&w.done), 0, "it passed while 1000 bytes were held");
	/* the small record is written; its chunk's rest is given back */
	k2mc_budget_release(b, 1000);
	cr_assert_eq(atomic_load(&w.done), 0, "passed with unspent credit still out");
	k2mc_credit_return(&small);
	pthread_join(t, NULL);
	cr_assert_eq(w.rc, 0);
	cr_assert_eq(k2mc_budget_used(b), 1 * MiB);
	/* and while it is held, nothing else gets in */
	cr_assert_eq(k2mc_budget_room(b), 0);
	k2mc_budget_release(b, 1 * MiB);
	cr_assert_eq(k2mc_budget_used(b), 0);
	cr_assert_eq(k2mc_budget_timeouts(b), 0, "a lost wake-up");
	k2mc_budget_free(b);
}

Test(budget, stop_and_kick_end_a_wait)
{
	struct k2mc_budget *b = k2mc_budget_new(64 * KiB);
	struct k2mc_credit hog = { .b = b };
	struct waiter_arg w = { .c = { .b = b } };
	struct waits_arg wa = { b, 1 };
	pthread_t t;
	int64_t asked;

	k2mc_budget_set_backstop_ms(b, LONG_BACKSTOP_MS);
	cr_assert_eq(k2mc_credit_spend(&hog, 64 * KiB, NULL, NULL), 0);
	start_waiter(&w, &t, b, 1000);
	cr_assert(eventually(waits_reached, &wa, 5000), "the waiter never waited");
	asked = now_ms();
	atomic_store_explicit(&w.stop, 1, memory_order_release);
	k2mc_budget_kick(b);
	pthread_join(t, NULL);
	cr_assert_eq(w.rc, -1, "a stopped wait reports it");
	cr_assert_lt(w.ended_ms - asked, 5000, "the kick did not wake it");
	cr_assert_eq(w.c.left, 0);
	cr_assert_eq(k2mc_budget_used(b), 64 * KiB, "a stopped waiter took nothing");
	cr_assert_eq(k2mc_budget_timeouts(b), 0);
	k2mc_budget_release(b, 64 * KiB);
	k2mc_budget_free(b);
}

/* A stop nobody kicked is seen at the backstop (100 ms by default). */
Test(budget, stop_without_a_kick_ends_at_the_backstop)
{
	struct k2mc_budget *b = k2mc_budget_new(64 * KiB);
	struct k2mc_credit hog = { .b = b };
	struct waiter_arg w = { .c = { .b = b } };
	struct waits_arg wa = { b, 1 };
	pthread_t t;

	cr_assert_eq(k2mc_credit_spend(&hog, 64 * KiB, NULL, NULL), 0);
	start_waiter(&w, &t, b, 1000);
	cr_assert(eventually(waits_reached, &wa, 5000), "the waiter never waited");
	atomic_store_explicit(&w.stop, 1, memory_order_release);
	cr_assert(eventually(is_done, &w, 3000), "the stop was never seen");
	pthread_join(t, NULL);
	cr_assert_eq(w.rc, -1);
	cr_assert_geq(k2mc_budget_timeouts(b), 1);
	k2mc_budget_release(b, 64 * KiB);
	k2mc_budget_free(b);
}

/* ---- producers and a writer -----------------------------------------------------
 * NPROD producer threads play consumers: each spends credit for an item and
 * pushes it to its own ring (ptr: producer id << 48 | seq; tag: its bytes).
 * One writer thread drains the rings in batches, checks each producer's
 * sequence, and gives the batch's bytes back in one release, pausing now and
 * then so that the producers block on the budget. Every producer sends one
 * item larger than the whole budget too. The rings are large enough never
 * to fill: the budget is the only bound. */
#define NPROD 4
#ifdef UNDER_TSAN
#define ITEMS 5000ull
#else
#define ITEMS 40000ull
#endif
#define STRESS_LIMIT (64 * KiB)
#define STRESS_RING 4096
#define OVERSIZE (STRESS_LIMIT * 3)

struct stress {
	struct k2mc_budget *b;
	struct ring *rings[NPROD];
	/* producers add after spending, the writer subtracts before it
	 * releases: never more than the budget, unless an oversize item is
	 * alone */
	_Atomic uint64_t inflight;
	_Atomic uint64_t max_small_inflight;
	_Atomic int producers_done;
	/* writer only, checked after join */
	uint64_t next_seq[NPROD];
	uint64_t bad;
	uint64_t batches;
};

struct prod_arg {
	struct stress *s;
	int id;
};

/* Item sizes: 100 .. 3,099 bytes, and one oversize item per producer. */
static uint64_t item_bytes(int id, uint64_t seq)
{
	if (seq == ITEMS / 2 + (uint64_t)id)
		return OVERSIZE;
	return 100 + (seq * 7919 + (uint64_t)id * 104729) % 3000;
}

static void note_max(_Atomic uint64_t *m, uint64_t v)
{
	uint64_t cur = atomic_load(m);

	while (v > cur && !atomic_compare_exchange_weak(m, &cur, v))
		;
}

static void *producer_main(void *arg)
{
	struct prod_arg *pa = arg;
	struct stress *s = pa->s;
	struct k2mc_credit c = { .b = s->b };

	for (uint64_t seq = 0; seq < ITEMS; seq++) {
		uint64_t bytes = item_bytes(pa->id, seq), now;
		struct ring_item it = {
			.ptr = (void *)(uintptr_t)(((uint64_t)pa->id << 48) | seq),
			.tag = bytes,
		};

		cr_assert_eq(k2mc_credit_spend(&c, bytes, NULL, NULL), 0);
		now = atomic_fetch_add(&s->inflight, bytes) + bytes;
		if (bytes <= STRESS_LIMIT)
			note_max(&s->max_small_inflight, now);
		while (ring_push(s->rings[pa->id], &it) != 0)
			sched_yield();
	}
	k2mc_credit_return(&c);
	atomic_fetch_add(&s->producers_done, 1);
	return NULL;
}

static void *writer_main(void *arg)
{
	struct stress *s = arg;
	struct ring_item items[64];

	for (;;) {
		int done = atomic_load(&s->producers_done) == NPROD;
		size_t total = 0;

		for (int p = 0; p < NPROD; p++) {
			size_t n = ring_peek(s->rings[p], items, 64);
			uint64_t bytes = 0;

			for (size_t i = 0; i < n; i++) {
				uint64_t v = (uint64_t)(uintptr_t)items[i].ptr;
				uint64_t id = v >> 48, seq = v & ((1ull << 48) - 1);

				if (id != (uint64_t)p || seq != s->next_seq[p] ||
				    items[i].tag != item_bytes(p, seq))
					s->bad++;
				s->next_seq[p] = seq + 1;
				bytes += items[i].tag;
			}
			if (n == 0)
				continue;
			atomic_fetch_sub(&s->inflight, bytes);
			k2mc_budget_release(s->b, bytes);
			ring_release(s->rings[p], n);
			total += n;
			/* a slow Memcached now and then: producers block */
			if (++s->batches % 16 == 0)
				sleep_ms(1);
		}
		if (total == 0) {
			if (done)
				break;
			sched_yield();
		}
	}
	return NULL;
}

Test(budget, producers_block_and_releases_wake_them)
{
	struct stress s = { 0 };
	struct prod_arg pa[NPROD];
	pthread_t prod[NPROD], wr;

	s.b = k2mc_budget_new(STRESS_LIMIT);
	cr_assert_not_null(s.b);
	k2mc_budget_set_backstop_ms(s.b, LONG_BACKSTOP_MS);
	for (int p = 0; p < NPROD; p++) {
		s.rings[p] = ring_new(STRESS_RING, UINT64_MAX - 2);
		cr_assert_not_null(s.rings[p]);
	}
	cr_assert_eq(pthread_create(&wr, NULL, writer_main, &s), 0);
	for (int p = 0; p < NPROD; p++) {
		pa[p].s = &s;
		pa[p].id = p;
		cr_assert_eq(pthread_create(&prod[p], NULL, producer_main, &pa[p]), 0);
	}
	for (int p = 0; p < NPROD; p++)
		pthread_join(prod[p], NULL);
	pthread_join(wr, NULL);

	for (int p = 0; p < NPROD; p++)
		cr_expect_eq(s.next_seq[p], ITEMS, "producer %d: %" PRIu64 " of %llu items seen", p,
			     s.next_seq[p], ITEMS);
	cr_assert_eq(s.bad, 0, "%" PRIu64 " items out of order, foreign or torn", s.bad);
	cr_assert_eq(k2mc_budget_used(s.b), 0, "bytes left in the budget after everything");
	cr_assert_leq(atomic_load(&s.max_small_inflight), STRESS_LIMIT,
		      "held %" PRIu64 " bytes, over the limit", atomic_load(&s.max_small_inflight));
	cr_assert_gt(k2mc_budget_waits(s.b), 0, "the budget never made a producer wait");
	cr_assert_eq(k2mc_budget_timeouts(s.b), 0,
		     "%" PRIu64 " of %" PRIu64 " waits ended by the backstop: lost wake-ups",
		     k2mc_budget_timeouts(s.b), k2mc_budget_waits(s.b));
	for (int p = 0; p < NPROD; p++)
		ring_free(s.rings[p]);
	k2mc_budget_free(s.b);
}
