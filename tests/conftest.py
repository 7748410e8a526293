"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import BrowserUnavailable, launch
from tests.pg import PostgresError, PostgresServer

_DATABASES = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session, started the first time a test asks for it.

    If it cannot start, the test is skipped with the reason, except under CI (``$CI`` set), where it fails:
    there the PostgreSQL tests must run."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresError as e:
        message = f"cannot start a PostgreSQL server for the tests: {e}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database of its own for this test (``postgresql://autoscout@127.0.0.1:PORT/DB``);
    the database is dropped afterwards, closing any connection left open."""
    name = f"autoscout_test_{next(_DATABASES)}_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (a Playwright ``Browser``, see ``tests/browser.py``) for a test module, closed after
    it (so Playwright's event loop does not outlive the browser tests).

    If Chromium or Playwright is missing, or Chromium does not start, the test is skipped with the reason,
    except under CI (``$CI`` set), where it fails: there the browser tests must run."""
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(launch())
        except BrowserUnavailable as e:
            message = f"cannot drive a headless Chromium for the tests: {e}"
            if os.environ.get("CI"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        yield handle
