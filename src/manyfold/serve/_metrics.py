"""Prometheus metrics of one server (each app has its own registry, so apps never share counters)."""

from __future__ import annotations

import time
from typing import Any

from .._exceptions import missing_dependency

__all__ = ["ServeMetrics", "INFERENCE_ENDPOINTS"]

#: latency buckets (seconds): fine enough for the console's percentiles per stage (about 25-50% apart up to 1 s)
_LATENCY = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
            0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
#: the endpoints whose requests the console counts as traffic
INFERENCE_ENDPOINTS = ("/v1/predict", "/v1/route")
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _total(metric: Any) -> float:
    """The value of an unlabelled counter (its ``_total`` sample) or gauge."""
    fam = metric.collect()[0]
    return sum(s.value for s in fam.samples if s.name in (fam.name, fam.name + "_total"))


class ServeMetrics:
    """Request counts and latencies, per-stage latencies, batch sizes, queue depth, escalations and failures."""

    def __init__(self) -> None:
        try:
            import prometheus_client as pc
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise missing_dependency("prometheus_client", "serve", "manyfold serve's /metrics") from exc
        self._pc = pc
        self._started = time.monotonic()
        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.requests = pc.Counter("manyfold_http_requests", "HTTP requests by endpoint and status code",
                                   ["endpoint", "method", "status"], registry=r)
        self.request_latency = pc.Histogram("manyfold_http_request_duration_seconds", "HTTP request latency",
                                            ["endpoint"], buckets=_LATENCY, registry=r)
        self.stage_latency = pc.Histogram("manyfold_stage_duration_seconds",
                                          "time per pipeline stage and batch (queue: per request)",
                                          ["stage"], buckets=_LATENCY, registry=r)
        self.batch_size = pc.Histogram("manyfold_batch_size_items", "items per encoder batch", buckets=_SIZES, registry=r)
        self.batch_requests = pc.Histogram("manyfold_batch_size_requests", "requests per micro-batch",
                                           buckets=_SIZES, registry=r)
        self.queue_depth = pc.Gauge("manyfold_queue_depth", "requests waiting for a batch", registry=r)
        self.generalist_batch_size = pc.Histogram("manyfold_generalist_batch_size_items",
                                                  "escalated items per generalist call", buckets=_SIZES, registry=r)
        self.generalist_queue_depth = pc.Gauge("manyfold_generalist_queue_depth",
                                               "escalated items waiting for the generalist", registry=r)
        self.large_nice = pc.Gauge(
            "manyfold_large_nice", "niceness the large requests' thread (their parts and generalist calls) runs at "
            "(0 where large_nice is 0 or could not be applied: see the log)", registry=r)
        self.in_flight = pc.Gauge("manyfold_requests_in_flight", "predict and route requests accepted and not yet answered",
                                  registry=r)
        self.items = pc.Counter("manyfold_items", "items answered", registry=r)
        self.escalations = pc.Counter("manyfold_escalations", "items escalated to the generalist, by top expert and reason",
                                      ["expert", "reason"], registry=r)
        self.expert_items = pc.Counter("manyfold_expert_items", "items answered, by the expert the router ranked first",
                                       ["expert"], registry=r)
        self.expert_failures = pc.Counter("manyfold_expert_failures", "batches in which an expert raised", ["expert"],
                                          registry=r)
        self.expert_fallback_items = pc.Counter("manyfold_expert_fallback_items",
                                                "items answered by the generalist because their expert failed",
                                                ["expert"], registry=r)
        self.generalist_failures = pc.Counter("manyfold_generalist_failures",
                                              "generalist calls that failed (answers flagged degraded)", registry=r)
        self.degraded_items = pc.Counter("manyfold_degraded_items", "items answered degraded", registry=r)
        self.generalist_skipped = pc.Counter("manyfold_generalist_skipped_items",
                                             "escalated items answered by the experts (degraded) because their "
                                             "request's escalations passed max_escalated_chars", registry=r)
        self.generalist_deadline = pc.Counter("manyfold_generalist_deadline_items",
                                              "escalated items answered by the experts (degraded) because the "
                                              "generalist had not taken them within generalist_deadline_ms", registry=r)
        self.rejected = pc.Counter("manyfold_rejected_requests", "requests refused or given up: queue_full, work_full, timeout, disconnected, header_timeout, connections",
                                   ["reason"], registry=r)
        self.batch_errors = pc.Counter("manyfold_batch_errors", "items that got no answer because the pipeline raised",
                                       ["error"], registry=r)
        self.reloads = pc.Counter("manyfold_reloads", "assembly reloads and reconfigurations by outcome", ["outcome"],
                                  registry=r)
        self.version = pc.Gauge("manyfold_assembly_version", "registry version being served (0: not from a registry)",
                                registry=r)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return self._pc.generate_latest(self.registry), self._pc.CONTENT_TYPE_LATEST

    def observe_stages(self, times: dict[str, Any]) -> None:
        for stage, seconds in times.items():
            self.stage_latency.labels(stage).observe(float(seconds))

    def snapshot(self) -> dict[str, Any]:
        """The counters the web console's live view differentiates (plain JSON; cumulative since start).

        ``time`` (Unix seconds) and ``uptime_s``; ``requests``: inference requests (``/v1/predict`` and
        ``/v1/route``) by status code; ``items``; ``experts``: per expert (top-ranked), ``items`` and
        ``escalated``; ``stages``: per stage (and ``request``: ``/v1/predict`` end to end), the latency histogram's upper bounds ``le`` (seconds; the last is
        ``+Inf``, written as None), cumulative ``counts``, ``sum`` and ``count``; the gauges ``queue_depth``,
        ``generalist_queue_depth``, ``in_flight``; ``rejected`` by reason.
        """
        requests: dict[str, float] = {}
        for s in self.requests.collect()[0].samples:
            if s.name.endswith("_total") and s.labels.get("endpoint") in INFERENCE_ENDPOINTS:
                code = s.labels["status"]
                requests[code] = requests.get(code, 0.0) + s.value
        experts: dict[str, dict[str, float]] = {}
        for metric, key in ((self.expert_items, "items"), (self.escalations, "escalated")):
            for s in metric.collect()[0].samples:
                if s.name.endswith("_total"):
                    e = experts.setdefault(s.labels["expert"], {"items": 0.0, "escalated": 0.0})
                    e[key] += s.value
        stages: dict[str, dict[str, Any]] = {}
        http = [s for s in self.request_latency.collect()[0].samples if s.labels.get("endpoint") == "/v1/predict"]
        for s in [*http, *self.stage_latency.collect()[0].samples]:
            name = s.labels.get("stage", "request")  # "request": /v1/predict end to end, as the server saw it
            st = stages.setdefault(name, {"le": [], "counts": [], "sum": 0.0, "count": 0.0})
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                st["le"].append(None if le == float("inf") else le)
                st["counts"].append(s.value)
            elif s.name.endswith("_sum"):
                st["sum"] = s.value
            elif s.name.endswith("_count"):
                st["count"] = s.value
        rejected = {s.labels["reason"]: s.value for s in self.rejected.collect()[0].samples if s.name.endswith("_total")}
        return {"time": time.time(), "uptime_s": round(time.monotonic() - self._started, 3), "requests": requests,
                "items": _total(self.items), "experts": experts, "stages": stages,
                "queue_depth": _total(self.queue_depth), "generalist_queue_depth": _total(self.generalist_queue_depth),
                "in_flight": _total(self.in_flight), "rejected": rejected}
