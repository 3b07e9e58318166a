/* Snapshots: the main thread's view of counters and partitions at one moment,
 * gathered from each subsystem's view (counters.h, partitions.h, the writers',
 * refill's and the group's), and the ways it is shown (stats line, JSON line,
 * progress line, summary table). Prometheus text is metrics.c's business; the
 * counters themselves and their table are counters.h's. */
#ifndef K2MC_STATS_H
#define K2MC_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/counters.h"
#include "workers/mapping.h"

/* The counter table's rows, read from a snapshot. */
struct k2mc_snapshot;
/* Family f's number in snapshot s (k2mc_stat_defs[f]; 0 for a labelled
 * K2MC_METRICS_TABLE row). */
uint64_t k2mc_stat_value(const struct k2mc_snapshot *s, size_t f);
/* Family f's sample labelled i (and j), as its `by` says (counters.h);
 * k2mc_stat_ratio for a K2MC_RATIO family. */
int64_t k2mc_stat_sample(const struct k2mc_snapshot *s, size_t f, size_t i, size_t j);
double k2mc_stat_ratio(const struct k2mc_snapshot *s, size_t f, size_t i);
/* The word that precedes row i's number in the stats line. */
const char *k2mc_stat_line_label(size_t i);

/* ---- snapshots (main thread) ---------------------------------------------- */

struct k2mc_budget;
struct k2mc_config;
struct k2mc_decoder;
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
	/* the formats' decoder: the caller sets it before the first take
	 * (NULL: none); take reads how many records waited for the registry */
	struct k2mc_decoder *decoder;
	uint64_t registry_waits;
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
