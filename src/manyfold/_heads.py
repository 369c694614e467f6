"""Small classification heads: training in torch, inference in numpy.

A head is a dict of float32 arrays. ``linear``: ``W (d, c)``, ``b (c,)``.
``mlp``: ``W1 (d, h)``, ``b1 (h,)``, ``W2 (h, c)``, ``b2 (c,)``. Inference is
plain numpy so that routing a request costs microseconds and needs no torch.
Training is full-batch L-BFGS on the (convex, for ``linear``) cross-entropy with
L2 penalty, seeded and deterministic on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._exceptions import ConfigError

__all__ = ["HeadSpec", "train_head", "head_logits", "softmax", "fit_temperature", "head_size"]

KINDS = ("linear", "mlp")


@dataclass(frozen=True)
class HeadSpec:
    """How to train a head. ``l2`` is the weight decay (per example); ``hidden`` is for ``mlp``."""

    kind: str = "linear"
    l2: float = 1e-4
    hidden: int = 256
    max_iter: int = 200
    seed: int = 0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown head kind {self.kind!r}; valid choices: {', '.join(KINDS)}")
        if self.l2 < 0:
            raise ConfigError(f"l2 must be >= 0, got {self.l2!r}")
        if self.hidden < 1:
            raise ConfigError(f"hidden must be >= 1, got {self.hidden!r}")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter must be >= 1, got {self.max_iter!r}")


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def head_logits(params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Logits of a head on a float32 matrix ``X`` (numpy only)."""
    if "W1" in params:
        h = X @ params["W1"] + params["b1"]
        np.maximum(h, 0, out=h)
        return h @ params["W2"] + params["b2"]
    return X @ params["W"] + params["b"]


def head_size(params: dict[str, np.ndarray]) -> int:
    """Number of parameters."""
    return int(sum(v.size for v in params.values()))


def train_head(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    spec: HeadSpec = HeadSpec(),
    sample_weight: np.ndarray | None = None,
    soft_targets: np.ndarray | None = None,
    init: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Fit a head on features ``X`` (n, d) and integer labels ``y`` (n,).

    ``soft_targets`` (n, c), when given, replaces the one-hot targets
    (distillation from a teacher's probabilities). ``init`` (a ``linear``
    head's ``W (d, c)`` and ``b (c,)``) starts the optimiser there instead of
    at zero (a warm start).
    """
    import torch

    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    if n == 0:
        raise ConfigError("cannot train a head on zero examples")
    if init is not None and spec.kind != "linear":
        raise ConfigError(f"a warm start (init) is for linear heads only, not {spec.kind!r}")
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    Xt = torch.from_numpy(X)
    if soft_targets is not None:
        T = torch.from_numpy(np.asarray(soft_targets, dtype=np.float32))
    else:
        T = torch.zeros(n, n_classes)
        T[torch.arange(n), torch.from_numpy(np.asarray(y, dtype=np.int64))] = 1.0
    w = torch.ones(n) if sample_weight is None else torch.from_numpy(np.asarray(sample_weight, dtype=np.float32))
    w = w / w.sum()

    def rand(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        return (torch.randn(shape, generator=gen) / np.sqrt(fan_in)).requires_grad_(True)

    if spec.kind == "linear":
        params = {"W": torch.zeros(d, n_classes), "b": torch.zeros(n_classes)}
        if init is not None:
            if np.shape(init.get("W")) != (d, n_classes) or np.shape(init.get("b")) != (n_classes,):
                raise ConfigError(f"init must hold W {(d, n_classes)} and b {(n_classes,)} of a linear head")
            params = {k: torch.from_numpy(np.array(init[k], dtype=np.float32)) for k in ("W", "b")}
        params = {k: v.requires_grad_(True) for k, v in params.items()}
    else:
        params = {
            "W1": rand((d, spec.hidden), d),
            "b1": torch.zeros(spec.hidden, requires_grad=True),
            "W2": rand((spec.hidden, n_classes), spec.hidden),
            "b2": torch.zeros(n_classes, requires_grad=True),
        }
    weights = [v for k, v in params.items() if k.startswith("W")]

    def forward() -> torch.Tensor:
        if spec.kind == "linear":
            return Xt @ params["W"] + params["b"]
        h = torch.relu(Xt @ params["W1"] + params["b1"])
        return h @ params["W2"] + params["b2"]

    opt = torch.optim.LBFGS(list(params.values()), lr=1.0, max_iter=spec.max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(forward(), dim=1)
        loss = -(w * (T * logp).sum(1)).sum() + 0.5 * spec.l2 * sum((p * p).sum() for p in weights)
        loss.backward()
        return loss

    opt.step(closure)
    return {k: v.detach().numpy().astype(np.float32) for k, v in params.items()}


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature that minimises the NLL of ``softmax(logits / T)`` on held-out labels (the best of a 121-point grid).

    The NLL is convex in ``1 / T``, so its values along the grid fall, then
    rise: a ternary search narrows the grid to a few points, which are all
    evaluated (about 20 evaluations instead of 121, the same answer).
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    if len(y) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    rows = np.arange(len(y))
    seen: dict[int, float] = {}

    def nll(i: int) -> float:
        if i not in seen:
            z = logits / grid[i]
            z = z - z.max(1, keepdims=True)
            lse = np.log(np.exp(z).sum(1))
            seen[i] = float((lse - z[rows, y]).mean())
        return seen[i]

    lo, hi = 0, len(grid) - 1
    while hi - lo > 6:
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        if nll(m1) <= nll(m2):
            hi = m2
        else:
            lo = m1
    return float(grid[min(range(lo, hi + 1), key=nll)])
