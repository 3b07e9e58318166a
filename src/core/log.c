/* stderr logger; each line is built whole and written with one call under
 * the stderr lock, which keeps lines from interleaving and apart from the
 * status line. Text or JSON (--log-format); see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum k2mc_log_level log_level = K2MC_LOG_INFO;
static enum k2mc_log_format log_format = K2MC_LOG_TEXT;
/* 1 while a status line is on screen; changed only with stderr locked
 * (flockfile), atomic so that race detectors need not know that lock */
static _Atomic int status_shown;

/* a message as formatted, and as escaped (at most 4 bytes per byte) */
#define MSG_MAX        1024
#define LINE_MAX_BYTES (8 * MSG_MAX)

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
	if (log_format == K2MC_LOG_JSON)
		return;
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

void k2mc_log_set_format(enum k2mc_log_format f)
{
	log_format = f;
}

enum k2mc_log_format k2mc_log_get_format(void)
{
	return log_format;
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

/* ---- escaping --------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), 0 if there is none. A C1
 * control (U+0080..U+009F: 8-bit CSI and friends) counts as none. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];

	if (c >= 0xc2 && c <= 0xdf)
		return (s[1] & 0xc0) == 0x80 && !(c == 0xc2 && s[1] < 0xa0) ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;

		return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;

		return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80
		           ? 4
		           : 0;
	}
	return 0;
}

size_t k2mc_log_escape(char *dst, size_t len, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)src;
	size_t n = 0;

	if (len == 0)
		return 0;
	while (*s != '\0') {
		size_t l = *s >= 0x20 && *s < 0x7f ? 1 : *s >= 0x80 ? utf8_len(s) : 0;

		if (l > 0) {
			if (n + l >= len)
				break;
			memcpy(dst + n, s, l);
			n += l;
			s += l;
			continue;
		}
		/* a control byte, DEL, or a byte that is not UTF-8 */
		if (n + 4 >= len)
			break;
		dst[n++] = '\\';
		dst[n++] = 'x';
		dst[n++] = hex[*s >> 4];
		dst[n++] = hex[*s & 15];
		s++;
	}
	dst[n] = '\0';
	return n;
}

/* ---- lines ---------------------------------------------------------------------- */

struct line {
	char buf[LINE_MAX_BYTES];
	size_t n;
};

static void put(struct line *l, const char *s, size_t n)
{
	if (n > sizeof(l->buf) - 2 - l->n) /* room for "\n" and the terminator */
		n = sizeof(l->buf) - 2 - l->n;
	memcpy(l->buf + l->n, s, n);
	l->n += n;
}

static void puts_(struct line *l, const char *s)
{
	put(l, s, strlen(s));
}

/* A JSON string of text already escaped by k2mc_log_escape: only '"' and
 * '\' are left to escape (no control byte remains, and it is UTF-8). */
static void put_json_str(struct line *l, const char *s)
{
	put(l, "\"", 1);
	for (const char *p = s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			put(l, "\\", 1);
		put(l, p, 1);
	}
	put(l, "\"", 1);
}

static void put_json_field(struct line *l, const char *key, const char *raw)
{
	char esc[4 * 256 + 1];

	k2mc_log_escape(esc, sizeof(esc), raw);
	put(l, ",\"", 2);
	puts_(l, key);
	put(l, "\":", 2);
	put_json_str(l, esc);
}

static void vlog(enum k2mc_log_level lvl, const struct k2mc_log_fields *f, const char *fmt,
                 va_list ap)
{
	static const char *const text_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
	static const char *const json_names[] = {"error", "warn", "info", "debug"};
	char msg[MSG_MAX], esc[4 * MSG_MAX + 1], ts[48];
	struct line l;
	struct timespec now;
	struct tm tm;

	if (lvl > log_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	k2mc_log_escape(esc, sizeof(esc), msg);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	l.n = 0;
	if (log_format == K2MC_LOG_JSON) {
		/* RFC 3339, UTC, milliseconds: what Loki, Elasticsearch and
		 * journald's JSON readers parse without a pattern */
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		puts_(&l, "{\"ts\":\"");
		puts_(&l, ts);
		snprintf(ts, sizeof(ts), ".%03ldZ\",\"level\":\"", now.tv_nsec / 1000000);
		puts_(&l, ts);
		puts_(&l, json_names[lvl]);
		puts_(&l, "\",\"msg\":");
		put_json_str(&l, esc);
		if (f != NULL && f->topic != NULL)
			put_json_field(&l, "topic", f->topic);
		if (f != NULL && f->partition >= 0) {
			snprintf(ts, sizeof(ts), ",\"partition\":%d", (int)f->partition);
			puts_(&l, ts);
		}
		if (f != NULL && f->offset >= 0) {
			snprintf(ts, sizeof(ts), ",\"offset\":%lld", (long long)f->offset);
			puts_(&l, ts);
		}
		if (f != NULL && f->server != NULL)
			put_json_field(&l, "server", f->server);
		if (f != NULL && f->reason != NULL)
			put_json_field(&l, "reason", f->reason);
		put(&l, "}", 1);
	} else {
		strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
		puts_(&l, ts);
		snprintf(ts, sizeof(ts), ".%03ld k2mc ", now.tv_nsec / 1000000);
		puts_(&l, ts);
		puts_(&l, text_names[lvl]);
		put(&l, ": ", 2);
		puts_(&l, esc);
	}
	l.buf[l.n++] = '\n';
	l.buf[l.n] = '\0';
	flockfile(stderr);
	erase_status();
	fwrite(l.buf, 1, l.n, stderr);
	funlockfile(stderr);
}

void k2mc_logf(enum k2mc_log_level lvl, const struct k2mc_log_fields *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, f, fmt, ap);
	va_end(ap);
}

void k2mc_log(enum k2mc_log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, NULL, fmt, ap);
	va_end(ap);
}

void k2mc_log_kafka(const char *what, int syslog_level, const char *fac, const char *buf)
{
	enum k2mc_log_level lvl = syslog_level <= 3   ? K2MC_LOG_ERR
	                          : syslog_level == 4 ? K2MC_LOG_WARN
	                          : syslog_level <= 6 ? K2MC_LOG_INFO
	                                              : K2MC_LOG_DEBUG;

	k2mc_log_reason(lvl, fac, "%s: %s: %s", what, fac, buf);
}
