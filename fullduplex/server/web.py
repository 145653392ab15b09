"""Request handlers in the Tornado style: one class per route, one method per HTTP verb.

A handler instance lives for one request::

    class Hello(RequestHandler):
        def initialize(self, greeting: str) -> None:      # kwargs from the route
            self.greeting = greeting

        async def get(self, name: str) -> None:             # path arguments
            self.write({"text": f"{self.greeting}, {name}"})  # dict -> JSON

    App([(r"/hello/(\\w+)", Hello, {"greeting": "hi"})])

Life cycle, driven by :meth:`RequestHandler.execute`: ``initialize(**kwargs)`` (at
construction) -> ``prepare()`` -> ``get()/post()/...`` (sync or ``async``) ->
``finish()`` (automatic when the method returns) -> ``on_finish()``. Exceptions become
error pages: :class:`HTTPError` gives its status, anything else a logged ``500``
(details only with ``debug=True``). Any of ``prepare`` and the verb methods may be
coroutines.

Signed cookies (``set_secure_cookie`` / ``get_secure_cookie``) carry
``base64(value)|timestamp|HMAC-SHA256(secret, name|base64(value)|timestamp)``; the
signature is checked in constant time and the timestamp against ``max_age_days``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import hmac
import html
import inspect
import json
import logging
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from email.utils import format_datetime, formatdate
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    ParamSpec,
    TypeVar,
    cast,
    overload,
)
from urllib.parse import urlencode

from ..protocol.errors import FullDuplexError
from ..protocol.headers import Headers, is_token
from ..protocol.http11 import reason_phrase
from .http import HTTPRequest, StreamClosedError

if TYPE_CHECKING:
    from ..settings import Settings
    from .app import App

__all__ = [
    "ErrorHandler",
    "HTTPError",
    "MissingArgumentError",
    "RequestHandler",
    "authenticated",
    "create_signed_value",
    "decode_signed_value",
]

app_log = logging.getLogger("fullduplex.server")

_T = TypeVar("_T")

# RFC 6265 §4.1.1 cookie-octet: no CTLs, whitespace, DQUOTE, comma, semicolon, backslash.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*").fullmatch
_SAMESITE = ("Strict", "Lax", "None")
_DEFAULT_HEADERS = Headers([("Content-Type", "text/html; charset=UTF-8")])
_UNSET: Any = object()
_ARG_DEFAULT: Any = object()
_SECONDS_PER_DAY = 86400
#: Signed cookies whose timestamp lies further in the future than this are refused.
_MAX_CLOCK_SKEW = 31 * _SECONDS_PER_DAY


class HTTPError(FullDuplexError):
    """Raise in a handler to answer with ``status``.

    ``reason`` is shown to the client in the error page (keep it free of secrets);
    ``headers`` are added to the error response (e.g. ``Allow`` for a 405).
    """

    def __init__(
        self,
        status: int = 500,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{status} {reason_phrase(status)}" + (f": {reason}" if reason else ""))
        self.status = status
        self.reason = reason
        self.headers = list(headers)


class MissingArgumentError(HTTPError):
    """A required argument is absent: ``400``."""

    def __init__(self, name: str) -> None:
        super().__init__(400, f"missing argument {name!r}")
        self.name = name


# ---------------------------------------------------------------------- signed values


def _secrets(secret: str | bytes | Sequence[str | bytes] | None) -> list[bytes]:
    """Normalize the ``cookie_secret`` setting: one secret or several (first one signs)."""
    if not secret:
        raise RuntimeError("set the 'cookie_secret' setting to use signed cookies")
    items = [secret] if isinstance(secret, str | bytes) else list(secret)
    return [s.encode() if isinstance(s, str) else bytes(s) for s in items]


def _signature(key: bytes, name: str, b64: str, timestamp: str) -> str:
    message = f"{name}|{b64}|{timestamp}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def create_signed_value(
    secret: str | bytes | Sequence[str | bytes] | None,
    name: str,
    value: str | bytes,
    *,
    timestamp: float | None = None,
) -> str:
    """Sign ``value`` for the cookie ``name``: ``b64(value)|timestamp|hex HMAC-SHA256``."""
    key = _secrets(secret)[0]
    data = value.encode() if isinstance(value, str) else value
    b64 = base64.urlsafe_b64encode(data).decode("ascii")
    ts = str(int(time.time() if timestamp is None else timestamp))
    return f"{b64}|{ts}|{_signature(key, name, b64, ts)}"


def decode_signed_value(
    secret: str | bytes | Sequence[str | bytes] | None,
    name: str,
    signed: str | None,
    *,
    max_age_days: float = 31,
    now: float | None = None,
) -> bytes | None:
    """The value inside ``signed`` if its signature and age are valid, else None.

    Every configured secret is tried (key rotation); comparison is constant-time.
    """
    if not signed or not signed.isascii():  # a real signed value is base64, digits, hex
        return None
    parts = signed.split("|")
    if len(parts) != 3:
        return None
    b64, ts, signature = parts
    if not ts.isdigit() or len(ts) > 12:
        return None
    valid = False
    for key in _secrets(secret):
        valid |= hmac.compare_digest(_signature(key, name, b64, ts), signature)
    if not valid:
        return None
    current = time.time() if now is None else now
    stamp = int(ts)
    if stamp < current - max_age_days * _SECONDS_PER_DAY or stamp > current + _MAX_CLOCK_SKEW:
        return None
    try:
        return base64.urlsafe_b64decode(b64.encode("ascii"))
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------------- handlers


def _maybe_await(value: Any) -> Awaitable[Any] | None:
    return value if inspect.isawaitable(value) else None


_allowed_cache: dict[type, tuple[str, ...]] = {}


def _initialize(self: RequestHandler, **kwargs: Any) -> None:
    """Default ``initialize()``: accepts no route arguments."""
    if kwargs:
        raise TypeError(
            f"{type(self).__name__}.initialize() got unexpected arguments {sorted(kwargs)}"
        )


class RequestHandler:
    """Base class for HTTP request handlers (one instance per request).

    Constructed as ``cls(app, request, **route_kwargs)``; the route kwargs go to
    :meth:`initialize`. The App then awaits ``handler.execute(path_args,
    path_kwargs)``, which runs the whole request (subclasses such as the WebSocket
    handler override it). Attributes: ``app``, ``request``, ``settings``,
    ``path_args`` (tuple), ``path_kwargs`` (dict).
    """

    #: True for WebSocket endpoints: after ``prepare()`` the request is offered to
    #: ``self.upgrade(transport, rest) -> bool`` through
    #: :meth:`~fullduplex.server.http.HTTPConnection.hand_over` instead of a verb method.
    is_websocket: ClassVar[bool] = False

    SUPPORTED_METHODS: ClassVar[tuple[str, ...]] = (
        "GET",
        "HEAD",
        "POST",
        "DELETE",
        "PATCH",
        "PUT",
        "OPTIONS",
    )

    def __init__(self, app: App, request: HTTPRequest, **kwargs: Any) -> None:
        self.app = app
        self.request = request
        self.settings: Settings = app.settings
        self.path_args: tuple[str | None, ...] = ()
        self.path_kwargs: dict[str, str] = {}
        self._status = 200
        self._headers = _DEFAULT_HEADERS.copy()
        self._write_buffer: list[bytes] = []
        self._new_cookies: dict[tuple[str, str | None, str], str] | None = None
        self._headers_written = False
        self._finished = False
        self._current_user: Any = _UNSET
        self._json_body: Any = _UNSET
        self.initialize(**kwargs)

    # -------------------------------------------------------------- hooks to override

    #: Receives the route's keyword arguments (the third element of a route tuple).
    #: Typed loosely so subclasses can declare the parameters they take.
    initialize: Callable[..., None] = _initialize

    def prepare(self) -> Awaitable[None] | None:
        """Called before the verb method; may be ``async``; may finish the request."""
        return None

    def on_finish(self) -> None:
        """Called after the response is complete (logging, cleanup)."""

    def on_connection_close(self) -> None:
        """Called if the client disconnects while this request is being handled."""

    def get_current_user(self) -> Any:
        """Override to find the user (e.g. from a signed cookie); called once per request."""
        return None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        raise HTTPError(405)

    async def head(self, *args: Any, **kwargs: Any) -> None:
        raise HTTPError(405)

    async def post(self, *args: Any, **kwargs: Any) -> None:
        raise HTTPError(405)

    async def put(self, *args: Any, **kwargs: Any) -> None:
        raise HTTPError(405)

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        raise HTTPError(405)

    async def patch(self, *args: Any, **kwargs: Any) -> None:
        raise HTTPError(405)

    async def options(self, *args: Any, **kwargs: Any) -> None:
        raise HTTPError(405)

    # -------------------------------------------------------------- execution

    @classmethod
    def allowed_methods(cls) -> tuple[str, ...]:
        """Methods this class implements (``HEAD`` comes with ``GET``), for ``Allow``."""
        allowed = _allowed_cache.get(cls)
        if allowed is None:
            names = []
            for method in cls.SUPPORTED_METHODS:
                attr = method.lower()
                own = getattr(cls, attr, None)
                base = getattr(RequestHandler, attr, None)
                if own is not None and own is not base:
                    names.append(method)
            if "GET" in names and "HEAD" not in names and "HEAD" in cls.SUPPORTED_METHODS:
                names.insert(names.index("GET") + 1, "HEAD")
            allowed = _allowed_cache[cls] = tuple(names)
        return allowed

    async def execute(
        self, path_args: tuple[str | None, ...] = (), path_kwargs: dict[str, str] | None = None
    ) -> None:
        """Run the request: method check, prepare(), the verb method, finish()."""
        self.path_args = path_args
        self.path_kwargs = path_kwargs = path_kwargs or {}
        connection = self.request.connection
        connection.set_close_callback(self.on_connection_close)
        try:
            method = self.request.method
            if method not in self.SUPPORTED_METHODS:
                raise HTTPError(405, headers=[("Allow", ", ".join(self.allowed_methods()))])
            if self.is_websocket:
                # The authentication hook runs first (401/403 as HTTP), so that
                # prepare() and every later step see the user.
                pending = _maybe_await(self._authenticate_upgrade())
                if pending is not None:
                    await pending
            pending = _maybe_await(self.prepare())
            if pending is not None:
                await pending
            if self._finished or connection.detached:
                return
            if self.is_websocket:
                self._execute_upgrade()
                return
            allowed = self.allowed_methods()
            if method not in allowed:
                raise HTTPError(405, headers=[("Allow", ", ".join(allowed))])
            name = method.lower()
            if name == "head" and not _overrides(type(self), "head"):
                name = "get"  # HEAD runs GET; the connection drops the body
            result = getattr(self, name)(*path_args, **path_kwargs)
            pending = _maybe_await(result)
            if pending is not None:
                await pending
            if not self._finished and not connection.detached:
                self.finish()
        except Exception as exc:
            self._handle_exception(exc)

    def _authenticate_upgrade(self) -> Awaitable[None] | None:
        """Run before a WebSocket upgrade; WebSocket handlers authenticate here."""
        return None

    def _execute_upgrade(self) -> None:
        """Hand the connection to ``self.upgrade`` (defined by WebSocket handlers)."""
        connection = self.request.connection
        upgrade: Callable[[Any, bytes], bool] = getattr(self, "upgrade")  # noqa: B009
        if connection.hand_over(upgrade):
            self._finished = True
            return
        self._finished = True
        connection.end_raw_response(int(getattr(self, "_status_code", 400)))

    def _handshake_headers(self) -> list[tuple[str, str]]:
        """Headers set on this handler before a WebSocket upgrade, for the 101 response
        (``set_header``/``set_cookie`` in ``prepare()``); the default Content-Type and
        framing headers are left out."""
        skip = ("content-type", "content-length", "transfer-encoding", "connection")
        items = [(n, v) for n, v in self._headers.raw_items() if n.lower() not in skip]
        if self._new_cookies:
            items += [("Set-Cookie", c) for c in self._new_cookies.values()]
        return items

    def _handle_exception(self, exc: BaseException) -> None:
        connection = self.request.connection
        if isinstance(exc, StreamClosedError):
            self._finished = True  # the client left; nothing to answer
            return
        if isinstance(exc, HTTPError):
            if self._finished or connection.closed:
                return
            self.send_error(exc.status, reason=exc.reason, headers=exc.headers)
            return
        app_log.error(
            "uncaught exception in %s %s",
            self.request.method,
            self.request.path,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if not self._finished and not connection.closed:
            self.send_error(500, exc_info=(type(exc), exc, exc.__traceback__))

    # -------------------------------------------------------------- response: status, headers

    def set_status(self, status: int) -> None:
        """Set the response status code (100-599)."""
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status code {status!r}")
        self._status = status

    def get_status(self) -> int:
        """The response status code set so far."""
        return self._status

    def set_header(self, name: str, value: str | int | float | datetime.datetime) -> None:
        """Set a response header, replacing any previous value.

        Values are converted to ``str`` (datetimes to HTTP dates); CR, LF and NUL are
        refused with :class:`ValueError` (no header injection).
        """
        self._headers[name] = _header_value(value)

    def add_header(self, name: str, value: str | int | float | datetime.datetime) -> None:
        """Add a response header, keeping existing values of the same name."""
        self._headers.add(name, _header_value(value))

    def clear_header(self, name: str) -> None:
        """Remove a response header (no error when it is not set)."""
        if name in self._headers:
            del self._headers[name]

    def get_response_header(self, name: str) -> str | None:
        """The first value of a response header set so far, or None."""
        return self._headers.get(name)

    def clear(self) -> None:
        """Reset status, headers, pending cookies and the unsent body to the defaults."""
        self._status = 200
        self._headers = _DEFAULT_HEADERS.copy()
        self._write_buffer = []
        self._new_cookies = None

    # -------------------------------------------------------------- response: body

    def write(self, chunk: str | bytes | dict[str, Any] | list[Any]) -> None:
        """Append to the response body. A dict or list is sent as JSON (and sets
        ``Content-Type: application/json``); ``str`` is encoded as UTF-8."""
        if self._finished:
            raise RuntimeError("write() after finish()")
        if isinstance(chunk, dict | list):
            chunk = json.dumps(chunk, ensure_ascii=False).replace("</", "<\\/")
            self.set_header("Content-Type", "application/json; charset=UTF-8")
        if isinstance(chunk, str):
            chunk = chunk.encode()
        elif not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"write() takes str, bytes, dict or list, not {type(chunk).__name__}")
        self._write_buffer.append(bytes(chunk))

    async def flush(self) -> None:
        """Send the headers (first time) and the body written so far, then wait until
        the connection's write buffer has drained (backpressure for large responses).

        Without a ``Content-Length`` header the body is sent chunked (HTTP/1.1).
        Raises :class:`~fullduplex.server.http.StreamClosedError` if the client left.
        """
        connection = self.request.connection
        if not self._headers_written:
            self._write_head(None)
        if self._write_buffer:
            data = b"".join(self._write_buffer)
            self._write_buffer = []
            connection.send_data(data)
        await connection.drain()

    def finish(self, chunk: str | bytes | dict[str, Any] | list[Any] | None = None) -> None:
        """Complete the response (adds ``Content-Length`` when nothing was flushed)."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        if chunk is not None:
            self.write(chunk)
        body = b"".join(self._write_buffer) if self._write_buffer else b""
        self._write_buffer = []
        status = self._status
        if (status < 200 or status in (204, 304)) and body:
            raise RuntimeError(f"a {status} response cannot have a body")
        if not self._headers_written:
            self._write_head(len(body))
        connection = self.request.connection
        self._finished = True
        if not connection.detached:
            if body:
                connection.send_data(body)
            connection.end_response()
        try:
            self.on_finish()
        except Exception:
            app_log.exception("error in on_finish()")

    def _write_head(self, content_length: int | None) -> None:
        headers = self._headers
        explicit = headers.pop_all("Content-Length") if "content-length" in headers else None
        if explicit:
            try:
                content_length = int(explicit[0])
            except ValueError:
                raise ValueError(f"invalid Content-Length header {explicit[0]!r}") from None
        if "transfer-encoding" in headers:
            del headers["Transfer-Encoding"]  # framing belongs to the connection
        items: list[tuple[str, str]] = headers.raw_items()
        if self._new_cookies:
            items = [*items, *(("Set-Cookie", c) for c in self._new_cookies.values())]
        self._headers_written = True
        self.request.connection.send_head(self._status, items, content_length)

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` has run."""
        return self._finished

    def redirect(self, url: str, permanent: bool = False, status: int | None = None) -> None:
        """Redirect with ``302`` (``301`` if permanent, or ``status``) and finish."""
        if self._headers_written:
            raise RuntimeError("cannot redirect after the headers were sent")
        self.set_status(status or (301 if permanent else 302))
        self.set_header("Location", url)
        self.finish()

    # -------------------------------------------------------------- errors

    def send_error(self, status: int = 500, reason: str | None = None, **kwargs: Any) -> None:
        """Answer with an error page produced by :meth:`write_error`.

        ``kwargs`` may hold ``exc_info`` (shown only with ``debug=True``) and
        ``headers`` (extra response headers). If headers were already sent, the
        connection is closed instead, since the response can no longer change.
        """
        if self._headers_written:
            if not self._finished:
                app_log.error("cannot send error %d: response already started", status)
                self._finished = True
                self.request.connection.abort()
            return
        self.clear()
        for name, value in kwargs.pop("headers", ()) or ():
            self.add_header(name, value)
        self.set_status(status)
        try:
            self.write_error(status, reason=reason, **kwargs)
        except Exception:
            app_log.exception("error in write_error()")
        if not self._finished:
            if self._write_buffer and (status < 200 or status in (204, 304)):
                self._write_buffer = []
            self.finish()

    def write_error(self, status: int, **kwargs: Any) -> None:
        """Write the error page body: a small HTML page; override for other formats.

        ``kwargs``: ``reason`` (a message meant for the client) and ``exc_info``
        (the traceback is included only with the ``debug`` setting).
        """
        if status < 200 or status in (204, 304):
            return
        title = f"{status} {html.escape(reason_phrase(status))}"
        parts = [
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>'
            f"</head><body><h1>{title}</h1>"
        ]
        reason = kwargs.get("reason")
        if reason:
            parts.append(f"<p>{html.escape(str(reason))}</p>")
        exc_info = kwargs.get("exc_info")
        if exc_info and self.settings.get("debug"):
            text = "".join(traceback.format_exception(*exc_info))
            parts.append(f"<pre>{html.escape(text)}</pre>")
        parts.append("</body></html>\n")
        self.finish("".join(parts))

    # -------------------------------------------------------------- arguments

    @overload
    def get_argument(self, name: str, *, strip: bool = True) -> str: ...

    @overload
    def get_argument(self, name: str, default: _T, *, strip: bool = True) -> str | _T: ...

    def get_argument(self, name: str, default: Any = _ARG_DEFAULT, *, strip: bool = True) -> Any:
        """The last value of argument ``name`` from the query or a form body.

        Without ``default`` a missing argument is a ``400``.
        """
        return self._one(self.get_arguments(name, strip=strip), name, default)

    def get_arguments(self, name: str, *, strip: bool = True) -> list[str]:
        """All values of ``name``: query-string ones first, then form-body ones."""
        values = self.request.query_arguments.get(name, []) + self.request.body_arguments.get(
            name, []
        )
        return [v.strip() for v in values] if strip else values

    @overload
    def get_query_argument(self, name: str, *, strip: bool = True) -> str: ...

    @overload
    def get_query_argument(self, name: str, default: _T, *, strip: bool = True) -> str | _T: ...

    def get_query_argument(
        self, name: str, default: Any = _ARG_DEFAULT, *, strip: bool = True
    ) -> Any:
        """The last value of ``name`` in the query string."""
        values = self.request.query_arguments.get(name, [])
        return self._one([v.strip() for v in values] if strip else values, name, default)

    @overload
    def get_body_argument(self, name: str, *, strip: bool = True) -> str: ...

    @overload
    def get_body_argument(self, name: str, default: _T, *, strip: bool = True) -> str | _T: ...

    def get_body_argument(
        self, name: str, default: Any = _ARG_DEFAULT, *, strip: bool = True
    ) -> Any:
        """The last value of ``name`` in an urlencoded form body."""
        values = self.request.body_arguments.get(name, [])
        return self._one([v.strip() for v in values] if strip else values, name, default)

    @staticmethod
    def _one(values: list[str], name: str, default: Any) -> Any:
        if values:
            return values[-1]
        if default is _ARG_DEFAULT:
            raise MissingArgumentError(name)
        return default

    def get_json_body(self) -> Any:
        """The request body decoded as JSON (``400`` when it is not valid JSON)."""
        if self._json_body is _UNSET:
            try:
                self._json_body = json.loads(self.request.body)
            except ValueError:
                raise HTTPError(400, "request body is not valid JSON") from None
        return self._json_body

    # -------------------------------------------------------------- cookies

    def get_cookie(self, name: str, default: str | None = None) -> str | None:
        """The value of the request cookie ``name``, or ``default``."""
        return self.request.cookies.get(name, default)

    def set_cookie(
        self,
        name: str,
        value: str,
        *,
        path: str = "/",
        domain: str | None = None,
        max_age: int | None = None,
        expires: datetime.datetime | float | None = None,
        expires_days: float | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: str | None = "Lax",
    ) -> None:
        """Set a cookie (``Set-Cookie``) on the response.

        Defaults: ``Path=/``, ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the request
        came over TLS (``secure=None``). ``max_age`` is in seconds; ``expires_days``
        sets both ``Max-Age`` and ``Expires``. ``SameSite=None`` forces ``Secure``.
        """
        if not is_token(name):
            raise ValueError(f"invalid cookie name {name!r}")
        if _COOKIE_VALUE(value) is None:
            raise ValueError(f"invalid cookie value for {name!r} (use a signed/encoded value)")
        parts = [f"{name}={value}"]
        if domain:
            parts.append(f"Domain={_header_value(domain)}")
        if path:
            parts.append(f"Path={_header_value(path)}")
        if expires_days is not None:
            max_age = int(expires_days * _SECONDS_PER_DAY)
            expires = time.time() + max_age
        if max_age is not None:
            parts.append(f"Max-Age={int(max_age)}")
        if expires is not None:
            if isinstance(expires, datetime.datetime):
                parts.append(f"Expires={_http_datetime(expires)}")
            else:
                parts.append(f"Expires={formatdate(expires, usegmt=True)}")
        if samesite is not None:
            if samesite not in _SAMESITE:
                raise ValueError(f"samesite must be one of {_SAMESITE} or None")
            if samesite == "None":
                secure = True
        if secure is None:
            secure = self.request.secure
        if secure:
            parts.append("Secure")
        if httponly:
            parts.append("HttpOnly")
        if samesite is not None:
            parts.append(f"SameSite={samesite}")
        if self._new_cookies is None:
            self._new_cookies = {}
        self._new_cookies[(name, domain, path)] = "; ".join(parts)

    def clear_cookie(self, name: str, *, path: str = "/", domain: str | None = None) -> None:
        """Tell the browser to delete cookie ``name`` (empty value, ``Max-Age=0``)."""
        self.set_cookie(name, "", path=path, domain=domain, max_age=0, expires=0)

    def set_secure_cookie(
        self, name: str, value: str | bytes, expires_days: float | None = 30, **kwargs: Any
    ) -> None:
        """Set a cookie signed with the ``cookie_secret`` setting (HMAC-SHA256).

        The value is readable by the client (base64) but cannot be forged or altered.
        ``kwargs`` are passed to :meth:`set_cookie`.
        """
        signed = create_signed_value(self.settings.get("cookie_secret"), name, value)
        self.set_cookie(name, signed, expires_days=expires_days, **kwargs)

    def get_secure_cookie(
        self, name: str, value: str | None = None, max_age_days: float = 31
    ) -> str | None:
        """The value of a signed cookie, or None if absent, tampered with, or older
        than ``max_age_days``. ``value`` checks a given signed string instead of the
        request's cookie."""
        if value is None:
            value = self.get_cookie(name)
        decoded = decode_signed_value(
            self.settings.get("cookie_secret"), name, value, max_age_days=max_age_days
        )
        if decoded is None:
            return None
        try:
            return decoded.decode()
        except UnicodeDecodeError:
            return None

    # -------------------------------------------------------------- users, templates

    @property
    def current_user(self) -> Any:
        """The user of this request: ``get_current_user()``, called once and cached."""
        if self._current_user is _UNSET:
            self._current_user = self.get_current_user()
        return self._current_user

    @current_user.setter
    def current_user(self, value: Any) -> None:
        self._current_user = value

    def get_login_url(self) -> str | None:
        """Where :func:`authenticated` sends anonymous users (the ``login_url`` setting)."""
        url = self.settings.get("login_url")
        return str(url) if url else None

    def static_url(self, path: str, include_version: bool = True) -> str:
        """URL of a file under ``static_path``, with ``?v=<hash>`` for cache busting."""
        return self.app.static_url(path, include_version=include_version)

    def get_template_namespace(self) -> dict[str, Any]:
        """Names every template sees: handler, request, current_user, static_url."""
        return {
            "handler": self,
            "request": self.request,
            "current_user": self.current_user,
            "static_url": self.static_url,
        }

    def render_string(self, template_name: str, **kwargs: Any) -> str:
        """Render a Jinja2 template from ``template_path`` (autoescaped if .html/.xml)."""
        template = self.app.template_env.get_template(template_name)
        namespace = self.get_template_namespace()
        namespace.update(kwargs)
        return str(template.render(namespace))

    def render(self, template_name: str, **kwargs: Any) -> None:
        """Render a template and finish the response with it."""
        self.finish(self.render_string(template_name, **kwargs))


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name, None) is not getattr(RequestHandler, name, None)


def _http_datetime(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return format_datetime(value.astimezone(datetime.UTC), usegmt=True)


def _header_value(value: str | int | float | datetime.datetime) -> str:
    if isinstance(value, datetime.datetime):
        return _http_datetime(value)
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(f"unsupported header value type {type(value).__name__}")


_H = TypeVar("_H", bound=RequestHandler)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def authenticated(
    method: Callable[Concatenate[_H, _P], _R],
) -> Callable[Concatenate[_H, _P], _R | None]:
    """Decorate a verb method so that only a logged-in user (``current_user``) runs it.

    Anonymous ``GET``/``HEAD`` requests are redirected to ``login_url`` with
    ``?next=<uri>``; other requests (and upgrade requests, or when no ``login_url``
    is set) get ``403``.
    """

    @functools.wraps(method)
    def wrapper(self: _H, *args: _P.args, **kwargs: _P.kwargs) -> _R | None:
        if not self.current_user:
            login_url = self.get_login_url()
            request = self.request
            if request.method in ("GET", "HEAD") and login_url and "upgrade" not in request.headers:
                sep = "&" if "?" in login_url else "?"
                self.redirect(login_url + sep + urlencode({"next": request.uri}))
                return None
            raise HTTPError(403)
        return method(self, *args, **kwargs)

    return cast("Callable[Concatenate[_H, _P], _R | None]", wrapper)


class ErrorHandler(RequestHandler):
    """Answers every request with one error status (used for unmatched paths: 404)."""

    def initialize(self, status: int = 404, reason: str | None = None) -> None:
        self.error_status = status
        self.error_reason = reason

    def prepare(self) -> None:
        raise HTTPError(self.error_status, self.error_reason)
