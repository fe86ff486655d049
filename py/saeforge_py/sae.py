"""Loading saeforge's SAELens-layout export (sae.safetensors + cfg.json) and running it in torch."""
import json
import os

import torch
from safetensors.torch import load_file

from . import ToolError


class Sae:
    def __init__(self, path):
        cfg_p, st_p = os.path.join(path, "cfg.json"), os.path.join(path, "sae.safetensors")
        if not (os.path.isfile(cfg_p) and os.path.isfile(st_p)):
            raise ToolError(f"{path}: no cfg.json + sae.safetensors; pass a run, its final/ or a sweep")
        try:
            with open(cfg_p, encoding="utf-8") as f:
                self.cfg = json.load(f)
            w = load_file(st_p)
        except (ValueError, OSError) as e:
            raise ToolError(f"{path}: unreadable SAE ({e}); export it again with saeforge export") from None
        self.path = path
        self.arch = self.cfg.get("architecture", "topk")
        if self.arch not in ("topk", "jumprelu"):
            raise ToolError(f"{cfg_p}: architecture '{self.arch}' is not topk or jumprelu")
        for k in ("W_enc", "W_dec", "b_enc", "b_dec") + (("threshold",) if self.arch == "jumprelu" else ()):
            if k not in w:
                raise ToolError(f"{st_p}: tensor '{k}' missing")
        self.W_enc, self.W_dec = w["W_enc"].float(), w["W_dec"].float()  # (d, n), (n, d)
        self.b_enc, self.b_dec = w["b_enc"].float(), w["b_dec"].float()
        self.threshold = w.get("threshold")
        self.k = int(self.cfg.get("k") or self.cfg.get("activation_fn_kwargs", {}).get("k", 0))
        if self.arch == "topk" and self.k < 1:
            raise ToolError(f"{cfg_p}: topk SAE without k")
        meta = self.cfg.get("metadata", {})
        self.hook = meta.get("hook_name") or self.cfg.get("hook_name")
        self.d = self.W_enc.shape[0]

    def to(self, device):
        for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, v.float().to(device))
        return self

    def encode(self, x):
        """(r, d) -> (r, n) codes: top-k of relu(pre) per row, or jumprelu's a * [a > theta]."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        a = torch.relu(pre)
        if self.arch == "jumprelu":
            return a * (a > self.threshold)
        v, i = torch.topk(a, min(self.k, a.shape[1]), dim=1)
        return torch.zeros_like(a).scatter_(1, i, v)

    def decode(self, z):
        return z @ self.W_dec + self.b_dec


def find_saes(path):
    """[(member name, Sae dir)] for an SAE dir, a run dir (its final/) or a sweep dir (sweep.json)."""
    if os.path.isfile(os.path.join(path, "sweep.json")):
        with open(os.path.join(path, "sweep.json"), encoding="utf-8") as f:
            try:
                members = json.load(f)
            except ValueError as e:
                raise ToolError(f"{path}/sweep.json: not JSON ({e})") from None
        names = list(members) if isinstance(members, dict) else [m if isinstance(m, str) else m["name"] for m in members]
        return [(n, os.path.join(path, n, "final")) for n in names]
    if os.path.isfile(os.path.join(path, "final", "cfg.json")):
        return [(os.path.basename(os.path.normpath(path)), os.path.join(path, "final"))]
    if os.path.isfile(os.path.join(path, "cfg.json")):
        return [(os.path.basename(os.path.normpath(path)), path)]
    raise ToolError(f"{path}: not an SAE (cfg.json + sae.safetensors), a run (final/) or a sweep "
                    f"(sweep.json)")
