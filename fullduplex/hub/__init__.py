"""Rooms, presence, history and broadcast (one frame encoded for N receivers).

``from fullduplex.hub import broadcast`` is the low-level fan-out;
:class:`MemoryHub` (default) and the Redis backend implement :class:`Hub`;
:mod:`fullduplex.hub.wire` builds the rooms wire protocol, which
:class:`fullduplex.RoomHandler` (in :mod:`fullduplex.server.rooms`) speaks to browsers
and programs. The hub never imports the server: it talks to connections only.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    POLICIES,
    Entry,
    Gap,
    Hub,
    HubClosed,
    HubUnavailable,
    JoinResult,
    OutcomeUnknown,
    Policy,
    Receiver,
    RoomOptions,
    broadcast,
)
from .memory import MemoryHub

# Publishing from outside a server (Django, Flask, cron); redis is imported on first call.
from .publish import publish, publish_sync

__all__ = [
    "POLICIES",
    "Entry",
    "Gap",
    "Hub",
    "HubClosed",
    "HubUnavailable",
    "JoinResult",
    "MemoryHub",
    "OutcomeUnknown",
    "Policy",
    "Receiver",
    "RoomOptions",
    "broadcast",
    "create_hub",
    "publish",
    "publish_sync",
]


def create_hub(setting: Hub | str | None = None, **options: Any) -> Hub:
    """The hub for an App's ``hub`` setting.

    ``None``, ``"memory"`` or ``"memory://"``: a new :class:`MemoryHub`. A :class:`Hub`
    instance: itself. ``"redis://host:port/db"``: the Redis backend
    (``RedisHub.from_url(url)`` in :mod:`fullduplex.hub.redis`). ``options`` (the App's
    ``hub_options`` setting, e.g. ``history_size``) go to the backend's constructor.
    """
    if setting is None or setting in ("memory", "memory://"):
        return MemoryHub(**options)
    if isinstance(setting, Hub):
        return setting
    if isinstance(setting, str) and setting.startswith(("redis://", "rediss://", "unix://")):
        backend = importlib.import_module(".redis", __name__)  # needs the redis package
        hub: Hub = backend.RedisHub.from_url(setting, **options)
        return hub
    raise ValueError(f"hub setting must be a Hub, 'memory' or a redis:// URL, not {setting!r}")

