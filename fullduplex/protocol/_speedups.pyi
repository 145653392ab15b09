"""Type stub for the optional C extension built from _speedups.c."""

from typing import Final

UTF8_ACCEPT: Final[int]
UTF8_REJECT: Final[int]

def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """Return ``data`` XOR-ed with the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""

def validate_utf8(data: bytes | bytearray | memoryview, state: int = 0) -> int:
    """Feed ``data`` to the UTF-8 validator in ``state``; return the new state."""

def unmask_join(parts: list[bytes], mask: bytes, /) -> bytes: ...
