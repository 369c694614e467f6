"""Reference runner of a manyfold edge export (`manyfold export NAME --onnx -o DIR`): numpy + onnxruntime only.

    model = load("DIR"); model.predict(["what's my balance"])  ->  [("balance", 0.93, False)]

Same forward pass as `manyfold predict --no-escalate`: encode, router, top-k experts mixed by renormalised router
weights, stage-1 out-of-scope score, threshold. `tokenizers` is needed for a transformer encoder only.
"""
import functools, hashlib, json, re  # noqa: E401
from pathlib import Path

import numpy as np
import onnxruntime as ort


@functools.lru_cache(maxsize=1 << 20)
def _blake(feature, seed):  # 64-bit keyed BLAKE2b of one feature string, little-endian
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8, key=seed.to_bytes(8, "little")).digest(), "little")


def _hashing(texts, dim, ngram, char, seed):
    """manyfold's HashingEncoder: signed keyed-BLAKE2b bucket counts of word and in-word char n-grams."""
    def norm(m):  # L2-normalise rows in place (zero rows stay zero)
        n = np.sqrt(np.einsum("ij,ij->i", m, m))[:, None]
        return np.divide(m, n, out=m, where=n > 0)

    def block(rows):  # one row of signed bucket counts per text: bucket h % dim, sign from the top bit
        m = np.zeros((len(rows), dim))
        for r, feats in enumerate(rows):
            h = np.array([_blake(f, seed) for f in feats], np.uint64)
            np.add.at(m[r], (h % np.uint64(dim)).astype(np.int64), 1.0 - 2.0 * (h >> np.uint64(63)).astype(np.float64))
        return norm(m)
    toks = [re.findall(r"\w+", t.lower()) for t in texts]
    m = block([["w" + " ".join(t[i:i + n]) for n in range(ngram[0], ngram[1] + 1) for i in range(len(t) - n + 1)] for t in toks])
    if char:
        m = norm(m + block([["c" + p[i:i + n] for p in (f" {w} " for w in t) for n in range(char[0], char[1] + 1)
                              for i in range(max(len(p) - n + 1, 1))] for t in toks]))
    return m.astype(np.float32)


def _ranks(f, q, known):
    """Column j of f as the logit of its rank among the known items whose quantiles are q[:, j]; mid-rank on ties."""
    n, m, out = len(q), min(known, len(q)), np.empty(f.shape, np.float32)
    for j in range(f.shape[1]):
        qj, x = q[:, j], f[:, j].astype(np.float64)
        lo, hi = np.searchsorted(qj, x, "left"), np.searchsorted(qj, x, "right")
        i = np.clip(lo, 1, n - 1)
        gap = qj[i] - qj[i - 1]
        pos = np.where(hi > lo + 1, (lo + hi - 1) / 2.0, np.clip(i - 1 + np.where(gap > 0, (x - qj[i - 1]) / np.where(gap > 0, gap, 1.0), 0.5), 0, n - 1))
        u = (np.where(x < qj[0], 0.0, np.where(x > qj[-1], n - 1.0, pos)) / (n - 1) * (m - 1) + 0.5) / m
        out[:, j] = np.log(u / (1.0 - u))
    return out


class EdgeModel:
    def __init__(self, folder, threads=0):
        d = Path(folder)
        self.m = m = json.loads((d / "assembly.json").read_text(encoding="utf-8"))
        if bad := [f for f, h in m["files"].items() if hashlib.sha256((d / f).read_bytes()).hexdigest() != h]:
            raise ValueError(f"{d}: checksum mismatch in {bad}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        onnx = lambda f: ort.InferenceSession(str(d / f), opts, providers=["CPUExecutionProvider"])  # noqa: E731
        if m["encoder"]["kind"] == "onnx":
            from tokenizers import Tokenizer
            e, self.tok = m["encoder"], Tokenizer.from_file(str(d / m["encoder"]["tokenizer"]))
            self.tok.enable_truncation(max_length=e["max_length"])
            self.tok.enable_padding(pad_id=e["pad_id"], pad_token=e["pad_token"])
            self.enc = onnx(e["file"])
        self.router, self.oos = onnx(m["router"]["file"]), onnx(m["oos"]["file"])
        self.experts, self.cols = [onnx(x["file"]) for x in m["experts"]], [np.array(x["columns"]) for x in m["experts"]]
        self.centroids = np.load(d / m["oos"]["centroids"])
        self.prototypes = np.load(d / m["oos"]["prototypes"]) if m["oos"].get("prototypes") else None
        self.quantiles = np.load(d / m["oos"]["signal_quantiles"]).astype(np.float64) if m["oos"].get("signal_quantiles") else None

    def encode(self, texts):
        e = self.m["encoder"]
        if e["kind"] == "hashing":
            return _hashing(texts, e["dim"], e["ngram"], e["char"], e["seed"])
        b = self.tok.encode_batch([e["prefix"] + t for t in texts])
        feeds = {"input_ids": [x.ids for x in b], "attention_mask": [x.attention_mask for x in b]}
        return self.enc.run(None, {k: np.array(v, np.int64) for k, v in feeds.items()})[0]

    def scores(self, texts):
        """Vectors, mixed label probabilities (n, labels) and out-of-scope probabilities (n,)."""
        x = self.encode(list(texts))
        pr = self.router.run(None, {"x": x})[0]
        idx = np.argsort(-pr, 1, kind="stable")[:, :self.m["top_k"]]
        w = np.take_along_axis(pr, idx, 1)
        w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
        p = np.zeros((len(x), len(self.m["labels"])), np.float32)
        for j in np.unique(idx):  # only the experts some row was routed to run, on those rows
            rows, slot = np.nonzero(idx == j)
            p[rows[:, None], self.cols[j]] += w[rows, slot][:, None] * self.experts[j].run(None, {"x": x[rows]})[0]
        c = np.clip(p, 1e-12, 1.0)
        sims = (u := x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)) @ self.centroids.T
        top2 = -np.sort(-sims, 1)[:, :2] if sims.shape[1] > 1 else np.repeat(sims, 2, 1)
        cols = [np.log(c.max(1)), -(c * np.log(c)).sum(1), top2[:, 0], top2[:, 1], np.log(np.clip(pr.max(1), 1e-9, 1))]
        near = [] if self.prototypes is None else [(u @ self.prototypes.T).max(1)]  # nearest prototype's cosine
        f = np.stack(cols + near, 1).astype(np.float32)
        if self.quantiles is not None:  # each signal as the logit of its rank among the known items
            f = _ranks(f, self.quantiles, self.m["oos"]["signal_known_items"])
        return x, p, self.oos.run(None, {"x": f})[0]

    def predict(self, texts):
        """One (label, confidence, is_oos) per text; an out-of-scope answer's confidence is its out-of-scope score."""
        _, p, oos = self.scores(texts)
        th, labels, j = self.m["oos"]["threshold"], self.m["labels"], p.argmax(1)
        return [(self.m["oos_label"], float(o), True) if o >= th else (labels[k], float(p[i, k]), False)
                for i, (k, o) in enumerate(zip(j, oos))]


def load(folder, threads=0):
    """The exported model in ``folder``; ``threads``: onnxruntime intra-op threads (0: its default)."""
    return EdgeModel(folder, threads)
