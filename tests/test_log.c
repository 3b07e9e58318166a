/* Unit suite for the logger (core/log.h): --log-format text and json write
 * the same events, JSON is one valid object per line with the structured
 * fields, and control bytes, DEL and bytes that are not UTF-8 are escaped in
 * both. tests/logcheck.py (python3's json) judges the two files. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "harness.h"

TestSuite(log, .fini = h_cleanup, .timeout = 60);

static void expect_escape(const char *in, const char *want)
{
	char out[256];

	k2mc_log_escape(out, sizeof(out), in);
	cr_expect_str_eq(out, want, "escape(%s)", in);
}

Test(log, escape_leaves_text_and_utf8_and_escapes_the_rest)
{
	char small[8];

	expect_escape("plain text, \"quotes\" and \\backslash",
	              "plain text, \"quotes\" and \\backslash");
	expect_escape("tab\tnl\ncr\rnul-less\x01\x1b[31m",
	              "tab\\x09nl\\x0acr\\x0dnul-less\\x01\\x1b[31m");
	expect_escape("del\x7f", "del\\x7f");
	/* UTF-8 stays: é, €, U+1F600 */
	expect_escape("\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
	              "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	/* not UTF-8: a lone continuation byte, 0xff, an overlong '/', a
	 * surrogate, past U+10FFFF, a truncated sequence */
	expect_escape("\x80", "\\x80");
	expect_escape("a\xff"
	              "b",
	              "a\\xffb");
	expect_escape("\xc0\xaf", "\\xc0\\xaf");
	expect_escape("\xed\xa0\x80", "\\xed\\xa0\\x80");
	expect_escape("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80");
	expect_escape("\xe2\x82", "\\xe2\\x82");
	/* C1 controls (8-bit CSI) are controls too */
	expect_escape("\xc2\x9b"
	              "31m",
	              "\\xc2\\x9b31m");
	/* never an escape cut in half, always terminated */
	cr_expect_eq(k2mc_log_escape(small, sizeof(small), "abcd\x01zz"), 4);
	cr_expect_str_eq(small, "abcd");
}

/* stderr into path from now on (Criterion runs each test in its own process). */
static void capture(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	cr_assert_geq(fd, 0);
	fflush(stderr);
	cr_assert_geq(dup2(fd, STDERR_FILENO), 0);
	close(fd);
}

/* The same events, whichever the format. */
static void events(void)
{
	static char longmsg[3000];

	memset(longmsg, '"', sizeof(longmsg) - 1);
	k2mc_log_set_level(K2MC_LOG_DEBUG);
	k2mc_info("started: brokers %s, group %s", "127.0.0.1:9092", "g");
	k2mc_log_record(K2MC_LOG_WARN, "events", 3, 1234, "key_bad_bytes",
	                "%s [%d] @%lld: skipped, %s", "events", 3, 1234LL, "key_bad_bytes");
	k2mc_log_record(K2MC_LOG_WARN, "events", 0, 0, NULL, "offset zero is an offset");
	k2mc_log_server(K2MC_LOG_WARN, "127.0.0.1:11211", "connect: Connection refused",
	                "memcached %s: down (%s); its records wait and are retried",
	                "127.0.0.1:11211", "connect: Connection refused");
	k2mc_log_server(K2MC_LOG_WARN, "unix:/tmp/mc \"q\"\x01", "SERVER_ERROR \x1b[31m",
	                "server said: '%s'",
	                "ctl \x01\x1b[31mred\x7f \"quoted\" back\\slash tab\t nl\n");
	k2mc_log_reason(K2MC_LOG_ERR, "bad\xff",
	                "utf-8 \xc3\xa9 \xe2\x82\xac, C1 \xc2\x9b, bad \xed\xa0\x80");
	k2mc_log_partition(K2MC_LOG_DEBUG, "t\x01opic", 7, NULL, "a partition line");
	k2mc_log_kafka("kafka", 4, "CONFWARN",
	               "Configuration property acks is a producer property and will be ignored");
	k2mc_log_kafka("kafka", 3, "FAIL", "127.0.0.1:1/bootstrap: Connect failed");
	k2mc_warn("%s", longmsg);
	/* below the level: in neither */
	k2mc_log_set_level(K2MC_LOG_INFO);
	k2mc_dbg("not logged");
}

static int logcheck(const char *text, const char *json, const char *extra)
{
	char cmd[2 * H_PATH_MAX + 512];

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 tests/logcheck.py %s %s %s", text, json,
	         extra);
	return system(cmd);
}

Test(log, same_events_in_both_formats_and_json_valid_per_line)
{
	char text[H_PATH_MAX], json[H_PATH_MAX];
	char *t, *j;

	h_tmppath(text, sizeof(text), "text.log");
	h_tmppath(json, sizeof(json), "json.log");
	capture(text);
	k2mc_log_set_format(K2MC_LOG_TEXT);
	events();
	capture(json);
	k2mc_log_set_format(K2MC_LOG_JSON);
	cr_expect_eq(k2mc_log_get_format(), K2MC_LOG_JSON);
	events();
	/* no status line in JSON: nothing would tell it from a log line */
	k2mc_log_status("progress 50.0% | ...");
	k2mc_log_status_keep();
	fflush(stderr);
	cr_expect_eq(logcheck(text, json,
	                      "--expect 'skipped, key_bad_bytes=topic,partition,offset,reason' "
	                      "--expect 'down (=server,reason' --expect 'offset zero=offset' "
	                      "--expect CONFWARN=reason"),
	             0, "logcheck failed (its reasons above)");
	t = h_file_read(text, NULL);
	j = h_file_read(json, NULL);
	cr_assert(t != NULL && j != NULL);
	cr_expect_not_null(strstr(t, " k2mc WARN: events [3] @1234: skipped, key_bad_bytes\n"),
	                   "%s", t);
	cr_expect_not_null(
	    strstr(t, "'ctl \\x01\\x1b[31mred\\x7f \"quoted\" back\\slash tab\\x09 nl\\x0a'"), "%s",
	    t);
	cr_expect_not_null(strstr(t, " k2mc ERROR: kafka: FAIL: 127.0.0.1:1/bootstrap"), "%s", t);
	cr_expect_null(strstr(t, "not logged"));
	cr_expect_not_null(strstr(j, ",\"level\":\"warn\",\"msg\":\"events [3] @1234: skipped, "
	                             "key_bad_bytes\",\"topic\":\"events\",\"partition\":3,"
	                             "\"offset\":1234,\"reason\":\"key_bad_bytes\"}\n"),
	                   "%s", j);
	cr_expect_not_null(strstr(j, "\"server\":\"unix:/tmp/mc \\\"q\\\"\\\\x01\""), "%s", j);
	cr_expect_not_null(strstr(j, "\"level\":\"debug\",\"msg\":\"a partition line\","
	                             "\"topic\":\"t\\\\x01opic\",\"partition\":7}"),
	                   "%s", j);
	cr_expect_null(strstr(j, "progress"), "a status line in JSON mode");
	free(t);
	free(j);
}
