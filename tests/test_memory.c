/* Integration suite for k2mc's memory bound (--max-buffer-bytes): with
 * memcached frozen (SIGSTOP) while k2mc consumes a topic of 64 partitions of
 * 10 KB records produced before it started, the records it holds stop at the
 * byte budget, its peak RSS stays within the budget plus librdkafka's
 * per-partition prefetch, and the stats line, --stats-json and /metrics say
 * so; resumed, every key converges and the group commits up to the end.
 * Binaries come from K2MC_BIN and K2MC_MOCK. Not about records Memcached
 * cannot take (test_policies.c) or other outages (test_faults.c). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "world.h"

#define TOPIC "events"
#define GROUP "memory"
/* every wait below has its own deadline; this only stops a wedged test */
#define TEST_TIMEOUT_S 120

/* 64 partitions x ~400 records x 10 KB = 256 MB, ~4 MB per partition: under
 * the mock's 5 MiB retention, eight times the budget. 16,384 keys spread the
 * records evenly over the partitions (partitioned by key). */
#define PARTS 64
#define RECORDS 25600
#define KEYS 16384
#define VALUE_SIZE 10000
#define KEY_LEN 12 /* "key-%08u" */
#define BUDGET (32ull << 20)
/* librdkafka prefetches per partition queue (k2mc reads one queue per
 * partition): with --max-buffer-bytes 32m, k2mc's derived
 * prefetch is 128 KiB per partition (src/core/group.c), and each partition
 * holds that and about one fetch response of up to max.partition.fetch.bytes
 * (1 MiB) outside the budget; with 10 KB records the ops are small beside
 * it, and 1 MiB per partition covers both here (measured 86-102 MiB; 107-114
 * MiB with a 512 KiB prefetch). */
#define FETCH_BYTES (1ull << 20)
/* k2mc with 64 partitions' threads and librdkafka's, before any record:
 * about 10 MiB; the rest is headroom for allocator slack */
#define BASE_BYTES (40ull << 20)
/* The bound the test asserts: the budget, one response per partition, the
 * base. The tree before the byte budget held every record: about 280 MiB;
 * with a prefetch of budget / 64 per partition, 64 x 512 KiB more. */
#define RSS_BOUND (BUDGET + PARTS * FETCH_BYTES + BASE_BYTES)

static struct world W;

WORLD_SUITE(memory, .fini = world_teardown, .timeout = TEST_TIMEOUT_S)

static const char *tail_of(const char *path)
{
	return h_tail_of(path, 20);
}

static void sleep_ms(int ms)
{
	usleep((useconds_t)ms * 1000);
}

/* memcached with room for every key (16,384 x ~10 KB items), and the mock
 * with the whole topic produced and acknowledged. */
static void start_world(void)
{
	static const char *const mc_extra[] = { "-m", "1024", NULL };

	world_start(&W, &(struct world_opts){ .topic = TOPIC, .parts = PARTS, .keys = KEYS,
					      .value_size = VALUE_SIZE, .records = RECORDS,
					      .mc_args = mc_extra });
	world_wait_produced(&W, RECORDS, 30000);
	/* a partition past retention would lose records before k2mc reads them */
	cr_assert_eq(h_file_contains(W.mock.proc.err_path, "retention"), 0,
		     "a partition is near the mock's 5 MiB retention:\n%s",
		     tail_of(W.mock.proc.err_path));
}

/* ---- what k2mc reports -----------------------------------------------------------*/

/* A number field of the last complete line of the --stats-json file, or -1. */
static int64_t json_last(const char *path, const char *field)
{
	char *b = h_file_read(path, NULL), *line, *end, *p, key[64];
	int64_t v = -1;

	if (b == NULL)
		return -1;
	end = strrchr(b, '\n');
	if (end != NULL) {
		*end = '\0';
		line = strrchr(b, '\n');
		line = line ? line + 1 : b;
		snprintf(key, sizeof(key), "\"%s\":", field);
		p = strstr(line, key);
		if (p != NULL)
			v = strtoll(p + strlen(key), NULL, 10);
	}
	free(b);
	return v;
}

/* The value of an unlabelled Prometheus series, or -1. */
static int64_t metric(const char *text, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (strncmp(p, name, nl) == 0 && p[nl] == ' ')
			return strtoll(p + nl + 1, NULL, 10);
	return -1;
}

/* VmHWM (peak resident set) of pid in bytes, or -1. */
static int64_t vm_hwm(pid_t pid)
{
	char path[64], *b, *p;
	int64_t kb = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	b = h_file_read(path, NULL);
	if (b == NULL)
		return -1;
	p = strstr(b, "VmHWM:");
	if (p != NULL)
		kb = strtoll(p + 6, NULL, 10);
	free(b);
	return kb < 0 ? -1 : kb * 1024;
}

/* ---- Kafka -------------------------------------------------------------------------*/

/* Polls until the group's committed offsets are the end offsets, which sum
 * to what was produced, while k runs. */
static void wait_committed_at_end(struct h_proc *k, int timeout_ms)
{
	int64_t end_sum;

	world_wait_committed_at_end(&W, NULL, 0, GROUP, &k, 1, timeout_ms,
				    "memcached resumed");
	end_sum = world_assert_committed_at_end(&W, NULL, 0, GROUP, "memcached resumed");
	cr_assert_eq(end_sum, (int64_t)W.produced, "end offsets sum to %" PRId64 ", produced %" PRIu64,
		     end_sum, W.produced);
}

/* ---- the test ---------------------------------------------------------------------*/

Test(memory, frozen_memcached_holds_k2mc_to_its_byte_budget)
{
	char json[H_PATH_MAX], budget[32], metrics_addr[64], line[512];
	int mport = h_free_port();
	const uint64_t per_record = KEY_LEN + VALUE_SIZE + 320; /* k2mc_record_bytes */
	int64_t buffered = -1, limit = -1, consumed = -1, hwm, deadline;
	struct h_proc k;
	struct h_summary s;
	char *text;
	int rc, status = 0;

	start_world();
	h_tmppath(json, sizeof(json), "stats.json");
	snprintf(budget, sizeof(budget), "%llu", (unsigned long long)BUDGET);
	snprintf(metrics_addr, sizeof(metrics_addr), "127.0.0.1:%d", mport);
	{
		const char *const args[] = { "--max-buffer-bytes", budget,
					     "--stats-interval-ms", "250",
					     "--stats-json", json, "--metrics-addr", metrics_addr,
					     "--commit-interval-ms", "200", NULL };

		world_k2mc_start(&W, &k, &(struct world_k2mc){ .group = GROUP, .args = args });
	}
	/* before the group's first assignment (about 3 s): nothing is written
	 * before the freeze */
	rc = h_pause(W.mc[0].proc.pid, 5000);
	cr_assert_eq(rc, 0, "SIGSTOP memcached: %s", strerror(-rc));

	/* The condition: the budget is full (a consumer waits when the next
	 * record does not fit, so the last record's size may stay unused), or
	 * k2mc consumed the whole topic, which only an unbounded k2mc can. */
	deadline = h_now_ms() + 30000;
	for (;;) {
		cr_assert_eq(h_exited(k.pid, &status), 0, "k2mc ended while memcached was frozen:\n%s",
			     tail_of(k.err_path));
		buffered = json_last(json, "buffer_bytes");
		limit = json_last(json, "buffer_limit_bytes");
		consumed = json_last(json, "consumed");
		if ((limit > 0 && buffered >= limit - (int64_t)per_record) || consumed == RECORDS)
			break;
		cr_assert_lt(h_now_ms(), deadline,
			     "the buffer never filled (%" PRId64 " of %" PRId64 " bytes, %" PRId64
			     " records consumed): a budget that is never reached bounds nothing, or "
			     "k2mc holds nothing; k2mc:\n%s",
			     buffered, limit, consumed, tail_of(k.err_path));
		sleep_ms(100);
	}
	/* let librdkafka's prefetch settle: the peak is what it reaches */
	sleep_ms(2000);
	hwm = vm_hwm(k.pid);
	cr_assert_gt(hwm, 0, "no VmHWM for k2mc");
	cr_log_info("k2mc VmHWM %.1f MiB with memcached frozen (budget %llu MiB, bound %.1f MiB)",
		    (double)hwm / (1 << 20), (unsigned long long)(BUDGET >> 20),
		    (double)RSS_BOUND / (1 << 20));
	cr_assert_leq((uint64_t)hwm, RSS_BOUND,
		      "k2mc peaked at %.1f MiB with memcached frozen: over the budget (%llu MiB) "
		      "plus %d partitions' prefetch (one 1 MiB fetch response each) plus %llu "
		      "MiB; the %d MiB topic was held, not bounded",
		      (double)hwm / (1 << 20), (unsigned long long)(BUDGET >> 20), PARTS,
		      (unsigned long long)(BASE_BYTES >> 20),
		      RECORDS * VALUE_SIZE >> 20);
	cr_assert_eq(limit, (int64_t)BUDGET, "--stats-json buffer_limit_bytes");
	/* every record handed out was paid for; none was written */
	consumed = json_last(json, "consumed");
	cr_assert_leq((uint64_t)consumed * per_record, BUDGET,
		      "%" PRId64 " records of %" PRIu64 " bytes consumed: over the budget", consumed,
		      per_record);
	cr_assert_lt(consumed, RECORDS / 4, "nearly everything was consumed");

	/* the same numbers, as the stats line and /metrics say them */
	rc = h_wait_line(k.err_path, "buffer [0-9.]+ MiB/32 MiB", NULL, k.pid, 5000, line,
			 sizeof(line));
	cr_assert_eq(rc, 0, "no \"buffer X MiB/32 MiB\" in the stats line:\n%s", tail_of(k.err_path));
	text = world_http_get(mport, "/metrics", NULL, NULL, 0);
	cr_assert_not_null(text, "no answer from /metrics");
	cr_assert_eq(metric(text, "k2mc_buffer_limit_bytes"), (int64_t)BUDGET, "%s", text);
	cr_assert_geq(metric(text, "k2mc_buffer_bytes"), (int64_t)(BUDGET - per_record),
		      "k2mc_buffer_bytes while the budget is full");
	free(text);

	/* memcached answers again: everything is written, in order */
	cr_assert_eq(h_resume(W.mc[0].proc.pid), 0);
	wait_committed_at_end(&k, 60000);
	cr_assert_eq(h_signal(k.pid, SIGTERM), 0);
	rc = h_wait(k.pid, 20000, &status);
	cr_assert_eq(rc, 0, "k2mc did not exit after SIGTERM:\n%s", tail_of(k.err_path));
	cr_assert_eq(h_exit_code(status), 0, "k2mc exit:\n%s", tail_of(k.err_path));
	rc = h_summary_parse(k.err_path, &s);
	cr_assert_eq(rc, 0, "no summary:\n%s", tail_of(k.err_path));
	cr_assert_eq(s.unwritten, 0);
	cr_assert_eq(s.consumed, RECORDS, "consumed %" PRIu64 " of %d", s.consumed, RECORDS);
	world_assert_cache(&W, NULL, 0, NULL, 0, "after the drain");
	/* the budget is empty again once everything is written: the final
	 * JSON line is taken after the drain */
	cr_assert_eq(json_last(json, "buffer_bytes"), 0, "bytes still counted after the drain");
}
