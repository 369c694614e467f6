"""The ``manyfold`` command line: a thin Typer layer over the library.

Errors print one readable line to stderr and exit non-zero; Ctrl-C leaves the
registry as it was (every save is atomic).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer

from ._exceptions import ConfigError, ManyfoldError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Assemble many small experts into one large model.")
experts_app = typer.Typer(no_args_is_help=True, help="List, add or remove the experts of a saved assembly.")
app.add_typer(experts_app, name="experts")

DataDir = typer.Option(None, "--data-dir", help="folder holding clinc150/ (default: $MANYFOLD_DATA, else the cache; downloads when missing)")


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


def _dataset_for(manifest: dict[str, Any], data_dir: Optional[str]) -> Any:
    from .flywheel._cli import dataset_for

    return dataset_for(manifest.get("extra") or {}, data_dir)


@app.command()
def demo(data_dir: Optional[str] = DataDir, name: str = typer.Option("clinc150", help="registry name to save under"),
         generalist: Optional[str] = typer.Option(None, help="encoder spec of the generalist (default: mpnet+e5 when installed)"),
         json_out: bool = typer.Option(False, "--json", help="print the results as one JSON object")) -> None:
    """The main job: assemble CLINC150, evaluate on test, compare with monoliths, save."""
    from ._demo import run_demo

    res = run_demo(data_dir=data_dir, name=name, generalist=generalist, log=lambda m: typer.echo(m, err=json_out))
    if json_out:
        typer.echo(json.dumps(res, indent=2, default=str))
        return
    typer.echo(f"\nCLINC150 {res['split']} split ({res['rows'][0].get('n_in_scope', 4500)} in-scope, OOS included):")
    _print_table(res["rows"])
    typer.echo(f"saved assembly {res['name']!r} version {res['version']} in {res['registry']}")
    typer.echo(f"took {res['seconds']:.1f} s; try: manyfold predict {res['name']} \"what's my account balance\"")


@app.command("assemble")
def assemble_cmd(dataset: str = typer.Argument(..., help="dataset name: clinc150, mnist or fashion-mnist"),
                 name: Optional[str] = typer.Option(None, help="registry name (default: the dataset name)"),
                 data_dir: Optional[str] = DataDir,
                 encoder: str = typer.Option("minilm", help="encoder spec of the experts"),
                 generalist: Optional[str] = typer.Option(None, help="encoder spec of the generalist, or 'none'"),
                 router: str = typer.Option("linear", help="linear, centroid or knn"),
                 domains: Optional[str] = typer.Option(None, help="comma-separated domains to build experts for"),
                 generalist_domains: str = typer.Option("experts", help="train the generalist on the experts' domains "
                                                        "('experts') or on every domain ('all')"),
                 top_k: int = typer.Option(2, help="experts consulted per item")) -> None:
    """Build an assembly from a dataset and save it in the registry."""
    from ._build import assemble
    from ._config import AssemblyConfig
    from ._demo import pick_generalist_encoder
    from ._registry import Registry
    from .data import load_dataset

    ds = load_dataset(dataset, data_dir)
    gen_spec = None
    if generalist != "none":
        gen_spec, note = pick_generalist_encoder(generalist)
        if note:
            typer.echo(f"note: {note}", err=True)
    chosen = [d.strip() for d in domains.split(",") if d.strip()] if domains else None
    asm = assemble(ds, encoder=encoder, generalist=gen_spec, router=router, domains=chosen,
                   generalist_domains=generalist_domains, config=AssemblyConfig(top_k=top_k), show_progress=True)
    reg = Registry()
    v = reg.save(asm, name or dataset, extra={"dataset": dataset, "data_dir": data_dir, "domains": chosen or list(ds.domains)})
    typer.echo(f"saved assembly {name or dataset!r} version {v} ({len(asm.experts)} experts) in {reg.root}")
    typer.echo(json.dumps(asm.calibration_))


@app.command()
def evaluate(name: str, split: str = typer.Option("test", help="train, val or test"), data_dir: Optional[str] = DataDir,
             no_escalate: bool = typer.Option(False, "--no-escalate", help="never consult the generalist"),
             version: Optional[int] = typer.Option(None, help="registry version (default: latest)"),
             json_out: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Evaluate a saved assembly on a dataset split."""
    from ._build import evaluate as run_eval
    from ._registry import Registry

    reg = Registry()
    asm = reg.load(name, version)
    ds = _dataset_for(asm.manifest_, data_dir)
    s = ds.split(split)
    rep = run_eval(asm, s.items, s.labels, escalate=not no_escalate)
    if json_out:
        typer.echo(json.dumps(rep))
    else:
        for k, v in rep.items():
            typer.echo(f"{k:28s} {v:.4f}" if isinstance(v, float) else f"{k:28s} {v}")


@app.command()
def predict(name: str, text: list[str] = typer.Argument(..., help="one or more texts"),
            json_out: bool = typer.Option(False, "--json", help="print JSON"),
            no_escalate: bool = typer.Option(False, "--no-escalate", help="never consult the generalist")) -> None:
    """Predict the label of one or more texts with a saved assembly."""
    from ._registry import Registry

    asm = Registry().load(name)
    preds = asm.predict(list(text), escalate=not no_escalate)
    if json_out:
        typer.echo(json.dumps([p.to_dict() for p in preds] if len(preds) > 1 else preds[0].to_dict()))
        return
    for t, p in zip(text, preds):
        esc = f", escalated ({p.reason})" if p.escalated else ""
        typer.echo(f"{p.label}  (confidence {p.confidence:.3f}, experts {', '.join(p.experts)}{esc})  <- {t[:60]!r}")


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json")) -> None:
    """List the saved assemblies."""
    from ._registry import Registry

    rows = Registry().list()
    if json_out:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no assemblies yet: run `manyfold demo` or `manyfold assemble clinc150`")
    for r in rows:
        typer.echo(f"{r['name']}  v{r.get('version')}  {len(r.get('experts', []))} experts  encoder={r.get('encoder')}  generalist={r.get('generalist')}")


@experts_app.command("list")
def experts_list(name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """The experts of a saved assembly with their cards."""
    from ._registry import Registry

    asm = Registry().load(name)
    cards = [e.card_.to_dict() for e in asm.experts]
    if json_out:
        typer.echo(json.dumps(cards))
        return
    for c in cards:
        acc = c["metrics"].get("val_accuracy")
        typer.echo(f"{c['name']:24s} {len(c['labels']):4d} labels  {c['size']:8d} params  val acc {acc if acc is None else f'{acc:.3f}'}  {c['lineage'].get('source')}")


@experts_app.command("add")
def experts_add(name: str, expert: str = typer.Argument(..., help="name of the new expert"),
                domain: str = typer.Option(..., help="the dataset domain whose labels it owns"),
                kind: str = typer.Option("linear", help="linear or mlp"), data_dir: Optional[str] = DataDir,
                from_generalist: bool = typer.Option(False, "--from-generalist",
                                                     help="learn only from the generalist's labels of --pool (no labelled data)"),
                pool: Optional[str] = typer.Option(None, help="unlabelled items for --from-generalist (JSONL or text)"),
                min_confidence: float = typer.Option(0.9, help="with --from-generalist: keep labels at or above this probability")) -> None:
    """Train one new expert and refit only the router; the other experts' files stay as they are."""
    from ._registry import Registry
    from .experts import HeadExpert

    if from_generalist != (pool is not None):
        raise ConfigError("--from-generalist and --pool go together: the generalist labels the pool")
    if from_generalist:
        from .flywheel import add_from_teacher_main

        add_from_teacher_main(name, expert, domain, pool, min_confidence, None, kind=kind, data_dir=data_dir,
                              echo=typer.echo)
        return
    from .flywheel._cli import dataset_for_new_expert

    reg = Registry()
    asm = reg.load(name)
    ds = dataset_for_new_expert(asm, name, expert, domain, data_dir)
    tr, va = ds.split("train"), ds.split("val")
    asm.add_expert(HeadExpert(expert, kind=kind, domain=domain), tr.items, tr.labels, va.items, va.labels,
                   labels=ds.labels_of(domain))
    extra = dict(asm.manifest_.get("extra") or {})
    extra["domains"] = sorted(set(extra.get("domains", [])) | {domain})
    v = reg.save(asm, name, note=f"added expert {expert}", extra=extra)
    typer.echo(f"added expert {expert!r} ({len(ds.labels_of(domain))} labels); saved {name!r} version {v}")


@experts_app.command("remove")
def experts_remove(name: str, expert: str, data_dir: Optional[str] = DataDir) -> None:
    """Remove one expert and refit the router over the others."""
    from ._registry import Registry

    reg = Registry()
    asm = reg.load(name)
    asm.expert(expert)  # an unknown name fails here, before any data is read
    ds = _dataset_for(asm.manifest_, data_dir)
    tr, va = ds.split("train"), ds.split("val")
    asm.remove_expert(expert, tr.items, tr.labels, va.items, va.labels)
    v = reg.save(asm, name, note=f"removed expert {expert}", extra=asm.manifest_.get("extra"))
    typer.echo(f"removed expert {expert!r}; saved {name!r} version {v}")


@app.command()
def serve(name: str = typer.Argument(..., help="registry name of the assembly"),
          host: str = typer.Option("127.0.0.1", help="address to bind"), port: int = typer.Option(8000, help="port"),
          threads: Optional[int] = typer.Option(None, help="torch threads for the model (default: torch's choice)"),
          request_log: Optional[str] = typer.Option(None, "--request-log",
                                                    help="append every answered request to this JSONL file (a pool for distill)"),
          generalist_stage: bool = typer.Option(True, "--generalist-stage/--one-stage",
                                                help="escalated items wait for the generalist in a stage of their own "
                                                     "(the others are answered at once); --one-stage waits for the whole batch"),
          ray: bool = typer.Option(False, "--ray", help="deploy on Ray Serve (needs manyfold[ray])")) -> None:
    """Serve a saved assembly over HTTP (FastAPI + uvicorn, or Ray Serve with --ray)."""
    from .serve import serve_main

    serve_main(name, host, port, None, ray=ray, threads=threads, request_log=request_log,
               generalist_stage=generalist_stage)


@app.command("distill")
def distill_cmd(name: str = typer.Argument(..., help="registry name of the assembly"),
                pool: str = typer.Option(..., help='unlabelled items: JSONL ({"text"|"item"|"items"} per line) or text, one per line'),
                min_confidence: float = typer.Option(0.9, help="keep the generalist's labels at or above this probability"),
                data_dir: Optional[str] = DataDir,
                dataset: Optional[str] = typer.Option(None, help="dataset the experts were trained on (default: the manifest's)"),
                version: Optional[int] = typer.Option(None, help="registry version to start from (default: latest)"),
                tune_budget: bool = typer.Option(False, "--tune-budget", help="lower the escalation budget as far as validation accuracy allows")) -> None:
    """One big -> small distillation round: the generalist labels --pool, the experts learn from it; saves a new version."""
    from .flywheel import distill_main

    distill_main(name, pool, min_confidence, None, dataset=dataset, data_dir=data_dir, version=version,
                 tune_budget=tune_budget, echo=typer.echo)


@app.command("fold")
def fold_cmd(name: str = typer.Argument(..., help="registry name of the assembly"),
             into: Optional[str] = typer.Option(None, "--into", help="registry name of the folded model (default: NAME-folded)"),
             kind: str = typer.Option("linear", help="linear or mlp head"), data_dir: Optional[str] = DataDir) -> None:
    """Small -> big: fold the experts (and the generalist's answers) into one head; saves it as an assembly."""
    from .flywheel import fold_main

    fold_main(name, into, None, kind=kind, data_dir=data_dir, echo=typer.echo)


@app.command()
def bench(dataset: str = typer.Argument("clinc150", help="dataset name"),
          quick: bool = typer.Option(False, "--quick", help="a subset and fewer repeats"),
          data_dir: Optional[str] = DataDir,
          out_dir: str = typer.Option("benchmarks/results", "--out-dir", help="where the report files go")) -> None:
    """Benchmark the assembly against monoliths and peer routers; writes a report and plots."""
    from .bench import bench_main

    bench_main(dataset=dataset, quick=quick, data_dir=data_dir, out_dir=out_dir)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: one readable line and a non-zero exit on any manyfold error or Ctrl-C."""
    try:
        app(args=argv, standalone_mode=False)
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
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted: nothing was saved (the registry is unchanged)", err=True)
            sys.exit(130)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
