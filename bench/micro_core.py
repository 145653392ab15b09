"""Micro-benchmarks of the protocol core's hot loops: fullduplex vs the websockets library.

    .venv/bin/python bench/micro_core.py              # every case
    .venv/bin/python bench/micro_core.py -k utf       # cases whose name contains "utf"
    .venv/bin/python bench/micro_core.py --quick      # fewer repeats
    FULLDUPLEX_PURE_PYTHON=1 .venv/bin/python bench/micro_core.py   # our fallback code

Each case is one operation done the way fullduplex does it and the way websockets does
it. Both sides are timed with ``timeit`` (calls per run chosen by autorange, runs of the
two sides interleaved) and the median per call is reported; ratio = websockets /
fullduplex, so > 1 means fullduplex is faster. The clock is the process's CPU time, not
wall time: on a busy machine, time spent descheduled is charged to neither side.
Results are merged into bench/results/micro_core.json, a dict keyed by case name.

To add cases, write a function returning a list of ``Case`` and append it to ``GROUPS``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import importlib.metadata
import json
import os
import platform
import random
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets.frames

from fullduplex.protocol import mask, speedups, utf8

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "micro_core.json")
WEBSOCKETS_VERSION = importlib.metadata.version("websockets")
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Call:
    """A function and the arguments it is timed with (no lambda between them)."""

    fn: Callable[..., object]
    args: tuple[Any, ...] = ()

    def timer(self) -> timeit.Timer:
        names = [f"a{i}" for i in range(len(self.args))]
        namespace: dict[str, Any] = dict(zip(names, self.args, strict=True), fn=self.fn)
        stmt = f"fn({', '.join(names)})"
        return timeit.Timer(stmt, timer=time.process_time, globals=namespace)


@dataclass(frozen=True)
class Case:
    """One operation, done by fullduplex and by websockets."""

    name: str
    fullduplex: Call
    websockets: Call
    #: What the websockets side runs, for the table footnotes and the JSON.
    websockets_does: str = ""
    #: Checks both sides compute the same thing before timing, e.g. equal outputs.
    check: Callable[[], bool] | None = field(default=None, compare=False)


# -- inputs ------------------------------------------------------------------------------


CHAT_WORDS = [
    *["the", "server", "pushes", "every", "message", "to", "all", "connected", "users"],
    *["as", "soon", "as", "it", "arrives", "and", "the", "client", "shows", "it", "with"],
    *["a", "name", "and", "the", "time", "it", "was", "sent", "ok", "thanks", "see", "you"],
]


def ascii_heavy_text(size: int, seed: int = 1, extras: str = "éüñçöà") -> bytes:
    """English chat messages as JSON lines; 1 word in 50 ends with one of ``extras``."""
    rng = random.Random(seed)
    lines: list[str] = []
    length = 0
    while length < size:
        text = " ".join(
            rng.choice(CHAT_WORDS) + (rng.choice(extras) if rng.random() < 0.02 else "")
            for _ in range(rng.randint(4, 20))
        )
        user, ts = rng.randint(1, 999), rng.randint(1, 10**9)
        line = f'{{"user": "user{user}", "text": "{text}", "ts": {ts}}}\n'
        lines.append(line)
        length += len(line.encode())
    return _cut("".join(lines).encode(), size)


def cjk_text(size: int, seed: int = 2) -> bytes:
    """Chinese text mixed with ASCII words, digits and punctuation (as in a chat room)."""
    rng = random.Random(seed)
    hanzi = (
        "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
        "同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自"
    )
    ascii_words = ["WebSocket", "TCP", "HTTP", "ok", "2024", "Redis", "nginx", "OK!"]
    punct = "\uff0c\u3002\uff01\uff1f\uff1a\u3001"  # fullwidth , . ! ? : and ideographic ,
    parts: list[str] = []
    length = 0
    while length < size:
        roll = rng.random()
        if roll < 0.08:
            piece = f" {rng.choice(ascii_words)} "
        elif roll < 0.15:
            piece = rng.choice(punct)
        else:
            piece = "".join(rng.choice(hanzi) for _ in range(rng.randint(2, 8)))
        parts.append(piece)
        length += len(piece.encode())
    return _cut("".join(parts).encode(), size)


def _cut(data: bytes, size: int) -> bytes:
    """Cut to at most ``size`` bytes on a character boundary."""
    return data[:size].decode("utf-8", "ignore").encode()


def _payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


# -- cases -------------------------------------------------------------------------------


def _same_mask(data: bytes, key: bytes, ws_mask: Callable[[bytes, bytes], bytes]) -> bool:
    return mask.apply_mask(data, key) == ws_mask(data, key)


def _valid_and_decodes(data: bytes) -> bool:
    data.decode("utf-8")
    return utf8.validate_utf8(data) == utf8.UTF8_ACCEPT


def mask_cases() -> list[Case]:
    key = b"\x37\xfa\x21\x3d"
    # What websockets masks with: its C speedup, or its pure-Python fallback if not built.
    ws_mask: Callable[[bytes, bytes], bytes] = websockets.frames.apply_mask  # type: ignore[attr-defined]
    ws_does = f"websockets.frames.apply_mask ({ws_mask.__module__})"
    cases = []
    for label, size in (("1 MiB", MiB), ("64 B", 64)):
        data = _payload(size)
        cases.append(
            Case(
                f"mask {label}",
                Call(mask.apply_mask, (data, key)),
                Call(ws_mask, (data, key)),
                ws_does,
                check=functools.partial(_same_mask, data, key, ws_mask),
            )
        )
    return cases


def utf8_cases() -> list[Case]:
    inputs = [
        ("validate UTF-8 1 MiB (ascii-heavy)", ascii_heavy_text(MiB)),
        ("validate UTF-8 1 MiB (mixed CJK)", cjk_text(MiB)),
        ("validate UTF-8 1 MiB (ascii + emoji)", ascii_heavy_text(MiB, extras="😀👍🎉")),
        ("validate UTF-8 64 B (mixed CJK)", cjk_text(64, seed=3)),
    ]
    # websockets validates a text message by decoding it: data.decode() (asyncio/messages.py).
    return [
        Case(
            name,
            Call(utf8.validate_utf8, (data,)),
            Call(bytes.decode, (data, "utf-8")),
            "bytes.decode('utf-8')",
            check=functools.partial(_valid_and_decodes, data),
        )
        for name, data in inputs
    ]


#: Functions returning cases, in table order.
def _frames_64(count: int = 100) -> bytes:
    """``count`` masked 64-byte binary frames, as a client sends them."""
    from fullduplex.protocol.connection import Connection, Role

    client = Connection(Role.CLIENT)
    return b"".join(client.send_binary(_payload(64)) for _ in range(count))


def _ours_parse(stream: bytes) -> object:
    from fullduplex.protocol.connection import Connection, Role

    conn = Connection(Role.SERVER)
    return lambda: conn.receive_data(stream)


def _theirs_parse(stream: bytes) -> object:
    from websockets.protocol import Protocol, Side

    proto = Protocol(Side.SERVER)

    def parse() -> object:
        proto.receive_data(stream)
        return proto.events_received()

    return parse


def frame_cases() -> list[Case]:
    """Parse 100 masked 64-byte frames: header, unmask, message event, per frame."""
    stream = _frames_64()
    ours = _ours_parse(stream)
    theirs = _theirs_parse(stream)

    def same() -> bool:
        a = [bytes(e.data) for e in ours()]  # type: ignore[operator, attr-defined]
        b = [bytes(f.data) for f in theirs()]  # type: ignore[operator, attr-defined]
        return a == b and len(a) == 100

    return [
        Case(
            "parse 100 x 64-byte frames",
            Call(ours),  # type: ignore[arg-type]
            Call(theirs),  # type: ignore[arg-type]
            websockets_does="websockets.protocol.Protocol.receive_data + events_received",
            check=same,
        )
    ]


def _json_16k() -> bytes:
    import json

    rows = [
        {
            "id": i,
            "user": f"user{i % 37}",
            "text": " ".join(CHAT_WORDS[i % 20 : i % 20 + 9]),
            "room": "lobby",
            "offset": 1000 + i,
        }
        for i in range(400)
    ]
    data = json.dumps(rows).encode()
    return data[: 16 * 1024]


def deflate_cases() -> list[Case]:
    """Compress then decompress one 16 KiB JSON message, context takeover on, 12-bit windows."""
    from websockets.extensions.permessage_deflate import PerMessageDeflate as TheirDeflate
    from websockets.frames import Frame, Opcode

    from fullduplex.protocol.deflate import PerMessageDeflate

    message = _json_16k()
    ours_tx = PerMessageDeflate(local_max_window_bits=12, remote_max_window_bits=12)
    ours_rx = PerMessageDeflate(local_max_window_bits=12, remote_max_window_bits=12)

    def ours() -> bytes:
        return ours_rx.decompress(ours_tx.compress(message), True, None)

    settings = {"memLevel": 5}
    theirs_tx = TheirDeflate(False, False, 12, 12, settings)
    theirs_rx = TheirDeflate(False, False, 12, 12, settings)

    def theirs() -> bytes:
        frame = theirs_tx.encode(Frame(Opcode.TEXT, message))
        return theirs_rx.decode(frame).data

    return [
        Case(
            "deflate round trip 16 KiB JSON",
            Call(ours),
            Call(theirs),
            websockets_does="PerMessageDeflate.encode + decode (12-bit windows, memLevel 5)",
            check=lambda: ours() == message and theirs() == message,
        )
    ]


GROUPS: list[Callable[[], list[Case]]] = [mask_cases, utf8_cases, frame_cases, deflate_cases]


# -- measurement -------------------------------------------------------------------------


def measure(case: Case, repeats: int, min_time: float) -> tuple[float, float]:
    """Median seconds per call of each side, their runs interleaved."""
    timers = [case.fullduplex.timer(), case.websockets.timer()]
    numbers = []
    for t in timers:
        number, elapsed = t.autorange()
        numbers.append(max(1, int(number * min_time / max(elapsed, 1e-9))))
    samples: list[list[float]] = [[], []]
    for _ in range(repeats):
        for side, t in enumerate(timers):
            samples[side].append(t.timeit(numbers[side]) / numbers[side])
    return statistics.median(samples[0]), statistics.median(samples[1])


def _fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:,.3f}" if us < 10 else f"{us:,.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="filter", default="", help="run cases containing this text")
    parser.add_argument("--quick", action="store_true", help="3 short repeats instead of 9")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    args = parser.parse_args(argv)
    repeats, min_time = (3, 0.05) if args.quick else (9, 0.2)

    impl = speedups.IMPLEMENTATION
    cases = [c for group in GROUPS for c in group() if args.filter.lower() in c.name.lower()]
    print(
        f"fullduplex core: {impl} | websockets {WEBSOCKETS_VERSION} | "
        f"Python {platform.python_version()} | {platform.machine()} | "
        f"median of {repeats}"
    )
    header = f"{'case':<38} {'fullduplex µs':>14} {'websockets µs':>14} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    results: dict[str, dict[str, Any]] = {}
    for case in cases:
        if case.check is not None and not case.check():
            print(f"{case.name:<38} SKIPPED: the two sides disagree")
            continue
        ours, theirs = measure(case, repeats, min_time)
        ratio = theirs / ours
        print(f"{case.name:<38} {_fmt_us(ours):>14} {_fmt_us(theirs):>14} {ratio:>6.2f}x")
        key = case.name if impl == "c" else f"{case.name} (pure Python)"
        results[key] = {
            "fullduplex_us": round(ours * 1e6, 4),
            "websockets_us": round(theirs * 1e6, 4),
            "ratio": round(ratio, 3),
            "fullduplex_impl": impl,
            "websockets_does": case.websockets_does,
            "websockets_version": WEBSOCKETS_VERSION,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "repeats": repeats,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    print("ratio = websockets / fullduplex (> 1: fullduplex is faster)")
    for does in dict.fromkeys(c.websockets_does for c in cases if c.websockets_does):
        print(f"  websockets side: {does}")

    if results and not args.no_save:
        merged: dict[str, Any] = {}
        if os.path.exists(RESULTS):
            with open(RESULTS, encoding="utf-8") as f:
                merged = json.load(f)
        merged.update(results)
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w", encoding="utf-8") as f:
            json.dump(merged, f, indent=2, ensure_ascii=False, sort_keys=True)
            f.write("\n")
        print(f"wrote {os.path.relpath(RESULTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
