/* Record -> Memcached command; see mapping.h. Three parts: the template
 * compiler (start-up only), the JSON extractor (one pass over a value finds
 * every pointer the templates name, and validates the whole value), and the
 * per-record mapping. The key rules follow memcached's protocol.txt: "the
 * key must not include control characters or whitespace" and is at most 250
 * bytes; an exptime over 30 days is an absolute unix time. */
#include "workers/mapping.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

/* ---- reasons ----------------------------------------------------------------*/

/* One row per reason; every question about a reason reads this table.
 * hashable: about the produced key's shape, which --on-invalid hash cures.
 * invalidates: the key is valid, so a record skipped for this reason is the
 * key's newest state, one Memcached cannot hold: under a skip the key is
 * deleted in its place (policy.h), so no older value outlives it. The key
 * reasons do not: a key that is absent or malformed names nothing the
 * cache holds (under hash, a bad key's records live under its digest). */
static const struct {
	const char *name;
	uint8_t hashable;
	uint8_t invalidates;
} reasons[K2MC_MAP_NREASONS] = {
	[K2MC_MAP_OK] = { "ok", 0, 0 },
	[K2MC_KEY_MISSING] = { "missing_key", 0, 0 },
	[K2MC_KEY_TOO_LONG] = { "key_too_long", 1, 0 },
	[K2MC_KEY_BAD_BYTES] = { "key_bad_bytes", 1, 0 },
	[K2MC_VALUE_TOO_LARGE] = { "value_too_large", 0, 1 },
	[K2MC_MAP_MISSING_FIELD] = { "missing_field", 0, 1 },
	[K2MC_MAP_NOT_JSON] = { "not_json", 0, 1 },
	[K2MC_MAP_BAD_TTL] = { "bad_ttl", 0, 1 },
	[K2MC_MAP_BAD_FLAGS] = { "bad_flags", 0, 1 },
	[K2MC_MAP_NOT_AVRO] = { "not_avro", 0, 1 },
	[K2MC_MAP_SCHEMA_UNAVAILABLE] = { "schema_unavailable", 0, 1 },
	[K2MC_MAP_AVRO_DECODE] = { "avro_decode", 0, 1 },
	[K2MC_MAP_NOT_CDC] = { "not_cdc", 0, 1 },
};

const char *k2mc_map_reason_name(enum k2mc_map_reason r)
{
	return (unsigned)r < K2MC_MAP_NREASONS ? reasons[r].name : "unknown";
}

int k2mc_map_hashable(enum k2mc_map_reason r)
{
	return (unsigned)r < K2MC_MAP_NREASONS && reasons[r].hashable;
}

int k2mc_map_invalidates(enum k2mc_map_reason r)
{
	return (unsigned)r < K2MC_MAP_NREASONS && reasons[r].invalidates;
}

/* ---- compiled form ------------------------------------------------------------*/

enum part_kind { P_LIT, P_KEY, P_VALUE, P_TOPIC, P_PARTITION, P_HEADER, P_JSON, P_KEYJSON };

struct part {
	enum part_kind kind;
	const char *text; /* P_LIT: the literal; P_HEADER: the name (NUL-terminated) */
	size_t len;
	int ptr;           /* P_JSON, P_KEYJSON: pointer id (in the value's or key's trie) */
	const char *field; /* for messages: "header 'id'", "JSON pointer '/id'" */
};

struct tmpl {
	struct part *parts;
	int n;
	int reads_value;   /* {value} or {json:} */
	int reads_json;
	int reads_key;     /* {key} or {keyjson:} */
	int reads_headers;
	int nkeys;         /* {key} placeholders */
	int only_keyish;   /* only literals, {key}, {topic}, {partition} */
};

/* tokens of one pointer: deeper than the scanner's depth could not match */
#define K2MC_MAP_MAX_TOKENS K2MC_JSON_MAX_DEPTH

/* JSON pointers as a trie of reference tokens: node 0 is the whole value
 * (the pointer ""). */
struct jnode {
	const char *tok; /* unescaped (~0 ~1 decoded) */
	size_t len;
	int64_t idx;     /* the array index the token names, -1 if none (RFC 6901:
			  * "0" or digits without a leading zero) */
	int child, sib;  /* first child, next sibling; -1 none */
	int ptr;         /* pointer ending here, -1 none */
	uint32_t desc;   /* pointers below this node (bit per id): their spans
			  * are cleared when a duplicate member enters it again */
};

/* The pointers of one document kind, as a trie (nodes[0] is the root). */
struct trie {
	struct jnode *nodes;
	int nnodes, cap;
	int npointers;
	size_t max_tok;  /* longest token: longer member names cannot match */
};

/* The envelope pointers (env trie): Kafka Connect's schemas.enable
 * envelope, and a Debezium event's members with and without it. */
enum { E_SCHEMA, E_PAYLOAD, E_OP, E_AFTER, E_BEFORE, E_POP, E_PAFTER, E_PBEFORE, E_N };
static const char *const env_pointers[E_N] = {
	[E_SCHEMA] = "/schema",	   [E_PAYLOAD] = "/payload",	 [E_OP] = "/op",
	[E_AFTER] = "/after",	   [E_BEFORE] = "/before",	 [E_POP] = "/payload/op",
	[E_PAFTER] = "/payload/after", [E_PBEFORE] = "/payload/before",
};

struct k2mc_mapping {
	const struct k2mc_config *cfg;
	struct tmpl key, value;
	/* {json:} pointers (val), {keyjson:} pointers (keyt), the envelope's */
	struct trie val, keyt, env;
	/* --value-format json without --cdc: the {json:} pointers and the
	 * envelope's in one trie (venv), so that a value without an envelope
	 * is scanned once; venv_of_val[i] is pointer i of val in it. venv_ok 0:
	 * not built (another mode, or more pointers than one trie holds) */
	struct trie venv;
	int venv_ok, venv_schema, venv_payload;
	int venv_of_val[K2MC_MAP_MAX_POINTERS];
	const char *val_text[K2MC_MAP_MAX_POINTERS]; /* pointer i of val, as written */
	/* the value is read as a document (an envelope's payload, a change
	 * event's row image), not as its bytes: --cdc, or an envelope that
	 * --value-format json (or raw under --cdc) unwraps */
	int value_doc;
	int value_unwrap; /* a value's envelope is unwrapped */
	int key_unwrap;   /* a key's envelope is unwrapped */
	struct k2mc_decoder *decoder; /* main's, set before the threads start */
	int key_plain;   /* --key is exactly {key} */
	int value_plain; /* --value is exactly {value} */
	int routes_by_key;
	int reads_headers;
	int is_default;
	const char *ttl_field, *flags_field;
	/* every allocation of the compiled form, freed together */
	void **owned;
	size_t nowned, owned_cap;
};

/* Span kinds (struct k2mc_span.kind). */
enum { SPAN_ABSENT = 0, SPAN_STR, SPAN_STR_ESC, SPAN_COMPACT, SPAN_SPACED };

static void *own(struct k2mc_mapping *m, void *p)
{
	if (p == NULL)
		return NULL;
	if (m->nowned == m->owned_cap) {
		size_t cap = m->owned_cap ? m->owned_cap * 2 : 32;
		void **n = realloc(m->owned, cap * sizeof(*n));

		if (n == NULL) {
			free(p);
			return NULL;
		}
		m->owned = n;
		m->owned_cap = cap;
	}
	m->owned[m->nowned++] = p;
	return p;
}

static char *own_printf(struct k2mc_mapping *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static char *own_printf(struct k2mc_mapping *m, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : own(m, s);
}

void k2mc_mapping_free(struct k2mc_mapping *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nowned; i++)
		free(m->owned[i]);
	free(m->owned);
	free(m->val.nodes);
	free(m->keyt.nodes);
	free(m->env.nodes);
	free(m->venv.nodes);
	free(m);
}

/* ---- the template compiler ------------------------------------------------------*/

/* "--key: MESSAGE at position N:\n  TEMPLATE\n  ^" (1-based positions;
 * a long template is shown around the position). */
static void tmpl_error(char *err, size_t errlen, const char *opt, const char *s, size_t pos,
		       const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void tmpl_error(char *err, size_t errlen, const char *opt, const char *s, size_t pos,
		       const char *fmt, ...)
{
	char msg[256];
	size_t n = strlen(s), from = 0, to = n, caret;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n > 72) {
		from = pos > 36 ? pos - 36 : 0;
		to = from + 72 < n ? from + 72 : n;
	}
	caret = pos - from + (from > 0 ? 3 : 0);
	snprintf(err, errlen, "--%s: %s at position %zu:\n  %s%.*s%s\n  %*s^", opt, msg, pos + 1,
		 from > 0 ? "..." : "", (int)(to - from), s + from, to < n ? "..." : "",
		 (int)caret, "");
}

static int add_node(struct trie *m, int parent, const char *tok, size_t len)
{
	struct jnode *nd;
	int id;

	for (int c = m->nodes[parent].child; c >= 0; c = m->nodes[c].sib)
		if (m->nodes[c].len == len && memcmp(m->nodes[c].tok, tok, len) == 0)
			return c;
	if (m->nnodes == m->cap) {
		int cap = m->cap * 2;
		struct jnode *n = realloc(m->nodes, (size_t)cap * sizeof(*n));

		if (n == NULL)
			return -1;
		m->nodes = n;
		m->cap = cap;
	}
	id = m->nnodes++;
	nd = &m->nodes[id];
	nd->tok = tok;
	nd->len = len;
	nd->child = -1;
	nd->ptr = -1;
	nd->idx = -1;
	nd->desc = 0;
	if (len > 0 && len <= 10 && (tok[0] != '0' || len == 1)) {
		int64_t v = 0;
		size_t i;

		for (i = 0; i < len && tok[i] >= '0' && tok[i] <= '9'; i++)
			v = v * 10 + (tok[i] - '0');
		if (i == len && v <= INT32_MAX)
			nd->idx = v;
	}
	nd->sib = m->nodes[parent].child;
	m->nodes[parent].child = id;
	if (len > m->max_tok)
		m->max_tok = len;
	return id;
}

/* Adds pointer s[0..len) (at template position pos) to the trie; its id,
 * or -1 with err set. */
static int add_pointer(struct k2mc_mapping *m, struct trie *tr, const char *opt,
		       const char *tmpl, size_t pos, const char *s, size_t len, char *err,
		       size_t errlen)
{
	int node = 0, path[K2MC_MAP_MAX_TOKENS + 1], depth = 0;
	size_t i = 0;

	path[0] = 0;
	if (len > 0 && s[0] != '/') {
		tmpl_error(err, errlen, opt, tmpl, pos,
			   "a JSON pointer is empty (the whole value) or starts with '/' "
			   "(RFC 6901), got '%.*s'", (int)len, s);
		return -1;
	}
	while (i < len) {
		/* one reference token: s[i] is '/' */
		char *tok = own(m, malloc(len + 1));
		size_t t = 0;

		if (tok == NULL)
			goto nomem;
		for (i++; i < len && s[i] != '/'; i++) {
			if (s[i] != '~') {
				tok[t++] = s[i];
				continue;
			}
			if (i + 1 < len && (s[i + 1] == '0' || s[i + 1] == '1')) {
				tok[t++] = s[i + 1] == '0' ? '~' : '/';
				i++;
				continue;
			}
			tmpl_error(err, errlen, opt, tmpl, pos + i,
				   "bad escape '~%.*s' in a JSON pointer (RFC 6901: '~0' is '~', "
				   "'~1' is '/')", i + 1 < len ? 1 : 0, s + i + 1);
			return -1;
		}
		tok[t] = '\0';
		if (depth == K2MC_MAP_MAX_TOKENS) {
			tmpl_error(err, errlen, opt, tmpl, pos, "a JSON pointer of more than %d tokens",
				   K2MC_MAP_MAX_TOKENS);
			return -1;
		}
		node = add_node(tr, node, tok, t);
		if (node < 0)
			goto nomem;
		path[++depth] = node;
	}
	if (tr->nodes[node].ptr < 0) {
		if (tr->npointers == K2MC_MAP_MAX_POINTERS) {
			tmpl_error(err, errlen, opt, tmpl, pos, "more than %d distinct JSON pointers",
				   K2MC_MAP_MAX_POINTERS);
			return -1;
		}
		tr->nodes[node].ptr = tr->npointers++;
		for (int k = 0; k < depth; k++)
			tr->nodes[path[k]].desc |= 1u << tr->nodes[node].ptr;
	}
	return tr->nodes[node].ptr;
nomem:
	snprintf(err, errlen, "out of memory compiling --%s", opt);
	return -1;
}

/* Parses template s of option opt ("key", "value") into t. */
static int compile(struct k2mc_mapping *m, struct tmpl *t, const char *opt, const char *s,
		   char *err, size_t errlen)
{
	size_t n = strlen(s), i = 0, litstart;
	char *lit = own(m, malloc(n + 1));
	size_t nl = 0;

	t->parts = own(m, calloc(n + 1, sizeof(*t->parts)));
	if (lit == NULL || t->parts == NULL) {
		snprintf(err, errlen, "out of memory compiling --%s", opt);
		return -1;
	}
	t->only_keyish = 1;
	litstart = 0;
	while (i <= n) {
		struct part *p;
		const char *name, *close;
		size_t nlen;

		if (i < n && s[i] != '{' && s[i] != '}') {
			lit[nl++] = s[i++];
			continue;
		}
		if (i < n && s[i + 1] == s[i]) { /* "{{" or "}}" */
			lit[nl++] = s[i];
			i += 2;
			continue;
		}
		/* the literal so far ends here */
		if (nl > litstart) {
			p = &t->parts[t->n++];
			p->kind = P_LIT;
			p->text = lit + litstart;
			p->len = nl - litstart;
			litstart = nl;
		}
		if (i == n)
			break;
		if (s[i] == '}') {
			tmpl_error(err, errlen, opt, s, i,
				   "a lone '}' (write '}}' for a literal brace)");
			return -1;
		}
		name = s + i + 1;
		close = strchr(name, '}');
		if (close == NULL) {
			tmpl_error(err, errlen, opt, s, i,
				   "'{' opens a placeholder that no '}' closes (write '{{' for a "
				   "literal brace)");
			return -1;
		}
		nlen = (size_t)(close - name);
		p = &t->parts[t->n];
		if (nlen == 3 && memcmp(name, "key", 3) == 0) {
			p->kind = P_KEY;
			p->field = "the record key";
			t->nkeys++;
			t->reads_key = 1;
		} else if (nlen == 5 && memcmp(name, "value", 5) == 0) {
			p->kind = P_VALUE;
			p->field = "the value ({value} of a tombstone)";
			t->reads_value = 1;
		} else if (nlen == 5 && memcmp(name, "topic", 5) == 0) {
			p->kind = P_TOPIC;
		} else if (nlen == 9 && memcmp(name, "partition", 9) == 0) {
			p->kind = P_PARTITION;
		} else if (nlen >= 7 && memcmp(name, "header:", 7) == 0) {
			char *h;

			if (nlen == 7) {
				tmpl_error(err, errlen, opt, s, i + 8,
					   "{header:NAME} needs a header name");
				return -1;
			}
			h = own(m, strndup(name + 7, nlen - 7));
			p->kind = P_HEADER;
			p->text = h;
			p->len = nlen - 7;
			p->field = own_printf(m, "header '%.*s'", (int)(nlen - 7), name + 7);
			if (h == NULL || p->field == NULL)
				goto nomem;
			t->reads_headers = 1;
		} else if (nlen >= 5 && memcmp(name, "json:", 5) == 0) {
			p->kind = P_JSON;
			p->ptr = add_pointer(m, &m->val, opt, s, i + 6, name + 5, nlen - 5, err,
					     errlen);
			if (p->ptr < 0)
				return -1;
			p->field = own_printf(m, "JSON pointer '%.*s'", (int)(nlen - 5), name + 5);
			if (p->field == NULL)
				goto nomem;
			if (m->val_text[p->ptr] == NULL &&
			    (m->val_text[p->ptr] = own(m, strndup(name + 5, nlen - 5))) == NULL)
				goto nomem;
			t->reads_value = 1;
			t->reads_json = 1;
		} else if (nlen >= 8 && memcmp(name, "keyjson:", 8) == 0) {
			p->kind = P_KEYJSON;
			p->ptr = add_pointer(m, &m->keyt, opt, s, i + 9, name + 8, nlen - 8, err,
					     errlen);
			if (p->ptr < 0)
				return -1;
			p->field = own_printf(m, "key JSON pointer '%.*s'", (int)(nlen - 8), name + 8);
			if (p->field == NULL)
				goto nomem;
			t->reads_key = 1;
		} else {
			tmpl_error(err, errlen, opt, s, i,
				   "unknown placeholder '{%.*s}' (known: {key} {value} {topic} "
				   "{partition} {header:NAME} {json:/POINTER} {keyjson:/POINTER}; "
				   "'{{' for a brace)",
				   (int)(nlen > 40 ? 40 : nlen), name);
			return -1;
		}
		if (p->kind != P_KEY && p->kind != P_TOPIC && p->kind != P_PARTITION)
			t->only_keyish = 0;
		t->n++;
		i = (size_t)(close - s) + 1;
	}
	return 0;
nomem:
	snprintf(err, errlen, "out of memory compiling --%s", opt);
	return -1;
}

/* An empty trie: the root alone. Its nodes are freed by
 * k2mc_mapping_free (realloc moves them: not in owned[]). */
static int trie_init(struct trie *t)
{
	t->cap = 8;
	t->nodes = malloc((size_t)t->cap * sizeof(*t->nodes));
	if (t->nodes == NULL)
		return -1;
	t->nodes[0] = (struct jnode){ "", 0, -1, -1, -1, -1, 0 };
	t->nnodes = 1;
	return 0;
}

/* The venv trie (struct k2mc_mapping), when the mode has one and its
 * pointers fit: 0, or -1 for lack of memory. */
static int venv_build(struct k2mc_mapping *m)
{
	char ignored[256];

	if (!m->value_unwrap || m->cfg->cdc != K2MC_CDC_NONE || m->val.npointers == 0 ||
	    m->val.npointers + 2 > K2MC_MAP_MAX_POINTERS)
		return 0;
	if (trie_init(&m->venv) != 0)
		return -1;
	for (int i = 0; i < m->val.npointers; i++) {
		m->venv_of_val[i] = add_pointer(m, &m->venv, "value", m->val_text[i], 0,
						m->val_text[i], strlen(m->val_text[i]), ignored,
						sizeof(ignored));
		if (m->venv_of_val[i] < 0)
			return -1; /* the same pointers compiled in val: only memory */
	}
	m->venv_schema = add_pointer(m, &m->venv, "value", env_pointers[E_SCHEMA], 0,
				     env_pointers[E_SCHEMA], strlen(env_pointers[E_SCHEMA]),
				     ignored, sizeof(ignored));
	m->venv_payload = add_pointer(m, &m->venv, "value", env_pointers[E_PAYLOAD], 0,
				      env_pointers[E_PAYLOAD], strlen(env_pointers[E_PAYLOAD]),
				      ignored, sizeof(ignored));
	if (m->venv_schema < 0 || m->venv_payload < 0)
		return -1;
	m->venv_ok = 1;
	return 0;
}

struct k2mc_mapping *k2mc_mapping_new(const struct k2mc_config *cfg, char *err, size_t errlen)
{
	struct k2mc_mapping *m = calloc(1, sizeof(*m));
	const char *kt = cfg->key_template ? cfg->key_template : "{key}";
	const char *vt = cfg->value_template ? cfg->value_template : "{value}";

	if (m == NULL)
		goto nomem;
	m->cfg = cfg;
	if (trie_init(&m->val) != 0 || trie_init(&m->keyt) != 0 || trie_init(&m->env) != 0)
		goto nomem;
	for (int e = 0; e < E_N; e++)
		if (add_pointer(m, &m->env, "value", env_pointers[e], 0, env_pointers[e],
				strlen(env_pointers[e]), err, errlen) != e)
			goto fail;
	m->value_unwrap = cfg->value_format == K2MC_FMT_JSON ||
			  (cfg->cdc != K2MC_CDC_NONE && cfg->value_format == K2MC_FMT_RAW);
	m->key_unwrap = cfg->key_format == K2MC_FMT_JSON ||
			(cfg->cdc != K2MC_CDC_NONE && cfg->key_format == K2MC_FMT_RAW);
	m->value_doc = m->value_unwrap || cfg->cdc != K2MC_CDC_NONE;
	if (kt[0] == '\0') {
		snprintf(err, errlen, "--key: the template is empty: every key would be empty");
		goto fail;
	}
	if (compile(m, &m->key, "key", kt, err, errlen) != 0 ||
	    compile(m, &m->value, "value", vt, err, errlen) != 0)
		goto fail;
	if (venv_build(m) != 0)
		goto nomem;
	m->key_plain = m->key.n == 1 && m->key.parts[0].kind == P_KEY;
	/* a document's {value} is a span of the value, not all of it */
	m->value_plain = m->value.n == 1 && m->value.parts[0].kind == P_VALUE && !m->value_doc;
	/* an Avro key's {key} is its JSON text, which Kafka keys of other
	 * schema ids can give too: not one-to-one with the record key */
	m->routes_by_key = m->key.only_keyish && m->key.nkeys > 0 &&
			   cfg->key_format != K2MC_FMT_AVRO;
	if (cfg->ttl_header != NULL)
		m->ttl_field = own_printf(m, "header '%s'", cfg->ttl_header);
	if (cfg->flags_header != NULL)
		m->flags_field = own_printf(m, "header '%s'", cfg->flags_header);
	if ((cfg->ttl_header != NULL && m->ttl_field == NULL) ||
	    (cfg->flags_header != NULL && m->flags_field == NULL))
		goto nomem;
	m->reads_headers = m->key.reads_headers || m->value.reads_headers ||
			   cfg->ttl_header != NULL || cfg->flags_header != NULL;
	m->is_default = m->key_plain && m->value_plain && cfg->ttl_header == NULL &&
			cfg->flags_header == NULL && !cfg->ttl_from_timestamp &&
			cfg->on_tombstone == K2MC_TOMB_DELETE && cfg->cdc == K2MC_CDC_NONE &&
			cfg->key_format != K2MC_FMT_AVRO;
	return m;
nomem:
	snprintf(err, errlen, "out of memory compiling the templates");
fail:
	k2mc_mapping_free(m);
	return NULL;
}

int k2mc_mapping_routes_by_record_key(const struct k2mc_mapping *map)
{
	return map->routes_by_key;
}

int k2mc_mapping_reads_headers(const struct k2mc_mapping *map)
{
	return map->reads_headers;
}

int k2mc_mapping_is_default(const struct k2mc_mapping *map)
{
	return map->is_default;
}

size_t k2mc_mapping_npointers(const struct k2mc_mapping *map)
{
	return (size_t)map->val.npointers;
}

void k2mc_mapping_key_reads(const struct k2mc_mapping *map, int *key, int *value)
{
	*key = map->key.reads_key;
	*value = map->key.reads_value;
}

int k2mc_mapping_value_read(const struct k2mc_mapping *map)
{
	return map->value.reads_value || map->cfg->cdc != K2MC_CDC_NONE;
}

void k2mc_mapping_set_decoder(struct k2mc_mapping *map, struct k2mc_decoder *d)
{
	map->decoder = d;
}

struct k2mc_decoder *k2mc_mapping_decoder(const struct k2mc_mapping *map)
{
	return map->decoder;
}

void k2mc_record_of(const struct k2mc_mapping *map, rd_kafka_message_t *m,
		    struct k2mc_record *r)
{
	r->topic = m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : "";
	r->partition = m->partition;
	r->offset = m->offset;
	r->timestamp_ms = map->cfg->ttl_from_timestamp ? rd_kafka_message_timestamp(m, NULL) : -1;
	r->key = m->key;
	r->key_len = m->key_len;
	r->value = m->payload;
	r->value_len = m->len;
	r->headers = NULL;
	if (map->reads_headers) {
		rd_kafka_headers_t *h;

		if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
			r->headers = h;
	}
}

/* ---- the JSON extractor ---------------------------------------------------------
 * RFC 8259 in full (UTF-8 checked inside strings, surrogate pairs paired),
 * iterative with an explicit stack, every read bounds-checked. It records
 * where the value of each pointer lies; the whole text is validated even
 * when every pointer was found early, so "not JSON" means the same thing
 * whichever fields a template names. Of duplicate member names the last
 * counts (as jansson and json-c keep it). */

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline int is_ws(unsigned char c)
{
	return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 4 hex digits at p (bounds checked by the caller): the value or -1. */
static long hex4(const unsigned char *p)
{
	long v = 0;

	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);

		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/* Length of the valid UTF-8 sequence at p (p < end, *p >= 0x80), 0 if
 * invalid: overlong forms, surrogates and values over U+10FFFF refused. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	size_t left = (size_t)(end - p);
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (left < n)
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* p just past an opening quote: returns the byte after the closing quote,
 * or NULL with *bad at the offending byte. *esc: the string has escapes. */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end,
					int *esc, const unsigned char **bad)
{
	for (;;) {
		/* eight bytes at a time while none is '"', '\\', a control
		 * byte or non-ASCII */
		while (end - p >= 8) {
			uint64_t x;

			memcpy(&x, p, 8);
			if ((((x ^ (ONES * '"')) - ONES) & ~(x ^ (ONES * '"')) & HIGHS) |
			    (((x ^ (ONES * '\\')) - ONES) & ~(x ^ (ONES * '\\')) & HIGHS) |
			    ((x - ONES * 0x20) & ~x & HIGHS) | (x & HIGHS))
				break;
			p += 8;
		}
		if (p == end) {
			*bad = p;
			return NULL;
		}
		if (*p == '"')
			return p + 1;
		if (*p == '\\') {
			long u, u2;

			*esc = 1;
			if (end - p < 2)
				goto bad;
			switch (p[1]) {
			case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
				p += 2;
				continue;
			case 'u':
				if (end - p < 6 || (u = hex4(p + 2)) < 0)
					goto bad;
				if (u >= 0xdc00 && u <= 0xdfff)
					goto bad; /* a low surrogate alone */
				if (u >= 0xd800 && u <= 0xdbff) {
					if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
					    (u2 = hex4(p + 8)) < 0xdc00 || u2 > 0xdfff)
						goto bad; /* a high surrogate alone */
					p += 6;
				}
				p += 6;
				continue;
			default:
				goto bad;
			}
		}
		if (*p < 0x20)
			goto bad;
		if (*p < 0x80) {
			p++;
			continue;
		}
		{
			size_t n = utf8_len(p, end);

			if (n == 0)
				goto bad;
			p += n;
		}
	}
bad:
	*bad = p;
	return NULL;
}

static const unsigned char *scan_number(const unsigned char *p, const unsigned char *end)
{
	if (p < end && *p == '-')
		p++;
	if (p == end)
		return NULL;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (p < end && is_digit(*p))
			p++;
	else
		return NULL;
	if (p < end && *p == '.') {
		p++;
		if (p == end || !is_digit(*p))
			return NULL;
		while (p < end && is_digit(*p))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || !is_digit(*p))
			return NULL;
		while (p < end && is_digit(*p))
			p++;
	}
	return p;
}

/* One decoded unit of a validated string body at in[*i]: into out (room
 * for 4 bytes); returns the bytes written and moves *i past the unit. */
static size_t unescape_unit(const unsigned char *in, size_t *i, char *out)
{
	unsigned long u;

	if (in[*i] != '\\') {
		out[0] = (char)in[(*i)++];
		return 1;
	}
	switch (in[*i + 1]) {
	case 'b': out[0] = '\b'; break;
	case 'f': out[0] = '\f'; break;
	case 'n': out[0] = '\n'; break;
	case 'r': out[0] = '\r'; break;
	case 't': out[0] = '\t'; break;
	case 'u': goto unicode;
	default: out[0] = (char)in[*i + 1]; break;
	}
	*i += 2;
	return 1;
unicode:
	u = (unsigned long)hex4(in + *i + 2);
	*i += 6;
	if (u >= 0xd800 && u <= 0xdbff) {
		/* validated: a low surrogate follows */
		u = 0x10000 + ((u - 0xd800) << 10) + ((unsigned long)hex4(in + *i + 2) - 0xdc00);
		*i += 6;
	}
	if (u < 0x80) {
		out[0] = (char)u;
		return 1;
	}
	if (u < 0x800) {
		out[0] = (char)(0xc0 | (u >> 6));
		out[1] = (char)(0x80 | (u & 0x3f));
		return 2;
	}
	if (u < 0x10000) {
		out[0] = (char)(0xe0 | (u >> 12));
		out[1] = (char)(0x80 | ((u >> 6) & 0x3f));
		out[2] = (char)(0x80 | (u & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (u >> 18));
	out[1] = (char)(0x80 | ((u >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((u >> 6) & 0x3f));
	out[3] = (char)(0x80 | (u & 0x3f));
	return 4;
}

static int child_by_index(const struct trie *m, int node, uint32_t i)
{
	if (node < 0)
		return -1;
	for (int c = m->nodes[node].child; c >= 0; c = m->nodes[c].sib)
		if (m->nodes[c].idx == (int64_t)i)
			return c;
	return -1;
}

static int child_by_name(const struct trie *m, int node, const unsigned char *name,
			 size_t len, int esc)
{
	char buf[260];
	const char *nm = (const char *)name;

	if (esc) {
		/* decoded only as far as a token could match: a name whose
		 * decoded form is longer than every token (or than 256 bytes,
		 * a limit of this scanner) matches none */
		size_t o = 0, cap = m->max_tok < 256 ? m->max_tok : 256;

		for (size_t i = 0; i < len && o <= cap;)
			o += unescape_unit(name, &i, buf + o);
		if (o > cap)
			return -1;
		len = o;
		nm = buf;
	}
	for (int c = m->nodes[node].child; c >= 0; c = m->nodes[c].sib)
		if (m->nodes[c].len == len && memcmp(m->nodes[c].tok, nm, len) == 0)
			return c;
	return -1;
}

static void set_span(struct k2mc_span *sp, size_t off, size_t len, uint8_t kind)
{
	sp->off = (uint32_t)off;
	sp->len = (uint32_t)len;
	sp->kind = kind;
}

/* The scanner over value[0..n) for the pointers of trie map (spans
 * [map->npointers]); see k2mc_mapping_scan_json. */
static int scan_json(const struct trie *map, const void *value, size_t n, struct k2mc_span *spans,
		     size_t *err_at)
{
	const unsigned char *s = value, *p = s, *end = s + n, *q, *bad = NULL;
	/* per open container: 'o' or 'a', its trie node (-1: no pointer goes
	 * deeper), the pointer its own value is (-1 none), where it starts, the
	 * whitespace count then, the array index */
	uint8_t type[K2MC_JSON_MAX_DEPTH];
	int node[K2MC_JSON_MAX_DEPTH], term[K2MC_JSON_MAX_DEPTH];
	uint32_t idx[K2MC_JSON_MAX_DEPTH];
	size_t start[K2MC_JSON_MAX_DEPTH], ws0[K2MC_JSON_MAX_DEPTH];
	size_t ws = 0;
	int d = 0, cur, t, esc;

	for (int i = 0; i < map->npointers; i++)
		spans[i].kind = SPAN_ABSENT;
	/* spans hold 32-bit offsets; Kafka values are far smaller */
	if (n > UINT32_MAX) {
		*err_at = 0;
		return -1;
	}
	cur = map->npointers > 0 ? 0 : -1;
#define SKIP_WS()                                   \
	do {                                        \
		while (p < end && is_ws(*p)) {      \
			p++;                        \
			ws++;                       \
		}                                   \
	} while (0)
value:
	SKIP_WS();
	if (p == end)
		goto bad;
	t = -1;
	if (cur >= 0) {
		/* a member met again (a duplicate name): the last one counts */
		for (uint32_t b = map->nodes[cur].desc; b != 0; b &= b - 1)
			spans[__builtin_ctz(b)].kind = SPAN_ABSENT;
		t = map->nodes[cur].ptr;
	}
	switch (*p) {
	case '{':
	case '[':
		if (d == K2MC_JSON_MAX_DEPTH)
			goto bad;
		type[d] = *p == '{' ? 'o' : 'a';
		node[d] = cur >= 0 && map->nodes[cur].child >= 0 ? cur : -1;
		term[d] = t;
		start[d] = (size_t)(p - s);
		ws0[d] = ws;
		idx[d] = 0;
		d++;
		p++;
		SKIP_WS();
		if (p < end && *p == (type[d - 1] == 'o' ? '}' : ']')) {
			p++;
			goto close;
		}
		if (type[d - 1] == 'o')
			goto member;
		cur = child_by_index(map, node[d - 1], 0);
		goto value;
	case '"':
		esc = 0;
		q = scan_string(p + 1, end, &esc, &bad);
		if (q == NULL) {
			p = bad;
			goto bad;
		}
		if (t >= 0)
			set_span(&spans[t], (size_t)(p + 1 - s), (size_t)(q - p - 2),
				 esc ? SPAN_STR_ESC : SPAN_STR);
		p = q;
		goto after;
	case 't':
	case 'f':
	case 'n': {
		const char *lit = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
		size_t ll = strlen(lit);

		if ((size_t)(end - p) < ll || memcmp(p, lit, ll) != 0)
			goto bad;
		q = p + ll;
		break;
	}
	default:
		q = scan_number(p, end);
		if (q == NULL)
			goto bad;
		break;
	}
	if (t >= 0)
		set_span(&spans[t], (size_t)(p - s), (size_t)(q - p), SPAN_COMPACT);
	p = q;
	goto after;
member:
	if (p == end || *p != '"')
		goto bad;
	esc = 0;
	q = scan_string(p + 1, end, &esc, &bad);
	if (q == NULL) {
		p = bad;
		goto bad;
	}
	cur = node[d - 1] >= 0 ? child_by_name(map, node[d - 1], p + 1, (size_t)(q - p - 2), esc)
			       : -1;
	p = q;
	SKIP_WS();
	if (p == end || *p != ':')
		goto bad;
	p++;
	goto value;
after:
	if (d == 0)
		goto done;
	SKIP_WS();
	if (p == end)
		goto bad;
	if (*p == ',') {
		p++;
		if (type[d - 1] == 'o') {
			SKIP_WS();
			goto member;
		}
		cur = child_by_index(map, node[d - 1], ++idx[d - 1]);
		goto value;
	}
	if (*p != (type[d - 1] == 'o' ? '}' : ']'))
		goto bad;
	p++;
close:
	d--;
	if (term[d] >= 0)
		set_span(&spans[term[d]], start[d], (size_t)(p - s) - start[d],
			 ws != ws0[d] ? SPAN_SPACED : SPAN_COMPACT);
	goto after;
done:
	SKIP_WS();
	if (p != end)
		goto bad;
	return 0;
bad:
	*err_at = (size_t)(p - s);
	return -1;
#undef SKIP_WS
}

int k2mc_mapping_scan_json(const struct k2mc_mapping *map, const void *value, size_t n,
			   struct k2mc_span *spans, size_t *err_at)
{
	return scan_json(&map->val, value, n, spans, err_at);
}

/* ---- the arena ---------------------------------------------------------------*/

struct chunk {
	struct chunk *next;
	size_t cap, used;
	char data[];
};

struct k2mc_arena {
	struct chunk *first, *cur;
};

#define CHUNK_MIN ((size_t)64 << 10)

struct k2mc_arena *k2mc_arena_new(void)
{
	return calloc(1, sizeof(struct k2mc_arena));
}

void *k2mc_arena_alloc(struct k2mc_arena *a, size_t n)
{
	struct chunk *c = a->cur;

	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > CHUNK_MIN ? n : CHUNK_MIN;

		if (c != NULL && c->cap * 2 > cap)
			cap = c->cap * 2;
		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->next = NULL;
		c->cap = cap;
		c->used = 0;
		if (a->cur != NULL)
			a->cur->next = c;
		else
			a->first = c;
		a->cur = c;
	}
	c->used += n;
	return c->data + c->used - n;
}

/* Keeps one chunk, as large as the batch that just ended needed (up to 16
 * MiB), so that steady batches allocate nothing. */
void k2mc_arena_reset(struct k2mc_arena *a)
{
	size_t total = 0;
	struct chunk *c, *next;

	if (a == NULL || a->first == NULL)
		return;
	for (c = a->first; c != NULL; c = c->next)
		total += c->used;
	if (a->first->next == NULL || total > ((size_t)16 << 20)) {
		for (c = a->first->next; c != NULL; c = next) {
			next = c->next;
			free(c);
		}
		a->first->next = NULL;
	} else {
		for (c = a->first; c != NULL; c = next) {
			next = c->next;
			free(c);
		}
		a->first = NULL;
		c = malloc(sizeof(*c) + total);
		if (c != NULL) {
			c->next = NULL;
			c->cap = total;
		}
		a->first = c;
	}
	if (a->first != NULL)
		a->first->used = 0;
	a->cur = a->first;
}

void k2mc_arena_free(struct k2mc_arena *a)
{
	struct chunk *c, *next;

	if (a == NULL)
		return;
	for (c = a->first; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	free(a);
}

/* ---- per record ---------------------------------------------------------------*/

/* The record's JSON, scanned at most once per mapping call: the value's
 * (jstate) and the key's (kstate). */
enum { JS_UNSCANNED = 0, JS_OK, JS_NOT_JSON, JS_NOT_CDC };
struct jstate {
	int status; /* JS_* */
	size_t err_at;
	const struct k2mc_span *spans; /* the {json:} pointers, offsets into the value */
	struct k2mc_span own[K2MC_MAP_MAX_POINTERS];
	/* value_doc: what {value} reads (the payload, the row image; absent:
	 * a d event without before), and --cdc's op ('c' 'r' 'u' 'd' 't') */
	struct k2mc_span doc;
	char op;
	/* the key's {keyjson:} pointers, offsets into the key */
	int kstatus;
	size_t kerr_at;
	struct k2mc_span kspans[K2MC_MAP_MAX_POINTERS];
};

/* Span kinds of a value that is an object, and of a one-letter string. */
static int span_is_object(const unsigned char *base, const struct k2mc_span *sp)
{
	return (sp->kind == SPAN_COMPACT || sp->kind == SPAN_SPACED) && base[sp->off] == '{';
}

/* Scans the document doc of base with trie t into spans (offsets into
 * base): a string's span is its body, so its quotes go back in first. */
static void scan_doc(const struct trie *t, const unsigned char *base, struct k2mc_span doc,
		     struct k2mc_span *spans)
{
	size_t err_at;

	if (doc.kind == SPAN_STR || doc.kind == SPAN_STR_ESC) {
		doc.off--;
		doc.len += 2;
	}
	/* part of a value the scanner validated: valid JSON itself */
	(void)scan_json(t, base + doc.off, doc.len, spans, &err_at);
	for (int i = 0; i < t->npointers; i++)
		spans[i].off += doc.off;
}

/* The document of base[0..n) as trie-scanned by env: its envelope's payload
 * when unwrap and it is one, else all of it. */
static struct k2mc_span unwrapped(const unsigned char *base, size_t n,
				  const struct k2mc_span *env, int unwrap)
{
	if (unwrap && span_is_object(base, &env[E_SCHEMA]) && env[E_PAYLOAD].kind != SPAN_ABSENT)
		return env[E_PAYLOAD];
	return (struct k2mc_span){ 0, (uint32_t)n, SPAN_COMPACT };
}

/* Scans the value: 1 when it is JSON (and, under --cdc, a change event),
 * with its {json:} spans, its document and its op. */
static int json_ready(const struct k2mc_mapping *map, const struct k2mc_record *rec,
		      struct jstate *js)
{
	const unsigned char *v = rec->value;
	struct k2mc_span env[E_N];
	int unwrap;

	if (js->status != JS_UNSCANNED)
		return js->status == JS_OK;
	js->spans = js->own;
	js->op = 0;
	if (!map->value_doc) {
		js->status = scan_json(&map->val, v, rec->value_len, js->own, &js->err_at) == 0
				     ? JS_OK : JS_NOT_JSON;
		js->doc = (struct k2mc_span){ 0, (uint32_t)rec->value_len, SPAN_COMPACT };
		return js->status == JS_OK;
	}
	if (map->venv_ok) {
		/* one pass finds the pointers and whether there is an envelope;
		 * only an envelope's payload is scanned again */
		struct k2mc_span all[K2MC_MAP_MAX_POINTERS];

		if (scan_json(&map->venv, v, rec->value_len, all, &js->err_at) != 0) {
			js->status = JS_NOT_JSON;
			return 0;
		}
		js->status = JS_OK;
		if (span_is_object(v, &all[map->venv_schema]) &&
		    all[map->venv_payload].kind != SPAN_ABSENT) {
			js->doc = all[map->venv_payload];
			for (int i = 0; i < map->val.npointers; i++)
				js->own[i].kind = SPAN_ABSENT;
			scan_doc(&map->val, v, js->doc, js->own);
			return 1;
		}
		js->doc = (struct k2mc_span){ 0, (uint32_t)rec->value_len, SPAN_COMPACT };
		for (int i = 0; i < map->val.npointers; i++)
			js->own[i] = all[map->venv_of_val[i]];
		return 1;
	}
	if (scan_json(&map->env, v, rec->value_len, env, &js->err_at) != 0) {
		js->status = JS_NOT_JSON;
		return 0;
	}
	unwrap = map->value_unwrap && span_is_object(v, &env[E_SCHEMA]) &&
		 env[E_PAYLOAD].kind != SPAN_ABSENT;
	js->doc = unwrapped(v, rec->value_len, env, map->value_unwrap);
	if (map->cfg->cdc != K2MC_CDC_NONE) {
		const struct k2mc_span *op = &env[unwrap ? E_POP : E_OP];

		/* Debezium: "op" is one of c (create), r (read: a snapshot
		 * row), u (update), d (delete), t (truncate) */
		if (op->kind != SPAN_STR || op->len != 1 || strchr("crudt", v[op->off]) == NULL) {
			js->status = JS_NOT_CDC;
			return 0;
		}
		js->op = (char)v[op->off];
		js->doc = env[unwrap ? (js->op == 'd' ? E_PBEFORE : E_PAFTER)
				     : (js->op == 'd' ? E_BEFORE : E_AFTER)];
		/* a row is an object; a delete's before may be null or absent
		 * (then only its key names the row) */
		if (!span_is_object(v, &js->doc)) {
			if (js->op == 'c' || js->op == 'r' || js->op == 'u') {
				js->status = JS_NOT_CDC;
				return 0;
			}
			js->doc.kind = SPAN_ABSENT;
		}
	}
	for (int i = 0; i < map->val.npointers; i++)
		js->own[i].kind = SPAN_ABSENT;
	if (js->doc.kind != SPAN_ABSENT && map->val.npointers > 0)
		scan_doc(&map->val, v, js->doc, js->own);
	js->status = JS_OK;
	return 1;
}

/* Scans the record key for the {keyjson:} pointers: 1 when it is JSON. */
static int key_json_ready(const struct k2mc_mapping *map, const struct k2mc_record *rec,
			  struct jstate *js)
{
	const unsigned char *k = rec->key;
	struct k2mc_span env[E_N];

	if (js->kstatus != JS_UNSCANNED)
		return js->kstatus == JS_OK;
	if (!map->key_unwrap) {
		js->kstatus = scan_json(&map->keyt, k, rec->key_len, js->kspans, &js->kerr_at) == 0
				      ? JS_OK : JS_NOT_JSON;
		return js->kstatus == JS_OK;
	}
	if (scan_json(&map->env, k, rec->key_len, env, &js->kerr_at) != 0) {
		js->kstatus = JS_NOT_JSON;
		return 0;
	}
	scan_doc(&map->keyt, k, unwrapped(k, rec->key_len, env, 1), js->kspans);
	js->kstatus = JS_OK;
	return 1;
}

static void jstate_init(struct jstate *js)
{
	js->status = JS_UNSCANNED;
	js->kstatus = JS_UNSCANNED;
	js->err_at = 0;
	js->op = 0;
}

static int header(const struct k2mc_record *rec, const char *name, const void **v, size_t *n)
{
	if (rec->headers == NULL ||
	    rd_kafka_header_get_last(rec->headers, name, v, n) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	/* a header with a null value is no header */
	return *v != NULL;
}

/* Where template output goes: a bounded buffer that, for a key, turns into
 * a running XXH3-128 once the output does not fit (--on-invalid hash needs
 * the digest of the whole output, and nothing else of an over-long key). */
struct sink {
	char *buf;
	size_t cap, len, total;
	XXH3_state_t *h; /* NULL: not hashing (yet) */
	XXH3_state_t *hstate;
};

static void put(struct sink *k, const void *b, size_t n)
{
	k->total += n;
	if (k->h == NULL && k->len + n <= k->cap) {
		memcpy(k->buf + k->len, b, n);
		k->len += n;
		return;
	}
	if (k->h == NULL) {
		k->h = k->hstate;
		XXH3_128bits_reset(k->h);
		XXH3_128bits_update(k->h, k->buf, k->len);
	}
	XXH3_128bits_update(k->h, b, n);
}

/* The first '"' or '\\' at or after p, in a validated string body (so
 * there is one before end): eight bytes at a time. */
static const unsigned char *quote_or_escape(const unsigned char *p, const unsigned char *end)
{
	while (end - p >= 8) {
		uint64_t x;

		memcpy(&x, p, 8);
		if ((((x ^ (ONES * '"')) - ONES) & ~(x ^ (ONES * '"')) & HIGHS) |
		    (((x ^ (ONES * '\\')) - ONES) & ~(x ^ (ONES * '\\')) & HIGHS))
			break;
		p += 8;
	}
	while (p < end && *p != '"' && *p != '\\')
		p++;
	return p;
}

/* A span's bytes into k: as they are, with the escapes of a string
 * decoded, or without the whitespace outside strings (strings are copied
 * whole, runs at a time). */
static void put_span(struct sink *k, const unsigned char *base, const struct k2mc_span *sp)
{
	const unsigned char *in = base + sp->off, *p = in, *end = in + sp->len, *q;
	char tmp[512];
	size_t o = 0;

	if (sp->kind == SPAN_STR || sp->kind == SPAN_COMPACT) {
		put(k, in, sp->len);
		return;
	}
	if (sp->kind == SPAN_SPACED && k->h == NULL && k->len + sp->len <= k->cap) {
		/* fits as it is, so it fits compacted: straight into the buffer */
		char *w = k->buf + k->len, *w0 = w;

		while (p < end) {
			if (*p == '"') {
				for (q = p + 1;;) {
					q = quote_or_escape(q, end);
					if (q == end || *q == '"')
						break;
					q += 2;
				}
				q += q < end;
				memcpy(w, p, (size_t)(q - p));
				w += q - p;
				p = q;
			} else if (is_ws(*p)) {
				p++;
			} else {
				*w++ = (char)*p++;
			}
		}
		k->len += (size_t)(w - w0);
		k->total += (size_t)(w - w0);
		return;
	}
	if (sp->kind == SPAN_SPACED) {
		while (p < end) {
			for (q = p; q < end && !is_ws(*q) && *q != '"'; q++)
				;
			put(k, p, (size_t)(q - p));
			p = q;
			if (p == end)
				break;
			if (*p != '"') {
				while (p < end && is_ws(*p))
					p++;
				continue;
			}
			/* a string, quotes included */
			for (q = p + 1;;) {
				q = quote_or_escape(q, end);
				if (q == end)
					break; /* not reached: the span is valid JSON */
				if (*q == '"') {
					q++;
					break;
				}
				q += 2;
			}
			put(k, p, (size_t)(q - p));
			p = q;
		}
		return;
	}
	for (size_t i = 0; i < sp->len;) {
		o += unescape_unit(in, &i, tmp + o);
		if (o > sizeof(tmp) - 4) {
			put(k, tmp, o);
			o = 0;
		}
	}
	put(k, tmp, o);
}

/* Where one placeholder's bytes come from: b[0..n), or a JSON span. */
struct src {
	const void *b;
	size_t n;
	const struct k2mc_span *sp;
	const void *base; /* what sp's offsets count from: the value or the key */
	char num[12];
};

/* Resolves part p for rec: 0, or the reason it cannot be filled (with
 * *field naming what was missing). */
static int part_src(const struct k2mc_mapping *map, const struct part *p,
		    const struct k2mc_record *rec, struct jstate *js, struct src *s,
		    const char **field)
{
	s->sp = NULL;
	switch (p->kind) {
	case P_LIT:
		s->b = p->text;
		s->n = p->len;
		return 0;
	case P_KEY:
		if (rec->key == NULL || rec->key_len == 0) {
			*field = p->field;
			return K2MC_KEY_MISSING;
		}
		s->b = rec->key;
		s->n = rec->key_len;
		return 0;
	case P_VALUE:
		if (rec->value == NULL) {
			*field = p->field;
			return K2MC_MAP_MISSING_FIELD;
		}
		s->b = rec->value;
		s->n = rec->value_len;
		if (!map->value_doc)
			return 0;
		/* the document: an envelope's payload, a change event's row */
		*field = p->field;
		if (!json_ready(map, rec, js))
			return js->status == JS_NOT_CDC ? K2MC_MAP_NOT_CDC : K2MC_MAP_NOT_JSON;
		if (js->doc.kind == SPAN_ABSENT)
			return K2MC_MAP_MISSING_FIELD;
		*field = NULL;
		s->sp = &js->doc;
		s->base = rec->value;
		s->b = (const unsigned char *)rec->value + js->doc.off;
		s->n = js->doc.len;
		return 0;
	case P_TOPIC:
		s->b = rec->topic;
		s->n = strlen(rec->topic);
		return 0;
	case P_PARTITION:
		s->n = (size_t)snprintf(s->num, sizeof(s->num), "%d", (int)rec->partition);
		s->b = s->num;
		return 0;
	case P_HEADER:
		if (!header(rec, p->text, &s->b, &s->n)) {
			*field = p->field;
			return K2MC_MAP_MISSING_FIELD;
		}
		return 0;
	case P_JSON:
		*field = p->field;
		if (rec->value == NULL)
			return K2MC_MAP_MISSING_FIELD;
		if (!json_ready(map, rec, js))
			return js->status == JS_NOT_CDC ? K2MC_MAP_NOT_CDC : K2MC_MAP_NOT_JSON;
		s->sp = &js->spans[p->ptr];
		if (s->sp->kind == SPAN_ABSENT)
			return K2MC_MAP_MISSING_FIELD;
		*field = NULL;
		s->base = rec->value;
		s->b = (const unsigned char *)rec->value + s->sp->off;
		s->n = s->sp->len; /* an upper bound when decoded or compacted */
		return 0;
	case P_KEYJSON:
		*field = p->field;
		if (rec->key == NULL || rec->key_len == 0)
			return K2MC_KEY_MISSING;
		if (!key_json_ready(map, rec, js))
			return K2MC_MAP_NOT_JSON;
		s->sp = &js->kspans[p->ptr];
		if (s->sp->kind == SPAN_ABSENT)
			return K2MC_MAP_MISSING_FIELD;
		*field = NULL;
		s->base = rec->key;
		s->b = (const unsigned char *)rec->key + s->sp->off;
		s->n = s->sp->len;
		return 0;
	}
	return K2MC_MAP_MISSING_FIELD;
}

static int eval(const struct k2mc_mapping *map, const struct tmpl *t,
		const struct k2mc_record *rec, struct jstate *js, struct sink *k,
		const char **field)
{
	for (int i = 0; i < t->n; i++) {
		struct src s;
		int r = part_src(map, &t->parts[i], rec, js, &s, field);

		if (r != 0)
			return r;
		if (s.sp != NULL)
			put_span(k, s.base, s.sp);
		else
			put(k, s.b, s.n);
	}
	return 0;
}

static int key_byte_bad(unsigned char c)
{
	return c <= 0x20 || c == 0x7f;
}

/* prefix + key template output into key (K2MC_MC_KEY_MAX bytes). For a
 * hashable reason key holds prefix + the hex digest instead (*hashed), or
 * nothing (*key_len 0) when the prefix leaves no room. */
static int map_key(const struct k2mc_mapping *map, const struct k2mc_record *rec,
		   struct jstate *js, char *key, size_t *key_len, size_t *produced,
		   const char **field, int *hashed)
{
	static const char hex[] = "0123456789abcdef";
	size_t plen = map->cfg->key_prefix_len;
	XXH3_state_t st;
	XXH128_canonical_t c;
	XXH128_hash_t h;
	int r;

	*hashed = 0;
	*key_len = 0;
	if (plen > 0)
		memcpy(key, map->cfg->key_prefix, plen);
	if (map->key_plain) {
		const unsigned char *kb = rec->key;
		size_t kn = rec->key_len;

		*produced = kn;
		if (kb == NULL || kn == 0) {
			*field = map->key.parts[0].field;
			return K2MC_KEY_MISSING;
		}
		if (plen + kn > K2MC_MC_KEY_MAX) {
			r = K2MC_KEY_TOO_LONG;
			h = XXH3_128bits(kb, kn);
			goto hash;
		}
		for (size_t i = 0; i < kn; i++) {
			if (key_byte_bad(kb[i])) {
				r = K2MC_KEY_BAD_BYTES;
				h = XXH3_128bits(kb, kn);
				goto hash;
			}
		}
		memcpy(key + plen, kb, kn);
		*key_len = plen + kn;
		return K2MC_MAP_OK;
	} else {
		struct sink k = { key + plen, K2MC_MC_KEY_MAX - plen, 0, 0, NULL, &st };
		const unsigned char *o = (const unsigned char *)key + plen;

		r = eval(map, &map->key, rec, js, &k, field);
		*produced = k.total;
		if (r != 0)
			return r;
		if (k.total == 0) {
			*field = NULL;
			return K2MC_KEY_MISSING;
		}
		if (k.h != NULL) {
			r = K2MC_KEY_TOO_LONG;
			h = XXH3_128bits_digest(k.h);
			goto hash;
		}
		for (size_t i = 0; i < k.len; i++) {
			if (key_byte_bad(o[i])) {
				r = K2MC_KEY_BAD_BYTES;
				h = XXH3_128bits(o, k.len);
				goto hash;
			}
		}
		*key_len = plen + k.len;
		return K2MC_MAP_OK;
	}
hash:
	if (plen > K2MC_MC_KEY_MAX - K2MC_MAP_HASH_HEX)
		return r;
	XXH128_canonicalFromHash(&c, h);
	for (size_t i = 0; i < sizeof(c.digest); i++) {
		key[plen + 2 * i] = hex[c.digest[i] >> 4];
		key[plen + 2 * i + 1] = hex[c.digest[i] & 15];
	}
	*key_len = plen + K2MC_MAP_HASH_HEX;
	*hashed = 1;
	return r;
}

/* Decimal digits only, no sign or space, at most max. */
static int parse_dec(const void *v, size_t n, uint64_t max, uint64_t *out)
{
	const unsigned char *s = v;
	uint64_t x = 0;

	if (n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return -1;
		x = x * 10 + (uint64_t)(s[i] - '0');
		if (x > max)
			return -1;
	}
	*out = x;
	return 0;
}

static int map_ttl(const struct k2mc_mapping *map, const struct k2mc_record *rec, int64_t now_ms,
		   struct k2mc_mapped *out)
{
	const struct k2mc_config *c = map->cfg;
	uint64_t ttl = c->ttl;
	int64_t base, exp, rem;

	if (c->ttl_header != NULL) {
		const void *v;
		size_t n;

		if (header(rec, c->ttl_header, &v, &n) && parse_dec(v, n, INT32_MAX, &ttl) != 0) {
			out->field = map->ttl_field;
			out->bad = v;
			out->bad_len = n;
			return K2MC_MAP_BAD_TTL;
		}
	}
	out->exptime = 0;
	if (ttl == 0)
		return 0;
	if (!c->ttl_from_timestamp) {
		/* memcached's rule: over 30 days is a unix time; one that has
		 * passed would store the item already expired */
		if (ttl > K2MC_TTL_RELATIVE_MAX && (int64_t)ttl * 1000 <= now_ms)
			out->expired = 1;
		else
			out->exptime = (uint32_t)ttl;
		return 0;
	}
	/* a duration from the record's timestamp: sent relative while it is
	 * within 30 days (no clock shared with the server needed), as a unix
	 * time beyond (memcached's exptime is a signed 32-bit time: at most
	 * 2038-01-19) */
	base = rec->timestamp_ms >= 0 ? rec->timestamp_ms : now_ms;
	exp = base + (int64_t)ttl * 1000;
	rem = exp - now_ms;
	if (rem <= 0)
		out->expired = 1;
	else if (rem <= (int64_t)K2MC_TTL_RELATIVE_MAX * 1000)
		out->exptime = (uint32_t)((rem + 999) / 1000);
	else
		out->exptime = (exp + 999) / 1000 > INT32_MAX ? INT32_MAX
							       : (uint32_t)((exp + 999) / 1000);
	return 0;
}

static int map_flags(const struct k2mc_mapping *map, const struct k2mc_record *rec,
		     struct k2mc_mapped *out)
{
	const struct k2mc_config *c = map->cfg;
	const void *v;
	size_t n;
	uint64_t f;

	out->flags = c->flags;
	if (c->flags_header == NULL || !header(rec, c->flags_header, &v, &n))
		return 0;
	if (parse_dec(v, n, UINT32_MAX, &f) != 0) {
		out->field = map->flags_field;
		out->bad = v;
		out->bad_len = n;
		return K2MC_MAP_BAD_FLAGS;
	}
	out->flags = (uint32_t)f;
	return 0;
}

static int map_value(const struct k2mc_mapping *map, const struct k2mc_record *rec,
		     struct jstate *js, struct k2mc_arena *arena, struct k2mc_mapped *out)
{
	const struct tmpl *t = &map->value;
	size_t bound = 0;
	struct sink k;
	struct src s;
	int r;

	if (map->value_plain) {
		out->value = rec->value;
		out->value_len = rec->value_len;
		return 0;
	}
	if (t->n == 0) {
		out->value = "";
		out->value_len = 0;
		return 0;
	}
	if (t->n == 1) {
		r = part_src(map, &t->parts[0], rec, js, &s, &out->field);
		if (r != 0)
			return r;
		if (s.sp == NULL ? t->parts[0].kind != P_PARTITION
				 : (s.sp->kind == SPAN_STR || s.sp->kind == SPAN_COMPACT)) {
			/* the bytes as they are in the record: no copy */
			out->value = s.b;
			out->value_len = s.n;
			return 0;
		}
	}
	for (int i = 0; i < t->n; i++) {
		r = part_src(map, &t->parts[i], rec, js, &s, &out->field);
		if (r != 0)
			return r;
		bound += s.n;
	}
	k = (struct sink){ k2mc_arena_alloc(arena, bound > 0 ? bound : 1), bound, 0, 0, NULL, NULL };
	if (k.buf == NULL)
		return -ENOMEM;
	eval(map, t, rec, js, &k, &out->field);
	out->value = k.buf;
	out->value_len = k.len;
	return 0;
}

int k2mc_mapping_map(const struct k2mc_mapping *map, const struct k2mc_record *rec,
		     const struct k2mc_prepared *pre, int64_t now_ms, struct k2mc_arena *arena,
		     struct k2mc_mapped *out)
{
	const struct k2mc_config *c = map->cfg;
	struct jstate js;
	int kr, r;

	jstate_init(&js);
	out->op = K2MC_OP_SET;
	out->expired = 0;
	out->truncate = 0;
	out->in_key = 0;
	out->flags = c->flags;
	out->exptime = 0;
	out->value = NULL;
	out->value_len = 0;
	out->key_hashed = 0;
	out->key_len = 0;
	out->produced_len = 0;
	out->field = NULL;
	out->bad = NULL;
	out->bad_len = 0;
	out->json_at = 0;
	if (rec->value == NULL && c->on_tombstone == K2MC_TOMB_IGNORE) {
		/* nothing is sent, so nothing about the key matters */
		out->op = K2MC_OP_NONE;
		return K2MC_MAP_OK;
	}
	if (pre != NULL) {
		kr = pre->reason;
		memcpy(out->key, pre->key, pre->key_len);
		out->key_len = pre->key_len;
		out->key_hashed = k2mc_map_hashable(kr) && pre->key_len > 0;
		out->produced_len = pre->produced_len;
		out->field = pre->field;
		out->in_key = pre->in_key;
		js.err_at = pre->json_at;
		if (pre->json != 0) {
			js.status = pre->json;
			js.err_at = pre->json_at;
			js.spans = pre->spans;
		}
	} else {
		kr = map_key(map, rec, &js, out->key, &out->key_len, &out->produced_len,
			     &out->field, &out->key_hashed);
		if (kr == K2MC_MAP_NOT_JSON && js.kstatus == JS_NOT_JSON) {
			out->in_key = 1;
			js.err_at = js.kerr_at;
		}
	}
	if (kr == K2MC_MAP_NOT_JSON)
		out->json_at = js.err_at;
	if (rec->value == NULL) {
		out->op = c->on_tombstone == K2MC_TOMB_INVALIDATE ? K2MC_OP_INVALIDATE
								  : K2MC_OP_DELETE;
		return kr;
	}
	if (c->cdc != K2MC_CDC_NONE) {
		/* the event's op decides, before the key's reason: a truncate
		 * has no key, and is no invalid record */
		int ok = json_ready(map, rec, &js);

		if (ok && js.op == 't') {
			out->op = K2MC_OP_NONE;
			out->truncate = 1;
			return K2MC_MAP_OK;
		}
		if (kr != K2MC_MAP_OK && !k2mc_map_hashable(kr))
			return kr;
		out->field = NULL;
		out->in_key = 0;
		if (!ok) {
			out->json_at = js.err_at;
			return js.status == JS_NOT_CDC ? K2MC_MAP_NOT_CDC : K2MC_MAP_NOT_JSON;
		}
		if (js.op == 'd' || c->cdc == K2MC_CDC_DEBEZIUM_INVALIDATE) {
			out->op = K2MC_OP_DELETE;
			return kr;
		}
	}
	if (kr != K2MC_MAP_OK && !k2mc_map_hashable(kr))
		return kr;
	r = map_ttl(map, rec, now_ms, out);
	if (r != 0)
		return r;
	if (out->expired) {
		out->op = K2MC_OP_DELETE;
		return kr;
	}
	r = map_flags(map, rec, out);
	if (r != 0)
		return r;
	r = map_value(map, rec, &js, arena, out);
	if (r == K2MC_MAP_NOT_JSON)
		out->json_at = js.err_at;
	return r != 0 ? r : kr;
}

struct k2mc_prepared *k2mc_mapping_prepare(const struct k2mc_mapping *map,
					   rd_kafka_message_t *m, const struct k2mc_record *r,
					   uint64_t *route)
{
	struct k2mc_prepared *p = malloc(k2mc_prepared_bytes(map));
	const struct k2mc_record rec = *r;
	struct jstate js;
	size_t klen = 0;
	int hashed;

	if (p == NULL)
		return NULL;
	p->m = m;
	p->json = 0;
	p->in_key = 0;
	p->json_at = 0;
	p->field = NULL;
	p->produced_len = 0;
	jstate_init(&js);
	if (rec.value == NULL && map->cfg->on_tombstone == K2MC_TOMB_IGNORE) {
		/* written nowhere: any writer will do */
		p->reason = K2MC_MAP_OK;
		p->key_len = 0;
		*route = UINT64_MAX;
		return p;
	}
	if (map->key.reads_json && rec.value != NULL && !map->value_doc) {
		/* one pass finds the value template's pointers too (a document
		 * the writer reads again: it needs the op and the row too) */
		js.status = k2mc_mapping_scan_json(map, rec.value, rec.value_len, p->spans,
						   &js.err_at) == 0 ? 1 : 2;
		js.spans = p->spans;
		p->json = (uint8_t)js.status;
		p->json_at = js.err_at;
	}
	p->reason = (uint8_t)map_key(map, &rec, &js, p->key, &klen, &p->produced_len, &p->field,
				     &hashed);
	p->key_len = (uint8_t)klen;
	if (p->reason == K2MC_MAP_NOT_JSON && js.kstatus == JS_NOT_JSON) {
		p->in_key = 1;
		p->json_at = js.kerr_at;
	} else if (p->reason == K2MC_MAP_NOT_JSON && js.status == JS_NOT_JSON) {
		p->json_at = js.err_at;
	}
	*route = klen > 0 ? XXH3_64bits(p->key, klen) : UINT64_MAX;
	return p;
}

struct k2mc_prepared *k2mc_mapping_prepare_refused(const struct k2mc_mapping *map,
						   rd_kafka_message_t *m, int r, int in_key,
						   uint64_t *route)
{
	struct k2mc_prepared *p = malloc(k2mc_prepared_bytes(map));

	if (p == NULL)
		return NULL;
	p->m = m;
	p->reason = (uint8_t)r;
	p->key_len = 0;
	p->json = 0;
	p->in_key = (uint8_t)in_key;
	p->json_at = 0;
	p->produced_len = 0;
	p->field = NULL;
	*route = UINT64_MAX;
	return p;
}

void k2mc_prepared_free(struct k2mc_prepared *p)
{
	free(p);
}

size_t k2mc_prepared_bytes(const struct k2mc_mapping *map)
{
	return sizeof(struct k2mc_prepared) + (size_t)map->val.npointers * sizeof(struct k2mc_span);
}

/* Header bytes for a log line: printable ASCII as is, the rest \xHH, at
 * most 40 bytes shown. */
static void show(char *buf, size_t len, const void *v, size_t n)
{
	const unsigned char *s = v;
	size_t o = 0;

	for (size_t i = 0; i < n && i < 40 && o + 5 < len; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'')
			buf[o++] = (char)s[i];
		else
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", s[i]);
	}
	if (n > 40 && o + 4 < len) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
}

void k2mc_mapping_explain(const struct k2mc_mapping *map, const struct k2mc_record *rec,
			  const struct k2mc_mapped *out, enum k2mc_map_reason r, char *buf,
			  size_t len)
{
	size_t plen = map->cfg->key_prefix_len;
	char b[200];

	switch (r) {
	case K2MC_KEY_MISSING:
		if (out->field != NULL)
			snprintf(buf, len, "%s record key", rec->key == NULL ? "null" : "empty");
		else
			snprintf(buf, len, "the --key template made an empty key");
		break;
	case K2MC_KEY_TOO_LONG:
		snprintf(buf, len, "key of %zu bytes, %zu with the prefix, over memcached's %d",
			 out->produced_len, out->produced_len + plen, K2MC_MC_KEY_MAX);
		break;
	case K2MC_KEY_BAD_BYTES:
		snprintf(buf, len, "key with a space or control byte");
		break;
	case K2MC_MAP_MISSING_FIELD:
		if (rec->value == NULL)
			snprintf(buf, len, "a tombstone has no value for %s",
				 out->field ? out->field : "the template");
		else
			snprintf(buf, len, "no %s", out->field ? out->field : "such field");
		break;
	case K2MC_MAP_NOT_JSON:
		snprintf(buf, len, "the %s (%zu bytes) is not JSON: error at byte %zu",
			 out->in_key ? "record key" : "value",
			 out->in_key ? rec->key_len : rec->value_len, out->json_at);
		break;
	case K2MC_MAP_NOT_AVRO:
	case K2MC_MAP_SCHEMA_UNAVAILABLE:
	case K2MC_MAP_AVRO_DECODE: {
		const unsigned char *d = out->in_key ? rec->key : rec->value;
		size_t n = out->in_key ? rec->key_len : rec->value_len;
		const char *what = out->in_key ? "record key" : "value";

		if (r == K2MC_MAP_NOT_AVRO || d == NULL || n < 5)
			snprintf(buf, len, "the %s (%zu bytes) is not Avro in the Confluent wire "
				 "format (magic byte 0, then a 4-byte schema id)", what, n);
		else
			snprintf(buf, len, "the %s (%zu bytes, schema id %lu): %s", what, n,
				 (unsigned long)d[1] << 24 | (unsigned long)d[2] << 16 |
					 (unsigned long)d[3] << 8 | d[4],
				 r == K2MC_MAP_AVRO_DECODE
					 ? "its bytes are not a datum of that schema"
					 : "the registry has no usable Avro schema of that id");
		break;
	}
	case K2MC_MAP_NOT_CDC:
		snprintf(buf, len, "the value is not a Debezium change event (op c, r, u, d or t; "
			 "an after object for c, r, u)");
		break;
	case K2MC_MAP_BAD_TTL:
		show(b, sizeof(b), out->bad, out->bad_len);
		snprintf(buf, len, "%s is '%s', not decimal seconds 0..%d", out->field, b,
			 INT32_MAX);
		break;
	case K2MC_MAP_BAD_FLAGS:
		show(b, sizeof(b), out->bad, out->bad_len);
		snprintf(buf, len, "%s is '%s', not decimal 0..%u", out->field, b, UINT32_MAX);
		break;
	default:
		snprintf(buf, len, "%s", k2mc_map_reason_name(r));
		break;
	}
}
