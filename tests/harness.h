/* Integration-test harness: starts real servers (Debian memcached, the
 * k2mc-mock Kafka cluster, k2mc itself) on loopback, waits for conditions
 * with deadlines, checks Memcached and Kafka against what a run should have
 * left there, and stops exactly the processes it started, by PID.
 * Plain C with no Criterion dependency: tests assert on what it returns.
 * Not thread-safe: one test thread drives it. Every test binary links it,
 * so harness.c also carries the TSan-only rand_r that lets Criterion start
 * under ThreadSanitizer (see there). */
#ifndef K2MC_TEST_HARNESS_H
#define K2MC_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define H_PATH_MAX 512
#define H_MAX_PARTS 256

int64_t h_now_ms(void);
/* Sleeps ms (EINTR resumed): between polls of a condition, never instead of one. */
void h_sleep_ms(int ms);

/* A directory made by mkdtemp under /tmp, created on first use and removed
 * by h_cleanup unless K2MC_KEEP_TMP is set in the environment. */
const char *h_tmpdir(void);
/* buf = "<tmpdir>/<name>"; returns buf. */
char *h_tmppath(char *buf, size_t len, const char *name);

/* Path of a binary from the environment (K2MC_BIN, K2MC_MOCK, ...), or
 * fallback when the variable is unset or empty. */
const char *h_bin(const char *env_name, const char *fallback);

/* ---- processes ------------------------------------------------------------
 * Every process is registered by PID from fork to reap. A watchdog process,
 * forked on first use, holds a pipe from this process: if this process dies
 * without h_cleanup (a crash, a Criterion timeout's SIGKILL), the watchdog
 * sees EOF, SIGKILLs the PIDs still registered and names the temp dir it
 * leaves behind (the logs) on stderr. Children also get
 * PR_SET_PDEATHSIG (lost by memcached when it drops root, hence the
 * watchdog). Signals only ever go to registered, unreaped PIDs, so a
 * recycled PID is never hit. */

struct h_proc {
	pid_t pid;
	char out_path[H_PATH_MAX]; /* the child's stdout */
	char err_path[H_PATH_MAX]; /* the child's stderr */
	int ctl_fd;                /* write end of its stdin pipe, or -1; closed by h_cleanup */
};

struct h_spawn_opts {
	const char *const *env; /* "NAME=VALUE" added to / replacing ours; NULL-terminated */
	int stdin_pipe;         /* 1: stdin is a pipe, ctl_fd its write end; else /dev/null */
};

/* Starts argv (argv[0] looked up in PATH). tag names the output files
 * "<tmpdir>/<tag>.out" / ".err" (a counter keeps them unique).
 * 0, or -errno with p->pid = -1. */
int h_spawn(struct h_proc *p, const char *tag, const char *const argv[],
	    const struct h_spawn_opts *o);

/* Waits up to timeout_ms for pid to exit (waitpid polling against a
 * deadline). 0 with the raw wait status in *status, -ETIMEDOUT, or -ECHILD
 * for a PID this harness did not start. A PID already reaped by the harness
 * returns its recorded status at once. */
int h_wait(pid_t pid, int timeout_ms, int *status);
/* 1 if pid has exited (reaping it; *status set), 0 if running, -ECHILD. */
int h_exited(pid_t pid, int *status);
/* kill(pid, sig) for a registered, unreaped PID; -ESRCH otherwise. */
int h_signal(pid_t pid, int sig);
/* SIGSTOP, then waits (waitpid WUNTRACED) until every thread of it has
 * stopped: kill() returns before the target has. 0, -ETIMEDOUT, -ESRCH
 * (not ours or already reaped), -ECHILD (it exited instead). */
int h_pause(pid_t pid, int timeout_ms);
/* SIGCONT. 0 or -ESRCH. */
int h_resume(pid_t pid);
/* SIGTERM (and SIGCONT, in case it is stopped), up to grace_ms, then
 * SIGKILL; reaps it. Returns the wait status, or -ECHILD. */
int h_stop(pid_t pid, int grace_ms);
/* "exit 0", "killed by signal 9 (Killed)", ... */
const char *h_status_str(int status, char *buf, size_t len);
/* Exit code of a status, or -1 if it did not exit normally. */
int h_exit_code(int status);

/* SIGKILLs and reaps every process still registered, ends the watchdog
 * and removes the temp dir. Safe to call repeatedly. Meant for Criterion's
 * .fini, which runs after a failed assertion too; also registered with
 * atexit, which Criterion's workers skip (they leave with _Exit). A crash
 * or a Criterion timeout is the watchdog's case. */
void h_cleanup(void);

/* ---- files ----------------------------------------------------------------*/

/* Whole file, NUL-terminated, malloc'd (free it); NULL if unreadable. */
char *h_file_read(const char *path, size_t *len);
int h_file_contains(const char *path, const char *needle);
/* The last n lines (at most ~4 KiB), malloc'd; never NULL ("" on error). */
char *h_file_tail(const char *path, int nlines);
/* The last nlines of a file in a static buffer, for failure messages: one
 * use per expression (the next call overwrites it). */
const char *h_tail_of(const char *path, int nlines);
int h_file_exists(const char *path);

/* Waits until a line of path matches the POSIX extended regex, scanning
 * from byte *offset if offset is non-NULL (then set past the matching line,
 * so repeated calls see each line once). If pid > 0 and that process exits
 * without the line appearing, returns -ESRCH at once instead of waiting out
 * the deadline. 0 (line copied to line/len if non-NULL), -ETIMEDOUT,
 * -ESRCH, -EINVAL (bad regex). */
int h_wait_line(const char *path, const char *regex, size_t *offset, pid_t pid,
		int timeout_ms, char *line, size_t len);

/* ---- servers ---------------------------------------------------------------*/

/* A loopback TCP port nobody listened on a moment ago (bind to port 0). */
int h_free_port(void);

struct h_memcached {
	struct h_proc proc;
	int port;
};

/* Starts `memcached -u nobody -l 127.0.0.1 -p PORT -U 0 -m 256 [extra...]`
 * and waits until it accepts connections and its "stats" reports its own
 * PID (so a port race cannot hand us someone else's server). port 0 picks
 * a free port (retried if it is taken meanwhile). 0 or -errno. */
int h_memcached_start(struct h_memcached *m, int port, const char *const extra[]);

struct h_mock {
	struct h_proc proc;
	char bootstrap[256];
	size_t out_off; /* how far h_mock_* calls have read its stdout */
	int has_expect; /* started with --expect */
};

/* Starts K2MC_MOCK (default build/k2mc-mock) with args and waits for its
 * "bootstrap=HOST:PORT" line. stdin_control: give it a stdin pipe (for
 * --stdin-control). 0 or -errno. */
int h_mock_start(struct h_mock *mk, const char *const args[], int stdin_control, int timeout_ms);
/* Waits for production to end: its "produced=N acked=N failed=N" line and,
 * if it was given --expect, its "expect=FILE" line (the file is complete).
 * *produced = N acked. 0, -ETIMEDOUT, -ESRCH (mock died), -EIO (failed > 0).
 * Only for production from --produce (control-command production answers
 * with an "ok produce" line instead, see h_mock_command). */
int h_mock_wait_produced(struct h_mock *mk, int timeout_ms, uint64_t *produced);
/* --stdin-control: sends one command line and waits for its answer line
 * ("ok ..." or "error ..."), copied to answer. 0 for ok, -EIO for an error
 * answer, -ETIMEDOUT, -ESRCH. */
int h_mock_command(struct h_mock *mk, const char *cmd, char *answer, size_t len, int timeout_ms);

struct h_k2mc_opts {
	const char *bin;        /* default: $K2MC_BIN or build/k2mc */
	const char *const *env; /* extra environment, NULL-terminated */
	int no_aslr;            /* run through `setarch -R` (TSan builds need it) */
};

/* Starts k2mc with args (argv[1...]); stderr goes to k->err_path. */
int h_k2mc_start(struct h_proc *k, const struct h_k2mc_opts *o, const char *const args[]);

/* The "k2mc: summary: ..." line of a finished run. */
struct h_summary {
	uint64_t consumed, written, deleted, skipped, unwritten;
	uint64_t coalesced; /* superseded in their batch (0 when the line has none) */
	uint64_t lost;      /* lost_to_retention: deleted by retention before they
			     * were read (0 when the line has none) */
	int ncommitted;
	struct {
		char topic[128];
		int32_t partition;
		int64_t offset;
	} committed[H_MAX_PARTS];
};

/* Parses the last summary line in path. 0, -ENOENT (no summary line),
 * -EPROTO (malformed). */
int h_summary_parse(const char *path, struct h_summary *s);
/* The offset the summary gives topic[partition], or -1 if not listed. */
int64_t h_summary_committed(const struct h_summary *s, const char *topic, int32_t partition);

/* ---- checks ----------------------------------------------------------------*/

/* Result of comparing a memcached server against an expect file (lines
 * "S <key> <value>": key must hold exactly value; "D <key>": key absent). */
struct h_verify {
	size_t sets, deletes;     /* lines of each kind in the file */
	size_t missing;           /* S keys not in the cache */
	size_t wrong;             /* S keys with another value */
	size_t present;           /* D keys still in the cache */
	uint64_t server_items;    /* curr_items of the server after the check */
	char first[2048];         /* the first few mismatches, one per line */
};

/* Reads the expect file and fetches every key (prefixed with key_prefix,
 * which may be NULL) from host:port with memcached_mget in chunks of 1000.
 * Returns 0 when the comparison ran (mismatches are counted in v), or
 * -errno when it could not (unreadable file, malformed line, server down;
 * reason in v->first). */
int h_verify_memcached(const char *expect_path, const char *host, int port,
		       const char *key_prefix, struct h_verify *v);
size_t h_verify_mismatches(const struct h_verify *v);

/* A librdkafka consumer handle that never joins a group: it only asks the
 * cluster for metadata, watermarks and a group's committed offsets. */
struct h_kafka;

/* group may be NULL when only end offsets are wanted. NULL on failure,
 * reason in err. */
struct h_kafka *h_kafka_open(const char *bootstrap, const char *group, char *err, size_t errlen);
void h_kafka_close(struct h_kafka *k);
/* Partition count of topic, or -errno. */
int h_kafka_partitions(struct h_kafka *k, const char *topic, int timeout_ms);
/* High watermarks (end offsets) of partitions 0..n-1. 0 or -errno. */
int h_kafka_end_offsets(struct h_kafka *k, const char *topic, int n, int64_t *end,
			int timeout_ms);
/* Log start offsets (what retention left) and end offsets of partitions
 * 0..n-1, asked of the leader; either array may be NULL. 0 or -errno. */
int h_kafka_watermarks(struct h_kafka *k, const char *topic, int n, int64_t *start,
		       int64_t *end, int timeout_ms);
/* The group's committed offsets of partitions 0..n-1 (rd_kafka_committed);
 * -1 for a partition with no commit. 0 or -errno. */
int h_kafka_committed(struct h_kafka *k, const char *topic, int n, int64_t *off,
		      int timeout_ms);
/* Number of partitions where a[i] != b[i]; describes the first few in buf
 * ("p3: 120 != 4211"). */
int h_offsets_diff(const int64_t *a, const int64_t *b, int n, char *buf, size_t len);
int64_t h_offsets_sum(const int64_t *a, int n);

#endif
