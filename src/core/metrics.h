/* The metrics endpoint (--metrics-addr): Prometheus text at /metrics,
 * liveness at /healthz, readiness at /readyz (or /healthz?ready), served by
 * libmicrohttpd on one thread of its own (k2mc-metrics). That thread never
 * reads counters or the partition table: it serves the text and the answers
 * the main thread last published. Not where k2mc's numbers are gathered
 * (stats.c, whose counter table names the families); the process metrics
 * (/proc/self) and build info are read here, when the text is rendered. */
#ifndef K2MC_METRICS_H
#define K2MC_METRICS_H

#include <stddef.h>
#include <stdio.h>

#include "core/stats.h"

struct k2mc_metrics;

/* Listens on host:port and starts serving. /healthz turns 503 when nothing
 * was published for stale_after_ms (the main loop is wedged). NULL on
 * failure, with a one-line reason in err. */
struct k2mc_metrics *k2mc_metrics_start(const char *host, int port, int stale_after_ms,
					char *err, size_t errlen);
/* Main thread: renders s; what the endpoint serves from now on. */
void k2mc_metrics_publish(struct k2mc_metrics *m, const struct k2mc_snapshot *s);
void k2mc_metrics_stop(struct k2mc_metrics *m);

/* The Prometheus text exposition (format 0.0.4) of a snapshot: the counter
 * table's families, the gauges only /metrics has, k2mc_build_info and the
 * process_* metrics of Prometheus' client libraries (read from /proc now:
 * main thread, about once a second). */
void k2mc_metrics_render(FILE *out, const struct k2mc_snapshot *s);
/* Ready: partitions assigned and every Memcached server answering. 1, or 0
 * with the reason in why. */
int k2mc_metrics_ready(const struct k2mc_snapshot *s, char *why, size_t len);

#endif
