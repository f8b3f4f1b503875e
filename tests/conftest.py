"""Shared fixtures: every test talks to a real Postgres with pgvector."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Set before anything starts a server or a kernel, so notebooks executed by nbval inherit
# them: tests get a server of their own (a learner's .pgdata is never touched), run
# offline, and never send a real API key anywhere.
if not os.environ.get("DATABASE_URL"):
    os.environ["PGVEC_DATA_DIR"] = str(ROOT / ".pgdata-test")
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)
os.environ["PGVEC_EMBEDDER"] = "local"

from pgvec_course import db  # noqa: E402

TEST_DB = "pgvec_test"


@pytest.fixture(scope="session")
def test_db_url() -> str:
    """A freshly created database for this test run, on the course's server."""
    with db.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEST_DB}")
    return db.database_url()


@pytest.fixture
def conn(test_db_url):
    """A connection whose search_path starts with a schema of this test's own."""
    schema = "t_" + uuid.uuid4().hex[:12]
    with db.connect(test_db_url, dbname=TEST_DB) as c:
        c.execute(f"CREATE SCHEMA {schema}")
        c.execute(f"SET search_path = {schema}, public")
        yield c
        c.rollback()
        c.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def own_server(tmp_path, monkeypatch):
    """A built-in server in a temporary data folder, stopped afterwards."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PGVEC_DATA_DIR", str(tmp_path / "pgdata"))
    yield tmp_path / "pgdata"
    db.stop_server()
