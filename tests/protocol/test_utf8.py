"""Incremental UTF-8 validation (RFC 3629, RFC 6455 §8.1), every implementation.

Three validators share one meaning: ``c`` (the extension), ``python`` (the fallback,
CPython's codec plus the DFA at the edges) and ``dfa`` (the plain reference). The oracle
is CPython's strict UTF-8 codec.
"""

from __future__ import annotations

import codecs
import itertools
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fullduplex.protocol import speedups, utf8
from fullduplex.protocol.utf8 import UTF8_ACCEPT, UTF8_REJECT, validate_utf8_py

try:
    from fullduplex.protocol import _speedups
except ImportError:  # the extension is optional
    _speedups = None  # type: ignore[assignment]

Validator = Callable[..., int]

IMPLS = [
    pytest.param("dfa", id="dfa"),
    pytest.param("python", id="python"),
    pytest.param(
        "c",
        id="c",
        marks=pytest.mark.skipif(_speedups is None, reason="C extension not built"),
    ),
]


def _impl(name: str) -> Validator:
    if name == "c":
        assert _speedups is not None
        return _speedups.validate_utf8
    if name == "python":
        return utf8._validate_utf8_codec
    return validate_utf8_py


def _all_impls() -> list[Validator]:
    found = [validate_utf8_py, utf8._validate_utf8_codec]
    return [*found, _speedups.validate_utf8] if _speedups is not None else found


@pytest.fixture(params=IMPLS)
def validate(request: pytest.FixtureRequest) -> Validator:
    """Each test runs once per implementation (ids ``dfa``, ``python`` and ``c``)."""
    return _impl(request.param)


def test_report_implementations(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        built = "c + " if _speedups is not None else "(C extension not built) "
        print(f"\n[utf8] testing {built}python + dfa; active: {speedups.IMPLEMENTATION}")


def test_constants() -> None:
    assert UTF8_ACCEPT == 0
    assert UTF8_REJECT < 0
    if _speedups is not None:
        assert (_speedups.UTF8_ACCEPT, _speedups.UTF8_REJECT) == (UTF8_ACCEPT, UTF8_REJECT)


# -- oracle -----------------------------------------------------------------------------

# Enough to finish any open sequence: each continuation range the grammar may require.
_COMPLETIONS = (b"", b"\x80", b"\x80\x80", b"\xa0\x80", b"\x80\x80\x80", b"\x90\x80\x80")


def is_valid(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_valid_prefix(data: bytes) -> bool:
    """Whether some continuation makes ``data`` valid, i.e. it must not be rejected yet."""
    return any(is_valid(data + tail) for tail in _COMPLETIONS)


def first_bad_byte(data: bytes) -> int | None:
    """Index of the byte at which a fail-fast validator must reject, per the oracle."""
    for i in range(len(data)):
        if not is_valid_prefix(data[: i + 1]):
            return i
    return None


# -- vectors ----------------------------------------------------------------------------

VALID = [
    b"",
    b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",  # Autobahn 6.4
    "κόσμε".encode(),  # Autobahn 6.2.1
    bytes(range(128)),
    b"\xc2\x80",  # U+0080, first 2-byte
    b"\xdf\xbf",  # U+07FF, last 2-byte
    b"\xe0\xa0\x80",  # U+0800, first 3-byte
    b"\xed\x9f\xbf",  # U+D7FF, just below the surrogates
    b"\xee\x80\x80",  # U+E000, just above the surrogates
    b"\xef\xbf\xbd",  # U+FFFD
    b"\xef\xbf\xbf",  # U+FFFF (a noncharacter, still valid UTF-8: Autobahn 6.23)
    b"\xf0\x90\x80\x80",  # U+10000, first 4-byte
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF, the last code point
    "WebSocket 是一种全双工通信协议 😀 ok".encode(),
]

# (bytes, index of the first byte that cannot start or continue a valid sequence)
INVALID = [
    (b"\x80", 0),  # lone continuation bytes
    (b"\xbf", 0),
    (b"a\x80", 1),
    (b"\xc2\x80\x80", 2),
    (b"\xc0\x80", 0),  # overlong NUL: C0 and C1 never appear
    (b"\xc1\xbf", 0),
    (b"\xe0\x80\x80", 1),  # overlong 3-byte forms
    (b"\xe0\x9f\xbf", 1),
    (b"\xf0\x80\x80\x80", 1),  # overlong 4-byte forms
    (b"\xf0\x8f\xbf\xbf", 1),
    (b"\xed\xa0\x80", 1),  # U+D800, first high surrogate
    (b"\xed\xad\xbf", 1),
    (b"\xed\xbf\xbf", 1),  # U+DFFF, last low surrogate
    (b"\xed\xa0\x80\xed\xb0\x80", 1),  # a surrogate pair, CESU-8 style
    (b"\xf4\x90\x80\x80", 1),  # U+110000, above the last code point
    (b"\xf4\xbf\xbf\xbf", 1),
    (b"\xf5\x80\x80\x80", 0),  # F5-F7: would be above U+10FFFF
    (b"\xf7\xbf\xbf\xbf", 0),
    (b"\xf8\x88\x80\x80\x80", 0),  # old 5-byte form
    (b"\xfc\x84\x80\x80\x80\x80", 0),  # old 6-byte form
    (b"\xfe", 0),
    (b"\xff", 0),
    (b"\xc2A", 1),  # a sequence cut by a new character
    (b"\xe2\x82A", 2),
    (b"\xf0\x9f\x98A", 3),
    (b"\xe2\x82\xc2\x80", 2),
    (b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", 12),  # Autobahn 6.3.1
    (b"\xf4\x90", 1),  # from the spec of this module
    (b"\xed\xa0", 1),
    (b"\xc0", 0),
]

# Valid so far, but cut inside a sequence: neither accepted nor rejected.
TRUNCATED = [
    b"\xc2",
    b"\xdf",
    b"\xe0",
    b"\xe0\xa0",
    b"\xe1",
    b"\xe2\x82",
    b"\xed",
    b"\xed\x9f",
    b"\xef\xbf",
    b"\xf0",
    b"\xf0\x90",
    b"\xf0\x9f\x98",
    b"\xf1\x80\x80",
    b"\xf4",
    b"\xf4\x8f\xbf",
    b"abc\xe4\xb8",
    "κόσμε".encode() + b"\xce",
]


def test_vectors_agree_with_the_oracle() -> None:
    """Keep the tables above honest."""
    for data in VALID:
        assert is_valid(data)
    for data, index in INVALID:
        assert first_bad_byte(data) == index, data
    for data in TRUNCATED:
        assert not is_valid(data) and is_valid_prefix(data), data


@pytest.mark.parametrize("data", VALID)
def test_valid(validate: Validator, data: bytes) -> None:
    assert validate(data) == UTF8_ACCEPT
    assert validate(bytearray(data)) == UTF8_ACCEPT
    assert validate(memoryview(data)) == UTF8_ACCEPT


@pytest.mark.parametrize(("data", "index"), INVALID)
def test_invalid(validate: Validator, data: bytes, index: int) -> None:
    assert validate(data) == UTF8_REJECT
    assert validate(data[:index]) != UTF8_REJECT
    assert validate(data[: index + 1]) == UTF8_REJECT


@pytest.mark.parametrize(("data", "index"), INVALID)
def test_fail_fast_byte_by_byte(validate: Validator, data: bytes, index: int) -> None:
    state = UTF8_ACCEPT
    for i, byte in enumerate(data):
        state = validate(bytes([byte]), state)
        assert (state == UTF8_REJECT) == (i >= index), (i, state)


@pytest.mark.parametrize("data", TRUNCATED)
def test_truncated(validate: Validator, data: bytes) -> None:
    state = validate(data)
    assert state not in (UTF8_ACCEPT, UTF8_REJECT)
    # Split anywhere, the pieces carry the state across.
    for cut in range(len(data) + 1):
        assert validate(data[cut:], validate(data[:cut])) == state


def test_states_are_the_same_everywhere() -> None:
    """Each mid-sequence state has one number, whichever implementation produced it."""
    leads = [b"\xc2", b"\xe1", b"\xf1", b"\xe0", b"\xed", b"\xf0", b"\xf4", b"\xe1\x80"]
    for lead in leads:
        states = {v(lead) for v in _all_impls()}
        assert len(states) == 1, (lead, states)
    # A state from one implementation continues correctly in another.
    for first in _all_impls():
        for second in _all_impls():
            assert second(b"\x98\x80", first(b"\xf0\x9f")) == UTF8_ACCEPT


def test_rejected_stays_rejected(validate: Validator) -> None:
    assert validate(b"", UTF8_REJECT) == UTF8_REJECT
    assert validate(b"valid", UTF8_REJECT) == UTF8_REJECT
    assert validate(b"\x80") == UTF8_REJECT


def test_empty_keeps_state(validate: Validator) -> None:
    for lead in (b"\xc2", b"\xe0", b"\xf4\x8f"):
        state = validate(lead)
        assert validate(b"", state) == state
        assert validate(b"", state=state) == state


@pytest.mark.parametrize("state", [8, 9, 12, 100, -2, 2**70, -(2**70)])
def test_bad_state_value(validate: Validator, state: int) -> None:
    with pytest.raises(ValueError, match="state"):
        validate(b"abc", state)


@pytest.mark.parametrize("state", [0.0, "0", None])
def test_bad_state_type(validate: Validator, state: object) -> None:
    with pytest.raises(TypeError):
        validate(b"abc", state)


@pytest.mark.parametrize("data", ["text", 5, None])
def test_bad_data_type(validate: Validator, data: object) -> None:
    with pytest.raises(TypeError):
        validate(data)


def test_buffer_kinds(validate: Validator) -> None:
    good = "é中😀".encode() * 10
    assert validate(memoryview(good)[::1]) == UTF8_ACCEPT
    strided = memoryview(b"a\xffb\xffc")[::2]  # b"abc", skipping the bad bytes
    assert validate(strided) == UTF8_ACCEPT
    assert validate(memoryview(b"\xff\xffa\xff")[1:][::2]) == UTF8_REJECT
    wide = memoryview(bytearray("éé".encode())).cast("H")  # two items, four bytes
    assert validate(wide) == UTF8_ACCEPT


# -- the C fast path's edges: word and block boundaries, buffer ends ------------------------

CHARS = ["é", "中", "😀", "\u0800", "\U0010ffff"]


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 8, 9, 15, 16, 31, 32, 33, 40, 63, 64, 65, 100])
def test_position_sweep(validate: Validator, n: int) -> None:
    """A special byte or character at every position of an ASCII run of each length."""
    for pos in range(n + 1):
        ascii_before, ascii_after = b"x" * pos, b"y" * (n - pos)
        for char in CHARS:
            encoded = char.encode()
            assert validate(ascii_before + encoded + ascii_after) == UTF8_ACCEPT
            # Cut short at the end of the buffer: mid-sequence, not rejected.
            assert validate(ascii_before + encoded[:-1]) not in (UTF8_ACCEPT, UTF8_REJECT)
            # Cut short by ASCII: rejected.
            if n > pos:
                assert validate(ascii_before + encoded[:-1] + ascii_after) == UTF8_REJECT
        for bad in (b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff"):
            assert validate(ascii_before + bad + ascii_after) == UTF8_REJECT


def test_unaligned_views(validate: Validator) -> None:
    text = ("abcdefgh中文é😀" * 20).encode()
    for start in range(16):
        view = memoryview(text)[start:]
        expected = validate_utf8_py(view)
        assert validate(view) == expected
        assert validate(memoryview(text)[start : start + 50]) == validate_utf8_py(
            text[start : start + 50]
        )


def _mixed_text(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    alphabet = "abc xyz 0123 é ñ — 中文字 😀 \u0800\uffff\U0010ffff"
    return "".join(rng.choice(alphabet) for _ in range(n)).encode()


def test_large_inputs_and_corruption(validate: Validator) -> None:
    """Above the C GIL-release threshold, and one bad byte anywhere is found."""
    big = _mixed_text(100_000, seed=1)
    assert len(big) > 64 * 1024
    assert validate(big) == UTF8_ACCEPT
    assert validate(b"a" * (1 << 20)) == UTF8_ACCEPT
    rng = random.Random(2)
    for _ in range(20):
        pos = rng.randrange(len(big))
        corrupt = bytearray(big)
        corrupt[pos] = rng.choice([0x80, 0xBF, 0xC0, 0xF5, 0xFF])
        assert validate(corrupt) == (UTF8_ACCEPT if is_valid(bytes(corrupt)) else UTF8_REJECT)


def test_threads(validate: Validator) -> None:
    inputs = [_mixed_text(30_000, seed=i) for i in range(6)]
    inputs += [data[:-1] + b"\xff" for data in inputs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(validate, inputs))
    assert results == [UTF8_ACCEPT] * 6 + [UTF8_REJECT] * 6


def test_exhaustive_two_bytes() -> None:
    """Every 1- and 2-byte input: all implementations agree with the oracle and each other."""
    impls = _all_impls()
    for first in range(256):
        for second in (None, *range(256)):
            data = bytes([first]) if second is None else bytes([first, second])
            states = {v(data) for v in impls}
            assert len(states) == 1, (data, states)
            (state,) = states
            assert (state == UTF8_ACCEPT) == is_valid(data), data
            assert (state != UTF8_REJECT) == is_valid_prefix(data), data


# -- properties ---------------------------------------------------------------------------

# Bytes at the edges of the RFC 3629 ranges, so random strings hit the interesting cases.
EDGE_BYTES = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF]
EDGE_BYTES += [0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]

edgy_bytes = st.lists(st.sampled_from(EDGE_BYTES), max_size=40).map(bytes)
texts = st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass"))
corrupted = st.tuples(texts, st.integers(0, 60), st.integers(0, 255)).map(
    lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
)
any_bytes = st.one_of(st.binary(max_size=80), edgy_bytes, texts, corrupted)

# Longer runs mixing scripts, to move through the C fast path's word and sequence modes.
MIXED_CHARS = list("ab z09 ~\x7f") + list("éñÿ\u0080\u07ffжЯωא") + list("中文。\u0800\uffff")
MIXED_CHARS += ["😀", "\U00010000", "\U0010ffff"]
long_texts = st.lists(st.sampled_from(MIXED_CHARS), max_size=200).map(
    lambda chars: "".join(chars).encode()
)
long_corrupted = st.tuples(long_texts, st.integers(0, 400), st.sampled_from(EDGE_BYTES)).map(
    lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
)


@given(data=any_bytes)
def test_property_verdict_matches_codec(data: bytes) -> None:
    for validate in _all_impls():
        state = validate(data)
        assert (state == UTF8_ACCEPT) == is_valid(data)
        assert (state != UTF8_REJECT) == is_valid_prefix(data)


@given(data=any_bytes, cuts=st.lists(st.integers(0, 80), max_size=5))
def test_property_any_split_same_state(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    whole = validate_utf8_py(data)
    for validate in _all_impls():
        state = UTF8_ACCEPT
        for a, b in itertools.pairwise(bounds):
            state = validate(data[a:b], state)
        assert state == whole


@given(data=any_bytes)
def test_property_fail_fast(data: bytes) -> None:
    """Fed byte by byte, the state turns to REJECT exactly at the first bad byte."""
    bad = first_bad_byte(data)
    for validate in _all_impls():
        state = UTF8_ACCEPT
        for i in range(len(data)):
            state = validate(data[i : i + 1], state)
            assert (state == UTF8_REJECT) == (bad is not None and i >= bad)


@given(data=any_bytes, prefix=st.binary(max_size=40).filter(lambda b: b.isascii()))
def test_property_c_equals_dfa_with_ascii_prefix(data: bytes, prefix: bytes) -> None:
    """An ASCII prefix moves ``data`` across the C fast path's word boundaries."""
    for validate in _all_impls():
        assert validate(prefix + data) == validate_utf8_py(data)


@given(st.binary(max_size=60))
def test_property_incremental_decoder_agrees(data: bytes) -> None:
    """CPython's incremental decoder raises iff we reject (it may do so later than we do)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(data, final=False)
        raised = False
    except UnicodeDecodeError:
        raised = True
    state = utf8.validate_utf8(data)
    if raised:
        assert state == UTF8_REJECT


@given(data=st.one_of(long_texts, long_corrupted), cut=st.integers(0, 400))
def test_property_long_mixed_scripts(data: bytes, cut: int) -> None:
    expected_valid, expected_prefix = is_valid(data), is_valid_prefix(data)
    for validate in _all_impls():
        state = validate(data)
        assert (state == UTF8_ACCEPT) == expected_valid
        assert (state != UTF8_REJECT) == expected_prefix
        assert validate(data[cut:], validate(data[:cut])) == state
