/* Configuration for k2mc: flags (kcat conventions: -b -t -G -X -o -e -q -v,
 * -F FILE), key=value files and K2MC_* environment variables, one code path
 * for all three (apply()). Validates ranges, and settings that contradict
 * each other or k2mc's guarantees, here so the rest of the program can trust
 * the struct. Not a place that opens connections. */
#include "core/config.h"

#include <errno.h>
#include <ctype.h>
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
	OPT_MAX_BUFFER,
	OPT_MC_EJECT,
	OPT_METRICS_ADDR,
	OPT_STATS_JSON,
	OPT_DUMP_CONFIG,
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
	{ "max-buffer-bytes", required_argument, NULL, OPT_MAX_BUFFER },
	{ "mc-eject", no_argument, NULL, OPT_MC_EJECT },
	{ "metrics-addr", required_argument, NULL, OPT_METRICS_ADDR },
	{ "stats-json", required_argument, NULL, OPT_STATS_JSON },
	{ "config", required_argument, NULL, 'F' },
	{ "dump-config", no_argument, NULL, OPT_DUMP_CONFIG },
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
		"       k2mc -F FILE [options]\n"
		"Copy records from Kafka topics into Memcached: key = prefix + record key,\n"
		"value = record value, a null value deletes the key. At-least-once: offsets\n"
		"are committed only below records Memcached acknowledged.\n"
		"\n"
		"Kafka:\n"
		"  -b, --brokers BROKERS     bootstrap servers, host:port[,host:port...] (required)\n"
		"  -t, --topic TOPIC         topic to consume, repeatable; a name starting with ^ is a\n"
		"                            regex matching topics (librdkafka) (required)\n"
		"  -G, --group GROUP         consumer group id (default k2mc)\n"
		"  -X PROP=VALUE             any librdkafka property (security.protocol, sasl.*, ...);\n"
		"                            not group.id (use -G), nor auto commit or offset store\n"
		"  -o, --offset beginning|end  where a group with no committed offset starts\n"
		"                            (default beginning)\n"
		"  -e, --exit                exit 0 when every assigned partition is written and\n"
		"                            committed up to its end offset (progress line on a terminal)\n"
		"  -c, --count N             stop (drain, commit, exit 0) after consuming N records\n"
		"Memcached:\n"
		"  -m, --memcached HOST:PORT[,...]  servers, consistent (ketama) hashing\n"
		"                            (default 127.0.0.1:11211)\n"
		"  --key-prefix STR          prepended to every record key\n"
		"  --ttl SECONDS             expiry of written items (default 0: none); over 2592000\n"
		"                            (30 days): an absolute unix time, not in the past\n"
		"  --max-value-bytes N       largest value to send (default: the servers' item_size_max)\n"
		"  --mc-eject                remap keys of a down server to the others (libmemcached\n"
		"                            auto-eject) instead of waiting for it (default: wait)\n"
		"Records Memcached cannot take (no key, bad key, value too large):\n"
		"  --on-invalid skip|hash|dlq|fail  skip and count (default), hash bad keys,\n"
		"                            produce to --dlq-topic, or stop with exit 1\n"
		"  --dlq-topic TOPIC         dead letter topic for --on-invalid dlq\n"
		"Pipeline:\n"
		"  --writers N               writer threads, each with its own connections (default: CPUs)\n"
		"  --ring-size N             slots per partition/writer ring, power of two (default 4096)\n"
		"  --max-buffer-bytes N      record bytes held in rings and batches at most; consumers\n"
		"                            wait when it is reached; k, m, g suffixes (default 256m)\n"
		"  --batch N                 records per pipelined, acknowledged exchange (default 512)\n"
		"  --commit-interval-ms N    offset commit interval (default 1000)\n"
		"  --shutdown-timeout-ms N   how long shutdown waits for writes (default 30000)\n"
		"Observability:\n"
		"  --stats-interval-ms N     stats line interval on stderr, 0 = off (default 5000)\n"
		"  --stats-json FILE         one JSON object per stats interval, appended to FILE\n"
		"                            (- = stdout)\n"
		"  --metrics-addr [HOST:]PORT  serve /metrics (Prometheus), /healthz and /readyz over\n"
		"                            HTTP; HOST defaults to 127.0.0.1 (default: off)\n"
		"Configuration:\n"
		"  -F, --config FILE         key=value lines: k2mc's long options (writers=4, topic=t,\n"
		"                            exit=true) and librdkafka properties; # comments.\n"
		"                            The command line overrides the file\n"
		"  --dump-config             print the effective configuration, secrets masked, exit 0\n"
		"  Environment, below the file: K2MC_BROKERS, K2MC_TOPICS (comma-separated),\n"
		"  K2MC_GROUP, K2MC_MEMCACHED, K2MC_WRITERS\n"
		"Other:\n"
		"  -v, --verbose, -q, --quiet  more / less logging\n"
		"  -h, --help, -V, --version   help, version\n"
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

/* Bytes: digits with an optional k, m or g (KiB, MiB, GiB) suffix, any case;
 * rejects "", "1.5m", "-1", "1mb", and anything over INT64_MAX. */
static int parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	uint64_t mult = 1;
	char *end;

	if (!(*s >= '0' && *s <= '9'))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		mult = 1ull << 10;
		end++;
		break;
	case 'm':
	case 'M':
		mult = 1ull << 20;
		end++;
		break;
	case 'g':
	case 'G':
		mult = 1ull << 30;
		end++;
		break;
	default:
		break;
	}
	if (*end != '\0' || v > (uint64_t)INT64_MAX / mult)
		return -EINVAL;
	*out = (uint64_t)v * mult;
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

/* Where a setting came from, in increasing precedence. */
enum level { LVL_DEFAULT = 0, LVL_ENV, LVL_FILE, LVL_ARGV };

struct parse_state {
	const char *servers;     /* checked once all sources are read */
	enum level servers_level;
	enum level topics_level; /* the level the topics list came from */
	int line;                /* the -F line being applied, 0 outside the file */
	/* where each c->xprops[i] came from, for the checks made once every
	 * source is read */
	enum level xlevel[K2MC_MAX_XPROPS];
	int xline[K2MC_MAX_XPROPS];
};

struct k2mc_config_chunk {
	struct k2mc_config_chunk *next;
	char data[];
};

/* A NUL-terminated copy of s[0..n) that lives as long as c. */
static char *own(struct k2mc_config *c, const char *s, size_t n)
{
	struct k2mc_config_chunk *k = malloc(sizeof(*k) + n + 1);

	if (k == NULL)
		return NULL;
	memcpy(k->data, s, n);
	k->data[n] = '\0';
	k->next = c->owned;
	c->owned = k;
	return k->data;
}

void k2mc_config_free(struct k2mc_config *c)
{
	while (c->owned != NULL) {
		struct k2mc_config_chunk *next = c->owned->next;

		free(c->owned);
		c->owned = next;
	}
}

/* "[V6]:PORT", "HOST:PORT", ":PORT" or "PORT"; no host means 127.0.0.1, so
 * the endpoint is reachable from elsewhere only if the user names an
 * address. 0 or -EINVAL. */
static int parse_listen_addr(const char *s, char *host, size_t hostlen, int *port)
{
	const char *p = s, *h = NULL;
	size_t hl = 0;
	long v;

	if (*p == '[') {
		const char *close = strchr(p, ']');

		if (close == NULL || close[1] != ':')
			return -EINVAL;
		h = p + 1;
		hl = (size_t)(close - h);
		p = close + 2;
	} else if (strchr(p, ':') != NULL) {
		const char *colon = strchr(p, ':');

		if (strchr(colon + 1, ':') != NULL)
			return -EINVAL; /* an IPv6 address needs brackets */
		h = p;
		hl = (size_t)(colon - p);
		p = colon + 1;
	}
	if (parse_long(p, 1, 65535, &v) != 0)
		return -EINVAL;
	if (hl == 0) {
		h = "127.0.0.1";
		hl = strlen(h);
	}
	if (hl >= hostlen)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)v;
	return 0;
}

/* Records the reason and leaves the calling function with a usage error. */
#define USAGE(...)                                      \
	do {                                            \
		set_err(err, errlen, __VA_ARGS__);      \
		return K2MC_CONFIG_USAGE;               \
	} while (0)

/* One setting, from whichever source: opt is the getopt code, arg its value
 * (which must outlive c). Messages name the flag; the caller adds where the
 * setting came from. */
static enum k2mc_config_result apply(struct k2mc_config *c, struct parse_state *st,
				     enum level lvl, int opt, const char *arg, char *err,
				     size_t errlen)
{
	long v;

	switch (opt) {
	case 'b':
		c->brokers = arg;
		break;
	case 't':
		if (lvl > st->topics_level) {
			/* a higher level replaces the list it would otherwise extend */
			c->ntopics = 0;
			st->topics_level = lvl;
		}
		if (c->ntopics == K2MC_MAX_TOPICS)
			USAGE("-t: more than %d topics", K2MC_MAX_TOPICS);
		if (*arg == '\0')
			USAGE("-t: empty topic name");
		c->topics[c->ntopics++] = arg;
		break;
	case 'G':
		if (*arg == '\0')
			USAGE("-G: empty group id");
		c->group = arg;
		break;
	case 'm':
		st->servers = arg;
		st->servers_level = lvl;
		break;
	case 'X':
		if (strchr(arg, '=') == NULL || arg[0] == '=')
			USAGE("-X: expected PROP=VALUE, got '%s'", arg);
		if (c->nxprops == K2MC_MAX_XPROPS)
			USAGE("-X: more than %d properties", K2MC_MAX_XPROPS);
		st->xlevel[c->nxprops] = lvl;
		st->xline[c->nxprops] = st->line;
		c->xprops[c->nxprops++] = arg;
		break;
	case 'o':
		if (strcmp(arg, "beginning") == 0)
			c->offset_beginning = 1;
		else if (strcmp(arg, "end") == 0)
			c->offset_beginning = 0;
		else
			USAGE("-o: expected 'beginning' or 'end', got '%s'", arg);
		break;
	case 'e':
		c->exit_at_eof = 1;
		break;
	case 'c':
		if (parse_long(arg, 1, LONG_MAX, &v) != 0)
			USAGE("-c: expected a record count >= 1, got '%s'", arg);
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
	case 'F':
		break; /* read before everything else, see k2mc_config_parse */
	case OPT_WRITERS:
		if (parse_long(arg, 1, 256, &v) != 0)
			USAGE("--writers: expected 1..256, got '%s'", arg);
		c->writers = (int)v;
		break;
	case OPT_RING_SIZE:
		if (parse_long(arg, 16, 1L << 20, &v) != 0 || (v & (v - 1)) != 0)
			USAGE("--ring-size: expected a power of two in 16..1048576, got '%s'", arg);
		c->ring_size = (uint32_t)v;
		break;
	case OPT_BATCH:
		if (parse_long(arg, 1, 65536, &v) != 0)
			USAGE("--batch: expected 1..65536, got '%s'", arg);
		c->batch = (int)v;
		break;
	case OPT_COMMIT_INTERVAL:
		if (parse_long(arg, 10, 3600000, &v) != 0)
			USAGE("--commit-interval-ms: expected 10..3600000, got '%s'", arg);
		c->commit_interval_ms = (int)v;
		break;
	case OPT_TTL:
		/* memcached reads exptimes over 30 days as absolute unix times */
		if (parse_long(arg, 0, INT32_MAX, &v) != 0)
			USAGE("--ttl: expected 0..%d seconds, got '%s'", INT32_MAX, arg);
		if (v > K2MC_TTL_RELATIVE_MAX && v <= (long)time(NULL))
			USAGE("--ttl: %ld is over 30 days, so memcached reads it as an absolute unix "
			      "time, and that time has passed: every item would be stored already "
			      "expired; a relative TTL must be <= %d",
			      v, K2MC_TTL_RELATIVE_MAX);
		c->ttl = (uint32_t)v;
		break;
	case OPT_KEY_PREFIX:
		c->key_prefix = arg;
		break;
	case OPT_STATS_INTERVAL:
		if (parse_long(arg, 0, 3600000, &v) != 0)
			USAGE("--stats-interval-ms: expected 0..3600000, got '%s'", arg);
		c->stats_interval_ms = (int)v;
		break;
	case OPT_SHUTDOWN_TIMEOUT:
		if (parse_long(arg, 0, 3600000, &v) != 0)
			USAGE("--shutdown-timeout-ms: expected 0..3600000, got '%s'", arg);
		c->shutdown_timeout_ms = (int)v;
		break;
	case OPT_ON_INVALID:
		if (strcmp(arg, "skip") == 0)
			c->on_invalid = K2MC_INVALID_SKIP;
		else if (strcmp(arg, "hash") == 0)
			c->on_invalid = K2MC_INVALID_HASH;
		else if (strcmp(arg, "dlq") == 0)
			c->on_invalid = K2MC_INVALID_DLQ;
		else if (strcmp(arg, "fail") == 0)
			c->on_invalid = K2MC_INVALID_FAIL;
		else
			USAGE("--on-invalid: expected skip, hash, dlq or fail, got '%s'", arg);
		break;
	case OPT_DLQ_TOPIC:
		if (*arg == '\0')
			USAGE("--dlq-topic: empty topic name");
		c->dlq_topic = arg;
		break;
	case OPT_MAX_VALUE:
		if (parse_long(arg, 1, 1L << 30, &v) != 0)
			USAGE("--max-value-bytes: expected 1..%ld, got '%s'", 1L << 30, arg);
		c->max_value_bytes = (uint64_t)v;
		break;
	case OPT_MAX_BUFFER:
		if (parse_size(arg, &c->max_buffer_bytes) != 0 ||
		    c->max_buffer_bytes < K2MC_MAX_BUFFER_MIN)
			USAGE("--max-buffer-bytes: expected bytes, or a number with a k, m or g suffix "
			      "(KiB, MiB, GiB), at least 1m, got '%s'",
			      arg);
		break;
	case OPT_MC_EJECT:
		c->mc_eject = 1;
		break;
	case OPT_METRICS_ADDR:
		if (parse_listen_addr(arg, c->metrics_host, sizeof(c->metrics_host),
				      &c->metrics_port) != 0)
			USAGE("--metrics-addr: expected [HOST:]PORT or [IPV6]:PORT, got '%s'", arg);
		break;
	case OPT_STATS_JSON:
		if (*arg == '\0')
			USAGE("--stats-json: expected a file name or -");
		c->stats_json = arg;
		break;
	case OPT_DUMP_CONFIG:
		c->dump_config = 1;
		break;
	default:
		USAGE("internal error: option %d has no handler", opt);
	}
	return K2MC_CONFIG_OK;
}

/* Prefixes err with where the setting came from ("FILE:3: ", "K2MC_X: "). */
__attribute__((format(printf, 3, 4))) static void blame(char *err, size_t errlen,
							const char *fmt, ...)
{
	char where[300], msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(where, sizeof(where), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "%s", err);
	snprintf(err, errlen, "%s: %s", where, msg);
}

static char *trim(char *s, char *end)
{
	while (s < end && isspace((unsigned char)*s))
		s++;
	while (end > s && isspace((unsigned char)end[-1]))
		end--;
	*end = '\0';
	return s;
}

/* ---- environment ---------------------------------------------------------- */

static const struct {
	const char *name;
	int opt;
} env_vars[] = {
	{ "K2MC_BROKERS", 'b' }, { "K2MC_TOPICS", 't' },	  { "K2MC_GROUP", 'G' },
	{ "K2MC_MEMCACHED", 'm' }, { "K2MC_WRITERS", OPT_WRITERS },
};

static enum k2mc_config_result apply_env(struct k2mc_config *c, struct parse_state *st,
					 char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++) {
		const char *v = getenv(env_vars[i].name), *p;
		enum k2mc_config_result r = K2MC_CONFIG_OK;

		if (v == NULL || *v == '\0')
			continue;
		/* K2MC_TOPICS is a comma-separated list; the others one value */
		for (p = v; r == K2MC_CONFIG_OK && *p != '\0';) {
			size_t n = env_vars[i].opt == 't' ? strcspn(p, ",") : strlen(p);
			char *val = own(c, p, n);

			if (val == NULL)
				USAGE("%s: out of memory", env_vars[i].name);
			p += n;
			if (*p == ',')
				p++;
			if (env_vars[i].opt == 't') {
				val = trim(val, val + n); /* "a, b" */
				if (*val == '\0')
					continue;
			}
			r = apply(c, st, LVL_ENV, env_vars[i].opt, val, err, errlen);
		}
		if (r != K2MC_CONFIG_OK) {
			blame(err, errlen, "%s", env_vars[i].name);
			return r;
		}
	}
	return K2MC_CONFIG_OK;
}

/* ---- -F FILE ----------------------------------------------------------------- */

#define CONFIG_FILE_MAX (1 << 20)

/* true|false and friends for flags without a value ("exit=true"). */
static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "true", "1", "yes", "on" };
	static const char *const no[] = { "false", "0", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -EINVAL;
}

/* A flag without a value, set to false from a file. */
static void unset_flag(struct k2mc_config *c, int opt)
{
	switch (opt) {
	case 'e':
		c->exit_at_eof = 0;
		break;
	case 'v':
	case 'q':
		c->verbosity = 1;
		break;
	case OPT_MC_EJECT:
		c->mc_eject = 0;
		break;
	case OPT_DUMP_CONFIG:
		c->dump_config = 0;
		break;
	default:
		break;
	}
}

static enum k2mc_config_result apply_line(struct k2mc_config *c, struct parse_state *st,
					  char *key, char *val, char *err, size_t errlen)
{
	const struct option *o;
	int on;

	for (o = long_opts; o->name != NULL; o++)
		if (strcmp(o->name, key) == 0)
			break;
	if (o->name == NULL) {
		/* not one of ours: a librdkafka property, as with -X */
		char *prop = own(c, key, strlen(key) + 1 + strlen(val));

		if (prop == NULL)
			USAGE("out of memory");
		sprintf(prop, "%s=%s", key, val);
		return apply(c, st, LVL_FILE, 'X', prop, err, errlen);
	}
	if (o->val == 'F' || o->val == 'h' || o->val == 'V')
		USAGE("'%s' is not allowed in a config file", key);
	if (o->has_arg == no_argument) {
		if (parse_bool(val, &on) != 0)
			USAGE("%s: expected true or false, got '%s'", key, val);
		if (!on) {
			unset_flag(c, o->val);
			return K2MC_CONFIG_OK;
		}
		return apply(c, st, LVL_FILE, o->val, NULL, err, errlen);
	}
	return apply(c, st, LVL_FILE, o->val, val, err, errlen);
}

static enum k2mc_config_result apply_file(struct k2mc_config *c, struct parse_state *st,
					  const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL, *p, *end, *nul;
	size_t len;
	int lineno = 0;
	enum k2mc_config_result r = K2MC_CONFIG_OK;

	if (f == NULL)
		USAGE("-F %s: %s", path, strerror(errno));
	buf = malloc(CONFIG_FILE_MAX + 1);
	if (buf == NULL) {
		fclose(f);
		USAGE("-F %s: out of memory", path);
	}
	len = fread(buf, 1, CONFIG_FILE_MAX + 1, f);
	if (ferror(f) || len > CONFIG_FILE_MAX) {
		set_err(err, errlen, "-F %s: %s", path,
			ferror(f) ? strerror(errno) : "larger than 1 MiB");
		r = K2MC_CONFIG_USAGE;
		goto out;
	}
	/* Lines are C strings from here on: a NUL would silently end one. */
	nul = memchr(buf, '\0', len);
	if (nul != NULL) {
		for (const char *q = buf; q < nul; q++)
			lineno += *q == '\n';
		set_err(err, errlen,
			"-F %s:%d: NUL byte: a config file is UTF-8 text (is this one UTF-16, or "
			"binary?)",
			path, lineno + 1);
		r = K2MC_CONFIG_USAGE;
		goto out;
	}
	/* the values stay in this copy: c points into it */
	p = own(c, buf, len);
	if (p == NULL) {
		set_err(err, errlen, "-F %s: out of memory", path);
		r = K2MC_CONFIG_USAGE;
		goto out;
	}
	end = p + len;
	/* A UTF-8 byte order mark, as some Windows editors write: not part of
	 * the first key. */
	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	for (; p < end && r == K2MC_CONFIG_OK; lineno++) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), *line, *eq;

		if (nl == NULL)
			nl = end;
		line = trim(p, nl);
		p = nl + 1;
		if (*line == '\0' || *line == '#')
			continue;
		eq = strchr(line, '=');
		if (eq == NULL || eq == line) {
			set_err(err, errlen, "expected key=value, got '%.80s'", line);
			r = K2MC_CONFIG_USAGE;
		} else {
			st->line = lineno + 1;
			r = apply_line(c, st, trim(line, eq), trim(eq + 1, eq + 1 + strlen(eq + 1)),
				       err, errlen);
			st->line = 0;
		}
		if (r != K2MC_CONFIG_OK)
			blame(err, errlen, "-F %s:%d", path, lineno + 1);
	}
out:
	free(buf);
	fclose(f);
	return r;
}

/* ---- command line ------------------------------------------------------------ */

static const char short_opts[] = ":b:t:G:m:X:o:ec:vqhVF:";

/* Names the option getopt stopped at: getopt advances optind only after
 * the last letter of a bundle like -Zq, so name the letter then, not
 * argv[optind-1]. */
static enum k2mc_config_result bad_option(int opt, char **argv, char *err, size_t errlen)
{
	int dashdash = strncmp(argv[optind - 1], "--", 2) == 0;

	if (opt == ':') {
		if (optopt != 0 && optopt < 256 && !dashdash)
			USAGE("option '-%c' needs a value", optopt);
		USAGE("option '%s' needs a value", argv[optind - 1]);
	}
	if (optopt != 0 && optopt < 256 && !dashdash)
		USAGE("unknown option '-%c'", optopt);
	USAGE("unknown option '%s'", argv[optind - 1]);
}

static void set_defaults(struct k2mc_config *c)
{
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
	c->max_buffer_bytes = K2MC_MAX_BUFFER_DEFAULT;
	c->verbosity = 1;
}

/* ---- checks across settings, made once every source is read ---------------- */

/* A dead letter topic that k2mc also consumes would bring every dead letter
 * back as a record, to be dead-lettered again: one bad record, forever. */
static enum k2mc_config_result check_dlq_topic(const struct k2mc_config *c, char *err,
					       size_t errlen)
{
	if (c->dlq_topic == NULL)
		return K2MC_CONFIG_OK;
	for (int i = 0; i < c->ntopics; i++) {
		const char *t = c->topics[i];
		regex_t re;
		int match;

		if (strcmp(t, c->dlq_topic) == 0)
			USAGE("--dlq-topic %s is also consumed (-t %s): k2mc would read its own dead "
			      "letters back and dead-letter them again, forever; use another topic",
			      c->dlq_topic, t);
		/* librdkafka's regex dialect is not POSIX, but close enough to
		 * ERE for a topic name; a pattern ERE cannot read is left to
		 * librdkafka */
		if (t[0] != '^' || regcomp(&re, t, REG_EXTENDED | REG_NOSUB) != 0)
			continue;
		match = regexec(&re, c->dlq_topic, 0, NULL, 0) == 0;
		regfree(&re);
		if (match)
			USAGE("--dlq-topic %s matches the subscription -t '%s': k2mc would read its own "
			      "dead letters back and dead-letter them again, forever; use a topic the "
			      "pattern does not match",
			      c->dlq_topic, t);
	}
	return K2MC_CONFIG_OK;
}

/* librdkafka's reading of the -X properties: a configuration object built as
 * group.c builds the consumer's (k2mc's own settings first, then every -X in
 * order) and read back with rd_kafka_conf_get, so a value means here what it
 * will mean there ("t", "1", "0x1000", a later -X replacing an earlier one).
 * A property librdkafka refuses is skipped (group.c reports it, with
 * librdkafka's reason); accepted[i], when given, says which were taken.
 * plugin.library.paths is skipped too: setting it loads the libraries. */
static rd_kafka_conf_t *rdk_view(const struct k2mc_config *c, unsigned char *accepted)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512];

	if (conf == NULL)
		return NULL;
	rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof(e));
	rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", e, sizeof(e));
	rd_kafka_conf_set(conf, "enable.partition.eof", c->exit_at_eof ? "true" : "false", e,
			  sizeof(e));
	for (int i = 0; i < c->nxprops; i++) {
		const char *eq = strchr(c->xprops[i], '=');
		size_t nl = (size_t)(eq - c->xprops[i]);
		char name[256];
		int ok = 0;

		if (nl < sizeof(name)) {
			memcpy(name, c->xprops[i], nl);
			name[nl] = '\0';
			ok = strcmp(name, "plugin.library.paths") != 0 &&
			     rd_kafka_conf_set(conf, name, eq + 1, e, sizeof(e)) == RD_KAFKA_CONF_OK;
		}
		if (accepted != NULL)
			accepted[i] = (unsigned char)ok;
	}
	return conf;
}

/* The value librdkafka holds for name, or "" when it has none. */
static const char *rdk_get(rd_kafka_conf_t *conf, const char *name, char *buf, size_t len)
{
	size_t n = len;

	if (conf == NULL || rd_kafka_conf_get(conf, name, buf, &n) != RD_KAFKA_CONF_OK)
		buf[0] = '\0';
	return buf;
}

static int64_t rdk_int(rd_kafka_conf_t *conf, const char *name, int64_t dflt)
{
	char buf[64];

	rdk_get(conf, name, buf, sizeof(buf));
	return buf[0] != '\0' ? strtoll(buf, NULL, 10) : dflt;
}

/* The last -X property called name (that librdkafka took, if accepted is
 * given): the one whose value wins. -1 if none. */
static int last_xprop(const struct k2mc_config *c, const unsigned char *accepted,
		      const char *name)
{
	size_t nl = strlen(name);

	for (int i = c->nxprops - 1; i >= 0; i--)
		if (strncmp(c->xprops[i], name, nl) == 0 && c->xprops[i][nl] == '=' &&
		    (accepted == NULL || accepted[i]))
			return i;
	return -1;
}

/* "-X name=value" or "-F FILE:LINE: name=value", for messages. */
static const char *xprop_where(const struct k2mc_config *c, const struct parse_state *st, int i,
			       char *buf, size_t len)
{
	if (i < 0)
		snprintf(buf, len, "-X");
	else if (st->xlevel[i] == LVL_FILE)
		snprintf(buf, len, "-F %s:%d: %.200s", c->config_file, st->xline[i], c->xprops[i]);
	else
		snprintf(buf, len, "-X %.200s", c->xprops[i]);
	return buf;
}

/* Properties that would break what k2mc promises: offsets are committed only
 * below acknowledged records, -G names the group, -e ends. */
static enum k2mc_config_result check_xprops(const struct k2mc_config *c,
					    const struct parse_state *st, char *err,
					    size_t errlen)
{
	unsigned char accepted[K2MC_MAX_XPROPS];
	enum k2mc_config_result r = K2MC_CONFIG_USAGE;
	rd_kafka_conf_t *conf;
	char where[512], val[1024];
	int i;

	i = last_xprop(c, NULL, "group.id");
	if (i >= 0)
		USAGE("%s: the consumer group is set with -G (group= in a -F file); a librdkafka "
		      "group.id would silently replace it",
		      xprop_where(c, st, i, where, sizeof(where)));
	if (c->nxprops == 0)
		return K2MC_CONFIG_OK;
	conf = rdk_view(c, accepted);
	if (conf == NULL)
		USAGE("-X: out of memory");
	if (strcmp(rdk_get(conf, "enable.auto.commit", val, sizeof(val)), "true") == 0) {
		i = last_xprop(c, accepted, "enable.auto.commit");
		set_err(err, errlen,
			"%s: k2mc commits only offsets below records Memcached acknowledged; "
			"librdkafka's auto commit would commit records not yet written",
			xprop_where(c, st, i, where, sizeof(where)));
	} else if (strcmp(rdk_get(conf, "enable.auto.offset.store", val, sizeof(val)), "true") ==
		   0) {
		i = last_xprop(c, accepted, "enable.auto.offset.store");
		set_err(err, errlen,
			"%s: k2mc stores and commits only acknowledged watermarks; librdkafka's "
			"automatic offset store would let a commit pass records not yet written",
			xprop_where(c, st, i, where, sizeof(where)));
	} else if (c->exit_at_eof &&
		   strcmp(rdk_get(conf, "enable.partition.eof", val, sizeof(val)), "false") == 0) {
		i = last_xprop(c, accepted, "enable.partition.eof");
		set_err(err, errlen,
			"%s: -e needs librdkafka's end-of-partition events to see that a partition "
			"is done; without them k2mc would wait forever",
			xprop_where(c, st, i, where, sizeof(where)));
	} else if (rd_kafka_version() < 0x020300ff &&
		   strcasestr(rdk_get(conf, "partition.assignment.strategy", val, sizeof(val)),
			      "cooperative-sticky") != NULL) {
		i = last_xprop(c, accepted, "partition.assignment.strategy");
		set_err(err, errlen,
			"%s: librdkafka %s's cooperative-sticky assignor can abort k2mc on a signal "
			"during a rebalance (librdkafka issue 4312, fixed in 2.3.0); use range or "
			"roundrobin, or librdkafka >= 2.3.0",
			xprop_where(c, st, i, where, sizeof(where)), rd_kafka_version_str());
	} else {
		r = K2MC_CONFIG_OK;
	}
	rd_kafka_conf_destroy(conf);
	return r;
}

/* The smallest session.timeout.ms whose lease, with heartbeat interval hb,
 * is at least want. The lease grows with the session (by 1, or by 9 in 10
 * once the margin is session / 10), so step up from just below it. */
static int64_t session_for_lease(int64_t hb, int64_t want)
{
	int64_t s = hb + want + 500;

	if (K2MC_FENCE_MARGIN_MS(s) > 500)
		s = (hb + want - 1) * 10 / 9;
	while (s - hb - K2MC_FENCE_MARGIN_MS(s) < want)
		s++;
	return s;
}

/* Fencing (fence.h): a writer may send only within the lease an
 * acknowledged commit buys, and the committer renews it every commit
 * interval. A lease under a second leaves writers no time between commits;
 * one of at most two intervals lets a single late commit stop every writer. */
static enum k2mc_config_result check_lease(const struct k2mc_config *c, char *err, size_t errlen)
{
	int64_t s = k2mc_config_session_timeout_ms(c), hb = k2mc_config_heartbeat_interval_ms(c);
	int64_t margin = K2MC_FENCE_MARGIN_MS(s), lease = s - hb - margin;
	int64_t ci = c->commit_interval_ms;

	if (lease < 1000)
		USAGE("fencing: session.timeout.ms %lld - heartbeat.interval.ms %lld - margin %lld "
		      "leaves a write lease of %lld ms, under the 1000 ms minimum: raise -X "
		      "session.timeout.ms to at least %lld, or lower -X heartbeat.interval.ms",
		      (long long)s, (long long)hb, (long long)margin, (long long)lease,
		      (long long)session_for_lease(hb, ci * 2 + 1 > 1000 ? ci * 2 + 1 : 1000));
	if (lease <= 2 * ci)
		USAGE("fencing: the write lease (session.timeout.ms %lld - heartbeat.interval.ms "
		      "%lld - margin %lld = %lld ms) must be more than 2 x --commit-interval-ms "
		      "%lld, or one late commit pauses every writer: lower --commit-interval-ms to "
		      "%lld or less, or raise -X session.timeout.ms to at least %lld",
		      (long long)s, (long long)hb, (long long)margin, (long long)lease,
		      (long long)ci, (long long)((lease - 1) / 2),
		      (long long)session_for_lease(hb, ci * 2 + 1));
	return K2MC_CONFIG_OK;
}

/* "1.5 GiB": bytes for a message. */
static const char *human_bytes(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double d = (double)v;
	size_t u = 0;

	while (d >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		d /= 1024;
		u++;
	}
	snprintf(buf, len, u == 0 ? "%.0f %s" : "%.1f %s", d, units[u]);
	return buf;
}

/* The rings of a partition are allocated whole when it is assigned: a size
 * that cannot fit once cannot fit at all. (Many partitions that fit one by
 * one but not together are a matter for assignment time.) */
enum k2mc_config_result k2mc_config_check_ring_memory(const struct k2mc_config *c,
						      uint64_t memory_bytes, char *err,
						      size_t errlen)
{
	uint64_t need = k2mc_config_ring_bytes_per_partition(c);
	char a[32], b[32];

	if (memory_bytes > 0 && need > memory_bytes)
		USAGE("--ring-size %u with --writers %d: one partition's rings and watermark window "
		      "take %s, more than this machine's %s of memory; use a smaller --ring-size "
		      "(default 4096)",
		      c->ring_size, c->writers, human_bytes(need, a, sizeof(a)),
		      human_bytes(memory_bytes, b, sizeof(b)));
	return K2MC_CONFIG_OK;
}

uint64_t k2mc_config_memory_bytes(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);

	return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

uint64_t k2mc_config_ring_bytes_per_partition(const struct k2mc_config *c)
{
	uint64_t slots = (uint64_t)c->writers * c->ring_size, window = 1;

	while (window < slots)
		window <<= 1;
	/* ring.h: struct ring_item is a pointer and a tag; watermark.c: an
	 * int64_t offset and a uint8_t done flag per window entry */
	return slots * 16 + window * 9;
}

int64_t k2mc_config_session_timeout_ms(const struct k2mc_config *c)
{
	rd_kafka_conf_t *conf = rdk_view(c, NULL);
	int64_t v = rdk_int(conf, "session.timeout.ms", 45000);

	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	return v;
}

int64_t k2mc_config_heartbeat_interval_ms(const struct k2mc_config *c)
{
	rd_kafka_conf_t *conf = rdk_view(c, NULL);
	int64_t v = rdk_int(conf, "heartbeat.interval.ms", 3000);

	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	return v;
}

int64_t k2mc_config_lease_ms(const struct k2mc_config *c)
{
	int64_t s = k2mc_config_session_timeout_ms(c);

	return s - k2mc_config_heartbeat_interval_ms(c) - K2MC_FENCE_MARGIN_MS(s);
}

enum k2mc_config_result k2mc_config_parse(struct k2mc_config *c, int argc, char **argv,
					  char *err, size_t errlen)
{
	struct parse_state st = { .servers = "127.0.0.1:11211", .topics_level = LVL_DEFAULT };
	enum k2mc_config_result r;
	int opt;

	set_defaults(c);
	opterr = 0;
	/* Pass 1: find -F, and answer -h / -V whatever the file and the
	 * environment say. Command-line errors wait for pass 2, which reports
	 * them in order. optind 0, not 1: glibc only forgets a half-parsed
	 * "-abc" bundle from an earlier call when optind is 0. */
	optind = 0;
	while ((opt = getopt_long(argc, argv, short_opts, long_opts, NULL)) != -1) {
		if (opt == 'F') {
			if (c->config_file != NULL)
				USAGE("-F: only one config file, got '%s' and '%s'", c->config_file,
				      optarg);
			c->config_file = optarg;
		} else if (opt == 'h' || opt == 'V') {
			return apply(c, &st, LVL_ARGV, opt, NULL, err, errlen);
		}
	}
	r = apply_env(c, &st, err, errlen);
	if (r == K2MC_CONFIG_OK && c->config_file != NULL)
		r = apply_file(c, &st, c->config_file, err, errlen);
	if (r != K2MC_CONFIG_OK)
		return r;

	/* Pass 2: the command line, over the environment and the file. */
	optind = 0;
	while ((opt = getopt_long(argc, argv, short_opts, long_opts, NULL)) != -1) {
		if (opt == ':' || opt == '?')
			return bad_option(opt, argv, err, errlen);
		r = apply(c, &st, LVL_ARGV, opt, optarg, err, errlen);
		if (r != K2MC_CONFIG_OK)
			return r;
	}
	if (optind < argc)
		USAGE("unexpected argument '%s'", argv[optind]);
	if (c->brokers == NULL || *c->brokers == '\0')
		USAGE("missing -b BROKERS (or brokers= in -F FILE, or K2MC_BROKERS)");
	if (c->ntopics == 0)
		USAGE("missing -t TOPIC (or topic= in -F FILE, or K2MC_TOPICS)");
	c->key_prefix_len = strlen(c->key_prefix);
	if (c->key_prefix_len >= K2MC_MC_KEY_MAX || !key_bytes_ok(c->key_prefix, c->key_prefix_len))
		USAGE("--key-prefix: must be under %d bytes with no spaces or control characters",
		      K2MC_MC_KEY_MAX);
	if (c->on_invalid == K2MC_INVALID_DLQ && c->dlq_topic == NULL)
		USAGE("--on-invalid dlq needs --dlq-topic TOPIC");
	if (k2mc_config_parse_servers(c, st.servers, err, errlen) != 0) {
		if (st.servers_level == LVL_ENV)
			blame(err, errlen, "K2MC_MEMCACHED");
		else if (st.servers_level == LVL_FILE)
			blame(err, errlen, "-F %s", c->config_file);
		return K2MC_CONFIG_USAGE;
	}
	r = check_dlq_topic(c, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = check_xprops(c, &st, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = check_lease(c, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = k2mc_config_check_ring_memory(c, k2mc_config_memory_bytes(), err, errlen);
	return r;
}

/* ---- --dump-config ----------------------------------------------------------- */

int k2mc_config_is_secret(const char *name)
{
	static const char *const words[] = { "password", "secret" };
	/* private key material and what may embed credentials */
	static const char *const names[] = { "ssl.key.pem", "ssl_key", "sasl.oauthbearer.config",
					     "ssl.keystore.location" };

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(name, words[i]) != NULL)
			return 1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(name, names[i]) == 0)
			return 1;
	return 0;
}

static const char *invalid_name(enum k2mc_invalid_policy p)
{
	switch (p) {
	case K2MC_INVALID_HASH:
		return "hash";
	case K2MC_INVALID_DLQ:
		return "dlq";
	case K2MC_INVALID_FAIL:
		return "fail";
	default:
		return "skip";
	}
}

void k2mc_config_dump(const struct k2mc_config *c, FILE *out)
{
	fprintf(out, "# k2mc %s effective configuration (defaults < environment < -F file < "
		     "command line)\n# secrets are masked\n",
		K2MC_VERSION);
	fprintf(out, "brokers=%s\n", c->brokers ? c->brokers : "");
	for (int i = 0; i < c->ntopics; i++)
		fprintf(out, "topic=%s\n", c->topics[i]);
	fprintf(out, "group=%s\nmemcached=", c->group);
	for (int i = 0; i < c->nservers; i++)
		fprintf(out, "%s%s:%d", i ? "," : "", c->servers[i].host, c->servers[i].port);
	fprintf(out, "\noffset=%s\nexit=%s\n", c->offset_beginning ? "beginning" : "end",
		c->exit_at_eof ? "true" : "false");
	if (c->max_records > 0)
		fprintf(out, "count=%llu\n", (unsigned long long)c->max_records);
	fprintf(out,
		"writers=%d\nring-size=%u\nbatch=%d\ncommit-interval-ms=%d\nttl=%u\nkey-prefix=%s\n"
		"stats-interval-ms=%d\nshutdown-timeout-ms=%d\non-invalid=%s\n",
		c->writers, c->ring_size, c->batch, c->commit_interval_ms, c->ttl, c->key_prefix,
		c->stats_interval_ms, c->shutdown_timeout_ms, invalid_name(c->on_invalid));
	if (c->dlq_topic != NULL)
		fprintf(out, "dlq-topic=%s\n", c->dlq_topic);
	if (c->max_value_bytes > 0)
		fprintf(out, "max-value-bytes=%llu\n", (unsigned long long)c->max_value_bytes);
	fprintf(out, "max-buffer-bytes=%llu\n", (unsigned long long)c->max_buffer_bytes);
	fprintf(out, "mc-eject=%s\n", c->mc_eject ? "true" : "false");
	if (c->metrics_port > 0)
		fprintf(out, strchr(c->metrics_host, ':') ? "metrics-addr=[%s]:%d\n"
							  : "metrics-addr=%s:%d\n",
			c->metrics_host, c->metrics_port);
	if (c->stats_json != NULL)
		fprintf(out, "stats-json=%s\n", c->stats_json);
	if (c->verbosity != 1)
		fprintf(out, "%s=true\n", c->verbosity == 0 ? "quiet" : "verbose");
	if (c->nxprops > 0)
		fprintf(out, "# librdkafka properties (-X and unknown keys of -F)\n");
	/* each property once, with the value librdkafka ends up with: the last */
	for (int i = 0; i < c->nxprops; i++) {
		const char *eq = strchr(c->xprops[i], '=');
		size_t nl = (size_t)(eq - c->xprops[i]);
		char name[256];
		int later = 0;

		for (int j = i + 1; j < c->nxprops && !later; j++)
			later = strncmp(c->xprops[j], c->xprops[i], nl + 1) == 0;
		if (later)
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)nl, c->xprops[i]);
		fprintf(out, "%s=%s\n", name, k2mc_config_is_secret(name) ? "********" : eq + 1);
	}
}
