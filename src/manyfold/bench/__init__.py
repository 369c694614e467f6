"""Benchmarks: the assembly against monoliths and peer routers (``bench_main``).

``bench_main(dataset="clinc150", quick=False, data_dir=None, out_dir="benchmarks/results")``
fits every system on the same splits and cached embeddings in one process and
writes ``bench_<dataset>[_quick].md`` / ``.json`` and PNG plots. Metric
functions (APGR, gap recovery) live in :mod:`manyfold.bench._metrics`.
"""

from ._run import BenchConfig, bench_main, run_bench

__all__ = ["BenchConfig", "bench_main", "run_bench"]
