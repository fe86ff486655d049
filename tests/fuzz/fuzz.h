/* Fuzz harness entries: each takes one input, returns 0, and aborts (after one line on stderr)
 * when it finds a defect. libFuzzer drives them (make fuzz), tests/test_fuzz_corpus.c replays
 * the kept corpus through the same code under gcc. */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "host/sf_err.h"

int fuzz_config_one(const uint8_t *data, size_t size);
int fuzz_safetensors_one(const uint8_t *data, size_t size);
int fuzz_ckpt_one(const uint8_t *data, size_t size);
int fuzz_shard_one(const uint8_t *data, size_t size);

/* A private temp directory for this process, removed at exit. */
const char *fuzz_tmpdir(void);
/* Writes bytes to dir/name (replacing it); aborts on an I/O error. Fills path. */
void fuzz_put_file(const char *name, const void *bytes, size_t len, char *path, size_t pathsz);
/* Names the input being replayed, for fuzz_fail's line. */
void fuzz_set_input_name(const char *name);
/* Prints "fuzz: <input>: <what>" and aborts: the input shows a defect. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* An input error must be an SF_EINPUT with one printable line; anything else is a defect. */
void fuzz_check_err(int rc, const sf_err *err, const char *what);

#endif
