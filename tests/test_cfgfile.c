/* Criterion suite for the configuration sources besides flags (core/config.h):
 * -F files of key=value lines, K2MC_* environment variables, their precedence
 * (environment < file < command line), --metrics-addr and --stats-json values,
 * and --dump-config, which must mask secrets and read back as a -F file.
 * Each test runs in its own process (Criterion forks), so setenv stays there. */
#include "core/config.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARGV(...) ((char *[]){ "k2mc", __VA_ARGS__, NULL })

static char file_path[64];

static void remove_file(void)
{
	if (file_path[0] != '\0')
		unlink(file_path);
}

TestSuite(cfgfile, .fini = remove_file);

/* Writes len bytes of text to a fresh temp file and returns its path. */
static const char *config_file_n(const char *text, size_t len)
{
	int fd;

	remove_file();
	snprintf(file_path, sizeof(file_path), "/tmp/k2mc-cfg.XXXXXX");
	fd = mkstemp(file_path);
	cr_assert_geq(fd, 0, "mkstemp");
	cr_assert_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
	return file_path;
}

static const char *config_file(const char *text)
{
	return config_file_n(text, strlen(text));
}

static enum k2mc_config_result parse(struct k2mc_config *c, char **argv, char *err, size_t errlen)
{
	int argc = 0;

	while (argv[argc] != NULL)
		argc++;
	memset(err, 0, errlen);
	return k2mc_config_parse(c, argc, argv, err, errlen);
}

static void expect_ok(struct k2mc_config *c, char **argv)
{
	char err[512];

	cr_assert_eq(parse(c, argv, err, sizeof(err)), K2MC_CONFIG_OK, "unexpected error: %s", err);
}

/* A usage error whose one-line message contains every one of needles. */
static void expect_usage(char **argv, const char *needle1, const char *needle2)
{
	struct k2mc_config c;
	char err[512];
	enum k2mc_config_result r = parse(&c, argv, err, sizeof(err));

	cr_assert_eq(r, K2MC_CONFIG_USAGE, "expected a usage error naming %s, got %d (%s)", needle1,
		     r, err);
	cr_expect_null(strchr(err, '\n'), "message is one line: %s", err);
	cr_expect_not_null(strstr(err, needle1), "message '%s' does not name %s", err, needle1);
	if (needle2 != NULL)
		cr_expect_not_null(strstr(err, needle2), "message '%s' does not name %s", err,
				   needle2);
	k2mc_config_free(&c);
}

/* The dump of c, malloc'd. */
static char *dump(const struct k2mc_config *c)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	k2mc_config_dump(c, f);
	fclose(f);
	return text;
}

Test(cfgfile, file_sets_k2mc_flags_and_librdkafka_properties)
{
	struct k2mc_config c;
	const char *path = config_file("# a k2mc config\n"
				       "\n"
				       "brokers = k1:9092,k2:9092\n"
				       "topic=orders\n"
				       "  topic=users  \n"
				       "group=loader\r\n"
				       "memcached=mc1:11211,mc2:11212\n"
				       "writers=4\n"
				       "ring-size=1024\n"
				       "key-prefix=app:\n"
				       "exit=true\n"
				       "mc-eject=yes\n"
				       "metrics-addr=9100\n"
				       "stats-json=-\n"
				       "security.protocol=SASL_SSL\n"
				       "sasl.password=a=b#c\n"
				       "debug=cgrp\n");

	expect_ok(&c, ARGV("-F", (char *)path));
	cr_expect_str_eq(c.config_file, path);
	cr_expect_str_eq(c.brokers, "k1:9092,k2:9092", "blanks around key and value trimmed");
	cr_assert_eq(c.ntopics, 2);
	cr_expect_str_eq(c.topics[0], "orders");
	cr_expect_str_eq(c.topics[1], "users");
	cr_expect_str_eq(c.group, "loader", "CRLF line ends");
	cr_assert_eq(c.nservers, 2);
	cr_expect_str_eq(c.servers[1].host, "mc2");
	cr_expect_eq(c.servers[1].port, 11212);
	cr_expect_eq(c.writers, 4);
	cr_expect_eq(c.ring_size, 1024);
	cr_expect_str_eq(c.key_prefix, "app:");
	cr_expect_eq(c.key_prefix_len, 4);
	cr_expect_eq(c.exit_at_eof, 1);
	cr_expect_eq(c.mc_eject, 1);
	cr_expect_str_eq(c.metrics_host, "127.0.0.1");
	cr_expect_eq(c.metrics_port, 9100);
	cr_expect_str_eq(c.stats_json, "-");
	/* keys that are not k2mc's are librdkafka's, passed on like -X */
	cr_assert_eq(c.nxprops, 3);
	cr_expect_str_eq(c.xprops[0], "security.protocol=SASL_SSL");
	cr_expect_str_eq(c.xprops[1], "sasl.password=a=b#c", "values may hold = and #");
	cr_expect_str_eq(c.xprops[2], "debug=cgrp");
	k2mc_config_free(&c);
	cr_expect_null(c.owned);
}

Test(cfgfile, command_line_overrides_the_file)
{
	struct k2mc_config c;
	const char *path = config_file("brokers=file:9092\n"
				       "topic=a\n"
				       "topic=b\n"
				       "writers=4\n"
				       "exit=true\n"
				       "acks=1\n"
				       "memcached=file:1\n");

	/* flags before and after -F: the command line wins either way */
	expect_ok(&c, ARGV("--writers", "8", "-F", (char *)path, "-t", "c", "-X", "acks=all"));
	cr_expect_str_eq(c.brokers, "file:9092", "not on the command line: from the file");
	cr_expect_eq(c.writers, 8);
	cr_assert_eq(c.ntopics, 1, "-t replaces the file's topic list");
	cr_expect_str_eq(c.topics[0], "c");
	cr_expect_eq(c.exit_at_eof, 1);
	cr_expect_str_eq(c.servers[0].host, "file");
	/* both reach librdkafka, the command line's last, so it wins there */
	cr_assert_eq(c.nxprops, 2);
	cr_expect_str_eq(c.xprops[0], "acks=1");
	cr_expect_str_eq(c.xprops[1], "acks=all");
	k2mc_config_free(&c);

	/* a flag set false in the file, true on the command line */
	path = config_file("brokers=b:1\ntopic=t\nexit=false\nverbose=true\n");
	expect_ok(&c, ARGV("-F", (char *)path, "-e", "-q"));
	cr_expect_eq(c.exit_at_eof, 1);
	cr_expect_eq(c.verbosity, 0);
	k2mc_config_free(&c);
}

Test(cfgfile, environment_is_lowest)
{
	struct k2mc_config c;
	const char *path;

	setenv("K2MC_BROKERS", "env:9092", 1);
	setenv("K2MC_TOPICS", "e1, e2,,e3", 1);
	setenv("K2MC_GROUP", "envgroup", 1);
	setenv("K2MC_MEMCACHED", "envmc:11211,envmc2:11211", 1);
	setenv("K2MC_WRITERS", "3", 1);

	/* alone, the environment is a whole configuration */
	expect_ok(&c, ARGV("-e"));
	cr_expect_str_eq(c.brokers, "env:9092");
	cr_assert_eq(c.ntopics, 3);
	cr_expect_str_eq(c.topics[0], "e1");
	cr_expect_str_eq(c.topics[1], "e2", "blanks after commas dropped");
	cr_expect_str_eq(c.topics[2], "e3", "empty items dropped");
	cr_expect_str_eq(c.group, "envgroup");
	cr_expect_eq(c.nservers, 2);
	cr_expect_eq(c.writers, 3);
	k2mc_config_free(&c);

	/* the file beats it, the command line beats both */
	path = config_file("writers=5\ntopic=f1\ngroup=filegroup\n");
	expect_ok(&c, ARGV("-F", (char *)path, "-G", "cligroup"));
	cr_expect_str_eq(c.brokers, "env:9092");
	cr_expect_eq(c.writers, 5);
	cr_assert_eq(c.ntopics, 1, "the file's topics replace the environment's");
	cr_expect_str_eq(c.topics[0], "f1");
	cr_expect_str_eq(c.group, "cligroup");
	cr_expect_str_eq(c.servers[0].host, "envmc");
	k2mc_config_free(&c);

	/* an empty variable counts as unset */
	setenv("K2MC_GROUP", "", 1);
	expect_ok(&c, ARGV("-b", "x:1"));
	cr_expect_str_eq(c.group, "k2mc");
	cr_expect_str_eq(c.brokers, "x:1");
	k2mc_config_free(&c);
}

Test(cfgfile, bad_files_and_variables_are_named)
{
	char missing[] = "/nonexistent/k2mc.conf";
	const char *path;

	expect_usage(ARGV("-F", missing, "-b", "k:1", "-t", "t"), "-F", missing);
	expect_usage(ARGV("-F"), "-F", NULL);
	path = config_file("brokers=k:1\nthis line has no equals sign\n");
	expect_usage(ARGV("-F", (char *)path, "-t", "t"), ":2:", "key=value");
	path = config_file("brokers=k:1\n\n# comment\nwriters=0\n");
	expect_usage(ARGV("-F", (char *)path, "-t", "t"), ":4:", "--writers");
	path = config_file("=value\n");
	expect_usage(ARGV("-F", (char *)path), ":1:", "key=value");
	path = config_file("config=/etc/other.conf\n");
	expect_usage(ARGV("-F", (char *)path, "-b", "k:1", "-t", "t"), "config", "not allowed");
	path = config_file("help=true\n");
	expect_usage(ARGV("-F", (char *)path, "-b", "k:1", "-t", "t"), "help", "not allowed");
	path = config_file("exit=maybe\n");
	expect_usage(ARGV("-F", (char *)path, "-b", "k:1", "-t", "t"), "exit", "maybe");
	path = config_file("ring-size=100\n");
	expect_usage(ARGV("-F", (char *)path, "-b", "k:1", "-t", "t"), "--ring-size", path);
	expect_usage(ARGV("-F", (char *)path, "-F", (char *)path), "-F", "only one");

	setenv("K2MC_WRITERS", "0", 1);
	expect_usage(ARGV("-b", "k:1", "-t", "t"), "K2MC_WRITERS", "--writers");
	/* ... but the command line does not get to fix a broken variable:
	 * every source is checked */
	expect_usage(ARGV("-b", "k:1", "-t", "t", "--writers", "2"), "K2MC_WRITERS", NULL);
	unsetenv("K2MC_WRITERS");
	setenv("K2MC_MEMCACHED", "nocolon", 1);
	expect_usage(ARGV("-b", "k:1", "-t", "t"), "K2MC_MEMCACHED: -m", "nocolon");
	path = config_file("memcached=a:1,\n");
	expect_usage(ARGV("-F", (char *)path, "-b", "k:1", "-t", "t"), path, "trailing comma");
	unsetenv("K2MC_MEMCACHED");

	/* the messages for missing settings say where else they can come from */
	expect_usage(ARGV("-t", "t"), "-b", "K2MC_BROKERS");
	expect_usage(ARGV("-b", "k:1"), "-t", "topic=");
}

Test(cfgfile, help_works_whatever_the_file_says, .init = cr_redirect_stdout)
{
	struct k2mc_config c;
	char err[256];
	const char *path = config_file("writers=0\n");

	cr_expect_eq(parse(&c, ARGV("-F", (char *)path, "-h"), err, sizeof(err)), K2MC_CONFIG_EXIT,
		     "%s", err);
	k2mc_config_free(&c);
	setenv("K2MC_WRITERS", "nope", 1);
	cr_expect_eq(parse(&c, ARGV("-V"), err, sizeof(err)), K2MC_CONFIG_EXIT, "%s", err);
	k2mc_config_free(&c);
}

Test(cfgfile, metrics_addr_and_stats_json_values)
{
	static const struct {
		const char *arg, *host;
		int port;
	} ok[] = {
		{ "9100", "127.0.0.1", 9100 },	 { ":9101", "127.0.0.1", 9101 },
		{ "0.0.0.0:9102", "0.0.0.0", 9102 }, { "metrics.local:1", "metrics.local", 1 },
		{ "[::1]:9103", "::1", 9103 },	     { "[::]:65535", "::", 65535 },
	};
	static const char *const bad[] = { "",	    "0",     "65536",	 "host:",    "::1:9100",
					   "[::1]", "[::1]9100", "abc", "1.2.3.4:x" };
	struct k2mc_config c;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		expect_ok(&c, ARGV("-b", "k:1", "-t", "t", "--metrics-addr", (char *)ok[i].arg));
		cr_expect_str_eq(c.metrics_host, ok[i].host, "%s", ok[i].arg);
		cr_expect_eq(c.metrics_port, ok[i].port, "%s", ok[i].arg);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_usage(ARGV("-b", "k:1", "-t", "t", "--metrics-addr", (char *)bad[i]),
			     "--metrics-addr", NULL);
	expect_ok(&c, ARGV("-b", "k:1", "-t", "t"));
	cr_expect_eq(c.metrics_port, 0, "off by default");
	cr_expect_null(c.stats_json, "off by default");
	expect_ok(&c, ARGV("-b", "k:1", "-t", "t", "--stats-json", "/tmp/s.json"));
	cr_expect_str_eq(c.stats_json, "/tmp/s.json");
	expect_usage(ARGV("-b", "k:1", "-t", "t", "--stats-json", ""), "--stats-json", NULL);
}

Test(cfgfile, dump_masks_secrets_and_shows_the_winning_values)
{
	struct k2mc_config c;
	const char *path = config_file("sasl.password=file-secret\n"
				       "ssl.key.password=kp-secret\n"
				       "sasl.oauthbearer.client.secret=oauth-secret\n"
				       "acks=1\n"
				       "topic=from-file\n");
	char *out;

	setenv("K2MC_GROUP", "envgroup", 1);
	expect_ok(&c, ARGV("-b", "k:1", "-F", (char *)path, "-t", "cli", "-X",
			   "sasl.password=cli-secret", "-X", "ssl.keystore.password=x1", "-X",
			   "acks=all", "-X", "sasl.username=loader", "-X",
			   "sasl.oauthbearer.assertion.private.key.passphrase=x2", "-X",
			   "ssl.ca.pem=x3", "-X", "sasl.oauthbearer.client.id=k2mc-client",
			   "--dump-config"));
	cr_expect_eq(c.dump_config, 1);
	out = dump(&c);
	cr_expect_null(strstr(out, "secret=file"), "%s", out);
	cr_expect_null(strstr(out, "-secret"), "a secret is printed:\n%s", out);
	cr_expect_null(strstr(out, "x1"), "a secret is printed:\n%s", out);
	cr_expect_not_null(strstr(out, "\nsasl.password=********\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nssl.key.password=********\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nsasl.oauthbearer.client.secret=********\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nssl.keystore.password=********\n"), "%s", out);
	/* librdkafka marks these sensitive: so does k2mc */
	cr_expect_not_null(strstr(out, "\nsasl.username=********\n"), "%s", out);
	cr_expect_null(strstr(out, "x2"), "a secret is printed:\n%s", out);
	cr_expect_null(strstr(out, "x3"), "a secret is printed:\n%s", out);
	cr_expect_not_null(strstr(out, "\nsasl.oauthbearer.client.id=k2mc-client\n"),
			   "not a secret:\n%s", out);
	cr_expect_not_null(strstr(out, "\nacks=all\n"), "%s", out);
	cr_expect_null(strstr(out, "acks=1"), "each property once, the winning value:\n%s", out);
	cr_expect_not_null(strstr(out, "\ntopic=cli\n"), "%s", out);
	cr_expect_null(strstr(out, "from-file"), "%s", out);
	cr_expect_not_null(strstr(out, "\ngroup=envgroup\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nbrokers=k:1\n"), "%s", out);
	cr_expect(k2mc_config_is_secret("ssl.key.pem"));
	cr_expect(k2mc_config_is_secret("SASL.PASSWORD"));
	cr_expect(k2mc_config_is_secret("my.Secret.Token"));
	cr_expect(!k2mc_config_is_secret("ssl.ca.location"));
	cr_expect(!k2mc_config_is_secret("sasl.mechanisms"));
	cr_expect(!k2mc_config_is_secret("security.protocol"));
	/* every property librdkafka 2.14 marks sensitive */
	cr_expect(k2mc_config_is_secret("ssl.key.location"));
	cr_expect(k2mc_config_is_secret("ssl.ca.pem"));
	cr_expect(k2mc_config_is_secret("sasl.username"));
	cr_expect(k2mc_config_is_secret("sasl.oauthbearer.config"));
	cr_expect(k2mc_config_is_secret("sasl.oauthbearer.assertion.private.key.file"));
	cr_expect(k2mc_config_is_secret("sasl.oauthbearer.assertion.private.key.passphrase"));
	cr_expect(k2mc_config_is_secret("sasl.oauthbearer.assertion.private.key.pem"));
	/* under sasl. and ssl.: JAAS, keys, PEM, credentials */
	cr_expect(k2mc_config_is_secret("sasl.jaas.config"));
	cr_expect(k2mc_config_is_secret("ssl.keystore.location"));
	cr_expect(k2mc_config_is_secret("ssl.certificate.pem"));
	free(out);
	k2mc_config_free(&c);
}

/* What --dump-config prints is a -F file that gives the same configuration. */
Test(cfgfile, dump_reads_back_as_a_config_file)
{
	struct k2mc_config a, b;
	char *out, *out2;

	expect_ok(&a, ARGV("-b", "k1:9092,k2:9092", "-t", "t1", "-t", "^ev\\..*", "-G", "g", "-m",
			   "m1:1,m2:2", "-o", "end", "-e", "-c", "77", "--writers", "7",
			   "--ring-size", "64", "--batch", "9", "--commit-interval-ms", "11", "--ttl",
			   "13", "--key-prefix", "p:", "--stats-interval-ms", "0",
			   "--shutdown-timeout-ms", "17", "--on-invalid", "dlq", "--dlq-topic", "dead",
			   "--max-value-bytes", "1000", "--max-buffer-bytes", "3m", "--mc-eject",
			   "--metrics-addr", "[::1]:9100",
			   "--stats-json", "-", "-v", "-X", "acks=all"));
	out = dump(&a);
	expect_ok(&b, ARGV("-F", (char *)config_file(out)));
	out2 = dump(&b);
	cr_expect_str_eq(out2, out, "dump of the dump differs");
	cr_expect_eq(b.max_records, 77);
	cr_expect_eq(b.max_buffer_bytes, 3u << 20);
	cr_expect_not_null(strstr(out, "\nmax-buffer-bytes=3145728\n"), "%s", out);
	cr_expect_eq(b.on_invalid, K2MC_INVALID_DLQ);
	cr_expect_eq(b.mc_eject, 1);
	cr_expect_eq(b.verbosity, 2);
	cr_expect_eq(b.offset_beginning, 0);
	cr_expect_str_eq(b.metrics_host, "::1");
	cr_expect_str_eq(b.topics[1], "^ev\\..*");
	free(out);
	free(out2);
	k2mc_config_free(&a);
	k2mc_config_free(&b);
}

/* A NUL would end a line early and silently drop the rest of it. */
Test(cfgfile, nul_bytes_are_refused_with_file_and_line)
{
	static const char text[] = "brokers=k:1\ntopic=t\nwri\0ters=4\n";
	static const char utf16[] = "b\0r\0o\0k\0e\0r\0s\0=\0k\0:\0001\0\n\0";
	const char *path = config_file_n(text, sizeof(text) - 1);
	char where[96];

	snprintf(where, sizeof(where), "-F %s:3:", path);
	expect_usage(ARGV("-F", (char *)path), where, "NUL");
	path = config_file_n(utf16, sizeof(utf16) - 1);
	expect_usage(ARGV("-F", (char *)path, "-t", "t"), ":1:", "UTF-16");
	/* even in a comment, and even when the command line has everything */
	path = config_file_n("# x\0y\n", 6);
	expect_usage(ARGV("-F", (char *)path, "-b", "k:1", "-t", "t"), ":1:", "NUL");
}

/* What Windows editors put at the start of a UTF-8 file. */
Test(cfgfile, a_utf8_bom_is_skipped)
{
	struct k2mc_config c;
	const char *path = config_file("\xef\xbb\xbf"
				       "brokers=k:1\ntopic=t\nwriters=3\n");

	expect_ok(&c, ARGV("-F", (char *)path));
	cr_expect_str_eq(c.brokers, "k:1");
	cr_expect_eq(c.writers, 3);
	k2mc_config_free(&c);
	/* a BOM-only file is an empty file */
	path = config_file("\xef\xbb\xbf");
	expect_ok(&c, ARGV("-F", (char *)path, "-b", "k:1", "-t", "t"));
	k2mc_config_free(&c);
	/* only at the start: elsewhere it is part of a key, as before (one that
	 * is not k2mc's, so librdkafka's, which refuses it) */
	path = config_file("brokers=k:1\ntopic=t\n\xef\xbb\xbf"
			   "acks=1\n");
	expect_usage(ARGV("-F", (char *)path), ":3: \xef\xbb\xbf"
					       "acks=1",
		     "No such configuration property");
}

/* The -X checks see properties from the file too, in whatever order the
 * flags come, and judge the value librdkafka ends up with (the command
 * line's, which comes last). */
Test(cfgfile, guarantee_breaking_properties_from_the_file)
{
	struct k2mc_config c;
	const char *path;
	char where[96];

	path = config_file("brokers=k:1\ntopic=t\nenable.auto.commit=true\n");
	snprintf(where, sizeof(where), "-F %s:3: enable.auto.commit=true", path);
	expect_usage(ARGV("-F", (char *)path), where, "acknowledged");
	expect_usage(ARGV("-X", "acks=all", "-F", (char *)path), where, NULL);
	/* the command line has the last word */
	expect_ok(&c, ARGV("-F", (char *)path, "-X", "enable.auto.commit=false"));
	k2mc_config_free(&c);
	expect_ok(&c, ARGV("-X", "enable.auto.commit=false", "-F", (char *)path));
	k2mc_config_free(&c);
	path = config_file("brokers=k:1\ntopic=t\nenable.auto.commit=false\n");
	expect_usage(ARGV("-X", "enable.auto.commit=1", "-F", (char *)path),
		     "-X enable.auto.commit=1", "acknowledged");

	path = config_file("brokers=k:1\ntopic=t\n\nenable.auto.offset.store = t\n");
	expect_usage(ARGV("-F", (char *)path), ":4: enable.auto.offset.store=t", "acknowledged");

	path = config_file("brokers=k:1\ntopic=t\ngroup.id=other\n");
	expect_usage(ARGV("-F", (char *)path, "-G", "g"), ":3: group.id=other", "-G");

	/* -e from one source, enable.partition.eof=false from the other */
	path = config_file("brokers=k:1\ntopic=t\nenable.partition.eof=false\n");
	expect_usage(ARGV("-e", "-F", (char *)path), ":3: enable.partition.eof=false", "-e");
	path = config_file("brokers=k:1\ntopic=t\nexit=true\n");
	expect_usage(ARGV("-F", (char *)path, "-X", "enable.partition.eof=false"),
		     "-X enable.partition.eof=false", "-e");

	path = config_file("brokers=k:1\ntopic=t\npartition.assignment.strategy=cooperative-sticky\n");
	if (rd_kafka_version() < 0x020300ff) {
		expect_usage(ARGV("-F", (char *)path), ":3: partition.assignment.strategy", "4312");
		expect_ok(&c, ARGV("-F", (char *)path, "-X", "partition.assignment.strategy=range"));
		k2mc_config_free(&c);
	}

	/* fencing, with the timing from the file */
	path = config_file("brokers=k:1\ntopic=t\nsession.timeout.ms=3000\n");
	expect_usage(ARGV("-F", (char *)path), "session.timeout.ms 3000", "1000 ms");
	expect_ok(&c, ARGV("-F", (char *)path, "-X", "heartbeat.interval.ms=500",
			   "--commit-interval-ms", "200"));
	cr_expect_eq(k2mc_config_lease_ms(&c), 2000);
	k2mc_config_free(&c);
}

Test(cfgfile, ttl_dlq_and_buffer_settings_from_the_file)
{
	struct k2mc_config c;
	const char *path;

	path = config_file("brokers=k:1\ntopic=t\nttl=3000000\n");
	expect_usage(ARGV("-F", (char *)path), ":3: --ttl", "expired");
	path = config_file("brokers=k:1\ntopic=orders\non-invalid=dlq\ndlq-topic=orders\n");
	expect_usage(ARGV("-F", (char *)path), "--dlq-topic orders", "forever");
	expect_ok(&c, ARGV("-F", (char *)path, "-t", "^ord.*x$"));
	k2mc_config_free(&c);
	expect_usage(ARGV("-F", (char *)path, "-t", "^ord"), "--dlq-topic orders", "^ord");
	path = config_file("brokers=k:1\ntopic=t\nmax-buffer-bytes=64M\n");
	expect_ok(&c, ARGV("-F", (char *)path));
	cr_expect_eq(c.max_buffer_bytes, 64u << 20);
	k2mc_config_free(&c);
	path = config_file("brokers=k:1\ntopic=t\nmax-buffer-bytes=1k\n");
	expect_usage(ARGV("-F", (char *)path), ":3: --max-buffer-bytes", "at least 1m");
}

/* ---- issues 9-13: the new settings as -F lines, in --dump-config ------------------ */

static char tls_paths[3][64];

static void tls_files(void)
{
	static const char *const pem[] = { "-----BEGIN CERTIFICATE-----\n",
					   "-----BEGIN CERTIFICATE-----\n",
					   "-----BEGIN ENCRYPTED PRIVATE KEY-----\n" };

	for (int i = 0; i < 3; i++) {
		int fd;

		snprintf(tls_paths[i], sizeof(tls_paths[i]), "/tmp/k2mc-pem.XXXXXX");
		fd = mkstemp(tls_paths[i]);
		cr_assert_geq(fd, 0);
		cr_assert_eq(write(fd, pem[i], strlen(pem[i])), (ssize_t)strlen(pem[i]));
		close(fd);
	}
}

static void tls_files_remove(void)
{
	for (int i = 0; i < 3; i++)
		if (tls_paths[i][0] != '\0')
			unlink(tls_paths[i]);
	remove_file();
}

Test(cfgfile, new_settings_from_the_file, .init = tls_files, .fini = tls_files_remove)
{
	struct k2mc_config c;
	char text[2048];
	const char *path;

	snprintf(text, sizeof(text),
		 "brokers=k:1\ntopic=t\n"
		 "memcached=a:11211:2,[::1]:11212,/run/mc.sock,unix:/tmp/w.sock:3\n"
		 "distribution=libketama\n"
		 "mc-protocol=meta\n"
		 "mc-tls=true\n"
		 "mc-tls-ca=%s\nmc-tls-cert=%s\nmc-tls-key=%s\n"
		 "mc-tls-key-password=hunter2 with spaces\n"
		 "mc-tls-server-name=cache.internal\n"
		 "mc-tls-insecure=yes\n"
		 "key=user:{json:/id}\n"
		 "value={json:/profile}\n"
		 "ttl=600\nttl-header=x-ttl\nttl-from-timestamp=on\n"
		 "flags=123\nflags-header=x-flags\n"
		 "on-tombstone=invalidate:45\n"
		 "log-format=json\n"
		 "check-config=true\n"
		 "refill=1\nrefill-from=24h\nrefill-rate=5000\n",
		 tls_paths[0], tls_paths[1], tls_paths[2]);
	path = config_file(text);
	cr_assert_eq(chmod(path, 0600), 0);
	expect_ok(&c, ARGV("-F", (char *)path));
	cr_assert_eq(c.nservers, 4);
	cr_expect_eq(c.servers[0].weight, 2);
	cr_expect_str_eq(c.servers[1].host, "::1");
	cr_expect_eq(c.servers[2].is_unix, 1);
	cr_expect_str_eq(c.servers[3].host, "/tmp/w.sock");
	cr_expect_eq(c.servers[3].weight, 3);
	cr_expect_eq(c.distribution, K2MC_DIST_LIBKETAMA);
	cr_expect_eq(c.mc_protocol, K2MC_PROTO_META);
	cr_expect_eq(c.mc_tls, 1);
	cr_expect_str_eq(c.mc_tls_ca, tls_paths[0]);
	cr_expect_str_eq(c.mc_tls_cert, tls_paths[1]);
	cr_expect_str_eq(c.mc_tls_key, tls_paths[2]);
	cr_expect_str_eq(c.mc_tls_key_password, "hunter2 with spaces");
	cr_expect_str_eq(c.mc_tls_server_name, "cache.internal");
	cr_expect_eq(c.mc_tls_insecure, 1);
	cr_expect_str_eq(c.key_template, "user:{json:/id}");
	cr_expect_str_eq(c.value_template, "{json:/profile}");
	cr_expect_str_eq(c.ttl_header, "x-ttl");
	cr_expect_eq(c.ttl_from_timestamp, 1);
	cr_expect_eq(c.flags, 123);
	cr_expect_str_eq(c.flags_header, "x-flags");
	cr_expect_eq(c.on_tombstone, K2MC_TOMB_INVALIDATE);
	cr_expect_eq(c.invalidate_grace_s, 45);
	cr_expect_eq(c.log_format, K2MC_LOG_JSON);
	cr_expect_eq(c.check_config, 1);
	cr_expect_eq(c.refill, 1);
	cr_expect_eq(c.refill_from_earliest, 0);
	cr_expect_eq(c.refill_from_ms, 86400000);
	cr_expect_eq(c.refill_rate, 5000);
	cr_expect_eq(c.nxprops, 0, "none of them is a librdkafka property");
	k2mc_config_free(&c);

	/* flags set false in the file */
	path = config_file("brokers=k:1\ntopic=t\nmc-tls=false\nmc-tls-insecure=no\n"
			   "ttl-from-timestamp=off\nrefill=0\ncheck-config=false\n");
	expect_ok(&c, ARGV("-F", (char *)path));
	cr_expect_eq(c.mc_tls, 0);
	cr_expect_eq(c.mc_tls_insecure, 0);
	cr_expect_eq(c.ttl_from_timestamp, 0);
	cr_expect_eq(c.refill, 0);
	cr_expect_eq(c.check_config, 0);
	k2mc_config_free(&c);
}

/* Errors in the file name its line; checks across settings see every source. */
Test(cfgfile, bad_new_settings_in_the_file)
{
	struct k2mc_config c;
	const char *path;

	path = config_file("brokers=k:1\ntopic=t\ndistribution=consistent\n");
	expect_usage(ARGV("-F", (char *)path), ":3: --distribution", "consistent");
	path = config_file("brokers=k:1\ntopic=t\n\non-tombstone=invalidate\n");
	expect_usage(ARGV("-F", (char *)path), ":4: --on-tombstone", "invalidate:SECONDS");
	path = config_file("brokers=k:1\ntopic=t\nrefill-from=yesterday\n");
	expect_usage(ARGV("-F", (char *)path), ":3: --refill-from", "yesterday");
	path = config_file("brokers=k:1\ntopic=t\nflags=-1\n");
	expect_usage(ARGV("-F", (char *)path), ":3: --flags", NULL);
	path = config_file("brokers=k:1\ntopic=t\nmc-tls=maybe\n");
	expect_usage(ARGV("-F", (char *)path), ":3:", "mc-tls: expected true or false");
	path = config_file("brokers=k:1\ntopic=t\nmemcached=a:1:4\n");
	expect_usage(ARGV("-F", (char *)path), "weight 4", "libketama");
	expect_ok(&c, ARGV("-F", (char *)path, "--distribution", "dalli"));
	k2mc_config_free(&c);
	/* the file turns TLS on, the command line adds a CA that is not there */
	path = config_file("brokers=k:1\ntopic=t\nmc-tls=true\n");
	expect_usage(ARGV("-F", (char *)path, "--mc-tls-ca", "/nonexistent/ca.pem"),
		     "--mc-tls-ca /nonexistent/ca.pem", "No such file");
	path = config_file("brokers=k:1\ntopic=t\nmc-tls-server-name=x\n");
	expect_usage(ARGV("-F", (char *)path), "--mc-tls-server-name needs --mc-tls", NULL);
	expect_ok(&c, ARGV("-F", (char *)path, "--mc-tls"));
	k2mc_config_free(&c);
	path = config_file("brokers=k:1\ntopic=t\non-tombstone=invalidate:10\n");
	expect_usage(ARGV("-F", (char *)path, "--mc-protocol", "text"), "invalidate:10",
		     "meta protocol");
	path = config_file("brokers=k:1\ntopic=t\nrefill-rate=10\n");
	expect_usage(ARGV("-F", (char *)path), "--refill-rate needs --refill", NULL);
	expect_ok(&c, ARGV("-F", (char *)path, "--refill"));
	k2mc_config_free(&c);
	/* a past absolute --ttl in the file: still named by its line, unless
	 * --ttl-from-timestamp makes it a duration */
	path = config_file("brokers=k:1\ntopic=t\nttl=7776000\n");
	expect_usage(ARGV("-F", (char *)path), ":3: --ttl", "expired");
	/* even when the command line overrides it */
	expect_usage(ARGV("-F", (char *)path, "--ttl", "60"), ":3: --ttl", "expired");
	expect_ok(&c, ARGV("-F", (char *)path, "--ttl-from-timestamp"));
	cr_expect_eq(c.ttl, 7776000);
	k2mc_config_free(&c);
	/* abbreviations are not keys of a file either: a librdkafka property,
	 * which librdkafka refuses by name, with the file's line */
	path = config_file("brokers=k:1\ntopic=t\nkey-p=x\n");
	expect_usage(ARGV("-F", (char *)path), ":3: key-p=x", "No such configuration property");
}

/* Every new setting survives --dump-config and -F; the key password is
 * masked (so the read-back has the mask as its password). */
Test(cfgfile, new_settings_dump_and_read_back, .init = tls_files, .fini = tls_files_remove)
{
	struct k2mc_config a, b;
	char *out, *out2;

	expect_ok(&a, ARGV("-b", "k:1", "-t", "t", "-m",
			   "a:11211:2,[::1]:11212,/run/mc.sock,unix:/tmp/w.sock:3,unix:/tmp/odd:7:1",
			   "--distribution", "dalli", "--mc-protocol", "meta", "--mc-tls",
			   "--mc-tls-ca", tls_paths[0], "--mc-tls-cert", tls_paths[1],
			   "--mc-tls-key", tls_paths[2], "--mc-tls-key-password", "s3cr3t-pw",
			   "--mc-tls-server-name", "cache.internal", "--key", "user:{json:/id}",
			   "--value", "{\"p\": {json:/profile}}", "--ttl", "7776000",
			   "--ttl-from-timestamp", "--ttl-header", "x-ttl", "--flags", "4294967295",
			   "--flags-header", "x-flags", "--on-tombstone", "invalidate:45",
			   "--log-format", "json", "--refill", "--refill-from", "90m",
			   "--refill-rate", "250", "--check-config"));
	out = dump(&a);
	cr_expect_null(strstr(out, "s3cr3t"), "the key password is printed:\n%s", out);
	cr_expect_not_null(strstr(out, "\nmc-tls-key-password=********\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nmemcached=a:11211:2,[::1]:11212,unix:/run/mc.sock,"
				       "unix:/tmp/w.sock:3,unix:/tmp/odd:7:1\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "\ndistribution=dalli\nmc-protocol=meta\nmc-tls=true\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "\nmc-tls-insecure=false\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nkey=user:{json:/id}\nvalue={\"p\": {json:/profile}}\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "\nttl=7776000\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nttl-from-timestamp=true\nflags=4294967295\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\non-tombstone=invalidate:45\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\nrefill=true\nrefill-from=90m\nrefill-rate=250\n"), "%s",
			   out);
	cr_expect_not_null(strstr(out, "\nlog-format=json\n"), "%s", out);
	cr_expect_null(strstr(out, "check-config"), "an action, not a setting:\n%s", out);
	expect_ok(&b, ARGV("-F", (char *)config_file(out)));
	out2 = dump(&b);
	cr_expect_str_eq(out2, out, "dump of the dump differs");
	cr_expect_eq(b.nservers, 5);
	cr_expect_str_eq(b.servers[4].host, "/tmp/odd:7");
	cr_expect_eq(b.servers[4].weight, 1);
	cr_expect_eq(b.servers[3].weight, 3);
	cr_expect_eq(b.distribution, K2MC_DIST_DALLI);
	cr_expect_eq(b.refill_from_ms, 90 * 60000);
	cr_expect_eq(b.invalidate_grace_s, 45);
	cr_expect_eq(b.flags, 4294967295u);
	cr_expect_str_eq(b.mc_tls_key_password, "********", "masked, so not the password");
	free(out);
	free(out2);
	k2mc_config_free(&a);
	k2mc_config_free(&b);

	/* defaults: the settings that depend on TLS and refill stay out */
	expect_ok(&a, ARGV("-b", "k:1", "-t", "t"));
	out = dump(&a);
	cr_expect_not_null(strstr(out, "\nmemcached=127.0.0.1:11211\n"), "%s", out);
	cr_expect_not_null(strstr(out, "\ndistribution=ketama\nmc-protocol=auto\nmc-tls=false\n"
				       "key={key}\nvalue={value}\nttl-from-timestamp=false\nflags=0\n"
				       "on-tombstone=delete\nrefill=false\nlog-format=text\n"),
			   "%s", out);
	cr_expect_null(strstr(out, "mc-tls-"), "%s", out);
	cr_expect_null(strstr(out, "refill-"), "%s", out);
	expect_ok(&b, ARGV("-F", (char *)config_file(out)));
	out2 = dump(&b);
	cr_expect_str_eq(out2, out);
	free(out);
	free(out2);
	k2mc_config_free(&a);
	k2mc_config_free(&b);

	/* refill durations print in the largest exact unit */
	{
		static const char *const in[] = { "7d", "48h", "90s", "3600s", "1440m" };
		static const char *const want[] = { "7d", "2d", "90s", "1h", "1d" };

		for (size_t i = 0; i < 5; i++) {
			char line[64];

			expect_ok(&a, ARGV("-b", "k:1", "-t", "t", "--refill", "--refill-from",
					   (char *)in[i]));
			out = dump(&a);
			snprintf(line, sizeof(line), "\nrefill-from=%s\n", want[i]);
			cr_expect_not_null(strstr(out, line), "%s: %s", in[i], out);
			free(out);
			k2mc_config_free(&a);
		}
	}
	cr_expect(k2mc_config_is_secret("mc-tls-key-password"));
	cr_expect(!k2mc_config_is_secret("mc-tls-key"));
}

/* What stderr got, NUL-terminated, in buf. */
static const char *stderr_text(char *buf, size_t len)
{
	size_t n;

	fflush(stderr);
	n = fread(buf, 1, len - 1, cr_get_redirected_stderr());
	buf[n] = '\0';
	return buf;
}

/* As ssh does: a file with secrets that others may read gets a warning. */
Test(cfgfile, secrets_in_a_file_others_can_read_are_warned_about, .init = cr_redirect_stderr)
{
	struct k2mc_config c;
	const char *path;
	char want[512], got[2048], text[1024];

	tls_files();
	snprintf(text, sizeof(text),
		 "brokers=k:1\ntopic=t\nsasl.password=pw\nmc-tls=true\nmc-tls-cert=%s\n"
		 "mc-tls-key=%s\nmc-tls-key-password=kp\nsasl.password=again\nacks=1\n",
		 tls_paths[1], tls_paths[2]);
	path = config_file(text);
	cr_assert_eq(chmod(path, 0644), 0);
	expect_ok(&c, ARGV("-F", (char *)path));
	k2mc_config_free(&c);
	snprintf(want, sizeof(want),
		 "k2mc: warning: -F %s holds secrets (sasl.password, mc-tls-key-password) and is "
		 "readable by group/others (mode 0644); chmod 600 it\n",
		 path);
	cr_expect_str_eq(stderr_text(got, sizeof(got)), want, "once, each secret named once");

	/* 0600, 0400: quiet */
	cr_assert_eq(chmod(path, 0600), 0);
	expect_ok(&c, ARGV("-F", (char *)path));
	k2mc_config_free(&c);
	cr_assert_eq(chmod(path, 0400), 0);
	expect_ok(&c, ARGV("-F", (char *)path));
	k2mc_config_free(&c);
	cr_expect_str_eq(stderr_text(got, sizeof(got)), "");

	/* group access alone is enough; a secret given as -X instead is not the file's */
	path = config_file("brokers=k:1\ntopic=t\nssl.key.pem=---\n");
	cr_assert_eq(chmod(path, 0640), 0);
	expect_ok(&c, ARGV("-F", (char *)path, "-X", "sasl.password=x"));
	k2mc_config_free(&c);
	cr_expect_not_null(strstr(stderr_text(got, sizeof(got)), "holds secrets (ssl.key.pem) and "
					"is readable by group/others (mode 0640)"),
			   "%s", got);

	/* no secrets: no warning, whatever the mode */
	path = config_file("brokers=k:1\ntopic=t\nsasl.mechanisms=PLAIN\n");
	cr_assert_eq(chmod(path, 0666), 0);
	expect_ok(&c, ARGV("-F", (char *)path));
	k2mc_config_free(&c);
	/* a refused configuration gets its error, not the warning */
	path = config_file("brokers=k:1\ntopic=t\nsasl.password=pw\nwriters=0\n");
	cr_assert_eq(chmod(path, 0644), 0);
	expect_usage(ARGV("-F", (char *)path), "--writers", NULL);
	cr_expect_str_eq(stderr_text(got, sizeof(got)), "");
	tls_files_remove();
}

/* Issue 23, item 5: an unknown key of a -F file is a librdkafka property
 * librdkafka does not have. The start stopped at it (exit 2) when it built
 * the consumer, while --check-config said OK; now the parse refuses it, with
 * the file's line, for both. A JAAS configuration (Java's; librdkafka has
 * none) is refused the same way, its password not shown. */
Test(cfgfile, unknown_keys_of_a_file_are_refused_with_the_line)
{
	struct k2mc_config c;
	const char *path;

	path = config_file("brokers=k:1\ntopic=t\nbogus.key=1\n");
	expect_usage(ARGV("-F", (char *)path), ":3: bogus.key=1", "No such configuration property");
	expect_usage(ARGV("-F", (char *)path, "--check-config"), ":3: bogus.key=1",
		     "No such configuration property");
	/* a value librdkafka cannot read, from the file */
	path = config_file("brokers=k:1\ntopic=t\n\nfetch.wait.max.ms=soon\n");
	expect_usage(ARGV("-F", (char *)path, "--check-config"), ":4: fetch.wait.max.ms=soon",
		     NULL);
	path = config_file("brokers=k:1\ntopic=t\nsasl.jaas.config=org.apache.kafka.common.security"
			   ".plain.PlainLoginModule required username=\"u\" password=\"s3cret\";\n");
	{
		char err[512];
		enum k2mc_config_result r = parse(&c, ARGV("-F", (char *)path, "--dump-config"), err,
						  sizeof(err));

		cr_expect_eq(r, K2MC_CONFIG_USAGE, "%s", err);
		cr_expect_not_null(strstr(err, ":3: sasl.jaas.config=********"), "%s", err);
		cr_expect_null(strstr(err, "s3cret"), "the password is shown: %s", err);
		k2mc_config_free(&c);
	}
	/* a known property from the file is fine */
	path = config_file("brokers=k:1\ntopic=t\nclient.rack=r1\n");
	expect_ok(&c, ARGV("-F", (char *)path, "--check-config"));
	k2mc_config_free(&c);
}

/* ---- issue 24: the option table, its dump and its documentation ----------------- */

/* A value other than the default for every row --dump-config prints, and what
 * it needs to be taken. A row without a sample fails the test below: a new
 * option comes with its own. */
static const struct {
	const char *name, *value; /* value NULL: a flag */
	const char *needs[6];     /* more arguments for the command line */
} samples[] = {
	{ "brokers", "k9:1", { NULL } },
	{ "topic", "tt", { NULL } },
	{ "group", "gg", { NULL } },
	{ "offset", "end", { NULL } },
	{ "exit", NULL, { NULL } },
	{ "count", "5", { NULL } },
	{ "memcached", "m1:1,unix:/run/m.sock:2,[::1]:3", { "--distribution", "libketama" } },
	{ "distribution", "dalli", { NULL } },
	{ "mc-protocol", "meta", { NULL } },
	{ "max-value-bytes", "1000", { NULL } },
	{ "mc-eject", NULL, { NULL } },
	{ "mc-tls", NULL, { NULL } },
	{ "mc-tls-ca", "/etc/passwd", { "--mc-tls" } },
	/* one without the other is refused: the sample replaces a first one */
	{ "mc-tls-cert", "/etc/group",
	  { "--mc-tls", "--mc-tls-key", "/etc/passwd", "--mc-tls-cert", "/etc/passwd" } },
	{ "mc-tls-key", "/etc/group",
	  { "--mc-tls", "--mc-tls-cert", "/etc/passwd", "--mc-tls-key", "/etc/passwd" } },
	{ "mc-tls-key-password", "pw",
	  { "--mc-tls", "--mc-tls-cert", "/etc/passwd", "--mc-tls-key", "/etc/passwd" } },
	{ "mc-tls-server-name", "sni.example", { "--mc-tls" } },
	{ "mc-tls-insecure", NULL, { "--mc-tls" } },
	{ "key", "k:{key}", { NULL } },
	{ "key-prefix", "p:", { NULL } },
	{ "value", "{topic}", { NULL } },
	{ "ttl", "60", { NULL } },
	{ "ttl-header", "T", { NULL } },
	{ "ttl-from-timestamp", NULL, { "--ttl", "60" } },
	{ "flags", "7", { NULL } },
	{ "flags-header", "F", { NULL } },
	{ "on-tombstone", "invalidate:30", { NULL } },
	{ "key-format", "json", { NULL } },
	{ "value-format", "avro", { NULL } },
	{ "cdc", "debezium", { NULL } },
	{ "schema-registry", "http://127.0.0.1:1", { "--value-format", "avro" } },
	{ "schema-registry-property", "request.timeout.ms=500",
	  { "--value-format", "avro", "--schema-registry", "http://127.0.0.1:1" } },
	{ "on-invalid", "hash", { NULL } },
	{ "dlq-topic", "dead", { NULL } },
	{ "refill", NULL, { NULL } },
	{ "refill-from", "15m", { "--refill" } },
	{ "refill-rate", "100", { "--refill" } },
	{ "refill-ready", "no", { "--refill" } },
	{ "writers", "3", { NULL } },
	{ "ring-size", "64", { NULL } },
	{ "max-buffer-bytes", "2m", { NULL } },
	{ "batch", "9", { NULL } },
	{ "commit-interval-ms", "100", { NULL } },
	{ "shutdown-timeout-ms", "5", { NULL } },
	{ "stats-interval-ms", "0", { NULL } },
	{ "stats-json", "-", { NULL } },
	{ "metrics-addr", "[::1]:9100", { NULL } },
	{ "log-format", "json", { NULL } },
	{ "verbose", NULL, { NULL } },
	{ "quiet", NULL, { NULL } },
};

/* The command line -b k -t t, then the sample's needs, then (if opt is not
 * NULL) --NAME [VALUE]; parsed into c, which must succeed. */
static void parse_sample(struct k2mc_config *c, size_t s, int with_option)
{
	char *argv[24] = { "k2mc", "-b", "k", "-t", "t" }, opt[64], err[512];
	int argc = 5;

	for (int i = 0; i < 6 && samples[s].needs[i] != NULL; i++)
		argv[argc++] = (char *)samples[s].needs[i];
	if (with_option) {
		snprintf(opt, sizeof(opt), "--%s", samples[s].name);
		argv[argc++] = opt;
		if (samples[s].value != NULL)
			argv[argc++] = (char *)samples[s].value;
	}
	argv[argc] = NULL;
	cr_assert_eq(parse(c, argv, err, sizeof(err)), K2MC_CONFIG_OK, "--%s %s: %s",
		     samples[s].name, samples[s].value ? samples[s].value : "", err);
}

/* Every row --dump-config prints: its sample changes the dump, and the dump
 * read back with -F gives the same dump. */
Test(cfgfile, every_option_round_trips_through_dump_and_file)
{
	struct k2mc_config_option o;
	size_t rows = 0;

	for (size_t i = 0; k2mc_config_option(i, &o) == 0; i++) {
		struct k2mc_config base, with, back;
		char *dbase, *dwith, *dback;
		size_t s = 0;

		rows++;
		if (!o.dumped)
			continue;
		if (o.name == NULL) /* -X: dump_reads_back_as_a_config_file */
			continue;
		while (s < sizeof(samples) / sizeof(samples[0]) && strcmp(samples[s].name, o.name) != 0)
			s++;
		cr_assert_lt(s, sizeof(samples) / sizeof(samples[0]),
			     "--%s has no sample value in this test", o.name);
		cr_assert_eq(samples[s].value == NULL, !o.takes_value, "--%s: sample and row disagree",
			     o.name);
		parse_sample(&base, s, 0);
		parse_sample(&with, s, 1);
		dbase = dump(&base);
		dwith = dump(&with);
		cr_expect_str_neq(dwith, dbase, "--%s %s does not show in --dump-config", o.name,
				  samples[s].value ? samples[s].value : "");
		expect_ok(&back, ARGV("-F", (char *)config_file(dwith)));
		dback = dump(&back);
		cr_expect_str_eq(dback, dwith, "--%s: the dump read back with -F differs", o.name);
		free(dbase);
		free(dwith);
		free(dback);
		k2mc_config_free(&base);
		k2mc_config_free(&with);
		k2mc_config_free(&back);
	}
	cr_expect_gt(rows, 40);
}

/* Every row's default is taken by its own parser, and is what the dump of
 * an otherwise empty configuration shows. */
Test(cfgfile, every_default_is_a_valid_value_and_dumped_as_such)
{
	struct k2mc_config c;
	struct k2mc_config_option o;
	char *out, line[300];

	expect_ok(&c, ARGV("-b", "k", "-t", "t"));
	out = dump(&c);
	for (size_t i = 0; k2mc_config_option(i, &o) == 0; i++) {
		if (o.dflt == NULL || !o.dumped || o.name == NULL)
			continue;
		snprintf(line, sizeof(line), "\n%s=", o.name);
		if (strstr(out, line) == NULL)
			continue; /* printed only with another flag (refill-from) */
		/* the dump writes numbers out in full: 16m is 16777216 */
		if (strcmp(o.name, "max-buffer-bytes") == 0)
			continue;
		snprintf(line, sizeof(line), "\n%s=%s\n", o.name, o.dflt);
		cr_expect_not_null(strstr(out, line), "default of --%s: expected '%s' in\n%s", o.name,
				   line + 1, out);
	}
	free(out);
	k2mc_config_free(&c);
}

/* The whole text of a file of the tree (the suite runs from its top). */
static char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	int ch;

	cr_assert_not_null(f, "%s: cannot open (run the suite from the top of the tree)", path);
	cr_assert_not_null(m);
	while ((ch = fgetc(f)) != EOF)
		fputc(ch, m);
	fclose(f);
	fclose(m);
	return text;
}

/* s with the man page's escapes and fonts gone and no blanks or quotes:
 * `.BR \-b ", " \-\-brokers " \fIBROKERS\fR"` -> "-b,--brokersBROKERS". */
static void man_squeeze(const char *s, char *out, size_t len)
{
	size_t n = 0;

	while (*s != '\0' && *s != ' ') /* the macro */
		s++;
	for (; *s != '\0' && *s != '\n' && n + 1 < len; s++) {
		if (s[0] == '\\' && s[1] == '-') {
			out[n++] = '-';
			s++;
		} else if (s[0] == '\\' && s[1] == 'f' && s[2] != '\0') {
			s += 2;
		} else if (*s != ' ' && *s != '"') {
			out[n++] = *s;
		}
	}
	out[n] = '\0';
}

/* The option as --help names it, without blanks: "-b,--brokersBROKERS". */
static void row_squeeze(const struct k2mc_config_option *o, char *out, size_t len)
{
	size_t n = 0;

	if (o->letter)
		n += (size_t)snprintf(out + n, len - n, "-%c%s", o->letter, o->name ? "," : "");
	if (o->name)
		n += (size_t)snprintf(out + n, len - n, "--%s", o->name);
	snprintf(out + n, len - n, "%s", o->arg ? o->arg : "");
}

/* k2mc.1's OPTIONS: one .TP entry per row, naming it as --help does, under
 * the .SS of the row's --help section; no entry for an option k2mc lacks. */
Test(cfgfile, the_man_page_lists_every_option_as_the_table_has_it)
{
	char *man = read_text("k2mc.1"), *p, *end;
	char section[128] = "", head[256], want[256];
	struct k2mc_config_option o;
	size_t nrows = 0;
	int found[64] = { 0 };

	p = strstr(man, "\n.SH OPTIONS\n");
	cr_assert_not_null(p, "k2mc.1 has no OPTIONS section");
	end = strstr(p + 1, "\n.SH ");
	cr_assert_not_null(end);
	while (k2mc_config_option(nrows, &o) == 0)
		nrows++;
	cr_assert_leq(nrows, 64);
	for (; p != NULL && p < end; p = strchr(p + 1, '\n')) {
		int matched = 0;

		if (strncmp(p, "\n.SS ", 5) == 0) {
			snprintf(section, sizeof(section), "%.*s", (int)strcspn(p + 5, "\n"), p + 5);
			continue;
		}
		if (strncmp(p, "\n.TP\n", 5) != 0)
			continue;
		man_squeeze(p + 5, head, sizeof(head));
		if (head[0] != '-')
			continue; /* a list inside an entry (-m's forms, --distribution's names) */
		for (size_t i = 0; i < nrows; i++) {
			size_t wl;

			k2mc_config_option(i, &o);
			row_squeeze(&o, want, sizeof(want));
			wl = strlen(want);
			/* -v, --verbose, -q, --quiet share an entry */
			if (strcmp(head, want) != 0 &&
			    !(strncmp(head, want, wl) == 0 && head[wl] == ',') &&
			    !(strlen(head) > wl && head[strlen(head) - wl - 1] == ',' &&
			      strcmp(head + strlen(head) - wl, want) == 0))
				continue;
			matched = 1;
			found[i]++;
			cr_expect_eq(strncmp(o.section, section, strlen(section)), 0,
				     "k2mc.1: %s is under .SS %s; --help has it under %s", head,
				     section, o.section);
		}
		cr_expect(matched, "k2mc.1 has an entry '%s' that no option of the table matches",
			  head);
	}
	for (size_t i = 0; i < nrows; i++) {
		k2mc_config_option(i, &o);
		row_squeeze(&o, want, sizeof(want));
		cr_expect_eq(found[i], 1, "k2mc.1 OPTIONS: %d entries for %s (expected one)",
			     found[i], want);
	}
	free(man);
}

/* 1 if text[0..n) names the option: "--key" in "`--key TEMPLATE`" but not
 * in "`--key-prefix STR`". */
static int names_option(const char *text, size_t n, const char *opt)
{
	size_t ol = strlen(opt);

	for (const char *q = text; q + ol <= text + n; q++) {
		const char *hit = memmem(q, (size_t)(text + n - q), opt, ol);
		char before, after;

		if (hit == NULL)
			return 0;
		before = hit > text ? hit[-1] : ' ';
		after = hit + ol < text + n ? hit[ol] : ' ';
		if ((before == '`' || before == ' ' || before == ',') &&
		    !(after == '-' || (after >= 'a' && after <= 'z') || (after >= '0' && after <= '9')))
			return 1;
		q = hit;
	}
	return 0;
}

/* The length of a markdown cell: up to a '|' that is not written "\|". */
static size_t cell_len(const char *s)
{
	size_t n = 0;

	while (s[n] != '\0' && s[n] != '\n' && !(s[n] == '|' && (n == 0 || s[n - 1] != '\\')))
		n++;
	return n;
}

/* The rows of the markdown table that starts with header, as lines. */
static char *table_after(char *text, const char *header)
{
	char *p = strstr(text, header);

	cr_assert_not_null(p, "no table '%s'", header);
	return strchr(strchr(p, '\n') + 1, '\n') + 1; /* past the --- line */
}

/* docs/running.md's table has a row for every option, whose default column
 * shows the table's default; it, the README's short table and placement's
 * TLS table name no option k2mc lacks. */
Test(cfgfile, the_docs_option_tables_match_the_table)
{
	static const struct {
		const char *file, *header;
	} tables[] = {
		{ "docs/running.md", "| flag | meaning | default |" },
		{ "README.md", "| flag | meaning | default |" },
		{ "docs/placement.md", "| flag | what it does |" },
	};
	const char *files[] = { tables[0].file, tables[1].file, tables[2].file };

	for (size_t f = 0; f < sizeof(tables) / sizeof(tables[0]); f++) {
		char *text = read_text(files[f]), *rows = table_after(text, tables[f].header);
		struct k2mc_config_option o;
		char opt[64];

		/* each option named in the first column is one of the table's */
		for (char *l = rows; *l == '|'; l = strchr(l, '\n') + 1) {
			size_t cl = cell_len(l + 1);

			for (char *q = l + 1; q < l + 1 + cl; q++) {
				size_t tl;
				int known = 0;

				if (q[0] != '-' || (q[-1] != '`' && q[-1] != ' '))
					continue;
				tl = strspn(q, "-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
				for (size_t i = 0; k2mc_config_option(i, &o) == 0 && !known; i++) {
					if (o.name != NULL)
						snprintf(opt, sizeof(opt), "--%s", o.name);
					known |= o.name != NULL && strlen(opt) == tl &&
						 strncmp(q, opt, tl) == 0;
					known |= o.letter && tl == 2 && q[1] == o.letter;
				}
				cr_expect(known, "%s: '%.*s' is not an option of k2mc", files[f],
					  (int)tl, q);
				q += tl;
			}
		}
		/* running.md: every option, and its default */
		for (size_t i = 0; f == 0 && k2mc_config_option(i, &o) == 0; i++) {
			char *row = NULL;

			if (o.name != NULL)
				snprintf(opt, sizeof(opt), "--%s", o.name);
			else
				snprintf(opt, sizeof(opt), "-%c", o.letter);
			for (char *l = rows; *l == '|' && row == NULL; l = strchr(l, '\n') + 1) {
				size_t cl = cell_len(l + 1);

				if (names_option(l + 1, cl, opt) ||
				    (o.letter && names_option(l + 1, cl, (char[]){ '-', o.letter, 0 })))
					row = l;
			}
			cr_expect_not_null(row, "%s has no row for %s", files[f], opt);
			if (row != NULL && o.dflt != NULL && o.dflt[0] != '\0') {
				size_t ll = strcspn(row, "\n");
				char *last = memrchr(row, '|', ll - 1);
				char want[64];

				snprintf(want, sizeof(want), "`%s`", o.dflt);
				cr_expect(memmem(last, (size_t)(row + ll - last), o.dflt, strlen(o.dflt)) !=
						  NULL,
					  "%s: the default column of %s does not show %s", files[f], opt,
					  want);
			}
		}
		free(text);
	}
}

/* k2mc.1's ENVIRONMENT: one entry per row with a K2MC_ variable, saying
 * which option it stands for, and no other. */
Test(cfgfile, the_man_page_environment_is_the_table_s)
{
	char *man = read_text("k2mc.1"), *p, *end, name[64], want[80];
	struct k2mc_config_option o;
	size_t entries = 0, vars = 0;

	p = strstr(man, "\n.SH ENVIRONMENT\n");
	cr_assert_not_null(p, "k2mc.1 has no ENVIRONMENT section");
	end = strstr(p + 1, "\n.SH ");
	cr_assert_not_null(end);
	*end = '\0';
	for (p = strstr(p, "\n.TP\n.B "); p != NULL; p = strstr(p + 1, "\n.TP\n.B ")) {
		int known = 0;

		snprintf(name, sizeof(name), "%.*s", (int)strcspn(p + 8, "\n"), p + 8);
		entries++;
		for (size_t i = 0; k2mc_config_option(i, &o) == 0; i++) {
			char *next, *body = p + 8 + strlen(name);

			if (o.env == NULL || strcmp(o.env, name) != 0)
				continue;
			known = 1;
			/* the entry names the option: ".BR \-b ." or ".BR \-\-writers ." */
			if (o.letter)
				snprintf(want, sizeof(want), "\\-%c", o.letter);
			else
				snprintf(want, sizeof(want), "\\-\\-%s", o.name);
			next = strstr(body, "\n.TP\n");
			if (next != NULL)
				*next = '\0';
			cr_expect_not_null(strstr(body, want), "k2mc.1 ENVIRONMENT: %s does not name %s",
					   name, want);
			if (next != NULL)
				*next = '\n';
		}
		cr_expect(known, "k2mc.1 ENVIRONMENT: %s is not read by k2mc", name);
	}
	for (size_t i = 0; k2mc_config_option(i, &o) == 0; i++)
		vars += o.env != NULL;
	cr_expect_eq(entries, vars, "k2mc.1 ENVIRONMENT has %zu entries, the table %zu variables",
		     entries, vars);
	free(man);
}

/* Issue 26: the formats, --cdc, the registry and its client's settings:
 * values, the checks between them, secrets masked in the dump and named in
 * the -F warning. */
Test(cfgfile, formats_cdc_and_the_schema_registry, .init = cr_redirect_stderr)
{
	struct k2mc_config c;
	const char *path;
	char *out, got[2048];

	expect_ok(&c, ARGV("-b", "k:1", "-t", "dbz.public.customers", "--cdc", "debezium",
			   "--key-format", "json", "--value-format", "json", "--key",
			   "customers:{keyjson:/id}"));
	cr_expect_eq(c.cdc, K2MC_CDC_DEBEZIUM);
	cr_expect_eq(c.key_format, K2MC_FMT_JSON);
	cr_expect_eq(c.value_format, K2MC_FMT_JSON);
	cr_expect_str_eq(k2mc_cdc_name(c.cdc), "debezium");
	k2mc_config_free(&c);
	expect_ok(&c, ARGV("-b", "k:1", "-t", "t"));
	cr_expect_eq(c.cdc, K2MC_CDC_NONE, "off by default");
	cr_expect_eq(c.key_format, K2MC_FMT_RAW);
	cr_expect_eq(c.value_format, K2MC_FMT_RAW);
	k2mc_config_free(&c);
	expect_usage(ARGV("-b", "k:1", "-t", "t", "--cdc", "maxwell"), "--cdc", "debezium");
	expect_usage(ARGV("-b", "k:1", "-t", "t", "--value-format", "protobuf"), "--value-format",
		     "avro");
	/* a registry nothing reads through, properties with no registry */
	expect_usage(ARGV("-b", "k:1", "-t", "t", "--schema-registry", "http://r"),
		     "--schema-registry", "avro");
	expect_usage(ARGV("-b", "k:1", "-t", "t", "--schema-registry-property", "a=b"),
		     "--schema-registry-property", "--schema-registry");
	expect_usage(ARGV("-b", "k:1", "-t", "t", "--value-format", "avro", "--schema-registry",
			  "http://r", "--schema-registry-property", "novalue"),
		     "--schema-registry-property", "NAME=VALUE");
	expect_usage(ARGV("-b", "k:1", "-t", "t", "--value-format", "avro", "--schema-registry",
			  "http://r", "--refill"),
		     "--refill", "Avro");
	/* secrets masked, each name once with the value that wins */
	expect_ok(&c, ARGV("-b", "k:1", "-t", "t", "--key-format", "avro", "--value-format", "avro",
			   "--schema-registry", "https://r:8081",
			   "--schema-registry-property", "basic.auth.user.info=u:first",
			   "--schema-registry-property", "ssl.key.password=kp-secret",
			   "--schema-registry-property", "request.timeout.ms=500",
			   "--schema-registry-property", "basic.auth.user.info=u:pw-secret"));
	out = dump(&c);
	cr_expect_null(strstr(out, "-secret"), "a secret is printed:\n%s", out);
	cr_expect_null(strstr(out, "first"), "a secret is printed:\n%s", out);
	cr_expect_not_null(strstr(out, "\nschema-registry-property=basic.auth.user.info=********\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "\nschema-registry-property=ssl.key.password=********\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "\nschema-registry-property=request.timeout.ms=500\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "\nschema-registry=https://r:8081\n"), "%s", out);
	cr_expect_eq(c.nsr_props, 4, "all kept, in order: the client applies them so");
	free(out);
	k2mc_config_free(&c);
	/* a -F file holding the user info, readable by others: warned about */
	path = config_file("brokers=k:1\ntopic=t\nvalue-format=avro\nschema-registry=http://r\n"
			   "schema-registry-property=basic.auth.user.info=u:p\n"
			   "schema-registry-property=request.timeout.ms=5\n");
	cr_assert_eq(chmod(path, 0644), 0);
	expect_ok(&c, ARGV("-F", (char *)path));
	k2mc_config_free(&c);
	cr_expect_not_null(strstr(stderr_text(got, sizeof(got)),
				  "holds secrets (schema-registry-property basic.auth.user.info)"),
			   "%s", got);
}
