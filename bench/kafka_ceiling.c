/* kafka-ceiling: the Kafka side of k2mc's ceiling, a plain librdkafka
 * high-level consumer that reads a topic and discards the records, committing
 * as it goes (so k2mc-mock --pace-group can pace against it). Not a tool for
 * anything but measuring how fast this machine can read the topic.
 *
 *   kafka-ceiling -b BOOTSTRAP -t TOPIC -G GROUP -c N [-X prop=val ...] [-S MS]
 *
 * stdout, one line once N records are read:
 *   {"tool":"kafka-ceiling","records":N,"seconds":S,"rps":R,"mbps":M,
 *    "librdkafka":V[,"fetch_requests":Q,"stats_rxmsgs":X]}
 * seconds from the first record's arrival to the Nth's; rps = N / seconds;
 * mbps = key + value bytes / seconds / 1e6; V the librdkafka loaded (the
 * bench runs a build of this file on another one with LD_LIBRARY_PATH). On
 * SIGINT/SIGTERM before N the same line with the records read so far, and
 * exit status 1. -S MS: librdkafka's statistics every MS ms; Q is the Fetch
 * requests sent to every broker and X the records received, both from the
 * last emission (so Q / X is Fetch requests per record), as the bench's
 * Python peers report them (bench/peers/fetchstats.py). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

/* messages per rd_kafka_consume_batch_queue() call */
#define KC_BATCH 1024
#define KC_MAX_PROPS 64

struct opts {
	const char *bootstrap;
	const char *topic;
	const char *group;
	uint64_t count;
	const char *props[KC_MAX_PROPS]; /* "prop=val", applied last */
	int nprops;
	const char *stats_ms; /* -S: statistics.interval.ms, or NULL */
};

/* The last statistics emission's totals (-S). Written by stats_cb, which runs
 * on the main thread inside rd_kafka_consume_batch_queue (the consumer queue
 * serves the stats op), and read by the same thread at the end. */
static struct {
	uint64_t fetch_requests, rxmsgs, emissions;
} stats;

/* set by the signal handler, read by the poll loop */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

__attribute__((format(printf, 1, 2))) static void err(const char *fmt, ...)
{
	va_list ap;

	fputs("kafka-ceiling: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(FILE *f)
{
	fputs("usage: kafka-ceiling -b BOOTSTRAP -t TOPIC -G GROUP -c N [-X prop=val ...] [-S MS]\n"
	      "Reads N records with a librdkafka high-level consumer (earliest, auto-commit\n"
	      "every 100 ms), discards them and prints one JSON line. -S MS: librdkafka\n"
	      "statistics every MS ms, the Fetch requests counted in the JSON line.\n",
	      f);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
	char *end;
	int c;

	*o = (struct opts){ .group = "kafka-ceiling" };
	while ((c = getopt(argc, argv, "b:t:G:c:X:S:h")) != -1) {
		switch (c) {
		case 'b':
			o->bootstrap = optarg;
			break;
		case 't':
			o->topic = optarg;
			break;
		case 'G':
			o->group = optarg;
			break;
		case 'c':
			errno = 0;
			o->count = strtoull(optarg, &end, 10);
			if (errno || *end || optarg[0] == '-' || o->count == 0) {
				err("-c: expected a positive integer, got \"%s\"", optarg);
				return -EINVAL;
			}
			break;
		case 'X':
			if (o->nprops == KC_MAX_PROPS || !strchr(optarg, '=')) {
				err("-X: expected prop=val (at most %d)", KC_MAX_PROPS);
				return -EINVAL;
			}
			o->props[o->nprops++] = optarg;
			break;
		case 'S':
			if (strtol(optarg, &end, 10) <= 0 || *end) {
				err("-S: expected a positive number of ms, got \"%s\"", optarg);
				return -EINVAL;
			}
			o->stats_ms = optarg;
			break;
		case 'h':
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc || !o->bootstrap || !o->topic || o->count == 0) {
		err("-b, -t and -c are required");
		return -EINVAL;
	}
	return 0;
}

static int set_conf(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char errstr[512];

	if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
		err("config %s=%s: %s", k, v, errstr);
		return -EINVAL;
	}
	return 0;
}

/* librdkafka writes each broker's request counters as "req": { "Fetch": N,
 * ...} and the client's totals last, after the brokers and topics
 * (rd_kafka_stats_emit_all): the last "rxmsgs" is the total. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
	const char *tot = NULL, *p;
	uint64_t fetch = 0;

	(void)rk;
	(void)len;
	(void)opaque;
	for (p = json; (p = strstr(p, "\"rxmsgs\":")); p++)
		tot = p;
	if (!tot)
		return 0;
	for (p = json; (p = strstr(p, "\"Fetch\":")) && p < tot; p++)
		fetch += strtoull(p + strlen("\"Fetch\":"), NULL, 10);
	stats.fetch_requests = fetch;
	stats.rxmsgs = strtoull(tot + strlen("\"rxmsgs\":"), NULL, 10);
	stats.emissions++;
	return 0; /* librdkafka frees json */
}

static rd_kafka_t *consumer_new(const struct opts *o)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[512];
	rd_kafka_t *rk;

	/* Auto-commit of the offsets stored as records are handed to us: the
	 * cheapest way to commit asynchronously every 100 ms, which is what
	 * k2mc-mock's pacing waits for. */
	if (set_conf(conf, "bootstrap.servers", o->bootstrap) ||
	    set_conf(conf, "group.id", o->group) ||
	    set_conf(conf, "auto.offset.reset", "earliest") ||
	    set_conf(conf, "enable.auto.commit", "true") ||
	    set_conf(conf, "auto.commit.interval.ms", "100") ||
	    set_conf(conf, "enable.auto.offset.store", "true"))
		goto fail;
	for (int i = 0; i < o->nprops; i++) {
		char kv[1024];
		char *eq;

		snprintf(kv, sizeof(kv), "%s", o->props[i]);
		eq = strchr(kv, '=');
		*eq = '\0';
		if (set_conf(conf, kv, eq + 1))
			goto fail;
	}
	if (o->stats_ms) {
		if (set_conf(conf, "statistics.interval.ms", o->stats_ms))
			goto fail;
		rd_kafka_conf_set_stats_cb(conf, stats_cb);
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (!rk) {
		err("creating the consumer: %s", errstr);
		goto fail;
	}
	return rk;
fail:
	rd_kafka_conf_destroy(conf);
	return NULL;
}

/* Per partition: the offset the next record should have, to notice records
 * skipped (lost to retention and an offset reset). */
struct gaps {
	int64_t *next;
	int32_t n;
	uint64_t count; /* records skipped over */
};

static void gaps_see(struct gaps *g, int32_t p, int64_t off)
{
	if (p >= g->n) {
		int32_t nn = p + 1 > 2 * g->n ? p + 1 : 2 * g->n;
		int64_t *nx = realloc(g->next, (size_t)nn * sizeof(*nx));

		if (!nx)
			return; /* a sanity check only: skip it without memory */
		for (int32_t i = g->n; i < nn; i++)
			nx[i] = -1;
		g->next = nx;
		g->n = nn;
	}
	if (g->next[p] >= 0 && off > g->next[p])
		g->count += (uint64_t)(off - g->next[p]);
	g->next[p] = off + 1;
}

int main(int argc, char **argv)
{
	struct opts o;
	rd_kafka_t *rk = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_topic_partition_list_t *subs;
	rd_kafka_message_t *msgs[KC_BATCH];
	struct gaps gaps = { 0 };
	uint64_t got = 0, bytes = 0, errors = 0;
	double t_first = 0, t_last = 0, secs;
	rd_kafka_resp_err_t e;
	int r, rc = 1;

	r = parse_args(&o, argc, argv);
	if (r) {
		usage(r > 0 ? stdout : stderr);
		return r > 0 ? 0 : 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	rk = consumer_new(&o);
	if (!rk)
		return 1;
	/* one queue for records and events; no per-call rd_kafka_poll */
	rd_kafka_poll_set_consumer(rk);
	subs = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(subs, o.topic, RD_KAFKA_PARTITION_UA);
	e = rd_kafka_subscribe(rk, subs);
	rd_kafka_topic_partition_list_destroy(subs);
	if (e) {
		err("subscribe %s: %s", o.topic, rd_kafka_err2str(e));
		goto out;
	}
	q = rd_kafka_queue_get_consumer(rk);

	while (got < o.count && !stop_signal) {
		size_t want = o.count - got < KC_BATCH ? (size_t)(o.count - got) : KC_BATCH;
		ssize_t n = rd_kafka_consume_batch_queue(q, 200, msgs, want);
		double t;

		if (n < 0) {
			err("consume: %s", rd_kafka_err2str(rd_kafka_last_error()));
			goto out;
		}
		t = now_s();
		for (ssize_t i = 0; i < n; i++) {
			rd_kafka_message_t *m = msgs[i];

			if (m->err) {
				if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && errors++ < 10)
					err("%s", rd_kafka_message_errstr(m));
			} else {
				if (got == 0)
					t_first = t;
				got++;
				bytes += m->key_len + m->len;
				gaps_see(&gaps, m->partition, m->offset);
			}
			rd_kafka_message_destroy(m);
		}
		if (n > 0)
			t_last = t;
	}
	rc = got == o.count ? 0 : 1;
	secs = t_last - t_first;
	printf("{\"tool\":\"kafka-ceiling\",\"records\":%" PRIu64 ",\"seconds\":%.6f,"
	       "\"rps\":%.1f,\"mbps\":%.3f,\"librdkafka\":\"%s\"",
	       got, secs, secs > 0 ? (double)got / secs : 0.0,
	       secs > 0 ? (double)bytes / secs / 1e6 : 0.0, rd_kafka_version_str());
	if (stats.emissions)
		printf(",\"fetch_requests\":%" PRIu64 ",\"stats_rxmsgs\":%" PRIu64,
		       stats.fetch_requests, stats.rxmsgs);
	printf("}\n");
	fflush(stdout);
	if (gaps.count || errors)
		err("%" PRIu64 " records skipped (offset gaps), %" PRIu64 " consumer errors",
		    gaps.count, errors);
out:
	if (q)
		rd_kafka_queue_destroy(q);
	/* commits the last stored offsets and leaves the group */
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	free(gaps.next);
	return rc;
}
