"""Incremental, fail-fast UTF-8 validation (RFC 3629) for text messages, RFC 6455 §8.1.

A DFA over bytes: feed a message in any number of pieces, carrying the returned state.
State ``UTF8_ACCEPT`` (0) means everything so far is complete, valid UTF-8;
``UTF8_REJECT`` means invalid, decided at the first byte that cannot start or continue
a valid sequence (§8.1: "fail the WebSocket Connection" with 1007 at once, §5.6/§7.4.1);
any other value means valid so far but inside a multi-byte sequence. A message that
ends in such a state is invalid.

``validate_utf8`` is the C version when the extension is active (see ``speedups``),
else a codec-assisted pure-Python version; ``validate_utf8_py`` is the plain DFA
reference. All three give identical results, and the tests run all three.
"""

from __future__ import annotations

import codecs
import operator
from typing import Final, Protocol, TypeAlias

from . import speedups

__all__ = ["UTF8_ACCEPT", "UTF8_REJECT", "validate_utf8", "validate_utf8_py"]

BytesLike: TypeAlias = bytes | bytearray | memoryview

#: Everything fed so far is complete, valid UTF-8.
UTF8_ACCEPT: Final = 0
#: Invalid UTF-8 was seen; the state stays here whatever is fed next.
UTF8_REJECT: Final = -1

# The automaton, written from the RFC 3629 §4 grammar (same table as _speedups.c):
#   UTF8-2 = %xC2-DF UTF8-tail
#   UTF8-3 = %xE0 %xA0-BF UTF8-tail / %xE1-EC 2( UTF8-tail ) /
#            %xED %x80-9F UTF8-tail / %xEE-EF 2( UTF8-tail )
#   UTF8-4 = %xF0 %x90-BF 2( UTF8-tail ) / %xF1-F3 3( UTF8-tail ) /
#            %xF4 %x80-8F 2( UTF8-tail )
# ED A0-BF would be a surrogate, E0 80-9F and F0 80-8F overlong forms, F4 90-BF above
# U+10FFFF; C0, C1 and F5-FF never appear.
_ACC, _TAIL1, _TAIL2, _TAIL3, _E0, _ED, _F0, _F4, _REJ = range(9)
_N_STATES: Final = 9


def _byte_class(b: int) -> int:
    """Byte classes with identical columns in the transition table."""
    if b < 0x80:
        return 0
    if b < 0x90:
        return 1  # 80-8F
    if b < 0xA0:
        return 2  # 90-9F
    if b < 0xC0:
        return 3  # A0-BF
    if b in (0xC0, 0xC1) or b >= 0xF5:
        return 4  # never valid
    if b < 0xE0:
        return 5  # C2-DF
    if b == 0xE0:
        return 6
    if b == 0xED:
        return 8
    if b < 0xF0:
        return 7  # E1-EC, EE-EF
    if b == 0xF0:
        return 9
    if b < 0xF4:
        return 10  # F1-F3
    return 11  # F4


_R = _REJ
# fmt: off
_TRANSITIONS: Final[tuple[tuple[int, ...], ...]] = (
    # ascii  80-8F   90-9F   A0-BF   bad  C2-DF  E0   E1..  ED   F0   F1-F3   F4
    (_ACC,   _R,     _R,     _R,     _R,  _TAIL1, _E0, _TAIL2, _ED, _F0, _TAIL3, _F4),  # ACC
    (_R,     _ACC,   _ACC,   _ACC,   _R,  _R,   _R,   _R,   _R,   _R,   _R,     _R),   # TAIL1
    (_R,     _TAIL1, _TAIL1, _TAIL1, _R,  _R,   _R,   _R,   _R,   _R,   _R,     _R),   # TAIL2
    (_R,     _TAIL2, _TAIL2, _TAIL2, _R,  _R,   _R,   _R,   _R,   _R,   _R,     _R),   # TAIL3
    (_R,     _R,     _R,     _TAIL1, _R,  _R,   _R,   _R,   _R,   _R,   _R,     _R),   # E0
    (_R,     _TAIL1, _TAIL1, _R,     _R,  _R,   _R,   _R,   _R,   _R,   _R,     _R),   # ED
    (_R,     _R,     _TAIL2, _TAIL2, _R,  _R,   _R,   _R,   _R,   _R,   _R,     _R),   # F0
    (_R,     _TAIL2, _R,     _R,     _R,  _R,   _R,   _R,   _R,   _R,   _R,     _R),   # F4
    (_R,) * 12,                                                                       # REJ
)
# fmt: on

# Flattened for the loop: next state = _NEXT[state << 8 | byte].
_NEXT: Final = bytes(_TRANSITIONS[s][_byte_class(b)] for s in range(_N_STATES) for b in range(256))


def _to_index(state: int) -> int:
    """Map a public state to a table row, rejecting values no validator returns."""
    s = operator.index(state)
    if s == UTF8_REJECT:
        return _REJ
    if not 0 <= s < _REJ:
        raise ValueError(f"invalid UTF-8 validator state: {state!r}")
    return s


def _flat(data: BytesLike) -> bytes | bytearray | memoryview:
    """A flat byte view of ``data`` (a non-contiguous memoryview is copied)."""
    if isinstance(data, bytes | bytearray):
        return data
    view = memoryview(data)
    if view.c_contiguous:
        return view.cast("B")
    return view.tobytes()


def _run(data: bytes | bytearray | memoryview, s: int) -> int:
    """Feed bytes through the table from row ``s``; stop at the first rejected byte."""
    nxt = _NEXT
    for byte in data:
        s = nxt[s << 8 | byte]
        if s == _REJ:
            return _REJ
    return s


def validate_utf8_py(data: BytesLike, state: int = UTF8_ACCEPT) -> int:
    """Feed ``data`` to the validator in ``state``; return the new state (pure-Python DFA)."""
    s = _to_index(state)
    if s == _REJ:
        return UTF8_REJECT
    raw = data if isinstance(data, bytes | bytearray) else memoryview(data).tobytes()
    if s == _ACC and raw.isascii():
        return UTF8_ACCEPT
    s = _run(raw, s)
    return UTF8_REJECT if s == _REJ else s


def _validate_utf8_codec(data: BytesLike, state: int = UTF8_ACCEPT) -> int:
    """Same as ``validate_utf8_py``, with CPython's UTF-8 codec doing the bulk of the work.

    The fallback when the C extension is missing: the DFA only finishes a sequence left
    open by the previous piece and classifies the (at most 3) bytes the codec leaves
    unconsumed at the end.
    """
    if type(data) is bytes and type(state) is int and state == UTF8_ACCEPT:
        try:  # the common case, a whole message: one call into the codec
            _, consumed = codecs.utf_8_decode(data, "strict", False)
        except UnicodeDecodeError:
            return UTF8_REJECT
        return _tail_state(data, consumed)
    s = _to_index(state)
    if s == _REJ:
        return UTF8_REJECT
    raw = _flat(data)
    start = 0
    while s != _ACC and start < len(raw):
        s = _NEXT[s << 8 | raw[start]]
        if s == _REJ:
            return UTF8_REJECT
        start += 1
    if s != _ACC:
        return s
    if start:
        raw = memoryview(raw)[start:]
    try:
        # final=False: a sequence cut at the end is left unconsumed instead of raising.
        _, consumed = codecs.utf_8_decode(raw, "strict", False)
    except UnicodeDecodeError:
        return UTF8_REJECT
    return _tail_state(raw, consumed)


def _tail_state(raw: bytes | bytearray | memoryview, consumed: int) -> int:
    """State after ``raw`` when the codec accepted ``raw[:consumed]`` with final=False."""
    if consumed == len(raw):
        return UTF8_ACCEPT
    # At most 3 bytes are left, and the codec does not reject every bad prefix early
    # (e.g. ED A0, the start of a surrogate), so the DFA decides.
    s = _run(raw[consumed:], _ACC)
    return UTF8_REJECT if s == _REJ else s


class _Validator(Protocol):
    def __call__(self, data: BytesLike, state: int = UTF8_ACCEPT) -> int: ...


validate_utf8: _Validator = _validate_utf8_codec
if speedups.load() is not None:
    from ._speedups import validate_utf8 as _validate_utf8_c

    validate_utf8 = _validate_utf8_c
