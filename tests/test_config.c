/* Criterion suite for command-line parsing (core/config.h): defaults, every
 * flag in short and long form, and every usage error, which must come back as
 * K2MC_CONFIG_USAGE with a one-line message naming the flag at fault. It does
 * not start anything. */
#include "core/config.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <fcntl.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/group.h"
#include "workers/dlq.h"
#include "workers/refill.h"

/* what config.c falls back to when the build passes no -DK2MC_VERSION */
#ifdef K2MC_VERSION
#define K2MC_VERSION_EXPECTED K2MC_VERSION
#else
#define K2MC_VERSION_EXPECTED "unknown"
#endif

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
	cr_expect_eq(c.max_buffer_bytes, 16u << 20);
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
		xargv[n++] = "acks=all";
	}
	xargv[n] = NULL;
	expect_ok(&c, xargv);
	cr_expect_eq(c.nxprops, K2MC_MAX_XPROPS);
	xargv[n++] = "-X";
	xargv[n++] = "acks=1";
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
	/* a value librdkafka refuses: its own reason, as the start would give it */
	REFUSED("-X enable.auto.commit=yes", "Expected bool value", NULL, "-b", "k", "-t", "t",
		"-X", "enable.auto.commit=yes");
}

Test(config, group_id_property_is_refused_for_G)
{
	REFUSED("-X group.id=other", "-G", NULL, "-b", "k", "-t", "t", "-G", "loader", "-X",
		"group.id=other");
	REFUSED("group.id", "-G", NULL, "-b", "k", "-t", "t", "-X", "group.id=k2mc");
}

/* After a committed offset left the log k2mc resumes at the oldest record,
 * which is librdkafka's auto.offset.reset=earliest (group.c); -o is where a
 * partition without a committed offset starts. */
Test(config, auto_offset_reset_other_than_earliest_is_refused)
{
	static const char *const refused[] = { "auto.offset.reset=latest",
						"auto.offset.reset=end", "auto.offset.reset=largest",
						"auto.offset.reset=error" };
	struct k2mc_config c;

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		REFUSED((char *)refused[i], "oldest surviving record", "-o beginning|end", "-b", "k",
			"-t", "t", "-X", (char *)refused[i]);
	/* the last one given is what librdkafka gets */
	REFUSED("-X auto.offset.reset=latest", NULL, NULL, "-b", "k", "-t", "t", "-X",
		"auto.offset.reset=earliest", "-X", "auto.offset.reset=latest");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "auto.offset.reset=earliest"));
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-o", "end", "-X", "auto.offset.reset=smallest"));
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-X", "auto.offset.reset=latest", "-X",
			   "auto.offset.reset=beginning"));
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

/* ---- issues 9-13: deployments, mapping, packaging, logs, refill ------------------ */

/* A file that exists, for the TLS options (removed by the suite's process
 * ending: Criterion forks one per test, and /tmp is the test's own). */
static const char *temp_file(char *path, size_t len, const char *text)
{
	int fd;

	snprintf(path, len, "/tmp/k2mc-tls.XXXXXX");
	fd = mkstemp(path);
	cr_assert_geq(fd, 0, "mkstemp");
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

Test(config, defaults_of_the_new_settings)
{
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k", "-t", "t"));
	cr_expect_eq(c.servers[0].weight, 1);
	cr_expect_eq(c.servers[0].is_unix, 0);
	cr_expect_eq(c.distribution, K2MC_DIST_KETAMA, "today's placement");
	cr_expect_eq(c.mc_protocol, K2MC_PROTO_AUTO);
	cr_expect_eq(c.mc_tls, 0);
	cr_expect_null(c.mc_tls_ca);
	cr_expect_null(c.mc_tls_cert);
	cr_expect_null(c.mc_tls_key);
	cr_expect_null(c.mc_tls_key_password);
	cr_expect_null(c.mc_tls_server_name);
	cr_expect_eq(c.mc_tls_insecure, 0);
	cr_expect_str_eq(c.key_template, "{key}");
	cr_expect_str_eq(c.value_template, "{value}");
	cr_expect_null(c.ttl_header);
	cr_expect_eq(c.ttl_from_timestamp, 0);
	cr_expect_eq(c.flags, 0);
	cr_expect_null(c.flags_header);
	cr_expect_eq(c.on_tombstone, K2MC_TOMB_DELETE);
	cr_expect_eq(c.invalidate_grace_s, 0);
	cr_expect_eq(c.check_config, 0);
	cr_expect_eq(c.log_format, K2MC_LOG_TEXT);
	cr_expect_eq(c.refill, 0);
	cr_expect_eq(c.refill_from_earliest, 1);
	cr_expect_eq(c.refill_from_ms, 0);
	cr_expect_eq(c.refill_rate, 0);
	cr_expect_str_eq(k2mc_config_version(), K2MC_VERSION_EXPECTED);
}

/* Every -m form, mixed in one list. */
Test(config, server_weights_ipv6_and_unix_sockets)
{
	struct k2mc_config c;
	char path[K2MC_SUN_PATH_MAX + 1];

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--distribution", "libketama", "-m",
			   "mc1:11211,mc2:11212:3,[::1]:11213,[fe80::1%eth0]:11214:65535,"
			   "/run/memcached/memcached.sock,unix:/tmp/mc.sock,unix:/tmp/w.sock:7,"
			   "unix:rel.sock,unix:/tmp/odd:5:1"));
	cr_assert_eq(c.nservers, 9);
	cr_expect_str_eq(c.servers[0].host, "mc1");
	cr_expect_eq(c.servers[0].port, 11211);
	cr_expect_eq(c.servers[0].weight, 1);
	cr_expect_eq(c.servers[0].is_unix, 0);
	cr_expect_str_eq(c.servers[1].host, "mc2");
	cr_expect_eq(c.servers[1].port, 11212);
	cr_expect_eq(c.servers[1].weight, 3);
	cr_expect_str_eq(c.servers[2].host, "::1", "brackets dropped");
	cr_expect_eq(c.servers[2].port, 11213);
	cr_expect_eq(c.servers[2].weight, 1);
	cr_expect_str_eq(c.servers[3].host, "fe80::1%eth0");
	cr_expect_eq(c.servers[3].port, 11214);
	cr_expect_eq(c.servers[3].weight, 65535);
	cr_expect_str_eq(c.servers[4].host, "/run/memcached/memcached.sock");
	cr_expect_eq(c.servers[4].is_unix, 1);
	cr_expect_eq(c.servers[4].port, 0);
	cr_expect_eq(c.servers[4].weight, 1);
	cr_expect_str_eq(c.servers[5].host, "/tmp/mc.sock");
	cr_expect_eq(c.servers[5].is_unix, 1);
	cr_expect_eq(c.servers[5].weight, 1);
	cr_expect_str_eq(c.servers[6].host, "/tmp/w.sock");
	cr_expect_eq(c.servers[6].weight, 7);
	cr_expect_str_eq(c.servers[7].host, "rel.sock");
	cr_expect_eq(c.servers[7].is_unix, 1);
	cr_expect_str_eq(c.servers[8].host, "/tmp/odd:5", "the last :DIGITS is the weight");
	cr_expect_eq(c.servers[8].weight, 1);

	/* a /PATH entry is all path: colons that are not :DIGITS at the end */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-m", "/tmp/a:b.sock"));
	cr_expect_str_eq(c.servers[0].host, "/tmp/a:b.sock");
	/* weight 1 written out is no weight: fine under any distribution */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-m", "a:1:1,unix:/s:1"));
	cr_expect_eq(c.servers[0].weight, 1);
	cr_expect_eq(c.servers[1].weight, 1);

	/* sun_path holds 107 bytes and its NUL */
	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	path[K2MC_SUN_PATH_MAX] = '\0';
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-m", path));
	cr_expect_eq(strlen(c.servers[0].host), K2MC_SUN_PATH_MAX);
}

Test(config, bad_server_entries)
{
	static const struct {
		const char *list, *says;
	} bad[] = {
		{ "a:1:0", "bad weight" },
		{ "a:1:65536", "1..65535" },
		{ "a:1:x", "bad weight" },
		{ "a:1:", "bad weight" },
		{ "a:1:-2", "bad weight" },
		{ "::1:11211", "brackets" },
		{ "a:1:2:3", "brackets" },
		{ "[::1]", "[IPV6]:PORT" },
		{ "[::1]11211", "[IPV6]:PORT" },
		{ "[]:11211", "[IPV6]:PORT" },
		{ "[host]:11211", "[IPV6]:PORT" },
		{ "[::1]:0", "bad port" },
		{ "[::1]:1:0", "bad weight" },
		{ "unix:", "empty socket path" },
		{ "unix::3", "empty socket path" },
		{ "unix:/s:0", "bad weight" },
		{ "unix:/s:99999999999999999999", "bad weight" },
		{ "/run/mc.sock:2", "ambiguous" },
		{ "localhost", "/SOCKET" },
		{ "a:1,,b:2", "empty entry" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		REFUSED("-m", (char *)bad[i].list, (char *)bad[i].says, "-b", "k", "-t", "t",
			"--distribution", "dalli", "-m", (char *)bad[i].list);
	{
		char path[K2MC_SUN_PATH_MAX + 2];

		memset(path, 'p', sizeof(path) - 1);
		path[0] = '/';
		path[K2MC_SUN_PATH_MAX + 1] = '\0';
		REFUSED("-m", "108 bytes", "107", "-b", "k", "-t", "t", "-m", path);
	}
}

/* Readers that place keys without weights would not find weighted keys. */
Test(config, weights_only_under_weighted_distributions)
{
	static const char *const unweighted[] = { "ketama", "modula", "rendezvous", "crc32",
						  "spymemcached" };
	struct k2mc_config c;

	for (size_t i = 0; i < sizeof(unweighted) / sizeof(unweighted[0]); i++)
		REFUSED("-m: server b:2:5 has weight 5", (char *)unweighted[i], "libketama", "-b", "k",
			"-t", "t", "-m", "a:1,b:2:5", "--distribution", (char *)unweighted[i]);
	REFUSED("unix:/s:2", "ketama", NULL, "-b", "k", "-t", "t", "-m", "unix:/s:2");
	REFUSED("[::1]:1:2", NULL, NULL, "-b", "k", "-t", "t", "-m", "[::1]:1:2");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-m", "a:1,b:2:5", "--distribution", "dalli"));
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "-m", "a:1,b:2:5", "--distribution", "libketama"));
	cr_expect(k2mc_distribution_weighted(K2MC_DIST_LIBKETAMA));
	cr_expect(k2mc_distribution_weighted(K2MC_DIST_DALLI));
	cr_expect(!k2mc_distribution_weighted(K2MC_DIST_KETAMA));
}

Test(config, distribution_and_protocol_names)
{
	static const struct {
		const char *name;
		enum k2mc_distribution d;
	} dists[] = {
		{ "ketama", K2MC_DIST_KETAMA },	{ "libketama", K2MC_DIST_LIBKETAMA },
		{ "modula", K2MC_DIST_MODULA },	{ "rendezvous", K2MC_DIST_RENDEZVOUS },
		{ "crc32", K2MC_DIST_CRC32 },	{ "dalli", K2MC_DIST_DALLI },
		{ "spymemcached", K2MC_DIST_SPYMEMCACHED },
	};
	static const struct {
		const char *name;
		enum k2mc_mc_protocol p;
	} protos[] = { { "auto", K2MC_PROTO_AUTO }, { "meta", K2MC_PROTO_META },
		       { "text", K2MC_PROTO_TEXT } };
	struct k2mc_config c;

	for (size_t i = 0; i < sizeof(dists) / sizeof(dists[0]); i++) {
		expect_ok(&c, ARGV("-b", "k", "-t", "t", "--distribution", (char *)dists[i].name));
		cr_expect_eq(c.distribution, dists[i].d, "%s", dists[i].name);
		cr_expect_str_eq(k2mc_distribution_name(dists[i].d), dists[i].name);
	}
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		expect_ok(&c, ARGV("-b", "k", "-t", "t", "--mc-protocol", (char *)protos[i].name));
		cr_expect_eq(c.mc_protocol, protos[i].p, "%s", protos[i].name);
		cr_expect_str_eq(k2mc_mc_protocol_name(protos[i].p), protos[i].name);
	}
	REFUSED("--distribution", "ketama, libketama, modula", "'Ketama'", "-b", "k", "-t", "t",
		"--distribution", "Ketama");
	REFUSED("--distribution", "''", NULL, "-b", "k", "-t", "t", "--distribution", "");
	REFUSED("--distribution", "consistent", NULL, "-b", "k", "-t", "t", "--distribution",
		"consistent");
	REFUSED("--mc-protocol", "auto, meta or text", "'binary'", "-b", "k", "-t", "t",
		"--mc-protocol", "binary");
}

Test(config, tls_settings)
{
	struct k2mc_config c;
	char ca[64], cert[64], key[64];

	temp_file(ca, sizeof(ca), "-----BEGIN CERTIFICATE-----\n");
	temp_file(cert, sizeof(cert), "-----BEGIN CERTIFICATE-----\n");
	temp_file(key, sizeof(key), "-----BEGIN PRIVATE KEY-----\n");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--mc-tls", "--mc-tls-ca", ca, "--mc-tls-cert",
			   cert, "--mc-tls-key", key, "--mc-tls-key-password", "pw",
			   "--mc-tls-server-name", "cache.example", "--mc-tls-insecure"));
	cr_expect_eq(c.mc_tls, 1);
	cr_expect_str_eq(c.mc_tls_ca, ca);
	cr_expect_str_eq(c.mc_tls_cert, cert);
	cr_expect_str_eq(c.mc_tls_key, key);
	cr_expect_str_eq(c.mc_tls_key_password, "pw");
	cr_expect_str_eq(c.mc_tls_server_name, "cache.example");
	cr_expect_eq(c.mc_tls_insecure, 1);
	/* TLS alone: the system store, each server's host as the name */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--mc-tls", "-m", "a:1,unix:/s"));
	cr_expect_eq(c.mc_tls, 1);
	cr_expect_null(c.mc_tls_ca);

	/* each TLS setting without --mc-tls would be silently ignored */
	REFUSED("--mc-tls-ca needs --mc-tls", NULL, NULL, "-b", "k", "-t", "t", "--mc-tls-ca", ca);
	REFUSED("--mc-tls-cert needs --mc-tls", NULL, NULL, "-b", "k", "-t", "t", "--mc-tls-cert",
		cert, "--mc-tls-key", key);
	REFUSED("--mc-tls-key needs --mc-tls", NULL, NULL, "-b", "k", "-t", "t", "--mc-tls-key",
		key);
	REFUSED("--mc-tls-key-password needs --mc-tls", NULL, NULL, "-b", "k", "-t", "t",
		"--mc-tls-key-password", "pw");
	REFUSED("--mc-tls-server-name needs --mc-tls", NULL, NULL, "-b", "k", "-t", "t",
		"--mc-tls-server-name", "x");
	REFUSED("--mc-tls-insecure needs --mc-tls", NULL, NULL, "-b", "k", "-t", "t",
		"--mc-tls-insecure");
	/* half a client certificate */
	REFUSED("--mc-tls-cert needs --mc-tls-key", NULL, NULL, "-b", "k", "-t", "t", "--mc-tls",
		"--mc-tls-cert", cert);
	REFUSED("--mc-tls-key needs --mc-tls-cert", NULL, NULL, "-b", "k", "-t", "t", "--mc-tls",
		"--mc-tls-key", key);
	REFUSED("--mc-tls-key-password needs --mc-tls-key", NULL, NULL, "-b", "k", "-t", "t",
		"--mc-tls", "--mc-tls-key-password", "pw");
	/* files must be there when k2mc starts, named in the message */
	REFUSED("--mc-tls-ca /nonexistent/ca.pem", "No such file", NULL, "-b", "k", "-t", "t",
		"--mc-tls", "--mc-tls-ca", "/nonexistent/ca.pem");
	REFUSED("--mc-tls-cert /nonexistent/c.pem", "No such file", NULL, "-b", "k", "-t", "t",
		"--mc-tls", "--mc-tls-cert", "/nonexistent/c.pem", "--mc-tls-key", key);
	REFUSED("--mc-tls-key /nonexistent/k.pem", "No such file", NULL, "-b", "k", "-t", "t",
		"--mc-tls", "--mc-tls-cert", cert, "--mc-tls-key", "/nonexistent/k.pem");
	REFUSED("--mc-tls-ca /tmp", "directory", NULL, "-b", "k", "-t", "t", "--mc-tls",
		"--mc-tls-ca", "/tmp");
	/* read again on every reconnect: a pipe (never opened: that would
	 * block) or a device will not do */
	{
		char fifo[80];

		snprintf(fifo, sizeof(fifo), "%s.fifo", ca);
		cr_assert_eq(mkfifo(fifo, 0600), 0);
		REFUSED("--mc-tls-ca", fifo, "not a regular file", "-b", "k", "-t", "t", "--mc-tls",
			"--mc-tls-ca", fifo);
		unlink(fifo);
	}
	if (geteuid() != 0) {
		cr_assert_eq(chmod(key, 0), 0);
		REFUSED("--mc-tls-key", key, "Permission denied", "-b", "k", "-t", "t", "--mc-tls",
			"--mc-tls-cert", cert, "--mc-tls-key", key);
	}
	REFUSED("--mc-tls-ca", "file name", NULL, "-b", "k", "-t", "t", "--mc-tls", "--mc-tls-ca",
		"");
	REFUSED("--mc-tls-key-password", "empty", NULL, "-b", "k", "-t", "t", "--mc-tls",
		"--mc-tls-cert", cert, "--mc-tls-key", key, "--mc-tls-key-password", "");
	REFUSED("--mc-tls-server-name", "host name", NULL, "-b", "k", "-t", "t", "--mc-tls",
		"--mc-tls-server-name", "a b");
	REFUSED("--mc-tls-server-name", NULL, NULL, "-b", "k", "-t", "t", "--mc-tls",
		"--mc-tls-server-name", "");
	unlink(ca);
	unlink(cert);
	unlink(key);
}

Test(config, key_value_templates_ttl_and_flags)
{
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--key", "user:{json:/id}", "--value",
			   "{json:/profile}", "--key-prefix", "app:", "--ttl-header", "x-ttl",
			   "--flags", "4294967295", "--flags-header", "x-flags", "--ttl", "60"));
	cr_expect_str_eq(c.key_template, "user:{json:/id}", "stored as given");
	cr_expect_str_eq(c.value_template, "{json:/profile}");
	cr_expect_str_eq(c.key_prefix, "app:", "kept beside --key");
	cr_expect_str_eq(c.ttl_header, "x-ttl");
	cr_expect_eq(c.flags, 4294967295u);
	cr_expect_str_eq(c.flags_header, "x-flags");
	/* the syntax is mapping.c's: anything but a line break is stored */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--key", "{bogus", "--value", ""));
	cr_expect_str_eq(c.key_template, "{bogus");
	cr_expect_str_eq(c.value_template, "");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--flags", "0"));
	cr_expect_eq(c.flags, 0);
	EXPECT_USAGE_WITH("--key", "a\nb");
	EXPECT_USAGE_WITH("--value", "a\r\n");
	EXPECT_USAGE_WITH("--ttl-header", "");
	EXPECT_USAGE_WITH("--flags-header", "");
	REFUSED("--flags", "0..4294967295", "'4294967296'", "-b", "k", "-t", "t", "--flags",
		"4294967296");
	EXPECT_USAGE_WITH("--flags", "-1");
	EXPECT_USAGE_WITH("--flags", "0x10");
	EXPECT_USAGE_WITH("--flags", "");
	EXPECT_USAGE_WITH("--flags", " 1");
}

/* With --ttl-from-timestamp, --ttl is a duration after the record's time. */
Test(config, ttl_from_timestamp)
{
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--ttl-from-timestamp", "--ttl", "3600"));
	cr_expect_eq(c.ttl_from_timestamp, 1);
	cr_expect_eq(c.ttl, 3600);
	/* 90 days: over 30, so refused as an absolute time alone ... */
	REFUSED("--ttl", "expired", "--ttl-from-timestamp", "-b", "k", "-t", "t", "--ttl",
		"7776000");
	/* ... and a duration with it, in either order */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--ttl", "7776000", "--ttl-from-timestamp"));
	cr_expect_eq(c.ttl, 7776000);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--ttl-from-timestamp", "--ttl-header", "exp"));
	REFUSED("--ttl-from-timestamp needs --ttl", "--ttl-header", NULL, "-b", "k", "-t", "t",
		"--ttl-from-timestamp");
	REFUSED("--ttl-from-timestamp", NULL, NULL, "-b", "k", "-t", "t", "--ttl-from-timestamp",
		"--ttl", "0");
}

Test(config, on_tombstone)
{
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--on-tombstone", "ignore"));
	cr_expect_eq(c.on_tombstone, K2MC_TOMB_IGNORE);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--on-tombstone", "delete"));
	cr_expect_eq(c.on_tombstone, K2MC_TOMB_DELETE);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--on-tombstone", "invalidate:30"));
	cr_expect_eq(c.on_tombstone, K2MC_TOMB_INVALIDATE);
	cr_expect_eq(c.invalidate_grace_s, 30);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--on-tombstone", "invalidate:2592000",
			   "--mc-protocol", "meta"));
	cr_expect_eq(c.invalidate_grace_s, 2592000);
	/* the last one wins, grace and all */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--on-tombstone", "invalidate:5", "--on-tombstone",
			   "ignore"));
	cr_expect_eq(c.on_tombstone, K2MC_TOMB_IGNORE);
	cr_expect_eq(c.invalidate_grace_s, 0);
	cr_expect_str_eq(k2mc_on_tombstone_name(K2MC_TOMB_INVALIDATE), "invalidate");
	REFUSED("--on-tombstone", "invalidate:SECONDS", "1..2592000", "-b", "k", "-t", "t",
		"--on-tombstone", "invalidate");
	EXPECT_USAGE_WITH("--on-tombstone", "invalidate:");
	EXPECT_USAGE_WITH("--on-tombstone", "invalidate:0");
	EXPECT_USAGE_WITH("--on-tombstone", "invalidate:2592001");
	EXPECT_USAGE_WITH("--on-tombstone", "invalidate:5s");
	EXPECT_USAGE_WITH("--on-tombstone", "invalidate=5");
	REFUSED("--on-tombstone", "delete, ignore or invalidate:SECONDS", "'purge'", "-b", "k",
		"-t", "t", "--on-tombstone", "purge");
	/* text servers have no invalidation */
	REFUSED("--on-tombstone invalidate:30", "meta protocol", "--mc-protocol text", "-b", "k",
		"-t", "t", "--on-tombstone", "invalidate:30", "--mc-protocol", "text");
}

Test(config, log_format_and_check_config)
{
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--log-format", "json", "--check-config"));
	cr_expect_eq(c.log_format, K2MC_LOG_JSON);
	cr_expect_eq(c.check_config, 1);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--log-format", "text"));
	cr_expect_eq(c.log_format, K2MC_LOG_TEXT);
	cr_expect_str_eq(k2mc_log_format_name(K2MC_LOG_JSON), "json");
	REFUSED("--log-format", "text or json", "'JSON'", "-b", "k", "-t", "t", "--log-format",
		"JSON");
	expect_usage(ARGV("-b", "k", "-t", "t", "--check-config=yes"), "--check-config");
}

Test(config, refill_settings)
{
	static const struct {
		const char *arg;
		int64_t ms;
	} ok[] = {
		{ "90s", 90000 },	 { "15m", 900000 },	    { "24h", 86400000 },
		{ "7d", 604800000 }, { "1s", 1000 },	    { "106751991167d", 106751991167LL * 86400000 },
	};
	static const char *const bad[] = { "",	  "0s", "90",   "s",	"1.5h", "-1h", "+1h",
					   "1w",  "1hh", " 1h", "1h ", "1H",	"latest",
					   "106751991168d" };
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--refill"));
	cr_expect_eq(c.refill, 1);
	cr_expect_eq(c.refill_from_earliest, 1);
	cr_expect_eq(c.refill_rate, 0, "unlimited");
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		expect_ok(&c, ARGV("-b", "k", "-t", "t", "--refill", "--refill-from", (char *)ok[i].arg));
		cr_expect_eq(c.refill_from_earliest, 0, "%s", ok[i].arg);
		cr_expect_eq(c.refill_from_ms, ok[i].ms, "%s", ok[i].arg);
	}
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--refill", "--refill-from", "24h",
			   "--refill-from", "earliest", "--refill-rate", "1000000000"));
	cr_expect_eq(c.refill_from_earliest, 1);
	cr_expect_eq(c.refill_from_ms, 0);
	cr_expect_eq(c.refill_rate, 1000000000);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		REFUSED("--refill-from", "earliest or a duration", NULL, "-b", "k", "-t", "t",
			"--refill", "--refill-from", (char *)bad[i]);
	REFUSED("--refill-rate", "0 (unlimited) to 1000000000", NULL, "-b", "k", "-t", "t",
		"--refill", "--refill-rate", "1000000001");
	EXPECT_USAGE_WITH("--refill-rate", "-1");
	EXPECT_USAGE_WITH("--refill-rate", "10k");
	REFUSED("--refill-from needs --refill", NULL, NULL, "-b", "k", "-t", "t", "--refill-from",
		"24h");
	REFUSED("--refill-rate needs --refill", NULL, NULL, "-b", "k", "-t", "t", "--refill-rate",
		"100");
}

/* --refill-ready: what /readyz answers while a server is refilled. */
Test(config, refill_ready_yes_or_no)
{
	static const char *const bad[] = { "", "maybe", "YES", "true", "0", "no " };
	struct k2mc_config c;

	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--refill"));
	cr_expect_eq(c.refill_ready, 1, "ready by default");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--refill", "--refill-ready", "no"));
	cr_expect_eq(c.refill_ready, 0);
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--refill", "--refill-ready", "no",
			   "--refill-ready", "yes"));
	cr_expect_eq(c.refill_ready, 1, "the last one given");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		REFUSED("--refill-ready", "expected yes", "or no", "-b", "k", "-t", "t", "--refill",
			"--refill-ready", (char *)bad[i]);
	REFUSED("--refill-ready: expected yes (/readyz 200 while a server is refilled) or no "
		"(503), got 'maybe'",
		NULL, NULL, "-b", "k", "-t", "t", "--refill", "--refill-ready", "maybe");
	REFUSED("--refill-ready needs --refill", NULL, NULL, "-b", "k", "-t", "t",
		"--refill-ready", "no");
}

/* getopt would take "--key" for --key-prefix until --key existed: k2mc
 * takes no abbreviations, so no new option can change an old command line. */
Test(config, long_options_must_be_spelled_in_full, .init = cr_redirect_stdout)
{
	struct k2mc_config c;
	char err[256], out[256];
	size_t n;

	REFUSED("'--key-p'", "did you mean --key-prefix", NULL, "-b", "k", "-t", "t", "--key-p",
		"app:");
	REFUSED("'--writ'", "--writers", NULL, "-b", "k", "-t", "t", "--writ=3");
	REFUSED("'--dump'", "--dump-config", NULL, "-b", "k", "-t", "t", "--dump");
	REFUSED("'--mc-tls-ins'", "--mc-tls-insecure", NULL, "-b", "k", "-t", "t", "--mc-tls",
		"--mc-tls-ins");
	/* an ambiguous prefix is getopt's own refusal */
	expect_usage(ARGV("-b", "k", "-t", "t", "--mc-tls-k", "x"), "--mc-tls-k");
	/* --vers is not -V: no version printed, a usage error */
	cr_expect_eq(parse(&c, ARGV("-b", "k", "-t", "t", "--vers"), err, sizeof(err)),
		     K2MC_CONFIG_USAGE);
	fflush(stdout);
	n = fread(out, 1, sizeof(out) - 1, cr_get_redirected_stdout());
	out[n] = '\0';
	cr_expect_str_eq(out, "", "printed: %s", out);
	/* a value that looks like an abbreviation is a value */
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--key-prefix", "--writ", "--key", "--val"));
	cr_expect_str_eq(c.key_prefix, "--writ");
	cr_expect_str_eq(c.key_template, "--val");
	expect_ok(&c, ARGV("-b", "k", "-t", "t", "--key={key}", "--value={value}"));
}

Test(config, version_names_the_libraries, .init = cr_redirect_stdout)
{
	struct k2mc_config c;
	char err[256], out[512], want[512];
	size_t n;

	cr_expect_eq(parse(&c, ARGV("--version"), err, sizeof(err)), K2MC_CONFIG_EXIT);
	fflush(stdout);
	n = fread(out, 1, sizeof(out) - 1, cr_get_redirected_stdout());
	out[n] = '\0';
	snprintf(want, sizeof(want), "k2mc %s (librdkafka %s, libmemcached %s)\n",
		 k2mc_config_version(), rd_kafka_version_str(), memcached_lib_version());
	cr_expect_str_eq(out, want);
}

/* Every long option is in --help, the new ones included (doc-check then
 * holds the man page to the same list). */
Test(config, help_lists_the_new_options, .init = cr_redirect_stdout)
{
	static const char *const opts[] = {
		"--distribution",	"--mc-protocol",	  "--mc-tls ",	   "--mc-tls-ca",
		"--mc-tls-cert",	"--mc-tls-key ",	  "--mc-tls-key-password",
		"--mc-tls-server-name", "--mc-tls-insecure",	  "--key ",	   "--value",
		"--ttl-header",		"--ttl-from-timestamp", "--flags ",	   "--flags-header",
		"--on-tombstone",	"--check-config",	  "--log-format",  "--refill ",
		"--refill-from",	"--refill-rate",	  "--refill-ready",
	};
	struct k2mc_config c;
	char err[256], out[16384];
	size_t n;

	cr_expect_eq(parse(&c, ARGV("--help"), err, sizeof(err)), K2MC_CONFIG_EXIT);
	fflush(stdout);
	n = fread(out, 1, sizeof(out) - 1, cr_get_redirected_stdout());
	out[n] = '\0';
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		cr_expect_not_null(strstr(out, opts[i]), "--help lacks '%s'", opts[i]);
}

/* ---- issue 23, item 5: what the start builds, --check-config builds ------------------ */

/* Runs k2mc ($K2MC_BIN, else build/k2mc: make unit builds it) with args and
 * returns its exit code, with the first line of its stderr that is k2mc's
 * own ("k2mc: ...", not a log line of librdkafka's) in line; -1 if it
 * did not end within 20 s (then killed) or could not be run. */
static int run_k2mc(char *const args[], char *line, size_t len)
{
	const char *bin = getenv("K2MC_BIN") != NULL && getenv("K2MC_BIN")[0] != '\0'
				  ? getenv("K2MC_BIN")
				  : "build/k2mc";
	char *argv[64], buf[65536]; /* --help on a usage error is several KiB and grows */
	size_t got = 0;
	int fds[2], status, rc = -1;
	int64_t deadline = (int64_t)time(NULL) + 20;
	pid_t pid;
	int n = 0;

	argv[n++] = (char *)bin;
	for (int i = 0; args[i] != NULL && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	line[0] = '\0';
	cr_assert_eq(access(bin, X_OK), 0, "%s: not built (make build/k2mc)", bin);
	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(fds[1], 2);
		close(fds[0]);
		execv(bin, argv);
		_exit(127);
	}
	close(fds[1]);
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		ssize_t r = read(fds[0], buf + got, sizeof(buf) - 1 - got);

		if (r > 0) {
			got += (size_t)r;
			if (got == sizeof(buf) - 1)
				got = 0; /* only the first line matters; it was read */
			continue;
		}
		if (r == 0)
			break;
		if ((int64_t)time(NULL) > deadline) {
			kill(pid, SIGKILL);
			break;
		}
		usleep(20 * 1000);
	}
	close(fds[0]);
	buf[got] = '\0';
	for (char *p = buf; *p != '\0'; p += strcspn(p, "\n"), p += *p == '\n') {
		if (strncmp(p, "k2mc: ", 6) == 0) {
			snprintf(line, len, "%.*s", (int)strcspn(p, "\n"), p);
			break;
		}
	}
	if (waitpid(pid, &status, 0) == pid && WIFEXITED(status))
		rc = WEXITSTATUS(status);
	return rc;
}

/* The start and --check-config on the same configuration: the same exit
 * status and the same first line, containing needle (and never hidden). */
static void same_stop(char *const args[], const char *needle, const char *hidden)
{
	char *check[64], start_line[1024], check_line[1024];
	int n = 0, start_rc, check_rc;

	for (; args[n] != NULL; n++)
		check[n] = args[n];
	check[n++] = "--check-config";
	check[n] = NULL;
	start_rc = run_k2mc(args, start_line, sizeof(start_line));
	check_rc = run_k2mc(check, check_line, sizeof(check_line));
	cr_expect_eq(start_rc, 2, "the start: exit %d, %s", start_rc, start_line);
	cr_expect_eq(check_rc, start_rc, "--check-config: exit %d (%s); the start: exit %d (%s)",
		     check_rc, check_line, start_rc, start_line);
	cr_expect_str_eq(check_line, start_line, "--check-config and the start stop differently");
	cr_expect_not_null(strstr(start_line, needle), "'%s' does not name %s", start_line, needle);
	if (hidden != NULL)
		cr_expect_null(strstr(start_line, hidden), "'%s' shows %s", start_line, hidden);
}

#define START(...) ((char *[]){ "-b", "127.0.0.1:1", "-t", "t", "-m", "127.0.0.1:1", __VA_ARGS__, NULL })

Test(config, check_config_stops_where_the_start_stops)
{
	char line[1024];
	int rc;

	/* a property librdkafka does not have, or whose value it refuses */
	same_stop(START("-X", "bogus.prop=1"), "-X bogus.prop=1: No such configuration property",
		  NULL);
	same_stop(START("-X", "fetch.wait.max.ms=soon"), "fetch.wait.max.ms", NULL);
	/* under --refill and a dead letter topic too: the same properties */
	same_stop(START("--refill", "--dlq-topic", "dead", "--on-invalid", "dlq", "-X",
			"bogus.prop=1"),
		  "bogus.prop", NULL);
	/* a JAAS configuration: refused, its secret not shown */
	same_stop(START("-X", "sasl.jaas.config=Secret"), "sasl.jaas.config=********", "Secret");
	/* what librdkafka refuses only when it makes the client: a file it reads */
	same_stop(START("-X", "security.protocol=ssl", "-X", "ssl.ca.location=/nonexistent/ca.pem"),
		  "ssl.ca.location", NULL);
	/* and a good one names every configuration it built */
	rc = run_k2mc(START("--refill", "--dlq-topic", "dead", "--on-invalid", "dlq", "-X",
			    "acks=all", "--check-config"),
		      line, sizeof(line));
	cr_expect_eq(rc, 0, "%s", line);
	cr_expect_not_null(strstr(line, "configuration OK"), "%s", line);
	cr_expect_not_null(strstr(line, "consumer, dead letter producer, refill"), "%s", line);
}

/* Issue 26: the registry client's settings and avro without a registry are
 * judged by the start and --check-config alike, a secret not shown. */
Test(config, check_config_stops_on_registry_settings)
{
	same_stop(START("--value-format", "avro"), "needs --schema-registry", NULL);
	same_stop(START("--value-format", "avro", "--schema-registry", "http://127.0.0.1:1",
			"--schema-registry-property", "no.such.setting=1"),
		  "no.such.setting", NULL);
	same_stop(START("--key-format", "avro", "--schema-registry", "http://127.0.0.1:1",
			"--schema-registry-property", "request.timeout.ms=soon"),
		  "request.timeout.ms", NULL);
	same_stop(START("--value-format", "avro", "--schema-registry", "ftp://127.0.0.1:1"),
		  "ftp://", NULL);
}

Test(config, every_client_configuration_has_the_x_properties)
{
	struct k2mc_config c;
	rd_kafka_conf_t *conf;
	char err[512], v[64];
	size_t n;
	int partial;

	expect_ok(&c, ARGV("-b", "k:1", "-t", "t", "--refill", "--dlq-topic", "dead", "--on-invalid",
			   "dlq", "-X", "fetch.wait.max.ms=300", "-X", "client.rack=r1"));
	cr_expect(k2mc_dlq_wanted(&c));
#define EXPECT_PROP(conf, name, want)                                                     \
	do {                                                                                \
		n = sizeof(v);                                                              \
		cr_expect_eq(rd_kafka_conf_get(conf, name, v, &n), RD_KAFKA_CONF_OK, name); \
		cr_expect_str_eq(v, want, "%s", name);                                      \
	} while (0)
	conf = k2mc_group_conf(&c, err, sizeof(err));
	cr_assert_not_null(conf, "%s", err);
	EXPECT_PROP(conf, "client.id", "k2mc");
	EXPECT_PROP(conf, "fetch.wait.max.ms", "300"); /* -X over k2mc's 100 */
	EXPECT_PROP(conf, "client.rack", "r1");
	rd_kafka_conf_destroy(conf);
	conf = k2mc_refill_conf(&c, err, sizeof(err));
	cr_assert_not_null(conf, "%s", err);
	EXPECT_PROP(conf, "client.id", "k2mc-refill");
	EXPECT_PROP(conf, "fetch.wait.max.ms", "300");
	EXPECT_PROP(conf, "client.rack", "r1");
	rd_kafka_conf_destroy(conf);
	conf = k2mc_dlq_conf(&c, err, sizeof(err));
	cr_assert_not_null(conf, "%s", err);
	EXPECT_PROP(conf, "client.id", "k2mc-dlq");
	EXPECT_PROP(conf, "client.rack", "r1");
	rd_kafka_conf_destroy(conf);
#if defined(__SANITIZE_THREAD__)
	/* k2mc_group_check makes a librdkafka handle, whose C11 threads TSan
	 * cannot see without the integration suites' preloaded shim
	 * (tests/tsan_c11_shim.c): the plain and ASan runs check it */
	(void)partial;
	k2mc_config_free(&c);
	return;
#endif
	cr_expect_eq(k2mc_group_check(&c, err, sizeof(err), &partial), 0, "%s", err);
	cr_expect_eq(partial, 0);
	k2mc_config_free(&c);

	/* librdkafka's check of the whole: a file it reads */
	expect_ok(&c, ARGV("-b", "k:1", "-t", "t", "-X", "security.protocol=ssl", "-X",
			   "ssl.ca.location=/nonexistent/ca.pem"));
	cr_expect_eq(k2mc_group_check(&c, err, sizeof(err), &partial), -EINVAL);
	cr_expect_not_null(strstr(err, "ssl.ca.location"), "%s", err);
	k2mc_config_free(&c);
	/* GSSAPI's set-up runs kinit: not made, and said so */
	expect_ok(&c, ARGV("-b", "k:1", "-t", "t", "-X", "security.protocol=sasl_plaintext", "-X",
			   "sasl.mechanisms=GSSAPI"));
	cr_expect_eq(k2mc_group_check(&c, err, sizeof(err), &partial), 0, "%s", err);
	cr_expect_eq(partial, 1);
	k2mc_config_free(&c);
	/* no dead letter producer without a dead letter topic */
	expect_ok(&c, ARGV("-b", "k:1", "-t", "t"));
	cr_expect(!k2mc_dlq_wanted(&c));
	k2mc_config_free(&c);
}

/* The consumer's fetch sizes derive from --max-buffer-bytes (group.c,
 * prefetch_defaults): budget / 256 per partition queue, budget / 4 per
 * Fetch response (at least librdkafka's message.max.bytes); any -X wins, and
 * a -X message.max.bytes or receive.message.max.bytes that librdkafka would
 * refuse beside the derived response size moves it instead. */
Test(config, fetch_sizes_follow_the_budget_and_give_way_to_x)
{
	const struct {
		char **argv;
		const char *kbytes, *fetch_max;
	} cases[] = {
		{ ARGV("-b", "k:1", "-t", "t"), "64", "4194304" },
		{ ARGV("-b", "k:1", "-t", "t", "--max-buffer-bytes", "256m"), "1024", "52428800" },
		{ ARGV("-b", "k:1", "-t", "t", "--max-buffer-bytes", "64m"), "256", "16777216" },
		/* 1m / 4 is under message.max.bytes: librdkafka's floor */
		{ ARGV("-b", "k:1", "-t", "t", "--max-buffer-bytes", "1m"), "64", "1000000" },
		{ ARGV("-b", "k:1", "-t", "t", "-X", "fetch.max.bytes=2000000"), "64", "2000000" },
		{ ARGV("-b", "k:1", "-t", "t", "-X", "queued.max.messages.kbytes=4096"), "4096",
		  "4194304" },
		{ ARGV("-b", "k:1", "-t", "t", "-X", "message.max.bytes=8000000"), "64", "8000000" },
		{ ARGV("-b", "k:1", "-t", "t", "-X", "receive.message.max.bytes=2000512"), "64",
		  "2000000" },
	};
	struct k2mc_config c;
	rd_kafka_conf_t *conf;
	char err[512], v[64];
	size_t n;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		expect_ok(&c, cases[i].argv);
		conf = k2mc_group_conf(&c, err, sizeof(err));
		cr_assert_not_null(conf, "case %zu: %s", i, err);
		EXPECT_PROP(conf, "queued.max.messages.kbytes", cases[i].kbytes);
		EXPECT_PROP(conf, "fetch.max.bytes", cases[i].fetch_max);
		rd_kafka_conf_destroy(conf);
		k2mc_config_free(&c);
	}
}
