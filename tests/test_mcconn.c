/* Unit suite for workers/mcconn.h: the pipelined, acknowledged memcached
 * connection, against a real Debian memcached started by the harness (its
 * replies, its -I limit, its idle timeout, and what SIGKILL / SIGSTOP of it do
 * to an exchange), and against tests/fake_mc.c for what no real server does
 * on demand: memcached 1.6.9's reading of "ms", proxies closing on probes,
 * error replies, control bytes, endless lines, slow answers.
 * Not about key routing or batching policy: that is writer.c's.
 * K2MC_MEMCACHED_169=/path/to/memcached (a memcached 1.6.9 build) also runs
 * the dialect check against the real 1.6.9; skipped without it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <libgen.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "fake_mc.h"
#include "harness.h"
#include "workers/mcconn.h"

#define N_PIPELINED 1000

static struct h_memcached mc;
static struct mc_conn *conns[2];
static struct fake_mc *fakes[2];

static void teardown(void)
{
	for (size_t i = 0; i < sizeof(conns) / sizeof(conns[0]); i++) {
		mcconn_free(conns[i]);
		conns[i] = NULL;
	}
	for (size_t i = 0; i < sizeof(fakes) / sizeof(fakes[0]); i++) {
		fake_mc_stop(fakes[i]);
		fakes[i] = NULL;
	}
	h_cleanup();
}

TestSuite(mcconn, .fini = teardown, .timeout = 60);

static void start_memcached(const char *const extra[])
{
	int rc = h_memcached_start(&mc, 0, extra);

	cr_assert_eq(rc, 0, "memcached did not start: %s", strerror(-rc));
}

static struct fake_mc *start_fake(int slot, const struct fake_mc_opts *o)
{
	fake_mc_stop(fakes[slot]);
	fakes[slot] = fake_mc_start(o);
	cr_assert_not_null(fakes[slot], "fake memcached: %s", strerror(errno));
	return fakes[slot];
}

static struct mc_conn *new_conn(int slot, int port)
{
	struct mc_conn *c = mcconn_new("127.0.0.1", port);

	cr_assert_not_null(c);
	mcconn_free(conns[slot]);
	conns[slot] = c;
	return c;
}

static struct mc_conn *connect_to(int slot, int port)
{
	struct mc_conn *c = new_conn(slot, port);
	int rc = mcconn_ensure(c, 2000);

	cr_assert_eq(rc, 0, "connect to 127.0.0.1:%d: %s", port, mcconn_error(c));
	cr_assert(mcconn_connected(c));
	return c;
}

static const char *xname(enum mc_exchange x)
{
	return x == MC_X_DONE ? "DONE" : x == MC_X_PENDING ? "PENDING" : "FAILED";
}

static const char *rname(enum mc_reply r)
{
	static const char *const names[] = { "NONE",	  "STORED", "DELETED",	    "NOT_FOUND",
					     "TOO_LARGE", "OOM",    "SERVER_ERROR", "CLIENT_ERROR" };

	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

static int64_t boot_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Exchanges in 200 ms slices until the result is not PENDING or timeout_ms
 * passed (then PENDING). No send deadline. */
static enum mc_exchange exchange_until(struct mc_conn *c, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	enum mc_exchange x;

	do
		mcconn_exchange(&c, 1, 200, INT64_MAX, &x);
	while (x == MC_X_PENDING && h_now_ms() < deadline);
	return x;
}

static void queue_set_str(struct mc_conn *c, const char *key, const char *val)
{
	int rc = mcconn_queue_set(c, key, strlen(key), val, strlen(val), 0, 0);

	cr_assert_eq(rc, 0, "queue set %s: %s", key, strerror(-rc));
}

static void queue_del_str(struct mc_conn *c, const char *key)
{
	int rc = mcconn_queue_delete(c, key, strlen(key));

	cr_assert_eq(rc, 0, "queue delete %s: %s", key, strerror(-rc));
}

/* Queues n sets "k-<tag>-i" = "v-<tag>-i-<pad>"; writes them as an expect
 * file too, so the server's contents can be checked with the harness. */
static void queue_sets(struct mc_conn *c, const char *tag, int n, size_t pad, const char *expect)
{
	FILE *f = expect ? fopen(expect, "w") : NULL;
	char *val = malloc(pad + 64);
	char key[64];

	cr_assert_not_null(val);
	cr_assert(expect == NULL || f != NULL, "cannot write %s", expect);
	for (int i = 0; i < n; i++) {
		int l = snprintf(val, pad + 64, "v-%s-%d-", tag, i);

		memset(val + l, 'a' + i % 26, pad);
		val[(size_t)l + pad] = '\0';
		snprintf(key, sizeof(key), "k-%s-%d", tag, i);
		queue_set_str(c, key, val);
		if (f != NULL)
			fprintf(f, "S %s %s\n", key, val);
	}
	if (f != NULL)
		fclose(f);
	free(val);
}

/* Every reply in [0, n) is want; the first that is not is named. */
static void assert_all_replies(struct mc_conn *c, size_t n, enum mc_reply want)
{
	for (size_t i = 0; i < n; i++) {
		enum mc_reply r = mcconn_reply(c, i);

		cr_assert_eq(r, want, "reply %zu of %zu is %s, expected %s (last error reply '%s')", i,
			     n, rname(r), rname(want), mcconn_last_reply_text(c));
	}
}

static void assert_contents(const char *expect, size_t items)
{
	struct h_verify v;
	int rc = h_verify_memcached(expect, "127.0.0.1", mc.port, NULL, &v);

	cr_assert_eq(rc, 0, "verify could not run: %s", v.first);
	cr_assert_eq(h_verify_mismatches(&v), 0,
		     "%zu missing, %zu wrong, %zu present that should not be; first:\n%s",
		     v.missing, v.wrong, v.present, v.first);
	cr_assert_eq(v.server_items, items, "server holds %llu items, expected %zu",
		     (unsigned long long)v.server_items, items);
}

/* Waits until a real server's stat reaches at least want. */
static void wait_stat(int port, const char *name, uint64_t want, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	uint64_t v = 0;
	int rc;

	for (;;) {
		rc = fake_mc_stat(port, name, &v);
		if (rc == 0 && v >= want)
			return;
		cr_assert_lt(h_now_ms(), deadline, "stat %s is %llu (rc %d), waited %d ms for %llu",
			     name, (unsigned long long)v, rc, timeout_ms, (unsigned long long)want);
		nanosleep(&(struct timespec){ 0, 50 * 1000000L }, NULL);
	}
}

/* ---- what a batch's values must never do ----------------------------------
 * Each of these values is a command line (or two) that memcached 1.5.19 to
 * 1.6.9 would execute, were it read as a command: the meta "ms <key> 9 q" of
 * k2mc before issue 8 made them do exactly that. */
static const char *const injections[] = {
	"flush_all",
	"delete victim",
	"set injected 0 0 3\r\nPWN",
	"mn",
	"ms smuggled S3 T0\r\nabc",
	"ms smuggled2 3 T0\r\nabc",
};
#define N_INJECTIONS (sizeof(injections) / sizeof(injections[0]))

/* Queues "victim" = "V" and then one set per injection value. */
static void queue_injections(struct mc_conn *c)
{
	char key[32];

	queue_set_str(c, "victim", "V");
	for (size_t i = 0; i < N_INJECTIONS; i++) {
		snprintf(key, sizeof(key), "inj-%zu", i);
		queue_set_str(c, key, injections[i]);
	}
}

/* The server that received queue_injections holds exactly those keys. */
static void assert_injections_stored_real(int port)
{
	char buf[256], key[32];
	uint64_t items = 0;
	long n;

	n = fake_mc_fetch(port, "victim", buf, sizeof(buf));
	cr_assert_eq(n, 1, "victim: %ld (a value ran as a command)", n);
	cr_assert_str_eq(buf, "V");
	for (size_t i = 0; i < N_INJECTIONS; i++) {
		snprintf(key, sizeof(key), "inj-%zu", i);
		n = fake_mc_fetch(port, key, buf, sizeof(buf));
		cr_assert_eq(n, (long)strlen(injections[i]), "%s: %ld", key, n);
		cr_assert_str_eq(buf, injections[i], "%s holds another value", key);
	}
	cr_assert_eq(fake_mc_fetch(port, "injected", buf, sizeof(buf)), -1, "'injected' exists");
	cr_assert_eq(fake_mc_fetch(port, "smuggled", buf, sizeof(buf)), -1, "'smuggled' exists");
	cr_assert_eq(fake_mc_fetch(port, "smuggled2", buf, sizeof(buf)), -1, "'smuggled2' exists");
	cr_assert_eq(fake_mc_stat(port, "curr_items", &items), 0);
	cr_assert_eq(items, 1 + N_INJECTIONS, "curr_items %llu", (unsigned long long)items);
}

/* A raw client for the fake: sends req, reads until the reply ends with
 * until or timeout_ms passes. The reply in buf, NUL-terminated. */
static void raw_roundtrip(int port, const char *req, const char *until, char *buf, size_t cap)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { 5, 0 };
	size_t len = 0, ul = strlen(until);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s", strerror(errno));
	cr_assert_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	buf[0] = '\0';
	while (len < ul || strcmp(buf + len - ul, until) != 0) {
		ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);

		cr_assert_gt(n, 0, "reply so far '%s'", buf);
		len += (size_t)n;
		buf[len] = '\0';
	}
	close(fd);
}

/* The command lines the fake parsed on connections >= from_conn. */
static size_t fake_lines(struct fake_mc *f, int from_conn, char lines[][128], size_t max)
{
	size_t n = 0, total = fake_mc_nlines(f);

	for (size_t i = 0; i < total && n < max; i++) {
		if (fake_mc_line(f, i, lines[n], sizeof(lines[n])) >= from_conn)
			n++;
	}
	return n;
}

/* ---- the real memcached ----------------------------------------------------*/

Test(mcconn, pipelined_sets_get_every_reply)
{
	char expect[H_PATH_MAX];
	struct mc_conn *c;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	/* Debian's memcached 1.6.18 (>= 1.6.10): the meta dialect (quiet sets) */
	cr_assert(mcconn_meta(c), "no meta dialect with memcached %s", mcconn_version(c));
	cr_assert(mcconn_done(c), "an empty batch is done");
	h_tmppath(expect, sizeof(expect), "pipelined.expect");
	queue_sets(c, "p", N_PIPELINED, 100, expect);
	cr_assert_eq(mcconn_queued(c), N_PIPELINED);
	cr_assert_gt(mcconn_queued_bytes(c), (size_t)N_PIPELINED * 100);
	cr_assert(!mcconn_done(c), "done before any exchange");
	enum mc_exchange x = exchange_until(c, 10000);
	cr_assert_eq(x, MC_X_DONE, "exchange of %d sets: %s (%s)", N_PIPELINED, xname(x),
		     mcconn_error(c));
	cr_assert(mcconn_done(c), "DONE but not mcconn_done");
	assert_all_replies(c, N_PIPELINED, MC_STORED);
	cr_assert_eq(mcconn_reply(c, N_PIPELINED), MC_NONE, "a reply past the last command");
	assert_contents(expect, N_PIPELINED);
}

/* Sets, deletes of keys set earlier in the same batch and deletes of keys
 * never set, interleaved: each reply must be the one of its own command. */
Test(mcconn, replies_match_commands_in_order)
{
	enum mc_reply want[N_PIPELINED];
	char key[64], val[64];
	struct mc_conn *c;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	for (int i = 0; i < N_PIPELINED; i++) {
		if (i % 10 == 3) {
			snprintf(key, sizeof(key), "never-set-%d", i);
			queue_del_str(c, key);
			want[i] = MC_NOT_FOUND;
		} else if (i % 10 == 7) {
			snprintf(key, sizeof(key), "o-%d", i - 1);
			queue_del_str(c, key);
			want[i] = MC_DELETED;
		} else {
			snprintf(key, sizeof(key), "o-%d", i);
			snprintf(val, sizeof(val), "value-%d", i);
			queue_set_str(c, key, val);
			want[i] = MC_STORED;
		}
	}
	enum mc_exchange x = exchange_until(c, 10000);
	cr_assert_eq(x, MC_X_DONE, "exchange: %s (%s)", xname(x), mcconn_error(c));
	for (int i = 0; i < N_PIPELINED; i++)
		cr_assert_eq(mcconn_reply(c, (size_t)i), want[i], "reply %d is %s, expected %s", i,
			     rname(mcconn_reply(c, (size_t)i)), rname(want[i]));

	/* the same connection serves the next batch from a clean slate */
	mcconn_reset_batch(c);
	cr_assert_eq(mcconn_queued(c), 0);
	cr_assert_eq(mcconn_queued_bytes(c), 0);
	cr_assert(mcconn_connected(c), "a complete batch's reset closed the connection");
	queue_del_str(c, "o-6"); /* deleted by command 7 above */
	queue_del_str(c, "o-8");
	x = exchange_until(c, 5000);
	cr_assert_eq(x, MC_X_DONE, "second batch: %s (%s)", xname(x), mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_NOT_FOUND, "got %s", rname(mcconn_reply(c, 0)));
	cr_assert_eq(mcconn_reply(c, 1), MC_DELETED, "got %s", rname(mcconn_reply(c, 1)));
}

/* The writer queues a batch and only then makes sure it is connected (and a
 * batch kept after a failure is resent on a new connection): the commands
 * must work in whatever dialect the connection settles on. */
Test(mcconn, commands_queued_before_connecting_are_answered)
{
	char expect[H_PATH_MAX];
	struct mc_conn *c;
	enum mc_exchange x;
	int rc;

	start_memcached(NULL);
	c = new_conn(0, mc.port);
	h_tmppath(expect, sizeof(expect), "early.expect");
	queue_sets(c, "early", 100, 10, expect);
	queue_del_str(c, "never-set");
	rc = mcconn_ensure(c, 2000);
	cr_assert_eq(rc, 0, "connect: %s", mcconn_error(c));
	cr_assert(!mcconn_batch_stale(c), "1.6.18 speaks meta, as guessed");
	x = exchange_until(c, 5000);
	cr_assert_eq(x, MC_X_DONE, "exchange of a batch queued before connecting: %s (%s)",
		     xname(x), mcconn_error(c));
	assert_all_replies(c, 100, MC_STORED);
	cr_assert_eq(mcconn_reply(c, 100), MC_NOT_FOUND, "got %s", rname(mcconn_reply(c, 100)));
	assert_contents(expect, 100);
}

Test(mcconn, delete_of_missing_key_is_not_found)
{
	struct mc_conn *c;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	queue_del_str(c, "no-such-key");
	enum mc_exchange x = exchange_until(c, 5000);
	cr_assert_eq(x, MC_X_DONE, "exchange: %s (%s)", xname(x), mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_NOT_FOUND, "got %s", rname(mcconn_reply(c, 0)));
}

/* A rewound batch is sent again whole and answered again. */
Test(mcconn, rewind_resends_the_batch)
{
	struct mc_conn *c;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	queue_set_str(c, "r-1", "one");
	queue_del_str(c, "r-1");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED);
	cr_assert_eq(mcconn_reply(c, 1), MC_DELETED);
	mcconn_rewind(c);
	cr_assert_eq(mcconn_reply(c, 0), MC_NONE, "replies survive a rewind");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED, "got %s", rname(mcconn_reply(c, 0)));
	cr_assert_eq(mcconn_reply(c, 1), MC_DELETED, "got %s", rname(mcconn_reply(c, 1)));
}

/* memcached reads and discards a value over -I and answers SERVER_ERROR:
 * the commands after it must still get their own replies. */
Test(mcconn, too_large_value_keeps_the_stream_in_step)
{
	static const char *const extra[] = { "-I", "2m", NULL };
	size_t big = 3u << 20, fits = 3u << 19; /* 3 MiB over, 1.5 MiB under */
	char *val = malloc(big);
	struct mc_conn *c;

	cr_assert_not_null(val);
	memset(val, 'x', big);
	start_memcached(extra);
	c = connect_to(0, mc.port);
	queue_set_str(c, "before", "1");
	cr_assert_eq(mcconn_queue_set(c, "huge", 4, val, big, 0, 0), 0);
	queue_set_str(c, "after", "2");
	cr_assert_eq(mcconn_queue_set(c, "fits", 4, val, fits, 0, 0), 0);
	queue_del_str(c, "huge");
	queue_del_str(c, "before");
	free(val);
	enum mc_exchange x = exchange_until(c, 10000);
	cr_assert_eq(x, MC_X_DONE, "exchange: %s (%s)", xname(x), mcconn_error(c));

	const enum mc_reply want[] = { MC_STORED,    MC_TOO_LARGE, MC_STORED,
				       MC_STORED,    MC_NOT_FOUND, MC_DELETED };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		cr_assert_eq(mcconn_reply(c, i), want[i], "reply %zu is %s, expected %s", i,
			     rname(mcconn_reply(c, i)), rname(want[i]));
	cr_assert(strstr(mcconn_last_reply_text(c), "too large") != NULL,
		  "last error reply text: '%s'", mcconn_last_reply_text(c));
	cr_assert(mcconn_connected(c), "connection closed after SERVER_ERROR: %s",
		  mcconn_error(c));
	mcconn_reset_batch(c);
	cr_assert_str_eq(mcconn_last_reply_text(c), "", "the error text outlived its batch");
}

Test(mcconn, item_limit_reads_the_servers_limit)
{
	static const char *const extra[] = { "-I", "2m", NULL };
	struct h_memcached dflt;
	int rc;

	start_memcached(extra);
	connect_to(0, mc.port);
	cr_assert_eq(mcconn_item_limit(conns[0]), 2u << 20, "item limit %zu with -I 2m",
		     mcconn_item_limit(conns[0]));

	rc = h_memcached_start(&dflt, 0, NULL);
	cr_assert_eq(rc, 0, "second memcached: %s", strerror(-rc));
	connect_to(1, dflt.port);
	cr_assert_eq(mcconn_item_limit(conns[1]), 1u << 20, "item limit %zu with the default -I",
		     mcconn_item_limit(conns[1]));
	/* the probes left nothing behind on the connection */
	queue_set_str(conns[1], "after-stats", "1");
	cr_assert_eq(exchange_until(conns[1], 5000), MC_X_DONE, "%s", mcconn_error(conns[1]));
	cr_assert_eq(mcconn_reply(conns[1], 0), MC_STORED);
}

Test(mcconn, item_limit_and_version_are_unknown_before_connecting)
{
	struct mc_conn *c = new_conn(0, 1);

	cr_assert_eq(mcconn_item_limit(c), 0);
	cr_assert_str_eq(mcconn_version(c), "");
	cr_assert_eq(mcconn_idle_reconnects(c), 0);
}

/* Issue 8 (4): the limit was read once, at start. memcached restarted with
 * another -I on the same port: the next connect reads the new one. */
Test(mcconn, item_limit_is_read_again_on_reconnect)
{
	static const char *const two[] = { "-I", "2m", NULL };
	static const char *const eight[] = { "-I", "8m", NULL };
	struct mc_conn *c;
	int port, rc;

	start_memcached(two);
	port = mc.port;
	c = connect_to(0, port);
	cr_assert_eq(mcconn_item_limit(c), 2u << 20, "limit %zu", mcconn_item_limit(c));
	cr_assert_eq(h_signal(mc.proc.pid, SIGKILL), 0);
	cr_assert_eq(h_wait(mc.proc.pid, 5000, NULL), 0, "memcached did not die");
	rc = h_memcached_start(&mc, port, eight);
	cr_assert_eq(rc, 0, "restart on port %d: %s", port, strerror(-rc));
	/* the old connection is dead while idle: ensure remakes it */
	rc = mcconn_ensure(c, 2000);
	cr_assert_eq(rc, 0, "reconnect: %s", mcconn_error(c));
	cr_assert_eq(mcconn_item_limit(c), 8u << 20, "limit %zu after the restart with -I 8m",
		     mcconn_item_limit(c));
	queue_set_str(c, "after-restart", "1");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED);
}

Test(mcconn, connect_to_closed_port_fails_with_a_reason)
{
	int port = h_free_port();
	struct mc_conn *c;
	int rc;

	cr_assert_gt(port, 0);
	c = new_conn(0, port);
	rc = mcconn_ensure(c, 2000);
	cr_assert_lt(rc, 0, "connected to port %d that nobody listens on", port);
	cr_assert(!mcconn_connected(c));
	cr_assert_neq(mcconn_error(c)[0], '\0', "no error string");
	cr_assert(strstr(mcconn_error(c), "refused") != NULL, "error '%s' (rc %d)", mcconn_error(c),
		  rc);

	/* an exchange on a closed connection fails at once, commands kept */
	queue_set_str(c, "k", "v");
	enum mc_exchange x;
	mcconn_exchange(&c, 1, 1000, INT64_MAX, &x);
	cr_assert_eq(x, MC_X_FAILED, "%s", xname(x));
	cr_assert_eq(mcconn_queued(c), 1);
}

/* SIGKILL while replies are outstanding: the exchange reports FAILED, the
 * connection is closed, the batch is kept and can be resent whole to a new
 * server on the same port. */
Test(mcconn, sigkill_mid_exchange_fails_and_keeps_the_batch)
{
	char expect[H_PATH_MAX];
	struct mc_conn *c;
	enum mc_exchange x;
	int st = 0, rc, port;

	start_memcached(NULL);
	port = mc.port;
	c = connect_to(0, port);
	h_tmppath(expect, sizeof(expect), "killed.expect");
	queue_sets(c, "kill", N_PIPELINED, 1000, expect);
	/* stopped first so that the exchange is certainly mid-way: the
	 * kernel takes the commands, nobody answers */
	cr_assert_eq(h_pause(mc.proc.pid, 5000), 0, "memcached did not stop");
	mcconn_exchange(&c, 1, 300, INT64_MAX, &x);
	cr_assert_eq(x, MC_X_PENDING, "exchange with a stopped server: %s (%s)", xname(x),
		     mcconn_error(c));
	cr_assert_eq(h_signal(mc.proc.pid, SIGKILL), 0);
	cr_assert_eq(h_wait(mc.proc.pid, 5000, &st), 0, "memcached did not die");

	x = exchange_until(c, 5000);
	cr_assert_eq(x, MC_X_FAILED, "exchange after SIGKILL: %s", xname(x));
	cr_assert(!mcconn_connected(c), "connection still open after FAILED");
	cr_assert_neq(mcconn_error(c)[0], '\0', "no error string after FAILED");
	cr_assert_eq(mcconn_queued(c), N_PIPELINED, "queued commands not kept for a resend");
	cr_assert_eq(mcconn_reply(c, 0), MC_NONE, "a reply survived the failure");

	/* resend on a new connection to a new server on the same port */
	rc = h_memcached_start(&mc, port, NULL);
	cr_assert_eq(rc, 0, "restart on port %d: %s", port, strerror(-rc));
	rc = mcconn_ensure(c, 2000);
	cr_assert_eq(rc, 0, "reconnect: %s", mcconn_error(c));
	x = exchange_until(c, 10000);
	cr_assert_eq(x, MC_X_DONE, "resend: %s (%s)", xname(x), mcconn_error(c));
	assert_all_replies(c, N_PIPELINED, MC_STORED);
	assert_contents(expect, N_PIPELINED);
}

/* SIGKILL of an idle connection's server: the next exchange finds out. */
Test(mcconn, sigkill_before_exchange_fails)
{
	struct mc_conn *c;
	enum mc_exchange x;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	cr_assert_eq(h_signal(mc.proc.pid, SIGKILL), 0);
	cr_assert_eq(h_wait(mc.proc.pid, 5000, NULL), 0, "memcached did not die");
	queue_sets(c, "idle", 10, 10, NULL);
	x = exchange_until(c, 5000);
	cr_assert_eq(x, MC_X_FAILED, "exchange after SIGKILL: %s", xname(x));
	cr_assert(!mcconn_connected(c));
	cr_assert_eq(mcconn_queued(c), 10);
}

/* SIGSTOP: no reply within the slice is PENDING with the connection
 * intact, and after SIGCONT the same exchange completes. */
Test(mcconn, sigstop_is_pending_then_completes_after_sigcont)
{
	char expect[H_PATH_MAX];
	struct mc_conn *c;
	enum mc_exchange x;
	int64_t t0;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	h_tmppath(expect, sizeof(expect), "stopped.expect");
	queue_sets(c, "stop", N_PIPELINED, 100, expect);
	cr_assert_eq(h_pause(mc.proc.pid, 5000), 0, "memcached did not stop");
	t0 = h_now_ms();
	mcconn_exchange(&c, 1, 300, INT64_MAX, &x);
	cr_assert_eq(x, MC_X_PENDING, "exchange with a stopped server: %s (%s)", xname(x),
		     mcconn_error(c));
	cr_assert_geq(h_now_ms() - t0, 250, "returned before the slice ended");
	cr_assert_lt(h_now_ms() - t0, 2000, "the slice of 300 ms took %lld ms",
		     (long long)(h_now_ms() - t0));
	cr_assert(mcconn_connected(c), "connection closed while the server was stopped: %s",
		  mcconn_error(c));
	cr_assert(!mcconn_done(c), "done while the server is stopped");
	mcconn_exchange(&c, 1, 200, INT64_MAX, &x);
	cr_assert_eq(x, MC_X_PENDING, "second slice: %s", xname(x));

	cr_assert_eq(h_resume(mc.proc.pid), 0);
	x = exchange_until(c, 10000);
	cr_assert_eq(x, MC_X_DONE, "after SIGCONT: %s (%s)", xname(x), mcconn_error(c));
	assert_all_replies(c, N_PIPELINED, MC_STORED);
	assert_contents(expect, N_PIPELINED);
}

/* One exchange over two connections: each gets its own result. */
Test(mcconn, exchange_reports_each_connection)
{
	struct h_memcached stopped;
	enum mc_exchange x[2];
	int64_t deadline;
	int rc;

	start_memcached(NULL);
	rc = h_memcached_start(&stopped, 0, NULL);
	cr_assert_eq(rc, 0, "second memcached: %s", strerror(-rc));
	connect_to(0, mc.port);
	connect_to(1, stopped.port);
	queue_sets(conns[0], "live", 100, 10, NULL);
	queue_sets(conns[1], "stopped", 100, 10, NULL);
	cr_assert_eq(h_pause(stopped.proc.pid, 5000), 0, "memcached did not stop");

	deadline = h_now_ms() + 5000;
	do
		mcconn_exchange(conns, 2, 200, INT64_MAX, x);
	while (x[0] == MC_X_PENDING && h_now_ms() < deadline);
	cr_assert_eq(x[0], MC_X_DONE, "live server: %s (%s)", xname(x[0]), mcconn_error(conns[0]));
	cr_assert_eq(x[1], MC_X_PENDING, "stopped server: %s", xname(x[1]));
	assert_all_replies(conns[0], 100, MC_STORED);

	cr_assert_eq(h_resume(stopped.proc.pid), 0);
	deadline = h_now_ms() + 5000;
	do
		mcconn_exchange(conns, 2, 200, INT64_MAX, x);
	while (x[1] == MC_X_PENDING && h_now_ms() < deadline);
	cr_assert_eq(x[0], MC_X_DONE, "live server, again: %s", xname(x[0]));
	cr_assert_eq(x[1], MC_X_DONE, "after SIGCONT: %s (%s)", xname(x[1]), mcconn_error(conns[1]));
	assert_all_replies(conns[1], 100, MC_STORED);
}

/* ---- issue 8: the dialect --------------------------------------------------*/

/* 1.6.18 gets meta, by its version; values that are command lines are
 * stored as data. */
Test(mcconn, memcached_1_6_18_gets_meta_and_values_stay_data)
{
	struct mc_conn *c;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	cr_assert(strncmp(mcconn_version(c), "1.6.", 4) == 0, "version '%s'", mcconn_version(c));
	cr_assert(mcconn_meta(c), "memcached %s: no meta dialect", mcconn_version(c));
	queue_injections(c);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_all_replies(c, 1 + N_INJECTIONS, MC_STORED);
	assert_injections_stored_real(mc.port);
}

/* The fake reproduces what memcached 1.6.9 does with the meta set k2mc sent
 * before issue 8 (checked by hand against a 1.6.9 build: the same three
 * reply lines): "ms k 9 q" is a bad flag, and the value runs as a command.
 * This is what the test below guards against. */
Test(mcconn, fake_1_6_9_runs_a_meta_value_as_a_command)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169 };
	struct fake_mc *f = start_fake(0, &o);
	char buf[512], line[128];

	raw_roundtrip(fake_mc_port(f), "set victim 0 0 1\r\nV\r\nms k 9 q\r\nflush_all\r\nmn\r\n",
		      "MN\r\n", buf, sizeof(buf));
	cr_assert_str_eq(buf, "STORED\r\nCLIENT_ERROR invalid flag\r\nOK\r\nMN\r\n");
	cr_assert_eq(fake_mc_line(f, 2, line, sizeof(line)), 1);
	cr_assert_str_eq(line, "flush_all", "the value was not run: '%s'", line);
	cr_assert_eq(fake_mc_items(f), 0, "the flush did not happen");
}

/* Issue 8 (2): against memcached 1.6.9 (answers "mn" with "MN", old "ms"
 * syntax), every value goes in a classic data block and nothing in a value
 * is ever executed. On the old code (meta chosen by "mn") the fake parses
 * "flush_all", "delete victim", ... as command lines. */
Test(mcconn, memcached_1_6_9_gets_classic_and_values_stay_data)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169 };
	struct fake_mc *f = start_fake(0, &o);
	struct mc_conn *c = connect_to(0, fake_mc_port(f));
	char lines[64][128], buf[64], key[32];
	size_t n;

	cr_assert(!mcconn_meta(c), "meta dialect chosen for 1.6.9");
	cr_assert_str_eq(mcconn_version(c), "1.6.9");
	cr_assert_eq(mcconn_item_limit(c), 1u << 20);
	queue_injections(c);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_all_replies(c, 1 + N_INJECTIONS, MC_STORED);

	/* the probes, then one classic set per record, and nothing else */
	n = fake_lines(f, 1, lines, 64);
	cr_assert_eq(n, 2 + 1 + N_INJECTIONS, "%zu command lines parsed", n);
	cr_assert_str_eq(lines[0], "version");
	cr_assert_str_eq(lines[1], "stats settings");
	cr_assert_str_eq(lines[2], "set victim 0 0 1");
	for (size_t i = 0; i < N_INJECTIONS; i++) {
		char want[64];

		snprintf(want, sizeof(want), "set inj-%zu 0 0 %zu", i, strlen(injections[i]));
		cr_assert_str_eq(lines[3 + i], want, "command %zu", 3 + i);
	}
	for (size_t i = 0; i < n; i++)
		cr_assert(strncmp(lines[i], "mn", 2) != 0 && strncmp(lines[i], "ms", 2) != 0,
			  "a meta command reached 1.6.9: '%s'", lines[i]);
	cr_assert_eq(fake_mc_get(f, "victim", buf, sizeof(buf)), 1, "victim lost");
	for (size_t i = 0; i < N_INJECTIONS; i++) {
		snprintf(key, sizeof(key), "inj-%zu", i);
		cr_assert_eq(fake_mc_get(f, key, buf, sizeof(buf)), (long)strlen(injections[i]));
	}
	cr_assert_eq(fake_mc_items(f), 1 + N_INJECTIONS, "%zu keys", fake_mc_items(f));
}

/* The real 1.6.9, when a build of it is given (K2MC_MEMCACHED_169). */
Test(mcconn, real_memcached_1_6_9_gets_classic)
{
	const char *bin = getenv("K2MC_MEMCACHED_169");
	char dir[H_PATH_MAX], path[4 * H_PATH_MAX], base[H_PATH_MAX];
	struct mc_conn *c;
	const char *old = getenv("PATH");

	if (bin == NULL || bin[0] == '\0')
		cr_skip_test("K2MC_MEMCACHED_169 is not set");
	snprintf(dir, sizeof(dir), "%s", bin);
	snprintf(base, sizeof(base), "%s", bin);
	cr_assert_str_eq(basename(base), "memcached", "K2MC_MEMCACHED_169 must name a 'memcached'");
	/* the harness starts "memcached" from PATH */
	snprintf(path, sizeof(path), "%s:%s", dirname(dir), old ? old : "/usr/bin:/bin");
	setenv("PATH", path, 1);
	start_memcached(NULL);
	c = connect_to(0, mc.port);
	cr_assert_str_eq(mcconn_version(c), "1.6.9", "that is not 1.6.9");
	cr_assert(!mcconn_meta(c), "meta dialect chosen for 1.6.9");
	queue_injections(c);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_all_replies(c, 1 + N_INJECTIONS, MC_STORED);
	assert_injections_stored_real(mc.port);
}

/* The dialect from the "version" reply: meta only for >= 1.6.10. */
Test(mcconn, dialect_follows_the_version)
{
	static const struct {
		const char *reply; /* NULL: the server answers "ERROR" */
		int meta;
		const char *text;
	} cases[] = {
		{ "VERSION 1.6.10", 1, "1.6.10" },
		{ "VERSION 1.6.9", 0, "1.6.9" },
		{ "VERSION 1.6.6", 0, "1.6.6" },
		{ "VERSION 1.5.19", 0, "1.5.19" },
		{ "VERSION 1.4.25", 0, "1.4.25" },
		{ "VERSION 1.6.18", 1, "1.6.18" },
		{ "VERSION 1.6.21-rc1", 1, "1.6.21-rc1" },
		{ "VERSION 1.10.0", 1, "1.10.0" },
		{ "VERSION 2.0.0", 1, "2.0.0" },
		{ "VERSION 0.99.99", 0, "0.99.99" },
		{ "VERSION garbage", 0, "garbage" },
		{ "VERSION 1.6", 0, "1.6" },
		{ "VERSION 1.6.10.2", 0, "1.6.10.2" },
		{ "VERSION 1.6.10x", 0, "1.6.10x" },
		{ "VERSION 1.6.99999999999999999999", 0, "1.6.99999999999999999999" },
		{ "VERSION mcrouter 0.41.0", 0, "mcrouter 0.41.0" },
		{ "VERSION ", 0, "" },
		{ "VERSION", 0, "" },
		{ NULL, 0, "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake_mc_opts o = { .version = cases[i].reply,
					  .ms = cases[i].meta ? FAKE_MS_1610 : FAKE_MS_169,
					  .item_size_max = 5u << 20 };
		struct fake_mc *f = start_fake(0, &o);
		struct mc_conn *c = connect_to(0, fake_mc_port(f));
		const char *r = cases[i].reply ? cases[i].reply : "ERROR";

		cr_assert_eq(mcconn_meta(c), cases[i].meta, "'%s': meta %d", r, mcconn_meta(c));
		cr_assert_str_eq(mcconn_version(c), cases[i].text, "'%s'", r);
		cr_assert_eq(mcconn_item_limit(c), 5u << 20, "'%s': limit %zu", r,
			     mcconn_item_limit(c));
		/* and the dialect works with a server of that syntax */
		queue_set_str(c, "k", "flush_all");
		cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "'%s': %s", r, mcconn_error(c));
		cr_assert_eq(mcconn_reply(c, 0), MC_STORED, "'%s': %s", r,
			     rname(mcconn_reply(c, 0)));
		cr_assert_eq(fake_mc_items(f), 1, "'%s'", r);
	}
}

/* A queued batch is never sent in the other dialect: queued as meta before
 * connecting (the guess), the connection comes up classic. */
Test(mcconn, stale_batch_is_never_sent)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169 };
	struct fake_mc *f = start_fake(0, &o);
	struct mc_conn *c = new_conn(0, fake_mc_port(f));
	enum mc_exchange x;
	char line[128];

	queue_set_str(c, "k", "flush_all");
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	cr_assert(mcconn_batch_stale(c), "a batch queued as meta is not stale on 1.6.9");
	mcconn_exchange(&c, 1, 300, INT64_MAX, &x);
	cr_assert_eq(x, MC_X_FAILED, "a stale batch was exchanged: %s", xname(x));
	cr_assert(strstr(mcconn_error(c), "not sent") != NULL, "error '%s'", mcconn_error(c));
	cr_assert_eq(fake_mc_nlines(f), 2, "the fake parsed %zu lines", fake_mc_nlines(f));
	fake_mc_line(f, 1, line, sizeof(line));
	cr_assert_str_eq(line, "stats settings");
	/* what the writer does: reconnect, queue again */
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	mcconn_reset_batch(c);
	queue_set_str(c, "k", "flush_all");
	cr_assert(!mcconn_batch_stale(c));
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED);
}

/* A proxy that closes on "version" (twemproxy closes on commands it does
 * not know): connected anyway, classic, limit unknown, and no probe on any
 * later connection. */
Test(mcconn, peer_closing_on_version_gets_classic_without_probes)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				  .close_on = "version" };
	struct fake_mc *f = start_fake(0, &o);
	struct mc_conn *c = connect_to(0, fake_mc_port(f));
	char lines[16][128];
	size_t n;

	cr_assert(!mcconn_meta(c), "meta through a peer that closed on version");
	/* unknown: the fallback, memcached's default (issue 9) */
	cr_assert_eq(mcconn_item_limit(c), 1u << 20);
	cr_assert(!mcconn_item_limit_known(c));
	cr_assert_str_eq(mcconn_version(c), "");
	cr_assert_str_eq(mcconn_error(c), "", "a refused probe is not an error");
	queue_set_str(c, "k1", "v");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED);
	/* counted once it parsed a line there: the set above */
	cr_assert_eq(fake_mc_connections(f), 2);

	/* a later reconnect (here after an idle close) probes nothing */
	fake_mc_drop(f);
	mcconn_reset_batch(c);
	queue_set_str(c, "k2", "v");
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(fake_mc_connections(f), 3);
	n = fake_lines(f, 2, lines, 16);
	cr_assert_eq(n, 2, "%zu lines on the later connections", n);
	cr_assert_str_eq(lines[0], "set k1 0 0 1");
	cr_assert_str_eq(lines[1], "set k2 0 0 1");
}

/* The same for a peer that answers "version" but closes on "stats". */
Test(mcconn, peer_closing_on_stats_gets_classic_without_probes)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				  .close_on = "stats" };
	struct fake_mc *f = start_fake(0, &o);
	struct mc_conn *c = connect_to(0, fake_mc_port(f));
	char lines[16][128];

	cr_assert(!mcconn_meta(c), "meta through a peer that closed on stats");
	/* unknown: the fallback, memcached's default (issue 9) */
	cr_assert_eq(mcconn_item_limit(c), 1u << 20);
	cr_assert(!mcconn_item_limit_known(c));
	queue_set_str(c, "k1", "v");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(fake_mc_connections(f), 2);
	cr_assert_eq(fake_lines(f, 2, lines, 16), 1);
	cr_assert_str_eq(lines[0], "set k1 0 0 1");
}

/* memcached at its connection limit (-c) writes "ERROR Too many open
 * connections" on accept, unasked, and closes (memcached.c, the accept
 * path; seen from 1.6.18 here with -c 16 -t 1): a failure with the server's
 * words, not a proxy refusing a probe, which would make the connection
 * classic for good. Once there is room, the same connection object gets
 * meta and the limit. (The fake, because a real full memcached may also stop
 * accepting altogether: it disables its listener on EMFILE.) */
Test(mcconn, full_server_is_a_failure_not_a_proxy)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				  .refuse = "ERROR Too many open connections\r\n", .refuse_count = 2 };
	struct fake_mc *f = start_fake(0, &o);
	struct mc_conn *c = new_conn(0, fake_mc_port(f));

	for (int i = 0; i < 2; i++) {
		/* -EUSERS: full, not refused (writer.c shares slots then) */
		cr_assert_eq(mcconn_ensure(c, 2000), -EUSERS, "connected to a full server");
		cr_assert_str_eq(mcconn_error(c),
				 "connect: server refused: 'ERROR Too many open connections'");
		cr_assert(!mcconn_connected(c));
	}
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	cr_assert(mcconn_meta(c), "a full server made the connection classic");
	cr_assert_str_eq(mcconn_version(c), "1.6.18");
	cr_assert_eq(mcconn_item_limit(c), 1u << 20);
}

/* "stats settings" answered with ERROR: the limit is unknown, the same
 * connection goes on in the dialect its version gave. */
Test(mcconn, stats_error_means_unknown_limit)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				  .stats_reply = "ERROR\r\n" };
	struct fake_mc *f = start_fake(0, &o);
	struct mc_conn *c = connect_to(0, fake_mc_port(f));

	/* unknown: the fallback, memcached's default (issue 9) */
	cr_assert_eq(mcconn_item_limit(c), 1u << 20);
	cr_assert(!mcconn_item_limit_known(c));
	cr_assert(mcconn_meta(c));
	cr_assert_eq(fake_mc_connections(f), 1);
	queue_set_str(c, "k1", "v");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED);
}

/* ---- issue 8: replies and messages -------------------------------------------*/

/* Issue 8 (4): CLIENT_ERROR to everything is MC_CLIENT_ERROR (a server
 * failure the writer retries), in both dialects, and the connection stays. */
Test(mcconn, client_error_to_everything)
{
	struct fake_mc_opts classic = { .all_reply = "CLIENT_ERROR bad command line format\r\n" };
	struct fake_mc_opts meta = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				     .store_reply = "CLIENT_ERROR bad data chunk\r\n" };
	struct mc_conn *c;

	c = connect_to(0, fake_mc_port(start_fake(0, &classic)));
	cr_assert(!mcconn_meta(c));
	/* unknown: the fallback, memcached's default (issue 9) */
	cr_assert_eq(mcconn_item_limit(c), 1u << 20);
	cr_assert(!mcconn_item_limit_known(c));
	queue_set_str(c, "k1", "v");
	queue_set_str(c, "k2", "v");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_all_replies(c, 2, MC_CLIENT_ERROR);
	cr_assert_str_eq(mcconn_last_reply_text(c), "CLIENT_ERROR bad command line format");
	cr_assert(mcconn_connected(c));

	c = connect_to(1, fake_mc_port(start_fake(1, &meta)));
	cr_assert(mcconn_meta(c));
	queue_set_str(c, "k1", "v");
	queue_set_str(c, "k2", "v");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_all_replies(c, 2, MC_CLIENT_ERROR);
	cr_assert_str_eq(mcconn_last_reply_text(c), "CLIENT_ERROR bad data chunk");
}

/* Issue 8 (7): out of memory is MC_OOM, not a generic server error, in both
 * dialects (meta: placed by the verbose replay). */
Test(mcconn, out_of_memory_is_its_own_reply)
{
	struct fake_mc_opts classic = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169,
					.store_reply = "SERVER_ERROR out of memory storing object\r\n" };
	struct fake_mc_opts meta = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				     .store_reply = "SERVER_ERROR out of memory storing object\r\n" };
	struct fake_mc *f;
	char lines[16][128];
	struct mc_conn *c;
	size_t n;

	c = connect_to(0, fake_mc_port(start_fake(0, &classic)));
	queue_set_str(c, "k1", "v");
	queue_del_str(c, "k2");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_OOM, "got %s", rname(mcconn_reply(c, 0)));
	cr_assert_eq(mcconn_reply(c, 1), MC_NOT_FOUND, "got %s", rname(mcconn_reply(c, 1)));
	cr_assert_str_eq(mcconn_last_reply_text(c), "SERVER_ERROR out of memory storing object");

	f = start_fake(1, &meta);
	c = connect_to(1, fake_mc_port(f));
	queue_set_str(c, "k1", "v");
	queue_set_str(c, "k2", "w");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_all_replies(c, 2, MC_OOM);
	n = fake_lines(f, 1, lines, 16);
	cr_assert_eq(n, 8, "%zu lines", n);
	cr_assert_str_eq(lines[2], "ms k1 1 q");
	cr_assert_str_eq(lines[4], "mn");
	cr_assert_str_eq(lines[5], "ms k1 1 k", "no verbose replay: '%s'", lines[5]);
}

/* A server that answers error lines but never "MN": the exchange stays
 * PENDING and the error text is there for the writer to say so. */
Test(mcconn, errors_without_mn_stay_visible)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				  .store_reply = "SERVER_ERROR out of memory storing object\r\n",
				  .mute_mn = 1 };
	struct mc_conn *c = connect_to(0, fake_mc_port(start_fake(0, &o)));
	enum mc_exchange x;

	queue_set_str(c, "k1", "v");
	x = exchange_until(c, 600);
	cr_assert_eq(x, MC_X_PENDING, "%s (%s)", xname(x), mcconn_error(c));
	cr_assert_str_eq(mcconn_last_reply_text(c), "SERVER_ERROR out of memory storing object");
}

/* Issue 8 (7): control bytes from the server never reach a log line raw. */
Test(mcconn, control_bytes_from_the_server_are_escaped)
{
	struct fake_mc_opts err = { .version = "VERSION 1.6.9\x1b[2J",
				    .ms = FAKE_MS_169,
				    .store_reply = "SERVER_ERROR \x1b[31mred\x07\r\x01\xff\\ end\r\n" };
	struct fake_mc_opts odd = { .version = "VERSION 1.6.9",
				    .ms = FAKE_MS_169,
				    .store_reply = "HELLO \x1b]0;owned\x07\r\n" };
	struct mc_conn *c;

	c = connect_to(0, fake_mc_port(start_fake(0, &err)));
	cr_assert_str_eq(mcconn_version(c), "1.6.9\\x1b[2J");
	cr_assert(!mcconn_meta(c), "a version with a control byte is not one this knows");
	queue_set_str(c, "k1", "v");
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_SERVER_ERROR, "got %s", rname(mcconn_reply(c, 0)));
	cr_assert_str_eq(mcconn_last_reply_text(c),
			 "SERVER_ERROR \\x1b[31mred\\x07\\r\\x01\\xff\\\\ end");

	c = connect_to(1, fake_mc_port(start_fake(1, &odd)));
	queue_set_str(c, "k1", "v");
	cr_assert_eq(exchange_until(c, 5000), MC_X_FAILED);
	cr_assert_str_eq(mcconn_error(c), "unexpected reply 'HELLO \\x1b]0;owned\\x07'");
}

/* Issue 8 (7): a line longer than the reply buffer, without CRLF, is named
 * as such (it was "unexpected reply ''"). */
Test(mcconn, endless_reply_line_is_named)
{
	size_t len = 70000;
	char *endless = malloc(len + 1);
	struct fake_mc_opts o = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169 };
	struct mc_conn *c;
	const char *want = "reply line over 64 KiB without CRLF: 'AAAAAAAA";

	cr_assert_not_null(endless);
	memset(endless, 'A', len);
	endless[len] = '\0';
	o.store_reply = endless;
	c = connect_to(0, fake_mc_port(start_fake(0, &o)));
	queue_set_str(c, "k1", "v");
	cr_assert_eq(exchange_until(c, 5000), MC_X_FAILED);
	cr_assert(strncmp(mcconn_error(c), want, strlen(want)) == 0, "error '%s'", mcconn_error(c));
	cr_assert_lt(strlen(mcconn_error(c)), 200, "the message holds the whole line");
	cr_assert(!mcconn_connected(c));
	fake_mc_stop(fakes[0]); /* before endless goes */
	fakes[0] = NULL;
	free(endless);
}

/* ---- issue 8: fencing, abandoned batches, idle closes, signals ---------------*/

/* Issue 8 (1), the writer's fence: with the send deadline in the past not a
 * byte leaves; replies are still read; with no deadline the same batch goes.
 * The fake answers at once, so a set sent in the fenced slice would have
 * completed it. */
Test(mcconn, send_deadline_in_the_past_sends_nothing)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610 };
	struct fake_mc *f = start_fake(0, &o);
	struct mc_conn *c = connect_to(0, fake_mc_port(f));
	char lines[16][128];
	enum mc_exchange x;
	int64_t t0;

	cr_assert(mcconn_meta(c));
	queue_set_str(c, "fenced", "v");
	t0 = h_now_ms();
	mcconn_exchange(&c, 1, 300, boot_ms() - 1, &x);
	cr_assert_eq(x, MC_X_PENDING, "fenced exchange: %s (%s)", xname(x), mcconn_error(c));
	cr_assert_geq(h_now_ms() - t0, 250, "the fenced slice ended early");
	cr_assert(mcconn_connected(c));
	cr_assert_eq(fake_mc_nlines(f), 2, "%zu lines: something was sent", fake_mc_nlines(f));

	x = exchange_until(c, 5000);
	cr_assert_eq(x, MC_X_DONE, "%s (%s)", xname(x), mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED);
	cr_assert_eq(fake_lines(f, 1, lines, 16), 4);
	/* the last command answers before "MN" (issue 9) */
	cr_assert_str_eq(lines[2], "ms fenced 1 k");
	cr_assert_str_eq(lines[3], "mn");
}

/* Issue 8: a batch given up with its replies still owed. Before, the
 * connection stayed and the next batch took the old batch's "MN" for its
 * own: a delete of a missing key came back DELETED, records acknowledged
 * that were never written. Now reset_batch closes, quietly. */
Test(mcconn, reset_after_incomplete_exchange_closes_the_connection)
{
	struct mc_conn *c;
	enum mc_exchange x;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	queue_sets(c, "given-up", 100, 10, NULL);
	cr_assert_eq(h_pause(mc.proc.pid, 5000), 0, "memcached did not stop");
	mcconn_exchange(&c, 1, 300, INT64_MAX, &x);
	cr_assert_eq(x, MC_X_PENDING, "%s (%s)", xname(x), mcconn_error(c));
	mcconn_reset_batch(c);
	cr_assert(!mcconn_connected(c), "a connection owing replies survived reset_batch");
	cr_assert_str_eq(mcconn_error(c), "", "closing a given-up batch is not an error");
	cr_assert_eq(mcconn_queued(c), 0);
	cr_assert_eq(h_resume(mc.proc.pid), 0);

	queue_del_str(c, "never-set");
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	x = exchange_until(c, 5000);
	cr_assert_eq(x, MC_X_DONE, "%s (%s)", xname(x), mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_NOT_FOUND, "the next batch read an old reply: %s",
		     rname(mcconn_reply(c, 0)));
}

/* The same with a command cut in the middle (10 MB to a stopped server
 * cannot all leave): the next batch is not glued to half a command. */
Test(mcconn, reset_after_partial_send_closes_the_connection)
{
	char expect[H_PATH_MAX];
	struct h_verify v;
	struct mc_conn *c;
	enum mc_exchange x;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	queue_sets(c, "cut", 1000, 10000, NULL);
	cr_assert_eq(h_pause(mc.proc.pid, 5000), 0, "memcached did not stop");
	mcconn_exchange(&c, 1, 300, INT64_MAX, &x);
	cr_assert_eq(x, MC_X_PENDING, "%s (%s)", xname(x), mcconn_error(c));
	mcconn_reset_batch(c);
	cr_assert(!mcconn_connected(c), "a partly sent batch survived reset_batch");
	cr_assert_eq(h_resume(mc.proc.pid), 0);

	h_tmppath(expect, sizeof(expect), "after-cut.expect");
	queue_sets(c, "next", 10, 10, expect);
	queue_del_str(c, "never-set");
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	x = exchange_until(c, 10000);
	cr_assert_eq(x, MC_X_DONE, "%s (%s)", xname(x), mcconn_error(c));
	assert_all_replies(c, 10, MC_STORED);
	cr_assert_eq(mcconn_reply(c, 10), MC_NOT_FOUND, "got %s", rname(mcconn_reply(c, 10)));
	/* the cut batch's whole commands may have been stored too: only the
	 * new batch's keys are checked */
	cr_assert_eq(h_verify_memcached(expect, "127.0.0.1", mc.port, NULL, &v), 0, "%s", v.first);
	cr_assert_eq(h_verify_mismatches(&v), 0, "%s", v.first);
}

/* Issue 8 (7): memcached -o idle_timeout=2 closes the idle connection;
 * mcconn_ensure notices and remakes it without a failure, so the writer
 * does not log "down" and "back". A live connection is left alone. */
Test(mcconn, idle_close_is_remade_quietly)
{
	static const char *const extra[] = { "-o", "idle_timeout=2", NULL };
	struct mc_conn *c;
	uint64_t kicks = 0;

	start_memcached(extra);
	c = connect_to(0, mc.port);
	cr_assert_eq(fake_mc_stat(mc.port, "idle_kicks", &kicks), 0);
	cr_assert_eq(kicks, 0);
	cr_assert_eq(mcconn_ensure(c, 2000), 0);
	cr_assert_eq(mcconn_idle_reconnects(c), 0, "a live connection was remade");

	/* memcached's clock ticks in seconds and its idle thread sleeps
	 * between passes: the kick comes 2 to 4 s later */
	wait_stat(mc.port, "idle_kicks", 1, 15000);
	queue_set_str(c, "after-idle", "1");
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	cr_assert(mcconn_connected(c));
	cr_assert_eq(mcconn_idle_reconnects(c), 1);
	cr_assert_str_eq(mcconn_error(c), "");
	cr_assert(!mcconn_batch_stale(c));
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED);
}

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

/* Issue 8 (7): signals (SIGINT at shutdown) interrupt poll/recv/send with
 * EINTR: retried, never "handshake: Interrupted system call". A timer
 * signal every millisecond, without SA_RESTART, against a slow server. */
Test(mcconn, signals_do_not_break_the_handshake_or_exchange)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169,
				  .delay_ms = 200 };
	struct fake_mc *f = start_fake(0, &o);
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval every = { { 0, 1000 }, { 0, 1000 } }, off = { { 0, 0 }, { 0, 0 } };
	struct mc_conn *c = new_conn(0, fake_mc_port(f));
	enum mc_exchange x;
	int rc;

	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGALRM, &sa, NULL), 0);
	cr_assert_eq(setitimer(ITIMER_REAL, &every, NULL), 0);
	rc = mcconn_ensure(c, 5000);
	queue_set_str(c, "k1", "v");
	x = exchange_until(c, 5000);
	setitimer(ITIMER_REAL, &off, NULL);
	cr_assert_eq(rc, 0, "handshake: %s", mcconn_error(c));
	cr_assert_eq(x, MC_X_DONE, "%s (%s)", xname(x), mcconn_error(c));
	cr_assert_eq(mcconn_reply(c, 0), MC_STORED);
	cr_assert_gt(alarms, 10, "only %d signals arrived", (int)alarms);
}

/* ---- issue 8 (6): no abort on allocation failure ---------------------------*/

/* A command that cannot be held is refused with -ENOMEM and the batch so far
 * is intact and still goes. The real allocation failure (address space
 * capped) runs in the plain build only: the sanitizers reserve terabytes of
 * shadow address space and treat a failed allocation as a bug. */
Test(mcconn, queue_refuses_what_it_cannot_hold_and_keeps_the_batch)
{
	char expect[H_PATH_MAX];
	struct mc_conn *c;
	size_t bytes;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	h_tmppath(expect, sizeof(expect), "kept.expect");
	queue_sets(c, "kept", 10, 10, expect);
	bytes = mcconn_queued_bytes(c);
	cr_assert_eq(mcconn_queue_set(c, "huge", 4, "x", SIZE_MAX / 2, 0, 0), -ENOMEM);
	cr_assert_eq(mcconn_queued(c), 10);
	cr_assert_eq(mcconn_queued_bytes(c), bytes);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	{
		const size_t gib = (size_t)1 << 30;
		void *big = mmap(NULL, gib, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
				 -1, 0);
		struct rlimit old, capped;
		unsigned long vm_kb = 0;
		char *status = h_file_read("/proc/self/status", NULL), *p;
		int rc;

		cr_assert_neq(big, MAP_FAILED);
		cr_assert_not_null(status);
		p = strstr(status, "VmSize:");
		cr_assert_not_null(p);
		vm_kb = strtoul(p + 7, NULL, 10);
		free(status);
		cr_assert_eq(getrlimit(RLIMIT_AS, &old), 0);
		capped = old;
		capped.rlim_cur = (rlim_t)vm_kb * 1024 + (256u << 20);
		cr_assert_eq(setrlimit(RLIMIT_AS, &capped), 0);
		rc = mcconn_queue_set(c, "big", 3, big, gib, 0, 0);
		setrlimit(RLIMIT_AS, &old);
		munmap(big, gib);
		cr_assert_eq(rc, -ENOMEM, "a 1 GiB set under a capped address space: %d", rc);
		cr_assert_eq(mcconn_queued(c), 10);
		cr_assert_eq(mcconn_queued_bytes(c), bytes);
	}
#endif
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_all_replies(c, 10, MC_STORED);
	assert_contents(expect, 10);
}
