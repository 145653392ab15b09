"""Sans-I/O parsing of HTTP/1.1 message heads (RFC 9112), small and strict.

Used for the WebSocket opening handshake: by the client to read the server's
response, and by tests (the server itself parses requests with httptools and
builds a :class:`Request` from the result).

Policies, chosen for safety over leniency:

* Lines end with CRLF. A bare LF or bare CR anywhere in the head is rejected
  (RFC 9112 §2.2 allows a recipient to accept a bare LF; refusing it closes
  request-smuggling gaps between parsers that disagree).
* Obsolete line folding (a line starting with SP/HTAB) is rejected (§5.2).
* Whitespace between a field name and the colon is rejected (§5.1).
* A leading empty line before the start line is rejected.
* The head, up to and including the blank line, may hold at most
  ``limits.max_header_size`` bytes and ``limits.max_header_count`` header lines;
  a partial head that is already too long is rejected at once, so no caller ever
  buffers more than that.
* Names and values are decoded as ISO-8859-1 (lossless for any octet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NoReturn

from .errors import HandshakeFailed, HandshakeRejected
from .headers import Headers
from .limits import Limits

__all__ = ["Request", "Response", "parse_request_head", "parse_response_head", "reason_phrase"]

# RFC 9110 §15: the reason phrases of the status codes we may send.
_PHRASES: dict[int, str] = {
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status`` (``"Unknown"`` when not registered)."""
    phrase = _PHRASES.get(status)
    if phrase is None:
        from http import HTTPStatus  # rare path; stdlib data only, no I/O

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
    return phrase


@dataclass(slots=True)
class Request:
    """An HTTP request head: ``GET /chat?room=1 HTTP/1.1`` plus headers."""

    method: str
    target: str
    version: str = "HTTP/1.1"
    headers: Headers = field(default_factory=Headers)

    def serialize(self) -> bytes:
        """The request head: request line, headers and the blank line."""
        return (
            f"{self.method} {self.target} {self.version}\r\n".encode("latin-1")
            + self.headers.serialize()
            + b"\r\n"
        )


@dataclass(slots=True)
class Response:
    """An HTTP response: status line, headers and an optional body."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def serialize(self) -> bytes:
        """Status line, headers, blank line and body.

        ``Content-Length`` is added when missing, except for statuses that must not
        carry it (1xx, 204 — RFC 9110 §8.6) and 304.
        """
        head = f"HTTP/1.1 {self.status} {self.reason}\r\n".encode("latin-1")
        headers = self.headers.serialize()
        status = self.status
        if status >= 200 and status not in (204, 304) and "content-length" not in self.headers:
            headers += b"Content-Length: %d\r\n" % len(self.body)
        return head + headers + b"\r\n" + self.body


# RFC 9112 §3: request-line = method SP request-target SP HTTP-version
_REQUEST_LINE = re.compile(
    r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])"
).fullmatch
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
# (the SP before an empty reason phrase is tolerated when missing).
_STATUS_LINE = re.compile(
    r"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?"
).fullmatch
# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS
_FIELD_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([\t\x20-\x7e\x80-\xff]*)").fullmatch
_ANY_VERSION = re.compile(r"HTTP/([0-9]+)\.[0-9]+").fullmatch
_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]*").fullmatch


def _split_head(
    data: bytes | bytearray, limits: Limits, fail: type[HandshakeRejected] | type[HandshakeFailed]
) -> tuple[list[str], int] | None:
    """Find the end of the head; return its lines and the bytes consumed, or None."""
    max_size = limits.max_header_size
    end = data.find(b"\r\n\r\n", 0, max_size)
    if end < 0:
        if len(data) >= max_size:
            _too_large(fail, f"head exceeds {max_size} bytes")
        if data.find(b"\n\n", 0, max_size) >= 0 or data.find(b"\n\r\n", 0, max_size) >= 0:
            # A head ended with bare LFs would otherwise wait for a CRLFCRLF forever.
            _malformed(fail, "bare LF line endings are not allowed")
        return None
    consumed = end + 4
    head = bytes(data[:end]).decode("latin-1")
    lines = head.split("\r\n")
    if len(lines) - 1 > limits.max_header_count:
        _too_large(fail, f"more than {limits.max_header_count} header lines")
    return lines, consumed


def _too_large(fail: type[HandshakeRejected] | type[HandshakeFailed], reason: str) -> NoReturn:
    if fail is HandshakeRejected:
        raise HandshakeRejected(431, f"request {reason}")
    raise HandshakeFailed(f"response {reason}")


def _malformed(fail: type[HandshakeRejected] | type[HandshakeFailed], reason: str) -> NoReturn:
    if fail is HandshakeRejected:
        raise HandshakeRejected(400, reason)
    raise HandshakeFailed(f"malformed HTTP response: {reason}")


def _describe_bad_field(line: str) -> str:
    """Say what is wrong with a header line that did not match ``_FIELD_LINE``."""
    if not line:
        return "empty header line"
    if line[0] in " \t":
        return "obsolete line folding (header line starting with whitespace) is not allowed"
    name, colon, value = line.partition(":")
    if not colon:
        return f"header line without a colon: {_show(line)}"
    if name.rstrip(" \t") != name:
        return f"whitespace between header name and colon: {_show(name)}"
    if not name or _TOKEN_CHARS(name) is None:
        return f"invalid header name: {_show(name)}"
    if "\r" in value or "\n" in value:
        return f"bare CR or LF in header {name!r}"
    return f"invalid character in header {name!r}"


def _show(text: str, limit: int = 60) -> str:
    """``repr`` of a peer-supplied string, shortened for error messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _parse_fields(lines: list[str]) -> tuple[Headers | None, str]:
    """Parse header lines 1.. into Headers; on error return (None, reason)."""
    headers = Headers()
    # Each line is validated by the regex, so fill the Headers directly instead of
    # paying for Headers.add's checks a second time (same package, same invariants).
    items = headers._items
    index = headers._index
    for line in lines[1:]:
        match = _FIELD_LINE(line)
        if match is None:
            return None, _describe_bad_field(line)
        name, value = match.groups()
        value = value.strip(" \t")
        # Already validated by the regex: append without Headers.add's checks.
        items.append((name, value))
        key = name.lower()
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)
    return headers, ""


def parse_request_head(
    data: bytes | bytearray, limits: Limits | None = None
) -> tuple[Request, int] | None:
    """Parse a request head at the start of ``data``.

    Returns the :class:`Request` and the number of bytes it took (the body or the
    next protocol starts there), or ``None`` when the head is not complete yet.
    Raises :class:`HandshakeRejected` with 431 (too large / too many headers),
    400 (malformed) or 505 (HTTP major version other than 1).
    """
    split = _split_head(data, limits or _DEFAULT_LIMITS, HandshakeRejected)
    if split is None:
        return None
    lines, consumed = split
    match = _REQUEST_LINE(lines[0])
    if match is None:
        line = lines[0]
        if line.startswith("HTTP/") or not line:
            raise HandshakeRejected(400, "malformed request line")
        parts = line.split(" ")
        if len(parts) == 3 and (version := _ANY_VERSION(parts[2])) and version[1] != "1":
            raise HandshakeRejected(505, f"unsupported HTTP version {_show(parts[2])}")
        raise HandshakeRejected(400, f"malformed request line: {_show(line)}")
    method, target, major, minor = match.groups()
    if major != "1":
        raise HandshakeRejected(505, f"unsupported HTTP version HTTP/{major}.{minor}")
    headers, error = _parse_fields(lines)
    if headers is None:
        raise HandshakeRejected(400, error)
    return Request(method, target, f"HTTP/{major}.{minor}", headers), consumed


def parse_response_head(
    data: bytes | bytearray, limits: Limits | None = None
) -> tuple[Response, int] | None:
    """Parse a response head at the start of ``data`` (the body is not read).

    Returns the :class:`Response` (with an empty body) and the number of bytes the
    head took, or ``None`` when it is not complete yet. Raises
    :class:`HandshakeFailed` when the head is malformed or too large.
    """
    split = _split_head(data, limits or _DEFAULT_LIMITS, HandshakeFailed)
    if split is None:
        return None
    lines, consumed = split
    match = _STATUS_LINE(lines[0])
    if match is None:
        raise HandshakeFailed(f"malformed HTTP status line: {_show(lines[0])}")
    major, minor, status_text, reason = match.groups()
    status = int(status_text)
    if major != "1":
        raise HandshakeFailed(f"unsupported HTTP version HTTP/{major}.{minor}", status)
    if status < 100:
        raise HandshakeFailed(f"invalid HTTP status code {status}", status)
    headers, error = _parse_fields(lines)
    if headers is None:
        raise HandshakeFailed(f"malformed HTTP response: {error}", status)
    return Response(status, reason or "", headers), consumed


_DEFAULT_LIMITS = Limits()
