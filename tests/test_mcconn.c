/* Unit suite for workers/mcconn.h: the pipelined, acknowledged memcached
 * connection, against a real Debian memcached started by the harness (its
 * replies, its -I limit, and what SIGKILL / SIGSTOP of it do to an exchange).
 * Not about key routing or batching policy: that is writer.c's. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "workers/mcconn.h"

#define N_PIPELINED 1000

static struct h_memcached mc;
static struct mc_conn *conns[2];

static void teardown(void)
{
	for (size_t i = 0; i < sizeof(conns) / sizeof(conns[0]); i++) {
		mcconn_free(conns[i]);
		conns[i] = NULL;
	}
	h_cleanup();
}

TestSuite(mcconn, .fini = teardown, .timeout = 60);

static void start_memcached(const char *const extra[])
{
	int rc = h_memcached_start(&mc, 0, extra);

	cr_assert_eq(rc, 0, "memcached did not start: %s", strerror(-rc));
}

static struct mc_conn *connect_to(int slot, int port)
{
	struct mc_conn *c = mcconn_new("127.0.0.1", port);
	int rc;

	cr_assert_not_null(c);
	conns[slot] = c;
	rc = mcconn_ensure(c, 2000);
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
	static const char *const names[] = { "NONE", "STORED", "DELETED", "NOT_FOUND",
					     "TOO_LARGE", "SERVER_ERROR", "CLIENT_ERROR" };

	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

/* Exchanges in 200 ms slices until the result is not PENDING or timeout_ms
 * passed (then PENDING). */
static enum mc_exchange exchange_until(struct mc_conn *c, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	enum mc_exchange x;

	do
		mcconn_exchange(&c, 1, 200, &x);
	while (x == MC_X_PENDING && h_now_ms() < deadline);
	return x;
}

static void queue_set_str(struct mc_conn *c, const char *key, const char *val)
{
	mcconn_queue_set(c, key, strlen(key), val, strlen(val), 0, 0);
}

static void queue_del_str(struct mc_conn *c, const char *key)
{
	mcconn_queue_delete(c, key, strlen(key));
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

Test(mcconn, pipelined_sets_get_every_reply)
{
	char expect[H_PATH_MAX];
	struct mc_conn *c;

	start_memcached(NULL);
	c = connect_to(0, mc.port);
	/* memcached 1.6 answers "mn": the meta dialect (quiet sets) is used */
	cr_assert(mcconn_meta(c), "no meta dialect with memcached 1.6");
	cr_assert(mcconn_done(c), "an empty batch is done");
	h_tmppath(expect, sizeof(expect), "pipelined.expect");
	queue_sets(c, "p", N_PIPELINED, 100, expect);
	cr_assert_eq(mcconn_queued(c), N_PIPELINED);
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
	c = mcconn_new("127.0.0.1", mc.port);
	cr_assert_not_null(c);
	conns[0] = c;
	h_tmppath(expect, sizeof(expect), "early.expect");
	queue_sets(c, "early", 100, 10, expect);
	queue_del_str(c, "never-set");
	rc = mcconn_ensure(c, 2000);
	cr_assert_eq(rc, 0, "connect: %s", mcconn_error(c));
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
	mcconn_queue_set(c, "huge", 4, val, big, 0, 0);
	queue_set_str(c, "after", "2");
	mcconn_queue_set(c, "fits", 4, val, fits, 0, 0);
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
}

Test(mcconn, item_size_max_reads_the_servers_limit)
{
	static const char *const extra[] = { "-I", "2m", NULL };
	struct h_memcached dflt;
	size_t sz = 0;
	int rc;

	start_memcached(extra);
	rc = mcconn_item_size_max(connect_to(0, mc.port), 2000, &sz);
	cr_assert_eq(rc, 0, "stats settings: %s", mcconn_error(conns[0]));
	cr_assert_eq(sz, 2u << 20, "item_size_max %zu with -I 2m", sz);

	rc = h_memcached_start(&dflt, 0, NULL);
	cr_assert_eq(rc, 0, "second memcached: %s", strerror(-rc));
	rc = mcconn_item_size_max(connect_to(1, dflt.port), 2000, &sz);
	cr_assert_eq(rc, 0, "stats settings: %s", mcconn_error(conns[1]));
	cr_assert_eq(sz, 1u << 20, "item_size_max %zu with the default -I", sz);
	/* the connection is still usable for commands afterwards */
	queue_set_str(conns[1], "after-stats", "1");
	cr_assert_eq(exchange_until(conns[1], 5000), MC_X_DONE, "%s", mcconn_error(conns[1]));
	cr_assert_eq(mcconn_reply(conns[1], 0), MC_STORED);
}

Test(mcconn, item_size_max_needs_a_connection)
{
	struct mc_conn *c = mcconn_new("127.0.0.1", 1);
	size_t sz = 0;

	conns[0] = c;
	cr_assert_eq(mcconn_item_size_max(c, 100, &sz), -ENOTCONN);
}

Test(mcconn, connect_to_closed_port_fails_with_a_reason)
{
	int port = h_free_port();
	struct mc_conn *c;
	int rc;

	cr_assert_gt(port, 0);
	c = mcconn_new("127.0.0.1", port);
	conns[0] = c;
	rc = mcconn_ensure(c, 2000);
	cr_assert_lt(rc, 0, "connected to port %d that nobody listens on", port);
	cr_assert(!mcconn_connected(c));
	cr_assert_neq(mcconn_error(c)[0], '\0', "no error string");
	cr_assert(strstr(mcconn_error(c), "refused") != NULL, "error '%s' (rc %d)", mcconn_error(c),
		  rc);

	/* an exchange on a closed connection fails at once, commands kept */
	queue_set_str(c, "k", "v");
	enum mc_exchange x;
	mcconn_exchange(&c, 1, 1000, &x);
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
	mcconn_exchange(&c, 1, 300, &x);
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
	mcconn_exchange(&c, 1, 300, &x);
	cr_assert_eq(x, MC_X_PENDING, "exchange with a stopped server: %s (%s)", xname(x),
		     mcconn_error(c));
	cr_assert_geq(h_now_ms() - t0, 250, "returned before the slice ended");
	cr_assert_lt(h_now_ms() - t0, 2000, "the slice of 300 ms took %lld ms",
		     (long long)(h_now_ms() - t0));
	cr_assert(mcconn_connected(c), "connection closed while the server was stopped: %s",
		  mcconn_error(c));
	cr_assert(!mcconn_done(c), "done while the server is stopped");
	mcconn_exchange(&c, 1, 200, &x);
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
		mcconn_exchange(conns, 2, 200, x);
	while (x[0] == MC_X_PENDING && h_now_ms() < deadline);
	cr_assert_eq(x[0], MC_X_DONE, "live server: %s (%s)", xname(x[0]), mcconn_error(conns[0]));
	cr_assert_eq(x[1], MC_X_PENDING, "stopped server: %s", xname(x[1]));
	assert_all_replies(conns[0], 100, MC_STORED);

	cr_assert_eq(h_resume(stopped.proc.pid), 0);
	deadline = h_now_ms() + 5000;
	do
		mcconn_exchange(conns, 2, 200, x);
	while (x[1] == MC_X_PENDING && h_now_ms() < deadline);
	cr_assert_eq(x[0], MC_X_DONE, "live server, again: %s", xname(x[0]));
	cr_assert_eq(x[1], MC_X_DONE, "after SIGCONT: %s (%s)", xname(x[1]), mcconn_error(conns[1]));
	assert_all_replies(conns[1], 100, MC_STORED);
}
