/*
 * metrics — the counters of stats in Prometheus text format over HTTP, on
 * metrics_listen, served inside the daemon's loop.
 *
 * A deliberately tiny HTTP/1.0 server: one request per connection,
 * "GET /metrics" (or HEAD) answers 200 with the exposition, anything else
 * 404, then the connection is closed. At most METRICS_MAX_CLIENTS at once
 * (more get 503); each has METRICS_TIMEOUT_MS to send its request head (at
 * most METRICS_HEAD_MAX bytes, else 400), as long again to take the answer
 * and again to close its side.
 */
#ifndef IMAPGATE_METRICS_H
#define IMAPGATE_METRICS_H

#include "loop.h"

#define METRICS_MAX_CLIENTS 16
#define METRICS_HEAD_MAX 4096
#define METRICS_TIMEOUT_MS 5000

/*
 * Listen on hostport ("ADDRESS:PORT", "[V6]:PORT", or "PORT" for every
 * address) and serve from loop l. Whatever was open before is closed
 * first (clients included), unless hostport is the same as before, which
 * is a no-op; hostport NULL just closes. A host name is resolved with
 * getaddrinfo, which can block: call at start-up and reload only.
 *
 * Returns 0, or -1 with *error_r set to a message (valid until the next
 * call) and metrics off.
 */
int metrics_open(struct loop *l, const char *hostport, const char **error_r);

/* Close the listening sockets and every metrics client. */
void metrics_close(void);

/* Port of the first listening socket (useful with port 0), 0 when off. */
unsigned metrics_port(void);

/* Tests only: per-phase client timeout in ms (0 restores the default). */
void metrics_set_timeout_ms(unsigned ms);

#endif
