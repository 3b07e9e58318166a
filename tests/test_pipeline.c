/* Integration suite: k2mc end to end between a k2mc-mock Kafka cluster and a
 * Debian memcached, both started per test on loopback. Checks the final cache
 * against the producer's expect file, committed offsets against end offsets,
 * crash (SIGKILL) and graceful (SIGTERM) restarts, the sanitizer builds, and
 * command-line errors. Not a benchmark: no assertion is about speed.
 * Binaries come from K2MC_BIN, K2MC_ASAN_BIN, K2MC_TSAN_BIN, K2MC_MOCK. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "world.h"

#define TOPIC "events"
/* every wait below has its own deadline; this only stops a wedged test */
#define TEST_TIMEOUT_S 150

static struct world W;

WORLD_SUITE(pipeline, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

/* Up to 40 lines of a file from the first line containing marker, for
 * sanitizer reports (their first lines say what and where). */
static const char *excerpt_from(const char *path, const char *marker)
{
	static char buf[6144];
	char *b = h_file_read(path, NULL), *p, *e;
	int lines = 0;

	buf[0] = '\0';
	if (b == NULL)
		return buf;
	p = strstr(b, marker);
	if (p != NULL) {
		while (p > b && p[-1] != '\n')
			p--;
		for (e = p; *e != '\0' && lines < 40; e++)
			if (*e == '\n')
				lines++;
		snprintf(buf, sizeof(buf), "%.*s", (int)(e - p), p);
	}
	free(b);
	return buf;
}

/* memcached + TOPIC of `parts` partitions, `records` records over `keys`
 * keys with 5% tombstones, 100-byte values, an expect file. rate NULL: as
 * fast as it can. */
static void start_world(int parts, uint64_t records, uint32_t keys, const char *rate,
			const char *seed)
{
	world_start(&W, &(struct world_opts){ .topic = TOPIC, .parts = parts, .records = records,
					      .keys = keys, .value_size = 100, .tombstones = 5,
					      .seed = seed, .rate = rate });
}

/* k2mc -b -t -G -m --stats-interval-ms 1000 [-e] extra... */
static void start_k2mc(struct h_proc *k, const struct h_k2mc_opts *o, const char *group, int eof,
		       const char *const extra[])
{
	static const char *const stats[] = { "--stats-interval-ms", "1000", NULL };

	world_k2mc_start(&W, k, &(struct world_k2mc){ .group = group, .eof = eof, .args = stats,
						      .args2 = extra, .run = o });
}

static void assert_counts_add_up(const struct h_summary *s, const char *what)
{
	world_assert_counts_add_up(s, what);
	cr_assert_eq(s->skipped, 0, "%s: %" PRIu64 " records skipped; every generated key is valid",
		     what, s->skipped);
}

static void assert_cache_equals_expect(const char *what)
{
	world_assert_cache(&W, NULL, 0, NULL, 1, what);
}

static void assert_committed_at_end(const char *group, const char *what)
{
	int64_t end_sum = world_assert_committed_at_end(&W, NULL, 0, group, what);

	cr_assert_eq(end_sum, (int64_t)W.produced, "%s: end offsets sum to %" PRId64
		     ", produced %" PRIu64, what, end_sum, W.produced);
}

/* (a) ---------------------------------------------------------------------*/

Test(pipeline, final_state_equals_expect)
{
	struct h_proc k;
	struct h_summary s;
	int64_t t0;

	start_world(8, 100000, 20000, NULL, "101");
	world_wait_produced(&W, 100000, 60000);
	t0 = h_now_ms();
	start_k2mc(&k, NULL, "final-state", 1, NULL);
	world_k2mc_finish(&k, 90000, "k2mc -e", &s);
	cr_log_info("k2mc -e over %" PRIu64 " records took %.1fs", W.produced, world_secs_since(t0));
	cr_assert_eq(s.consumed, W.produced, "consumed %" PRIu64 ", produced %" PRIu64, s.consumed,
		     W.produced);
	assert_counts_add_up(&s, "k2mc -e");
	assert_cache_equals_expect("after k2mc -e");
}

/* (b) ---------------------------------------------------------------------*/

Test(pipeline, committed_offsets_equal_end_offsets)
{
	int64_t end[H_MAX_PARTS];
	struct h_proc k;
	struct h_summary s;

	start_world(8, 50000, 20000, NULL, "202");
	world_wait_produced(&W, 50000, 60000);
	start_k2mc(&k, NULL, "commit-end", 1, NULL);
	world_k2mc_finish(&k, 90000, "k2mc -e", &s);
	assert_committed_at_end("commit-end", "after k2mc -e");

	/* what the summary reports is what Kafka has */
	world_offsets(&W, NULL, 0, "commit-end", NULL, end);
	cr_assert_eq(s.ncommitted, W.parts, "summary lists %d partitions, topic has %d",
		     s.ncommitted, W.parts);
	for (int p = 0; p < W.parts; p++)
		cr_assert_eq(h_summary_committed(&s, W.topic, p), end[p],
			     "summary says %s[%d]=%" PRId64 ", end offset %" PRId64, W.topic, p,
			     h_summary_committed(&s, W.topic, p), end[p]);
}

/* (c), (d) ------------------------------------------------------------------
 * Session timeout 6 s (the brokers' minimum) for both runs of a restart
 * test. After SIGKILL the old member never leaves, and the restart's join
 * waits for the coordinator to expire it. After a clean LeaveGroup the
 * librdkafka 2.0.2 mock still holds the emptied group in JOINING for
 * session.timeout.ms - 1 s (rd_kafka_mock_cgrp_rebalance) before it elects a
 * leader for the new member. With the default 45 s either costs ~45 s. */
static const char *const short_session[] = { "-X", "session.timeout.ms=6000", NULL };

Test(pipeline, sigkill_mid_run_then_restart_converges)
{
	int64_t committed[H_MAX_PARTS], end[H_MAX_PARTS], resume = 0;
	char st[96];
	struct h_proc k1, k2;
	struct h_summary s;
	int status = 0;
	double t_commit;
	int64_t t0;

	/* about 10 s of production: the kill lands while it is still going */
	start_world(8, 100000, 20000, "10000", "303");
	start_k2mc(&k1, NULL, "kill9", 0, short_session);
	t_commit = world_wait_first_commit(&W, &k1, "kill9", 30000);
	cr_log_info("first commit after %.1fs", t_commit);
	cr_assert(!h_file_exists(W.expect),
		  "production finished before the kill, so the kill was not mid-run; "
		  "produce more or slower");
	cr_assert_eq(h_signal(k1.pid, SIGKILL), 0);
	cr_assert_eq(h_wait(k1.pid, 5000, &status), 0, "k2mc did not die of SIGKILL");
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "k2mc ended with %s",
		  h_status_str(status, st, sizeof(st)));

	world_wait_produced(&W, 100000, 60000);
	/* read after production: any commit in flight at the kill has landed */
	world_offsets(&W, NULL, 0, "kill9", committed, end);
	for (int p = 0; p < W.parts; p++)
		resume += end[p] - (committed[p] > 0 ? committed[p] : 0);
	cr_log_info("after the kill: %" PRId64 " of %" PRIu64 " records committed",
		    (int64_t)W.produced - resume, W.produced);

	t0 = h_now_ms();
	start_k2mc(&k2, NULL, "kill9", 1, short_session);
	world_k2mc_finish(&k2, 90000, "restart with -e", &s);
	cr_log_info("restart with -e took %.1fs", world_secs_since(t0));
	cr_assert_eq((int64_t)s.consumed, resume,
		     "restart consumed %" PRIu64 " records; from the committed offsets to the end "
		     "there are %" PRId64,
		     s.consumed, resume);
	assert_counts_add_up(&s, "restart");
	assert_cache_equals_expect("after SIGKILL and restart");
	assert_committed_at_end("kill9", "after SIGKILL and restart");
}

/* (d) ---------------------------------------------------------------------*/

Test(pipeline, sigterm_drains_and_commits)
{
	int64_t committed[H_MAX_PARTS], sum = 0;
	char st[96], diff[512] = "";
	struct h_proc k1, k2;
	struct h_summary s1, s2;
	int64_t t0;
	int status = 0, d = 0;

	start_world(8, 100000, 20000, "10000", "404");
	start_k2mc(&k1, NULL, "sigterm", 0, short_session);
	world_wait_first_commit(&W, &k1, "sigterm", 30000);
	cr_assert(!h_file_exists(W.expect),
		  "production finished before SIGTERM, so it was not mid-run; produce more or slower");
	cr_assert_eq(h_signal(k1.pid, SIGTERM), 0);
	t0 = h_now_ms();
	cr_assert_eq(h_wait(k1.pid, 10000, &status), 0,
		     "k2mc still running 10 s after SIGTERM; stderr:\n%s", world_tail(k1.err_path));
	cr_log_info("SIGTERM to exit: %.2fs", world_secs_since(t0));
	cr_assert_eq(h_exit_code(status), 0, "k2mc ended with %s after SIGTERM; stderr:\n%s",
		     h_status_str(status, st, sizeof(st)), world_tail(k1.err_path));
	cr_assert_eq(h_summary_parse(k1.err_path, &s1), 0, "no summary; stderr:\n%s",
		     world_tail(k1.err_path));
	assert_counts_add_up(&s1, "after SIGTERM");

	/* the summary's offsets are the group's offsets */
	world_offsets(&W, NULL, 0, "sigterm", committed, NULL);
	for (int p = 0; p < W.parts; p++) {
		int64_t printed = h_summary_committed(&s1, W.topic, p);

		if (printed != committed[p] && d++ < 4)
			snprintf(diff + strlen(diff), sizeof(diff) - strlen(diff),
				 "%s[%d]: summary %" PRId64 " kafka %" PRId64 "; ", W.topic, p, printed,
				 committed[p]);
		sum += printed > 0 ? printed : 0;
	}
	cr_assert_eq(d, 0, "%d partitions differ between the summary and Kafka: %s", d, diff);
	/* drained: every consumed record was written and committed (the group
	 * started at offset 0) */
	cr_assert_eq(sum, (int64_t)s1.consumed,
		     "committed offsets sum to %" PRId64 " but %" PRIu64 " records were consumed",
		     sum, s1.consumed);

	world_wait_produced(&W, 100000, 60000);
	t0 = h_now_ms();
	start_k2mc(&k2, NULL, "sigterm", 1, short_session);
	world_k2mc_finish(&k2, 90000, "restart with -e", &s2);
	cr_log_info("restart with -e took %.1fs", world_secs_since(t0));
	/* the final state first: a count that is off says more once it is
	 * known whether anything is missing from the cache */
	assert_counts_add_up(&s2, "restart");
	assert_cache_equals_expect("after SIGTERM and restart");
	assert_committed_at_end("sigterm", "after SIGTERM and restart");
	if (s1.consumed + s2.consumed != W.produced) {
		char *first = strdup(h_tail_of(k1.err_path, 30));

		cr_assert_fail("first run consumed %" PRIu64 ", restart %" PRIu64 ", produced %" PRIu64
			       " (a graceful stop re-delivers nothing); the cache and the commits "
			       "are right.\nfirst run:\n%s\nrestart:\n%s",
			       s1.consumed, s2.consumed, W.produced, first ? first : "",
			       h_tail_of(k2.err_path, 30));
	}
}

/* (e) ---------------------------------------------------------------------*/

static void sanitizer_run(const struct h_k2mc_opts *o, const char *group, const char *marker,
			  const char *crash_hint, struct h_proc *k)
{
	struct h_summary s;
	char st[96];
	int status = 0;
	int64_t t0;

	world_skip_unless_mock("the sanitizer builds run in make integration; make test-kafka "
			       "builds none");
	start_world(4, 20000, 5000, NULL, "505");
	world_wait_produced(&W, 20000, 60000);
	t0 = h_now_ms();
	start_k2mc(k, o, group, 1, NULL);
	if (h_wait(k->pid, 120000, &status) != 0) {
		h_signal(k->pid, SIGKILL);
		h_wait(k->pid, 5000, NULL);
		cr_assert_fail("%s still running after 120 s; stderr:\n%s", o->bin,
			       world_tail(k->err_path));
	}
	cr_log_info("%s -e over %" PRIu64 " records: %s after %.1fs", o->bin, W.produced,
		    h_status_str(status, st, sizeof(st)), world_secs_since(t0));
	/* the report first: it says why the exit status is what it is */
	cr_assert(!h_file_contains(k->err_path, marker), "%s reported '%s' (%s):\n%s", o->bin,
		  marker, h_status_str(status, st, sizeof(st)), excerpt_from(k->err_path, marker));
	cr_assert(!WIFSIGNALED(status), "%s was %s%s; stderr:\n%s", o->bin,
		  h_status_str(status, st, sizeof(st)), crash_hint, world_tail(k->err_path));
	world_k2mc_finish(k, 0, o->bin, &s);
	cr_assert_eq(s.consumed, W.produced, "consumed %" PRIu64 ", produced %" PRIu64, s.consumed,
		     W.produced);
	assert_counts_add_up(&s, o->bin);
	assert_cache_equals_expect(o->bin);
	assert_committed_at_end(group, o->bin);
}

Test(pipeline, asan_build_final_state)
{
	static const char *const env[] = { "ASAN_OPTIONS=detect_leaks=1", NULL };
	struct h_k2mc_opts o = { .bin = h_bin("K2MC_ASAN_BIN", "build/asan/k2mc"), .env = env };
	struct h_proc k;

	sanitizer_run(&o, "asan", "ERROR: AddressSanitizer", "", &k);
}

/* The ASan build is also UBSan's; UBSan reports but does not fail the run,
 * so its reports are looked for separately. */
Test(pipeline, asan_build_reports_no_undefined_behaviour)
{
	static const char *const env[] = { "UBSAN_OPTIONS=print_stacktrace=1", NULL };
	struct h_k2mc_opts o = { .bin = h_bin("K2MC_ASAN_BIN", "build/asan/k2mc"), .env = env };
	struct h_summary s;
	struct h_proc k;

	world_skip_unless_mock("the sanitizer builds run in make integration; make test-kafka "
			       "builds none");
	start_world(2, 2000, 500, NULL, "606");
	world_wait_produced(&W, 2000, 30000);
	start_k2mc(&k, &o, "ubsan", 1, NULL);
	world_k2mc_finish(&k, 60000, o.bin, &s);
	cr_assert(!h_file_contains(k.err_path, "runtime error:"),
		  "UBSan reported undefined behaviour:\n%s", excerpt_from(k.err_path, "runtime error:"));
}

/* TSan builds need ASLR off (setarch -R). K2MC_TSAN_PRELOAD, if set, is
 * LD_PRELOADed into that run only (see the report on C11 threads). */
Test(pipeline, tsan_build_final_state)
{
	static char preload[H_PATH_MAX + 16];
	const char *env[] = { "TSAN_OPTIONS=halt_on_error=1 exitcode=66", NULL, NULL };
	struct h_k2mc_opts o = { .bin = h_bin("K2MC_TSAN_BIN", "build/tsan/k2mc"),
				 .env = env,
				 .no_aslr = 1 };
	const char *pre = getenv("K2MC_TSAN_PRELOAD");
	struct h_proc k;

	if (pre != NULL && pre[0] != '\0') {
		snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", pre);
		env[1] = preload;
	}
	sanitizer_run(&o, "tsan", "WARNING: ThreadSanitizer",
		      pre == NULL ? " (if at start, in a librdkafka thread: librdkafka starts its "
				    "threads with glibc's thrd_create, which this libtsan does not "
				    "intercept; K2MC_TSAN_PRELOAD can name a shim that maps C11 "
				    "threads to pthreads)"
				  : "",
		      &k);
}

/* (f) ---------------------------------------------------------------------*/

Test(pipeline, bad_command_lines_exit_2_naming_the_problem)
{
	static const struct {
		const char *args[12];
		const char *names; /* the first stderr line must contain this */
	} cases[] = {
		{ { "-t", TOPIC, NULL }, "-b" },
		{ { "-b", "127.0.0.1:1", "-t", TOPIC, "--no-such-flag", NULL }, "--no-such-flag" },
		{ { "-b", "127.0.0.1:1", "-t", TOPIC, "--writers", "0", NULL }, "--writers" },
		{ { "-b", "127.0.0.1:1", "-t", TOPIC, "-X", "no.such.property=1", NULL },
		  "no.such.property" },
		{ { "-b", "127.0.0.1:1", NULL }, "-t" },
		{ { "-b", "127.0.0.1:1", "-t", TOPIC, "--ring-size", "100", NULL }, "--ring-size" },
		{ { "-b", "127.0.0.1:1", "-t", TOPIC, "-o", "middle", NULL }, "-o" },
		{ { "-b", "127.0.0.1:1", "-t", TOPIC, "-m", "localhost", NULL }, "-m" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char st[96], first[512] = "", cmd[256] = "k2mc";
		struct h_proc k;
		int status = 0, rc;
		char *err, *nl;

		for (int a = 0; cases[i].args[a] != NULL; a++)
			snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s",
				 cases[i].args[a]);
		rc = h_k2mc_start(&k, NULL, cases[i].args);
		cr_assert_eq(rc, 0, "cannot start k2mc: %s", strerror(-rc));
		rc = h_wait(k.pid, 10000, &status);
		cr_assert_eq(rc, 0, "`%s` still running after 10 s", cmd);
		cr_assert_eq(h_exit_code(status), 2, "`%s` ended with %s, expected exit 2; stderr:\n%s",
			     cmd, h_status_str(status, st, sizeof(st)), world_tail(k.err_path));
		err = h_file_read(k.err_path, NULL);
		cr_assert_not_null(err);
		nl = strchr(err, '\n');
		snprintf(first, sizeof(first), "%.*s", nl ? (int)(nl - err) : (int)strlen(err), err);
		free(err);
		cr_assert(strncmp(first, "k2mc: ", 6) == 0 && strstr(first, cases[i].names) != NULL,
			  "`%s`: first stderr line '%s' does not name '%s'", cmd, first,
			  cases[i].names);
		cr_assert(!h_file_contains(k.out_path, "Usage"), "`%s` printed usage on stdout", cmd);
		cr_log_info("`%s` -> exit 2: %s", cmd, first);
	}
}

/* The checks themselves must be able to fail ------------------------------*/

Test(pipeline, harness_reports_cache_mismatches)
{
	static const char expect[] = "S k1 v1\n"   /* right */
				     "S k2 vX\n"   /* memcached has v2 */
				     "S k4 v4\n"   /* memcached lacks it */
				     "D k3\n"      /* memcached still has it */
				     "D k5\n";     /* absent: right */
	char path[H_PATH_MAX];
	struct h_verify v;
	memcached_st *memc;
	FILE *f;
	int rc;

	rc = h_memcached_start(&W.mc[0], 0, NULL);
	cr_assert_eq(rc, 0, "memcached: %s", strerror(-rc));
	memc = memcached_create(NULL);
	cr_assert_not_null(memc);
	memcached_server_add(memc, "127.0.0.1", (in_port_t)W.mc[0].port);
	cr_assert_eq(memcached_set(memc, "k1", 2, "v1", 2, 0, 0), MEMCACHED_SUCCESS);
	cr_assert_eq(memcached_set(memc, "k2", 2, "v2", 2, 0, 0), MEMCACHED_SUCCESS);
	cr_assert_eq(memcached_set(memc, "k3", 2, "v3", 2, 0, 0), MEMCACHED_SUCCESS);
	cr_assert_eq(memcached_set(memc, "p:k1", 4, "v1", 2, 0, 0), MEMCACHED_SUCCESS);
	memcached_free(memc);

	f = fopen(h_tmppath(path, sizeof(path), "wrong.expect"), "w");
	cr_assert_not_null(f);
	fputs(expect, f);
	fclose(f);
	rc = h_verify_memcached(path, "127.0.0.1", W.mc[0].port, NULL, &v);
	cr_assert_eq(rc, 0, "verify could not run: %s", v.first);
	cr_assert_eq(v.sets, 3);
	cr_assert_eq(v.deletes, 2);
	cr_assert_eq(v.wrong, 1, "wrong %zu:\n%s", v.wrong, v.first);
	cr_assert_eq(v.missing, 1, "missing %zu:\n%s", v.missing, v.first);
	cr_assert_eq(v.present, 1, "present %zu:\n%s", v.present, v.first);
	cr_assert_eq(h_verify_mismatches(&v), 3);
	cr_assert_eq(v.server_items, 4);
	cr_assert(strstr(v.first, "k2: expected 'vX'") != NULL, "report:\n%s", v.first);
	cr_assert(strstr(v.first, "k4: missing") != NULL, "report:\n%s", v.first);
	cr_assert(strstr(v.first, "k3: deleted") != NULL, "report:\n%s", v.first);

	/* a key prefix is applied to every key */
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("S k1 v1\n", f);
	fclose(f);
	rc = h_verify_memcached(path, "127.0.0.1", W.mc[0].port, "p:", &v);
	cr_assert_eq(rc, 0, "%s", v.first);
	cr_assert_eq(h_verify_mismatches(&v), 0, "%s", v.first);

	/* a malformed line and a dead server are errors, not passes */
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("X k1\n", f);
	fclose(f);
	cr_assert_eq(h_verify_memcached(path, "127.0.0.1", W.mc[0].port, NULL, &v), -EPROTO);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("S k1 v1\n", f);
	fclose(f);
	cr_assert_eq(h_signal(W.mc[0].proc.pid, SIGKILL), 0);
	cr_assert_eq(h_wait(W.mc[0].proc.pid, 5000, NULL), 0);
	cr_assert_lt(h_verify_memcached(path, "127.0.0.1", W.mc[0].port, NULL, &v), 0,
		     "verify against a dead server passed");
}

Test(pipeline, harness_parses_summaries_and_diffs_offsets)
{
	static const char log[] =
		"12:00:00.000 k2mc INFO: started\n"
		"k2mc: summary: consumed 10 written 7 deleted 2 skipped 1 (missing_key 1 "
		"key_too_long 0 key_bad_bytes 0 value_too_large 0) unwritten 3 in 1.00s (10 "
		"records/s); committed: ev.x-1[0]=4 ev.x-1[1]=6; latency ms p50 1 p99 2\n";
	const int64_t a[3] = { 1, 2, 3 }, b[3] = { 1, 5, 3 };
	char path[H_PATH_MAX], diff[128];
	struct h_summary s;
	FILE *f = fopen(h_tmppath(path, sizeof(path), "summary.err"), "w");

	cr_assert_not_null(f);
	fputs(log, f);
	fclose(f);
	cr_assert_eq(h_summary_parse(path, &s), 0);
	cr_assert_eq(s.consumed, 10);
	cr_assert_eq(s.written, 7);
	cr_assert_eq(s.deleted, 2);
	cr_assert_eq(s.skipped, 1);
	cr_assert_eq(s.unwritten, 3);
	cr_assert_eq(s.ncommitted, 2);
	cr_assert_eq(h_summary_committed(&s, "ev.x-1", 1), 6);
	cr_assert_eq(h_summary_committed(&s, "ev.x-1", 2), -1);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("k2mc: summary: consumed 0 written 0 deleted 0 skipped 0 () unwritten 0 in 0.1s; "
	      "committed: \n",
	      f);
	fclose(f);
	cr_assert_eq(h_summary_parse(path, &s), 0, "a summary with nothing committed");
	cr_assert_eq(s.ncommitted, 0);
	cr_assert_eq(h_offsets_diff(a, b, 3, diff, sizeof(diff)), 1);
	cr_assert_str_eq(diff, "p1: 2 != 5");
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("k2mc: something else\n", f);
	fclose(f);
	cr_assert_eq(h_summary_parse(path, &s), -ENOENT);
}

/* k2mc-mock's control channel, which later tests (broker outages) build on:
 * every command gets one answer line, production rewrites the expect file
 * before answering, and "quit" ends it with status 0. */
Test(pipeline, mock_stdin_control_answers_each_command)
{
	char expect[H_PATH_MAX], answer[256], st[96];
	const char *args[] = { "--topic", TOPIC ":2", "--keys", "50", "--expect", NULL, "--stdin-control",
			       NULL };
	int status = 0, rc;
	char *e;

	world_skip_unless_mock("broker-down and broker-up drive the mock cluster only");
	args[5] = h_tmppath(expect, sizeof(expect), "control.expect");
	rc = h_mock_start(&W.mock, args, 1, 15000);
	cr_assert_eq(rc, 0, "k2mc-mock: %s\n%s", strerror(-rc), world_tail(W.mock.proc.err_path));
	rc = h_mock_command(&W.mock, "produce 100", answer, sizeof(answer), 30000);
	cr_assert_eq(rc, 0, "produce 100: %s (%s)", answer, strerror(-rc));
	cr_assert_str_eq(answer, "ok produce acked=100");
	e = h_file_read(expect, NULL);
	cr_assert_not_null(e, "no expect file after 'ok produce'");
	cr_assert(strncmp(e, "S key-", 6) == 0 || strncmp(e, "D key-", 6) == 0, "expect file: %.80s",
		  e);
	free(e);
	rc = h_mock_command(&W.mock, "no-such-command", answer, sizeof(answer), 5000);
	cr_assert_eq(rc, -EIO, "unknown command answered '%s'", answer);
	rc = h_mock_command(&W.mock, "broker-down 1", answer, sizeof(answer), 5000);
	cr_assert_eq(rc, 0, "broker-down 1: '%s'", answer);
	rc = h_mock_command(&W.mock, "broker-up 1", answer, sizeof(answer), 5000);
	cr_assert_eq(rc, 0, "broker-up 1: '%s'", answer);
	rc = h_mock_command(&W.mock, "quit", answer, sizeof(answer), 5000);
	cr_assert_eq(rc, 0, "quit: '%s'", answer);
	cr_assert_eq(h_wait(W.mock.proc.pid, 10000, &status), 0, "k2mc-mock still running after quit");
	cr_assert_eq(h_exit_code(status), 0, "k2mc-mock ended with %s after quit:\n%s",
		     h_status_str(status, st, sizeof(st)), world_tail(W.mock.proc.err_path));
}
