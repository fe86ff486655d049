/* safetensors files (SPEC §4), written and validated by the project itself. */
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "sf_err.h"

typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_I32, ST_I64, ST_U8, ST_F64 } st_dtype;

#define ST_MAX_DIMS 4

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* writer: borrowed until commit; reader: points into the file buffer */
    size_t nbytes;
} st_tensor;

typedef struct st_meta {
    char *key, *value;
} st_meta;

/* Writer: collect tensors (borrowed pointers) and metadata, then commit durably
 * (temp file in the same directory, fsync, rename, fsync directory). */
typedef struct st_writer {
    st_tensor *t;
    int n, cap;
    st_meta *meta;
    int n_meta, cap_meta;
} st_writer;

void st_writer_init(st_writer *w);
void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data);
void st_writer_meta(st_writer *w, const char *key, const char *value);
int st_writer_commit(st_writer *w, const char *path, sf_err *err);
void st_writer_free(st_writer *w);

/* Reader: reads and validates the whole file (header JSON, dtypes, shapes x sizes = offsets,
 * offsets in bounds and non-overlapping). A damaged file gives SF_EINPUT naming the path. */
typedef struct st_file {
    char *path;
    uint8_t *buf;
    size_t len;
    st_tensor *t;
    int n;
    st_meta *meta;
    int n_meta;
} st_file;

int st_read(const char *path, st_file *f, sf_err *err);
const st_tensor *st_get(const st_file *f, const char *name);   /* NULL if absent */
const char *st_get_meta(const st_file *f, const char *key);    /* NULL if absent */
/* Looks up name and checks dtype and shape; SF_EINPUT naming file and tensor otherwise. */
int st_expect(const st_file *f, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
              const st_tensor **out, sf_err *err);
void st_file_free(st_file *f);

size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t); /* "F32", "BF16", ... as in the format */

#endif
