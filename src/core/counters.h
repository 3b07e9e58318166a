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
 * V(key, group, metric, type, by, value, sample, help): a number the
 *   snapshot has (value: an expression of `s`, a const struct k2mc_snapshot
 *   *); `by` says which labels its /metrics family has (enum k2mc_stat_by)
 *   and `sample` is the number of the sample labelled i (and j: the second
 *   label of K2MC_BY_SERVER_KIND), 0 for a row without labels. The
 *   expressions are expanded by the snapshot only (stats.c), which defines
 *   `s`, `i` and `j`: this header knows no snapshot.
 * group: the stats line's " | " sections, in order (1 records, 2 buffers and
 * lag, 3 memcached, 4 the rest); within one, rows keep table order. */
// clang-format off
#define K2MC_STATS_TABLE(W, V)                                                                     \
	V(consumed, 1, "k2mc_records_consumed_total", K2MC_COUNTER, K2MC_BY_PARTITION, s->consumed,  \
	  s->parts[i].consumed,                                                                     \
	  "Records consumed from Kafka, per partition, over every assignment in this run.")         \
	W(written, "written", 1, "k2mc_records_written_total",                                      \
	  "Records stored in Memcached (set acknowledged).")                                        \
	W(deleted, "deleted", 1, "k2mc_records_deleted_total",                                      \
	  "Deletes acknowledged (or the key was absent): tombstones, and records whose expiry had " \
	  "passed (k2mc_records_expired_total).")                                                   \
	V(skipped, 1, "k2mc_records_invalid_total", K2MC_COUNTER, K2MC_BY_REASON, s->t.skipped,      \
	  s->t.skipped_by[i],                                                                       \
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
	W(cdc_truncates, "truncates", 1, "k2mc_cdc_truncates_total",                             \
	  "Change events of op t (--cdc: a table truncated): acknowledged without a write, since "  \
	  "they name no key; the cache keeps the table's keys until they change or expire.")      \
	W(coalesced, "coalesced", 1, "k2mc_records_coalesced_total",                                \
	  "Records not sent because a later record of the same batch wrote the same Memcached key " \
	  "(the last write wins anyway): acknowledged with the write that replaced them.")          \
	V(lost_to_retention, 1, "k2mc_records_lost_to_retention_total", K2MC_COUNTER,                \
	  K2MC_BY_PARTITION, s->lost, s->parts[i].lost,                                             \
	  "Records deleted from the log (retention) before k2mc read them, per partition: the "     \
	  "committed offset, or the next one to read, had left the log, and k2mc resumed at the "   \
	  "oldest surviving record. Never written to Memcached.")                                   \
	V(partitions, 2, "k2mc_partitions_assigned", K2MC_GAUGE, K2MC_BY_NONE, s->assigned, 0,       \
	  "Partitions assigned to this instance.")                                                  \
	V(buffer_bytes, 2, "k2mc_buffer_bytes", K2MC_GAUGE, K2MC_BY_NONE, s->buffer_bytes, 0,        \
	  "Record bytes held in rings and batches (key + value + librdkafka's per-record "          \
	  "overhead), plus byte credit consumers took and have not spent.")                         \
	V(lag, 2, "k2mc_consumer_lag", K2MC_GAUGE, K2MC_BY_PARTITION_HELD, s->lag,                    \
	  s->parts[i].lag,                                                                          \
	  "Records between the log end and the acknowledged watermark, per assigned partition.")    \
	V(memcached_errors, 3, "k2mc_memcached_errors_total", K2MC_COUNTER, K2MC_BY_SERVER_KIND,     \
	  s->t.mc_errors, s->t.mc_errors_by[i][j],                                                  \
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
	  s->takeover_waits, 0,                                                                     \
	  "Assigned partitions not written at first because their previous owner did not release " \
	  "them cleanly and may still hold its write lease (the takeover wait).")                  \
	W(alloc_failures, "alloc_failures", 4, "k2mc_writer_alloc_failures_total",                  \
	  "Batches whose commands could not be allocated: rebuilt and retried, nothing "            \
	  "acknowledged.")                                                                          \
	V(registry_waits, 4, "k2mc_schema_registry_waits_total", K2MC_COUNTER, K2MC_BY_NONE,         \
	  s->registry_waits, 0,                                                                     \
	  "Waits for a Schema Registry that could not be reached (--key-format/--value-format "     \
	  "avro): the record and the partition behind it held, not invalid, until it answers.")     \
	V(drains_evicted, 4, "k2mc_drains_evicted_total", K2MC_COUNTER, K2MC_BY_NONE,                \
	  s->drains_evicted, 0,                                                                     \
	  "Revocation drains ended at once because a commit showed that the group no longer "       \
	  "counts this member (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID): their records were left, "   \
	  "uncommitted, to the partitions' new owner.")
// clang-format on

/* ---- the families only /metrics shows -----------------------------------------
 * M(metric, type, by, value, sample, help), as V rows without a key or a
 * group: the stats line and --stats-json show these numbers in shapes of
 * their own (a per-server array, true/false), /metrics as families. */
// clang-format off
#define K2MC_METRICS_TABLE(M)                                                                      \
	M("k2mc_memcached_server_up", K2MC_GAUGE, K2MC_BY_SERVER, 0, s->server_ok[i],               \
	  "1 unless the last exchange with the server failed or went unanswered.")                  \
	M("k2mc_fence_held", K2MC_GAUGE, K2MC_BY_NONE, s->fence_held, 0,                            \
	  "1 while this member's group membership is proven (a lease from acknowledged commits) "  \
	  "and writers may send; 0 while they hold records.")                                       \
	M("k2mc_refill_records_total", K2MC_COUNTER, K2MC_BY_NONE, s->refill_records, 0,            \
	  "Records written again to servers that lost their contents (--refill).")                  \
	M("k2mc_refill_losses_total", K2MC_COUNTER, K2MC_BY_NONE, s->refill_losses, 0,              \
	  "Losses of a server's contents detected (restart, flush), per server and partition.")     \
	M("k2mc_refill_active", K2MC_GAUGE, K2MC_BY_SERVER, 0,                                      \
	  i < 64 && (s->refill_active_mask >> i) & 1,                                               \
	  "1 while the server is being refilled (--refill).")                                       \
	M("k2mc_refill_lag_records", K2MC_GAUGE, K2MC_BY_REFILL_PARTITION, 0,                       \
	  s->refill_lag[i].records,                                                                 \
	  "Records the refill still has to read for the partition, both passes, up to the end "     \
	  "offset at the loss (--refill); 0 once its refill is over.")                              \
	M("k2mc_committed_offset", K2MC_GAUGE, K2MC_BY_PARTITION_HELD, 0, s->parts[i].committed,    \
	  "Offset last committed (every record below it is in Memcached).")                         \
	M("k2mc_end_offset", K2MC_GAUGE, K2MC_BY_PARTITION_HELD, 0, s->parts[i].end,                \
	  "High watermark (log end offset) of the partition, as last fetched.")                     \
	M("k2mc_ring_fill_ratio", K2MC_RATIO, K2MC_BY_WRITER, 0, s->writer_fill[i],                 \
	  "Records waiting in a writer's rings over their slots (1 = full: backpressure).")         \
	M("k2mc_buffer_limit_bytes", K2MC_GAUGE, K2MC_BY_NONE, s->buffer_limit, 0,                  \
	  "--max-buffer-bytes: consumers wait when k2mc_buffer_bytes reaches it (0: no limit).")   \
	M("k2mc_e2e_latency_seconds", K2MC_HISTOGRAM, K2MC_BY_LATENCY, 0, 0,                        \
	  "Record timestamp to Memcached acknowledgement, in whole milliseconds.")
// clang-format on

/* Which labels a family's samples have, and which samples there are (i and
 * j: the indexes a row's `sample` reads). */
enum k2mc_stat_by {
	K2MC_BY_NONE = 0,
	K2MC_BY_PARTITION,      /* {topic,partition}: every partition of this run, i
				 * into the snapshot's parts (assigned or released) */
	K2MC_BY_PARTITION_HELD, /* {topic,partition}: the partitions assigned now whose
				 * sample is known (>= 0): a released one is another
				 * member's to report */
	K2MC_BY_REASON,         /* {reason}: i an enum k2mc_map_reason, from 1 */
	K2MC_BY_SERVER_KIND,    /* {server,kind}: i a -m server (cfg->servers order), j an
				 * enum k2mc_mc_error; zeros too, so that a dashboard's
				 * series exist before the first failure */
	K2MC_BY_SERVER,         /* {server}: i a -m server */
	K2MC_BY_REFILL_PARTITION, /* {topic,partition}: i a partition of the refill
				   * running or last run (struct k2mc_refill_lag) */
	K2MC_BY_WRITER,         /* {writer}: i a writer thread */
	K2MC_BY_LATENCY,        /* the histogram of end-to-end latency: its buckets
				 * (k2mc_lat_bounds_ms), _sum and _count */
};
/* K2MC_RATIO: a gauge whose samples are fractions (printed %.4f). */
enum k2mc_stat_type { K2MC_COUNTER = 0, K2MC_GAUGE, K2MC_RATIO, K2MC_HISTOGRAM };

struct k2mc_stat_def {
	const char *key;    /* in JSON, and in the stats line but for k2mc_stat_line_label's;
			     * NULL for a K2MC_METRICS_TABLE row */
	const char *metric; /* the /metrics family */
	enum k2mc_stat_type type;
	enum k2mc_stat_by by;
	int group;          /* the stats line's section; 0: not in the stats line */
	const char *help;
};
/* Every family: the rows of K2MC_STATS_TABLE (the first k2mc_nstat_defs:
 * the stats line, JSON and /metrics), then those of K2MC_METRICS_TABLE
 * (/metrics only), k2mc_nfamilies in all, in the order /metrics shows them. */
extern const struct k2mc_stat_def k2mc_stat_defs[];
extern const size_t k2mc_nstat_defs;
extern const size_t k2mc_nfamilies;

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


#endif
