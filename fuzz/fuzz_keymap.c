/* libFuzzer target over the record -> Memcached key mapping (workers/keymap.h):
 * arbitrary prefix, key and value bytes through k2mc_keymap_check, the key
 * build of accepted records and --on-invalid hash's key for refused ones.
 * Checks the contracts the writer relies on: whatever is built fits the
 * 250-byte buffer (sized exactly, so ASan sees one byte more) and is a key
 * the text protocol takes. Run by `make fuzz`; not part of `make test`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workers/keymap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int key_ok(const char *k, size_t n)
{
	if (n == 0 || n > K2MC_MC_KEY_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)k[i];

		if (c <= 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

/* Input: [prefix_len][max_value selector][flags] then prefix, key, value
 * bytes (the rest split in half between key and value). flags bit 0: null
 * key, bit 1: null value (a tombstone). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t max_values[] = { 0, 1, 16, 1024, 1 << 20 };
	struct k2mc_keymap km;
	enum k2mc_keymap_op op;
	enum k2mc_keymap_reason r;
	size_t plen, klen, vlen, n;
	const uint8_t *p;
	char *prefix, *key, *value, *out;

	if (size < 3)
		return 0;
	plen = data[0] % 251; /* config.c takes prefixes under 250 bytes */
	km.max_value = max_values[data[1] % 5];
	p = data + 3;
	size -= 3;
	if (plen > size)
		plen = size;
	klen = (size - plen) / 2;
	vlen = size - plen - klen;
	/* separate heap copies: ASan then sees any read past each one */
	prefix = malloc(plen + 1);
	key = malloc(klen + 1);
	value = malloc(vlen + 1);
	out = malloc(K2MC_MC_KEY_MAX);
	if (prefix == NULL || key == NULL || value == NULL || out == NULL)
		abort();
	memcpy(prefix, p, plen);
	memcpy(key, p + plen, klen);
	memcpy(value, p + plen + klen, vlen);
	km.prefix = prefix;
	km.prefix_len = plen;

	r = k2mc_keymap_check(&km, (data[2] & 1) ? NULL : key, klen, (data[2] & 2) ? NULL : value,
			      vlen, &op);
	if (r == K2MC_KEY_OK) {
		if (op != K2MC_OP_SET && op != K2MC_OP_DELETE)
			abort();
		if ((op == K2MC_OP_DELETE) != ((data[2] & 2) != 0))
			abort();
		n = k2mc_keymap_key(&km, key, klen, out);
		if (n != plen + klen || memcmp(out, prefix, plen) != 0 ||
		    memcmp(out + plen, key, klen) != 0)
			abort();
		/* the key part is checked; a valid prefix makes the whole valid */
		if (key_ok(prefix, plen) && !key_ok(out, n))
			abort();
	} else if (r <= K2MC_KEY_OK || r >= K2MC_KEY_NREASONS) {
		abort();
	}
	if (k2mc_keymap_hashable(r)) {
		if (klen == 0 || (data[2] & 1))
			abort(); /* a missing key is never "hashable" */
		n = k2mc_keymap_hashed_key(&km, key, klen, out);
		if (plen > K2MC_MC_KEY_MAX - K2MC_KEYMAP_HASH_HEX) {
			if (n != 0)
				abort();
		} else {
			if (n != plen + K2MC_KEYMAP_HASH_HEX || memcmp(out, prefix, plen) != 0)
				abort();
			for (size_t i = plen; i < n; i++)
				if (!((out[i] >= '0' && out[i] <= '9') || (out[i] >= 'a' && out[i] <= 'f')))
					abort();
			if (key_ok(prefix, plen) && !key_ok(out, n))
				abort();
		}
	}
	free(prefix);
	free(key);
	free(value);
	free(out);
	return 0;
}
