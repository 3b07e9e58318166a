/* libFuzzer target over the Avro decoder (workers/avro.h), without a
 * registry: the first input byte picks one of the fixed schemas below (every
 * Avro type, Debezium's envelope with its decimals and connect.* attributes,
 * a recursive record), the rest is decoded as a datum of it. The bytes live
 * in a heap block of their exact size, so ASan sees a read one byte past
 * them. Checks the contract the mapping relies on: whatever decodes is JSON
 * that mapping.c's scanner accepts (RFC 8259, UTF-8), and a failure says why.
 * Run by `make fuzz`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "workers/avro.h"
#include "workers/mapping.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const SCHEMAS[] = {
    /* every type */
    "{\"type\":\"record\",\"name\":\"All\",\"fields\":["
    "{\"name\":\"n\",\"type\":\"null\"},{\"name\":\"b\",\"type\":\"boolean\"},"
    "{\"name\":\"i\",\"type\":\"int\"},{\"name\":\"l\",\"type\":\"long\"},"
    "{\"name\":\"f\",\"type\":\"float\"},{\"name\":\"d\",\"type\":\"double\"},"
    "{\"name\":\"s\",\"type\":\"string\"},{\"name\":\"y\",\"type\":\"bytes\"},"
    "{\"name\":\"u\",\"type\":[\"null\",\"string\",\"long\"]},"
    "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\",\"C\"]}},"
    "{\"name\":\"x\",\"type\":{\"type\":\"fixed\",\"name\":\"X\",\"size\":3}},"
    "{\"name\":\"a\",\"type\":{\"type\":\"array\",\"items\":[\"null\",\"int\"]}},"
    "{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":\"string\"}}]}",
    /* Debezium's envelope, decimals of three kinds */
    "{\"type\":\"record\",\"name\":\"Envelope\",\"fields\":["
    "{\"name\":\"before\",\"type\":[\"null\",{\"type\":\"record\",\"name\":\"Value\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"int\"},"
    "{\"name\":\"price\",\"type\":[\"null\",{\"type\":\"bytes\",\"scale\":2,\"precision\":10,"
    "\"connect.parameters\":{\"scale\":\"2\"},\"connect.name\":"
    "\"org.apache.kafka.connect.data.Decimal\",\"logicalType\":\"decimal\"}]},"
    "{\"name\":\"v\",\"type\":{\"type\":\"record\",\"name\":\"VariableScaleDecimal\","
    "\"fields\":[{\"name\":\"scale\",\"type\":\"int\"},{\"name\":\"value\",\"type\":\"bytes\"}],"
    "\"connect.name\":\"io.debezium.data.VariableScaleDecimal\"}},"
    "{\"name\":\"fx\",\"type\":{\"type\":\"fixed\",\"name\":\"F\",\"size\":2,"
    "\"logicalType\":\"decimal\",\"precision\":4,\"scale\":6}},"
    "{\"name\":\"ts\",\"type\":{\"type\":\"long\",\"connect.name\":"
    "\"io.debezium.time.MicroTimestamp\"}}]}]},"
    "{\"name\":\"after\",\"type\":[\"null\",\"Value\"]},"
    "{\"name\":\"op\",\"type\":\"string\"},{\"name\":\"ts_ms\",\"type\":[\"null\",\"long\"]}]}",
    /* recursive, and items that read no bytes */
    "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"next\",\"type\":[\"null\",\"L\"]},"
    "{\"name\":\"z\",\"type\":{\"type\":\"array\",\"items\":\"null\"}}]}",
    /* a bare map of arrays */
    ("{\"type\":\"map\",\"values\":"
     "{\"type\":\"array\",\"items\":\"double\"}}"),
};
#define NSCHEMAS (sizeof(SCHEMAS) / sizeof(SCHEMAS[0]))

static struct k2mc_avro_schema *schemas[NSCHEMAS];
static struct k2mc_avro *av;
static struct k2mc_avro_ctx *ctx;
static struct k2mc_mapping *map;

static void setup(void)
{
	static struct k2mc_config cfg;
	char err[256];
	for (size_t i = 0; i < NSCHEMAS; i++) {
		schemas[i] =
		    k2mc_avro_schema_parse(SCHEMAS[i], strlen(SCHEMAS[i]), err, sizeof(err));
		if (!schemas[i]) {
			fprintf(stderr, "schema %zu: %s\n", i, err);
			abort();
		}
	}
	/* no request is ever made: decode_with takes the schema given; the
	 * handle only carries max.decoded.bytes, kept small so that a block of
	 * 2^62 nulls costs the fuzzer 64 KiB, not the default 16 MiB */
	av = k2mc_avro_new("http://127.0.0.1:9", err, sizeof(err));
	if (!av || k2mc_avro_set(av, "max.decoded.bytes", "65536", err, sizeof(err)) != 0)
		abort();
	ctx = k2mc_avro_ctx_new(av);
	cfg.key_template = "{key}";
	cfg.value_template = "{json:/after/id}";
	cfg.key_prefix = "";
	map = k2mc_mapping_new(&cfg, err, sizeof(err));
	if (!ctx || !map)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ctx)
		setup();
	if (size < 1)
		return 0;
	const struct k2mc_avro_schema *s = schemas[data[0] % NSCHEMAS];
	uint8_t *b = malloc(size - 1 ? size - 1 : 1);
	if (!b)
		abort();
	memcpy(b, data + 1, size - 1);
	const char *json;
	size_t len;
	enum k2mc_avro_result r = k2mc_avro_decode_with(ctx, s, b, size - 1, &json, &len);
	if (r == K2MC_AVRO_OK) {
		struct k2mc_span span;
		size_t at = 0;
		if (k2mc_mapping_scan_json(map, json, len, &span, &at) != 0) {
			fprintf(stderr, "decoded output is not JSON at byte %zu: %.*s\n", at,
			        (int)len, json);
			abort();
		}
	} else if (r != K2MC_AVRO_DECODE || !k2mc_avro_explain(ctx)[0]) {
		abort();
	}
	free(b);
	return 0;
}
