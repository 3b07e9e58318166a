/* One pipelined, acknowledged connection to one memcached server (text or
 * meta protocol): commands are queued, sent together, and every command's
 * outcome is known before the batch counts as done. Owned by one writer
 * thread; not thread-safe.
 * Why not libmemcached's BUFFER_REQUESTS: its memcached_purge() reads and
 * discards the replies of buffered commands, so a failed set is invisible.
 * libmemcached still decides which server a key belongs to (writer.c). */
#ifndef K2MC_MCCONN_H
#define K2MC_MCCONN_H

#include <stddef.h>
#include <stdint.h>

enum mc_reply {
	MC_NONE = 0,     /* no reply read yet */
	MC_STORED,       /* set applied */
	MC_DELETED,      /* delete applied */
	MC_NOT_FOUND,    /* delete of a missing key: the desired state holds */
	MC_TOO_LARGE,    /* SERVER_ERROR object too large for cache */
	MC_SERVER_ERROR, /* any other SERVER_ERROR (out of memory...): retry */
	MC_CLIENT_ERROR, /* the server refused the command itself */
};

enum mc_exchange {
	MC_X_DONE = 0,   /* every queued command has its reply */
	MC_X_PENDING,    /* the time slice ran out; the connection is intact, call again */
	MC_X_FAILED,     /* the connection broke and was closed; queued commands are
			  * kept for a resend on a new connection */
};

struct mc_conn;

struct mc_conn *mcconn_new(const char *host, int port);
void mcconn_free(struct mc_conn *c);
const char *mcconn_name(const struct mc_conn *c);
/* The reason for the last failure, for logs ("connection refused"). */
const char *mcconn_error(const struct mc_conn *c);

/* Connects if not connected: 0, or -errno (connection left closed). The
 * dialect is chosen here: meta commands when the server answers "mn". */
int mcconn_ensure(struct mc_conn *c, int timeout_ms);
int mcconn_connected(const struct mc_conn *c);
/* 1 if this connection speaks the meta dialect (memcached >= 1.6). */
int mcconn_meta(const struct mc_conn *c);

/* Queue commands for the next exchange. Key must already be valid. */
void mcconn_queue_set(struct mc_conn *c, const char *key, size_t klen, const void *val,
		      size_t vlen, uint32_t flags, uint32_t exptime);
void mcconn_queue_delete(struct mc_conn *c, const char *key, size_t klen);
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
/* Forget queued commands and replies (after they were all handled). */
void mcconn_reset_batch(struct mc_conn *c);

/* Sends what is queued and reads replies on up to n connections at once,
 * for at most slice_ms. Each connection's result is in results[i]. Reply i
 * of a connection is mcconn_reply(c, i) once its result is MC_X_DONE. */
void mcconn_exchange(struct mc_conn **conns, size_t n, int slice_ms, enum mc_exchange *results);
enum mc_reply mcconn_reply(const struct mc_conn *c, size_t i);
/* The text of the last error reply (SERVER_ERROR ...), for logs. */
const char *mcconn_last_reply_text(const struct mc_conn *c);

/* Asks "stats settings" for item_size_max: 0 and *out, or -errno. */
int mcconn_item_size_max(struct mc_conn *c, int timeout_ms, size_t *out);

#endif
