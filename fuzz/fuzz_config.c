/* libFuzzer target over the command line (core/config.h): the input split on
 * NUL bytes is argv[1..], parsed by k2mc_config_parse; every -X property it
 * accepts is then handed to librdkafka's rd_kafka_conf_set, as group.c does
 * before the consumer exists. Checks that an accepted configuration holds
 * what the rest of k2mc trusts (ranges, counts, non-empty names) and that a
 * refused one comes with a reason. --config files are not opened: fopen is
 * wrapped (-Wl,--wrap=fopen, see __wrap_fopen), so --config paths exercise
 * the error path only. --mc-tls-* files are only stat()ed and, when regular,
 * opened read-only. Run by `make fuzz`; not part of `make test`. */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);
FILE *__wrap_fopen(const char *path, const char *mode);
FILE *__real_fopen(const char *path, const char *mode);
const char *memcached_lib_version(void);

/* -V prints libmemcached's version; the target links librdkafka only */
const char *memcached_lib_version(void)
{
	return "fuzz";
}

/* The wrap applies to libFuzzer's own fopen calls too (corpus, crash
 * artifacts): those, under build/fuzz/ where `make fuzz` points them, and
 * /proc, pass through; --config gets "no such file" for anything else. */
FILE *__wrap_fopen(const char *path, const char *mode)
{
	if (strncmp(path, "build/fuzz/", 11) == 0 || strncmp(path, "/proc/", 6) == 0)
		return __real_fopen(path, mode);
	errno = ENOENT;
	return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* -h and -V print to stdout */
	if (freopen("/dev/null", "w", stdout) == NULL)
		abort();
	return 0;
}

static int is_pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

static void check_accepted(const struct k2mc_config *c)
{
	rd_kafka_conf_t *conf;

	if (c->brokers == NULL || c->brokers[0] == '\0' || c->ntopics < 1 ||
	    c->ntopics > K2MC_MAX_TOPICS || c->nservers < 1 || c->nservers > K2MC_MAX_SERVERS ||
	    c->writers < 1 || c->writers > 256 || !is_pow2(c->ring_size) || c->ring_size < 16 ||
	    c->batch < 1 || c->key_prefix == NULL || c->key_prefix_len >= K2MC_MC_KEY_MAX ||
	    strlen(c->key_prefix) != c->key_prefix_len || c->nxprops > K2MC_MAX_XPROPS ||
	    (c->on_invalid == K2MC_INVALID_DLQ && c->dlq_topic == NULL))
		abort();
	for (int i = 0; i < c->ntopics; i++)
		if (c->topics[i] == NULL || c->topics[i][0] == '\0')
			abort();
	for (int i = 0; i < c->nservers; i++) {
		const struct k2mc_server *s = &c->servers[i];

		if (s->host[0] == '\0' || s->weight < 1 || s->weight > K2MC_WEIGHT_MAX ||
		    (s->weight != 1 && !k2mc_distribution_weighted(c->distribution)))
			abort();
		if (s->is_unix ? s->port != 0 || strlen(s->host) > K2MC_SUN_PATH_MAX
			       : s->port < 1 || s->port > 65535)
			abort();
	}
	/* TLS settings only with TLS, a certificate only with its key */
	if (!c->mc_tls && (c->mc_tls_ca || c->mc_tls_cert || c->mc_tls_key ||
			   c->mc_tls_key_password || c->mc_tls_server_name || c->mc_tls_insecure))
		abort();
	if ((c->mc_tls_cert == NULL) != (c->mc_tls_key == NULL) ||
	    (c->mc_tls_key_password != NULL && c->mc_tls_key == NULL))
		abort();
	if (c->key_template == NULL || c->value_template == NULL ||
	    strpbrk(c->key_template, "\r\n") != NULL || strpbrk(c->value_template, "\r\n") != NULL)
		abort();
	if ((c->on_tombstone == K2MC_TOMB_INVALIDATE) !=
		    (c->invalidate_grace_s >= 1 && c->invalidate_grace_s <= K2MC_TTL_RELATIVE_MAX) ||
	    (c->on_tombstone == K2MC_TOMB_INVALIDATE && c->mc_protocol == K2MC_PROTO_TEXT))
		abort();
	if (c->refill_from_earliest ? c->refill_from_ms != 0 : c->refill_from_ms <= 0)
		abort();
	if (c->refill_rate > 1000000000 || (c->ttl_from_timestamp && c->ttl == 0 &&
					     c->ttl_header == NULL))
		abort();
	/* the -X values, as group.c hands them to librdkafka */
	conf = rd_kafka_conf_new();
	for (int i = 0; i < c->nxprops; i++) {
		const char *eq = strchr(c->xprops[i], '=');
		char name[256], err[512];
		size_t nl;

		if (eq == NULL || eq == c->xprops[i])
			abort(); /* config.c promises PROP=VALUE */
		nl = (size_t)(eq - c->xprops[i]);
		if (nl >= sizeof(name))
			continue;
		memcpy(name, c->xprops[i], nl);
		name[nl] = '\0';
		rd_kafka_conf_set(conf, name, eq + 1, err, sizeof(err));
	}
	rd_kafka_conf_destroy(conf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), *argv[MAX_ARGS + 2], err[512];
	struct k2mc_config c;
	int argc = 0;
	size_t start = 0;

	if (buf == NULL)
		abort();
	memcpy(buf, data, size);
	buf[size] = '\0';
	argv[argc++] = "k2mc";
	for (size_t i = 0; i <= size && argc <= MAX_ARGS; i++) {
		if (buf[i] == '\0') {
			argv[argc++] = buf + start;
			start = i + 1;
		}
	}
	argv[argc] = NULL;
	err[0] = '\0';
	switch (k2mc_config_parse(&c, argc, argv, err, sizeof(err))) {
	case K2MC_CONFIG_OK:
		check_accepted(&c);
		break;
	case K2MC_CONFIG_USAGE:
		if (err[0] == '\0')
			abort(); /* a refusal names its reason */
		break;
	case K2MC_CONFIG_EXIT:
		break;
	default:
		abort();
	}
	k2mc_config_free(&c);
	free(buf);
	return 0;
}
