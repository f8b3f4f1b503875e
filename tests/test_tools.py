"""The tools learners already use, pointed at the course database: SQLAlchemy URLs, scratch databases,
pg_dump/pg_restore round trips (and the extension trap), Alembic, and index-build watching."""

from __future__ import annotations

import os

import numpy as np
import psycopg
import pytest

from pgvec_course import tools
from pgvec_course.index_build import watch_index_build
from pgvec_course.store import copy_vectors

SCRATCH = f"pgvec_tools_test_{os.getpid()}"


@pytest.fixture
def scratch():
    names = [f"{SCRATCH}_a", f"{SCRATCH}_b"]
    yield names
    for name in names:
        tools.drop_database(name)


def test_sqlalchemy_url_reaches_the_same_database():
    from sqlalchemy import create_engine, text

    url = tools.sqlalchemy_url()
    assert url.drivername == "postgresql+psycopg" and url.database == "pgvec_course"
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == "pgvec_course"
    engine.dispose()
    assert tools.sqlalchemy_url(dbname="other", driver="psycopg2").render_as_string().startswith(
        "postgresql+psycopg2://")


def test_a_table_dumped_alone_needs_the_extension_in_the_new_database(scratch, tmp_path):
    source_name, target_name = scratch
    source = tools.scratch_database(source_name, extension=True)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[4,5,6]')")
        conn.execute("CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_cosine_ops)")
    dump = tmp_path / "items.dump"
    made = tools.run_tool("pg_dump", "--format=custom", "--table=items", f"--file={dump}", source)
    assert made.ok and dump.stat().st_size > 0
    assert made.command == f"pg_dump --format=custom --table=items --file={dump} <database {source_name}>"

    target = tools.scratch_database(target_name)
    failed = tools.run_tool("pg_restore", f"--dbname={target}", dump)
    assert failed.command == f"pg_restore --dbname=<database {target_name}> {dump}"
    assert failed.returncode == 1
    assert 'ERROR:  type "public.vector" does not exist' in failed.stderr
    assert "warning: errors ignored on restore: 5" in failed.stderr

    target = tools.scratch_database(target_name)  # start again from an empty database
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    restored = tools.run_tool("pg_restore", f"--dbname={target}", dump)
    assert restored.ok, restored.stderr
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT id, embedding::text FROM items ORDER BY id").fetchall() == [
            (1, "[1,2,3]"), (2, "[4,5,6]")]
        assert conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'items' ORDER BY 1"
                            ).fetchall() == [("items_hnsw",), ("items_pkey",)]


def test_dumping_with_the_extension_restores_into_an_empty_database(scratch, tmp_path):
    source_name, target_name = scratch
    source = tools.scratch_database(source_name, extension=True)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(2))")
        conn.execute("INSERT INTO items VALUES (1, '[0.5,-1]')")
    dump = tmp_path / "items.dump"
    dumped = tools.run_tool("pg_dump", "-Fc", "--table=items", "--extension=vector", f"--file={dump}", source)
    assert dumped.ok
    target = tools.scratch_database(target_name)
    assert tools.run_tool("pg_restore", f"--dbname={target}", dump).ok
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT embedding::text FROM items").fetchone()[0] == "[0.5,-1]"


def test_a_crashing_python_tool_shows_its_exception_not_its_stack(tmp_path):
    ran = tools.run_tool("alembic", "-c", tmp_path / "missing.ini", "current", cwd=tmp_path)
    assert ran.returncode != 0
    text = str(ran)
    assert text.startswith(f"$ alembic -c {tmp_path / 'missing.ini'} current\n"
                           f"exit code {ran.returncode} after ")
    assert "File \"" not in text


def test_readable_output_keeps_the_exception_and_its_sql():
    output = ("INFO  running\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
              "    boom()\nsqlalchemy.exc.ProgrammingError: (psycopg.errors.UndefinedObject) type \"vector\" "
              "does not exist\n[SQL: ALTER TABLE t ADD COLUMN e VECTOR(3)]\n"
              "(Background on this error at: x)\n")
    assert tools._readable(output) == [
        "INFO  running",
        "sqlalchemy.exc.ProgrammingError: (psycopg.errors.UndefinedObject) type \"vector\" does not exist",
        "[SQL: ALTER TABLE t ADD COLUMN e VECTOR(3)]",
    ]


def test_unknown_tools_are_refused():
    with pytest.raises(ValueError, match="^unknown tool 'pg_ctl'; use one of pg_dump, pg_restore, psql$"):
        tools.pg_tool("pg_ctl")


def _items(conn, n=6000, dim=48):
    conn.execute(f"CREATE TABLE items (id bigserial PRIMARY KEY, embedding vector({dim}))")
    copy_vectors(conn, "items", np.random.default_rng(0).standard_normal((n, dim)))
    return conn.execute("SELECT current_schema()").fetchone()[0]


def test_a_plain_build_blocks_writes_and_a_concurrent_one_does_not(conn, test_db_url):
    schema = _items(conn)
    dbname = conn.info.dbname
    write = f"INSERT INTO {schema}.items (embedding) SELECT embedding FROM {schema}.items WHERE id = 1"
    plain = watch_index_build(
        f"CREATE INDEX items_plain ON {schema}.items USING hnsw (embedding vector_l2_ops)",
        dbname=dbname, writes=write)
    assert plain.error is None and plain.write_error is None
    # The writer waited for the build's lock: at most a couple of writes, the last one as long as the build.
    assert plain.writes <= 2 and plain.slowest_write_ms >= 0.5 * 1000 * plain.seconds
    conn.execute(f"DROP INDEX {schema}.items_plain")
    concurrent = watch_index_build(
        f"CREATE INDEX CONCURRENTLY items_conc ON {schema}.items USING hnsw (embedding vector_l2_ops)",
        dbname=dbname, writes=write)
    assert concurrent.error is None and concurrent.writes > plain.writes
    assert concurrent.slowest_write_ms < 1000 * concurrent.seconds
    phases = [p for p, _, _ in concurrent.phases()]
    assert "building index: loading tuples" in phases
    valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass",
                         (f"{schema}.items_conc",)).fetchone()[0]
    assert valid
    # Every row written during the build is in the table (and so in the index after validation).
    rows = conn.execute(f"SELECT count(*) FROM {schema}.items").fetchone()[0]
    assert rows == 6000 + plain.writes + concurrent.writes


def test_a_failing_build_is_reported(conn):
    schema = _items(conn, n=10)
    build = watch_index_build(
        f"CREATE INDEX CONCURRENTLY x ON {schema}.items USING hnsw (embedding vector_l2_ops) WITH (m = 1)",
        dbname=conn.info.dbname)
    assert build.error == 'value 1 out of bounds for option "m"'
    assert str(build).splitlines()[-1].startswith('build failed: value 1 out of bounds for option "m"')


def test_connection_strings_are_shown_without_passwords():
    url = "postgresql://bob:s3cret@db.example.com:5433/shop"
    assert tools._shown(url) == "<database shop on db.example.com:5433>"
    conninfo = "--dbname=user=bob password=s3cret dbname=shop host=/tmp/sock"
    assert tools._shown(conninfo) == "--dbname=<database shop>"
    assert tools._shown("--dbname=postgresql://[bad") == "--dbname=<a connection string>"
    assert tools._shown("--table=items") == "--table=items"


def test_output_paths_inside_the_working_folder_are_shown_relative(tmp_path):
    ran = tools.run_tool("alembic", "init", "migrations", cwd=tmp_path)
    assert ran.ok and "Creating directory migrations ...  done" in ran.stdout
    assert str(tmp_path) not in str(ran)


def test_a_build_that_outgrows_its_memory_says_so(conn):
    schema = _items(conn, n=2000, dim=48)
    build = watch_index_build(f"CREATE INDEX x ON {schema}.items USING hnsw (embedding vector_l2_ops)",
                              dbname=conn.info.dbname, settings={"maintenance_work_mem": "1MB"})
    assert build.error is None
    [notice] = build.notices
    assert notice.startswith("hnsw graph no longer fits into maintenance_work_mem after ")
    assert str(build).splitlines()[-1] == f"notice: {notice}"


def test_whether_the_extension_can_be_created_in_a_new_database(scratch):
    url = tools.scratch_database(scratch[0])
    assert tools.extension_allowed(url) is True  # the built-in server's role is a superuser
    with psycopg.connect(url) as conn:  # and the check left nothing behind
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 0


def test_a_managed_role_may_not_create_the_extension_in_a_new_database(managed_server, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", managed_server.url)
    name = f"pgvec_tools_managed_{os.getpid()}"
    try:
        url = tools.scratch_database(name)  # CREATEDB: the database is made
        assert tools.extension_allowed(url) is False
        assert tools.extension_allowed(managed_server.url) is True  # the admin created it there
    finally:
        tools.drop_database(name)
