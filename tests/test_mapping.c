/* Criterion suite for the record -> Memcached mapping (workers/mapping.h):
 * every placeholder, {{ and }}, the template errors and their positions,
 * the key rules of memcached's text protocol (at most 250 bytes with the
 * prefix, no whitespace or control bytes) and --on-invalid hash's key
 * formula, JSON pointers (RFC 6901) and what is not JSON (RFC 8259), TTL and
 * flags per record, expiry on the wire, tombstones, and the consumer's
 * prepared keys. It sends nothing to a server. */
#include "workers/mapping.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/config.h"

/* memcached protocol.txt: keys are at most 250 bytes; over 30 days an
 * exptime is a unix time. Spelled out here rather than taken from the code
 * under test. */
#define KEY_MAX 250
#define THIRTY_DAYS 2592000
/* 2026-12-01T00:00:00Z, the clock of these tests */
#define NOW_MS 1796083200000LL

static struct k2mc_config cfg;
static struct k2mc_mapping *map;
static struct k2mc_arena *arena;
static rd_kafka_headers_t *hdrs;

static void reset(void)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.key_template = "{key}";
	cfg.value_template = "{value}";
	cfg.key_prefix = "";
}

static void fini(void)
{
	k2mc_mapping_free(map);
	map = NULL;
	k2mc_arena_free(arena);
	arena = NULL;
	if (hdrs != NULL)
		rd_kafka_headers_destroy(hdrs);
	hdrs = NULL;
}

static void init(void)
{
	reset();
}

TestSuite(mapping, .init = init, .fini = fini);

/* Compiles cfg with these templates; asserts it compiles. */
static void compile(const char *key, const char *value)
{
	char err[512] = "";

	if (key != NULL)
		cfg.key_template = key;
	if (value != NULL)
		cfg.value_template = value;
	k2mc_mapping_free(map);
	map = k2mc_mapping_new(&cfg, err, sizeof(err));
	cr_assert_not_null(map, "key '%s' value '%s': %s", cfg.key_template, cfg.value_template, err);
	if (arena == NULL)
		arena = k2mc_arena_new();
}

/* The error a template gets (asserts it does not compile). */
static const char *compile_error(const char *key, const char *value)
{
	static char err[512];
	struct k2mc_config c;
	struct k2mc_mapping *m;

	reset();
	c = cfg;
	if (key != NULL)
		c.key_template = key;
	if (value != NULL)
		c.value_template = value;
	err[0] = '\0';
	m = k2mc_mapping_new(&c, err, sizeof(err));
	cr_assert_null(m, "key '%s' value '%s' compiled", c.key_template, c.value_template);
	cr_assert(err[0] != '\0');
	return err;
}

static void header(const char *name, const char *value)
{
	if (hdrs == NULL)
		hdrs = rd_kafka_headers_new(4);
	rd_kafka_header_add(hdrs, name, -1, value, value ? -1 : 0);
}

static struct k2mc_record rec_kv(const char *key, const char *value)
{
	struct k2mc_record r = { "orders", 7, 42, -1, key, key ? strlen(key) : 0,
				 value, value ? strlen(value) : 0, hdrs };

	return r;
}

static int map_rec(const struct k2mc_record *r, struct k2mc_mapped *out)
{
	memset(out, 0x5a, sizeof(*out));
	return k2mc_mapping_map(map, r, NULL, NOW_MS, arena, out);
}

/* Maps (key, value) and expects reason want; returns the mapped result. */
static struct k2mc_mapped map_kv(const char *key, const char *value, int want)
{
	struct k2mc_record r = rec_kv(key, value);
	struct k2mc_mapped out;
	int got = map_rec(&r, &out);

	cr_assert_eq(got, want, "key '%s' value '%s': %s, expected %s", key ? key : "(null)",
		     value ? value : "(null)", k2mc_map_reason_name(got), k2mc_map_reason_name(want));
	return out;
}

static void expect_key(const struct k2mc_mapped *o, const char *want)
{
	cr_expect(o->key_len == strlen(want) && memcmp(o->key, want, o->key_len) == 0,
		  "key '%.*s', expected '%s'", (int)o->key_len, o->key, want);
}

static void expect_value(const struct k2mc_mapped *o, const char *want)
{
	cr_expect(o->value_len == strlen(want) && memcmp(o->value, want, o->value_len) == 0,
		  "value '%.*s', expected '%s'", (int)o->value_len, (const char *)o->value, want);
}

/* value template {json:PTR} over doc: the value it yields, or the reason */
static void expect_json(const char *ptr, const char *doc, int want, const char *value)
{
	char tmpl[256];
	struct k2mc_mapped o;

	snprintf(tmpl, sizeof(tmpl), "{json:%s}", ptr);
	compile("{key}", tmpl);
	o = map_kv("k", doc, want);
	if (want == K2MC_MAP_OK) {
		cr_expect(o.value_len == strlen(value) && memcmp(o.value, value, o.value_len) == 0,
			  "%s in %s: '%.*s', expected '%s'", ptr, doc, (int)o.value_len,
			  (const char *)o.value, value);
	}
}

/* ---- reasons ---------------------------------------------------------------*/

Test(mapping, reason_names)
{
	static const char *const want[] = { "ok",          "missing_key",     "key_too_long",
					    "key_bad_bytes", "value_too_large", "missing_field",
					    "not_json",    "bad_ttl",         "bad_flags",
					    "not_avro",    "schema_unavailable", "avro_decode",
					    "not_cdc" };

	cr_assert_eq(sizeof(want) / sizeof(want[0]), K2MC_MAP_NREASONS);
	for (int r = 0; r < K2MC_MAP_NREASONS; r++)
		cr_expect_str_eq(k2mc_map_reason_name(r), want[r]);
	cr_expect_str_eq(k2mc_map_reason_name(K2MC_MAP_NREASONS), "unknown");
	cr_expect(k2mc_map_hashable(K2MC_KEY_TOO_LONG) && k2mc_map_hashable(K2MC_KEY_BAD_BYTES));
	for (int r = 0; r < K2MC_MAP_NREASONS; r++)
		if (r != K2MC_KEY_TOO_LONG && r != K2MC_KEY_BAD_BYTES)
			cr_expect(!k2mc_map_hashable(r), "%s", k2mc_map_reason_name(r));
}

/* ---- the default mapping (what keymap.c did) ---------------------------------*/

Test(mapping, default_is_prefix_key_and_the_bytes)
{
	struct k2mc_mapped o;
	struct k2mc_record r;

	cfg.key_prefix = "app:";
	cfg.key_prefix_len = 4;
	cfg.ttl = 60;
	cfg.flags = 7;
	compile(NULL, NULL);
	cr_expect(k2mc_mapping_is_default(map));
	cr_expect(k2mc_mapping_routes_by_record_key(map));
	cr_expect(!k2mc_mapping_reads_headers(map));
	r = rec_kv("user:42", "v1");
	cr_assert_eq(map_rec(&r, &o), K2MC_MAP_OK);
	expect_key(&o, "app:user:42");
	cr_expect_eq(o.op, K2MC_OP_SET);
	cr_expect_eq(o.value, r.value, "the value is not copied");
	cr_expect_eq(o.value_len, 2);
	cr_expect_eq(o.exptime, 60);
	cr_expect_eq(o.flags, 7);
	cr_expect(!o.expired && !o.key_hashed);
}

Test(mapping, missing_key)
{
	struct k2mc_record r = rec_kv(NULL, "v");
	struct k2mc_mapped o;
	char why[200];

	compile(NULL, NULL);
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_MISSING, "null key");
	k2mc_mapping_explain(map, &r, &o, K2MC_KEY_MISSING, why, sizeof(why));
	cr_expect_str_eq(why, "null record key");
	r.key_len = 5;
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_MISSING, "null key with a length");
	r = rec_kv("", "v");
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_MISSING, "empty key");
	k2mc_mapping_explain(map, &r, &o, K2MC_KEY_MISSING, why, sizeof(why));
	cr_expect_str_eq(why, "empty record key");
	/* a tombstone without a key cannot be deleted either */
	r = rec_kv(NULL, NULL);
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_MISSING);
	/* with a prefix too: the record key is what is missing */
	cfg.key_prefix = "p:";
	cfg.key_prefix_len = 2;
	compile(NULL, NULL);
	r = rec_kv("", "v");
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_MISSING);
}

Test(mapping, key_length_boundaries)
{
	static char key[KEY_MAX + 2];
	struct k2mc_record r;
	struct k2mc_mapped o;

	memset(key, 'k', sizeof(key) - 1);
	compile(NULL, NULL);
	r = rec_kv(key, "v");
	r.key_len = KEY_MAX;
	cr_expect_eq(map_rec(&r, &o), K2MC_MAP_OK, "250 bytes fit");
	cr_expect_eq(o.key_len, KEY_MAX);
	r.key_len = KEY_MAX + 1;
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_TOO_LONG);
	cfg.key_prefix = "pfx:";
	cfg.key_prefix_len = 4;
	compile(NULL, NULL);
	r.key_len = KEY_MAX - 4;
	cr_expect_eq(map_rec(&r, &o), K2MC_MAP_OK, "4 + 246 = 250");
	cr_expect(memcmp(o.key, "pfx:", 4) == 0 && o.key_len == KEY_MAX);
	r.key_len = KEY_MAX - 3;
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_TOO_LONG, "4 + 247");
	r.value = NULL;
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_TOO_LONG, "a tombstone's key is checked too");
	cr_expect_eq(o.op, K2MC_OP_DELETE);
}

Test(mapping, every_byte_value)
{
	compile(NULL, NULL);
	for (int c = 0; c < 256; c++) {
		char key[3] = { 'a', (char)c, 'b' };
		struct k2mc_record r = rec_kv("x", "v");
		struct k2mc_mapped o;
		int bad = c <= 0x20 || c == 0x7f;

		r.key = key;
		r.key_len = 3;
		cr_expect_eq(map_rec(&r, &o), bad ? K2MC_KEY_BAD_BYTES : K2MC_MAP_OK, "byte 0x%02x",
			     c);
	}
}

static size_t expected_hashed(const char *prefix, const void *key, size_t len, char *out)
{
	XXH128_hash_t h = XXH3_128bits(key, len);

	return (size_t)sprintf(out, "%s%016llx%016llx", prefix, (unsigned long long)h.high64,
			       (unsigned long long)h.low64);
}

Test(mapping, hash_digest_is_xxh128sum)
{
	/* `printf '' | xxh128sum` -> 99aa06d3014798d86001c324468d497f */
	XXH128_hash_t h = XXH3_128bits("", 0);

	cr_expect_eq(h.high64, 0x99aa06d3014798d8ULL);
	cr_expect_eq(h.low64, 0x6001c324468d497fULL);
}

Test(mapping, hashed_key_follows_the_formula)
{
	static char longkey[400];
	static const struct {
		const char *key;
		size_t len;
		int reason;
	} keys[] = {
		{ "a b", 3, K2MC_KEY_BAD_BYTES },     { "tab\there", 8, K2MC_KEY_BAD_BYTES },
		{ "nul\0inside", 10, K2MC_KEY_BAD_BYTES }, { "\x7f", 1, K2MC_KEY_BAD_BYTES },
		{ longkey, 251, K2MC_KEY_TOO_LONG },  { longkey, 400, K2MC_KEY_TOO_LONG },
	};
	char want[KEY_MAX + 64];

	memset(longkey, 'k', sizeof(longkey));
	cfg.key_prefix = "app:";
	cfg.key_prefix_len = 4;
	compile(NULL, NULL);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		struct k2mc_record r = rec_kv("x", "v");
		struct k2mc_mapped o;
		size_t wn = expected_hashed("app:", keys[i].key, keys[i].len, want);

		r.key = keys[i].key;
		r.key_len = keys[i].len;
		cr_assert_eq(map_rec(&r, &o), keys[i].reason, "key %zu", i);
		cr_expect(o.key_hashed, "key %zu", i);
		cr_expect(o.key_len == wn && memcmp(o.key, want, wn) == 0, "key %zu: '%.*s' != '%s'",
			  i, (int)o.key_len, o.key, want);
		/* the rest is mapped too: a hashed key still carries its value */
		cr_expect_eq(o.op, K2MC_OP_SET);
		cr_expect_eq(o.value_len, 1);
	}
}

Test(mapping, hashed_key_needs_room_for_the_digest)
{
	static char prefix[KEY_MAX];
	struct k2mc_record r = rec_kv("a b", "v");
	struct k2mc_mapped o;

	memset(prefix, 'p', sizeof(prefix));
	cfg.key_prefix = prefix;
	cfg.key_prefix_len = KEY_MAX - 32;
	compile(NULL, NULL);
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_BAD_BYTES);
	cr_expect_eq(o.key_len, KEY_MAX, "218 + 32 = 250 fits");
	cfg.key_prefix_len = KEY_MAX - 31;
	compile(NULL, NULL);
	cr_expect_eq(map_rec(&r, &o), K2MC_KEY_BAD_BYTES);
	cr_expect_eq(o.key_len, 0, "no room: no key");
	cr_expect(!o.key_hashed);
}

/* ---- placeholders ---------------------------------------------------------------*/

Test(mapping, every_placeholder)
{
	struct k2mc_mapped o;

	header("id", "h-1");
	compile("{topic}/{partition}/{key}/{header:id}/{json:/id}", "{value}|{key}|{topic}");
	cr_expect(!k2mc_mapping_routes_by_record_key(map));
	cr_expect(k2mc_mapping_reads_headers(map));
	o = map_kv("k1", "{\"id\":\"u9\"}", K2MC_MAP_OK);
	expect_key(&o, "orders/7/k1/h-1/u9");
	expect_value(&o, "{\"id\":\"u9\"}|k1|orders");
}

Test(mapping, literals_and_braces)
{
	struct k2mc_mapped o;

	compile("a{{b}}c:{key}:}}", "{{\"k\": \"{key}\"}}");
	o = map_kv("K", "v", K2MC_MAP_OK);
	expect_key(&o, "a{b}c:K:}");
	expect_value(&o, "{\"k\": \"K\"}");
	compile("{{{key}}}", "{{}}");
	o = map_kv("K", "v", K2MC_MAP_OK);
	expect_key(&o, "{K}");
	expect_value(&o, "{}");
	/* a template of literals only: a constant key, routed as one */
	compile("latest", "fixed");
	cr_expect(!k2mc_mapping_routes_by_record_key(map));
	o = map_kv(NULL, "v", K2MC_MAP_OK);
	expect_key(&o, "latest");
	expect_value(&o, "fixed");
	/* an empty value template: empty values */
	compile("{key}", "");
	o = map_kv("K", "v", K2MC_MAP_OK);
	cr_expect_eq(o.value_len, 0);
}

Test(mapping, topic_and_partition)
{
	struct k2mc_mapped o;
	struct k2mc_record r;

	compile("{topic}:{partition}:{key}", "{partition}");
	cr_expect(k2mc_mapping_routes_by_record_key(map), "constant within a partition");
	r = rec_kv("k", "v");
	r.partition = 2147483647;
	cr_assert_eq(map_rec(&r, &o), K2MC_MAP_OK);
	expect_key(&o, "orders:2147483647:k");
	expect_value(&o, "2147483647");
	r.partition = 0;
	cr_assert_eq(map_rec(&r, &o), K2MC_MAP_OK);
	expect_value(&o, "0");
}

Test(mapping, header_placeholder)
{
	struct k2mc_mapped o;
	char why[200];
	struct k2mc_record r;

	header("id", "first");
	header("other", "x");
	header("id", "last");
	header("nothing", NULL);
	compile("{header:id}", "{header:other}");
	o = map_kv(NULL, "v", K2MC_MAP_OK);
	expect_key(&o, "last"); /* the last header of that name */
	expect_value(&o, "x");
	compile("{header:missing}", NULL);
	r = rec_kv("k", "v");
	cr_expect_eq(map_rec(&r, &o), K2MC_MAP_MISSING_FIELD);
	k2mc_mapping_explain(map, &r, &o, K2MC_MAP_MISSING_FIELD, why, sizeof(why));
	cr_expect_str_eq(why, "no header 'missing'");
	compile("{header:nothing}", NULL);
	map_kv("k", "v", K2MC_MAP_MISSING_FIELD); /* a null value is no header */
	compile("{key}", "{header:missing}");
	map_kv("k", "v", K2MC_MAP_MISSING_FIELD);
	/* no headers at all */
	rd_kafka_headers_destroy(hdrs);
	hdrs = NULL;
	compile("{header:id}", NULL);
	map_kv("k", "v", K2MC_MAP_MISSING_FIELD);
	/* an empty header makes an empty key */
	header("id", "");
	compile("{header:id}", NULL);
	map_kv("k", "v", K2MC_KEY_MISSING);
}

Test(mapping, key_and_value_placeholders_of_absent_parts)
{
	struct k2mc_mapped o;
	struct k2mc_record r;
	char why[200];

	compile("user:{key}", NULL);
	cr_expect(k2mc_mapping_routes_by_record_key(map));
	map_kv(NULL, "v", K2MC_KEY_MISSING);
	map_kv("", "v", K2MC_KEY_MISSING);
	/* the key from the value: a tombstone has none */
	compile("{value}", "x");
	cr_expect(!k2mc_mapping_routes_by_record_key(map));
	o = map_kv("k", "abc", K2MC_MAP_OK);
	expect_key(&o, "abc");
	r = rec_kv("k", NULL);
	cr_expect_eq(map_rec(&r, &o), K2MC_MAP_MISSING_FIELD);
	k2mc_mapping_explain(map, &r, &o, K2MC_MAP_MISSING_FIELD, why, sizeof(why));
	cr_expect(strstr(why, "tombstone") != NULL, "%s", why);
	compile("user:{json:/id}", NULL);
	map_kv("k", NULL, K2MC_MAP_MISSING_FIELD);
}

Test(mapping, key_template_output_rules)
{
	static char big[600];
	char doc[700], want[300];
	struct k2mc_mapped o;

	memset(big, 'x', 500);
	/* spaces from a JSON string: bad bytes, and hashable */
	compile("user:{json:/name}", NULL);
	o = map_kv("k", "{\"name\":\"Ada Lovelace\"}", K2MC_KEY_BAD_BYTES);
	expected_hashed("", "user:Ada Lovelace", 17, want);
	expect_key(&o, want);
	/* too long: the digest of the whole output */
	snprintf(doc, sizeof(doc), "{\"name\":\"%s\"}", big);
	o = map_kv("k", doc, K2MC_KEY_TOO_LONG);
	{
		char out[700];

		snprintf(out, sizeof(out), "user:%s", big);
		expected_hashed("", out, strlen(out), want);
		expect_key(&o, want);
		cr_expect_eq(o.produced_len, 505);
	}
	/* exactly 250 */
	big[245] = '\0';
	snprintf(doc, sizeof(doc), "{\"name\":\"%s\"}", big);
	o = map_kv("k", doc, K2MC_MAP_OK);
	cr_expect_eq(o.key_len, 250);
	big[245] = 'x';
	big[246] = '\0';
	snprintf(doc, sizeof(doc), "{\"name\":\"%s\"}", big);
	map_kv("k", doc, K2MC_KEY_TOO_LONG);
	/* an escaped string: decoded, and hashed decoded */
	o = map_kv("k", "{\"name\":\"a\\u0020b\"}", K2MC_KEY_BAD_BYTES);
	expected_hashed("", "user:a b", 8, want);
	expect_key(&o, want);
}

Test(mapping, routing_rule)
{
	static const struct {
		const char *key;
		int by_record_key;
	} t[] = {
		{ "{key}", 1 },           { "user:{key}", 1 },         { "{topic}:{key}:v2", 1 },
		{ "{key}{key}", 1 },      { "{partition}{key}", 1 },   { "{topic}", 0 },
		{ "x", 0 },               { "{value}", 0 },            { "{key}{value}", 0 },
		{ "{header:id}", 0 },     { "{key}:{header:v}", 0 },   { "{json:/id}", 0 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		compile(t[i].key, NULL);
		cr_expect_eq(k2mc_mapping_routes_by_record_key(map), t[i].by_record_key, "%s",
			     t[i].key);
	}
}

/* ---- template errors ---------------------------------------------------------------*/

static void expect_error(const char *key, const char *value, const char *opt, size_t pos,
			 const char *words)
{
	const char *e = compile_error(key, value);
	char want[64], *nl, caret[300];
	const char *tmpl = key ? key : value;

	snprintf(want, sizeof(want), "--%s: ", opt);
	cr_expect(strncmp(e, want, strlen(want)) == 0, "'%s' does not start with '%s'", e, want);
	snprintf(want, sizeof(want), "at position %zu:", pos);
	cr_expect(strstr(e, want) != NULL, "'%s' lacks '%s'", e, want);
	cr_expect(strstr(e, words) != NULL, "'%s' lacks '%s'", e, words);
	/* then the template, then a caret under the position */
	nl = strchr(e, '\n');
	cr_assert_not_null(nl, "%s", e);
	if (strlen(tmpl) <= 72) {
		snprintf(caret, sizeof(caret), "\n  %s\n  %*s^", tmpl, (int)(pos - 1), "");
		cr_expect(strstr(e, caret) != NULL, "'%s' lacks the caret line '%s'", e, caret);
	}
}

Test(mapping, template_errors_point_at_the_position)
{
	expect_error("user:{jsn:/id}", NULL, "key", 6, "unknown placeholder '{jsn:/id}'");
	expect_error("{key", NULL, "key", 1, "no '}' closes");
	expect_error("a}b", NULL, "key", 2, "lone '}'");
	expect_error("{key}}", NULL, "key", 6, "lone '}'");
	expect_error("x{header:}", NULL, "key", 10, "needs a header name");
	expect_error("{json:id}", NULL, "key", 7, "starts with '/'");
	expect_error("{json:/a~2b}", NULL, "key", 9, "bad escape '~2'");
	expect_error("{json:/a~}", NULL, "key", 9, "bad escape '~'");
	expect_error(NULL, "{{{value", "value", 3, "no '}' closes");
	expect_error(NULL, "pre {Value}", "value", 5, "unknown placeholder '{Value}'");
	expect_error(NULL, "{ key }", "value", 1, "unknown placeholder");
	expect_error(NULL, "{}", "value", 1, "unknown placeholder '{}'");
	cr_expect(strstr(compile_error("", NULL), "--key: the template is empty") != NULL);
}

Test(mapping, long_template_errors_show_a_window)
{
	char t[400];
	const char *e;

	memset(t, 'a', 300);
	memcpy(t + 300, "{bad}", 6);
	e = compile_error(t, NULL);
	cr_expect(strstr(e, "at position 301:") != NULL, "%s", e);
	cr_expect(strstr(e, "...aaaa") != NULL, "%s", e);
	cr_expect(strlen(e) < 400, "%s", e);
}

Test(mapping, too_many_pointers)
{
	char t[2048] = "";
	size_t n = 0;

	for (int i = 0; i <= K2MC_MAP_MAX_POINTERS; i++)
		n += (size_t)snprintf(t + n, sizeof(t) - n, "{json:/f%d}", i);
	cr_expect(strstr(compile_error(t, NULL), "more than 32 distinct JSON pointers") != NULL);
	/* the same pointer twice is one */
	n = 0;
	for (int i = 0; i <= K2MC_MAP_MAX_POINTERS; i++)
		n += (size_t)snprintf(t + n, sizeof(t) - n, "{json:/f}");
	compile(t, "{json:/f}");
	cr_expect_eq(k2mc_mapping_npointers(map), 1);
}

/* ---- JSON pointers (RFC 6901) ---------------------------------------------------------*/

/* RFC 6901 section 5's document, and what each of its pointers gives */
#define RFC6901_DOC                                                                        \
	"{\"foo\": [\"bar\", \"baz\"], \"\": 0, \"a/b\": 1, \"c%d\": 2, \"e^f\": 3, "      \
	"\"g|h\": 4, \"i\\\\j\": 5, \"k\\\"l\": 6, \" \": 7, \"m~n\": 8}"

Test(mapping, rfc6901_examples)
{
	expect_json("", RFC6901_DOC, K2MC_MAP_OK,
		    "{\"foo\":[\"bar\",\"baz\"],\"\":0,\"a/b\":1,\"c%d\":2,\"e^f\":3,\"g|h\":4,"
		    "\"i\\\\j\":5,\"k\\\"l\":6,\" \":7,\"m~n\":8}");
	expect_json("/foo", RFC6901_DOC, K2MC_MAP_OK, "[\"bar\",\"baz\"]");
	expect_json("/foo/0", RFC6901_DOC, K2MC_MAP_OK, "bar");
	expect_json("/", RFC6901_DOC, K2MC_MAP_OK, "0");
	expect_json("/a~1b", RFC6901_DOC, K2MC_MAP_OK, "1");
	expect_json("/c%d", RFC6901_DOC, K2MC_MAP_OK, "2");
	expect_json("/e^f", RFC6901_DOC, K2MC_MAP_OK, "3");
	expect_json("/g|h", RFC6901_DOC, K2MC_MAP_OK, "4");
	expect_json("/i\\j", RFC6901_DOC, K2MC_MAP_OK, "5");
	expect_json("/k\"l", RFC6901_DOC, K2MC_MAP_OK, "6");
	expect_json("/ ", RFC6901_DOC, K2MC_MAP_OK, "7");
	expect_json("/m~0n", RFC6901_DOC, K2MC_MAP_OK, "8");
}

Test(mapping, array_indexes)
{
	const char *doc = "[10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, [\"deep\"]]";

	expect_json("/0", doc, K2MC_MAP_OK, "10");
	expect_json("/10", doc, K2MC_MAP_OK, "20");
	expect_json("/11/0", doc, K2MC_MAP_OK, "deep");
	expect_json("/12", doc, K2MC_MAP_MISSING_FIELD, NULL);
	expect_json("/-", doc, K2MC_MAP_MISSING_FIELD, NULL);  /* past the end: nothing */
	expect_json("/01", doc, K2MC_MAP_MISSING_FIELD, NULL); /* not an index */
	expect_json("/+1", doc, K2MC_MAP_MISSING_FIELD, NULL);
	expect_json("/99999999999", doc, K2MC_MAP_MISSING_FIELD, NULL);
	/* an object member named "0" is a member, not an index */
	expect_json("/0", "{\"0\": \"zero\"}", K2MC_MAP_OK, "zero");
	expect_json("/a", "[1]", K2MC_MAP_MISSING_FIELD, NULL);
	expect_json("/0", "\"scalar\"", K2MC_MAP_MISSING_FIELD, NULL);
	expect_json("/0/x", "[[]]", K2MC_MAP_MISSING_FIELD, NULL);
}

Test(mapping, json_values_as_text)
{
	const char *doc = "{ \"s\": \"plain\", \"e\": \"tab\\there \\\"q\\\" \\u00e9 \\ud83d\\ude00 "
			  "\\/ \\\\\", \"n\": -1.5e+3, \"t\": true, \"f\": false, \"z\": null, "
			  "\"o\": { \"a\" : [ 1 , \"x y\" , {} ] , \"b\":\"\\n\" }, \"empty\": \"\" }";

	expect_json("/s", doc, K2MC_MAP_OK, "plain");
	expect_json("/e", doc, K2MC_MAP_OK, "tab\there \"q\" \xc3\xa9 \xf0\x9f\x98\x80 / \\");
	expect_json("/n", doc, K2MC_MAP_OK, "-1.5e+3");
	expect_json("/t", doc, K2MC_MAP_OK, "true");
	expect_json("/f", doc, K2MC_MAP_OK, "false");
	expect_json("/z", doc, K2MC_MAP_OK, "null");
	/* compact: whitespace outside strings goes, strings stay as written */
	expect_json("/o", doc, K2MC_MAP_OK, "{\"a\":[1,\"x y\",{}],\"b\":\"\\n\"}");
	expect_json("/o/a", doc, K2MC_MAP_OK, "[1,\"x y\",{}]");
	expect_json("/o/a/2", doc, K2MC_MAP_OK, "{}");
	expect_json("/o/b", doc, K2MC_MAP_OK, "\n");
	expect_json("/empty", doc, K2MC_MAP_OK, "");
	expect_json("/nope", doc, K2MC_MAP_MISSING_FIELD, NULL);
	expect_json("/s/x", doc, K2MC_MAP_MISSING_FIELD, NULL);
	/* a long escaped string, past the decoder's chunk size */
	{
		char big[4000], want[2000];
		size_t n = 0;

		n += (size_t)snprintf(big, sizeof(big), "{\"s\":\"");
		for (int i = 0; i < 600; i++) {
			memcpy(big + n, "\\u00e9", 6);
			n += 6;
		}
		memcpy(big + n, "\"}", 3);
		for (int i = 0; i < 600; i++)
			memcpy(want + 2 * i, "\xc3\xa9", 2);
		want[1200] = '\0';
		expect_json("/s", big, K2MC_MAP_OK, want);
	}
}

Test(mapping, single_placeholder_values_are_not_copied)
{
	const char *doc = "{\"p\":{\"x\":1},\"s\":\"abc\",\"sp\":{ \"x\": 1 }}";
	struct k2mc_record r;
	struct k2mc_mapped o;

	compile("{key}", "{json:/p}");
	r = rec_kv("k", doc);
	cr_assert_eq(map_rec(&r, &o), K2MC_MAP_OK);
	cr_expect_eq((const char *)o.value, doc + 5, "the sub-document in place");
	compile("{key}", "{json:/s}");
	cr_assert_eq(map_rec(&r, &o), K2MC_MAP_OK);
	cr_expect_eq((const char *)o.value, strstr(doc, "abc"));
	compile("{key}", "{json:/sp}");
	cr_assert_eq(map_rec(&r, &o), K2MC_MAP_OK);
	expect_value(&o, "{\"x\":1}");
	compile("{key}", "{key}");
	cr_assert_eq(map_rec(&r, &o), K2MC_MAP_OK);
	cr_expect_eq(o.value, r.key);
}

Test(mapping, duplicate_members_the_last_counts)
{
	expect_json("/a", "{\"a\":1,\"a\":2}", K2MC_MAP_OK, "2");
	expect_json("/a/b", "{\"a\":{\"b\":1},\"a\":{\"c\":2}}", K2MC_MAP_MISSING_FIELD, NULL);
	expect_json("/a/b", "{\"a\":{\"b\":1},\"a\":{\"b\":3}}", K2MC_MAP_OK, "3");
	/* an escaped member name matches its decoded form */
	expect_json("/id", "{\"\\u0069d\":\"esc\"}", K2MC_MAP_OK, "esc");
	expect_json("/a~1b", "{\"a\\/b\":\"slash\"}", K2MC_MAP_OK, "slash");
}

Test(mapping, two_templates_one_pass)
{
	struct k2mc_mapped o;

	compile("user:{json:/id}", "{json:/profile}");
	o = map_kv(NULL, "{\"id\":42,\"profile\":{\"name\":\"Ada\",\"langs\":[\"en\",\"fr\"]}}",
		   K2MC_MAP_OK);
	expect_key(&o, "user:42");
	expect_value(&o, "{\"name\":\"Ada\",\"langs\":[\"en\",\"fr\"]}");
	o = map_kv(NULL, "{\"id\":42}", K2MC_MAP_MISSING_FIELD);
	cr_expect_str_eq(o.field, "JSON pointer '/profile'");
	o = map_kv(NULL, "{\"profile\":{}}", K2MC_MAP_MISSING_FIELD);
	cr_expect_str_eq(o.field, "JSON pointer '/id'");
}

/* ---- not JSON (RFC 8259) ---------------------------------------------------------*/

Test(mapping, what_is_not_json)
{
	static const char *const bad[] = {
		"", " ", "{", "}", "[", "[1,]", "[,1]", "{\"a\"}", "{\"a\":}", "{\"a\":1,}",
		"{a:1}", "{'a':1}", "[1 2]", "01", "1.", ".5", "-", "1e", "1e+", "+1", "NaN",
		"Infinity", "tru", "nul", "truex", "[true false]", "\"unterminated",
		"\"bad \\x escape\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\ud800\"", "\"\\udc00\"",
		"\"\\ud800\\u0041\"", "\"ctl \x01 byte\"", "\"tab\tinside\"", "\"\xc0\xaf\"",
		"\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xff\"",
		"\"\xc3\"", "{\"a\":1}x", "{\"a\":1} {}", "[1]]", "\x80",
	};

	compile("{key}", "{json:}");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct k2mc_record r = rec_kv("k", bad[i]);
		struct k2mc_mapped o;

		cr_expect_eq(map_rec(&r, &o), K2MC_MAP_NOT_JSON, "'%s' taken as JSON", bad[i]);
	}
	/* the error's offset is in the message */
	{
		struct k2mc_record r = rec_kv("k", "{\"a\":[1,2,}");
		struct k2mc_mapped o;
		char why[200];

		cr_expect_eq(map_rec(&r, &o), K2MC_MAP_NOT_JSON);
		cr_expect_eq(o.json_at, 10);
		k2mc_mapping_explain(map, &r, &o, K2MC_MAP_NOT_JSON, why, sizeof(why));
		cr_expect(strstr(why, "byte 10") != NULL, "%s", why);
	}
}

Test(mapping, what_is_json)
{
	static const char *const good[] = {
		"0", "-0", "1.5", "-1e-7", "1E+2", "true", "null", "\"\"", "\"\xc3\xa9\"",
		"\"\xf0\x9f\x98\x80\"", "\"\xe2\x82\xac\"", "[]", "{}", " [ ] ", "\t\r\n{}\n",
		"[[[]],{}]", "{\"\":\"\"}", "\"\\u0000\"", "\"\\ud83d\\ude00\"",
	};

	compile("{key}", "{json:}");
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct k2mc_record r = rec_kv("k", good[i]);
		struct k2mc_mapped o;

		cr_expect_eq(map_rec(&r, &o), K2MC_MAP_OK, "'%s' refused", good[i]);
	}
}

Test(mapping, nesting_depth)
{
	size_t n = K2MC_JSON_MAX_DEPTH;
	char *doc = malloc(2 * n + 3);
	size_t err_at = 0;
	struct k2mc_span sp[1];

	compile("{key}", "{json:/0}");
	memset(doc, '[', n);
	memset(doc + n, ']', n);
	cr_expect_eq(k2mc_mapping_scan_json(map, doc, 2 * n, sp, &err_at), 0, "512 levels");
	doc[0] = '[';
	memset(doc, '[', n + 1);
	memset(doc + n + 1, ']', n + 1);
	cr_expect_eq(k2mc_mapping_scan_json(map, doc, 2 * n + 2, sp, &err_at), -1, "513 levels");
	free(doc);
}

Test(mapping, scanner_never_reads_past_the_value)
{
	/* every prefix of a valid document, each in a buffer of its own size
	 * (ASan would see a read past it) */
	const char *doc = "{\"a\":[1,-2.5e3,true,null,\"x\\u00e9\\ud83d\\ude00\"],\"b\":{\"c\":\"d\"}}";
	size_t n = strlen(doc), err_at;
	struct k2mc_span sp[2];

	compile("{json:/a/4}", "{json:/b}");
	for (size_t len = 0; len < n; len++) {
		char *b = malloc(len ? len : 1);

		memcpy(b, doc, len);
		cr_expect_eq(k2mc_mapping_scan_json(map, b, len, sp, &err_at), -1, "prefix %zu", len);
		cr_expect_leq(err_at, len);
		free(b);
	}
	cr_expect_eq(k2mc_mapping_scan_json(map, doc, n, sp, &err_at), 0);
}

/* ---- TTL, expiry, flags ------------------------------------------------------------*/

static struct k2mc_mapped map_ts(int64_t ts_ms, int want)
{
	struct k2mc_record r = rec_kv("k", "v");
	struct k2mc_mapped o;
	int got;

	r.timestamp_ms = ts_ms;
	got = map_rec(&r, &o);
	cr_assert_eq(got, want, "ts %lld: %s", (long long)ts_ms, k2mc_map_reason_name(got));
	return o;
}

Test(mapping, ttl_header)
{
	static const char *const bad[] = { "", "abc", "-1", "+5", " 5", "5 ", "1.5", "0x10",
					   "2147483648", "99999999999999999999999" };
	struct k2mc_mapped o;
	char why[200];

	cfg.ttl = 60;
	cfg.ttl_header = "ttl";
	compile(NULL, NULL);
	cr_expect(k2mc_mapping_reads_headers(map));
	cr_expect(!k2mc_mapping_is_default(map));
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 60, "no header: --ttl");
	header("ttl", "300");
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 300);
	rd_kafka_headers_destroy(hdrs);
	hdrs = NULL;
	header("ttl", "0");
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 0, "0: never expires");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct k2mc_record r;

		rd_kafka_headers_destroy(hdrs);
		hdrs = NULL;
		header("ttl", bad[i]);
		r = rec_kv("k", "v");
		cr_expect_eq(map_rec(&r, &o), K2MC_MAP_BAD_TTL, "'%s'", bad[i]);
	}
	{
		struct k2mc_record r;

		rd_kafka_headers_destroy(hdrs);
		hdrs = NULL;
		header("ttl", "ten\x01");
		r = rec_kv("k", "v");
		cr_assert_eq(map_rec(&r, &o), K2MC_MAP_BAD_TTL);
		k2mc_mapping_explain(map, &r, &o, K2MC_MAP_BAD_TTL, why, sizeof(why));
		cr_expect_str_eq(why, "header 'ttl' is 'ten\\x01', not decimal seconds 0..2147483647");
	}
	/* a tombstone's TTL header is not read */
	map_kv("k", NULL, K2MC_MAP_OK);
}

Test(mapping, ttl_over_30_days_is_a_unix_time)
{
	struct k2mc_mapped o;
	int64_t now_s = NOW_MS / 1000;
	char t[32];

	cfg.ttl_header = "ttl";
	compile(NULL, NULL);
	header("ttl", "2592000");
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect_eq(o.exptime, THIRTY_DAYS, "30 days: relative");
	rd_kafka_headers_destroy(hdrs);
	hdrs = NULL;
	snprintf(t, sizeof(t), "%lld", (long long)now_s + 3600);
	header("ttl", t);
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect_eq(o.exptime, (uint32_t)(now_s + 3600), "a unix time, as memcached reads it");
	cr_expect(!o.expired);
	rd_kafka_headers_destroy(hdrs);
	hdrs = NULL;
	snprintf(t, sizeof(t), "%lld", (long long)now_s - 1);
	header("ttl", t);
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect(o.expired, "a unix time past: expired");
	cr_expect_eq(o.op, K2MC_OP_DELETE);
}

Test(mapping, ttl_from_timestamp)
{
	struct k2mc_mapped o;

	cfg.ttl = 3600;
	cfg.ttl_from_timestamp = 1;
	compile(NULL, NULL);
	o = map_ts(NOW_MS, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 3600);
	o = map_ts(NOW_MS - 1000 * 1000, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 2600, "1000 s of it already gone");
	o = map_ts(NOW_MS - 3599500, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 1, "half a second left: rounded up");
	cr_expect_eq(o.op, K2MC_OP_SET);
	o = map_ts(NOW_MS - 3600 * 1000, K2MC_MAP_OK);
	cr_expect(o.expired && o.op == K2MC_OP_DELETE, "expired exactly now");
	o = map_ts(NOW_MS - 86400 * 1000LL, K2MC_MAP_OK);
	cr_expect(o.expired && o.op == K2MC_OP_DELETE);
	expect_key(&o, "k");
	o = map_ts(-1, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 3600, "no timestamp: from now");
	/* a producer clock ahead of ours: still at most the TTL away... from
	 * the timestamp, so a little more than the TTL */
	o = map_ts(NOW_MS + 5000, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 3605);
}

Test(mapping, ttl_from_timestamp_past_30_days)
{
	struct k2mc_mapped o;

	cfg.ttl = 90 * 86400;
	cfg.ttl_from_timestamp = 1;
	compile(NULL, NULL);
	o = map_ts(NOW_MS - 80 * 86400 * 1000LL, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 10 * 86400, "10 days left: relative");
	o = map_ts(NOW_MS - 1000, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, (uint32_t)(NOW_MS / 1000 + 90 * 86400 - 1),
		     "89.99 days left: the unix time");
	cr_expect_gt(o.exptime, THIRTY_DAYS);
	cfg.ttl = INT32_MAX;
	compile(NULL, NULL);
	o = map_ts(NOW_MS, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, INT32_MAX, "at most memcached's last second (2038)");
	o = map_ts(1, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, INT32_MAX, "1970 + 68 years: 2038");
	cfg.ttl = 365 * 86400;
	compile(NULL, NULL);
	o = map_ts(NOW_MS - 2 * 365 * 86400 * 1000LL, K2MC_MAP_OK);
	cr_expect(o.expired, "two years old with a one-year TTL");
}

Test(mapping, ttl_header_with_timestamp)
{
	struct k2mc_mapped o;

	cfg.ttl = 60;
	cfg.ttl_header = "ttl";
	cfg.ttl_from_timestamp = 1;
	compile(NULL, NULL);
	header("ttl", "7200");
	o = map_ts(NOW_MS - 3600 * 1000LL, K2MC_MAP_OK);
	cr_expect_eq(o.exptime, 3600);
	o = map_ts(NOW_MS - 7200 * 1000LL, K2MC_MAP_OK);
	cr_expect(o.expired);
	rd_kafka_headers_destroy(hdrs);
	hdrs = NULL;
	header("ttl", "0");
	o = map_ts(NOW_MS - 7200 * 1000LL, K2MC_MAP_OK);
	cr_expect(!o.expired && o.exptime == 0, "0: never expires");
	rd_kafka_headers_destroy(hdrs);
	hdrs = NULL;
	header("ttl", "soon");
	map_ts(NOW_MS, K2MC_MAP_BAD_TTL);
}

Test(mapping, expired_records_need_only_their_key)
{
	struct k2mc_mapped o;

	cfg.ttl = 10;
	cfg.ttl_from_timestamp = 1;
	cfg.flags_header = "f";
	compile("{key}", "{json:/p}");
	header("f", "bad");
	o = map_ts(NOW_MS - 60000, K2MC_MAP_OK);
	cr_expect(o.expired, "neither the flags nor the value matter: it is deleted");
	map_ts(NOW_MS, K2MC_MAP_BAD_FLAGS);
}

Test(mapping, flags)
{
	static const char *const bad[] = { "", "x", "-1", "4294967296", "1 ", "0x1" };
	struct k2mc_mapped o;

	cfg.flags = 4;
	cfg.flags_header = "codec";
	compile(NULL, NULL);
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect_eq(o.flags, 4, "no header: --flags");
	header("codec", "4294967295");
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect_eq(o.flags, UINT32_MAX);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct k2mc_record r;
		char why[200];

		rd_kafka_headers_destroy(hdrs);
		hdrs = NULL;
		header("codec", bad[i]);
		r = rec_kv("k", "v");
		cr_expect_eq(map_rec(&r, &o), K2MC_MAP_BAD_FLAGS, "'%s'", bad[i]);
		k2mc_mapping_explain(map, &r, &o, K2MC_MAP_BAD_FLAGS, why, sizeof(why));
		cr_expect(strstr(why, "header 'codec' is '") == why, "%s", why);
	}
}

Test(mapping, bad_record_beats_hashable_key)
{
	cfg.ttl_header = "ttl";
	compile(NULL, NULL);
	header("ttl", "x");
	/* hashing would cure the key, not the TTL */
	map_kv("a b", "v", K2MC_MAP_BAD_TTL);
}

/* ---- tombstones ------------------------------------------------------------------*/

Test(mapping, tombstones)
{
	struct k2mc_mapped o;

	compile(NULL, NULL);
	o = map_kv("k", NULL, K2MC_MAP_OK);
	cr_expect_eq(o.op, K2MC_OP_DELETE);
	expect_key(&o, "k");
	cfg.on_tombstone = K2MC_TOMB_IGNORE;
	compile(NULL, NULL);
	cr_expect(!k2mc_mapping_is_default(map));
	o = map_kv("k", NULL, K2MC_MAP_OK);
	cr_expect_eq(o.op, K2MC_OP_NONE);
	o = map_kv(NULL, NULL, K2MC_MAP_OK);
	cr_expect_eq(o.op, K2MC_OP_NONE, "ignored: not even the key matters");
	o = map_kv("k", "v", K2MC_MAP_OK);
	cr_expect_eq(o.op, K2MC_OP_SET);
	cfg.on_tombstone = K2MC_TOMB_INVALIDATE;
	cfg.invalidate_grace_s = 30;
	compile(NULL, NULL);
	o = map_kv("k", NULL, K2MC_MAP_OK);
	cr_expect_eq(o.op, K2MC_OP_INVALIDATE);
	expect_key(&o, "k");
	map_kv("a b", NULL, K2MC_KEY_BAD_BYTES);
}

/* ---- the consumer's prepared keys --------------------------------------------------*/

static rd_kafka_message_t *message(const char *key, const char *value)
{
	rd_kafka_message_t *m = calloc(1, sizeof(*m));

	m->key = (void *)key;
	m->key_len = key ? strlen(key) : 0;
	m->payload = (void *)value;
	m->len = value ? strlen(value) : 0;
	m->partition = 3;
	m->offset = 99;
	return m;
}

/* prepare in the consumer + map in the writer == map alone */
static void same_either_way(const char *key, const char *value)
{
	rd_kafka_message_t *m = message(key, value);
	struct k2mc_record r;
	struct k2mc_mapped a, b;
	struct k2mc_prepared *p;
	uint64_t route;
	int ra, rb;

	/* as k2mc_record_of(map, m) makes it, with the test's headers (a
	 * message not made by librdkafka has none to parse) */
	r = rec_kv(key, value);
	r.partition = m->partition;
	r.offset = m->offset;
	p = k2mc_mapping_prepare(map, m, &r, &route);
	cr_assert_not_null(p);
	cr_expect_eq(p->m, m);
	ra = k2mc_mapping_map(map, &r, p, NOW_MS, arena, &a);
	rb = k2mc_mapping_map(map, &r, NULL, NOW_MS, arena, &b);
	cr_expect_eq(ra, rb, "%s: %s vs %s", value, k2mc_map_reason_name(ra), k2mc_map_reason_name(rb));
	cr_expect(a.key_len == b.key_len && memcmp(a.key, b.key, a.key_len) == 0, "%s", value);
	cr_expect_eq(a.key_hashed, b.key_hashed);
	cr_expect(a.value_len == b.value_len &&
		  (a.value_len == 0 || memcmp(a.value, b.value, a.value_len) == 0), "%s", value);
	cr_expect_eq(a.op, b.op);
	if (a.key_len > 0)
		cr_expect_eq(route, XXH3_64bits(a.key, a.key_len), "routed on the Memcached key");
	else
		cr_expect_eq(route, UINT64_MAX);
	k2mc_prepared_free(p);
	free(m);
}

Test(mapping, prepared_keys_match)
{
	compile("user:{json:/id}", "{json:/profile}");
	same_either_way("k", "{\"id\":1,\"profile\":{\"a\":[1, 2]}}");
	same_either_way("k", "{\"id\":\"has space\",\"profile\":0}");
	same_either_way("k", "{\"id\":1}");
	same_either_way("k", "{\"id\":1,");
	same_either_way("k", NULL);
	header("id", "h1");
	compile("{header:none}", NULL);
	same_either_way("k", "v");
	compile("{header:id}:{json:/a}", "{json:/b}");
	same_either_way("k", "{\"a\":\"x\",\"b\":[ 1 ]}");
	compile("const", NULL);
	same_either_way(NULL, "v");
}

/* ---- record keys as JSON: {keyjson:} (issue 26) ------------------------------------*/

Test(mapping, keyjson_points_into_the_record_key)
{
	struct k2mc_mapped o;
	char why[256];
	struct k2mc_record r;

	compile("customers:{keyjson:/id}", NULL);
	cr_expect(!k2mc_mapping_routes_by_record_key(map), "the consumer must produce the key");
	o = map_kv("{\"id\": 42}", "v", K2MC_MAP_OK);
	expect_key(&o, "customers:42");
	expect_value(&o, "v");
	o = map_kv("{\"id\":\"a~b\",\"x\":1}", "v", K2MC_MAP_OK);
	expect_key(&o, "customers:a~b");
	/* the same rules as {json:}: a string unescaped, others compact */
	compile("c:{keyjson:/id}:{keyjson:/o}", NULL);
	o = map_kv("{\"id\":\"\\u0041\",\"o\":{ \"a\" : [1, 2] }}", "v", K2MC_MAP_OK);
	expect_key(&o, "c:A:{\"a\":[1,2]}");
	/* the whole key, and what is not there */
	compile("{keyjson:}", "{value}");
	o = map_kv("[1, 2]", "v", K2MC_MAP_OK);
	expect_key(&o, "[1,2]");
	compile("customers:{keyjson:/id}", NULL);
	o = map_kv("{\"other\":1}", "v", K2MC_MAP_MISSING_FIELD);
	cr_expect_eq(o.key_len, 0);
	o = map_kv(NULL, "v", K2MC_KEY_MISSING);
	/* a key that is not JSON: said to be the key, with its offset */
	o = map_kv("{\"id\":", "v", K2MC_MAP_NOT_JSON);
	cr_expect(o.in_key);
	r = rec_kv("{\"id\":", "v");
	k2mc_mapping_explain(map, &r, &o, K2MC_MAP_NOT_JSON, why, sizeof(why));
	cr_expect_str_eq(why, "the record key (6 bytes) is not JSON: error at byte 6");
	/* a value that is not JSON does not matter to a key template that
	 * reads only the key */
	o = map_kv("{\"id\":7}", "not json", K2MC_MAP_OK);
	expect_key(&o, "customers:7");
}

/* Kafka Connect's JsonConverter with schemas.enable=true */
#define KEY_ENV(id) "{\"schema\":{\"type\":\"struct\",\"fields\":[{\"type\":\"int32\",\"field\":\"id\"}]}," \
		    "\"payload\":{\"id\":" id "}}"

Test(mapping, json_envelopes_are_read_as_their_payload)
{
	struct k2mc_mapped o;

	cfg.key_format = K2MC_FMT_JSON;
	cfg.value_format = K2MC_FMT_JSON;
	compile("c:{keyjson:/id}", "{json:/name}");
	o = map_kv(KEY_ENV("42"), "{\"schema\":{\"type\":\"struct\"},\"payload\":{\"name\":\"Ada\"}}",
		   K2MC_MAP_OK);
	expect_key(&o, "c:42");
	expect_value(&o, "Ada");
	/* without an envelope the document is the whole text */
	o = map_kv("{\"id\":43}", "{\"name\":\"Bo\"}", K2MC_MAP_OK);
	expect_key(&o, "c:43");
	expect_value(&o, "Bo");
	/* {value} is the payload, compact; a bare document as it is */
	compile("c:{keyjson:/id}", "{value}");
	o = map_kv(KEY_ENV("1"), "{\"schema\":{},\"payload\":{ \"name\" : \"Ada\" }}", K2MC_MAP_OK);
	expect_value(&o, "{\"name\":\"Ada\"}");
	o = map_kv(KEY_ENV("1"), "{ \"name\" : \"Ada\" }", K2MC_MAP_OK);
	expect_value(&o, "{ \"name\" : \"Ada\" }");
	/* "schema" that is not an object: no envelope */
	o = map_kv(KEY_ENV("1"), "{\"schema\":1,\"payload\":2}", K2MC_MAP_OK);
	expect_value(&o, "{\"schema\":1,\"payload\":2}");
	o = map_kv(KEY_ENV("1"), "{\"name\":", K2MC_MAP_NOT_JSON);
	/* raw (the default) does not unwrap: the bytes mean what they say */
	cfg.key_format = K2MC_FMT_RAW;
	cfg.value_format = K2MC_FMT_RAW;
	compile("c:{keyjson:/id}", "{value}");
	o = map_kv(KEY_ENV("1"), "v", K2MC_MAP_MISSING_FIELD);
	compile("c:{keyjson:/payload/id}", "{value}");
	o = map_kv(KEY_ENV("5"), "v", K2MC_MAP_OK);
	expect_key(&o, "c:5");
	expect_value(&o, "v");
}

Test(mapping, avro_keys_are_not_routed_by_their_bytes)
{
	cfg.key_format = K2MC_FMT_AVRO;
	compile("{key}", NULL);
	cr_expect(!k2mc_mapping_routes_by_record_key(map));
	cr_expect(!k2mc_mapping_is_default(map));
	cfg.key_format = K2MC_FMT_JSON;
	compile("{key}", NULL);
	cr_expect(k2mc_mapping_routes_by_record_key(map));
}

/* ---- Debezium change events: --cdc (issue 26) --------------------------------------*/

#define ROW42 "{\"id\":42,\"name\":\"Ada\",\"email\":\"ada@example.com\"}"
#define ROW42B "{\"id\":42,\"name\":\"Ada L\",\"email\":\"ada@example.com\"}"
#define SOURCE "\"source\":{\"version\":\"3.6.1.Final\",\"connector\":\"postgresql\",\"lsn\":123}"
#define EVENT(op, before, after) \
	"{\"before\":" before ",\"after\":" after "," SOURCE ",\"op\":\"" op "\",\"ts_ms\":1}"
/* the same with schemas.enable=true (schema shortened: k2mc reads payload) */
#define ENVELOPED(ev) "{\"schema\":{\"type\":\"struct\",\"name\":\"dbz.public.customers.Envelope\"}," \
		      "\"payload\":" ev "}"
#define DBZ_KEY "{\"id\":42}"

struct cdc_case {
	const char *value;
	int reason;
	enum k2mc_map_op op;
	const char *written; /* SET: the value */
};

static void expect_events(const struct cdc_case *cases, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++) {
		struct k2mc_mapped o = map_kv(key, cases[i].value, cases[i].reason);

		if (cases[i].reason != K2MC_MAP_OK)
			continue;
		cr_expect_eq(o.op, cases[i].op, "%s: op %d, expected %d", cases[i].value
			     ? cases[i].value : "(tombstone)", o.op, cases[i].op);
		if (o.op != K2MC_OP_NONE)
			expect_key(&o, "customers:42");
		cr_expect_eq(o.truncate, o.op == K2MC_OP_NONE);
		if (cases[i].written != NULL)
			expect_value(&o, cases[i].written);
	}
}

static const struct cdc_case DEBEZIUM[] = {
	{ EVENT("r", "null", ROW42), K2MC_MAP_OK, K2MC_OP_SET, ROW42 },
	{ EVENT("c", "null", ROW42), K2MC_MAP_OK, K2MC_OP_SET, ROW42 },
	{ EVENT("u", ROW42, ROW42B), K2MC_MAP_OK, K2MC_OP_SET, ROW42B },
	{ EVENT("d", ROW42B, "null"), K2MC_MAP_OK, K2MC_OP_DELETE, NULL },
	{ NULL, K2MC_MAP_OK, K2MC_OP_DELETE, NULL }, /* the tombstone after a delete */
	{ EVENT("d", "null", "null"), K2MC_MAP_OK, K2MC_OP_DELETE, NULL }, /* no before image */
	{ EVENT("t", "null", "null"), K2MC_MAP_OK, K2MC_OP_NONE, NULL },
	{ EVENT("m", "null", "null"), K2MC_MAP_NOT_CDC, 0, NULL }, /* a logical message */
	{ EVENT("c", "null", "null"), K2MC_MAP_NOT_CDC, 0, NULL }, /* c without a row */
	{ EVENT("cc", "null", ROW42), K2MC_MAP_NOT_CDC, 0, NULL },
	{ "{\"after\":" ROW42 "}", K2MC_MAP_NOT_CDC, 0, NULL },       /* no op */
	{ "{\"op\":1,\"after\":" ROW42 "}", K2MC_MAP_NOT_CDC, 0, NULL }, /* op not a string */
	{ ROW42, K2MC_MAP_NOT_CDC, 0, NULL },                          /* a bare row */
	{ "[1,2]", K2MC_MAP_NOT_CDC, 0, NULL },
	{ "{\"op\":\"c\",", K2MC_MAP_NOT_JSON, 0, NULL },
};
#define NCASES (sizeof(DEBEZIUM) / sizeof(DEBEZIUM[0]))

Test(mapping, debezium_events_with_and_without_schemas)
{
	struct cdc_case env[NCASES];
	char buf[NCASES][512];

	cfg.cdc = K2MC_CDC_DEBEZIUM;
	cfg.key_format = K2MC_FMT_JSON;
	cfg.value_format = K2MC_FMT_JSON;
	compile("customers:{keyjson:/id}", NULL);
	expect_events(DEBEZIUM, NCASES, DBZ_KEY);
	/* schemas.enable=true: key and value in envelopes */
	for (size_t i = 0; i < NCASES; i++) {
		env[i] = DEBEZIUM[i];
		if (env[i].value != NULL && env[i].reason != K2MC_MAP_NOT_JSON) {
			snprintf(buf[i], sizeof(buf[i]), ENVELOPED("%s"), env[i].value);
			env[i].value = buf[i];
		}
	}
	expect_events(env, NCASES, KEY_ENV("42"));
	/* raw formats under --cdc read the same (JSON, envelopes unwrapped) */
	cfg.key_format = K2MC_FMT_RAW;
	cfg.value_format = K2MC_FMT_RAW;
	compile("customers:{keyjson:/id}", NULL);
	expect_events(env, NCASES, KEY_ENV("42"));
	expect_events(DEBEZIUM, NCASES, DBZ_KEY);
}

Test(mapping, debezium_templates_read_the_row)
{
	struct k2mc_mapped o;
	struct k2mc_record r;
	char why[256];

	cfg.cdc = K2MC_CDC_DEBEZIUM;
	/* {json:} points into after, or before for d; the key may come from
	 * the row too */
	compile("customers:{json:/id}", "{json:/name}|{json:/email}");
	o = map_kv(NULL, EVENT("u", ROW42, ROW42B), K2MC_MAP_OK);
	expect_key(&o, "customers:42");
	expect_value(&o, "Ada L|ada@example.com");
	o = map_kv(NULL, EVENT("d", ROW42, "null"), K2MC_MAP_OK);
	expect_key(&o, "customers:42");
	cr_expect_eq(o.op, K2MC_OP_DELETE);
	/* a delete without a before image names no row: no key from it */
	o = map_kv(NULL, EVENT("d", "null", "null"), K2MC_MAP_MISSING_FIELD);
	/* not a change event: said so */
	o = map_kv(NULL, ROW42, K2MC_MAP_NOT_CDC);
	r = rec_kv(NULL, ROW42);
	k2mc_mapping_explain(map, &r, &o, K2MC_MAP_NOT_CDC, why, sizeof(why));
	cr_expect_not_null(strstr(why, "not a Debezium change event"), "%s", why);
	/* a field missing from the row */
	compile("customers:{keyjson:/id}", "{json:/phone}");
	o = map_kv(DBZ_KEY, EVENT("c", "null", ROW42), K2MC_MAP_MISSING_FIELD);
	cr_expect_eq(o.key_len, strlen("customers:42"), "the key is known: skip deletes it");
	/* {value} is the row, compact */
	compile("customers:{keyjson:/id}", "{value}");
	o = map_kv(DBZ_KEY, EVENT("c", "null", "{ \"id\" : 42 }"), K2MC_MAP_OK);
	expect_value(&o, "{\"id\":42}");
	/* a truncate has no key, and is no invalid record */
	o = map_kv(NULL, EVENT("t", "null", "null"), K2MC_MAP_OK);
	cr_expect_eq(o.op, K2MC_OP_NONE);
	cr_expect(o.truncate);
}

Test(mapping, debezium_invalidate_deletes_every_change)
{
	static const struct cdc_case cases[] = {
		{ EVENT("r", "null", ROW42), K2MC_MAP_OK, K2MC_OP_DELETE, NULL },
		{ EVENT("c", "null", ROW42), K2MC_MAP_OK, K2MC_OP_DELETE, NULL },
		{ EVENT("u", ROW42, ROW42B), K2MC_MAP_OK, K2MC_OP_DELETE, NULL },
		{ EVENT("d", ROW42B, "null"), K2MC_MAP_OK, K2MC_OP_DELETE, NULL },
		{ NULL, K2MC_MAP_OK, K2MC_OP_DELETE, NULL },
		{ EVENT("t", "null", "null"), K2MC_MAP_OK, K2MC_OP_NONE, NULL },
		{ ROW42, K2MC_MAP_NOT_CDC, 0, NULL },
	};

	cfg.cdc = K2MC_CDC_DEBEZIUM_INVALIDATE;
	cfg.key_format = K2MC_FMT_JSON;
	cfg.value_format = K2MC_FMT_JSON;
	compile("customers:{keyjson:/id}", NULL);
	expect_events(cases, sizeof(cases) / sizeof(cases[0]), DBZ_KEY);
}

Test(mapping, debezium_prepared_keys_match)
{
	cfg.cdc = K2MC_CDC_DEBEZIUM;
	cfg.key_format = K2MC_FMT_JSON;
	cfg.value_format = K2MC_FMT_JSON;
	compile("customers:{keyjson:/id}", NULL);
	for (size_t i = 0; i < NCASES; i++)
		same_either_way(DBZ_KEY, DEBEZIUM[i].value);
	same_either_way("{\"id\":", EVENT("c", "null", ROW42));
	same_either_way(NULL, EVENT("t", "null", "null"));
	compile("customers:{json:/id}", "{json:/name}");
	for (size_t i = 0; i < NCASES; i++)
		same_either_way(DBZ_KEY, DEBEZIUM[i].value);
}

Test(mapping, refused_records_carry_their_reason)
{
	rd_kafka_message_t *m = message("k", "v");
	struct k2mc_record r = rec_kv("\x01\x02", "\x00\x00\x00\x00\x07xyz");
	struct k2mc_prepared *p;
	struct k2mc_mapped o;
	uint64_t route;
	char why[256];

	cfg.key_format = K2MC_FMT_AVRO;
	compile("c:{keyjson:/id}", NULL);
	p = k2mc_mapping_prepare_refused(map, m, K2MC_MAP_NOT_AVRO, 1, &route);
	cr_assert_not_null(p);
	cr_expect_eq(route, UINT64_MAX);
	cr_expect_eq(k2mc_mapping_map(map, &r, p, NOW_MS, arena, &o), K2MC_MAP_NOT_AVRO);
	cr_expect_eq(o.key_len, 0);
	cr_expect(o.in_key);
	r.key_len = 2;
	k2mc_mapping_explain(map, &r, &o, K2MC_MAP_NOT_AVRO, why, sizeof(why));
	cr_expect_not_null(strstr(why, "record key (2 bytes) is not Avro"), "%s", why);
	o.in_key = 0;
	r.value_len = 8;
	k2mc_mapping_explain(map, &r, &o, K2MC_MAP_AVRO_DECODE, why, sizeof(why));
	cr_expect_not_null(strstr(why, "value (8 bytes, schema id 7)"), "%s", why);
	/* the value's decode reasons still name a valid key: skip deletes it */
	cr_expect(k2mc_map_invalidates(K2MC_MAP_AVRO_DECODE));
	cr_expect(k2mc_map_invalidates(K2MC_MAP_NOT_CDC));
	k2mc_prepared_free(p);
	free(m);
}

/* --value-format json reads a value without an envelope exactly as raw does
 * (one pass finds the pointers and the envelope's members), and a value in
 * an envelope as its payload; also with more pointers than one pass can
 * hold with the envelope's (then two passes). */
Test(mapping, json_format_equals_raw_without_an_envelope)
{
	static const char *const docs[] = {
		"{\"id\":1,\"p\":{\"a\":[1, 2]}}", "{\"id\":\"x y\",\"p\":0}", "{\"p\":1}",
		"{\"id\":1,", "[1]", "{\"schema\":1,\"payload\":{\"id\":2}}",
		"{\"payload\":{\"id\":2},\"id\":3,\"p\":4}", "{\"id\":{},\"p\":[]}",
	};
	char many[1024] = "{json:/id}";
	struct k2mc_mapped a, b;

	for (int i = 0; i < 31; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "{json:/f%d}", i);
	for (int round = 0; round < 2; round++) {
		const char *vt = round ? "{json:/p}" : many;

		for (size_t d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
			struct k2mc_record r = rec_kv("k", docs[d]);
			int ra, rb;

			cfg.value_format = K2MC_FMT_RAW;
			compile("u:{json:/id}", vt);
			ra = map_rec(&r, &a);
			cfg.value_format = K2MC_FMT_JSON;
			compile("u:{json:/id}", vt);
			rb = map_rec(&r, &b);
			cr_expect_eq(ra, rb, "%s: %s vs %s", docs[d], k2mc_map_reason_name(ra),
				     k2mc_map_reason_name(rb));
			cr_expect(a.key_len == b.key_len && memcmp(a.key, b.key, a.key_len) == 0,
				  "%s", docs[d]);
			if (ra == K2MC_MAP_OK)
				cr_expect(a.value_len == b.value_len &&
						  memcmp(a.value, b.value, a.value_len) == 0,
					  "%s: '%.*s' vs '%.*s'", docs[d], (int)a.value_len,
					  (const char *)a.value, (int)b.value_len, (const char *)b.value);
		}
		/* an envelope: the payload */
		{
			struct k2mc_record r = rec_kv("k", "{\"schema\":{},\"payload\":{\"id\":5,\"p\":[ 6 ]}}");

			cr_expect_eq(map_rec(&r, &b), round ? K2MC_MAP_OK : K2MC_MAP_MISSING_FIELD);
			expect_key(&b, "u:5");
			if (round)
				expect_value(&b, "[6]");
		}
	}
}
