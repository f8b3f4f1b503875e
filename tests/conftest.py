"""Shared fixtures: every test talks to a real Postgres with pgvector."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
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

from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from pgvec_course import db, server  # noqa: E402

# One database per test run, so two runs on one server (two terminals, two engineers) never
# drop each other's tables.
TEST_DB = f"pgvec_test_{os.getpid()}"
_NOTES: list[str] = []  # shown at the end of the run: where tests ran instead, and why


@dataclass(frozen=True)
class Scratch:
    """A database of the tests' own, or a schema of their own when the role cannot have one."""

    url: str  # search_path names the schema when there is one
    database: str
    schema: str | None


@pytest.fixture(scope="session")
def make_database():
    """Return a function that makes a Scratch with pgvector in it, all dropped when the run ends.

    On a server where new databases get no pgvector (a managed role; see the README) the
    scratch is a schema in the course database, reached through a URL that sets search_path.
    """
    made: list[Scratch] = []

    def make(name: str) -> Scratch:
        server.drop_database(name)
        try:
            scratch = Scratch(server.create_database(name), name, None)
        except db.CourseDatabaseError as exc:
            course = db.database_url()
            with db.connect(course) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
            scratch = Scratch(make_conninfo(course, options=f"-c search_path={name},public"),
                              conninfo_to_dict(course)["dbname"], name)
            note = f"scratch databases are schemas in {scratch.database}: {exc}"
            if note not in _NOTES:
                _NOTES.append(note)
        made.append(scratch)
        return scratch

    yield make
    for scratch in made:
        if scratch.schema is None:
            server.drop_database(scratch.database)
        else:
            with db.connect() as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(scratch.schema))
                conn.execute(drop)


@pytest.fixture(scope="session")
def test_db_url(make_database):
    """The URL of this test run's own database (or schema), dropped afterwards."""
    return make_database(TEST_DB).url


@pytest.fixture
def conn(test_db_url):
    """A connection whose search_path starts with a schema of this test's own."""
    schema = "t_" + uuid.uuid4().hex[:12]
    with db.connect(test_db_url) as c:
        c.execute(f"CREATE SCHEMA {schema}")
        c.execute(f"SET search_path = {schema}, public")
        yield c
        c.rollback()
        c.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def compose_server():
    """A second server like docker-compose.yml's: PostgreSQL 18, role `course` a superuser, a password."""
    import servers

    cluster = servers.start("compose")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def managed_server():
    """A second server like a managed one: PostgreSQL 16, role `learner` no superuser, 64 MB for builds."""
    import servers

    cluster = servers.start("managed")
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_managed_server():
    """A managed-like server of this test's own, to change as an admin would."""
    import servers

    cluster = servers.start("managed")
    yield cluster
    cluster.stop()


# Tests that start servers of their own ignore DATABASE_URL: a second-server run leaves them out.
_OWN_SERVERS = {"own_server", "compose_server", "managed_server", "fresh_managed_server",
                "server_without_pgvector"}


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PGVEC_TEST_SERVER"):
        return
    keep = [item for item in items if not _OWN_SERVERS & set(getattr(item, "fixturenames", ()))]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


def pytest_terminal_summary(terminalreporter):
    for note in _NOTES:
        terminalreporter.write_line(f"note: {note}")


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
