"""The engine: runs one batch of items through the assembly being served, with fallbacks and metrics.

It holds the current assembly and its version as one snapshot;
:meth:`Engine.swap` replaces both atomically (one reference assignment). A
batch runs on the snapshot it is given (:meth:`Engine.snapshot` when it
starts, or the one its request's first part ran on), so a batch in flight
finishes on the assembly it began with and its answers carry that version.

Failures are never swallowed: an expert that raises has its items answered
by the generalist (``reason="expert_failed: <name>"``, counted in
``manyfold_expert_failures`` / ``manyfold_expert_fallback_items``); a
generalist that fails leaves the experts' answer flagged ``degraded`` (done by
the assembly, counted here in ``manyfold_generalist_failures``); an item no
part could answer gets an exception, which its request turns into an error
status.

Two stages: with ``defer=True`` a batch runs only the small stage (encoder,
router, experts, stage-1 out-of-scope) and hands back a :class:`Pending` for
each item it escalates; :meth:`Engine.run_generalist` finishes pending items
(of any batches) with one generalist call. The micro-batcher answers the
other items at once, so they never wait behind the big model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._exceptions import GeneralistError, ManyfoldError
from .._prediction import Prediction
from ..routers import top_k
from ._metrics import ServeMetrics

__all__ = ["Engine", "Pending", "PipelineError"]

log = logging.getLogger("manyfold.serve")


class PipelineError(ManyfoldError, RuntimeError):
    """No part of the assembly could answer an item (e.g. its expert and the generalist both failed)."""


@dataclass(eq=False)
class Pending:
    """An item the small stage escalated; :meth:`Engine.run_generalist` finishes it.

    ``out`` is its batch's small-stage output (shared by the batch's pending
    rows), ``row`` its row there, ``per`` the small stage's per-item timings (ms).
    """

    asm: Any
    out: Any
    row: int
    item: Any
    per: dict[str, float]


class Engine:
    """The assembly being served (``asm``, ``version``) and the batch pass over it."""

    def __init__(self, metrics: ServeMetrics, asm: Any = None, version: int | None = None) -> None:
        self.metrics = metrics
        self._snap: tuple[Any, int | None] = (None, None)
        if asm is not None:
            self.swap(asm, version)

    @property
    def asm(self) -> Any:
        return self._snap[0]

    @property
    def version(self) -> int | None:
        return self._snap[1]

    @property
    def ready(self) -> bool:
        return self._snap[0] is not None

    def snapshot(self) -> tuple[Any, int | None]:
        """The ``(assembly, version)`` being served, read together (a batch runs on one and answers its version)."""
        return self._snap

    def swap(self, asm: Any, version: int | None) -> None:
        """Serve ``asm`` from the next batch on (batches in flight keep the one they started with)."""
        self._snap = (asm, version)  # one assignment: a reader never sees one's assembly with another's version
        self.metrics.version.set(version or 0)

    # -- one batch ------------------------------------------------------------------
    def run_batch(self, items: Sequence[str], escalate: Sequence[bool], defer: bool = False,
                  snap: tuple[Any, int | None] | None = None) -> list[Prediction | Pending | BaseException]:
        """Answer ``items`` with ONE encoder batch; per item a Prediction, or the exception that stopped it.

        ``escalate[i]`` says whether item ``i`` may go to the generalist. With
        ``defer`` an escalated item is returned as a :class:`Pending` for
        :meth:`run_generalist`. ``snap``: the :meth:`snapshot` to run on (default:
        the current one). Runs in a worker thread (blocking, CPU-bound).
        """
        asm = (snap or self._snap)[0]  # the snapshot this batch runs on
        m = self.metrics
        n = len(items)
        m.batch_size.observe(n)
        t0 = time.perf_counter()
        try:
            X = asm.encoder.encode(list(items))
        except Exception as exc:  # the encoder failed: nobody can answer these items
            log.exception("encoder failed on a batch of %d items", n)
            m.batch_errors.labels(type(exc).__name__).inc(n)
            return [exc] * n
        t_enc = time.perf_counter() - t0
        results: list[Prediction | Pending | BaseException] = [PipelineError("not answered")] * n
        esc = np.asarray(escalate, bool)
        for flag in (True, False):
            rows = np.nonzero(esc == flag)[0]
            if len(rows):
                part = self._forward(asm, X[rows], [items[i] for i in rows], flag, t_enc * len(rows) / n, n, defer)
                for r, p in zip(rows.tolist(), part):
                    results[r] = p
        m.stage_latency.labels("encode").observe(t_enc)
        m.stage_latency.labels("batch_total").observe(time.perf_counter() - t0)
        return results

    def run_route(self, items: Sequence[Any], snap: tuple[Any, int | None] | None = None
                  ) -> list[np.ndarray | BaseException]:
        """The router's probabilities over the experts for ``items`` (ONE encoder batch): a row per item, or the
        exception that stopped it. ``snap`` as for :meth:`run_batch`."""
        asm = (snap or self._snap)[0]
        try:
            pr = asm.router.predict_proba(asm.encoder.encode(list(items)))
        except Exception as exc:
            if not isinstance(exc, ManyfoldError):
                log.exception("routing failed on a batch of %d items", len(items))
                self.metrics.batch_errors.labels(type(exc).__name__).inc(len(items))
            return [exc] * len(items)
        return list(pr)

    def _forward(self, asm: Any, X: np.ndarray, items: list[str], escalate: bool, t_enc: float,
                 batch_n: int, defer: bool = False) -> list[Prediction | Pending | BaseException]:
        t0 = time.perf_counter()
        try:
            out = asm.small_pass(X, escalate=escalate, items=items) if defer else asm.forward(X, items, escalate=escalate)
        except GeneralistError:  # the assembly handles these itself; anything else here is a bug upstream
            raise
        except Exception as exc:
            return self._expert_fallback(asm, X, items, escalate, exc, t_enc, batch_n)
        self._count(asm, out)
        total = t_enc + time.perf_counter() - t0
        per = {k: round(1e3 * v / len(items), 4) for k, v in {"encode": t_enc, **out.times, "total": total}.items()}
        per["batch_items"] = float(batch_n)
        if not (defer and out.escalated.any()):
            return asm.to_predictions(out, per)
        results: list[Prediction | Pending | BaseException] = [None] * len(items)  # type: ignore[list-item]
        now = np.nonzero(~out.escalated)[0]
        for r, p in zip(now.tolist(), asm.to_predictions(out.take(now), per)):
            results[r] = p
        for r in np.nonzero(out.escalated)[0].tolist():
            results[r] = Pending(asm, out, r, items[r], per)
        return results

    # -- the generalist stage ---------------------------------------------------------
    def run_generalist(self, pending: Sequence[Pending]) -> list[Prediction | BaseException]:
        """Finish escalated items (from any batches) with one generalist call per assembly snapshot.

        A :class:`GeneralistError` leaves the experts' answer flagged
        ``degraded`` (counted); any other error fails those items (logged, counted).
        """
        results: list[Prediction | BaseException] = [PipelineError("not answered")] * len(pending)
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(pending):
            groups.setdefault(id(p.asm), []).append(i)
        for idx in groups.values():
            for i, r in zip(idx, self._generalist_group(pending[idx[0]].asm, [pending[i] for i in idx])):
                results[i] = r
        return results

    def _generalist_group(self, asm: Any, pending: list[Pending]) -> list[Prediction | BaseException]:
        m = self.metrics
        n = len(pending)
        m.generalist_batch_size.observe(n)
        t0 = time.perf_counter()
        try:
            pg, fg = asm.generalist.signals([p.item for p in pending])
        except GeneralistError as exc:  # explicit, counted fallback: the experts' answer, flagged degraded
            failed: BaseException | None = exc
            m.generalist_failures.inc()
            m.degraded_items.inc(n)
            log.warning("generalist failed on %d escalated items (answered degraded): %s", n, exc)
        except Exception as exc:  # not a generalist's documented failure: these items get an error status
            log.exception("generalist stage failed on %d items", n)
            m.batch_errors.labels(type(exc).__name__).inc(n)
            return [exc] * n
        else:
            failed = None
        t_gen = time.perf_counter() - t0
        m.stage_latency.labels("generalist").observe(t_gen)
        batches: dict[int, list[int]] = {}
        for i, p in enumerate(pending):
            batches.setdefault(id(p.out), []).append(i)
        results: list[Prediction | BaseException] = [PipelineError("not answered")] * n
        gen_ms = round(1e3 * t_gen / n, 4)
        for sel in batches.values():
            out = pending[sel[0]].out
            rows = np.array([pending[i].row for i in sel])
            if failed is None:
                asm.resolve_escalated(out, rows, pg[sel], fg[sel])
            else:
                asm.mark_degraded(out, rows, failed)
            small = pending[sel[0]].per
            per = {**small, "generalist": gen_ms, "total": round(small["total"] + gen_ms, 4)}
            for i, pred in zip(sel, asm.to_predictions(out.take(rows), per)):
                results[i] = pred
        return results

    def skip_generalist(self, pending: Sequence[Pending], reason: str) -> list[Prediction]:
        """Answer escalated items without the generalist: the experts' answer, flagged ``degraded`` with ``reason``
        (the out-of-scope call from stage 1 alone, as when the generalist fails); counted as degraded items."""
        results: list[Prediction] = [None] * len(pending)  # type: ignore[list-item]
        batches: dict[int, list[int]] = {}
        for i, p in enumerate(pending):
            batches.setdefault(id(p.out), []).append(i)
        for sel in batches.values():
            first = pending[sel[0]]
            asm, out = first.asm, first.out
            rows = np.array([pending[i].row for i in sel])
            out.degraded[rows] = True
            out.reason[rows] = reason
            out.is_oos[rows] = asm.policy_.fallback_is_oos(out.oos_small[rows])
            for i, pred in zip(sel, asm.to_predictions(out.take(rows), first.per)):
                results[i] = pred
        self.metrics.degraded_items.inc(len(pending))
        return results

    def _count(self, asm: Any, out: Any) -> None:
        m = self.metrics
        # the generalist's time is observed only where it ran (deferred items: in the generalist stage)
        m.observe_stages({k: v for k, v in out.times.items() if k != "generalist" or v > 0})
        m.items.inc(len(out.final))
        names = asm.router.experts_
        top, n = np.unique(out.expert_idx[:, 0], return_counts=True)
        for j, c in zip(top.tolist(), n.tolist()):
            m.expert_items.labels(str(names[j])).inc(c)
        for i in np.nonzero(out.escalated)[0].tolist():
            reason = str(out.reason[i] or "")
            reason = "generalist_failed" if reason.startswith("generalist_failed") else reason
            m.escalations.labels(str(names[out.expert_idx[i, 0]]), reason).inc()
        if out.degraded.any():
            m.generalist_failures.inc()
            m.degraded_items.inc(int(out.degraded.sum()))

    # -- fallback: an expert raised -----------------------------------------------
    def _expert_fallback(self, asm: Any, X: np.ndarray, items: list[str], escalate: bool, exc: BaseException,
                         t_enc: float, batch_n: int) -> list[Prediction | BaseException]:
        """Find the experts that raise; their items go to the generalist, the others run again without them."""
        m = self.metrics
        n = len(items)
        try:
            pr = asm.router.predict_proba(X)
            idx, w = top_k(pr, asm.config.top_k)
        except Exception as rexc:  # the router itself failed: nobody can answer
            log.exception("router failed")
            m.batch_errors.labels(type(rexc).__name__).inc(n)
            return [rexc] * n
        names = asm.router.experts_
        failed: dict[int, BaseException] = {}
        for j in np.unique(idx).tolist():
            rows = np.nonzero((idx == j).any(1))[0]
            try:
                asm._route_experts[j].predict_proba(X[rows])
            except Exception as e:
                failed[j] = e
                m.expert_failures.labels(str(names[j])).inc()
                log.error("expert %r raised %s: %s; its items go to the generalist", str(names[j]), type(e).__name__, e)
        if not failed:  # not an expert's fault: report the original error for every item
            log.error("the assembly raised %s: %s", type(exc).__name__, exc)
            m.batch_errors.labels(type(exc).__name__).inc(n)
            return [exc] * n
        bad = np.isin(idx, list(failed)).any(1)
        results: list[Prediction | BaseException] = [exc] * n
        good = np.nonzero(~bad)[0]
        if len(good):
            part = self._forward(asm, X[good], [items[i] for i in good], escalate, t_enc * len(good) / n, batch_n)
            for r, p in zip(good.tolist(), part):
                results[r] = p
        rows = np.nonzero(bad)[0]
        for r, p in zip(rows.tolist(), self._generalist_only(asm, [items[i] for i in rows], pr[rows], idx[rows],
                                                               w[rows], failed, t_enc * len(rows) / n, batch_n)):
            results[r] = p
        return results

    def _generalist_only(self, asm: Any, items: list[str], pr: np.ndarray, idx: np.ndarray, w: np.ndarray,
                         failed: dict[int, BaseException], t_enc: float, batch_n: int) -> list[Prediction | BaseException]:
        m = self.metrics
        names = asm.router.experts_
        why = ", ".join(f"{names[j]} ({type(e).__name__}: {e})" for j, e in failed.items())
        if asm.generalist is None:
            err = PipelineError(f"expert failed and there is no generalist to fall back to: {why}")
            m.batch_errors.labels("PipelineError").inc(len(items))
            return [err] * len(items)
        t0 = time.perf_counter()
        try:
            pg, _ = asm.generalist.signals(items)
        except Exception as gexc:
            m.generalist_failures.inc()
            m.batch_errors.labels("PipelineError").inc(len(items))
            log.error("generalist failed (%s) while standing in for failed experts: %s", gexc, why)
            err = PipelineError(f"expert failed ({why}) and the generalist failed too ({type(gexc).__name__}: {gexc})")
            return [err] * len(items)
        t_gen = time.perf_counter() - t0
        m.stage_latency.labels("generalist").observe(t_gen)
        labels = asm.generalist.labels_
        oos = asm.config.oos_label
        p_oos = pg[:, labels == oos].sum(1) if (labels == oos).any() else np.zeros(len(items))
        per = {"encode": round(1e3 * t_enc / len(items), 4), "route": 0.0, "experts": 0.0,
               "generalist": round(1e3 * t_gen / len(items), 4),
               "total": round(1e3 * (t_enc + t_gen) / len(items), 4), "batch_items": float(batch_n)}
        out = []
        for i in range(len(items)):
            j = int(pg[i].argmax())
            gone = [str(names[k]) for k in idx[i] if k in failed]
            for g in gone:
                m.expert_fallback_items.labels(g).inc()
            m.escalations.labels(str(names[idx[i, 0]]), "expert_failed").inc()
            out.append(Prediction(
                label=str(labels[j]), confidence=round(float(pg[i, j]), 6),
                experts=tuple(str(names[k]) for k in idx[i]), expert_weights=tuple(round(float(v), 6) for v in w[i]),
                escalated=True, reason="expert_failed: " + ", ".join(gone), oos_score=round(float(p_oos[i]), 6),
                router_scores={str(names[k]): round(float(pr[i, k]), 6) for k in idx[i]}, timings_ms=per,
                degraded=False))
        m.items.inc(len(items))
        return out
