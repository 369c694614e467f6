"""Pydantic bodies of the HTTP API (built per app: the limits come from the ServeConfig and the assembly)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = ["make_models", "PredictionOut", "PredictResponse", "RouteResponse", "ExpertOut", "ErrorBody",
           "ReloadRequest", "ChangeResponse", "Health", "Ready"]


def _clean_text(v: str) -> str:
    if not v.strip():
        raise ValueError("text is empty or only whitespace")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid Unicode (unpaired surrogate at position {exc.start})") from None
    return v


def make_models(max_items: int, max_chars: int, max_train: int = 100_000) -> SimpleNamespace:
    """Request models whose limits are this server's ``max_items`` and ``max_chars``."""
    Text = Annotated[str, Field(min_length=1, max_length=max_chars), AfterValidator(_clean_text)]

    class _Items(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[Text] | None = Field(None, min_length=1, max_length=max_items,
                                         description=f"texts to answer (1 to {max_items}, each 1 to {max_chars} characters)")
        item: Text | None = Field(None, description="one text (instead of items)")

        @model_validator(mode="after")
        def _one_of(self):  # noqa: ANN202
            if (self.items is None) == (self.item is None):
                raise ValueError("give exactly one of the fields 'items' (a list of texts) or 'item' (one text)")
            return self

        def texts(self) -> list[str]:
            return list(self.items) if self.items is not None else [self.item]  # type: ignore[list-item]

    class PredictRequest(_Items):
        """``{"items": [...]}`` or ``{"item": "..."}``; ``escalate: false`` keeps the generalist out."""

        escalate: bool = True

    class RouteRequest(_Items):
        """Routing only: the top ``k`` experts (default: the assembly's ``top_k``) and the router's scores."""

        k: int | None = Field(None, ge=1, le=64)

    Pair = Annotated[tuple[Text, Annotated[str, Field(min_length=1, max_length=200)]], Field()]

    class AddExpertRequest(BaseModel):
        """A new expert: its name, the labels it owns, and labelled examples of them (``[[text, label], ...]``)."""

        model_config = ConfigDict(extra="forbid")
        name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
        labels: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=1000)
        train: list[Pair] = Field(min_length=1, max_length=max_train)
        val: list[Pair] = Field(min_length=1, max_length=max_train)
        kind: Literal["linear", "mlp"] = "linear"

        @model_validator(mode="after")
        def _labels_known(self):  # noqa: ANN202
            for field in ("train", "val"):
                bad = sorted({lab for _, lab in getattr(self, field)} - set(self.labels))
                if bad:
                    raise ValueError(f"field {field!r} has labels that are not in 'labels': {bad[:5]}")
            return self

    return SimpleNamespace(PredictRequest=PredictRequest, RouteRequest=RouteRequest, AddExpertRequest=AddExpertRequest)


class ReloadRequest(BaseModel):
    """Load ``version`` (default: the latest) of the served registry name, then switch to it between batches."""

    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1)
    wait: bool = Field(False, description="answer only once the new version serves (else 202 at once)")


class PredictionOut(BaseModel):
    label: str
    out_of_scope: bool
    confidence: float
    experts: list[str]
    expert_weights: list[float]
    escalated: bool
    reason: str | None
    oos_score: float
    router_scores: dict[str, float]
    timings_ms: dict[str, float]
    degraded: bool


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    assembly: str | None
    version: int | None


class ExpertScore(BaseModel):
    name: str
    score: float = Field(description="the router's probability of this expert")
    weight: float = Field(description="its weight among the top k (renormalised)")


class RouteOut(BaseModel):
    experts: list[ExpertScore]


class RouteResponse(BaseModel):
    routes: list[RouteOut]
    version: int | None


class ExpertOut(BaseModel):
    name: str
    labels: list[str]
    card: dict


class ChangeResponse(BaseModel):
    status: str
    version: int | None
    experts: list[str] | None = None


class ErrorBody(BaseModel):
    error: str
    message: str
    field: str | None = None


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    assembly: str | None
    version: int | None
    reload: dict
