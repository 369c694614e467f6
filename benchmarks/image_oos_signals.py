"""Which out-of-scope signal separates Fashion-MNIST's Shirt and Bag from the other eight classes? (issue 11, diagnosis)

    python benchmarks/image_oos_signals.py --data-dir ../shared/data [--seconds 120] [--threads 2]

One `CNNExpert` (library defaults, `max_seconds` cap) is trained on the eight known Fashion-MNIST classes
(Shirt and Bag left out of train and val), then each single signal is scored on the test split, Shirt and
Bag against the known classes' test images (AUROC; higher = more out of scope):
max softmax probability, max logit, energy, and the cosine to the nearest of up to 10 prototypes per known
label in the CNN's own penultimate feature space (`manyfold._heldout.label_prototypes` on its training images).
It is the reference against which `image_assembly.md`'s detector (Shirt 0.597, Bag 0.957 there, against all
known test images) can be read. Writes benchmarks/results/image_oos_signals.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402

UNKNOWN = ("Shirt", "Bag")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seconds", type=float, default=120.0, help="the CNN's max_seconds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    load_at_start = list(os.getloadavg())
    import torch

    torch.set_num_threads(args.threads)
    from manyfold._heldout import label_prototypes
    from manyfold._metrics import auroc
    from manyfold.data import load_mnist
    from manyfold.experts import CNNExpert

    ds = load_mnist(args.data_dir, kind="fashion-mnist", download=False, progress=False)
    tr, va, te = (ds.split(s) for s in ("train", "val", "test"))
    ytr, yva, yte = (np.asarray(s.labels).astype(str) for s in (tr, va, te))
    ktr, kva = ~np.isin(ytr, UNKNOWN), ~np.isin(yva, UNKNOWN)
    X, Xv, Xt = np.asarray(tr.items)[ktr], np.asarray(va.items)[kva], np.asarray(te.items)
    t0 = time.perf_counter()
    e = CNNExpert("fashion-known", max_seconds=args.seconds, seed=args.seed).fit(X, ytr[ktr], items_val=Xv,
                                                                                 y_val=yva[kva])
    fit_s = time.perf_counter() - t0
    logits = e._logits(e._pixels(Xt)) / e.temperature_
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)

    def penultimate(items: np.ndarray) -> np.ndarray:
        body = e.net_[:-2]  # up to the hidden layer's ReLU (the last dropout and linear layer left out)
        e.net_.eval()
        with torch.no_grad():
            return np.concatenate([body(e._to_input(torch.from_numpy(e._pixels(items[s:s + 2000])))).numpy()
                                   for s in range(0, len(items), 2000)])

    P, _ = label_prototypes(penultimate(X), ytr[ktr], sorted(set(ytr[ktr].tolist())), seed=args.seed)
    F = penultimate(Xt)
    proto = (F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)) @ P.T
    signals = {"max softmax probability": -p.max(1), "max logit": -logits.max(1),
               "energy (-logsumexp)": -np.log(np.exp(logits).sum(1)),
               "nearest prototype cosine, CNN features": -proto.max(1)}
    unk = np.isin(yte, UNKNOWN)
    known_acc = float((e.predict(list(Xt[~unk])) == yte[~unk]).mean())
    rows = []
    for name, s in signals.items():
        row = {"signal": name, "all": auroc(s, unk)}
        for u in UNKNOWN:
            m = (yte == u) | ~unk
            row[u] = auroc(s[m], (yte == u)[m])
        rows.append(row)
    env = environment()
    res = {"env": env, "load_at_start": load_at_start, "seconds_cap": args.seconds, "fit_seconds": round(fit_s, 1),
           "known_test_accuracy": known_acc, "epochs": len(e.history_), "signals": rows}
    out = Path(args.out)
    (out / "image_oos_signals.json").write_text(json.dumps(res, indent=1, default=float))
    L = ["# Out-of-scope signals of a Fashion-MNIST CNN: Shirt and Bag never seen", "",
         f"`{env['command']}` - {env['date']} - {env['machine']['cpu']}, {args.threads} torch threads; load average at "
         f"start {', '.join(f'{v:.2f}' for v in load_at_start)}.", "",
         f"CNN on the 8 known classes: {fit_s:.0f} s ({len(e.history_)} epochs, cap {args.seconds:.0f} s), "
         f"{known_acc:.2%} on their test images. AUROC of each single signal, unknown test images vs the known "
         "classes' 8,000 test images:", "",
         "| signal | Shirt + Bag | Shirt | Bag |", "|---|---:|---:|---:|"]
    L += [f"| {r['signal']} | {r['all']:.4f} | {r['Shirt']:.4f} | {r['Bag']:.4f} |" for r in rows]
    L += ["", "For comparison, the MNIST + Fashion-MNIST assembly's stage-1 detector (`image_assembly.md`, trained on "
          "held-out-label proxies that are linear heads on pixels) scores Shirt 0.597 and Bag 0.957 against all "
          "known test images (digits included)."]
    (out / "image_oos_signals.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
