/* --on-invalid applied: what becomes of one mapped record (write it, delete
 * its key in its place, skip it, dead-letter it, stop). The one decision the
 * live path (writer.c) and refill (refill.c) share, so that refill stores
 * exactly what the live path would and nothing it refused. Pure: no I/O, no
 * counting, no logging; the callers count and log where they act. Not the
 * mapping itself (mapping.c) nor the dead letter producer (dlq.c). */
#ifndef K2MC_POLICY_H
#define K2MC_POLICY_H

#include <stddef.h>

#include "core/config.h"
#include "workers/mapping.h"

enum k2mc_fate {
	K2MC_FATE_WRITE = 0,  /* send the mapped command (mp->op on mp->key, a hashed key
			       * included) */
	K2MC_FATE_INVALIDATE, /* skipped, and its key deleted in its place: the record is
			       * the key's newest state and Memcached cannot hold it */
	K2MC_FATE_SKIP,       /* skipped: nothing sent, the key left as it was */
	K2MC_FATE_DLQ,        /* to --dlq-topic; the key left as it was */
	K2MC_FATE_FAIL,       /* --on-invalid fail: nothing at or past it is committed */
	K2MC_FATE_IGNORE,     /* --on-tombstone ignore: acknowledged unwritten */
};

/* What the decision needs of the configuration; immutable once made. */
struct k2mc_policy {
	enum k2mc_invalid_policy on_invalid;
	int dlq;          /* a dead letter topic takes refused records */
	size_t max_value; /* --max-value-bytes, 0: none */
};

void k2mc_policy_init(struct k2mc_policy *p, const struct k2mc_config *cfg);

/* The largest value a server takes: item_limit, its item size limit as read
 * from it (0: unknown, such as a proxy without "stats settings": then the
 * server answers "too large" itself), capped by --max-value-bytes. SIZE_MAX
 * when neither is known. */
size_t k2mc_policy_value_limit(const struct k2mc_policy *p, size_t item_limit);

struct k2mc_decision {
	enum k2mc_fate fate;
	/* why the record is not written as it maps: for every fate but WRITE
	 * and IGNORE; K2MC_VALUE_TOO_LARGE when the value is over the limit */
	enum k2mc_map_reason reason;
	/* WRITE under --on-invalid hash: the hashable reason the key was
	 * hashed for; else K2MC_MAP_OK */
	enum k2mc_map_reason hashed;
};

/* Record mapped as mp (k2mc_mapping_map returned reason, >= 0), on a server
 * whose value limit is limit (k2mc_policy_value_limit; SIZE_MAX when the
 * record has no key, and so no server). A refused record whose reason
 * invalidates (mapping.h) and whose key is known under this policy is
 * INVALIDATE where the policy would skip it. */
struct k2mc_decision k2mc_policy_decide(const struct k2mc_policy *p, int reason,
					const struct k2mc_mapped *mp, size_t limit);

/* The fate of a refused record where no key is deleted for it: SKIP, DLQ or
 * FAIL, whatever the reason (a server that answered "too large" has dropped the key's old
 * item itself). */
enum k2mc_fate k2mc_policy_refusal(const struct k2mc_policy *p);

#endif
