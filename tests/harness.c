/* Integration-test harness; see harness.h. Processes are started with
 * fork/exec (PR_SET_PDEATHSIG needs the fork side), every wait is a poll
 * against a deadline, and nothing is ever signalled by name.
 * Not a test framework: no Criterion here, callers assert. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

extern char **environ;

#define POLL_STEP_MS 10
#define MAX_PROCS 64

/* k2mc's clock (core/clock.h): a deadline a test computes is one the
 * module under test compares on the same clock. */
int64_t h_now_ms(void)
{
	return k2mc_now_ms();
}

void h_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

__attribute__((format(printf, 3, 4))) static void fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;

	if (buf == NULL || len == 0)
		return;
	va_start(ap, f);
	vsnprintf(buf, len, f, ap);
	va_end(ap);
}

/* ---- ThreadSanitizer and Criterion -----------------------------------------
 * Criterion (BoxFort) maps its inheritable arena at
 * 0x200000000000 + (rand_r() & 0x3fffff) << 24 and gives up after 10 bases
 * whose pages are already mapped. Under TSan only 0x550000000000 to
 * 0x568000000000 of that range is free application memory (the rest is its
 * shadow, metadata and PROT_NONE guards), so a TSan test binary dies at
 * start with "Could not initialize inheritable arena" about 4 runs in 5
 * (Criterion issue #274). Every test binary links this file, so this rand_r
 * (glibc's algorithm) steers bits 15..21 so that base lands in
 * 0x560000000000..0x567fff000000; the low 15 bits stay random. TSan builds
 * only. */
#if defined(__SANITIZE_THREAD__)
int rand_r(unsigned int *seed);
int rand_r(unsigned int *seed)
{
	unsigned int next = *seed;
	int r;

	next = next * 1103515245u + 12345u;
	r = (int)((next / 65536u) % 2048u);
	next = next * 1103515245u + 12345u;
	r = (r << 10) ^ (int)((next / 65536u) % 1024u);
	next = next * 1103515245u + 12345u;
	r = (r << 10) ^ (int)((next / 65536u) % 1024u);
	*seed = next;
	return (r & ~0x3fffff) | 0x360000 | (r & 0x7fff);
}
#endif

/* ---- temp dir -------------------------------------------------------------*/

static char tmpdir[64];
static unsigned file_seq;

const char *h_tmpdir(void)
{
	if (tmpdir[0] == '\0') {
		snprintf(tmpdir, sizeof(tmpdir), "/tmp/k2mc-test.XXXXXX");
		if (mkdtemp(tmpdir) == NULL) {
			fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
			abort();
		}
		/* memcached drops to nobody; nothing it runs writes here, but
		 * k2mc-mock and sanitizer runtimes may, as whoever runs them */
		chmod(tmpdir, 0755);
	}
	return tmpdir;
}

char *h_tmppath(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", h_tmpdir(), name);
	return buf;
}

const char *h_bin(const char *env_name, const char *fallback)
{
	const char *v = getenv(env_name);

	return v != NULL && v[0] != '\0' ? v : fallback;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void tmpdir_remove(void)
{
	const char *keep = getenv("K2MC_KEEP_TMP");

	if (tmpdir[0] == '\0')
		return;
	if (keep != NULL && keep[0] != '\0' && strcmp(keep, "0") != 0) {
		fprintf(stderr, "harness: keeping %s\n", tmpdir);
	} else {
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
	tmpdir[0] = '\0';
}

/* ---- process registry and watchdog -------------------------------------------*/

struct entry {
	pid_t pid;
	char tag[32];
	int reaped;
	int status;
	int ctl_fd; /* its stdin pipe's write end, or -1 */
};

/* this process only; the watchdog has its own copy of the PIDs */
static struct entry procs[MAX_PROCS];
static int nprocs;
static int watchdog_fd = -1;
static pid_t watchdog_pid = -1;
static pid_t owner_pid; /* the process that started the watchdog */
static int atexit_done;

/* A record on the watchdog pipe: 8 bytes, below PIPE_BUF, so atomic. */
struct wd_msg {
	int32_t op; /* 1 track, 0 forget */
	int32_t pid;
};

/* The watchdog: a forked copy of this process that only reads the pipe. It
 * uses async-signal-safe calls only (the parent may have threads). */
static void watchdog_main(int rfd)
{
	pid_t pids[MAX_PROCS];
	int n = 0;
	struct wd_msg m;

	/* a ^C to the process group must not end it before its cleanup */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	for (;;) {
		ssize_t r = read(rfd, &m, sizeof(m));

		if (r < 0 && errno == EINTR)
			continue;
		if (r != (ssize_t)sizeof(m))
			break; /* EOF: the test process is gone or done */
		if (m.op == 1 && n < MAX_PROCS) {
			pids[n++] = m.pid;
		} else if (m.op == 0) {
			for (int i = 0; i < n; i++) {
				if (pids[i] == m.pid) {
					pids[i] = pids[--n];
					break;
				}
			}
		}
	}
	for (int i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	if (n > 0) {
		/* the test process died without h_cleanup: say so, and where
		 * its logs are (tmpdir was made before this fork) */
		static const char m1[] = "harness: test process died; SIGKILLed the processes it "
					 "started; their output is in ";
		(void)!write(2, m1, sizeof(m1) - 1);
		(void)!write(2, tmpdir, strlen(tmpdir));
		(void)!write(2, "\n", 1);
	}
	_exit(0);
}

static int watchdog_start(void)
{
	int p[2];
	pid_t pid;

	if (watchdog_fd >= 0 && owner_pid == getpid())
		return 0;
	h_tmpdir(); /* the watchdog names it if the test dies */
	if (pipe2(p, O_CLOEXEC) != 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		/* hold no other descriptor: a test's pipe to a child's stdin
		 * must see EOF when the test closes it */
		if (p[0] > 3)
			close_range(3, (unsigned)p[0] - 1, 0);
		close_range((unsigned)p[0] + 1, ~0U, 0);
		watchdog_main(p[0]);
	}
	close(p[0]);
	watchdog_fd = p[1];
	watchdog_pid = pid;
	owner_pid = getpid();
	return 0;
}

static void watchdog_send(int op, pid_t pid)
{
	struct wd_msg m = { op, (int32_t)pid };

	if (watchdog_fd >= 0)
		(void)!write(watchdog_fd, &m, sizeof(m));
}

static struct entry *find(pid_t pid)
{
	for (int i = 0; i < nprocs; i++) {
		if (procs[i].pid == pid)
			return &procs[i];
	}
	return NULL;
}

static void reaped(struct entry *e, int status)
{
	e->reaped = 1;
	e->status = status;
	watchdog_send(0, e->pid);
}

int h_exited(pid_t pid, int *status)
{
	struct entry *e = find(pid);
	int st;
	pid_t r;

	if (e == NULL)
		return -ECHILD;
	if (!e->reaped) {
		r = waitpid(pid, &st, WNOHANG);
		if (r == 0)
			return 0;
		if (r < 0)
			st = -1; /* reaped elsewhere: only if someone else waits */
		reaped(e, st);
	}
	if (status != NULL)
		*status = e->status;
	return 1;
}

int h_wait(pid_t pid, int timeout_ms, int *status)
{
	int64_t deadline = h_now_ms() + timeout_ms;

	for (;;) {
		int r = h_exited(pid, status);

		if (r != 0)
			return r < 0 ? r : 0;
		if (h_now_ms() >= deadline)
			return -ETIMEDOUT;
		h_sleep_ms(POLL_STEP_MS);
	}
}

int h_signal(pid_t pid, int sig)
{
	struct entry *e = find(pid);

	/* an unreaped child keeps its PID, so this cannot hit a stranger */
	if (e == NULL || e->reaped)
		return -ESRCH;
	return kill(pid, sig) == 0 ? 0 : -errno;
}

int h_pause(pid_t pid, int timeout_ms)
{
	struct entry *e = find(pid);
	int64_t deadline = h_now_ms() + timeout_ms;
	int rc = h_signal(pid, SIGSTOP);

	if (rc != 0)
		return rc;
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WUNTRACED | WNOHANG);

		if (r == pid && WIFSTOPPED(st))
			return 0;
		if (r == pid || r < 0) {
			reaped(e, r < 0 ? -1 : st);
			return -ECHILD;
		}
		if (h_now_ms() >= deadline)
			return -ETIMEDOUT;
		h_sleep_ms(1);
	}
}

int h_resume(pid_t pid)
{
	return h_signal(pid, SIGCONT);
}

int h_stop(pid_t pid, int grace_ms)
{
	int st = 0;

	if (find(pid) == NULL)
		return -ECHILD;
	if (h_signal(pid, SIGTERM) == 0)
		h_signal(pid, SIGCONT);
	if (h_wait(pid, grace_ms, &st) == 0)
		return st;
	h_signal(pid, SIGKILL);
	h_wait(pid, 10000, &st);
	return st;
}

const char *h_status_str(int status, char *buf, size_t len)
{
	if (status == -1)
		fmt(buf, len, "unknown (reaped elsewhere)");
	else if (WIFEXITED(status))
		fmt(buf, len, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		fmt(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
		    strsignal(WTERMSIG(status)));
	else
		fmt(buf, len, "status 0x%x", (unsigned)status);
	return buf;
}

int h_exit_code(int status)
{
	return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void h_cleanup(void)
{
	if (owner_pid != 0 && owner_pid != getpid())
		return; /* a forked copy (not ours to clean) */
	/* SIGKILL: the test is over and nothing it started holds state worth
	 * a graceful stop (memcached alone takes 0.5 s to honour SIGTERM);
	 * tests that check a graceful stop use h_stop or h_signal */
	for (int i = 0; i < nprocs; i++) {
		if (!procs[i].reaped && h_exited(procs[i].pid, NULL) == 0) {
			kill(procs[i].pid, SIGKILL);
			if (h_wait(procs[i].pid, 10000, NULL) != 0)
				fprintf(stderr, "harness: %s (pid %d) survived SIGKILL for 10 s\n",
					procs[i].tag, (int)procs[i].pid);
		}
	}
	for (int i = 0; i < nprocs; i++)
		if (procs[i].ctl_fd >= 0)
			close(procs[i].ctl_fd);
	nprocs = 0;
	if (watchdog_fd >= 0) {
		close(watchdog_fd);
		watchdog_fd = -1;
		waitpid(watchdog_pid, NULL, 0);
		watchdog_pid = -1;
	}
	tmpdir_remove();
}

static void cleanup_atexit(void)
{
	h_cleanup();
}

/* environ with the "NAME=VALUE" entries of extra added or replacing;
 * built before fork so the child only calls exec. */
static char **build_env(const char *const *extra)
{
	size_t n = 0, m = 0, k;
	char **env;

	while (environ[n] != NULL)
		n++;
	while (extra != NULL && extra[m] != NULL)
		m++;
	env = calloc(n + m + 1, sizeof(*env));
	if (env == NULL)
		return NULL;
	memcpy(env, environ, n * sizeof(*env));
	for (size_t i = 0; i < m; i++) {
		const char *eq = strchr(extra[i], '=');
		size_t nl = eq ? (size_t)(eq - extra[i]) + 1 : strlen(extra[i]);

		for (k = 0; k < n; k++) {
			if (strncmp(env[k], extra[i], nl) == 0)
				break;
		}
		env[k] = (char *)extra[i];
		if (k == n)
			n++;
	}
	env[n] = NULL;
	return env;
}

int h_spawn(struct h_proc *p, const char *tag, const char *const argv[],
	    const struct h_spawn_opts *o)
{
	static const struct h_spawn_opts none = { 0 };
	int in_fd = -1, out_fd = -1, err_fd = -1, ctl[2] = { -1, -1 };
	pid_t parent = getpid(), pid;
	char **env = NULL;
	int rc = 0;

	if (o == NULL)
		o = &none;
	p->pid = -1;
	p->ctl_fd = -1;
	if (nprocs == MAX_PROCS)
		return -EMFILE;
	if (watchdog_start() != 0)
		return -EAGAIN;
	if (!atexit_done) {
		atexit(cleanup_atexit);
		atexit_done = 1;
	}
	file_seq++;
	snprintf(p->out_path, sizeof(p->out_path), "%s/%s.%u.out", h_tmpdir(), tag, file_seq);
	snprintf(p->err_path, sizeof(p->err_path), "%s/%s.%u.err", h_tmpdir(), tag, file_seq);
	out_fd = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	err_fd = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (o->stdin_pipe) {
		if (pipe2(ctl, O_CLOEXEC) != 0)
			ctl[0] = ctl[1] = -1;
		in_fd = ctl[0];
	} else {
		in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	env = build_env(o->env);
	if (out_fd < 0 || err_fd < 0 || in_fd < 0 || env == NULL) {
		rc = -(errno ? errno : ENOMEM);
		goto out;
	}
	fflush(NULL); /* no buffered output duplicated into the child */
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		goto out;
	}
	if (pid == 0) {
		/* only async-signal-safe calls until exec */
		dup2(in_fd, 0);
		dup2(out_fd, 1);
		dup2(err_fd, 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		execvpe(argv[0], (char *const *)argv, env);
		(void)!write(2, "harness: exec failed: ", 22);
		(void)!write(2, argv[0], strlen(argv[0]));
		(void)!write(2, "\n", 1);
		_exit(127);
	}
	procs[nprocs].pid = pid;
	snprintf(procs[nprocs].tag, sizeof(procs[nprocs].tag), "%s", tag);
	procs[nprocs].reaped = 0;
	procs[nprocs].status = 0;
	procs[nprocs].ctl_fd = o->stdin_pipe ? ctl[1] : -1;
	nprocs++;
	watchdog_send(1, pid);
	p->pid = pid;
	if (o->stdin_pipe) {
		p->ctl_fd = ctl[1];
		ctl[1] = -1;
	}
out:
	free(env);
	if (out_fd >= 0)
		close(out_fd);
	if (err_fd >= 0)
		close(err_fd);
	if (in_fd >= 0)
		close(in_fd);
	if (ctl[1] >= 0)
		close(ctl[1]);
	return rc;
}

/* ---- files ------------------------------------------------------------------*/

char *h_file_read(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (f == NULL)
		return NULL;
	for (;;) {
		size_t r;

		if (cap - n < 65536) {
			char *nb = realloc(buf, cap + 65536 + 1);

			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
			cap += 65536;
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
}

int h_file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

int h_file_contains(const char *path, const char *needle)
{
	size_t len;
	char *b = h_file_read(path, &len);
	int found;

	if (b == NULL)
		return 0;
	found = memmem(b, len, needle, strlen(needle)) != NULL;
	free(b);
	return found;
}

char *h_file_tail(const char *path, int nlines)
{
	size_t len, start;
	char *b = h_file_read(path, &len), *t;

	if (b == NULL)
		return strdup("");
	start = len;
	if (start > 0 && b[start - 1] == '\n')
		start--;
	while (start > 0 && nlines > 0) {
		start--;
		if (b[start] == '\n')
			nlines--;
	}
	if (b[start] == '\n')
		start++;
	if (len - start > 4096)
		start = len - 4096;
	t = strdup(b + start);
	free(b);
	return t ? t : strdup("");
}

int h_wait_line(const char *path, const char *regex, size_t *offset, pid_t pid,
		int timeout_ms, char *line, size_t len)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	size_t from = offset != NULL ? *offset : 0;
	regex_t re;
	int rc = -ETIMEDOUT;

	if (regcomp(&re, regex, REG_EXTENDED | REG_NOSUB | REG_NEWLINE) != 0)
		return -EINVAL;
	for (;;) {
		/* decided before reading, so a line written just before the
		 * exit is still seen */
		int gone = pid > 0 && h_exited(pid, NULL) != 0;
		size_t n;
		char *b = h_file_read(path, &n);

		if (b != NULL && from < n) {
			char *p = b + from;

			/* complete lines only: a line still being written may not
			 * match yet */
			for (char *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
				*nl = '\0';
				if (regexec(&re, p, 0, NULL, 0) == 0) {
					fmt(line, len, "%s", p);
					if (offset != NULL)
						*offset = (size_t)(nl + 1 - b);
					rc = 0;
					break;
				}
			}
			if (rc != 0)
				from = (size_t)(p - b);
		}
		free(b);
		if (rc == 0)
			break;
		if (gone) {
			rc = -ESRCH;
			break;
		}
		if (h_now_ms() >= deadline)
			break;
		h_sleep_ms(POLL_STEP_MS);
	}
	regfree(&re);
	return rc;
}

/* ---- servers ---------------------------------------------------------------*/

int h_free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd < 0)
		return -errno;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* Connects to 127.0.0.1:port and asks "stats": the server's PID, 0 if the
 * connection failed (not listening yet), -1 on an unexpected answer. */
static long memcached_pid_on(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 1, 0 };
	char buf[8192];
	size_t n = 0;
	long pid = -1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return 0;
	}
	if (send(fd, "stats\r\n", 7, MSG_NOSIGNAL) == 7) {
		while (n < sizeof(buf) - 1) {
			ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);

			if (r <= 0)
				break;
			n += (size_t)r;
			buf[n] = '\0';
			if (strstr(buf, "END\r\n") != NULL)
				break;
		}
		buf[n] = '\0';
		const char *p = strstr(buf, "STAT pid ");

		if (p != NULL)
			pid = strtol(p + 9, NULL, 10);
	}
	close(fd);
	return pid;
}

static int memcached_try(struct h_memcached *m, int port, const char *const extra[])
{
	const char *argv[64];
	char portbuf[16];
	int n = 0, rc;
	int64_t deadline;

	snprintf(portbuf, sizeof(portbuf), "%d", port);
	argv[n++] = "memcached";
	argv[n++] = "-u";
	argv[n++] = "nobody";
	argv[n++] = "-l";
	argv[n++] = "127.0.0.1";
	argv[n++] = "-p";
	argv[n++] = portbuf;
	argv[n++] = "-U";
	argv[n++] = "0";
	argv[n++] = "-m";
	argv[n++] = "256";
	for (int i = 0; extra != NULL && extra[i] != NULL && n < 63; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	rc = h_spawn(&m->proc, "memcached", argv, NULL);
	if (rc != 0)
		return rc;
	m->port = port;
	deadline = h_now_ms() + 10000;
	while (h_now_ms() < deadline) {
		long pid;

		if (h_exited(m->proc.pid, NULL) != 0)
			return -EADDRINUSE; /* most likely: the port was taken */
		pid = memcached_pid_on(port);
		if (pid == m->proc.pid)
			return 0;
		/* pid != 0: someone else's server answers on this port; ours
		 * will fail to bind and exit */
		h_sleep_ms(POLL_STEP_MS);
	}
	h_stop(m->proc.pid, 1000);
	return -ETIMEDOUT;
}

int h_memcached_start(struct h_memcached *m, int port, const char *const extra[])
{
	int rc = -EADDRINUSE;

	for (int attempt = 0; attempt < 5 && rc == -EADDRINUSE; attempt++) {
		int p = port > 0 ? port : h_free_port();

		if (p <= 0)
			return -EADDRNOTAVAIL;
		rc = memcached_try(m, p, extra);
		if (rc == -EADDRINUSE) {
			char *t = h_file_tail(m->proc.err_path, 3);

			fprintf(stderr, "harness: memcached on port %d failed to start: %s", p, t);
			free(t);
			if (port > 0) /* a fixed port may still be in TIME_WAIT */
				h_sleep_ms(200);
		}
	}
	return rc;
}

int h_mock_start(struct h_mock *mk, const char *const args[], int stdin_control, int timeout_ms)
{
	const char *argv[128];
	struct h_spawn_opts o = { .stdin_pipe = stdin_control };
	char line[512];
	int n = 0, rc;

	argv[n++] = h_bin("K2MC_MOCK", "build/k2mc-mock");
	for (int i = 0; args != NULL && args[i] != NULL && n < 127; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	mk->bootstrap[0] = '\0';
	mk->out_off = 0;
	mk->has_expect = 0;
	for (int i = 0; args != NULL && args[i] != NULL; i++)
		if (strcmp(args[i], "--expect") == 0 || strncmp(args[i], "--expect=", 9) == 0)
			mk->has_expect = 1;
	rc = h_spawn(&mk->proc, "mock", argv, &o);
	if (rc != 0)
		return rc;
	rc = h_wait_line(mk->proc.out_path, "^bootstrap=", &mk->out_off, mk->proc.pid, timeout_ms,
			 line, sizeof(line));
	if (rc != 0)
		return rc;
	fmt(mk->bootstrap, sizeof(mk->bootstrap), "%s", line + strlen("bootstrap="));
	return 0;
}

int h_mock_wait_produced(struct h_mock *mk, int timeout_ms, uint64_t *produced)
{
	int64_t deadline = h_now_ms() + timeout_ms;
	unsigned long long p = 0, a = 0, f = 0;
	char line[512];
	int rc, left;

	rc = h_wait_line(mk->proc.out_path, "^produced=[0-9]+ acked=[0-9]+ failed=[0-9]+",
			 &mk->out_off, mk->proc.pid, timeout_ms, line, sizeof(line));
	if (rc != 0)
		return rc;
	if (sscanf(line, "produced=%llu acked=%llu failed=%llu", &p, &a, &f) != 3)
		return -EPROTO;
	if (produced != NULL)
		*produced = a;
	if (f > 0)
		return -EIO;
	if (!mk->has_expect)
		return 0;
	/* printed after the file is renamed into place: it is complete */
	left = (int)(deadline - h_now_ms());
	return h_wait_line(mk->proc.out_path, "^expect=", &mk->out_off, mk->proc.pid,
			   left > 0 ? left : 0, NULL, 0);
}

int h_mock_command(struct h_mock *mk, const char *cmd, char *answer, size_t len, int timeout_ms)
{
	size_t n = strlen(cmd);
	char line[512];
	int rc;

	if (mk->proc.ctl_fd < 0)
		return -ENOTCONN;
	if (write(mk->proc.ctl_fd, cmd, n) != (ssize_t)n || write(mk->proc.ctl_fd, "\n", 1) != 1)
		return -errno;
	rc = h_wait_line(mk->proc.out_path, "^(ok|error)( |$)", &mk->out_off, mk->proc.pid,
			 timeout_ms, line, sizeof(line));
	if (rc != 0)
		return rc;
	fmt(answer, len, "%s", line);
	return strncmp(line, "ok", 2) == 0 ? 0 : -EIO;
}

int h_k2mc_start(struct h_proc *k, const struct h_k2mc_opts *o, const char *const args[])
{
	static const struct h_k2mc_opts dflt = { 0 };
	struct h_spawn_opts so = { 0 };
	const char *argv[128];
	int n = 0;

	if (o == NULL)
		o = &dflt;
	so.env = o->env;
	if (o->no_aslr) {
		argv[n++] = "setarch";
		argv[n++] = "-R";
	}
	argv[n++] = o->bin != NULL ? o->bin : h_bin("K2MC_BIN", "build/k2mc");
	for (int i = 0; args != NULL && args[i] != NULL && n < 127; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return h_spawn(k, "k2mc", argv, &so);
}

/* ---- summary -----------------------------------------------------------------*/

static const char *after(const char *s, const char *lit)
{
	const char *p = strstr(s, lit);

	return p != NULL ? p + strlen(lit) : NULL;
}

int h_summary_parse(const char *path, struct h_summary *s)
{
	char *b = h_file_read(path, NULL), *line = NULL, *p, *save = NULL, *tok;
	unsigned long long c, w, d, sk, u;
	int rc = 0;

	memset(s, 0, sizeof(*s));
	if (b == NULL)
		return -ENOENT;
	for (p = b; (p = strstr(p, "k2mc: summary: ")) != NULL; p++)
		line = p;
	if (line == NULL) {
		rc = -ENOENT;
		goto out;
	}
	p = strchr(line, '\n');
	if (p != NULL)
		*p = '\0';
	if (sscanf(line, "k2mc: summary: consumed %llu written %llu deleted %llu skipped %llu", &c,
		   &w, &d, &sk) != 4 ||
	    (p = (char *)after(line, " unwritten ")) == NULL || sscanf(p, "%llu", &u) != 1 ||
	    (p = (char *)after(line, "committed:")) == NULL) {
		rc = -EPROTO;
		goto out;
	}
	s->consumed = c;
	s->written = w;
	s->deleted = d;
	s->skipped = sk;
	s->unwritten = u;
	s->coalesced = 0;
	if ((p = (char *)after(line, " coalesced ")) != NULL && sscanf(p, "%llu", &u) == 1)
		s->coalesced = u;
	if ((p = (char *)after(line, " lost_to_retention ")) != NULL && sscanf(p, "%llu", &u) == 1)
		s->lost = u;
	p = (char *)after(line, "committed:");
	/* "topic[p]=offset" tokens up to the end of the line or a ';' that
	 * starts whatever else the summary says after them */
	for (tok = strtok_r(p, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
		size_t tl = strlen(tok);
		int last = tl > 0 && tok[tl - 1] == ';';
		char *br = strrchr(tok, '[');
		int part;
		long long off;
		char junk;

		if (last)
			tok[tl - 1] = '\0';
		if (br == NULL)
			break; /* not an offset: the list has ended */
		if (sscanf(br, "[%d]=%lld%c", &part, &off, &junk) != 2 ||
		    s->ncommitted == H_MAX_PARTS) {
			rc = -EPROTO;
			goto out;
		}
		fmt(s->committed[s->ncommitted].topic, sizeof(s->committed[0].topic), "%.*s",
		    (int)(br - tok), tok);
		s->committed[s->ncommitted].partition = part;
		s->committed[s->ncommitted].offset = off;
		s->ncommitted++;
		if (last)
			break;
	}
out:
	free(b);
	return rc;
}

int64_t h_summary_committed(const struct h_summary *s, const char *topic, int32_t partition)
{
	for (int i = 0; i < s->ncommitted; i++) {
		if (s->committed[i].partition == partition &&
		    strcmp(s->committed[i].topic, topic) == 0)
			return s->committed[i].offset;
	}
	return -1;
}

/* ---- memcached contents -------------------------------------------------------*/

struct exp_entry {
	const char *key; /* prefixed, NUL-terminated, in keybuf */
	size_t klen;
	const char *val; /* points into the file buffer */
	size_t vlen;
	int del;
	int seen;
};

__attribute__((format(printf, 2, 3))) static void note(struct h_verify *v, const char *f, ...)
{
	size_t used = strlen(v->first);
	va_list ap;

	if (h_verify_mismatches(v) > 5 || used + 2 >= sizeof(v->first))
		return;
	va_start(ap, f);
	vsnprintf(v->first + used, sizeof(v->first) - used, f, ap);
	va_end(ap);
	used = strlen(v->first);
	if (used + 1 < sizeof(v->first)) {
		v->first[used] = '\n';
		v->first[used + 1] = '\0';
	}
}

static int by_key(const void *a, const void *b)
{
	const struct exp_entry *x = *(struct exp_entry *const *)a;
	const struct exp_entry *y = *(struct exp_entry *const *)b;
	size_t n = x->klen < y->klen ? x->klen : y->klen;
	int c = memcmp(x->key, y->key, n);

	return c != 0 ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

size_t h_verify_mismatches(const struct h_verify *v)
{
	return v->missing + v->wrong + v->present;
}

/* Parses the expect file into entries; keys get the prefix. */
static int parse_expect(char *buf, size_t len, const char *prefix, struct exp_entry **out,
			size_t *nout, char **keybuf, struct h_verify *v)
{
	size_t plen = prefix ? strlen(prefix) : 0, n = 0, cap = 0, kused = 0;
	struct exp_entry *e = NULL;
	char *kb = malloc(len + (len / 4 + 16) * (plen + 1)), *p = buf, *end = buf + len;
	size_t lineno = 0;

	if (kb == NULL)
		return -ENOMEM;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *line = p, *key, *sp;
		size_t llen = nl ? (size_t)(nl - p) : (size_t)(end - p);

		p = nl ? nl + 1 : end;
		lineno++;
		if (llen == 0)
			continue;
		line[llen] = '\0';
		if (n == cap) {
			struct exp_entry *ne = realloc(e, (cap ? cap * 2 : 4096) * sizeof(*e));

			if (ne == NULL)
				goto nomem;
			e = ne;
			cap = cap ? cap * 2 : 4096;
		}
		if (llen < 3 || (line[0] != 'S' && line[0] != 'D') || line[1] != ' ') {
			fmt(v->first, sizeof(v->first), "expect file line %zu malformed: '%.80s'",
			    lineno, line);
			free(e);
			free(kb);
			return -EPROTO;
		}
		key = line + 2;
		sp = strchr(key, ' ');
		memset(&e[n], 0, sizeof(e[n]));
		e[n].del = line[0] == 'D';
		if (e[n].del) {
			e[n].klen = strlen(key);
		} else {
			if (sp == NULL) {
				fmt(v->first, sizeof(v->first),
				    "expect file line %zu: S without a value: '%.80s'", lineno, line);
				free(e);
				free(kb);
				return -EPROTO;
			}
			e[n].klen = (size_t)(sp - key);
			e[n].val = sp + 1;
			e[n].vlen = strlen(sp + 1);
		}
		memcpy(kb + kused, prefix ? prefix : "", plen);
		memcpy(kb + kused + plen, key, e[n].klen);
		kb[kused + plen + e[n].klen] = '\0';
		e[n].key = kb + kused; /* kb is never reallocated */
		e[n].klen += plen;
		kused += e[n].klen + 1;
		n++;
	}
	*out = e;
	*nout = n;
	*keybuf = kb;
	return 0;
nomem:
	free(e);
	free(kb);
	return -ENOMEM;
}

static void check_chunk(memcached_st *memc, struct exp_entry *e, size_t n, struct h_verify *v,
			memcached_return_t *err)
{
	const char *keys[1000];
	size_t lens[1000];
	struct exp_entry *sorted[1000];
	memcached_result_st *res;
	memcached_return_t rc;

	for (size_t i = 0; i < n; i++) {
		keys[i] = e[i].key;
		lens[i] = e[i].klen;
		sorted[i] = &e[i];
	}
	qsort(sorted, n, sizeof(sorted[0]), by_key);
	rc = memcached_mget(memc, keys, lens, n);
	if (rc != MEMCACHED_SUCCESS) {
		*err = rc;
		return;
	}
	while ((res = memcached_fetch_result(memc, NULL, &rc)) != NULL) {
		struct exp_entry probe = { .key = memcached_result_key_value(res),
					   .klen = memcached_result_key_length(res) };
		struct exp_entry *pp = &probe, **hit;
		const char *val = memcached_result_value(res);
		size_t vlen = memcached_result_length(res);

		hit = bsearch(&pp, sorted, n, sizeof(sorted[0]), by_key);
		if (hit != NULL && !(*hit)->seen) {
			struct exp_entry *x = *hit;

			x->seen = 1;
			if (x->del) {
				v->present++;
				/* val is not NUL-terminated: bound every %s by vlen */
				note(v, "%.*s: deleted (tombstone last) but present with '%.*s%s'",
				     (int)x->klen, x->key, (int)(vlen < 40 ? vlen : 40),
				     val ? val : "", vlen > 40 ? "..." : "");
			} else if (vlen != x->vlen || memcmp(val, x->val, vlen) != 0) {
				v->wrong++;
				note(v, "%.*s: expected '%.40s%s' (%zu bytes), got '%.*s%s' (%zu bytes)",
				     (int)x->klen, x->key, x->val, x->vlen > 40 ? "..." : "", x->vlen,
				     (int)(vlen < 40 ? vlen : 40), val ? val : "", vlen > 40 ? "..." : "",
				     vlen);
			}
		}
		memcached_result_free(res);
	}
	if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
		*err = rc;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (!e[i].seen && !e[i].del) {
			v->missing++;
			note(v, "%.*s: missing, expected '%.40s%s'", (int)e[i].klen, e[i].key, e[i].val,
			     e[i].vlen > 40 ? "..." : "");
		}
	}
}

int h_verify_memcached(const char *expect_path, const char *host, int port,
		       const char *key_prefix, struct h_verify *v)
{
	size_t len = 0, n = 0;
	char *buf, *keybuf = NULL;
	struct exp_entry *e = NULL;
	memcached_st *memc = NULL;
	memcached_return_t err = MEMCACHED_SUCCESS;
	memcached_stat_st *st;
	int rc;

	memset(v, 0, sizeof(*v));
	buf = h_file_read(expect_path, &len);
	if (buf == NULL) {
		rc = -errno;
		fmt(v->first, sizeof(v->first), "cannot read %s: %s", expect_path, strerror(errno));
		return rc ? rc : -EIO;
	}
	rc = parse_expect(buf, len, key_prefix, &e, &n, &keybuf, v);
	if (rc != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (e[i].del)
			v->deletes++;
		else
			v->sets++;
	}
	memc = memcached_create(NULL);
	if (memc == NULL || memcached_server_add(memc, host, (in_port_t)port) != MEMCACHED_SUCCESS) {
		fmt(v->first, sizeof(v->first), "cannot set up libmemcached for %s:%d", host, port);
		rc = -ENOMEM;
		goto out;
	}
	memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 5000);
	memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 2000);
	for (size_t i = 0; i < n && err == MEMCACHED_SUCCESS; i += 1000)
		check_chunk(memc, e + i, n - i < 1000 ? n - i : 1000, v, &err);
	if (err != MEMCACHED_SUCCESS) {
		fmt(v->first, sizeof(v->first), "fetching from %s:%d failed: %s (%s)", host, port,
		    memcached_strerror(memc, err), memcached_last_error_message(memc));
		rc = -EIO;
		goto out;
	}
	st = memcached_stat(memc, NULL, &err);
	if (st != NULL && err == MEMCACHED_SUCCESS)
		v->server_items = st->curr_items;
	if (st != NULL)
		memcached_stat_free(memc, st);
	rc = 0;
out:
	if (memc != NULL)
		memcached_free(memc);
	free(e);
	free(keybuf);
	free(buf);
	return rc;
}

/* ---- Kafka offsets ------------------------------------------------------------*/

struct h_kafka {
	rd_kafka_t *rk;
};

struct h_kafka *h_kafka_open(const char *bootstrap, const char *group, char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	struct h_kafka *k = calloc(1, sizeof(*k));
	char e[512];

	if (conf == NULL || k == NULL) {
		fmt(err, errlen, "out of memory");
		goto fail;
	}
	if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, e, sizeof(e)) ||
	    rd_kafka_conf_set(conf, "group.id", group ? group : "k2mc-test-probe", e, sizeof(e)) ||
	    rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof(e)) ||
	    rd_kafka_conf_set(conf, "client.id", "k2mc-test-probe", e, sizeof(e)) ||
	    /* a mock that stops before this handle closes is not news */
	    rd_kafka_conf_set(conf, "log_level", "2", e, sizeof(e))) {
		fmt(err, errlen, "config: %s", e);
		goto fail;
	}
	k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
	if (k->rk == NULL) {
		fmt(err, errlen, "rd_kafka_new: %s", e);
		goto fail;
	}
	return k;
fail:
	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	free(k);
	return NULL;
}

void h_kafka_close(struct h_kafka *k)
{
	if (k == NULL)
		return;
	/* never subscribed: nothing to leave, destroy at once */
	rd_kafka_destroy_flags(k->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	free(k);
}

int h_kafka_partitions(struct h_kafka *k, const char *topic, int timeout_ms)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->rk, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t e;
	int n;

	if (rkt == NULL)
		return -EINVAL;
	e = rd_kafka_metadata(k->rk, 0, rkt, &md, timeout_ms);
	rd_kafka_topic_destroy(rkt);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		return e == RD_KAFKA_RESP_ERR__TIMED_OUT ? -ETIMEDOUT : -EIO;
	n = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR
		    ? md->topics[0].partition_cnt
		    : -ENOENT;
	rd_kafka_metadata_destroy(md);
	return n;
}

int h_kafka_watermarks(struct h_kafka *k, const char *topic, int n, int64_t *start,
		       int64_t *end, int timeout_ms)
{
	for (int p = 0; p < n; p++) {
		int64_t lo, hi;
		rd_kafka_resp_err_t e =
			rd_kafka_query_watermark_offsets(k->rk, topic, p, &lo, &hi, timeout_ms);

		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			return e == RD_KAFKA_RESP_ERR__TIMED_OUT ? -ETIMEDOUT : -EIO;
		if (start != NULL)
			start[p] = lo;
		if (end != NULL)
			end[p] = hi;
	}
	return 0;
}

int h_kafka_end_offsets(struct h_kafka *k, const char *topic, int n, int64_t *end,
			int timeout_ms)
{
	return h_kafka_watermarks(k, topic, n, NULL, end, timeout_ms);
}

int h_kafka_committed(struct h_kafka *k, const char *topic, int n, int64_t *off,
		      int timeout_ms)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
	rd_kafka_resp_err_t e;
	int rc = 0;

	for (int p = 0; p < n; p++)
		rd_kafka_topic_partition_list_add(l, topic, p);
	e = rd_kafka_committed(k->rk, l, timeout_ms);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rc = e == RD_KAFKA_RESP_ERR__TIMED_OUT ? -ETIMEDOUT : -EIO;
		goto out;
	}
	for (int i = 0; i < l->cnt; i++) {
		int p = l->elems[i].partition;

		if (l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rc = -EIO;
			goto out;
		}
		if (p >= 0 && p < n)
			off[p] = l->elems[i].offset >= 0 ? l->elems[i].offset : -1;
	}
out:
	rd_kafka_topic_partition_list_destroy(l);
	return rc;
}

int h_offsets_diff(const int64_t *a, const int64_t *b, int n, char *buf, size_t len)
{
	int d = 0;

	if (buf != NULL && len > 0)
		buf[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (a[i] == b[i])
			continue;
		if (d < 8 && buf != NULL) {
			size_t used = strlen(buf);

			fmt(buf + used, len - used, "%sp%d: %" PRId64 " != %" PRId64, d ? ", " : "", i,
			    a[i], b[i]);
		}
		d++;
	}
	return d;
}

int64_t h_offsets_sum(const int64_t *a, int n)
{
	int64_t s = 0;

	for (int i = 0; i < n; i++)
		s += a[i] > 0 ? a[i] : 0;
	return s;
}

const char *h_tail_of(const char *path, int nlines)
{
	static char buf[4096];
	char *t = h_file_tail(path, nlines);

	snprintf(buf, sizeof(buf), "%s", t ? t : "");
	free(t);
	return buf;
}
