/* CRC32C: the standard check value, and the SSE4.2 path equal to the table path. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "host/crc32c.h"

Test(crc32c, check_value)
{
    cr_assert_eq(crc32c_update(0, "123456789", 9), 0xE3069283u);
    cr_assert_eq(crc32c_update_table(0, "123456789", 9), 0xE3069283u);
    cr_assert_eq(crc32c_update(0, "", 0), 0u);
}

Test(crc32c, incremental_and_paths_agree)
{
    enum { LEN = 4099 };
    unsigned char *buf = malloc(LEN);
    uint32_t r = 12345;
    for (int i = 0; i < LEN; i++) {
        r = r * 1664525u + 1013904223u;
        buf[i] = (unsigned char)(r >> 24);
    }
    for (int len = 0; len < 70; len++)
        cr_assert_eq(crc32c_update(0, buf + 1, (size_t)len), crc32c_update_table(0, buf + 1, (size_t)len),
                     "len %d", len);
    uint32_t whole = crc32c_update(0, buf, LEN);
    uint32_t parts = crc32c_update(crc32c_update(crc32c_update(0, buf, 3), buf + 3, 1000), buf + 1003, LEN - 1003);
    cr_assert_eq(whole, parts);
    cr_assert_eq(whole, crc32c_update_table(0, buf, LEN));
    buf[2000] ^= 1;
    cr_assert_neq(crc32c_update(0, buf, LEN), whole);
    free(buf);
}
