/* The fuzz targets' invariant check: a failed one aborts, which libFuzzer
 * reports with the input that broke it. */
#ifndef IMAPGATE_FUZZ_CHECK_H
#define IMAPGATE_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                            \
	do {                                                                                   \
		if (!(cond)) {                                                                 \
			fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);       \
			abort();                                                               \
		}                                                                              \
	} while (0)

#endif
