"""Expert packages from the command line: pack, inspect, install (and refusals), and a federated assembly."""

from __future__ import annotations

import csv
import zipfile

import manyfold
from test_images_cli import run

FAST = ["--encoder", "hashing:dim=256", "--generalist", "none"]


def _write(split, path):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(split.items, split.labels.tolist()))
    return path


def test_pack_inspect_install_and_federate(tmp_path, capsys):
    code, _, err = run(capsys, "assemble", "examples/support.csv", "--name", "all", *FAST)
    assert code == 0, err
    for d in ("account", "billing", "orders", "technical"):
        code, out, err = run(capsys, "experts", "pack", "all", d, "-o", tmp_path / "pk" / f"{d}.mfx", "--creator", "owner")
        assert code == 0, err
    code, out, err = run(capsys, "experts", "inspect", tmp_path / "pk" / "billing.mfx")
    assert code == 0 and "billing" in out and "refund_request" in out, err

    # a three-expert assembly gets the fourth as a package: only the router is refitted
    code, _, err = run(capsys, "assemble", "examples/support.csv", "--name", "three", "--domains",
                       "account,orders,technical", *FAST)
    assert code == 0, err
    reg = manyfold.Registry()
    before = {e["name"]: e["ref"] for e in reg.manifest("three")["experts"]}
    code, out, err = run(capsys, "experts", "install", "three", tmp_path / "pk" / "billing.mfx")
    assert code == 0 and "installed 'billing'" in out, err
    m = reg.manifest("three")
    after = {e["name"]: e["ref"] for e in m["experts"]}
    assert {k: after[k] for k in before} == before and "billing" in after
    assert set(m["summaries"]) == {"account", "billing", "orders", "technical"}
    assert m["packages"]["billing"]["creator"] == "owner"
    n_versions = len(reg.versions("three"))
    # the same package again, and a tampered one: one line, exit 2, nothing written
    code, _, err = run(capsys, "experts", "install", "three", tmp_path / "pk" / "billing.mfx")
    assert code == 2 and "already in 'three'" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "evil.mfx"
    with zipfile.ZipFile(tmp_path / "pk" / "orders.mfx") as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        dst.writestr("../../x", b"boo")
    code, _, err = run(capsys, "experts", "install", "three", bad)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert len(reg.versions("three")) == n_versions
    # uninstalling is one command, and needs no training data now that every expert has a summary
    code, _, err = run(capsys, "experts", "remove", "three", "billing")
    assert code == 0, err

    # federated: the assembler holds only validation (and test) data and the four packages
    ds = manyfold.load_dataset("examples/support.csv")
    folder = tmp_path / "assembler"
    folder.mkdir()
    _write(ds.split("val"), folder / "val.csv")
    test = _write(ds.split("test"), tmp_path / "test.csv")
    code, out, err = run(capsys, "assemble", folder, "--from-packages", tmp_path / "pk", "--name", "fed")
    assert code == 0 and "4 expert packages verified" in out, err
    accs = {}
    for name in ("fed", "all"):  # the federated assembly against the central one, on the same test file
        code, out, err = run(capsys, "evaluate", name, "--data", test)
        assert code == 0, err
        accs[name] = float([ln for ln in out.splitlines() if ln.startswith("in_scope_accuracy_closed")][0].split()[-1])
    assert accs["fed"] >= accs["all"] - 0.05, accs
