"""Run a submission in a fresh kernel, then each question's probe after it, and take back plain data."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

OUTPUT_LIMIT = 64_000  # characters kept per learner cell; the rest is dropped as it arrives
PROBE_OUTPUT_LIMIT = 8_000_000  # a probe prints one line of JSON
# A notebook that allocates without bound gets a MemoryError, not the whole machine swapping.
MEMORY_LIMIT = 4 * 2**30
_MEMORY_CAP = ("--IPKernelApp.exec_lines=import resource as __r; "
               f"__r.setrlimit(__r.RLIMIT_DATA, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); del __r")
RECOVER_SECONDS = 5  # after an interrupt, how long a kernel may take to answer again


@dataclass
class Probe:
    """What one question's probe gave back: `data` (parsed JSON) or `error`, and its run time.

    `after_cell` is the 1-based notebook cell after which it ran (None: after the last cell).
    """

    data: Any = None
    error: str | None = None
    seconds: float = 0.0
    after_cell: int | None = None


@dataclass
class Execution:
    """How a notebook ran: `status` is ok, timeout (whole notebook), hung or kernel_died."""

    status: str = "ok"
    detail: str = ""
    cells_run: int = 0
    errors: list[str] = field(default_factory=list)
    timed_out_cells: list[int] = field(default_factory=list)
    seconds: float = 0.0
    probes: dict[str, Probe] = field(default_factory=dict)
    # The same probes run right after the learner's cell that last defines what the question
    # reads, when later cells follow it: scoring keeps the better result and names the later
    # cell that broke it.
    early: dict[str, Probe] = field(default_factory=dict)


class _Client(NotebookClient):
    """A NotebookClient that keeps at most `limit` characters of each cell's output."""

    def __init__(self, nb: nbformat.NotebookNode, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self.limit = OUTPUT_LIMIT
        self.used: dict[int, int] = {}

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):  # noqa: ANN001
        self.output_task = asyncio.current_task()
        return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)

    def drop_stale_reader(self) -> None:
        """Cancel a timed-out cell's output reader, which nbclient leaves running to steal later output."""
        task = getattr(self, "output_task", None)
        if task is not None and not task.done():
            task.cancel()

    def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001 - nbclient's signature
        content = msg["content"]
        size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
        size += sum(len(line) for line in content.get("traceback", []))
        used = self.used.get(cell_index, 0)
        self.used[cell_index] = used + size
        if used + size <= self.limit:
            return super().output(outs, msg, display_id, cell_index)
        if used <= self.limit:  # say once that the rest is gone
            outs.append(nbformat.v4.new_output(
                "stream", name="stderr", text=f"\n[output truncated after {self.limit:,} characters]\n"))
        return None


def is_check_cell(source: str) -> bool:
    """Return True for a cell that only calls `check(...)`/`pvc.check(...)`: grading skips it.

    So are a master's `### HIDDEN` cells (instructors' self-tests, stripped from the exercises).
    """
    if source.lstrip().startswith("### HIDDEN"):
        return True
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    return bool(body) and all(
        isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
        and ((isinstance(f := stmt.value.func, ast.Attribute) and f.attr == "check")
             or (isinstance(f, ast.Name) and f.id == "check"))
        for stmt in body
    )


def _probe_cell(source: str, marker: str) -> str:
    # The probe runs through exec() so that a probe (or the learner's code it calls) that raises,
    # or is interrupted, still leaves a line the grader can read.
    return (
        "__pvc_result__ = None\n"
        "try:\n"
        f"    exec(compile({source!r}, '<grader probe>', 'exec'), globals())\n"
        "except BaseException as __pvc_exc:\n"
        "    __pvc_result__ = {'error': f'{type(__pvc_exc).__name__}: {__pvc_exc}'[:500]}\n"
        "import json as __pvc_json\n"
        f"print({marker!r} + __pvc_json.dumps(__pvc_result__, default=repr))\n"
    )


def _read_probe(cell: nbformat.NotebookNode, marker: str) -> Any:
    text = "".join(o.get("text", "") for o in cell.outputs
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    # Anywhere in the text: the learner's code may have printed without a final newline.
    at = text.rfind(marker)
    if at < 0:
        raise ValueError("the probe printed no result")
    return json.loads(text[at + len(marker):].split("\n", 1)[0])


def execute(
    nb: nbformat.NotebookNode, *, probes: dict[str, str], env: dict[str, str], cwd: Path,
    cell_timeout: int, notebook_timeout: int,
) -> Execution:
    """Run the notebook's code cells, then each probe source, in one fresh kernel."""
    started = time.monotonic()
    deadline = started + notebook_timeout
    run = Execution()
    # IPC sockets in the submission's own folder, not TCP ports any local process could try.
    km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=str(cwd / "kernel"))
    client = _Client(
        nb, km=km, kernel_name="python3", extra_arguments=[_MEMORY_CAP], allow_errors=True,
        timeout=cell_timeout, interrupt_on_timeout=False, shutdown_kernel="immediate", startup_timeout=60,
        iopub_timeout=4, record_timing=False,
    )
    client.on_cell_error = lambda cell, cell_index, execute_reply: run.errors.append(
        f"cell {cell_index + 1}: {execute_reply['content'].get('ename')}: "
        f"{str(execute_reply['content'].get('evalue'))[:300]}")
    try:
        # cleanup_kc: nbclient only stops kernels it created itself, and this one we made.
        with client.setup_kernel(env=env, cwd=str(cwd), cleanup_kc=True):
            _run_cells(client, run, cell_timeout, deadline)
            if run.status in ("ok", "timeout"):  # the kernel still answers: probe what is there
                _run_probes(client, run, probes, cell_timeout)
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot start fails this submission only
        run.status, run.detail = "error", f"could not run the notebook: {type(exc).__name__}: {exc}"[:500]
    finally:
        if km.has_kernel:  # setup_kernel failed half-way, or the clean-up above did not finish
            with contextlib.suppress(Exception):
                run_sync(km.shutdown_kernel)(now=True)
    run.seconds = time.monotonic() - started
    return run


def _run_cells(client: _Client, run: Execution, cell_timeout: int, deadline: float) -> None:
    for index, cell in enumerate(list(client.nb.cells)):
        if cell.cell_type != "code" or not cell.source.strip() or is_check_cell(cell.source):
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            run.status = "timeout"
            run.detail = f"the notebook ran out of time (its limit) before cell {index + 1}"
            return
        client.timeout = max(1, int(min(cell_timeout, left)))
        try:
            client.execute_cell(cell, index)
            run.cells_run += 1
        except CellTimeoutError:
            limit = client.timeout
            run.timed_out_cells.append(index + 1)
            run.errors.append(f"cell {index + 1}: stopped after {limit} s")
            if not _recover(client):
                run.status = "hung"
                run.detail = f"cell {index + 1} ran past {limit} s and the kernel did not stop"
                return
        except DeadKernelError:
            run.status, run.detail = "kernel_died", f"the kernel died (crash or exit) in cell {index + 1}"
            return


def _recover(client: _Client) -> bool:
    """Interrupt the kernel and return whether it answers again."""
    client.drop_stale_reader()
    run_sync(client.km.interrupt_kernel)()
    ping = nbformat.v4.new_code_cell("pass")
    client.nb.cells.append(ping)
    client.timeout = RECOVER_SECONDS
    try:
        client.execute_cell(ping, len(client.nb.cells) - 1)
        return True
    except CellTimeoutError:
        client.drop_stale_reader()
        return False


def _run_probes(client: _Client, run: Execution, probes: dict[str, str], cell_timeout: int) -> None:
    client.limit = PROBE_OUTPUT_LIMIT
    for question, source in probes.items():
        marker = f"__pvc_{secrets.token_hex(16)}__ "  # fresh per probe: the learner cannot forge it
        cell = nbformat.v4.new_code_cell(_probe_cell(source, marker))
        client.nb.cells.append(cell)
        client.timeout = cell_timeout
        started = time.monotonic()
        probe = run.probes[question] = Probe()
        try:
            client.execute_cell(cell, len(client.nb.cells) - 1)
            probe.data = _read_probe(cell, marker)
        except CellTimeoutError:
            probe.error = f"your code did not finish within {cell_timeout} s"
            if not _recover(client):
                run.status, run.detail = "hung", f"the kernel hung while grading {question}"
                break
        except DeadKernelError:
            probe.error = "the kernel died while running your code"
            run.status, run.detail = "kernel_died", f"the kernel died (crash or exit) in {question}"
            break
        except (ValueError, TypeError) as exc:
            probe.error = f"no result could be read back ({exc})"
        finally:
            probe.seconds = time.monotonic() - started
