"""Point the tools learners already use (psycopg2, SQLAlchemy, Alembic, pg_dump) at the course database.

    url = sqlalchemy_url(dbname="tools_demo")          # for create_engine() and Alembic
    source = scratch_database("tools_demo")            # a fresh, empty database (dropped first)
    run_tool("pg_dump", "--format=custom", "--file=x.dump", source)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import db

__all__ = ["sqlalchemy_url", "scratch_database", "drop_database", "extension_allowed", "pg_tool", "run_tool",
           "ToolRun"]

_CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")
_SHOWN_LINES = 12
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: ")


def _url(dbname: str | None) -> str:
    url = db.database_url()
    return make_conninfo(url, dbname=dbname) if dbname else url


def sqlalchemy_url(*, dbname: str | None = None, driver: str = "psycopg"):
    """Return the course database as a SQLAlchemy URL (`postgresql+psycopg://...`) for create_engine()."""
    from sqlalchemy.engine import URL

    info = conninfo_to_dict(_url(dbname))
    host = info.get("host")
    socket = host is not None and host.startswith("/")
    return URL.create(
        f"postgresql+{driver}",
        username=info.get("user"),
        password=info.get("password"),
        host=None if socket else host,
        port=int(info["port"]) if info.get("port") and not socket else None,
        database=info.get("dbname"),
        # A Unix socket folder travels as ?host=..., which libpq reads as the host.
        query={"host": host} if socket else {},
    )


def scratch_database(name: str, *, extension: bool = False) -> str:
    """Create an empty database `name` (dropping any old one) on the course server; return its URL.

    `extension=True` also runs CREATE EXTENSION vector in it; without it the new database
    has no `vector` type, like any database made from PostgreSQL's template.
    """
    with db.connect() as conn:
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise db.CourseDatabaseError(
                f"this role may not create databases, so the lesson cannot make {name!r}; run it on the "
                "built-in server (unset DATABASE_URL) or ask for CREATEDB"
            ) from None
    url = _url(name)
    if extension:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def extension_allowed(url: str) -> bool:
    """Return whether this role may create the vector extension in the database at `url` (nothing is kept).

    A superuser may; so may a database owner when pgvector is already in the template the database
    was copied from. A managed service's role usually may not: its admin creates the extension.
    """
    with psycopg.connect(url) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            return False
        finally:
            conn.rollback()  # only a test: the database is left as it was
    return True


def drop_database(name: str) -> None:
    """Drop a database made by scratch_database(), closing its sessions first."""
    with db.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pg_tool(name: str) -> Path:
    """Return the path of a PostgreSQL client program: the built-in server's copy, else the one on PATH."""
    if name not in _CLIENT_TOOLS:
        raise ValueError(f"unknown tool {name!r}; use one of {', '.join(_CLIENT_TOOLS)}")
    psql = db.psql_path()
    if psql is not None and (psql.parent / name).exists():
        return psql.parent / name
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found; install the PostgreSQL client programs "
                                "(e.g. apt install postgresql-client) or use the built-in server")
    return Path(found)


@dataclass(frozen=True)
class ToolRun:
    """What a command did: its exit code, what it wrote to stderr and stdout, and how long it took."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        lines = [f"$ {self.command}", f"exit code {self.returncode} after {self.seconds:.2f} s"]
        output = _readable(self.stdout + self.stderr)
        if len(output) > _SHOWN_LINES:  # the first errors explain the rest; .stderr holds them all
            output = output[:_SHOWN_LINES] + [f"... ({len(output) - _SHOWN_LINES} more lines)"]
        return "\n".join(lines + output)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(str(self))


def _readable(output: str) -> list[str]:
    # A Python tool that crashed (alembic) prints a traceback: keep what came before it and the
    # exception itself (its type, message and any SQL), not the stack of frames in between.
    lines = [line for line in output.strip().splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return lines
    raised = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    tail = lines[raised[-1]:] if raised else lines[-1:]
    return lines[: starts[0]] + [line for line in tail if not line.startswith("(Background on this error")]


def _shown(arg: str) -> str:
    # Connection strings are shown by database and host only: never a password, and no socket
    # folder to clutter the line.
    option, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not value.startswith(("postgresql://", "postgres://")) and "dbname=" not in value:
        return arg
    try:
        info = conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        return f"{option}{sep}<a connection string>"
    host = info.get("host") or "localhost"
    where = "" if host.startswith("/") else f" on {host}:{info.get('port') or 5432}"
    return f"{option}{sep}<database {info.get('dbname') or info.get('user')}{where}>"


def run_tool(name: str, *args: str | Path, cwd: str | Path | None = None, timeout: float = 300) -> ToolRun:
    """Run pg_dump, pg_restore, psql or alembic with these arguments; return what it did (never raises)."""
    if name == "alembic":
        argv = [sys.executable, "-m", "alembic"]
    else:
        argv = [str(pg_tool(name))]
    argv += [str(a) for a in args]
    shown = " ".join([name, *(_shown(str(a)) for a in args)])
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    seconds = time.perf_counter() - start
    stdout, stderr = done.stdout, done.stderr
    if cwd is not None:  # paths inside the working folder read better relative to it
        stdout, stderr = (text.replace(f"{Path(cwd).resolve()}/", "") for text in (stdout, stderr))
    return ToolRun(shown, done.returncode, stdout, stderr, seconds)
