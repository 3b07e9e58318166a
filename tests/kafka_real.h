/* The real Apache Kafka backend of the integration harness (issue 21): a
 * KRaft broker (or three) started through tests/kafka/kafka-broker, topics
 * made with the admin API, and the one call that gives a suite a cluster
 * plus a producer for either backend, chosen by K2MC_KAFKA=mock|real.
 * Builds on harness.h (processes, waits, checks); no Criterion here either.
 * Needs `make kafka` (the broker's jars in build/kafka/VERSION, java, kcat)
 * for the real backend only. */
#ifndef K2MC_TEST_KAFKA_REAL_H
#define K2MC_TEST_KAFKA_REAL_H

#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

#define H_KAFKA_REAL_MAX_BROKERS 3

struct h_kafka_real_opts {
	const char *version; /* NULL: $K2MC_KAFKA_VERSION, else the launcher's (4.1.1) */
	int brokers;         /* 1 (0 means 1) or 3: three JVMs, a three-voter quorum,
				replication factor 3, min.insync.replicas 2 */
	int sasl_ssl;        /* also SASL_SSL and SASL_PLAINTEXT listeners: SCRAM-SHA-512
				and -256 users, over TLS and in the clear */
	int timeout_ms;      /* readiness deadline; 0: 120000 */
	/* broker properties for every node ("name=value", NULL-terminated, or
	   NULL): the launcher's --config, over its own lines */
	const char *const *config;
};

/* A running cluster. The launcher is a registered child of this process
 * (h_cleanup and the watchdog SIGKILL it); the JVMs are its children, each
 * with PR_SET_PDEATHSIG=SIGKILL towards it, so they end with it. They are
 * signalled only through the launcher (h_kafka_real_kill_broker), which is
 * their parent and so can never hit a recycled PID; pid[] is for reading
 * /proc. */
struct h_kafka_real {
	struct h_proc proc; /* the launcher, --control on its stdin */
	size_t out_off;     /* how far its stdout has been read */
	char version[32];
	char dir[H_PATH_MAX]; /* config, logs (nodeN/server.log), data */
	char bootstrap[256];  /* PLAINTEXT listeners, 127.0.0.1:PORT,... */
	int nbrokers;
	pid_t pid[H_KAFKA_REAL_MAX_BROKERS]; /* the JVMs, node i + 1 */
	int port[H_KAFKA_REAL_MAX_BROKERS];
	int64_t format_ms; /* StorageTool format, all nodes */
	int64_t start_ms;  /* the JVMs' launch to every node's metadata answer */
	int64_t total_ms;  /* h_kafka_real_start, all included */
	/* with sasl_ssl, else empty */
	char sasl_bootstrap[256];       /* SASL_SSL listeners */
	char sasl_plain_bootstrap[256]; /* SASL_PLAINTEXT listeners */
	char sasl_user[64];
	char sasl_password[128];
	char ca[H_PATH_MAX]; /* the CA certificate (PEM) the brokers' certificate chains to */
};

/* Starts the launcher (K2MC_KAFKA_LAUNCHER, default tests/kafka/kafka-broker)
 * with a fresh directory under the harness's temp dir and waits for its
 * "ready" line; fills kr and logs the start time on stderr
 * ("harness: kafka 4.1.1 ... ready in N ms"). 0, -ETIMEDOUT, -ESRCH (the
 * launcher gave up: why is in its .err file, kr->proc.err_path), -errno. */
int h_kafka_real_start(struct h_kafka_real *kr, const struct h_kafka_real_opts *o);
/* Stops the cluster and the launcher and reaps it. grace_ms 0: SIGKILL
 * every broker (tests need nothing from a graceful stop); else SIGTERM,
 * which the launcher turns into SIGKILL after 10 s. 0 or -errno. */
int h_kafka_real_stop(struct h_kafka_real *kr, int grace_ms);
/* SIGKILLs broker i (0-based) and waits until the launcher has reaped it. */
int h_kafka_real_kill_broker(struct h_kafka_real *kr, int i);
/* Starts broker i again on its ports and log directory and waits until it
 * answers metadata naming itself; kr->pid[i] is the new JVM. *start_ms (may
 * be NULL) gets how long that took. */
int h_kafka_real_restart_broker(struct h_kafka_real *kr, int i, int timeout_ms,
				int64_t *start_ms);
/* CPU seconds (user + system, /proc/PID/stat) broker i has used; -1 if it
 * is not running. */
double h_kafka_real_cpu_s(const struct h_kafka_real *kr, int i);

/* Creates topic (partitions, replication factor, -1 for the broker's
 * default; config: "name=value" strings, NULL-terminated, or NULL) with
 * rd_kafka_CreateTopics and waits until every partition has a leader. A
 * topic that exists already is an error (-EEXIST). 0 or -errno, reason in
 * err. */
int h_kafka_create_topic(const char *bootstrap, const char *topic, int partitions,
			 int replication, const char *const config[], int timeout_ms, char *err,
			 size_t errlen);

/* The node id (1-based, as the launcher numbers them) leading each of
 * partitions 0..n-1 of topic, from a metadata request; -1 for a partition
 * without a leader. 0 or -errno, reason in err. */
int h_kafka_leaders(const char *bootstrap, const char *topic, int n, int32_t *leader,
		    int timeout_ms, char *err, size_t errlen);

/* Grows topic to `total` partitions (rd_kafka_CreatePartitions) and waits
 * until every one has a leader. 0 or -errno, reason in err. */
int h_kafka_create_partitions(const char *bootstrap, const char *topic, int total,
			      int timeout_ms, char *err, size_t errlen);

/* Sets one configuration of topic (IncrementalAlterConfigs, SET), e.g.
 * retention.bytes. 0 or -errno, reason in err. */
int h_kafka_alter_topic_config(const char *bootstrap, const char *topic, const char *name,
			       const char *value, int timeout_ms, char *err, size_t errlen);

/* Reads partitions 0..n-1 of topic from their log start to their end
 * (read_committed) and counts the records a consumer gets: records[p],
 * and the log start offsets in start[p] (either may be NULL). On a
 * compacted or transactional partition, records < end - start. 0 or -errno. */
int h_kafka_count_records(const char *bootstrap, const char *topic, int n, int64_t *records,
			  int64_t *start, int timeout_ms, char *err, size_t errlen);

/* ---- one call for either backend ------------------------------------------------*/

enum h_kafka_backend { H_KAFKA_MOCK, H_KAFKA_REAL };

/* From K2MC_KAFKA: "mock" (also when unset or empty) or "real"; any other
 * value aborts the test binary with a message (a typo must not silently
 * test the mock). */
enum h_kafka_backend h_kafka_backend(void);
const char *h_kafka_backend_name(enum h_kafka_backend b);

/* A Kafka cluster and k2mc-mock producing to it. mock: the mock cluster
 * lives in k2mc-mock itself. real: a broker from h_kafka_real_start, and
 * k2mc-mock -b BOOTSTRAP, which creates its --topic topics (with
 * --replication / --topic-config) before its bootstrap line. Either way
 * mock.bootstrap is the address to give k2mc and h_kafka_open, and
 * h_mock_wait_produced / h_mock_command work on mock as before; commands
 * that drive the mock cluster (broker-down, rtt, errors) answer "error" on
 * a real broker. */
struct h_kcluster {
	enum h_kafka_backend backend;
	struct h_kafka_real real; /* backend H_KAFKA_REAL only */
	struct h_mock mock;       /* the producer */
};

/* Where a suite calls h_mock_start(&mk, args, stdin_control, timeout_ms),
 * h_kcluster_start(&kc, NULL, args, stdin_control, timeout_ms) with the same
 * k2mc-mock args runs on the backend K2MC_KAFKA names. ro: broker options
 * for the real backend (NULL: one broker, $K2MC_KAFKA_VERSION);
 * timeout_ms bounds k2mc-mock's start, the broker's has its own. 0 or
 * -errno. */
int h_kcluster_start(struct h_kcluster *kc, const struct h_kafka_real_opts *ro,
		     const char *const args[], int stdin_control, int timeout_ms);
/* Another producer into a running cluster of either backend (bootstrap:
 * kc.mock.bootstrap, or a real broker's): k2mc-mock -b BOOTSTRAP args. */
int h_producer_start(struct h_mock *mk, const char *bootstrap, const char *const args[],
		     int timeout_ms);

#endif
