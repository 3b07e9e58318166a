/* stderr logger; a single fprintf per line keeps lines from interleaving,
 * and the stderr lock keeps them apart from the status line. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static enum k2mc_log_level log_level = K2MC_LOG_INFO;
/* 1 while a status line is on screen; changed only with stderr locked
 * (flockfile), atomic so that race detectors need not know that lock */
static _Atomic int status_shown;

/* With stderr locked: the cursor back to the start of an empty line. */
static void erase_status(void)
{
	if (atomic_load_explicit(&status_shown, memory_order_relaxed)) {
		fputs("\r\033[K", stderr);
		atomic_store_explicit(&status_shown, 0, memory_order_relaxed);
	}
}

void k2mc_log_status(const char *line)
{
	flockfile(stderr);
	erase_status();
	if (line != NULL) {
		fputs(line, stderr);
		atomic_store_explicit(&status_shown, 1, memory_order_relaxed);
	}
	funlockfile(stderr);
}

void k2mc_log_set_level(enum k2mc_log_level lvl)
{
	log_level = lvl;
}

int k2mc_log_enabled(enum k2mc_log_level lvl)
{
	return lvl <= log_level;
}

void k2mc_log_status_keep(void)
{
	flockfile(stderr);
	if (atomic_load_explicit(&status_shown, memory_order_relaxed)) {
		fputc('\n', stderr);
		atomic_store_explicit(&status_shown, 0, memory_order_relaxed);
	}
	funlockfile(stderr);
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
	flockfile(stderr);
	erase_status();
	fprintf(stderr, "%s.%03ld k2mc %s: %s\n", ts, now.tv_nsec / 1000000, names[lvl], msg);
	funlockfile(stderr);
}
