"""The public API is exactly what we say it is."""

from __future__ import annotations

import manyfold
from manyfold import _exceptions as E

EXPECTED = {
    "__version__", "Assembly", "AssemblyConfig", "EscalationPolicy", "Prediction", "assemble", "evaluate", "Registry",
    "set_threads",
    "get_encoder", "HeadExpert", "LinearExpert", "MLPExpert", "LinearRouter", "CentroidRouter", "KNNRouter",
    "HeadGeneralist", "OpenAIGeneralist", "Dataset", "Split", "load_dataset", "OOS_LABEL",
    "ManyfoldError", "ConfigError", "InputError", "NotFittedError", "NotFoundError", "AssemblyNotFoundError",
    "ExpertNotFoundError", "EncoderNotFoundError", "ArtifactError", "TrustError", "DataError", "DependencyError",
    "GeneralistError",
}


def test_all_is_exactly_the_curated_list():
    assert set(manyfold.__all__) == EXPECTED
    for name in manyfold.__all__:
        assert hasattr(manyfold, name), name


def test_one_exception_tree():
    for name in E.__all__:
        cls = getattr(E, name)
        assert issubclass(cls, E.ManyfoldError)
        assert name in E.__doc__, f"{name} is missing from the tree drawn in _exceptions' docstring"
    assert issubclass(E.InputError, ValueError) and issubclass(E.DependencyError, ImportError)
    assert issubclass(E.AssemblyNotFoundError, LookupError)


def test_import_does_not_load_heavy_libraries():
    import subprocess
    import sys

    code = "import sys, manyfold; print(any(m in sys.modules for m in ('sentence_transformers', 'transformers', 'onnxruntime', 'fastapi')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
