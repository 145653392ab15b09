"""The documentation site builds with MkDocs in strict mode (every warning an error:
broken links, missing anchors, docstrings mkdocstrings cannot render), and its API
reference covers every public name."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"

# module -> where its public names must appear as `::: path.Name` directives
PUBLIC = [
    "fullduplex",
    "fullduplex.server",
    "fullduplex.hub",
    "fullduplex.client",
    "fullduplex.sync",
    "fullduplex.testing",
    "fullduplex.settings",
]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    # the reference pages really hold the generated docs, not just their headings
    app_page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    assert "fullduplex.server.app.App" in app_page
    assert "Routes plus settings" in app_page  # App's docstring
    for page in ("tutorial", "howto/testing", "howto/authentication", "topics/rooms"):
        assert (site / page / "index.html").is_file(), page


def test_reference_lists_every_public_name() -> None:
    documented: set[str] = set()
    for page in REFERENCE.glob("*.md"):
        documented.update(re.findall(r"^::: \S*?(\w+)$", page.read_text(), re.M))
    missing = []
    for module_name in PUBLIC:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if name != "__version__" and name not in documented:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names missing from docs/reference: {missing}"
