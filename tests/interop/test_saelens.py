"""SAELens (5.x or 6.x, whichever this venv has) loads every arch's <run>/final/ with its own
SAE.load_from_disk, and its own forward pass gives the FVU and L0 that `saeforge stats` reports
on the same rows. Also the reverse: an SAE that SAELens saved is read by compare and inspect."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import sae_lens
from sae_lens import SAE
from conftest import ARCHS, K, N, SHARD_ATTRS, fvu, saeforge, stats

MAJOR = int(sae_lens.__version__.split(".")[0])
# float32 on both sides (OpenBLAS vs torch GEMMs, different summation order); measured
# differences are ~1e-9 relative, so 1e-6 leaves room and still catches a wrong bias, scale or
# threshold (each moves the FVU by far more).
FVU_RTOL = 1e-6


def load(path):
    out = SAE.load_from_disk(path, device="cpu")
    return out[0] if isinstance(out, tuple) else out  # 5.x returned (sae, cfg, sparsity) once


def architecture(sae):
    a = sae.cfg.architecture
    return a() if callable(a) else a


def meta(sae, key):
    """A fact SAELens keeps in cfg.metadata (6.x) or on cfg itself (5.x)."""
    m = getattr(sae.cfg, "metadata", None)
    return getattr(m, key) if m is not None and hasattr(m, key) else getattr(sae.cfg, key)


def forward(sae, rows):
    with torch.no_grad():
        x = torch.from_numpy(rows)
        z = sae.encode(x)
        return z, sae.decode(z)


@pytest.mark.parametrize("arch", ARCHS)
def test_final_loads_and_matches_stats(arch, runs, data, work):
    final = os.path.join(runs[arch], "final")
    sae = load(final)
    want = "jumprelu" if arch in ("batchtopk", "matryoshka") else "topk"
    assert architecture(sae) == want
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (64, N)
    _, evald, rows = data
    z, xhat = forward(sae, rows)
    active = (z != 0).sum(dim=-1).numpy()
    if want == "topk":
        assert (active == K).all(), "rows with other than k=%d active latents: %s" % (K, np.unique(active))
    ref_fvu, ref_l0, ref_fires = stats(final, evald, os.path.join(work, "stats_" + arch))
    got_fvu, got_l0 = fvu(rows, xhat.numpy()), float(active.mean())
    assert got_fvu == pytest.approx(ref_fvu, rel=FVU_RTOL), (got_fvu, ref_fvu)
    if want == "topk":
        assert got_l0 == ref_l0
    else:
        # a pre-activation within float rounding of the threshold may land on either side
        assert got_l0 == pytest.approx(ref_l0, abs=1e-3), (got_l0, ref_l0)
        fires = (z != 0).sum(dim=0).numpy()
        assert np.abs(fires - ref_fires).sum() <= 0.001 * fires.sum()
    print("%s sae-lens %s: fvu %.9g (saeforge %.9g, rel %.2g), l0 %.4f (saeforge %.4f)" %
          (arch, sae_lens.__version__, got_fvu, ref_fvu, abs(got_fvu - ref_fvu) / ref_fvu, got_l0, ref_l0))


def test_threshold_is_the_exported_theta(runs):
    final = os.path.join(runs["batchtopk"], "final")
    sae = load(final)
    theta = load_file(os.path.join(final, "sae.safetensors"))["threshold"]
    assert torch.equal(sae.threshold.detach().cpu(), theta)
    assert float(theta[0]) > 0, "batchtopk learned no threshold in the run"


def test_shard_attributes_reach_the_config(runs):
    for arch in ARCHS:
        sae = load(os.path.join(runs[arch], "final"))
        assert meta(sae, "model_name") == SHARD_ATTRS["model"]
        assert meta(sae, "hook_name") == SHARD_ATTRS["hook"]
        assert meta(sae, "context_size") == SHARD_ATTRS["context_size"]
    if MAJOR < 6:
        assert meta(sae, "hook_layer") == 3


def saelens_topk_copy(final, out):
    """A TopK SAE built and saved by SAELens itself (save_model), with our run's weights."""
    w = load_file(os.path.join(final, "sae.safetensors"))
    d, n = w["W_enc"].shape
    if MAJOR >= 6:
        from sae_lens import TopKSAE, TopKSAEConfig
        sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=n, k=K, dtype="float32", device="cpu"))
    else:
        from sae_lens import SAEConfig
        cfg = json.load(open(os.path.join(final, "cfg.json")))
        cfg.pop("metadata", None)
        cfg.update(architecture="standard", activation_fn_str="topk", activation_fn_kwargs={"k": K})
        sae = SAE(SAEConfig.from_dict(cfg))
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(w[name])
    sae.save_model(out)
    return sae


def test_compare_and_inspect_read_saelens_save_model(runs, work):
    final = os.path.join(runs["topk"], "final")
    out = os.path.join(work, "saved_by_saelens")
    saelens_topk_copy(final, out)
    report = json.loads(saeforge("compare", out, final, "--json").stdout)
    assert (report["d"], report["na"], report["nb"]) == (64, N, N)
    assert report["mean_max_cos_a_to_b"] == pytest.approx(1.0, abs=1e-6)
    assert report["matched_a"] == N
    info = saeforge("inspect", out).stdout
    assert "SAELens export" in info, info
    if MAJOR >= 6:
        assert "architecture topk, d_in 64, d_sae %d, k %d" % (N, K) in info, info
    else:  # 5.x saves TopK as a standard SAE with a topk activation
        assert "architecture standard, d_in 64, d_sae %d, activation topk, k %d" % (N, K) in info, info
