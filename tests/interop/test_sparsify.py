"""EleutherAI sparsify loads `saeforge export --format sparsify` with SparseCoder.load_from_disk;
its forward gives the FVU/L0 of `saeforge stats` and the reconstruction of the SAELens-layout
weights. Also the reverse: a SparseCoder saved by sparsify (save_to_disk) is read by saeforge."""
import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # no GPU: sparsify's eager decoder
from sparsify import SparseCoder  # noqa: E402

from conftest import D, K, N, fvu, saeforge, stats  # noqa: E402

FVU_RTOL = 1e-6
RECON_ATOL = 1e-6  # float32 GEMMs in two libraries; measured ~2e-7


def sparsify_export(run, work, arch):
    out = os.path.join(work, "sparsify_" + arch)
    saeforge("export", run, "--format", "sparsify", "--out", out)
    return out


def saelens_layout_recon(final, rows):
    """Reconstruction from final/sae.safetensors, written out in plain numpy (float64)."""
    from safetensors.numpy import load_file
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(final, "sae.safetensors")).items()}
    pre = (rows.astype(np.float64) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    idx = np.argpartition(-pre, K - 1, axis=1)[:, :K]
    z = np.zeros_like(pre)
    np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
    return z @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("arch", ["topk", "gsae"])
def test_sparsify_loads_export_and_matches(arch, runs, data, work):
    out = sparsify_export(runs[arch], work, arch)
    sc = SparseCoder.load_from_disk(out, device="cpu")
    assert (sc.d_in, sc.num_latents, sc.cfg.k) == (D, N, K)
    _, evald, rows = data
    x = torch.from_numpy(rows)
    with torch.no_grad():
        enc = sc.encode(x)
        xhat = sc.decode(enc.top_acts, enc.top_indices).numpy()
        fwd = sc(x)
    active = (enc.top_acts > 0).sum(-1).numpy()
    assert (active == K).all()
    ref_fvu, ref_l0, _ = stats(out, evald, os.path.join(work, "stats_sparsify_" + arch))
    got = fvu(rows, xhat)
    assert got == pytest.approx(ref_fvu, rel=FVU_RTOL), (got, ref_fvu)
    assert float(fwd.fvu) == pytest.approx(ref_fvu, rel=1e-4), "sparsify's own fvu (float32)"
    assert ref_l0 == K
    ref = saelens_layout_recon(os.path.join(runs[arch], "final"), rows)
    diff = float(np.abs(xhat - ref).max())
    assert diff <= RECON_ATOL, diff
    print("%s sparsify: fvu %.9g (saeforge %.9g), max |xhat - saelens layout| %.2g" % (arch, got, ref_fvu, diff))


def test_compare_and_inspect_read_sparsify_save_to_disk(runs, work):
    final = os.path.join(runs["topk"], "final")
    sc = SparseCoder.load_from_disk(sparsify_export(runs["topk"], work, "src"), device="cpu")
    out = os.path.join(work, "saved_by_sparsify")
    sc.save_to_disk(out)
    report = json.loads(saeforge("compare", out, final, "--json").stdout)
    assert (report["d"], report["na"], report["nb"]) == (D, N, N)
    assert report["mean_max_cos_a_to_b"] == pytest.approx(1.0, abs=1e-6)
    assert report["matched_a"] == N
    info = saeforge("inspect", out).stdout
    assert "sparsify export" in info and "d_in %d" % D in info and "k %d" % K in info, info
    assert "encoder.weight" in info
