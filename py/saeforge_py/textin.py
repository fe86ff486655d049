"""Text input: plain files, JSONL (a text field or pre-tokenised ids), .npy id arrays -> windows."""
import json
import os

import numpy as np

from . import ToolError


def _docs(path, field):
    """Yields (doc, share): doc a str (text) or a list[int] (pre-tokenised ids), share the part of
    the file read once it is consumed (for the progress ETA without --tokens)."""
    if not os.path.isfile(path):
        raise ToolError(f"text file {path} not found; pass existing files to --text")
    if path.endswith(".npy"):
        arr = np.load(path)
        if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2):
            raise ToolError(f"{path}: a .npy input must hold integer token ids, 1-D or 2-D")
        rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim == 2 else [arr]
        for i, row in enumerate(rows, 1):
            yield [int(t) for t in row], i / len(rows)
        return
    if path.endswith(".jsonl"):
        size, read = max(os.path.getsize(path), 1), 0
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                read += len(line.encode("utf-8"))
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    doc = rec[field]
                except (ValueError, KeyError, TypeError):
                    raise ToolError(f"{path}:{line_no}: not a JSON object with a '{field}' field; "
                                    f"name the field with --text-field") from None
                if isinstance(doc, list) and all(isinstance(t, int) for t in doc):
                    yield doc, read / size
                elif isinstance(doc, str):
                    yield doc, read / size
                else:
                    raise ToolError(f"{path}:{line_no}: '{field}' must be a string or a list of token ids")
        return
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # blank lines separate documents in a plain file
    pos = 0
    for doc in text.split("\n\n"):
        pos += len(doc) + 2
        if doc.strip():
            yield doc, min(pos / max(len(text), 1), 1.0)


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
        # input bytes per file, to tell how much of the text has been read
        self.sizes = [os.path.getsize(p) if os.path.isfile(p) else 0 for p in self.paths]
        self.read = 0.0

    def fraction(self):
        """The part of the input (by bytes) read so far, or None when the input is empty."""
        total = sum(self.sizes)
        return min(self.read / total, 1.0) if total else None

    def _ids(self):
        for i, p in enumerate(self.paths):
            before = sum(self.sizes[:i])
            for doc, share in _docs(p, self.field):
                self.read = before + share * self.sizes[i]
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
