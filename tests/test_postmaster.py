"""The built-in server comes back in the same process after a crash or `pgvec-course db stop`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psycopg
import pytest

from pgvec_course import _postmaster, db


def _info(pgdata):
    return db._pgserver().utils.PostmasterInfo.read_from_pgdata(pgdata)


def test_a_running_server_is_alive_and_its_lock_is_kept(own_server):
    db.connect().close()
    info = _info(own_server)
    assert _postmaster.alive(info)
    assert _postmaster.attached(info) >= 1  # the postmaster and its helpers share the segment
    assert _postmaster.clear_stale_lock(own_server, info) is False
    assert (own_server / "postmaster.pid").exists()


def test_connect_recovers_in_the_same_process_after_kill_9_and_db_stop(own_server):
    # A notebook: one process, one connection left open, then the server goes away under it.
    first = db.connect()
    first.execute("CREATE TABLE kept (id int)")
    first.execute("INSERT INTO kept VALUES (42)")
    crashed = db.server_pid()

    os.kill(crashed, signal.SIGKILL)  # where its parent never reaps it (PID 1 here), it stays a zombie
    second = db.connect()  # at once, in the same process
    restarted = db.server_pid()
    assert restarted not in (None, crashed)
    assert second.execute("SELECT id FROM kept").fetchall() == [(42,)]
    with pytest.raises(psycopg.OperationalError):
        first.execute("SELECT 1")

    # A terminal: `pgvec-course db stop` while the notebook's connection is open.
    stop = subprocess.run([sys.executable, "-m", "pgvec_course.cli", "db", "stop"],
                          capture_output=True, text=True, timeout=60)
    assert (stop.returncode, stop.stdout, stop.stderr) == (0, "stopped\n", "")
    assert db.server_pid() is None
    assert not (own_server / "postmaster.pid").exists()  # a clean shutdown, not a kill
    with pytest.raises(psycopg.OperationalError):
        second.execute("SELECT 1")
    third = db.connect()
    assert db.server_pid() not in (None, crashed, restarted)
    assert third.execute("SELECT id FROM kept").fetchall() == [(42,)]
    third.close()
