"""Unknowns without out-of-scope data: labels held out in folds stand in for what the model never saw.

For each fold of labels, a proxy of the small stage (one flat linear head over
the other labels, temperature-calibrated, on the small encoder's vectors; its
label probabilities summed per expert stand in for the router) and, when the
generalist can be refitted on vectors, a proxy generalist are fitted without
the fold. The fold's items (train and validation) are then unknowns to the
proxies; validation items of the other labels are the knowns. Their stage-1
(and stage-2) features train the out-of-scope detectors; see
:mod:`manyfold._policy`. Each row keeps its fold, so that the policy can read a
proxy's signals against that proxy's own known items (``signal_scaling``).

Without out-of-scope examples, stage 1 gets one more signal: the cosine to the
nearest label prototype (up to :data:`PROTOTYPES_PER_LABEL` spherical k-means
centres per label, the same clustering as a package's routing summary). In the
folds it compares with the kept labels' prototypes only, as at serving time it
compares with the known labels'.

What it costs: one linear head per fold (and one generalist head per fold).
What it assumes: an unknown at serving time looks, to the assembly, like an
unseen label looks to a model of the same kind - the classic leave-classes-out
protocol of open-set recognition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._features import label_centroids
from ._heads import HeadSpec, fit_temperature, head_logits, softmax, train_head
from ._policy import SimulatedUnknowns, stage1_features

__all__ = ["simulate_unknowns", "label_prototypes", "N_FOLDS", "PROTOTYPES_PER_LABEL"]

N_FOLDS = 5
PROTOTYPES_PER_LABEL = 10


def label_prototypes(X: np.ndarray, y: np.ndarray, labels: Sequence[str], *, per_label: int = PROTOTYPES_PER_LABEL,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prototypes, label index of each): spherical k-means centres of each label's vectors, unit rows.

    A label with fewer than 3 distinct vectors gets one prototype, the
    direction of its mean (k-means needs a few items per cluster).
    """
    from .packages._summary import MIN_ITEMS, _label_prototypes

    rng = np.random.default_rng(seed)
    y = np.asarray(y).astype(str)
    X = np.asarray(X, np.float32)
    protos, index = [], []
    for i, lab in enumerate(labels):
        V = X[y == lab]
        if len(V) == 0:
            continue
        if len(np.unique(V, axis=0)) >= MIN_ITEMS:
            P = _label_prototypes(V, per_label, rng, lab)[0]
        else:
            P = V.mean(0, keepdims=True)
        protos.append(P)
        index.append(np.full(len(P), i))
    P = np.concatenate(protos).astype(np.float32)
    P /= np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    return P, np.concatenate(index)


def _can_refit_on_vectors(g: Any) -> bool:
    return all(hasattr(g, a) for a in ("fit", "encode", "signals_features", "get_params"))


def simulate_unknowns(asm: Any, X_tr: np.ndarray, y_tr: np.ndarray, train_items: Sequence[Any] | None, *,
                      X_val: np.ndarray, y_val: np.ndarray, val_items: Sequence[Any], n_folds: int = N_FOLDS,
                      seed: int = 0) -> SimulatedUnknowns | None:
    """Held-out-label features for the assembly's in-scope data (None with fewer than 3 labels)."""
    labels = asm.labels_
    if len(labels) < 3:
        return None
    y_tr, y_val = np.asarray(y_tr).astype(str), np.asarray(y_val).astype(str)
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(labels), min(n_folds, len(labels)))
    expert_of = asm.label_to_expert_
    g = asm.generalist
    gen_sim = g is not None and train_items is not None and _can_refit_on_vectors(g)
    if gen_sim:
        G_tr = np.asarray(g.encode(list(train_items)), np.float32)
        G_va = np.asarray(g.encode(list(val_items)), np.float32)
    protos, proto_label = label_prototypes(X_tr, y_tr, labels.tolist(), seed=seed)
    proto_label = labels[proto_label]
    F1s, unk, fgs, fold_of = [], [], [], []
    for f, fold in enumerate(folds):
        held = np.isin(y_tr, fold)
        held_va = np.isin(y_val, fold)
        kept = np.array(sorted(set(labels.tolist()) - set(fold.tolist())), dtype=str)
        index = {lab: i for i, lab in enumerate(kept.tolist())}
        yi = np.array([index[v] for v in y_tr[~held].tolist()], dtype=np.int64)
        params = train_head(X_tr[~held], yi, len(kept), HeadSpec("linear", l2=1e-5, max_iter=150, seed=seed))
        yvi = np.array([index[v] for v in y_val[~held_va].tolist()], dtype=np.int64)
        temp = fit_temperature(head_logits(params, X_val[~held_va]), yvi) if len(yvi) >= 2 else 1.0
        cents = label_centroids(X_tr[~held], yi, len(kept))
        experts = sorted({expert_of[lab] for lab in kept.tolist()})
        member = np.zeros((len(kept), len(experts)), np.float32)
        member[np.arange(len(kept)), [experts.index(expert_of[lab]) for lab in kept.tolist()]] = 1.0
        rows = np.concatenate([X_tr[held], X_val[held_va], X_val[~held_va]])
        p = softmax(head_logits(params, rows) / temp)
        F1s.append(stage1_features(p, rows, cents, p @ member, protos[~np.isin(proto_label, fold)]))
        unk.append(np.r_[np.ones(int(held.sum() + held_va.sum()), bool), np.zeros(int((~held_va).sum()), bool)])
        fold_of.append(np.full(len(rows), f, np.int64))
        if gen_sim:
            proxy = type(g)(**{**g.get_params(), "max_iter": min(int(g.get_params().get("max_iter", 150)), 150)})
            proxy.fit(y=y_tr[~held], features=G_tr[~held], features_val=G_va[~held_va], y_val=y_val[~held_va])
            fgs.append(proxy.signals_features(np.concatenate([G_tr[held], G_va[held_va], G_va[~held_va]]))[1])
    return SimulatedUnknowns(F1=np.concatenate(F1s).astype(np.float32), is_unknown=np.concatenate(unk),
                             fg=np.concatenate(fgs).astype(np.float32) if gen_sim else None, n_folds=len(folds),
                             prototypes=protos, fold=np.concatenate(fold_of))
