"""The OS sandbox around graded notebooks: what a process inside can reach, its caps, its own server."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("DATABASE_URL"):
    os.environ["PGVEC_GRADER_DATA_DIR"] = str(ROOT / ".pgdata-grader-test")

from pgvec_course import cli  # noqa: E402
from pgvec_course.grading import grader  # noqa: E402
from pgvec_course.isolation import databases, limits, sandbox, workspace  # noqa: E402

SUBMISSIONS = ROOT / "tests" / "fixtures" / "submissions"
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module", autouse=True)
def bwrap():
    """Skip where bubblewrap cannot run, saying how to get it; in CI the sandbox must be tested for real."""
    support = sandbox.support()
    if not support.ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must test the grading sandbox for real: {support.detail}")
        pytest.skip(support.detail)


def _inside(code: str, box: Path, **layout) -> dict:
    """Run Python `code` in a sandbox with `box` writable; return the JSON it prints."""
    uid = sandbox.pick_uid() if IS_ROOT else None
    box.mkdir(exist_ok=True)
    if uid is not None:
        os.chown(box, uid, uid)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/learner", "LANG": "C.UTF-8"}
    spec = sandbox.Layout(writable=[box], readable=sandbox.python_paths(), env=env, cwd=box, uid=uid,
                          **layout)
    done = subprocess.run(sandbox.command([sys.executable, "-c", textwrap.dedent(code)], spec), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_sandboxed_process_sees_nothing_of_the_grader(tmp_path):
    secret = Path(os.environ["PGVEC_GRADER_DATA_DIR"])
    found = _inside(f"""
        import json, os, pathlib
        def writable(path):
            try:
                open(path, "w").close()
                return True
            except OSError as e:
                return e.strerror
        print(json.dumps({{
            "uid": os.getuid(),
            "repository": [p for p in ("{ROOT}/solutions", "{ROOT}/pyproject.toml", "{secret}")
                           if os.path.exists(p)],
            "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "grader": os.path.exists("/proc/{os.getpid()}/environ"),
            "home": os.environ["HOME"], "env": sorted(os.environ),
            "usr": writable("/usr/pwned"), "package": writable("{ROOT}/pgvec_course/pwned"),
            "box": writable("{tmp_path}/box/ok"),
        }}))
    """, tmp_path / "box")
    assert found["repository"] == []
    assert found["grader"] is False
    assert found["processes"] == [1, 2]  # bwrap's reaper and this process: nothing of the host
    assert found["env"] == ["HOME", "LANG", "PATH", "PWD"]  # PWD: bwrap's, after --chdir
    assert (found["usr"], found["package"]) == ("Read-only file system", "Read-only file system")
    assert found["box"] is True
    assert found["uid"] != 0 if IS_ROOT else found["uid"] == os.getuid()


def test_no_network_connection_leaves_the_sandbox(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    unix = tmp_path / "other-learner.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(unix))
    listener.listen()
    try:
        port = server.getsockname()[1]
        found = _inside(f"""
            import json, os, socket
            def tcp(host, port):
                try:
                    socket.create_connection((host, port), timeout=3).close()
                    return "connected"
                except OSError as e:
                    return type(e).__name__
            print(json.dumps({{"loopback": tcp("127.0.0.1", {port}), "outside": tcp("192.0.2.1", 80),
                               "unix": os.path.exists("{unix}")}}))
        """, tmp_path / "box")
    finally:
        server.close()
        listener.close()
    assert found == {"loopback": "ConnectionRefusedError", "outside": "OSError", "unix": False}


def test_scratch_space_is_capped_and_private(tmp_path):
    found = _inside("""
        import json, os
        def fill(path):
            try:
                with open(path, "wb") as f:
                    for _ in range(64):
                        f.write(b"x" * 2**20)
                return "wrote 64 MB"
            except OSError as e:
                return e.strerror
        print(json.dumps({"tmp": fill("/tmp/big"), "home": fill(os.path.expanduser("~/big")),
                          "others": os.listdir("/tmp")}))
    """, tmp_path / "box", tmp_bytes=16 * 2**20)
    assert (found["tmp"], found["home"]) == ("No space left on device", "No space left on device")
    # Only what it wrote, and the way to the folders shown to it that live in /tmp: its own (pytest's
    # tmp_path) and the virtualenv, in a checkout cloned into /tmp.
    way = {p.parts[2] for p in (tmp_path, *sandbox.python_paths()) if p.parts[1:2] == ("tmp",)}
    assert sorted(found["others"]) == sorted({"big", *way})


def test_every_process_dies_with_the_sandbox(tmp_path):
    import psutil

    marker = f"pvc-daemon-{os.getpid()}-{time.time_ns()}"
    _inside(f"""
        import json, subprocess
        subprocess.Popen(["sleep", "300", "{marker}"], start_new_session=True)
        print(json.dumps({{}}))
    """, tmp_path / "box")
    time.sleep(0.5)
    assert [p.pid for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])] == []


def test_grade_refuses_to_run_without_a_sandbox(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    sandbox.support.cache_clear()
    try:
        code = cli.main(["grade", str(SUBMISSIONS / "kb" / "correct.ipynb"), "--out", str(tmp_path / "out")])
        doctor = dict((line, ok) for ok, line in cli.doctor())
    finally:
        sandbox.support.cache_clear()
    assert code == 2
    assert capsys.readouterr().err == (
        "error: cannot sandbox the notebooks: bubblewrap (bwrap) is not installed: install bubblewrap "
        "('sudo apt install bubblewrap' on Debian/Ubuntu, 'sudo dnf install bubblewrap' on Fedora), or "
        "grade on a Linux machine or container that has it. To grade without a sandbox, only work you trust, "
        "pass --trust-submissions\n")
    assert not (tmp_path / "out").exists()
    note = ("grading cannot be sandboxed here: bubblewrap (bwrap) is not installed: install bubblewrap "
            "('sudo apt install bubblewrap' on Debian/Ubuntu, 'sudo dnf install bubblewrap' on Fedora), "
            "or grade on a Linux machine or container that has it")
    assert doctor[note] is None


def test_doctor_says_grading_is_sandboxed():
    lines = {line: ok for ok, line in cli.doctor()}
    assert lines[f"grading sandbox: {sandbox.support().detail}"] is True
    assert sandbox.support().detail.startswith("bubblewrap ")


@pytest.fixture
def ws():
    with workspace.workspace(caps=limits.Caps(memory=512 * 2**20, processes=64), sandboxed=True) as space:
        databases.ensure_template(lambda: workspace.workspace(caps=limits.Caps(), sandboxed=True))
        yield space


def test_each_submission_gets_its_own_locked_down_server(ws):
    with databases.submission_database(ws, statement_timeout=7) as server, \
            psycopg.connect(server.url, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                           "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (False, False, False, False, False)
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
            "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "temp_file_limit",
            "maintenance_work_mem", "listen_addresses", "fsync")}
        assert settings == {"statement_timeout": "7s", "lock_timeout": "10s",
                            "idle_in_transaction_session_timeout": "1min", "temp_file_limit": "1GB",
                            "maintenance_work_mem": "256MB", "listen_addresses": "", "fsync": "off"}
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        assert vector == ("0.8.5",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        for attack in ("COPY (SELECT 1) TO PROGRAM 'true'", "ALTER ROLE learner SUPERUSER",
                       "CREATE DATABASE other", "CREATE ROLE evil SUPERUSER"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attack)
        with pytest.raises(psycopg.OperationalError, match="User does not have CONNECT privilege"):
            psycopg.connect(server.url.replace("/pgvec_course?", "/template1?"))
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(server.url.replace("learner:", "postgres:"))
        # Its backends run in the submission's cgroup, so they count against its memory cap.
        if ws.cgroup is not None:
            import psutil

            members = (ws.cgroup.dirs["memory"] / "cgroup.procs").read_text().split()
            titles = []
            for pid in members:  # a short-lived backend may be gone by now (flaky under load)
                with contextlib.suppress(psutil.NoSuchProcess):
                    titles.append(" ".join(psutil.Process(int(pid)).cmdline()))
            assert any(title.startswith("postgres: learner pgvec_course") for title in titles), titles
    assert server.process.poll() is not None


def test_the_grader_keeps_its_superuser_password_to_itself():
    data_dir = Path(os.environ["PGVEC_GRADER_DATA_DIR"])
    assert (data_dir / databases.PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
    assert (databases.template_dir() / "pg_hba.conf").read_text() == databases.HBA


def test_the_memory_cap_covers_every_child(ws):
    if ws.cgroup is None:
        pytest.skip("cgroups are not writable here (not root): each process gets rlimits instead")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/learner"}
    layout = sandbox.Layout(writable=[ws.kernel_dir], readable=sandbox.python_paths(), env=env,
                            uid=ws.kernel_uid)
    # Three children of 300 MB each: under the 512 MB cap alone, over it together.
    code = textwrap.dedent("""
        import subprocess, sys
        kids = [subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(300 * 2**20); "
                                  "b[::4096] = b'x' * len(b[::4096]); time.sleep(30)"]) for _ in range(3)]
        print([k.wait() for k in kids])
    """)
    done = subprocess.run(ws.wrap([sys.executable, "-c", code], layout), env=env, capture_output=True,
                          text=True, timeout=120)
    assert "-9" in done.stdout, (done.stdout, done.stderr)
    assert ws.cgroup.usage()["oom_kills"] >= 1
    assert ws.cgroup.usage()["memory_peak"] <= 512 * 2**20


def test_the_process_cap_stops_a_fork_bomb(ws):
    if ws.cgroup is None:
        pytest.skip("cgroups are not writable here (not root): each process gets rlimits instead")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/learner"}
    layout = sandbox.Layout(writable=[ws.kernel_dir], readable=sandbox.python_paths(), env=env,
                            uid=ws.kernel_uid)
    code = textwrap.dedent("""
        import subprocess
        kids, error = [], None
        try:
            for _ in range(200):
                kids.append(subprocess.Popen(["sleep", "30"]))
        except OSError as e:
            error = e.strerror
        print(len(kids), error)
        for k in kids:
            k.kill()
    """)
    done = subprocess.run(ws.wrap([sys.executable, "-c", code], layout), env=env, capture_output=True,
                          text=True, timeout=120)
    started, _, error = done.stdout.strip().partition(" ")
    assert int(started) < 64 and error == "Resource temporarily unavailable", done.stdout


def test_sweep_removes_what_a_killed_grader_left(tmp_path):
    dead = 4_194_999  # above the kernel's largest pid: no grader has it
    folder = workspace.SHM / f"{workspace.PREFIX}{dead}-deadbeef-x"
    (folder / "pgdata").mkdir(parents=True)
    groups = []
    if IS_ROOT and Path("/sys/fs/cgroup/memory").is_dir():
        group = Path("/sys/fs/cgroup/memory") / f"{limits.PREFIX}{dead}-deadbeef"
        group.mkdir()
        groups.append(group.name)
    assert sorted(workspace.sweep()) == sorted([folder.name, *groups])
    assert not folder.exists()


def test_trusted_grading_runs_without_the_sandbox(tmp_path):
    out = tmp_path / "out"
    code = cli.main(["grade", str(SUBMISSIONS / "kb" / "correct.ipynb"), "--trust-submissions",
                     "--out", str(out), "--quiet"])
    assert code == 0
    result = json.loads((out / "correct.json").read_text())
    assert (result["score"], result["sandbox"]["isolation"]) == (10, "none (--trust-submissions)")


def test_a_sandboxed_grade_records_its_caps_and_use(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["grade", str(SUBMISSIONS / "kb" / "correct.ipynb"), "--memory", "1.5G", "--disk", "512M",
                     "--out", str(out), "--quiet"]) == 0
    box = json.loads((out / "correct.json").read_text())["sandbox"]
    assert box["isolation"] == "bubblewrap"
    assert box["caps"] == {"memory_bytes": 1536 * 2**20, "disk_bytes": 512 * 2**20, "tasks": 512,
                           "cpu_seconds": 1200}
    assert box["stopped"] == ""
    assert 0 < box["used"]["disk_peak"] < 512 * 2**20
    if IS_ROOT:
        assert box["limits"] == "cgroup v1 (memory, pids, cpuacct) for the whole submission; disk and CPU " \
                                "time watched by the grader"
        assert 100 * 2**20 < box["used"]["memory_peak"] < 1536 * 2**20
        assert box["used"]["oom_kills"] == 0


def test_sizes_are_read_as_an_instructor_writes_them():
    assert [limits.parse_size(s) for s in ("512M", "4G", "1.5GB", "2g", "100")] == [
        512 * 2**20, 4 * 2**30, int(1.5 * 2**30), 2 * 2**30, 100]
    with pytest.raises(ValueError, match="'lots' is not a size: write it like 512M, 4G or 1.5GB"):
        limits.parse_size("lots")
    assert grader.Options().caps == limits.Caps(memory=4 * 2**30, disk=2 * 2**30, processes=512,
                                                cpu_seconds=1200)


def test_an_instructor_without_root_gets_the_sandbox_too():
    """Grade as an ordinary user (nobody), as on a laptop: bwrap then makes a user namespace itself."""
    import pwd
    import shutil
    import tempfile

    python = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not IS_ROOT or shutil.which("setpriv") is None or not python.exists():
        pytest.skip(f"needs root, setpriv and {python} to act as an ordinary user; CI runs it as root")
    nobody = pwd.getpwnam("nobody").pw_uid
    home = Path(tempfile.mkdtemp(prefix="pvc-nobody-"))  # pytest's own tmp_path is root's alone
    os.chown(home, nobody, nobody)
    try:
        _grade_as(nobody, home, python)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _grade_as(nobody: int, home: Path, python: Path) -> None:
    import site

    as_nobody = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PGVEC_GRADER_DATA_DIR": str(home / "grader"),
           "PGVEC_CACHE_DIR": str(home / "cache"), "PGVEC_DATA_DIR": str(home / "pgdata")}
    # Their own venv, seeing the course's installed packages (as `pip install` would have put them).
    subprocess.run([*as_nobody, str(python), "-m", "venv", str(home / "venv")], env=env, check=True)
    packages = [p for p in site.getsitepackages() if p.startswith(sys.prefix)][0]
    (Path(home / "venv" / "lib" / python.name / "site-packages") / "course.pth").write_text(
        f"import site; site.addsitedir({packages!r})\n")
    grade = [str(home / "venv" / "bin" / "python"), "-m", "pgvec_course.cli", "grade",
             str(SUBMISSIONS / "kb" / "correct.ipynb"), "--out", str(home / "out"), "--quiet"]
    done = subprocess.run([*as_nobody, *grade], env=env, capture_output=True, text=True, timeout=600)
    if "Permission denied" in done.stderr and "pgvec_course" in done.stderr:
        pytest.skip(f"the repository is not readable by other users here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((home / "out" / "correct.json").read_text())
    assert (result["score"], result["status"], result["sandbox"]["isolation"]) == (10, "graded", "bubblewrap")
    assert result["sandbox"]["limits"] == "rlimits per process; disk and CPU time watched by the grader"
