"""Execute, stamp and check the course's notebooks; build them from a compact text source.

    python -m pgvec_course.notebooks run lessons/03_distance_operators.ipynb
    python -m pgvec_course.notebooks check lessons/*.ipynb solutions/*.ipynb
    python -m pgvec_course.notebooks build /tmp/03.txt lessons/03_distance_operators.ipynb

Lessons and solutions are committed with their outputs, so a reader on a code host sees
them. `run` executes a notebook top to bottom in a fresh kernel of the current environment
(offline: local embedder, no API key) and saves it only if no cell raised, with a stamp of
its sources; `check` (and the tests) fail when a notebook's sources changed after it was run.

The text source for `build` is a list of cells, each opened by a marker line:
`# %%` starts a code cell, `# %% [markdown]` a markdown cell; the lines that follow,
up to the next marker, are the cell (markdown written as is, not commented out).

nbval compares the output of cells tagged `nbval-check-output` when the tests run the
notebooks. A cell may instead carry the line `# NBVAL_CHECK_OUTPUT` (easier to type in an
editor): `run` and `build` turn such lines into the tag, so learners never read them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat

CHECK_OUTPUT = "nbval-check-output"  # the tag; nbval also reads the comment "# NBVAL_CHECK_OUTPUT"
# nbval's comment markers, each of which it also accepts as a cell tag (lower case, dashes).
_NBVAL_MARKER = re.compile(r"^\s*#\s*(NBVAL_(?:CHECK_OUTPUT|IGNORE_OUTPUT|RAISES_EXCEPTION|SKIP))\s*$")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
_MARKER = re.compile(r"^# %%(?:\s*\[(markdown|md)\])?\s*$")
_WIDGET = "application/vnd.jupyter.widget-view+json"
_PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[")  # tqdm's "desc:  42%|####  | 5/12 [00:01<...]"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookError(RuntimeError):
    """A notebook failed to run or to check; the message names the notebook and cell."""


def source_hash(nb: nbformat.NotebookNode) -> str:
    """Return the sha256 of the notebook's cell types and sources (outputs not included)."""
    cells = [[cell.cell_type, _text(cell.source)] for cell in nb.cells]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def tag_markers(nb: nbformat.NotebookNode) -> int:
    """Turn nbval comment lines (`# NBVAL_CHECK_OUTPUT`) into the cell tags nbval reads; return the count."""
    moved = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = _text(cell.source).splitlines()
        markers = [m.group(1) for m in map(_NBVAL_MARKER.match, lines) if m]
        if not markers:
            continue
        tags = cell.metadata.setdefault("tags", [])
        for marker in markers:
            tag = marker.lower().replace("_", "-")
            if tag not in tags:
                tags.append(tag)
        cell.source = "\n".join(line for line in lines if not _NBVAL_MARKER.match(line)).strip("\n")
        moved += len(markers)
    return moved


def drop_progress_bars(nb: nbformat.NotebookNode) -> int:
    """Remove progress bars (tqdm widgets) from the outputs; return how many were removed.

    A saved bar shows the text it had when it appeared (often 0%), not how it ended, so a reader
    of the saved notebook would see a wait that never finished; the results follow it anyway.
    """
    dropped = 0
    for cell in nb.cells:
        outputs = cell.get("outputs", [])
        kept = [out for out in outputs if not (
            out.get("output_type") == "display_data" and _WIDGET in out.get("data", {})
            and _PROGRESS.search(_text(out["data"].get("text/plain", ""))))]  # fmt: skip
        if len(kept) != len(outputs):
            dropped += len(outputs) - len(kept)
            cell.outputs = kept
    if not any(_WIDGET in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])):
        dropped += bool(nb.metadata.pop("widgets", None))  # the bars' saved state: nothing shows it now
    return dropped


def stamp_of(nb: nbformat.NotebookNode) -> str | None:
    """Return the source hash recorded when the notebook was last run, if any."""
    return nb.metadata.get("pgvec_course", {}).get("source_hash")


def error_cells(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """Return (cell number, 'Name: message') for every error output; cells count from 1."""
    found = []
    for number, cell in enumerate(nb.cells, start=1):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((number, f"{out.get('ename')}: {_ANSI.sub('', out.get('evalue', ''))}"))
    return found


def stderr_cells(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """Return (cell number, first line) for cells that wrote to stderr (warnings, progress bars)."""
    found = []
    for number, cell in enumerate(nb.cells, start=1):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = _ANSI.sub("", _text(out.get("text", ""))).strip()
                found.append((number, text.splitlines()[0][:100] if text else ""))
                break
    return found


def execute(
    path: str | Path, *, env: dict[str, str] | None = None, timeout: int = 300
) -> nbformat.NotebookNode:
    """Execute a notebook top to bottom in a fresh kernel of this environment; return it, unsaved.

    `env` is the kernel's environment (default: this process's, made offline: the local
    embedder, no API key).
    A cell that raises leaves its error output in the notebook (see `error_cells`); a cell that
    runs out of time, or a kernel that dies, raises NotebookError.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    class _CurrentEnv(KernelSpecManager):
        # The installed python3 kernelspec runs whatever `python` is first on PATH; the
        # notebooks must run with the packages of the environment running this tool.
        def get_kernel_spec(self, kernel_name):
            spec = super().get_kernel_spec(kernel_name)
            spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            return spec

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    tag_markers(nb)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_CurrentEnv())
    client = NotebookClient(
        nb, km=km, timeout=timeout, record_timing=False, allow_errors=False,
        resources={"metadata": {"path": str(path.resolve().parent)}},
    )
    try:
        client.execute(env=_offline_env() if env is None else env, stderr=subprocess.DEVNULL)
    except CellTimeoutError:
        number = _current_cell(nb)
        raise NotebookError(f"{path}: cell {number} did not finish within {timeout} s "
                            f"({_head(nb, number)})") from None
    except DeadKernelError:
        raise NotebookError(f"{path}: the kernel died while running cell {_current_cell(nb)}") from None
    except CellExecutionError:
        pass  # the error output names the cell
    return nb


def run(path: str | Path, *, timeout: int = 300) -> float:
    """Execute a notebook in place, stamp it and save it; raise NotebookError if a cell fails."""
    path = Path(path)
    started = time.perf_counter()
    try:
        nb = execute(path, timeout=timeout)
    except NotebookError as exc:
        raise NotebookError(f"{exc}; notebook not saved") from None
    errors = error_cells(nb)
    if errors:
        number, what = errors[0]
        raise NotebookError(f"{path}: cell {number} raised {what}\n    {_head(nb, number)}\n"
                            "notebook not saved; fix the cell and run it again")
    drop_progress_bars(nb)
    nb.metadata.setdefault("pgvec_course", {})["source_hash"] = source_hash(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - started


def check(path: str | Path) -> list[str]:
    """Return the problems that make a committed notebook unfit (errors, stale or missing stamp)."""
    nb = nbformat.read(path, as_version=4)
    problems = [f"{path}: cell {n} holds an error output ({what})" for n, what in error_cells(nb)]
    stamp = stamp_of(nb)
    if stamp is None:
        problems.append(f"{path}: never run with the tool; run 'python -m pgvec_course.notebooks run {path}'")
    elif stamp != source_hash(nb):
        problems.append(f"{path}: edited since it was last run (stale outputs); "
                        f"run 'python -m pgvec_course.notebooks run {path}'")
    return problems


def build(text: str) -> nbformat.NotebookNode:
    """Return a notebook made from cell-marked text (see the module docstring)."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        match = _MARKER.match(line)
        if match:
            cells.append(("markdown" if match.group(1) else "code", []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise NotebookError("the text must start with a '# %%' or '# %% [markdown]' line")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for kind, lines in cells:
        source = "\n".join(lines).strip("\n")
        new = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(new(source))
    tag_markers(nb)
    return nb


def _offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    env["PGVEC_EMBEDDER"] = "local"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silences a debugger warning on start
    return env


def _current_cell(nb: nbformat.NotebookNode) -> int:
    # The cell that was running is the last code cell with an execution count.
    counted = [i for i, c in enumerate(nb.cells, 1) if c.cell_type == "code" and c.get("execution_count")]
    return counted[-1] if counted else 1


def _head(nb: nbformat.NotebookNode, number: int) -> str:
    lines = [ln for ln in _text(nb.cells[number - 1].source).splitlines() if ln.strip()]
    return f"cell starts: {lines[0][:90]!r}" if lines else "empty cell"


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgvec_course.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute notebooks in place, stamp and save them")
    p_run.add_argument("paths", nargs="+")
    p_run.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    p_check = sub.add_parser("check", help="verify notebooks are error-free and stamped")
    p_check.add_argument("paths", nargs="+")
    p_build = sub.add_parser("build", help="write a notebook (no outputs) from cell-marked text")
    p_build.add_argument("source")
    p_build.add_argument("output")
    args = parser.parse_args(argv)

    if args.command == "build":
        try:
            nb = build(Path(args.source).read_text(encoding="utf-8"))
        except NotebookError as exc:
            print(f"error: {args.source}: {exc}", file=sys.stderr)
            return 1
        nbformat.write(nb, args.output)
        print(f"wrote {args.output} ({len(nb.cells)} cells); now run it with "
              f"'python -m pgvec_course.notebooks run {args.output}'")
        return 0
    if args.command == "check":
        problems = [p for path in args.paths for p in check(path)]
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{len(args.paths)} notebook(s) stamped and error-free")
        return 1 if problems else 0
    failed = 0
    for path in args.paths:
        try:
            seconds = run(path, timeout=args.timeout)
        except NotebookError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        nb = nbformat.read(path, as_version=4)
        print(f"ran {path} in {seconds:.1f} s; stamped {stamp_of(nb)[:12]}")
        for number, line in stderr_cells(nb):
            print(f"  note: cell {number} wrote to stderr (learners will see it): {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
