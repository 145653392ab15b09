"""A channel layer in the shape of Django Channels', carried by the app's hub.

Each consumer that touches ``self.channel_layer`` (or ``self.channel_name``) gets a
channel: an inbox registered with the layer. ``group_add(group, channel)`` joins the
inbox to a hub room reserved for the group, ``group_send`` publishes to that room
without storing it (``store=False``: pub/sub only, no history), so with the Redis hub
a group spans every node. ``send(channel, message)`` delivers straight to a consumer of
this process, or through the channel's own hub room to a consumer of another node.

Layer rooms live in a namespace that starts with a control character, which
:class:`~fullduplex.server.rooms.RoomHandler` refuses in room names: browser clients of
the rooms protocol can neither listen to groups nor inject layer events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .hub.base import Hub
from .transports.base import DEFAULT_MAX_PENDING, Broadcast

__all__ = ["DEFAULT_LAYER_QUEUE_BYTES", "ChannelLayer", "Inbox", "layer_for"]

logger = logging.getLogger("fullduplex.layers")

T = TypeVar("T")

#: Layer messages waiting for one consumer, in bytes of their JSON encoding.
DEFAULT_LAYER_QUEUE_BYTES = 1 << 20

_GROUP = "\x00layer:group:"
_CHANNEL = "\x00layer:channel:"
_ENVELOPE_HEAD = b'{"op":"message","room":"\\u0000layer:'


class Inbox:
    """Where layer messages for one consumer wait, bounded in bytes; a hub receiver.

    ``deliver(message)`` is called on the event loop for each message in arrival
    order; messages past ``max_bytes`` waiting are dropped (and logged), as a full
    channel drops them in Channels' layers.
    """

    __slots__ = ("__weakref__", "_deliver", "bytes_waiting", "channel_name", "dropped", "max_bytes")

    def __init__(
        self,
        channel_name: str,
        deliver: Callable[[dict[str, Any], int], bool],
        max_bytes: int = DEFAULT_LAYER_QUEUE_BYTES,
    ) -> None:
        self.channel_name = channel_name
        self._deliver = deliver
        self.max_bytes = max_bytes
        #: Bytes of the messages queued and not yet handled (kept by the consumer).
        self.bytes_waiting = 0
        #: Messages dropped because the queue was full.
        self.dropped = 0

    def put(self, message: dict[str, Any], size: int) -> bool:
        """Queue ``message`` (``size`` bytes encoded); False when dropped."""
        if self.bytes_waiting + size > self.max_bytes:
            self.dropped += 1
            logger.warning(
                "channel %s: %d bytes of layer messages wait; dropped one of %d bytes",
                self.channel_name,
                self.bytes_waiting,
                size,
            )
            return False
        return self._deliver(message, size)

    def send_broadcast(
        self, broadcast: Broadcast, max_pending: int = DEFAULT_MAX_PENDING, policy: str = "close"
    ) -> bool:
        """What the hub calls with a rooms-protocol envelope: take layer messages only."""
        payload = broadcast.payload
        if not payload.startswith(_ENVELOPE_HEAD):
            return True  # e.g. Hub.publish_all: not for the layer
        try:
            message = json.loads(payload)["data"]
        except (ValueError, KeyError):
            return True
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return True
        return self.put(message, len(payload))


class ChannelLayer:
    """Groups and channels of consumers over one hub (what ``self.channel_layer`` is)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inboxes: dict[str, Inbox] = {}
        self._joined: dict[str, asyncio.Future[None]] = {}

    # ------------------------------------------------------------ channels

    def new_channel(
        self,
        deliver: Callable[[dict[str, Any], int], bool],
        max_bytes: int = DEFAULT_LAYER_QUEUE_BYTES,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Inbox:
        """Register a channel of this process; its hub room is joined in the background
        so other nodes can ``send`` to it. ``loop``: the server's loop, when called from
        another thread (a sync consumer's hook)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        name = f"fullduplex.{secrets.token_hex(8)}!{secrets.token_hex(8)}"
        inbox = Inbox(name, deliver, max_bytes)
        self._inboxes[name] = inbox

        def join() -> None:
            self._joined[name] = loop.create_task(self._join(_CHANNEL + name, inbox))

        if asyncio._get_running_loop() is loop:
            join()
        else:  # queued before anything the hook asks of the loop afterwards
            loop.call_soon_threadsafe(join)
        return inbox

    async def _join(self, room: str, inbox: Inbox) -> None:
        await self.hub.join(room, inbox, user=None)

    async def forget(self, inbox: Inbox) -> None:
        """Take a channel out of every group and out of the layer (on disconnect)."""
        if self._inboxes.pop(inbox.channel_name, None) is None:
            return
        joined = self._joined.pop(inbox.channel_name, None)
        if joined is not None:
            await asyncio.gather(joined, return_exceptions=True)
        await self.hub.leave_all(inbox)

    async def _on_home_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run on the loop the hub lives on, wherever the caller's loop is (code in a
        sync consumer's thread may run its own loop, e.g. asgiref without its context)."""
        home = self._loop
        if home is None or home is asyncio.get_running_loop():
            return await make()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(make(), home))

    def _local(self, channel: str) -> Inbox:
        inbox = self._inboxes.get(channel)
        if inbox is None:
            raise ValueError(
                f"channel {channel!r} is not a consumer of this process: only a consumer's "
                "own channel_name can join or leave a group"
            )
        return inbox

    # ---------------------------------------------------------- Channels API

    async def group_add(self, group: str, channel: str) -> None:
        """Put ``channel`` (a consumer's ``channel_name``) in ``group``."""
        await self._on_home_loop(lambda: self._group_add(group, channel))

    async def _group_add(self, group: str, channel: str) -> None:
        _check_name(group)
        await self.hub.join(_GROUP + group, self._local(channel), user=None)

    async def group_discard(self, group: str, channel: str) -> None:
        """Take ``channel`` out of ``group`` (nothing happens if it is not in it)."""
        await self._on_home_loop(lambda: self._group_discard(group, channel))

    async def _group_discard(self, group: str, channel: str) -> None:
        _check_name(group)
        inbox = self._inboxes.get(channel)
        if inbox is not None:
            await self.hub.leave(_GROUP + group, inbox)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Deliver ``message`` (a JSON-able dict with a ``"type"``) to every channel in
        ``group``, on every node of the hub."""
        _check_message(message)
        _check_name(group)
        await self._on_home_loop(lambda: self._publish(_GROUP + group, message))

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Deliver ``message`` to one channel (of this process or another node's)."""
        _check_message(message)
        inbox = self._inboxes.get(channel)
        if inbox is not None:
            encoded = json.dumps(message, separators=(",", ":"))
            home = self._loop
            if home is None or home is asyncio.get_running_loop():
                inbox.put(json.loads(encoded), len(encoded))
            else:
                home.call_soon_threadsafe(inbox.put, json.loads(encoded), len(encoded))
            return
        await self._on_home_loop(lambda: self._publish(_CHANNEL + channel, message))

    async def _publish(self, room: str, message: dict[str, Any]) -> None:
        await self.hub.publish(room, message, store=False)


def _check_message(message: object) -> None:
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise TypeError('a layer message is a dict with a "type" string')


def _check_name(group: str) -> None:
    if not isinstance(group, str) or not group or len(group) > 100:
        raise ValueError("a group name is a non-empty string of at most 100 characters")


_layers: weakref.WeakKeyDictionary[Hub, ChannelLayer] = weakref.WeakKeyDictionary()


def layer_for(hub: Hub, loop: asyncio.AbstractEventLoop | None = None) -> ChannelLayer:
    """The channel layer over ``hub`` (one per hub); ``loop``: the one the hub runs on,
    when the caller may be in another thread."""
    layer = _layers.get(hub)
    if layer is None:
        layer = _layers[hub] = ChannelLayer(hub)
    if layer._loop is None:
        layer._loop = loop or asyncio._get_running_loop()
    return layer
