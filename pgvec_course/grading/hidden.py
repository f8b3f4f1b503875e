"""Hidden tests: the grader's own inputs and references, kept by the instructor, never in the package.

One Python file per exercise, named after it (`01_knowledge_base.py`), in the hidden-tests folder:
the course repository's `solutions/hidden/` unless `--hidden DIR` or `PGVEC_HIDDEN_DIR` says
otherwise (a Gradescope zip carries its own). Each file defines `INPUTS`, a dict from every
question id of the exercise to that question's hidden inputs (None where the question has none);
their shape is the one of the question's `public` inputs, or a function where the question module
says so. `pgvec-course release` leaves the folder out of the learner's copy.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import HOME_DIR, settings
from ..questions import Exercise, tests_hash

FOLDER = Path("solutions") / "hidden"


class HiddenTestsError(FileNotFoundError):
    """The hidden tests of an exercise are missing or malformed."""


@dataclass(frozen=True)
class HiddenTests:
    """An exercise's hidden inputs per question, and the file they came from."""

    exercise: Exercise
    inputs: Mapping[str, Any]
    path: Path
    source: bytes

    @property
    def tests_hash(self) -> str:
        """Return the hash of everything that decides the scores, these hidden tests included."""
        return tests_hash(self.exercise, self.source)

    def probes(self) -> dict[str, str]:
        """Return each question's probe source for grading."""
        return {q.id: q.probe(self.inputs[q.id], grading=True) for q in self.exercise.questions}


def default_folder() -> Path:
    """Return where hidden tests are read from when no folder is given."""
    return settings().hidden_dir or HOME_DIR / FOLDER


def load(exercise: Exercise, folder: str | Path | None = None) -> HiddenTests:
    """Load an exercise's hidden tests from `folder` (default: `default_folder()`)."""
    folder = Path(folder) if folder else default_folder()
    path = folder / f"{exercise.name}.py"
    if not path.is_file():
        raise HiddenTestsError(
            f"no hidden tests for {exercise.name} in {folder}: grade from the course repository (its "
            "solutions/hidden/ folder), or pass --hidden DIR (or set PGVEC_HIDDEN_DIR) to the folder "
            "that holds them")
    source = path.read_bytes()
    name = f"pgvec_course_hidden_{exercise.name}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # inspect.getsource needs the module to find a function's text
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise HiddenTestsError(f"{path} does not load: {type(exc).__name__}: {exc}") from exc
    inputs = getattr(module, "INPUTS", None)
    wanted = [q.id for q in exercise.questions]
    if not isinstance(inputs, dict) or sorted(inputs) != sorted(wanted):
        have = ", ".join(sorted(inputs)) if isinstance(inputs, dict) else "no INPUTS dict"
        raise HiddenTestsError(f"{path} must define INPUTS for exactly the questions {', '.join(wanted)} "
                               f"(it has {have})")
    return HiddenTests(exercise, inputs, path, source)
