/* stderr logger; a single fprintf per line keeps lines from interleaving. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static enum k2mc_log_level log_level = K2MC_LOG_INFO;

void k2mc_log_set_level(enum k2mc_log_level lvl)
{
	log_level = lvl;
}

int k2mc_log_enabled(enum k2mc_log_level lvl)
{
	return lvl <= log_level;
}

void k2mc_log(enum k2mc_log_level lvl, const char *fmt, ...)
{
	static const char *const names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
	char msg[1024];
	char ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (lvl > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ld k2mc %s: %s\n", ts, now.tv_nsec / 1000000, names[lvl], msg);
}
