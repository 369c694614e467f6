"""Evaluation metrics with known answers (accuracy, out-of-scope AUROC and recall, macro-F1)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["auroc", "macro_f1", "evaluate_arrays"]


def auroc(scores: Any, positive: Any) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` mask (ties count half)."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks for ties
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_f1(y_true: Any, y_pred: Any) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true``."""
    yt, yp = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    f1s = []
    for c in np.unique(yt):
        tp = float(((yt == c) & (yp == c)).sum())
        fp = float(((yt != c) & (yp == c)).sum())
        fn = float(((yt == c) & (yp != c)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def evaluate_arrays(asm: Any, out: Any, labels: Any) -> dict[str, Any]:
    """The standard report of one ``Assembly.forward`` output against true labels."""
    y = np.asarray(labels).astype(str)
    oos = asm.config.oos_label
    t = y == oos
    ins = ~t
    pred = asm.labels_[out.final.argmax(1)].astype(object)
    pred[out.is_oos] = oos
    pred = pred.astype(str)
    true_expert = np.array([asm.label_to_expert_.get(v, "") for v in y.tolist()])
    routed = asm.router.experts_[out.router_proba.argmax(1)]
    return {
        "in_scope_accuracy": float((pred[ins] == y[ins]).mean()) if ins.any() else float("nan"),
        "in_scope_accuracy_closed": float((asm.labels_[out.final.argmax(1)][ins] == y[ins]).mean()) if ins.any() else float("nan"),
        "macro_f1": macro_f1(y, pred),
        "oos_recall": float(out.is_oos[t].mean()) if t.any() else float("nan"),
        "oos_precision": float(t[out.is_oos].mean()) if out.is_oos.any() else float("nan"),
        "oos_auroc": auroc(out.oos_score, t),
        "escalation_rate": float(out.escalated[ins].mean()) if ins.any() else float("nan"),
        "escalation_rate_all": float(out.escalated.mean()),
        "routing_accuracy": float((routed[ins] == true_expert[ins]).mean()) if ins.any() else float("nan"),
        "degraded": int(out.degraded.sum()),
        "n_in_scope": int(ins.sum()),
        "n_oos": int(t.sum()),
    }
