"""Prometheus metrics of one server (each app has its own registry, so apps never share counters)."""

from __future__ import annotations

from typing import Any

from .._exceptions import missing_dependency

__all__ = ["ServeMetrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """Request counts and latencies, per-stage latencies, batch sizes, queue depth, escalations and failures."""

    def __init__(self) -> None:
        try:
            import prometheus_client as pc
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise missing_dependency("prometheus_client", "serve", "manyfold serve's /metrics") from exc
        self._pc = pc
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
        self.large_generalist_nice = pc.Gauge(
            "manyfold_large_generalist_nice", "niceness the thread of large requests' generalist calls runs at "
            "(0 where large_generalist_nice is 0 or could not be applied: see the log)", registry=r)
        self.in_flight = pc.Gauge("manyfold_requests_in_flight", "predict and route requests accepted and not yet answered",
                                  registry=r)
        self.items = pc.Counter("manyfold_items", "items answered", registry=r)
        self.escalations = pc.Counter("manyfold_escalations", "items escalated to the generalist, by top expert and reason",
                                      ["expert", "reason"], registry=r)
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
