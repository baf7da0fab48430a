/*
 * notify — the service manager's notify protocol ($NOTIFY_SOCKET), spoken
 * directly (one datagram per message), without libsystemd.
 *
 * Everything is a no-op when NOTIFY_SOCKET is unset: imapgate run by hand
 * or by another supervisor behaves as before.
 */
#ifndef IMAPGATE_NOTIFY_H
#define IMAPGATE_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

/*
 * Turn a NOTIFY_SOCKET value into an address: a path, or with a leading '@'
 * a name in the abstract namespace. Returns -1 for an empty, relative or
 * too long value.
 */
int notify_address(const char *value, struct sockaddr_un *sun, socklen_t *len);

/*
 * The watchdog interval from WATCHDOG_USEC and WATCHDOG_PID (either may be
 * NULL): in µs, 0 when there is none or it is meant for another process.
 */
uint64_t notify_watchdog_usec(const char *usec, const char *pid_str, long pid);

/*
 * Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID and remove them from
 * the environment (so that children such as preauth_command do not speak
 * for us). Returns 0, or -1 with a message in err when NOTIFY_SOCKET is
 * set but unusable.
 */
int notify_init(char *err, size_t errsz);

/* Is there a socket to notify? */
bool notify_enabled(void);

/* Send one message (lines "KEY=value" joined by '\n'). Failures are logged once. */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Half the watchdog interval, in ms (0: no watchdog). */
uint64_t notify_watchdog_ms(void);

void notify_close(void);

#endif
