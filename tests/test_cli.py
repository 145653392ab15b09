"""The ``fullduplex`` command (serve / connect / demo) run as real subprocesses.

Servers listen on a free port of 127.0.0.1; every subprocess has a timeout and is
terminated by the test if it outlives it.
"""

from __future__ import annotations

import contextlib
import os
import re
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

from helpers import free_port, read_stdout_lines, stop_process  # noqa: E402

HOST = "127.0.0.1"
FULLDUPLEX = [sys.executable, "-m", "fullduplex.cli"]
ENTRY_POINT = Path(sys.executable).with_name("fullduplex")
# The demo keeps its cookie key under the state directory: not the real one in tests.
ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "XDG_STATE_HOME": str(ROOT / "test-artifacts" / "state"),
}


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
        stop_process(proc, signal.SIGINT, timeout=5)


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


# -- user mistakes: one line on stderr, a non-zero status, never a traceback ------------------

CLI = [str(ENTRY_POINT)]


def run_cli(
    *args: str, stdin: str | None = "", cwd: Path = ROOT, timeout: float = 15.0
) -> subprocess.CompletedProcess[str]:
    """The installed ``fullduplex`` console script, as a user would run it."""
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket is listening on."""
    with socket.create_server((HOST, 0)) as sock:
        yield int(sock.getsockname()[1])


def test_version_prints_the_package_version() -> None:
    from fullduplex import __version__

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fullduplex {__version__}"


@pytest.mark.parametrize("command", ["serve examples/echo.py", "demo"])
def test_port_in_use_is_one_line(command: str, busy_port: int) -> None:
    result = run_cli(*command.split(), "--port", str(busy_port))
    assert_one_line_error(result, f"port {busy_port}", "already in use", "--port")
    assert result.stdout == ""  # no banner for a server that did not start


def test_port_in_use_with_workers_is_one_line(busy_port: int) -> None:
    result = run_cli(
        "serve", "examples/echo.py", "--workers", "2", "--redis", "redis://127.0.0.1:1/0",
        "--port", str(busy_port),
    )
    assert_one_line_error(result, "already in use")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1:1/", "unsupported URL scheme 'http'"),
        ("ws://[::1/", "bad URL"),
        ("127.0.0.1:8000", "bad URL"),
        ("ws://127.0.0.1:1/#frag", "fragment"),
    ],
)
def test_connect_bad_url_is_one_line(url: str, needle: str) -> None:
    assert_one_line_error(run_cli("connect", url), needle)


def test_connect_nobody_listening_is_one_line() -> None:
    result = run_cli("connect", f"ws://{HOST}:{free_port()}/")
    assert_one_line_error(result, "cannot connect")
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("examples/echo.py:EchoHandler", ("is a class", "not a fullduplex App")),
        ("fullduplex.cli:main", ("is a function", "not a fullduplex App")),
        ("fullduplex.cli:__doc__", ("is a str", "not a fullduplex App")),
        ("no_such_module_xyz:app", ("cannot import 'no_such_module_xyz'",)),
        ("fullduplex.no_such_module:app", ("cannot import",)),
        ("examples/no_such_file.py:app", ("no such file",)),
        ("examples/echo.py:nothing", ("has no attribute 'nothing'",)),
        ("examples/echo.py:", ("not MODULE:APP",)),
    ],
)
def test_serve_what_is_not_an_app_is_one_line(spec: str, needles: tuple[str, ...]) -> None:
    result = run_cli("serve", spec, "--port", str(free_port()))
    assert_one_line_error(result, *needles)


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("max_bdy_size=1000", "did you mean 'max_body_size'"),
        ("websocket_max_message_size='big'", "must be int"),
    ],
)
def test_app_with_a_bad_setting_is_one_line(tmp_path: Path, setting: str, needle: str) -> None:
    (tmp_path / "bad.py").write_text(f"from fullduplex import App\napp = App([], {setting})\n")
    result = run_cli("serve", "bad.py:app", "--port", str(free_port()), cwd=tmp_path)
    assert_one_line_error(result, "bad.py", needle)


def test_tls_files_missing_or_invalid_are_one_line(tmp_path: Path) -> None:
    port = str(free_port())
    missing = tmp_path / "missing.pem"
    result = run_cli("serve", "examples/echo.py", "--certfile", str(missing), "--port", port)
    assert_one_line_error(result, "--certfile", "no such file")

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    result = run_cli("demo", "--certfile", str(garbage), "--port", port)
    assert_one_line_error(result, "cannot load the TLS certificate")

    result = run_cli("demo", "--keyfile", str(garbage), "--port", port)
    assert_one_line_error(result, "--keyfile needs --certfile")

    from helpers import make_self_signed_cert

    cert, _key = make_self_signed_cert(tmp_path / "tls")
    result = run_cli(
        "demo", "--certfile", str(cert), "--keyfile", str(missing), "--port", port
    )
    assert_one_line_error(result, "--keyfile", "no such file")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ("serve examples/echo.py --port abc", "invalid int value: 'abc'"),
        ("serve examples/echo.py --port 70000", "--port 70000"),
        ("demo --port -1", "--port -1"),
        ("serve examples/echo.py --workers 0", "--workers 0"),
        ("demo --log-level loud", "invalid choice: 'loud'"),
        ("demo --loop trio", "invalid choice: 'trio'"),
        ("demo --redis localhost:6379", "not a Redis URL"),
        ("demo --reload --workers 2", "--reload runs one server process"),
        ("demo --no-such-option", "unrecognized arguments"),
        ("connect ws://127.0.0.1:1/ --header NoColon", "'Name: value'"),
        ("connect ws://127.0.0.1:1/ --max-message-size 0", "--max-message-size 0"),
        ("connect ws://127.0.0.1:1/ --linger -1", "--linger -1.0"),
        ("serve", "the following arguments are required: app"),
        ("", "the following arguments are required"),
        ("frobnicate", "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_option_values_are_one_line(args: str, needle: str) -> None:
    assert_one_line_error(run_cli(*args.split()), needle)


# -- connect with pipes, files and /dev/null ---------------------------------------------------


def test_connect_reads_a_file_on_stdin_and_exits_after_the_close(tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo é\nthree\n", encoding="utf-8")
    with server_process("serve", "examples/echo.py:app") as (port, _), lines.open("rb") as stdin:
        result = subprocess.run(
            [*CLI, "connect", f"ws://{HOST}:{port}/", "--linger", "0.3"],
            stdin=stdin,
            capture_output=True,
            env=ENV,
            timeout=15,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "one\ntwo é\nthree\n"
    assert result.stderr.decode().strip().splitlines() == ["connection closed: 1000"]


def test_connect_with_dev_null_exits_promptly_and_quietly() -> None:
    with server_process("serve", "examples/echo.py:app") as (port, _):
        started = time.monotonic()
        with open(os.devnull, "rb") as stdin:
            result = subprocess.run(
                [*CLI, "connect", f"ws://{HOST}:{port}/"],
                stdin=stdin,
                capture_output=True,
                env=ENV,
                timeout=15,
            )
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert result.stderr.decode().strip().splitlines() == ["connection closed: 1000"]
    assert elapsed < 5.0, elapsed  # no linger: nothing was sent, nothing to wait for


def test_connect_exits_when_the_server_closes_while_stdin_stays_open() -> None:
    with server_process("serve", "examples/echo.py:app") as (port, _):
        proc = subprocess.Popen(
            [*CLI, "connect", f"ws://{HOST}:{port}/"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(b"last words\nover\n")
            proc.stdin.flush()  # the pipe stays open: the stdin reader is still waiting
            proc.wait(timeout=10)
            out, err = proc.stdout.read(), proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdin.close()
    assert proc.returncode == 0, err  # no abort at interpreter shutdown either
    assert out == b"last words\n"
    assert err.decode().strip().splitlines() == ["connection closed: 1000 over"]


# -- the start banner ---------------------------------------------------------------------------


@contextlib.contextmanager
def cli_process(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """The console script in the background (``env`` adds variables); SIGTERM, then
    SIGKILL, at the end."""
    proc = subprocess.Popen(
        [*CLI, *args],
        cwd=cwd,
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        stop_process(proc)


def _port_of(line: str) -> int:
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert match, line
    return int(match.group(1))


def test_serve_banner_lists_the_url_of_the_real_port() -> None:
    with cli_process("serve", "examples/echo.py", "--port", "0", "--log-level", "warning") as p:
        (banner,) = read_stdout_lines(p, 1)
        assert banner.startswith("fullduplex ") and "examples/echo.py" in banner
        assert "Ctrl+C" in banner
        port = _port_of(banner)
        assert port != 0
        result = connect(port, "banner\n")
        assert result.stdout == "banner\n"


def test_demo_banner_lists_its_pages() -> None:
    with cli_process("demo", "--port", "0", "--log-level", "warning") as p:
        banner = read_stdout_lines(p, 4)
        port = _port_of(banner[0])
        assert banner[0].startswith(f"fullduplex demo on http://127.0.0.1:{port}/")
        base = f"http://127.0.0.1:{port}"
        assert banner[1:] == [
            f"  chat    {base}/",
            f"  echo    {base}/echo",
            f"  clock   {base}/clock",
        ]
        for line in banner[2:]:
            url = line.split()[-1]
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200


# -- --reload -----------------------------------------------------------------------------------

RELOAD_APP = '''
from fullduplex import App, RequestHandler


class Version(RequestHandler):
    def get(self) -> None:
        self.write("{version}")


app = App([("/", Version)])
'''


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def test_reload_restarts_the_server_when_a_file_changes(tmp_path: Path) -> None:
    app_file = tmp_path / "app.py"
    app_file.write_text(RELOAD_APP.format(version="v1"))
    with cli_process("serve", "app.py", "--reload", "--port", "0", cwd=tmp_path) as proc:
        banner = read_stdout_lines(proc, 2)
        url = f"http://127.0.0.1:{_port_of(banner[0])}/"
        assert banner[1] == f"  reload  on changes under {tmp_path}"
        deadline = time.monotonic() + 15
        while _get(url) != "v1" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(url) == "v1"

        app_file.write_text(RELOAD_APP.format(version="v2"))
        changed = time.monotonic()
        while _get(url) != "v2" and time.monotonic() < changed + 15:
            time.sleep(0.1)
        assert _get(url) == "v2", "the server did not restart within 15 s"

        proc.send_signal(signal.SIGTERM)
        _out, raw_err = proc.communicate(timeout=15)
    err = raw_err.decode()
    assert proc.returncode == 0, err
    assert "app.py changed; restarting" in err
    assert "Traceback" not in err
    assert _get(url) is None  # the server process is gone too


def test_reload_of_a_bad_app_ends_with_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(RELOAD_APP.format(version="v1"))
    result = run_cli("serve", "app.py:nothing", "--reload", "--port", "0", cwd=tmp_path)
    assert_one_line_error(result, "has no attribute 'nothing'")


def test_app_run_in_a_plain_script_says_where_it_listens(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "plain.py"
    script.write_text(
        "from fullduplex import App\n"
        f"App().run('127.0.0.1', {port})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_listening(port, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert f"serving on http://127.0.0.1:{port}".encode() in err
