"""Per-connection rate limits: token buckets for messages and bytes a peer sends.

A handler returns :class:`RateLimits` from ``get_rate_limits()`` (the app's
``websocket_rate_limits`` setting by default: off); its engine then checks every
message it reads against a :class:`RateLimiter` before the handler sees it.
:class:`ClientLimits` (the ``client_rate_limits`` setting) bounds how fast one client
IP opens TCP connections and WebSocket handshakes, with one :class:`IPBuckets` table
per measure.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["ClientLimits", "IPBuckets", "RateLimiter", "RateLimits"]

ACTIONS: Final = frozenset(("close", "drop"))


def _check_rates(limits: RateLimits | ClientLimits, *names: str) -> None:
    """Raise ValueError unless each rate is positive or None and ``burst`` is positive."""
    for name in names:
        value = getattr(limits, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive or None, not {value!r}")
    if not limits.burst > 0:
        raise ValueError(f"burst must be a positive number of seconds, not {limits.burst!r}")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """How fast one peer may send; None leaves that measure unlimited.

    Each measure is a token bucket refilled at its rate and holding ``burst`` seconds
    of it, so short bursts pass and the average is held. A message larger than the
    byte bucket still passes when the bucket is not empty (it goes into debt), so no
    message is refused forever. Beyond the limit, ``action`` decides: ``"close"``
    closes the connection with 1008; ``"drop"`` discards the message and calls the
    handler's ``on_rate_limited(message)``, which may send an error reply.
    """

    messages_per_second: float | None = None
    bytes_per_second: float | None = None
    burst: float = 1.0
    action: Literal["close", "drop"] = "close"

    def __post_init__(self) -> None:
        _check_rates(self, "messages_per_second", "bytes_per_second")
        if self.action not in ACTIONS:
            raise ValueError(
                f"unknown rate-limit action {self.action!r}; use one of {sorted(ACTIONS)}"
            )


class RateLimiter:
    """The buckets of one connection; ``allow(size, now)`` takes a message's tokens."""

    __slots__ = ("_bytes", "_last", "_messages", "exceeded", "limits")

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self._messages = max((limits.messages_per_second or 0.0) * limits.burst, 1.0)
        self._bytes = (limits.bytes_per_second or 0.0) * limits.burst
        self._last = now
        #: Set once a "close" limit was passed: every later message is refused.
        self.exceeded = False

    def allow(self, size: int, now: float) -> bool:
        """True if a message of ``size`` bytes may pass at ``now``; takes its tokens."""
        limits = self.limits
        elapsed = now - self._last
        self._last = now
        per_message = limits.messages_per_second
        per_byte = limits.bytes_per_second
        messages = self._messages
        bytes_ = self._bytes
        if per_message is not None:
            messages = min(messages + elapsed * per_message, max(per_message * limits.burst, 1.0))
        if per_byte is not None:
            bytes_ = min(bytes_ + elapsed * per_byte, per_byte * limits.burst)
        allowed = (per_message is None or messages >= 1.0) and (per_byte is None or bytes_ > 0)
        if allowed:
            messages -= 1.0
            bytes_ -= size
        self._messages = messages
        self._bytes = bytes_
        return allowed


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """How fast one client IP may open TCP connections and WebSocket handshakes.

    Each measure (None: unlimited) is a token bucket per IP refilled at its rate and
    holding ``burst`` seconds of it (at least one). A connection beyond the limit is
    closed at once, before anything is read; a handshake beyond it is answered
    ``429 Too Many Requests`` with ``Retry-After``. The handshake limit uses the
    request's ``remote_ip`` (the proxy's client address when ``xheaders`` is on); the
    connection limit can only see the socket's peer. At most ``max_clients`` IPs are
    remembered per measure (the least recently seen is forgotten first: about 250
    bytes each).
    """

    connections_per_second: float | None = None
    handshakes_per_second: float | None = None
    burst: float = 1.0
    max_clients: int = 10_000

    def __post_init__(self) -> None:
        _check_rates(self, "connections_per_second", "handshakes_per_second")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {self.max_clients!r}")


class IPBuckets:
    """One token bucket per client IP, in a table of at most ``max_clients`` entries."""

    __slots__ = ("_table", "capacity", "max_clients", "rate")

    def __init__(self, rate: float, burst: float, max_clients: int) -> None:
        self.rate = rate
        self.capacity = max(rate * burst, 1.0)
        self.max_clients = max_clients
        #: ip -> [tokens, time of the last update], least recently seen first.
        self._table: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def take(self, ip: str, now: float) -> float:
        """Take one token for ``ip``: 0.0 if allowed, else the seconds until one refills."""
        table = self._table
        bucket = table.get(ip)
        if bucket is None:
            if len(table) >= self.max_clients:
                table.popitem(last=False)
            bucket = table[ip] = [self.capacity, now]
        else:
            table.move_to_end(ip)
            bucket[0] = min(bucket[0] + (now - bucket[1]) * self.rate, self.capacity)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self.rate
