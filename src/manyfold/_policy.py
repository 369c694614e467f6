"""The escalation policy: one object that decides, per item, out-of-scope and escalation.

It owns everything the decision needs (label centroids, the stage-1 and
stage-2 out-of-scope detectors, the thresholds, the fusion weight) and is
saved by the registry like any other part. :meth:`EscalationPolicy.fit` takes
arrays the assembly computed on held-out data; :meth:`decide` and
:meth:`resolve` are the two halves of the forward pass.

**Where "out of scope" comes from** (``oos_calibration``):

* ``"examples"``: the data has out-of-scope items; the detectors learn from
  them (in-scope validation items against every out-of-scope item).
* ``"held_out_labels"``: the data has none. Labels are split into folds; for
  each fold a proxy of the small stage (one flat head on the small encoder) and
  of the generalist is fitted without that fold's labels, and the fold's items
  (train and validation) play the unknowns: what the detectors learn is what
  an item of a label the model never saw looks like. The thresholds are still
  set on the real assembly's in-scope validation items.
* ``"auto"`` (default): ``"examples"`` when there are out-of-scope items, else
  ``"held_out_labels"``.

**On what scale the detectors read the signals** (``signal_scaling``): a
detector learnt from held-out-label proxies must carry over to the real
experts, and the two need not be alike (a flat linear proxy on raw pixels is
far less sure of itself than a CNN expert). With ``"known_rank"`` every
stage-1 signal is read as its rank among the *same model's* known validation
items (the logit of that empirical CDF, mid-rank for ties): a proxy's signals
against its own fold's known items, the assembly's against its in-scope
validation items. What the detector learns is then "how unusual is this for a
known item of this model", which holds for either model. ``"none"`` reads the
raw signals; ``"auto"`` (default) ranks with held-out-label calibration when
the in-scope validation items and every fold's known items number at least
:data:`MIN_RANK_ITEMS` (a rank among a dozen items has no tails: a new known
item falls outside their range too often), and reads raw signals otherwise and
with out-of-scope examples (where the detector learns from the real assembly's
own signals and there is nothing to carry over).

**How much to escalate** (``objective``), chosen on the validation split from
the curve of accuracy against escalation rate:

* ``"knee"`` (default): the least escalation whose accuracy is within
  ``knee_tolerance`` of the best the curve reaches (the point of diminishing
  returns) - weak experts and a strong generalist escalate more;
* ``"accuracy"``: the least escalation that reaches ``target_accuracy``;
* ``"budget"``: the best accuracy at ``max_escalation_rate`` (a cost cap).

``max_escalation_rate`` caps every objective. ``report_["budget_binds"]`` says
whether the cap stopped the objective from escalating more.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._components import register_component
from ._estimator import BaseEstimator, check_fitted
from ._exceptions import ArtifactError, ConfigError
from ._features import confidence_features, normalise_rows
from ._oos import OOSDetector

__all__ = ["EscalationPolicy", "PoolSignals", "SimulatedUnknowns", "stage1_features", "nearest_prototype_cosine",
           "known_quantiles", "rank_signals", "NEVER", "MIN_OOS_PROBA", "OBJECTIVES", "OOS_CALIBRATIONS", "SIGNAL_SCALINGS",
           "RANK_LEVELS", "MIN_RANK_ITEMS"]

#: a threshold on a probability that is never reached (JSON has no infinity)
NEVER = 2.0
#: an escalated item is called out-of-scope only if the stage-2 detector finds that more likely than not
MIN_OOS_PROBA = 0.5
OBJECTIVES = ("knee", "accuracy", "budget")
OOS_CALIBRATIONS = ("auto", "examples", "held_out_labels")
SIGNAL_SCALINGS = ("auto", "none", "known_rank")
#: quantile levels kept per stage-1 signal for ``signal_scaling="known_rank"`` (a 1/1000 grid of the known items' CDF)
RANK_LEVELS = 1001
#: ``signal_scaling="auto"`` ranks only when the known items it ranks among number at least this many
MIN_RANK_ITEMS = 200
#: escalation budgets on the accuracy-vs-escalation curve (shares of in-scope validation items)
BUDGET_GRID = tuple(sorted({round(float(b), 3) for b in (*np.arange(0.0, 0.30001, 0.01), *np.arange(0.35, 1.00001, 0.05))}))
_THRESHOLDS = ("confidence_threshold", "escalate_oos_threshold", "oos_threshold_small", "oos_threshold_escalated")


def stage1_features(proba: np.ndarray, X: np.ndarray, centroids: np.ndarray, router_proba: np.ndarray,
                    prototypes: np.ndarray | None = None) -> np.ndarray:
    """The stage-1 out-of-scope signals: confidence features plus the router's log max probability.

    With ``prototypes`` (unit rows; several per label), one more column: the
    cosine to the nearest prototype. A label's items rarely sit in one round
    cloud, so the nearest of a few cluster centres says "like something seen"
    better than the distance to the label's mean does.
    """
    cols = [confidence_features(proba, X, centroids), np.log(np.clip(router_proba.max(1, keepdims=True), 1e-9, 1))]
    if prototypes is not None:
        cols.append(nearest_prototype_cosine(X, prototypes)[:, None])
    return np.concatenate(cols, 1)


def nearest_prototype_cosine(X: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Per row of ``X``: the largest cosine to any row of ``prototypes`` (unit rows)."""
    return (normalise_rows(np.asarray(X, np.float32)) @ np.asarray(prototypes, np.float32).T).max(1)


def known_quantiles(F: np.ndarray, levels: int = RANK_LEVELS) -> np.ndarray:
    """``(levels, d)``: the quantiles of each column of ``F`` (the signals of known items) at ``linspace(0, 1, levels)``."""
    F = np.asarray(F, np.float64)
    if F.ndim != 2 or len(F) == 0:
        raise ConfigError(f"known_quantiles needs a non-empty 2-d array of signals; got shape {F.shape}")
    return np.quantile(F, np.linspace(0.0, 1.0, levels), axis=0).astype(np.float32)


def rank_signals(F: np.ndarray, quantiles: np.ndarray, n_known: int | None = None) -> np.ndarray:
    """Each column of ``F`` read as the logit of its rank among the ``n_known`` known items ``quantiles`` describe.

    The rank is the position on the quantile grid, interpolated linearly
    between grid points, the middle of a run of equal quantiles for a value
    that many known items share (a saturated max-probability, say), and the
    grid's ends beyond it. With ``m = min(n_known, levels)`` (``levels`` when
    ``n_known`` is None) the position is read as the ``k``-th of ``m`` order
    statistics and ``u = (k + 0.5) / m``: values stay finite (about +-7.6 with
    1,001 levels) and the tails are no longer than the known items support.
    """
    F = np.asarray(F, np.float64)
    q = np.asarray(quantiles, np.float64)
    if F.ndim != 2 or q.ndim != 2 or F.shape[1] != q.shape[1]:
        raise ConfigError(f"signals of shape {F.shape} do not match rank quantiles of shape {q.shape}")
    n = q.shape[0]
    m = n if n_known is None else max(min(int(n_known), n), 1)
    out = np.empty(F.shape, np.float32)
    for j in range(F.shape[1]):
        qj, x = q[:, j], F[:, j]
        lo, hi = np.searchsorted(qj, x, "left"), np.searchsorted(qj, x, "right")
        i = np.clip(lo, 1, n - 1)
        a, b = qj[i - 1], qj[i]
        gap = b - a
        frac = np.where(gap > 0, (x - a) / np.where(gap > 0, gap, 1.0), 0.5)
        pos = np.where(hi > lo + 1, (lo + hi - 1) / 2.0, np.clip(i - 1 + frac, 0.0, n - 1.0))
        pos = np.where(x < qj[0], 0.0, np.where(x > qj[-1], n - 1.0, pos))
        u = (pos / max(n - 1, 1) * (m - 1) + 0.5) / m
        out[:, j] = np.log(u / (1.0 - u))
    return out


@dataclass(frozen=True, eq=False)
class PoolSignals:
    """The small stage's outputs on the calibration pool (validation items, plus out-of-scope items if any).

    ``y_index``: each row's label index in the assembly's labels (-1 for
    out-of-scope); ``pg_in``, ``fg``: the generalist's in-scope probabilities
    and stage-2 features (None without a generalist).
    """

    proba: np.ndarray
    X: np.ndarray
    router_proba: np.ndarray
    y_index: np.ndarray
    is_oos: np.ndarray
    pg_in: np.ndarray | None = None
    fg: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class SimulatedUnknowns:
    """Stage-1 (and stage-2) features of items whose labels a proxy model never saw (``is_unknown``) and of
    known-label items under the same proxies; see the module docstring."""

    F1: np.ndarray
    is_unknown: np.ndarray
    fg: np.ndarray | None = None
    n_folds: int = 0
    #: the prototypes (unit rows, several per label, all labels) whose nearest cosine is the last column of ``F1``
    prototypes: np.ndarray | None = None
    #: each row's fold: the fold's known rows (``~is_unknown``) are the proxy's own known validation items, the
    #: reference of the rows' ranks under ``signal_scaling="known_rank"`` (None: ranks not available)
    fold: np.ndarray | None = None

    def ranked_F1(self) -> np.ndarray:
        """``F1`` with each fold's signals ranked among that fold's known rows (:func:`rank_signals`)."""
        if self.fold is None:
            raise ConfigError("these simulated unknowns carry no fold of each row: ranked signals need it")
        fold = np.asarray(self.fold)
        out = np.empty(self.F1.shape, np.float32)
        for f in np.unique(fold):
            rows = fold == f
            known = rows & ~np.asarray(self.is_unknown, bool)
            if not known.any():
                raise ConfigError(f"fold {int(f)} of the simulated unknowns has no known item to rank against")
            out[rows] = rank_signals(self.F1[rows], known_quantiles(self.F1[known]), int(known.sum()))
        return out

    def fewest_known(self) -> int:
        """The fewest known rows of any fold (what a fold's ranks rest on); 0 without folds."""
        if self.fold is None:
            return 0
        known = ~np.asarray(self.is_unknown, bool)
        return int(min((known & (np.asarray(self.fold) == f)).sum() for f in np.unique(self.fold)))


def _quantile(v: np.ndarray, q: float) -> float:
    return float(np.quantile(v, min(max(q, 0.0), 1.0))) if len(v) else NEVER


@register_component
class EscalationPolicy(BaseEstimator):
    """Out-of-scope detection and escalation, calibrated on held-out data (see the module docstring).

    After ``fit``: ``thresholds_`` (dict), ``fusion_weight_``, ``centroids_``,
    ``prototypes_`` (label prototypes for the nearest-prototype signal; held-out-label
    calibration only, else None), ``signal_quantiles_`` (the in-scope validation items'
    stage-1 signal quantiles the detectors rank against; None when they read raw
    signals; ``signal_known_items_`` how many), ``signal_scaling_`` (``"known_rank"`` or ``"none"``), ``detector1_``, ``detector2_`` (None without a generalist or when it cannot
    be simulated), ``oos_method_``, ``report_`` (the validation figures and the
    curve the budget was chosen on).
    """

    def __init__(self, *, objective: str = "knee", max_escalation_rate: float = 1.0, target_accuracy: float | None = None,
                 knee_tolerance: float = 0.005, target_false_oos_rate: float = 0.02, oos_weight: float = 0.1,
                 oos_calibration: str = "auto", signal_scaling: str = "auto") -> None:
        self.objective = objective
        self.max_escalation_rate = max_escalation_rate
        self.target_accuracy = target_accuracy
        self.knee_tolerance = knee_tolerance
        self.target_false_oos_rate = target_false_oos_rate
        self.oos_weight = oos_weight
        self.oos_calibration = oos_calibration
        self.signal_scaling = signal_scaling

    @classmethod
    def from_config(cls, config: Any) -> EscalationPolicy:
        """The policy an :class:`~manyfold.AssemblyConfig` describes."""
        return cls(objective=config.escalation_objective, max_escalation_rate=config.max_escalation_rate,
                   target_accuracy=config.target_accuracy, knee_tolerance=config.knee_tolerance,
                   target_false_oos_rate=config.target_false_oos_rate, oos_weight=config.oos_weight,
                   oos_calibration=config.oos_calibration, signal_scaling=config.oos_signal_scaling)

    def _check_params(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown escalation objective {self.objective!r}; valid choices: {', '.join(OBJECTIVES)}")
        if self.oos_calibration not in OOS_CALIBRATIONS:
            raise ConfigError(f"unknown oos_calibration {self.oos_calibration!r}; valid choices: {', '.join(OOS_CALIBRATIONS)}")
        if self.signal_scaling not in SIGNAL_SCALINGS:
            raise ConfigError(f"unknown signal_scaling {self.signal_scaling!r}; valid choices: {', '.join(SIGNAL_SCALINGS)}")
        if self.objective == "accuracy" and self.target_accuracy is None:
            raise ConfigError("the 'accuracy' escalation objective needs target_accuracy (e.g. 0.95)")

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, centroids: np.ndarray, pool: PoolSignals, simulated: SimulatedUnknowns | None = None) -> EscalationPolicy:
        """Fit the detectors and choose the thresholds.

        ``pool`` holds in-scope validation items (and the out-of-scope items, in
        ``"examples"`` mode); ``simulated`` the held-out-label features (needed in
        ``"held_out_labels"`` mode).
        """
        self._check_params()
        t = np.asarray(pool.is_oos, bool)
        ins = ~t
        if not ins.any():
            raise ConfigError("calibration needs in-scope validation items")
        method = self.oos_calibration
        if method == "auto":
            method = "examples" if t.any() else "held_out_labels"
        if method == "examples" and not t.any():
            raise ConfigError("oos_calibration='examples' needs out-of-scope items in the data; "
                              "use 'held_out_labels' (or 'auto') for data without them")
        if method == "held_out_labels" and simulated is None:
            raise ConfigError("oos_calibration='held_out_labels' needs simulated unknowns (at least 3 labels)")
        self.centroids_ = np.asarray(centroids, np.float32)
        self.oos_method_ = method
        self.prototypes_ = (np.asarray(simulated.prototypes, np.float32)
                            if method == "held_out_labels" and simulated.prototypes is not None else None)
        self.thresholds_ = {"confidence_threshold": 0.0, "escalate_oos_threshold": NEVER, "oos_threshold_small": NEVER,
                            "oos_threshold_escalated": NEVER}
        self.fusion_weight_ = 0.5
        self.detector2_ = None
        scaling = self.signal_scaling
        if scaling == "auto":
            scaling = ("known_rank" if method == "held_out_labels" and int(ins.sum()) >= MIN_RANK_ITEMS
                       and simulated.fewest_known() >= MIN_RANK_ITEMS else "none")
        raw1 = stage1_features(pool.proba, pool.X, self.centroids_, pool.router_proba, self.prototypes_)
        self.signal_quantiles_ = known_quantiles(raw1[ins]) if scaling == "known_rank" else None
        self.signal_known_items_ = int(ins.sum()) if scaling == "known_rank" else 0
        F1 = self._scaled(raw1)
        if method == "examples":  # (with "known_rank", the out-of-scope examples ranked among the in-scope items)
            self.detector1_ = OOSDetector().fit(F1, t)
        else:
            S1 = simulated.ranked_F1() if scaling == "known_rank" else simulated.F1
            self.detector1_ = OOSDetector().fit(S1, simulated.is_unknown)
        oos1 = self.detector1_.predict_proba(F1)
        self.thresholds_["oos_threshold_small"] = _quantile(oos1[ins], 1 - self.target_false_oos_rate)
        yi = np.asarray(pool.y_index)
        small_correct = (pool.proba.argmax(1) == yi) & ins
        report: dict[str, Any] = {"oos_method": method, "val_in_scope_accuracy_small": float(small_correct[ins].mean()),
                                  "objective": self.objective}
        if method == "held_out_labels":
            u = simulated.is_unknown
            report["held_out_folds"] = int(simulated.n_folds)
            report["val_unknown_recall_small"] = float((self.detector1_.predict_proba(S1[u])
                                                        >= self.thresholds_["oos_threshold_small"]).mean())
        if pool.pg_in is None:
            self.report_ = report
            return self
        conf = pool.proba.max(1)
        if method == "examples":
            G = np.concatenate([F1, pool.fg], 1)
            self.detector2_ = OOSDetector().fit(G, t)
            oos2 = self.detector2_.predict_proba(G)
        elif simulated.fg is not None:
            self.detector2_ = OOSDetector().fit(np.concatenate([S1, simulated.fg], 1), simulated.is_unknown)
            oos2 = self.detector2_.predict_proba(np.concatenate([F1, pool.fg], 1))
        else:
            oos2 = oos1
        best_a, best_acc = 0.5, -1.0
        for a in (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0):
            self.fusion_weight_ = a
            acc = float((self.fuse(pool.proba[ins], pool.pg_in[ins]).argmax(1) == yi[ins]).mean())
            if acc > best_acc + 1e-9:
                best_a, best_acc = a, acc
        self.fusion_weight_ = best_a
        fused_correct = self.fuse(pool.proba, pool.pg_in).argmax(1) == yi
        if method == "held_out_labels":  # the unknowns of the search are the simulated ones
            u = simulated.is_unknown
            su1 = self.detector1_.predict_proba(S1[u])
            su2 = (self.detector2_.predict_proba(np.concatenate([S1[u], simulated.fg[u]], 1))
                   if self.detector2_ is not None else su1)
            n_u = int(u.sum())
            oos1 = np.concatenate([oos1[ins], su1])
            oos2 = np.concatenate([oos2[ins], su2])
            conf = np.concatenate([conf[ins], np.exp(simulated.F1[u, 0])])  # raw: the proxies' own max-probability
            small_correct = np.r_[small_correct[ins], np.zeros(n_u, bool)]
            fused_correct = np.r_[fused_correct[ins], np.zeros(n_u, bool)]
            t = np.r_[np.zeros(int(ins.sum()), bool), np.ones(n_u, bool)]
        arrays = (t, oos1, oos2, conf, small_correct, fused_correct)
        cap = float(self.max_escalation_rate)
        if self.objective == "budget":
            chosen = self._search(arrays, cap)
        else:
            chosen = self._choose([self._search(arrays, b) for b in BUDGET_GRID if b <= cap + 1e-12] or [self._search(arrays, cap)])
        curve = [self._search(arrays, b) for b in BUDGET_GRID]
        unbounded = self._choose(curve) if self.objective != "budget" else max(curve, key=lambda r: (r["accuracy"], -r["budget"]))
        th = self.thresholds_
        th["escalate_oos_threshold"], th["confidence_threshold"], th["oos_threshold_escalated"] = chosen["thresholds"]
        report.update({
            "val_in_scope_accuracy": chosen["accuracy"], "val_oos_recall": chosen["recall"] if method == "examples" else None,
            "val_escalation_rate": chosen["rate"], "val_fused_accuracy": best_acc, "escalation_budget": chosen["budget"],
            "max_escalation_rate": cap, "budget_binds": bool(unbounded["budget"] > chosen["budget"] + 1e-9 and
                                                             unbounded["accuracy"] > chosen["accuracy"] + 1e-9),
            "val_in_scope_accuracy_unbounded": unbounded["accuracy"], "escalation_budget_unbounded": unbounded["budget"],
            "curve": {"budget": [r["budget"] for r in curve], "accuracy": [round(r["accuracy"], 6) for r in curve],
                      "rate": [round(r["rate"], 6) for r in curve]},
        })
        if method == "held_out_labels":
            report["val_unknown_recall_simulated"] = chosen["recall"]
        if self.objective == "accuracy":
            report["target_accuracy_reached"] = bool(chosen["accuracy"] >= float(self.target_accuracy) - 1e-12)
        self.report_ = report
        return self

    def _choose(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        if self.objective == "accuracy":
            ok = [r for r in results if r["accuracy"] >= float(self.target_accuracy) - 1e-12]
            return min(ok, key=lambda r: r["budget"]) if ok else max(results, key=lambda r: (r["accuracy"], -r["budget"]))
        best = max(r["accuracy"] for r in results)
        return min((r for r in results if r["accuracy"] >= best - self.knee_tolerance - 1e-12), key=lambda r: r["budget"])

    def _search(self, arrays: tuple[np.ndarray, ...], budget: float) -> dict[str, Any]:
        """The best split of ``budget`` between "possible out-of-scope" and "low confidence" (accuracy + recall)."""
        t, oos1, oos2, conf, small_correct, fused_correct = arrays
        ins = ~t
        n_in = ins.sum()
        best = None
        for q in np.linspace(0.0, budget, 13):
            te = _quantile(oos1[ins], 1 - q) if q > 0 else NEVER
            flagged = oos1 >= te
            left = budget - flagged[ins].mean()
            rest = ins & ~flagged
            tc = _quantile(conf[rest], left * n_in / max(rest.sum(), 1)) if left > 0 else 0.0
            esc = flagged | (conf < tc)
            if esc[ins].mean() > budget + 1e-9:
                tc = 0.0
                esc = flagged
            esc_in = esc & ins
            # false out-of-scope budget (k in-scope items) spent on escalated in-scope items only; the threshold
            # never drops below MIN_OOS_PROBA: with few escalated items the budget could otherwise call every
            # escalated item out-of-scope, however unlikely the detector finds it
            k = int(np.floor(self.target_false_oos_rate * n_in))
            s = np.sort(oos2[esc_in])[::-1]
            t2 = max(float(s[k]) + 1e-9 if k < len(s) else 0.0, MIN_OOS_PROBA)
            called_oos = np.where(esc, oos2 >= t2, oos1 >= self.thresholds_["oos_threshold_small"])
            correct = np.where(esc, fused_correct, small_correct) & ~called_oos & ins
            acc, rec = correct[ins].mean(), called_oos[t].mean() if t.any() else 0.0
            score = acc + self.oos_weight * rec
            if best is None or score > best[0]:
                best = (score, te, tc, t2, acc, rec, esc[ins].mean())
        _, te, tc, t2, acc, rec, rate = best
        return {"budget": float(budget), "thresholds": (float(te), float(tc), float(t2)), "accuracy": float(acc),
                "recall": float(rec), "rate": float(rate)}

    @property
    def signal_scaling_(self) -> str:
        """How the fitted detectors read the signals: ``"known_rank"`` (with ``signal_quantiles_``) or ``"none"``."""
        check_fitted(self, "thresholds_")
        return "none" if getattr(self, "signal_quantiles_", None) is None else "known_rank"

    def _scaled(self, F1: np.ndarray) -> np.ndarray:
        """The stage-1 signals as the detectors read them: ranked (``signal_quantiles_``) or raw."""
        q = getattr(self, "signal_quantiles_", None)
        return F1 if q is None else rank_signals(F1, q, getattr(self, "signal_known_items_", None) or None)

    # -- deciding -----------------------------------------------------------------------------
    def fuse(self, proba: np.ndarray, pg_in: np.ndarray) -> np.ndarray:
        """Log-linear fusion of the experts' and the generalist's in-scope probabilities."""
        a = self.fusion_weight_
        z = (1 - a) * np.log(np.clip(proba, 1e-9, 1)) + a * np.log(np.clip(pg_in, 1e-9, 1))
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def decide(self, proba: np.ndarray, X: np.ndarray, router_proba: np.ndarray, *, escalate: bool) -> dict[str, np.ndarray]:
        """Stage 1: ``features`` (the stage-1 signals as the detectors read them), ``oos_score``, ``is_oos``,
        ``escalated`` and ``reason`` per row."""
        check_fitted(self, "thresholds_")
        th = self.thresholds_
        F1 = self._scaled(stage1_features(proba, X, self.centroids_, router_proba, getattr(self, "prototypes_", None)))
        oos1 = self.detector1_.predict_proba(F1)
        n = len(X)
        esc = np.zeros(n, bool)
        reason = np.array([None] * n, dtype=object)
        if escalate:
            low = proba.max(1) < th["confidence_threshold"]
            maybe_oos = oos1 >= th["escalate_oos_threshold"]
            esc = low | maybe_oos
            reason[low] = "low_confidence"
            reason[maybe_oos] = "possible_out_of_scope"
        return {"features": F1, "oos_score": oos1, "is_oos": oos1 >= th["oos_threshold_small"], "escalated": esc,
                "reason": reason}

    def resolve(self, proba: np.ndarray, pg_in: np.ndarray, F1: np.ndarray, fg: np.ndarray,
                oos_small: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 2 for escalated rows: fused probabilities, out-of-scope score, out-of-scope call."""
        final = self.fuse(proba, pg_in)
        if self.detector2_ is not None:
            oos2 = self.detector2_.predict_proba(np.concatenate([F1, fg], 1))
        else:
            oos2 = np.asarray(oos_small, np.float32)
        return final, oos2, oos2 >= self.thresholds_["oos_threshold_escalated"]

    def fallback_is_oos(self, oos_small: np.ndarray) -> np.ndarray:
        """The out-of-scope call for escalated rows the generalist could not answer (stage 1 only)."""
        return oos_small >= self.thresholds_["oos_threshold_small"]

    def with_thresholds(self, **thresholds: float) -> EscalationPolicy:
        """A copy with some thresholds replaced (sweeps and tests); the detectors are shared."""
        check_fitted(self, "thresholds_")
        bad = sorted(set(thresholds) - set(_THRESHOLDS))
        if bad:
            raise ConfigError(f"unknown thresholds {bad}; valid choices: {', '.join(_THRESHOLDS)}")
        new = copy.copy(self)
        new.thresholds_ = {**self.thresholds_, **{k: float(v) for k, v in thresholds.items()}}
        return new

    @property
    def has_stage2(self) -> bool:
        return getattr(self, "detector2_", None) is not None

    # -- persistence --------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "thresholds_")
        dets = {"detector1": self.detector1_, **({"detector2": self.detector2_} if self.detector2_ is not None else {})}
        det_cfg = {k: v.to_state()[0] for k, v in dets.items()}
        det_arr = {f"{k}.{a}": arr for k, v in dets.items() for a, arr in v.to_state()[1].items()}
        config = {"type": "EscalationPolicy", "params": self.get_params(), "detectors": det_cfg,
                  "thresholds": {k: float(v) for k, v in self.thresholds_.items()},
                  "fusion_weight": float(self.fusion_weight_), "oos_method": self.oos_method_, "report": self.report_,
                  "signal_known_items": int(getattr(self, "signal_known_items_", 0))}
        protos = getattr(self, "prototypes_", None)
        quants = getattr(self, "signal_quantiles_", None)
        return config, {"centroids": self.centroids_, **({"prototypes": protos} if protos is not None else {}),
                        **({"signal_quantiles": quants} if quants is not None else {}), **det_arr}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> EscalationPolicy:
        if config.get("type") == "Policy":  # format 1 (manyfold 0.1): thresholds and fusion weight in one dict
            pol = dict(config["policy"])
            est = cls()
            est.fusion_weight_ = float(pol.pop("fusion_weight"))
            est.thresholds_ = {k: float(pol[k]) for k in _THRESHOLDS}
            est.oos_method_ = "examples"
            est.report_ = {}
        else:
            est = cls(**config["params"])
            est.thresholds_ = {k: float(config["thresholds"][k]) for k in _THRESHOLDS}
            est.fusion_weight_ = float(config["fusion_weight"])
            est.oos_method_ = str(config["oos_method"])
            est.report_ = dict(config.get("report") or {})
        if "centroids" not in arrays or "detector1" not in config["detectors"]:
            raise ArtifactError("an escalation policy without centroids or a stage-1 detector")
        est.centroids_ = np.asarray(arrays["centroids"], np.float32)
        est.prototypes_ = np.asarray(arrays["prototypes"], np.float32) if "prototypes" in arrays else None
        # policies saved before signal scaling existed have no quantiles: they read raw signals, as they were fitted
        est.signal_quantiles_ = np.asarray(arrays["signal_quantiles"], np.float32) if "signal_quantiles" in arrays else None
        est.signal_known_items_ = int(config.get("signal_known_items", 0)) if est.signal_quantiles_ is not None else 0
        dets = {}
        for k, cfg in config["detectors"].items():
            dets[k] = OOSDetector.from_state(cfg, {a.split(".", 1)[1]: v for a, v in arrays.items() if a.startswith(k + ".")})
        est.detector1_ = dets["detector1"]
        est.detector2_ = dets.get("detector2")
        return est
