/* Pipelined memcached connections over a non-blocking transport; see
 * mcconn.h. Not key routing or batching policy (writer.c), and not the
 * commands and replies themselves (mccodec.c, which explains the dialects).
 * The dialect is chosen per connection when it is made, from the server's
 * "version" reply (never from "mn": 1.5.19 to 1.6.9 answer "MN" too, but
 * read "ms <key> 9 q" as a bad flag and then run the 9-byte value as the
 * next command line; a value "flush_all" flushed the cache): meta for
 * memcached >= 1.6.10, classic for everything else (older, unknown,
 * proxies).
 * Replies are matched to commands by position: memcached answers the commands
 * of one connection in the order it received them. So a connection is only
 * ever shared by one batch: one given up with replies still owed is closed. */
#include "workers/mcconn.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "workers/mccodec.h"
#include "workers/transport.h"

/* The reply buffer; also the longest reply line accepted. */
#define IN_CAP (64 * 1024)
/* over TLS, the bytes of a batch sent in a TLS record of their own (pump) */
#define TLS_TAIL 2
/* memcached's item_size_max unless -I says otherwise */
#define MC_DEFAULT_ITEM_MAX ((size_t)1 << 20)

struct mc_conn {
	char name[272];
	/* the byte stream (TCP, unix socket, TLS): transport.c */
	struct transport *tp;
	char errbuf[512];
	/* --mc-protocol, and the value limit when the server does not say
	 * (mcconn.h: struct mcconn_opts) */
	enum mcconn_protocol protocol;
	size_t fallback_limit;
	int fallback_from_flag;

	/* meta dialect (1) or classic (0) of the connection, decided by
	 * mcconn_ensure (a guess of 1 before the first connect, then the last
	 * connection's); the batch's own is b.meta, fixed by its first command */
	int meta;
	/* a probe made the peer close the connection (a proxy such as
	 * twemproxy does that on commands it does not know): later connections
	 * are classic and probe nothing. stats_off: --mc-protocol meta, and
	 * the peer closed on "stats settings": meta, that probe skipped. */
	int probes_off, stats_off;
	/* from the last connect's probes: item_size_max (0 unknown) and the
	 * version text after "VERSION " (escaped; "" unknown) */
	size_t item_limit;
	int limit_from_server;
	char version[64];
	uint64_t idle_reconnects;
	/* the current batch: its commands, what is sent, its replies */
	struct mccodec b;

	/* bytes received and not yet parsed; hs_skip: handshake only, the
	 * length of the line handed out last, dropped by the next read */
	char *in;
	size_t in_len, in_cap, hs_skip;
	/* for mcconn_partial_reply */
	char partial[160];
};

struct mc_conn *mcconn_new_opts(const struct transport_addr *addr, const struct mcconn_opts *o,
				char *err, size_t errlen)
{
	struct mc_conn *c = calloc(1, sizeof(*c));
	char why[512];

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	transport_addr_label(addr, "", c->name, sizeof(c->name));
	c->tp = transport_new(addr, o != NULL ? o->tls : NULL, why, sizeof(why));
	if (c->tp == NULL) {
		snprintf(err, errlen, "memcached %s: %s", c->name, why);
		free(c);
		return NULL;
	}
	if (o != NULL) {
		c->protocol = o->protocol;
		c->fallback_limit = o->fallback_limit;
		c->fallback_from_flag = o->fallback_limit > 0;
	}
	if (c->fallback_limit == 0)
		c->fallback_limit = MC_DEFAULT_ITEM_MAX;
	/* text: classic, and not one probe (twemproxy closes on them) */
	c->probes_off = c->protocol == MCCONN_PROTO_TEXT;
	c->meta = c->protocol != MCCONN_PROTO_TEXT;
	c->b.complete = 1;
	c->in_cap = IN_CAP;
	c->in = malloc(c->in_cap);
	if (c->in == NULL) {
		snprintf(err, errlen, "out of memory");
		transport_free(c->tp);
		free(c);
		return NULL;
	}
	return c;
}

struct mc_conn *mcconn_new(const char *host, int port)
{
	struct transport_addr a = { .host = host, .port = port };
	char err[512];

	return mcconn_new_opts(&a, NULL, err, sizeof(err));
}

void mcconn_tls_from_config(const struct k2mc_config *cfg, struct transport_tls *tls)
{
	static atomic_int warned;

	*tls = (struct transport_tls){
		.enabled = cfg->mc_tls,
		.ca = cfg->mc_tls_ca,
		.cert = cfg->mc_tls_cert,
		.key = cfg->mc_tls_key,
		.key_password = cfg->mc_tls_key_password,
		.server_name = cfg->mc_tls_server_name,
		.insecure = cfg->mc_tls_insecure,
	};
	if (cfg->mc_tls && cfg->mc_tls_insecure &&
	    !atomic_exchange_explicit(&warned, 1, memory_order_relaxed))
		k2mc_warn("--mc-tls-insecure: the servers' certificates are not verified; anyone "
			  "on the path can read and change what k2mc writes");
}

void k2mc_server_label(const struct k2mc_server *srv, char *buf, size_t len)
{
	struct transport_addr a = { .host = srv->host, .port = srv->port, .is_unix = srv->is_unix };

	transport_addr_label(&a, "unix:", buf, len);
}

struct mc_conn *mcconn_new_server(const struct k2mc_server *s, const struct k2mc_config *cfg,
				  char *err, size_t errlen)
{
	struct transport_addr a = { .host = s->host, .port = s->port, .is_unix = s->is_unix };
	struct transport_tls tls;
	struct mcconn_opts o = {
		.protocol = (enum mcconn_protocol)cfg->mc_protocol,
		.tls = &tls,
		.fallback_limit = (size_t)cfg->max_value_bytes,
	};

	/* the transport keeps a copy; its strings are cfg's */
	mcconn_tls_from_config(cfg, &tls);

	return mcconn_new_opts(&a, &o, err, errlen);
}

static void conn_close(struct mc_conn *c)
{
	transport_close(c->tp);
	c->in_len = 0;
	c->hs_skip = 0;
	/* a resend starts from the first command on the new connection */
	mccodec_rewind(&c->b);
}

/* how late mcconn_exchange notices a cancel flag (transport.c has its own) */
#define CANCEL_SLICE_MS 100

void mcconn_set_cancel(struct mc_conn *c, const _Atomic int *flag)
{
	transport_set_cancel(c->tp, flag);
}

void mcconn_free(struct mc_conn *c)
{
	if (c == NULL)
		return;
	conn_close(c);
	transport_free(c->tp);
	mccodec_free(&c->b);
	free(c->in);
	free(c);
}

const char *mcconn_name(const struct mc_conn *c)
{
	return c->name;
}

const char *mcconn_error(const struct mc_conn *c)
{
	return c->errbuf;
}

int mcconn_connected(const struct mc_conn *c)
{
	return transport_is_open(c->tp);
}

int mcconn_meta(const struct mc_conn *c)
{
	return c->meta;
}

size_t mcconn_item_limit(const struct mc_conn *c)
{
	return c->item_limit;
}

int mcconn_item_limit_known(const struct mc_conn *c)
{
	return c->limit_from_server;
}

int mcconn_tls(const struct mc_conn *c)
{
	return transport_is_tls(c->tp);
}

const char *mcconn_version(const struct mc_conn *c)
{
	return c->version;
}

uint64_t mcconn_idle_reconnects(const struct mc_conn *c)
{
	return c->idle_reconnects;
}

static int ms_left(int64_t deadline)
{
	int64_t left = deadline - k2mc_now_ms();

	return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

static int starts(const char *line, size_t len, const char *lit)
{
	size_t n = strlen(lit);

	return len >= n && memcmp(line, lit, n) == 0;
}

/* ---- handshake --------------------------------------------------------------
 * Blocking request/response on a fresh connection, before any command.
 * Returns 0, PEER_CLOSED (the peer closed or reset the connection: a proxy
 * refusing the probe), or -errno with the reason in errbuf. */

#define PEER_CLOSED 1

static int is_close(int err)
{
	return err == ECONNRESET || err == EPIPE || err == ECONNABORTED;
}

static int hs_send(struct mc_conn *c, const char *req, int64_t deadline)
{
	return transport_send_all(c->tp, req, strlen(req), deadline);
}

/* The next reply line, without its line end, at *line (inside c->in, valid
 * until the next call). 0, -ECONNRESET (peer closed), -ETIMEDOUT, -EMSGSIZE
 * (a line longer than the buffer), -errno (the transport's reason in
 * transport_error). */
static int hs_line(struct mc_conn *c, int64_t deadline, const char **line, size_t *len)
{
	memmove(c->in, c->in + c->hs_skip, c->in_len - c->hs_skip);
	c->in_len -= c->hs_skip;
	c->hs_skip = 0;
	for (;;) {
		char *nl = memchr(c->in, '\n', c->in_len);
		ssize_t n;

		if (nl != NULL) {
			size_t l = (size_t)(nl - c->in);

			c->hs_skip = l + 1;
			if (l > 0 && c->in[l - 1] == '\r')
				l--;
			*line = c->in;
			*len = l;
			return 0;
		}
		if (c->in_len == c->in_cap)
			return -EMSGSIZE;
		n = transport_recv_some(c->tp, c->in + c->in_len, c->in_cap - c->in_len, deadline);
		if (n > 0)
			c->in_len += (size_t)n;
		else
			return n == 0 ? -ECONNRESET : (int)n;
	}
}

/* A failed probe: a close is PEER_CLOSED, anything else closes the
 * connection with the reason. */
static int hs_fail(struct mc_conn *c, int rc, const char *probe, int timeout_ms)
{
	char text[96];

	if (is_close(-rc) && transport_is_tls(c->tp)) {
		/* Over TLS a close right after the handshake is most often the
		 * server refusing it (a client certificate it requires, TLS
		 * 1.3 checks it after the client is done), not a proxy that
		 * does not know the probe: failed, not classic for good. A
		 * TLS proxy that closes on probes takes --mc-protocol text. */
		snprintf(c->errbuf, sizeof(c->errbuf),
			 "TLS: the server closed the connection after the handshake, on \"%s\" "
			 "(does it require a client certificate, --mc-tls-cert? its log says "
			 "why)",
			 probe);
		conn_close(c);
		return -ECONNRESET;
	}
	if (is_close(-rc))
		return PEER_CLOSED;
	if (rc == -ETIMEDOUT) {
		snprintf(c->errbuf, sizeof(c->errbuf), "handshake: no answer to \"%s\" in %d ms",
			 probe, timeout_ms);
	} else if (rc == -EMSGSIZE) {
		mccodec_escape(text, sizeof(text), c->in, 48);
		snprintf(c->errbuf, sizeof(c->errbuf),
			 "handshake: reply to \"%s\" over %zu KiB without CRLF: '%s'", probe,
			 c->in_cap / 1024, text);
	} else if (transport_error(c->tp)[0] != '\0') {
		snprintf(c->errbuf, sizeof(c->errbuf), "handshake: %s: %s", probe,
			 transport_error(c->tp));
	} else {
		snprintf(c->errbuf, sizeof(c->errbuf), "handshake: %s: %s", probe, strerror(-rc));
	}
	conn_close(c);
	return rc;
}

/* Parses "x.y.z[suffix]": 1 with the numbers in v, 0 if it is not a
 * memcached version this knows. */
static int parse_version(const char *s, size_t len, uint64_t v[3])
{
	size_t pos = 0;

	for (int i = 0; i < 3; i++) {
		size_t n = mccodec_digits(s + pos, len - pos, 1000000, &v[i]);

		if (n == 0)
			return 0;
		pos += n;
		if (i < 2) {
			if (pos >= len || s[pos] != '.')
				return 0;
			pos++;
		}
	}
	/* "1.6.21", "1.6.21-rc1", "1.6.21 (build)"; not "1.6.21.4" or
	 * "1.6.21x": a format this does not know is not trusted */
	return pos == len || s[pos] == '-' || s[pos] == '+' || s[pos] == '_' || s[pos] == ' ';
}

/* 1 if "x.y.z[suffix]" is memcached 1.6.10 or later, whose "ms" syntax is
 * "ms <key> <datalen> <flags>*" (1.6.10 release: "meta: fix metaset
 * syntax"). Anything else, including what does not parse, is 0. */
static int version_has_meta(const char *s, size_t len)
{
	uint64_t v[3];

	if (!parse_version(s, len, v))
		return 0;
	if (v[0] != 1)
		return v[0] > 1;
	if (v[1] != 6)
		return v[1] > 6;
	return v[2] >= 10;
}

/* --mc-protocol meta and a "version" that did not say 1.6.10 or later:
 * "mn" must answer "MN". A memcached that names an older version is refused
 * outright (1.5.19 to 1.6.9 answer "MN" but read "ms" differently). */
static int probe_meta_forced(struct mc_conn *c, const char *vline, size_t vlen,
			     int64_t deadline, int timeout_ms)
{
	char text[96];
	const char *line;
	size_t len;
	uint64_t v[3];
	int rc;

	if (starts(vline, vlen, "VERSION ") && parse_version(vline + 8, vlen - 8, v)) {
		snprintf(c->errbuf, sizeof(c->errbuf),
			 "--mc-protocol meta: the server is memcached %s, older than 1.6.10, whose "
			 "\"ms\" syntax k2mc writes; use --mc-protocol auto or text",
			 c->version);
		conn_close(c);
		return -EPROTONOSUPPORT;
	}
	rc = hs_send(c, "mn\r\n", deadline);
	if (rc == 0)
		rc = hs_line(c, deadline, &line, &len);
	if (rc != 0) {
		if (is_close(-rc)) {
			snprintf(c->errbuf, sizeof(c->errbuf),
				 "--mc-protocol meta: the server closed the connection on \"mn\": it "
				 "does not speak the meta protocol (a proxy?); use --mc-protocol "
				 "text");
			conn_close(c);
			return -EPROTONOSUPPORT;
		}
		return hs_fail(c, rc, "mn", timeout_ms);
	}
	if (len != 2 || memcmp(line, "MN", 2) != 0) {
		mccodec_escape(text, sizeof(text), line, len);
		snprintf(c->errbuf, sizeof(c->errbuf),
			 "--mc-protocol meta: the server answered '%s' to \"mn\": it does not speak "
			 "the meta protocol; use --mc-protocol auto or text",
			 text);
		conn_close(c);
		return -EPROTONOSUPPORT;
	}
	return 0;
}

static int probe_version(struct mc_conn *c, int64_t deadline, int timeout_ms)
{
	const char *line;
	size_t len;
	int rc = hs_send(c, "version\r\n", deadline);

	if (rc == 0)
		rc = hs_line(c, deadline, &line, &len);
	if (rc != 0) {
		if (c->protocol == MCCONN_PROTO_META && is_close(-rc)) {
			snprintf(c->errbuf, sizeof(c->errbuf),
				 "--mc-protocol meta: the server closed the connection on "
				 "\"version\": not a memcached that speaks meta (a proxy?); use "
				 "--mc-protocol text");
			conn_close(c);
			return -EPROTONOSUPPORT;
		}
		return hs_fail(c, rc, "version", timeout_ms);
	}
	if (starts(line, len, "ERROR Too many open connections")) {
		/* memcached at its -c limit says this unasked and closes: a
		 * full server (a failure, retried), not a proxy refusing the
		 * probe (which would make this connection classic for good) */
		char text[96];

		mccodec_escape(text, sizeof(text), line, len);
		snprintf(c->errbuf, sizeof(c->errbuf), "connect: server refused: '%s'", text);
		conn_close(c);
		return -EUSERS;
	}
	/* "ERROR", "CLIENT_ERROR ...", a stranger's line: classic */
	c->meta = 0;
	if (starts(line, len, "VERSION ")) {
		mccodec_escape(c->version, sizeof(c->version), line + 8, len - 8);
		c->meta = version_has_meta(line + 8, len - 8);
	}
	if (c->protocol == MCCONN_PROTO_META && !c->meta) {
		rc = probe_meta_forced(c, line, len, deadline, timeout_ms);
		if (rc != 0)
			return rc;
		c->meta = 1;
	}
	return 0;
}

/* "stats settings" up to its "END": item_size_max, or 0 if the server
 * answers anything else (an error line: unknown). */
static int probe_item_limit(struct mc_conn *c, int64_t deadline, int timeout_ms)
{
	const char *line;
	size_t len;
	uint64_t v, limit = 0;
	int rc = hs_send(c, "stats settings\r\n", deadline);

	for (;;) {
		if (rc == 0)
			rc = hs_line(c, deadline, &line, &len);
		if (rc != 0)
			return hs_fail(c, rc, "stats settings", timeout_ms);
		if (len == 3 && memcmp(line, "END", 3) == 0)
			break;
		if (!starts(line, len, "STAT ")) {
			limit = 0;
			break;
		}
		if (mccodec_stat_line(line, len, "item_size_max", &v) == 1)
			limit = v;
	}
	c->item_limit = (size_t)limit;
	return 0;
}

/* Probes a fresh connection: version (the dialect), then the item limit.
 * PEER_CLOSED when the peer closed on a probe. */
static int handshake(struct mc_conn *c, int64_t deadline, int timeout_ms)
{
	int rc;

	if (c->probes_off) {
		c->meta = 0;
		return 0;
	}
	rc = probe_version(c, deadline, timeout_ms);
	if (rc == 0 && !c->stats_off)
		rc = probe_item_limit(c, deadline, timeout_ms);
	if (rc != 0)
		return rc;
	if (c->in_len > c->hs_skip) {
		char text[96];

		mccodec_escape(text, sizeof(text), c->in + c->hs_skip, c->in_len - c->hs_skip);
		snprintf(c->errbuf, sizeof(c->errbuf),
			 "handshake: unexpected bytes after the reply to \"stats settings\": '%s'",
			 text);
		conn_close(c);
		return -EPROTO;
	}
	c->in_len = 0;
	c->hs_skip = 0;
	return 0;
}

static int connect_once(struct mc_conn *c, int64_t deadline)
{
	int rc = transport_connect(c->tp, deadline);

	if (rc != 0)
		snprintf(c->errbuf, sizeof(c->errbuf), "%s", transport_error(c->tp));
	return rc;
}

/* Servers whose value limit came from a fallback, said once each per
 * process (every writer has a connection to every server). Start-up and
 * reconnects only: a mutex is fine here. */
static pthread_mutex_t noted_mu = PTHREAD_MUTEX_INITIALIZER;
static char noted[K2MC_MAX_SERVERS][272];
static int nnoted;

static void note_fallback_limit(const struct mc_conn *c, const char *why)
{
	int seen = 0;

	pthread_mutex_lock(&noted_mu);
	for (int i = 0; i < nnoted && !seen; i++)
		seen = strcmp(noted[i], c->name) == 0;
	if (!seen && nnoted < K2MC_MAX_SERVERS)
		snprintf(noted[nnoted++], sizeof(noted[0]), "%s", c->name);
	pthread_mutex_unlock(&noted_mu);
	if (seen)
		return;
	if (c->fallback_from_flag)
		k2mc_info("memcached %s: %s; values up to %zu bytes, from --max-value-bytes",
			  c->name, why, c->fallback_limit);
	else
		k2mc_info("memcached %s: %s; values up to %zu bytes, memcached's default item "
			  "size (set --max-value-bytes if its -I differs)",
			  c->name, why, c->fallback_limit);
}

/* The limit writers see: the server's, or the fallback (mcconn.h). */
static void settle_limit(struct mc_conn *c)
{
	c->limit_from_server = c->item_limit > 0;
	if (c->limit_from_server)
		return;
	c->item_limit = c->fallback_limit;
	note_fallback_limit(c, c->protocol == MCCONN_PROTO_TEXT ? "--mc-protocol text, no probes"
			       : c->probes_off ? "closed the connection on a probe (a proxy?), "
					       "classic protocol and no probes"
			       : c->stats_off ? "closed the connection on \"stats settings\""
					      : "no item size limit in \"stats settings\"");
}

int mcconn_ensure(struct mc_conn *c, int timeout_ms)
{
	int64_t deadline = k2mc_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	int rc;

	if (transport_is_open(c->tp)) {
		/* Only while no byte of the batch is on the wire: after that,
		 * readable data is replies, and a close is the exchange's
		 * failure (the server may have applied part of the batch). */
		if (c->b.out_sent > 0 || !transport_idle_broken(c->tp))
			return 0;
		conn_close(c);
		c->idle_reconnects++;
	}
	c->item_limit = 0;
	c->version[0] = '\0';
	rc = connect_once(c, deadline);
	if (rc == 0)
		rc = handshake(c, deadline, timeout_ms);
	if (rc == PEER_CLOSED && c->protocol == MCCONN_PROTO_META) {
		/* only "stats settings" gets here (a close on "version" or
		 * "mn" is a refusal): meta, without that probe */
		conn_close(c);
		c->stats_off = 1;
		rc = connect_once(c, deadline);
		if (rc == 0)
			rc = handshake(c, deadline, timeout_ms);
		if (rc == PEER_CLOSED) {
			snprintf(c->errbuf, sizeof(c->errbuf),
				 "handshake: the server closed the connection on a probe");
			conn_close(c);
			rc = -ECONNRESET;
		}
	} else if (rc == PEER_CLOSED) {
		/* A peer that drops the connection on "version" or "stats" is
		 * a proxy, or something else that is not memcached: what is
		 * behind it is unknown, so classic, and no more probes. */
		conn_close(c);
		c->probes_off = 1;
		c->meta = 0;
		c->item_limit = 0;
		c->version[0] = '\0';
		rc = connect_once(c, deadline);
	}
	if (rc != 0)
		return rc;
	settle_limit(c);
	c->errbuf[0] = '\0';
	return 0;
}

/* ---- queueing (mccodec.c) ----------------------------------------------------*/

int mcconn_queue_set(struct mc_conn *c, const char *key, size_t klen, const void *val,
		     size_t vlen, uint32_t flags, uint32_t exptime)
{
	return mccodec_queue_set(&c->b, c->meta, key, klen, val, vlen, flags, exptime);
}

int mcconn_queue_delete(struct mc_conn *c, const char *key, size_t klen)
{
	return mccodec_queue_delete(&c->b, c->meta, key, klen);
}

int mcconn_queue_invalidate(struct mc_conn *c, const char *key, size_t klen, uint32_t grace_s)
{
	return mccodec_queue_invalidate(&c->b, c->meta, key, klen, grace_s);
}

size_t mcconn_queued_bytes(const struct mc_conn *c)
{
	return c->b.out_len;
}

size_t mcconn_queued(const struct mc_conn *c)
{
	return c->b.ncmds;
}

void mcconn_rewind(struct mc_conn *c)
{
	mccodec_rewind(&c->b);
}

void mcconn_reset_batch(struct mc_conn *c)
{
	/* Replies still owed, or a command cut in the middle: the server would
	 * answer them into the next batch (a late "MN" would complete it, and
	 * records never written would be acknowledged). Only a new connection
	 * is a clean slate. Closing is not a failure: errbuf is untouched. */
	if (transport_is_open(c->tp) && c->b.out_sent > 0 && !c->b.complete)
		conn_close(c);
	mccodec_reset(&c->b);
}

int mcconn_release(struct mc_conn *c)
{
	/* replies still owed, or commands still to send: the exchange's (a
	 * close there is a failure, and a share not sent needs the slot now) */
	if (!transport_is_open(c->tp) || !c->b.complete)
		return 0;
	/* not conn_close: the batch's state stays (a complete share stays
	 * complete, its replies readable) */
	transport_close(c->tp);
	c->in_len = 0;
	c->hs_skip = 0;
	return 1;
}

int mcconn_done(const struct mc_conn *c)
{
	return c->b.complete;
}

int mcconn_batch_stale(const struct mc_conn *c)
{
	return c->b.ncmds > 0 && transport_is_open(c->tp) && c->b.meta != c->meta;
}

enum mc_reply mcconn_reply(const struct mc_conn *c, size_t i)
{
	return mccodec_reply(&c->b, i);
}

const char *mcconn_last_reply_text(const struct mc_conn *c)
{
	return c->b.last_reply;
}

const char *mcconn_partial_reply(struct mc_conn *c)
{
	char text[96];

	c->partial[0] = '\0';
	if (c->in_len > 0 && !c->b.complete && transport_is_open(c->tp)) {
		mccodec_escape(text, sizeof(text), c->in, c->in_len < 64 ? c->in_len : 64);
		snprintf(c->partial, sizeof(c->partial),
			 "stopped in the middle of a reply line: '%s%s' and no CRLF", text,
			 c->in_len > 64 ? "..." : "");
	}
	return c->partial;
}

/* The replies in c->in (mccodec_parse): 0, or -EPROTO with the reason in
 * errbuf. */
static int parse(struct mc_conn *c)
{
	return mccodec_parse(&c->b, c->in, &c->in_len, c->in_cap, c->errbuf, sizeof(c->errbuf));
}

/* The transport's reason into errbuf, and the connection closed. */
static int io_fail(struct mc_conn *c, ssize_t rc)
{
	snprintf(c->errbuf, sizeof(c->errbuf), "%s", transport_error(c->tp));
	conn_close(c);
	return rc < 0 ? (int)rc : -EIO;
}

/* One round of non-blocking I/O after poll said the socket is ready (or
 * the TLS library holds decrypted bytes: transport_pending). */
static int pump(struct mc_conn *c, short revents, int64_t send_until_ms)
{
	ssize_t n;

	if (transport_can_send(c->tp, revents)) {
		/* the fence is checked before every send(): past it, not one
		 * more byte leaves (mcconn.h) */
		while (c->b.out_sent < c->b.out_len && k2mc_now_ms() < send_until_ms) {
			size_t end = c->b.out_len;

			/* TLS: the batch's last CRLF goes in a TLS record of its
			 * own. memcached 1.6.18 reads one record at a time into
			 * a bounded buffer and waits for the socket when it is
			 * done: plaintext left inside its OpenSSL (a record
			 * bigger than the room it read into) wakes nothing, and
			 * the batch's tail would sit there unanswered (measured:
			 * batches over ~30 KB hung). A last record of 2 bytes
			 * is always read whole, and its arrival wakes it for
			 * what an earlier record left. */
			if (transport_is_tls(c->tp) && c->b.out_len - c->b.out_sent > TLS_TAIL)
				end = c->b.out_len - TLS_TAIL;
			n = transport_send(c->tp, c->b.out + c->b.out_sent, end - c->b.out_sent);
			if (n == TRANSPORT_AGAIN)
				break;
			if (n <= 0)
				return io_fail(c, n);
			c->b.out_sent += (size_t)n;
		}
	}
	if (transport_can_recv(c->tp, revents) || transport_pending(c->tp)) {
		for (;;) {
			n = transport_recv(c->tp, c->in + c->in_len, c->in_cap - c->in_len);
			if (n == TRANSPORT_AGAIN)
				break;
			if (n == 0) {
				int mid = c->in_len > 0 || c->b.nreplies > 0;

				snprintf(c->errbuf, sizeof(c->errbuf), "server closed the connection%s",
					 mid ? " in the middle of its replies" : "");
				conn_close(c);
				return -ECONNRESET;
			}
			if (n < 0)
				return io_fail(c, n);
			c->in_len += (size_t)n;
			if (parse(c) != 0) {
				conn_close(c);
				return -EPROTO;
			}
			if (c->b.complete)
				break;
		}
	}
	return 0;
}

void mcconn_exchange(struct mc_conn **conns, size_t n, int slice_ms, int64_t send_until_ms,
		     enum mc_exchange *results)
{
	struct pollfd pfds[64];
	size_t idx[64];
	int64_t deadline = k2mc_now_ms() + slice_ms;

	for (size_t i = 0; i < n; i++) {
		struct mc_conn *c = conns[i];

		mccodec_terminate(&c->b);
		if (c->b.complete) {
			results[i] = MC_X_DONE;
		} else if (!transport_is_open(c->tp)) {
			results[i] = MC_X_FAILED;
		} else if (c->b.meta != c->meta) {
			/* never meta commands to a classic server: their values
			 * could run as commands (mcconn_batch_stale) */
			snprintf(c->errbuf, sizeof(c->errbuf),
				 "batch queued in the %s dialect, the connection speaks %s: not sent",
				 c->b.meta ? "meta" : "classic", c->meta ? "meta" : "classic");
			conn_close(c);
			results[i] = MC_X_FAILED;
		} else {
			results[i] = MC_X_PENDING;
		}
	}
	for (;;) {
		int may_send = k2mc_now_ms() < send_until_ms;
		size_t np = 0;
		int left = ms_left(deadline), rc, pending = 0;

		for (size_t i = 0; i < n && np < 64; i++) {
			struct mc_conn *c = conns[i];
			short want = POLLIN;

			if (results[i] != MC_X_PENDING)
				continue;
			if (may_send && c->b.out_sent < c->b.out_len)
				want |= POLLOUT;
			pfds[np].fd = transport_fd(c->tp);
			pfds[np].events = transport_events(c->tp, want);
			pfds[np].revents = 0;
			/* decrypted bytes inside OpenSSL do not wake poll() */
			pending |= transport_pending(c->tp);
			idx[np++] = i;
			if (transport_is_cancelled(c->tp))
				return; /* the owner gave up: the rest stays pending */
		}
		if (np == 0 || (left <= 0 && !pending))
			return;
		/* the cancel flags are looked at every CANCEL_SLICE_MS */
		rc = poll(pfds, np, pending ? 0 : left < CANCEL_SLICE_MS ? left : CANCEL_SLICE_MS);
		if (rc < 0 && errno != EINTR)
			return;
		for (size_t k = 0; (rc > 0 || pending) && k < np; k++) {
			struct mc_conn *c = conns[idx[k]];

			if (pfds[k].revents == 0 && !transport_pending(c->tp))
				continue;
			if (pump(c, pfds[k].revents, send_until_ms) != 0)
				results[idx[k]] = MC_X_FAILED;
			else if (c->b.complete)
				results[idx[k]] = MC_X_DONE;
		}
	}
}

/* ---- fuzzing and tests -------------------------------------------------------*/

int mcconn_feed(struct mc_conn *c, const void *bytes, size_t len)
{
	const char *p = bytes;

	mccodec_terminate(&c->b);
	c->b.out_sent = c->b.out_len;
	while (!c->b.complete) {
		size_t room = c->in_cap - c->in_len, k = len < room ? len : room;

		memcpy(c->in + c->in_len, p, k);
		c->in_len += k;
		p += k;
		len -= k;
		if (parse(c) != 0) {
			conn_close(c);
			return -EPROTO;
		}
		/* a verbose replay restarts the round: count it as sent */
		if (c->b.out_sent == 0)
			c->b.out_sent = c->b.out_len;
		if (len == 0)
			break;
	}
	if (c->b.complete && len > 0) {
		snprintf(c->errbuf, sizeof(c->errbuf), "unexpected bytes after the last reply");
		conn_close(c);
		return -EPROTO;
	}
	return 0;
}
