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
