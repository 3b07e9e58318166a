/* --refill; see refill.h. Detection, the two reading passes over each held
 * partition, and the refill writes. Not the live path (writer.c) and not the
 * group logic (group.c): it only reads the partition table.
 *
 * Memcached 1.6.18 has no "ms ... E<version>", so no server-side version can
 * order a refill write against a live one. The invariant (a key's value
 * never goes back to an older offset) rests instead on this:
 *
 * Loss of server s seen at time S. The refill thread clears s's filter (a
 * Bloom filter of keys), publishes it and sets bit s of the filter's mask
 * (seq_cst). From then on every writer, before queueing a live command on s
 * (set, delete, invalidate), sets the key's bits (seq_cst fetch_or), so the
 * bits are set before any byte of that command is sent. Only after that
 * does the refill read, for each held partition, its end offset P (the high
 * watermark): every record at or past P is produced after the mask was set,
 * so every live write of it on s is noted.
 * (1) Gate: the refill of a partition writes nothing until every live record
 *     below P is acknowledged (the partition's watermark, or the group's
 *     committed offset, >= P). Afterwards the live path writes only offsets
 *     >= P.
 * (2) Pass 1 reads [start, P) and keeps, per key placed on s, the offset of
 *     its last record (by a 64-bit hash of the Memcached key). A key's
 *     records are those the live path wrote or deleted it for: each record
 *     gets the live path's decision (policy.h: the mapping, --on-invalid,
 *     the server's value limit; hashed keys included), so refill never
 *     stores a record the live path refused. Pass 2 reads
 *     the same range and writes only each key's last record, if it is a set:
 *     so a refill never replaces its own newer write, and what it writes for
 *     k is at least as new as any live write of k below P (live writes of a
 *     key are in offset order). Two keys with one hash: only the later
 *     record's key is written; the other stays absent (a miss).
 * (3) Pass 2 writes in batches (at most BATCH_KEYS keys): for each key k of
 *     a batch, check k's bits (c1) when k is queued, before any byte of the
 *     batch is sent; if set, a live write of an offset >= P is noted, skip.
 *     Else queue "add k" (store only if absent). Then the whole batch is
 *     sent and every reply read. A live set of k that reached the server
 *     first makes the add fail (NOT_STORED), so an older refill value never
 *     replaces a newer live value, not even for a moment; a live set that
 *     comes after our add replaces it (forward). Once every reply of the
 *     batch is in (or the connection broke: an add without a reply counts
 *     as stored), check each stored k again (c2). Set now: a live write of
 *     k was noted between c1 and c2; if it was a delete that landed before
 *     our add, our add resurrected an older value, so the batch's deletes
 *     are sent for every such k (at worst the newer live value is removed:
 *     a miss until k's next record). That delete race is the one window
 *     where a reader can see an older value: from our add to our delete
 *     (about one batch's round trip, and the deletes' own), after a live
 *     delete of the same key in the same instant; a live set cannot open
 *     it. Clear at c2: by seq_cst, every live write of k noted later is
 *     sent after c2, so after our add was applied (its reply is in); the
 *     newer value lands last.
 * False positives of the filter only skip a write (a miss). The bits are
 * never cleared while the refill of s runs; the mask bit is cleared after.
 * Only classic add/delete (k2mc's codec, mccodec.h, over k2mc's transport;
 * libmemcached's buffered requests hide replies), so it works on
 * classic-only servers and through proxies: no meta command is needed.
 * Detection ("stats", the sentinels' get and set) goes over the same
 * connection, one request and its whole reply at a time, so plain TCP,
 * unix sockets and --mc-tls all work the same way.
 * Limits: a rebalance that moves a partition during its refill stops that
 * partition's refill (its sentinel stays missing, so the new owner refills
 * it); a new owner re-writes records from the committed offset, as the live
 * path always does after a rebalance. Refill places keys as configured,
 * without --mc-eject's state. */
#include "workers/refill.h"

#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu.h>
#include <xxhash.h>

#include "core/log.h"
#include "core/counters.h"
#include "workers/mapping.h"
#include "workers/mccodec.h"
#include "workers/mcconn.h" /* mcconn_tls_from_config: the live path's TLS settings */
#include "workers/placement.h"
#include "workers/policy.h"
#include "workers/transport.h"

/* how often sentinels and "stats" are checked */
#define CHECK_MS 2000
#define POLL_MS 100
#define KAFKA_TIMEOUT_MS 5000
/* 2^23 bits = 1 MiB per server under refill */
#define BLOOM_BITS_LOG2 23
#define BLOOM_WORDS ((1u << BLOOM_BITS_LOG2) / 64)
/* partitions looked at per round (held_now) */
#define MAX_HELD K2MC_REFILL_MAX_LAG_ROWS
/* the lag rows are brought up to date every so many records */
#define LAG_EVERY 256
/* pass 2's writes go out in batches of at most this many keys and bytes */
#define BATCH_KEYS 256
#define BATCH_BYTES (1u << 20)
#define IO_TIMEOUT_MS 5000
/* detection's requests: a server that does not answer within this is
 * unreachable for this round */
#define CHECK_IO_MS 2000
/* the largest detection reply: "stats" is about 3 KiB */
#define REPLY_MAX (64u << 10)

struct srv {
	/* refill thread only: detection (stats, sentinels) and the batched
	 * refill writes, in turn; TLS with --mc-tls */
	struct transport *wt;
	int have_stats;
	/* the largest value it takes during its refill (k2mc_policy_value_limit
	 * of its item_size_max, read when the refill begins) */
	size_t limit;
	uint64_t pid;
	int64_t boot;       /* time - uptime */
	uint64_t uptime;
};

/* A partition this process has looked at (refill thread only). known, bit
 * s: server s held the partition's sentinel, or this process set it, since
 * the partition was assigned. A sentinel known and then missing is a loss,
 * whatever was committed: records are written before their offsets are
 * committed, so a flush before the first commit of a partition takes
 * writes that "nothing committed" would not refill. */
struct seen_part {
	uint64_t uid;
	uint64_t known;
};

struct k2mc_refill {
	const struct k2mc_config *cfg;
	/* the compiled templates, the writers' own; immutable */
	const struct k2mc_mapping *map;
	/* where the writers note the keys they write on a server under refill
	 * (refill.h); the caller's */
	struct k2mc_refill_filter *filter;
	/* the live path's decision (policy.h), from the same configuration;
	 * immutable */
	struct k2mc_policy policy;
	k2mc_table_ref *table;
	/* immutable: the membership lease the writers check (NULL: none) */
	struct k2mc_fence *fence;
	rd_kafka_t *rk;                 /* refill thread only: assign, never commit */
	struct k2mc_placement *place;   /* refill thread only */
	struct k2mc_arena *arena;
	struct srv srv[K2MC_MAX_SERVERS];
	pthread_t thread;
	int started;
	/* main -> thread (release / acquire); also the cancel flag of the
	 * servers' transports, which read it with acquire while they wait */
	_Atomic int stop;
	/* thread -> anyone, relaxed */
	_Atomic uint64_t records;
	_Atomic uint64_t losses;
	_Atomic int active[K2MC_MAX_SERVERS];
	_Atomic uint64_t srv_records[K2MC_MAX_SERVERS]; /* this refill of the server */
	/* what the state line and the lag metric show: written by the refill
	 * thread under lock, read by any thread under lock (k2mc_refill_view,
	 * k2mc_refill_lags) */
	pthread_mutex_t lock;
	struct {
		enum k2mc_refill_state state;
		int64_t t0_ms, t1_ms; /* its refill's start and end (k2mc_now_ms) */
		uint64_t ends;
	} sv[K2MC_MAX_SERVERS];
	int lag_server;                 /* whose refill the rows are, -1: none yet */
	struct k2mc_refill_lag *lag;    /* [MAX_HELD] */
	size_t nlag;
	/* pass 1's table: key hash -> last offset (0 hash stored as 1) */
	uint64_t *hk;
	int64_t *ho;
	size_t hcap, hn;
	/* parts (by uid) whose first look is done (first_look) */
	struct seen_part *seen;
	size_t nseen, seen_cap;
	/* --refill-rate pacing: writes since pace_t0 */
	int64_t pace_t0;
	uint64_t pace_n;
	/* pass 2's batch (refill thread only): the adds (classic, mccodec.h),
	 * each one's key and fate; the deletes of the keys a live write raced
	 * (batch_flush); a sentinel's set (detection) */
	struct mccodec adds, dels, one;
	char *rbuf; /* [REPLY_MAX]: detection's replies (request) */
	struct {
		uint8_t klen;
		uint8_t fate; /* enum fate */
		char key[K2MC_MC_KEY_MAX];
	} we[BATCH_KEYS];
};

static void bloom_bits(const char *key, size_t klen, uint32_t *a, uint32_t *b)
{
	uint64_t h = XXH3_64bits(key, klen);

	*a = (uint32_t)(h & ((1u << BLOOM_BITS_LOG2) - 1));
	*b = (uint32_t)((h >> 32) & ((1u << BLOOM_BITS_LOG2) - 1));
}

struct k2mc_refill_filter *k2mc_refill_filter_new(void)
{
	return calloc(1, sizeof(struct k2mc_refill_filter));
}

void k2mc_refill_filter_free(struct k2mc_refill_filter *rf)
{
	for (int s = 0; rf != NULL && s < K2MC_MAX_SERVERS; s++)
		free((void *)atomic_load_explicit(&rf->bloom[s], memory_order_relaxed));
	free(rf);
}

void k2mc_refill_note_slow(struct k2mc_refill_filter *rf, int s, const char *key, size_t klen)
{
	_Atomic uint64_t *f = atomic_load_explicit(&rf->bloom[s], memory_order_acquire);
	uint32_t a, b;

	if (f == NULL)
		return;
	bloom_bits(key, klen, &a, &b);
	/* seq_cst: ordered before this command's send (see the top) */
	atomic_fetch_or_explicit(&f[a / 64], 1ull << (a % 64), memory_order_seq_cst);
	atomic_fetch_or_explicit(&f[b / 64], 1ull << (b % 64), memory_order_seq_cst);
}

static int bloom_has(const struct k2mc_refill *rf, int s, const char *key, size_t klen)
{
	_Atomic uint64_t *f = atomic_load_explicit(&rf->filter->bloom[s], memory_order_acquire);
	uint32_t a, b;

	bloom_bits(key, klen, &a, &b);
	return (atomic_load_explicit(&f[a / 64], memory_order_seq_cst) >> (a % 64) & 1) &&
	       (atomic_load_explicit(&f[b / 64], memory_order_seq_cst) >> (b % 64) & 1);
}

static int stopping(struct k2mc_refill *rf)
{
	return atomic_load_explicit(&rf->stop, memory_order_acquire);
}

static void nap_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- the partitions held ---------------------------------------------------*/

struct held {
	char topic[256];
	int32_t partition;
	uint64_t uid;
	int64_t self_committed; /* what this process committed of it, -1: nothing yet */
};

/* Copies the table's partitions (at most max). */
static size_t held_now(struct k2mc_refill *rf, struct held *h, size_t max)
{
	struct k2mc_part_table *t = k2mc_table_read_lock(rf->table);
	size_t n = 0;

	for (size_t i = 0; t != NULL && i < t->n && n < max; i++, n++) {
		snprintf(h[n].topic, sizeof(h[n].topic), "%s", k2mc_part_topic(t->parts[i]));
		h[n].partition = k2mc_part_id(t->parts[i]);
		h[n].uid = k2mc_part_uid(t->parts[i]);
		h[n].self_committed = k2mc_part_committed(t->parts[i]);
	}
	k2mc_table_read_unlock(rf->table);
	return n;
}

/* The partition's watermark while it is still the same part in the table,
 * else -2 (revoked). */
static int64_t held_watermark(struct k2mc_refill *rf, const struct held *h)
{
	struct k2mc_part_table *t = k2mc_table_read_lock(rf->table);
	int64_t wm = -2;

	for (size_t i = 0; t != NULL && i < t->n; i++) {
		if (k2mc_part_uid(t->parts[i]) == h->uid) {
			wm = k2mc_part_watermark(t->parts[i]);
			break;
		}
	}
	k2mc_table_read_unlock(rf->table);
	return wm;
}

/* The group's committed offset, -1 if none, -2 if it cannot be read. */
static int64_t group_committed(struct k2mc_refill *rf, const struct held *h)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	int64_t off = -2;

	rd_kafka_topic_partition_list_add(l, h->topic, h->partition);
	if (rd_kafka_committed(rf->rk, l, KAFKA_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR &&
	    l->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
		off = l->elems[0].offset >= 0 ? l->elems[0].offset : -1;
	rd_kafka_topic_partition_list_destroy(l);
	return off;
}

/* ---- one request, its whole reply: detection over the transport ----------
 * The connection is the one pass 2's batches use (the refill thread does one
 * thing at a time), in the classic text protocol every server and proxy
 * speaks; TLS with --mc-tls. */

static int wt_connect(struct k2mc_refill *rf, int s)
{
	struct srv *v = &rf->srv[s];

	/* an idle connection the server closed (a restart) or that holds
	 * bytes nobody asked for is not reused */
	if (transport_is_open(v->wt) && transport_idle_broken(v->wt))
		transport_close(v->wt);
	if (transport_is_open(v->wt))
		return 0;
	return transport_connect(v->wt, k2mc_now_ms() + 2000);
}

/* A "get" reply of at most REPLY_MAX bytes of data, whole (mccodec.h). */
static long whole_get(const char *b, size_t n)
{
	return mccodec_whole_get(b, n, REPLY_MAX);
}

/* Sends req and reads its reply (complete: see above) into rf->rbuf:
 * 0 and its length, or -1 (unreachable, no reply in CHECK_IO_MS, or a reply
 * out of step: the connection is closed). A request that fails before any
 * byte of its reply is tried once more on a new connection. */
static int request(struct k2mc_refill *rf, int s, const char *req, size_t len,
		   long (*complete)(const char *b, size_t n), size_t *rlen)
{
	struct transport *t = rf->srv[s].wt;

	for (int attempt = 0; attempt < 2; attempt++) {
		int64_t deadline = k2mc_now_ms() + CHECK_IO_MS;
		size_t have = 0;
		long c = 0;

		if (wt_connect(rf, s) != 0)
			return -1;
		if (transport_send_all(t, req, len, deadline) == 0) {
			while ((c = complete(rf->rbuf, have)) == 0 && have < REPLY_MAX) {
				ssize_t r = transport_recv_some(t, rf->rbuf + have, REPLY_MAX - have,
								deadline);

				if (r <= 0)
					break;
				have += (size_t)r;
			}
		}
		if (c > 0 && (size_t)c == have) {
			*rlen = have;
			return 0;
		}
		transport_close(t);
		/* a connection the server dropped while idle (a restart) fails
		 * before any byte: once more. Any reply bytes: not retried */
		if (have > 0)
			return -1;
	}
	return -1;
}

/* ---- sentinels -------------------------------------------------------------*/

/* k2mc:<group>:sentinel:<topic>:<partition>, or, when that is no valid
 * memcached key (<= 250 bytes, no whitespace or control characters),
 * k2mc:sentinel:<xxh3 of it, hex>. */
static size_t sentinel_key(const struct k2mc_refill *rf, const struct held *h, char *buf,
			   size_t len)
{
	int n = snprintf(buf, len, "k2mc:%s:sentinel:%s:%d", rf->cfg->group, h->topic,
			 h->partition);
	int ok = n > 0 && (size_t)n <= K2MC_MC_KEY_MAX && (size_t)n < len;

	for (int i = 0; ok && i < n; i++)
		ok = (unsigned char)buf[i] > 0x20 && (unsigned char)buf[i] != 0x7f;
	if (!ok) {
		uint64_t x = XXH3_64bits(buf, n > 0 ? strnlen(buf, len) : 0);

		n = snprintf(buf, len, "k2mc:sentinel:%016" PRIx64, x);
	}
	return (size_t)n;
}

/* "get <key>": 1 present, 0 missing (END alone), -1 server unreachable or
 * an error reply. */
static int sentinel_present(struct k2mc_refill *rf, int s, const struct held *h)
{
	char key[512], req[600];
	size_t kl = sentinel_key(rf, h, key, sizeof(key)), rl;
	size_t n = mccodec_get_request(req, key, kl);

	if (request(rf, s, req, n, whole_get, &rl) != 0)
		return -1;
	if (rl >= 6 && memcmp(rf->rbuf, "VALUE ", 6) == 0)
		return 1;
	return mccodec_line_is(rf->rbuf, rl, "END") ? 0 : -1;
}

static int sentinel_set(struct k2mc_refill *rf, int s, const struct held *h)
{
	char key[512], val[64];
	size_t kl = sentinel_key(rf, h, key, sizeof(key)), rl;
	int vl = snprintf(val, sizeof(val), "k2mc sentinel %lld", (long long)time(NULL));

	/* no TTL: it lives as long as the server's contents */
	mccodec_reset(&rf->one);
	if (mccodec_queue_set(&rf->one, 0, key, kl, val, (size_t)vl, 0, 0) != 0 ||
	    request(rf, s, rf->one.out, rf->one.out_len, mccodec_whole_line, &rl) != 0)
		return -1;
	return mccodec_line_is(rf->rbuf, rl, "STORED") ? 0 : -1;
}

/* A restart by "stats": another pid, a smaller uptime, or another boot
 * time (time - uptime, 2 s of slack). 1 restarted, 0 not (or first look),
 * -1 no stats (a proxy; then only sentinels apply). */
static int restarted(struct k2mc_refill *rf, int s)
{
	struct srv *v = &rf->srv[s];
	uint64_t pid = 0, uptime = 0, now = 0;
	size_t rl;
	int r = 0;
	int64_t boot;

	if (request(rf, s, "stats\r\n", 7, mccodec_whole_stats, &rl) != 0 || rl < 5 ||
	    !mccodec_line_is(rf->rbuf + rl - 5, 5, "END") ||
	    mccodec_stat_u64(rf->rbuf, rl, "pid", &pid) != 0 ||
	    mccodec_stat_u64(rf->rbuf, rl, "uptime", &uptime) != 0 ||
	    mccodec_stat_u64(rf->rbuf, rl, "time", &now) != 0 || pid == 0)
		return -1;
	boot = (int64_t)now - (int64_t)uptime;
	if (v->have_stats && (pid != v->pid || uptime < v->uptime || llabs(boot - v->boot) > 2))
		r = 1;
	v->have_stats = 1;
	v->pid = pid;
	v->uptime = uptime;
	v->boot = boot;
	return r;
}

/* The value limit of server s as the live path computes it after a
 * connect: "stats settings" item_size_max (unknown, 0, from a server or
 * proxy that does not say), capped by --max-value-bytes. */
static void read_limit(struct k2mc_refill *rf, int s)
{
	uint64_t item = 0;
	size_t rl;

	if (request(rf, s, "stats settings\r\n", 16, mccodec_whole_stats, &rl) != 0 || rl < 5 ||
	    !mccodec_line_is(rf->rbuf + rl - 5, 5, "END") ||
	    mccodec_stat_u64(rf->rbuf, rl, "item_size_max", &item) != 0)
		item = 0;
	rf->srv[s].limit = k2mc_policy_value_limit(&rf->policy, (size_t)item);
}

/* ---- reading a range ------------------------------------------------------*/

static void map_reset(struct k2mc_refill *rf)
{
	if (rf->hk != NULL)
		memset(rf->hk, 0, rf->hcap * sizeof(*rf->hk));
	rf->hn = 0;
}

static int64_t *map_slot(struct k2mc_refill *rf, uint64_t h, int insert)
{
	size_t i;

	h = h ? h : 1;
	if (insert && (rf->hn + 1) * 2 > rf->hcap) {
		size_t nc = rf->hcap ? rf->hcap * 2 : 1u << 16;
		uint64_t *nk = calloc(nc, sizeof(*nk));
		int64_t *no = calloc(nc, sizeof(*no));

		if (nk == NULL || no == NULL) {
			free(nk);
			free(no);
			return NULL;
		}
		for (size_t j = 0; j < rf->hcap; j++) {
			if (rf->hk[j] == 0)
				continue;
			for (i = rf->hk[j] & (nc - 1); nk[i] != 0; i = (i + 1) & (nc - 1))
				;
			nk[i] = rf->hk[j];
			no[i] = rf->ho[j];
		}
		free(rf->hk);
		free(rf->ho);
		rf->hk = nk;
		rf->ho = no;
		rf->hcap = nc;
	}
	if (rf->hcap == 0)
		return NULL;
	for (i = h & (rf->hcap - 1); rf->hk[i] != 0; i = (i + 1) & (rf->hcap - 1)) {
		if (rf->hk[i] == h)
			return &rf->ho[i];
	}
	if (!insert)
		return NULL;
	rf->hk[i] = h;
	rf->hn++;
	return &rf->ho[i];
}

struct pass {
	int s;
	const struct held *h; /* the partition read */
	uint64_t gen;      /* the fence generation when the pass began */
	int second;        /* 0: pass 1 (last offsets), 1: pass 2 (writes) */
	size_t row;        /* the partition's lag row */
	int64_t start, end; /* the range [start, P) */
	uint64_t read, written, skipped_live, undone;
	int failed;        /* the server failed: the refill is incomplete */
};

/* ---- what the state line and the lag metric show --------------------------*/

static void lag_set(struct k2mc_refill *rf, size_t row, int64_t records)
{
	pthread_mutex_lock(&rf->lock);
	if (row < rf->nlag)
		rf->lag[row].records = records;
	pthread_mutex_unlock(&rf->lock);
}

/* Records left to read once offset `next` is the next one: the rest of
 * this pass, and in pass 1 all of pass 2. */
static int64_t lag_left(const struct pass *ps, int64_t next)
{
	int64_t left = ps->end > next ? ps->end - next : 0;

	return ps->second ? left : left + (ps->end - ps->start);
}

static void state_set(struct k2mc_refill *rf, int s, enum k2mc_refill_state st)
{
	pthread_mutex_lock(&rf->lock);
	rf->sv[s].state = st;
	if (st == K2MC_REFILL_DETECTING) {
		rf->sv[s].t0_ms = k2mc_now_ms();
		atomic_store_explicit(&rf->srv_records[s], 0, memory_order_relaxed);
	} else if (st == K2MC_REFILL_DONE) {
		rf->sv[s].t1_ms = k2mc_now_ms();
		rf->sv[s].ends++;
		for (size_t i = 0; rf->lag_server == s && i < rf->nlag; i++)
			rf->lag[i].records = 0;
	}
	pthread_mutex_unlock(&rf->lock);
}

static void pace(struct k2mc_refill *rf)
{
	uint64_t rate = rf->cfg->refill_rate;
	int64_t now, due;

	if (rate == 0)
		return;
	now = k2mc_now_ms();
	due = rf->pace_t0 + (int64_t)(rf->pace_n * 1000 / rate);
	/* a new window after a pause (reading, the gate): no burst to catch up */
	if (rf->pace_n == 0 || now - due > 1000) {
		rf->pace_t0 = now;
		rf->pace_n = 0;
		due = now;
	}
	if (due > now)
		nap_ms((int)(due - now));
	rf->pace_n++;
}

/* ---- pass 2's writes: batches of adds over k2mc's own transport -----------
 * libmemcached's pipelining (BUFFER_REQUESTS) reads and drops the replies
 * of buffered commands (mcconn.h), and each add's own reply decides what
 * happens to its key, so the commands are k2mc's own codec's (mccodec.h):
 * the classic text protocol, which every memcached and proxy speaks. */

enum fate {
	F_QUEUED = 0,   /* sent, no reply read */
	F_STORED,       /* STORED */
	F_NOT_STORED,   /* NOT_STORED: a live value was there first */
	F_TOO_LARGE,    /* SERVER_ERROR object too large for cache: not stored */
	F_FAILED,       /* any other reply: not stored, the refill is incomplete */
};

/* With --refill-rate, about 10 ms of writes a batch, so the rate holds
 * over short windows too. */
static size_t batch_keys(const struct k2mc_refill *rf)
{
	uint64_t r = rf->cfg->refill_rate / 100;

	return rf->cfg->refill_rate == 0 || r >= BATCH_KEYS ? BATCH_KEYS : r ? (size_t)r : 1;
}

/* "add <key> <flags> <exptime> <bytes>": store only if absent. */
static int batch_add(struct k2mc_refill *rf, const struct k2mc_mapped *mp)
{
	size_t i = rf->adds.ncmds;

	if (mccodec_queue_add(&rf->adds, mp->key, mp->key_len, mp->value, mp->value_len, mp->flags,
			      mp->exptime) != 0)
		return -ENOMEM;
	memcpy(rf->we[i].key, mp->key, mp->key_len);
	rf->we[i].klen = (uint8_t)mp->key_len;
	rf->we[i].fate = F_QUEUED;
	return 0;
}

/* What a reply means for an add, or for a delete (F_STORED: done). */
static int fate_add(enum mc_reply r)
{
	switch (r) {
	case MC_NONE:
		return F_QUEUED;
	case MC_STORED:
		return F_STORED;
	case MC_NOT_STORED:
		return F_NOT_STORED;
	case MC_TOO_LARGE:
		return F_TOO_LARGE;
	default:
		return F_FAILED;
	}
}

static int fate_delete(enum mc_reply r)
{
	if (r == MC_NONE)
		return F_QUEUED;
	return r == MC_DELETED || r == MC_NOT_FOUND ? F_STORED : F_FAILED;
}

/* Sends the batch b (classic) and reads one reply per command into
 * fates[i * stride] (via fate). 0 every reply read; -1 the connection
 * failed (closed; the commands without a reply keep F_QUEUED) or a reply
 * made the stream unreadable: a reply out of place or one of F_FAILED,
 * after which the stream may not be in step any more, so what came after
 * it is not believed (F_QUEUED). */
static int exchange(struct k2mc_refill *rf, int s, struct mccodec *b, int (*fate)(enum mc_reply),
		    uint8_t *fates, size_t stride)
{
	struct transport *t = rf->srv[s].wt;
	char rb[8192], why[256];
	size_t have = 0, bad = b->ncmds;
	int64_t deadline = k2mc_now_ms() + IO_TIMEOUT_MS;
	int rc = -1;

	if (wt_connect(rf, s) == 0 && transport_send_all(t, b->out, b->out_len, deadline) == 0) {
		b->out_sent = b->out_len;
		for (;;) {
			ssize_t r;

			if (mccodec_parse(b, rb, &have, sizeof(rb), why, sizeof(why)) != 0 &&
			    !b->complete) {
				bad = b->nreplies; /* the line it could not read was its */
				break;
			}
			if (b->complete)
				break;
			r = transport_recv_some(t, rb + have, sizeof(rb) - have, deadline);
			if (r <= 0)
				break;
			have += (size_t)r;
		}
		rc = b->complete ? 0 : -1;
	}
	for (size_t i = 0; i < b->ncmds; i++) {
		int f = i == bad ? F_FAILED : fate(mccodec_reply(b, i));

		fates[i * stride] = (uint8_t)f;
		if (f != F_FAILED)
			continue;
		for (size_t j = i + 1; j < b->ncmds; j++)
			fates[j * stride] = F_QUEUED;
		rc = -1;
		break;
	}
	if (rc != 0)
		transport_close(t);
	return rc;
}

/* The checks a live write passes before it is sent (writer.c), waited
 * for as the writers wait: this process holds the membership lease, and
 * the partition is still ours, in the same assignment as when the pass
 * began (a revocation bumps the fence generation even when the partition
 * comes back), past its takeover wait (takeover.h: its previous owner may
 * still write). Checked right before the send, as the writers do, so the
 * lease's margin covers the bytes on the wire. 1: send; 0: the partition
 * or the assignment is gone, or k2mc stops. */
static int wait_owner(struct k2mc_refill *rf, const struct pass *ps)
{
	for (;;) {
		int own = 0;
		struct k2mc_part_table *t;

		if (stopping(rf))
			return 0;
		if (rf->fence == NULL)
			return 1;
		if (k2mc_fence_generation(rf->fence) != ps->gen)
			return 0;
		t = k2mc_table_read_lock(rf->table);
		for (size_t i = 0; t != NULL && i < t->n; i++) {
			if (k2mc_part_uid(t->parts[i]) == ps->h->uid) {
				own = k2mc_part_holding(t->parts[i]) ? 1 : 2;
				break;
			}
		}
		k2mc_table_read_unlock(rf->table);
		if (own == 0)
			return 0;
		if (own == 2 && k2mc_fence_held(rf->fence))
			return 1;
		nap_ms(POLL_MS);
	}
}

/* Sends the batch's adds, reads every reply, then checks each key that
 * may have been stored again (c2) and deletes those a live write was
 * noted for meanwhile (see the top). */
static void batch_flush(struct k2mc_refill *rf, struct pass *ps)
{
	uint8_t dfate[BATCH_KEYS];
	size_t nd = 0, nw = rf->adds.ncmds;
	int s = ps->s;

	if (nw == 0)
		return;
	if (!wait_owner(rf, ps)) {
		/* not sent: the refill is incomplete, its sentinel stays missing
		 * and the partition's owner refills it again */
		if (!ps->failed)
			k2mc_log_reason(K2MC_LOG_WARN, "revoked",
					"refill of %s [%d]: the partition was revoked or reassigned "
					"(or k2mc stops); refill stopped without writing its batch",
					ps->h->topic, ps->h->partition);
		ps->failed = 1;
		mccodec_reset(&rf->adds);
		return;
	}
	if (exchange(rf, s, &rf->adds, fate_add, &rf->we[0].fate, sizeof(rf->we[0])) != 0)
		ps->failed = 1;
	mccodec_reset(&rf->adds);
	mccodec_reset(&rf->dels);
	/* c2: every reply is in, or the connection is gone (F_QUEUED: the add
	 * may have been applied, so it is checked as if stored) */
	for (size_t i = 0; i < nw; i++) {
		const char *key = rf->we[i].key;
		size_t kl = rf->we[i].klen;

		switch (rf->we[i].fate) {
		case F_NOT_STORED:
			ps->skipped_live++;
			continue;
		case F_TOO_LARGE:
		case F_FAILED:
			continue;
		case F_STORED:
		case F_QUEUED:
			break;
		}
		if (!bloom_has(rf, s, key, kl)) {
			if (rf->we[i].fate == F_STORED) {
				ps->written++;
				atomic_fetch_add_explicit(&rf->records, 1, memory_order_relaxed);
				atomic_fetch_add_explicit(&rf->srv_records[s], 1,
							  memory_order_relaxed);
			}
			continue;
		}
		if (mccodec_queue_delete(&rf->dels, 0, key, kl) != 0) {
			ps->failed = 1;
			continue;
		}
		dfate[nd++] = F_QUEUED;
		ps->undone++;
	}
	/* a new connection if the adds' broke: the deletes matter most */
	if (nd > 0 && exchange(rf, s, &rf->dels, fate_delete, dfate, 1) != 0) {
		char srv[K2MC_SERVER_LABEL_MAX];

		k2mc_server_label(&rf->cfg->servers[s], srv, sizeof(srv));
		k2mc_log_server(K2MC_LOG_WARN, srv, "refill delete failed",
				"refill of memcached %s: %zu delete(s) for keys a live write raced "
				"could not be sent (%s): such a key may keep an older value until "
				"its next record",
				srv, nd, transport_error(rf->srv[s].wt));
		ps->failed = 1;
	}
	for (size_t i = 0; i < nd; i++) {
		if (dfate[i] != F_STORED)
			ps->failed = 1;
	}
}

/* One record of the range: pass 1 remembers its offset under its key's
 * hash; pass 2 writes it if it is its key's last. A key's records are the
 * ones the live path wrote or deleted it for, decided as the live path
 * decides (policy.h): so a record the live path skipped, dead-lettered or
 * refused (a value over the limit, a bad TTL header) is never written, and
 * one it deleted the key for ends the key's history as a delete does. */
static void one_record(struct k2mc_refill *rf, struct pass *ps, rd_kafka_message_t *m)
{
	const struct k2mc_mapping *map = rf->map;
	struct k2mc_record rec;
	struct k2mc_mapped mp;
	struct k2mc_decision d;
	int64_t *slot;
	uint64_t h;
	int r;

	k2mc_arena_reset(rf->arena);
	k2mc_record_of(map, m, &rec);
	r = k2mc_mapping_map(map, &rec, NULL, k2mc_now_ms(), rf->arena, &mp);
	if (r < 0) {
		ps->failed = 1; /* no memory for a built value: incomplete */
		return;
	}
	/* no key: the live path touched none for it */
	if (mp.key_len == 0)
		return;
	if (k2mc_placement_server(rf->place, mp.key, mp.key_len) != ps->s)
		return;
	d = k2mc_policy_decide(&rf->policy, r, &mp, rf->srv[ps->s].limit);
	if (d.fate != K2MC_FATE_WRITE && d.fate != K2MC_FATE_INVALIDATE)
		return; /* the live path left the key as it was */
	ps->read++;
	h = XXH3_64bits(mp.key, mp.key_len);
	if (!ps->second) {
		slot = map_slot(rf, h, 1);
		if (slot != NULL)
			*slot = m->offset;
		return;
	}
	slot = map_slot(rf, h, 0);
	if (slot == NULL || *slot != m->offset || d.fate != K2MC_FATE_WRITE ||
	    mp.op != K2MC_OP_SET || ps->failed)
		return;
	pace(rf);
	if (bloom_has(rf, ps->s, mp.key, mp.key_len)) { /* c1, before any byte of the add */
		ps->skipped_live++;
		return;
	}
	if (batch_add(rf, &mp) != 0) {
		ps->failed = 1;
		return;
	}
	if (rf->adds.ncmds >= batch_keys(rf) || rf->adds.out_len >= BATCH_BYTES)
		batch_flush(rf, ps);
}

/* Reads [start, end) of h (assign, never commit). 0, 1 revoked or stopping,
 * -1 a Kafka error. */
static int read_range(struct k2mc_refill *rf, const struct held *h, int64_t start, int64_t end,
		      struct pass *ps)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	int64_t last_check = k2mc_now_ms();
	int rc = 0;

	rd_kafka_topic_partition_list_add(l, h->topic, h->partition)->offset = start;
	if (rd_kafka_assign(rf->rk, l) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rd_kafka_topic_partition_list_destroy(l);
		return -1;
	}
	rd_kafka_topic_partition_list_destroy(l);
	for (;;) {
		rd_kafka_message_t *m;

		if (stopping(rf) || ps->failed) {
			rc = 1;
			break;
		}
		if (k2mc_now_ms() - last_check >= 500) {
			last_check = k2mc_now_ms();
			if (held_watermark(rf, h) == -2) {
				rc = 1;
				break;
			}
		}
		m = rd_kafka_consumer_poll(rf->rk, POLL_MS);
		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			rd_kafka_message_destroy(m);
			break;
		}
		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			k2mc_log_partition(K2MC_LOG_WARN, h->topic, h->partition, "kafka",
					   "refill: reading %s [%d]: %s", h->topic, h->partition,
					   rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			rc = -1;
			break;
		}
		if (m->offset >= end) {
			rd_kafka_message_destroy(m);
			break;
		}
		one_record(rf, ps, m);
		if ((m->offset & (LAG_EVERY - 1)) == 0)
			lag_set(rf, ps->row, lag_left(ps, m->offset + 1));
		if (m->offset + 1 >= end) {
			rd_kafka_message_destroy(m);
			break;
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_assign(rf->rk, NULL);
	if (rc == 0 && ps->second)
		batch_flush(rf, ps);
	/* stopped or revoked: the unsent rest is dropped (nothing of it was sent) */
	mccodec_reset(&rf->adds);
	if (rc == 0)
		lag_set(rf, ps->row, lag_left(ps, end));
	return rc;
}

/* The range of h to refill, [*start, *end): *end is P, the end offset
 * now, so it must be read after the mask bit was set (see the top). 0, or
 * -1 a Kafka error. */
static int refill_range(struct k2mc_refill *rf, const struct held *h, int64_t *start,
			int64_t *end)
{
	int64_t lo = 0, hi = 0;

	*start = *end = 0;
	if (rd_kafka_query_watermark_offsets(rf->rk, h->topic, h->partition, &lo, &hi,
					     KAFKA_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return -1;
	*start = lo;
	if (!rf->cfg->refill_from_earliest) {
		rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
		int64_t ts = (int64_t)time(NULL) * 1000 - rf->cfg->refill_from_ms;

		rd_kafka_topic_partition_list_add(l, h->topic, h->partition)->offset = ts;
		if (rd_kafka_offsets_for_times(rf->rk, l, KAFKA_TIMEOUT_MS) !=
			    RD_KAFKA_RESP_ERR_NO_ERROR ||
		    l->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rd_kafka_topic_partition_list_destroy(l);
			return -1;
		}
		*start = l->elems[0].offset < 0 ? hi : l->elems[0].offset;
		rd_kafka_topic_partition_list_destroy(l);
	}
	*end = hi > *start ? hi : *start;
	return 0;
}

/* Refills [start, hi) of partition h (its lag row: row) on server s: 0
 * done, 1 stopped (revoked, stopping, or the server failed), -1 a Kafka
 * error. */
static int refill_partition(struct k2mc_refill *rf, int s, const struct held *h, size_t row,
			    int64_t start, int64_t hi, struct pass *tot)
{
	struct pass ps = { .s = s, .h = h, .row = row, .start = start, .end = hi,
			   .gen = k2mc_fence_generation(rf->fence) };
	int rc;

	if (start >= hi)
		return 0;
	/* (1) the gate: every live record below P acknowledged */
	for (int64_t next_commit_check = 0;;) {
		int64_t wm = held_watermark(rf, h);

		if (wm == -2 || stopping(rf))
			return 1;
		if (wm >= hi)
			break;
		if (k2mc_now_ms() >= next_commit_check) {
			if (group_committed(rf, h) >= hi)
				break;
			next_commit_check = k2mc_now_ms() + 1000;
		}
		nap_ms(POLL_MS);
	}
	map_reset(rf);
	rc = read_range(rf, h, start, hi, &ps);
	if (rc != 0)
		return rc;
	ps.second = 1;
	ps.read = 0;
	state_set(rf, s, K2MC_REFILL_REFILLING);
	rc = read_range(rf, h, start, hi, &ps);
	tot->read += ps.read;
	tot->written += ps.written;
	tot->skipped_live += ps.skipped_live;
	tot->undone += ps.undone;
	if (ps.failed)
		return 1;
	return rc;
}

static struct seen_part *seen_of(struct k2mc_refill *rf, uint64_t uid)
{
	for (size_t j = 0; j < rf->nseen; j++) {
		if (rf->seen[j].uid == uid)
			return &rf->seen[j];
	}
	return NULL;
}

/* The loss of server s: refills every partition of h[0..n), then sets
 * their sentinels. */
static void refill_server(struct k2mc_refill *rf, int s, struct held *h, size_t n,
			  const char *cause)
{
	_Atomic uint64_t *f = atomic_load_explicit(&rf->filter->bloom[s], memory_order_relaxed);
	static int64_t start[MAX_HELD], end[MAX_HELD];
	static int range_rc[MAX_HELD];
	char srv[K2MC_SERVER_LABEL_MAX], from[64];
	struct pass tot = { .s = s };
	int64_t t0 = k2mc_now_ms();
	size_t done = 0;
	double secs;

	k2mc_server_label(&rf->cfg->servers[s], srv, sizeof(srv));
	if (f == NULL) {
		f = calloc(BLOOM_WORDS, sizeof(*f));
		if (f == NULL) {
			k2mc_log_server(K2MC_LOG_ERR, srv, "out of memory",
					"refill of memcached %s: out of memory; retried later", srv);
			return;
		}
		atomic_store_explicit(&rf->filter->bloom[s], f, memory_order_release);
	} else {
		/* bit s is clear: no writer touches f now */
		for (size_t i = 0; i < BLOOM_WORDS; i++)
			atomic_store_explicit(&f[i], 0, memory_order_relaxed);
	}
	atomic_fetch_or_explicit(&rf->filter->mask, 1ull << s, memory_order_seq_cst);
	atomic_store_explicit(&rf->active[s], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&rf->losses, 1, memory_order_relaxed);
	state_set(rf, s, K2MC_REFILL_DETECTING);
	/* the limit the live path reads on its reconnect to the server that
	 * lost its contents: values over it were never stored there */
	read_limit(rf, s);
	/* every partition's P now, after the mask bit (see the top): the lag
	 * rows are known from the start */
	for (size_t i = 0; i < n; i++)
		range_rc[i] = refill_range(rf, &h[i], &start[i], &end[i]);
	pthread_mutex_lock(&rf->lock);
	rf->lag_server = s;
	rf->nlag = n;
	for (size_t i = 0; i < n; i++) {
		snprintf(rf->lag[i].topic, sizeof(rf->lag[i].topic), "%.255s", h[i].topic);
		rf->lag[i].partition = h[i].partition;
		rf->lag[i].records = range_rc[i] == 0 ? 2 * (end[i] - start[i]) : 0;
	}
	pthread_mutex_unlock(&rf->lock);
	if (rf->cfg->refill_from_earliest)
		snprintf(from, sizeof(from), "the earliest offset");
	else
		snprintf(from, sizeof(from), "%lld s ago", (long long)(rf->cfg->refill_from_ms / 1000));
	k2mc_log_server(K2MC_LOG_WARN, srv, cause,
			"memcached %s lost its contents (%s): refilling %zu partition(s) from %s "
			"up to the live position, only the keys placed on it%s",
			srv, cause, n, from,
			rf->cfg->refill_rate ? "" : ", at an unlimited rate");
	for (size_t i = 0; i < n && !stopping(rf); i++) {
		int rc = range_rc[i] != 0 ? range_rc[i]
					  : refill_partition(rf, s, &h[i], i, start[i], end[i], &tot);

		lag_set(rf, i, 0);
		if (rc == 0 && sentinel_set(rf, s, &h[i]) == 0) {
			struct seen_part *sp = seen_of(rf, h[i].uid);

			if (sp != NULL)
				sp->known |= 1ull << s;
			done++;
		}
		else if (rc < 0)
			k2mc_log_partition(K2MC_LOG_WARN, h[i].topic, h[i].partition, "kafka",
					   "refill of memcached %s: %s [%d] could not be read; "
					   "its sentinel stays missing, so it is tried again",
					   srv, h[i].topic, h[i].partition);
	}
	atomic_fetch_and_explicit(&rf->filter->mask, ~(1ull << s), memory_order_seq_cst);
	atomic_store_explicit(&rf->active[s], 0, memory_order_relaxed);
	state_set(rf, s, K2MC_REFILL_DONE);
	secs = (double)(k2mc_now_ms() - t0) / 1000.0;
	k2mc_log_server(K2MC_LOG_INFO, srv, NULL,
			"refill of memcached %s: %zu of %zu partition(s) done; %llu records "
			"written (%llu read for it, %llu left to newer live writes, %llu undone "
			"for a live write that raced), %.0f records/s over %.1f s",
			srv, done, n, (unsigned long long)tot.written,
			(unsigned long long)tot.read, (unsigned long long)tot.skipped_live,
			(unsigned long long)tot.undone,
			secs > 0 ? (double)tot.written / secs : 0.0, secs);
}

/* A partition seen for the first time by this process. A sentinel missing
 * while the group has no committed offset is a first run, not a loss: the
 * sentinel is set. The group's offset is read only while this process has
 * committed nothing of it yet (read first), so a commit of ours cannot pass
 * for an earlier run's; one landing in between only makes a needless
 * refill, never a missed one. 0 done, -1 to be tried again. */
static int first_look(struct k2mc_refill *rf, const struct held *h, uint64_t *known)
{
	int64_t c = -2;

	*known = 0;
	for (int s = 0; s < rf->cfg->nservers; s++) {
		int p = sentinel_present(rf, s, h);

		if (p < 0)
			continue; /* unreachable: its regular checks decide */
		if (p == 1)
			*known |= 1ull << s;
		if (p == 1 || h->self_committed >= 0)
			continue;
		if (c == -2)
			c = group_committed(rf, h);
		if (c == -2)
			return -1;
		if (c == -1 && sentinel_set(rf, s, h) == 0)
			*known |= 1ull << s;
	}
	return 0;
}

static void first_looks(struct k2mc_refill *rf)
{
	static struct held h[MAX_HELD];
	size_t n = held_now(rf, h, MAX_HELD);

	for (size_t i = 0; i < n; i++) {
		uint64_t known;

		if (seen_of(rf, h[i].uid) != NULL)
			continue;
		if (rf->nseen == rf->seen_cap) {
			size_t nc = rf->seen_cap ? rf->seen_cap * 2 : 64;
			struct seen_part *ns = realloc(rf->seen, nc * sizeof(*ns));

			if (ns == NULL)
				return;
			rf->seen = ns;
			rf->seen_cap = nc;
		}
		if (first_look(rf, &h[i], &known) == 0)
			rf->seen[rf->nseen++] = (struct seen_part){ .uid = h[i].uid, .known = known };
	}
}

/* One look at server s: a restart ("stats"), or sentinels missing while
 * the group has committed offsets. */
static void check_server(struct k2mc_refill *rf, int s)
{
	static struct held h[MAX_HELD], lost[MAX_HELD];
	size_t n = held_now(rf, h, MAX_HELD), nl = 0;
	int r = restarted(rf, s);

	for (size_t i = 0; i < n; i++) {
		struct seen_part *sp = seen_of(rf, h[i].uid);
		int p;
		int64_t c;

		if (sp == NULL)
			continue;
		p = sentinel_present(rf, s, &h[i]);
		if (p < 0)
			return; /* unreachable: looked at again on the next round */
		if (p == 1)
			sp->known |= 1ull << s;
		if (p == 1 && r != 1)
			continue;
		if (p == 0 && (sp->known & (1ull << s))) {
			lost[nl++] = h[i]; /* it was there: gone since */
			continue;
		}
		c = group_committed(rf, &h[i]);
		if (c == -2)
			continue;
		if (c == -1 && h[i].self_committed < 0) {
			/* never known here, and nothing was ever committed:
			 * a first run whose first look missed this server */
			if (sentinel_set(rf, s, &h[i]) == 0)
				sp->known |= 1ull << s;
			continue;
		}
		lost[nl++] = h[i];
	}
	if (nl > 0)
		refill_server(rf, s, lost, nl,
			      r == 1 ? "restarted: new pid or uptime in stats"
				     : "sentinel missing: flushed or lost");
}

static void *refill_main(void *arg)
{
	struct k2mc_refill *rf = arg;

	pthread_setname_np(pthread_self(), "k2mc-refill");
	rcu_register_thread();
	while (!stopping(rf)) {
		first_looks(rf);
		for (int s = 0; s < rf->cfg->nservers && !stopping(rf); s++)
			check_server(rf, s);
		/* new partitions are looked at within POLL_MS (first_look) */
		for (int t = 0; t < CHECK_MS / POLL_MS && !stopping(rf); t++) {
			first_looks(rf);
			nap_ms(POLL_MS);
		}
	}
	rcu_unregister_thread();
	return NULL;
}

/* ---- lifecycle ------------------------------------------------------------*/

rd_kafka_conf_t *k2mc_refill_conf(const struct k2mc_config *cfg, char *err, size_t errlen)
{
	/* then every -X, as the live consumer has them */
	const char *const own[] = { "bootstrap.servers", cfg->brokers, "group.id", cfg->group,
				    "client.id", "k2mc-refill", "enable.auto.commit", "false",
				    "enable.auto.offset.store", "false", "enable.partition.eof",
				    "true",
				    /* a pass ends at the end offset: no need to wait for
				     * fuller fetches */
				    "fetch.wait.max.ms", "20", NULL };

	return k2mc_config_rdkafka(cfg, "refill", own, err, errlen);
}

struct k2mc_refill *k2mc_refill_new(const struct k2mc_config *cfg, k2mc_table_ref *table,
				    const struct k2mc_mapping *map,
				    struct k2mc_refill_filter *filter, struct k2mc_fence *fence,
				    char *err, size_t errlen)
{
	struct k2mc_refill *rf = calloc(1, sizeof(*rf));
	rd_kafka_conf_t *conf = NULL;
	struct transport_tls tls;
	char e[512];

	if (rf == NULL)
		goto nomem;
	rf->cfg = cfg;
	rf->map = map;
	rf->filter = filter;
	k2mc_policy_init(&rf->policy, cfg);
	rf->table = table;
	rf->fence = fence;
	pthread_mutex_init(&rf->lock, NULL);
	rf->lag_server = -1;
	rf->lag = calloc(MAX_HELD, sizeof(*rf->lag));
	rf->arena = k2mc_arena_new();
	rf->rbuf = malloc(REPLY_MAX);
	if (rf->arena == NULL || rf->lag == NULL || rf->rbuf == NULL)
		goto nomem;
	rf->place = k2mc_placement_new(cfg, err, errlen);
	if (rf->place == NULL)
		goto fail;
	/* the live path's TLS settings (their strings are cfg's); the
	 * transport builds its OpenSSL context here, so a bad file fails now */
	mcconn_tls_from_config(cfg, &tls);
	for (int s = 0; s < cfg->nservers; s++) {
		const struct k2mc_server *sv = &cfg->servers[s];
		struct transport_addr a = { .host = sv->host, .port = sv->port,
					    .is_unix = sv->is_unix };

		rf->srv[s].wt = transport_new(&a, &tls, err, errlen);
		if (rf->srv[s].wt == NULL)
			goto fail;
		/* the stop takes the thread out of an exchange with a server
		 * that does not answer (2-5 s otherwise) */
		transport_set_cancel(rf->srv[s].wt, &rf->stop);
	}
	conf = k2mc_refill_conf(cfg, err, errlen);
	if (conf == NULL)
		goto fail;
	rf->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
	if (rf->rk == NULL) {
		snprintf(err, errlen, "refill: %s", e);
		goto fail;
	}
	conf = NULL;
	return rf;
nomem:
	snprintf(err, errlen, "refill: out of memory");
fail:
	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	k2mc_refill_free(rf);
	return NULL;
}

int k2mc_refill_start(struct k2mc_refill *rf)
{
	int rc = pthread_create(&rf->thread, NULL, refill_main, rf);

	if (rc != 0)
		return -rc;
	rf->started = 1;
	return 0;
}

void k2mc_refill_request_stop(struct k2mc_refill *rf)
{
	if (rf != NULL)
		atomic_store_explicit(&rf->stop, 1, memory_order_release);
}

void k2mc_refill_stop(struct k2mc_refill *rf)
{
	if (rf == NULL || !rf->started)
		return;
	atomic_store_explicit(&rf->stop, 1, memory_order_release);
	pthread_join(rf->thread, NULL);
	rf->started = 0;
	atomic_store_explicit(&rf->filter->mask, 0, memory_order_seq_cst);
}

void k2mc_refill_free(struct k2mc_refill *rf)
{
	if (rf == NULL)
		return;
	k2mc_refill_stop(rf);
	if (rf->rk != NULL) {
		rd_kafka_consumer_close(rf->rk);
		rd_kafka_destroy(rf->rk);
	}
	for (int s = 0; s < K2MC_MAX_SERVERS; s++)
		transport_free(rf->srv[s].wt);
	k2mc_placement_free(rf->place);
	k2mc_arena_free(rf->arena);
	free(rf->hk);
	free(rf->ho);
	free(rf->seen);
	free(rf->lag);
	mccodec_free(&rf->adds);
	mccodec_free(&rf->dels);
	mccodec_free(&rf->one);
	free(rf->rbuf);
	pthread_mutex_destroy(&rf->lock);
	free(rf);
}

uint64_t k2mc_refill_records(const struct k2mc_refill *rf)
{
	return rf ? atomic_load_explicit(&((struct k2mc_refill *)rf)->records, memory_order_relaxed)
		  : 0;
}

uint64_t k2mc_refill_losses(const struct k2mc_refill *rf)
{
	return rf ? atomic_load_explicit(&((struct k2mc_refill *)rf)->losses, memory_order_relaxed)
		  : 0;
}

int k2mc_refill_active(const struct k2mc_refill *rf, int s)
{
	return rf ? atomic_load_explicit(&((struct k2mc_refill *)rf)->active[s],
					 memory_order_relaxed)
		  : 0;
}

const char *k2mc_refill_state_name(enum k2mc_refill_state st)
{
	static const char *const names[] = { "idle", "detecting", "refilling", "done" };

	return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "unknown";
}

void k2mc_refill_view(const struct k2mc_refill *crf, int s, struct k2mc_refill_view *v)
{
	/* the lock is the view's only write */
	struct k2mc_refill *rf = (struct k2mc_refill *)crf;
	int64_t until;

	memset(v, 0, sizeof(*v));
	if (rf == NULL || s < 0 || s >= K2MC_MAX_SERVERS)
		return;
	pthread_mutex_lock(&rf->lock);
	v->state = rf->sv[s].state;
	v->ends = rf->sv[s].ends;
	v->records = atomic_load_explicit(&rf->srv_records[s], memory_order_relaxed);
	for (size_t i = 0; rf->lag_server == s && i < rf->nlag; i++)
		v->lag += rf->lag[i].records;
	until = v->state == K2MC_REFILL_DONE ? rf->sv[s].t1_ms : k2mc_now_ms();
	if (v->state != K2MC_REFILL_IDLE && until > rf->sv[s].t0_ms)
		v->rate = (double)v->records * 1000.0 / (double)(until - rf->sv[s].t0_ms);
	pthread_mutex_unlock(&rf->lock);
}

size_t k2mc_refill_lags(const struct k2mc_refill *crf, struct k2mc_refill_lag *rows, size_t max)
{
	struct k2mc_refill *rf = (struct k2mc_refill *)crf;
	size_t n;

	if (rf == NULL)
		return 0;
	pthread_mutex_lock(&rf->lock);
	n = rf->nlag;
	memcpy(rows, rf->lag, (n < max ? n : max) * sizeof(*rows));
	pthread_mutex_unlock(&rf->lock);
	return n;
}
