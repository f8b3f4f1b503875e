"""Name the later cell that broke a learner's function: one that rebinds a global the function reads."""

from __future__ import annotations

import ast
from collections.abc import Iterable

import nbformat

from . import _syntax


def _parse(source: str) -> ast.Module | None:
    try:
        return _syntax.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
        return None


def globals_read(source: str, function: str) -> set[str]:
    """Return the global names that `function`, defined in `source`, reads (empty if not found)."""
    tree = _parse(source)
    if tree is None:
        return set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            args = node.args
            local = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
            local |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
            loads, stores = set(), set()
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name):
                    (loads if isinstance(sub.ctx, ast.Load) else stores).add(sub.id)
                elif isinstance(sub, (ast.Global, ast.Nonlocal)):
                    loads.update(sub.names)
            return loads - stores - local
    return set()


def bound_at_top_level(source: str) -> set[str]:
    """Return the names a cell binds at its top level (assignments, with/for targets, imports, defs)."""
    tree = _parse(source)
    if tree is None:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
            continue
        # Everything else: any name stored outside a nested function or class body.
        stack: list[ast.AST] = [node]
        while stack:
            sub = stack.pop()
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                names.add(sub.id)
            if not isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.extend(ast.iter_child_nodes(sub))
    return names


def later_cell_that_broke(nb: nbformat.NotebookNode, after_cell: int, functions: Iterable[str]) -> str:
    """Explain which cell after `after_cell` (1-based) rebinds a global that the functions read."""
    cells = nb.cells
    defining = cells[after_cell - 1].source if 0 < after_cell <= len(cells) else ""
    used = {name: globals_read(defining, name) for name in functions}
    for number, cell in enumerate(cells[after_cell:], start=after_cell + 1):
        if cell.cell_type != "code":
            continue
        rebound = bound_at_top_level(cell.source)
        for function, names in used.items():
            hit = sorted(names & rebound)
            if hit:
                return (f"cell {number} rebinds `{hit[0]}`, which {function}() uses: give one of them "
                        "another name")
    return f"a cell after cell {after_cell} changed something it uses"
