/* TCP, unix socket and TLS byte streams for mcconn.c; see transport.h.
 * Not the memcached protocol, not retry policy (the writer decides when to
 * connect again). TLS writes go through OpenSSL's socket BIO, which uses
 * write(): the process must ignore SIGPIPE (k2mc.c and the tools do). */
#include "workers/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/clock.h"

struct transport {
	char host[256];
	char port[8];
	int is_unix;
	int fd;
	struct transport_tls tls;
	/* NULL for plain TCP and unix sockets */
	SSL_CTX *ctx;
	SSL *ssl;
	/* the last SSL_read wanted to write / SSL_write wanted to read
	 * (TLS 1.3 key updates, renegotiation): poll for that instead */
	int rd_wants_write, wr_wants_read;
	/* transport_set_cancel: owned by the caller, set by any thread (the
	 * owner's stop), read here with acquire while waiting; NULL: none */
	const _Atomic int *cancel;
	char errbuf[512];
};

static int ms_left(int64_t deadline)
{
	int64_t left = deadline - k2mc_now_ms();

	return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

/* How late a cancellation is noticed: a wait with a cancel flag polls in
 * slices this long. */
#define CANCEL_SLICE_MS 100

static int cancelled(const struct transport *t)
{
	return t->cancel != NULL && atomic_load_explicit(t->cancel, memory_order_acquire);
}

/* poll() the connection until the deadline, EINTR retried: 1 ready, 0 timed
 * out, -ECANCELED once the cancel flag is set, -errno. */
static int wait_fd(const struct transport *t, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = t->fd, .events = events };
		int left = ms_left(deadline), slice = left, rc;

		if (cancelled(t))
			return -ECANCELED;
		if (t->cancel != NULL && slice > CANCEL_SLICE_MS)
			slice = CANCEL_SLICE_MS;
		rc = poll(&p, 1, slice);
		if (rc > 0)
			return 1;
		if (rc == 0 && slice == left)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
}

/* The first error on OpenSSL's (thread-local) queue as text, and the queue
 * emptied, so that the next failure is not blamed on this one. */
static void ssl_reason(char *buf, size_t len, const char *fallback)
{
	unsigned long e = ERR_get_error();
	const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

	if (r != NULL)
		snprintf(buf, len, "%s", r);
	else if (e != 0)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "%s", fallback);
	ERR_clear_error();
}

static int pem_password(char *buf, int size, int rwflag, void *u)
{
	const char *pw = u;
	size_t n;

	(void)rwflag;
	if (pw == NULL || size <= 0)
		return 0;
	n = strlen(pw);
	if (n > (size_t)size)
		n = (size_t)size;
	memcpy(buf, pw, n);
	return (int)n;
}

/* The SSL_CTX for these settings: NULL with the reason in err. */
static SSL_CTX *tls_ctx(const struct transport_tls *tls, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char why[256];

	if (ctx == NULL) {
		ssl_reason(why, sizeof(why), "out of memory");
		snprintf(err, errlen, "TLS: %s", why);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* partial writes: SSL_write then behaves as send() does, and a batch
	 * of megabytes is not one TLS operation */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!tls->insecure) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (tls->ca != NULL ? SSL_CTX_load_verify_locations(ctx, tls->ca, NULL) != 1
				    : SSL_CTX_set_default_verify_paths(ctx) != 1) {
			ssl_reason(why, sizeof(why), "cannot load");
			snprintf(err, errlen, "TLS: trust anchors %s: %s",
				 tls->ca != NULL ? tls->ca : "(system store)", why);
			goto fail;
		}
	}
	if (tls->cert != NULL) {
		const char *key = tls->key != NULL ? tls->key : tls->cert;

		SSL_CTX_set_default_passwd_cb(ctx, pem_password);
		SSL_CTX_set_default_passwd_cb_userdata(ctx, (void *)tls->key_password);
		if (SSL_CTX_use_certificate_chain_file(ctx, tls->cert) != 1) {
			ssl_reason(why, sizeof(why), "cannot load");
			snprintf(err, errlen, "TLS: client certificate %s: %s", tls->cert, why);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
			ssl_reason(why, sizeof(why), "cannot load");
			snprintf(err, errlen, "TLS: client key %s: %s%s", key, why,
				 tls->key_password == NULL ? " (encrypted? give its password)" : "");
			goto fail;
		}
		if (SSL_CTX_check_private_key(ctx) != 1) {
			ssl_reason(why, sizeof(why), "does not match");
			snprintf(err, errlen, "TLS: client key %s does not match certificate %s: %s",
				 key, tls->cert, why);
			goto fail;
		}
	} else if (tls->key != NULL) {
		snprintf(err, errlen, "TLS: a client key without a client certificate");
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int transport_tls_check(const struct transport_tls *tls, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	if (!tls->enabled)
		return 0;
	ctx = tls_ctx(tls, err, errlen);
	if (ctx == NULL)
		return -EINVAL;
	SSL_CTX_free(ctx);
	return 0;
}

struct transport *transport_new(const struct transport_addr *addr,
				const struct transport_tls *tls, char *err, size_t errlen)
{
	struct transport *t = calloc(1, sizeof(*t));

	if (t == NULL) {
		snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	t->fd = -1;
	t->is_unix = addr->is_unix;
	if (snprintf(t->host, sizeof(t->host), "%s", addr->host) >= (int)sizeof(t->host)) {
		snprintf(err, errlen, "server name over %zu bytes", sizeof(t->host) - 1);
		goto inval;
	}
	if (t->is_unix && strlen(t->host) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err, errlen, "unix socket path %s: over %zu bytes", t->host,
			 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		goto inval;
	}
	snprintf(t->port, sizeof(t->port), "%d", addr->port);
	if (tls != NULL && tls->enabled && !t->is_unix) {
		t->tls = *tls;
		t->ctx = tls_ctx(tls, err, errlen);
		if (t->ctx == NULL)
			goto inval;
	}
	return t;
inval:
	free(t);
	errno = EINVAL;
	return NULL;
}

void transport_free(struct transport *t)
{
	if (t == NULL)
		return;
	transport_close(t);
	SSL_CTX_free(t->ctx);
	free(t);
}

void transport_close(struct transport *t)
{
	if (t->ssl != NULL) {
		/* no close_notify: the peer may be gone, and SSL_shutdown
		 * could block or raise SIGPIPE; a plain close is what a
		 * crashed client looks like, and memcached copes */
		SSL_free(t->ssl);
		t->ssl = NULL;
	}
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	t->rd_wants_write = t->wr_wants_read = 0;
}

void transport_set_cancel(struct transport *t, const _Atomic int *flag)
{
	t->cancel = flag;
}

int transport_is_cancelled(const struct transport *t)
{
	return cancelled(t);
}

int transport_is_open(const struct transport *t)
{
	return t->fd >= 0;
}

int transport_fd(const struct transport *t)
{
	return t->fd;
}

int transport_is_tls(const struct transport *t)
{
	return t->ctx != NULL;
}

const char *transport_error(const struct transport *t)
{
	return t->errbuf;
}

static int fail(struct transport *t, int err, const char *what)
{
	snprintf(t->errbuf, sizeof(t->errbuf), "%s: %s", what, strerror(err));
	transport_close(t);
	return -err;
}

/* Waits for a non-blocking connect() that returned EINPROGRESS. */
static int connect_wait(struct transport *t, int64_t deadline)
{
	int err = 0, rc = wait_fd(t, POLLOUT, deadline);
	socklen_t elen = sizeof(err);

	if (rc <= 0)
		return fail(t, rc == 0 ? ETIMEDOUT : -rc, "connect");
	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0)
		return fail(t, err ? err : errno, "connect");
	return 0;
}

static int connect_unix(struct transport *t, int64_t deadline)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int err;

	/* length checked by transport_new */
	memcpy(a.sun_path, t->host, strlen(t->host) + 1);
	t->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0)
		return fail(t, errno, "socket");
	if (connect(t->fd, (struct sockaddr *)&a, sizeof(a)) == 0)
		return 0;
	err = errno;
	/* EAGAIN: the listen backlog is full (a busy or stopped server) */
	if (err != EINPROGRESS && err != EINTR)
		return fail(t, err, "connect");
	return connect_wait(t, deadline);
}

/* Tries each address the name resolves to, in getaddrinfo's order, until
 * one connects: "localhost" is often ::1 first while memcached listens on
 * 127.0.0.1 only. Each address gets an equal share of the time left. */
static int connect_tcp(struct transport *t, int64_t deadline)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int one = 1, rc = -EHOSTUNREACH, n = 0, i = 0;
	/* A dead peer host (not a stopped process: its kernel still ACKs) breaks
	 * the connection after this long with unacknowledged data. */
	unsigned int user_timeout_ms = 30000;

	rc = getaddrinfo(t->host, t->port, &hints, &res);
	if (rc != 0) {
		snprintf(t->errbuf, sizeof(t->errbuf), "resolve %s: %s", t->host, gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
		n++;
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next, i++) {
		int64_t now = k2mc_now_ms(), share = (deadline - now) / (n - i);
		int err;

		t->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (t->fd < 0) {
			rc = fail(t, errno, "socket");
			continue;
		}
		setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(t->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		setsockopt(t->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms,
			   sizeof(user_timeout_ms));
		if (connect(t->fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			rc = 0;
			break;
		}
		err = errno;
		/* EINTR: the connect goes on in the background, as EINPROGRESS */
		if (err != EINPROGRESS && err != EINTR) {
			rc = fail(t, err, "connect");
			continue;
		}
		rc = connect_wait(t, ai->ai_next != NULL ? now + share : deadline);
		if (rc == 0)
			break;
	}
	freeaddrinfo(res);
	return rc;
}

static int is_ip_literal(const char *s)
{
	unsigned char b[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

/* The TLS handshake on the connected socket, verifying the peer: its chain
 * against the trust anchors and its name (DNS SAN / CN for a host name, IP
 * SAN for an address; RFC 6125, OpenSSL's X509_check_host/ip). */
static int tls_handshake(struct transport *t, int64_t deadline)
{
	const char *name = t->tls.server_name != NULL ? t->tls.server_name : t->host;
	char why[256];

	ERR_clear_error();
	t->ssl = SSL_new(t->ctx);
	if (t->ssl == NULL || SSL_set_fd(t->ssl, t->fd) != 1) {
		ssl_reason(why, sizeof(why), "out of memory");
		snprintf(t->errbuf, sizeof(t->errbuf), "TLS: %s", why);
		transport_close(t);
		return -ENOMEM;
	}
	if (!is_ip_literal(name)) {
		/* SNI carries host names only (RFC 6066 section 3) */
		SSL_set_tlsext_host_name(t->ssl, name);
		if (!t->tls.insecure)
			SSL_set1_host(t->ssl, name);
	} else if (!t->tls.insecure) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name);
	}
	for (;;) {
		int rc = SSL_connect(t->ssl), e, w;
		long vr;

		if (rc == 1)
			return 0;
		e = SSL_get_error(t->ssl, rc);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			w = wait_fd(t, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
			if (w <= 0)
				return fail(t, w == 0 ? ETIMEDOUT : -w, "TLS handshake");
			continue;
		}
		vr = SSL_get_verify_result(t->ssl);
		if (vr != X509_V_OK) {
			snprintf(t->errbuf, sizeof(t->errbuf),
				 "TLS: certificate verify failed: %s (verifying \"%s\")",
				 X509_verify_cert_error_string(vr), name);
			ERR_clear_error();
			transport_close(t);
			return -EACCES;
		}
		if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
			int err = errno ? errno : ECONNRESET;

			return fail(t, err, "TLS handshake (peer closed: not a TLS server?)");
		}
		ssl_reason(why, sizeof(why), "failed");
		snprintf(t->errbuf, sizeof(t->errbuf), "TLS handshake: %s", why);
		transport_close(t);
		return -EPROTO;
	}
}

int transport_connect(struct transport *t, int64_t deadline_ms)
{
	int rc;

	if (t->fd >= 0)
		return 0;
	t->errbuf[0] = '\0';
	rc = t->is_unix ? connect_unix(t, deadline_ms) : connect_tcp(t, deadline_ms);
	if (rc == 0 && t->ctx != NULL)
		rc = tls_handshake(t, deadline_ms);
	return rc;
}

/* SSL_read / SSL_write's outcome as transport.h's return convention. */
static ssize_t tls_result(struct transport *t, int rc, int reading)
{
	int e = SSL_get_error(t->ssl, rc);
	char why[256];

	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		if (reading)
			t->rd_wants_write = e == SSL_ERROR_WANT_WRITE;
		else
			t->wr_wants_read = e == SSL_ERROR_WANT_READ;
		return TRANSPORT_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		/* close_notify: an orderly close */
		if (reading)
			return 0;
		return fail(t, EPIPE, "TLS send");
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			int err = errno;

			if (err == EINTR)
				return TRANSPORT_AGAIN;
			/* EOF without close_notify: the peer went away */
			if (reading && err == 0)
				return 0;
			return fail(t, err ? err : ECONNRESET, reading ? "TLS recv" : "TLS send");
		}
		/* fall through */
	default:
		ssl_reason(why, sizeof(why), "failed");
		snprintf(t->errbuf, sizeof(t->errbuf), "TLS %s: %s", reading ? "recv" : "send",
			 why);
		transport_close(t);
		return -EPROTO;
	}
}

ssize_t transport_send(struct transport *t, const void *buf, size_t len)
{
	ssize_t n;

	if (t->ssl != NULL) {
		int rc;

		errno = 0;
		rc = SSL_write(t->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
		if (rc > 0) {
			t->wr_wants_read = 0;
			return rc;
		}
		return tls_result(t, rc, 0);
	}
	for (;;) {
		n = send(t->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return TRANSPORT_AGAIN;
		return fail(t, errno, "send");
	}
}

ssize_t transport_recv(struct transport *t, void *buf, size_t len)
{
	ssize_t n;

	if (t->ssl != NULL) {
		int rc;

		errno = 0;
		rc = SSL_read(t->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
		if (rc > 0) {
			t->rd_wants_write = 0;
			return rc;
		}
		return tls_result(t, rc, 1);
	}
	for (;;) {
		n = recv(t->fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return TRANSPORT_AGAIN;
		return fail(t, errno, "recv");
	}
}

short transport_events(const struct transport *t, short want)
{
	short ev = 0;

	if (t->ssl == NULL)
		return want;
	if (want & POLLIN)
		ev |= t->rd_wants_write ? POLLOUT : POLLIN;
	if (want & POLLOUT)
		ev |= t->wr_wants_read ? POLLIN : POLLOUT;
	return ev;
}

int transport_can_send(const struct transport *t, short revents)
{
	if (t->ssl != NULL && t->wr_wants_read)
		return (revents & (POLLIN | POLLERR | POLLHUP)) != 0;
	return (revents & (POLLOUT | POLLERR | POLLHUP)) != 0;
}

int transport_can_recv(const struct transport *t, short revents)
{
	if (t->ssl != NULL && t->rd_wants_write)
		return (revents & (POLLOUT | POLLERR | POLLHUP)) != 0;
	return (revents & (POLLIN | POLLERR | POLLHUP)) != 0;
}

int transport_pending(const struct transport *t)
{
	return t->ssl != NULL && SSL_pending(t->ssl) > 0;
}

int transport_send_all(struct transport *t, const void *buf, size_t len, int64_t deadline_ms)
{
	const char *p = buf;
	size_t off = 0;

	while (off < len) {
		ssize_t n = transport_send(t, p + off, len - off);
		int rc;

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n != TRANSPORT_AGAIN)
			return n < 0 ? (int)n : -EIO;
		rc = wait_fd(t, transport_events(t, POLLOUT), deadline_ms);
		if (rc <= 0)
			return rc == 0 ? -ETIMEDOUT : rc;
	}
	return 0;
}

ssize_t transport_recv_some(struct transport *t, void *buf, size_t len, int64_t deadline_ms)
{
	for (;;) {
		ssize_t n = transport_recv(t, buf, len);
		int rc;

		if (n != TRANSPORT_AGAIN)
			return n;
		rc = wait_fd(t, transport_events(t, POLLIN), deadline_ms);
		if (rc <= 0)
			return rc == 0 ? -ETIMEDOUT : rc;
	}
}

int transport_idle_broken(struct transport *t)
{
	struct pollfd p = { .fd = t->fd, .events = POLLIN | POLLRDHUP };
	ssize_t n;
	char b;
	int rc;

	if (transport_pending(t))
		return 1;
	do
		rc = poll(&p, 1, 0);
	while (rc < 0 && errno == EINTR);
	if (rc <= 0)
		return 0; /* open; a poll error is for the exchange to find */
	if (t->ssl != NULL) {
		/* a TLS record arrived: a session ticket is not a reason to
		 * reconnect, anything else (data, an alert, EOF) is */
		rc = SSL_peek(t->ssl, &b, 1);
		if (rc > 0)
			return 1;
		return tls_result(t, rc, 1) != TRANSPORT_AGAIN;
	}
	do
		n = recv(t->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno != EAGAIN && errno != EWOULDBLOCK;
	return 1;
}
