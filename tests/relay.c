/* The TCP relay of the integration suites; see relay.h. An acceptor thread
 * and two pumps per connection; the test thread changes what is held under
 * the relay's mutex and the pumps wait on its condition variable. */
#include "relay.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RELAY_MAX_CONNS 64

struct relay;
struct relay_conn;

struct pump {
	int from, to;
	int down; /* upstream -> client: the direction RELAY_HOLD_REPLIES holds */
	struct relay *r;
	struct relay_conn *c;
	pthread_t thread;
};

struct relay_conn {
	int cfd, ufd;
	int reset; /* under r->mu: relay_reset dropped it, and what it held */
	struct pump up, down;
};

struct relay {
	int lfd;
	int port;
	int upstream;
	int delay_ms; /* set before the acceptor starts; read by the down pumps */
	char addr[32];
	int wake[2]; /* relay_stop writes a byte: the acceptor's poll wakes */
	pthread_t acceptor;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* under mu: written by the test thread (cv broadcast), waited on by the
	 * pumps */
	enum relay_hold hold;
	int stopping;
	/* under mu: written by the acceptor, read by relay_reset, and by
	 * relay_stop once it has joined the acceptor */
	struct relay_conn *conns[RELAY_MAX_CONNS];
	int nconns;
	/* added by the up pumps after each send, read by the test (relaxed:
	 * counters, nothing is published through them) */
	_Atomic uint64_t up_bytes;
	_Atomic int accepted;
};

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Under r->mu: p's direction is held now. */
static int held(const struct relay *r, const struct pump *p)
{
	return r->hold == RELAY_HOLD_BOTH || (r->hold == RELAY_HOLD_REPLIES && p->down);
}

static void *pump_main(void *arg)
{
	struct pump *p = arg;
	struct relay *r = p->r;
	char buf[65536];

	for (;;) {
		ssize_t n = recv(p->from, buf, sizeof(buf), 0);
		int stop;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (p->down && r->delay_ms > 0)
			nanosleep(&(struct timespec){ r->delay_ms / 1000,
						      (r->delay_ms % 1000) * 1000000L },
				  NULL);
		pthread_mutex_lock(&r->mu);
		while (held(r, p) && !r->stopping && !p->c->reset)
			pthread_cond_wait(&r->cv, &r->mu);
		stop = r->stopping || p->c->reset;
		pthread_mutex_unlock(&r->mu);
		if (stop || send_all(p->to, buf, (size_t)n) != 0)
			break;
		if (!p->down)
			atomic_fetch_add_explicit(&r->up_bytes, (uint64_t)n, memory_order_relaxed);
	}
	/* pass the end of this direction on; the other pump ends on its own */
	shutdown(p->to, SHUT_WR);
	return NULL;
}

static int connect_upstream(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* Under r->mu: c's pumps started, or c closed and freed (-1). */
static int conn_start(struct relay_conn *c)
{
	if (pthread_create(&c->up.thread, NULL, pump_main, &c->up) != 0) {
		close(c->cfd);
		close(c->ufd);
		free(c);
		return -1;
	}
	if (pthread_create(&c->down.thread, NULL, pump_main, &c->down) != 0) {
		shutdown(c->cfd, SHUT_RDWR);
		shutdown(c->ufd, SHUT_RDWR);
		pthread_join(c->up.thread, NULL);
		close(c->cfd);
		close(c->ufd);
		free(c);
		return -1;
	}
	return 0;
}

static void *acceptor_main(void *arg)
{
	struct relay *r = arg;

	for (;;) {
		struct pollfd pf[2] = { { .fd = r->lfd, .events = POLLIN },
					{ .fd = r->wake[0], .events = POLLIN } };
		struct relay_conn *c;
		int cfd, ufd, stop;

		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			break;
		pthread_mutex_lock(&r->mu);
		stop = r->stopping;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		if (!(pf[0].revents & POLLIN))
			continue;
		cfd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		ufd = connect_upstream(r->upstream);
		c = calloc(1, sizeof(*c));
		pthread_mutex_lock(&r->mu);
		if (ufd < 0 || c == NULL || r->nconns == RELAY_MAX_CONNS) {
			pthread_mutex_unlock(&r->mu);
			close(cfd);
			if (ufd >= 0)
				close(ufd);
			free(c);
			continue;
		}
		c->cfd = cfd;
		c->ufd = ufd;
		c->up = (struct pump){ .from = cfd, .to = ufd, .r = r, .c = c };
		c->down = (struct pump){ .from = ufd, .to = cfd, .down = 1, .r = r, .c = c };
		if (conn_start(c) != 0) {
			pthread_mutex_unlock(&r->mu);
			continue;
		}
		r->conns[r->nconns++] = c;
		pthread_mutex_unlock(&r->mu);
		atomic_fetch_add_explicit(&r->accepted, 1, memory_order_relaxed);
	}
	return NULL;
}

struct relay *relay_start(int upstream, int reply_delay_ms)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	struct relay *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	r->upstream = upstream;
	r->delay_ms = reply_delay_ms;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(r->lfd, 0, "relay socket: %s", strerror(errno));
	cr_assert_eq(bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0, "relay bind: %s",
		     strerror(errno));
	cr_assert_eq(listen(r->lfd, 64), 0, "relay listen: %s", strerror(errno));
	cr_assert_eq(getsockname(r->lfd, (struct sockaddr *)&sa, &sl), 0);
	r->port = ntohs(sa.sin_port);
	snprintf(r->addr, sizeof(r->addr), "127.0.0.1:%d", r->port);
	cr_assert_eq(pipe2(r->wake, O_CLOEXEC), 0, "relay pipe: %s", strerror(errno));
	cr_assert_eq(pthread_create(&r->acceptor, NULL, acceptor_main, r), 0);
	return r;
}

int relay_port(const struct relay *r)
{
	return r->port;
}

const char *relay_addr(const struct relay *r)
{
	return r->addr;
}

void relay_hold(struct relay *r, enum relay_hold what)
{
	pthread_mutex_lock(&r->mu);
	r->hold = what;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

void relay_release(struct relay *r)
{
	relay_hold(r, RELAY_FLOW);
}

void relay_reset(struct relay *r)
{
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->nconns; i++) {
		struct relay_conn *c = r->conns[i];

		if (c->reset)
			continue;
		c->reset = 1;
		shutdown(c->cfd, SHUT_RDWR);
		shutdown(c->ufd, SHUT_RDWR);
	}
	r->hold = RELAY_FLOW;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

int relay_accepted(const struct relay *r)
{
	return atomic_load_explicit(&r->accepted, memory_order_relaxed);
}

uint64_t relay_up_bytes(const struct relay *r)
{
	return atomic_load_explicit(&r->up_bytes, memory_order_relaxed);
}

void relay_stop(struct relay *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->stopping = 1;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	if (write(r->wake[1], "x", 1) != 1)
		cr_log_warn("relay: cannot wake the acceptor: %s", strerror(errno));
	pthread_join(r->acceptor, NULL);
	close(r->lfd);
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->nconns; i++) {
		shutdown(r->conns[i]->cfd, SHUT_RDWR);
		shutdown(r->conns[i]->ufd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&r->mu);
	for (int i = 0; i < r->nconns; i++) {
		struct relay_conn *c = r->conns[i];

		pthread_join(c->up.thread, NULL);
		pthread_join(c->down.thread, NULL);
		close(c->cfd);
		close(c->ufd);
		free(c);
	}
	close(r->wake[0]);
	close(r->wake[1]);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	free(r);
}
