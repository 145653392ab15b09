"""Masking (RFC 6455 §5.3): the C speedup and the pure-Python reference, side by side.

Also here: which implementation is picked at run time, and the optional C build.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fullduplex.protocol import speedups
from fullduplex.protocol.mask import apply_mask_py, rotate_mask

try:
    from fullduplex.protocol import _speedups
except ImportError:  # the extension is optional
    _speedups = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[2]

MaskFn = Callable[[bytes | bytearray | memoryview, bytes], bytes]

IMPLS = [
    pytest.param("python", id="python"),
    pytest.param(
        "c",
        id="c",
        marks=pytest.mark.skipif(_speedups is None, reason="C extension not built"),
    ),
]


def _impl(name: str) -> MaskFn:
    if name == "c":
        assert _speedups is not None
        return _speedups.apply_mask
    return apply_mask_py


@pytest.fixture(params=IMPLS)
def apply(request: pytest.FixtureRequest) -> MaskFn:
    """Each test runs once per implementation (ids ``python`` and ``c``)."""
    return _impl(request.param)


def naive(data: bytes, key: bytes) -> bytes:
    """§5.3 literally: octet i XOR masking-key octet i MOD 4."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


MASKS = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x37\xfa\x21\x3d", b"\x01\x02\x03\x04"]


def test_report_implementations(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        built = "c + python" if _speedups is not None else "python only (C extension not built)"
        print(f"\n[mask] testing {built}; active: {speedups.IMPLEMENTATION}")


# RFC 6455 §5.7: "A single-frame masked text message":
# 0x81 0x85 0x37 0xfa 0x21 0x3d 0x7f 0x9f 0x4d 0x51 0x58 (contains "Hello").
def test_rfc6455_hello(apply: MaskFn) -> None:
    frame = bytes.fromhex("8185 37fa213d 7f9f4d5158")
    key, masked = frame[2:6], frame[6:]
    assert apply(masked, key) == b"Hello"
    assert apply(b"Hello", key) == masked


@pytest.mark.parametrize("key", MASKS)
def test_all_small_lengths(apply: MaskFn, key: bytes) -> None:
    for n in range(65):
        data = payload(n)
        assert apply(data, key) == naive(data, key), n


@pytest.mark.parametrize("n", [100, 127, 128, 4095, 65535, 65536, 65537, (1 << 20) + 3])
def test_large_lengths(apply: MaskFn, n: int) -> None:
    data = payload(n, seed=n)
    key = b"\x9a\x0b\xc4\x71"
    assert apply(data, key) == naive(data, key)


def test_16_mib(apply: MaskFn) -> None:
    data = payload(1 << 12) * (1 << 12)
    key = b"\xde\xad\xbe\xef"
    out = apply(data, key)
    assert len(out) == len(data)
    assert out[:1000] == naive(data[:1000], key)
    assert out[-1001:] == naive(data[-1001:], rotate_mask(key, len(data) - 1001))
    assert apply(out, key) == data


@pytest.mark.parametrize("key", MASKS)
def test_involution(apply: MaskFn, key: bytes) -> None:
    for n in (0, 1, 3, 4, 7, 8, 9, 31, 32, 33, 1000):
        data = payload(n, seed=3)
        assert apply(apply(data, key), key) == data


def test_empty(apply: MaskFn) -> None:
    assert apply(b"", b"abcd") == b""
    assert type(apply(bytearray(), b"abcd")) is bytes


def test_buffer_types(apply: MaskFn) -> None:
    data = payload(77)
    key = b"\x10\x20\x30\x40"
    expected = naive(data, key)
    assert apply(bytearray(data), key) == expected
    assert apply(memoryview(data), key) == expected
    assert type(apply(bytearray(data), key)) is bytes
    # The key may be any 4-byte buffer too.
    assert apply(data, bytearray(key)) == expected
    assert apply(data, memoryview(key)) == expected  # type: ignore[arg-type]


def test_unaligned_views(apply: MaskFn) -> None:
    """Views starting at every offset in a word: the C loads must not assume alignment."""
    buf = payload(200)
    key = b"\xa1\xb2\xc3\xd4"
    for start in range(9):
        for n in (0, 1, 7, 8, 9, 33, 100):
            view = memoryview(buf)[start : start + n]
            assert apply(view, key) == naive(bytes(view), key), (start, n)


def test_non_contiguous_and_wide_views(apply: MaskFn) -> None:
    buf = payload(64)
    key = b"\x01\x80\x7f\xfe"
    strided = memoryview(buf)[::3]
    assert apply(strided, key) == naive(strided.tobytes(), key)
    wide = memoryview(bytearray(buf)).cast("I")  # 16 items of 4 bytes: the raw bytes count
    assert apply(wide, key) == naive(buf, key)


def test_input_not_modified(apply: MaskFn) -> None:
    data = bytearray(payload(50))
    before = bytes(data)
    apply(data, b"\xff\xff\xff\xff")
    assert data == before


def test_keywords(apply: MaskFn) -> None:
    assert apply(data=b"\x00\x00", mask=b"ab\x00\x00") == b"ab"  # type: ignore[call-arg]


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde", b"\x00" * 8])
def test_bad_mask_length(apply: MaskFn, key: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        apply(b"data", key)


@pytest.mark.parametrize("data", ["text", 5, None, [1, 2]])
def test_bad_data_type(apply: MaskFn, data: object) -> None:
    with pytest.raises(TypeError):
        apply(data, b"abcd")  # type: ignore[arg-type]


def test_threads(apply: MaskFn) -> None:
    """Large inputs run without the GIL in C: results must stay right under threads."""
    key = b"\x11\x22\x33\x44"
    inputs = [payload(200_000 + i, seed=i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda d: apply(d, key), inputs))
    for data, out in zip(inputs, outputs, strict=True):
        assert apply_mask_py(out, key) == data


def test_c_matches_python_on_many_sizes() -> None:
    if _speedups is None:
        pytest.skip("C extension not built")
    for n in [*range(300), 4096, 65535, 65536, 100_001]:
        data = payload(n, seed=n)
        key = payload(4, seed=n)
        assert _speedups.apply_mask(data, key) == apply_mask_py(data, key), n


# -- rotate_mask: unmasking a payload that arrives in pieces -----------------------------


def test_rotate_mask_values() -> None:
    key = b"\x01\x02\x03\x04"
    assert rotate_mask(key, 0) == key
    assert rotate_mask(key, 1) == b"\x02\x03\x04\x01"
    assert rotate_mask(key, 2) == b"\x03\x04\x01\x02"
    assert rotate_mask(key, 3) == b"\x04\x01\x02\x03"
    assert rotate_mask(key, 4) == key
    assert rotate_mask(key, 4001) == rotate_mask(key, 1)
    assert type(rotate_mask(bytearray(key), 1)) is bytes


def test_rotate_mask_errors() -> None:
    with pytest.raises(ValueError):
        rotate_mask(b"abc", 1)
    with pytest.raises(ValueError):
        rotate_mask(b"abcd", -1)


def test_split_payload(apply: MaskFn) -> None:
    key = b"\x37\xfa\x21\x3d"
    data = payload(50)
    whole = apply(data, key)
    for cut in range(len(data) + 1):
        for cut2 in range(cut, len(data) + 1, 7):
            pieces = [data[:cut], data[cut:cut2], data[cut2:]]
            offset, out = 0, b""
            for piece in pieces:
                out += apply(piece, rotate_mask(key, offset))
                offset += len(piece)
            assert out == whole, (cut, cut2)


# -- properties ---------------------------------------------------------------------------

keys = st.binary(min_size=4, max_size=4)


@pytest.mark.parametrize("name", IMPLS)
@given(data=st.binary(max_size=300), key=keys)
def test_property_matches_naive_and_involution(name: str, data: bytes, key: bytes) -> None:
    apply = _impl(name)
    out = apply(data, key)
    assert out == naive(data, key)
    assert apply(out, key) == data


@pytest.mark.parametrize("name", IMPLS)
@given(
    data=st.binary(max_size=200),
    key=keys,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_property_split_anywhere(name: str, data: bytes, key: bytes, cuts: list[int]) -> None:
    apply = _impl(name)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    out = b"".join(apply(data[a:b], rotate_mask(key, a)) for a, b in itertools.pairwise(bounds))
    assert out == apply(data, key)


@given(data=st.binary(max_size=2000), key=keys, start=st.integers(0, 15))
def test_property_c_equals_python(data: bytes, key: bytes, start: int) -> None:
    if _speedups is None:
        pytest.skip("C extension not built")
    view = memoryview(data)[start:]
    assert _speedups.apply_mask(view, key) == apply_mask_py(view, key)


# -- which implementation runs ------------------------------------------------------------


def _probe(env_extra: dict[str, str]) -> list[str]:
    code = (
        "from fullduplex.protocol import mask, speedups, utf8;"
        "print(speedups.IMPLEMENTATION, speedups.AVAILABLE,"
        " mask.apply_mask is mask.apply_mask_py,"
        " utf8.validate_utf8 is utf8._validate_utf8_codec)"
    )
    env = {k: v for k, v in os.environ.items() if k != "FULLDUPLEX_PURE_PYTHON"}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_pure_python_env_forces_fallback() -> None:
    available = str(speedups.AVAILABLE)
    assert _probe({"FULLDUPLEX_PURE_PYTHON": "1"}) == ["python", available, "True", "True"]


def test_default_uses_c_when_built() -> None:
    if _speedups is None:
        pytest.skip("C extension not built")
    assert _probe({}) == ["c", "True", "False", "False"]


# -- the optional build (setup.py) ----------------------------------------------------------


def _build(
    tmp_path: Path, env_extra: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    env = {**os.environ, **env_extra}
    proc = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(tmp_path / "lib"),
            "--build-temp",
            str(tmp_path / "tmp"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    return proc, sorted((tmp_path / "lib").rglob("_speedups*"))


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_build_compiles_extension(tmp_path: Path) -> None:
    proc, built = _build(tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    assert built, proc.stderr


def test_build_skipped_by_env(tmp_path: Path) -> None:
    proc, built = _build(tmp_path, {"FULLDUPLEX_NO_SPEEDUPS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert built == []


def test_build_survives_broken_compiler(tmp_path: Path) -> None:
    proc, built = _build(tmp_path, {"CC": str(tmp_path / "no-such-compiler")})
    assert proc.returncode == 0, proc.stderr
    assert built == []
    assert "pure-Python" in proc.stderr


# --------------------------------------------------------------- unmask_join


def _unmask_join_impls() -> list[object]:
    from fullduplex.protocol import mask as mask_module

    impls: list[object] = [pytest.param(mask_module.unmask_join_py, id="python")]
    if speedups.load() is not None:
        from fullduplex.protocol._speedups import unmask_join as c_impl

        impls.append(pytest.param(c_impl, id="c"))
    return impls


@pytest.mark.parametrize("join", _unmask_join_impls())
@given(
    sizes=st.lists(st.integers(0, 300), max_size=8),
    key=st.binary(min_size=4, max_size=4),
)
def test_unmask_join_equals_join_then_mask(
    join: Callable[[list[bytes], bytes], bytes], sizes: list[int], key: bytes
) -> None:
    parts = [payload(n, seed=i) for i, n in enumerate(sizes)]
    assert join(parts, key) == naive(b"".join(parts), key)


@pytest.mark.parametrize("join", _unmask_join_impls())
def test_unmask_join_rejects_bad_input(join: Callable[[list[bytes], bytes], bytes]) -> None:
    with pytest.raises(ValueError):
        join([b"abc"], b"xyz")
    with pytest.raises(TypeError):
        join([b"ab", "cd"], b"\x01\x02\x03\x04")  # type: ignore[list-item]
