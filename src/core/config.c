/* Configuration for k2mc: flags (kcat conventions: -b -t -G -X -o -e -q -v,
 * -F FILE), key=value files and K2MC_* environment variables. Every option is
 * one row of opts[] below, which argv, -F, the environment, the defaults,
 * --help and --dump-config all read (apply() is the one way a value gets in).
 * Validates ranges, and settings that contradict each other or k2mc's
 * guarantees (the check_* functions), here so the rest of the program can
 * trust the struct; builds every librdkafka configuration k2mc uses
 * (k2mc_config_rdkafka). Not a place that opens connections. */
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
	/* bit i: opts[i] was given (environment, -F, command line) and not
	 * set false since; what the "needs --FLAG" checks read */
	uint64_t given;
	/* -F: the keys holding secrets, ", "-separated, and the file's mode */
	char file_secrets[200];
	unsigned file_mode;
};

static void note_secret_name(struct parse_state *st, const char *key);

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

/* ---- the option table -------------------------------------------------------- */

/* One name of an enumerated setting, for parsing and for printing alike (the
 * *_name functions and --dump-config read the same rows). The first row is
 * what a value outside the table prints as. */
struct name_value {
	const char *name;
	int value;
};

static const struct name_value offset_names[] = {
	{ "beginning", 1 },
	{ "end", 0 },
	{ NULL, 0 },
};
static const struct name_value distribution_names[] = {
	{ "ketama", K2MC_DIST_KETAMA },	      { "libketama", K2MC_DIST_LIBKETAMA },
	{ "modula", K2MC_DIST_MODULA },	      { "rendezvous", K2MC_DIST_RENDEZVOUS },
	{ "crc32", K2MC_DIST_CRC32 },	      { "dalli", K2MC_DIST_DALLI },
	{ "spymemcached", K2MC_DIST_SPYMEMCACHED }, { NULL, 0 },
};
static const struct name_value protocol_names[] = {
	{ "auto", K2MC_PROTO_AUTO },
	{ "meta", K2MC_PROTO_META },
	{ "text", K2MC_PROTO_TEXT },
	{ NULL, 0 },
};
/* invalidate is written invalidate:SECONDS (parse_tombstone) */
static const struct name_value tombstone_names[] = {
	{ "delete", K2MC_TOMB_DELETE },
	{ "ignore", K2MC_TOMB_IGNORE },
	{ "invalidate", K2MC_TOMB_INVALIDATE },
	{ NULL, 0 },
};
static const struct name_value invalid_names[] = {
	{ "skip", K2MC_INVALID_SKIP }, { "hash", K2MC_INVALID_HASH },
	{ "dlq", K2MC_INVALID_DLQ },   { "fail", K2MC_INVALID_FAIL },
	{ NULL, 0 },
};
static const struct name_value log_format_names[] = {
	{ "text", K2MC_LOG_TEXT },
	{ "json", K2MC_LOG_JSON },
	{ NULL, 0 },
};
static const struct name_value format_names[] = {
	{ "raw", K2MC_FMT_RAW },
	{ "json", K2MC_FMT_JSON },
	{ "avro", K2MC_FMT_AVRO },
	{ NULL, 0 },
};
static const struct name_value cdc_names[] = {
	{ "none", K2MC_CDC_NONE },
	{ "debezium", K2MC_CDC_DEBEZIUM },
	{ "debezium-invalidate", K2MC_CDC_DEBEZIUM_INVALIDATE },
	{ NULL, 0 },
};
static const struct name_value yes_no_names[] = {
	{ "yes", 1 },
	{ "no", 0 },
	{ NULL, 0 },
};

/* The enum fields are written through an int (OT_ENUM's off): */
_Static_assert(sizeof(enum k2mc_distribution) == sizeof(int) &&
		       sizeof(enum k2mc_mc_protocol) == sizeof(int) &&
		       sizeof(enum k2mc_invalid_policy) == sizeof(int) &&
		       sizeof(enum k2mc_log_format) == sizeof(int) &&
		       sizeof(enum k2mc_format) == sizeof(int) && sizeof(enum k2mc_cdc) == sizeof(int),
	       "enum settings are stored as int");

static const char *name_of(const struct name_value *names, int v)
{
	for (const struct name_value *n = names; n->name != NULL; n++)
		if (n->value == v)
			return n->name;
	return names[0].name;
}

static int value_of(const struct name_value *names, const char *s, int *v)
{
	for (const struct name_value *n = names; n->name != NULL; n++)
		if (strcmp(n->name, s) == 0) {
			*v = n->value;
			return 0;
		}
	return -EINVAL;
}

enum opt_type {
	OT_ACTION, /* -h, -V, -F: no field; k2mc_config_parse reads -F first */
	OT_FLAG,   /* int: 1 when given; NAME=false in -F sets 0 */
	OT_LEVEL,  /* int: hi when given, lo when off (-v and -q share verbosity) */
	OT_STR,    /* const char *, pointing into argv or storage c owns */
	OT_INT,    /* int, decimal in [lo, hi] */
	OT_U32,    /* uint32_t, decimal in [lo, hi] */
	OT_U64,    /* uint64_t, decimal in [lo, hi] */
	OT_SIZE,   /* uint64_t, bytes with an optional k, m or g suffix, at least lo */
	OT_ENUM,   /* an int-sized enum: one of names */
	OT_CUSTOM, /* the row's parse and print hooks do it all */
};

enum opt_flag {
	OF_SECRET = 1 << 0,    /* masked by --dump-config; a -F file holding it: chmod 600 */
	OF_NONEMPTY = 1 << 1,  /* "" refused; expect is the complaint */
	OF_TEMPLATE = 1 << 2,  /* no line break: --dump-config writes it back as one -F line */
	OF_POW2 = 1 << 3,      /* a power of two */
	OF_DIGITS = 1 << 4,    /* digits only (no sign), like the -m port */
	OF_IF_SET = 1 << 5,    /* --dump-config leaves it out while unset (NULL, 0, not given) */
	OF_ARGV_ONLY = 1 << 6, /* refused as a -F key */
	OF_LIST = 1 << 7,      /* its environment variable is a comma-separated list */
	OF_HELP_JOIN = 1 << 8, /* --help names it and the next row on one line */
	OF_PATH = 1 << 9,      /* a file read at each connection: readable at start */
};

/* --help's sections, in order; the rows of one are consecutive. */
enum section {
	S_KAFKA,
	S_MEMCACHED,
	S_TLS,
	S_MAPPING,
	S_FORMATS,
	S_INVALID,
	S_REFILL,
	S_PIPELINE,
	S_OBSERVE,
	S_CONFIG,
	S_OTHER,
};

static const char *const section_titles[] = {
	[S_KAFKA] = "Kafka:",
	[S_MEMCACHED] = "Memcached:",
	[S_TLS] = "TLS to Memcached (OpenSSL; verified unless --mc-tls-insecure):",
	[S_MAPPING] = "What is written (templates: {key} {value} {topic} {partition} {header:NAME}\n"
		      "{json:/POINTER} {keyjson:/POINTER}, {{ and }} for braces, the rest literal):",
	[S_FORMATS] = "Formats and change events:",
	[S_INVALID] = "Records Memcached cannot take (no key, bad key, value too large):",
	[S_REFILL] = "Refill (a server that lost its contents gets its keys again from Kafka):",
	[S_PIPELINE] = "Pipeline:",
	[S_OBSERVE] = "Observability:",
	[S_CONFIG] = "Configuration:",
	[S_OTHER] = "Other:",
};

struct opt;
/* Parses arg (NULL for a flag) into c; messages name the option, the caller
 * adds where the setting came from. */
typedef enum k2mc_config_result (*opt_parse_fn)(struct k2mc_config *c, struct parse_state *st,
						const struct opt *o, enum level lvl,
						const char *arg, char *err, size_t errlen);
/* Writes the row's -F lines for --dump-config (none, one, or one per value). */
typedef void (*opt_print_fn)(const struct k2mc_config *c, const struct opt *o, FILE *out);

/* One option: argv (getopt's tables are built from these rows), the -F key,
 * the environment, the default, --help, --dump-config and the "needs"
 * checks all read it. Model: librdkafka's struct rd_kafka_property. */
struct opt {
	const char *name;   /* --NAME and the -F key; NULL: short only (-X) */
	char letter;        /* -LETTER, or 0 */
	enum opt_type type;
	size_t off;         /* offsetof(struct k2mc_config, field) */
	const char *dflt;   /* the default, as it would be typed; NULL: zero */
	const char *(*dflt_fn)(char *buf, size_t len); /* a default known at run time */
	long long lo, hi;   /* numbers: the range; OT_LEVEL: the value off, on */
	const struct name_value *names; /* OT_ENUM */
	unsigned flags;     /* enum opt_flag */
	/* numbers, enums: what "expected ..." says (default: LO..HI, or the
	 * names); strings with OF_NONEMPTY: the complaint about "" */
	const char *expect;
	/* the flag it is ignored without: the cross checks refuse it given
	 * while that is off, and --dump-config leaves it out */
	const char *needs;
	const char *env;    /* K2MC_ variable, below -F; NULL: none */
	int dump;           /* place in --dump-config (1, 2, ...); 0: not printed */
	opt_parse_fn parse; /* replaces the type's parsing */
	opt_print_fn print; /* replaces the type's NAME=VALUE line */
	enum section section;
	const char *arg;    /* --help: the value's name; NULL: takes none */
	/* --help: the description; a line after the first starts in column
	 * 28. NULL: shown with the row before (OF_HELP_JOIN) */
	const char *help;
};

#define FIELD(f) offsetof(struct k2mc_config, f)
#define LABEL_MAX 64

/* "-c" for an option with a letter, else "--ring-size": how messages name it. */
static const char *opt_label(const struct opt *o, char *buf)
{
	if (o->letter != 0)
		snprintf(buf, LABEL_MAX, "-%c", o->letter);
	else
		snprintf(buf, LABEL_MAX, "--%s", o->name);
	return buf;
}

static enum k2mc_config_result parse_value(struct k2mc_config *c, const struct opt *o,
					   const char *arg, char *err, size_t errlen);

static enum k2mc_config_result parse_topic(struct k2mc_config *c, struct parse_state *st,
					   const struct opt *o, enum level lvl, const char *arg,
					   char *err, size_t errlen)
{
	(void)o;
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
	return K2MC_CONFIG_OK;
}

static void print_topics(const struct k2mc_config *c, const struct opt *o, FILE *out)
{
	for (int i = 0; i < c->ntopics; i++)
		fprintf(out, "%s=%s\n", o->name, c->topics[i]);
}

/* -m is read once every source is, so that a list given lower down that
 * would not parse cannot fail a command line that replaces it. */
static enum k2mc_config_result parse_servers_later(struct k2mc_config *c, struct parse_state *st,
						   const struct opt *o, enum level lvl,
						   const char *arg, char *err, size_t errlen)
{
	(void)c, (void)o, (void)err, (void)errlen;
	st->servers = arg;
	st->servers_level = lvl;
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

static void print_servers(const struct k2mc_config *c, const struct opt *o, FILE *out)
{
	char label[300];

	fprintf(out, "%s=", o->name);
	for (int i = 0; i < c->nservers; i++)
		fprintf(out, "%s%s", i ? "," : "", server_label(&c->servers[i], label, sizeof(label)));
	fprintf(out, "\n");
}

static enum k2mc_config_result parse_xprop(struct k2mc_config *c, struct parse_state *st,
					   const struct opt *o, enum level lvl, const char *arg,
					   char *err, size_t errlen)
{
	(void)o;
	if (strchr(arg, '=') == NULL || arg[0] == '=')
		USAGE("-X: expected PROP=VALUE, got '%s'", arg);
	if (c->nxprops == K2MC_MAX_XPROPS)
		USAGE("-X: more than %d properties", K2MC_MAX_XPROPS);
	st->xlevel[c->nxprops] = lvl;
	st->xline[c->nxprops] = st->line;
	c->xprops[c->nxprops++] = arg;
	return K2MC_CONFIG_OK;
}

/* NAME=VALUE settings (-X, --schema-registry-property) as -F lines, after
 * prefix: each NAME once, with the value its client ends up with (the last),
 * masked when secret(NAME). */
static void print_props(FILE *out, const char *prefix, const char *const *props, int n,
			int (*secret)(const char *name))
{
	for (int i = 0; i < n; i++) {
		const char *eq = strchr(props[i], '=');
		size_t nl = (size_t)(eq - props[i]);
		char name[256];
		int later = 0;

		for (int j = i + 1; j < n && !later; j++)
			later = strncmp(props[j], props[i], nl + 1) == 0;
		if (later)
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)nl, props[i]);
		fprintf(out, "%s%s=%s\n", prefix, name, secret(name) ? "********" : eq + 1);
	}
}

static void print_xprops(const struct k2mc_config *c, const struct opt *o, FILE *out)
{
	(void)o;
	if (c->nxprops > 0)
		fprintf(out, "# librdkafka properties (-X and unknown keys of -F)\n");
	print_props(out, "", c->xprops, c->nxprops, k2mc_config_is_secret);
}

static enum k2mc_config_result parse_ttl(struct k2mc_config *c, struct parse_state *st,
					 const struct opt *o, enum level lvl, const char *arg,
					 char *err, size_t errlen)
{
	enum k2mc_config_result r = parse_value(c, o, arg, err, errlen);

	/* memcached reads exptimes over 30 days as absolute unix times; one
	 * already past is judged once every source is read (check_mapping) */
	if (r == K2MC_CONFIG_OK && c->ttl > K2MC_TTL_RELATIVE_MAX &&
	    (long)c->ttl <= (long)time(NULL) && st->ttl_past == 0) {
		st->ttl_past = (long)c->ttl;
		st->ttl_past_level = lvl;
		st->ttl_past_line = st->line;
	}
	return r;
}

static enum k2mc_config_result parse_server_name(struct k2mc_config *c, struct parse_state *st,
						 const struct opt *o, enum level lvl,
						 const char *arg, char *err, size_t errlen)
{
	(void)st, (void)lvl;
	/* a DNS name is at most 253 bytes (RFC 1035); SNI carries no blanks */
	if (*arg == '\0' || strlen(arg) > 253 || !key_bytes_ok(arg, strlen(arg)))
		USAGE("--%s: expected a host name of 1..253 bytes without blanks or control "
		      "characters, got '%.80s'",
		      o->name, arg);
	c->mc_tls_server_name = arg;
	return K2MC_CONFIG_OK;
}

static enum k2mc_config_result parse_tombstone(struct k2mc_config *c, struct parse_state *st,
					       const struct opt *o, enum level lvl,
					       const char *arg, char *err, size_t errlen)
{
	const char *inv = name_of(tombstone_names, K2MC_TOMB_INVALIDATE);
	size_t il = strlen(inv);
	int v;

	(void)st, (void)lvl;
	c->invalidate_grace_s = 0;
	if (strncmp(arg, inv, il) == 0) {
		uint64_t g;

		if (arg[il] != ':' || parse_u64(arg + il + 1, 1, K2MC_TTL_RELATIVE_MAX, &g) != 0)
			USAGE("--%s: invalidate needs a grace period, invalidate:SECONDS with SECONDS "
			      "1..%d, got '%s'",
			      o->name, K2MC_TTL_RELATIVE_MAX, arg);
		c->on_tombstone = K2MC_TOMB_INVALIDATE;
		c->invalidate_grace_s = (uint32_t)g;
	} else if (value_of(tombstone_names, arg, &v) == 0) {
		c->on_tombstone = (enum k2mc_on_tombstone)v;
	} else {
		USAGE("--%s: expected delete, ignore or invalidate:SECONDS, got '%s'", o->name, arg);
	}
	return K2MC_CONFIG_OK;
}

static void print_tombstone(const struct k2mc_config *c, const struct opt *o, FILE *out)
{
	if (c->on_tombstone == K2MC_TOMB_INVALIDATE)
		fprintf(out, "%s=%s:%u\n", o->name, name_of(tombstone_names, K2MC_TOMB_INVALIDATE),
			c->invalidate_grace_s);
	else
		fprintf(out, "%s=%s\n", o->name, name_of(tombstone_names, (int)c->on_tombstone));
}

static enum k2mc_config_result parse_refill_from(struct k2mc_config *c, struct parse_state *st,
						 const struct opt *o, enum level lvl,
						 const char *arg, char *err, size_t errlen)
{
	(void)st, (void)lvl;
	if (strcmp(arg, "earliest") == 0) {
		c->refill_from_earliest = 1;
		c->refill_from_ms = 0;
	} else if (parse_duration(arg, &c->refill_from_ms) == 0) {
		c->refill_from_earliest = 0;
	} else {
		USAGE("--%s: expected earliest or a duration with a unit s, m, h or d (90s, 15m, "
		      "24h, 7d), got '%s'",
		      o->name, arg);
	}
	return K2MC_CONFIG_OK;
}

/* DURATION in the largest unit that is exact */
static void print_refill_from(const struct k2mc_config *c, const struct opt *o, FILE *out)
{
	static const struct {
		int64_t ms;
		char unit;
	} units[] = { { 86400000, 'd' }, { 3600000, 'h' }, { 60000, 'm' }, { 1000, 's' } };
	int64_t ms = c->refill_from_ms;
	size_t i = 0;

	if (c->refill_from_earliest) {
		fprintf(out, "%s=earliest\n", o->name);
		return;
	}
	while (i + 1 < sizeof(units) / sizeof(units[0]) && ms % units[i].ms != 0)
		i++;
	fprintf(out, "%s=%lld%c\n", o->name, (long long)(ms / units[i].ms), units[i].unit);
}

static enum k2mc_config_result parse_metrics_addr(struct k2mc_config *c, struct parse_state *st,
						  const struct opt *o, enum level lvl,
						  const char *arg, char *err, size_t errlen)
{
	(void)st, (void)lvl;
	if (parse_listen_addr(arg, c->metrics_host, sizeof(c->metrics_host), &c->metrics_port) !=
	    0)
		USAGE("--%s: expected [HOST:]PORT or [IPV6]:PORT, got '%s'", o->name, arg);
	return K2MC_CONFIG_OK;
}

static void print_metrics_addr(const struct k2mc_config *c, const struct opt *o, FILE *out)
{
	if (c->metrics_port > 0)
		fprintf(out, strchr(c->metrics_host, ':') ? "%s=[%s]:%d\n" : "%s=%s:%d\n", o->name,
			c->metrics_host, c->metrics_port);
}

int k2mc_config_sr_secret(const char *name)
{
	return strcmp(name, "basic.auth.user.info") == 0 || k2mc_config_is_secret(name);
}

/* --schema-registry-property NAME=VALUE: repeatable, a later NAME wins (the
 * registry client sets them in order); NAME is checked by main against the
 * client's own list (avro.h), which core does not know. */
static enum k2mc_config_result parse_sr_prop(struct k2mc_config *c, struct parse_state *st,
					     const struct opt *o, enum level lvl, const char *arg,
					     char *err, size_t errlen)
{
	const char *eq = strchr(arg, '=');

	if (eq == NULL || eq == arg)
		USAGE("--%s: expected NAME=VALUE (basic.auth.user.info=USER:PASSWORD, "
		      "ssl.ca.location=FILE, ...), got '%.80s'",
		      o->name, arg);
	if (c->nsr_props == K2MC_MAX_SR_PROPS)
		USAGE("--%s: more than %d properties", o->name, K2MC_MAX_SR_PROPS);
	if (lvl == LVL_FILE) {
		char name[128];

		snprintf(name, sizeof(name), "%.*s", (int)(eq - arg), arg);
		if (k2mc_config_sr_secret(name)) {
			char label[200];

			snprintf(label, sizeof(label), "%s %s", o->name, name);
			note_secret_name(st, label);
		}
	}
	c->sr_props[c->nsr_props++] = arg;
	return K2MC_CONFIG_OK;
}

static void print_sr_props(const struct k2mc_config *c, const struct opt *o, FILE *out)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "%s=", o->name);
	print_props(out, prefix, c->sr_props, c->nsr_props, k2mc_config_sr_secret);
}

static enum k2mc_config_result action_help(struct k2mc_config *c, struct parse_state *st,
					   const struct opt *o, enum level lvl, const char *arg,
					   char *err, size_t errlen)
{
	(void)c, (void)st, (void)o, (void)lvl, (void)arg, (void)err, (void)errlen;
	k2mc_config_usage(stdout);
	return K2MC_CONFIG_EXIT;
}

static enum k2mc_config_result action_version(struct k2mc_config *c, struct parse_state *st,
					      const struct opt *o, enum level lvl,
					      const char *arg, char *err, size_t errlen)
{
	(void)c, (void)st, (void)o, (void)lvl, (void)arg, (void)err, (void)errlen;
	/* the libraries k2mc runs with, not the headers it was built against */
	printf("k2mc %s (librdkafka %s, libmemcached %s)\n", K2MC_VERSION, rd_kafka_version_str(),
	       memcached_lib_version());
	return K2MC_CONFIG_EXIT;
}

/* -F is read before everything else (k2mc_config_parse): nothing to do
 * when the command line is applied. */
static enum k2mc_config_result action_none(struct k2mc_config *c, struct parse_state *st,
					   const struct opt *o, enum level lvl, const char *arg,
					   char *err, size_t errlen)
{
	(void)c, (void)st, (void)o, (void)lvl, (void)arg, (void)err, (void)errlen;
	return K2MC_CONFIG_OK;
}

/* One writer per CPU, at most 64. */
static const char *dflt_writers(char *buf, size_t len)
{
	snprintf(buf, len, "%ld", ncpus() < 64 ? ncpus() : 64);
	return buf;
}

/* In --help's order. */
static const struct opt opts[] = {
	/* Kafka */
	{ .name = "brokers", .letter = 'b', .type = OT_STR, .off = FIELD(brokers),
	  .env = "K2MC_BROKERS", .dump = 1, .section = S_KAFKA, .arg = "BROKERS",
	  .help = "bootstrap servers, host:port[,host:port...] (required)" },
	{ .name = "topic", .letter = 't', .type = OT_CUSTOM, .flags = OF_LIST,
	  .env = "K2MC_TOPICS", .dump = 2, .parse = parse_topic, .print = print_topics,
	  .section = S_KAFKA, .arg = "TOPIC",
	  .help = "topic to consume, repeatable; a name starting with ^ is a\n"
		  "regex matching topics (librdkafka) (required)" },
	{ .name = "group", .letter = 'G', .type = OT_STR, .off = FIELD(group), .dflt = "k2mc",
	  .flags = OF_NONEMPTY, .expect = "empty group id", .env = "K2MC_GROUP", .dump = 3,
	  .section = S_KAFKA, .arg = "GROUP", .help = "consumer group id (default k2mc)" },
	{ .letter = 'X', .type = OT_CUSTOM, .dump = 46, .parse = parse_xprop,
	  .print = print_xprops, .section = S_KAFKA, .arg = "PROP=VALUE",
	  .help = "any librdkafka property (security.protocol, sasl.*, ...);\n"
		  "not group.id (use -G), nor auto commit or offset store,\n"
		  "nor auto.offset.reset other than earliest (use -o)" },
	{ .name = "offset", .letter = 'o', .type = OT_ENUM, .off = FIELD(offset_beginning),
	  .dflt = "beginning", .names = offset_names, .expect = "'beginning' or 'end'",
	  .dump = 5, .section = S_KAFKA, .arg = "beginning|end",
	  .help = "where a partition with no committed offset starts\n"
		  "(default beginning); one whose committed offset retention\n"
		  "deleted resumes at its oldest record, whatever -o says" },
	{ .name = "exit", .letter = 'e', .type = OT_FLAG, .off = FIELD(exit_at_eof), .dump = 6,
	  .section = S_KAFKA,
	  .help = "exit 0 when every assigned partition is written and\n"
		  "committed up to its end offset (progress line on a terminal)" },
	{ .name = "count", .letter = 'c', .type = OT_U64, .off = FIELD(max_records), .lo = 1,
	  .hi = LONG_MAX, .flags = OF_IF_SET, .expect = "a record count >= 1", .dump = 7,
	  .section = S_KAFKA, .arg = "N",
	  .help = "stop (drain, commit, exit 0) after consuming N records" },
	/* Memcached */
	{ .name = "memcached", .letter = 'm', .type = OT_CUSTOM, .dflt = "127.0.0.1:11211",
	  .env = "K2MC_MEMCACHED", .dump = 4, .parse = parse_servers_later,
	  .print = print_servers, .section = S_MEMCACHED, .arg = "LIST",
	  .help = "servers, comma-separated, mixed freely: HOST:PORT[:WEIGHT],\n"
		  "[IPV6]:PORT[:WEIGHT], /SOCKET (a unix socket, no weight)\n"
		  "or unix:SOCKET[:WEIGHT] (default 127.0.0.1:11211)" },
	{ .name = "distribution", .type = OT_ENUM, .off = FIELD(distribution), .dflt = "ketama",
	  .names = distribution_names, .dump = 21, .section = S_MEMCACHED, .arg = "NAME",
	  .help = "key placement matching the readers' client: ketama\n"
		  "(default), libketama, modula, rendezvous, crc32, dalli,\n"
		  "spymemcached; weights only with libketama and dalli" },
	{ .name = "mc-protocol", .type = OT_ENUM, .off = FIELD(mc_protocol), .dflt = "auto",
	  .names = protocol_names, .dump = 22, .section = S_MEMCACHED, .arg = "auto|meta|text",
	  .help = "dialect; auto (default): meta where the server has\n"
		  "it, text for older servers and proxies" },
	{ .name = "max-value-bytes", .type = OT_U64, .off = FIELD(max_value_bytes), .lo = 1,
	  .hi = 1L << 30, .flags = OF_IF_SET, .dump = 18, .section = S_MEMCACHED, .arg = "N",
	  .help = "largest value to send (default: the servers' item_size_max)" },
	{ .name = "mc-eject", .type = OT_FLAG, .off = FIELD(mc_eject), .dump = 20,
	  .section = S_MEMCACHED,
	  .help = "remap keys of a down server to the others (libmemcached\n"
		  "auto-eject) instead of waiting for it (default: wait)" },
	/* TLS */
	{ .name = "mc-tls", .type = OT_FLAG, .off = FIELD(mc_tls), .dump = 23, .section = S_TLS,
	  .help = "TLS to every server, trusting the system's CA store" },
	{ .name = "mc-tls-ca", .type = OT_STR, .off = FIELD(mc_tls_ca),
	  .flags = OF_NONEMPTY | OF_IF_SET | OF_PATH, .expect = "expected a file name",
	  .needs = "mc-tls",
	  .dump = 24, .section = S_TLS, .arg = "FILE",
	  .help = "trust the CA certificates in FILE (PEM) instead" },
	{ .name = "mc-tls-cert", .type = OT_STR, .off = FIELD(mc_tls_cert),
	  .flags = OF_NONEMPTY | OF_IF_SET | OF_PATH, .expect = "expected a file name",
	  .needs = "mc-tls",
	  .dump = 25, .section = S_TLS, .arg = "FILE",
	  .help = "client certificate (PEM) for mutual TLS; needs --mc-tls-key" },
	{ .name = "mc-tls-key", .type = OT_STR, .off = FIELD(mc_tls_key),
	  .flags = OF_NONEMPTY | OF_IF_SET | OF_PATH, .expect = "expected a file name",
	  .needs = "mc-tls",
	  .dump = 26, .section = S_TLS, .arg = "FILE", .help = "its private key (PEM)" },
	{ .name = "mc-tls-key-password", .type = OT_STR, .off = FIELD(mc_tls_key_password),
	  .flags = OF_SECRET | OF_NONEMPTY | OF_IF_SET,
	  .expect = "empty (an unencrypted key needs none)", .needs = "mc-tls", .dump = 27,
	  .section = S_TLS, .arg = "PASS",
	  .help = "passphrase of an encrypted key (put it in a chmod 600\n"
		  "-F file: the command line is visible to every user)" },
	{ .name = "mc-tls-server-name", .type = OT_STR, .off = FIELD(mc_tls_server_name),
	  .flags = OF_IF_SET, .needs = "mc-tls", .dump = 28, .parse = parse_server_name,
	  .section = S_TLS, .arg = "NAME",
	  .help = "SNI and the name verified (default: each server's host)" },
	{ .name = "mc-tls-insecure", .type = OT_FLAG, .off = FIELD(mc_tls_insecure),
	  .needs = "mc-tls", .dump = 29, .section = S_TLS,
	  .help = "do not verify the servers' certificates (logs a warning)" },
	/* What is written */
	{ .name = "key", .type = OT_STR, .off = FIELD(key_template), .dflt = "{key}",
	  .flags = OF_TEMPLATE, .dump = 30, .section = S_MAPPING, .arg = "TEMPLATE",
	  .help = "the Memcached key, after --key-prefix (default {key})" },
	{ .name = "key-prefix", .type = OT_STR, .off = FIELD(key_prefix), .dflt = "", .dump = 13,
	  .section = S_MAPPING, .arg = "STR", .help = "prepended to every key" },
	{ .name = "value", .type = OT_STR, .off = FIELD(value_template), .dflt = "{value}",
	  .flags = OF_TEMPLATE, .dump = 31, .section = S_MAPPING, .arg = "TEMPLATE",
	  .help = "the value (default {value}: the record's bytes)" },
	{ .name = "ttl", .type = OT_U32, .off = FIELD(ttl), .dflt = "0", .lo = 0, .hi = INT32_MAX,
	  .expect = "0..2147483647 seconds", .dump = 12, .parse = parse_ttl,
	  .section = S_MAPPING, .arg = "SECONDS",
	  .help = "expiry of written items (default 0: none); over 2592000\n"
		  "(30 days): an absolute unix time, not in the past" },
	{ .name = "ttl-header", .type = OT_STR, .off = FIELD(ttl_header),
	  .flags = OF_NONEMPTY | OF_IF_SET, .expect = "expected a header name", .dump = 32,
	  .section = S_MAPPING, .arg = "NAME",
	  .help = "per-record TTL, decimal seconds, from this header\n"
		  "(records without it: --ttl)" },
	{ .name = "ttl-from-timestamp", .type = OT_FLAG, .off = FIELD(ttl_from_timestamp),
	  .dump = 33, .section = S_MAPPING,
	  .help = "expiry = record timestamp + TTL (any length); records\n"
		  "already expired are not written (the newest of a key\n"
		  "deletes it)" },
	{ .name = "flags", .type = OT_U32, .off = FIELD(flags), .dflt = "0", .lo = 0,
	  .hi = UINT32_MAX, .flags = OF_DIGITS, .dump = 34, .section = S_MAPPING, .arg = "N",
	  .help = "client flags of every item, 0..4294967295 (default 0)" },
	{ .name = "flags-header", .type = OT_STR, .off = FIELD(flags_header),
	  .flags = OF_NONEMPTY | OF_IF_SET, .expect = "expected a header name", .dump = 35,
	  .section = S_MAPPING, .arg = "NAME",
	  .help = "per-record flags, decimal, from this header (records\n"
		  "without it: --flags)" },
	{ .name = "on-tombstone", .type = OT_CUSTOM, .dflt = "delete", .dump = 36,
	  .parse = parse_tombstone, .print = print_tombstone, .section = S_MAPPING,
	  .arg = "delete|ignore|invalidate:SECONDS",
	  .help = "a null value deletes the key\n"
		  "(default), is ignored, or marks it stale, served for\n"
		  "SECONDS more (meta protocol only; 1..2592000)" },
	/* Formats and change events (issue 26) */
	{ .name = "key-format", .type = OT_ENUM, .off = FIELD(key_format), .dflt = "raw",
	  .names = format_names, .dump = 47, .section = S_FORMATS, .arg = "raw|json|avro",
	  .help = "keys: bytes (default), JSON or Avro text" },
	{ .name = "value-format", .type = OT_ENUM, .off = FIELD(value_format), .dflt = "raw",
	  .names = format_names, .dump = 48, .section = S_FORMATS, .arg = "raw|json|avro",
	  .help = "values: the same" },
	{ .name = "cdc", .type = OT_ENUM, .off = FIELD(cdc), .dflt = "none", .names = cdc_names,
	  .dump = 49, .section = S_FORMATS, .arg = "none|debezium|debezium-invalidate",
	  .help = "Debezium events: c r u set, d deletes\n"
		  "(-invalidate: all delete; default none)" },
	{ .name = "schema-registry", .type = OT_STR, .off = FIELD(schema_registry),
	  .flags = OF_NONEMPTY | OF_IF_SET, .expect = "expected a URL", .dump = 50,
	  .section = S_FORMATS, .arg = "URL",
	  .help = "Schema Registry for avro" },
	{ .name = "schema-registry-property", .type = OT_CUSTOM, .dump = 51,
	  .parse = parse_sr_prop, .print = print_sr_props, .section = S_FORMATS,
	  .arg = "NAME=VALUE",
	  .help = "its client's settings (docs/cdc.md)" },
	/* Records Memcached cannot take */
	{ .name = "on-invalid", .type = OT_ENUM, .off = FIELD(on_invalid), .dflt = "skip",
	  .names = invalid_names, .dump = 16, .section = S_INVALID, .arg = "skip|hash|dlq|fail",
	  .help = "skip and count (default), hash bad keys,\n"
		  "produce to --dlq-topic, or stop with exit 1" },
	{ .name = "dlq-topic", .type = OT_STR, .off = FIELD(dlq_topic),
	  .flags = OF_NONEMPTY | OF_IF_SET, .expect = "empty topic name", .dump = 17,
	  .section = S_INVALID, .arg = "TOPIC", .help = "dead letter topic for --on-invalid dlq" },
	/* Refill */
	{ .name = "refill", .type = OT_FLAG, .off = FIELD(refill), .dump = 37, .section = S_REFILL,
	  .help = "detect a server's lost contents (restart, flush) and\n"
		  "write its keys again (default off)" },
	{ .name = "refill-from", .type = OT_CUSTOM, .dflt = "earliest", .needs = "refill",
	  .dump = 38, .parse = parse_refill_from, .print = print_refill_from,
	  .section = S_REFILL, .arg = "earliest|DURATION",
	  .help = "read from each partition's start (default), or\n"
		  "from DURATION before the loss (90s, 15m, 24h, 7d)" },
	/* 1e9/s is beyond any server; the cap keeps rate x nanoseconds in 64 bits */
	{ .name = "refill-rate", .type = OT_U64, .off = FIELD(refill_rate), .dflt = "0", .lo = 0,
	  .hi = 1000000000, .flags = OF_DIGITS,
	  .expect = "records/s, 0 (unlimited) to 1000000000", .needs = "refill", .dump = 39,
	  .section = S_REFILL, .arg = "N",
	  .help = "refill records/s at most, 0 = unlimited (default)" },
	{ .name = "refill-ready", .type = OT_ENUM, .off = FIELD(refill_ready), .dflt = "yes",
	  .names = yes_no_names,
	  .expect = "yes (/readyz 200 while a server is refilled) or no (503)",
	  .needs = "refill", .dump = 40, .section = S_REFILL, .arg = "yes|no",
	  .help = "/readyz while a server is refilled: 200 (yes, default:\n"
		  "it takes live writes) or 503 (no: keys are missing)" },
	/* Pipeline */
	{ .name = "writers", .type = OT_INT, .off = FIELD(writers), .dflt_fn = dflt_writers,
	  .lo = 1, .hi = 256, .env = "K2MC_WRITERS", .dump = 8, .section = S_PIPELINE,
	  .arg = "N", .help = "writer threads, each with its own connections (default: CPUs)" },
	{ .name = "ring-size", .type = OT_U32, .off = FIELD(ring_size), .dflt = "4096", .lo = 16,
	  .hi = 1L << 20, .flags = OF_POW2, .expect = "a power of two in 16..1048576", .dump = 9,
	  .section = S_PIPELINE, .arg = "N",
	  .help = "slots per partition/writer ring, power of two (default 4096)" },
	{ .name = "max-buffer-bytes", .type = OT_SIZE, .off = FIELD(max_buffer_bytes),
	  .dflt = "16m", .lo = K2MC_MAX_BUFFER_MIN,
	  .expect = "bytes, or a number with a k, m or g suffix (KiB, MiB, GiB), at least 1m",
	  .dump = 19, .section = S_PIPELINE, .arg = "N",
	  .help = "record bytes held in rings and batches at most; consumers\n"
		  "wait when it is reached; k, m, g suffixes (default 16m)" },
	{ .name = "batch", .type = OT_INT, .off = FIELD(batch), .dflt = "512", .lo = 1,
	  .hi = 65536, .dump = 10, .section = S_PIPELINE, .arg = "N",
	  .help = "records per pipelined, acknowledged exchange (default 512)" },
	{ .name = "commit-interval-ms", .type = OT_INT, .off = FIELD(commit_interval_ms),
	  .dflt = "1000", .lo = 10, .hi = 3600000, .dump = 11, .section = S_PIPELINE,
	  .arg = "N", .help = "offset commit interval (default 1000)" },
	{ .name = "shutdown-timeout-ms", .type = OT_INT, .off = FIELD(shutdown_timeout_ms),
	  .dflt = "30000", .lo = 0, .hi = 3600000, .dump = 15, .section = S_PIPELINE,
	  .arg = "N", .help = "how long shutdown waits for writes (default 30000)" },
	/* Observability */
	{ .name = "stats-interval-ms", .type = OT_INT, .off = FIELD(stats_interval_ms),
	  .dflt = "5000", .lo = 0, .hi = 3600000, .dump = 14, .section = S_OBSERVE, .arg = "N",
	  .help = "stats line interval on stderr, 0 = off (default 5000)" },
	{ .name = "stats-json", .type = OT_STR, .off = FIELD(stats_json),
	  .flags = OF_NONEMPTY | OF_IF_SET, .expect = "expected a file name or -", .dump = 43,
	  .section = S_OBSERVE, .arg = "FILE",
	  .help = "one JSON object per stats interval, appended to FILE\n"
		  "(- = stdout)" },
	{ .name = "metrics-addr", .type = OT_CUSTOM, .dump = 42, .parse = parse_metrics_addr,
	  .print = print_metrics_addr, .section = S_OBSERVE, .arg = "[HOST:]PORT",
	  .help = "serve /metrics (Prometheus), /healthz and /readyz over\n"
		  "HTTP; HOST defaults to 127.0.0.1 (default: off)" },
	{ .name = "log-format", .type = OT_ENUM, .off = FIELD(log_format), .dflt = "text",
	  .names = log_format_names, .dump = 41, .section = S_OBSERVE, .arg = "text|json",
	  .help = "log lines as text (default) or one JSON object each" },
	/* Configuration */
	{ .name = "config", .letter = 'F', .type = OT_ACTION, .flags = OF_ARGV_ONLY,
	  .parse = action_none, .section = S_CONFIG, .arg = "FILE",
	  .help = "key=value lines: k2mc's long options (writers=4, topic=t,\n"
		  "exit=true) and librdkafka properties; # comments.\n"
		  "The command line overrides the file. Keep a file with\n"
		  "secrets chmod 600 (k2mc warns otherwise)" },
	{ .name = "dump-config", .type = OT_FLAG, .off = FIELD(dump_config), .section = S_CONFIG,
	  .help = "print the effective configuration, secrets masked, exit 0" },
	{ .name = "check-config", .type = OT_FLAG, .off = FIELD(check_config),
	  .section = S_CONFIG,
	  .help = "check everything (TLS files, templates, librdkafka's\n"
		  "configurations), then exit 0 or 2 as the start would,\n"
		  "without connecting anywhere" },
	/* Other */
	{ .name = "verbose", .letter = 'v', .type = OT_LEVEL, .off = FIELD(verbosity), .lo = 1,
	  .hi = 2, .flags = OF_HELP_JOIN, .dump = 45, .section = S_OTHER,
	  .help = "more / less logging" },
	{ .name = "quiet", .letter = 'q', .type = OT_LEVEL, .off = FIELD(verbosity), .lo = 1,
	  .hi = 0, .dump = 44, .section = S_OTHER },
	{ .name = "help", .letter = 'h', .type = OT_ACTION, .flags = OF_ARGV_ONLY,
	  .parse = action_help, .section = S_OTHER, .help = "help" },
	{ .name = "version", .letter = 'V', .type = OT_ACTION, .flags = OF_ARGV_ONLY,
	  .parse = action_version, .section = S_OTHER,
	  .help = "versions of k2mc, librdkafka and libmemcached" },
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))
/* parse_state.given has a bit per row */
_Static_assert(NOPTS <= 64, "parse_state.given holds one bit per option");

static uint64_t opt_bit(const struct opt *o)
{
	return 1ull << (o - opts);
}

static const struct opt *opt_named(const char *name)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].name != NULL && strcmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

/* getopt_long's val for a row: its letter, or 256 + its index. */
static int opt_val(const struct opt *o)
{
	return o->letter != 0 ? o->letter : 256 + (int)(o - opts);
}

static const struct opt *opt_of_val(int val)
{
	if (val >= 256)
		return (size_t)(val - 256) < NOPTS ? &opts[val - 256] : NULL;
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].letter == val)
			return &opts[i];
	return NULL;
}

/* 1 if the row takes a value (getopt's required_argument). */
static int opt_takes_value(const struct opt *o)
{
	return o->type != OT_FLAG && o->type != OT_LEVEL && o->arg != NULL;
}

/* The row's type does the parsing: the range or the names, with one message
 * shape for all ("--batch: expected 1..65536, got 'x'"). */
static enum k2mc_config_result parse_value(struct k2mc_config *c, const struct opt *o,
					   const char *arg, char *err, size_t errlen)
{
	char *field = (char *)c + o->off, lbl[LABEL_MAX], expect[256];
	uint64_t u = 0;
	long v;
	int ok, e;

	opt_label(o, lbl);
	switch (o->type) {
	case OT_FLAG:
		*(int *)field = 1;
		return K2MC_CONFIG_OK;
	case OT_LEVEL:
		*(int *)field = (int)o->hi;
		return K2MC_CONFIG_OK;
	case OT_STR:
		if ((o->flags & OF_NONEMPTY) && *arg == '\0')
			USAGE("%s: %s", lbl, o->expect);
		/* the syntax is mapping.c's; a line break could not be written
		 * back by --dump-config as a -F line */
		if ((o->flags & OF_TEMPLATE) && strpbrk(arg, "\r\n") != NULL)
			USAGE("%s: a template cannot hold a line break", lbl);
		*(const char **)field = arg;
		return K2MC_CONFIG_OK;
	case OT_INT:
	case OT_U32:
	case OT_U64:
		if (o->flags & OF_DIGITS) {
			ok = parse_u64(arg, (uint64_t)o->lo, (uint64_t)o->hi, &u) == 0;
		} else {
			ok = parse_long(arg, (long)o->lo, (long)o->hi, &v) == 0;
			u = (uint64_t)v;
		}
		if (ok && (o->flags & OF_POW2) && (u & (u - 1)) != 0)
			ok = 0;
		if (!ok) {
			if (o->expect == NULL)
				snprintf(expect, sizeof(expect), "%lld..%lld", o->lo, o->hi);
			USAGE("%s: expected %s, got '%s'", lbl, o->expect ? o->expect : expect, arg);
		}
		if (o->type == OT_INT)
			*(int *)field = (int)u;
		else if (o->type == OT_U32)
			*(uint32_t *)field = (uint32_t)u;
		else
			*(uint64_t *)field = u;
		return K2MC_CONFIG_OK;
	case OT_SIZE:
		if (parse_size(arg, &u) != 0 || u < (uint64_t)o->lo)
			USAGE("%s: expected %s, got '%s'", lbl, o->expect, arg);
		*(uint64_t *)field = u;
		return K2MC_CONFIG_OK;
	case OT_ENUM:
		if (value_of(o->names, arg, &e) == 0) {
			*(int *)field = e;
			return K2MC_CONFIG_OK;
		}
		if (o->expect == NULL) {
			/* "a, b or c" */
			FILE *m = fmemopen(expect, sizeof(expect), "w");

			expect[0] = '\0';
			for (const struct name_value *nv = o->names; m != NULL && nv->name != NULL;
			     nv++)
				fprintf(m, "%s%s",
					nv == o->names ? "" : nv[1].name == NULL ? " or " : ", ",
					nv->name);
			if (m != NULL)
				fclose(m);
		}
		USAGE("%s: expected %s, got '%s'", lbl, o->expect ? o->expect : expect, arg);
	case OT_ACTION:
	case OT_CUSTOM:
		break;
	}
	USAGE("internal error: option %s has no parser", lbl);
}

/* One setting, from whichever source (arg must outlive c). Messages name
 * the option; the caller adds where the setting came from. */
static enum k2mc_config_result apply(struct k2mc_config *c, struct parse_state *st,
				     enum level lvl, const struct opt *o, const char *arg,
				     char *err, size_t errlen)
{
	enum k2mc_config_result r = o->parse != NULL ? o->parse(c, st, o, lvl, arg, err, errlen)
						     : parse_value(c, o, arg, err, errlen);

	if (r == K2MC_CONFIG_OK && lvl > LVL_DEFAULT)
		st->given |= opt_bit(o);
	return r;
}

/* A flag set to false (in a -F file): back to its default. */
static void unset(struct k2mc_config *c, struct parse_state *st, const struct opt *o)
{
	*(int *)((char *)c + o->off) = o->type == OT_LEVEL ? (int)o->lo : 0;
	st->given &= ~opt_bit(o);
}

/* Every row's default, through its parser (which must take it). */
static enum k2mc_config_result set_defaults(struct k2mc_config *c, struct parse_state *st,
					    char *err, size_t errlen)
{
	char buf[32];

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		const char *d = o->dflt_fn != NULL ? o->dflt_fn(buf, sizeof(buf)) : o->dflt;

		if (o->type == OT_LEVEL)
			unset(c, st, o);
		else if (d != NULL && apply(c, st, LVL_DEFAULT, o, d, err, errlen) != K2MC_CONFIG_OK)
			return K2MC_CONFIG_USAGE; /* a broken table: test_cfgfile catches it */
	}
	return K2MC_CONFIG_OK;
}

/* "  -b, --brokers BROKERS" */
static size_t synopsis(const struct opt *o, char *buf, size_t len)
{
	size_t n = 0;

	if (o->letter != 0)
		n += (size_t)snprintf(buf + n, len - n, "-%c%s", o->letter, o->name ? ", " : "");
	if (o->name != NULL && n < len)
		n += (size_t)snprintf(buf + n, len - n, "--%s", o->name);
	if (o->arg != NULL && n < len)
		n += (size_t)snprintf(buf + n, len - n, " %s", o->arg);
	return n < len ? n : len - 1;
}

/* "Environment, below the file:" and the rows' variables, wrapped at 80. */
static void help_environment(FILE *out)
{
	static const char lead[] = "  Environment, below the file:";
	size_t col = sizeof(lead) - 1;
	const struct opt *last = NULL;

	fputs(lead, out);
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].env != NULL)
			last = &opts[i];
	for (const struct opt *o = opts; o <= last; o++) {
		char item[96];
		size_t n;

		if (o->env == NULL)
			continue;
		n = (size_t)snprintf(item, sizeof(item), "%s%s%s", o->env,
				     (o->flags & OF_LIST) ? " (comma-separated)" : "",
				     o == last ? "" : ",");
		if (col + 1 + n > 80) {
			fputs("\n  ", out);
			col = 2;
		} else {
			fputc(' ', out);
			col++;
		}
		fputs(item, out);
		col += n;
	}
	fputs("\n  Long options are spelled in full (no abbreviations).\n", out);
}

void k2mc_config_usage(FILE *out)
{
	int section = -1;

	fprintf(out,
		"Usage: k2mc -b BROKERS -t TOPIC [-t TOPIC ...] [options]\n"
		"       k2mc -F FILE [options]\n"
		"Copy records from Kafka topics into Memcached: by default key = prefix + record\n"
		"key, value = record value, a null value deletes the key. At-least-once: offsets\n"
		"are committed only below records Memcached acknowledged.\n"
		"\n");
	for (const struct opt *o = opts; o < opts + NOPTS; o++) {
		char head[128];
		size_t n;

		if ((int)o->section != section) {
			if (section == S_CONFIG)
				help_environment(out);
			section = (int)o->section;
			fprintf(out, "%s\n", section_titles[section]);
		}
		if (o->help == NULL)
			continue;
		n = synopsis(o, head, sizeof(head));
		if ((o->flags & OF_HELP_JOIN) && o + 1 < opts + NOPTS && n + 2 < sizeof(head)) {
			memcpy(head + n, ", ", 3);
			n += 2;
			n += synopsis(o + 1, head + n, sizeof(head) - n);
		}
		/* the description starts in column 28, or two blanks after a
		 * longer synopsis */
		fprintf(out, "  %s%*s", head, n <= 24 ? (int)(26 - n) : 2, "");
		for (const char *h = o->help; *h != '\0';) {
			size_t l = strcspn(h, "\n");

			fprintf(out, "%.*s\n", (int)l, h);
			h += l;
			if (*h == '\n') {
				h++;
				fprintf(out, "%28s", "");
			}
		}
	}
	if (section == S_CONFIG)
		help_environment(out);
	fprintf(out, "Exit status: 0 done, 1 runtime failure, 2 bad command line.\n");
}

int k2mc_config_option(size_t i, struct k2mc_config_option *out)
{
	const struct opt *o;

	if (i >= NOPTS)
		return -1;
	o = &opts[i];
	out->name = o->name;
	out->letter = o->letter;
	out->arg = o->arg;
	out->dflt = o->dflt;
	out->env = o->env;
	out->section = section_titles[o->section];
	out->secret = (o->flags & OF_SECRET) != 0;
	out->takes_value = opt_takes_value(o);
	out->dumped = o->dump > 0;
	return 0;
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

/* The rows with a K2MC_ variable, in the table's order; an OF_LIST one
 * (K2MC_TOPICS) is comma-separated, the others one value. */
static enum k2mc_config_result apply_env(struct k2mc_config *c, struct parse_state *st,
					 char *err, size_t errlen)
{
	for (const struct opt *o = opts; o < opts + NOPTS; o++) {
		const char *v = o->env != NULL ? getenv(o->env) : NULL, *p;
		enum k2mc_config_result r = K2MC_CONFIG_OK;

		if (v == NULL || *v == '\0')
			continue;
		for (p = v; r == K2MC_CONFIG_OK && *p != '\0';) {
			size_t n = (o->flags & OF_LIST) ? strcspn(p, ",") : strlen(p);
			char *val = own(c, p, n);

			if (val == NULL)
				USAGE("%s: out of memory", o->env);
			p += n;
			if (*p == ',')
				p++;
			if (o->flags & OF_LIST) {
				val = trim(val, val + n); /* "a, b" */
				if (*val == '\0')
					continue;
			}
			r = apply(c, st, LVL_ENV, o, val, err, errlen);
		}
		if (r != K2MC_CONFIG_OK) {
			blame(err, errlen, "%s", o->env);
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

/* Notes a -F key that holds a secret, for the file permission warning. */
static void note_secret(struct parse_state *st, const char *key)
{
	const struct opt *o = opt_named(key);

	if (!k2mc_config_is_secret(key) && !(o != NULL && (o->flags & OF_SECRET)))
		return;
	note_secret_name(st, key);
}

/* Adds key to the names the warning lists, once each. */
static void note_secret_name(struct parse_state *st, const char *key)
{
	size_t n = strlen(st->file_secrets), kl = strlen(key);
	const char *p = st->file_secrets;

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
	const struct opt *o = opt_named(key);
	int on;

	note_secret(st, key);
	if (o == NULL) {
		/* not one of ours: a librdkafka property, as with -X */
		char *prop = own(c, key, strlen(key) + 1 + strlen(val));

		if (prop == NULL)
			USAGE("out of memory");
		sprintf(prop, "%s=%s", key, val);
		return apply(c, st, LVL_FILE, opt_of_val('X'), prop, err, errlen);
	}
	if (o->flags & OF_ARGV_ONLY)
		USAGE("'%s' is not allowed in a config file", key);
	if (!opt_takes_value(o)) {
		if (parse_bool(val, &on) != 0)
			USAGE("%s: expected true or false, got '%s'", key, val);
		if (!on) {
			unset(c, st, o);
			return K2MC_CONFIG_OK;
		}
		return apply(c, st, LVL_FILE, o, NULL, err, errlen);
	}
	return apply(c, st, LVL_FILE, o, val, err, errlen);
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

/* getopt_long's tables, built from the rows: a letter's val is the letter,
 * a long-only option's 256 + its row. */
struct getopt_tables {
	struct option longs[NOPTS + 1];
	char shorts[2 + 2 * NOPTS + 1];
};

static void getopt_tables(struct getopt_tables *g)
{
	size_t nl = 0, ns = 0;

	/* ':' first: a missing value is told apart from an unknown option */
	g->shorts[ns++] = ':';
	for (const struct opt *o = opts; o < opts + NOPTS; o++) {
		if (o->letter != 0) {
			g->shorts[ns++] = o->letter;
			if (opt_takes_value(o))
				g->shorts[ns++] = ':';
		}
		if (o->name != NULL)
			g->longs[nl++] = (struct option){ o->name,
							  opt_takes_value(o) ? required_argument
									     : no_argument,
							  NULL, opt_val(o) };
	}
	g->shorts[ns] = '\0';
	g->longs[nl] = (struct option){ NULL, 0, NULL, 0 };
}

/* Names the option getopt stopped at: getopt advances optind only after
 * the last letter of a bundle like -Zq, so name the letter then, not
 * argv[optind-1]. */
/* After getopt_long returned long option idx: 1 if the user typed its name
 * in full. getopt takes any unambiguous prefix ("--key" for --key-prefix,
 * until --key existed); k2mc does not, so that a new option can never change
 * what an old command line means. The element just consumed is
 * argv[optind - 1], or argv[optind - 2] when the value came separately. */
static int typed_in_full(char **argv, const struct option *o)
{
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

static enum k2mc_config_result bad_option(int opt, char **argv, const struct option *longs,
					  char *err, size_t errlen)
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

		for (const struct option *o = longs; o->name != NULL; o++)
			hits += n > 0 && strncmp(o->name, t, n) == 0;
		if (hits > 1)
			USAGE("unknown option '--%.*s' (long options are spelled in full)", (int)n, t);
	}
	USAGE("unknown option '%s'", argv[optind - 1]);
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

/* The rows that need the flag `flag` (their .needs): refused when given
 * while it is off ("what" names the feature in the message). */
static enum k2mc_config_result check_needs(const struct k2mc_config *c,
					   const struct parse_state *st, const char *flag,
					   const char *what, char *err, size_t errlen)
{
	const struct opt *f = opt_named(flag);

	if (*(const int *)((const char *)c + f->off))
		return K2MC_CONFIG_OK;
	for (const struct opt *o = opts; o < opts + NOPTS; o++)
		if (o->needs != NULL && strcmp(o->needs, flag) == 0 && (st->given & opt_bit(o)))
			USAGE("--%s needs --%s: %s is off, so it would be ignored", o->name, flag,
			      what);
	return K2MC_CONFIG_OK;
}

/* Deployments: weights only where the readers weigh servers, TLS settings
 * only with TLS, both halves of a client certificate. */
static enum k2mc_config_result check_servers_and_tls(const struct k2mc_config *c,
						     const struct parse_state *st, char *err,
						     size_t errlen)
{
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
	if (!c->mc_tls)
		return check_needs(c, st, "mc-tls", "TLS", err, errlen);
	if (c->mc_tls_cert != NULL && c->mc_tls_key == NULL)
		USAGE("--mc-tls-cert needs --mc-tls-key: a client certificate is sent with its "
		      "private key");
	if (c->mc_tls_key != NULL && c->mc_tls_cert == NULL)
		USAGE("--mc-tls-key needs --mc-tls-cert: a private key is used with its client "
		      "certificate");
	if (c->mc_tls_key_password != NULL && c->mc_tls_key == NULL)
		USAGE("--mc-tls-key-password needs --mc-tls-key");
	for (const struct opt *o = opts; o < opts + NOPTS; o++) {
		char flag[LABEL_MAX];

		if (!(o->flags & OF_PATH))
			continue;
		r = check_tls_file(opt_label(o, flag), *(const char *const *)((const char *)c + o->off),
				   err, errlen);
		if (r != K2MC_CONFIG_OK)
			return r;
	}
	return K2MC_CONFIG_OK;
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
	if (c->schema_registry != NULL && c->key_format != K2MC_FMT_AVRO &&
	    c->value_format != K2MC_FMT_AVRO)
		USAGE("--schema-registry needs --key-format avro or --value-format avro: no record "
		      "would be read through it");
	if (c->nsr_props > 0 && c->schema_registry == NULL)
		USAGE("--schema-registry-property needs --schema-registry: there is no registry "
		      "client to set");
	if ((c->key_format == K2MC_FMT_AVRO || c->value_format == K2MC_FMT_AVRO) && c->refill)
		USAGE("--refill does not read Avro yet (its reader has no registry client): use "
		      "--key-format and --value-format raw or json with --refill");
	if (c->on_tombstone == K2MC_TOMB_INVALIDATE && c->mc_protocol == K2MC_PROTO_TEXT)
		USAGE("--on-tombstone invalidate:%u needs the meta protocol (md <key> I T%u); "
		      "--mc-protocol text has no invalidation: use delete or ignore, or --mc-protocol "
		      "auto or meta",
		      c->invalidate_grace_s, c->invalidate_grace_s);
	return check_needs(c, st, "refill", "refill", err, errlen);
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

/* The one -X loop: every -X property in order onto conf, so that a later one
 * wins. stop: at the first that librdkafka refuses (a builder: a
 * configuration other than the one asked for is no use); else past it (a
 * view: the checks judge the rest). plugin.library.paths is skipped when
 * skip_plugins: setting it loads the libraries. Returns the index of the
 * first refused property, or -1; then why holds the reason (secrets masked)
 * and *malformed says it was not NAME=VALUE with a NAME under 256 bytes.
 * accepted[i], when given, says which were taken. */
static int set_xprops(rd_kafka_conf_t *conf, const struct k2mc_config *c, int stop,
		      int skip_plugins, unsigned char *accepted, int *malformed, char *why,
		      size_t whylen)
{
	int refused = -1;
	char e[512];

	*malformed = 0;
	for (int i = 0; i < c->nxprops; i++) {
		const char *eq = strchr(c->xprops[i], '=');
		size_t nl = eq ? (size_t)(eq - c->xprops[i]) : 0;
		char name[256];
		int ok = 0;

		if (eq != NULL && nl < sizeof(name)) {
			memcpy(name, c->xprops[i], nl);
			name[nl] = '\0';
			if (skip_plugins && strcmp(name, "plugin.library.paths") == 0) {
				if (accepted != NULL)
					accepted[i] = 0;
				continue;
			}
			ok = rd_kafka_conf_set(conf, name, eq + 1, e, sizeof(e)) == RD_KAFKA_CONF_OK;
			if (!ok && refused < 0)
				refusal_reason(name, eq + 1, e, why, whylen);
		} else if (refused < 0) {
			*malformed = 1;
			snprintf(why, whylen, "property name of %zu bytes (librdkafka's are shorter)",
				 nl);
		}
		if (accepted != NULL)
			accepted[i] = (unsigned char)ok;
		if (!ok && refused < 0)
			refused = i;
		if (!ok && stop)
			break;
	}
	return refused;
}

rd_kafka_conf_t *k2mc_config_rdkafka(const struct k2mc_config *c, const char *client,
				     const char *const own[], char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[512], why[512], shown[512];
	int refused, malformed;

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
	refused = set_xprops(conf, c, 1, 0, NULL, &malformed, why, sizeof(why));
	if (refused >= 0) {
		if (malformed)
			snprintf(err, errlen, "%s: -X %s: expected NAME=VALUE, NAME under 256 bytes",
				 client, xprop_shown(c->xprops[refused], shown, sizeof(shown)));
		else
			snprintf(err, errlen, "%s: -X %s: %s", client,
				 xprop_shown(c->xprops[refused], shown, sizeof(shown)), why);
		goto fail;
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
	char e[512], ignored[8];
	int first, malformed;

	if (refused != NULL)
		*refused = -1;
	if (conf == NULL)
		return NULL;
	rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof(e));
	rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", e, sizeof(e));
	rd_kafka_conf_set(conf, "enable.partition.eof", c->exit_at_eof ? "true" : "false", e,
			  sizeof(e));
	first = set_xprops(conf, c, 0, 1, accepted, &malformed, why ? why : ignored,
			   why ? whylen : sizeof(ignored));
	if (refused != NULL)
		*refused = first;
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
	struct parse_state st = { .topics_level = LVL_DEFAULT };
	struct getopt_tables g;
	enum k2mc_config_result r;
	const struct opt *o;
	int opt, idx = -1;

	r = set_defaults(c, &st, err, errlen);
	if (r != K2MC_CONFIG_OK)
		return r;
	getopt_tables(&g);
	opterr = 0;
	/* Pass 1: find -F, and answer -h / -V whatever the file and the
	 * environment say. Command-line errors wait for pass 2, which reports
	 * them in order. optind 0, not 1: glibc only forgets a half-parsed
	 * "-abc" bundle from an earlier call when optind is 0. */
	optind = 0;
	while ((opt = getopt_long(argc, argv, g.shorts, g.longs, &idx)) != -1) {
		if (idx >= 0 && !typed_in_full(argv, &g.longs[idx])) {
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
			return apply(c, &st, LVL_ARGV, opt_of_val(opt), NULL, err, errlen);
		}
	}
	r = apply_env(c, &st, err, errlen);
	if (r == K2MC_CONFIG_OK && c->config_file != NULL)
		r = apply_file(c, &st, c->config_file, err, errlen);
	if (r != K2MC_CONFIG_OK)
		return r;

	/* Pass 2: the command line, over the environment and the file. */
	optind = 0;
	while ((opt = getopt_long(argc, argv, g.shorts, g.longs, &idx)) != -1) {
		if (opt == ':' || opt == '?')
			return bad_option(opt, argv, g.longs, err, errlen);
		if (idx >= 0 && !typed_in_full(argv, &g.longs[idx])) {
			const char *t = argv[optind - 1];

			if (g.longs[idx].has_arg == required_argument && optarg == t)
				t = argv[optind - 2];
			USAGE("option '%.*s' is not spelled in full: did you mean --%s?",
			      (int)strcspn(t, "="), t, g.longs[idx].name);
		}
		idx = -1;
		o = opt_of_val(opt);
		if (o == NULL)
			USAGE("internal error: option %d has no row", opt);
		r = apply(c, &st, LVL_ARGV, o, optarg, err, errlen);
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
		r = check_servers_and_tls(c, &st, err, errlen);
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
	return name_of(distribution_names, (int)d);
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
	return name_of(protocol_names, (int)p);
}

const char *k2mc_log_format_name(enum k2mc_log_format f)
{
	return name_of(log_format_names, (int)f);
}

const char *k2mc_format_name(enum k2mc_format f)
{
	return name_of(format_names, (int)f);
}

const char *k2mc_cdc_name(enum k2mc_cdc m)
{
	return name_of(cdc_names, (int)m);
}

const char *k2mc_on_tombstone_name(enum k2mc_on_tombstone t)
{
	return name_of(tombstone_names, (int)t);
}

/* One row's -F line(s). */
static void dump_row(const struct k2mc_config *c, const struct opt *o, FILE *out)
{
	const char *field = (const char *)c + o->off;
	const struct opt *needed = o->needs != NULL ? opt_named(o->needs) : NULL;

	if (needed != NULL && !*(const int *)((const char *)c + needed->off))
		return;
	if (o->print != NULL) {
		o->print(c, o, out);
		return;
	}
	switch (o->type) {
	case OT_FLAG:
		fprintf(out, "%s=%s\n", o->name, *(const int *)field ? "true" : "false");
		break;
	case OT_LEVEL:
		if (*(const int *)field == (int)o->hi)
			fprintf(out, "%s=true\n", o->name);
		break;
	case OT_STR: {
		const char *v = *(const char *const *)field;

		if (v == NULL && (o->flags & OF_IF_SET))
			break;
		fprintf(out, "%s=%s\n", o->name,
			(o->flags & OF_SECRET) ? "********" : v != NULL ? v : "");
		break;
	}
	case OT_INT:
		fprintf(out, "%s=%d\n", o->name, *(const int *)field);
		break;
	case OT_U32:
		fprintf(out, "%s=%u\n", o->name, *(const uint32_t *)field);
		break;
	case OT_U64:
	case OT_SIZE:
		if (*(const uint64_t *)field == 0 && (o->flags & OF_IF_SET))
			break;
		fprintf(out, "%s=%llu\n", o->name, (unsigned long long)*(const uint64_t *)field);
		break;
	case OT_ENUM:
		fprintf(out, "%s=%s\n", o->name, name_of(o->names, *(const int *)field));
		break;
	case OT_ACTION:
	case OT_CUSTOM:
		break;
	}
}

void k2mc_config_dump(const struct k2mc_config *c, FILE *out)
{
	fprintf(out, "# k2mc %s effective configuration (defaults < environment < -F file < "
		     "command line)\n# secrets are masked\n",
		K2MC_VERSION);
	/* the rows in their .dump order */
	for (int place = 1; place <= (int)NOPTS; place++)
		for (const struct opt *o = opts; o < opts + NOPTS; o++)
			if (o->dump == place)
				dump_row(c, o, out);
}
