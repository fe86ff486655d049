"""Section-3 shard files: activations (+ gradients, tokens) in f32/f16/bf16, chunked, written to a
temp name and renamed when complete (so a finished shard name means a finished shard)."""
import json
import os

import h5py
import numpy as np
import torch

DTYPES = ("f32", "f16", "bf16")


def h5_type(dtype):
    """The HDF5 file type saeforge's reader accepts for each dtype (bf16: fields (15,7,8,0,7),
    exponent bias 127, the way h5py and HDF5 1.10 describe bfloat16)."""
    if dtype == "f32":
        return h5py.h5t.IEEE_F32LE.copy()
    t = h5py.h5t.IEEE_F32LE.copy()
    if dtype == "f16":
        t.set_fields(15, 10, 5, 0, 10)
        t.set_size(2)
        t.set_ebias(15)
    else:
        t.set_fields(15, 7, 8, 0, 7)
        t.set_size(2)
        t.set_ebias(127)
    t.set_offset(0)
    t.set_precision(16)
    return t


def to_raw(x, dtype):
    """A (rows, d) float tensor as the numpy buffer h5_type(dtype) describes."""
    x = x.detach().to("cpu")
    if dtype == "f32":
        return x.float().numpy()
    if dtype == "f16":
        return x.half().numpy()
    return x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def shard_name(i):
    return f"shard_{i:05d}.h5"


class ShardWriter:
    """One shard of `rows` rows, filled by append(); close() renames it into place."""

    def __init__(self, out_dir, index, rows, d, dtype, gradients, attrs, chunk_bytes=2 << 20):
        self.final = os.path.join(out_dir, shard_name(index))
        self.tmp = self.final + ".tmp"
        self.rows, self.d, self.dtype, self.pos = rows, d, dtype, 0
        self.f = h5py.File(self.tmp, "w")
        elem = 4 if dtype == "f32" else 2
        chunk = max(1, min(rows, chunk_bytes // (d * elem)))
        self.ds = {"activations": self._dset("activations", chunk)}
        if gradients:
            self.ds["gradients"] = self._dset("gradients", chunk)
        self.tokens = self.f.create_dataset("tokens", (rows,), dtype="<i4", chunks=(min(rows, 65536),),
                                            maxshape=(None,))
        for k, v in attrs.items():
            self.f.attrs[k] = v

    def _dset(self, name, chunk):
        space = h5py.h5s.create_simple((self.rows, self.d), (h5py.h5s.UNLIMITED, self.d))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((chunk, self.d))
        return h5py.h5d.create(self.f.id, name.encode(), h5_type(self.dtype), space, dcpl)

    def free(self):
        return self.rows - self.pos

    def append(self, acts, grads, tokens):
        """acts, grads: (r, d) tensors (grads None without --gradients); tokens: (r,) ints."""
        r = acts.shape[0]
        assert r <= self.free()
        for name, x in (("activations", acts), ("gradients", grads)):
            if name not in self.ds:
                continue
            buf = np.ascontiguousarray(to_raw(x, self.dtype))
            fspace = self.ds[name].get_space()
            fspace.select_hyperslab((self.pos, 0), (r, self.d))
            mspace = h5py.h5s.create_simple((r, self.d))
            self.ds[name].write(mspace, fspace, buf, mtype=h5_type(self.dtype))
        self.tokens[self.pos:self.pos + r] = np.asarray(tokens, np.int32)
        self.pos += r

    def close(self):
        """Finishes the shard; the text's last shard may hold fewer rows than planned."""
        if self.pos < self.rows:
            for ds in self.ds.values():
                ds.set_extent((self.pos, self.d))
            self.tokens.resize((self.pos,))
        self.ds.clear()
        self.f.flush()
        self.f.close()
        fd = os.open(self.tmp, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        os.rename(self.tmp, self.final)
        dfd = os.open(os.path.dirname(self.final) or ".", os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)

    def abort(self):
        self.ds.clear()
        self.f.close()
        os.unlink(self.tmp)


def read_settings(path):
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs.get("saeforge_extract", "{}"))
