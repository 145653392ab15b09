"""MemoryHub logic: fan-out, exclusion, rooms, presence, history, offsets, recovery."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace
from typing import Any

import pytest

from fullduplex.hub import Entry, Gap, HubClosed, MemoryHub, RoomOptions
from fullduplex.hub.wire import dumps, message_envelope


def test_publish_reaches_every_member_once_with_one_shared_frame(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        members = [kit.Recorder(str(i)) for i in range(50)]
        for m in members:
            await hub.join("lobby", m, user=None)
        offset = await hub.publish("lobby", {"text": "héllo"})
        assert offset == 1
        frames = [m.frames[-1] for m in members]
        assert all(f is frames[0] for f in frames)  # one encoding for all receivers
        epoch = hub._rooms["lobby"].epoch
        assert re.fullmatch("[0-9a-f]{12}", epoch)
        assert members[0].messages == [
            f'{{"op":"message","room":"lobby","offset":1,"epoch":"{epoch}","data":{{"text":"héllo"}}}}'
        ]
        assert hub.deliveries == 50

    kit.run(main())


def test_exclude_sender_and_rooms_are_isolated(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        a, b, c = kit.Recorder("a"), kit.Recorder("b"), kit.Recorder("c")
        await hub.join("x", a, user=None)
        await hub.join("x", b, user=None)
        await hub.join("y", c, user=None)
        await hub.join("y", a, user=None)
        await hub.publish("x", 1, exclude=a)
        await hub.publish("y", 2)
        await hub.publish("y", 3, exclude=[a, c])
        assert [(e["room"], e["data"]) for e in a.ops("message")] == [("y", 2)]
        assert [(e["room"], e["data"]) for e in b.ops("message")] == [("x", 1)]
        assert [(e["room"], e["data"]) for e in c.ops("message")] == [("y", 2)]
        assert hub.rooms_of(a) == {"x", "y"}

    kit.run(main())


def test_offsets_are_per_room_monotonic_from_one(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        got = [await hub.publish("a", i) for i in range(5)]
        got_b = [await hub.publish("b", i) for i in range(3)]
        assert got == [1, 2, 3, 4, 5]
        assert got_b == [1, 2, 3]
        assert await hub.publish("a", "eph", store=False) == 0
        assert await hub.publish("a", 5) == 6

    kit.run(main())


def test_presence_counts_a_user_once_across_connections(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        watcher = kit.Recorder("watcher")
        await hub.join("r", watcher, user="zoe")
        tab1, tab2 = kit.Recorder("tab1"), kit.Recorder("tab2")
        r1 = await hub.join("r", tab1, user="ann")
        r2 = await hub.join("r", tab2, user="ann")
        assert r1.members == r2.members == ["ann", "zoe"]
        assert await hub.presence("r") == ["ann", "zoe"]
        events = watcher.ops("presence")
        assert events == [
            {
                "op": "presence",
                "room": "r",
                "event": "join",
                "user": "ann",
            }
        ]
        assert tab1.ops("presence") == []  # the joiner learns members from the result
        await hub.leave("r", tab1)
        assert len(watcher.ops("presence")) == 1  # ann still has a tab open
        await hub.leave_all(tab2)
        assert watcher.ops("presence")[-1] == {
            "op": "presence",
            "room": "r",
            "event": "leave",
            "user": "ann",
        }
        assert await hub.presence("r") == ["zoe"]
        # Rejoining with the same member is idempotent: no second presence event.
        await hub.join("r", watcher, user="zoe")
        assert await hub.presence("r") == ["zoe"]
        # Anonymous members receive messages but are not listed.
        anon = kit.Recorder("anon")
        await hub.join("r", anon, user=None)
        assert await hub.presence("r") == ["zoe"]
        assert len(watcher.ops("presence")) == 2

    kit.run(main())


def test_presence_events_can_be_turned_off_per_room(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        hub.set_room_options("big", presence=False)
        a, b = kit.Recorder(), kit.Recorder()
        await hub.join("big", a, user="a")
        result = await hub.join("big", b, user="b")
        assert result.members == ["a", "b"]
        await hub.leave("big", b)
        assert a.ops("presence") == []

    kit.run(main())


def test_history_keeps_the_last_n_per_hub_and_per_room(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(history_size=3)
        hub.set_room_options("long", history_size=10)
        for i in range(1, 8):
            await hub.publish("short", i)
            await hub.publish("long", i)
        assert [e.offset for e in await hub.history("short")] == [5, 6, 7]
        assert [e.data for e in await hub.history("long")] == list(range(1, 8))
        assert [e.offset for e in await hub.history("long", since=4)] == [5, 6, 7]
        assert [e.offset for e in await hub.history("long", limit=2)] == [6, 7]
        assert [e.offset for e in await hub.history("long", since=1, limit=10)] == list(range(2, 8))
        assert await hub.history("long", since=7) == []
        assert await hub.history("nowhere") == []
        fresh = await hub.join("short", kit.Recorder(), user=None)
        assert fresh.offset == 7
        assert [e.offset for e in fresh.history] == [5, 6, 7]
        assert fresh.gap is None  # no since: the kept messages, no gap claimed
        # Shrinking a live room's history keeps its newest entries.
        hub.set_room_options("long", history_size=2)
        assert [e.offset for e in await hub.history("long")] == [6, 7]

    kit.run(main())


def test_since_recovery_is_exact(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(history_size=50)
        for i in range(1, 21):
            await hub.publish("r", {"n": i})
        for since in (0, 1, 10, 19, 20):
            result = await hub.join("r", kit.Recorder(), user=None, since=since)
            assert result.offset == 20
            assert [e.offset for e in result.history] == list(range(since + 1, 21))
            assert [e.data["n"] for e in result.history] == list(range(since + 1, 21))
            assert result.gap is None and not result.reset

    kit.run(main())


def test_gap_is_explicit_when_since_is_older_than_history(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(history_size=5)
        for i in range(1, 13):
            await hub.publish("r", i)
        result = await hub.join("r", kit.Recorder(), user=None, since=3)
        assert result.gap == Gap(4, 7)
        assert [e.offset for e in result.history] == [8, 9, 10, 11, 12]
        # Nothing kept at all: the whole range is the gap.
        hub.set_room_options("none", history_size=0)
        for i in range(4):
            await hub.publish("none", i)
        result = await hub.join("none", kit.Recorder(), user=None, since=1)
        assert result.history == [] and result.gap == Gap(2, 4)

    kit.run(main())


def test_since_beyond_the_room_means_reset(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(history_size=2)
        for i in range(3):
            await hub.publish("r", i)
        result = await hub.join("r", kit.Recorder(), user=None, since=99)
        assert result.reset
        assert [e.offset for e in result.history] == [2, 3]
        assert result.gap == Gap(1, 1)
        empty = await hub.join("new", kit.Recorder(), user=None, since=5)
        assert empty.reset and empty.offset == 0 and empty.history == [] and empty.gap is None

    kit.run(main())


def test_since_from_another_epoch_means_reset_and_full_replay(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(history_size=10)
        for i in range(5):
            await hub.publish("r", i)
        first = await hub.join("r", kit.Recorder(), user=None)
        epoch = first.epoch
        assert re.fullmatch("[0-9a-f]{12}", epoch)
        # The right epoch: exactly what follows since.
        same = await hub.join("r", kit.Recorder(), user=None, since=3, epoch=epoch)
        assert not same.reset and [e.offset for e in same.history] == [4, 5]
        # Another epoch: since says nothing about this room; everything is replayed.
        other = await hub.join("r", kit.Recorder(), user=None, since=3, epoch="0123456789ab")
        assert other.reset and other.epoch == epoch and other.gap is None
        assert [e.offset for e in other.history] == [1, 2, 3, 4, 5]
        # No epoch (an older client): offsets alone decide, as before.
        legacy = await hub.join("r", kit.Recorder(), user=None, since=3)
        assert not legacy.reset and [e.offset for e in legacy.history] == [4, 5]

    kit.run(main())


def test_a_forgotten_room_comes_back_with_a_new_epoch(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(max_idle_rooms=1)
        m = kit.Recorder()
        old = await hub.join("r", m, user=None)
        for i in range(3):
            await hub.publish("r", i)
        await hub.leave("r", m)
        await hub.publish("other", "x")  # the one idle room kept, instead of "r"
        assert hub.rooms == ["other"]
        for i in range(5):  # its new life overtakes the old offsets
            await hub.publish("r", f"new {i}")
        back = await hub.join("r", m, user=None, since=3, epoch=old.epoch)
        assert back.epoch != old.epoch
        assert back.reset and back.gap is None
        assert [e.data for e in back.history] == [f"new {i}" for i in range(5)]
        await hub.publish("r", "live")
        assert json.loads(m.messages[-1])["epoch"] == back.epoch

    kit.run(main())


def test_ephemeral_messages_have_no_offset_and_no_history(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        m = kit.Recorder()
        await hub.join("r", m, user=None)
        await hub.publish("r", "typing", store=False)
        assert m.messages == ['{"op":"message","room":"r","offset":null,"data":"typing"}']
        assert await hub.history("r") == []
        assert await hub.publish("empty-room", "x", store=False) == 0
        assert "empty-room" not in hub.rooms

    kit.run(main())


def test_publish_all_reaches_each_member_once(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        a, b = kit.Recorder(), kit.Recorder()
        await hub.join("x", a, user=None)
        await hub.join("y", a, user=None)
        await hub.join("y", b, user=None)
        await hub.publish_all({"notice": "restart at noon"})
        expected = '{"op":"message","room":null,"offset":null,"data":{"notice":"restart at noon"}}'
        assert a.messages == [expected]
        assert b.messages == [expected]

    kit.run(main())


def test_leave_all_empties_rooms_and_idle_rooms_are_bounded(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(max_idle_rooms=2)
        m = kit.Recorder()
        for name in ("a", "b", "c"):
            await hub.join(name, m, user="u")
        await hub.join("quiet", m, user="u")
        for name in ("a", "b", "c"):
            await hub.publish(name, name)
        for name in ("a", "b", "c"):  # idle from now on, "a" first
            await hub.leave(name, m)
        await hub.leave_all(m)
        assert hub.rooms_of(m) == set()
        # "quiet" had no messages: forgotten at once; "a" was the least recently used.
        assert sorted(hub.rooms) == ["b", "c"]
        assert await hub.presence("b") == []
        # A member coming back to a forgotten room hears about it (reset), not silence.
        again = await hub.join("a", m, user="u", since=1)
        assert again.reset and again.offset == 0

    kit.run(main())


def test_room_options_validate(kit: SimpleNamespace) -> None:
    hub = MemoryHub(policy="drop_oldest", max_pending=8)
    assert hub.room_options("any") == RoomOptions(policy="drop_oldest", max_pending=8)
    assert hub.set_room_policy("r", "latest", 4) == RoomOptions(policy="latest", max_pending=4)
    assert hub.room_options("r").history_size == 100
    with pytest.raises(ValueError):
        hub.set_room_policy("r", "nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hub.set_room_options("r", max_pending=0)
    with pytest.raises(ValueError):
        MemoryHub(history_size=-1)

    async def main() -> None:
        m = kit.Recorder()
        await hub.join("r", m, user=None)
        await hub.join("other", m, user=None)
        await hub.publish("r", 1)
        await hub.publish("other", 2)
        assert m.calls == [(4, "latest"), (8, "drop_oldest")]
        with pytest.raises(ValueError):
            await hub.join("r", m, user=None, since=-1)

    kit.run(main())


def test_closed_hub_refuses_work(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        m = kit.Recorder()
        await hub.join("r", m, user=None)
        await hub.close()
        with pytest.raises(HubClosed):
            await hub.publish("r", 1)
        with pytest.raises(HubClosed):
            await hub.join("r", m, user=None)
        await hub.leave_all(m)  # harmless after close

    kit.run(main())


@pytest.mark.parametrize("bad", [math.nan, math.inf, object(), {1j: 2}])
def test_data_must_be_json(kit: SimpleNamespace, bad: Any) -> None:
    async def main() -> None:
        hub = MemoryHub()
        with pytest.raises((TypeError, ValueError)):
            await hub.publish("r", bad)
        assert await hub.history("r") == []

    kit.run(main())


def test_envelopes_are_compact_json() -> None:
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    text = message_envelope('we"ird', 3, dumps(None))
    assert json.loads(text) == {"op": "message", "room": 'we"ird', "offset": 3, "data": None}
    text = message_envelope("r", 3, dumps(1), "0a1b2c3d4e5f")
    assert text == '{"op":"message","room":"r","offset":3,"epoch":"0a1b2c3d4e5f","data":1}'
    assert message_envelope("r", None, "1", "0a1b2c3d4e5f") == (
        '{"op":"message","room":"r","offset":null,"data":1}'
    )
    assert Entry(1, '{"x":1}').data == {"x": 1}


def test_lone_surrogates_are_escaped_not_fatal(kit: SimpleNamespace) -> None:
    text = dumps({"t": "a\ud800é"})
    assert text == '{"t":"a\\ud800\\u00e9"}'
    text.encode("utf-8")

    async def main() -> None:
        hub = MemoryHub()
        m = kit.Recorder()
        await hub.join("r", m, user="\udfff")
        await hub.publish("r", "x\ud800")
        assert m.envelopes[-1]["data"] == "x\ud800"
        assert (await hub.history("r"))[0].data == "x\ud800"

    kit.run(main())


def test_create_hub_from_the_app_setting() -> None:
    from fullduplex.hub import create_hub

    assert isinstance(create_hub(None), MemoryHub)
    assert isinstance(create_hub("memory"), MemoryHub)
    mine = MemoryHub()
    assert create_hub(mine) is mine
    with pytest.raises(ValueError):
        create_hub("carrier-pigeon://")


def test_app_hub_options_reach_the_backend() -> None:
    """The App's ``hub_options`` setting configures the hub it creates."""
    import asyncio

    from fullduplex import App

    app = App(hub_options={"history_size": 3})

    async def main() -> list[int]:
        hub = app.hub
        for i in range(5):
            await hub.publish("lobby", {"n": i})
        entries = await hub.history("lobby")
        await hub.close()
        return [entry.offset for entry in entries]

    assert asyncio.run(main()) == [3, 4, 5]
