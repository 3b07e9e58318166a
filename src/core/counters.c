/* The counter table's definitions and the sums over every writer's
 * counters (counters.h). Reads only atomics; changes nothing. */
#include "core/counters.h"

#include <stdio.h>
#include <string.h>

const char *k2mc_mc_error_name(enum k2mc_mc_error e)
{
	static const char *const names[K2MC_MC_NERRS] = { "refused", "timeout", "connection",
							  "error_reply" };

	return (unsigned)e < K2MC_MC_NERRS ? names[e] : "unknown";
}

void k2mc_stats_sum(struct k2mc_writer_stats *ws, int n, struct k2mc_totals *t)
{
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < n; i++) {
#define SUM_W(field, ...) t->field += k2mc_read(&ws[i].field);
		K2MC_STATS_TABLE(SUM_W, K2MC_STATS_IGNORE)
#undef SUM_W
		for (int r = 1; r < K2MC_MAP_NREASONS; r++) {
			uint64_t v = k2mc_read(&ws[i].skipped[r]);

			t->skipped_by[r] += v;
			t->skipped += v;
		}
		for (int s = 0; s < K2MC_MAX_SERVERS; s++) {
			for (int e = 0; e < K2MC_MC_NERRS; e++) {
				uint64_t v = k2mc_read(&ws[i].mc_errors[s][e]);

				t->mc_errors_by[s][e] += v;
				t->mc_errors += v;
			}
		}
	}
}

/* ---- the counter table ------------------------------------------------------- */

#define DEF_W(field, key, group, metric, help) { key, metric, K2MC_COUNTER, K2MC_BY_NONE, group, help },
#define DEF_V(key, group, metric, type, by, value, sample, help) { #key, metric, type, by, group, help },
#define DEF_M(metric, type, by, value, sample, help) { NULL, metric, type, by, 0, help },
const struct k2mc_stat_def k2mc_stat_defs[] = { K2MC_STATS_TABLE(DEF_W, DEF_V)
							K2MC_METRICS_TABLE(DEF_M) };
#undef DEF_M
#define ONE(...) +1
const size_t k2mc_nstat_defs = 0 K2MC_STATS_TABLE(ONE, ONE);
#undef ONE
#undef DEF_W
#undef DEF_V
const size_t k2mc_nfamilies = sizeof(k2mc_stat_defs) / sizeof(k2mc_stat_defs[0]);


int64_t k2mc_stats_latency(struct k2mc_writer_stats *ws, int n, double q)
{
	uint64_t total = 0, seen = 0, rank;

	for (int i = 0; i < n; i++)
		for (int b = 0; b <= K2MC_LAT_MAX_MS; b++)
			total += k2mc_read(&ws[i].latency_ms[b]);
	if (total == 0)
		return -1;
	rank = (uint64_t)(q * (double)total);
	if (rank >= total)
		rank = total - 1;
	for (int b = 0; b <= K2MC_LAT_MAX_MS; b++) {
		for (int i = 0; i < n; i++)
			seen += k2mc_read(&ws[i].latency_ms[b]);
		if (seen > rank)
			return b;
	}
	return K2MC_LAT_MAX_MS;
}

void k2mc_server_label(const struct k2mc_server *srv, char *buf, size_t len)
{
	if (srv->is_unix)
		snprintf(buf, len, "unix:%s", srv->host);
	else if (strchr(srv->host, ':') != NULL)
		snprintf(buf, len, "[%s]:%d", srv->host, srv->port);
	else
		snprintf(buf, len, "%s:%d", srv->host, srv->port);
}
