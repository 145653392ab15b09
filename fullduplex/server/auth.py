"""Authenticating WebSocket connections before the upgrade, without tokens in URLs.

One hook, ``authenticate(request) -> user | None`` (sync or async), sees the upgrade
request before the ``101`` and sets the connection's user: the app-level
``authenticate`` setting, or a handler's own :meth:`authenticate` method. ``None``
refuses with 401; raising ``HTTPError(403)`` refuses with 403. Returning
:class:`Authenticated` also sets an expiry: the connection is then closed with
:data:`AUTH_EXPIRED` (4001) when it passes, and the browser client asks for a fresh
credential and reconnects.

Browsers cannot set an ``Authorization`` header on a WebSocket and query strings end
up in access logs, so the built-in signed tokens travel in one of three places:

* a cookie (``fd_token`` by default; set it ``HttpOnly``);
* the ``Sec-WebSocket-Protocol`` header: the client offers ``fd-auth`` and
  ``fd-token.<token>``; the server answers with ``fd-auth`` and never echoes the token;
* a one-time ticket fetched over HTTP (``fd-ticket.<ticket>`` in the same header):
  short-lived, redeemed once per node.

See ``docs/howto/authentication.md``.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..protocol.errors import FullDuplexError

__all__ = [
    "AUTH_EXPIRED",
    "AUTH_PROTOCOL",
    "PROTOCOL_TICKET_PREFIX",
    "PROTOCOL_TOKEN_PREFIX",
    "Authenticated",
    "TokenSigner",
    "jwt_authenticator",
    "token_authenticator",
]

#: Close code when the credential of an open connection expires (application range).
AUTH_EXPIRED: Final = 4001
#: The subprotocol a client offers beside its token, and that the server selects.
AUTH_PROTOCOL: Final = "fd-auth"
PROTOCOL_TOKEN_PREFIX: Final = "fd-token."
PROTOCOL_TICKET_PREFIX: Final = "fd-ticket."
#: Tickets redeemed and remembered per process until they expire (the bound on memory).
MAX_REDEEMED_TICKETS: Final = 100_000


class AuthError(FullDuplexError, ValueError):
    """A misconfigured authenticator (no secret, PyJWT missing)."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """What an ``authenticate`` hook may return instead of a bare user: the user and,
    optionally, when the credential expires (seconds since the epoch)."""

    user: Any
    expires: float | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _keys(secret: str | bytes | Sequence[str | bytes]) -> list[bytes]:
    items = [secret] if isinstance(secret, str | bytes) else list(secret)
    keys = [k.encode("utf-8") if isinstance(k, str) else bytes(k) for k in items]
    if not keys or not all(keys):
        raise AuthError("a token signer needs a non-empty secret")
    return keys


class TokenSigner:
    """Signed, expiring tokens (HMAC-SHA256) that fit a cookie or a subprotocol name.

    ``secret`` may be a list: the first key signs, every key verifies (rotation). A
    token is ``payload.signature`` in unpadded base64url: only characters allowed in
    a ``Sec-WebSocket-Protocol`` value.
    """

    def __init__(self, secret: str | bytes | Sequence[str | bytes]) -> None:
        self._keys = _keys(secret)
        self._redeemed: collections.OrderedDict[str, float] = collections.OrderedDict()

    def _sign(self, key: bytes, kind: str, payload: str) -> str:
        return _b64(hmac.new(key, f"{kind}.{payload}".encode(), hashlib.sha256).digest())

    def sign(self, user: str, expires_in: float = 3600.0, *, kind: str = "t") -> str:
        """A token for ``user`` valid ``expires_in`` seconds."""
        claims = {"u": user, "e": round(time.time() + expires_in, 3)}
        if kind != "t":
            claims["n"] = secrets.token_urlsafe(12)  # tickets are each unique
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(self._keys[0], kind, payload)}"

    def verify(self, token: str, *, kind: str = "t") -> Authenticated | None:
        """The user and expiry of a valid, unexpired token; None otherwise."""
        payload, dot, signature = token.partition(".")
        if not dot or len(token) > 4096:
            return None
        if not any(
            hmac.compare_digest(signature, self._sign(key, kind, payload)) for key in self._keys
        ):
            return None
        try:
            claims = json.loads(_unb64(payload))
            user, expires = claims["u"], float(claims["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= time.time():
            return None
        return Authenticated(user, expires)

    def ticket(self, user: str, expires_in: float = 30.0) -> str:
        """A one-time ticket for ``user``: fetch it over HTTP (with the session
        cookie), then open the WebSocket with it within ``expires_in`` seconds."""
        return self.sign(user, expires_in, kind="k")

    def redeem(self, ticket: str) -> Authenticated | None:
        """The user of a valid ticket not redeemed before on this process, else None.
        The ticket's own expiry is not extended to the connection (None)."""
        found = self.verify(ticket, kind="k")
        if found is None:
            return None
        now = time.time()
        redeemed = self._redeemed
        # Forget expired tickets (they fail verify anyway); never keep more than the bound.
        while redeemed and (
            next(iter(redeemed.values())) <= now or len(redeemed) >= MAX_REDEEMED_TICKETS
        ):
            redeemed.popitem(last=False)
        if ticket in redeemed:
            return None
        redeemed[ticket] = found.expires or now
        return Authenticated(found.user)


def offered_credentials(request: Any) -> tuple[str | None, str | None]:
    """The token and ticket a client offered in ``Sec-WebSocket-Protocol``."""
    token = ticket = None
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        for item in value.split(","):
            item = item.strip()
            if item.startswith(PROTOCOL_TOKEN_PREFIX):
                token = item[len(PROTOCOL_TOKEN_PREFIX) :]
            elif item.startswith(PROTOCOL_TICKET_PREFIX):
                ticket = item[len(PROTOCOL_TICKET_PREFIX) :]
    return token, ticket


def is_credential(subprotocol: str) -> bool:
    """True for the ``fd-token.``/``fd-ticket.`` entries (never selected)."""
    return subprotocol.startswith((PROTOCOL_TOKEN_PREFIX, PROTOCOL_TICKET_PREFIX))


def token_authenticator(
    secret: str | bytes | Sequence[str | bytes] | TokenSigner, *, cookie: str | None = "fd_token"
) -> Callable[[Any], Authenticated | None]:
    """An ``authenticate`` hook for :class:`TokenSigner` tokens: a ticket or a token in
    ``Sec-WebSocket-Protocol`` first, then the ``cookie`` (None: no cookie)."""
    signer = secret if isinstance(secret, TokenSigner) else TokenSigner(secret)

    def authenticate(request: Any) -> Authenticated | None:
        token, ticket = offered_credentials(request)
        if ticket is not None:
            return signer.redeem(ticket)
        if token is None and cookie is not None:
            token = request.cookies.get(cookie)
        return signer.verify(token) if token else None

    return authenticate


def jwt_authenticator(
    key: Any,
    *,
    algorithms: Sequence[str] = ("HS256",),
    audience: str | None = None,
    issuer: str | None = None,
    cookie: str | None = "fd_token",
    user_claim: str = "sub",
    leeway: float = 0.0,
) -> Callable[[Any], Authenticated | None]:
    """An ``authenticate`` hook verifying JSON Web Tokens with PyJWT (the optional
    extra ``fullduplex[jwt]``), read like :func:`token_authenticator`'s tokens. The
    ``exp`` claim, when present, becomes the connection's expiry."""
    try:
        import jwt
    except ImportError:
        raise AuthError(
            "jwt_authenticator needs PyJWT, which is not installed: pip install 'fullduplex[jwt]'"
        ) from None
    options: Any = {"require": [user_claim]}

    def authenticate(request: Any) -> Authenticated | None:
        token, _ = offered_credentials(request)
        if token is None and cookie is not None:
            token = request.cookies.get(cookie)
        if not token:
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=audience,
                issuer=issuer,
                leeway=leeway,
                options=options,
            )
        except jwt.PyJWTError:
            return None
        expires = claims.get("exp")
        return Authenticated(claims[user_claim], float(expires) if expires is not None else None)

    return authenticate
