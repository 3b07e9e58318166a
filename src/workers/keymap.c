/* Key mapping rules; see keymap.h. The rules follow memcached's protocol.txt:
 * "the key must not include control characters or whitespace" and is at most
 * 250 bytes. */
#include "workers/keymap.h"

#include "core/config.h"

#include <string.h>
#include <xxhash.h>

static const char *const reason_names[K2MC_KEY_NREASONS] = {
	[K2MC_KEY_OK] = "ok",
	[K2MC_KEY_MISSING] = "missing_key",
	[K2MC_KEY_TOO_LONG] = "key_too_long",
	[K2MC_KEY_BAD_BYTES] = "key_bad_bytes",
	[K2MC_VALUE_TOO_LARGE] = "value_too_large",
};

const char *k2mc_keymap_reason_name(enum k2mc_keymap_reason r)
{
	return (unsigned)r < K2MC_KEY_NREASONS ? reason_names[r] : "unknown";
}

enum k2mc_keymap_reason k2mc_keymap_check(const struct k2mc_keymap *km, const void *key,
					  size_t key_len, const void *value, size_t value_len,
					  enum k2mc_keymap_op *op)
{
	const unsigned char *k = key;

	if (key == NULL || key_len == 0)
		return K2MC_KEY_MISSING;
	if (km->prefix_len + key_len > K2MC_MC_KEY_MAX)
		return K2MC_KEY_TOO_LONG;
	for (size_t i = 0; i < key_len; i++) {
		if (k[i] <= 0x20 || k[i] == 0x7f)
			return K2MC_KEY_BAD_BYTES;
	}
	return k2mc_keymap_check_value(km, value, value_len, op);
}

enum k2mc_keymap_reason k2mc_keymap_check_value(const struct k2mc_keymap *km, const void *value,
						size_t value_len, enum k2mc_keymap_op *op)
{
	if (value == NULL) {
		*op = K2MC_OP_DELETE;
		return K2MC_KEY_OK;
	}
	if (value_len > km->max_value)
		return K2MC_VALUE_TOO_LARGE;
	*op = K2MC_OP_SET;
	return K2MC_KEY_OK;
}

size_t k2mc_keymap_key(const struct k2mc_keymap *km, const void *key, size_t key_len, char *out)
{
	memcpy(out, km->prefix, km->prefix_len);
	memcpy(out + km->prefix_len, key, key_len);
	return km->prefix_len + key_len;
}

int k2mc_keymap_hashable(enum k2mc_keymap_reason r)
{
	return r == K2MC_KEY_TOO_LONG || r == K2MC_KEY_BAD_BYTES;
}

size_t k2mc_keymap_hashed_key(const struct k2mc_keymap *km, const void *key, size_t key_len,
			      char *out)
{
	static const char hex[] = "0123456789abcdef";
	XXH128_canonical_t c;
	char *p;

	if (km->prefix_len > K2MC_MC_KEY_MAX - K2MC_KEYMAP_HASH_HEX)
		return 0;
	XXH128_canonicalFromHash(&c, XXH3_128bits(key, key_len));
	memcpy(out, km->prefix, km->prefix_len);
	p = out + km->prefix_len;
	for (size_t i = 0; i < sizeof(c.digest); i++) {
		*p++ = hex[c.digest[i] >> 4];
		*p++ = hex[c.digest[i] & 15];
	}
	return km->prefix_len + K2MC_KEYMAP_HASH_HEX;
}
