/* Pipelined memcached text protocol over a non-blocking socket; see mcconn.h.
 * Two dialects, chosen per connection when it is made:
 *  - meta (memcached >= 1.6): "ms key len q" / "md key q O<i>", then "mn". Quiet
 *    mode suppresses the success replies, so the server writes and we parse
 *    one "MN" per batch instead of one line per record (measured here: 40%
 *    less memcached CPU, 4x less client CPU than "set"/"STORED"). A delete of
 *    a missing key still answers "NF O<i>". Error lines carry no opaque, so a
 *    batch that gets one is sent again with each 'q' flipped to 'k' (return
 *    key): every command then answers, in order, and each error is placed.
 *  - classic "set"/"delete" for older servers: one reply line per command.
 * Replies are matched to commands by position: memcached answers the commands
 * of one connection in the order it received them. */
#include "workers/mcconn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct mc_conn {
	char host[256];
	char port[8];
	char name[272];
	int fd;
	char errbuf[512];

	/* meta dialect (1) or classic (0): of the connection, decided by
	 * mcconn_ensure (a guess of 1 before the first connect), and of the
	 * commands queued now, fixed by the first command of a batch */
	int meta;
	int batch_meta;
	/* meta: the batch was terminated with "mn" / is being replayed verbose /
	 * an error line arrived while quiet */
	int terminated, verbose, quiet_error;
	/* every command of the batch has its reply */
	int complete;

	/* commands of the current batch, serialized */
	char *out;
	size_t out_len, out_cap, out_sent;
	/* one slot per queued command; MC_NONE until its reply is read */
	uint8_t *replies;
	/* per command: 1 = delete (HD means DELETED, not STORED) */
	uint8_t *is_delete;
	/* meta: offset of each command's 'q' flag in out, flipped on replay */
	uint32_t *qpos;
	size_t ncmds, nreplies, cmd_cap;

	/* bytes received and not yet parsed */
	char *in;
	size_t in_len, in_cap;
	char last_reply[128];
};

struct mc_conn *mcconn_new(const char *host, int port)
{
	struct mc_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	snprintf(c->host, sizeof(c->host), "%s", host);
	snprintf(c->port, sizeof(c->port), "%d", port);
	snprintf(c->name, sizeof(c->name), "%s:%d", host, port);
	c->fd = -1;
	c->meta = 1;
	c->complete = 1;
	c->in_cap = 64 * 1024;
	c->in = malloc(c->in_cap);
	if (c->in == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

static void conn_close(struct mc_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->in_len = 0;
	/* a resend starts from the first command on the new connection */
	c->out_sent = 0;
	c->nreplies = 0;
	c->quiet_error = 0;
	c->complete = c->ncmds == 0;
	if (c->replies != NULL)
		memset(c->replies, MC_NONE, c->ncmds);
}

void mcconn_free(struct mc_conn *c)
{
	if (c == NULL)
		return;
	conn_close(c);
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
	return c->fd >= 0;
}

static int fail(struct mc_conn *c, int err, const char *what)
{
	snprintf(c->errbuf, sizeof(c->errbuf), "%s: %s", what, strerror(err));
	conn_close(c);
	return -err;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Blocking request/response on a fresh connection (handshakes only). */
static int roundtrip(struct mc_conn *c, const char *req, char *buf, size_t cap,
		     const char *end, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	size_t len = 0, rl = strlen(req);
	struct pollfd pfd;

	if (send(c->fd, req, rl, MSG_NOSIGNAL) != (ssize_t)rl)
		return fail(c, errno ? errno : EIO, "send");
	for (;;) {
		ssize_t n;
		int rc;

		buf[len] = '\0';
		if (strstr(buf, end) != NULL || strstr(buf, "ERROR\r\n") != NULL)
			return 0;
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		rc = poll(&pfd, 1, (int)(deadline - now_ms() > 0 ? deadline - now_ms() : 0));
		if (rc <= 0)
			return fail(c, rc == 0 ? ETIMEDOUT : errno, "handshake");
		n = recv(c->fd, buf + len, cap - 1 - len, 0);
		if (n <= 0)
			return fail(c, n == 0 ? ECONNRESET : errno, "handshake");
		len += (size_t)n;
		if (len == cap - 1)
			return fail(c, EPROTO, "handshake");
	}
}

/* memcached >= 1.6 answers "mn" with "MN"; older servers say "ERROR". */
static int probe_meta(struct mc_conn *c, int timeout_ms)
{
	char buf[256];
	int rc = roundtrip(c, "mn\r\n", buf, sizeof(buf), "MN\r\n", timeout_ms);

	if (rc != 0)
		return rc;
	c->meta = strcmp(buf, "MN\r\n") == 0;
	return 0;
}

int mcconn_meta(const struct mc_conn *c)
{
	return c->meta;
}

int mcconn_ensure(struct mc_conn *c, int timeout_ms)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	struct pollfd pfd;
	int one = 1, err = 0, rc;
	socklen_t elen = sizeof(err);
	/* A dead peer host (not a stopped process: its kernel still ACKs) breaks
	 * the connection after this long with unacknowledged data. */
	unsigned int user_timeout_ms = 30000;

	if (c->fd >= 0)
		return 0;
	rc = getaddrinfo(c->host, c->port, &hints, &ai);
	if (rc != 0) {
		snprintf(c->errbuf, sizeof(c->errbuf), "resolve %s: %s", c->host, gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		err = errno;
		freeaddrinfo(ai);
		return fail(c, err, "socket");
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
	rc = connect(c->fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (rc != 0 && errno != EINPROGRESS)
		return fail(c, errno, "connect");
	if (rc != 0) {
		pfd.fd = c->fd;
		pfd.events = POLLOUT;
		rc = poll(&pfd, 1, timeout_ms);
		if (rc == 0)
			return fail(c, ETIMEDOUT, "connect");
		if (rc < 0)
			return fail(c, errno, "connect");
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0)
			return fail(c, err ? err : errno, "connect");
	}
	c->errbuf[0] = '\0';
	return probe_meta(c, timeout_ms);
}

static int reserve(char **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 4096;
	char *n;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	n = realloc(*buf, ncap);
	if (n == NULL)
		return -ENOMEM;
	*buf = n;
	*cap = ncap;
	return 0;
}

static int add_cmd(struct mc_conn *c, int is_delete, size_t qpos)
{
	if (c->ncmds == c->cmd_cap) {
		size_t ncap = c->cmd_cap ? c->cmd_cap * 2 : 1024;
		uint8_t *r = realloc(c->replies, ncap);
		uint8_t *d;
		uint32_t *q;

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
	}
	c->complete = 0;
	c->replies[c->ncmds] = MC_NONE;
	c->is_delete[c->ncmds] = (uint8_t)is_delete;
	c->qpos[c->ncmds] = (uint32_t)qpos;
	c->ncmds++;
	return 0;
}

/* Allocation failure here is fatal by design: the buffers are bounded by
 * --batch times the item size and reused, so it can only happen at start. */
static void must(int rc)
{
	if (rc != 0) {
		fprintf(stderr, "k2mc: out of memory building a memcached batch\n");
		abort();
	}
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

void mcconn_queue_set(struct mc_conn *c, const char *key, size_t klen, const void *val,
		      size_t vlen, uint32_t flags, uint32_t exptime)
{
	char *p, *start;
	size_t qpos = 0;

	/* a command line is at most 250 bytes of key plus 3 numbers of at most
	 * 20 digits and their separators: 80 bytes of room beyond key + value */
	must(reserve(&c->out, &c->out_cap, c->out_len + klen + vlen + 80));
	start = p = c->out + c->out_len;
	if (c->ncmds == 0)
		c->batch_meta = c->meta;
	if (c->batch_meta) {
		/* ms <key> <datalen> q [F<flags>] [T<ttl>] */
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
	must(add_cmd(c, 0, qpos));
}

void mcconn_queue_delete(struct mc_conn *c, const char *key, size_t klen)
{
	char *p, *start;
	size_t qpos = 0;

	must(reserve(&c->out, &c->out_cap, c->out_len + klen + 48));
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
	must(add_cmd(c, 1, qpos));
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
	c->complete = c->ncmds == 0;
	memset(c->replies, MC_NONE, c->ncmds);
}

void mcconn_reset_batch(struct mc_conn *c)
{
	c->out_len = 0;
	c->out_sent = 0;
	c->ncmds = 0;
	c->nreplies = 0;
	c->terminated = 0;
	c->verbose = 0;
	c->quiet_error = 0;
	c->complete = 1;
}

int mcconn_done(const struct mc_conn *c)
{
	return c->complete;
}

int mcconn_batch_stale(const struct mc_conn *c)
{
	return c->ncmds > 0 && c->fd >= 0 && c->batch_meta != c->meta;
}

enum mc_reply mcconn_reply(const struct mc_conn *c, size_t i)
{
	return i < c->ncmds ? (enum mc_reply)c->replies[i] : MC_NONE;
}

const char *mcconn_last_reply_text(const struct mc_conn *c)
{
	return c->last_reply;
}

static int starts(const char *line, size_t len, const char *lit)
{
	size_t n = strlen(lit);

	return len >= n && memcmp(line, lit, n) == 0;
}

/* Error lines are the same in both dialects. Returns the reply, or -1 if
 * the line is not an error line. */
static int classify_error(struct mc_conn *c, const char *line, size_t len)
{
	if (!starts(line, len, "SERVER_ERROR") && !starts(line, len, "CLIENT_ERROR") &&
	    !(len == 5 && memcmp(line, "ERROR", 5) == 0))
		return -1;
	snprintf(c->last_reply, sizeof(c->last_reply), "%.*s", (int)len, line);
	if (starts(line, len, "SERVER_ERROR object too large"))
		return MC_TOO_LARGE;
	return line[0] == 'S' ? MC_SERVER_ERROR : MC_CLIENT_ERROR;
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
		return -EPROTO;
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
	c->out_sent = 0;
	c->nreplies = 0;
	memset(c->replies, MC_NONE, c->ncmds);
}

/* Meta dialect: quiet replies until "MN", or one line per command when
 * replaying verbose. */
static int meta_line(struct mc_conn *c, const char *line, size_t len)
{
	int r;

	if (len == 2 && memcmp(line, "MN", 2) == 0) {
		if (c->verbose) {
			if (c->nreplies != c->ncmds)
				return -EPROTO;
		} else if (c->quiet_error) {
			replay_verbose(c);
			return 0;
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
		/* quiet: only misses of deletes ("NF O<i>") and errors speak */
		if (starts(line, len, "NF O")) {
			unsigned long i = strtoul(line + 4, NULL, 10);

			if (i >= c->ncmds || !c->is_delete[i])
				return -EPROTO;
			c->replies[i] = MC_NOT_FOUND;
			return 0;
		}
		if (classify_error(c, line, len) < 0)
			return -EPROTO;
		c->quiet_error = 1;
		return 0;
	}
	if (c->nreplies == c->ncmds)
		return -EPROTO;
	if (starts(line, len, "HD"))
		r = c->is_delete[c->nreplies] ? MC_DELETED : MC_STORED;
	else if (starts(line, len, "NF"))
		r = MC_NOT_FOUND;
	else if ((r = classify_error(c, line, len)) < 0)
		return -EPROTO;
	c->replies[c->nreplies++] = (uint8_t)r;
	return 0;
}

/* Parses complete lines from c->in. Returns 0, or -EPROTO for a line that
 * no command of the batch can produce: the stream cannot be trusted. */
static int parse_replies(struct mc_conn *c)
{
	size_t pos = 0;

	while (!c->complete) {
		char *nl = memchr(c->in + pos, '\n', c->in_len - pos);
		size_t len;

		if (nl == NULL)
			break;
		len = (size_t)(nl - (c->in + pos));
		if (len > 0 && c->in[pos + len - 1] == '\r')
			len--;
		if ((c->batch_meta ? meta_line : classic_line)(c, c->in + pos, len) != 0) {
			snprintf(c->last_reply, sizeof(c->last_reply), "%.*s", (int)len, c->in + pos);
			return -EPROTO;
		}
		pos = (size_t)(nl - c->in) + 1;
	}
	if (c->complete && pos < c->in_len)
		return -EPROTO; /* bytes nobody asked for */
	memmove(c->in, c->in + pos, c->in_len - pos);
	c->in_len -= pos;
	if (c->in_len == c->in_cap)
		return -EPROTO; /* a 64 KiB line is not a reply to set/delete */
	return 0;
}

/* One round of non-blocking I/O after poll said the socket is ready. */
static int pump(struct mc_conn *c, short revents)
{
	ssize_t n;

	if (revents & POLLOUT) {
		while (c->out_sent < c->out_len) {
			n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				return fail(c, errno, "send");
			}
			c->out_sent += (size_t)n;
		}
	}
	if (revents & (POLLIN | POLLERR | POLLHUP)) {
		for (;;) {
			n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
			if (n == 0)
				return fail(c, ECONNRESET, "server closed the connection");
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				return fail(c, errno, "recv");
			}
			c->in_len += (size_t)n;
			if (parse_replies(c) != 0) {
				snprintf(c->errbuf, sizeof(c->errbuf), "unexpected reply '%s'",
					 c->last_reply);
				conn_close(c);
				return -EPROTO;
			}
			if (c->complete)
				break;
		}
	}
	return 0;
}

void mcconn_exchange(struct mc_conn **conns, size_t n, int slice_ms, enum mc_exchange *results)
{
	struct pollfd pfds[64];
	size_t idx[64];
	int64_t deadline = now_ms() + slice_ms;

	for (size_t i = 0; i < n; i++) {
		struct mc_conn *c = conns[i];

		if (c->batch_meta && !c->terminated && c->ncmds > 0) {
			must(reserve(&c->out, &c->out_cap, c->out_len + 4));
			memcpy(c->out + c->out_len, "mn\r\n", 4);
			c->out_len += 4;
			c->terminated = 1;
		}
		if (c->complete)
			results[i] = MC_X_DONE;
		else if (c->fd < 0)
			results[i] = MC_X_FAILED;
		else
			results[i] = MC_X_PENDING;
	}
	for (;;) {
		size_t np = 0;
		int64_t left = deadline - now_ms();
		int rc;

		for (size_t i = 0; i < n && np < 64; i++) {
			if (results[i] != MC_X_PENDING)
				continue;
			pfds[np].fd = conns[i]->fd;
			pfds[np].events = POLLIN;
			if (conns[i]->out_sent < conns[i]->out_len)
				pfds[np].events |= POLLOUT;
			pfds[np].revents = 0;
			idx[np++] = i;
		}
		if (np == 0 || left <= 0)
			return;
		rc = poll(pfds, np, (int)left);
		if (rc < 0 && errno != EINTR)
			return;
		for (size_t k = 0; rc > 0 && k < np; k++) {
			struct mc_conn *c = conns[idx[k]];

			if (pfds[k].revents == 0)
				continue;
			if (pump(c, pfds[k].revents) != 0)
				results[idx[k]] = MC_X_FAILED;
			else if (c->complete)
				results[idx[k]] = MC_X_DONE;
		}
	}
}

int mcconn_item_size_max(struct mc_conn *c, int timeout_ms, size_t *out)
{
	static const char stat[] = "STAT item_size_max ";
	char buf[16384];
	const char *p;
	int rc;

	if (c->fd < 0)
		return -ENOTCONN;
	rc = roundtrip(c, "stats settings\r\n", buf, sizeof(buf), "END\r\n", timeout_ms);
	if (rc != 0)
		return rc;
	p = strstr(buf, stat);
	if (p == NULL)
		return -ENOENT;
	*out = (size_t)strtoull(p + strlen(stat), NULL, 10);
	return 0;
}
