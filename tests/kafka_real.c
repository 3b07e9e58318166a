/* The real Kafka backend of the integration harness; see kafka_real.h.
 * Talks to tests/kafka/kafka-broker over its --control stdin and stdout
 * lines, and to the brokers with librdkafka's admin and consumer APIs.
 * Every wait is a poll against a deadline. */
#include "kafka_real.h"

#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KR_DEFAULT_TIMEOUT_MS 120000
/* the launcher's own stop: SIGTERM, 10 s, SIGKILL, per broker in parallel */
#define KR_QUIT_TIMEOUT_MS 20000

__attribute__((format(printf, 3, 4))) static void fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;

	if (buf == NULL || len == 0)
		return;
	va_start(ap, f);
	vsnprintf(buf, len, f, ap);
	va_end(ap);
}

/* ---- the launcher ------------------------------------------------------------*/

/* Copies the value of the first line "key=..." of text (at or after the
 * start of a line) into v; 0, or -ENOENT. */
static int line_value(const char *text, const char *key, char *v, size_t len)
{
	size_t kl = strlen(key);

	for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
			const char *e = strchr(p + kl + 1, '\n');

			fmt(v, len, "%.*s", (int)(e ? e - (p + kl + 1) : (long)strlen(p + kl + 1)),
			    p + kl + 1);
			return 0;
		}
	}
	return -ENOENT;
}

/* Parses the launcher's lines up to "ready" into kr. */
static int parse_ready(struct h_kafka_real *kr)
{
	char *b = h_file_read(kr->proc.out_path, NULL), v[64];
	int rc = -EPROTO;

	if (b == NULL)
		return -EIO;
	kr->nbrokers = 0;
	for (char *p = b; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		int pid, node, port;

		if (sscanf(p, "pid=%d node=%d port=%d", &pid, &node, &port) == 3 && node >= 1 &&
		    node <= H_KAFKA_REAL_MAX_BROKERS) {
			kr->pid[node - 1] = (pid_t)pid;
			kr->port[node - 1] = port;
			if (node > kr->nbrokers)
				kr->nbrokers = node;
		}
	}
	if (kr->nbrokers == 0 || line_value(b, "bootstrap", kr->bootstrap, sizeof(kr->bootstrap)) ||
	    line_value(b, "dir", kr->dir, sizeof(kr->dir)) ||
	    line_value(b, "version", kr->version, sizeof(kr->version)))
		goto out;
	if (line_value(b, "start_ms", v, sizeof(v)) == 0)
		kr->start_ms = strtoll(v, NULL, 10);
	if (line_value(b, "format_ms", v, sizeof(v)) == 0)
		kr->format_ms = strtoll(v, NULL, 10);
	/* absent without --sasl-ssl: left empty */
	line_value(b, "sasl_bootstrap", kr->sasl_bootstrap, sizeof(kr->sasl_bootstrap));
	line_value(b, "sasl_plaintext_bootstrap", kr->sasl_plain_bootstrap,
		   sizeof(kr->sasl_plain_bootstrap));
	line_value(b, "sasl_user", kr->sasl_user, sizeof(kr->sasl_user));
	line_value(b, "sasl_password", kr->sasl_password, sizeof(kr->sasl_password));
	line_value(b, "ca", kr->ca, sizeof(kr->ca));
	rc = 0;
out:
	free(b);
	return rc;
}

int h_kafka_real_start(struct h_kafka_real *kr, const struct h_kafka_real_opts *o)
{
	static const struct h_kafka_real_opts dflt = { 0 };
	static unsigned seq;
	struct h_spawn_opts so = { .stdin_pipe = 1 };
	const char *argv[48];
	char dirname[32], tmo[16], nb[16];
	int64_t t0 = h_now_ms();
	int n = 0, rc, timeout_ms;

	if (o == NULL)
		o = &dflt;
	memset(kr, 0, sizeof(*kr));
	kr->proc.pid = -1;
	timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : KR_DEFAULT_TIMEOUT_MS;
	snprintf(dirname, sizeof(dirname), "kafka-%u", ++seq);
	snprintf(tmo, sizeof(tmo), "%d", (timeout_ms + 999) / 1000);
	snprintf(nb, sizeof(nb), "%d", o->brokers > 1 ? o->brokers : 1);
	h_tmppath(kr->dir, sizeof(kr->dir), dirname);
	argv[n++] = h_bin("K2MC_KAFKA_LAUNCHER", "tests/kafka/kafka-broker");
	argv[n++] = "--control";
	argv[n++] = "--dir";
	argv[n++] = kr->dir;
	argv[n++] = "--brokers";
	argv[n++] = nb;
	argv[n++] = "--timeout";
	argv[n++] = tmo;
	if (o->version != NULL) {
		argv[n++] = "--version";
		argv[n++] = o->version;
	}
	if (o->sasl_ssl)
		argv[n++] = "--sasl-ssl";
	for (int i = 0; o->config != NULL && o->config[i] != NULL && n < 46; i += 1) {
		argv[n++] = "--config";
		argv[n++] = o->config[i];
	}
	argv[n] = NULL;
	rc = h_spawn(&kr->proc, "kafka", argv, &so);
	if (rc != 0)
		return rc;
	/* the launcher's own deadline covers the brokers; ours adds the
	 * formatting (a JVM per node) and certificates */
	rc = h_wait_line(kr->proc.out_path, "^ready$", &kr->out_off, kr->proc.pid,
			 timeout_ms + 60000, NULL, 0);
	if (rc != 0) {
		fprintf(stderr, "harness: kafka launcher not ready (%s); its stderr ends:\n%s\n",
			strerror(-rc), h_tail_of(kr->proc.err_path, 30));
		return rc;
	}
	rc = parse_ready(kr);
	if (rc != 0)
		return rc;
	kr->total_ms = h_now_ms() - t0;
	fprintf(stderr,
		"harness: kafka %s (%d broker%s%s) ready in %" PRId64 " ms (format %" PRId64
		" ms, %" PRId64 " ms in all) at %s, pid %d, dir %s\n",
		kr->version, kr->nbrokers, kr->nbrokers > 1 ? "s" : "", o->sasl_ssl ? ", SASL_SSL" : "",
		kr->start_ms, kr->format_ms, kr->total_ms, kr->bootstrap, (int)kr->pid[0], kr->dir);
	return 0;
}

/* One --control command and its answer line ("ok VERB ..." or "error
 * VERB ..."), copied to answer. 0 for ok, -EIO for error. */
static int command(struct h_kafka_real *kr, const char *cmd, const char *verb, char *answer,
		   size_t len, int timeout_ms)
{
	char line[512], re[64];
	size_t n = strlen(cmd);
	int rc;

	if (kr->proc.ctl_fd < 0 || kr->proc.pid <= 0)
		return -ENOTCONN;
	if (write(kr->proc.ctl_fd, cmd, n) != (ssize_t)n || write(kr->proc.ctl_fd, "\n", 1) != 1)
		return -errno;
	snprintf(re, sizeof(re), "^(ok|error) %s", verb);
	rc = h_wait_line(kr->proc.out_path, re, &kr->out_off, kr->proc.pid, timeout_ms, line,
			 sizeof(line));
	if (rc != 0)
		return rc;
	fmt(answer, len, "%s", line);
	return strncmp(line, "ok", 2) == 0 ? 0 : -EIO;
}

int h_kafka_real_kill_broker(struct h_kafka_real *kr, int i)
{
	char cmd[32];
	int rc;

	if (i < 0 || i >= kr->nbrokers)
		return -EINVAL;
	snprintf(cmd, sizeof(cmd), "kill %d", i + 1);
	rc = command(kr, cmd, "kill", NULL, 0, 40000);
	if (rc == 0)
		kr->pid[i] = 0; /* reaped: the number may belong to anyone now */
	return rc;
}

int h_kafka_real_restart_broker(struct h_kafka_real *kr, int i, int timeout_ms,
				int64_t *start_ms)
{
	char cmd[32], ans[256];
	int pid = 0, node = 0, rc;
	long long ms = 0;

	if (i < 0 || i >= kr->nbrokers)
		return -EINVAL;
	snprintf(cmd, sizeof(cmd), "start %d", i + 1);
	rc = command(kr, cmd, "start", ans, sizeof(ans), timeout_ms);
	if (rc != 0)
		return rc;
	if (sscanf(ans, "ok start %d pid=%d start_ms=%lld", &node, &pid, &ms) != 3)
		return -EPROTO;
	kr->pid[i] = (pid_t)pid;
	if (start_ms != NULL)
		*start_ms = ms;
	fprintf(stderr, "harness: kafka broker %d restarted in %lld ms, pid %d\n", node, ms, pid);
	return 0;
}

int h_kafka_real_stop(struct h_kafka_real *kr, int grace_ms)
{
	int rc = 0, st;

	if (kr->proc.pid <= 0 || h_exited(kr->proc.pid, NULL) != 0)
		return 0;
	if (grace_ms == 0)
		for (int i = 0; i < kr->nbrokers; i++)
			h_kafka_real_kill_broker(kr, i);
	/* "quit": SIGTERM to what still runs, SIGKILL after 10 s */
	if (command(kr, "quit", "quit", NULL, 0, KR_QUIT_TIMEOUT_MS) != 0)
		rc = -ETIMEDOUT;
	if (h_wait(kr->proc.pid, 5000, &st) != 0) {
		h_stop(kr->proc.pid, 1000);
		rc = rc ? rc : -ETIMEDOUT;
	}
	return rc;
}

double h_kafka_real_cpu_s(const struct h_kafka_real *kr, int i)
{
	char path[64], *b, *p;
	unsigned long long ut, stt;
	double cpu = -1;

	if (i < 0 || i >= kr->nbrokers || kr->pid[i] <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)kr->pid[i]);
	b = h_file_read(path, NULL);
	if (b == NULL)
		return -1;
	/* fields 14 and 15 (utime, stime), counted after the ")" that ends
	 * the command name (which may hold spaces) */
	p = strrchr(b, ')');
	if (p != NULL && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
				&stt) == 2)
		cpu = (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
	free(b);
	return cpu;
}

/* ---- admin and counting ----------------------------------------------------------*/

static rd_kafka_t *client_at(rd_kafka_type_t type, const char *bootstrap, const char *log_level,
			     char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512];
	rd_kafka_t *rk;

	if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof(e)) ||
	    rd_kafka_conf_set(conf, "client.id", "k2mc-test-admin", e, sizeof(e)) ||
	    rd_kafka_conf_set(conf, "log_level", log_level, e, sizeof(e)) ||
	    (type == RD_KAFKA_CONSUMER &&
	     (rd_kafka_conf_set(conf, "group.id", "k2mc-test-count", e, sizeof(e)) ||
	      rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof(e)) ||
	      rd_kafka_conf_set(conf, "enable.partition.eof", "true", e, sizeof(e)) ||
	      rd_kafka_conf_set(conf, "isolation.level", "read_committed", e, sizeof(e))))) {
		fmt(err, errlen, "config: %s", e);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rk = rd_kafka_new(type, conf, e, sizeof(e));
	if (rk == NULL) {
		fmt(err, errlen, "rd_kafka_new: %s", e);
		rd_kafka_conf_destroy(conf);
	}
	return rk;
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *bootstrap, char *err, size_t errlen)
{
	return client_at(type, bootstrap, "3", err, errlen);
}

/* 1 when topic has `partitions` partitions, each with a leader; 0 not yet. */
static int topic_led(rd_kafka_t *rk, const char *topic, int partitions)
{
	const struct rd_kafka_metadata *md = NULL;
	int ok = 0;

	if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	for (int t = 0; t < md->topic_cnt; t++) {
		const rd_kafka_metadata_topic_t *mt = &md->topics[t];

		if (strcmp(mt->topic, topic) != 0 || mt->err || mt->partition_cnt != partitions)
			continue;
		ok = 1;
		for (int p = 0; p < mt->partition_cnt; p++)
			if (mt->partitions[p].err || mt->partitions[p].leader < 0)
				ok = 0;
	}
	rd_kafka_metadata_destroy(md);
	return ok;
}

/* Frees what an admin request used (any of ao, q, ev may be NULL) and the
 * client. */
static void admin_done(rd_kafka_t *rk, rd_kafka_AdminOptions_t *ao, rd_kafka_queue_t *q,
		       rd_kafka_event_t *ev)
{
	if (ev != NULL)
		rd_kafka_event_destroy(ev);
	if (q != NULL)
		rd_kafka_queue_destroy(q);
	if (ao != NULL)
		rd_kafka_AdminOptions_destroy(ao);
	rd_kafka_destroy(rk);
}

/* One admin request about one topic, CreateTopics (req: its NewTopic) or
 * CreatePartitions (req: its NewPartitions), then the wait until the topic
 * has `partitions` partitions, each with a leader: the controller answers
 * before the partitions have leaders, and a producer or consumer cannot use
 * them until they do. 0, -EEXIST (CreateTopics of a topic that exists),
 * -ETIMEDOUT, -EIO, -EINVAL; reason in err. */
static int admin_topic_op(const char *bootstrap, rd_kafka_admin_op_t op, void *req,
			  const char *topic, int partitions, int timeout_ms, char *err,
			  size_t errlen)
{
	int create = op == RD_KAFKA_ADMIN_OP_CREATETOPICS;
	const char *what = create ? "CreateTopics" : "CreatePartitions";
	int64_t deadline = h_now_ms() + timeout_ms;
	rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, bootstrap, err, errlen);
	rd_kafka_AdminOptions_t *ao = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	const rd_kafka_topic_result_t **tr = NULL;
	size_t cnt = 0;
	char e[512];
	int rc = -EIO;

	if (rk == NULL)
		return -EINVAL;
	ao = rd_kafka_AdminOptions_new(rk, op);
	q = rd_kafka_queue_new(rk);
	if (ao == NULL || q == NULL ||
	    rd_kafka_AdminOptions_set_operation_timeout(ao, timeout_ms, e, sizeof(e)) ||
	    rd_kafka_AdminOptions_set_request_timeout(ao, timeout_ms, e, sizeof(e))) {
		fmt(err, errlen, "admin options: %s", ao && q ? e : "out of memory");
		goto out;
	}
	if (create)
		rd_kafka_CreateTopics(rk, (rd_kafka_NewTopic_t **)&req, 1, ao, q);
	else
		rd_kafka_CreatePartitions(rk, (rd_kafka_NewPartitions_t **)&req, 1, ao, q);
	ev = rd_kafka_queue_poll(q, timeout_ms + 5000);
	if (ev != NULL && !rd_kafka_event_error(ev)) {
		if (create && rd_kafka_event_CreateTopics_result(ev) != NULL)
			tr = rd_kafka_CreateTopics_result_topics(
				rd_kafka_event_CreateTopics_result(ev), &cnt);
		else if (!create && rd_kafka_event_CreatePartitions_result(ev) != NULL)
			tr = rd_kafka_CreatePartitions_result_topics(
				rd_kafka_event_CreatePartitions_result(ev), &cnt);
	}
	if (tr == NULL) {
		fmt(err, errlen, "%s: %s", what,
		    ev != NULL ? rd_kafka_event_error_string(ev) : "no answer in time");
		rc = -ETIMEDOUT;
		goto out;
	}
	if (cnt != 1 || rd_kafka_topic_result_error(tr[0])) {
		rd_kafka_resp_err_t te = cnt == 1 ? rd_kafka_topic_result_error(tr[0])
						  : RD_KAFKA_RESP_ERR__FAIL;

		fmt(err, errlen, "%s %s: %s: %s", create ? "creating" : "partitions of", topic,
		    rd_kafka_err2name(te),
		    cnt == 1 && rd_kafka_topic_result_error_string(tr[0])
			    ? rd_kafka_topic_result_error_string(tr[0])
			    : "");
		rc = create && te == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS ? -EEXIST : -EIO;
		goto out;
	}
	while (!topic_led(rk, topic, partitions)) {
		if (h_now_ms() >= deadline) {
			fmt(err, errlen, "%s: not %d partitions with leaders after %d ms", topic,
			    partitions, timeout_ms);
			rc = -ETIMEDOUT;
			goto out;
		}
		h_sleep_ms(100);
	}
	rc = 0;
out:
	admin_done(rk, ao, q, ev);
	return rc;
}

int h_kafka_create_topic(const char *bootstrap, const char *topic, int partitions,
			 int replication, const char *const config[], int timeout_ms, char *err,
			 size_t errlen)
{
	rd_kafka_NewTopic_t *nt;
	char e[512];
	int rc = -EINVAL;

	nt = rd_kafka_NewTopic_new(topic, partitions, replication, e, sizeof(e));
	if (nt == NULL) {
		fmt(err, errlen, "NewTopic %s: %s", topic, e);
		return -EINVAL;
	}
	for (int i = 0; config != NULL && config[i] != NULL; i++) {
		char name[256];
		const char *eq = strchr(config[i], '=');
		rd_kafka_resp_err_t ce;

		if (eq == NULL || (size_t)(eq - config[i]) >= sizeof(name)) {
			fmt(err, errlen, "config '%s': expected name=value", config[i]);
			goto out;
		}
		fmt(name, sizeof(name), "%.*s", (int)(eq - config[i]), config[i]);
		ce = rd_kafka_NewTopic_set_config(nt, name, eq + 1);
		if (ce) {
			fmt(err, errlen, "config %s: %s", config[i], rd_kafka_err2str(ce));
			goto out;
		}
	}
	rc = admin_topic_op(bootstrap, RD_KAFKA_ADMIN_OP_CREATETOPICS, nt, topic, partitions,
			    timeout_ms, err, errlen);
out:
	rd_kafka_NewTopic_destroy(nt);
	return rc;
}

int h_kafka_leaders(const char *bootstrap, const char *topic, int n, int32_t *leader,
		    int timeout_ms, char *err, size_t errlen)
{
	/* asked while a broker is down: its connection errors are expected */
	rd_kafka_t *rk = client_at(RD_KAFKA_PRODUCER, bootstrap, "2", err, errlen);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *rkt;
	rd_kafka_resp_err_t e;
	int rc = -ENOENT;

	if (rk == NULL)
		return -EINVAL;
	for (int p = 0; p < n; p++)
		leader[p] = -1;
	rkt = rd_kafka_topic_new(rk, topic, NULL);
	e = rkt != NULL ? rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms) : RD_KAFKA_RESP_ERR__FAIL;
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fmt(err, errlen, "metadata of %s: %s", topic, rd_kafka_err2str(e));
		rc = -EIO;
		goto out;
	}
	for (int t = 0; t < md->topic_cnt; t++) {
		const rd_kafka_metadata_topic_t *mt = &md->topics[t];

		if (strcmp(mt->topic, topic) != 0)
			continue;
		for (int i = 0; i < mt->partition_cnt; i++)
			if (mt->partitions[i].id >= 0 && mt->partitions[i].id < n)
				leader[mt->partitions[i].id] = mt->partitions[i].leader;
		rc = 0;
	}
	if (rc != 0)
		fmt(err, errlen, "%s: not in the metadata", topic);
out:
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	if (rkt != NULL)
		rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	return rc;
}

int h_kafka_create_partitions(const char *bootstrap, const char *topic, int total,
			      int timeout_ms, char *err, size_t errlen)
{
	rd_kafka_NewPartitions_t *np;
	char e[512];
	int rc;

	np = rd_kafka_NewPartitions_new(topic, (size_t)total, e, sizeof(e));
	if (np == NULL) {
		fmt(err, errlen, "NewPartitions %s: %s", topic, e);
		return -EINVAL;
	}
	rc = admin_topic_op(bootstrap, RD_KAFKA_ADMIN_OP_CREATEPARTITIONS, np, topic, total,
			    timeout_ms, err, errlen);
	rd_kafka_NewPartitions_destroy(np);
	return rc;
}

int h_kafka_alter_topic_config(const char *bootstrap, const char *topic, const char *name,
			       const char *value, int timeout_ms, char *err, size_t errlen)
{
	rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, bootstrap, err, errlen);
	rd_kafka_ConfigResource_t *res = NULL;
	rd_kafka_AdminOptions_t *ao = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	const rd_kafka_IncrementalAlterConfigs_result_t *r;
	const rd_kafka_ConfigResource_t **rr = NULL;
	rd_kafka_error_t *ae;
	size_t cnt = 0;
	char e[512];
	int rc = -EIO;

	if (rk == NULL)
		return -EINVAL;
	res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
	ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS);
	q = rd_kafka_queue_new(rk);
	if (res == NULL || ao == NULL || q == NULL ||
	    rd_kafka_AdminOptions_set_request_timeout(ao, timeout_ms, e, sizeof(e))) {
		fmt(err, errlen, "admin options: %s", ao && q && res ? e : "out of memory");
		goto out;
	}
	ae = rd_kafka_ConfigResource_add_incremental_config(
		res, name, RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET, value);
	if (ae != NULL) {
		fmt(err, errlen, "%s=%s: %s", name, value, rd_kafka_error_string(ae));
		rd_kafka_error_destroy(ae);
		rc = -EINVAL;
		goto out;
	}
	rd_kafka_IncrementalAlterConfigs(rk, &res, 1, ao, q);
	ev = rd_kafka_queue_poll(q, timeout_ms + 5000);
	r = ev != NULL && !rd_kafka_event_error(ev) ? rd_kafka_event_IncrementalAlterConfigs_result(ev)
						    : NULL;
	if (r != NULL)
		rr = rd_kafka_IncrementalAlterConfigs_result_resources(r, &cnt);
	if (rr == NULL || cnt != 1) {
		fmt(err, errlen, "IncrementalAlterConfigs %s: %s", topic,
		    ev != NULL ? rd_kafka_event_error_string(ev) : "no answer in time");
		rc = -ETIMEDOUT;
		goto out;
	}
	if (rd_kafka_ConfigResource_error(rr[0])) {
		fmt(err, errlen, "%s %s=%s: %s", topic, name, value,
		    rd_kafka_ConfigResource_error_string(rr[0]));
		goto out;
	}
	rc = 0;
out:
	if (res != NULL)
		rd_kafka_ConfigResource_destroy(res);
	admin_done(rk, ao, q, ev);
	return rc;
}

int h_kafka_count_records(const char *bootstrap, const char *topic, int n, int64_t *records,
			  int64_t *start, int timeout_ms, char *err, size_t errlen)
{
	int64_t deadline = h_now_ms() + timeout_ms, lo, hi;
	rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, bootstrap, err, errlen);
	rd_kafka_topic_partition_list_t *l = NULL;
	int64_t *cnt = calloc((size_t)n, sizeof(*cnt));
	char *done = calloc((size_t)n, 1);
	int left = n, rc = -EIO;

	if (rk == NULL || cnt == NULL || done == NULL) {
		rc = rk == NULL ? -EINVAL : -ENOMEM;
		goto out;
	}
	l = rd_kafka_topic_partition_list_new(n);
	for (int p = 0; p < n; p++) {
		rd_kafka_resp_err_t e =
			rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, timeout_ms);

		if (e) {
			fmt(err, errlen, "watermarks of %s[%d]: %s", topic, p, rd_kafka_err2str(e));
			goto out;
		}
		if (start != NULL)
			start[p] = lo;
		if (lo == hi) {
			done[p] = 1; /* empty: no EOF event to wait for */
			left--;
		}
		rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
	}
	if (rd_kafka_assign(rk, l) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fmt(err, errlen, "assign failed");
		goto out;
	}
	/* enable.partition.eof: an EOF event when a partition's fetch position
	 * reaches its end, past control records and compaction gaps */
	while (left > 0) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);

		if (m != NULL) {
			int p = m->partition;

			if (p >= 0 && p < n && !done[p]) {
				if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
					done[p] = 1;
					left--;
				} else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
					cnt[p]++;
				} else {
					fmt(err, errlen, "%s[%d]: %s", topic, p,
					    rd_kafka_message_errstr(m));
					rd_kafka_message_destroy(m);
					goto out;
				}
			}
			rd_kafka_message_destroy(m);
		}
		if (h_now_ms() >= deadline) {
			fmt(err, errlen, "%d partitions of %s not read to the end in %d ms", left,
			    topic, timeout_ms);
			rc = -ETIMEDOUT;
			goto out;
		}
	}
	if (records != NULL)
		memcpy(records, cnt, (size_t)n * sizeof(*cnt));
	rc = 0;
out:
	if (l != NULL)
		rd_kafka_topic_partition_list_destroy(l);
	if (rk != NULL)
		rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	free(cnt);
	free(done);
	return rc;
}

/* ---- either backend ------------------------------------------------------------------*/

enum h_kafka_backend h_kafka_backend(void)
{
	const char *v = getenv("K2MC_KAFKA");

	if (v == NULL || v[0] == '\0' || strcmp(v, "mock") == 0)
		return H_KAFKA_MOCK;
	if (strcmp(v, "real") == 0)
		return H_KAFKA_REAL;
	fprintf(stderr, "harness: K2MC_KAFKA=%s: expected mock or real\n", v);
	abort();
}

const char *h_kafka_backend_name(enum h_kafka_backend b)
{
	return b == H_KAFKA_REAL ? "real" : "mock";
}

int h_producer_start(struct h_mock *mk, const char *bootstrap, const char *const args[],
		     int timeout_ms)
{
	const char *argv[128];
	int n = 0;

	argv[n++] = "-b";
	argv[n++] = bootstrap;
	for (int i = 0; args != NULL && args[i] != NULL && n < 127; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return h_mock_start(mk, argv, 0, timeout_ms);
}

int h_kcluster_start(struct h_kcluster *kc, const struct h_kafka_real_opts *ro,
		     const char *const args[], int stdin_control, int timeout_ms)
{
	const char *argv[128];
	int n = 0, rc;

	memset(kc, 0, sizeof(*kc));
	kc->backend = h_kafka_backend();
	if (kc->backend == H_KAFKA_MOCK)
		return h_mock_start(&kc->mock, args, stdin_control, timeout_ms);
	rc = h_kafka_real_start(&kc->real, ro);
	if (rc != 0)
		return rc;
	argv[n++] = "-b";
	argv[n++] = kc->real.bootstrap;
	for (int i = 0; args != NULL && args[i] != NULL && n < 127; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return h_mock_start(&kc->mock, argv, stdin_control, timeout_ms);
}
