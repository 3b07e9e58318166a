/* --key-format / --value-format: a record's key and value bytes -> the JSON
 * text the templates read (mapping.h). raw and json need nothing: the bytes
 * are read as they are (mapping.c unwraps envelopes). avro: decoded through
 * avro.h's registry client into per-thread buffers. Not the mapping, not the
 * registry client's HTTP (avro.c), not the wait on a registry that is down
 * (the calling thread decides: consumer.c, writer.c).
 *
 * Threads: main makes the decoder (k2mc_decoder_new) before any consumer or
 * writer thread and frees it after they are joined; each thread that decodes
 * makes its own context (k2mc_decode_ctx_new) and frees it before it ends.
 * The decoder's counters are relaxed atomics, any thread. */
#ifndef K2MC_DECODE_H
#define K2MC_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "workers/mapping.h"

struct k2mc_decoder;
struct k2mc_decode_ctx;

/* NULL with a message in err: a bad --schema-registry URL or
 * --schema-registry-property (unknown name, bad value), or no memory. A
 * configuration without avro gets a decoder that decodes nothing. */
struct k2mc_decoder *k2mc_decoder_new(const struct k2mc_config *cfg, char *err, size_t errlen);
void k2mc_decoder_free(struct k2mc_decoder *d);

/* NULL for lack of memory. */
struct k2mc_decode_ctx *k2mc_decode_ctx_new(struct k2mc_decoder *d);
void k2mc_decode_ctx_free(struct k2mc_decode_ctx *c);

/* -EAGAIN from k2mc_decode_record: the registry was unreachable (avro.h's
 * transient result). Not an invalid record: the caller waits, counts
 * (k2mc_decode_note_wait) and tries again. */
#define K2MC_DECODE_AGAIN (-EAGAIN)

/* Decodes rec's key (key != 0) and value (value != 0) where their format is
 * avro, pointing rec->key / rec->value at the JSON text (valid until the
 * next call on c; the key's and the value's buffers are apart). A null key
 * or value stays null. Returns 0; K2MC_DECODE_AGAIN; or the invalid reason
 * (K2MC_MAP_NOT_AVRO, _SCHEMA_UNAVAILABLE, _AVRO_DECODE) with *in_key
 * saying whether the key or the value failed. The first failure of each
 * reason is logged with the registry client's explanation. */
int k2mc_decode_record(struct k2mc_decode_ctx *c, struct k2mc_record *rec, int key, int value,
		       int *in_key);
/* The last failure's one-line explanation ("schema 7: registry answered 404"). */
const char *k2mc_decode_explain(const struct k2mc_decode_ctx *c);

/* 1 if the key / value format is avro (only then is there anything to do). */
int k2mc_decoder_key_avro(const struct k2mc_decoder *d);
int k2mc_decoder_value_avro(const struct k2mc_decoder *d);

/* Records that waited for an unreachable registry (one per wait, however
 * long), and the registry client's own counters; any thread, relaxed. */
void k2mc_decode_note_wait(struct k2mc_decoder *d);
uint64_t k2mc_decoder_waits(const struct k2mc_decoder *d);

#endif
