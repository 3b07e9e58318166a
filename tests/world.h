/* A test world in one call for the integration suites: Kafka (the k2mc-mock
 * cluster, or a real broker when K2MC_KAFKA=real), memcached servers and a
 * k2mc-mock producer, started by world_start; k2mc started and finished with
 * the world's addresses; the shared checks (the cache equals the last record
 * per key, committed = end on every partition, the dead letters). Built on
 * harness.h (processes, waits), kafka_real.h (the broker) and Criterion:
 * every call asserts, so a suite's file holds its scenarios, not plumbing.
 * Not for unit suites, and not thread-safe: one test thread drives it.
 *
 * On a real broker, one broker serves every test of a suite process
 * (WORLD_SUITE starts it before Criterion forks the tests, or
 * K2MC_KAFKA_BOOTSTRAP names one already running), so a test's topics and
 * groups carry a tag of their own there (world_name): the checks below take
 * the names a suite writes and apply the tag themselves. On the mock, names
 * are what the suite wrote. */
#ifndef K2MC_TEST_WORLD_H
#define K2MC_TEST_WORLD_H

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "harness.h"
#include "kafka_real.h"

#define WORLD_MAX_MC 4

/* What world_start builds. Zero is the default of every field. */
struct world_opts {
	const char *topic;            /* the topic k2mc-mock makes; NULL: "events" */
	int parts;                    /* its partitions; 0: 8 */
	uint64_t records;             /* --produce at start; 0: produce nothing yet */
	uint32_t keys;                /* --keys; 0: k2mc-mock's default */
	int value_size;               /* --value-size; 0: k2mc-mock's default */
	int tombstones;               /* --tombstones, percent; 0: none */
	const char *seed;             /* --seed; NULL: k2mc-mock's default */
	const char *rate;             /* --rate; NULL: as fast as it goes */
	int no_expect;                /* 1: no --expect file (w->expect stays empty) */
	int control;                  /* --stdin-control (h_mock_command) */
	const char *const *topics;    /* more topics, "NAME:PARTS" each, NAME a base name
					 (world_name), NULL-terminated */
	const char *const *topic_config; /* "name=value" configs of every topic made, on a real
					    broker only (the mock keeps none), NULL-terminated */
	const char *const *mock_args; /* more k2mc-mock args, NULL-terminated */
	int nmc;                      /* memcached servers; 0: 1; -1: none */
	const char *const *mc_args;   /* more memcached args for each, NULL-terminated */
	int mock_timeout_ms;          /* k2mc-mock's bootstrap line; 0: 15000 */
};

struct world {
	enum h_kafka_backend backend;
	/* a broker this test started itself (real backend, none shared) */
	struct h_kafka_real real;
	int own_broker;
	/* k2mc-mock: on the mock it is the cluster and the producer, on a real
	 * broker the producer; mock.bootstrap is the cluster's address either way */
	struct h_mock mock;
	const char *bootstrap;
	struct h_memcached mc[WORLD_MAX_MC];
	int nmc;
	char mc_addr[64];                    /* the first server, "127.0.0.1:PORT" */
	char mc_list[WORLD_MAX_MC * 24];     /* every server, comma-separated */
	char topic[160];                     /* world_name(opts.topic) */
	int parts;
	uint32_t keys;                       /* opts.keys */
	char expect[H_PATH_MAX];             /* k2mc-mock's expect file */
	uint64_t produced;                   /* acknowledged, set by world_wait_produced */
	int64_t t0;                          /* h_now_ms at world_start */
};

/* The suite declaration of a world suite: TestSuite(name, fields...), whose
 * .fini must call world_teardown (or be it), and a Criterion hook that, on
 * the real backend, starts the one broker of this suite process before the
 * tests run (world_share_broker). Once per test binary:
 *     WORLD_SUITE(pipeline, .fini = world_teardown, .timeout = 150) */
#define WORLD_SUITE(name, ...)                                                         \
	TestSuite(name, __VA_ARGS__);                                                  \
	ReportHook(PRE_ALL)(struct criterion_test_set * world_set_)                    \
	{                                                                              \
		(void)world_set_;                                                      \
		world_share_broker();                                                  \
	}

/* Runner side: with K2MC_KAFKA=real and no K2MC_KAFKA_BOOTSTRAP, starts a
 * broker (K2MC_KAFKA_VERSION) and exports its address as
 * K2MC_KAFKA_BOOTSTRAP to the test processes; the runner's h_cleanup (at
 * exit) stops it. A no-op on the mock. Exits the runner if the broker
 * cannot start: every test would fail the same way. */
void world_share_broker(void);

/* Starts memcached(s) and Kafka with its producer; asserts. */
void world_start(struct world *w, const struct world_opts *o);
/* Memcached only (w->mc, mc_addr, mc_list), for a test with a Kafka of its
 * own making (a broker in w->real with own_broker set is stopped by
 * world_teardown); nmc and mc_args as in world_opts. w zeroed before. */
void world_start_memcached(struct world *w, int nmc, const char *const mc_args[]);
/* The suite's .fini: stops a broker the test started, then h_cleanup. */
void world_teardown(void);

/* base on the mock; on a real broker base plus a tag of this test and of
 * its latest world_start ("events-t1234-1"), so that tests sharing a broker
 * never share a topic or a group. The same base gives the same string
 * until the next world_start; it lives until the test ends. */
const char *world_name(const char *base);
/* Skips the test on a real broker, with the reason printed (cr_skip_test):
 * for tests that drive the mock cluster (injected errors, broker-down,
 * retention of the mock). Skipped is not passed. */
void world_skip_unless_mock(const char *why);
double world_secs_since(int64_t t0);
/* h_tail_of(path, 15): the end of a log for a failure message. */
const char *world_tail(const char *path);

/* Waits for --produce to end (h_mock_wait_produced) and asserts that want
 * records were acknowledged and the expect file is written. */
void world_wait_produced(struct world *w, uint64_t want, int timeout_ms);
/* One --stdin-control command that must answer "ok"; answer may be NULL. */
void world_command(struct world *w, const char *cmd, char *answer, size_t len, int timeout_ms);

/* ---- k2mc ------------------------------------------------------------------*/

struct world_k2mc {
	const char *group;             /* -G, a base name (world_name); NULL: no -G */
	const char *topic;             /* -t as given; NULL: w->topic */
	const char *mc;                /* -m; NULL: w->mc_list */
	int eof;                       /* -e */
	const char *const *args;       /* more arguments, NULL-terminated; the name after
					  --dlq-topic is a base name (world_name) */
	const char *const *args2;      /* and more, after those */
	const struct h_k2mc_opts *run; /* binary, environment, no ASLR */
};

/* k2mc -b BOOTSTRAP -t TOPIC [-G GROUP] -m SERVERS [-e] args... args2... */
void world_k2mc_start(struct world *w, struct h_proc *k, const struct world_k2mc *o);
/* Waits up to timeout_ms for k to exit (SIGKILLs it past that, and fails);
 * asserts that it exited rather than died of a signal, and returns its exit
 * code. */
int world_k2mc_exit(struct h_proc *k, int timeout_ms, const char *what);
/* Waits up to timeout_ms for k to exit 0 (SIGKILLs it past that) and
 * parses its summary into s (NULL: no summary wanted). */
void world_k2mc_finish(struct h_proc *k, int timeout_ms, const char *what, struct h_summary *s);
/* written + deleted + skipped + coalesced = consumed, and unwritten = 0. */
void world_assert_counts_add_up(const struct h_summary *s, const char *what);

/* ---- records of the suite's own ---------------------------------------------*/

/* A producer into w's Kafka for rd_kafka_producev: idempotent, so that the
 * records of one partition take offsets in the order sent even if a request
 * is retried; conf: more "name=value" properties, NULL-terminated (may be
 * NULL). Asserts. */
rd_kafka_t *world_producer(struct world *w, const char *const conf[]);
/* Every record delivered within 15 s (asserted), then destroys rk. */
void world_producer_close(rd_kafka_t *rk);

/* ---- checks ----------------------------------------------------------------*/

/* Every key of expect (NULL: w->expect) holds its last record's value on
 * memcached port (0: the first server), or is absent after a tombstone;
 * keys under prefix (NULL: none). exact: memcached holds no other item.
 * Returns the number of live keys. */
size_t world_assert_cache(struct world *w, const char *expect, int port, const char *prefix,
			  int exact, const char *what);

/* The committed offsets of group (a base name; NULL: none wanted) and the
 * end offsets of topic (NULL: w->topic; a name as k2mc was given it) over
 * parts partitions (0: w->parts); either array may be NULL. Asserts that
 * the topic has parts partitions. */
void world_offsets(struct world *w, const char *topic, int parts, const char *group,
		   int64_t *committed, int64_t *end);
/* committed = end on every partition of topic (NULL: w->topic; parts 0:
 * w->parts); returns the sum of the end offsets. */
int64_t world_assert_committed_at_end(struct world *w, const char *topic, int parts,
				      const char *group, const char *what);
/* Polls until committed = end on every partition, failing at once if one
 * of procs (nprocs of them, may be 0) exits. */
void world_wait_committed_at_end(struct world *w, const char *topic, int parts,
				 const char *group, struct h_proc *const procs[], int nprocs,
				 int timeout_ms, const char *what);
/* Polls until group has committed an offset > 0 on some partition while k
 * runs; returns the seconds it took. */
double world_wait_first_commit(struct world *w, struct h_proc *k, const char *group,
			       int timeout_ms);

/* A "stats [what]" answer's value of name from memcached on port, or -1. */
int64_t world_mc_stat(int port, const char *what, const char *name);
/* key's value on memcached port (malloc'd, NUL-terminated; *vlen its
 * length, vlen may be NULL), or NULL if it is missing. */
char *world_mc_get(int port, const char *key, size_t klen, size_t *vlen);

/* GET path from 127.0.0.1:port over HTTP/1.0 (5 s receive timeout): the
 * body (malloc'd), the status into *status (may be NULL) and the
 * Content-Type into type (may be NULL); NULL (status -1) on failure. */
char *world_http_get(int port, const char *path, int *status, char *type, size_t typelen);

/* A record of the dead-letter topic, with k2mc's k2mc.error.* headers. */
struct world_letter {
	char *key; /* NULL: null key (malloc'd, world_letters_free) */
	size_t klen;
	char *val;
	size_t vlen;
	char reason[32], topic[64], message[200], trace[32];
	int64_t partition, offset; /* of the record it stands for; -1 if absent */
};

/* Reads partition 0 of topic (a name as k2mc was given it) from its start
 * to its end, at most max letters (more fails); returns how many. */
int world_read_dlq(struct world *w, const char *topic, struct world_letter *out, int max);
void world_letters_free(struct world_letter *l, int n);

#endif
