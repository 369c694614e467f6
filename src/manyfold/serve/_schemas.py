"""Pydantic bodies of the HTTP API (built per app: the limits come from the ServeConfig and the assembly).

Types are strict where JSON has the type: ``escalate`` / ``wait`` take ``true`` / ``false`` only (not ``"false"``,
not ``0``), ``k`` / ``version`` an integer only (not ``true``, not ``143.0``); texts are strings only.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, Tag, \
    model_validator
from pydantic_core import PydanticCustomError

from ._images import TAKES_IMAGES, TAKES_TEXTS

__all__ = ["make_models", "BODY_TAGS", "PredictionOut", "PredictResponse", "RouteResponse", "ExpertOut", "ErrorBody",
           "ReloadRequest", "ChangeResponse", "Health", "Ready"]


def _clean_text(v: str) -> str:
    if not v.strip():
        raise ValueError("text is empty or only whitespace")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid Unicode (unpaired surrogate at position {exc.start})") from None
    return v


#: the tags of the text / image branches of an inference body (pydantic puts them in an error's location)
BODY_TAGS = ("text", "image")
_TEXT_KEYS, _IMAGE_KEYS = ("items", "item"), ("images", "image")


def _refuse(body: Any, keys: tuple[str, ...], message: str) -> Any:
    """A body that holds the other modality's fields: one error naming that field and what to send instead."""
    if isinstance(body, dict):
        for k in keys:
            if k in body:
                raise PydanticCustomError("wrong_modality", message, {"field": k})
    return body


def make_models(max_items: int, max_chars: int, max_train: int = 100_000, *, max_images: int = 64,
                modality: Callable[[], str | None] = lambda: None) -> SimpleNamespace:
    """Request models whose limits are this server's ``max_items`` and ``max_chars``.

    ``PredictBody`` / ``RouteBody`` are the JSON bodies of ``/v1/predict`` and
    ``/v1/route``: the text request (``items`` / ``item``) or the image request
    (``images`` / ``image``, base64), picked by ``modality()`` (what the served
    assembly takes; ``None`` while none is loaded: then by the fields sent).
    Each refuses the other's fields with a ``wrong_modality`` error that says
    what to send. ``max_images`` only documents the image limit (over it: 413,
    checked by the app).
    """
    Text = Annotated[str, Field(min_length=1, max_length=max_chars), AfterValidator(_clean_text)]

    class _Items(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[Text] | None = Field(None, min_length=1, max_length=max_items,
                                         description=f"texts to answer (1 to {max_items}, each 1 to {max_chars} characters)")
        item: Text | None = Field(None, description="one text (instead of items)")

        @model_validator(mode="before")
        @classmethod
        def _not_images(cls, body: Any) -> Any:
            return _refuse(body, _IMAGE_KEYS, TAKES_TEXTS)

        @model_validator(mode="after")
        def _one_of(self):  # noqa: ANN202
            if (self.items is None) == (self.item is None):
                raise ValueError("give exactly one of the fields 'items' (a list of texts) or 'item' (one text)")
            return self

        def texts(self) -> list[str]:
            return list(self.items) if self.items is not None else [self.item]  # type: ignore[list-item]

    class PredictRequest(_Items):
        """``{"items": [...]}`` or ``{"item": "..."}``; ``escalate: false`` keeps the generalist out."""

        escalate: StrictBool = True

    class RouteRequest(_Items):
        """Routing only: the top ``k`` experts (default: the assembly's ``top_k``) and the router's scores."""

        k: StrictInt | None = Field(None, ge=1, le=64)

    B64 = Annotated[str, Field(description="the standard base64 of an image file (PNG, JPEG, BMP, GIF, WebP); "
                                           "a 'data:image/png;base64,' prefix is allowed")]

    class _Images(BaseModel):
        model_config = ConfigDict(extra="forbid")
        images: list[B64] | None = Field(None, min_length=1, description=f"images to answer (1 to {max_images}), "
                                         "each the base64 of an image file")
        image: B64 | None = Field(None, description="one image (instead of images)")

        @model_validator(mode="before")
        @classmethod
        def _not_texts(cls, body: Any) -> Any:
            return _refuse(body, _TEXT_KEYS, TAKES_IMAGES)

        @model_validator(mode="after")
        def _one_of(self):  # noqa: ANN202
            if (self.images is None) == (self.image is None):
                raise ValueError("give exactly one of the fields 'images' (a list of base64 images) or 'image' (one)")
            return self

        def sources(self) -> list[tuple[str, str]]:
            """``(field, base64)`` per image: ``images.0``, ``images.1``, ... or ``image``."""
            if self.images is not None:
                return [(f"images.{i}", s) for i, s in enumerate(self.images)]
            return [("image", self.image)]  # type: ignore[list-item]

    class ImagePredictRequest(_Images):
        """``{"images": [base64, ...]}`` or ``{"image": base64}`` (an image assembly); ``escalate`` as for texts."""

        escalate: StrictBool = True

    class ImageRouteRequest(_Images):
        """Routing only, for images: the top ``k`` experts and the router's scores."""

        k: StrictInt | None = Field(None, ge=1, le=64)

    def pick(body: Any) -> str:
        takes = modality()
        if takes is not None:
            return "image" if takes == "image" else "text"
        if isinstance(body, dict) and any(k in body for k in _IMAGE_KEYS) and not any(k in body for k in _TEXT_KEYS):
            return "image"
        return "text"

    def either(text: type, image: type) -> Any:
        return Annotated[Union[Annotated[text, Tag("text")], Annotated[image, Tag("image")]], Discriminator(pick)]

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

    return SimpleNamespace(PredictRequest=PredictRequest, RouteRequest=RouteRequest, AddExpertRequest=AddExpertRequest,
                           ImagePredictRequest=ImagePredictRequest, ImageRouteRequest=ImageRouteRequest,
                           PredictBody=either(PredictRequest, ImagePredictRequest),
                           RouteBody=either(RouteRequest, ImageRouteRequest))


class ReloadRequest(BaseModel):
    """Load ``version`` (default: the latest) of the served registry name, then switch to it between batches."""

    model_config = ConfigDict(extra="forbid")
    version: StrictInt | None = Field(None, ge=1)
    wait: StrictBool = Field(False, description="answer only once the new version serves (else 202 at once)")


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
