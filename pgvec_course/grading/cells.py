"""What a notebook's code cells do, read from their syntax: checks, and where a name is defined."""

from __future__ import annotations

import ast

from . import _syntax, culprits


def is_check_cell(source: str) -> bool:
    """Return True for a cell that only calls `check(...)`/`pvc.check(...)`: grading skips it.

    So are a master's `### HIDDEN` cells (instructors' self-tests, stripped from the exercises).
    """
    if source.lstrip().startswith("### HIDDEN"):
        return True
    try:
        body = _syntax.parse(source).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
        return False
    return bool(body) and all(
        isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
        and ((isinstance(f := stmt.value.func, ast.Attribute) and f.attr == "check")
             or (isinstance(f, ast.Name) and f.id == "check"))
        for stmt in body
    )


def defining_cell(sources: list[str], names: tuple[str, ...]) -> int | None:
    """Return the index of the last cell that binds any of `names` at its top level, or None."""
    found = None
    for index, source in enumerate(sources):
        if culprits.bound_at_top_level(source) & set(names):
            found = index
    return found
