/* One pipelined, acknowledged connection to one memcached server (classic
 * text or meta protocol): commands are queued, sent together, and every
 * command's outcome is known before the batch counts as done. Owned by one
 * writer thread; not thread-safe.
 * Dialects: meta commands ("ms <key> <datalen> <flags>*") only where that
 * syntax is certain, memcached >= 1.6.10 by its "version" reply. 1.5.19 to
 * 1.6.9 answer "mn" too but read "ms <key> <datalen>" differently (their
 * syntax is "ms <key> S<size>"), so a value would be parsed as a command
 * line. Everything else gets the classic dialect, whose length-prefixed data
 * block cannot be misread.
 * The bytes go over a transport (transport.h: TCP, unix socket, TLS); the
 * commands and replies are mccodec.h's; this module is the connection: the
 * handshake, the dialect, sending and reading.
 * Why not libmemcached's BUFFER_REQUESTS: its memcached_purge() reads and
 * discards the replies of buffered commands, so a failed set is invisible.
 * libmemcached still decides which server a key belongs to (writer.c). */
#ifndef K2MC_MCCONN_H
#define K2MC_MCCONN_H

#include <stddef.h>
#include <stdint.h>

#include "workers/mccodec.h" /* enum mc_reply; the commands and replies */
#include "workers/transport.h"

struct k2mc_config;
struct k2mc_server;

enum mc_exchange {
	MC_X_DONE = 0,   /* every queued command has its reply */
	MC_X_PENDING,    /* the time slice ran out; the connection is intact, call again */
	MC_X_FAILED,     /* the connection broke and was closed; queued commands are
			  * kept for a resend on a new connection */
};

struct mc_conn;

/* --mc-protocol; the same values as config.h's enum k2mc_mc_protocol */
enum mcconn_protocol {
	MCCONN_PROTO_AUTO = 0, /* "version" decides: meta for memcached >= 1.6.10, else
				* classic; a peer that closes on a probe (a proxy) or
				* answers an unknown-command error is classic, not down */
	MCCONN_PROTO_META,     /* meta or nothing: a server that does not answer "mn"
				* with "MN", or names a memcached < 1.6.10, is refused
				* (connect fails with the reason) */
	MCCONN_PROTO_TEXT,     /* classic only, not one probe (twemproxy closes on them) */
};

struct mcconn_opts {
	enum mcconn_protocol protocol;
	/* NULL or !enabled: plain; must outlive the connection */
	const struct transport_tls *tls;
	/* the value limit when the server does not say (no "stats settings":
	 * a proxy, --mc-protocol text): --max-value-bytes, 0 = memcached's
	 * default 1 MiB; which one is logged once per server */
	size_t fallback_limit;
};

/* A connection to addr (TCP, or a unix socket) with these options (NULL:
 * auto, plain, 1 MiB fallback). NULL with the reason in err (out of memory,
 * unreadable TLS files, a wrong key password). Not connected yet. */
struct mc_conn *mcconn_new_opts(const struct transport_addr *addr, const struct mcconn_opts *o,
				char *err, size_t errlen);
/* TCP, auto, plain (the tools and older callers). */
struct mc_conn *mcconn_new(const char *host, int port);

/* From k2mc's configuration: a connection to one -m server (TCP or unix
 * socket), with --mc-protocol, --mc-tls* and --max-value-bytes as the
 * fallback limit. cfg must outlive it. --mc-tls-insecure is warned about
 * once per process. NULL with the reason in err (mcconn_new_opts). */
struct mc_conn *mcconn_new_server(const struct k2mc_server *s, const struct k2mc_config *cfg,
				  char *err, size_t errlen);
/* A -m server as metrics, JSON and logs' server field name it: "host:port",
 * "[v6addr]:port", or "unix:PATH"; at most K2MC_SERVER_LABEL_MAX bytes with
 * the NUL (transport_addr_label). */
#define K2MC_SERVER_LABEL_MAX (sizeof(((struct k2mc_server *)0)->host) + 16)
void k2mc_server_label(const struct k2mc_server *srv, char *buf, size_t len);
/* cfg's TLS settings as the transport takes them (for a start-up check:
 * transport_tls_check, e.g. under --check-config). */
void mcconn_tls_from_config(const struct k2mc_config *cfg, struct transport_tls *tls);
void mcconn_free(struct mc_conn *c);
/* Its waits (connect, handshake, mcconn_exchange) end within 100 ms once
 * *flag is non-zero: the writers' abort (transport_set_cancel). */
void mcconn_set_cancel(struct mc_conn *c, const _Atomic int *flag);
const char *mcconn_name(const struct mc_conn *c);
/* The reason for the last failure, for logs ("connection refused"). */
const char *mcconn_error(const struct mc_conn *c);

/* Connects if not connected: 0, or -errno (connection left closed). The
 * dialect ("version") and the item size limit ("stats settings") are read
 * here, on every (re)connect, within timeout_ms in all (--mc-protocol text:
 * no probes). A peer that closes the connection on a probe (a proxy such as
 * twemproxy) is connected to again: classic, the fallback limit, and no
 * probes on its later connects. For TLS the handshake and the certificate
 * check come first: a server that fails them gets no byte of k2mc's
 * (-EACCES, "TLS: certificate verify failed: <reason>"). A
 * connection the server closed while idle (memcached -o idle_timeout) is
 * noticed here (poll with no wait, while no byte of the batch is sent) and
 * remade quietly: that is not a failure. So call it before every exchange
 * round, connected or not, and check mcconn_batch_stale after it.
 * -EUSERS: the server is at its connection limit (memcached -c answers
 * "ERROR Too many open connections" and closes): alive, but full. */
int mcconn_ensure(struct mc_conn *c, int timeout_ms);
int mcconn_connected(const struct mc_conn *c);
/* Closes the connection if its batch is complete (every reply read, or
 * nothing queued), keeping the batch and its replies as they are: its slot
 * on the server is free for another client, and the next mcconn_ensure
 * connects again. 1 if it closed it. */
int mcconn_release(struct mc_conn *c);
/* 1 if this connection speaks the meta dialect (memcached >= 1.6.10). */
int mcconn_meta(const struct mc_conn *c);
/* The largest item the server takes, as of the last connect: its
 * item_size_max from "stats settings", or where it does not say (a proxy,
 * --mc-protocol text) the fallback (struct mcconn_opts). 0 before the first
 * connect. */
size_t mcconn_item_limit(const struct mc_conn *c);
/* 1 if mcconn_item_limit came from the server itself. */
int mcconn_item_limit_known(const struct mc_conn *c);
/* 1 if the connection is TLS. */
int mcconn_tls(const struct mc_conn *c);
/* "1.6.18" as the server last said, or "" if unknown. */
const char *mcconn_version(const struct mc_conn *c);
/* Connections remade after an idle close, without counting a failure. */
uint64_t mcconn_idle_reconnects(const struct mc_conn *c);

/* Queue commands for the next exchange. Key must already be valid. Only
 * between mcconn_reset_batch and the batch's first exchange (a meta batch
 * ends with "mn" once exchanged). 0, or -ENOMEM (nothing queued; the batch
 * so far is intact and can still be exchanged). */
int mcconn_queue_set(struct mc_conn *c, const char *key, size_t klen, const void *val,
		     size_t vlen, uint32_t flags, uint32_t exptime);
int mcconn_queue_delete(struct mc_conn *c, const char *key, size_t klen);
/* Meta only: "md <key> I T<grace_s>": the item is marked stale (readers that
 * use meta stale-while-revalidate get it with X/W flags) and lives grace_s
 * more seconds; a missing key answers like a delete's. -EPROTONOSUPPORT
 * (nothing queued) when the batch is in the classic dialect, which has no
 * invalidation: the caller decides (writer.c deletes instead). */
int mcconn_queue_invalidate(struct mc_conn *c, const char *key, size_t klen, uint32_t grace_s);
/* Bytes of serialized commands queued (for the batch byte bound). */
size_t mcconn_queued_bytes(const struct mc_conn *c);
size_t mcconn_queued(const struct mc_conn *c);
/* Every queued command has its reply (true for an empty batch). */
int mcconn_done(const struct mc_conn *c);
/* The queued commands were written in the other dialect than the one the
 * (re)made connection speaks (the server was replaced): reset the batch
 * and queue its commands again. Nothing is sent in that state. */
int mcconn_batch_stale(const struct mc_conn *c);
/* After a complete exchange: send the same commands again (on a server
 * error reply; sets and deletes are idempotent, and resending all of them
 * keeps each key's commands in order). */
void mcconn_rewind(struct mc_conn *c);
/* Forget queued commands and replies. If the connection still owes replies
 * or holds a partly sent command (a batch given up), it is closed, quietly:
 * the next batch must never read the old batch's replies. */
void mcconn_reset_batch(struct mc_conn *c);

/* Sends what is queued and reads replies on up to n connections at once,
 * for at most slice_ms, less once a connection's cancel flag is set
 * (mcconn_set_cancel: it returns within 100 ms, pending ones MC_X_PENDING). Each connection's result is in results[i]. Reply i
 * of a connection is mcconn_reply(c, i) once its result is MC_X_DONE.
 * send_until_ms (CLOCK_BOOTTIME ms, the fence clock; INT64_MAX = no limit):
 * no byte is sent once that clock has passed it, checked before every
 * send(); replies are still read. A connection that still has bytes to send
 * then stays MC_X_PENDING. */
void mcconn_exchange(struct mc_conn **conns, size_t n, int slice_ms, int64_t send_until_ms,
		     enum mc_exchange *results);
enum mc_reply mcconn_reply(const struct mc_conn *c, size_t i);
/* The text of the last error reply (SERVER_ERROR ..., CLIENT_ERROR ...,
 * ERROR), control bytes escaped, for logs; "" if none in this batch. Set as
 * soon as the line arrives, so it also explains a batch that stays PENDING
 * (a server that answers errors and never "MN"); kept across
 * mcconn_rewind, cleared by mcconn_reset_batch. */
const char *mcconn_last_reply_text(const struct mc_conn *c);
/* For a batch that stays PENDING: "" if no reply bytes are held, else what
 * the server left ("stopped in the middle of a reply line: 'STOR' and no
 * CRLF"), escaped. Valid until the next call. */
const char *mcconn_partial_reply(struct mc_conn *c);

/* Fuzzing and tests only: the reply parser without a socket. As if the
 * queued batch had been sent in full (a meta batch terminated first) and
 * these bytes had arrived from the server. 0 (mcconn_done says whether the
 * batch is complete), or -EPROTO (reason in mcconn_error; the replies are
 * cleared, as when an exchange fails). */
int mcconn_feed(struct mc_conn *c, const void *bytes, size_t len);

#endif
