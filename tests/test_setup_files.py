"""The files that set the course up: compose, instructors' CI, README, .ci/run, Makefile."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_compose_and_github_ci_agree_on_image_and_credentials():
    compose = _load("docker-compose.yml")["services"]["db"]
    workflow = _load(".github/workflows/ci.yml")
    job = workflow["jobs"]["test"]
    service = job["services"]["db"]
    image = compose["image"]
    assert image == service["image"]
    match = re.fullmatch(r"pgvector/pgvector:(\d+)\.(\d+)\.(\d+)-pg(\d+)(-\w+)?", image)
    assert match, f"image {image!r} is not pinned to a pgvector version"
    major, minor, patch, pg = (int(g) for g in match.groups()[:4])
    assert (major, minor, patch) >= (0, 8, 4) and pg == 18
    assert compose["environment"] == service["env"]
    assert compose["ports"] == ["5433:5432"]
    env = compose["environment"]
    url = f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@localhost:5433/{env['POSTGRES_DB']}"
    assert url in (ROOT / "README.md").read_text()
    assert url in (ROOT / "docker-compose.yml").read_text()
    # The job runs in a container beside the service, which it reaches by name on its own port.
    assert job["env"]["DATABASE_URL"] == url.replace("localhost:5433", "db:5432")


def test_github_ci_runs_what_our_ci_runs_on_the_same_system():
    job = _load(".github/workflows/ci.yml")["jobs"]["test"]
    assert job["container"]["image"] == "python:3.11-bookworm"  # Debian 12, Python 3.11, root
    assert "--privileged" in job["container"]["options"]  # bubblewrap's namespaces
    assert [s.get("run") for s in job["steps"]][-1] == ".ci/run"
    assert "apt-get install -y -qq chromium bubblewrap" in (ROOT / ".ci/run").read_text()


def test_compose_gives_index_builds_room():
    compose = _load("docker-compose.yml")["services"]["db"]
    assert "maintenance_work_mem=512MB" in compose["command"]
    assert compose["shm_size"] in ("1g", "1gb", "1024m")
    assert "pg_isready" in " ".join(compose["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql") for v in compose["volumes"])


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert commands[:2] == ["make start", "make test"]
    assert "\nmake test\n" in (ROOT / ".ci/run").read_text()


def test_every_cli_command_is_documented():
    from pgvec_course.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"pgvec-course {name}" in readme, f"README does not mention 'pgvec-course {name}'"


def _make_start(tmp_path, env: dict) -> tuple[int | None, str, str]:
    """Run `make start` on a free port until JupyterLab answers; return its status, page and output."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["make", "-s", "start", f"PORT={port}", "JUPYTER_ARGS=--no-browser --IdentityProvider.token="],
        cwd=ROOT, env=dict(env, JUPYTER_RUNTIME_DIR=str(tmp_path)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True)
    status, body = None, ""
    try:
        for _ in range(120):
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab/tree/lessons", timeout=2) as r:
                    status, body = r.status, r.read().decode()
                break
            except OSError:
                time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    return status, body, output


def test_make_start_serves_jupyterlab_on_lessons(tmp_path):
    env = dict(os.environ, PGVEC_DATA_DIR=os.environ.get("PGVEC_DATA_DIR", str(ROOT / ".pgdata-test")))
    status, body, output = _make_start(tmp_path, env)
    assert status == 200, output
    assert "JupyterLab" in body


def test_make_start_with_database_url_uses_that_server(tmp_path, compose_server):
    # The README's compose instructions: DATABASE_URL exported, then make start.
    env = dict(os.environ, DATABASE_URL=compose_server.url, PGVEC_DATA_DIR=str(tmp_path / "unused"))
    status, body, output = _make_start(tmp_path, env)
    assert status == 200, output
    assert "JupyterLab" in body
    assert f"using DATABASE_URL (127.0.0.1:{compose_server.port}/pgvec_course): the built-in server is " \
           "not started\n" in output
    assert not (tmp_path / "unused" / "PG_VERSION").exists()
    assert compose_server.passwords["course"] not in output
