/* Pipelined memcached text protocol over a non-blocking socket; see mcconn.h.
 * Not key routing or batching policy (writer.c).
 * Two dialects, chosen per connection when it is made, from the server's
 * "version" reply (never from "mn": 1.5.19 to 1.6.9 answer "MN" too, but
 * read "ms <key> 9 q" as a bad flag and then run the 9-byte value as the
 * next command line; a value "flush_all" flushed the cache):
 *  - meta, for memcached >= 1.6.10 (the release that made the syntax
 *    "ms <key> <datalen> <flags>*"): "ms key len q" / "md key q O<i>", then
 *    "mn". Quiet mode suppresses the success replies, so the server writes
 *    and we parse one "MN" per batch instead of one line per record
 *    (measured here: 40% less memcached CPU, 4x less client CPU than
 *    "set"/"STORED"). A delete of a missing key still answers "NF O<i>".
 *    Error lines carry no opaque, so a batch that gets one is sent again with
 *    each 'q' flipped to 'k' (return key): every command then answers, in
 *    order, and each error is placed.
 *  - classic "set"/"delete" for everything else (older, unknown, proxies):
 *    one reply line per command; the value is a length-prefixed data block
 *    that no server can read as a command.
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
#include "workers/transport.h"

/* The reply buffer; also the longest reply line accepted. */
#define IN_CAP (64 * 1024)
/* Room for the "mn\r\n" that ends a meta batch, reserved by every queue call
 * so that mcconn_exchange never allocates. */
#define MN_ROOM 4
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

	/* meta dialect (1) or classic (0): of the connection, decided by
	 * mcconn_ensure (a guess of 1 before the first connect, then the last
	 * connection's), and of the commands queued now, fixed by the first
	 * command of a batch */
	int meta;
	int batch_meta;
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
	/* meta: the batch was terminated with "mn" / is being replayed verbose /
	 * an error line arrived while quiet / the last command, sent without
	 * 'q', has answered (its reply must come before "MN": a server that
	 * answers "MN" before it read the whole batch is caught by it) */
	int terminated, verbose, quiet_error, last_answered;
	/* every command of the batch has its reply */
	int complete;

	/* commands of the current batch, serialized */
	char *out;
	size_t out_len, out_cap, out_sent;
	/* one slot per queued command; MC_NONE until its reply is read */
	uint8_t *replies;
	/* per command: 1 = delete (HD means DELETED, not STORED) */
	uint8_t *is_delete;
	/* meta: offset of each command's 'q' flag in out, flipped on replay;
	 * size_t, as a batch may pass 4 GiB */
	size_t *qpos;
	size_t ncmds, nreplies, cmd_cap;

	/* bytes received and not yet parsed; hs_skip: handshake only, the
	 * length of the line handed out last, dropped by the next read */
	char *in;
	size_t in_len, in_cap, hs_skip;
	/* the last error reply of this batch, escaped; partial: for
	 * mcconn_partial_reply */
	char last_reply[256];
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
	if (addr->is_unix)
		snprintf(c->name, sizeof(c->name), "%s", addr->host);
	else if (strchr(addr->host, ':') != NULL)
		snprintf(c->name, sizeof(c->name), "[%s]:%d", addr->host, addr->port);
	else
		snprintf(c->name, sizeof(c->name), "%s:%d", addr->host, addr->port);
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
	c->complete = 1;
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
	c->out_sent = 0;
	c->nreplies = 0;
	c->quiet_error = 0;
	c->last_answered = 0;
	c->complete = c->ncmds == 0;
	if (c->replies != NULL)
		memset(c->replies, MC_NONE, c->ncmds);
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
	free(c->out);
	free(c->replies);
	free(c->is_delete);
	free(c->qpos);
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

/* Text from the server into dst for a log line: printable ASCII as is,
 * "\r" "\n" "\t" "\\" and "\xNN" for every other byte, so that a reply can
 * neither break a log line nor send a terminal control sequence. Cut with
 * "..." when it does not fit (cap >= 4). */
static void escape(char *dst, size_t cap, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char b = (unsigned char)src[i];
		char e[4];
		size_t n = 2;

		e[0] = '\\';
		if (b >= 0x20 && b < 0x7f && b != '\\') {
			e[0] = (char)b;
			n = 1;
		} else if (b == '\r') {
			e[1] = 'r';
		} else if (b == '\n') {
			e[1] = 'n';
		} else if (b == '\t') {
			e[1] = 't';
		} else if (b == '\\') {
			e[1] = '\\';
		} else {
			e[1] = 'x';
			e[2] = hex[b >> 4];
			e[3] = hex[b & 15];
			n = 4;
		}
		/* the previous round left room for "..." and the NUL */
		if (o + n + (i + 1 < len ? 3 : 0) + 1 > cap) {
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(dst + o, e, n);
		o += n;
	}
	dst[o] = '\0';
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

/* Decimal digits at s[0, len) into *v: how many were read (0 if none, or
 * if the number passes max). */
static size_t get_digits(const char *s, size_t len, uint64_t max, uint64_t *v)
{
	size_t i = 0;

	*v = 0;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
		uint64_t d = (uint64_t)(s[i] - '0');

		if (*v > (max - d) / 10)
			return 0;
		*v = *v * 10 + d;
	}
	return i;
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
		escape(text, sizeof(text), c->in, 48);
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
		size_t n = get_digits(s + pos, len - pos, 1000000, &v[i]);

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
		escape(text, sizeof(text), line, len);
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

		escape(text, sizeof(text), line, len);
		snprintf(c->errbuf, sizeof(c->errbuf), "connect: server refused: '%s'", text);
		conn_close(c);
		return -EUSERS;
	}
	/* "ERROR", "CLIENT_ERROR ...", a stranger's line: classic */
	c->meta = 0;
	if (starts(line, len, "VERSION ")) {
		escape(c->version, sizeof(c->version), line + 8, len - 8);
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
	static const char key[] = "STAT item_size_max ";
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
		if (starts(line, len, key) &&
		    get_digits(line + sizeof(key) - 1, len - (sizeof(key) - 1), SIZE_MAX, &v) ==
			    len - (sizeof(key) - 1))
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

		escape(text, sizeof(text), c->in + c->hs_skip, c->in_len - c->hs_skip);
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
		if (c->out_sent > 0 || !transport_idle_broken(c->tp))
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

/* ---- queueing ----------------------------------------------------------------*/

static int reserve(char **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 4096;
	char *n;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
	n = realloc(*buf, ncap);
	if (n == NULL)
		return -ENOMEM;
	*buf = n;
	*cap = ncap;
	return 0;
}

/* Room for one more command in the per-command arrays. Each array that
 * grew keeps its new size; cmd_cap moves only when all three have. */
static int cmd_room(struct mc_conn *c)
{
	size_t ncap = c->cmd_cap ? c->cmd_cap * 2 : 1024;
	uint8_t *r, *d;
	size_t *q;

	if (c->ncmds < c->cmd_cap)
		return 0;
	if (ncap > SIZE_MAX / sizeof(*q))
		return -ENOMEM;
	r = realloc(c->replies, ncap);
	if (r == NULL)
		return -ENOMEM;
	c->replies = r;
	d = realloc(c->is_delete, ncap);
	if (d == NULL)
		return -ENOMEM;
	c->is_delete = d;
	q = realloc(c->qpos, ncap * sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	c->qpos = q;
	c->cmd_cap = ncap;
	return 0;
}

/* Room for a command of at most len bytes plus the batch's "mn". */
static int room(struct mc_conn *c, size_t len)
{
	if (len > SIZE_MAX / 4 || c->out_len > SIZE_MAX / 4)
		return -ENOMEM;
	if (reserve(&c->out, &c->out_cap, c->out_len + len + MN_ROOM) != 0 || cmd_room(c) != 0)
		return -ENOMEM;
	return 0;
}

static void add_cmd(struct mc_conn *c, int is_delete, size_t qpos)
{
	c->complete = 0;
	c->replies[c->ncmds] = MC_NONE;
	c->is_delete[c->ncmds] = (uint8_t)is_delete;
	c->qpos[c->ncmds] = qpos;
	c->ncmds++;
}

/* Decimal digits of v at p; returns their count. snprintf showed up in the
 * writer's profile at 5% for the numbers of each command line. */
static size_t put_digits(char *p, uint64_t v)
{
	char tmp[24];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (size_t i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

/* " <decimal>" (classic arguments) or " <tag><decimal>" (meta flags). */
static size_t put_num(char *p, uint64_t v)
{
	p[0] = ' ';
	return 1 + put_digits(p + 1, v);
}

static size_t put_flag(char *p, char tag, uint64_t v)
{
	p[0] = ' ';
	p[1] = tag;
	return 2 + put_digits(p + 2, v);
}

int mcconn_queue_set(struct mc_conn *c, const char *key, size_t klen, const void *val,
		     size_t vlen, uint32_t flags, uint32_t exptime)
{
	char *p, *start;
	size_t qpos = 0;

	/* a command line is at most 250 bytes of key plus 3 numbers of at most
	 * 20 digits and their separators: 80 bytes of room beyond key + value */
	if (vlen > SIZE_MAX / 4 || room(c, klen + vlen + 80) != 0)
		return -ENOMEM;
	start = p = c->out + c->out_len;
	if (c->ncmds == 0)
		c->batch_meta = c->meta;
	if (c->batch_meta) {
		/* ms <key> <datalen> q [F<flags>] [T<ttl>] (>= 1.6.10 only) */
		memcpy(p, "ms ", 3);
		memcpy(p + 3, key, klen);
		p += 3 + klen;
		p += put_num(p, vlen);
		qpos = (size_t)(p - c->out) + 1;
		memcpy(p, " q", 2);
		p += 2;
		if (flags != 0)
			p += put_flag(p, 'F', flags);
		if (exptime != 0)
			p += put_flag(p, 'T', exptime);
	} else {
		/* set <key> <flags> <exptime> <bytes>: the data block follows */
		memcpy(p, "set ", 4);
		memcpy(p + 4, key, klen);
		p += 4 + klen;
		p += put_num(p, flags);
		p += put_num(p, exptime);
		p += put_num(p, vlen);
	}
	memcpy(p, "\r\n", 2);
	memcpy(p + 2, val, vlen);
	memcpy(p + 2 + vlen, "\r\n", 2);
	c->out_len += (size_t)(p + 4 + vlen - start);
	add_cmd(c, 0, qpos);
	return 0;
}

int mcconn_queue_delete(struct mc_conn *c, const char *key, size_t klen)
{
	char *p, *start;
	size_t qpos = 0;

	if (room(c, klen + 48) != 0)
		return -ENOMEM;
	start = p = c->out + c->out_len;
	if (c->ncmds == 0)
		c->batch_meta = c->meta;
	if (c->batch_meta) {
		/* md <key> q O<index>: a miss answers "NF O<index>" even quietly */
		memcpy(p, "md ", 3);
		memcpy(p + 3, key, klen);
		p += 3 + klen;
		qpos = (size_t)(p - c->out) + 1;
		memcpy(p, " q", 2);
		p += 2;
		p += put_flag(p, 'O', c->ncmds);
	} else {
		memcpy(p, "delete ", 7);
		memcpy(p + 7, key, klen);
		p += 7 + klen;
	}
	memcpy(p, "\r\n", 2);
	c->out_len += (size_t)(p + 2 - start);
	add_cmd(c, 1, qpos);
	return 0;
}

int mcconn_queue_invalidate(struct mc_conn *c, const char *key, size_t klen, uint32_t grace_s)
{
	char *p, *start;
	size_t qpos;

	if (!(c->ncmds == 0 ? c->meta : c->batch_meta))
		return -EPROTONOSUPPORT;
	if (room(c, klen + 64) != 0)
		return -ENOMEM;
	start = p = c->out + c->out_len;
	if (c->ncmds == 0)
		c->batch_meta = c->meta;
	/* md <key> q O<index> I T<grace>: answered as a delete is (HD, or
	 * "NF O<index>" for a missing key even quietly) */
	memcpy(p, "md ", 3);
	memcpy(p + 3, key, klen);
	p += 3 + klen;
	qpos = (size_t)(p - c->out) + 1;
	memcpy(p, " q", 2);
	p += 2;
	p += put_flag(p, 'O', c->ncmds);
	memcpy(p, " I", 2);
	p += 2;
	p += put_flag(p, 'T', grace_s);
	memcpy(p, "\r\n", 2);
	c->out_len += (size_t)(p + 2 - start);
	add_cmd(c, 1, qpos);
	return 0;
}

size_t mcconn_queued_bytes(const struct mc_conn *c)
{
	return c->out_len;
}

size_t mcconn_queued(const struct mc_conn *c)
{
	return c->ncmds;
}

void mcconn_rewind(struct mc_conn *c)
{
	c->out_sent = 0;
	c->nreplies = 0;
	c->quiet_error = 0;
	c->last_answered = 0;
	c->complete = c->ncmds == 0;
	if (c->replies != NULL)
		memset(c->replies, MC_NONE, c->ncmds);
}

void mcconn_reset_batch(struct mc_conn *c)
{
	/* Replies still owed, or a command cut in the middle: the server would
	 * answer them into the next batch (a late "MN" would complete it, and
	 * records never written would be acknowledged). Only a new connection
	 * is a clean slate. Closing is not a failure: errbuf is untouched. */
	if (transport_is_open(c->tp) && c->out_sent > 0 && !c->complete)
		conn_close(c);
	c->out_len = 0;
	c->out_sent = 0;
	c->ncmds = 0;
	c->nreplies = 0;
	c->terminated = 0;
	c->verbose = 0;
	c->quiet_error = 0;
	c->last_answered = 0;
	c->complete = 1;
	c->last_reply[0] = '\0';
}

int mcconn_release(struct mc_conn *c)
{
	/* replies still owed, or commands still to send: the exchange's (a
	 * close there is a failure, and a share not sent needs the slot now) */
	if (!transport_is_open(c->tp) || !c->complete)
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
	return c->complete;
}

int mcconn_batch_stale(const struct mc_conn *c)
{
	return c->ncmds > 0 && transport_is_open(c->tp) && c->batch_meta != c->meta;
}

enum mc_reply mcconn_reply(const struct mc_conn *c, size_t i)
{
	return i < c->ncmds ? (enum mc_reply)c->replies[i] : MC_NONE;
}

const char *mcconn_last_reply_text(const struct mc_conn *c)
{
	return c->last_reply;
}

const char *mcconn_partial_reply(struct mc_conn *c)
{
	char text[96];

	c->partial[0] = '\0';
	if (c->in_len > 0 && !c->complete && transport_is_open(c->tp)) {
		escape(text, sizeof(text), c->in, c->in_len < 64 ? c->in_len : 64);
		snprintf(c->partial, sizeof(c->partial),
			 "stopped in the middle of a reply line: '%s%s' and no CRLF", text,
			 c->in_len > 64 ? "..." : "");
	}
	return c->partial;
}

/* ---- replies ----------------------------------------------------------------*/

/* What meta_line / classic_line return besides 0: the line is not a reply
 * any command of the batch can produce (parse_replies names it), or the
 * reason is already in errbuf. */
#define BAD_LINE (-1)
#define BAD_SAID (-2)

/* Error lines are the same in both dialects. Returns the reply, or -1 if
 * the line is not an error line. Only "object too large" is known to be the
 * record's fault; k2mc checked every command before queueing it, so any
 * CLIENT_ERROR or ERROR is a server (or proxy) failure, retried. */
static int classify_error(struct mc_conn *c, const char *line, size_t len)
{
	int r;

	if (starts(line, len, "SERVER_ERROR")) {
		if (starts(line, len, "SERVER_ERROR object too large"))
			r = MC_TOO_LARGE;
		else if (starts(line, len, "SERVER_ERROR out of memory"))
			r = MC_OOM;
		else
			r = MC_SERVER_ERROR;
	} else if (starts(line, len, "CLIENT_ERROR") || (len == 5 && starts(line, len, "ERROR")) ||
		   starts(line, len, "ERROR ")) {
		r = MC_CLIENT_ERROR;
	} else {
		return -1;
	}
	escape(c->last_reply, sizeof(c->last_reply), line, len);
	return r;
}

/* Classic dialect: one line per command. */
static int classic_line(struct mc_conn *c, const char *line, size_t len)
{
	int r = -1;

	if (len == 6 && memcmp(line, "STORED", 6) == 0)
		r = MC_STORED;
	else if (len == 7 && memcmp(line, "DELETED", 7) == 0)
		r = MC_DELETED;
	else if (len == 9 && memcmp(line, "NOT_FOUND", 9) == 0)
		r = MC_NOT_FOUND;
	else
		r = classify_error(c, line, len);
	if (r < 0 || c->nreplies == c->ncmds)
		return BAD_LINE;
	c->replies[c->nreplies++] = (uint8_t)r;
	c->complete = c->nreplies == c->ncmds;
	return 0;
}

/* Flips every command's 'q' to 'k' and resends the batch: every command
 * then answers, so an error line can be matched to its command. */
static void replay_verbose(struct mc_conn *c)
{
	for (size_t i = 0; i < c->ncmds; i++)
		c->out[c->qpos[i]] = 'k';
	c->verbose = 1;
	c->quiet_error = 0;
	c->last_answered = 0;
	c->out_sent = 0;
	c->nreplies = 0;
	memset(c->replies, MC_NONE, c->ncmds);
}

/* Meta dialect: quiet replies until "MN", or one line per command when
 * replaying verbose. In a quiet batch the last command is sent with 'k'
 * instead of 'q' (mcconn_exchange), so it answers: "HD k<key>", or for a
 * delete of a missing key "NF k<key> O<i>". */
static int meta_line(struct mc_conn *c, const char *line, size_t len)
{
	size_t last = c->ncmds - 1;
	int r;

	if (len == 2 && memcmp(line, "MN", 2) == 0) {
		/* "mn" is the last thing sent: an "MN" before it went out
		 * cannot be this batch's */
		if (c->out_sent < c->out_len) {
			snprintf(c->errbuf, sizeof(c->errbuf),
				 "answered 'MN' before k2mc had sent the whole batch (%zu of %zu "
				 "bytes): replies to commands it had not read",
				 c->out_sent, c->out_len);
			return BAD_SAID;
		}
		if (c->verbose) {
			if (c->nreplies != c->ncmds)
				return BAD_LINE;
		} else if (c->quiet_error) {
			replay_verbose(c);
			return 0;
		} else if (!c->last_answered) {
			/* the last command answers before "MN" is even read:
			 * without its reply, this "MN" came early */
			snprintf(c->errbuf, sizeof(c->errbuf),
				 "answered 'MN' before the reply to the batch's last command: it "
				 "answered before reading the whole batch");
			return BAD_SAID;
		} else {
			for (size_t i = 0; i < c->ncmds; i++) {
				if (c->replies[i] == MC_NONE)
					c->replies[i] = c->is_delete[i] ? MC_DELETED : MC_STORED;
			}
			c->nreplies = c->ncmds;
		}
		c->complete = 1;
		return 0;
	}
	if (!c->verbose) {
		/* quiet: only misses of deletes ("NF O<i>"), errors and the
		 * last command speak */
		if (starts(line, len, "NF O")) {
			uint64_t i;

			if (get_digits(line + 4, len - 4, SIZE_MAX, &i) != len - 4 ||
			    i >= c->ncmds || !c->is_delete[i] || c->replies[i] != MC_NONE)
				return BAD_LINE;
			c->replies[i] = MC_NOT_FOUND;
			if (i == last)
				c->last_answered = 1;
			return 0;
		}
		if ((len == 2 || starts(line, len, "HD ") || starts(line, len, "NF ")) &&
		    (starts(line, len, "HD") || starts(line, len, "NF"))) {
			if (c->last_answered || c->replies[last] != MC_NONE ||
			    (line[0] == 'N' && !c->is_delete[last]))
				return BAD_LINE;
			c->replies[last] = line[0] == 'N' ? MC_NOT_FOUND
					   : c->is_delete[last] ? MC_DELETED
								 : MC_STORED;
			c->last_answered = 1;
			return 0;
		}
		if (classify_error(c, line, len) < 0)
			return BAD_LINE;
		c->quiet_error = 1;
		return 0;
	}
	if (c->nreplies == c->ncmds)
		return BAD_LINE;
	if (starts(line, len, "HD"))
		r = c->is_delete[c->nreplies] ? MC_DELETED : MC_STORED;
	else if (starts(line, len, "NF"))
		r = MC_NOT_FOUND;
	else if ((r = classify_error(c, line, len)) < 0)
		return BAD_LINE;
	c->replies[c->nreplies++] = (uint8_t)r;
	return 0;
}

/* Parses complete lines from c->in. Returns 0, or -EPROTO (reason in
 * errbuf) for a reply that no command of the batch can produce: the stream
 * cannot be trusted. */
static int parse_replies(struct mc_conn *c)
{
	char text[160];
	size_t pos = 0;

	while (!c->complete) {
		char *nl = memchr(c->in + pos, '\n', c->in_len - pos);
		size_t len;
		int rc;

		if (nl == NULL)
			break;
		len = (size_t)(nl - (c->in + pos));
		if (len > 0 && c->in[pos + len - 1] == '\r')
			len--;
		if (c->out_sent == 0) {
			/* nothing of this round is sent yet (a verbose replay
			 * not begun): no line can be an answer to it */
			escape(text, sizeof(text), c->in + pos, len);
			snprintf(c->errbuf, sizeof(c->errbuf),
				 "reply '%s' to a command not sent yet", text);
			return -EPROTO;
		}
		rc = (c->batch_meta ? meta_line : classic_line)(c, c->in + pos, len);
		if (rc == BAD_LINE) {
			escape(text, sizeof(text), c->in + pos, len);
			snprintf(c->errbuf, sizeof(c->errbuf), "unexpected reply '%s'", text);
		}
		if (rc != 0)
			return -EPROTO;
		pos = (size_t)(nl - c->in) + 1;
	}
	if (c->complete && pos < c->in_len) {
		escape(text, sizeof(text), c->in + pos, c->in_len - pos);
		snprintf(c->errbuf, sizeof(c->errbuf), "unexpected bytes after the last reply: '%s'",
			 text);
		return -EPROTO;
	}
	memmove(c->in, c->in + pos, c->in_len - pos);
	c->in_len -= pos;
	if (c->in_len == c->in_cap) {
		/* no reply to set/delete is that long */
		escape(text, sizeof(text), c->in, 32);
		snprintf(c->errbuf, sizeof(c->errbuf), "reply line over %zu KiB without CRLF: '%s...'",
			 c->in_cap / 1024, text);
		return -EPROTO;
	}
	return 0;
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
		while (c->out_sent < c->out_len && k2mc_now_ms() < send_until_ms) {
			size_t end = c->out_len;

			/* TLS: the batch's last CRLF goes in a TLS record of its
			 * own. memcached 1.6.18 reads one record at a time into
			 * a bounded buffer and waits for the socket when it is
			 * done: plaintext left inside its OpenSSL (a record
			 * bigger than the room it read into) wakes nothing, and
			 * the batch's tail would sit there unanswered (measured:
			 * batches over ~30 KB hung). A last record of 2 bytes
			 * is always read whole, and its arrival wakes it for
			 * what an earlier record left. */
			if (transport_is_tls(c->tp) && c->out_len - c->out_sent > TLS_TAIL)
				end = c->out_len - TLS_TAIL;
			n = transport_send(c->tp, c->out + c->out_sent, end - c->out_sent);
			if (n == TRANSPORT_AGAIN)
				break;
			if (n <= 0)
				return io_fail(c, n);
			c->out_sent += (size_t)n;
		}
	}
	if (transport_can_recv(c->tp, revents) || transport_pending(c->tp)) {
		for (;;) {
			n = transport_recv(c->tp, c->in + c->in_len, c->in_cap - c->in_len);
			if (n == TRANSPORT_AGAIN)
				break;
			if (n == 0) {
				snprintf(c->errbuf, sizeof(c->errbuf),
					 "server closed the connection%s",
					 c->in_len > 0 || c->nreplies > 0 ? " in the middle of its replies"
									  : "");
				conn_close(c);
				return -ECONNRESET;
			}
			if (n < 0)
				return io_fail(c, n);
			c->in_len += (size_t)n;
			if (parse_replies(c) != 0) {
				conn_close(c);
				return -EPROTO;
			}
			if (c->complete)
				break;
		}
	}
	return 0;
}

/* Ends a meta batch with "mn" (room reserved by every queue call, MN_ROOM),
 * its last command sent without 'q' so that it answers before "MN". */
static void terminate_meta(struct mc_conn *c)
{
	if (!c->verbose)
		c->out[c->qpos[c->ncmds - 1]] = 'k';
	memcpy(c->out + c->out_len, "mn\r\n", 4);
	c->out_len += 4;
	c->terminated = 1;
}

void mcconn_exchange(struct mc_conn **conns, size_t n, int slice_ms, int64_t send_until_ms,
		     enum mc_exchange *results)
{
	struct pollfd pfds[64];
	size_t idx[64];
	int64_t deadline = k2mc_now_ms() + slice_ms;

	for (size_t i = 0; i < n; i++) {
		struct mc_conn *c = conns[i];

		if (c->batch_meta && !c->terminated && c->ncmds > 0)
			terminate_meta(c);
		if (c->complete) {
			results[i] = MC_X_DONE;
		} else if (!transport_is_open(c->tp)) {
			results[i] = MC_X_FAILED;
		} else if (c->batch_meta != c->meta) {
			/* never meta commands to a classic server: their values
			 * could run as commands (mcconn_batch_stale) */
			snprintf(c->errbuf, sizeof(c->errbuf),
				 "batch queued in the %s dialect, the connection speaks %s: not sent",
				 c->batch_meta ? "meta" : "classic", c->meta ? "meta" : "classic");
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
			if (may_send && c->out_sent < c->out_len)
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
			else if (c->complete)
				results[idx[k]] = MC_X_DONE;
		}
	}
}

/* ---- fuzzing and tests -------------------------------------------------------*/

int mcconn_feed(struct mc_conn *c, const void *bytes, size_t len)
{
	const char *p = bytes;

	if (c->batch_meta && !c->terminated && c->ncmds > 0)
		terminate_meta(c);
	c->out_sent = c->out_len;
	while (!c->complete) {
		size_t room = c->in_cap - c->in_len, k = len < room ? len : room;

		memcpy(c->in + c->in_len, p, k);
		c->in_len += k;
		p += k;
		len -= k;
		if (parse_replies(c) != 0) {
			conn_close(c);
			return -EPROTO;
		}
		/* a verbose replay restarts the round: count it as sent */
		if (c->out_sent == 0)
			c->out_sent = c->out_len;
		if (len == 0)
			break;
	}
	if (c->complete && len > 0) {
		snprintf(c->errbuf, sizeof(c->errbuf), "unexpected bytes after the last reply");
		conn_close(c);
		return -EPROTO;
	}
	return 0;
}
