/* k2mc main: parse flags, start writers, join the group, serve it, print
 * stats, and on a signal or -e completion drain, commit and summarise.
 * Only main decides to stop the process; modules return errors. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "core/committer.h"
#include "core/config.h"
#include "core/group.h"
#include "core/log.h"
#include "core/stats.h"
#include "workers/writer.h"

#define POLL_MS 100
/* Used until a server answers "stats settings"; memcached's default -I. */
#define DEFAULT_ITEM_SIZE (1024 * 1024)

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

struct rates {
	int64_t at_ms;
	uint64_t in, out;
};

static void stats_line(struct k2mc_group *g, struct k2mc_writers *ws, int nwriters,
		       uint32_t ring_slots, struct rates *prev)
{
	struct k2mc_group_stats gs;
	struct k2mc_totals t;
	int64_t now = k2mc_now_ms();
	double secs = (double)(now - prev->at_ms) / 1000.0;
	uint64_t out;

	k2mc_group_stats(g, &gs);
	k2mc_stats_sum(k2mc_writers_stats(ws), nwriters, &t);
	out = t.written + t.deleted + t.skipped;
	k2mc_info("in %.0f/s out %.0f/s | consumed %llu written %llu deleted %llu skipped %llu | "
		  "partitions %zu ring %.1f%% lag %lld | memcached errors %llu retries %llu",
		  secs > 0 ? (double)(gs.consumed - prev->in) / secs : 0.0,
		  secs > 0 ? (double)(out - prev->out) / secs : 0.0,
		  (unsigned long long)gs.consumed, (unsigned long long)t.written,
		  (unsigned long long)t.deleted, (unsigned long long)t.skipped, gs.partitions,
		  gs.partitions ? 100.0 * (double)gs.ring_fill /
					  ((double)gs.partitions * nwriters * ring_slots)
				: 0.0,
		  (long long)gs.lag, (unsigned long long)t.mc_errors, (unsigned long long)t.retries);
	prev->at_ms = now;
	prev->in = gs.consumed;
	prev->out = out;
}

static void abort_writers(void *arg)
{
	k2mc_writers_abort(arg);
}

static void summary(struct k2mc_group *g, struct k2mc_writers *ws, int nwriters,
		    uint64_t left, int64_t end_ms)
{
	struct k2mc_group_stats gs;
	struct k2mc_totals t;
	int64_t from = k2mc_group_first_assign_ms(g);
	double secs = from ? (double)(end_ms - from) / 1000.0 : 0.0;

	k2mc_group_stats(g, &gs);
	k2mc_stats_sum(k2mc_writers_stats(ws), nwriters, &t);
	fprintf(stderr,
		"k2mc: summary: consumed %llu written %llu deleted %llu skipped %llu "
		"(missing_key %llu key_too_long %llu key_bad_bytes %llu value_too_large %llu) "
		"unwritten %llu; %.2fs since assignment (%.0f records/s); committed: ",
		(unsigned long long)gs.consumed, (unsigned long long)t.written,
		(unsigned long long)t.deleted, (unsigned long long)t.skipped,
		(unsigned long long)t.skipped_by[K2MC_KEY_MISSING],
		(unsigned long long)t.skipped_by[K2MC_KEY_TOO_LONG],
		(unsigned long long)t.skipped_by[K2MC_KEY_BAD_BYTES],
		(unsigned long long)t.skipped_by[K2MC_VALUE_TOO_LARGE], (unsigned long long)left,
		secs, secs > 0 ? (double)gs.consumed / secs : 0.0);
	k2mc_group_print_committed(g, stderr);
	fprintf(stderr, "; latency ms p50 %lld p99 %lld p999 %lld\n",
		(long long)k2mc_stats_latency(k2mc_writers_stats(ws), nwriters, 0.50),
		(long long)k2mc_stats_latency(k2mc_writers_stats(ws), nwriters, 0.99),
		(long long)k2mc_stats_latency(k2mc_writers_stats(ws), nwriters, 0.999));
}

int main(int argc, char **argv)
{
	struct k2mc_config cfg;
	struct k2mc_group *g = NULL;
	struct k2mc_writers *ws = NULL;
	struct k2mc_committer *committer = NULL;
	char err[512];
	struct rates prev = { 0 };
	int64_t started, next_stats, stopped;
	uint64_t left = 0;
	size_t max_value;
	int usage = 0, rc = 1;

	switch (k2mc_config_parse(&cfg, argc, argv, err, sizeof(err))) {
	case K2MC_CONFIG_EXIT:
		return 0;
	case K2MC_CONFIG_USAGE:
		fprintf(stderr, "k2mc: %s\n", err);
		k2mc_config_usage(stderr);
		return 2;
	case K2MC_CONFIG_OK:
		break;
	}
	k2mc_log_set_level(cfg.verbosity == 0 ? K2MC_LOG_WARN
			   : cfg.verbosity == 1 ? K2MC_LOG_INFO : K2MC_LOG_DEBUG);
	install_signals();
	/* librdkafka's fetch threads allocate every record and the writers free
	 * them: with glibc's default trimming the arenas shrink and regrow all
	 * the time (mprotect + page faults were 15% of the profile). Keep freed
	 * memory for reuse instead; the rings bound how much there is. */
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	mallopt(M_MMAP_THRESHOLD, 32 << 20);

	g = k2mc_group_new(&cfg, err, sizeof(err), &usage);
	if (g == NULL) {
		fprintf(stderr, "k2mc: %s\n", err);
		if (usage)
			k2mc_config_usage(stderr);
		return usage ? 2 : 1;
	}
	max_value = k2mc_writers_probe_item_size(&cfg, DEFAULT_ITEM_SIZE, 2000);
	if (cfg.max_value_bytes > 0)
		max_value = cfg.max_value_bytes;
	k2mc_dbg("largest value Memcached takes: %zu bytes", max_value);
	ws = k2mc_writers_new(&cfg, k2mc_group_table(g), max_value);
	if (ws == NULL || k2mc_writers_start(ws) != 0)
		goto out;
	k2mc_group_set_writers(g, k2mc_writers_bells(ws), cfg.writers);
	committer = k2mc_committer_start(k2mc_group_rk(g), k2mc_group_table(g),
					 cfg.commit_interval_ms);
	if (committer == NULL)
		goto out;
	k2mc_group_set_committer(g, committer);
	if (k2mc_group_subscribe(g) != 0)
		goto out;
	k2mc_info("started: brokers %s, group %s, %d topic(s), %d memcached server(s), %d writers",
		  cfg.brokers, cfg.group, cfg.ntopics, cfg.nservers, cfg.writers);

	started = k2mc_now_ms();
	prev.at_ms = started;
	next_stats = started + cfg.stats_interval_ms;
	rc = 0;
	while (!got_signal) {
		k2mc_group_poll(g, POLL_MS);
		if (k2mc_group_fatal(g) != NULL) {
			k2mc_err("%s", k2mc_group_fatal(g));
			rc = 1;
			break;
		}
		if (k2mc_writers_fatal(ws) != NULL) {
			k2mc_err("%s", k2mc_writers_fatal(ws));
			rc = 1;
			break;
		}
		if (cfg.max_records > 0) {
			struct k2mc_group_stats gs;

			k2mc_group_stats(g, &gs);
			if (gs.consumed >= cfg.max_records) {
				k2mc_info("consumed %llu records (-c)", (unsigned long long)gs.consumed);
				break;
			}
		}
		if (cfg.exit_at_eof && k2mc_group_all_done(g)) {
			k2mc_info("every assigned partition is written up to its end offset");
			break;
		}
		if (cfg.stats_interval_ms > 0 && k2mc_now_ms() >= next_stats) {
			stats_line(g, ws, cfg.writers, cfg.ring_size, &prev);
			next_stats += cfg.stats_interval_ms;
		}
	}
	if (got_signal)
		k2mc_info("%s: draining, then committing", strsignal(got_signal));

	/* The committer stops first so the final commits are the synchronous
	 * ones, made after the drain. */
	k2mc_group_set_committer(g, NULL);
	k2mc_committer_stop(committer);
	committer = NULL;
	stopped = k2mc_now_ms();
	left = k2mc_group_release_all(g, stopped + cfg.shutdown_timeout_ms, abort_writers, ws);
	summary(g, ws, cfg.writers, left, stopped);
out:
	if (committer != NULL)
		k2mc_committer_stop(committer);
	if (ws != NULL)
		k2mc_writers_stop(ws);
	k2mc_group_close(g);
	k2mc_writers_free(ws);
	return rc;
}
