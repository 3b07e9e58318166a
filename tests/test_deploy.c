/* Integration suite for the deployments of issue 9, k2mc end to end
 * (k2mc-mock for Kafka, real memcached): through nutcracker (twemproxy) in
 * front of two servers, also with one of them down; over a unix socket
 * mixed with TCP; over TLS with the right CA, and with a wrong one (nothing
 * written, nothing committed, one line saying why). Final state = the last
 * value per key, tombstones deleted; committed = end offsets.
 * Not about key placement (test_placement) or the wire protocol
 * (test_mcconn, test_transport). */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "fake_mc.h"
#include "world.h"
#include "servers.h"

#define TOPIC "deploy"
#define PARTS 4
#define RECORDS 20000
#define KEYS 2000

static struct world W;
/* end offsets of the topic once produced */
static int64_t end_offsets[PARTS];

WORLD_SUITE(deploy, .fini = world_teardown, .timeout = 150)

/* The topic, produced; no memcached (each test starts its own servers). */
static void start_mock(void)
{
	world_start(&W, &(struct world_opts){ .topic = TOPIC, .parts = PARTS, .records = RECORDS,
					      .keys = KEYS, .value_size = 50, .tombstones = 5,
					      .nmc = -1 });
	world_wait_produced(&W, RECORDS, 60000);
	world_offsets(&W, NULL, 0, NULL, NULL, end_offsets);
}

static void start_k2mc(struct h_proc *k, const char *group, const char *servers, int eof,
		       const char *const extra[])
{
	static const char *const earliest[] = { "-X", "auto.offset.reset=earliest", NULL };

	world_k2mc_start(&W, k, &(struct world_k2mc){ .group = group, .mc = servers, .eof = eof,
						      .args = earliest, .args2 = extra });
}

static void finish_k2mc(struct h_proc *k, int timeout_ms)
{
	world_k2mc_finish(k, timeout_ms, "k2mc", NULL);
}

/* The group's commits, polled until they equal the end offsets or the
 * deadline: 0 when equal. */
static int wait_committed(const char *group, int timeout_ms, char *diff, size_t len)
{
	int64_t deadline = h_now_ms() + timeout_ms, off[PARTS];
	char err[256];
	struct h_kafka *k = h_kafka_open(W.bootstrap, world_name(group), err, sizeof(err));
	int rc = -ETIMEDOUT;

	cr_assert_not_null(k, "%s", err);
	do {
		if (h_kafka_committed(k, W.topic, PARTS, off, 5000) == 0 &&
		    h_offsets_diff(off, end_offsets, PARTS, diff, len) == 0) {
			rc = 0;
			break;
		}
		usleep(200000);
	} while (h_now_ms() < deadline);
	h_kafka_close(k);
	return rc;
}

static int64_t committed_sum(const char *group)
{
	int64_t off[PARTS], sum = 0;
	char err[256];
	struct h_kafka *k = h_kafka_open(W.bootstrap, world_name(group), err, sizeof(err));

	cr_assert_not_null(k, "%s", err);
	cr_assert_eq(h_kafka_committed(k, W.topic, PARTS, off, 5000), 0);
	h_kafka_close(k);
	for (int p = 0; p < PARTS; p++)
		sum += off[p] > 0 ? off[p] : 0;
	return sum;
}

/* Each key of the expect file, looked up on every server; a fetch is one
 * of fake_mc_fetch (TCP port) or srv_unix_get (path). */
struct where {
	int port;         /* > 0: TCP */
	const char *path; /* else a unix socket */
};

static long fetch(const struct where *w, const char *key, char *buf, size_t len)
{
	return w->port > 0 ? fake_mc_fetch(w->port, key, buf, len)
			   : srv_unix_get(w->path, key, buf, len);
}

/* Every "S key value" on exactly one server with that value, every "D key"
 * on none (the last value per key, tombstones deleted). */
static void assert_final_state(const struct where *ws, int n)
{
	size_t len;
	char *text = h_file_read(W.expect, &len), *save = NULL, buf[4096];
	size_t sets = 0, dels = 0;

	cr_assert_not_null(text);
	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *key = line + 2, *val = NULL;
		int found = 0;

		if (line[0] == 'S') {
			val = strchr(key, ' ');
			cr_assert_not_null(val);
			*val++ = '\0';
			sets++;
		} else {
			dels++;
		}
		for (int i = 0; i < n; i++) {
			long r = fetch(&ws[i], key, buf, sizeof(buf));

			cr_assert_geq(r, -1, "fetching %s failed (%ld)", key, r);
			if (r < 0)
				continue;
			found++;
			cr_assert_not_null(val, "%s was deleted (a tombstone) but holds '%s'", key,
					   buf);
			cr_assert_str_eq(buf, val, "%s holds '%s', the last record says '%s'", key,
					 buf, val);
		}
		cr_assert_eq(found, val != NULL ? 1 : 0, "%s found on %d servers", key, found);
	}
	cr_assert_gt(sets, 0);
	cr_assert_gt(dels, 0, "the test needs tombstones");
	free(text);
}

/* ---- twemproxy ---------------------------------------------------------------*/

struct nutcracker {
	struct h_proc proc;
	int port;
};

static int tcp_connects(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* nutcracker in front of two memcached servers: memcache (redis: false),
 * ketama, no ejection (a down backend's keys get SERVER_ERROR, not another
 * server), a generated YAML in the temp dir. */
static void start_nutcracker(struct nutcracker *n, int port_a, int port_b)
{
	char yml[H_PATH_MAX], log[H_PATH_MAX], conf[1024], stats[16];
	/* Debian installs it in /usr/sbin, which a user's PATH lacks; its stats
	 * port too (the default 22222 may be someone else's), and its log in
	 * the temp dir (the default, /var/log/nutcracker, is root's) */
	const char *argv[] = { access("/usr/sbin/nutcracker", X_OK) == 0 ? "/usr/sbin/nutcracker"
									  : "nutcracker",
			       "-c", yml, "-s", stats, "-o", log, NULL };
	int64_t deadline = h_now_ms() + 10000;
	FILE *f;

	n->port = h_free_port();
	snprintf(stats, sizeof(stats), "%d", h_free_port());
	h_tmppath(yml, sizeof(yml), "nutcracker.yml");
	h_tmppath(log, sizeof(log), "nutcracker.log");
	snprintf(conf, sizeof(conf),
		 "k2mc:\n  listen: 127.0.0.1:%d\n  hash: fnv1a_64\n  distribution: ketama\n"
		 "  redis: false\n  auto_eject_hosts: false\n  server_retry_timeout: 500\n"
		 "  timeout: 2000\n  servers:\n   - 127.0.0.1:%d:1\n   - 127.0.0.1:%d:1\n",
		 n->port, port_a, port_b);
	f = fopen(yml, "w");
	cr_assert_not_null(f);
	fputs(conf, f);
	fclose(f);
	cr_assert_eq(h_spawn(&n->proc, "nutcracker", argv, NULL), 0);
	while (!tcp_connects(n->port)) {
		cr_assert_eq(h_exited(n->proc.pid, NULL), 0, "nutcracker exited: %s",
			     h_tail_of(n->proc.err_path, 5));
		cr_assert_lt(h_now_ms(), deadline, "nutcracker did not listen");
		usleep(20000);
	}
}

Test(deploy, through_twemproxy_every_record_is_written)
{
	struct h_memcached a, b;
	struct nutcracker n;
	struct h_proc k;
	struct where ws[2];
	char addr[64], diff[256];

	cr_assert_eq(h_memcached_start(&a, 0, NULL), 0);
	cr_assert_eq(h_memcached_start(&b, 0, NULL), 0);
	start_nutcracker(&n, a.port, b.port);
	start_mock();
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", n.port);
	/* auto: nutcracker forwards "version" and closes on "stats": classic,
	 * no probes */
	start_k2mc(&k, "g-twem", addr, 1, NULL);
	finish_k2mc(&k, 60000);
	cr_assert_eq(wait_committed("g-twem", 10000, diff, sizeof(diff)), 0,
		     "committed != end offsets: %s", diff);
	ws[0] = (struct where){ .port = a.port };
	ws[1] = (struct where){ .port = b.port };
	assert_final_state(ws, 2);
	cr_assert(h_file_contains(k.err_path, "classic protocol and no probes"), "%s",
		  h_tail_of(k.err_path, 10));
}

/* A backend down behind the proxy: its records get SERVER_ERROR from
 * nutcracker, are not acknowledged, wait and are retried; nothing past them
 * is committed; once it is back, everything converges. */
Test(deploy, twemproxy_with_a_backend_down_commits_nothing_past_it)
{
	struct h_memcached a, b;
	struct nutcracker n;
	struct h_proc k;
	struct where ws[2];
	char addr[64], diff[256];
	const char *extra[] = { "--mc-protocol", "text", "--commit-interval-ms", "200", NULL };
	int b_port, i;
	int64_t total = 0;
	uint64_t items = 0;

	cr_assert_eq(h_memcached_start(&a, 0, NULL), 0);
	cr_assert_eq(h_memcached_start(&b, 0, NULL), 0);
	b_port = b.port;
	start_nutcracker(&n, a.port, b_port);
	h_stop(b.proc.pid, 2000);
	start_mock();
	for (i = 0; i < PARTS; i++)
		total += end_offsets[i];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", n.port);
	start_k2mc(&k, "g-down", addr, 0, extra);
	cr_assert_eq(h_wait_line(k.err_path, "SERVER_ERROR", NULL, k.pid, 30000, NULL, 0), 0,
		     "no SERVER_ERROR line; stderr:\n%s", h_tail_of(k.err_path, 10));
	/* a's records go in; b's wait, and each partition has some of b's
	 * keys early on: its commit stays behind them */
	usleep(3000 * 1000);
	cr_assert_lt(committed_sum("g-down"), total, "everything committed with a backend down");
	cr_assert_eq(fake_mc_stat(a.port, "curr_items", &items), 0);
	cr_assert_gt(items, 0, "the server that is up got nothing");

	cr_assert_eq(h_memcached_start(&b, b_port, NULL), 0, "memcached b did not restart");
	cr_assert_eq(wait_committed("g-down", 60000, diff, sizeof(diff)), 0,
		     "not converged after the backend came back: %s; stderr:\n%s", diff,
		     h_tail_of(k.err_path, 10));
	h_stop(k.pid, 20000);
	ws[0] = (struct where){ .port = a.port };
	ws[1] = (struct where){ .port = b.port };
	assert_final_state(ws, 2);
}

/* ---- unix socket ---------------------------------------------------------------*/

Test(deploy, unix_socket_mixed_with_tcp)
{
	struct h_proc u, k;
	struct h_memcached t;
	struct where ws[2];
	char path[H_PATH_MAX], servers[H_PATH_MAX + 64], diff[256];

	srv_start_unix_memcached(&u, path, sizeof(path));
	cr_assert_eq(h_memcached_start(&t, 0, NULL), 0);
	start_mock();
	snprintf(servers, sizeof(servers), "unix:%s,127.0.0.1:%d", path, t.port);
	start_k2mc(&k, "g-unix", servers, 1, NULL);
	finish_k2mc(&k, 60000);
	cr_assert_eq(wait_committed("g-unix", 10000, diff, sizeof(diff)), 0,
		     "committed != end offsets: %s", diff);
	ws[0] = (struct where){ .path = path };
	ws[1] = (struct where){ .port = t.port };
	assert_final_state(ws, 2);
}

/* ---- TLS -------------------------------------------------------------------------*/

Test(deploy, tls_with_the_right_ca)
{
	struct srv_certs c;
	struct srv_tls_mc m;
	struct h_proc k;
	struct where w;
	char addr[64], diff[256];
	const char *extra[] = { "--mc-tls", "--mc-tls-ca", c.ca, NULL };

	srv_make_certs(&c);
	srv_start_tls_memcached(&m, c.srv_crt, c.srv_key, NULL);
	start_mock();
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", m.port);
	start_k2mc(&k, "g-tls", addr, 1, extra);
	finish_k2mc(&k, 60000);
	cr_assert_eq(wait_committed("g-tls", 10000, diff, sizeof(diff)), 0,
		     "committed != end offsets: %s", diff);
	w = (struct where){ .port = m.plain_port };
	assert_final_state(&w, 1);
}

Test(deploy, tls_with_a_wrong_ca_writes_and_commits_nothing)
{
	struct srv_certs c;
	struct srv_tls_mc m;
	struct h_proc k;
	char addr[64], want[128];
	const char *extra[] = { "--mc-tls", "--mc-tls-ca", c.other_ca, NULL };
	size_t off = 0;
	uint64_t v = 1;

	srv_make_certs(&c);
	srv_start_tls_memcached(&m, c.srv_crt, c.srv_key, NULL);
	start_mock();
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", m.port);
	start_k2mc(&k, "g-badca", addr, 0, extra);
	snprintf(want, sizeof(want), "memcached 127.0.0.1:%d: down \\(TLS: certificate verify failed",
		 m.port);
	cr_assert_eq(h_wait_line(k.err_path, want, &off, k.pid, 30000, NULL, 0), 0,
		     "no line naming the server and the reason; stderr:\n%s",
		     h_tail_of(k.err_path, 10));
	usleep(4000 * 1000);
	/* said once (repeated at most every 10 s), nothing written, nothing
	 * committed */
	cr_assert_neq(h_wait_line(k.err_path, "certificate verify failed", &off, k.pid, 10, NULL, 0),
		      0, "said twice within 4 s:\n%s", h_tail_of(k.err_path, 10));
	cr_assert_eq(fake_mc_stat(m.plain_port, "cmd_set", &v), 0);
	cr_assert_eq(v, 0, "%" PRIu64 " sets reached the server", v);
	cr_assert_eq(committed_sum("g-badca"), 0);
	h_stop(k.pid, 20000);
}
