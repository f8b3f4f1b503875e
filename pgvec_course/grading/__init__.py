"""Grading a submission: run its notebook, read its answers back, score them, write the gradebook.

What is graded (the exercises' questions) lives in `pgvec_course.questions`; how an untrusted
notebook is kept in its box in `pgvec_course.isolation`; what instructors hand out (student
notebooks, the learner's copy, the Gradescope autograder) in `pgvec_course.authoring`.
"""
