"""The exercises' questions: what each exercise asks, its points, public inputs and how it is scored.

The machinery that runs them (inline checks, the batch grader, the notebook generator) lives in
`pgvec_course.grading`.
"""

from .spec import EXERCISES, Context, Exercise, Outcome, Question, find_question, get_exercise, tests_hash

__all__ = ["EXERCISES", "Context", "Exercise", "Outcome", "Question", "find_question", "get_exercise",
           "tests_hash"]
