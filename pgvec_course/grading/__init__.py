"""Grading: the exercises' questions, the learners' inline checks, and the instructors' tools."""

from .spec import EXERCISES, Context, Exercise, Outcome, Question, get_exercise, tests_hash

__all__ = ["EXERCISES", "Context", "Exercise", "Outcome", "Question", "get_exercise", "tests_hash"]
