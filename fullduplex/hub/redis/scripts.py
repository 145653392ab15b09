"""The Lua scripts the Redis hub runs, loaded from the ``lua/`` files next to this module.

Each script runs atomically in Redis. Its KEYS and ARGV are documented at the top of
its file. Shared helpers (``prelude.lua``, and ``presence.lua`` for the scripts that
change presence) are prepended when a script is loaded. Needs no Redis client.

Pub/sub payloads are a kind byte followed by netstring-like fields ``<len>:<bytes>``
(binary-safe, cheap to build in Lua and to split in Python):

* ``m`` seq offset origin pubid data epoch — a message ("" offset and epoch:
  ``store=False``);
* ``p`` seq event user member… — a presence event (``join``/``leave``, members after);
* ``a`` origin pubid data — :meth:`~fullduplex.hub.base.Hub.publish_all` (broadcast
  channel).

``seq`` numbers every event of a room, ``offset`` only its stored messages.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final

from ..base import DEFAULT_DEDUP_WINDOW, DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_SIZE, new_epoch
from .keyspace import DEFAULT_MAX_HISTORY_BYTES, DEFAULT_ROOM_TTL, Keyspace, encode, millis

__all__ = ["SCRIPT_NAMES", "publish_call", "source"]

#: Every script, by name (``<name>.lua``); the value says whether it needs the
#: presence helpers.
SCRIPT_NAMES: Final = {
    "publish": False,
    "state": True,
    "leave": True,
    "sync": True,
    "hello": False,
    "heartbeat": True,
    "repair": False,
}


def _read(name: str) -> str:
    package = resources.files(__name__.rpartition(".")[0])
    return package.joinpath("lua", f"{name}.lua").read_text("utf-8")


@cache
def source(name: str) -> str:
    """The full source of script ``name`` (helpers included), as sent to Redis."""
    if name not in SCRIPT_NAMES:
        raise KeyError(f"no Lua script {name!r}")
    parts = [_read("prelude")]
    if SCRIPT_NAMES[name]:
        parts.append(_read("presence"))
    parts.append(_read(name))
    return "\n".join(parts)


def publish_call(
    keys: Keyspace,
    room: str,
    data_json: bytes,
    *,
    origin: bytes = b"",
    pubid: bytes = b"",
    store: bool = True,
    history_size: int = DEFAULT_HISTORY_SIZE,
    history_max_age: float | None = None,
    room_ttl: float | None = DEFAULT_ROOM_TTL,
    epoch: str | None = None,
    history_bytes: int = DEFAULT_HISTORY_BYTES,
    id: str | None = None,
    dedup_window: int = DEFAULT_DEDUP_WINDOW,
    max_history_bytes: int | None = DEFAULT_MAX_HISTORY_BYTES,
) -> tuple[list[bytes], list[bytes | int]]:
    """KEYS and ARGV of the ``publish`` script for one message."""
    return (
        [
            keys.meta(room),
            keys.log(room),
            keys.ids(room),
            keys.kept,
            keys.recent,
            keys.total,
        ],
        [
            keys.channel(room),
            data_json,
            origin,
            pubid,
            b"1" if store else b"0",
            max(history_size, 0),
            millis(history_max_age),
            millis(room_ttl),
            (epoch or new_epoch()).encode("ascii"),
            b"" if id is None else encode(id),
            max(dedup_window, 0),
            max(history_bytes, 0),
            max(max_history_bytes or 0, 0),
            encode(room),
            encode(keys.prefix),
        ],
    )
