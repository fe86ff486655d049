/* CRC32C (Castagnoli): the checksum checkpoints carry so a corrupted payload is detected. */
#ifndef CRC32C_H
#define CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues crc over len bytes; start with crc = 0. crc32c("123456789") = 0xE3069283. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t len);
/* The portable table version (what crc32c_update uses without SSE4.2); for tests. */
uint32_t crc32c_update_table(uint32_t crc, const void *data, size_t len);

#endif
