/* Metrics endpoint; see metrics.h. The main thread renders a snapshot into
 * text and swaps it in under `lock` about once a second; the HTTP thread
 * copies the current text into its response under the same lock. */
#include "core/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "workers/mapping.h"
#include "workers/refill.h" /* the refill lag rows */
#include "workers/writer.h" /* enum k2mc_server_state */

/* What one client may hold (issue 23, item 4: slowloris). libmicrohttpd's
 * own timeout is an idle timeout, which a client sending a byte every few
 * seconds never reaches; so each connection gets a deadline for its whole
 * request, from its accept or the end of its previous response to the end of
 * its next one, enforced by the serving thread (sweep). The connection limit
 * is large enough that clients slower than that deadline cannot fill it (at
 * most CONN_MAX, and never more than an eighth of RLIMIT_NOFILE: the
 * pipeline's connections come first), and one address holds at most half of
 * it, so a probe from anywhere else always finds a free slot. Headers live in
 * the connection's memory pool, which CONN_MEMORY bounds (a request past it is
 * answered 431). */
enum {
	CONN_MAX = 128,
	CONN_MIN = 8,
	REQUEST_DEADLINE_MS = 5000,
	CONN_MEMORY = 16 * 1024,
	SERVE_TICK_MS = 100, /* how late a deadline or a stop is noticed */
	LOG_WINDOW_MS = 10000, /* libmicrohttpd's messages: one per window */
};

/* A connection being served: the serving thread's alone (libmicrohttpd's
 * callbacks run on it). */
struct conn_slot {
	struct MHD_Connection *conn; /* NULL: free */
	int64_t since_ms;            /* accept, or the end of its last response */
	int cut;                     /* shut down by the sweep, close pending */
};

struct k2mc_metrics {
	struct MHD_Daemon *d;
	int stale_after_ms;
	pthread_t thread;
	/* written by stop (main thread), read by the serving thread: relaxed
	 * is enough, the join orders everything after it */
	_Atomic int stopping;
	struct conn_slot conns[CONN_MAX]; /* serving thread only */
	unsigned conn_limit;
	/* log_lock guards the rate limit of libmicrohttpd's messages, which
	 * come from the serving thread and, at start and stop, the main one */
	pthread_mutex_t log_lock;
	int64_t log_window_ms;
	unsigned long log_suppressed;
	/* lock guards everything below: written by the main thread
	 * (publish), read by the HTTP thread (handler) */
	pthread_mutex_t lock;
	char *text;
	size_t len;
	int ready;
	char why[300];
	int64_t published_ms;
};

/* ---- rendering -------------------------------------------------------------- */

/* Prometheus label values escape \, " and newline. */
static void label(FILE *out, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(out, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
	}
}

static void head(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void topic_labels(FILE *out, const char *name, const char *topic, int32_t partition)
{
	fprintf(out, "%s{topic=\"", name);
	label(out, topic);
	fprintf(out, "\",partition=\"%d\"}", partition);
}

static void server_labels(FILE *out, const char *name, const struct k2mc_snapshot *s, size_t i)
{
	char srv[K2MC_SERVER_LABEL_MAX];

	k2mc_server_label(&s->cfg->servers[i], srv, sizeof(srv));
	fprintf(out, "%s{server=\"", name);
	label(out, srv);
	fputc('"', out);
}

/* One labelled sample's number, as its family's type prints it. */
static void sample_value(FILE *out, const struct k2mc_snapshot *s, size_t f, size_t i, size_t j)
{
	const struct k2mc_stat_def *d = &k2mc_stat_defs[f];

	if (d->type == K2MC_RATIO)
		fprintf(out, " %.4f\n", k2mc_stat_ratio(s, f, i));
	else if (d->type == K2MC_COUNTER)
		fprintf(out, " %llu\n", (unsigned long long)k2mc_stat_sample(s, f, i, j));
	else
		fprintf(out, " %lld\n", (long long)k2mc_stat_sample(s, f, i, j));
}

static void latency_histogram(FILE *out, const char *name, const struct k2mc_snapshot *s)
{
	for (int k = 0; k < K2MC_LAT_NBOUNDS; k++)
		fprintf(out, "%s_bucket{le=\"%g\"} %llu\n", name, k2mc_lat_bounds_ms[k] / 1000.0,
			(unsigned long long)s->lat_le[k]);
	fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.3f\n%s_count %llu\n", name,
		(unsigned long long)s->lat_count, name, s->lat_sum_s, name,
		(unsigned long long)s->lat_count);
}

/* A family's samples: which there are and their labels, as its `by` says
 * (counters.h); their numbers, from the table (sample_value). */
static void render_row(FILE *out, const struct k2mc_snapshot *s, size_t f)
{
	static const char *const types[] = { [K2MC_COUNTER] = "counter",
					     [K2MC_GAUGE] = "gauge",
					     [K2MC_RATIO] = "gauge",
					     [K2MC_HISTOGRAM] = "histogram" };
	const struct k2mc_stat_def *d = &k2mc_stat_defs[f];

	head(out, d->metric, types[d->type], d->help);
	switch (d->by) {
	case K2MC_BY_NONE:
		fprintf(out, "%s %llu\n", d->metric, (unsigned long long)k2mc_stat_value(s, f));
		break;
	case K2MC_BY_PARTITION:
		/* zeros too: the series exists before the first count */
		for (size_t i = 0; i < s->nparts; i++) {
			topic_labels(out, d->metric, s->parts[i].topic, s->parts[i].partition);
			sample_value(out, s, f, i, 0);
		}
		break;
	case K2MC_BY_PARTITION_HELD:
		for (size_t i = 0; i < s->nparts; i++) {
			if (!s->parts[i].assigned || k2mc_stat_sample(s, f, i, 0) < 0)
				continue;
			topic_labels(out, d->metric, s->parts[i].topic, s->parts[i].partition);
			sample_value(out, s, f, i, 0);
		}
		break;
	case K2MC_BY_REASON:
		for (size_t r = 1; r < K2MC_MAP_NREASONS; r++) {
			fprintf(out, "%s{reason=\"%s\"}", d->metric,
				k2mc_map_reason_name((enum k2mc_map_reason)r));
			sample_value(out, s, f, r, 0);
		}
		break;
	case K2MC_BY_SERVER_KIND:
		for (size_t i = 0; i < (size_t)s->nservers && i < K2MC_MAX_SERVERS; i++) {
			for (size_t e = 0; e < K2MC_MC_NERRS; e++) {
				server_labels(out, d->metric, s, i);
				fprintf(out, ",kind=\"%s\"}", k2mc_mc_error_name((enum k2mc_mc_error)e));
				sample_value(out, s, f, i, e);
			}
		}
		break;
	case K2MC_BY_SERVER:
		for (size_t i = 0; i < (size_t)s->nservers; i++) {
			server_labels(out, d->metric, s, i);
			fputc('}', out);
			sample_value(out, s, f, i, 0);
		}
		break;
	case K2MC_BY_REFILL_PARTITION:
		for (size_t i = 0; i < s->nrefill_lag; i++) {
			topic_labels(out, d->metric, s->refill_lag[i].topic, s->refill_lag[i].partition);
			sample_value(out, s, f, i, 0);
		}
		break;
	case K2MC_BY_WRITER:
		for (size_t i = 0; i < (size_t)s->nwriters; i++) {
			fprintf(out, "%s{writer=\"%zu\"}", d->metric, i);
			sample_value(out, s, f, i, 0);
		}
		break;
	case K2MC_BY_LATENCY:
		latency_histogram(out, d->metric, s);
		break;
	}
}

/* ---- process metrics ---------------------------------------------------------
 * Under the names and meanings Prometheus' client libraries give them (the Go
 * and Python clients read the same /proc files), so that dashboards and alerts
 * written for any exporter work unchanged. Read when the text is rendered, on
 * the main thread about once a second: never on a hot path. */

static void process_metrics(FILE *out)
{
	char buf[1024], *p;
	unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, btime = 0;
	long long rss = 0;
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct rlimit rl;
	int ok = 0, nfds = -1;
	FILE *f = fopen("/proc/self/stat", "re");
	DIR *d;

	if (f != NULL) {
		/* after "(comm)", which may hold spaces and parentheses: fields
		 * 3.. (state), utime 14, stime 15, starttime 22, vsize 23, rss 24 */
		if (fgets(buf, sizeof(buf), f) != NULL && (p = strrchr(buf, ')')) != NULL)
			ok = sscanf(p + 2,
				    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d "
				    "%*d %*d %*d %llu %llu %lld",
				    &utime, &stime, &start, &vsize, &rss) == 5;
		fclose(f);
	}
	f = fopen("/proc/stat", "re");
	if (f != NULL) {
		while (fgets(buf, sizeof(buf), f) != NULL)
			if (sscanf(buf, "btime %llu", &btime) == 1)
				break;
		fclose(f);
	}
	d = opendir("/proc/self/fd");
	if (d != NULL) {
		struct dirent *e;

		nfds = 0;
		while ((e = readdir(d)) != NULL)
			if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
				nfds++;
		closedir(d);
	}
	if (ok && tck > 0) {
		head(out, "process_cpu_seconds_total", "counter",
		     "Total user and system CPU time spent in seconds.");
		fprintf(out, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tck);
		head(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
		fprintf(out, "process_virtual_memory_bytes %llu\n", vsize);
		head(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
		fprintf(out, "process_resident_memory_bytes %lld\n", rss * (long long)page);
		if (btime > 0) {
			head(out, "process_start_time_seconds", "gauge",
			     "Start time of the process since unix epoch in seconds.");
			fprintf(out, "process_start_time_seconds %.2f\n",
				(double)btime + (double)start / (double)tck);
		}
	}
	if (nfds >= 0) {
		head(out, "process_open_fds", "gauge", "Number of open file descriptors.");
		fprintf(out, "process_open_fds %d\n", nfds);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		head(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
		if (rl.rlim_cur == RLIM_INFINITY)
			fputs("process_max_fds +Inf\n", out);
		else
			fprintf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
	}
}

/* The dialects mcconn.c speaks (mcconn.h): meta for memcached >= 1.6.10,
 * the classic text protocol for every other server and proxy. */
#define K2MC_MC_DIALECTS "meta,text"

static void build_info(FILE *out)
{
	head(out, "k2mc_build_info", "gauge",
	     "1, labelled with the k2mc version, the librdkafka and libmemcached versions it "
	     "runs with, and the Memcached dialects it speaks.");
	fputs("k2mc_build_info{version=\"", out);
	label(out, k2mc_config_version());
	fputs("\",librdkafka=\"", out);
	label(out, rd_kafka_version_str());
	fputs("\",libmemcached=\"", out);
	label(out, memcached_lib_version());
	fputs("\",memcached_dialects=\"" K2MC_MC_DIALECTS "\"} 1\n", out);
}

void k2mc_metrics_render(FILE *out, const struct k2mc_snapshot *s)
{
	/* the counter table first (the numbers the stats line and
	 * --stats-json show too), then the families only /metrics has */
	for (size_t f = 0; f < k2mc_nfamilies; f++)
		render_row(out, s, f);
	build_info(out);
	process_metrics(out);
}

int k2mc_metrics_ready(const struct k2mc_snapshot *s, char *why, size_t len)
{
	if (s->assigned == 0) {
		snprintf(why, len, "no partitions assigned");
		return 0;
	}
	for (int i = 0; i < s->nservers; i++) {
		if (!s->server_ok[i]) {
			/* out of memory: it answers, and stores nothing */
			char name[K2MC_SERVER_LABEL_MAX];

			k2mc_server_label(&s->cfg->servers[i], name, sizeof(name));
			snprintf(why, len, "memcached %s %s", name,
				 s->server_state[i] == K2MC_SERVER_OOM ? "out of memory"
								       : "not answering");
			return 0;
		}
	}
	/* A server being refilled answers and takes the live path's writes;
	 * only keys written before its loss are missing until the refill ends.
	 * Ready, but said (--refill-ready yes, the default), or not ready for
	 * readers that must not see those misses (--refill-ready no). */
	for (int i = 0; i < s->nservers && i < 64; i++) {
		if ((s->refill_active_mask >> i) & 1) {
			char name[K2MC_SERVER_LABEL_MAX];

			k2mc_server_label(&s->cfg->servers[i], name, sizeof(name));
			/* not ready: the answer adds "not ready: " */
			snprintf(why, len, "%srefilling memcached %s",
				 s->cfg->refill_ready ? "ready: " : "", name);
			return s->cfg->refill_ready;
		}
	}
	snprintf(why, len, "ready");
	return 1;
}

void k2mc_metrics_publish(struct k2mc_metrics *m, const struct k2mc_snapshot *s)
{
	char *text = NULL, *old;
	size_t len = 0;
	char why[sizeof(m->why)];
	int ready = k2mc_metrics_ready(s, why, sizeof(why));
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		return; /* keep serving the previous text */
	k2mc_metrics_render(f, s);
	if (fclose(f) != 0) {
		free(text);
		return;
	}
	pthread_mutex_lock(&m->lock);
	old = m->text;
	m->text = text;
	m->len = len;
	m->ready = ready;
	memcpy(m->why, why, sizeof(why));
	m->published_ms = k2mc_now_ms();
	pthread_mutex_unlock(&m->lock);
	free(old);
}

/* ---- HTTP ------------------------------------------------------------------------ */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
			     const char *body, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body,
								 MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result find_ready(void *cls, enum MHD_ValueKind kind, const char *key,
				  const char *value)
{
	(void)kind;
	(void)value;
	if (strcmp(key, "ready") == 0) {
		*(int *)cls = 1;
		return MHD_NO;
	}
	return MHD_YES;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **req)
{
	static const char text_type[] = "text/plain; charset=utf-8";
	struct k2mc_metrics *m = cls;
	char msg[400];
	enum MHD_Result ret;
	int want_ready = 0;

	(void)version;
	(void)upload;
	(void)req;
	if (*upload_len != 0) {
		*upload_len = 0; /* a body we ignore */
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text_type, "GET only\n", 9);
	if (strcmp(url, "/metrics") == 0) {
		pthread_mutex_lock(&m->lock);
		ret = reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
			    m->text ? m->text : "", m->len);
		pthread_mutex_unlock(&m->lock);
		return ret;
	}
	if (strcmp(url, "/healthz") == 0)
		MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, find_ready, &want_ready);
	else if (strcmp(url, "/readyz") == 0)
		want_ready = 1;
	else
		return reply(conn, MHD_HTTP_NOT_FOUND, text_type,
			     "not found; try /metrics, /healthz, /readyz\n", 44);
	pthread_mutex_lock(&m->lock);
	if (k2mc_now_ms() - m->published_ms > m->stale_after_ms) {
		snprintf(msg, sizeof(msg), "stalled: no update for %lld ms\n",
			 (long long)(k2mc_now_ms() - m->published_ms));
		ret = reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text_type, msg, strlen(msg));
	} else if (!want_ready) {
		ret = reply(conn, MHD_HTTP_OK, text_type, "ok\n", 3);
	} else {
		snprintf(msg, sizeof(msg), "%s%s\n", m->ready ? "" : "not ready: ", m->why);
		ret = reply(conn, m->ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text_type,
			    msg, strlen(msg));
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* libmicrohttpd's messages, one per LOG_WINDOW_MS: a flood of refused or
 * broken connections must not become a flood of log lines. The first of a
 * window is logged; the rest are counted and the count is logged with the
 * next one that is (or at the stop). */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct k2mc_metrics *m = cls;
	char msg[512];
	unsigned long suppressed;
	int64_t now = k2mc_now_ms();
	size_t n;

	pthread_mutex_lock(&m->log_lock);
	if (m->log_window_ms != 0 && now - m->log_window_ms < LOG_WINDOW_MS) {
		m->log_suppressed++;
		pthread_mutex_unlock(&m->log_lock);
		return;
	}
	m->log_window_ms = now;
	suppressed = m->log_suppressed;
	m->log_suppressed = 0;
	pthread_mutex_unlock(&m->log_lock);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	if (suppressed > 0)
		k2mc_warn("metrics endpoint: %s (and %lu more messages in the %d s before, not "
			  "logged)",
			  msg, suppressed, LOG_WINDOW_MS / 1000);
	else
		k2mc_warn("metrics endpoint: %s", msg);
}

/* ---- the request deadline (serving thread) ----------------------------------------- */

static void on_connection(void *cls, struct MHD_Connection *conn, void **ctx,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct k2mc_metrics *m = cls;
	struct conn_slot *c = *ctx;

	if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (c != NULL)
			memset(c, 0, sizeof(*c));
		return;
	}
	/* libmicrohttpd admits at most conn_limit: a slot is free */
	for (unsigned i = 0; i < m->conn_limit; i++) {
		if (m->conns[i].conn == NULL) {
			m->conns[i] = (struct conn_slot){ .conn = conn, .since_ms = k2mc_now_ms() };
			*ctx = &m->conns[i];
			return;
		}
	}
}

/* A response sent: the next request's deadline counts from now. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req,
			 enum MHD_RequestTerminationCode toe)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn_slot *c = ci != NULL ? ci->socket_context : NULL;

	(void)cls;
	(void)req;
	(void)toe;
	if (c != NULL)
		c->since_ms = k2mc_now_ms();
}

/* Cuts every connection past its deadline. shutdown(), not close(): the
 * descriptor stays libmicrohttpd's, which sees the end of the stream on its
 * next round and closes the connection itself (on_connection CLOSED). */
static void sweep(struct k2mc_metrics *m)
{
	int64_t now = k2mc_now_ms();

	for (unsigned i = 0; i < m->conn_limit; i++) {
		struct conn_slot *c = &m->conns[i];
		const union MHD_ConnectionInfo *ci;

		if (c->conn == NULL || c->cut || now - c->since_ms < REQUEST_DEADLINE_MS)
			continue;
		ci = MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci != NULL)
			shutdown(ci->connect_fd, SHUT_RDWR);
		c->cut = 1;
	}
}

/* The messages a window held back, once it is over and none came since. */
static void log_flush(struct k2mc_metrics *m, int64_t now)
{
	unsigned long n = 0;

	pthread_mutex_lock(&m->log_lock);
	if (m->log_suppressed > 0 && now - m->log_window_ms >= LOG_WINDOW_MS) {
		n = m->log_suppressed;
		m->log_suppressed = 0;
	}
	pthread_mutex_unlock(&m->log_lock);
	if (n > 0)
		k2mc_warn("metrics endpoint: %lu more messages in the %d s before, not logged", n,
			  LOG_WINDOW_MS / 1000);
}

static void *serve(void *arg)
{
	struct k2mc_metrics *m = arg;

	pthread_setname_np(pthread_self(), "k2mc-metrics");
	while (!atomic_load_explicit(&m->stopping, memory_order_relaxed)) {
		MHD_run_wait(m->d, SERVE_TICK_MS);
		sweep(m);
		log_flush(m, k2mc_now_ms());
	}
	return NULL;
}

/* Our own listening socket, so that a bind failure has its errno. */
static int listen_on(const char *host, int port, int *family, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL, *a;
	char ports[16];
	int fd = -1, rc, e = 0;

	snprintf(ports, sizeof(ports), "%d", port);
	rc = getaddrinfo(host, ports, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "--metrics-addr %s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (a = res; a != NULL; a = a->ai_next) {
		int one = 1;

		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    a->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 64) == 0) {
			*family = a->ai_family;
			break;
		}
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(err, errlen, "--metrics-addr %s port %d: %s", host, port, strerror(e));
	return fd;
}

/* The connection limit: CONN_MAX, or an eighth of the descriptors this
 * process may open if that is less (at least CONN_MIN). */
static unsigned conn_limit(void)
{
	struct rlimit rl;
	rlim_t n = CONN_MAX;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur / 8 < n)
		n = rl.rlim_cur / 8;
	return n < CONN_MIN ? CONN_MIN : (unsigned)n;
}

struct k2mc_metrics *k2mc_metrics_start(const char *host, int port, int stale_after_ms,
					char *err, size_t errlen)
{
	struct k2mc_metrics *m = calloc(1, sizeof(*m));
	int family = AF_INET, fd;
	/* our own thread runs the loop (serve): it also enforces the deadline */
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;

	if (m == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fd = listen_on(host, port, &family, err, errlen);
	if (fd < 0) {
		free(m);
		return NULL;
	}
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->log_lock, NULL);
	m->stale_after_ms = stale_after_ms;
	m->published_ms = k2mc_now_ms();
	m->conn_limit = conn_limit();
	snprintf(m->why, sizeof(m->why), "starting");
	if (family == AF_INET6)
		flags |= MHD_USE_IPv6;
	m->d = MHD_start_daemon(
		flags, 0, NULL, NULL, handle, m, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, m,
		MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, m->conn_limit,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, m->conn_limit / 2,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(REQUEST_DEADLINE_MS / 1000),
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, m, MHD_OPTION_NOTIFY_COMPLETED,
		on_completed, m, MHD_OPTION_END);
	if (m->d == NULL) {
		snprintf(err, errlen, "--metrics-addr %s:%d: cannot start the HTTP server", host,
			 port);
		close(fd);
		goto fail;
	}
	if (pthread_create(&m->thread, NULL, serve, m) != 0) {
		snprintf(err, errlen, "--metrics-addr %s:%d: cannot start its thread", host, port);
		MHD_stop_daemon(m->d);
		goto fail;
	}
	return m;
fail:
	pthread_mutex_destroy(&m->log_lock);
	pthread_mutex_destroy(&m->lock);
	free(m);
	return NULL;
}

void k2mc_metrics_stop(struct k2mc_metrics *m)
{
	if (m == NULL)
		return;
	atomic_store_explicit(&m->stopping, 1, memory_order_relaxed);
	pthread_join(m->thread, NULL);
	/* closes the connections and the listening socket */
	MHD_stop_daemon(m->d);
	log_flush(m, INT64_MAX / 2);
	pthread_mutex_destroy(&m->log_lock);
	pthread_mutex_destroy(&m->lock);
	free(m->text);
	free(m);
}
