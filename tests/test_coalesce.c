/* Integration suite for write coalescing (writer.c): within one batch only
 * the last write of each Memcached key is sent. A hot-key topic must reach
 * memcached as far fewer writes than records (memcached's own counters)
 * with the final state exact, every record counted once (written, deleted
 * or coalesced) and committed; a value k2mc refuses (--on-invalid dlq) is
 * still dead-lettered and never hides the older valid value under it.
 * Not about speed: the bench measures that. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "world.h"

/* 400,000 records of 100 bytes over 100 keys, 16 partitions: ~3 MB per
 * partition, under the mock's 5 MiB retention */
#define HOT_TOPIC "hot"
#define HOT_PARTS 16
#define HOT_RECORDS 400000
#define HOT_KEYS 100
#define ONE_TOPIC "one"
#define DLQ "dead"
#define TEST_TIMEOUT_S 120

static struct world W;

WORLD_SUITE(coalesce, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

/* Runs k2mc -e over topic with extra args to its end; its summary. */
static void run_k2mc(const char *topic, const char *group, const char *const extra[],
		     struct h_proc *k, struct h_summary *s)
{
	static const char *const args[] = { "--writers", "2", "-X", "session.timeout.ms=6000",
					    NULL };

	world_k2mc_start(&W, k, &(struct world_k2mc){ .topic = topic, .group = group, .eof = 1,
						      .args = args, .args2 = extra });
	world_k2mc_finish(k, 90000, "k2mc -e", s);
}

static int64_t mc_writes(void)
{
	int port = W.mc[0].port;

	return world_mc_stat(port, NULL, "cmd_set") + world_mc_stat(port, NULL, "delete_hits") +
	       world_mc_stat(port, NULL, "delete_misses");
}

static char *mc_get(const char *key)
{
	return world_mc_get(W.mc[0].port, key, strlen(key), NULL);
}

/* 100 keys, 10% tombstones: a later delete wins over earlier sets and a
 * later set over an earlier delete, so the final state (the expect file)
 * is exact only if each key's last record of every batch is the one sent. */
Test(coalesce, hot_keys_fewer_writes_exact_state)
{
	struct h_proc k;
	struct h_summary s;
	struct h_verify v;
	int64_t writes, end[HOT_PARTS];
	int rc;

	world_start(&W, &(struct world_opts){ .topic = HOT_TOPIC, .parts = HOT_PARTS,
					      .records = HOT_RECORDS, .keys = HOT_KEYS,
					      .value_size = 100, .tombstones = 10, .seed = "14" });
	world_wait_produced(&W, HOT_RECORDS, 60000);
	cr_assert_eq(h_file_contains(W.mock.proc.err_path, "retention"), 0,
		     "the mock dropped records (retention)");

	run_k2mc(W.topic, "coalesce-hot", NULL, &k, &s);
	writes = mc_writes();
	cr_expect_eq(s.consumed, HOT_RECORDS);
	cr_expect_eq(s.written + s.deleted + s.coalesced, s.consumed,
		     "written %" PRIu64 " + deleted %" PRIu64 " + coalesced %" PRIu64
		     " != consumed %" PRIu64, s.written, s.deleted, s.coalesced, s.consumed);
	cr_expect_eq((uint64_t)writes, s.written + s.deleted,
		     "memcached counted %" PRId64 " writes, k2mc %" PRIu64, writes,
		     s.written + s.deleted);
	cr_expect_lt(writes * 2, HOT_RECORDS,
		     "%" PRId64 " writes for %d records: not under 0.5 per record", writes,
		     HOT_RECORDS);
	rc = h_verify_memcached(W.expect, "127.0.0.1", W.mc[0].port, NULL, &v);
	cr_assert_eq(rc, 0, "cache check could not run: %s", v.first);
	cr_expect_eq(h_verify_mismatches(&v), 0,
		     "cache differs from the last record of each key: %zu missing, %zu wrong, %zu "
		     "deleted but present; first:\n%s", v.missing, v.wrong, v.present, v.first);
	/* superseded records are acknowledged: everything is committed */
	world_offsets(&W, NULL, 0, NULL, NULL, end);
	for (int p = 0; p < HOT_PARTS; p++)
		cr_expect_eq(h_summary_committed(&s, W.topic, p), end[p],
			     "partition %d committed %" PRId64 ", end %" PRId64, p,
			     h_summary_committed(&s, W.topic, p), end[p]);
}

/* Produces (key, value) pairs to the world's topic, partition 0, in order. */
static void produce(const char *const kv[][2], int n)
{
	rd_kafka_t *rk = world_producer(&W, NULL);

	for (int i = 0; i < n; i++) {
		rd_kafka_resp_err_t err = rd_kafka_producev(
			rk, RD_KAFKA_V_TOPIC(W.topic), RD_KAFKA_V_PARTITION(0),
			RD_KAFKA_V_KEY(kv[i][0], strlen(kv[i][0])),
			RD_KAFKA_V_VALUE((void *)kv[i][1], strlen(kv[i][1])),
			RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);

		cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce %d: %s", i,
			     rd_kafka_err2str(err));
	}
	world_producer_close(rk);
}

/* A value k2mc refuses (over --max-value-bytes) under --on-invalid dlq
 * goes to the dead letter topic even where a later record of its key
 * supersedes it, and a refused record never supersedes the valid one
 * before it: the key keeps the last value k2mc could store. */
Test(coalesce, refused_records_still_dead_lettered)
{
	/* offsets = indices */
	static const char *const kv[][2] = {
		{ "k", "v1" },
		{ "k", "refused-because-this-value-is-longer-than-the-limit" },
		{ "k", "v3" },
		{ "j", "w1" },
		{ "j", "w2" },
		{ "i", "u1" },
		{ "i", "refused-because-this-value-is-longer-than-the-limit-too" },
	};
	char dlq[200];
	const char *margs[] = { "--topic", dlq, NULL };
	const char *extra[] = { "--max-value-bytes", "16", "--on-invalid", "dlq", "--dlq-topic",
				world_name(DLQ), NULL };
	struct world_letter dl[16];
	int64_t off[16];
	struct h_proc k;
	struct h_summary s;
	char *v;
	int n;

	snprintf(dlq, sizeof(dlq), "%s:1", extra[5]);
	world_start(&W, &(struct world_opts){ .topic = ONE_TOPIC, .parts = 1, .no_expect = 1,
					      .control = 1, .mock_args = margs });
	produce(kv, 7);
	run_k2mc(W.topic, "coalesce-dlq", extra, &k, &s);
	n = world_read_dlq(&W, extra[5], dl, 16);
	for (int i = 0; i < n; i++)
		off[i] = dl[i].offset;
	world_letters_free(dl, n);
	cr_assert_eq(n, 2, "%d dead letters, want the 2 refused records; stderr:\n%s", n,
		     world_tail(k.err_path));
	/* k and i may go to different writers: either order */
	cr_expect((off[0] == 1 && off[1] == 6) || (off[0] == 6 && off[1] == 1),
		  "dead letters at offsets %" PRId64 " and %" PRId64 ", want 1 and 6", off[0], off[1]);
	v = mc_get("k");
	cr_expect(v != NULL && strcmp(v, "v3") == 0, "k holds '%s', want v3", v ? v : "(none)");
	free(v);
	v = mc_get("j");
	cr_expect(v != NULL && strcmp(v, "w2") == 0, "j holds '%s', want w2", v ? v : "(none)");
	free(v);
	v = mc_get("i");
	cr_expect(v != NULL && strcmp(v, "u1") == 0, "i holds '%s', want u1 (the refused value "
		  "must not supersede it)", v ? v : "(none)");
	free(v);
	cr_expect_eq(s.written + s.coalesced, 5, "written %" PRIu64 " + coalesced %" PRIu64,
		     s.written, s.coalesced);
	cr_expect_leq(s.coalesced, 2);
	cr_expect_eq(h_summary_committed(&s, W.topic, 0), 7);
}

/* Under --on-invalid skip a value over the limit deletes its key in its
 * place; superseded by a later valid record of the key it is still counted
 * as skipped (value_too_large), and the later value stands. */
Test(coalesce, superseded_refused_value_still_counted_skipped)
{
	static const char *const kv[][2] = {
		{ "k", "v1" },
		{ "k", "refused-because-this-value-is-longer-than-the-limit" },
		{ "k", "v3" },
		{ "g", "refused-because-this-value-is-longer-than-the-limit" },
	};
	const char *extra[] = { "--max-value-bytes", "16", "--on-invalid", "skip", NULL };
	struct h_proc k;
	struct h_summary s;
	char *v;

	world_start(&W, &(struct world_opts){ .topic = ONE_TOPIC, .parts = 1, .no_expect = 1,
					      .control = 1 });
	produce(kv, 4);
	run_k2mc(W.topic, "coalesce-skip", extra, &k, &s);
	v = mc_get("k");
	cr_expect(v != NULL && strcmp(v, "v3") == 0, "k holds '%s', want v3", v ? v : "(none)");
	free(v);
	v = mc_get("g");
	cr_expect_null(v, "g holds '%s': its refused value must delete it", v ? v : "");
	free(v);
	cr_expect_eq(s.skipped, 2, "skipped %" PRIu64 ", want both refused values", s.skipped);
	cr_expect_eq(s.written + s.coalesced, 2, "written %" PRIu64 " + coalesced %" PRIu64,
		     s.written, s.coalesced);
	cr_expect_eq(s.written + s.deleted + s.skipped + s.coalesced, 4);
	cr_expect_eq(h_summary_committed(&s, W.topic, 0), 4);
}
