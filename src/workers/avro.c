/* Avro (Confluent wire format) -> JSON, with the Schema Registry client and
 * its cache. Not the options of k2mc and not the mapping (avro.h).
 *
 * libavro (Debian's 1.11.1) parses and checks a schema and resolves its
 * names. Its reader and avro_value_to_json are not used on records: the JSON
 * they give wraps every union ({"u": {"string": "x"}}), writes bytes as
 * \u00XX code points cut at the first NUL (bytes 00 ff come out as ""), and
 * knows no decimal; and the reader allocates whatever length a record
 * declares before it looks at the bytes (2 GiB for a 5-byte string value).
 * (All three seen with a test program against libavro23 1.11.1.) The decoder
 * here walks a compiled copy of the schema over the bytes, every read
 * bounds-checked, and writes JSON as it goes, nothing allocated per record
 * but the output buffer's growth. The schema's attributes that libavro drops
 * (logicalType, scale, connect.name, connect.parameters) are read from the
 * same JSON with jansson, which libavro itself links. */
#include "workers/avro.h"

#include <avro.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- results ----------------------------------------------------------------- */

static const char *const result_names[K2MC_AVRO_NRESULTS] = {
    [K2MC_AVRO_OK] = "ok",
    [K2MC_AVRO_NOT_AVRO] = "not_avro",
    [K2MC_AVRO_SCHEMA_UNAVAILABLE] = "schema_unavailable",
    [K2MC_AVRO_REGISTRY_DOWN] = "registry_unreachable",
    [K2MC_AVRO_DECODE] = "avro_decode",
};

const char *k2mc_avro_reason_name(enum k2mc_avro_result r)
{
	return (unsigned)r < K2MC_AVRO_NRESULTS ? result_names[r] : "unknown";
}

int k2mc_avro_transient(enum k2mc_avro_result r)
{
	return r == K2MC_AVRO_REGISTRY_DOWN;
}

/* ---- the compiled schema ----------------------------------------------------------- */

enum node_type {
	N_NULL,
	N_BOOL,
	N_INT,
	N_LONG,
	N_FLOAT,
	N_DOUBLE,
	N_BYTES,
	N_STRING,
	N_RECORD,
	N_ENUM,
	N_ARRAY,
	N_MAP,
	N_UNION,
	N_FIXED,
};

enum node_logical {
	L_NONE,
	L_DECIMAL,   /* bytes or fixed: unscaled two's complement, big-endian; scale */
	L_VSDECIMAL, /* Debezium's VariableScaleDecimal: record {scale: int, value: bytes} */
};

/* Immutable once compiled; shared by every thread that decodes with it. */
struct node {
	uint8_t type, logical;
	int32_t scale;          /* L_DECIMAL */
	uint8_t vs_scale_first; /* L_VSDECIMAL: field 0 is the scale */
	size_t n;               /* fields, branches, symbols; fixed: its size */
	struct node **kids;     /* record fields, union branches; [0]: array items, map values */
	char **text;            /* record: "\"name\":" per field; enum: "\"SYMBOL\"" */
	size_t *text_len;
};

struct k2mc_avro_schema {
	struct node *root;
	struct node **all; /* every node, for freeing (records may be recursive) */
	size_t nall, capall;
};

static void node_free(struct node *n)
{
	if (n->text)
		for (size_t i = 0; i < n->n; i++)
			free(n->text[i]);
	free(n->text);
	free(n->text_len);
	free(n->kids);
	free(n);
}

void k2mc_avro_schema_free(struct k2mc_avro_schema *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nall; i++)
		node_free(s->all[i]);
	free(s->all);
	free(s);
}

/* compile state: libavro's named schemas already compiled (a record may refer
 * to itself or to a type defined earlier) */
struct compile {
	struct k2mc_avro_schema *s;
	avro_schema_t *named;
	struct node **named_node;
	size_t nnamed, capnamed;
	char *err;
	size_t errlen;
};

static struct node *node_new(struct compile *c, enum node_type t)
{
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	if (c->s->nall == c->s->capall) {
		size_t cap = c->s->capall ? 2 * c->s->capall : 16;
		struct node **all = realloc(c->s->all, cap * sizeof(*all));
		if (!all) {
			free(n);
			return NULL;
		}
		c->s->all = all;
		c->s->capall = cap;
	}
	c->s->all[c->s->nall++] = n;
	n->type = (uint8_t)t;
	return n;
}

static int named_add(struct compile *c, avro_schema_t as, struct node *n)
{
	if (c->nnamed == c->capnamed) {
		size_t cap = c->capnamed ? 2 * c->capnamed : 8;
		avro_schema_t *a = realloc(c->named, cap * sizeof(*a));
		if (!a)
			return -ENOMEM;
		c->named = a;
		struct node **b = realloc(c->named_node, cap * sizeof(*b));
		if (!b)
			return -ENOMEM;
		c->named_node = b;
		c->capnamed = cap;
	}
	c->named[c->nnamed] = as;
	c->named_node[c->nnamed++] = n;
	return 0;
}

static struct node *named_find(const struct compile *c, avro_schema_t as)
{
	for (size_t i = 0; i < c->nnamed; i++)
		if (c->named[i] == as)
			return c->named_node[i];
	return NULL;
}

/* JSON string escaping for names and symbols (Avro names are [A-Za-z0-9_],
 * but a map key or a string value is anything: see put_string). */
static char *quoted(const char *s, int colon, size_t *len)
{
	size_t n = strlen(s);
	char *q = malloc(n + 4);
	if (!q)
		return NULL;
	q[0] = '"';
	memcpy(q + 1, s, n);
	q[n + 1] = '"';
	q[n + 2] = colon ? ':' : '\0';
	q[n + 3] = '\0';
	*len = n + 2 + (colon ? 1 : 0);
	return q;
}

static const char *jstr(json_t *obj, const char *key)
{
	json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The logical type a node's JSON attributes give it (attrs: the JSON object
 * where the type is declared, or NULL). */
static void logical_of(struct node *n, json_t *attrs)
{
	if (!json_is_object(attrs))
		return;
	const char *lt = jstr(attrs, "logicalType"), *cn = jstr(attrs, "connect.name");
	if ((n->type == N_BYTES || n->type == N_FIXED) && lt && !strcmp(lt, "decimal")) {
		json_t *sc = json_object_get(attrs, "scale");
		n->logical = L_DECIMAL;
		n->scale = json_is_integer(sc) ? (int32_t)json_integer_value(sc) : 0;
	} else if (n->type == N_BYTES && cn &&
	           !strcmp(cn, "org.apache.kafka.connect.data.Decimal")) {
		const char *sc = jstr(json_object_get(attrs, "connect.parameters"), "scale");
		n->logical = L_DECIMAL;
		n->scale = sc ? (int32_t)strtol(sc, NULL, 10) : 0;
	} else if (n->type == N_RECORD && cn &&
	           !strcmp(cn, "io.debezium.data.VariableScaleDecimal") && n->n == 2) {
		int first = n->kids[0]->type == N_INT && n->kids[1]->type == N_BYTES;
		int second = n->kids[1]->type == N_INT && n->kids[0]->type == N_BYTES;
		if (first || second) {
			n->logical = L_VSDECIMAL;
			n->vs_scale_first = (uint8_t)first;
		}
	}
	if (n->logical == L_DECIMAL && (n->scale < -1000 || n->scale > 1000))
		n->logical = L_NONE; /* not a decimal anyone writes: keep the bytes */
}

/* Compiles libavro's schema as (a node of) the schema, reading attributes
 * from j, the same schema's JSON (NULL where the shapes part: attributes are
 * then absent, nothing else changes). */
static struct node *compile(struct compile *c, avro_schema_t as, json_t *j, int depth)
{
	if (depth > K2MC_AVRO_MAX_DEPTH) {
		snprintf(c->err, c->errlen, "schema nested deeper than %d", K2MC_AVRO_MAX_DEPTH);
		return NULL;
	}
	if (is_avro_link(as))
		as = avro_schema_link_target(as);
	struct node *n = named_find(c, as);
	if (n)
		return n;
	/* {"type": {...}} or {"type": [...]}: the structure is inside, the
	 * attributes (if any) outside */
	json_t *attrs = json_is_object(j) ? j : NULL;
	json_t *shape = j;
	if (attrs) {
		json_t *t = json_object_get(attrs, "type");
		if (json_is_object(t) || json_is_array(t))
			shape = t;
	}
	static const enum node_type prim[] = {
	    [AVRO_STRING] = N_STRING, [AVRO_BYTES] = N_BYTES, [AVRO_INT32] = N_INT,
	    [AVRO_INT64] = N_LONG,    [AVRO_FLOAT] = N_FLOAT, [AVRO_DOUBLE] = N_DOUBLE,
	    [AVRO_BOOLEAN] = N_BOOL,  [AVRO_NULL] = N_NULL,
	};
	switch (avro_typeof(as)) {
	case AVRO_STRING:
	case AVRO_BYTES:
	case AVRO_INT32:
	case AVRO_INT64:
	case AVRO_FLOAT:
	case AVRO_DOUBLE:
	case AVRO_BOOLEAN:
	case AVRO_NULL:
		n = node_new(c, prim[avro_typeof(as)]);
		if (n)
			logical_of(n, attrs);
		return n;
	case AVRO_RECORD: {
		n = node_new(c, N_RECORD);
		size_t nf = avro_schema_record_size(as);
		if (!n || named_add(c, as, n) < 0)
			return NULL;
		n->kids = calloc(nf ? nf : 1, sizeof(*n->kids));
		n->text = calloc(nf ? nf : 1, sizeof(*n->text));
		n->text_len = calloc(nf ? nf : 1, sizeof(*n->text_len));
		if (!n->kids || !n->text || !n->text_len)
			return NULL;
		json_t *fields = json_is_object(shape) ? json_object_get(shape, "fields") : NULL;
		for (size_t i = 0; i < nf; i++) {
			json_t *fj = json_is_array(fields) ? json_array_get(fields, i) : NULL;
			json_t *ft = json_is_object(fj) ? json_object_get(fj, "type") : NULL;
			n->n = i;
			n->text[i] =
			    quoted(avro_schema_record_field_name(as, (int)i), 1, &n->text_len[i]);
			if (!n->text[i])
				return NULL;
			n->n = i + 1;
			/* a field's attributes sit in its type object, or (as
			 * Kafka Connect writes some) beside "type" in the field */
			n->kids[i] = compile(c, avro_schema_record_field_get_by_index(as, (int)i),
			                     json_is_string(ft) && json_is_object(fj) &&
			                             jstr(fj, "logicalType")
			                         ? fj
			                         : ft,
			                     depth + 1);
			if (!n->kids[i])
				return NULL;
		}
		logical_of(n, attrs);
		return n;
	}
	case AVRO_ENUM: {
		n = node_new(c, N_ENUM);
		int ns = avro_schema_enum_number_of_symbols(as);
		if (!n || ns < 0 || named_add(c, as, n) < 0)
			return NULL;
		n->text = calloc(ns ? (size_t)ns : 1, sizeof(*n->text));
		n->text_len = calloc(ns ? (size_t)ns : 1, sizeof(*n->text_len));
		if (!n->text || !n->text_len)
			return NULL;
		for (int i = 0; i < ns; i++) {
			n->text[i] = quoted(avro_schema_enum_get(as, i), 0, &n->text_len[i]);
			if (!n->text[i])
				return NULL;
			n->n = (size_t)i + 1;
		}
		return n;
	}
	case AVRO_FIXED:
		n = node_new(c, N_FIXED);
		if (!n || named_add(c, as, n) < 0)
			return NULL;
		n->n = (size_t)avro_schema_fixed_size(as);
		logical_of(n, attrs);
		return n;
	case AVRO_ARRAY:
	case AVRO_MAP: {
		int arr = avro_typeof(as) == AVRO_ARRAY;
		n = node_new(c, arr ? N_ARRAY : N_MAP);
		if (!n || !(n->kids = calloc(1, sizeof(*n->kids))))
			return NULL;
		json_t *kj =
		    json_is_object(shape) ? json_object_get(shape, arr ? "items" : "values") : NULL;
		n->kids[0] =
		    compile(c, arr ? avro_schema_array_items(as) : avro_schema_map_values(as), kj,
		            depth + 1);
		n->n = 1;
		return n->kids[0] ? n : NULL;
	}
	case AVRO_UNION: {
		n = node_new(c, N_UNION);
		size_t nb = avro_schema_union_size(as);
		if (!n || !(n->kids = calloc(nb ? nb : 1, sizeof(*n->kids))))
			return NULL;
		for (size_t i = 0; i < nb; i++) {
			json_t *bj = json_is_array(shape) ? json_array_get(shape, i) : NULL;
			n->kids[i] =
			    compile(c, avro_schema_union_branch(as, (int)i), bj, depth + 1);
			if (!n->kids[i])
				return NULL;
			n->n = i + 1;
		}
		return n;
	}
	default:
		snprintf(c->err, c->errlen, "unsupported Avro type %d", (int)avro_typeof(as));
		return NULL;
	}
}

/* Parses schema text (libavro checks it and resolves names) and compiles
 * field `pick` of the resulting record when pick is set (the wrapper that
 * carries references), else the whole. */
static struct k2mc_avro_schema *schema_build(const char *text, size_t len, json_t *j,
                                             const char *pick, char *err, size_t errlen)
{
	avro_schema_t as = NULL;
	struct compile c = {.err = err, .errlen = errlen};
	if (avro_schema_from_json_length(text, len, &as) != 0) {
		snprintf(err, errlen, "schema does not parse: %s", avro_strerror());
		return NULL;
	}
	c.s = calloc(1, sizeof(*c.s));
	if (!c.s) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	err[0] = '\0';
	avro_schema_t root = as;
	json_t *rj = j;
	if (pick) {
		root = avro_schema_record_field_get(as, pick);
		json_t *fields = json_object_get(j, "fields");
		rj = json_object_get(json_array_get(fields, json_array_size(fields) - 1), "type");
	}
	c.s->root = root ? compile(&c, root, rj, 0) : NULL;
	if (!c.s->root) {
		if (!err[0])
			snprintf(err, errlen, "out of memory");
		k2mc_avro_schema_free(c.s);
		c.s = NULL;
	}
out:
	free(c.named);
	free(c.named_node);
	avro_schema_decref(as);
	return c.s;
}

struct k2mc_avro_schema *k2mc_avro_schema_parse(const char *text, size_t len, char *err,
                                                size_t errlen)
{
	json_error_t je;
	json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &je);
	if (!j) {
		snprintf(err, errlen, "schema is not JSON: %s", je.text);
		return NULL;
	}
	struct k2mc_avro_schema *s = schema_build(text, len, j, NULL, err, errlen);
	json_decref(j);
	return s;
}

/* ---- the decoder ------------------------------------------------------------------- */

struct k2mc_avro_ctx;

struct dec {
	const uint8_t *p, *end, *start;
	char *out;
	size_t len, cap, max;
	struct k2mc_avro_ctx *ctx;
	char *err;
	size_t errlen;
};

static int dfail(struct dec *d, const char *what)
{
	if (!d->err[0])
		snprintf(d->err, d->errlen, "%s at byte %zu", what, (size_t)(d->p - d->start) + 5);
	return -1;
}

static int grow(struct dec *d, size_t more)
{
	if (d->len + more <= d->cap)
		return 0;
	if (d->len + more > d->max)
		return dfail(d, "decoded JSON over max.decoded.bytes");
	size_t cap = d->cap ? d->cap : 256;
	while (cap < d->len + more)
		cap *= 2;
	if (cap > d->max)
		cap = d->max;
	char *o = realloc(d->out, cap);
	if (!o)
		return dfail(d, "out of memory");
	d->out = o;
	d->cap = cap;
	return 0;
}

static int put(struct dec *d, const void *s, size_t n)
{
	if (grow(d, n) < 0)
		return -1;
	memcpy(d->out + d->len, s, n);
	d->len += n;
	return 0;
}

static int putc1(struct dec *d, char ch)
{
	return put(d, &ch, 1);
}

/* Avro long: zigzag varint, at most 10 bytes */
static int read_long(struct dec *d, int64_t *v)
{
	uint64_t u = 0;
	for (int shift = 0; shift < 70; shift += 7) {
		if (d->p >= d->end)
			return dfail(d, "truncated");
		uint8_t b = *d->p++;
		u |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
			return 0;
		}
	}
	return dfail(d, "varint longer than 10 bytes");
}

/* a length (bytes, string): non-negative and within what is left */
static int read_len(struct dec *d, size_t *n)
{
	int64_t v;
	if (read_long(d, &v) < 0)
		return -1;
	if (v < 0)
		return dfail(d, "negative length");
	if ((uint64_t)v > (uint64_t)(d->end - d->p))
		return dfail(d, "truncated");
	*n = (size_t)v;
	return 0;
}

/* One UTF-8 sequence's length at s (n bytes left), 0 if invalid (RFC 3629:
 * no overlongs, no surrogates, nothing over U+10FFFF) */
static size_t utf8_len(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	size_t len;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* s as a JSON string: RFC 8259 escapes for '"', '\\' and controls */
static int put_string(struct dec *d, const uint8_t *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	if (grow(d, n + 2) < 0)
		return -1;
	d->out[d->len++] = '"';
	size_t i = 0;
	while (i < n) {
		size_t run = i;
		while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' &&
		       s[run] != '\\')
			run++;
		if (run > i && put(d, s + i, run - i) < 0)
			return -1;
		i = run;
		if (i == n)
			break;
		if (s[i] >= 0x80) {
			size_t l = utf8_len(s + i, n - i);
			if (!l)
				return dfail(d, "string is not UTF-8");
			if (put(d, s + i, l) < 0)
				return -1;
			i += l;
			continue;
		}
		char e[6] = {'\\', 0};
		size_t el = 2;
		switch (s[i]) {
		case '"':
			e[1] = '"';
			break;
		case '\\':
			e[1] = '\\';
			break;
		case '\n':
			e[1] = 'n';
			break;
		case '\r':
			e[1] = 'r';
			break;
		case '\t':
			e[1] = 't';
			break;
		case '\b':
			e[1] = 'b';
			break;
		case '\f':
			e[1] = 'f';
			break;
		default:
			memcpy(e, "\\u00", 4);
			e[4] = hex[s[i] >> 4];
			e[5] = hex[s[i] & 15];
			el = 6;
		}
		if (put(d, e, el) < 0)
			return -1;
		i++;
	}
	return putc1(d, '"');
}

static int put_base64(struct dec *d, const uint8_t *s, size_t n)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	if (grow(d, (n + 2) / 3 * 4 + 2) < 0)
		return -1;
	char *o = d->out + d->len;
	*o++ = '"';
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		*o++ = b64[v >> 18];
		*o++ = b64[(v >> 12) & 63];
		*o++ = b64[(v >> 6) & 63];
		*o++ = b64[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
		*o++ = b64[v >> 18];
		*o++ = b64[(v >> 12) & 63];
		*o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o++ = '"';
	d->len = (size_t)(o - d->out);
	return 0;
}

/* decimal text of v into buf (at least 21 bytes), its length: snprintf
 * costs several times more, and a row is mostly integers (microsecond
 * timestamps of 16 digits: two digits per division) */
static size_t fmt_i64(char *buf, int64_t v)
{
	static const char pairs[] = "00010203040506070809101112131415161718192021222324"
	                            "25262728293031323334353637383940414243444546474849"
	                            "50515253545556575859606162636465666768697071727374"
	                            "75767778798081828384858687888990919293949596979899";
	char tmp[20];
	size_t n = sizeof(tmp), len = 0;
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	while (u >= 100) {
		unsigned r = (unsigned)(u % 100);
		u /= 100;
		tmp[--n] = pairs[2 * r + 1];
		tmp[--n] = pairs[2 * r];
	}
	if (u >= 10) {
		tmp[--n] = pairs[2 * u + 1];
		tmp[--n] = pairs[2 * u];
	} else {
		tmp[--n] = (char)('0' + u);
	}
	if (v < 0)
		buf[len++] = '-';
	memcpy(buf + len, tmp + n, sizeof(tmp) - n);
	return len + sizeof(tmp) - n;
}

/* Decimal text of an unscaled two's complement big-endian integer: an exact
 * JSON number. Longer than 1024 bytes (some 2,466 digits) is refused. */
static int put_decimal(struct dec *d, const uint8_t *s, size_t n, int32_t scale)
{
	if (n > 1024)
		return dfail(d, "decimal longer than 1024 bytes");
	uint32_t limb[280]; /* base 1e9, most significant first */
	size_t nl = 0;
	int neg = n && (s[0] & 0x80);
	/* magnitude, limb by limb: for each byte, limb = limb * 256 + byte */
	for (size_t i = 0; i < n; i++) {
		uint32_t carry = neg ? (uint8_t)~s[i] : s[i];
		for (size_t k = nl; k-- > 0;) {
			uint64_t v = (uint64_t)limb[k] * 256 + carry;
			limb[k] = (uint32_t)(v % 1000000000u);
			carry = (uint32_t)(v / 1000000000u);
		}
		while (carry) {
			memmove(limb + 1, limb, nl * sizeof(*limb));
			limb[0] = carry % 1000000000u;
			carry /= 1000000000u;
			nl++;
		}
	}
	if (neg) { /* -(~x + 1): add the one */
		uint32_t carry = 1;
		for (size_t k = nl; k-- > 0 && carry;) {
			limb[k] += 1;
			carry = limb[k] == 1000000000u;
			if (carry)
				limb[k] = 0;
		}
		if (carry) {
			memmove(limb + 1, limb, nl * sizeof(*limb));
			limb[0] = 1;
			nl++;
		}
	}
	char digits[280 * 9 + 1];
	size_t nd = 0;
	for (size_t k = 0; k < nl; k++) {
		if (k == 0) {
			nd += fmt_i64(digits + nd, limb[k]);
			continue;
		}
		for (int i = 8; i >= 0; i--, limb[k] /= 10)
			digits[nd + (size_t)i] = (char)('0' + limb[k] % 10);
		nd += 9;
	}
	if (!nd)
		digits[nd++] = '0';
	int zero = nd == 1 && digits[0] == '0';
	if (neg && !zero && putc1(d, '-') < 0)
		return -1;
	if (scale <= 0) {
		if (put(d, digits, nd) < 0)
			return -1;
		if (!zero)
			for (int32_t i = 0; i < -scale; i++)
				if (putc1(d, '0') < 0)
					return -1;
		return 0;
	}
	size_t sc = (size_t)scale;
	if (nd <= sc) { /* 0.000ddd */
		if (put(d, "0.", 2) < 0)
			return -1;
		for (size_t i = nd; i < sc; i++)
			if (putc1(d, '0') < 0)
				return -1;
		return put(d, digits, nd);
	}
	if (put(d, digits, nd - sc) < 0 || putc1(d, '.') < 0)
		return -1;
	return put(d, digits + nd - sc, sc);
}

static int put_double(struct dec *d, double v, int single)
{
	char buf[40];
	if (isnan(v))
		return put(d, "\"NaN\"", 5);
	if (isinf(v))
		return v > 0 ? put(d, "\"Infinity\"", 10) : put(d, "\"-Infinity\"", 11);
	/* the shortest of %.{6..17}g that reads back the same value */
	int n = 0;
	for (int prec = single ? 6 : 15; prec <= 17; prec++) {
		n = snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (single ? (float)strtod(buf, NULL) == (float)v : strtod(buf, NULL) == v)
			break;
	}
	return put(d, buf, (size_t)n);
}

static int decode(struct dec *d, const struct node *n, int depth);

static int decode_blocks(struct dec *d, const struct node *n, int depth)
{
	int map = n->type == N_MAP, first = 1;
	if (putc1(d, map ? '{' : '[') < 0)
		return -1;
	for (;;) {
		int64_t count;
		if (read_long(d, &count) < 0)
			return -1;
		if (count == 0)
			break;
		if (count < 0) { /* a block with its size in bytes: not needed */
			int64_t bytes;
			if (count == INT64_MIN)
				return dfail(d, "bad block count");
			count = -count;
			if (read_long(d, &bytes) < 0)
				return -1;
		}
		/* every item writes at least one byte of output, so max.decoded.bytes
		 * bounds a block of items that read none (nulls, empty records) */
		for (int64_t i = 0; i < count; i++) {
			if (!first && putc1(d, ',') < 0)
				return -1;
			first = 0;
			if (map) {
				size_t kl;
				if (read_len(d, &kl) < 0 || put_string(d, d->p, kl) < 0 ||
				    putc1(d, ':') < 0)
					return -1;
				d->p += kl;
			}
			if (decode(d, n->kids[0], depth + 1) < 0)
				return -1;
		}
	}
	return putc1(d, map ? '}' : ']');
}

static int decode(struct dec *d, const struct node *n, int depth)
{
	int64_t v;
	size_t len = 0;
	char buf[32];
	if (depth > K2MC_AVRO_MAX_DEPTH)
		return dfail(d, "nested deeper than 128");
	switch ((enum node_type)n->type) {
	case N_NULL:
		return put(d, "null", 4);
	case N_BOOL:
		if (d->p >= d->end)
			return dfail(d, "truncated");
		if (*d->p > 1)
			return dfail(d, "boolean not 0 or 1");
		return *d->p++ ? put(d, "true", 4) : put(d, "false", 5);
	case N_INT:
	case N_LONG:
		if (read_long(d, &v) < 0)
			return -1;
		if (n->type == N_INT && (v < INT32_MIN || v > INT32_MAX))
			return dfail(d, "int out of range");
		return put(d, buf, fmt_i64(buf, v));
	case N_FLOAT: {
		float f;
		if (d->end - d->p < 4)
			return dfail(d, "truncated");
		memcpy(&f, d->p, 4); /* little-endian on the wire, as on this host */
		d->p += 4;
		return put_double(d, f, 1);
	}
	case N_DOUBLE: {
		double x;
		if (d->end - d->p < 8)
			return dfail(d, "truncated");
		memcpy(&x, d->p, 8);
		d->p += 8;
		return put_double(d, x, 0);
	}
	case N_BYTES:
	case N_STRING:
	case N_FIXED: {
		if (n->type == N_FIXED) {
			if ((size_t)(d->end - d->p) < n->n)
				return dfail(d, "truncated");
			len = n->n;
		} else if (read_len(d, &len) < 0) {
			return -1;
		}
		const uint8_t *s = d->p;
		d->p += len;
		if (n->type == N_STRING)
			return put_string(d, s, len);
		if (n->logical == L_DECIMAL)
			return put_decimal(d, s, len, n->scale);
		return put_base64(d, s, len);
	}
	case N_ENUM:
		if (read_long(d, &v) < 0)
			return -1;
		if (v < 0 || (uint64_t)v >= n->n)
			return dfail(d, "enum index out of range");
		return put(d, n->text[v], n->text_len[v]);
	case N_UNION:
		if (read_long(d, &v) < 0)
			return -1;
		if (v < 0 || (uint64_t)v >= n->n)
			return dfail(d, "union index out of range");
		return decode(d, n->kids[v], depth + 1);
	case N_ARRAY:
	case N_MAP:
		return decode_blocks(d, n, depth);
	case N_RECORD:
		if (n->logical == L_VSDECIMAL) {
			int64_t scale = 0;
			const uint8_t *s = NULL;
			for (int f = 0; f < 2; f++) {
				if (f == (n->vs_scale_first ? 0 : 1)) {
					if (read_long(d, &scale) < 0)
						return -1;
					if (scale < -1000 || scale > 1000)
						return dfail(d, "decimal scale out of range");
				} else {
					if (read_len(d, &len) < 0)
						return -1;
					s = d->p;
					d->p += len;
				}
			}
			return put_decimal(d, s, len, (int32_t)scale);
		}
		if (putc1(d, '{') < 0)
			return -1;
		for (size_t i = 0; i < n->n; i++) {
			if ((i && putc1(d, ',') < 0) || put(d, n->text[i], n->text_len[i]) < 0 ||
			    decode(d, n->kids[i], depth + 1) < 0)
				return -1;
		}
		return putc1(d, '}');
	}
	return dfail(d, "bad schema node");
}

/* ---- the registry client and the shared cache ---------------------------------- */

/* One schema id's answer. Immutable once published in the table; refs counts
 * the table's reference (while it holds the entry) and one per ctx slot. */
struct entry {
	uint32_t id;
	enum k2mc_avro_result status; /* OK: schema is set */
	int64_t expires_ms;           /* failures: CLOCK_MONOTONIC ms when it is asked again */
	struct k2mc_avro_schema *schema;
	char why[200]; /* failures: the explanation */
	/* incremented under the table mutex (the entry is in the table), decremented
	 * by any thread: acq_rel, so the last one frees what all of them read */
	_Atomic long refs;
	struct entry *next;          /* hash chain, under the table mutex */
	struct entry *older, *newer; /* insertion order, for eviction; under the mutex */
};

#define NBUCKETS 256

/* Settings: written by k2mc_avro_set before any decode, read-only after. */
struct settings {
	char *user_info, *ca, *cert, *key, *key_password;
	long verify;
	long timeout_ms;
	long capacity;
	long negative_ms;
	long max_decoded;
};

struct k2mc_avro {
	char *url; /* without a trailing '/' */
	struct settings set;
	/* the table: buckets, the eviction list and count, under table_mu */
	pthread_mutex_t table_mu;
	struct entry *bucket[NBUCKETS];
	struct entry *oldest, *newest;
	long count;
	/* one registry request at a time: curl (its connection kept) is used under
	 * fetch_mu only; a thread holding it may take table_mu, never the reverse */
	pthread_mutex_t fetch_mu;
	CURL *curl;
	/* written under fetch_mu, read relaxed by k2mc_avro_stats */
	_Atomic uint64_t fetches, fetch_failures, schemas;
};

/* ---- options: one row per registry client option --------------------------------- */

enum opt_kind { O_STR, O_LONG, O_BOOL };
struct opt {
	const char *name;
	enum opt_kind kind;
	size_t off;
	long min, max;
};
#define SOFF(f) offsetof(struct settings, f)
static const struct opt opts[] = {
    {"basic.auth.user.info", O_STR, SOFF(user_info), 0, 0},
    {"ssl.ca.location", O_STR, SOFF(ca), 0, 0},
    {"ssl.certificate.location", O_STR, SOFF(cert), 0, 0},
    {"ssl.key.location", O_STR, SOFF(key), 0, 0},
    {"ssl.key.password", O_STR, SOFF(key_password), 0, 0},
    {"enable.ssl.certificate.verification", O_BOOL, SOFF(verify), 0, 1},
    {"request.timeout.ms", O_LONG, SOFF(timeout_ms), 1, 3600000},
    {"cache.capacity", O_LONG, SOFF(capacity), 1, 1000000},
    {"negative.cache.ms", O_LONG, SOFF(negative_ms), 0, 3600000},
    {"max.decoded.bytes", O_LONG, SOFF(max_decoded), 1024, 1L << 30},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const char *opt_names[NOPTS + 1];
static pthread_once_t opt_names_once = PTHREAD_ONCE_INIT;

static void opt_names_fill(void)
{
	for (size_t i = 0; i < NOPTS; i++)
		opt_names[i] = opts[i].name;
}

const char *const *k2mc_avro_options(void)
{
	pthread_once(&opt_names_once, opt_names_fill);
	return opt_names;
}

int k2mc_avro_set(struct k2mc_avro *a, const char *name, const char *value, char *err,
                  size_t errlen)
{
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		if (strcmp(o->name, name))
			continue;
		void *f = (char *)&a->set + o->off;
		if (o->kind == O_STR) {
			char *dup = strdup(value);
			if (!dup) {
				snprintf(err, errlen, "%s: out of memory", name);
				return -ENOMEM;
			}
			free(*(char **)f);
			*(char **)f = dup;
			return 0;
		}
		long v;
		if (o->kind == O_BOOL) {
			if (!strcmp(value, "true"))
				v = 1;
			else if (!strcmp(value, "false"))
				v = 0;
			else {
				snprintf(err, errlen, "%s: '%s' is not true or false", name, value);
				return -EINVAL;
			}
		} else {
			char *end;
			errno = 0;
			v = strtol(value, &end, 10);
			if (errno || end == value || *end || v < o->min || v > o->max) {
				snprintf(err, errlen, "%s: '%s' is not an integer in %ld..%ld",
				         name, value, o->min, o->max);
				return -EINVAL;
			}
		}
		*(long *)f = v;
		return 0;
	}
	snprintf(err, errlen, "unknown schema registry option '%s'", name);
	return -EINVAL;
}

struct k2mc_avro *k2mc_avro_new(const char *url, char *err, size_t errlen)
{
	if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
		snprintf(err, errlen, "schema registry '%s': expected http:// or https://", url);
		return NULL;
	}
	struct k2mc_avro *a = calloc(1, sizeof(*a));
	if (!a || !(a->url = strdup(url)) || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "schema registry: out of memory");
		if (a)
			free(a->url);
		free(a);
		return NULL;
	}
	size_t n = strlen(a->url);
	while (n > 0 && a->url[n - 1] == '/')
		a->url[--n] = '\0';
	a->set.verify = 1;
	a->set.timeout_ms = 10000;
	a->set.capacity = 1000;
	a->set.negative_ms = 5000;
	a->set.max_decoded = 16L << 20;
	pthread_mutex_init(&a->table_mu, NULL);
	pthread_mutex_init(&a->fetch_mu, NULL);
	return a;
}

static void entry_put(struct entry *e)
{
	if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) {
		k2mc_avro_schema_free(e->schema);
		free(e);
	}
}

void k2mc_avro_free(struct k2mc_avro *a)
{
	if (!a)
		return;
	for (struct entry *e = a->oldest, *next; e; e = next) {
		next = e->newer;
		entry_put(e);
	}
	if (a->curl)
		curl_easy_cleanup(a->curl);
	curl_global_cleanup(); /* pairs with k2mc_avro_new's curl_global_init */
	pthread_mutex_destroy(&a->table_mu);
	pthread_mutex_destroy(&a->fetch_mu);
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].kind == O_STR)
			free(*(char **)((char *)&a->set + opts[i].off));
	free(a->url);
	free(a);
}

void k2mc_avro_stats(const struct k2mc_avro *a, struct k2mc_avro_stats *out)
{
	out->fetches = atomic_load_explicit(&a->fetches, memory_order_relaxed);
	out->fetch_failures = atomic_load_explicit(&a->fetch_failures, memory_order_relaxed);
	out->schemas = atomic_load_explicit(&a->schemas, memory_order_relaxed);
}

/* snprintf for explanations, which are cut to their buffer on purpose */
__attribute__((format(printf, 3, 4))) static void say(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct body {
	char *p;
	size_t len;
	int over;
};
#define MAX_ANSWER (8u << 20)

static size_t on_body(char *p, size_t size, size_t nmemb, void *u)
{
	struct body *b = u;
	size_t n = size * nmemb;
	if (b->len + n > MAX_ANSWER) {
		b->over = 1;
		return 0;
	}
	char *q = realloc(b->p, b->len + n + 1);
	if (!q)
		return 0;
	memcpy(q + b->len, p, n);
	b->p = q;
	b->len += n;
	b->p[b->len] = '\0';
	return n;
}

/* GET {url}{path} as JSON, under fetch_mu. */
static enum k2mc_avro_result get_json(struct k2mc_avro *a, const char *path, json_t **out,
                                      char *why, size_t whylen)
{
	char url[2048];
	struct body b = {0};
	enum k2mc_avro_result r = K2MC_AVRO_REGISTRY_DOWN;
	long code = 0;
	*out = NULL;
	if ((size_t)snprintf(url, sizeof(url), "%s%s", a->url, path) >= sizeof(url)) {
		say(why, whylen, "registry url too long");
		return K2MC_AVRO_SCHEMA_UNAVAILABLE;
	}
	if (!a->curl && !(a->curl = curl_easy_init())) {
		say(why, whylen, "curl_easy_init failed");
		return r;
	}
	CURL *h = a->curl;
	const struct settings *s = &a->set;
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->timeout_ms);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	char cerr[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	struct curl_slist *hdr =
	    curl_slist_append(NULL, "Accept: application/vnd.schemaregistry.v1+json, "
	                            "application/json");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	if (s->user_info) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERPWD, s->user_info);
	}
	if (s->ca)
		curl_easy_setopt(h, CURLOPT_CAINFO, s->ca);
	if (s->cert)
		curl_easy_setopt(h, CURLOPT_SSLCERT, s->cert);
	if (s->key)
		curl_easy_setopt(h, CURLOPT_SSLKEY, s->key);
	if (s->key_password)
		curl_easy_setopt(h, CURLOPT_KEYPASSWD, s->key_password);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, s->verify);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, s->verify ? 2L : 0L);
	atomic_fetch_add_explicit(&a->fetches, 1, memory_order_relaxed);
	CURLcode cc = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL); /* cerr's life ends here */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdr);
	if (cc != CURLE_OK) {
		say(why, whylen, "GET %s: %s", url,
		    b.over    ? "answer over 8 MiB"
		    : cerr[0] ? cerr
		              : curl_easy_strerror(cc));
		if (b.over)
			r = K2MC_AVRO_SCHEMA_UNAVAILABLE;
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		say(why, whylen, "GET %s: registry answered %ld", url, code);
		/* 5xx, 408 and 429 may pass; 401, 403 and 404 are the answer */
		r = code >= 500 || code == 408 || code == 429 ? K2MC_AVRO_REGISTRY_DOWN
		                                              : K2MC_AVRO_SCHEMA_UNAVAILABLE;
		goto out;
	}
	json_error_t je;
	*out = json_loadb(b.p ? b.p : "", b.len, 0, &je);
	if (!json_is_object(*out)) {
		say(why, whylen, "GET %s: answer is not a JSON object (%s)", url, je.text);
		json_decref(*out);
		*out = NULL;
		r = K2MC_AVRO_SCHEMA_UNAVAILABLE;
		goto out;
	}
	r = K2MC_AVRO_OK;
out:
	if (r != K2MC_AVRO_OK)
		atomic_fetch_add_explicit(&a->fetch_failures, 1, memory_order_relaxed);
	free(b.p);
	return r;
}

/* The references, resolved depth first into refs (a JSON array of schema
 * JSON, dependencies before their users, each name once). */
struct refs {
	json_t *schemas; /* array */
	json_t *names;   /* object: name -> true */
};

static enum k2mc_avro_result check_answer(json_t *ans, const char *what, char *why, size_t whylen)
{
	const char *st = jstr(ans, "schemaType");
	if (st && strcmp(st, "AVRO")) {
		say(why, whylen, "%s is a %s schema, not Avro", what, st);
		return K2MC_AVRO_SCHEMA_UNAVAILABLE;
	}
	if (!jstr(ans, "schema")) {
		say(why, whylen, "%s: the registry's answer has no \"schema\" string", what);
		return K2MC_AVRO_SCHEMA_UNAVAILABLE;
	}
	return K2MC_AVRO_OK;
}

static enum k2mc_avro_result resolve(struct k2mc_avro *a, json_t *references, struct refs *rs,
                                     int depth, char *why, size_t whylen)
{
	size_t i;
	json_t *ref;
	if (!references)
		return K2MC_AVRO_OK;
	if (!json_is_array(references)) {
		say(why, whylen, "\"references\" is not an array");
		return K2MC_AVRO_SCHEMA_UNAVAILABLE;
	}
	json_array_foreach(references, i, ref)
	{
		const char *name = jstr(ref, "name"), *subject = jstr(ref, "subject");
		json_t *ver = json_object_get(ref, "version");
		if (!name || !subject || !json_is_integer(ver)) {
			say(why, whylen, "a reference without name, subject or version");
			return K2MC_AVRO_SCHEMA_UNAVAILABLE;
		}
		if (json_object_get(rs->names, name))
			continue;
		if (depth >= 8 || json_array_size(rs->schemas) >= K2MC_AVRO_MAX_REFERENCES) {
			say(why, whylen, "references nested deeper than 8 or more than %d",
			    K2MC_AVRO_MAX_REFERENCES);
			return K2MC_AVRO_SCHEMA_UNAVAILABLE;
		}
		char *esc = curl_easy_escape(a->curl, subject, 0);
		char path[1024];
		if (!esc) {
			say(why, whylen, "out of memory");
			return K2MC_AVRO_SCHEMA_UNAVAILABLE;
		}
		snprintf(path, sizeof(path), "/subjects/%s/versions/%" JSON_INTEGER_FORMAT, esc,
		         json_integer_value(ver));
		curl_free(esc);
		json_t *ans;
		char what[300];
		snprintf(what, sizeof(what), "reference %s (subject %s)", name, subject);
		enum k2mc_avro_result r = get_json(a, path, &ans, why, whylen);
		if (r == K2MC_AVRO_OK)
			r = check_answer(ans, what, why, whylen);
		if (r == K2MC_AVRO_OK)
			r = resolve(a, json_object_get(ans, "references"), rs, depth + 1, why,
			            whylen);
		if (r == K2MC_AVRO_OK) {
			json_error_t je;
			json_t *sj = json_loads(jstr(ans, "schema"), JSON_DECODE_ANY, &je);
			if (!sj) {
				say(why, whylen, "%s: schema is not JSON: %s", what, je.text);
				r = K2MC_AVRO_SCHEMA_UNAVAILABLE;
			} else {
				json_array_append_new(rs->schemas, sj);
				json_object_set_new(rs->names, name, json_true());
			}
		}
		json_decref(ans);
		if (r != K2MC_AVRO_OK)
			return r;
	}
	return K2MC_AVRO_OK;
}

/* Fetches and compiles schema id into e (under fetch_mu). With references,
 * the referenced schemas become fields of a wrapper record ahead of the
 * schema itself, so that libavro knows their names when it meets them (it
 * has no other way to be told of names defined elsewhere); the schema is
 * then the wrapper's last field. */
static void fetch_schema(struct k2mc_avro *a, struct entry *e)
{
	char path[64];
	json_t *ans = NULL, *main_json = NULL, *wrapper = NULL;
	struct refs rs = {json_array(), json_object()};
	char *text = NULL;
	snprintf(path, sizeof(path), "/schemas/ids/%" PRIu32, e->id);
	e->status = get_json(a, path, &ans, e->why, sizeof(e->why));
	if (e->status == K2MC_AVRO_OK)
		e->status = check_answer(ans, "the schema", e->why, sizeof(e->why));
	if (e->status != K2MC_AVRO_OK)
		goto out;
	e->status = K2MC_AVRO_SCHEMA_UNAVAILABLE;
	if (!rs.schemas || !rs.names) {
		say(e->why, sizeof(e->why), "out of memory");
		goto out;
	}
	json_error_t je;
	main_json = json_loads(jstr(ans, "schema"), JSON_DECODE_ANY, &je);
	if (!main_json) {
		say(e->why, sizeof(e->why), "schema is not JSON: %s", je.text);
		goto out;
	}
	e->status = resolve(a, json_object_get(ans, "references"), &rs, 0, e->why, sizeof(e->why));
	if (e->status != K2MC_AVRO_OK)
		goto out;
	e->status = K2MC_AVRO_SCHEMA_UNAVAILABLE;
	json_t *schema_json = main_json;
	const char *pick = NULL;
	if (json_array_size(rs.schemas)) {
		json_t *fields = json_array();
		size_t i;
		json_t *sj;
		json_array_foreach(rs.schemas, i, sj)
		{
			char fname[32];
			snprintf(fname, sizeof(fname), "k2mc_ref%zu", i);
			json_array_append_new(fields,
			                      json_pack("{s:s,s:O}", "name", fname, "type", sj));
		}
		json_array_append_new(
		    fields, json_pack("{s:s,s:O}", "name", "k2mc_schema", "type", main_json));
		wrapper = json_pack("{s:s,s:s,s:o}", "type", "record", "name",
		                    "k2mc_references_wrapper", "fields", fields);
		schema_json = wrapper;
		pick = "k2mc_schema";
	}
	text = schema_json ? json_dumps(schema_json, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
	if (!text) {
		say(e->why, sizeof(e->why), "out of memory");
		goto out;
	}
	char err[160];
	e->schema = schema_build(text, strlen(text), schema_json, pick, err, sizeof(err));
	if (!e->schema) {
		say(e->why, sizeof(e->why), "schema %" PRIu32 ": %s", e->id, err);
		goto out;
	}
	e->status = K2MC_AVRO_OK;
	atomic_fetch_add_explicit(&a->schemas, 1, memory_order_relaxed);
out:
	if (e->status != K2MC_AVRO_OK && strncmp(e->why, "schema ", 7)) {
		char w[sizeof(e->why)];
		say(w, sizeof(w), "schema %" PRIu32 ": %s", e->id, e->why);
		memcpy(e->why, w, sizeof(w));
	}
	free(text);
	json_decref(wrapper);
	json_decref(main_json);
	json_decref(ans);
	json_decref(rs.schemas);
	json_decref(rs.names);
}

/* Under table_mu: the live entry for id, or NULL (an expired failure is
 * taken out of the table). */
static struct entry *table_find(struct k2mc_avro *a, uint32_t id, int64_t now)
{
	struct entry **pp = &a->bucket[id % NBUCKETS];
	for (struct entry *e = *pp; e; pp = &e->next, e = e->next) {
		if (e->id != id)
			continue;
		if (e->status == K2MC_AVRO_OK || now < e->expires_ms)
			return e;
		*pp = e->next;
		*(e->older ? &e->older->newer : &a->oldest) = e->newer;
		*(e->newer ? &e->newer->older : &a->newest) = e->older;
		a->count--;
		entry_put(e);
		return NULL;
	}
	return NULL;
}

static void table_insert(struct k2mc_avro *a, struct entry *e)
{
	e->next = a->bucket[e->id % NBUCKETS];
	a->bucket[e->id % NBUCKETS] = e;
	e->older = a->newest;
	e->newer = NULL;
	*(a->newest ? &a->newest->newer : &a->oldest) = e;
	a->newest = e;
	a->count++;
	while (a->count > a->set.capacity && a->oldest != e) {
		struct entry *old = a->oldest, **pp = &a->bucket[old->id % NBUCKETS];
		while (*pp != old)
			pp = &(*pp)->next;
		*pp = old->next;
		a->oldest = old->newer;
		a->oldest->older = NULL;
		a->count--;
		entry_put(old);
	}
}

/* The entry for id with a reference for the caller: from the table, or
 * fetched (one thread at a time; another that waited finds it done). */
static struct entry *lookup(struct k2mc_avro *a, uint32_t id)
{
	int64_t now = mono_ms();
	pthread_mutex_lock(&a->table_mu);
	struct entry *e = table_find(a, id, now);
	if (e)
		atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&a->table_mu);
	if (e)
		return e;
	pthread_mutex_lock(&a->fetch_mu);
	pthread_mutex_lock(&a->table_mu);
	e = table_find(a, id, mono_ms());
	if (e)
		atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&a->table_mu);
	if (!e && (e = calloc(1, sizeof(*e)))) {
		e->id = id;
		fetch_schema(a, e);
		e->expires_ms = mono_ms() + a->set.negative_ms;
		atomic_init(&e->refs, 2); /* the table's and the caller's */
		pthread_mutex_lock(&a->table_mu);
		table_insert(a, e);
		pthread_mutex_unlock(&a->table_mu);
	}
	pthread_mutex_unlock(&a->fetch_mu);
	return e;
}

/* ---- the per-thread handle --------------------------------------------------------- */

#define CTX_SLOTS 64 /* direct-mapped by id; a slot holds a reference */

struct k2mc_avro_ctx {
	struct k2mc_avro *a; /* NULL: k2mc_avro_decode_with only */
	struct entry *slot[CTX_SLOTS];
	char *out;
	size_t cap;
	int64_t last_id;
	char err[256];
};

struct k2mc_avro_ctx *k2mc_avro_ctx_new(struct k2mc_avro *a)
{
	struct k2mc_avro_ctx *c = calloc(1, sizeof(*c));
	if (c)
		c->a = a;
	return c;
}

void k2mc_avro_ctx_free(struct k2mc_avro_ctx *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < CTX_SLOTS; i++)
		entry_put(c->slot[i]);
	free(c->out);
	free(c);
}

const char *k2mc_avro_explain(const struct k2mc_avro_ctx *c)
{
	return c->err;
}

int64_t k2mc_avro_last_id(const struct k2mc_avro_ctx *c)
{
	return c->last_id;
}

static enum k2mc_avro_result run(struct k2mc_avro_ctx *c, const struct k2mc_avro_schema *s,
                                 const void *data, size_t len, const char **json, size_t *json_len)
{
	struct dec d = {
	    .p = data,
	    .end = (const uint8_t *)data + len,
	    .start = data,
	    .out = c->out,
	    .cap = c->cap,
	    .max = c->a ? (size_t)c->a->set.max_decoded : (size_t)16 << 20,
	    .ctx = c,
	    .err = c->err,
	    .errlen = sizeof(c->err),
	};
	int rc = decode(&d, s->root, 0);
	if (rc == 0 && d.p != d.end) {
		snprintf(c->err, sizeof(c->err), "%zu bytes left over after the record",
		         (size_t)(d.end - d.p));
		rc = -1;
	}
	c->out = d.out;
	c->cap = d.cap;
	if (rc < 0)
		return K2MC_AVRO_DECODE;
	*json = d.out;
	*json_len = d.len;
	return K2MC_AVRO_OK;
}

enum k2mc_avro_result k2mc_avro_decode_with(struct k2mc_avro_ctx *c,
                                            const struct k2mc_avro_schema *s, const void *data,
                                            size_t len, const char **json, size_t *json_len)
{
	c->err[0] = '\0';
	return run(c, s, data, len, json, json_len);
}

enum k2mc_avro_result k2mc_avro_decode(struct k2mc_avro_ctx *c, const void *data, size_t len,
                                       const char **json, size_t *json_len)
{
	const uint8_t *b = data;
	c->err[0] = '\0';
	c->last_id = -1;
	if (len < 5 || b[0] != 0) {
		if (len < 5)
			snprintf(c->err, sizeof(c->err),
			         "%zu bytes: shorter than the 5-byte header", len);
		else
			snprintf(c->err, sizeof(c->err), "magic byte is 0x%02x, not 0", b[0]);
		return K2MC_AVRO_NOT_AVRO;
	}
	uint32_t id = (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4];
	c->last_id = id;
	if (!c->a) {
		snprintf(c->err, sizeof(c->err), "no schema registry");
		return K2MC_AVRO_SCHEMA_UNAVAILABLE;
	}
	struct entry **slot = &c->slot[id % CTX_SLOTS], *e = *slot;
	if (e && (e->id != id || (e->status != K2MC_AVRO_OK && mono_ms() >= e->expires_ms))) {
		entry_put(e);
		*slot = e = NULL;
	}
	if (!e) {
		e = lookup(c->a, id);
		if (!e) {
			snprintf(c->err, sizeof(c->err), "schema %" PRIu32 ": out of memory", id);
			return K2MC_AVRO_SCHEMA_UNAVAILABLE;
		}
		*slot = e;
	}
	if (e->status != K2MC_AVRO_OK) {
		snprintf(c->err, sizeof(c->err), "%s", e->why);
		return e->status;
	}
	return run(c, e->schema, b + 5, len - 5, json, json_len);
}
