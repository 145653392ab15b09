"""Presence of one node's users in Redis: entries, leave events, reconciliation.

Each (user, node) pair present in a room is one entry of the room's presence set;
it counts while its node's heartbeat is fresh. The scripts that change entries send
the ``join``/``leave`` events in the same atomic step. This node's changes in one room
are serialised by a lock per room name, so the entries always end up matching the
local members.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING

from ..wire import presence_envelope
from .errors import LOST
from .keyspace import encode, entry_prefix, millis, text
from .state import Room, RoomState

if TYPE_CHECKING:
    from .hub import RedisHub

__all__ = ["Presence"]


class Presence:
    """This node's presence entries, for the :class:`~fullduplex.hub.redis.RedisHub`
    that owns it (its connection, scripts and rooms)."""

    def __init__(self, hub: RedisHub) -> None:
        self._hub = hub
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, room: str) -> asyncio.Lock:
        """The lock serialising this node's presence changes in ``room`` (kept while
        a room object or a running change holds it)."""
        lock = self._locks.get(room)
        if lock is None:
            lock = self._locks[room] = asyncio.Lock()
        return lock

    async def leave(self, gone: list[tuple[Room, str]]) -> None:
        """Drop this node's entries for users that left (never raises: a failure is
        repaired by the presence reconciliation that follows every reconnect)."""
        hub = self._hub
        client = hub._client
        if not hub._up or client is None:
            return
        keys = hub.keys
        node = hub.node_id.encode("ascii")
        # Each room's presence lock, in a fixed order (a holder never waits for another).
        locks = sorted({id(r.plock): r.plock for r, _ in gone}.items())
        async with contextlib.AsyncExitStack() as stack:
            for _, lock in locks:
                await stack.enter_async_context(lock)
            calls = [(r, user) for r, user in gone if user not in r.users]  # not back meanwhile
            if not calls:
                return
            pipe = client.pipeline(transaction=False)
            for r, user in calls:
                prefix = entry_prefix(user)
                await hub._scripts["leave"](
                    keys=[
                        keys.meta(r.name),
                        keys.presence(r.name),
                        keys.nodes,
                        keys.node_rooms(hub.node_id),
                    ],
                    args=[
                        prefix + node,
                        prefix,
                        encode(user),
                        encode(r.name),
                        r.channel,
                        b"1" if r.options.presence else b"0",
                        b"0" if r.users else b"1",
                        millis(hub.room_ttl),
                    ],
                    client=pipe,
                )
            assert hub._slots is not None
            try:
                async with hub._slots:
                    seqs = await pipe.execute()
            except LOST as exc:
                hub._lost(exc)
                return
        for (r, _), seq in zip(calls, seqs, strict=True):
            if seq and r.members and r.state is RoomState.LIVE and r.seq < seq:
                await hub._wait_seq(r, int(seq))

    def diff(self, r: Room, members: list[str], seq: int) -> None:
        """Tell local members about presence changes they missed while cut off.

        This node's own users count as present: the reconciliation that follows puts
        back any entry Redis lost, so they must not flap leave/join here.
        """
        before, after = set(r.known), set(members) | set(r.users)
        r.known = sorted(after)
        if before == after or not r.options.presence:
            return
        deliver = self._hub._deliver_presence
        for user in sorted(before - after):
            deliver(r, seq, presence_envelope(r.name, "leave", user))
        for user in sorted(after - before):
            deliver(r, seq, presence_envelope(r.name, "join", user))

    async def reconcile(self) -> None:
        """Make this node's presence entries match its members (after a reconnect, or
        after other nodes took it for dead)."""
        hub = self._hub
        assert hub._client is not None
        index = hub.keys.node_rooms(hub.node_id)
        names = {text(n) for n in await hub._client.smembers(index)}
        names.update(name for name, r in hub._rooms.items() if r.users)
        for name in sorted(names):
            await self.sync(name)

    async def sync(self, name: str, users: list[str] | None = None) -> None:
        """Make this node's entries in ``name`` exactly ``users`` (default: the users
        of its local members at that moment)."""
        hub = self._hub
        options = hub.room_options(name)
        keys = hub.keys
        async with self.lock(name):
            if users is None:
                r = hub._rooms.get(name)
                users = sorted(r.users) if r is not None else []
            try:
                await hub._scripts["sync"](
                    keys=[
                        keys.meta(name),
                        keys.presence(name),
                        keys.nodes,
                        keys.node_rooms(hub.node_id),
                    ],
                    args=[
                        hub.node_id.encode("ascii"),
                        encode(name),
                        keys.channel(name),
                        b"1" if options.presence else b"0",
                        millis(hub.room_ttl),
                        *[encode(u) for u in users],
                    ],
                )
            except LOST as exc:
                hub._lost(exc)
                if not hub._up:
                    return
                raise
