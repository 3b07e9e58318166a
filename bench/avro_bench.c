/* avro-bench: what reading a record costs per format (--value-format raw,
 * json, avro; decode.h and mapping.h), CPU per record of the mapping as the
 * writer runs it (k2mc_mapping_map), for a row-sized record (about 100 bytes
 * of Avro, 200 of JSON) and for the same row as a Debezium change event
 * (--cdc debezium). Records are encoded beforehand by libavro with distinct
 * ids and names; the JSON records are the decoder's own output, so both hold
 * the same content. One thread; CPU time of the process; the best of ROUNDS
 * passes. Prints one JSON object per case. Not a test: it checks only that
 * every record maps. The schema is compiled from its text
 * (k2mc_avro_schema_parse): the registry's cost is once per schema id, not
 * per record. */
#include <avro.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "workers/avro.h"
#include "workers/mapping.h"

#define NREC   4096
#define ROUNDS 5
#define PASSES 25

#define VALUE_SCHEMA \
    "{\"type\":\"record\",\"name\":\"Value\",\"namespace\":\"db.public.users\",\"fields\":[" \
    "{\"name\":\"id\",\"type\":\"int\"}," \
    "{\"name\":\"name\",\"type\":[\"null\",\"string\"]}," \
    "{\"name\":\"email\",\"type\":[\"null\",\"string\"]}," \
    "{\"name\":\"country\",\"type\":\"string\"}," \
    "{\"name\":\"balance\",\"type\":[\"null\",{\"type\":\"bytes\",\"logicalType\":\"decimal\"," \
    "\"precision\":12,\"scale\":2}]}," \
    "{\"name\":\"active\",\"type\":\"boolean\"}," \
    "{\"name\":\"created\",\"type\":{\"type\":\"long\",\"connect.name\":" \
    "\"io.debezium.time.MicroTimestamp\"}}," \
    "{\"name\":\"updated\",\"type\":[\"null\",\"long\"]}]}"
static const char SCHEMA[] = VALUE_SCHEMA;
/* Debezium's envelope around it (source left out: the mapping skips it) */
static const char ENVELOPE[] =
    "{\"type\":\"record\",\"name\":\"Envelope\",\"namespace\":\"db.public.users\",\"fields\":["
    "{\"name\":\"before\",\"type\":[\"null\"," VALUE_SCHEMA "]},"
    "{\"name\":\"after\",\"type\":[\"null\",\"Value\"]},"
    "{\"name\":\"op\",\"type\":\"string\"},"
    "{\"name\":\"ts_ms\",\"type\":[\"null\",\"long\"]}]}";

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_branch(avro_value_t *rec, const char *name, int b, avro_value_t *out)
{
	avro_value_t f;
	avro_value_get_by_name(rec, name, &f, NULL);
	avro_value_set_branch(&f, b, out);
}

/* Record i's row into v (a Value record). */
static void fill_row(avro_value_t *v, int i)
{
	avro_value_t f;
	char name[64], email[64], bal[3] = {(char)(i >> 8), (char)i, 0x39};

	snprintf(name, sizeof(name), "Firstname Lastname-%d", i);
	snprintf(email, sizeof(email), "firstname.lastname%d@example-company.com", i);
	avro_value_get_by_name(v, "id", &f, NULL);
	avro_value_set_int(&f, 100000 + i);
	set_branch(v, "name", 1, &f);
	avro_value_set_string(&f, name);
	set_branch(v, "email", 1, &f);
	avro_value_set_string(&f, email);
	avro_value_get_by_name(v, "country", &f, NULL);
	avro_value_set_string(&f, "NL");
	set_branch(v, "balance", 1, &f);
	avro_value_set_bytes(&f, bal, 3);
	avro_value_get_by_name(v, "active", &f, NULL);
	avro_value_set_boolean(&f, i & 1);
	avro_value_get_by_name(v, "created", &f, NULL);
	avro_value_set_long(&f, 1796083200123456LL + i);
	set_branch(v, "updated", 1, &f);
	avro_value_set_long(&f, 1796083300123456LL + i);
}

struct buf {
	char *p[NREC];
	size_t n[NREC];
	size_t total;
};

/* NREC records of schema (a row, or an update event of that row) in the
 * wire format */
static void encode(const char *schema, int event, struct buf *avro)
{
	avro_schema_t s;
	if (avro_schema_from_json_length(schema, strlen(schema), &s)) {
		fprintf(stderr, "%s\n", avro_strerror());
		exit(1);
	}
	avro_value_iface_t *iface = avro_generic_class_from_schema(s);
	avro_value_t v, f;
	avro_generic_value_new(iface, &v);
	for (int i = 0; i < NREC; i++) {
		if (event) {
			set_branch(&v, "before", 0, &f);
			avro_value_set_null(&f);
			set_branch(&v, "after", 1, &f);
			fill_row(&f, i);
			avro_value_get_by_name(&v, "op", &f, NULL);
			avro_value_set_string(&f, "u");
			set_branch(&v, "ts_ms", 1, &f);
			avro_value_set_long(&f, 1796083200123LL + i);
		} else {
			fill_row(&v, i);
		}
		char tmp[1024];
		avro_writer_t w = avro_writer_memory(tmp + 5, sizeof(tmp) - 5);
		avro_value_write(w, &v);
		size_t n = (size_t)avro_writer_tell(w) + 5;
		avro_writer_free(w);
		memset(tmp, 0, 5);
		avro->p[i] = malloc(n);
		memcpy(avro->p[i], tmp, n);
		avro->n[i] = n;
		avro->total += n;
	}
	avro_value_decref(&v);
	avro_value_iface_decref(iface);
	avro_schema_decref(s);
}

/* The JSON text of each record, as the decoder gives it. */
static void to_json(struct k2mc_avro_ctx *ctx, const struct k2mc_avro_schema *s,
                    const struct buf *avro, struct buf *json)
{
	for (int i = 0; i < NREC; i++) {
		const char *j;
		size_t jl;
		if (k2mc_avro_decode_with(ctx, s, avro->p[i] + 5, avro->n[i] - 5, &j, &jl)) {
			fprintf(stderr, "record %d: %s\n", i, k2mc_avro_explain(ctx));
			exit(1);
		}
		json->p[i] = malloc(jl);
		memcpy(json->p[i], j, jl);
		json->n[i] = jl;
		json->total += jl;
	}
}

struct bcase {
	const char *format, *what, *key, *value;
	enum k2mc_format vf;
	enum k2mc_cdc cdc;
	int event; /* the records are change events */
	int avro;  /* decoded first */
};

static const struct bcase CASES[] = {
	{"raw", "{key} {value} (the bytes)", "{key}", "{value}", K2MC_FMT_RAW, K2MC_CDC_NONE, 0, 0},
	{"json", "user:{json:/id} {json:/email}", "user:{json:/id}", "{json:/email}", K2MC_FMT_JSON,
	 K2MC_CDC_NONE, 0, 0},
	{"avro", "user:{json:/id} {json:/email}", "user:{json:/id}", "{json:/email}", K2MC_FMT_AVRO,
	 K2MC_CDC_NONE, 0, 1},
	/* json read as raw: the same pointers, no envelope looked for */
	{"raw", "user:{json:/id} {json:/email}", "user:{json:/id}", "{json:/email}", K2MC_FMT_RAW,
	 K2MC_CDC_NONE, 0, 0},
	{"json", "--cdc debezium, the row", "users:{key}", "{value}", K2MC_FMT_JSON,
	 K2MC_CDC_DEBEZIUM, 1, 0},
	{"avro", "--cdc debezium, the row", "users:{key}", "{value}", K2MC_FMT_AVRO,
	 K2MC_CDC_DEBEZIUM, 1, 1},
};

int main(void)
{
	static struct buf avro[2], json[2];
	char err[256];
	struct k2mc_avro_schema *s[2] = {
	    k2mc_avro_schema_parse(SCHEMA, strlen(SCHEMA), err, sizeof(err)),
	    k2mc_avro_schema_parse(ENVELOPE, strlen(ENVELOPE), err, sizeof(err))};
	struct k2mc_avro_ctx *ctx = k2mc_avro_ctx_new(NULL);
	struct k2mc_arena *arena = k2mc_arena_new();
	if (!s[0] || !s[1] || !ctx || !arena) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	for (int e = 0; e < 2; e++) {
		encode(e ? ENVELOPE : SCHEMA, e, &avro[e]);
		to_json(ctx, s[e], &avro[e], &json[e]);
	}
	for (size_t c = 0; c < sizeof(CASES) / sizeof(CASES[0]); c++) {
		const struct bcase *b = &CASES[c];
		const struct buf *in = b->avro ? &avro[b->event] : &json[b->event];
		static struct k2mc_config cfg;
		double best = 1e9;
		volatile size_t sink = 0;

		memset(&cfg, 0, sizeof(cfg));
		cfg.key_template = b->key;
		cfg.value_template = b->value;
		cfg.key_prefix = "";
		cfg.value_format = b->vf;
		cfg.cdc = b->cdc;
		struct k2mc_mapping *map = k2mc_mapping_new(&cfg, err, sizeof(err));
		if (!map) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		for (int r = 0; r < ROUNDS; r++) {
			double t0 = cpu_s();
			for (int p = 0; p < PASSES; p++) {
				k2mc_arena_reset(arena);
				for (int i = 0; i < NREC; i++) {
					struct k2mc_record rec = {"users", 0, i, -1, "k-12345", 7,
					                          in->p[i], in->n[i], NULL};
					struct k2mc_mapped out;
					const char *j;
					size_t jl;
					/* what the writer does (writer.c): decode into
					 * its context, copy into the batch's arena, map */
					if (b->avro) {
						if (k2mc_avro_decode_with(ctx, s[b->event], in->p[i] + 5,
						                          in->n[i] - 5, &j, &jl))
							return 1;
						char *copy = k2mc_arena_alloc(arena, jl);
						memcpy(copy, j, jl);
						rec.value = copy;
						rec.value_len = jl;
					}
					if (k2mc_mapping_map(map, &rec, NULL, 0, arena, &out) != 0) {
						fprintf(stderr, "%s: record %d does not map\n", b->what, i);
						return 1;
					}
					sink += out.value_len;
				}
			}
			double ns = (cpu_s() - t0) * 1e9 / (PASSES * NREC);
			if (ns < best)
				best = ns;
		}
		printf("{\"bench\":\"formats\",\"format\":\"%s\",\"case\":\"%s\",\"record_bytes\":%.0f,"
		       "\"cpu_ns_per_record\":%.1f,\"records_per_s\":%.0f}\n",
		       b->format, b->what, (double)in->total / NREC, best, 1e9 / best);
		k2mc_mapping_free(map);
	}
	k2mc_arena_free(arena);
	k2mc_avro_ctx_free(ctx);
	k2mc_avro_schema_free(s[0]);
	k2mc_avro_schema_free(s[1]);
	return 0;
}
