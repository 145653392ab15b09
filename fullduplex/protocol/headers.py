"""HTTP header utilities shared by the handshake and the HTTP server.

:class:`Headers` is an ordered, case-insensitive multi-dict of ``(name, value)``
string pairs. Names and values are checked when they are added, so a header
can never smuggle a line break into a response (header injection).

Strings are the ISO-8859-1 decoding of the bytes on the wire (RFC 9110 §5.5:
field values are octets; Latin-1 maps each octet to one character and back),
so :meth:`Headers.serialize` is lossless for anything a parser produced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = [
    "Headers",
    "build_host",
    "check_header",
    "is_token",
    "token_list",
]

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_is_token = _TOKEN.fullmatch
# Characters that end a header line early or truncate it in C code: CR, LF, NUL.
_has_forbidden = re.compile(r"[\r\n\x00]").search


# Header names already checked, mapped to their lower-case form. Bounded, so a peer
# sending endless distinct names cannot grow it without limit.
_known_names: dict[str, str] = {}
_MAX_KNOWN_NAMES = 512


def is_token(value: str) -> bool:
    """Whether ``value`` is an RFC 9110 §5.6.2 ``token`` (e.g. a header name)."""
    return _is_token(value) is not None


def check_header(name: str, value: str) -> None:
    """Raise :class:`ValueError` unless ``name: value`` is safe to put on the wire.

    The name must be a token; the value must not contain CR, LF or NUL and must
    be encodable as ISO-8859-1.
    """
    if _is_token(name) is None:
        raise ValueError(f"invalid header name: {name!r}")
    if _has_forbidden(value) is not None:
        raise ValueError(f"header value contains CR, LF or NUL: {name}: {value!r}")
    if not value.isascii():
        value.encode("latin-1")  # UnicodeEncodeError is a ValueError


class Headers:
    """Ordered, case-insensitive multi-dict of HTTP headers.

    * ``headers[name]`` returns the **first** value and raises :class:`KeyError`
      when there is none; use :meth:`get_all` wherever a repeated header matters
      (the WebSocket handshake does: a repeated ``Sec-WebSocket-Key`` is an error).
    * ``headers[name] = value`` replaces every value of ``name`` with one value,
      kept at the position of the first old one (or appended).
    * Iterating, :meth:`items` and :meth:`raw_items` give ``(name, value)`` pairs in
      arrival order with the names spelled as they were added; ``len()`` counts pairs.

    Internally: a list of pairs (order) plus a dict from lower-cased name to its
    values (lookups), so both reads and :meth:`add` are O(1).
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append a header; an existing one with the same name is kept."""
        # add() runs for every header of every request: names seen before are looked
        # up instead of re-checked, and printable ASCII values (the usual case) cannot
        # hold CR, LF or NUL, so only the others go through check_header().
        key = _known_names.get(name)
        if key is None:
            check_header(name, "")
            key = name.lower()
            if len(_known_names) < _MAX_KNOWN_NAMES:
                _known_names[name] = key
        if not (value.isascii() and value.isprintable()):
            check_header(name, value)
        self._items.append((name, value))
        values = self._index.get(key)
        if values is None:
            self._index[key] = [value]
        else:
            values.append(value)

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        """Add each ``(name, value)`` pair."""
        for name, value in items:
            self.add(name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = self._index.get(name.lower())
        return default if values is None else values[0]

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in arrival order (a new list, possibly empty)."""
        values = self._index.get(name.lower())
        return [] if values is None else values.copy()

    def count(self, name: str) -> int:
        """How many times ``name`` occurs."""
        values = self._index.get(name.lower())
        return 0 if values is None else len(values)

    def __getitem__(self, name: str) -> str:
        values = self._index.get(name.lower())
        if values is None:
            raise KeyError(name)
        return values[0]

    def __setitem__(self, name: str, value: str) -> None:
        key = name.lower()
        if key not in self._index:
            self.add(name, value)
            return
        check_header(name, value)
        items: list[tuple[str, str]] = []
        placed = False
        for pair in self._items:
            if pair[0].lower() != key:
                items.append(pair)
            elif not placed:
                items.append((name, value))
                placed = True
        self._items = items
        self._index[key] = [value]

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if key not in self._index:
            raise KeyError(name)
        del self._index[key]
        self._items = [pair for pair in self._items if pair[0].lower() != key]

    def pop_all(self, name: str) -> list[str]:
        """Remove ``name`` and return its values (empty list when absent)."""
        values = self.get_all(name)
        if values:
            del self[name]
        return values

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        """Equal when the same pairs arrive in the same order (names compared caselessly)."""
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._items] == [(n.lower(), v) for n, v in other._items]

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def items(self) -> Iterator[tuple[str, str]]:
        """``(name, value)`` pairs in arrival order (names as added)."""
        return iter(self._items)

    def raw_items(self) -> list[tuple[str, str]]:
        """The internal list of pairs, without a copy. Read it; do not mutate it."""
        return self._items

    def keys(self) -> list[str]:
        """Distinct lower-cased names in order of first appearance."""
        return list(self._index)

    def copy(self) -> Headers:
        """An independent copy (no re-validation)."""
        new = Headers.__new__(Headers)
        new._items = self._items.copy()
        new._index = {key: values.copy() for key, values in self._index.items()}
        return new

    def serialize(self) -> bytes:
        """``Name: value\\r\\n`` lines, ISO-8859-1 encoded, without the final blank line."""
        return "".join([f"{name}: {value}\r\n" for name, value in self._items]).encode("latin-1")


def token_list(values: Iterable[str], *, lower: bool = False) -> list[str]:
    """Split comma-separated header values into their elements.

    Implements the RFC 9110 §5.6.1 list rule for recipients: elements are split on
    ``,``, optional whitespace (SP / HTAB) around them is trimmed and empty elements
    are skipped, so ``"a, ,b"`` and two headers ``a`` and ``b`` both give
    ``["a", "b"]``. With ``lower=True`` the elements are lower-cased, for tokens that
    compare case-insensitively (``Upgrade``, ``Connection``).

    Elements are not checked to be tokens; callers that need that use :func:`is_token`.
    """
    tokens: list[str] = []
    for value in values:
        if lower:
            value = value.lower()
        for element in value.split(","):
            element = element.strip(" \t")
            if element:
                tokens.append(element)
    return tokens


def build_host(host: str, port: int, secure: bool) -> str:
    """The ``Host`` header value for ``host:port`` (RFC 9110 §7.2, RFC 6455 §4.1).

    IPv6 literals get brackets, internationalised names their IDNA (punycode) form,
    and the port is left out when it is the scheme's default (80, or 443 if secure).
    """
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if port == (443 if secure else 80):
        return host
    return f"{host}:{port}"
