"""A database and a login role of its own for each submission, on a server that only takes passwords.

The learner's built-in server trusts every local connection, so any notebook could log in as
its superuser. The grader therefore runs a second built-in server (`PGVEC_GRADER_DATA_DIR`) whose
pg_hba.conf asks every connection for a SCRAM password; its superuser password is generated at
first start and kept, mode 0600, in that data folder. Each submission gets a role that is not a
superuser and may create neither databases nor roles, and a database cloned from a template that
already has pgvector; the kernel only ever sees that role's password. With DATABASE_URL set, the
instructor's server is used instead and the URL must name a role that can create roles and
databases. The kernel still runs as the grader's OS user: only a container or VM isolates files
and processes.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .. import db
from ..config import settings

PREFIX = "pvc_sub_"  # every submission's role and database; swept when their grader is gone
TEMPLATE = "pvc_grader_template"
PASSWORD_FILE = "grader-password"
HBA = (
    "# Written by pgvec-course's grader: every connection needs a password (SCRAM).\n"
    "local all all scram-sha-256\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
)
# An HNSW or IVFFlat build on 10,000 x 1536 vectors needs about 80 MB; leave headroom.
ROLE_SETTINGS = {
    "lock_timeout": "10s",
    "idle_in_transaction_session_timeout": "60s",
    "temp_file_limit": "1GB",
    "maintenance_work_mem": "256MB",
    "work_mem": "64MB",
}
CONNECTION_LIMIT = 10  # a runaway loop of connect() must not use up the shared server's slots


@dataclass(frozen=True)
class SubmissionDatabase:
    """One submission's database and role; `url` is what its kernel gets as DATABASE_URL."""

    name: str
    url: str


def admin_url() -> str:
    """Return a superuser URL for the grading server: DATABASE_URL's, or the grader's own built-in one."""
    return settings().database_url or _builtin_admin_url()


def _builtin_admin_url() -> str:
    data_dir = settings().grader_data_dir.resolve()
    server = db._server(start=False, data_dir=data_dir)
    password_file = data_dir / PASSWORD_FILE
    with server._lock:
        server.ensure_pgdata_inited()
        if not password_file.exists():
            _require_passwords(server, data_dir, password_file)
    db._ensure_running(server, data_dir)
    return make_conninfo(server.get_uri(database="postgres"), password=password_file.read_text().strip())


def _require_passwords(server, data_dir: Path, password_file: Path) -> None:
    info = db._pgserver().utils.PostmasterInfo.read_from_pgdata(data_dir)
    if info is not None and info.is_running():  # a half-finished first start: stop it to change auth
        server._postmaster_info = info
        server._stop()
    password = secrets.token_urlsafe(32)  # URL-safe: no quote can end the SQL literal below
    # Single-user mode sets the password before the server ever listens, so there is no
    # moment when it runs with trust authentication.
    db._pgserver().pgexec.pgexec(
        "postgres", ("--single", "-D", str(data_dir), "postgres"), bin_path=server.bin_path,
        user=server.system_user, input=f"ALTER ROLE postgres PASSWORD '{password}';\n",
    )
    (data_dir / "pg_hba.conf").write_text(HBA)
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")


def prepare(admin: str) -> None:
    """Create the template database with pgvector and close the server's shared databases to roles."""
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE,)).fetchone():
            with suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
                with psycopg.connect(make_conninfo(admin, dbname=TEMPLATE), autocommit=True) as tconn:
                    tconn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                template = sql.Identifier(TEMPLATE)
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(template))
                conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
                             .format(template))
        if not settings().database_url:
            # Our own server: no role but the superuser needs the stock databases. On an
            # instructor's server we leave their databases alone (see the README).
            conn.execute("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC")


def _owner_tag() -> str:
    return f"pgvec-course grader {socket.gethostname()} pid {os.getpid()}"


@contextmanager
def submission_database(admin: str, *, statement_timeout: int = 60) -> Iterator[SubmissionDatabase]:
    """Create a submission's role and database, yield them, and drop both whatever happened."""
    name = PREFIX + secrets.token_hex(6)
    password = secrets.token_hex(24)
    ident = sql.Identifier(name)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            with conn.transaction():  # a role is never seen without its owner tag (see sweep)
                conn.execute(sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    "NOINHERIT CONNECTION LIMIT {} PASSWORD {}"
                ).format(ident, sql.Literal(CONNECTION_LIMIT), sql.Literal(password)))
                conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(ident, sql.Literal(_owner_tag())))
                values = {**ROLE_SETTINGS, "statement_timeout": f"{statement_timeout}s"}
                for setting, value in values.items():
                    conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
                        ident, sql.Identifier(setting), sql.Literal(value)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}").format(
                ident, ident, sql.Identifier(TEMPLATE)))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
        yield SubmissionDatabase(name, role_url(admin, name, password))
    finally:
        drop(admin, name)


def role_url(admin: str, name: str, password: str) -> str:
    """Return a postgresql:// URL for role `name` on database `name` of the admin URL's server."""
    info = {k: v for k, v in conninfo_to_dict(admin).items() if k not in ("user", "password", "dbname")}
    query = f"?{urlencode(info)}" if info else ""
    return f"postgresql://{quote(name)}:{quote(password)}@/{quote(name)}{query}"


def drop(admin: str, name: str) -> None:
    """Drop a submission's database (closing its connections) and its role, if they exist."""
    ident = sql.Identifier(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


def leftovers(admin: str) -> list[str]:
    """Return the submission databases and roles that exist on the server now."""
    pattern = PREFIX.replace("_", r"\_") + "%"
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s "
            "UNION SELECT rolname FROM pg_roles WHERE rolname LIKE %s ORDER BY 1",
            (pattern, pattern),
        ).fetchall()
    return [row[0] for row in rows]


def sweep(admin: str) -> list[str]:
    """Drop what graders that are no longer running left behind (a kill -9); return the names."""
    pattern = PREFIX.replace("_", r"\_") + "%"
    with psycopg.connect(admin, autocommit=True) as conn:
        tags = dict(conn.execute(
            "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname LIKE %s",
            (pattern,),
        ).fetchall())
        databases = [row[0] for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,)).fetchall()]
    # A database is dropped before its role, so one without a role is an orphan.
    gone = sorted({name for name in [*tags, *databases] if not _alive(tags.get(name))})
    for name in gone:
        drop(admin, name)
    return gone


def _alive(tag: str | None) -> bool:
    host, _, pid = (tag or "").removeprefix("pgvec-course grader ").partition(" pid ")
    if not pid.isdigit() or int(pid) <= 0:
        return False
    if host != socket.gethostname():
        return True  # another machine's grader: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
