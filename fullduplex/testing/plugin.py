"""pytest fixtures for testing an App in-process.

Enable them in your ``conftest.py`` and define an ``app`` fixture::

    pytest_plugins = ["fullduplex.testing.plugin"]

    @pytest.fixture
    def app():
        return make_app()

Then a test asks for ``fullduplex_client``: a started
:class:`~fullduplex.testing.TestClient` for that app, shut down after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..server.app import App
from . import TestClient

__all__ = ["fullduplex_client"]


@pytest.fixture
def fullduplex_client(app: App) -> Iterator[TestClient]:
    """A :class:`~fullduplex.testing.TestClient` for the ``app`` fixture, entered for
    the test and shut down after it."""
    with TestClient(app) as client:
        yield client
