/* libFuzzer target: the PROXY header parser must never read past len, and
 * a header found in a prefix must be found the same in the whole input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_info a, b;
	size_t ua = 0, ub = 0;
	const char *why;
	enum proxy_status sa, sb;
	uint8_t *copy = malloc(size ? size : 1);

	memcpy(copy, data, size);
	sa = proxy_parse(copy, size, &a, &ua, &why);
	if (sa == PROXY_DONE) {
		if (ua == 0 || ua > size)
			abort();
		/* Trailing bytes do not change the header. */
		sb = proxy_parse(copy, ua, &b, &ub, &why);
		if (sb != PROXY_DONE || ub != ua || memcmp(&a, &b, sizeof(a)) != 0)
			abort();
	}
	free(copy);
	return 0;
}
