/* Integration suite for what lands in Memcached (issue 10): k2mc -e against
 * a real memcached and a k2mc-mock cluster, over records this test produces
 * (JSON values, headers, timestamps in the past), read back through the
 * meta protocol ("mg <key> v f t": value, client flags, remaining TTL).
 * JSON-keyed records with per-record flags and TTL headers, routed by the
 * Memcached key they produce (many Kafka keys per Memcached key, 4 writers);
 * --ttl-from-timestamp over records whose expiry passed (their key deleted,
 * counted as expired) and one that lives past 30 days; every new invalid
 * reason (missing_field, not_json, bad_ttl, bad_flags) under skip, hash, dlq
 * and fail; --on-tombstone ignore; invalidate (meta: the item stale, X/W).
 * Debezium change events (issue 26, --cdc): a table's snapshot, updates,
 * deletes with their tombstones, a delete then a re-insert, a truncate and a
 * record that is no change event, JSON with and without schemas.enable
 * envelopes mixed, over 4 writers: the cache equals the table; and the
 * invalidate mode. The same in Avro through a Schema Registry of this process
 * (servers.c), with records that are not Avro or whose schema it lacks, and a
 * registry that is down when k2mc starts (the consumer waits for a key, the
 * writer for a value; nothing is invalid, nothing lost). Not about the
 * template syntax (test_mapping.c) nor speed. */
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
#include <sys/time.h>
#include <unistd.h>
#include <xxhash.h>

#include "servers.h"
#include "world.h"

#define TOPIC "src"
#define DLQ "dead"
#define TEST_TIMEOUT_S 120

static struct world W;
static char json_path[H_PATH_MAX];
/* world_name(DLQ) of the current world */
static const char *dlq_topic;

WORLD_SUITE(mapping_e2e, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

static const char *tail_of(const char *path)
{
	return h_tail_of(path, 20);
}

static int64_t wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* memcached, and a mock with TOPIC (1 partition: the records' order is the
 * production order) and DLQ. */
static void start_world(void)
{
	static const char *const more[] = { DLQ ":1", NULL };

	world_start(&W, &(struct world_opts){ .topic = TOPIC, .parts = 1, .no_expect = 1,
					      .control = 1, .topics = more });
	dlq_topic = world_name(DLQ);
}

/* ---- producing ---------------------------------------------------------------*/

struct rec {
	const char *key;  /* NULL: null key */
	const char *val;  /* NULL: tombstone */
	int64_t ts_ms;    /* 0: now */
	const char *h[4]; /* name, value, name, value; NULL-ended */
};

/* key_len / val_len of binary records (Avro); 0: strlen */
static size_t bin_klen[256], bin_vlen[256];

static void produce(const struct rec *recs, int n)
{
	/* idempotent: offsets are the records' indices */
	rd_kafka_t *rk = world_producer(&W, NULL);

	for (int i = 0; i < n; i++) {
		const struct rec *r = &recs[i];
		rd_kafka_headers_t *h = NULL;
		rd_kafka_resp_err_t err;

		if (r->h[0] != NULL) {
			h = rd_kafka_headers_new(2);
			for (int k = 0; k < 4 && r->h[k] != NULL; k += 2)
				rd_kafka_header_add(h, r->h[k], -1, r->h[k + 1], -1);
		}
		err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(W.topic), RD_KAFKA_V_PARTITION(0),
					RD_KAFKA_V_KEY(r->key, !r->key	      ? 0
							       : i < 256 && bin_klen[i] ? bin_klen[i]
										 : strlen(r->key)),
					RD_KAFKA_V_VALUE((void *)r->val,
							 !r->val ? 0
							 : i < 256 && bin_vlen[i] ? bin_vlen[i]
										  : strlen(r->val)),
					RD_KAFKA_V_TIMESTAMP(r->ts_ms ? r->ts_ms : wall_ms()),
					RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
		cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce %d: %s", i,
			     rd_kafka_err2str(err));
	}
	world_producer_close(rk);
}

/* ---- running k2mc --------------------------------------------------------------*/

/* Runs k2mc -e over TOPIC with extra args (--stats-json to json_path);
 * returns its exit code. */
static int run_k2mc(struct h_proc *k, const char *group, const char *const extra[])
{
	const char *const args[] = { "--writers", "4", "--stats-interval-ms", "1000", "-X",
				     "session.timeout.ms=6000", "--stats-json", json_path, NULL };
	int rc, status = 0;
	char name[64];

	snprintf(name, sizeof(name), "%s.json", group);
	h_tmppath(json_path, sizeof(json_path), name);
	world_k2mc_start(&W, k, &(struct world_k2mc){ .group = group, .eof = 1, .args = args,
						      .args2 = extra });
	rc = h_wait(k->pid, 60000, &status);
	if (rc == -ETIMEDOUT) {
		h_signal(k->pid, SIGKILL);
		h_wait(k->pid, 5000, NULL);
		cr_assert_fail("k2mc still running after 60 s; stderr:\n%s", tail_of(k->err_path));
	}
	cr_assert(h_exit_code(status) >= 0, "k2mc did not exit normally; stderr:\n%s",
		  tail_of(k->err_path));
	return h_exit_code(status);
}

/* A number of the final --stats-json object: "name":N (first match after
 * `within`, e.g. "\"skipped_by\"", or from the start when NULL); -1 if none. */
static int64_t final_stat(const char *within, const char *name)
{
	char *b = h_file_read(json_path, NULL), *line = NULL, *p, pat[64];
	int64_t v = -1;

	if (b == NULL)
		return -1;
	for (p = b; (p = strstr(p, "\"final\":true")) != NULL; p++)
		line = p;
	if (line != NULL) {
		while (line > b && line[-1] != '\n')
			line--;
		if (within != NULL)
			line = strstr(line, within);
		snprintf(pat, sizeof(pat), "\"%s\":", name);
		p = line ? strstr(line, pat) : NULL;
		if (p != NULL)
			v = strtoll(p + strlen(pat), NULL, 10);
	}
	free(b);
	return v;
}

/* ---- Memcached through the meta protocol ---------------------------------------*/

struct item {
	int found;
	char value[4096];
	size_t vlen;
	uint32_t flags;
	int64_t ttl; /* remaining seconds, -1: never expires */
	int stale;   /* X: invalidated */
	int win;     /* W: this client won the right to refill */
};

static int mc_connect(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)W.mc[0].port) };
	struct timeval tv = { 5, 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "memcached: %s",
		     strerror(errno));
	return fd;
}

/* Reads until the buffer holds a line ending (and, for VA, the data). */
static size_t read_reply(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	for (;;) {
		char *nl = memchr(buf, '\n', n);
		ssize_t r;

		if (nl != NULL) {
			size_t need = (size_t)(nl - buf) + 1;

			if (strncmp(buf, "VA ", 3) == 0)
				need += strtoull(buf + 3, NULL, 10) + 2;
			if (n >= need)
				return n;
		}
		cr_assert_lt(n, cap - 1, "reply too long");
		r = read(fd, buf + n, cap - 1 - n);
		cr_assert_gt(r, 0, "memcached closed or timed out");
		n += (size_t)r;
		buf[n] = '\0';
	}
}

static struct item mg(const char *key)
{
	char cmd[512], buf[8192];
	struct item it = { 0 };
	int fd = mc_connect();
	char *tok, *save, *nl;

	snprintf(cmd, sizeof(cmd), "mg %s v f t\r\n", key);
	cr_assert_eq(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
	read_reply(fd, buf, sizeof(buf));
	close(fd);
	if (strncmp(buf, "EN", 2) == 0)
		return it;
	cr_assert(strncmp(buf, "VA ", 3) == 0, "mg %s: '%s'", key, buf);
	it.found = 1;
	nl = strstr(buf, "\r\n");
	*nl = '\0';
	it.vlen = strtoull(buf + 3, NULL, 10);
	cr_assert_lt(it.vlen, sizeof(it.value));
	memcpy(it.value, nl + 2, it.vlen);
	it.value[it.vlen] = '\0';
	strtok_r(buf, " ", &save);
	strtok_r(NULL, " ", &save);
	while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
		if (tok[0] == 'f')
			it.flags = (uint32_t)strtoul(tok + 1, NULL, 10);
		else if (tok[0] == 't')
			it.ttl = strtoll(tok + 1, NULL, 10);
		else if (tok[0] == 'X')
			it.stale = 1;
		else if (tok[0] == 'W')
			it.win = 1;
	}
	return it;
}

/* Stores key = value (classic set, no expiry): what an older run left. */
static void mc_set(const char *key, const char *value)
{
	char cmd[1024], buf[256];
	int fd = mc_connect();

	snprintf(cmd, sizeof(cmd), "set %s 0 0 %zu\r\n%s\r\n", key, strlen(value), value);
	cr_assert_eq(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
	read_reply(fd, buf, sizeof(buf));
	close(fd);
	cr_assert(strncmp(buf, "STORED", 6) == 0, "set %s: %s", key, buf);
}

static void expect_item(const char *key, const char *value, uint32_t flags, int64_t ttl_min,
			int64_t ttl_max)
{
	struct item it = mg(key);

	cr_assert(it.found, "%s: not in the cache", key);
	cr_expect_str_eq(it.value, value, "%s", key);
	cr_expect_eq(it.flags, flags, "%s: flags %u, expected %u", key, it.flags, flags);
	cr_expect(it.ttl >= ttl_min && it.ttl <= ttl_max, "%s: TTL %lld, expected %lld..%lld", key,
		  (long long)it.ttl, (long long)ttl_min, (long long)ttl_max);
}

static void expect_absent(const char *key)
{
	struct item it = mg(key);

	cr_expect(!it.found, "%s: in the cache with '%s'", key, it.value);
}

/* ---- JSON keys, per-record flags and TTL -----------------------------------------*/

#define IDS 40
#define VERSIONS 12

Test(mapping_e2e, json_keys_with_flags_and_ttl_headers)
{
	static const char *const extra[] = { "--key", "user:{json:/id}", "--value",
					     "{json:/profile}", "--ttl", "600", "--ttl-header",
					     "ttl", "--flags", "1", "--flags-header", "codec", NULL };
	static struct rec recs[IDS * VERSIONS];
	static char keys[IDS * VERSIONS][16], vals[IDS * VERSIONS][160], ttls[IDS][16],
		codecs[IDS][16];
	struct h_proc k;
	int n = 0;

	start_world();
	/* every version of an id under another Kafka key (or none): only
	 * routing by the Memcached key keeps them in order over 4 writers */
	for (int v = 0; v < VERSIONS; v++) {
		for (int id = 0; id < IDS; id++) {
			struct rec *r = &recs[n];

			snprintf(keys[n], sizeof(keys[n]), "k%d", n);
			snprintf(vals[n], sizeof(vals[n]),
				 "{\"id\": %d, \"profile\": {\"name\": \"user %d\", \"v\": %d, "
				 "\"tags\": [\"a\", \"b\"]}, \"noise\": \"%0*d\"}",
				 id, id, v, 40, n);
			r->key = n % 5 == 0 ? NULL : keys[n];
			r->val = vals[n];
			if (v == VERSIONS - 1 && id % 2 == 0) {
				/* the last version of even ids: their own TTL and
				 * flags */
				snprintf(ttls[id], sizeof(ttls[id]), "%d", 1000 + id);
				snprintf(codecs[id], sizeof(codecs[id]), "%u", 4000000000u + id);
				r->h[0] = "ttl";
				r->h[1] = ttls[id];
				r->h[2] = "codec";
				r->h[3] = codecs[id];
			}
			n++;
		}
	}
	produce(recs, n);
	cr_assert_eq(run_k2mc(&k, "json", extra), 0, "stderr:\n%s", tail_of(k.err_path));
	for (int id = 0; id < IDS; id++) {
		char key[32], want[160];

		snprintf(key, sizeof(key), "user:%d", id);
		snprintf(want, sizeof(want),
			 "{\"name\":\"user %d\",\"v\":%d,\"tags\":[\"a\",\"b\"]}", id, VERSIONS - 1);
		if (id % 2 == 0)
			expect_item(key, want, 4000000000u + (uint32_t)id, 1000 + id - 60, 1000 + id);
		else
			expect_item(key, want, 1, 600 - 60, 600);
	}
	{
		/* records a later one of the same key replaced within a batch are
		 * acknowledged unsent (writer.c's coalescing, where it is in) */
		int64_t coalesced = final_stat(NULL, "coalesced");

		cr_expect_eq(final_stat(NULL, "written") + (coalesced > 0 ? coalesced : 0),
			     IDS * VERSIONS);
	}
	cr_expect_eq(final_stat("\"skipped_by\"", "missing_field"), 0);
}

/* ---- --ttl-from-timestamp over the past -------------------------------------------*/

Test(mapping_e2e, ttl_from_timestamp_over_past_records)
{
	static const char *const extra[] = { "--ttl", "3600", "--ttl-from-timestamp",
					     "--ttl-header", "ttl", NULL };
	int64_t now = wall_ms();
	struct rec recs[] = {
		/* written 10 minutes ago: 50 minutes left */
		{ "fresh", "f1", now - 600 * 1000, { NULL } },
		/* two hours old: expired; an older run left a value there */
		{ "stale", "s1", now - 7200 * 1000, { NULL } },
		/* fresh first, then its newest record expired: the key goes */
		{ "flip", "p1", now - 60 * 1000, { NULL } },
		{ "flip", "p2", now - 4000 * 1000, { NULL } },
		/* expired first, then a fresh one: the fresh value stays */
		{ "back", "b1", now - 5000 * 1000, { NULL } },
		{ "back", "b2", now - 30 * 1000, { NULL } },
		/* its own TTL of 90 days, one day old: past 30 days, so sent as
		 * a unix time; mg shows what is left */
		{ "long", "l1", now - 86400 * 1000LL, { "ttl", "7776000", NULL } },
		/* its own TTL, already passed */
		{ "short", "x1", now - 120 * 1000, { "ttl", "60", NULL } },
	};
	struct h_proc k;

	start_world();
	mc_set("stale", "from-an-older-run");
	mc_set("short", "from-an-older-run");
	produce(recs, (int)(sizeof(recs) / sizeof(recs[0])));
	cr_assert_eq(run_k2mc(&k, "ts", extra), 0, "stderr:\n%s", tail_of(k.err_path));
	expect_item("fresh", "f1", 0, 3000 - 60, 3000);
	expect_absent("stale");
	expect_absent("flip");
	expect_item("back", "b2", 0, 3570 - 60, 3570);
	/* sent as a unix time, which memcached turns into its own clock: that
	 * clock moves once a second, so what mg shows left can be one second
	 * more than the wall clock says (seen once in CI: 7689601) */
	expect_item("long", "l1", 0, 89 * 86400 - 60, 89 * 86400 + 1);
	expect_absent("short");
	{
		/* 4 expired: stale, flip's p2, back's b1, short; b1 (and flip's p1)
		 * may instead be replaced within their batch by the key's later
		 * write (writer.c's coalescing, where it is in): acknowledged
		 * unsent */
		int64_t expired = final_stat(NULL, "expired"), coalesced = final_stat(NULL, "coalesced");

		coalesced = coalesced > 0 ? coalesced : 0;
		cr_expect(expired >= 3 && expired <= 4, "expired %lld: %s", (long long)expired,
			  h_tail_of(json_path, 1));
		cr_expect_eq(expired + coalesced >= 4, 1);
		/* the expired records' deletes are deletes too */
		cr_expect_eq(final_stat(NULL, "deleted"), expired);
		cr_expect_eq(final_stat(NULL, "written") + final_stat(NULL, "deleted") + coalesced, 8);
	}
}

/* ---- the new invalid reasons under each policy -------------------------------------*/

static const char *const REASONS[] = { "missing_field", "not_json", "bad_ttl", "bad_flags" };
#define NREC 12
/* offsets 2, 5, 7, 9 are invalid (in REASONS order); 11 has a key with a
 * space (key_bad_bytes, hashable) */
static const struct rec INVALID[NREC] = {
	{ "a", "{\"id\":\"g0\",\"p\":0}", 0, { NULL } },
	{ "b", "{\"id\":\"g1\",\"p\":1}", 0, { NULL } },
	{ "c", "{\"p\":2}", 0, { NULL } },
	{ "d", "{\"id\":\"g3\",\"p\":3}", 0, { NULL } },
	{ "e", "{\"id\":\"g4\",\"p\":4}", 0, { "ttl", "30", NULL } },
	{ "f", "not json at all", 0, { NULL } },
	{ "g", "{\"id\":\"g6\",\"p\":6}", 0, { NULL } },
	{ "h", "{\"id\":\"g7\",\"p\":7}", 0, { "ttl", "soon", NULL } },
	{ "i", "{\"id\":\"g8\",\"p\":8}", 0, { NULL } },
	{ "j", "{\"id\":\"g9\",\"p\":9}", 0, { "codec", "-1", NULL } },
	{ "k", "{\"id\":\"g10\",\"p\":10}", 0, { NULL } },
	{ "l", "{\"id\":\"has space\",\"p\":11}", 0, { NULL } },
};
static const int BAD_AT[] = { 2, 5, 7, 9 };

static void run_invalid(struct h_proc *k, const char *group, const char *policy, int dlq,
			int want_rc)
{
	const char *extra[16] = { "--key", "{json:/id}", "--value", "{json:/p}", "--ttl-header",
				  "ttl", "--flags-header", "codec", "--on-invalid", policy };
	int a = 10;

	start_world(); /* first: it names the dead letter topic */

	/* fail: one writer, so that the first bad record is the one refused
	 * (and named) first */
	if (strcmp(policy, "fail") == 0) {
		extra[a++] = "--writers";
		extra[a++] = "1";
	}
	if (dlq) {
		extra[a++] = "--dlq-topic";
		extra[a++] = dlq_topic;
	}
	extra[a] = NULL;
	produce(INVALID, NREC);
	cr_assert_eq(run_k2mc(k, group, extra), want_rc, "stderr:\n%s", tail_of(k->err_path));
}

static void expect_good_written(void)
{
	for (int i = 0; i < NREC - 1; i++) {
		char key[16], want[16];
		int bad = 0;

		for (int b = 0; b < 4; b++)
			bad |= BAD_AT[b] == i;
		if (i == 2 || i == 5)
			continue; /* no key at all */
		snprintf(key, sizeof(key), "g%d", i);
		snprintf(want, sizeof(want), "%d", i);
		if (bad)
			expect_absent(key);
		else
			expect_item(key, want, 0, i == 4 ? 20 : -1, i == 4 ? 30 : -1);
	}
}

static void expect_skipped_by_reason(uint64_t each)
{
	for (int r = 0; r < 4; r++)
		cr_expect_eq(final_stat("\"skipped_by\"", REASONS[r]), (int64_t)each, "%s: %s",
			     REASONS[r], h_tail_of(json_path, 1));
}

static int by_offset(const void *a, const void *b)
{
	const struct world_letter *x = a, *y = b;

	return (x->offset > y->offset) - (x->offset < y->offset);
}

/* The dead letters, in offset order (writers deliver them in any order). */
static void expect_dead_letters(int with_bad_bytes)
{
	static const char *const words[] = { "no JSON pointer '/id'", "is not JSON",
					     "header 'ttl' is 'soon'", "header 'codec' is '-1'" };
	struct world_letter dl[16];
	int n = world_read_dlq(&W, dlq_topic, dl, 16);

	qsort(dl, (size_t)n, sizeof(dl[0]), by_offset);
	cr_assert_eq(n, 4 + with_bad_bytes, "%d dead letters", n);
	for (int i = 0; i < 4; i++) {
		cr_expect_eq(dl[i].offset, BAD_AT[i]);
		cr_expect_str_eq(dl[i].reason, REASONS[i], "offset %d", BAD_AT[i]);
		cr_expect(strstr(dl[i].message, words[i]) != NULL, "offset %d: message '%s'",
			  BAD_AT[i], dl[i].message);
	}
	if (with_bad_bytes)
		cr_expect_str_eq(dl[4].reason, "key_bad_bytes");
}

Test(mapping_e2e, new_reasons_under_skip)
{
	struct h_proc k;

	run_invalid(&k, "inv-skip", "skip", 0, 0);
	expect_good_written();
	expect_skipped_by_reason(1);
	cr_expect_eq(final_stat("\"skipped_by\"", "key_bad_bytes"), 1);
	/* each reason logged once, with the record's coordinates */
	cr_expect(h_file_contains(k.err_path, "@2: skipped, missing_field (no JSON pointer '/id'"),
		  "stderr:\n%s", tail_of(k.err_path));
	cr_expect(h_file_contains(k.err_path, "@7: skipped, bad_ttl (header 'ttl' is 'soon'"),
		  "stderr:\n%s", tail_of(k.err_path));
}

Test(mapping_e2e, new_reasons_under_dlq)
{
	struct h_proc k;

	run_invalid(&k, "inv-dlq", "dlq", 1, 0);
	expect_good_written();
	expect_dead_letters(1);
}

Test(mapping_e2e, new_reasons_under_hash)
{
	struct h_proc k;
	char hashed[64];
	XXH128_hash_t h = XXH3_128bits("has space", 9);

	/* hashing cures only the key with a space; the rest go to the dead
	 * letter topic */
	run_invalid(&k, "inv-hash", "hash", 1, 0);
	expect_good_written();
	expect_dead_letters(0);
	snprintf(hashed, sizeof(hashed), "%016llx%016llx", (unsigned long long)h.high64,
		 (unsigned long long)h.low64);
	expect_item(hashed, "11", 0, -1, -1);
}

Test(mapping_e2e, new_reasons_under_hash_without_dlq)
{
	struct h_proc k;

	run_invalid(&k, "inv-hash-skip", "hash", 0, 0);
	expect_good_written();
	expect_skipped_by_reason(1);
	cr_expect_eq(final_stat("\"skipped_by\"", "key_bad_bytes"), 0, "hashed, not skipped");
}

/* Issue 23, item 6: the summary's skip breakdown names every reason of the
 * table, and its numbers add up to the skipped total. */
Test(mapping_e2e, summary_lists_every_skip_reason)
{
	static const char *const all[] = { "missing_key", "key_too_long", "key_bad_bytes",
					   "value_too_large", "missing_field", "not_json",
					   "bad_ttl", "bad_flags" };
	char *b, *line = NULL, *p, *open, *close;
	unsigned long long skipped = 0, sum = 0;
	struct h_proc k;

	run_invalid(&k, "inv-summary", "skip", 0, 0);
	b = h_file_read(k.err_path, NULL);
	cr_assert_not_null(b);
	for (p = b; (p = strstr(p, "k2mc: summary: ")) != NULL; p++)
		line = p;
	cr_assert_not_null(line, "no summary; stderr:\n%s", tail_of(k.err_path));
	*strchrnul(line, '\n') = '\0';
	p = strstr(line, " skipped ");
	cr_assert_not_null(p, "%s", line);
	skipped = strtoull(p + 9, &open, 10);
	cr_assert(strncmp(open, " (", 2) == 0, "no breakdown after 'skipped': %s", line);
	close = strchr(open, ')');
	cr_assert_not_null(close, "%s", line);
	*close = '\0';
	open[1] = ' '; /* every name of the breakdown now follows a space */
	for (size_t r = 0; r < sizeof(all) / sizeof(all[0]); r++) {
		char pat[32];
		const char *at;

		snprintf(pat, sizeof(pat), " %s ", all[r]);
		at = strstr(open, pat);
		cr_expect_not_null(at, "the breakdown has no %s: (%s)", all[r], open + 2);
		if (at != NULL)
			sum += strtoull(at + strlen(pat), NULL, 10);
	}
	cr_expect_eq(skipped, 5, "skipped %llu", skipped);
	cr_expect_eq(sum, skipped, "the breakdown (%s) adds up to %llu, not %llu", open + 2, sum,
		     skipped);
	free(b);
}

static int64_t committed(const char *group)
{
	char err[256];
	struct h_kafka *kk = h_kafka_open(W.bootstrap, world_name(group), err, sizeof(err));
	int64_t off[1] = { -2 };

	cr_assert_not_null(kk, "%s", err);
	cr_assert_eq(h_kafka_committed(kk, W.topic, 1, off, 5000), 0);
	h_kafka_close(kk);
	return off[0];
}

/* ---- a skipped newest record leaves no old value (issue 23, item 1) ------------------*/

/* One reason whose key is valid: the key "a" gets a good record, then "keep"
 * one, then "a" a newest record skipped for that reason. */
struct pin_case {
	const char *reason;
	const char *opts[5];  /* the mapping options, NULL-ended */
	struct rec recs[3];
};

static const struct pin_case PIN[] = {
	{ "bad_ttl", { "--ttl-header", "x-ttl", NULL },
	  { { "a", "v1", 0, { "x-ttl", "600", NULL } }, { "keep", "k1", 0, { NULL } },
	    { "a", "v2-newest", 0, { "x-ttl", "abc", NULL } } } },
	/* an overflowing TTL: over memcached's 32-bit exptime */
	{ "bad_ttl", { "--ttl-header", "x-ttl", NULL },
	  { { "a", "v1", 0, { "x-ttl", "600", NULL } }, { "keep", "k1", 0, { NULL } },
	    { "a", "v2-newest", 0, { "x-ttl", "99999999999", NULL } } } },
	{ "bad_flags", { "--flags-header", "x-flags", NULL },
	  { { "a", "v1", 0, { "x-flags", "7", NULL } }, { "keep", "k1", 0, { NULL } },
	    { "a", "v2-newest", 0, { "x-flags", "-1", NULL } } } },
	{ "missing_field", { "--value", "{json:/profile}", NULL },
	  { { "a", "{\"profile\":\"v1\"}", 0, { NULL } },
	    { "keep", "{\"profile\":\"k1\"}", 0, { NULL } },
	    { "a", "{\"deleted\":true}", 0, { NULL } } } },
	{ "not_json", { "--value", "{json:/profile}", NULL },
	  { { "a", "{\"profile\":\"v1\"}", 0, { NULL } },
	    { "keep", "{\"profile\":\"k1\"}", 0, { NULL } },
	    { "a", "{\"profile\":\"v2-newe", 0, { NULL } } } },
};

/* Case c under --on-invalid skip and hash (no dead letter topic: hash falls
 * back to skip for these reasons): "a" must not keep v1 nor what an older
 * run left there, the skip is counted under its reason and as invalidated,
 * and every offset is committed. */
static void expect_skip_deletes_old_value(int c)
{
	static const char *const policies[] = { "skip", "hash" };
	const struct pin_case *pc = &PIN[c];

	start_world();
	produce(pc->recs, 3);
	for (int p = 0; p < 2; p++) {
		const char *extra[16] = { "--on-invalid", policies[p] };
		struct h_proc k;
		char group[48];
		struct item it;
		int a = 2;

		for (int o = 0; pc->opts[o] != NULL; o++)
			extra[a++] = pc->opts[o];
		extra[a] = NULL;
		snprintf(group, sizeof(group), "pin-%d-%s", c, policies[p]);
		/* what an earlier run (or another writer) left there */
		mc_set("a", "stale");
		cr_assert_eq(run_k2mc(&k, group, extra), 0, "%s: stderr:\n%s", group,
			     tail_of(k.err_path));
		it = mg("a");
		cr_expect(!it.found, "%s (%s): the skipped newest record left '%s' in the cache",
			  group, pc->reason, it.value);
		expect_item("keep", "k1", 0, -1, -1);
		cr_expect_eq(final_stat("\"skipped_by\"", pc->reason), 1, "%s: %s", group,
			     h_tail_of(json_path, 1));
		cr_expect_eq(final_stat(NULL, "invalidated"), 1, "%s: %s", group,
			     h_tail_of(json_path, 1));
		cr_expect(h_file_contains(k.err_path, "its key was deleted"), "%s: stderr:\n%s",
			  group, tail_of(k.err_path));
		cr_expect_eq(committed(group), 3, "%s", group);
	}
}

Test(mapping_e2e, skipped_bad_ttl_deletes_the_old_value)
{
	expect_skip_deletes_old_value(0);
}

Test(mapping_e2e, skipped_overflowing_ttl_deletes_the_old_value)
{
	expect_skip_deletes_old_value(1);
}

Test(mapping_e2e, skipped_bad_flags_deletes_the_old_value)
{
	expect_skip_deletes_old_value(2);
}

Test(mapping_e2e, skipped_missing_field_deletes_the_old_value)
{
	expect_skip_deletes_old_value(3);
}

Test(mapping_e2e, skipped_not_json_deletes_the_old_value)
{
	expect_skip_deletes_old_value(4);
}

Test(mapping_e2e, new_reasons_under_fail)
{
	char want[256];
	struct h_proc k;

	run_invalid(&k, "inv-fail", "fail", 0, 1);
	snprintf(want, sizeof(want), "--on-invalid fail: %s [0] @2: missing_field (no JSON "
		 "pointer '/id')", W.topic);
	cr_expect(h_file_contains(k.err_path, want), "stderr:\n%s", tail_of(k.err_path));
	/* nothing at or past the record is committed */
	cr_expect_leq(committed("inv-fail"), 2);
	expect_item("g0", "0", 0, -1, -1);
	expect_absent("g3");
}

/* Each reason alone under fail: the run stops exactly there. */
Test(mapping_e2e, each_reason_stops_fail_at_its_offset)
{
	static const char *const templ[][2] = {
		{ "{json:/id}", "{value}" },      /* missing_field: no /id */
		{ "{key}", "{json:/p}" },         /* not_json */
		{ "{key}", "{value}" },           /* bad_ttl */
		{ "{key}", "{value}" },           /* bad_flags */
	};
	static const struct rec recs[4][3] = {
		{ { "a", "{\"id\":\"x\"}", 0, { NULL } }, { "b", "{}", 0, { NULL } },
		  { "c", "{\"id\":\"y\"}", 0, { NULL } } },
		{ { "a", "{\"p\":1}", 0, { NULL } }, { "b", "{\"p\":", 0, { NULL } },
		  { "c", "{\"p\":3}", 0, { NULL } } },
		{ { "a", "1", 0, { "ttl", "10", NULL } }, { "b", "2", 0, { "ttl", "1e3", NULL } },
		  { "c", "3", 0, { NULL } } },
		{ { "a", "1", 0, { "codec", "7", NULL } }, { "b", "2", 0, { "codec", "", NULL } },
		  { "c", "3", 0, { NULL } } },
	};

	for (int r = 0; r < 4; r++) {
		const char *extra[] = { "--key", templ[r][0], "--value", templ[r][1], "--ttl-header",
					"ttl", "--flags-header", "codec", "--on-invalid", "fail",
					NULL };
		struct h_proc k;
		char group[32], want[256];

		start_world();
		produce(recs[r], 3);
		snprintf(group, sizeof(group), "fail-%d", r);
		cr_assert_eq(run_k2mc(&k, group, extra), 1, "%s: stderr:\n%s", REASONS[r],
			     tail_of(k.err_path));
		snprintf(want, sizeof(want), "%s [0] @1: %s (", W.topic, REASONS[r]);
		cr_expect(h_file_contains(k.err_path, want), "%s: stderr:\n%s", REASONS[r],
			  tail_of(k.err_path));
		cr_expect_leq(committed(group), 1, "%s", REASONS[r]);
		h_cleanup();
	}
}

/* ---- tombstones --------------------------------------------------------------------*/

Test(mapping_e2e, tombstones_ignored)
{
	static const char *const extra[] = { "--on-tombstone", "ignore", NULL };
	static const struct rec recs[] = {
		{ "kept", NULL, 0, { NULL } },
		{ "new", "n1", 0, { NULL } },
		{ "new", NULL, 0, { NULL } },
		{ NULL, NULL, 0, { NULL } }, /* not even a key: ignored all the same */
	};
	struct h_proc k;

	start_world();
	mc_set("kept", "cached");
	produce(recs, 4);
	cr_assert_eq(run_k2mc(&k, "ignore", extra), 0, "stderr:\n%s", tail_of(k.err_path));
	expect_item("kept", "cached", 0, -1, -1);
	expect_item("new", "n1", 0, -1, -1);
	cr_expect_eq(final_stat(NULL, "ignored"), 3);
	cr_expect_eq(final_stat(NULL, "deleted"), 0);
	cr_expect_eq(final_stat(NULL, "skipped"), 0);
}

Test(mapping_e2e, tombstones_delete_by_default)
{
	static const struct rec recs[] = { { "gone", NULL, 0, { NULL } } };
	struct h_proc k;

	start_world();
	mc_set("gone", "cached");
	produce(recs, 1);
	cr_assert_eq(run_k2mc(&k, "delete", NULL), 0, "stderr:\n%s", tail_of(k.err_path));
	expect_absent("gone");
	cr_expect_eq(final_stat(NULL, "deleted"), 1);
}

Test(mapping_e2e, tombstones_invalidate_on_meta)
{
	static const char *const extra[] = { "--on-tombstone", "invalidate:30", "--mc-protocol",
					     "meta", NULL };
	static const struct rec recs[] = {
		{ "page", NULL, 0, { NULL } },
		{ "never-cached", NULL, 0, { NULL } },
	};
	struct h_proc k;
	struct item it;

	start_world();
	mc_set("page", "old-html");
	produce(recs, 2);
	cr_assert_eq(run_k2mc(&k, "invalidate", extra), 0, "stderr:\n%s", tail_of(k.err_path));
	/* still served, stale, for the grace period: the first reader wins
	 * the refill (W), every reader sees it stale (X) */
	it = mg("page");
	cr_assert(it.found, "invalidated item gone");
	cr_expect_str_eq(it.value, "old-html");
	cr_expect(it.stale, "no X flag");
	cr_expect(it.win, "no W flag");
	cr_expect(it.ttl > 0 && it.ttl <= 30, "TTL %lld", (long long)it.ttl);
	expect_absent("never-cached");
	cr_expect_eq(final_stat(NULL, "deleted"), 2);
}

/* ---- Debezium change events (issue 26) ---------------------------------------------*/

#define ROWS 30
/* The customers table as the events leave it: rows[id] its current row (the
 * compact JSON k2mc must hold), "" once deleted. */
struct table {
	char rows[ROWS][128];
	struct rec recs[ROWS * 6];
	char keys[ROWS * 6][128], vals[ROWS * 6][512];
	int n;
};

/* One change event of id: op with before and after images (NULL: null),
 * schemas.enable envelopes around key and value when env. */
static void event(struct table *t, int id, char op, const char *before, const char *after,
		  int env)
{
	struct rec *r = &t->recs[t->n];
	char ev[400];

	snprintf(ev, sizeof(ev),
		 "{\"before\": %s, \"after\": %s, \"source\": {\"connector\": \"postgresql\", "
		 "\"table\": \"customers\"}, \"op\": \"%c\", \"ts_ms\": 1}",
		 before ? before : "null", after ? after : "null", op);
	if (env) {
		snprintf(t->keys[t->n], sizeof(t->keys[t->n]),
			 "{\"schema\":{\"type\":\"struct\",\"fields\":[{\"type\":\"int32\","
			 "\"field\":\"id\"}]},\"payload\":{\"id\":%d}}", id);
		snprintf(t->vals[t->n], sizeof(t->vals[t->n]),
			 "{\"schema\":{\"type\":\"struct\",\"name\":\"Envelope\"},\"payload\":%s}",
			 ev);
	} else {
		snprintf(t->keys[t->n], sizeof(t->keys[t->n]), "{\"id\":%d}", id);
		snprintf(t->vals[t->n], sizeof(t->vals[t->n]), "%s", ev);
	}
	r->key = id < 0 ? NULL : t->keys[t->n];
	r->val = t->vals[t->n];
	t->n++;
}

static void tombstone(struct table *t, int id)
{
	snprintf(t->keys[t->n], sizeof(t->keys[t->n]), "{\"id\":%d}", id);
	t->recs[t->n].key = t->keys[t->n];
	t->recs[t->n].val = NULL;
	t->n++;
}

/* The row of id at version v, as PostgreSQL's connector would write it
 * (spaced: k2mc stores it compact) into buf, and compact into the table. */
static const char *row(struct table *t, int id, int v, char *buf, size_t len)
{
	snprintf(buf, len, "{\"id\": %d, \"name\": \"customer %d\", \"v\": %d}", id, id, v);
	snprintf(t->rows[id], sizeof(t->rows[id]), "{\"id\":%d,\"name\":\"customer %d\",\"v\":%d}",
		 id, id, v);
	return buf;
}

/* The history of the table: a snapshot (r), two updates of every third
 * row, deletes with their tombstones, a delete then a re-insert of the
 * same id, a truncate (no key), a record that is no change event. */
static void history(struct table *t)
{
	char b[128], a[128];

	memset(t, 0, sizeof(*t));
	for (int id = 0; id < ROWS; id++)
		event(t, id, 'r', NULL, row(t, id, 0, a, sizeof(a)), id % 2);
	for (int id = 0; id < ROWS; id += 3) {
		snprintf(b, sizeof(b), "%s", t->rows[id]);
		event(t, id, 'u', b, row(t, id, 1, a, sizeof(a)), id % 4 == 0);
		snprintf(b, sizeof(b), "%s", t->rows[id]);
		event(t, id, 'u', b, row(t, id, 2, a, sizeof(a)), id % 4 != 0);
	}
	for (int id = 1; id < ROWS; id += 5) {
		event(t, id, 'd', t->rows[id], NULL, id % 2);
		tombstone(t, id);
		t->rows[id][0] = '\0';
	}
	/* deleted, then inserted again with the same id */
	event(t, 7, 'd', t->rows[7], NULL, 0);
	tombstone(t, 7);
	event(t, 7, 'c', NULL, row(t, 7, 7, a, sizeof(a)), 1);
	event(t, -1, 't', NULL, NULL, 0);
	/* no op: not a change event; its key (id 8) is deleted in its place */
	snprintf(t->keys[t->n], sizeof(t->keys[t->n]), "{\"id\":8}");
	t->recs[t->n].key = t->keys[t->n];
	t->recs[t->n].val = "{\"after\": {\"id\": 8}}";
	t->n++;
	t->rows[8][0] = '\0';
}

/* customers:0 .. customers:n-1 = value: what an older run left */
static void preset_rows(int n, const char *value)
{
	for (int id = 0; id < n; id++) {
		char key[32];

		snprintf(key, sizeof(key), "customers:%d", id);
		mc_set(key, value);
	}
}

Test(mapping_e2e, debezium_events_keep_the_cache_equal_to_the_table)
{
	static const char *const extra[] = { "--cdc", "debezium", "--key-format", "json",
					     "--value-format", "json", "--key",
					     "customers:{keyjson:/id}", NULL };
	static struct table t;
	struct h_proc k;

	history(&t);
	start_world();
	/* what an older run left: the deleted rows must not survive */
	preset_rows(ROWS, "stale");
	produce(t.recs, t.n);
	cr_assert_eq(run_k2mc(&k, "cdc", extra), 0, "stderr:\n%s", tail_of(k.err_path));
	for (int id = 0; id < ROWS; id++) {
		char key[32];

		snprintf(key, sizeof(key), "customers:%d", id);
		if (t.rows[id][0] != '\0')
			expect_item(key, t.rows[id], 0, -1, -1);
		else
			expect_absent(key);
	}
	cr_expect_eq(final_stat(NULL, "truncates"), 1);
	cr_expect_eq(final_stat("\"skipped_by\"", "not_cdc"), 1);
	cr_expect_eq(final_stat(NULL, "invalidated"), 1);
	cr_expect_eq(final_stat(NULL, "skipped"), 1);
	cr_expect_eq(final_stat(NULL, "ignored"), 0, "a truncate is not an ignored tombstone");
	cr_expect_not_null(strstr(h_file_read(k.err_path, NULL), "a truncate event (op t)"),
			   "the truncate is not logged:\n%s", tail_of(k.err_path));
}

Test(mapping_e2e, debezium_invalidate_deletes_every_changed_key)
{
	static const char *const extra[] = { "--cdc", "debezium-invalidate", "--key-format",
					     "json", "--value-format", "json", "--key",
					     "customers:{keyjson:/id}", NULL };
	static struct table t;
	struct h_proc k;

	history(&t);
	start_world();
	preset_rows(ROWS + 2, "cached");
	produce(t.recs, t.n);
	cr_assert_eq(run_k2mc(&k, "cdc-inv", extra), 0, "stderr:\n%s", tail_of(k.err_path));
	/* every row had a change: readers refill from the database */
	for (int id = 0; id < ROWS; id++) {
		char key[32];

		snprintf(key, sizeof(key), "customers:%d", id);
		expect_absent(key);
	}
	/* rows without a change keep what they had */
	expect_item("customers:30", "cached", 0, -1, -1);
	expect_item("customers:31", "cached", 0, -1, -1);
	cr_expect_eq(final_stat(NULL, "written"), 0);
	cr_expect_eq(final_stat(NULL, "truncates"), 1);
}

/* ---- the same in Avro, through a Schema Registry ------------------------------------*/

#define KEY_ID 1
#define ENV_ID 2
static const char KEY_SCHEMA[] =
	"{\"type\":\"record\",\"name\":\"Key\",\"namespace\":\"db.public.customers\","
	"\"fields\":[{\"name\":\"id\",\"type\":\"int\"}]}";
static const char ENV_SCHEMA[] =
	"{\"type\":\"record\",\"name\":\"Envelope\",\"namespace\":\"db.public.customers\","
	"\"fields\":[{\"name\":\"before\",\"type\":[\"null\",{\"type\":\"record\",\"name\":"
	"\"Value\",\"fields\":[{\"name\":\"id\",\"type\":\"int\"},{\"name\":\"name\","
	"\"type\":\"string\"}]}]},{\"name\":\"after\",\"type\":[\"null\",\"Value\"]},"
	"{\"name\":\"op\",\"type\":\"string\"}]}";

/* Avro binary, by hand: a zigzag varint, a string */
static size_t put_long(char *p, int64_t v)
{
	uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
	size_t n = 0;

	do {
		p[n++] = (char)((z & 0x7f) | (z > 0x7f ? 0x80 : 0));
		z >>= 7;
	} while (z != 0);
	return n;
}

static size_t put_string(char *p, const char *s)
{
	size_t n = put_long(p, (int64_t)strlen(s));

	memcpy(p + n, s, strlen(s));
	return n + strlen(s);
}

static size_t wire_header(char *p, uint32_t id)
{
	p[0] = 0;
	p[1] = (char)(id >> 24);
	p[2] = (char)(id >> 16);
	p[3] = (char)(id >> 8);
	p[4] = (char)id;
	return 5;
}

/* a row image: the union branch, then id and name (NULL: the null branch) */
static size_t put_row(char *p, int id, const char *name)
{
	size_t n;

	if (name == NULL)
		return put_long(p, 0);
	n = put_long(p, 1);
	n += put_long(p + n, id);
	return n + put_string(p + n, name);
}

struct avro_events {
	struct rec recs[64];
	char keys[64][16], vals[64][128];
	int n;
};

static void avro_event(struct avro_events *e, int id, char op, const char *before,
		       const char *after)
{
	char opstr[2] = { op, 0 };
	size_t k = wire_header(e->keys[e->n], KEY_ID), v = wire_header(e->vals[e->n], ENV_ID);

	k += put_long(e->keys[e->n] + k, id);
	v += put_row(e->vals[e->n] + v, id, before);
	v += put_row(e->vals[e->n] + v, id, after);
	v += put_string(e->vals[e->n] + v, opstr);
	e->recs[e->n] = (struct rec){ e->keys[e->n], e->vals[e->n], 0, { NULL } };
	bin_klen[e->n] = k;
	bin_vlen[e->n] = v;
	e->n++;
}

static void avro_raw(struct avro_events *e, int id, const char *val, size_t vlen)
{
	size_t k = wire_header(e->keys[e->n], KEY_ID);

	k += put_long(e->keys[e->n] + k, id);
	memcpy(e->vals[e->n], val, vlen);
	e->recs[e->n] = (struct rec){ e->keys[e->n], vlen ? e->vals[e->n] : NULL, 0, { NULL } };
	bin_klen[e->n] = k;
	bin_vlen[e->n] = vlen;
	e->n++;
}

/* ids 0..9 inserted, 0..4 updated, 5 deleted (with its tombstone), 6
 * deleted and inserted again; then a value that is not Avro (id 7) and one
 * whose schema the registry lacks (id 8): their keys are deleted in their
 * place. */
static void avro_history(struct avro_events *e)
{
	char name[32];

	memset(e, 0, sizeof(*e));
	memset(bin_klen, 0, sizeof(bin_klen));
	memset(bin_vlen, 0, sizeof(bin_vlen));
	for (int id = 0; id < 10; id++) {
		snprintf(name, sizeof(name), "c%d", id);
		avro_event(e, id, 'r', NULL, name);
	}
	for (int id = 0; id < 5; id++) {
		snprintf(name, sizeof(name), "c%d v2", id);
		avro_event(e, id, 'u', "old", name);
	}
	avro_event(e, 5, 'd', "c5", NULL);
	avro_raw(e, 5, NULL, 0);
	avro_event(e, 6, 'd', "c6", NULL);
	avro_raw(e, 6, NULL, 0);
	avro_event(e, 6, 'c', NULL, "c6 again");
	avro_raw(e, 7, "{\"json\":1}", 10);
	avro_raw(e, 8, "\0\0\0\0\x63\x02", 6);
}

static void expect_avro_table(void)
{
	for (int id = 0; id < 10; id++) {
		char key[32], want[64];

		snprintf(key, sizeof(key), "customers:%d", id);
		if (id == 5 || id == 7 || id == 8) {
			expect_absent(key);
			continue;
		}
		snprintf(want, sizeof(want), "{\"id\":%d,\"name\":\"c%d%s\"}", id, id,
			 id < 5 ? " v2" : id == 6 ? " again" : "");
		expect_item(key, want, 0, -1, -1);
	}
}

Test(mapping_e2e, debezium_avro_through_a_schema_registry)
{
	static struct avro_events e;
	char url[64];
	const char *extra[] = { "--cdc", "debezium", "--key-format", "avro", "--value-format",
				"avro", "--schema-registry", url, "--key",
				"customers:{keyjson:/id}", NULL };
	struct h_proc k;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv_registry_start(0));
	srv_registry_serve(KEY_ID, KEY_SCHEMA);
	srv_registry_serve(ENV_ID, ENV_SCHEMA);
	avro_history(&e);
	start_world();
	preset_rows(10, "stale");
	produce(e.recs, e.n);
	cr_assert_eq(run_k2mc(&k, "avro", extra), 0, "stderr:\n%s", tail_of(k.err_path));
	expect_avro_table();
	cr_expect_eq(final_stat("\"skipped_by\"", "not_avro"), 1);
	cr_expect_eq(final_stat("\"skipped_by\"", "schema_unavailable"), 1);
	cr_expect_eq(final_stat(NULL, "invalidated"), 2);
	srv_registry_stop();
}

/* The registry is down when k2mc starts: the thread that decodes waits
 * (key_avro: the consumer, for the key; else the writer, for the value),
 * writes and commits nothing past the first record, counts nothing invalid;
 * once the registry answers, everything lands. */
static void registry_down_at_start(int key_avro)
{
	static struct avro_events e;
	char url[64], line[512];
	int port = h_free_port();
	const char *extra[] = { "--cdc", "debezium", "--key-format", key_avro ? "avro" : "json",
				"--value-format", "avro", "--schema-registry", url,
				"--schema-registry-property", "negative.cache.ms=100", "--key",
				"customers:{keyjson:/id}", NULL };
	const char *const args[] = { "--writers", "2", "--stats-interval-ms", "500", "--stats-json",
				     json_path, NULL };
	struct h_proc k;
	int status = 0;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	avro_history(&e);
	if (!key_avro) {
		/* JSON keys: the same ids (under 64: one zigzag byte, 2 x id) */
		for (int i = 0; i < e.n; i++) {
			snprintf(e.keys[i], sizeof(e.keys[i]), "{\"id\":%d}",
				 (unsigned char)e.keys[i][5] >> 1);
			bin_klen[i] = 0;
		}
	}
	start_world();
	produce(e.recs, e.n);
	h_tmppath(json_path, sizeof(json_path), key_avro ? "down-key.json" : "down-value.json");
	world_k2mc_start(&W, &k, &(struct world_k2mc){ .group = key_avro ? "down-k" : "down-v",
						       .eof = 1, .args = args, .args2 = extra });
	cr_assert_eq(h_wait_line(k.err_path, "Schema Registry is unreachable", NULL, k.pid, 30000,
				 line, sizeof(line)),
		     0, "no wait logged; stderr:\n%s", tail_of(k.err_path));
	cr_expect_not_null(strstr(line, key_avro ? "the partition waits" : "the batch waits"),
			   "%s", line);
	cr_expect(!mg("customers:0").found, "written while the registry is down");
	cr_expect_eq(h_exited(k.pid, &status), 0, "k2mc gave up: %s", tail_of(k.err_path));
	srv_registry_start(port);
	srv_registry_serve(KEY_ID, KEY_SCHEMA);
	srv_registry_serve(ENV_ID, ENV_SCHEMA);
	cr_assert_eq(h_wait(k.pid, 60000, &status), 0, "k2mc did not finish; stderr:\n%s",
		     tail_of(k.err_path));
	cr_assert_eq(h_exit_code(status), 0, "stderr:\n%s", tail_of(k.err_path));
	cr_expect(h_file_contains(k.err_path, "Schema Registry answers again"), "%s",
		  tail_of(k.err_path));
	expect_avro_table();
	/* the registry's absence made nothing invalid: only the two bad records */
	cr_expect_eq(final_stat(NULL, "skipped"), 2);
	cr_expect_geq(final_stat(NULL, "registry_waits"), 1, "the wait is not counted");
	srv_registry_stop();
}

Test(mapping_e2e, registry_down_the_consumer_waits_for_keys)
{
	registry_down_at_start(1);
}

Test(mapping_e2e, registry_down_the_writer_waits_for_values)
{
	registry_down_at_start(0);
}

/* The new reasons under the other policies: dlq (the record's copy with its
 * reason), fail (exit 1, nothing at or past it committed). */
Test(mapping_e2e, avro_and_cdc_reasons_under_dlq_and_fail)
{
	static struct avro_events e;
	char url[64], group[32];
	const char *base[] = { "--cdc", "debezium", "--key-format", "avro", "--value-format", "avro",
			       "--schema-registry", url, "--key", "customers:{keyjson:/id}",
			       "--on-invalid", NULL, "--dlq-topic", DLQ, NULL };
	struct world_letter l[4];
	struct h_proc k;
	int n;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv_registry_start(0));
	srv_registry_serve(KEY_ID, KEY_SCHEMA);
	srv_registry_serve(ENV_ID, ENV_SCHEMA);
	memset(&e, 0, sizeof(e));
	memset(bin_klen, 0, sizeof(bin_klen));
	memset(bin_vlen, 0, sizeof(bin_vlen));
	avro_event(&e, 1, 'c', NULL, "one");
	avro_raw(&e, 2, "{\"json\":1}", 10);           /* offset 1: not_avro */
	avro_event(&e, 3, 'c', NULL, "three");
	avro_raw(&e, 4, "\0\0\0\0\x63\x02", 6);          /* offset 3: schema_unavailable */
	start_world();
	produce(e.recs, e.n);

	base[11] = "dlq";
	cr_assert_eq(run_k2mc(&k, "reasons-dlq", base), 0, "stderr:\n%s", tail_of(k.err_path));
	n = world_read_dlq(&W, dlq_topic, l, 4);
	cr_assert_eq(n, 2, "%d dead letters", n);
	qsort(l, (size_t)n, sizeof(l[0]), by_offset);
	cr_expect_str_eq(l[0].reason, "not_avro");
	cr_expect_eq(l[0].offset, 1);
	cr_expect_str_eq(l[1].reason, "schema_unavailable");
	cr_expect_eq(l[1].offset, 3);
	/* (world_read_dlq copies values as strings: the length is what can be
	 * compared of these bytes, which start with a NUL) */
	cr_expect_eq(l[1].vlen, 6, "the dead letter is the record's own value");
	world_letters_free(l, n);
	expect_item("customers:3", "{\"id\":3,\"name\":\"three\"}", 0, -1, -1);

	base[11] = "fail";
	base[12] = NULL;
	snprintf(group, sizeof(group), "reasons-fail");
	cr_assert_eq(run_k2mc(&k, group, base), 1, "stderr:\n%s", tail_of(k.err_path));
	cr_expect(h_file_contains(k.err_path, "not_avro"), "%s", tail_of(k.err_path));
	cr_expect_leq(committed(group), 1, "committed past the refused record");
	srv_registry_stop();
}
