"""Practice in the lessons: short "your turn" tasks that `pvc.check(...)` gives feedback on, ungraded.

A lesson cell reads::

    distance = None          # your turn: the L2 distance between [1, 2, 3] and [4, 6, 3], from the server
    pvc.check("why.distance", distance)

Each task is a function that receives the learner's objects (by the names in `needs`) and a
`Context` (connection, embedder), and returns what was right or raises `NotYet` with a hint. The
graded exercises' questions live in `pgvec_course.questions`; these share only `pvc.check`.
"""

from __future__ import annotations

import html
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["NotYet", "Feedback", "Task", "TASKS", "call", "run"]

# Modules that define the tasks, by lesson topic; each holds a TASKS tuple.
_MODULES = ("basics", "search", "production")


class NotYet(Exception):
    """The answer is not right yet; the message is the hint shown to the learner."""


def call(fn: Any, name: str, *args: Any, returns: bool = True) -> Any:
    """Call the learner's function; turn what it raises (or a missing return value) into a hint."""
    if not callable(fn):
        raise NotYet(f"`{name}` should be a function (def {name}(...):), not a {type(fn).__name__}")
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - their error becomes the hint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise NotYet(f"{name}{args!r:.60} raised {type(exc).__name__}: {first}") from None
    if returns and result is None:
        raise NotYet(f"{name}() returned None: write its body (in place of ...) and return the result")
    return result


@dataclass(frozen=True)
class Context:
    conn: psycopg.Connection
    embedder: Any


@dataclass(frozen=True)
class Task:
    id: str
    needs: tuple[str, ...]
    check: Callable[..., str]


@dataclass(frozen=True)
class Feedback:
    """What `pvc.check` says about a practice task: right or not yet, and why."""

    task: str
    passed: bool
    text: str

    def __str__(self) -> str:
        mark = "✔ right" if self.passed else "✘ not yet"
        return f"{mark} ({self.task}, practice): {self.text}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        colour, mark = ("#1a7f37", "✔ right") if self.passed else ("#b35900", "✘ not yet")
        return (f'<div style="border-left:4px solid {colour};padding:2px 8px">'
                f'<b style="color:{colour}">{mark}</b> <code>{html.escape(self.task)}</code> '
                f"<i>(practice)</i>: {html.escape(self.text)}</div>")


class _Registry(Mapping[str, Task]):
    def __init__(self) -> None:
        self._tasks: dict[str, Task] | None = None

    def _load(self) -> dict[str, Task]:
        if self._tasks is None:
            tasks = [t for m in _MODULES for t in importlib.import_module(f".{m}", __name__).TASKS]
            self._tasks = {t.id: t for t in tasks}
        return self._tasks

    def __getitem__(self, task_id: str) -> Task:
        return self._load()[task_id]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


TASKS: Mapping[str, Task] = _Registry()


def run(task_id: str, objs: tuple, names: dict[str, Any], caller: dict[str, Any]) -> Feedback:
    """Check one practice task with the learner's objects (positional, by name, or from `caller`)."""
    task = TASKS[task_id]
    if len(objs) > len(task.needs):
        return Feedback(task_id, False, f"pvc.check({task_id!r}, ...) takes {', '.join(task.needs)}; "
                                        f"got {len(objs)} objects")  # fmt: skip
    values = dict(zip(task.needs, objs, strict=False))
    values.update({k: v for k, v in names.items() if k in task.needs})
    missing = [n for n in task.needs if n not in values and n not in caller]
    if missing:
        return Feedback(task_id, False, f"no `{missing[0]}` is defined yet: run the cell that defines it")
    values.update({n: caller[n] for n in task.needs if n not in values})
    untouched = [n for n in task.needs if values[n] is None]
    if untouched:
        return Feedback(task_id, False, f"`{untouched[0]}` is still None: replace None with your answer")
    conn = names.get("conn", caller.get("conn"))
    own = not isinstance(conn, psycopg.Connection) or conn.closed
    from ..db import connect
    from ..embed import get_embedder

    try:
        if own:
            conn = connect()
        ctx = Context(conn, get_embedder(quiet=True))
        return Feedback(task_id, True, task.check(ctx, **values))
    except NotYet as hint:
        return Feedback(task_id, False, str(hint))
    except Exception as exc:  # noqa: BLE001 - feedback, never a traceback in the learner's face
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Feedback(task_id, False, f"checking it raised {type(exc).__name__}: {first}")
    finally:
        if isinstance(conn, psycopg.Connection):
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                conn.rollback()
            if own:
                conn.close()
