/* k2mc-mock: runs librdkafka's mock Kafka cluster in its own process, creates
 * topics and produces generated records with a file of the expected final state
 * per key, for the demo, integration tests and benchmarks. Not a Kafka broker:
 * the mock keeps at most 5 MiB or 100,000 message sets per partition. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "gen.h"

/*
 * What a spawning test reads (stdout, one flushed line each; diagnostics go
 * to stderr):
 *   bootstrap=HOST:PORT[,HOST:PORT...]   first line, once the cluster is up
 *                                        (with -b: the address given)
 *   produce_start_ms=MS                  when --produce starts (CLOCK_REALTIME)
 *   produced=N acked=N failed=F [paced_waits=W]
 *                                        after --produce is acknowledged;
 *                                        paced_waits with --pace-group
 *   expect=FILE                          after --expect FILE is written
 *   ok ... | error ...                   one answer per --stdin-control line
 * Records: key "key-%08u" (uniform over --keys, splitmix64 from --seed),
 * value "v:<key>:<seq>:" padded to --value-size with 'a' + seq % 26 (or cut
 * to it), seq counting every record from 0; a tombstone has a NULL value
 * (bench/gen.h, shared with mc-ceiling).
 * --expect FILE, in key order, one line per key produced: "S <key> <value>"
 * when its last record has a value, "D <key>" when it was a tombstone.
 * --pace-group G --pace-lead N: production (--produce and "produce" commands)
 * waits while a partition's log end is N or more records past G's committed
 * offset there, so that a consumer reading G loses nothing to retention.
 *
 * With -b (an existing cluster, e.g. a real Kafka broker): the --topic topics
 * that its metadata does not list are created with the admin API
 * (--replication, --topic-config) before the bootstrap line, and their
 * partitions have leaders by then. -X PROP=VALUE sets producer properties
 * (compression.codec, transactional.id, ...) over the defaults.
 * --txn-abort-every N (with -b): a transactional producer, one transaction
 * per --txn-size records, every Nth aborted (0: none), so --expect holds the
 * committed records only; the produced= line adds
 * "txns=T aborted_txns=A aborted_records=R".
 */

#define MOCK_MAX_TOPICS 64
#define MOCK_DEFAULT_PARTS 8
/* below the producer's default message.max.bytes (1,000,000) with room for
 * the key and record overhead */
#define MOCK_MAX_VALUE 900000u
/* mock partitions keep 5 MiB; warn a little before it */
#define MOCK_RETENTION_WARN (4.5 * 1024 * 1024)
#define MOCK_CMD_MAX 4096
/* records produced between two looks at signals and commands */
#define MOCK_BURST 4096u
/* "produce" commands waiting behind the running one */
#define MOCK_QUEUED_MAX 256
#define MOCK_PACE_LEAD_DEFAULT 30000u
/* how often the pace thread asks for the group's committed offsets */
#define MOCK_PACE_POLL_MS 20
#define MOCK_PACE_TIMEOUT_MS 2000
#define MOCK_MAX_PROPS 64
#define MOCK_TXN_SIZE_DEFAULT 1000u
/* a transaction API call, and the wait for created topics */
#define MOCK_TXN_TIMEOUT_MS 60000
#define MOCK_CREATE_TIMEOUT_MS 60000

struct topic_spec {
	const char *name;
	int parts;
};

/* "NAME=VALUE" split at the first '=' (argv is modified in place) */
struct prop {
	const char *name;
	const char *value;
};

struct opts {
	int brokers;
	struct topic_spec topics[MOCK_MAX_TOPICS];
	int ntopics;
	uint64_t produce;
	uint32_t keys;
	uint32_t value_size;
	double tombstone_pct;
	double rate; /* records/s; 0 = unlimited */
	uint64_t seed;
	const char *expect_path;
	const char *bootstrap_path;
	const char *bootstrap; /* -b: external cluster, no mock */
	const char *pace_group;
	uint64_t pace_lead;
	bool exit_after_produce;
	bool stdin_control;
	bool quiet;
	bool json_values; /* --json-values: gen_json_value instead of gen_value */
	struct prop xprops[MOCK_MAX_PROPS]; /* -X: producer properties */
	int nxprops;
	struct prop tconfigs[MOCK_MAX_PROPS]; /* --topic-config: topics -b creates */
	int ntconfigs;
	int replication; /* -1: the broker's default.replication.factor */
	int port; /* --port: a fixed bootstrap port (0: none) */
	bool txn; /* --txn-abort-every given, or -X transactional.id */
	uint64_t txn_abort_every; /* 0: commit every transaction */
	uint64_t txn_size;
};

/* One production run: --produce at start-up, or a "produce N" command. */
struct job {
	bool active;
	bool initial; /* --produce, not a command */
	uint64_t target; /* records to produce */
	uint64_t sent; /* of them, handed to librdkafka */
	uint64_t acked0, failed0; /* app counters when the job started */
	double t0;
};

/* --pace-group: the main thread produces a record only while its partition's
 * log end is less than pace_lead past the group's committed offset; the pace
 * thread (k2mc-mock-pace) reads those offsets with rd_kafka_committed() on a
 * consumer handle of the group that never subscribes (so never joins it). */
struct pacer {
	/* created by the main thread before the pace thread starts, then used
	 * by the pace thread only; destroyed by main after the join */
	rd_kafka_t *rk;
	rd_kafka_topic_partition_list_t *list;
	int32_t nparts;
	/* per partition, main thread only: the log end offset when pacing
	 * started, and the records handed to librdkafka since (so base + sent
	 * is the log end once they are delivered: we are the only producer) */
	int64_t *base;
	uint64_t *sent;
	/* per partition: the group's committed offset, the log start until the
	 * group's first commit there. Written by the pace thread only (P1:
	 * release store); read by the main thread with acquire, pairing with P1 */
	_Atomic int64_t *committed;
	/* written by main, read by the pace thread; the join orders the rest */
	atomic_bool stop;
	/* the event pipe's write end: the pace thread wakes the main loop when
	 * an offset moves (a pipe write is atomic, safe from any thread) */
	int wake_fd;
	pthread_t thread;
	bool running;
	/* main thread only */
	bool blocked; /* production is waiting for the group */
	uint64_t waits; /* times production had to wait */
	uint64_t misrouted; /* delivery reports on another partition than computed */
};

/* Everything below is touched by the main thread only: librdkafka calls the
 * delivery-report and error callbacks from rd_kafka_poll() in its loop. The
 * exception is pace.committed (struct pacer says who writes it). */
struct app {
	struct opts o;
	rd_kafka_t *mock_rk;
	rd_kafka_mock_cluster_t *mc;
	char *bootstraps;
	rd_kafka_t *prod;
	rd_kafka_topic_t *rkt;
	int sfd; /* signalfd for SIGTERM/SIGINT */
	/* librdkafka writes to [1] when a handle's event queue (delivery
	 * reports, errors) becomes non-empty; the loop polls [0] */
	int evfd[2];
	struct job job;
	struct pacer pace;
	/* --txn-abort-every: the open transaction's undo log (key index and
	 * its last[] entry before the record), so that an abort puts last[]
	 * back; and the counts for the produced= line */
	struct {
		bool open;
		uint64_t in_txn; /* records produced in the open transaction */
		uint32_t *undo_idx;
		uint64_t *undo_last;
		uint64_t txns, aborted_txns, aborted_records;
	} txn;
	/* record counts of "produce" commands not started yet, FIFO */
	uint64_t queued[MOCK_QUEUED_MAX];
	unsigned nqueued;
	/* the record stream; its sequence continues across jobs */
	struct gen gen;
	/* the next record, generated but not yet accepted (queue full) */
	struct gen_rec pend;
	bool pend_valid;
	/* per key index: 0 = untouched, else ((seq + 1) << 1) | tombstone of
	 * the key's last produced record; only allocated with --expect */
	uint64_t *last;
	char *valbuf;
	uint64_t produced, acked, failed;
	/* a record failed or the producer hit a fatal error: the log no
	 * longer matches what we tracked, so never write --expect again */
	bool tainted;
	bool fatal;
};

__attribute__((format(printf, 1, 2))) static void out(const char *fmt, ...)
{
	va_list ap;

	/* one line per call, flushed: tests read stdout line by line */
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

__attribute__((format(printf, 1, 2))) static void err(const char *fmt, ...)
{
	va_list ap;

	fputs("k2mc-mock: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(FILE *f)
{
	fputs("usage: k2mc-mock [options]\n"
	      "  --brokers N            mock brokers (default 1)\n"
	      "  --topic NAME[:PARTS]   repeatable; partitions default 8; topic \"events\" if none\n"
	      "  --produce N            produce N generated records to the first topic (default 0)\n"
	      "  --keys K               key space, keys \"key-%08u\" (default 10000)\n"
	      "  --value-size B         value bytes (default 100)\n"
	      "  --tombstones PCT       percent of records produced with a NULL value (default 0)\n"
	      "  --json-values          values as JSON documents of --value-size bytes\n"
	      "                         ({\"id\":KEY,\"seq\":N,\"profile\":{...}}, bench/gen.h)\n"
	      "  --rate R               about R records/s (default unlimited)\n"
	      "  --seed S               PRNG seed (default 1)\n"
	      "  --expect FILE          write the expected final state per key once acknowledged\n"
	      "  --bootstrap-file FILE  also write the bootstrap address to FILE\n"
	      "  --port P               also take bootstrap connections on 127.0.0.1:P\n"
	      "                         (the mock's brokers listen on ports of the\n"
	      "                         kernel's choosing; P relays to the first one,\n"
	      "                         so a config file can name a fixed address)\n"
	      "  --exit-after-produce   exit once production (and --expect) is done\n"
	      "  --stdin-control        read commands from stdin; EOF exits:\n"
	      "                         broker-down ID | broker-up ID | rtt ID MS |\n"
	      "                         errors APIKEY ERRCODE COUNT | produce N | quit\n"
	      "  -b BOOTSTRAP           produce to an existing cluster instead of a mock;\n"
	      "                         --topic topics it lacks are created (admin API)\n"
	      "  --replication N        replication factor of topics -b creates\n"
	      "                         (default -1: the broker's default)\n"
	      "  --topic-config K=V     repeatable: a config of topics -b creates\n"
	      "                         (cleanup.policy=compact, segment.ms=100, ...)\n"
	      "  -X PROP=VALUE          repeatable: a producer property (compression.codec,\n"
	      "                         transactional.id, ...), over the defaults\n"
	      "  --txn-abort-every N    with -b: transactional production, one transaction\n"
	      "                         per --txn-size records, every Nth aborted (0: none);\n"
	      "                         --expect holds committed records only\n"
	      "  --txn-size N           records per transaction (default 1000)\n"
	      "  --pace-group GROUP     keep each partition at most --pace-lead records past\n"
	      "                         GROUP's committed offset while producing\n"
	      "  --pace-lead N          (default 30000)\n"
	      "  -q                     quiet\n"
	      "Lifetime: k2mc-mock runs until SIGINT/SIGTERM (or EOF with --stdin-control),\n"
	      "and also stops when the process that started it exits (PR_SET_PDEATHSIG), so\n"
	      "that a test dying cannot leave it behind: started with & from a shell, it\n"
	      "lives as long as that shell.\n",
	      f);
}

static int parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max,
		     uint64_t *v)
{
	char *end;
	unsigned long long x;

	errno = 0;
	if (*s == '-' || *s == '\0')
		goto bad;
	x = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || x < min || x > max)
		goto bad;
	*v = x;
	return 0;
bad:
	err("%s: expected an integer in [%" PRIu64 ", %" PRIu64 "], got \"%s\"",
	    opt, min, max, s);
	return -EINVAL;
}

static int parse_i64(const char *s, int64_t min, int64_t max, int64_t *v)
{
	char *end;
	long long x;

	errno = 0;
	if (*s == '\0')
		return -EINVAL;
	x = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || x < min || x > max)
		return -EINVAL;
	*v = x;
	return 0;
}

static int parse_double(const char *opt, const char *s, double min, double max,
			double *v)
{
	char *end;
	double x;

	errno = 0;
	x = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(x >= min && x <= max)) {
		err("%s: expected a number in [%g, %g], got \"%s\"", opt, min,
		    max, s);
		return -EINVAL;
	}
	*v = x;
	return 0;
}

static int parse_topic(struct opts *o, char *arg)
{
	char *colon = strrchr(arg, ':');
	uint64_t parts = MOCK_DEFAULT_PARTS;

	if (o->ntopics == MOCK_MAX_TOPICS) {
		err("--topic: at most %d topics", MOCK_MAX_TOPICS);
		return -EINVAL;
	}
	if (colon) {
		*colon = '\0';
		if (parse_u64("--topic partitions", colon + 1, 1, 100000,
			      &parts))
			return -EINVAL;
	}
	/* Kafka topic names: 1..249 of [a-zA-Z0-9._-] */
	if (arg[0] == '\0' || strlen(arg) > 249 ||
	    strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			"0123456789._-") != strlen(arg)) {
		err("--topic: invalid topic name \"%s\"", arg);
		return -EINVAL;
	}
	o->topics[o->ntopics].name = arg;
	o->topics[o->ntopics].parts = (int)parts;
	o->ntopics++;
	return 0;
}

enum {
	OPT_BROKERS = 256,
	OPT_TOPIC,
	OPT_PRODUCE,
	OPT_KEYS,
	OPT_VALUE_SIZE,
	OPT_TOMBSTONES,
	OPT_RATE,
	OPT_SEED,
	OPT_EXPECT,
	OPT_BOOTSTRAP_FILE,
	OPT_EXIT_AFTER_PRODUCE,
	OPT_STDIN_CONTROL,
	OPT_PACE_GROUP,
	OPT_PACE_LEAD,
	OPT_JSON_VALUES,
	OPT_TOPIC_CONFIG,
	OPT_REPLICATION,
	OPT_TXN_ABORT_EVERY,
	OPT_TXN_SIZE,
	OPT_PORT,
};

/* "NAME=VALUE" into list; argv's string is split in place. */
static int parse_prop(const char *opt, char *arg, struct prop *list, int *n)
{
	char *eq = strchr(arg, '=');

	if (eq == NULL || eq == arg) {
		err("%s: expected NAME=VALUE, got \"%s\"", opt, arg);
		return -EINVAL;
	}
	if (*n == MOCK_MAX_PROPS) {
		err("%s: at most %d", opt, MOCK_MAX_PROPS);
		return -EINVAL;
	}
	*eq = '\0';
	list[*n].name = arg;
	list[*n].value = eq + 1;
	(*n)++;
	return 0;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "brokers", required_argument, NULL, OPT_BROKERS },
		{ "topic", required_argument, NULL, OPT_TOPIC },
		{ "produce", required_argument, NULL, OPT_PRODUCE },
		{ "keys", required_argument, NULL, OPT_KEYS },
		{ "value-size", required_argument, NULL, OPT_VALUE_SIZE },
		{ "tombstones", required_argument, NULL, OPT_TOMBSTONES },
		{ "rate", required_argument, NULL, OPT_RATE },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "expect", required_argument, NULL, OPT_EXPECT },
		{ "bootstrap-file", required_argument, NULL,
		  OPT_BOOTSTRAP_FILE },
		{ "exit-after-produce", no_argument, NULL,
		  OPT_EXIT_AFTER_PRODUCE },
		{ "stdin-control", no_argument, NULL, OPT_STDIN_CONTROL },
		{ "pace-group", required_argument, NULL, OPT_PACE_GROUP },
		{ "pace-lead", required_argument, NULL, OPT_PACE_LEAD },
		{ "json-values", no_argument, NULL, OPT_JSON_VALUES },
		{ "topic-config", required_argument, NULL, OPT_TOPIC_CONFIG },
		{ "replication", required_argument, NULL, OPT_REPLICATION },
		{ "txn-abort-every", required_argument, NULL, OPT_TXN_ABORT_EVERY },
		{ "txn-size", required_argument, NULL, OPT_TXN_SIZE },
		{ "port", required_argument, NULL, OPT_PORT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	bool lead_given = false, txn_size_given = false;
	int c;

	*o = (struct opts){
		.brokers = 1,
		.keys = 10000,
		.value_size = 100,
		.seed = 1,
		.pace_lead = MOCK_PACE_LEAD_DEFAULT,
		.replication = -1,
		.txn_size = MOCK_TXN_SIZE_DEFAULT,
	};
	while ((c = getopt_long(argc, argv, "b:qhX:", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_BROKERS:
			if (parse_u64("--brokers", optarg, 1, 64, &v))
				return -EINVAL;
			o->brokers = (int)v;
			break;
		case OPT_PORT:
			if (parse_u64("--port", optarg, 1, 65535, &v))
				return -EINVAL;
			o->port = (int)v;
			break;
		case OPT_TOPIC:
			if (parse_topic(o, optarg))
				return -EINVAL;
			break;
		case OPT_PRODUCE:
			if (parse_u64("--produce", optarg, 0, UINT64_MAX / 4,
				      &o->produce))
				return -EINVAL;
			break;
		case OPT_KEYS:
			if (parse_u64("--keys", optarg, 1, GEN_MAX_KEYS, &v))
				return -EINVAL;
			o->keys = (uint32_t)v;
			break;
		case OPT_VALUE_SIZE:
			if (parse_u64("--value-size", optarg, 0, MOCK_MAX_VALUE,
				      &v))
				return -EINVAL;
			o->value_size = (uint32_t)v;
			break;
		case OPT_TOMBSTONES:
			if (parse_double("--tombstones", optarg, 0, 100,
					 &o->tombstone_pct))
				return -EINVAL;
			break;
		case OPT_RATE:
			if (parse_double("--rate", optarg, 0, 1e9, &o->rate))
				return -EINVAL;
			break;
		case OPT_SEED:
			if (parse_u64("--seed", optarg, 0, UINT64_MAX, &o->seed))
				return -EINVAL;
			break;
		case OPT_EXPECT:
			o->expect_path = optarg;
			break;
		case OPT_BOOTSTRAP_FILE:
			o->bootstrap_path = optarg;
			break;
		case OPT_EXIT_AFTER_PRODUCE:
			o->exit_after_produce = true;
			break;
		case OPT_STDIN_CONTROL:
			o->stdin_control = true;
			break;
		case OPT_PACE_GROUP:
			if (optarg[0] == '\0') {
				err("--pace-group: empty group id");
				return -EINVAL;
			}
			o->pace_group = optarg;
			break;
		case OPT_PACE_LEAD:
			if (parse_u64("--pace-lead", optarg, 1, INT64_MAX / 4,
				      &o->pace_lead))
				return -EINVAL;
			lead_given = true;
			break;
		case OPT_JSON_VALUES:
			o->json_values = true;
			break;
		case OPT_TOPIC_CONFIG:
			if (parse_prop("--topic-config", optarg, o->tconfigs, &o->ntconfigs))
				return -EINVAL;
			break;
		case OPT_REPLICATION:
			if (parse_u64("--replication", optarg, 1, 32767, &v))
				return -EINVAL;
			o->replication = (int)v;
			break;
		case OPT_TXN_ABORT_EVERY:
			if (parse_u64("--txn-abort-every", optarg, 0, UINT32_MAX,
				      &o->txn_abort_every))
				return -EINVAL;
			o->txn = true;
			break;
		case OPT_TXN_SIZE:
			if (parse_u64("--txn-size", optarg, 1, 10000000, &o->txn_size))
				return -EINVAL;
			txn_size_given = true;
			break;
		case 'X':
			if (parse_prop("-X", optarg, o->xprops, &o->nxprops))
				return -EINVAL;
			if (strcmp(o->xprops[o->nxprops - 1].name, "transactional.id") == 0)
				o->txn = true;
			break;
		case 'b':
			o->bootstrap = optarg;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'h':
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc) {
		err("unexpected argument \"%s\"", argv[optind]);
		return -EINVAL;
	}
	if (lead_given && !o->pace_group) {
		err("--pace-lead needs --pace-group");
		return -EINVAL;
	}
	if (o->txn && !o->bootstrap) {
		/* the mock cluster of librdkafka 2.0.2 keeps no aborted
		 * transactions: a read_committed consumer would see them */
		err("--txn-abort-every and -X transactional.id need -b (a real cluster)");
		return -EINVAL;
	}
	if (o->txn && (o->pace_group || o->rate > 0 || o->stdin_control)) {
		err("transactional production runs alone: no --pace-group, --rate or "
		    "--stdin-control");
		return -EINVAL;
	}
	if (txn_size_given && !o->txn) {
		err("--txn-size needs --txn-abort-every");
		return -EINVAL;
	}
	if ((o->ntconfigs > 0 || o->replication != -1) && !o->bootstrap) {
		err("--topic-config and --replication are for topics -b creates; the mock "
		    "cluster's topics take neither");
		return -EINVAL;
	}
	if (o->port && o->bootstrap) {
		err("--port is for the mock cluster; with -b, name the cluster itself");
		return -EINVAL;
	}
	if (o->exit_after_produce && o->stdin_control) {
		err("--exit-after-produce and --stdin-control exclude each other");
		return -EINVAL;
	}
	if (o->ntopics == 0) {
		o->topics[0].name = "events";
		o->topics[0].parts = MOCK_DEFAULT_PARTS;
		o->ntopics = 1;
	}
	return 0;
}

static int write_file_atomic(const char *path, const char *content)
{
	char tmp[PATH_MAX];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fputs(content, f);
	if (fclose(f) != 0) {
		int e = -errno;
		unlink(tmp);
		return e;
	}
	if (rename(tmp, path) != 0) {
		int e = -errno;
		unlink(tmp);
		return e;
	}
	return 0;
}

/* Writes FILE.tmp and renames it so that a reader polling for FILE only ever
 * sees a complete file. Lines are in key-index order. announce: print
 * "expect=FILE" (a control command's answer line says it instead). */
static int write_expect(struct app *a, bool announce)
{
	const char *path = a->o.expect_path;
	char tmp[PATH_MAX], key[GEN_KEY_BUF];
	FILE *f;
	int e = 0;

	if (a->tainted) {
		err("not writing %s: some records failed delivery, the expected "
		    "state is unknown",
		    path);
		return -EIO;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		err("%s: path too long", path);
		return -ENAMETOOLONG;
	}
	f = fopen(tmp, "w");
	if (!f) {
		e = -errno;
		err("%s: %s", tmp, strerror(errno));
		return e;
	}
	setvbuf(f, NULL, _IOFBF, 1 << 20);
	for (uint32_t i = 0; i < a->o.keys; i++) {
		uint64_t l = a->last[i];

		if (l == 0)
			continue;
		gen_key(key, sizeof(key), i);
		if (l & 1) {
			fprintf(f, "D %s\n", key);
		} else {
			(a->o.json_values ? gen_json_value : gen_value)(a->valbuf, a->o.value_size,
									key, (l >> 1) - 1);
			fprintf(f, "S %s %.*s\n", key, (int)a->o.value_size,
				a->valbuf);
		}
	}
	if (ferror(f))
		e = -EIO;
	if (fclose(f) != 0 && e == 0)
		e = -errno;
	if (e == 0 && rename(tmp, path) != 0)
		e = -errno;
	if (e != 0) {
		err("writing %s: %s", path, strerror(-e));
		unlink(tmp);
		return e;
	}
	if (announce)
		out("expect=%s", path);
	return 0;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct app *a = opaque;

	(void)rk;
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		a->acked++;
		/* pacing counts records per partition with the default
		 * partitioner's function; check that librdkafka agrees */
		if (a->pace.rk &&
		    m->partition != rd_kafka_msg_partitioner_consistent_random(
					    m->rkt, m->key, m->key_len,
					    a->pace.nparts, NULL, NULL) &&
		    a->pace.misrouted++ == 0)
			err("pacing: record with key %.*s landed on partition "
			    "%" PRId32 ", not the one paced; pacing is off the mark",
			    (int)m->key_len, (const char *)m->key, m->partition);
		return;
	}
	/* log the first few only: a broker outage fails thousands at once */
	if (a->failed < 10)
		err("delivery failed: topic %s partition %" PRId32 " key %.*s: %s",
		    rd_kafka_topic_name(m->rkt), m->partition, (int)m->key_len,
		    (const char *)m->key, rd_kafka_err2str(m->err));
	a->failed++;
	a->tainted = true;
}

static void error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque)
{
	struct app *a = opaque;
	char fatal[512];

	if (e != RD_KAFKA_RESP_ERR__FATAL) {
		/* transient (broker down, transport): librdkafka retries */
		if (!a->o.quiet)
			err("producer: %s: %s", rd_kafka_err2name(e), reason);
		return;
	}
	rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
	err("producer fatal error: %s", fatal);
	a->fatal = true;
	a->tainted = true;
}

static int set_conf(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char errstr[512];

	if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) !=
	    RD_KAFKA_CONF_OK) {
		err("config %s=%s: %s", k, v, errstr);
		return -EINVAL;
	}
	return 0;
}

/* Wakes the event loop when the handle has events for rd_kafka_poll(), so it
 * can block in poll() without a timeout. */
static void enable_events(struct app *a, rd_kafka_t *rk)
{
	rd_kafka_queue_t *q = rd_kafka_queue_get_main(rk);

	rd_kafka_queue_io_event_enable(q, a->evfd[1], "1", 1);
	rd_kafka_queue_destroy(q);
}

static int cluster_start(struct app *a)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[512];
	rd_kafka_resp_err_t e;

	/* this handle only hosts the mock brokers; it never connects anywhere,
	 * so its "no bootstrap.servers" notice is noise */
	if (set_conf(conf, "log_level", "4")) {
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	a->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr,
				  sizeof(errstr));
	if (!a->mock_rk) {
		err("creating the mock cluster's handle: %s", errstr);
		rd_kafka_conf_destroy(conf);
		return -EIO;
	}
	enable_events(a, a->mock_rk);
	a->mc = rd_kafka_mock_cluster_new(a->mock_rk, a->o.brokers);
	if (!a->mc) {
		err("rd_kafka_mock_cluster_new(%d brokers) failed", a->o.brokers);
		return -EIO;
	}
	for (int i = 0; i < a->o.ntopics; i++) {
		const struct topic_spec *t = &a->o.topics[i];

		e = rd_kafka_mock_topic_create(a->mc, t->name, t->parts, 1);
		if (e) {
			err("creating topic %s (%d partitions): %s", t->name,
			    t->parts, rd_kafka_err2str(e));
			return -EIO;
		}
	}
	a->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(a->mc));
	if (!a->bootstraps)
		return -ENOMEM;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int producer_start(struct app *a)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_error_t *te;
	char errstr[512], txn_id[64];

	/* Idempotence keeps per-partition order across retries (the mock
	 * implements InitProducerId and sequence checks), so the order we
	 * produce a key's records in is the order they land in the log, which
	 * is what --expect relies on. */
	if (set_conf(conf, "bootstrap.servers", a->bootstraps) ||
	    set_conf(conf, "enable.idempotence", "true") ||
	    set_conf(conf, "linger.ms", "5") ||
	    set_conf(conf, "batch.num.messages", "10000") ||
	    (a->o.quiet && set_conf(conf, "log_level", "3"))) {
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	/* -X after the defaults: the user's word wins */
	for (int i = 0; i < a->o.nxprops; i++) {
		if (set_conf(conf, a->o.xprops[i].name, a->o.xprops[i].value)) {
			rd_kafka_conf_destroy(conf);
			return -EINVAL;
		}
	}
	if (a->o.txn) {
		size_t n = sizeof(txn_id);

		if (rd_kafka_conf_get(conf, "transactional.id", txn_id, &n) != RD_KAFKA_CONF_OK ||
		    txn_id[0] == '\0') {
			snprintf(txn_id, sizeof(txn_id), "k2mc-mock-%ld", (long)getpid());
			if (set_conf(conf, "transactional.id", txn_id)) {
				rd_kafka_conf_destroy(conf);
				return -EINVAL;
			}
		}
	}
	rd_kafka_conf_set_opaque(conf, a);
	rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	a->prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!a->prod) {
		err("creating the producer: %s", errstr);
		rd_kafka_conf_destroy(conf);
		return -EIO;
	}
	enable_events(a, a->prod);
	a->rkt = rd_kafka_topic_new(a->prod, a->o.topics[0].name, NULL);
	if (!a->rkt) {
		err("topic %s: %s", a->o.topics[0].name,
		    rd_kafka_err2str(rd_kafka_last_error()));
		return -EIO;
	}
	if (a->o.txn) {
		/* fences an older producer with the same transactional.id */
		te = rd_kafka_init_transactions(a->prod, MOCK_TXN_TIMEOUT_MS);
		if (te) {
			err("init_transactions: %s", rd_kafka_error_string(te));
			rd_kafka_error_destroy(te);
			return -EIO;
		}
	}
	return 0;
}

/* The entry of topic in md, or NULL. */
static const rd_kafka_metadata_topic_t *md_topic(const rd_kafka_metadata_t *md, const char *topic)
{
	for (int i = 0; i < md->topic_cnt; i++)
		if (strcmp(md->topics[i].topic, topic) == 0)
			return &md->topics[i];
	return NULL;
}

/* Every --topic topic listed, each of its partitions with a leader, and a
 * topic this run created (created[i]; NULL: none) with its --topic
 * partitions? A topic that was there keeps its own count. 1 yes, 0 not yet,
 * -EIO when the metadata request failed; listed[i] (may be NULL): the
 * metadata names topic i. */
static int topics_ready(struct app *a, bool *listed, const bool *created)
{
	const rd_kafka_metadata_t *md = NULL;
	rd_kafka_resp_err_t e = rd_kafka_metadata(a->prod, 1, NULL, &md, 5000);
	int ready = 1;

	if (e) {
		err("metadata: %s", rd_kafka_err2str(e));
		return -EIO;
	}
	for (int i = 0; i < a->o.ntopics; i++) {
		const rd_kafka_metadata_topic_t *t = md_topic(md, a->o.topics[i].name);

		if (listed)
			listed[i] = t != NULL && t->err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
		if (t == NULL || t->err || t->partition_cnt < 1 ||
		    (created && created[i] && t->partition_cnt != a->o.topics[i].parts)) {
			ready = 0;
			continue;
		}
		for (int p = 0; p < t->partition_cnt; p++)
			if (t->partitions[p].err || t->partitions[p].leader < 0)
				ready = 0;
	}
	rd_kafka_metadata_destroy(md);
	return ready;
}

/* -b: creates the --topic topics the cluster does not list (CreateTopics,
 * --replication, --topic-config), then waits until every partition of every
 * --topic topic has a leader, so a consumer started after the bootstrap
 * line finds them. A topic that exists is left as it is. */
static int topics_ensure(struct app *a)
{
	rd_kafka_NewTopic_t *nt[MOCK_MAX_TOPICS];
	bool listed[MOCK_MAX_TOPICS], created[MOCK_MAX_TOPICS] = { false };
	rd_kafka_AdminOptions_t *ao = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	struct timespec nap = { 0, 100 * 1000000L };
	double deadline = now_s() + MOCK_CREATE_TIMEOUT_MS / 1000.0;
	char errstr[512];
	int nnew = 0, rc = -EIO, r;

	r = topics_ready(a, listed, NULL);
	if (r != 0)
		return r > 0 ? 0 : r;
	for (int i = 0; i < a->o.ntopics; i++) {
		const struct topic_spec *t = &a->o.topics[i];

		if (listed[i])
			continue;
		created[i] = true;
		nt[nnew] = rd_kafka_NewTopic_new(t->name, t->parts, a->o.replication, errstr,
						 sizeof(errstr));
		if (nt[nnew] == NULL) {
			err("topic %s: %s", t->name, errstr);
			goto out;
		}
		nnew++;
		for (int c = 0; c < a->o.ntconfigs; c++) {
			rd_kafka_resp_err_t e = rd_kafka_NewTopic_set_config(
				nt[nnew - 1], a->o.tconfigs[c].name, a->o.tconfigs[c].value);

			if (e) {
				err("topic %s: config %s: %s", t->name, a->o.tconfigs[c].name,
				    rd_kafka_err2str(e));
				goto out;
			}
		}
	}
	if (nnew > 0) {
		const rd_kafka_CreateTopics_result_t *res;
		const rd_kafka_topic_result_t **tr;
		size_t cnt = 0;

		ao = rd_kafka_AdminOptions_new(a->prod, RD_KAFKA_ADMIN_OP_CREATETOPICS);
		q = rd_kafka_queue_new(a->prod);
		if (ao == NULL || q == NULL ||
		    rd_kafka_AdminOptions_set_operation_timeout(ao, 30000, errstr, sizeof(errstr)) ||
		    rd_kafka_AdminOptions_set_request_timeout(ao, 30000, errstr, sizeof(errstr))) {
			err("admin options: %s", ao && q ? errstr : "out of memory");
			goto out;
		}
		rd_kafka_CreateTopics(a->prod, nt, (size_t)nnew, ao, q);
		ev = rd_kafka_queue_poll(q, MOCK_CREATE_TIMEOUT_MS);
		res = ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
		if (res == NULL || rd_kafka_event_error(ev)) {
			err("CreateTopics: %s",
			    ev ? rd_kafka_event_error_string(ev) : "no answer in time");
			goto out;
		}
		tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
		for (size_t i = 0; i < cnt; i++) {
			rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);

			/* someone else made it meanwhile: it exists, as asked */
			if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
				err("creating topic %s: %s: %s", rd_kafka_topic_result_name(tr[i]),
				    rd_kafka_err2name(e), rd_kafka_topic_result_error_string(tr[i]));
				goto out;
			}
			if (!a->o.quiet && !e)
				err("created topic %s", rd_kafka_topic_result_name(tr[i]));
		}
	}
	/* the controller has the topics; wait until the brokers lead them */
	while ((r = topics_ready(a, NULL, created)) == 0) {
		if (now_s() >= deadline) {
			err("topics have no leader for every partition after %d ms",
			    MOCK_CREATE_TIMEOUT_MS);
			goto out;
		}
		nanosleep(&nap, NULL);
	}
	rc = r > 0 ? 0 : r;
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	if (q)
		rd_kafka_queue_destroy(q);
	if (ao)
		rd_kafka_AdminOptions_destroy(ao);
	for (int i = 0; i < nnew; i++)
		rd_kafka_NewTopic_destroy(nt[i]);
	return rc;
}

static struct timespec ms_to_ts(long ms)
{
	return (struct timespec){ .tv_sec = ms / 1000,
				  .tv_nsec = (ms % 1000) * 1000000L };
}

/* The pace thread: every MOCK_PACE_POLL_MS, the group's committed offsets.
 * Offsets only ever move forward here, so a consumer that commits an older
 * offset again cannot stall production behind what it already confirmed. */
static void *pace_main(void *arg)
{
	struct pacer *pc = arg;
	struct timespec nap = ms_to_ts(MOCK_PACE_POLL_MS);
	unsigned logged = 0;

	while (!atomic_load_explicit(&pc->stop, memory_order_relaxed)) {
		rd_kafka_resp_err_t e;
		bool moved = false;

		e = rd_kafka_committed(pc->rk, pc->list, MOCK_PACE_TIMEOUT_MS);
		if (e && logged++ < 3)
			err("pacing: reading the group's committed offsets: %s",
			    rd_kafka_err2str(e));
		for (int i = 0; !e && i < pc->list->cnt; i++) {
			const rd_kafka_topic_partition_t *el = &pc->list->elems[i];
			int64_t cur;

			/* RD_KAFKA_OFFSET_INVALID: no commit there yet */
			if (el->err || el->offset < 0)
				continue;
			/* this thread is the only writer: relaxed reads its own
			 * last store */
			cur = atomic_load_explicit(&pc->committed[el->partition],
						   memory_order_relaxed);
			if (el->offset > cur) {
				/* P1: pairs with the acquire in pace_allows() */
				atomic_store_explicit(&pc->committed[el->partition],
						      el->offset,
						      memory_order_release);
				moved = true;
			}
		}
		/* a full pipe already has a wake-up pending: ignore EAGAIN */
		if (moved && write(pc->wake_fd, "p", 1) < 0 && errno != EAGAIN)
			err("pacing: waking the main loop: %s", strerror(errno));
		/* serve the handle's own events (errors, logs) */
		rd_kafka_poll(pc->rk, 0);
		nanosleep(&nap, NULL);
	}
	return NULL;
}

/* Reads the topic's partitions and where their logs end and start now, and
 * starts the pace thread. The records counted from here are ours alone. */
static int pacer_start(struct app *a)
{
	struct pacer *pc = &a->pace;
	const char *topic = a->o.topics[0].name;
	const rd_kafka_metadata_t *md = NULL;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_t *mt = NULL;
	rd_kafka_resp_err_t e;
	char errstr[512];
	int rc = -EIO, pe;

	if (set_conf(conf, "bootstrap.servers", a->bootstraps) ||
	    set_conf(conf, "group.id", a->o.pace_group) ||
	    set_conf(conf, "enable.auto.commit", "false") ||
	    (a->o.quiet && set_conf(conf, "log_level", "3"))) {
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	pc->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (!pc->rk) {
		err("pacing: creating the group's consumer handle: %s", errstr);
		rd_kafka_conf_destroy(conf);
		return -EIO;
	}
	mt = rd_kafka_topic_new(pc->rk, topic, NULL);
	if (!mt) {
		err("pacing: topic %s: %s", topic,
		    rd_kafka_err2str(rd_kafka_last_error()));
		goto out;
	}
	e = rd_kafka_metadata(pc->rk, 0, mt, &md, MOCK_PACE_TIMEOUT_MS);
	if (e || md->topic_cnt != 1 || md->topics[0].err ||
	    md->topics[0].partition_cnt <= 0) {
		err("pacing: metadata of topic %s: %s", topic,
		    rd_kafka_err2str(e ? e
				       : md->topic_cnt == 1 ? md->topics[0].err
							    : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
		goto out;
	}
	pc->nparts = md->topics[0].partition_cnt;
	pc->base = calloc((size_t)pc->nparts, sizeof(*pc->base));
	pc->sent = calloc((size_t)pc->nparts, sizeof(*pc->sent));
	pc->committed = calloc((size_t)pc->nparts, sizeof(*pc->committed));
	pc->list = rd_kafka_topic_partition_list_new(pc->nparts);
	if (!pc->base || !pc->sent || !pc->committed || !pc->list) {
		err("pacing: out of memory for %" PRId32 " partitions", pc->nparts);
		goto out;
	}
	for (int32_t p = 0; p < pc->nparts; p++) {
		int64_t lo, hi;

		e = rd_kafka_query_watermark_offsets(pc->rk, topic, p, &lo, &hi,
						     MOCK_PACE_TIMEOUT_MS);
		if (e) {
			err("pacing: watermarks of %s [%" PRId32 "]: %s", topic,
			    p, rd_kafka_err2str(e));
			goto out;
		}
		pc->base[p] = hi;
		/* until the group commits here, it is read from the start */
		atomic_init(&pc->committed[p], lo);
		rd_kafka_topic_partition_list_add(pc->list, topic, p);
	}
	pc->wake_fd = a->evfd[1];
	atomic_init(&pc->stop, false);
	pe = pthread_create(&pc->thread, NULL, pace_main, pc);
	if (pe) {
		err("pacing: starting its thread: %s", strerror(pe));
		goto out;
	}
	pthread_setname_np(pc->thread, "k2mc-mock-pace");
	pc->running = true;
	rc = 0;
out:
	if (md)
		rd_kafka_metadata_destroy(md);
	if (mt)
		rd_kafka_topic_destroy(mt);
	return rc; /* on failure app_destroy() frees what was made */
}

static void pacer_stop(struct pacer *pc)
{
	if (pc->running) {
		atomic_store_explicit(&pc->stop, true, memory_order_relaxed);
		pthread_join(pc->thread, NULL);
		pc->running = false;
	}
	if (pc->list)
		rd_kafka_topic_partition_list_destroy(pc->list);
	/* never subscribed: nothing to leave, no consumer_close needed */
	if (pc->rk)
		rd_kafka_destroy(pc->rk);
	free(pc->base);
	free(pc->sent);
	free((void *)pc->committed);
	*pc = (struct pacer){ .wake_fd = -1 };
}

/* May one more record go to partition p without its log end getting
 * pace_lead or more past the group's committed offset? */
static bool pace_allows(const struct app *a, int32_t p)
{
	const struct pacer *pc = &a->pace;
	/* pairs with P1 in pace_main() */
	int64_t c = atomic_load_explicit(&pc->committed[p], memory_order_acquire);

	return pc->base[p] + (int64_t)pc->sent[p] - c < (int64_t)a->o.pace_lead;
}

/* Non-blocking: has SIGTERM/SIGINT (or the parent-death signal) arrived? */
static bool stop_requested(struct app *a)
{
	struct signalfd_siginfo si;

	return read(a->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si);
}

static long long realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Hands the next generated record to librdkafka. A record that meets a full
 * queue (or pacing) stays pending and is retried as is, so the PRNG stream
 * and the sequence do not depend on timing. Returns 0, -ENOBUFS (queue full),
 * -EAGAIN (pacing: its partition is too far ahead of the group) or -EIO. */
static int produce_one(struct app *a)
{
	char key[GEN_KEY_BUF];
	int32_t part = 0;
	int klen;

	if (!a->pend_valid) {
		gen_next(&a->gen, &a->pend);
		a->pend_valid = true;
	}
	klen = gen_key(key, sizeof(key), a->pend.idx);
	if (a->pace.rk) {
		/* the partition librdkafka's default partitioner will pick:
		 * records still go out with RD_KAFKA_PARTITION_UA, so pacing
		 * cannot change where they land (dr_msg_cb checks we agree) */
		part = rd_kafka_msg_partitioner_consistent_random(
			a->rkt, key, (size_t)klen, a->pace.nparts, NULL, NULL);
		if (!pace_allows(a, part))
			return -EAGAIN;
	}
	if (!a->pend.dead)
		(a->o.json_values ? gen_json_value : gen_value)(a->valbuf, a->o.value_size, key,
								a->pend.seq);
	/* partition left to the default partitioner: the same key always
	 * lands on the same partition */
	if (rd_kafka_produce(a->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
			     a->pend.dead ? NULL : a->valbuf,
			     a->pend.dead ? 0 : a->o.value_size, key,
			     (size_t)klen, NULL) != 0) {
		rd_kafka_resp_err_t e = rd_kafka_last_error();

		if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
			return -ENOBUFS;
		err("produce to %s: %s", a->o.topics[0].name,
		    rd_kafka_err2str(e));
		return -EIO;
	}
	a->pend_valid = false;
	a->produced++;
	a->job.sent++;
	if (a->pace.rk) {
		a->pace.sent[part]++;
		a->pace.blocked = false;
	}
	if (a->last) {
		if (a->txn.open) {
			a->txn.undo_idx[a->txn.in_txn] = a->pend.idx;
			a->txn.undo_last[a->txn.in_txn] = a->last[a->pend.idx];
		}
		a->last[a->pend.idx] = ((a->pend.seq + 1) << 1) |
				       (a->pend.dead ? 1u : 0u);
	}
	if (a->txn.open)
		a->txn.in_txn++;
	return 0;
}

static int txn_failed(struct app *a, const char *call, rd_kafka_error_t *e)
{
	err("%s: %s%s", call, rd_kafka_error_string(e),
	    rd_kafka_error_is_fatal(e) ? " (fatal)" : "");
	rd_kafka_error_destroy(e);
	/* the log no longer matches what --expect tracked */
	a->tainted = true;
	return -EIO;
}

/* --txn-abort-every: one transaction of up to --txn-size records: begin,
 * produce, then commit, or (every Nth) flush and abort, and put last[] back
 * as it was before the transaction. Synchronous: signals and events are
 * looked at between transactions. Any error ends production (the expected
 * state would be unknown). */
static int txn_step(struct app *a, int *timeout_ms)
{
	struct job *j = &a->job;
	uint64_t n = j->target - j->sent;
	rd_kafka_resp_err_t fe;
	rd_kafka_error_t *e;
	int r;

	*timeout_ms = -1;
	if (n == 0)
		return 0; /* the loop waits for the last delivery reports */
	if (n > a->o.txn_size)
		n = a->o.txn_size;
	e = rd_kafka_begin_transaction(a->prod);
	if (e)
		return txn_failed(a, "begin_transaction", e);
	a->txn.open = true;
	a->txn.in_txn = 0;
	while (a->txn.in_txn < n) {
		r = produce_one(a);
		if (r == -ENOBUFS) {
			rd_kafka_poll(a->prod, 10); /* delivery reports make room */
			continue;
		}
		if (r)
			return r;
	}
	a->txn.txns++;
	if (a->o.txn_abort_every > 0 && a->txn.txns % a->o.txn_abort_every == 0) {
		/* abort_transaction with records still unsent fails with
		 * INVALID_TXN_STATE (librdkafka issue 4849): flush first */
		fe = rd_kafka_flush(a->prod, MOCK_TXN_TIMEOUT_MS);
		if (fe) {
			err("flush before abort_transaction: %s", rd_kafka_err2str(fe));
			a->tainted = true;
			return -EIO;
		}
		e = rd_kafka_abort_transaction(a->prod, MOCK_TXN_TIMEOUT_MS);
		if (e)
			return txn_failed(a, "abort_transaction", e);
		/* newest first, so each key gets the value it had before */
		for (uint64_t i = a->last ? a->txn.in_txn : 0; i > 0; i--)
			a->last[a->txn.undo_idx[i - 1]] = a->txn.undo_last[i - 1];
		a->txn.aborted_txns++;
		a->txn.aborted_records += a->txn.in_txn;
	} else {
		e = rd_kafka_commit_transaction(a->prod, MOCK_TXN_TIMEOUT_MS);
		if (e)
			return txn_failed(a, "commit_transaction", e);
	}
	a->txn.open = false;
	*timeout_ms = 0;
	return 0;
}

static int job_start(struct app *a, uint64_t n, bool initial)
{
	if (!a->prod && producer_start(a))
		return -EIO;
	if (a->o.pace_group && !a->pace.rk && pacer_start(a))
		return -EIO;
	/* for a harness that lines up its consumers' clocks with ours */
	if (initial && n > 0)
		out("produce_start_ms=%lld", realtime_ms());
	a->job = (struct job){
		.active = true,
		.initial = initial,
		.target = n,
		.acked0 = a->acked,
		.failed0 = a->failed,
		.t0 = now_s(),
	};
	return 0;
}

/* Produces what the job may produce now and sets *timeout_ms to how long the
 * caller may wait for events before calling again: 0 after a burst (so that
 * signals and commands are looked at between bursts), the time to the next
 * record under --rate, or -1 when only delivery reports can move the job on
 * (queue full, or everything sent). */
static int job_step(struct app *a, int *timeout_ms)
{
	struct job *j = &a->job;
	int r;

	if (a->o.txn)
		return txn_step(a, timeout_ms);
	*timeout_ms = -1;
	for (unsigned burst = 0; j->sent < j->target; burst++) {
		if (burst == MOCK_BURST) {
			*timeout_ms = 0;
			return 0;
		}
		if (a->o.rate > 0) {
			/* record i is due at t0 + i / rate: pacing against the
			 * clock catches up after a slow iteration instead of
			 * accumulating the delay */
			double ahead = j->t0 + (double)j->sent / a->o.rate -
				       now_s();

			if (ahead > 0) {
				*timeout_ms = (int)(ahead * 1000.0) + 1;
				return 0;
			}
		}
		r = produce_one(a);
		if (r == -ENOBUFS)
			return 0; /* the delivery reports that make room wake us */
		if (r == -EAGAIN) {
			if (!a->pace.blocked) {
				a->pace.blocked = true;
				a->pace.waits++;
			}
			/* the pace thread wakes us when an offset moves; the
			 * timeout is only a fallback */
			*timeout_ms = MOCK_PACE_POLL_MS;
			return 0;
		}
		if (r)
			return r;
	}
	return 0;
}

static bool job_done(const struct app *a)
{
	/* one job at a time, so everything outstanding is this job's */
	return a->job.active && a->job.sent == a->job.target &&
	       a->acked + a->failed == a->produced;
}

/* Reports a finished job: for --produce the "produced=" and "expect=" lines
 * (a failure is fatal: exit 1), for a command its one answer line. */
static int job_finish(struct app *a)
{
	struct job *j = &a->job;
	uint64_t acked = a->acked - j->acked0, failed = a->failed - j->failed0;
	double dt = now_s() - j->t0;

	j->active = false;
	if (j->initial) {
		if (j->target > 0 && a->o.txn)
			out("produced=%" PRIu64 " acked=%" PRIu64 " failed=%" PRIu64
			    " txns=%" PRIu64 " aborted_txns=%" PRIu64 " aborted_records=%" PRIu64,
			    j->sent, acked, failed, a->txn.txns, a->txn.aborted_txns,
			    a->txn.aborted_records);
		else if (j->target > 0 && a->pace.rk)
			out("produced=%" PRIu64 " acked=%" PRIu64
			    " failed=%" PRIu64 " paced_waits=%" PRIu64,
			    j->sent, acked, failed, a->pace.waits);
		else if (j->target > 0)
			out("produced=%" PRIu64 " acked=%" PRIu64
			    " failed=%" PRIu64,
			    j->sent, acked, failed);
		if (failed > 0) {
			err("%" PRIu64 " records failed delivery", failed);
			return -EIO;
		}
		if (!a->o.quiet && j->target > 0)
			err("produced %" PRIu64 " records to %s in %.2f s "
			    "(%.0f records/s)",
			    j->sent, a->o.topics[0].name, dt,
			    dt > 0 ? (double)j->sent / dt : 0.0);
		if (a->o.expect_path && write_expect(a, true))
			return -EIO;
		return 0;
	}
	if (failed > 0 || a->tainted) {
		out("error produce failed=%" PRIu64 " acked=%" PRIu64, failed,
		    acked);
		return 0;
	}
	/* the expect file is rewritten before answering, so a client that
	 * reads "ok produce" can read the file right away; the answer is the
	 * command's only line */
	if (a->o.expect_path && write_expect(a, false)) {
		out("error writing %s failed", a->o.expect_path);
		return 0;
	}
	out("ok produce acked=%" PRIu64, acked);
	return 0;
}

static void warn_retention(const struct app *a)
{
	const struct opts *o = &a->o;
	double per_part = (double)o->produce * (o->value_size + 40.0) /
			  o->topics[0].parts;

	if (o->pace_group) {
		double lead = (double)o->pace_lead * (o->value_size + 40.0);

		/* a message set holds one record or more: 100,000 records
		 * never exceed the mock's 100,000 message sets */
		if (lead > MOCK_RETENTION_WARN || o->pace_lead > 100000)
			err("warning: --pace-lead %" PRIu64 " is about %.1f MiB "
			    "per partition, beyond the mock's retention (5 MiB or "
			    "100,000 message sets): records may be lost",
			    o->pace_lead, lead / (1024 * 1024));
		return;
	}
	if (o->rate > 0 || per_part <= MOCK_RETENTION_WARN)
		return;
	err("warning: about %.1f MiB per partition of %s exceeds the mock's "
	    "5 MiB retention; a consumer starting afterwards misses the oldest "
	    "records (use --rate and consume while producing, or more "
	    "partitions)",
	    per_part / (1024 * 1024), o->topics[0].name);
}

/* Control command with a mock-cluster broker id ("-1" = all brokers). */
static int parse_broker(const char *s, int32_t *id)
{
	int64_t v;

	if (!s || parse_i64(s, -1, INT32_MAX, &v))
		return -EINVAL;
	*id = (int32_t)v;
	return 0;
}

/* Runs one control command. Every command gets exactly one answer line.
 * "produce" runs one at a time, in order, and is answered when its records
 * are acknowledged; the other commands are answered at once, also while a
 * "produce" runs (a test may need "broker-up" to let it finish). "quit" is
 * answered by the loop once the queued "produce" commands are done.
 * Returns 1 for quit, negative when the producer could not start, else 0. */
static int handle_command(struct app *a, char *line)
{
	char *save = NULL;
	char *cmd = strtok_r(line, " \t\r", &save);
	char *a1 = strtok_r(NULL, " \t\r", &save);
	char *a2 = strtok_r(NULL, " \t\r", &save);
	char *a3 = strtok_r(NULL, " \t\r", &save);
	char *extra = strtok_r(NULL, " \t\r", &save);
	rd_kafka_resp_err_t e;
	int32_t id = 0;
	int64_t v1 = 0, v2 = 0;

	if (!cmd) {
		/* answered too, so that a client can stay in lock step */
		out("error empty command");
		return 0;
	}
	if (strcmp(cmd, "quit") == 0)
		return 1;
	if (strcmp(cmd, "produce") == 0) {
		if (!a1 || a2 || parse_i64(a1, 0, INT64_MAX / 4, &v1)) {
			out("error usage: produce N");
			return 0;
		}
		if (a->job.active) {
			if (a->nqueued == MOCK_QUEUED_MAX) {
				out("error produce: %d commands already queued",
				    MOCK_QUEUED_MAX);
				return 0;
			}
			a->queued[a->nqueued++] = (uint64_t)v1;
			return 0;
		}
		if (job_start(a, (uint64_t)v1, false)) {
			out("error produce: the producer could not start");
			return -EIO;
		}
		return 0; /* answered by job_finish once acknowledged */
	}

	if (strcmp(cmd, "broker-down") == 0 || strcmp(cmd, "broker-up") == 0) {
		if (parse_broker(a1, &id) || a2) {
			out("error usage: %s ID", cmd);
			return 0;
		}
	} else if (strcmp(cmd, "rtt") == 0) {
		if (parse_broker(a1, &id) || !a2 ||
		    parse_i64(a2, 0, INT_MAX, &v1) || a3) {
			out("error usage: rtt ID MS");
			return 0;
		}
	} else if (strcmp(cmd, "errors") == 0) {
		if (!a1 || parse_i64(a1, 0, INT16_MAX, &v1) || !a2 ||
		    parse_i64(a2, INT32_MIN, INT32_MAX, &v2) || !a3 ||
		    extra) {
			out("error usage: errors APIKEY ERRCODE COUNT");
			return 0;
		}
	} else {
		out("error unknown command %s", cmd);
		return 0;
	}
	if (!a->mc) {
		out("error %s: no mock cluster (-b was given)", cmd);
		return 0;
	}

	if (strcmp(cmd, "broker-down") == 0) {
		e = rd_kafka_mock_broker_set_down(a->mc, id);
	} else if (strcmp(cmd, "broker-up") == 0) {
		e = rd_kafka_mock_broker_set_up(a->mc, id);
	} else if (strcmp(cmd, "rtt") == 0) {
		e = rd_kafka_mock_broker_set_rtt(a->mc, id, (int)v1);
	} else {
		uint64_t cnt;
		rd_kafka_resp_err_t *errs;

		if (parse_u64("errors COUNT", a3, 1, 1000000, &cnt)) {
			out("error usage: errors APIKEY ERRCODE COUNT (COUNT 1..1000000)");
			return 0;
		}
		errs = malloc(cnt * sizeof(*errs));
		if (!errs) {
			out("error out of memory");
			return 0;
		}
		for (uint64_t i = 0; i < cnt; i++)
			errs[i] = (rd_kafka_resp_err_t)v2;
		rd_kafka_mock_push_request_errors_array(a->mc, (int16_t)v1,
							(size_t)cnt, errs);
		free(errs);
		out("ok errors %" PRId64 " %" PRId64 " %" PRIu64, v1, v2, cnt);
		return 0;
	}
	if (e) {
		out("error %s %" PRId32 ": %s", cmd, id, rd_kafka_err2str(e));
		return 0;
	}
	if (strcmp(cmd, "rtt") == 0)
		out("ok rtt %" PRId32 " %" PRId64, id, v1);
	else
		out("ok %s %" PRId32, cmd, id);
	return 0;
}

/* Commands read so far, split into lines; a line longer than the buffer is
 * answered with an error and skipped. */
struct cmdbuf {
	char buf[MOCK_CMD_MAX];
	size_t len;
	bool discarding;
};

/* Reads what stdin has and runs the complete lines. Returns 1 to stop
 * (quit), 0 to go on, -EPIPE at EOF (after running a last unterminated line),
 * or another negative errno. */
static int read_commands(struct app *a, struct cmdbuf *cb)
{
	ssize_t n = read(STDIN_FILENO, cb->buf + cb->len,
			 sizeof(cb->buf) - 1 - cb->len);
	char *start, *nl;
	int h;

	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return 0;
		err("reading stdin: %s", strerror(errno));
		return -errno;
	}
	if (n == 0) {
		if (cb->len > 0 && !cb->discarding) {
			cb->buf[cb->len] = '\0';
			cb->len = 0;
			h = handle_command(a, cb->buf);
			if (h != 0)
				return h;
		}
		return -EPIPE;
	}
	cb->len += (size_t)n;
	start = cb->buf;
	while ((nl = memchr(start, '\n', cb->len - (size_t)(start - cb->buf)))) {
		*nl = '\0';
		if (cb->discarding) {
			cb->discarding = false;
		} else {
			h = handle_command(a, start);
			if (h != 0) {
				cb->len = 0;
				return h;
			}
		}
		start = nl + 1;
	}
	cb->len -= (size_t)(start - cb->buf);
	memmove(cb->buf, start, cb->len);
	if (cb->len == sizeof(cb->buf) - 1) {
		if (!cb->discarding)
			out("error command longer than %d bytes",
			    MOCK_CMD_MAX - 2);
		cb->discarding = true;
		cb->len = 0;
	}
	return 0;
}

/* The one event loop: runs the current production job, serves librdkafka's
 * events (woken through the event pipe), signals and commands. Returns 0 on a
 * normal stop (signal, quit, stdin EOF, or the end of --exit-after-produce),
 * negative when production failed. */
static int run(struct app *a)
{
	struct cmdbuf cb = { .len = 0 };
	bool stdin_open = a->o.stdin_control;
	bool quit = false;
	char drain[256];
	int r;

	for (;;) {
		struct pollfd pfd[3];
		nfds_t nfds = 0;
		int timeout = -1, ev = -1, in = -1;

		if (a->job.active) {
			r = job_step(a, &timeout);
			if (r)
				return r;
			if (job_done(a)) {
				bool initial = a->job.initial;

				r = job_finish(a);
				if (r)
					return r;
				if (initial && a->o.exit_after_produce)
					return 0;
				if (a->nqueued > 0) {
					uint64_t n = a->queued[0];

					a->nqueued--;
					memmove(a->queued, a->queued + 1,
						a->nqueued * sizeof(a->queued[0]));
					if (job_start(a, n, false))
						return -EIO;
					continue;
				}
				/* quit or EOF came while producing */
				if (a->o.stdin_control && !stdin_open)
					goto stop;
				continue;
			}
		}

		pfd[nfds] = (struct pollfd){ .fd = a->sfd, .events = POLLIN };
		nfds++;
		if (a->evfd[0] >= 0) {
			ev = (int)nfds;
			pfd[nfds++] = (struct pollfd){ .fd = a->evfd[0],
						       .events = POLLIN };
		}
		/* commands wait until --produce is done, so that its lines
		 * come first on stdout */
		if (stdin_open && !(a->job.active && a->job.initial)) {
			in = (int)nfds;
			pfd[nfds++] = (struct pollfd){ .fd = STDIN_FILENO,
						       .events = POLLIN };
		}
		if (poll(pfd, nfds, timeout) < 0 && errno != EINTR) {
			err("poll: %s", strerror(errno));
			return -errno;
		}
		if (ev >= 0 && pfd[ev].revents)
			while (read(a->evfd[0], drain, sizeof(drain)) > 0)
				;
		if (a->prod)
			rd_kafka_poll(a->prod, 0);
		if (a->mock_rk)
			rd_kafka_poll(a->mock_rk, 0);
		if (a->fatal)
			return -EIO;
		if (stop_requested(a))
			return 0;
		if (in >= 0 && pfd[in].revents) {
			r = read_commands(a, &cb);
			if (r == 1 || r == -EPIPE) {
				/* the "produce" commands already read are
				 * finished and answered first */
				stdin_open = false;
				quit = r == 1;
				if (!a->job.active)
					goto stop;
			} else if (r < 0) {
				return r;
			}
		}
	}
stop:
	if (quit)
		out("ok quit");
	return 0;
}

static void app_destroy(struct app *a)
{
	/* its handle talks to the cluster: gone before the cluster is */
	pacer_stop(&a->pace);
	if (a->prod) {
		/* on a stop records may still be queued for a broker that is
		 * down: drop them rather than wait out their timeout */
		rd_kafka_purge(a->prod, RD_KAFKA_PURGE_F_QUEUE |
						RD_KAFKA_PURGE_F_INFLIGHT);
		rd_kafka_poll(a->prod, 0);
		if (a->rkt)
			rd_kafka_topic_destroy(a->rkt);
		rd_kafka_destroy(a->prod);
	}
	/* after the producer, the cluster's only client; rarely this takes a
	 * second inside librdkafka (its internal broker thread's wake-up) */
	if (a->mc)
		rd_kafka_mock_cluster_destroy(a->mc);
	if (a->mock_rk)
		rd_kafka_destroy(a->mock_rk);
	free(a->bootstraps);
	free(a->last);
	free(a->txn.undo_idx);
	free(a->txn.undo_last);
	free(a->valbuf);
	if (a->sfd >= 0)
		close(a->sfd);
	if (a->evfd[0] >= 0)
		close(a->evfd[0]);
	if (a->evfd[1] >= 0)
		close(a->evfd[1]);
}

/* --port: a fixed bootstrap address for trying k2mc by hand. librdkafka's
 * mock brokers bind ports the kernel picks and offer no way to choose one,
 * so a listener on 127.0.0.1:P relays each connection, byte for byte, to the
 * first mock broker. Clients only bootstrap through it: the metadata they
 * get back names the brokers' own ports, which they use from then on. The
 * relay threads are detached and live as long as their two sockets; the
 * process exit ends them. */
struct relay_pair {
	int a, b;
};

static void *relay_pump(void *arg)
{
	struct relay_pair p = *(struct relay_pair *)arg;
	struct pollfd fds[2] = { { .fd = p.a, .events = POLLIN },
				 { .fd = p.b, .events = POLLIN } };
	char buf[65536];

	free(arg);
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			ssize_t n, off = 0;

			if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(fds[i].fd, buf, sizeof(buf));
			if (n <= 0)
				goto done;
			while (off < n) {
				ssize_t w = write(fds[1 - i].fd, buf + off,
						  (size_t)(n - off));
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					goto done;
				off += w;
			}
		}
	}
done:
	close(p.a);
	close(p.b);
	return NULL;
}

struct relay {
	int lfd;
	struct sockaddr_in upstream;
};

static void *relay_accept(void *arg)
{
	struct relay *r = arg;

	for (;;) {
		struct relay_pair *p;
		pthread_t t;
		int c = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC), u;

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			err("--port: accept: %s", strerror(errno));
			return NULL;
		}
		u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		p = malloc(sizeof(*p));
		if (u < 0 || !p ||
		    connect(u, (struct sockaddr *)&r->upstream,
			    sizeof(r->upstream)) != 0) {
			err("--port: connecting to the mock broker: %s",
			    strerror(errno));
			goto drop;
		}
		p->a = c;
		p->b = u;
		if (pthread_create(&t, NULL, relay_pump, p) != 0)
			goto drop;
		pthread_detach(t);
		continue;
drop:
		free(p);
		if (u >= 0)
			close(u);
		close(c);
	}
}

/* Listens on 127.0.0.1:port and relays to the first address of bootstraps
 * ("127.0.0.1:NNNN,..."). */
static int relay_start(int port, const char *bootstraps)
{
	static struct relay r; /* the accept thread's, for the process life */
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons((uint16_t)port) };
	const char *colon = strchr(bootstraps, ':');
	pthread_t t;
	int on = 1;

	if (!colon || strncmp(bootstraps, "127.0.0.1:", 10) != 0) {
		err("--port: unexpected mock bootstrap \"%s\"", bootstraps);
		return -EINVAL;
	}
	r.upstream = (struct sockaddr_in){ .sin_family = AF_INET,
					   .sin_port = htons((uint16_t)atoi(colon + 1)) };
	inet_pton(AF_INET, "127.0.0.1", &r.upstream.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	r.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (r.lfd < 0 ||
	    setsockopt(r.lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
	    bind(r.lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(r.lfd, 16) != 0) {
		err("--port %d: %s", port, strerror(errno));
		return -errno;
	}
	if (pthread_create(&t, NULL, relay_accept, &r) != 0) {
		err("--port: cannot start its thread");
		return -EAGAIN;
	}
	pthread_detach(t);
	return 0;
}

int main(int argc, char **argv)
{
	struct app a = { .sfd = -1, .evfd = { -1, -1 }, .pace = { .wake_fd = -1 } };
	sigset_t set;
	int rc = 1, r;

	/* the spawning test may die without stopping us: follow it */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
		err("prctl(PR_SET_PDEATHSIG): %s", strerror(errno));
	/* a reader that stops reading our stdout must not kill us mid-write */
	signal(SIGPIPE, SIG_IGN);
	/* Block the stop signals before librdkafka starts its threads (which
	 * inherit the mask), so that they are only ever read from the
	 * signalfd by the main thread's event loop. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		err("sigprocmask: %s", strerror(errno));
		return 1;
	}
	a.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (a.sfd < 0) {
		err("signalfd: %s", strerror(errno));
		goto out;
	}

	r = parse_args(&a.o, argc, argv);
	if (r != 0) {
		usage(r > 0 ? stdout : stderr);
		rc = r > 0 ? 0 : 2;
		goto out;
	}

	if (pipe2(a.evfd, O_NONBLOCK | O_CLOEXEC) != 0) {
		err("pipe2: %s", strerror(errno));
		goto out;
	}

	gen_init(&a.gen, a.o.seed, a.o.keys, a.o.value_size, a.o.tombstone_pct);
	a.valbuf = malloc(a.o.value_size + 1);
	if (!a.valbuf)
		goto out;
	if (a.o.expect_path) {
		a.last = calloc(a.o.keys, sizeof(*a.last));
		if (!a.last) {
			err("out of memory for %" PRIu32 " keys", a.o.keys);
			goto out;
		}
		if (a.o.txn) {
			a.txn.undo_idx = calloc(a.o.txn_size, sizeof(*a.txn.undo_idx));
			a.txn.undo_last = calloc(a.o.txn_size, sizeof(*a.txn.undo_last));
			if (!a.txn.undo_idx || !a.txn.undo_last) {
				err("out of memory for --txn-size %" PRIu64, a.o.txn_size);
				goto out;
			}
		}
	}

	if (a.o.bootstrap) {
		a.bootstraps = strdup(a.o.bootstrap);
		if (!a.bootstraps)
			goto out;
		/* the topics exist, and have leaders, before the bootstrap line */
		if (producer_start(&a) || topics_ensure(&a))
			goto out;
	} else if (cluster_start(&a)) {
		goto out;
	}
	if (a.o.port) {
		char *fixed;

		if (relay_start(a.o.port, a.bootstraps) ||
		    asprintf(&fixed, "127.0.0.1:%d", a.o.port) < 0)
			goto out;
		free(a.bootstraps);
		a.bootstraps = fixed;
	}
	out("bootstrap=%s", a.bootstraps);
	if (a.o.bootstrap_path) {
		char line[4096];

		snprintf(line, sizeof(line), "%s\n", a.bootstraps);
		r = write_file_atomic(a.o.bootstrap_path, line);
		if (r) {
			err("writing %s: %s", a.o.bootstrap_path, strerror(-r));
			goto out;
		}
	}

	if (a.o.produce > 0 || a.o.expect_path) {
		warn_retention(&a);
		if (job_start(&a, a.o.produce, true))
			goto out;
	} else if (a.o.exit_after_produce) {
		rc = 0;
		goto out;
	}
	rc = run(&a) == 0 ? 0 : 1;
out:
	app_destroy(&a);
	return rc;
}
