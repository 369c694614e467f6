"""Training an assembly and fitting its escalation policy on a validation split.

Every fit also keeps a routing summary (:func:`manyfold.packages.summarize`) of
each expert that has training items, as ``asm.summaries_`` (saved with the
assembly), so a later refit that lacks some expert's training items - an
installed package, a removal without data - routes from summaries without
needing the training data again. The router learns from the items whenever they
cover every expert (as it always has); from every expert's summary otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._exceptions import ConfigError
from ._features import label_centroids, normalise_rows
from ._assembly import take_items
from ._policy import MIN_OOS_PROBA, NEVER, EscalationPolicy, PoolSignals

__all__ = ["fit_assembly", "calibrate_assembly", "refit_router", "keep_summaries", "NEVER", "MIN_OOS_PROBA",
           "SUMMARY_MAX_ITEMS"]

#: a routing summary made at fit time clusters at most this many items per label (a seeded sample; counts stay whole)
SUMMARY_MAX_ITEMS = 1000


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
    Experts without training items here need a routing summary (see the module
    docstring). Seconds per stage: ``asm.fit_times_``.
    """
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    oos = asm.config.oos_label
    y_tr = np.asarray(train_labels).astype(str)
    y_va = np.asarray(val_labels).astype(str)
    if len(y_tr) != len(train_items) or len(y_va) != len(val_items):
        raise ConfigError("items and labels differ in length")
    X_tr = (_encode(asm.encoder, train_items, show_progress) if len(train_items)
            else np.zeros((0, asm.encoder.dim), np.float32))  # every expert routes from a summary: no training items
    X_va = _encode(asm.encoder, val_items, show_progress)
    ins_tr = y_tr != oos
    times["encode"] = time.perf_counter() - t0
    fitted_here = []
    for e in asm.experts:
        if _is_fitted(e):
            continue
        fitted_here.append(e.name)
        if label_to_expert is None:
            raise ConfigError(f"expert {e.name!r} is not fitted: pass label_to_expert to say which labels it owns")
        mine = np.array([label_to_expert.get(v) == e.name for v in y_tr.tolist()])
        if not mine.any():
            raise ConfigError(f"no training item has a label of expert {e.name!r}")
        mine_va = np.array([label_to_expert.get(v) == e.name for v in y_va.tolist()])
        if getattr(e, "consumes", "features") == "items":  # a whole model: it learns from the raw items
            e.fit(take_items(train_items, np.nonzero(mine)[0]), y_tr[mine], items_val=take_items(val_items, np.nonzero(mine_va)[0]),
                  y_val=y_va[mine_va], show_progress=show_progress)
        else:
            e.fit(X_tr[mine], y_tr[mine], X_val=X_va[mine_va], y_val=y_va[mine_va],
                  lineage={"encoder": getattr(asm.encoder, "id", None)})
    g = asm.generalist
    if g is not None and not _is_fitted(g):
        g.fit(list(train_items), y_tr, items_val=list(val_items), y_val=y_va, show_progress=show_progress)
    times["train"] = time.perf_counter() - t0 - times["encode"]  # experts and generalist not fitted yet
    t1 = time.perf_counter()
    keep_summaries(asm, X_tr[ins_tr], y_tr[ins_tr], refitted=fitted_here)
    times["summaries"] = time.perf_counter() - t1
    refit_router(asm, X_tr[ins_tr], y_tr[ins_tr], X_va, y_va, val_items=val_items,
                 oos_X=X_tr[~ins_tr], oos_items=[train_items[i] for i in np.nonzero(~ins_tr)[0]],
                 train_items=[train_items[i] for i in np.nonzero(ins_tr)[0]], times=times)
    times["total"] = time.perf_counter() - t0
    asm.fit_times_ = {k: round(v, 4) for k, v in times.items()}
    return asm


def keep_summaries(asm: Any, X: np.ndarray, y: np.ndarray, *, refitted: Sequence[str] = ()) -> dict[str, Any]:
    """Keep ``asm.summaries_`` up to date: one routing summary per expert that has in-scope training items ``X``, ``y``.

    A summary is kept as it is (a package's, or one made at an earlier fit)
    unless its expert is gone, was ``refitted`` (trained anew), or owns none of
    the summary's labels any more; an expert without one is summarised from
    its items here (at most :data:`SUMMARY_MAX_ITEMS` per label). An expert with
    a label of fewer than 3 distinct items gets none (a later refit without its
    training items then asks for them). Returns the new ``asm.summaries_``.
    """
    from .packages import summarize

    y = np.asarray(y).astype(str)
    gone = set(refitted)
    kept = {}
    for e in asm.experts:
        s = (getattr(asm, "summaries_", None) or {}).get(e.name)
        if s is not None and e.name not in gone and set(s.labels) <= set(e.labels_.tolist()):
            kept[e.name] = s
            continue
        mine = np.isin(y, e.labels_)
        if not mine.any():
            continue
        try:
            kept[e.name] = summarize(X[mine], y[mine], max_items=SUMMARY_MAX_ITEMS)
        except ConfigError:  # a label with fewer than 3 distinct items
            continue
    asm.summaries_ = kept
    return kept


def _routes_from_summaries(asm: Any, y: np.ndarray, label_to_expert: dict[str, str]) -> bool:
    """Whether the router must learn from routing summaries: the training items leave out some expert."""
    covered = {label_to_expert[v] for v in set(y.tolist()) if v in label_to_expert}
    return len(covered) < len(asm.experts)


def refit_router(asm: Any, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, val_items: Sequence[Any],
                 oos_X: np.ndarray, oos_items: Sequence[Any], train_items: Sequence[Any] | None = None,
                 times: dict[str, float] | None = None) -> None:
    """Refit only the router (and the policy) over the current experts: the experts stay as they are.

    ``X``, ``y`` are the in-scope training items (``train_items`` their raw
    items, needed when out-of-scope detection learns from held-out labels and
    the generalist is simulated too). The router learns from them when they
    cover every expert, else from every expert's routing summary. ``times``
    (if given) gets the seconds of the ``router`` and ``calibrate`` stages.
    """
    t0 = time.perf_counter()
    l2e = {lab: e.name for e in asm.experts for lab in e.labels_.tolist()}
    keep = np.array([v in l2e for v in y.tolist()], dtype=bool)
    keep_va = np.array([v in l2e for v in y_val.tolist()], dtype=bool)
    if _routes_from_summaries(asm, y[keep], l2e):
        Xr, yr, wr = _summary_training_set(asm, X[keep], y[keep])
        asm.router.fit(Xr, yr, l2e, X_val=X_val[keep_va], y_val=y_val[keep_va], sample_weight=wr)
        asm._layout()
        index = {lab: i for i, lab in enumerate(asm.labels_.tolist())}
        c = np.zeros((len(asm.labels_), Xr.shape[1]), np.float32)  # each label's weighted mean of unit prototypes
        np.add.at(c, np.array([index[v] for v in yr.tolist()]), normalise_rows(Xr) * wr[:, None])
        centroids = normalise_rows(c).astype(np.float32)
        X, y, keep, train_items = Xr, yr, np.ones(len(yr), bool), None  # unknowns are simulated on prototypes
    else:
        asm.router.fit(X[keep], y[keep], l2e, X_val=X_val[keep_va], y_val=y_val[keep_va])
        asm._layout()
        index = {lab: i for i, lab in enumerate(asm.labels_.tolist())}
        centroids = label_centroids(X[keep], np.array([index[v] for v in y[keep].tolist()]), len(asm.labels_))
    t1 = time.perf_counter()
    # the calibration pool: in-scope validation items of known labels + every out-of-scope item
    oos = asm.config.oos_label
    is_oos_va = y_val == oos
    pool_X = np.concatenate([X_val[keep_va], oos_X, X_val[is_oos_va]])
    pool_items = [val_items[i] for i in np.nonzero(keep_va)[0]] + list(oos_items) + [val_items[i] for i in np.nonzero(is_oos_va)[0]]
    pool_y = np.concatenate([y_val[keep_va], np.full(len(oos_X) + is_oos_va.sum(), oos)])
    train = None
    if not (pool_y == oos).any() and _policy_template(asm).oos_calibration != "examples":
        tr_items = [train_items[i] for i in np.nonzero(keep)[0]] if train_items is not None else None
        train = (X[keep], y[keep], tr_items)
    calibrate_assembly(asm, pool_X, pool_items, pool_y, centroids=centroids, train=train)
    if times is not None:
        times["router"] = t1 - t0
        times["calibrate"] = time.perf_counter() - t1


def _summary_training_set(asm: Any, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The router's training set when the items leave out some expert: every expert's routing summary.

    A packaged expert brings its summary; an expert trained here has one from
    its fit (:func:`keep_summaries`), or is summarised here from its training
    items ``X``, ``y``. Summaries of experts no longer in the assembly are dropped.
    """
    from .packages import summarize

    names = {e.name for e in asm.experts}
    summaries = {k: v for k, v in (getattr(asm, "summaries_", None) or {}).items() if k in names}
    for e in asm.experts:
        if e.name in summaries:
            continue
        mine = np.isin(y, e.labels_)
        if not mine.any():
            raise ConfigError(f"expert {e.name!r} has no routing summary and no training items to make one from; "
                              "give the training data of its labels")
        summaries[e.name] = summarize(X[mine], y[mine], max_items=SUMMARY_MAX_ITEMS)
    asm.summaries_ = summaries
    parts = [s.as_training_set() for s in summaries.values()]
    return (np.concatenate([p[0] for p in parts]).astype(np.float32), np.concatenate([p[1] for p in parts]).astype(str),
            np.concatenate([p[2] for p in parts]).astype(np.float32))


def _policy_template(asm: Any) -> Any:
    return asm.policy if getattr(asm, "policy", None) is not None else EscalationPolicy.from_config(asm.config)


def calibrate_assembly(asm: Any, X: np.ndarray, items: Sequence[Any], y: np.ndarray, *, centroids: np.ndarray | None = None,
                       train: tuple[np.ndarray, np.ndarray, Sequence[Any] | None] | None = None) -> None:
    """Fit a new escalation policy on held-out data ``X`` / ``items`` / ``y`` and install it as ``asm.policy_``.

    ``y`` holds in-scope labels and (if the data has them) the out-of-scope
    label. ``centroids`` default to the current policy's (a recalibration).
    Without out-of-scope items the policy learns from held-out labels, which
    needs the in-scope training data ``train = (X_train, y_train, items or
    None)``; a recalibration reuses the unknowns simulated at the last fit.
    """
    from ._heldout import simulate_unknowns

    template = _policy_template(asm)
    policy = type(template)(**template.get_params())
    if centroids is None:
        if not hasattr(asm, "policy_"):
            raise ConfigError("calibrate_assembly needs centroids on a first fit")
        centroids = asm.policy_.centroids_
    oos = asm.config.oos_label
    y = np.asarray(y).astype(str)
    t = y == oos
    pr, _, _, proba, _ = asm._small_stage(X, asm.config.top_k, items)
    index = {lab: i for i, lab in enumerate(asm.labels_.tolist())}
    yi = np.array([index.get(v, -1) for v in y.tolist()])
    pg_in = fg = None
    if asm.generalist is not None:
        pg, fg = asm.generalist.signals(list(items))
        pg_in = asm._generalist_inscope(pg)
    sim = None
    if not t.any() and policy.oos_calibration != "examples":
        if train is not None:
            asm._simulated = simulate_unknowns(asm, *train, X_val=X[~t], y_val=y[~t], val_items=[items[i] for i in np.nonzero(~t)[0]])
        sim = getattr(asm, "_simulated", None)
        if sim is None:
            raise ConfigError("the data has no out-of-scope items, and out-of-scope detection from held-out labels needs "
                              "at least 3 labels and the training data")
    asm.policy_ = policy.fit(centroids, PoolSignals(proba=proba, X=X, router_proba=pr, y_index=yi, is_oos=t, pg_in=pg_in, fg=fg), sim)
