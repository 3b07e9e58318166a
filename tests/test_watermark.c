/* Criterion suite for the per-partition watermark (core/watermark.h): out of
 * order acknowledgements, offset gaps, the window limit, untrack and skip, and
 * a multi-threaded run where two ackers acknowledge while the owner advances.
 * It checks what may be committed, not when the committer commits it. */
#include "core/watermark.h"
#include "ring/ring.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Tracks count consecutive offsets from first; tags[i] gets offset first+i. */
static void track_range(struct k2mc_watermark *wm, int64_t first, int count, uint64_t *tags)
{
	for (int i = 0; i < count; i++) {
		int64_t tag = k2mc_watermark_track(wm, first + i);

		cr_assert_geq(tag, 0, "track(%" PRId64 ") failed", first + i);
		tags[i] = (uint64_t)tag;
	}
}

Test(watermark, bad_windows_are_rejected)
{
	const uint32_t bad[] = { 0, 1, 3, 6, 1000 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_null(k2mc_watermark_new(bad[i], 0), "window %" PRIu32 " must be refused",
			       bad[i]);
	struct k2mc_watermark *wm = k2mc_watermark_new(2, 0);

	cr_assert_not_null(wm);
	k2mc_watermark_free(wm);
	k2mc_watermark_free(NULL);
}

Test(watermark, unknown_start_is_minus_one_until_tracked)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(8, -1);
	int64_t tag;

	cr_assert_not_null(wm);
	cr_expect_eq(k2mc_watermark_get(wm), -1);
	cr_expect_eq(k2mc_watermark_advance(wm), -1, "nothing known, nothing committable");
	cr_expect_eq(k2mc_watermark_get(wm), -1);
	cr_expect_eq(k2mc_watermark_inflight(wm), 0);
	tag = k2mc_watermark_track(wm, 42);
	cr_assert_geq(tag, 0);
	cr_expect_eq(k2mc_watermark_get(wm), -1, "get() shows what advance published, no more");
	cr_expect_eq(k2mc_watermark_advance(wm), 42, "42 is in flight: commit up to it, not past");
	k2mc_watermark_ack(wm, (uint64_t)tag);
	cr_expect_eq(k2mc_watermark_get(wm), 42, "an ack alone publishes nothing");
	cr_expect_eq(k2mc_watermark_advance(wm), 43);
	cr_expect_eq(k2mc_watermark_get(wm), 43);
	k2mc_watermark_free(wm);
}

Test(watermark, known_start_is_published_at_once)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(8, 100);

	cr_assert_not_null(wm);
	cr_expect_eq(k2mc_watermark_get(wm), 100);
	cr_expect_eq(k2mc_watermark_advance(wm), 100);
	k2mc_watermark_free(wm);
}

Test(watermark, acks_in_reverse_order)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(16, 100);
	uint64_t tags[8];

	cr_assert_not_null(wm);
	track_range(wm, 100, 8, tags);
	cr_expect_eq(k2mc_watermark_inflight(wm), 8);
	cr_expect_eq(k2mc_watermark_advance(wm), 100);
	for (int i = 7; i >= 1; i--) {
		k2mc_watermark_ack(wm, tags[i]);
		cr_expect_eq(k2mc_watermark_advance(wm), 100,
			     "offset 100 is unacknowledged after acking %d", 100 + i);
		cr_expect_eq(k2mc_watermark_inflight(wm), 8);
	}
	k2mc_watermark_ack(wm, tags[0]);
	cr_expect_eq(k2mc_watermark_advance(wm), 108, "everything acked: one past the last");
	cr_expect_eq(k2mc_watermark_inflight(wm), 0);
	cr_expect_eq(k2mc_watermark_get(wm), 108);
	k2mc_watermark_free(wm);
}

Test(watermark, ack_gaps_stop_at_the_first_unacked)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(16, 0);
	uint64_t tags[10];

	cr_assert_not_null(wm);
	track_range(wm, 0, 10, tags);
	k2mc_watermark_ack(wm, tags[0]);
	k2mc_watermark_ack(wm, tags[1]);
	k2mc_watermark_ack(wm, tags[2]);
	k2mc_watermark_ack(wm, tags[4]);
	k2mc_watermark_ack(wm, tags[5]);
	k2mc_watermark_ack(wm, tags[7]);
	cr_expect_eq(k2mc_watermark_advance(wm), 3);
	cr_expect_eq(k2mc_watermark_inflight(wm), 7);
	cr_expect_eq(k2mc_watermark_advance(wm), 3, "advance is idempotent");
	k2mc_watermark_ack(wm, tags[3]);
	cr_expect_eq(k2mc_watermark_advance(wm), 6, "3 fills the hole: past 4 and 5, stop at 6");
	k2mc_watermark_ack(wm, tags[6]);
	cr_expect_eq(k2mc_watermark_advance(wm), 8);
	k2mc_watermark_ack(wm, tags[9]);
	cr_expect_eq(k2mc_watermark_advance(wm), 8);
	k2mc_watermark_ack(wm, tags[8]);
	cr_expect_eq(k2mc_watermark_advance(wm), 10);
	cr_expect_eq(k2mc_watermark_inflight(wm), 0);
	k2mc_watermark_free(wm);
}

/* Compaction and transaction markers leave holes in the offsets: the
 * watermark is the next tracked offset, or one past the last. */
Test(watermark, offset_gaps)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(8, -1);
	const int64_t offs[] = { 10, 11, 15, 20 };
	uint64_t tags[4];

	cr_assert_not_null(wm);
	for (int i = 0; i < 4; i++) {
		int64_t tag = k2mc_watermark_track(wm, offs[i]);

		cr_assert_geq(tag, 0);
		tags[i] = (uint64_t)tag;
	}
	cr_expect_eq(k2mc_watermark_advance(wm), 10);
	k2mc_watermark_ack(wm, tags[0]);
	cr_expect_eq(k2mc_watermark_advance(wm), 11);
	k2mc_watermark_ack(wm, tags[1]);
	cr_expect_eq(k2mc_watermark_advance(wm), 15, "12..14 do not exist: the next is 15");
	k2mc_watermark_ack(wm, tags[3]);
	cr_expect_eq(k2mc_watermark_advance(wm), 15, "20 acked, 15 not");
	k2mc_watermark_ack(wm, tags[2]);
	cr_expect_eq(k2mc_watermark_advance(wm), 21);
	k2mc_watermark_free(wm);
}

Test(watermark, full_window_refuses_until_advance)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(4, 0);
	uint64_t tags[4];
	int64_t tag;

	cr_assert_not_null(wm);
	track_range(wm, 0, 4, tags);
	cr_expect_eq(k2mc_watermark_inflight(wm), 4);
	cr_expect_eq(k2mc_watermark_track(wm, 4), -1, "window of 4 holds 4");
	cr_expect_eq(k2mc_watermark_track(wm, 4), -1, "a refused track changes nothing");
	/* The slot is freed by advance, not by the ack itself: the owner is the
	 * only one who moves low. */
	k2mc_watermark_ack(wm, tags[1]);
	cr_expect_eq(k2mc_watermark_track(wm, 4), -1);
	cr_expect_eq(k2mc_watermark_advance(wm), 0, "an ack out of order frees nothing");
	cr_expect_eq(k2mc_watermark_track(wm, 4), -1);
	k2mc_watermark_ack(wm, tags[0]);
	cr_expect_eq(k2mc_watermark_track(wm, 4), -1, "acked but not yet advanced");
	cr_expect_eq(k2mc_watermark_advance(wm), 2);
	cr_expect_eq(k2mc_watermark_inflight(wm), 2);
	tag = k2mc_watermark_track(wm, 4);
	cr_assert_geq(tag, 0, "two slots free after advance");
	cr_assert_geq(k2mc_watermark_track(wm, 5), 0);
	cr_expect_eq(k2mc_watermark_track(wm, 6), -1);
	k2mc_watermark_ack(wm, tags[2]);
	k2mc_watermark_ack(wm, tags[3]);
	cr_expect_eq(k2mc_watermark_advance(wm), 4, "4 reuses a freed slot and is not acked");
	k2mc_watermark_free(wm);
}

/* Many laps around a small window, acking each lap in reverse: a done flag
 * left set from an earlier lap would let the watermark run ahead. */
Test(watermark, window_reuse_over_many_laps)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(4, 1000);
	int64_t off = 1000;

	cr_assert_not_null(wm);
	for (int lap = 0; lap < 1000; lap++) {
		int n = 1 + lap % 4;
		uint64_t tags[4];

		track_range(wm, off, n, tags);
		for (int i = n - 1; i >= 1; i--) {
			k2mc_watermark_ack(wm, tags[i]);
			cr_assert_eq(k2mc_watermark_advance(wm), off, "lap %d", lap);
		}
		k2mc_watermark_ack(wm, tags[0]);
		off += n;
		cr_assert_eq(k2mc_watermark_advance(wm), off, "lap %d", lap);
		cr_assert_eq(k2mc_watermark_inflight(wm), 0);
	}
	k2mc_watermark_free(wm);
}

Test(watermark, untrack_last)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(4, -1);
	uint64_t tags[3];
	int64_t tag;

	cr_assert_not_null(wm);
	k2mc_watermark_untrack_last(wm);
	cr_expect_eq(k2mc_watermark_advance(wm), -1, "untrack with nothing tracked is a no-op");

	track_range(wm, 10, 3, tags);
	k2mc_watermark_untrack_last(wm); /* 12 was never handed to a writer */
	cr_expect_eq(k2mc_watermark_inflight(wm), 2);
	k2mc_watermark_ack(wm, tags[0]);
	k2mc_watermark_ack(wm, tags[1]);
	cr_expect_eq(k2mc_watermark_advance(wm), 12, "12 must be consumed again, not skipped");
	cr_expect_eq(k2mc_watermark_inflight(wm), 0);

	/* The window slot comes back, and 12 can be tracked again. */
	track_range(wm, 12, 3, tags);
	tag = k2mc_watermark_track(wm, 15);
	cr_assert_geq(tag, 0);
	cr_expect_eq(k2mc_watermark_track(wm, 16), -1);
	k2mc_watermark_untrack_last(wm);
	cr_assert_geq(k2mc_watermark_track(wm, 15), 0, "untrack frees a window slot");
	k2mc_watermark_untrack_last(wm);
	k2mc_watermark_ack(wm, tags[0]);
	k2mc_watermark_ack(wm, tags[1]);
	k2mc_watermark_ack(wm, tags[2]);
	cr_expect_eq(k2mc_watermark_advance(wm), 15);

	/* Untrack after advance passed everything: nothing to undo. */
	k2mc_watermark_untrack_last(wm);
	cr_expect_eq(k2mc_watermark_inflight(wm), 0);
	cr_expect_eq(k2mc_watermark_advance(wm), 15);
	k2mc_watermark_free(wm);
}

/* skip_to marks [last+1, to) as records that do not exist (end of partition
 * past the last record, compaction): the watermark may move there, but only
 * once everything tracked before it is acknowledged. */
Test(watermark, skip_to_moves_only_when_all_acked)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(8, -1);
	uint64_t tags[2];

	cr_assert_not_null(wm);
	track_range(wm, 10, 2, tags);
	k2mc_watermark_skip_to(wm, 20);
	cr_expect_eq(k2mc_watermark_advance(wm), 10);
	k2mc_watermark_ack(wm, tags[1]);
	cr_expect_eq(k2mc_watermark_advance(wm), 10, "10 is still unacknowledged");
	k2mc_watermark_ack(wm, tags[0]);
	cr_expect_eq(k2mc_watermark_advance(wm), 20, "everything acked: move to the skip target");
	cr_expect_eq(k2mc_watermark_get(wm), 20);

	k2mc_watermark_skip_to(wm, 15);
	cr_expect_eq(k2mc_watermark_advance(wm), 20, "skip_to never moves backwards");
	k2mc_watermark_skip_to(wm, 20);
	cr_expect_eq(k2mc_watermark_advance(wm), 20);

	/* Records after a skip. */
	track_range(wm, 25, 1, tags);
	cr_expect_eq(k2mc_watermark_advance(wm), 25, "21..24 do not exist either");
	k2mc_watermark_ack(wm, tags[0]);
	cr_expect_eq(k2mc_watermark_advance(wm), 26);
	k2mc_watermark_free(wm);
}

Test(watermark, skip_to_with_nothing_tracked)
{
	struct k2mc_watermark *wm = k2mc_watermark_new(8, 5);

	cr_assert_not_null(wm);
	k2mc_watermark_skip_to(wm, 9);
	cr_expect_eq(k2mc_watermark_get(wm), 5, "published by advance only");
	cr_expect_eq(k2mc_watermark_advance(wm), 9);
	k2mc_watermark_free(wm);

	wm = k2mc_watermark_new(8, -1);
	cr_assert_not_null(wm);
	k2mc_watermark_skip_to(wm, 0);
	cr_expect_eq(k2mc_watermark_advance(wm), 0, "an empty partition's end is committable");
	k2mc_watermark_free(wm);
}

/* ---- multi-threaded ------------------------------------------------------
 * The owner tracks records and hands their tags to two ackers through two
 * SPSC rings; the ackers acknowledge out of order (each reverses its batches)
 * and mark every record in a plain byte array before acknowledging it. The
 * owner advances and checks each result; an observer thread checks what
 * k2mc_watermark_get publishes. Both check: never decreasing, never past an
 * unacknowledged record, always on a record boundary.
 *
 * The marks are deliberately not atomic: the watermark's release/acquire
 * chain is the only thing ordering an acker's mark before the owner's or the
 * observer's read of it, so under TSan a broken chain is a reported race, and
 * a watermark past an unacked record is a race as well as a failed check. */

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifdef UNDER_TSAN
/* Four threads on two cores under TSan: half the records keep a run near a
 * second, and under three seconds on a loaded machine. */
#define MT_RECORDS 500000
#else
#define MT_RECORDS 1000000
#endif
#define MT_WINDOW 128
#define MT_RING 64
#define MT_BATCH 32
#define MT_FIRST 5000
#define MT_STOP UINT64_MAX

/* Offsets with a hole after every fifth record (5000..5004, 5006, ...). */
static int64_t mt_offset(uint64_t i)
{
	return MT_FIRST + (int64_t)i + (int64_t)(i / 5);
}

struct mt {
	struct k2mc_watermark *wm;
	struct ring *to_acker[2];
	/* acked[i] = 1: record i acknowledged. Written by the acker that got
	 * i, before k2mc_watermark_ack (A1 release); the owner reads it after
	 * advance's acquire of the done flag (A2), the observer after
	 * k2mc_watermark_get's acquire of what advance released. Whoever sees
	 * a watermark past record i sees acked[i] == 1. */
	uint8_t *acked;
	/* set by the owner when every record is acked and advanced */
	_Atomic int done;
	/* first failure, written once by any thread (CAS) */
	_Atomic int failed;
	/* written by the failing thread before it sets failed, read after join */
	char why[256];
	/* written by each acker only, read after join */
	uint64_t acks[2], dup_acks[2];
	/* written by the observer only, read after join */
	uint64_t observed;
};

static void mt_fail(struct mt *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mt_fail(struct mt *m, const char *fmt, ...)
{
	int none = 0;
	va_list ap;

	if (!atomic_compare_exchange_strong(&m->failed, &none, 1))
		return;
	va_start(ap, fmt);
	vsnprintf(m->why, sizeof(m->why), fmt, ap);
	va_end(ap);
}

static int mt_is_acked(struct mt *m, uint64_t i)
{
	return m->acked[i] == 1;
}

struct mt_acker {
	struct mt *m;
	int id;
};

static void *mt_acker_run(void *arg)
{
	struct mt_acker *a = arg;
	struct mt *m = a->m;
	struct ring *r = m->to_acker[a->id];
	struct ring_item buf[MT_BATCH];

	for (;;) {
		size_t n = ring_peek(r, buf, MT_BATCH);

		if (n == 0) {
			sched_yield();
			continue;
		}
		/* Reverse order inside a batch; the two ackers interleave too. */
		for (size_t j = n; j-- > 0;) {
			uint64_t i;

			if (buf[j].tag == MT_STOP) {
				if (j != 0 || n != 1)
					mt_fail(m, "acker %d: stop arrived with records", a->id);
				ring_release(r, n);
				return NULL;
			}
			i = (uint64_t)(uintptr_t)buf[j].ptr;
			if (m->acked[i] != 0)
				m->dup_acks[a->id]++;
			m->acked[i] = 1;
			k2mc_watermark_ack(m->wm, buf[j].tag);
			m->acks[a->id]++;
		}
		ring_release(r, n);
	}
}

/* Checks one observed watermark w against the marks: w never decreases,
 * every record below it is acked, and w lies on a record boundary.
 * *below = number of records below the previous watermark. */
static int mt_check(struct mt *m, const char *who, int64_t w, int64_t *prev, uint64_t *below)
{
	if (w < *prev) {
		mt_fail(m, "%s: watermark went back from %" PRId64 " to %" PRId64, who, *prev, w);
		return -1;
	}
	*prev = w;
	while (*below < MT_RECORDS && mt_offset(*below) < w) {
		if (!mt_is_acked(m, *below)) {
			mt_fail(m, "%s: watermark %" PRId64 " passed unacked offset %" PRId64, who, w,
				mt_offset(*below));
			return -1;
		}
		(*below)++;
	}
	/* Never a value between records: w is the offset of the first record
	 * not passed, or one past the last record passed (all tracked acked). */
	if (w != mt_offset(*below) && (*below == 0 || w != mt_offset(*below - 1) + 1)) {
		mt_fail(m, "%s: watermark %" PRId64 " is not a record boundary", who, w);
		return -1;
	}
	return 0;
}

static void *mt_observer_run(void *arg)
{
	struct mt *m = arg;
	int64_t prev = MT_FIRST;
	uint64_t below = 0;

	while (!atomic_load_explicit(&m->done, memory_order_acquire) &&
	       !atomic_load_explicit(&m->failed, memory_order_relaxed)) {
		if (mt_check(m, "observer", k2mc_watermark_get(m->wm), &prev, &below) != 0)
			break;
		m->observed++;
		sched_yield();
	}
	return NULL;
}

/* Owner: pushes it to ring r, advancing while the ring is full. */
static void mt_hand_off(struct mt *m, struct ring *r, const struct ring_item *it, int64_t *prev,
			uint64_t *below)
{
	while (ring_push(r, it) != 0) {
		mt_check(m, "owner", k2mc_watermark_advance(m->wm), prev, below);
		sched_yield();
	}
}

Test(watermark, two_ackers_one_owner, .timeout = 60)
{
	struct mt m = { 0 };
	struct mt_acker ack[2];
	pthread_t acker_th[2], observer_th;
	int64_t prev = MT_FIRST, w;
	uint64_t below = 0, window_full = 0, untracked = 0;
	struct ring_item stop = { NULL, MT_STOP };

	m.wm = k2mc_watermark_new(MT_WINDOW, MT_FIRST);
	cr_assert_not_null(m.wm);
	m.acked = calloc(MT_RECORDS, sizeof(*m.acked));
	cr_assert_not_null(m.acked);
	for (int a = 0; a < 2; a++) {
		m.to_acker[a] = ring_new(MT_RING, UINT64_MAX - 2);
		cr_assert_not_null(m.to_acker[a]);
		ack[a] = (struct mt_acker){ &m, a };
		cr_assert_eq(pthread_create(&acker_th[a], NULL, mt_acker_run, &ack[a]), 0);
	}
	cr_assert_eq(pthread_create(&observer_th, NULL, mt_observer_run, &m), 0);

	for (uint64_t i = 0; i < MT_RECORDS && !atomic_load(&m.failed);) {
		/* Irregular runs per acker, so acks interleave unpredictably. */
		struct ring *r = m.to_acker[(i / (1 + i % 7)) % 2];
		int64_t tag;

		while ((tag = k2mc_watermark_track(m.wm, mt_offset(i))) < 0) {
			window_full++;
			mt_check(&m, "owner", k2mc_watermark_advance(m.wm), &prev, &below);
			sched_yield();
		}
		struct ring_item it = { (void *)(uintptr_t)i, (uint64_t)tag };

		/* A full ring is the stop case of the real consumer: undo the
		 * track, advance, and track the same record again. */
		if (ring_push(r, &it) != 0) {
			k2mc_watermark_untrack_last(m.wm);
			untracked++;
			mt_check(&m, "owner", k2mc_watermark_advance(m.wm), &prev, &below);
			sched_yield();
			continue;
		}
		if (i % 16 == 0)
			mt_check(&m, "owner", k2mc_watermark_advance(m.wm), &prev, &below);
		i++;
	}
	while (k2mc_watermark_inflight(m.wm) != 0 && !atomic_load(&m.failed)) {
		mt_check(&m, "owner", k2mc_watermark_advance(m.wm), &prev, &below);
		sched_yield();
	}
	w = k2mc_watermark_advance(m.wm);
	atomic_store_explicit(&m.done, 1, memory_order_release);
	for (int a = 0; a < 2; a++) {
		mt_hand_off(&m, m.to_acker[a], &stop, &prev, &below);
		pthread_join(acker_th[a], NULL);
	}
	pthread_join(observer_th, NULL);

	cr_assert_not(atomic_load(&m.failed), "%s", m.why);
	cr_expect_eq(w, mt_offset(MT_RECORDS - 1) + 1, "final watermark %" PRId64 ", expected %" PRId64,
		     w, mt_offset(MT_RECORDS - 1) + 1);
	cr_expect_eq(k2mc_watermark_get(m.wm), w);
	cr_expect_eq(below, MT_RECORDS, "owner checked %" PRIu64 " records", below);
	cr_expect_eq(m.acks[0] + m.acks[1], MT_RECORDS, "acks %" PRIu64 " + %" PRIu64, m.acks[0],
		     m.acks[1]);
	cr_expect_eq(m.dup_acks[0] + m.dup_acks[1], 0, "a record was acknowledged twice");
	cr_expect_gt(window_full, 0, "the window never filled: the test tested little");
	cr_expect_gt(m.acks[0], 0);
	cr_expect_gt(m.acks[1], 0);
	for (uint64_t i = 0; i < MT_RECORDS; i++)
		cr_assert(mt_is_acked(&m, i), "record %" PRIu64 " never acked", i);
	cr_log_info("records %d, window full %" PRIu64 " times, untracked %" PRIu64
		    ", observer checked %" PRIu64 " watermarks",
		    MT_RECORDS, window_full, untracked, m.observed);
	for (int a = 0; a < 2; a++)
		ring_free(m.to_acker[a]);
	free(m.acked);
	k2mc_watermark_free(m.wm);
}
