"""The Redis hub: rooms, presence and history shared by processes and machines.

:class:`RedisHub` (in :mod:`.hub`) composes the parts, each in its own module: key
names (:mod:`.keyspace`), the Lua scripts (:mod:`.scripts`, sources in ``lua/``), the
room state machine (:mod:`.state`), presence (:mod:`.presence`) and the pub/sub
listener (:mod:`.listener`). The design is in ``docs/topics/redis.md``.

The key names and scripts are shared with outside publishers
(:mod:`fullduplex.hub.publish`) and need no Redis client; the hub itself needs the
``redis`` package, imported when one of its names is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import HubUnavailable
from .keyspace import DEFAULT_PREFIX, DEFAULT_ROOM_TTL, Keyspace

if TYPE_CHECKING:
    from .hub import SERVICE_RESTART, RedisHub, RedisHubStats

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_ROOM_TTL",
    "SERVICE_RESTART",
    "HubUnavailable",
    "Keyspace",
    "RedisHub",
    "RedisHubStats",
]

_NEEDS_REDIS = frozenset(("SERVICE_RESTART", "RedisHub", "RedisHubStats"))


def __getattr__(name: str) -> Any:
    # The redis client package is optional: only the hub imports it.
    if name in _NEEDS_REDIS:
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
