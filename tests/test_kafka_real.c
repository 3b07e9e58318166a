/* Integration suite: k2mc against a real Apache Kafka broker (issue 21),
 * started once for the suite by tests/kafka/kafka-broker (tests/world.h;
 * the compaction scenario starts one of its own), with a Debian memcached. Each scenario checks that every key's final value in
 * Memcached is its last record (the producer's expect file) and that the
 * group's committed offset equals the end offset of every partition.
 * Scenarios a-c also run on the mock (K2MC_KAFKA=mock); transactions and
 * compaction need a real broker and are skipped there. `make test-kafka`
 * runs it with K2MC_KAFKA=real on each broker version (K2MC_KAFKA_VERSION).
 * Binaries come from K2MC_BIN and K2MC_MOCK. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "world.h"

/* every wait has its own deadline; this only stops a wedged test */
#define TEST_TIMEOUT_S 240

static struct world W;

WORLD_SUITE(kafka_real, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

static void skip_unless_real(const char *why)
{
	if (h_kafka_backend() != H_KAFKA_REAL)
		cr_skip_test("needs a real broker (K2MC_KAFKA=real): %s", why);
}

/* One producer's job: topic:parts, records over keys with 5% tombstones,
 * 100-byte values, an expect file; extra k2mc-mock args (NULL-terminated)
 * after them. topic is a base name (world_name). */
struct load {
	const char *topic;
	int parts;
	uint64_t records;
	uint32_t keys;
	const char *seed;
	const char *rate; /* NULL: as fast as it goes */
	const char *const *extra;
	char expect[H_PATH_MAX];
	struct h_mock *mk; /* the producer that runs it */
};

/* The first load's producer is the world's (world_start). */
static void start_world(struct load *l)
{
	world_start(&W, &(struct world_opts){ .topic = l->topic, .parts = l->parts,
					      .records = l->records, .keys = l->keys,
					      .value_size = 100, .tombstones = 5, .seed = l->seed,
					      .rate = l->rate, .mock_args = l->extra,
					      .mock_timeout_ms = 90000 });
	snprintf(l->expect, sizeof(l->expect), "%s", W.expect);
	l->mk = &W.mock;
}

/* A further producer into the running cluster. */
static void start_load(struct load *l, struct h_mock *mk)
{
	static char topic[8][200], n[8][24], k[8][16];
	static int slot;
	const char *args[64];
	int a = 0, s = slot++ % 8, rc;

	snprintf(topic[s], sizeof(topic[s]), "%s:%d", world_name(l->topic), l->parts);
	snprintf(n[s], sizeof(n[s]), "%" PRIu64, l->records);
	snprintf(k[s], sizeof(k[s]), "%u", l->keys);
	snprintf(l->expect, sizeof(l->expect), "%s/expect-%s.txt", h_tmpdir(), l->topic);
	args[a++] = "--topic";
	args[a++] = topic[s];
	args[a++] = "--produce";
	args[a++] = n[s];
	args[a++] = "--keys";
	args[a++] = k[s];
	args[a++] = "--value-size";
	args[a++] = "100";
	args[a++] = "--tombstones";
	args[a++] = "5";
	args[a++] = "--seed";
	args[a++] = l->seed;
	args[a++] = "--expect";
	args[a++] = l->expect;
	/* the mock cluster lives in k2mc-mock: it must stay; a producer into
	 * a real broker is done once it has produced */
	if (h_kafka_backend() == H_KAFKA_REAL)
		args[a++] = "--exit-after-produce";
	args[a++] = "-q";
	for (int i = 0; l->extra != NULL && l->extra[i] != NULL && a < 63; i++)
		args[a++] = l->extra[i];
	args[a] = NULL;
	rc = h_producer_start(mk, W.bootstrap, args, 90000);
	cr_assert_eq(rc, 0, "k2mc-mock -b for %s: %s\n%s", l->topic, strerror(-rc),
		     world_tail(mk->proc.err_path));
	l->mk = mk;
}

/* Waits for the load's production; returns the produced= line. */
static void wait_produced(struct load *l, int timeout_ms, char *line, size_t len)
{
	uint64_t acked = 0;
	int rc = h_mock_wait_produced(l->mk, timeout_ms, &acked);
	char buf[512];

	cr_assert_eq(rc, 0, "producing %s: %s\nk2mc-mock stderr:\n%s", l->topic, strerror(-rc),
		     world_tail(l->mk->proc.err_path));
	cr_assert_eq(acked, l->records, "%s: %" PRIu64 " of %" PRIu64 " records acknowledged",
		     l->topic, acked, l->records);
	rc = h_wait_line(l->mk->proc.out_path, "^produced=", NULL, 0, 1000, buf, sizeof(buf));
	cr_assert_eq(rc, 0);
	if (line != NULL)
		snprintf(line, len, "%s", buf);
}

/* k2mc -b -t -G -m --stats-interval-ms 1000 [-e] extra...; topic a base name */
static void start_k2mc(struct h_proc *k, const char *topic, const char *group, int eof,
		       const char *const extra[])
{
	static const char *const stats[] = { "--stats-interval-ms", "1000", NULL };

	world_k2mc_start(&W, k, &(struct world_k2mc){ .topic = world_name(topic), .group = group,
						      .eof = eof, .args = stats,
						      .args2 = extra });
}

/* Waits for k2mc to exit 0 and parses its summary; the counts add up. */
static void finish_k2mc(struct h_proc *k, int timeout_ms, const char *what, struct h_summary *s)
{
	world_k2mc_finish(k, timeout_ms, what, s);
	world_assert_counts_add_up(s, what);
}

/* Every key of the expect file holds its last record's value (or is absent
 * after a tombstone), keys prefixed with prefix (NULL: none). Returns the
 * number of live keys. */
static size_t assert_cache(const char *expect, const char *prefix, const char *what)
{
	return world_assert_cache(&W, expect, 0, prefix, 0, what);
}

static uint64_t mc_items(void)
{
	return (uint64_t)world_mc_stat(W.mc[0].port, NULL, "curr_items");
}

/* The group's committed offsets equal the end offsets on every partition;
 * *end_sum (may be NULL) gets the sum of the end offsets. */
static void assert_committed_at_end(const char *topic, int parts, const char *group,
				    const char *what, int64_t *end_sum)
{
	int64_t sum = world_assert_committed_at_end(&W, world_name(topic), parts, group, what);

	if (end_sum != NULL)
		*end_sum = sum;
}

static void log_done(const char *scenario)
{
	cr_log_info("%s on %s: %.1f s", scenario, h_kafka_backend_name(W.backend),
		    world_secs_since(W.t0));
}

/* (a) -------------------------------------------------------------------------*/

Test(kafka_real, basic_final_state_and_commits)
{
	struct load l = { .topic = "basic", .parts = 8, .records = 50000, .keys = 20000,
			  .seed = "2101" };
	struct h_proc k;
	struct h_summary s;
	int64_t t0, end_sum;

	start_world(&l);
	wait_produced(&l, 90000, NULL, 0);
	t0 = h_now_ms();
	start_k2mc(&k, l.topic, "basic", 1, NULL);
	finish_k2mc(&k, 120000, "k2mc -e", &s);
	cr_log_info("k2mc -e over %" PRIu64 " records: %.1f s", l.records, world_secs_since(t0));
	cr_assert_eq(s.consumed, l.records, "consumed %" PRIu64 " of %" PRIu64, s.consumed,
		     l.records);
	assert_cache(l.expect, NULL, "basic");
	assert_committed_at_end(l.topic, l.parts, "basic", "basic", &end_sum);
	cr_assert_eq(end_sum, (int64_t)l.records, "end offsets sum to %" PRId64 ", produced %" PRIu64,
		     end_sum, l.records);
	log_done("basic");
}

/* (b) -------------------------------------------------------------------------
 * Session timeout 6 s (the brokers' group.min.session.timeout.ms) for both
 * runs: the killed member never leaves, and the restart's join waits for
 * the coordinator to expire it. */
static const char *const short_session[] = { "-X", "session.timeout.ms=6000", NULL };

Test(kafka_real, sigkill_mid_run_then_restart_with_e)
{
	/* about 6 s of production: the kill lands while it is still going */
	struct load l = { .topic = "kill9", .parts = 8, .records = 60000, .keys = 20000,
			  .seed = "2102", .rate = "10000" };
	int64_t committed[H_MAX_PARTS], end[H_MAX_PARTS], resume = 0;
	struct h_proc k1, k2;
	struct h_summary s;
	char st[96];
	int status = 0;
	int64_t t0;

	start_world(&l);
	start_k2mc(&k1, l.topic, "kill9", 0, short_session);
	cr_log_info("first commit after %.1f s",
		    world_wait_first_commit(&W, &k1, "kill9", 60000));
	cr_assert(!h_file_exists(l.expect),
		  "production finished before the kill, so the kill was not mid-run");
	cr_assert_eq(h_signal(k1.pid, SIGKILL), 0);
	cr_assert_eq(h_wait(k1.pid, 5000, &status), 0, "k2mc did not die of SIGKILL");
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "k2mc ended with %s",
		  h_status_str(status, st, sizeof(st)));

	wait_produced(&l, 90000, NULL, 0);
	world_offsets(&W, NULL, 0, "kill9", committed, end);
	for (int p = 0; p < l.parts; p++)
		resume += end[p] - (committed[p] > 0 ? committed[p] : 0);
	cr_log_info("after the kill: %" PRId64 " of %" PRIu64 " records committed",
		    (int64_t)l.records - resume, l.records);

	t0 = h_now_ms();
	start_k2mc(&k2, l.topic, "kill9", 1, short_session);
	finish_k2mc(&k2, 120000, "restart with -e", &s);
	cr_log_info("restart with -e: %.1f s", world_secs_since(t0));
	cr_assert_eq((int64_t)s.consumed, resume,
		     "restart consumed %" PRIu64 "; from the committed offsets to the end there "
		     "are %" PRId64,
		     s.consumed, resume);
	assert_cache(l.expect, NULL, "after SIGKILL and restart");
	assert_committed_at_end(l.topic, l.parts, "kill9", "after SIGKILL and restart", NULL);
	log_done("kill -9 and restart");
}

/* (c) -------------------------------------------------------------------------
 * One topic per codec, produced with it (compression.codec) and stored
 * with it (the topic's compression.type; the mock ignores topic configs,
 * so there only the producer's codec). k2mc reads each into its own key
 * prefix. */
Test(kafka_real, compressed_topics_gzip_snappy_lz4_zstd)
{
	static const char *const codecs[] = { "gzip", "snappy", "lz4", "zstd" };
	static char xc[4][64], tc[4][64];
	const char *extra[4][8];
	struct load l[4];
	struct h_mock mk[4];
	size_t live = 0;

	for (int i = 0; i < 4; i++) {
		int a = 0;

		snprintf(xc[i], sizeof(xc[i]), "compression.codec=%s", codecs[i]);
		snprintf(tc[i], sizeof(tc[i]), "compression.type=%s", codecs[i]);
		extra[i][a++] = "-X";
		extra[i][a++] = xc[i];
		if (h_kafka_backend() == H_KAFKA_REAL) {
			extra[i][a++] = "--topic-config";
			extra[i][a++] = tc[i];
		}
		extra[i][a] = NULL;
		l[i] = (struct load){ .topic = codecs[i], .parts = 4, .records = 20000,
				      .keys = 5000, .seed = "2103", .extra = extra[i] };
	}
	start_world(&l[0]);
	for (int i = 1; i < 4; i++)
		start_load(&l[i], &mk[i]);
	for (int i = 0; i < 4; i++) {
		char prefix[32], group[32];
		struct h_proc k;
		struct h_summary s;
		const char *kx[] = { "--key-prefix", prefix, NULL };
		int64_t t0;

		wait_produced(&l[i], 90000, NULL, 0);
		snprintf(prefix, sizeof(prefix), "%s:", codecs[i]);
		snprintf(group, sizeof(group), "z-%s", codecs[i]);
		t0 = h_now_ms();
		start_k2mc(&k, l[i].topic, group, 1, kx);
		finish_k2mc(&k, 120000, codecs[i], &s);
		cr_log_info("%s: k2mc -e over %" PRIu64 " records: %.1f s", codecs[i], s.consumed,
			    world_secs_since(t0));
		cr_assert_eq(s.consumed, l[i].records, "%s: consumed %" PRIu64 " of %" PRIu64,
			     codecs[i], s.consumed, l[i].records);
		live += assert_cache(l[i].expect, prefix, codecs[i]);
		assert_committed_at_end(l[i].topic, l[i].parts, group, codecs[i], NULL);
	}
	cr_assert_eq(mc_items(), (uint64_t)live, "memcached holds %" PRIu64 " items, expected %zu",
		     mc_items(), live);
	log_done("compressed topics");
}

/* (d) -------------------------------------------------------------------------
 * A transactional producer: 60 transactions of 500 records, every 3rd
 * aborted. k2mc reads read_committed (librdkafka's default): the aborted
 * records must never be consumed, and the commit markers (one offset per
 * transaction and partition, never delivered) must not stop the commits or
 * -e short of the end offset. The 60th transaction is aborted, so every
 * partition ends with aborted records and their abort marker. */
Test(kafka_real, transactions_aborted_never_written_commits_reach_end)
{
	static const char *const txn[] = { "--txn-abort-every", "3", "--txn-size", "500", NULL };
	struct load l = { .topic = "txn", .parts = 4, .records = 30000, .keys = 5000,
			  .seed = "2104", .extra = txn };
	unsigned long long txns = 0, aborted_txns = 0, aborted = 0;
	int64_t counted[H_MAX_PARTS], end_sum, t0;
	char line[512], err[256];
	struct h_proc k;
	struct h_summary s;
	const char *p;
	int rc;

	skip_unless_real("the mock keeps no aborted transactions");
	start_world(&l);
	wait_produced(&l, 120000, line, sizeof(line));
	p = strstr(line, " txns=");
	cr_assert(p != NULL &&
			  sscanf(p, " txns=%llu aborted_txns=%llu aborted_records=%llu", &txns,
				 &aborted_txns, &aborted) == 3,
		  "no transaction counts in '%s'", line);
	cr_assert_eq(aborted_txns, txns / 3, "%s", line);
	rc = h_kafka_count_records(W.bootstrap, W.topic, l.parts, counted, NULL, 60000, err,
				   sizeof(err));
	cr_assert_eq(rc, 0, "counting: %s", err);
	cr_assert_eq(h_offsets_sum(counted, l.parts), (int64_t)(l.records - aborted),
		     "read_committed gives %" PRId64 " records, %" PRIu64 " were committed",
		     h_offsets_sum(counted, l.parts), l.records - aborted);

	t0 = h_now_ms();
	start_k2mc(&k, l.topic, "txn", 1, NULL);
	finish_k2mc(&k, 120000, "k2mc -e over transactions", &s);
	cr_log_info("k2mc -e over %llu transactions (%llu aborted): %.1f s", txns, aborted_txns,
		    world_secs_since(t0));
	cr_assert_eq(s.consumed, l.records - aborted,
		     "consumed %" PRIu64 "; committed records %" PRIu64 " (aborted %llu)",
		     s.consumed, l.records - aborted, aborted);
	assert_cache(l.expect, NULL, "transactions");
	assert_committed_at_end(l.topic, l.parts, "txn", "transactions", &end_sum);
	cr_log_info("end offsets sum to %" PRId64 " for %" PRIu64 " records (markers and aborted)",
		    end_sum, l.records);
	cr_assert_gt(end_sum, (int64_t)l.records, "no commit markers counted in the end offsets");
	log_done("transactions");
}

/* (e) -------------------------------------------------------------------------
 * A compacted topic made with the admin API, its segments rolled every
 * 100 ms while 60,000 records over 2,000 keys arrive for 3 s, the cleaner
 * (log.cleaner.backoff.ms 200 in the launcher) told to clean at 1% dirty.
 * k2mc starts only once compaction has left offset gaps in every
 * partition. */
Test(kafka_real, compacted_topic_with_offset_gaps)
{
	static const char *const cfg[] = { "cleanup.policy=compact", "segment.ms=100",
					   "segment.bytes=1048576", "min.cleanable.dirty.ratio=0.01",
					   NULL };
	struct load l = { .topic = "compacted", .parts = 4, .records = 60000, .keys = 2000,
			  .seed = "2105", .rate = "20000" };
	int64_t counted[H_MAX_PARTS], start[H_MAX_PARTS], end[H_MAX_PARTS], t0, left = 0;
	char err[256], blog[H_PATH_MAX + 32];
	struct h_proc k;
	struct h_summary s;
	struct h_kafka *kh;
	int rc, compacted = 0;

	skip_unless_real("the mock does not compact");
	/* a broker of its own (its log names the cleaner's work), the topic,
	 * then the producer: here the topic's configs go through the admin API
	 * of the harness, not k2mc-mock */
	memset(&W, 0, sizeof(W));
	W.backend = H_KAFKA_REAL;
	world_start_memcached(&W, 1, NULL);
	rc = h_kafka_real_start(&W.real, NULL);
	W.own_broker = 1;
	cr_assert_eq(rc, 0, "broker: %s\n%s", strerror(-rc), world_tail(W.real.proc.err_path));
	cr_log_info("kafka %s: broker ready %" PRId64 " ms after its launch", W.real.version,
		    W.real.start_ms);
	W.bootstrap = W.real.bootstrap;
	W.t0 = h_now_ms();
	snprintf(blog, sizeof(blog), "%s/node1/server.log", W.real.dir);
	rc = h_kafka_create_topic(W.bootstrap, world_name(l.topic), l.parts, 1, cfg, 30000, err,
				  sizeof(err));
	cr_assert_eq(rc, 0, "create %s: %s", l.topic, err);
	start_load(&l, &W.mock);
	wait_produced(&l, 90000, NULL, 0);

	/* compacted: every partition holds less than half its offsets, and
	 * the cleaner is done (two counts in a row agree; it cleans the next
	 * dirty log at once, and waits log.cleaner.backoff.ms only when none
	 * is left), so what k2mc reads next is what was counted */
	t0 = h_now_ms();
	while (!compacted) {
		int64_t before = left;

		rc = h_kafka_count_records(W.bootstrap, world_name(l.topic), l.parts, counted, start, 30000, err,
					   sizeof(err));
		cr_assert_eq(rc, 0, "counting: %s", err);
		kh = h_kafka_open(W.bootstrap, NULL, err, sizeof(err));
		cr_assert_not_null(kh, "%s", err);
		cr_assert_eq(h_kafka_end_offsets(kh, world_name(l.topic), l.parts, end, 5000), 0);
		h_kafka_close(kh);
		left = h_offsets_sum(counted, l.parts);
		compacted = left == before;
		for (int p = 0; p < l.parts; p++)
			if (counted[p] * 2 >= end[p] - start[p])
				compacted = 0;
		if (!compacted) {
			cr_assert_lt(h_now_ms() - t0, 90000,
				     "no compaction within 90 s: %" PRId64 " of %" PRId64
				     " offsets still hold records; broker log:\n%s",
				     left, h_offsets_sum(end, l.parts), h_tail_of(blog, 10));
			usleep(500 * 1000); /* the poll interval of the wait above */
		}
	}
	left = h_offsets_sum(counted, l.parts);
	cr_log_info("compaction: %" PRId64 " of %" PRId64 " offsets hold records, %.1f s after "
		    "production",
		    left, h_offsets_sum(end, l.parts), world_secs_since(t0));

	t0 = h_now_ms();
	start_k2mc(&k, l.topic, "compacted", 1, NULL);
	finish_k2mc(&k, 120000, "k2mc -e over a compacted topic", &s);
	cr_log_info("k2mc -e over the compacted topic: %.1f s", world_secs_since(t0));
	cr_assert_eq((int64_t)s.consumed, left, "consumed %" PRIu64 ", the topic holds %" PRId64,
		     s.consumed, left);
	assert_cache(l.expect, NULL, "compacted");
	assert_committed_at_end(l.topic, l.parts, "compacted", "compacted", NULL);
	log_done("compacted topic");
}
