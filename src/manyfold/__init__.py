"""manyfold: assemble many small expert models into one large model.

Small experts (heads on a shared encoder) sit behind a learned, calibrated
router; what they are unsure of, or what looks out of scope, escalates to a
big generalist. Everything is saved as JSON + safetensors in a versioned
registry.

>>> import manyfold
>>> ds = manyfold.load_dataset("clinc150")                     # doctest: +SKIP
>>> asm = manyfold.assemble(ds)                                # doctest: +SKIP
>>> asm.predict(["what's my balance"])[0].label                # doctest: +SKIP
'balance'
"""

from ._assembly import Assembly
from ._build import assemble, evaluate
from ._config import AssemblyConfig
from ._exceptions import (
    ArtifactError,
    AssemblyNotFoundError,
    ConfigError,
    DataError,
    DependencyError,
    EncoderNotFoundError,
    ExpertNotFoundError,
    GeneralistError,
    InputError,
    ManyfoldError,
    NotFittedError,
    NotFoundError,
    TrustError,
)
from ._policy import EscalationPolicy
from ._prediction import Prediction
from ._registry import Registry
from ._threads import set_threads
from .data import OOS_LABEL, Dataset, Split, load_dataset
from .encoders import get_encoder
from .experts import HeadExpert, LinearExpert, MLPExpert
from .generalists import HeadGeneralist, OpenAIGeneralist
from .routers import CentroidRouter, KNNRouter, LinearRouter

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # building and using
    "Assembly",
    "AssemblyConfig",
    "EscalationPolicy",
    "Prediction",
    "assemble",
    "evaluate",
    "Registry",
    "set_threads",
    # parts
    "get_encoder",
    "HeadExpert",
    "LinearExpert",
    "MLPExpert",
    "LinearRouter",
    "CentroidRouter",
    "KNNRouter",
    "HeadGeneralist",
    "OpenAIGeneralist",
    # data
    "Dataset",
    "Split",
    "load_dataset",
    "OOS_LABEL",
    # errors
    "ManyfoldError",
    "ConfigError",
    "InputError",
    "NotFittedError",
    "NotFoundError",
    "AssemblyNotFoundError",
    "ExpertNotFoundError",
    "EncoderNotFoundError",
    "ArtifactError",
    "TrustError",
    "DataError",
    "DependencyError",
    "GeneralistError",
]
