"""Python's `ast` for the grader's threads, one tree at a time."""

from __future__ import annotations

import ast
import threading
from typing import Any

# Python 3.11 keeps the AST constructor's recursion depth per interpreter, not per thread. With
# --jobs 2 two grading threads build trees (cells, culprits, answers), and a garbage-collector
# finalizer may hand the GIL over mid-build: the other thread's tree then fails with "SystemError:
# AST constructor recursion depth mismatch" (python/cpython#106905) and a fair notebook scored
# `error`. Building them one at a time is cheap: they are small.
_LOCK = threading.Lock()


def parse(source: str, *, mode: str = "exec") -> ast.AST:
    """Return the syntax tree of `source` (raises SyntaxError or ValueError like ast.parse)."""
    with _LOCK:
        return ast.parse(source, mode=mode)


def literal_eval(text: str) -> Any:
    """Return the Python literal written in `text`, as ast.literal_eval does."""
    return ast.literal_eval(parse(text.lstrip(" \t"), mode="eval"))
