"""The flywheel commands on saved assemblies: ``manyfold distill``, ``experts add --from-generalist``, ``fold``.

``manyfold distill``: one distillation round on a saved assembly, saved as its next version.

The registry keeps weights, not training data. The labelled data the experts
were trained on comes from the dataset (its train split, restricted to the
assembly's labels, plus out-of-scope items); the pseudo-labels of earlier
rounds are kept beside the registry in
``<registry>/flywheel/<name>/v<NNNN>.pseudo.jsonl`` (named, with its sha256,
in the manifest's ``extra["flywheel"]``), so round N+1 trains on rounds 1..N.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ArtifactError, ConfigError
from .._io import sha256_file
from ._pool import read_pool

__all__ = ["distill_main", "add_from_teacher_main", "fold_main", "save_pseudo", "load_pseudo"]


def save_pseudo(path: Path, items: list[Any], labels: np.ndarray) -> str:
    """Write pseudo-labels as JSONL ``{"text", "label"}`` (atomically); returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for it, lab in zip(items, labels.tolist()):
            f.write(json.dumps({"text": it, "label": lab}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return sha256_file(path)


#: the pseudo-label files distill writes under the registry root (a manifest may name no other file)
_PSEUDO_FILE = r"flywheel/[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}/v\d{4,}\.pseudo\.jsonl"


def load_pseudo(root: Path, entry: dict[str, Any] | None) -> tuple[list[Any], np.ndarray]:
    """The pseudo-labels a manifest's ``extra["flywheel"]`` entry names (none if ``entry`` is empty)."""
    if not entry:
        return [], np.zeros(0, str)
    from .._trust import check_digest, registry_file

    where = "the manifest's flywheel entry"
    if not isinstance(entry, Mapping):
        raise ArtifactError(f"{where} must be an object, got {type(entry).__name__}")
    path = registry_file(Path(root), entry.get("pseudo_file"), _PSEUDO_FILE, where)
    digest = check_digest(entry.get("sha256"), where)
    if path.is_symlink() or not path.is_file() or sha256_file(path) != digest:
        raise ArtifactError(f"the pseudo-label file {str(path)!r} is missing or does not match its checksum")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows], np.array([r["label"] for r in rows], dtype=str)


def _registry(registry: Any) -> Any:
    from .._registry import Registry

    return registry if isinstance(registry, Registry) else Registry(registry)


def dataset_for(manifest: Mapping[str, Any], data_dir: str | Path | None = None, dataset: str | None = None, *,
                option: str = "--dataset") -> Any:
    """The labelled dataset an assembly was built from.

    ``dataset`` (a built-in name or a file / folder path) overrides; else the
    manifest's dataset reference (``manifest["dataset"]``) is rebuilt, its files
    checked against their recorded sha256 (``data_dir`` overrides a built-in's
    recorded folder). A manifest with no reference is a :class:`ConfigError`
    that names ``option``: there is no silent default dataset.
    """
    from .. import data  # looked up at call time, so tests can stand data in

    if dataset is not None:
        return data.load_dataset(dataset, data_dir)
    ref = manifest.get("dataset")
    if not ref:
        name, version = manifest.get("name", "?"), manifest.get("version", "?")
        raise ConfigError(f"assembly {name!r} v{version} does not record the dataset it was built from; "
                          f"pass {option} (a built-in name or a file or folder path)")
    return data.load_dataset_ref(ref, data_dir=data_dir)


def relabelled(split: Any, ds: Any, oos: str) -> Any:
    """``split`` with the data's out-of-scope label (``ds.oos_label``) written as the assembly's (``oos``)."""
    from .._build import _relabel_oos
    from ..data import Split

    return Split(split.items, _relabel_oos(split.labels, ds.oos_label, oos))


def labelled_splits(asm: Any, ds: Any, labels: Any = None) -> tuple[Any, Any]:
    """The train and validation splits of ``ds``, out-of-scope written as the assembly's label, restricted to
    ``labels`` (default: the assembly's) and out-of-scope."""
    oos = asm.config.oos_label
    keep = list(asm.labels_.tolist() if labels is None else labels) + [oos]
    out = []
    for name in ("train", "val"):
        s = relabelled(ds.split(name), ds, oos)
        out.append(s.take(np.nonzero(np.isin(s.labels, keep))[0]))
    return out[0], out[1]


def dataset_for_new_expert(asm: Any, name: str, expert: str, domain: str, data_dir: str | Path | None = None,
                           dataset: str | None = None) -> Any:
    """Check that ``expert`` is a new name in assembly ``name`` and ``domain`` a domain of its dataset; the dataset."""
    if expert in asm.expert_names:
        raise ConfigError(f"an expert named {expert!r} is already in {name!r}; remove it first")
    ds = dataset_for(asm.manifest_, data_dir, dataset)
    if not ds.has_domains:
        raise ConfigError(f"dataset {ds.name!r} of {name!r} has no domains, so --domain {domain!r} names nothing; "
                          "a new expert's labels come from a domain of the data (a domain column)")
    if domain not in ds.domains:
        raise ConfigError(f"unknown domain {domain!r}; valid choices: {', '.join(ds.domains)}")
    return ds


def distill_main(name: str, pool_path: str | Path, min_confidence: float = 0.9, registry: Any = None, *,
                 dataset: str | None = None, data_dir: str | Path | None = None, version: int | None = None,
                 tune_budget: bool = False, echo: Callable[[str], Any] = print) -> int:
    """Load assembly ``name`` from the registry, distil the generalist into its experts on the pool, save.

    ``registry`` is a :class:`~manyfold.Registry`, a root path, or None (the
    default registry). ``dataset`` / ``data_dir`` give the labelled data the
    experts were trained on (default: the manifest's dataset reference, see
    :func:`dataset_for`; the data's out-of-scope label is written as the
    assembly's). The manifest's other
    ``extra`` entries are carried over to the new version. Prints a summary
    through ``echo`` and returns the new version number.
    """
    from .._distill import Flywheel

    reg = _registry(registry)
    pool = read_pool(pool_path)
    asm = reg.load(name, version)
    old_extra = dict(asm.manifest_.get("extra") or {})
    tr, va = labelled_splits(asm, dataset_for(asm.manifest_, data_dir, dataset))
    prior = old_extra.get("flywheel")
    p_items, p_labels = load_pseudo(reg.root, prior)
    echo(f"round on {len(pool)} pool items: the generalist labels them, the experts and the router are refitted ...")
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


def add_from_teacher_main(name: str, expert: str, domain: str, pool_path: str | Path, min_confidence: float = 0.9,
                          registry: Any = None, *, kind: str = "linear", dataset: str | None = None,
                          data_dir: str | Path | None = None, echo: Callable[[str], Any] = print) -> int:
    """Add expert ``expert`` for ``domain`` to assembly ``name``, learned only from its generalist's labels of the pool.

    The dataset's labels of ``domain`` name what the expert owns; none of its
    labelled items are used. Saves the next version and returns its number.
    """
    from .._distill import add_expert_from_teacher

    reg = _registry(registry)
    pool = read_pool(pool_path)
    asm = reg.load(name)
    extra = dict(asm.manifest_.get("extra") or {})
    ds = dataset_for_new_expert(asm, name, expert, domain, data_dir, dataset)
    tr, va = (relabelled(ds.split(s), ds, asm.config.oos_label) for s in ("train", "val"))
    echo(f"the generalist labels {len(pool)} pool items; the new expert and the router learn from its confident answers ...")
    info = add_expert_from_teacher(asm, expert, ds.labels_of(domain), pool, tr.items, tr.labels, va.items, va.labels,
                                   min_confidence=min_confidence, kind=kind, domain=domain)
    extra["domains"] = sorted(set(extra.get("domains", [])) | {domain})
    v = reg.save(asm, name, note=f"added expert {expert} from the generalist's labels on {Path(pool_path).name}", extra=extra)
    missing = [lab for lab, n in info["per_label"].items() if n == 0]
    echo(f"added expert {expert!r} for {domain!r}: {info['n_pseudo']} of {info['n_pool']} pool items labelled by the "
         f"generalist at confidence >= {min_confidence}; saved {name!r} version {v}")
    if missing:
        echo(f"warning: no confident pool item for {len(missing)} labels: {', '.join(missing[:10])}")
    return v


def fold_main(name: str, into: str | None = None, registry: Any = None, *, kind: str = "linear",
              dataset: str | None = None, data_dir: str | Path | None = None,
              echo: Callable[[str], Any] = print) -> int:
    """Fold assembly ``name`` into one head (small -> big) and save it as assembly ``into`` (default ``NAME-folded``).

    The student learns the assembly's final answers (experts fused with the
    generalist where it escalates) on the dataset's train items; it is saved
    as a one-expert assembly with no generalist, so ``evaluate``, ``predict``
    and ``serve`` work on it as on any assembly. Returns the saved version.
    """
    from .._assembly import Assembly
    from .._distill import fold
    from ..routers import CentroidRouter

    reg = _registry(registry)
    asm = reg.load(name)
    extra = dict(asm.manifest_.get("extra") or {})
    ds = dataset_for(asm.manifest_, data_dir, dataset)
    tr, va = labelled_splits(asm, ds)
    oos = asm.config.oos_label
    ins = np.flatnonzero(tr.labels != oos)
    ins_va = np.flatnonzero(va.labels != oos)
    echo(f"the assembly answers {len(ins)} train items (escalating as it would serve them); one head learns its answers ...")
    head = fold(asm, [tr.items[i] for i in ins], name="folded", kind=kind,
                val_items=[va.items[i] for i in ins_va], val_labels=va.labels[ins_va])
    # one expert: the router has nothing to choose; the policy still learns out-of-scope detection
    folded = Assembly(asm.encoder, CentroidRouter(), [head], None, asm.config)
    # the folded model names the data it learnt from, so evaluate / experts / distill find it again
    source = ds.info.get("source") if isinstance(ds.info.get("source"), dict) else None
    folded.fit(tr.items, tr.labels, va.items, va.labels,
               provenance={"dataset": source, "grouping": {"method": f"folded from {name}", "chosen": "given", "n_experts": 1}})
    into = into or f"{name}-folded"
    v = reg.save(folded, into, note=f"{name} v{asm.manifest_['version']} folded into one head",
                 extra={**{k: extra[k] for k in ("dataset", "data_dir") if k in extra},
                        "folded_from": {"name": name, "version": asm.manifest_["version"]}})
    echo(f"folded {name!r} v{asm.manifest_['version']} ({len(asm.experts)} experts"
         f"{' + generalist' if asm.generalist is not None else ''}) into one {kind} head over {len(head.labels_)} labels "
         f"({head.card_.size} params); saved {into!r} version {v}")
    return v
