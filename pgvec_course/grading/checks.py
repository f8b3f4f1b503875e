"""Inline checks for learners: `pvc.check("kb.ask", ask)`, and the masters' self-test.

`pvc.check` runs the question's public probe against the learner's own objects, in-process, and
scores it exactly as the autograder would; it returns the `Outcome` (shown as a one-line pass/fail
with a hint) and never raises for a failing answer.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import psycopg

from ..practice import TASKS as PRACTICE
from ..practice import Feedback
from ..practice import run as run_practice
from ..questions.scoring import blocked, safe_score
from ..questions.spec import RESULT_NAME, Context, Outcome, find_question


def check(question_id: str, *objs: Any, **names: Any) -> Outcome | Feedback:
    """Run one question's public checks against your objects and database; return the outcome.

    Pass your function(s) in the order the question names them (`pvc.check("kb.ask", ask)`) or
    by name; names you leave out are read from your notebook (`pvc.check("bench.sweep")` reads
    `results`). A `conn=` keyword that is a psycopg connection is used for the references;
    otherwise a new connection to the course database is opened.
    """
    if question_id in PRACTICE:  # the lessons' ungraded practice shares this entry point
        return run_practice(question_id, objs, names, sys._getframe(1).f_globals)
    try:
        _, question = find_question(question_id)
    except KeyError as exc:
        return Outcome(question_id, 0.0, 0.0, False, str(exc).strip("'\""))
    if len(objs) > len(question.needs):
        wanted = ", ".join(question.needs) or "keyword arguments only"
        return Outcome(question.id, 0.0, question.points, False,
                       f"pvc.check({question_id!r}, ...) takes {wanted}; got {len(objs)} objects")
    # A copy of the notebook's variables (where the check was called), with the objects passed in
    # on top: the probe finds what you did not pass, and writes nothing into your notebook.
    namespace: dict[str, Any] = dict(sys._getframe(1).f_globals)
    namespace.update(zip(question.needs, objs, strict=False))
    namespace.update(names)
    conn = names.get("conn")
    own = not isinstance(conn, psycopg.Connection)
    try:
        if own:
            from ..db import connect

            conn = connect()
        from ..embed import get_embedder

        ctx = Context(conn=conn, embedder=get_embedder(quiet=True))
        probe = question.probe(question.public)
        exec(compile(probe, f"<check {question_id}>", "exec"), namespace)  # noqa: S102
        # A JSON round trip so that inline checks see exactly what the autograder would.
        data = json.loads(json.dumps(namespace.get(RESULT_NAME), default=str))
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        return safe_score(question, lambda: question.score(data, ctx, question.public))
    except Exception as exc:  # noqa: BLE001 - never raise into the learner's face
        return blocked(question, f"could not run the check: {exc}")
    finally:
        if own and isinstance(conn, psycopg.Connection):
            conn.close()


def self_test(exercise_name: str, namespace: dict[str, Any], *, hidden: str | None = None) -> list[Outcome]:
    """Score every question of an exercise on public and hidden inputs; raise unless all pass."""
    from ..db import connect
    from ..embed import get_embedder
    from ..questions.spec import get_exercise
    from . import hidden as hidden_tests

    exercise = get_exercise(exercise_name)
    tests = hidden_tests.load(exercise, hidden)
    outcomes = []
    with connect() as conn:
        ctx = Context(conn=conn, embedder=get_embedder(quiet=True))
        for inputs in ({q.id: q.public for q in exercise.questions}, tests.inputs):
            for q in exercise.questions:
                exec(compile(q.probe(inputs[q.id]), f"<probe {q.id}>", "exec"), namespace)  # noqa: S102
                data = json.loads(json.dumps(namespace.pop(RESULT_NAME, None), default=str))
                outcomes.append(safe_score(q, lambda q=q, d=data, i=inputs[q.id]: q.score(d, ctx, i)))
    failed = [str(o) for o in outcomes if not o.passed]
    if failed:
        raise AssertionError("not every question passes:\n" + "\n".join(failed))
    return outcomes
