/* Criterion suite for the record -> Memcached mapping (workers/keymap.h): the
 * memcached text protocol's key rules (at most 250 bytes with the prefix, no
 * whitespace or control bytes), tombstones, the value size limit, key
 * building and --on-invalid hash's key formula. It sends nothing to a server. */
#include "workers/keymap.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

/* memcached protocol.txt: "the key must not include control characters or
 * whitespace" and is at most 250 bytes. Spelled out here rather than taken
 * from the code under test. */
#define KEY_MAX 250

static struct k2mc_keymap km_with(const char *prefix, size_t max_value)
{
	struct k2mc_keymap km = { prefix, strlen(prefix), max_value };

	return km;
}

/* k2mc_keymap_check with an op that starts as neither SET nor DELETE, so a
 * check that forgets to set it is caught. */
static enum k2mc_keymap_reason check(const struct k2mc_keymap *km, const void *key, size_t key_len,
				     const void *value, size_t value_len,
				     enum k2mc_keymap_op *op)
{
	*op = (enum k2mc_keymap_op)0x5a;
	return k2mc_keymap_check(km, key, key_len, value, value_len, op);
}

Test(keymap, reason_names)
{
	cr_expect_str_eq(k2mc_keymap_reason_name(K2MC_KEY_OK), "ok");
	cr_expect_str_eq(k2mc_keymap_reason_name(K2MC_KEY_MISSING), "missing_key");
	cr_expect_str_eq(k2mc_keymap_reason_name(K2MC_KEY_TOO_LONG), "key_too_long");
	cr_expect_str_eq(k2mc_keymap_reason_name(K2MC_KEY_BAD_BYTES), "key_bad_bytes");
	cr_expect_str_eq(k2mc_keymap_reason_name(K2MC_VALUE_TOO_LARGE), "value_too_large");
	cr_expect_str_eq(k2mc_keymap_reason_name(K2MC_KEY_NREASONS), "unknown");
	cr_expect_str_eq(k2mc_keymap_reason_name((enum k2mc_keymap_reason)(K2MC_KEY_NREASONS + 7)),
			 "unknown");
	/* Stats labels: one distinct name per reason. */
	for (int a = 0; a < K2MC_KEY_NREASONS; a++)
		for (int b = a + 1; b < K2MC_KEY_NREASONS; b++)
			cr_expect_str_neq(k2mc_keymap_reason_name((enum k2mc_keymap_reason)a),
					  k2mc_keymap_reason_name((enum k2mc_keymap_reason)b));
}

Test(keymap, plain_record_is_a_set)
{
	struct k2mc_keymap km = km_with("app:", 1024);
	enum k2mc_keymap_op op;

	cr_expect_eq(check(&km, "user:42", 7, "v", 1, &op), K2MC_KEY_OK);
	cr_expect_eq(op, K2MC_OP_SET);
}

Test(keymap, missing_key)
{
	struct k2mc_keymap km = km_with("", 1024);
	enum k2mc_keymap_op op;

	cr_expect_eq(check(&km, NULL, 0, "v", 1, &op), K2MC_KEY_MISSING, "null key");
	cr_expect_eq(check(&km, NULL, 5, "v", 1, &op), K2MC_KEY_MISSING, "null key with a length");
	cr_expect_eq(check(&km, "", 0, "v", 1, &op), K2MC_KEY_MISSING, "empty key");
	cr_expect_eq(check(&km, "abc", 0, "v", 1, &op), K2MC_KEY_MISSING, "zero length");
	cr_expect_eq(check(&km, NULL, 0, NULL, 0, &op), K2MC_KEY_MISSING,
		     "a tombstone needs a key too");
	/* A prefix alone is not a key: the record still has none. */
	km = km_with("app:", 1024);
	cr_expect_eq(check(&km, "", 0, "v", 1, &op), K2MC_KEY_MISSING);
}

Test(keymap, tombstone_is_a_delete)
{
	struct k2mc_keymap km = km_with("app:", 4);
	enum k2mc_keymap_op op;

	cr_expect_eq(check(&km, "k", 1, NULL, 0, &op), K2MC_KEY_OK);
	cr_expect_eq(op, K2MC_OP_DELETE);
	/* A null value is a tombstone whatever length comes with it: the
	 * size limit is for what is stored, and a delete stores nothing. */
	cr_expect_eq(check(&km, "k", 1, NULL, 1 << 20, &op), K2MC_KEY_OK);
	cr_expect_eq(op, K2MC_OP_DELETE);
	/* An empty value is a value, not a tombstone. */
	cr_expect_eq(check(&km, "k", 1, "", 0, &op), K2MC_KEY_OK);
	cr_expect_eq(op, K2MC_OP_SET);
	/* Key rules still apply to deletes. */
	cr_expect_eq(check(&km, "a b", 3, NULL, 0, &op), K2MC_KEY_BAD_BYTES);
}

Test(keymap, value_size_limit)
{
	static char value[4097];
	struct k2mc_keymap km = km_with("", 4096);
	enum k2mc_keymap_op op;

	memset(value, 'x', sizeof(value));
	cr_expect_eq(check(&km, "k", 1, value, 4096, &op), K2MC_KEY_OK, "exactly max_value fits");
	cr_expect_eq(op, K2MC_OP_SET);
	cr_expect_eq(check(&km, "k", 1, value, 4097, &op), K2MC_VALUE_TOO_LARGE);
	cr_expect_eq(check(&km, "k", 1, value, 0, &op), K2MC_KEY_OK);

	km = km_with("", 0);
	cr_expect_eq(check(&km, "k", 1, value, 0, &op), K2MC_KEY_OK, "max_value 0: empty fits");
	cr_expect_eq(check(&km, "k", 1, value, 1, &op), K2MC_VALUE_TOO_LARGE);
}

Test(keymap, key_length_boundaries)
{
	static char key[KEY_MAX + 2];
	enum k2mc_keymap_op op;
	struct k2mc_keymap km = km_with("", 16);

	memset(key, 'k', sizeof(key));
	cr_expect_eq(check(&km, key, KEY_MAX, "v", 1, &op), K2MC_KEY_OK, "250 bytes fit");
	cr_expect_eq(check(&km, key, KEY_MAX + 1, "v", 1, &op), K2MC_KEY_TOO_LONG);

	/* The limit is on what memcached sees: prefix + key. */
	km = km_with("pfx:", 16);
	cr_expect_eq(check(&km, key, KEY_MAX - 4, "v", 1, &op), K2MC_KEY_OK, "4 + 246 = 250");
	cr_expect_eq(check(&km, key, KEY_MAX - 3, "v", 1, &op), K2MC_KEY_TOO_LONG, "4 + 247");
	cr_expect_eq(check(&km, key, KEY_MAX - 3, NULL, 0, &op), K2MC_KEY_TOO_LONG,
		     "deletes too");

	static char long_prefix[KEY_MAX];

	memset(long_prefix, 'p', KEY_MAX - 1);
	km = km_with(long_prefix, 16); /* 249 bytes */
	cr_expect_eq(check(&km, "k", 1, "v", 1, &op), K2MC_KEY_OK, "249 + 1");
	cr_expect_eq(check(&km, "kk", 2, "v", 1, &op), K2MC_KEY_TOO_LONG, "249 + 2");
}

/* Every byte value on its own, at the start, middle and end of a key: bad iff
 * it is a control byte, space or DEL (<= 0x20 or 0x7f). */
Test(keymap, every_byte_value)
{
	struct k2mc_keymap km = km_with("app:", 16);
	enum k2mc_keymap_op op;

	for (int b = 0; b < 256; b++) {
		int bad = b <= 0x20 || b == 0x7f;
		enum k2mc_keymap_reason want = bad ? K2MC_KEY_BAD_BYTES : K2MC_KEY_OK;
		char alone[1] = { (char)b };
		char start[3] = { (char)b, 'a', 'b' };
		char mid[3] = { 'a', (char)b, 'b' };
		char end[3] = { 'a', 'b', (char)b };

		cr_expect_eq(check(&km, alone, 1, "v", 1, &op), want, "byte 0x%02x alone", b);
		cr_expect_eq(check(&km, start, 3, "v", 1, &op), want, "byte 0x%02x first", b);
		cr_expect_eq(check(&km, mid, 3, "v", 1, &op), want, "byte 0x%02x inside", b);
		cr_expect_eq(check(&km, end, 3, "v", 1, &op), want, "byte 0x%02x last", b);
	}
}

Test(keymap, forbidden_byte_classes)
{
	struct k2mc_keymap km = km_with("", 16);
	enum k2mc_keymap_op op;
	static const struct {
		const char *key;
		size_t len;
		const char *what;
	} bad[] = {
		{ "a b", 3, "space" },      { "a\tb", 3, "tab" },
		{ "a\rb", 3, "CR" },        { "a\nb", 3, "LF" },
		{ "a\0b", 3, "NUL" },       { "a\x7f" "b", 3, "DEL" },
		{ "a\x01" "b", 3, "0x01" }, { "a\x1f" "b", 3, "0x1f" },
		{ "key\r\n", 5, "trailing CRLF (protocol injection)" },
		{ " ", 1, "a lone space" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(check(&km, bad[i].key, bad[i].len, "v", 1, &op), K2MC_KEY_BAD_BYTES,
			     "%s", bad[i].what);
	/* The length, not a NUL, ends the key: bytes after a NUL are checked. */
	cr_expect_eq(check(&km, "ab\0 ", 4, "v", 1, &op), K2MC_KEY_BAD_BYTES);
}

Test(keymap, allowed_bytes)
{
	struct k2mc_keymap km = km_with("", 16);
	enum k2mc_keymap_op op;
	static const char *const good[] = {
		"!",                        /* 0x21, the lowest allowed */
		"~",                        /* 0x7e, the highest ASCII allowed */
		"user:42/profile?x=1&y=#",  /* punctuation */
		"\x80",                     /* high bytes are not control bytes */
		"\xff",
		"\xc3\xa9t\xc3\xa9",        /* "été" in UTF-8 */
		"\xe6\x97\xa5\xe6\x9c\xac", /* "日本" */
		"\xf0\x9f\x94\x91",         /* U+1F511, a 4-byte sequence */
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cr_expect_eq(check(&km, good[i], strlen(good[i]), "v", 1, &op), K2MC_KEY_OK,
			     "key %zu", i);
		cr_expect_eq(op, K2MC_OP_SET);
	}
}

Test(keymap, key_building)
{
	char out[KEY_MAX + 16];
	struct k2mc_keymap km = km_with("app:", 16);
	size_t n;

	n = k2mc_keymap_key(&km, "user:42", 7, out);
	cr_expect_eq(n, 11);
	cr_expect_arr_eq(out, "app:user:42", 11);

	km = km_with("", 16);
	n = k2mc_keymap_key(&km, "user:42", 7, out);
	cr_expect_eq(n, 7);
	cr_expect_arr_eq(out, "user:42", 7);

	/* prefix_len, not strlen, says how much of the prefix is used */
	km = (struct k2mc_keymap){ "abcdef", 3, 16 };
	n = k2mc_keymap_key(&km, "k", 1, out);
	cr_expect_eq(n, 4);
	cr_expect_arr_eq(out, "abck", 4);

	/* Binary-safe: high bytes are copied as they are. */
	km = km_with("p:", 16);
	n = k2mc_keymap_key(&km, "\xe6\x97\xa5", 3, out);
	cr_expect_eq(n, 5);
	cr_expect_arr_eq(out, "p:\xe6\x97\xa5", 5);
}

/* A key of the largest accepted size fills exactly 250 bytes of out and
 * writes nothing after them. */
Test(keymap, key_building_at_the_limit)
{
	static char key[KEY_MAX];
	char out[KEY_MAX + 16];
	struct k2mc_keymap km = km_with("pfx:", 16);
	enum k2mc_keymap_op op;
	size_t n;

	memset(key, 'k', sizeof(key));
	memset(out, 0xa5, sizeof(out));
	cr_assert_eq(check(&km, key, KEY_MAX - 4, "v", 1, &op), K2MC_KEY_OK);
	n = k2mc_keymap_key(&km, key, KEY_MAX - 4, out);
	cr_expect_eq(n, KEY_MAX);
	cr_expect_arr_eq(out, "pfx:", 4);
	cr_expect_arr_eq(out + 4, key, KEY_MAX - 4);
	for (size_t i = KEY_MAX; i < sizeof(out); i++)
		cr_assert_eq((unsigned char)out[i], 0xa5, "byte %zu past the key was written", i);
}

/* ---- --on-invalid hash ------------------------------------------------------
 * The documented formula, spelled out independently of the code under test:
 * prefix + the 128-bit XXH3 digest of the record key (seed 0) as 32 lowercase
 * hex digits, high 64 bits first (what `xxh128sum` prints). */
#define HASH_HEX 32

static size_t expected_hashed(const char *prefix, const void *key, size_t len, char *out)
{
	XXH128_hash_t h = XXH3_128bits(key, len);

	return (size_t)sprintf(out, "%s%016llx%016llx", prefix, (unsigned long long)h.high64,
			       (unsigned long long)h.low64);
}

Test(keymap, hash_digest_is_xxh128sum)
{
	/* `printf '' | xxh128sum` -> 99aa06d3014798d86001c324468d497f: the
	 * library's digest and its byte order, pinned */
	XXH128_hash_t h = XXH3_128bits("", 0);

	cr_expect_eq(h.high64, 0x99aa06d3014798d8ULL);
	cr_expect_eq(h.low64, 0x6001c324468d497fULL);
}

Test(keymap, hashed_key_follows_the_formula)
{
	static char longkey[400];
	static const struct {
		const char *key;
		size_t len;
	} keys[] = {
		{ "a b", 3 }, { "tab\there", 8 }, { "nul\0inside", 10 }, { "key\r\n", 5 },
		{ "\x7f", 1 }, { longkey, 251 }, { longkey, 400 },
	};
	struct k2mc_keymap km = km_with("app:", 16);
	char out[KEY_MAX + 16], want[KEY_MAX + 64];
	enum k2mc_keymap_op op;

	memset(longkey, 'k', sizeof(longkey));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		size_t n = k2mc_keymap_hashed_key(&km, keys[i].key, keys[i].len, out);
		size_t wn = expected_hashed("app:", keys[i].key, keys[i].len, want);

		cr_assert_eq(n, 4 + HASH_HEX, "key %zu: length %zu", i, n);
		cr_expect_eq(wn, n);
		cr_expect_arr_eq(out, want, n, "key %zu: '%.*s' != '%s'", i, (int)n, out, want);
		/* what it produces is always a key memcached takes */
		cr_expect_eq(check(&km, out + 4, n - 4, "v", 1, &op), K2MC_KEY_OK, "key %zu", i);
		for (size_t b = 4; b < n; b++)
			cr_expect((out[b] >= '0' && out[b] <= '9') || (out[b] >= 'a' && out[b] <= 'f'),
				  "key %zu: byte %zu is '%c', not lowercase hex", i, b, out[b]);
	}
	/* deterministic, and different keys give different digests */
	cr_expect_eq(k2mc_keymap_hashed_key(&km, "a b", 3, out), 36);
	cr_expect_eq(k2mc_keymap_hashed_key(&km, "a b", 3, want), 36);
	cr_expect_arr_eq(out, want, 36);
	k2mc_keymap_hashed_key(&km, "a  b", 4, want);
	cr_expect(memcmp(out, want, 36) != 0);
}

Test(keymap, hashed_key_needs_room_for_the_digest)
{
	static char prefix[KEY_MAX];
	char out[KEY_MAX + 16];
	struct k2mc_keymap km;

	memset(prefix, 'p', sizeof(prefix) - 1);
	prefix[KEY_MAX - HASH_HEX] = '\0'; /* 218 bytes: 218 + 32 = 250 */
	km = km_with(prefix, 16);
	memset(out, 0xa5, sizeof(out));
	cr_expect_eq(k2mc_keymap_hashed_key(&km, "a b", 3, out), KEY_MAX);
	for (size_t i = KEY_MAX; i < sizeof(out); i++)
		cr_assert_eq((unsigned char)out[i], 0xa5, "byte %zu past the key was written", i);
	prefix[KEY_MAX - HASH_HEX] = 'p'; /* 219 bytes */
	prefix[KEY_MAX - HASH_HEX + 1] = '\0';
	km = km_with(prefix, 16);
	cr_expect_eq(k2mc_keymap_hashed_key(&km, "a b", 3, out), 0, "no room: 0, nothing built");
}

Test(keymap, only_key_shape_is_hashable)
{
	cr_expect(!k2mc_keymap_hashable(K2MC_KEY_OK));
	cr_expect(!k2mc_keymap_hashable(K2MC_KEY_MISSING), "no key to hash");
	cr_expect(k2mc_keymap_hashable(K2MC_KEY_TOO_LONG));
	cr_expect(k2mc_keymap_hashable(K2MC_KEY_BAD_BYTES));
	cr_expect(!k2mc_keymap_hashable(K2MC_VALUE_TOO_LARGE), "the value stays too large");
}

Test(keymap, value_rules_alone)
{
	struct k2mc_keymap km = km_with("", 4);
	enum k2mc_keymap_op op = (enum k2mc_keymap_op)0x5a;

	cr_expect_eq(k2mc_keymap_check_value(&km, "vvvv", 4, &op), K2MC_KEY_OK);
	cr_expect_eq(op, K2MC_OP_SET);
	cr_expect_eq(k2mc_keymap_check_value(&km, "vvvvv", 5, &op), K2MC_VALUE_TOO_LARGE);
	cr_expect_eq(k2mc_keymap_check_value(&km, NULL, 99, &op), K2MC_KEY_OK);
	cr_expect_eq(op, K2MC_OP_DELETE);
}
