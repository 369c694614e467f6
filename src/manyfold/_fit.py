"""Training an assembly and choosing its escalation policy on a validation split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._exceptions import ConfigError
from ._features import confidence_features, label_centroids
from ._oos import OOSDetector

__all__ = ["fit_assembly", "calibrate_assembly", "refit_router"]

#: a threshold on a probability that is never reached (JSON has no infinity)
NEVER = 2.0
#: an escalated item is called out-of-scope only if the stage-2 detector finds that more likely than not
MIN_OOS_PROBA = 0.5


def _encode(enc: Any, items: Sequence[Any], progress: bool) -> np.ndarray:
    return np.asarray(enc.encode(list(items), show_progress=progress), np.float32)


def _is_fitted(est: Any) -> bool:
    return hasattr(est, "labels_")


def fit_assembly(asm: Any, train_items: Sequence[Any], train_labels: Any, val_items: Sequence[Any], val_labels: Any, *,
                 label_to_expert: dict[str, str] | None = None, show_progress: bool = False) -> Any:
    """Fit every part that is not fitted yet, then the router and the escalation policy.

    ``train_labels`` may contain the out-of-scope label: those items never
    train an expert or the router; they teach the generalist its
    out-of-scope class and the out-of-scope detectors what "none" looks like.
    """
    oos = asm.config.oos_label
    y_tr = np.asarray(train_labels).astype(str)
    y_va = np.asarray(val_labels).astype(str)
    if len(y_tr) != len(train_items) or len(y_va) != len(val_items):
        raise ConfigError("items and labels differ in length")
    X_tr = _encode(asm.encoder, train_items, show_progress)
    X_va = _encode(asm.encoder, val_items, show_progress)
    ins_tr = y_tr != oos
    for e in asm.experts:
        if _is_fitted(e):
            continue
        if label_to_expert is None:
            raise ConfigError(f"expert {e.name!r} is not fitted: pass label_to_expert to say which labels it owns")
        mine = np.array([label_to_expert.get(v) == e.name for v in y_tr.tolist()])
        if not mine.any():
            raise ConfigError(f"no training item has a label of expert {e.name!r}")
        mine_va = np.array([label_to_expert.get(v) == e.name for v in y_va.tolist()])
        e.fit(X_tr[mine], y_tr[mine], X_val=X_va[mine_va], y_val=y_va[mine_va],
              lineage={"encoder": getattr(asm.encoder, "id", None)})
    g = asm.generalist
    if g is not None and not _is_fitted(g):
        g.fit(list(train_items), y_tr, items_val=list(val_items), y_val=y_va, show_progress=show_progress)
    refit_router(asm, X_tr[ins_tr], y_tr[ins_tr], X_va, y_va, val_items=val_items,
                 oos_X=X_tr[~ins_tr], oos_items=[train_items[i] for i in np.nonzero(~ins_tr)[0]])
    return asm


def refit_router(asm: Any, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, val_items: Sequence[Any],
                 oos_X: np.ndarray, oos_items: Sequence[Any]) -> None:
    """Refit only the router (and the policy) over the current experts: the experts stay as they are."""
    l2e = {lab: e.name for e in asm.experts for lab in e.labels_.tolist()}
    keep = np.array([v in l2e for v in y.tolist()])
    keep_va = np.array([v in l2e for v in y_val.tolist()])
    asm.router.fit(X[keep], y[keep], l2e, X_val=X_val[keep_va], y_val=y_val[keep_va])
    asm._layout()
    index = {lab: i for i, lab in enumerate(asm.labels_.tolist())}
    asm.centroids_ = label_centroids(X[keep], np.array([index[v] for v in y[keep].tolist()]), len(asm.labels_))
    if asm.generalist is not None:
        gl = {lab: i for i, lab in enumerate(asm.generalist.labels_.tolist())}
        asm._generalist_cols = np.array([gl.get(lab, -1) for lab in asm.labels_.tolist()])
    # the calibration pool: in-scope validation items of known labels + every out-of-scope item
    oos = asm.config.oos_label
    is_oos_va = y_val == oos
    pool_X = np.concatenate([X_val[keep_va], oos_X, X_val[is_oos_va]])
    pool_items = [val_items[i] for i in np.nonzero(keep_va)[0]] + list(oos_items) + [val_items[i] for i in np.nonzero(is_oos_va)[0]]
    pool_y = np.concatenate([y_val[keep_va], np.full(len(oos_X) + is_oos_va.sum(), oos)])
    calibrate_assembly(asm, pool_X, pool_items, pool_y)


def _quantile(v: np.ndarray, q: float) -> float:
    return float(np.quantile(v, min(max(q, 0.0), 1.0))) if len(v) else NEVER


def calibrate_assembly(asm: Any, X: np.ndarray, items: Sequence[Any], y: np.ndarray) -> None:
    """Fit the out-of-scope detectors and pick the escalation thresholds on held-out data.

    ``y`` holds in-scope labels and the out-of-scope label. The thresholds keep
    the share of in-scope items escalated within ``max_escalation_rate`` and
    the share wrongly called out-of-scope near ``target_false_oos_rate``; among
    the splits of the escalation budget between "low confidence" and
    "possible out-of-scope", the one with the best accuracy + out-of-scope
    recall on this data wins.
    """
    cfg, oos = asm.config, asm.config.oos_label
    t = y == oos
    if t.all() or not t.any():
        raise ConfigError("calibration needs in-scope and out-of-scope validation items")
    asm.policy_ = {"confidence_threshold": 0.0, "escalate_oos_threshold": NEVER, "oos_threshold_small": NEVER,
                   "oos_threshold_escalated": NEVER, "fusion_weight": 0.5}
    pr, _, _, proba, _ = asm._small_stage(X, cfg.top_k)
    F1 = np.concatenate([confidence_features(proba, X, asm.centroids_), np.log(np.clip(pr.max(1, keepdims=True), 1e-9, 1))], 1)
    asm.detector1_ = OOSDetector().fit(F1, t)
    oos1 = asm.detector1_.predict_proba(F1)
    index = {lab: i for i, lab in enumerate(asm.labels_.tolist())}
    yi = np.array([index.get(v, -1) for v in y.tolist()])
    ins = ~t
    P = asm.policy_
    P["oos_threshold_small"] = _quantile(oos1[ins], 1 - cfg.target_false_oos_rate)
    small_correct = (proba.argmax(1) == yi) & ins
    report = {"val_in_scope_accuracy_small": float(small_correct[ins].mean())}
    if asm.generalist is None:
        P["escalate_oos_threshold"] = NEVER
        asm.calibration_ = report
        return
    pg, fg = asm.generalist.signals(list(items))
    asm.detector2_ = OOSDetector().fit(np.concatenate([F1, fg], 1), t)
    oos2 = asm.detector2_.predict_proba(np.concatenate([F1, fg], 1))
    pg_in = asm._generalist_inscope(pg)
    best_a, best_acc = 0.5, -1.0
    for a in (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0):
        P["fusion_weight"] = a
        acc = float((asm._fuse(proba[ins], pg_in[ins]).argmax(1) == yi[ins]).mean())
        if acc > best_acc + 1e-9:
            best_a, best_acc = a, acc
    P["fusion_weight"] = best_a
    fused_correct = asm._fuse(proba, pg_in).argmax(1) == yi
    conf = proba.max(1)
    n_in = ins.sum()
    best = None
    for q in np.linspace(0.0, cfg.max_escalation_rate, 13):
        te = _quantile(oos1[ins], 1 - q) if q > 0 else NEVER
        flagged = oos1 >= te
        left = cfg.max_escalation_rate - flagged[ins].mean()
        rest = ins & ~flagged
        tc = _quantile(conf[rest], left * n_in / max(rest.sum(), 1)) if left > 0 else 0.0
        esc = flagged | (conf < tc)
        if esc[ins].mean() > cfg.max_escalation_rate + 1e-9:
            tc = 0.0
            esc = flagged
        esc_in = esc & ins
        # false out-of-scope budget (k in-scope items) spent on escalated in-scope items only; the threshold
        # never drops below MIN_OOS_PROBA: with few escalated items the budget could otherwise call every
        # escalated item out-of-scope, however unlikely the detector finds it
        k = int(np.floor(cfg.target_false_oos_rate * n_in))
        s = np.sort(oos2[esc_in])[::-1]
        t2 = max(float(s[k]) + 1e-9 if k < len(s) else 0.0, MIN_OOS_PROBA)
        called_oos = np.where(esc, oos2 >= t2, oos1 >= P["oos_threshold_small"])
        correct = np.where(esc, fused_correct, small_correct) & ~called_oos & ins
        acc, rec = correct[ins].mean(), called_oos[t].mean()
        score = acc + cfg.oos_weight * rec
        if best is None or score > best[0]:
            best = (score, te, tc, t2, acc, rec, esc[ins].mean())
    _, P["escalate_oos_threshold"], P["confidence_threshold"], P["oos_threshold_escalated"], acc, rec, rate = best
    report.update({"val_in_scope_accuracy": float(acc), "val_oos_recall": float(rec), "val_escalation_rate": float(rate),
                   "val_fused_accuracy": best_acc})
    asm.calibration_ = report
