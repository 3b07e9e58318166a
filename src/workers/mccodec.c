/* The memcached protocol, without a socket; see mccodec.h. Not I/O and not
 * the handshake (mcconn.c).
 * Two dialects; the caller says which, per batch (mcconn.c: from the
 * server's "version", never from "mn": 1.5.19 to 1.6.9 answer "MN" too but
 * read "ms <key> 9 q" as a bad flag and then run the 9-byte value as the
 * next command line; a value "flush_all" flushed the cache):
 *  - meta, for memcached >= 1.6.10 (the release that made the syntax
 *    "ms <key> <datalen> <flags>*"): "ms key len q" / "md key q O<i>", then
 *    "mn". Quiet mode suppresses the success replies, so the server writes
 *    and we parse one "MN" per batch instead of one line per record
 *    (measured here: 40% less memcached CPU, 4x less client CPU than
 *    "set"/"STORED"). A delete of a missing key still answers "NF O<i>".
 *    Error lines carry no opaque, so a batch that gets one is sent again with
 *    each 'q' flipped to 'k' (return key): every command then answers, in
 *    order, and each error is placed.
 *  - classic "set"/"add"/"delete" for everything else (older, unknown,
 *    proxies): one reply line per command; the value is a length-prefixed
 *    data block that no server can read as a command.
 * Replies are matched to commands by position: memcached answers the
 * commands of one connection in the order it received them. */
#include "workers/mccodec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for the "mn\r\n" that ends a meta batch, reserved by every queue call
 * so that mccodec_terminate never allocates. */
#define MN_ROOM 4

/* What a command is, for what its reply means: HD / STORED is "stored" for
 * a set or an add and "deleted" for a delete (and an invalidate, answered
 * as a delete is); NOT_STORED only answers an add. */
enum kind {
	K_SET = 0,
	K_DELETE,
	K_ADD,
};

void mccodec_free(struct mccodec *b)
{
	free(b->out);
	free(b->replies);
	free(b->kind);
	free(b->qpos);
	*b = (struct mccodec){ 0 };
}

void mccodec_rewind(struct mccodec *b)
{
	b->out_sent = 0;
	b->nreplies = 0;
	b->quiet_error = 0;
	b->last_answered = 0;
	b->complete = b->ncmds == 0;
	if (b->replies != NULL)
		memset(b->replies, MC_NONE, b->ncmds);
}

void mccodec_reset(struct mccodec *b)
{
	b->out_len = 0;
	b->out_sent = 0;
	b->ncmds = 0;
	b->nreplies = 0;
	b->terminated = 0;
	b->verbose = 0;
	b->quiet_error = 0;
	b->last_answered = 0;
	b->complete = 1;
	b->last_reply[0] = '\0';
}

/* ---- text ---------------------------------------------------------------------*/

void mccodec_escape(char *dst, size_t cap, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char b = (unsigned char)src[i];
		char e[4];
		size_t n = 2;

		e[0] = '\\';
		if (b >= 0x20 && b < 0x7f && b != '\\') {
			e[0] = (char)b;
			n = 1;
		} else if (b == '\r') {
			e[1] = 'r';
		} else if (b == '\n') {
			e[1] = 'n';
		} else if (b == '\t') {
			e[1] = 't';
		} else if (b == '\\') {
			e[1] = '\\';
		} else {
			e[1] = 'x';
			e[2] = hex[b >> 4];
			e[3] = hex[b & 15];
			n = 4;
		}
		/* the previous round left room for "..." and the NUL */
		if (o + n + (i + 1 < len ? 3 : 0) + 1 > cap) {
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(dst + o, e, n);
		o += n;
	}
	dst[o] = '\0';
}

static int starts(const char *line, size_t len, const char *lit)
{
	size_t n = strlen(lit);

	return len >= n && memcmp(line, lit, n) == 0;
}

size_t mccodec_digits(const char *s, size_t len, uint64_t max, uint64_t *v)
{
	size_t i = 0;

	*v = 0;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
		uint64_t d = (uint64_t)(s[i] - '0');

		if (*v > (max - d) / 10)
			return 0;
		*v = *v * 10 + d;
	}
	return i;
}

/* ---- queueing ----------------------------------------------------------------*/

static int reserve(char **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 4096;
	char *n;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
	n = realloc(*buf, ncap);
	if (n == NULL)
		return -ENOMEM;
	*buf = n;
	*cap = ncap;
	return 0;
}

/* Room for one more command in the per-command arrays. Each array that
 * grew keeps its new size; cmd_cap moves only when all three have. */
static int cmd_room(struct mccodec *b)
{
	size_t ncap = b->cmd_cap ? b->cmd_cap * 2 : 1024;
	uint8_t *r, *d;
	size_t *q;

	if (b->ncmds < b->cmd_cap)
		return 0;
	if (ncap > SIZE_MAX / sizeof(*q))
		return -ENOMEM;
	r = realloc(b->replies, ncap);
	if (r == NULL)
		return -ENOMEM;
	b->replies = r;
	d = realloc(b->kind, ncap);
	if (d == NULL)
		return -ENOMEM;
	b->kind = d;
	q = realloc(b->qpos, ncap * sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	b->qpos = q;
	b->cmd_cap = ncap;
	return 0;
}

/* Room for a command of at most len bytes plus the batch's "mn". */
static int room(struct mccodec *b, size_t len)
{
	if (len > SIZE_MAX / 4 || b->out_len > SIZE_MAX / 4)
		return -ENOMEM;
	if (reserve(&b->out, &b->out_cap, b->out_len + len + MN_ROOM) != 0 || cmd_room(b) != 0)
		return -ENOMEM;
	return 0;
}

static void add_cmd(struct mccodec *b, enum kind kind, size_t qpos)
{
	b->complete = 0;
	b->replies[b->ncmds] = MC_NONE;
	b->kind[b->ncmds] = (uint8_t)kind;
	b->qpos[b->ncmds] = qpos;
	b->ncmds++;
}

/* Decimal digits of v at p; returns their count. snprintf showed up in the
 * writer's profile at 5% for the numbers of each command line. */
static size_t put_digits(char *p, uint64_t v)
{
	char tmp[24];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (size_t i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

/* " <decimal>" (classic arguments) or " <tag><decimal>" (meta flags). */
static size_t put_num(char *p, uint64_t v)
{
	p[0] = ' ';
	return 1 + put_digits(p + 1, v);
}

static size_t put_flag(char *p, char tag, uint64_t v)
{
	p[0] = ' ';
	p[1] = tag;
	return 2 + put_digits(p + 2, v);
}

/* "<verb> <key> <flags> <exptime> <bytes>" at p, the line of a classic set
 * or add (its CRLF and data block follow); returns its length. */
static size_t put_storage(char *p, const char *verb, const char *key, size_t klen,
			  uint32_t flags, uint32_t exptime, size_t vlen)
{
	size_t n = strlen(verb);
	char *start = p;

	memcpy(p, verb, n);
	memcpy(p + n, key, klen);
	p += n + klen;
	p += put_num(p, flags);
	p += put_num(p, exptime);
	p += put_num(p, vlen);
	return (size_t)(p - start);
}

/* "md <key> q O<index>" at p, the index the next command's and the offset
 * of its 'q' in out into *qpos (meta delete and invalidate: a miss answers
 * "NF O<index>" even quietly); returns its length. */
static size_t put_md(struct mccodec *b, char *p, const char *key, size_t klen, size_t *qpos)
{
	char *start = p;

	memcpy(p, "md ", 3);
	memcpy(p + 3, key, klen);
	p += 3 + klen;
	*qpos = (size_t)(p - b->out) + 1;
	memcpy(p, " q", 2);
	p += 2;
	p += put_flag(p, 'O', b->ncmds);
	return (size_t)(p - start);
}

int mccodec_queue_set(struct mccodec *b, int meta, const char *key, size_t klen,
		      const void *val, size_t vlen, uint32_t flags, uint32_t exptime)
{
	char *p, *start;
	size_t qpos = 0;

	/* a command line is at most 250 bytes of key plus 3 numbers of at most
	 * 20 digits and their separators: 80 bytes of room beyond key + value */
	if (vlen > SIZE_MAX / 4 || room(b, klen + vlen + 80) != 0)
		return -ENOMEM;
	start = p = b->out + b->out_len;
	if (b->ncmds == 0)
		b->meta = meta;
	if (b->meta) {
		/* ms <key> <datalen> q [F<flags>] [T<ttl>] (>= 1.6.10 only) */
		memcpy(p, "ms ", 3);
		memcpy(p + 3, key, klen);
		p += 3 + klen;
		p += put_num(p, vlen);
		qpos = (size_t)(p - b->out) + 1;
		memcpy(p, " q", 2);
		p += 2;
		if (flags != 0)
			p += put_flag(p, 'F', flags);
		if (exptime != 0)
			p += put_flag(p, 'T', exptime);
	} else {
		/* set <key> <flags> <exptime> <bytes>: the data block follows */
		p += put_storage(p, "set ", key, klen, flags, exptime, vlen);
	}
	memcpy(p, "\r\n", 2);
	memcpy(p + 2, val, vlen);
	memcpy(p + 2 + vlen, "\r\n", 2);
	b->out_len += (size_t)(p + 4 + vlen - start);
	add_cmd(b, K_SET, qpos);
	return 0;
}

int mccodec_queue_delete(struct mccodec *b, int meta, const char *key, size_t klen)
{
	char *p, *start;
	size_t qpos = 0;

	if (room(b, klen + 48) != 0)
		return -ENOMEM;
	start = p = b->out + b->out_len;
	if (b->ncmds == 0)
		b->meta = meta;
	if (b->meta) {
		p += put_md(b, p, key, klen, &qpos);
	} else {
		memcpy(p, "delete ", 7);
		memcpy(p + 7, key, klen);
		p += 7 + klen;
	}
	memcpy(p, "\r\n", 2);
	b->out_len += (size_t)(p + 2 - start);
	add_cmd(b, K_DELETE, qpos);
	return 0;
}

int mccodec_queue_invalidate(struct mccodec *b, int meta, const char *key, size_t klen,
			     uint32_t grace_s)
{
	char *p, *start;
	size_t qpos;

	if (!(b->ncmds == 0 ? meta : b->meta))
		return -EPROTONOSUPPORT;
	if (room(b, klen + 64) != 0)
		return -ENOMEM;
	start = p = b->out + b->out_len;
	if (b->ncmds == 0)
		b->meta = meta;
	/* md <key> q O<index> I T<grace>: answered as a delete is (HD, or
	 * "NF O<index>" for a missing key even quietly) */
	p += put_md(b, p, key, klen, &qpos);
	memcpy(p, " I", 2);
	p += 2;
	p += put_flag(p, 'T', grace_s);
	memcpy(p, "\r\n", 2);
	b->out_len += (size_t)(p + 2 - start);
	add_cmd(b, K_DELETE, qpos);
	return 0;
}

int mccodec_queue_add(struct mccodec *b, const char *key, size_t klen, const void *val,
		      size_t vlen, uint32_t flags, uint32_t exptime)
{
	char *p, *start;

	if (b->ncmds > 0 && b->meta)
		return -EPROTONOSUPPORT;
	if (vlen > SIZE_MAX / 4 || room(b, klen + vlen + 80) != 0)
		return -ENOMEM;
	start = p = b->out + b->out_len;
	b->meta = 0;
	/* add <key> <flags> <exptime> <bytes>: stored only if absent */
	p += put_storage(p, "add ", key, klen, flags, exptime, vlen);
	memcpy(p, "\r\n", 2);
	memcpy(p + 2, val, vlen);
	memcpy(p + 2 + vlen, "\r\n", 2);
	b->out_len += (size_t)(p + 4 + vlen - start);
	add_cmd(b, K_ADD, 0);
	return 0;
}

void mccodec_terminate(struct mccodec *b)
{
	if (!b->meta || b->terminated || b->ncmds == 0)
		return;
	if (!b->verbose)
		b->out[b->qpos[b->ncmds - 1]] = 'k';
	memcpy(b->out + b->out_len, "mn\r\n", 4);
	b->out_len += 4;
	b->terminated = 1;
}

/* ---- replies ----------------------------------------------------------------*/

/* What meta_line / classic_line return besides 0: the line is not a reply
 * any command of the batch can produce (mccodec_parse names it), or the
 * reason is already in err. */
#define BAD_LINE (-1)
#define BAD_SAID (-2)

/* Error lines are the same in both dialects. Returns the reply, or -1 if
 * the line is not an error line. Only "object too large" is known to be the
 * record's fault; k2mc checked every command before queueing it, so any
 * CLIENT_ERROR or ERROR is a server (or proxy) failure, retried. */
static int classify_error(struct mccodec *b, const char *line, size_t len)
{
	int r;

	if (starts(line, len, "SERVER_ERROR")) {
		if (starts(line, len, "SERVER_ERROR object too large"))
			r = MC_TOO_LARGE;
		else if (starts(line, len, "SERVER_ERROR out of memory"))
			r = MC_OOM;
		else
			r = MC_SERVER_ERROR;
	} else if (starts(line, len, "CLIENT_ERROR") || (len == 5 && starts(line, len, "ERROR")) ||
		   starts(line, len, "ERROR ")) {
		r = MC_CLIENT_ERROR;
	} else {
		return -1;
	}
	mccodec_escape(b->last_reply, sizeof(b->last_reply), line, len);
	return r;
}

/* Classic dialect: one line per command. */
static int classic_line(struct mccodec *b, const char *line, size_t len)
{
	int r = -1;

	if (len == 6 && memcmp(line, "STORED", 6) == 0)
		r = MC_STORED;
	else if (len == 7 && memcmp(line, "DELETED", 7) == 0)
		r = MC_DELETED;
	else if (len == 9 && memcmp(line, "NOT_FOUND", 9) == 0)
		r = MC_NOT_FOUND;
	else if (len == 10 && memcmp(line, "NOT_STORED", 10) == 0 && b->nreplies < b->ncmds &&
		 b->kind[b->nreplies] == K_ADD)
		r = MC_NOT_STORED;
	else
		r = classify_error(b, line, len);
	if (r < 0 || b->nreplies == b->ncmds)
		return BAD_LINE;
	b->replies[b->nreplies++] = (uint8_t)r;
	b->complete = b->nreplies == b->ncmds;
	return 0;
}

/* What "HD" answers command i: a delete (or an invalidate) deleted, a set
 * stored. */
static uint8_t hd_reply(const struct mccodec *b, size_t i)
{
	return b->kind[i] == K_DELETE ? MC_DELETED : MC_STORED;
}

/* Flips every command's 'q' to 'k' and resends the batch: every command
 * then answers, so an error line can be matched to its command. */
static void replay_verbose(struct mccodec *b)
{
	for (size_t i = 0; i < b->ncmds; i++)
		b->out[b->qpos[i]] = 'k';
	b->verbose = 1;
	b->quiet_error = 0;
	b->last_answered = 0;
	b->out_sent = 0;
	b->nreplies = 0;
	memset(b->replies, MC_NONE, b->ncmds);
}

/* Meta dialect: quiet replies until "MN", or one line per command when
 * replaying verbose. In a quiet batch the last command is sent with 'k'
 * instead of 'q' (mcconn_exchange), so it answers: "HD k<key>", or for a
 * delete of a missing key "NF k<key> O<i>". */
static int meta_line(struct mccodec *b, const char *line, size_t len, char *err,
		     size_t errlen)
{
	size_t last = b->ncmds - 1;
	int r;

	if (len == 2 && memcmp(line, "MN", 2) == 0) {
		/* "mn" is the last thing sent: an "MN" before it went out
		 * cannot be this batch's */
		if (b->out_sent < b->out_len) {
			snprintf(err, errlen,
				 "answered 'MN' before k2mc had sent the whole batch (%zu of %zu "
				 "bytes): replies to commands it had not read",
				 b->out_sent, b->out_len);
			return BAD_SAID;
		}
		if (b->verbose) {
			if (b->nreplies != b->ncmds)
				return BAD_LINE;
		} else if (b->quiet_error) {
			replay_verbose(b);
			return 0;
		} else if (!b->last_answered) {
			/* the last command answers before "MN" is even read:
			 * without its reply, this "MN" came early */
			snprintf(err, errlen,
				 "answered 'MN' before the reply to the batch's last command: it "
				 "answered before reading the whole batch");
			return BAD_SAID;
		} else {
			for (size_t i = 0; i < b->ncmds; i++) {
				if (b->replies[i] == MC_NONE)
					b->replies[i] = hd_reply(b, i);
			}
			b->nreplies = b->ncmds;
		}
		b->complete = 1;
		return 0;
	}
	if (!b->verbose) {
		/* quiet: only misses of deletes ("NF O<i>"), errors and the
		 * last command speak */
		if (starts(line, len, "NF O")) {
			uint64_t i;

			if (mccodec_digits(line + 4, len - 4, SIZE_MAX, &i) != len - 4 ||
			    i >= b->ncmds || b->kind[i] != K_DELETE || b->replies[i] != MC_NONE)
				return BAD_LINE;
			b->replies[i] = MC_NOT_FOUND;
			if (i == last)
				b->last_answered = 1;
			return 0;
		}
		if ((len == 2 || starts(line, len, "HD ") || starts(line, len, "NF ")) &&
		    (starts(line, len, "HD") || starts(line, len, "NF"))) {
			if (b->last_answered || b->replies[last] != MC_NONE ||
			    (line[0] == 'N' && b->kind[last] != K_DELETE))
				return BAD_LINE;
			b->replies[last] = line[0] == 'N' ? MC_NOT_FOUND : hd_reply(b, last);
			b->last_answered = 1;
			return 0;
		}
		if (classify_error(b, line, len) < 0)
			return BAD_LINE;
		b->quiet_error = 1;
		return 0;
	}
	if (b->nreplies == b->ncmds)
		return BAD_LINE;
	if (starts(line, len, "HD"))
		r = hd_reply(b, b->nreplies);
	else if (starts(line, len, "NF"))
		r = MC_NOT_FOUND;
	else if ((r = classify_error(b, line, len)) < 0)
		return BAD_LINE;
	b->replies[b->nreplies++] = (uint8_t)r;
	return 0;
}

int mccodec_parse(struct mccodec *b, char *in, size_t *in_len, size_t in_cap, char *err,
		  size_t errlen)
{
	char text[160];
	size_t pos = 0;

	while (!b->complete) {
		char *nl = memchr(in + pos, '\n', *in_len - pos);
		size_t len;
		int rc;

		if (nl == NULL)
			break;
		len = (size_t)(nl - (in + pos));
		if (len > 0 && in[pos + len - 1] == '\r')
			len--;
		if (b->out_sent == 0) {
			/* nothing of this round is sent yet (a verbose replay
			 * not begun): no line can be an answer to it */
			mccodec_escape(text, sizeof(text), in + pos, len);
			snprintf(err, errlen,
				 "reply '%s' to a command not sent yet", text);
			return -EPROTO;
		}
		rc = b->meta ? meta_line(b, in + pos, len, err, errlen)
			     : classic_line(b, in + pos, len);
		if (rc == BAD_LINE) {
			mccodec_escape(text, sizeof(text), in + pos, len);
			snprintf(err, errlen, "unexpected reply '%s'", text);
		}
		if (rc != 0)
			return -EPROTO;
		pos = (size_t)(nl - in) + 1;
	}
	if (b->complete && pos < *in_len) {
		mccodec_escape(text, sizeof(text), in + pos, *in_len - pos);
		snprintf(err, errlen, "unexpected bytes after the last reply: '%s'",
			 text);
		return -EPROTO;
	}
	memmove(in, in + pos, *in_len - pos);
	*in_len -= pos;
	if (*in_len == in_cap) {
		/* no reply to set/delete is that long */
		mccodec_escape(text, sizeof(text), in, 32);
		snprintf(err, errlen, "reply line over %zu KiB without CRLF: '%s...'",
			 in_cap / 1024, text);
		return -EPROTO;
	}
	return 0;
}

/* ---- one request, its whole reply ------------------------------------------*/

/* The end of the first line of b[0..n) (past its CRLF), 0 if incomplete. */
static size_t line_end(const char *b, size_t n)
{
	const char *e = memmem(b, n, "\r\n", 2);

	return e != NULL ? (size_t)(e - b) + 2 : 0;
}

int mccodec_line_is(const char *b, size_t n, const char *word)
{
	size_t wl = strlen(word);

	return n == wl + 2 && memcmp(b, word, wl) == 0;
}

long mccodec_whole_get(const char *b, size_t n, size_t max)
{
	size_t hl = line_end(b, n), bytes = 0, total;
	char h[300];

	if (hl == 0)
		return n > sizeof(h) ? -1 : 0;
	if (hl < 6 || memcmp(b, "VALUE ", 6) != 0)
		return (long)hl;
	if (hl > sizeof(h))
		return -1;
	memcpy(h, b, hl - 2);
	h[hl - 2] = '\0';
	if (sscanf(h, "VALUE %*s %*u %zu", &bytes) != 1 || bytes > max)
		return -1;
	total = hl + bytes + 2 + 5;
	if (n < total)
		return 0;
	return memcmp(b + hl + bytes, "\r\nEND\r\n", 7) == 0 ? (long)total : -1;
}

long mccodec_whole_stats(const char *b, size_t n)
{
	for (size_t at = 0, ll; (ll = line_end(b + at, n - at)) != 0; at += ll) {
		if (mccodec_line_is(b + at, ll, "END") || ll < 5 || memcmp(b + at, "STAT ", 5) != 0)
			return (long)(at + ll);
	}
	return 0;
}

long mccodec_whole_line(const char *b, size_t n)
{
	size_t ll = line_end(b, n);

	return ll != 0 ? (long)ll : n > 1024 ? -1 : 0;
}

size_t mccodec_get_request(char *buf, const char *key, size_t klen)
{
	memcpy(buf, "get ", 4);
	memcpy(buf + 4, key, klen);
	memcpy(buf + 4 + klen, "\r\n", 2);
	return klen + 6;
}

int mccodec_stat_line(const char *line, size_t len, const char *name, uint64_t *v)
{
	size_t nl = strlen(name), vl;

	if (len < 5 + nl + 1 || memcmp(line, "STAT ", 5) != 0 || memcmp(line + 5, name, nl) != 0 ||
	    line[5 + nl] != ' ')
		return 0;
	vl = len - (5 + nl + 1);
	if (vl == 0 || vl >= 24 || mccodec_digits(line + 5 + nl + 1, vl, UINT64_MAX, v) != vl)
		return -1;
	return 1;
}

int mccodec_stat_u64(const char *b, size_t n, const char *name, uint64_t *v)
{
	for (size_t at = 0, ll; (ll = line_end(b + at, n - at)) != 0; at += ll) {
		uint64_t x;
		int r = mccodec_stat_line(b + at, ll - 2, name, &x);

		if (r < 0)
			return -1;
		if (r == 1) {
			*v = x;
			return 0;
		}
	}
	return -1;
}
