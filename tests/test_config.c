/* Criterion suite for command-line parsing (core/config.h): defaults, every
 * flag in short and long form, and every usage error, which must come back as
 * K2MC_CONFIG_USAGE with a one-line message naming the flag at fault. It does
 * not start anything. */
#include "core/config.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	char err[256];

	cr_assert_eq(parse(c, argv, err, sizeof(err)), K2MC_CONFIG_OK, "unexpected error: %s", err);
}

/* The command line is refused, with a one-line message that names `flag`. */
static void expect_usage(char **argv, const char *flag)
{
	struct k2mc_config c;
	char err[256];
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
