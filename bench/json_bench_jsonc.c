/* json-bench's json-c engine (see json_bench_libs.c for why it is apart):
 * a reused tokener, json_pointer_get, the plain (compact) serializer. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/config.h"

void *jsonc_tokener(void);
void jsonc_tokener_free(void *tok);
void jsonc_map(void *tok, const char *v, size_t len, char *key, size_t *klen, const char **value,
	       void **root);
void jsonc_put(void *root);

void *jsonc_tokener(void)
{
	return json_tokener_new();
}

void jsonc_tokener_free(void *tok)
{
	json_tokener_free(tok);
}

void jsonc_map(void *tok, const char *v, size_t len, char *key, size_t *klen, const char **value,
	       void **root)
{
	struct json_object *r, *id, *prof;

	json_tokener_reset(tok);
	r = json_tokener_parse_ex(tok, v, (int)len);
	if (r == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    json_pointer_get(r, "/id", &id) != 0 || json_pointer_get(r, "/profile", &prof) != 0)
		abort();
	*klen = (size_t)snprintf(key, K2MC_MC_KEY_MAX, "user:%s", json_object_get_string(id));
	*value = json_object_to_json_string_ext(prof, JSON_C_TO_STRING_PLAIN |
						      JSON_C_TO_STRING_NOSLASHESCAPE);
	*root = r;
}

void jsonc_put(void *root)
{
	json_object_put(root);
}
