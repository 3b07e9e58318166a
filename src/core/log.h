/* Logging to stderr, one line per event, with a level and a timestamp.
 * Not a rate limiter: callers decide what is worth a line (state changes,
 * first of a kind); hot paths count instead of logging. */
#ifndef K2MC_LOG_H
#define K2MC_LOG_H

enum k2mc_log_level { K2MC_LOG_ERR = 0, K2MC_LOG_WARN, K2MC_LOG_INFO, K2MC_LOG_DEBUG };

/* Set once by main before any thread starts; read-only afterwards. */
void k2mc_log_set_level(enum k2mc_log_level lvl);
int k2mc_log_enabled(enum k2mc_log_level lvl);

__attribute__((format(printf, 2, 3))) void k2mc_log(enum k2mc_log_level lvl, const char *fmt, ...);

/* A status line kept at the bottom of a terminal: written with \r over the
 * previous one, erased before any log line so the two never share a line.
 * One thread sets it (main); any thread may log. NULL erases it. */
void k2mc_log_status(const char *line);
/* Ends the status line with a newline: it stays on screen, log lines go below. */
void k2mc_log_status_keep(void);

#define k2mc_err(...) k2mc_log(K2MC_LOG_ERR, __VA_ARGS__)
#define k2mc_warn(...) k2mc_log(K2MC_LOG_WARN, __VA_ARGS__)
#define k2mc_info(...) k2mc_log(K2MC_LOG_INFO, __VA_ARGS__)
#define k2mc_dbg(...) k2mc_log(K2MC_LOG_DEBUG, __VA_ARGS__)

#endif
