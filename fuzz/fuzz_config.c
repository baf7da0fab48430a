/*
 * fuzz_config — libFuzzer target for config_parse: any bytes in, either a
 * config (then freed) or a set of error messages out. Must never crash,
 * leak or read outside the input, whatever the input holds.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"

static void report(void *ctx, const char *msg)
{
	size_t *total = ctx;
	*total += strlen(msg); /* touch every byte of the message */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = NULL;
	size_t total = 0;

	if (config_parse("fuzz.conf", (const char *)data, size, &cfg, report, &total) == 0) {
		if (!cfg || cfg->n_listen == 0 || cfg->n_listen > CONFIG_MAX_LISTEN)
			__builtin_trap();
		config_free(&cfg);
	} else if (cfg || total == 0) {
		__builtin_trap(); /* failure must leave cfg alone and say why */
	}
	return 0;
}
