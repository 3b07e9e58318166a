/* A TCP relay for the integration suites: a free loopback port in front of
 * 127.0.0.1:upstream, one thread per direction of each connection, so that a
 * test can slow, hold or break the path of the one process it gives the
 * relay's address (or redirects there, tests/redirect_shim.c) while the
 * others, the readers and the checks reach the server directly.
 * Bytes only: it knows no protocol. Not thread-safe: one test thread drives
 * it (the pumps are its own). Sockets are close-on-exec, so no process the
 * test starts afterwards keeps one open. */
#ifndef K2MC_TEST_RELAY_H
#define K2MC_TEST_RELAY_H

#include <stdint.h>

struct relay;

/* What relay_hold holds back, on every connection, new ones too. */
enum relay_hold {
	RELAY_FLOW,         /* nothing: bytes go through as they come */
	/* Replies (upstream -> client): the server executes every request at
	 * once, in order, while the client waits for answers. */
	RELAY_HOLD_REPLIES,
	/* Both directions: a network partition. Requests sent meanwhile
	 * reach the server only on release (never after relay_reset). */
	RELAY_HOLD_BOTH,
};

/* Listens on a free loopback port; every connection accepted is forwarded
 * to 127.0.0.1:upstream, and each chunk of a reply waits reply_delay_ms
 * (0: none) before it goes on: a remote server with some latency. Asserts
 * (Criterion) that it could start. */
struct relay *relay_start(int upstream, int reply_delay_ms);
int relay_port(const struct relay *r);
/* "127.0.0.1:PORT", for -m. */
const char *relay_addr(const struct relay *r);

/* From now on, hold what `what` names; RELAY_FLOW is relay_release. */
void relay_hold(struct relay *r, enum relay_hold what);
/* Lets everything held go on, in order. */
void relay_release(struct relay *r);
/* Ends a hold the way a partition that outlived TCP does: every connection
 * open now is shut down and what it held is dropped, never delivered; the
 * clients see their connections end and reconnect through the relay, which
 * still listens and holds nothing any more. */
void relay_reset(struct relay *r);

/* Connections accepted so far: 0 means the client bypassed the relay. */
int relay_accepted(const struct relay *r);
/* Bytes forwarded client -> upstream so far. */
uint64_t relay_up_bytes(const struct relay *r);

/* Closes the listener (connects are refused from then on) and every
 * connection (what was held is dropped), joins every thread and frees r.
 * A client whose path this cuts sees its peer gone for good. NULL: nothing. */
void relay_stop(struct relay *r);

#endif
