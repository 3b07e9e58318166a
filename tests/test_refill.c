/* Integration suite for --refill (issue 12): three memcached servers and the
 * k2mc-mock cluster; one server loses its contents (kill -9 and a restart
 * empty on the same port, or flush_all) while k2mc keeps running, and k2mc
 * refills it: afterwards every key on every server equals its last record
 * (tombstones applied) and the other servers got no write for unchanged
 * keys; under live load no reader ever sees a key's value go back to an
 * older record; --refill-rate holds; a kill -9 of k2mc mid-refill converges
 * after a restart; a memcached served over TLS (--mc-tls) is flushed over
 * TLS and refilled. Not about the live path's own faults (test_faults.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <libmemcached/memcached.h>
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

#include "fake_mc.h"
#include "world.h"
#include "servers.h"
#include "workers/transport.h"

#define TOPIC "refill"
#define PARTS 4
#define NMC 3
#define TEST_TIMEOUT_S 120
#define MAX_KEYS 40000

static const char *const BASE_ARGS[] = { "--stats-interval-ms", "1000",
					 "--commit-interval-ms", "200",
					 "-X", "session.timeout.ms=3000",
					 "-X", "heartbeat.interval.ms=500",
					 "-o", "beginning", "--refill", NULL };

static struct world W;

WORLD_SUITE(refill, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

static void sleep_ms(int ms)
{
	usleep((useconds_t)ms * 1000);
}

/* NMC memcached servers (nmc -1: none) and TOPIC of PARTS partitions: keys,
 * 5% tombstones, records produced at rate (NULL: at once), the expect file
 * (each key's last record). */
static void start_world_mc(int nmc, uint32_t keys, uint64_t records, const char *rate)
{
	world_start(&W, &(struct world_opts){ .topic = TOPIC, .parts = PARTS, .keys = keys,
					      .tombstones = 5, .records = records, .rate = rate,
					      .nmc = nmc });
}

static void start_world(uint32_t keys, uint64_t records, const char *rate)
{
	start_world_mc(NMC, keys, records, rate);
}

static void start_k2mc(struct h_proc *k, const char *const extra[])
{
	world_k2mc_start(&W, k, &(struct world_k2mc){ .group = "g-refill", .args = BASE_ARGS,
						      .args2 = extra });
}

/* The sentinel key k2mc keeps on each server for partition p. */
static const char *sentinel(int p)
{
	static char key[256];

	snprintf(key, sizeof(key), "k2mc:%s:sentinel:%s:%d", world_name("g-refill"), W.topic, p);
	return key;
}

static void wait_log(struct h_proc *k, const char *regex, size_t *off, int timeout_ms)
{
	int rc = h_wait_line(k->err_path, regex, off, k->pid, timeout_ms, NULL, 0);

	cr_assert_eq(rc, 0, "no line /%s/ from k2mc within %d ms (%s); stderr:\n%s", regex,
		     timeout_ms, strerror(-rc), h_tail_of(k->err_path, 30));
}

static memcached_st *one_server(int port)
{
	memcached_st *m = memcached_create(NULL);

	memcached_server_add(m, "127.0.0.1", (in_port_t)port);
	return m;
}

/* Every server, keys placed as k2mc places them (ketama, its default). */
static memcached_st *ketama_handle(void)
{
	memcached_st *m = memcached_create(NULL);

	memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA, 1);
	for (int i = 0; i < NMC; i++)
		memcached_server_add(m, "127.0.0.1", (in_port_t)W.mc[i].port);
	return m;
}

static uint64_t cmd_set(int port)
{
	memcached_st *m = one_server(port);
	memcached_return_t rc;
	memcached_stat_st *st = memcached_stat(m, NULL, &rc);
	uint64_t n = UINT64_MAX;

	if (st != NULL && rc == MEMCACHED_SUCCESS)
		n = st[0].cmd_set;
	if (st != NULL)
		memcached_stat_free(m, st);
	memcached_free(m);
	return n;
}

/* The index of the server key is placed on (0..NMC-1). */
static int server_of(memcached_st *m, const char *key)
{
	uint32_t idx = memcached_generate_hash(m, key, strlen(key));

	return (int)idx;
}

/* Mismatches between the expect file and the cache (each key looked up
 * where it is placed); the first few described in first. Polls until none
 * or the deadline. */
static size_t check_expect_once(char *first, size_t len)
{
	char *b = h_file_read(W.expect, NULL), *save = NULL;
	memcached_st *m = ketama_handle();
	size_t bad = 0, o = 0;

	cr_assert_not_null(b, "no expect file");
	first[0] = '\0';
	for (char *line = strtok_r(b, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char *key = line + 2, *val = NULL, *v;
		size_t vl = 0;
		uint32_t fl = 0;
		memcached_return_t rc;

		if (line[0] == 'S') {
			val = strchr(key, ' ');
			if (val == NULL)
				continue;
			*val++ = '\0';
		}
		v = memcached_get(m, key, strlen(key), &vl, &fl, &rc);
		if ((val != NULL && (v == NULL || vl != strlen(val) || memcmp(v, val, vl) != 0)) ||
		    (val == NULL && v != NULL)) {
			if (bad++ < 5 && o < len)
				o += (size_t)snprintf(first + o, len - o, "%s on server %d: %s\n", key,
						      server_of(m, key),
						      v == NULL ? "missing" : val == NULL ? "present"
											  : "other value");
		}
		free(v);
	}
	memcached_free(m);
	free(b);
	return bad;
}

static void assert_expect(int timeout_ms, const char *what)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	char first[1024];
	size_t bad;

	while ((bad = check_expect_once(first, sizeof(first))) != 0 && h_now_ms() < deadline)
		sleep_ms(250);
	cr_assert_eq(bad, 0, "%s: %zu keys differ from their last record; first:\n%s", what, bad,
		     first);
}

/* Production finished and k2mc wrote all of it. */
static void load_and_settle(void)
{
	uint64_t produced = 0;
	int rc = h_mock_wait_produced(&W.mock, 60000, &produced);

	cr_assert_eq(rc, 0, "production: %s", strerror(-rc));
	assert_expect(30000, "before the loss");
}

/* kill -9 server s, restart it empty on the same port. */
static void restart_server(int s)
{
	int port = W.mc[s].port, rc;

	cr_assert_eq(h_signal(W.mc[s].proc.pid, SIGKILL), 0);
	h_wait(W.mc[s].proc.pid, 5000, NULL);
	rc = h_memcached_start(&W.mc[s], port, NULL);
	cr_assert_eq(rc, 0, "memcached %d did not restart on %d: %s", s, port, strerror(-rc));
}

static void flush_server(int s)
{
	memcached_st *m = one_server(W.mc[s].port);

	cr_assert_eq(memcached_flush(m, 0), MEMCACHED_SUCCESS, "flush_all");
	memcached_free(m);
}

static void loss_and_refill(int restart)
{
	struct h_proc k;
	uint64_t before[NMC];
	size_t off = 0;

	start_world(3000, 20000, NULL);
	start_k2mc(&k, NULL);
	load_and_settle();
	/* the first run's sentinels are in place */
	sleep_ms(2500);
	for (int i = 0; i < NMC; i++)
		before[i] = cmd_set(W.mc[i].port);
	if (restart)
		restart_server(2);
	else
		flush_server(2);
	wait_log(&k, restart ? "lost its contents \\(restarted" : "lost its contents \\(sentinel",
		 &off, 15000);
	wait_log(&k, "refill of memcached .*: 4 of 4 partition\\(s\\) done", &off, 30000);
	assert_expect(5000, "after the refill");
	for (int i = 0; i < 2; i++)
		cr_assert_eq(cmd_set(W.mc[i].port), before[i],
			     "server %d, which lost nothing, got %" PRIu64 " writes", i,
			     cmd_set(W.mc[i].port) - before[i]);
	cr_assert_eq(h_stop(k.pid, 10000), 0, "k2mc did not stop cleanly: %s",
		     h_tail_of(k.err_path, 20));
}

Test(refill, restart_refills_the_server)
{
	loss_and_refill(1);
}

Test(refill, flush_all_refills_the_server)
{
	loss_and_refill(0);
}

/* GET path from 127.0.0.1:port: the whole answer, status line and headers
 * included (malloc'd), or NULL. */
static char *http_get(int port, const char *path)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 5, 0 };
	char req[128];
	int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap + 1);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ssize_t n;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || buf == NULL) {
		free(buf);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    write(fd, req, (size_t)rl) != (ssize_t)rl) {
		close(fd);
		free(buf);
		return NULL;
	}
	while ((n = read(fd, buf + len, cap - len)) > 0) {
		len += (size_t)n;
		if (len == cap) {
			char *nb = realloc(buf, cap * 2 + 1);

			if (nb == NULL)
				break;
			buf = nb;
			cap *= 2;
		}
	}
	close(fd);
	buf[len] = '\0';
	return buf;
}

/* The k2mc_refill_lag_records rows of a scrape: how many, and their sum;
 * *active: k2mc_refill_active of server s. -1 rows: no answer. */
static int refill_lags(int port, int s, int64_t *sum, int *active)
{
	char *t = http_get(port, "/metrics"), series[96];
	int rows = 0;

	*sum = 0;
	*active = -1;
	if (t == NULL)
		return -1;
	snprintf(series, sizeof(series), "k2mc_refill_active{server=\"127.0.0.1:%d\"} ", W.mc[s].port);
	for (char *p = t; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		if (strncmp(p, "k2mc_refill_lag_records{", 24) == 0) {
			char *v = strchr(p, '}');

			rows++;
			*sum += v != NULL ? strtoll(v + 1, NULL, 10) : 0;
		} else if (strncmp(p, series, strlen(series)) == 0) {
			*active = atoi(p + strlen(series));
		}
	}
	free(t);
	return rows;
}

/* GET /readyz: its status code (0: no answer), the body into body. */
static int readyz(int port, char *body, size_t len)
{
	char *t = http_get(port, "/readyz"), *b;
	int status = 0;

	body[0] = '\0';
	if (t == NULL)
		return 0;
	if (sscanf(t, "HTTP/1.%*d %d", &status) != 1)
		status = 0;
	b = strstr(t, "\r\n\r\n");
	snprintf(body, len, "%s", b != NULL ? b + 4 : "");
	free(t);
	return status;
}

/* seq of a generated value "v:<key>:<seq>:..." (bench/gen.h) */
static int64_t seq_of(const char *v, size_t vl)
{
	const char *p = memchr(v, ':', vl), *q;

	if (p == NULL)
		return -1;
	q = memchr(p + 1, ':', vl - (size_t)(p + 1 - v));
	if (q == NULL)
		return -1;
	return strtoll(q + 1, NULL, 10);
}

/* The last 40 lines of path that are not periodic stats lines ("in N/s" and
 * the refill progress lines), for failure messages. */
static const char *log_events(const char *path)
{
	static char buf[8192];
	char *all = h_file_read(path, NULL), *line, *save = NULL;
	const char *keep[40];
	int n = 0;

	buf[0] = '\0';
	if (all == NULL)
		return buf;
	for (line = strtok_r(all, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
		if (strstr(line, "INFO: in ") == NULL && strstr(line, " | rewritten ") == NULL)
			keep[n++ % 40] = line;
	for (int i = n > 40 ? n - 40 : 0; i < n; i++)
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s\n", keep[i % 40]);
	free(all);
	return buf;
}

/* Partitions that rounds of refill logged done in path, summed over the
 * rounds: a partition Kafka could not be read for in one round ("could not
 * be read; ... tried again") is refilled by the next, so a refill of 4
 * partitions may end as "3 of 4" and then "1 of 1" (seen on a real broker). */
static int refilled_partitions(const char *path)
{
	char *all = h_file_read(path, NULL), *at;
	int sum = 0;

	for (at = all; at != NULL && (at = strstr(at, "refill of memcached ")) != NULL; at++) {
		const char *colon = strstr(at, ": ");
		int d, n;

		if (colon != NULL && sscanf(colon, ": %d of %d partition(s) done", &d, &n) == 2)
			sum += d;
	}
	free(all);
	return sum;
}

/* While the refill runs the live path keeps writing new values of keys on
 * the refilled server; a reader polls them and must never see a key's seq
 * go down. */
Test(refill, never_older_under_load)
{
	static int64_t seen[MAX_KEYS];
	static char key[MAX_KEYS][24];
	int nk = 0;
	struct h_proc k;
	size_t off = 0;
	memcached_st *km, *m2;
	uint64_t polls = 0, backwards = 0, values = 0;
	const uint32_t keys = 4000;
	int64_t t_end;

	start_world(keys, 60000, "5000");
	/* nothing here kills k2mc, so no short session: on a loaded machine a
	 * real coordinator answered a heartbeat after 3 s, the 3 s session of
	 * BASE_ARGS ended, and the refill began again on what was left */
	start_k2mc(&k, (const char *const[]){ "--refill-rate", "800", "-X",
					      "session.timeout.ms=15000", "-X",
					      "heartbeat.interval.ms=1000", NULL });
	km = ketama_handle();
	for (uint32_t i = 0; i < keys; i++) {
		snprintf(key[nk], sizeof(key[nk]), "key-%08u", i);
		if (server_of(km, key[nk]) == 2)
			nk++;
	}
	memset(seen, -1, sizeof(seen));
	wait_log(&k, "first run|assigned|consuming|started", &off, 20000);
	sleep_ms(5000);
	flush_server(2);
	m2 = one_server(W.mc[2].port);
	t_end = h_now_ms() + 60000;
	for (int done = 0; h_now_ms() < t_end && !done;) {
		for (int i = 0; i < nk; i++) {
			size_t vl = 0;
			uint32_t fl = 0;
			memcached_return_t rc;
			char *v = memcached_get(m2, key[i], strlen(key[i]), &vl, &fl, &rc);
			int64_t s;

			if (v == NULL)
				continue;
			s = seq_of(v, vl);
			free(v);
			values++;
			if (s < seen[i])
				backwards++;
			else
				seen[i] = s;
		}
		polls++;
		done = refilled_partitions(k.err_path) >= PARTS &&
		       h_file_contains(W.mock.proc.out_path, "produced=");
	}
	memcached_free(m2);
	memcached_free(km);
	cr_assert(h_file_contains(k.err_path, "lost its contents (sentinel"),
		  "no loss seen; stderr:\n%s", h_tail_of(k.err_path, 30));
	cr_assert(refilled_partitions(k.err_path) >= PARTS,
		  "refill not done; stderr without the stats lines:\n%s", log_events(k.err_path));
	cr_assert_eq(backwards, 0, "%" PRIu64 " reads (of %" PRIu64 " values, %" PRIu64
		     " polls over %d keys) saw an older value than one seen before", backwards,
		     values, polls, nk);
	cr_assert_gt(values, 0);
	load_and_settle();
	assert_expect(20000, "after the refill under load");
	h_stop(k.pid, 10000);
}

/* --refill-rate over a measured window, then kill -9 of k2mc mid-refill:
 * the sentinels are still missing, so the restarted k2mc refills again and
 * the cache converges. */
Test(refill, rate_holds_and_crash_mid_refill_converges)
{
	struct h_proc k, k2;
	size_t off = 0;
	uint64_t a, b;
	int64_t t0, t1;
	double rate;

	char port_s[16], port2_s[16], json[H_PATH_MAX], state_re[128], *js, want[96], body[256];
	int port = h_free_port(), port2, rows, active, rising = 0, status;
	int64_t lag, lag_prev, lag_max = 0;

	snprintf(port_s, sizeof(port_s), "%d", port);
	start_world(30000, 40000, NULL);
	start_k2mc(&k, (const char *const[]){ "--refill-rate", "1000", "--metrics-addr", port_s,
					      "--refill-ready", "no", NULL });
	load_and_settle();
	sleep_ms(2500);
	flush_server(2);
	wait_log(&k, "lost its contents \\(sentinel", &off, 15000);
	/* the two passes read first; the writes start at once after pass 1
	 * of the first partition: skip a second, then measure 3 s. /metrics
	 * at both ends of the window (published every second): a lag row per
	 * partition, their sum above 0 and falling, never rising between */
	sleep_ms(1500);
	/* and until /metrics shows it under way: a row per partition, the
	 * server's refill active, records to go (published every second; a
	 * real broker's first pass can take longer than the mock's) */
	for (int64_t until = h_now_ms() + 15000;;) {
		rows = refill_lags(port, 2, &lag_max, &active);
		if ((rows == PARTS && active == 1 && lag_max > 0) || h_now_ms() > until)
			break;
		sleep_ms(200);
	}
	a = cmd_set(W.mc[2].port);
	t0 = h_now_ms();
	cr_assert(rows == PARTS && active == 1 && lag_max > 0,
		  "while refilling: %d k2mc_refill_lag_records rows (want %d), sum %lld, active %d",
		  rows, PARTS, (long long)lag_max, active);
	/* --refill-ready no: not ready while the refill runs, with the reason */
	snprintf(want, sizeof(want), "not ready: refilling memcached 127.0.0.1:%d\n",
		 W.mc[2].port);
	status = readyz(port, body, sizeof(body));
	cr_assert(status == 503 && strcmp(body, want) == 0,
		  "/readyz while refilling with --refill-ready no: %d '%s', want 503 '%s'", status,
		  body, want);
	for (lag_prev = lag_max; h_now_ms() < t0 + 3000; sleep_ms(250)) {
		if (refill_lags(port, 2, &lag, &active) == PARTS) {
			rising += lag > lag_prev;
			lag_prev = lag;
		}
	}
	b = cmd_set(W.mc[2].port);
	t1 = h_now_ms();
	cr_assert_lt(lag_prev, lag_max, "k2mc_refill_lag_records did not fall in 3 s (%lld)",
		     (long long)lag_max);
	cr_assert_eq(rising, 0, "k2mc_refill_lag_records rose %d times", rising);
	snprintf(state_re, sizeof(state_re),
		 "refill 127\\.0\\.0\\.1:%d (detecting|refilling) \\| rewritten [0-9]+ lag [1-9][0-9]* "
		 "\\| [0-9]+/s", W.mc[2].port);
	cr_assert(h_wait_line(k.err_path, state_re, &off, k.pid, 1000, NULL, 0) == 0,
		  "no refill state line /%s/; stderr:\n%s", state_re, h_tail_of(k.err_path, 20));
	rate = (double)(b - a) * 1000.0 / (double)(t1 - t0);
	cr_log_info("refill rate %.0f records/s for --refill-rate 1000", rate);
	cr_assert(rate >= 800 && rate <= 1200, "--refill-rate 1000 measured %.0f records/s", rate);
	/* mid-refill: still under way, records still to go (a round that
	 * ended early for a partition it could not read does not count) */
	rows = refill_lags(port, 2, &lag, &active);
	cr_assert(active == 1 && lag > 0 && refilled_partitions(k.err_path) < PARTS,
		  "refill already over (active %d, %lld records to go, %d partitions done); "
		  "cannot crash it midway", active, (long long)lag, refilled_partitions(k.err_path));
	h_signal(k.pid, SIGKILL);
	h_wait(k.pid, 5000, NULL);
	off = 0;
	port2 = h_free_port();
	snprintf(port2_s, sizeof(port2_s), "%d", port2);
	h_tmppath(json, sizeof(json), "stats.json");
	start_k2mc(&k2, (const char *const[]){ "--metrics-addr", port2_s, "--stats-json", json,
					       "--refill-ready", "no", NULL });
	wait_log(&k2, "lost its contents \\(sentinel", &off, 30000);
	/* the partitions refilled before the crash have their sentinels: only
	 * the others are refilled again */
	wait_log(&k2, "refill of memcached .*: ([1-4]) of \\1 partition\\(s\\) done", &off, 60000);
	assert_expect(5000, "after a crash mid-refill and a restart");
	/* at the end: the rows stay, at 0; the state line says done once */
	snprintf(state_re, sizeof(state_re),
		 "refill 127\\.0\\.0\\.1:%d done \\| rewritten [1-9][0-9]* lag 0 \\| [0-9]+/s",
		 W.mc[2].port);
	wait_log(&k2, state_re, &off, 5000);
	for (int64_t dl = h_now_ms() + 5000; h_now_ms() < dl; sleep_ms(200)) {
		rows = refill_lags(port2, 2, &lag, &active);
		if (rows > 0 && lag == 0 && active == 0)
			break;
	}
	cr_assert(rows >= 1 && rows <= PARTS && lag == 0 && active == 0,
		  "after the refill: %d k2mc_refill_lag_records rows, sum %lld, active %d", rows,
		  (long long)lag, active);
	/* ready again once the refill is over (published every second) */
	for (int64_t dl = h_now_ms() + 5000; h_now_ms() < dl; sleep_ms(200)) {
		status = readyz(port2, body, sizeof(body));
		if (status == 200)
			break;
	}
	cr_assert(status == 200 && strcmp(body, "ready\n") == 0,
		  "/readyz after the refill with --refill-ready no: %d '%s'", status, body);
	h_stop(k2.pid, 10000);
	js = h_file_read(json, NULL);
	cr_assert_not_null(js);
	snprintf(body, sizeof(body), "\"refill_lag\":[{\"topic\":\"%s\"", W.topic);
	cr_assert(strstr(js, body) != NULL &&
		  strstr(js, "\"state\":\"done\",\"records\":") != NULL,
		  "--stats-json has no refill_lag rows or no done state:\n%.2000s", js);
	free(js);
}

/* ---- TLS ----------------------------------------------------------------------*/

/* Mismatches of the expect file on one server (read through port), polled
 * until none or the deadline. */
static void assert_expect_on(int port, int timeout_ms, const char *what)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	struct h_verify v;
	int rc;

	for (;;) {
		rc = h_verify_memcached(W.expect, "127.0.0.1", port, NULL, &v);
		if ((rc == 0 && h_verify_mismatches(&v) == 0) || h_now_ms() >= deadline)
			break;
		sleep_ms(200);
	}
	cr_assert_eq(rc, 0, "%s: cannot verify: %s", what, v.first);
	cr_assert_eq(h_verify_mismatches(&v), 0,
		     "%s: %zu missing, %zu wrong, %zu present that should not be; first:\n%s", what,
		     v.missing, v.wrong, v.present, v.first);
}

/* "flush_all" over TLS (k2mc's own transport, verified against ca): the
 * server's reply line into reply. */
static void tls_flush_all(int port, const char *ca, char *reply, size_t len)
{
	struct transport_addr a = { .host = "127.0.0.1", .port = port };
	struct transport_tls tls = { .enabled = 1, .ca = ca };
	char err[256];
	struct transport *t = transport_new(&a, &tls, err, sizeof(err));
	int64_t deadline = h_now_ms() + 5000;
	size_t have = 0;

	cr_assert_not_null(t, "transport_new: %s", err);
	cr_assert_eq(transport_connect(t, deadline), 0, "TLS connect: %s", transport_error(t));
	cr_assert(transport_is_tls(t));
	cr_assert_eq(transport_send_all(t, "flush_all\r\n", 11, deadline), 0, "%s",
		     transport_error(t));
	while (have + 1 < len && memchr(reply, '\n', have) == NULL) {
		ssize_t r = transport_recv_some(t, reply + have, len - 1 - have, deadline);

		cr_assert_gt(r, 0, "no reply to flush_all over TLS: %s", transport_error(t));
		have += (size_t)r;
	}
	reply[have] = '\0';
	transport_free(t);
}

/* One memcached that serves TLS only to k2mc (-Z, a certificate made here;
 * k2mc verifies it against the test CA). Its contents are flushed over TLS;
 * k2mc sees the sentinels gone (checked over TLS) and refills it over TLS. */
Test(refill, tls_server_flushed_is_refilled)
{
	struct srv_certs certs;
	struct srv_tls_mc m;
	struct h_proc k;
	char reply[64], key[256], buf[128];
	size_t off = 0;

	signal(SIGPIPE, SIG_IGN); /* OpenSSL writes with write() */
	srv_make_certs(&certs);
	srv_start_tls_memcached(&m, certs.srv_crt, certs.srv_key, NULL);
	start_world_mc(-1, 2000, 8000, NULL);
	snprintf(W.mc_list, sizeof(W.mc_list), "127.0.0.1:%d", m.port);
	start_k2mc(&k, (const char *const[]){ "--mc-tls", "--mc-tls-ca", certs.ca, NULL });
	cr_assert_eq(h_mock_wait_produced(&W.mock, 30000, NULL), 0, "production");
	/* the plain listener of the same server shows what k2mc wrote */
	assert_expect_on(m.plain_port, 20000, "before the loss");
	/* the first run's sentinels, one per partition, set over TLS */
	for (int p = 0; p < PARTS; p++) {
		int64_t deadline = h_now_ms() + 10000;

		snprintf(key, sizeof(key), "%s", sentinel(p));
		while (fake_mc_fetch(m.plain_port, key, buf, sizeof(buf)) < 0) {
			cr_assert_lt(h_now_ms(), deadline, "no sentinel %s; stderr:\n%s", key,
				     h_tail_of(k.err_path, 20));
			sleep_ms(100);
		}
	}
	tls_flush_all(m.port, certs.ca, reply, sizeof(reply));
	cr_assert_str_eq(reply, "OK\r\n");
	cr_assert_lt(fake_mc_fetch(m.plain_port, key, buf, sizeof(buf)), 0, "not flushed");
	wait_log(&k, "lost its contents \\(sentinel", &off, 10000);
	wait_log(&k, "refill of memcached .*: 4 of 4 partition\\(s\\) done; [1-9][0-9]* records "
		     "written",
		 &off, 20000);
	assert_expect_on(m.plain_port, 5000, "after the refill over TLS");
	cr_assert(!h_file_contains(k.err_path, "not over --mc-tls"), "stderr:\n%s",
		  h_tail_of(k.err_path, 20));
	cr_assert_eq(h_stop(k.pid, 10000), 0, "k2mc did not stop cleanly: %s",
		     h_tail_of(k.err_path, 20));
}

/* ---- refill makes the live path's decision (issue 23) ---------------------------*/

/* One memcached (W.mc[0]) and a mock with TOPIC in one partition, holding
 * no generated records: the test produces its own. */
static void start_plain_world(void)
{
	world_start(&W, &(struct world_opts){ .topic = TOPIC, .parts = 1, .no_expect = 1 });
}

/* Produces key[i] = val[i] for i < n to TOPIC partition 0, in order. */
static void produce_kv(char (*key)[32], char *const *val, int n)
{
	rd_kafka_t *rk = world_producer(&W, NULL);

	for (int i = 0; i < n; i++) {
		rd_kafka_resp_err_t err =
			rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(W.topic), RD_KAFKA_V_PARTITION(0),
					  RD_KAFKA_V_KEY(key[i], strlen(key[i])),
					  RD_KAFKA_V_VALUE(val[i], strlen(val[i])),
					  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);

		cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce %d: %s", i,
			     rd_kafka_err2str(err));
	}
	world_producer_close(rk);
}

/* key's value on W.mc[0] (malloc'd), or NULL. */
static char *get0(const char *key, size_t *vlen)
{
	memcached_st *m = one_server(W.mc[0].port);
	memcached_return_t rc;
	uint32_t fl;
	char *v = memcached_get(m, key, strlen(key), vlen, &fl, &rc);

	memcached_free(m);
	return v;
}

/* Waits until key holds want (NULL: is absent) on W.mc[0]. */
static void wait_key(const char *key, const char *want, int timeout_ms, const char *what)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	size_t vl = 0;
	char *v;

	for (;;) {
		v = get0(key, &vl);
		if (want == NULL ? v == NULL
				 : v != NULL && vl == strlen(want) && memcmp(v, want, vl) == 0)
			break;
		if (h_now_ms() >= deadline)
			cr_assert_fail("%s: %s holds %s%.*s%s, expected %s%s%s", what, key,
				       v ? "'" : "", v ? (int)(vl < 40 ? vl : 40) : 4, v ? v : "none",
				       v ? "'" : "", want ? "'" : "", want ? want : "none",
				       want ? "'" : "");
		free(v);
		sleep_ms(100);
	}
	free(v);
}

/* Waits for the first look to set the partition's sentinel, then flushes
 * W.mc[0] and waits for the refill of its one partition to end; returns
 * the line saying so. */
static void flush_and_refill(struct h_proc *k, char *line, size_t len)
{
	int64_t deadline = h_now_ms() + 15000;
	size_t off = 0, vl;
	char *v;
	int rc;

	while ((v = get0(sentinel(0), &vl)) == NULL) {
		cr_assert_lt(h_now_ms(), deadline, "no sentinel; stderr:\n%s",
			     h_tail_of(k->err_path, 20));
		sleep_ms(100);
	}
	free(v);
	flush_server(0);
	wait_log(k, "lost its contents \\(sentinel", &off, 15000);
	rc = h_wait_line(k->err_path, "refill of memcached .*: 1 of 1 partition\\(s\\) done", &off,
			 k->pid, 30000, line, len);
	cr_assert_eq(rc, 0, "no end of the refill (%s); stderr:\n%s", strerror(-rc),
		     h_tail_of(k->err_path, 30));
	cr_log_info("%s", line);
}

#define NBIG 50
#define NSMALL 20

/* --max-value-bytes 100: each "big" key gets a 10-byte value, then a
 * 500-byte one, which the live path skips, deleting the key. After a
 * flush_all the refill must leave them deleted (not add the 500-byte
 * values), and rewrite the small keys. */
Test(refill, refill_does_not_store_what_the_live_path_refused)
{
	static char key[2 * NBIG + NSMALL][32], small[NBIG + NSMALL][16], big[501];
	static char *val[2 * NBIG + NSMALL];
	struct h_proc k;
	char line[512], want[64];
	int n = 0;

	start_plain_world();
	memset(big, 'B', 500);
	for (int i = 0; i < NBIG + NSMALL; i++) {
		snprintf(key[n], sizeof(key[n]), i < NBIG ? "big%d" : "small%d", i);
		snprintf(small[i], sizeof(small[i]), "ten-b-%04d", i);
		val[n++] = small[i];
	}
	for (int i = 0; i < NBIG; i++) {
		snprintf(key[n], sizeof(key[n]), "big%d", i);
		val[n++] = big;
	}
	produce_kv(key, val, n);
	start_k2mc(&k, (const char *const[]){ "--max-value-bytes", "100", NULL });
	/* the live path: the big keys deleted, the small ones written */
	for (int i = 0; i < NBIG; i++)
		wait_key(key[i], NULL, 20000, "live");
	for (int i = NBIG; i < NBIG + NSMALL; i++)
		wait_key(key[i], small[i], 20000, "live");
	flush_and_refill(&k, line, sizeof(line));
	for (int i = NBIG; i < NBIG + NSMALL; i++)
		wait_key(key[i], small[i], 0, "after the refill");
	for (int i = 0; i < NBIG; i++)
		wait_key(key[i], NULL, 0, "after the refill");
	snprintf(want, sizeof(want), "; %d records written", NSMALL);
	cr_expect(strstr(line, want) != NULL, "refill: '%s', expected '%s'", line, want);
	cr_assert_eq(h_stop(k.pid, 10000), 0, "k2mc did not stop cleanly: %s",
		     h_tail_of(k.err_path, 20));
}

/* --on-invalid hash: 20 keys with a space, stored under their digest, and
 * 20 good ones. After a flush_all the refill rewrites both kinds. */
Test(refill, refill_rewrites_keys_stored_under_their_hash)
{
	static char key[2 * NSMALL][32], vals[2 * NSMALL][16], hk[NSMALL][40];
	static char *val[2 * NSMALL];
	struct h_proc k;
	char line[512], want[64];

	start_plain_world();
	for (int i = 0; i < 2 * NSMALL; i++) {
		snprintf(key[i], sizeof(key[i]), i < NSMALL ? "bad key %d" : "good%d", i);
		snprintf(vals[i], sizeof(vals[i]), "value-%d", i);
		val[i] = vals[i];
	}
	for (int i = 0; i < NSMALL; i++) {
		XXH128_hash_t h = XXH3_128bits(key[i], strlen(key[i]));

		snprintf(hk[i], sizeof(hk[i]), "%016llx%016llx", (unsigned long long)h.high64,
			 (unsigned long long)h.low64);
	}
	produce_kv(key, val, 2 * NSMALL);
	start_k2mc(&k, (const char *const[]){ "--on-invalid", "hash", NULL });
	for (int i = 0; i < NSMALL; i++) {
		wait_key(hk[i], vals[i], 20000, "live, hashed");
		wait_key(key[NSMALL + i], vals[NSMALL + i], 20000, "live");
	}
	flush_and_refill(&k, line, sizeof(line));
	for (int i = 0; i < NSMALL; i++) {
		wait_key(hk[i], vals[i], 0, "after the refill, hashed");
		wait_key(key[NSMALL + i], vals[NSMALL + i], 0, "after the refill");
	}
	snprintf(want, sizeof(want), "; %d records written", 2 * NSMALL);
	cr_expect(strstr(line, want) != NULL, "refill: '%s', expected '%s'", line, want);
	cr_assert_eq(h_stop(k.pid, 10000), 0, "k2mc did not stop cleanly: %s",
		     h_tail_of(k.err_path, 20));
}
