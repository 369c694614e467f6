"""manyfold.export: an assembly as ONNX graphs plus one JSON, for the edge (onnxruntime + numpy, no torch).

>>> from manyfold.export import export_assembly, export_main        # doctest: +SKIP
>>> export_assembly(asm, "edge/", int8=True)                         # doctest: +SKIP

or from the shell: ``manyfold export NAME --onnx -o DIR [--int8]`` (see :func:`export_main`).
``docs/edge_runner.py`` runs the folder; ``docs/export.md`` describes it. Needs the ``export`` extra
(onnx, onnxruntime, tokenizers).
"""

from __future__ import annotations

from ._onnx import FORMAT, INT8_MIN_WEIGHTS, INT8_MODES, OPSET, STAGE1_FEATURES, export_assembly, export_main

__all__ = ["export_assembly", "export_main", "FORMAT", "OPSET", "INT8_MODES", "INT8_MIN_WEIGHTS", "STAGE1_FEATURES"]
