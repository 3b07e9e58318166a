/* Unit suite for workers/transport.h under workers/mcconn.h: the same
 * pipelined connection over a unix socket (memcached -s) and over TLS
 * (memcached -Z, with a CA and certificates made here with openssl: right
 * CA, wrong CA, host name and IP SAN checks, mutual TLS with an encrypted
 * key), mixed with TCP in one exchange; --mc-protocol text and meta; and a
 * misbehaving server (tests/fake_mc.c): garbage, half a line, megabytes
 * without CRLF, a close mid-reply, SERVER_ERROR to everything, "MN" before
 * the batch was read. For each: no crash, nothing acknowledged that was not
 * answered, and a reason that names what the server did.
 * Not about routing or batching policy (writer.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fake_mc.h"
#include "harness.h"
#include "servers.h"
#include "workers/mcconn.h"

static struct mc_conn *conns[3];
static struct fake_mc *fake;

static void setup(void)
{
	/* OpenSSL writes with write(): a peer that goes away is EPIPE */
	signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
	for (size_t i = 0; i < sizeof(conns) / sizeof(conns[0]); i++) {
		mcconn_free(conns[i]);
		conns[i] = NULL;
	}
	fake_mc_stop(fake);
	fake = NULL;
	h_cleanup();
}

TestSuite(transport, .init = setup, .fini = teardown, .timeout = 90);

static const char *xname(enum mc_exchange x)
{
	return x == MC_X_DONE ? "DONE" : x == MC_X_PENDING ? "PENDING" : "FAILED";
}

static enum mc_exchange exchange_until(struct mc_conn *c, int timeout_ms)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	enum mc_exchange x;

	do
		mcconn_exchange(&c, 1, 200, INT64_MAX, &x);
	while (x == MC_X_PENDING && h_now_ms() < deadline);
	return x;
}

static void queue_sets(struct mc_conn *c, const char *tag, int n)
{
	char key[64], val[64];

	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%s-%d", tag, i);
		snprintf(val, sizeof(val), "value-%s-%d", tag, i);
		cr_assert_eq(mcconn_queue_set(c, key, strlen(key), val, strlen(val), 0, 0), 0);
	}
}

static void assert_replies(struct mc_conn *c, size_t n, enum mc_reply want)
{
	cr_assert_geq(mcconn_queued(c), n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(mcconn_reply(c, i), want, "reply %zu is %d, not %d", i,
			     mcconn_reply(c, i), want);
}

static void assert_none_acknowledged(struct mc_conn *c)
{
	cr_assert(!mcconn_done(c), "the batch counts as done");
	for (size_t i = 0; i < mcconn_queued(c); i++)
		cr_assert_eq(mcconn_reply(c, i), MC_NONE, "reply %zu is %d after a failure", i,
			     mcconn_reply(c, i));
}

static uint64_t stat_of(int port, const char *name)
{
	uint64_t v = 0;

	cr_assert_eq(fake_mc_stat(port, name, &v), 0, "stat %s", name);
	return v;
}

static struct mc_conn *tls_conn(int slot, const char *host, int port,
				const struct transport_tls *tls)
{
	struct transport_addr a = { .host = host, .port = port };
	struct mcconn_opts o = { .tls = tls };
	char err[512];
	struct mc_conn *c = mcconn_new_opts(&a, &o, err, sizeof(err));

	cr_assert_not_null(c, "mcconn_new_opts: %s", err);
	mcconn_free(conns[slot]);
	conns[slot] = c;
	return c;
}

/* ---- unix sockets ------------------------------------------------------------*/

Test(transport, unix_socket_pipelined_sets_read_back)
{
	struct h_proc p;
	char path[H_PATH_MAX], buf[128];
	struct transport_addr a;
	struct mc_conn *c;
	char err[256];

	srv_start_unix_memcached(&p, path, sizeof(path));
	a = (struct transport_addr){ .host = path, .is_unix = 1 };
	c = conns[0] = mcconn_new_opts(&a, NULL, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	cr_assert_str_eq(mcconn_name(c), path);
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	cr_assert(mcconn_meta(c), "memcached 1.6.18 over a unix socket speaks meta");
	cr_assert_eq(mcconn_item_limit(c), 1u << 20);
	cr_assert(mcconn_item_limit_known(c));
	queue_sets(c, "u", 2000);
	cr_assert_eq(mcconn_queue_delete(c, "u-7", 3), 0);
	cr_assert_eq(exchange_until(c, 10000), MC_X_DONE, "%s", mcconn_error(c));
	assert_replies(c, 2000, MC_STORED);
	cr_assert_eq(mcconn_reply(c, 2000), MC_DELETED);
	cr_assert_eq(srv_unix_get(path, "u-1999", buf, sizeof(buf)), 12);
	cr_assert_str_eq(buf, "value-u-1999");
	cr_assert_eq(srv_unix_get(path, "u-7", buf, sizeof(buf)), -1);
}

/* A unix socket and a TCP server in one exchange, as `-m /path,host:port`. */
Test(transport, unix_and_tcp_in_one_exchange)
{
	struct h_proc p;
	struct h_memcached tcp;
	char path[H_PATH_MAX], buf[128], err[256];
	struct transport_addr a;
	enum mc_exchange x[2];

	srv_start_unix_memcached(&p, path, sizeof(path));
	cr_assert_eq(h_memcached_start(&tcp, 0, NULL), 0);
	a = (struct transport_addr){ .host = path, .is_unix = 1 };
	conns[0] = mcconn_new_opts(&a, NULL, err, sizeof(err));
	conns[1] = mcconn_new("127.0.0.1", tcp.port);
	cr_assert(conns[0] != NULL && conns[1] != NULL);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(mcconn_ensure(conns[i], 2000), 0, "%s", mcconn_error(conns[i]));
		queue_sets(conns[i], i == 0 ? "unix" : "tcp", 500);
	}
	for (int64_t deadline = h_now_ms() + 10000; h_now_ms() < deadline;) {
		mcconn_exchange(conns, 2, 200, INT64_MAX, x);
		if (x[0] != MC_X_PENDING && x[1] != MC_X_PENDING)
			break;
	}
	cr_assert(x[0] == MC_X_DONE && x[1] == MC_X_DONE, "unix %s, tcp %s", xname(x[0]),
		  xname(x[1]));
	assert_replies(conns[0], 500, MC_STORED);
	assert_replies(conns[1], 500, MC_STORED);
	cr_assert_eq(srv_unix_get(path, "unix-499", buf, sizeof(buf)), 14);
	cr_assert_eq(fake_mc_fetch(tcp.port, "tcp-499", buf, sizeof(buf)), 13);
}

Test(transport, unix_socket_missing_fails_with_the_reason)
{
	char path[H_PATH_MAX], err[256];
	struct transport_addr a;
	struct mc_conn *c;

	srv_shared_dir();
	h_tmppath(path, sizeof(path), "srv/nobody-listens.sock");
	a = (struct transport_addr){ .host = path, .is_unix = 1 };
	c = conns[0] = mcconn_new_opts(&a, NULL, err, sizeof(err));
	cr_assert_not_null(c);
	cr_assert_eq(mcconn_ensure(c, 1000), -ENOENT);
	cr_assert_str_eq(mcconn_error(c), "connect: No such file or directory");
}

/* ---- TLS ---------------------------------------------------------------------*/

Test(transport, tls_with_the_right_ca_writes_everything)
{
	struct srv_certs k;
	struct srv_tls_mc m;
	struct transport_tls tls = { .enabled = 1 };
	struct mc_conn *c;
	char buf[128];

	srv_make_certs(&k);
	srv_start_tls_memcached(&m, k.srv_crt, k.srv_key, NULL);
	tls.ca = k.ca;
	/* an IP address: verified against the certificate's IP SANs */
	c = tls_conn(0, "127.0.0.1", m.port, &tls);
	cr_assert_eq(mcconn_ensure(c, 3000), 0, "%s", mcconn_error(c));
	cr_assert(mcconn_tls(c));
	cr_assert(mcconn_meta(c));
	cr_assert_eq(mcconn_item_limit(c), 1u << 20);
	/* 5000 sets of ~30 bytes: batches over 30 KB hung memcached 1.6.18
	 * before the batch's tail went in a TLS record of its own */
	queue_sets(c, "t", 5000);
	cr_assert_eq(mcconn_queue_delete(c, "t-3", 3), 0);
	cr_assert_eq(mcconn_queue_delete(c, "never-there", 11), 0);
	cr_assert_eq(exchange_until(c, 20000), MC_X_DONE, "%s", mcconn_error(c));
	assert_replies(c, 5000, MC_STORED);
	cr_assert_eq(mcconn_reply(c, 5000), MC_DELETED);
	cr_assert_eq(mcconn_reply(c, 5001), MC_NOT_FOUND);
	cr_assert_eq(stat_of(m.plain_port, "curr_items"), 4999);
	cr_assert_eq(fake_mc_fetch(m.plain_port, "t-4999", buf, sizeof(buf)), 12);
	cr_assert_str_eq(buf, "value-t-4999");
	cr_assert_eq(fake_mc_fetch(m.plain_port, "t-3", buf, sizeof(buf)), -1);

	/* by host name, against its DNS SAN; and again on a reconnect */
	c = tls_conn(1, "localhost", m.port, &tls);
	cr_assert_eq(mcconn_ensure(c, 3000), 0, "%s", mcconn_error(c));
	queue_sets(c, "again", 10);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
}

Test(transport, tls_with_a_wrong_ca_writes_nothing_and_says_why)
{
	struct srv_certs k;
	struct srv_tls_mc m;
	struct transport_tls tls = { .enabled = 1 };
	struct mc_conn *c;
	enum mc_exchange x;

	srv_make_certs(&k);
	srv_start_tls_memcached(&m, k.srv_crt, k.srv_key, NULL);
	tls.ca = k.other_ca;
	c = tls_conn(0, "127.0.0.1", m.port, &tls);
	queue_sets(c, "w", 10);
	cr_assert_eq(mcconn_ensure(c, 3000), -EACCES, "%s", mcconn_error(c));
	cr_assert_str_eq(mcconn_error(c), "TLS: certificate verify failed: unable to get local "
					  "issuer certificate (verifying \"127.0.0.1\")");
	cr_assert(!mcconn_connected(c));
	mcconn_exchange(&c, 1, 200, INT64_MAX, &x);
	cr_assert_eq(x, MC_X_FAILED);
	assert_none_acknowledged(c);
	/* the server saw no command at all */
	cr_assert_eq(stat_of(m.plain_port, "cmd_set"), 0);
	cr_assert_eq(stat_of(m.plain_port, "curr_items"), 0);
}

Test(transport, tls_verifies_the_name)
{
	struct srv_certs k;
	struct srv_tls_mc m;
	struct transport_tls tls = { .enabled = 1 };
	struct mc_conn *c;

	srv_make_certs(&k);
	/* a certificate for "localhost" only */
	srv_start_tls_memcached(&m, k.dns_crt, k.dns_key, NULL);
	tls.ca = k.ca;
	c = tls_conn(0, "127.0.0.1", m.port, &tls);
	cr_assert_eq(mcconn_ensure(c, 3000), -EACCES);
	cr_assert(strstr(mcconn_error(c), "IP address mismatch") != NULL, "%s",
		  mcconn_error(c));
	/* --mc-tls-server-name: SNI and the name checked */
	tls.server_name = "localhost";
	c = tls_conn(1, "127.0.0.1", m.port, &tls);
	cr_assert_eq(mcconn_ensure(c, 3000), 0, "%s", mcconn_error(c));
	tls.server_name = "cache.example.com";
	c = tls_conn(2, "127.0.0.1", m.port, &tls);
	cr_assert_eq(mcconn_ensure(c, 3000), -EACCES);
	cr_assert(strstr(mcconn_error(c), "hostname mismatch") != NULL, "%s", mcconn_error(c));
}

Test(transport, tls_insecure_skips_verification)
{
	struct srv_certs k;
	struct srv_tls_mc m;
	struct transport_tls tls = { .enabled = 1, .insecure = 1 };
	struct mc_conn *c;

	srv_make_certs(&k);
	srv_start_tls_memcached(&m, k.srv_crt, k.srv_key, NULL);
	tls.ca = k.other_ca;
	c = tls_conn(0, "127.0.0.1", m.port, &tls);
	cr_assert_eq(mcconn_ensure(c, 3000), 0, "%s", mcconn_error(c));
	queue_sets(c, "i", 10);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
}

Test(transport, mutual_tls_with_an_encrypted_key)
{
	struct srv_certs k;
	struct srv_tls_mc m;
	struct transport_tls tls = { .enabled = 1 };
	struct transport_addr a;
	struct mcconn_opts o = { .tls = &tls };
	char more[1024], err[512];
	struct mc_conn *c;

	srv_make_certs(&k);
	snprintf(more, sizeof(more), "ssl_verify_mode=2,ssl_ca_cert=%s", k.ca);
	srv_start_tls_memcached(&m, k.srv_crt, k.srv_key, more);
	tls.ca = k.ca;
	/* no client certificate: the server refuses the handshake */
	c = tls_conn(0, "127.0.0.1", m.port, &tls);
	/* TLS 1.3: the client's side of the handshake completes, and the
	 * server's refusal (an alert, or just a close) comes on the first
	 * probe: a failure, never "a proxy that closes on probes" */
	cr_assert_neq(mcconn_ensure(c, 3000), 0);
	cr_assert(strncmp(mcconn_error(c), "TLS", 3) == 0 || strstr(mcconn_error(c), "TLS") != NULL,
		  "%s", mcconn_error(c));
	cr_assert(!mcconn_connected(c));
	cr_assert_eq(stat_of(m.plain_port, "cmd_set"), 0);

	/* a wrong key password is found before any connection */
	tls.cert = k.cli_crt;
	tls.key = k.cli_key;
	tls.key_password = "wrong";
	a = (struct transport_addr){ .host = "127.0.0.1", .port = m.port };
	cr_assert_null(mcconn_new_opts(&a, &o, err, sizeof(err)));
	cr_assert(strstr(err, "client key") != NULL, "%s", err);
	cr_assert_eq(transport_tls_check(&tls, err, sizeof(err)), -EINVAL);

	tls.key_password = "s3cret";
	cr_assert_eq(transport_tls_check(&tls, err, sizeof(err)), 0, "%s", err);
	c = tls_conn(1, "127.0.0.1", m.port, &tls);
	cr_assert_eq(mcconn_ensure(c, 3000), 0, "%s", mcconn_error(c));
	queue_sets(c, "m", 100);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_replies(c, 100, MC_STORED);
	cr_assert_eq(stat_of(m.plain_port, "curr_items"), 100);
}

/* TLS to a plain server: a clear failure within the deadline, no hang. */
Test(transport, tls_to_a_plain_server_fails_clearly)
{
	struct h_memcached plain;
	struct transport_tls tls = { .enabled = 1, .insecure = 1 };
	struct mc_conn *c;
	int64_t t0;

	cr_assert_eq(h_memcached_start(&plain, 0, NULL), 0);
	c = tls_conn(0, "127.0.0.1", plain.port, &tls);
	t0 = h_now_ms();
	cr_assert_neq(mcconn_ensure(c, 2000), 0);
	cr_assert_lt(h_now_ms() - t0, 2500);
	cr_assert(strstr(mcconn_error(c), "TLS") != NULL, "%s", mcconn_error(c));
}

/* ---- --mc-protocol ---------------------------------------------------------------*/

static struct mc_conn *proto_conn(int slot, int port, enum mcconn_protocol p, size_t fallback)
{
	struct transport_addr a = { .host = "127.0.0.1", .port = port };
	struct mcconn_opts o = { .protocol = p, .fallback_limit = fallback };
	char err[256];
	struct mc_conn *c = mcconn_new_opts(&a, &o, err, sizeof(err));

	cr_assert_not_null(c, "%s", err);
	mcconn_free(conns[slot]);
	conns[slot] = c;
	return c;
}

/* text: not one probe (twemproxy closes on "version"... no: on "mn" and
 * "stats"; text sends neither), classic commands, the fallback limit. */
Test(transport, protocol_text_sends_no_probes)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610 };
	struct mc_conn *c;
	char line[128];

	fake = fake_mc_start(&o);
	cr_assert_not_null(fake);
	c = proto_conn(0, fake_mc_port(fake), MCCONN_PROTO_TEXT, 5u << 20);
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	cr_assert(!mcconn_meta(c));
	cr_assert_eq(mcconn_item_limit(c), 5u << 20, "--max-value-bytes is the limit");
	cr_assert(!mcconn_item_limit_known(c));
	queue_sets(c, "p", 3);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_replies(c, 3, MC_STORED);
	cr_assert_eq(fake_mc_nlines(fake), 3);
	fake_mc_line(fake, 0, line, sizeof(line));
	cr_assert_str_eq(line, "set p-0 0 0 9");
}

Test(transport, protocol_meta_refuses_what_does_not_speak_it)
{
	struct fake_mc_opts old = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169 };
	struct fake_mc_opts none = { .version = "VERSION 9.9-proxy", .ms = FAKE_MS_NONE };
	struct fake_mc_opts proxy = { .close_on = "version" };
	struct fake_mc_opts meta_proxy = { .ms = FAKE_MS_1610 }; /* "version": ERROR */
	struct mc_conn *c;

	fake = fake_mc_start(&old);
	c = proto_conn(0, fake_mc_port(fake), MCCONN_PROTO_META, 0);
	cr_assert_eq(mcconn_ensure(c, 2000), -EPROTONOSUPPORT);
	cr_assert(strstr(mcconn_error(c), "memcached 1.6.9, older than 1.6.10") != NULL, "%s",
		  mcconn_error(c));
	fake_mc_stop(fake);

	fake = fake_mc_start(&none);
	c = proto_conn(0, fake_mc_port(fake), MCCONN_PROTO_META, 0);
	cr_assert_eq(mcconn_ensure(c, 2000), -EPROTONOSUPPORT);
	cr_assert(strstr(mcconn_error(c), "answered 'ERROR' to \"mn\"") != NULL, "%s",
		  mcconn_error(c));
	fake_mc_stop(fake);

	fake = fake_mc_start(&proxy);
	c = proto_conn(0, fake_mc_port(fake), MCCONN_PROTO_META, 0);
	cr_assert_eq(mcconn_ensure(c, 2000), -EPROTONOSUPPORT);
	cr_assert(strstr(mcconn_error(c), "closed the connection on \"version\"") != NULL, "%s",
		  mcconn_error(c));
	fake_mc_stop(fake);

	/* no version, but "mn" answers "MN": meta, as asked */
	fake = fake_mc_start(&meta_proxy);
	c = proto_conn(0, fake_mc_port(fake), MCCONN_PROTO_META, 0);
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	cr_assert(mcconn_meta(c));
	queue_sets(c, "m", 3);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_replies(c, 3, MC_STORED);
}

/* auto: an unknown-command error to the probes is classic, not down. */
Test(transport, protocol_auto_takes_an_error_to_the_probes_as_classic)
{
	struct fake_mc_opts o = { .version = NULL, .ms = FAKE_MS_NONE, .stats_reply = "ERROR\r\n" };
	struct mc_conn *c;

	fake = fake_mc_start(&o);
	c = proto_conn(0, fake_mc_port(fake), MCCONN_PROTO_AUTO, 0);
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	cr_assert(!mcconn_meta(c));
	cr_assert_eq(mcconn_item_limit(c), 1u << 20, "memcached's default");
	queue_sets(c, "a", 3);
	cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
	assert_replies(c, 3, MC_STORED);
}

/* ---- a misbehaving server ---------------------------------------------------------*/

static struct mc_conn *misbehaving(const struct fake_mc_opts *o)
{
	struct mc_conn *c;

	fake_mc_stop(fake);
	fake = fake_mc_start(o);
	cr_assert_not_null(fake);
	c = proto_conn(0, fake_mc_port(fake), MCCONN_PROTO_AUTO, 0);
	cr_assert_eq(mcconn_ensure(c, 2000), 0, "%s", mcconn_error(c));
	return c;
}

Test(transport, garbage_fails_the_batch_and_is_named)
{
	/* (fake_mc sends strings: no NUL) */
	static const char garbage[] = "\x16\x03\x01\x02\x7fgarbage \xff\x01\r\n";
	struct fake_mc_opts classic = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169,
					.store_reply = garbage };
	struct fake_mc_opts meta = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				     .store_reply = garbage };
	const struct fake_mc_opts *os[] = { &classic, &meta };

	for (int i = 0; i < 2; i++) {
		struct mc_conn *c = misbehaving(os[i]);

		queue_sets(c, "g", 5);
		cr_assert_eq(exchange_until(c, 5000), MC_X_FAILED);
		assert_none_acknowledged(c);
		cr_assert_str_eq(mcconn_error(c),
				 "unexpected reply '\\x16\\x03\\x01\\x02\\x7fgarbage \\xff\\x01'");
		cr_assert(!mcconn_connected(c));
	}
}

Test(transport, half_a_line_stays_pending_and_is_named)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169,
				  .store_reply = "STOR" };
	struct mc_conn *c = misbehaving(&o);

	queue_sets(c, "h", 2);
	cr_assert_eq(exchange_until(c, 800), MC_X_PENDING);
	assert_none_acknowledged(c);
	cr_assert_str_eq(mcconn_partial_reply(c),
			 "stopped in the middle of a reply line: 'STORSTOR' and no CRLF");
	/* given up: closed, so no late byte lands in the next batch */
	mcconn_reset_batch(c);
	cr_assert(!mcconn_connected(c));
}

Test(transport, megabytes_without_crlf_are_cut_at_the_buffer)
{
	size_t len = 4u << 20;
	char *endless = malloc(len + 1);
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610 };
	struct mc_conn *c;

	cr_assert_not_null(endless);
	memset(endless, 'x', len);
	endless[len] = '\0';
	o.store_reply = endless;
	c = misbehaving(&o);
	queue_sets(c, "e", 1);
	cr_assert_eq(exchange_until(c, 5000), MC_X_FAILED);
	assert_none_acknowledged(c);
	/* the reply buffer is 64 KiB and never grows: the line is refused
	 * there, not read to its end */
	cr_assert(strncmp(mcconn_error(c), "reply line over 64 KiB without CRLF: 'xxxx", 42) == 0,
		  "%s", mcconn_error(c));
	fake_mc_stop(fake);
	fake = NULL;
	free(endless);
}

Test(transport, close_mid_reply_acknowledges_nothing)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169,
				  .close_after_stores = 2 };
	struct mc_conn *c = misbehaving(&o);

	queue_sets(c, "c", 5);
	cr_assert_eq(exchange_until(c, 5000), MC_X_FAILED);
	assert_none_acknowledged(c);
	cr_assert_str_eq(mcconn_error(c),
			 "server closed the connection in the middle of its replies");
}

Test(transport, server_error_to_everything_is_no_acknowledgement)
{
	struct fake_mc_opts classic = { .version = "VERSION 1.6.9", .ms = FAKE_MS_169,
					.store_reply = "SERVER_ERROR backend down\r\n" };
	struct fake_mc_opts meta = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610,
				     .store_reply = "SERVER_ERROR backend down\r\n" };
	const struct fake_mc_opts *os[] = { &classic, &meta };

	for (int i = 0; i < 2; i++) {
		struct mc_conn *c = misbehaving(os[i]);

		queue_sets(c, "s", 4);
		cr_assert_eq(exchange_until(c, 5000), MC_X_DONE, "%s", mcconn_error(c));
		assert_replies(c, 4, MC_SERVER_ERROR);
		cr_assert_str_eq(mcconn_last_reply_text(c), "SERVER_ERROR backend down");
	}
}

Test(transport, mn_before_the_batch_was_read_is_caught)
{
	struct fake_mc_opts o = { .version = "VERSION 1.6.18", .ms = FAKE_MS_1610, .early_mn = 1 };
	struct mc_conn *c = misbehaving(&o);

	/* small: all of it is sent before the early "MN" comes back */
	queue_sets(c, "n", 3);
	cr_assert_eq(exchange_until(c, 5000), MC_X_FAILED);
	assert_none_acknowledged(c);
	cr_assert(strstr(mcconn_error(c), "answered 'MN' before") != NULL, "%s", mcconn_error(c));

	/* large: the "MN" arrives while k2mc is still sending */
	c = misbehaving(&o);
	{
		static char big[8192];

		memset(big, 'v', sizeof(big));
		for (int i = 0; i < 2000; i++) {
			char key[32];

			snprintf(key, sizeof(key), "big-%d", i);
			cr_assert_eq(mcconn_queue_set(c, key, strlen(key), big, sizeof(big), 0, 0),
				     0);
		}
	}
	cr_assert_eq(exchange_until(c, 10000), MC_X_FAILED);
	assert_none_acknowledged(c);
	cr_assert(strstr(mcconn_error(c), "answered 'MN' before") != NULL, "%s", mcconn_error(c));
}
