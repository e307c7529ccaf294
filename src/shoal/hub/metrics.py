"""Prometheus metrics of one hub process, on a registry of its own (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shoal_hub_requests_total",
            "HTTP requests served, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shoal_hub_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            registry=self.registry,
        )
        self.logins = Counter(
            "shoal_hub_logins_total",
            "Token grants by kind (device, refresh)",
            ["kind"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "shoal_hub_auth_failures_total",
            "Refused credentials by reason",
            ["reason"],
            registry=self.registry,
        )
