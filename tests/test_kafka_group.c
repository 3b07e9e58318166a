/* Integration suite: k2mc's group, security and topology scenarios on a real
 * Apache Kafka (issues 20, 21 and 22), each with a broker (or three) of its
 * own from tests/kafka/kafka-broker and a Debian memcached:
 *   1. SASL/SCRAM-SHA-512 and -256, over SASL_SSL and SASL_PLAINTEXT, by -X
 *      and by -F; a wrong password ends at once with exit 1 and the reason
 *   2. group.protocol=consumer (KIP-848) with 2 members: kill -9 of one, then
 *      a SIGTERM hand-off to a restarted one (Kafka 4); on Kafka 3 a clear
 *      refusal instead of a silent wait
 *   3. broker failover: 3 brokers, the leader of half the partitions killed
 *      -9 mid-run and restarted
 *   4. static membership: a member frozen and replaced by a process with the
 *      same group.instance.id, then resumed (issue 22's case)
 *   5. Memcached frozen longer than max.poll.interval.ms, 2 members
 *   6. partitions added, and a regex subscription gaining a topic
 *   7. static membership again, with only the member's path to Memcached
 *      frozen (a relay): a fatal error while writes are pending
 *   8. eviction by rebalance timeout: a member whose revocation drain is
 *      held up by a frozen path, while a third member joins
 *   9. refill during a rebalance: a member frozen mid-refill past its
 *      session while the new owner writes values and deletes
 * Unless a scenario says otherwise, each ends with every key at its last
 * record (the producer's expect file) and committed = end on every
 * partition. Where a reader watches the cache during a hand-off
 * (tests/mc_reader.h), no key may ever go back to an older value.
 * Real broker only: `make test-kafka` runs it with K2MC_KAFKA=real on each
 * version (K2MC_KAFKA_VERSION); binaries come from K2MC_BIN and K2MC_MOCK. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "kafka_real.h"
#include "mc_reader.h"
#include "relay.h"
#include "world.h"

/* every wait has its own deadline; this only stops a wedged test */
#define TEST_TIMEOUT_S 300

/* memcached (world_start_memcached) and a cluster of the test's own
 * (W.real, which world_teardown stops); W.topic and W.parts are those of
 * the latest load started (world_wait_first_commit watches them) */
static struct world W;
/* the cache reader of the scenarios that watch a hand-off */
static struct h_reader *READER;

/* ---- a path to Memcached that can be frozen -------------------------------------
 * A relay (tests/relay.h) in front of the world's memcached: the member
 * given its address reaches Memcached through it, the others (and the
 * reader, and the checks) directly. RELAY_HOLD_REPLIES holds every reply on
 * its way back to the member until it is released: its writers wait for
 * answers, acknowledge nothing and commit nothing more, and the records
 * they hold stay pending, as when its path is cut. Only replies are held,
 * not requests. Memcached therefore executes every command the member sends
 * at once, in order, while the member still believes it owns its
 * partitions: what lands after the thaw was sent after it, so a stale value
 * is the member's own late write. (Held requests would also test the
 * network: bytes sent inside the lease but delivered seconds later, after
 * the new owner's, which no lease can recall; test 8 holds both and resets
 * the connections, so that nothing sent during the hold ever lands.) */
static struct relay *RELAY;

static void teardown(void)
{
	h_reader_stop(READER, NULL);
	READER = NULL;
	/* brokers first, through their launcher, then h_cleanup */
	world_teardown();
	/* after the processes: a relay's clients are gone before it closes */
	relay_stop(RELAY);
	RELAY = NULL;
}

TestSuite(kafka_group, .fini = teardown, .timeout = TEST_TIMEOUT_S);

static void sleep_ms(int ms)
{
	usleep((useconds_t)ms * 1000);
}

static int kafka_major(void)
{
	return atoi(W.real.version);
}

/* memcached and a cluster (ro: NULL for one broker of $K2MC_KAFKA_VERSION). */
static void start_world(const struct h_kafka_real_opts *ro)
{
	int rc;

	if (h_kafka_backend() != H_KAFKA_REAL)
		cr_skip_test("needs a real broker (K2MC_KAFKA=real)");
	memset(&W, 0, sizeof(W));
	W.t0 = h_now_ms();
	W.backend = H_KAFKA_REAL;
	world_start_memcached(&W, 1, NULL);
	rc = h_kafka_real_start(&W.real, ro);
	W.own_broker = W.real.proc.pid > 0;
	cr_assert_eq(rc, 0, "kafka did not start: %s\n%s", strerror(-rc),
		     world_tail(W.real.proc.err_path));
	W.bootstrap = W.real.bootstrap;
	cr_log_info("kafka %s, %d broker(s): ready %" PRId64 " ms after the launch (format %" PRId64
		    " ms before)",
		    W.real.version, W.real.nbrokers, W.real.start_ms, W.real.format_ms);
}

static void log_done(const char *scenario)
{
	cr_log_info("%s on kafka %s: %.1f s", scenario, W.real.version, world_secs_since(W.t0));
}

/* ---- producers ------------------------------------------------------------------*/

/* One producer's job: k2mc-mock -b into topic:parts, records over keys
 * ("key-%08u"), 64-byte values "v:<key>:<seq>:...", tombstones percent of
 * them deletes, an expect file. */
struct load {
	const char *topic;
	int parts;
	uint64_t records;     /* 0 with control: only "produce N" commands */
	uint32_t keys;
	int tombstones;
	const char *seed;
	const char *rate;     /* NULL: as fast as it goes */
	const char *const *extra;
	int control;          /* --stdin-control: stays, produces on command */
	char expect[H_PATH_MAX];
	struct h_mock mk;
};

static void start_load(struct load *l)
{
	static char topic[80], n[24], k[16], tomb[8];
	const char *args[64];
	int a = 0, rc;

	snprintf(topic, sizeof(topic), "%s:%d", l->topic, l->parts);
	snprintf(n, sizeof(n), "%" PRIu64, l->records);
	snprintf(k, sizeof(k), "%u", l->keys);
	snprintf(tomb, sizeof(tomb), "%d", l->tombstones);
	snprintf(l->expect, sizeof(l->expect), "%s/expect-%s-%s.txt", h_tmpdir(), l->topic,
		 l->seed);
	args[a++] = "-b";
	args[a++] = W.bootstrap;
	args[a++] = "--topic";
	args[a++] = topic;
	if (l->records > 0) {
		args[a++] = "--produce";
		args[a++] = n;
	}
	args[a++] = "--keys";
	args[a++] = k;
	args[a++] = "--value-size";
	args[a++] = "64";
	args[a++] = "--tombstones";
	args[a++] = tomb;
	args[a++] = "--seed";
	args[a++] = l->seed;
	args[a++] = "--expect";
	args[a++] = l->expect;
	args[a++] = l->control ? "--stdin-control" : "--exit-after-produce";
	args[a++] = "-q";
	if (l->rate != NULL) {
		args[a++] = "--rate";
		args[a++] = l->rate;
	}
	for (int i = 0; l->extra != NULL && l->extra[i] != NULL && a < 63; i++)
		args[a++] = l->extra[i];
	args[a] = NULL;
	rc = h_mock_start(&l->mk, args, l->control, 90000);
	cr_assert_eq(rc, 0, "k2mc-mock -b for %s: %s\n%s", l->topic, strerror(-rc),
		     world_tail(l->mk.proc.err_path));
	snprintf(W.topic, sizeof(W.topic), "%s", l->topic);
	W.parts = l->parts;
}

static void wait_produced(struct load *l, int timeout_ms)
{
	uint64_t acked = 0;
	int rc = h_mock_wait_produced(&l->mk, timeout_ms, &acked);

	cr_assert_eq(rc, 0, "producing %s: %s\nk2mc-mock stderr:\n%s", l->topic, strerror(-rc),
		     world_tail(l->mk.proc.err_path));
	cr_assert_eq(acked, l->records, "%s: %" PRIu64 " of %" PRIu64 " records acknowledged",
		     l->topic, acked, l->records);
}

/* --stdin-control: "produce N", answered once acknowledged and the expect
 * file is rewritten; the seq continues from the previous command. */
static void produce_more(struct load *l, uint64_t n, int timeout_ms)
{
	char cmd[64], ans[256];
	int64_t t0 = h_now_ms();
	int rc;

	snprintf(cmd, sizeof(cmd), "produce %" PRIu64, n);
	rc = h_mock_command(&l->mk, cmd, ans, sizeof(ans), timeout_ms);
	cr_assert_eq(rc, 0, "%s: '%s': %s (%s)\n%s", l->topic, cmd, strerror(-rc), ans,
		     world_tail(l->mk.proc.err_path));
	l->records += n;
	cr_log_info("%s: %" PRIu64 " more records in %.1f s (%" PRIu64 " in all)", l->topic, n,
		    world_secs_since(t0), l->records);
}

/* ---- k2mc ----------------------------------------------------------------------*/

/* k2mc -b (the PLAINTEXT listeners) -t topic -G group -m MC
 * --stats-interval-ms 1000 [-e] extra...; mc NULL: the world's memcached,
 * else another address (a relay in front of it). */
static void start_k2mc_via(struct h_proc *k, const char *mc, const char *topic,
			   const char *group, int eof, const char *const extra[])
{
	static const char *const stats[] = { "--stats-interval-ms", "1000", NULL };

	world_k2mc_start(&W, k, &(struct world_k2mc){ .group = group, .topic = topic, .mc = mc,
						      .eof = eof, .args = stats, .args2 = extra });
}

static void start_k2mc(struct h_proc *k, const char *topic, const char *group, int eof,
		       const char *const extra[])
{
	start_k2mc_via(k, NULL, topic, group, eof, extra);
}

/* Waits for k2mc to exit 0 and checks its summary: nothing unwritten. */
static void finish_k2mc(struct h_proc *k, int timeout_ms, const char *what, struct h_summary *s)
{
	world_k2mc_finish(k, timeout_ms, what, s);
	cr_assert_eq(s->unwritten, 0, "%s: summary says unwritten %" PRIu64, what, s->unwritten);
}

/* SIGTERM, then the checks of finish_k2mc. */
static void stop_k2mc(struct h_proc *k, const char *what, struct h_summary *s)
{
	cr_assert_eq(h_signal(k->pid, SIGTERM), 0, "%s: not running any more; stderr:\n%s", what,
		     world_tail(k->err_path));
	finish_k2mc(k, 45000, what, s);
}

/* Waits for a line of k's stderr matching re, from *off on (NULL: from
 * the start); fails the test if k exits first or the deadline passes. */
static void wait_log(struct h_proc *k, const char *re, size_t *off, int timeout_ms,
		     const char *what, char *line, size_t len)
{
	int rc = h_wait_line(k->err_path, re, off, k->pid, timeout_ms, line, len);

	cr_assert_eq(rc, 0, "%s: no line /%s/ within %d ms (%s); stderr:\n%s", what, re,
		     timeout_ms, rc == -ESRCH ? "it exited" : strerror(-rc),
		     world_tail(k->err_path));
}

static size_t file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
}

/* The lines of path from byte from on holding any of words
 * (case-insensitive), stats lines left out, at most max_lines of them, for a
 * log message. */
static const char *grep_lines(const char *path, size_t from, const char *const words[],
			      int max_lines)
{
	static char out[4096];
	size_t len = 0;
	char *b = h_file_read(path, &len), *save = NULL;
	int n = 0;

	out[0] = '\0';
	if (b == NULL)
		return "(no log)";
	for (char *l = strtok_r(from < len ? b + from : b + len, "\n", &save);
	     l != NULL && n < max_lines;
	     l = strtok_r(NULL, "\n", &save)) {
		if (strstr(l, " INFO: in ") != NULL)
			continue; /* a stats line */
		for (int i = 0; words[i] != NULL; i++) {
			if (strcasestr(l, words[i]) != NULL) {
				size_t have = strlen(out);

				snprintf(out + have, sizeof(out) - have, "  %.300s\n", l);
				n++;
				break;
			}
		}
	}
	free(b);
	return out;
}

/* The last line of path holding needle, copied to buf ("" if none). */
static const char *last_line(const char *path, const char *needle, char *buf, size_t len)
{
	char *b = h_file_read(path, NULL), *hit = NULL;

	buf[0] = '\0';
	for (char *p = b; p != NULL && (p = strstr(p, needle)) != NULL; p++)
		hit = p;
	if (hit != NULL) {
		char *sol = hit, *eol = strchr(hit, '\n');

		while (sol > b && sol[-1] != '\n')
			sol--;
		snprintf(buf, len, "%.*s", (int)(eol ? eol - sol : (long)strlen(sol)), sol);
	}
	free(b);
	return buf;
}

/* From byte from of a k2mc log on: the longest time between two stats
 * lines that both say records came in ("in N/s", N > 0), in seconds, less
 * the stats interval: how long consuming stalled. -1 without two such lines. */
static double longest_stall_s(const char *path, size_t from, double interval_s)
{
	size_t len = 0;
	char *b = h_file_read(path, &len), *save = NULL;
	double last = -1, worst = -1;

	if (b == NULL)
		return -1;
	for (char *l = strtok_r(from < len ? b + from : b + len, "\n", &save); l != NULL;
	     l = strtok_r(NULL, "\n", &save)) {
		int hh, mm;
		double ss;
		unsigned long in;

		if (sscanf(l, "%d:%d:%lf k2mc INFO: in %lu/s", &hh, &mm, &ss, &in) != 4 || in == 0)
			continue;
		ss += hh * 3600.0 + mm * 60.0;
		if (last >= 0 && ss - last - interval_s > worst)
			worst = ss - last - interval_s;
		last = ss;
	}
	free(b);
	return worst;
}

/* "written N" of k's last stats line, or -1. */
static long long last_written(const struct h_proc *k)
{
	char line[1024];
	const char *p = strstr(last_line(k->err_path, " INFO: in ", line, sizeof(line)), " written ");

	return p != NULL ? strtoll(p + 9, NULL, 10) : -1;
}

/* ---- checks ----------------------------------------------------------------------*/

/* world_wait_committed_at_end, failing at once if one of ks (NULL-terminated)
 * exits; returns the seconds it took. */
static double wait_committed_at_end(const char *topic, int parts, const char *group,
				    int timeout_ms, struct h_proc *const ks[], const char *what)
{
	int64_t t0 = h_now_ms();
	int n = 0;

	while (ks != NULL && ks[n] != NULL)
		n++;
	world_wait_committed_at_end(&W, topic, parts, group, ks, n, timeout_ms, what);
	return world_secs_since(t0);
}

static void start_reader(uint32_t keys, const char *prefix)
{
	struct h_reader_opts o = { .host = "127.0.0.1", .port = W.mc[0].port, .prefix = prefix,
				   .keys = keys };

	READER = h_reader_start(&o);
	cr_assert_not_null(READER, "cannot start the cache reader");
}

/* Stops the reader after two more complete sweeps. */
static void stop_reader(struct h_reader_stats *s, const char *what)
{
	int rc = h_reader_wait_sweeps(READER, 2, 20000);

	h_reader_stop(READER, s);
	READER = NULL;
	cr_assert_eq(rc, 0, "%s: the cache reader completed no sweep in 20 s", what);
	cr_log_info("%s: reader: %" PRIu64 " sweeps (%" PRIu64 " cut short), %zu keys seen, "
		    "%zu went back, %zu vanished",
		    what, s->sweeps, s->failed, s->seen, s->went_back, s->vanished);
}

/* ==== 1. SASL/SCRAM =================================================================
 * The launcher's --sasl-ssl cluster has SCRAM-SHA-512 and -256 users on a
 * SASL_SSL and a SASL_PLAINTEXT listener. One topic, read 8 times: each
 * mechanism over each listener, configured by -X and by a -F file, each run
 * with its own group and key prefix. Then a wrong password, by -X over
 * SASL_SSL and by -F over SASL_PLAINTEXT: exit 1 within seconds, with a
 * line naming the mechanism and the broker. */
struct sasl_way {
	const char *mech;
	const char *proto; /* security.protocol */
	int file;          /* -F, else -X */
	const char *password;
};

/* k2mc's arguments for w (bootstrap, security) into args from a; a -F file
 * in the temp dir when w->file. Returns the new a. */
static int sasl_args(const struct sasl_way *w, int i, const char **args, int a)
{
	static char xs[8][5][H_PATH_MAX + 32], path[8][H_PATH_MAX];
	const char *boot = strcmp(w->proto, "SASL_SSL") == 0 ? W.real.sasl_bootstrap
							       : W.real.sasl_plain_bootstrap;
	int ssl = strcmp(w->proto, "SASL_SSL") == 0;

	i %= 8;
	snprintf(xs[i][0], sizeof(xs[i][0]), "security.protocol=%s", w->proto);
	snprintf(xs[i][1], sizeof(xs[i][1]), "sasl.mechanisms=%s", w->mech);
	snprintf(xs[i][2], sizeof(xs[i][2]), "sasl.username=%s", W.real.sasl_user);
	snprintf(xs[i][3], sizeof(xs[i][3]), "sasl.password=%s", w->password);
	snprintf(xs[i][4], sizeof(xs[i][4]), "ssl.ca.location=%s", W.real.ca);
	if (w->file) {
		char name[64];
		FILE *f;

		snprintf(name, sizeof(name), "k2mc-sasl-%d.conf", i);
		h_tmppath(path[i], sizeof(path[i]), name);
		f = fopen(path[i], "w");
		cr_assert_not_null(f, "%s: %s", path[i], strerror(errno));
		/* it holds a password: k2mc warns unless it is the user's alone */
		fchmod(fileno(f), 0600);
		fprintf(f, "# written by test_kafka_group\nbrokers=%s\n", boot);
		for (int x = 0; x < (ssl ? 5 : 4); x++)
			fprintf(f, "%s\n", xs[i][x]);
		fclose(f);
		args[a++] = "-F";
		args[a++] = path[i];
	} else {
		args[a++] = "-b";
		args[a++] = boot;
		for (int x = 0; x < (ssl ? 5 : 4); x++) {
			args[a++] = "-X";
			args[a++] = xs[i][x];
		}
	}
	return a;
}

/* k2mc -t topic -G group -m MC --stats-interval-ms 1000 -e extra..., with
 * no -b of the world's: the SASL listener comes from extra, by -b or in a
 * -F file (world_k2mc_start adds the PLAINTEXT listeners, and the command
 * line overrides the file). */
static void start_k2mc_sasl(struct h_proc *k, const char *topic, const char *group,
			    const char *const extra[])
{
	const char *args[64] = { "-t", topic, "-G", world_name(group), "-m", W.mc_addr,
				 "--stats-interval-ms", "1000", "-e" };
	int a = 9, rc;

	for (int i = 0; extra[i] != NULL && a < 63; i++)
		args[a++] = extra[i];
	args[a] = NULL;
	rc = h_k2mc_start(k, NULL, args);
	cr_assert_eq(rc, 0, "cannot start k2mc: %s", strerror(-rc));
}

Test(kafka_group, sasl_scram_512_and_256_over_ssl_and_plaintext_by_x_and_f)
{
	static const char *const mechs[] = { "SCRAM-SHA-512", "SCRAM-SHA-256" };
	static const char *const protos[] = { "SASL_SSL", "SASL_PLAINTEXT" };
	struct h_kafka_real_opts ro = { .sasl_ssl = 1 };
	struct load l = { .topic = "sasl", .parts = 4, .records = 4000, .keys = 1000,
			  .tombstones = 5, .seed = "2001" };

	start_world(&ro);
	cr_assert(W.real.sasl_bootstrap[0] && W.real.sasl_plain_bootstrap[0],
		  "the launcher named no SASL_SSL or SASL_PLAINTEXT listener");
	start_load(&l);
	wait_produced(&l, 60000);
	for (int i = 0; i < 8; i++) {
		struct sasl_way w = { mechs[i & 1], protos[(i >> 1) & 1], i >> 2,
				      W.real.sasl_password };
		char prefix[16], group[32], what[96];
		const char *extra[32];
		struct h_proc k;
		struct h_summary s;
		int a;
		int64_t t0 = h_now_ms();

		snprintf(prefix, sizeof(prefix), "s%d:", i);
		snprintf(group, sizeof(group), "sasl-%d", i);
		snprintf(what, sizeof(what), "%s over %s by %s", w.mech, w.proto, w.file ? "-F" : "-X");
		a = sasl_args(&w, i, extra, 0);
		extra[a++] = "--key-prefix";
		extra[a++] = prefix;
		extra[a] = NULL;
		start_k2mc_sasl(&k, l.topic, group, extra);
		finish_k2mc(&k, 60000, what, &s);
		cr_assert_eq(s.consumed, l.records, "%s: consumed %" PRIu64 " of %" PRIu64, what,
			     s.consumed, l.records);
		world_assert_cache(&W, l.expect, 0, prefix, 0, what);
		world_assert_committed_at_end(&W, l.topic, l.parts, group, what);
		cr_log_info("%s: %.1f s", what, world_secs_since(t0));
	}

	/* a wrong password */
	for (int i = 0; i < 2; i++) {
		struct sasl_way w = { mechs[i], protos[i], i, "not-the-password" };
		const char *extra[32];
		char re[512], line[1024], st[96];
		struct h_proc k;
		int status = 0, a, rc;
		int64_t t0 = h_now_ms();

		a = sasl_args(&w, i, extra, 0);
		extra[a] = NULL;
		start_k2mc_sasl(&k, l.topic, "sasl-wrong", extra);
		rc = h_wait(k.pid, 20000, &status);
		if (rc == -ETIMEDOUT)
			h_stop(k.pid, 1000);
		cr_assert_eq(rc, 0, "%s with a wrong password: still running after 20 s; stderr:\n%s",
			     w.mech, world_tail(k.err_path));
		cr_assert_eq(h_exit_code(status), 1,
			     "%s with a wrong password: %s, expected exit 1; stderr:\n%s", w.mech,
			     h_status_str(status, st, sizeof(st)), world_tail(k.err_path));
		/* the mechanism and the broker (its address as librdkafka names it) */
		snprintf(re, sizeof(re),
			 "ERROR: Kafka authentication failed \\(security.protocol=%s, "
			 "sasl.mechanisms=%s, sasl.username=%s\\): %s://%s/",
			 i ? "sasl_plaintext" : "sasl_ssl", w.mech, W.real.sasl_user,
			 i ? "sasl_plaintext" : "sasl_ssl",
			 i ? W.real.sasl_plain_bootstrap : W.real.sasl_bootstrap);
		rc = h_wait_line(k.err_path, re, NULL, 0, 1000, line, sizeof(line));
		cr_assert_eq(rc, 0, "%s with a wrong password: no line /%s/; stderr:\n%s", w.mech, re,
			     world_tail(k.err_path));
		cr_log_info("%s over %s by %s, wrong password: exit 1 after %.1f s: %.300s", w.mech,
			    w.proto, w.file ? "-F" : "-X", world_secs_since(t0), line);
	}
	log_done("SASL/SCRAM");
}

/* ==== 2. KIP-848 ====================================================================
 * group.protocol=consumer. The session is the broker's under this protocol
 * (group.consumer.session.timeout.ms, 45 s by default, and never less than
 * group.consumer.min.session.timeout.ms); the test lowers both to 6 s so
 * that the coordinator notices the killed member in time. That is below
 * the bound k2mc's write lease assumes (config.c, KIP848_MIN_SESSION_MS):
 * harmless here, where no member is frozen, but not a setting to copy. */
static const char *const kip848_broker[] = {
	"group.consumer.min.session.timeout.ms=6000", "group.consumer.session.timeout.ms=6000",
	"group.consumer.min.heartbeat.interval.ms=1000", "group.consumer.heartbeat.interval.ms=2000",
	NULL
};
static const char *const kip848[] = { "-X", "group.protocol=consumer", NULL };
#define RE_ASSIGNED "INFO: assigned [1-9][0-9]* partition"

Test(kafka_group, kip848_two_members_kill9_then_sigterm_handoff)
{
	struct h_kafka_real_opts ro = { .config = kip848_broker };
	/* about 20 s of production, over the whole scenario */
	struct load l = { .topic = "kip848", .parts = 8, .records = 80000, .keys = 4000,
			  .tombstones = 5, .seed = "2002", .rate = "4000" };
	struct h_proc a, b, a2;
	struct h_summary s;
	size_t aoff = 0, boff = 0, a2off = 0;
	char line[512], st[96];
	int64_t t;

	start_world(&ro);
	if (kafka_major() < 4) {
		/* Kafka 3.x offers the protocol only as an early-access
		 * preview, off by default (on 3.9.1,
		 * group.coordinator.rebalance.protocols=classic,consumer alone
		 * does not turn it on): k2mc must say so and exit 1, not wait
		 * for an assignment for ever as librdkafka would */
		struct load l0 = { .topic = "kip848", .parts = 8, .records = 1000, .keys = 100,
				   .seed = "2002" };
		int status = 0, rc;

		start_load(&l0);
		wait_produced(&l0, 60000);
		t = h_now_ms();
		start_k2mc(&a, l0.topic, "kip848", 1, kip848);
		rc = h_wait(a.pid, 30000, &status);
		if (rc == -ETIMEDOUT)
			h_stop(a.pid, 1000);
		cr_assert_eq(rc, 0, "kafka %s: k2mc with group.protocol=consumer still waits after "
			     "30 s instead of failing; stderr:\n%s",
			     W.real.version, world_tail(a.err_path));
		cr_assert_eq(h_exit_code(status), 1, "kafka %s: k2mc ended with %s; stderr:\n%s",
			     W.real.version, h_status_str(status, st, sizeof(st)),
			     world_tail(a.err_path));
		rc = h_wait_line(a.err_path,
				 "ERROR: group.protocol=consumer \\(KIP-848\\): .*ConsumerGroupHeartbeat",
				 NULL, 0, 1000, line, sizeof(line));
		cr_assert_eq(rc, 0, "kafka %s: no line naming KIP-848 and ConsumerGroupHeartbeat; "
			     "stderr:\n%s", W.real.version, world_tail(a.err_path));
		cr_log_info("kafka %s refuses KIP-848: k2mc exit 1 after %.1f s: %.400s",
			    W.real.version, world_secs_since(t), line);
		log_done("KIP-848 refused");
		return;
	}
	start_load(&l);
	start_k2mc(&a, l.topic, "kip848", 0, kip848);
	wait_log(&a, RE_ASSIGNED, &aoff, 30000, "A joins", line, sizeof(line));
	cr_log_info("A: %s", line);
	start_k2mc(&b, l.topic, "kip848", 0, kip848);
	wait_log(&b, RE_ASSIGNED, &boff, 30000, "B joins", line, sizeof(line));
	cr_log_info("B: %s", line);
	/* server-side assignment: A gives B its share, so both hold some */
	wait_log(&a, "INFO: released [1-9][0-9]* partition\\(s\\), [1-9][0-9]* remain", &aoff, 30000,
		 "A releases B's share", line, sizeof(line));
	cr_log_info("A: %s", line);
	world_wait_first_commit(&W, &b, "kip848", 30000);
	cr_assert(!h_file_exists(l.expect), "production finished before the kill");

	/* kill -9 of A: B gets A's partitions once the broker expires A */
	t = h_now_ms();
	cr_assert_eq(h_signal(a.pid, SIGKILL), 0);
	cr_assert_eq(h_wait(a.pid, 5000, NULL), 0);
	wait_log(&b, RE_ASSIGNED, &boff, 30000, "B takes the killed A's partitions", line,
		 sizeof(line));
	cr_log_info("B, %.1f s after A's kill -9: %s", world_secs_since(t), line);

	/* a restarted member joins; then B leaves with SIGTERM and hands
	 * everything over to it */
	start_k2mc(&a2, l.topic, "kip848", 0, kip848);
	wait_log(&a2, RE_ASSIGNED, &a2off, 30000, "A restarted joins", line, sizeof(line));
	cr_log_info("A restarted: %s", line);
	t = h_now_ms();
	stop_k2mc(&b, "B after SIGTERM", &s);
	wait_log(&a2, RE_ASSIGNED, &a2off, 30000, "A restarted takes B's partitions", line,
		 sizeof(line));
	cr_log_info("A restarted, %.1f s after B's SIGTERM: %s", world_secs_since(t), line);

	wait_produced(&l, 60000);
	{
		struct h_proc *const ks[] = { &a2, NULL };

		cr_log_info("committed = end %.1f s after production",
			    wait_committed_at_end(l.topic, l.parts, "kip848", 60000, ks, "KIP-848"));
	}
	world_assert_cache(&W, l.expect, 0, NULL, 0,
			   "KIP-848 after kill -9 and a SIGTERM hand-off");
	stop_k2mc(&a2, "A restarted, SIGTERM", &s);
	world_assert_committed_at_end(&W, l.topic, l.parts, "kip848", "KIP-848 at the end");
	log_done("KIP-848");
}

/* ==== 3. broker failover ============================================================
 * Three brokers (replication 3, min.insync.replicas 2; the producer is
 * idempotent with acks=all). 4 partitions: each broker leads one or two, so
 * one leads half of them. It is killed -9 while k2mc consumes and the
 * producer produces, and started again once its partitions have new
 * leaders. The controller fences a broker that stopped heartbeating after
 * broker.session.timeout.ms (9 s by default; 4 s here, to keep the test
 * short: the stall is the brokers', not k2mc's). */
static const char *const failover_broker[] = { "broker.session.timeout.ms=4000",
					       "broker.heartbeat.interval.ms=1000", NULL };

Test(kafka_group, broker_failover_leader_of_half_the_partitions_killed)
{
	static const char *const rf3[] = { "--replication", "3", NULL };
	struct h_kafka_real_opts ro = { .brokers = 3, .config = failover_broker };
	/* about 16 s of production */
	struct load l = { .topic = "failover", .parts = 4, .records = 80000, .keys = 4000,
			  .tombstones = 5, .seed = "2003", .rate = "5000", .extra = rf3 };
	int32_t leader[H_MAX_PARTS];
	int led[H_KAFKA_REAL_MAX_BROKERS + 1] = { 0 }, victim = 1, moved = 0, rc;
	size_t koff;
	char err[256], lbuf[128] = "";
	struct h_proc k;
	struct h_summary s;
	int64_t t, restart_ms = 0;

	start_world(&ro);
	start_load(&l);
	start_k2mc(&k, l.topic, "failover", 0, NULL);
	world_wait_first_commit(&W, &k, "failover", 60000);
	rc = h_kafka_leaders(W.bootstrap, l.topic, l.parts, leader, 5000, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s", err);
	for (int p = 0; p < l.parts; p++) {
		size_t n = strlen(lbuf);

		snprintf(lbuf + n, sizeof(lbuf) - n, " p%d:%d", p, (int)leader[p]);
		if (leader[p] >= 1 && leader[p] <= W.real.nbrokers)
			led[leader[p]]++;
	}
	for (int b = 1; b <= W.real.nbrokers; b++)
		if (led[b] > led[victim])
			victim = b;
	cr_assert_geq(led[victim] * 2, l.parts, "no broker leads half the partitions:%s", lbuf);
	cr_assert(!h_file_exists(l.expect), "production finished before the kill");

	koff = file_size(k.err_path);
	t = h_now_ms();
	rc = h_kafka_real_kill_broker(&W.real, victim - 1);
	cr_assert_eq(rc, 0, "kill of broker %d: %s", victim, strerror(-rc));
	cr_log_info("broker %d, leader of %d of %d partitions (%s), killed -9", victim, led[victim],
		    l.parts, lbuf + 1);
	/* new leaders, from a surviving broker's metadata */
	while (!moved) {
		int32_t now[H_MAX_PARTS];

		moved = 1;
		if (h_kafka_leaders(W.bootstrap, l.topic, l.parts, now, 2000, err, sizeof(err)) != 0)
			moved = 0;
		for (int p = 0; moved && p < l.parts; p++)
			if (now[p] == victim || now[p] < 0)
				moved = 0;
		cr_assert_lt(h_now_ms() - t, 60000, "no new leaders 60 s after the kill");
		if (!moved)
			sleep_ms(200);
	}
	cr_log_info("new leaders for its partitions %.1f s after the kill", world_secs_since(t));
	rc = h_kafka_real_restart_broker(&W.real, victim - 1, 90000, &restart_ms);
	cr_assert_eq(rc, 0, "restart of broker %d: %s\n%s", victim, strerror(-rc),
		     world_tail(W.real.proc.err_path));
	cr_log_info("broker %d restarted %.1f s after the kill (its start: %" PRId64 " ms)", victim,
		    world_secs_since(t), restart_ms);

	wait_produced(&l, 90000);
	{
		struct h_proc *const ks[] = { &k, NULL };

		cr_log_info("committed = end %.1f s after production",
			    wait_committed_at_end(l.topic, l.parts, "failover", 90000, ks,
						  "failover"));
	}
	/* the whole intake: the partitions other brokers lead go on */
	cr_log_info("k2mc's intake stopped altogether for at most %.1f s after the kill (its stats "
		    "lines)",
		    longest_stall_s(k.err_path, koff, 1.0));
	world_assert_cache(&W, l.expect, 0, NULL, 0, "after the failover");
	stop_k2mc(&k, "k2mc after the failover", &s);
	world_assert_committed_at_end(&W, l.topic, l.parts, "failover", "after the failover");
	log_done("broker failover");
}

/* ==== 4. static membership ==========================================================
 * A (group.instance.id member-1) is frozen with SIGSTOP as soon as a commit
 * of its is acknowledged (every 200 ms), partway through a backlog of older
 * records: its rings and librdkafka's queues hold records it has not
 * written, and its write lease (fence.h: about 37 s from that commit at the
 * default session) still runs. (Frozen before that commit, A holds no lease,
 * writes nothing when resumed, and the test would pass by luck: it did once
 * in three runs when A was frozen 0.3 s after its assignment.) Newer records for
 * every key follow. B, a new process with the same group.instance.id,
 * takes A's place at once (the coordinator replaces a static member without
 * waiting for its session), writes everything with -e and exits: every key
 * holds its last record. Then A is resumed. A reader polls every key all
 * along; from B's end on, any key that goes back to an older value is A
 * writing over its replacement, damage that committed offsets will never
 * repair. (While B replays from A's last commit, keys A had already written
 * further go back too: at-least-once, logged, not asserted.) Issue 22 is
 * the fix; until it lands this test fails, saying how many keys went back.
 * A's exit code and its lines about the fencing are logged either way. */
#define STATIC_KEYS 2000
#define STATIC_OLD 300000
#define STATIC_NEW 40000

/* Every S line of the expect file has a seq >= from: each key's last record
 * is one of the newer ones. The number of keys that are not. */
static size_t keys_older_than(const char *expect, uint64_t from, size_t *total)
{
	char *b = h_file_read(expect, NULL), *save = NULL;
	size_t older = 0;

	*total = 0;
	cr_assert_not_null(b, "cannot read %s", expect);
	for (char *l = strtok_r(b, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
		char key[64];
		unsigned long long seq;

		if (sscanf(l, "S %63s v:%*[^:]:%llu:", key, &seq) != 2)
			continue;
		(*total)++;
		if (seq < from)
			older++;
	}
	free(b);
	return older;
}

/* Tests 4 and 7, once A holds records it has not written: newer records
 * for every key, which the reader watches from now on; then B, a new
 * process with A's group.instance.id, takes A's place at once, writes
 * everything with -e and exits. The cache as B left it into *v_b. */
static void replace_static_member(struct load *l, const char *group, struct h_verify *v_b)
{
	static const char *const member[] = { "-X", "group.instance.id=member-1",
					      "--stats-interval-ms", "200", NULL };
	struct h_reader_stats rs;
	struct h_summary s;
	struct h_proc b;
	size_t total;
	int64_t t;
	int rc;

	start_reader(STATIC_KEYS, NULL);
	produce_more(l, STATIC_NEW, 60000);
	cr_assert_eq(keys_older_than(l->expect, STATIC_OLD, &total), 0,
		     "some keys have no newer record: the test cannot tell old from new");
	cr_assert_eq(total, STATIC_KEYS);

	t = h_now_ms();
	start_k2mc(&b, l->topic, group, 1, member);
	finish_k2mc(&b, 90000, "B (-e, the same group.instance.id)", &s);
	cr_log_info("B took A's place and wrote everything in %.1f s (consumed %" PRIu64 ")",
		    world_secs_since(t), s.consumed);
	rc = h_verify_memcached(l->expect, "127.0.0.1", W.mc[0].port, NULL, v_b);
	cr_assert_eq(rc, 0, "%s", v_b->first);
	/* B starts at A's last commit, and A had written past it: until B
	 * has caught up, keys hold values older than A's (at-least-once
	 * replay, the same after any crash). Counted apart from what follows,
	 * once B has written every key's last record. */
	h_reader_stats(READER, &rs);
	cr_log_info("while B replayed from A's last commit: %zu keys went back to older values, "
		    "%zu vanished (A had written past its commit)",
		    rs.went_back, rs.vanished);
	h_reader_reset(READER);
}

Test(kafka_group, static_member_replaced_while_frozen_then_resumed)
{
	static const char *const a_args[] = { "-X", "group.instance.id=member-1",
					      "--stats-interval-ms", "200",
					      "--commit-interval-ms", "200", NULL };
	struct load l = { .topic = "static", .parts = 16, .keys = STATIC_KEYS, .seed = "2004",
			  .control = 1 };
	int64_t committed[H_MAX_PARTS], end[H_MAX_PARTS], t;
	struct h_reader_stats rs;
	struct h_verify v_b, v_end;
	struct h_proc a;
	size_t aoff = 0;
	char line[512], a_stats[512] = "", st[96];
	int status = 0, rc, a_exit;
	static const char *const words[] = { "fatal", "fenced", "assignment lost", "released",
					     "assigned", "error", "summary", NULL };

	start_world(NULL);
	start_load(&l);
	produce_more(&l, STATIC_OLD, 120000);

	start_k2mc(&a, l.topic, "static", 0, a_args);
	wait_log(&a, RE_ASSIGNED, &aoff, 30000, "A joins", line, sizeof(line));
	world_wait_first_commit(&W, &a, "static", 30000);
	rc = h_pause(a.pid, 5000);
	cr_assert_eq(rc, 0, "SIGSTOP of A: %s", strerror(-rc));
	last_line(a.err_path, "INFO: in ", a_stats, sizeof(a_stats));
	world_offsets(&W, l.topic, l.parts, "static", committed, end);
	cr_log_info("A frozen with %" PRId64 " of %" PRId64 " records committed; its last stats "
		    "line: %.300s",
		    h_offsets_sum(committed, l.parts), h_offsets_sum(end, l.parts), a_stats);
	cr_assert_lt(h_offsets_sum(committed, l.parts), h_offsets_sum(end, l.parts),
		     "A committed everything before it was frozen: nothing in flight to test");

	replace_static_member(&l, "static", &v_b);

	/* A again */
	t = h_now_ms();
	cr_assert_eq(h_resume(a.pid), 0, "SIGCONT of A");
	rc = h_wait(a.pid, 30000, &status);
	if (rc == -ETIMEDOUT) {
		cr_log_warn("A still runs 30 s after SIGCONT: SIGTERM");
		status = h_stop(a.pid, 30000);
	}
	a_exit = h_exit_code(status);
	cr_log_info("A after SIGCONT: %s after %.1f s; its lines:\n%s",
		    h_status_str(status, st, sizeof(st)), world_secs_since(t),
		    grep_lines(a.err_path, 0, words, 20));
	stop_reader(&rs, "static membership");
	rc = h_verify_memcached(l.expect, "127.0.0.1", W.mc[0].port, NULL, &v_end);
	cr_assert_eq(rc, 0, "%s", v_end.first);

	cr_assert_eq(h_verify_mismatches(&v_b), 0,
		     "B's run alone left %zu keys wrong (before A was resumed); first:\n%s",
		     h_verify_mismatches(&v_b), v_b.first);
	/* librdkafka reports FENCED_INSTANCE_ID as a fatal consumer error:
	 * k2mc must stop and say so, not run on (it ran until SIGTERM, exit 0,
	 * before group.c took fatal errors from the consumer queue) */
	cr_assert(a_exit > 0 && h_wait_line(a.err_path, "ERROR: fatal Kafka error: .*fenced", NULL,
					    0, 0, NULL, 0) == 0,
		  "A, replaced and resumed, ended with %s without a fatal error line: a fenced "
		  "member must stop and exit non-zero; stderr:\n%s",
		  h_status_str(status, st, sizeof(st)), world_tail(a.err_path));
	cr_assert_eq(rs.went_back + rs.vanished, 0,
		     "issue 22: %zu keys went back to older values after the static member's "
		     "replacement (%zu vanished; %" PRIu64 " reads of an older value or none, "
		     "%.1f s to %.1f s after A's SIGCONT); %zu keys wrong at the end. A, resumed: "
		     "%s. First:\n%s",
		     rs.went_back, rs.vanished, rs.events,
		     rs.first_ms ? (double)(rs.first_ms - t) / 1000.0 : 0.0,
		     rs.last_ms ? (double)(rs.last_ms - t) / 1000.0 : 0.0,
		     h_verify_mismatches(&v_end), h_status_str(status, st, sizeof(st)), rs.first);
	cr_assert_eq(h_verify_mismatches(&v_end), 0,
		     "%zu keys wrong at the end, though no reader saw one go back; first:\n%s",
		     h_verify_mismatches(&v_end), v_end.first);
	world_assert_committed_at_end(&W, l.topic, l.parts, "static", "static membership");
	log_done("static membership");
}

/* ==== 5. Memcached frozen longer than max.poll.interval.ms ==========================
 * Two members with max.poll.interval.ms 10 s (session 6 s, heartbeat 2 s,
 * which k2mc's lease check accepts: 6000 - 2000 - 600 = 3400 ms, over 2 x
 * the commit interval). Memcached is frozen (SIGSTOP: connections stay open,
 * requests wait in its sockets) for 15 s while the producer goes on, then
 * resumed. Does either member leave the group, and does anyone write an
 * older value over a newer one when Memcached comes back? The reader says;
 * the members' lines about the group are logged. */
#define LIVE_KEYS 2000
#define LIVE_FREEZE_MS 15000

Test(kafka_group, memcached_frozen_longer_than_max_poll_two_members)
{
	static const char *const grp[] = { "-X", "max.poll.interval.ms=10000", "-X",
					   "session.timeout.ms=6000", "-X",
					   "heartbeat.interval.ms=2000", NULL };
	static const char *const words[] = { "max.poll", "leav", "left", "assignment lost",
					     "released", "assigned", "rebalance", "fatal",
					     "deadline", "error", "memcached", NULL };
	/* about 24 s of production: before, during and after the freeze */
	struct load l = { .topic = "live", .parts = 8, .records = 120000, .keys = LIVE_KEYS,
			  .seed = "2005", .rate = "5000" };
	struct h_proc a, b;
	struct h_summary sa, sb;
	struct h_reader_stats rs;
	size_t aoff = 0, boff = 0, a_from, b_from;
	long long a_written, b_written;
	char line[512];
	int rc;
	int64_t t;

	start_world(NULL);
	start_load(&l);
	start_k2mc(&a, l.topic, "live", 0, grp);
	wait_log(&a, RE_ASSIGNED, &aoff, 30000, "A joins", line, sizeof(line));
	start_k2mc(&b, l.topic, "live", 0, grp);
	wait_log(&b, RE_ASSIGNED, &boff, 30000, "B joins", line, sizeof(line));
	world_wait_first_commit(&W, &b, "live", 30000);
	start_reader(LIVE_KEYS, NULL);
	cr_assert_eq(h_reader_wait_sweeps(READER, 1, 10000), 0, "reader: no sweep");

	a_from = file_size(a.err_path);
	b_from = file_size(b.err_path);
	rc = h_pause(W.mc[0].proc.pid, 5000);
	cr_assert_eq(rc, 0, "SIGSTOP of memcached: %s", strerror(-rc));
	t = h_now_ms();
	/* the scenario: frozen this long; stats lines come every second, so
	 * the first after the freeze began is still the freeze's */
	sleep_ms(1500);
	a_written = last_written(&a);
	b_written = last_written(&b);
	sleep_ms(LIVE_FREEZE_MS - 1500);
	a_written = last_written(&a) - a_written;
	b_written = last_written(&b) - b_written;
	cr_assert_eq(h_resume(W.mc[0].proc.pid), 0, "SIGCONT of memcached");
	cr_log_info("memcached frozen for %.1f s (max.poll.interval.ms 10 s); written meanwhile, as "
		    "the stats lines count acknowledged writes: A %lld, B %lld",
		    world_secs_since(t), a_written, b_written);
	cr_assert(!h_file_exists(l.expect), "production ended during the freeze");

	wait_produced(&l, 90000);
	{
		struct h_proc *const ks[] = { &a, &b, NULL };

		cr_log_info("committed = end %.1f s after production",
			    wait_committed_at_end(l.topic, l.parts, "live", 90000, ks,
						  "after the freeze"));
	}
	stop_reader(&rs, "memcached frozen");
	cr_log_info("A's lines from the freeze on:\n%s", grep_lines(a.err_path, a_from, words, 12));
	cr_log_info("B's lines from the freeze on:\n%s", grep_lines(b.err_path, b_from, words, 12));
	cr_assert_eq(rs.went_back + rs.vanished, 0,
		     "%zu keys went back to older values, %zu vanished, after Memcached was "
		     "frozen past max.poll.interval.ms; first:\n%s",
		     rs.went_back, rs.vanished, rs.first);
	world_assert_cache(&W, l.expect, 0, NULL, 0, "after memcached came back");
	stop_k2mc(&a, "A, SIGTERM", &sa);
	stop_k2mc(&b, "B, SIGTERM", &sb);
	cr_log_info("consumed: A %" PRIu64 ", B %" PRIu64 " of %" PRIu64, sa.consumed,
		    sb.consumed, l.records);
	world_assert_committed_at_end(&W, l.topic, l.parts, "live", "after memcached came back");
	log_done("memcached frozen past max.poll");
}

/* ==== 6. topics that change =========================================================
 * k2mc subscribes to '^events-.*' with topic.metadata.refresh.interval.ms
 * 2 s (librdkafka's default is 300 s: a new topic or partition is noticed at
 * the next refresh). events-a (4 partitions) is read to its end; then, with
 * k2mc frozen, it grows to 8 partitions and events-b appears, both produced
 * to, and once k2mc runs again both must be read from offset 0. Keys are {topic}:{key}, so the two
 * topics do not share keys; events-a's second producer hashes keys over 8
 * partitions, so a key's newer records may sit in a new partition while its
 * older ones, already written, are in an old one. */
static void merge_expect(const char *older, const char *newer, const char *out)
{
	char *o = h_file_read(older, NULL), *n = h_file_read(newer, NULL), *save = NULL;
	FILE *f = fopen(out, "w");

	cr_assert(o != NULL && n != NULL && f != NULL, "merging %s and %s", older, newer);
	/* the newer file's line for a key wins; both are in key order */
	for (char *l = strtok_r(o, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
		char key[64], pat[80];

		if (sscanf(l + 2, "%63s", key) != 1)
			continue;
		snprintf(pat, sizeof(pat), " %s", key);
		{
			char *hit = strstr(n, pat);

			/* a whole key: followed by a blank or the end of its line */
			if (hit != NULL && (hit[strlen(pat)] == ' ' || hit[strlen(pat)] == '\n' ||
					    hit[strlen(pat)] == '\0') &&
			    (hit - n == 1 || hit[-2] == '\n'))
				continue;
		}
		fprintf(f, "%s\n", l);
	}
	fputs(n, f);
	fclose(f);
	free(o);
	free(n);
}

Test(kafka_group, partitions_added_and_regex_gains_a_topic)
{
	static const char *const k2[] = { "--key", "{topic}:{key}", "-X",
					  "topic.metadata.refresh.interval.ms=2000", NULL };
	struct load a1 = { .topic = "events-a", .parts = 4, .records = 8000, .keys = 2000,
			   .tombstones = 5, .seed = "2006" };
	struct load a2 = { .topic = "events-a", .parts = 8, .records = 8000, .keys = 2000,
			   .tombstones = 5, .seed = "2016" };
	struct load b1 = { .topic = "events-b", .parts = 4, .records = 8000, .keys = 2000,
			   .tombstones = 5, .seed = "2026" };
	char err[256], line[512], merged[H_PATH_MAX];
	int64_t end[H_MAX_PARTS], t;
	struct h_proc k;
	struct h_summary s;
	size_t off = 0;
	int rc;

	start_world(NULL);
	start_load(&a1);
	wait_produced(&a1, 60000);
	start_k2mc(&k, "^events-.*", "events", 0, k2);
	wait_log(&k, "INFO: assigned 4 partition", &off, 30000, "k2mc joins", line, sizeof(line));
	{
		struct h_proc *const ks[] = { &k, NULL };

		wait_committed_at_end(a1.topic, 4, "events", 30000, ks, "events-a before it grows");
	}

	/* k2mc frozen while the topics change, so that every new partition
	 * holds records before k2mc can know of it: reading it from "latest"
	 * would lose them. A few seconds: well within the session. */
	rc = h_pause(k.pid, 5000);
	cr_assert_eq(rc, 0, "SIGSTOP of k2mc: %s", strerror(-rc));
	t = h_now_ms();
	rc = h_kafka_create_partitions(W.bootstrap, "events-a", 8, 30000, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s", err);
	start_load(&a2); /* its producer sees 8 partitions */
	start_load(&b1); /* creates events-b */
	wait_produced(&a2, 60000);
	wait_produced(&b1, 60000);
	cr_log_info("events-a grown to 8 partitions and events-b created and produced in %.1f s",
		    world_secs_since(t));
	world_offsets(&W, "events-a", 8, "events", NULL, end);
	for (int p = 4; p < 8; p++)
		cr_assert_gt(end[p], 0, "events-a[%d] got no records: nothing to read from 0", p);
	cr_assert_eq(h_resume(k.pid), 0);
	t = h_now_ms();
	/* one rebalance for both, or two */
	wait_log(&k, "INFO: assigned (8|12) partition", &off, 30000,
		 "k2mc picks up the new partitions and topic", line, sizeof(line));
	cr_log_info("%.1f s after k2mc was resumed: %s", world_secs_since(t), line);
	{
		struct h_proc *const ks[] = { &k, NULL };

		wait_committed_at_end("events-a", 8, "events", 30000, ks, "events-a grown");
		wait_committed_at_end("events-b", 4, "events", 30000, ks, "events-b");
	}
	cr_log_info("both read to their end %.1f s after k2mc was resumed", world_secs_since(t));
	h_tmppath(merged, sizeof(merged), "expect-events-a-merged.txt");
	merge_expect(a1.expect, a2.expect, merged);
	world_assert_cache(&W, merged, 0, "events-a:", 0, "events-a, 4 + 4 partitions");
	world_assert_cache(&W, b1.expect, 0, "events-b:", 0, "events-b, new topic");
	stop_k2mc(&k, "k2mc, SIGTERM", &s);
	cr_assert_eq(s.consumed, a1.records + a2.records + b1.records,
		     "consumed %" PRIu64 " of %" PRIu64 " (the new partitions and topic from "
		     "offset 0)",
		     s.consumed, a1.records + a2.records + b1.records);
	world_assert_committed_at_end(&W, "events-a", 8, "events", "events-a at the end");
	world_assert_committed_at_end(&W, "events-b", 4, "events", "events-b at the end");
	log_done("topics that change");
}

/* ==== 7. static membership, only the path to Memcached frozen ======================
 * As 4, but A itself runs: only its path to Memcached is frozen (the relay
 * holds Memcached's replies), as soon as a commit of its is acknowledged,
 * partway through a backlog of older records. A's writers wait for answers
 * and its rings fill with records it cannot write: writes pending. Newer
 * records for every key follow; B, with the same group.instance.id, takes
 * A's place at once and writes everything with -e. The coordinator fences
 * A (FENCED_INSTANCE_ID, a fatal consumer error) while its writes are
 * pending. Then A's path comes back: nothing it held may be written, and A
 * must exit non-zero saying why (at 9bdd0d3, before issue 22: no fatal
 * line, A ran on until SIGTERM and wrote 3.3 MB when its path came back,
 * and every one of the 2,000 keys went back). A reader polls every key from
 * before B started; from B's end on, no key may go back to an older value. */
Test(kafka_group, static_member_path_frozen_replaced_fatal_while_writes_pending)
{
	static const char *const a_args[] = { "-X", "group.instance.id=member-1",
					      "--stats-interval-ms", "200",
					      "--commit-interval-ms", "200", NULL };
	static const char *const words[] = { "fatal", "fenced", "assignment lost", "released",
					     "assigned", "error", "deadline", "summary", NULL };
	struct load l = { .topic = "static-path", .parts = 16, .keys = STATIC_KEYS,
			  .seed = "2007", .control = 1 };
	int64_t committed[H_MAX_PARTS], end[H_MAX_PARTS], t, t_freeze;
	struct h_reader_stats rs;
	struct h_verify v_b, v_end;
	struct h_proc a;
	size_t aoff = 0;
	uint64_t up_frozen, up_thaw;
	char line[512], st[96];
	int status = 0, rc, a_exit, fatal_seen;

	start_world(NULL);
	RELAY = relay_start(W.mc[0].port, 0);
	start_load(&l);
	produce_more(&l, STATIC_OLD, 120000);

	start_k2mc_via(&a, relay_addr(RELAY), l.topic, "static-path", 0, a_args);
	wait_log(&a, RE_ASSIGNED, &aoff, 30000, "A joins", line, sizeof(line));
	world_wait_first_commit(&W, &a, "static-path", 30000);
	relay_hold(RELAY, RELAY_HOLD_REPLIES);
	t_freeze = h_now_ms();
	up_frozen = relay_up_bytes(RELAY);
	cr_assert_gt(relay_accepted(RELAY), 0, "A's memcached connections bypassed the relay");
	world_offsets(&W, l.topic, l.parts, "static-path", committed, end);
	cr_log_info("A's path to memcached frozen with %" PRId64 " of %" PRId64
		    " records committed",
		    h_offsets_sum(committed, l.parts), h_offsets_sum(end, l.parts));
	cr_assert_lt(h_offsets_sum(committed, l.parts), h_offsets_sum(end, l.parts),
		     "A committed everything before its path froze: nothing pending to test");

	replace_static_member(&l, "static-path", &v_b);
	/* the coordinator fenced A when B joined; A hears it at its next
	 * heartbeat or commit. Its path comes back once it has (or after 30 s
	 * in any case: A must not write then either) */
	fatal_seen = h_wait_line(a.err_path, "ERROR: fatal Kafka error: .*fenced", NULL, a.pid,
				 30000, line, sizeof(line)) == 0;
	cr_log_info("A %s; its path frozen for %.1f s; it sent %" PRIu64 " bytes into it meanwhile",
		    fatal_seen ? "logged the fatal error" : "logged no fatal error within 30 s",
		    world_secs_since(t_freeze), relay_up_bytes(RELAY) - up_frozen);

	/* A's path again */
	t = h_now_ms();
	up_thaw = relay_up_bytes(RELAY);
	relay_release(RELAY);
	rc = h_wait(a.pid, 30000, &status);
	if (rc == -ETIMEDOUT) {
		cr_log_warn("A still runs 30 s after its path came back: SIGTERM");
		status = h_stop(a.pid, 30000);
	}
	a_exit = h_exit_code(status);
	stop_reader(&rs, "static membership, path frozen");
	cr_log_info("A after its path came back: %s after %.1f s, %" PRIu64 " bytes sent to "
		    "memcached since; its lines:\n%s",
		    h_status_str(status, st, sizeof(st)), world_secs_since(t),
		    relay_up_bytes(RELAY) - up_thaw, grep_lines(a.err_path, 0, words, 20));
	rc = h_verify_memcached(l.expect, "127.0.0.1", W.mc[0].port, NULL, &v_end);
	cr_assert_eq(rc, 0, "%s", v_end.first);

	cr_assert_eq(h_verify_mismatches(&v_b), 0,
		     "B's run alone left %zu keys wrong (before A's path came back); first:\n%s",
		     h_verify_mismatches(&v_b), v_b.first);
	cr_assert_eq(rs.went_back + rs.vanished, 0,
		     "issue 22: %zu keys went back to older values after the static member's "
		     "replacement (%zu vanished; %" PRIu64 " reads of an older value or none, "
		     "%.1f s to %.1f s after A's path came back); %zu keys wrong at the end. "
		     "First:\n%s",
		     rs.went_back, rs.vanished, rs.events,
		     rs.first_ms ? (double)(rs.first_ms - t) / 1000.0 : 0.0,
		     rs.last_ms ? (double)(rs.last_ms - t) / 1000.0 : 0.0,
		     h_verify_mismatches(&v_end), rs.first);
	cr_assert_eq(h_verify_mismatches(&v_end), 0,
		     "%zu keys wrong at the end, though no reader saw one go back; first:\n%s",
		     h_verify_mismatches(&v_end), v_end.first);
	cr_assert(a_exit > 0 && h_wait_line(a.err_path, "ERROR: fatal Kafka error: .*fenced", NULL,
					    0, 0, NULL, 0) == 0,
		  "A, replaced while its writes were pending, ended with %s without a fatal error "
		  "line: a fenced member must stop and exit non-zero; stderr:\n%s",
		  h_status_str(status, st, sizeof(st)), world_tail(a.err_path));
	world_assert_committed_at_end(&W, l.topic, l.parts, "static-path",
				      "static membership, path frozen");
	log_done("static membership, path frozen");
}

/* ==== 8. eviction by rebalance timeout, a drain held up by a frozen path ============
 * Three members, max.poll.interval.ms (the rebalance timeout) 10 s, session
 * 6 s, --shutdown-timeout-ms 30 s (k2mc must warn that a drain is cut at
 * the end of the join phase). A and B share 8 partitions; A reaches
 * Memcached through the relay. A's path freezes (replies held), newer
 * records follow, so A's writers wait and its rings hold records; then C
 * joins. A's revocation drain cannot finish: before issue 22 it ran on past
 * the rebalance timeout, the coordinator removed A, C took A's partitions
 * and wrote them to the end, and when A's path came back 2.6 s later A
 * wrote what it held over C's values (about 1,000 of 2,000 keys wrong; at
 * 9bdd0d3 here: 997 keys went back, 529 wrong at the end). The rule now: no
 * write lands after the rebalance timeout could have removed A, counted
 * from the revocation; a drain that cannot finish by then is cut (at
 * max.poll.interval.ms - heartbeat.interval.ms - margin, 7.4 s here) and
 * abandoned, so A rejoins in time and is not removed at all. Either way
 * (cut, or removed) the checks are the same. A's path is partitioned
 * (RELAY_HOLD_BOTH: its requests are held too) and comes back 2.6 s after the
 * join phase ended, its connections reset: held replies alone would let the
 * batches A sent during the freeze land unacknowledged, and the next
 * owner's replay from the last commit then moves those keys back before
 * moving them on (at-least-once, seen once in 6 runs on 3.9.1: 33 keys),
 * which says nothing of A. Partitioned, nothing A sent during the freeze
 * lands, so a key going back can only be A writing after its path came
 * back. A reader polls every key throughout and no key may go back to an
 * older value. Tombstones are in the stream: a key they delete is a vanished key
 * to the reader, so vanished keys are logged, not asserted; the final check
 * sees a stale delete. */
#define EVICT_KEYS 2000

Test(kafka_group, rebalance_timeout_with_a_drain_held_up_by_a_frozen_path)
{
	static const char *const grp[] = { "-X", "max.poll.interval.ms=10000", "-X",
					   "session.timeout.ms=6000", "-X",
					   "heartbeat.interval.ms=2000", "--shutdown-timeout-ms",
					   "30000", "--commit-interval-ms", "200", NULL };
	static const char *const words[] = { "max.poll", "leav", "left", "assignment lost",
					     "released", "assigned", "rebalance", "fatal",
					     "deadline", "unknown", "error", "shutdown-timeout",
					     NULL };
	struct load l = { .topic = "evict", .parts = 8, .keys = EVICT_KEYS, .tombstones = 5,
			  .seed = "2008", .control = 1 };
	struct h_proc a, b, c;
	struct h_reader_stats rs;
	struct h_verify v;
	size_t aoff = 0, boff = 0, coff = 0, a_from, cut_off;
	uint64_t up_thaw;
	char line[512], st[96];
	int64_t t;
	int status;

	start_world(NULL);
	RELAY = relay_start(W.mc[0].port, 0);
	start_load(&l);
	produce_more(&l, 40000, 60000);
	start_k2mc_via(&a, relay_addr(RELAY), l.topic, "evict", 0, grp);
	wait_log(&a, RE_ASSIGNED, &aoff, 30000, "A joins", line, sizeof(line));
	start_k2mc(&b, l.topic, "evict", 0, grp);
	wait_log(&b, RE_ASSIGNED, &boff, 30000, "B joins", line, sizeof(line));
	/* A's share after B joined */
	wait_log(&a, RE_ASSIGNED, &aoff, 30000, "A reassigned after B joined", line, sizeof(line));
	cr_log_info("A: %s", line);
	{
		struct h_proc *const ks[] = { &a, &b, NULL };

		wait_committed_at_end(l.topic, l.parts, "evict", 60000, ks, "A and B");
	}
	start_reader(EVICT_KEYS, NULL);
	cr_assert_eq(h_reader_wait_sweeps(READER, 1, 10000), 0, "reader: no sweep");

	a_from = file_size(a.err_path);
	relay_hold(RELAY, RELAY_HOLD_BOTH);
	t = h_now_ms();
	produce_more(&l, 40000, 60000);
	start_k2mc(&c, l.topic, "evict", 0, grp);
	wait_log(&c, RE_ASSIGNED, &coff, 60000, "C joins (the join phase ends)", line,
		 sizeof(line));
	cr_log_info("C, %.1f s after A's path froze: %s", world_secs_since(t), line);
	/* the scenario: A's path comes back 2.6 s after the join phase ended */
	sleep_ms(2600);
	up_thaw = relay_up_bytes(RELAY);
	relay_reset(RELAY);
	cr_log_info("A's path frozen for %.1f s", world_secs_since(t));
	t = h_now_ms();
	{
		struct h_proc *const ks[] = { &a, &b, &c, NULL };

		cr_log_info("committed = end %.1f s after A's path came back",
			    wait_committed_at_end(l.topic, l.parts, "evict", 90000, ks,
						  "after A's path came back"));
	}
	stop_reader(&rs, "eviction by rebalance timeout");
	cr_log_info("A sent %" PRIu64 " bytes to memcached after its path came back; its lines "
		    "from the freeze on:\n%s",
		    relay_up_bytes(RELAY) - up_thaw, grep_lines(a.err_path, a_from, words, 16));
	cr_log_info("B's lines:\n%s", grep_lines(b.err_path, 0, words, 10));
	cr_assert_eq(h_verify_memcached(l.expect, "127.0.0.1", W.mc[0].port, NULL, &v), 0, "%s",
		     v.first);
	cr_assert_eq(rs.went_back, 0,
		     "issue 22: %zu keys went back to older values after A's drain was held up "
		     "past the rebalance timeout (%zu vanished, tombstones included; %" PRIu64
		     " events, %.1f s to %.1f s after A's path came back); at the end %zu keys "
		     "wrong (%zu with another value, %zu deleted but present, %zu missing); "
		     "first:\n%s",
		     rs.went_back, rs.vanished, rs.events,
		     rs.first_ms ? (double)(rs.first_ms - t) / 1000.0 : 0.0,
		     rs.last_ms ? (double)(rs.last_ms - t) / 1000.0 : 0.0, h_verify_mismatches(&v),
		     v.wrong, v.present, v.missing, rs.first);
	world_assert_cache(&W, l.expect, 0, NULL, 0, "after the eviction");
	/* A stopped writing what it held: its drain was cut (and it rejoined
	 * in time), or the coordinator removed it and it learnt so */
	cut_off = a_from;
	cr_assert_eq(h_wait_line(a.err_path,
				 "WARN: (.*record\\(s\\) not acknowledged by Memcached before the "
				 "deadline|assignment lost)",
				 &cut_off, 0, 0, line, sizeof(line)),
		     0, "A neither cut its drain nor lost its assignment; stderr:\n%s",
		     world_tail(a.err_path));
	cr_log_info("A %s", h_file_contains(a.err_path, "assignment lost")
				    ? "lost its assignment (removed by the coordinator)"
				    : "cut its drain and rejoined before the rebalance timeout");
	cr_assert_eq(h_wait_line(a.err_path, "WARN: --shutdown-timeout-ms 30000 is longer than a "
				 "rebalance lets a member write", NULL, 0, 0, NULL, 0), 0,
		     "A gave no warning that its drain is cut at the rebalance timeout; "
		     "stderr:\n%s", world_tail(a.err_path));
	/* A abandoned what its drain held: its summary may count it unwritten */
	status = h_stop(a.pid, 30000);
	cr_log_info("A, SIGTERM: %s", h_status_str(status, st, sizeof(st)));
	status = h_stop(b.pid, 30000);
	cr_assert_eq(h_exit_code(status), 0, "B, SIGTERM: %s", h_status_str(status, st, sizeof(st)));
	status = h_stop(c.pid, 30000);
	cr_assert_eq(h_exit_code(status), 0, "C, SIGTERM: %s", h_status_str(status, st, sizeof(st)));
	world_assert_committed_at_end(&W, l.topic, l.parts, "evict",
				      "eviction by rebalance timeout");
	log_done("eviction by rebalance timeout");
}

/* ==== 9. refill during a rebalance ==================================================
 * Two members with --refill --refill-rate 400 share 8 partitions of 4,000
 * keys with deletes in the stream. Memcached is flushed: both see their
 * sentinels gone and refill their partitions, slowly. 1.5 s into its
 * refill (about 600 records of 4,000), A is frozen (SIGSTOP) past its
 * session; B takes all 8 partitions and writes newer values and deletes.
 * Then A is resumed. Its refill must write nothing more: a refill batch is
 * subject to the live path's checks (the lease, the partition still ours in
 * the same generation, past its takeover wait), per batch. Before issue 22
 * it noticed the revocation only every 500 ms and its adds landed after
 * B's deletes (on the mock: 23-37 of 4,000 keys held a value their last
 * record deletes; on Kafka 4.1.1 at 9bdd0d3, 16). The reader asserts that
 * no key goes back to an older value (the flush and the deletes make keys
 * vanish: logged only); the cache must end equal to every key's last record
 * once B's refill of the flushed server is done. */
#define REFILL_KEYS 4000
#define REFILL_GROUP "refill"

/* memcached's flush_all on the world's server. */
static void mc_flush(void)
{
	memcached_st *m = memcached_create(NULL);

	cr_assert_not_null(m);
	cr_assert_eq(memcached_server_add(m, "127.0.0.1", (in_port_t)W.mc[0].port),
		     MEMCACHED_SUCCESS);
	cr_assert_eq(memcached_flush(m, 0), MEMCACHED_SUCCESS, "flush_all: %s",
		     memcached_last_error_message(m));
	memcached_free(m);
}

/* Number of topic's n partitions whose refill sentinel (refill.c:
 * k2mc:<group>:sentinel:<topic>:<partition>, the group as k2mc was given
 * it) is in the cache. */
static int sentinels_present(const char *topic, int n)
{
	int have = 0;

	for (int p = 0; p < n; p++) {
		char key[160], *v;

		snprintf(key, sizeof(key), "k2mc:%s:sentinel:%s:%d", world_name(REFILL_GROUP),
			 topic, p);
		v = world_mc_get(W.mc[0].port, key, strlen(key), NULL);
		if (v != NULL)
			have++;
		free(v);
	}
	return have;
}

Test(kafka_group, refill_during_a_rebalance_never_replaces_the_new_owners_writes)
{
	static const char *const args[] = { "--refill", "--refill-rate", "400",
					    "--commit-interval-ms", "200", "-X",
					    "session.timeout.ms=6000", "-X",
					    "heartbeat.interval.ms=1000", NULL };
	static const char *const words[] = { "refill", "revoked", "assignment lost", "released",
					     "assigned", "takeover", "error", NULL };
	struct load l = { .topic = "refill", .parts = 8, .keys = REFILL_KEYS, .tombstones = 10,
			  .seed = "2009", .control = 1 };
	struct h_proc a, b;
	struct h_reader_stats rs;
	struct h_verify v = { 0 };
	size_t aoff = 0, boff = 0, a_from;
	char line[512], st[96];
	int64_t t, t_resume;
	int status, rc;

	start_world(NULL);
	start_load(&l);
	produce_more(&l, 8000, 60000);
	start_k2mc(&a, l.topic, REFILL_GROUP, 0, args);
	wait_log(&a, RE_ASSIGNED, &aoff, 30000, "A joins", line, sizeof(line));
	start_k2mc(&b, l.topic, REFILL_GROUP, 0, args);
	wait_log(&b, RE_ASSIGNED, &boff, 30000, "B joins", line, sizeof(line));
	wait_log(&a, RE_ASSIGNED, &aoff, 30000, "A reassigned after B joined", line, sizeof(line));
	{
		struct h_proc *const ks[] = { &a, &b, NULL };

		wait_committed_at_end(l.topic, l.parts, REFILL_GROUP, 60000, ks, "A and B");
	}
	/* every partition's sentinel is set: a flush is seen as a loss */
	t = h_now_ms();
	while (sentinels_present(l.topic, l.parts) < l.parts) {
		cr_assert_lt(h_now_ms() - t, 20000, "not every sentinel set within 20 s; A:\n%s",
			     world_tail(a.err_path));
		sleep_ms(100);
	}
	start_reader(REFILL_KEYS, NULL);
	cr_assert_eq(h_reader_wait_sweeps(READER, 1, 10000), 0, "reader: no sweep");

	a_from = file_size(a.err_path);
	mc_flush();
	wait_log(&a, "lost its contents", &aoff, 20000, "A sees the flush", line, sizeof(line));
	cr_log_info("A: %s", line);
	/* the scenario: A frozen 1.5 s into its refill */
	sleep_ms(1500);
	rc = h_pause(a.pid, 5000);
	cr_assert_eq(rc, 0, "SIGSTOP of A: %s", strerror(-rc));
	t = h_now_ms();
	{
		size_t off = a_from;

		cr_assert_neq(h_wait_line(a.err_path, "refill of memcached .*partition\\(s\\) done",
					  &off, 0, 0, NULL, 0),
			      0, "A's refill was over before A was frozen: nothing to test; "
			      "stderr:\n%s", world_tail(a.err_path));
	}
	/* B takes A's partitions once A's session (6 s) has expired */
	wait_log(&b, "INFO: assigned 8 partition", &boff, 30000, "B takes all 8 partitions", line,
		 sizeof(line));
	cr_log_info("B, %.1f s after A was frozen: %s", world_secs_since(t), line);
	/* newer values and deletes, which B writes */
	produce_more(&l, 4000, 60000);
	{
		struct h_proc *const ks[] = { &b, NULL };

		wait_committed_at_end(l.topic, l.parts, REFILL_GROUP, 60000, ks,
				      "B alone, A frozen");
	}
	cr_assert_eq(h_resume(a.pid), 0, "SIGCONT of A");
	t_resume = h_now_ms();
	cr_log_info("A frozen for %.1f s", (double)(t_resume - t) / 1000.0);
	wait_log(&a, "assignment lost|released [0-9]+ partition", &aoff, 30000,
		 "A learns it lost its partitions", line, sizeof(line));
	cr_log_info("A, %.1f s after SIGCONT: %s", world_secs_since(t_resume), line);

	/* B refills the partitions it took: the cache converges to every
	 * key's last record, unless a stale refill write of A's stays */
	t = h_now_ms();
	for (;;) {
		rc = h_verify_memcached(l.expect, "127.0.0.1", W.mc[0].port, NULL, &v);
		cr_assert_eq(rc, 0, "%s", v.first);
		if (h_verify_mismatches(&v) == 0 || h_now_ms() - t > 90000)
			break;
		cr_assert_eq(h_exited(b.pid, NULL), 0, "B ended; stderr:\n%s",
			     world_tail(b.err_path));
		sleep_ms(500);
	}
	cr_log_info("cache %s %.1f s after A was resumed", h_verify_mismatches(&v) ? "still differs"
										  : "converged",
		    world_secs_since(t_resume));
	stop_reader(&rs, "refill during a rebalance");
	cr_log_info("A's lines from the flush on:\n%s", grep_lines(a.err_path, a_from, words, 16));
	cr_log_info("B's refill lines:\n%s", grep_lines(b.err_path, 0, words, 16));
	cr_assert_eq(rs.went_back, 0,
		     "issue 22: %zu keys went back to older values during the refill and the "
		     "rebalance (%zu vanished: the flush and the deletes); first:\n%s",
		     rs.went_back, rs.vanished, rs.first);
	cr_assert_eq(h_verify_mismatches(&v), 0,
		     "issue 22: 90 s after A was resumed, %zu keys are not at their last record "
		     "(%zu missing, %zu with another value, %zu hold a value their last record "
		     "deletes); first:\n%s",
		     h_verify_mismatches(&v), v.missing, v.wrong, v.present, v.first);
	status = h_stop(a.pid, 30000);
	cr_log_info("A, SIGTERM: %s", h_status_str(status, st, sizeof(st)));
	status = h_stop(b.pid, 30000);
	cr_assert_eq(h_exit_code(status), 0, "B, SIGTERM: %s", h_status_str(status, st, sizeof(st)));
	world_assert_committed_at_end(&W, l.topic, l.parts, REFILL_GROUP,
				      "refill during a rebalance");
	log_done("refill during a rebalance");
}
