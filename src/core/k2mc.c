/* k2mc main: parse flags, start writers, join the group, serve it, report
 * (stats line or -e progress line, --stats-json, the metrics endpoint), and on
 * a signal or -e completion drain, commit and summarise.
 * Only main decides to stop the process; modules return errors. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu.h>

#include "core/budget.h"
#include "core/config.h"
#include "core/fence.h"
#include "core/group.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/notify.h"
#include "core/stats.h"
#include "ring/park.h"
#include "workers/decode.h"
#include "workers/dlq.h"
#include "workers/mapping.h"
#include "workers/mcconn.h"
#include "workers/placement.h"
#include "workers/transport.h"
#include "workers/refill.h"
#include "workers/writer.h"

#define POLL_MS 100
/* how often the metrics endpoint's text and the progress line are refreshed */
#define REFRESH_MS 1000
/* weight of the newest interval in the progress line's smoothed rate */
#define RATE_ALPHA 0.3
/* After the drain's deadline, leaving the group may take this long: the
 * whole shutdown ends within --shutdown-timeout-ms plus about a second. */
#define CLOSE_GRACE_MS 900

static volatile sig_atomic_t got_signal;
static volatile sig_atomic_t got_hup, got_usr1;
/* set by main when it starts draining (-e done, -c reached, or a signal) */
static volatile sig_atomic_t draining;
/* set before the signal handlers can need them, never changed after */
static struct k2mc_writers *volatile signal_writers;

/* SIGINT/SIGTERM: drain and stop. A second one during the drain: stop at
 * once, as Kafka tools do on a second Ctrl-C; what is acknowledged is still
 * committed, the rest is consumed again after a restart. Only lock-free
 * atomic stores here (async-signal-safe). */
static void on_signal(int sig)
{
	if (got_signal != 0 || draining) {
		got_signal = sig;
		k2mc_parts_hurry();
		if (signal_writers != NULL)
			k2mc_writers_abort(signal_writers);
		return;
	}
	got_signal = sig;
}

static void on_info_signal(int sig)
{
	if (sig == SIGHUP)
		got_hup = 1;
	else
		got_usr1 = 1;
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* SIGUSR1: print the stats line now (as dd does). SIGHUP: logged and
	 * ignored; there is no configuration to reload, and a loader that dies
	 * with its terminal would drop what it holds undrained. */
	sa.sa_handler = on_info_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int interrupted(void)
{
	return got_signal != 0;
}

/* Started with fd 0, 1 or 2 closed (`>&-`), the first files opened
 * (librdkafka's wake-up pipe, --stats-json) would become stdout or stderr,
 * and logs would go into them. /dev/null takes the empty slots first. */
static void fill_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
			int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);

			if (n >= 0 && n != fd)
				close(n); /* cannot happen: open takes the lowest free fd */
		}
	}
}

/* What the main loop reports while running, and when. */
struct report {
	const struct k2mc_config *cfg;
	struct k2mc_group *g;
	struct k2mc_writers *ws;
	struct k2mc_snapshot snap;
	struct k2mc_metrics *metrics;    /* NULL: no --metrics-addr */
	FILE *json;                      /* NULL: no --stats-json */
	int progress;                    /* -e with stderr on a terminal */
	struct k2mc_mark stats_mark;     /* at the last stats line */
	struct k2mc_mark progress_mark;  /* at the last progress line */
	double rate;                     /* smoothed records/s out, for the ETA */
	int64_t next_stats, next_refresh;
	int force_stats;                 /* SIGUSR1: a stats line now */
	/* --refill: per server, the refills whose end has had its state line */
	uint64_t refill_ends_shown[K2MC_MAX_SERVERS];
};

/* --refill: with each stats line, one state line per server being
 * refilled, and one more when its refill has ended. */
static void report_refill(struct report *r)
{
	char line[512], name[K2MC_SERVER_LABEL_MAX];

	for (int i = 0; r->snap.refill_view != NULL && i < r->snap.nservers; i++) {
		const struct k2mc_refill_view *v = &r->snap.refill_view[i];
		int running = v->state == K2MC_REFILL_DETECTING || v->state == K2MC_REFILL_REFILLING;

		if (!running && v->ends == r->refill_ends_shown[i])
			continue;
		r->refill_ends_shown[i] = v->ends;
		if (k2mc_stats_refill_line(line, sizeof(line), &r->snap, i) != 0)
			continue;
		k2mc_server_label(&r->cfg->servers[i], name, sizeof(name));
		k2mc_log_server(K2MC_LOG_INFO, name, NULL, "%s", line);
	}
}

static void report_init(struct report *r, const struct k2mc_config *cfg, struct k2mc_group *g,
			struct k2mc_writers *ws, int64_t now)
{
	r->cfg = cfg;
	r->g = g;
	r->ws = ws;
	r->stats_mark.at_ms = now;
	r->progress_mark.at_ms = now;
	r->next_stats = now + cfg->stats_interval_ms;
	r->next_refresh = now + REFRESH_MS;
	/* the stats line stays for logs and pipes; a terminal watching -e
	 * gets one line rewritten in place instead */
	r->progress = cfg->exit_at_eof && cfg->stats_interval_ms > 0 && cfg->verbosity >= 1 &&
		      cfg->log_format == K2MC_LOG_TEXT && isatty(STDERR_FILENO);
}

static void report_progress(struct report *r)
{
	char line[256];
	double in, out;

	k2mc_snapshot_rates(&r->progress_mark, &r->snap, &in, &out);
	r->rate = r->progress_mark.done == 0 && r->rate == 0.0
			  ? out
			  : RATE_ALPHA * out + (1.0 - RATE_ALPHA) * r->rate;
	k2mc_snapshot_mark(&r->snap, &r->progress_mark);
	k2mc_stats_progress(line, sizeof(line), &r->snap, r->rate);
	k2mc_log_status(line);
}

/* Called every loop turn: takes a snapshot only when something is due. */
static void report_tick(struct report *r)
{
	int64_t now = k2mc_now_ms();
	int stats_due = (r->cfg->stats_interval_ms > 0 && now >= r->next_stats) || r->force_stats;
	int refresh_due = (r->metrics != NULL || r->progress) && now >= r->next_refresh;

	if (!stats_due && !refresh_due)
		return;
	if (k2mc_snapshot_take(&r->snap, r->g, r->ws, r->cfg) != 0) {
		k2mc_warn("out of memory taking a stats snapshot");
		return;
	}
	if (refresh_due) {
		r->next_refresh = now + REFRESH_MS;
		if (r->metrics != NULL)
			k2mc_metrics_publish(r->metrics, &r->snap);
		if (r->progress)
			report_progress(r);
	}
	if (stats_due) {
		r->force_stats = 0;
		r->next_stats += r->cfg->stats_interval_ms;
		if (r->next_stats <= now)
			r->next_stats = now + r->cfg->stats_interval_ms;
		if (!r->progress) {
			char line[512];

			k2mc_stats_line(line, sizeof(line), &r->stats_mark, &r->snap);
			k2mc_info("%s", line);
			k2mc_notify_status("%s", line);
			report_refill(r);
		}
		if (r->json != NULL)
			k2mc_stats_json(r->json, &r->stats_mark, &r->snap, 0);
		k2mc_snapshot_mark(&r->snap, &r->stats_mark);
	}
}

/* After the drain: the table under the summary line, the last JSON object. */
static void report_final(struct report *r)
{
	if (r->progress)
		k2mc_log_status(NULL);
	if (k2mc_snapshot_take(&r->snap, r->g, r->ws, r->cfg) != 0)
		return;
	k2mc_stats_table(stderr, &r->snap);
	if (r->json != NULL)
		k2mc_stats_json(r->json, &r->stats_mark, &r->snap, 1);
}

static void abort_writers(void *arg)
{
	k2mc_writers_abort(arg);
}

static void summary(struct k2mc_group *g, struct k2mc_writers *ws, int nwriters,
		    uint64_t left, int64_t end_ms)
{
	rd_kafka_resp_err_t cerr = k2mc_group_last_commit_error(g);
	struct k2mc_group_stats gs;
	struct k2mc_totals t;
	int64_t from = k2mc_group_first_assign_ms(g);
	double secs = from ? (double)(end_ms - from) / 1000.0 : 0.0;
	char *buf = NULL;
	size_t blen = 0;
	/* built whole, then written as one text line or one JSON log object */
	FILE *out = open_memstream(&buf, &blen);

	if (out == NULL)
		out = stderr;

	k2mc_group_stats(g, &gs);
	k2mc_stats_sum(k2mc_writers_stats(ws), nwriters, &t);
	fprintf(out, "k2mc: summary: consumed %llu written %llu deleted %llu skipped %llu (",
		(unsigned long long)gs.consumed, (unsigned long long)t.written,
		(unsigned long long)t.deleted, (unsigned long long)t.skipped);
	/* every reason of the table (mapping.h), so the breakdown adds up to
	 * the total */
	for (int r = 1; r < K2MC_MAP_NREASONS; r++)
		fprintf(out, "%s%s %llu", r > 1 ? " " : "",
			k2mc_map_reason_name((enum k2mc_map_reason)r),
			(unsigned long long)t.skipped_by[r]);
	fprintf(out, ") coalesced %llu lost_to_retention %llu unwritten %llu; %.2fs since "
		"assignment (%.0f records/s); committed: ",
		(unsigned long long)t.coalesced, (unsigned long long)gs.lost, (unsigned long long)left,
		secs, secs > 0 ? (double)gs.consumed / secs : 0.0);
	/* only offsets Kafka acknowledged are printed as committed */
	k2mc_group_print_committed(g, out);
	if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR)
		fprintf(out, "; last commit failed (%s): offsets past those above are uncommitted",
			cerr == RD_KAFKA_RESP_ERR__TIMED_OUT ? "no answer from Kafka in time"
							     : rd_kafka_err2str(cerr));
	fprintf(out, "; latency ms p50 %lld p99 %lld p999 %lld\n",
		(long long)k2mc_stats_latency(k2mc_writers_stats(ws), nwriters, 0.50),
		(long long)k2mc_stats_latency(k2mc_writers_stats(ws), nwriters, 0.99),
		(long long)k2mc_stats_latency(k2mc_writers_stats(ws), nwriters, 0.999));
	if (out == stderr)
		return;
	fclose(out);
	if (buf != NULL && k2mc_log_get_format() == K2MC_LOG_JSON) {
		if (blen > 0 && buf[blen - 1] == '\n')
			buf[blen - 1] = '\0';
		k2mc_info("%s", strncmp(buf, "k2mc: ", 6) == 0 ? buf + 6 : buf);
	} else if (buf != NULL) {
		fputs(buf, stderr);
	}
	free(buf);
}


static FILE *open_json(const char *path)
{
	if (strcmp(path, "-") == 0)
		return stdout;
	/* appended: a restart continues the same stream */
	return fopen(path, "a");
}

/* Every librdkafka configuration the run builds, built the same way (the
 * modules' own builders): the consumer's, the dead letter producer's with
 * --dlq-topic, refill's with --refill; under --check-config the consumer's
 * is also checked whole by librdkafka (k2mc_group_check). What fails here is
 * what the start would stop at, with the same message and exit status (2).
 * The run builds them once more when it makes its clients: conf objects
 * cost microseconds. */
static int check_kafka(const struct k2mc_config *cfg, char *what, size_t whatlen, char *err,
		       size_t errlen)
{
	rd_kafka_conf_t *conf;
	int partial = 0;

	if (cfg->check_config) {
		if (k2mc_group_check(cfg, err, errlen, &partial) != 0)
			return -EINVAL;
	} else {
		conf = k2mc_group_conf(cfg, err, errlen);
		if (conf == NULL)
			return -EINVAL;
		rd_kafka_conf_destroy(conf);
	}
	snprintf(what, whatlen, "%s", partial ? "consumer (its SASL set-up not run)" : "consumer");
	if (k2mc_dlq_wanted(cfg)) {
		conf = k2mc_dlq_conf(cfg, err, errlen);
		if (conf == NULL)
			return -EINVAL;
		rd_kafka_conf_destroy(conf);
		snprintf(what + strlen(what), whatlen - strlen(what), ", dead letter producer");
	}
	if (cfg->refill) {
		conf = k2mc_refill_conf(cfg, err, errlen);
		if (conf == NULL)
			return -EINVAL;
		rd_kafka_conf_destroy(conf);
		snprintf(what + strlen(what), whatlen - strlen(what), ", refill");
	}
	return 0;
}

/* Checks that need more than parsing but no network: key placement, TLS files (readable,
 * key matching its certificate, password right), librdkafka's configurations
 * (check_kafka; what says which were built). 0, or -EINVAL with the reason in
 * err. */
static int check_offline(const struct k2mc_config *cfg, char *what, size_t whatlen, char *err,
			 size_t errlen)
{
	struct k2mc_mapping *map;
	struct k2mc_decoder *dec;

	/* --key / --value: a bad template is named with its position */
	map = k2mc_mapping_new(cfg, err, errlen);
	if (map == NULL)
		return -EINVAL;
	k2mc_mapping_free(map);
	/* --schema-registry and its properties: names and values (no request) */
	dec = k2mc_decoder_new(cfg, err, errlen);
	if (dec == NULL)
		return -EINVAL;
	k2mc_decoder_free(dec);
	/* --distribution against the server list (weights, --mc-eject, names
	 * the scheme resolves); logs which readers it matches */
	if (k2mc_placement_check(cfg, err, errlen) != 0)
		return -EINVAL;
	if (cfg->mc_tls) {
		struct transport_tls tls;

		mcconn_tls_from_config(cfg, &tls);
		if (transport_tls_check(&tls, err, errlen) != 0)
			return -EINVAL;
	}
	return check_kafka(cfg, what, whatlen, err, errlen);
}

int main(int argc, char **argv)
{
	struct k2mc_budget *budget = NULL;
	struct k2mc_config cfg;
	struct k2mc_group *g = NULL;
	struct k2mc_writers *ws = NULL;
	struct k2mc_refill *refill = NULL;
	struct k2mc_refill_filter *refill_filter = NULL;
	struct k2mc_fence *fence = NULL;
	struct park *bells = NULL;
	struct k2mc_mapping *map = NULL;
	struct k2mc_decoder *dec = NULL;
	struct report rep = { 0 };
	char err[512], built[128];
	int64_t stopped = 0;
	uint64_t left = 0;
	int usage = 0, rc = 1;

	fill_std_fds();
	switch (k2mc_config_parse(&cfg, argc, argv, err, sizeof(err))) {
	case K2MC_CONFIG_EXIT:
		k2mc_config_free(&cfg);
		return 0;
	case K2MC_CONFIG_USAGE:
		fprintf(stderr, "k2mc: %s\n", err);
		k2mc_config_usage(stderr);
		k2mc_config_free(&cfg);
		return 2;
	case K2MC_CONFIG_OK:
		break;
	}
	if (cfg.dump_config) {
		k2mc_config_dump(&cfg, stdout);
		k2mc_config_free(&cfg);
		return 0;
	}
	k2mc_log_set_level(cfg.verbosity == 0 ? K2MC_LOG_WARN
			   : cfg.verbosity == 1 ? K2MC_LOG_INFO : K2MC_LOG_DEBUG);
	k2mc_log_set_format(cfg.log_format);
	/* Everything that can be checked without connecting anywhere; also
	 * what --check-config runs (the systemd unit's ExecStartPre). */
	if (check_offline(&cfg, built, sizeof(built), err, sizeof(err)) != 0) {
		fprintf(stderr, "k2mc: %s\n", err);
		k2mc_config_free(&cfg);
		return 2;
	}
	if (cfg.check_config) {
		fprintf(stderr,
			"k2mc: configuration OK (librdkafka configurations built: %s; nothing was "
			"connected to)\n",
			built);
		k2mc_config_free(&cfg);
		return 0;
	}
	install_signals();
	/* librdkafka's fetch threads allocate every record and the writers free
	 * them: with glibc's default trimming the arenas shrink and regrow all
	 * the time. Keep freed memory for reuse instead; the rings bound how
	 * much there is. These are glibc's: the plain build links jemalloc
	 * (Makefile, K2MC_ALLOC), which ignores them and whose own purging
	 * needed no tuning; they still serve K2MC_ALLOC=glibc builds. The
	 * measurements: perf/FINDINGS.md, "What the profile made us change"
	 * (item 2) and issue 14's "What mallopt does now". */
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	mallopt(M_MMAP_THRESHOLD, 32 << 20);

	if (cfg.stats_json != NULL) {
		rep.json = open_json(cfg.stats_json);
		if (rep.json == NULL) {
			fprintf(stderr, "k2mc: --stats-json %s: %s\n", cfg.stats_json, strerror(errno));
			k2mc_config_free(&cfg);
			return 1;
		}
	}
	/* the templates, compiled for the consumers and writers (check_offline
	 * found them good: only memory can fail here) */
	map = k2mc_mapping_new(&cfg, err, sizeof(err));
	if (map == NULL) {
		k2mc_err("%s", err);
		goto out;
	}
	/* the formats' decoder (Avro: the registry client), which the
	 * consumers and writers make their contexts from */
	dec = k2mc_decoder_new(&cfg, err, sizeof(err));
	if (dec == NULL) {
		k2mc_err("%s", err);
		goto out;
	}
	k2mc_mapping_set_decoder(map, dec);
	/* Built bottom-up: the shared model first (the lease, the byte
	 * budget, the writers' doorbells), then the group on it (the consumer,
	 * the partition table), then the writers on the group's table, then the
	 * group's committer. */
	fence = k2mc_fence_new(k2mc_config_lease_ms(&cfg));
	budget = k2mc_budget_new(cfg.max_buffer_bytes);
	bells = park_array_new(cfg.writers);
	if (fence == NULL || budget == NULL || bells == NULL) {
		k2mc_err("out of memory");
		goto out;
	}
	g = k2mc_group_new(&cfg,
			   &(struct k2mc_group_deps){ .fence = fence,
						      .budget = budget,
						      .map = map,
						      .bells = bells,
						      .nwriters = cfg.writers,
						      .interrupted = interrupted },
			   err, sizeof(err), &usage);
	if (g == NULL) {
		fprintf(stderr, "k2mc: %s\n", err);
		if (usage)
			k2mc_config_usage(stderr);
		rc = usage ? 2 : 1;
		goto out;
	}
	if (cfg.shutdown_timeout_ms > k2mc_config_join_lease_ms(&cfg))
		k2mc_warn("--shutdown-timeout-ms %lld is longer than a rebalance lets a member write "
			  "(%lld ms: max.poll.interval.ms - heartbeat.interval.ms - margin): a "
			  "revocation's drain is cut there and what it holds is left to the next "
			  "owner; lower --shutdown-timeout-ms or raise -X max.poll.interval.ms",
			  (long long)cfg.shutdown_timeout_ms,
			  (long long)k2mc_config_join_lease_ms(&cfg));
	k2mc_dbg("fencing: writers send only within %lld ms of an acknowledged commit",
		 (long long)k2mc_config_lease_ms(&cfg));
	/* --refill: the writers note keys in it for the refill thread */
	if (cfg.refill && (refill_filter = k2mc_refill_filter_new()) == NULL) {
		k2mc_err("out of memory");
		goto out;
	}
	/* each server's item size limit is read on every (re)connect; this is
	 * only the --max-value-bytes cap (0: none) */
	ws = k2mc_writers_new(&cfg, k2mc_group_table(g), fence, map, (size_t)cfg.max_value_bytes,
			      refill_filter, bells);
	if (ws == NULL)
		goto out;
	if (k2mc_writers_start(ws) != 0)
		goto out;
	signal_writers = ws;
	rep.snap.budget = budget;
	rep.snap.decoder = dec;
	report_init(&rep, &cfg, g, ws, k2mc_now_ms());
	if (cfg.metrics_port > 0) {
		/* liveness fails only when the main loop stops publishing for
		 * longer than a revocation may legitimately wait for Memcached */
		rep.metrics = k2mc_metrics_start(cfg.metrics_host, cfg.metrics_port,
						 cfg.shutdown_timeout_ms + 10000, err, sizeof(err));
		if (rep.metrics == NULL) {
			k2mc_err("%s", err);
			goto out;
		}
		if (k2mc_snapshot_take(&rep.snap, g, ws, &cfg) == 0)
			k2mc_metrics_publish(rep.metrics, &rep.snap);
		k2mc_info(strchr(cfg.metrics_host, ':') ? "metrics on http://[%s]:%d/metrics"
							: "metrics on http://%s:%d/metrics",
			  cfg.metrics_host, cfg.metrics_port);
	}
	if (k2mc_group_start_committer(g, cfg.commit_interval_ms) != 0)
		goto out;
	/* --refill: its own thread, Kafka handle and connections (refill.h) */
	if (cfg.refill) {
		refill = k2mc_refill_new(&cfg, k2mc_group_table(g), map, refill_filter, fence, err,
					 sizeof(err));
		if (refill == NULL) {
			k2mc_err("%s", err);
			goto out;
		}
		rep.snap.refill = refill;
		if (k2mc_refill_start(refill) != 0) {
			k2mc_err("cannot start the refill thread");
			goto out;
		}
	}
	switch (k2mc_group_subscribe(g)) {
	case 0:
		break;
	case -EINTR:
		k2mc_info("%s before a Kafka broker answered; nothing consumed", strsignal(got_signal));
		rc = 0;
		goto out;
	default:
		goto out;
	}
	k2mc_info("started: brokers %s, group %s, %d topic(s), %d memcached server(s), %d writers; "
		  "k2mc %s, librdkafka %s",
		  cfg.brokers, cfg.group, cfg.ntopics, cfg.nservers, cfg.writers, K2MC_VERSION,
		  rd_kafka_version_str());
	k2mc_notify_status("waiting for the first assignment from group %s", cfg.group);

	rc = 0;
	while (!got_signal) {
		k2mc_group_poll(g, POLL_MS);
		/* systemd (Type=notify): ready once the group has answered with an
		 * assignment, empty or not; sent once */
		if (k2mc_group_first_assign_ms(g) != 0)
			k2mc_notify_ready("consuming: group %s", cfg.group);
		if (got_hup) {
			got_hup = 0;
			k2mc_info("SIGHUP ignored: k2mc has no configuration to reload; restart it to "
				  "apply a change (SIGTERM drains and commits first)");
		}
		if (got_usr1) {
			got_usr1 = 0;
			rep.force_stats = 1;
		}
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
			if (rep.progress && k2mc_snapshot_take(&rep.snap, g, ws, &cfg) == 0) {
				/* the last progress line says 100% and stays */
				report_progress(&rep);
				k2mc_log_status_keep();
			}
			k2mc_info("every assigned partition is written up to its end offset");
			break;
		}
		report_tick(&rep);
	}
	/* a refill in progress stops; its sentinels stay missing, so the
	 * next run refills again. Asked now, joined after the drain: its
	 * exchanges with a silent server (2-5 s) must not come before the
	 * drain's deadline (issue 23, item 9) */
	k2mc_refill_request_stop(refill);
	draining = 1;
	k2mc_notify_stopping("draining, then committing");
	if (got_signal)
		k2mc_info("%s: draining, then committing (a second signal stops at once)",
			  strsignal(got_signal));

	/* The committer stops first so the final commits are the synchronous
	 * ones, made after the drain. */
	k2mc_group_stop_committer(g);
	stopped = k2mc_now_ms();
	left = k2mc_group_release_all(g, stopped + cfg.shutdown_timeout_ms, abort_writers, ws);
	k2mc_refill_stop(refill);
	if (rep.progress)
		k2mc_log_status(NULL);
	summary(g, ws, cfg.writers, left, stopped);
	report_final(&rep);
out:
	/* before the partition table it reads is freed */
	k2mc_refill_free(refill);
	k2mc_metrics_stop(rep.metrics);
	k2mc_group_stop_committer(g);
	if (ws != NULL)
		k2mc_writers_stop(ws);
	signal_writers = NULL;
	k2mc_group_close(g, (stopped ? stopped + cfg.shutdown_timeout_ms : k2mc_now_ms()) +
				    CLOSE_GRACE_MS);
	k2mc_writers_free(ws);
	/* after every consumer (group_close) and writer that rang them */
	park_array_free(bells);
	k2mc_refill_filter_free(refill_filter);
	k2mc_mapping_free(map);
	/* after every context made from it (consumers, writers) */
	k2mc_decoder_free(dec);
	/* after the group freed the partitions, which gave their bytes back */
	k2mc_budget_free(budget);
	k2mc_fence_free(fence);
	k2mc_snapshot_free(&rep.snap);
	if (rep.json != NULL && rep.json != stdout)
		fclose(rep.json);
	k2mc_config_free(&cfg);
	return rc;
}
