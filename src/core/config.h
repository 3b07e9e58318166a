/* Configuration: kcat-style flags plus k2mc's own long options, a -F file of
 * key=value lines and a few K2MC_* environment variables (lowest precedence).
 * Parsing, validation and --dump-config only; nothing here talks to Kafka or
 * Memcached (-X values are read through a librdkafka configuration object,
 * so that they mean what they will mean to the consumer). */
#ifndef K2MC_CONFIG_H
#define K2MC_CONFIG_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#define K2MC_MAX_TOPICS 64
#define K2MC_MAX_SERVERS 64
#define K2MC_MAX_XPROPS 128
/* memcached text protocol: keys are at most 250 bytes */
#define K2MC_MC_KEY_MAX 250
/* memcached reads an exptime over 30 days as an absolute unix time */
#define K2MC_TTL_RELATIVE_MAX 2592000
/* --max-buffer-bytes: default and floor */
#define K2MC_MAX_BUFFER_DEFAULT (16ull << 20)
#define K2MC_MAX_BUFFER_MIN (1ull << 20)
/* Fencing (fence.h): the lease a commit acknowledgement buys is
 * session.timeout.ms - heartbeat.interval.ms - this margin, which covers the
 * time from a writer's last lease check to its bytes reaching memcached and
 * the coordinator's own timer slack. One definition, used by the start-up
 * check below and by whoever builds the fence. */
#define K2MC_FENCE_MARGIN_MS(session) \
	((int64_t)(session) / 10 > 500 ? (int64_t)(session) / 10 : (int64_t)500)

/* sun_path of struct sockaddr_un holds 108 bytes with its NUL */
#define K2MC_SUN_PATH_MAX 107
/* -m weights: 1..65535, so weight x 160 points x K2MC_MAX_SERVERS stays in
 * an int32 for whoever builds a weighted continuum */
#define K2MC_WEIGHT_MAX 65535

/* One -m entry. Read-only after k2mc_config_parse. */
struct k2mc_server {
	/* TCP: a host name or address (an IPv6 address without its brackets);
	 * is_unix: the socket path (at most K2MC_SUN_PATH_MAX bytes) */
	char host[256];
	int port;    /* 1..65535; 0 for a unix socket */
	int weight;  /* 1..K2MC_WEIGHT_MAX, default 1; != 1 only under a distribution
		      * that has weights (k2mc_distribution_weighted) */
	int is_unix; /* 1: AF_UNIX at host ("/PATH" or "unix:PATH[:WEIGHT]") */
};

/* --distribution: which readers' key placement k2mc reproduces (placement.c) */
enum k2mc_distribution {
	K2MC_DIST_KETAMA = 0,  /* libmemcached MEMCACHED_BEHAVIOR_KETAMA; pylibmc ketama */
	K2MC_DIST_LIBKETAMA,   /* weighted MD5 ketama: PHP OPT_LIBKETAMA_COMPATIBLE,
				* pylibmc ketama_weighted */
	K2MC_DIST_MODULA,      /* libmemcached's default: PHP memcached, pylibmc */
	K2MC_DIST_RENDEZVOUS,  /* pymemcache HashClient */
	K2MC_DIST_CRC32,       /* gomemcache ServerList */
	K2MC_DIST_DALLI,       /* Ruby Dalli's ring */
	K2MC_DIST_SPYMEMCACHED, /* Java spymemcached KetamaConnectionFactory */
};

/* --mc-protocol: the dialect spoken to the servers (mcconn.c) */
enum k2mc_mc_protocol {
	K2MC_PROTO_AUTO = 0, /* meta where the server's version has it, else text */
	K2MC_PROTO_META,
	K2MC_PROTO_TEXT,
};

/* --on-tombstone: what a record with a null value does */
enum k2mc_on_tombstone {
	K2MC_TOMB_DELETE = 0, /* delete the key */
	K2MC_TOMB_IGNORE,     /* nothing: acknowledged unwritten */
	K2MC_TOMB_INVALIDATE, /* meta "md key I T<invalidate_grace_s>": stale, served
			       * for the grace period (meta servers only) */
};

/* --key-format, --value-format: how a record's key or value bytes are read
 * (decode.h turns them into the JSON text the templates read) */
enum k2mc_format {
	K2MC_FMT_RAW = 0, /* the bytes as they are ({json:} still reads them as JSON) */
	K2MC_FMT_JSON,    /* JSON text; a Kafka Connect envelope is read as its payload */
	K2MC_FMT_AVRO,    /* Confluent wire format, schemas from --schema-registry */
};

/* --cdc: what a value is (mapping.c reads the change event) */
enum k2mc_cdc {
	K2MC_CDC_NONE = 0,
	K2MC_CDC_DEBEZIUM,            /* c, r, u set the key from after; d deletes it */
	K2MC_CDC_DEBEZIUM_INVALIDATE, /* every change deletes the key (mcsqueal) */
};

/* --schema-registry-property NAME=VALUE, at most this many */
#define K2MC_MAX_SR_PROPS 32

/* --log-format */
enum k2mc_log_format {
	K2MC_LOG_TEXT = 0,
	K2MC_LOG_JSON, /* one object per line */
};

/* --on-invalid: what happens to a record Memcached cannot take */
enum k2mc_invalid_policy {
	K2MC_INVALID_SKIP = 0, /* count, log, acknowledge */
	K2MC_INVALID_HASH,     /* bad keys become prefix + hex digest; others fall back */
	K2MC_INVALID_DLQ,      /* produce the record to --dlq-topic, acknowledge on delivery */
	K2MC_INVALID_FAIL,     /* stop with exit 1, committing nothing at or past it */
};

/* Filled by k2mc_config_parse in main before any thread starts; read-only
 * afterwards, so every thread may read it without synchronisation. */
struct k2mc_config {
	const char *brokers;            /* -b */
	const char *topics[K2MC_MAX_TOPICS]; /* -t, repeatable */
	int ntopics;
	const char *group;              /* -G, default "k2mc" */
	struct k2mc_server servers[K2MC_MAX_SERVERS]; /* -m */
	int nservers;
	const char *xprops[K2MC_MAX_XPROPS]; /* -X name=value, passed to librdkafka as given */
	int nxprops;
	int offset_beginning;           /* -o beginning|end: start of a group with no commit */
	int exit_at_eof;                /* -e */
	uint64_t max_records;           /* -c: stop after this many records, 0 = no limit */
	int writers;                    /* --writers */
	uint32_t ring_size;             /* --ring-size: slots per (partition, writer) ring */
	int batch;                      /* --batch: records per pipelined Memcached exchange */
	int commit_interval_ms;         /* --commit-interval-ms */
	uint32_t ttl;                   /* --ttl seconds, 0 = never expire; over 30 days an
					 * absolute unix time (in the future), except under
					 * ttl_from_timestamp, where it is a duration */
	const char *key_prefix;         /* --key-prefix: before key_template's output */
	size_t key_prefix_len;
	int stats_interval_ms;          /* --stats-interval-ms */
	int shutdown_timeout_ms;        /* --shutdown-timeout-ms */
	int verbosity;                  /* 0 quiet (-q), 1 default, 2 verbose (-v) */
	enum k2mc_invalid_policy on_invalid; /* --on-invalid */
	const char *dlq_topic;          /* --dlq-topic */
	uint64_t max_value_bytes;       /* --max-value-bytes, 0 = ask the servers */
	uint64_t max_buffer_bytes;      /* --max-buffer-bytes: record bytes held in rings and
					 * batches at most; consumers block when it is reached */
	int mc_eject;                   /* --mc-eject: remap a down server's keys (libmemcached
					 * auto-eject) instead of waiting for it */
	char metrics_host[256];         /* --metrics-addr: "" = off, else the address to bind */
	int metrics_port;
	const char *stats_json;         /* --stats-json FILE, "-" = stdout, NULL = off */
	const char *config_file;        /* -F */
	int dump_config;                /* --dump-config: print the effective configuration */
	int check_config;               /* --check-config: main validates everything (TLS
					 * files, templates) and exits 0 or 2, connecting nowhere */
	enum k2mc_log_format log_format; /* --log-format, default text */

	/* Deployments (issue 9) */
	enum k2mc_distribution distribution; /* --distribution, default ketama */
	enum k2mc_mc_protocol mc_protocol;   /* --mc-protocol, default auto */
	int mc_tls;                     /* --mc-tls: TLS to every server */
	/* The --mc-tls-* settings; each is refused without --mc-tls. The files
	 * existed and were readable when parsed (not read here). NULL = unset. */
	const char *mc_tls_ca;          /* --mc-tls-ca FILE; NULL = the system store */
	const char *mc_tls_cert;        /* --mc-tls-cert FILE; set iff mc_tls_key is */
	const char *mc_tls_key;         /* --mc-tls-key FILE */
	const char *mc_tls_key_password; /* --mc-tls-key-password; only with mc_tls_key;
					 * masked by --dump-config */
	const char *mc_tls_server_name; /* --mc-tls-server-name; NULL = each -m host */
	int mc_tls_insecure;            /* --mc-tls-insecure: no verification */

	/* What lands in Memcached (issue 10); mapping.c compiles the templates */
	const char *key_template;       /* --key, default "{key}"; key_prefix goes before it */
	const char *value_template;     /* --value, default "{value}" */
	const char *ttl_header;         /* --ttl-header NAME: per-record TTL in decimal
					 * seconds; records without it get ttl. NULL = off */
	int ttl_from_timestamp;         /* --ttl-from-timestamp: expiry = record timestamp +
					 * TTL; then ttl is a duration of any length (the
					 * expiry is sent as an absolute time past 30 days) */
	uint32_t flags;                 /* --flags: client flags of every item, default 0 */
	const char *flags_header;       /* --flags-header NAME: per-record flags in decimal;
					 * records without it get flags. NULL = off */
	enum k2mc_on_tombstone on_tombstone; /* --on-tombstone, default delete */
	uint32_t invalidate_grace_s;    /* invalidate:SECONDS, 1..2592000; 0 otherwise */

	/* Formats, Schema Registry and change events (issue 26) */
	enum k2mc_format key_format;    /* --key-format, default raw */
	enum k2mc_format value_format;  /* --value-format, default raw */
	enum k2mc_cdc cdc;              /* --cdc, default none */
	const char *schema_registry;    /* --schema-registry URL; NULL = none (then no
					 * format is avro) */
	/* --schema-registry-property NAME=VALUE, in order (a later one wins);
	 * NAME is one of avro.h's k2mc_avro_set names, checked by main (core
	 * knows no registry client); values of secret names are masked */
	const char *sr_props[K2MC_MAX_SR_PROPS];
	int nsr_props;

	/* Refill of a server that lost its contents (issue 12) */
	int refill;                     /* --refill */
	int refill_from_earliest;       /* --refill-from earliest (the default) */
	int64_t refill_from_ms;         /* --refill-from DURATION: that long before the loss;
					 * 0 when refill_from_earliest */
	uint64_t refill_rate;           /* --refill-rate: records/s, 0 = unlimited, at most 1e9 */
	int refill_ready;               /* --refill-ready yes (default, 1) | no (0): /readyz
					 * while a server is refilled */

	/* Strings read from -F and the environment, which the pointers above
	 * may point into: owned by c, freed by k2mc_config_free. */
	struct k2mc_config_chunk *owned;
};

enum k2mc_config_result {
	K2MC_CONFIG_OK = 0,
	K2MC_CONFIG_EXIT = 1,   /* -h or -V printed; exit 0 (-V: "k2mc VERSION
				 * (librdkafka X, libmemcached Y)") */
	K2MC_CONFIG_USAGE = 2,  /* bad command line; message in err, exit 2 */
};

/* Fills c from, in increasing precedence: defaults, the environment
 * (K2MC_BROKERS, K2MC_TOPICS comma-separated, K2MC_GROUP, K2MC_MEMCACHED,
 * K2MC_WRITERS), the -F file, the command line. A repeatable setting (topic)
 * given at a higher level replaces the lower level's list; -X properties
 * accumulate, later ones winning in librdkafka. On K2MC_CONFIG_USAGE, err
 * holds a one-line reason. Besides each value's range, it refuses what would
 * break k2mc's promises: a --ttl already past, a --dlq-topic it consumes, -X
 * properties (from any source) that turn on auto commit or offset store, set
 * group.id, disable partition EOF under -e or pick librdkafka < 2.3.0's
 * cooperative-sticky assignor, a fencing lease too short, rings larger than
 * memory; TLS settings without --mc-tls, half a client certificate, TLS
 * files that cannot be opened; meta-only or contradictory mapping settings.
 * A -F file holding secrets (k2mc_config_is_secret names, such as
 * mc-tls-key-password or sasl.password) that group or others may access
 * (mode & 077) gets one warning line on stderr, printed here after a
 * successful parse, before logging starts:
 * "k2mc: warning: -F FILE holds secrets (NAMES) and is readable by
 * group/others (mode 0644); chmod 600 it". Not fatal; main need not repeat it.
 * Long options must be spelled in full (no getopt abbreviations: a new
 * option must never change what an old abbreviation meant).
 * Pointers in c point into argv, which must outlive c, or into
 * storage c owns: call k2mc_config_free after any result. */
enum k2mc_config_result k2mc_config_parse(struct k2mc_config *c, int argc, char **argv,
					  char *err, size_t errlen);
void k2mc_config_free(struct k2mc_config *c);

/* Prints the effective configuration as -F lines (so the output can be fed
 * back with -F), secrets masked: every -X property k2mc_config_is_secret
 * names, and mc-tls-key-password. */
void k2mc_config_dump(const struct k2mc_config *c, FILE *out);
/* 1 if the librdkafka property `name` holds a secret: every property
 * librdkafka marks sensitive, any name containing password, passphrase or
 * secret, and under sasl. or ssl. any JAAS configuration, key, key store,
 * PEM or credential. --dump-config and every message that quotes an -X
 * property mask their values. */
int k2mc_config_is_secret(const char *name);

/* The one builder of k2mc's librdkafka configurations (the consumer in
 * group.c, the dead letter producer in dlq.c, refill's consumer in
 * refill.c): the client's own settings (own: name, value, name, value, ...,
 * NULL), then every -X property in order, so that a later one wins and -X
 * overrides k2mc's defaults. NULL on the first setting librdkafka refuses,
 * with "CLIENT: -X NAME=VALUE: librdkafka's reason" in err (secret values
 * masked). k2mc_config_parse has refused such -X properties already, naming
 * their -F line: what fails here is what it cannot see. No callbacks set. */
rd_kafka_conf_t *k2mc_config_rdkafka(const struct k2mc_config *c, const char *client,
				     const char *const own[], char *err, size_t errlen);

/* Parses a -m list into c->servers; 0 or -EINVAL (err set). Entries, comma
 * separated, mixed freely: HOST:PORT[:WEIGHT], [IPV6]:PORT[:WEIGHT], /PATH
 * (a unix socket; the whole entry is the path, no weight) and
 * unix:PATH[:WEIGHT] (a final :DIGITS is the weight). Weights are not
 * checked against the distribution here (k2mc_config_parse does). */
int k2mc_config_parse_servers(struct k2mc_config *c, const char *list, char *err, size_t errlen);

void k2mc_config_usage(FILE *out);

/* One row of the option table (config.c), as its documentation sees it:
 * tests hold k2mc.1, docs/running.md and the README against these. */
struct k2mc_config_option {
	const char *name;    /* --NAME and the -F key; NULL for -X */
	char letter;         /* -LETTER, or 0 */
	const char *arg;     /* --help's name for the value; NULL for a flag */
	const char *dflt;    /* the default as typed; NULL: none, or known only at run time */
	const char *env;     /* K2MC_ variable, or NULL */
	const char *section; /* --help's section title ("Kafka:") */
	int secret;          /* masked by --dump-config */
	int takes_value;     /* getopt's required_argument */
	int dumped;          /* printed by --dump-config (when set) */
};
/* Row i, in --help's order: 0, or -1 past the last row. */
int k2mc_config_option(size_t i, struct k2mc_config_option *out);

/* K2MC_VERSION (the build's -DK2MC_VERSION, else "unknown"). */
const char *k2mc_config_version(void);
/* "ketama", "libketama", ...: the --distribution name. */
const char *k2mc_distribution_name(enum k2mc_distribution d);
/* 1 if the distribution's readers use -m weights (libketama, dalli): a
 * weight other than 1 under any other is refused. */
int k2mc_distribution_weighted(enum k2mc_distribution d);
const char *k2mc_mc_protocol_name(enum k2mc_mc_protocol p); /* "auto", "meta", "text" */
const char *k2mc_log_format_name(enum k2mc_log_format f);   /* "text", "json" */
const char *k2mc_format_name(enum k2mc_format f);           /* "raw", "json", "avro" */
/* "none", "debezium", "debezium-invalidate" */
const char *k2mc_cdc_name(enum k2mc_cdc m);
/* 1 if the --schema-registry-property NAME holds a secret
 * (basic.auth.user.info, ssl.key.password): masked like -X secrets. */
int k2mc_config_sr_secret(const char *name);
/* "delete", "ignore", "invalidate" (without the seconds) */
const char *k2mc_on_tombstone_name(enum k2mc_on_tombstone t);

/* What one partition's rings (writers x ring-size slots of 16 bytes, ring.h's
 * struct ring_item) and its watermark window (next_pow2(writers x ring-size)
 * entries of 9 bytes, watermark.c) allocate when it is assigned. */
uint64_t k2mc_config_ring_bytes_per_partition(const struct k2mc_config *c);
/* Physical memory (_SC_PHYS_PAGES x _SC_PAGE_SIZE), 0 if unknown. */
uint64_t k2mc_config_memory_bytes(void);
/* K2MC_CONFIG_USAGE (message in err) when one partition's rings alone would
 * exceed memory_bytes (0 = unknown: no check). k2mc_config_parse makes this
 * check against k2mc_config_memory_bytes(). */
enum k2mc_config_result k2mc_config_check_ring_memory(const struct k2mc_config *c,
						      uint64_t memory_bytes, char *err,
						      size_t errlen);

/* The group timing k2mc hands librdkafka: the -X values as librdkafka parses
 * them (the last one given wins), else the library's defaults (45000 and
 * 3000 in librdkafka 2.0.2). Each call builds a librdkafka configuration
 * object: for start-up, not for a hot path. */
int64_t k2mc_config_session_timeout_ms(const struct k2mc_config *c);
int64_t k2mc_config_heartbeat_interval_ms(const struct k2mc_config *c);
/* max.poll.interval.ms: the classic protocol's rebalance timeout. */
int64_t k2mc_config_max_poll_interval_ms(const struct k2mc_config *c);
/* How long after a revocation began this member may still write: the
 * rebalance timeout, less the heartbeat interval (the join phase may have
 * begun one interval before the heartbeat that told us) and the lease's
 * margin. At least 1. */
int64_t k2mc_config_join_lease_ms(const struct k2mc_config *c);
/* The fencing lease: session - heartbeat - K2MC_FENCE_MARGIN_MS(session).
 * k2mc_config_parse refuses a configuration where it is under 1000 ms or not
 * more than 2 x commit_interval_ms, so after a successful parse it is > 0. */
int64_t k2mc_config_lease_ms(const struct k2mc_config *c);

#endif
