"""The Prometheus view of an app: a collector that reads plain counters at scrape time.

The connections, the engine and the hub count in int attributes
(:mod:`fullduplex.stats`); :class:`AppCollector` turns them into ``fullduplex_*``
metric families only when ``/metrics`` is scraped, so serving traffic makes no
``prometheus_client`` call at all. ``prometheus_client`` is the optional extra
``fullduplex[metrics]``; :func:`require_prometheus` says so in one line when it is
missing. The metric list is in ``docs/topics/operations.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..settings import SettingsError
from ..stats import HUB, MESSAGE_SCOPE, LatencyHistogram

if TYPE_CHECKING:
    from .app import App

__all__ = ["AppCollector", "render_metrics", "require_prometheus"]

MISSING = (
    "the metrics endpoint needs prometheus_client, which is not installed: "
    "pip install 'fullduplex[metrics]'"
)


def require_prometheus() -> None:
    """Raise :class:`~fullduplex.settings.SettingsError` (one line) when
    ``prometheus_client`` is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise SettingsError(MISSING) from None


def transport_of(connection: Any) -> str:
    """The transport name of a registered connection (HTTP keep-alive ones: ``http``)."""
    return str(getattr(connection, "transport_name", "http"))


class AppCollector:
    """A custom collector for one :class:`~fullduplex.server.app.App`."""

    def __init__(self, app: App) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []  # families are built per scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        app = self.app
        stats = app.stats
        open_by: dict[str, int] = {}
        messages_in, messages_out = stats.messages_in, stats.messages_out
        bytes_in, bytes_out = stats.bytes_in, stats.bytes_out
        dropped = stats.slow_consumer_dropped
        live_limited = 0
        connection: Any
        for connection in list(app.connections):
            name = transport_of(connection)
            open_by[name] = open_by.get(name, 0) + 1
            live_in = getattr(connection, "messages_in", None)
            if live_in is not None:
                messages_in += live_in
                messages_out += connection.messages_out
                bytes_in += connection.bytes_in
                bytes_out += connection.bytes_out
                dropped += getattr(connection, "dropped", 0)
                live_limited += getattr(connection, "rate_limited", 0)

        gauge = GaugeMetricFamily(
            "fullduplex_connections_open", "Open connections", labels=["transport"]
        )
        for name in sorted(set(open_by) | {"websocket", "http"}):
            gauge.add_metric([name], open_by.get(name, 0))
        yield gauge

        ready = GaugeMetricFamily(
            "fullduplex_ready", "1 while the node accepts new connections, 0 while draining"
        )
        ready.add_metric([], 0 if app.draining else 1)
        yield ready

        handshakes = CounterMetricFamily(
            "fullduplex_handshakes",
            "WebSocket opening handshakes by result and HTTP status",
            labels=["result", "status"],
        )
        for (result, status), count in sorted(stats.handshakes.items()):
            handshakes.add_metric([result, str(status)], count)
        yield handshakes

        messages = CounterMetricFamily(
            "fullduplex_messages", "WebSocket messages", labels=["direction"]
        )
        messages.add_metric(["in"], messages_in)
        messages.add_metric(["out"], messages_out)
        yield messages

        wire = CounterMetricFamily(
            "fullduplex_bytes", "WebSocket bytes on the wire", labels=["direction"]
        )
        wire.add_metric(["in"], bytes_in)
        wire.add_metric(["out"], bytes_out)
        yield wire

        closes = CounterMetricFamily(
            "fullduplex_connections_closed",
            "Connections closed, by transport and close code",
            labels=["transport", "code"],
        )
        for (name, code), count in sorted(stats.close_codes.items()):
            closes.add_metric([name, str(code)], count)
        yield closes

        drops = CounterMetricFamily(
            "fullduplex_slow_consumer_dropped_frames",
            "Broadcast frames discarded by a drop_oldest/latest slow-consumer policy",
        )
        drops.add_metric([], dropped)
        yield drops

        actions = CounterMetricFamily(
            "fullduplex_slow_consumer_actions",
            "Slow consumers closed: close (1013, broadcast queue full), "
            "overflow (1008, write buffer past its cap)",
            labels=["action"],
        )
        for action in ("close", "overflow"):
            actions.add_metric([action], stats.slow_consumer_actions.get(action, 0))
        yield actions

        limited = CounterMetricFamily(
            "fullduplex_rate_limited",
            "Requests or messages refused by a rate limiter, by scope",
            labels=["scope"],
        )
        scopes = dict(stats.rate_limited)
        scopes[MESSAGE_SCOPE] = scopes.get(MESSAGE_SCOPE, 0) + live_limited
        for scope, count in sorted(scopes.items()):
            limited.add_metric([scope], count)
        yield limited

        drained = CounterMetricFamily(
            "fullduplex_drained_connections", "Connections closed with 1012 by a graceful drain"
        )
        drained.add_metric([], stats.drained)
        yield drained

        yield _histogram(
            HistogramMetricFamily,
            "fullduplex_hub_fanout_seconds",
            "Time to hand one published message to every local receiver",
            HUB.fanout_seconds,
        )
        yield _histogram(
            HistogramMetricFamily,
            "fullduplex_hub_fanout_receivers",
            "Local receivers of one published message",
            HUB.fanout_size,
        )

        hub = app._hub  # never create a hub just to report on it
        hub_stats = getattr(hub, "stats", None)
        errors = CounterMetricFamily(
            "fullduplex_redis_errors",
            "Redis failures: connections lost and connection attempts that failed",
        )
        reconnects = CounterMetricFamily(
            "fullduplex_redis_reconnects", "Times the Redis connection came back after a loss"
        )
        up = GaugeMetricFamily("fullduplex_hub_up", "1 while the hub backend is reachable")
        if hub_stats is not None and hasattr(hub_stats, "outages"):
            outages = int(hub_stats.outages)
            failures = int(getattr(hub_stats, "connect_failures", 0))
            available = bool(getattr(hub, "available", True))
            errors.add_metric([], outages + failures)
            reconnects.add_metric([], outages - (0 if available else 1))
            up.add_metric([], 1 if available else 0)
        else:
            errors.add_metric([], 0)
            reconnects.add_metric([], 0)
            up.add_metric([], 1)
        yield errors
        yield reconnects
        yield up


def _histogram(family: Any, name: str, doc: str, histogram: LatencyHistogram) -> Any:
    metric = family(name, doc)
    metric.add_metric([], histogram.cumulative(), histogram.total)
    return metric


def registry_for(app: App) -> Any:
    """A registry holding the app's collector and the process_* metrics."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppCollector(app))
    ProcessCollector(registry=registry)
    return registry


def render_metrics(app: App) -> tuple[bytes, str]:
    """The exposition text of ``app``'s metrics and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = app._metrics_registry
    if registry is None:
        registry = app._metrics_registry = registry_for(app)
    return generate_latest(registry), CONTENT_TYPE_LATEST
