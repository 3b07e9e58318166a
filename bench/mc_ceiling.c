/* mc-ceiling: the Memcached side of k2mc's ceiling. Writes the records
 * k2mc-mock produces (bench/gen.h, same --seed/--keys/--value-size/
 * --tombstones) straight from memory to memcached, pipelined and
 * acknowledged through k2mc's own connection code (src/workers/mcconn.c), so
 * the only difference from k2mc is everything k2mc does besides writing.
 * Not a load generator for anything else, and not a correctness check.
 *
 *   mc-ceiling -m HOST:PORT|/PATH|unix:PATH --records N --keys K --value-size B
 *              [--tombstones PCT] [--seed S] [--batch B] [--conns C] [--sweep]
 *              [--tls [--tls-ca FILE] [--tls-server-name NAME] [--tls-insecure]]
 *
 * -m /PATH (or unix:PATH) writes over a unix socket; --tls over TLS (the
 * same transport k2mc uses, src/workers/transport.c), so that bench.py can
 * put TCP, unix socket and TLS side by side.
 *
 * stdout, one line:
 *   {"tool":"mc-ceiling","records":N,"seconds":S,"rps":R,"mbps":M,
 *    "batch":B,"conns":C,"cpu_user":U,"cpu_sys":Y,"transport":"tcp|unix|tls"}
 * seconds and cpu_* (this process, all threads) cover the writing only: the
 * records are generated in memory first, untimed. mbps = key + value bytes
 * per second / 1e6. --sweep tries every batch in {100, 500, 1000, 2000, 5000}
 * with every conns in {1, 2, 4} on a third of the records (at least 100,000),
 * prints a {"trial":k,...} line per trial on stderr, then runs the best with
 * all N records and prints its line. Exit status 1 when a write failed.
 *
 * C connections, one per thread, each taking a contiguous share of the stream:
 * a key's records may then reach memcached out of order across threads, so
 * the final state differs from k2mc's. That does not matter for a ceiling
 * (the same commands and bytes go over the wire), and it is what lets the
 * ceiling use any number of connections.
 *
 * --blast: the Memcached ceiling with the client's cost taken out (issue 14).
 * The whole stream is formatted first, untimed, as quiet meta commands ("ms
 * <key> <len> q" / "md <key> q"), one contiguous buffer per connection ended
 * by "mn"; each connection's thread then writes its buffer as fast as the
 * socket takes it, reading whatever comes back (quiet mode: nothing but the
 * final "MN", and error lines), over TCP only. bench.py reads the rate off
 * memcached's own counters; the line's seconds are first byte to last "MN". */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gen.h"
#include "workers/mcconn.h"

#define MCC_MAX_CONNS 64
#define MCC_MAX_BATCH 100000u
#define MCC_MAX_VALUE (64u << 20)
/* records held in memory at once: the stream is written in chunks of this
 * many bytes, each generated (untimed) before it is written (timed) */
#define MCC_CHUNK_BYTES_DEFAULT (1024ull << 20)
#define MCC_CONNECT_TIMEOUT_MS 2000
/* one exchange slice; a batch that makes no progress for MCC_STALL_MS fails */
#define MCC_SLICE_MS 1000
#define MCC_STALL_MS 30000
#define MCC_TRIAL_MIN 100000u

static const unsigned sweep_batches[] = { 100, 500, 1000, 2000, 5000 };
static const unsigned sweep_conns[] = { 1, 2, 4 };

struct opts {
	char host[256];
	int port;
	int is_unix;
	struct transport_tls tls;
	uint64_t records;
	uint32_t keys;
	uint32_t value_size;
	double tombstone_pct;
	uint64_t seed;
	unsigned batch;
	unsigned conns;
	bool sweep;
	bool blast;
	uint64_t chunk_bytes;
};

/* A window [start, start + n) of the record stream, in fixed-size slots:
 * key (GEN_KEY_LEN bytes) then value (value_size bytes). Written by the main
 * thread between runs of the writers, read by the writers during one: the
 * barriers in run() order the two. */
struct arena {
	char *slots;
	uint8_t *dead; /* 1: tombstone, the value bytes are unused */
	size_t stride;
	uint64_t cap; /* slots allocated */
	uint64_t start, n;
	struct gen g; /* positioned at start + n */
};

struct result {
	uint64_t records;
	double seconds;
	double user, sys;
	uint64_t bytes; /* key + value bytes written */
	uint64_t failed; /* replies other than STORED / DELETED / NOT_FOUND */
	bool broken; /* a connection failed or stalled */
};

struct run;

/* One writer thread with its own connection (a mc_conn is not shareable). */
struct writer {
	struct run *run;
	unsigned id;
	pthread_t thread;
	struct mc_conn *conn;
	/* per chunk, set by main before barrier `go`: the records to write */
	uint64_t lo, hi;
	/* written by this thread during a chunk, read by main after `done` */
	uint64_t failed;
	bool broken;
};

struct run {
	const struct opts *o;
	struct arena *ar;
	unsigned batch, conns;
	struct writer w[MCC_MAX_CONNS];
	/* main + writers: `go` starts a chunk, `done` ends it */
	pthread_barrier_t go, done;
	/* set by main before `go`: no chunk follows, exit */
	bool quit;
};

__attribute__((format(printf, 1, 2))) static void err(const char *fmt, ...)
{
	va_list ap;

	fputs("mc-ceiling: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(FILE *f)
{
	fputs("usage: mc-ceiling -m HOST:PORT|/PATH|unix:PATH --records N --keys K --value-size B\n"
	      "                  [--tombstones PCT] [--seed S] [--batch B] [--conns C] [--sweep]\n"
	      "                  [--blast] [--chunk-mib M] [--tls [--tls-ca FILE] [--tls-server-name NAME]\n"
	      "                  [--tls-insecure]]\n"
	      "Writes k2mc-mock's record stream straight to memcached, pipelined and\n"
	      "acknowledged, and prints one JSON line. Defaults: --keys 10000\n"
	      "--value-size 100 --seed 1 --batch 500 --conns 1 --chunk-mib 1024.\n",
	      f);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cpu_now(double *user, double *sys)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	*user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	*sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *v)
{
	char *end;
	unsigned long long x;

	errno = 0;
	if (*s == '-' || *s == '\0')
		goto bad;
	x = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || x < min || x > max)
		goto bad;
	*v = x;
	return 0;
bad:
	err("%s: expected an integer in [%" PRIu64 ", %" PRIu64 "], got \"%s\"", opt, min, max, s);
	return -EINVAL;
}

static int parse_hostport(struct opts *o, const char *s)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;

	if (s[0] == '/' || strncmp(s, "unix:", 5) == 0) {
		const char *path = s[0] == '/' ? s : s + 5;

		if (strlen(path) >= 108) {
			err("-m: unix socket path over 107 bytes");
			return -EINVAL;
		}
		snprintf(o->host, sizeof(o->host), "%s", path);
		o->port = 0;
		o->is_unix = 1;
		return 0;
	}
	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(o->host) ||
	    parse_u64("-m port", colon + 1, 1, 65535, &port)) {
		err("-m: expected HOST:PORT, got \"%s\"", s);
		return -EINVAL;
	}
	memcpy(o->host, s, (size_t)(colon - s));
	o->host[colon - s] = '\0';
	o->port = (int)port;
	return 0;
}

enum {
	OPT_RECORDS = 256,
	OPT_KEYS,
	OPT_VALUE_SIZE,
	OPT_TOMBSTONES,
	OPT_SEED,
	OPT_BATCH,
	OPT_CONNS,
	OPT_SWEEP,
	OPT_CHUNK_MIB,
	OPT_TLS,
	OPT_TLS_CA,
	OPT_TLS_NAME,
	OPT_TLS_INSECURE,
	OPT_BLAST,
};

static int parse_args(struct opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "records", required_argument, NULL, OPT_RECORDS },
		{ "keys", required_argument, NULL, OPT_KEYS },
		{ "value-size", required_argument, NULL, OPT_VALUE_SIZE },
		{ "tombstones", required_argument, NULL, OPT_TOMBSTONES },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "batch", required_argument, NULL, OPT_BATCH },
		{ "conns", required_argument, NULL, OPT_CONNS },
		{ "sweep", no_argument, NULL, OPT_SWEEP },
		{ "blast", no_argument, NULL, OPT_BLAST },
		{ "chunk-mib", required_argument, NULL, OPT_CHUNK_MIB },
		{ "tls", no_argument, NULL, OPT_TLS },
		{ "tls-ca", required_argument, NULL, OPT_TLS_CA },
		{ "tls-server-name", required_argument, NULL, OPT_TLS_NAME },
		{ "tls-insecure", no_argument, NULL, OPT_TLS_INSECURE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool have_m = false;
	uint64_t v;
	char *end;
	int c;

	*o = (struct opts){
		.keys = 10000,
		.value_size = 100,
		.seed = 1,
		.batch = 500,
		.conns = 1,
		.chunk_bytes = MCC_CHUNK_BYTES_DEFAULT,
	};
	while ((c = getopt_long(argc, argv, "m:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (parse_hostport(o, optarg))
				return -EINVAL;
			have_m = true;
			break;
		case OPT_RECORDS:
			if (parse_u64("--records", optarg, 1, UINT64_MAX / 4, &o->records))
				return -EINVAL;
			break;
		case OPT_KEYS:
			if (parse_u64("--keys", optarg, 1, GEN_MAX_KEYS, &v))
				return -EINVAL;
			o->keys = (uint32_t)v;
			break;
		case OPT_VALUE_SIZE:
			if (parse_u64("--value-size", optarg, 0, MCC_MAX_VALUE, &v))
				return -EINVAL;
			o->value_size = (uint32_t)v;
			break;
		case OPT_TOMBSTONES:
			errno = 0;
			o->tombstone_pct = strtod(optarg, &end);
			if (errno || end == optarg || *end ||
			    !(o->tombstone_pct >= 0 && o->tombstone_pct <= 100)) {
				err("--tombstones: expected a number in [0, 100], got \"%s\"",
				    optarg);
				return -EINVAL;
			}
			break;
		case OPT_SEED:
			if (parse_u64("--seed", optarg, 0, UINT64_MAX, &o->seed))
				return -EINVAL;
			break;
		case OPT_BATCH:
			if (parse_u64("--batch", optarg, 1, MCC_MAX_BATCH, &v))
				return -EINVAL;
			o->batch = (unsigned)v;
			break;
		case OPT_CONNS:
			if (parse_u64("--conns", optarg, 1, MCC_MAX_CONNS, &v))
				return -EINVAL;
			o->conns = (unsigned)v;
			break;
		case OPT_SWEEP:
			o->sweep = true;
			break;
		case OPT_BLAST:
			o->blast = true;
			break;
		case OPT_CHUNK_MIB:
			if (parse_u64("--chunk-mib", optarg, 1, 1u << 20, &v))
				return -EINVAL;
			o->chunk_bytes = v << 20;
			break;
		case OPT_TLS:
			o->tls.enabled = 1;
			break;
		case OPT_TLS_CA:
			o->tls.ca = optarg;
			break;
		case OPT_TLS_NAME:
			o->tls.server_name = optarg;
			break;
		case OPT_TLS_INSECURE:
			o->tls.insecure = 1;
			break;
		case 'h':
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc) {
		err("unexpected argument \"%s\"", argv[optind]);
		return -EINVAL;
	}
	if (!have_m || o->records == 0) {
		err("-m and --records are required");
		return -EINVAL;
	}
	return 0;
}

static int arena_init(struct arena *ar, const struct opts *o)
{
	uint64_t cap;

	ar->stride = GEN_KEY_LEN + (size_t)o->value_size;
	cap = o->chunk_bytes / ar->stride;
	if (cap == 0)
		cap = 1;
	if (cap > o->records)
		cap = o->records;
	ar->cap = cap;
	ar->slots = malloc(cap * ar->stride);
	ar->dead = malloc(cap);
	if (!ar->slots || !ar->dead) {
		err("out of memory for %" PRIu64 " records of %zu bytes", cap, ar->stride);
		return -ENOMEM;
	}
	gen_init(&ar->g, o->seed, o->keys, o->value_size, o->tombstone_pct);
	ar->start = ar->n = 0;
	return 0;
}

static void arena_free(struct arena *ar)
{
	free(ar->slots);
	free(ar->dead);
}

/* Makes the arena hold records [off, off + cnt), cnt <= cap, generating them
 * if it does not already. The stream is sequential: going back means starting
 * over from the seed (records before off are drawn, not formatted). */
static void arena_fill(struct arena *ar, const struct opts *o, uint64_t off, uint64_t cnt)
{
	struct gen_rec r;
	char key[GEN_KEY_BUF];

	uint64_t have = 0;

	if (ar->start == off && ar->n >= cnt)
		return;
	if (ar->start == off && ar->g.seq == off + ar->n) {
		/* a longer run over the same start: extend what is there */
		have = ar->n;
	} else {
		if (ar->g.seq > off)
			gen_init(&ar->g, o->seed, o->keys, o->value_size,
				 o->tombstone_pct);
		while (ar->g.seq < off)
			gen_next(&ar->g, &r);
	}
	for (uint64_t i = have; i < cnt; i++) {
		char *slot = ar->slots + i * ar->stride;

		gen_next(&ar->g, &r);
		gen_key(key, sizeof(key), r.idx);
		memcpy(slot, key, GEN_KEY_LEN);
		ar->dead[i] = r.dead;
		if (!r.dead)
			gen_value(slot + GEN_KEY_LEN, o->value_size, key, r.seq);
	}
	ar->start = off;
	ar->n = cnt;
}

/* Sends one batch and waits for every reply: 0, or -EIO when the connection
 * broke or stalled (no reconnect: a ceiling that hides failures is not one). */
static int write_batch(struct writer *w, uint64_t from, uint64_t to)
{
	const struct arena *ar = w->run->ar;
	uint32_t vs = w->run->o->value_size;
	struct mc_conn *c = w->conn;
	enum mc_exchange res;
	double deadline;

	for (uint64_t i = from; i < to; i++) {
		const char *slot = ar->slots + (i - ar->start) * ar->stride;
		int rc;

		if (ar->dead[i - ar->start])
			rc = mcconn_queue_delete(c, slot, GEN_KEY_LEN);
		else
			rc = mcconn_queue_set(c, slot, GEN_KEY_LEN, slot + GEN_KEY_LEN, vs, 0, 0);
		if (rc != 0) {
			err("writer %u: queueing a batch: %s", w->id, strerror(-rc));
			mcconn_reset_batch(c);
			return -EIO;
		}
	}
	deadline = now_s() + MCC_STALL_MS / 1000.0;
	for (;;) {
		/* no fence: the ceiling has no group membership to lose */
		mcconn_exchange(&c, 1, MCC_SLICE_MS, INT64_MAX, &res);
		if (res == MC_X_DONE)
			break;
		if (res == MC_X_FAILED || now_s() > deadline) {
			err("writer %u: %s: %s", w->id, mcconn_name(c),
			    res == MC_X_FAILED ? mcconn_error(c) : "no progress for 30 s");
			mcconn_reset_batch(c);
			return -EIO;
		}
	}
	for (size_t k = 0; k < mcconn_queued(c); k++) {
		enum mc_reply r = mcconn_reply(c, k);

		if (r != MC_STORED && r != MC_DELETED && r != MC_NOT_FOUND && w->failed++ == 0)
			err("writer %u: %s", w->id, mcconn_last_reply_text(c));
	}
	mcconn_reset_batch(c);
	return 0;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct run *run = w->run;

	for (;;) {
		pthread_barrier_wait(&run->go);
		if (run->quit)
			return NULL;
		for (uint64_t i = w->lo; !w->broken && i < w->hi; i += run->batch) {
			uint64_t to = w->hi - i < run->batch ? w->hi : i + run->batch;

			if (write_batch(w, i, to))
				w->broken = true;
		}
		pthread_barrier_wait(&run->done);
	}
}

/* Writes records [0, n) with `conns` writers in batches of `batch`; only the
 * writing is timed. Returns 0 (see res->failed / res->broken), or -errno when
 * it could not start. */
static int run_once(const struct opts *o, struct arena *ar, uint64_t n, unsigned batch,
		    unsigned conns, struct result *res)
{
	struct run *run = calloc(1, sizeof(*run));
	unsigned started = 0;
	int rc = -EIO;

	*res = (struct result){ .records = n };
	if (!run)
		return -ENOMEM;
	run->o = o;
	run->ar = ar;
	run->batch = batch;
	run->conns = conns;
	pthread_barrier_init(&run->go, NULL, conns + 1);
	pthread_barrier_init(&run->done, NULL, conns + 1);
	/* connections first, untimed */
	for (unsigned i = 0; i < conns; i++) {
		struct writer *w = &run->w[i];

		w->run = run;
		w->id = i;
		struct transport_addr a = { .host = o->host, .port = o->port,
					    .is_unix = o->is_unix };
		struct mcconn_opts mo = { .tls = &o->tls };
		char why[512];

		w->conn = mcconn_new_opts(&a, &mo, why, sizeof(why));
		if (!w->conn) {
			err("%s", why);
			goto out;
		}
		if (mcconn_ensure(w->conn, MCC_CONNECT_TIMEOUT_MS)) {
			err("%s: %s", mcconn_name(w->conn), mcconn_error(w->conn));
			goto out;
		}
	}
	for (; started < conns; started++) {
		char name[16];
		int pe = pthread_create(&run->w[started].thread, NULL, writer_main,
					&run->w[started]);

		if (pe) {
			err("pthread_create: %s", strerror(pe));
			goto out;
		}
		/* thread names: 15 bytes at most; conns <= MCC_MAX_CONNS */
		snprintf(name, sizeof(name), "mc-ceil/%u", started % 1000u);
		pthread_setname_np(run->w[started].thread, name);
	}
	for (uint64_t off = 0; off < n; off += ar->cap) {
		uint64_t cnt = n - off < ar->cap ? n - off : ar->cap;
		double t0, t1, u0, s0, u1, s1;

		arena_fill(ar, o, off, cnt);
		for (unsigned i = 0; i < conns; i++) {
			run->w[i].lo = off + cnt * i / conns;
			run->w[i].hi = off + cnt * (i + 1) / conns;
		}
		for (uint64_t i = 0; i < cnt; i++)
			res->bytes += GEN_KEY_LEN + (ar->dead[i] ? 0 : o->value_size);
		cpu_now(&u0, &s0);
		t0 = now_s();
		pthread_barrier_wait(&run->go);
		pthread_barrier_wait(&run->done);
		t1 = now_s();
		cpu_now(&u1, &s1);
		res->seconds += t1 - t0;
		res->user += u1 - u0;
		res->sys += s1 - s0;
	}
	rc = 0;
out:
	if (started == conns) {
		run->quit = true;
		pthread_barrier_wait(&run->go);
	} else if (started > 0) {
		/* not every thread started: the barriers can never complete */
		err("giving up after a failed thread start");
		exit(1);
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(run->w[i].thread, NULL);
	for (unsigned i = 0; i < conns; i++) {
		res->failed += run->w[i].failed;
		res->broken |= run->w[i].broken;
		mcconn_free(run->w[i].conn);
	}
	pthread_barrier_destroy(&run->go);
	pthread_barrier_destroy(&run->done);
	free(run);
	return rc;
}

static double rate(double x, double secs)
{
	return secs > 0 ? x / secs : 0.0;
}

/* The fields every line shares, after the "tool" or "trial" field. */
static void print_result(FILE *f, const char *head, const struct opts *o,
			 const struct result *r, unsigned batch, unsigned conns)
{
	fprintf(f,
		"{%s,\"records\":%" PRIu64 ",\"seconds\":%.6f,\"rps\":%.1f,\"mbps\":%.3f,"
		"\"batch\":%u,\"conns\":%u,\"cpu_user\":%.3f,\"cpu_sys\":%.3f,"
		"\"transport\":\"%s\"}\n",
		head, r->records, r->seconds, rate((double)r->records, r->seconds),
		rate((double)r->bytes, r->seconds) / 1e6, batch, conns, r->user, r->sys,
		o->is_unix ? "unix" : o->tls.enabled ? "tls" : "tcp");
	fflush(f);
}

static bool result_bad(const struct result *r)
{
	if (r->broken || r->failed)
		err("%" PRIu64 " writes failed%s", r->failed,
		    r->broken ? ", a connection broke" : "");
	return r->broken || r->failed;
}

/* ---- --blast ---------------------------------------------------------------- */

struct blaster {
	pthread_t thread;
	int fd;
	char *buf; /* the connection's whole stream, "mn\r\n" last */
	size_t len;
	pthread_barrier_t *go;
	/* written by this thread, read by main after the join */
	uint64_t errors; /* reply lines other than "MN" and "NF" */
	int broken;      /* -errno: the connection failed */
	double t_end;
};

static int blast_connect(const struct opts *o)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai, *a;
	char port[16];
	int fd = -1;

	snprintf(port, sizeof(port), "%d", o->port);
	if (getaddrinfo(o->host, port, &hints, &ai) != 0)
		return -EHOSTUNREACH;
	for (a = ai; a != NULL; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd >= 0 ? fd : -ECONNREFUSED;
}

/* Counts reply lines in what arrived; 1 once "MN" was seen. */
static int blast_scan(struct blaster *b, char *in, size_t *have)
{
	char *p = in, *nl;
	int done = 0;

	while ((nl = memchr(p, '\n', (size_t)(in + *have - p))) != NULL) {
		if (nl - p >= 3 && memcmp(p, "MN\r", 3) == 0)
			done = 1;
		else if (!(nl - p >= 2 && memcmp(p, "NF", 2) == 0) && b->errors++ == 0)
			err("--blast: %.*s", (int)(nl - p), p);
		p = nl + 1;
	}
	*have = (size_t)(in + *have - p);
	memmove(in, p, *have);
	return done;
}

static void *blast_main(void *arg)
{
	struct blaster *b = arg;
	char in[65536];
	size_t off = 0, have = 0;
	int done = 0;

	pthread_barrier_wait(b->go);
	while (!done) {
		struct pollfd pf = { .fd = b->fd, .events = POLLIN | (off < b->len ? POLLOUT : 0) };

		if (poll(&pf, 1, MCC_STALL_MS) <= 0) {
			b->broken = -ETIMEDOUT;
			break;
		}
		if (pf.revents & (POLLERR | POLLHUP)) {
			b->broken = -EPIPE;
			break;
		}
		if ((pf.revents & POLLOUT) && off < b->len) {
			size_t n = b->len - off > (1u << 20) ? (1u << 20) : b->len - off;
			ssize_t w = send(b->fd, b->buf + off, n, MSG_NOSIGNAL | MSG_DONTWAIT);

			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				b->broken = -errno;
				break;
			}
			if (w > 0)
				off += (size_t)w;
		}
		if (pf.revents & POLLIN) {
			ssize_t r = recv(b->fd, in + have, sizeof(in) - have, MSG_DONTWAIT);

			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
				b->broken = r == 0 ? -EPIPE : -errno;
				break;
			}
			if (r > 0) {
				have += (size_t)r;
				done = blast_scan(b, in, &have) && off == b->len;
				if (have == sizeof(in))
					have = 0; /* a line this long is garbage: drop it */
			}
		}
	}
	b->t_end = now_s();
	return NULL;
}

/* Formats records [lo, hi) of the stream into one buffer (untimed). */
static char *blast_format(const struct opts *o, struct gen *g, uint64_t lo, uint64_t hi,
			  size_t *len, uint64_t *bytes)
{
	size_t cap = (size_t)(hi - lo) * (GEN_KEY_LEN + o->value_size + 32) + 8, n = 0;
	char *buf = malloc(cap), key[GEN_KEY_BUF];
	struct gen_rec r;

	if (buf == NULL)
		return NULL;
	for (uint64_t i = lo; i < hi; i++) {
		gen_next(g, &r);
		gen_key(key, sizeof(key), r.idx);
		if (r.dead) {
			n += (size_t)snprintf(buf + n, cap - n, "md %s q\r\n", key);
			*bytes += GEN_KEY_LEN;
			continue;
		}
		n += (size_t)snprintf(buf + n, cap - n, "ms %s %u q\r\n", key, o->value_size);
		gen_value(buf + n, o->value_size, key, r.seq);
		memcpy(buf + n + o->value_size, "\r\n", 2);
		n += o->value_size + 2;
		*bytes += GEN_KEY_LEN + o->value_size;
	}
	memcpy(buf + n, "mn\r\n", 4);
	*len = n + 4;
	return buf;
}

static int run_blast(const struct opts *o, struct result *res)
{
	struct blaster b[MCC_MAX_CONNS] = { 0 };
	pthread_barrier_t go;
	struct gen g;
	unsigned conns = o->conns, started = 0;
	double t0, u0, s0, u1, s1, t1 = 0;
	int rc = -EIO;

	if (o->is_unix || o->tls.enabled) {
		err("--blast writes over TCP only");
		return -EINVAL;
	}
	*res = (struct result){ .records = o->records };
	gen_init(&g, o->seed, o->keys, o->value_size, o->tombstone_pct);
	for (unsigned i = 0; i < conns; i++) {
		b[i].fd = -1;
		b[i].buf = blast_format(o, &g, o->records * i / conns, o->records * (i + 1) / conns,
					&b[i].len, &res->bytes);
		if (b[i].buf == NULL) {
			err("out of memory formatting the stream");
			goto out;
		}
		b[i].fd = blast_connect(o);
		if (b[i].fd < 0) {
			err("connect %s:%d: %s", o->host, o->port, strerror(-b[i].fd));
			goto out;
		}
		b[i].go = &go;
	}
	pthread_barrier_init(&go, NULL, conns + 1);
	for (; started < conns; started++) {
		if (pthread_create(&b[started].thread, NULL, blast_main, &b[started]) != 0) {
			err("pthread_create failed");
			exit(1); /* the barrier can never complete */
		}
	}
	cpu_now(&u0, &s0);
	t0 = now_s();
	pthread_barrier_wait(&go);
	for (unsigned i = 0; i < conns; i++) {
		pthread_join(b[i].thread, NULL);
		if (b[i].t_end > t1)
			t1 = b[i].t_end;
		res->failed += b[i].errors;
		if (b[i].broken) {
			err("connection %u: %s", i, strerror(-b[i].broken));
			res->broken = true;
		}
	}
	cpu_now(&u1, &s1);
	pthread_barrier_destroy(&go);
	res->seconds = t1 - t0;
	res->user = u1 - u0;
	res->sys = s1 - s0;
	rc = 0;
out:
	for (unsigned i = 0; i < conns; i++) {
		if (b[i].fd >= 0)
			close(b[i].fd);
		free(b[i].buf);
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct arena ar = { 0 };
	struct result res;
	unsigned batch, conns;
	int r, rc = 1;

	/* a TLS peer that goes away must not kill the run (OpenSSL writes
	 * with write(), not send(MSG_NOSIGNAL)) */
	signal(SIGPIPE, SIG_IGN);
	r = parse_args(&o, argc, argv);
	if (r) {
		usage(r > 0 ? stdout : stderr);
		return r > 0 ? 0 : 2;
	}
	if (o.blast) {
		if (run_blast(&o, &res))
			return 1;
		print_result(stdout, "\"tool\":\"mc-ceiling\",\"mode\":\"blast\"", &o, &res, 0,
			     o.conns);
		return result_bad(&res) ? 1 : 0;
	}
	if (arena_init(&ar, &o))
		goto out;
	batch = o.batch;
	conns = o.conns;
	if (o.sweep) {
		uint64_t tn = o.records / 3 > MCC_TRIAL_MIN ? o.records / 3 : MCC_TRIAL_MIN;
		double best = -1;
		unsigned k = 0;
		char head[32];

		if (tn > o.records)
			tn = o.records;
		for (size_t bi = 0; bi < sizeof(sweep_batches) / sizeof(sweep_batches[0]); bi++) {
			for (size_t ci = 0; ci < sizeof(sweep_conns) / sizeof(sweep_conns[0]);
			     ci++) {
				unsigned b = sweep_batches[bi], c = sweep_conns[ci];

				if (run_once(&o, &ar, tn, b, c, &res))
					goto out;
				snprintf(head, sizeof(head), "\"trial\":%u", k++);
				print_result(stderr, head, &o, &res, b, c);
				if (result_bad(&res))
					goto out;
				if (rate((double)res.records, res.seconds) > best) {
					best = rate((double)res.records, res.seconds);
					batch = b;
					conns = c;
				}
			}
		}
	}
	if (run_once(&o, &ar, o.records, batch, conns, &res))
		goto out;
	print_result(stdout, "\"tool\":\"mc-ceiling\"", &o, &res, batch, conns);
	rc = result_bad(&res) ? 1 : 0;
out:
	arena_free(&ar);
	return rc;
}
