"""The demo behind ``fullduplex demo``: chat rooms, echo and a clock on one port.

::

    fullduplex demo --port 8000        # then open http://127.0.0.1:8000/

Pages and endpoints:

=================== ==========================================================
``/``               log in with a nickname (signed session cookie), or go on
                    to the lobby when already logged in
``/logout``         ``POST``: forget the session
``/room/{room}``    a chat room: rooms, who is online, history, messages
``/chat/ws``        the rooms protocol (:class:`ChatHandler`, on ``app.hub``)
``/echo``           a page talking to the echo service with the native WebSocket
``/echo/ws``        echo: any origin, messages up to 16 MiB, ``over`` closes
``/clock``          a page showing the time the server pushes
``/clock/ws``       Beijing time (UTC+8) every second, from a function view
=================== ==========================================================

Every chat message is stamped with the server's Beijing time and rendered on the
server through ``templates/demo/message.html`` (Jinja2, autoescaped); the page inserts
that HTML as it comes, so markup typed into a message shows as text.

``make_app(**settings)`` takes any :class:`~fullduplex.server.App` setting. The key
that signs the session cookies is, in this order: the ``cookie_secret`` setting,
``$FULLDUPLEX_DEMO_SECRET``, or a random key kept in
``$XDG_STATE_HOME/fullduplex/demo-cookie-secret`` (default ``~/.local/state/...``,
mode 0600), made on the first start, so that a restart keeps everyone logged in.
When that file cannot be written the key lives only as long as the process, and a
user whose cookie no longer verifies is told that the session expired.

Rate limits are on: a chat connection may send :data:`CHAT_RATE_LIMITS` (beyond them
its requests are answered ``rate_limited``), and one client IP may open
:data:`DEMO_CLIENT_LIMITS` WebSocket handshakes (beyond: 429).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import secrets
import time
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from .endpoint import WebSocket
from .engine import Message
from .protocol.http11 import reason_phrase
from .protocol.limits import Limits
from .ratelimit import ClientLimits, RateLimits
from .server import App, HTTPError, RequestHandler
from .server.rooms import RoomHandler
from .server.websocket import WebSocketHandler

__all__ = [
    "BEIJING",
    "CHAT_RATE_LIMITS",
    "DEMO_CLIENT_LIMITS",
    "TIME_FORMAT",
    "ChatHandler",
    "EchoHandler",
    "beijing_now",
    "clock_view",
    "default_secret_file",
    "load_or_create_secret",
    "make_app",
]

log = logging.getLogger("fullduplex.demo")

_HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE_PATH = os.path.join(_HERE, "templates")
STATIC_PATH = os.path.join(_HERE, "static", "demo")

#: Chat times are Beijing time, as in the seeds.
BEIJING = timezone(timedelta(hours=8), "UTC+8")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

#: The signed cookie holding the nickname.
SESSION_COOKIE = "fullduplex_user"
#: Nicknames: 1 to this many characters once trimmed, no control characters.
MAX_NAME_LENGTH = 32
#: Longest chat message, in characters (the echo service takes far more).
MAX_TEXT_LENGTH = 2000
#: Rooms always listed; any other valid name can be opened by URL.
FEATURED_ROOMS = ("lobby", "python", "random")
DEFAULT_ROOM = "lobby"
#: Room names: letters, digits, ``-``, ``_`` and ``.``; 1 to 40 characters.
ROOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
#: At most this many rooms in the sidebar (featured ones first).
MAX_LISTED_ROOMS = 12

#: The echo service's message limit: a public echo takes up to 16 MiB.
ECHO_MAX_MESSAGE = 16 * 1024 * 1024
#: Room above ECHO_MAX_MESSAGE for one frame: deflate can grow random data slightly.
ECHO_FRAME_SLACK = 64 * 1024

# Pages only load what the server itself serves; markup that slipped into a page
# could not run scripts either (chat messages are escaped on the server anyway).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def default_secret_file() -> Path:
    """Where the demo keeps its cookie key: the user's state directory (XDG)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "fullduplex" / "demo-cookie-secret"


def load_or_create_secret(path: Path) -> str | None:
    """The key stored in ``path``, made (random, mode 0600) when there is none yet;
    None when the file can be neither read nor written."""
    for _attempt in range(2):
        try:
            with open(path, encoding="ascii") as f:
                secret = f.read().strip()
            if len(secret) >= 32:
                if os.stat(path).st_mode & 0o077:
                    os.chmod(path, 0o600)  # a signing key is for this user only
                return secret
            return None  # not a key this module wrote: leave it alone
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError):
            return None
        secret = secrets.token_urlsafe(32)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # another process made it first: read theirs
        except OSError:
            return None
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret + "\n")
        return secret
    return None


def beijing_now() -> str:
    """The current time in Beijing as ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.now(BEIJING).strftime(TIME_FORMAT)


def clean_name(raw: str) -> str | None:
    """A valid nickname from ``raw`` (trimmed, NFC), or None."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        return None
    return name


def valid_room(room: str) -> bool:
    return ROOM_NAME.fullmatch(room) is not None


def session_user(handler: RequestHandler) -> str | None:
    """The nickname in the request's signed session cookie (``current_user``)."""
    value = handler.get_secure_cookie(SESSION_COOKIE)
    return clean_name(value) if value else None


class Page(RequestHandler):
    """Base of the demo's HTML pages."""

    def get_current_user(self) -> str | None:
        return session_user(self)

    def prepare(self) -> None:
        self._security_headers()

    def _security_headers(self) -> None:
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace["client_js_url"] = self.settings.get("client_js_url")
        return namespace

    def write_error(self, status: int, **kwargs: Any) -> None:
        self._security_headers()  # send_error() cleared the headers
        try:
            self.render(
                "demo/error.html",
                status=status,
                title=reason_phrase(status),
                reason=kwargs.get("reason"),
            )
        except Exception:
            super().write_error(status, **kwargs)

    def check_same_origin(self) -> None:
        """Refuse a form posted from another site (login CSRF)."""
        origin = self.request.headers.get("Origin") or self.request.headers.get("Referer")
        if origin is None:
            return  # not sent by a browser (they all send Origin with a POST)
        host = self.request.headers.get("Host") or ""
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            raise HTTPError(403, "cross-site form post")


def _room_url(room: str) -> str:
    return "/room/" + quote(room, safe="")


def _next_url(value: str | None) -> str:
    """Where to go after logging in: a room page of this site, else the lobby."""
    if value and value.startswith("/room/") and valid_room(value[len("/room/") :]):
        return value
    return _room_url(DEFAULT_ROOM)


class LoginPage(Page):
    """``/``: the nickname form; ``POST`` starts the session."""

    def get(self) -> None:  # type: ignore[override]
        next_url = _next_url(self.get_query_argument("next", None))
        if self.current_user:
            self.redirect(next_url)
            return
        expired = self.get_cookie(SESSION_COOKIE) is not None  # there, but does not verify
        if expired:
            self.clear_cookie(SESSION_COOKIE)
        self.render("demo/login.html", error=None, name="", next_url=next_url, expired=expired)

    def post(self) -> None:  # type: ignore[override]
        self.check_same_origin()
        raw = self.get_body_argument("name", "", strip=False)
        next_url = _next_url(self.get_body_argument("next", None))
        name = clean_name(raw)
        if name is None:
            self.set_status(400)
            if not raw.strip():
                error = "Enter a nickname."
            elif len(raw.strip()) > MAX_NAME_LENGTH:
                error = f"A nickname has at most {MAX_NAME_LENGTH} characters."
            else:
                error = "A nickname cannot contain control characters."
            self.render(
                "demo/login.html", error=error, name=raw[:64], next_url=next_url, expired=False
            )
            return
        self.set_secure_cookie(SESSION_COOKIE, name, httponly=True, samesite="Lax")
        self.redirect(next_url, status=303)


class LogoutPage(Page):
    """``POST /logout``: end the session."""

    def post(self) -> None:  # type: ignore[override]
        self.check_same_origin()
        self.clear_cookie(SESSION_COOKIE)
        self.redirect("/", status=303)


class RoomPage(Page):
    """``/room/{room}``: the chat page (messages arrive over ``/chat/ws``)."""

    def get(self, room: str) -> None:  # type: ignore[override]
        if not valid_room(room):
            raise HTTPError(404, "no such room: names use letters, digits, '-', '_' and '.'")
        if not self.current_user:
            self.redirect("/?next=" + quote(_room_url(room), safe=""))
            return
        self.render(
            "demo/room.html",
            room=room,
            rooms=self._rooms(room),
            max_text=MAX_TEXT_LENGTH,
            zone="Beijing time (UTC+8)",
        )

    def _rooms(self, current: str) -> list[str]:
        listed = list(FEATURED_ROOMS)
        # The rooms this node's hub holds (with members or kept history).
        names = self.app.hub.rooms
        for name in sorted(n for n in names if isinstance(n, str)):
            if valid_room(name) and name not in listed:
                listed.append(name)
        listed = listed[:MAX_LISTED_ROOMS]
        if current not in listed:
            listed.append(current)
        return listed


#: What one chat connection may send: plenty for typing, not for a flood.
CHAT_RATE_LIMITS = RateLimits(
    messages_per_second=20, bytes_per_second=64 * 1024, burst=1.0, action="drop"
)
#: WebSocket handshakes per client IP: 30 at once (tabs, reconnects), then 10 a second.
DEMO_CLIENT_LIMITS = ClientLimits(handshakes_per_second=10, burst=3.0)


class ChatHandler(RoomHandler):
    """``/chat/ws``: the rooms protocol for logged-in users; messages are stamped with the
    server time and rendered through ``demo/message.html``.

    Clients publish ``{"text": "..."}``; members receive
    ``{"user", "time", "text", "html"}`` where ``html`` is the escaped fragment.
    """

    def get_current_user(self) -> str | None:
        return session_user(self)

    def open(self) -> None:
        if not self.current_user:
            # 1008 is final for the browser client: the page sends the user to log in.
            self.close(1008, "login required")

    def get_user(self) -> str:
        return str(self.current_user)

    def get_rate_limits(self) -> RateLimits | None:
        """The ``websocket_rate_limits`` setting when set, else :data:`CHAT_RATE_LIMITS`."""
        return super().get_rate_limits() or CHAT_RATE_LIMITS

    def authorize_join(self, room: str) -> bool:
        return bool(self.current_user) and valid_room(room)

    async def transform(self, room: str, data: Any) -> Any | None:
        text = data.get("text") if isinstance(data, dict) else data
        if not isinstance(text, str):
            return None
        text = text.strip()
        if not text:
            return None
        text = text[:MAX_TEXT_LENGTH]
        stamp = beijing_now()
        html = self.render_string("demo/message.html", user=self.user, time=stamp, text=text)
        return {"user": self.user, "time": stamp, "text": text, "html": html.strip()}


class EchoHandler(WebSocketHandler):
    """``/echo/ws``: every message comes back as it came; ``over`` ends the talk.

    A public echo service: any origin may use it, messages up to 16 MiB.
    """

    def check_origin(self, origin: str) -> bool:
        return True

    def get_limits(self) -> Limits:
        # A 16 MiB message may come as one frame, and compressing incompressible data
        # makes it a little larger on the wire: allow that much on top per frame.
        return dataclasses.replace(
            self.app.websocket_limits,
            max_message_size=ECHO_MAX_MESSAGE,
            max_frame_size=ECHO_MAX_MESSAGE + ECHO_FRAME_SLACK,
        )

    async def on_message(self, message: Message) -> None:
        if message == "over":
            self.close(1000, "over")
            return
        await self.write_message(message, binary=isinstance(message, bytes))


async def clock_view(ws: WebSocket) -> None:
    """``/clock/ws``: push Beijing time at each turn of the second."""
    while not ws.closed:
        await ws.send(beijing_now())
        await asyncio.sleep(1.0 - time.time() % 1.0 + 0.001)


class EchoPage(Page):
    def get(self) -> None:  # type: ignore[override]
        self.render("demo/echo.html", max_message=ECHO_MAX_MESSAGE)


class ClockPage(Page):
    def get(self) -> None:  # type: ignore[override]
        self.render("demo/clock.html", now=beijing_now())


class NotFoundPage(Page):
    """Every path no other route matches: the demo's own 404 page."""

    def prepare(self) -> None:
        super().prepare()
        raise HTTPError(404, "There is no page at this address.")


def _cookie_secret(secret_file: Path | None) -> str:
    secret = os.environ.get("FULLDUPLEX_DEMO_SECRET")
    if secret:
        return secret
    path = secret_file or default_secret_file()
    secret = load_or_create_secret(path)
    if secret is None:
        log.warning(
            "cannot keep the session key in %s: sessions end when the server restarts "
            "(set FULLDUPLEX_DEMO_SECRET to keep them)",
            path,
        )
        return secrets.token_urlsafe(32)
    return secret


def make_app(*, secret_file: Path | None = None, **settings: Any) -> App:
    """The demo application; ``settings`` override the defaults below.

    ``secret_file``: where the cookie key is kept when neither the ``cookie_secret``
    setting nor ``$FULLDUPLEX_DEMO_SECRET`` gives one (default: :func:`default_secret_file`).
    """
    secret = settings.pop("cookie_secret", None) or _cookie_secret(secret_file)
    options: dict[str, Any] = {
        "cookie_secret": secret,
        "template_path": TEMPLATE_PATH,
        "static_path": STATIC_PATH,
        "static_url_prefix": "/static/",
        "login_url": "/",
        "client_rate_limits": DEMO_CLIENT_LIMITS,
    }
    options.update(settings)
    return App(
        [
            ("/", LoginPage),
            ("/logout", LogoutPage),
            ("/room/{room}", RoomPage),
            ("/chat/ws", ChatHandler),
            ("/echo", EchoPage),
            ("/echo/ws", EchoHandler),
            ("/clock", ClockPage),
            ("/clock/ws", clock_view),
            ("/{path:.*}", NotFoundPage),  # last: what nothing above matched
        ],
        **options,
    )
