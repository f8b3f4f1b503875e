"""Watch an index build from other connections: its progress, and whether writes get through meanwhile.

    build = watch_index_build("CREATE INDEX CONCURRENTLY ... USING hnsw (...)",
                              writes="INSERT INTO items (embedding) SELECT embedding FROM items LIMIT 1")
    build            # phases and % done over time, build seconds, writes done and their worst wait
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

from . import db

__all__ = ["PROGRESS_SQL", "IndexBuild", "watch_index_build"]

# PostgreSQL's view of every CREATE INDEX in progress; pgvector's HNSW build reports blocks,
# IVFFlat's loading phase reports tuples.
PROGRESS_SQL = """SELECT phase,
       round(100.0 * blocks_done / nullif(blocks_total, 0), 1) AS blocks_pct,
       round(100.0 * tuples_done / nullif(tuples_total, 0), 1) AS tuples_pct
FROM pg_stat_progress_create_index
WHERE pid = %s"""


@dataclass(frozen=True)
class Sample:
    """One look at pg_stat_progress_create_index: seconds since the start, phase and % done."""

    seconds: float
    phase: str
    percent: float | None


@dataclass
class IndexBuild:
    """What watching a build saw: samples, duration, error, notices, and the writes attempted meanwhile."""

    statement: str
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    writes: int = 0
    slowest_write_ms: float = 0.0
    write_error: str | None = None
    notices: list[str] = field(default_factory=list)

    def phases(self) -> list[tuple[str, float, list[float]]]:
        """Return each phase once, in order: (phase, first seen at seconds, the % values seen in it)."""
        out: list[tuple[str, float, list[float]]] = []
        for s in self.samples:
            if not out or out[-1][0] != s.phase:
                out.append((s.phase, s.seconds, []))
            if s.percent is not None and s.percent not in out[-1][2]:
                out[-1][2].append(s.percent)
        return out

    def __str__(self) -> str:
        lines = [f"{'at s':>6}  {'phase':<36} % done as it was sampled"]
        for phase, at, pcts in self.phases():
            shown = pcts if len(pcts) <= 6 else [pcts[i * (len(pcts) - 1) // 5] for i in range(6)]
            lines.append(f"{at:6.2f}  {phase:<36} {' '.join(f'{p:.0f}%' for p in shown)}".rstrip())
        outcome = f"failed: {self.error}" if self.error else f"finished in {self.seconds:.2f} s"
        lines.append(f"build {outcome} ({len(self.samples)} samples)")
        lines += [f"notice: {notice}" for notice in self.notices]
        if self.write_error:
            lines.append(f"a write failed: {self.write_error}")
        if self.writes:
            writes = f"{self.writes} write{'s' * (self.writes != 1)}"
            lines.append(f"{writes} went through meanwhile; the slowest took {self.slowest_write_ms:.0f} ms")
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(str(self))


def watch_index_build(
    statement: str,
    *,
    dbname: str | None = None,
    every: float = 0.05,
    writes: str | None = None,
    settings: dict[str, str] | None = None,
) -> IndexBuild:
    """Run a CREATE INDEX on its own connection, sampling its progress (and running `writes`) until it ends.

    `writes`, when given, is a statement run over and over on a third connection while the
    build runs, each in its own transaction; the result counts them and times the slowest.
    `settings` are SET for the building session first (e.g. max_parallel_maintenance_workers).
    """
    result = IndexBuild(statement)
    builder = db.connect(dbname=dbname)
    watcher = db.connect(dbname=dbname)
    writer = db.connect(dbname=dbname) if writes else None
    try:
        builder.add_notice_handler(lambda diag: result.notices.append(diag.message_primary or ""))
        for name, value in (settings or {}).items():
            builder.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
        pid = builder.info.backend_pid
        done = threading.Event()

        def build() -> None:
            started = time.perf_counter()
            try:
                builder.execute(statement)
            except psycopg.Error as exc:
                result.error = str(exc).strip().splitlines()[0]
            finally:
                result.seconds = time.perf_counter() - started
                done.set()

        start = time.perf_counter()
        thread = threading.Thread(target=build, daemon=True)
        thread.start()
        write_thread = None
        if writer is not None:
            write_thread = threading.Thread(target=_keep_writing, args=(writer, writes, done, result),
                                            daemon=True)
            write_thread.start()
        while not done.is_set():
            for phase, blocks, tuples in watcher.execute(PROGRESS_SQL, (pid,)).fetchall():
                pct = blocks if blocks is not None else tuples
                result.samples.append(Sample(time.perf_counter() - start, phase,
                                             None if pct is None else float(pct)))  # fmt: skip
            done.wait(every)
        thread.join()
        if write_thread is not None:
            write_thread.join()
    finally:
        for conn in (builder, watcher, writer):
            if conn is not None:
                conn.close()
    return result


def _keep_writing(conn: psycopg.Connection, statement: str, done: threading.Event,
                  result: IndexBuild) -> None:
    # One write after the build ended still counts: a blocked write finishes only then, and its
    # wait is the point of the comparison.
    while True:
        started = time.perf_counter()
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            result.write_error = str(exc).strip().splitlines()[0]
            return
        result.writes += 1
        result.slowest_write_ms = max(result.slowest_write_ms, 1000 * (time.perf_counter() - started))
        if done.is_set():
            return
        time.sleep(0.01)
