"""One thread budget for the whole process: torch, onnxruntime and the tokenizers take it from here.

On a small machine the usual cause of bad tail latency is oversubscription:
torch's pool, each onnxruntime session's pool and the tokenizers' pool each
sized to the core count, all busy at once. :func:`set_threads` sets one number
for all of them; :func:`thread_budget` is what a session created later reads;
:func:`describe_threads` is the line ``manyfold bench`` and ``manyfold serve``
print at start.

The budget comes from, in order: the last :func:`set_threads` call, the
``MANYFOLD_THREADS`` environment variable, the number of cores this process may
run on.
"""

from __future__ import annotations

import os

from ._exceptions import ConfigError

__all__ = ["set_threads", "thread_budget", "describe_threads", "single_threaded_blas"]

_budget: int | None = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _check(n: object, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{where} must be a positive integer (threads), got {n!r}")
    return int(n)


def thread_budget() -> int:
    """The number of compute threads one model call may use (see the module docstring for where it comes from)."""
    if _budget is not None:
        return _budget
    env = os.environ.get("MANYFOLD_THREADS", "").strip()
    if env:
        try:
            return _check(int(env), "MANYFOLD_THREADS")
        except ValueError:
            raise ConfigError(f"MANYFOLD_THREADS must be a positive integer, got {env!r}") from None
    return _cores()


def set_threads(n: int) -> int:
    """Use ``n`` compute threads from now on: torch's intra-op pool, every onnxruntime session
    created afterwards, and the tokenizers' pool (when it has not started yet). Returns ``n``.

    >>> import manyfold
    >>> manyfold.set_threads(2)
    2
    """
    global _budget
    n = _check(n, "threads")
    _budget = n
    os.environ["RAYON_NUM_THREADS"] = str(n)  # the tokenizers' pool reads it when it starts
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    else:
        torch.set_num_threads(n)
    return n


def single_threaded_blas() -> str:
    """Limit numpy's BLAS (OpenBLAS, MKL, ...) to one thread for the rest of the process; says what was done.

    For the server: its numpy work (heads, router, out-of-scope features) is on small matrices, while
    BLAS's worker threads were started by the main thread, at its priority, and wait spinning after
    each call. A large request's numpy work, called from its lower-priority thread, then ran on those
    normal-priority workers (measured under the hostile mix: 42% of a core at normal priority). One
    thread keeps each call in its caller's thread, at its caller's priority. Needs ``threadpoolctl``
    (the ``serve`` extra); without it nothing changes and the answer says so.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "numpy BLAS threads unchanged (threadpoolctl is not installed: pip install 'manyfold[serve]')"
    import numpy  # noqa: F401 - its BLAS must be loaded to be limited

    threadpool_limits(1, user_api="blas")
    return "numpy BLAS: 1 thread"


def describe_threads() -> str:
    """``"threads: 2 (torch 2, onnxruntime 2 per session, 2 cores)"``: printed by ``bench`` and ``serve``."""
    parts = []
    try:
        import torch

        parts.append(f"torch {torch.get_num_threads()}")
    except ImportError:  # pragma: no cover
        pass
    parts.append(f"onnxruntime {thread_budget()} per session")
    source = "set" if _budget is not None else ("MANYFOLD_THREADS" if os.environ.get("MANYFOLD_THREADS") else "cores")
    return f"threads: {thread_budget()} from {source} ({', '.join(parts)}; {_cores()} cores)"
