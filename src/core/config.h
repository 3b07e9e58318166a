/* Configuration: kcat-style flags plus k2mc's own long options, a -F file of
 * key=value lines and a few K2MC_* environment variables (lowest precedence).
 * Parsing, validation and --dump-config only; nothing here talks to Kafka or
 * Memcached (-X values are read through a librdkafka configuration object,
 * so that they mean what they will mean to the consumer). */
#ifndef K2MC_CONFIG_H
#define K2MC_CONFIG_H

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
#define K2MC_MAX_BUFFER_DEFAULT (256ull << 20)
#define K2MC_MAX_BUFFER_MIN (1ull << 20)
/* Fencing (fence.h): the lease a commit acknowledgement buys is
 * session.timeout.ms - heartbeat.interval.ms - this margin, which covers the
 * time from a writer's last lease check to its bytes reaching memcached and
 * the coordinator's own timer slack. One definition, used by the start-up
 * check below and by whoever builds the fence. */
#define K2MC_FENCE_MARGIN_MS(session) \
	((int64_t)(session) / 10 > 500 ? (int64_t)(session) / 10 : (int64_t)500)

struct k2mc_server {
	char host[256];
	int port;
};

/* --on-invalid: what happens to a record Memcached cannot take */
enum k2mc_invalid_policy {
	K2MC_INVALID_SKIP = 0, /* count, log, acknowledge */
	K2MC_INVALID_HASH,     /* bad keys become prefix + hex digest; others fall back */
	K2MC_INVALID_DLQ,      /* produce the record to --dlq-topic, acknowledge on delivery */
	K2MC_INVALID_FAIL,     /* stop with exit 1, committing nothing at or past it */
};

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
	uint32_t ttl;                   /* --ttl seconds, 0 = never expire */
	const char *key_prefix;         /* --key-prefix */
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
	/* Strings read from -F and the environment, which the pointers above
	 * may point into: owned by c, freed by k2mc_config_free. */
	struct k2mc_config_chunk *owned;
};

enum k2mc_config_result {
	K2MC_CONFIG_OK = 0,
	K2MC_CONFIG_EXIT = 1,   /* -h or -V printed; exit 0 */
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
 * memory. Pointers in c point into argv, which must outlive c, or into
 * storage c owns: call k2mc_config_free after any result. */
enum k2mc_config_result k2mc_config_parse(struct k2mc_config *c, int argc, char **argv,
					  char *err, size_t errlen);
void k2mc_config_free(struct k2mc_config *c);

/* Prints the effective configuration as -F lines (so the output can be fed
 * back with -F), secrets masked: any -X property whose name says password,
 * secret or private key material. */
void k2mc_config_dump(const struct k2mc_config *c, FILE *out);
/* 1 if the librdkafka property `name` holds a secret. */
int k2mc_config_is_secret(const char *name);

/* Parses "HOST:PORT[,HOST:PORT...]" into c->servers; 0 or -EINVAL (err set). */
int k2mc_config_parse_servers(struct k2mc_config *c, const char *list, char *err, size_t errlen);

void k2mc_config_usage(FILE *out);

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
/* The fencing lease: session - heartbeat - K2MC_FENCE_MARGIN_MS(session).
 * k2mc_config_parse refuses a configuration where it is under 1000 ms or not
 * more than 2 x commit_interval_ms, so after a successful parse it is > 0. */
int64_t k2mc_config_lease_ms(const struct k2mc_config *c);

#endif
