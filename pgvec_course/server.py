"""What the course's Postgres server lets this role do, and extra databases with pgvector in them.

The built-in server and the docker-compose image log in as a superuser, which may do everything
the course does. A managed server (RDS, Cloud SQL, Azure, Supabase, Neon) hands out a role that
owns its database but is no superuser: `vector` is not a trusted extension, so that role cannot
create it in a new database unless an admin installed it in `template1` once (see the README).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from . import db
from .config import settings
from .index import estimate_build_memory

# The course's largest index builds: 10,000 x 1536 vectors, IVFFlat with 100 lists or HNSW
# (lesson 5, exercise 2), with the same 25% headroom `create_index` asks for.
_MB = 1024 * 1024
NEEDED_MAINTENANCE_MB = math.ceil(1.25 * max(
    estimate_build_memory(10_000, 1536, "ivfflat", lists=100), estimate_build_memory(10_000, 1536, "hnsw")
) / _MB)
TEMPLATE_FIX = "CREATE EXTENSION IF NOT EXISTS vector;"


@dataclass(frozen=True)
class ServerInfo:
    """The server the course connects to, the role it logs in as, and what that role may do."""

    where: str
    builtin: bool
    version: str
    pgvector: str
    role: str
    superuser: bool
    createdb: bool
    createrole: bool
    maintenance_work_mem_mb: int
    vector_in_new_databases: bool
    why_not: str  # why new databases get no pgvector ('' when they do)


def inspect(url: str | None = None) -> ServerInfo:
    """Connect to the course's server (or `url`) and find out what this role may do there."""
    builtin = url is None and settings().database_url is None
    with db.connect(url) as conn:  # before db.database_url(): its errors say how to start the server
        role, superuser, createdb, createrole = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        mem = conn.execute("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))").fetchone()[0]
        version, pgvector = db.server_version(conn), db.pgvector_version(conn)
    url = url or db.database_url()
    ok, why = _probe_new_database(url) if not superuser else (True, "")
    return ServerInfo(
        where="the built-in server" if builtin else db.redact(url), builtin=builtin, version=version,
        pgvector=pgvector, role=role, superuser=superuser, createdb=createdb, createrole=createrole,
        maintenance_work_mem_mb=mem // _MB, vector_in_new_databases=ok, why_not=why,
    )


def _probe_new_database(url: str) -> tuple[bool, str]:
    name = "pgvec_probe_" + secrets.token_hex(4)
    try:
        create_database(name, url=url)
    except db.CourseDatabaseError as exc:
        return False, str(exc)
    drop_database(name, url=url)
    return True, ""


def create_database(name: str, *, url: str | None = None) -> str:
    """Create database `name` with pgvector in it and return its URL; say why when this role may not."""
    url = url or db.database_url()
    ident = sql.Identifier(name)
    with db.connect(url) as admin:
        role = admin.execute("SELECT current_user").fetchone()[0]
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        except psycopg.errors.InsufficientPrivilege:
            raise db.CourseDatabaseError(
                f"role {role} may not create databases (no CREATEDB) on {db.redact(url)}") from None
        except psycopg.errors.ObjectInUse as exc:  # template1 is busy: someone is connected to it
            raise db.CourseDatabaseError(f"could not create a database on {db.redact(url)}: {exc}") from None
    new = make_conninfo(url, dbname=name)
    try:
        db.connect(new).close()
    except db.CourseDatabaseError:
        drop_database(name, url=url)
        raise db.CourseDatabaseError(
            f"new databases on {db.redact(url)} get no pgvector: role {role} may not create the "
            f"extension (vector is not a trusted extension) and template1 does not have it") from None
    return new


def drop_database(name: str, *, url: str | None = None) -> None:
    """Drop database `name` if it exists, closing its connections first."""
    with db.connect(url or db.database_url()) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def report(info: ServerInfo) -> list[tuple[bool | None, str]]:
    """Return doctor's lines about the server: (ok, text), where None marks a note."""
    source = "" if info.builtin else ", from DATABASE_URL"
    lines: list[tuple[bool | None, str]] = [
        (True, f"Postgres {info.version} reachable ({info.where}{source}), role {info.role}"),
        (True, f"pgvector extension {info.pgvector} in the database"),
    ]
    add = lines.append
    if info.superuser:
        add((True, f"role {info.role} is a superuser: every part of the course works here"))
    else:
        rights = [w for w, has in (("CREATEDB", info.createdb), ("CREATEROLE", info.createrole)) if has]
        add((None, f"role {info.role} is not a superuser (it has {' and '.join(rights) or 'no CREATEDB'}): "
                   "the lessons and exercises work in its database"))
        if info.vector_in_new_databases:
            add((True, "new databases get pgvector: the tests and the benchmark get databases of their own"))
        else:
            add((None, f"{info.why_not}: the tests and 'pgvec-course bench' use this database instead; an "
                       f"admin fixes that once, in database template1: {TEMPLATE_FIX}"))
    need, have = NEEDED_MAINTENANCE_MB, info.maintenance_work_mem_mb
    if have >= need:
        add((True, f"maintenance_work_mem {have} MB: enough for the course's index builds (up to {need} MB)"))
    else:
        fix = ("'pgvec-course db stop', then 'pgvec-course db start' sets it" if info.builtin else
               "run once: ALTER ROLE CURRENT_USER SET maintenance_work_mem = '256MB'; and reconnect")
        add((False, f"maintenance_work_mem is {have} MB: the index builds on 10,000 x 1536 vectors in "
                    f"lesson 5 and exercise 2 need up to {need} MB (IVFFlat fails, HNSW crawls); {fix}"))
    return lines
