"""The server's Prometheus metrics (`GET /metrics`), in a registry of their own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Counters, gauges and histograms of one server process. Thread-safe (prometheus-client)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ttt_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("ttt_prompt_tokens", "prompt tokens read", registry=r)
        self.generated_tokens = Counter("ttt_generated_tokens", "tokens generated", registry=r)
        self.ttft = Histogram(
            "ttt_time_to_first_token_seconds",
            "request arrival to its first token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "ttt_inter_token_latency_seconds",
            "time between consecutive tokens of a row",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "ttt_batch_rows",
            "rows taking part in one forward (prefill group or decode step; padding not counted)",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256),
            registry=r,
        )
        self.package_steps = Counter(
            "ttt_decode_package_steps", "decode steps run by an AOT decode package (ttt export)", registry=r
        )
        self.active = Gauge("ttt_active_requests", "rows holding a slot", registry=r)
        self.queued = Gauge("ttt_queued_requests", "rows waiting for a slot", registry=r)
        self.state_bytes = Gauge("ttt_state_bytes_in_use", "bytes of state held by the rows in slots", registry=r)
        self.pool_bytes = Gauge("ttt_state_pool_bytes", "bytes of the slot pool (allocated once)", registry=r)
        self.sessions = Gauge("ttt_sessions_stored", "sessions in the session store", registry=r)

    def count_sessions_with(self, fn: Callable[[], int]) -> None:
        """Read the number of stored sessions from `fn` at every scrape."""
        self.sessions.set_function(fn)
