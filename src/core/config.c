/* Flag parsing for k2mc (kcat conventions: -b -t -G -X -o -e -q -v).
 * Validates ranges here so the rest of the program can trust the struct. */
#include "core/config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef K2MC_VERSION
#define K2MC_VERSION "0.1.0"
#endif

enum {
	OPT_WRITERS = 256,
	OPT_RING_SIZE,
	OPT_BATCH,
	OPT_COMMIT_INTERVAL,
	OPT_TTL,
	OPT_KEY_PREFIX,
	OPT_STATS_INTERVAL,
	OPT_SHUTDOWN_TIMEOUT,
	OPT_ON_INVALID,
	OPT_DLQ_TOPIC,
	OPT_MAX_VALUE,
	OPT_MC_EJECT,
};

static const struct option long_opts[] = {
	{ "brokers", required_argument, NULL, 'b' },
	{ "topic", required_argument, NULL, 't' },
	{ "group", required_argument, NULL, 'G' },
	{ "memcached", required_argument, NULL, 'm' },
	{ "offset", required_argument, NULL, 'o' },
	{ "exit", no_argument, NULL, 'e' },
	{ "count", required_argument, NULL, 'c' },
	{ "writers", required_argument, NULL, OPT_WRITERS },
	{ "ring-size", required_argument, NULL, OPT_RING_SIZE },
	{ "batch", required_argument, NULL, OPT_BATCH },
	{ "commit-interval-ms", required_argument, NULL, OPT_COMMIT_INTERVAL },
	{ "ttl", required_argument, NULL, OPT_TTL },
	{ "key-prefix", required_argument, NULL, OPT_KEY_PREFIX },
	{ "stats-interval-ms", required_argument, NULL, OPT_STATS_INTERVAL },
	{ "shutdown-timeout-ms", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT },
	{ "on-invalid", required_argument, NULL, OPT_ON_INVALID },
	{ "dlq-topic", required_argument, NULL, OPT_DLQ_TOPIC },
	{ "max-value-bytes", required_argument, NULL, OPT_MAX_VALUE },
	{ "mc-eject", no_argument, NULL, OPT_MC_EJECT },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

void k2mc_config_usage(FILE *out)
{
	fprintf(out,
		"Usage: k2mc -b BROKERS -t TOPIC [-t TOPIC ...] [options]\n"
		"Copy records from Kafka topics into Memcached: key = prefix + record key,\n"
		"value = record value, a null value deletes the key. At-least-once: offsets\n"
		"are committed only below records Memcached acknowledged.\n"
		"\n"
		"Kafka:\n"
		"  -b BROKERS             bootstrap servers, host:port[,host:port...] (required)\n"
		"  -t TOPIC               topic to consume, repeatable (required)\n"
		"  -G GROUP               consumer group id (default k2mc)\n"
		"  -X PROP=VALUE          any librdkafka property (security.protocol, sasl.*, ...)\n"
		"  -o beginning|end       where a group with no committed offset starts (default beginning)\n"
		"  -e                     exit 0 when every assigned partition is written and committed\n"
		"                         up to its end offset\n"
		"  -c N                   stop (drain, commit, exit 0) after consuming N records\n"
		"Memcached:\n"
		"  -m HOST:PORT[,...]     servers, consistent (ketama) hashing (default 127.0.0.1:11211)\n"
		"  --key-prefix STR       prepended to every record key\n"
		"  --ttl SECONDS          expiry of written items (default 0: none)\n"
		"  --max-value-bytes N    largest value to send (default: the servers' item_size_max)\n"
		"  --mc-eject             remap keys of a down server to the others (libmemcached\n"
		"                         auto-eject) instead of waiting for it (default: wait)\n"
		"Records Memcached cannot take (no key, bad key, value too large):\n"
		"  --on-invalid skip|hash|dlq|fail   skip and count (default), hash bad keys,\n"
		"                         produce to --dlq-topic, or stop with exit 1\n"
		"  --dlq-topic TOPIC      dead letter topic for --on-invalid dlq\n"
		"Pipeline:\n"
		"  --writers N            writer threads, each with its own connections (default: CPUs)\n"
		"  --ring-size N          slots per partition/writer ring, power of two (default 4096)\n"
		"  --batch N              records per pipelined, acknowledged exchange (default 512)\n"
		"  --commit-interval-ms N offset commit interval (default 1000)\n"
		"  --stats-interval-ms N  stats line interval on stderr, 0 = off (default 5000)\n"
		"  --shutdown-timeout-ms N  how long shutdown waits for writes (default 30000)\n"
		"Other:\n"
		"  -v, -q                 more / less logging\n"
		"  -h, -V                 help, version\n"
		"Exit status: 0 done, 1 runtime failure, 2 bad command line.\n");
}

static int set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Whole-string integer in [lo, hi]; rejects "", "12x", overflow. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	/* strtol would also take leading blanks and '+' */
	if (!((*s >= '0' && *s <= '9') || (*s == '-' && s[1] >= '0' && s[1] <= '9')))
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

int k2mc_config_parse_servers(struct k2mc_config *c, const char *list, char *err, size_t errlen)
{
	const char *p = list;

	c->nservers = 0;
	if (*p == '\0')
		return set_err(err, errlen, "-m: empty server list");
	while (*p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		const char *colon = memrchr(p, ':', len);
		char portbuf[16];
		long port;
		size_t hlen;

		if (c->nservers == K2MC_MAX_SERVERS)
			return set_err(err, errlen, "-m: more than %d servers", K2MC_MAX_SERVERS);
		if (colon == NULL)
			return set_err(err, errlen, "-m: '%.*s' is not HOST:PORT", (int)len, p);
		hlen = (size_t)(colon - p);
		if (hlen == 0 || hlen >= sizeof(c->servers[0].host))
			return set_err(err, errlen, "-m: bad host in '%.*s'", (int)len, p);
		if (len - hlen - 1 == 0 || len - hlen - 1 >= sizeof(portbuf))
			return set_err(err, errlen, "-m: bad port in '%.*s'", (int)len, p);
		memcpy(portbuf, colon + 1, len - hlen - 1);
		portbuf[len - hlen - 1] = '\0';
		if (parse_long(portbuf, 1, 65535, &port) != 0)
			return set_err(err, errlen, "-m: bad port in '%.*s'", (int)len, p);
		memcpy(c->servers[c->nservers].host, p, hlen);
		c->servers[c->nservers].host[hlen] = '\0';
		c->servers[c->nservers].port = (int)port;
		c->nservers++;
		p += len;
		if (*p == ',') {
			p++;
			if (*p == '\0')
				return set_err(err, errlen, "-m: trailing comma in '%s'", list);
		}
	}
	return 0;
}

/* memcached text protocol forbids whitespace and control bytes in keys */
static int key_bytes_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch <= 0x20 || ch == 0x7f)
			return 0;
	}
	return 1;
}

static long ncpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? n : 1;
}

/* Records the reason and leaves k2mc_config_parse with a usage error. */
#define USAGE(...)                                      \
	do {                                            \
		set_err(err, errlen, __VA_ARGS__);      \
		return K2MC_CONFIG_USAGE;               \
	} while (0)

enum k2mc_config_result k2mc_config_parse(struct k2mc_config *c, int argc, char **argv,
					  char *err, size_t errlen)
{
	const char *servers = "127.0.0.1:11211";
	long v;
	int opt;

	memset(c, 0, sizeof(*c));
	c->group = "k2mc";
	c->offset_beginning = 1;
	c->writers = (int)(ncpus() < 64 ? ncpus() : 64);
	c->ring_size = 4096;
	c->batch = 512;
	c->commit_interval_ms = 1000;
	c->key_prefix = "";
	c->stats_interval_ms = 5000;
	c->shutdown_timeout_ms = 30000;
	c->verbosity = 1;

	/* 0, not 1: glibc only forgets a half-parsed "-abc" bundle from an
	 * earlier call when optind is 0 */
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":b:t:G:m:X:o:ec:vqhV", long_opts, NULL)) != -1) {
		switch (opt) {
		case 'b':
			c->brokers = optarg;
			break;
		case 't':
			if (c->ntopics == K2MC_MAX_TOPICS)
				USAGE("-t: more than %d topics", K2MC_MAX_TOPICS);
			if (*optarg == '\0')
				USAGE("-t: empty topic name");
			c->topics[c->ntopics++] = optarg;
			break;
		case 'G':
			if (*optarg == '\0')
				USAGE("-G: empty group id");
			c->group = optarg;
			break;
		case 'm':
			servers = optarg;
			break;
		case 'X':
			if (strchr(optarg, '=') == NULL || optarg[0] == '=')
				USAGE("-X: expected PROP=VALUE, got '%s'", optarg);
			if (c->nxprops == K2MC_MAX_XPROPS)
				USAGE("-X: more than %d properties", K2MC_MAX_XPROPS);
			c->xprops[c->nxprops++] = optarg;
			break;
		case 'o':
			if (strcmp(optarg, "beginning") == 0)
				c->offset_beginning = 1;
			else if (strcmp(optarg, "end") == 0)
				c->offset_beginning = 0;
			else
				USAGE("-o: expected 'beginning' or 'end', got '%s'", optarg);
			break;
		case 'e':
			c->exit_at_eof = 1;
			break;
		case 'c':
			if (parse_long(optarg, 1, LONG_MAX, &v) != 0)
				USAGE("-c: expected a record count >= 1, got '%s'", optarg);
			c->max_records = (uint64_t)v;
			break;
		case 'v':
			c->verbosity = 2;
			break;
		case 'q':
			c->verbosity = 0;
			break;
		case 'h':
			k2mc_config_usage(stdout);
			return K2MC_CONFIG_EXIT;
		case 'V':
			printf("k2mc %s\n", K2MC_VERSION);
			return K2MC_CONFIG_EXIT;
		case OPT_WRITERS:
			if (parse_long(optarg, 1, 256, &v) != 0)
				USAGE("--writers: expected 1..256, got '%s'", optarg);
			c->writers = (int)v;
			break;
		case OPT_RING_SIZE:
			if (parse_long(optarg, 16, 1L << 20, &v) != 0 || (v & (v - 1)) != 0)
				USAGE("--ring-size: expected a power of two in 16..1048576, got '%s'", optarg);
			c->ring_size = (uint32_t)v;
			break;
		case OPT_BATCH:
			if (parse_long(optarg, 1, 65536, &v) != 0)
				USAGE("--batch: expected 1..65536, got '%s'", optarg);
			c->batch = (int)v;
			break;
		case OPT_COMMIT_INTERVAL:
			if (parse_long(optarg, 10, 3600000, &v) != 0)
				USAGE("--commit-interval-ms: expected 10..3600000, got '%s'", optarg);
			c->commit_interval_ms = (int)v;
			break;
		case OPT_TTL:
			/* memcached reads exptimes over 30 days as absolute unix times */
			if (parse_long(optarg, 0, INT32_MAX, &v) != 0)
				USAGE("--ttl: expected 0..%d seconds, got '%s'", INT32_MAX, optarg);
			c->ttl = (uint32_t)v;
			break;
		case OPT_KEY_PREFIX:
			c->key_prefix = optarg;
			break;
		case OPT_STATS_INTERVAL:
			if (parse_long(optarg, 0, 3600000, &v) != 0)
				USAGE("--stats-interval-ms: expected 0..3600000, got '%s'", optarg);
			c->stats_interval_ms = (int)v;
			break;
		case OPT_SHUTDOWN_TIMEOUT:
			if (parse_long(optarg, 0, 3600000, &v) != 0)
				USAGE("--shutdown-timeout-ms: expected 0..3600000, got '%s'", optarg);
			c->shutdown_timeout_ms = (int)v;
			break;
		case OPT_ON_INVALID:
			if (strcmp(optarg, "skip") == 0)
				c->on_invalid = K2MC_INVALID_SKIP;
			else if (strcmp(optarg, "hash") == 0)
				c->on_invalid = K2MC_INVALID_HASH;
			else if (strcmp(optarg, "dlq") == 0)
				c->on_invalid = K2MC_INVALID_DLQ;
			else if (strcmp(optarg, "fail") == 0)
				c->on_invalid = K2MC_INVALID_FAIL;
			else
				USAGE("--on-invalid: expected skip, hash, dlq or fail, got '%s'", optarg);
			break;
		case OPT_DLQ_TOPIC:
			if (*optarg == '\0')
				USAGE("--dlq-topic: empty topic name");
			c->dlq_topic = optarg;
			break;
		case OPT_MAX_VALUE:
			if (parse_long(optarg, 1, 1L << 30, &v) != 0)
				USAGE("--max-value-bytes: expected 1..%ld, got '%s'", 1L << 30, optarg);
			c->max_value_bytes = (uint64_t)v;
			break;
		case OPT_MC_EJECT:
			c->mc_eject = 1;
			break;
		case ':':
			if (optopt != 0 && optopt < 256 && strncmp(argv[optind - 1], "--", 2) != 0)
				USAGE("option '-%c' needs a value", optopt);
			USAGE("option '%s' needs a value", argv[optind - 1]);
		default:
			/* getopt advances optind only after the last letter of a
			 * bundle like -Zq: name the letter, not argv[optind-1] */
			if (optopt != 0 && optopt < 256 && strncmp(argv[optind - 1], "--", 2) != 0)
				USAGE("unknown option '-%c'", optopt);
			USAGE("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		USAGE("unexpected argument '%s'", argv[optind]);
	if (c->brokers == NULL || *c->brokers == '\0')
		USAGE("missing -b BROKERS");
	if (c->ntopics == 0)
		USAGE("missing -t TOPIC");
	c->key_prefix_len = strlen(c->key_prefix);
	if (c->key_prefix_len >= K2MC_MC_KEY_MAX || !key_bytes_ok(c->key_prefix, c->key_prefix_len))
		USAGE("--key-prefix: must be under %d bytes with no spaces or control characters", K2MC_MC_KEY_MAX);
	if (c->on_invalid == K2MC_INVALID_DLQ && c->dlq_topic == NULL)
		USAGE("--on-invalid dlq needs --dlq-topic TOPIC");
	if (k2mc_config_parse_servers(c, servers, err, errlen) != 0)
		return K2MC_CONFIG_USAGE;
	return K2MC_CONFIG_OK;
}
