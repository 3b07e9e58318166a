/* How many more threads this process may create: the limits the kernel
 * applies to thread creation (RLIMIT_NPROC for its user, kernel.threads-max,
 * the cgroup's pids.max), read when asked. For group.c, which refuses an
 * assignment whose consumer threads (one per partition) would not fit, before
 * creating any. Not where threads are made or counted for stats. */
#ifndef K2MC_THREADS_H
#define K2MC_THREADS_H

#include <stddef.h>
#include <stdint.h>

/* The fewest threads any limit still allows, in *room, with that limit
 * described in why ("RLIMIT_NPROC 48 of uid 1000, which runs 40 threads (ulimit
 * -u; systemd LimitNPROC=)"). 0, or -ENOENT when no limit applies (none set,
 * or not enforced: RLIMIT_NPROC does not hold root or a process with
 * CAP_SYS_ADMIN or CAP_SYS_RESOURCE). Reads /proc (all processes' status
 * files when RLIMIT_NPROC is enforced): call it per assignment, not per
 * record. */
int k2mc_threads_room(int64_t *room, char *why, size_t len);

#endif
