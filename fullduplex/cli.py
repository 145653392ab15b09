"""The ``fullduplex`` command: serve an app, talk to a server, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from .settings import DEFAULTS

__all__ = ["load_app", "main"]

#: What ``connect`` accepts unless told otherwise: as much as the echo services of the
#: examples and the demo send back, so that they can be tried from a terminal.
CONNECT_MAX_MESSAGE = 16 * 1024 * 1024


def load_app(spec: str) -> Any:
    """Import ``module:attr`` or ``path/to/file.py:attr`` and return the attribute."""
    target, sep, attr = spec.rpartition(":")
    if not sep:
        target, attr = spec, "app"
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise SystemExit(f"error: no such file: {target}")
        module_name = f"_fullduplex_app_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise SystemExit(f"error: cannot import {target}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.parent))
        module_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SystemExit(f"error: cannot import {target!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"error: {target!r} has no attribute {attr!r}") from None


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if not certfile:
        if keyfile:
            raise SystemExit("error: --keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


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
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def _run_app(app: Any, args: argparse.Namespace) -> None:
    if args.redis:
        app.settings["hub"] = args.redis
    app.run(
        args.host,
        args.port,
        ssl=_ssl_context(args.certfile, args.keyfile),
        workers=args.workers,
        loop=args.loop,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    _setup_logging(args.log_level)
    _run_app(load_app(args.app), args)


def cmd_demo(args: argparse.Namespace) -> None:
    _setup_logging(args.log_level)
    from .demo import make_app

    app = make_app()
    scheme = "https" if args.certfile else "http"
    print(f"fullduplex demo on {scheme}://{args.host}:{args.port}/  (Ctrl+C to stop)", flush=True)
    _run_app(app, args)


async def _connect(args: argparse.Namespace) -> int:
    from .client import websocket_connect
    from .protocol.errors import HandshakeFailed

    headers = []
    for item in args.header or []:
        name, _, value = item.partition(":")
        headers.append((name.strip(), value.strip()))
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
    except OSError as exc:
        print(f"cannot connect: {exc}", file=sys.stderr)
        return 2
    interactive = sys.stdin.isatty()
    if interactive:
        print(
            f"connected to {args.url}" + (f" ({conn.subprotocol})" if conn.subprotocol else ""),
            file=sys.stderr,
        )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def pump_stdin() -> None:
        while True:
            line = await reader.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            try:
                await conn.send(text)
            except Exception:
                return
        # End of input: close politely, but let replies still in flight arrive first.
        if not interactive:
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
    await print_messages()
    sender.cancel()
    reason = f" {conn.close_reason}" if conn.close_reason else ""
    print(f"connection closed: {conn.close_code}{reason}", file=sys.stderr)
    return 0 if conn.close_code in (1000, 1001, 1005) else 1


def cmd_connect(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(_connect(args))
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fullduplex", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve an App: fullduplex serve examples/echo.py:app")
    serve.add_argument("app", help="MODULE:APP or path/to/file.py:APP")
    _add_server_options(serve, 8000)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="the demo: chat room, echo and clock on one port")
    _add_server_options(demo, 8000)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
