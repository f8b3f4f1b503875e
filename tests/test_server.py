"""What doctor finds on the built-in server, a docker-compose-like one and a managed-like one."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from pgvec_course import server


def _doctor(url: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url:
        env["DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "pgvec_course.cli", "doctor"], env=env,
                          capture_output=True, text=True)


def _server_lines(out: str) -> list[str]:
    lines = out.splitlines()
    first = next(n for n, line in enumerate(lines) if "Postgres " in line)
    last = next(n for n, line in enumerate(lines) if "maintenance_work_mem" in line)
    return lines[first:last + 1]


def test_the_course_needs_82_mb_for_its_largest_index_builds():
    assert server.NEEDED_MAINTENANCE_MB == 82


def test_doctor_on_the_built_in_server():
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL is set: the built-in server is not used")
    out = _doctor(None)
    assert out.returncode == 0, out.stdout
    assert _server_lines(out.stdout) == [
        "[ok]   Postgres 18.4 reachable (the built-in server), role postgres",
        "[ok]   pgvector extension 0.8.5 in the database",
        "[ok]   role postgres is a superuser: every part of the course works here",
        "[ok]   maintenance_work_mem 512 MB: enough for the course's index builds (up to 82 MB)",
    ]


def test_doctor_on_a_compose_like_server(compose_server):
    out = _doctor(compose_server.url)
    where = f"127.0.0.1:{compose_server.port}/pgvec_course"
    assert out.returncode == 0, out.stdout
    assert _server_lines(out.stdout) == [
        f"[ok]   Postgres 18.4 reachable ({where}, from DATABASE_URL), role course",
        "[ok]   pgvector extension 0.8.5 in the database",
        "[ok]   role course is a superuser: every part of the course works here",
        "[ok]   maintenance_work_mem 512 MB: enough for the course's index builds (up to 82 MB)",
    ]
    assert compose_server.passwords["course"] not in out.stdout + out.stderr


def test_doctor_on_a_managed_like_server_says_what_will_not_work(managed_server):
    out = _doctor(managed_server.url)
    where = f"127.0.0.1:{managed_server.port}/pgvec_course"
    assert out.returncode == 1, out.stdout
    assert _server_lines(out.stdout) == [
        f"[ok]   Postgres 16.14 reachable ({where}, from DATABASE_URL), role learner",
        "[ok]   pgvector extension 0.8.5 in the database",
        "[note] role learner is not a superuser (it has CREATEDB and CREATEROLE): the lessons and exercises "
        "work in its database",
        f"[note] new databases on {where} get no pgvector: role learner may not create the extension "
        "(vector is not a trusted extension) and template1 does not have it: the tests and 'pgvec-course "
        "bench' use this database instead; an admin fixes that once, in database template1: CREATE "
        "EXTENSION IF NOT EXISTS vector;",
        "[FAIL] maintenance_work_mem is 64 MB: the index builds on 10,000 x 1536 vectors in lesson 5 and "
        "exercise 2 need up to 82 MB (IVFFlat fails, HNSW crawls); run once: ALTER ROLE CURRENT_USER SET "
        "maintenance_work_mem = '256MB'; and reconnect",
    ]
    for password in managed_server.passwords.values():
        assert password not in out.stdout + out.stderr


def test_the_readme_fixes_for_a_managed_role_work(fresh_managed_server):
    cluster = fresh_managed_server  # the admin's one line (README) and the learner's (doctor)
    before = server.inspect(cluster.url)
    assert (before.builtin, before.role, before.superuser, before.createdb, before.createrole) == \
        (False, "learner", False, True, True)
    assert (before.maintenance_work_mem_mb, before.vector_in_new_databases) == (64, False)
    with pytest.raises(server.db.CourseDatabaseError, match="^new databases on .* get no pgvector: "):
        server.create_database("pgvec_nothing_here", url=cluster.url)
    with psycopg.connect(cluster.role_url(cluster.admin, "template1"), autocommit=True) as conn:
        conn.execute(server.TEMPLATE_FIX)
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute("ALTER ROLE CURRENT_USER SET maintenance_work_mem = '256MB'")
    after = server.inspect(cluster.url)
    assert (after.maintenance_work_mem_mb, after.vector_in_new_databases, after.why_not) == \
        (256, True, "")
    assert server.report(after)[3] == (
        True, "new databases get pgvector: the tests and the benchmark get databases of their own")
    url = server.create_database("pgvec_now_it_works", url=cluster.url)
    with server.db.connect(url) as conn:
        assert server.db.pgvector_version(conn) == "0.8.5"
    server.drop_database("pgvec_now_it_works", url=cluster.url)
    with psycopg.connect(cluster.admin_url) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pgvec\\_%' ORDER BY 1")
        assert [r[0] for r in left] == ["pgvec_course"]


def test_doctor_fails_when_the_server_is_unreachable_and_keeps_the_password():
    out = _doctor("postgresql://learner:Pa55-not-shown@127.0.0.1:1/pgvec_course")
    assert out.returncode == 1
    assert "[FAIL] cannot reach Postgres at 127.0.0.1:1/pgvec_course (connection refused); start it with " \
           "'docker compose up -d', or unset DATABASE_URL to use the built-in server\n" in out.stdout
    assert "Pa55-not-shown" not in out.stdout + out.stderr


def test_a_password_in_plain_text_is_caught_in_the_server_log(fresh_managed_server):
    import time

    import servers

    cluster = fresh_managed_server  # it logs every CREATE and ALTER, as many managed services do
    assert cluster.leaks() == []
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        verifier = servers.scram_verifier(conn, "careful", "s3cret-one")
        conn.execute(psycopg.sql.SQL("CREATE ROLE careful PASSWORD {}").format(psycopg.sql.Literal(verifier)))
        conn.execute("CREATE ROLE careless PASSWORD 's3cret-two'")
    for _ in range(50):
        if cluster.leaks():
            break
        time.sleep(0.1)
    lines = cluster.log.read_text().splitlines()
    assert [lines[n - 1].split("statement: ")[1] for n in cluster.leaks()] == [
        "CREATE ROLE careless PASSWORD 's3cret-two'"]
    assert "s3cret-one" not in cluster.log.read_text()
