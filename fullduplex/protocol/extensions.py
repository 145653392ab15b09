"""The ``Sec-WebSocket-Extensions`` header: parsing and formatting (RFC 6455 §9.1).

Grammar (RFC 6455 §9.1, list rule from RFC 7230 §7)::

    Sec-WebSocket-Extensions = extension-list
    extension-list  = 1#extension
    extension       = extension-token *( ";" extension-param )
    extension-token = token
    extension-param = token [ "=" ( token / quoted-string ) ]

A quoted-string value, once unescaped, must itself be a token (RFC 6455 §9.1).
Whitespace (SP / HTAB) is allowed around every separator. Empty list elements
(``a, , b``) are ignored, as RFC 7230 §7 asks of recipients.

This module knows nothing about any particular extension; see
:mod:`fullduplex.protocol.deflate` for permessage-deflate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import NegotiationError

__all__ = ["ExtensionParams", "format_extension", "parse_extensions"]

#: The parameters of one extension, in header order: ``(name, value or None)``.
ExtensionParams = list[tuple[str, str | None]]

# RFC 7230 §3.2.6: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "."
#                          / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WHITESPACE = " \t"


def _is_token(text: str) -> bool:
    return bool(text) and all(char in _TCHAR for char in text)


def _qdtext_or_pair(char: str) -> bool:
    # RFC 7230 §3.2.6: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text;
    # quoted-pair allows HTAB / SP / VCHAR / obs-text after the backslash.
    code = ord(char)
    return char == "\t" or 0x20 <= code <= 0x7E or 0x80 <= code <= 0xFF


class _Parser:
    """A cursor over one header value; every method leaves ``pos`` after what it read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> NegotiationError:
        return NegotiationError(
            f"invalid Sec-WebSocket-Extensions header: {what} at position {self.pos}"
            f" in {self.text!r}"
        )

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_whitespace(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def token(self, what: str) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TCHAR:
            self.pos += 1
        if self.pos == start:
            raise self.fail(f"expected {what}")
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        # Called with the opening DQUOTE under the cursor.
        self.pos += 1
        chars: list[str] = []
        while True:
            if self.at_end():
                raise self.fail("unterminated quoted-string")
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(chars)
            if char == "\\":
                if self.at_end() or not _qdtext_or_pair(self.text[self.pos]):
                    raise self.fail("invalid escape in quoted-string")
                chars.append(self.text[self.pos])
                self.pos += 1
            elif _qdtext_or_pair(char):
                chars.append(char)
            else:
                raise self.fail(f"invalid character {char!r} in quoted-string")

    def param_value(self) -> str:
        if self.peek() == '"':
            value = self.quoted_string()
            # RFC 6455 §9.1: "When using the quoted-string syntax variant, the value
            # after quoted-string unescaping MUST conform to the 'token' ABNF."
            if not _is_token(value):
                raise self.fail(f"quoted parameter value {value!r} is not a token")
            return value
        return self.token("a parameter value")

    def extension(self) -> tuple[str, ExtensionParams]:
        name = self.token("an extension name")
        params: ExtensionParams = []
        self.skip_whitespace()
        while self.peek() == ";":
            self.pos += 1
            self.skip_whitespace()
            param = self.token("a parameter name")
            self.skip_whitespace()
            value: str | None = None
            if self.peek() == "=":
                self.pos += 1
                self.skip_whitespace()
                value = self.param_value()
                self.skip_whitespace()
            params.append((param, value))
        return name, params

    def extension_list(self) -> list[tuple[str, ExtensionParams]]:
        result: list[tuple[str, ExtensionParams]] = []
        while True:
            self.skip_whitespace()
            if self.at_end():
                return result
            if self.peek() == ",":  # an empty list element: ignored (RFC 7230 §7)
                self.pos += 1
                continue
            result.append(self.extension())
            self.skip_whitespace()
            if self.at_end():
                return result
            if self.peek() != ",":
                raise self.fail(f"unexpected character {self.peek()!r}")
            self.pos += 1


def parse_extensions(values: Iterable[str]) -> list[tuple[str, ExtensionParams]]:
    """Parse one or more ``Sec-WebSocket-Extensions`` header values, in order.

    Each element of the result is ``(extension name, [(param, value or None), ...])``;
    quoted values come back unescaped. Several headers are equivalent to one header
    joined with commas (RFC 7230 §3.2.2), so the result simply concatenates them.
    The same extension may appear several times: a client lists alternative offers
    in order of preference (RFC 6455 §9.1). Names are returned as sent; the caller
    decides how to match them.

    Raises :class:`NegotiationError` on malformed syntax.
    """
    result: list[tuple[str, ExtensionParams]] = []
    for value in values:
        result.extend(_Parser(value).extension_list())
    return result


def format_extension(name: str, params: Sequence[tuple[str, str | None]]) -> str:
    """Format one extension for a ``Sec-WebSocket-Extensions`` header value.

    ``format_extension("permessage-deflate", [("client_max_window_bits", "10")])``
    gives ``"permessage-deflate; client_max_window_bits=10"``. Values are written as
    tokens; a value that is not a token cannot be sent at all (RFC 6455 §9.1), so it
    raises :class:`ValueError`, as do names that are not tokens.
    """
    if not _is_token(name):
        raise ValueError(f"extension name {name!r} is not a token")
    parts = [name]
    for param, value in params:
        if not _is_token(param):
            raise ValueError(f"extension parameter name {param!r} is not a token")
        if value is None:
            parts.append(param)
        elif _is_token(value):
            parts.append(f"{param}={value}")
        else:
            raise ValueError(f"extension parameter value {value!r} is not a token")
    return "; ".join(parts)
