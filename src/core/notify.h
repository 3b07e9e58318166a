/* Tells the service manager that started k2mc (systemd, Type=notify) how far
 * it has got: READY=1 once the group has given it its first assignment, a
 * STATUS= line with each stats line, STOPPING=1 when the drain starts.
 * Not a log and not a watchdog. When NOTIFY_SOCKET is unset (k2mc was not
 * started by a service manager) every call sends nothing and returns 0.
 * Called from the main thread only. */
#ifndef K2MC_NOTIFY_H
#define K2MC_NOTIFY_H

/* Each returns 1 when the message was sent, 0 when there is nobody to tell
 * (or, for ready, READY=1 was already sent), and -errno when sending failed:
 * the first failure is logged, k2mc carries on (systemd then reports the
 * start as timed out, which is the right outcome for a broken socket).
 * fmt gives the STATUS= text; NULL sends the state alone. A newline in the
 * text becomes a space: each line of a notification is one assignment. */
__attribute__((format(printf, 1, 2))) int k2mc_notify_ready(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) int k2mc_notify_status(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) int k2mc_notify_stopping(const char *fmt, ...);

#endif
