"""The assembly: encoder + router + experts + generalist + escalation policy.

Composition by injection: the assembly receives its parts as objects and only
wires them together. ``predict`` runs, per batch:

1. encode (once, shared by router and experts);
2. route: the router's ``p(expert | x)``, top-k experts, renormalised weights;
3. experts: each selected expert scores the rows routed to it; the assembly's
   ``p(label | x) = sum_k w_k * p_k(label | x)`` (soft mixture of experts);
4. stage-1 out-of-scope score from confidence signals (calibrated);
5. escalation (an explicit, counted decision): low confidence or possible
   out-of-scope goes to the generalist, whose answer is fused with the
   experts' and re-scored for out-of-scope.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._config import AssemblyConfig
from ._exceptions import ConfigError, GeneralistError, NotFittedError
from ._prediction import Prediction
from ._validation import check_items
from .routers import top_k

__all__ = ["Assembly", "StageOutput", "take_items"]


def take_items(items: Sequence[Any], rows: Any) -> Any:
    """The items at ``rows``: a slice of an array batch, or a list for a list."""
    if isinstance(items, np.ndarray):
        return items[np.asarray(rows)]
    return [items[i] for i in np.asarray(rows).tolist()]


class StageOutput:
    """Array outputs of one ``predict`` pass (for evaluation and benchmarks)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def take(self, rows: np.ndarray) -> "StageOutput":
        """The outputs of ``rows`` only (arrays sliced; ``times`` shared)."""
        return StageOutput(**{k: v[rows] if isinstance(v, np.ndarray) else v for k, v in self.__dict__.items()})


class Assembly:
    """Many small experts behind a router, with a big generalist behind them.

    Parameters: ``encoder`` (an Encoder), ``router`` (a Router), ``experts`` (a
    list of experts), ``generalist`` (or None), ``config`` (AssemblyConfig),
    ``policy`` (an unfitted :class:`~manyfold.EscalationPolicy`; default: the
    one ``config`` describes). ``fit`` (see :mod:`manyfold._fit`) trains what is
    not yet trained and fits the escalation policy on a validation split.

    After ``fit``: ``policy_`` (the fitted policy), ``labels_``,
    ``label_to_expert_``, ``calibration_`` (the policy's validation report),
    ``provenance_`` (the dataset reference and expert grouping, saved with it).
    """

    def __init__(self, encoder: Any, router: Any, experts: Sequence[Any], generalist: Any = None,
                 config: AssemblyConfig = AssemblyConfig(), policy: Any = None) -> None:
        self.encoder = encoder
        self.router = router
        self.experts = list(experts)
        self.generalist = generalist
        self.config = config
        self.policy = policy
        names = [e.name for e in self.experts]
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise ConfigError(f"expert names must be unique; repeated: {dup}")
        self.counters: Counter[str] = Counter()

    # -- structure ------------------------------------------------------------
    @property
    def expert_names(self) -> list[str]:
        return [e.name for e in self.experts]

    def expert(self, name: str) -> Any:
        from ._exceptions import ExpertNotFoundError

        for e in self.experts:
            if e.name == name:
                return e
        raise ExpertNotFoundError(name, self.expert_names)

    @property
    def calibration_(self) -> dict[str, Any]:
        """The escalation policy's validation report (what it chose, and whether the budget binds)."""
        self._check_ready()
        return self.policy_.report_

    def _check_ready(self) -> None:
        if not hasattr(self, "policy_"):
            raise NotFittedError("this Assembly is not fitted yet; call fit() (or load a saved one)")

    def _layout(self) -> None:
        """Index maps from the router's experts to ours and from expert labels to assembly labels."""
        by_name = {e.name: e for e in self.experts}
        missing = sorted(set(self.router.experts_.tolist()) - set(by_name))
        if missing:
            raise ConfigError(f"the router routes to experts that are not in the assembly: {missing}")
        self.labels_ = np.array(sorted({lab for e in self.experts for lab in e.labels_.tolist()}), dtype=str)
        index = {lab: i for i, lab in enumerate(self.labels_.tolist())}
        self._route_experts = [by_name[n] for n in self.router.experts_.tolist()]
        self._expert_cols = [np.array([index[lab] for lab in e.labels_.tolist()]) for e in self._route_experts]
        self.label_to_expert_ = {lab: e.name for e in self._route_experts for lab in e.labels_.tolist()}
        if self.generalist is not None and hasattr(self.generalist, "labels_"):
            gl = {lab: i for i, lab in enumerate(self.generalist.labels_.tolist())}
            self._generalist_cols = np.array([gl.get(lab, -1) for lab in self.labels_.tolist()])

    # -- the forward pass -----------------------------------------------------------
    def _small_stage(self, X: np.ndarray, top: int, items: Sequence[Any] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
        """Router, then each chosen expert on the rows routed to it (sparse: an expert nobody chose does no work).

        A head expert reads the shared vectors ``X``; an expert that is a whole
        model (``consumes == "items"``) reads its rows of the raw ``items``.
        """
        t0 = time.perf_counter()
        pr = self.router.predict_proba(X)
        idx, w = top_k(pr, top)
        t1 = time.perf_counter()
        proba = np.zeros((len(X), len(self.labels_)), np.float32)
        for j in np.unique(idx):
            rows, slot = np.nonzero(idx == j)
            e = self._route_experts[j]
            if getattr(e, "consumes", "features") == "items":
                if items is None:
                    raise ConfigError(f"expert {e.name!r} is a whole model that reads the items themselves: pass items")
                pe = e.predict_proba(take_items(items, rows))
            else:
                pe = e.predict_proba(X[rows])
            proba[rows[:, None], self._expert_cols[j][None, :]] += w[rows, slot][:, None] * pe
        t2 = time.perf_counter()
        return pr, idx, w, proba, {"route": t1 - t0, "experts": t2 - t1}

    def _generalist_inscope(self, pg: np.ndarray) -> np.ndarray:
        """The generalist's probabilities over the assembly's labels (renormalised)."""
        cols = self._generalist_cols
        out = np.full((len(pg), len(self.labels_)), 1e-9, np.float32)
        ok = cols >= 0
        out[:, ok] = np.maximum(pg[:, cols[ok]], 1e-9)  # a one-hot "out_of_scope" answer leaves no mass in scope
        return out / out.sum(1, keepdims=True)

    def forward(self, X: np.ndarray, items: Sequence[Any] | None = None, *, escalate: bool = True,
                top: int | None = None, generalist_signals: Any = None) -> StageOutput:
        """Array-level pass on encoded items ``X``. ``items`` are needed only to escalate.

        The same as :meth:`small_pass` followed, for the rows it escalates, by the
        generalist's signals and :meth:`resolve_escalated` (or :meth:`mark_degraded`
        when the generalist fails).
        """
        out = self.small_pass(X, top=top, escalate=escalate, items=items)
        rows = np.nonzero(out.escalated)[0]
        if len(rows):
            t0 = time.perf_counter()
            try:
                if generalist_signals is not None:
                    pg, fg = generalist_signals(rows)
                else:
                    if items is None:
                        raise ConfigError("forward() needs the items to escalate to the generalist")
                    pg, fg = self.generalist.signals([items[i] for i in rows])
            except GeneralistError as exc:  # explicit, counted fallback: keep the experts' answer
                self.mark_degraded(out, rows, exc)
            else:
                self.resolve_escalated(out, rows, pg, fg)
            out.times["generalist"] = time.perf_counter() - t0
        return out

    def small_pass(self, X: np.ndarray, *, top: int | None = None, escalate: bool = True,
                   items: Sequence[Any] | None = None) -> StageOutput:
        """Router, experts and stage-1 out-of-scope score; marks (and counts) the rows to escalate.

        Escalated rows keep the experts' answer until :meth:`resolve_escalated`
        (or :meth:`mark_degraded`) is called for them; a server can answer the
        other rows at once and send these to the generalist on their own.
        """
        self._check_ready()
        pr, idx, w, proba, times = self._small_stage(X, top or self.config.top_k, items)
        d = self.policy_.decide(proba, X, pr, escalate=escalate and self.generalist is not None)
        n = len(X)
        times["generalist"] = 0.0
        self.counters["items"] += n
        self.counters["escalated"] += int(d["escalated"].sum())
        return StageOutput(router_proba=pr, expert_idx=idx, expert_w=w, proba=proba, final=proba.copy(),
                           oos_score=d["oos_score"].copy(), oos_small=d["oos_score"], is_oos=d["is_oos"],
                           escalated=d["escalated"], reason=d["reason"], degraded=np.zeros(n, bool), times=times,
                           features=d["features"])

    def resolve_escalated(self, out: StageOutput, rows: np.ndarray, pg: np.ndarray, fg: np.ndarray) -> None:
        """Fuse the generalist's answer (``pg``, ``fg`` from ``generalist.signals``) into escalated ``rows`` of ``out``."""
        out.final[rows], out.oos_score[rows], out.is_oos[rows] = self.policy_.resolve(
            out.proba[rows], self._generalist_inscope(pg), out.features[rows], fg, out.oos_small[rows])

    def mark_degraded(self, out: StageOutput, rows: np.ndarray, exc: BaseException) -> None:
        """The generalist failed for ``rows``: they keep the experts' answer, flagged degraded (counted)."""
        self.counters["generalist_failures"] += 1
        out.degraded[rows] = True
        out.reason[rows] = f"generalist_failed: {exc}"
        out.is_oos[rows] = self.policy_.fallback_is_oos(out.oos_small[rows])

    def predict(self, items: Sequence[Any], *, escalate: bool = True) -> list[Prediction]:
        """One :class:`Prediction` per item."""
        self._check_ready()
        items = check_items(items, encoder=self.encoder, max_chars=self.config.max_chars)
        t0 = time.perf_counter()
        X = self.encoder.encode(items)
        t_enc = time.perf_counter() - t0
        out = self.forward(X, items, escalate=escalate)
        total = time.perf_counter() - t0
        n = len(items)
        per = {k: round(1e3 * v / n, 4) for k, v in {"encode": t_enc, **out.times, "total": total}.items()}
        return self.to_predictions(out, per)

    def to_predictions(self, out: StageOutput, timings_ms: dict[str, float]) -> list[Prediction]:
        """One :class:`Prediction` per row of a :meth:`forward` output (``timings_ms`` shared by all)."""
        names = self.router.experts_
        preds = []
        for i in range(len(out.final)):
            j = int(out.final[i].argmax())
            label = self.config.oos_label if out.is_oos[i] else str(self.labels_[j])
            conf = float(out.oos_score[i]) if out.is_oos[i] else float(out.final[i, j])
            preds.append(Prediction(
                label=label, confidence=round(conf, 6),
                experts=tuple(str(names[k]) for k in out.expert_idx[i]),
                expert_weights=tuple(round(float(v), 6) for v in out.expert_w[i]),
                escalated=bool(out.escalated[i]), reason=out.reason[i], oos_score=round(float(out.oos_score[i]), 6),
                router_scores={str(names[k]): round(float(out.router_proba[i, k]), 6) for k in out.expert_idx[i]},
                timings_ms=dict(timings_ms), degraded=bool(out.degraded[i]),
            ))
        return preds

    def predict_labels(self, X: np.ndarray, items: Sequence[Any] | None = None, *, escalate: bool = True) -> np.ndarray:
        out = self.forward(X, items, escalate=escalate)
        labels = self.labels_[out.final.argmax(1)].astype(object)
        labels[out.is_oos] = self.config.oos_label
        return labels.astype(str)

    def fit(self, train_items: Sequence[Any], train_labels: Any, val_items: Sequence[Any], val_labels: Any, *,
            label_to_expert: dict[str, str] | None = None, show_progress: bool = False,
            provenance: dict[str, Any] | None = None) -> "Assembly":
        """Fit what is not fitted yet (experts, generalist), then the router and the escalation policy; returns self.

        ``provenance`` (the dataset reference, the expert grouping) is kept as
        ``provenance_`` and saved with the assembly.
        """
        from ._fit import fit_assembly

        fit_assembly(self, train_items, train_labels, val_items, val_labels,
                     label_to_expert=label_to_expert, show_progress=show_progress)
        if provenance is not None:
            self.provenance_ = dict(provenance)
        return self

    def evaluate(self, items: Sequence[Any], labels: Any, *, escalate: bool = True, unknown: str = "oos") -> dict[str, Any]:
        """Accuracy, out-of-scope, escalation and routing figures on labelled items (see :func:`manyfold.evaluate`)."""
        from ._build import evaluate

        return evaluate(self, items, labels, escalate=escalate, unknown=unknown)

    def _change_experts(self, experts: list[Any], new: dict[str, str], data: tuple[Any, Any, Any, Any],
                        show_progress: bool, summaries: dict[str, Any] | None = None) -> "Assembly":
        """Refit over ``experts`` (``summaries``: the routing summaries to start from); on failure nothing changes."""
        from ._fit import fit_assembly

        old, had = self.experts, getattr(self, "summaries_", None)
        self.experts = experts
        if summaries is not None:
            self.summaries_ = summaries
        try:
            fit_assembly(self, *data, label_to_expert=new, show_progress=show_progress)
        except BaseException:
            self.experts = old
            if had is None:
                self.__dict__.pop("summaries_", None)
            else:
                self.summaries_ = had
            raise
        return self

    def add_expert(self, expert: Any, train_items: Sequence[Any], train_labels: Any, val_items: Sequence[Any],
                   val_labels: Any, *, labels: Sequence[str] | None = None, show_progress: bool = False) -> "Assembly":
        """Add one expert; only the router and the policy are refitted, the other experts stay as they are.

        ``expert`` is fitted here unless it already is; ``labels`` (default: its
        fitted ``labels_``) are the labels it owns. The data should cover every
        expert's labels (the router learns to tell them apart from the items; an
        expert left out is routed from its routing summary, and then every
        expert is) and may hold out-of-scope items.
        """
        from .experts import check_name

        check_name(expert.name)
        if expert.name in self.expert_names:
            raise ConfigError(f"an expert named {expert.name!r} is already in the assembly; use replace_expert")
        owned = list(labels) if labels is not None else list(getattr(expert, "labels_", []))
        if not owned:
            raise ConfigError(f"say which labels the new expert {expert.name!r} owns (labels=...)")
        taken = sorted(set(owned) & set(getattr(self, "label_to_expert_", {})))
        if taken:
            raise ConfigError(f"labels {taken[:5]} already belong to other experts")
        return self._change_experts([*self.experts, expert], {lab: expert.name for lab in owned},
                                    (train_items, train_labels, val_items, val_labels), show_progress)

    def install(self, package: Any, val_items: Sequence[Any], val_labels: Any, *, train_items: Sequence[Any] = (),
                train_labels: Any = (), show_progress: bool = False) -> "Assembly":
        """Plug in an expert that came as a verified package (:func:`manyfold.packages.read_package`).

        Nothing of its training data is needed: the router is refitted from
        every expert's routing summary (the experts trained here were
        summarised when they were fitted; ``train_items`` / ``train_labels`` are
        read only for an expert without a summary, e.g. of an assembly saved by
        an older manyfold, and for their out-of-scope items), the policy on the
        validation items. The other experts stay as they are. The same package
        twice, an expert name or a label already in the assembly, another
        routing encoder or modality: a clear error, and the assembly is unchanged.
        Seconds per stage: ``fit_times_``.
        """
        from .packages import check_collisions

        if package.encoder_id != getattr(self.encoder, "id", None):
            raise ConfigError(f"package {package.name!r} was trained against encoder {package.encoder_id!r}; "
                              f"this assembly routes with {getattr(self.encoder, 'id', None)!r}")
        mine = getattr(self.encoder, "modality", None)
        if mine is not None and package.modality != mine:
            raise ConfigError(f"package {package.name!r} holds a {package.modality} expert; this assembly takes {mine}")
        if package.name in self.expert_names:
            same = package.expert is self.expert(package.name) or (
                getattr(self.expert(package.name), "labels_", None) is not None
                and list(self.expert(package.name).labels_) == list(package.labels))
            raise ConfigError(f"an expert named {package.name!r} is already in this assembly"
                              f"{' (this package is installed already)' if same else ''}; nothing changed "
                              "(remove it first to replace it)")
        check_collisions(package, labels=self.labels_.tolist(), expert_names=self.expert_names)
        summaries = dict(getattr(self, "summaries_", None) or {})
        # training items matter only for experts that have no summary yet (and as out-of-scope examples)
        need = [lab for e in self.experts if e.name not in summaries for lab in e.labels_.tolist()]
        y_tr = np.asarray(train_labels).astype(str)
        if len(y_tr) != len(train_items):
            raise ConfigError(f"got {len(train_items)} training items but {len(y_tr)} labels")
        rows = np.nonzero(np.isin(y_tr, need + [self.config.oos_label]))[0] if len(y_tr) else np.zeros(0, int)
        summaries[package.name] = package.summary
        self._change_experts([*self.experts, package.expert], {},
                             (take_items(train_items, rows) if len(rows) else [], y_tr[rows], val_items, val_labels),
                             show_progress, summaries)
        prov = dict(getattr(self, "provenance_", None) or {})
        prov["packages"] = {**(prov.get("packages") or {}), package.name: {
            "file": str(package.path) if package.path else None, "checksums": dict(package.checksums),
            "signature": package.signature, "signed_by": package.signed_by,
            "creator": package.meta.get("creator"), "licence": package.meta.get("licence")}}
        self.provenance_ = prov
        return self

    def replace_expert(self, name: str, expert: Any, train_items: Sequence[Any], train_labels: Any,
                       val_items: Sequence[Any], val_labels: Any, *, show_progress: bool = False) -> "Assembly":
        """Swap expert ``name`` for ``expert`` (fitted here on the old one's labels if unfitted).

        Its routing summary is made anew from the training items (the old one's is dropped).
        """
        old = self.expert(name)
        experts = [expert if e.name == name else e for e in self.experts]
        if expert.name != name and expert.name in self.expert_names:
            raise ConfigError(f"an expert named {expert.name!r} is already in the assembly")
        summaries = {k: v for k, v in (getattr(self, "summaries_", None) or {}).items() if k != name}
        return self._change_experts(experts, {lab: expert.name for lab in old.labels_.tolist()},
                                    (train_items, train_labels, val_items, val_labels), show_progress, summaries)

    def remove_expert(self, name: str, train_items: Sequence[Any], train_labels: Any, val_items: Sequence[Any],
                      val_labels: Any, *, show_progress: bool = False) -> "Assembly":
        """Remove expert ``name``; the router is refitted over the experts that remain."""
        self.expert(name)
        if len(self.experts) == 1:
            raise ConfigError(f"cannot remove {name!r}: it is the assembly's only expert")
        return self._change_experts([e for e in self.experts if e.name != name], {},
                                    (train_items, train_labels, val_items, val_labels), show_progress)

    def __repr__(self) -> str:
        g = type(self.generalist).__name__ if self.generalist is not None else None
        return (f"Assembly(encoder={getattr(self.encoder, 'id', self.encoder)!r}, router={type(self.router).__name__}, "
                f"experts={len(self.experts)}, generalist={g})")
