/* Writing activation shards (SPEC §3) in the layout shard.h reads: used by `saeforge synth` and tests. */
#ifndef SHARD_WRITE_H
#define SHARD_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "../host/sf_err.h"
#include "shard.h"

typedef struct shard_write_opts {
    shard_dtype dtype;
    int64_t chunk_rows;       /* rows per HDF5 chunk; 0 = contiguous */
    int with_gradients;       /* create `gradients` [rows, d] */
    int with_tokens;          /* create `tokens` [rows] int32 */
    const char *model, *hook; /* root string attributes; NULL = absent */
    int64_t context_size;     /* root int attribute; < 0 = absent */
} shard_write_opts;

/* Incremental writer: the file is built under a temporary name and renamed into place by
 * shard_writer_commit, so a failed or abandoned write leaves nothing at path. */
typedef struct shard_writer {
    char *path, *tmp;
    int64_t rows;
    int d;
    shard_write_opts o;
    int64_t hid[4]; /* file, activations, gradients, tokens (hid_t) */
    void *conv;     /* conversion buffer for f16/bf16 */
    size_t conv_cap;
} shard_writer;

int shard_writer_open(shard_writer *w, const char *path, int64_t rows, int d, const shard_write_opts *o,
                      sf_err *err);
/* Writes rows [row0, row0+n). g is required when with_gradients, tokens when with_tokens. */
int shard_writer_write(shard_writer *w, int64_t row0, int64_t n,
                       const float *x,        // (n, d)
                       const float *g,        // (n, d) or NULL
                       const int32_t *tokens, // (n) or NULL
                       sf_err *err);
int shard_writer_commit(shard_writer *w, sf_err *err);
void shard_writer_abort(shard_writer *w); /* drops the temporary file */

/* One call: open, write all rows, commit. */
int shard_write(const char *path, int64_t rows, int d,
                const float *x,        // (rows, d)
                const float *g,        // (rows, d) or NULL
                const int32_t *tokens, // (rows) or NULL
                const shard_write_opts *o, sf_err *err);

/* The HDF5 file type for a shard dtype (caller closes it): IEEE f32 LE, IEEE f16 LE, or the
 * bfloat16 float type h5py writes (fields 15,7,8,0,7, exponent bias 127). */
int64_t shard_h5_file_type(shard_dtype t);

#endif
