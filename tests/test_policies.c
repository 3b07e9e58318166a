/* Integration suite for --on-invalid skip|hash|dlq|fail: a topic holding
 * good records and records Memcached cannot take (null and empty keys, a
 * 251-byte key, keys with a space or a control byte, a value over
 * --max-value-bytes, a tombstone with a bad key), produced by this test,
 * run through k2mc -e against a k2mc-mock cluster and a memcached. Checks
 * the cache key by key, the counts k2mc reports, the dead letter topic's
 * records and headers, and where a failing run leaves the committed offset.
 * Not about faults (test_faults.c) nor speed. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "harness.h"

#define TOPIC "bad"
#define DLQ "dead"
#define MAX_VALUE "2000"
#define NGOOD_KEYS 100
#define NRECORDS 300
/* every wait below has its own deadline; this only stops a wedged test */
#define TEST_TIMEOUT_S 90

/* One record of the test topic, at offset = its index (one partition). */
struct rec {
	const char *key; /* NULL: null key */
	size_t klen;
	const char *val; /* NULL: tombstone */
	size_t vlen;
	const char *reason; /* NULL: a good record; else why Memcached cannot take it */
	const char *header; /* "name=value" header, or NULL */
};

static struct {
	struct h_memcached mc;
	struct h_mock mock;
	char mc_addr[64];
	struct rec recs[NRECORDS];
	int nrecs;
	char long_key[251];
	char big_value[3000];
	char good_keys[NGOOD_KEYS][16];
	char good_vals[NRECORDS][32];
} W;

static void teardown(void)
{
	h_cleanup();
}

TestSuite(policies, .fini = teardown, .timeout = TEST_TIMEOUT_S);

static const char *tail_of(const char *path)
{
	return h_tail_of(path, 15);
}

/* The bad records and where they sit among the good ones. Offsets are
 * their indices. */
static const struct {
	int at;
	int kind;
} BAD[] = {
	{ 10, 0 }, /* null key */
	{ 20, 1 }, /* empty key */
	{ 30, 2 }, /* 251-byte key */
	{ 40, 3 }, /* "has space", with a header */
	{ 50, 4 }, /* "ctl\x01x" */
	{ 60, 5 }, /* value over --max-value-bytes */
	{ 70, 6 }, /* tombstone of "has space" */
	{ 80, 7 }, /* the 251-byte key again, new value */
};
#define NBAD ((int)(sizeof(BAD) / sizeof(BAD[0])))
#define FIRST_BAD 10

static void build_records(void)
{
	int g = 0;

	memset(W.long_key, 'L', sizeof(W.long_key));
	memset(W.big_value, 'b', sizeof(W.big_value));
	for (int k = 0; k < NGOOD_KEYS; k++)
		snprintf(W.good_keys[k], sizeof(W.good_keys[k]), "good-%03d", k);
	W.nrecs = NRECORDS;
	for (int i = 0; i < NRECORDS; i++) {
		struct rec *r = &W.recs[i];
		int bad = -1;

		for (int b = 0; b < NBAD; b++)
			if (BAD[b].at == i)
				bad = BAD[b].kind;
		memset(r, 0, sizeof(*r));
		switch (bad) {
		case 0:
			*r = (struct rec){ NULL, 0, "nokey", 5, "missing_key", NULL };
			break;
		case 1:
			*r = (struct rec){ "", 0, "emptykey", 8, "missing_key", NULL };
			break;
		case 2:
			*r = (struct rec){ W.long_key, 251, "long", 4, "key_too_long", NULL };
			break;
		case 3:
			*r = (struct rec){ "has space", 9, "spc", 3, "key_bad_bytes", "trace=t-40" };
			break;
		case 4:
			*r = (struct rec){ "ctl\x01x", 5, "ctl", 3, "key_bad_bytes", NULL };
			break;
		case 5:
			*r = (struct rec){ "big", 3, W.big_value, sizeof(W.big_value),
					   "value_too_large", NULL };
			break;
		case 6:
			*r = (struct rec){ "has space", 9, NULL, 0, "key_bad_bytes", NULL };
			break;
		case 7:
			*r = (struct rec){ W.long_key, 251, "long2", 5, "key_too_long", NULL };
			break;
		default:
			snprintf(W.good_vals[i], sizeof(W.good_vals[i]), "value-%d", i);
			r->key = W.good_keys[g % NGOOD_KEYS];
			r->klen = strlen(r->key);
			r->val = W.good_vals[i];
			r->vlen = strlen(r->val);
			g++;
			break;
		}
	}
}

/* memcached, and a mock with TOPIC (1 partition) and DLQ, holding the
 * records above, produced in order by this process. */
static void start_world(void)
{
	static const char *const args[] = { "--topic", TOPIC ":1", "--topic", DLQ ":1",
					    "--stdin-control", NULL };
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512];
	rd_kafka_t *rk;
	int rc;

	memset(&W, 0, sizeof(W));
	build_records();
	rc = h_memcached_start(&W.mc, 0, NULL);
	cr_assert_eq(rc, 0, "memcached did not start: %s", strerror(-rc));
	snprintf(W.mc_addr, sizeof(W.mc_addr), "127.0.0.1:%d", W.mc.port);
	rc = h_mock_start(&W.mock, args, 1, 15000);
	cr_assert_eq(rc, 0, "k2mc-mock: %s\n%s", strerror(-rc), tail_of(W.mock.proc.err_path));

	/* idempotence: offsets are the records' indices even if a request is
	 * retried */
	cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", W.mock.bootstrap, e, sizeof(e)),
		     RD_KAFKA_CONF_OK, "%s", e);
	cr_assert_eq(rd_kafka_conf_set(conf, "enable.idempotence", "true", e, sizeof(e)),
		     RD_KAFKA_CONF_OK, "%s", e);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
	cr_assert_not_null(rk, "producer: %s", e);
	for (int i = 0; i < W.nrecs; i++) {
		const struct rec *r = &W.recs[i];
		rd_kafka_headers_t *h = NULL;
		rd_kafka_resp_err_t err;

		if (r->header != NULL) {
			const char *eq = strchr(r->header, '=');

			h = rd_kafka_headers_new(1);
			rd_kafka_header_add(h, r->header, eq - r->header, eq + 1, -1);
		}
		err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
					RD_KAFKA_V_KEY(r->key, r->klen),
					RD_KAFKA_V_VALUE((void *)r->val, r->vlen),
					RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
		cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce %d: %s", i,
			     rd_kafka_err2str(err));
	}
	cr_assert_eq(rd_kafka_flush(rk, 15000), RD_KAFKA_RESP_ERR_NO_ERROR,
		     "records not delivered in 15 s");
	rd_kafka_destroy(rk);
}

/* Runs k2mc -e over TOPIC with extra args; returns its exit code. The
 * session timeout is short so that a run that fails does not hold the
 * group (test_pipeline.c says why). */
static int run_k2mc(struct h_proc *k, const char *group, const char *const extra[],
		    int timeout_ms)
{
	const char *args[40] = { "-b", W.mock.bootstrap, "-t", TOPIC, "-G", group, "-m", W.mc_addr,
				 "-e", "--writers", "2", "--max-value-bytes", MAX_VALUE,
				 "--stats-interval-ms", "1000", "-X", "session.timeout.ms=6000" };
	int a = 17, status = 0, rc;

	for (int i = 0; extra != NULL && extra[i] != NULL; i++)
		args[a++] = extra[i];
	args[a] = NULL;
	rc = h_k2mc_start(k, NULL, args);
	cr_assert_eq(rc, 0, "cannot start k2mc: %s", strerror(-rc));
	rc = h_wait(k->pid, timeout_ms, &status);
	if (rc == -ETIMEDOUT) {
		h_signal(k->pid, SIGKILL);
		h_wait(k->pid, 5000, NULL);
		cr_assert_fail("k2mc still running after %d ms; stderr:\n%s", timeout_ms,
			       tail_of(k->err_path));
	}
	cr_assert(h_exit_code(status) >= 0, "k2mc did not exit normally; stderr:\n%s",
		  tail_of(k->err_path));
	return h_exit_code(status);
}

/* ---- what k2mc reports ---------------------------------------------------- */

struct counts {
	struct h_summary s;
	uint64_t skipped_by[5]; /* missing_key key_too_long key_bad_bytes value_too_large */
	uint64_t hashed, dead_lettered, dl_by[5], undelivered, refused;
	int have_invalid_line;
};

static const char *const REASONS[] = { "", "missing_key", "key_too_long", "key_bad_bytes",
				       "value_too_large" };

/* The number after "name " in line, or -1. */
static int64_t number_after(const char *line, const char *name)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "%s ", name);
	p = strstr(line, pat);
	return p != NULL ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

static char *last_line_with(const char *path, const char *marker)
{
	char *b = h_file_read(path, NULL), *line = NULL, *p, *nl, *out;

	if (b == NULL)
		return NULL;
	for (p = b; (p = strstr(p, marker)) != NULL; p++)
		line = p;
	if (line == NULL) {
		free(b);
		return NULL;
	}
	nl = strchr(line, '\n');
	out = strndup(line, nl ? (size_t)(nl - line) : strlen(line));
	free(b);
	return out;
}

static void read_counts(const struct h_proc *k, struct counts *c)
{
	char *sum, *inv;
	int rc;

	memset(c, 0, sizeof(*c));
	rc = h_summary_parse(k->err_path, &c->s);
	cr_assert_eq(rc, 0, "no summary (%s); stderr:\n%s", strerror(-rc), tail_of(k->err_path));
	sum = last_line_with(k->err_path, "k2mc: summary:");
	cr_assert_not_null(sum);
	for (int r = 1; r <= 4; r++) {
		int64_t v = number_after(sum, REASONS[r]);

		cr_assert_geq(v, 0, "summary has no '%s' count: %s", REASONS[r], sum);
		c->skipped_by[r] = (uint64_t)v;
	}
	free(sum);
	/* "invalid records: hashed H (...); dead-lettered D to T (...),
	 * undelivered U; refused R" */
	inv = last_line_with(k->err_path, "invalid records: ");
	if (inv == NULL)
		return;
	c->have_invalid_line = 1;
	c->hashed = (uint64_t)number_after(inv, "hashed");
	c->dead_lettered = (uint64_t)number_after(inv, "dead-lettered");
	c->undelivered = (uint64_t)number_after(inv, "undelivered");
	c->refused = (uint64_t)number_after(inv, "refused");
	{
		const char *dl = strstr(inv, "dead-lettered");

		for (int r = 1; dl != NULL && r <= 4; r++)
			c->dl_by[r] = (uint64_t)number_after(dl, REASONS[r]);
	}
	free(inv);
}

/* Records of TOPIC by reason, from the table above. */
static uint64_t bad_count(const char *reason)
{
	uint64_t n = 0;

	for (int i = 0; i < W.nrecs; i++)
		n += W.recs[i].reason != NULL && strcmp(W.recs[i].reason, reason) == 0;
	return n;
}

/* ---- what Memcached and Kafka hold ----------------------------------------- */

/* The value of key in memcached (malloc'd, NUL-terminated), or NULL. */
static char *mc_get(const char *key, size_t klen, size_t *vlen)
{
	memcached_st *memc = memcached_create(NULL);
	memcached_return_t rc;
	uint32_t flags;
	char *v;

	memcached_server_add(memc, "127.0.0.1", (in_port_t)W.mc.port);
	v = memcached_get(memc, key, klen, vlen, &flags, &rc);
	memcached_free(memc);
	return v;
}

/* The last good value of every good key is in the cache. */
static void assert_good_keys_written(void)
{
	for (int k = 0; k < NGOOD_KEYS; k++) {
		const char *want = NULL;
		size_t vlen = 0;
		char *v;

		for (int i = 0; i < W.nrecs; i++)
			if (W.recs[i].reason == NULL && strcmp(W.recs[i].key, W.good_keys[k]) == 0)
				want = W.recs[i].val;
		v = mc_get(W.good_keys[k], strlen(W.good_keys[k]), &vlen);
		cr_assert_not_null(v, "%s: missing from the cache", W.good_keys[k]);
		cr_assert(vlen == strlen(want) && memcmp(v, want, vlen) == 0,
			  "%s: cache has '%.*s', expected '%s'", W.good_keys[k], (int)vlen, v, want);
		free(v);
	}
}

/* The key --on-invalid hash stores a record under, from the README's
 * formula: prefix (none here) + 32 lowercase hex of XXH3-128, high half
 * first. */
static size_t hashed_key(const char *key, size_t klen, char *out)
{
	XXH128_hash_t h = XXH3_128bits(key, klen);

	return (size_t)sprintf(out, "%016llx%016llx", (unsigned long long)h.high64,
			       (unsigned long long)h.low64);
}

static uint64_t mc_curr_items(void)
{
	memcached_st *memc = memcached_create(NULL);
	memcached_return_t rc;
	memcached_stat_st *st;
	uint64_t n = 0;

	memcached_server_add(memc, "127.0.0.1", (in_port_t)W.mc.port);
	st = memcached_stat(memc, NULL, &rc);
	if (st != NULL) {
		n = st[0].curr_items;
		memcached_stat_free(memc, st);
	}
	memcached_free(memc);
	return n;
}

struct letter {
	char *key; /* NULL: null key */
	size_t klen;
	char *val;
	size_t vlen;
	char reason[32], topic[64], message[200], trace[32];
	int64_t partition, offset;
};

static void copy_header(const rd_kafka_headers_t *h, const char *name, char *out, size_t len)
{
	const void *v;
	size_t n;

	out[0] = '\0';
	if (h != NULL && rd_kafka_header_get_last(h, name, &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR)
		snprintf(out, len, "%.*s", (int)n, (const char *)v);
}

/* Reads the whole dead letter topic (partition 0) from the beginning. */
static int read_dead_letters(struct letter *out, int max)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	int64_t deadline = h_now_ms() + 15000;
	char e[512], num[32];
	rd_kafka_t *rk;
	int n = 0;

	rd_kafka_conf_set(conf, "bootstrap.servers", W.mock.bootstrap, e, sizeof(e));
	rd_kafka_conf_set(conf, "group.id", "policies-dlq-reader", e, sizeof(e));
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

		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			rd_kafka_message_destroy(m);
			break;
		}
		cr_assert_eq(m->err, RD_KAFKA_RESP_ERR_NO_ERROR, "reading %s: %s", DLQ,
			     rd_kafka_message_errstr(m));
		cr_assert_lt(n, max, "more than %d dead letters", max);
		out[n].key = m->key ? strndup(m->key, m->key_len) : NULL;
		out[n].klen = m->key_len;
		out[n].val = m->payload ? strndup(m->payload, m->len) : NULL;
		out[n].vlen = m->len;
		rd_kafka_message_headers(m, &h);
		copy_header(h, "k2mc.error.reason", out[n].reason, sizeof(out[n].reason));
		copy_header(h, "k2mc.error.topic", out[n].topic, sizeof(out[n].topic));
		copy_header(h, "k2mc.error.message", out[n].message, sizeof(out[n].message));
		copy_header(h, "trace", out[n].trace, sizeof(out[n].trace));
		copy_header(h, "k2mc.error.partition", num, sizeof(num));
		out[n].partition = num[0] ? strtoll(num, NULL, 10) : -1;
		copy_header(h, "k2mc.error.offset", num, sizeof(num));
		out[n].offset = num[0] ? strtoll(num, NULL, 10) : -1;
		n++;
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return n;
}

/* Each dead letter is the record at its k2mc.error.offset, whole, and the
 * set of offsets is exactly `want` (in order). */
static void assert_dead_letters(const int *want, int nwant)
{
	struct letter dl[NRECORDS];
	int n = read_dead_letters(dl, NRECORDS);

	cr_assert_eq(n, nwant, "%s holds %d records, expected %d", DLQ, n, nwant);
	for (int i = 0; i < n; i++) {
		const struct rec *r;

		cr_assert_eq(dl[i].offset, want[i], "dead letter %d is offset %" PRId64 ", expected %d",
			     i, dl[i].offset, want[i]);
		r = &W.recs[want[i]];
		cr_assert_str_eq(dl[i].reason, r->reason, "offset %d", want[i]);
		cr_assert_str_eq(dl[i].topic, TOPIC);
		cr_assert_eq(dl[i].partition, 0);
		cr_assert(dl[i].message[0] != '\0', "offset %d: no k2mc.error.message", want[i]);
		cr_assert_eq(dl[i].klen, r->klen, "offset %d: key length", want[i]);
		if (r->klen > 0)
			cr_assert(memcmp(dl[i].key, r->key, r->klen) == 0, "offset %d: key", want[i]);
		cr_assert_eq(dl[i].vlen, r->vlen, "offset %d: value length", want[i]);
		cr_assert((dl[i].val == NULL) == (r->val == NULL), "offset %d: tombstone kept",
			  want[i]);
		if (r->vlen > 0)
			cr_assert(memcmp(dl[i].val, r->val, r->vlen) == 0, "offset %d: value", want[i]);
		if (r->header != NULL)
			cr_assert_str_eq(dl[i].trace, strchr(r->header, '=') + 1,
					 "offset %d: the record's own header was not kept", want[i]);
		free(dl[i].key);
		free(dl[i].val);
	}
}

static void assert_committed(const char *group, int64_t want)
{
	char err[256];
	struct h_kafka *k = h_kafka_open(W.mock.bootstrap, group, err, sizeof(err));
	int64_t off[1] = { -2 };

	cr_assert_not_null(k, "%s", err);
	cr_assert_eq(h_kafka_committed(k, TOPIC, 1, off, 5000), 0);
	h_kafka_close(k);
	cr_assert_eq(off[0], want, "group %s committed %" PRId64 ", expected %" PRId64, group, off[0],
		     want);
}

static uint64_t good_count(void)
{
	return (uint64_t)W.nrecs - NBAD;
}

/* ---- the policies ---------------------------------------------------------- */

Test(policies, skip_counts_each_reason_and_writes_the_rest)
{
	static const char *const extra[] = { "--on-invalid", "skip", NULL };
	struct h_proc k;
	struct counts c;

	start_world();
	cr_assert_eq(run_k2mc(&k, "skip", extra, 40000), 0, "stderr:\n%s", tail_of(k.err_path));
	read_counts(&k, &c);
	for (int r = 1; r <= 4; r++)
		cr_expect_eq(c.skipped_by[r], bad_count(REASONS[r]), "skipped %s: %" PRIu64
			     ", the topic has %" PRIu64, REASONS[r], c.skipped_by[r],
			     bad_count(REASONS[r]));
	cr_expect_eq(c.s.skipped, NBAD);
	cr_expect_eq(c.s.written, good_count());
	cr_expect_eq(c.s.consumed, (uint64_t)W.nrecs);
	/* the first of each reason is named once, with its offset */
	cr_expect(h_file_contains(k.err_path, "bad [0] @10: skipped, missing_key"),
		  "stderr:\n%s", tail_of(k.err_path));
	cr_expect(h_file_contains(k.err_path, "bad [0] @30: skipped, key_too_long"));
	cr_expect(!h_file_contains(k.err_path, "bad [0] @20: skipped"),
		  "the second missing key was logged too");
	assert_good_keys_written();
	cr_expect_eq(mc_curr_items(), NGOOD_KEYS, "only the good keys are in the cache");
	assert_committed("skip", W.nrecs);
}

Test(policies, hash_stores_bad_keys_under_their_digest_and_skips_the_rest)
{
	static const char *const extra[] = { "--on-invalid", "hash", NULL };
	char hk[64];
	size_t n, vlen;
	struct h_proc k;
	struct counts c;
	char *v;

	start_world();
	cr_assert_eq(run_k2mc(&k, "hash", extra, 40000), 0, "stderr:\n%s", tail_of(k.err_path));
	read_counts(&k, &c);
	cr_assert(c.have_invalid_line, "no 'invalid records:' line; stderr:\n%s",
		  tail_of(k.err_path));
	cr_expect_eq(c.hashed, bad_count("key_too_long") + bad_count("key_bad_bytes"));
	/* missing keys and large values cannot be hashed: skipped, and said */
	cr_expect_eq(c.skipped_by[1], bad_count("missing_key"));
	cr_expect_eq(c.skipped_by[4], bad_count("value_too_large"));
	cr_expect_eq(c.skipped_by[2] + c.skipped_by[3], 0);
	cr_expect(h_file_contains(k.err_path, "missing_key records cannot be hashed; they are "
					      "skipped (no --dlq-topic)"),
		  "stderr:\n%s", tail_of(k.err_path));
	cr_expect(h_file_contains(k.err_path, "value_too_large records cannot be hashed"));
	/* 4 sets under hashed keys, 1 delete of one */
	cr_expect_eq(c.s.written, good_count() + 4);
	cr_expect_eq(c.s.deleted, 1);
	assert_good_keys_written();

	n = hashed_key(W.long_key, 251, hk);
	v = mc_get(hk, n, &vlen);
	cr_assert_not_null(v, "the 251-byte key's hashed key %s is not in the cache", hk);
	cr_expect(vlen == 5 && memcmp(v, "long2", 5) == 0, "hashed long key holds '%.*s'",
		  (int)vlen, v);
	free(v);
	n = hashed_key("ctl\x01x", 5, hk);
	v = mc_get(hk, n, &vlen);
	cr_assert_not_null(v, "hashed key of \"ctl\\x01x\" missing");
	cr_expect(vlen == 3 && memcmp(v, "ctl", 3) == 0);
	free(v);
	/* set at offset 40, deleted by the tombstone at 70 */
	n = hashed_key("has space", 9, hk);
	v = mc_get(hk, n, &vlen);
	cr_expect_null(v, "the tombstone of \"has space\" did not delete its hashed key");
	free(v);
	cr_expect_eq(mc_curr_items(), NGOOD_KEYS + 2);
	assert_committed("hash", W.nrecs);
}

Test(policies, hash_falls_back_to_the_dead_letter_topic)
{
	static const char *const extra[] = { "--on-invalid", "hash", "--dlq-topic", DLQ, NULL };
	static const int want[] = { 10, 20, 60 };
	struct h_proc k;
	struct counts c;

	start_world();
	cr_assert_eq(run_k2mc(&k, "hash-dlq", extra, 40000), 0, "stderr:\n%s",
		     tail_of(k.err_path));
	read_counts(&k, &c);
	cr_expect_eq(c.hashed, 5);
	cr_expect_eq(c.dead_lettered, 3, "stderr:\n%s", tail_of(k.err_path));
	cr_expect_eq(c.dl_by[1], 2);
	cr_expect_eq(c.dl_by[4], 1);
	cr_expect_eq(c.s.skipped, 0);
	cr_expect(h_file_contains(k.err_path, "missing_key records cannot be hashed; they go to the "
					      "dead letter topic " DLQ));
	assert_dead_letters(want, 3);
	assert_good_keys_written();
	assert_committed("hash-dlq", W.nrecs);
}

Test(policies, dlq_copies_each_bad_record_with_its_origin)
{
	static const char *const extra[] = { "--on-invalid", "dlq", "--dlq-topic", DLQ, NULL };
	int want[NBAD];
	struct h_proc k;
	struct counts c;

	for (int b = 0; b < NBAD; b++)
		want[b] = BAD[b].at;
	start_world();
	cr_assert_eq(run_k2mc(&k, "dlq", extra, 40000), 0, "stderr:\n%s", tail_of(k.err_path));
	read_counts(&k, &c);
	cr_expect_eq(c.s.skipped, 0);
	cr_expect_eq(c.dead_lettered, NBAD, "stderr:\n%s", tail_of(k.err_path));
	for (int r = 1; r <= 4; r++)
		cr_expect_eq(c.dl_by[r], bad_count(REASONS[r]), "dead-lettered %s", REASONS[r]);
	cr_expect_eq(c.undelivered, 0);
	cr_expect_eq(c.s.written, good_count());
	assert_dead_letters(want, NBAD);
	assert_good_keys_written();
	cr_expect_eq(mc_curr_items(), NGOOD_KEYS);
	assert_committed("dlq", W.nrecs);
}

/* A dead letter the cluster refuses is never acknowledged: k2mc stops,
 * exit 1, naming it, and the commit stays at the first such record. */
Test(policies, dlq_delivery_failure_stops_before_the_record)
{
	static const char *const extra[] = { "--on-invalid", "dlq", "--dlq-topic", DLQ, NULL };
	char answer[128];
	struct h_proc k;
	int64_t t0;
	int rc;

	start_world();
	/* Produce (API key 0) answers TOPIC_AUTHORIZATION_FAILED (29), which
	 * a producer does not retry */
	rc = h_mock_command(&W.mock, "errors 0 29 1000", answer, sizeof(answer), 5000);
	cr_assert_eq(rc, 0, "errors: %s", answer);
	t0 = h_now_ms();
	rc = run_k2mc(&k, "dlq-refused", extra, 40000);
	cr_assert_eq(rc, 1, "exit %d, expected 1; stderr:\n%s", rc, tail_of(k.err_path));
	cr_log_info("exit 1 after %.1fs", (double)(h_now_ms() - t0) / 1000.0);
	cr_expect(h_file_contains(k.err_path, "dead letter topic " DLQ ": delivery of " TOPIC " [0] @"),
		  "stderr:\n%s", tail_of(k.err_path));
	assert_committed("dlq-refused", FIRST_BAD);
}

Test(policies, fail_stops_at_the_first_bad_record)
{
	static const char *const extra[] = { "--on-invalid", "fail", NULL };
	char *line;
	struct h_proc k;
	int64_t t0, off;
	int rc, named = 0;

	start_world();
	t0 = h_now_ms();
	/* the default --shutdown-timeout-ms is 30 s: a drain that waited for
	 * the refused record would show */
	rc = run_k2mc(&k, "fail", extra, 25000);
	cr_assert_eq(rc, 1, "exit %d, expected 1; stderr:\n%s", rc, tail_of(k.err_path));
	cr_log_info("exit 1 after %.1fs", (double)(h_now_ms() - t0) / 1000.0);
	line = h_file_read(k.err_path, NULL);
	cr_assert_not_null(line);
	/* the message names one of the bad records (two writers may each meet
	 * one; the commit is what must be exact) */
	{
		const char *p = strstr(line, "--on-invalid fail: " TOPIC " [0] @");

		cr_assert_not_null(p, "no '--on-invalid fail' message; stderr:\n%s",
				   tail_of(k.err_path));
		off = strtoll(p + strlen("--on-invalid fail: " TOPIC " [0] @"), NULL, 10);
		for (int b = 0; b < NBAD; b++)
			named |= BAD[b].at == off;
		cr_expect(named, "the message names offset %" PRId64 ", not a bad record", off);
	}
	free(line);
	assert_committed("fail", FIRST_BAD);
}
