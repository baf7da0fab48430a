/* libFuzzer target: a peer's guard event line. decode must never read past
 * len; a line it accepts must encode back to exactly the same bytes, and
 * that encoding must decode to the same event. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "guard_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gev e, again;
	const char *why = NULL;
	char text[GEV_TEXT_MAX];
	char *copy = malloc(size ? size : 1);
	int n;

	memcpy(copy, data, size);
	if (gev_decode(copy, size, &e, &why) == 0) {
		n = gev_encode(&e, text, sizeof text);
		CHECK(n >= 0 && (size_t)n == size);
		CHECK(memcmp(text, copy, size) == 0);
		CHECK(gev_decode(text, (size_t)n, &again, &why) == 0);
		CHECK(memcmp(&e, &again, sizeof e) == 0);
	} else {
		CHECK(why != NULL);
	}
	free(copy);
	return 0;
}
