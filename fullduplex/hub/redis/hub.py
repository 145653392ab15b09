"""The Redis hub: rooms, presence and history shared by processes and machines.

Each process (a *node*) keeps its own members, as :class:`MemoryHub` does, and shares
everything else through Redis:

* **offsets** — one Lua script increments the room's counters, appends the message
  to the room's stream (capped by ``history_size``, optionally ``history_max_age``)
  and PUBLISHes it: offsets, history and live delivery always agree;
* **fan-out** — each node subscribes to the channels of the rooms it has members in;
  a message arrives once per node, is encoded as one frame there and handed to the
  local members with :func:`~fullduplex.hub.base.deliver_frame`;
* **joins** — the node is subscribed before it reads a room's state; every event has
  a per-room sequence number (``seq``), so the node drops what it already has and a
  new member starts exactly after the state it was given (no miss, no duplicate);
* **presence** — one entry per (user, node) in a sorted set; entries count only while
  their node's heartbeat (``presence_ttl``) is fresh; live nodes remove a dead node's
  entries and send the ``leave`` events;
* **outages** — publishes and joins raise :class:`HubUnavailable`; the node
  reconnects with jittered backoff, resubscribes, delivers the messages its members
  missed from the streams (or closes them with 1012 so they rejoin with ``since``
  and get an explicit gap), logs what the outage cost and counts it in :attr:`stats`.

The design, its guarantees and its limits are in ``docs/topics/redis.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ...protocol.frames import OP_TEXT, encode_frame
from ..base import (
    DEFAULT_DEDUP_WINDOW,
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_SIZE,
    DEFAULT_MAX_PENDING,
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
    deliver_frame,
    exclusion,
    new_epoch,
    resolve_since,
)
from ..wire import broadcast_bytes, dumps, message_bytes, presence_envelope
from .errors import LOST, RedisConnectionError
from .keyspace import (
    DEFAULT_MAX_HISTORY_BYTES,
    DEFAULT_PREFIX,
    DEFAULT_ROOM_TTL,
    Keyspace,
    decode,
    encode,
    entry_prefix,
    millis,
    text,
)
from .listener import Event, Listener, parse_event, split_fields
from .presence import Presence
from .scripts import SCRIPT_NAMES, publish_call, source
from .state import Room, RoomState, Snapshot

# Module-level names for the per-event checks (no class attribute lookup per message).
_LIVE: Final = RoomState.LIVE
_NEW: Final = RoomState.NEW

__all__ = ["HubUnavailable", "RedisHub", "RedisHubStats"]

logger = logging.getLogger("fullduplex.hub")


#: Events buffered for a room while it (re)synchronises before it resyncs again.
_MAX_BUFFER: Final = 100_000
#: Close code for members whose feed could not be continued: reconnect and rejoin.
SERVICE_RESTART: Final = 1012


def _safe_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class RedisHubStats:
    """What this node's Redis connection went through (counters since start)."""

    #: Times the connection to Redis was lost.
    outages: int = 0
    #: Seconds spent without Redis, in total and in the last outage.
    outage_seconds: float = 0.0
    last_outage_seconds: float = 0.0
    #: Publishes, joins and reads refused with HubUnavailable.
    refused: int = 0
    #: Messages delivered late, from the streams, after an outage.
    caught_up: int = 0
    #: Rooms whose feed could not be continued (trimmed history, lost data).
    lost_rooms: int = 0
    #: Members closed with 1012 because of those (they rejoin with ``since``).
    closed_members: int = 0
    #: Reconnects that found Redis had lost its data (restart without persistence).
    data_losses: int = 0
    #: Dead nodes whose presence this node removed.
    reaped_nodes: int = 0
    #: Connection attempts that failed (Redis down or refusing).
    connect_failures: int = 0

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------- hub


class RedisHub(Hub):
    """A :class:`~fullduplex.hub.base.Hub` shared by every process using one Redis.

    Create it with :meth:`from_url`; it connects on first use, from the running event
    loop. Options: ``history_size`` (messages kept per room), ``history_bytes``
    (bytes kept per room), ``max_history_bytes`` (bytes all rooms of the namespace
    keep together; None: no such limit), ``dedup_window`` (publish ids remembered per
    room), ``history_max_age``
    (seconds; older messages are dropped from history too), ``presence_ttl`` (seconds
    after which a silent node's users count as gone), ``prefix`` (namespace of keys and
    channels), ``channel_prefix`` (a room's channel is ``channel_prefix + room``),
    ``room_ttl`` (seconds of inactivity after which Redis forgets a room; None: never),
    ``connect_timeout``, ``command_timeout``, ``reconnect_min``/``reconnect_max``
    (backoff bounds in seconds), ``max_connections`` (commands in flight at once;
    more wait their turn), plus the :class:`Hub` options.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_max_age: float | None = None,
        presence_ttl: float = 15.0,
        prefix: str = DEFAULT_PREFIX,
        channel_prefix: str | None = None,
        room_ttl: float | None = DEFAULT_ROOM_TTL,
        policy: Policy = "close",
        max_pending: int = DEFAULT_MAX_PENDING,
        presence: bool = True,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        max_connections: int = 32,
        node_id: str | None = None,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        max_history_bytes: int | None = DEFAULT_MAX_HISTORY_BYTES,
    ) -> None:
        super().__init__(
            history_size=history_size,
            policy=policy,
            max_pending=max_pending,
            presence=presence,
            history_bytes=history_bytes,
            dedup_window=dedup_window,
        )
        if presence_ttl <= 0:
            raise ValueError("presence_ttl must be positive")
        if history_max_age is not None and history_max_age <= 0:
            raise ValueError("history_max_age must be positive (or None)")
        if room_ttl is not None and room_ttl <= 0:
            raise ValueError("room_ttl must be positive (or None)")
        if not 0 < reconnect_min <= reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        if max_history_bytes is not None and max_history_bytes < 0:
            raise ValueError("max_history_bytes must be 0 or more (or None)")
        #: Bytes of history all rooms of the namespace keep together (None: no limit).
        self.max_history_bytes = max_history_bytes
        self.url = url
        self.history_max_age = history_max_age
        self.presence_ttl = presence_ttl
        self.room_ttl = room_ttl
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.keys = Keyspace(prefix, channel_prefix)
        #: This node's id in Redis (presence entries, heartbeat).
        self.node_id = node_id or f"{socket.gethostname()[:24]}-{secrets.token_hex(6)}"
        self._node = self.node_id.encode("ascii")
        self.stats = RedisHubStats()
        #: Frames handed to local members since the hub was created.
        self.deliveries = 0

        self._rooms: dict[str, Room] = {}
        self._by_channel: dict[bytes, Room] = {}
        self._presence = Presence(self)
        self._member_rooms: dict[Receiver, set[str]] = {}
        self._excludes: dict[bytes, Collection[object]] = {}
        self._all_waiters: dict[bytes, asyncio.Future[None]] = {}
        self._pubids = itertools.count(1)
        self._up = False
        self._epoch: bytes | None = None
        self._down_since: float | None = None
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._pubsub: Any = None
        self._sub_lock: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None
        #: The current pub/sub connection's reader (None while disconnected).
        self._link: Listener | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._lost_event: asyncio.Event | None = None
        self._lost_reason: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outage_mark: dict[str, float] = {}
        #: Redis lost its data and the rooms have not all been resynchronised since.
        self._data_lost = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisHub:
        """A hub on the Redis at ``url`` (``redis://host:port/db``, ``rediss://``,
        ``unix://``); ``options`` as for the class. Does not connect yet."""
        return cls(url, **options)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "up" if self._up else "down"
        return f"<RedisHub {_safe_url(self.url)} node={self.node_id} {state}>"

    # ------------------------------------------------------------ state

    @property
    def available(self) -> bool:
        """Whether Redis is reachable right now (as far as this node knows)."""
        return self._up

    @property
    def rooms(self) -> list[str]:
        """Rooms with members on this node."""
        return [name for name, r in self._rooms.items() if r.members]

    def members(self, room: str) -> list[Receiver]:
        """The members of ``room`` connected to this node."""
        r = self._rooms.get(room)
        return list(r.members) if r is not None else []

    def rooms_of(self, member: Receiver) -> set[str]:
        """The rooms ``member`` is in."""
        return set(self._member_rooms.get(member, ()))

    def _options_changed(self, room: str, options: RoomOptions) -> None:
        r = self._rooms.get(room)
        if r is not None:
            r.options = options

    def _unavailable(
        self,
        what: str,
        exc: BaseException | None = None,
        error: type[HubUnavailable] = HubUnavailable,
    ) -> HubUnavailable:
        loop = asyncio.get_running_loop()
        down = "" if self._down_since is None else f" for {loop.time() - self._down_since:.1f} s"
        cause = f": {exc}" if exc is not None else ""
        return error(f"{what}: redis at {_safe_url(self.url)} unavailable{down}{cause}")

    async def _ensure_up(self, what: str) -> None:
        """Start the connection on first use; raise HubUnavailable while Redis is down."""
        if self._up:
            return
        self._check_open()
        if self._supervisor is None:
            loop = asyncio.get_running_loop()
            self._first = loop.create_future()
            self._sub_lock = asyncio.Lock()
            self._lost_event = asyncio.Event()
            # Commands in flight are bounded by _slots (callers queue), so the pool never
            # runs out: its own "too many connections" error would look like an outage.
            self._slots = asyncio.Semaphore(self.max_connections)
            self._client = aioredis.Redis.from_url(
                self.url,
                max_connections=self.max_connections + 8,  # + pub/sub, heartbeat, upkeep
                # Never retried by the client: a publish whose reply was lost must not
                # run twice. Losing the connection is handled here, once, for all.
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=self.connect_timeout,
                socket_timeout=self.command_timeout,
                socket_keepalive=True,
            )
            for name in SCRIPT_NAMES:
                self._scripts[name] = self._client.register_script(source(name))
            self._supervisor = loop.create_task(self._supervise(), name="fullduplex-redis-hub")
        if self._first is not None and not self._first.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._first), self.connect_timeout + 1)
        if not self._up:
            self.stats.refused += 1
            raise self._unavailable(what)

    async def _call(
        self,
        name: str,
        keys: list[bytes],
        args: Iterable[Any],
        what: str,
        *,
        refused: bool = True,
        error: type[HubUnavailable] = HubUnavailable,
    ) -> Any:
        """Run one script; connection trouble becomes ``error`` (and an outage).
        ``refused``: count a failure in ``stats.refused`` (an application's call);
        ``error``: :class:`OutcomeUnknown` for a script that may have run anyway."""
        assert self._slots is not None
        try:
            async with self._slots:
                return await self._scripts[name](keys=keys, args=list(args))
        except LOST as exc:
            if refused:
                self.stats.refused += 1
            self._lost(exc)
            raise self._unavailable(what, exc, error) from exc

    # -------------------------------------------------------- operations

    async def join(
        self,
        room: str,
        member: Receiver,
        *,
        user: str | None,
        since: int | None = None,
        epoch: str | None = None,
    ) -> JoinResult:
        self._check_open()
        if since is not None and since < 0:
            raise ValueError("since must be 0 or more")
        await self._ensure_up(f"cannot join {room!r}")
        r = self._rooms.get(room)
        if r is None:
            r = self._rooms[room] = Room(
                room, self.keys.channel(room), self.room_options(room), self._presence.lock(room)
            )
        r.pending += 1
        reserved = add = False
        try:
            await self._activate(r)
            rejoin = member in r.members
            if not rejoin and user is not None:
                add = r.users.get(user, 0) == 0
                r.users[user] = r.users.get(user, 0) + 1
                reserved = True
            limit = r.options.history_size
            if add:
                async with r.plock:
                    state = await self._read(
                        r, since=since, limit=limit, join_user=user, epoch=epoch, create=True
                    )
            else:
                state = await self._read(r, since=since, limit=limit, epoch=epoch, create=True)
            if state.event_seq and r.seq < state.event_seq and r.state is RoomState.LIVE:
                # The other local members hear of the join before join() returns.
                await self._wait_seq(r, state.event_seq)
            for _ in range(5):
                merged = self._catch_up_state(r, state)
                if merged is not None:
                    break
                # cache too short
                state = await self._read(r, since=since, limit=limit, epoch=epoch, create=True)
            else:
                raise self._unavailable(f"cannot join {room!r}: the room moves too fast")
            self._check_open()
            if r.state is not RoomState.LIVE:
                raise self._unavailable(f"cannot join {room!r}")
            # No await from here on: nothing reaches the member before join() returns.
            state = merged
            result = self._result(state, since, epoch, limit, user)
            if state.epoch and state.offset == r.offset:
                r.epoch = state.epoch
            if not rejoin:
                r.members[member] = user
                if state.seq > r.seq:
                    r.starts[member] = state.seq
                self._member_rooms.setdefault(member, set()).add(room)
            return result
        except BaseException:
            if reserved and member not in r.members and user is not None:
                count = r.users.get(user, 0) - 1
                if count > 0:
                    r.users[user] = count
                else:
                    r.users.pop(user, None)
                    if add and self._up:
                        self._spawn(self._presence.leave([(r, user)]))
            raise
        finally:
            r.pending -= 1
            self._maybe_teardown(r)

    def _catch_up_state(self, r: Room, state: Snapshot) -> Snapshot | None:
        """``state`` moved forward to what the local members have already been sent."""
        if r.seq <= state.seq:
            return state
        extra = [ev for ev in r.recent if ev.seq > state.seq]
        if not extra or extra[0].seq != state.seq + 1 or extra[-1].seq != r.seq:
            return None
        entries = list(state.entries)
        members = state.members
        offset = state.offset
        for ev in extra:
            if ev.kind == "m" and ev.offset is not None:
                entries.append((ev.offset, ev.seq, ev.data))
                offset = ev.offset
            elif ev.kind == "p":
                members = ev.members
        return Snapshot(r.seq, offset, entries, members, state.event_seq, state.base, state.epoch)

    @staticmethod
    def _result(
        state: Snapshot, since: int | None, epoch: str | None, limit: int, user: str | None
    ) -> JoinResult:
        members = state.members
        if user is not None and user not in members:
            members = [*members, user]
        members = sorted(members)
        kept = [Entry(o, d.decode("utf-8", "surrogatepass")) for o, _, d in state.entries]
        kept = kept[-limit:] if limit > 0 else []
        offset = state.offset
        if since is None:
            return JoinResult(offset, members, kept, epoch=state.epoch)
        since = resolve_since(since, epoch, state.epoch, offset)
        reset = since < 0
        if reset:
            since = 0  # offsets from another life of the room: replay from the start
        kept = [e for e in kept if e.offset > since]
        # Only a contiguous run that ends at ``offset`` is replayed; anything before a
        # hole (never expected, but possible after Redis lost data) joins the gap.
        if kept and kept[-1].offset != offset:
            kept = []
        for i in range(len(kept) - 1, 0, -1):
            if kept[i].offset != kept[i - 1].offset + 1:
                kept = kept[i:]
                break
        first = kept[0].offset if kept else offset + 1
        gap = Gap(since + 1, first - 1) if since + 1 < first else None
        return JoinResult(offset, members, kept, gap, reset, state.epoch)

    async def leave(self, room: str, member: Receiver) -> None:
        rooms = self._member_rooms.get(member)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._member_rooms[member]
        await self._leave_rooms((room,), member)

    async def leave_all(self, member: Receiver) -> None:
        await self._leave_rooms(self._member_rooms.pop(member, ()), member)

    async def _leave_rooms(self, names: Iterable[str], member: Receiver) -> None:
        """Remove a local member from rooms at once; users that had no other local
        connection there leave the rooms' presence in one round trip."""
        gone: list[tuple[Room, str]] = []
        for name in names:
            r = self._rooms.get(name)
            if r is None or member not in r.members:
                continue
            user = self._forget(r, member)
            self._maybe_teardown(r)
            if user is not None:
                gone.append((r, user))
        if gone and not self._closed:
            await self._presence.leave(gone)

    def _forget(self, r: Room, member: Receiver) -> str | None:
        """Remove a local member; returns its user if that was the user's last one here."""
        user = r.members.pop(member)
        r.starts.pop(member, None)
        if user is None:
            return None
        count = r.users.get(user, 0) - 1
        if count > 0:
            r.users[user] = count
            return None
        r.users.pop(user, None)
        return user

    async def publish(
        self,
        room: str,
        data: Any,
        *,
        exclude: Receiver | Collection[Receiver] | None = None,
        store: bool = True,
        id: str | None = None,
    ) -> int:
        self._check_open()
        encoded = dumps(data).encode("utf-8")
        await self._ensure_up(f"cannot publish to {room!r}")
        r = self._rooms.get(room)
        pubid = b""
        excluded = exclusion(exclude)
        if r is not None and excluded:
            pubid = str(next(self._pubids)).encode("ascii")
            self._excludes[pubid] = excluded
        options = self.room_options(room)
        keys, args = publish_call(
            self.keys,
            room,
            encoded,
            origin=self._node,
            pubid=pubid,
            store=store,
            history_size=options.history_size,
            history_max_age=self.history_max_age,
            room_ttl=self.room_ttl,
            history_bytes=options.history_bytes,
            id=id,
            dedup_window=self.dedup_window,
            max_history_bytes=self.max_history_bytes,
        )
        try:
            # Sent, then no answer: it may have run (stored, delivered) or not.
            seq, offset, _, _ = await self._call(
                "publish", keys, args, f"cannot publish to {room!r}", error=OutcomeUnknown
            )
            if r is not None and offset and seq:
                r.issued = max(r.issued, (int(seq), int(offset)))
            if seq and r is not None and not r.gone and r.seq < seq and r.members:
                # Read-your-writes: local members have it when publish() returns.
                await self._wait_seq(r, int(seq))
        finally:
            if pubid:
                self._excludes.pop(pubid, None)
        return int(offset)

    async def publish_all(self, data: Any) -> None:
        self._check_open()
        encoded = dumps(data).encode("utf-8")
        await self._ensure_up("cannot publish to every room")
        assert self._client is not None
        pubid = str(next(self._pubids)).encode("ascii")
        payload = b"a%d:%s%d:%s%d:%s" % (
            len(self._node),
            self._node,
            len(pubid),
            pubid,
            len(encoded),
            encoded,
        )
        fut = asyncio.get_running_loop().create_future()
        self._all_waiters[pubid] = fut
        try:
            assert self._slots is not None
            try:
                async with self._slots:
                    await self._client.publish(self.keys.broadcast, payload)
            except LOST as exc:
                self._lost(exc)
                raise self._unavailable("cannot publish to every room", exc) from exc
            if self._member_rooms:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fut, self.command_timeout)
        finally:
            self._all_waiters.pop(pubid, None)

    async def presence(self, room: str) -> list[str]:
        self._check_open()
        await self._ensure_up(f"cannot read the presence of {room!r}")
        state = await self._read_room(room, since=None, limit=0)
        return sorted(state.members)

    async def history(
        self, room: str, since: int | None = None, limit: int | None = None
    ) -> list[Entry]:
        self._check_open()
        await self._ensure_up(f"cannot read the history of {room!r}")
        size = self.room_options(room).history_size
        state = await self._read_room(room, since=since, limit=size)
        kept = [Entry(o, d.decode("utf-8", "surrogatepass")) for o, _, d in state.entries]
        kept = kept[-size:] if size > 0 else []
        if since is not None:
            kept = [e for e in kept if e.offset > since]
        if limit is not None:
            kept = kept[-limit:] if limit > 0 else []
        return kept

    # ------------------------------------------------------------ reads

    async def _read(
        self,
        r: Room,
        *,
        since: int | None,
        limit: int,
        join_user: str | None = None,
        internal: bool = False,
        epoch: str | None = None,
        create: bool = False,
    ) -> Snapshot:
        return await self._read_room(
            r.name,
            since=since,
            limit=limit,
            join_user=join_user,
            room=r,
            internal=internal,
            epoch=epoch,
            create=create,
        )

    async def _read_room(
        self,
        name: str,
        *,
        since: int | None,
        limit: int,
        join_user: str | None = None,
        room: Room | None = None,
        internal: bool = False,
        epoch: str | None = None,
        create: bool = False,
    ) -> Snapshot:
        """The room's state; ``create``: give the room its epoch if it has none (a
        join), ``epoch``: the one ``since`` belongs to (another: read from the start)."""
        keys = self.keys
        prefix = entry_prefix(join_user) if join_user is not None else b""
        options = room.options if room is not None else self.room_options(name)
        raw = await self._call(
            "state",
            [
                keys.meta(name),
                keys.log(name),
                keys.presence(name),
                keys.nodes,
                keys.node_rooms(self.node_id),
            ],
            [
                -1 if since is None else since,
                max(limit, 0),
                millis(self.history_max_age),
                b"1" if join_user is not None else b"0",
                encode(join_user) if join_user is not None else b"",
                prefix + self._node,
                prefix,
                encode(name),
                keys.channel(name),
                b"1" if options.presence else b"0",
                millis(self.room_ttl),
                new_epoch().encode("ascii") if create else b"",
                encode(epoch) if epoch else b"",
            ],
            f"cannot read room {name!r}",
            refused=not internal,
        )
        seq, offset, rows, users, event_seq, base, room_epoch = raw
        entries = [(int(rows[i]), int(rows[i + 1]), rows[i + 2]) for i in range(0, len(rows), 3)]
        members = [decode(u) for u in users]
        return Snapshot(
            int(seq), int(offset), entries, members, int(event_seq), int(base), text(room_epoch)
        )

    # ---------------------------------------------------------- rooms

    async def _activate(self, r: Room) -> None:
        """Subscribe to the room and learn its state (once per node), or wait for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout + self.command_timeout
        while r.state is not RoomState.LIVE:
            if not self._up:
                raise self._unavailable(f"cannot join {r.name!r}")
            if r.state is RoomState.NEW:
                r.move(RoomState.SUBSCRIBING)
                try:
                    await self._subscribe(r)
                    await self._sync(r, initial=True)
                except BaseException as exc:
                    r.abandon()
                    if isinstance(exc, LOST):
                        self._lost(exc)
                        raise self._unavailable(f"cannot join {r.name!r}", exc) from exc
                    raise
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise self._unavailable(f"cannot join {r.name!r} (room not ready)")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(r.ready.wait(), remaining)

    async def _subscribe(self, r: Room) -> None:
        assert self._sub_lock is not None
        async with self._sub_lock:
            pubsub, link = self._pubsub, self._link
            if pubsub is None or link is None or not self._up:
                raise self._unavailable(f"cannot subscribe to {r.name!r}")
            fut = link.expect(r.channel)
            self._by_channel[r.channel] = r
            try:
                await pubsub.subscribe(r.channel)
            except LOST as exc:
                self._lost(exc)
                raise self._unavailable(f"cannot subscribe to {r.name!r}", exc) from exc
        try:
            await asyncio.wait_for(fut, self.command_timeout)
        except TimeoutError as exc:
            raise self._unavailable(f"no subscription to {r.name!r}") from exc
        if self._pubsub is not pubsub:  # the connection was lost meanwhile
            raise self._unavailable(f"cannot subscribe to {r.name!r}")

    async def _sync(self, r: Room, *, initial: bool, data_lost: bool = False) -> None:
        """Bring the room up to date after (re)subscribing, then go live.

        After an outage the members get the stored messages they missed, from the
        stream. If that is impossible (trimmed, or Redis forgot the room) they are
        closed with 1012, unless nothing was stored since Redis forgot the room: then
        the counters are put back and the feed simply continues.
        """
        r.move(RoomState.SYNCING)
        if initial:
            state = await self._read(r, since=None, limit=0, internal=True)
            r.seq, r.offset, r.known = state.seq, state.offset, state.members
            r.epoch = state.epoch
            self._go_live(r)
            return
        limit = max(r.options.history_size, 1)
        for _ in range(4):
            state = await self._read(r, since=r.offset, limit=limit, internal=True)
            forgotten = data_lost or state.seq < r.seq or state.offset < r.offset
            if not forgotten:
                self._continue(r, state, renumbered=False)
                return
            if state.base == r.offset and state.offset >= r.offset:
                # Repaired (by this node or one that had seen the same offset).
                if state.offset == r.offset:
                    (logger.warning if r.offset else logger.debug)(
                        "room %r: redis had forgotten it; offsets continue after %d "
                        "(its history is gone: rejoins from before that get a gap)",
                        r.name,
                        r.offset,
                    )
                self._continue(r, state, renumbered=True)
                return
            if state.offset != 0:
                break  # messages were stored in the room's new life: cannot continue
            await self._repair(r)  # then read again, whoever won
        self._lose(r, f"redis lost the room's data (offset {r.offset} -> {state.offset})")

    def _continue(self, r: Room, state: Snapshot, *, renumbered: bool) -> None:
        """Deliver the messages missed while cut off (all in ``state``), then go live."""
        missed = state.entries if renumbered else [e for e in state.entries if e[1] > r.seq]
        if state.offset > r.offset:
            offsets = [o for o, _, _ in missed]
            if offsets != list(range(r.offset + 1, state.offset + 1)):
                self._lose(
                    r,
                    f"messages {r.offset + 1}..{state.offset} were published while this node "
                    "was cut off and are no longer all in the history",
                )
                return
        if renumbered:
            r.starts.clear()  # seqs of the room's new life: start offsets no longer apply
        for offset, seq, data in missed:
            ev = Event("m", seq, offset=offset, data=data, epoch=encode(state.epoch))
            self._deliver_message(r, ev)
            r.remember(ev)
            self.stats.caught_up += 1
        self._presence.diff(r, state.members, state.seq)
        r.seq, r.offset = state.seq, state.offset
        if state.epoch:
            r.epoch = state.epoch
        if renumbered:
            r.forget_recent()
        self._go_live(r)

    async def _repair(self, r: Room) -> bool:
        # An offset this node was given but never saw delivered (lost with Redis's data)
        # is not handed out again: the repair goes past it, so it shows up as a gap.
        seq, offset = max((r.seq, r.offset), r.issued)
        keys = self.keys
        ok = await self._call(
            "repair",
            [keys.meta(r.name)],
            [seq, offset, millis(self.room_ttl), encode(r.epoch)],
            f"cannot repair room {r.name!r}",
            refused=False,
        )
        return bool(ok)

    def _go_live(self, r: Room) -> None:
        buffered, r.buffer = r.buffer, []
        r.move(RoomState.LIVE)
        for ev in buffered:
            if r.state is not RoomState.LIVE:  # a discontinuity sent it back to syncing
                r.buffer.append(ev)
            elif ev.seq > r.seq:
                self._apply(r, ev)
        r.resolve()
        r.wake()

    def _lose(self, r: Room, why: str) -> None:
        """Close the room's local members (1012): they rejoin with ``since`` and get an
        explicit gap or reset instead of a feed with a silent hole."""
        members = list(r.members)
        logger.error(
            "room %r: %s; closing its %d local member(s) with %d so they rejoin with since",
            r.name,
            why,
            len(members),
            SERVICE_RESTART,
        )
        self.stats.lost_rooms += 1
        self.stats.closed_members += len(members)
        for member in members:
            self._forget(r, member)
            rooms = self._member_rooms.get(member)
            if rooms is not None:
                rooms.discard(r.name)
                if not rooms:
                    del self._member_rooms[member]
        r.users.clear()
        r.move(RoomState.NEW)
        r.buffer.clear()
        r.resolve(all_of_them=True)
        r.wake()
        self._maybe_teardown(r)
        self._spawn(self._presence.sync(r.name))
        for member in members:
            close = getattr(member, "close", None)
            if callable(close):
                try:
                    close(SERVICE_RESTART, "hub lost messages; rejoin with since")
                except Exception:
                    logger.exception("closing a member of %r failed", r.name)

    def _maybe_teardown(self, r: Room) -> None:
        if r.members or r.pending or r.gone:
            return
        r.gone = True
        if self._rooms.get(r.name) is r:
            del self._rooms[r.name]
        r.resolve(all_of_them=True)
        r.wake()
        if self._by_channel.get(r.channel) is r and not self._closed:
            self._spawn(self._unsubscribe(r))

    async def _unsubscribe(self, r: Room) -> None:
        assert self._sub_lock is not None
        async with self._sub_lock:
            if self._by_channel.get(r.channel) is r:
                del self._by_channel[r.channel]
            if r.name in self._rooms or self._pubsub is None:
                return  # a new join of the room took over the subscription
            with contextlib.suppress(*LOST):
                await self._pubsub.unsubscribe(r.channel)

    async def _wait_seq(self, r: Room, seq: int) -> None:
        """Until the local members have been sent event ``seq`` (bounded)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        r.waiters.append((seq, fut))
        try:
            await asyncio.wait_for(fut, self.command_timeout)
        except TimeoutError:
            logger.warning(
                "room %r: event %d not delivered locally after %.1f s (at %d, %s)",
                r.name,
                seq,
                self.command_timeout,
                r.seq,
                r.state.value,
            )

    # ------------------------------------------------------------ delivery

    def _on_pubsub(self, channel: bytes, payload: bytes) -> None:
        kind = payload[:1]
        if kind == b"a":
            if channel == self.keys.broadcast:
                self._on_broadcast(payload)
            return
        r = self._by_channel.get(channel)
        if r is None:
            return
        ev = parse_event(kind, payload)
        if ev is None:
            logger.warning("ignoring an unknown event %r on %r", kind, channel)
            return
        state = r.state
        if state is _LIVE:
            self._apply(r, ev)
        elif state is not _NEW:
            r.buffer.append(ev)
            if len(r.buffer) > _MAX_BUFFER:
                r.buffer.clear()
                self._resync_soon(r)

    def _apply(self, r: Room, ev: Event) -> None:
        seq = ev.seq
        if seq != r.seq + 1:
            # Live events are consecutive; anything else means events were missed or the
            # room's counters were reset. Find out from Redis before delivering more.
            logger.warning("room %r: event %d after %d; resynchronising", r.name, seq, r.seq)
            r.buffer.append(ev)
            self._resync_soon(r)
            return
        r.seq = seq
        if ev.kind == "m":
            if ev.offset is not None:
                r.offset = ev.offset
                if ev.epoch:
                    r.epoch = text(ev.epoch)
            self._deliver_message(r, ev)
        else:
            # Events that change nothing the local members were told are not repeated
            # (a node re-announcing its users after an outage, for instance).
            changed = (ev.user in r.known) != (ev.event == "join")
            r.known = ev.members
            if r.options.presence and changed:
                self._deliver_presence(r, seq, presence_envelope(r.name, ev.event, ev.user))
        r.remember(ev)
        if r.starts:
            for member in [m for m, start in r.starts.items() if start <= seq]:
                del r.starts[member]
        if r.waiters:
            r.resolve()

    def _receivers(self, r: Room, seq: int) -> list[Receiver]:
        starts = r.starts
        if not starts:
            return list(r.members)
        return [m for m in r.members if starts.get(m, -1) < seq]

    def _deliver_message(self, r: Room, ev: Event) -> None:
        if not r.members:
            return
        # Encoded once per node, whatever the number of local members.
        frame = encode_frame(OP_TEXT, message_bytes(r.prefix, ev.offset, ev.epoch, ev.data))
        excluded: Collection[object] = ()
        if ev.pubid and ev.origin == self._node:
            excluded = self._excludes.pop(ev.pubid, ())
        options = r.options
        self.deliveries += deliver_frame(
            self._receivers(r, ev.seq),
            frame,
            max_pending=options.max_pending,
            policy=options.policy,
            exclude=excluded,
        )

    def _deliver_presence(self, r: Room, seq: int, text: str) -> None:
        if not r.members:
            return
        frame = encode_frame(OP_TEXT, text.encode("utf-8"))
        options = r.options
        self.deliveries += deliver_frame(
            self._receivers(r, seq), frame, max_pending=options.max_pending, policy=options.policy
        )

    def _on_broadcast(self, payload: bytes) -> None:
        origin, pubid, data = split_fields(payload, 1)
        if self._member_rooms:
            frame = encode_frame(OP_TEXT, broadcast_bytes(data))
            options = self.default_options
            self.deliveries += deliver_frame(
                list(self._member_rooms),
                frame,
                max_pending=options.max_pending,
                policy=options.policy,
            )
        if origin == self._node:
            fut = self._all_waiters.pop(pubid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _resync_soon(self, r: Room) -> None:
        if r.state is not RoomState.LIVE:
            return
        r.move(RoomState.SYNCING)
        self._spawn(self._resync(r))

    async def _resync(self, r: Room) -> None:
        try:
            await self._sync(r, initial=False)
        except HubUnavailable:
            pass  # the reconnect resyncs every room
        except Exception as exc:
            logger.exception("resynchronising room %r failed", r.name)
            if r.members and r.state is not RoomState.LIVE:
                self._lose(r, f"resynchronising failed ({exc!r})")

    # -------------------------------------------------------- connection

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, HubUnavailable | HubClosed):
                logger.error("redis hub task failed", exc_info=exc)

    def _lost(self, exc: BaseException) -> None:
        """Report a broken connection (from any operation); the supervisor reconnects."""
        if self._up and self._lost_event is not None and not self._lost_event.is_set():
            self._lost_reason = exc
            self._lost_event.set()

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform between the minimum and a capped exponential."""
        ceiling = min(self.reconnect_max, self.reconnect_min * 2 ** min(attempt, 30))
        return random.uniform(self.reconnect_min, max(ceiling, self.reconnect_min))

    async def _supervise(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._disconnect()
                self._cut_off()  # rooms this attempt had already caught up, too
                if self._first is not None and not self._first.done():
                    self._first.set_result(None)
                if self._down_since is None:
                    self._down_since = loop.time()
                self.stats.connect_failures += 1
                attempt += 1
                delay = self._backoff(attempt)
                (logger.warning if attempt == 1 else logger.info)(
                    "redis at %s unavailable (attempt %d: %s); retrying in %.2f s",
                    _safe_url(self.url),
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._mark_up()
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            reason = await self._run_until_lost()
            if self._closed:
                break
            self._mark_down(reason)
            await self._disconnect()

    async def _connect(self) -> None:
        """One connection attempt: hello, pub/sub, presence and rooms brought back."""
        client = self._client
        assert client is not None and self._lost_event is not None
        await client.connection_pool.disconnect()  # no stale connection survives an outage
        self._lost_event.clear()
        self._lost_reason = None
        keys = self.keys
        epoch, _known = await self._scripts["hello"](
            keys=[keys.epoch, keys.nodes],
            args=[secrets.token_hex(8), self._node, millis(self.presence_ttl)],
        )
        if self._epoch is not None and epoch != self._epoch:
            self._data_lost = True
            self.stats.data_losses += 1
            logger.error(
                "redis at %s lost its data (restarted without persistence?): rooms are "
                "resynchronised; messages it held are gone, members that cannot continue "
                "are closed to rejoin",
                _safe_url(self.url),
            )
        self._epoch = epoch
        pubsub = client.pubsub()
        self._pubsub = pubsub
        loop = asyncio.get_running_loop()
        link = self._link = Listener(pubsub, self._on_pubsub, loop.time)
        await pubsub.subscribe(keys.broadcast)
        listener = loop.create_task(link.run(), name="fullduplex-redis-listen")
        self._tasks.add(listener)
        listener.add_done_callback(self._tasks.discard)
        self._listen_task = listener
        # Resubscribe every room with local members, and wait until Redis confirms.
        # (Rooms still being joined for the first time fail their join: HubUnavailable.)
        rooms = [r for r in self._rooms.values() if r.members and r.state is RoomState.SYNCING]
        waits = []
        for r in rooms:
            self._by_channel[r.channel] = r
            waits.append(link.expect(r.channel))
        if rooms:
            await pubsub.subscribe(*[r.channel for r in rooms])
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), self.command_timeout)
            if self._pubsub is not pubsub:
                raise RedisConnectionError("lost while resubscribing")
        # Catch every room up first (repairing counters Redis forgot), then put this
        # node's presence entries back: its own join events must not look like a gap.
        for r in rooms:
            if r.members and not r.gone and r.state is RoomState.SYNCING:
                await self._sync(r, initial=False, data_lost=self._data_lost)
        self._data_lost = False
        await self._presence.reconcile()

    async def _run_until_lost(self) -> BaseException | None:
        assert self._lost_event is not None and self._listen_task is not None
        heartbeat: asyncio.Future[Any] = asyncio.ensure_future(self._heartbeat())
        lost: asyncio.Future[Any] = asyncio.ensure_future(self._lost_event.wait())
        listener: asyncio.Future[Any] = self._listen_task
        try:
            await asyncio.wait({heartbeat, lost, listener}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (heartbeat, lost):
                task.cancel()
            await asyncio.gather(heartbeat, lost, return_exceptions=True)
        for task in (listener, heartbeat):
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return self._lost_reason

    async def _heartbeat(self) -> None:
        """Refresh this node's heartbeat, reap dead nodes, watch the pub/sub link."""
        loop = asyncio.get_running_loop()
        interval = self.presence_ttl / 3
        keys = self.keys
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.0))
            known, reaped = await self._scripts["heartbeat"](
                keys=[keys.nodes],
                args=[
                    self._node,
                    millis(self.presence_ttl),
                    encode(keys.prefix),
                    keys.channel_base,
                    16,
                    millis(self.room_ttl),
                ],
            )
            if reaped:
                self.stats.reaped_nodes += int(reaped)
                logger.info("removed the presence of %d node(s) that stopped", reaped)
            if not known:
                logger.warning(
                    "this node's heartbeat had expired (paused longer than presence_ttl "
                    "%.1f s?): announcing its users again",
                    self.presence_ttl,
                )
                await self._presence.reconcile()
            # A silent pub/sub link is dead even if no error says so (a half-open TCP).
            link = self._link
            silent = loop.time() - link.last_rx if link is not None else 0.0
            if silent > 3 * interval + self.command_timeout:
                raise RedisConnectionError("the pub/sub connection went silent")
            await self._pubsub.ping()
            await self._refresh_rooms(loop.time())

    async def _refresh_rooms(self, now: float) -> None:
        """Keep the keys of rooms with local members from expiring (``room_ttl``)."""
        if self.room_ttl is None or self._client is None:
            return
        every = self.room_ttl / 4
        stale = [r for r in self._rooms.values() if r.members and now - r.touched > every]
        if not stale:
            return
        ttl = millis(self.room_ttl)
        pipe = self._client.pipeline(transaction=False)
        for r in stale:
            r.touched = now
            pipe.pexpire(self.keys.meta(r.name), ttl)
            pipe.pexpire(self.keys.log(r.name), ttl)
        await pipe.execute()

    def _mark_up(self) -> None:
        loop = asyncio.get_running_loop()
        self._up = True
        if self._down_since is None:
            logger.info("redis hub connected to %s as node %s", _safe_url(self.url), self.node_id)
            self._outage_mark = self.stats.as_dict()
            return
        down = loop.time() - self._down_since
        self._down_since = None
        stats = self.stats
        stats.outage_seconds += down
        stats.last_outage_seconds = down
        before = self._outage_mark
        self._outage_mark = stats.as_dict()

        def delta(name: str) -> int:
            return int(getattr(stats, name) - before.get(name, 0))

        lost = delta("lost_rooms")
        logger.warning(
            "redis unavailable for %.1f s; reconnected to %s. %d publish/join/read call(s) "
            "were refused here (HubUnavailable); %d message(s) published elsewhere meanwhile "
            "were delivered late from history; %s",
            down,
            _safe_url(self.url),
            delta("refused"),
            delta("caught_up"),
            (
                f"{lost} room(s) could not be continued ({delta('closed_members')} member(s) "
                "closed with 1012 to rejoin with since and recover from history, or see the gap)"
                if lost
                else "no live member missed a stored message (ephemeral store=False messages "
                "sent during the outage are lost)"
            ),
        )

    def _mark_down(self, reason: BaseException | None) -> None:
        loop = asyncio.get_running_loop()
        self._up = False
        self._down_since = loop.time()
        self.stats.outages += 1
        logger.warning(
            "lost the connection to redis at %s (%s): publishes and joins raise HubUnavailable "
            "until it is back; reconnecting with backoff",
            _safe_url(self.url),
            reason or "unknown reason",
        )
        self._cut_off()

    def _cut_off(self) -> None:
        """No subscription any more: every room must be resubscribed and caught up."""
        for r in self._rooms.values():
            if r.state is RoomState.LIVE:
                r.move(RoomState.SYNCING)
            r.buffer.clear()
            r.resolve(all_of_them=True)
            r.wake()
        for fut in self._all_waiters.values():
            if not fut.done():
                fut.set_result(None)
        if self._link is not None:
            self._link.release()

    async def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        link, self._link = self._link, None
        listener, self._listen_task = self._listen_task, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        if link is not None:
            link.release()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.connection_pool.disconnect()

    async def close(self) -> None:
        """Leave every room (presence ``leave`` events are sent while Redis is up),
        unregister this node, and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._up:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._goodbye(), self.command_timeout)
        self._up = False
        supervisor, self._supervisor = self._supervisor, None
        tasks = [t for t in (supervisor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:  # gather(return_exceptions) does not swallow our own cancellation
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._disconnect()
        for r in self._rooms.values():
            r.resolve(all_of_them=True)
            r.wake()
        self._rooms.clear()
        self._by_channel.clear()
        self._member_rooms.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def _goodbye(self) -> None:
        assert self._client is not None
        keys = self.keys
        index = keys.node_rooms(self.node_id)
        names = {text(n) for n in await self._client.smembers(index)}
        for name in sorted(names):
            await self._presence.sync(name, [])
        await self._client.zrem(keys.nodes, self._node)
        await self._client.delete(index)
