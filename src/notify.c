/*
 * notify — see notify.h.
 */
#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int notify_fd = -1;
static struct sockaddr_un notify_sun;
static socklen_t notify_len;
static uint64_t watchdog_usec;
static bool send_failed;

int notify_address(const char *value, struct sockaddr_un *sun, socklen_t *len)
{
	size_t n = value ? strlen(value) : 0;

	/* The abstract name has no terminating NUL; a path has one. */
	if (n < 2 || n >= sizeof(sun->sun_path) || (value[0] != '/' && value[0] != '@'))
		return -1;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, value, n);
	if (value[0] == '@') {
		sun->sun_path[0] = '\0';
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	return 0;
}

uint64_t notify_watchdog_usec(const char *usec, const char *pid_str, long pid)
{
	unsigned long long v;
	char *end;

	if (usec == NULL || *usec == '\0')
		return 0;
	if (pid_str && *pid_str) {
		long p;

		errno = 0;
		p = strtol(pid_str, &end, 10);
		if (errno || *end || p != pid)
			return 0;
	}
	errno = 0;
	v = strtoull(usec, &end, 10);
	if (errno || *end || *usec == '-' || v == 0)
		return 0;
	return v;
}

int notify_init(char *err, size_t errsz)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	int rc = 0;

	watchdog_usec = notify_watchdog_usec(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), (long)getpid());
	if (sock && notify_address(sock, &notify_sun, &notify_len) == -1) {
		snprintf(err, errsz, "NOTIFY_SOCKET=%.200s is not an absolute path or @name", sock);
		rc = -1;
	} else if (sock) {
		notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (notify_fd == -1) {
			snprintf(err, errsz, "NOTIFY_SOCKET socket: %s", strerror(errno));
			rc = -1;
		}
	}
	if (notify_fd == -1)
		watchdog_usec = 0; /* nobody to tell */
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	return rc;
}

bool notify_enabled(void)
{
	return notify_fd != -1;
}

void notify_send(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	if (notify_fd == -1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = (int)sizeof(msg) - 1;
	if (sendto(notify_fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&notify_sun,
	           notify_len) == -1) {
		if (!send_failed)
			log_warn("event=notify_error error=\"%s\"", strerror(errno));
		send_failed = true;
	} else {
		send_failed = false;
	}
}

uint64_t notify_watchdog_ms(void)
{
	uint64_t ms = watchdog_usec / 2000;

	return watchdog_usec && ms == 0 ? 1 : ms;
}

void notify_close(void)
{
	if (notify_fd != -1)
		close(notify_fd);
	notify_fd = -1;
}
