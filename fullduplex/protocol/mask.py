"""Payload masking, RFC 6455 §5.3: XOR with a 4-byte key, byte i with key byte i % 4.

``apply_mask`` is the C version when the extension is active (see ``speedups``), else
``apply_mask_py``, the pure-Python reference, which the tests run too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from . import speedups

__all__ = ["apply_mask", "apply_mask_py", "rotate_mask", "unmask_join", "unmask_join_py"]

BytesLike: TypeAlias = bytes | bytearray | memoryview


def _check_mask(mask: bytes) -> None:
    # RFC 6455 §5.2: "Masking-key: 0 or 4 bytes"; an absent key means "do not call us".
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(mask)}")


def apply_mask_py(data: BytesLike, mask: bytes) -> bytes:
    """Return ``data`` XOR-ed with ``mask`` repeated (pure Python, via one big-int XOR).

    Masking and unmasking are the same operation (RFC 6455 §5.3: "the same algorithm
    applies regardless of the direction").
    """
    _check_mask(mask)
    raw = data if type(data) is bytes else memoryview(data).tobytes()
    n = len(raw)
    if n == 0:
        return b""
    # j = i MOD 4; transformed-octet-i = original-octet-i XOR masking-key-octet-j (§5.3).
    key = (bytes(mask) * ((n >> 2) + 1))[:n]
    xored = int.from_bytes(raw, "little") ^ int.from_bytes(key, "little")
    return xored.to_bytes(n, "little")


def unmask_join_py(parts: list[bytes], mask: bytes) -> bytes:
    """Join ``parts`` (pieces of one masked payload, in order) and unmask the whole."""
    return apply_mask_py(b"".join(parts), mask)


def rotate_mask(mask: bytes, offset: int) -> bytes:
    """The key to unmask a piece of a payload that starts at payload offset ``offset``.

    A frame payload may arrive in several reads; byte k of the payload uses key byte
    k % 4, so a piece starting at k is masked with the key rotated left by k % 4.
    """
    _check_mask(mask)
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    k = offset % 4
    return bytes(mask[k:]) + bytes(mask[:k])


apply_mask: Callable[[BytesLike, bytes], bytes] = apply_mask_py
unmask_join: Callable[[list[bytes], bytes], bytes] = unmask_join_py
if speedups.load() is not None:
    from ._speedups import apply_mask as _apply_mask_c
    from ._speedups import unmask_join as _unmask_join_c

    apply_mask = _apply_mask_c
    unmask_join = _unmask_join_c
