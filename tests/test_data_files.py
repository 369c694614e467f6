"""Tests of users' own data files: formats, columns, folders, splits, out-of-scope, references, errors.

Every test writes tiny files in ``tmp_path`` and checks known answers; BANKING77
comes from the shared data folder (the ``data_dir`` fixture).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from manyfold._exceptions import ConfigError, DataError, DependencyError, NotFoundError
from manyfold.data import (
    DATASETS,
    TEXT_DATASETS,
    Dataset,
    Split,
    dataset_ref,
    load_dataset,
    load_dataset_ref,
    read_label_map,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# --- helpers ---------------------------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, objs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed: pip install 'manyfold[parquet]'")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def rows_for(counts: dict[str, int], domains: dict[str, str] | None = None) -> list[list]:
    """``count`` rows per label: ``[text, label(, domain)]`` with distinct texts."""
    out = []
    for lab, n in counts.items():
        for i in range(n):
            row = [f"{lab} example {i}", lab]
            if domains is not None:
                row.append(domains.get(lab, ""))
            out.append(row)
    return out


def splits_of(ds: Dataset) -> dict[str, tuple[list, list]]:
    return {k: (list(v.items), v.labels.tolist()) for k, v in ds.splits.items()}


DOMAINS = {"pay": "体育", "refund": "体育", "hello": "small talk", "bye": "small talk"}
COUNTS = {"pay": 10, "refund": 10, "hello": 10, "bye": 10}


# --- formats and columns ---------------------------------------------------------------------------


def test_csv_defaults_non_ascii_and_spaced_domains(tmp_path):
    path = write_csv(tmp_path / "shop.csv", ["text", "label", "domain"], rows_for(COUNTS, DOMAINS))
    ds = load_dataset(path)
    relative = load_dataset(Path(os.path.relpath(path)))  # a relative path is recorded as an absolute one
    assert dataset_ref(relative)["path"] == str(path) and splits_of(relative) == splits_of(ds)
    assert ds.name == "shop" and ds.modality == "text" and ds.oos_label is None
    assert ds.split_names == ["train", "val", "test"]
    assert ds.has_domains and ds.domains == ["small talk", "体育"]
    assert ds.labels == ["bye", "hello", "pay", "refund"]
    assert ds.labels_of("体育") == ["pay", "refund"] and ds.domain_of("hello") == "small talk"
    # 10 per label: test round(10 * 0.2) = 2, val round(10 * 0.1) = 1, train 7.
    for lab in COUNTS:
        assert ds.split("train").label_counts()[lab] == 7
        assert ds.split("val").label_counts()[lab] == 1
        assert ds.split("test").label_counts()[lab] == 2
    ref = dataset_ref(ds)
    assert ref["kind"] == "files" and ref["format"] == "csv" and ref["name"] == "shop"
    assert ref["path"] == str(path) and list(ref["files"]) == ["data"]
    assert ref["columns"] == {"text": "text", "label": "label", "domain": "domain"}
    assert ref["split"] == {"val_share": 0.1, "test_share": 0.2, "seed": 0, "derived": ["val", "test"]}
    assert ref["oos_label"] is None
    json.dumps(ref)  # JSON-able


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "ndjson", "parquet"])
def test_every_format_gives_the_same_dataset(tmp_path, fmt):
    rows = rows_for(COUNTS, DOMAINS)
    rows[0][0] = 'a "quoted", comma text\twith tab' if fmt not in ("tsv",) else 'a "quoted", comma text'
    header = ["text", "label", "domain"]
    write_csv(tmp_path / "ref.csv", header, rows)
    expected = load_dataset(tmp_path / "ref.csv", name="x")
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        write_csv(path, header, rows)
    elif fmt == "tsv":
        write_csv(path, header, rows, delimiter="\t")
    elif fmt in ("jsonl", "ndjson"):
        write_jsonl(path, [dict(zip(header, r)) for r in rows])
    else:
        write_parquet(path, {h: [r[j] for r in rows] for j, h in enumerate(header)})
    ds = load_dataset(path, name="x")
    assert splits_of(ds) == splits_of(expected)
    assert ds.label_to_domain == expected.label_to_domain
    assert dataset_ref(ds)["format"] == ("jsonl" if fmt == "ndjson" else fmt)


def test_csv_bom_blank_lines_and_quoted_newlines(tmp_path):
    path = tmp_path / "bom.csv"
    body = "text,label\n" + "".join(f"t{i},a\n" for i in range(3)) + '"two\nlines",b\n\n' + "x,b\n,,\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    ds = load_dataset(path, val_share=0, test_share=0)
    assert ds.split_names == ["train"]
    assert ds.split("train").items == ["t0", "t1", "t2", "two\nlines", "x"]
    assert dataset_ref(ds)["columns"]["text"] == "text"  # the BOM is not part of the name


def test_explicit_columns_and_examples(tmp_path):
    rows = [[f"msg {i}", "vpn" if i % 2 else "printer", "ignored"] for i in range(8)]
    path = write_csv(tmp_path / "tickets.csv", ["message", "topic", "note"], rows)
    ds = load_dataset(path, text_col="message", label_col="topic", val_share=0.25, test_share=0)
    assert not ds.has_domains and ds.labels == ["printer", "vpn"]
    assert ds.split_names == ["train", "val"] and len(ds.split("val")) == 2
    assert dataset_ref(ds)["columns"] == {"text": "message", "label": "topic", "domain": None}

    support = load_dataset(EXAMPLES / "support.csv")
    assert support.has_domains and len(support.domains) == 4 and len(support.labels) == 15
    assert sum(len(s) for s in support.splits.values()) == 375
    assert all(n == 25 for n in load_dataset(EXAMPLES / "support.csv", val_share=0, test_share=0)
               .split("train").label_counts().values())
    tickets = load_dataset(EXAMPLES / "helpdesk_tickets.csv", text_col="message", label_col="topic")
    assert not tickets.has_domains and len(tickets.labels) == 9
    assert sum(len(s) for s in tickets.splits.values()) == 180


def test_default_column_names_in_order(tmp_path):
    rows = [[f"u{i}", f"q{i}", "x" if i < 3 else "y", "cat"] for i in range(6)]
    path = write_csv(tmp_path / "c.csv", ["query", "Utterance", "intent", "category"], rows)
    ds = load_dataset(path, test_share=0)
    # exact names first, in the default order (query before any case-insensitive match), then case-insensitively
    assert dataset_ref(ds)["columns"] == {"text": "query", "label": "intent", "domain": None}
    path2 = write_csv(tmp_path / "d.csv", ["Utterance", "Class"], [r[:1] + r[2:3] for r in rows])
    assert dataset_ref(load_dataset(path2, test_share=0))["columns"]["text"] == "Utterance"


def test_domain_col_empty_withholds_domains(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["text", "label", "domain"], rows_for(COUNTS, DOMAINS))
    ds = load_dataset(path, domain_col="")
    assert not ds.has_domains and ds.domains == [] and ds.label_to_domain == {}
    assert ds.labels == ["bye", "hello", "pay", "refund"]
    with pytest.raises(ConfigError, match="has no domains"):
        ds.labels_of("体育")
    with pytest.raises(ConfigError, match="has no domains"):
        ds.domain_of("pay")
    assert dataset_ref(ds)["columns"]["domain"] is None
    assert splits_of(ds) == splits_of(load_dataset(path))  # the rows and splits do not change
    renamed = write_csv(tmp_path / "r.csv", ["text", "label", "grp"], rows_for(COUNTS, DOMAINS))
    assert load_dataset(renamed, domain_col="grp").labels_of("small talk") == ["bye", "hello"]


# --- out-of-scope and labels -----------------------------------------------------------------------


def test_oos_auto_explicit_and_none(tmp_path):
    rows = rows_for({"pay": 4, "hello": 4}, DOMAINS) + [[f"weird {i}", "oos", ""] for i in range(5)]
    path = write_csv(tmp_path / "o.csv", ["text", "label", "domain"], rows)
    ds = load_dataset(path, test_share=0)
    assert ds.oos_label == "oos" and ds.labels == ["hello", "pay"] and "oos" not in ds.label_to_domain
    assert ds.domain_of("oos") is None
    # OOS rows are split like a label: 5 -> round(0.5) = 1 to val (at least one), 4 to train.
    assert ds.split("val").label_counts()["oos"] == 1 and ds.split("train").label_counts()["oos"] == 4
    assert dataset_ref(ds)["oos_label"] == "oos"

    rows2 = rows_for({"pay": 4, "none_of_these": 3})
    path2 = write_csv(tmp_path / "e.csv", ["text", "label"], rows2)
    ds2 = load_dataset(path2, oos_label="none_of_these")
    assert ds2.oos_label == "none_of_these" and ds2.labels == ["pay"]

    rows3 = rows_for({"pay": 4, "out_of_scope": 3})
    path3 = write_csv(tmp_path / "n.csv", ["text", "label"], rows3)
    assert load_dataset(path3).oos_label == "out_of_scope"
    ds3 = load_dataset(path3, oos_label=None)
    assert ds3.oos_label is None and ds3.labels == ["out_of_scope", "pay"]

    with pytest.raises(ConfigError, match="oos_label 'nope' is not a label"):
        load_dataset(path3, oos_label="nope")
    both = write_csv(tmp_path / "b.csv", ["text", "label"], rows_for({"pay": 3, "oos": 2, "out_of_scope": 2}))
    with pytest.raises(DataError, match="both 'out_of_scope' and 'oos'"):
        load_dataset(both)


def test_integer_labels(tmp_path):
    objs = [{"text": f"digit {i}", "label": i % 3} for i in range(9)]
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", objs), val_share=0.34, test_share=0)
    assert ds.labels == ["0", "1", "2"] and ds.split("train").labels.dtype.kind == "U"
    assert Split(["a", "b"], [7, np.int64(8)]).labels.tolist() == ["7", "8"]
    assert Split(["a", "b"], np.array([3, 4], dtype=np.uint8)).labels.tolist() == ["3", "4"]
    with pytest.raises(ConfigError, match="label 1 is bool"):
        Split(["a", "b"], ["x", True])
    with pytest.raises(ConfigError, match="label 0 is float"):
        Split(["a"], np.array([1.5]))
    with pytest.raises(ConfigError, match="label 2 is NoneType"):
        Split(["a", "b", "c"], np.array(["x", 1, None], dtype=object))
    with pytest.raises(DataError, match=r"row 2 \(line 2\).*holds bool"):
        load_dataset(write_jsonl(tmp_path / "b.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": True}]))


def test_dataset_without_domains_contract():
    tr = Split(["a", "b", "c"], np.array(["x", "y", "oos"]))
    te = Split(["d", "e"], np.array(["z", "x"]))
    ds = Dataset("t", {"train": tr, "test": te}, {}, oos_label="oos")
    assert not ds.has_domains and ds.domains == [] and ds.labels == ["x", "y", "z"]
    assert "without domains" in repr(ds)
    sub = ds.subset(1, seed=0)
    assert not sub.has_domains and sub.labels == ["x", "y", "z"] and len(sub.split("train")) == 3
    with pytest.raises(ConfigError, match="non-empty text"):
        Dataset("t", {"train": tr}, {"x": "", "y": "d"}, oos_label="oos")
    with_domains = Dataset("t", {"train": tr}, {"x": "d 1", "y": "ドメイン"}, oos_label="oos")
    assert with_domains.has_domains and with_domains.domains == ["d 1", "ドメイン"]
    with pytest.raises(ConfigError, match="without a domain"):
        Dataset("t", {"train": tr, "test": te}, {"x": "d", "y": "d"}, oos_label="oos")


# --- folders ---------------------------------------------------------------------------------------


def test_folder_with_val_and_test(tmp_path):
    d = tmp_path / "proj"
    d.mkdir()
    write_csv(d / "train.csv", ["text", "label"], rows_for({"a": 3, "b": 3}))
    write_csv(d / "dev.csv", ["text", "label"], [["va", "a"], ["vb", "b"]])
    write_csv(d / "test.csv", ["text", "label"], [["ta", "a"], ["tb", "b"], ["tb2", "b"]])
    write_csv(d / "notes.csv", ["whatever"], [["x"]])  # ignored
    (d / "README.md").write_text("hi")
    ds = load_dataset(d)
    assert ds.name == "proj" and ds.split_names == ["train", "val", "test"]
    assert len(ds.split("train")) == 6 and ds.split("val").items == ["va", "vb"]
    assert ds.split("test").items == ["ta", "tb", "tb2"]
    ref = dataset_ref(ds)
    assert ref["path"] == str(d) and set(ref["files"]) == {"train", "val", "test"}
    assert ref["files"]["val"]["path"] == str(d / "dev.csv")
    assert ref["split"] == {"val_share": None, "test_share": None, "seed": 0, "derived": []}
    with pytest.raises(ConfigError, match="val_share=0.2 was given but"):
        load_dataset(d, val_share=0.2)


def test_folder_train_only_derives_val_and_optional_test(tmp_path):
    d = tmp_path / "only"
    d.mkdir()
    write_jsonl(d / "train.jsonl", [{"text": t, "label": lab} for t, lab in rows_for({"a": 10, "b": 20})])
    ds = load_dataset(d)
    assert ds.split_names == ["train", "val"]
    assert ds.split("val").label_counts() == {"a": 1, "b": 2}
    assert dataset_ref(ds)["split"] == {"val_share": 0.1, "test_share": 0.0, "seed": 0, "derived": ["val"]}
    ds2 = load_dataset(d, test_share=0.5, val_share=0.2)
    assert ds2.split_names == ["train", "val", "test"]
    assert ds2.split("test").label_counts() == {"a": 5, "b": 10}
    assert ds2.split("val").label_counts() == {"a": 2, "b": 4}
    assert ds2.split("train").label_counts() == {"a": 3, "b": 6}


def test_folder_errors(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    write_csv(d / "val.csv", ["text", "label"], [["a", "x"]])
    (d / "train.json").write_text("{}")
    with pytest.raises(DataError) as exc:
        load_dataset(d)
    msg = str(exc.value)
    assert "no train file" in msg and "train.json" in msg and "val.csv" in msg
    write_csv(d / "train.csv", ["text", "label"], rows_for({"x": 2}))
    write_jsonl(d / "train.jsonl", [{"text": "a", "label": "x"}])
    with pytest.raises(DataError, match="2 train files: train.csv, train.jsonl"):
        load_dataset(d)
    (d / "train.jsonl").unlink()
    write_jsonl(d / "test.jsonl", [{"text": "a", "label": "x"}])
    with pytest.raises(DataError, match="mixes formats"):
        load_dataset(d)
    (d / "test.jsonl").unlink()
    write_csv(d / "test.csv", ["text", "label"], [["q", "unseen"]])
    with pytest.raises(DataError, match=r"test.csv' row 1 \(line 2\): label 'unseen' does not occur in the training"):
        load_dataset(d)
    write_csv(d / "test.csv", ["sentence", "label"], [["q", "x"]])
    with pytest.raises(DataError, match=r"has no column 'text' \(as in train.csv\); its columns: 'sentence', 'label'"):
        load_dataset(d)


# --- the split -------------------------------------------------------------------------------------


def test_split_is_seeded_stratified_and_keeps_train_items(tmp_path):
    counts = {"big": 20, "mid": 10, "two": 2, "three": 3, "oos": 5}
    path = write_csv(tmp_path / "s.csv", ["text", "label"], rows_for(counts))
    ds = load_dataset(path, seed=3)
    tr, va, te = (ds.split(s).label_counts() for s in ("train", "val", "test"))
    assert (tr["big"], va["big"], te["big"]) == (14, 2, 4)
    assert (tr["mid"], va["mid"], te["mid"]) == (7, 1, 2)
    assert (tr["two"], va["two"], te.get("two", 0)) == (1, 1, 0)  # train keeps one, val gets one
    assert (tr["three"], va["three"], te["three"]) == (1, 1, 1)
    assert (tr["oos"], va["oos"], te["oos"]) == (3, 1, 1) and ds.oos_label == "oos"
    # Every row lands in exactly one split, in file order within each split.
    allrows = [r[0] for r in rows_for(counts)]
    seen = [t for s in ds.splits.values() for t in s.items]
    assert sorted(seen) == sorted(allrows)
    for s in ds.splits.values():
        pos = [allrows.index(t) for t in s.items]
        assert pos == sorted(pos)
    assert splits_of(load_dataset(path, seed=3)) == splits_of(ds)
    assert splits_of(load_dataset(path, seed=4)) != splits_of(ds)
    # A label's split does not move when another label is added.
    more = write_csv(tmp_path / "m.csv", ["text", "label"], rows_for({**counts, "new": 4}))
    ds_more = load_dataset(more, seed=3)
    for name in ds.split_names:
        assert [t for t in ds_more.split(name).items if t.startswith("big")] == \
               [t for t in ds.split(name).items if t.startswith("big")]


@pytest.mark.parametrize("kw", [
    {"val_share": -0.1}, {"val_share": 1.0}, {"test_share": 1.5}, {"val_share": "0.1"}, {"test_share": True},
    {"val_share": 0.5, "test_share": 0.5}, {"val_share": float("nan")},
])
def test_bad_shares(tmp_path, kw):
    path = write_csv(tmp_path / "s.csv", ["text", "label"], rows_for({"a": 4, "b": 4}))
    with pytest.raises(ConfigError, match="share"):
        load_dataset(path, **kw)


def test_bad_options(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["text", "label"], rows_for({"a": 4, "b": 4}))
    with pytest.raises(ConfigError, match="seed"):
        load_dataset(path, seed=-1)
    with pytest.raises(ConfigError, match="both 'text'"):
        load_dataset(path, label_col="text")
    with pytest.raises(ConfigError, match="unknown option.*variant"):
        load_dataset(path, variant="full")
    with pytest.raises(ConfigError, match="text_col apply to data files, not to the built-in dataset 'clinc150'"):
        load_dataset("clinc150", text_col="text")
    assert len(load_dataset(path, download=False, progress=False).labels) == 2  # harmless for files


# --- references ------------------------------------------------------------------------------------


def test_reference_round_trip_file_folder_and_subset(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["text", "label", "domain"], rows_for(COUNTS, DOMAINS))
    ds = load_dataset(path, seed=5, val_share=0.2, test_share=0.3, name="mine")
    ref = json.loads(json.dumps(dataset_ref(ds)))
    again = load_dataset_ref(ref)
    assert again.name == "mine" and splits_of(again) == splits_of(ds)
    assert again.label_to_domain == ds.label_to_domain and dataset_ref(again) == ref

    d = tmp_path / "f"
    d.mkdir()
    write_csv(d / "train.tsv", ["text", "label"], rows_for({"a": 6, "b": 6, "oos": 3}), delimiter="\t")
    write_csv(d / "test.tsv", ["text", "label"], [["t", "a"], ["u", "oos"]], delimiter="\t")
    fd = load_dataset(d, domain_col="")
    sub = fd.subset(2, seed=1, n_oos=1)
    sref = json.loads(json.dumps(dataset_ref(sub)))
    assert sref["subsets"] == [{"n_per_label": 2, "n_oos": 1, "seed": 1}]
    assert splits_of(load_dataset_ref(sref)) == splits_of(sub)
    assert "subsets" not in dataset_ref(fd)  # the parent's reference is untouched
    # A file added to the folder later does not change what the reference rebuilds.
    write_csv(d / "val.tsv", ["text", "label"], [["v", "a"]], delimiter="\t")
    assert splits_of(load_dataset_ref(dataset_ref(fd))) == splits_of(fd)


def test_reference_of_builtin(data_dir, tmp_path):
    ds = load_dataset("clinc150", data_dir, download=False)
    ref = dataset_ref(ds)
    assert ref == {"kind": "builtin", "name": "clinc150", "data_dir": str(data_dir)}
    sub = ds.subset(2, seed=0)
    rebuilt = load_dataset_ref(dataset_ref(sub))
    assert splits_of(rebuilt) == splits_of(sub)
    plus = load_dataset("clinc150", data_dir, variant="oos_plus", download=False)
    assert dataset_ref(plus)["options"] == {"variant": "oos_plus"}
    # data_dir overrides the recorded folder (here: one that does not hold CLINC150).
    moved = {**ref, "data_dir": str(tmp_path / "nowhere")}
    assert len(load_dataset_ref(moved, data_dir=data_dir).split("test")) == 5500


def test_reference_missing_or_changed_file(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["text", "label"], rows_for({"a": 4, "b": 4}))
    ref = dataset_ref(load_dataset(path))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("one more,a\n")
    with pytest.raises(DataError) as exc:
        load_dataset_ref(ref)
    assert str(exc.value) == (
        f"the data file {str(path)!r} has changed since the assembly was built (sha256 differs); "
        "rebuild the assembly or restore the file"
    )
    path.unlink()
    with pytest.raises(DataError) as exc2:
        load_dataset_ref(ref)
    assert str(exc2.value) == f"the data file {str(path)!r} this assembly was built from is missing"


def test_reference_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset reference kind 'url'; valid kinds: 'builtin', 'files'"):
        load_dataset_ref({"kind": "url"})
    with pytest.raises(ConfigError, match="malformed"):
        load_dataset_ref({"kind": "files", "path": "/x"})
    with pytest.raises(NotFoundError, match="imagenet"):
        load_dataset_ref({"kind": "builtin", "name": "imagenet", "data_dir": None})
    hand = Dataset("t", {"train": Split(["a"], np.array(["x"]))}, {})
    with pytest.raises(ConfigError, match="has no reference"):
        dataset_ref(hand)


# --- one test per error ----------------------------------------------------------------------------


def test_error_no_such_file_or_name(tmp_path):
    with pytest.raises(NotFoundError) as exc:
        load_dataset(str(tmp_path / "nope.csv"))
    assert str(exc.value) == (
        f"unknown dataset {str(tmp_path / 'nope.csv')!r}: not a built-in name (clinc150, mnist, fashion-mnist) "
        "and no such file or folder"
    )
    assert DATASETS == ("clinc150", "mnist", "fashion-mnist") and TEXT_DATASETS == ("clinc150",)


def test_error_unknown_format(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(ConfigError) as exc:
        load_dataset(path)
    msg = str(exc.value)
    assert str(path) in msg and "'.xlsx'" in msg and ".csv, .tsv, .jsonl, .ndjson, .parquet" in msg


def test_error_missing_column_lists_found_columns(tmp_path):
    path = write_csv(tmp_path / "c.csv", ["body", "label"], [["a", "x"], ["b", "x"]])
    with pytest.raises(DataError) as exc:
        load_dataset(path)
    msg = str(exc.value)
    assert str(path) in msg and "no text column" in msg and "its columns: 'body', 'label'" in msg
    with pytest.raises(ConfigError) as exc2:
        load_dataset(path, text_col="body", label_col="tag")
    assert "no label column 'tag' (label_col); its columns: 'body', 'label'" in str(exc2.value)
    with pytest.raises(ConfigError, match="no domain column 'area'"):
        load_dataset(path, text_col="body", domain_col="area")


def test_error_empty_label_text_and_domain(tmp_path):
    path = write_csv(tmp_path / "e.csv", ["text", "label"], [["a", "x"], ["b", "  "], ["c", "x"]])
    with pytest.raises(DataError, match=r"e.csv' row 2 \(line 3\): empty label in column 'label'"):
        load_dataset(path)
    path2 = write_csv(tmp_path / "t.csv", ["text", "label"], [["a", "x"], ["", "x"]])
    with pytest.raises(DataError, match=r"row 2 \(line 3\): empty text in column 'text'"):
        load_dataset(path2)
    path3 = write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": None}])
    with pytest.raises(DataError, match=r"row 2 \(line 2\): empty label"):
        load_dataset(path3)
    path4 = write_csv(tmp_path / "d.csv", ["text", "label", "domain"], [["a", "x", "d"], ["b", "x", ""]])
    with pytest.raises(DataError, match=r"row 2 \(line 3\): empty domain in column 'domain' for label 'x'"):
        load_dataset(path4)
    path5 = write_csv(tmp_path / "two.csv", ["text", "label", "domain"], [["a", "x", "d1"], ["b", "x", "d2"]])
    with pytest.raises(DataError, match=r"label 'x' has two domains: 'd1' \(.*row 1.*\) and 'd2' \(.*row 2"):
        load_dataset(path5)


def test_error_label_with_one_example(tmp_path):
    path = write_csv(tmp_path / "one.csv", ["text", "label"], [["a", "x"], ["b", "x"], ["c", "lonely"]])
    with pytest.raises(DataError) as exc:
        load_dataset(path)
    assert "label 'lonely' has 1 example" in str(exc.value)
    assert "every label needs at least 2 examples: one to train, one to validate" in str(exc.value)
    only_oos = write_csv(tmp_path / "o.csv", ["text", "label"], [["a", "oos"], ["b", "oos"]])
    with pytest.raises(DataError, match="has no in-scope labels"):
        load_dataset(only_oos)


def test_error_zero_rows(tmp_path):
    for path in (write_csv(tmp_path / "h.csv", ["text", "label"], []), tmp_path / "e.jsonl", tmp_path / "z.tsv"):
        if not path.exists():
            path.write_text("\n" if path.suffix == ".jsonl" else "")
        with pytest.raises(DataError, match=f"{path.name}' has no data rows"):
            load_dataset(path)


def test_error_mixed_types_in_text_column(tmp_path):
    objs = [{"text": "fine", "label": "x"}, {"text": "ok", "label": "x"}, {"text": 42, "label": "x"}]
    with pytest.raises(DataError, match=r"row 3 \(line 3\): the text column 'text' holds int 42, not text \(mixed types\)"):
        load_dataset(write_jsonl(tmp_path / "m.jsonl", objs))
    with pytest.raises(DataError, match=r"row 1 \(line 1\).*holds nothing \(the key is missing\)"):
        load_dataset(write_jsonl(tmp_path / "k.jsonl", [{"label": "x"}, {"text": "a", "label": "x"}]))
    path = write_parquet(tmp_path / "p.parquet", {"text": [1, 2], "label": ["x", "x"]})
    with pytest.raises(DataError, match=r"p.parquet' row 1: the text column 'text' holds int 1"):
        load_dataset(path)


def test_error_bad_jsonl_and_csv_lines(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match="b.jsonl' line 3 is not valid JSON"):
        load_dataset(path)
    path.write_text('{"text": "a", "label": "x"}\n["b", "x"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is a JSON list, not an object"):
        load_dataset(path)
    bad = tmp_path / "f.csv"
    bad.write_text("text,label\na,x\nb,x,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 2 \(line 3\) has 3 fields but the header has 2"):
        load_dataset(bad)
    latin = tmp_path / "l.csv"
    latin.write_bytes("text,label\ncafé,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset(latin)


def test_parquet_needs_pyarrow(tmp_path, monkeypatch):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DependencyError, match=r'reading Parquet files needs .*pip install "manyfold\[parquet\]"'):
        load_dataset(path)


# --- label maps ------------------------------------------------------------------------------------


def test_read_label_map(tmp_path):
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"pay": "money", "refund": "money", "hi": "small talk"}), encoding="utf-8")
    assert read_label_map(js) == {"pay": "money", "refund": "money", "hi": "small talk"}
    c = write_csv(tmp_path / "m.csv", ["label", "expert"], [["pay", "money"], [" hi ", "chat"], ["pay", "money"]])
    assert read_label_map(c) == {"pay": "money", "hi": "chat"}
    t = write_csv(tmp_path / "m.tsv", ["expert", "label"], [["体育", "球"]], delimiter="\t")
    assert read_label_map(t) == {"球": "体育"}

    write_csv(c, ["label", "expert"], [["pay", "money"], ["pay", "other"]])
    with pytest.raises(DataError, match=r"row 2 \(line 3\): label 'pay' maps to 'other' here and to 'money' before"):
        read_label_map(c)
    write_csv(c, ["label", "group"], [["pay", "money"]])
    with pytest.raises(DataError, match="needs the columns 'label' and 'expert'; its columns: 'label', 'group'"):
        read_label_map(c)
    write_csv(c, ["label", "expert"], [["pay", ""]])
    with pytest.raises(DataError, match=r"row 1 \(line 2\): empty expert"):
        read_label_map(c)
    js.write_text(json.dumps({"pay": 3}), encoding="utf-8")
    with pytest.raises(DataError, match="label 'pay' maps to 3"):
        read_label_map(js)
    js.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="JSON object"):
        read_label_map(js)
    with pytest.raises(ConfigError, match=r"unknown file type '.yaml'; valid: .json, .csv, .tsv"):
        (tmp_path / "m.yaml").write_text("a: b")
        read_label_map(tmp_path / "m.yaml")
    with pytest.raises(NotFoundError, match="no such label map file"):
        read_label_map(tmp_path / "none.json")


# --- BANKING77 -------------------------------------------------------------------------------------


def test_banking77_folder(data_dir):
    folder = data_dir / "banking77"
    ds = load_dataset(folder)
    assert ds.name == "banking77" and ds.split_names == ["train", "val", "test"]
    assert len(ds.labels) == 77 and not ds.has_domains and ds.oos_label is None
    assert len(ds.split("test")) == 3080
    with open(folder / "train.csv", encoding="utf-8", newline="") as fh:
        file_counts: dict[str, int] = {}
        for row in csv.DictReader(fh):
            file_counts[row["category"]] = file_counts.get(row["category"], 0) + 1
    tr, va = ds.split("train").label_counts(), ds.split("val").label_counts()
    assert sum(file_counts.values()) == len(ds.split("train")) + len(ds.split("val"))
    for lab, n in file_counts.items():
        assert va[lab] == int(np.floor(n * 0.1 + 0.5)) and tr[lab] == n - va[lab]
    assert abs(len(ds.split("val")) - 0.1 * sum(file_counts.values())) < 77 / 2
    ref = dataset_ref(ds)
    assert ref["columns"] == {"text": "text", "label": "category", "domain": None}
    assert set(ref["files"]) == {"train", "test"} and ref["split"]["derived"] == ["val"]
    assert splits_of(load_dataset_ref(ref)) == splits_of(ds)
