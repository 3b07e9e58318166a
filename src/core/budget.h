/* The byte budget (--max-buffer-bytes): one per process, shared by every
 * consumer thread, which takes credit before handing a record to a ring, and
 * every writer, which gives it back once per batch when it destroys the
 * records. The rings bound records; this bounds their bytes. Not an
 * allocator, and not librdkafka's prefetch queue (queued.max.messages.kbytes
 * bounds that, per partition queue). */
#ifndef K2MC_BUDGET_H
#define K2MC_BUDGET_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>

/* What a fetched record costs besides its key and value: librdkafka's op,
 * allocated once per message (the rd_kafka_message_t lives inside it), and
 * the record's framing in the fetch buffer. Measured with librdkafka 2.0.2
 * (malloc_info over all arenas, 12-byte keys, records held after
 * rd_kafka_consume_batch_queue, then destroyed): 311-314 bytes per record
 * for values of 0, 100, 1,000 and 10,000 bytes. Rounded up. */
#define K2MC_RECORD_OVERHEAD 320

/* The bytes one record is counted for: the same on both sides, so that what
 * a writer gives back is what the consumer took. */
static inline uint64_t k2mc_record_bytes(const rd_kafka_message_t *m)
{
	return (uint64_t)m->key_len + (uint64_t)m->len + K2MC_RECORD_OVERHEAD;
}

struct k2mc_budget;

/* limit in bytes; 0 means no limit. NULL on ENOMEM. */
struct k2mc_budget *k2mc_budget_new(uint64_t limit);
/* After every consumer and writer has stopped and every record is
 * destroyed. */
void k2mc_budget_free(struct k2mc_budget *b);

/* Any thread, relaxed (for the stats line and batch sizing). used: bytes of
 * records held in rings and batches, plus the credit consumers took and have
 * not yet spent (at most one chunk each, and none while they wait). */
uint64_t k2mc_budget_limit(const struct k2mc_budget *b); /* 0: no limit */
uint64_t k2mc_budget_used(const struct k2mc_budget *b);
/* limit - used, or 0 */
uint64_t k2mc_budget_room(const struct k2mc_budget *b);
/* How much credit a consumer takes at once: min(256 KiB, limit / 64), at
 * least 4 KiB; a record larger than that takes its own size. */
uint64_t k2mc_budget_chunk(const struct k2mc_budget *b);

/* Any thread: n bytes are no longer held (a writer once per batch, a
 * partition's leftovers at free, a consumer's unspent credit). Wakes the
 * first waiter if there is one. b may be NULL (no budget: nothing to do). */
void k2mc_budget_release(struct k2mc_budget *b, uint64_t n);
/* Any thread: every waiter re-checks its stop condition now (after the
 * condition was set). */
void k2mc_budget_kick(struct k2mc_budget *b);

/* Any thread, relaxed: how many times a consumer waited for credit, and how
 * many of those waits' wake-ups came from the backstop timeout rather than
 * a release or a kick (with a backstop longer than any legitimate wait,
 * each one is a lost wake-up: the unit tests check there are none). */
uint64_t k2mc_budget_waits(const struct k2mc_budget *b);
uint64_t k2mc_budget_timeouts(const struct k2mc_budget *b);
/* Before any thread uses b: the backstop (default 100 ms). */
void k2mc_budget_set_backstop_ms(struct k2mc_budget *b, int ms);

/* ---- consumer side ----------------------------------------------------------
 * A consumer thread's credit: taken from the budget a chunk at a time and
 * spent locally, one compare and subtract per record. Owner thread only. */
struct k2mc_credit {
	struct k2mc_budget *b; /* NULL: no budget, everything passes */
	uint64_t left;         /* taken from b, not spent */
};

/* The thread joins b (or none, b NULL) when it starts taking credit, and
 * leaves it when it stops; leaving gives its unspent credit back. The
 * number of threads joined divides the room in k2mc_credit_fetch_bytes. */
void k2mc_credit_open(struct k2mc_credit *c, struct k2mc_budget *b);
void k2mc_credit_close(struct k2mc_credit *c);

/* How many bytes of records the thread may take from librdkafka's queue
 * now: the credit in hand, or its share of the room left (room / threads
 * joined, at most a chunk), whichever is more; UINT64_MAX without a budget.
 * Records fetched and not yet paid for are outside the budget; shares keep
 * them within the room, so records held plus records fetched stay within
 * the limit plus one record per thread. */
uint64_t k2mc_credit_fetch_bytes(const struct k2mc_credit *c);

/* 1 when the waiting thread must give up (its partition is stopping). */
typedef int (*k2mc_budget_stop_fn)(void *arg);

/* Slow path of k2mc_credit_spend: makes c->left >= need, blocking while the
 * budget has no room. Waiters are served in arrival order; one that needs
 * more than the whole limit passes when nothing else is held (used == 0),
 * so one large record cannot deadlock. Before it blocks it gives back what
 * it holds, so a waiter never holds credit. 0, or -1 when stop(arg) said to
 * give up (checked at every wake-up: a release, k2mc_budget_kick, or the
 * backstop timeout). */
int k2mc_credit_refill(struct k2mc_credit *c, uint64_t need, k2mc_budget_stop_fn stop,
		       void *arg);

/* Takes need bytes of credit for a record about to be handed out. */
static inline int k2mc_credit_spend(struct k2mc_credit *c, uint64_t need,
				    k2mc_budget_stop_fn stop, void *arg)
{
	if (c->b == NULL)
		return 0;
	if (c->left < need && k2mc_credit_refill(c, need, stop, arg) != 0)
		return -1;
	c->left -= need;
	return 0;
}

/* A record spent for was not handed out after all (stop): its credit is the
 * thread's again. */
static inline void k2mc_credit_unspend(struct k2mc_credit *c, uint64_t n)
{
	if (c->b != NULL)
		c->left += n;
}

/* Gives the unspent credit back: before the thread waits on anything else
 * (an idle fetch, a full ring) and when it stops. */
void k2mc_credit_return(struct k2mc_credit *c);

#endif
