"""The hub tests of tests/hub/, run against RedisHub instead of MemoryHub.

The modules are loaded from their files and their ``MemoryHub`` name is swapped for a
factory of RedisHub nodes on this module's redis-server, so the very same assertions
(fan-out with one shared frame, offsets, presence with two tabs, history, gaps,
resets, ephemeral messages, the wire protocol through a real App and real clients)
hold for both backends. Left out: tests of MemoryHub internals (idle-room eviction,
the default hub of an App, create_hub), and the rooms test of reconnecting with
``since``, which counts on bob's queued publishes being done before ann's join is
handled on another connection — true of a synchronous hub only; test_redis_app.py
checks the same recovery across two nodes without that race.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, TypeVar

import pytest

from fullduplex.hub.redis import RedisHub

HUB_TESTS = Path(__file__).resolve().parent.parent / "hub"
T = TypeVar("T")

pytestmark = pytest.mark.redis


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_redis_contract_{name}", HUB_TESTS / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hub_conftest = _load("conftest")
memory_tests = _load("test_hub_memory")
rooms_tests = _load("test_hub_rooms")

MEMORY_CASES = [
    "test_publish_reaches_every_member_once_with_one_shared_frame",
    "test_exclude_sender_and_rooms_are_isolated",
    "test_offsets_are_per_room_monotonic_from_one",
    "test_presence_counts_a_user_once_across_connections",
    "test_presence_events_can_be_turned_off_per_room",
    "test_history_keeps_the_last_n_per_hub_and_per_room",
    "test_since_recovery_is_exact",
    "test_gap_is_explicit_when_since_is_older_than_history",
    "test_since_beyond_the_room_means_reset",
    "test_ephemeral_messages_have_no_offset_and_no_history",
    "test_publish_all_reaches_each_member_once",
    "test_room_options_validate",
    "test_closed_hub_refuses_work",
    "test_data_must_be_json",
    "test_lone_surrogates_are_escaped_not_fatal",
]
ROOMS_CASES = [
    "test_join_publish_receive",
    "test_presence_events_with_two_tabs",
    "test_bad_input_is_answered_never_fatal",
    "test_hooks_authorize_transform_and_room_limit",
    "test_disconnect_leaves_every_room",
    "test_websockets_library_client_with_deflate",
    "test_hostile_json_is_an_error_reply",
]


def _kit(url: str, hubs: list[RedisHub]) -> SimpleNamespace:
    """tests/hub's kit, whose ``run`` also closes the RedisHubs made during the run."""

    def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        async def main() -> T:
            try:
                return await coro
            finally:
                while hubs:
                    await hubs.pop().close()

        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await main()

        return asyncio.run(bounded())

    return SimpleNamespace(
        run=run,
        Recorder=hub_conftest.Recorder,
        Pairs=hub_conftest.Pairs,
        wait_for=hub_conftest.wait_for,
        gather=hub_conftest.gather_bounded,
        QUIET=hub_conftest.QUIET,
    )


def _factory(url: str, hubs: list[RedisHub], prefix: Callable[[], str]) -> Callable[..., RedisHub]:
    def make(**options: Any) -> RedisHub:
        hub = RedisHub.from_url(url, prefix=prefix(), presence_ttl=3.0, **options)
        hubs.append(hub)
        return hub

    return make


def _call(module: ModuleType, name: str, kit: SimpleNamespace, params: dict[str, Any]) -> None:
    test = getattr(module, name)
    arguments = {"kit": kit, **params}
    wanted = inspect.signature(test).parameters
    test(**{k: v for k, v in arguments.items() if k in wanted})


def _bad_values() -> list[Any]:
    marks = [m for m in getattr(memory_tests.test_data_must_be_json, "pytestmark", [])]
    for mark in marks:
        if mark.name == "parametrize":
            return list(mark.args[1])
    return []


@pytest.mark.parametrize("name", MEMORY_CASES)
def test_memory_hub_semantics_hold_on_redis(
    name: str, redis_server: Any, monkeypatch: pytest.MonkeyPatch, kit: SimpleNamespace
) -> None:
    hubs: list[RedisHub] = []
    monkeypatch.setattr(memory_tests, "MemoryHub", _factory(redis_server.url, hubs, kit.prefix))
    contract_kit = _kit(redis_server.url, hubs)
    if name == "test_data_must_be_json":
        for bad in _bad_values():
            _call(memory_tests, name, contract_kit, {"bad": bad})
        return
    _call(memory_tests, name, contract_kit, {})


@pytest.mark.parametrize("name", ROOMS_CASES)
def test_rooms_protocol_holds_on_redis(
    name: str, redis_server: Any, monkeypatch: pytest.MonkeyPatch, kit: SimpleNamespace
) -> None:
    hubs: list[RedisHub] = []
    monkeypatch.setattr(rooms_tests, "MemoryHub", _factory(redis_server.url, hubs, kit.prefix))
    _call(rooms_tests, name, _kit(redis_server.url, hubs), {})
