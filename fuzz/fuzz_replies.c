/* libFuzzer target over mcconn's reply parser (mcconn_feed: no socket).
 * The first input byte picks the dialect and the batch (how many sets and
 * deletes, which of them are deletes); the rest arrives as the server's
 * reply, cut into pieces at the positions the second byte picks, so that
 * lines split across reads are covered. Checks what a misbehaving server
 * must never achieve: a reply outside the enum, a batch complete with a
 * command left unanswered, a reply after a failure. Not a protocol model. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "workers/mcconn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(struct mc_conn *c, size_t n, int failed)
{
	for (size_t i = 0; i < n; i++) {
		enum mc_reply r = mcconn_reply(c, i);

		if (r > MC_CLIENT_ERROR)
			abort(); /* not a value of the enum */
		if (mcconn_done(c) && !failed && r == MC_NONE)
			abort(); /* complete, with a command unanswered */
		if (failed && r != MC_NONE)
			abort(); /* a broken stream's replies are all forgotten */
	}
	if (strlen(mcconn_error(c)) >= 512 || strlen(mcconn_last_reply_text(c)) >= 256)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	struct mc_conn *c;
	size_t n, off, step;
	int failed = 0;
	char key[16];

	if (!quiet) {
		k2mc_log_set_level(K2MC_LOG_ERR);
		quiet = 1;
	}
	if (size < 2)
		return 0;
	c = mcconn_new("127.0.0.1", 1);
	if (c == NULL)
		return 0;
	/* bit 7: meta (the guess before any connect), else classic: a
	 * connection's dialect is only known after mcconn_ensure, so the
	 * classic case goes through a connection that was told so */
	n = 1 + (data[0] & 7);
	if (!(data[0] & 0x80)) {
		mcconn_free(c);
		{
			struct transport_addr a = { .host = "127.0.0.1", .port = 1 };
			struct mcconn_opts o = { .protocol = MCCONN_PROTO_TEXT };
			char err[256];

			c = mcconn_new_opts(&a, &o, err, sizeof(err));
		}
		if (c == NULL)
			return 0;
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "k%zu", i);
		if (data[0] & (8u << (i % 4)))
			mcconn_queue_delete(c, key, strlen(key));
		else
			mcconn_queue_set(c, key, strlen(key), "value", 5, (uint32_t)i, 0);
	}
	step = 1 + data[1];
	data += 2;
	size -= 2;
	for (off = 0; off < size && !failed; off += step) {
		size_t k = size - off < step ? size - off : step;

		failed = mcconn_feed(c, data + off, k) != 0;
		check(c, n, failed);
		if (mcconn_done(c))
			break;
	}
	mcconn_free(c);
	return 0;
}
