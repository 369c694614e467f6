"""``manyfold distill``: one distillation round on a saved assembly, saved as its next version.

The registry keeps weights, not training data. The labelled data the experts
were trained on comes from the dataset (its train split, restricted to the
assembly's labels, plus out-of-scope items); the pseudo-labels of earlier
rounds are kept beside the registry in
``<registry>/flywheel/<name>/v<NNNN>.pseudo.jsonl`` (named, with its sha256,
in the manifest's ``extra["flywheel"]``), so round N+1 trains on rounds 1..N.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ArtifactError
from .._io import sha256_file
from ._pool import read_pool

__all__ = ["distill_main", "save_pseudo", "load_pseudo"]


def save_pseudo(path: Path, items: list[Any], labels: np.ndarray) -> str:
    """Write pseudo-labels as JSONL ``{"text", "label"}`` (atomically); returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for it, lab in zip(items, labels.tolist()):
            f.write(json.dumps({"text": it, "label": lab}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return sha256_file(path)


def load_pseudo(root: Path, entry: dict[str, Any] | None) -> tuple[list[Any], np.ndarray]:
    """The pseudo-labels a manifest's ``extra["flywheel"]`` entry names (none if ``entry`` is empty)."""
    if not entry:
        return [], np.zeros(0, str)
    path = root / entry["pseudo_file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        raise ArtifactError(f"the pseudo-label file {str(path)!r} is missing or does not match its checksum")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows], np.array([r["label"] for r in rows], dtype=str)


def distill_main(name: str, pool_path: str | Path, min_confidence: float = 0.9, registry: Any = None, *,
                 dataset: str | None = None, data_dir: str | Path | None = None, version: int | None = None,
                 tune_budget: bool = False, echo: Callable[[str], Any] = print) -> int:
    """Load assembly ``name`` from the registry, distil the generalist into its experts on the pool, save.

    ``registry`` is a :class:`~manyfold.Registry`, a root path, or None (the
    default registry). ``dataset`` / ``data_dir`` give the labelled data the
    experts were trained on (default: the manifest's ``extra["dataset"]`` /
    ``extra["data_dir"]``, else ``"clinc150"``). The manifest's other
    ``extra`` entries are carried over to the new version. Prints a summary
    through ``echo`` and returns the new version number.
    """
    from .._registry import Registry
    from ..data import load_dataset
    from .._distill import Flywheel

    reg = registry if isinstance(registry, Registry) else Registry(registry)
    pool = read_pool(pool_path)
    asm = reg.load(name, version)
    old_extra = dict(asm.manifest_.get("extra") or {})
    dataset = dataset or old_extra.get("dataset", "clinc150")
    data_dir = data_dir if data_dir is not None else old_extra.get("data_dir")
    ds = load_dataset(dataset, data_dir) if data_dir is not None else load_dataset(dataset)
    oos = asm.config.oos_label
    keep = set(asm.labels_.tolist()) | {oos}
    tr, va = ds.split("train"), ds.split("val")
    tr = tr.take(np.nonzero(np.isin(tr.labels, list(keep)))[0])
    va = va.take(np.nonzero(np.isin(va.labels, list(keep)))[0])
    prior = old_extra.get("flywheel")
    p_items, p_labels = load_pseudo(reg.root, prior)
    fw = Flywheel(asm, tr.items, tr.labels, va.items, va.labels, min_confidence=min_confidence,
                  tune_budget=tune_budget, pseudo_items=p_items, pseudo_labels=p_labels)
    rep = fw.step(pool)
    new_version = max(reg.versions(name) or [0]) + 1
    rel = f"flywheel/{name}/v{new_version:04d}.pseudo.jsonl"
    digest = save_pseudo(reg.root / rel, fw.pseudo_items, fw.pseudo_labels)
    extra = {**old_extra, "flywheel": {"pseudo_file": rel, "sha256": digest, "n_pseudo": len(fw.pseudo_items), "round": rep.round,
                          "teacher": rep.teacher, "pool": str(pool_path), "min_confidence": min_confidence,
                          "from_version": asm.manifest_["version"]}}
    saved = reg.save(asm, name, note=f"distill round {rep.round} on {Path(pool_path).name}", extra=extra)
    echo(f"{name} v{asm.manifest_['version']} -> v{saved}: round {rep.round}, teacher {rep.teacher}")
    echo(f"pool: {rep.n_pool} items, {rep.n_confident} labelled at confidence >= {min_confidence}, "
         f"{rep.n_new} new; {len(fw.pseudo_items)} pseudo-labelled items in all")
    for ename, c in rep.experts.items():
        echo(f"  {ename:<24} original {c['n_original']:>6}  pseudo {c['n_pseudo']:>6}")
    cal = rep.calibration
    echo(f"validation: in-scope accuracy {cal.get('val_in_scope_accuracy', float('nan')):.4f}, "
         f"escalation {cal.get('val_escalation_rate', float('nan')):.4f} (budget {rep.escalation_budget:.2f}), "
         f"{rep.seconds:.1f} s")
    return saved
