/* Servers for the issue-9 suites, and a Schema Registry for issue 26's: see
 * servers.c. */
#ifndef K2MC_TEST_SERVERS_H
#define K2MC_TEST_SERVERS_H

#include <stddef.h>

#include "harness.h"

/* "<tmpdir>/srv", mode 0777, under a temp dir memcached's user (nobody)
 * can traverse. */
const char *srv_shared_dir(void);

/* memcached -u nobody -s <tmpdir>/srv/mc.sock -a 0777, waited for; the
 * path into path. */
void srv_start_unix_memcached(struct h_proc *p, char *path, size_t len);
/* "get key" over the unix socket: the value's length (its bytes into buf,
 * NUL-terminated), or -1 if the key is missing. */
long srv_unix_get(const char *path, const char *key, char *buf, size_t len);

struct srv_certs {
	char ca[H_PATH_MAX], other_ca[H_PATH_MAX];
	char srv_crt[H_PATH_MAX], srv_key[H_PATH_MAX];
	/* a server certificate with DNS:localhost only, no IP SAN */
	char dns_crt[H_PATH_MAX], dns_key[H_PATH_MAX];
	char cli_crt[H_PATH_MAX], cli_key[H_PATH_MAX]; /* key encrypted: "s3cret" */
};
/* A CA, a second CA nobody trusts, server certificates signed by the first
 * (DNS:localhost + IP:127.0.0.1, and DNS:localhost only), a client
 * certificate with an encrypted key; EC P-256, in <tmpdir>/srv. */
void srv_make_certs(struct srv_certs *c);

struct srv_tls_mc {
	struct h_proc proc;
	int port;       /* TLS */
	int plain_port; /* a notls listener of the same server: to check what was written */
};
/* memcached -Z -o ssl_chain_cert=crt,ssl_key=key[,more_opts] with a TLS
 * listener and a plain one, waited for through the plain one. */
void srv_start_tls_memcached(struct srv_tls_mc *m, const char *crt, const char *key,
			     const char *more_opts);

/* A Confluent-compatible Schema Registry in this process (libmicrohttpd on
 * 127.0.0.1:port; port 0: any free one), one per test: answers GET
 * /schemas/ids/ID with the schema served for ID ({"schema": "..."}), 404
 * otherwise. Returns the port. Stop it to make the registry unreachable;
 * start it again on the same port to bring it back. */
int srv_registry_start(int port);
void srv_registry_serve(unsigned id, const char *schema);
void srv_registry_stop(void);

#endif
