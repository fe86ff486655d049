/* Shard writer (see shard_write.h): HDF5 file with activations (+ gradients, tokens) in
 * f32/f16/bf16, chunked or contiguous, written to a temp name and renamed into place. */
#include "shard_write.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/fsutil.h"
#include "../kernels/sf_check.h"

enum { W_FILE = 0, W_ACT, W_GRAD, W_TOK };

int64_t shard_h5_file_type(shard_dtype t)
{
    if (t == SHARD_F32)
        return H5Tcopy(H5T_IEEE_F32LE);
    /* Shrink an IEEE f32 description: fields first (they fit in 32 bits), then the size. */
    hid_t ft = H5Tcopy(H5T_IEEE_F32LE);
    if (t == SHARD_F16) {
        SF_CHECK(H5Tset_fields(ft, 15, 10, 5, 0, 10) >= 0);
        SF_CHECK(H5Tset_size(ft, 2) >= 0);
        SF_CHECK(H5Tset_ebias(ft, 15) >= 0);
    } else {
        SF_CHECK(H5Tset_fields(ft, 15, 7, 8, 0, 7) >= 0);
        SF_CHECK(H5Tset_size(ft, 2) >= 0);
        SF_CHECK(H5Tset_ebias(ft, 127) >= 0);
    }
    SF_CHECK(H5Tset_offset(ft, 0) >= 0);
    SF_CHECK(H5Tset_precision(ft, 16) >= 0);
    return ft;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    SF_CHECK(p);
    memcpy(p, s, n);
    return p;
}

static int put_str_attr(hid_t file, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, t, &value) >= 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return ok ? 0 : -1;
}

static int put_int_attr(hid_t file, const char *name, int64_t v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return ok ? 0 : -1;
}

static hid_t make_dset(hid_t file, const char *name, hid_t type, int rank, int64_t rows, int d, int64_t chunk_rows)
{
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)d};
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk_rows > 0 && rows > 0) {
        hsize_t cd[2] = {(hsize_t)(chunk_rows < rows ? chunk_rows : rows), (hsize_t)d};
        H5Pset_chunk(pl, rank, cd);
    } else {
        H5Pset_layout(pl, H5D_CONTIGUOUS);
    }
    hid_t ds = H5Dcreate2(file, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Pclose(pl);
    H5Sclose(sp);
    return ds;
}

static void close_all(shard_writer *w)
{
    for (int i = 3; i >= 0; i--) {
        if (w->hid[i] >= 0) {
            if (i == W_FILE)
                H5Fclose((hid_t)w->hid[i]);
            else
                H5Dclose((hid_t)w->hid[i]);
            w->hid[i] = -1;
        }
    }
}

static void writer_release(shard_writer *w)
{
    free(w->path);
    free(w->tmp);
    free(w->conv);
    w->path = w->tmp = NULL;
    w->conv = NULL;
}

int shard_writer_open(shard_writer *w, const char *path, int64_t rows, int d, const shard_write_opts *o,
                      sf_err *err)
{
    memset(w, 0, sizeof *w);
    for (int i = 0; i < 4; i++)
        w->hid[i] = -1;
    SF_CHECK(rows >= 0 && d >= 1);
    w->path = xstrdup(path);
    size_t cap = strlen(path) + 32;
    w->tmp = malloc(cap);
    SF_CHECK(w->tmp);
    snprintf(w->tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    w->rows = rows;
    w->d = d;
    w->o = *o;
    w->o.model = w->o.hook = NULL; /* written now; the caller's strings need not outlive open */

    shard_hdf5_lock();
    int rc = SF_OK;
    hid_t file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    w->hid[W_FILE] = file;
    if (file < 0) {
        rc = sf_fail(err, SF_EINPUT, "%s: cannot create shard file; check the directory exists and is writable", path);
        goto out;
    }
    hid_t ft = (hid_t)shard_h5_file_type(o->dtype);
    w->hid[W_ACT] = make_dset(file, "activations", ft, 2, rows, d, o->chunk_rows);
    if (o->with_gradients)
        w->hid[W_GRAD] = make_dset(file, "gradients", ft, 2, rows, d, o->chunk_rows);
    H5Tclose(ft);
    if (o->with_tokens)
        w->hid[W_TOK] = make_dset(file, "tokens", H5T_STD_I32LE, 1, rows, 1,
                                  o->chunk_rows);
    int ok = w->hid[W_ACT] >= 0 && (!o->with_gradients || w->hid[W_GRAD] >= 0) &&
             (!o->with_tokens || w->hid[W_TOK] >= 0);
    if (ok && o->model)
        ok = put_str_attr(file, "model", o->model) == 0;
    if (ok && o->hook)
        ok = put_str_attr(file, "hook", o->hook) == 0;
    if (ok && o->context_size >= 0)
        ok = put_int_attr(file, "context_size", o->context_size) == 0;
    if (!ok)
        rc = sf_fail(err, SF_EFAIL, "%s: cannot create datasets in shard file; check free disk space", path);
out:
    if (rc != SF_OK) {
        close_all(w);
        unlink(w->tmp);
        writer_release(w);
    }
    shard_hdf5_unlock();
    return rc;
}

static int write_rows(shard_writer *w, int which, int64_t row0, int64_t n, const void *src, hid_t memtype,
                      int width)
{
    hid_t ds = (hid_t)w->hid[which];
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, (hsize_t)width};
    int rank = which == W_TOK ? 1 : 2;
    hid_t fsp = H5Dget_space(ds), msp = H5Screate_simple(rank, count, NULL);
    int ok = fsp >= 0 && msp >= 0 && H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
             H5Dwrite(ds, memtype, msp, fsp, H5P_DEFAULT, src) >= 0;
    if (msp >= 0)
        H5Sclose(msp);
    if (fsp >= 0)
        H5Sclose(fsp);
    return ok ? 0 : -1;
}

/* Converts to the file's element layout ourselves (exact RNE), so HDF5 copies bytes only. */
static int write_matrix(shard_writer *w, int which, int64_t row0, int64_t n, const float *src)
{
    size_t cnt = (size_t)n * (size_t)w->d;
    if (w->o.dtype == SHARD_F32)
        return write_rows(w, which, row0, n, src, H5T_NATIVE_FLOAT, w->d);
    if (cnt * 2 > w->conv_cap) {
        free(w->conv);
        w->conv_cap = cnt * 2;
        w->conv = malloc(w->conv_cap);
        SF_CHECK(w->conv);
    }
    uint16_t *h = w->conv;
    if (w->o.dtype == SHARD_F16)
        for (size_t i = 0; i < cnt; i++)
            h[i] = shard_f32_to_f16(src[i]);
    else
        for (size_t i = 0; i < cnt; i++)
            h[i] = shard_f32_to_bf16(src[i]);
    hid_t mt = (hid_t)shard_h5_file_type(w->o.dtype);
    int r = write_rows(w, which, row0, n, h, mt, w->d);
    H5Tclose(mt);
    return r;
}

int shard_writer_write(shard_writer *w, int64_t row0, int64_t n, const float *x, const float *g,
                       const int32_t *tokens, sf_err *err)
{
    SF_CHECK(w->path && row0 >= 0 && n >= 0 && row0 + n <= w->rows);
    SF_CHECK(!w->o.with_gradients || g);
    SF_CHECK(!w->o.with_tokens || tokens);
    if (n == 0)
        return SF_OK;
    shard_hdf5_lock();
    int ok = write_matrix(w, W_ACT, row0, n, x) == 0;
    if (ok && w->o.with_gradients)
        ok = write_matrix(w, W_GRAD, row0, n, g) == 0;
    if (ok && w->o.with_tokens)
        ok = write_rows(w, W_TOK, row0, n, tokens, H5T_NATIVE_INT32, 1) == 0;
    shard_hdf5_unlock();
    if (!ok)
        return sf_fail(err, SF_EFAIL, "%s: writing rows %lld..%lld failed; check free disk space", w->path,
                       (long long)row0, (long long)(row0 + n - 1));
    return SF_OK;
}

int shard_writer_commit(shard_writer *w, sf_err *err)
{
    SF_CHECK(w->path);
    shard_hdf5_lock();
    int ok = H5Fflush((hid_t)w->hid[W_FILE], H5F_SCOPE_LOCAL) >= 0;
    close_all(w);
    shard_hdf5_unlock();
    int rc = SF_OK;
    if (ok) {
        int fd = open(w->tmp, O_RDONLY);
        ok = fd >= 0 && fsync(fd) == 0;
        if (fd >= 0)
            close(fd);
    }
    if (!ok) {
        rc = sf_fail(err, SF_EFAIL, "%s: cannot finish shard file; check free disk space", w->path);
    } else if (rename(w->tmp, w->path) != 0) {
        rc = sf_fail(err, SF_EINPUT, "%s: cannot move shard into place (%s); check permissions", w->path,
                     strerror(errno));
    } else {
        char *dir = xstrdup(w->path);
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            dir[1] = 0;
        else if (slash)
            *slash = 0;
        rc = fs_fsync_dir(slash ? dir : ".", err);
        free(dir);
    }
    if (rc != SF_OK)
        unlink(w->tmp);
    writer_release(w);
    return rc;
}

void shard_writer_abort(shard_writer *w)
{
    if (!w->path)
        return;
    shard_hdf5_lock();
    close_all(w);
    shard_hdf5_unlock();
    unlink(w->tmp);
    writer_release(w);
}

int shard_write(const char *path, int64_t rows, int d, const float *x, const float *g, const int32_t *tokens,
                const shard_write_opts *o, sf_err *err)
{
    shard_writer w;
    int rc = shard_writer_open(&w, path, rows, d, o, err);
    if (rc != SF_OK)
        return rc;
    rc = shard_writer_write(&w, 0, rows, x, g, tokens, err);
    if (rc != SF_OK) {
        shard_writer_abort(&w);
        return rc;
    }
    return shard_writer_commit(&w, err);
}
