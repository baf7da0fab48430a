/*
 * hash — SipHash-2-4, the keyed hash for every table whose keys peers
 * choose (addresses, user names): with a fixed hash they could pile their
 * entries into one chain.
 */
#ifndef IMAPGATE_HASH_H
#define IMAPGATE_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t siphash24(const uint8_t key[16], const void *data, size_t len);
/* SipHash under a per-process random key (made at first use). */
uint64_t hash_keyed(const void *data, size_t len);

#endif
