"""Grades and feedback on disk: grades.csv, one JSON and one Markdown file per learner, Gradescope.

A `Gradebook` writes each learner's files the moment their grading ends and rebuilds grades.csv
atomically (a temporary file renamed over it) after each, so a grader killed mid-batch loses
nothing already graded, and `--resume` picks up where it stopped. A lock file in `--out` keeps a
second grader out; the lock dies with its process, so a killed grader's lock is simply taken over.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import socket
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .grader import Submission

STATUS_TEXT = {
    "graded": "graded",
    "timeout": "the notebook ran out of time; later questions may have failed",
    "hung": "a cell would not stop; the remaining questions failed",
    "kernel_died": "the kernel died; the remaining questions failed",
    "not_gradable": "not gradable",
    "over_limit": "the submission went over a resource cap and was stopped; the remaining questions failed",
    "error": "the grader failed on this submission",
}


LOCK = ".grading.lock"
GRADESCOPE = "gradescope"  # the folder of Gradescope results.json files, one per learner
CSV_HEADER = ["learner", "exercise", "score", "max", "status"]


class GradebookBusy(RuntimeError):
    """Another grader is writing to the same --out folder."""


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Gradebook:
    """The --out folder of one grading run: locked, written learner by learner, resumable."""

    def __init__(self, out: Path, *, learners: list[str], gradescope: bool = False) -> None:
        self.out, self.learners, self.gradescope = out, learners, gradescope
        out.mkdir(parents=True, exist_ok=True)
        self._lock = open(out / LOCK, "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            raise GradebookBusy(f"another grader ({holder}) is writing to {out}; wait for it to finish, "
                                "or pass another --out") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._lock.flush()

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock."""
        if not self._lock.closed:
            (self.out / LOCK).unlink(missing_ok=True)
            self._lock.close()

    def has(self, learner: str, path: Path) -> bool:
        """Return True when this learner's notebook at `path` is already graded here (for --resume)."""
        sub = self._read(learner)
        return sub is not None and sub.path == str(path) and sub.status != "error"

    def add(self, sub: Submission) -> None:
        """Write one learner's JSON and feedback now, then rebuild grades.csv."""
        write_atomic(self.out / f"{sub.learner}.json", json.dumps(asdict(sub), indent=2) + "\n")
        write_atomic(self.out / f"{sub.learner}.md", feedback(sub))
        if self.gradescope:
            # A folder of their own: beside the reports, learner "x"'s results would be the report of a
            # learner named "x.results" (and a lone learner's results.json that of a learner "results").
            (self.out / GRADESCOPE).mkdir(exist_ok=True)
            write_atomic(self.out / GRADESCOPE / f"{sub.learner}.json",
                         json.dumps(gradescope_results(sub), indent=2) + "\n")
        write_atomic(self.out / "grades.csv", grades_csv(self.results()))

    def results(self) -> list[Submission]:
        """Return the graded learners of this run, in its order, as written in the folder."""
        return [sub for learner in self.learners if (sub := self._read(learner)) is not None]

    def _read(self, learner: str) -> Submission | None:
        from .grader import Submission

        try:
            data = json.loads((self.out / f"{learner}.json").read_text())
            known = {f.name for f in fields(Submission)}
            return Submission(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError):
            return None


def grades_csv(results: list[Submission]) -> str:
    """Return grades.csv's text: one row per learner."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for sub in results:
        writer.writerow([_cell(sub.learner), sub.exercise, f"{sub.score:g}", f"{sub.max:g}", sub.status])
    return buffer.getvalue()


def _cell(text: str) -> str:
    # A learner's file name such as "=HYPERLINK(...).ipynb" is a formula to a spreadsheet that opens
    # grades.csv: a leading apostrophe makes it text.
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


def write_all(results: list[Submission], out: Path, *, gradescope: bool = False) -> None:
    """Write grades.csv and each learner's JSON and Markdown (and Gradescope JSON) into `out`."""
    with Gradebook(out, learners=[s.learner for s in results], gradescope=gradescope) as book:
        for sub in results:
            book.add(sub)


def feedback(sub: Submission) -> str:
    """Return a learner's feedback as Markdown: score, then one line per question."""
    lines = [f"# {sub.exercise or 'Submission'}: {sub.learner}", "",
             f"**Score: {sub.score:g} / {sub.max:g}** ({STATUS_TEXT.get(sub.status, sub.status)})", ""]
    if sub.reason:
        lines += [f"> {sub.reason}", ""]
    for q in sub.questions:
        mark = "✔" if q["passed"] else "✘"
        lines.append(f"- {mark} **{q['title']}** (`{q['id']}`): {q['points']:g} / {q['max_points']:g}. "
                     f"{q['feedback']}")
        lines += [f"  - {line}" for line in rubric_lines(q)]
    errors = sub.execution.get("errors") or []
    if errors:
        lines += ["", "Cells that raised an error while grading:", ""]
        lines += [f"- {e}" for e in errors[:10]]
    if sub.reproducibility:
        r = sub.reproducibility
        lines += ["", f"<sub>Graded with PostgreSQL {r['postgres']}, pgvector {r['pgvector']}, "
                      f"{r['embedder']}, pgvec-course {r['package']}, tests {r['tests_hash']}.</sub>"]
    return "\n".join(lines) + "\n"


def rubric_lines(question: dict) -> list[str]:
    """Return one line per rubric part of a graded question: mark, name, points, what it is for."""
    return [f"{'✘' if p['hint'] else '✔'} {p['name']} {p['points']:g} / {p['max_points']:g}: {p['text']}"
            for p in question.get("parts", [])]


def gradescope_results(sub: Submission) -> dict:
    """Return Gradescope's results.json content for one submission."""
    tests = [{"name": f"{q['id']}: {q['title']}", "score": q["points"], "max_score": q["max_points"],
              "status": "passed" if q["passed"] else "failed",
              "output": "\n".join([q["feedback"], *rubric_lines(q)])}
             for q in sub.questions]
    result = {"score": sub.score, "tests": tests, "execution_time": sub.timings.get("total", 0)}
    if sub.status != "graded":
        result["output"] = f"{STATUS_TEXT.get(sub.status, sub.status)}: {sub.reason}".rstrip(": ")
    return result


def summary(results: list[Submission]) -> str:
    """Return a plain-text table of the batch: learner, score, status, seconds."""
    rows = [("learner", "exercise", "score", "status", "seconds")]
    rows += [(s.learner, s.exercise or "-", f"{s.score:g}/{s.max:g}", s.status,
              f"{s.timings.get('total', 0):.1f}") for s in results]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    graded = [s for s in results if s.status != "not_gradable" and s.max]
    if graded:
        mean = sum(s.score / s.max for s in graded) / len(graded)
        lines.append(f"{len(results)} submissions; {len(graded)} graded, mean {100 * mean:.0f}% of points")
    return "\n".join(lines)
