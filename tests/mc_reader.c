/* The cache reader of the integration tests; see mc_reader.h. One thread
 * with its own libmemcached handle; the counts are shared with the test
 * thread under a mutex. */
#include "mc_reader.h"

#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define READER_CHUNK 500
/* a frozen server: a sweep gives up on it after this, and the next begins */
#define READER_POLL_TIMEOUT_MS 500
#define READER_NOTE_MAX 8

struct h_reader {
	struct h_reader_opts o;
	char prefix[128];
	pthread_t thread;
	_Atomic int stop; /* set by h_reader_stop, read by the thread */
	/* the reader thread's own */
	uint64_t *max_seq; /* per key: 0 = never seen, else seq + 1 */
	uint8_t *flags;    /* per key: 1 went back, 2 vanished; under mu */
	/* under mu: written by the thread, read by the test */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct h_reader_stats st;
	int notes;
};

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* under mu */
__attribute__((format(printf, 2, 3))) static void note(struct h_reader *r, const char *f, ...)
{
	size_t n = strlen(r->st.first);
	va_list ap;

	if (r->notes++ >= READER_NOTE_MAX || n + 2 >= sizeof(r->st.first))
		return;
	va_start(ap, f);
	vsnprintf(r->st.first + n, sizeof(r->st.first) - n, f, ap);
	va_end(ap);
	n = strlen(r->st.first);
	if (n + 1 < sizeof(r->st.first))
		strcat(r->st.first, "\n");
}

static void event(struct h_reader *r, uint32_t idx, int kind, uint64_t was, uint64_t now)
{
	int64_t t = h_now_ms();

	pthread_mutex_lock(&r->mu);
	r->st.events++;
	if (r->st.first_ms == 0)
		r->st.first_ms = t;
	r->st.last_ms = t;
	if (!(r->flags[idx] & kind)) {
		r->flags[idx] |= (uint8_t)kind;
		if (kind == 1)
			r->st.went_back++;
		else
			r->st.vanished++;
	}
	if (kind == 1)
		note(r, "key-%08" PRIu32 ": seq %" PRIu64 " after %" PRIu64 " (at %" PRId64 " ms)", idx,
		     now, was, t);
	else
		note(r, "key-%08" PRIu32 ": missing after seq %" PRIu64 " (at %" PRId64 " ms)", idx,
		     was, t);
	pthread_mutex_unlock(&r->mu);
}

/* seq of a value "v:<key>:<seq>:...", or -1 */
static int64_t value_seq(const char *v, size_t len)
{
	const char *end = v + len, *p;
	int64_t seq = 0;

	if (len < 2 || v[0] != 'v' || v[1] != ':')
		return -1;
	p = memchr(v + 2, ':', len - 2);
	if (p == NULL || ++p >= end)
		return -1;
	for (; p < end && *p >= '0' && *p <= '9'; p++)
		seq = seq * 10 + (*p - '0');
	return p < end && *p == ':' ? seq : -1;
}

/* One mget of keys [from, from + n): 0, or -1 when the server did not answer. */
static int sweep_chunk(struct h_reader *r, memcached_st *memc, uint32_t from, uint32_t n,
		       char (*keys)[160], const char **kp, size_t *lens, uint8_t *got)
{
	size_t pl = strlen(r->prefix);
	memcached_result_st *res;
	memcached_return_t rc;

	for (uint32_t i = 0; i < n; i++) {
		lens[i] = (size_t)snprintf(keys[i], sizeof(keys[i]), "%skey-%08" PRIu32, r->prefix,
					   from + i);
		kp[i] = keys[i];
		got[i] = 0;
	}
	if (memcached_mget(memc, kp, lens, n) != MEMCACHED_SUCCESS)
		return -1;
	while ((res = memcached_fetch_result(memc, NULL, &rc)) != NULL) {
		const char *k = memcached_result_key_value(res);
		size_t kl = memcached_result_key_length(res);
		int64_t seq = value_seq(memcached_result_value(res), memcached_result_length(res));
		uint32_t idx;

		if (kl == pl + 12 && memcmp(k, r->prefix, pl) == 0 &&
		    sscanf(k + pl, "key-%08" SCNu32, &idx) == 1 && idx >= from && idx < from + n &&
		    seq >= 0) {
			got[idx - from] = 1;
			if (r->max_seq[idx] == 0) {
				pthread_mutex_lock(&r->mu);
				r->st.seen++;
				pthread_mutex_unlock(&r->mu);
			}
			if ((uint64_t)seq + 1 < r->max_seq[idx])
				event(r, idx, 1, r->max_seq[idx] - 1, (uint64_t)seq);
			else
				r->max_seq[idx] = (uint64_t)seq + 1;
		}
		memcached_result_free(res);
	}
	if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND)
		return -1;
	for (uint32_t i = 0; i < n; i++)
		if (!got[i] && r->max_seq[from + i] != 0)
			event(r, from + i, 2, r->max_seq[from + i] - 1, 0);
	return 0;
}

static void *reader_main(void *arg)
{
	struct h_reader *r = arg;
	char (*keys)[160] = malloc(READER_CHUNK * sizeof(*keys));
	const char *kp[READER_CHUNK];
	size_t lens[READER_CHUNK];
	uint8_t got[READER_CHUNK];
	memcached_st *memc = memcached_create(NULL);

	if (keys == NULL || memc == NULL ||
	    memcached_server_add(memc, r->o.host, (in_port_t)r->o.port) != MEMCACHED_SUCCESS) {
		pthread_mutex_lock(&r->mu);
		snprintf(r->st.first, sizeof(r->st.first), "reader: cannot set up libmemcached\n");
		pthread_mutex_unlock(&r->mu);
		free(keys);
		if (memc != NULL)
			memcached_free(memc);
		return NULL;
	}
	memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, READER_POLL_TIMEOUT_MS);
	memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, READER_POLL_TIMEOUT_MS);
	/* a server that timed out is asked again at the next sweep, not 2 s later */
	memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 0);
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		int ok = 1;

		for (uint32_t from = 0; from < r->o.keys && ok; from += READER_CHUNK) {
			uint32_t n = r->o.keys - from < READER_CHUNK ? r->o.keys - from : READER_CHUNK;

			if (sweep_chunk(r, memc, from, n, keys, kp, lens, got) != 0)
				ok = 0;
		}
		pthread_mutex_lock(&r->mu);
		if (ok)
			r->st.sweeps++;
		else
			r->st.failed++;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		if (!ok) {
			/* a fresh connection: the old one may hold a half-read answer */
			memcached_quit(memc);
			sleep_ms(50);
		} else if (r->o.pause_ms > 0) {
			sleep_ms(r->o.pause_ms);
		}
	}
	memcached_free(memc);
	free(keys);
	return NULL;
}

struct h_reader *h_reader_start(const struct h_reader_opts *o)
{
	struct h_reader *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->o = *o;
	snprintf(r->prefix, sizeof(r->prefix), "%s", o->prefix ? o->prefix : "");
	r->o.prefix = r->prefix;
	r->max_seq = calloc(o->keys, sizeof(*r->max_seq));
	r->flags = calloc(o->keys, 1);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (r->max_seq == NULL || r->flags == NULL ||
	    pthread_create(&r->thread, NULL, reader_main, r) != 0) {
		free(r->max_seq);
		free(r->flags);
		free(r);
		return NULL;
	}
	return r;
}

void h_reader_stats(struct h_reader *r, struct h_reader_stats *s)
{
	pthread_mutex_lock(&r->mu);
	*s = r->st;
	pthread_mutex_unlock(&r->mu);
}

void h_reader_reset(struct h_reader *r)
{
	pthread_mutex_lock(&r->mu);
	/* flags are the thread's, but it changes them only under mu */
	memset(r->flags, 0, r->o.keys);
	r->st.went_back = r->st.vanished = 0;
	r->st.events = 0;
	r->st.first_ms = r->st.last_ms = 0;
	r->st.first[0] = '\0';
	r->notes = 0;
	pthread_mutex_unlock(&r->mu);
}

int h_reader_wait_sweeps(struct h_reader *r, uint64_t n, int timeout_ms)
{
	struct timespec dl;
	int rc = 0;
	uint64_t want;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->mu);
	/* the sweep running now may have begun before the call: one more */
	want = r->st.sweeps + n + 1;
	while (r->st.sweeps < want && rc == 0)
		rc = pthread_cond_timedwait(&r->cv, &r->mu, &dl);
	rc = r->st.sweeps >= want ? 0 : -ETIMEDOUT;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

void h_reader_stop(struct h_reader *r, struct h_reader_stats *s)
{
	if (r == NULL)
		return;
	atomic_store_explicit(&r->stop, 1, memory_order_relaxed);
	pthread_join(r->thread, NULL);
	if (s != NULL)
		*s = r->st;
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r->max_seq);
	free(r->flags);
	free(r);
}
