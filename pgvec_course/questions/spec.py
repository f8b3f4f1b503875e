"""What is graded: exercises, their questions and rubrics, and the outcome of one question.

Shared by the inline checks (`pvc.check`) and the batch autograder (`pgvec-course grade`). A question
is two functions and some data. `probe(inputs, grading=...)` returns Python source that runs in the
learner's namespace after their code and stores plain JSON-able data in `__pvc_result__`;
`score(data, ctx, inputs)` turns that data into an `Outcome`, part by part of the question's rubric,
comparing it with references the scorer computes itself. The inputs are the question's `public`
ones for inline checks; the grader's come from the hidden tests the instructor keeps
(`solutions/hidden/`, see `pgvec_course.grading.hidden`), never from this package.
"""

from __future__ import annotations

import hashlib
import html
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from ..embed import Embedder

RESULT_NAME = "__pvc_result__"


@dataclass(frozen=True)
class Part:
    """One line of a question's rubric: `points` for what `text` says."""

    name: str
    points: float
    text: str


@dataclass(frozen=True)
class PartScore:
    """How one rubric part scored; `hint` says what is missing (None when it earned every point)."""

    name: str
    points: float
    max_points: float
    text: str
    hint: str | None = None

    @property
    def passed(self) -> bool:
        return self.hint is None


@dataclass(frozen=True)
class Outcome:
    question: str
    points: float
    max_points: float
    passed: bool
    feedback: str
    parts: tuple[PartScore, ...] = ()

    def _hint(self) -> str:
        # Some hints open with "not yet:" for the grader's report; the mark already says it.
        return self.feedback.removeprefix("not yet: ")

    def rubric_lines(self) -> list[str]:
        """Return one line per rubric part: mark, name, points and what it is for."""
        return [f"{'✔' if p.passed else '✘'} {p.name} {p.points:g}/{p.max_points:g}: {p.text}"
                for p in self.parts]

    def __str__(self) -> str:
        mark = "✔ passed" if self.passed else "✘ not yet"
        head = f"{mark} {self.question} ({self.points:g}/{self.max_points:g} points): {self._hint()}"
        return "\n".join([head, *("    " + line for line in self.rubric_lines())])

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        colour, mark = ("#1a7f37", "✔ passed") if self.passed else ("#b35900", "✘ not yet")
        rows = "".join(f"<li>{html.escape(line)}</li>" for line in self.rubric_lines())
        rubric = f'<ul style="margin:2px 0">{rows}</ul>' if rows else ""
        return (f'<div style="border-left:4px solid {colour};padding:2px 8px">'
                f'<b style="color:{colour}">{mark}</b> <code>{html.escape(self.question)}</code> '
                f"({self.points:g}/{self.max_points:g} points): {html.escape(self._hint())}{rubric}</div>")


@dataclass(frozen=True)
class Context:
    conn: psycopg.Connection  # to the database the learner's code used
    embedder: Embedder  # the reference embedder: what the learner's vectors must match
    # References computed once per context (re-embedded rows, corpus vectors), shared by questions.
    memo: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Question:
    id: str
    title: str
    rubric: tuple[Part, ...]
    probe: Callable[..., str]
    score: Callable[[Any, Context, Any], Outcome]
    # Names the probe reads from the learner's namespace; the inline check binds positional
    # arguments to them in this order.
    needs: tuple[str, ...] = ()
    public: Any = None  # the inputs of the inline checks
    # Typical mistakes the public or hidden inputs must tell apart from the reference
    # (tests/test_inputs.py computes each one and asserts it gives a different answer).
    mistakes: tuple[str, ...] = ()

    @property
    def points(self) -> float:
        return sum(p.points for p in self.rubric)


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


def tests_hash(exercise: Exercise, hidden: bytes = b"") -> str:
    """Return a short hash of everything that decides this exercise's scores, hidden tests included."""
    h = hashlib.sha256()
    modules = {inspect.getmodule(q.score) for q in exercise.questions} | {inspect.getmodule(Outcome)}
    package = importlib.import_module(__package__)
    modules |= {importlib.import_module(f"{__package__}.{name}") for name in package.SHARED}
    for module in sorted(modules, key=lambda m: m.__name__ if m else ""):
        if module is not None:
            h.update(inspect.getsource(module).encode())
    for q in exercise.questions:
        h.update(f"{q.id}|{q.rubric}|{q.public!r}".encode())
    h.update(hidden)
    return h.hexdigest()[:16]
