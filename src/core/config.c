/* Configuration for k2mc: flags (kcat conventions: -b -t -G -X -o -e -q -v,
 * -F FILE), key=value files and K2MC_* environment variables, one code path
 * for all three (apply()). Validates ranges, and settings that contradict
 * each other or k2mc's guarantees, here so the rest of the program can trust
 * the struct. Not a place that opens connections. */
#include "core/config.h"
#include "core/rdkversion.h"

#include <errno.h>
#include <ctype.h>
#include <fcntl.h>
#include <getopt.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The Makefile passes -DK2MC_VERSION="..." (git describe, else VERSION) */
#ifndef K2MC_VERSION
#define K2MC_VERSION "unknown"
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
	OPT_CHECK_CONFIG,
	OPT_LOG_FORMAT,
	OPT_DISTRIBUTION,
	OPT_MC_PROTOCOL,
	OPT_MC_TLS,
	OPT_MC_TLS_CA,
	OPT_MC_TLS_CERT,
	OPT_MC_TLS_KEY,
	OPT_MC_TLS_KEY_PASSWORD,
	OPT_MC_TLS_SERVER_NAME,
	OPT_MC_TLS_INSECURE,
	OPT_KEY,
	OPT_VALUE,
	OPT_TTL_HEADER,
	OPT_TTL_FROM_TIMESTAMP,
	OPT_FLAGS,
	OPT_FLAGS_HEADER,
	OPT_ON_TOMBSTONE,
	OPT_REFILL,
	OPT_REFILL_FROM,
	OPT_REFILL_RATE,
	OPT_REFILL_READY,
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
	{ "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
	{ "log-format", required_argument, NULL, OPT_LOG_FORMAT },
	{ "distribution", required_argument, NULL, OPT_DISTRIBUTION },
	{ "mc-protocol", required_argument, NULL, OPT_MC_PROTOCOL },
	{ "mc-tls", no_argument, NULL, OPT_MC_TLS },
	{ "mc-tls-ca", required_argument, NULL, OPT_MC_TLS_CA },
	{ "mc-tls-cert", required_argument, NULL, OPT_MC_TLS_CERT },
	{ "mc-tls-key", required_argument, NULL, OPT_MC_TLS_KEY },
	{ "mc-tls-key-password", required_argument, NULL, OPT_MC_TLS_KEY_PASSWORD },
	{ "mc-tls-server-name", required_argument, NULL, OPT_MC_TLS_SERVER_NAME },
	{ "mc-tls-insecure", no_argument, NULL, OPT_MC_TLS_INSECURE },
	{ "key", required_argument, NULL, OPT_KEY },
	{ "value", required_argument, NULL, OPT_VALUE },
	{ "ttl-header", required_argument, NULL, OPT_TTL_HEADER },
	{ "ttl-from-timestamp", no_argument, NULL, OPT_TTL_FROM_TIMESTAMP },
	{ "flags", required_argument, NULL, OPT_FLAGS },
	{ "flags-header", required_argument, NULL, OPT_FLAGS_HEADER },
	{ "on-tombstone", required_argument, NULL, OPT_ON_TOMBSTONE },
	{ "refill", no_argument, NULL, OPT_REFILL },
	{ "refill-from", required_argument, NULL, OPT_REFILL_FROM },
	{ "refill-rate", required_argument, NULL, OPT_REFILL_RATE },
	{ "refill-ready", required_argument, NULL, OPT_REFILL_READY },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* The long name of option code opt ("mc-tls-ca"), for messages. */
static const char *opt_name(int opt)
{
	for (const struct option *o = long_opts; o->name != NULL; o++)
		if (o->val == opt)
			return o->name;
	return "?";
}

void k2mc_config_usage(FILE *out)
{
	fprintf(out,
		"Usage: k2mc -b BROKERS -t TOPIC [-t TOPIC ...] [options]\n"
		"       k2mc -F FILE [options]\n"
		"Copy records from Kafka topics into Memcached: by default key = prefix + record\n"
		"key, value = record value, a null value deletes the key. At-least-once: offsets\n"
		"are committed only below records Memcached acknowledged.\n"
		"\n"
		"Kafka:\n"
		"  -b, --brokers BROKERS     bootstrap servers, host:port[,host:port...] (required)\n"
		"  -t, --topic TOPIC         topic to consume, repeatable; a name starting with ^ is a\n"
		"                            regex matching topics (librdkafka) (required)\n"
		"  -G, --group GROUP         consumer group id (default k2mc)\n"
		"  -X PROP=VALUE             any librdkafka property (security.protocol, sasl.*, ...);\n"
		"                            not group.id (use -G), nor auto commit or offset store,\n"
		"                            nor auto.offset.reset other than earliest (use -o)\n"
		"  -o, --offset beginning|end  where a partition with no committed offset starts\n"
		"                            (default beginning); one whose committed offset retention\n"
		"                            deleted resumes at its oldest record, whatever -o says\n"
		"  -e, --exit                exit 0 when every assigned partition is written and\n"
		"                            committed up to its end offset (progress line on a terminal)\n"
		"  -c, --count N             stop (drain, commit, exit 0) after consuming N records\n"
		"Memcached:\n"
		"  -m, --memcached LIST      servers, comma-separated, mixed freely: HOST:PORT[:WEIGHT],\n"
		"                            [IPV6]:PORT[:WEIGHT], /SOCKET (a unix socket, no weight)\n"
		"                            or unix:SOCKET[:WEIGHT] (default 127.0.0.1:11211)\n"
		"  --distribution NAME       key placement matching the readers' client: ketama\n"
		"                            (default), libketama, modula, rendezvous, crc32, dalli,\n"
		"                            spymemcached; weights only with libketama and dalli\n"
		"  --mc-protocol auto|meta|text  dialect; auto (default): meta where the server has\n"
		"                            it, text for older servers and proxies\n"
		"  --max-value-bytes N       largest value to send (default: the servers' item_size_max)\n"
		"  --mc-eject                remap keys of a down server to the others (libmemcached\n"
		"                            auto-eject) instead of waiting for it (default: wait)\n"
		"TLS to Memcached (OpenSSL; verified unless --mc-tls-insecure):\n"
		"  --mc-tls                  TLS to every server, trusting the system's CA store\n"
		"  --mc-tls-ca FILE          trust the CA certificates in FILE (PEM) instead\n"
		"  --mc-tls-cert FILE        client certificate (PEM) for mutual TLS; needs --mc-tls-key\n"
		"  --mc-tls-key FILE         its private key (PEM)\n"
		"  --mc-tls-key-password PASS  passphrase of an encrypted key (put it in a chmod 600\n"
		"                            -F file: the command line is visible to every user)\n"
		"  --mc-tls-server-name NAME  SNI and the name verified (default: each server's host)\n"
		"  --mc-tls-insecure         do not verify the servers' certificates (logs a warning)\n"
		"What is written (templates: {key} {value} {topic} {partition} {header:NAME}\n"
		"{json:/POINTER}, {{ and }} for braces, anything else literal):\n"
		"  --key TEMPLATE            the Memcached key, after --key-prefix (default {key})\n"
		"  --key-prefix STR          prepended to every key\n"
		"  --value TEMPLATE          the value (default {value}: the record's bytes)\n"
		"  --ttl SECONDS             expiry of written items (default 0: none); over 2592000\n"
		"                            (30 days): an absolute unix time, not in the past\n"
		"  --ttl-header NAME         per-record TTL, decimal seconds, from this header\n"
		"                            (records without it: --ttl)\n"
		"  --ttl-from-timestamp      expiry = record timestamp + TTL (any length); records\n"
		"                            already expired are not written (the newest of a key\n"
		"                            deletes it)\n"
		"  --flags N                 client flags of every item, 0..4294967295 (default 0)\n"
		"  --flags-header NAME       per-record flags, decimal, from this header (records\n"
		"                            without it: --flags)\n"
		"  --on-tombstone delete|ignore|invalidate:SECONDS  a null value deletes the key\n"
		"                            (default), is ignored, or marks it stale, served for\n"
		"                            SECONDS more (meta protocol only; 1..2592000)\n"
		"Records Memcached cannot take (no key, bad key, value too large):\n"
		"  --on-invalid skip|hash|dlq|fail  skip and count (default), hash bad keys,\n"
		"                            produce to --dlq-topic, or stop with exit 1\n"
		"  --dlq-topic TOPIC         dead letter topic for --on-invalid dlq\n"
		"Refill (a server that lost its contents gets its keys again from Kafka):\n"
		"  --refill                  detect a server's lost contents (restart, flush) and\n"
		"                            write its keys again (default off)\n"
		"  --refill-from earliest|DURATION  read from each partition's start (default), or\n"
		"                            from DURATION before the loss (90s, 15m, 24h, 7d)\n"
		"  --refill-rate N           refill records/s at most, 0 = unlimited (default)\n"
		"  --refill-ready yes|no     /readyz while a server is refilled: 200 (yes, default:\n"
		"                            it takes live writes) or 503 (no: keys are missing)\n"
		"Pipeline:\n"
		"  --writers N               writer threads, each with its own connections (default: CPUs)\n"
		"  --ring-size N             slots per partition/writer ring, power of two (default 4096)\n"
		"  --max-buffer-bytes N      record bytes held in rings and batches at most; consumers\n"
		"                            wait when it is reached; k, m, g suffixes (default 16m)\n"
		"  --batch N                 records per pipelined, acknowledged exchange (default 512)\n"
		"  --commit-interval-ms N    offset commit interval (default 1000)\n"
		"  --shutdown-timeout-ms N   how long shutdown waits for writes (default 30000)\n"
		"Observability:\n"
		"  --stats-interval-ms N     stats line interval on stderr, 0 = off (default 5000)\n"
		"  --stats-json FILE         one JSON object per stats interval, appended to FILE\n"
		"                            (- = stdout)\n"
		"  --metrics-addr [HOST:]PORT  serve /metrics (Prometheus), /healthz and /readyz over\n"
		"                            HTTP; HOST defaults to 127.0.0.1 (default: off)\n"
		"  --log-format text|json    log lines as text (default) or one JSON object each\n"
		"Configuration:\n"
		"  -F, --config FILE         key=value lines: k2mc's long options (writers=4, topic=t,\n"
		"                            exit=true) and librdkafka properties; # comments.\n"
		"                            The command line overrides the file. Keep a file with\n"
		"                            secrets chmod 600 (k2mc warns otherwise)\n"
		"  --dump-config             print the effective configuration, secrets masked, exit 0\n"
		"  --check-config            check everything (TLS files, templates, librdkafka's\n"
		"                            configurations), then exit 0 or 2 as the start would,\n"
		"                            without connecting anywhere\n"
		"  Environment, below the file: K2MC_BROKERS, K2MC_TOPICS (comma-separated),\n"
		"  K2MC_GROUP, K2MC_MEMCACHED, K2MC_WRITERS\n"
		"  Long options are spelled in full (no abbreviations).\n"
		"Other:\n"
		"  -v, --verbose, -q, --quiet  more / less logging\n"
		"  -h, --help                help\n"
		"  -V, --version             versions of k2mc, librdkafka and libmemcached\n"
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

/* Whole-string unsigned decimal in [lo, hi]; digits only ("", "+1", "-1",
 * " 1", "1x" and overflow refused). */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!(*s >= '0' && *s <= '9'))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < lo || v > hi)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

/* A duration: digits and one unit, s, m, h or d ("90s", "15m", "24h", "7d"),
 * more than zero; milliseconds in *ms. */
static int parse_duration(const char *s, int64_t *ms)
{
	static const struct {
		char unit;
		int64_t ms;
	} units[] = { { 's', 1000 }, { 'm', 60000 }, { 'h', 3600000 }, { 'd', 86400000 } };
	unsigned long long v;
	char *end;

	if (!(*s >= '0' && *s <= '9'))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || v == 0 || end[0] == '\0' || end[1] != '\0')
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (*end == units[i].unit) {
			if (v > (unsigned long long)(INT64_MAX / units[i].ms))
				return -EINVAL;
			*ms = (int64_t)v * units[i].ms;
			return 0;
		}
	return -EINVAL;
}

/* 1 if s[0..n) ends in ':' and one or more digits. */
static int ends_in_colon_digits(const char *s, size_t n)
{
	size_t d = 0;

	while (d < n && s[n - 1 - d] >= '0' && s[n - 1 - d] <= '9')
		d++;
	return d > 0 && d < n && s[n - 1 - d] == ':';
}

/* One -m entry, e[0..len), into *sv; 0 or -EINVAL (err set). */
static int parse_server(struct k2mc_server *sv, const char *e, size_t len, char *err,
			size_t errlen)
{
	const char *host = e, *rest, *end = e + len, *colon;
	size_t hlen;
	char num[16];
	uint64_t v;

	memset(sv, 0, sizeof(*sv));
	sv->weight = 1;
	if (len > 0 && (e[0] == '/' || (len >= 5 && memcmp(e, "unix:", 5) == 0))) {
		/* AF_UNIX: "/PATH" is all path; "unix:PATH:DIGITS" ends in a weight */
		sv->is_unix = 1;
		if (e[0] == '/') {
			if (ends_in_colon_digits(e, len))
				return set_err(err, errlen,
					       "-m: '%.*s': a socket path ending in :DIGITS is "
					       "ambiguous; write unix:PATH:WEIGHT for a weight "
					       "(unix:PATH:DIGITS:1 for a socket so named)",
					       (int)len, e);
			hlen = len;
		} else {
			host = e + 5;
			hlen = len - 5;
			if (ends_in_colon_digits(host, hlen)) {
				colon = memrchr(host, ':', hlen);
				hlen = (size_t)(colon - host);
				if ((size_t)(end - colon - 1) >= sizeof(num))
					return set_err(err, errlen,
						       "-m: bad weight in '%.*s': expected 1..%d",
						       (int)len, e, K2MC_WEIGHT_MAX);
				memcpy(num, colon + 1, (size_t)(end - colon - 1));
				num[end - colon - 1] = '\0';
				if (parse_u64(num, 1, K2MC_WEIGHT_MAX, &v) != 0)
					return set_err(err, errlen,
						       "-m: bad weight in '%.*s': expected 1..%d",
						       (int)len, e, K2MC_WEIGHT_MAX);
				sv->weight = (int)v;
			}
		}
		if (hlen == 0)
			return set_err(err, errlen, "-m: '%.*s': empty socket path", (int)len, e);
		if (hlen > K2MC_SUN_PATH_MAX)
			return set_err(err, errlen,
				       "-m: socket path in '%.*s' is %zu bytes, more than the %d a "
				       "unix socket address holds",
				       (int)len, e, hlen, K2MC_SUN_PATH_MAX);
		memcpy(sv->host, host, hlen);
		sv->host[hlen] = '\0';
		return 0;
	}
	if (len > 0 && e[0] == '[') {
		const char *close = memchr(e, ']', len);

		if (close == NULL || close == e + 1 || close + 1 == end || close[1] != ':' ||
		    memchr(e + 1, ':', (size_t)(close - e - 1)) == NULL)
			return set_err(err, errlen, "-m: '%.*s' is not [IPV6]:PORT[:WEIGHT]",
				       (int)len, e);
		host = e + 1;
		hlen = (size_t)(close - host);
		rest = close + 2;
	} else {
		const char *c1 = memchr(e, ':', len);

		if (c1 == NULL)
			return set_err(err, errlen,
				       "-m: '%.*s' is not HOST:PORT[:WEIGHT], [IPV6]:PORT[:WEIGHT], "
				       "/SOCKET or unix:SOCKET[:WEIGHT]",
				       (int)len, e);
		colon = memchr(c1 + 1, ':', (size_t)(end - c1 - 1));
		if (colon != NULL && memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL)
			return set_err(err, errlen,
				       "-m: '%.*s': an IPv6 address needs brackets: [ADDR]:PORT",
				       (int)len, e);
		hlen = (size_t)(c1 - e);
		rest = c1 + 1;
	}
	if (hlen == 0 || hlen >= sizeof(sv->host))
		return set_err(err, errlen, "-m: bad host in '%.*s'", (int)len, e);
	memcpy(sv->host, host, hlen);
	sv->host[hlen] = '\0';
	/* rest: PORT or PORT:WEIGHT */
	colon = memchr(rest, ':', (size_t)(end - rest));
	{
		const char *pend = colon != NULL ? colon : end;

		if (pend == rest || (size_t)(pend - rest) >= sizeof(num))
			return set_err(err, errlen, "-m: bad port in '%.*s'", (int)len, e);
		memcpy(num, rest, (size_t)(pend - rest));
		num[pend - rest] = '\0';
		if (parse_u64(num, 1, 65535, &v) != 0)
			return set_err(err, errlen, "-m: bad port in '%.*s'", (int)len, e);
		sv->port = (int)v;
	}
	if (colon != NULL) {
		if ((size_t)(end - colon - 1) >= sizeof(num))
			return set_err(err, errlen, "-m: bad weight in '%.*s': expected 1..%d",
				       (int)len, e, K2MC_WEIGHT_MAX);
		memcpy(num, colon + 1, (size_t)(end - colon - 1));
		num[end - colon - 1] = '\0';
		if (parse_u64(num, 1, K2MC_WEIGHT_MAX, &v) != 0)
			return set_err(err, errlen, "-m: bad weight in '%.*s': expected 1..%d",
				       (int)len, e, K2MC_WEIGHT_MAX);
		sv->weight = (int)v;
	}
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

		if (c->nservers == K2MC_MAX_SERVERS)
			return set_err(err, errlen, "-m: more than %d servers", K2MC_MAX_SERVERS);
		if (len == 0)
			return set_err(err, errlen, "-m: empty entry in '%s'", list);
		if (parse_server(&c->servers[c->nservers], p, len, err, errlen) != 0)
			return -EINVAL;
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
	/* The first --ttl from any source that is an absolute time already
	 * past: an error unless --ttl-from-timestamp (known only at the end)
	 * makes --ttl a duration. */
	long ttl_past;
	enum level ttl_past_level;
	int ttl_past_line;
	int refill_from_set, refill_rate_set, refill_ready_set; /* refused without --refill */
	/* -F: the keys holding secrets, ", "-separated, and the file's mode */
	char file_secrets[200];
	unsigned file_mode;
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
		/* the libraries k2mc runs with, not the headers it was built against */
		printf("k2mc %s (librdkafka %s, libmemcached %s)\n", K2MC_VERSION,
		       rd_kafka_version_str(), memcached_lib_version());
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
		/* judged once every source is read (check_mapping) */
		if (v > K2MC_TTL_RELATIVE_MAX && v <= (long)time(NULL) && st->ttl_past == 0) {
			st->ttl_past = v;
			st->ttl_past_level = lvl;
			st->ttl_past_line = st->line;
		}
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
	case OPT_CHECK_CONFIG:
		c->check_config = 1;
		break;
	case OPT_LOG_FORMAT:
		if (strcmp(arg, "text") == 0)
			c->log_format = K2MC_LOG_TEXT;
		else if (strcmp(arg, "json") == 0)
			c->log_format = K2MC_LOG_JSON;
		else
			USAGE("--log-format: expected text or json, got '%s'", arg);
		break;
	case OPT_DISTRIBUTION: {
		int found = 0;

		for (int d = K2MC_DIST_KETAMA; d <= K2MC_DIST_SPYMEMCACHED && !found; d++)
			if (strcmp(arg, k2mc_distribution_name((enum k2mc_distribution)d)) == 0) {
				c->distribution = (enum k2mc_distribution)d;
				found = 1;
			}
		if (!found)
			USAGE("--distribution: expected ketama, libketama, modula, rendezvous, crc32, "
			      "dalli or spymemcached, got '%s'",
			      arg);
		break;
	}
	case OPT_MC_PROTOCOL:
		if (strcmp(arg, "auto") == 0)
			c->mc_protocol = K2MC_PROTO_AUTO;
		else if (strcmp(arg, "meta") == 0)
			c->mc_protocol = K2MC_PROTO_META;
		else if (strcmp(arg, "text") == 0)
			c->mc_protocol = K2MC_PROTO_TEXT;
		else
			USAGE("--mc-protocol: expected auto, meta or text, got '%s'", arg);
		break;
	case OPT_MC_TLS:
		c->mc_tls = 1;
		break;
	case OPT_MC_TLS_CA:
	case OPT_MC_TLS_CERT:
	case OPT_MC_TLS_KEY:
		if (*arg == '\0')
			USAGE("--%s: expected a file name", opt_name(opt));
		if (opt == OPT_MC_TLS_CA)
			c->mc_tls_ca = arg;
		else if (opt == OPT_MC_TLS_CERT)
			c->mc_tls_cert = arg;
		else
			c->mc_tls_key = arg;
		break;
	case OPT_MC_TLS_KEY_PASSWORD:
		if (*arg == '\0')
			USAGE("--mc-tls-key-password: empty (an unencrypted key needs none)");
		c->mc_tls_key_password = arg;
		break;
	case OPT_MC_TLS_SERVER_NAME:
		/* a DNS name is at most 253 bytes (RFC 1035); SNI carries no blanks */
		if (*arg == '\0' || strlen(arg) > 253 || !key_bytes_ok(arg, strlen(arg)))
			USAGE("--mc-tls-server-name: expected a host name of 1..253 bytes without "
			      "blanks or control characters, got '%.80s'",
			      arg);
		c->mc_tls_server_name = arg;
		break;
	case OPT_MC_TLS_INSECURE:
		c->mc_tls_insecure = 1;
		break;
	case OPT_KEY:
	case OPT_VALUE:
		/* the syntax is mapping.c's; a line break could not be written
		 * back by --dump-config as a -F line */
		if (strpbrk(arg, "\r\n") != NULL)
			USAGE("--%s: a template cannot hold a line break", opt_name(opt));
		if (opt == OPT_KEY)
			c->key_template = arg;
		else
			c->value_template = arg;
		break;
	case OPT_TTL_HEADER:
	case OPT_FLAGS_HEADER:
		if (*arg == '\0')
			USAGE("--%s: expected a header name", opt_name(opt));
		if (opt == OPT_TTL_HEADER)
			c->ttl_header = arg;
		else
			c->flags_header = arg;
		break;
	case OPT_TTL_FROM_TIMESTAMP:
		c->ttl_from_timestamp = 1;
		break;
	case OPT_FLAGS: {
		uint64_t f;

		if (parse_u64(arg, 0, UINT32_MAX, &f) != 0)
			USAGE("--flags: expected 0..4294967295, got '%s'", arg);
		c->flags = (uint32_t)f;
		break;
	}
	case OPT_ON_TOMBSTONE:
		c->invalidate_grace_s = 0;
		if (strcmp(arg, "delete") == 0) {
			c->on_tombstone = K2MC_TOMB_DELETE;
		} else if (strcmp(arg, "ignore") == 0) {
			c->on_tombstone = K2MC_TOMB_IGNORE;
		} else if (strncmp(arg, "invalidate", 10) == 0) {
			uint64_t g;

			if (arg[10] != ':' || parse_u64(arg + 11, 1, K2MC_TTL_RELATIVE_MAX, &g) != 0)
				USAGE("--on-tombstone: invalidate needs a grace period, "
				      "invalidate:SECONDS with SECONDS 1..%d, got '%s'",
				      K2MC_TTL_RELATIVE_MAX, arg);
			c->on_tombstone = K2MC_TOMB_INVALIDATE;
			c->invalidate_grace_s = (uint32_t)g;
		} else {
			USAGE("--on-tombstone: expected delete, ignore or invalidate:SECONDS, got '%s'",
			      arg);
		}
		break;
	case OPT_REFILL:
		c->refill = 1;
		break;
	case OPT_REFILL_FROM:
		st->refill_from_set = 1;
		if (strcmp(arg, "earliest") == 0) {
			c->refill_from_earliest = 1;
			c->refill_from_ms = 0;
		} else if (parse_duration(arg, &c->refill_from_ms) == 0) {
			c->refill_from_earliest = 0;
		} else {
			USAGE("--refill-from: expected earliest or a duration with a unit s, m, h or d "
			      "(90s, 15m, 24h, 7d), got '%s'",
			      arg);
		}
		break;
	case OPT_REFILL_RATE:
		st->refill_rate_set = 1;
		/* 1e9/s is beyond any server; the cap keeps rate x nanoseconds in 64 bits */
		if (parse_u64(arg, 0, 1000000000, &c->refill_rate) != 0)
			USAGE("--refill-rate: expected records/s, 0 (unlimited) to 1000000000, got '%s'",
			      arg);
		break;
	case OPT_REFILL_READY:
		st->refill_ready_set = 1;
		if (strcmp(arg, "yes") == 0)
			c->refill_ready = 1;
		else if (strcmp(arg, "no") == 0)
			c->refill_ready = 0;
		else
			USAGE("--refill-ready: expected yes (/readyz 200 while a server is refilled) "
			      "or no (503), got '%s'",
			      arg);
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
	case OPT_CHECK_CONFIG:
		c->check_config = 0;
		break;
	case OPT_MC_TLS:
		c->mc_tls = 0;
		break;
	case OPT_MC_TLS_INSECURE:
		c->mc_tls_insecure = 0;
		break;
	case OPT_TTL_FROM_TIMESTAMP:
		c->ttl_from_timestamp = 0;
		break;
	case OPT_REFILL:
		c->refill = 0;
		break;
	default:
		break;
	}
}

/* Notes a -F key that holds a secret, for the file permission warning. */
static void note_secret(struct parse_state *st, const char *key)
{
	size_t n = strlen(st->file_secrets), kl = strlen(key);
	const char *p = st->file_secrets;

	if (!k2mc_config_is_secret(key))
		return;
	/* once each */
	while ((p = strstr(p, key)) != NULL) {
		if ((p == st->file_secrets || p[-1] == ' ') && (p[kl] == ',' || p[kl] == '\0'))
			return;
		p += kl;
	}
	if (n + (n ? 2 : 0) + kl < sizeof(st->file_secrets))
		snprintf(st->file_secrets + n, sizeof(st->file_secrets) - n, "%s%s", n ? ", " : "",
			 key);
}

static enum k2mc_config_result apply_line(struct k2mc_config *c, struct parse_state *st,
					  char *key, char *val, char *err, size_t errlen)
{
	const struct option *o;
	int on;

	note_secret(st, key);
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

	struct stat sb;

	if (f == NULL)
		USAGE("-F %s: %s", path, strerror(errno));
	/* the mode of the file read, not of whatever the path names later */
	st->file_mode = fstat(fileno(f), &sb) == 0 ? (unsigned)(sb.st_mode & 07777) : 0;
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
/* After getopt_long returned long option idx: 1 if the user typed its name
 * in full. getopt takes any unambiguous prefix ("--key" for --key-prefix,
 * until --key existed); k2mc does not, so that a new option can never change
 * what an old command line means. The element just consumed is
 * argv[optind - 1], or argv[optind - 2] when the value came separately. */
static int typed_in_full(char **argv, int idx)
{
	const struct option *o = &long_opts[idx];
	const char *typed = argv[optind - 1];
	size_t n;

	if (o->has_arg == required_argument && optarg == argv[optind - 1] && optind >= 2)
		typed = argv[optind - 2];
	if (strncmp(typed, "--", 2) != 0)
		return 1;
	typed += 2;
	n = strcspn(typed, "=");
	return n == strlen(o->name) && strncmp(typed, o->name, n) == 0;
}

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
	if (dashdash) {
		/* getopt also stops at a prefix of several options */
		const char *t = argv[optind - 1] + 2;
		size_t n = strcspn(t, "="), hits = 0;

		for (const struct option *o = long_opts; o->name != NULL; o++)
			hits += n > 0 && strncmp(o->name, t, n) == 0;
		if (hits > 1)
			USAGE("unknown option '--%.*s' (long options are spelled in full)", (int)n, t);
	}
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
	/* the zero enums: ketama (libmemcached's, as before), auto, delete, text */
	c->key_template = "{key}";
	c->value_template = "{value}";
	c->refill_from_earliest = 1;
	c->refill_ready = 1;
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

/* A -m entry as k2mc_config_parse_servers reads it back: unix:PATH (with
 * the weight when it is not 1, or when the path itself ends in :DIGITS),
 * HOST:PORT or [IPV6]:PORT, then :WEIGHT when it is not 1. */
static const char *server_label(const struct k2mc_server *sv, char *buf, size_t len)
{
	size_t hl = strlen(sv->host);

	if (sv->is_unix) {
		if (sv->weight != 1 || ends_in_colon_digits(sv->host, hl))
			snprintf(buf, len, "unix:%s:%d", sv->host, sv->weight);
		else
			snprintf(buf, len, "unix:%s", sv->host);
	} else {
		snprintf(buf, len, strchr(sv->host, ':') != NULL ? "[%s]:%d" : "%s:%d", sv->host,
			 sv->port);
		if (sv->weight != 1)
			snprintf(buf + strlen(buf), len - strlen(buf), ":%d", sv->weight);
	}
	return buf;
}

/* A TLS file must be there and readable when k2mc starts, not found
 * missing at the first connection. A regular file: it is read again on every
 * reconnect, which a pipe cannot be, and stat first so that a device is
 * never opened. Opened and closed here; the transport reads it. */
static enum k2mc_config_result check_tls_file(const char *flag, const char *path, char *err,
					      size_t errlen)
{
	struct stat sb;
	int fd;

	if (path == NULL)
		return K2MC_CONFIG_OK;
	if (stat(path, &sb) != 0)
		USAGE("%s %s: %s", flag, path, strerror(errno));
	if (S_ISDIR(sb.st_mode))
		USAGE("%s %s: is a directory, not a PEM file", flag, path);
	if (!S_ISREG(sb.st_mode))
		USAGE("%s %s: not a regular file", flag, path);
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		USAGE("%s %s: %s", flag, path, strerror(errno));
	close(fd);
	return K2MC_CONFIG_OK;
}

/* Deployments: weights only where the readers weigh servers, TLS settings
 * only with TLS, both halves of a client certificate. */
static enum k2mc_config_result check_servers_and_tls(const struct k2mc_config *c, char *err,
						     size_t errlen)
{
	static const struct {
		const char *flag;
		size_t off;
	} tls_opts[] = {
		{ "--mc-tls-ca", offsetof(struct k2mc_config, mc_tls_ca) },
		{ "--mc-tls-cert", offsetof(struct k2mc_config, mc_tls_cert) },
		{ "--mc-tls-key", offsetof(struct k2mc_config, mc_tls_key) },
		{ "--mc-tls-key-password", offsetof(struct k2mc_config, mc_tls_key_password) },
		{ "--mc-tls-server-name", offsetof(struct k2mc_config, mc_tls_server_name) },
	};
	enum k2mc_config_result r;
	char label[300];

	if (!k2mc_distribution_weighted(c->distribution))
		for (int i = 0; i < c->nservers; i++)
			if (c->servers[i].weight != 1)
				USAGE("-m: server %s has weight %d, but --distribution %s places keys "
				      "as its readers do, without weights; weights are for "
				      "--distribution libketama and dalli",
				      server_label(&c->servers[i], label, sizeof(label)),
				      c->servers[i].weight, k2mc_distribution_name(c->distribution));
	if (!c->mc_tls) {
		for (size_t i = 0; i < sizeof(tls_opts) / sizeof(tls_opts[0]); i++)
			if (*(const char *const *)((const char *)c + tls_opts[i].off) != NULL)
				USAGE("%s needs --mc-tls: TLS is off, so it would be ignored",
				      tls_opts[i].flag);
		if (c->mc_tls_insecure)
			USAGE("--mc-tls-insecure needs --mc-tls: TLS is off, so it would be ignored");
		return K2MC_CONFIG_OK;
	}
	if (c->mc_tls_cert != NULL && c->mc_tls_key == NULL)
		USAGE("--mc-tls-cert needs --mc-tls-key: a client certificate is sent with its "
		      "private key");
	if (c->mc_tls_key != NULL && c->mc_tls_cert == NULL)
		USAGE("--mc-tls-key needs --mc-tls-cert: a private key is used with its client "
		      "certificate");
	if (c->mc_tls_key_password != NULL && c->mc_tls_key == NULL)
		USAGE("--mc-tls-key-password needs --mc-tls-key");
	r = check_tls_file("--mc-tls-ca", c->mc_tls_ca, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = check_tls_file("--mc-tls-cert", c->mc_tls_cert, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = check_tls_file("--mc-tls-key", c->mc_tls_key, err, errlen);
	return r;
}

/* Mapping, tombstones and refill: what only makes sense together. */
static enum k2mc_config_result check_mapping(const struct k2mc_config *c,
					     const struct parse_state *st, char *err,
					     size_t errlen)
{
	if (st->ttl_past != 0 && !c->ttl_from_timestamp) {
		char where[300] = "";

		if (st->ttl_past_level == LVL_FILE)
			snprintf(where, sizeof(where), "-F %s:%d: ", c->config_file,
				 st->ttl_past_line);
		USAGE("%s--ttl: %ld is over 30 days, so memcached reads it as an absolute unix time, "
		      "and that time has passed: every item would be stored already expired; a "
		      "relative TTL must be <= %d (or use --ttl-from-timestamp, where --ttl is a "
		      "duration)",
		      where, st->ttl_past, K2MC_TTL_RELATIVE_MAX);
	}
	if (c->ttl_from_timestamp && c->ttl == 0 && c->ttl_header == NULL)
		USAGE("--ttl-from-timestamp needs --ttl SECONDS or --ttl-header NAME: without a TTL "
		      "items never expire, so the timestamp would change nothing");
	if (c->on_tombstone == K2MC_TOMB_INVALIDATE && c->mc_protocol == K2MC_PROTO_TEXT)
		USAGE("--on-tombstone invalidate:%u needs the meta protocol (md <key> I T%u); "
		      "--mc-protocol text has no invalidation: use delete or ignore, or --mc-protocol "
		      "auto or meta",
		      c->invalidate_grace_s, c->invalidate_grace_s);
	if (!c->refill && st->refill_from_set)
		USAGE("--refill-from needs --refill: refill is off, so it would be ignored");
	if (!c->refill && st->refill_rate_set)
		USAGE("--refill-rate needs --refill: refill is off, so it would be ignored");
	if (!c->refill && st->refill_ready_set)
		USAGE("--refill-ready needs --refill: refill is off, so it would be ignored");
	return K2MC_CONFIG_OK;
}

/* "NAME=VALUE" of an -X property, its value masked when the name says it
 * holds a secret (k2mc_config_is_secret): for messages. */
static const char *xprop_shown(const char *xprop, char *buf, size_t len)
{
	const char *eq = strchr(xprop, '=');
	int nl = eq ? (int)(eq - xprop) : (int)strlen(xprop);

	if (eq == NULL || eq[1] == '\0') {
		snprintf(buf, len, "%.200s", xprop);
	} else {
		char name[256];

		snprintf(name, sizeof(name), "%.*s", nl, xprop);
		snprintf(buf, len, "%.200s=%.200s", name,
			 k2mc_config_is_secret(name) ? "********" : eq + 1);
	}
	return buf;
}

/* librdkafka's reason for refusing NAME=VALUE, with the value masked if it
 * is a secret (librdkafka quotes values it cannot parse). */
static void refusal_reason(const char *name, const char *value, const char *reason, char *buf,
			   size_t len)
{
	const char *hit;
	size_t vl = strlen(value);

	if (!k2mc_config_is_secret(name) || vl == 0 || (hit = strstr(reason, value)) == NULL) {
		snprintf(buf, len, "%s", reason);
		return;
	}
	snprintf(buf, len, "%.*s********", (int)(hit - reason), reason);
	refusal_reason(name, value, hit + vl, buf + strlen(buf), len - strlen(buf));
}

rd_kafka_conf_t *k2mc_config_rdkafka(const struct k2mc_config *c, const char *client,
				     const char *const own[], char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512], why[512], shown[512];

	if (conf == NULL) {
		snprintf(err, errlen, "%s: out of memory", client);
		return NULL;
	}
	for (int i = 0; own != NULL && own[i] != NULL && own[i + 1] != NULL; i += 2) {
		if (rd_kafka_conf_set(conf, own[i], own[i + 1], e, sizeof(e)) != RD_KAFKA_CONF_OK) {
			refusal_reason(own[i], own[i + 1], e, why, sizeof(why));
			snprintf(err, errlen, "%s: %s=%s: %s", client, own[i],
				 k2mc_config_is_secret(own[i]) ? "********" : own[i + 1], why);
			goto fail;
		}
	}
	for (int i = 0; i < c->nxprops; i++) {
		const char *eq = strchr(c->xprops[i], '=');
		size_t nl = eq ? (size_t)(eq - c->xprops[i]) : 0;
		char name[256];

		if (eq == NULL || nl >= sizeof(name)) {
			snprintf(err, errlen, "%s: -X %s: expected NAME=VALUE, NAME under 256 bytes",
				 client, xprop_shown(c->xprops[i], shown, sizeof(shown)));
			goto fail;
		}
		memcpy(name, c->xprops[i], nl);
		name[nl] = '\0';
		if (rd_kafka_conf_set(conf, name, eq + 1, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
			refusal_reason(name, eq + 1, e, why, sizeof(why));
			snprintf(err, errlen, "%s: -X %s: %s", client,
				 xprop_shown(c->xprops[i], shown, sizeof(shown)), why);
			goto fail;
		}
	}
	return conf;
fail:
	rd_kafka_conf_destroy(conf);
	return NULL;
}

/* librdkafka's reading of the -X properties: a configuration object built as
 * group.c builds the consumer's (k2mc's own settings first, then every -X in
 * order) and read back with rd_kafka_conf_get, so a value means here what it
 * will mean there ("t", "1", "0x1000", a later -X replacing an earlier one).
 * A property librdkafka refuses is skipped; accepted[i], when given, says
 * which were taken, and *refused (when given) is the first refused one, its
 * reason in why (check_xprops refuses the configuration with it).
 * plugin.library.paths is skipped, not refused: setting it loads the
 * libraries, which the run does once (group.c) and --check-config with it. */
static rd_kafka_conf_t *rdk_view(const struct k2mc_config *c, unsigned char *accepted,
				 int *refused, char *why, size_t whylen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512];

	if (refused != NULL)
		*refused = -1;
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
			if (strcmp(name, "plugin.library.paths") == 0)
				continue;
			ok = rd_kafka_conf_set(conf, name, eq + 1, e, sizeof(e)) == RD_KAFKA_CONF_OK;
			if (!ok && refused != NULL && *refused < 0) {
				*refused = i;
				refusal_reason(name, eq + 1, e, why, whylen);
			}
		} else if (refused != NULL && *refused < 0) {
			*refused = i;
			snprintf(why, whylen, "property name of %zu bytes (librdkafka's are shorter)",
				 nl);
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
	char shown[512];

	if (i < 0)
		snprintf(buf, len, "-X");
	else if (st->xlevel[i] == LVL_FILE)
		snprintf(buf, len, "-F %s:%d: %s", c->config_file, st->xline[i],
			 xprop_shown(c->xprops[i], shown, sizeof(shown)));
	else
		snprintf(buf, len, "-X %s", xprop_shown(c->xprops[i], shown, sizeof(shown)));
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
	char where[512], val[1024], why[512];
	int i, refused;

	i = last_xprop(c, NULL, "group.id");
	if (i >= 0)
		USAGE("%s: the consumer group is set with -G (group= in a -F file); a librdkafka "
		      "group.id would silently replace it",
		      xprop_where(c, st, i, where, sizeof(where)));
	if (c->nxprops == 0)
		return K2MC_CONFIG_OK;
	conf = rdk_view(c, accepted, &refused, why, sizeof(why));
	if (conf == NULL)
		USAGE("-X: out of memory");
	if (refused >= 0) {
		/* what the start would stop at when it builds the consumer's
		 * configuration (group.c), and --check-config with it: refused
		 * here, with the place it came from */
		set_err(err, errlen, "%s: %s", xprop_where(c, st, refused, where, sizeof(where)),
			why);
	} else if (strcmp(rdk_get(conf, "enable.auto.commit", val, sizeof(val)), "true") == 0) {
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
	} else if (last_xprop(c, accepted, "auto.offset.reset") >= 0 &&
		   strcmp(rdk_get(conf, "auto.offset.reset", val, sizeof(val)), "smallest") != 0 &&
		   strcmp(val, "earliest") != 0 && strcmp(val, "beginning") != 0) {
		/* librdkafka reads back earliest as its first name, smallest */
		i = last_xprop(c, accepted, "auto.offset.reset");
		set_err(err, errlen,
			"%s: after a committed offset left the log (retention), k2mc resumes at the "
			"oldest surviving record, which needs librdkafka's auto.offset.reset=earliest; "
			"where a partition with no committed offset starts is -o beginning|end",
			xprop_where(c, st, i, where, sizeof(where)));
	} else if (c->exit_at_eof &&
		   strcmp(rdk_get(conf, "enable.partition.eof", val, sizeof(val)), "false") == 0) {
		i = last_xprop(c, accepted, "enable.partition.eof");
		set_err(err, errlen,
			"%s: -e needs librdkafka's end-of-partition events to see that a partition "
			"is done; without them k2mc would wait forever",
			xprop_where(c, st, i, where, sizeof(where)));
	} else if (rd_kafka_version() < K2MC_RDKAFKA_KIP848 &&
		   strcasecmp(rdk_get(conf, "group.protocol", val, sizeof(val)), "consumer") == 0) {
		i = last_xprop(c, accepted, "group.protocol");
		set_err(err, errlen,
			"%s: librdkafka %s has no generally available KIP-848 consumer group "
			"protocol (it came in 2.12.0); use group.protocol=classic, or build k2mc "
			"with the librdkafka it pins (make RDKAFKA=vendored)",
			xprop_where(c, st, i, where, sizeof(where)), rd_kafka_version_str());
	} else if (rd_kafka_version() < K2MC_RDKAFKA_COOP_FIX &&
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

/* 1 when the group speaks KIP-848 (group.protocol=consumer). */
static int kip848(rd_kafka_conf_t *conf)
{
	char v[32];

	return conf != NULL && strcasecmp(rdk_get(conf, "group.protocol", v, sizeof(v)),
					  "consumer") == 0;
}

/* The lease's premises under KIP-848 (group.protocol=consumer): the session
 * timeout and the heartbeat interval are the broker's
 * (group.consumer.session.timeout.ms, group.consumer.heartbeat.interval.ms),
 * not the client's, and librdkafka refuses both properties. The client is
 * told the interval, never the session, so the lease takes the worst case
 * the broker's default bounds allow a group: the least session
 * (group.consumer.min.session.timeout.ms, 45 s) and the longest interval
 * (group.consumer.max.heartbeat.interval.ms, 15 s). What holds as with the
 * classic protocol: librdkafka heartbeats every interval, and an accepted
 * commit proves membership when it arrived (the coordinator checks its
 * member epoch). What changes: a commit is never a heartbeat (the classic
 * lease never relied on it), and there is no join phase; a revoked
 * partition must be released within the rebalance timeout
 * (max.poll.interval.ms), which the drain's own bound
 * (--shutdown-timeout-ms) stays below. A cluster whose bounds were lowered
 * below these defaults voids the lease: README, fencing. */
#define KIP848_MIN_SESSION_MS 45000
#define KIP848_MAX_HEARTBEAT_MS 15000

int64_t k2mc_config_session_timeout_ms(const struct k2mc_config *c)
{
	rd_kafka_conf_t *conf = rdk_view(c, NULL, NULL, NULL, 0);
	int64_t v = kip848(conf) ? KIP848_MIN_SESSION_MS : rdk_int(conf, "session.timeout.ms", 45000);

	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	return v;
}

int64_t k2mc_config_heartbeat_interval_ms(const struct k2mc_config *c)
{
	rd_kafka_conf_t *conf = rdk_view(c, NULL, NULL, NULL, 0);
	int64_t v = kip848(conf) ? KIP848_MAX_HEARTBEAT_MS
				 : rdk_int(conf, "heartbeat.interval.ms", 3000);

	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	return v;
}

int64_t k2mc_config_max_poll_interval_ms(const struct k2mc_config *c)
{
	rd_kafka_conf_t *conf = rdk_view(c, NULL, NULL, NULL, 0);
	int64_t v = rdk_int(conf, "max.poll.interval.ms", 300000);

	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	return v;
}

int64_t k2mc_config_join_lease_ms(const struct k2mc_config *c)
{
	int64_t v = k2mc_config_max_poll_interval_ms(c) - k2mc_config_heartbeat_interval_ms(c) -
		    K2MC_FENCE_MARGIN_MS(k2mc_config_session_timeout_ms(c));

	return v > 0 ? v : 1;
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
	int opt, idx = -1;

	set_defaults(c);
	opterr = 0;
	/* Pass 1: find -F, and answer -h / -V whatever the file and the
	 * environment say. Command-line errors wait for pass 2, which reports
	 * them in order. optind 0, not 1: glibc only forgets a half-parsed
	 * "-abc" bundle from an earlier call when optind is 0. */
	optind = 0;
	while ((opt = getopt_long(argc, argv, short_opts, long_opts, &idx)) != -1) {
		if (idx >= 0 && !typed_in_full(argv, idx)) {
			idx = -1;
			continue; /* pass 2 reports it */
		}
		idx = -1;
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
	while ((opt = getopt_long(argc, argv, short_opts, long_opts, &idx)) != -1) {
		if (opt == ':' || opt == '?')
			return bad_option(opt, argv, err, errlen);
		if (idx >= 0 && !typed_in_full(argv, idx)) {
			const char *t = argv[optind - 1];

			if (long_opts[idx].has_arg == required_argument && optarg == t)
				t = argv[optind - 2];
			USAGE("option '%.*s' is not spelled in full: did you mean --%s?",
			      (int)strcspn(t, "="), t, long_opts[idx].name);
		}
		idx = -1;
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
		r = check_servers_and_tls(c, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = check_mapping(c, &st, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = check_xprops(c, &st, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = check_lease(c, err, errlen);
	if (r == K2MC_CONFIG_OK)
		r = k2mc_config_check_ring_memory(c, k2mc_config_memory_bytes(), err, errlen);
	/* as ssh does for keys: a warning, once, before anything starts */
	if (r == K2MC_CONFIG_OK && st.file_secrets[0] != '\0' && (st.file_mode & 077) != 0)
		fprintf(stderr,
			"k2mc: warning: -F %s holds secrets (%s) and is readable by group/others "
			"(mode %04o); chmod 600 it\n",
			c->config_file, st.file_secrets, st.file_mode);
	return r;
}

/* ---- --dump-config ----------------------------------------------------------- */

int k2mc_config_is_secret(const char *name)
{
	/* the properties librdkafka itself marks sensitive (_RK_SENSITIVE in
	 * rdkafka_conf.c, 2.14.2; no API tells them): it redacts them in its
	 * own debug dumps */
	static const char *const rdk_sensitive[] = {
		"ssl.key.location",
		"ssl.key.password",
		"ssl.key.pem",
		"ssl_key",
		"ssl.ca.pem",
		"ssl.keystore.password",
		"sasl.username",
		"sasl.password",
		"sasl.oauthbearer.config",
		"sasl.oauthbearer.client.secret",
		"sasl.oauthbearer.assertion.private.key.file",
		"sasl.oauthbearer.assertion.private.key.passphrase",
		"sasl.oauthbearer.assertion.private.key.pem",
	};
	/* any property whose name says it holds one */
	static const char *const words[] = { "password", "passphrase", "secret" };
	/* under sasl. and ssl. also: JAAS configurations (Java's login
	 * modules carry the password inline), private keys and key stores,
	 * PEM material */
	static const char *const security_words[] = { "jaas", "key", "pem", "credential" };
	size_t i;

	for (i = 0; i < sizeof(rdk_sensitive) / sizeof(rdk_sensitive[0]); i++)
		if (strcasecmp(name, rdk_sensitive[i]) == 0)
			return 1;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(name, words[i]) != NULL)
			return 1;
	if (strncasecmp(name, "sasl.", 5) != 0 && strncasecmp(name, "ssl.", 4) != 0)
		return 0;
	for (i = 0; i < sizeof(security_words) / sizeof(security_words[0]); i++)
		if (strcasestr(name, security_words[i]) != NULL)
			return 1;
	return 0;
}

const char *k2mc_config_version(void)
{
	return K2MC_VERSION;
}

const char *k2mc_distribution_name(enum k2mc_distribution d)
{
	switch (d) {
	case K2MC_DIST_LIBKETAMA:
		return "libketama";
	case K2MC_DIST_MODULA:
		return "modula";
	case K2MC_DIST_RENDEZVOUS:
		return "rendezvous";
	case K2MC_DIST_CRC32:
		return "crc32";
	case K2MC_DIST_DALLI:
		return "dalli";
	case K2MC_DIST_SPYMEMCACHED:
		return "spymemcached";
	case K2MC_DIST_KETAMA:
	default:
		return "ketama";
	}
}

int k2mc_distribution_weighted(enum k2mc_distribution d)
{
	/* libketama (libmemcached KETAMA_WEIGHTED) and Dalli give a server
	 * points in proportion to its weight; libmemcached's plain ketama and
	 * modula, pymemcache, gomemcache and spymemcached's ketama ignore it */
	return d == K2MC_DIST_LIBKETAMA || d == K2MC_DIST_DALLI;
}

const char *k2mc_mc_protocol_name(enum k2mc_mc_protocol p)
{
	return p == K2MC_PROTO_META ? "meta" : p == K2MC_PROTO_TEXT ? "text" : "auto";
}

const char *k2mc_log_format_name(enum k2mc_log_format f)
{
	return f == K2MC_LOG_JSON ? "json" : "text";
}

const char *k2mc_on_tombstone_name(enum k2mc_on_tombstone t)
{
	return t == K2MC_TOMB_IGNORE ? "ignore" : t == K2MC_TOMB_INVALIDATE ? "invalidate" : "delete";
}

/* --refill-from's DURATION in the largest unit that is exact */
static const char *duration_str(int64_t ms, char *buf, size_t len)
{
	if (ms % 86400000 == 0)
		snprintf(buf, len, "%lldd", (long long)(ms / 86400000));
	else if (ms % 3600000 == 0)
		snprintf(buf, len, "%lldh", (long long)(ms / 3600000));
	else if (ms % 60000 == 0)
		snprintf(buf, len, "%lldm", (long long)(ms / 60000));
	else
		snprintf(buf, len, "%llds", (long long)(ms / 1000));
	return buf;
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
	char label[300];

	fprintf(out, "# k2mc %s effective configuration (defaults < environment < -F file < "
		     "command line)\n# secrets are masked\n",
		K2MC_VERSION);
	fprintf(out, "brokers=%s\n", c->brokers ? c->brokers : "");
	for (int i = 0; i < c->ntopics; i++)
		fprintf(out, "topic=%s\n", c->topics[i]);
	fprintf(out, "group=%s\nmemcached=", c->group);
	for (int i = 0; i < c->nservers; i++)
		fprintf(out, "%s%s", i ? "," : "", server_label(&c->servers[i], label, sizeof(label)));
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
	fprintf(out, "distribution=%s\nmc-protocol=%s\nmc-tls=%s\n",
		k2mc_distribution_name(c->distribution), k2mc_mc_protocol_name(c->mc_protocol),
		c->mc_tls ? "true" : "false");
	if (c->mc_tls_ca != NULL)
		fprintf(out, "mc-tls-ca=%s\n", c->mc_tls_ca);
	if (c->mc_tls_cert != NULL)
		fprintf(out, "mc-tls-cert=%s\n", c->mc_tls_cert);
	if (c->mc_tls_key != NULL)
		fprintf(out, "mc-tls-key=%s\n", c->mc_tls_key);
	if (c->mc_tls_key_password != NULL)
		fprintf(out, "mc-tls-key-password=********\n");
	if (c->mc_tls_server_name != NULL)
		fprintf(out, "mc-tls-server-name=%s\n", c->mc_tls_server_name);
	if (c->mc_tls)
		fprintf(out, "mc-tls-insecure=%s\n", c->mc_tls_insecure ? "true" : "false");
	fprintf(out, "key=%s\nvalue=%s\n", c->key_template, c->value_template);
	if (c->ttl_header != NULL)
		fprintf(out, "ttl-header=%s\n", c->ttl_header);
	fprintf(out, "ttl-from-timestamp=%s\nflags=%u\n", c->ttl_from_timestamp ? "true" : "false",
		c->flags);
	if (c->flags_header != NULL)
		fprintf(out, "flags-header=%s\n", c->flags_header);
	if (c->on_tombstone == K2MC_TOMB_INVALIDATE)
		fprintf(out, "on-tombstone=invalidate:%u\n", c->invalidate_grace_s);
	else
		fprintf(out, "on-tombstone=%s\n", k2mc_on_tombstone_name(c->on_tombstone));
	fprintf(out, "refill=%s\n", c->refill ? "true" : "false");
	if (c->refill)
		fprintf(out, "refill-from=%s\nrefill-rate=%llu\nrefill-ready=%s\n",
			c->refill_from_earliest ? "earliest"
						: duration_str(c->refill_from_ms, label, sizeof(label)),
			(unsigned long long)c->refill_rate, c->refill_ready ? "yes" : "no");
	fprintf(out, "log-format=%s\n", k2mc_log_format_name(c->log_format));
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
