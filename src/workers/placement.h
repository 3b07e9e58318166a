/* Key placement: which -m server a key is written to, computed the way the
 * readers' client library computes it (--distribution), so that they find it.
 * No I/O: it knows the servers' names, ports and weights, never a connection.
 *
 * One placement per writer thread (a writer owns its own, as it owns its
 * memcached_st: libmemcachedutil(3)); not thread-safe. Built once from the
 * configuration; afterwards only --mc-eject changes it (placement_eject,
 * placement_restore), on the writer's own thread. */
#ifndef K2MC_PLACEMENT_H
#define K2MC_PLACEMENT_H

#include <stddef.h>
#include <time.h>

#include "core/config.h"

struct k2mc_placement;

/* Builds the placement of cfg->servers (in -m order, which is the order of
 * every server index here) under cfg->distribution, with --mc-eject's state
 * if cfg->mc_eject. NULL, with one line for the user in err, when the
 * combination cannot match its readers: a weight other than 1 under a
 * scheme without weights, --mc-eject under a scheme whose readers never move
 * a down server's keys (modula, crc32), a unix socket or an unresolvable
 * host under spymemcached; or out of memory. */
struct k2mc_placement *k2mc_placement_new(const struct k2mc_config *cfg, char *err, size_t errlen);
void k2mc_placement_free(struct k2mc_placement *p);

/* For main, at start: builds a placement and frees it, so a configuration
 * that cannot match its readers stops k2mc before anything runs. 0, or
 * -EINVAL/-ENOMEM with the reason in err (exit 2). With more than one server
 * it logs one line naming the distribution and the readers it matches. */
int k2mc_placement_check(const struct k2mc_config *cfg, char *err, size_t errlen);

/* The readers a distribution matches, for logs and --help ("pymemcache
 * HashClient (RendezvousHash)"). */
const char *k2mc_placement_readers(enum k2mc_distribution d);

/* The server index key[0..klen) is written to now: the reader's primary
 * server, or with servers ejected, where that reader's client sends the key
 * while those servers are down. Per record; klen <= K2MC_MC_KEY_MAX. */
int k2mc_placement_server(const struct k2mc_placement *p, const char *key, size_t klen);

/* --mc-eject: server s is down until `until` (time()). 1 if placement
 * changed; 0 if it did not: s already out (its time is extended), s the
 * last server left in, or the placement has no ejection (built without
 * --mc-eject, one server). */
int k2mc_placement_eject(struct k2mc_placement *p, int s, time_t until);
/* Servers whose time has come (until <= now) are placed to again. 1 if
 * placement changed. Cheap when nothing is ejected. */
int k2mc_placement_restore(struct k2mc_placement *p, time_t now);

#endif
