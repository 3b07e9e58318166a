/* Criterion suite for the Avro decoder (workers/avro.h): records encoded by
 * libavro here, in the Confluent wire format, decoded against schemas served
 * by a registry in this process (libmicrohttpd on a loopback port): every
 * Avro type, Debezium's envelope, decimals, references resolved and
 * refused, the cache (one request per id, failures remembered briefly),
 * basic auth, and what is not a record of its schema. Also decode.h, the
 * decoder k2mc's threads use: Debezium events in Avro through the mapping
 * (--cdc), its reasons, and a registry down as a wait, not a reason. */
#include "workers/avro.h"

#include <arpa/inet.h>
#include <avro.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "servers.h"
#include "workers/decode.h"
#include "workers/mapping.h"

/* ---- the registry ------------------------------------------------------------------ */

#define MAX_ROUTES 32
struct route {
	char path[512];
	char *body;
	unsigned status;
	atomic_int hits;
};
static struct route routes[MAX_ROUTES];
static int nroutes;
static pthread_mutex_t routes_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *need_auth; /* "user:pass", or NULL; set before the daemon starts */
static struct MHD_Daemon *daemon_;
static unsigned port;
static char url[256];

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *path,
                                  const char *method, const char *version, const char *up,
                                  size_t *uplen, void **state)
{
	(void)cls, (void)method, (void)version, (void)up, (void)uplen, (void)state;
	const char *body = "{\"error_code\":40403,\"message\":\"Schema not found\"}";
	unsigned status = 404;
	if (need_auth) {
		char *pass = NULL, *user = MHD_basic_auth_get_username_password(c, &pass);
		char got[256] = "";
		if (user)
			snprintf(got, sizeof(got), "%s:%s", user, pass ? pass : "");
		MHD_free(user);
		MHD_free(pass);
		if (strcmp(got, need_auth)) {
			body = "{\"error_code\":401,\"message\":\"Unauthorized\"}";
			status = 401;
			goto answer;
		}
	}
	pthread_mutex_lock(&routes_mu);
	for (int i = 0; i < nroutes; i++)
		if (!strcmp(routes[i].path, path)) {
			atomic_fetch_add(&routes[i].hits, 1);
			body = routes[i].body;
			status = routes[i].status;
		}
	pthread_mutex_unlock(&routes_mu);
answer:;
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, "Content-Type", "application/vnd.schemaregistry.v1+json");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Starts the registry on a free loopback port; url is its base, with prefix.
 * With crt and key (PEM files): HTTPS, and a client certificate signed by
 * trust is asked for. */
static void registry_start_tls(const char *prefix, const char *crt, const char *key,
                               const char *trust)
{
	static char *pem[3];
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (crt) {
		size_t n;
		cr_assert_not_null(pem[0] = h_file_read(crt, &n));
		cr_assert_not_null(pem[1] = h_file_read(key, &n));
		cr_assert_not_null(pem[2] = h_file_read(trust, &n));
		daemon_ =
		    MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, 0, NULL, NULL,
		                     on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa,
		                     MHD_OPTION_HTTPS_MEM_CERT, pem[0], MHD_OPTION_HTTPS_MEM_KEY,
		                     pem[1], MHD_OPTION_HTTPS_MEM_TRUST, pem[2], MHD_OPTION_END);
	} else {
		daemon_ =
		    MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request,
		                     NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_END);
	}
	cr_assert_not_null(daemon_);
	port = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT)->port;
	snprintf(url, sizeof(url), "%s://127.0.0.1:%u%s", crt ? "https" : "http", port, prefix);
}

static void registry_start(const char *prefix)
{
	registry_start_tls(prefix, NULL, NULL, NULL);
}

static void registry_stop(void)
{
	if (daemon_)
		MHD_stop_daemon(daemon_);
	daemon_ = NULL;
}

static struct route *route_add(const char *path, unsigned status, char *body)
{
	pthread_mutex_lock(&routes_mu);
	cr_assert_lt(nroutes, MAX_ROUTES);
	struct route *r = &routes[nroutes++];
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->status = status;
	r->body = body;
	pthread_mutex_unlock(&routes_mu);
	return r;
}

/* The registry's answer for a schema: {"schema": "<text>", "references": refs} */
static char *answer(const char *schema, const char *refs)
{
	json_t *a = json_pack("{s:s}", "schema", schema);
	if (refs) {
		json_error_t je;
		json_t *r = json_loads(refs, 0, &je);
		cr_assert_not_null(r, "%s", je.text);
		json_object_set_new(a, "references", r);
	}
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s;
}

static const char *prefix_; /* the path prefix of the registry's API */

static struct route *serve_id(uint32_t id, const char *schema, const char *refs)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/schemas/ids/%u", prefix_, id);
	return route_add(path, 200, answer(schema, refs));
}

static struct route *serve_subject(const char *subject, int version, const char *schema)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/subjects/%s/versions/%d", prefix_, subject, version);
	return route_add(path, 200, answer(schema, NULL));
}

/* ---- the decoder under test ----------------------------------------------------------- */

static struct k2mc_avro *av;
static struct k2mc_avro_ctx *ctx;

static void open_decoder(void)
{
	char err[256];
	av = k2mc_avro_new(url, err, sizeof(err));
	cr_assert_not_null(av, "%s", err);
	ctx = k2mc_avro_ctx_new(av);
	cr_assert_not_null(ctx);
}

static void set(const char *name, const char *value)
{
	char err[256];
	cr_assert_eq(k2mc_avro_set(av, name, value, err, sizeof(err)), 0, "%s", err);
}

static void init(void)
{
	prefix_ = "";
	registry_start("");
	open_decoder();
}

static void fini(void)
{
	k2mc_avro_ctx_free(ctx);
	k2mc_avro_free(av);
	ctx = NULL;
	av = NULL;
	registry_stop();
}

TestSuite(avro, .init = init, .fini = fini);

/* ---- encoding with libavro -------------------------------------------------------------- */

struct rec {
	avro_schema_t schema;
	avro_value_iface_t *iface;
	avro_value_t v;
};

static void rec_new(struct rec *r, const char *schema)
{
	cr_assert_eq(avro_schema_from_json_length(schema, strlen(schema), &r->schema), 0, "%s: %s",
	             schema, avro_strerror());
	r->iface = avro_generic_class_from_schema(r->schema);
	cr_assert_eq(avro_generic_value_new(r->iface, &r->v), 0);
}

static void rec_free(struct rec *r)
{
	avro_value_decref(&r->v);
	avro_value_iface_decref(r->iface);
	avro_schema_decref(r->schema);
}

/* The wire format of r's value: 0, id big-endian, the datum */
static size_t wire(struct rec *r, uint32_t id, char *buf, size_t cap)
{
	avro_writer_t w = avro_writer_memory(buf + 5, (int64_t)cap - 5);
	cr_assert_eq(avro_value_write(w, &r->v), 0, "%s", avro_strerror());
	size_t n = (size_t)avro_writer_tell(w);
	avro_writer_free(w);
	buf[0] = 0;
	buf[1] = (char)(id >> 24);
	buf[2] = (char)(id >> 16);
	buf[3] = (char)(id >> 8);
	buf[4] = (char)id;
	return n + 5;
}

static avro_value_t field(avro_value_t *v, const char *name)
{
	avro_value_t f;
	cr_assert_eq(avro_value_get_by_name(v, name, &f, NULL), 0, "no field %s", name);
	return f;
}

static avro_value_t branch(avro_value_t *v, int i)
{
	avro_value_t b;
	cr_assert_eq(avro_value_set_branch(v, i, &b), 0);
	return b;
}

static enum k2mc_avro_result decode(const char *buf, size_t len, char *out, size_t cap)
{
	const char *json = NULL;
	size_t jl = 0;
	enum k2mc_avro_result r = k2mc_avro_decode(ctx, buf, len, &json, &jl);
	out[0] = '\0';
	if (r == K2MC_AVRO_OK) {
		cr_assert_lt(jl, cap);
		memcpy(out, json, jl);
		out[jl] = '\0';
	}
	return r;
}

static void expect_json(const char *buf, size_t len, const char *want)
{
	char out[8192];
	enum k2mc_avro_result r = decode(buf, len, out, sizeof(out));
	cr_assert_eq(r, K2MC_AVRO_OK, "%s: %s", k2mc_avro_reason_name(r), k2mc_avro_explain(ctx));
	cr_assert_str_eq(out, want);
}

static void expect_fail(const char *buf, size_t len, enum k2mc_avro_result want,
                        const char *why_has)
{
	char out[8192];
	enum k2mc_avro_result r = decode(buf, len, out, sizeof(out));
	cr_assert_eq(r, want, "got %s (%s), want %s; output %s", k2mc_avro_reason_name(r),
	             k2mc_avro_explain(ctx), k2mc_avro_reason_name(want), out);
	cr_assert(strstr(k2mc_avro_explain(ctx), why_has), "'%s' does not say '%s'",
	          k2mc_avro_explain(ctx), why_has);
}

/* ---- types ------------------------------------------------------------------------------ */

static const char PRIMS[] =
    "{\"type\":\"record\",\"name\":\"P\",\"fields\":["
    "{\"name\":\"b\",\"type\":\"boolean\"},{\"name\":\"i\",\"type\":\"int\"},"
    "{\"name\":\"l\",\"type\":\"long\"},{\"name\":\"f\",\"type\":\"float\"},"
    "{\"name\":\"d\",\"type\":\"double\"},{\"name\":\"s\",\"type\":\"string\"},"
    "{\"name\":\"n\",\"type\":\"null\"}]}";

static size_t prims(uint32_t id, char *buf, size_t cap)
{
	struct rec r;
	rec_new(&r, PRIMS);
	avro_value_t f = field(&r.v, "b");
	avro_value_set_boolean(&f, 1);
	f = field(&r.v, "i");
	avro_value_set_int(&f, -5);
	f = field(&r.v, "l");
	avro_value_set_long(&f, 1234567890123LL);
	f = field(&r.v, "f");
	avro_value_set_float(&f, 1.5f);
	f = field(&r.v, "d");
	avro_value_set_double(&f, 0.1);
	f = field(&r.v, "s");
	avro_value_set_string(&f, "h\"i\n\xc3\xa9\x01");
	size_t n = wire(&r, id, buf, cap);
	rec_free(&r);
	return n;
}

static const char PRIMS_JSON[] = "{\"b\":true,\"i\":-5,\"l\":1234567890123,\"f\":1.5,\"d\":0.1,"
                                 "\"s\":\"h\\\"i\\n\xc3\xa9\\u0001\",\"n\":null}";

Test(avro, primitives)
{
	char buf[512];
	serve_id(1, PRIMS, NULL);
	size_t n = prims(1, buf, sizeof(buf));
	expect_json(buf, n, PRIMS_JSON);
	cr_assert_eq(k2mc_avro_last_id(ctx), 1);
}

Test(avro, top_level_primitive)
{
	char buf[64];
	struct rec r;
	serve_id(2, "\"string\"", NULL);
	rec_new(&r, "\"string\"");
	avro_value_set_string(&r.v, "plain");
	size_t n = wire(&r, 2, buf, sizeof(buf));
	rec_free(&r);
	expect_json(buf, n, "\"plain\"");
}

static const char COMPLEX[] =
    "{\"type\":\"record\",\"name\":\"C\",\"namespace\":\"t\",\"fields\":["
    "{\"name\":\"u\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"u2\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"in\",\"type\":{\"type\":\"record\",\"name\":\"In\",\"fields\":["
    "  {\"name\":\"x\",\"type\":\"int\"},"
    "  {\"name\":\"deeper\",\"type\":{\"type\":\"record\",\"name\":\"D\",\"fields\":["
    "    {\"name\":\"y\",\"type\":\"string\"}]}}]}},"
    "{\"name\":\"arr\",\"type\":{\"type\":\"array\",\"items\":\"long\"}},"
    "{\"name\":\"empty\",\"type\":{\"type\":\"array\",\"items\":\"In\"}},"
    "{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":\"t.D\"}},"
    "{\"name\":\"raw\",\"type\":\"bytes\"},"
    "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\"]}},"
    "{\"name\":\"fx\",\"type\":{\"type\":\"fixed\",\"name\":\"F\",\"size\":4}}]}";

Test(avro, unions_nested_arrays_maps_bytes_enum_fixed)
{
	char buf[512];
	struct rec r;
	serve_id(3, COMPLEX, NULL);
	rec_new(&r, COMPLEX);
	avro_value_t f = field(&r.v, "u"), b = branch(&f, 0);
	avro_value_set_null(&b);
	f = field(&r.v, "u2");
	b = branch(&f, 1);
	avro_value_set_string(&b, "yes");
	f = field(&r.v, "in");
	avro_value_t x = field(&f, "x"), dp = field(&f, "deeper"), y = field(&dp, "y");
	avro_value_set_int(&x, 7);
	avro_value_set_string(&y, "deep");
	f = field(&r.v, "arr");
	for (int i = 0; i < 3; i++) {
		avro_value_t el;
		avro_value_append(&f, &el, NULL);
		avro_value_set_long(&el, (int64_t)i * -300);
	}
	f = field(&r.v, "m");
	avro_value_t el, ey;
	avro_value_add(&f, "k1", &el, NULL, NULL);
	ey = field(&el, "y");
	avro_value_set_string(&ey, "v1");
	avro_value_add(&f, "k\"2", &el, NULL, NULL);
	ey = field(&el, "y");
	avro_value_set_string(&ey, "v2");
	f = field(&r.v, "raw");
	avro_value_set_bytes(&f, "\x00\xff\x10hi", 5);
	f = field(&r.v, "e");
	avro_value_set_enum(&f, 1);
	f = field(&r.v, "fx");
	avro_value_set_fixed(&f, "abcd", 4);
	size_t n = wire(&r, 3, buf, sizeof(buf));
	rec_free(&r);
	expect_json(buf, n,
	            "{\"u\":null,\"u2\":\"yes\",\"in\":{\"x\":7,\"deeper\":{\"y\":\"deep\"}},"
	            "\"arr\":[0,-300,-600],\"empty\":[],"
	            "\"m\":{\"k1\":{\"y\":\"v1\"},\"k\\\"2\":{\"y\":\"v2\"}},"
	            "\"raw\":\"AP8QaGk=\",\"e\":\"B\",\"fx\":\"YWJjZA==\"}");
}

/* integers at every width the digit writer handles, both ends of long */
Test(avro, long_extremes)
{
	char buf[256];
	struct rec r;
	static const int64_t v[] = {
	    0, -1, 9, 10, 99, 100, -101, 1234567890123456789LL, INT64_MAX, INT64_MIN};
	serve_id(9, "{\"type\":\"array\",\"items\":\"long\"}", NULL);
	rec_new(&r, "{\"type\":\"array\",\"items\":\"long\"}");
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		avro_value_t el;
		avro_value_append(&r.v, &el, NULL);
		avro_value_set_long(&el, v[i]);
	}
	size_t n = wire(&r, 9, buf, sizeof(buf));
	rec_free(&r);
	expect_json(buf, n,
	            "[0,-1,9,10,99,100,-101,1234567890123456789,9223372036854775807,"
	            "-9223372036854775808]");
}

/* Array blocks with a negative count carry their size in bytes (Avro spec,
 * "Complex Types Serialization"): written by hand, libavro never does. */
Test(avro, array_blocks_with_byte_sizes)
{
	serve_id(4, "{\"type\":\"array\",\"items\":\"int\"}", NULL);
	/* block of -2 items (zigzag 3), 2 bytes; 1 and 2; then a block of 1: 3; end */
	const char buf[] = {0, 0, 0, 0, 4, 3, 4, 2, 4, 2, 6, 0};
	expect_json(buf, sizeof(buf), "[1,2,3]");
}

/* ---- Debezium -------------------------------------------------------------------- */

/* As Debezium's PostgreSQL connector registers an Envelope through the
 * Avro converter: unions with null, connect.* attributes, a Decimal, a
 * MicroTimestamp, the Source block. SOURCE is also served alone for the
 * references test. */
#define VALUE_SCHEMA                                                                               \
	"{\"type\":\"record\",\"name\":\"Value\",\"namespace\":\"db.public.items\",\"fields\":["   \
	"{\"name\":\"id\",\"type\":\"int\"},"                                                      \
	"{\"name\":\"name\",\"type\":[\"null\",\"string\"],\"default\":null},"                     \
	"{\"name\":\"price\",\"type\":[\"null\",{\"type\":\"bytes\",\"scale\":2,\"precision\":10," \
	"\"connect.version\":1,\"connect.parameters\":{\"scale\":\"2\","                           \
	"\"connect.decimal.precision\":\"10\"},\"connect.name\":"                                  \
	"\"org.apache.kafka.connect.data.Decimal\",\"logicalType\":\"decimal\"}],\"default\":"     \
	"null},"                                                                                   \
	"{\"name\":\"created\",\"type\":{\"type\":\"long\",\"connect.version\":1,"                 \
	"\"connect.name\":\"io.debezium.time.MicroTimestamp\"}}],"                                 \
	"\"connect.name\":\"db.public.items.Value\"}"
#define SOURCE_SCHEMA                                                                              \
	"{\"type\":\"record\",\"name\":\"Source\",\"namespace\":\"io.debezium.connector."          \
	"postgresql\","                                                                            \
	"\"fields\":[{\"name\":\"version\",\"type\":\"string\"},"                                  \
	"{\"name\":\"connector\",\"type\":\"string\"},{\"name\":\"name\",\"type\":\"string\"},"    \
	"{\"name\":\"ts_ms\",\"type\":\"long\"},"                                                  \
	"{\"name\":\"snapshot\",\"type\":[{\"type\":\"string\",\"connect.version\":1,"             \
	"\"connect.parameters\":{\"allowed\":\"true,last,false,incremental\"},"                    \
	"\"connect.default\":\"false\",\"connect.name\":\"io.debezium.data.Enum\"},\"null\"],"     \
	"\"default\":\"false\"},"                                                                  \
	"{\"name\":\"db\",\"type\":\"string\"},{\"name\":\"lsn\",\"type\":[\"null\",\"long\"],"    \
	"\"default\":null}],\"connect.name\":\"io.debezium.connector.postgresql.Source\"}"
#define ENVELOPE_WITH(source)                                                                      \
	"{\"type\":\"record\",\"name\":\"Envelope\",\"namespace\":\"db.public.items\",\"fields\":" \
	"["                                                                                        \
	"{\"name\":\"before\",\"type\":[\"null\"," VALUE_SCHEMA "],\"default\":null},"             \
	"{\"name\":\"after\",\"type\":[\"null\",\"Value\"],\"default\":null},"                     \
	"{\"name\":\"source\",\"type\":" source "},"                                               \
	"{\"name\":\"op\",\"type\":\"string\"},"                                                   \
	"{\"name\":\"ts_ms\",\"type\":[\"null\",\"long\"],\"default\":null}],"                     \
	"\"connect.version\":1,\"connect.name\":\"db.public.items.Envelope\"}"

static const char ENVELOPE[] = ENVELOPE_WITH(SOURCE_SCHEMA);
static const char ENVELOPE_REF[] = ENVELOPE_WITH("\"io.debezium.connector.postgresql.Source\"");

/* An update: before and after images */
static size_t envelope(uint32_t id, char *buf, size_t cap)
{
	struct rec r;
	rec_new(&r, ENVELOPE);
	avro_value_t f, b, g, h;
	for (int img = 0; img < 2; img++) {
		f = field(&r.v, img ? "after" : "before");
		b = branch(&f, 1);
		g = field(&b, "id");
		avro_value_set_int(&g, 42);
		g = field(&b, "name");
		h = branch(&g, 1);
		avro_value_set_string(&h, img ? "new" : "old");
		g = field(&b, "price");
		h = branch(&g, img);
		if (img) /* 1234.5 as unscaled 123450 at scale 2: 0x01e23a */
			avro_value_set_bytes(&h, "\x01\xe2\x3a", 3);
		g = field(&b, "created");
		avro_value_set_long(&g, 1796083200123456LL);
	}
	f = field(&r.v, "source");
	g = field(&f, "version");
	avro_value_set_string(&g, "3.6.1.Final");
	g = field(&f, "connector");
	avro_value_set_string(&g, "postgresql");
	g = field(&f, "name");
	avro_value_set_string(&g, "db");
	g = field(&f, "ts_ms");
	avro_value_set_long(&g, 1796083200000LL);
	g = field(&f, "snapshot");
	h = branch(&g, 0);
	avro_value_set_string(&h, "false");
	g = field(&f, "db");
	avro_value_set_string(&g, "shop");
	g = field(&f, "lsn");
	h = branch(&g, 1);
	avro_value_set_long(&h, 24023128);
	f = field(&r.v, "op");
	avro_value_set_string(&f, "u");
	f = field(&r.v, "ts_ms");
	b = branch(&f, 1);
	avro_value_set_long(&b, 1796083200200LL);
	size_t n = wire(&r, id, buf, cap);
	rec_free(&r);
	return n;
}

static const char ENVELOPE_JSON[] =
    "{\"before\":{\"id\":42,\"name\":\"old\",\"price\":null,\"created\":1796083200123456},"
    "\"after\":{\"id\":42,\"name\":\"new\",\"price\":1234.50,\"created\":1796083200123456},"
    "\"source\":{\"version\":\"3.6.1.Final\",\"connector\":\"postgresql\",\"name\":\"db\","
    "\"ts_ms\":1796083200000,\"snapshot\":\"false\",\"db\":\"shop\",\"lsn\":24023128},"
    "\"op\":\"u\",\"ts_ms\":1796083200200}";

Test(avro, debezium_envelope)
{
	char buf[1024];
	serve_id(10, ENVELOPE, NULL);
	size_t n = envelope(10, buf, sizeof(buf));
	expect_json(buf, n, ENVELOPE_JSON);
}

/* The output is what {json:} reads: mapping.c's scanner finds the pointers */
Test(avro, output_fits_json_templates)
{
	char buf[1024], err[512];
	serve_id(10, ENVELOPE, NULL);
	size_t n = envelope(10, buf, sizeof(buf));
	const char *json;
	size_t jl;
	cr_assert_eq(k2mc_avro_decode(ctx, buf, n, &json, &jl), K2MC_AVRO_OK);
	struct k2mc_config cfg = {.key_template = "{json:/after/id}",
	                          .value_template = "{json:/after/name}{json:/after/price}",
	                          .key_prefix = ""};
	struct k2mc_mapping *map = k2mc_mapping_new(&cfg, err, sizeof(err));
	cr_assert_not_null(map, "%s", err);
	cr_assert_eq(k2mc_mapping_npointers(map), 3);
	struct k2mc_span spans[3];
	size_t at = 0;
	cr_assert_eq(k2mc_mapping_scan_json(map, json, jl, spans, &at), 0, "not JSON at %zu", at);
	/* a string's span is its text inside the quotes ({json:} gives it unescaped) */
	const char *want[] = {"42", "new", "1234.50"};
	for (int i = 0; i < 3; i++) {
		cr_assert_neq(spans[i].kind, 0, "pointer %d absent", i);
		cr_assert_eq(spans[i].len, strlen(want[i]));
		cr_assert_eq(memcmp(json + spans[i].off, want[i], spans[i].len), 0, "pointer %d",
		             i);
	}
	k2mc_mapping_free(map);
}

/* ---- decimals ------------------------------------------------------------------------ */

static const char DECIMALS[] =
    "{\"type\":\"record\",\"name\":\"Dec\",\"fields\":["
    "{\"name\":\"a\",\"type\":{\"type\":\"bytes\",\"logicalType\":\"decimal\",\"precision\":9,"
    "\"scale\":2}},"
    "{\"name\":\"f\",\"type\":{\"type\":\"fixed\",\"name\":\"F8\",\"size\":8,"
    "\"logicalType\":\"decimal\",\"precision\":18,\"scale\":4}},"
    "{\"name\":\"v\",\"type\":{\"type\":\"record\",\"name\":\"VariableScaleDecimal\","
    "\"namespace\":\"io.debezium.data\",\"fields\":[{\"name\":\"scale\",\"type\":\"int\"},"
    "{\"name\":\"value\",\"type\":\"bytes\"}],\"connect.name\":"
    "\"io.debezium.data.VariableScaleDecimal\"}},"
    "{\"name\":\"big\",\"type\":{\"type\":\"bytes\",\"logicalType\":\"decimal\",\"precision\":40,"
    "\"scale\":0}}]}";

static void decimal_case(uint32_t id, const char *a, size_t alen, const char *fx, int32_t vscale,
                         const char *v, size_t vlen, const char *want)
{
	char buf[256];
	struct rec r;
	rec_new(&r, DECIMALS);
	avro_value_t f = field(&r.v, "a");
	avro_value_set_bytes(&f, (void *)a, alen);
	f = field(&r.v, "f");
	avro_value_set_fixed(&f, (void *)fx, 8);
	f = field(&r.v, "v");
	avro_value_t s = field(&f, "scale"), val = field(&f, "value");
	avro_value_set_int(&s, vscale);
	avro_value_set_bytes(&val, (void *)v, vlen);
	f = field(&r.v, "big"); /* 2^128 - 1 = 340282366920938463463374607431768211455 */
	avro_value_set_bytes(
	    &f, "\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 17);
	size_t n = wire(&r, id, buf, sizeof(buf));
	rec_free(&r);
	expect_json(buf, n, want);
}

Test(avro, decimals)
{
	serve_id(20, DECIMALS, NULL);
	/* 1234 at scale 2; -1 at scale 4; 5 at scale 3 */
	decimal_case(20, "\x04\xd2", 2, "\xff\xff\xff\xff\xff\xff\xff\xff", 3, "\x05", 1,
	             "{\"a\":12.34,\"f\":-0.0001,\"v\":0.005,"
	             "\"big\":340282366920938463463374607431768211455}");
	/* -5 at scale 2; 0 at scale 4; -128 at scale 0 */
	decimal_case(20, "\xfb", 1, "\0\0\0\0\0\0\0\0", 0, "\x80", 1,
	             "{\"a\":-0.05,\"f\":0.0000,\"v\":-128,"
	             "\"big\":340282366920938463463374607431768211455}");
}

/* ---- references -------------------------------------------------------------------- */

/* The Envelope refers to Source by name; the registry names the subject
 * that holds it. Resolved, it decodes as the inlined schema does. */
Test(avro, references_resolved)
{
	char buf[1024];
	serve_id(11, ENVELOPE_REF,
	         "[{\"name\":\"io.debezium.connector.postgresql.Source\","
	         "\"subject\":\"io.debezium.connector.postgresql.Source\",\"version\":1}]");
	struct route *src =
	    serve_subject("io.debezium.connector.postgresql.Source", 1, SOURCE_SCHEMA);
	size_t n = envelope(11, buf, sizeof(buf));
	expect_json(buf, n, ENVELOPE_JSON);
	expect_json(buf, n, ENVELOPE_JSON);
	cr_assert_eq(atomic_load(&src->hits), 1);
}

/* References of references: Source's version block is a subject of its own;
 * fetched depth first, each subject once */
Test(avro, references_nested)
{
	char buf[512];
	static const char VER[] = "{\"type\":\"record\",\"name\":\"Ver\",\"namespace\":\"n\","
	                          "\"fields\":[{\"name\":\"v\",\"type\":\"string\"}]}";
	static const char SRC[] = "{\"type\":\"record\",\"name\":\"Src\",\"namespace\":\"n\","
	                          "\"fields\":[{\"name\":\"ver\",\"type\":\"n.Ver\"},"
	                          "{\"name\":\"also\",\"type\":[\"null\",\"n.Ver\"]}]}";
	static const char TOP[] = "{\"type\":\"record\",\"name\":\"Top\",\"namespace\":\"m\","
	                          "\"fields\":[{\"name\":\"src\",\"type\":\"n.Src\"},"
	                          "{\"name\":\"ver\",\"type\":\"n.Ver\"}]}";
	static const char ALL[] =
	    "{\"type\":\"record\",\"name\":\"Top\",\"namespace\":\"m\",\"fields\":["
	    "{\"name\":\"src\",\"type\":{\"type\":\"record\",\"name\":\"Src\",\"namespace\":"
	    "\"n\",\"fields\":[{\"name\":\"ver\",\"type\":{\"type\":\"record\",\"name\":"
	    "\"Ver\",\"fields\":[{\"name\":\"v\",\"type\":\"string\"}]}},"
	    "{\"name\":\"also\",\"type\":[\"null\",\"n.Ver\"]}]}},"
	    "{\"name\":\"ver\",\"type\":\"n.Ver\"}]}";
	route_add("/schemas/ids/30", 200,
	          answer(TOP, "[{\"name\":\"n.Src\",\"subject\":\"src\",\"version\":2},"
	                      "{\"name\":\"n.Ver\",\"subject\":\"ver\",\"version\":1}]"));
	struct route *src =
	    route_add("/subjects/src/versions/2", 200,
	              answer(SRC, "[{\"name\":\"n.Ver\",\"subject\":\"ver\",\"version\":1}]"));
	struct route *ver = serve_subject("ver", 1, VER);
	struct rec r;
	rec_new(&r, ALL);
	avro_value_t f = field(&r.v, "src"), g = field(&f, "ver"), h = field(&g, "v");
	avro_value_set_string(&h, "1.0");
	g = field(&f, "also");
	avro_value_t b = branch(&g, 1);
	h = field(&b, "v");
	avro_value_set_string(&h, "1.1");
	f = field(&r.v, "ver");
	h = field(&f, "v");
	avro_value_set_string(&h, "2.0");
	size_t n = wire(&r, 30, buf, sizeof(buf));
	rec_free(&r);
	expect_json(buf, n,
	            "{\"src\":{\"ver\":{\"v\":\"1.0\"},\"also\":{\"v\":\"1.1\"}},"
	            "\"ver\":{\"v\":\"2.0\"}}");
	cr_assert_eq(atomic_load(&src->hits), 1);
	cr_assert_eq(atomic_load(&ver->hits), 1);
}

/* A delete: before only, after null */
Test(avro, debezium_delete)
{
	char buf[1024];
	struct rec r;
	serve_id(10, ENVELOPE, NULL);
	rec_new(&r, ENVELOPE);
	avro_value_t f = field(&r.v, "before"), b = branch(&f, 1), g = field(&b, "id"), h;
	avro_value_set_int(&g, 7);
	g = field(&b, "name");
	h = branch(&g, 0);
	avro_value_set_null(&h);
	g = field(&b, "price");
	h = branch(&g, 0);
	avro_value_set_null(&h);
	f = field(&r.v, "after");
	b = branch(&f, 0);
	avro_value_set_null(&b);
	f = field(&r.v, "source");
	static const char *const strs[] = {"version", "connector", "name", "db"};
	for (int i = 0; i < 4; i++) {
		g = field(&f, strs[i]);
		avro_value_set_string(&g, "x");
	}
	g = field(&f, "snapshot");
	h = branch(&g, 1);
	avro_value_set_null(&h);
	g = field(&f, "lsn");
	h = branch(&g, 0);
	avro_value_set_null(&h);
	f = field(&r.v, "op");
	avro_value_set_string(&f, "d");
	f = field(&r.v, "ts_ms");
	b = branch(&f, 0);
	avro_value_set_null(&b);
	size_t n = wire(&r, 10, buf, sizeof(buf));
	rec_free(&r);
	expect_json(buf, n,
	            "{\"before\":{\"id\":7,\"name\":null,\"price\":null,\"created\":0},"
	            "\"after\":null,\"source\":{\"version\":\"x\",\"connector\":\"x\","
	            "\"name\":\"x\",\"ts_ms\":0,\"snapshot\":null,\"db\":\"x\",\"lsn\":null},"
	            "\"op\":\"d\",\"ts_ms\":null}");
}

/* A reference the registry cannot give: the schema is refused, nothing is
 * decoded with a part missing. */
Test(avro, references_unavailable_refused)
{
	char buf[1024];
	serve_id(12, ENVELOPE_REF,
	         "[{\"name\":\"io.debezium.connector.postgresql.Source\","
	         "\"subject\":\"gone\",\"version\":3}]");
	size_t n = envelope(12, buf, sizeof(buf));
	expect_fail(buf, n, K2MC_AVRO_SCHEMA_UNAVAILABLE, "subjects/gone/versions/3");
	cr_assert(strstr(k2mc_avro_explain(ctx), "404"), "%s", k2mc_avro_explain(ctx));
}

/* A name that no reference defines: libavro refuses the schema */
Test(avro, references_missing_refused)
{
	char buf[1024];
	serve_id(13, ENVELOPE_REF, NULL);
	size_t n = envelope(13, buf, sizeof(buf));
	expect_fail(buf, n, K2MC_AVRO_SCHEMA_UNAVAILABLE, "schema 13: schema does not parse");
}

/* Apicurio serves the Confluent API under /apis/ccompat/v7 */
Test(avro, ccompat_prefix)
{
	char buf[512];
	k2mc_avro_ctx_free(ctx);
	k2mc_avro_free(av);
	prefix_ = "/apis/ccompat/v7";
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/apis/ccompat/v7/", port);
	open_decoder();
	serve_id(1, PRIMS, NULL);
	size_t n = prims(1, buf, sizeof(buf));
	expect_json(buf, n, PRIMS_JSON);
}

/* ---- the registry's answers ------------------------------------------------------- */

Test(avro, fetched_once_per_id)
{
	char b1[512], b2[512];
	struct route *r1 = serve_id(1, PRIMS, NULL), *r2 = serve_id(2, "\"string\"", NULL);
	size_t n1 = prims(1, b1, sizeof(b1));
	struct rec r;
	rec_new(&r, "\"string\"");
	avro_value_set_string(&r.v, "s");
	size_t n2 = wire(&r, 2, b2, sizeof(b2));
	rec_free(&r);
	for (int i = 0; i < 50; i++) {
		expect_json(b1, n1, PRIMS_JSON);
		expect_json(b2, n2, "\"s\"");
	}
	/* a second thread's handle finds them in the shared cache */
	struct k2mc_avro_ctx *other = k2mc_avro_ctx_new(av);
	const char *json;
	size_t jl;
	cr_assert_eq(k2mc_avro_decode(other, b1, n1, &json, &jl), K2MC_AVRO_OK);
	k2mc_avro_ctx_free(other);
	cr_assert_eq(atomic_load(&r1->hits), 1);
	cr_assert_eq(atomic_load(&r2->hits), 1);
	struct k2mc_avro_stats st;
	k2mc_avro_stats(av, &st);
	cr_assert_eq(st.fetches, 2);
	cr_assert_eq(st.schemas, 2);
}

/* 404: schema_unavailable; asked again only after negative.cache.ms */
Test(avro, unknown_id_remembered_briefly)
{
	char buf[512];
	set("negative.cache.ms", "300");
	size_t n = prims(99, buf, sizeof(buf));
	struct route *miss = route_add("/schemas/ids/99", 404,
	                               "{\"error_code\":40403,\"message\":\"Schema not found\"}");
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	expect_fail(buf, n, K2MC_AVRO_SCHEMA_UNAVAILABLE, "registry answered 404");
	cr_assert_not(k2mc_avro_transient(K2MC_AVRO_SCHEMA_UNAVAILABLE));
	/* decode until the registry is asked a second time */
	int calls = 1;
	while (atomic_load(&miss->hits) < 2) {
		expect_fail(buf, n, K2MC_AVRO_SCHEMA_UNAVAILABLE, "404");
		calls++;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		cr_assert_lt(t1.tv_sec - t0.tv_sec, 10, "never asked again");
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	/* the cache's clock counts whole milliseconds: 1 ms of slack */
	cr_assert_geq(ms, 299.0, "asked again after %.1f ms", ms);
	cr_assert_gt(calls, 2);
}

Test(avro, registry_down_is_transient)
{
	char buf[512];
	k2mc_avro_ctx_free(ctx);
	k2mc_avro_free(av);
	registry_stop(); /* nothing listens on port any more */
	open_decoder();
	set("request.timeout.ms", "2000");
	size_t n = prims(1, buf, sizeof(buf));
	expect_fail(buf, n, K2MC_AVRO_REGISTRY_DOWN, "GET http://127.0.0.1:");
	cr_assert(k2mc_avro_transient(K2MC_AVRO_REGISTRY_DOWN));
	cr_assert_str_eq(k2mc_avro_reason_name(K2MC_AVRO_REGISTRY_DOWN), "registry_unreachable");
}

Test(avro, server_error_is_transient)
{
	char buf[512];
	route_add("/schemas/ids/1", 503, "{}");
	size_t n = prims(1, buf, sizeof(buf));
	expect_fail(buf, n, K2MC_AVRO_REGISTRY_DOWN, "503");
}

Test(avro, not_avro_schema_type)
{
	char buf[512];
	route_add("/schemas/ids/1", 200,
	          "{\"schemaType\":\"PROTOBUF\",\"schema\":\"syntax = \\\"proto3\\\";\"}");
	size_t n = prims(1, buf, sizeof(buf));
	expect_fail(buf, n, K2MC_AVRO_SCHEMA_UNAVAILABLE, "PROTOBUF schema, not Avro");
}

Test(avro, bad_schema_text)
{
	char buf[512];
	serve_id(1, "{\"type\":\"record\",\"name\":\"X\",\"fields\":[{\"name\":\"a\"}]}", NULL);
	size_t n = prims(1, buf, sizeof(buf));
	expect_fail(buf, n, K2MC_AVRO_SCHEMA_UNAVAILABLE, "schema does not parse");
}

Test(avro, basic_auth)
{
	char buf[512];
	registry_stop();
	need_auth = "reader:s3cret";
	registry_start("");
	k2mc_avro_ctx_free(ctx);
	k2mc_avro_free(av);
	open_decoder();
	serve_id(1, PRIMS, NULL);
	size_t n = prims(1, buf, sizeof(buf));
	expect_fail(buf, n, K2MC_AVRO_SCHEMA_UNAVAILABLE, "401");

	struct k2mc_avro_ctx *c = ctx;
	struct k2mc_avro *a = av;
	open_decoder();
	set("basic.auth.user.info", "reader:s3cret");
	expect_json(buf, n, PRIMS_JSON);
	k2mc_avro_ctx_free(c);
	k2mc_avro_free(a);
}

/* HTTPS: the registry's certificate checked against ssl.ca.location (or
 * not, when verification is off); a client certificate with an encrypted
 * key, whose password must be right */
Test(avro, tls)
{
	char buf[512];
	struct srv_certs certs;
	srv_make_certs(&certs);
	k2mc_avro_ctx_free(ctx);
	k2mc_avro_free(av);
	registry_stop();
	registry_start_tls("", certs.srv_crt, certs.srv_key, certs.ca);
	serve_id(1, PRIMS, NULL);
	size_t n = prims(1, buf, sizeof(buf));
	struct {
		const char *ca, *verify, *cert, *key, *password;
		enum k2mc_avro_result want;
		const char *why;
	} cases[] = {
	    {certs.ca, NULL, NULL, NULL, NULL, K2MC_AVRO_OK, ""},
	    {certs.other_ca, NULL, NULL, NULL, NULL, K2MC_AVRO_REGISTRY_DOWN, "certificate"},
	    {certs.other_ca, "false", NULL, NULL, NULL, K2MC_AVRO_OK, ""},
	    {certs.ca, NULL, certs.cli_crt, certs.cli_key, "s3cret", K2MC_AVRO_OK, ""},
	    {certs.ca, NULL, certs.cli_crt, certs.cli_key, "wrong", K2MC_AVRO_REGISTRY_DOWN, "key"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		open_decoder();
		set("ssl.ca.location", cases[i].ca);
		if (cases[i].verify)
			set("enable.ssl.certificate.verification", cases[i].verify);
		if (cases[i].cert) {
			set("ssl.certificate.location", cases[i].cert);
			set("ssl.key.location", cases[i].key);
			set("ssl.key.password", cases[i].password);
		}
		if (cases[i].want == K2MC_AVRO_OK)
			expect_json(buf, n, PRIMS_JSON);
		else
			expect_fail(buf, n, cases[i].want, cases[i].why);
		k2mc_avro_ctx_free(ctx);
		k2mc_avro_free(av);
		ctx = NULL;
		av = NULL;
	}
}

Test(avro, options)
{
	char err[256];
	cr_assert_eq(k2mc_avro_set(av, "no.such", "1", err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "no.such"));
	cr_assert_eq(
	    k2mc_avro_set(av, "enable.ssl.certificate.verification", "maybe", err, sizeof(err)),
	    -EINVAL);
	cr_assert_eq(k2mc_avro_set(av, "cache.capacity", "0", err, sizeof(err)), -EINVAL);
	const char *const *names = k2mc_avro_options();
	int n = 0, ca = 0;
	for (; names[n]; n++)
		ca |= !strcmp(names[n], "ssl.ca.location");
	cr_assert_eq(n, 10);
	cr_assert(ca);
	cr_assert_null(k2mc_avro_new("ftp://x", err, sizeof(err)));
}

/* ---- what is not a record of its schema ------------------------------------------ */

Test(avro, wrong_magic_and_short)
{
	char buf[512];
	serve_id(1, PRIMS, NULL);
	size_t n = prims(1, buf, sizeof(buf));
	buf[0] = 1;
	expect_fail(buf, n, K2MC_AVRO_NOT_AVRO, "magic byte is 0x01");
	cr_assert_eq(k2mc_avro_last_id(ctx), -1);
	expect_fail("{\"a\":1}", 7, K2MC_AVRO_NOT_AVRO, "magic byte is 0x7b");
	expect_fail("\0\0\0", 3, K2MC_AVRO_NOT_AVRO, "shorter than the 5-byte header");
	cr_assert_eq(atomic_load(&routes[0].hits), 0, "asked the registry for a non-Avro value");
}

Test(avro, truncated_at_every_length)
{
	char buf[1024];
	serve_id(10, ENVELOPE, NULL);
	size_t n = envelope(10, buf, sizeof(buf));
	for (size_t cut = 5; cut < n; cut++)
		expect_fail(buf, cut, K2MC_AVRO_DECODE, "truncated");
}

Test(avro, trailing_bytes)
{
	char buf[512];
	serve_id(1, PRIMS, NULL);
	size_t n = prims(1, buf, sizeof(buf));
	buf[n] = 0;
	buf[n + 1] = 0;
	expect_fail(buf, n + 2, K2MC_AVRO_DECODE, "2 bytes left over after the record");
}

/* lengths that are negative or longer than what is left (libavro's reader
 * would allocate the declared 2 GiB first), union indexes, UTF-8, varints */
Test(avro, negative_length_bad_union_bad_utf8)
{
	serve_id(5,
	         "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"s\",\"type\":"
	         "\"string\"}]}",
	         NULL);
	serve_id(6, "[\"null\",\"string\"]", NULL);
	const char neg[] = {0, 0, 0, 0, 5, 1 /* zigzag -1 */};
	expect_fail(neg, sizeof(neg), K2MC_AVRO_DECODE, "negative length");
	const char huge[] = {0,          0,          0,          0,    5,  (char)0xfe,
	                     (char)0xff, (char)0xff, (char)0xff, 0x0f, 'a'};
	expect_fail(huge, sizeof(huge), K2MC_AVRO_DECODE, "truncated");
	const char branch2[] = {0, 0, 0, 0, 6, 4};
	expect_fail(branch2, sizeof(branch2), K2MC_AVRO_DECODE, "union index out of range");
	const char utf8[] = {0, 0, 0, 0, 5, 4, (char)0xc3, 0x28};
	expect_fail(utf8, sizeof(utf8), K2MC_AVRO_DECODE, "not UTF-8");
	const char varint[] = {0, 0, 0, 0, 5, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1};
	expect_fail(varint, sizeof(varint), K2MC_AVRO_DECODE, "varint longer than 10 bytes");
}

/* A block of 2^62 nulls reads no bytes: the output bound stops it */
Test(avro, zero_byte_items_bounded)
{
	set("max.decoded.bytes", "4096");
	serve_id(7, "{\"type\":\"array\",\"items\":\"null\"}", NULL);
	const char b[] = {0, 0, 0, 0, 7, -2, -1, -1, -1, -1, -1, -1, -1, 0x7f, 0};
	expect_fail(b, sizeof(b), K2MC_AVRO_DECODE, "over max.decoded.bytes");
}

/* A record that contains itself through a union: each level reads a byte,
 * and nesting past K2MC_AVRO_MAX_DEPTH is refused, not a stack overflow */
Test(avro, recursion_bounded)
{
	serve_id(8,
	         "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"next\",\"type\":"
	         "[\"null\",\"L\"]}]}",
	         NULL);
	char b[5 + 1000];
	memcpy(b, "\0\0\0\0\x08", 5);
	memset(b + 5, 2, sizeof(b) - 6); /* branch 1 again and again */
	b[sizeof(b) - 1] = 0;
	expect_fail(b, sizeof(b), K2MC_AVRO_DECODE, "nested deeper than");
	const char shallow[] = {0, 0, 0, 0, 8, 2, 2, 0};
	expect_json(shallow, sizeof(shallow), "{\"next\":{\"next\":{\"next\":null}}}");
}

/* ---- threads ------------------------------------------------------------------------ */

#define NTHREADS 4
#define NIDS     8
static char tbuf[NIDS][512];
static size_t tlen[NIDS];

static void *decoder_thread(void *arg)
{
	struct k2mc_avro_ctx *c = k2mc_avro_ctx_new(av);
	uintptr_t seed = (uintptr_t)arg;
	intptr_t bad = 0;
	for (int i = 0; i < 2000; i++) {
		int k = (int)((seed + (uintptr_t)i * 7) % NIDS);
		const char *json;
		size_t jl;
		if (k2mc_avro_decode(c, tbuf[k], tlen[k], &json, &jl) != K2MC_AVRO_OK ||
		    jl != strlen(PRIMS_JSON) || memcmp(json, PRIMS_JSON, jl))
			bad++;
	}
	k2mc_avro_ctx_free(c);
	return (void *)bad;
}

/* Threads with their own handles over one cache smaller than the ids in use:
 * entries are evicted while other threads hold them. */
Test(avro, threads_share_a_small_cache)
{
	set("cache.capacity", "3");
	for (uint32_t id = 0; id < NIDS; id++) {
		serve_id(100 + id, PRIMS, NULL);
		tlen[id] = prims(100 + id, tbuf[id], sizeof(tbuf[id]));
	}
	pthread_t t[NTHREADS];
	for (uintptr_t i = 0; i < NTHREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, decoder_thread, (void *)i), 0);
	for (int i = 0; i < NTHREADS; i++) {
		void *bad;
		pthread_join(t[i], &bad);
		cr_assert_eq((intptr_t)bad, 0, "thread %d: %ld wrong decodes", i,
		             (long)(intptr_t)bad);
	}
	struct k2mc_avro_stats st;
	k2mc_avro_stats(av, &st);
	cr_assert_geq(st.fetches, NIDS);
	cr_assert_eq(st.fetch_failures, 0);
}

/* The fuzz target's entry: no registry, a schema from text */
Test(avro, decode_with_a_parsed_schema)
{
	char err[256], buf[512];
	struct k2mc_avro_schema *s = k2mc_avro_schema_parse(PRIMS, strlen(PRIMS), err, sizeof(err));
	cr_assert_not_null(s, "%s", err);
	size_t n = prims(1, buf, sizeof(buf));
	const char *json;
	size_t jl;
	cr_assert_eq(k2mc_avro_decode_with(ctx, s, buf + 5, n - 5, &json, &jl), K2MC_AVRO_OK);
	cr_assert_eq(jl, strlen(PRIMS_JSON));
	cr_assert_eq(memcmp(json, PRIMS_JSON, jl), 0);
	k2mc_avro_schema_free(s);
	cr_assert_null(k2mc_avro_schema_parse("{\"type\":\"nope\"}", 15, err, sizeof(err)));
}

/* ---- decode.h: the formats as k2mc's threads decode them -------------------------------- */

#define KEY_SCHEMA "{\"type\":\"record\",\"name\":\"Key\",\"namespace\":\"db.public.items\"," \
                   "\"fields\":[{\"name\":\"id\",\"type\":\"int\"}]}"

static size_t avro_key(uint32_t id, int v, char *buf, size_t cap)
{
	struct rec r;
	rec_new(&r, KEY_SCHEMA);
	avro_value_t f = field(&r.v, "id");
	avro_value_set_int(&f, v);
	size_t n = wire(&r, id, buf, cap);
	rec_free(&r);
	return n;
}

static void cdc_config(struct k2mc_config *c)
{
	memset(c, 0, sizeof(*c));
	c->key_template = "items:{keyjson:/id}";
	c->value_template = "{value}";
	c->key_prefix = "";
	c->key_format = K2MC_FMT_AVRO;
	c->value_format = K2MC_FMT_AVRO;
	c->cdc = K2MC_CDC_DEBEZIUM;
	c->schema_registry = url;
}

Test(avro, debezium_events_decoded_and_mapped)
{
	char kbuf[64], vbuf[1024], err[256];
	struct k2mc_config c;
	struct k2mc_arena *arena = k2mc_arena_new();
	struct k2mc_mapped o;
	int in_key;

	serve_id(10, ENVELOPE, NULL);
	serve_id(11, KEY_SCHEMA, NULL);
	cdc_config(&c);
	struct k2mc_decoder *d = k2mc_decoder_new(&c, err, sizeof(err));
	cr_assert_not_null(d, "%s", err);
	struct k2mc_decode_ctx *dc = k2mc_decode_ctx_new(d);
	struct k2mc_mapping *m = k2mc_mapping_new(&c, err, sizeof(err));
	cr_assert_not_null(dc);
	cr_assert_not_null(m, "%s", err);
	k2mc_mapping_set_decoder(m, d);
	cr_expect(k2mc_decoder_key_avro(d) && k2mc_decoder_value_avro(d));
	int rk, rv;
	k2mc_mapping_key_reads(m, &rk, &rv);
	cr_expect(rk && !rv, "the key template reads the key only");
	cr_expect(k2mc_mapping_value_read(m), "--cdc reads the value");

	/* an update: the key from the Avro key, the value the after image */
	size_t kn = avro_key(11, 42, kbuf, sizeof(kbuf)), vn = envelope(10, vbuf, sizeof(vbuf));
	struct k2mc_record r = {"items", 0, 1, -1, kbuf, kn, vbuf, vn, NULL};
	cr_assert_eq(k2mc_decode_record(dc, &r, 1, 1, &in_key), 0, "%s", k2mc_decode_explain(dc));
	cr_assert_eq(k2mc_mapping_map(m, &r, NULL, 0, arena, &o), K2MC_MAP_OK);
	cr_expect_eq(o.op, K2MC_OP_SET);
	cr_expect(o.key_len == 8 && memcmp(o.key, "items:42", 8) == 0, "%.*s", (int)o.key_len, o.key);
	static const char after[] =
	    "{\"id\":42,\"name\":\"new\",\"price\":1234.50,\"created\":1796083200123456}";
	cr_expect(o.value_len == strlen(after) && memcmp(o.value, after, o.value_len) == 0,
	          "%.*s", (int)o.value_len, (const char *)o.value);

	/* the tombstone after a delete: the key decodes, the value is null */
	struct k2mc_record t = {"items", 0, 2, -1, kbuf, kn, NULL, 0, NULL};
	cr_assert_eq(k2mc_decode_record(dc, &t, 1, 1, &in_key), 0);
	cr_expect_eq(k2mc_mapping_map(m, &t, NULL, 0, arena, &o), K2MC_MAP_OK);
	cr_expect_eq(o.op, K2MC_OP_DELETE);

	/* the reasons, and whose bytes they are about */
	struct k2mc_record bad = {"items", 0, 3, -1, kbuf, kn, "\x01xyz", 4, NULL};
	cr_expect_eq(k2mc_decode_record(dc, &bad, 1, 1, &in_key), K2MC_MAP_NOT_AVRO);
	cr_expect_eq(in_key, 0);
	bad = (struct k2mc_record){"items", 0, 4, -1, "\x00\x00\x00\x00\x63\x02", 6, vbuf, vn, NULL};
	cr_expect_eq(k2mc_decode_record(dc, &bad, 1, 1, &in_key), K2MC_MAP_SCHEMA_UNAVAILABLE);
	cr_expect_eq(in_key, 1);
	cr_expect_neq(k2mc_decode_explain(dc)[0], '\0');
	vbuf[vn - 1] ^= 0x7f; /* ts_ms's union index: out of range or a long cut short */
	bad = (struct k2mc_record){"items", 0, 5, -1, kbuf, kn, vbuf, vn - 3, NULL};
	cr_expect_eq(k2mc_decode_record(dc, &bad, 1, 1, &in_key), K2MC_MAP_AVRO_DECODE);
	/* what is not read is not decoded: a key alone, a value alone */
	bad = (struct k2mc_record){"items", 0, 6, -1, kbuf, kn, "\x01xyz", 4, NULL};
	cr_expect_eq(k2mc_decode_record(dc, &bad, 1, 0, &in_key), 0);
	cr_expect_eq(bad.value_len, 4, "the value is left as it is");

	k2mc_mapping_free(m);
	k2mc_decode_ctx_free(dc);
	k2mc_decoder_free(d);
	k2mc_arena_free(arena);
}

Test(avro, decoder_settings_and_a_registry_down)
{
	char err[256], kbuf[64];
	struct k2mc_config c;
	int in_key;

	cdc_config(&c);
	c.schema_registry = NULL;
	cr_expect_null(k2mc_decoder_new(&c, err, sizeof(err)));
	cr_expect_not_null(strstr(err, "needs --schema-registry"), "%s", err);
	cdc_config(&c);
	c.sr_props[c.nsr_props++] = "no.such.setting=1";
	cr_expect_null(k2mc_decoder_new(&c, err, sizeof(err)));
	cr_expect_not_null(strstr(err, "no.such.setting"), "%s", err);
	cdc_config(&c);
	c.sr_props[c.nsr_props++] = "request.timeout.ms=2000";
	c.sr_props[c.nsr_props++] = "basic.auth.user.info=u:p";
	struct k2mc_decoder *d = k2mc_decoder_new(&c, err, sizeof(err));
	cr_assert_not_null(d, "%s", err);
	struct k2mc_decode_ctx *dc = k2mc_decode_ctx_new(d);
	cr_assert_not_null(dc);
	/* nothing listens: the caller waits and asks again, nothing is invalid */
	registry_stop();
	size_t kn = avro_key(11, 1, kbuf, sizeof(kbuf));
	struct k2mc_record r = {"items", 0, 1, -1, kbuf, kn, NULL, 0, NULL};
	cr_expect_eq(k2mc_decode_record(dc, &r, 1, 1, &in_key), K2MC_DECODE_AGAIN);
	cr_expect_eq(k2mc_decoder_waits(d), 0);
	k2mc_decode_note_wait(d);
	cr_expect_eq(k2mc_decoder_waits(d), 1);
	k2mc_decode_ctx_free(dc);
	k2mc_decoder_free(d);
	/* raw and json decode nothing */
	memset(&c, 0, sizeof(c));
	d = k2mc_decoder_new(&c, err, sizeof(err));
	cr_assert_not_null(d);
	dc = k2mc_decode_ctx_new(d);
	r = (struct k2mc_record){"t", 0, 1, -1, "k", 1, "\x01", 1, NULL};
	cr_expect_eq(k2mc_decode_record(dc, &r, 1, 1, &in_key), 0);
	cr_expect(r.key_len == 1 && r.value_len == 1);
	k2mc_decode_ctx_free(dc);
	k2mc_decoder_free(d);
}
