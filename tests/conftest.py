"""Fixtures for the tests that need a PostgreSQL server (see postgres_server.py), and the shared ones of
tests/support."""

from __future__ import annotations

import pytest
from support.postgres_server import PostgresServer, start_server

pytest_plugins = ["support.zygote"]


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    pytest.importorskip("psycopg", reason="the [postgres] extra (psycopg) is not installed")
    try:
        server = start_server()
    except RuntimeError as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the test server."""
    return postgres_server.new_database()
