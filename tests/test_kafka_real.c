/* Integration suite: k2mc against a real Apache Kafka broker (issue 21),
 * started per test by tests/kafka/kafka-broker (kafka_real.h), with a
 * Debian memcached. Each scenario checks that every key's final value in
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

#include "harness.h"
#include "kafka_real.h"

/* every wait has its own deadline; this only stops a wedged test */
#define TEST_TIMEOUT_S 240

struct world {
	struct h_memcached mc;
	struct h_kcluster kc;
	char mc_addr[64];
	const char *bootstrap;
	int64_t t0; /* the test's start */
};

static struct world W;

static void teardown(void)
{
	/* brokers first, through their launcher: a clean stop of the JVMs
	 * before h_cleanup removes their directories */
	if (W.kc.backend == H_KAFKA_REAL)
		h_kafka_real_stop(&W.kc.real, 0);
	h_cleanup();
}

TestSuite(kafka_real, .fini = teardown, .timeout = TEST_TIMEOUT_S);

static const char *tail_of(const char *path)
{
	return h_tail_of(path, 15);
}

static double secs_since(int64_t t0)
{
	return (double)(h_now_ms() - t0) / 1000.0;
}

static void skip_unless_real(const char *why)
{
	if (h_kafka_backend() != H_KAFKA_REAL)
		cr_skip_test("needs a real broker (K2MC_KAFKA=real): %s", why);
}

static void start_memcached(void)
{
	int rc;

	memset(&W, 0, sizeof(W));
	W.t0 = h_now_ms();
	rc = h_memcached_start(&W.mc, 0, NULL);
	cr_assert_eq(rc, 0, "memcached did not start: %s", strerror(-rc));
	snprintf(W.mc_addr, sizeof(W.mc_addr), "127.0.0.1:%d", W.mc.port);
}

/* One producer's job: topic:parts, records over keys with 5% tombstones,
 * 100-byte values, an expect file; extra k2mc-mock args (NULL-terminated)
 * after them. */
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

static int load_args(struct load *l, const char **args, int max)
{
	static char topic[8][80], n[8][24], k[8][16];
	static int slot;
	int a = 0, s = slot++ % 8;

	snprintf(topic[s], sizeof(topic[s]), "%s:%d", l->topic, l->parts);
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
	if (l->rate != NULL) {
		args[a++] = "--rate";
		args[a++] = l->rate;
	}
	for (int i = 0; l->extra != NULL && l->extra[i] != NULL && a < max - 1; i++)
		args[a++] = l->extra[i];
	args[a] = NULL;
	return a;
}

/* memcached, the cluster of the K2MC_KAFKA backend and the first load's
 * producer. */
static void start_world(struct load *l)
{
	const char *args[64];
	int rc;

	start_memcached();
	load_args(l, args, 64);
	rc = h_kcluster_start(&W.kc, NULL, args, 0, 90000);
	cr_assert_eq(rc, 0, "%s cluster or k2mc-mock did not start: %s\nlauncher:\n%s\nk2mc-mock:\n%s",
		     h_kafka_backend_name(h_kafka_backend()), strerror(-rc),
		     W.kc.backend == H_KAFKA_REAL ? tail_of(W.kc.real.proc.err_path) : "",
		     tail_of(W.kc.mock.proc.err_path));
	W.bootstrap = W.kc.mock.bootstrap;
	l->mk = &W.kc.mock;
	if (W.kc.backend == H_KAFKA_REAL)
		cr_log_info("kafka %s: broker ready %" PRId64 " ms after its launch (format %" PRId64
			    " ms before)",
			    W.kc.real.version, W.kc.real.start_ms, W.kc.real.format_ms);
}

/* A further producer into the running cluster. */
static void start_load(struct load *l, struct h_mock *mk)
{
	const char *args[64];
	int rc;

	load_args(l, args, 64);
	rc = h_producer_start(mk, W.bootstrap, args, 90000);
	cr_assert_eq(rc, 0, "k2mc-mock -b for %s: %s\n%s", l->topic, strerror(-rc),
		     tail_of(mk->proc.err_path));
	l->mk = mk;
}

/* Waits for the load's production; returns the produced= line. */
static void wait_produced(struct load *l, int timeout_ms, char *line, size_t len)
{
	uint64_t acked = 0;
	int rc = h_mock_wait_produced(l->mk, timeout_ms, &acked);
	char buf[512];

	cr_assert_eq(rc, 0, "producing %s: %s\nk2mc-mock stderr:\n%s", l->topic, strerror(-rc),
		     tail_of(l->mk->proc.err_path));
	cr_assert_eq(acked, l->records, "%s: %" PRIu64 " of %" PRIu64 " records acknowledged",
		     l->topic, acked, l->records);
	rc = h_wait_line(l->mk->proc.out_path, "^produced=", NULL, 0, 1000, buf, sizeof(buf));
	cr_assert_eq(rc, 0);
	if (line != NULL)
		snprintf(line, len, "%s", buf);
}

/* k2mc -b -t -G -m --stats-interval-ms 1000 [-e] extra... */
static void start_k2mc(struct h_proc *k, const char *topic, const char *group, int eof,
		       const char *const extra[])
{
	const char *args[48];
	int a = 0, rc;

	args[a++] = "-b";
	args[a++] = W.bootstrap;
	args[a++] = "-t";
	args[a++] = topic;
	args[a++] = "-G";
	args[a++] = group;
	args[a++] = "-m";
	args[a++] = W.mc_addr;
	args[a++] = "--stats-interval-ms";
	args[a++] = "1000";
	if (eof)
		args[a++] = "-e";
	for (int i = 0; extra != NULL && extra[i] != NULL && a < 47; i++)
		args[a++] = extra[i];
	args[a] = NULL;
	rc = h_k2mc_start(k, NULL, args);
	cr_assert_eq(rc, 0, "cannot start k2mc: %s", strerror(-rc));
}

/* Waits for k2mc to exit 0 and parses its summary. */
static void finish_k2mc(struct h_proc *k, int timeout_ms, const char *what, struct h_summary *s)
{
	char st[96];
	int status = 0, rc;
	int64_t t0 = h_now_ms();

	rc = h_wait(k->pid, timeout_ms, &status);
	if (rc == -ETIMEDOUT) {
		h_signal(k->pid, SIGKILL);
		h_wait(k->pid, 5000, NULL);
		cr_assert_fail("%s: k2mc -e still running after %d ms; stderr:\n%s", what,
			       timeout_ms, tail_of(k->err_path));
	}
	cr_assert_eq(h_exit_code(status), 0, "%s: k2mc ended with %s after %.1fs; stderr:\n%s",
		     what, h_status_str(status, st, sizeof(st)), secs_since(t0),
		     tail_of(k->err_path));
	rc = h_summary_parse(k->err_path, s);
	cr_assert_eq(rc, 0, "%s: no parsable summary line (%s); stderr:\n%s", what, strerror(-rc),
		     tail_of(k->err_path));
	cr_assert_eq(s->unwritten, 0, "%s: summary says unwritten %" PRIu64, what, s->unwritten);
	cr_assert_eq(s->written + s->deleted + s->skipped + s->coalesced, s->consumed,
		     "%s: written + deleted + skipped + coalesced != consumed %" PRIu64, what,
		     s->consumed);
}

/* Every key of the expect file holds its last record's value (or is absent
 * after a tombstone), keys prefixed with prefix (NULL: none). Returns the
 * number of live keys. */
static size_t assert_cache(const char *expect, const char *prefix, const char *what)
{
	struct h_verify v;
	int rc = h_verify_memcached(expect, "127.0.0.1", W.mc.port, prefix, &v);

	cr_assert_eq(rc, 0, "%s: cache check could not run: %s", what, v.first);
	cr_assert_eq(h_verify_mismatches(&v), 0,
		     "%s: cache differs from %s (%zu S + %zu D keys): %zu missing, %zu with another "
		     "value, %zu deleted but present; first:\n%s",
		     what, expect, v.sets, v.deletes, v.missing, v.wrong, v.present, v.first);
	cr_log_info("%s: cache matches: %zu keys set, %zu deleted", what, v.sets, v.deletes);
	return v.sets;
}

static uint64_t mc_items(void)
{
	struct h_verify v;
	char empty[H_PATH_MAX];
	FILE *f;

	/* an empty expect file: the check reads curr_items alone */
	h_tmppath(empty, sizeof(empty), "empty-expect.txt");
	f = fopen(empty, "w");
	cr_assert_not_null(f);
	fclose(f);
	cr_assert_eq(h_verify_memcached(empty, "127.0.0.1", W.mc.port, NULL, &v), 0, "%s", v.first);
	return v.server_items;
}

/* The group's committed offsets equal the end offsets on every partition;
 * *end_sum (may be NULL) gets the sum of the end offsets. */
static void assert_committed_at_end(const char *topic, int parts, const char *group,
				    const char *what, int64_t *end_sum)
{
	int64_t committed[H_MAX_PARTS], end[H_MAX_PARTS];
	char err[256], diff[512];
	struct h_kafka *k = h_kafka_open(W.bootstrap, group, err, sizeof(err));
	int rc, n, d;

	cr_assert_not_null(k, "kafka handle: %s", err);
	n = h_kafka_partitions(k, topic, 5000);
	cr_assert_eq(n, parts, "topic %s has %d partitions, expected %d", topic, n, parts);
	rc = h_kafka_end_offsets(k, topic, n, end, 5000);
	cr_assert_eq(rc, 0, "end offsets of %s: %s", topic, strerror(-rc));
	rc = h_kafka_committed(k, topic, n, committed, 5000);
	cr_assert_eq(rc, 0, "committed offsets of %s: %s", group, strerror(-rc));
	h_kafka_close(k);
	d = h_offsets_diff(committed, end, n, diff, sizeof(diff));
	cr_assert_eq(d, 0, "%s: %d of %d partitions of %s have committed != end offset: %s", what,
		     d, n, topic, diff);
	if (end_sum != NULL)
		*end_sum = h_offsets_sum(end, n);
}

/* Polls until group has committed an offset > 0 somewhere while k runs. */
static double wait_first_commit(struct h_proc *k, const char *topic, int parts,
				const char *group, int timeout_ms)
{
	char err[256], st[96];
	struct h_kafka *kh = h_kafka_open(W.bootstrap, group, err, sizeof(err));
	int64_t t0 = h_now_ms(), off[H_MAX_PARTS];
	int status;

	cr_assert_not_null(kh, "kafka handle: %s", err);
	for (;;) {
		if (h_exited(k->pid, &status) == 1)
			cr_assert_fail("k2mc ended (%s) before committing anything; stderr:\n%s",
				       h_status_str(status, st, sizeof(st)), tail_of(k->err_path));
		if (h_kafka_committed(kh, topic, parts, off, 2000) == 0) {
			for (int p = 0; p < parts; p++) {
				if (off[p] > 0) {
					h_kafka_close(kh);
					return secs_since(t0);
				}
			}
		}
		if (h_now_ms() - t0 >= timeout_ms)
			break;
		usleep(100 * 1000);
	}
	h_kafka_close(kh);
	cr_assert_fail("group %s committed nothing within %d ms; k2mc stderr:\n%s", group,
		       timeout_ms, tail_of(k->err_path));
	return -1;
}

static void log_done(const char *scenario)
{
	cr_log_info("%s on %s%s%s: %.1f s", scenario, h_kafka_backend_name(W.kc.backend),
		    W.kc.backend == H_KAFKA_REAL ? " kafka " : "",
		    W.kc.backend == H_KAFKA_REAL ? W.kc.real.version : "", secs_since(W.t0));
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
	cr_log_info("k2mc -e over %" PRIu64 " records: %.1f s", l.records, secs_since(t0));
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
	struct h_kafka *kh;
	char st[96], err[256];
	int status = 0;
	int64_t t0;

	start_world(&l);
	start_k2mc(&k1, l.topic, "kill9", 0, short_session);
	cr_log_info("first commit after %.1f s",
		    wait_first_commit(&k1, l.topic, l.parts, "kill9", 60000));
	cr_assert(!h_file_exists(l.expect),
		  "production finished before the kill, so the kill was not mid-run");
	cr_assert_eq(h_signal(k1.pid, SIGKILL), 0);
	cr_assert_eq(h_wait(k1.pid, 5000, &status), 0, "k2mc did not die of SIGKILL");
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "k2mc ended with %s",
		  h_status_str(status, st, sizeof(st)));

	wait_produced(&l, 90000, NULL, 0);
	kh = h_kafka_open(W.bootstrap, "kill9", err, sizeof(err));
	cr_assert_not_null(kh, "%s", err);
	cr_assert_eq(h_kafka_committed(kh, l.topic, l.parts, committed, 5000), 0);
	cr_assert_eq(h_kafka_end_offsets(kh, l.topic, l.parts, end, 5000), 0);
	h_kafka_close(kh);
	for (int p = 0; p < l.parts; p++)
		resume += end[p] - (committed[p] > 0 ? committed[p] : 0);
	cr_log_info("after the kill: %" PRId64 " of %" PRIu64 " records committed",
		    (int64_t)l.records - resume, l.records);

	t0 = h_now_ms();
	start_k2mc(&k2, l.topic, "kill9", 1, short_session);
	finish_k2mc(&k2, 120000, "restart with -e", &s);
	cr_log_info("restart with -e: %.1f s", secs_since(t0));
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
			    secs_since(t0));
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
	rc = h_kafka_count_records(W.bootstrap, l.topic, l.parts, counted, NULL, 60000, err,
				   sizeof(err));
	cr_assert_eq(rc, 0, "counting: %s", err);
	cr_assert_eq(h_offsets_sum(counted, l.parts), (int64_t)(l.records - aborted),
		     "read_committed gives %" PRId64 " records, %" PRIu64 " were committed",
		     h_offsets_sum(counted, l.parts), l.records - aborted);

	t0 = h_now_ms();
	start_k2mc(&k, l.topic, "txn", 1, NULL);
	finish_k2mc(&k, 120000, "k2mc -e over transactions", &s);
	cr_log_info("k2mc -e over %llu transactions (%llu aborted): %.1f s", txns, aborted_txns,
		    secs_since(t0));
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
	const char *args[64];
	char err[256], blog[H_PATH_MAX + 32];
	struct h_proc k;
	struct h_summary s;
	struct h_kafka *kh;
	int rc, compacted = 0;

	skip_unless_real("the mock does not compact");
	start_memcached();
	/* the broker, the topic, then the producer: here the topic's configs
	 * go through the admin API of the harness, not k2mc-mock */
	W.kc.backend = H_KAFKA_REAL;
	rc = h_kafka_real_start(&W.kc.real, NULL);
	cr_assert_eq(rc, 0, "broker: %s\n%s", strerror(-rc), tail_of(W.kc.real.proc.err_path));
	cr_log_info("kafka %s: broker ready %" PRId64 " ms after its launch", W.kc.real.version,
		    W.kc.real.start_ms);
	W.bootstrap = W.kc.real.bootstrap;
	snprintf(blog, sizeof(blog), "%s/node1/server.log", W.kc.real.dir);
	rc = h_kafka_create_topic(W.bootstrap, l.topic, l.parts, 1, cfg, 30000, err, sizeof(err));
	cr_assert_eq(rc, 0, "create %s: %s", l.topic, err);
	load_args(&l, args, 64);
	rc = h_producer_start(&W.kc.mock, W.bootstrap, args, 90000);
	cr_assert_eq(rc, 0, "k2mc-mock -b: %s\n%s", strerror(-rc), tail_of(W.kc.mock.proc.err_path));
	l.mk = &W.kc.mock;
	wait_produced(&l, 90000, NULL, 0);

	/* compacted: every partition holds less than half its offsets, and
	 * the cleaner is done (two counts in a row agree; it cleans the next
	 * dirty log at once, and waits log.cleaner.backoff.ms only when none
	 * is left), so what k2mc reads next is what was counted */
	t0 = h_now_ms();
	while (!compacted) {
		int64_t before = left;

		rc = h_kafka_count_records(W.bootstrap, l.topic, l.parts, counted, start, 30000, err,
					   sizeof(err));
		cr_assert_eq(rc, 0, "counting: %s", err);
		kh = h_kafka_open(W.bootstrap, NULL, err, sizeof(err));
		cr_assert_not_null(kh, "%s", err);
		cr_assert_eq(h_kafka_end_offsets(kh, l.topic, l.parts, end, 5000), 0);
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
		    left, h_offsets_sum(end, l.parts), secs_since(t0));

	t0 = h_now_ms();
	start_k2mc(&k, l.topic, "compacted", 1, NULL);
	finish_k2mc(&k, 120000, "k2mc -e over a compacted topic", &s);
	cr_log_info("k2mc -e over the compacted topic: %.1f s", secs_since(t0));
	cr_assert_eq((int64_t)s.consumed, left, "consumed %" PRIu64 ", the topic holds %" PRId64,
		     s.consumed, left);
	assert_cache(l.expect, NULL, "compacted");
	assert_committed_at_end(l.topic, l.parts, "compacted", "compacted", NULL);
	log_done("compacted topic");
}
