"""A server mixing own messages and compressed broadcasts, for the interop tests
(websockets, aiohttp) and the Chromium test of compressed broadcasts."""

from __future__ import annotations

import json
from typing import Any

from fullduplex import WebSocketHandler
from fullduplex.hub.base import deliver
from fullduplex.transports import Broadcast

ROUNDS = 4


def own_message(round_: int) -> str:
    return json.dumps([{"id": i, "round": round_, "name": f"own {i}"} for i in range(60)])


def broadcast_message(round_: int) -> str:
    return json.dumps([{"id": i, "round": round_, "name": f"all {i}"} for i in range(60)])


def expected() -> list[str]:
    sequence = []
    for round_ in range(ROUNDS):
        sequence += [own_message(round_), broadcast_message(round_), own_message(round_)]
    return sequence


def make_handler(members: list[WebSocketHandler], shared: list[Broadcast]) -> type[Any]:
    class Mixer(WebSocketHandler):
        """``"join"`` adds the connection; ``"go N"`` runs the rounds once N joined."""

        def check_origin(self, origin: str) -> bool:
            return True

        def on_message(self, message: str | bytes) -> None:
            if message == "join":
                members.append(self)
                return
            assert isinstance(message, str) and message.startswith("go ")
            assert len(members) == int(message[3:])
            for round_ in range(ROUNDS):
                for member in members:
                    member.write_message(own_message(round_))
                item = Broadcast(broadcast_message(round_))
                shared.append(item)
                assert deliver(members, item) == len(members)
                for member in members:
                    member.write_message(own_message(round_))

    return Mixer
