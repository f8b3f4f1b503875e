"""Grading machinery: learners' inline checks, the notebook generator and the batch grader.

What is graded (the exercises' questions) lives in `pgvec_course.questions`.
"""
