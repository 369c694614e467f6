"""Tests of manyfold.data: dataset type, CLINC150 / MNIST / Fashion-MNIST loaders, checksums, downloads.

They read the local copies in ``$MANYFOLD_TEST_DATA`` (default: ``<repo parent>/shared/data``)
and never touch the network: downloads are tested by serving local bytes through a
monkeypatched URL opener.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from _data import missing

from manyfold._exceptions import ConfigError, DataError, NotFoundError
from manyfold.data import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    OOS_LABEL,
    Dataset,
    Split,
    load_clinc150,
    load_dataset,
    load_mnist,
)
from manyfold.data import _fetch, _mnist

SHARED = Path(os.environ.get("MANYFOLD_TEST_DATA") or Path(__file__).parents[1].parent / "shared" / "data")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding clinc150/, mnist/, fashion-mnist/; skip if it is not there."""
    if not (SHARED / "clinc150" / "data_full.json").is_file():
        missing(f"local dataset copies not found in {SHARED} (set MANYFOLD_TEST_DATA to the dir holding clinc150/)")
    return SHARED


def _need(shared: Path, folder: str) -> Path:
    d = shared / folder
    if not d.is_dir():
        missing(f"{d} not found")
    return d


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No test may read or write the user's cache or follow a stray $MANYFOLD_DATA."""
    monkeypatch.setenv("MANYFOLD_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("MANYFOLD_DATA", raising=False)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(url, timeout):
        raise AssertionError(f"test tried to reach the network: {url}")

    monkeypatch.setattr(_fetch, "_urlopen", refuse)


@pytest.fixture(scope="module")
def clinc(shared_data) -> Dataset:
    return load_clinc150(shared_data, download=False, progress=False)


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Make _fetch._urlopen serve ``files`` by URL basename; return the list of URLs asked for."""
    asked: list[str] = []

    def fake(url, timeout):
        asked.append(url)
        return _FakeResponse(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(_fetch, "_urlopen", fake)
    return asked


# --- CLINC150 -------------------------------------------------------------------------------------


def test_clinc150_counts_labels_domains(clinc):
    assert clinc.name == "clinc150" and clinc.oos_label == OOS_LABEL == "out_of_scope"
    assert clinc.split_names == ["train", "val", "test"]
    for name, n_in, n_oos in (("train", 15000, 100), ("val", 3000, 100), ("test", 4500, 1000)):
        sp = clinc.split(name)
        assert len(sp) == n_in + n_oos and len(sp.items) == len(sp.labels)
        assert int((sp.labels == OOS_LABEL).sum()) == n_oos
        assert "oos" not in set(sp.labels.tolist())
        assert all(isinstance(t, str) and t for t in sp.items)
        counts = sp.label_counts()
        in_scope = {k: v for k, v in counts.items() if k != OOS_LABEL}
        assert len(in_scope) == 150 and set(in_scope.values()) == {n_in // 150}
    assert len(clinc.labels) == 150 and clinc.labels == sorted(clinc.labels)
    assert OOS_LABEL not in clinc.labels
    assert len(clinc.domains) == 10 and "banking" in clinc.domains
    for label in clinc.labels:
        assert clinc.domain_of(label) in clinc.domains
    assert clinc.domain_of(OOS_LABEL) is None
    assert all(len(clinc.labels_of(d)) == 15 for d in clinc.domains)
    assert clinc.info["commit"] == "828f8093932c8fe6ca7936c3d2e52903b1c523de"


def test_clinc150_oos_plus_and_folder_forms(shared_data, monkeypatch):
    plus = load_clinc150(shared_data / "clinc150", variant="oos_plus", download=False, progress=False)
    assert int((plus.split("train").labels == OOS_LABEL).sum()) == 250
    assert len(plus.split("train")) == 15250
    monkeypatch.setenv("MANYFOLD_DATA", str(shared_data))
    via_env = load_dataset("clinc150", download=False)
    assert len(via_env.split("test")) == 5500
    with pytest.raises(ConfigError, match="oos_plus"):
        load_clinc150(shared_data, variant="small")


def test_unknown_split_and_dataset(clinc):
    with pytest.raises(ConfigError) as exc:
        clinc.split("dev")
    assert "'train'" in str(exc.value) and "'val'" in str(exc.value) and "'test'" in str(exc.value)
    with pytest.raises(NotFoundError) as exc2:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(exc2.value)
    with pytest.raises(NotFoundError):
        clinc.domain_of("no_such_intent")


def test_subset_is_stratified_and_deterministic(clinc):
    sub = clinc.subset(3, seed=7)
    for name in clinc.split_names:
        counts = sub.split(name).label_counts()
        assert len(counts) == 151 and set(counts.values()) == {3}
    again = clinc.subset(3, seed=7)
    other = clinc.subset(3, seed=8)
    assert again.split("train").items == sub.split("train").items
    assert other.split("train").items != sub.split("train").items
    # Items keep their labels and their original order.
    full = clinc.split("val")
    pos = {t: i for i, t in enumerate(full.items)}
    idx = [pos[t] for t in sub.split("val").items]
    assert idx == sorted(idx)
    assert [full.labels[i] for i in idx] == sub.split("val").labels.tolist()
    oos = clinc.subset(2, seed=0, n_oos=10)
    assert oos.split("test").label_counts()[OOS_LABEL] == 10
    assert sub.info["subset"] == {"n_per_label": 3, "n_oos": 3, "seed": 7}
    big = clinc.subset(10_000)
    assert len(big.split("train")) == len(clinc.split("train"))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            clinc.subset(bad)


def test_dataset_validation():
    sp = Split(["a", "b"], np.array(["x", "y"]))
    with pytest.raises(ConfigError, match="without a domain"):
        Dataset("t", {"train": sp}, {"x": "d"})
    with pytest.raises(ConfigError, match="labels"):
        Split(["a"], np.array(["x", "y"]))
    with pytest.raises(ConfigError, match="must not have a domain"):
        Dataset("t", {"train": sp}, {"x": "d", "y": "d", OOS_LABEL: "d"})
    ds = Dataset("t", {"train": sp}, {"x": "d1", "y": "d2"}, oos_label=None)
    assert ds.domains == ["d1", "d2"] and ds.labels == ["x", "y"]
    assert "Dataset('t'" in repr(ds)


def test_missing_dir_without_download_names_dir_and_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as exc:
        load_clinc150(missing, download=False)
    msg = str(exc.value)
    assert str(missing / "clinc150") in msg and "data_full.json" in msg and "domains.json" in msg
    assert "MANYFOLD_DATA" in msg and "--data-dir" in msg
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_mnist(missing, download=False)


def test_corrupted_local_copy_fails_checksum(shared_data, tmp_path):
    d = tmp_path / "clinc150"
    d.mkdir()
    shutil.copy(shared_data / "clinc150" / "domains.json", d)
    data = bytearray((shared_data / "clinc150" / "data_full.json").read_bytes())
    data[1000] ^= 0xFF
    data[2000] ^= 0x01
    (d / "data_full.json").write_bytes(bytes(data))
    with pytest.raises(DataError) as exc:
        load_clinc150(tmp_path, download=False)
    msg = str(exc.value)
    expected = _fetch.PINNED["clinc150"]["data_full.json"].digest
    assert "checksum mismatch" in msg and expected in msg and "data_full.json" in msg
    assert "got " in msg


def test_download_success_offline(shared_data, tmp_path, monkeypatch):
    src = shared_data / "clinc150"
    asked = _serve(monkeypatch, {n: (src / n).read_bytes() for n in ("data_full.json", "domains.json")})
    ds = load_clinc150(tmp_path, download=True, progress=False)
    assert len(ds.split("train")) == 15100
    assert sorted(p.name for p in (tmp_path / "clinc150").iterdir()) == ["data_full.json", "domains.json"]
    assert all("828f8093932c8fe6ca7936c3d2e52903b1c523de/data/" in u for u in asked) and len(asked) == 2
    # Present now: a second load does not download again.
    asked.clear()
    load_clinc150(tmp_path, download=True, progress=False)
    assert asked == []


def test_download_checksum_mismatch(shared_data, tmp_path, monkeypatch):
    src = shared_data / "clinc150"
    bad = bytearray((src / "data_full.json").read_bytes())
    bad[-5] ^= 0xFF
    _serve(monkeypatch, {"data_full.json": bytes(bad), "domains.json": (src / "domains.json").read_bytes()})
    with pytest.raises(DataError) as exc:
        load_clinc150(tmp_path, download=True, progress=False)
    msg = str(exc.value)
    assert "checksum mismatch" in msg and _fetch.PINNED["clinc150"]["data_full.json"].digest in msg
    assert "raw.githubusercontent.com" in msg
    assert not (tmp_path / "clinc150" / "data_full.json").exists()
    assert not [p for p in (tmp_path / "clinc150").iterdir() if p.name.endswith(".part")]


def test_download_network_failure(tmp_path, monkeypatch):
    def down(url, timeout):
        raise urllib.error.URLError("name resolution failed")

    monkeypatch.setattr(_fetch, "_urlopen", down)
    with pytest.raises(DataError) as exc:
        load_clinc150(tmp_path, progress=False)
    msg = str(exc.value)
    assert "could not download https://raw.githubusercontent.com/clinc/oos-eval/" in msg
    assert "name resolution failed" in msg and "--data-dir" in msg and "MANYFOLD_DATA" in msg
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_default_cache_location(shared_data, monkeypatch):
    home = Path(os.environ["MANYFOLD_HOME"])
    src = shared_data / "clinc150"
    _serve(monkeypatch, {n: (src / n).read_bytes() for n in ("data_full.json", "domains.json")})
    load_clinc150(progress=False)
    assert (home / "data" / "clinc150" / "data_full.json").is_file()


def test_local_verification_is_cached(shared_data, monkeypatch):
    load_clinc150(shared_data, download=False, progress=False)
    calls = []
    real = _fetch._hash_file
    monkeypatch.setattr(_fetch, "_hash_file", lambda p, rf: calls.append(p) or real(p, rf))
    load_clinc150(shared_data, download=False, progress=False)
    assert calls == []


# --- MNIST / Fashion-MNIST ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist(shared_data) -> Dataset:
    _need(shared_data, "mnist")
    return load_mnist(shared_data, download=False, progress=False)


def test_mnist_shapes_and_counts(mnist):
    assert mnist.modality == "image" and mnist.oos_label is None
    tr, va, te = mnist.split("train"), mnist.split("val"), mnist.split("test")
    assert tr.items.shape == (55000, 28, 28) and va.items.shape == (5000, 28, 28)
    assert te.items.shape == (10000, 28, 28) and tr.items.dtype == np.uint8
    both = {k: tr.label_counts()[k] + va.label_counts()[k] for k in mnist.labels}
    assert [both[str(d)] for d in range(10)] == MNIST_TRAIN_COUNTS
    assert [te.label_counts()[str(d)] for d in range(10)] == MNIST_TEST_COUNTS
    assert mnist.domains == ["high", "low"]
    assert mnist.labels_of("low") == ["0", "1", "2", "3", "4"]
    assert 0 < tr.items.mean() < 255
    sub = mnist.subset(4, seed=1)
    assert sub.split("train").items.shape == (40, 28, 28)


def test_fashion_mnist(shared_data):
    _need(shared_data, "fashion-mnist")
    ds = load_dataset("fashion-mnist", shared_data, download=False, progress=False)
    assert ds.labels == sorted(FASHION_MNIST_CLASSES)
    te = ds.split("test")
    assert te.items.shape == (10000, 28, 28) and set(te.label_counts().values()) == {1000}
    both = ds.split("train").label_counts()
    for k, v in ds.split("val").label_counts().items():
        both[k] += v
    assert set(both.values()) == {6000}
    assert ds.labels_of("footwear_and_bags") == ["Ankle boot", "Bag", "Sandal", "Sneaker"]
    assert len(ds.labels_of("clothing")) == 6


def test_parse_idx_validation():
    body = np.arange(12, dtype=np.uint8).tobytes()
    good = (2049).to_bytes(4, "big") + (12).to_bytes(4, "big") + body
    assert _mnist._parse_idx(good, magic=2049, shape=(12,), source="x").tolist() == list(range(12))
    with pytest.raises(DataError, match="truncated"):
        _mnist._parse_idx(good[:-1], magic=2049, shape=(12,), source="x")
    with pytest.raises(DataError, match="truncated"):
        _mnist._parse_idx(good[:5], magic=2049, shape=(12,), source="x")
    with pytest.raises(DataError, match="too long"):
        _mnist._parse_idx(good + b"\0", magic=2049, shape=(12,), source="x")
    with pytest.raises(DataError, match="magic"):
        _mnist._parse_idx(good, magic=2051, shape=(12,), source="x")
    with pytest.raises(DataError, match="dimensions"):
        _mnist._parse_idx(good, magic=2049, shape=(10,), source="x")


def _mnist_dir_with(shared_data: Path, tmp_path: Path, name: str, data: bytes) -> Path:
    d = tmp_path / "mnist"
    d.mkdir()
    for f in _need(shared_data, "mnist").glob("*.gz"):
        (d / f.name).symlink_to(f)
    (d / name).unlink()
    (d / name).write_bytes(data)
    return d


def test_truncated_idx_content(shared_data, tmp_path):
    raw = gzip.decompress((_need(shared_data, "mnist") / "t10k-labels-idx1-ubyte.gz").read_bytes())
    d = _mnist_dir_with(shared_data, tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated"):
        load_mnist(d, download=False)


def test_truncated_gzip_stream(shared_data, tmp_path):
    gz = (_need(shared_data, "mnist") / "t10k-labels-idx1-ubyte.gz").read_bytes()
    _mnist_dir_with(shared_data, tmp_path, "t10k-labels-idx1-ubyte.gz", gz[: len(gz) // 2])
    with pytest.raises(DataError, match="gzip"):
        load_mnist(tmp_path, download=False)


def test_mnist_content_checksum(shared_data, tmp_path):
    raw = bytearray(gzip.decompress((_need(shared_data, "mnist") / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid IDX file, different content
    d = _mnist_dir_with(shared_data, tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="27ae3e4e09519cfbb04c329615203637"):
        load_mnist(d, download=False)


def test_mnist_download_offline(shared_data, tmp_path, monkeypatch):
    src = _need(shared_data, "mnist")
    asked = _serve(monkeypatch, {f.name: f.read_bytes() for f in src.glob("*.gz")})
    ds = load_mnist(tmp_path, progress=False)
    assert len(ds.split("test")) == 10000 and len(asked) == 4
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in asked)
    # A download whose decompressed content is wrong is rejected and not kept.
    raw = bytearray(gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[200] = (raw[200] + 1) % 10
    _serve(monkeypatch, {"t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(raw))})
    fresh = tmp_path / "other"
    for f in src.glob("*.gz"):
        if f.name != "t10k-labels-idx1-ubyte.gz":
            (fresh / "mnist").mkdir(parents=True, exist_ok=True)
            (fresh / "mnist" / f.name).symlink_to(f)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_mnist(fresh, progress=False)
    assert not (fresh / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
