"""Any OpenAI-compatible chat endpoint as the generalist (a local LLM server, a hosted API)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._components import register_component
from .._estimator import BaseEstimator, check_fitted
from .._exceptions import ConfigError, GeneralistError

__all__ = ["OpenAIGeneralist"]


@register_component
class OpenAIGeneralist(BaseEstimator):
    """Ask an OpenAI-compatible ``/chat/completions`` endpoint to pick one label.

    ``fit(items, y)`` only records the label set (and, with ``n_shots``, a few
    examples per label for the prompt). The answer is one-hot over ``labels_``
    plus ``out_of_scope``; an answer that is no label is counted as
    out-of-scope *and* flagged in the signals (``invalid_answer``), never
    hidden. A network error or timeout raises :class:`GeneralistError`: the
    assembly decides what to do with it.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8080/v1", model: str = "default", *,
                 api_key_env: str = "OPENAI_API_KEY", timeout: float = 30.0, n_shots: int = 0,
                 oos_label: str = "out_of_scope") -> None:
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.n_shots = n_shots
        self.oos_label = oos_label

    def fit(self, items: Sequence[Any] | None, y: Any, **_: Any) -> OpenAIGeneralist:
        y = np.asarray(y).astype(str)
        inscope = sorted(set(y.tolist()) - {self.oos_label})
        if not inscope:
            raise ConfigError("OpenAIGeneralist needs at least one in-scope label")
        self.labels_ = np.array(inscope + [self.oos_label], dtype=str)
        shots: list[tuple[str, str]] = []
        if self.n_shots and items is not None:
            seen: dict[str, int] = {}
            for text, lab in zip(items, y.tolist()):
                if seen.get(lab, 0) < self.n_shots:
                    shots.append((str(text), lab))
                    seen[lab] = seen.get(lab, 0) + 1
        self.shots_ = shots
        return self

    def _prompt(self) -> str:
        lines = [
            "You classify a user request into exactly one label.",
            f"Answer with the label only. If no label fits, answer {self.oos_label}.",
            "Labels: " + ", ".join(self.labels_.tolist()),
        ]
        lines += [f"Example: {t!r} -> {lab}" for t, lab in self.shots_]
        return "\n".join(lines)

    def _ask(self, text: str) -> str:
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": 16,
                           "messages": [{"role": "system", "content": self._prompt()},
                                        {"role": "user", "content": text}]}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
            return str(data["choices"][0]["message"]["content"])
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise GeneralistError(f"generalist endpoint {url} failed: {exc}") from exc
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
            raise GeneralistError(f"generalist endpoint {url} gave a malformed response: {exc}") from exc

    def signals(self, items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """One-hot answers over ``labels_`` and ``[is_oos, invalid_answer]`` per item."""
        check_fitted(self, "labels_")
        index = {lab.lower(): i for i, lab in enumerate(self.labels_.tolist())}
        oos = index[self.oos_label.lower()]
        proba = np.zeros((len(items), len(self.labels_)), np.float32)
        feats = np.zeros((len(items), 2), np.float32)
        for i, text in enumerate(items):
            answer = self._ask(str(text)).strip().strip("'\"`.").lower()
            j = index.get(answer)
            if j is None:
                j, feats[i, 1] = oos, 1.0
            proba[i, j] = 1.0
            feats[i, 0] = float(j == oos)
        return proba, feats

    def predict_proba(self, items: Sequence[Any]) -> np.ndarray:
        return self.signals(items)[0]

    def predict(self, items: Sequence[Any]) -> np.ndarray:
        return self.labels_[self.predict_proba(items).argmax(1)]

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "labels_")
        return {"type": "OpenAIGeneralist", "params": self.get_params(), "labels": self.labels_.tolist(),
                "shots": [list(s) for s in self.shots_]}, {}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> OpenAIGeneralist:
        est = cls(**config["params"])
        est.labels_ = np.array(config["labels"], dtype=str)
        est.shots_ = [tuple(s) for s in config["shots"]]
        return est
