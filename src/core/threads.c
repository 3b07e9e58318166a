/* The process's room for more threads; see threads.h. Everything is read
 * from the kernel's own files at the moment of asking: the limits change
 * (prlimit, a cgroup's pids.max) and so do the other processes that share
 * them. */
#include "core/threads.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* CapEff bits (linux/capability.h) */
#define CAP_SYS_ADMIN_BIT 21
#define CAP_SYS_RESOURCE_BIT 24

/* The first integer of a one-line file; -1 if unreadable or not a number
 * ("max" in a cgroup file: no limit). */
static int64_t read_int(const char *path)
{
	FILE *f = fopen(path, "re");
	long long v;
	int ok;

	if (f == NULL)
		return -1;
	ok = fscanf(f, "%lld", &v) == 1;
	fclose(f);
	return ok && v >= 0 ? (int64_t)v : -1;
}

/* The value after "Name:" in a /proc status file's text, or -1. For Uid:
 * the first (real) one. */
static int64_t status_field(const char *text, const char *name)
{
	const char *p = strstr(text, name);

	if (p == NULL)
		return -1;
	p += strlen(name);
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncmp(name, "CapEff:", 7) == 0)
		return (int64_t)strtoull(p, NULL, 16);
	return isdigit((unsigned char)*p) ? (int64_t)strtoll(p, NULL, 10) : -1;
}

static int read_status(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (f == NULL)
		return -1;
	n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = '\0';
	return 0;
}

/* RLIMIT_NPROC binds neither root nor a process with CAP_SYS_ADMIN or
 * CAP_SYS_RESOURCE (kernel/fork.c, copy_process). */
static int nproc_enforced(void)
{
	char buf[4096];
	int64_t caps;

	if (getuid() == 0)
		return 0;
	if (read_status("/proc/self/status", buf, sizeof(buf)) != 0)
		return 1;
	caps = status_field(buf, "\nCapEff:");
	return caps < 0 || !(caps & (1ll << CAP_SYS_ADMIN_BIT) || caps & (1ll << CAP_SYS_RESOURCE_BIT));
}

/* Threads of every process whose real user is uid: what RLIMIT_NPROC counts.
 * -1 if /proc cannot be read. (With /proc mounted hidepid, other users'
 * processes are not seen: they are not this uid's anyway.) */
static int64_t uid_threads(uid_t uid)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int64_t n = 0;
	char path[64], buf[4096];

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%.20s/status", e->d_name);
		if (read_status(path, buf, sizeof(buf)) != 0)
			continue; /* ended meanwhile */
		if (status_field(buf, "\nUid:") == (int64_t)uid) {
			int64_t t = status_field(buf, "\nThreads:");

			n += t > 0 ? t : 1;
		}
	}
	closedir(d);
	return n;
}

/* Tasks on the whole system: the fourth field of /proc/loadavg
 * ("0.00 0.01 0.05 2/613 12345": 613). -1 if unreadable. */
static int64_t system_threads(void)
{
	FILE *f = fopen("/proc/loadavg", "re");
	long long running, total;
	int ok;

	if (f == NULL)
		return -1;
	ok = fscanf(f, "%*s %*s %*s %lld/%lld", &running, &total) == 2;
	fclose(f);
	return ok ? (int64_t)total : -1;
}

/* The pids controller's directory of this process's cgroup: cgroup v2
 * ("0::/PATH") or v1 ("N:pids:/PATH"). 0, or -1 if it has none. */
static int pids_dir(char *dir, size_t len)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[1024];
	int found = -1;

	if (f == NULL)
		return -1;
	while (found != 0 && fgets(line, sizeof(line), f) != NULL) {
		char *path;

		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "0::", 3) == 0) {
			path = line + 3;
			snprintf(dir, len, "/sys/fs/cgroup%.800s", strcmp(path, "/") == 0 ? "" : path);
			found = 0;
		} else if ((path = strstr(line, ":pids:")) != NULL) {
			path += 6;
			snprintf(dir, len, "/sys/fs/cgroup/pids%.800s", strcmp(path, "/") == 0 ? "" : path);
			found = 0;
		}
	}
	fclose(f);
	return found;
}

/* Keeps the tighter of the room so far and limit - used. */
static void consider(int64_t *room, int *have, int64_t limit, int64_t used, char *why,
		     size_t len, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void consider(int64_t *room, int *have, int64_t limit, int64_t used, char *why,
		     size_t len, const char *fmt, ...)
{
	int64_t r = limit - used;
	va_list ap;

	if (limit < 0 || used < 0)
		return;
	if (r < 0)
		r = 0;
	if (*have && r >= *room)
		return;
	*room = r;
	*have = 1;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

int k2mc_threads_room(int64_t *room, char *why, size_t len)
{
	struct rlimit rl;
	char dir[900], path[1000];
	int have = 0;

	if (getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && nproc_enforced()) {
		uid_t uid = getuid();
		int64_t used = uid_threads(uid);

		consider(room, &have, (int64_t)rl.rlim_cur, used, why, len,
			 "RLIMIT_NPROC %lld of uid %u, which runs %lld threads now (ulimit -u; "
			 "systemd LimitNPROC=)",
			 (long long)rl.rlim_cur, (unsigned)uid, (long long)used);
	}
	{
		int64_t max = read_int("/proc/sys/kernel/threads-max"), used = system_threads();

		consider(room, &have, max, used, why, len,
			 "kernel.threads-max %lld, with %lld threads on the system now "
			 "(/proc/sys/kernel/threads-max)",
			 (long long)max, (long long)used);
	}
	if (pids_dir(dir, sizeof(dir)) == 0) {
		int64_t max, used;

		snprintf(path, sizeof(path), "%s/pids.max", dir);
		max = read_int(path);
		snprintf(path, sizeof(path), "%s/pids.current", dir);
		used = read_int(path);
		consider(room, &have, max, used, why, len,
			 "the cgroup's pids.max %lld (%s), with %lld tasks in it now (systemd "
			 "TasksMax=)",
			 (long long)max, dir, (long long)used);
	}
	return have ? 0 : -ENOENT;
}
