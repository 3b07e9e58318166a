/* LD_PRELOAD library for the fencing tests: connect() to one IPv4 address
 * goes to another, so that a process can be put behind a relay the test
 * controls even where it learns addresses from the peer (the mock Kafka
 * cluster advertises its own broker address in metadata, so a relay given as
 * -b alone would be bypassed). Not for production use: no IPv6, one rule.
 *
 *     K2MC_REDIRECT="127.0.0.1:FROM=127.0.0.1:TO"
 *
 * Without the variable, or with one that does not parse, connect() is
 * untouched (the parse error is reported on stderr once). */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

/* Set once under pthread_once, read-only afterwards: pthread_once orders
 * the initialisation before every caller's reads. */
static connect_fn real_connect;
static struct sockaddr_in rule_from, rule_to;
static int rule_on;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* "A.B.C.D:PORT" into sa; 0 or -1. */
static int parse_addr(const char *s, size_t len, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = memchr(s, ':', len);
	char *end;
	long port;

	if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -1;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno != 0 || end != s + len || port <= 0 || port > 65535)
		return -1;
	sa->sin_port = htons((uint16_t)port);
	return 0;
}

static void init(void)
{
	const char *spec = getenv("K2MC_REDIRECT");
	const char *eq;

	real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
	if (spec == NULL || *spec == '\0')
		return;
	eq = strchr(spec, '=');
	if (eq == NULL || parse_addr(spec, (size_t)(eq - spec), &rule_from) != 0 ||
	    parse_addr(eq + 1, strlen(eq + 1), &rule_to) != 0) {
		fprintf(stderr, "redirect_shim: K2MC_REDIRECT='%s': expected "
				"A.B.C.D:PORT=A.B.C.D:PORT; not redirecting\n", spec);
		return;
	}
	rule_on = 1;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)addr;

	pthread_once(&init_once, init);
	if (real_connect == NULL) {
		errno = ENOSYS;
		return -1;
	}
	if (rule_on && addr != NULL && len >= (socklen_t)sizeof(*in) &&
	    addr->sa_family == AF_INET && in->sin_port == rule_from.sin_port &&
	    in->sin_addr.s_addr == rule_from.sin_addr.s_addr) {
		struct sockaddr_in to = *in;

		to.sin_addr = rule_to.sin_addr;
		to.sin_port = rule_to.sin_port;
		return real_connect(fd, (const struct sockaddr *)&to, sizeof(to));
	}
	return real_connect(fd, addr, len);
}
