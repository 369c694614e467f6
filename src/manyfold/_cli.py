"""The ``manyfold`` command line: a thin Typer layer over the library.

Errors print one readable line to stderr and exit non-zero; Ctrl-C leaves the
registry as it was (every save is atomic).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Optional

import typer

from ._exceptions import ArtifactError, ConfigError, DataError, InputError, ManyfoldError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Assemble many small experts into one large model.")
experts_app = typer.Typer(no_args_is_help=True, help="List, add or remove the experts of a saved assembly.")
app.add_typer(experts_app, name="experts")

DataDir = typer.Option(None, "--data-dir", help="folder holding clinc150/ (default: the one recorded at assembly, else "
                                                  "$MANYFOLD_DATA, else the cache; downloads when missing); not used for files")
TrustedKeys = typer.Option(None, "--trusted-key", help="a trusted ed25519 public key (PEM file); repeat for more")
DatasetOpt = typer.Option(None, "--dataset", help="the data the assembly was built from: clinc150 or a file or folder "
                                                  "path (default: the dataset its manifest records)")


@app.callback()
def _global_options(ctx: typer.Context, trust_remote: bool = typer.Option(
        False, "--trust-remote", help="load assemblies and packages that send items to a remote generalist, send it "
        "an API key from an environment variable, or use an encoder that is not built in (a local model folder or "
        "hub id); only for those you trust (same as MANYFOLD_TRUST_REMOTE=1)")) -> None:
    if trust_remote:
        from ._trust import TRUST_ENV

        old = os.environ.get(TRUST_ENV)
        os.environ[TRUST_ENV] = "1"

        def restore() -> None:  # an in-process caller (tests, main(argv)) gets its environment back
            if old is None:
                os.environ.pop(TRUST_ENV, None)
            else:
                os.environ[TRUST_ENV] = old

        ctx.call_on_close(restore)


def _trust_note(asm: Any, name: str) -> None:
    """Say on stderr what an assembly loaded with the opt-in does (a remote generalist, an API key, ...)."""
    needs = getattr(asm, "remote_", None)
    if needs:
        typer.echo(f"note: {name!r} was loaded with --trust-remote: it uses {'; '.join(needs)}", err=True)


def _print_table(rows: list[dict[str, Any]]) -> None:
    cols = [("system", "system"), ("in_scope_accuracy_closed", "in-scope acc"), ("in_scope_accuracy", "in-scope acc (OOS on)"),
            ("oos_recall", "OOS recall"), ("oos_auroc", "OOS AUROC"), ("escalation_rate", "escalated"),
            ("ms_per_item_after_encoding", "ms/item after enc.")]
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for _, title in cols:
        table.add_column(title, justify="left" if title == "system" else "right")
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key)
            cells.append(str(v) if key == "system" else (f"{v:.4f}" if key == "ms_per_item_after_encoding" else f"{100 * v:.2f}%" if key != "oos_auroc" else f"{v:.4f}"))
        table.add_row(*cells)
    Console().print(table)


def _dataset_for(manifest: dict[str, Any], data_dir: Optional[str], dataset: Optional[str] = None,
                 option: str = "--dataset") -> Any:
    """The data a saved assembly was built from (its manifest's reference), or ``dataset`` when given."""
    from .flywheel._cli import dataset_for

    return dataset_for(manifest, data_dir, dataset, option=option)


# -- users' files -----------------------------------------------------------------------------------


def _file_table(path: str, option: str) -> Any:
    """One data file read as columns (CSV, TSV, JSONL, Parquet); every error names the path."""
    from pathlib import Path

    from .data._files import _format_of, _read_bytes, _read_table, not_found

    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{option} takes one file, and {str(p)!r} is a folder")
    if not p.exists():
        raise not_found("file", str(p), f"no such file {str(p)!r} ({option})")
    return _read_table(p, _read_bytes(p), _format_of(p))


def _check_lengths(texts: list[str], where: list[str], path: str, max_chars: int) -> None:
    """Every text fits the assembly's ``max_chars`` (else one line naming the row), checked before any work."""
    for i, t in enumerate(texts):
        if len(t) > max_chars:
            raise InputError(f"{path!r} {where[i]}: the text has {len(t)} characters; this assembly takes at most {max_chars}")


def _read_labelled(path: str, text_col: Optional[str], label_col: Optional[str], oos_label: Optional[str],
                   max_chars: int) -> tuple[list[str], list[str], Optional[str]]:
    """Every row of a labelled file (no split): texts, labels and the file's out-of-scope label.

    The columns and the out-of-scope rules are the ones ``manyfold assemble`` reads files with;
    unlike training data, a label may occur once and a file may hold only out-of-scope rows.
    """
    from .data._files import AUTO_OOS, LABEL_COLUMNS, TEXT_COLUMNS, _names, _pick_column, _texts

    table = _file_table(path, "--data")
    tcol = _pick_column(table, text_col, TEXT_COLUMNS, "text", "--text-col")
    lcol = _pick_column(table, label_col, LABEL_COLUMNS, "label", "--label-col")
    if tcol == lcol:
        raise ConfigError(f"{path!r}: the text and the label column are both {tcol!r}")
    texts = _texts(table, tcol)
    labels = _names(table, lcol, "label")
    for i, lab in enumerate(labels):
        if lab is None:
            raise DataError(f"{table.at(i)}: empty label in column {lcol!r}")
    _check_lengths(texts, table.where, path, max_chars)
    if oos_label == "auto":
        hits = [lab for lab in AUTO_OOS if lab in set(labels)]
        if len(hits) > 1:
            raise DataError(f"{path!r} has both {hits[0]!r} and {hits[1]!r} labels; name the out-of-scope one with --oos-label")
        oos_label = hits[0] if hits else None
    return texts, labels, oos_label  # type: ignore[return-value]


def _read_texts(path: str, text_col: Optional[str], max_chars: int) -> tuple[list[str], list[str]]:
    """The texts of ``--input`` (one per non-blank line of ``.txt``; the text column of a data file) and their rows."""
    from pathlib import Path

    from .data._files import FORMATS, TEXT_COLUMNS, _decode, _pick_column, _read_bytes, _texts, not_found

    p = Path(path).expanduser()
    if p.suffix.lower() in (".txt", ".text"):
        if not p.is_file():
            raise not_found("file", str(p), f"no such file {str(p)!r} (--input)")
        if text_col is not None:
            raise ConfigError(f"--text-col names a column, and {str(p)!r} is plain text (one text per line)")
        texts, where = [], []
        for no, line in enumerate(_decode(p, _read_bytes(p)).split("\n"), 1):
            if line.strip():
                texts.append(line.rstrip("\r"))
                where.append(f"line {no}")
        if not texts:
            raise DataError(f"{str(p)!r} holds no text")
    elif p.suffix.lower() in FORMATS:
        table = _file_table(path, "--input")
        texts = _texts(table, _pick_column(table, text_col, TEXT_COLUMNS, "text", "--text-col"))
        where = table.where
    else:
        raise ConfigError(f"cannot read {str(p)!r}: unknown file type {p.suffix or '(no extension)'!r}; "
                          f"valid extensions: .txt, {', '.join(FORMATS)}")
    _check_lengths(texts, where, path, max_chars)
    return texts, where


def _assembly_name(dataset_name: str) -> str:
    """A registry name made from a dataset name: ``[A-Za-z0-9_.-]``, starting with a letter or digit."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_name).lstrip("_.-")[:64].rstrip("_.-")
    return name or "assembly"


def _option_list(text: Optional[str]) -> Optional[list[str]]:
    return [d.strip() for d in text.split(",") if d.strip()] if text else None


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _grouping_line(g: Optional[dict[str, Any]]) -> str:
    if not g:
        return "grouping: not recorded (an assembly saved before manyfold recorded it)"
    n = g.get("n_experts")
    how = ("number chosen from the data" if g.get("chosen") == "auto" else "given") if g.get("chosen") else ""
    scores = g.get("scores") or {}
    best = f"; silhouette {max(scores.values()):.3f}" if g.get("chosen") == "auto" and scores else ""
    return f"grouping: {g.get('method')}, {_n(int(n or 0), 'expert')} ({how}{best})"


def _calibration_line(cal: dict[str, Any]) -> str:
    oos = {"examples": "the data's out-of-scope examples", "held_out_labels": "labels held out in folds"}
    parts = [f"objective {cal.get('objective')}"]
    if "escalation_budget" in cal:
        parts.append(f"escalation budget {cal['escalation_budget']:.2f} "
                     f"({'binds: more escalation would be more accurate' if cal.get('budget_binds') else 'does not bind'})")
        parts.append(f"validation accuracy {cal.get('val_in_scope_accuracy', float('nan')):.4f} "
                     f"at {cal.get('val_escalation_rate', float('nan')):.1%} escalated")
    else:
        parts.append("no generalist: never escalates")
        parts.append(f"validation accuracy {cal.get('val_in_scope_accuracy_small', float('nan')):.4f}")
    parts.append(f"out-of-scope learnt from {oos.get(cal.get('oos_method'), cal.get('oos_method'))}")
    return "calibration: " + "; ".join(parts)


def _n(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _label_preview(labels: list[str], n: int = 4) -> str:
    return ", ".join(labels[:n]) + (f", ... (+{len(labels) - n})" if len(labels) > n else "")


@app.command()
def demo(data_dir: Optional[str] = DataDir, name: str = typer.Option("clinc150", help="registry name to save under"),
         generalist: Optional[str] = typer.Option(None, help="encoder spec of the generalist (default: mpnet+e5 when installed)"),
         json_out: bool = typer.Option(False, "--json", help="print the results as one JSON object"),
         quick: bool = typer.Option(False, "--quick", help="a few minutes from an empty cache: the generalist is a "
                                                           "head on MiniLM instead of the big model (says what it gives up)"),
         retrain: bool = typer.Option(False, "--retrain", help="train the assembly again even if an earlier demo "
                                                               "saved one with the same encoders and settings"),
         compare_big: bool = typer.Option(False, "--compare-big", help="add the big generalist alone to the table: the "
                                          "big model encodes the whole test split, not only what the assembly escalates "
                                          "(a few minutes more on a first run)")) -> None:
    """The main job: assemble CLINC150, evaluate on test, compare with monoliths, save.

    The big model encodes train and val, and of the test split only the items the assembly escalates;
    --compare-big adds the big generalist alone (the big model on the whole test split). A later run
    with the same encoders and settings loads the assembly the first one saved (and its cached
    vectors), then evaluates and compares it again; --retrain trains it again."""
    from ._build import DEFAULT_ENCODER, DEFAULT_GENERALIST_ENCODER
    from ._demo import run_demo

    say = lambda m: typer.echo(m, err=json_out)  # noqa: E731
    if quick:
        if generalist is not None:
            raise ConfigError("--quick picks the generalist (a head on MiniLM); leave out --generalist, or --quick")
        generalist = DEFAULT_ENCODER
        say(f"--quick: the generalist is a head on MiniLM ({DEFAULT_ENCODER}), not the big model "
            f"({DEFAULT_GENERALIST_ENCODER}): nothing but MiniLM is run, so the first run takes minutes, but the "
            "generalist knows no more than the experts' encoder - escalation gains little and the 'big generalist' "
            "row is MiniLM's. Run `manyfold demo` without --quick for the real comparison.")
    res = run_demo(data_dir=data_dir, name=name, generalist=generalist, log=say, retrain=retrain, compare_big=compare_big)
    if json_out:
        typer.echo(json.dumps(res, indent=2, default=str))
        return
    typer.echo(f"\nCLINC150 {res['split']} split ({res['rows'][0].get('n_in_scope', 4500)} in-scope, OOS included):")
    _print_table(res["rows"])
    if not res["big_generalist_row"]:
        typer.echo("(the big generalist alone is left out: the big model encoded only the test items the assembly "
                   "escalated; `manyfold demo --compare-big` adds it)")
    typer.echo(f"{'saved' if res['trained'] else 'evaluated the saved'} assembly {res['name']!r} version "
               f"{res['version']} in {res['registry']}")
    typer.echo(f"took {res['seconds']:.1f} s; try: manyfold predict {res['name']} \"what's my account balance\"")


def _assemble_federated(source: str, folder: str, name: Optional[str], text_col: Optional[str], label_col: Optional[str],
                        oos_label: str, router: str, top_k: int, objective: str, target_accuracy: Optional[float],
                        max_escalation_rate: float, trusted_key: Optional[list[str]], require_signature: bool) -> None:
    """``assemble SOURCE --from-packages DIR``: the experts' owners share their packages, the assembler its val data."""
    from pathlib import Path

    import numpy as np

    from ._build import assemble_from_packages
    from ._config import AssemblyConfig
    from ._io import sha256_file
    from ._registry import Registry
    from .data._files import FORMATS, not_found
    from .experts import check_name
    from .packages import read_package

    config = AssemblyConfig(top_k=top_k, escalation_objective=objective, target_accuracy=target_accuracy,
                            max_escalation_rate=max_escalation_rate)
    name = name or "federated"
    check_name(name, "assembly")
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise not_found("folder", str(d), f"no such folder of expert packages {str(d)!r} (--from-packages)")
    files = sorted(d.glob("*.mfx"))
    if not files:
        raise ConfigError(f"{str(d)!r} holds no expert package (*.mfx)")
    pkgs = [read_package(f, trusted_keys=trusted_key or None, require_signature=require_signature) for f in files]
    src = Path(source).expanduser()
    if src.is_dir():
        vals = [p for p in sorted(src.iterdir()) if p.stem.lower() in ("val", "valid", "validation", "dev")
                and p.suffix.lower() in FORMATS]
        if len(vals) != 1:
            raise ConfigError(f"{str(src)!r} must hold one validation file (val.csv, val.jsonl, ...); found "
                              f"{', '.join(p.name for p in vals) or 'none'}")
        src = vals[0]
    texts, labels, oos = _read_labelled(str(src), text_col, label_col, None if oos_label == "none" else oos_label,
                                        config.max_chars)
    asm = assemble_from_packages(pkgs, texts, np.asarray(labels, dtype=str), router=router, config=config, oos_label=oos,
                                 provenance={"dataset": None, "validation_data": {"path": str(src.resolve()),
                                                                                  "sha256": sha256_file(src)},
                                             "packages": {p.name: {"file": str(p.path), "checksums": dict(p.checksums),
                                                                   "signature": p.signature, "signed_by": p.signed_by,
                                                                   "creator": p.meta.get("creator")} for p in pkgs}})
    reg = Registry()
    v = reg.save(asm, name, note=f"federated from {len(pkgs)} packages in {str(d)}")
    typer.echo(f"{len(pkgs)} expert packages verified ({', '.join(p.name for p in pkgs)}); router learnt from their "
               f"routing summaries; policy calibrated on {len(texts)} validation items of {str(src)!r}")
    typer.echo(_calibration_line(asm.calibration_))
    typer.echo(f"saved assembly {name!r} version {v} in {reg.root}; evaluate it with: manyfold evaluate {name} --data TEST_FILE")


@app.command("assemble")
def assemble_cmd(source: str = typer.Argument(..., metavar="SOURCE",
                                             help="clinc150, mnist, fashion-mnist, or a labelled file (.csv .tsv .jsonl "
                                                  ".parquet), a folder of split files (train.csv, val.csv, test.csv), or "
                                                  "a folder of images (root/label/*.png, or root/domain/label/...)"),
                 name: Optional[str] = typer.Option(None, help="registry name (default: the dataset's name, e.g. "
                                                                "support for examples/support.csv)"),
                 text_col: Optional[str] = typer.Option(None, "--text-col", help="column of the texts (default: the "
                                                        "first of text, utterance, sentence, query, question, item)"),
                 label_col: Optional[str] = typer.Option(None, "--label-col", help="column of the labels (default: the "
                                                         "first of label, intent, category, class, target)"),
                 domain_col: Optional[str] = typer.Option(None, "--domain-col", help="column of the domains (default: "
                                                          "domain when present); \"\" ignores domains"),
                 oos_label: str = typer.Option("auto", "--oos-label", help="the out-of-scope label: auto (out_of_scope "
                                               "or oos when present), a label, or none"),
                 val_share: Optional[float] = typer.Option(None, "--val-share", help="share of each label held out to "
                                                           "validate (default 0.1)"),
                 test_share: Optional[float] = typer.Option(None, "--test-share", help="share of each label held out to "
                                                            "test (default 0.2 for one file, 0 for a folder)"),
                 seed: int = typer.Option(0, help="seed of the train / val / test split"),
                 experts: Optional[int] = typer.Option(None, "--experts", help="group the labels into this many experts "
                                                       "(default: one per domain, else a number chosen from the data)"),
                 expert_map: Optional[str] = typer.Option(None, "--expert-map", help="label -> expert file: JSON "
                                                          "{\"label\": \"expert\"} or CSV with columns label,expert"),
                 data_dir: Optional[str] = DataDir,
                 image_mode: str = typer.Option("auto", "--image-mode", help="images: auto (gray stays gray, else RGB), "
                                                "L (gray) or RGB"),
                 image_size: Optional[int] = typer.Option(None, "--image-size", help="images: resize every image to "
                                                          "this many pixels square (default: as they are)"),
                 encoder: str = typer.Option("default", help="routing encoder spec (default: minilm:runtime=onnx for text, pixels "
                                             "for images)"),
                 expert_kind: str = typer.Option("default", "--expert-kind", help="linear, mlp (heads on the routing "
                                                 "encoder) or cnn (images: a CNN trained from scratch); default: "
                                                 "linear for text, cnn for images"),
                 generalist: Optional[str] = typer.Option(None, help="encoder spec of the generalist, or 'none'"),
                 router: str = typer.Option("linear", help="linear, centroid or knn"),
                 domains: Optional[str] = typer.Option(None, help="comma-separated domains to build experts for"),
                 generalist_domains: str = typer.Option("experts", help="train the generalist on the experts' domains "
                                                        "('experts') or on every domain ('all')"),
                 top_k: int = typer.Option(2, help="experts consulted per item"),
                 objective: str = typer.Option("knee", help="how much to escalate: knee (least escalation near the best "
                                               "accuracy), accuracy (reach --target-accuracy) or budget "
                                               "(best accuracy at --max-escalation-rate)"),
                 target_accuracy: Optional[float] = typer.Option(None, "--target-accuracy",
                                                                 help="with --objective accuracy: validation accuracy to reach"),
                 max_escalation_rate: float = typer.Option(1.0, "--max-escalation-rate",
                                                           help="at most this share of items goes to the generalist"),
                 from_packages: Optional[str] = typer.Option(None, "--from-packages", help="federated: a folder of "
                                                             "expert packages (*.mfx); SOURCE is then your validation "
                                                             "data only (a labelled file, or a folder's val file)"),
                 trusted_key: Optional[list[str]] = TrustedKeys,
                 require_signature: bool = typer.Option(False, "--require-signature")) -> None:
    """Build an assembly from clinc150 or your own labelled file or folder, and save it in the registry.

    Everything is checked before any model runs; the registry is written last, so a failure leaves it as it was.
    """
    from pathlib import Path

    from ._build import assemble
    from ._config import AssemblyConfig
    from ._demo import pick_generalist_encoder
    from ._registry import Registry
    from .data import DATASETS, load_dataset, read_label_map
    from .data._images import is_image_folder
    from .data._files import FORMATS, not_found
    from .experts import check_name

    if from_packages is not None:
        _assemble_federated(source, from_packages, name, text_col, label_col, oos_label, router, top_k, objective,
                            target_accuracy, max_escalation_rate, trusted_key, require_signature)
        return
    # -- everything cheap first: a mistake costs no model load and writes nothing -------------------
    builtin = source in DATASETS
    if not builtin and not Path(source).expanduser().exists():
        raise not_found("dataset", source, f"unknown dataset {source!r}: not a built-in ({', '.join(DATASETS)}) and "
                                           f"no such file or folder; give a labelled file ({', '.join(FORMATS)}) or a folder")
    given = {"--text-col": text_col, "--label-col": label_col, "--domain-col": domain_col, "--val-share": val_share,
             "--test-share": test_share, "--oos-label": None if oos_label == "auto" else oos_label,
             "--seed": seed or None}
    if builtin and any(v is not None for v in given.values()):
        used = ", ".join(k for k, v in given.items() if v is not None)
        raise ConfigError(f"{used} {'applies' if ',' not in used else 'apply'} to data files, not to the built-in "
                          f"dataset {source!r}")
    config = AssemblyConfig(top_k=top_k, escalation_objective=objective, target_accuracy=target_accuracy,
                            max_escalation_rate=max_escalation_rate)
    if name is not None:
        check_name(name, "assembly")
    mapping = read_label_map(expert_map) if expert_map is not None else None
    if mapping is not None and experts is not None:
        raise ConfigError("--experts and --expert-map both say how to group the labels; give one")
    if builtin:
        ds = load_dataset(source, data_dir)
    elif is_image_folder(Path(source).expanduser()):
        ds = load_dataset(source, oos_label=None if oos_label == "none" else oos_label, val_share=val_share,
                          test_share=test_share, seed=seed, mode=image_mode, size=image_size)
    else:
        ds = load_dataset(source, text_col=text_col, label_col=label_col, domain_col=domain_col,
                          oos_label=None if oos_label == "none" else oos_label, val_share=val_share,
                          test_share=test_share, seed=seed)
    gen_spec = None
    if generalist != "none":
        gen_spec, note = pick_generalist_encoder(generalist, modality=ds.modality)
        if note:
            typer.echo(f"note: {note}", err=True)
    name = name or _assembly_name(ds.name)
    check_name(name, "assembly")
    chosen = _option_list(domains)
    asm = assemble(ds, encoder=encoder, generalist=gen_spec, router=router, domains=chosen, expert_kind=expert_kind,
                   generalist_domains=generalist_domains, n_experts=experts, expert_map=mapping, config=config,
                   show_progress=True)
    # -- the one write, last ----------------------------------------------------------------------
    reg = Registry()
    extra = {"domains": chosen or list(ds.domains)} if ds.has_domains else {}
    v = reg.save(asm, name, extra=extra)

    sizes = ", ".join(f"{k} {len(sp)}" for k, sp in ds.splits.items())
    src = ds.info.get("path") or ds.name
    typer.echo(f"{ds.name}: {_n(len(ds.labels), 'label')}, {sizes} items"
               f"{f', out-of-scope label {ds.oos_label!r}' if ds.oos_label else ', no out-of-scope items'} ({src})")
    grouping = (getattr(asm, "provenance_", None) or {}).get("grouping")
    typer.echo(f"{_n(len(asm.experts), 'expert')}; {_grouping_line(grouping)}")
    for e in asm.experts:
        labs = e.labels_.tolist()
        typer.echo(f"  {e.name:<24} {_n(len(labs), 'label')}: {_label_preview(labs)}")
    typer.echo(_calibration_line(asm.calibration_))
    typer.echo(f"saved assembly {name!r} version {v} in {reg.root}")
    example = "path/to/picture.png" if ds.modality == "image" else '"some text"'
    typer.echo(f"try: manyfold evaluate {name}   or   manyfold predict {name} {example}")


def _print_report(rep: dict[str, Any]) -> None:
    reasons = rep.get("not_measured") or {}
    for k, v in rep.items():
        if k in ("not_measured", "unknown_labels"):
            continue
        if v is None:
            typer.echo(f"{k:28s} n/a ({reasons.get(k, 'not measured')})")
        elif isinstance(v, dict):
            typer.echo(f"{k:28s} " + ", ".join(f"{a}={_fmt(b)}" for a, b in v.items()))
        else:
            typer.echo(f"{k:28s} {_fmt(v)}")
    n = rep.get("n_unknown_as_oos", 0)
    if n:
        shown = ", ".join(rep.get("unknown_labels", [])[:10])
        typer.echo(f"{_n(n, 'item')} had labels the assembly does not know ({shown}); they were counted as out-of-scope")


@app.command()
def evaluate(name: str,
             split: Optional[str] = typer.Option(None, help="split of the assembly's dataset (default: test)"),
             data: Optional[str] = typer.Option(None, "--data", help="score every row of this labelled file instead "
                                                "(.csv .tsv .jsonl .parquet)"),
             text_col: Optional[str] = typer.Option(None, "--text-col", help="with --data: the text column"),
             label_col: Optional[str] = typer.Option(None, "--label-col", help="with --data: the label column"),
             oos_label: str = typer.Option("auto", "--oos-label", help="with --data: the out-of-scope label: auto, a "
                                           "label, or none"),
             data_dir: Optional[str] = DataDir,
             no_escalate: bool = typer.Option(False, "--no-escalate", help="never consult the generalist"),
             version: Optional[int] = typer.Option(None, help="registry version (default: latest)"),
             json_out: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Evaluate a saved assembly on a split of the data it was built from, or on any labelled file.

    Labels the assembly does not know count as out-of-scope; figures the data cannot give are n/a.
    """
    from ._build import evaluate as run_eval
    from ._registry import Registry

    file_opts = [o for o, v in (("--text-col", text_col), ("--label-col", label_col),
                                ("--oos-label", None if oos_label == "auto" else oos_label)) if v is not None]
    if data is None and file_opts:
        raise ConfigError(f"{', '.join(file_opts)} {'goes' if len(file_opts) == 1 else 'go'} with --data FILE; "
                          "the assembly's own dataset keeps its columns")
    if data is not None and split is not None:
        raise ConfigError("--split and --data both say what to score; --data FILE is scored whole (every row)")
    asm = Registry().load(name, version)
    if data is not None:
        items, labels, data_oos = _read_labelled(data, text_col, label_col, None if oos_label == "none" else oos_label,
                                                 asm.config.max_chars)
    else:
        ds = _dataset_for(asm.manifest_, data_dir, option="--data FILE")
        s = ds.split(split or "test")
        items, labels, data_oos = s.items, s.labels, ds.oos_label
    rep = run_eval(asm, items, labels, escalate=not no_escalate, oos_label=data_oos)
    if json_out:
        typer.echo(json.dumps(rep))
    else:
        _print_report(rep)


_OUTPUT_FIELDS = ("label", "confidence", "escalated", "reason", "experts", "oos_score")


def _write_predictions(asm: Any, keys: list[tuple[str, Any]], load: Any, out: str, batch_size: int,
                       escalate: bool) -> int:
    """Predict ``load(batch of key values)`` in batches; write ``{key: value, label, ...}`` per item to ``out``
    atomically (a temporary file renamed at the end: an error or Ctrl-C leaves no partial output). Returns the count."""
    import tempfile
    from pathlib import Path

    from tqdm import tqdm

    dest = Path(out).expanduser()
    if dest.is_dir():
        raise ConfigError(f"--output {str(dest)!r} is a folder; give a file name (e.g. predictions.jsonl)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh, \
                tqdm(total=len(keys), unit="item", desc="predict", dynamic_ncols=True) as bar:
            for lo in range(0, len(keys), batch_size):
                batch = keys[lo:lo + batch_size]
                for (key, value), p in zip(batch, asm.predict(load([v for _, v in batch]), escalate=escalate)):
                    d = p.to_dict()
                    fh.write(json.dumps({key: value, **{k: d[k] for k in _OUTPUT_FIELDS}}, ensure_ascii=False) + "\n")
                bar.update(len(batch))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(keys)


def _predict_file(asm: Any, src: str, out: str, text_col: Optional[str], batch_size: int, escalate: bool) -> int:
    """Label every text of ``src`` in batches; write one JSON object per row to ``out`` atomically. Returns the count."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    texts, _ = _read_texts(src, text_col, asm.config.max_chars)
    return _write_predictions(asm, [("text", t) for t in texts], list, out, batch_size, escalate)


# -- images (an assembly whose encoder takes images) ---------------------------------------------------


def _takes_images(asm: Any) -> bool:
    return getattr(asm.encoder, "modality", None) == "image"


def _read_image_args(name: str, args: list[str]) -> list[Any]:
    """Each argument read as an image file (one line naming the first bad one: missing, corrupt, not an image)."""
    from pathlib import Path

    from .data import IMAGE_EXTENSIONS, read_image

    for a in args:  # every argument checked before any is decoded
        p = Path(a).expanduser()
        if not p.exists() and p.suffix.lower() not in IMAGE_EXTENSIONS:
            shown = a if len(a) <= 60 else a[:57] + "..."
            raise InputError(f"assembly {name!r} takes images, and {shown!r} is not an image file; give paths of image "
                             f"files ({', '.join(IMAGE_EXTENSIONS)}) or --input FOLDER")
    return [read_image(Path(a).expanduser()) for a in args]


def _image_folder_files(folder: str) -> list[Any]:
    """The image files directly inside ``folder`` (by extension, hidden ones skipped), sorted by name."""
    from pathlib import Path

    from .data import IMAGE_EXTENSIONS

    p = Path(folder).expanduser()
    if not p.exists():
        raise InputError(f"no such folder {folder!r} (--input)")
    if not p.is_dir():
        raise ConfigError(f"--input on an image assembly takes a folder of images, and {folder!r} is a file; give the "
                          "folder, or the image files as arguments")
    files = sorted((f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in IMAGE_EXTENSIONS), key=lambda f: f.name)
    if not files:
        raise DataError(f"folder {folder!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}) directly inside it")
    return files


def _predict_folder(asm: Any, folder: str, out: str, batch_size: int, escalate: bool) -> int:
    """Label every image of ``folder`` (sorted by name); one JSON object per file (``file``: its name) to ``out``."""
    from .data import read_image

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    files = _image_folder_files(folder)
    by_name = {f.name: f for f in files}
    return _write_predictions(asm, [("file", f.name) for f in files],
                              lambda names: [read_image(by_name[n]) for n in names], out, batch_size, escalate)


@app.command()
def predict(name: str, text: Optional[list[str]] = typer.Argument(None, help="one or more texts (image files for an "
                                                                   "assembly of images)"),
            input_path: Optional[str] = typer.Option(None, "--input", help="label a whole file: .txt (one text per "
                                                     "line), .csv, .tsv, .jsonl or .parquet; for an assembly of "
                                                     "images, a folder (its image files, sorted)"),
            output: Optional[str] = typer.Option(None, "--output", help="with --input: the JSONL file to write "
                                                 "(one object per input row)"),
            text_col: Optional[str] = typer.Option(None, "--text-col", help="with --input: the text column"),
            batch_size: int = typer.Option(256, "--batch-size", help="with --input: texts per batch"),
            json_out: bool = typer.Option(False, "--json", help="print JSON"),
            no_escalate: bool = typer.Option(False, "--no-escalate", help="never consult the generalist")) -> None:
    """Predict the label of one or more texts, or of every text of a file (--input FILE --output OUT.jsonl).

    An assembly of images takes image files instead (PNG, JPEG, BMP, GIF, WebP), or --input FOLDER.
    """
    from ._registry import Registry

    if bool(text) == (input_path is not None):
        raise ConfigError("give texts or --input FILE (with --output OUT.jsonl), not both" if text else
                          "nothing to predict: give one or more texts, or --input FILE --output OUT.jsonl")
    if input_path is not None and output is None:
        raise ConfigError("--input needs --output OUT.jsonl: where to write one JSON object per input row")
    if input_path is None and (output is not None or text_col is not None):
        raise ConfigError(f"{'--output' if output is not None else '--text-col'} goes with --input FILE")
    asm = Registry().load(name)
    _trust_note(asm, name)
    images = _takes_images(asm)
    if images and text_col is not None:
        raise ConfigError(f"--text-col is for texts; assembly {name!r} takes images")
    if input_path is not None:
        if images:
            n = _predict_folder(asm, input_path, output, batch_size, not no_escalate)  # type: ignore[arg-type]
        else:
            n = _predict_file(asm, input_path, output, text_col, batch_size, not no_escalate)  # type: ignore[arg-type]
        typer.echo(f"labelled {n} items from {input_path}; wrote {output}")
        return
    texts = list(text or [])
    preds = asm.predict(_read_image_args(name, texts) if images else texts, escalate=not no_escalate)
    if json_out:
        typer.echo(json.dumps([p.to_dict() for p in preds] if len(preds) > 1 else preds[0].to_dict()))
        return
    for t, p in zip(texts, preds):
        esc = f", escalated ({p.reason})" if p.escalated else ""
        typer.echo(f"{p.label}  (confidence {p.confidence:.3f}, experts {', '.join(p.experts)}{esc})  "
                   f"<- {t if images else t[:60]!r}")


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json")) -> None:
    """List the saved assemblies and the data each was built from."""
    from ._registry import Registry

    rows = Registry().list()
    broken = [r["name"] for r in rows if "error" in r]
    if json_out:
        typer.echo(json.dumps(rows))
    else:
        if not rows:
            typer.echo("no assemblies yet: run `manyfold demo`, `manyfold assemble clinc150` or `manyfold assemble FILE.csv`")
        for r in rows:
            if "error" in r:
                typer.echo(f"{r['name']}  error: {r['error']}")
                continue
            typer.echo(f"{r['name']}  v{r['version']}  {_n(len(r['experts']), 'expert')}  "
                       f"data={r.get('dataset') or 'not recorded'}  encoder={r['encoder']}  generalist={r['generalist']}")
            if r.get("needs_trust"):
                typer.echo(f"  loads only with --trust-remote: it uses {'; '.join(r['needs_trust'])}")
    if broken:
        raise ArtifactError(f"{_n(len(broken), 'assembly')} cannot be read: {', '.join(broken)} (see above)")


@app.command("gc")
def gc_cmd(min_age: float = typer.Option(600.0, "--min-age", help="remove only what is older than this many seconds "
                                         "(a save in progress writes its objects before its manifest)"),
           dry_run: bool = typer.Option(False, "--dry-run", help="only say what would be removed"),
           json_out: bool = typer.Option(False, "--json")) -> None:
    """Remove registry objects no version refers to, and temporary files an interrupted write left behind."""
    from ._registry import Registry

    reg = Registry()
    rep = reg.gc(min_age_s=min_age, dry_run=dry_run)
    if json_out:
        typer.echo(json.dumps(rep))
        return
    verb = "would remove" if dry_run else "removed"
    for what in ("objects", "pseudo", "temp"):
        for path in rep[what]:
            typer.echo(f"{verb} {path}")
    typer.echo(f"{verb} {_n(len(rep['objects']), 'unreferenced object')}, {_n(len(rep['pseudo']), 'pseudo-label file')}, "
               f"{_n(len(rep['temp']), 'leftover temporary file')} ({rep['bytes'] / 2**20:.1f} MiB) in {reg.root}")


@experts_app.command("list")
def experts_list(name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """The experts of a saved assembly (their labels, size, validation accuracy) and how they were grouped."""
    from ._registry import Registry

    asm = Registry().load(name)
    cards = [e.card_.to_dict() for e in asm.experts]
    if json_out:
        typer.echo(json.dumps(cards))
        return
    for c in cards:
        acc = c["metrics"].get("val_accuracy")
        labs = list(c["labels"])
        typer.echo(f"{c['name']:24s} {_n(len(labs), 'label'):>10}  {c['size']:8d} params  "
                   f"val acc {acc if acc is None else f'{acc:.3f}'}  {c['lineage'].get('source')}  [{_label_preview(labs)}]")
    typer.echo(_grouping_line(asm.manifest_.get("grouping")))


@experts_app.command("add")
def experts_add(name: str, expert: str = typer.Argument(..., help="name of the new expert"),
                domain: str = typer.Option(..., help="the dataset domain whose labels it owns"),
                kind: str = typer.Option("linear", help="linear or mlp"), data_dir: Optional[str] = DataDir,
                dataset: Optional[str] = DatasetOpt,
                from_generalist: bool = typer.Option(False, "--from-generalist",
                                                     help="learn only from the generalist's labels of --pool (no labelled data)"),
                pool: Optional[str] = typer.Option(None, help="unlabelled items for --from-generalist (JSONL or text)"),
                min_confidence: float = typer.Option(0.9, help="with --from-generalist: keep labels at or above this probability")) -> None:
    """Train one new expert on a domain of the assembly's data and refit only the router; the other experts' files stay."""
    from ._registry import Registry
    from .experts import HeadExpert, check_name

    check_name(expert)  # every cheap check before the assembly or any data is loaded
    if kind not in ("linear", "mlp"):
        raise ConfigError(f"unknown expert kind {kind!r}; valid choices: linear, mlp")
    if from_generalist != (pool is not None):
        raise ConfigError("--from-generalist and --pool go together: the generalist labels the pool")
    if from_generalist:
        from .flywheel import add_from_teacher_main

        add_from_teacher_main(name, expert, domain, pool, min_confidence, None, kind=kind, dataset=dataset,
                              data_dir=data_dir, echo=typer.echo)
        return
    from .flywheel._cli import dataset_for_new_expert, labelled_splits

    reg = Registry()
    asm = reg.load(name)
    ds = dataset_for_new_expert(asm, name, expert, domain, data_dir, dataset)
    owned = ds.labels_of(domain)
    tr, va = labelled_splits(asm, ds, [*asm.labels_.tolist(), *owned])
    asm.add_expert(HeadExpert(expert, kind=kind, domain=domain), tr.items, tr.labels, va.items, va.labels, labels=owned)
    extra = dict(asm.manifest_.get("extra") or {})
    extra["domains"] = sorted(set(extra.get("domains", [])) | {domain})
    v = reg.save(asm, name, note=f"added expert {expert}", extra=extra)
    typer.echo(f"added expert {expert!r} ({_n(len(owned), 'label')}: {_label_preview(owned)}); saved {name!r} version {v}")


@experts_app.command("remove")
def experts_remove(name: str, expert: str, data_dir: Optional[str] = DataDir,
                   dataset: Optional[str] = DatasetOpt) -> None:
    """Remove one expert and refit the router over the others (on the data the assembly was built from)."""
    from ._registry import Registry
    from .flywheel._cli import labelled_splits

    reg = Registry()
    asm = reg.load(name)
    gone = asm.expert(expert).labels_.tolist()  # an unknown name fails here, before any data is read
    ds = _dataset_for(asm.manifest_, data_dir, dataset)
    tr, va = labelled_splits(asm, ds, [lab for lab in asm.labels_.tolist() if lab not in set(gone)])
    asm.remove_expert(expert, tr.items, tr.labels, va.items, va.labels)
    v = reg.save(asm, name, note=f"removed expert {expert}", extra=asm.manifest_.get("extra"))
    typer.echo(f"removed expert {expert!r} ({_n(len(gone), 'label')}); saved {name!r} version {v}")


@experts_app.command("pack")
def experts_pack(name: str, expert: str, out: str = typer.Option(..., "-o", "--output", help="the package file (.mfx)"),
                 creator: str = typer.Option("", help="who trained it"), licence: str = typer.Option("", help="its licence"),
                 sign_key: Optional[str] = typer.Option(None, "--sign-key", help="sign with this ed25519 private key (PEM)"),
                 data_dir: Optional[str] = DataDir, dataset: Optional[str] = DatasetOpt) -> None:
    """Pack one expert as a portable, verifiable package: its card, weights and routing summary (no training data)."""
    import numpy as np

    from ._registry import Registry
    from .flywheel._cli import labelled_splits
    from .packages import pack_main

    asm = Registry().load(name)
    e = asm.expert(expert)  # an unknown name fails here, before any data is read
    if not out.endswith(".mfx"):
        raise ConfigError(f"the package file must end in .mfx, got {out!r}")
    tr, _ = labelled_splits(asm, _dataset_for(asm.manifest_, data_dir, dataset), e.labels_.tolist())
    mine = np.isin(tr.labels, e.labels_)
    items = [tr.items[i] for i in np.nonzero(mine)[0]]
    X = np.asarray(asm.encoder.encode(items), np.float32)
    pack_main(e, asm.encoder, X, tr.labels[mine], out, typer.echo, modality=getattr(asm.encoder, "modality", "text"),
              creator=creator, licence=licence, signing_key=sign_key)


@experts_app.command("inspect")
def experts_inspect(path: str, trusted_key: Optional[list[str]] = TrustedKeys,
                    require_signature: bool = typer.Option(False, "--require-signature"),
                    json_out: bool = typer.Option(False, "--json")) -> None:
    """Verify a package (every checksum, its format, the signature) and show its card; runs nothing from it."""
    from .packages import inspect_main

    inspect_main(path, typer.echo, trusted_keys=trusted_key or None, require_signature=require_signature, json_out=json_out)


@experts_app.command("install")
def experts_install(name: str, path: str, trusted_key: Optional[list[str]] = TrustedKeys,
                    require_signature: bool = typer.Option(False, "--require-signature"),
                    data_dir: Optional[str] = DataDir, dataset: Optional[str] = DatasetOpt) -> None:
    """Plug a verified expert package into a saved assembly: only the router is refitted, from routing summaries."""
    import time

    import numpy as np
    from ._registry import Registry
    from .flywheel._cli import labelled_splits
    from .packages import read_package

    t0 = time.perf_counter()
    reg = Registry()
    asm = reg.load(name)
    pkg = read_package(path, trusted_keys=trusted_key or None, require_signature=require_signature,
                       expected_encoder_id=asm.encoder.id, expected_modality=getattr(asm.encoder, "modality", None))
    if pkg.name in asm.expert_names:  # before any data is read
        raise ConfigError(f"an expert named {pkg.name!r} is already in {name!r}; nothing changed "
                          f"(`manyfold experts remove {name} {pkg.name}` first to replace it)")
    ds = _dataset_for(asm.manifest_, data_dir, dataset)
    # install reads of the train split only its out-of-scope items (calibration) and the items of an expert that has
    # no routing summary yet (saved by an older manyfold; experts fitted now keep one from their fit)
    tr, va = labelled_splits(asm, ds, asm.labels_.tolist())
    keep_va = np.isin(va.labels, asm.labels_.tolist() + [asm.config.oos_label])  # what the package brings is new here
    asm.install(pkg, [va.items[i] for i in np.nonzero(keep_va)[0]], va.labels[keep_va],
                train_items=tr.items, train_labels=tr.labels)
    v = reg.save(asm, name, note=f"installed package {pkg.name} ({pkg.path.name if pkg.path else ''})",
                 extra=asm.manifest_.get("extra"))
    typer.echo(f"installed {pkg.name!r} ({_n(len(pkg.labels), 'label')}, signature: {pkg.signature}); only the router "
               f"and the policy were refitted, from routing summaries; saved {name!r} version {v} "
               f"in {time.perf_counter() - t0:.1f} s")


@experts_app.command("keygen")
def experts_keygen(out_dir: str = typer.Argument(".", help="folder for NAME.key (private, 0600) and NAME.pub"),
                   key_name: str = typer.Option("manyfold-signing", "--name", help="file name of the key pair")) -> None:
    """Make an ed25519 key pair to sign expert packages (never overwrites)."""
    from .packages import keygen_main

    keygen_main(out_dir, typer.echo, name=key_name)


@app.command()
def serve(name: str = typer.Argument(..., help="registry name of the assembly"),
          host: str = typer.Option("127.0.0.1", help="address to bind"), port: int = typer.Option(8000, help="port"),
          threads: Optional[int] = typer.Option(None, help="thread budget of the process: torch and every onnxruntime "
                                                           "session (default: $MANYFOLD_THREADS, else the cores)"),
          request_log: Optional[str] = typer.Option(None, "--request-log",
                                                    help="append every answered request to this JSONL file (a pool for "
                                                         "distill; created 0600, rotated by size)"),
          request_log_max_bytes: int = typer.Option(64 << 20, "--request-log-max-bytes",
                                                    help="rotate the request log before it passes this size"),
          request_log_backups: int = typer.Option(4, "--request-log-backups",
                                                  help="rotated request logs kept (FILE.1 ... FILE.N; 0: none)"),
          generalist_stage: bool = typer.Option(True, "--generalist-stage/--one-stage",
                                                help="escalated items wait for the generalist in a stage of their own "
                                                     "(the others are answered at once); --one-stage waits for the whole batch"),
          generalist_deadline_ms: Optional[float] = typer.Option(
              None, "--generalist-deadline-ms", help="an escalated item still waiting for the generalist this long after "
                                                     "its request arrived gets the experts' answer, flagged degraded and "
                                                     "counted (default: no deadline)"),
          allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host",
                                                           help="a Host header the server answers (repeat for more; "
                                                                "*.example.com for subdomains, * for any); default: "
                                                                "localhost, 127.0.0.1, ::1 and --host"),
          console: bool = typer.Option(True, "--console/--no-console",
                                       help="serve the web console at / and /ui (docs/serve.md, 'Web console')"),
          ray: bool = typer.Option(False, "--ray", help="deploy on Ray Serve (needs manyfold[ray])")) -> None:
    """Serve a saved assembly over HTTP (FastAPI + uvicorn, or Ray Serve with --ray); a web console at /."""
    from .serve import serve_main

    serve_main(name, host, port, None, ray=ray, threads=threads, request_log=request_log,
               request_log_max_bytes=request_log_max_bytes, request_log_backups=request_log_backups,
               generalist_stage=generalist_stage, console=console, generalist_deadline_ms=generalist_deadline_ms,
               **({"allowed_hosts": tuple(allowed_host)} if allowed_host else {}))


@app.command("distill")
def distill_cmd(name: str = typer.Argument(..., help="registry name of the assembly"),
                pool: str = typer.Option(..., help='unlabelled items: JSONL ({"text"|"item"|"items"} per line) or text, one per line'),
                min_confidence: float = typer.Option(0.9, help="keep the generalist's labels at or above this probability"),
                data_dir: Optional[str] = DataDir,
                dataset: Optional[str] = DatasetOpt,
                version: Optional[int] = typer.Option(None, help="registry version to start from (default: latest)"),
                tune_budget: bool = typer.Option(False, "--tune-budget", help="lower the escalation budget as far as validation accuracy allows")) -> None:
    """One big -> small distillation round: the generalist labels --pool, the experts learn from it; saves a new version."""
    from .flywheel import distill_main

    distill_main(name, pool, min_confidence, None, dataset=dataset, data_dir=data_dir, version=version,
                 tune_budget=tune_budget, echo=typer.echo)


@app.command("fold")
def fold_cmd(name: str = typer.Argument(..., help="registry name of the assembly"),
             into: Optional[str] = typer.Option(None, "--into", help="registry name of the folded model (default: NAME-folded)"),
             kind: str = typer.Option("linear", help="linear or mlp head"), data_dir: Optional[str] = DataDir,
             dataset: Optional[str] = DatasetOpt) -> None:
    """Small -> big: fold the experts (and the generalist's answers) into one head; saves it as an assembly."""
    from .flywheel import fold_main

    fold_main(name, into, None, kind=kind, dataset=dataset, data_dir=data_dir, echo=typer.echo)


@app.command("export")
def export_cmd(name: str = typer.Argument(..., help="registry name of the assembly"),
               onnx: bool = typer.Option(True, "--onnx", help="export as ONNX graphs + one JSON (the only format)"),
               out: str = typer.Option(..., "-o", "--output", help="the folder to write (replaced if it holds an export)"),
               int8: bool = typer.Option(False, "--int8", help="int8 weights for the big graphs (about 4x smaller)"),
               int8_dynamic: bool = typer.Option(False, "--int8-dynamic", help="onnxruntime's dynamic int8 quantisation "
                                                 "instead (int8 arithmetic; less exact)"),
               version: Optional[int] = typer.Option(None, help="registry version (default: latest)")) -> None:
    """Export an assembly for the edge: encoder, router, experts and out-of-scope detector as ONNX graphs plus one
    JSON, runnable with onnxruntime and numpy alone (docs/edge_runner.py); the generalist stays behind."""
    from .export import export_main

    if int8 and int8_dynamic:
        raise ConfigError("--int8 and --int8-dynamic are two ways to quantise; give one")
    export_main(name, out, "dynamic" if int8_dynamic else int8, typer.echo, version=version)


@app.command()
def bench(dataset: str = typer.Argument("clinc150", help="dataset name"),
          quick: bool = typer.Option(False, "--quick", help="a subset and fewer repeats"),
          data_dir: Optional[str] = DataDir,
          out_dir: str = typer.Option("benchmarks/results", "--out-dir", help="where the report files go"),
          threads: Optional[int] = typer.Option(None, help="thread budget of the process: torch and every onnxruntime "
                                                           "session (default: $MANYFOLD_THREADS, else the cores)")) -> None:
    """Benchmark the assembly against monoliths and peer routers; writes a report and plots."""
    from ._threads import describe_threads, set_threads
    from .bench import bench_main

    if threads is not None:
        set_threads(threads)
    typer.echo(describe_threads(), err=True)

    bench_main(dataset=dataset, quick=quick, data_dir=data_dir, out_dir=out_dir)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: one readable line and a non-zero exit on any manyfold error or Ctrl-C."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except ManyfoldError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was saved (the registry is unchanged)", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors carry their own exit code
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):
            typer.echo("aborted: nothing was saved (the registry is unchanged)", err=True)
            sys.exit(130)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise
    # typer turns Ctrl-C (and typer.Exit) inside a command into a returned exit code when not standalone
    if rv == 130:
        typer.echo("interrupted: nothing was saved (the registry is unchanged)", err=True)
        sys.exit(130)
    if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
        sys.exit(rv)


if __name__ == "__main__":  # pragma: no cover
    main()
