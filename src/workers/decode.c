/* Record formats -> JSON text; see decode.h. The only caller of avro.h's
 * decoder on the live path. */
#include "workers/decode.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "workers/avro.h"

struct k2mc_decoder {
	/* immutable after k2mc_decoder_new */
	int key_avro, value_avro;
	struct k2mc_avro *avro; /* NULL without avro */
	/* any thread: records that waited for the registry (relaxed counter) */
	_Atomic uint64_t waits;
	/* any thread: the first failure per reason was logged (exchange) */
	_Atomic int logged[K2MC_MAP_NREASONS];
};

/* One thread's: a context for keys and one for values, so that a record's
 * decoded key stays valid while its value is decoded. */
struct k2mc_decode_ctx {
	struct k2mc_decoder *d;
	struct k2mc_avro_ctx *key, *value;
	const char *explain;
};

struct k2mc_decoder *k2mc_decoder_new(const struct k2mc_config *cfg, char *err, size_t errlen)
{
	struct k2mc_decoder *d = calloc(1, sizeof(*d));

	if (d == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->key_avro = cfg->key_format == K2MC_FMT_AVRO;
	d->value_avro = cfg->value_format == K2MC_FMT_AVRO;
	if (!d->key_avro && !d->value_avro)
		return d;
	if (cfg->schema_registry == NULL) {
		snprintf(err, errlen, "--%s-format avro needs --schema-registry URL: an Avro record "
			 "names its schema by an id that only the registry resolves",
			 d->key_avro ? "key" : "value");
		goto fail;
	}
	d->avro = k2mc_avro_new(cfg->schema_registry, err, errlen);
	if (d->avro == NULL)
		goto fail;
	for (int i = 0; i < cfg->nsr_props; i++) {
		const char *p = cfg->sr_props[i], *eq = strchr(p, '=');
		char name[128], why[256];

		snprintf(name, sizeof(name), "%.*s", (int)(eq - p), p);
		if (k2mc_avro_set(d->avro, name, eq + 1, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "--schema-registry-property %s=%s: %s", name,
				 k2mc_config_sr_secret(name) ? "********" : eq + 1, why);
			goto fail;
		}
	}
	return d;
fail:
	k2mc_decoder_free(d);
	return NULL;
}

void k2mc_decoder_free(struct k2mc_decoder *d)
{
	if (d == NULL)
		return;
	k2mc_avro_free(d->avro);
	free(d);
}

struct k2mc_decode_ctx *k2mc_decode_ctx_new(struct k2mc_decoder *d)
{
	struct k2mc_decode_ctx *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->d = d;
	c->explain = "";
	if ((d->key_avro && (c->key = k2mc_avro_ctx_new(d->avro)) == NULL) ||
	    (d->value_avro && (c->value = k2mc_avro_ctx_new(d->avro)) == NULL)) {
		k2mc_decode_ctx_free(c);
		return NULL;
	}
	return c;
}

void k2mc_decode_ctx_free(struct k2mc_decode_ctx *c)
{
	if (c == NULL)
		return;
	k2mc_avro_ctx_free(c->key);
	k2mc_avro_ctx_free(c->value);
	free(c);
}

/* avro.h's result -> the mapping's reason (decode.h) */
static int reason_of(enum k2mc_avro_result r)
{
	static const int reasons[K2MC_AVRO_NRESULTS] = {
		[K2MC_AVRO_OK] = 0,
		[K2MC_AVRO_NOT_AVRO] = K2MC_MAP_NOT_AVRO,
		[K2MC_AVRO_SCHEMA_UNAVAILABLE] = K2MC_MAP_SCHEMA_UNAVAILABLE,
		[K2MC_AVRO_REGISTRY_DOWN] = K2MC_DECODE_AGAIN,
		[K2MC_AVRO_DECODE] = K2MC_MAP_AVRO_DECODE,
	};

	return (unsigned)r < K2MC_AVRO_NRESULTS ? reasons[r] : K2MC_MAP_AVRO_DECODE;
}

static int decode_one(struct k2mc_decode_ctx *c, struct k2mc_avro_ctx *a,
		      const struct k2mc_record *rec, const void **data, size_t *len,
		      const char *what)
{
	const char *json;
	size_t n;
	enum k2mc_avro_result r = k2mc_avro_decode(a, *data, *len, &json, &n);
	int reason = reason_of(r);

	if (r == K2MC_AVRO_OK) {
		*data = json;
		*len = n;
		return 0;
	}
	c->explain = k2mc_avro_explain(a);
	if (reason > 0 &&
	    !atomic_exchange_explicit(&c->d->logged[reason], 1, memory_order_relaxed))
		k2mc_log_record(K2MC_LOG_WARN, rec->topic, rec->partition, rec->offset,
				k2mc_map_reason_name((enum k2mc_map_reason)reason),
				"%s [%d] @%lld: the %s does not decode (%s): %s; further records "
				"of this kind are counted, not logged",
				rec->topic, (int)rec->partition, (long long)rec->offset, what,
				k2mc_map_reason_name((enum k2mc_map_reason)reason), c->explain);
	return reason;
}

int k2mc_decode_record(struct k2mc_decode_ctx *c, struct k2mc_record *rec, int key, int value,
		       int *in_key)
{
	int r;

	*in_key = 0;
	if (key && c->key != NULL && rec->key != NULL) {
		r = decode_one(c, c->key, rec, &rec->key, &rec->key_len, "record key");
		if (r != 0) {
			*in_key = 1;
			return r;
		}
	}
	if (value && c->value != NULL && rec->value != NULL)
		return decode_one(c, c->value, rec, &rec->value, &rec->value_len, "value");
	return 0;
}

const char *k2mc_decode_explain(const struct k2mc_decode_ctx *c)
{
	return c->explain;
}

int k2mc_decoder_key_avro(const struct k2mc_decoder *d)
{
	return d != NULL && d->key_avro;
}

int k2mc_decoder_value_avro(const struct k2mc_decoder *d)
{
	return d != NULL && d->value_avro;
}

void k2mc_decode_note_wait(struct k2mc_decoder *d)
{
	atomic_fetch_add_explicit(&d->waits, 1, memory_order_relaxed);
}

uint64_t k2mc_decoder_waits(const struct k2mc_decoder *d)
{
	return d == NULL ? 0
			 : atomic_load_explicit(&((struct k2mc_decoder *)d)->waits,
						memory_order_relaxed);
}
