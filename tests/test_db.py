"""The database layer against real built-in servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgvec_course import db, server


def test_numpy_vector_round_trip(conn):
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
    vec = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    conn.execute("INSERT INTO items VALUES (1, %s)", (vec,))
    got = conn.execute("SELECT embedding FROM items").fetchone()[0].to_numpy()
    assert got.dtype == np.float32
    assert got.tolist() == [0.5, -1.25, 3.0]


def test_vectors_travel_binary(conn):
    cur = conn.cursor(binary=True)
    cur.execute("SELECT %b::vector(2)", (np.array([1.0, 2.0], dtype=np.float32),))
    assert cur.pgresult.fformat(0) == 1
    assert cur.fetchone()[0].to_list() == [1.0, 2.0]


def test_pgvector_is_recent_enough(conn):
    assert db._version(db.pgvector_version(conn)) >= (0, 8)
    # The built-in server is PostgreSQL 18; pgvector 0.8 itself supports 13 and newer.
    oldest = 130000 if os.environ.get("DATABASE_URL") else 180000
    assert conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0] >= oldest


def test_the_server_has_room_for_index_builds(conn):
    mem = conn.execute("SHOW maintenance_work_mem").fetchone()[0]
    if not os.environ.get("DATABASE_URL"):
        assert mem == "512MB"  # the built-in server is configured by the course
    else:
        have = conn.execute("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))").fetchone()[0]
        assert have >= server.NEEDED_MAINTENANCE_MB * 1024 * 1024, \
            f"maintenance_work_mem is {mem}: run 'pgvec-course doctor' for the fix"


def _load_random(conn, n: int, dim: int) -> None:
    rng = np.random.default_rng(7)
    data = rng.random((n, dim), dtype=np.float32)
    conn.execute(f"CREATE TABLE big (id int PRIMARY KEY, embedding vector({dim}))")
    with conn.cursor().copy("COPY big (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "vector"])
        for i, row in enumerate(data):
            copy.write_row((i, row))


def test_ivfflat_and_hnsw_build_on_10000_x_1536(conn):
    _load_random(conn, 10_000, 1536)
    assert conn.execute("SELECT count(DISTINCT embedding::text) FROM big").fetchone()[0] == 10_000
    conn.execute("CREATE INDEX big_ivf ON big USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100)")
    conn.execute("CREATE INDEX big_hnsw ON big USING hnsw (embedding vector_cosine_ops)")
    names = [r[0] for r in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'big' ORDER BY 1").fetchall()]
    assert names == ["big_hnsw", "big_ivf", "big_pkey"]


def test_database_url_is_honoured(make_database, monkeypatch):
    other = make_database("pgvec_elsewhere")
    monkeypatch.setenv("DATABASE_URL", other.url)
    assert db.database_url() == other.url
    with db.connect() as conn:
        where = conn.execute("SELECT current_database(), current_schema()").fetchone()
        assert where == (other.database, other.schema or "public")
        assert db._version(db.pgvector_version(conn)) >= (0, 8)


def test_unreachable_url_says_what_to_do_without_the_password(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://alice:Sup3rSecret@127.0.0.1:1/shop")
    with pytest.raises(db.CourseDatabaseError) as err:
        db.connect()
    assert str(err.value) == (
        "cannot reach Postgres at 127.0.0.1:1/shop (connection refused); start it with "
        "'docker compose up -d', or unset DATABASE_URL to use the built-in server"
    )
    assert "Sup3rSecret" not in repr(err.value) and err.value.__cause__ is None


def test_wrong_password_is_never_echoed(test_db_url):
    with pytest.raises(db.CourseDatabaseError) as err:
        db.connect("postgresql://nobody:Hunter2pw@127.0.0.1:1/x")
    assert "Hunter2pw" not in str(err.value)
    assert str(err.value).startswith("cannot reach Postgres at 127.0.0.1:1/x (connection refused); ")


def test_redact_drops_passwords():
    assert db.redact("postgresql://u:pw@db.example:6543/app") == "db.example:6543/app"
    assert db.redact("host=/tmp/s dbname=x password=pw") == "/tmp/s/x"
    assert db.redact("not a url ===") == "the DATABASE_URL given (it could not be parsed)"


def test_role_that_cannot_create_the_extension_gets_told_why(test_db_url):
    with db.connect() as admin:
        admin.execute("DROP DATABASE IF EXISTS pgvec_noext WITH (FORCE)")
        admin.execute("DROP ROLE IF EXISTS pgvec_learner")
        # A SCRAM verifier, not the password: a server that logs DDL must not log it.
        verifier = admin.pgconn.encrypt_password(b"x", b"pgvec_learner", b"scram-sha-256").decode()
        admin.execute(sql.SQL("CREATE ROLE pgvec_learner LOGIN PASSWORD {}").format(sql.Literal(verifier)))
        admin.execute("CREATE DATABASE pgvec_noext")
        # CREATE on the database, as its owner would have; a managed role cannot give a
        # database away (PostgreSQL 16 asks to be able to SET ROLE to the new owner).
        admin.execute("GRANT CREATE ON DATABASE pgvec_noext TO pgvec_learner")
    url = psycopg.conninfo.make_conninfo(test_db_url, dbname="pgvec_noext", user="pgvec_learner",
                                         password="x", options="")
    try:
        with psycopg.connect(make_conninfo(db.database_url(), dbname="pgvec_noext"), autocommit=True) as c:
            try:
                c.execute("DROP EXTENSION IF EXISTS vector")  # present when template1 has it
            except psycopg.errors.InsufficientPrivilege:
                pytest.skip("template1 has pgvector, installed by another role: no database without it")
        with pytest.raises(db.CourseDatabaseError) as err:
            db.connect(url)
        assert str(err.value).startswith("this role may not create the vector extension in ")
        assert str(err.value).endswith(
            "/pgvec_noext; ask the database owner to run 'CREATE EXTENSION vector;' once in that "
            "database, or use the built-in server")
    finally:
        with db.connect() as admin:
            admin.execute("DROP DATABASE pgvec_noext WITH (FORCE)")
            admin.execute("DROP ROLE pgvec_learner")


def test_prepare_false_turns_off_prepared_statements(test_db_url):
    with db.connect(test_db_url, prepare=False) as conn:
        assert conn.prepare_threshold is None
    with db.connect(test_db_url) as conn:
        assert conn.prepare_threshold == 5


def test_restart_keeps_data(own_server):
    with db.connect() as conn:
        conn.execute("CREATE TABLE kept (v vector(2))")
        conn.execute("INSERT INTO kept VALUES ('[1,2]')")
    first = db.server_pid()
    assert db.stop_server() is True
    assert db.server_pid() is None
    assert db.stop_server() is False
    with db.connect() as conn:
        assert conn.execute("SELECT v::text FROM kept").fetchone()[0] == "[1,2]"
    assert db.server_pid() not in (None, first)


def test_connect_after_kill_9_brings_the_server_back(own_server):
    with db.connect() as conn:
        conn.execute("CREATE TABLE crash (id int)")
        conn.execute("INSERT INTO crash SELECT generate_series(1, 1000)")
    pid = db.server_pid()
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if db.server_pid() is None:
            break
        time.sleep(0.1)
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM crash").fetchone()[0] == 1000
    assert db.server_pid() not in (None, pid)


def test_two_concurrent_connects_share_one_server(own_server):
    script = (
        "from pgvec_course import db; c = db.connect(); "
        "print(c.execute('SELECT pg_postmaster_start_time()').fetchone()[0].isoformat())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] != ""
    postmasters = subprocess.run(["pgrep", "-f", f"postgres -D {own_server}"],
                                 capture_output=True, text=True).stdout.split()
    assert len(postmasters) <= 1


def test_cli_db_url_works_with_psql_and_psycopg(own_server):
    out = subprocess.run([sys.executable, "-m", "pgvec_course.cli", "db", "url"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.startswith("postgresql://postgres:@/pgvec_course?host=")
    psql = subprocess.run([str(db.psql_path()), out, "-Atc", "SELECT extversion FROM pg_extension "
                           "WHERE extname = 'vector'"], capture_output=True, text=True, check=True)
    assert psql.stdout.strip() == "0.8.5"
    with psycopg.connect(out) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "pgvec_course"


def test_cli_status_start_stop(own_server):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "pgvec_course.cli", *args],
                              capture_output=True, text=True)
    assert run("db", "status").stdout == (
        f"built-in Postgres stopped ('pgvec-course db start' starts it), data in {own_server}\n")
    started = run("db", "start")
    assert started.returncode == 0 and started.stdout.startswith("built-in Postgres running (pid ")
    assert run("db", "stop").stdout == "stopped\n"


def test_cli_leaves_an_external_server_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql://a:TopSecret@127.0.0.1:1/x")
    monkeypatch.setenv("PGVEC_DATA_DIR", str(tmp_path / "pgdata"))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pgvec_course.cli", *args],
                              capture_output=True, text=True)
    start, stop = run("db", "start"), run("db", "stop")
    assert (start.returncode, start.stdout, start.stderr) == (1, "", (
        "error: cannot reach Postgres at 127.0.0.1:1/x (connection refused); start it with "
        "'docker compose up -d', or unset DATABASE_URL to use the built-in server\n"))
    assert (stop.returncode, stop.stderr) == (0, "")
    assert stop.stdout == (
        "the built-in server was not running\n"
        "DATABASE_URL's server (127.0.0.1:1/x) is not managed here: stop it where it runs "
        "('docker compose down' for docker-compose.yml)\n")
    assert not (tmp_path / "pgdata" / "PG_VERSION").exists()
    assert "TopSecret" not in start.stderr + stop.stdout


def test_tutorial_sql_runs_unchanged(conn):
    # The statements the source tutorial teaches, as a learner would type them.
    conn.execute("""CREATE TABLE documents (
        id SERIAL PRIMARY KEY, title TEXT NOT NULL, content TEXT NOT NULL, category TEXT,
        created_at TIMESTAMPTZ DEFAULT now(), embedding vector(1536))""")
    rng = np.random.default_rng(1)
    for i in range(20):
        conn.execute("INSERT INTO documents (title, content, category, embedding) VALUES (%s, %s, %s, %s)",
                     (f"t{i}", f"neural networks text {i}", "ml", rng.random(1536, dtype=np.float32)))
    q = rng.random(1536, dtype=np.float32)
    for op in ("<=>", "<->", "<#>"):
        rows = conn.execute(f"SELECT title, embedding {op} %s AS d FROM documents ORDER BY embedding {op} %s "
                            "LIMIT 5", (q, q)).fetchall()
        assert len(rows) == 5 and [r[1] for r in rows] == sorted(r[1] for r in rows)
    conn.execute("CREATE INDEX ON documents USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100)")
    conn.execute("SET ivfflat.probes = 10")
    conn.execute("CREATE INDEX ON documents USING hnsw (embedding vector_cosine_ops) "
                 "WITH (m = 16, ef_construction = 64)")
    conn.execute("SET hnsw.ef_search = 40")
    conn.execute("ALTER TABLE documents ADD COLUMN tsv tsvector GENERATED ALWAYS AS "
                 "(to_tsvector('english', title || ' ' || content)) STORED")
    conn.execute("CREATE INDEX ON documents USING gin(tsv)")
    hits = conn.execute("SELECT count(*) FROM documents WHERE tsv @@ plainto_tsquery('english', 'network')")
    assert hits.fetchone()[0] == 20


PG15 = "/usr/lib/postgresql/15/bin"


@pytest.fixture
def server_without_pgvector():
    """A real PostgreSQL with no pgvector: Debian's postgresql-15, in a throwaway cluster."""
    import pwd
    import shutil

    if not os.path.exists(f"{PG15}/postgres") or os.path.exists(
            "/usr/share/postgresql/15/extension/vector.control"):
        pytest.skip("needs Debian's postgresql-15 without pgvector (apt-get install postgresql-15)")
    user = "postgres"
    try:
        pwd.getpwnam(user)
    except KeyError:
        pytest.skip("needs the 'postgres' OS user that Debian's postgresql package creates")
    import tempfile
    from pathlib import Path

    # Not pytest's tmp_path: its parents are private to root, and postgres runs as its own user.
    tmp_path = Path(tempfile.mkdtemp(prefix="pgvec-pg15-"))
    data, sock = tmp_path / "pg15", tmp_path / "sock"
    sock.mkdir()
    shutil.chown(tmp_path, user)
    shutil.chown(sock, user)
    as_pg = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, f"{PG15}/initdb", "-D", str(data), "-U", "admin", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_pg, f"{PG15}/pg_ctl", "-D", str(data), "-w", "-l", str(tmp_path / "log"),
                    "-o", f"-h '' -k {sock} -p 5999", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://admin:NotThePassword@/postgres?host={sock}&port=5999"
    finally:
        subprocess.run([*as_pg, f"{PG15}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_server_without_pgvector_says_how_to_get_it(server_without_pgvector, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", server_without_pgvector)
    with pytest.raises(db.CourseDatabaseError) as err:
        db.connect()
    sock = server_without_pgvector.split("host=")[1].split("&")[0]
    assert str(err.value) == (
        f"pgvector is not installed on the server at {sock}/postgres; use the pgvector/pgvector Docker image "
        "('docker compose up -d'), install the extension on that server "
        "(https://github.com/pgvector/pgvector#installation), or unset DATABASE_URL"
    )
    assert "NotThePassword" not in str(err.value)


def test_only_the_servers_owner_may_use_its_socket(tmp_path, monkeypatch):
    """On a shared machine (a JupyterHub, a lab server) no other OS user may log in to a learner's server."""
    import pwd
    import shutil

    from psycopg.conninfo import conninfo_to_dict

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("acting as a second OS user needs root and setpriv (util-linux); CI runs it as root")
    # A data folder too deep for a socket path: the socket then lives in a shared runtime folder.
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "pgdata"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PGVEC_DATA_DIR", str(deep))
    try:
        host = conninfo_to_dict(db.start_server())["host"]
        assert not host.startswith(str(tmp_path))

        def psql_as(uid: int) -> subprocess.CompletedProcess:
            return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                   str(db.psql_path()), "-h", host, "-U", "postgres", "-d", "pgvec_course",
                                   "-Atc", "SELECT 1"], capture_output=True, text=True, timeout=30)

        other = psql_as(pwd.getpwnam("nobody").pw_uid)
        assert other.returncode == 2
        assert other.stderr.splitlines()[0] == (
            f'psql: error: connection to server on socket "{host}/.s.PGSQL.5432" failed: Permission denied')
        owner = psql_as(os.stat(deep).st_uid)  # the server's own user
        assert (owner.returncode, owner.stdout) == (0, "1\n")
    finally:
        db.stop_server()
