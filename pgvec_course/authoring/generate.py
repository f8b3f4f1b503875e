"""Write the learners' exercise notebooks from the solution masters (`pgvec-course generate`).

In a master's code cells, the lines between `### BEGIN SOLUTION` and `### END SOLUTION` become a
placeholder: `raise NotImplementedError(hint)` inside a function, `pass` after a `# TODO` comment
at the top level. The hint is the text in brackets after BEGIN SOLUTION: `### BEGIN SOLUTION (Write
ask(): ...)`; in a markdown cell the block becomes that hint in italics. Lines between
`### BEGIN HIDDEN` and `### END HIDDEN` are dropped, and so are cells whose first line is
`### HIDDEN` or whose metadata says `{"pgvec_course": {"hidden": true}}`.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

_BEGIN = re.compile(r"^(?P<indent>\s*)### BEGIN SOLUTION(?:\s*\((?P<hint>.*)\))?\s*$")
_END = re.compile(r"^\s*### END SOLUTION\s*$")
_BEGIN_HIDDEN = re.compile(r"^\s*### BEGIN HIDDEN\s*$")
_END_HIDDEN = re.compile(r"^\s*### END HIDDEN\s*$")
_HIDDEN_CELL = re.compile(r"^\s*### HIDDEN\b")
DEFAULT_HINT = "Replace this line with your code"


class MarkerError(ValueError):
    """A master notebook's solution or hidden markers do not pair up."""


def strip_solution(source: str, *, where: str = "cell", markdown: bool = False) -> str:
    """Return a cell's source with solution blocks replaced by placeholders and hidden lines gone."""
    out: list[str] = []
    state = None  # None, "solution" or "hidden"
    for number, line in enumerate(source.splitlines(), start=1):
        begin = _BEGIN.match(line)
        if state is None and begin:
            indent, hint = begin.group("indent"), begin.group("hint") or DEFAULT_HINT
            if markdown:
                out.append(f"*{hint}*" if hint != DEFAULT_HINT else "*Write your answer here.*")
            elif indent:
                out.append(f"{indent}raise NotImplementedError({hint!r})")
            else:
                out += [f"# TODO: {hint}", "pass"]  # not `...`: as a cell's last line it would print Ellipsis
            state = "solution"
        elif state is None and _BEGIN_HIDDEN.match(line):
            state = "hidden"
        elif state == "solution" and _END.match(line) or state == "hidden" and _END_HIDDEN.match(line):
            state = None
        elif _BEGIN.match(line) or _END.match(line) or _BEGIN_HIDDEN.match(line) or _END_HIDDEN.match(line):
            raise MarkerError(f"{where}, line {number}: unexpected {line.strip()!r}")
        elif state is None:
            out.append(line)
    if state is not None:
        raise MarkerError(f"{where}: a ### BEGIN {state.upper()} block is never closed")
    return "\n".join(out).strip("\n")


def is_hidden(cell: nbformat.NotebookNode) -> bool:
    """Return True for a cell that only the master keeps."""
    return bool(cell.metadata.get("pgvec_course", {}).get("hidden")) or bool(_HIDDEN_CELL.match(cell.source))


def student_notebook(master: nbformat.NotebookNode, master_path: str) -> nbformat.NotebookNode:
    """Return the exercise notebook for a master: no solutions, no hidden cells, no outputs."""
    name = Path(master_path).stem
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = copy.deepcopy(master.metadata.get("kernelspec", {}))
    nb.metadata["language_info"] = {"name": "python"}
    # Where it came from is for instructors: metadata, not the first line a learner reads.
    nb.metadata["pgvec_course"] = {"exercise": name, "generated": True, "source": master_path}
    header = nbformat.v4.new_markdown_cell(
        "*This notebook is yours: replace each `# TODO` and `NotImplementedError` with your code, and run "
        "the check cell after each task.*")
    header.id = "generated-header"
    nb.cells.append(header)
    for number, cell in enumerate(master.cells, start=1):
        if is_hidden(cell):
            continue
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(strip_solution(cell.source, where=f"{master_path} cell {number}"))
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(
                strip_solution(cell.source, where=f"{master_path} cell {number}", markdown=True))
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        new.id = cell.get("id") or f"cell-{number}"  # stable ids keep regeneration byte-identical
        meta = {k: v for k, v in cell.metadata.items() if k not in ("pgvec_course", "execution")}
        new.metadata.update(copy.deepcopy(meta))
        nb.cells.append(new)
    return nb


def generate(root: str | Path = ".", *, check: bool = False) -> list[Path]:
    """Write exercises/ from solutions/ (or, with check, only report); return the out-of-date files."""
    root = Path(root)
    masters = sorted((root / "solutions").glob("*.ipynb"))
    if not masters:
        raise FileNotFoundError(f"no master notebooks in {root / 'solutions'}: run this from the course "
                                "repository's top folder, or pass --root")
    stale: list[Path] = []
    wanted = set()
    for master_path in masters:
        target = root / "exercises" / master_path.name
        wanted.add(target)
        master = nbformat.read(master_path, as_version=4)
        text = nbformat.writes(student_notebook(master, f"solutions/{master_path.name}")) + "\n"
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not check:
                target.parent.mkdir(exist_ok=True)
                target.write_text(text, encoding="utf-8")
    for extra in sorted((root / "exercises").glob("*.ipynb")):
        if extra not in wanted:
            stale.append(extra)
            if not check:
                extra.unlink()
    return stale


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        stale = generate(args.root, check=args.check)
    except (FileNotFoundError, MarkerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.check:
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        if stale:
            print("run 'pgvec-course generate' and commit exercises/", file=sys.stderr)
            return 1
        print("exercises/ is up to date with solutions/")
        return 0
    print("\n".join(f"wrote {p}" if p.exists() else f"removed {p}" for p in stale) or "nothing to do")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `pgvec-course generate`."""
    p = sub.add_parser("generate", help="write exercises/ from the solution masters")
    p.add_argument("--check", action="store_true", help="only report out-of-date exercises (exit 1 if any)")
    p.add_argument("--root", default=".", help="the course repository's top folder (default: .)")
    p.set_defaults(func=cmd_generate)
