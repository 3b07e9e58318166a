/* --on-invalid applied; see policy.h. Which reasons can be hashed and which
 * invalidate their key is the reason table's (mapping.c); this file only
 * combines it with the policy, the value limit and the key. */
#include "workers/policy.h"

#include <stdint.h>

void k2mc_policy_init(struct k2mc_policy *p, const struct k2mc_config *cfg)
{
	p->on_invalid = cfg->on_invalid;
	/* the same condition under which writer.c makes the producer */
	p->dlq = cfg->dlq_topic != NULL &&
		 (cfg->on_invalid == K2MC_INVALID_DLQ || cfg->on_invalid == K2MC_INVALID_HASH);
	p->max_value = (size_t)cfg->max_value_bytes;
}

size_t k2mc_policy_value_limit(const struct k2mc_policy *p, size_t item_limit)
{
	size_t cap = p->max_value;

	if (item_limit == 0)
		return cap > 0 ? cap : SIZE_MAX;
	return cap > 0 && cap < item_limit ? cap : item_limit;
}

enum k2mc_fate k2mc_policy_refusal(const struct k2mc_policy *p)
{
	switch (p->on_invalid) {
	case K2MC_INVALID_HASH: /* what hashing cannot cure falls back */
	case K2MC_INVALID_DLQ:
		return p->dlq ? K2MC_FATE_DLQ : K2MC_FATE_SKIP;
	case K2MC_INVALID_FAIL:
		return K2MC_FATE_FAIL;
	case K2MC_INVALID_SKIP:
	default:
		return K2MC_FATE_SKIP;
	}
}

/* Whether mp's key is one this policy stores records under: a hashed key
 * only under hash (under the other policies nothing is ever stored there). */
static int key_known(const struct k2mc_policy *p, const struct k2mc_mapped *mp)
{
	return mp->key_len > 0 && (!mp->key_hashed || p->on_invalid == K2MC_INVALID_HASH);
}

struct k2mc_decision k2mc_policy_decide(const struct k2mc_policy *p, int reason,
					const struct k2mc_mapped *mp, size_t limit)
{
	struct k2mc_decision d = { K2MC_FATE_WRITE, K2MC_MAP_OK, K2MC_MAP_OK };
	enum k2mc_map_reason r = (enum k2mc_map_reason)reason, hashed = K2MC_MAP_OK;

	/* mapping.h: a reason hashing cannot cure always wins over one it can,
	 * so a hashable reason here means the rest of the record is fine */
	if (r != K2MC_MAP_OK && p->on_invalid == K2MC_INVALID_HASH && k2mc_map_hashable(r) &&
	    mp->key_len > 0) {
		hashed = r;
		r = K2MC_MAP_OK;
	}
	if (r == K2MC_MAP_OK) {
		if (mp->op == K2MC_OP_NONE) {
			d.fate = K2MC_FATE_IGNORE;
			return d;
		}
		if (mp->op != K2MC_OP_SET || mp->value_len <= limit) {
			d.hashed = hashed;
			return d;
		}
		r = K2MC_VALUE_TOO_LARGE;
	}
	d.reason = r;
	d.fate = k2mc_policy_refusal(p);
	if (d.fate == K2MC_FATE_SKIP && k2mc_map_invalidates(r) && key_known(p, mp))
		d.fate = K2MC_FATE_INVALIDATE;
	return d;
}
