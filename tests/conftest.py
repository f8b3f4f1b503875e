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

# One database per test run, so two runs on one server (two terminals, two engineers) never
# drop each other's tables.
TEST_DB = f"pgvec_test_{os.getpid()}"


@pytest.fixture(scope="session")
def test_db_url():
    """A freshly created database for this test run, on the course's server; dropped afterwards."""
    with db.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEST_DB}")
    yield db.database_url()
    with db.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")


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


class TinyEmbedder:
    """A deterministic 16-dim bag-of-words embedder for testing database plumbing quickly.

    Not a mock of the database: rows really go through Postgres. Texts sharing words get
    nearby vectors, so rankings are predictable. At least one test per feature uses the
    real local model too.
    """

    name = "tiny-test-embedder"
    dim = 16

    def embed(self, texts):
        import hashlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                digest = hashlib.sha256(word.encode()).digest()
                out[row, digest[0] % self.dim] += 1.0 + digest[1] / 255
            out[row] /= np.linalg.norm(out[row]) or 1.0
        return out

    def embed_one(self, text):
        return self.embed([text])[0]


@pytest.fixture
def tiny_embedder():
    """A fast deterministic embedder (name, dim, embed, embed_one) for store/search plumbing tests."""
    return TinyEmbedder()
