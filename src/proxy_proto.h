/*
 * proxy_proto — parser for the PROXY protocol header (HAProxy's spec,
 * versions 1 and 2) that a trusted load balancer sends before any IMAP
 * byte. Pure: no I/O, no allocation.
 */
#ifndef IMAPGATE_PROXY_PROTO_H
#define IMAPGATE_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest header accepted (v1 is at most 107 bytes; v2 with TLVs more). */
#define PROXY_HEADER_MAX 1024

enum proxy_status {
	PROXY_MORE,  /* not enough bytes yet */
	PROXY_DONE,  /* a header was parsed; *used bytes belong to it */
	PROXY_ERROR, /* not a valid header; *why says why */
};

struct proxy_info {
	bool local; /* v2 LOCAL or v1 UNKNOWN: keep the socket's own address */
	struct sockaddr_storage src, dst;
};

/*
 * Look at the first len bytes received on the connection. Returns DONE with
 * *used set and *info filled, MORE when the bytes so far are a valid prefix
 * of a header, or ERROR with *why a static text.
 */
enum proxy_status proxy_parse(const uint8_t *p, size_t len, struct proxy_info *info, size_t *used,
                              const char **why);

#endif
