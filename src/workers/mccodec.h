/* The memcached protocol without a socket: commands serialized into one
 * batch in one dialect (meta or classic text), and the parser that matches
 * the server's reply lines to them. Both clients use it: the writers'
 * pipelined connections (mcconn.c) and --refill (refill.c, classic "add"
 * and "delete", and the one-request probes of its detection). Not I/O
 * (transport.c), not the handshake or the choice of dialect (mcconn.c).
 * Data is data: a value only ever travels as a length-prefixed data block
 * (classic "set <key> <flags> <exptime> <bytes>", meta "ms <key> <datalen>",
 * the latter only to servers whose "ms" syntax is that: mcconn.c decides),
 * and callers queue keys they checked (<= 250 bytes, no whitespace or
 * control characters: mapping.c, refill.c's sentinel_key). */
#ifndef K2MC_MCCODEC_H
#define K2MC_MCCODEC_H

#include <stddef.h>
#include <stdint.h>

enum mc_reply {
	MC_NONE = 0,     /* no reply read yet */
	MC_STORED,       /* set applied */
	MC_DELETED,      /* delete applied */
	MC_NOT_FOUND,    /* delete of a missing key: the desired state holds */
	MC_TOO_LARGE,    /* SERVER_ERROR object too large for cache: the record's
			  * fault (memcached also dropped the key's old item) */
	MC_OOM,          /* SERVER_ERROR out of memory ...: retry */
	MC_SERVER_ERROR, /* any other SERVER_ERROR: retry */
	MC_CLIENT_ERROR, /* CLIENT_ERROR or ERROR: k2mc checked the command before
			  * sending it, so this is not known to be the record's
			  * fault; a server failure, retried */
	MC_NOT_STORED,   /* "add" only: the key was there (refill.c) */
};

/* One batch: its commands serialized, and one reply slot per command. The
 * fields are this module's; its users read them (out, out_len, ncmds,
 * complete, meta) and advance out_sent as the bytes leave. Owned by one
 * thread. Zeroed (= {0}) is an empty batch; mccodec_free releases it. */
struct mccodec {
	/* meta dialect (1) or classic (0) of the commands queued now: fixed by
	 * the first command of a batch */
	int meta;
	/* meta: the batch was terminated with "mn" / is being replayed verbose /
	 * an error line arrived while quiet / the last command, sent without
	 * 'q', has answered (its reply must come before "MN": a server that
	 * answers "MN" before it read the whole batch is caught by it) */
	int terminated, verbose, quiet_error, last_answered;
	/* every command of the batch has its reply */
	int complete;
	/* the serialized commands; out_sent: how many of them the server has
	 * (the sender's; the parser reads it: no reply can precede its command) */
	char *out;
	size_t out_len, out_cap, out_sent;
	/* one slot per queued command; MC_NONE until its reply is read */
	uint8_t *replies;
	/* per command: enum kind in mccodec.c (what its HD or STORED means) */
	uint8_t *kind;
	/* meta: offset of each command's 'q' flag in out, flipped on replay;
	 * size_t, as a batch may pass 4 GiB */
	size_t *qpos;
	size_t ncmds, nreplies, cmd_cap;
	/* the last error reply of this batch, escaped (mcconn_last_reply_text) */
	char last_reply[256];
};

void mccodec_free(struct mccodec *b);

/* Queue one command. meta: the dialect, for the batch's first command (a
 * later command takes the batch's). Key must already be valid. 0, or
 * -ENOMEM (nothing queued; the batch so far is intact). Room for the "mn"
 * that ends a meta batch is kept, so mccodec_terminate never allocates. */
int mccodec_queue_set(struct mccodec *b, int meta, const char *key, size_t klen,
		      const void *val, size_t vlen, uint32_t flags, uint32_t exptime);
int mccodec_queue_delete(struct mccodec *b, int meta, const char *key, size_t klen);
/* Meta only: "md <key> I T<grace_s>" (mcconn.h). -EPROTONOSUPPORT (nothing
 * queued) when the batch is classic. */
int mccodec_queue_invalidate(struct mccodec *b, int meta, const char *key, size_t klen,
			     uint32_t grace_s);
/* Classic only: "add <key> <flags> <exptime> <bytes>", stored only if the
 * key is absent (MC_STORED, or MC_NOT_STORED). -EPROTONOSUPPORT (nothing
 * queued) when the batch is meta. */
int mccodec_queue_add(struct mccodec *b, const char *key, size_t klen, const void *val,
		      size_t vlen, uint32_t flags, uint32_t exptime);

/* Before the first byte is sent: a meta batch ends with "mn", its last
 * command sent without 'q' so that it answers before "MN". Classic, empty
 * or already terminated: nothing. */
void mccodec_terminate(struct mccodec *b);
/* Every reply forgotten, out_sent 0: the same commands are sent again. */
void mccodec_rewind(struct mccodec *b);
/* Every command forgotten (buffers kept). */
void mccodec_reset(struct mccodec *b);

static inline enum mc_reply mccodec_reply(const struct mccodec *b, size_t i)
{
	return i < b->ncmds ? (enum mc_reply)b->replies[i] : MC_NONE;
}

/* Parses the complete reply lines in in[0, *in_len) (a buffer of in_cap
 * bytes), keeps what is left of an unfinished line at its start. 0, or
 * -EPROTO with the reason in err for a reply no command of the batch can
 * produce (a line out of place, bytes after the last reply, a line of
 * in_cap bytes without CRLF): the stream cannot be trusted. A meta batch
 * whose quiet replies held an error is rewound for a verbose replay
 * (out_sent 0: send it again). */
int mccodec_parse(struct mccodec *b, char *in, size_t *in_len, size_t in_cap, char *err,
		  size_t errlen);

/* ---- one request, its whole reply (refill.c's detection, classic) ---------
 * A reply's length once b[0, n) holds it whole, 0 while incomplete, -1 if it
 * cannot be one: "get" (VALUE <key> <flags> <bytes>, the data, END; or END;
 * or one error line; a data block of at most max bytes), "stats" (STAT lines
 * to END, or one error line), a one-line reply. */
long mccodec_whole_get(const char *b, size_t n, size_t max);
long mccodec_whole_stats(const char *b, size_t n);
long mccodec_whole_line(const char *b, size_t n);
/* "get <key>\r\n" into buf (cap >= klen + 6): its length. */
size_t mccodec_get_request(char *buf, const char *key, size_t klen);
/* 1 if the whole reply b[0, n) is the line word (no CRLF in word). */
int mccodec_line_is(const char *b, size_t n, const char *word);
/* One line of a "stats" reply, without its CRLF: 1 if it is "STAT <name>
 * <u64>" (the number in *v), 0 if it is another line, -1 if it is that stat
 * with a value that is not a number (mcconn.c's handshake reads line by
 * line). */
int mccodec_stat_line(const char *line, size_t len, const char *name, uint64_t *v);
/* The value of "STAT <name> <u64>" in a whole "stats" reply: 0, or -1 if
 * absent or not a number. */
int mccodec_stat_u64(const char *b, size_t n, const char *name, uint64_t *v);

/* ---- text helpers (mcconn.c's handshake too) -------------------------------*/

/* Text from the server into dst for a log line: printable ASCII as is,
 * "\r" "\n" "\t" "\\" and "\xNN" for every other byte, so that a reply can
 * neither break a log line nor send a terminal control sequence. Cut with
 * "..." when it does not fit (cap >= 4). */
void mccodec_escape(char *dst, size_t cap, const char *src, size_t len);
/* Decimal digits at s[0, len) into *v: how many were read (0 if none, or
 * if the number passes max). */
size_t mccodec_digits(const char *s, size_t len, uint64_t max, uint64_t *v);

#endif
