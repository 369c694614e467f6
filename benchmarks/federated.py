"""Experts from anywhere on CLINC150: federated vs central, and installing one package (issue 12).

    python benchmarks/federated.py --data-dir ../shared/data [--parts all|install]

* Federated: ten owners, one per domain, each train its expert on their own share of the train
  split (MiniLM vectors) and pack it (`manyfold.packages.pack_expert`: card, weights, routing
  summary of at most 10 prototypes per label). The assembler is a separate process
  (`manyfold assemble DIR --from-packages PKGS`) whose data folder holds only val.csv and
  test.csv: no train split, no out-of-scope train items. Experts only (no generalist) on both
  sides; the central assembly is `manyfold.assemble(clinc150, generalist=None)` on the same encoder.
* Install: a central assembly of nine domains (its experts summarised at assemble time, saved, loaded
  back from the registry) gets the tenth as a package with no training data (`read_package`,
  `Assembly.install`, the registry save): seconds per stage, the other experts' files byte for byte,
  the same package twice.

Writes benchmarks/results/federated.{json,md}; `--parts install` runs the install part alone (one package
built for it) and writes benchmarks/results/federated_install.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402

import manyfold  # noqa: E402
from manyfold import HeadExpert, Registry, assemble, load_dataset  # noqa: E402
from manyfold.encoders import cached_encoder, get_encoder  # noqa: E402
from manyfold.packages import pack_expert, read_package  # noqa: E402

OOS = "out_of_scope"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_csv(split, path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(split.items, ["oos" if v == OOS else v for v in split.labels.tolist()]))
    return path


def owner_packages(ds, enc, out: Path, domains=None) -> dict[str, dict]:
    """Each domain's owner: its own share of train, its expert, its package. Nothing else leaves."""
    tr, va = ds.split("train"), ds.split("val")
    info = {}
    for d in ds.domains if domains is None else domains:
        labs = ds.labels_of(d)
        m, mv = np.isin(tr.labels, labs), np.isin(va.labels, labs)
        X = enc.encode([tr.items[i] for i in np.nonzero(m)[0]])
        e = HeadExpert(d, domain=d).fit(X, tr.labels[m], X_val=enc.encode([va.items[i] for i in np.nonzero(mv)[0]]),
                                        y_val=va.labels[mv])
        path = pack_expert(e, encoder_id=enc.id, encoder_spec=enc.spec, encoder_dim=enc.dim, modality="text", X=X,
                           y=tr.labels[m], out_path=out / f"{d}.mfx", creator=f"owner of {d}")
        pkg = read_package(path)
        s = pkg.summary
        per_label = np.bincount(s.label_index, minlength=len(s.labels))
        rows = {r.tobytes() for r in np.asarray(X, np.float32)}
        info[d] = {"bytes": path.stat().st_size, "prototypes": int(s.n_prototypes), "max_per_label": int(per_label.max()),
                   "labels": len(s.labels), "items": int(m.sum()),
                   "any_item_vector_in_summary": any(np.asarray(p, np.float32).tobytes() in rows for p in s.prototypes)}
    return info


def install_part(ds, package_path: Path, tmp: Path) -> dict:
    """Nine domains assembled here, saved and loaded back; the tenth installed from its package, saved again."""
    va = ds.split("val")
    last = ds.domains[-1]
    reg = Registry(tmp / "reg")
    t0 = time.perf_counter()
    nine = assemble(ds, generalist=None, domains=ds.domains[:-1])
    fit = {"assemble_seconds": round(time.perf_counter() - t0, 2),
           "summaries_seconds_at_assemble": nine.fit_times_["summaries"],
           "summaries": len(nine.summaries_), "prototypes": sum(s.n_prototypes for s in nine.summaries_.values())}
    reg.save(nine, "nine")
    t0 = time.perf_counter()
    nine = reg.load("nine")
    fit["load_seconds"] = round(time.perf_counter() - t0, 3)
    fit["summaries_after_load"] = len(getattr(nine, "summaries_", None) or {})
    log(f"nine experts: {fit}")
    before = {e["name"]: e["ref"] for e in reg.manifest("nine")["experts"]}
    digests = {ref: {f: hashlib.sha256((reg.root / "objects" / ref / f).read_bytes()).hexdigest()
                     for f in ("state.json", "arrays.safetensors")} for ref in before.values()}
    val_items, val_labels = list(va.items), va.labels
    c0, t0 = time.process_time(), time.perf_counter()
    pkg = read_package(package_path, expected_encoder_id=nine.encoder.id, expected_modality="text")
    t1 = time.perf_counter()
    nine.install(pkg, val_items, val_labels)  # no training data at all
    t2 = time.perf_counter()
    reg.save(nine, "nine")
    t3, c3 = time.perf_counter(), time.process_time()
    ft = nine.fit_times_
    stages = {"read_package": t1 - t0, "encode_val (cached)": ft["encode"], "refit_router": ft["router"],
              "calibrate_policy": ft["calibrate"], "other": (t2 - t1) - ft["encode"] - ft["router"] - ft["calibrate"],
              "save": t3 - t2}
    after = {e["name"]: e["ref"] for e in reg.manifest("nine")["experts"]}
    same = all(after[k] == v for k, v in before.items()) and all(
        hashlib.sha256((reg.root / "objects" / ref / f).read_bytes()).hexdigest() == dg
        for ref, files in digests.items() for f, dg in files.items())
    router_before = nine.router.params_["W"].copy()
    t4 = time.perf_counter()
    try:
        nine.install(read_package(package_path), val_items, val_labels)
        twice = "accepted (wrong)"
    except manyfold.ManyfoldError as exc:
        twice = str(exc)
    refused_seconds = time.perf_counter() - t4
    unchanged = len(nine.experts) == 10 and np.array_equal(nine.router.params_["W"], router_before)
    return {"package": last, **fit, "install_seconds": round(t3 - t0, 3),
            "install_cpu_seconds": round(c3 - c0, 3), "stages_seconds": {k: round(v, 3) for k, v in stages.items()},
            "training_items_read": 0, "other_experts_byte_identical": same, "same_package_twice": twice,
            "same_package_twice_seconds": round(refused_seconds, 3), "unchanged_after_refusal": unchanged,
            "load_at_install": [round(x, 2) for x in os.getloadavg()]}


def cli(home: Path, *args: str) -> tuple[int, str, str, float]:
    env = {**os.environ, "MANYFOLD_HOME": str(home)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "manyfold._cli", *args], capture_output=True, text=True, env=env)
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", choices=("all", "install"), default="all",
                    help="install: only the install part (writes federated_install.{json,md})")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    res = {**environment(), "load_at_start": [round(x, 2) for x in os.getloadavg()]}
    ds = load_dataset("clinc150", args.data_dir)
    enc = cached_encoder(get_encoder("minilm"))
    te = ds.split("test")
    if args.parts == "install":
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "packages").mkdir()
            res["packages"] = owner_packages(ds, enc, tmp / "packages", domains=ds.domains[-1:])
            res["install"] = install_part(ds, tmp / "packages" / f"{ds.domains[-1]}.mfx", tmp)
        res["checks"] = {"install_le_5_s": res["install"]["install_seconds"] <= 5.0,
                         "other_experts_byte_identical": res["install"]["other_experts_byte_identical"],
                         "unchanged_after_refusal": res["install"]["unchanged_after_refusal"]}
        write(res, Path(args.out), "federated_install", install_lines(res))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # -- central ---------------------------------------------------------------------------
        t0 = time.perf_counter()
        central = assemble(ds, generalist=None)
        res["central"] = {"fit_seconds": round(time.perf_counter() - t0, 2),
                          **{k: central.evaluate(list(te.items), te.labels)[k] for k in
                             ("in_scope_accuracy_closed", "in_scope_accuracy", "oos_auroc", "oos_recall", "routing_accuracy")}}
        log(f"central: {res['central']}")
        # -- owners ----------------------------------------------------------------------------
        pk = tmp / "packages"
        pk.mkdir()
        res["packages"] = owner_packages(ds, enc, pk)
        # -- the assembler: another process, a folder without the train split ------------------
        folder = tmp / "assembler"
        folder.mkdir()
        write_csv(ds.split("val"), folder / "val.csv")
        test_csv = write_csv(te, folder / "test.csv")
        home = tmp / "assembler_home"
        code, out, err, secs = cli(home, "assemble", str(folder), "--from-packages", str(pk), "--name", "fed")
        if code:
            raise SystemExit(f"federated assemble failed: {err}")
        code, out, err, _ = cli(home, "evaluate", "fed", "--data", str(test_csv), "--json")
        if code:
            raise SystemExit(f"federated evaluate failed: {err}")
        rep = json.loads(out.strip().splitlines()[-1])
        res["federated"] = {"assemble_seconds_cli": round(secs, 2), "assembler_files": sorted(p.name for p in folder.iterdir()),
                            **{k: rep[k] for k in ("in_scope_accuracy_closed", "in_scope_accuracy", "oos_auroc",
                                                   "oos_recall", "routing_accuracy")}}
        log(f"federated: {res['federated']}")
        c, f = res["central"], res["federated"]
        res["checks"] = {
            "closed_acc_within_0.5_points": f["in_scope_accuracy_closed"] >= c["in_scope_accuracy_closed"] - 0.005,
            "oos_auroc_within_0.01": f["oos_auroc"] >= c["oos_auroc"] - 0.01,
            "at_most_10_vectors_per_label": all(v["max_per_label"] <= 10 for v in res["packages"].values()),
            "no_item_vector_in_any_summary": not any(v["any_item_vector_in_summary"] for v in res["packages"].values()),
            "no_train_split_at_the_assembler": "train.csv" not in f["assembler_files"],
        }
        res["install"] = install_part(ds, pk / f"{ds.domains[-1]}.mfx", tmp)
        res["checks"]["install_le_5_s"] = res["install"]["install_seconds"] <= 5.0
        res["checks"]["other_experts_byte_identical"] = res["install"]["other_experts_byte_identical"]
        res["checks"]["unchanged_after_refusal"] = res["install"]["unchanged_after_refusal"]
        log(f"install: {res['install']}")
    c, f = res["central"], res["federated"]
    L = ["# Experts from anywhere: federated vs central on CLINC150, and one install", "",
         f"Command: `{res['command']}`  ", f"Date: {res['date']}; machine: {res['machine']['cores']} cores, "
         f"{res['machine']['cpu']}; load at start: {res['load_at_start']}", "",
         "Experts only on both sides (no generalist), MiniLM routing encoder, CLINC150 test split.", "",
         "| assembly | closed acc | open acc | OOS AUROC | OOS recall | routing acc |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in (("central (all train items)", c), ("federated (10 packages + val only)", f)):
        L.append(f"| {name} | {100 * r['in_scope_accuracy_closed']:.2f}% | {100 * r['in_scope_accuracy']:.2f}% | "
                 f"{r['oos_auroc']:.4f} | {100 * r['oos_recall']:.1f}% | {100 * r['routing_accuracy']:.2f}% |")
    L += ["", f"The assembler's folder held only: {', '.join(f['assembler_files'])}.", "",
          "| package | labels | items (owner's) | prototypes | max per label | size |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for d, v in res["packages"].items():
        L.append(f"| {d} | {v['labels']} | {v['items']} | {v['prototypes']} | {v['max_per_label']} | {v['bytes'] / 1024:.0f} KiB |")
    L += ["", *install_lines(res, page=False)]
    write(res, Path(args.out), "federated", L)


def install_lines(res: dict, page: bool = True) -> list[str]:
    """The install part in markdown (``page``: a whole page, when it ran alone)."""
    i = res["install"]
    L = ["# Installing one package into a nine-expert CLINC150 assembly", "",
         f"Command: `{res['command']}`  ", f"Date: {res['date']}; machine: {res['machine']['cores']} cores, "
         f"{res['machine']['cpu']}; load at start: {res['load_at_start']}", ""] if page else []
    L += [f"## Install of `{i['package']}` into the nine-expert assembly", "",
         f"The nine local experts were summarised when they were fitted ({i['summaries_seconds_at_assemble']} s of the "
         f"{i['assemble_seconds']} s assemble, {i['prototypes']} prototypes), saved with the assembly and loaded back "
         f"with it ({i['summaries_after_load']} summaries after the load). The install read no training item.", "",
         f"**{i['install_seconds']} s** wall ({i['install_cpu_seconds']} s CPU; load average at the install "
         f"{i['load_at_install']}), from reading the package to the saved new version:", "",
         "| stage | seconds |", "| --- | ---: |"]
    L += [f"| {k} | {v} |" for k, v in i["stages_seconds"].items()]
    L += ["", f"Other experts' files byte-identical: {i['other_experts_byte_identical']}. Same package twice "
          f"({i['same_package_twice_seconds']} s, assembly unchanged: {i['unchanged_after_refusal']}): "
          f"\"{i['same_package_twice']}\".", "",
          "Checks: " + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in res["checks"].items()), ""]
    return L


def write(res: dict, out_dir: Path, name: str, lines: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (out_dir / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))

if __name__ == "__main__":
    main()
