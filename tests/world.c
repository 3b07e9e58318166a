/* The test world of the integration suites; see world.h. Every call asserts
 * with Criterion; the processes are the harness's, stopped by PID. */
#include "world.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define WORLD_BOOTSTRAP_ENV "K2MC_KAFKA_BOOTSTRAP"

/* The world of the running test, for world_teardown (a .fini has no
 * argument). Set by world_start; one test per process. */
static struct world *current;

/* ---- the shared broker (runner process) -------------------------------------*/

/* Broker settings the suites need beyond the launcher's: their k2mc runs use
 * sessions of 3 s (a restart after kill -9 waits for the old member to
 * expire), under the broker's default minimum of 6 s (JoinGroup: "Invalid
 * session timeout"). */
static const char *const broker_config[] = { "group.min.session.timeout.ms=1000", NULL };
static const struct h_kafka_real_opts broker_opts = { .config = broker_config };

void world_share_broker(void)
{
	static struct h_kafka_real shared;
	const char *b = getenv(WORLD_BOOTSTRAP_ENV);
	int rc;

	if (h_kafka_backend() != H_KAFKA_REAL || (b != NULL && b[0] != '\0'))
		return;
	rc = h_kafka_real_start(&shared, &broker_opts);
	if (rc != 0) {
		fprintf(stderr, "world: the suite's Kafka broker did not start: %s\n%s\n",
			strerror(-rc), h_tail_of(shared.proc.err_path, 30));
		h_cleanup();
		exit(1);
	}
	/* the tests are processes of their own: they find it here */
	setenv(WORLD_BOOTSTRAP_ENV, shared.bootstrap, 1);
}

/* ---- names -------------------------------------------------------------------*/

/* world_start calls of this process: a test that builds its world more
 * than once gets fresh topics and groups each time */
static unsigned generation;

const char *world_name(const char *base)
{
	static char names[32][160];
	static unsigned next;
	char want[160];

	if (base == NULL || h_kafka_backend() != H_KAFKA_REAL)
		return base;
	for (unsigned i = 0; i < 32; i++)
		if (names[i] == base)
			return base; /* tagged already */
	snprintf(want, sizeof(want), "%s-t%d-%u", base, (int)getpid(), generation);
	for (unsigned i = 0; i < 32; i++)
		if (strcmp(names[i], want) == 0)
			return names[i];
	cr_assert_lt(next, 32u, "more than 32 topic and group names in one test");
	snprintf(names[next], sizeof(names[0]), "%s", want);
	return names[next++];
}

void world_skip_unless_mock(const char *why)
{
	if (h_kafka_backend() != H_KAFKA_MOCK)
		cr_skip_test("on a real broker: %s", why);
}

double world_secs_since(int64_t t0)
{
	return (double)(h_now_ms() - t0) / 1000.0;
}

const char *world_tail(const char *path)
{
	return h_tail_of(path, 15);
}

/* ---- start and stop ----------------------------------------------------------*/

void world_start_memcached(struct world *w, int nmc, const char *const mc_args[])
{
	int rc;

	current = w;
	w->nmc = nmc == 0 ? 1 : nmc < 0 ? 0 : nmc;
	cr_assert_leq(w->nmc, WORLD_MAX_MC, "at most %d memcached servers", WORLD_MAX_MC);
	for (int i = 0; i < w->nmc; i++) {
		rc = h_memcached_start(&w->mc[i], 0, mc_args);
		cr_assert_eq(rc, 0, "memcached %d did not start: %s", i, strerror(-rc));
		snprintf(w->mc_list + strlen(w->mc_list), sizeof(w->mc_list) - strlen(w->mc_list),
			 "%s127.0.0.1:%d", i ? "," : "", w->mc[i].port);
	}
	if (w->nmc > 0)
		snprintf(w->mc_addr, sizeof(w->mc_addr), "127.0.0.1:%d", w->mc[0].port);
}

void world_start(struct world *w, const struct world_opts *o)
{
	static const struct world_opts dflt = { 0 };
	static char topic[200], more[8][200], n[24], k[16], vs[16], ts[16];
	const char *args[96], *shared = getenv(WORLD_BOOTSTRAP_ENV);
	int a = 0, rc;

	if (o == NULL)
		o = &dflt;
	memset(w, 0, sizeof(*w));
	current = w;
	generation++;
	w->t0 = h_now_ms();
	w->backend = h_kafka_backend();
	w->parts = o->parts > 0 ? o->parts : 8;
	w->keys = o->keys;
	snprintf(w->topic, sizeof(w->topic), "%s", world_name(o->topic ? o->topic : "events"));
	world_start_memcached(w, o->nmc, o->mc_args);

	if (w->backend == H_KAFKA_REAL) {
		if (shared == NULL || shared[0] == '\0') {
			rc = h_kafka_real_start(&w->real, &broker_opts);
			cr_assert_eq(rc, 0, "kafka broker did not start: %s\nlauncher:\n%s",
				     strerror(-rc), world_tail(w->real.proc.err_path));
			w->own_broker = 1;
			shared = w->real.bootstrap;
		}
		args[a++] = "-b";
		args[a++] = shared;
	}
	snprintf(topic, sizeof(topic), "%s:%d", w->topic, w->parts);
	args[a++] = "--topic";
	args[a++] = topic;
	for (int i = 0; o->topics != NULL && o->topics[i] != NULL && i < 8; i++) {
		const char *colon = strrchr(o->topics[i], ':');
		char base[160];

		cr_assert_not_null(colon, "topic '%s': NAME:PARTS expected", o->topics[i]);
		snprintf(base, sizeof(base), "%.*s", (int)(colon - o->topics[i]), o->topics[i]);
		snprintf(more[i], sizeof(more[i]), "%s%s", world_name(base), colon);
		args[a++] = "--topic";
		args[a++] = more[i];
	}
	if (o->records > 0) {
		snprintf(n, sizeof(n), "%" PRIu64, o->records);
		args[a++] = "--produce";
		args[a++] = n;
	}
	if (o->keys > 0) {
		snprintf(k, sizeof(k), "%u", o->keys);
		args[a++] = "--keys";
		args[a++] = k;
	}
	if (o->value_size > 0) {
		snprintf(vs, sizeof(vs), "%d", o->value_size);
		args[a++] = "--value-size";
		args[a++] = vs;
	}
	if (o->tombstones > 0) {
		snprintf(ts, sizeof(ts), "%d", o->tombstones);
		args[a++] = "--tombstones";
		args[a++] = ts;
	}
	if (o->seed != NULL) {
		args[a++] = "--seed";
		args[a++] = o->seed;
	}
	if (!o->no_expect) {
		h_tmppath(w->expect, sizeof(w->expect), "expect.txt");
		args[a++] = "--expect";
		args[a++] = w->expect;
	}
	if (o->rate != NULL) {
		args[a++] = "--rate";
		args[a++] = o->rate;
	}
	if (o->control)
		args[a++] = "--stdin-control";
	/* the mock cluster lives in k2mc-mock, which must stay; a producer
	 * into a real broker is done once it has produced */
	if (w->backend == H_KAFKA_REAL && o->records > 0 && !o->control) {
		args[a++] = "--exit-after-produce";
		args[a++] = "-q";
	}
	for (int i = 0; w->backend == H_KAFKA_REAL && o->topic_config != NULL &&
			o->topic_config[i] != NULL && a < 94;
	     i++) {
		args[a++] = "--topic-config";
		args[a++] = o->topic_config[i];
	}
	for (int i = 0; o->mock_args != NULL && o->mock_args[i] != NULL && a < 95; i++)
		args[a++] = o->mock_args[i];
	args[a] = NULL;
	rc = h_mock_start(&w->mock, args, o->control,
			  o->mock_timeout_ms > 0 ? o->mock_timeout_ms : 15000);
	cr_assert_eq(rc, 0, "k2mc-mock gave no bootstrap line: %s\nstderr:\n%s", strerror(-rc),
		     world_tail(w->mock.proc.err_path));
	w->bootstrap = w->mock.bootstrap;
}

void world_teardown(void)
{
	/* a broker of its own first, through its launcher, before h_cleanup
	 * removes its directory */
	if (current != NULL && current->own_broker)
		h_kafka_real_stop(&current->real, 0);
	current = NULL;
	h_cleanup();
}

void world_wait_produced(struct world *w, uint64_t want, int timeout_ms)
{
	int rc = h_mock_wait_produced(&w->mock, timeout_ms, &w->produced);

	cr_assert_eq(rc, 0, "production did not finish within %d ms: %s\nk2mc-mock stderr:\n%s",
		     timeout_ms, strerror(-rc), world_tail(w->mock.proc.err_path));
	cr_assert_eq(w->produced, want, "k2mc-mock acknowledged %" PRIu64 " records, asked for %" PRIu64,
		     w->produced, want);
	cr_assert(w->expect[0] == '\0' || h_file_exists(w->expect),
		  "no expect file %s after production", w->expect);
}

void world_command(struct world *w, const char *cmd, char *answer, size_t len, int timeout_ms)
{
	char buf[512];
	int rc = h_mock_command(&w->mock, cmd, buf, sizeof(buf), timeout_ms);

	cr_assert_eq(rc, 0, "k2mc-mock '%s': %s (%s)\n%s", cmd, buf, strerror(-rc),
		     world_tail(w->mock.proc.err_path));
	if (answer != NULL)
		snprintf(answer, len, "%s", buf);
}

/* ---- k2mc ---------------------------------------------------------------------*/

void world_k2mc_start(struct world *w, struct h_proc *k, const struct world_k2mc *o)
{
	const char *args[96];
	int a = 0, rc;

	args[a++] = "-b";
	args[a++] = w->bootstrap;
	args[a++] = "-t";
	args[a++] = o->topic != NULL ? o->topic : w->topic;
	if (o->group != NULL) {
		args[a++] = "-G";
		args[a++] = world_name(o->group);
	}
	args[a++] = "-m";
	args[a++] = o->mc != NULL ? o->mc : w->mc_list;
	if (o->eof)
		args[a++] = "-e";
	for (int pass = 0; pass < 2; pass++) {
		const char *const *x = pass == 0 ? o->args : o->args2;

		/* a dead letter topic is a base name, like the group */
		for (int i = 0; x != NULL && x[i] != NULL && a < 95; i++)
			args[a++] = i > 0 && strcmp(x[i - 1], "--dlq-topic") == 0 ? world_name(x[i])
										   : x[i];
	}
	args[a] = NULL;
	rc = h_k2mc_start(k, o->run, args);
	cr_assert_eq(rc, 0, "cannot start k2mc: %s", strerror(-rc));
}

/* k's wait status once it has ended; past timeout_ms, SIGKILL and fail. */
static int k2mc_wait(struct h_proc *k, int timeout_ms, const char *what)
{
	int status = 0;

	if (h_wait(k->pid, timeout_ms, &status) == -ETIMEDOUT) {
		h_signal(k->pid, SIGKILL);
		h_wait(k->pid, 5000, NULL);
		cr_assert_fail("%s: k2mc still running after %d ms; stderr:\n%s", what, timeout_ms,
			       world_tail(k->err_path));
	}
	return status;
}

int world_k2mc_exit(struct h_proc *k, int timeout_ms, const char *what)
{
	int status = k2mc_wait(k, timeout_ms, what);
	char st[96];

	cr_assert(h_exit_code(status) >= 0, "%s: k2mc ended with %s; stderr:\n%s", what,
		  h_status_str(status, st, sizeof(st)), world_tail(k->err_path));
	return h_exit_code(status);
}

void world_k2mc_finish(struct h_proc *k, int timeout_ms, const char *what, struct h_summary *s)
{
	char st[96];
	int64_t t0 = h_now_ms();
	int status = k2mc_wait(k, timeout_ms, what), rc;

	cr_assert_eq(h_exit_code(status), 0, "%s: k2mc ended with %s after %.1fs; stderr:\n%s",
		     what, h_status_str(status, st, sizeof(st)), world_secs_since(t0),
		     world_tail(k->err_path));
	if (s == NULL)
		return;
	rc = h_summary_parse(k->err_path, s);
	cr_assert_eq(rc, 0, "%s: no parsable summary line (%s); stderr:\n%s", what, strerror(-rc),
		     world_tail(k->err_path));
}

void world_assert_counts_add_up(const struct h_summary *s, const char *what)
{
	cr_assert_eq(s->written + s->deleted + s->skipped + s->coalesced, s->consumed,
		     "%s: written %" PRIu64 " + deleted %" PRIu64 " + skipped %" PRIu64
		     " + coalesced %" PRIu64 " != consumed %" PRIu64,
		     what, s->written, s->deleted, s->skipped, s->coalesced, s->consumed);
	cr_assert_eq(s->unwritten, 0, "%s: summary says unwritten %" PRIu64, what, s->unwritten);
}

/* ---- records of the suite's own ------------------------------------------------*/

rd_kafka_t *world_producer(struct world *w, const char *const conf[])
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	char e[512];
	rd_kafka_t *rk;

	cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", w->bootstrap, e, sizeof(e)),
		     RD_KAFKA_CONF_OK, "%s", e);
	cr_assert_eq(rd_kafka_conf_set(c, "enable.idempotence", "true", e, sizeof(e)),
		     RD_KAFKA_CONF_OK, "%s", e);
	for (int i = 0; conf != NULL && conf[i] != NULL; i++) {
		const char *eq = strchr(conf[i], '=');
		char name[128];

		cr_assert(eq != NULL && (size_t)(eq - conf[i]) < sizeof(name), "property '%s'",
			  conf[i]);
		snprintf(name, sizeof(name), "%.*s", (int)(eq - conf[i]), conf[i]);
		cr_assert_eq(rd_kafka_conf_set(c, name, eq + 1, e, sizeof(e)), RD_KAFKA_CONF_OK,
			     "%s", e);
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof(e));
	cr_assert_not_null(rk, "producer: %s", e);
	return rk;
}

void world_producer_close(rd_kafka_t *rk)
{
	cr_assert_eq(rd_kafka_flush(rk, 15000), RD_KAFKA_RESP_ERR_NO_ERROR,
		     "records not delivered in 15 s");
	rd_kafka_destroy(rk);
}

/* ---- checks -------------------------------------------------------------------*/

size_t world_assert_cache(struct world *w, const char *expect, int port, const char *prefix,
			  int exact, const char *what)
{
	struct h_verify v;
	int rc;

	if (expect == NULL)
		expect = w->expect;
	if (port == 0)
		port = w->mc[0].port;
	rc = h_verify_memcached(expect, "127.0.0.1", port, prefix, &v);
	cr_assert_eq(rc, 0, "%s: cache check could not run: %s", what, v.first);
	cr_assert_eq(h_verify_mismatches(&v), 0,
		     "%s: cache differs from %s (%zu S + %zu D keys): %zu missing, %zu with another "
		     "value, %zu deleted but present; first:\n%s",
		     what, expect, v.sets, v.deletes, v.missing, v.wrong, v.present, v.first);
	if (exact)
		cr_assert_eq(v.server_items, (uint64_t)v.sets,
			     "%s: memcached holds %" PRIu64 " items, the expect file has %zu live keys",
			     what, v.server_items, v.sets);
	cr_log_info("%s: cache matches: %zu keys set, %zu deleted", what, v.sets, v.deletes);
	return v.sets;
}

void world_offsets(struct world *w, const char *topic, int parts, const char *group,
		   int64_t *committed, int64_t *end)
{
	char err[256];
	struct h_kafka *k = h_kafka_open(w->bootstrap, world_name(group), err, sizeof(err));
	int rc, n;

	if (topic == NULL)
		topic = w->topic;
	if (parts == 0)
		parts = w->parts;
	cr_assert_not_null(k, "kafka handle: %s", err);
	n = h_kafka_partitions(k, topic, 5000);
	cr_assert_eq(n, parts, "topic %s has %d partitions, expected %d", topic, n, parts);
	if (end != NULL) {
		rc = h_kafka_end_offsets(k, topic, n, end, 5000);
		cr_assert_eq(rc, 0, "end offsets of %s: %s", topic, strerror(-rc));
	}
	if (committed != NULL) {
		rc = h_kafka_committed(k, topic, n, committed, 5000);
		cr_assert_eq(rc, 0, "committed offsets of %s: %s", group, strerror(-rc));
	}
	h_kafka_close(k);
}

int64_t world_assert_committed_at_end(struct world *w, const char *topic, int parts,
				      const char *group, const char *what)
{
	int64_t committed[H_MAX_PARTS], end[H_MAX_PARTS];
	char diff[512];
	int d;

	if (parts == 0)
		parts = w->parts;
	world_offsets(w, topic, parts, group, committed, end);
	d = h_offsets_diff(committed, end, parts, diff, sizeof(diff));
	cr_assert_eq(d, 0, "%s: %d of %d partitions committed != end offset (committed != end): %s",
		     what, d, parts, diff);
	return h_offsets_sum(end, parts);
}

void world_wait_committed_at_end(struct world *w, const char *topic, int parts,
				 const char *group, struct h_proc *const procs[], int nprocs,
				 int timeout_ms, const char *what)
{
	int64_t committed[H_MAX_PARTS], end[H_MAX_PARTS], deadline = h_now_ms() + timeout_ms;
	char err[256], diff[512] = "", st[96];
	struct h_kafka *k = h_kafka_open(w->bootstrap, world_name(group), err, sizeof(err));
	int status;

	if (topic == NULL)
		topic = w->topic;
	if (parts == 0)
		parts = w->parts;
	cr_assert_not_null(k, "kafka handle: %s", err);
	for (;;) {
		for (int i = 0; i < nprocs; i++)
			if (procs[i] != NULL && h_exited(procs[i]->pid, &status) == 1)
				cr_assert_fail("%s: k2mc ended (%s) before committing the end; "
					       "stderr:\n%s",
					       what, h_status_str(status, st, sizeof(st)),
					       world_tail(procs[i]->err_path));
		if (h_kafka_end_offsets(k, topic, parts, end, 2000) == 0 &&
		    h_kafka_committed(k, topic, parts, committed, 2000) == 0 &&
		    h_offsets_diff(committed, end, parts, diff, sizeof(diff)) == 0)
			break;
		if (h_now_ms() >= deadline) {
			h_kafka_close(k);
			cr_assert_fail("%s: group %s has not committed the end within %d ms: %s",
				       what, group, timeout_ms, diff);
		}
		usleep(100 * 1000);
	}
	h_kafka_close(k);
}

double world_wait_first_commit(struct world *w, struct h_proc *k, const char *group,
			       int timeout_ms)
{
	char err[256], st[96];
	struct h_kafka *kh = h_kafka_open(w->bootstrap, world_name(group), err, sizeof(err));
	int64_t t0 = h_now_ms(), off[H_MAX_PARTS];
	int status;

	cr_assert_not_null(kh, "kafka handle: %s", err);
	for (;;) {
		if (h_exited(k->pid, &status) == 1)
			cr_assert_fail("k2mc ended (%s) before committing anything; stderr:\n%s",
				       h_status_str(status, st, sizeof(st)), world_tail(k->err_path));
		if (h_kafka_committed(kh, w->topic, w->parts, off, 2000) == 0) {
			for (int p = 0; p < w->parts; p++) {
				if (off[p] > 0) {
					h_kafka_close(kh);
					return world_secs_since(t0);
				}
			}
		}
		if (h_now_ms() - t0 >= timeout_ms)
			break;
		usleep(100 * 1000);
	}
	h_kafka_close(kh);
	cr_assert_fail("group %s committed nothing within %d ms; k2mc stderr:\n%s", group,
		       timeout_ms, world_tail(k->err_path));
	return -1;
}

/* ---- memcached ------------------------------------------------------------------*/

int64_t world_mc_stat(int port, const char *what, const char *name)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 5, 0 };
	char req[64], buf[16384], pat[80], *p;
	size_t len = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int64_t v = -1;
	ssize_t n;

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(req, sizeof(req), "stats%s%s\r\n", what ? " " : "", what ? what : "");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return -1;
	}
	while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0) {
		len += (size_t)n;
		buf[len] = '\0';
		if (strstr(buf, "END\r\n") != NULL)
			break;
	}
	close(fd);
	buf[len] = '\0';
	snprintf(pat, sizeof(pat), "STAT %s ", name);
	p = strstr(buf, pat);
	if (p != NULL)
		v = strtoll(p + strlen(pat), NULL, 10);
	return v;
}

char *world_mc_get(int port, const char *key, size_t klen, size_t *vlen)
{
	memcached_st *memc = memcached_create(NULL);
	memcached_return_t rc;
	uint32_t flags;
	size_t len = 0;
	char *v;

	memcached_server_add(memc, "127.0.0.1", (in_port_t)port);
	v = memcached_get(memc, key, klen, &len, &flags, &rc);
	memcached_free(memc);
	if (vlen != NULL)
		*vlen = len;
	return v;
}

/* ---- HTTP ---------------------------------------------------------------------*/

char *world_http_get(int port, const char *path, int *status, char *type, size_t typelen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 5, 0 };
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap + 1), *body, *ct, req[256];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ssize_t n;
	int st = -1;

	if (status == NULL)
		status = &st;
	*status = -1;
	if (fd < 0 || buf == NULL)
		goto fail;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		goto fail;
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		goto fail;
	while ((n = read(fd, buf + len, cap - len)) > 0) {
		len += (size_t)n;
		if (len == cap) {
			char *nb = realloc(buf, cap * 2 + 1);

			if (nb == NULL)
				goto fail;
			buf = nb;
			cap *= 2;
		}
	}
	close(fd);
	fd = -1;
	buf[len] = '\0';
	body = strstr(buf, "\r\n\r\n");
	if (body == NULL || sscanf(buf, "HTTP/1.%*d %d", status) != 1)
		goto fail;
	*body = '\0';
	if (type != NULL) {
		ct = strcasestr(buf, "\r\nContent-Type: ");
		snprintf(type, typelen, "%.*s", ct ? (int)strcspn(ct + 16, "\r") : 0,
			 ct ? ct + 16 : "");
	}
	memmove(buf, body + 4, strlen(body + 4) + 1);
	return buf;
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	*status = -1;
	return NULL;
}

/* ---- the dead letters -----------------------------------------------------------*/

static void copy_header(const rd_kafka_headers_t *h, const char *name, char *out, size_t len)
{
	const void *v;
	size_t n;

	out[0] = '\0';
	if (h != NULL && rd_kafka_header_get_last(h, name, &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR)
		snprintf(out, len, "%.*s", (int)n, (const char *)v);
}

int world_read_dlq(struct world *w, const char *topic, struct world_letter *out, int max)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	int64_t deadline = h_now_ms() + 15000;
	char e[512], num[32];
	rd_kafka_t *rk;
	int n = 0;

	rd_kafka_conf_set(conf, "bootstrap.servers", w->bootstrap, e, sizeof(e));
	rd_kafka_conf_set(conf, "group.id", "world-dlq-reader", e, sizeof(e));
	rd_kafka_conf_set(conf, "enable.partition.eof", "true", e, sizeof(e));
	rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof(e));
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
	cr_assert_not_null(rk, "dead letter reader: %s", e);
	rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
	cr_assert_eq(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(l);
	while (h_now_ms() < deadline) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
		rd_kafka_headers_t *h = NULL;

		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			rd_kafka_message_destroy(m);
			break;
		}
		cr_assert_eq(m->err, RD_KAFKA_RESP_ERR_NO_ERROR, "reading %s: %s", topic,
			     rd_kafka_message_errstr(m));
		cr_assert_lt(n, max, "more than %d dead letters", max);
		out[n].key = m->key ? strndup(m->key, m->key_len) : NULL;
		out[n].klen = m->key_len;
		out[n].val = m->payload ? strndup(m->payload, m->len) : NULL;
		out[n].vlen = m->len;
		rd_kafka_message_headers(m, &h);
		copy_header(h, "k2mc.error.reason", out[n].reason, sizeof(out[n].reason));
		copy_header(h, "k2mc.error.topic", out[n].topic, sizeof(out[n].topic));
		copy_header(h, "k2mc.error.message", out[n].message, sizeof(out[n].message));
		copy_header(h, "trace", out[n].trace, sizeof(out[n].trace));
		copy_header(h, "k2mc.error.partition", num, sizeof(num));
		out[n].partition = num[0] ? strtoll(num, NULL, 10) : -1;
		copy_header(h, "k2mc.error.offset", num, sizeof(num));
		out[n].offset = num[0] ? strtoll(num, NULL, 10) : -1;
		n++;
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return n;
}

void world_letters_free(struct world_letter *l, int n)
{
	for (int i = 0; i < n; i++) {
		free(l[i].key);
		free(l[i].val);
		l[i].key = l[i].val = NULL;
	}
}
