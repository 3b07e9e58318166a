/* Record -> Memcached command: what lands in Memcached. The --key/--value
 * templates are compiled once at start; each record then maps to (key,
 * value, flags, expiry, operation), or to the reason Memcached cannot take
 * it (the --on-invalid reasons). Pure functions of the compiled mapping and
 * the record, no I/O: safe from any thread. Not the policies (policy.c) and
 * not the wire protocol (mcconn.c).
 *
 * Templates: {key} {value} (the record's bytes), {topic}, {partition},
 * {header:NAME} (the last header of that name), {json:/POINTER} (RFC 6901,
 * into the value: a JSON string gives its unescaped text, any other JSON
 * value its compact text, i.e. its bytes without the whitespace outside
 * strings), {keyjson:/POINTER} (the same, into the record key), {{ and }}
 * for literal braces; everything else is literal. A placeholder ends at the
 * first '}'. --key-prefix goes before the key template's output.
 *
 * Formats and change events (docs/cdc.md): the mapping reads JSON text; an
 * Avro key or value is decoded into JSON text by the caller first (decode.h:
 * k2mc_record's key and value then point at that text). A value under
 * --value-format json (or raw under --cdc) that is a Kafka Connect envelope,
 * an object with a "schema" object and a "payload", is read as its payload;
 * keys likewise. Under --cdc the value is a Debezium change event: {value}
 * and {json:} read its row image (after; before for op d), op d deletes the
 * key, op t maps to no command (out->truncate), and a value that is no
 * change event is not_cdc. */
#ifndef K2MC_MAPPING_H
#define K2MC_MAPPING_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h" /* K2MC_MC_KEY_MAX, K2MC_TTL_RELATIVE_MAX */

/* Why a record cannot be written as it is. Stable names (stats labels, the
 * k2mc.error.reason header of dead letters). */
enum k2mc_map_reason {
	K2MC_MAP_OK = 0,
	K2MC_KEY_MISSING,       /* {key} of a null or empty record key, or an empty key */
	K2MC_KEY_TOO_LONG,      /* prefix + key over 250 bytes */
	K2MC_KEY_BAD_BYTES,     /* whitespace or control bytes in the key */
	K2MC_VALUE_TOO_LARGE,   /* over the server's item size limit (writer.c decides) */
	K2MC_MAP_MISSING_FIELD, /* a header or JSON field a template names is absent (or
				 * a tombstone's key template reads the value) */
	K2MC_MAP_NOT_JSON,      /* a {json:} placeholder on a value that is not JSON */
	K2MC_MAP_BAD_TTL,       /* --ttl-header value not decimal seconds 0..2147483647 */
	K2MC_MAP_BAD_FLAGS,     /* --flags-header value not decimal 0..4294967295 */
	/* --key-format / --value-format avro (decode.h; the names are avro.h's) */
	K2MC_MAP_NOT_AVRO,      /* not the Confluent wire format (magic byte 0, 4-byte id) */
	K2MC_MAP_SCHEMA_UNAVAILABLE, /* the registry does not have the schema, or it is
				 * not Avro, or its references cannot be had */
	K2MC_MAP_AVRO_DECODE,   /* the bytes are not a datum of their schema */
	K2MC_MAP_NOT_CDC,       /* --cdc: the value is not a change event (no op c, r, u,
				 * d or t; c, r, u without an after object) */
	K2MC_MAP_NREASONS,
};

/* "missing_key", "key_too_long", "key_bad_bytes", "value_too_large",
 * "missing_field", "not_json", "bad_ttl", "bad_flags", "not_avro",
 * "schema_unavailable", "avro_decode", "not_cdc"; "ok"; "unknown". */
const char *k2mc_map_reason_name(enum k2mc_map_reason r);
/* 1 if r is about the produced key's shape (too long, forbidden bytes), which
 * --on-invalid hash cures; the other reasons it cannot. */
int k2mc_map_hashable(enum k2mc_map_reason r);
/* 1 if a record refused for r still names a valid key whose newest state it
 * is (value_too_large, missing_field, not_json, bad_ttl, bad_flags, and the
 * value's not_avro, schema_unavailable, avro_decode, not_cdc): skipping it
 * must delete that key's older value (policy.h). A record whose key itself
 * did not decode has no key (key_len 0), so nothing is deleted for it. */
int k2mc_map_invalidates(enum k2mc_map_reason r);

enum k2mc_map_op {
	K2MC_OP_SET = 0,
	K2MC_OP_DELETE,     /* a tombstone (--on-tombstone delete), or an expired record */
	K2MC_OP_INVALIDATE, /* a tombstone under --on-tombstone invalidate:SECONDS:
			     * meta "md <key> I T<grace>" (mcconn_queue_invalidate) */
	K2MC_OP_NONE,       /* a tombstone under --on-tombstone ignore: nothing to send */
};

/* --on-invalid hash stores a record whose produced key is too long or holds
 * forbidden bytes under prefix + hex(XXH3_128bits(template output, seed 0)),
 * the 128-bit digest in canonical big-endian form as 32 lowercase hex
 * digits: what `xxh128sum` prints for those bytes. With the default --key
 * {key}, the template output is the record key. */
#define K2MC_MAP_HASH_HEX 32
/* JSON deeper than this is not_json (the scanner keeps one frame per level) */
#define K2MC_JSON_MAX_DEPTH 512
/* {json:} placeholders of both templates together, distinct pointers */
#define K2MC_MAP_MAX_POINTERS 32

struct k2mc_mapping;
struct k2mc_decoder;

/* Compiles cfg's templates and mapping settings. NULL on a bad template,
 * with a message in err that names the option and points at the position
 * (two more lines: the template and a caret under the position), for main
 * to print and exit 2 on; also NULL (err says so) for lack of memory.
 * cfg must outlive the mapping. */
struct k2mc_mapping *k2mc_mapping_new(const struct k2mc_config *cfg, char *err, size_t errlen);
void k2mc_mapping_free(struct k2mc_mapping *map);

/* 1 when every placeholder of the key template is {key}, {topic} or
 * {partition} and {key} is among them: within a partition the Memcached key
 * is then a one-to-one function of the Kafka key, so routing on the Kafka
 * key keeps each Memcached key's records on one writer, in order, and the
 * consumer computes nothing. 0: the consumer must produce the key
 * (k2mc_mapping_prepare) and route on it. */
int k2mc_mapping_routes_by_record_key(const struct k2mc_mapping *map);
/* What the key template reads of a record (k2mc_mapping_prepare, in the
 * consumer thread): *key the record key ({key}, {keyjson:}), *value its
 * value ({value}, {json:}). What k2mc_mapping_map reads of the value in
 * the writer when the key was prepared: 1 if the value template or --cdc
 * reads it. A caller decodes (decode.h) only what is read. */
void k2mc_mapping_key_reads(const struct k2mc_mapping *map, int *key, int *value);
int k2mc_mapping_value_read(const struct k2mc_mapping *map);
/* The decoder of the formats (decode.h), set by main before any thread
 * starts; the consumer and writer threads make their contexts from it.
 * NULL (the default): records are read as they are. */
void k2mc_mapping_set_decoder(struct k2mc_mapping *map, struct k2mc_decoder *d);
struct k2mc_decoder *k2mc_mapping_decoder(const struct k2mc_mapping *map);
/* 1 if either template or --ttl-header / --flags-header reads headers. */
int k2mc_mapping_reads_headers(const struct k2mc_mapping *map);
/* 1 for the default templates and settings: key = prefix + record key,
 * value = the record's bytes, one --ttl and --flags, tombstones delete. */
int k2mc_mapping_is_default(const struct k2mc_mapping *map);

/* A record as the mapping sees it. */
struct k2mc_record {
	const char *topic;
	int32_t partition;
	int64_t offset;
	int64_t timestamp_ms;   /* -1: none (an expiry then counts from now) */
	const void *key;        /* NULL: null key */
	size_t key_len;
	const void *value;      /* NULL: a tombstone */
	size_t value_len;
	rd_kafka_headers_t *headers; /* NULL: none (or not needed) */
};

/* Fills r from m; headers only when the mapping reads them (librdkafka
 * parses them on first access). m must outlive r. */
void k2mc_record_of(const struct k2mc_mapping *map, rd_kafka_message_t *m,
		    struct k2mc_record *r);

/* Where a {json:} pointer's value lies in the record's value. */
struct k2mc_span {
	uint32_t off, len;
	uint8_t kind; /* 0 absent; else mapping.c's span kinds */
};

/* What the consumer thread computed for one record when the key template
 * is not routed by record key: the Memcached key (the thing routed on) and
 * the JSON pointers of both templates, found in one pass. Travels through
 * the ring instead of the bare record (consumer.h says how to tell them
 * apart); the writer passes it to k2mc_mapping_map and frees both. */
struct k2mc_prepared {
	rd_kafka_message_t *m;
	uint8_t reason;    /* of the key alone: OK, a hashable reason (key then
			    * holds the hashed form, key_len 0 if it does not
			    * fit), or one that gives no key */
	uint8_t key_len;   /* <= K2MC_MC_KEY_MAX */
	uint8_t json;      /* 0 not scanned, 1 scanned, 2 not JSON */
	uint8_t in_key;    /* reason is about the record key's bytes (not JSON, not
			    * Avro...), not its value's */
	size_t json_at;    /* not JSON: byte offset of the error */
	size_t produced_len; /* the template output's length (for messages) */
	const char *field; /* what was missing (the mapping's text), or NULL */
	char key[K2MC_MC_KEY_MAX];
	struct k2mc_span spans[]; /* [number of pointers] */
};

/* Consumer side: maps the key of record rec (k2mc_record_of(m)) and scans
 * the JSON pointers; the result carries m. Sets *route to the hash to route
 * on (of the Memcached key, hashed form included), or to UINT64_MAX when
 * there is no key (route anywhere). malloc'd; NULL only for lack of memory.
 * Free with k2mc_prepared_free. */
struct k2mc_prepared *k2mc_mapping_prepare(const struct k2mc_mapping *map,
					   rd_kafka_message_t *m, const struct k2mc_record *rec,
					   uint64_t *route);
/* The same for a record whose key or value could not be decoded (decode.h)
 * in the consumer thread: no key, reason r (in_key: the record key's). */
struct k2mc_prepared *k2mc_mapping_prepare_refused(const struct k2mc_mapping *map,
						   rd_kafka_message_t *m, int r, int in_key,
						   uint64_t *route);
void k2mc_prepared_free(struct k2mc_prepared *p);
/* What one struct k2mc_prepared of this mapping takes: the consumer counts
 * it in the byte budget with its record, and the writer gives it back. */
size_t k2mc_prepared_bytes(const struct k2mc_mapping *map);

/* Storage for built values: a writer keeps one and resets it per batch.
 * Values handed out stay where they are until the reset. */
struct k2mc_arena;
struct k2mc_arena *k2mc_arena_new(void);
void k2mc_arena_reset(struct k2mc_arena *a);
void k2mc_arena_free(struct k2mc_arena *a);
/* n bytes in a, until its next reset; NULL for lack of memory. */
void *k2mc_arena_alloc(struct k2mc_arena *a, size_t n);

/* One record, mapped. */
struct k2mc_mapped {
	enum k2mc_map_op op;
	int expired;          /* op is DELETE because the expiry has passed */
	int truncate;         /* op is NONE for a --cdc truncate event (op t) */
	int in_key;           /* the reason is about the record key's bytes */
	uint32_t flags;
	uint32_t exptime;     /* on the wire: 0 none, <= 30 days relative, else a unix time */
	const void *value;    /* SET: into the record, or the arena */
	size_t value_len;
	int key_hashed;       /* key is the --on-invalid hash form (reason hashable) */
	size_t key_len;       /* 0: no key */
	char key[K2MC_MC_KEY_MAX];
	/* for messages about a refused record */
	size_t produced_len;  /* the key template output's length */
	const char *field;    /* the header or pointer that was missing or bad, NUL-terminated */
	const void *bad;      /* the bad header value (bad_ttl, bad_flags) */
	size_t bad_len;
	size_t json_at;       /* not_json: byte offset of the error */
};

/* Writer side, once per record: out is complete for K2MC_MAP_OK, and for a
 * hashable reason (out->key then holds the hashed key, key_len 0 when the
 * prefix leaves no room for it, and everything else is as for OK): a reason
 * that hashing cannot cure always wins over one it can. For other reasons
 * out says only what failed. pre: what the consumer computed, or NULL.
 * now_ms: CLOCK_REALTIME ms (expiry under --ttl-from-timestamp). arena:
 * where built values go. Returns a reason, or -ENOMEM (the arena could not
 * grow; nothing else happened). */
int k2mc_mapping_map(const struct k2mc_mapping *map, const struct k2mc_record *rec,
		     const struct k2mc_prepared *pre, int64_t now_ms, struct k2mc_arena *arena,
		     struct k2mc_mapped *out);

/* One line for a refused record: what was wrong ("header ttl is 'abc', not
 * decimal seconds", "no field at /id", "not JSON (byte 17)"). */
void k2mc_mapping_explain(const struct k2mc_mapping *map, const struct k2mc_record *rec,
			  const struct k2mc_mapped *out, enum k2mc_map_reason r, char *buf,
			  size_t len);

/* Exposed for tests, the fuzz target and the bench: the JSON extractor
 * alone. Scans value (any bytes) for the mapping's pointers into spans
 * [number of pointers]; 0 if it is JSON (RFC 8259, UTF-8), else -1 with the
 * error's byte offset in *err_at. Never reads outside value. */
int k2mc_mapping_scan_json(const struct k2mc_mapping *map, const void *value, size_t len,
			   struct k2mc_span *spans, size_t *err_at);
size_t k2mc_mapping_npointers(const struct k2mc_mapping *map);

#endif
