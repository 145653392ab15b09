"""The ``fullduplex`` command (serve / connect / demo) run as real subprocesses.

Servers listen on a free port of 127.0.0.1; every subprocess has a timeout and is
terminated by the test if it outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import free_port  # noqa: E402

HOST = "127.0.0.1"
FULLDUPLEX = [sys.executable, "-m", "fullduplex.cli"]
ENTRY_POINT = Path(sys.executable).with_name("fullduplex")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def wait_listening(port: int, proc: subprocess.Popen[bytes], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"server exited with {proc.returncode}: {err.decode()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port} after {within} s")


@contextlib.contextmanager
def server_process(*args: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``fullduplex <args> --port P`` in the background; SIGINT and reap at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [*FULLDUPLEX, *args, "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def connect(port: int, stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FULLDUPLEX, "connect", f"ws://{HOST}:{port}/", "--linger", "0.3", *extra],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=10,
    )


def test_serve_echo_and_connect_pipe_echoes_lines_and_prints_close_code() -> None:
    with server_process("serve", "examples/echo.py:app") as (port, _):
        result = connect(port, "hello\nsecond line é\n")
    assert result.stdout == "hello\nsecond line é\n"
    assert result.stderr.strip().splitlines()[-1] == "connection closed: 1000"
    assert result.returncode == 0


def test_connect_over_gets_close_1000_over() -> None:
    with server_process("serve", "examples/echo.py:app") as (port, _):
        result = connect(port, "first\nover\n")
    assert result.stdout == "first\n"
    assert result.stderr.strip().splitlines()[-1] == "connection closed: 1000 over"
    assert result.returncode == 0


def test_connect_handshake_failure_is_reported() -> None:
    with server_process("serve", "examples/echo.py:app") as (port, _):
        result = subprocess.run(
            [*FULLDUPLEX, "connect", f"ws://{HOST}:{port}/missing"],
            input="",
            capture_output=True,
            text=True,
            env=ENV,
            timeout=10,
        )
    assert result.returncode == 2
    assert "handshake failed" in result.stderr and "404" in result.stderr


def test_serve_sigterm_shuts_down_cleanly() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*FULLDUPLEX, "serve", "examples/echo.py:app", "--port", str(port)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"shutting down" in err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:app", "cannot import 'no_such_module_xyz'"),
        ("examples/no_such_file.py:app", "no such file: examples/no_such_file.py"),
        ("examples/echo.py:nothing", "has no attribute 'nothing'"),
    ],
)
def test_serve_bad_spec_is_a_clear_error(spec: str, message: str) -> None:
    result = subprocess.run(
        [*FULLDUPLEX, "serve", spec, "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=10,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_workers_with_memory_hub_refuses_mentioning_redis() -> None:
    result = subprocess.run(
        [
            *FULLDUPLEX,
            "serve",
            "examples/echo.py:app",
            "--workers",
            "2",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=10,
    )
    assert result.returncode != 0
    assert "--workers 2" in result.stderr and "redis" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_demo_serves_index_and_client_script() -> None:
    with server_process("demo") as (port, _):

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(f"http://{HOST}:{port}/", timeout=5) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:  # a redirect is not followed
            status, body = exc.code, b""
        assert status == 200 or 300 <= status < 400, status
        if status == 200:
            assert b"<html" in body.lower() or b"<!doctype" in body.lower()
        with urllib.request.urlopen(f"http://{HOST}:{port}/fullduplex.js", timeout=5) as r:
            assert r.status == 200
            assert "javascript" in r.headers["Content-Type"]
            assert b"WebSocket" in r.read()


def test_entry_point_is_installed() -> None:
    if not ENTRY_POINT.exists():
        pytest.skip("the fullduplex console script is not installed in this environment")
    result = subprocess.run(
        [str(ENTRY_POINT), "--help"], capture_output=True, text=True, timeout=10, env=ENV
    )
    assert result.returncode == 0
    for command in ("serve", "connect", "demo"):
        assert command in result.stdout
