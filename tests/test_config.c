/* Criterion suite for command-line parsing (core/config.h): defaults, every
 * flag in short and long form, and every usage error, which must come back as
 * K2MC_CONFIG_USAGE with a one-line message naming the flag at fault. It does
 * not start anything. */
#include "core/config.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A NULL-terminated, writable argv (getopt permutes it) starting at "k2mc". */
#define ARGV(...) ((char *[]){ "k2mc", __VA_ARGS__, NULL })

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

/* The command line is refused, with a one-line message that names `flag`. */
static void expect_usage(char **argv, const char *flag)
{
	struct k2mc_config c;
	char err[512];
	enum k2mc_config_result r = parse(&c, argv, err, sizeof(err));

	cr_assert_eq(r, K2MC_CONFIG_USAGE, "expected a usage error naming %s, got %d (%s)", flag, r,
		     err);
	cr_expect_neq(err[0], '\0', "no message");
	cr_expect_null(strchr(err, '\n'), "message is one line: %s", err);
	cr_expect_not_null(strstr(err, flag), "message '%s' does not name %s", err, flag);
}

/* The smallest valid command line plus one flag and its value. */
#define EXPECT_USAGE_WITH(flag, value) \
	expect_usage(ARGV("-b", "127.0.0.1:9092", "-t", "orders", flag, value), flag)

Test(config, defaults)
{
	struct k2mc_config c;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	expect_ok(&c, ARGV("-b", "k1:9092", "-t", "orders"));
	cr_expect_str_eq(c.brokers, "k1:9092");
	cr_expect_eq(c.ntopics, 1);
	cr_expect_str_eq(c.topics[0], "orders");
	cr_expect_str_eq(c.group, "k2mc");
	cr_expect_eq(c.nservers, 1);
	cr_expect_str_eq(c.servers[0].host, "127.0.0.1");
	cr_expect_eq(c.servers[0].port, 11211);
	cr_expect_eq(c.nxprops, 0);
	cr_expect_eq(c.offset_beginning, 1);
	cr_expect_eq(c.exit_at_eof, 0);
	cr_expect_eq(c.writers, cpus < 1 ? 1 : cpus > 64 ? 64 : cpus, "writers = CPUs (%ld)", cpus);
	cr_expect_eq(c.ring_size, 4096);
	cr_expect_eq(c.batch, 512);
	cr_expect_eq(c.commit_interval_ms, 1000);
	cr_expect_eq(c.ttl, 0);
	cr_expect_str_eq(c.key_prefix, "");
	cr_expect_eq(c.key_prefix_len, 0);
	cr_expect_eq(c.stats_interval_ms, 5000);
	cr_expect_eq(c.shutdown_timeout_ms, 30000);
	cr_expect_eq(c.max_buffer_bytes, 256u << 20);
	cr_expect_eq(c.verbosity, 1);
}

Test(config, all_flags_short_and_long)
{
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k1:9092,k2:9092", "-t", "orders", "--topic", "users", "-G", "grp",
			   "-m", "mc1:11211,mc2:11212", "-X", "security.protocol=SASL_SSL", "-X",
			   "sasl.password=a=b", "-o", "end", "-e", "--writers", "8", "--ring-size",
			   "1024", "--batch", "100", "--commit-interval-ms", "250", "--ttl", "3600",
			   "--key-prefix", "app:", "--stats-interval-ms", "0",
			   "--shutdown-timeout-ms", "5000", "-v"));
	cr_expect_str_eq(c.brokers, "k1:9092,k2:9092");
	cr_assert_eq(c.ntopics, 2);
	cr_expect_str_eq(c.topics[0], "orders");
	cr_expect_str_eq(c.topics[1], "users");
	cr_expect_str_eq(c.group, "grp");
	cr_assert_eq(c.nservers, 2);
	cr_expect_str_eq(c.servers[0].host, "mc1");
	cr_expect_eq(c.servers[0].port, 11211);
	cr_expect_str_eq(c.servers[1].host, "mc2");
	cr_expect_eq(c.servers[1].port, 11212);
	cr_assert_eq(c.nxprops, 2);
	cr_expect_str_eq(c.xprops[0], "security.protocol=SASL_SSL");
	cr_expect_str_eq(c.xprops[1], "sasl.password=a=b", "passed on as given");
	cr_expect_eq(c.offset_beginning, 0);
	cr_expect_eq(c.exit_at_eof, 1);
	cr_expect_eq(c.writers, 8);
	cr_expect_eq(c.ring_size, 1024);
	cr_expect_eq(c.batch, 100);
	cr_expect_eq(c.commit_interval_ms, 250);
	cr_expect_eq(c.ttl, 3600);
	cr_expect_str_eq(c.key_prefix, "app:");
	cr_expect_eq(c.key_prefix_len, 4);
	cr_expect_eq(c.stats_interval_ms, 0);
	cr_expect_eq(c.shutdown_timeout_ms, 5000);
	cr_expect_eq(c.verbosity, 2);

	/* Long names of the short flags, --name=value, and the other values. */
	expect_ok(&c, ARGV("--brokers=k3:9092", "--topic=t1", "--group", "g2", "--memcached",
			   "mc3:1", "--offset", "beginning", "--exit", "--quiet", "--writers=256",
			   "--ring-size=16", "--batch=65536"));
	cr_expect_str_eq(c.brokers, "k3:9092");
	cr_expect_str_eq(c.topics[0], "t1");
	cr_expect_str_eq(c.group, "g2");
	cr_expect_str_eq(c.servers[0].host, "mc3");
	cr_expect_eq(c.servers[0].port, 1);
	cr_expect_eq(c.offset_beginning, 1);
	cr_expect_eq(c.exit_at_eof, 1);
	cr_expect_eq(c.verbosity, 0);
	cr_expect_eq(c.writers, 256, "upper bound accepted");
	cr_expect_eq(c.ring_size, 16, "lower bound accepted");
	cr_expect_eq(c.batch, 65536);

	/* Bundled short flags, and the last -m / -o winning. */
	expect_ok(&c, ARGV("-eq", "-bk4:9092", "-tt2", "-m", "a:1", "-m", "b:2", "-o", "end", "-o",
			   "beginning", "--ring-size", "1048576", "--writers", "1", "--batch", "1"));
	cr_expect_eq(c.exit_at_eof, 1);
	cr_expect_eq(c.verbosity, 0);
	cr_expect_str_eq(c.brokers, "k4:9092");
	cr_expect_str_eq(c.topics[0], "t2");
	cr_assert_eq(c.nservers, 1);
	cr_expect_str_eq(c.servers[0].host, "b");
	cr_expect_eq(c.offset_beginning, 1);
	cr_expect_eq(c.ring_size, 1048576);
	cr_expect_eq(c.writers, 1);
	cr_expect_eq(c.batch, 1);
}

Test(config, missing_required_flags)
{
	expect_usage(ARGV("-t", "orders"), "-b");
	expect_usage(ARGV("-b", "", "-t", "orders"), "-b");
	expect_usage(ARGV("-b", "k1:9092"), "-t");
	expect_usage(ARGV("-b", "k1:9092", "-t", ""), "-t");
	expect_usage(ARGV("-b", "k1:9092", "-t", "orders", "-G", ""), "-G");
}

Test(config, flag_without_its_value)
{
	expect_usage(ARGV("-t", "orders", "-b"), "-b");
	expect_usage(ARGV("-b", "k1:9092", "-t", "orders", "--writers"), "--writers");
	expect_usage(ARGV("-b", "k1:9092", "-t", "orders", "-m"), "-m");
}

Test(config, unknown_flags)
{
	expect_usage(ARGV("-b", "k1:9092", "-t", "orders", "--bogus"), "--bogus");
	expect_usage(ARGV("-b", "k1:9092", "-t", "orders", "-Z"), "-Z");
	expect_usage(ARGV("-b", "k1:9092", "-t", "orders", "--exit=1"), "--exit");
	expect_usage(ARGV("-b", "k1:9092", "-t", "orders", "stray"), "stray");
	expect_usage(ARGV("-b", "k1:9092", "-t", "orders", "--", "-e"), "-e");
}

/* An unknown letter inside a bundle ("-Zq") must still be the one named,
 * not the argument before the bundle. */
Test(config, unknown_flag_in_a_bundle_is_named)
{
	expect_usage(ARGV("-Zq", "-b", "k1:9092", "-t", "orders"), "Z");
	expect_usage(ARGV("-b", "k1:9092", "-Zq", "-t", "orders"), "Z");
}

Test(config, writers_range)
{
	EXPECT_USAGE_WITH("--writers", "0");
	EXPECT_USAGE_WITH("--writers", "257");
	EXPECT_USAGE_WITH("--writers", "-1");
	EXPECT_USAGE_WITH("--writers", "");
	EXPECT_USAGE_WITH("--writers", "8x");
	EXPECT_USAGE_WITH("--writers", "99999999999999999999");
}

Test(config, ring_size_power_of_two_in_range)
{
	EXPECT_USAGE_WITH("--ring-size", "3");
	EXPECT_USAGE_WITH("--ring-size", "8");
	EXPECT_USAGE_WITH("--ring-size", "0");
	EXPECT_USAGE_WITH("--ring-size", "100");
	EXPECT_USAGE_WITH("--ring-size", "2097152");
	EXPECT_USAGE_WITH("--ring-size", "-16");
}

Test(config, other_numeric_ranges)
{
	EXPECT_USAGE_WITH("--batch", "0");
	EXPECT_USAGE_WITH("--batch", "65537");
	EXPECT_USAGE_WITH("--commit-interval-ms", "9");
	EXPECT_USAGE_WITH("--ttl", "-1");
	EXPECT_USAGE_WITH("--ttl", "2147483648");
	EXPECT_USAGE_WITH("--stats-interval-ms", "-1");
	EXPECT_USAGE_WITH("--shutdown-timeout-ms", "3600001");
}

Test(config, offset_and_properties)
{
	EXPECT_USAGE_WITH("-o", "middle");
	EXPECT_USAGE_WITH("-o", "");
	EXPECT_USAGE_WITH("-X", "security.protocol");
	EXPECT_USAGE_WITH("-X", "=value");
}

Test(config, memcached_server_lists)
{
	EXPECT_USAGE_WITH("-m", "host");
	EXPECT_USAGE_WITH("-m", "h:0");
	EXPECT_USAGE_WITH("-m", "h:70000");
	EXPECT_USAGE_WITH("-m", "a:1,");
	EXPECT_USAGE_WITH("-m", "");
	EXPECT_USAGE_WITH("-m", ":11211");
	EXPECT_USAGE_WITH("-m", "h:");
	EXPECT_USAGE_WITH("-m", "h:12x");
	EXPECT_USAGE_WITH("-m", "a:1,,b:2");
	EXPECT_USAGE_WITH("-m", ",a:1");
}

Test(config, several_memcached_servers)
{
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-m", "10.0.0.1:11211,cache-b:11212,c.example:65535"));
	cr_assert_eq(c.nservers, 3);
	cr_expect_str_eq(c.servers[0].host, "10.0.0.1");
	cr_expect_eq(c.servers[0].port, 11211);
	cr_expect_str_eq(c.servers[1].host, "cache-b");
	cr_expect_eq(c.servers[1].port, 11212);
	cr_expect_str_eq(c.servers[2].host, "c.example");
	cr_expect_eq(c.servers[2].port, 65535);
}

/* k2mc_config_parse_servers directly: list limits and host length. */
Test(config, parse_servers_limits)
{
	struct k2mc_config c;
	char err[256];
	char list[64 * 16 + 32];
	char host[300];
	size_t n = 0;

	memset(&c, 0, sizeof(c));
	for (int i = 0; i < K2MC_MAX_SERVERS; i++)
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%sh%d:%d", i ? "," : "", i, 1000 + i);
	cr_assert_eq(k2mc_config_parse_servers(&c, list, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(c.nservers, K2MC_MAX_SERVERS);
	cr_expect_str_eq(c.servers[K2MC_MAX_SERVERS - 1].host, "h63");
	cr_expect_eq(c.servers[K2MC_MAX_SERVERS - 1].port, 1063);
	snprintf(list + n, sizeof(list) - n, ",one:1");
	cr_expect_eq(k2mc_config_parse_servers(&c, list, err, sizeof(err)), -EINVAL);
	cr_expect_not_null(strstr(err, "-m"), "%s", err);

	/* host[] holds 255 bytes and its NUL */
	memset(host, 'h', 255);
	strcpy(host + 255, ":1");
	cr_assert_eq(k2mc_config_parse_servers(&c, host, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(strlen(c.servers[0].host), 255);
	memset(host, 'h', 256);
	strcpy(host + 256, ":1");
	cr_expect_eq(k2mc_config_parse_servers(&c, host, err, sizeof(err)), -EINVAL);
	cr_expect_not_null(strstr(err, "-m"), "%s", err);
}

Test(config, key_prefix_rules)
{
	struct k2mc_config c;
	char prefix[K2MC_MC_KEY_MAX + 1];

	EXPECT_USAGE_WITH("--key-prefix", "a b");
	EXPECT_USAGE_WITH("--key-prefix", "a\tb");
	EXPECT_USAGE_WITH("--key-prefix", "a\nb");
	EXPECT_USAGE_WITH("--key-prefix", "a\x7f");

	/* The prefix must leave room for at least one key byte. */
	memset(prefix, 'p', K2MC_MC_KEY_MAX - 1);
	prefix[K2MC_MC_KEY_MAX - 1] = '\0';
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--key-prefix", prefix));
	cr_expect_eq(c.key_prefix_len, K2MC_MC_KEY_MAX - 1);
	prefix[K2MC_MC_KEY_MAX - 1] = 'p';
	prefix[K2MC_MC_KEY_MAX] = '\0';
	EXPECT_USAGE_WITH("--key-prefix", prefix);

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--key-prefix", "\xc3\xa9t\xc3\xa9:"));
	cr_expect_eq(c.key_prefix_len, 6, "UTF-8 is allowed");
}

Test(config, list_limits)
{
	/* 1 + "-b k" + 65 x "-t tN" + NULL */
	char *argv[1 + 2 + 2 * (K2MC_MAX_TOPICS + 1) + 1];
	char names[K2MC_MAX_TOPICS + 1][16];
	struct k2mc_config c;
	int n = 0;

	argv[n++] = "k2mc";
	argv[n++] = "-b";
	argv[n++] = "k";
	for (int i = 0; i < K2MC_MAX_TOPICS; i++) {
		snprintf(names[i], sizeof(names[i]), "t%d", i);
		argv[n++] = "-t";
		argv[n++] = names[i];
	}
	argv[n] = NULL;
	expect_ok(&c, argv);
	cr_expect_eq(c.ntopics, K2MC_MAX_TOPICS);
	argv[n++] = "-t";
	argv[n++] = "one-more";
	argv[n] = NULL;
	expect_usage(argv, "-t");

	char *xargv[1 + 4 + 2 * (K2MC_MAX_XPROPS + 1) + 1];

	n = 0;
	xargv[n++] = "k2mc";
	xargv[n++] = "-b";
	xargv[n++] = "k";
	xargv[n++] = "-t";
	xargv[n++] = "t";
	for (int i = 0; i < K2MC_MAX_XPROPS; i++) {
		xargv[n++] = "-X";
		xargv[n++] = "a=b";
	}
	xargv[n] = NULL;
	expect_ok(&c, xargv);
	cr_expect_eq(c.nxprops, K2MC_MAX_XPROPS);
	xargv[n++] = "-X";
	xargv[n++] = "c=d";
	xargv[n] = NULL;
	expect_usage(xargv, "-X");
}

Test(config, help_and_version_exit, .init = cr_redirect_stdout)
{
	struct k2mc_config c;
	char err[256], out[8192];
	size_t n;

	/* -h wins even without the required flags. */
	cr_expect_eq(parse(&c, ARGV("-h"), err, sizeof(err)), K2MC_CONFIG_EXIT);
	cr_expect_eq(parse(&c, ARGV("--help"), err, sizeof(err)), K2MC_CONFIG_EXIT);
	cr_expect_eq(parse(&c, ARGV("-b", "k", "-t", "t", "-h"), err, sizeof(err)), K2MC_CONFIG_EXIT);
	cr_expect_eq(parse(&c, ARGV("-V"), err, sizeof(err)), K2MC_CONFIG_EXIT);
	fflush(stdout);
	n = fread(out, 1, sizeof(out) - 1, cr_get_redirected_stdout());
	out[n] = '\0';
	cr_expect_not_null(strstr(out, "Usage: k2mc"), "help goes to stdout");
	cr_expect_not_null(strstr(out, "--ring-size"));
	cr_expect_not_null(strstr(out, "--max-buffer-bytes"));
	cr_expect_not_null(strstr(out, "k2mc "), "version line");
}

/* The parser resets getopt itself, so it can run again in the same process
 * (tests do; so may a reload). */
Test(config, parse_twice)
{
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "first:1", "-t", "a", "-v", "--writers", "3"));
	expect_ok(&c, ARGV("-b", "second:2", "-t", "b"));
	cr_expect_str_eq(c.brokers, "second:2");
	cr_expect_str_eq(c.topics[0], "b");
	cr_expect_eq(c.ntopics, 1, "nothing carried over");
	cr_expect_eq(c.verbosity, 1, "nothing carried over");
	expect_usage(ARGV("-b", "k", "-t", "t", "--writers", "0"), "--writers");
	expect_ok(&c, ARGV("-b", "third:3", "-t", "c"));
	cr_expect_str_eq(c.brokers, "third:3");
}

/* Again after an error that stopped in the middle of a bundle of short
 * flags: getopt must not resume inside the old argv. */
Test(config, parse_again_after_an_error_inside_a_bundle)
{
	struct k2mc_config c;
	char err[256];

	cr_assert_eq(parse(&c, ARGV("-Zq", "-b", "k", "-t", "t"), err, sizeof(err)),
		     K2MC_CONFIG_USAGE);
	expect_ok(&c, ARGV("-b", "fresh:1", "-t", "orders"));
	cr_expect_str_eq(c.brokers, "fresh:1");
	cr_expect_eq(c.verbosity, 1, "-q from the previous argv leaked into this parse");
}

/* The refusal's one-line message, which must contain each non-NULL needle. */
static void expect_refused(char **argv, const char *n1, const char *n2, const char *n3,
			   char *msg, size_t msglen)
{
	struct k2mc_config c;
	char err[512];
	enum k2mc_config_result r = parse(&c, argv, err, sizeof(err));
	const char *needles[] = { n1, n2, n3 };

	cr_assert_eq(r, K2MC_CONFIG_USAGE, "expected a refusal naming %s, got %d (%s)", n1, r, err);
	cr_expect_null(strchr(err, '\n'), "message is one line: %s", err);
	for (size_t i = 0; i < 3; i++)
		if (needles[i] != NULL)
			cr_expect_not_null(strstr(err, needles[i]), "message '%s' does not say '%s'",
					   err, needles[i]);
	if (msg != NULL)
		snprintf(msg, msglen, "%s", err);
	k2mc_config_free(&c);
}

#define REFUSED(n1, n2, n3, ...) expect_refused(ARGV(__VA_ARGS__), n1, n2, n3, NULL, 0)

/* Over 30 days memcached reads an exptime as a unix time: one in the past
 * stores every item already expired (3000000 is February 1970). */
Test(config, ttl_over_30_days_must_be_in_the_future)
{
	struct k2mc_config c;
	char future[32];
	long ahead = (long)time(NULL) + 86400;

	REFUSED("--ttl", "expired", "2592000", "-b", "k", "-t", "t", "--ttl", "3000000");
	REFUSED("--ttl", "expired", NULL, "-b", "k", "-t", "t", "--ttl", "2592001");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--ttl", "2592000"));
	cr_expect_eq(c.ttl, 2592000, "30 days is still relative");
	snprintf(future, sizeof(future), "%ld", ahead);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--ttl", future));
	cr_expect_eq(c.ttl, (uint32_t)ahead, "an absolute time ahead is kept");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--ttl", "2147483647"));
}

/* A dead letter topic that is consumed would loop its dead letters forever. */
Test(config, dlq_topic_must_not_be_consumed)
{
	struct k2mc_config c;

	REFUSED("--dlq-topic", "orders", "forever", "-b", "k", "-t", "orders", "--on-invalid", "dlq",
		"--dlq-topic", "orders");
	REFUSED("--dlq-topic", "-t b", NULL, "-b", "k", "-t", "a", "-t", "b", "--dlq-topic", "b");
	/* a regex subscription (librdkafka: -t starting with ^) that matches it */
	REFUSED("--dlq-topic", "^ord.*", "matches", "-b", "k", "-t", "^ord.*", "--on-invalid", "dlq",
		"--dlq-topic", "orders.dead");
	REFUSED("--dlq-topic", "^events", NULL, "-b", "k", "-t", "^events", "--dlq-topic",
		"events-dlq");
	expect_ok(&c, ARGV("-b", "k", "-t", "^events\\..*", "--on-invalid", "dlq", "--dlq-topic",
			   "events-dlq"));
	expect_ok(&c, ARGV("-b", "k", "-t", "orders", "--on-invalid", "dlq", "--dlq-topic",
			   "orders.dlq"));
	/* a name that merely contains regex characters is a plain name */
	expect_ok(&c, ARGV("-b", "k", "-t", "ord.rs", "--dlq-topic", "orders"));
	/* a pattern POSIX cannot compile is left to librdkafka */
	expect_ok(&c, ARGV("-b", "k", "-t", "^ab[", "--dlq-topic", "ab["));
}

/* librdkafka's booleans: true, t, 1 (any case) and false, f, 0. */
Test(config, auto_commit_and_auto_offset_store_are_refused)
{
	static const char *const truths[] = { "enable.auto.commit=true", "enable.auto.commit=TRUE",
					      "enable.auto.commit=t", "enable.auto.commit=1" };
	struct k2mc_config c;

	for (size_t i = 0; i < sizeof(truths) / sizeof(truths[0]); i++)
		REFUSED((char *)truths[i], "acknowledged", NULL, "-b", "k", "-t", "t", "-X",
			(char *)truths[i]);
	REFUSED("enable.auto.offset.store=true", "acknowledged", NULL, "-b", "k", "-t", "t", "-X",
		"enable.auto.offset.store=true");
	REFUSED("enable.auto.offset.store=1", NULL, NULL, "-b", "k", "-t", "t", "-X",
		"enable.auto.commit=false", "-X", "enable.auto.offset.store=1");
	/* the last one given is what librdkafka gets */
	REFUSED("-X enable.auto.commit=true", NULL, NULL, "-b", "k", "-t", "t", "-X",
		"enable.auto.commit=false", "-X", "enable.auto.commit=true");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "enable.auto.commit=true", "-X",
			   "enable.auto.commit=f"));
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "enable.auto.commit=false", "-X",
			   "enable.auto.offset.store=0"));
	/* a value librdkafka refuses is left to it (the consumer's creation
	 * reports librdkafka's own reason, exit 2) */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "enable.auto.commit=yes"));
}

Test(config, group_id_property_is_refused_for_G)
{
	REFUSED("-X group.id=other", "-G", NULL, "-b", "k", "-t", "t", "-G", "loader", "-X",
		"group.id=other");
	REFUSED("group.id", "-G", NULL, "-b", "k", "-t", "t", "-X", "group.id=k2mc");
}

/* -e waits for librdkafka's end-of-partition events. */
Test(config, exit_at_eof_needs_partition_eof_events)
{
	struct k2mc_config c;

	REFUSED("enable.partition.eof=false", "-e", NULL, "-b", "k", "-t", "t", "-e", "-X",
		"enable.partition.eof=false");
	REFUSED("enable.partition.eof=0", "-e", NULL, "-X", "enable.partition.eof=0", "-b", "k",
		"-t", "t", "--exit");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "enable.partition.eof=false"));
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-e", "-X", "enable.partition.eof=true"));
}

/* librdkafka < 2.3.0: its sticky assignor aborts (issue 4312). */
Test(config, cooperative_sticky_needs_librdkafka_2_3)
{
	struct k2mc_config c;

	if (rd_kafka_version() >= 0x020300ff) {
		expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X",
				   "partition.assignment.strategy=cooperative-sticky"));
		return;
	}
	REFUSED("partition.assignment.strategy=cooperative-sticky", "4312", "2.3.0", "-b", "k", "-t",
		"t", "-X", "partition.assignment.strategy=cooperative-sticky");
	REFUSED("cooperative-sticky", rd_kafka_version_str(), NULL, "-b", "k", "-t", "t", "-X",
		"partition.assignment.strategy=range,cooperative-sticky");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "partition.assignment.strategy=roundrobin"));
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X",
			   "partition.assignment.strategy=cooperative-sticky", "-X",
			   "partition.assignment.strategy=range"));
}

Test(config, max_buffer_bytes_sizes)
{
	static const struct {
		const char *arg;
		uint64_t bytes;
	} ok[] = {
		{ "1048576", 1u << 20 },	  { "1m", 1u << 20 },	   { "1M", 1u << 20 },
		{ "1024k", 1u << 20 },	  { "1024K", 1u << 20 },	 { "64m", 64u << 20 },
		{ "2g", 2ull << 30 },	  { "2G", 2ull << 30 },	 { "3000000", 3000000 },
	};
	static const char *const bad[] = { "",	   "0",	    "1048575", "1023k", "m",   "1.5m",
					   "-1m", "+1m",   "1mb",	   "1t",	   " 1m", "1m ",
					   "16777216000000g" };
	struct k2mc_config c;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		expect_ok(&c, ARGV("-b", "k", "-t", "t", "--max-buffer-bytes", (char *)ok[i].arg));
		cr_expect_eq(c.max_buffer_bytes, ok[i].bytes, "%s", ok[i].arg);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		EXPECT_USAGE_WITH("--max-buffer-bytes", (char *)bad[i]);
}

/* writers x ring-size x 16 bytes of slots plus a watermark window of
 * next_pow2(writers x ring-size) x 9 bytes, per partition. */
Test(config, ring_sizes_that_cannot_fit_in_memory_are_refused)
{
	struct k2mc_config c;
	char msg[512];

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--writers", "2", "--ring-size", "4096"));
	cr_expect_eq(k2mc_config_ring_bytes_per_partition(&c), 2 * 4096 * 16 + 8192 * 9);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--writers", "3", "--ring-size", "16"));
	cr_expect_eq(k2mc_config_ring_bytes_per_partition(&c), 3 * 16 * 16 + 64 * 9,
		     "the window is a power of two");
	/* 256 x 1M slots: 4 GiB of slots and 2.25 GiB of window (set by hand:
	 * the parser refuses them on a machine with less memory) */
	c.writers = 256;
	c.ring_size = 1u << 20;
	cr_expect_eq(k2mc_config_ring_bytes_per_partition(&c), (4ull << 30) + (9ull << 28));
	cr_expect_eq(k2mc_config_check_ring_memory(&c, 6ull << 30, msg, sizeof(msg)),
		     K2MC_CONFIG_USAGE);
	cr_expect_null(strchr(msg, '\n'), "one line: %s", msg);
	cr_expect_not_null(strstr(msg, "--ring-size 1048576"), "%s", msg);
	cr_expect_not_null(strstr(msg, "--writers 256"), "%s", msg);
	cr_expect_not_null(strstr(msg, "6.2 GiB"), "%s", msg);
	cr_expect_not_null(strstr(msg, "6.0 GiB of memory"), "%s", msg);
	cr_expect_not_null(strstr(msg, "smaller --ring-size"), "%s", msg);
	cr_log_info("%s", msg);
	cr_expect_eq(k2mc_config_check_ring_memory(&c, 7ull << 30, msg, sizeof(msg)),
		     K2MC_CONFIG_OK);
	cr_expect_eq(k2mc_config_check_ring_memory(&c, 0, msg, sizeof(msg)), K2MC_CONFIG_OK,
		     "memory unknown: no check");

	/* the parser checks against this machine's memory (the largest rings
	 * the flags allow fit on a machine of 6.25 GiB or more) */
	cr_expect_gt(k2mc_config_memory_bytes(), 0);
	if (k2mc_config_memory_bytes() < (4ull << 30) + (9ull << 28))
		REFUSED("--ring-size", "memory", NULL, "-b", "k", "-t", "t", "--writers", "256",
			"--ring-size", "1048576");
}

/* Fencing: lease = session - heartbeat - max(500, session / 10); it must be
 * >= 1000 ms and more than two commit intervals. */
Test(config, session_heartbeat_and_lease)
{
	struct k2mc_config c;

	cr_expect_eq(K2MC_FENCE_MARGIN_MS(3000), 500);
	cr_expect_eq(K2MC_FENCE_MARGIN_MS(45000), 4500);
	cr_expect_eq(K2MC_FENCE_MARGIN_MS((int64_t)6000), 600);
	expect_ok(&c, ARGV("-b", "k", "-t", "t"));
	cr_expect_eq(k2mc_config_session_timeout_ms(&c), 45000, "librdkafka 2.0.2's default");
	cr_expect_eq(k2mc_config_heartbeat_interval_ms(&c), 3000, "librdkafka 2.0.2's default");
	cr_expect_eq(k2mc_config_lease_ms(&c), 45000 - 3000 - 4500);

	/* what the fault tests run with */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--commit-interval-ms", "200", "-X",
			   "session.timeout.ms=3000", "-X", "heartbeat.interval.ms=500"));
	cr_expect_eq(k2mc_config_session_timeout_ms(&c), 3000);
	cr_expect_eq(k2mc_config_heartbeat_interval_ms(&c), 500);
	cr_expect_eq(k2mc_config_lease_ms(&c), 2000);
	/* what the pipeline and policy tests run with */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "session.timeout.ms=6000"));
	cr_expect_eq(k2mc_config_lease_ms(&c), 6000 - 3000 - 600);
	/* read as librdkafka reads it (base 0, the last one winning) */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "session.timeout.ms=1000", "-X",
			   "session.timeout.ms=0x2710"));
	cr_expect_eq(k2mc_config_session_timeout_ms(&c), 10000);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "session.timeout.ms=6000",
			   "--commit-interval-ms", "1199"));
}

Test(config, fencing_that_cannot_work_is_refused)
{
	char msg[512];

	/* heartbeat = session: no lease at all */
	REFUSED("session.timeout.ms 3000", "1000 ms", "raise -X session.timeout.ms", "-b", "k", "-t",
		"t", "-X", "session.timeout.ms=3000");
	REFUSED("heartbeat.interval.ms 8500", "lease of 500 ms", "heartbeat.interval.ms", "-b", "k",
		"-t", "t", "-X", "session.timeout.ms=10000", "-X", "heartbeat.interval.ms=8500");
	/* 2400 ms lease, 2 x 1200 ms interval */
	REFUSED("--commit-interval-ms 1200", "2400 ms", "--commit-interval-ms to 1199", "-b", "k",
		"-t", "t", "-X", "session.timeout.ms=6000", "--commit-interval-ms", "1200");
	REFUSED("--commit-interval-ms", "lower", NULL, "-b", "k", "-t", "t",
		"--commit-interval-ms", "3600000");

	/* the session the message suggests is enough, and one less is not */
	expect_refused(ARGV("-b", "k", "-t", "t", "-X", "session.timeout.ms=6000", "-X",
			    "heartbeat.interval.ms=1000", "--commit-interval-ms", "5000"),
		       "session.timeout.ms to at least", NULL, NULL, msg, sizeof(msg));
	{
		const char *p = strstr(msg, "at least ");
		char want[64], less[64];
		struct k2mc_config c;
		long s;

		cr_assert_not_null(p);
		s = strtol(p + 9, NULL, 10);
		snprintf(want, sizeof(want), "session.timeout.ms=%ld", s);
		snprintf(less, sizeof(less), "session.timeout.ms=%ld", s - 1);
		expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", want, "-X", "heartbeat.interval.ms=1000",
				   "--commit-interval-ms", "5000"));
		cr_expect_gt(k2mc_config_lease_ms(&c), 10000);
		REFUSED("--commit-interval-ms", NULL, NULL, "-b", "k", "-t", "t", "-X", less, "-X",
			"heartbeat.interval.ms=1000", "--commit-interval-ms", "5000");
	}
}
