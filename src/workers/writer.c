/* Writer threads; see writer.h. A batch is: peek records from this writer's
 * rings -> map keys -> queue commands per server -> one pipelined exchange
 * -> every reply read -> acknowledge watermarks -> release ring slots.
 * Invariant: a record is acknowledged only after Memcached answered it (or it
 * was skipped and counted), and a writer never starts a batch before the
 * previous one is fully answered, so each key's writes stay in offset order. */
#include "workers/writer.h"

#include <errno.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu.h>

#include "core/log.h"
#include "workers/keymap.h"
#include "workers/mcconn.h"

#define EXCHANGE_SLICE_MS 1000
/* A server that has not answered for this long is reported once. */
#define STALL_REPORT_MS 5000
#define CONNECT_TIMEOUT_MS 2000
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define IDLE_PARK_MS 100

enum server_state { SERVER_UNKNOWN = 0, SERVER_UP, SERVER_DOWN, SERVER_STALLED };

struct writer {
	int id;
	struct k2mc_writers *pool;
	pthread_t thread;
	memcached_st *memc;           /* distribution only: key -> server index */
	struct mc_conn **conns;       /* [nservers], in libmemcached's server order */
	struct k2mc_writer_stats *stats;
	struct park *bell;

	/* batch scratch, reused */
	struct ring_item *items;
	struct k2mc_part **item_part;
	int32_t *item_server;         /* -1: skipped, no command sent */
	uint32_t *item_cmd;           /* command index within its connection */
	struct seg {
		struct k2mc_part *p;
		size_t n;
	} *segs;                      /* [seg_cap], one per table position */
	size_t seg_cap;
	size_t rr;                    /* round-robin start over partitions */
};

struct k2mc_writers {
	const struct k2mc_config *cfg;
	k2mc_table_ref *table;
	struct k2mc_keymap km;
	int n;
	struct writer *w;
	struct park *bells;
	struct k2mc_writer_stats *stats;
	/* main -> writers: stop when idle / give up on the current batch
	 * (release by main, acquire by writers) */
	_Atomic int stop;
	_Atomic int abort;
	/* any writer: last reported state per server, so a state change is
	 * logged once by whichever writer sees it first (atomic exchange) */
	_Atomic int *server_state;
	/* any writer: first skipped record per reason is logged (exchange) */
	_Atomic int skip_logged[K2MC_KEY_NREASONS + 1];
	/* first writer to hit a fatal record claims it (exchange 0 -> 1), then
	 * writes fatal_msg and publishes it with release on fatal_ready; main
	 * reads with acquire */
	_Atomic int fatal_claimed;
	_Atomic int fatal_ready;
	char fatal_msg[512];
};

static void report_server(struct k2mc_writers *ws, int s, enum server_state st,
			  const char *name, const char *why)
{
	int old = atomic_exchange_explicit(&ws->server_state[s], st, memory_order_relaxed);

	if (old == (int)st)
		return;
	switch (st) {
	case SERVER_UP:
		if (old != SERVER_UNKNOWN)
			k2mc_info("memcached %s: back, writing again", name);
		break;
	case SERVER_DOWN:
		k2mc_warn("memcached %s: down (%s); its records wait and are retried", name, why);
		break;
	case SERVER_STALLED:
		k2mc_warn("memcached %s: no answer for %d ms; waiting on the same connection",
			  name, STALL_REPORT_MS);
		break;
	default:
		break;
	}
}

static void skip_record(struct writer *w, size_t i, enum k2mc_keymap_reason r)
{
	rd_kafka_message_t *m = w->items[i].ptr;

	k2mc_count(&w->stats->skipped[r], 1);
	if (atomic_exchange_explicit(&w->pool->skip_logged[r], 1, memory_order_relaxed) == 0)
		k2mc_warn("%s [%d] @%lld: skipped, %s (key %zu bytes, value %zu bytes); further "
			  "records skipped for this reason are counted in the stats line",
			  rd_kafka_topic_name(m->rkt), m->partition, (long long)m->offset,
			  k2mc_keymap_reason_name(r), m->key_len, m->len);
	w->item_server[i] = -1;
}

/* Peeks up to --batch records from this writer's rings, fairly. Caller
 * holds the RCU read lock, which keeps every part in the table alive. */
static size_t gather(struct writer *w, struct k2mc_part_table *t)
{
	size_t max = (size_t)w->pool->cfg->batch, n = 0;

	if (t == NULL || t->n == 0)
		return 0;
	for (size_t k = 0; k < t->n && n < max; k++) {
		struct k2mc_part *p = t->parts[(w->rr + k) % t->n];
		size_t got;

		if (k2mc_part_abandoned(p))
			continue;
		got = ring_peek(k2mc_part_ring(p, w->id), w->items + n, max - n);
		if (got == 0)
			continue;
		for (size_t i = 0; i < got; i++)
			w->item_part[n + i] = p;
		w->segs[k].p = p;
		w->segs[k].n = got;
		n += got;
	}
	w->rr++;
	return n;
}

/* Queues record i on its server's connection. */
static void queue_one(struct writer *w, size_t i, const char *key, size_t klen)
{
	rd_kafka_message_t *m = w->items[i].ptr;
	struct mc_conn *c = w->conns[w->item_server[i]];

	w->item_cmd[i] = (uint32_t)mcconn_queued(c);
	if (m->payload == NULL)
		mcconn_queue_delete(c, key, klen);
	else
		mcconn_queue_set(c, key, klen, m->payload, m->len, 0, w->pool->cfg->ttl);
}

static void queue_commands(struct writer *w, size_t n)
{
	const struct k2mc_keymap *km = &w->pool->km;
	int nservers = w->pool->cfg->nservers;
	char key[K2MC_MC_KEY_MAX];

	for (size_t i = 0; i < n; i++) {
		rd_kafka_message_t *m = w->items[i].ptr;
		enum k2mc_keymap_op op;
		enum k2mc_keymap_reason r;
		size_t klen;

		r = k2mc_keymap_check(km, m->key, m->key_len, m->payload, m->len, &op);
		if (r != K2MC_KEY_OK) {
			skip_record(w, i, r);
			continue;
		}
		klen = k2mc_keymap_key(km, m->key, m->key_len, key);
		/* ketama hashes the key with MD5: skip it when there is no choice */
		w->item_server[i] =
			nservers > 1 ? (int32_t)memcached_generate_hash(w->memc, key, klen) : 0;
		queue_one(w, i, key, klen);
	}
}

/* The connection to server s came back speaking the other dialect: build
 * its share of the batch again, in the same order. */
static void requeue_server(struct writer *w, size_t n, int s)
{
	const struct k2mc_keymap *km = &w->pool->km;
	char key[K2MC_MC_KEY_MAX];

	mcconn_reset_batch(w->conns[s]);
	for (size_t i = 0; i < n; i++) {
		rd_kafka_message_t *m = w->items[i].ptr;

		if (w->item_server[i] != s)
			continue;
		queue_one(w, i, key, k2mc_keymap_key(km, m->key, m->key_len, key));
	}
}

static int batch_abandoned(struct writer *w, size_t nsegs_scan)
{
	if (atomic_load_explicit(&w->pool->abort, memory_order_acquire))
		return 1;
	for (size_t k = 0; k < nsegs_scan; k++) {
		if (w->segs[k].p != NULL && k2mc_part_abandoned(w->segs[k].p))
			return 1;
	}
	return 0;
}

static void backoff(int *ms)
{
	struct timespec ts = { *ms / 1000, (long)(*ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
	*ms = *ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *ms * 2;
}

/* Runs the exchange until every queued command on every server has its
 * reply and none of them asks for a retry. Returns 0, or -1 if the batch was
 * given up (abort or abandoned partition): nothing is acknowledged then. */
static int exchange(struct writer *w, size_t n, size_t nsegs_scan)
{
	int ns = w->pool->cfg->nservers;
	struct mc_conn *busy[K2MC_MAX_SERVERS];
	int busy_idx[K2MC_MAX_SERVERS];
	enum mc_exchange res[K2MC_MAX_SERVERS];
	int64_t waiting_since = k2mc_now_ms();
	int delay = BACKOFF_MIN_MS;

	for (;;) {
		int nb = 0, failed = 0, pending = 0;

		for (int s = 0; s < ns; s++) {
			struct mc_conn *c = w->conns[s];

			if (mcconn_done(c))
				continue;
			if (!mcconn_connected(c)) {
				if (mcconn_ensure(c, CONNECT_TIMEOUT_MS) != 0) {
					report_server(w->pool, s, SERVER_DOWN, mcconn_name(c),
						      mcconn_error(c));
					failed++;
					continue;
				}
				if (mcconn_batch_stale(c))
					requeue_server(w, n, s);
			}
			busy[nb] = c;
			busy_idx[nb++] = s;
		}
		if (nb > 0)
			mcconn_exchange(busy, (size_t)nb, EXCHANGE_SLICE_MS, res);
		for (int b = 0; b < nb; b++) {
			struct mc_conn *c = busy[b];
			int s = busy_idx[b];

			if (res[b] == MC_X_FAILED) {
				k2mc_count(&w->stats->mc_errors, 1);
				report_server(w->pool, s, SERVER_DOWN, mcconn_name(c), mcconn_error(c));
				failed++;
			} else if (res[b] == MC_X_PENDING) {
				pending++;
				if (k2mc_now_ms() - waiting_since >= STALL_REPORT_MS)
					report_server(w->pool, s, SERVER_STALLED, mcconn_name(c), "");
			} else {
				int retry = 0;

				for (size_t i = 0; i < mcconn_queued(c); i++) {
					if (mcconn_reply(c, i) == MC_SERVER_ERROR)
						retry = 1;
				}
				if (retry) {
					/* e.g. "out of memory storing object": the
					 * server is alive but did not apply it */
					k2mc_count(&w->stats->mc_errors, 1);
					report_server(w->pool, s, SERVER_DOWN, mcconn_name(c),
						      mcconn_last_reply_text(c));
					mcconn_rewind(c);
					failed++;
				} else {
					report_server(w->pool, s, SERVER_UP, mcconn_name(c), "");
				}
			}
		}
		if (failed == 0 && pending == 0)
			return 0;
		if (batch_abandoned(w, nsegs_scan))
			return -1;
		if (failed > 0) {
			k2mc_count(&w->stats->retries, 1);
			backoff(&delay);
		}
	}
}

/* All replies are in: count, acknowledge, free the records, free the slots. */
static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void count_latency(struct writer *w, const rd_kafka_message_t *m, int64_t now)
{
	int64_t ts = rd_kafka_message_timestamp(m, NULL), d;

	if (ts < 0)
		return;
	d = now - ts;
	if (d < 0)
		d = 0; /* producer clock ahead of ours */
	k2mc_count(&w->stats->latency_ms[d < K2MC_LAT_MAX_MS ? d : K2MC_LAT_MAX_MS], 1);
}

static void complete(struct writer *w, size_t n, size_t nsegs_scan)
{
	/* one clock read per batch: every record of it was acknowledged now */
	int64_t now = wall_ms();

	for (size_t i = 0; i < n; i++) {
		rd_kafka_message_t *m = w->items[i].ptr;

		count_latency(w, m, now);

		if (w->item_server[i] >= 0) {
			struct mc_conn *c = w->conns[w->item_server[i]];

			switch (mcconn_reply(c, w->item_cmd[i])) {
			case MC_STORED:
				k2mc_count(&w->stats->written, 1);
				k2mc_count(&w->stats->bytes, m->len);
				break;
			case MC_DELETED:
			case MC_NOT_FOUND:
				k2mc_count(&w->stats->deleted, 1);
				break;
			case MC_TOO_LARGE:
				skip_record(w, i, K2MC_VALUE_TOO_LARGE);
				break;
			default:
				/* CLIENT_ERROR: the server refused a command
				 * keymap accepted; counted, not retried forever */
				k2mc_count(&w->stats->mc_errors, 1);
				skip_record(w, i, K2MC_KEY_BAD_BYTES);
				break;
			}
		}
		k2mc_part_ack(w->item_part[i], w->items[i].tag);
		rd_kafka_message_destroy(m);
	}
	for (size_t k = 0; k < nsegs_scan; k++) {
		if (w->segs[k].p == NULL)
			continue;
		ring_release(k2mc_part_ring(w->segs[k].p, w->id), w->segs[k].n);
		k2mc_part_wake(w->segs[k].p);
	}
	k2mc_count(&w->stats->batches, 1);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct k2mc_writers *ws = w->pool;
	int parked = 0;
	char name[16];

	snprintf(name, sizeof(name), "k2mc-w/%d", w->id);
	pthread_setname_np(pthread_self(), name);
	rcu_register_thread();
	for (;;) {
		struct k2mc_part_table *t;
		size_t n, nsegs;
		int rc;

		t = k2mc_table_read_lock(ws->table);
		nsegs = t ? t->n : 0;
		if (nsegs > w->seg_cap) {
			struct seg *ns = realloc(w->segs, nsegs * sizeof(*ns));

			if (ns == NULL) {
				/* retried on the next round; nothing was peeked */
				k2mc_table_read_unlock(ws->table);
				park_wait(w->bell, IDLE_PARK_MS);
				continue;
			}
			w->segs = ns;
			w->seg_cap = nsegs;
		}
		for (size_t k = 0; k < nsegs; k++)
			w->segs[k].p = NULL;
		n = gather(w, t);
		if (n == 0) {
			k2mc_table_read_unlock(ws->table);
			if (atomic_load_explicit(&ws->stop, memory_order_acquire))
				break;
			if (!parked) {
				/* announce, then look once more before sleeping */
				park_prepare(w->bell);
				parked = 1;
				continue;
			}
			park_wait(w->bell, IDLE_PARK_MS);
			parked = 0;
			continue;
		}
		if (parked) {
			park_cancel(w->bell);
			parked = 0;
		}
		queue_commands(w, n);
		rc = exchange(w, n, nsegs);
		if (rc == 0)
			complete(w, n, nsegs);
		for (int s = 0; s < ws->cfg->nservers; s++)
			mcconn_reset_batch(w->conns[s]);
		k2mc_table_read_unlock(ws->table);
		if (rc != 0) {
			/* given up: wait for the main thread to drop the
			 * partitions rather than spin on the same records */
			park_wait(w->bell, IDLE_PARK_MS);
		}
	}
	rcu_unregister_thread();
	return NULL;
}

static int writer_init(struct k2mc_writers *ws, struct writer *w, int id)
{
	const struct k2mc_config *cfg = ws->cfg;
	size_t b = (size_t)cfg->batch;

	w->id = id;
	w->pool = ws;
	w->stats = &ws->stats[id];
	w->bell = &ws->bells[id];
	park_init(w->bell);
	w->memc = memcached_create(NULL);
	if (w->memc == NULL)
		return -ENOMEM;
	/* libketama-compatible consistent hashing: other ketama clients
	 * reading the cache find each key on the same server */
	memcached_behavior_set(w->memc, MEMCACHED_BEHAVIOR_KETAMA, 1);
	for (int s = 0; s < cfg->nservers; s++) {
		if (memcached_server_add(w->memc, cfg->servers[s].host,
					 (in_port_t)cfg->servers[s].port) != MEMCACHED_SUCCESS)
			return -EINVAL;
	}
	w->conns = calloc((size_t)cfg->nservers, sizeof(*w->conns));
	if (w->conns == NULL)
		return -ENOMEM;
	for (int s = 0; s < cfg->nservers; s++) {
		const memcached_instance_st *in = memcached_server_instance_by_position(w->memc,
											(uint32_t)s);

		w->conns[s] = mcconn_new(memcached_server_name(in), memcached_server_port(in));
		if (w->conns[s] == NULL)
			return -ENOMEM;
	}
	w->items = calloc(b, sizeof(*w->items));
	w->item_part = calloc(b, sizeof(*w->item_part));
	w->item_server = calloc(b, sizeof(*w->item_server));
	w->item_cmd = calloc(b, sizeof(*w->item_cmd));
	if (w->items == NULL || w->item_part == NULL || w->item_server == NULL ||
	    w->item_cmd == NULL)
		return -ENOMEM;
	return 0;
}

struct k2mc_writers *k2mc_writers_new(const struct k2mc_config *cfg,
				      k2mc_table_ref *table, size_t max_value)
{
	struct k2mc_writers *ws = calloc(1, sizeof(*ws));

	if (ws == NULL)
		return NULL;
	ws->cfg = cfg;
	ws->table = table;
	ws->n = cfg->writers;
	ws->km.prefix = cfg->key_prefix;
	ws->km.prefix_len = cfg->key_prefix_len;
	ws->km.max_value = max_value;
	ws->w = calloc((size_t)ws->n, sizeof(*ws->w));
	ws->bells = aligned_alloc(64, sizeof(*ws->bells) * (size_t)ws->n);
	ws->stats = aligned_alloc(64, sizeof(*ws->stats) * (size_t)ws->n);
	ws->server_state = calloc((size_t)cfg->nservers, sizeof(*ws->server_state));
	if (ws->w == NULL || ws->bells == NULL || ws->stats == NULL || ws->server_state == NULL)
		goto fail;
	memset(ws->stats, 0, sizeof(*ws->stats) * (size_t)ws->n);
	for (int i = 0; i < ws->n; i++) {
		if (writer_init(ws, &ws->w[i], i) != 0)
			goto fail;
	}
	return ws;
fail:
	k2mc_err("cannot set up %d writers (out of memory or bad server list)", cfg->writers);
	k2mc_writers_free(ws);
	return NULL;
}

int k2mc_writers_start(struct k2mc_writers *ws)
{
	for (int i = 0; i < ws->n; i++) {
		int rc = pthread_create(&ws->w[i].thread, NULL, writer_main, &ws->w[i]);

		if (rc != 0) {
			k2mc_err("cannot start writer thread %d: %s", i, strerror(rc));
			ws->n = i;
			return -rc;
		}
	}
	return 0;
}

const char *k2mc_writers_fatal(struct k2mc_writers *ws)
{
	return atomic_load_explicit(&ws->fatal_ready, memory_order_acquire) ? ws->fatal_msg : NULL;
}

struct park *k2mc_writers_bells(struct k2mc_writers *ws)
{
	return ws->bells;
}

struct k2mc_writer_stats *k2mc_writers_stats(struct k2mc_writers *ws)
{
	return ws->stats;
}

void k2mc_writers_abort(struct k2mc_writers *ws)
{
	atomic_store_explicit(&ws->abort, 1, memory_order_release);
}

void k2mc_writers_stop(struct k2mc_writers *ws)
{
	atomic_store_explicit(&ws->stop, 1, memory_order_release);
	for (int i = 0; i < ws->n; i++)
		park_notify(&ws->bells[i]);
	for (int i = 0; i < ws->n; i++)
		pthread_join(ws->w[i].thread, NULL);
}

void k2mc_writers_free(struct k2mc_writers *ws)
{
	if (ws == NULL)
		return;
	for (int i = 0; ws->w != NULL && i < ws->cfg->writers; i++) {
		struct writer *w = &ws->w[i];

		for (int s = 0; w->conns != NULL && s < ws->cfg->nservers; s++)
			mcconn_free(w->conns[s]);
		free(w->conns);
		if (w->memc != NULL)
			memcached_free(w->memc);
		free(w->items);
		free(w->item_part);
		free(w->item_server);
		free(w->item_cmd);
		free(w->segs);
	}
	free(ws->w);
	free(ws->bells);
	free(ws->stats);
	free(ws->server_state);
	free(ws);
}

size_t k2mc_writers_probe_item_size(const struct k2mc_config *cfg, size_t fallback,
				    int timeout_ms)
{
	size_t best = 0;

	for (int s = 0; s < cfg->nservers; s++) {
		struct mc_conn *c = mcconn_new(cfg->servers[s].host, cfg->servers[s].port);
		size_t v;

		if (c == NULL)
			continue;
		if (mcconn_ensure(c, timeout_ms) != 0)
			k2mc_warn("memcached %s: unreachable at start (%s); will keep trying",
				  mcconn_name(c), mcconn_error(c));
		else if (mcconn_item_size_max(c, timeout_ms, &v) == 0 && (best == 0 || v < best))
			best = v;
		mcconn_free(c);
	}
	return best ? best : fallback;
}

int k2mc_writers_server_ok(struct k2mc_writers *ws, int s)
{
	int st = atomic_load_explicit(&ws->server_state[s], memory_order_relaxed);

	return st != SERVER_DOWN && st != SERVER_STALLED;
}
