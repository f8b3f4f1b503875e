"""The exercises' questions: what each exercise asks, its rubric, public inputs and how it is scored.

The machinery that runs them (inline checks, the batch grader) lives in `pgvec_course.grading`, the
notebook generator in `pgvec_course.authoring`; the grader's hidden inputs live with the solution
masters, not here.
"""

from .spec import (
    EXERCISES,
    Context,
    Exercise,
    Outcome,
    Part,
    PartScore,
    Question,
    find_question,
    get_exercise,
    tests_hash,
)

# Helper modules every exercise's scores depend on (tests_hash reads their source).
SHARED = ("fusion", "probes", "scoring", "sweep", "tables")

__all__ = ["EXERCISES", "Context", "Exercise", "Outcome", "Part", "PartScore", "Question", "find_question",
           "get_exercise", "tests_hash"]
