/* The clock: every interval, deadline, timeout and lease in k2mc is a
 * k2mc_now_ms() value, so any two of them compare. Not for dates: a time
 * that is printed, or compared with a Kafka record's timestamp, is
 * k2mc_wall_ms(). (budget.c's condition variable waits on CLOCK_MONOTONIC,
 * the one clock glibc's condvars take besides CLOCK_REALTIME; it converts a
 * relative wait, never a k2mc_now_ms() value.) */
#ifndef K2MC_CLOCK_H
#define K2MC_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_BOOTTIME in ms: monotonic, and it keeps counting while the host is
 * suspended (CLOCK_MONOTONIC does not), as the Kafka coordinator's session
 * timer does: a suspended host comes back with its write lease expired
 * (fence.h) and its timeouts past. Any thread. */
static inline int64_t k2mc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_REALTIME in ms since the epoch: Kafka's timestamps and the
 * --stats-json ts_ms. Any thread. */
static inline int64_t k2mc_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
