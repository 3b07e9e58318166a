/* sd_notify(3) for k2mc: READY=1, STATUS= and STOPPING=1 through libsystemd,
 * which speaks the NOTIFY_SOCKET datagram protocol (path or abstract socket).
 * Not the place that decides when k2mc is ready: main calls it. */
#include "core/notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "core/log.h"

/* main thread only, like every call of this module */
static int ready_sent;
static int failure_logged;

/* STATUS= carries one line of free text (sd_notify(3)); the stats line is
 * about 200 bytes, so this only cuts a runaway message short. */
#define STATUS_MAX 512

__attribute__((format(printf, 2, 0))) static int send_state(const char *state, const char *fmt,
                                                            va_list ap)
{
	char msg[sizeof("STOPPING=1\nSTATUS=") + STATUS_MAX];
	size_t n = 0;
	int r;

	/* sd_notify() checks this too; checking first skips the formatting */
	if (getenv("NOTIFY_SOCKET") == NULL || (state == NULL && fmt == NULL))
		return 0;
	msg[0] = '\0';
	if (state != NULL)
		n = (size_t)snprintf(msg, sizeof(msg), "%s%s", state, fmt != NULL ? "\n" : "");
	if (fmt != NULL) {
		char *text;

		n += (size_t)snprintf(msg + n, sizeof(msg) - n, "STATUS=");
		text = msg + n;
		vsnprintf(text, sizeof(msg) - n, fmt, ap);
		/* a newline would start another assignment ("READY=1" in a
		 * topic name must stay text) */
		for (char *p = text; *p != '\0'; p++)
			if (*p == '\n')
				*p = ' ';
	}
	r = sd_notify(0, msg);
	if (r < 0 && !failure_logged) {
		failure_logged = 1;
		k2mc_warn("cannot notify the service manager (NOTIFY_SOCKET=%s): %s; it will not "
		          "see k2mc's state",
		          getenv("NOTIFY_SOCKET"), strerror(-r));
	}
	return r < 0 ? r : r > 0;
}

int k2mc_notify_ready(const char *fmt, ...)
{
	va_list ap;
	int r;

	if (ready_sent)
		return 0;
	va_start(ap, fmt);
	r = send_state("READY=1", fmt, ap);
	va_end(ap);
	/* sent or nobody listening: either way READY is never repeated; a
	 * failed send is not retried every loop turn either */
	ready_sent = 1;
	return r;
}

int k2mc_notify_status(const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = send_state(NULL, fmt, ap);
	va_end(ap);
	return r;
}

int k2mc_notify_stopping(const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = send_state("STOPPING=1", fmt, ap);
	va_end(ap);
	return r;
}
