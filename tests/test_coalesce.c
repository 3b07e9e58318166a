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

#include "harness.h"

/* 400,000 records of 100 bytes over 100 keys, 16 partitions: ~3 MB per
 * partition, under the mock's 5 MiB retention */
#define HOT_TOPIC "hot"
#define HOT_PARTS 16
#define HOT_RECORDS 400000
#define HOT_KEYS "100"
#define ONE_TOPIC "one"
#define DLQ "dead"
#define TEST_TIMEOUT_S 120

static struct {
	struct h_memcached mc;
	struct h_mock mock;
	char mc_addr[64];
	char expect[H_PATH_MAX];
} W;

static void teardown(void)
{
	h_cleanup();
}

TestSuite(coalesce, .fini = teardown, .timeout = TEST_TIMEOUT_S);

static const char *tail_of(const char *path)
{
	return h_tail_of(path, 15);
}

/* One "stats" answer's value for name, or -1. */
static int64_t mc_stat(const char *name)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)W.mc.port) };
	char buf[16384], want[64];
	size_t have = 0;
	int64_t v = -1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	const char *p;

	cr_assert_geq(fd, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect: %s",
		     strerror(errno));
	cr_assert_eq(write(fd, "stats\r\n", 7), 7);
	while (have < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);

		if (r <= 0)
			break;
		have += (size_t)r;
		buf[have] = '\0';
		if (strstr(buf, "END\r\n") != NULL)
			break;
	}
	close(fd);
	buf[have] = '\0';
	snprintf(want, sizeof(want), "STAT %s ", name);
	p = strstr(buf, want);
	if (p != NULL)
		v = strtoll(p + strlen(want), NULL, 10);
	return v;
}

static int64_t mc_writes(void)
{
	return mc_stat("cmd_set") + mc_stat("delete_hits") + mc_stat("delete_misses");
}

static void start_memcached(void)
{
	int rc = h_memcached_start(&W.mc, 0, NULL);

	cr_assert_eq(rc, 0, "memcached did not start: %s", strerror(-rc));
	snprintf(W.mc_addr, sizeof(W.mc_addr), "127.0.0.1:%d", W.mc.port);
}

/* Runs k2mc -e over topic with extra args to its end; its summary. */
static void run_k2mc(const char *topic, const char *group, const char *const extra[],
		     struct h_proc *k, struct h_summary *s)
{
	const char *args[40] = { "-b", W.mock.bootstrap, "-t", topic, "-G", group, "-m", W.mc_addr,
				 "-e", "--writers", "2", "-X", "session.timeout.ms=6000" };
	int a = 13, status = 0, rc;
	char st[96];

	for (int i = 0; extra != NULL && extra[i] != NULL; i++)
		args[a++] = extra[i];
	args[a] = NULL;
	rc = h_k2mc_start(k, NULL, args);
	cr_assert_eq(rc, 0, "cannot start k2mc: %s", strerror(-rc));
	rc = h_wait(k->pid, 90000, &status);
	if (rc == -ETIMEDOUT) {
		h_signal(k->pid, SIGKILL);
		h_wait(k->pid, 5000, NULL);
		cr_assert_fail("k2mc still running after 90 s; stderr:\n%s", tail_of(k->err_path));
	}
	cr_assert_eq(h_exit_code(status), 0, "k2mc ended with %s; stderr:\n%s",
		     h_status_str(status, st, sizeof(st)), tail_of(k->err_path));
	rc = h_summary_parse(k->err_path, s);
	cr_assert_eq(rc, 0, "no summary (%s); stderr:\n%s", strerror(-rc), tail_of(k->err_path));
}

/* 100 keys, 10% tombstones: a later delete wins over earlier sets and a
 * later set over an earlier delete, so the final state (the expect file)
 * is exact only if each key's last record of every batch is the one sent. */
Test(coalesce, hot_keys_fewer_writes_exact_state)
{
	char parts[32], n[32];
	const char *margs[] = { "--topic", parts, "--produce", n, "--keys", HOT_KEYS,
				"--value-size", "100", "--tombstones", "10", "--seed", "14",
				"--expect", W.expect, NULL };
	struct h_proc k;
	struct h_summary s;
	struct h_verify v;
	uint64_t produced = 0;
	int64_t writes, end[HOT_PARTS];
	struct h_kafka *kh;
	char err[256];
	int rc;

	memset(&W, 0, sizeof(W));
	start_memcached();
	h_tmppath(W.expect, sizeof(W.expect), "expect.txt");
	snprintf(parts, sizeof(parts), "%s:%d", HOT_TOPIC, HOT_PARTS);
	snprintf(n, sizeof(n), "%d", HOT_RECORDS);
	rc = h_mock_start(&W.mock, margs, 0, 15000);
	cr_assert_eq(rc, 0, "k2mc-mock: %s\n%s", strerror(-rc), tail_of(W.mock.proc.err_path));
	rc = h_mock_wait_produced(&W.mock, 60000, &produced);
	cr_assert_eq(rc, 0, "production: %s\n%s", strerror(-rc), tail_of(W.mock.proc.err_path));
	cr_assert_eq(produced, HOT_RECORDS);
	cr_assert_eq(h_file_contains(W.mock.proc.err_path, "retention"), 0,
		     "the mock dropped records (retention)");

	run_k2mc(HOT_TOPIC, "coalesce-hot", NULL, &k, &s);
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
	rc = h_verify_memcached(W.expect, "127.0.0.1", W.mc.port, NULL, &v);
	cr_assert_eq(rc, 0, "cache check could not run: %s", v.first);
	cr_expect_eq(h_verify_mismatches(&v), 0,
		     "cache differs from the last record of each key: %zu missing, %zu wrong, %zu "
		     "deleted but present; first:\n%s", v.missing, v.wrong, v.present, v.first);
	/* superseded records are acknowledged: everything is committed */
	kh = h_kafka_open(W.mock.bootstrap, NULL, err, sizeof(err));
	cr_assert_not_null(kh, "%s", err);
	cr_assert_eq(h_kafka_end_offsets(kh, HOT_TOPIC, HOT_PARTS, end, 10000), 0);
	h_kafka_close(kh);
	for (int p = 0; p < HOT_PARTS; p++)
		cr_expect_eq(h_summary_committed(&s, HOT_TOPIC, p), end[p],
			     "partition %d committed %" PRId64 ", end %" PRId64, p,
			     h_summary_committed(&s, HOT_TOPIC, p), end[p]);
}

/* Produces (key, value) pairs to ONE_TOPIC partition 0 in order. */
static void produce(const char *const kv[][2], int n)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512];
	rd_kafka_t *rk;

	cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", W.mock.bootstrap, e, sizeof(e)),
		     RD_KAFKA_CONF_OK, "%s", e);
	cr_assert_eq(rd_kafka_conf_set(conf, "enable.idempotence", "true", e, sizeof(e)),
		     RD_KAFKA_CONF_OK, "%s", e);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
	cr_assert_not_null(rk, "producer: %s", e);
	for (int i = 0; i < n; i++) {
		rd_kafka_resp_err_t err = rd_kafka_producev(
			rk, RD_KAFKA_V_TOPIC(ONE_TOPIC), RD_KAFKA_V_PARTITION(0),
			RD_KAFKA_V_KEY(kv[i][0], strlen(kv[i][0])),
			RD_KAFKA_V_VALUE((void *)kv[i][1], strlen(kv[i][1])),
			RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);

		cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce %d: %s", i,
			     rd_kafka_err2str(err));
	}
	cr_assert_eq(rd_kafka_flush(rk, 15000), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_destroy(rk);
}

/* The offsets of the dead letter topic's records (their k2mc.error.offset
 * headers), from the beginning; how many. */
static int dead_letter_offsets(int64_t *out, int max)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	int64_t deadline = h_now_ms() + 15000;
	char e[512];
	rd_kafka_t *rk;
	int n = 0;

	rd_kafka_conf_set(conf, "bootstrap.servers", W.mock.bootstrap, e, sizeof(e));
	rd_kafka_conf_set(conf, "group.id", "coalesce-dlq-reader", e, sizeof(e));
	rd_kafka_conf_set(conf, "enable.partition.eof", "true", e, sizeof(e));
	rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof(e));
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
	cr_assert_not_null(rk, "dead letter reader: %s", e);
	rd_kafka_topic_partition_list_add(l, DLQ, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
	cr_assert_eq(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(l);
	while (h_now_ms() < deadline) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
		rd_kafka_headers_t *h = NULL;
		const void *v;
		size_t vl;

		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			rd_kafka_message_destroy(m);
			break;
		}
		cr_assert_eq(m->err, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_message_errstr(m));
		cr_assert_lt(n, max);
		out[n] = -1;
		if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
		    rd_kafka_header_get_last(h, "k2mc.error.offset", &v, &vl) ==
			    RD_KAFKA_RESP_ERR_NO_ERROR)
			out[n] = strtoll(strndupa(v, vl), NULL, 10);
		n++;
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return n;
}

static char *mc_get(const char *key)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)W.mc.port) };
	char buf[4096], cmd[300], *p, *val = NULL;
	size_t have = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned flags, len;

	cr_assert_geq(fd, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	snprintf(cmd, sizeof(cmd), "get %s\r\n", key);
	cr_assert_eq(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
	while (have < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);

		if (r <= 0)
			break;
		have += (size_t)r;
		buf[have] = '\0';
		if (strstr(buf, "END\r\n") != NULL)
			break;
	}
	close(fd);
	buf[have] = '\0';
	if (sscanf(buf, "VALUE %*s %u %u", &flags, &len) == 2 && (p = strstr(buf, "\r\n")) != NULL)
		val = strndup(p + 2, len);
	return val;
}

/* A value k2mc refuses (over --max-value-bytes) under --on-invalid dlq
 * goes to the dead letter topic even where a later record of its key
 * supersedes it, and a refused record never supersedes the valid one
 * before it: the key keeps the last value k2mc could store. */
Test(coalesce, refused_records_still_dead_lettered)
{
	static const char *const margs[] = { "--topic", ONE_TOPIC ":1", "--topic", DLQ ":1",
					     "--stdin-control", NULL };
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
	const char *extra[] = { "--max-value-bytes", "16", "--on-invalid", "dlq", "--dlq-topic", DLQ,
				NULL };
	int64_t off[16];
	struct h_proc k;
	struct h_summary s;
	char *v;
	int n, rc;

	memset(&W, 0, sizeof(W));
	start_memcached();
	rc = h_mock_start(&W.mock, margs, 1, 15000);
	cr_assert_eq(rc, 0, "k2mc-mock: %s\n%s", strerror(-rc), tail_of(W.mock.proc.err_path));
	produce(kv, 7);
	run_k2mc(ONE_TOPIC, "coalesce-dlq", extra, &k, &s);
	n = dead_letter_offsets(off, 16);
	cr_assert_eq(n, 2, "%d dead letters, want the 2 refused records; stderr:\n%s", n,
		     tail_of(k.err_path));
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
	cr_expect_eq(h_summary_committed(&s, ONE_TOPIC, 0), 7);
}

/* Under --on-invalid skip a value over the limit deletes its key in its
 * place; superseded by a later valid record of the key it is still counted
 * as skipped (value_too_large), and the later value stands. */
Test(coalesce, superseded_refused_value_still_counted_skipped)
{
	static const char *const margs[] = { "--topic", ONE_TOPIC ":1", "--stdin-control", NULL };
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
	int rc;

	memset(&W, 0, sizeof(W));
	start_memcached();
	rc = h_mock_start(&W.mock, margs, 1, 15000);
	cr_assert_eq(rc, 0, "k2mc-mock: %s\n%s", strerror(-rc), tail_of(W.mock.proc.err_path));
	produce(kv, 4);
	run_k2mc(ONE_TOPIC, "coalesce-skip", extra, &k, &s);
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
	cr_expect_eq(h_summary_committed(&s, ONE_TOPIC, 0), 4);
}
