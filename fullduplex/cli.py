"""The ``fullduplex`` command: serve an app, talk to a server, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import importlib.util
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .settings import DEFAULTS, SettingsError

__all__ = ["load_app", "main"]

#: What ``connect`` accepts unless told otherwise: as much as the echo services of the
#: examples and the demo send back, so that they can be tried from a terminal.
CONNECT_MAX_MESSAGE = 16 * 1024 * 1024
#: Set by ``--reload`` for the server process it starts: the listening socket's fd.
LISTEN_FD_ENV = "FULLDUPLEX_LISTEN_FD"
#: How long a server being restarted by ``--reload`` may take to shut down gracefully.
RELOAD_STOP_TIMEOUT = 10.0
REDIS_INSTALL = "pip install 'fullduplex[redis]'"
RELOAD_INSTALL = "pip install 'fullduplex[reload]'"


def fail(message: str) -> NoReturn:
    """End the command with one ``error:`` line on stderr and exit status 1."""
    raise SystemExit(f"error: {message}")


def load_app(spec: str) -> Any:
    """Import ``module:attr`` or ``path/to/file.py:attr`` and return the attribute."""
    target, sep, attr = spec.rpartition(":")
    if not sep:
        target, attr = spec, "app"
    if not target or not attr:
        fail(f"{spec!r} is not MODULE:APP or path/to/file.py:APP")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target).resolve()
        if not path.is_file():
            fail(f"no such file: {target}")
        module_name = f"_fullduplex_app_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            fail(f"cannot import {target}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.parent))
        try:
            module_spec.loader.exec_module(module)
        except SettingsError as exc:  # App(...) with a setting it does not know or take
            fail(f"{target}: {exc}")
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            fail(f"cannot import {target!r}: {exc}")
        except SettingsError as exc:
            fail(f"{target}: {exc}")
    try:
        return getattr(module, attr)
    except AttributeError:
        fail(f"{target!r} has no attribute {attr!r}")


def load_app_instance(spec: str) -> Any:
    """:func:`load_app`, refusing anything that is not a :class:`~fullduplex.server.App`."""
    from .server import App

    app = load_app(spec)
    if not isinstance(app, App):
        kind = "a class" if isinstance(app, type) else f"a {type(app).__name__}"
        fail(f"{spec} is {kind}, not a fullduplex App (app = App([...routes]))")
    return app


def load_asgi_app(spec: str) -> Any:
    """:func:`load_app` for ``serve --asgi``: any ASGI 3 application (a callable)."""
    app = load_app(spec)
    if not callable(app):
        fail(f"{spec} is a {type(app).__name__}, not an ASGI application")
    return app


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """The server's TLS context from PEM files; unreadable or invalid files are errors."""
    if not certfile:
        if keyfile:
            fail("--keyfile needs --certfile")
        return None
    for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is None:
            continue
        if not os.path.isfile(path):
            fail(f"{option} {path}: no such file")
        if not os.access(path, os.R_OK):
            fail(f"{option} {path}: not readable (permission denied)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        files = certfile + (f" and {keyfile}" if keyfile else "")
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        fail(f"cannot load the TLS certificate and key from {files}: {reason}")
    return context


def _listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port``; a port in use is a one-line error."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        # One socket: for a name with several addresses ("localhost"), IPv4 first.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        _listen_failed(host, port, exc)
    return sock


def _listen_failed(host: str, port: int, exc: OSError) -> NoReturn:
    if exc.errno == errno.EADDRINUSE:
        fail(
            f"port {port} on {host} is already in use (another server is running there?); "
            "choose another with --port"
        )
    if exc.errno == errno.EACCES:
        fail(f"no permission to listen on {host}:{port} (ports below 1024 need privileges)")
    fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _urls(host: str, port: int, secure: bool) -> list[str]:
    """The base URLs a browser on this machine (and the network, for a wildcard) can use."""
    scheme = "https" if secure else "http"
    if host in ("", "0.0.0.0", "::"):
        hosts = ["127.0.0.1" if host != "::" else "[::1]"]
        lan = _lan_address()
        if lan:
            hosts.append(lan)
    else:
        hosts = [f"[{host}]" if ":" in host else host]
    return [f"{scheme}://{name}:{port}/" for name in hosts]


def _lan_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere
            address = probe.getsockname()[0]
    except OSError:
        return None
    return str(address) if address and address != "0.0.0.0" else None


def _setup_logging(level: str, log_format: str = "text") -> None:
    from .logs import configure_logging

    configure_logging(level, log_format)


def _add_server_options(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=port, help="port to listen on")
    parser.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss:// and https://")
    parser.add_argument("--keyfile", help="TLS private key (PEM), if not in --certfile")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the port")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="hub backend: redis://host:port/db (default: the app's hub setting)",
    )
    parser.add_argument(
        "--cookie-secret-file",
        metavar="PATH",
        help="the cookie_secret setting from this file (share it between the nodes of a cluster)",
    )
    parser.add_argument(
        "--node-id",
        metavar="NAME",
        help="the node_id setting: this node's name in HTTP fallback session ids",
    )
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log lines as text or JSON objects"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="admin listener: /metrics, /healthz, /readyz, /inspect (needs fullduplex[metrics])",
    )
    parser.add_argument(
        "--metrics-host", metavar="HOST", help="address of the admin listener (127.0.0.1)"
    )


#: Files whose change restarts a server under ``--reload``: code, templates, config.
RELOAD_EXTENSIONS = (".html", ".htm", ".jinja", ".jinja2", ".j2", ".toml", ".cfg", ".ini")


def _check_server_options(args: argparse.Namespace) -> None:
    """Refuse option values that would fail later with a traceback."""
    if args.redis:
        if not args.redis.startswith(("redis://", "rediss://", "unix://")):
            fail(f"--redis {args.redis}: not a Redis URL (e.g. redis://127.0.0.1:6379/0)")
        if importlib.util.find_spec("redis") is None:
            fail(f"--redis needs the Redis client package: {REDIS_INSTALL}")
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        fail("--loop uvloop needs the uvloop package: pip install 'fullduplex[fast]'")
    if args.reload and args.workers > 1:
        fail("--reload runs one server process; leave out --workers")
    if getattr(args, "asgi", False):
        if args.workers > 1:
            fail("--asgi serves one process; run several behind a load balancer")
        if args.redis:
            fail("--redis is for fullduplex apps; an ASGI app brings its own backends")
    if getattr(args, "node_id", None) and args.workers > 1:
        fail("--node-id names one process; run one node per port, not --workers")


def _run_app(
    app: Any,
    args: argparse.Namespace,
    context: ssl.SSLContext | None,
    sock: socket.socket | None = None,
) -> None:
    """``app.run`` with the command-line options, on ``sock`` when already listening."""
    if getattr(args, "asgi", False):
        _run_asgi(app, args, context, sock)
        return
    if args.redis:
        app.settings["hub"] = args.redis
    try:
        if args.cookie_secret_file:
            app.settings["cookie_secret_file"] = args.cookie_secret_file
        if args.node_id:
            app.settings["node_id"] = args.node_id
    except SettingsError as exc:
        fail(str(exc))
    if args.metrics_port is not None:
        app.settings["metrics_port"] = args.metrics_port
    if args.metrics_host:
        app.settings["metrics_host"] = args.metrics_host
    if args.log_format:
        app.settings["log_format"] = args.log_format
    _setup_logging(args.log_level, app.settings.log_format)
    extra: dict[str, Any] = {} if sock is None else {"sock": sock}
    port = args.port if sock is None else sock.getsockname()[1]
    try:
        app.run(args.host, port, ssl=context, workers=args.workers, loop=args.loop, **extra)
    except SettingsError as exc:  # e.g. --metrics-port without prometheus_client
        fail(str(exc))
    except OSError as exc:
        if sock is not None:
            raise
        _listen_failed(args.host, args.port, exc)  # --workers: the app binds the port


def _run_asgi(
    app: Any, args: argparse.Namespace, context: ssl.SSLContext | None, sock: socket.socket | None
) -> None:
    """``serve --asgi``: the ASGI application on fullduplex's server."""
    from .server.asgi import run_asgi

    extra: dict[str, Any] = {} if sock is None else {"sock": sock}
    try:
        run_asgi(
            app,
            args.host,
            args.port,
            loop=args.loop,
            ssl=context,
            root_path=args.root_path,
            lifespan=args.lifespan,
            **extra,
        )
    except OSError as exc:
        if sock is not None:
            raise
        _listen_failed(args.host, args.port, exc)


def _serve(
    args: argparse.Namespace,
    make_app: Callable[[], Any],
    title: str,
    pages: Sequence[tuple[str, str]],
    watch: Sequence[Path],
) -> int:
    """Serve ``make_app()`` (a callable): bind, print the banner, run; or supervise
    a server process that ``--reload`` restarts when a file under ``watch`` changes."""
    _setup_logging(args.log_level)
    _check_server_options(args)
    context = _ssl_context(args.certfile, args.keyfile)  # bad files: refuse before binding
    inherited = os.environ.pop(LISTEN_FD_ENV, None)
    if inherited is not None:  # the server process of --reload: the socket is ours already
        _run_app(make_app(), args, context, socket.socket(fileno=int(inherited)))
        return 0
    if args.reload:
        watchfiles = _import_watchfiles()
        sock = _listen(args.host, args.port)
        _banner(title, args, sock, context is not None, pages, watch)
        return _supervise(watchfiles, args, sock, watch)
    app = make_app()
    if args.workers > 1:  # the app binds the port for its workers: check it is free first
        _listen(args.host, args.port).close()
        _banner(title, args, None, context is not None, pages, ())
        _run_app(app, args, context)
        return 0
    sock = _listen(args.host, args.port)
    _banner(title, args, sock, context is not None, pages, ())
    _run_app(app, args, context, sock)
    return 0


def _banner(
    title: str,
    args: argparse.Namespace,
    sock: socket.socket | None,
    secure: bool,
    pages: Sequence[tuple[str, str]],
    watch: Sequence[Path],
) -> None:
    port = args.port if sock is None else sock.getsockname()[1]
    urls = _urls(args.host, port, secure)
    lines = [f"{title} on {urls[0]}  (Ctrl+C to stop)"]
    lines += [f"  network {url}" for url in urls[1:]]
    lines += [f"  {label:<7} {urls[0].rstrip('/')}{path}" for label, path in pages]
    if watch:
        lines.append("  reload  on changes under " + ", ".join(str(path) for path in watch))
    print("\n".join(lines), flush=True)


def _import_watchfiles() -> Any:
    try:
        import watchfiles
    except ImportError:
        fail(f"--reload needs the watchfiles package: {RELOAD_INSTALL}")
    return watchfiles


def _supervise(watchfiles: Any, args: argparse.Namespace, sock: socket.socket,
               watch: Sequence[Path]) -> int:
    """Run the server in a child process on ``sock``; restart it when files change.

    The listening socket stays open here, so clients that connect during a restart
    wait in the backlog instead of being refused. A server that fails before the
    first change ends the command with its exit status (a configuration error);
    after a change, a failing server waits for the next change.
    """
    command = [sys.executable, "-m", "fullduplex.cli", *args.argv]
    env = {**os.environ, LISTEN_FD_ENV: str(sock.fileno())}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),))

    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we say what changed
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    watch_filter = watchfiles.PythonFilter(extra_extensions=RELOAD_EXTENSIONS)
    proc = start()
    restarted = reported = False
    interrupted = False
    try:
        for changes in watchfiles.watch(
            *watch, watch_filter=watch_filter, stop_event=stop, rust_timeout=250,
            yield_on_timeout=True, raise_interrupt=True,
        ):
            if changes:
                names = sorted({os.path.basename(path) for _, path in changes})
                shown = ", ".join(names[:3]) + (" …" if len(names) > 3 else "")
                print(f"fullduplex: {shown} changed; restarting", file=sys.stderr, flush=True)
                _stop_child(proc, signal.SIGTERM)
                proc = start()
                restarted, reported = True, False
                continue
            code = proc.poll()
            if code is None:
                continue
            if not restarted:
                return code  # it never ran: nothing a reload can fix
            if not reported:
                print(
                    f"fullduplex: the server exited with status {code}; "
                    "restarting on the next change",
                    file=sys.stderr,
                    flush=True,
                )
                reported = True
    except KeyboardInterrupt:
        interrupted = True  # Ctrl+C reached the server process too: let it shut down
    finally:
        signal.signal(signal.SIGTERM, previous)
        if interrupted:
            _stop_child(proc, signal.SIGINT, grace=2.0)
        else:
            _stop_child(proc, signal.SIGTERM)
        sock.close()
    return 0


def _stop_child(proc: subprocess.Popen[bytes], signum: int, grace: float = 0.0) -> None:
    """Let ``proc`` end within ``grace`` s, else send ``signum`` (graceful shutdown),
    and kill it if it is still there after :data:`RELOAD_STOP_TIMEOUT`."""
    if grace:
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        proc.wait(timeout=RELOAD_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cmd_serve(args: argparse.Namespace) -> int:
    app_path = args.app.rpartition(":")[0] or args.app
    watch = [Path.cwd()]
    if app_path.endswith(".py") or "/" in app_path:
        folder = Path(app_path).resolve().parent
        if not folder.is_relative_to(watch[0]):
            watch.append(folder)
    load = load_asgi_app if args.asgi else load_app_instance
    return _serve(
        args, lambda: load(args.app), f"fullduplex {__version__}: {args.app}", (), watch
    )


def cmd_demo(args: argparse.Namespace) -> int:
    def make_app() -> Any:
        from .demo import make_app

        return make_app()

    pages = (("chat", "/"), ("echo", "/echo"), ("clock", "/clock"))
    return _serve(args, make_app, "fullduplex demo", pages, [Path(__file__).resolve().parent])


#: Lines read ahead from stdin before the reader waits for the connection to send them.
STDIN_QUEUE_LINES = 64


def _read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
    """Read stdin line by line in a daemon thread; ``None`` marks the end of input.

    Works the same for a terminal, a pipe, a file and /dev/null (the event loop cannot
    watch the last two). Raw ``os.read`` holds no lock of ``sys.stdin``, so the process
    can exit while this thread still waits for input.
    """
    pending = bytearray()

    def put(item: bytes | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    try:
        while chunk := os.read(0, 65536):
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                put(bytes(pending[start:end]))
                start = end + 1
            del pending[:start]
        if pending:
            put(bytes(pending))
        put(None)
    except (OSError, RuntimeError, asyncio.CancelledError):
        pass  # stdin unreadable, or the loop is gone: the connection ended first


def _connect_headers(items: Sequence[str]) -> list[tuple[str, str]]:
    headers = []
    for item in items:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            fail(f"--header {item!r}: expected 'Name: value'")
        headers.append((name.strip(), value.strip()))
    return headers


async def _connect(args: argparse.Namespace) -> int:
    from .client import websocket_connect
    from .protocol.errors import HandshakeFailed
    from .protocol.handshake import ClientHandshake

    headers = _connect_headers(args.header or [])
    try:
        ClientHandshake.from_url(args.url)
    except ValueError as exc:
        fail(f"bad URL {args.url!r}: {exc} (expected ws://host[:port]/path or wss://...)")
    context = None
    if args.url.startswith("wss://") and args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        conn = await websocket_connect(
            args.url,
            subprotocols=args.subprotocol or (),
            headers=headers,
            origin=args.origin,
            compression=None if args.no_compression else "deflate",
            ssl=context,
            max_message_size=args.max_message_size,
        )
    except HandshakeFailed as exc:
        print(f"handshake failed: {exc}", file=sys.stderr)
        if exc.body:
            print(exc.body.decode("utf-8", "replace").rstrip(), file=sys.stderr)
        return 2
    except ssl.SSLError as exc:
        print(f"cannot connect: TLS: {exc.reason or exc} (--insecure skips the checks)",
              file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot connect to {args.url}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print(f"cannot connect to {args.url}: no answer in time", file=sys.stderr)
        return 2
    interactive = sys.stdin.isatty()
    if interactive:
        print(
            f"connected to {args.url}" + (f" ({conn.subprotocol})" if conn.subprotocol else ""),
            file=sys.stderr,
        )
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue(STDIN_QUEUE_LINES)
    threading.Thread(target=_read_lines, args=(loop, lines), daemon=True).start()

    async def pump_stdin() -> None:
        sent = 0
        while (line := await lines.get()) is not None:
            text = line.decode("utf-8", "replace").removesuffix("\r")
            try:
                await conn.send(text)
            except Exception:
                return
            sent += 1
        # End of input: close politely, but let replies still in flight arrive first.
        if sent and not interactive:
            await asyncio.sleep(args.linger)
        if not conn.closed:
            await conn.close()

    async def print_messages() -> None:
        async for message in conn:
            if isinstance(message, bytes):
                more = "…" if len(message) > 32 else ""
                text = f"<{len(message)} bytes: {message[:32].hex()}{more}>"
            else:
                text = message
            print(("< " if interactive else "") + text, flush=True)

    sender = asyncio.ensure_future(pump_stdin())
    try:
        await print_messages()
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    reason = f" {conn.close_reason}" if conn.close_reason else ""
    print(f"connection closed: {conn.close_code}{reason}", file=sys.stderr)
    return 0 if conn.close_code in (1000, 1001, 1005) else 1


def cmd_connect(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(_connect(args))
    except KeyboardInterrupt:
        return 130


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _check_values(args: argparse.Namespace) -> None:
    """Ranges argparse's types do not check."""
    port = getattr(args, "port", None)
    if port is not None and not 0 <= port <= 65535:
        fail(f"--port {port}: a port is 0 to 65535 (0 picks a free one)")
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        fail(f"--workers {workers}: needs at least 1")
    size = getattr(args, "max_message_size", None)
    if size is not None and size < 1:
        fail(f"--max-message-size {size}: needs at least 1 byte")
    linger = getattr(args, "linger", None)
    if linger is not None and linger < 0:
        fail(f"--linger {linger}: cannot be negative")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fullduplex", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"fullduplex {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve an App: fullduplex serve examples/echo.py:app")
    serve.add_argument("app", help="MODULE:APP or path/to/file.py:APP")
    serve.add_argument(
        "--asgi",
        action="store_true",
        help="APP is any ASGI 3 application (Starlette, FastAPI, Django ...)",
    )
    serve.add_argument(
        "--root-path", default="", help="with --asgi: the path prefix the app is mounted under"
    )
    serve.add_argument(
        "--lifespan",
        choices=["auto", "on", "off"],
        default="auto",
        help="with --asgi: run the app's lifespan startup/shutdown (auto: if it supports it)",
    )
    _add_server_options(serve, 8000)
    _add_reload_option(serve, "the current directory and the app's")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="the demo: chat room, echo and clock on one port")
    _add_server_options(demo, 8000)
    _add_reload_option(demo, "the fullduplex package's")
    demo.set_defaults(func=cmd_demo)

    connect = sub.add_parser("connect", help="interactive client: lines typed are sent")
    connect.add_argument("url", help="ws:// or wss:// URL")
    connect.add_argument("--subprotocol", action="append", help="offer a subprotocol (repeatable)")
    connect.add_argument(
        "--header", action="append", help="extra header 'Name: value' (repeatable)"
    )
    connect.add_argument("--origin", help="Origin header to send")
    connect.add_argument(
        "--no-compression", action="store_true", help="do not offer permessage-deflate"
    )
    connect.add_argument(
        "--insecure", action="store_true", help="wss:// without certificate checks"
    )
    connect.add_argument(
        "--max-message-size",
        type=int,
        default=CONNECT_MAX_MESSAGE,
        metavar="BYTES",
        help="largest message accepted (default: %(default)s, as much as the echo examples "
        f"send back; the library's default is {DEFAULTS.websocket_max_message_size})",
    )
    connect.add_argument(
        "--linger",
        type=float,
        default=1.0,
        help="seconds to wait for replies after stdin ends (pipes)",
    )
    connect.set_defaults(func=cmd_connect)
    return parser


def _add_reload_option(parser: argparse.ArgumentParser, where: str) -> None:
    parser.add_argument(
        "--reload",
        action="store_true",
        help=f"restart the server when a file changes under {where} folder "
        f"(needs {RELOAD_INSTALL})",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fullduplex`` command; the exit status is returned."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    _check_values(args)
    try:
        result = args.func(args)
    except KeyboardInterrupt:  # Ctrl+C before the server took over the signals
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
