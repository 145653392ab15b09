"""Packaging: build the sdist and the wheel as a release would, install the wheel into a
fresh virtualenv, and run the demo from there.

The source is copied to a temporary folder first, so the build neither sees nor leaves
anything in the working tree. Building (with build isolation) and installing use the
machine's configured package index; every subprocess has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
pytestmark = pytest.mark.packaging
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import read_stdout_lines, stop_process  # noqa: E402

#: What setuptools prints when the project's own metadata is out of date or wrong.
METADATA_WARNINGS = (
    "BuildBackendWarning",
    "SetuptoolsDeprecationWarning",
    "SetuptoolsWarning",
    "_DeprecatedConfig",
    "DeprecationWarning",
)
#: Not part of a release: caches, build output, local environments.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", "node_modules",
    "test-artifacts", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".peers",
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project as a fresh clone has it."""
    path = tmp_path_factory.mktemp("packaging") / "source"
    shutil.copytree(ROOT, path, ignore=NOT_SOURCE)
    return path


@pytest.fixture(scope="module")
def built(source: Path) -> tuple[Path, Path, str]:
    """(sdist, wheel, build output): ``python -m build`` makes the sdist, then the
    wheel from the unpacked sdist, which proves the sdist holds everything needed."""
    work = source.parent
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    (sdist,) = (work / "dist").glob("fullduplex-*.tar.gz")
    (wheel,) = (work / "dist").glob("fullduplex-*.whl")
    return sdist, wheel, output


def test_build_prints_no_warning_about_the_project_metadata(built: tuple[Path, Path, str]) -> None:
    output = built[2]
    found = [line for line in output.splitlines() if any(w in line for w in METADATA_WARNINGS)]
    assert found == []


def test_sdist_and_wheel_hold_the_package_files(built: tuple[Path, Path, str]) -> None:
    sdist, wheel, _ = built
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for name in (
        "LICENSE", "README.md", "pyproject.toml", "setup.py",
        "fullduplex/protocol/_speedups.c", "fullduplex/static/fullduplex.js",
        "fullduplex/templates/demo/base.html",
    ):
        assert name in in_sdist, name
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    for name in (
        "fullduplex/py.typed", "fullduplex/static/fullduplex.js",
        "fullduplex/static/fullduplex.mjs", "fullduplex/static/demo/demo.css",
        "fullduplex/templates/demo/error.html", "fullduplex/demo.py",
    ):
        assert name in in_wheel, name
    assert any(re.fullmatch(r"fullduplex-[^/]+\.dist-info/licenses/LICENSE", n) for n in in_wheel)
    metadata = next(n for n in in_wheel if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(metadata).decode()
    assert "License-Expression: MIT" in text
    for extra in ("redis", "fast", "reload"):
        assert f"Provides-Extra: {extra}" in text


@pytest.fixture(scope="module")
def venv(built: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with only the wheel (and its dependencies) installed."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    result = subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", str(built[1])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return path


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_STATE_HOME"] = str(tmp / "state")  # the demo's session key file goes here
    return env


@contextlib.contextmanager
def demo_from(venv: Path, cwd: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    proc = subprocess.Popen(
        [str(venv / "bin" / "fullduplex"), "demo", "--port", "0", "--log-level", "warning"],
        cwd=cwd,
        env=_clean_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        banner = read_stdout_lines(proc, 1, within=20)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", banner[0] if banner else "")
        assert match, (banner, proc.poll())
        yield int(match.group(1)), proc
    finally:
        stop_process(proc, signal.SIGINT)


def test_installed_wheel_runs_the_demo(venv: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import fullduplex; print(fullduplex.__file__)"],
        cwd=tmp_path, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=30,
    )
    assert where.stdout.startswith(str(venv)), where  # not the source tree
    with demo_from(venv, tmp_path) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/", timeout=5) as response:
            assert response.status == 200
            assert b"Join the chat" in response.read()
        with urllib.request.urlopen(base + "/fullduplex.js", timeout=5) as response:
            assert response.status == 200
            assert "javascript" in response.headers["Content-Type"]
        with urllib.request.urlopen(base + "/static/demo.css", timeout=5) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


@pytest.mark.parametrize(
    ("args", "install"),
    [
        (["demo", "--redis", "redis://127.0.0.1:6379/0"], "pip install 'fullduplex[redis]'"),
        (["demo", "--reload"], "pip install 'fullduplex[reload]'"),
        (["demo", "--loop", "uvloop"], "pip install 'fullduplex[fast]'"),
    ],
)
def test_missing_extra_is_one_line_naming_the_install_command(
    venv: Path, tmp_path: Path, args: list[str], install: str
) -> None:
    """The fresh virtualenv has none of the extras: each option needing one refuses to
    start (instead of failing every connection later)."""
    result = subprocess.run(
        [str(venv / "bin" / "fullduplex"), *args, "--port", "0"],
        cwd=tmp_path, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and install in lines[0], result.stderr
    assert result.stdout == ""


def test_scripts_demo_installs_quietly_then_prints_the_banner(source: Path) -> None:
    """On a fresh clone ``scripts/demo`` makes .venv and installs; the only line before
    the banner says so (pip's output goes to .venv/install.log)."""
    env = _clean_env(source)
    proc = subprocess.Popen(
        ["./scripts/demo", "--port", "0", "--log-level", "warning"],
        cwd=source,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        lines = read_stdout_lines(proc, 2, within=300)
        assert len(lines) == 2, (lines, proc.poll())
        assert lines[0] == "fullduplex: installing into .venv (log: .venv/install.log)"
        match = re.search(r"^fullduplex demo on http://127\.0\.0\.1:(\d+)/", lines[1])
        assert match, lines
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/", timeout=5) as r:
            assert r.status == 200
    finally:
        stop_process(proc, signal.SIGINT)
    assert proc.returncode == 0
    assert (source / ".venv" / "install.log").is_file()
