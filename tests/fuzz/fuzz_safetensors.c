/* Fuzz harness: the safetensors reader. Whatever it accepts must be self-consistent (every
 * tensor inside the file, sizes = shape x dtype, the data section tiled exactly) and must come
 * back the same after st_writer writes it out again; whatever it refuses must be one escaped line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "host/safetensors.h"

static void check_accepted(const st_file *f)
{
    size_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (size_t)f->buf[i] << (8 * i);
    const uint8_t *data = f->buf + 8 + hl, *end = f->buf + f->len;
    size_t total = 0;
    for (int i = 0; i < f->n; i++) {
        const st_tensor *t = &f->t[i];
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS)
            fuzz_fail("tensor %d: ndim %d", i, t->ndim);
        size_t count = 1;
        for (int k = 0; k < t->ndim; k++) {
            if (t->shape[k] < 0)
                fuzz_fail("tensor %d: negative dim", i);
            count *= (size_t)t->shape[k];
        }
        if (count * st_dtype_size(t->dtype) != t->nbytes)
            fuzz_fail("tensor %d: nbytes %zu != shape x dtype", i, t->nbytes);
        const uint8_t *p = t->data;
        if (t->nbytes && (p < data || p + t->nbytes > end))
            fuzz_fail("tensor %d: data outside the data section", i);
        if (st_get(f, t->name) != t)
            fuzz_fail("tensor %d: name not unique or not found", i);
        total += t->nbytes;
    }
    if (total != (size_t)(end - data))
        fuzz_fail("tensors cover %zu of %zu data bytes", total, (size_t)(end - data));
    for (int i = 0; i < f->n_meta; i++)
        if (st_get_meta(f, f->meta[i].key) != f->meta[i].value)
            fuzz_fail("metadata key %d is not unique", i);
}

static void round_trip(const st_file *f)
{
    char path[512];
    snprintf(path, sizeof path, "%s/again.safetensors", fuzz_tmpdir());
    st_writer w;
    st_writer_init(&w);
    for (int i = 0; i < f->n; i++)
        st_writer_add(&w, f->t[i].name, f->t[i].dtype, f->t[i].ndim, f->t[i].shape, f->t[i].data);
    for (int i = 0; i < f->n_meta; i++)
        st_writer_meta(&w, f->meta[i].key, f->meta[i].value);
    sf_err err = {0};
    if (st_writer_commit(&w, path, &err))
        fuzz_fail("writing an accepted file back failed: %s", err.msg);
    st_writer_free(&w);
    st_file g;
    if (st_read(path, &g, &err))
        fuzz_fail("the file written back does not read: %s", err.msg);
    if (g.n != f->n || g.n_meta != f->n_meta)
        fuzz_fail("written back: %d tensors / %d metadata, read %d / %d", f->n, f->n_meta, g.n, g.n_meta);
    for (int i = 0; i < f->n; i++) {
        const st_tensor *a = &f->t[i], *b = st_get(&g, a->name);
        if (!b || b->dtype != a->dtype || b->ndim != a->ndim || b->nbytes != a->nbytes ||
            memcmp(b->shape, a->shape, sizeof a->shape[0] * (size_t)a->ndim) ||
            (a->nbytes && memcmp(a->data, b->data, a->nbytes)))
            fuzz_fail("tensor %d differs after writing it back", i);
    }
    for (int i = 0; i < f->n_meta; i++) {
        const char *v = st_get_meta(&g, f->meta[i].key);
        if (!v || strcmp(v, f->meta[i].value))
            fuzz_fail("metadata %d differs after writing it back", i);
    }
    st_file_free(&g);
}

int fuzz_safetensors_one(const uint8_t *data, size_t size)
{
    char path[512];
    fuzz_put_file("in.safetensors", data, size, path, sizeof path);
    st_file f;
    sf_err err = {0};
    int rc = st_read(path, &f, &err);
    if (rc) {
        fuzz_check_err(rc, &err, "st_read");
        return 0;
    }
    check_accepted(&f);
    round_trip(&f);
    /* the lookups the loaders make, on whatever names the file has */
    const st_tensor *t;
    int64_t shape[2] = {-1, -1};
    rc = st_expect(&f, "W_dec", ST_F32, 2, shape, &t, &err);
    if (rc)
        fuzz_check_err(rc, &err, "st_expect");
    st_file_free(&f);
    return 0;
}

#ifdef SF_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_safetensors_one(data, size); }
#endif
