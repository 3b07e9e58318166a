/* LD_PRELOAD shim for TSan runs of k2mc: Debian's librdkafka starts its
 * threads and takes its locks with C11 <threads.h>, whose glibc functions call
 * glibc internals directly, so ThreadSanitizer sees neither the threads nor
 * the locks (the TSan build crashes in rdk:main, or reports races librdkafka's
 * own mutexes prevent). Routing them through pthreads makes them visible.
 * Test-only: never linked into k2mc. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

struct tramp {
	thrd_start_t fn;
	void *arg;
};

static void *tramp_run(void *p)
{
	struct tramp t = *(struct tramp *)p;

	free(p);
	return (void *)(intptr_t)t.fn(t.arg);
}

static int map(int e)
{
	switch (e) {
	case 0: return thrd_success;
	case ENOMEM: return thrd_nomem;
	case EBUSY: return thrd_busy;
	case ETIMEDOUT: return thrd_timedout;
	default: return thrd_error;
	}
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
	struct tramp *t = malloc(sizeof(*t));
	int e;

	if (t == NULL)
		return thrd_nomem;
	t->fn = fn;
	t->arg = arg;
	e = pthread_create((pthread_t *)thr, NULL, tramp_run, t);
	if (e != 0)
		free(t);
	return map(e);
}

int thrd_join(thrd_t thr, int *res)
{
	void *r;
	int e = pthread_join((pthread_t)thr, &r);

	if (e == 0 && res != NULL)
		*res = (int)(intptr_t)r;
	return map(e);
}

int thrd_detach(thrd_t thr)
{
	return map(pthread_detach((pthread_t)thr));
}

int mtx_init(mtx_t *m, int type)
{
	pthread_mutexattr_t at;
	int e;

	pthread_mutexattr_init(&at);
	if (type & mtx_recursive)
		pthread_mutexattr_settype(&at, PTHREAD_MUTEX_RECURSIVE);
	e = pthread_mutex_init((pthread_mutex_t *)m, &at);
	pthread_mutexattr_destroy(&at);
	return map(e);
}

int mtx_lock(mtx_t *m)
{
	return map(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_trylock(mtx_t *m)
{
	return map(pthread_mutex_trylock((pthread_mutex_t *)m));
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
	return map(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

int mtx_unlock(mtx_t *m)
{
	return map(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m)
{
	pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c)
{
	return map(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c)
{
	return map(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c)
{
	return map(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m)
{
	return map(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
	return map(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void cnd_destroy(cnd_t *c)
{
	pthread_cond_destroy((pthread_cond_t *)c);
}
