/* Integration suite for what operators see: the metrics endpoint scraped
 * while k2mc runs and checked against what was produced and what Kafka holds,
 * readiness, --stats-json, the -e progress line on a terminal and the summary
 * table, regex subscriptions, --dump-config through the real binary,
 * Memcached states named as they are (out of memory, an idle close), and
 * with one of two servers down: the errors per server and kind, the counter
 * table (stats.h) in the stats line, --stats-json and /metrics, the process
 * metrics and build info through Prometheus' own parser, and the Grafana
 * dashboard's queries against the scrape (tests/metrics_check.py).
 * Servers per test on loopback, as in test_pipeline.c; not a benchmark.
 * Binaries come from K2MC_BIN, K2MC_TSAN_BIN, K2MC_MOCK. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/stats.h"
#include "workers/mapping.h"
#include "world.h"

#define TEST_TIMEOUT_S 120

static struct world W;

WORLD_SUITE(metrics, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

/* A topic's name as k2mc and Kafka know it (world_name) */
#define T(base) world_name(base)

static const char *tail_of(const char *path)
{
	return h_tail_of(path, 20);
}

/* memcached (with mc_extra arguments, or none), and a mock whose first
 * topic gets `records` records. topics: "--topic" values, NULL-terminated. */
static void start_world_mc(const char *const topics[], const char *records, const char *seed,
			   const char *const mc_extra[])
{
	const char *colon = strrchr(topics[0], ':');
	char first[64];

	cr_assert_not_null(colon);
	snprintf(first, sizeof(first), "%.*s", (int)(colon - topics[0]), topics[0]);
	world_start(&W, &(struct world_opts){ .topic = first, .parts = atoi(colon + 1),
					      .topics = topics + 1,
					      .records = strtoull(records, NULL, 10), .keys = 2000,
					      .tombstones = 5, .seed = seed, .mc_args = mc_extra });
	world_wait_produced(&W, strtoull(records, NULL, 10), 60000);
}

static void start_world(const char *const topics[], const char *records, const char *seed)
{
	start_world_mc(topics, records, seed, NULL);
}

/* ---- Prometheus text ------------------------------------------------------------ */

/* The value of one series, written as k2mc writes it ("name{l=\"v\"}"), or
 * NAN when it is not there. */
static double sample(const char *text, const char *series)
{
	size_t sl = strlen(series);

	for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (strncmp(p, series, sl) == 0 && p[sl] == ' ')
			return strtod(p + sl + 1, NULL);
	return NAN;
}

/* Sum and number of the samples of a metric (every label set). */
static double sum_of(const char *text, const char *name, int *count)
{
	size_t nl = strlen(name);
	double sum = 0;

	*count = 0;
	for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		const char *sp;

		if (strncmp(p, name, nl) != 0 || (p[nl] != '{' && p[nl] != ' '))
			continue;
		sp = strchr(p, ' ');
		sum += strtod(sp + 1, NULL);
		(*count)++;
	}
	return sum;
}

static double part_sample(const char *text, const char *name, const char *topic, int p)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{topic=\"%s\",partition=\"%d\"}", name, topic, p);
	return sample(text, series);
}

static void kafka_end_offsets(const char *topic, int parts, int64_t *end)
{
	char err[256];
	struct h_kafka *k = h_kafka_open(W.bootstrap, NULL, err, sizeof(err));
	int rc;

	cr_assert_not_null(k, "kafka handle: %s", err);
	rc = h_kafka_end_offsets(k, topic, parts, end, 5000);
	cr_assert_eq(rc, 0, "end offsets of %s: %s", topic, strerror(-rc));
	h_kafka_close(k);
}

/* Scrapes until every partition of topic is consumed and committed up to its
 * end offset; returns the last scrape (malloc'd). */
static char *scrape_until_caught_up(struct h_proc *k, int port, const char *topic, int parts,
				    const int64_t *end, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	char *text = NULL, st[96];
	int status, n;

	for (;;) {
		int ok = 1;

		free(text);
		if (h_exited(k->pid, &status) == 1)
			cr_assert_fail("k2mc ended (%s); stderr:\n%s",
				       h_status_str(status, st, sizeof(st)), tail_of(k->err_path));
		text = world_http_get(port, "/metrics", &status, NULL, 0);
		if (text != NULL && status == 200) {
			ok = sum_of(text, "k2mc_records_consumed_total", &n) == (double)W.produced;
			for (int p = 0; ok && p < parts; p++)
				ok = part_sample(text, "k2mc_committed_offset", topic, p) ==
				     (double)end[p];
			if (ok)
				return text;
		}
		if (h_now_ms() >= deadline)
			break;
		usleep(200 * 1000);
	}
	cr_assert_fail("metrics did not reach consumed == %" PRIu64 " and committed == end within "
		       "%d ms; last scrape:\n%.3000s\nk2mc stderr:\n%s",
		       W.produced, timeout_ms, text ? text : "(none)", tail_of(k->err_path));
	return NULL;
}

static void start_k2mc(struct h_proc *k, const struct h_k2mc_opts *o, const char *const args[])
{
	int rc = h_k2mc_start(k, o, args);

	cr_assert_eq(rc, 0, "cannot start k2mc: %s", strerror(-rc));
}

static void stop_k2mc_expect_0(struct h_proc *k, const char *what)
{
	char st[96];
	int status;

	cr_assert_eq(h_signal(k->pid, SIGTERM), 0);
	cr_assert_eq(h_wait(k->pid, 20000, &status), 0, "%s: still running 20 s after SIGTERM",
		     what);
	cr_assert_eq(h_exit_code(status), 0, "%s ended with %s; stderr:\n%s", what,
		     h_status_str(status, st, sizeof(st)), tail_of(k->err_path));
}

/* ---- the endpoint against what was produced -------------------------------------- */

#define PARTS 4

Test(metrics, scrape_matches_what_was_produced_and_committed)
{
	static const char *const topics[] = { "events:4", NULL };
	char port_s[16], json[H_PATH_MAX], type[128], rowp[200];
	int64_t end[PARTS];
	struct h_proc k;
	struct h_summary s;
	struct h_verify v;
	char *text, *body, *log, *row;
	int port = h_free_port(), status, n, rows = 0;
	double bucket_prev = 0;
	uint64_t table_sum = 0;

	start_world(topics, "20000", "71");
	kafka_end_offsets(T("events"), PARTS, end);
	cr_assert_eq(h_offsets_sum(end, PARTS), (int64_t)W.produced);
	snprintf(port_s, sizeof(port_s), "%d", port);
	h_tmppath(json, sizeof(json), "stats.json");
	{
		const char *args[] = { "-b", W.mock.bootstrap, "-t", T("events"), "-G", "metrics",
				       "-m", W.mc_addr, "--writers", "3", "--stats-interval-ms",
				       "300", "--metrics-addr", port_s, "--stats-json", json, NULL };

		start_k2mc(&k, NULL, args);
	}
	text = scrape_until_caught_up(&k, port, T("events"), PARTS, end, 40000);

	/* counters against the producer */
	cr_expect_eq(sample(text, "k2mc_records_written_total") +
			     sample(text, "k2mc_records_deleted_total") +
			     sample(text, "k2mc_records_coalesced_total"),
		     (double)W.produced, "written + deleted + coalesced != produced:\n%s", text);
	cr_expect_eq(sum_of(text, "k2mc_records_invalid_total", &n), 0);
	cr_expect_eq(n, K2MC_MAP_NREASONS - 1, "one series per reason (enum k2mc_map_reason)");
	cr_expect_eq(sample(text, "k2mc_records_invalid_total{reason=\"key_too_long\"}"), 0);
	cr_expect_eq(sample(text, "k2mc_written_bytes_total"),
		     100.0 * sample(text, "k2mc_records_written_total"), "100-byte values");
	cr_expect_eq(sum_of(text, "k2mc_memcached_errors_total", &n), 0);
	cr_expect_eq(n, 4, "one series per kind of the one server:\n%s", text);
	/* nothing refused, the membership lease held, nothing fenced for long */
	cr_expect_eq(sample(text, "k2mc_records_invalidated_total"), 0, "%s", text);
	cr_expect_eq(sample(text, "k2mc_fence_held"), 1, "%s", text);
	cr_expect_geq(sample(text, "k2mc_fence_waits_total"), 0, "no k2mc_fence_waits_total");
	cr_expect_eq(sample(text, "k2mc_writer_alloc_failures_total"), 0);
	cr_expect_not_null(strstr(text, "# TYPE k2mc_fence_held gauge\n"));
	/* per partition: consumed == end offset (the group started at 0), lag 0 */
	for (int p = 0; p < PARTS; p++) {
		cr_expect_eq(part_sample(text, "k2mc_records_consumed_total", T("events"), p),
			     (double)end[p], "partition %d", p);
		cr_expect_eq(part_sample(text, "k2mc_end_offset", T("events"), p), (double)end[p]);
		cr_expect_eq(part_sample(text, "k2mc_consumer_lag", T("events"), p), 0);
	}
	cr_expect_eq(sample(text, "k2mc_partitions_assigned"), PARTS);
	{
		char series[128];

		snprintf(series, sizeof(series), "k2mc_memcached_server_up{server=\"%s\"}", W.mc_addr);
		cr_expect_eq(sample(text, series), 1, "%s", series);
	}
	sum_of(text, "k2mc_ring_fill_ratio", &n);
	cr_expect_eq(n, 3, "one ring fill ratio per writer");
	cr_expect_eq(sample(text, "k2mc_ring_fill_ratio{writer=\"2\"}"), 0);
	/* the histogram: cumulative, and every record in it */
	cr_expect_eq(sample(text, "k2mc_e2e_latency_seconds_count"), (double)W.produced);
	cr_expect_eq(sample(text, "k2mc_e2e_latency_seconds_bucket{le=\"+Inf\"}"),
		     (double)W.produced);
	for (const char *p = strstr(text, "k2mc_e2e_latency_seconds_bucket{"); p != NULL;
	     p = strstr(p + 1, "k2mc_e2e_latency_seconds_bucket{")) {
		double b = strtod(strchr(p, ' ') + 1, NULL);

		cr_expect_geq(b, bucket_prev, "buckets must be cumulative:\n%s", text);
		bucket_prev = b;
	}
	cr_expect_not_null(strstr(text, "# TYPE k2mc_e2e_latency_seconds histogram\n"));
	cr_expect_not_null(strstr(text, "# TYPE k2mc_records_consumed_total counter\n"));
	free(text);

	/* content type, health, readiness, unknown paths */
	body = world_http_get(port, "/metrics", &status, type, sizeof(type));
	cr_expect_str_eq(type, "text/plain; version=0.0.4; charset=utf-8");
	free(body);
	body = world_http_get(port, "/healthz", &status, NULL, 0);
	cr_expect_eq(status, 200);
	cr_expect_str_eq(body ? body : "", "ok\n");
	free(body);
	body = world_http_get(port, "/readyz", &status, NULL, 0);
	cr_expect_eq(status, 200, "%s", body);
	cr_expect_str_eq(body ? body : "", "ready\n");
	free(body);
	body = world_http_get(port, "/healthz?ready", &status, NULL, 0);
	cr_expect_eq(status, 200, "%s", body);
	cr_expect_str_eq(body ? body : "", "ready\n");
	free(body);
	body = world_http_get(port, "/nope", &status, NULL, 0);
	cr_expect_eq(status, 404);
	free(body);

	stop_k2mc_expect_0(&k, "k2mc with --metrics-addr");
	cr_assert_eq(h_summary_parse(k.err_path, &s), 0, "no summary:\n%s", tail_of(k.err_path));
	cr_expect_eq(s.consumed, W.produced);
	for (int p = 0; p < PARTS; p++)
		cr_expect_eq(h_summary_committed(&s, T("events"), p), end[p]);
	cr_assert_eq(h_verify_memcached(W.expect, "127.0.0.1", W.mc[0].port, NULL, &v), 0, "%s",
		     v.first);
	cr_expect_eq(h_verify_mismatches(&v), 0, "cache differs:\n%s", v.first);

	/* not a terminal: plain stats lines, and the table after the summary */
	log = h_file_read(k.err_path, NULL);
	cr_assert_not_null(log);
	cr_expect_not_null(strstr(log, " k2mc INFO: in "), "no stats line:\n%s", tail_of(k.err_path));
	cr_expect_null(strstr(log, "progress"), "a progress line without a terminal");
	row = strstr(log, "k2mc: per partition:\n");
	cr_assert_not_null(row, "no table after the summary:\n%s", tail_of(k.err_path));
	row = strchr(row, '\n') + 1;
	cr_expect(strncmp(row, "  topic ", 8) == 0, "table header: %.60s", row);
	snprintf(rowp, sizeof(rowp), "  %s ", T("events"));
	for (row = strchr(row, '\n') + 1; strncmp(row, rowp, strlen(rowp)) == 0;
	     row = strchr(row, '\n') + 1) {
		int p;
		unsigned long long consumed;
		long long committed;

		cr_assert_eq(sscanf(row + strlen(rowp), "%d %llu %lld", &p, &consumed, &committed), 3,
			     "table row: %.80s", row);
		cr_assert(p >= 0 && p < PARTS);
		cr_expect_eq((int64_t)consumed, end[p], "table: partition %d consumed", p);
		cr_expect_eq(committed, end[p], "table: partition %d committed", p);
		table_sum += consumed;
		rows++;
	}
	cr_expect_eq(rows, PARTS, "table rows");
	cr_expect_eq(table_sum, W.produced);
	free(log);

	/* one JSON object per stats interval, the last marked final */
	log = h_file_read(json, NULL);
	cr_assert_not_null(log, "no --stats-json file");
	n = 0;
	for (char *l = log, *nl; (nl = strchr(l, '\n')) != NULL; l = nl + 1, n++)
		cr_expect(l[0] == '{' && nl[-1] == '}', "not a JSON object per line: %.80s", l);
	cr_expect_geq(n, 2, "JSON lines: %d", n);
	row = strstr(log, "\"final\":true");
	cr_assert_not_null(row, "no final object");
	cr_expect_str_eq(strchr(row, '\n') + 1, "", "the final object is not the last");
	{
		char want[256];

		snprintf(want, sizeof(want), "\"consumed\":%" PRIu64 ",", W.produced);
		cr_expect_not_null(strstr(row, want), "final object lacks %s: %.300s", want, row);
		snprintf(want, sizeof(want), "{\"topic\":\"%s\",\"partition\":0,", T("events"));
		cr_expect_not_null(strstr(row, want), "%.600s", row);
	}
	free(log);
}

/* ---- readiness --------------------------------------------------------------------- */

/* Polls path until it answers want_status with a body containing needle. */
static void wait_answer(struct h_proc *k, int port, const char *path, int want_status,
			const char *needle, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	char last[256] = "(no answer)";
	int status = -1;

	for (;;) {
		char *body = world_http_get(port, path, &status, NULL, 0);

		if (body != NULL) {
			snprintf(last, sizeof(last), "%d %s", status, body);
			free(body);
			if (status == want_status && strstr(last, needle) != NULL)
				return;
		}
		if (h_now_ms() >= deadline || h_exited(k->pid, NULL) == 1)
			break;
		usleep(100 * 1000);
	}
	cr_assert_fail("%s never answered %d '%s' within %d ms; last: %s; stderr:\n%s", path,
		       want_status, needle, timeout_ms, last, tail_of(k->err_path));
}

Test(metrics, readiness_names_what_is_missing)
{
	static const char *const topics[] = { "events:2", NULL };
	char pa[16], pb[16], dead[64], series[128], want[128];
	struct h_proc a, b;
	int porta = h_free_port(), portb = h_free_port(), status;
	char *text;

	start_world(topics, "500", "72");
	snprintf(pa, sizeof(pa), "%d", porta);
	snprintf(pb, sizeof(pb), "%d", portb);
	/* nobody listens there: the writers find it down */
	snprintf(dead, sizeof(dead), "127.0.0.1:%d", h_free_port());
	{
		/* a pattern no topic matches: joined, never assigned */
		const char *args[] = { "-b", W.mock.bootstrap, "-t", "^nomatch\\..*", "-G", "ready-a",
				       "-m", W.mc_addr, "--metrics-addr", pa, NULL };

		start_k2mc(&a, NULL, args);
	}
	{
		const char *args[] = { "-b", W.mock.bootstrap, "-t", T("events"), "-G", "ready-b", "-m",
				       dead, "--metrics-addr", pb, "--shutdown-timeout-ms", "500",
				       NULL };

		start_k2mc(&b, NULL, args);
	}
	wait_answer(&a, porta, "/readyz", 503, "not ready: no partitions assigned", 10000);
	wait_answer(&a, porta, "/healthz?ready", 503, "no partitions assigned", 5000);
	wait_answer(&a, porta, "/healthz", 200, "ok", 5000);
	/* librdkafka reports the empty match after a metadata answer of its
	 * own, which may come after /readyz first answers */
	cr_expect(h_wait_line(a.err_path, "no topic matches yet; waiting for one", NULL, a.pid,
			      15000, NULL, 0) == 0,
		  "%s", tail_of(a.err_path));
	snprintf(want, sizeof(want), "not ready: memcached %s not answering", dead);
	wait_answer(&b, portb, "/readyz", 503, want, 20000);
	wait_answer(&b, portb, "/healthz", 200, "ok", 5000);
	text = world_http_get(portb, "/metrics", &status, NULL, 0);
	cr_assert_not_null(text);
	snprintf(series, sizeof(series), "k2mc_memcached_server_up{server=\"%s\"}", dead);
	cr_expect_eq(sample(text, series), 0, "%s in:\n%.2000s", series, text);
	cr_expect_eq(sample(text, "k2mc_partitions_assigned"), 2);
	free(text);
	stop_k2mc_expect_0(&a, "k2mc with no partitions");
	h_stop(b.pid, 20000);
}

/* ---- regex subscription ---------------------------------------------------------- */

/* A second producer into the running mock cluster (k2mc-mock -b). */
static void produce_into(struct h_mock *mk, const char *topic, const char *records)
{
	uint64_t acked = 0;
	const char *args[] = { "-b",	 W.mock.bootstrap, "--topic", topic, "--produce", records,
			       "--keys", "500",		   "--exit-after-produce", NULL };
	int rc = h_mock_start(mk, args, 0, 15000);

	cr_assert_eq(rc, 0, "k2mc-mock -b: %s\n%s", strerror(-rc), tail_of(mk->proc.err_path));
	rc = h_mock_wait_produced(mk, 30000, &acked);
	cr_assert_eq(rc, 0, "producing to %s: %s\n%s", topic, strerror(-rc),
		     tail_of(mk->proc.err_path));
	cr_assert_eq(acked, strtoull(records, NULL, 10));
}

Test(metrics, regex_subscription_takes_matching_topics_only)
{
	static const char *const topics[] = { "events.a:2", "events.b:2", "other:2", "eventsXc:1",
					       NULL };
	int64_t end_a[2], end_b[2], other[2];
	struct h_mock m2, m3, m4;
	struct h_proc k;
	struct h_summary s;
	struct h_kafka *kh;
	char err[256], st[96], regex[256];
	int status, rc;

	start_world(topics, "3000", "73"); /* into events.a */
	produce_into(&m2, T("events.b"), "2000");
	produce_into(&m3, T("other"), "1000");
	produce_into(&m4, T("eventsXc"), "700"); /* '.' is escaped: no match */
	/* on a real broker the topics of this world only: their names end
	 * with its tag */
	snprintf(regex, sizeof(regex), "^events\\..*%s%s", T(""),
		 W.backend == H_KAFKA_REAL ? "$" : "");
	{
		const char *args[] = { "-b", W.mock.bootstrap, "-t", regex, "-G", "regex",
				       "-m", W.mc_addr, "-e", NULL };

		start_k2mc(&k, NULL, args);
	}
	rc = h_wait(k.pid, 60000, &status);
	cr_assert_eq(rc, 0, "k2mc -e still running after 60 s; stderr:\n%s", tail_of(k.err_path));
	cr_assert_eq(h_exit_code(status), 0, "k2mc ended with %s; stderr:\n%s",
		     h_status_str(status, st, sizeof(st)), tail_of(k.err_path));
	cr_assert_eq(h_summary_parse(k.err_path, &s), 0, "%s", tail_of(k.err_path));
	cr_expect_eq(s.consumed, 5000, "consumed %" PRIu64 ", events.a + events.b hold 5000",
		     s.consumed);
	cr_expect_eq(s.ncommitted, 4, "summary lists %d partitions:\n%s", s.ncommitted,
		     tail_of(k.err_path));
	kafka_end_offsets(T("events.a"), 2, end_a);
	kafka_end_offsets(T("events.b"), 2, end_b);
	for (int p = 0; p < 2; p++) {
		cr_expect_eq(h_summary_committed(&s, T("events.a"), p), end_a[p], "events.a [%d]", p);
		cr_expect_eq(h_summary_committed(&s, T("events.b"), p), end_b[p], "events.b [%d]", p);
		cr_expect_eq(h_summary_committed(&s, T("other"), p), -1, "other [%d] consumed", p);
	}
	cr_expect_eq(h_summary_committed(&s, T("eventsXc"), 0), -1, "eventsXc consumed");
	kh = h_kafka_open(W.mock.bootstrap, "regex", err, sizeof(err));
	cr_assert_not_null(kh, "%s", err);
	cr_assert_eq(h_kafka_committed(kh, T("other"), 2, other, 5000), 0);
	cr_expect(other[0] == -1 && other[1] == -1, "the group committed on 'other': %" PRId64
		  " %" PRId64, other[0], other[1]);
	h_kafka_close(kh);
}

/* ---- -e on a terminal ------------------------------------------------------------ */

Test(metrics, progress_line_on_a_terminal)
{
	static const char *const topics[] = { "events:2", NULL };
	char cmd[1024], st[96];
	struct h_proc k;
	int status, rc;
	char *out;

	/* Kafka 4.1.1: the group joins at once and -e ends within the first
	 * refresh of the line (1 s), so it is drawn once and never redrawn in
	 * place; the mock's join (about 3 s) gives it the redraws checked */
	world_skip_unless_mock("-e ends within one refresh of the progress line (1 s), which is "
			       "then drawn once, never erased in place");
	start_world(topics, "5000", "74");
	/* script(1) gives k2mc a pseudo-terminal and copies it to stdout */
	snprintf(cmd, sizeof(cmd),
		 "exec %s -b %s -t %s -G tty -m %s -e --stats-interval-ms 200",
		 h_bin("K2MC_BIN", "build/k2mc"), W.mock.bootstrap, T("events"), W.mc_addr);
	{
		const char *argv[] = { "script", "-qfec", cmd, "/dev/null", NULL };

		rc = h_spawn(&k, "script", argv, NULL);
		cr_assert_eq(rc, 0, "script: %s", strerror(-rc));
	}
	rc = h_wait(k.pid, 60000, &status);
	cr_assert_eq(rc, 0, "k2mc -e on a terminal still running after 60 s:\n%s",
		     tail_of(k.out_path));
	cr_assert_eq(h_exit_code(status), 0, "ended with %s:\n%s\n%s",
		     h_status_str(status, st, sizeof(st)), tail_of(k.out_path), tail_of(k.err_path));
	out = h_file_read(k.out_path, NULL);
	cr_assert_not_null(out);
	/* the final line starts fresh after a log line or overwrites the last
	 * progress line in place: either way it is there, whole */
	cr_expect_not_null(strstr(out, "progress 100.0% | 5000 of 5000 records | "),
			   "no final progress line:\n%s", out);
	cr_expect_not_null(strstr(out, "\r\033[K"), "the progress line is not erased in place");
	cr_expect_null(strstr(out, " INFO: in "), "stats lines on a terminal with -e:\n%s", out);
	cr_expect_not_null(strstr(out, "k2mc: summary: consumed 5000 "), "%s", out);
	cr_expect_not_null(strstr(out, "k2mc: per partition:"), "%s", out);
	/* a log line never shares a line with the progress line */
	for (char *p = strstr(out, " k2mc INFO: "); p != NULL; p = strstr(p + 1, " k2mc INFO: ")) {
		char *bol = p;

		while (bol > out && bol[-1] != '\n' && bol[-1] != '\r')
			bol--;
		cr_expect(strncmp(bol, "progress", 8) != 0, "log line glued to progress: %.120s", bol);
	}
	free(out);
}

/* ---- --dump-config through the binary -------------------------------------------- */

Test(metrics, dump_config_merges_sources_and_masks_secrets)
{
	static const char *const env[] = { "K2MC_GROUP=env-group", "K2MC_WRITERS=3", NULL };
	struct h_k2mc_opts o = { .env = env };
	char path[H_PATH_MAX], st[96];
	struct h_proc k;
	int status;
	char *out;
	FILE *f = fopen(h_tmppath(path, sizeof(path), "k2mc.conf"), "w");

	cr_assert_not_null(f);
	fputs("# test config\nbrokers=file:9092\ntopic=file-topic\nwriters=5\n"
	      "sasl.password=file-pass-123\nssl.key.password=key-pass-456\nsasl.username=loader\n",
	      f);
	fclose(f);
	{
		const char *args[] = { "-F", path, "-t", "cli-topic", "-X", "sasl.password=cli-pass-789",
				       "--dump-config", NULL };

		start_k2mc(&k, &o, args);
	}
	cr_assert_eq(h_wait(k.pid, 10000, &status), 0);
	cr_assert_eq(h_exit_code(status), 0, "--dump-config ended with %s:\n%s",
		     h_status_str(status, st, sizeof(st)), tail_of(k.err_path));
	out = h_file_read(k.out_path, NULL);
	cr_assert_not_null(out);
	cr_expect_null(strstr(out, "pass-"), "a password is printed:\n%s", out);
	cr_expect_not_null(strstr(out, "\nsasl.password=********\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nssl.key.password=********\n"), "%s", out);
	/* librdkafka marks the user name sensitive too (issue 23, item 5) */
	cr_expect_not_null(strstr(out, "\nsasl.username=********\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nbrokers=file:9092\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\ntopic=cli-topic\n"), "%s", out);
	cr_expect_null(strstr(out, "file-topic"), "%s", out);
	cr_expect_not_null(strstr(out, "\ngroup=env-group\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nwriters=5\n"), "the file beats the environment:\n%s", out);
	free(out);

	/* a bad file is a bad command line: exit 2, naming it */
	{
		const char *args[] = { "-F", "/nonexistent.conf", NULL };

		start_k2mc(&k, NULL, args);
	}
	cr_assert_eq(h_wait(k.pid, 10000, &status), 0);
	cr_expect_eq(h_exit_code(status), 2);
	cr_expect(h_file_contains(k.err_path, "k2mc: -F /nonexistent.conf: No such file"), "%s",
		  tail_of(k.err_path));
}

/* ---- the endpoint under ThreadSanitizer ------------------------------------------- */

Test(metrics, tsan_build_serves_metrics)
{
	static const char *const topics[] = { "events:2", NULL };
	static char preload[H_PATH_MAX + 16];
	const char *env[] = { "TSAN_OPTIONS=halt_on_error=1 exitcode=66", NULL, NULL };
	struct h_k2mc_opts o = { .bin = h_bin("K2MC_TSAN_BIN", "build/tsan/k2mc"),
				 .env = env,
				 .no_aslr = 1 };
	const char *pre = getenv("K2MC_TSAN_PRELOAD");
	char port_s[16];
	int64_t end[2];
	struct h_proc k;
	int port = h_free_port(), status;
	char *text;

	world_skip_unless_mock("the sanitizer builds run in make integration; make test-kafka "
			       "builds none");
	if (pre != NULL && pre[0] != '\0') {
		snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", pre);
		env[1] = preload;
	}
	start_world(topics, "4000", "75");
	kafka_end_offsets(T("events"), 2, end);
	snprintf(port_s, sizeof(port_s), "%d", port);
	{
		const char *args[] = { "-b", W.mock.bootstrap, "-t", T("events"), "-G", "tsan-metrics",
				       "-m", W.mc_addr, "--metrics-addr", port_s,
				       "--stats-interval-ms", "200", NULL };

		start_k2mc(&k, &o, args);
	}
	/* scraping while it runs is the point: publish and serve race here */
	text = scrape_until_caught_up(&k, port, T("events"), 2, end, 90000);
	free(text);
	for (int i = 0; i < 5; i++) {
		free(world_http_get(port, "/readyz", &status, NULL, 0));
		free(world_http_get(port, "/metrics", &status, NULL, 0));
	}
	cr_assert_eq(h_signal(k.pid, SIGTERM), 0);
	cr_assert_eq(h_wait(k.pid, 60000, &status), 0, "still running 60 s after SIGTERM");
	cr_assert(!h_file_contains(k.err_path, "WARNING: ThreadSanitizer"),
		  "ThreadSanitizer reported:\n%s", tail_of(k.err_path));
	cr_assert_eq(h_exit_code(status), 0, "ended with status %d:\n%s", h_exit_code(status),
		     tail_of(k.err_path));
}

/* ---- Memcached states named as they are ------------------------------------------- */

/* Fills memcached until it refuses every item size k2mc's records can
 * have: with -M it then answers "SERVER_ERROR out of memory storing object"
 * instead of evicting. */
static void fill_memcached(int port)
{
	memcached_st *memc = memcached_create(NULL);
	static char val[2048];
	int refused = 0;

	memset(val, 'f', sizeof(val));
	memcached_server_add(memc, "127.0.0.1", (in_port_t)port);
	for (size_t vs = 8; vs <= sizeof(val); vs += 8) {
		for (int i = 0; i < 1000000; i++) {
			char key[64];
			int kl = snprintf(key, sizeof(key), "fill-%zu-%d", vs, i);

			if (memcached_set(memc, key, (size_t)kl, val, vs, 0, 0) != MEMCACHED_SUCCESS) {
				refused++;
				break;
			}
		}
	}
	memcached_free(memc);
	cr_assert_gt(refused, 0, "memcached -M never refused a set");
}

/* Issue 8, section 7: memcached out of memory is "out of memory", in the
 * log and in /readyz, not "down" / "not answering"; the records are
 * retried and written once memory is free again. */
Test(metrics, out_of_memory_is_named_and_retried)
{
	static const char *const topics[] = { "events:2", NULL };
	static const char *const mc_args[] = { "-m", "2", "-M", "-I", "512k", NULL };
	char port_s[16], want[160], series[128];
	int64_t end[2];
	struct h_proc k;
	int port = h_free_port(), status, rc;
	char *text;

	start_world_mc(topics, "300", "76", mc_args);
	fill_memcached(W.mc[0].port);
	kafka_end_offsets(T("events"), 2, end);
	snprintf(port_s, sizeof(port_s), "%d", port);
	{
		const char *args[] = { "-b", W.mock.bootstrap, "-t", T("events"), "-G", "oom", "-m",
				       W.mc_addr, "--metrics-addr", port_s, "--shutdown-timeout-ms",
				       "1000", NULL };

		start_k2mc(&k, NULL, args);
	}
	snprintf(want, sizeof(want), "not ready: memcached %s out of memory", W.mc_addr);
	wait_answer(&k, port, "/readyz", 503, want, 20000);
	snprintf(want, sizeof(want), "memcached %s: out of memory \\(SERVER_ERROR out of memory[^)]*\\); "
		 "retrying", W.mc_addr);
	rc = h_wait_line(k.err_path, want, NULL, k.pid, 5000, NULL, 0);
	cr_expect_eq(rc, 0, "no out-of-memory line; stderr:\n%s", tail_of(k.err_path));
	snprintf(want, sizeof(want), "memcached %s: down", W.mc_addr);
	cr_expect(!h_file_contains(k.err_path, want), "out of memory reported as down:\n%s",
		  tail_of(k.err_path));
	text = world_http_get(port, "/metrics", &status, NULL, 0);
	cr_assert_not_null(text);
	snprintf(series, sizeof(series), "k2mc_memcached_server_up{server=\"%s\"}", W.mc_addr);
	cr_expect_eq(sample(text, series), 0, "%s in:\n%.2000s", series, text);
	cr_expect_eq(sample(text, "k2mc_records_written_total"), 0);
	free(text);

	/* memory back: the same records go in, and it is ready */
	{
		memcached_st *memc = memcached_create(NULL);

		memcached_server_add(memc, "127.0.0.1", (in_port_t)W.mc[0].port);
		cr_assert_eq(memcached_flush(memc, 0), MEMCACHED_SUCCESS);
		memcached_free(memc);
	}
	text = scrape_until_caught_up(&k, port, T("events"), 2, end, 30000);
	free(text);
	wait_answer(&k, port, "/readyz", 200, "ready", 10000);
	cr_expect(h_file_contains(k.err_path, "back, writing again"), "%s", tail_of(k.err_path));
	stop_k2mc_expect_0(&k, "k2mc after out of memory");
}

/* Issue 8, section 7: a connection memcached closes while idle
 * (-o idle_timeout) is remade quietly: no "down", no "back", no error. */
Test(metrics, idle_close_is_not_an_outage)
{
	static const char *const topics[] = { "events:1", NULL };
	static const char *const mc_args[] = { "-o", "idle_timeout=2", NULL };
	char port_s[16];
	int64_t end[1];
	struct h_mock m2;
	struct h_proc k;
	int port = h_free_port();
	int64_t deadline;
	char *text;

	start_world_mc(topics, "200", "77", mc_args);
	kafka_end_offsets(T("events"), 1, end);
	snprintf(port_s, sizeof(port_s), "%d", port);
	{
		const char *args[] = { "-b", W.mock.bootstrap, "-t", T("events"), "-G", "idle", "-m",
				       W.mc_addr, "--writers", "1", "--metrics-addr", port_s, NULL };

		start_k2mc(&k, NULL, args);
	}
	text = scrape_until_caught_up(&k, port, T("events"), 1, end, 30000);
	free(text);
	/* memcached closes the writer's idle connection */
	deadline = h_now_ms() + 15000;
	while (world_mc_stat(W.mc[0].port, NULL, "idle_kicks") < 1 && h_now_ms() < deadline)
		usleep(200 * 1000);
	cr_assert_geq(world_mc_stat(W.mc[0].port, NULL, "idle_kicks"), 1, "memcached kicked no idle "
		      "connection");
	/* more records, on a connection that must be remade */
	produce_into(&m2, T("events"), "300");
	W.produced += 300;
	kafka_end_offsets(T("events"), 1, end);
	text = scrape_until_caught_up(&k, port, T("events"), 1, end, 30000);
	{
		int n;

		cr_expect_eq(sum_of(text, "k2mc_memcached_errors_total", &n), 0, "%s", text);
	}
	free(text);
	cr_expect(!h_file_contains(k.err_path, ": down ("), "an idle close reported as down:\n%s",
		  tail_of(k.err_path));
	cr_expect(!h_file_contains(k.err_path, "back, writing again"), "%s", tail_of(k.err_path));
	stop_k2mc_expect_0(&k, "k2mc after an idle close");
}

/* ---- one of two servers down: every view of the counters ------------------------ */

/* The number after "\"key\":" in a JSON line, or -1. */
static int64_t json_num(const char *line, const char *key)
{
	char pat[96];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(line, pat);
	return p != NULL && isdigit((unsigned char)p[strlen(pat)]) ? strtoll(p + strlen(pat), NULL, 10)
								    : -1;
}

/* The last complete line of path that contains needle (malloc'd), or NULL. */
static char *last_line_with(const char *path, const char *needle)
{
	char *all = h_file_read(path, NULL), *found = NULL, *line;

	if (all == NULL)
		return NULL;
	for (line = all; *line != '\0';) {
		char *nl = strchr(line, '\n');

		if (nl == NULL)
			break;
		*nl = '\0';
		if (strstr(line, needle) != NULL)
			found = line;
		line = nl + 1;
	}
	found = found ? strdup(found) : NULL;
	free(all);
	return found;
}

/* A table row's number as /metrics says it: the sample, or the sum of the
 * family's samples when it has labels. */
static double metric_value(const char *text, size_t row)
{
	int n;

	return k2mc_stat_defs[row].by == K2MC_BY_NONE ? sample(text, k2mc_stat_defs[row].metric)
						      : sum_of(text, k2mc_stat_defs[row].metric, &n);
}

static int metrics_check(const char *args)
{
	char cmd[4 * H_PATH_MAX];

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 tests/metrics_check.py %s", args);
	return system(cmd);
}

Test(metrics, one_server_down_errors_by_server_and_every_view)
{
	static const char *const topics[] = { "events:4", NULL };
	static const char *const kinds[] = { "refused", "timeout", "connection", "error_reply" };
	char port_s[16], json[H_PATH_MAX], scrape[H_PATH_MAX], servers[160], dead[64];
	char series[256], args[3 * H_PATH_MAX];
	int64_t end[PARTS], deadline;
	struct h_proc k;
	int port = h_free_port(), status, n, agree = 0;
	char *text = NULL, *line = NULL, *jline = NULL;
	FILE *f;

	start_world(topics, "8000", "78");
	kafka_end_offsets(T("events"), PARTS, end);
	snprintf(port_s, sizeof(port_s), "%d", port);
	/* nobody listens on the second: refused, and --mc-eject sends its keys
	 * to the first after two failed attempts */
	snprintf(dead, sizeof(dead), "127.0.0.1:%d", h_free_port());
	snprintf(servers, sizeof(servers), "%s,%s", W.mc_addr, dead);
	h_tmppath(json, sizeof(json), "stats.json");
	{
		const char *a[] = { "-b", W.mock.bootstrap, "-t", T("events"), "-G", "one-down", "-m",
				    servers, "--mc-eject", "--writers", "2", "--stats-interval-ms", "300",
				    "--metrics-addr", port_s, "--stats-json", json, NULL };

		start_k2mc(&k, NULL, a);
	}
	free(scrape_until_caught_up(&k, port, T("events"), PARTS, end, 60000));

	/* Caught up, nothing moves but the clock: the stats line, the last JSON
	 * object and a scrape agree on every row of the counter table (each is
	 * refreshed within a second; a few tries cover the offsets between). */
	deadline = h_now_ms() + 15000;
	while (!agree && h_now_ms() < deadline) {
		usleep(1200 * 1000);
		free(text);
		free(line);
		free(jline);
		text = world_http_get(port, "/metrics", &status, NULL, 0);
		line = last_line_with(k.err_path, " k2mc INFO: in ");
		jline = last_line_with(json, "\"ts_ms\"");
		cr_assert(text != NULL && line != NULL && jline != NULL, "a view is missing:\n%s",
			  tail_of(k.err_path));
		agree = 1;
		for (size_t i = 0; i < k2mc_nstat_defs && agree; i++)
			agree = metric_value(text, i) == (double)json_num(jline, k2mc_stat_defs[i].key);
	}
	for (size_t i = 0; i < k2mc_nstat_defs; i++) {
		const struct k2mc_stat_def *d = &k2mc_stat_defs[i];
		char word[96];
		const char *p;

		snprintf(series, sizeof(series), "# TYPE %s %s\n", d->metric,
			 d->type == K2MC_COUNTER ? "counter" : "gauge");
		cr_expect_not_null(strstr(text, series), "/metrics lacks %s", series);
		cr_expect_geq(json_num(jline, d->key), 0, "--stats-json lacks \"%s\": %s", d->key,
			      jline);
		cr_expect_eq(metric_value(text, i), (double)json_num(jline, d->key),
			     "%s: /metrics %g, --stats-json %" PRId64, d->metric, metric_value(text, i),
			     json_num(jline, d->key));
		snprintf(word, sizeof(word), " %s ", k2mc_stat_line_label(i));
		p = strstr(line, word);
		cr_expect(p != NULL && isdigit((unsigned char)p[strlen(word)]),
			  "the stats line lacks \"%s<number>\": %s", word, line);
	}
	cr_expect_eq(json_num(jline, "consumed"), (int64_t)W.produced);

	/* errors per server and kind: the dead one refused, the live one none */
	for (int e = 0; e < 4; e++) {
		snprintf(series, sizeof(series),
			 "k2mc_memcached_errors_total{server=\"%s\",kind=\"%s\"}", W.mc_addr, kinds[e]);
		cr_expect_eq(sample(text, series), 0, "%s", series);
		snprintf(series, sizeof(series),
			 "k2mc_memcached_errors_total{server=\"%s\",kind=\"%s\"}", dead, kinds[e]);
		if (e == 0)
			cr_expect_geq(sample(text, series), 2, "%s:\n%s", series, text);
		else
			cr_expect_eq(sample(text, series), 0, "%s", series);
	}
	cr_expect_eq(sum_of(text, "k2mc_memcached_errors_total", &n), json_num(jline, "memcached_errors"));
	cr_expect_eq(n, 8, "two servers x four kinds");
	cr_expect_not_null(strstr(jline, "\"server\":\"127.0.0.1:"), "%s", jline);
	snprintf(series, sizeof(series), "k2mc_memcached_server_up{server=\"%s\"}", dead);
	cr_expect_eq(sample(text, series), 0, "%s", series);

	/* Prometheus' parser: process metrics, build info, no name collision,
	 * every family in docs/metrics.md's table; the dashboard's queries */
	h_tmppath(scrape, sizeof(scrape), "scrape.txt");
	f = fopen(scrape, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	snprintf(args, sizeof(args), "parse %s --readme docs/metrics.md", scrape);
	cr_expect_eq(metrics_check(args), 0, "metrics_check %s failed (reasons above)", args);
	snprintf(args, sizeof(args), "dashboard contrib/grafana/k2mc.json %s", scrape);
	cr_expect_eq(metrics_check(args), 0, "metrics_check %s failed (reasons above)", args);
	free(text);
	free(line);
	free(jline);
	stop_k2mc_expect_0(&k, "k2mc with one server down");
}

/* ---- slow clients (issue 23, item 4) ----------------------------------------------- */

/* A connection to 127.0.0.1:port from the loopback address src that has sent
 * a request line and no end of headers; -1 if it cannot connect. */
static int slow_open(int port, const char *src)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct sockaddr_in me = { .sin_family = AF_INET };
	static const char line[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n";
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	inet_pton(AF_INET, src, &me.sin_addr);
	if (bind(fd, (struct sockaddr *)&me, sizeof(me)) != 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    send(fd, line, sizeof(line) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(line) - 1)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One more header line; 0, or -1 once the server has closed the connection
 * (EOF or an error on the socket). */
static int slow_tick(int fd, int n)
{
	char hdr[64], junk[256];
	ssize_t r = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);

	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
		return -1;
	snprintf(hdr, sizeof(hdr), "X-Slow-%d: x\r\n", n);
	return send(fd, hdr, strlen(hdr), MSG_NOSIGNAL) == (ssize_t)strlen(hdr) ? 0 : -1;
}

/* The status of a GET whose one header has hdr_bytes bytes of value, or -1
 * if the server closed without an answer. */
static int big_header_status(int port, size_t hdr_bytes)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 5, 0 };
	char *req = malloc(hdr_bytes + 128), buf[512];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), status = -1;
	size_t len;
	ssize_t n;

	cr_assert(fd >= 0 && req != NULL);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	len = (size_t)sprintf(req, "GET /healthz HTTP/1.0\r\nX-Big: ");
	memset(req + len, 'a', hdr_bytes);
	len += hdr_bytes;
	len += (size_t)sprintf(req + len, "\r\n\r\n");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		/* the server may answer and close before it has read it all */
		(void)send(fd, req, len, MSG_NOSIGNAL);
		n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n > 0) {
			buf[n] = '\0';
			if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
				status = -1;
		}
	}
	close(fd);
	free(req);
	return status;
}

/* Slowloris: clients that send one header line every 3 s and never end their
 * request. 40 of them from the prober's own address (more than the 32
 * connections the endpoint used to allow), then 80 more from another
 * address (more than one address may hold): /healthz answers within a
 * second all along. A client that keeps sending is cut at the request
 * deadline (5 s) all the same; headers are bounded (16 KiB of connection
 * memory: 431); the refused connections' log lines are rate-limited. */
#define SLOW_A 40
#define SLOW_B 80
Test(metrics, slow_clients_do_not_take_healthz_down)
{
	static const char *const topics[] = { "events:1", NULL };
	int fds[SLOW_A + SLOW_B], port = h_free_port(), status, probes = 0, slow_probes = 0;
	int ticks = 0, drip = -1, nlog = 0;
	int64_t t0, next_tick, drip_since = 0, drip_cut_ms = -1, worst_ms = 0;
	char port_s[16], worst[160] = "", *log, *p;
	struct h_proc k;

	start_world(topics, "100", "73");
	snprintf(port_s, sizeof(port_s), "%d", port);
	{
		const char *args[] = { "-b", W.mock.bootstrap, "-t", T("events"), "-G", "slow",
				       "-m", W.mc_addr, "--metrics-addr", port_s, NULL };

		start_k2mc(&k, NULL, args);
	}
	wait_answer(&k, port, "/healthz", 200, "ok", 10000);
	cr_expect_eq(big_header_status(port, 20 * 1024), 431,
		     "a 20 KiB header must be refused (431)");
	cr_expect_eq(big_header_status(port, 1024), 200, "a 1 KiB header is fine");

	for (int i = 0; i < SLOW_A + SLOW_B; i++)
		fds[i] = i < SLOW_A ? slow_open(port, "127.0.0.1") : -1;
	t0 = h_now_ms();
	next_tick = t0 + 3000;
	while (h_now_ms() - t0 < 18000) {
		int64_t now = h_now_ms(), q0;
		char *body;

		if (now >= next_tick) {
			/* a slow client whose connection was closed comes back */
			ticks++;
			for (int i = 0; i < SLOW_A + SLOW_B; i++) {
				const char *src = i < SLOW_A ? "127.0.0.1" : "127.0.0.2";

				if (i >= SLOW_A && now - t0 < 6000)
					continue; /* the second wave starts at 6 s */
				if (fds[i] >= 0 && slow_tick(fds[i], ticks) != 0) {
					close(fds[i]);
					fds[i] = -1;
				}
				if (fds[i] < 0)
					fds[i] = slow_open(port, src);
			}
			next_tick += 3000;
		}
		/* one client that sends a line every 0.5 s: cut at the deadline */
		if (drip < 0 && drip_cut_ms < 0) {
			drip = slow_open(port, "127.0.0.3");
			drip_since = h_now_ms();
		} else if (drip >= 0 && slow_tick(drip, (int)(now / 500)) != 0) {
			drip_cut_ms = h_now_ms() - drip_since;
			close(drip);
			drip = -1;
		}
		q0 = h_now_ms();
		body = world_http_get(port, "/healthz", &status, NULL, 0);
		probes++;
		if (status != 200 || h_now_ms() - q0 > 1000) {
			slow_probes++;
			if (h_now_ms() - q0 >= worst_ms) {
				worst_ms = h_now_ms() - q0;
				snprintf(worst, sizeof(worst), "at %lld ms: status %d after %lld ms",
					 (long long)(q0 - t0), status, (long long)worst_ms);
			}
		}
		free(body);
		usleep(500 * 1000);
	}
	cr_expect_eq(slow_probes, 0, "%d of %d /healthz probes failed or took over 1 s; worst %s",
		     slow_probes, probes, worst);
	/* sooner than 4.5 s: it was refused, not served and cut */
	cr_expect(drip_cut_ms >= 4500 && drip_cut_ms <= 7000,
		  "a client sending a header line every 0.5 s must be served, then cut at the "
		  "5 s request deadline; cut after %lld ms (-1: never, in 18 s)",
		  (long long)drip_cut_ms);
	for (int i = 0; i < SLOW_A + SLOW_B; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (drip >= 0)
		close(drip);
	wait_answer(&k, port, "/healthz", 200, "ok", 2000);
	log = h_file_read(k.err_path, NULL);
	cr_assert_not_null(log);
	for (p = log; (p = strstr(p, "metrics endpoint:")) != NULL; p++)
		nlog++;
	cr_expect(nlog <= 4, "%d log lines from the metrics endpoint in 18 s (rate-limited: "
		  "at most one per 10 s, and the summary at the stop):\n%s", nlog,
		  tail_of(k.err_path));
	free(log);
	stop_k2mc_expect_0(&k, "k2mc under slow clients");
}
