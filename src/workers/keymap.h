/* Record -> Memcached command: key = prefix + record key, value = record value,
 * a null value is a delete. Decides whether Memcached can take a record at all
 * (the text protocol's key rules, the server's item size); it does no I/O. */
#ifndef K2MC_KEYMAP_H
#define K2MC_KEYMAP_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h" /* K2MC_MC_KEY_MAX */

enum k2mc_keymap_reason {
	K2MC_KEY_OK = 0,
	K2MC_KEY_MISSING,     /* null or empty record key */
	K2MC_KEY_TOO_LONG,    /* prefix + key over 250 bytes */
	K2MC_KEY_BAD_BYTES,   /* whitespace or control bytes */
	K2MC_VALUE_TOO_LARGE, /* over the server's item size limit */
	K2MC_KEY_NREASONS,
};

/* Short stable names ("missing_key", ...) for logs and stats labels. */
const char *k2mc_keymap_reason_name(enum k2mc_keymap_reason r);

enum k2mc_keymap_op { K2MC_OP_SET, K2MC_OP_DELETE };

struct k2mc_keymap {
	const char *prefix;
	size_t prefix_len;
	/* values above this are refused before they reach the server; the
	 * server's own "object too large" answer is still honoured. writer.c
	 * sets SIZE_MAX and checks each value against the limit of the server
	 * its key maps to instead (known only once the server is chosen). */
	size_t max_value;
};

/* Checks a record; on K2MC_KEY_OK *op says what to send. value == NULL is a
 * tombstone. Pure function of its inputs: safe from any thread. */
enum k2mc_keymap_reason k2mc_keymap_check(const struct k2mc_keymap *km, const void *key,
					  size_t key_len, const void *value, size_t value_len,
					  enum k2mc_keymap_op *op);

/* Writes prefix + key into out (room for K2MC_MC_KEY_MAX bytes); returns the
 * length. Only for records k2mc_keymap_check accepted. */
size_t k2mc_keymap_key(const struct k2mc_keymap *km, const void *key, size_t key_len, char *out);

/* The value rules alone (a key rewritten by --on-invalid hash still has to
 * carry a value the servers take): K2MC_KEY_OK with *op set, or
 * K2MC_VALUE_TOO_LARGE. */
enum k2mc_keymap_reason k2mc_keymap_check_value(const struct k2mc_keymap *km, const void *value,
						size_t value_len, enum k2mc_keymap_op *op);

/* --on-invalid hash. A record key that is too long or holds bytes the text
 * protocol forbids is stored under
 *
 *     prefix + hex(XXH3_128bits(record key, seed 0))
 *
 * where hex is the 128-bit digest in its canonical big-endian form (high 64
 * bits first, XXH128_canonicalFromHash) as 32 lowercase hex digits: exactly
 * what `xxh128sum` (Debian package xxhash) prints for the key's bytes, so a
 * reader computes the same key with `printf %s "$key" | xxh128sum`. The
 * digest never contains a forbidden byte, so the result is valid whenever
 * the prefix leaves room for it. Caveat: such a key is indistinguishable
 * from a record whose own key is those 32 hex digits. */
#define K2MC_KEYMAP_HASH_HEX 32

/* 1 if reason r is about the key's shape (too long, forbidden bytes) and so
 * can be cured by hashing; a missing key or an oversized value cannot. */
int k2mc_keymap_hashable(enum k2mc_keymap_reason r);

/* Writes the hashed key for key (any bytes, key_len > 0) into out (room for
 * K2MC_MC_KEY_MAX bytes); returns its length, prefix_len + 32, or 0 when the
 * prefix is longer than 250 - 32 = 218 bytes and no hashed key fits. */
size_t k2mc_keymap_hashed_key(const struct k2mc_keymap *km, const void *key, size_t key_len,
			      char *out);

#endif
