/* Avro record values in the Confluent wire format -> JSON text that the
 * {json:/...} templates read (mapping.h). Fetches each schema once per id from
 * a Confluent-compatible Schema Registry over HTTP(S) and caches it. Not the
 * options of k2mc (config.c) and not the mapping: a decoded value is handed on
 * as JSON text, and the caller maps a failure to its --on-invalid reason.
 *
 * Wire format: byte 0 is the magic 0, bytes 1..4 the schema id (big-endian),
 * the rest one Avro binary datum of that schema, with no byte left over.
 *
 * JSON shape (that of Kafka Connect's JsonConverter with schemas.enable=false,
 * so a Debezium topic reads the same in JSON and in Avro): a record is an
 * object with its fields in schema order, a union the value of its branch
 * (no {"type": value} wrapper), an enum its symbol, bytes and fixed base64
 * (RFC 4648, padded), a map an object, float and double shortest round-trip
 * numbers (NaN and the infinities as the strings "NaN", "Infinity",
 * "-Infinity"). Decimals (Avro's logicalType decimal, Kafka Connect's
 * org.apache.kafka.connect.data.Decimal, Debezium's VariableScaleDecimal) are
 * exact JSON numbers ("12.34"). Other logical types (date, time-*, timestamp-*,
 * Debezium's io.debezium.time.*) stay the numbers they are on the wire, as the
 * JsonConverter writes them; uuid is a string already.
 *
 * Threads, who calls what:
 * - main: k2mc_avro_new and k2mc_avro_set before any consumer or writer
 *   thread exists (thread creation publishes the settings), k2mc_avro_free
 *   after they are joined.
 * - each thread that decodes (the consumer threads, where the key or the
 *   {json:} pointers are computed, and the writers, where values are built):
 *   k2mc_avro_ctx_new once, k2mc_avro_decode per record, k2mc_avro_ctx_free
 *   before it ends. A ctx is one thread's: its output buffer and a
 *   direct-mapped cache of 64 schemas, each held by a reference, read with
 *   no lock and no atomic operation.
 * - any thread: k2mc_avro_stats (relaxed counters).
 * On a miss of its own cache a thread takes the shared cache's mutex; on a
 * miss there too it takes the fetch mutex (one registry request at a time,
 * other threads' misses wait; a thread that waited for the same id finds it
 * fetched). A compiled schema is immutable and freed when the last reference
 * goes (the shared cache's, evicted oldest first, or a ctx's). */
#ifndef K2MC_AVRO_H
#define K2MC_AVRO_H

#include <stddef.h>
#include <stdint.h>

/* Why a value did not decode. Stable names (k2mc_avro_reason_name) for the
 * caller's invalid-record reasons. */
enum k2mc_avro_result {
	K2MC_AVRO_OK = 0,
	K2MC_AVRO_NOT_AVRO,           /* "not_avro": shorter than 5 bytes, or magic not 0 */
	K2MC_AVRO_SCHEMA_UNAVAILABLE, /* "schema_unavailable": the registry does not know the
	                               * id (404), or its schema is not Avro, does not parse,
	                               * or names references that cannot be had */
	K2MC_AVRO_REGISTRY_DOWN,      /* "registry_unreachable": connection, TLS, timeout or
	                               * 5xx: transient, retried after negative.cache.ms */
	K2MC_AVRO_DECODE,             /* "avro_decode": the bytes are not a datum of the schema
	                               * (truncated, bytes left over, bad union index, bad
	                               * UTF-8, too deep, output over max.decoded.bytes) */
	K2MC_AVRO_NRESULTS,
};

const char *k2mc_avro_reason_name(enum k2mc_avro_result r);
/* 1 for a result that may go away by itself (the registry was unreachable):
 * the caller may prefer to wait and retry over counting the record invalid. */
int k2mc_avro_transient(enum k2mc_avro_result r);

/* Nesting deeper than this is avro_decode (the decoder recurses per level) */
#define K2MC_AVRO_MAX_DEPTH 128
/* References followed from one schema, transitively */
#define K2MC_AVRO_MAX_REFERENCES 64

struct k2mc_avro;

/* url: the registry's base (http:// or https://), e.g. http://host:8081 or,
 * for Apicurio, http://host:8080/apis/ccompat/v7; ids are fetched from
 * {url}/schemas/ids/{id}, references from
 * {url}/subjects/{subject}/versions/{version}. Calls curl_global_init: main
 * makes it before starting threads. NULL with a message in err on a bad url or
 * lack of memory. */
struct k2mc_avro *k2mc_avro_new(const char *url, char *err, size_t errlen);
void k2mc_avro_free(struct k2mc_avro *a);

/* Sets one registry client option by the name the registry clients use,
 * before the first decode (not thread-safe):
 *   basic.auth.user.info        USER:PASSWORD for HTTP basic auth
 *   ssl.ca.location             CA bundle (PEM) to verify the registry with
 *   ssl.certificate.location    client certificate (PEM)
 *   ssl.key.location            client key (PEM)
 *   ssl.key.password            the key's passphrase
 *   enable.ssl.certificate.verification  true (default) or false
 *   request.timeout.ms          per request, default 10000
 *   cache.capacity              schemas kept (default 1000; the oldest goes)
 *   negative.cache.ms           how long a failure is remembered per id
 *                               (default 5000): a missing id or a registry
 *                               down is asked again at most this often
 *   max.decoded.bytes           JSON output per record (default 16 MiB)
 * Returns 0, or -EINVAL with a message in err (unknown name, bad value).
 * k2mc_avro_options lists the names, NULL-terminated. */
int k2mc_avro_set(struct k2mc_avro *a, const char *name, const char *value, char *err,
                  size_t errlen);
const char *const *k2mc_avro_options(void);

/* What the registry client did, for stats: written under the fetch mutex,
 * read with relaxed loads (monotonic counters). */
struct k2mc_avro_stats {
	uint64_t fetches;        /* HTTP requests made */
	uint64_t fetch_failures; /* of which did not give a usable answer */
	uint64_t schemas;        /* schemas compiled */
};
void k2mc_avro_stats(const struct k2mc_avro *a, struct k2mc_avro_stats *out);

/* A thread's handle: its output buffer and its cache of the schemas it has
 * met (it holds a reference on each, so an eviction from the shared cache
 * never frees a schema under it). NULL for lack of memory. */
struct k2mc_avro_ctx;
struct k2mc_avro_ctx *k2mc_avro_ctx_new(struct k2mc_avro *a);
void k2mc_avro_ctx_free(struct k2mc_avro_ctx *c);

/* Decodes one value. On K2MC_AVRO_OK, *json and *json_len give the JSON text
 * (valid UTF-8, not NUL-terminated), valid until the next call on c. On
 * failure k2mc_avro_explain(c) says what went wrong in one line. Fetches the
 * schema if neither cache has it (blocking, up to request.timeout.ms per
 * request). */
enum k2mc_avro_result k2mc_avro_decode(struct k2mc_avro_ctx *c, const void *data, size_t len,
                                       const char **json, size_t *json_len);
/* The last failure's explanation ("schema 7: registry answered 404",
 * "truncated at byte 12"), "" after success. */
const char *k2mc_avro_explain(const struct k2mc_avro_ctx *c);
/* The schema id of the last value that had the wire format, else -1. */
int64_t k2mc_avro_last_id(const struct k2mc_avro_ctx *c);

/* Exposed for the fuzz target and the bench: a schema compiled from its JSON
 * text alone (no registry, no references), and the decoder on the bytes after
 * the 5-byte header. */
struct k2mc_avro_schema;
struct k2mc_avro_schema *k2mc_avro_schema_parse(const char *json, size_t len, char *err,
                                                size_t errlen);
void k2mc_avro_schema_free(struct k2mc_avro_schema *s);
enum k2mc_avro_result k2mc_avro_decode_with(struct k2mc_avro_ctx *c,
                                            const struct k2mc_avro_schema *s, const void *data,
                                            size_t len, const char **json, size_t *json_len);

#endif
