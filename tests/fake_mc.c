/* fake_mc: see fake_mc.h. One server thread; everything the test thread
 * reads (lines, items, counters) is under mu. The option strings are the
 * caller's and must outlive the server. */
#include "fake_mc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct item {
	char *key;
	char *val;
	size_t vlen;
};

struct line {
	char *text;
	int conn;
};

struct fake_mc {
	struct fake_mc_opts o;
	int lfd, port;
	/* control pipe, test thread -> server thread: 'd' drop, 'q' quit */
	int ctl[2];
	pthread_t th;

	/* under mu: written by the server thread, read by the test thread */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct line *lines;
	size_t nlines, lcap;
	struct item *items;
	size_t nitems, icap;
	int nconns;
	unsigned drops_done;

	/* the server thread's only; dropping: a 'd' ended the connection;
	 * stores / early_mn_sent: per connection, for the misbehaviours */
	int cfd, quit, dropping;
	int stores, early_mn_sent;
	char *buf;
	size_t blen, bcap, bpos;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void record(struct fake_mc *f, const char *s, size_t len)
{
	pthread_mutex_lock(&f->mu);
	if (f->nlines == f->lcap) {
		size_t ncap = f->lcap ? f->lcap * 2 : 64;
		struct line *n = realloc(f->lines, ncap * sizeof(*n));

		if (n == NULL)
			abort(); /* a test helper: no way to report it */
		f->lines = n;
		f->lcap = ncap;
	}
	f->lines[f->nlines].text = strndup(s, len);
	if (f->lines[f->nlines].text == NULL)
		abort();
	f->lines[f->nlines++].conn = f->nconns;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

/* under mu */
static struct item *find(struct fake_mc *f, const char *key)
{
	for (size_t i = 0; i < f->nitems; i++) {
		if (strcmp(f->items[i].key, key) == 0)
			return &f->items[i];
	}
	return NULL;
}

static void store(struct fake_mc *f, const char *key, const char *val, size_t vlen)
{
	struct item *it;

	pthread_mutex_lock(&f->mu);
	it = find(f, key);
	if (it == NULL) {
		if (f->nitems == f->icap) {
			size_t ncap = f->icap ? f->icap * 2 : 64;
			struct item *n = realloc(f->items, ncap * sizeof(*n));

			if (n == NULL)
				abort();
			f->items = n;
			f->icap = ncap;
		}
		it = &f->items[f->nitems++];
		it->key = strdup(key);
		it->val = NULL;
		if (it->key == NULL)
			abort();
	}
	free(it->val);
	it->val = malloc(vlen + 1);
	if (it->val == NULL)
		abort();
	memcpy(it->val, val, vlen);
	it->vlen = vlen;
	pthread_mutex_unlock(&f->mu);
}

static int unstore(struct fake_mc *f, const char *key)
{
	struct item *it;

	pthread_mutex_lock(&f->mu);
	it = find(f, key);
	if (it != NULL) {
		free(it->key);
		free(it->val);
		*it = f->items[--f->nitems];
	}
	pthread_mutex_unlock(&f->mu);
	return it != NULL;
}

static void flush(struct fake_mc *f)
{
	pthread_mutex_lock(&f->mu);
	for (size_t i = 0; i < f->nitems; i++) {
		free(f->items[i].key);
		free(f->items[i].val);
	}
	f->nitems = 0;
	pthread_mutex_unlock(&f->mu);
}

static void reply(struct fake_mc *f, const char *s)
{
	size_t len = strlen(s), off = 0;

	if (f->o.delay_ms > 0) {
		struct timespec ts = { f->o.delay_ms / 1000, (long)(f->o.delay_ms % 1000) * 1000000L };

		nanosleep(&ts, NULL);
	}
	while (off < len) {
		ssize_t n = send(f->cfd, s + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* the client went away: the next read says so */
		off += (size_t)n;
	}
}

/* Reads more bytes into buf. 1, or 0 when the connection is to end (peer
 * closed, drop or quit requested). */
static int fill(struct fake_mc *f)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = f->cfd, .events = POLLIN },
				       { .fd = f->ctl[0], .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 0;
		}
		if (p[1].revents) {
			char c = 0;

			if (read(f->ctl[0], &c, 1) != 1 || c == 'q')
				f->quit = 1;
			else
				f->dropping = 1;
			return 0; /* 'q' or 'd': either way this connection ends */
		}
		if (f->bpos > 0) {
			memmove(f->buf, f->buf + f->bpos, f->blen - f->bpos);
			f->blen -= f->bpos;
			f->bpos = 0;
		}
		if (f->bcap - f->blen < 4096) {
			size_t ncap = f->bcap * 2;
			char *nb = realloc(f->buf, ncap);

			if (nb == NULL)
				abort();
			f->buf = nb;
			f->bcap = ncap;
		}
		n = recv(f->cfd, f->buf + f->blen, f->bcap - f->blen, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0;
		f->blen += (size_t)n;
		return 1;
	}
}

/* The next line (CR LF or LF stripped, NUL-terminated in place), or NULL
 * when the connection ends. */
static char *get_line(struct fake_mc *f, size_t *len)
{
	for (;;) {
		char *s = f->buf + f->bpos, *nl = memchr(s, '\n', f->blen - f->bpos);

		if (nl != NULL) {
			size_t l = (size_t)(nl - s);

			f->bpos += l + 1;
			if (l > 0 && s[l - 1] == '\r')
				l--;
			s[l] = '\0';
			*len = l;
			return s;
		}
		if (!fill(f))
			return NULL;
	}
}

/* A data block of n bytes and its CRLF: a copy (free it), or NULL when the
 * connection ends. */
static char *get_block(struct fake_mc *f, size_t n)
{
	char *v;

	while (f->blen - f->bpos < n + 2) {
		if (!fill(f))
			return NULL;
	}
	v = malloc(n + 1);
	if (v == NULL)
		abort();
	memcpy(v, f->buf + f->bpos, n);
	v[n] = '\0';
	f->bpos += n + 2;
	return v;
}

#define MAX_TOKENS 24

static size_t tokenize(char *s, char **tok)
{
	size_t n = 0;
	char *save = NULL;

	for (char *t = strtok_r(s, " ", &save); t != NULL && n < MAX_TOKENS;
	     t = strtok_r(NULL, " ", &save))
		tok[n++] = t;
	return n;
}

static int parse_size(const char *s, size_t *v)
{
	char *end;
	unsigned long long x;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || x > (1ull << 30))
		return -1;
	*v = (size_t)x;
	return 0;
}

/* The meta flags memcached 1.6.9's "ms" knows (proto_text.c of 1.6.9:
 * _meta_flag_preparse); any other token is "CLIENT_ERROR invalid flag". */
static int flag_169(const char *t)
{
	return strchr("bcCEFIkMNOqsSTt", t[0]) != NULL && t[0] != '\0';
}

/* One set-like command whose value is val: stores it and answers. 0 to go
 * on, -1 to close the connection (close_after_stores). */
static int stored(struct fake_mc *f, const char *key, const char *val, size_t vlen,
		  const char *ok)
{
	if (f->o.all_reply != NULL) {
		reply(f, f->o.all_reply);
	} else if (f->o.store_reply != NULL) {
		reply(f, f->o.store_reply);
	} else {
		store(f, key, val, vlen);
		if (ok != NULL)
			reply(f, ok);
	}
	return f->o.close_after_stores > 0 && ++f->stores >= f->o.close_after_stores ? -1 : 0;
}

static int has_flag(char **tok, size_t from, size_t n, char flag)
{
	for (size_t i = from; i < n; i++) {
		if (tok[i][0] == flag)
			return 1;
	}
	return 0;
}

static const char *opaque(char **tok, size_t from, size_t n, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = from; i < n; i++) {
		if (tok[i][0] == 'O')
			snprintf(buf, len, " %s", tok[i]);
	}
	return buf;
}

/* One command line, tokenized in a copy of its own (reading a data block
 * may move buf). 0 to go on, -1 to close the connection. */
static int handle_line(struct fake_mc *f, char *line)
{
	char *tok[MAX_TOKENS], out[256], op[64];
	size_t n, sz;
	char *v;
	int rc;

	n = tokenize(line, tok);
	if (n == 0) {
		reply(f, "ERROR\r\n");
		return 0;
	}
	if (f->o.close_on != NULL && strcmp(tok[0], f->o.close_on) == 0)
		return -1;
	if (strcmp(tok[0], "set") == 0) {
		if (n < 5 || parse_size(tok[4], &sz) != 0) {
			reply(f, "CLIENT_ERROR bad command line format\r\n");
			return 0;
		}
		if ((v = get_block(f, sz)) == NULL)
			return -1;
		rc = stored(f, tok[1], v, sz, "STORED\r\n");
		free(v);
		return rc;
	}
	if (f->o.all_reply != NULL) {
		reply(f, f->o.all_reply);
		return 0;
	}
	if (strcmp(tok[0], "version") == 0) {
		if (f->o.version == NULL) {
			reply(f, "ERROR\r\n");
		} else {
			reply(f, f->o.version);
			reply(f, "\r\n");
		}
	} else if (strcmp(tok[0], "stats") == 0 && n == 2 && strcmp(tok[1], "settings") == 0) {
		if (f->o.stats_reply != NULL) {
			reply(f, f->o.stats_reply);
		} else {
			snprintf(out, sizeof(out), "STAT maxbytes 67108864\r\nSTAT item_size_max %zu\r\n"
						   "STAT evictions on\r\nEND\r\n",
				 f->o.item_size_max ? f->o.item_size_max : (size_t)1 << 20);
			reply(f, out);
		}
	} else if (strcmp(tok[0], "delete") == 0 && n >= 2) {
		reply(f, unstore(f, tok[1]) ? "DELETED\r\n" : "NOT_FOUND\r\n");
	} else if (strcmp(tok[0], "flush_all") == 0) {
		flush(f);
		reply(f, "OK\r\n");
	} else if (strcmp(tok[0], "mn") == 0 && f->o.ms != FAKE_MS_NONE) {
		if (!f->o.mute_mn)
			reply(f, "MN\r\n");
	} else if (strcmp(tok[0], "ms") == 0 && n >= 2 && f->o.ms == FAKE_MS_169) {
		/* 1.6.9: every token after the key is a flag; the size is S<n> */
		int have_size = 0;

		for (size_t i = 2; i < n; i++) {
			if (!flag_169(tok[i])) {
				reply(f, "CLIENT_ERROR invalid flag\r\n");
				return 0; /* no data block read: the value is the next line */
			}
			if (tok[i][0] == 'S' && parse_size(tok[i] + 1, &sz) == 0)
				have_size = 1;
		}
		if (!have_size) {
			reply(f, "CLIENT_ERROR bad command line format\r\n");
			return 0;
		}
		if ((v = get_block(f, sz)) == NULL)
			return -1;
		rc = stored(f, tok[1], v, sz, has_flag(tok, 2, n, 'q') ? NULL : "OK\r\n");
		free(v);
		return rc;
	} else if (strcmp(tok[0], "ms") == 0 && n >= 3 && f->o.ms == FAKE_MS_1610) {
		if (parse_size(tok[2], &sz) != 0) {
			reply(f, "CLIENT_ERROR bad data chunk\r\n");
			return 0;
		}
		if (f->o.early_mn && !f->early_mn_sent) {
			/* before its data block, and before the rest of the batch */
			reply(f, "MN\r\n");
			f->early_mn_sent = 1;
		}
		if ((v = get_block(f, sz)) == NULL)
			return -1;
		rc = stored(f, tok[1], v, sz, has_flag(tok, 3, n, 'q') ? NULL : "HD\r\n");
		free(v);
		return rc;
	} else if (strcmp(tok[0], "md") == 0 && n >= 2 && f->o.ms != FAKE_MS_NONE) {
		if (unstore(f, tok[1])) {
			if (!has_flag(tok, 2, n, 'q'))
				reply(f, "HD\r\n");
		} else {
			snprintf(out, sizeof(out), "NF%s\r\n", opaque(tok, 2, n, op, sizeof(op)));
			reply(f, out);
		}
	} else {
		reply(f, "ERROR\r\n");
	}
	return 0;
}

static int handle(struct fake_mc *f, const char *line, size_t len)
{
	char *copy = strndup(line, len);
	int rc;

	if (copy == NULL)
		abort();
	record(f, line, len);
	rc = handle_line(f, copy);
	free(copy);
	return rc;
}

static void serve(struct fake_mc *f, int nth)
{
	char *line;
	size_t len;

	f->blen = f->bpos = 0;
	f->stores = 0;
	f->early_mn_sent = 0;
	if (f->o.refuse != NULL && nth <= f->o.refuse_count) {
		reply(f, f->o.refuse);
		close(f->cfd);
		f->cfd = -1;
		return;
	}
	while ((line = get_line(f, &len)) != NULL) {
		if (handle(f, line, len) != 0)
			break;
	}
	close(f->cfd);
	f->cfd = -1;
}

static void *server_main(void *arg)
{
	struct fake_mc *f = arg;
	int nth;

	while (!f->quit) {
		struct pollfd p[2] = { { .fd = f->lfd, .events = POLLIN },
				       { .fd = f->ctl[0], .events = POLLIN } };

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents) {
			char c = 0;

			if (read(f->ctl[0], &c, 1) != 1 || c == 'q')
				break;
			/* a drop with no connection: nothing to close */
			f->dropping = 1;
		} else if (p[0].revents) {
			f->cfd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (f->cfd < 0)
				continue;
			pthread_mutex_lock(&f->mu);
			nth = ++f->nconns;
			pthread_mutex_unlock(&f->mu);
			serve(f, nth);
		}
		pthread_mutex_lock(&f->mu);
		if (f->dropping)
			f->drops_done++;
		f->dropping = 0;
		pthread_cond_broadcast(&f->cv);
		pthread_mutex_unlock(&f->mu);
	}
	return NULL;
}

struct fake_mc *fake_mc_start(const struct fake_mc_opts *o)
{
	struct fake_mc *f = calloc(1, sizeof(*f));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	sigset_t all, old;
	int rc;

	if (f == NULL)
		return NULL;
	f->o = *o;
	f->cfd = -1;
	f->ctl[0] = f->ctl[1] = -1;
	f->bcap = 64 * 1024;
	f->buf = malloc(f->bcap);
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->buf == NULL || f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(f->lfd, 16) != 0 || getsockname(f->lfd, (struct sockaddr *)&a, &alen) != 0 ||
	    pipe2(f->ctl, O_CLOEXEC) != 0)
		goto fail;
	f->port = ntohs(a.sin_port);
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	/* the thread starts with every signal blocked: a test's signals are
	 * for the code under test */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&f->th, NULL, server_main, f);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		pthread_mutex_destroy(&f->mu);
		pthread_cond_destroy(&f->cv);
		goto fail;
	}
	return f;
fail:
	rc = errno;
	if (f->lfd >= 0)
		close(f->lfd);
	if (f->ctl[0] >= 0) {
		close(f->ctl[0]);
		close(f->ctl[1]);
	}
	free(f->buf);
	free(f);
	errno = rc;
	return NULL;
}

int fake_mc_port(const struct fake_mc *f)
{
	return f->port;
}

void fake_mc_stop(struct fake_mc *f)
{
	if (f == NULL)
		return;
	if (write(f->ctl[1], "q", 1) != 1)
		abort();
	pthread_join(f->th, NULL);
	close(f->lfd);
	close(f->ctl[0]);
	close(f->ctl[1]);
	for (size_t i = 0; i < f->nlines; i++)
		free(f->lines[i].text);
	free(f->lines);
	for (size_t i = 0; i < f->nitems; i++) {
		free(f->items[i].key);
		free(f->items[i].val);
	}
	free(f->items);
	free(f->buf);
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
	free(f);
}

void fake_mc_drop(struct fake_mc *f)
{
	unsigned want;

	pthread_mutex_lock(&f->mu);
	want = f->drops_done + 1;
	pthread_mutex_unlock(&f->mu);
	if (write(f->ctl[1], "d", 1) != 1)
		abort();
	pthread_mutex_lock(&f->mu);
	while (f->drops_done < want)
		pthread_cond_wait(&f->cv, &f->mu);
	pthread_mutex_unlock(&f->mu);
}

size_t fake_mc_nlines(struct fake_mc *f)
{
	size_t n;

	pthread_mutex_lock(&f->mu);
	n = f->nlines;
	pthread_mutex_unlock(&f->mu);
	return n;
}

int fake_mc_line(struct fake_mc *f, size_t i, char *buf, size_t len)
{
	int conn = -1;

	pthread_mutex_lock(&f->mu);
	if (i < f->nlines) {
		snprintf(buf, len, "%s", f->lines[i].text);
		conn = f->lines[i].conn;
	}
	pthread_mutex_unlock(&f->mu);
	return conn;
}

int fake_mc_connections(struct fake_mc *f)
{
	int n;

	pthread_mutex_lock(&f->mu);
	n = f->nconns;
	pthread_mutex_unlock(&f->mu);
	return n;
}

int fake_mc_wait_lines(struct fake_mc *f, size_t n, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;
	int rc = 0;

	pthread_mutex_lock(&f->mu);
	while (f->nlines < n) {
		struct timespec ts;
		int64_t left = deadline - mono_ms();

		if (left <= 0) {
			rc = -ETIMEDOUT;
			break;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(left / 1000);
		ts.tv_nsec += (long)(left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&f->cv, &f->mu, &ts);
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

long fake_mc_get(struct fake_mc *f, const char *key, char *buf, size_t len)
{
	struct item *it;
	long n = -1;

	pthread_mutex_lock(&f->mu);
	it = find(f, key);
	if (it != NULL) {
		size_t c = it->vlen < len - 1 ? it->vlen : len - 1;

		memcpy(buf, it->val, c);
		buf[c] = '\0';
		n = (long)it->vlen;
	}
	pthread_mutex_unlock(&f->mu);
	return n;
}

size_t fake_mc_items(struct fake_mc *f)
{
	size_t n;

	pthread_mutex_lock(&f->mu);
	n = f->nitems;
	pthread_mutex_unlock(&f->mu);
	return n;
}

/* One request to a real server on 127.0.0.1:port on a fresh connection; the
 * reply, up to its final "END\r\n", NUL-terminated in buf. 0 or -errno. */
static int ask(int port, const char *req, char *buf, size_t cap, size_t *len)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { 2, 0 };
	size_t rl = strlen(req);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = 0;

	*len = 0;
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    send(fd, req, rl, MSG_NOSIGNAL) != (ssize_t)rl) {
		rc = -errno;
		goto out;
	}
	for (;;) {
		ssize_t n = recv(fd, buf + *len, cap - 1 - *len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n == 0 ? -ECONNRESET : -errno;
			goto out;
		}
		*len += (size_t)n;
		buf[*len] = '\0';
		if (*len >= 5 && memcmp(buf + *len - 5, "END\r\n", 5) == 0)
			break;
		if (*len == cap - 1) {
			rc = -EPROTO;
			goto out;
		}
	}
out:
	close(fd);
	return rc;
}

int fake_mc_stat(int port, const char *name, uint64_t *value)
{
	char buf[16384], want[128];
	const char *p;
	size_t len;
	int rc = ask(port, "stats\r\n", buf, sizeof(buf), &len);

	if (rc != 0)
		return rc;
	snprintf(want, sizeof(want), "STAT %s ", name);
	p = strstr(buf, want);
	if (p == NULL)
		return -ENOENT;
	*value = strtoull(p + strlen(want), NULL, 10);
	return 0;
}

long fake_mc_fetch(int port, const char *key, char *buf, size_t len)
{
	char req[300], *reply = malloc(1 << 20);
	unsigned flags;
	size_t rlen, vlen, hdr;
	long rc;
	int r;

	if (reply == NULL)
		return -ENOMEM - 1;
	snprintf(req, sizeof(req), "get %s\r\n", key);
	r = ask(port, req, reply, 1 << 20, &rlen);
	if (r != 0) {
		rc = r - 1;
	} else if (strcmp(reply, "END\r\n") == 0) {
		rc = -1;
	} else if (sscanf(reply, "VALUE %*s %u %zu\r\n", &flags, &vlen) != 2 ||
		   strstr(reply, "\r\n") == NULL) {
		rc = -EPROTO - 1;
	} else {
		size_t c = vlen < len - 1 ? vlen : len - 1;

		hdr = (size_t)(strstr(reply, "\r\n") - reply) + 2;
		if (hdr + vlen + 7 != rlen) {
			rc = -EPROTO - 1;
		} else {
			memcpy(buf, reply + hdr, c);
			buf[c] = '\0';
			rc = (long)vlen;
		}
	}
	free(reply);
	return rc;
}
