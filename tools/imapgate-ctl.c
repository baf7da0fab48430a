/*
 * imapgate-ctl — the operator's command line for a running imapgate.
 *
 * It finds the control socket through the config (control_socket) or -s,
 * sends one command line, prints the reply body and exits 0 for OK, 1 for
 * an error reported by the daemon, 2 when the daemon cannot be reached or
 * the command line is wrong.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"

static void usage(void)
{
	fprintf(stderr,
	        "usage: imapgate-ctl [-f CONFIG | -s SOCKET] COMMAND [ARGS] [--json]\n"
	        "commands:\n"
	        "  status                       counters, sessions, bans\n"
	        "  bans                         active bans\n"
	        "  ban ADDRESS[/PREFIX] [SECS]  ban now (default guard_bantime)\n"
	        "  unban ADDRESS[/PREFIX] [--forget]\n"
	        "  why ADDRESS                  recent failures of that address\n"
	        "  pool                         backend connections\n"
	        "  trace [USER | --clear]       protocol trace: who, start, stop\n"
	        "  reload                       re-read the configuration\n"
	        "  help                         what the daemon answers to\n");
	exit(2);
}

static void report(void *ctx, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "%s\n", msg);
}

int main(int argc, char **argv)
{
	const char *conf = CONFIG_DEFAULT_PATH, *sock = NULL;
	char line[4096], reply[65536];
	size_t len = 0, got = 0;
	struct sockaddr_un sun;
	struct config *cfg = NULL;
	int opt, fd, rc;
	char *nl;

	while ((opt = getopt(argc, argv, "+f:s:h")) != -1) {
		switch (opt) {
		case 'f': conf = optarg; break;
		case 's': sock = optarg; break;
		default: usage();
		}
	}
	if (optind >= argc)
		usage();
	if (sock == NULL) {
		if (config_load(conf, &cfg, report, NULL) == -1) {
			fprintf(stderr, "imapgate-ctl: cannot read %s (use -s SOCKET)\n", conf);
			return 2;
		}
		if (cfg->control_socket == NULL) {
			fprintf(stderr, "imapgate-ctl: %s sets no control_socket\n", conf);
			return 2;
		}
		sock = cfg->control_socket;
	}
	for (int i = optind; i < argc; i++) {
		size_t n = strlen(argv[i]);

		if (strpbrk(argv[i], "\r\n") || len + n + 2 > sizeof(line)) {
			fprintf(stderr, "imapgate-ctl: bad argument\n");
			return 2;
		}
		if (len)
			line[len++] = ' ';
		memcpy(line + len, argv[i], n);
		len += n;
	}
	line[len++] = '\n';

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(sock) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "imapgate-ctl: socket path too long: %s\n", sock);
		return 2;
	}
	memcpy(sun.sun_path, sock, strlen(sock));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "imapgate-ctl: cannot connect to %s: %s (is imapgate running?)\n", sock,
		        strerror(errno));
		return 2;
	}
	if (write(fd, line, len) != (ssize_t)len) {
		fprintf(stderr, "imapgate-ctl: write to %s: %s\n", sock, strerror(errno));
		return 2;
	}
	/* Print as it arrives; the first line says OK or ERR. */
	rc = -1;
	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t r;

		if (poll(&pfd, 1, 10000) <= 0) {
			fprintf(stderr, "imapgate-ctl: no answer from %s\n", sock);
			return 2;
		}
		r = read(fd, reply + got, sizeof(reply) - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		reply[got] = '\0';
		if (rc == -1 && (nl = strchr(reply, '\n')) != NULL) {
			*nl = '\0';
			if (strcmp(reply, "OK") == 0) {
				rc = 0;
			} else {
				fprintf(stderr, "imapgate-ctl: %s\n", strncmp(reply, "ERR ", 4) == 0 ? reply + 4 : reply);
				rc = 1;
			}
			got -= (size_t)(nl + 1 - reply);
			memmove(reply, nl + 1, got);
		}
		if (rc != -1) {
			fwrite(reply, 1, got, rc == 0 ? stdout : stderr);
			got = 0;
		}
	}
	close(fd);
	config_free(&cfg);
	if (rc == -1) {
		fprintf(stderr, "imapgate-ctl: connection closed without an answer\n");
		return 2;
	}
	return rc;
}
