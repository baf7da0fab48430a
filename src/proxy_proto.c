/*
 * proxy_proto — the PROXY protocol v1 (text) and v2 (binary) header.
 *
 * It only says what the header claims; whether the sender may claim it
 * (trusted_proxies) is the listener's decision. It never reads past the
 * header, never accepts a partial or oversized one, and never allocates.
 */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* Next space-separated field of a v1 line into out; returns the rest. */
static const char *v1_field(const char *s, const char *end, char *out, size_t outsz)
{
	size_t n = 0;

	while (s < end && *s != ' ') {
		if (n + 1 >= outsz)
			return NULL;
		out[n++] = *s++;
	}
	out[n] = '\0';
	if (n == 0)
		return NULL;
	return s < end ? s + 1 : s;
}

static bool v1_port(const char *s, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && s[1] != '\0'))
		return false;
	v = strtoul(s, &end, 10);
	if (*end != '\0' || v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

static enum proxy_status parse_v1(const uint8_t *p, size_t len, struct proxy_info *info, size_t *used,
                                  const char **why)
{
	const char *s = (const char *)p, *end;
	const uint8_t *lf = memchr(p, '\n', len < 108 ? len : 108);
	char proto[8], a1[48], a2[48], p1[8], p2[8];
	uint16_t sp, dp;
	int fam;

	if (lf == NULL) {
		if (len >= 108) {
			*why = "PROXY v1 line too long";
			return PROXY_ERROR;
		}
		return PROXY_MORE;
	}
	if (lf == p || lf[-1] != '\r') {
		*why = "PROXY v1 line not ended by CRLF";
		return PROXY_ERROR;
	}
	end = (const char *)lf - 1;
	s += 6; /* "PROXY " */
	if ((s = v1_field(s, end, proto, sizeof(proto))) == NULL) {
		*why = "PROXY v1 missing protocol";
		return PROXY_ERROR;
	}
	memset(info, 0, sizeof(*info));
	*used = (size_t)(lf - p) + 1;
	if (strcmp(proto, "UNKNOWN") == 0) {
		info->local = true;
		return PROXY_DONE;
	}
	if (strcmp(proto, "TCP4") == 0)
		fam = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		fam = AF_INET6;
	else {
		*why = "PROXY v1 unknown protocol";
		return PROXY_ERROR;
	}
	if (!(s = v1_field(s, end, a1, sizeof(a1))) || !(s = v1_field(s, end, a2, sizeof(a2))) ||
	    !(s = v1_field(s, end, p1, sizeof(p1))) || !(s = v1_field(s, end, p2, sizeof(p2))) || s != end ||
	    !v1_port(p1, &sp) || !v1_port(p2, &dp)) {
		*why = "PROXY v1 malformed addresses or ports";
		return PROXY_ERROR;
	}
	if (fam == AF_INET) {
		struct sockaddr_in *src = (struct sockaddr_in *)&info->src, *dst = (struct sockaddr_in *)&info->dst;

		if (inet_pton(AF_INET, a1, &src->sin_addr) != 1 || inet_pton(AF_INET, a2, &dst->sin_addr) != 1) {
			*why = "PROXY v1 bad IPv4 address";
			return PROXY_ERROR;
		}
		src->sin_family = dst->sin_family = AF_INET;
		src->sin_port = htons(sp);
		dst->sin_port = htons(dp);
	} else {
		struct sockaddr_in6 *src = (struct sockaddr_in6 *)&info->src, *dst = (struct sockaddr_in6 *)&info->dst;

		if (inet_pton(AF_INET6, a1, &src->sin6_addr) != 1 || inet_pton(AF_INET6, a2, &dst->sin6_addr) != 1) {
			*why = "PROXY v1 bad IPv6 address";
			return PROXY_ERROR;
		}
		src->sin6_family = dst->sin6_family = AF_INET6;
		src->sin6_port = htons(sp);
		dst->sin6_port = htons(dp);
	}
	return PROXY_DONE;
}

static enum proxy_status parse_v2(const uint8_t *p, size_t len, struct proxy_info *info, size_t *used,
                                  const char **why)
{
	size_t body;
	uint8_t cmd, fam;

	if (len < 16)
		return PROXY_MORE;
	if ((p[12] & 0xf0) != 0x20) {
		*why = "PROXY v2 bad version";
		return PROXY_ERROR;
	}
	cmd = p[12] & 0x0f;
	fam = p[13];
	body = ((size_t)p[14] << 8) | p[15];
	if (16 + body > PROXY_HEADER_MAX) {
		*why = "PROXY v2 header too long";
		return PROXY_ERROR;
	}
	if (cmd > 1) {
		*why = "PROXY v2 bad command";
		return PROXY_ERROR;
	}
	if (len < 16 + body)
		return PROXY_MORE;
	memset(info, 0, sizeof(*info));
	*used = 16 + body;
	if (cmd == 0) { /* LOCAL: a health check from the proxy itself */
		info->local = true;
		return PROXY_DONE;
	}
	switch (fam) {
	case 0x11: /* TCP over IPv4 */
	case 0x12: { /* UDP over IPv4 (addresses alike) */
		struct sockaddr_in *src = (struct sockaddr_in *)&info->src, *dst = (struct sockaddr_in *)&info->dst;

		if (body < 12)
			break;
		src->sin_family = dst->sin_family = AF_INET;
		memcpy(&src->sin_addr, p + 16, 4);
		memcpy(&dst->sin_addr, p + 20, 4);
		memcpy(&src->sin_port, p + 24, 2);
		memcpy(&dst->sin_port, p + 26, 2);
		return PROXY_DONE;
	}
	case 0x21:
	case 0x22: {
		struct sockaddr_in6 *src = (struct sockaddr_in6 *)&info->src, *dst = (struct sockaddr_in6 *)&info->dst;

		if (body < 36)
			break;
		src->sin6_family = dst->sin6_family = AF_INET6;
		memcpy(&src->sin6_addr, p + 16, 16);
		memcpy(&dst->sin6_addr, p + 32, 16);
		memcpy(&src->sin6_port, p + 48, 2);
		memcpy(&dst->sin6_port, p + 50, 2);
		return PROXY_DONE;
	}
	case 0x00: /* UNSPEC: keep the socket's addresses */
		info->local = true;
		return PROXY_DONE;
	default:
		*why = "PROXY v2 unsupported address family";
		return PROXY_ERROR;
	}
	*why = "PROXY v2 address block too short";
	return PROXY_ERROR;
}

enum proxy_status proxy_parse(const uint8_t *p, size_t len, struct proxy_info *info, size_t *used,
                              const char **why)
{
	size_t n = len < 12 ? len : 12;

	*why = NULL;
	if (len == 0)
		return PROXY_MORE;
	if (memcmp(p, v2_sig, n) == 0)
		return n < 12 ? PROXY_MORE : parse_v2(p, len, info, used, why);
	n = len < 6 ? len : 6;
	if (memcmp(p, "PROXY ", n) == 0)
		return n < 6 ? PROXY_MORE : parse_v1(p, len, info, used, why);
	*why = "no PROXY protocol header";
	return PROXY_ERROR;
}
