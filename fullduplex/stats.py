"""Operational counters kept as plain integers, read by the metrics endpoint at scrape time.

Nothing here talks to Prometheus: the hot paths (engine, hub fan-out) only add to int
attributes, and :mod:`fullduplex.server.metrics` turns them into metric families when
someone scrapes. A connection keeps its own message and byte counts while it is open
(``WebSocketEngine.messages_in`` and friends); when it closes, the server folds them
into the app's :class:`ServerStats`, so a scrape adds the totals of closed connections
to the live ones. This module imports only the standard library, so the engine and the
hub can use it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["HUB", "HubStats", "LatencyHistogram", "ServerStats"]

#: Seconds: bucket bounds of the hub fan-out time histogram.
FANOUT_SECONDS_BUCKETS: tuple[float, ...] = (
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
)  # fmt: skip
#: Receivers: bucket bounds of the fan-out size histogram.
FANOUT_SIZE_BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000,
)  # fmt: skip


class LatencyHistogram:
    """A fixed-bucket histogram in plain ints: ``observe`` is a bisect and two adds."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        #: Non-cumulative counts per bucket; the last one is ``+Inf``.
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, cumulative count)`` pairs as Prometheus wants them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((repr(float(bound)), running))
        out.append(("+Inf", self.count))
        return out


class HubStats:
    """Counters of the local fan-out, shared by every hub of the process."""

    __slots__ = ("fanout_seconds", "fanout_size")

    def __init__(self) -> None:
        #: Time to hand one published message to every local receiver.
        self.fanout_seconds = LatencyHistogram(FANOUT_SECONDS_BUCKETS)
        #: Receivers one published message was handed to on this node.
        self.fanout_size = LatencyHistogram(FANOUT_SIZE_BUCKETS)

    def record(self, started: float, receivers: int) -> None:
        """One fan-out ended: it began at ``started`` (``time.perf_counter()``)."""
        self.fanout_seconds.observe(time.perf_counter() - started)
        self.fanout_size.observe(receivers)


#: The ``scope`` label of WebSocket messages refused by ``websocket_rate_limits``.
MESSAGE_SCOPE = "message"

#: The process's hub fan-out counters (hubs are per process, like the event loop).
HUB = HubStats()


class ServerStats:
    """What an app's connections did, totals of the connections that are gone.

    Live connections keep their own counts; :meth:`fold` moves them here when a
    connection closes. Handshake outcomes, close codes and rate-limit rejections are
    counted as they happen (once per connection, never per message).
    """

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        #: ``(transport, code)`` -> connections closed with that code.
        self.close_codes: dict[tuple[str, int], int] = {}
        #: ``(result, status)`` -> handshakes (result: accepted, rejected, unauthorized).
        self.handshakes: dict[tuple[str, int], int] = {}
        #: Broadcast frames a slow consumer's drop policy discarded.
        self.slow_consumer_dropped = 0
        #: ``action`` -> slow consumers closed (close: 1013 policy; overflow: 1008 cap).
        self.slow_consumer_actions: dict[str, int] = {}
        #: ``scope`` -> requests or messages refused by a rate limiter.
        self.rate_limited: dict[str, int] = {}
        #: HTTP requests answered, by status class (``2xx``...).
        self.http_requests: dict[str, int] = {}
        #: Connections closed by a graceful drain.
        self.drained = 0

    def handshake(self, result: str, status: int) -> None:
        key = (result, status)
        self.handshakes[key] = self.handshakes.get(key, 0) + 1

    def rate_limit(self, scope: str) -> None:
        """Count one rejection by a rate limiter (``scope``: what was limited)."""
        self.rate_limited[scope] = self.rate_limited.get(scope, 0) + 1

    def fold(self, connection: Any) -> None:
        """A connection closed: add its counts to the totals (once per connection)."""
        self.messages_in += connection.messages_in
        self.messages_out += connection.messages_out
        self.bytes_in += connection.bytes_in
        self.bytes_out += connection.bytes_out
        dropped = getattr(connection, "dropped", 0)
        if dropped:
            self.slow_consumer_dropped += dropped
        limited = getattr(connection, "rate_limited", 0)
        if limited:
            self.rate_limited[MESSAGE_SCOPE] = self.rate_limited.get(MESSAGE_SCOPE, 0) + limited
        key = (connection.transport_name, connection.close_code or 1006)
        self.close_codes[key] = self.close_codes.get(key, 0) + 1
        action = slow_consumer_action(connection)
        if action is not None:
            self.slow_consumer_actions[action] = self.slow_consumer_actions.get(action, 0) + 1


def slow_consumer_action(connection: Any) -> str | None:
    """``"close"`` / ``"overflow"`` when the server closed ``connection`` as a slow
    consumer (broadcast queue full / write buffer past its cap), else None."""
    protocol = getattr(connection, "connection", None)
    sent = getattr(protocol, "close_sent", None)
    if not sent:
        return None
    code, reason = sent
    if not reason.startswith("slow consumer"):
        return None
    return "close" if code == 1013 else "overflow"
