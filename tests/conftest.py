"""Suite-wide settings.

``scripts/test`` sets ``FULLDUPLEX_STRICT_SKIPS=1``: there every dependency is
installed, so a test that skips itself (a missing program, package or extension) is a
failure, not a silent gap.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

STRICT_SKIPS = os.environ.get("FULLDUPLEX_STRICT_SKIPS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, which scripts/test does not allow: {report.longrepr}"
