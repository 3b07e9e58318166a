/* Pipelined memcached text protocol over a non-blocking socket; see mcconn.h.
 * The reply stream is matched to commands by position: memcached answers the
 * commands of one connection in the order it received them. */
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

	/* commands of the current batch, serialized */
	char *out;
	size_t out_len, out_cap, out_sent;
	/* one slot per queued command; MC_NONE until its reply is read */
	uint8_t *replies;
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
	memset(c->replies, MC_NONE, c->ncmds);
}

void mcconn_free(struct mc_conn *c)
{
	if (c == NULL)
		return;
	conn_close(c);
	free(c->out);
	free(c->replies);
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
	return 0;
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

static int add_cmd(struct mc_conn *c)
{
	if (c->ncmds == c->cmd_cap) {
		size_t ncap = c->cmd_cap ? c->cmd_cap * 2 : 1024;
		uint8_t *n = realloc(c->replies, ncap);

		if (n == NULL)
			return -ENOMEM;
		c->replies = n;
		c->cmd_cap = ncap;
	}
	c->replies[c->ncmds++] = MC_NONE;
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

/* " <decimal>" at p; returns the bytes written. snprintf showed up in the
 * writer's profile at 5% for these three numbers per record. */
static size_t put_num(char *p, uint64_t v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	p[0] = ' ';
	for (i = 0; i < n; i++)
		p[1 + i] = tmp[n - 1 - i];
	return n + 1;
}

void mcconn_queue_set(struct mc_conn *c, const char *key, size_t klen, const void *val,
		      size_t vlen, uint32_t flags, uint32_t exptime)
{
	char *p, *start;

	/* "set " key " flags exptime bytes\r\n" value "\r\n": 3 numbers of at
	 * most 20 digits each plus separators fit in 72 bytes */
	must(reserve(&c->out, &c->out_cap, c->out_len + klen + vlen + 72));
	start = p = c->out + c->out_len;
	memcpy(p, "set ", 4);
	memcpy(p + 4, key, klen);
	p += 4 + klen;
	p += put_num(p, flags);
	p += put_num(p, exptime);
	p += put_num(p, vlen);
	memcpy(p, "\r\n", 2);
	memcpy(p + 2, val, vlen);
	memcpy(p + 2 + vlen, "\r\n", 2);
	c->out_len += (size_t)(p + 4 + vlen - start);
	must(add_cmd(c));
}

void mcconn_queue_delete(struct mc_conn *c, const char *key, size_t klen)
{
	char *p;

	must(reserve(&c->out, &c->out_cap, c->out_len + klen + 16));
	p = c->out + c->out_len;
	memcpy(p, "delete ", 7);
	memcpy(p + 7, key, klen);
	memcpy(p + 7 + klen, "\r\n", 2);
	c->out_len += 7 + klen + 2;
	must(add_cmd(c));
}

size_t mcconn_queued(const struct mc_conn *c)
{
	return c->ncmds;
}

void mcconn_rewind(struct mc_conn *c)
{
	c->out_sent = 0;
	c->nreplies = 0;
}

void mcconn_reset_batch(struct mc_conn *c)
{
	c->out_len = 0;
	c->out_sent = 0;
	c->ncmds = 0;
	c->nreplies = 0;
}

enum mc_reply mcconn_reply(const struct mc_conn *c, size_t i)
{
	return i < c->nreplies ? (enum mc_reply)c->replies[i] : MC_NONE;
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

/* Maps one reply line; -1 for a line no set/delete can produce, which means
 * the stream is out of step and the connection cannot be trusted. */
static int classify(struct mc_conn *c, const char *line, size_t len)
{
	if (len == 6 && memcmp(line, "STORED", 6) == 0)
		return MC_STORED;
	if (len == 7 && memcmp(line, "DELETED", 7) == 0)
		return MC_DELETED;
	if (len == 9 && memcmp(line, "NOT_FOUND", 9) == 0)
		return MC_NOT_FOUND;
	if (starts(line, len, "SERVER_ERROR") || starts(line, len, "CLIENT_ERROR")) {
		snprintf(c->last_reply, sizeof(c->last_reply), "%.*s", (int)len, line);
		if (starts(line, len, "SERVER_ERROR object too large"))
			return MC_TOO_LARGE;
		return line[0] == 'S' ? MC_SERVER_ERROR : MC_CLIENT_ERROR;
	}
	snprintf(c->last_reply, sizeof(c->last_reply), "%.*s", (int)len, line);
	return -1;
}

/* Parses complete lines from c->in. Returns 0, or -EPROTO. */
static int parse_replies(struct mc_conn *c)
{
	size_t pos = 0;

	while (c->nreplies < c->ncmds) {
		char *nl = memchr(c->in + pos, '\n', c->in_len - pos);
		size_t len;
		int r;

		if (nl == NULL)
			break;
		len = (size_t)(nl - (c->in + pos));
		if (len > 0 && c->in[pos + len - 1] == '\r')
			len--;
		r = classify(c, c->in + pos, len);
		if (r < 0)
			return -EPROTO;
		c->replies[c->nreplies++] = (uint8_t)r;
		pos = (size_t)(nl - c->in) + 1;
	}
	if (c->nreplies == c->ncmds && pos < c->in_len)
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
			if (c->nreplies == c->ncmds)
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
		if (conns[i]->fd < 0)
			results[i] = MC_X_FAILED;
		else if (conns[i]->nreplies == conns[i]->ncmds)
			results[i] = MC_X_DONE;
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
			else if (c->nreplies == c->ncmds)
				results[idx[k]] = MC_X_DONE;
		}
	}
}

int mcconn_item_size_max(struct mc_conn *c, int timeout_ms, size_t *out)
{
	static const char cmd[] = "stats settings\r\n";
	int64_t deadline = now_ms() + timeout_ms;
	char buf[16384];
	size_t len = 0;
	struct pollfd pfd;
	int rc;

	if (c->fd < 0)
		return -ENOTCONN;
	if (send(c->fd, cmd, sizeof(cmd) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(cmd) - 1))
		return fail(c, errno ? errno : EIO, "send");
	for (;;) {
		ssize_t n;

		buf[len] = '\0';
		if (len >= 5 && strstr(buf, "END\r\n") != NULL)
			break;
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		rc = poll(&pfd, 1, (int)(deadline - now_ms() > 0 ? deadline - now_ms() : 0));
		if (rc <= 0)
			return fail(c, rc == 0 ? ETIMEDOUT : errno, "stats settings");
		n = recv(c->fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (n <= 0)
			return fail(c, n == 0 ? ECONNRESET : errno, "stats settings");
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			return fail(c, EPROTO, "stats settings");
	}
	{
		const char *p = strstr(buf, "STAT item_size_max ");

		if (p == NULL)
			return -ENOENT;
		*out = (size_t)strtoull(p + strlen("STAT item_size_max "), NULL, 10);
	}
	return 0;
}
