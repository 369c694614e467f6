"""The command line on users' own data (issue 10): assemble from any labelled file or folder, then every command
that needs the data finds it through the manifest's dataset reference.

In-process through ``manyfold._cli.main`` with no-model hashing encoders and tiny files written per test (plus
the repository's ``examples/*.csv``), so each test takes about a second. Every failure is checked to be exit 2,
one readable line, and no new manifest in the registry.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import manyfold
from manyfold._cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["--encoder", "hashing:dim=256", "--generalist", "hashing:dim=512"]
OUT_FIELDS = {"text", "label", "confidence", "escalated", "reason", "experts", "oos_score"}

# four labels in two domains, eight rows each, and six out-of-scope rows labelled "oos" (the auto rule finds it)
ROWS = {
    ("refund", "billing"): ["refund my money", "i want a refund", "money back for the charge", "refund the last payment",
                            "please refund me", "refund request for my order", "give me a refund now", "need my money refunded"],
    ("invoice", "billing"): ["send me the invoice", "where is my invoice", "invoice for last month", "download invoice pdf",
                             "i need an invoice copy", "invoice missing vat number", "email the invoice again", "invoice please"],
    ("password", "account"): ["reset my password", "forgot password", "password does not work", "change the password",
                              "password reset link", "new password please", "password expired today", "lost my password"],
    ("email", "account"): ["change my email address", "update email", "email address is wrong", "new email for login",
                           "switch my email", "email change request", "use another email", "replace the email address"],
    ("oos", ""): ["what is the weather", "tell me a joke", "who won the match", "play some music", "how tall is everest",
                  "recipe for pancakes"],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _csv(path: Path, header: str = "text,label,domain", rows: dict | None = None) -> Path:
    lines = [header]
    for (label, domain), texts in (ROWS if rows is None else rows).items():
        lines += [f"{t},{label},{domain}" for t in texts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _manifests() -> list[str]:
    root = Path(os.environ["MANYFOLD_HOME"]) / "registry" / "assemblies"
    return sorted(str(p.relative_to(root)) for p in root.rglob("v*.json")) if root.is_dir() else []


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``manyfold ARGS`` in-process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def fails(capsys, *args: str) -> str:
    """Run a command that must fail: exit 2, exactly one ``error:`` line, nothing new in the registry."""
    before = _manifests()
    code, out, err = cli(capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert _manifests() == before
    return lines[0]


def ok(capsys, *args: str) -> str:
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    return out


def _manifest(name: str) -> dict:
    return manyfold.Registry().manifest(name)


# -- assemble ----------------------------------------------------------------------------------------


def test_assemble_csv_default_columns_then_evaluate_and_list(tmp_path, capsys):
    data = _csv(tmp_path / "my tickets.csv")
    out = ok(capsys, "assemble", data, *FAST)
    # the name comes from the file stem made valid; the summary names experts, grouping, calibration and the save
    assert "saved assembly 'my_tickets' version 1" in out
    assert "grouping: dataset domains, 2 experts (given)" in out
    assert "account" in out and "billing" in out and "out-of-scope label 'oos'" in out
    assert "calibration: objective knee; escalation budget" in out and "out-of-scope learnt from" in out
    m = _manifest("my_tickets")
    assert m["dataset"]["kind"] == "files" and m["dataset"]["path"] == os.path.abspath(data)
    assert m["dataset"]["oos_label"] == "oos" and m["grouping"]["method"] == "dataset domains"
    # the data's "oos" is the assembly's out_of_scope: counted as out-of-scope items, not as unknown labels
    rep = json.loads(ok(capsys, "evaluate", "my_tickets", "--json"))
    assert rep["n_in_scope"] == 4 * 2 and rep["n_oos"] == 1 and rep["n_unknown_as_oos"] == 0
    assert rep["in_scope_accuracy"] is not None and rep["oos_recall"] is not None
    val = json.loads(ok(capsys, "evaluate", "my_tickets", "--split", "val", "--json"))
    assert val["n_in_scope"] == 4 and val["n_oos"] == 1
    assert "valid splits: 'train', 'val', 'test'" in fails(capsys, "evaluate", "my_tickets", "--split", "dev")
    listed = ok(capsys, "list")
    assert "my_tickets  v1  2 experts" in listed and f"data={os.path.abspath(data)}" in listed


def test_assemble_with_column_mapping_and_automatic_grouping(capsys):
    out = ok(capsys, "assemble", EXAMPLES / "helpdesk_tickets.csv", "--text-col", "message", "--label-col", "topic",
             "--name", "help", "--encoder", "hashing:dim=256", "--generalist", "none")
    assert "no generalist: never escalates" in out and "spherical-kmeans" in out
    m = _manifest("help")
    assert m["dataset"]["columns"] == {"text": "message", "label": "topic", "domain": None}
    assert m["grouping"]["chosen"] == "auto" and m["generalist"] is None
    listed = ok(capsys, "experts", "list", "help")
    assert "grouping: spherical-kmeans on label centroids" in listed and "(number chosen from the data" in listed
    owned = sorted(lab for e in json.loads(ok(capsys, "experts", "list", "help", "--json")) for lab in e["labels"])
    assert owned == sorted({"laptop_request", "vpn", "email", "printer", "software_install", "wifi", "password_reset",
                            "meeting_room_av", "shared_drive_access"})
    # every expert line shows its labels
    for e in json.loads(ok(capsys, "experts", "list", "help", "--json")):
        assert e["labels"][0] in listed


def test_assemble_without_domains_into_n_experts(tmp_path, capsys):
    data = _csv(tmp_path / "t.csv")
    out = ok(capsys, "assemble", data, "--domain-col", "", "--experts", "3", "--oos-label", "oos", *FAST)
    assert "3 experts; grouping: spherical-kmeans on label centroids, 3 experts (given)" in out
    m = _manifest("t")
    assert m["dataset"]["columns"]["domain"] is None and m["grouping"]["n_experts"] == 3
    assert "3 experts (given)" in ok(capsys, "experts", "list", "t")


def test_assemble_from_a_folder(tmp_path, capsys):
    folder = tmp_path / "intents"
    folder.mkdir()
    rows = [{"utterance": t, "intent": lab} for (lab, _), texts in ROWS.items() if lab != "oos" for t in texts]
    _jsonl(folder / "train.jsonl", rows[::2] + rows[1::4])
    _jsonl(folder / "test.jsonl", rows[3::4] + [{"utterance": "sing me a song", "intent": "oos"}])
    out = ok(capsys, "assemble", folder, *FAST, "--objective", "budget", "--max-escalation-rate", "0.2")
    assert "saved assembly 'intents' version 1" in out and "objective budget" in out
    ref = _manifest("intents")["dataset"]
    assert set(ref["files"]) == {"train", "test"} and ref["columns"]["text"] == "utterance"
    assert _manifest("intents")["config"]["max_escalation_rate"] == 0.2
    rep = json.loads(ok(capsys, "evaluate", "intents", "--json"))
    assert rep["n_in_scope"] == len(rows[3::4]) and rep["n_oos"] == 1


def test_assemble_with_an_expert_map(tmp_path, capsys):
    data = _csv(tmp_path / "t.csv")
    emap = tmp_path / "map.csv"
    emap.write_text("label,expert\nrefund,money\ninvoice,money\npassword,login help\nemail,login help\n")
    out = ok(capsys, "assemble", data, "--expert-map", emap, "--name", "mapped", *FAST)
    assert "grouping: label -> expert map, 2 experts (given)" in out
    experts = {e["name"]: sorted(e["labels"]) for e in json.loads(ok(capsys, "experts", "list", "mapped", "--json"))}
    assert experts == {"money": ["invoice", "refund"], "login help": ["email", "password"]}
    # a map that misses a label is refused before anything is encoded
    emap.write_text("label,expert\nrefund,money\n")
    assert "no expert for 3 labels" in fails(capsys, "assemble", data, "--expert-map", emap, "--name", "m2", *FAST)


# -- evaluate --data, predict ------------------------------------------------------------------------


@pytest.fixture()
def built(tmp_path, capsys) -> Path:
    """An assembly 't' from a tiny CSV in tmp_path (returns the CSV's path)."""
    data = _csv(tmp_path / "t.csv")
    ok(capsys, "assemble", data, *FAST)
    return data


def test_evaluate_any_labelled_file(built, tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("q,y\nrefund my money please,refund\nforgot my password,password\nhello there,greeting\n"
                     "is it raining,oos\n")
    rep = json.loads(ok(capsys, "evaluate", "t", "--data", other, "--text-col", "q", "--label-col", "y", "--json"))
    assert rep["n_in_scope"] == 2 and rep["n_oos"] == 2 and rep["n_unknown_as_oos"] == 1
    assert rep["unknown_labels"] == ["greeting"]
    # only out-of-scope rows: the in-scope figures cannot be measured and say why
    only = tmp_path / "only.csv"
    only.write_text("text,label\nwhat is the time,oos\nplay jazz,out_of_scope_thing\n")
    out = ok(capsys, "evaluate", "t", "--data", only)
    assert "in_scope_accuracy            n/a (the data has no in-scope items)" in out
    assert "1 item had labels the assembly does not know (out_of_scope_thing); they were counted as out-of-scope" in out
    assert "has no text column" in fails(capsys, "evaluate", "t", "--data", other)
    assert "--text-col goes with --data FILE" in fails(capsys, "evaluate", "t", "--text-col", "q")
    assert "no such file" in fails(capsys, "evaluate", "t", "--data", tmp_path / "missing.csv")


def test_predict_texts_and_files(built, tmp_path, capsys):
    out = ok(capsys, "predict", "t", "please refund my money", "reset my password")
    assert out.splitlines()[0].startswith("refund") and out.splitlines()[1].startswith("password")
    assert json.loads(ok(capsys, "predict", "t", "invoice please", "--json"))["label"] == "invoice"
    src = _jsonl(tmp_path / "in.jsonl", [{"text": t, "id": i} for i, t in
                                         enumerate(["refund please", "lost my password", "invoice copy", "new email", "joke"])])
    dest = tmp_path / "out" / "pred.jsonl"
    code, out, err = cli(capsys, "predict", "t", "--input", src, "--output", dest, "--batch-size", "2")
    assert code == 0, err
    assert "item/s" in err and "5/5" in err  # one progress bar over the whole file
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["refund please", "lost my password", "invoice copy", "new email", "joke"]
    assert all(set(r) == OUT_FIELDS for r in rows) and rows[0]["label"] == "refund"
    assert os.listdir(dest.parent) == ["pred.jsonl"]  # no temp file left beside it
    txt = tmp_path / "in.txt"
    txt.write_text("refund please\n\nforgot password\n")
    ok(capsys, "predict", "t", "--input", txt, "--output", tmp_path / "p2.jsonl")
    assert [json.loads(x)["text"] for x in (tmp_path / "p2.jsonl").read_text().splitlines()] == ["refund please", "forgot password"]
    assert "not both" in fails(capsys, "predict", "t", "hello", "--input", src, "--output", dest)
    assert "nothing to predict" in fails(capsys, "predict", "t")
    assert "--input needs --output" in fails(capsys, "predict", "t", "--input", src)
    long = _jsonl(tmp_path / "long.jsonl", [{"text": "ok"}, {"text": "x" * 5000}])
    assert "row 2 (line 2)" in fails(capsys, "predict", "t", "--input", long, "--output", tmp_path / "never.jsonl")
    assert not (tmp_path / "never.jsonl").exists()


def test_predict_file_interrupted_leaves_no_half_file(built, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.txt"
    src.write_text("refund\ninvoice\npassword\nemail\n")
    real = manyfold.Assembly.predict
    calls = []

    def flaky(self, items, **kw):
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, items, **kw)

    monkeypatch.setattr(manyfold.Assembly, "predict", flaky)
    dest = tmp_path / "pred.jsonl"
    code, _, err = cli(capsys, "predict", "t", "--input", src, "--output", dest, "--batch-size", "2")
    assert code == 130 and "interrupted" in err
    assert calls == [2, 2] and sorted(os.listdir(tmp_path)) == ["in.txt", "t.csv"]


# -- commands that refit read the data through the manifest's reference ------------------------------


def test_experts_add_remove_read_the_file_through_the_reference(tmp_path, capsys):
    data = tmp_path / "support.csv"
    data.write_bytes((EXAMPLES / "support.csv").read_bytes())
    ok(capsys, "assemble", data, "--domains", "billing,account,technical", "--name", "sup", "--encoder", "hashing:dim=256",
       "--generalist", "none")
    ref = _manifest("sup")["dataset"]
    out = ok(capsys, "experts", "add", "sup", "orders", "--domain", "orders")
    assert "added expert 'orders' (3 labels: change_delivery_address, damaged_item, track_order)" in out
    m = _manifest("sup")
    assert m["version"] == 2 and m["dataset"] == ref and "orders" in [e["name"] for e in m["experts"]]
    assert "version 3" in ok(capsys, "experts", "remove", "sup", "billing")
    assert _manifest("sup")["dataset"] == ref
    assert "unknown domain 'nope'; valid choices: account, billing, orders, technical" in fails(
        capsys, "experts", "add", "sup", "x", "--domain", "nope")
    # the reference is the file: once it is gone, every refit says so (and writes nothing)
    data.rename(tmp_path / "moved.csv")
    line = fails(capsys, "experts", "add", "sup", "billing", "--domain", "billing")
    assert str(data) in line and "is missing" in line
    assert str(data) in fails(capsys, "experts", "remove", "sup", "orders")


def test_fold_and_distill_on_a_file_built_assembly(built, tmp_path, capsys):
    pool = tmp_path / "pool.txt"
    pool.write_text("refund it\nmy invoice\nreset password\nchange email\n")
    assert "t v1 -> v2: round 1" in ok(capsys, "distill", "t", "--pool", pool, "--min-confidence", "0.0")
    assert _manifest("t")["dataset"]["path"] == str(built)
    assert "saved 't-folded' version 1" in ok(capsys, "fold", "t")
    assert _manifest("t-folded")["dataset"]["path"] == str(built)  # the folded model knows its data too
    rep = json.loads(ok(capsys, "evaluate", "t-folded", "--json"))
    assert rep["n_in_scope"] == 8 and rep["n_unknown_as_oos"] == 0


def test_a_manifest_without_a_reference_says_which_option_to_pass(built, capsys):
    reg = manyfold.Registry()
    asm = reg.load("t")
    asm.provenance_ = {"dataset": None, "grouping": None}
    reg.save(asm, "bare")
    assert "pass --data FILE" in fails(capsys, "evaluate", "bare")
    assert "pass --dataset" in fails(capsys, "experts", "remove", "bare", "billing")
    # an explicit --dataset still works
    assert "removed expert 'billing'" in ok(capsys, "experts", "remove", "bare", "billing", "--dataset", built)
    assert "grouping: not recorded" in ok(capsys, "experts", "list", "bare")


# -- one failure each: exit 2, one line naming the problem, nothing written ----------------------------


def test_error_file_does_not_exist(tmp_path, capsys):
    line = fails(capsys, "assemble", tmp_path / "nope.csv", *FAST)
    assert "nope.csv" in line and "no such file or folder" in line and "clinc150, mnist, fashion-mnist" in line


def test_error_unknown_format(tmp_path, capsys):
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04")
    line = fails(capsys, "assemble", tmp_path / "data.xlsx", *FAST)
    assert "unknown file type '.xlsx'" in line and ".csv" in line


def test_error_missing_column(tmp_path, capsys):
    line = fails(capsys, "assemble", _csv(tmp_path / "t.csv"), "--text-col", "body", *FAST)
    assert "no text column 'body'" in line and "'text', 'label', 'domain'" in line


def test_error_empty_label(tmp_path, capsys):
    p = _csv(tmp_path / "t.csv")
    p.write_text(p.read_text() + "a row without a label,,billing\n")
    line = fails(capsys, "assemble", p, *FAST)
    assert "empty label in column 'label'" in line and "row 39" in line


def test_error_label_with_one_example(tmp_path, capsys):
    p = _csv(tmp_path / "t.csv")
    p.write_text(p.read_text() + "ship it to mars,rocket,orders\n")
    line = fails(capsys, "assemble", p, *FAST)
    assert "label 'rocket' has 1 example" in line


def test_error_file_with_no_rows(tmp_path, capsys):
    p = tmp_path / "t.csv"
    p.write_text("text,label\n")
    assert "has no data rows" in fails(capsys, "assemble", p, *FAST)


def test_error_mixed_types_in_the_text_column(tmp_path, capsys):
    p = _jsonl(tmp_path / "t.jsonl", [{"text": "hello", "label": "a"}, {"text": 42, "label": "a"}])
    line = fails(capsys, "assemble", p, *FAST)
    assert "row 2 (line 2)" in line and "int 42" in line and "mixed types" in line


def test_error_changed_file_under_a_saved_assembly(built, capsys):
    built.write_text(built.read_text().replace("refund my money", "refund my cash"))
    line = fails(capsys, "evaluate", "t")
    assert str(built) in line and "has changed since the assembly was built" in line


def test_error_text_options_on_an_image_dataset(capsys):
    # the image built-ins are offered now that image assemblies work (tests/test_images_cli.py builds one)
    assert "fashion-mnist" in ok(capsys, "assemble", "--help")
    line = fails(capsys, "assemble", "mnist", "--text-col", "x", *FAST)
    assert "--text-col" in line and "mnist" in line


def test_error_builtin_with_file_options_and_bad_names(tmp_path, capsys):
    assert "--text-col applies to data files" in fails(capsys, "assemble", "clinc150", "--text-col", "x")
    assert "invalid assembly name" in fails(capsys, "assemble", _csv(tmp_path / "t.csv"), "--name", "a/b", *FAST)
    assert "target_accuracy" in fails(capsys, "assemble", tmp_path / "t.csv", "--objective", "accuracy", *FAST)


# -- serve -------------------------------------------------------------------------------------------


def test_serve_an_assembly_built_from_support_csv(capsys):
    from fastapi.testclient import TestClient

    from manyfold.serve import ServeConfig, create_app

    ok(capsys, "assemble", EXAMPLES / "support.csv", *FAST)
    auth = {"Authorization": "Bearer tok"}
    with TestClient(create_app(ServeConfig(assembly="support", admin_token="tok"))) as c:
        for _ in range(100):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        r = c.post("/v1/predict", json={"items": ["I want my money back for the annual plan", "my app keeps crashing"]})
        assert r.status_code == 200, r.text
        labels = [p["label"] for p in r.json()["predictions"]]
        assert labels == ["refund_request", "app_crash"]
        # removing an expert refits the router on the data the manifest names (no ServeConfig.dataset given)
        r = c.delete("/v1/experts/orders", headers=auth)
        assert r.status_code == 200, r.text
        assert "orders" not in r.json()["experts"] and r.json()["version"] == 2
    assert _manifest("support")["dataset"]["path"] == str(EXAMPLES / "support.csv")
