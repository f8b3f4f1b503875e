"""Helpers for the pgvec-course lessons: connections, embeddings, queries, benchmarks, grading."""

from .db import connect

__all__ = ["connect"]
__version__ = "0.1.0"
