/* Logging to stderr, one line per event, with a level and a timestamp: as
 * text ("12:00:01.234 k2mc WARN: msg") or, with --log-format json, as one
 * JSON object per line ({"ts","level","msg"} and the structured fields the
 * line names: topic, partition, offset, server, reason). The same events in
 * both; control bytes escaped in both.
 * Not a rate limiter: callers decide what is worth a line (state changes,
 * first of a kind); hot paths count instead of logging. */
#ifndef K2MC_LOG_H
#define K2MC_LOG_H

#include <stdint.h>

#include "core/config.h" /* enum k2mc_log_format */

enum k2mc_log_level { K2MC_LOG_ERR = 0, K2MC_LOG_WARN, K2MC_LOG_INFO, K2MC_LOG_DEBUG };

/* Set once by main before any thread starts; read-only afterwards. */
void k2mc_log_set_level(enum k2mc_log_level lvl);
int k2mc_log_enabled(enum k2mc_log_level lvl);
void k2mc_log_set_format(enum k2mc_log_format f);
enum k2mc_log_format k2mc_log_get_format(void);

/* What a line is about, besides its text. In JSON each one that is set
 * becomes a key of its own; the text line is the message as written (which
 * names them as k2mc always has: "topic [3] @1234: ..."). Unset: NULL, or -1
 * for partition and offset. Build them with the macros below. */
struct k2mc_log_fields {
	const char *topic;
	int32_t partition;
	int64_t offset;
	const char *server; /* as /metrics labels it: "host:port", "[v6]:port", "unix:PATH" */
	const char *reason; /* a short cause: an invalid reason's name, an error text */
};

/* f may be NULL (no fields). */
__attribute__((format(printf, 3, 4))) void
k2mc_logf(enum k2mc_log_level lvl, const struct k2mc_log_fields *f, const char *fmt, ...);
__attribute__((format(printf, 2, 3))) void k2mc_log(enum k2mc_log_level lvl, const char *fmt, ...);

/* A line about one record, one partition, one Memcached server, or with a
 * cause only. reason may be NULL. */
#define k2mc_log_record(lvl, topic, partition, offset, reason, ...)                                \
	k2mc_logf(lvl,                                                                             \
	          &(const struct k2mc_log_fields){(topic), (partition), (offset), NULL, (reason)}, \
	          __VA_ARGS__)
#define k2mc_log_partition(lvl, topic, partition, reason, ...)                                     \
	k2mc_logf(lvl, &(const struct k2mc_log_fields){(topic), (partition), -1, NULL, (reason)},  \
	          __VA_ARGS__)
#define k2mc_log_server(lvl, server, reason, ...)                                                  \
	k2mc_logf(lvl, &(const struct k2mc_log_fields){NULL, -1, -1, (server), (reason)},          \
	          __VA_ARGS__)
#define k2mc_log_reason(lvl, reason, ...)                                                          \
	k2mc_logf(lvl, &(const struct k2mc_log_fields){NULL, -1, -1, NULL, (reason)}, __VA_ARGS__)

/* Where librdkafka's own log lines go (rd_kafka_conf_set_log_cb): through
 * k2mc's logger, so that JSON mode has no plain-text line. `what` names the
 * client ("kafka", "kafka (dead letters)"). syslog levels 0-3 are errors, 4
 * warnings, 5-6 info, 7 debug. */
void k2mc_log_kafka(const char *what, int syslog_level, const char *fac, const char *buf);

/* A status line kept at the bottom of a terminal: written with \r over the
 * previous one, erased before any log line so the two never share a line.
 * One thread sets it (main); any thread may log. NULL erases it. Nothing in
 * JSON mode (a pipeline reads stderr line by line). */
void k2mc_log_status(const char *line);
/* Ends the status line with a newline: it stays on screen, log lines go below. */
void k2mc_log_status_keep(void);

/* Escapes what a log line must not carry raw into dst (always terminated):
 * control bytes, DEL and bytes that are not UTF-8 become the four
 * characters \xNN; nothing else changes. Both formats write messages and
 * fields through it, so the JSON "msg" decodes to the text line's message.
 * Returns strlen(dst). Exposed for tests. */
size_t k2mc_log_escape(char *dst, size_t len, const char *src);

#define k2mc_err(...)  k2mc_log(K2MC_LOG_ERR, __VA_ARGS__)
#define k2mc_warn(...) k2mc_log(K2MC_LOG_WARN, __VA_ARGS__)
#define k2mc_info(...) k2mc_log(K2MC_LOG_INFO, __VA_ARGS__)
#define k2mc_dbg(...)  k2mc_log(K2MC_LOG_DEBUG, __VA_ARGS__)

#endif
