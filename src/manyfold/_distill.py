"""The flywheel: distillation between the big generalist and the small experts.

Big -> small (setfit-style: the teacher's ``predict_proba`` feeds the
student's ``fit``):

* :func:`pseudo_label` - a teacher labels an unlabelled pool; only confident,
  in-scope answers are kept.
* :class:`Flywheel` - keeps the labelled data the experts were trained on and
  the pseudo-labels gathered so far; each :meth:`Flywheel.step` on a new pool
  refits every expert on its original data plus the pseudo-labelled items of
  its labels, then refits the router and the escalation policy (the
  ``replace_expert`` contract, done once for all experts). Lineage (teacher,
  round, counts) is stored on every new expert's card.
* :func:`distill` - one call: ``rounds`` rounds over a pool split in parts.
* :func:`expert_from_teacher` - an expert for a domain the experts' side has
  no labels for, trained on the teacher's labels only;
  :func:`add_expert_from_teacher` puts such an expert into an assembly (the
  router learns the new labels from the same pseudo-labels).

Small -> big:

* :func:`fold` - multi-teacher distillation of the whole assembly (router +
  experts + escalation) into one flat head on the small encoder.

Escalation budget: the calibrated policy spends a fixed escalation budget
(``AssemblyConfig.max_escalation_rate``) on validation data, so better experts
alone do not escalate less. With ``tune_budget=True`` the flywheel spends its
gains on escalating less: after each round it picks the smallest budget whose
validation accuracy is still at least the accuracy the assembly had before
the first round (:func:`tune_escalation_budget`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._exceptions import ConfigError
from ._fit import calibrate_assembly, fit_assembly
from .experts import HeadExpert

__all__ = ["pseudo_label", "Flywheel", "RoundReport", "DistillReport", "distill", "expert_from_teacher",
           "add_expert_from_teacher", "fold",
           "tune_escalation_budget", "teacher_id"]

#: escalation budgets tried by :func:`tune_escalation_budget` (as shares of in-scope items)
BUDGETS = tuple(round(b, 3) for b in np.arange(0.0, 0.2001, 0.01))


def teacher_id(teacher: Any) -> str:
    """A short description of a teacher for lineage: its class and encoder spec."""
    enc = getattr(teacher, "encoder_spec_", None) or getattr(getattr(teacher, "encoder_", None), "spec", None)
    return f"{type(teacher).__name__}({enc})" if enc else type(teacher).__name__


def pseudo_label(teacher: Any, items: Sequence[Any], *, min_confidence: float = 0.9, allowed: Any = None,
                 oos_label: str = "out_of_scope") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label ``items`` with ``teacher`` and keep the confident, in-scope answers.

    ``teacher`` has ``predict_proba(items)`` over its ``labels_``. An answer is
    kept when the teacher's top probability is at least ``min_confidence``,
    its label is not ``oos_label`` and (when ``allowed`` is given) is one of
    ``allowed``. Returns ``(indices into items, labels, confidences)``.
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
    if not hasattr(teacher, "labels_"):
        raise ConfigError("the teacher is not fitted (it has no labels_)")
    if len(items) == 0:
        return np.zeros(0, np.int64), np.zeros(0, str), np.zeros(0, np.float32)
    proba = np.asarray(teacher.predict_proba(list(items)))
    top = proba.argmax(1)
    conf = proba[np.arange(len(proba)), top]
    labels = np.asarray(teacher.labels_).astype(str)[top]
    keep = (conf >= min_confidence) & (labels != oos_label)
    if allowed is not None:
        keep &= np.isin(labels, np.asarray(list(allowed), dtype=str))
    idx = np.nonzero(keep)[0]
    return idx, labels[idx], conf[idx].astype(np.float32)


def _clone(expert: HeadExpert) -> HeadExpert:
    return type(expert)(**expert.get_params())


@dataclass
class RoundReport:
    """What one distillation round did."""

    round: int
    teacher: str
    min_confidence: float
    n_pool: int
    n_confident: int
    n_new: int
    experts: dict[str, dict[str, int]]
    escalation_budget: float
    calibration: dict[str, float]
    seconds: float
    accepted: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    accepted_labels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, str))

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly part (no arrays)."""
        d = dataclasses.asdict(self)
        d.pop("accepted")
        d.pop("accepted_labels")
        return d


@dataclass
class DistillReport:
    """The rounds of one :func:`distill` call and the pseudo-labels gathered in all."""

    rounds: list[RoundReport]
    pseudo_items: list[Any] = field(repr=False)
    pseudo_labels: np.ndarray = field(repr=False)


class Flywheel:
    """Repeated big -> small distillation on pools that arrive one after another.

    ``asm`` is a fitted assembly (changed in place). ``train_*`` / ``val_*`` are
    the labelled data its experts and policy were fitted on (out-of-scope
    items included: they keep teaching the policy what "none" looks like).
    ``teacher`` defaults to the assembly's generalist. ``pseudo_items`` /
    ``pseudo_labels`` carry pseudo-labels of earlier rounds (e.g. read back
    from a registry). ``tune_budget``: see the module docstring; the accuracy
    to hold is the assembly's validation accuracy now, less ``tolerance``.
    """

    def __init__(self, asm: Any, train_items: Sequence[Any], train_labels: Any, val_items: Sequence[Any],
                 val_labels: Any, *, teacher: Any = None, min_confidence: float = 0.9, tune_budget: bool = False,
                 tolerance: float = 0.0, pseudo_items: Sequence[Any] = (), pseudo_labels: Any = ()) -> None:
        asm._check_ready()
        self.asm = asm
        self.teacher = teacher if teacher is not None else asm.generalist
        if self.teacher is None:
            raise ConfigError("the assembly has no generalist: pass a teacher")
        self.train_items, self.train_labels = list(train_items), np.asarray(train_labels).astype(str)
        self.val_items, self.val_labels = list(val_items), np.asarray(val_labels).astype(str)
        if len(self.train_items) != len(self.train_labels) or len(self.val_items) != len(self.val_labels):
            raise ConfigError("items and labels differ in length")
        self.min_confidence = min_confidence
        self.pseudo_items = list(pseudo_items)
        self.pseudo_labels = np.asarray(pseudo_labels).astype(str).reshape(-1)
        if len(self.pseudo_items) != len(self.pseudo_labels):
            raise ConfigError("pseudo_items and pseudo_labels differ in length")
        self.base_config = asm.config
        self.tune_budget = tune_budget
        self.target_accuracy = float(asm.calibration_.get("val_in_scope_accuracy", 0.0)) - tolerance
        self.round = max([int(e.card_.lineage.get("distill_round", 0)) for e in asm.experts if hasattr(e, "card_")] + [0])

    def step(self, pool_items: Sequence[Any]) -> RoundReport:
        """One round: label ``pool_items``, refit every expert, refit router and policy."""
        t0 = time.perf_counter()
        asm, oos = self.asm, self.asm.config.oos_label
        pool = list(pool_items)
        idx, labels, _ = pseudo_label(self.teacher, pool, min_confidence=self.min_confidence, allowed=asm.labels_,
                                      oos_label=oos)
        seen = set(self.train_items) | set(self.pseudo_items)
        fresh = [k for k, i in enumerate(idx.tolist()) if pool[i] not in seen and not seen.add(pool[i])]
        self.pseudo_items += [pool[i] for i in idx[fresh].tolist()]
        self.pseudo_labels = np.concatenate([self.pseudo_labels, labels[fresh]])
        self.round += 1
        tid = teacher_id(self.teacher)
        items = self.train_items + self.pseudo_items
        y = np.concatenate([self.train_labels, self.pseudo_labels])
        is_pseudo = np.r_[np.zeros(len(self.train_items), bool), np.ones(len(self.pseudo_items), bool)]
        X = np.asarray(asm.encoder.encode(items), np.float32)
        X_va = np.asarray(asm.encoder.encode(self.val_items), np.float32)
        experts, counts = [], {}
        for e in asm.experts:
            mine = np.isin(y, e.labels_)
            mine_va = np.isin(self.val_labels, e.labels_)
            n_pseudo = int((mine & is_pseudo).sum())
            counts[e.name] = {"n_original": int((mine & ~is_pseudo).sum()), "n_pseudo": n_pseudo}
            new = _clone(e).fit(X[mine], y[mine], X_val=X_va[mine_va], y_val=self.val_labels[mine_va],
                                labels=e.labels_.tolist(),
                                lineage={"encoder": getattr(asm.encoder, "id", None), "teacher": tid,
                                         "distill_round": self.round, "n_pseudo": n_pseudo,
                                         "n_original": counts[e.name]["n_original"],
                                         "min_confidence": self.min_confidence})
            experts.append(new)
        old, old_config, old_summaries = asm.experts, asm.config, getattr(asm, "summaries_", None)
        asm.experts, asm.config = experts, self.base_config
        asm.summaries_ = {}  # every expert learnt from new items: its routing summary is made anew
        try:
            fit_assembly(asm, items, y, self.val_items, self.val_labels)
            budget = asm.calibration_.get("escalation_budget", asm.config.max_escalation_rate)
            if self.tune_budget:
                budget = tune_escalation_budget(asm, items, y, self.val_items, self.val_labels,
                                                target_accuracy=self.target_accuracy,
                                                max_budget=self.base_config.max_escalation_rate)
        except BaseException:
            asm.experts, asm.config = old, old_config
            if old_summaries is None:
                asm.__dict__.pop("summaries_", None)
            else:
                asm.summaries_ = old_summaries
            raise
        return RoundReport(round=self.round, teacher=tid, min_confidence=self.min_confidence, n_pool=len(pool),
                           n_confident=len(idx), n_new=len(fresh), experts=counts, escalation_budget=float(budget),
                           calibration=dict(asm.calibration_), seconds=round(time.perf_counter() - t0, 3),
                           accepted=idx, accepted_labels=labels)


def distill(asm: Any, pool_items: Sequence[Any], *, train_items: Sequence[Any], train_labels: Any,
            val_items: Sequence[Any], val_labels: Any, min_confidence: float = 0.9, rounds: int = 1,
            teacher: Any = None, tune_budget: bool = False, tolerance: float = 0.0) -> DistillReport:
    """Distil the teacher (default: the generalist) into ``asm``'s experts; ``asm`` is changed in place.

    The pool is cut into ``rounds`` consecutive parts, one per round (as if
    pools arrived one after another). See :class:`Flywheel` for the rest.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    pool = list(pool_items)
    if len(pool) < rounds:
        raise ConfigError(f"a pool of {len(pool)} items cannot feed {rounds} rounds")
    fw = Flywheel(asm, train_items, train_labels, val_items, val_labels, teacher=teacher,
                  min_confidence=min_confidence, tune_budget=tune_budget, tolerance=tolerance)
    reports = [fw.step([pool[i] for i in part.tolist()]) for part in np.array_split(np.arange(len(pool)), rounds)]
    return DistillReport(reports, fw.pseudo_items, fw.pseudo_labels)


def _calibration_pool(asm: Any, train_items: Sequence[Any], train_labels: np.ndarray, val_items: Sequence[Any],
                      val_labels: np.ndarray) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """The calibration data ``refit_router`` uses: known in-scope val items + every out-of-scope item."""
    oos = asm.config.oos_label
    known, t_va, t_tr = np.isin(val_labels, asm.labels_), val_labels == oos, train_labels == oos
    rows = [*np.nonzero(known)[0].tolist(), *np.nonzero(t_va)[0].tolist()]
    items = [val_items[i] for i in rows] + [train_items[i] for i in np.nonzero(t_tr)[0].tolist()]
    y = np.concatenate([val_labels[rows], train_labels[t_tr]])
    return np.asarray(asm.encoder.encode(items), np.float32), items, y


def tune_escalation_budget(asm: Any, train_items: Sequence[Any], train_labels: Any, val_items: Sequence[Any],
                           val_labels: Any, *, target_accuracy: float, max_budget: float | None = None,
                           budgets: Sequence[float] = BUDGETS) -> float:
    """Recalibrate ``asm`` with the smallest escalation budget that holds ``target_accuracy`` on validation.

    Budgets are tried from small to large (up to ``max_budget``, default the
    assembly's current one); the first whose calibrated validation in-scope
    accuracy reaches ``target_accuracy`` is kept (the largest tried, if none
    does). ``asm.config`` is replaced with one carrying the chosen budget.
    Returns the budget.
    """
    top = asm.config.max_escalation_rate if max_budget is None else max_budget
    grid = sorted({float(b) for b in budgets if b <= top + 1e-12} | {float(top)})
    X, items, y = _calibration_pool(asm, list(train_items), np.asarray(train_labels).astype(str), list(val_items),
                                    np.asarray(val_labels).astype(str))
    for b in grid:
        asm.config = dataclasses.replace(asm.config, max_escalation_rate=b, escalation_objective="budget")
        calibrate_assembly(asm, X, items, y)
        if asm.calibration_.get("val_in_scope_accuracy", asm.calibration_["val_in_scope_accuracy_small"]) >= target_accuracy:
            break
    return asm.config.max_escalation_rate


def expert_from_teacher(name: str, encoder: Any, teacher: Any, pool_items: Sequence[Any], labels: Sequence[str], *,
                        min_confidence: float = 0.9, kind: str = "linear", domain: str | None = None,
                        oos_label: str = "out_of_scope") -> tuple[HeadExpert, dict[str, Any]]:
    """An expert over ``labels`` trained on nothing but the teacher's confident labels of ``pool_items``.

    ``encoder`` gives the expert's features (the assembly's small encoder).
    Returns ``(fitted expert, {"n_pool", "n_pseudo", "per_label"})``; a label
    the teacher never names confidently is still in the expert's label set
    (it just gets no training data). Fewer than one item is a ConfigError.
    """
    pool = list(pool_items)
    known = set(np.asarray(getattr(teacher, "labels_", [])).astype(str).tolist())
    if known and not known & set(labels):
        raise ConfigError(f"the teacher does not know any of the labels {sorted(labels)[:5]}: it cannot teach them "
                          "(train the generalist on every domain, e.g. manyfold assemble --generalist-domains all)")
    idx, y, _ = pseudo_label(teacher, pool, min_confidence=min_confidence, allowed=labels, oos_label=oos_label)
    if len(idx) == 0:
        raise ConfigError(f"the teacher labelled no pool item with one of {list(labels)[:5]} at confidence "
                          f">= {min_confidence}")
    X = np.asarray(encoder.encode([pool[i] for i in idx.tolist()]), np.float32)
    expert = HeadExpert(name, kind=kind, domain=domain, description=f"{domain or name}: learned from {teacher_id(teacher)}")
    expert.fit(X, y, labels=sorted(labels), lineage={"encoder": getattr(encoder, "id", None), "teacher": teacher_id(teacher),
                                                     "n_pseudo": int(len(idx)), "min_confidence": min_confidence,
                                                     "source": "teacher_only"})
    per = {lab: int((y == lab).sum()) for lab in sorted(labels)}
    return expert, {"n_pool": len(pool), "n_pseudo": int(len(idx)), "per_label": per,
                    "pseudo_items": [pool[i] for i in idx.tolist()], "pseudo_labels": y}


def add_expert_from_teacher(asm: Any, name: str, labels: Sequence[str], pool_items: Sequence[Any],
                            train_items: Sequence[Any], train_labels: Any, val_items: Sequence[Any], val_labels: Any, *,
                            min_confidence: float = 0.9, kind: str = "linear", domain: str | None = None,
                            teacher: Any = None, show_progress: bool = False) -> dict[str, Any]:
    """Add an expert over ``labels`` that learned only from a teacher's labels of ``pool_items``.

    ``teacher`` (default: the assembly's generalist) has ``predict_proba``
    over its ``labels_``.

    The experts' side has no labelled data for ``labels``: any labelled train
    or validation item of those labels is left out, and the router learns
    the new labels from the same pseudo-labelled pool items as the expert.
    The other experts stay as they are (:meth:`Assembly.add_expert`). Returns
    the information of :func:`expert_from_teacher` (without the item lists).
    """
    teacher = teacher if teacher is not None else asm.generalist
    if teacher is None:
        raise ConfigError("this assembly has no generalist to learn from: pass teacher=")
    expert, info = expert_from_teacher(name, asm.encoder, teacher, pool_items, labels,
                                       min_confidence=min_confidence, kind=kind, domain=domain,
                                       oos_label=asm.config.oos_label)
    ytr, yva = np.asarray(train_labels).astype(str), np.asarray(val_labels).astype(str)
    keep_tr, keep_va = ~np.isin(ytr, list(labels)), ~np.isin(yva, list(labels))
    items = [train_items[i] for i in np.flatnonzero(keep_tr)] + info.pop("pseudo_items")
    y = np.concatenate([ytr[keep_tr], info.pop("pseudo_labels")])
    asm.add_expert(expert, items, y, [val_items[i] for i in np.flatnonzero(keep_va)], yva[keep_va],
                   labels=list(labels), show_progress=show_progress)
    return info


def fold(asm: Any, items: Sequence[Any], *, name: str = "folded", kind: str = "linear", escalate: bool = True,
         val_items: Sequence[Any] | None = None, val_labels: Any = None, l2: float = 1e-5,
         max_iter: int = 300) -> HeadExpert:
    """Fold the assembly into one flat head on its small encoder (multi-teacher distillation).

    The targets are the assembly's final probabilities on ``items`` (router-
    weighted experts, fused with the generalist where it escalates when
    ``escalate``); the student is a :class:`HeadExpert` over all of
    ``asm.labels_`` trained on them as soft targets. Labelled validation
    data, when given, calibrates its temperature.
    """
    asm._check_ready()
    items = list(items)
    X = np.asarray(asm.encoder.encode(items), np.float32)
    out = asm.forward(X, items, escalate=escalate)
    P = out.final.astype(np.float32)
    kw: dict[str, Any] = {}
    if val_items is not None and val_labels is not None:
        kw = {"X_val": np.asarray(asm.encoder.encode(list(val_items)), np.float32), "y_val": np.asarray(val_labels)}
    head = HeadExpert(name, kind=kind, l2=l2, max_iter=max_iter,
                      description=f"{len(asm.experts)} experts + generalist folded into one head")
    return head.fit(X, asm.labels_[P.argmax(1)], soft_targets=P, labels=asm.labels_.tolist(),
                    lineage={"teacher": "assembly", "experts": asm.expert_names, "escalate": escalate,
                             "escalated_share": float(out.escalated.mean()),
                             "encoder": getattr(asm.encoder, "id", None)}, **kw)
