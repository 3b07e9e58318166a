/* Counters: each is written by exactly one thread (its owner) and read by the
 * main thread for stats lines and the exit summary. Owners add with a relaxed
 * load+store (no locked instruction on the hot path); readers load relaxed:
 * a stats line may be a few records stale, never torn. A leaf of the shared
 * model: the writers count here and the snapshot (stats.h) reads here; it
 * knows neither. */
#ifndef K2MC_COUNTERS_H
#define K2MC_COUNTERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

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


/* A -m server as the labelled counters (metrics, JSON) and the logs name it: "host:port", "[v6addr]:port",
 * or "unix:PATH"; at most K2MC_SERVER_LABEL_MAX bytes with the NUL. */
#define K2MC_SERVER_LABEL_MAX (sizeof(((struct k2mc_server *)0)->host) + 16)
void k2mc_server_label(const struct k2mc_server *srv, char *buf, size_t len);

#endif
