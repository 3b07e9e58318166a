/* Integration suite for records Kafka's retention deleted before k2mc read
 * them: k2mc stops, more than the retention is produced, k2mc restarts. The
 * loss must be counted (k2mc_records_lost_to_retention_total, the stats
 * JSON, the summary) and logged once per partition with its offsets, and
 * k2mc must resume at the oldest surviving record whatever -o says; -o end
 * still starts a group with no committed offset at the end. Eager and
 * cooperative assignment both; also a k2mc frozen (SIGSTOP) while running.
 * The mock keeps at most 5 MiB per partition (bench/k2mc_mock.c), so 20 KB
 * records reach it within a few hundred. On a real broker the topic has 1 MiB
 * segments and gets retention.bytes of 5 MiB once the records are in, and the
 * broker's retention check (every 500 ms, tests/kafka/kafka-broker) deletes
 * the oldest segments: the same loss, by Kafka's own retention. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "world.h"

#define TOPIC "ret"
#define PARTS 2
/* 10 keys: each key's last record is among a partition's ~250 survivors
 * (it has a fifth of them), so the expect file is what the cache must hold */
#define KEYS 10
#define VALUE_SIZE 20000
/* phase 1 stays under the retention (about 1 MB a partition); phase 2 is
 * about 10 MB a partition, twice what the mock keeps */
#define BEFORE 100
#define PAST_RETENTION 1000
#define RUN_MS 60000
/* a real broker: the topic's retention (the mock's 5 MiB), and how long its
 * retention check may take to apply it */
#define RETENTION_BYTES "5242880"
#define RETENTION_WAIT_MS 30000
/* every wait below has its own deadline; this only stops a wedged test */
#define TEST_TIMEOUT_S 240

static const char *const COOPERATIVE[] = { "-X",
					   "partition.assignment.strategy=cooperative-sticky",
					   NULL };

static struct world W;

WORLD_SUITE(retention, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

static const char *tail_of(const char *path)
{
	return h_tail_of(path, 25);
}

static void start_world(void)
{
	static const char *const segments[] = { "segment.bytes=1048576", NULL };

	world_start(&W, &(struct world_opts){ .topic = TOPIC, .parts = PARTS, .keys = KEYS,
					      .value_size = VALUE_SIZE, .control = 1,
					      .topic_config = segments });
}

/* "produce N" through the control channel: answered once acknowledged. */
static void mock_produce(uint64_t n)
{
	char cmd[64], answer[256];
	int rc;

	snprintf(cmd, sizeof(cmd), "produce %" PRIu64, n);
	rc = h_mock_command(&W.mock, cmd, answer, sizeof(answer), 60000);
	cr_assert_eq(rc, 0, "'%s' answered '%s' (%s); mock stderr:\n%s", cmd, answer,
		     strerror(-rc), tail_of(W.mock.proc.err_path));
	W.produced += n;
}

/* Log start and end offsets of every partition; the group's committed
 * offsets (-1: none) when group is given. */
static void kafka_offsets(const char *group, int64_t *start, int64_t *end, int64_t *committed)
{
	char err[256];
	struct h_kafka *k = h_kafka_open(W.bootstrap, world_name(group), err, sizeof(err));

	cr_assert_not_null(k, "kafka handle: %s", err);
	cr_assert_eq(h_kafka_watermarks(k, W.topic, PARTS, start, end, 5000), 0, "watermarks");
	if (committed != NULL)
		cr_assert_eq(h_kafka_committed(k, W.topic, PARTS, committed, 5000), 0,
			     "committed offsets of %s", group);
	h_kafka_close(k);
}

/* Retention takes the log past below[] (a group's committed offsets, or
 * where a frozen k2mc will fetch next); the log start and end offsets in
 * start and end. The mock applied its retention as it stored the records.
 * A real broker's topic gets retention.bytes only now, with every record
 * in: one pass of the retention check deletes all the segments it ever
 * will (the oldest while the rest exceed 5 MiB), so the log start this
 * sees move past below[] is the one k2mc will meet. */
static void apply_retention(const int64_t *below, int64_t *start, int64_t *end)
{
	int64_t deadline = h_now_ms() + RETENTION_WAIT_MS;
	char err[512];
	int p, rc;

	if (W.backend == H_KAFKA_REAL) {
		rc = h_kafka_alter_topic_config(W.bootstrap, W.topic, "retention.bytes",
						RETENTION_BYTES, 10000, err, sizeof(err));
		cr_assert_eq(rc, 0, "retention.bytes=" RETENTION_BYTES ": %s", err);
	}
	for (;;) {
		kafka_offsets(NULL, start, end, NULL);
		for (p = 0; p < PARTS && start[p] > below[p]; p++)
			;
		if (p == PARTS)
			return;
		cr_assert_lt(h_now_ms(), deadline,
			     "partition %d: the log still starts at %" PRId64 ", at or before %" PRId64
			     ", %d ms after the retention: retention not reached",
			     p, start[p], below[p], RETENTION_WAIT_MS);
		h_sleep_ms(100);
	}
}

/* Starts k2mc on the group (-e if eof) with extra arguments after the
 * suite's; extra2 after those. json: --stats-json file or NULL. */
static void start_k2mc(struct h_proc *k, const char *group, int eof, const char *const extra[],
		       const char *const extra2[], const char *json)
{
	/* as test_faults.c: the mock holds a group its last member left until
	 * the session times out, which bounds each restart's join */
	const char *args[48] = { "--stats-interval-ms", "1000", "--commit-interval-ms", "200",
				 "-X", "session.timeout.ms=3000", "-X", "heartbeat.interval.ms=500" };
	int a = 8;

	if (json != NULL) {
		args[a++] = "--stats-json";
		args[a++] = json;
	}
	for (int i = 0; extra != NULL && extra[i] != NULL && a < 46; i++)
		args[a++] = extra[i];
	args[a] = NULL;
	world_k2mc_start(&W, k, &(struct world_k2mc){ .group = group, .eof = eof, .args = args,
						      .args2 = extra2 });
}

/* Waits up to RUN_MS for k to exit (after a SIGTERM if term), which it must
 * with 0; its summary in *s. */
static void wait_k2mc(struct h_proc *k, int term, struct h_summary *s)
{
	char st[96];
	int status = 0, rc;

	if (term)
		cr_assert_eq(h_signal(k->pid, SIGTERM), 0, "k2mc was not running");
	rc = h_wait(k->pid, RUN_MS, &status);
	if (rc == -ETIMEDOUT) {
		h_stop(k->pid, 5000);
		cr_assert_fail("k2mc still running after %d ms; stderr:\n%s", RUN_MS,
			       tail_of(k->err_path));
	}
	cr_assert_eq(h_exit_code(status), 0, "k2mc ended with %s; stderr:\n%s",
		     h_status_str(status, st, sizeof(st)), tail_of(k->err_path));
	rc = h_summary_parse(k->err_path, s);
	cr_assert_eq(rc, 0, "no summary (%s); stderr:\n%s", strerror(-rc), tail_of(k->err_path));
}

/* k2mc -e on the group; it must exit 0 within RUN_MS. Its summary in *s,
 * its stderr's path in err_path. */
static void run_k2mc(const char *group, const char *const extra[], const char *const extra2[],
		     const char *json, struct h_summary *s, char *err_path, size_t err_len)
{
	struct h_proc k;

	start_k2mc(&k, group, 1, extra, extra2, json);
	snprintf(err_path, err_len, "%s", k.err_path);
	wait_k2mc(&k, 0, s);
}

/* Polls until the group's committed offsets are the end offsets, which are
 * returned, while k runs. */
static void wait_committed_at_end(struct h_proc *k, const char *group, int64_t *end)
{
	world_wait_committed_at_end(&W, NULL, 0, group, &k, 1, RUN_MS, "k2mc running");
	kafka_offsets(group, NULL, end, NULL);
}

/* Lines of path that contain needle. */
static int count_in_file(const char *path, const char *needle)
{
	char *b = h_file_read(path, NULL), *at;
	int n = 0;

	for (at = b; at != NULL && (at = strstr(at, needle)) != NULL; at++)
		n++;
	free(b);
	return n;
}

static void assert_cache_equals_expect(const char *what)
{
	world_assert_cache(&W, NULL, 0, NULL, 0, what);
}

/* The number after "\"key\":" at or after from, or -1. */
static int64_t json_num(const char *from, const char *key)
{
	char pat[96];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = from != NULL ? strstr(from, pat) : NULL;
	return p != NULL ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* The last line of path holding "\"final\":true" (malloc'd), or NULL. */
static char *final_json(const char *path)
{
	char *all = h_file_read(path, NULL), *p, *found = NULL;

	if (all == NULL)
		return NULL;
	p = strstr(all, "\"final\":true");
	while (p != NULL) {
		char *next = strstr(p + 1, "\"final\":true");

		if (next == NULL)
			break;
		p = next;
	}
	if (p != NULL) {
		char *b = p, *e = strchr(p, '\n');

		while (b > all && b[-1] != '\n')
			b--;
		found = strndup(b, e != NULL ? (size_t)(e - b) : strlen(b));
	}
	free(all);
	return found;
}

/* The stats JSON's count for one partition (parts[]), or -1. */
static int64_t json_part_num(const char *line, int partition, const char *key)
{
	char pat[256];

	snprintf(pat, sizeof(pat), "{\"topic\":\"%s\",\"partition\":%d,", W.topic, partition);
	return json_num(strstr(line, pat), key);
}

/* Produces BEFORE records and has group read them all (extra1: the first
 * run's arguments), then PAST_RETENTION more while k2mc is stopped, and
 * restarts k2mc on the group (extra2 and restart: the second run's
 * arguments). Every survivor must be written,
 * the committed offsets end at the log end, and the records between the
 * first run's commit and the new log start are counted and logged as lost. */
static void lose_to_retention(const char *group, const char *const extra1[],
			      const char *const extra2[], const char *const restart[])
{
	int64_t start[PARTS], end[PARTS], committed[PARTS], first[PARTS];
	int64_t lost = 0, survivors = 0;
	char err[H_PATH_MAX], json[H_PATH_MAX], *line;
	struct h_summary s;

	start_world();
	mock_produce(BEFORE);
	run_k2mc(group, extra1, NULL, NULL, &s, err, sizeof(err));
	cr_assert_eq(s.consumed, (uint64_t)BEFORE, "first run consumed %" PRIu64 " of %d; stderr:\n%s",
		     s.consumed, BEFORE, tail_of(err));
	kafka_offsets(group, NULL, end, first);
	for (int p = 0; p < PARTS; p++)
		cr_assert_eq(first[p], end[p], "first run: partition %d committed %" PRId64
			     ", end %" PRId64, p, first[p], end[p]);

	/* k2mc stopped: the log moves past its commit */
	mock_produce(PAST_RETENTION);
	apply_retention(first, start, end);
	for (int p = 0; p < PARTS; p++) {
		lost += start[p] - first[p];
		survivors += end[p] - start[p];
	}

	h_tmppath(json, sizeof(json), "restart.json");
	run_k2mc(group, extra2, restart, json, &s, err, sizeof(err));
	/* every survivor, and only them */
	cr_expect_eq(s.consumed, (uint64_t)survivors,
		     "restart consumed %" PRIu64 ", survivors (end - log start) %" PRId64
		     "; stderr:\n%s", s.consumed, survivors, tail_of(err));
	cr_expect_eq(s.written + s.coalesced + s.deleted, s.consumed,
		     "written %" PRIu64 " + coalesced %" PRIu64 " + deleted %" PRIu64
		     " != consumed %" PRIu64, s.written, s.coalesced, s.deleted, s.consumed);
	kafka_offsets(group, NULL, end, committed);
	for (int p = 0; p < PARTS; p++)
		cr_expect_eq(committed[p], end[p], "partition %d committed %" PRId64 ", end %" PRId64,
			     p, committed[p], end[p]);
	assert_cache_equals_expect("after the restart");

	/* counted: the summary, the final stats JSON (total and per partition) */
	cr_expect_eq(s.lost, (uint64_t)lost,
		     "summary lost_to_retention %" PRIu64 ", the log lost %" PRId64 "; stderr:\n%s",
		     s.lost, lost, tail_of(err));
	line = final_json(json);
	cr_assert_not_null(line, "no final stats JSON line in %s", json);
	cr_expect_eq(json_num(line, "lost_to_retention"), lost, "JSON lost_to_retention: %s", line);
	for (int p = 0; p < PARTS; p++)
		cr_expect_eq(json_part_num(line, p, "lost_to_retention"), start[p] - first[p],
			     "partition %d: JSON lost_to_retention, log lost %" PRId64 ": %s", p,
			     start[p] - first[p], line);
	free(line);

	/* logged once per partition, with the committed offset, where it
	 * resumed and the count */
	for (int p = 0; p < PARTS; p++) {
		char needle[512];
		int n;

		snprintf(needle, sizeof(needle),
			 "%s [%d]: %" PRId64 " record(s) lost to retention: committed offset %" PRId64
			 " is no longer in the log, which starts at %" PRId64 "; resumed at %" PRId64,
			 W.topic, p, start[p] - first[p], first[p], start[p], start[p]);
		n = count_in_file(err, needle);
		cr_expect_eq(n, 1, "partition %d: %d lines '%s'; stderr:\n%s", p, n, needle,
			     tail_of(err));
	}
}

static const char *const OFFSET_END[] = { "-o", "end", NULL };

/* (a) the default -o beginning, eager assignment */
Test(retention, loss_counted_logged_and_survivors_written)
{
	lose_to_retention("ret-a", NULL, NULL, NULL);
}

/* (b) -o end at the restart: the group has a committed offset, so -o does not
 * apply, and what retention left is read from its oldest record */
Test(retention, offset_end_still_consumes_survivors)
{
	lose_to_retention("ret-b", NULL, NULL, OFFSET_END);
}

/* (b) with cooperative (incremental) assignment */
Test(retention, offset_end_still_consumes_survivors_cooperative)
{
	lose_to_retention("ret-bc", COOPERATIVE, COOPERATIVE, OFFSET_END);
}

/* (c) -o end on a group with no committed offset starts at the end; a
 * committed offset then wins over it. */
static void new_group_at_end(const char *group, const char *const extra[])
{
	int64_t end[PARTS], committed[PARTS];
	char err[H_PATH_MAX];
	struct h_summary s;

	run_k2mc(group, extra, OFFSET_END, NULL, &s, err, sizeof(err));
	cr_expect_eq(s.consumed, 0, "%s: a new group with -o end consumed %" PRIu64 "; stderr:\n%s",
		     group, s.consumed, tail_of(err));
	kafka_offsets(group, NULL, end, committed);
	for (int p = 0; p < PARTS; p++)
		cr_expect_eq(committed[p], end[p], "%s: partition %d committed %" PRId64
			     ", end %" PRId64, group, p, committed[p], end[p]);

	mock_produce(30);
	run_k2mc(group, extra, OFFSET_END, NULL, &s, err, sizeof(err));
	cr_expect_eq(s.consumed, 30, "%s: with a committed offset, -o end consumed %" PRIu64
		     " of the 30 new records; stderr:\n%s", group, s.consumed, tail_of(err));
	cr_expect_eq(s.lost, 0, "%s: lost_to_retention %" PRIu64, group, s.lost);
	kafka_offsets(group, NULL, end, committed);
	for (int p = 0; p < PARTS; p++)
		cr_expect_eq(committed[p], end[p], "%s: partition %d committed %" PRId64
			     ", end %" PRId64, group, p, committed[p], end[p]);
}

Test(retention, offset_end_new_group_starts_at_end)
{
	start_world();
	mock_produce(BEFORE);
	new_group_at_end("ret-c", NULL);
	new_group_at_end("ret-cc", COOPERATIVE);
}

/* The one line k2mc logged for partition p's loss while running: the
 * count, the offset it was to fetch next and the log start it met. 0, or
 * -1 if there is not exactly one such line. */
static int running_loss_line(const char *path, int p, int64_t *n, int64_t *next, int64_t *at)
{
	char head[256], *b = h_file_read(path, NULL), *l;
	int found = 0;

	snprintf(head, sizeof(head), "%s [%d]: ", W.topic, p);
	for (l = b; l != NULL && (l = strstr(l, head)) != NULL; l++) {
		long long c, x, y;

		if (sscanf(l + strlen(head),
			   "%lld record(s) lost to retention: next offset %lld is no longer in the "
			   "log, which starts at %lld",
			   &c, &x, &y) == 3 && found++ == 0) {
			*n = c;
			*next = x;
			*at = y;
		}
	}
	free(b);
	return found == 1 ? 0 : -1;
}

/* (d) k2mc running but frozen (SIGSTOP: a stall, a paused VM) while
 * retention deletes the records after the last it read: counted when it
 * goes on, within the same assignment (the freeze is shorter than the
 * session, so no rebalance restarts it from the committed offset). What it
 * had fetched before retention ran is not lost: a real broker answers the
 * fetch k2mc left waiting (fetch.wait.max.ms) as soon as the records
 * arrive, and the answer waits in the socket for k2mc to wake up (up to
 * max.partition.fetch.bytes of each partition). So each partition's loss
 * starts where that answer ended, at or after where k2mc stopped. */
Test(retention, loss_while_running_counted)
{
	static const char *const long_session[] = { "-X", "session.timeout.ms=20000", NULL };
	int64_t start[PARTS], end[PARTS], before[PARTS], logged = 0;
	struct h_summary s;
	struct h_proc k;
	int rc;

	start_world();
	mock_produce(BEFORE);
	start_k2mc(&k, "ret-d", 0, long_session, NULL, NULL);
	wait_committed_at_end(&k, "ret-d", before);
	rc = h_pause(k.pid, 5000);
	cr_assert_eq(rc, 0, "SIGSTOP: %s", strerror(-rc));
	mock_produce(PAST_RETENTION);
	apply_retention(before, start, end);
	cr_assert_eq(h_resume(k.pid), 0);
	wait_committed_at_end(&k, "ret-d", end);
	wait_k2mc(&k, 1, &s);
	/* every record is consumed or counted lost, none both */
	cr_expect_eq(s.consumed + s.lost,
		     (uint64_t)(BEFORE + h_offsets_sum(end, PARTS) - h_offsets_sum(before, PARTS)),
		     "consumed %" PRIu64 " + lost %" PRIu64 " != %d before the freeze + %" PRId64
		     " produced during it; stderr:\n%s",
		     s.consumed, s.lost, BEFORE,
		     h_offsets_sum(end, PARTS) - h_offsets_sum(before, PARTS), tail_of(k.err_path));
	assert_cache_equals_expect("after the freeze");
	for (int p = 0; p < PARTS; p++) {
		int64_t n = 0, next = 0, at = 0;

		cr_assert_eq(running_loss_line(k.err_path, p, &n, &next, &at), 0,
			     "partition %d: not one 'lost to retention: next offset' line; "
			     "stderr:\n%s", p, tail_of(k.err_path));
		cr_expect(next >= before[p] && next < start[p] && at == start[p] &&
				  n == start[p] - next,
			  "partition %d: logged %" PRId64 " lost from next offset %" PRId64
			  " at log start %" PRId64 "; k2mc stopped at %" PRId64
			  ", retention moved the log start to %" PRId64,
			  p, n, next, at, before[p], start[p]);
		logged += n;
	}
	cr_expect_eq(s.lost, (uint64_t)logged, "summary lost_to_retention %" PRIu64
		     ", the log lines %" PRId64 "; stderr:\n%s", s.lost, logged, tail_of(k.err_path));
}
