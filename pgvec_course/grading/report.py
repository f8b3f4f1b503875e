"""Grades and feedback on disk: grades.csv, one JSON and one Markdown file per learner, Gradescope."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
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
    "error": "the grader failed on this submission",
}


def write_all(results: list[Submission], out: Path, *, gradescope: bool = False) -> None:
    """Write grades.csv and each learner's JSON and Markdown (and Gradescope JSON) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["learner", "exercise", "score", "max", "status"])
        for sub in results:
            writer.writerow([sub.learner, sub.exercise, f"{sub.score:g}", f"{sub.max:g}", sub.status])
    for sub in results:
        (out / f"{sub.learner}.json").write_text(json.dumps(asdict(sub), indent=2) + "\n")
        (out / f"{sub.learner}.md").write_text(feedback(sub))
        if gradescope:
            # Gradescope reads results/results.json for the one submission it grades.
            name = "results.json" if len(results) == 1 else f"{sub.learner}.results.json"
            (out / name).write_text(json.dumps(gradescope_results(sub), indent=2) + "\n")


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
    errors = sub.execution.get("errors") or []
    if errors:
        lines += ["", "Cells that raised an error while grading:", ""]
        lines += [f"- {e}" for e in errors[:10]]
    if sub.reproducibility:
        r = sub.reproducibility
        lines += ["", f"<sub>Graded with PostgreSQL {r['postgres']}, pgvector {r['pgvector']}, "
                      f"{r['embedder']}, pgvec-course {r['package']}, tests {r['tests_hash']}.</sub>"]
    return "\n".join(lines) + "\n"


def gradescope_results(sub: Submission) -> dict:
    """Return Gradescope's results.json content for one submission."""
    tests = [{"name": f"{q['id']}: {q['title']}", "score": q["points"], "max_score": q["max_points"],
              "status": "passed" if q["passed"] else "failed", "output": q["feedback"]}
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
