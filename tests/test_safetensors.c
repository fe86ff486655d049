/* Tests for host/safetensors.c: round trip, metadata, and every class of damaged header. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/fsutil.h"
#include "host/safetensors.h"

static char dir[256];
static char path[512];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/sf_st_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
}
static void teardown(void) { fs_remove_tree(dir); }

TestSuite(safetensors, .init = setup, .fini = teardown);

Test(safetensors, round_trip)
{
    float a[6] = {1, -2, 3.5f, 4, 5, 6e-8f};
    int32_t b[3] = {7, -8, 2147483647};
    uint8_t c[3] = {1, 2, 255};
    double e[2] = {1e300, -0.25};
    uint16_t h[5] = {0x3c00, 0, 1, 0x7c00, 0xffff};
    st_writer w;
    st_writer_init(&w);
    int64_t sa[2] = {2, 3}, sb[1] = {3}, sc[1] = {3}, se[1] = {2}, sh[3] = {1, 5, 1}, s0[1] = {0};
    st_writer_add(&w, "u8", ST_U8, 1, sc, c); /* odd size first: the writer must still align */
    st_writer_add(&w, "W_dec", ST_F32, 2, sa, a);
    st_writer_add(&w, "ids", ST_I32, 1, sb, b);
    st_writer_add(&w, "d", ST_F64, 1, se, e);
    st_writer_add(&w, "half", ST_F16, 3, sh, h);
    st_writer_add(&w, "empty", ST_F32, 1, s0, NULL);
    st_writer_meta(&w, "model", "gpt2 \"small\"\\\n\ttab");
    st_writer_meta(&w, "k", "32");
    st_writer_meta(&w, "k", "64"); /* later value wins */
    sf_err err = {0};
    cr_assert_eq(st_writer_commit(&w, path, &err), SF_OK, "%s", err.msg);
    st_writer_free(&w);

    char *raw;
    size_t len;
    cr_assert_eq(fs_read_all(path, &raw, &len, &err), SF_OK);
    uint64_t hl;
    memcpy(&hl, raw, 8);
    cr_assert_eq(hl % 8, 0, "header padded to a multiple of 8");
    cr_assert_eq(raw[8], '{');
    free(raw);

    st_file f;
    cr_assert_eq(st_read(path, &f, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(f.n, 6);
    const st_tensor *t;
    cr_assert_eq(st_expect(&f, "W_dec", ST_F32, 2, sa, &t, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(t->data, a, sizeof a), 0);
    cr_assert_eq(((uintptr_t)t->data - (uintptr_t)f.buf) % 4, 0, "f32 data aligned in the file");
    cr_assert_eq(st_expect(&f, "ids", ST_I32, 1, sb, &t, &err), SF_OK);
    cr_assert_eq(memcmp(t->data, b, sizeof b), 0);
    cr_assert_eq(st_expect(&f, "u8", ST_U8, 1, sc, &t, &err), SF_OK);
    cr_assert_eq(memcmp(t->data, c, sizeof c), 0);
    cr_assert_eq(st_expect(&f, "d", ST_F64, 1, se, &t, &err), SF_OK);
    cr_assert_eq(memcmp(t->data, e, sizeof e), 0);
    cr_assert_eq(st_expect(&f, "half", ST_F16, 3, sh, &t, &err), SF_OK);
    cr_assert_eq(memcmp(t->data, h, sizeof h), 0);
    cr_assert_eq(st_get(&f, "empty")->nbytes, 0);
    cr_assert_null(st_get(&f, "nope"));
    cr_assert_str_eq(st_get_meta(&f, "model"), "gpt2 \"small\"\\\n\ttab");
    cr_assert_str_eq(st_get_meta(&f, "k"), "64");
    cr_assert_null(st_get_meta(&f, "absent"));

    int64_t wrong[2] = {3, 2};
    cr_assert_eq(st_expect(&f, "W_dec", ST_F32, 2, wrong, &t, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "W_dec") && strstr(err.msg, path), "%s", err.msg);
    cr_assert_eq(st_expect(&f, "W_dec", ST_BF16, 2, sa, &t, &err), SF_EINPUT);
    cr_assert_eq(st_expect(&f, "missing", ST_F32, 2, sa, &t, &err), SF_EINPUT);
    st_file_free(&f);
}

Test(safetensors, dtype_table)
{
    cr_assert_eq(st_dtype_size(ST_BF16), 2);
    cr_assert_eq(st_dtype_size(ST_I64), 8);
    cr_assert_str_eq(st_dtype_name(ST_BF16), "BF16");
    cr_assert_str_eq(st_dtype_name(ST_U8), "U8");
}

/* Writes [8-byte len][header][data] with the header given literally. */
static void write_raw(const char *hdr, const void *data, size_t dlen, int64_t len_override)
{
    size_t hl = strlen(hdr);
    size_t total = 8 + hl + dlen;
    unsigned char *buf = malloc(total);
    uint64_t l = len_override >= 0 ? (uint64_t)len_override : hl;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(l >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    if (dlen)
        memcpy(buf + 8 + hl, data, dlen);
    sf_err err;
    cr_assert_eq(fs_write_atomic(path, buf, total, &err), SF_OK);
    free(buf);
}

static void expect_damaged(const char *why)
{
    st_file f;
    sf_err err = {0};
    int rc = st_read(path, &f, &err);
    cr_assert_eq(rc, SF_EINPUT, "%s: expected SF_EINPUT, got %d", why, rc);
    cr_assert(strstr(err.msg, path) != NULL, "%s: message names the file: %s", why, err.msg);
    cr_assert(strstr(err.msg, "damaged safetensors") != NULL, "%s: %s", why, err.msg);
    cr_assert_null(strchr(err.msg, '\n'), "one line");
}

static const unsigned char data8[8] = {0};

Test(safetensors, valid_hand_written_header_reads)
{
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}, \"__metadata__\":{\"x\":\"\\u00e9\\ud83d\\ude00\"}}",
              data8, 8, -1);
    st_file f;
    sf_err err = {0};
    cr_assert_eq(st_read(path, &f, &err), SF_OK, "%s", err.msg);
    cr_assert_str_eq(st_get_meta(&f, "x"), "\xc3\xa9\xf0\x9f\x98\x80");
    st_file_free(&f);
}

Test(safetensors, damaged_lengths)
{
    sf_err err;
    cr_assert_eq(fs_write_atomic(path, "abc", 3, &err), SF_OK);
    expect_damaged("shorter than 8 bytes");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data8, 8, 1000);
    expect_damaged("header length past the end");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data8, 8, (int64_t)1 << 62);
    expect_damaged("huge header length");
}

Test(safetensors, damaged_json)
{
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", data8, 8, -1);
    expect_damaged("unclosed object");
    write_raw("{\"a\":{\"dtype\":\"F32\" \"shape\":[2],\"data_offsets\":[0,8]}}", data8, 8, -1);
    expect_damaged("missing comma");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", data8, 8, -1);
    expect_damaged("float in shape");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}xx", data8, 8, -1);
    expect_damaged("trailing garbage");
    write_raw("[1,2]", data8, 0, -1);
    expect_damaged("not an object");
    write_raw("{\"a\\q\":{}}", data8, 0, -1);
    expect_damaged("bad escape");
    write_raw("{\"__metadata__\":{\"k\":3}}", data8, 0, -1);
    expect_damaged("non-string metadata");
}

Test(safetensors, damaged_entries)
{
    unsigned char d16[16] = {0};
    write_raw("{\"a\":{\"dtype\":\"Q8\",\"shape\":[2],\"data_offsets\":[0,8]}}", data8, 8, -1);
    expect_damaged("unknown dtype");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", data8, 8, -1);
    expect_damaged("offsets out of bounds");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data8, 8, -1);
    expect_damaged("wrong size");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", data8, 8, -1);
    expect_damaged("end before begin");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              d16, 16, -1);
    expect_damaged("overlapping");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
              d16, 16, -1);
    expect_damaged("gap");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d16, 16, -1);
    expect_damaged("trailing data not covered");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
              d16, 16, -1);
    expect_damaged("duplicate name");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", data8, 8, -1);
    expect_damaged("negative dim");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", data8, 8, -1);
    expect_damaged("too many dims");
    write_raw("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", data8, 8, -1);
    expect_damaged("missing dtype");
    write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", data8, 8, -1);
    expect_damaged("shape product overflow");
}

Test(safetensors, missing_file)
{
    st_file f;
    sf_err err = {0};
    cr_assert_eq(st_read(path, &f, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, path) != NULL);
}

/* Found by the fuzz harness: a later duplicate metadata key was readable but lost on rewrite. */
Test(safetensors, duplicate_metadata_key_is_damage)
{
    write_raw("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", data8, 0, -1);
    expect_damaged("duplicate metadata key");
}

/* A name quoted in a message is escaped and cut: no raw control bytes, bounded length. */
Test(safetensors, quoted_names_escaped_and_cut)
{
    char hdr[4096];
    int o = snprintf(hdr, sizeof hdr, "{\"x\\u001b[2J\\n\\u0085\\u2028");
    for (int i = 0; i < 500; i++)
        o += snprintf(hdr + o, sizeof hdr - (size_t)o, "y");
    snprintf(hdr + o, sizeof hdr - (size_t)o, "\":{\"dtype\":\"Q8\",\"shape\":[2],\"data_offsets\":[0,8]}}");
    write_raw(hdr, data8, 8, -1);
    expect_damaged("unknown dtype, hostile name");
    st_file f;
    sf_err err = {0};
    cr_assert_eq(st_read(path, &f, &err), SF_EINPUT);
    for (const char *p = err.msg; *p; p++)
        cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "raw control byte in: %s", err.msg);
    /* C0 as \xNN; U+0085 (C1) and U+2028 (line separator) byte by byte: both end lines somewhere */
    cr_assert(strstr(err.msg, "tensor `x\\x1b[2J\\x0a\\xc2\\x85\\xe2\\x80\\xa8yyy"), "%s", err.msg);
    cr_assert(strstr(err.msg, "y...`"), "cut: %s", err.msg);
    cr_assert(strlen(err.msg) < strlen(path) + 250, "%zu bytes: %s", strlen(err.msg), err.msg);
}
