/* Unit suite for notify.h: the datagrams a service manager receives. Each
 * test plays systemd's part itself: it binds an AF_UNIX datagram socket,
 * points NOTIFY_SOCKET at it and reads what the module sent. Criterion runs
 * every test in its own process, so the module's send-READY-once state and
 * the environment start fresh each time. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/notify.h"

struct listener {
	int fd;
	char dir[64];
	char path[108];
};

/* abstract: a name in the abstract namespace ("@..." in NOTIFY_SOCKET),
 * which libsystemd accepts as systemd itself may hand it out */
static void listen_notify(struct listener *l, int abstract)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 2};
	socklen_t len;

	l->dir[0] = '\0';
	l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert(l->fd >= 0, "socket: %s", strerror(errno));
	if (abstract) {
		snprintf(l->path, sizeof(l->path), "@k2mc-test-notify-%ld", (long)getpid());
		/* sun_path[0] = '\0', then the name without the '@' */
		memcpy(sa.sun_path + 1, l->path + 1, strlen(l->path) - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(l->path));
	} else {
		snprintf(l->dir, sizeof(l->dir), "/tmp/k2mc-notify.XXXXXX");
		cr_assert(mkdtemp(l->dir) != NULL, "mkdtemp: %s", strerror(errno));
		snprintf(l->path, sizeof(l->path), "%s/notify", l->dir);
		strcpy(sa.sun_path, l->path);
		len = sizeof(sa);
	}
	cr_assert(bind(l->fd, (struct sockaddr *)&sa, len) == 0, "bind %s: %s", l->path,
	          strerror(errno));
	/* a message that never comes fails the test instead of hanging it */
	setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert(setenv("NOTIFY_SOCKET", l->path, 1) == 0);
}

static void close_notify(struct listener *l)
{
	close(l->fd);
	if (l->dir[0] != '\0') {
		unlink(l->path);
		rmdir(l->dir);
	}
}

/* The next datagram, NUL-terminated; "" when none is waiting (nonblocking)
 * or none arrived within the receive timeout. */
static const char *next_msg(struct listener *l, int wait)
{
	static char buf[4096];
	ssize_t n = recv(l->fd, buf, sizeof(buf) - 1, wait ? 0 : MSG_DONTWAIT);

	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

Test(notify, not_supervised_sends_nothing)
{
	unsetenv("NOTIFY_SOCKET");
	cr_assert_eq(k2mc_notify_status("in %d/s", 1), 0);
	cr_assert_eq(k2mc_notify_ready("ready"), 0);
	cr_assert_eq(k2mc_notify_stopping(NULL), 0);
}

Test(notify, ready_then_status_then_stopping)
{
	struct listener l;

	listen_notify(&l, 0);
	cr_assert_eq(k2mc_notify_status("waiting for the first assignment from group %s", "g"), 1);
	cr_assert_str_eq(next_msg(&l, 1), "STATUS=waiting for the first assignment from group g");
	cr_assert_eq(k2mc_notify_ready("consuming: group %s", "g"), 1);
	cr_assert_str_eq(next_msg(&l, 1), "READY=1\nSTATUS=consuming: group g");
	cr_assert_eq(k2mc_notify_status("in %d/s out %d/s | consumed %d", 250, 240, 1000), 1);
	cr_assert_str_eq(next_msg(&l, 1), "STATUS=in 250/s out 240/s | consumed 1000");
	cr_assert_eq(k2mc_notify_stopping("draining"), 1);
	cr_assert_str_eq(next_msg(&l, 1), "STOPPING=1\nSTATUS=draining");
	cr_assert_eq(k2mc_notify_stopping(NULL), 1);
	cr_assert_str_eq(next_msg(&l, 1), "STOPPING=1");
	close_notify(&l);
}

/* main calls ready on every loop turn after the first assignment */
Test(notify, ready_is_sent_once)
{
	struct listener l;

	listen_notify(&l, 0);
	cr_assert_eq(k2mc_notify_ready(NULL), 1);
	cr_assert_str_eq(next_msg(&l, 1), "READY=1");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(k2mc_notify_ready("again"), 0);
	cr_assert_str_eq(next_msg(&l, 0), "", "READY=1 repeated");
	/* status lines still go out after it */
	cr_assert_eq(k2mc_notify_status("x"), 1);
	cr_assert_str_eq(next_msg(&l, 1), "STATUS=x");
	close_notify(&l);
}

/* A topic or error text holding a newline must not become an assignment of
 * its own (STATUS=a\nREADY=1 would announce readiness). */
Test(notify, newline_in_text_stays_text)
{
	struct listener l;

	listen_notify(&l, 0);
	cr_assert_eq(k2mc_notify_status("topic %s", "a\nREADY=1\nSTOPPING=1"), 1);
	cr_assert_str_eq(next_msg(&l, 1), "STATUS=topic a READY=1 STOPPING=1");
	close_notify(&l);
}

Test(notify, long_status_is_cut_not_overflowed)
{
	struct listener l;
	char big[4000];
	const char *m;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	listen_notify(&l, 0);
	cr_assert_eq(k2mc_notify_stopping("%s", big), 1);
	m = next_msg(&l, 1);
	cr_assert(strncmp(m, "STOPPING=1\nSTATUS=xxx", 21) == 0, "got '%.40s'", m);
	cr_assert(strlen(m) < sizeof(big) && strlen(m) >= 512, "length %zu", strlen(m));
	cr_assert_eq(strspn(m + strlen("STOPPING=1\nSTATUS="), "x"),
	             strlen(m) - strlen("STOPPING=1\nSTATUS="));
	close_notify(&l);
}

Test(notify, abstract_socket)
{
	struct listener l;

	listen_notify(&l, 1);
	cr_assert_eq(k2mc_notify_ready("up"), 1);
	cr_assert_str_eq(next_msg(&l, 1), "READY=1\nSTATUS=up");
	close_notify(&l);
}

/* Nobody bound at NOTIFY_SOCKET: an error code, one warning, no crash. */
Test(notify, unreachable_socket_warns_once, .init = cr_redirect_stderr)
{
	char line[512];
	FILE *err;
	int warnings = 0;

	cr_assert(setenv("NOTIFY_SOCKET", "/nonexistent/k2mc-notify", 1) == 0);
	cr_assert_lt(k2mc_notify_status("one"), 0);
	cr_assert_lt(k2mc_notify_ready("two"), 0);
	cr_assert_eq(k2mc_notify_ready("three"), 0, "READY is not retried");
	cr_assert_lt(k2mc_notify_stopping("four"), 0);
	fflush(stderr);
	err = cr_get_redirected_stderr();
	while (fgets(line, sizeof(line), err) != NULL)
		warnings += strstr(line, "NOTIFY_SOCKET=/nonexistent/k2mc-notify") != NULL;
	cr_assert_eq(warnings, 1, "expected one warning, got %d", warnings);
}
