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
	 * server's own "object too large" answer is still honoured */
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

#endif
