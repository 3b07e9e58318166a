/* Servers for the issue-9 suites (test_transport, test_deploy): memcached
 * on a unix socket, memcached with TLS and the certificates for it (made
 * with openssl in the test's temp dir), a "get" over a unix socket; and for
 * issue 26's (test_mapping_e2e), a Schema Registry serving Avro schemas by
 * id. Each helper asserts with Criterion: for Criterion suites only. */
#include "servers.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fake_mc.h"

/* The temp dir, traversable by memcached's user (nobody), and a
 * subdirectory it may create its socket in. */
const char *srv_shared_dir(void)
{
	static char dir[H_PATH_MAX];

	chmod(h_tmpdir(), 0755);
	h_tmppath(dir, sizeof(dir), "srv");
	mkdir(dir, 0777);
	chmod(dir, 0777);
	return dir;
}

static int unix_connects(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* memcached -s PATH -a 0777 (network off), started by PID and waited for. */
void srv_start_unix_memcached(struct h_proc *p, char *path, size_t len)
{
	const char *argv[] = { "memcached", "-u", "nobody", "-s", path, "-a", "0777",
			       "-m", "64", NULL };
	int64_t deadline = h_now_ms() + 10000;

	srv_shared_dir();
	h_tmppath(path, len, "srv/mc.sock");
	cr_assert_eq(h_spawn(p, "memcached-unix", argv, NULL), 0);
	while (!unix_connects(path)) {
		cr_assert_eq(h_exited(p->pid, NULL), 0, "memcached -s exited: %s",
			     h_tail_of(p->err_path, 5));
		cr_assert_lt(h_now_ms(), deadline, "memcached -s never listened on %s", path);
		usleep(20000);
	}
}

/* "get key" over the unix socket: the value's length (bytes into buf), -1
 * if missing. */
long srv_unix_get(const char *path, const char *key, char *buf, size_t len)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char req[300], rep[4096];
	size_t got = 0;
	unsigned flags;
	size_t vlen;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char *nl;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	snprintf(req, sizeof(req), "get %s\r\n", key);
	cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (got < sizeof(rep) - 1) {
		ssize_t n = read(fd, rep + got, sizeof(rep) - 1 - got);

		cr_assert_gt(n, 0);
		got += (size_t)n;
		rep[got] = '\0';
		if (got >= 5 && strcmp(rep + got - 5, "END\r\n") == 0)
			break;
	}
	close(fd);
	if (strcmp(rep, "END\r\n") == 0)
		return -1;
	cr_assert_eq(sscanf(rep, "VALUE %*s %u %zu", &flags, &vlen), 2, "reply '%s'", rep);
	nl = strstr(rep, "\r\n");
	cr_assert_not_null(nl);
	snprintf(buf, len, "%.*s", (int)vlen, nl + 2);
	return (long)vlen;
}

static void sh(const char *cmd)
{
	int rc = system(cmd);

	cr_assert_eq(rc, 0, "'%s' failed (%d)", cmd, rc);
}

/* A CA, a second CA nobody trusts, server certificates signed by the
 * first (with and without an IP SAN), a client certificate with an
 * encrypted key. EC P-256: quick to make. */
void srv_make_certs(struct srv_certs *c)
{
	const char *d = srv_shared_dir();
	char cmd[4096];

	h_tmppath(c->ca, sizeof(c->ca), "srv/ca.crt");
	h_tmppath(c->other_ca, sizeof(c->other_ca), "srv/other-ca.crt");
	h_tmppath(c->srv_crt, sizeof(c->srv_crt), "srv/srv.crt");
	h_tmppath(c->srv_key, sizeof(c->srv_key), "srv/srv.key");
	h_tmppath(c->dns_crt, sizeof(c->dns_crt), "srv/dns.crt");
	h_tmppath(c->dns_key, sizeof(c->dns_key), "srv/dns.key");
	h_tmppath(c->cli_crt, sizeof(c->cli_crt), "srv/cli.crt");
	h_tmppath(c->cli_key, sizeof(c->cli_key), "srv/cli.key");
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd %s; EC='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1';"
		 "openssl req -x509 $EC -nodes -keyout ca.key -out ca.crt -days 2 "
		 "  -subj '/CN=k2mc test CA' 2>/dev/null;"
		 "openssl req -x509 $EC -nodes -keyout other-ca.key -out other-ca.crt -days 2 "
		 "  -subj '/CN=someone else' 2>/dev/null;"
		 "sign() { openssl req $EC -nodes -keyout $1.key -out $1.csr -subj \"/CN=$2\" "
		 "  2>/dev/null; printf '%%s\\n' \"$3\" > $1.ext;"
		 "  openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
		 "  -out $1.crt -days 2 -extfile $1.ext 2>/dev/null; };"
		 "sign srv localhost 'subjectAltName=DNS:localhost,IP:127.0.0.1';"
		 "sign dns localhost 'subjectAltName=DNS:localhost';"
		 "sign cli k2mc 'extendedKeyUsage=clientAuth';"
		 "openssl pkey -in cli.key -aes256 -passout pass:s3cret -out cli.enc 2>/dev/null;"
		 "mv cli.enc cli.key; chmod 644 *.key *.crt",
		 d);
	sh(cmd);
}

/* memcached -Z with chain+key (and opts appended to -o), a TLS listener
 * and a plain one, waited for through the plain one. */
void srv_start_tls_memcached(struct srv_tls_mc *m, const char *crt, const char *key,
				const char *more_opts)
{
	char listen[128], o[2048];
	const char *argv[] = { "memcached", "-u", "nobody", "-U", "0", "-m", "64", "-Z",
			       "-l", listen, "-o", o, NULL };
	int64_t deadline = h_now_ms() + 10000;
	uint64_t pid = 0;

	m->port = h_free_port();
	m->plain_port = h_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d,notls:127.0.0.1:%d", m->port,
		 m->plain_port);
	snprintf(o, sizeof(o), "ssl_chain_cert=%s,ssl_key=%s%s%s", crt, key,
		 more_opts ? "," : "", more_opts ? more_opts : "");
	cr_assert_eq(h_spawn(&m->proc, "memcached-tls", argv, NULL), 0);
	while (fake_mc_stat(m->plain_port, "pid", &pid) != 0 || (pid_t)pid != m->proc.pid) {
		cr_assert_eq(h_exited(m->proc.pid, NULL), 0, "memcached -Z exited: %s",
			     h_tail_of(m->proc.err_path, 5));
		cr_assert_lt(h_now_ms(), deadline, "memcached -Z did not start");
		usleep(20000);
	}
}


/* ---- a Schema Registry ---------------------------------------------------------- */

#define SRV_SCHEMAS 16
/* written by the test thread (srv_registry_serve), read by the daemon's
 * thread: under schemas_mu */
static struct {
	unsigned id;
	char *answer; /* {"schema": "..."} */
} schemas[SRV_SCHEMAS];
static int nschemas;
static pthread_mutex_t schemas_mu = PTHREAD_MUTEX_INITIALIZER;
static struct MHD_Daemon *registry;

static enum MHD_Result registry_answer(void *cls, struct MHD_Connection *c, const char *path,
				       const char *method, const char *version,
				       const char *upload, size_t *upload_len, void **state)
{
	const char *body = "{\"error_code\":40403,\"message\":\"Schema not found\"}";
	unsigned status = MHD_HTTP_NOT_FOUND, id;
	struct MHD_Response *r;
	enum MHD_Result ret;
	char *copy;

	(void)cls, (void)method, (void)version, (void)upload, (void)upload_len, (void)state;
	pthread_mutex_lock(&schemas_mu);
	if (sscanf(path, "/schemas/ids/%u", &id) == 1)
		for (int i = 0; i < nschemas; i++)
			if (schemas[i].id == id) {
				body = schemas[i].answer;
				status = MHD_HTTP_OK;
			}
	copy = strdup(body);
	pthread_mutex_unlock(&schemas_mu);
	r = MHD_create_response_from_buffer(strlen(copy), copy, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Content-Type", "application/vnd.schemaregistry.v1+json");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

int srv_registry_start(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_null(registry, "one registry per test");
	registry = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
				    registry_answer, NULL, MHD_OPTION_SOCK_ADDR, &sa,
				    MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
	cr_assert_not_null(registry, "registry on port %d", port);
	return MHD_get_daemon_info(registry, MHD_DAEMON_INFO_BIND_PORT)->port;
}

void srv_registry_serve(unsigned id, const char *schema)
{
	json_t *a = json_pack("{s:s}", "schema", schema);

	cr_assert_not_null(a);
	pthread_mutex_lock(&schemas_mu);
	cr_assert_lt(nschemas, SRV_SCHEMAS);
	schemas[nschemas].id = id;
	schemas[nschemas].answer = json_dumps(a, JSON_COMPACT);
	nschemas++;
	pthread_mutex_unlock(&schemas_mu);
	json_decref(a);
}

void srv_registry_stop(void)
{
	if (registry != NULL)
		MHD_stop_daemon(registry);
	registry = NULL;
}
