"""The hub's pieces that need no server: the wire envelopes, the Lua script files and
their packaging, and the Redis room state machine."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from fullduplex.hub import Entry, Gap, JoinResult, RoomOptions
from fullduplex.hub.redis.scripts import SCRIPT_NAMES, source
from fullduplex.hub.redis.state import TRANSITIONS, Room, RoomState
from fullduplex.hub.wire import (
    PROTOCOL_VERSION,
    ErrorCode,
    error_envelope,
    joined_envelope,
    message_bytes,
    message_envelope,
    message_prefix,
)

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "fullduplex" / "hub" / "redis" / "lua"


def test_every_script_is_a_packaged_lua_file() -> None:
    files = {p.stem for p in LUA.glob("*.lua")}
    assert set(SCRIPT_NAMES) | {"prelude", "presence"} == files
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["fullduplex"]
    for path in LUA.glob("*.lua"):
        relative = path.relative_to(ROOT / "fullduplex").as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), relative
    for name in SCRIPT_NAMES:
        text = source(name)
        assert text.startswith("-- Shared by every script")
        assert ("local function live_users" in text) is SCRIPT_NAMES[name]


def test_room_state_machine_allows_only_its_table() -> None:
    async def main() -> None:
        room = Room("r", b"c", RoomOptions(), asyncio.Lock())
        assert room.state is RoomState.NEW
        for to in (RoomState.SUBSCRIBING, RoomState.SYNCING, RoomState.LIVE, RoomState.SYNCING):
            room.move(to)
            assert room.state is to
        with pytest.raises(RuntimeError, match="no move from syncing to subscribing"):
            room.move(RoomState.SUBSCRIBING)
        room.abandon()
        assert room.state is RoomState.NEW
        room.abandon()  # already new: stays
        assert room.state is RoomState.NEW
        with pytest.raises(RuntimeError):
            room.move(RoomState.LIVE)

    asyncio.run(main())
    assert set(TRANSITIONS) == set(RoomState)


def test_envelopes_are_json_and_the_two_message_encoders_agree() -> None:
    text = message_envelope("lobby ✓", 3, "[1]", "0123456789ab")
    raw = message_bytes(message_prefix("lobby ✓"), 3, b"0123456789ab", b"[1]")
    assert raw == text.encode("utf-8")
    assert message_bytes(message_prefix("x"), None, b"", b"2") == message_envelope(
        "x", None, "2"
    ).encode("utf-8")
    result = JoinResult(2, ["ann"], [Entry(2, '{"a":1}')], Gap(1, 1), True, "e")
    joined = json.loads(joined_envelope("r", result))
    assert joined["v"] == PROTOCOL_VERSION == 1
    assert joined["gap"] == {"from": 1, "to": 1} and joined["reset"] is True
    assert joined["history"] == [{"offset": 2, "data": {"a": 1}}]
    for code in ErrorCode:
        error = json.loads(error_envelope(code, "why", "r", "join"))
        assert error == {
            "op": "error",
            "code": code.code,
            "retryable": code.retryable,
            "reason": "why",
            "room": "r",
            "request": "join",
        }
    assert json.loads(error_envelope(ErrorCode.BAD_REQUEST, "x")) == {
        "op": "error",
        "code": "bad_request",
        "retryable": False,
        "reason": "x",
    }
