/* Integration suite for --log-format: the same run logged as text and as
 * JSON has the same events, every JSON line is one valid object with the
 * structured fields its event names (a skipped record's topic, partition,
 * offset and reason; a down server), librdkafka's own lines come through
 * k2mc's logger, and control bytes a user put into a line (a topic pattern)
 * are escaped in both. tests/logcheck.py (python3's json) judges the files.
 * Servers per test on loopback; binaries from K2MC_BIN and K2MC_MOCK. */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "world.h"

#define TOPIC "events"
#define GOOD  200

static struct world W;
static char servers[128];

WORLD_SUITE(logs, .fini = world_teardown, .timeout = 150)

static const char *tail_of(const char *path)
{
	return h_tail_of(path, 30);
}

/* GOOD valid records, then one without a key and one whose key has
 * control bytes, to partition 0 of TOPIC. */
static void produce(void)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512], key[32];
	rd_kafka_t *rk;

	cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", W.mock.bootstrap, e, sizeof(e)),
	             RD_KAFKA_CONF_OK, "%s", e);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
	cr_assert_not_null(rk, "producer: %s", e);
	for (int i = 0; i < GOOD + 2; i++) {
		int kl = snprintf(key, sizeof(key), "key-%d", i % 50);
		const char *k = key;
		rd_kafka_resp_err_t err;

		if (i == GOOD) {
			k = NULL; /* missing_key */
			kl = 0;
		} else if (i == GOOD + 1) {
			k = "bad\x1b[31mkey\x01"; /* key_bad_bytes */
			kl = (int)strlen(k);
		}
		err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(W.topic), RD_KAFKA_V_PARTITION(0),
		                        RD_KAFKA_V_KEY(k, (size_t)kl), RD_KAFKA_V_VALUE("value", 5),
		                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
		cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(err));
	}
	cr_assert_eq(rd_kafka_flush(rk, 15000), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_destroy(rk);
}

/* memcached, a second server nobody listens on, a mock holding the records. */
static void start_world(void)
{
	world_start(&W, &(struct world_opts){.topic = TOPIC, .parts = 1, .no_expect = 1, .control = 1});
	snprintf(servers, sizeof(servers), "%s,127.0.0.1:%d", W.mc_addr, h_free_port());
	produce();
}

/* One -e run in the given format; its stderr's path into err. */
static void run_e(const char *format, const char *group, char *err, size_t len)
{
	struct h_proc k;
	char st[96];
	int status, rc;
	/* --mc-eject: the dead server's keys go to the live one after two
	 * failed attempts, so -e ends; -X acks=all: librdkafka warns about a
	 * producer property (CONFWARN), a line of its own */
	const char *args[] = {"--mc-eject",
	                      "--stats-interval-ms",
	                      "0",
	                      "-X",
	                      "acks=all",
	                      "--log-format",
	                      format,
	                      NULL};

	world_k2mc_start(&W, &k, &(struct world_k2mc){.group = group, .mc = servers, .eof = 1, .args = args});
	rc = h_wait(k.pid, 60000, &status);
	cr_assert_eq(rc, 0, "k2mc -e still running after 60 s:\n%s", tail_of(k.err_path));
	cr_assert_eq(h_exit_code(status), 0, "k2mc ended with %s:\n%s",
	             h_status_str(status, st, sizeof(st)), tail_of(k.err_path));
	snprintf(err, len, "%s", k.err_path);
}

static int logcheck(const char *text, const char *json, const char *extra)
{
	char cmd[2 * H_PATH_MAX + 1024];

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 tests/logcheck.py %s %s %s", text, json,
	         extra);
	return system(cmd);
}

Test(logs, same_events_in_text_and_json)
{
	char text[H_PATH_MAX], json[H_PATH_MAX];
	char *t;

	start_world();
	run_e("text", "logs-text", text, sizeof(text));
	run_e("json", "logs-json", json, sizeof(json));
	/* Events compared as sets with digits as 0 (two runs: other ports,
	 * times, counts); librdkafka's lines depend on timing, so they are
	 * only checked for form. The per-partition table is plain text after
	 * the summary in text mode and log lines in JSON mode; main's summary
	 * line is plain text in both. */
	cr_expect_eq(logcheck(text, json,
	                      "--normalize --set --replace logs-json=logs-text "
	                      "--ignore-prefix 'kafka: ' --ignore-prefix 'per partition: ' "
	                      "--allow-plain 'k2mc: summary: ' "
	                      "--allow-plain 'k2mc: per partition:' --allow-plain '  ' "
	                      "--expect 'skipped, missing_key=topic,partition,offset,reason' "
	                      "--expect 'skipped, key_bad_bytes=topic,partition,offset,reason' "
	                      "--expect ': down (=server,reason' --expect CONFWARN=reason "
	                      "--expect 'per partition: events [0]=topic,partition'"),
	             0, "logcheck failed (reasons above); text:\n%s", tail_of(text));
	t = h_file_read(text, NULL);
	cr_assert_not_null(t);
	cr_expect_not_null(strstr(t, " k2mc WARN: kafka: CONFWARN: "),
	                   "librdkafka's CONFWARN not through k2mc's logger:\n%s", t);
	cr_expect_not_null(strstr(t, "@200: skipped, missing_key"), "%s", t);
	free(t);
}

/* A topic pattern with an escape sequence and a control byte: the user's
 * bytes come back in "no topic matches yet", escaped in both formats. */
static void run_pattern(const char *format, char *err, size_t len)
{
	struct h_proc k;
	int status, rc;
	const char *args[] = {"-b",           W.mock.bootstrap, "-t", "^nomatch\x1b\x01.*",
	                      "-G",           "logs-ctl",       "-m", servers,
	                      "--log-format", format,           NULL};

	rc = h_k2mc_start(&k, NULL, args);
	cr_assert_eq(rc, 0, "k2mc: %s", strerror(-rc));
	rc = h_wait_line(k.err_path, "no topic matches yet", NULL, k.pid, 20000, NULL, 0);
	cr_assert_eq(rc, 0, "no 'no topic matches yet' line:\n%s", tail_of(k.err_path));
	cr_assert_eq(h_signal(k.pid, SIGTERM), 0);
	cr_assert_eq(h_wait(k.pid, 20000, &status), 0, "still running after SIGTERM");
	cr_expect_eq(h_exit_code(status), 0, "%s", tail_of(k.err_path));
	snprintf(err, len, "%s", k.err_path);
}

Test(logs, control_bytes_escaped_in_both)
{
	char text[H_PATH_MAX], json[H_PATH_MAX];
	char *t, *j;

	start_world();
	run_pattern("text", text, sizeof(text));
	run_pattern("json", json, sizeof(json));
	cr_expect_eq(
	    logcheck(text, json,
	             "--normalize --set --ignore-prefix 'kafka: ' "
	             "--allow-plain 'k2mc: summary: ' --expect 'no topic matches yet=reason'"),
	    0, "logcheck failed (reasons above)");
	t = h_file_read(text, NULL);
	j = h_file_read(json, NULL);
	cr_assert(t != NULL && j != NULL);
	cr_expect_not_null(strstr(t, "^nomatch\\x1b\\x01.*: no topic matches yet"), "%s", t);
	cr_expect_not_null(strstr(j, "\"msg\":\"^nomatch\\\\x1b\\\\x01.*: no topic matches yet"),
	                   "%s", j);
	free(t);
	free(j);
}
