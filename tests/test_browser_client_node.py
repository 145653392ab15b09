"""Runs the browser client's own unit tests (tests/node/*.test.mjs) with Node's test runner."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"


@pytest.mark.node
def test_fullduplex_js_unit_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (scripts/test installs it with apt-get)")
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        pytest.fail("tests/node/node_modules/ws is missing: run `npm install` in tests/node")
    result = subprocess.run(
        [node, "--test", "--test-force-exit", *sorted(str(p) for p in NODE_DIR.glob("*.test.mjs"))],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = "\n".join(line for line in result.stdout.splitlines() if line.startswith("# "))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in summary and "# pass 0" not in summary, summary
    # The transport fallback's state machine ran too, against its in-test HTTP server.
    assert re.search(r"(?m)^ok \d+ - HTTP fallback$", result.stdout), result.stdout[-2000:]
