/* Counters: each is written by exactly one thread (its owner) and read by the
 * main thread for stats lines and the exit summary. Owners add with a relaxed
 * load+store (no locked instruction on the hot path); readers load relaxed:
 * a stats line may be a few records stale, never torn.
 * Snapshots: the main thread's view of counters and partitions at one moment,
 * and the ways it is shown (stats line, JSON line, progress line, summary
 * table). Prometheus text is metrics.c's business. */
#ifndef K2MC_STATS_H
#define K2MC_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "workers/mapping.h"

typedef _Atomic uint64_t k2mc_counter;

/* Owner thread only. */
static inline void k2mc_count(k2mc_counter *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t k2mc_read(k2mc_counter *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* End-to-end latency, record timestamp -> Memcached acknowledgement, in
 * milliseconds (Kafka timestamps have ms resolution); the last bucket holds
 * everything from K2MC_LAT_MAX_MS up. */
#define K2MC_LAT_MAX_MS 10000

/* What went wrong with a Memcached server, per server and kind
 * (k2mc_memcached_errors_total{server,kind}). */
enum k2mc_mc_error {
	K2MC_MC_ERR_REFUSED = 0, /* connect refused: nothing listening, no such unix
				  * socket, memcached at its connection limit */
	K2MC_MC_ERR_TIMEOUT,     /* connect or handshake unanswered in time, or a batch
				  * unanswered for 5 s (once per batch) */
	K2MC_MC_ERR_CONNECTION,  /* any other failed connect (TLS, a reset), or a
				  * connection that broke during an exchange */
	K2MC_MC_ERR_REPLY,       /* an exchange answered with error replies
				  * (SERVER_ERROR, CLIENT_ERROR, ERROR): one per exchange */
	K2MC_MC_NERRS
};
/* "refused", "timeout", "connection", "error_reply" */
const char *k2mc_mc_error_name(enum k2mc_mc_error e);

/* ---- the counter table ---------------------------------------------------------
 * Every number that the stats line, --stats-json and /metrics all show is a
 * row here, so that the three cannot disagree: the stats line and the JSON
 * object name it by its key, /metrics by its family (whose samples, when it
 * has labels, sum to the same number). tests/test_metrics.c checks every row
 * in all three from a real run.
 *
 * W(field, key, group, metric, help): a counter each writer keeps. It becomes
 *   a field of struct k2mc_writer_stats (written by that writer with
 *   k2mc_count) and of struct k2mc_totals (summed by the reader). Adding a
 *   counter is one W line and its k2mc_count where it happens.
 * V(key, group, metric, type, by, value, help): a number the snapshot has
 *   (value: an expression of `s`, a const struct k2mc_snapshot *); `by` says
 *   which labels its /metrics family has (enum k2mc_stat_by).
 * group: the stats line's " | " sections, in order (1 records, 2 buffers and
 * lag, 3 memcached, 4 the rest); within one, rows keep table order. */
// clang-format off
#define K2MC_STATS_TABLE(W, V)                                                                     \
	V(consumed, 1, "k2mc_records_consumed_total", K2MC_COUNTER, K2MC_BY_PARTITION, s->consumed,  \
	  "Records consumed from Kafka, per partition, over every assignment in this run.")         \
	W(written, "written", 1, "k2mc_records_written_total",                                      \
	  "Records stored in Memcached (set acknowledged).")                                        \
	W(deleted, "deleted", 1, "k2mc_records_deleted_total",                                      \
	  "Deletes acknowledged (or the key was absent): tombstones, and records whose expiry had " \
	  "passed (k2mc_records_expired_total).")                                                   \
	V(skipped, 1, "k2mc_records_invalid_total", K2MC_COUNTER, K2MC_BY_REASON, s->t.skipped,      \
	  "Records Memcached cannot take, per reason (handled by --on-invalid).")                   \
	W(invalidated, "invalidated", 1, "k2mc_records_invalidated_total",                          \
	  "Keys deleted because their newest record was skipped (a value too large, a bad TTL or "  \
	  "flags header, a missing field, not JSON): no older value stays. Also counted in "        \
	  "k2mc_records_invalid_total.")                                                            \
	W(expired, "expired", 1, "k2mc_records_expired_total",                                      \
	  "Records whose expiry had passed (--ttl-from-timestamp, or a TTL that is a unix time "   \
	  "past): not written, their key deleted instead. Also counted in "                        \
	  "k2mc_records_deleted_total.")                                                            \
	W(ignored, "ignored", 1, "k2mc_records_ignored_total",                                      \
	  "Tombstones acknowledged without a write (--on-tombstone ignore).")                       \
	W(coalesced, "coalesced", 1, "k2mc_records_coalesced_total",                                \
	  "Records not sent because a later record of the same batch wrote the same Memcached key " \
	  "(the last write wins anyway): acknowledged with the write that replaced them.")          \
	V(lost_to_retention, 1, "k2mc_records_lost_to_retention_total", K2MC_COUNTER,                \
	  K2MC_BY_PARTITION_LOST, s->lost,                                                          \
	  "Records deleted from the log (retention) before k2mc read them, per partition: the "     \
	  "committed offset, or the next one to read, had left the log, and k2mc resumed at the "   \
	  "oldest surviving record. Never written to Memcached.")                                   \
	V(partitions, 2, "k2mc_partitions_assigned", K2MC_GAUGE, K2MC_BY_NONE, s->assigned,          \
	  "Partitions assigned to this instance.")                                                  \
	V(buffer_bytes, 2, "k2mc_buffer_bytes", K2MC_GAUGE, K2MC_BY_NONE, s->buffer_bytes,           \
	  "Record bytes held in rings and batches (key + value + librdkafka's per-record "          \
	  "overhead), plus byte credit consumers took and have not spent.")                         \
	V(lag, 2, "k2mc_consumer_lag", K2MC_GAUGE, K2MC_BY_PARTITION_LAG, s->lag,                     \
	  "Records between the log end and the acknowledged watermark, per assigned partition.")    \
	V(memcached_errors, 3, "k2mc_memcached_errors_total", K2MC_COUNTER, K2MC_BY_SERVER_KIND,     \
	  s->t.mc_errors,                                                                           \
	  "Memcached failures per server and kind: refused (connect refused), timeout (connect or " \
	  "handshake unanswered, or a batch unanswered for 5 s), connection (other connect "        \
	  "failures, a connection broken mid-exchange), error_reply (an exchange answered with "    \
	  "error replies).")                                                                        \
	W(retries, "retries", 3, "k2mc_memcached_retries_total",                                    \
	  "Batches resent after a Memcached failure.")                                              \
	W(batches, "batches", 3, "k2mc_memcached_batches_total",                                    \
	  "Pipelined Memcached exchanges completed (every reply read).")                            \
	W(bytes, "value_bytes", 3, "k2mc_written_bytes_total", "Value bytes stored in Memcached.")  \
	W(fence_waits, "fence_waits", 4, "k2mc_fence_waits_total",                                  \
	  "Batches that waited for proof of group membership before writing.")                      \
	V(takeover_waits, 4, "k2mc_takeover_waits_total", K2MC_COUNTER, K2MC_BY_NONE,               \
	  s->takeover_waits,                                                                        \
	  "Assigned partitions not written at first because their previous owner did not release " \
	  "them cleanly and may still hold its write lease (the takeover wait).")                  \
	W(alloc_failures, "alloc_failures", 4, "k2mc_writer_alloc_failures_total",                  \
	  "Batches whose commands could not be allocated: rebuilt and retried, nothing "            \
	  "acknowledged.")                                                                          \
	V(drains_evicted, 4, "k2mc_drains_evicted_total", K2MC_COUNTER, K2MC_BY_NONE,                \
	  s->drains_evicted,                                                                        \
	  "Revocation drains ended at once because a commit showed that the group no longer "       \
	  "counts this member (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID): their records were left, "   \
	  "uncommitted, to the partitions' new owner.")
// clang-format on

/* Which labels a V row's /metrics family has; W rows have none. */
enum k2mc_stat_by {
	K2MC_BY_NONE = 0,
	K2MC_BY_PARTITION,     /* {topic,partition}: every partition of this run, its
				* consumed count (struct k2mc_part_snap; a new
				* per-partition row needs its own case in metrics.c) */
	K2MC_BY_PARTITION_LAG, /* {topic,partition}: assigned partitions whose lag is known */
	K2MC_BY_PARTITION_LOST, /* {topic,partition}: every partition of this run, its
				 * records lost to retention */
	K2MC_BY_REASON,        /* {reason}: enum k2mc_map_reason */
	K2MC_BY_SERVER_KIND,   /* {server,kind}: -m servers x enum k2mc_mc_error */
};
enum k2mc_stat_type { K2MC_COUNTER = 0, K2MC_GAUGE };

struct k2mc_stat_def {
	const char *key;    /* in JSON, and in the stats line but for k2mc_stat_line_label's */
	const char *metric; /* the /metrics family */
	enum k2mc_stat_type type;
	enum k2mc_stat_by by;
	int group;
	const char *help;
};
extern const struct k2mc_stat_def k2mc_stat_defs[];
extern const size_t k2mc_nstat_defs;
struct k2mc_snapshot;
/* Row i's number in snapshot s. */
uint64_t k2mc_stat_value(const struct k2mc_snapshot *s, size_t i);
/* The word that precedes row i's number in the stats line. */
const char *k2mc_stat_line_label(size_t i);

#define K2MC_STATS_W_FIELD(field, ...) k2mc_counter field;
#define K2MC_STATS_T_FIELD(field, ...) uint64_t field;
#define K2MC_STATS_IGNORE(...)

/* One per writer thread, written by that writer. */
struct k2mc_writer_stats {
	/* records Memcached cannot take, per reason */
	_Alignas(64) k2mc_counter skipped[K2MC_MAP_NREASONS];
	K2MC_STATS_TABLE(K2MC_STATS_W_FIELD, K2MC_STATS_IGNORE)
	/* per -m server (cfg->servers order) and kind: k2mc_count_mc_error */
	k2mc_counter mc_errors[K2MC_MAX_SERVERS][K2MC_MC_NERRS];
	k2mc_counter latency_ms[K2MC_LAT_MAX_MS + 1];
};

/* Owner thread only: one failure of kind e with server s. */
static inline void k2mc_count_mc_error(struct k2mc_writer_stats *ws, int s, enum k2mc_mc_error e)
{
	if (s >= 0 && s < K2MC_MAX_SERVERS)
		k2mc_count(&ws->mc_errors[s][e], 1);
}

/* Totals over all writers, computed by the reader. */
struct k2mc_totals {
	K2MC_STATS_TABLE(K2MC_STATS_T_FIELD, K2MC_STATS_IGNORE)
	uint64_t skipped; /* over every reason */
	uint64_t skipped_by[K2MC_MAP_NREASONS];
	uint64_t mc_errors; /* over every server and kind */
	uint64_t mc_errors_by[K2MC_MAX_SERVERS][K2MC_MC_NERRS];
};

void k2mc_stats_sum(struct k2mc_writer_stats *ws, int n, struct k2mc_totals *t);

/* Latency quantile q (0..1) over all writers in ms, or -1 with no samples. */
int64_t k2mc_stats_latency(struct k2mc_writer_stats *ws, int n, double q);

/* ---- snapshots (main thread) ---------------------------------------------- */

struct k2mc_budget;
struct k2mc_config;
struct k2mc_group;
struct k2mc_writers;

/* Upper bounds (ms, inclusive, on whole-millisecond latencies) of the
 * latency histogram's buckets; the last, +Inf, is implicit. */
#define K2MC_LAT_NBOUNDS 12
extern const int k2mc_lat_bounds_ms[K2MC_LAT_NBOUNDS];

struct k2mc_part_snap {
	const char *topic;   /* valid until the group's next poll or release */
	int32_t partition;
	int assigned;        /* 1: ours now; 0: released earlier in this run */
	uint64_t consumed;   /* over every assignment in this run */
	uint64_t lost;       /* lost to retention, over every assignment in this run */
	int64_t committed;   /* offset last handed to a commit, -1 = none */
	int64_t watermark;   /* every record below it acknowledged; -1 = unknown */
	int64_t end;         /* high watermark (log end) as librdkafka last saw it, -1 = unknown */
	int64_t lag;         /* end - watermark, -1 = unknown */
	int64_t todo;        /* records left to reach end: lag, or end - log start before
			      * the first acknowledgement; -1 = unknown */
	uint64_t ring_fill;  /* records in its rings */
};

struct k2mc_snapshot {
	const struct k2mc_config *cfg;
	int64_t at_ms;         /* k2mc_now_ms() when taken */
	int64_t wall_ms;       /* CLOCK_REALTIME, ms */
	struct k2mc_totals t;  /* writer counters summed */
	uint64_t consumed;
	uint64_t lost;         /* lost to retention, over every partition */
	uint64_t done;         /* acknowledged: written + deleted + skipped + ignored +
				* coalesced */
	size_t assigned;       /* partitions assigned now */
	uint64_t takeover_waits; /* k2mc_group_takeover_waits */
	uint64_t ring_fill, ring_slots;
	/* --max-buffer-bytes: the caller sets budget before the first take
	 * (NULL: no budget, both counts 0); take reads its bytes in use
	 * (records held plus unspent consumer credit) and its limit */
	struct k2mc_budget *budget;
	uint64_t buffer_bytes, buffer_limit;
	int64_t lag;           /* over assigned partitions whose lag is known */
	int64_t todo;          /* over assigned partitions, -1 if any is unknown */
	int nwriters;
	double *writer_fill;   /* [nwriters]: records in the writer's rings / their slots */
	int nservers;
	int *server_ok;        /* [nservers], k2mc_writers_server_ok */
	int *server_state;     /* [nservers], k2mc_writers_server_state (enum k2mc_server_state) */
	int fence_held;        /* k2mc_writers_fence_held: 1 while writers may send */
	uint64_t drains_evicted; /* k2mc_group_drains_evicted */
	/* --refill: the caller sets refill before the first take (NULL: off);
	 * take reads its counts and which servers are being refilled */
	struct k2mc_refill *refill;
	uint64_t refill_records, refill_losses;
	uint64_t refill_active_mask; /* bit s: server s (cfg->servers order) is refilled now */
	struct k2mc_refill_view *refill_view; /* [nservers] with refill, else NULL (refill.h) */
	struct k2mc_refill_lag *refill_lag;   /* [nrefill_lag]: partitions of the refill
					       * running or last run (refill.h) */
	size_t nrefill_lag;
	uint64_t lat_le[K2MC_LAT_NBOUNDS]; /* cumulative: latencies <= bound */
	uint64_t lat_count;
	double lat_sum_s;      /* whole ms; the >= 10 s bucket counts as 10 s */
	uint64_t *lat_ms;      /* scratch: [K2MC_LAT_MAX_MS + 1] summed over writers */
	int64_t p50, p99, p999; /* ms, -1 without samples */
	size_t nparts, parts_cap;
	struct k2mc_part_snap *parts; /* assigned first, then released, in table order */
};

/* Takes a snapshot; s must be zeroed before the first call and can be
 * reused (its arrays are kept). 0 or -ENOMEM. Main thread only: it reads
 * the partition table without the RCU read lock because the main thread is
 * the table's only publisher. */
int k2mc_snapshot_take(struct k2mc_snapshot *s, struct k2mc_group *g, struct k2mc_writers *ws,
		       const struct k2mc_config *cfg);
void k2mc_snapshot_free(struct k2mc_snapshot *s);

/* What rates are measured from: a snapshot's clock and totals. */
struct k2mc_mark {
	int64_t at_ms;
	uint64_t consumed, done;
};
void k2mc_snapshot_mark(const struct k2mc_snapshot *s, struct k2mc_mark *m);
/* Records/s in (consumed) and out (acknowledged) since prev; 0 if no time passed. */
void k2mc_snapshot_rates(const struct k2mc_mark *prev, const struct k2mc_snapshot *cur,
			 double *in, double *out);

/* --refill: server i's state line (without the log prefix) into buf:
 * "refill HOST:PORT refilling | rewritten N lag N | R/s". 0, or -1 when
 * there is nothing to say (no --refill, or no loss of it in this run). */
int k2mc_stats_refill_line(char *buf, size_t len, const struct k2mc_snapshot *cur, int i);

/* The stats line (without the log prefix) into buf. */
void k2mc_stats_line(char *buf, size_t len, const struct k2mc_mark *prev,
		     const struct k2mc_snapshot *cur);
/* One JSON object and a newline: the stats line's numbers, latency and the
 * partitions. final marks the one written at exit. */
void k2mc_stats_json(FILE *out, const struct k2mc_mark *prev,
		     const struct k2mc_snapshot *cur, int final);
/* -e on a terminal: "progress 61.7% | 1234567 of ~2000000 records | ..."
 * rate: smoothed records/s out. */
void k2mc_stats_progress(char *buf, size_t len, const struct k2mc_snapshot *cur, double rate);
/* The per-partition table printed after the summary line. */
void k2mc_stats_table(FILE *out, const struct k2mc_snapshot *s);
/* (--log-format json: one log line per partition instead, "per partition: TOPIC [P]
 * consumed N committed M", with the topic and partition fields.) */

#endif
