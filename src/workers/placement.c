/* Key -> server, one scheme per reader family (placement.h). The schemes of
 * libmemcached's readers (ketama, libketama, modula: pylibmc, PHP memcached)
 * are computed by libmemcached itself, the library those readers run. The
 * others are restated here from their clients' source, cited where each is
 * built, and checked against vectors from the real clients
 * (tests/test_placement.c) and by reading every key back with them
 * (tests/interop). Nothing here connects anywhere or decides what to write. */
#include "workers/placement.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmemcached/memcached.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"

/* Dalli::Ring (dalli 3.0.6, lib/dalli/ring.rb): POINTS_PER_SERVER entries
 * per server when weights are equal; server_from_continuum tries 20 hashes
 * ("#{try}#{key}" after the first) before it gives up on a key. */
#define DALLI_POINTS 160
#define DALLI_TRIES  20
/* spymemcached 2.12.3: DefaultKetamaNodeLocatorConfiguration's numReps (four
 * points per MD5 digest); KetamaNodeLocator.getSequence's 7 tries. */
#define SPY_REPS  160
#define SPY_TRIES 7
/* libmemcached leaves a server out of the continuum while its next_retry is
 * ahead of the clock; placement keeps its own clock (down_until), so an
 * ejected server's next_retry is "never" until placement_restore. */
#define MC_EJECTED ((time_t)INT64_MAX)

/* A point of a continuum: at value, server. */
struct point {
	uint32_t value;
	uint32_t server;
};

/* A rendezvous node: murmur3_32 of "NAME-KEY" is computed from the state
 * after NAME-'s whole 4-byte blocks, so only the key is hashed per record. */
struct rv_node {
	uint32_t h1;     /* murmur3 state after plen / 4 blocks of "NAME-" */
	uint32_t ncarry; /* plen % 4: the bytes of "NAME-" not in a block yet */
	uint8_t carry[4];
	uint32_t plen;  /* strlen("NAME-") */
	char name[300]; /* NAME, for pymemcache's tie rule */
};

struct k2mc_placement {
	enum k2mc_distribution dist;
	int n;
	int eject;            /* --mc-eject with more than one server */
	memcached_st *memc;   /* ketama, libketama, modula */
	struct point *points; /* dalli, spymemcached: sorted by value */
	size_t npoints;
	struct rv_node *rv;  /* rendezvous: [n] */
	uint32_t *crc_table; /* crc32, dalli: CRC-32's byte table, [256] */
	/* --mc-eject: [n], until when server s is out (time()), 0 while in */
	time_t *down_until;
	int ndown;
};

static int set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

const char *k2mc_placement_readers(enum k2mc_distribution d)
{
	switch (d) {
	case K2MC_DIST_KETAMA:
		return "libmemcached MEMCACHED_BEHAVIOR_KETAMA: pylibmc behaviors={\"ketama\": "
		       "True}, "
		       "PHP memcached OPT_DISTRIBUTION=DISTRIBUTION_CONSISTENT";
	case K2MC_DIST_LIBKETAMA:
		return "libketama-compatible weighted MD5 ketama: PHP memcached "
		       "OPT_LIBKETAMA_COMPATIBLE, pylibmc behaviors={\"ketama_weighted\": True}";
	case K2MC_DIST_MODULA:
		return "libmemcached's default modula: PHP memcached and pylibmc without "
		       "distribution options";
	case K2MC_DIST_RENDEZVOUS:
		return "pymemcache HashClient (its default RendezvousHash)";
	case K2MC_DIST_CRC32:
		return "Go gomemcache (memcache.New, ServerList)";
	case K2MC_DIST_DALLI:
		return "Ruby Dalli (Dalli::Client's ring)";
	case K2MC_DIST_SPYMEMCACHED:
		return "Java spymemcached KetamaConnectionFactory";
	}
	return "?";
}

/* ---- hashes ---------------------------------------------------------------*/

static uint32_t rotl32(uint32_t x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static uint32_t murmur_block(uint32_t h1, uint32_t k1)
{
	k1 *= 0xcc9e2d51u;
	k1 = rotl32(k1, 15);
	k1 *= 0x1b873593u;
	h1 ^= k1;
	h1 = rotl32(h1, 13);
	return h1 * 5 + 0xe6546b64u;
}

/* MurmurHash3_x86_32 (pymemcache's murmur3_32, seed 0) continued from state
 * h1 over p[0..len), finalized as a hash of total bytes in all. */
static uint32_t murmur_finish(uint32_t h1, const uint8_t *p, size_t len, size_t total)
{
	size_t i = 0;
	uint32_t k1 = 0;

	for (; i + 4 <= len; i += 4)
		h1 = murmur_block(h1, (uint32_t)p[i] | (uint32_t)p[i + 1] << 8 |
		                          (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 24);
	switch (len & 3) {
	case 3:
		k1 ^= (uint32_t)p[i + 2] << 16;
		/* fall through */
	case 2:
		k1 ^= (uint32_t)p[i + 1] << 8;
		/* fall through */
	case 1:
		k1 ^= p[i];
		k1 *= 0xcc9e2d51u;
		k1 = rotl32(k1, 15);
		k1 *= 0x1b873593u;
		h1 ^= k1;
	}
	h1 ^= (uint32_t)total;
	h1 ^= h1 >> 16;
	h1 *= 0x85ebca6bu;
	h1 ^= h1 >> 13;
	h1 *= 0xc2b2ae35u;
	h1 ^= h1 >> 16;
	return h1;
}

/* Word h (0..3) of an MD5 digest, little-endian: a libketama point, and for
 * h = 0 a key's KETAMA_HASH (spymemcached's DefaultHashAlgorithm). */
static uint32_t md5_word(const unsigned char d[16], int h)
{
	return (uint32_t)d[h * 4] | (uint32_t)d[h * 4 + 1] << 8 | (uint32_t)d[h * 4 + 2] << 16 |
	       (uint32_t)d[h * 4 + 3] << 24;
}

static uint32_t md5_hash(const char *s, size_t len)
{
	unsigned char d[16];

	libhashkit_md5_signature((const unsigned char *)s, len, d);
	return md5_word(d, 0);
}

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320): Go's
 * crc32.ChecksumIEEE, Ruby's Zlib.crc32. Each placement has its own table,
 * made at build: nothing global to initialise or share between writers. */
static uint32_t *crc_table_new(void)
{
	uint32_t *t = malloc(256 * sizeof(*t));

	if (t == NULL)
		return NULL;
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		t[i] = c;
	}
	return t;
}

static uint32_t crc32_ieee(const uint32_t *t, const char *s, size_t len)
{
	uint32_t c = 0xffffffffu;

	for (size_t i = 0; i < len; i++)
		c = t[(c ^ (uint8_t)s[i]) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/* "#{try}#{key}" for failover rehashing: the decimal try number, then the
 * key, into buf (4 + K2MC_MC_KEY_MAX bytes); its length. */
static size_t prefixed(char *buf, int try, const char *key, size_t klen)
{
	size_t n = (size_t)snprintf(buf, 4, "%d", try);

	memcpy(buf + n, key, klen);
	return n + klen;
}

/* ---- continua (dalli, spymemcached) ---------------------------------------*/

/* A point while a continuum is built: seq is the order it was made in,
 * which decides between points of equal value (build_points). */
struct sort_point {
	uint32_t value;
	uint32_t seq;
	uint32_t server;
};

static int sort_point_cmp(const void *a, const void *b)
{
	const struct sort_point *x = a, *y = b;

	if (x->value != y->value)
		return x->value < y->value ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sorts sp[0..n) into p->points. Points of equal value: Java's TreeMap.put
 * (spymemcached) keeps the last one made; Ruby's sort_by (Dalli) keeps an
 * unspecified order, and Dalli's lookup takes the last of them, so the last
 * one made is kept for both (a 32-bit collision: rare, never in the
 * vectors). */
static int build_points(struct k2mc_placement *p, struct sort_point *sp, size_t n)
{
	size_t k = 0;

	qsort(sp, n, sizeof(*sp), sort_point_cmp);
	p->points = calloc(n > 0 ? n : 1, sizeof(*p->points));
	if (p->points == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (k > 0 && p->points[k - 1].value == sp[i].value)
			k--;
		p->points[k].value = sp[i].value;
		p->points[k].server = sp[i].server;
		k++;
	}
	p->npoints = k;
	return 0;
}

/* The first point whose value is >= h, past the end: npoints. */
static size_t lower_bound(const struct k2mc_placement *p, uint32_t h)
{
	size_t lo = 0, hi = p->npoints;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p->points[mid].value < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Dalli::Ring#server_for_hash_key: the last point whose value is <= h; when
 * there is none (h below every point), the last point of the continuum. */
static int dalli_lookup(const struct k2mc_placement *p, uint32_t h)
{
	size_t lo = 0, hi = p->npoints;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p->points[mid].value <= h)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (int)p->points[lo == 0 ? p->npoints - 1 : lo - 1].server;
}

/* KetamaNodeLocator.getNodeForKey: the first point at or after h, wrapping
 * to the first point of the continuum. */
static int spy_lookup(const struct k2mc_placement *p, uint32_t h)
{
	size_t i = lower_bound(p, h);

	return (int)p->points[i == p->npoints ? 0 : i].server;
}

/* Dalli's name for a server (Dalli::Protocol::Binary#name): "HOST:PORT" as
 * given (an IPv6 address without brackets), a unix socket's path. */
static void dalli_name(const struct k2mc_server *sv, char *buf, size_t size)
{
	if (sv->is_unix)
		snprintf(buf, size, "%s", sv->host);
	else
		snprintf(buf, size, "%s:%d", sv->host, sv->port);
}

/* Dalli::Ring#build_continuum: server s gets floor(n x 160 x weight /
 * total weight) points (Ruby: an Integer divided by a Float), point i at the
 * first 8 hex digits of SHA1("NAME:i"), a big-endian 32-bit value. */
static int build_dalli(struct k2mc_placement *p, const struct k2mc_config *cfg)
{
	long total = 0;
	size_t n = 0, cap = 0;
	struct sort_point *sp;
	int rc;

	for (int s = 0; s < cfg->nservers; s++)
		total += cfg->servers[s].weight;
	/* Ruby's Float#floor; the quotient is never negative, so a cast */
	for (int s = 0; s < cfg->nservers; s++)
		cap +=
		    (size_t)((double)((long)cfg->nservers * DALLI_POINTS * cfg->servers[s].weight) /
		             (double)total);
	sp = calloc(cap > 0 ? cap : 1, sizeof(*sp));
	if (sp == NULL)
		return -ENOMEM;
	for (int s = 0; s < cfg->nservers; s++) {
		const struct k2mc_server *sv = &cfg->servers[s];
		long count = (long)((double)((long)cfg->nservers * DALLI_POINTS * sv->weight) /
		                    (double)total);
		char name[300], label[320];
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen;

		dalli_name(sv, name, sizeof(name));
		for (long i = 0; i < count; i++) {
			int len = snprintf(label, sizeof(label), "%s:%ld", name, i);

			if (EVP_Digest(label, (size_t)len, md, &mdlen, EVP_sha1(), NULL) != 1) {
				free(sp);
				return -ENOMEM;
			}
			sp[n].value = (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 |
			              (uint32_t)md[2] << 8 | md[3];
			sp[n].seq = (uint32_t)n;
			sp[n].server = (uint32_t)s;
			n++;
		}
	}
	rc = build_points(p, sp, n);
	free(sp);
	return rc;
}

/* java.net.Inet6Address's text form: eight groups in lower-case hex without
 * leading zeros, never "::"-compressed. */
static void java_ipv6(const struct in6_addr *a, char *buf, size_t size)
{
	size_t off = 0;

	for (int i = 0; i < 8 && off < size; i++)
		off += (size_t)snprintf(buf + off, size - off, "%s%x", i ? ":" : "",
		                        (unsigned)a->s6_addr[2 * i] << 8 | a->s6_addr[2 * i + 1]);
}

/* An address as Java's InetSocketAddress.toString() prints it after the
 * host name and "/": "1.2.3.4", or "[0:0:0:0:0:0:0:1]" (JDK 14 and later);
 * an IPv4-mapped IPv6 address is an Inet4Address to Java. */
static void java_addr(int family, const void *a, char *buf, size_t size)
{
	char v6[64];

	if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a)) {
		inet_ntop(AF_INET, (const uint8_t *)a + 12, buf, (socklen_t)size);
	} else if (family == AF_INET6) {
		java_ipv6(a, v6, sizeof(v6));
		snprintf(buf, size, "[%s]", v6);
	} else {
		inet_ntop(AF_INET, a, buf, (socklen_t)size);
	}
}

/* spymemcached's name for a node (KetamaNodeKeyFormatter, format
 * SPYMEMCACHED): String.valueOf(the node's InetSocketAddress) without a
 * leading "/". That is "IP:PORT" for an address given as a literal, and
 * "HOST/IP:PORT" for a host name, IP being the address Java resolves it to
 * (InetAddress.getByName: IPv4 first unless java.net.preferIPv6Addresses). */
static int spy_name(const struct k2mc_server *sv, char *buf, size_t size, char *err, size_t errlen)
{
	unsigned char a[sizeof(struct in6_addr)];
	struct addrinfo hints = {0}, *res = NULL, *pick = NULL;
	char ip[80];
	int rc;

	if (sv->is_unix)
		return set_err(err, errlen,
		               "--distribution spymemcached: %s is a unix socket, which "
		               "spymemcached cannot reach (it names its ketama points after each "
		               "server's IP address and port)",
		               sv->host);
	if (inet_pton(AF_INET, sv->host, a) == 1) {
		java_addr(AF_INET, a, ip, sizeof(ip));
		snprintf(buf, size, "%s:%d", ip, sv->port);
		return 0;
	}
	if (inet_pton(AF_INET6, sv->host, a) == 1) {
		java_addr(AF_INET6, a, ip, sizeof(ip));
		snprintf(buf, size, "%s:%d", ip, sv->port);
		return 0;
	}
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(sv->host, NULL, &hints, &res);
	if (rc != 0)
		return set_err(err, errlen,
		               "--distribution spymemcached: cannot resolve %s (%s); spymemcached "
		               "names its ketama points after the address a host resolves to",
		               sv->host, gai_strerror(rc));
	for (struct addrinfo *ai = res; ai != NULL && pick == NULL; ai = ai->ai_next)
		if (ai->ai_family == AF_INET)
			pick = ai;
	for (struct addrinfo *ai = res; ai != NULL && pick == NULL; ai = ai->ai_next)
		if (ai->ai_family == AF_INET6)
			pick = ai;
	if (pick == NULL) {
		freeaddrinfo(res);
		return set_err(err, errlen, "--distribution spymemcached: %s has no IP address",
		               sv->host);
	}
	if (pick->ai_family == AF_INET)
		java_addr(AF_INET, &((struct sockaddr_in *)(void *)pick->ai_addr)->sin_addr, ip,
		          sizeof(ip));
	else
		java_addr(AF_INET6, &((struct sockaddr_in6 *)(void *)pick->ai_addr)->sin6_addr, ip,
		          sizeof(ip));
	freeaddrinfo(res);
	snprintf(buf, size, "%s/%s:%d", sv->host, ip, sv->port);
	return 0;
}

/* KetamaNodeLocator.setKetamaNodes, unweighted, KETAMA_HASH: for each node
 * in list order, reps 0..39, the four little-endian words of
 * MD5("NAME-REP") are its points (the libketama scheme; what differs from
 * libketama is the name, the collision rule and the failover). */
static int build_spy(struct k2mc_placement *p, const struct k2mc_config *cfg, char *err,
                     size_t errlen)
{
	size_t n = 0;
	struct sort_point *sp = calloc((size_t)cfg->nservers * SPY_REPS, sizeof(*sp));
	int rc = 0;

	if (sp == NULL)
		return -ENOMEM;
	for (int s = 0; s < cfg->nservers && rc == 0; s++) {
		char name[400], label[420];

		rc = spy_name(&cfg->servers[s], name, sizeof(name), err, errlen);
		for (int rep = 0; rc == 0 && rep < SPY_REPS / 4; rep++) {
			int len = snprintf(label, sizeof(label), "%s-%d", name, rep);
			unsigned char d[16];

			libhashkit_md5_signature((const unsigned char *)label, (size_t)len, d);
			for (int h = 0; h < 4; h++) {
				sp[n].value = md5_word(d, h);
				sp[n].seq = (uint32_t)n;
				sp[n].server = (uint32_t)s;
				n++;
			}
		}
	}
	if (rc == 0)
		rc = build_points(p, sp, n);
	free(sp);
	return rc;
}

/* ---- rendezvous (pymemcache) -----------------------------------------------*/

/* HashClient's node name (_make_client_key): "HOST:PORT" for a (host, port)
 * server, the path for a unix socket; RendezvousHash scores a key by
 * murmur3_32("NAME-KEY"). */
static int build_rendezvous(struct k2mc_placement *p, const struct k2mc_config *cfg)
{
	p->rv = calloc((size_t)cfg->nservers, sizeof(*p->rv));
	if (p->rv == NULL)
		return -ENOMEM;
	for (int s = 0; s < cfg->nservers; s++) {
		struct rv_node *r = &p->rv[s];
		char pre[320];
		size_t len, i;

		dalli_name(&cfg->servers[s], r->name, sizeof(r->name));
		len = (size_t)snprintf(pre, sizeof(pre), "%s-", r->name);
		for (i = 0; i + 4 <= len; i += 4)
			r->h1 = murmur_block(r->h1, (uint32_t)(uint8_t)pre[i] |
			                                (uint32_t)(uint8_t)pre[i + 1] << 8 |
			                                (uint32_t)(uint8_t)pre[i + 2] << 16 |
			                                (uint32_t)(uint8_t)pre[i + 3] << 24);
		r->ncarry = (uint32_t)(len - i);
		memcpy(r->carry, pre + i, r->ncarry);
		r->plen = (uint32_t)len;
	}
	return 0;
}

/* RendezvousHash.get_node over the servers in: the highest score wins; on a
 * tie, the greater name (Python's max(str, str)). */
static int rendezvous(const struct k2mc_placement *p, const char *key, size_t klen)
{
	uint8_t buf[4 + K2MC_MC_KEY_MAX];
	int64_t best = -1;
	int win = 0;

	if (klen > K2MC_MC_KEY_MAX)
		klen = K2MC_MC_KEY_MAX;
	for (int s = 0; s < p->n; s++) {
		const struct rv_node *r = &p->rv[s];
		uint32_t score;

		if (p->down_until != NULL && p->down_until[s] != 0)
			continue;
		memcpy(buf, r->carry, r->ncarry);
		memcpy(buf + r->ncarry, key, klen);
		score = murmur_finish(r->h1, buf, r->ncarry + klen, r->plen + klen);
		if ((int64_t)score > best ||
		    ((int64_t)score == best && strcmp(r->name, p->rv[win].name) > 0)) {
			best = score;
			win = s;
		}
	}
	return win;
}

/* ---- libmemcached's schemes ------------------------------------------------*/

/* The memcached_st the readers' libmemcached would have: the behaviour each
 * reader sets, then the servers in -m order with their weights (libmemcached
 * keeps that order: MEMCACHED_BEHAVIOR_SORT_HOSTS is off by default). */
static int build_memc(struct k2mc_placement *p, const struct k2mc_config *cfg, char *err,
                      size_t errlen)
{
	memcached_return_t rc = MEMCACHED_SUCCESS;

	p->memc = memcached_create(NULL);
	if (p->memc == NULL)
		return -ENOMEM;
	switch (cfg->distribution) {
	case K2MC_DIST_KETAMA:
		/* pylibmc {"ketama": True}: CONSISTENT_KETAMA, 100 points per
		 * server, libmemcached's default hash (one-at-a-time) */
		rc = memcached_behavior_set(p->memc, MEMCACHED_BEHAVIOR_KETAMA, 1);
		break;
	case K2MC_DIST_LIBKETAMA:
		/* PHP's OPT_LIBKETAMA_COMPATIBLE and pylibmc's "ketama_weighted"
		 * are this behaviour: MD5 for keys and points, 160 points per
		 * server shared out by weight */
		rc = memcached_behavior_set(p->memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
		break;
	default:
		/* modula: what a memcached_st does with no options */
		break;
	}
	if (rc == MEMCACHED_SUCCESS && p->eject)
		/* the continuum then leaves out servers whose next_retry is ahead */
		rc = memcached_behavior_set(p->memc, MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS, 1);
	for (int s = 0; rc == MEMCACHED_SUCCESS && s < cfg->nservers; s++) {
		const struct k2mc_server *sv = &cfg->servers[s];

		if (sv->is_unix)
			rc = memcached_server_add_unix_socket_with_weight(p->memc, sv->host,
			                                                  (uint32_t)sv->weight);
		else
			rc = memcached_server_add_with_weight(
			    p->memc, sv->host, (in_port_t)sv->port, (uint32_t)sv->weight);
		if (rc != MEMCACHED_SUCCESS)
			return set_err(err, errlen,
			               "--distribution %s: libmemcached refused server %s: %s",
			               k2mc_distribution_name(cfg->distribution), sv->host,
			               memcached_strerror(p->memc, rc));
	}
	if (rc != MEMCACHED_SUCCESS)
		return set_err(err, errlen, "--distribution %s: libmemcached: %s",
		               k2mc_distribution_name(cfg->distribution),
		               memcached_strerror(p->memc, rc));
	return 0;
}

/* Rebuilds libmemcached's continuum over the servers not ejected (as its
 * auto-eject does: live servers only, their weights shared out again). */
static int rebuild_memc(struct k2mc_placement *p)
{
	for (int s = 0; s < p->n; s++)
		memcached_instance_next_retry(
		    memcached_server_instance_by_position(p->memc, (uint32_t)s),
		    p->down_until[s] != 0 ? MC_EJECTED : 0);
	return memcached_behavior_set_distribution(
	           p->memc, memcached_behavior_get_distribution(p->memc)) == MEMCACHED_SUCCESS
	           ? 0
	           : -ENOMEM;
}

/* ---- build -----------------------------------------------------------------*/

struct k2mc_placement *k2mc_placement_new(const struct k2mc_config *cfg, char *err, size_t errlen)
{
	struct k2mc_placement *p;
	enum k2mc_distribution d = cfg->distribution;
	int rc = 0;

	if (cfg->nservers < 1) {
		set_err(err, errlen, "no memcached server to place keys on");
		return NULL;
	}
	if (!k2mc_distribution_weighted(d))
		for (int s = 0; s < cfg->nservers; s++)
			if (cfg->servers[s].weight != 1) {
				set_err(
				    err, errlen,
				    "-m: server %s has weight %d, but --distribution %s has no "
				    "weights (its readers, %s, place keys without them); weights "
				    "are for libketama and dalli",
				    cfg->servers[s].host, cfg->servers[s].weight,
				    k2mc_distribution_name(d), k2mc_placement_readers(d));
				return NULL;
			}
	if (cfg->mc_eject && cfg->nservers > 1 && (d == K2MC_DIST_MODULA || d == K2MC_DIST_CRC32)) {
		set_err(err, errlen,
		        "--mc-eject with --distribution %s: its readers (%s) never move a down "
		        "server's keys to another server, so they would not find them there; "
		        "leave --mc-eject out (records for a down server then wait for it)",
		        k2mc_distribution_name(d), k2mc_placement_readers(d));
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		set_err(err, errlen, "out of memory");
		return NULL;
	}
	p->dist = d;
	p->n = cfg->nservers;
	p->eject = cfg->mc_eject && cfg->nservers > 1;
	if (p->eject) {
		p->down_until = calloc((size_t)p->n, sizeof(*p->down_until));
		if (p->down_until == NULL)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		switch (d) {
		case K2MC_DIST_KETAMA:
		case K2MC_DIST_LIBKETAMA:
		case K2MC_DIST_MODULA:
			rc = build_memc(p, cfg, err, errlen);
			break;
		case K2MC_DIST_RENDEZVOUS:
			rc = build_rendezvous(p, cfg);
			break;
		case K2MC_DIST_CRC32:
			p->crc_table = crc_table_new();
			rc = p->crc_table == NULL ? -ENOMEM : 0;
			break;
		case K2MC_DIST_DALLI:
			p->crc_table = crc_table_new();
			rc = p->crc_table == NULL ? -ENOMEM : build_dalli(p, cfg);
			break;
		case K2MC_DIST_SPYMEMCACHED:
			rc = build_spy(p, cfg, err, errlen);
			break;
		default:
			rc = set_err(err, errlen, "unknown distribution %d", (int)d);
		}
	}
	if (rc == -ENOMEM)
		set_err(err, errlen, "out of memory building the --distribution %s placement",
		        k2mc_distribution_name(d));
	if (rc == 0 && p->points != NULL && p->npoints == 0)
		rc = set_err(err, errlen, "--distribution %s: no server has a point on the ring",
		             k2mc_distribution_name(d));
	if (rc != 0) {
		k2mc_placement_free(p);
		return NULL;
	}
	return p;
}

void k2mc_placement_free(struct k2mc_placement *p)
{
	if (p == NULL)
		return;
	if (p->memc != NULL)
		memcached_free(p->memc);
	free(p->points);
	free(p->rv);
	free(p->crc_table);
	free(p->down_until);
	free(p);
}

int k2mc_placement_check(const struct k2mc_config *cfg, char *err, size_t errlen)
{
	struct k2mc_placement *p = k2mc_placement_new(cfg, err, errlen);

	if (p == NULL)
		return -EINVAL;
	k2mc_placement_free(p);
	if (cfg->nservers > 1)
		k2mc_info("placement: --distribution %s over %d servers: keys go where %s looks "
		          "for them%s",
		          k2mc_distribution_name(cfg->distribution), cfg->nservers,
		          k2mc_placement_readers(cfg->distribution),
		          cfg->mc_eject ? "; --mc-eject: a down server's keys go where those "
		                          "clients send them while it is down"
		                        : "");
	return 0;
}

/* ---- per record ------------------------------------------------------------*/

static int is_down(const struct k2mc_placement *p, int s)
{
	return p->ndown > 0 && p->down_until[s] != 0;
}

/* A key whose reader cannot reach it while servers are down: Dalli gives
 * up on it after 20 rehashes, spymemcached sends it to its down primary
 * after 7 tries. No server is where that reader looks, so it is written to
 * the next server after its primary in -m order that is in, rather than
 * held for the primary: held, it would stop its writer, and --mc-eject asks
 * for the keys of a down server to be written elsewhere. The reader misses
 * it while the server is out, as it would anyway. One in 3^7 keys with one
 * of three spymemcached servers out; one in 3^20 for Dalli. */
static int next_in(const struct k2mc_placement *p, int primary)
{
	for (int i = 1; i < p->n; i++)
		if (!is_down(p, (primary + i) % p->n))
			return (primary + i) % p->n;
	return primary;
}

int k2mc_placement_server(const struct k2mc_placement *p, const char *key, size_t klen)
{
	char buf[4 + K2MC_MC_KEY_MAX];
	int s, primary;

	if (p->n == 1)
		return 0;
	if (klen > K2MC_MC_KEY_MAX)
		klen = K2MC_MC_KEY_MAX;
	switch (p->dist) {
	case K2MC_DIST_KETAMA:
	case K2MC_DIST_LIBKETAMA:
	case K2MC_DIST_MODULA:
		return (int)memcached_generate_hash(p->memc, key, klen);
	case K2MC_DIST_RENDEZVOUS:
		return rendezvous(p, key, klen);
	case K2MC_DIST_CRC32:
		/* gomemcache ServerList.PickServer: crc32.ChecksumIEEE(key) %
		 * len(addrs), the servers in SetServers' order */
		return (int)(crc32_ieee(p->crc_table, key, klen) % (uint32_t)p->n);
	case K2MC_DIST_DALLI:
		/* Dalli::Ring#server_from_continuum: CRC32 of the key; while the
		 * server found is not alive, CRC32 of "#{try}#{key}", try from 0;
		 * when all 20 are down Dalli gives up (next_in) */
		primary = dalli_lookup(p, crc32_ieee(p->crc_table, key, klen));
		if (!is_down(p, primary))
			return primary;
		for (int t = 0; t + 1 < DALLI_TRIES; t++) {
			s = dalli_lookup(
			    p, crc32_ieee(p->crc_table, buf, prefixed(buf, t, key, klen)));
			if (!is_down(p, s))
				return s;
		}
		return next_in(p, primary);
	case K2MC_DIST_SPYMEMCACHED: {
		/* MemcachedConnection.addOperation under FailureMode.Redistribute:
		 * the primary if active, else the first active node of
		 * KetamaIterator (7 tries: hash += KETAMA_HASH("#{try}#{key}")),
		 * else the primary again (next_in) */
		uint32_t h = md5_hash(key, klen);

		primary = spy_lookup(p, h);
		if (!is_down(p, primary))
			return primary;
		for (int t = 0; t < SPY_TRIES; t++) {
			s = spy_lookup(p, h);
			if (!is_down(p, s))
				return s;
			h += md5_hash(buf, prefixed(buf, t, key, klen));
		}
		return next_in(p, primary);
	}
	}
	return 0;
}

/* ---- --mc-eject -------------------------------------------------------------*/

int k2mc_placement_eject(struct k2mc_placement *p, int s, time_t until)
{
	if (!p->eject || s < 0 || s >= p->n)
		return 0;
	if (p->down_until[s] != 0) {
		p->down_until[s] = until;
		return 0;
	}
	/* the last server is not ejected: with every server down, records
	 * wait (libmemcached keeps its last continuum too) */
	if (p->ndown + 1 >= p->n)
		return 0;
	p->down_until[s] = until;
	p->ndown++;
	if (p->memc != NULL && rebuild_memc(p) != 0) {
		/* the old continuum stands (libmemcached keeps it on failure) */
		p->down_until[s] = 0;
		p->ndown--;
		return 0;
	}
	return 1;
}

int k2mc_placement_restore(struct k2mc_placement *p, time_t now)
{
	int changed = 0;

	if (p->ndown == 0)
		return 0;
	for (int s = 0; s < p->n; s++)
		if (p->down_until[s] != 0 && p->down_until[s] <= now) {
			p->down_until[s] = 0;
			p->ndown--;
			changed = 1;
		}
	/* a failed rebuild leaves libmemcached's old continuum, without the
	 * servers back: they are placed to again at the next change */
	if (changed && p->memc != NULL)
		(void)rebuild_memc(p);
	return changed;
}
