"""The fair flat baseline: one head over every label, at its strongest standard form.

Every comparison against "one flat model" uses these rules, so the flat model
is judged exactly as the assembly is:

* out-of-scope items, when the training data has them, are a trained class and
  the out-of-scope score is ``p(out_of_scope)``; without them the score is
  ``1 - max`` in-scope probability (max-softmax);
* the probabilities are temperature-calibrated on the validation split;
* the threshold is the ``1 - target_false_oos_rate`` quantile of the score of
  the in-scope validation items (the assembly's rule), and an item is called
  out-of-scope when its score is above the threshold. Strictly above: on
  well separated data a calibrated head's ``p(out_of_scope)`` of in-scope items
  can underflow to the same value (0.0), and ``>=`` would then call every
  in-scope item out-of-scope; ``>`` keeps the false out-of-scope share of the
  validation items at most ``target_false_oos_rate`` even with ties.

:func:`split_oos`, :func:`oos_threshold` and :func:`flat_report` apply the same
rules to any flat model's probabilities (the demo's "big generalist alone").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._estimator import BaseEstimator, check_features, check_fitted
from ._exceptions import ConfigError
from ._heads import HeadSpec, fit_temperature, head_logits, softmax, train_head
from ._metrics import auroc

__all__ = ["FlatClassifier", "split_oos", "oos_threshold", "flat_report"]


def split_oos(proba: Any, classes: Any, oos_label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(in-scope labels, in-scope probabilities renormalised, out-of-scope score)`` of a flat model.

    ``proba`` (n, c) is over ``classes``; the score is the probability of
    ``oos_label`` when it is one of ``classes``, else ``1 - max`` in-scope probability.
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes).astype(str)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ConfigError(f"proba must be (n, {len(classes)}) over the classes, got shape {proba.shape}")
    is_oos = classes == oos_label
    if is_oos.all():
        raise ConfigError(f"a flat model needs at least one in-scope class besides {oos_label!r}")
    p_in = proba[:, ~is_oos]
    total = p_in.sum(1, keepdims=True)
    # an item whose in-scope probabilities all underflowed gets a uniform row (it is surely out of scope)
    p_in = np.where(total > 0, p_in / np.where(total > 0, total, 1.0), 1.0 / p_in.shape[1])
    score = proba[:, is_oos].sum(1) if is_oos.any() else 1.0 - p_in.max(1)
    return classes[~is_oos], p_in, score


def oos_threshold(scores_in_scope: Any, target_false_oos_rate: float) -> float:
    """The ``1 - target_false_oos_rate`` quantile of the in-scope validation items' scores."""
    s = np.asarray(scores_in_scope, dtype=np.float64)
    if not 0.0 <= target_false_oos_rate <= 1.0:
        raise ConfigError(f"target_false_oos_rate must be in [0, 1], got {target_false_oos_rate!r}")
    if not len(s):
        raise ConfigError("the out-of-scope threshold needs in-scope validation items; there are none")
    return float(np.quantile(s, 1.0 - target_false_oos_rate))


def flat_report(labels: Any, proba_in: Any, score: Any, y: Any, threshold: float, oos_label: str) -> dict[str, Any]:
    """The comparison figures of a flat model that never escalates.

    ``in_scope_accuracy_closed``: argmax accuracy on in-scope items, ignoring the
    out-of-scope call; ``in_scope_accuracy``: right label and not called
    out-of-scope; ``oos_recall`` / ``oos_auroc`` over the out-of-scope items
    (``None`` when ``y`` has none; the in-scope figures are ``None`` when it has
    no in-scope item); ``escalation_rate``: 0.0.
    """
    labels = np.asarray(labels).astype(str)
    y = np.asarray(y).astype(str)
    score = np.asarray(score, dtype=np.float64)
    pred = labels[np.asarray(proba_in).argmax(1)]
    if not len(y) == len(pred) == len(score):
        raise ConfigError(f"y has {len(y)} labels for {len(pred)} predictions")
    called = score > threshold
    oos = y == oos_label
    ins = ~oos
    return {
        "in_scope_accuracy_closed": float((pred[ins] == y[ins]).mean()) if ins.any() else None,
        "in_scope_accuracy": float(((pred == y) & ~called)[ins].mean()) if ins.any() else None,
        "oos_recall": float(called[oos].mean()) if oos.any() else None,
        "oos_auroc": auroc(score, oos) if oos.any() and ins.any() else None,
        "escalation_rate": 0.0,
    }


class FlatClassifier(BaseEstimator):
    """One calibrated head over every label (the out-of-scope label included when ``y`` has it).

    After ``fit``: ``classes_`` (every trained class, sorted), ``labels_`` (the
    in-scope ones), ``params_``, ``temperature_`` (fit on the validation split),
    ``threshold_`` (see the module docstring), ``n_features_in_``.
    """

    def __init__(self, *, kind: str = "linear", l2: float = 1e-5, max_iter: int = 300, seed: int = 0,
                 oos_label: str = "out_of_scope", target_false_oos_rate: float = 0.02) -> None:
        self.kind = kind
        self.l2 = l2
        self.max_iter = max_iter
        self.seed = seed
        self.oos_label = oos_label
        self.target_false_oos_rate = target_false_oos_rate

    def fit(self, X: Any, y: Any, *, X_val: Any, y_val: Any) -> FlatClassifier:
        """Train on features ``X`` / labels ``y``; calibrate and set the threshold on ``X_val`` / ``y_val``."""
        spec = HeadSpec(kind=self.kind, l2=self.l2, max_iter=self.max_iter, seed=self.seed)
        X = check_features(X)
        y = np.asarray(y).astype(str)
        if len(y) != len(X):
            raise ConfigError(f"X has {len(X)} rows but y has {len(y)} labels")
        Xv = check_features(X_val, X.shape[1], "X_val")
        yv = np.asarray(y_val).astype(str)
        if len(yv) != len(Xv):
            raise ConfigError(f"X_val has {len(Xv)} rows but y_val has {len(yv)} labels")
        self.classes_ = np.array(sorted(set(y.tolist())), dtype=str)
        self.labels_ = self.classes_[self.classes_ != self.oos_label]
        if not len(self.labels_):
            raise ConfigError(f"y has no in-scope label: only {self.oos_label!r}")
        index = {lab: i for i, lab in enumerate(self.classes_.tolist())}
        yi = np.array([index[v] for v in y.tolist()], dtype=np.int64)
        if len(self.classes_) == 1:  # one class: always sure of it
            self.params_ = {"W": np.zeros((X.shape[1], 1), np.float32), "b": np.zeros(1, np.float32)}
        else:
            self.params_ = train_head(X, yi, len(self.classes_), spec)
        self.n_features_in_ = X.shape[1]
        known = np.isin(yv, self.classes_)
        self.temperature_ = fit_temperature(head_logits(self.params_, Xv[known]),
                                            np.array([index[v] for v in yv[known].tolist()], dtype=np.int64))
        self.threshold_ = oos_threshold(self.oos_score(Xv[yv != self.oos_label]), self.target_false_oos_rate)
        return self

    def _parts(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p over classes_, p over labels_, score)`` from the tempered logits, in float64.

        The in-scope probabilities are a softmax over the in-scope logits (the
        renormalised probabilities, without the underflow of dividing tiny ones).
        """
        check_fitted(self, "params_")
        X = check_features(X, self.n_features_in_)
        z = head_logits(self.params_, X).astype(np.float64) / self.temperature_
        ins = self.classes_ != self.oos_label
        p_all = softmax(z)
        p_in = softmax(z[:, ins])
        score = p_all[:, ~ins].sum(1) if (~ins).any() else 1.0 - p_in.max(1)
        return p_all, p_in, score

    def scores(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(predict_proba_in(X), oos_score(X))`` in one pass over the head."""
        return self._parts(X)[1:]

    def predict_proba_all(self, X: Any) -> np.ndarray:
        """Calibrated probabilities over ``classes_`` (the out-of-scope class included when trained)."""
        return self._parts(X)[0]

    def predict_proba_in(self, X: Any) -> np.ndarray:
        """Probabilities over the in-scope ``labels_``, renormalised to sum to one."""
        return self._parts(X)[1]

    def oos_score(self, X: Any) -> np.ndarray:
        """``p(out_of_scope)`` when that class was trained, else ``1 - max`` in-scope probability."""
        return self._parts(X)[2]

    def predict(self, X: Any) -> np.ndarray:
        """The in-scope label, or ``oos_label`` where the score is above ``threshold_``."""
        check_fitted(self, "threshold_")
        _, p_in, score = self._parts(X)
        return np.where(score > self.threshold_, self.oos_label, self.labels_[p_in.argmax(1)])

    def report(self, X: Any, y: Any) -> dict[str, Any]:
        """See :func:`flat_report`; keys ``in_scope_accuracy_closed``, ``in_scope_accuracy``,
        ``oos_recall``, ``oos_auroc``, ``escalation_rate``."""
        check_fitted(self, "threshold_")
        _, p_in, score = self._parts(X)
        return flat_report(self.labels_, p_in, score, y, self.threshold_, self.oos_label)
