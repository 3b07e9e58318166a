/* The writer's exchange: from a built batch to every reply, and the
 * membership lease before it (writer_int.h). Sends, reads, retries with
 * backoff, rebuilds the batch after an ejection (--mc-eject) or a
 * reconnect that changed the dialect or the value limit, holds while the
 * lease does not; reports servers up, down, stalled or full. Not batch
 * building or acknowledgement (writer.c), not the protocol (mcconn.c). */
#include <errno.h>
#include <libmemcached/memcached.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "core/log.h"
#include "workers/writer_int.h"

#define EXCHANGE_SLICE_MS 1000
/* A server that has not answered for this long is reported once. */
#define STALL_REPORT_MS 5000
#define CONNECT_TIMEOUT_MS 2000
/* How often a writer holding records for lack of a lease looks again (the
 * lease is renewed by commits, which ring no bell). */
#define FENCE_PARK_MS 50
/* --mc-eject, with libmemcached's meaning: a server is ejected after this
 * many consecutive failed attempts (connect refused or timed out, connection
 * broken), and put back into the hashing after MEMCACHED_BEHAVIOR_RETRY_TIMEOUT
 * seconds (libmemcached's default, MEMCACHED_SERVER_FAILURE_RETRY_TIMEOUT)
 * to be tried again. Two, not one: a restarted server costs one broken
 * connection and answers the reconnect. */
#define EJECT_FAILURE_LIMIT 2
#define EJECT_RETRY_S MEMCACHED_SERVER_FAILURE_RETRY_TIMEOUT
/* A server at its connection limit (memcached -c) refused a connection:
 * until this long after the last such refusal, connection slots count as
 * short, and a writer keeps a connection open only while its share of the
 * batch on it is not complete. Holding idle connections while waiting for another server's slot
 * is how every writer ended up waiting for the others (each held one
 * server's slots and wanted the other's): a stall with nothing lost and no
 * end. Said at most once per SLOTS_REPORT_MS while it lasts. */
#define SLOTS_SHORT_MS 5000
#define SLOTS_REPORT_MS 10000


/* why: the connection's error (DOWN), the error reply (DOWN, OOM), or the
 * last error reply of a batch that never completes (STALLED; "" if none). */
static void report_server(struct k2mc_writers *ws, int s, enum k2mc_server_state st,
			  const char *name, const char *why)
{
	int old = atomic_exchange_explicit(&ws->server_state[s], st, memory_order_relaxed);
	/* the log's server field: as /metrics labels it */
	char srv[K2MC_SERVER_LABEL_MAX];

	if (old == (int)st)
		return;
	k2mc_server_label(&ws->cfg->servers[s], srv, sizeof(srv));
	switch (st) {
	case K2MC_SERVER_UP:
		if (old != K2MC_SERVER_UNKNOWN)
			k2mc_log_server(K2MC_LOG_INFO, srv, NULL, "memcached %s: back, writing again",
					name);
		break;
	case K2MC_SERVER_DOWN:
		if (writer_ejecting(ws))
			k2mc_log_server(K2MC_LOG_WARN, srv, why,
					"memcached %s: down (%s); --mc-eject: after %d failed "
					"attempts its keys go to the other servers, and it is tried "
					"again every %d s",
					name, why, EJECT_FAILURE_LIMIT, EJECT_RETRY_S);
		else
			k2mc_log_server(K2MC_LOG_WARN, srv, why,
					"memcached %s: down (%s); its records wait and are retried",
					name, why);
		break;
	case K2MC_SERVER_OOM:
		k2mc_log_server(K2MC_LOG_WARN, srv, why, "memcached %s: out of memory (%s); retrying",
				name, why);
		break;
	case K2MC_SERVER_STALLED:
		if (why[0] != '\0')
			k2mc_log_server(K2MC_LOG_WARN, srv, why,
					"memcached %s: answers errors but never completes the batch "
					"(last: '%s'); waiting on the same connection",
					name, why);
		else
			k2mc_log_server(K2MC_LOG_WARN, srv, "no answer",
					"memcached %s: no answer for %d ms; waiting on the same "
					"connection",
					name, STALL_REPORT_MS);
		break;
	default:
		break;
	}
}

/* --mc-eject: server s failed EJECT_FAILURE_LIMIT times in a row. Until
 * its retry time its keys go where the readers' client sends them while it
 * is down (placement.h: libmemcached's continuum rebuilt without it,
 * pymemcache's hasher without it, Dalli's and spymemcached's failover
 * rehashing); k2mc_placement_restore puts it back then. The last server is
 * not ejected: with every server down, records wait. Returns 1 if placement
 * changed. */
static int eject(struct writer *w, int s)
{
	return k2mc_placement_eject(w->place, s, time(NULL) + EJECT_RETRY_S);
}

int writer_batch_abandoned(struct writer *w, size_t nsegs_scan)
{
	if (atomic_load_explicit(&w->pool->abort, memory_order_acquire))
		return 1;
	for (size_t k = 0; k < nsegs_scan; k++) {
		if (w->segs[k].p != NULL && k2mc_part_abandoned(w->segs[k].p))
			return 1;
	}
	return 0;
}

/* Sleeps *ms (doubling it for next time), in slices that end it early
 * once the writers are aborted. */
void writer_backoff(struct writer *w, int *ms)
{
	int64_t end = k2mc_now_ms() + *ms, left;

	while ((left = end - k2mc_now_ms()) > 0 &&
	       !atomic_load_explicit(&w->pool->abort, memory_order_acquire)) {
		if (left > IDLE_PARK_MS)
			left = IDLE_PARK_MS;
		nanosleep(&(struct timespec){ 0, (long)left * 1000000L }, NULL);
	}
	*ms = *ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *ms * 2;
}

/* Sleeps up to ms on the writer's bell (consumers, stop and abort ring it). */
void writer_nap(struct writer *w, int ms)
{
	park_prepare(w->bell);
	park_wait(w->bell, ms);
}

/* A failed attempt on server s; with --mc-eject, returns 1 when s is to be
 * ejected now. */
static int server_failed(struct writer *w, int s)
{
	if (!writer_ejecting(w->pool))
		return 0;
	if (++w->fails[s] < EJECT_FAILURE_LIMIT)
		return 0;
	return eject(w, s);
}

/* ---- the membership lease -------------------------------------------------*/

/* The lease does not hold now and records of this batch wait. Counted once
 * per batch; said once per episode: at once when a lease lapsed, but when
 * none was granted yet in this generation (deadline 0: the start, or a new
 * assignment, whose first commit is on its way) only once the wait has
 * outlasted a whole lease, since waiting for that commit is routine. */
static void fence_hold(struct writer *w, struct fence_wait *fw)
{
	struct k2mc_writers *ws = w->pool;
	int64_t now = k2mc_now_ms(), lease = k2mc_fence_lease_ms(ws->fence);

	if (!fw->holding) {
		fw->holding = 1;
		fw->since = now;
		if (!fw->counted) {
			fw->counted = 1;
			k2mc_count(&w->stats->fence_waits, 1);
		}
	}
	if (atomic_load_explicit(&ws->fence_holding, memory_order_relaxed) ||
	    (k2mc_fence_deadline(ws->fence) == 0 && now - fw->since < lease))
		return;
	if (atomic_exchange_explicit(&ws->fence_holding, 1, memory_order_relaxed) == 0)
		k2mc_warn("membership in the consumer group not proven (no acknowledged commit "
			  "within the lease of %lld ms): holding records, writing nothing until it is",
			  (long long)lease);
}

/* The lease holds (seen by any writer, waiting or not): ends the episode. */
static void fence_resume(struct writer *w, struct fence_wait *fw)
{
	struct k2mc_writers *ws = w->pool;

	fw->holding = 0;
	if (atomic_load_explicit(&ws->fence_holding, memory_order_relaxed) &&
	    atomic_exchange_explicit(&ws->fence_holding, 0, memory_order_relaxed))
		k2mc_info("membership in the consumer group proven again (commit acknowledged): "
			  "writing");
}

/* Before a batch starts: waits while the lease does not hold. 0 once it
 * does, -1 if the batch was given up meanwhile (abort, or its partitions
 * abandoned: main does that when the assignment is lost). */
int writer_await_lease(struct writer *w, size_t nsegs_scan, struct fence_wait *fw)
{
	const struct k2mc_fence *f = w->pool->fence;

	if (f == NULL)
		return 0;
	while (!k2mc_fence_held(f)) {
		fence_hold(w, fw);
		if (writer_batch_abandoned(w, nsegs_scan))
			return -1;
		park_prepare(w->bell);
		if (k2mc_fence_held(f)) {
			park_cancel(w->bell);
			break;
		}
		park_wait(w->bell, FENCE_PARK_MS);
	}
	fence_resume(w, fw);
	return 0;
}

/* ---- the exchange ----------------------------------------------------------*/

/* Replies that settle a command; anything else (SERVER_ERROR, out of
 * memory, CLIENT_ERROR, none) is a server failure and the batch is resent. */
static int reply_final(enum mc_reply r)
{
	return r == MC_STORED || r == MC_DELETED || r == MC_NOT_FOUND || r == MC_TOO_LARGE;
}

/* What a failed mcconn_ensure counts as (k2mc_memcached_errors_total). */
static enum k2mc_mc_error connect_error_kind(int rc)
{
	if (rc == -ECONNREFUSED || rc == -ENOENT || rc == -EUSERS)
		return K2MC_MC_ERR_REFUSED;
	return rc == -ETIMEDOUT ? K2MC_MC_ERR_TIMEOUT : K2MC_MC_ERR_CONNECTION;
}

/* ---- connection slots -------------------------------------------------------*/

static int slots_short(const struct k2mc_writers *ws)
{
	return k2mc_now_ms() <
	       atomic_load_explicit(&((struct k2mc_writers *)ws)->slots_short_until,
				    memory_order_relaxed);
}

/* Server s refused writer w's connection at its connection limit: slots
 * are short from now on, and the line that says so and what to change comes
 * again every SLOTS_REPORT_MS while they are. Not a server down: it is
 * alive, so it is neither reported down nor ejected. */
static void slots_refused(struct writer *w, int s)
{
	struct k2mc_writers *ws = w->pool;
	int64_t now = k2mc_now_ms(),
		next = atomic_load_explicit(&ws->slots_next_report_ms, memory_order_relaxed);
	char srv[K2MC_SERVER_LABEL_MAX];

	atomic_store_explicit(&ws->slots_short_until, now + SLOTS_SHORT_MS, memory_order_relaxed);
	if (now < next || !atomic_compare_exchange_strong_explicit(
				  &ws->slots_next_report_ms, &next, now + SLOTS_REPORT_MS,
				  memory_order_relaxed, memory_order_relaxed))
		return;
	k2mc_server_label(&ws->cfg->servers[s], srv, sizeof(srv));
	k2mc_log_server(K2MC_LOG_WARN, srv, "too many connections",
			"memcached %s refuses connections at its limit (%s): k2mc opens up to "
			"--writers %d connections to each of its %d server(s)%s, more than it "
			"accepts; until they fit, a writer closes a connection as soon as it "
			"owes no reply on it (a reconnect per batch: slower). Raise the server's "
			"connection limit (memcached -c) or lower --writers (said every %d s "
			"while it lasts)",
			mcconn_name(w->conns[s]), mcconn_error(w->conns[s]), ws->cfg->writers,
			ws->cfg->nservers, ws->cfg->refill ? ", plus one for --refill" : "",
			SLOTS_REPORT_MS / 1000);
}

/* While slots are short: gives back every connection of w whose share of
 * the batch is complete (all of them between batches), so that no writer
 * sits on a slot another one waits for. A writer then holds a slot only
 * while it has commands on it, which the server answers: no wait cycle. */
void writer_slots_give_back(struct writer *w)
{
	if (!slots_short(w->pool))
		return;
	for (int s = 0; s < w->pool->cfg->nservers; s++)
		mcconn_release(w->conns[s]);
}

/* Runs the exchange until every queued command on every server has its
 * reply and none of them asks for a retry. Returns 0, -1 if the batch was
 * given up (abort or abandoned partition), or -ENOMEM if its commands could
 * not be built again: nothing is acknowledged then. */
int writer_exchange(struct writer *w, size_t n, size_t nsegs_scan, struct fence_wait *fw)
{
	struct k2mc_writers *ws = w->pool;
	int ns = ws->cfg->nservers;
	struct mc_conn *busy[K2MC_MAX_SERVERS];
	int busy_idx[K2MC_MAX_SERVERS];
	enum mc_exchange res[K2MC_MAX_SERVERS];
	int64_t waiting_since = k2mc_now_ms();
	int delay = BACKOFF_MIN_MS, want_reroute = 0, first = 1;
	/* servers already counted as timed out in this batch (bit s) */
	uint64_t stalled = 0;

	for (;;) {
		int nb = 0, failed = 0, pending = 0;
		/* re-read each round: commits renew the lease meanwhile */
		int64_t until = k2mc_fence_deadline(ws->fence);
		int fenced = ws->fence != NULL && k2mc_now_ms() >= until;

		for (int s = 0; s < ns; s++) {
			struct mc_conn *c = w->conns[s];

			if (mcconn_done(c))
				continue;
			/* on the first round of a batch, ensure also notices a
			 * connection the server closed while idle, and remakes
			 * it quietly: that is no outage */
			if (first || !mcconn_connected(c)) {
				int rc = mcconn_ensure(c, CONNECT_TIMEOUT_MS);

				if (rc == -EUSERS) {
					k2mc_count_mc_error(w->stats, s, connect_error_kind(rc));
					slots_refused(w, s);
					failed++;
					continue;
				}
				if (rc != 0) {
					k2mc_count_mc_error(w->stats, s, connect_error_kind(rc));
					report_server(ws, s, K2MC_SERVER_DOWN, mcconn_name(c),
						      mcconn_error(c));
					want_reroute |= server_failed(w, s);
					failed++;
					continue;
				}
				if (mcconn_batch_stale(c) ||
				    writer_value_limit(w, s) != w->limit[s]) {
					if (writer_requeue_server(w, n, s) != 0)
						return -ENOMEM;
					if (mcconn_done(c))
						continue;
				}
			}
			busy[nb] = c;
			busy_idx[nb++] = s;
		}
		first = 0;
		if (fenced)
			fence_hold(w, fw);
		else if (ws->fence != NULL)
			fence_resume(w, fw);
		if (nb > 0) {
			int64_t t0 = k2mc_now_ms(), took;

			/* fenced: nothing is sent, replies still owed are read */
			mcconn_exchange(busy, (size_t)nb, fenced ? FENCE_PARK_MS : EXCHANGE_SLICE_MS,
					until, res);
			if (fenced) {
				took = k2mc_now_ms() - t0;
				if (took < FENCE_PARK_MS)
					writer_nap(w, (int)(FENCE_PARK_MS - took));
				/* a fenced wait is not the server's silence */
				waiting_since = k2mc_now_ms();
			}
		}
		for (int b = 0; b < nb; b++) {
			struct mc_conn *c = busy[b];
			int s = busy_idx[b];

			if (res[b] == MC_X_FAILED) {
				k2mc_count_mc_error(w->stats, s, K2MC_MC_ERR_CONNECTION);
				report_server(ws, s, K2MC_SERVER_DOWN, mcconn_name(c), mcconn_error(c));
				want_reroute |= server_failed(w, s);
				failed++;
			} else if (res[b] == MC_X_PENDING) {
				pending++;
				if (!fenced && k2mc_now_ms() - waiting_since >= STALL_REPORT_MS) {
					if (!(stalled & (1ull << s)))
						k2mc_count_mc_error(w->stats, s, K2MC_MC_ERR_TIMEOUT);
					stalled |= 1ull << s;
					report_server(ws, s, K2MC_SERVER_STALLED, mcconn_name(c),
						      mcconn_last_reply_text(c));
				}
			} else {
				int errors = 0, oom = 0;

				for (size_t i = 0; i < mcconn_queued(c); i++) {
					enum mc_reply r = mcconn_reply(c, i);

					if (!reply_final(r)) {
						errors++;
						oom += r == MC_OOM;
					}
				}
				if (errors > 0) {
					/* the server is alive but did not apply
					 * everything: all of it again, in order */
					k2mc_count_mc_error(w->stats, s, K2MC_MC_ERR_REPLY);
					report_server(ws, s,
						      oom == errors ? K2MC_SERVER_OOM : K2MC_SERVER_DOWN,
						      mcconn_name(c), mcconn_last_reply_text(c));
					mcconn_rewind(c);
					failed++;
				} else {
					w->fails[s] = 0;
					report_server(ws, s, K2MC_SERVER_UP, mcconn_name(c), "");
				}
			}
		}
		/* a share that is complete needs its connection no more */
		writer_slots_give_back(w);
		/* Replies are matched to commands by position: the batch may be
		 * rebuilt only when no connection still owes any. */
		if (want_reroute && pending == 0) {
			want_reroute = 0;
			if (writer_queue_all(w, n) != 0)
				return -ENOMEM;
			continue;
		}
		if (failed == 0 && pending == 0)
			return 0;
		if (writer_batch_abandoned(w, nsegs_scan))
			return -1;
		if (failed > 0) {
			k2mc_count(&w->stats->retries, 1);
			writer_backoff(w, &delay);
			waiting_since = k2mc_now_ms();
		}
	}
}
