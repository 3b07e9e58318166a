/* libFuzzer target over the record mapping (workers/mapping.h): arbitrary
 * --key/--value templates (compiled or refused), then an arbitrary record
 * (key, value bytes, a header) through k2mc_mapping_map and the consumer's
 * k2mc_mapping_prepare, and the value through the JSON extractor alone.
 * Every input lives in a heap block of its own exact size, so ASan sees a
 * read one byte past any of them. Checks the contracts the writer relies
 * on: a produced key fits the 250-byte buffer and is one memcached takes, a
 * value points into the record or the arena, the consumer's key equals the
 * writer's, spans lie inside the value. Also under --cdc (Debezium events,
 * envelopes, {keyjson:}): only a truncate maps to no command. Run by
 * `make fuzz`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "workers/mapping.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Templates worth combining with arbitrary values: many pointers, arrays,
 * escapes, the whole value. */
static const char *const KEYS[] = {
	"{key}", "user:{json:/id}", "{json:/a/0/b}{json:/a/1}", "{json:}", "{header:h}:{json:/~0~1}",
	"{topic}-{partition}-{key}", "c", "c:{keyjson:/id}{keyjson:/a/0}", "{keyjson:}:{json:/id}",
};
static const char *const VALUES[] = {
	"{value}", "{json:/profile}", "{json:}", "x{json:/a}y{json:/a/0}{json:/id}", "{key}{header:h}",
};

static char *dup_bytes(const uint8_t *p, size_t n)
{
	char *b = malloc(n + 1);

	if (b == NULL)
		abort();
	memcpy(b, p, n);
	b[n] = '\0';
	return b;
}

static void check_key(const struct k2mc_mapped *o, size_t plen)
{
	if (o->key_len > K2MC_MC_KEY_MAX)
		abort();
	for (size_t i = plen; i < o->key_len; i++) {
		unsigned char c = (unsigned char)o->key[i];

		if (c <= 0x20 || c == 0x7f)
			abort();
	}
}

/* Input: [flags][key template length][value template length][value length
 * hi][lo] then key template, value template, value, and the rest as the
 * record key. flags: bit 0-2 a fixed template pair instead, bit 3 null key,
 * bit 4 tombstone, bit 5 --ttl-from-timestamp, bit 6 header h = the first
 * value byte's decimal, bit 7 a prefix. The template lengths' bits 6-7:
 * --cdc (none, debezium, debezium-invalidate, none) and --key-format json,
 * --value-format json; key template length bit 6 with fixed templates: one
 * of the {keyjson:} key templates. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct k2mc_config cfg;
	struct k2mc_mapping *map;
	struct k2mc_arena *arena;
	struct k2mc_record rec;
	struct k2mc_mapped a, b;
	struct k2mc_prepared *pre;
	struct k2mc_span spans[K2MC_MAP_MAX_POINTERS];
	rd_kafka_message_t m;
	rd_kafka_headers_t *h = NULL;
	char err[512], *kt, *vt, *key, *value;
	size_t kl, vl, val_len, err_at, off = 5;
	uint64_t route;
	int ra, rb;
	uint8_t f;

	if (size < 5)
		return 0;
	f = data[0];
	kl = data[1] % 64;
	vl = data[2] % 64;
	val_len = ((size_t)data[3] << 8 | data[4]);
	if (kl > size - off)
		kl = size - off;
	kt = dup_bytes(data + off, kl);
	off += kl;
	if (vl > size - off)
		vl = size - off;
	vt = dup_bytes(data + off, vl);
	off += vl;
	if (val_len > size - off)
		val_len = size - off;
	value = malloc(val_len ? val_len : 1);
	memcpy(value, data + off, val_len);
	off += val_len;
	key = malloc(size - off ? size - off : 1);
	memcpy(key, data + off, size - off);

	memset(&cfg, 0, sizeof(cfg));
	cfg.key_template = !(f & 7)	     ? kt
			   : (data[1] & 0x40) ? KEYS[7 + (f & 1)]
					      : KEYS[(f & 7) % 7];
	cfg.cdc = (data[1] >> 6) == 1 ? K2MC_CDC_DEBEZIUM
		  : (data[1] >> 6) == 2 ? K2MC_CDC_DEBEZIUM_INVALIDATE : K2MC_CDC_NONE;
	cfg.key_format = (data[2] & 0x40) ? K2MC_FMT_JSON : K2MC_FMT_RAW;
	cfg.value_format = (data[2] & 0x80) ? K2MC_FMT_JSON : K2MC_FMT_RAW;
	cfg.value_template = (f & 7) ? VALUES[(f >> 1) % 5] : vt;
	cfg.key_prefix = (f & 0x80) ? "pfx:" : "";
	cfg.key_prefix_len = (f & 0x80) ? 4 : 0;
	cfg.ttl = 3600;
	cfg.ttl_from_timestamp = (f & 0x20) != 0;
	cfg.ttl_header = (f & 0x40) ? "ttl" : NULL;
	cfg.flags_header = (f & 0x40) ? "h" : NULL;
	err[0] = '\0';
	map = k2mc_mapping_new(&cfg, err, sizeof(err));
	if (map == NULL) {
		/* refused: a message, terminated and within its buffer */
		if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
			abort();
		goto out;
	}
	arena = k2mc_arena_new();
	if (f & 0x40) {
		h = rd_kafka_headers_new(2);
		rd_kafka_header_add(h, "h", 1, value, val_len < 12 ? (ssize_t)val_len : 12);
		rd_kafka_header_add(h, "ttl", 3, key, size - off < 12 ? (ssize_t)(size - off) : 12);
	}
	/* the record as k2mc_record_of makes it from a message (which this
	 * fake one is not: librdkafka would parse its headers) */
	memset(&m, 0, sizeof(m));
	rec.topic = "t";
	rec.partition = 5;
	rec.offset = 1;
	rec.key = (f & 0x08) ? NULL : key;
	rec.key_len = size - off;
	rec.value = (f & 0x10) ? NULL : value;
	rec.value_len = val_len;
	rec.headers = h;
	rec.timestamp_ms = 1796083200000LL - (int64_t)val_len * 1000000;

	ra = k2mc_mapping_map(map, &rec, NULL, 1796083200000LL, arena, &a);
	if (ra < 0 || ra >= K2MC_MAP_NREASONS)
		abort();
	if (ra == K2MC_MAP_OK || (k2mc_map_hashable(ra) && a.key_len > 0)) {
		if (a.op != K2MC_OP_NONE && a.key_len == 0)
			abort();
		/* no command: a tombstone under --on-tombstone ignore (never
		 * here) or a --cdc truncate */
		if ((a.op == K2MC_OP_NONE) != (a.truncate && cfg.cdc != K2MC_CDC_NONE))
			abort();
		if (cfg.cdc == K2MC_CDC_DEBEZIUM_INVALIDATE && a.op == K2MC_OP_SET)
			abort();
		check_key(&a, cfg.key_prefix_len);
		if (a.op == K2MC_OP_SET && a.value_len > 0 && a.value == NULL)
			abort();
		/* touch every value byte: ASan checks where it points */
		{
			volatile unsigned char sink = 0;

			for (size_t i = 0; a.op == K2MC_OP_SET && i < a.value_len; i++)
				sink ^= ((const unsigned char *)a.value)[i];
			(void)sink;
		}
	}
	{
		char why[300];

		k2mc_mapping_explain(map, &rec, &a, (enum k2mc_map_reason)ra, why, sizeof(why));
	}
	/* the consumer's key is the writer's */
	pre = k2mc_mapping_prepare(map, &m, &rec, &route);
	if (pre != NULL) {
		rb = k2mc_mapping_map(map, &rec, pre, 1796083200000LL, arena, &b);
		if (rb != ra || b.key_len != a.key_len || memcmp(a.key, b.key, a.key_len) != 0 ||
		    b.op != a.op || (ra == K2MC_MAP_OK && b.value_len != a.value_len))
			abort();
		k2mc_prepared_free(pre);
	}
	/* the extractor alone over the value */
	if (k2mc_mapping_scan_json(map, value, val_len, spans, &err_at) == 0) {
		for (size_t i = 0; i < k2mc_mapping_npointers(map); i++)
			if (spans[i].kind != 0 && (size_t)spans[i].off + spans[i].len > val_len)
				abort();
	} else if (err_at > val_len) {
		abort();
	}
	if (h != NULL)
		rd_kafka_headers_destroy(h);
	k2mc_arena_free(arena);
	k2mc_mapping_free(map);
out:
	free(kt);
	free(vt);
	free(key);
	free(value);
	return 0;
}
