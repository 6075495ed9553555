"""Prometheus metrics, one registry per app (tests build several apps in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Requests by route and status, latency, batch sizes, queue depth, decode failures, the model."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "creative_qa_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "creative_qa_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "creative_qa_batch_size", "frames per onnxruntime run", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "creative_qa_queue_depth",
            "creatives admitted (decoding, queued or running) and not yet answered",
            registry=r,
        )
        self.rejected = Counter(
            "creative_qa_rejected", "creatives refused with 503 because the queue was full", registry=r
        )
        self.decode_failures = Counter(
            "creative_qa_decode_failures", "creatives that could not be decoded, by reason", ["reason"], registry=r
        )
        self.model = Gauge(
            "creative_qa_model_info",
            "the model being served (value 1)",
            ["name", "version", "taxonomy_version"],
            registry=r,
        )
        self.reloads = Counter("creative_qa_reloads", "model reloads by outcome", ["outcome"], registry=r)

    def set_model(self, info: dict[str, str]) -> None:
        self.model.clear()
        self.model.labels(info["name"], info["version"], info["taxonomy_version"]).set(1)


def route_label(scope: Scope) -> str:
    """The route template a request matched (``/v1/score``), or ``unmatched``: a bounded label set."""
    route = scope.get("route")
    if route is None:
        # NOTE: plain Starlette routes (FastAPI's /docs, /redoc, /openapi.json) do not put themselves in the scope
        app = scope.get("app")
        route = next((r for r in getattr(app, "routes", ()) if r.matches(scope)[0] is not Match.NONE), None)
    return getattr(route, "path", None) or "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (unknown paths: ``unmatched``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = route_label(scope)
            self.metrics.requests.labels(path, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
