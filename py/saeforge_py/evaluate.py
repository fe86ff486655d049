"""saeforge eval: splice a trained SAE (or every member of a sweep) into the model at its hook on
held-out text; CE clean / spliced / zero-ablated, CE-loss score, delta LM loss, KL, FVU, L0."""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

from . import ToolError
from .extract import batches
from .hooks import Hook, find_module, load_model, next_token_ce
from .progress import Progress
from .sae import Sae, find_saes
from .textin import Windows


def parse_args(argv):
    p = argparse.ArgumentParser(prog="saeforge eval", description=(
        "Downstream evaluation: replace the hook's output by the SAE's reconstruction (at the "
        "positions extraction keeps: not BOS, not padding) and measure the model's loss."))
    p.add_argument("sae", metavar="SAE_OR_RUN", help="an export dir, a run dir (final/) or a sweep dir")
    p.add_argument("--model", required=True, help="hub name or save_pretrained directory")
    p.add_argument("--text", required=True, nargs="+", metavar="FILE", help="held-out text (as extract)")
    p.add_argument("--hook", help="module name (default: the hook in the SAE's cfg.json)")
    p.add_argument("--tokens", type=int, default=0, help="predicted tokens to evaluate (default: all)")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--text-field", default="text")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    return p.parse_args(argv)


class Acc:
    """Running sums for one SAE."""

    def __init__(self, d, device):
        self.ce_sae = self.kl = self.err = self.sq = self.l0 = 0.0
        self.rows = 0
        self.sum = torch.zeros(d, dtype=torch.float64, device=device)

    def result(self, ce_clean, ce_zero, n_pred):
        ce_sae = self.ce_sae / n_pred
        var = self.sq - float((self.sum ** 2).sum()) / self.rows
        denom = ce_zero - ce_clean
        return {"ce_clean": ce_clean, "ce_sae": ce_sae, "ce_zero": ce_zero,
                "ce_loss_score": (ce_zero - ce_sae) / denom if denom != 0 else math.nan,
                "delta_lm_loss": ce_sae - ce_clean, "kl": self.kl / n_pred,
                "fvu": self.err / var if var > 0 else math.nan, "l0": self.l0 / self.rows,
                "tokens": n_pred, "rows": self.rows}


def spliced(module, fn, model, ids, mask):
    with torch.no_grad(), Hook(module, fn):
        return model(input_ids=ids, attention_mask=mask).logits


def evaluate(model, module, windows, saes, a):
    """{name: metrics} for saes [(name, Sae)], all at the same hook."""
    d = saes[0][1].d
    accs = {n: Acc(d, a.device) for n, _ in saes}
    ce_clean = ce_zero = 0.0
    n_pred = 0
    prog = Progress(a.tokens, fraction=windows.fraction)
    for batch in batches(windows, a.batch):
        ids = torch.as_tensor(np.stack([w for w, _ in batch]), device=a.device)
        mask = torch.as_tensor(np.stack([m for _, m in batch]), device=a.device)
        keep = torch.as_tensor(np.stack([windows.keep(m) for _, m in batch]), device=a.device)
        cap = Hook(module, lambda x: None)
        with torch.no_grad(), cap:
            logits = model(input_ids=ids, attention_mask=mask).logits
        x = cap.seen
        if x is None or x.dim() != 3 or x.shape[-1] != d:
            raise ToolError(f"hook output {None if x is None else tuple(x.shape)} does not match the "
                            f"SAE's d_in={d}; check --hook and --model")
        ce, valid = next_token_ce(logits, ids, mask)
        logp_c = torch.log_softmax(logits[:, :-1].float(), -1)
        ce_clean += float(ce.sum())
        n_pred += int(valid.sum())

        def zero(t):
            return torch.where(keep[..., None], torch.zeros_like(t), t)
        ce_zero += float(next_token_ce(spliced(module, zero, model, ids, mask), ids, mask)[0].sum())
        xs = x[keep].float()
        for name, sae in saes:
            z = sae.encode(xs)
            xh = sae.decode(z)
            acc = accs[name]
            acc.err += float(((xs - xh) ** 2).sum())
            acc.sq += float((xs.double() ** 2).sum())
            acc.sum += xs.double().sum(0)
            acc.l0 += float((z != 0).sum())
            acc.rows += xs.shape[0]

            def put(t, xh=xh):
                out = t.clone()
                out[keep] = xh.to(t.dtype)
                return out
            lg = spliced(module, put, model, ids, mask)
            acc.ce_sae += float(next_token_ce(lg, ids, mask)[0].sum())
            logp_s = torch.log_softmax(lg[:, :-1].float(), -1)
            kl = (logp_c.exp() * (logp_c - logp_s)).sum(-1)
            acc.kl += float((kl * valid).sum())
        prog.update(int(valid.sum()))
        if a.tokens and n_pred >= a.tokens:
            break
    prog.close()
    if n_pred == 0:
        raise ToolError("the text gave no predicted tokens; pass more text or a larger --context")
    return {n: accs[n].result(ce_clean / n_pred, ce_zero / n_pred, n_pred) for n, _ in saes}


COLS = ("k", "arch", "l0", "fvu", "ce_clean", "ce_sae", "ce_zero", "ce_loss_score", "delta_lm_loss", "kl")


def table(rows):
    head = ["member"] + list(COLS)
    lines = [head]
    for r in rows:
        lines.append([r["member"]] + [f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in COLS])
    w = [max(len(l[i]) for l in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(l)) for l in lines)


def run(a):
    found = find_saes(a.sae)
    saes = [(n, Sae(p)) for n, p in found]
    hooks = {a.hook or s.hook for _, s in saes}
    if None in hooks or "" in hooks:
        raise ToolError(f"{a.sae}: the SAE's cfg.json names no hook; pass --hook")
    if len(hooks) > 1:
        raise ToolError(f"{a.sae}: members are at different hooks ({', '.join(sorted(hooks))}); evaluate them one by one")
    hook = hooks.pop()
    model, tok = load_model(a.model, a.device)
    module = find_module(model, hook)
    saes = [(n, s.to(a.device)) for n, s in saes]
    windows = Windows(tok, a.text, a.context, a.text_field)
    res = evaluate(model, module, windows, saes, a)
    rows = []
    for n, s in saes:
        r = {"member": n, "path": s.path, "arch": s.cfg.get("metadata", {}).get("saeforge_arch", s.arch),
             "k": s.k, "hook": hook}
        r.update(res[n])
        rows.append(r)
    print(table(rows))
    if a.json:
        out = {"model": a.model, "hook": hook, "text": a.text, "context": a.context, "members": rows}
        tmp = a.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, a.json)
    return 0


def main(argv=None):
    try:
        return run(parse_args(sys.argv[1:] if argv is None else argv))
    except ToolError as e:
        print(f"saeforge: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
