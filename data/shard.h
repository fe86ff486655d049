/* Activation shards (SPEC §3): finding, validating and reading HDF5 files of activations and gradients. */
#ifndef SHARD_H
#define SHARD_H

#include <stdint.h>

#include "../host/sf_err.h"

typedef enum { SHARD_F32 = 0, SHARD_F16 = 1, SHARD_BF16 = 2 } shard_dtype;

typedef struct shard_file {
    char *path;
    int64_t rows;       /* N */
    int64_t row0;       /* first global row index of this file in the set */
    int64_t chunk_rows; /* rows per HDF5 chunk (0 = contiguous) */
} shard_file;

typedef struct shard_set {
    int n_files;
    shard_file *files;  /* sorted by path */
    int d;
    shard_dtype dtype;
    int has_gradients;  /* every file has `gradients` */
    int has_tokens;
    int64_t rows;       /* total over files */
    char model[256], hook[256]; /* root attributes of the first file ("" if absent) */
    int64_t context_size;       /* -1 if absent */
} shard_set;

/* Expands spec (a file, a directory of *.h5 sorted by name, or a glob) and validates every
 * file before returning: readable HDF5, 2-D `activations` of a supported dtype, same d and
 * dtype across files, `gradients` of the same shape and dtype in every file when
 * need_gradients. Errors name the file and what to do; SF_EINPUT. */
int shard_set_open(shard_set *set, const char *spec, int need_gradients, sf_err *err);
void shard_set_free(shard_set *set);

/* Reads global rows [row, row + count) of activations (and gradients if g != NULL) as
 * float32, crossing file boundaries. Thread-safe for distinct calls (HDF5 is serialised). */
int shard_set_read(const shard_set *set, int64_t row, int64_t count,
                   float *x,   // (count, d) out
                   float *g,   // (count, d) out or NULL
                   sf_err *err);

/* Name as in messages/docs: "float32", "float16", "bfloat16". */
const char *shard_dtype_name(shard_dtype t);

/* Half-precision conversions (IEEE binary16, bfloat16), exact round-to-nearest-even. */
float shard_f16_to_f32(uint16_t h);
float shard_bf16_to_f32(uint16_t h);
uint16_t shard_f32_to_f16(float f);
uint16_t shard_f32_to_bf16(float f);

/* HDF5 is not thread-safe (hdf5-serial): every HDF5 call in the process goes between these
 * (recursive mutex; the first lock also silences HDF5's own error-stack printing). */
/* Bytes of shard data this process has read so far (what a sweep saves is visible here). */
int64_t shard_bytes_read(void);
void shard_hdf5_lock(void);
void shard_hdf5_unlock(void);

#endif
