"""What is graded: exercises, their questions and points, and the outcome of one question.

Shared by the inline checks (`pvc.check`) and the batch autograder (`pgvec-course grade`). A question
is two functions: `probe(hidden)` returns Python source that runs in the learner's namespace after
their code and stores plain JSON-able data in `__pvc_result__`; `score(data, ctx, hidden)` turns that
data into an `Outcome` by comparing it with references computed at scoring time.
"""

from __future__ import annotations

import hashlib
import html
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from ..embed import Embedder

RESULT_NAME = "__pvc_result__"


@dataclass(frozen=True)
class Outcome:
    question: str
    points: float
    max_points: float
    passed: bool
    feedback: str

    def _hint(self) -> str:
        # Some hints open with "not yet:" for the grader's report; the mark already says it.
        return self.feedback.removeprefix("not yet: ")

    def __str__(self) -> str:
        mark = "✔ passed" if self.passed else "✘ not yet"
        return f"{mark} {self.question} ({self.points:g}/{self.max_points:g} points): {self._hint()}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        colour, mark = ("#1a7f37", "✔ passed") if self.passed else ("#b35900", "✘ not yet")
        return (f'<div style="border-left:4px solid {colour};padding:2px 8px">'
                f'<b style="color:{colour}">{mark}</b> <code>{html.escape(self.question)}</code> '
                f"({self.points:g}/{self.max_points:g} points): {html.escape(self._hint())}</div>")


@dataclass(frozen=True)
class Context:
    conn: psycopg.Connection  # to the database the learner's code used
    embedder: Embedder


@dataclass(frozen=True)
class Question:
    id: str
    title: str
    points: float
    probe: Callable[[bool], str]
    score: Callable[[Any, Context, bool], Outcome]
    # Names the probe reads from the learner's namespace (functions, tables' variables); the inline
    # check binds positional arguments to them in this order.
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str
    questions: tuple[Question, ...]
    timeout: int  # seconds for executing the whole notebook

    @property
    def max_points(self) -> float:
        return sum(q.points for q in self.questions)

    def question(self, question_id: str) -> Question:
        """Return the question with this id."""
        for q in self.questions:
            if q.id == question_id:
                return q
        known = ", ".join(q.id for q in self.questions)
        raise KeyError(f"exercise {self.name} has no question {question_id!r}; its questions: {known}")


# Exercise name -> module in this package defining EXERCISE. Loaded on first use because the
# modules import the dataclasses above.
_MODULES = {
    "01_knowledge_base": "knowledge_base",
    "02_index_benchmark": "index_benchmark",
    "03_hybrid_search": "hybrid",
}


class _Registry(Mapping[str, Exercise]):
    def __init__(self) -> None:
        self._loaded: dict[str, Exercise] = {}

    def __getitem__(self, name: str) -> Exercise:
        if name not in _MODULES:
            raise KeyError(name)
        if name not in self._loaded:
            module = importlib.import_module(f".{_MODULES[name]}", __package__)
            self._loaded[name] = module.EXERCISE
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


EXERCISES: Mapping[str, Exercise] = _Registry()


def get_exercise(name: str) -> Exercise:
    """Return the exercise called `name` (for example "01_knowledge_base")."""
    if name not in _MODULES:
        raise KeyError(f"unknown exercise {name!r}; known: {', '.join(_MODULES)}")
    return EXERCISES[name]


def find_question(question_id: str) -> tuple[Exercise, Question]:
    """Return the exercise and question for an id such as "kb.ask"."""
    for exercise in EXERCISES.values():
        for q in exercise.questions:
            if q.id == question_id:
                return exercise, q
    known = ", ".join(q.id for e in EXERCISES.values() for q in e.questions)
    raise KeyError(f"unknown question {question_id!r}; known: {known}")


def tests_hash(exercise: Exercise) -> str:
    """Return a short hash of everything that decides this exercise's scores."""
    h = hashlib.sha256()
    modules = {inspect.getmodule(q.score) for q in exercise.questions} | {inspect.getmodule(Outcome)}
    for module in sorted(modules, key=lambda m: m.__name__ if m else ""):
        if module is not None:
            h.update(inspect.getsource(module).encode())
    for q in exercise.questions:
        h.update(f"{q.id}|{q.points}|{q.probe(True)}|{q.probe(False)}".encode())
    return h.hexdigest()[:16]
