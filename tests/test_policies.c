/* Integration suite for --on-invalid skip|hash|dlq|fail: a topic holding
 * good records and records Memcached cannot take (null and empty keys, a
 * 251-byte key, keys with a space or a control byte, a value over
 * --max-value-bytes, a tombstone with a bad key), produced by this test,
 * run through k2mc -e against a k2mc-mock cluster and a memcached. Checks
 * the cache key by key, the counts k2mc reports, the dead letter topic's
 * records and headers, and where a failing run leaves the committed offset.
 * Also what counts as the record's fault and what as the server's: values
 * over the servers' item limits (the key's old value is deleted), and a
 * fake server's CLIENT_ERROR replies (retried, never skipped).
 * Not about faults (test_faults.c) nor speed. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "world.h"

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

static struct world W;
/* world_name(DLQ) of the current world */
static const char *dlq_topic;

/* The records of a test */
static struct {
	struct rec recs[NRECORDS];
	int nrecs;
	char long_key[251];
	char big_value[3000];
	char good_keys[NGOOD_KEYS][16];
	char good_vals[NRECORDS][32];
} R;

WORLD_SUITE(policies, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

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

	memset(R.long_key, 'L', sizeof(R.long_key));
	memset(R.big_value, 'b', sizeof(R.big_value));
	for (int k = 0; k < NGOOD_KEYS; k++)
		snprintf(R.good_keys[k], sizeof(R.good_keys[k]), "good-%03d", k);
	R.nrecs = NRECORDS;
	for (int i = 0; i < NRECORDS; i++) {
		struct rec *r = &R.recs[i];
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
			*r = (struct rec){ R.long_key, 251, "long", 4, "key_too_long", NULL };
			break;
		case 3:
			*r = (struct rec){ "has space", 9, "spc", 3, "key_bad_bytes", "trace=t-40" };
			break;
		case 4:
			*r = (struct rec){ "ctl\x01x", 5, "ctl", 3, "key_bad_bytes", NULL };
			break;
		case 5:
			*r = (struct rec){ "big", 3, R.big_value, sizeof(R.big_value),
					   "value_too_large", NULL };
			break;
		case 6:
			*r = (struct rec){ "has space", 9, NULL, 0, "key_bad_bytes", NULL };
			break;
		case 7:
			*r = (struct rec){ R.long_key, 251, "long2", 5, "key_too_long", NULL };
			break;
		default:
			snprintf(R.good_vals[i], sizeof(R.good_vals[i]), "value-%d", i);
			r->key = R.good_keys[g % NGOOD_KEYS];
			r->klen = strlen(r->key);
			r->val = R.good_vals[i];
			r->vlen = strlen(r->val);
			g++;
			break;
		}
	}
}

/* memcached on port (0: any free one), with extra arguments. */
/* memcached on port (0: any) after the world started without one */
static void start_memcached(int port, const char *const extra[])
{
	int rc = h_memcached_start(&W.mc[0], port, extra);

	cr_assert_eq(rc, 0, "memcached did not start: %s", strerror(-rc));
	snprintf(W.mc_addr, sizeof(W.mc_addr), "127.0.0.1:%d", W.mc[0].port);
}

/* TOPIC and DLQ, one partition each, and memcached with mc_args unless
 * nmc is -1 (a test that starts its own later). */
static void start_mock(int nmc, const char *const mc_args[])
{
	static const char *const more[] = { DLQ ":1", NULL };
	/* records up to 2,000,000 bytes (produce() allows 10,000,000) */
	static const char *const big[] = { "max.message.bytes=10000000", NULL };

	world_start(&W, &(struct world_opts){ .topic = TOPIC, .parts = 1, .no_expect = 1,
					      .control = 1, .topics = more, .topic_config = big,
					      .nmc = nmc, .mc_args = mc_args });
	dlq_topic = world_name(DLQ);
}

/* Produces recs[0..n) to TOPIC partition 0, in order: offset = index. */
static void produce(const struct rec *recs, int n)
{
	/* values of a few MB (the item size limit tests) */
	static const char *const few_mb[] = { "message.max.bytes=10000000", NULL };
	/* idempotent: offsets are the records' indices */
	rd_kafka_t *rk = world_producer(&W, few_mb);

	for (int i = 0; i < n; i++) {
		const struct rec *r = &recs[i];
		rd_kafka_headers_t *h = NULL;
		rd_kafka_resp_err_t err;

		if (r->header != NULL) {
			const char *eq = strchr(r->header, '=');

			h = rd_kafka_headers_new(1);
			rd_kafka_header_add(h, r->header, eq - r->header, eq + 1, -1);
		}
		err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(W.topic), RD_KAFKA_V_PARTITION(0),
					RD_KAFKA_V_KEY(r->key, r->klen),
					RD_KAFKA_V_VALUE((void *)r->val, r->vlen),
					RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
		cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce %d: %s", i,
			     rd_kafka_err2str(err));
	}
	world_producer_close(rk);
}

/* memcached, and a mock with TOPIC and DLQ, holding the records above,
 * produced in order by this process. */
static void start_world(void)
{
	memset(&R, 0, sizeof(R));
	build_records();
	start_mock(1, NULL);
	produce(R.recs, R.nrecs);
}

/* Starts k2mc -e over TOPIC with extra args, without waiting; max_value:
 * --max-value-bytes, or NULL for none (the servers' own limits only). The
 * session timeout is short so that a run that fails does not hold the
 * group (test_pipeline.c says why). */
static void start_k2mc(struct h_proc *k, const char *group, const char *max_value,
		       const char *const extra[])
{
	const char *args[48] = { "--writers", "2", "--stats-interval-ms", "1000", "-X",
				 "session.timeout.ms=6000" };
	int a = 6;

	if (max_value != NULL) {
		args[a++] = "--max-value-bytes";
		args[a++] = max_value;
	}
	for (int i = 0; extra != NULL && extra[i] != NULL; i++)
		args[a++] = extra[i];
	args[a] = NULL;
	world_k2mc_start(&W, k, &(struct world_k2mc){ .group = group, .mc = W.mc_addr, .eof = 1,
						      .args = args });
}

/* Waits for a k2mc started by start_k2mc to exit; returns its exit code. */
static int wait_k2mc(struct h_proc *k, int timeout_ms)
{
	int status = 0, rc = h_wait(k->pid, timeout_ms, &status);

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

/* Runs k2mc -e with --max-value-bytes MAX_VALUE; returns its exit code. */
static int run_k2mc(struct h_proc *k, const char *group, const char *const extra[],
		    int timeout_ms)
{
	start_k2mc(k, group, MAX_VALUE, extra);
	return wait_k2mc(k, timeout_ms);
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

	for (int i = 0; i < R.nrecs; i++)
		n += R.recs[i].reason != NULL && strcmp(R.recs[i].reason, reason) == 0;
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

	memcached_server_add(memc, "127.0.0.1", (in_port_t)W.mc[0].port);
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

		for (int i = 0; i < R.nrecs; i++)
			if (R.recs[i].reason == NULL && strcmp(R.recs[i].key, R.good_keys[k]) == 0)
				want = R.recs[i].val;
		v = mc_get(R.good_keys[k], strlen(R.good_keys[k]), &vlen);
		cr_assert_not_null(v, "%s: missing from the cache", R.good_keys[k]);
		cr_assert(vlen == strlen(want) && memcmp(v, want, vlen) == 0,
			  "%s: cache has '%.*s', expected '%s'", R.good_keys[k], (int)vlen, v, want);
		free(v);
	}
}

/* The key --on-invalid hash stores a record under, from docs/guarantees.md's
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

	memcached_server_add(memc, "127.0.0.1", (in_port_t)W.mc[0].port);
	st = memcached_stat(memc, NULL, &rc);
	if (st != NULL) {
		n = st[0].curr_items;
		memcached_stat_free(memc, st);
	}
	memcached_free(memc);
	return n;
}

/* Each dead letter is the record at its k2mc.error.offset, whole, and the
 * set of offsets is exactly `want` (in order). */
static void assert_dead_letters(const int *want, int nwant)
{
	struct world_letter dl[NRECORDS];
	int n = world_read_dlq(&W, dlq_topic, dl, NRECORDS);

	cr_assert_eq(n, nwant, "%s holds %d records, expected %d", dlq_topic, n, nwant);
	for (int i = 0; i < n; i++) {
		const struct rec *r;

		cr_assert_eq(dl[i].offset, want[i], "dead letter %d is offset %" PRId64 ", expected %d",
			     i, dl[i].offset, want[i]);
		r = &R.recs[want[i]];
		cr_assert_str_eq(dl[i].reason, r->reason, "offset %d", want[i]);
		cr_assert_str_eq(dl[i].topic, W.topic);
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
	struct h_kafka *k = h_kafka_open(W.bootstrap, world_name(group), err, sizeof(err));
	int64_t off[1] = { -2 };

	cr_assert_not_null(k, "%s", err);
	cr_assert_eq(h_kafka_committed(k, W.topic, 1, off, 5000), 0);
	h_kafka_close(k);
	cr_assert_eq(off[0], want, "group %s committed %" PRId64 ", expected %" PRId64, group, off[0],
		     want);
}

static uint64_t good_count(void)
{
	return (uint64_t)R.nrecs - NBAD;
}

/* ---- the policies ---------------------------------------------------------- */

Test(policies, skip_counts_each_reason_and_writes_the_rest)
{
	static const char *const extra[] = { "--on-invalid", "skip", NULL };
	char line[256];
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
	cr_expect_eq(c.s.written + c.s.coalesced, good_count());
	cr_expect_eq(c.s.consumed, (uint64_t)R.nrecs);
	/* the first of each reason is named once, with its offset */
	snprintf(line, sizeof(line), "%s [0] @10: skipped, missing_key", W.topic);
	cr_expect(h_file_contains(k.err_path, line), "stderr:\n%s", tail_of(k.err_path));
	snprintf(line, sizeof(line), "%s [0] @30: skipped, key_too_long", W.topic);
	cr_expect(h_file_contains(k.err_path, line));
	snprintf(line, sizeof(line), "%s [0] @20: skipped", W.topic);
	cr_expect(!h_file_contains(k.err_path, line), "the second missing key was logged too");
	assert_good_keys_written();
	cr_expect_eq(mc_curr_items(), NGOOD_KEYS, "only the good keys are in the cache");
	assert_committed("skip", R.nrecs);
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
	cr_expect_eq(c.s.written + c.s.coalesced, good_count() + 4);
	cr_expect_eq(c.s.deleted, 1);
	assert_good_keys_written();

	n = hashed_key(R.long_key, 251, hk);
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
	assert_committed("hash", R.nrecs);
}

Test(policies, hash_falls_back_to_the_dead_letter_topic)
{
	static const char *const extra[] = { "--on-invalid", "hash", "--dlq-topic", DLQ, NULL };
	char msg[256];
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
	snprintf(msg, sizeof(msg), "missing_key records cannot be hashed; they go to the dead "
		 "letter topic %s", dlq_topic);
	cr_expect(h_file_contains(k.err_path, msg), "stderr:\n%s", tail_of(k.err_path));
	assert_dead_letters(want, 3);
	assert_good_keys_written();
	assert_committed("hash-dlq", R.nrecs);
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
	cr_expect_eq(c.s.written + c.s.coalesced, good_count());
	assert_dead_letters(want, NBAD);
	assert_good_keys_written();
	cr_expect_eq(mc_curr_items(), NGOOD_KEYS);
	assert_committed("dlq", R.nrecs);
}

/* A dead letter the cluster refuses is never acknowledged: k2mc stops,
 * exit 1, naming it, and the commit stays at the first such record. */
Test(policies, dlq_delivery_failure_stops_before_the_record)
{
	static const char *const extra[] = { "--on-invalid", "dlq", "--dlq-topic", DLQ, NULL };
	char answer[128];
	struct h_proc k;
	char msg[400];
	int64_t t0;
	int rc;

	world_skip_unless_mock("errors (injected Produce errors) drives the mock cluster only");
	start_world();
	/* Produce (API key 0) answers TOPIC_AUTHORIZATION_FAILED (29), which
	 * a producer does not retry */
	rc = h_mock_command(&W.mock, "errors 0 29 1000", answer, sizeof(answer), 5000);
	cr_assert_eq(rc, 0, "errors: %s", answer);
	t0 = h_now_ms();
	rc = run_k2mc(&k, "dlq-refused", extra, 40000);
	cr_assert_eq(rc, 1, "exit %d, expected 1; stderr:\n%s", rc, tail_of(k.err_path));
	cr_log_info("exit 1 after %.1fs", (double)(h_now_ms() - t0) / 1000.0);
	snprintf(msg, sizeof(msg), "dead letter topic %s: delivery of %s [0] @", dlq_topic, W.topic);
	cr_expect(h_file_contains(k.err_path, msg), "stderr:\n%s", tail_of(k.err_path));
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
		char want[256];
		const char *p;

		snprintf(want, sizeof(want), "--on-invalid fail: %s [0] @", W.topic);
		p = strstr(line, want);
		cr_assert_not_null(p, "no '--on-invalid fail' message; stderr:\n%s",
				   tail_of(k.err_path));
		off = strtoll(p + strlen(want), NULL, 10);
		for (int b = 0; b < NBAD; b++)
			named |= BAD[b].at == off;
		cr_expect(named, "the message names offset %" PRId64 ", not a bad record", off);
	}
	free(line);
	assert_committed("fail", FIRST_BAD);
}

/* ---- values k2mc refuses: no stale value stays -------------------------------- */

/* The number after "\"name\":" in the final --stats-json object, or -1. */
static int64_t json_final(const char *path, const char *name)
{
	char *line = last_line_with(path, "\"final\":true"), pat[64];
	const char *p;
	int64_t v = -1;

	if (line == NULL)
		return -1;
	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(line, pat);
	if (p != NULL)
		v = strtoll(p + strlen(pat), NULL, 10);
	free(line);
	return v;
}

static void mc_set(const char *key, const char *val)
{
	memcached_st *memc = memcached_create(NULL);

	memcached_server_add(memc, "127.0.0.1", (in_port_t)W.mc[0].port);
	cr_assert_eq(memcached_set(memc, key, strlen(key), val, strlen(val), 0, 0),
		     MEMCACHED_SUCCESS, "cannot set %s", key);
	memcached_free(memc);
}

/* Runs group over TOPIC (3 records: big=v1, keep=k1, big=<too large>) with
 * max_value and policy; the too large record must delete big's old value. */
static void assert_refused_value_invalidates(const char *group, const char *max_value,
					     const char *policy)
{
	char json[H_PATH_MAX], name[64];
	const char *extra[] = { "--on-invalid", policy, "--stats-json", json, NULL };
	struct h_proc k;
	struct counts c;
	size_t vlen;
	char *v;

	snprintf(name, sizeof(name), "%s.json", group);
	h_tmppath(json, sizeof(json), name);
	/* what an earlier run (or another writer of the cache) left there */
	mc_set("big", "stale");
	start_k2mc(&k, group, max_value, extra);
	cr_assert_eq(wait_k2mc(&k, 40000), 0, "stderr:\n%s", tail_of(k.err_path));
	v = mc_get("big", 3, &vlen);
	cr_expect_null(v, "%s: the key of a refused value still holds '%.*s'", group,
		       v ? (int)(vlen < 20 ? vlen : 20) : 0, v ? v : "");
	free(v);
	v = mc_get("keep", 4, &vlen);
	cr_expect(v != NULL && vlen == 2 && memcmp(v, "k1", 2) == 0, "%s: keep is not k1", group);
	free(v);
	read_counts(&k, &c);
	cr_expect_eq(c.skipped_by[4], 1, "%s: value_too_large %" PRIu64, group, c.skipped_by[4]);
	cr_expect_eq(c.s.written + c.s.coalesced, 2, "%s: written %" PRIu64 " + coalesced %" PRIu64,
		     group, c.s.written, c.s.coalesced);
	cr_expect_eq(c.s.deleted, 0, "%s: the invalidating delete counted as a tombstone", group);
	cr_expect_eq(json_final(json, "invalidated"), 1, "%s: invalidated in %s", group, json);
	cr_expect(h_file_contains(k.err_path, "its key was deleted"), "%s: stderr:\n%s", group,
		  tail_of(k.err_path));
	assert_committed(group, 3);
}

/* Issue 8, section 3: over --max-value-bytes (skip, and hash, which cannot
 * hash a value), the key's old value is deleted, not left in place. */
Test(policies, value_over_max_value_bytes_deletes_the_old_value)
{
	char *big = malloc(3000);
	struct rec recs[3];

	cr_assert_not_null(big);
	memset(big, 'b', 3000);
	recs[0] = (struct rec){ "big", 3, "v1", 2, NULL, NULL };
	recs[1] = (struct rec){ "keep", 4, "k1", 2, NULL, NULL };
	recs[2] = (struct rec){ "big", 3, big, 3000, "value_too_large", NULL };
	start_mock(1, NULL);
	produce(recs, 3);
	assert_refused_value_invalidates("inval-skip", MAX_VALUE, "skip");
	assert_refused_value_invalidates("inval-hash", MAX_VALUE, "hash");
	free(big);
}

/* The same against the server's own limit (memcached -I 1m), with no
 * --max-value-bytes: k2mc reads the limit on connect and refuses the value
 * before sending it, so the delete is k2mc's to make. */
Test(policies, value_over_the_servers_item_limit_deletes_the_old_value)
{
	static const char *const mc_args[] = { "-I", "1m", NULL };
	size_t blen = 1200000;
	char *big = malloc(blen);
	struct rec recs[3];

	cr_assert_not_null(big);
	memset(big, 'B', blen);
	recs[0] = (struct rec){ "big", 3, "v1", 2, NULL, NULL };
	recs[1] = (struct rec){ "keep", 4, "k1", 2, NULL, NULL };
	recs[2] = (struct rec){ "big", 3, big, blen, "value_too_large", NULL };
	start_mock(1, mc_args);
	produce(recs, 3);
	assert_refused_value_invalidates("inval-server", NULL, "skip");
	free(big);
}

/* Issue 8, section 4: the value limit is read on every connect. memcached
 * is not there when k2mc starts; once k2mc says it is down, it starts with
 * -I 8m, and a 2,000,000-byte value is written, not skipped against a
 * limit guessed at start. */
Test(policies, item_limit_is_read_when_the_server_comes_up)
{
	static const char *const mc_args[] = { "-I", "8m", NULL };
	size_t blen = 2000000, vlen = 0;
	char *big = malloc(blen), pattern[128], *v;
	struct rec recs[2];
	struct h_proc k;
	struct counts c;
	int port = h_free_port(), rc;

	cr_assert_not_null(big);
	for (size_t i = 0; i < blen; i++)
		big[i] = (char)('a' + i % 26);
	recs[0] = (struct rec){ "two-mb", 6, big, blen, NULL, NULL };
	recs[1] = (struct rec){ "small", 5, "s", 1, NULL, NULL };
	start_mock(-1, NULL);
	produce(recs, 2);
	snprintf(W.mc_addr, sizeof(W.mc_addr), "127.0.0.1:%d", port);
	start_k2mc(&k, "late-server", NULL, NULL);
	snprintf(pattern, sizeof(pattern), "memcached 127\\.0\\.0\\.1:%d: down", port);
	rc = h_wait_line(k.err_path, pattern, NULL, k.pid, 20000, NULL, 0);
	cr_assert_eq(rc, 0, "k2mc never said the server is down (%s); stderr:\n%s", strerror(-rc),
		     tail_of(k.err_path));
	start_memcached(port, mc_args);
	cr_assert_eq(wait_k2mc(&k, 40000), 0, "stderr:\n%s", tail_of(k.err_path));
	v = mc_get("two-mb", 6, &vlen);
	cr_assert_not_null(v, "the 2,000,000-byte value is not in the cache; stderr:\n%s",
			   tail_of(k.err_path));
	cr_expect(vlen == blen && memcmp(v, big, blen) == 0, "two-mb holds %zu bytes", vlen);
	free(v);
	read_counts(&k, &c);
	cr_expect_eq(c.s.skipped, 0, "skipped %" PRIu64 "; stderr:\n%s", c.s.skipped,
		     tail_of(k.err_path));
	cr_expect_eq(c.s.written + c.s.coalesced, 2);
	assert_committed("late-server", 2);
	free(big);
}

/* ---- a fake memcached ----------------------------------------------------------- */

/* A loopback server for replies no real memcached gives on demand, served
 * by threads of this test process (each test runs in a process of its own,
 * so they end with it). It reads command lines and the data block of every
 * storage command, and answers
 * - classic: `reply` to every line, "version" and "stats settings" too (so
 *   the client speaks the classic dialect and knows no item limit);
 * - meta: "version" and "stats settings" as memcached 1.6.18 does, `reply`
 *   to every "ms", and nothing to "mn": a batch that never completes. */
struct fake {
	int lfd, port, meta;
	const char *reply;
	pthread_t thread;
};

struct fake_conn {
	struct fake *f;
	int fd;
};

static void fake_send(int fd, const char *s)
{
	size_t len = strlen(s), off = 0;

	while (off < len) {
		ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);

		if (n <= 0)
			return;
		off += (size_t)n;
	}
}

/* Answers one command line; *skip = bytes of data block that follow it. */
static void fake_answer(struct fake *f, int fd, const char *line, size_t *skip)
{
	char cmd[16] = "", key[256];
	unsigned long a = 0, b = 0, c = 0;
	char reply[300];

	sscanf(line, "%15s", cmd);
	if (strcmp(cmd, "ms") == 0 && sscanf(line, "ms %255s %lu", key, &a) == 2)
		*skip = a + 2;
	else if ((strcmp(cmd, "set") == 0 || strcmp(cmd, "add") == 0 ||
		  strcmp(cmd, "replace") == 0) &&
		 sscanf(line, "%*s %255s %lu %lu %lu", key, &a, &b, &c) == 4)
		*skip = c + 2;
	if (f->meta && strcmp(cmd, "version") == 0) {
		fake_send(fd, "VERSION 1.6.18\r\n");
		return;
	}
	if (f->meta && strcmp(cmd, "stats") == 0) {
		fake_send(fd, "STAT item_size_max 1048576\r\nEND\r\n");
		return;
	}
	if (f->meta && strcmp(cmd, "mn") == 0)
		return;
	snprintf(reply, sizeof(reply), "%s\r\n", f->reply);
	fake_send(fd, reply);
}

static void *fake_serve(void *arg)
{
	struct fake_conn *fc = arg;
	size_t len = 0, skip = 0, cap = 1 << 16;
	char *buf = malloc(cap);

	while (buf != NULL) {
		ssize_t n = read(fc->fd, buf + len, cap - len);

		if (n <= 0)
			break;
		len += (size_t)n;
		for (;;) {
			char *nl;
			size_t ll;

			if (skip > 0) {
				size_t d = skip < len ? skip : len;

				memmove(buf, buf + d, len - d);
				len -= d;
				skip -= d;
				if (skip > 0)
					break;
				continue;
			}
			nl = memchr(buf, '\n', len);
			if (nl == NULL) {
				if (len == cap)
					len = 0; /* an endless line: not our case */
				break;
			}
			ll = (size_t)(nl - buf) + 1;
			*nl = '\0';
			if (nl > buf && nl[-1] == '\r')
				nl[-1] = '\0';
			fake_answer(fc->f, fc->fd, buf, &skip);
			memmove(buf, buf + ll, len - ll);
			len -= ll;
		}
	}
	close(fc->fd);
	free(fc);
	free(buf);
	return NULL;
}

static void *fake_accept(void *arg)
{
	struct fake *f = arg;

	for (;;) {
		int fd = accept(f->lfd, NULL, NULL);
		struct fake_conn *fc;
		pthread_t t;

		if (fd < 0)
			return NULL;
		fc = malloc(sizeof(*fc));
		if (fc == NULL) {
			close(fd);
			continue;
		}
		fc->f = f;
		fc->fd = fd;
		if (pthread_create(&t, NULL, fake_serve, fc) != 0) {
			close(fd);
			free(fc);
			continue;
		}
		pthread_detach(t);
	}
}

static void fake_start(struct fake *f, int meta, const char *reply)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int one = 1;

	f->meta = meta;
	f->reply = reply;
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(f->lfd, 0);
	setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(f->lfd, 16), 0);
	cr_assert_eq(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
	f->port = ntohs(sa.sin_port);
	cr_assert_eq(pthread_create(&f->thread, NULL, fake_accept, f), 0);
	pthread_detach(f->thread);
}

/* A small topic of good records for the fake servers. */
static void start_small_topic(int n)
{
	static char keys[64][16], vals[64][16];
	struct rec recs[64];

	cr_assert_leq(n, 64);
	for (int i = 0; i < n; i++) {
		snprintf(keys[i], sizeof(keys[i]), "key-%02d", i);
		snprintf(vals[i], sizeof(vals[i]), "val-%02d", i);
		recs[i] = (struct rec){ keys[i], strlen(keys[i]), vals[i], strlen(vals[i]), NULL,
					NULL };
	}
	start_mock(-1, NULL);
	produce(recs, n);
}

/* SIGTERM, and the exit within the shutdown timeout (given up, exit 0 or 1). */
static void stop_k2mc(struct h_proc *k)
{
	int status = 0;

	cr_assert_eq(h_signal(k->pid, SIGTERM), 0);
	cr_assert_eq(h_wait(k->pid, 20000, &status), 0, "still running 20 s after SIGTERM; stderr:\n%s",
		     tail_of(k->err_path));
	cr_assert(h_exit_code(status) >= 0, "k2mc did not exit normally; stderr:\n%s",
		  tail_of(k->err_path));
}

/* The group's committed offset is at most `most` (-1: none). */
static void assert_committed_at_most(const char *group, int64_t most)
{
	char err[256];
	struct h_kafka *kh = h_kafka_open(W.bootstrap, world_name(group), err, sizeof(err));
	int64_t off[1] = { -2 };

	cr_assert_not_null(kh, "%s", err);
	cr_assert_eq(h_kafka_committed(kh, W.topic, 1, off, 5000), 0);
	h_kafka_close(kh);
	cr_assert_leq(off[0], most, "group %s committed %" PRId64 ", expected at most %" PRId64,
		      group, off[0], most);
}

/* Issue 8, section 4: CLIENT_ERROR is not known to be the record's fault.
 * A server answering it to everything gets its records retried, not
 * skipped as key_bad_bytes and committed; the log shows the reply. */
Test(policies, client_error_is_a_server_failure_not_a_bad_key)
{
	static struct fake f;
	const char *extra[] = { "--shutdown-timeout-ms", "1000", NULL };
	struct h_proc k;
	struct counts c;
	int rc;

	start_small_topic(20);
	fake_start(&f, 0, "CLIENT_ERROR bad command line format");
	snprintf(W.mc_addr, sizeof(W.mc_addr), "127.0.0.1:%d", f.port);
	start_k2mc(&k, "client-error", NULL, extra);
	rc = h_wait_line(k.err_path, "down \\(CLIENT_ERROR bad command line format\\)", NULL, k.pid,
			 20000, NULL, 0);
	cr_assert_eq(rc, 0, "no 'down (CLIENT_ERROR ...)' line (%s); stderr:\n%s", strerror(-rc),
		     tail_of(k.err_path));
	/* retried, not given up: a stats line counts the retries */
	rc = h_wait_line(k.err_path, "memcached errors [1-9][0-9]* retries [1-9]", NULL, k.pid, 20000,
			 NULL, 0);
	cr_assert_eq(rc, 0, "no retries counted (%s); stderr:\n%s", strerror(-rc),
		     tail_of(k.err_path));
	stop_k2mc(&k);
	read_counts(&k, &c);
	cr_expect_eq(c.skipped_by[3], 0, "records skipped as key_bad_bytes: %" PRIu64,
		     c.skipped_by[3]);
	cr_expect_eq(c.s.skipped, 0);
	cr_expect_eq(c.s.written, 0);
	assert_committed_at_most("client-error", 0);
}

/* Issue 8, section 7: a server that answers errors but never completes a
 * batch (meta: no "MN") is not "no answer". */
Test(policies, errors_without_completion_are_not_called_silence)
{
	static struct fake f;
	const char *extra[] = { "--shutdown-timeout-ms", "1000", NULL };
	struct h_proc k;
	int rc;

	start_small_topic(10);
	fake_start(&f, 1, "SERVER_ERROR boom");
	snprintf(W.mc_addr, sizeof(W.mc_addr), "127.0.0.1:%d", f.port);
	start_k2mc(&k, "no-mn", NULL, extra);
	rc = h_wait_line(k.err_path,
			 "answers errors but never completes the batch \\(last: 'SERVER_ERROR boom'\\)",
			 NULL, k.pid, 20000, NULL, 0);
	cr_expect_eq(rc, 0, "no 'answers errors' line (%s); stderr:\n%s", strerror(-rc),
		     tail_of(k.err_path));
	cr_expect(!h_file_contains(k.err_path, "no answer for"), "stderr:\n%s", tail_of(k.err_path));
	stop_k2mc(&k);
	assert_committed_at_most("no-mn", 0);
}
