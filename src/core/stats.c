/* Aggregation of per-thread counters for stats lines and the summary. */
#include "core/stats.h"

#include <string.h>

void k2mc_stats_sum(struct k2mc_writer_stats *ws, int n, struct k2mc_totals *t)
{
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < n; i++) {
		t->written += k2mc_read(&ws[i].written);
		t->deleted += k2mc_read(&ws[i].deleted);
		t->bytes += k2mc_read(&ws[i].bytes);
		t->batches += k2mc_read(&ws[i].batches);
		t->mc_errors += k2mc_read(&ws[i].mc_errors);
		t->retries += k2mc_read(&ws[i].retries);
		for (int r = 1; r < K2MC_KEY_NREASONS; r++) {
			uint64_t v = k2mc_read(&ws[i].skipped[r]);

			t->skipped_by[r] += v;
			t->skipped += v;
		}
	}
}

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
