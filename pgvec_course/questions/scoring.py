"""Scoring helpers: read a probe's answers back, explain what is wrong, add up a rubric's parts.

A scorer judges each input on each part of the question's rubric and returns, per input, a dict
part name -> (share of the part earned, hint or None). `score_parts` averages those into points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from .spec import Outcome, PartScore, Question

PartResults = dict[str, tuple[float, str | None]]


def full(*names: str) -> PartResults:
    """Return a result giving every named part all of its points."""
    return {name: (1.0, None) for name in names}


def score_parts(question: Question, results: Sequence[PartResults], ok_text: str) -> Outcome:
    """Turn per-input part results into an Outcome: each part earns its points times its mean share."""
    if not results:
        return blocked(question, "nothing was checked")
    parts = []
    for part in question.rubric:
        shares = [min(1.0, max(0.0, r.get(part.name, (0.0, "not checked"))[0])) for r in results]
        hints = [r.get(part.name, (0.0, "not checked"))[1] for r in results]
        hints = [h or "not right for every input" if s < 1 - 1e-9 else None
                 for s, h in zip(shares, hints, strict=True)]
        failing = [h for h in hints if h]
        hint = None
        if failing:
            passed = len(results) - len(failing)
            hint = failing[0] + (f" ({passed} of {len(results)} inputs passed)" if len(results) > 1 else "")
        parts.append(PartScore(part.name, round(part.points * sum(shares) / len(shares), 2), part.points,
                               part.text, hint))
    return _outcome(question, parts, ok_text)


def blocked(question: Question, hint: str, *, keep: PartResults | None = None) -> Outcome:
    """Return an Outcome where every part (but those in `keep`) fails for the same reason."""
    keep = keep or {}
    parts = [PartScore(p.name, round(p.points * keep[p.name][0], 2), p.points, p.text, keep[p.name][1])
             if p.name in keep else PartScore(p.name, 0.0, p.points, p.text, hint) for p in question.rubric]
    return _outcome(question, parts, "")


def _outcome(question: Question, parts: list[PartScore], ok_text: str) -> Outcome:
    failing = [p for p in parts if not p.passed]
    points = round(sum(p.points for p in parts), 2)
    return Outcome(question.id, points, question.points, not failing, failing[0].hint if failing else ok_text,
                   tuple(parts))


def safe_score(question: Question, scorer: Callable[[], Outcome]) -> Outcome:
    """Run a scorer, turning an unexpected exception into a failed Outcome (scoring never raises)."""
    try:
        return scorer()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return blocked(question, f"the database answered: {first}")
    except Exception as exc:  # noqa: BLE001 - a check explains, it does not crash
        return blocked(question, f"could not check: {type(exc).__name__}: {exc}")


def call_problem(data: Any, name: str) -> str | None:
    """Return why the probe could not call `name` at all, or None when it could."""
    if not isinstance(data, dict):
        return f"could not read back the result of {name} (got {type(data).__name__})"
    if "missing" in data:
        return f"not yet: no `{data['missing']}` is defined; run the cell that defines it first"
    if "not_callable" in data:
        return f"`{name}` should be a function, but it is a {data['not_callable']}"
    if "error" in data:
        return f"checking {name} failed: {data['error']}"
    return None


def not_started(data: Any, name: str) -> str | None:
    """Return the placeholder hint when every call still raised NotImplementedError, else None."""
    calls = data.get("calls") if isinstance(data, dict) else None
    if calls and all(str(c.get("error", "")).startswith("NotImplementedError") for c in calls):
        return error_feedback(name, calls[0]["error"])
    return None


def error_feedback(name: str, err: str) -> str:
    """Explain an exception the learner's function raised."""
    first = err.splitlines()[0] if err else "an error"
    if err.startswith("NotImplementedError"):
        return f"not yet: {name}() still raises NotImplementedError; replace the placeholder with your code"
    if err.startswith(("UndefinedTable", "UndefinedColumn")) or "does not exist" in err:
        return f"{name}() raised {first}: run the cells that create the table first"
    if "current transaction is aborted" in err:
        return (f"{name}() raised {first}: an earlier statement failed on this connection; "
                "run conn.rollback() and try again")
    if "cursor already closed" in err or "the cursor is closed" in err:
        return (f"{name}() raised {first}: the cursor it uses was closed (a `with ... as cur:` block "
                "closes its cursor when it ends); open a cursor inside the function")
    return f"{name}() raised {first}"


def as_pairs(value: Any, what: str) -> tuple[list[tuple[int, float]] | None, str | None]:
    """Read a list of (id, number) pairs, or explain why `value` is not one."""
    if isinstance(value, dict) and "__type__" in value:
        return None, f"{what} should return a list of (id, number) tuples, not a {value['__type__']}"
    if not isinstance(value, list):
        return None, f"{what} should return a list of (id, number) tuples, not {type(value).__name__}"
    pairs = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2):
            return None, f"each result of {what} should be an (id, number) tuple; got {str(item)[:60]}"
        pid, num = item
        if isinstance(pid, bool) or not isinstance(pid, int):
            return None, f"the first element of each result should be the passage id (int); got {pid!r:.40}"
        if isinstance(num, bool) or not isinstance(num, (int, float)):
            return None, f"the second element of each result should be a number; got {num!r:.40}"
        pairs.append((pid, float(num)))
    return pairs, None


def share_found(got: Sequence[int], allowed: set[int], k: int) -> float:
    """Return the share of `got` that is in `allowed` (the true top k, ties included), out of max(k, len)."""
    right = len(set(got) & allowed)
    return min(right, k) / max(k, len(got)) if k else 0.0


def committed(data: Any) -> tuple[float, str | None]:
    """Score the committed part of a table question from what the table probe saw."""
    open_ = data.get("open", []) if isinstance(data, dict) else []
    grading = isinstance(data, dict) and bool(data.get("grading"))
    if not open_:
        return 1.0, None
    names = ", ".join(f"`{o['name']}`" for o in open_)
    first = open_[0]["name"]
    if any(o.get("failed") for o in open_):
        return 0.0, (f"the transaction on {names} failed and was never committed: an earlier statement "
                     f"raised an error; run {first}.rollback(), then your cells again, then {first}.commit()")
    done = " (the grader committed them to check the rest)" if grading else ""
    return 0.0, (f"the rows were never committed{done}: psycopg2 (or psycopg without autocommit) opens a "
                 f"transaction for you; call {first}.commit() after inserting")
