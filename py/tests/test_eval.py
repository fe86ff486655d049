"""saeforge eval: an exact reconstruction leaves CE unchanged; zero ablation matches an
independent computation; a sweep gives one row per member."""
import json
import os
import subprocess

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from saeforge_py import evaluate
from saeforge_py.textin import Windows


def write_sae(path, W_enc, W_dec, k, hook="transformer.h.1"):
    os.makedirs(path, exist_ok=True)
    d, n = W_enc.shape
    save_file({"W_enc": W_enc.contiguous(), "W_dec": W_dec.contiguous(), "b_enc": torch.zeros(n),
               "b_dec": torch.zeros(d)}, os.path.join(path, "sae.safetensors"))
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump({"architecture": "topk", "d_in": d, "d_sae": n, "k": k,
                   "metadata": {"hook_name": hook, "saeforge_arch": "topk"}}, f)
    return path


def identity_sae(path, d=32):
    """relu(x) - relu(-x) = x: 2d latents, all kept (k = 2d), reconstruct exactly."""
    eye = torch.eye(d)
    return write_sae(path, torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0), 2 * d)


def run_eval(sae, lm, tmp, *extra):
    model_dir, _, held = lm
    j = os.path.join(tmp, "e.json")
    assert evaluate.main([sae, "--model", model_dir, "--text", held, "--context", "32", "--json", j, *extra]) == 0
    return json.load(open(j))["members"]


def zero_ablation_ce(model_dir, held):
    """Independent: forward pre-hook on block 2 zeroing its input after BOS, CE by hand."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tot = n = 0.0

    def pre(mod, args, kwargs):
        h = args[0].clone()
        h[:, 1:] = 0
        return (h,) + args[1:], kwargs
    handle = model.transformer.h[2].register_forward_pre_hook(pre, with_kwargs=True)
    with torch.no_grad():
        for ids, mask in Windows(tok, [held], 32):
            ids = torch.tensor(ids)[None]
            m = torch.tensor(mask)[None]
            hh = torch.where(m.bool(), ids, torch.zeros_like(ids))
            lg = model(input_ids=hh, attention_mask=m).logits
            v = (m[0, 1:] * m[0, :-1]).bool()
            ce = torch.nn.functional.cross_entropy(lg[0, :-1], ids[0, 1:], reduction="none")
            # padding rows follow the kept ones: a zeroed pad input changes nothing before it
            tot += float(ce[v].sum())
            n += int(v.sum())
    handle.remove()
    return tot / n


def test_identity_and_zero(tmp_path, lm):
    model_dir, _, held = lm
    (r,) = run_eval(identity_sae(str(tmp_path / "id")), lm, str(tmp_path))
    assert abs(r["ce_sae"] - r["ce_clean"]) < 1e-5 and r["kl"] < 1e-6 and r["fvu"] < 1e-10
    assert r["l0"] > 0 and abs(r["ce_loss_score"] - 1) < 1e-4
    assert abs(r["ce_zero"] - zero_ablation_ce(model_dir, held)) < 1e-4
    assert r["ce_zero"] > r["ce_clean"]


def test_sweep_table(tmp_path, lm, saeforge_bin):
    sweep = tmp_path / "sweep"
    identity_sae(str(sweep / "a" / "final"))
    torch.manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(32, 16), dim=0)
    write_sae(str(sweep / "b" / "final"), W, W.T, 4)
    (sweep / "sweep.json").write_text(json.dumps({"a": {"sae.k": 64}, "b": {"sae.k": 4}}))
    rows = run_eval(str(sweep), lm, str(tmp_path))
    assert [r["member"] for r in rows] == ["a", "b"]
    assert rows[1]["l0"] <= 4 and rows[1]["fvu"] > rows[0]["fvu"]
    assert rows[1]["delta_lm_loss"] > rows[0]["delta_lm_loss"]
    model_dir, _, held = lm
    r = subprocess.run([saeforge_bin, "eval", str(sweep), "--model", model_dir, "--text", held, "--hook", "no.such"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "hook 'no.such' is not a module" in r.stderr
