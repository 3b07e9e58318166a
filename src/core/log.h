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

#define k2mc_err(...) k2mc_log(K2MC_LOG_ERR, __VA_ARGS__)
#define k2mc_warn(...) k2mc_log(K2MC_LOG_WARN, __VA_ARGS__)
#define k2mc_info(...) k2mc_log(K2MC_LOG_INFO, __VA_ARGS__)
#define k2mc_dbg(...) k2mc_log(K2MC_LOG_DEBUG, __VA_ARGS__)

#endif
