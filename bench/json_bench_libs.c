/* json-bench's jansson engine (json-c's is json_bench_jsonc.c: the two
 * cannot share a translation unit, both define json_object_get). It does
 * what k2mc's templates "user:{json:/id}" and "{json:/profile}" do: parse
 * the value, take the string at /id and the compact text of /profile. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/config.h"

void jansson_map(const char *v, size_t len, char *key, size_t *klen, char **value);

void jansson_map(const char *v, size_t len, char *key, size_t *klen, char **value)
{
	json_error_t e;
	json_t *root = json_loadb(v, len, 0, &e), *id, *prof;

	if (root == NULL || (id = json_object_get(root, "id")) == NULL ||
	    (prof = json_object_get(root, "profile")) == NULL || !json_is_string(id))
		abort();
	*klen = (size_t)snprintf(key, K2MC_MC_KEY_MAX, "user:%s", json_string_value(id));
	*value = json_dumps(prof, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
	json_decref(root);
}
