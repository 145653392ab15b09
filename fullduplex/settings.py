"""Every setting of an :class:`~fullduplex.server.App`, defined once: name, type, default, meaning.

::

    app = App(routes, websocket_max_message_size=4 * MiB, extra={"admin_email": "ops@example.com"})
    app.settings.websocket_max_message_size         # typed attribute
    app.settings["admin_email"], "debug" in app.settings, app.settings.get("login_url")

:class:`Settings` is the single source of the defaults: the engine's
:class:`~fullduplex.engine.EngineOptions`, the HTTP server's configuration, the asyncio
client, the command line's help and ``docs/topics/settings.md`` (written by
``scripts/settings-doc``) all read them from here. The five protocol limits are the
exception: the sans-I/O core sits below this module and cannot import it, so their
defaults live in :class:`~fullduplex.protocol.limits.Limits` and are read from there.

A misspelt name raises :class:`SettingsError` with the closest known name; a value of
the wrong type raises it too. The application's own keys (Tornado apps keep e.g. an
admin address in their settings) go in ``extra``: they are read the same way
(``app.settings["admin_email"]``) but never hide a typo in a real setting.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
import types
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, Union, get_args, get_origin, get_type_hints

from .protocol.deflate import DeflateOptions
from .protocol.errors import FullDuplexError
from .protocol.limits import Limits
from .ratelimit import ClientLimits, RateLimits

__all__ = ["DEFAULTS", "SETTING_NAMES", "Settings", "SettingsError", "format_default", "reference"]

KiB: Final = 1024
MiB: Final = 1024 * KiB

#: The protocol core's own defaults (see the module docstring).
_PROTOCOL: Final = Limits()


class SettingsError(FullDuplexError, TypeError):
    """An unknown setting name, or a value of the wrong type."""


def _doc(doc: str, *, group: str, unit: str = "", shown: str = "") -> dict[str, str]:
    """A setting's metadata: its one-line meaning, its docs section, its unit
    (``"bytes"`` and ``"seconds"`` are shown as ``1 MiB`` and ``20 s``) and, when the
    annotation cannot name it, the type the docs show."""
    return {"doc": doc, "group": group, "unit": unit, "shown": shown}


_APP, _HTTP, _WS, _HUB, _PROCESS = "Application", "HTTP", "WebSocket", "Hub", "Process"
_FALLBACK = "HTTP fallback transports"
_OPS = "Operations"


@dataclass(eq=False, repr=False)
class Settings(MutableMapping[str, Any]):
    """The settings of one App; also a mapping (``settings["debug"]``, ``.get``, ``in``).

    Assigning a setting (``settings.debug = True`` or ``settings["debug"] = True``)
    checks its type; unknown names raise :class:`SettingsError`. Set them before
    ``serve()``: the WebSocket and HTTP options are read when the server starts.
    """

    # -- application
    cookie_secret: str | bytes | Sequence[str | bytes] | None = field(
        default=None,
        metadata=_doc(
            "key for signed cookies; a list: the first signs, all verify (key rotation)", group=_APP
        ),
    )
    cookie_secret_file: str | os.PathLike[str] | None = field(
        default=None,
        metadata=_doc(
            "file holding ``cookie_secret``, one key per line (first signs); read when set, "
            "so every node behind one load balancer can share it",
            group=_APP,
        ),
    )
    login_url: str | None = field(
        default=None,
        metadata=_doc("where ``@authenticated`` sends anonymous GET requests", group=_APP),
    )
    debug: bool = field(
        default=False,
        metadata=_doc("tracebacks in 500 pages; templates reload when changed", group=_APP),
    )
    template_path: str | os.PathLike[str] | None = field(
        default=None, metadata=_doc("directory of Jinja2 templates", group=_APP)
    )
    static_path: str | os.PathLike[str] | None = field(
        default=None,
        metadata=_doc("directory of static files, served under ``static_url_prefix``", group=_APP),
    )
    static_url_prefix: str = field(
        default="/static/", metadata=_doc("URL prefix of the static files", group=_APP)
    )
    client_js_url: str | None = field(
        default="/fullduplex.js",
        metadata=_doc("URL of the bundled browser client (None: not served)", group=_APP),
    )
    authenticate: Any = field(
        default=None,
        metadata=_doc(
            "``authenticate(request) -> user | None`` (sync or async), run before every "
            "WebSocket upgrade; None refuses with 401 (see docs/howto/authentication.md)",
            group=_APP,
            shown="callable | None",
        ),
    )
    # -- HTTP
    xheaders: bool = field(
        default=False,
        metadata=_doc(
            "trust ``X-Real-IP``/``X-Forwarded-For``/``-Proto`` (only behind your own proxy)",
            group=_HTTP,
        ),
    )
    client_rate_limits: ClientLimits | None = field(
        default=None,
        metadata=_doc(
            "token buckets per client IP for new TCP connections (beyond: closed at once) "
            "and WebSocket handshakes (beyond: 429 with ``Retry-After``); None: off",
            group=_HTTP,
        ),
    )
    max_body_size: int = field(
        default=1 * MiB,
        metadata=_doc("largest request body; larger: 413", group=_HTTP, unit="bytes"),
    )
    max_header_size: int = field(
        default=_PROTOCOL.max_header_size,
        metadata=_doc(
            "largest request head (HTTP and WebSocket handshake); larger: 431",
            group=_HTTP,
            unit="bytes",
        ),
    )
    max_header_count: int = field(
        default=_PROTOCOL.max_header_count,
        metadata=_doc("most header lines in a request head; more: 431", group=_HTTP),
    )
    header_timeout: float | None = field(
        default=10.0,
        metadata=_doc(
            "time to receive a request head; then 408 and close (None: no limit)",
            group=_HTTP,
            unit="seconds",
        ),
    )
    body_timeout: float | None = field(
        default=60.0,
        metadata=_doc(
            "time to receive a body once its head is in; then 408 (None: no limit)",
            group=_HTTP,
            unit="seconds",
        ),
    )
    keepalive_timeout: float | None = field(
        default=30.0,
        metadata=_doc(
            "how long an idle keep-alive connection stays open (None: no limit)",
            group=_HTTP,
            unit="seconds",
        ),
    )
    send_timeout: float | None = field(
        default=60.0,
        metadata=_doc(
            "how long a response may keep the write buffer above its high-water mark "
            "(the client reads nothing); then the connection is dropped (None: no limit)",
            group=_HTTP,
            unit="seconds",
        ),
    )
    access_log: bool = field(
        default=True,
        metadata=_doc("one line per request on the ``fullduplex.access`` logger", group=_HTTP),
    )
    server_header: str | None = field(
        default="fullduplex",
        metadata=_doc("``Server`` response header (None: not sent)", group=_HTTP),
    )
    drain_timeout: float = field(
        default=10.0,
        metadata=_doc(
            "time each phase of a graceful shutdown may take", group=_HTTP, unit="seconds"
        ),
    )
    # -- WebSocket
    allowed_origins: Sequence[str] | None = field(
        default=None,
        metadata=_doc(
            'origins, host names or ``"*"`` allowed to open WebSockets (None: same origin only)',
            group=_WS,
        ),
    )
    websocket_ping_interval: float | None = field(
        default=20.0,
        metadata=_doc(
            "silence before a keepalive ping (None: no pings)", group=_WS, unit="seconds"
        ),
    )
    websocket_ping_timeout: float | None = field(
        default=20.0,
        metadata=_doc(
            "time to wait for the pong, then close 1011 (None: forever)", group=_WS, unit="seconds"
        ),
    )
    websocket_close_timeout: float = field(
        default=10.0,
        metadata=_doc(
            "time to wait for the closing handshake, then drop the TCP connection",
            group=_WS,
            unit="seconds",
        ),
    )
    websocket_max_message_size: int | None = field(
        default=_PROTOCOL.max_message_size,
        metadata=_doc(
            "largest message after decompression; larger: close 1009", group=_WS, unit="bytes"
        ),
    )
    websocket_max_frame_size: int | None = field(
        default=None,
        metadata=_doc(
            "largest frame payload; larger: close 1009 (None: the message limit)",
            group=_WS,
            unit="bytes",
        ),
    )
    websocket_max_fragments: int | None = field(
        default=_PROTOCOL.max_fragments,
        metadata=_doc(
            "fragment allowance: each frame of a message costs 64 bytes of an allowance of "
            "this many frames, payload bytes refill it; exhausted: close 1009",
            group=_WS,
        ),
    )
    websocket_max_queue: int = field(
        default=32,
        metadata=_doc(
            "messages not yet handled (a busy async handler, a view not reading) before "
            "reading from the peer pauses",
            group=_WS,
        ),
    )
    websocket_max_queue_bytes: int = field(
        default=64 * KiB,
        metadata=_doc(
            "bytes of those messages (characters for text), with the one still arriving, "
            "before reading pauses",
            group=_WS,
            unit="bytes",
        ),
    )
    websocket_write_high_water: int = field(
        default=64 * KiB,
        metadata=_doc(
            "write buffer level above which senders wait and the server stops reading "
            "from that peer",
            group=_WS,
            unit="bytes",
        ),
    )
    websocket_max_write_buffer: int = field(
        default=4 * MiB,
        metadata=_doc(
            "bytes queued for a peer that does not read (checked before each send; one "
            "message always goes); more: connection aborted (1008)",
            group=_WS,
            unit="bytes",
        ),
    )
    websocket_max_pending_bytes: int = field(
        default=1 * MiB,
        metadata=_doc(
            "bytes of broadcast frames waiting for one slow peer before its slow-consumer "
            "policy applies",
            group=_WS,
            unit="bytes",
        ),
    )
    websocket_rate_limits: RateLimits | None = field(
        default=None,
        metadata=_doc(
            "token buckets per connection (messages/s, bytes/s); beyond: close 1008 or drop "
            "(None: off; a handler may override ``get_rate_limits()``)",
            group=_WS,
        ),
    )
    websocket_compression: bool | DeflateOptions | None = field(
        default=True,
        metadata=_doc(
            "permessage-deflate: True (default options), a DeflateOptions, False/None: off",
            group=_WS,
        ),
    )
    # -- HTTP fallback transports (docs/topics/transports.md)
    http_transports: Sequence[str] = field(
        default=("streaming", "sse", "polling"),
        metadata=_doc(
            "HTTP fallbacks every WebSocket route also offers (empty: WebSocket only)",
            group=_FALLBACK,
        ),
    )
    http_heartbeat_interval: float = field(
        default=15.0,
        metadata=_doc(
            "silence on a streaming or SSE response before a heartbeat (below proxy idle "
            "timeouts)",
            group=_FALLBACK,
            unit="seconds",
        ),
    )
    http_poll_timeout: float = field(
        default=25.0,
        metadata=_doc(
            "how long a long poll waits before an empty answer", group=_FALLBACK, unit="seconds"
        ),
    )
    http_session_timeout: float = field(
        default=45.0,
        metadata=_doc(
            "time without any request after which a session ends (1006)",
            group=_FALLBACK,
            unit="seconds",
        ),
    )
    http_stream_budget: int = field(
        default=256 * KiB,
        metadata=_doc(
            "bytes after which a receiving response ends (the client reconnects)",
            group=_FALLBACK,
            unit="bytes",
        ),
    )
    http_max_buffer: int = field(
        default=1 * MiB,
        metadata=_doc(
            "unacknowledged bytes a session keeps for its client; more: closed 1008",
            group=_FALLBACK,
            unit="bytes",
        ),
    )
    http_max_post: int = field(
        default=1 * MiB,
        metadata=_doc(
            "largest client-to-server POST of a session; larger: 413",
            group=_FALLBACK,
            unit="bytes",
        ),
    )
    # -- hub
    hub: Any = field(
        default=None,
        metadata=_doc(
            '``app.hub``: None or "memory" (in-process), "redis://host:port/db", or a Hub',
            group=_HUB,
            shown="str | Hub | None",
        ),
    )
    hub_options: dict[str, Any] | None = field(
        default=None,
        metadata=_doc(
            'keyword arguments of the hub backend made from ``hub``, e.g. {"history_size": 500}',
            group=_HUB,
        ),
    )
    # -- process
    node_id: str | None = field(
        default=None,
        metadata=_doc(
            "this process's name in HTTP fallback session ids, which a load balancer can "
            "route on (letters, digits, ``-``, ``_``; one process per name; None: random)",
            group=_PROCESS,
        ),
    )
    tune_malloc: bool = field(
        default=True,
        metadata=_doc(
            "``App.run`` keeps large message buffers in glibc's heap (no page faults per "
            "message); False leaves malloc alone",
            group=_PROCESS,
        ),
    )
    # -- operations
    metrics_port: int | None = field(
        default=None,
        metadata=_doc(
            "port of the admin listener: ``/metrics``, ``/healthz``, ``/readyz``, "
            "``/inspect`` (None: no admin listener; 0: any free port)",
            group=_OPS,
        ),
    )
    metrics_host: str = field(
        default="127.0.0.1",
        metadata=_doc("address the admin listener binds", group=_OPS),
    )
    metrics_path: str | None = field(
        default=None,
        metadata=_doc(
            "also serve the metrics on the main port at this path, e.g. ``/metrics`` "
            "(None: only on the admin listener)",
            group=_OPS,
        ),
    )
    drain_batch: int = field(
        default=100,
        metadata=_doc(
            "WebSocket connections a graceful drain closes (1012) at a time", group=_OPS
        ),
    )
    drain_interval: float = field(
        default=0.25,
        metadata=_doc(
            "pause between two drain batches (with ``drain_batch``: the reconnect rate "
            "the other nodes see)",
            group=_OPS,
            unit="seconds",
        ),
    )
    drain_deadline: float = field(
        default=30.0,
        metadata=_doc(
            "a drain (SIGTERM) ends by then; connections still open are closed with 1001",
            group=_OPS,
            unit="seconds",
        ),
    )
    log_format: str = field(
        default="text",
        metadata=_doc(
            '"text" or "json" (one JSON object per line); applied by ``App.run`` and the CLI',
            group=_OPS,
        ),
    )
    #: The application's own keys, read through the mapping interface like settings.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from keyword arguments such as ``App(**values)``: unknown names
        raise :class:`SettingsError` with the closest known name."""
        for name in values:
            if name not in _SPECS and name != "extra":
                raise SettingsError(_unknown(name, f"extra={{{name!r}: ...}}"))
        return cls(**values)

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_read_only"):
            raise SettingsError("the default settings are read-only; change an App's settings")
        spec = _SPECS.get(name)
        if spec is not None:
            spec.check(value)
            if name == "cookie_secret_file" and value is not None:
                object.__setattr__(self, "cookie_secret", _read_secrets(value))
            elif name == "node_id" and value is not None and not _NODE_ID.fullmatch(value):
                raise SettingsError(
                    f"setting 'node_id' takes letters, digits, '-' and '_' (1 to 32), not {value!r}"
                )
        elif name == "extra":
            _check_extra(value)
        else:
            raise SettingsError(_unknown(name, f"settings.extra[{name!r}]"))
        object.__setattr__(self, name, value)

    # ---------------------------------------------------------------- mapping

    def __getitem__(self, name: str) -> Any:
        if name in _SPECS:
            return getattr(self, name)
        return self.extra[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in _SPECS and name in self.extra:
            self.extra[name] = value
        else:
            setattr(self, name, value)

    def __delitem__(self, name: str) -> None:
        if name in _SPECS:
            raise SettingsError(f"setting {name!r} cannot be deleted; assign a value instead")
        del self.extra[name]

    def __contains__(self, name: object) -> bool:
        return name in _SPECS or name in self.extra

    def __iter__(self) -> Iterator[str]:
        yield from _SPECS
        yield from self.extra

    def __len__(self) -> int:
        return len(_SPECS) + len(self.extra)

    def __repr__(self) -> str:
        changed = {
            name: value
            for name, value in self.items()
            if name not in _SPECS or value != _SPECS[name].default
        }
        return f"Settings({changed!r})"

    # ---------------------------------------------------------------- derived

    def websocket_limits(self) -> Limits:
        """The protocol :class:`Limits` these settings describe (an unset frame limit
        follows the message limit)."""
        frame = self.websocket_max_frame_size
        return Limits(
            max_message_size=self.websocket_max_message_size,
            max_frame_size=self.websocket_max_message_size if frame is None else frame,
            max_fragments=self.websocket_max_fragments,
            max_header_size=self.max_header_size,
            max_header_count=self.max_header_count,
        )


_NODE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _read_secrets(path: str | os.PathLike[str]) -> str | list[str]:
    """The keys in a ``cookie_secret_file``: one per non-blank line, the first signs."""
    try:
        with open(path, encoding="utf-8") as file:
            keys = [line.strip() for line in file if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SettingsError(f"setting 'cookie_secret_file': cannot read {path}: {reason}") from None
    if not keys:
        raise SettingsError(f"setting 'cookie_secret_file': {path} holds no key")
    return keys[0] if len(keys) == 1 else keys


class _Spec:
    """What one setting accepts: its resolved type, default and docs."""

    __slots__ = ("annotation", "default", "doc", "group", "name", "type", "unit")

    def __init__(self, name: str, tp: Any, annotation: str, default: Any, meta: Any) -> None:
        self.name = name
        self.type = tp
        self.annotation = annotation
        self.default = default
        self.doc: str = meta["doc"]
        self.group: str = meta["group"]
        self.unit: str = meta["unit"]

    def check(self, value: Any) -> None:
        if not _accepts(self.type, value):
            raise SettingsError(
                f"setting {self.name!r} must be {self.annotation}, "
                f"not {type(value).__name__} {reprlib.repr(value)}"
            )


def _accepts(tp: Any, value: Any) -> bool:
    """A shallow isinstance check against a type annotation (items are not checked)."""
    if tp is Any or tp is object:
        return True
    if tp is type(None):
        return value is None
    if tp is float:  # an int is a fine number of seconds
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return any(_accepts(arg, value) for arg in get_args(tp))
    if origin is not None:
        # A string is a sequence too, but never a list of names or keys.
        if isinstance(value, str | bytes) and origin not in (str, bytes):
            return False
        return isinstance(value, origin)
    return isinstance(value, tp)


def _check_extra(value: Any) -> None:
    if not isinstance(value, dict):
        raise SettingsError(f"extra must be a dict of your own keys, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise SettingsError(f"extra keys must be strings, not {key!r}")
        if key in _SPECS:
            raise SettingsError(f"{key!r} is a setting: pass it as {key}=..., not in extra")


def _unknown(name: str, own_keys: str) -> str:
    """One line naming the closest setting, or where the application's own keys go."""
    close = difflib.get_close_matches(name, _SPECS, n=1)
    if close:
        return f"unknown setting {name!r}; did you mean {close[0]!r}?"
    return f"unknown setting {name!r}; the application's own keys go in {own_keys}"


def _specs() -> dict[str, _Spec]:
    hints = get_type_hints(Settings)
    return {
        f.name: _Spec(
            f.name, hints[f.name], f.metadata["shown"] or str(f.type), f.default, f.metadata
        )
        for f in fields(Settings)
        if "doc" in f.metadata
    }


_SPECS: Final = _specs()

#: Every setting name, in definition order.
SETTING_NAMES: Final = tuple(_SPECS)

#: The defaults, read-only: ``DEFAULTS.websocket_ping_interval``.
DEFAULTS: Final = Settings()
object.__setattr__(DEFAULTS, "_read_only", True)


# -------------------------------------------------------------------- documentation


def format_default(name: str) -> str:
    """The default of setting ``name`` as the docs show it: ``1 MiB``, ``20 s``, ``None``."""
    spec = _SPECS[name]
    value = spec.default
    if spec.unit == "bytes" and isinstance(value, int):
        for size, suffix in ((MiB, "MiB"), (KiB, "KiB")):
            if value >= size and value % size == 0:
                return f"{value // size} {suffix}"
        return f"{value} B"
    if spec.unit == "seconds" and isinstance(value, int | float):
        return f"{value:g} s"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def reference() -> str:
    """The settings reference page (``docs/topics/settings.md``), in Markdown."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from fullduplex/settings.py by scripts/settings-doc; do not edit. -->",
        "",
        "Settings are keyword arguments of `App(...)` and are read back from",
        "`app.settings` as attributes (`app.settings.debug`) or as a mapping",
        '(`app.settings["debug"]`, `.get(name, default)`, `name in app.settings`).',
        "An unknown name raises `SettingsError` with the closest known name, and a value",
        "of the wrong type raises it too. The application's own keys go in",
        '`extra={"admin_email": ...}` and are read the same way (`app.settings["admin_email"]`).',
        "Sizes are in bytes (`1 MiB` is `1048576`), times in seconds. Limits and the close",
        "codes they trigger are explained in [errors and limits](errors-and-limits.md).",
    ]
    group = None
    for spec in _SPECS.values():
        if spec.group != group:
            group = spec.group
            lines += [
                "",
                f"## {group}",
                "",
                "| setting | type | default | meaning |",
                "|---|---|---|---|",
            ]
        meaning = spec.doc.replace("``", "`").replace("|", "\\|")
        annotation = spec.annotation.replace("|", "\\|")
        lines.append(
            f"| `{spec.name}` | `{annotation}` | `{format_default(spec.name)}` | {meaning} |"
        )
    return "\n".join(lines) + "\n"
