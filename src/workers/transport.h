/* One byte stream to one server: TCP, a unix socket, or TLS over TCP
 * (OpenSSL). Connects (with a deadline), moves bytes in and out without
 * blocking, tells the caller what to poll for, and says why it failed.
 * Nothing here knows memcached: commands, replies and dialects are
 * mcconn.c's. Owned by one thread; not thread-safe. */
#ifndef K2MC_TRANSPORT_H
#define K2MC_TRANSPORT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* TLS settings, shared by every connection made with them; the strings are
 * the caller's and must outlive the transports (they are config strings). */
struct transport_tls {
	int enabled;
	const char *ca;          /* PEM trust anchors; NULL = the system store */
	const char *cert;        /* client certificate chain (mutual TLS), or NULL */
	const char *key;         /* its private key (PEM), or NULL = in cert */
	const char *key_password; /* NULL = unencrypted key */
	const char *server_name; /* SNI and the name verified; NULL = the host */
	int insecure;            /* 1: no verification at all */
};

/* What to reach: a TCP host and port, or a unix socket path (port unused). */
struct transport_addr {
	const char *host; /* host name, IP literal, or for is_unix the path */
	int port;
	int is_unix;
};

struct transport;

/* A transport to addr; nothing is connected yet. For TLS the OpenSSL context
 * (trust store, client certificate) is built here, so a bad file is found
 * before any connection: NULL with the reason in err (errno set: ENOMEM,
 * EINVAL). A unix socket is never TLS (memcached serves TLS on TCP
 * listeners only). */
struct transport *transport_new(const struct transport_addr *addr,
				const struct transport_tls *tls, char *err, size_t errlen);
void transport_free(struct transport *t);

/* Checks TLS settings (files readable, key matches, password right) without
 * a server: 0, or -EINVAL with the reason in err. For start-up checks. */
int transport_tls_check(const struct transport_tls *tls, char *err, size_t errlen);

/* Connects and, for TLS, completes the handshake and verifies the peer, by
 * deadline_ms (k2mc_now_ms, core/clock.h). 0, or -errno with the reason in
 * transport_error (for a certificate that does not verify: -EACCES and
 * "TLS: certificate verify failed: <OpenSSL reason>"). Nothing of the
 * caller's is sent before this returns 0. */
int transport_connect(struct transport *t, int64_t deadline_ms);
/* Gives every blocking wait of t (connect, TLS handshake, send_all,
 * recv_some) a way out: once *flag is non-zero (any thread may set it), a
 * wait ends within 100 ms with -ECANCELED, and the calls fail as on a
 * timeout. flag is the caller's (its stop or abort flag) and must outlive t;
 * NULL removes it. */
void transport_set_cancel(struct transport *t, const _Atomic int *flag);
int transport_is_cancelled(const struct transport *t);
/* Closes the connection (if any); the transport can connect again. */
void transport_close(struct transport *t);
int transport_is_open(const struct transport *t);
int transport_fd(const struct transport *t);
int transport_is_tls(const struct transport *t);
const char *transport_error(const struct transport *t);

/* Non-blocking I/O. send: bytes taken (> 0), or TRANSPORT_AGAIN, or
 * -errno (connection broken; reason in transport_error). recv: bytes read
 * (> 0), 0 when the peer closed, TRANSPORT_AGAIN, or -errno. */
#define TRANSPORT_AGAIN (-11000)
ssize_t transport_send(struct transport *t, const void *buf, size_t len);
ssize_t transport_recv(struct transport *t, void *buf, size_t len);

/* poll() events to wait for, given what the caller wants (POLLIN to read,
 * POLLOUT to send): TLS may need to write to read, or read to write. */
short transport_events(const struct transport *t, short want);
/* After poll: whether a send / a recv is worth trying for these revents. */
int transport_can_send(const struct transport *t, short revents);
int transport_can_recv(const struct transport *t, short revents);
/* Bytes already received and decrypted inside the TLS library: poll()
 * does not see them, so the caller reads before it polls. 0 for plain. */
int transport_pending(const struct transport *t);

/* Blocking helpers with a deadline, for request/response before any
 * pipelining (EINTR retried). 0 / bytes, -ETIMEDOUT, -errno. */
int transport_send_all(struct transport *t, const void *buf, size_t len, int64_t deadline_ms);
ssize_t transport_recv_some(struct transport *t, void *buf, size_t len, int64_t deadline_ms);

/* 1 if the idle connection was closed by the peer or has bytes nobody
 * asked for (checked without waiting). */
int transport_idle_broken(struct transport *t);

#endif
