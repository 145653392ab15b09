"""The request object handlers see (:class:`HTTPRequest`) and the header helpers used to
build it: lenient cookie parsing and the trusted-proxy address headers."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..protocol.headers import Headers, token_list
from ..protocol.http11 import Request
from .responder import HTTPResponder

__all__ = ["HTTPRequest", "apply_xheaders", "parse_cookies"]


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently: bad pairs are skipped, not fatal.

    Values wrapped in double quotes lose them; no percent-decoding is done (browsers
    send cookie values as they were set). The first occurrence of a name wins, as RFC
    6265 §5.4 orders cookies with longer paths first.
    """
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        if not eq:
            continue
        name = name.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name and name not in cookies:
            cookies[name] = value
    return cookies


class HTTPRequest:
    """One HTTP request as the handlers see it.

    ``path`` and ``query`` are the request-target split at ``?`` and still
    percent-encoded (routing decodes its captured arguments itself); ``version`` is
    ``"HTTP/1.1"`` or ``"HTTP/1.0"``; ``body`` is the complete body (bytes).
    ``remote_ip`` / ``scheme`` honour ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only
    when the ``xheaders`` setting is on (i.e. behind a trusted proxy).
    """

    __slots__ = (
        "_body_arguments",
        "_cookies",
        "_done",
        "_query_arguments",
        "_raw",
        "body",
        "connection",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "remote",
        "remote_ip",
        "scheme",
        "start_time",
        "target",
        "version",
    )

    def __init__(
        self,
        connection: HTTPResponder,
        method: str,
        target: str,
        version: str,
        headers: Headers,
        *,
        body: bytes = b"",
        remote: Any = None,
        remote_ip: str = "",
        scheme: str = "http",
        keep_alive: bool = True,
    ) -> None:
        self.connection = connection
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.remote = remote
        self.remote_ip = remote_ip
        self.scheme = scheme
        self.keep_alive = keep_alive
        self.start_time = time.monotonic()
        if target.startswith("/"):
            path, _, query = target.partition("?")
        elif "://" in target:  # absolute-form (RFC 9112 §3.2.2), e.g. from a proxy
            try:
                parts = urlsplit(target)
            except ValueError:  # e.g. a broken IPv6 literal: "http://[::1/"
                raise ValueError(f"invalid request-target {target[:80]!r}") from None
            path, query = parts.path or "/", parts.query
        else:  # "*" (OPTIONS *) or garbage: no route will match it
            path, query = target, ""
        self.path = path
        self.query = query
        self._done = False
        self._cookies: dict[str, str] | None = None
        self._query_arguments: dict[str, list[str]] | None = None
        self._body_arguments: dict[str, list[str]] | None = None
        self._raw: Request | None = None

    @property
    def uri(self) -> str:
        """The request-target as sent (path and query), Tornado's name for it."""
        return self.target

    @property
    def host(self) -> str:
        """The ``Host`` header (empty when absent)."""
        return self.headers.get("host") or ""

    @property
    def secure(self) -> bool:
        """Whether the request came over TLS (or, with ``xheaders``, a TLS proxy)."""
        return self.scheme == "https"

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies sent by the client (``name -> value``), parsed on first use."""
        if self._cookies is None:
            values = self.headers.get_all("cookie")
            self._cookies = parse_cookies("; ".join(values)) if values else {}
        return self._cookies

    @property
    def query_arguments(self) -> dict[str, list[str]]:
        """Query-string arguments, each name to all its values in order."""
        if self._query_arguments is None:
            self._query_arguments = parse_qs(self.query, keep_blank_values=True)
        return self._query_arguments

    @property
    def body_arguments(self) -> dict[str, list[str]]:
        """Arguments of an ``application/x-www-form-urlencoded`` body (else empty)."""
        if self._body_arguments is None:
            ctype = (self.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if ctype == "application/x-www-form-urlencoded" and self.body:
                text = self.body.decode("utf-8", "replace")
                self._body_arguments = parse_qs(text, keep_blank_values=True)
            else:
                self._body_arguments = {}
        return self._body_arguments

    @property
    def raw(self) -> Request:
        """The request head as the sans-I/O core's :class:`Request` (for the handshake)."""
        if self._raw is None:
            self._raw = Request(self.method, self.target, self.version, self.headers)
        return self._raw

    def to_protocol_request(self) -> Request:
        """Same as :attr:`raw`: the head for ``fullduplex.protocol.handshake``."""
        return self.raw

    def full_url(self) -> str:
        """Reconstructed absolute URL: ``scheme://host/target``."""
        return f"{self.scheme}://{self.host}{self.target}"

    def request_time(self) -> float:
        """Seconds since the request head was complete."""
        return time.monotonic() - self.start_time

    def __repr__(self) -> str:
        return f"<HTTPRequest {self.method} {self.target} {self.version} from {self.remote_ip}>"


def apply_xheaders(headers: Headers, scheme: str, remote_ip: str) -> tuple[str, str]:
    """Take the client address and scheme from a trusted proxy's headers."""
    real_ip = headers.get("x-real-ip")
    forwarded = headers.get_all("x-forwarded-for")
    if real_ip:
        remote_ip = real_ip.strip()
    elif forwarded:
        # The rightmost entry was added by our own proxy: the address it saw.
        last = token_list(forwarded)
        if last:
            remote_ip = last[-1]
    proto = headers.get("x-forwarded-proto") or headers.get("x-scheme")
    if proto:
        proto = proto.split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
    return scheme, remote_ip
