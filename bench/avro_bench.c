/* avro-bench: what decoding an Avro value costs (avro.h), per record, next to
 * what a JSON value of the same content costs the {json:} extractor
 * (mapping.h), for a row-sized record (about 100 bytes of Avro). Records are
 * encoded beforehand by libavro with distinct ids and names; one thread; CPU
 * time of the process; the best of ROUNDS passes. Prints one JSON object per
 * line. Not a test: it checks only that every record decodes. The schema is
 * compiled from its text (k2mc_avro_schema_parse): the registry's cost is
 * once per schema id, not per record. */
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
#define ROUNDS 7
#define PASSES 50

static const char SCHEMA[] =
    "{\"type\":\"record\",\"name\":\"Value\",\"namespace\":\"db.public.users\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"int\"},"
    "{\"name\":\"name\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"email\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"country\",\"type\":\"string\"},"
    "{\"name\":\"balance\",\"type\":[\"null\",{\"type\":\"bytes\",\"logicalType\":\"decimal\","
    "\"precision\":12,\"scale\":2}]},"
    "{\"name\":\"active\",\"type\":\"boolean\"},"
    "{\"name\":\"created\",\"type\":{\"type\":\"long\",\"connect.name\":"
    "\"io.debezium.time.MicroTimestamp\"}},"
    "{\"name\":\"updated\",\"type\":[\"null\",\"long\"]}]}";

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct buf {
	char *p[NREC];
	size_t n[NREC];
	size_t total;
};

static void set_branch(avro_value_t *rec, const char *name, int b, avro_value_t *out)
{
	avro_value_t f;
	avro_value_get_by_name(rec, name, &f, NULL);
	avro_value_set_branch(&f, b, out);
}

static void encode(struct buf *avro, struct buf *json)
{
	avro_schema_t s;
	if (avro_schema_from_json_length(SCHEMA, strlen(SCHEMA), &s)) {
		fprintf(stderr, "%s\n", avro_strerror());
		exit(1);
	}
	avro_value_iface_t *iface = avro_generic_class_from_schema(s);
	avro_value_t v, f;
	avro_generic_value_new(iface, &v);
	for (int i = 0; i < NREC; i++) {
		char name[64], email[64];
		snprintf(name, sizeof(name), "Firstname Lastname-%d", i);
		snprintf(email, sizeof(email), "firstname.lastname%d@example-company.com", i);
		avro_value_get_by_name(&v, "id", &f, NULL);
		avro_value_set_int(&f, 100000 + i);
		set_branch(&v, "name", 1, &f);
		avro_value_set_string(&f, name);
		set_branch(&v, "email", 1, &f);
		avro_value_set_string(&f, email);
		avro_value_get_by_name(&v, "country", &f, NULL);
		avro_value_set_string(&f, "NL");
		set_branch(&v, "balance", 1, &f);
		char bal[3] = {(char)(i >> 8), (char)i, 0x39};
		avro_value_set_bytes(&f, bal, 3);
		avro_value_get_by_name(&v, "active", &f, NULL);
		avro_value_set_boolean(&f, i & 1);
		avro_value_get_by_name(&v, "created", &f, NULL);
		avro_value_set_long(&f, 1796083200123456LL + i);
		set_branch(&v, "updated", 1, &f);
		avro_value_set_long(&f, 1796083300123456LL + i);
		char tmp[512];
		avro_writer_t w = avro_writer_memory(tmp + 5, sizeof(tmp) - 5);
		avro_value_write(w, &v);
		size_t n = (size_t)avro_writer_tell(w) + 5;
		avro_writer_free(w);
		memset(tmp, 0, 5);
		avro->p[i] = malloc(n);
		memcpy(avro->p[i], tmp, n);
		avro->n[i] = n;
		avro->total += n;
		(void)json;
	}
	avro_value_decref(&v);
	avro_value_iface_decref(iface);
	avro_schema_decref(s);
}

int main(void)
{
	static struct buf avro, json;
	char err[256];
	encode(&avro, &json);
	struct k2mc_avro_schema *s =
	    k2mc_avro_schema_parse(SCHEMA, strlen(SCHEMA), err, sizeof(err));
	struct k2mc_avro_ctx *ctx = k2mc_avro_ctx_new(NULL);
	if (!s || !ctx) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* the JSON values: the decoder's own output, so both hold the same content */
	for (int i = 0; i < NREC; i++) {
		const char *j;
		size_t jl;
		if (k2mc_avro_decode_with(ctx, s, avro.p[i] + 5, avro.n[i] - 5, &j, &jl)) {
			fprintf(stderr, "record %d: %s\n", i, k2mc_avro_explain(ctx));
			return 1;
		}
		json.p[i] = malloc(jl);
		memcpy(json.p[i], j, jl);
		json.n[i] = jl;
		json.total += jl;
	}
	static struct k2mc_config cfg;
	cfg.key_template = "{json:/id}";
	cfg.value_template = "{json:/email}";
	cfg.key_prefix = "";
	struct k2mc_mapping *map = k2mc_mapping_new(&cfg, err, sizeof(err));
	if (!map) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	double best[3] = {1e9, 1e9, 1e9};
	volatile size_t sink = 0;
	for (int r = 0; r < ROUNDS; r++) {
		for (int kind = 0; kind < 3; kind++) {
			double t0 = cpu_s();
			for (int p = 0; p < PASSES; p++)
				for (int i = 0; i < NREC; i++) {
					const char *j = json.p[i];
					size_t jl = json.n[i], at;
					struct k2mc_span sp[2];
					if (kind != 1 &&
					    k2mc_avro_decode_with(ctx, s, avro.p[i] + 5,
					                          avro.n[i] - 5, &j, &jl))
						return 1;
					if (kind != 0 &&
					    k2mc_mapping_scan_json(map, j, jl, sp, &at))
						return 1;
					sink += jl;
				}
			double ns = (cpu_s() - t0) * 1e9 / (PASSES * NREC);
			if (ns < best[kind])
				best[kind] = ns;
		}
	}
	printf("{\"bench\":\"avro\",\"avro_bytes\":%.1f,\"json_bytes\":%.1f,"
	       "\"avro_to_json_ns\":%.1f,\"json_scan_ns\":%.1f,\"avro_then_scan_ns\":%.1f}\n",
	       (double)avro.total / NREC, (double)json.total / NREC, best[0], best[1], best[2]);
	k2mc_mapping_free(map);
	k2mc_avro_ctx_free(ctx);
	k2mc_avro_schema_free(s);
	return 0;
}
