/* The snapshot: the main thread gathers, at one moment, what each subsystem
 * shows of itself (the writers' counters and server states, the partition
 * table, the group's counts, the budget, refill's view), and renders it as the
 * stats line, --stats-json, the -e progress line and the exit summary; the
 * metrics endpoint renders the same snapshot. Above every module it reads, and
 * read by none of them: reads only atomics and the partition table (on the
 * thread that publishes it); changes nothing. */
#include "core/stats.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/budget.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/group.h"
#include "core/log.h"
#include "core/partitions.h"
#include "ring/ring.h"
#include "workers/decode.h"
#include "workers/mcconn.h" /* k2mc_server_label */
#include "workers/refill.h"
#include "workers/writer.h"

/* ---- the counter table ------------------------------------------------------- */

/* The tables' expressions (counters.h), expanded here, where `s` is a
 * snapshot and `i`, `j` index a family's samples; `f` counts the rows of
 * K2MC_STATS_TABLE and then of K2MC_METRICS_TABLE, as k2mc_stat_defs does. */
#define ROW_W(field, ...)                                                                          \
	if (row++ == f)                                                                            \
		return WANT_W(field);
#define ROW_V(key, group, metric, type, by, value, sample, help)                                   \
	if (row++ == f)                                                                            \
		return WANT(value, sample);
#define ROW_M(metric, type, by, value, sample, help) ROW_V(, , , , , value, sample, )
#define ROWS                                                                                       \
	K2MC_STATS_TABLE(ROW_W, ROW_V)                                                             \
	K2MC_METRICS_TABLE(ROW_M)

uint64_t k2mc_stat_value(const struct k2mc_snapshot *s, size_t f)
{
	size_t row = 0;

#define WANT_W(field) s->t.field
#define WANT(value, sample) (uint64_t)(value)
	ROWS
#undef WANT
#undef WANT_W
	return 0;
}

int64_t k2mc_stat_sample(const struct k2mc_snapshot *s, size_t f, size_t i, size_t j)
{
	size_t row = 0;

#define WANT_W(field) 0
#define WANT(value, sample) (int64_t)(sample)
	ROWS
#undef WANT
#undef WANT_W
	return 0;
}

double k2mc_stat_ratio(const struct k2mc_snapshot *s, size_t f, size_t i)
{
	size_t row = 0, j = 0;

	(void)j;
#define WANT_W(field) 0.0
#define WANT(value, sample) (double)(sample)
	ROWS
#undef WANT
#undef WANT_W
	return 0.0;
}
#undef ROWS
#undef ROW_M
#undef ROW_V
#undef ROW_W

const char *k2mc_stat_line_label(size_t i)
{
	/* words the stats line had before the table, which log readers (and
	 * tests) match: "buffer 12.0 MiB/256 MiB" (the limit rides along,
	 * stats_line), "memcached errors 0 retries 0" */
	if (strcmp(k2mc_stat_defs[i].key, "buffer_bytes") == 0)
		return "buffer";
	if (strcmp(k2mc_stat_defs[i].key, "memcached_errors") == 0)
		return "memcached errors";
	return k2mc_stat_defs[i].key;
}

/* ---- snapshots ------------------------------------------------------------- */

const int k2mc_lat_bounds_ms[K2MC_LAT_NBOUNDS] = { 1,   2,   5,    10,   25,   50,
						   100, 250, 500, 1000, 2500, 5000 };

/* Same rule as k2mc_stats_latency, over counts already summed. */
static int64_t quantile(const uint64_t *lat, uint64_t total, double q)
{
	uint64_t seen = 0, rank;

	if (total == 0)
		return -1;
	rank = (uint64_t)(q * (double)total);
	if (rank >= total)
		rank = total - 1;
	for (int b = 0; b <= K2MC_LAT_MAX_MS; b++) {
		seen += lat[b];
		if (seen > rank)
			return b;
	}
	return K2MC_LAT_MAX_MS;
}

static void take_latency(struct k2mc_snapshot *s, struct k2mc_writer_stats *ws, int n)
{
	int k = 0;
	uint64_t cum = 0;

	memset(s->lat_ms, 0, (K2MC_LAT_MAX_MS + 1) * sizeof(s->lat_ms[0]));
	for (int i = 0; i < n; i++)
		for (int b = 0; b <= K2MC_LAT_MAX_MS; b++)
			s->lat_ms[b] += k2mc_read(&ws[i].latency_ms[b]);
	s->lat_sum_s = 0;
	memset(s->lat_le, 0, sizeof(s->lat_le));
	for (int b = 0; b <= K2MC_LAT_MAX_MS; b++) {
		while (k < K2MC_LAT_NBOUNDS && b > k2mc_lat_bounds_ms[k])
			s->lat_le[k++] = cum;
		cum += s->lat_ms[b];
		s->lat_sum_s += (double)b * (double)s->lat_ms[b] / 1000.0;
	}
	while (k < K2MC_LAT_NBOUNDS)
		s->lat_le[k++] = cum;
	s->lat_count = cum;
	s->p50 = quantile(s->lat_ms, cum, 0.50);
	s->p99 = quantile(s->lat_ms, cum, 0.99);
	s->p999 = quantile(s->lat_ms, cum, 0.999);
}

static struct k2mc_part_snap *add_part(struct k2mc_snapshot *s)
{
	if (s->nparts == s->parts_cap) {
		size_t cap = s->parts_cap ? s->parts_cap * 2 : 64;
		struct k2mc_part_snap *n = realloc(s->parts, cap * sizeof(*n));

		if (n == NULL)
			return NULL;
		s->parts = n;
		s->parts_cap = cap;
	}
	memset(&s->parts[s->nparts], 0, sizeof(s->parts[0]));
	return &s->parts[s->nparts++];
}

static void take_part(struct k2mc_part_snap *ps, struct k2mc_part *p)
{
	struct k2mc_part_view v;

	k2mc_part_view(p, &v);
	ps->topic = v.topic;
	ps->partition = v.partition;
	ps->assigned = 1;
	ps->consumed = v.consumed;
	ps->lost = v.lost;
	ps->committed = v.committed;
	ps->watermark = v.watermark;
	ps->ring_fill = v.ring_fill;
	ps->end = v.end;
	ps->lag = ps->end >= 0 && ps->watermark >= 0
			  ? (ps->end > ps->watermark ? ps->end - ps->watermark : 0)
			  : -1;
	if (ps->lag >= 0)
		ps->todo = ps->lag;
	else if (ps->end >= 0 && v.log_start >= 0)
		ps->todo = ps->end > v.log_start ? ps->end - v.log_start : 0;
	else
		ps->todo = -1;
}

int k2mc_snapshot_take(struct k2mc_snapshot *s, struct k2mc_group *g, struct k2mc_writers *ws,
		       const struct k2mc_config *cfg)
{
	struct k2mc_writer_stats *wst = k2mc_writers_stats(ws);
	/* The main thread publishes the table (group.c) and frees old ones only
	 * after a grace period inside its own calls: between them, its own load
	 * sees the current table, which stays alive while this runs. */
	struct k2mc_part_table *t = atomic_load_explicit(k2mc_group_table(g), memory_order_acquire);
	const struct k2mc_released_part *rel;
	size_t nrel, nlive;

	if (s->lat_ms == NULL) {
		s->lat_ms = calloc(K2MC_LAT_MAX_MS + 1, sizeof(s->lat_ms[0]));
		s->writer_fill = calloc((size_t)cfg->writers, sizeof(s->writer_fill[0]));
		s->server_ok = calloc((size_t)cfg->nservers, sizeof(s->server_ok[0]));
		s->server_state = calloc((size_t)cfg->nservers, sizeof(s->server_state[0]));
		if (s->lat_ms == NULL || s->writer_fill == NULL || s->server_ok == NULL ||
		    s->server_state == NULL)
			return -ENOMEM;
	}
	s->cfg = cfg;
	s->at_ms = k2mc_now_ms();
	s->wall_ms = k2mc_wall_ms();
	k2mc_stats_sum(wst, cfg->writers, &s->t);
	take_latency(s, wst, cfg->writers);
	s->done = s->t.written + s->t.deleted + s->t.skipped + s->t.ignored + s->t.coalesced;
	s->nwriters = cfg->writers;
	s->nservers = cfg->nservers;
	for (int i = 0; i < cfg->nservers; i++) {
		s->server_ok[i] = k2mc_writers_server_ok(ws, i);
		s->server_state[i] = k2mc_writers_server_state(ws, i);
	}
	s->fence_held = k2mc_writers_fence_held(ws);
	s->drains_evicted = k2mc_group_drains_evicted(g);
	s->registry_waits = k2mc_decoder_waits(s->decoder);
	s->refill_records = s->refill != NULL ? k2mc_refill_records(s->refill) : 0;
	s->refill_losses = s->refill != NULL ? k2mc_refill_losses(s->refill) : 0;
	s->refill_active_mask = 0;
	for (int i = 0; s->refill != NULL && i < cfg->nservers && i < 64; i++) {
		if (k2mc_refill_active(s->refill, i))
			s->refill_active_mask |= 1ull << i;
	}
	if (s->refill != NULL) {
		size_t n;

		if (s->refill_view == NULL) {
			s->refill_view = calloc((size_t)cfg->nservers, sizeof(s->refill_view[0]));
			s->refill_lag = calloc(K2MC_REFILL_MAX_LAG_ROWS, sizeof(s->refill_lag[0]));
			if (s->refill_view == NULL || s->refill_lag == NULL)
				return -ENOMEM;
		}
		for (int i = 0; i < cfg->nservers; i++)
			k2mc_refill_view(s->refill, i, &s->refill_view[i]);
		n = k2mc_refill_lags(s->refill, s->refill_lag, K2MC_REFILL_MAX_LAG_ROWS);
		s->nrefill_lag = n < K2MC_REFILL_MAX_LAG_ROWS ? n : K2MC_REFILL_MAX_LAG_ROWS;
	}

	s->nparts = 0;
	s->consumed = 0;
	s->lost = 0;
	s->ring_fill = 0;
	s->lag = 0;
	s->todo = 0;
	s->assigned = t ? t->n : 0;
	s->takeover_waits = k2mc_group_takeover_waits(g);
	s->ring_slots = (uint64_t)s->assigned * (uint64_t)cfg->writers * cfg->ring_size;
	s->buffer_bytes = s->budget != NULL ? k2mc_budget_used(s->budget) : 0;
	s->buffer_limit = s->budget != NULL ? k2mc_budget_limit(s->budget) : 0;
	for (int w = 0; w < cfg->writers; w++) {
		uint64_t n = 0;

		for (size_t i = 0; i < s->assigned; i++)
			n += ring_count(k2mc_part_ring(t->parts[i], w));
		s->writer_fill[w] = s->assigned ? (double)n / ((double)s->assigned * cfg->ring_size)
						: 0.0;
	}
	for (size_t i = 0; i < s->assigned; i++) {
		struct k2mc_part_snap *ps = add_part(s);

		if (ps == NULL)
			return -ENOMEM;
		take_part(ps, t->parts[i]);
		s->ring_fill += ps->ring_fill;
		if (ps->lag > 0)
			s->lag += ps->lag;
		if (ps->todo < 0 || s->todo < 0)
			s->todo = -1;
		else
			s->todo += ps->todo;
	}
	/* partitions released earlier: their counts, folded into a current
	 * assignment of the same partition if there is one */
	nlive = s->nparts;
	rel = k2mc_group_released(g, &nrel);
	for (size_t r = 0; r < nrel; r++) {
		struct k2mc_part_snap *ps = NULL;

		for (size_t i = 0; i < nlive && ps == NULL; i++)
			if (s->parts[i].partition == rel[r].partition &&
			    strcmp(s->parts[i].topic, rel[r].topic) == 0)
				ps = &s->parts[i];
		if (ps != NULL) {
			ps->consumed += rel[r].consumed;
			ps->lost += rel[r].lost;
			if (ps->committed < 0)
				ps->committed = rel[r].committed;
			continue;
		}
		ps = add_part(s);
		if (ps == NULL)
			return -ENOMEM;
		ps->topic = rel[r].topic;
		ps->partition = rel[r].partition;
		ps->consumed = rel[r].consumed;
		ps->lost = rel[r].lost;
		ps->committed = rel[r].committed;
		ps->watermark = ps->end = ps->lag = ps->todo = -1;
	}
	for (size_t i = 0; i < s->nparts; i++) {
		s->consumed += s->parts[i].consumed;
		s->lost += s->parts[i].lost;
	}
	return 0;
}

void k2mc_snapshot_free(struct k2mc_snapshot *s)
{
	free(s->lat_ms);
	free(s->writer_fill);
	free(s->server_ok);
	free(s->server_state);
	free(s->refill_view);
	free(s->refill_lag);
	free(s->parts);
	memset(s, 0, sizeof(*s));
}

void k2mc_snapshot_mark(const struct k2mc_snapshot *s, struct k2mc_mark *m)
{
	m->at_ms = s->at_ms;
	m->consumed = s->consumed;
	m->done = s->done;
}

void k2mc_snapshot_rates(const struct k2mc_mark *prev, const struct k2mc_snapshot *cur,
			 double *in, double *out)
{
	double secs = (double)(cur->at_ms - prev->at_ms) / 1000.0;

	*in = secs > 0 ? (double)(cur->consumed - prev->consumed) / secs : 0.0;
	*out = secs > 0 ? (double)(cur->done - prev->done) / secs : 0.0;
}

/* Appends to buf at *n (which may reach len: snprintf truncates). */
static void append(char *buf, size_t len, size_t *n, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t len, size_t *n, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (*n >= len)
		return;
	va_start(ap, fmt);
	w = vsnprintf(buf + *n, len - *n, fmt, ap);
	va_end(ap);
	if (w > 0)
		*n += (size_t)w;
}

#define STATS_NGROUPS 4

int k2mc_stats_refill_line(char *buf, size_t len, const struct k2mc_snapshot *cur, int i)
{
	const struct k2mc_refill_view *v;
	char name[K2MC_SERVER_LABEL_MAX];

	if (cur->refill_view == NULL || i < 0 || i >= cur->nservers)
		return -1;
	v = &cur->refill_view[i];
	if (v->state == K2MC_REFILL_IDLE)
		return -1;
	k2mc_server_label(&cur->cfg->servers[i], name, sizeof(name));
	snprintf(buf, len, "refill %s %s | rewritten %llu lag %lld | %.0f/s", name,
		 k2mc_refill_state_name(v->state), (unsigned long long)v->records,
		 (long long)v->lag, v->rate);
	return 0;
}

void k2mc_stats_line(char *buf, size_t len, const struct k2mc_mark *prev,
		     const struct k2mc_snapshot *cur)
{
	double in, out;
	size_t n = 0;

	if (len > 0)
		buf[0] = '\0';
	k2mc_snapshot_rates(prev, cur, &in, &out);
	append(buf, len, &n, "in %.0f/s out %.0f/s", in, out);
	for (int g = 1; g <= STATS_NGROUPS; g++) {
		const char *sep = " |";

		for (size_t i = 0; i < k2mc_nstat_defs; i++) {
			const struct k2mc_stat_def *d = &k2mc_stat_defs[i];
			uint64_t v;

			if (d->group != g)
				continue;
			v = k2mc_stat_value(cur, i);
			append(buf, len, &n, "%s %s ", sep, k2mc_stat_line_label(i));
			sep = "";
			if (strcmp(d->key, "buffer_bytes") != 0)
				append(buf, len, &n, "%llu", (unsigned long long)v);
			else if (cur->buffer_limit > 0) /* --max-buffer-bytes: of the limit */
				append(buf, len, &n, "%.1f MiB/%.4g MiB", (double)v / (1 << 20),
				       (double)cur->buffer_limit / (1 << 20));
			else
				append(buf, len, &n, "%.1f MiB", (double)v / (1 << 20));
		}
		if (g == 2) /* records in the rings over their slots */
			append(buf, len, &n, " ring %.1f%%",
			       cur->ring_slots ? 100.0 * (double)cur->ring_fill / (double)cur->ring_slots
					       : 0.0);
	}
}

/* Kafka topic names are [a-zA-Z0-9._-]; escaped anyway, the JSON way. */
static void json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

void k2mc_stats_json(FILE *out, const struct k2mc_mark *prev,
		     const struct k2mc_snapshot *cur, int final)
{
	double in, out_rate;
	char name[K2MC_SERVER_LABEL_MAX];

	k2mc_snapshot_rates(prev, cur, &in, &out_rate);
	fprintf(out, "{\"ts_ms\":%lld,\"final\":%s,\"in_per_s\":%.1f,\"out_per_s\":%.1f",
		(long long)cur->wall_ms, final ? "true" : "false", in, out_rate);
	/* the counter table, in its order */
	for (size_t i = 0; i < k2mc_nstat_defs; i++)
		fprintf(out, ",\"%s\":%llu", k2mc_stat_defs[i].key,
			(unsigned long long)k2mc_stat_value(cur, i));
	fputs(",\"skipped_by\":{", out);
	for (int r = 1; r < K2MC_MAP_NREASONS; r++)
		fprintf(out, "%s\"%s\":%llu", r > 1 ? "," : "",
			k2mc_map_reason_name((enum k2mc_map_reason)r),
			(unsigned long long)cur->t.skipped_by[r]);
	fprintf(out,
		"},\"refill_records\":%llu,\"refill_losses\":%llu,"
		"\"fence_held\":%s,\"ring_fill_ratio\":%.4f,\"buffer_limit_bytes\":%llu,"
		"\"latency_ms\":{\"p50\":%lld,\"p99\":%lld,\"p999\":%lld,\"count\":%llu,\"le\":{",
		(unsigned long long)cur->refill_records, (unsigned long long)cur->refill_losses,
		cur->fence_held ? "true" : "false",
		cur->ring_slots ? (double)cur->ring_fill / (double)cur->ring_slots : 0.0,
		(unsigned long long)cur->buffer_limit, (long long)cur->p50, (long long)cur->p99,
		(long long)cur->p999, (unsigned long long)cur->lat_count);
	/* cumulative, as the Prometheus histogram's buckets */
	for (int k = 0; k < K2MC_LAT_NBOUNDS; k++)
		fprintf(out, "\"%d\":%llu,", k2mc_lat_bounds_ms[k],
			(unsigned long long)cur->lat_le[k]);
	fprintf(out, "\"+Inf\":%llu}},\"servers\":[", (unsigned long long)cur->lat_count);
	for (int i = 0; i < cur->nservers; i++) {
		k2mc_server_label(&cur->cfg->servers[i], name, sizeof(name));
		fprintf(out, "%s{\"server\":", i ? "," : "");
		json_str(out, name);
		fprintf(out, ",\"ok\":%s,\"state\":\"%s\",\"errors\":{",
			cur->server_ok[i] ? "true" : "false",
			k2mc_server_state_name(cur->server_state[i]));
		for (int e = 0; e < K2MC_MC_NERRS; e++)
			fprintf(out, "%s\"%s\":%llu", e ? "," : "",
				k2mc_mc_error_name((enum k2mc_mc_error)e),
				(unsigned long long)(i < K2MC_MAX_SERVERS ? cur->t.mc_errors_by[i][e]
									  : 0));
		fputs("}}", out);
	}
	if (cur->refill_view != NULL) {
		fputs("],\"refill_servers\":[", out);
		for (int i = 0; i < cur->nservers; i++) {
			const struct k2mc_refill_view *v = &cur->refill_view[i];

			k2mc_server_label(&cur->cfg->servers[i], name, sizeof(name));
			fprintf(out, "%s{\"server\":", i ? "," : "");
			json_str(out, name);
			fprintf(out,
				",\"state\":\"%s\",\"records\":%llu,\"lag\":%lld,\"rate\":%.1f}",
				k2mc_refill_state_name(v->state), (unsigned long long)v->records,
				(long long)v->lag, v->rate);
		}
		fputs("],\"refill_lag\":[", out);
		for (size_t i = 0; i < cur->nrefill_lag; i++) {
			const struct k2mc_refill_lag *r = &cur->refill_lag[i];

			fprintf(out, "%s{\"topic\":", i ? "," : "");
			json_str(out, r->topic);
			fprintf(out, ",\"partition\":%d,\"records\":%lld}", r->partition,
				(long long)r->records);
		}
	}
	fputs("],\"parts\":[", out);
	for (size_t i = 0; i < cur->nparts; i++) {
		const struct k2mc_part_snap *p = &cur->parts[i];

		fprintf(out, "%s{\"topic\":", i ? "," : "");
		json_str(out, p->topic);
		fprintf(out,
			",\"partition\":%d,\"assigned\":%s,\"consumed\":%llu,"
			"\"lost_to_retention\":%llu,\"committed\":%lld,"
			"\"watermark\":%lld,\"end\":%lld,\"lag\":%lld,\"ring_fill\":%llu}",
			p->partition, p->assigned ? "true" : "false",
			(unsigned long long)p->consumed, (unsigned long long)p->lost,
			(long long)p->committed,
			(long long)p->watermark, (long long)p->end, (long long)p->lag,
			(unsigned long long)p->ring_fill);
	}
	fputs("]}\n", out);
	fflush(out);
}

static void fmt_duration(char *buf, size_t len, double secs)
{
	long s = (long)(secs + 0.5);

	if (s >= 3600)
		snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
}

void k2mc_stats_progress(char *buf, size_t len, const struct k2mc_snapshot *cur, double rate)
{
	char eta[32] = "--:--";
	uint64_t total;

	if (cur->assigned == 0) {
		snprintf(buf, len, "progress: waiting for partitions | %llu records done",
			 (unsigned long long)cur->done);
		return;
	}
	if (cur->todo < 0) {
		snprintf(buf, len, "progress: %llu records done | %.0f/s | waiting for end offsets",
			 (unsigned long long)cur->done, rate);
		return;
	}
	if (cur->todo == 0)
		snprintf(eta, sizeof(eta), "0:00");
	else if (rate >= 1.0)
		fmt_duration(eta, sizeof(eta), (double)cur->todo / rate);
	total = cur->done + (uint64_t)cur->todo;
	snprintf(buf, len, "progress %5.1f%% | %llu of %llu records | %.0f/s | ETA %s",
		 total > 0 ? 100.0 * (double)cur->done / (double)total : 100.0,
		 (unsigned long long)cur->done, (unsigned long long)total, rate, eta);
}

void k2mc_stats_table(FILE *out, const struct k2mc_snapshot *s)
{
	int w = 5;

	if (s->nparts == 0)
		return;
	if (k2mc_log_get_format() == K2MC_LOG_JSON) {
		/* a pipeline reading JSON lines gets a line per partition */
		for (size_t i = 0; i < s->nparts; i++) {
			const struct k2mc_part_snap *p = &s->parts[i];

			k2mc_log_partition(K2MC_LOG_INFO, p->topic, p->partition, NULL,
					   "per partition: %s [%d] consumed %llu committed %lld",
					   p->topic, p->partition, (unsigned long long)p->consumed,
					   (long long)p->committed);
		}
		return;
	}
	for (size_t i = 0; i < s->nparts; i++) {
		int l = (int)strlen(s->parts[i].topic);

		if (l > w)
			w = l;
	}
	fprintf(out, "k2mc: per partition:\n  %-*s %9s %12s %12s\n", w, "topic", "partition",
		"consumed", "committed");
	for (size_t i = 0; i < s->nparts; i++) {
		const struct k2mc_part_snap *p = &s->parts[i];
		char committed[24] = "-";

		if (p->committed >= 0)
			snprintf(committed, sizeof(committed), "%lld", (long long)p->committed);
		fprintf(out, "  %-*s %9d %12llu %12s\n", w, p->topic, p->partition,
			(unsigned long long)p->consumed, committed);
	}
}
