/* fake_mc: a memcached impostor on a loopback port, served by a thread of
 * the test process, for the replies no real server gives on demand: memcached
 * 1.6.9's reading of "ms" (a value becomes the next command line), a proxy
 * that closes on probes, CLIENT_ERROR to everything, out of memory, control
 * bytes, an endless line, slow answers. It records every command line it
 * parsed, so a test can assert what was executed. Not a cache: one connection
 * at a time, a few keys, no expiry. Also a tiny blocking client for a real
 * server's "stats" (fake_mc_stat). */
#ifndef K2MC_TEST_FAKE_MC_H
#define K2MC_TEST_FAKE_MC_H

#include <stddef.h>
#include <stdint.h>

enum fake_ms {
	FAKE_MS_NONE, /* "ms", "md", "mn" answer ERROR (memcached < 1.5.19) */
	FAKE_MS_169,  /* 1.5.19 .. 1.6.9: "ms <key> <flag>*" with S<size>; a token
		       * that is not a known flag is "CLIENT_ERROR invalid flag"
		       * and no data block is read: the next line is a command */
	FAKE_MS_1610, /* >= 1.6.10: "ms <key> <datalen> <flag>*" */
};

struct fake_mc_opts {
	/* reply line to "version", without CRLF; NULL: "ERROR" */
	const char *version;
	enum fake_ms ms;
	/* close the connection, unanswered, on a command line starting with
	 * this word ("version", "stats"); NULL: never */
	const char *close_on;
	/* raw reply (CRLFs included) instead of the default one, NULL for the
	 * default: to "stats settings" (default "STAT item_size_max <n>" and
	 * "END", n = item_size_max or 1 MiB); to every set or ms once its data
	 * block is read; to every command line at all (data blocks of sets
	 * still read first) */
	const char *stats_reply;
	size_t item_size_max;
	const char *store_reply;
	const char *all_reply;
	/* "mn" is read and never answered */
	int mute_mn;
	/* the first refuse_count connections get these bytes at once, unasked,
	 * and are closed (memcached at its -c limit: "ERROR Too many open
	 * connections\r\n") */
	const char *refuse;
	int refuse_count;
	/* wait this long before each reply */
	int delay_ms;
	/* misbehaviours (issue 9): close the connection right after the n-th
	 * reply to a set or ms (0: never); answer "MN" as soon as the first
	 * "ms" of a connection is read, before the rest of the batch */
	int close_after_stores;
	int early_mn;
};

struct fake_mc;

/* Listens on 127.0.0.1 (a free port) and serves from a thread whose signals
 * are blocked. NULL on failure (errno set). */
struct fake_mc *fake_mc_start(const struct fake_mc_opts *o);
int fake_mc_port(const struct fake_mc *f);
/* Stops the thread, closes everything, frees f (NULL is fine). */
void fake_mc_stop(struct fake_mc *f);
/* Closes the connection being served, as an idle timeout would. Returns
 * once it is closed. */
void fake_mc_drop(struct fake_mc *f);

/* Command lines parsed so far (data blocks are not lines), in order. */
size_t fake_mc_nlines(struct fake_mc *f);
/* Line i copied into buf (NUL-terminated, cut to len); returns the number of
 * the connection it came on (1 = the first accepted), or -1 if i is out of
 * range. */
int fake_mc_line(struct fake_mc *f, size_t i, char *buf, size_t len);
/* Connections accepted so far. */
int fake_mc_connections(struct fake_mc *f);
/* Waits until at least n command lines were parsed: 0 or -ETIMEDOUT. */
int fake_mc_wait_lines(struct fake_mc *f, size_t n, int timeout_ms);
/* The value stored under key, copied into buf: its length, or -1 if the key
 * is not stored. */
long fake_mc_get(struct fake_mc *f, const char *key, char *buf, size_t len);
/* Number of keys stored. */
size_t fake_mc_items(struct fake_mc *f);

/* One "stats" of a real server on 127.0.0.1:port (a fresh connection): the
 * value of "STAT <name> <value>". 0, or -errno (-ENOENT: no such stat). */
int fake_mc_stat(int port, const char *name, uint64_t *value);

/* "get key" from a real server on 127.0.0.1:port (a fresh connection): the
 * value's length (its bytes copied into buf, cut to len - 1, NUL-terminated),
 * -1 if the key is not there, or -errno - 1 when the get failed. */
long fake_mc_fetch(int port, const char *key, char *buf, size_t len);

#endif
