"""Text input: plain files, JSONL (a text field or pre-tokenised ids), .npy id arrays -> windows."""
import json
import os

import numpy as np

from . import ToolError


def _docs(path, field):
    """Yields str (text) or list[int] (pre-tokenised ids) documents from one file."""
    if not os.path.isfile(path):
        raise ToolError(f"text file {path} not found; pass existing files to --text")
    if path.endswith(".npy"):
        arr = np.load(path)
        if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2):
            raise ToolError(f"{path}: a .npy input must hold integer token ids, 1-D or 2-D")
        for row in arr.reshape(-1, arr.shape[-1]) if arr.ndim == 2 else [arr]:
            yield [int(t) for t in row]
        return
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    doc = rec[field]
                except (ValueError, KeyError, TypeError):
                    raise ToolError(f"{path}:{line_no}: not a JSON object with a '{field}' field; "
                                    f"name the field with --text-field") from None
                if isinstance(doc, list) and all(isinstance(t, int) for t in doc):
                    yield doc
                elif isinstance(doc, str):
                    yield doc
                else:
                    raise ToolError(f"{path}:{line_no}: '{field}' must be a string or a list of token ids")
        return
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # blank lines separate documents in a plain file
    for doc in text.split("\n\n"):
        if doc.strip():
            yield doc


class Windows:
    """Packs documents (separated by EOS) into windows of `context` ids; a BOS, when the tokenizer
    has one, opens each window and counts in `context`. The last partial window is padded."""

    def __init__(self, tokenizer, paths, context, text_field="text", add_bos=True):
        if context < 2:
            raise ToolError(f"--context {context}: need at least 2 positions (one prediction)")
        self.tok = tokenizer
        self.paths = list(paths)
        self.context = context
        self.field = text_field
        self.bos = tokenizer.bos_token_id if add_bos else None
        self.eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.eos if self.eos is not None else 0)

    def _ids(self):
        for p in self.paths:
            for doc in _docs(p, self.field):
                ids = doc if isinstance(doc, list) else self.tok(doc, add_special_tokens=False)["input_ids"]
                yield from ids
                if self.eos is not None:
                    yield self.eos

    def __iter__(self):
        """Yields (ids, mask) int64 arrays of length context; mask 0 on padding."""
        body = self.context - (self.bos is not None)
        buf = []
        for t in self._ids():
            buf.append(t)
            if len(buf) == body:
                yield self._window(buf)
                buf = []
        if len(buf) > 1:
            yield self._window(buf)

    def _window(self, body_ids):
        ids = ([self.bos] if self.bos is not None else []) + body_ids
        n = len(ids)
        mask = np.zeros(self.context, np.int64)
        mask[:n] = 1
        out = np.full(self.context, self.pad, np.int64)
        out[:n] = ids
        return out, mask

    def keep(self, mask, keep_bos=False):
        """Positions whose activation becomes a shard row: not padding, not the opening BOS."""
        k = mask.astype(bool).copy()
        if self.bos is not None and not keep_bos:
            k[0] = False
        return k
