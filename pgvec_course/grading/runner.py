"""Run a submission in a fresh kernel, then each question's probe after it, and take back plain data.

A question whose function a later cell may break (a provided cell that reuses the learner's
global `cur`, say) is also probed right after the last cell that defines what it needs, so the
grader can keep the better of the two results and say which later cell changed what.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import zmq
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from . import cells, channel
from .cells import is_check_cell  # noqa: F401 - part of this module's interface

OUTPUT_LIMIT = 64_000  # characters kept per learner cell; the rest is dropped as it arrives
# What the grader's sockets take from a kernel, which no cap bounds in the grader: 30 MB messages
# in a loop grew it by 1.6 GB. A bigger message is refused (and that socket hears no more from the
# kernel: its later output is lost, each later cell waits out iopub_timeout); at most QUEUED messages
# wait per socket. The biggest answer (channel.LIMIT characters) fits, escaped.
MAX_MESSAGE = 2 * channel.LIMIT + 2**20
QUEUED = 64
RECOVER_SECONDS = 5  # after an interrupt, how long a kernel may take to answer again


@dataclass
class Probe:
    """What one question's probe gave back: `data` (plain data) or `error`, and its run time.

    `after_cell` is the 1-based cell number an early probe ran right after (None: after all cells);
    `tampered` says how the answer channel was interfered with, if it was.
    """

    data: Any = None
    error: str | None = None
    seconds: float = 0.0
    after_cell: int | None = None
    tampered: str | None = None


@dataclass
class Execution:
    """How a notebook ran: `status` is ok, timeout (whole notebook), hung or kernel_died.

    `probes` holds each question's result after all cells; `early` the result right after the
    cell that last defines what it needs, when later cells follow it: scoring keeps the better
    one and names the later cell that broke it (see culprits.py).
    """

    status: str = "ok"
    detail: str = ""
    cells_run: int = 0
    errors: list[str] = field(default_factory=list)
    timed_out_cells: list[int] = field(default_factory=list)
    seconds: float = 0.0
    probes: dict[str, Probe] = field(default_factory=dict)
    early: dict[str, Probe] = field(default_factory=dict)


@dataclass
class Kernel:
    """Where a kernel runs: its folder (connection file, sockets, cwd), environment, and launch wrapper."""

    folder: Path
    env: dict[str, str]
    wrap: Callable[[list[str]], list[str]] = lambda argv: argv
    uid: int | None = None  # owner of the connection file, when the kernel runs as another uid
    log: Path | None = None  # where the kernel's own stderr goes (its banner and warnings)


class _KernelManager(AsyncKernelManager):
    """Launch the kernel through `wrap` (the sandbox); interrupt it by message, not a host signal."""

    launch: Kernel | None = None

    def client(self, **kwargs: Any) -> Any:
        kc = super().client(**kwargs)
        kc.context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)  # every socket it makes from now on
        kc.context.setsockopt(zmq.RCVHWM, QUEUED)
        return kc

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        argv = super().format_kernel_cmd(extra_arguments)
        assert self.launch is not None
        if self.launch.uid is not None:  # written by the grader a moment ago; the kernel must read it
            os.chown(self.connection_file, self.launch.uid, self.launch.uid)
        return self.launch.wrap(argv)


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


def execute(
    nb: nbformat.NotebookNode, *, probes: dict[str, str], kernel: Kernel, cell_timeout: int,
    notebook_timeout: int, needs: dict[str, tuple[str, ...]] | None = None,
) -> Execution:
    """Run the notebook's code cells, then each probe source, in one fresh kernel."""
    started = time.monotonic()
    deadline = started + notebook_timeout
    run = Execution()
    km = _KernelManager(kernel_name="python3", transport="ipc", ip=str(kernel.folder / "ipc"),
                        connection_file=str(kernel.folder / "kernel.json"))
    km.launch = kernel
    km.kernel_spec.interrupt_mode = "message"  # the kernel is in another PID namespace
    client = _Client(
        nb, km=km, kernel_name="python3", allow_errors=True, timeout=cell_timeout, interrupt_on_timeout=False,
        shutdown_kernel="immediate", startup_timeout=60, iopub_timeout=4, record_timing=False,
    )
    client.on_cell_error = lambda cell, cell_index, execute_reply: run.errors.append(
        f"cell {cell_index + 1}: {execute_reply['content'].get('ename')}: "
        f"{str(execute_reply['content'].get('evalue'))[:300]}")
    early = _early_points(client.nb, needs or {})
    try:
        # cleanup_kc: nbclient only stops kernels it created itself, and this one we made.
        log = open(kernel.log or os.devnull, "ab")  # noqa: SIM115 - closed below, the kernel writes to it
        with log, client.setup_kernel(env=kernel.env, cwd=str(kernel.folder), cleanup_kc=True,
                                      stdout=subprocess.DEVNULL, stderr=log):
            _run_cells(client, run, cell_timeout, deadline, early, probes)
            if run.status in ("ok", "timeout"):  # the kernel still answers: probe what is there
                _run_probes(client, run, probes, cell_timeout)
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot start fails this submission only
        run.status, run.detail = "error", f"could not run the notebook: {type(exc).__name__}: {exc}"[:500]
    finally:
        # setup_kernel failed half-way, or the clean-up above did not finish (a closed context means it
        # did; shutting down again would only fail to send an interrupt). The grader kills what is left.
        if km.has_kernel and not km.context.closed:
            with contextlib.suppress(Exception):
                run_sync(km.shutdown_kernel)(now=True)
    run.seconds = time.monotonic() - started
    return run


def _early_points(nb: nbformat.NotebookNode, needs: dict[str, tuple[str, ...]]) -> dict[int, list[str]]:
    """Return {cell index: questions to probe right after it}."""
    graded = [i for i, c in enumerate(nb.cells)
              if c.cell_type == "code" and c.source.strip() and not is_check_cell(c.source)]
    sources = [nb.cells[i].source for i in graded]
    points: dict[int, list[str]] = {}
    for question, names in needs.items():
        at = cells.defining_cell(sources, names) if names else None
        if at is None or at == len(sources) - 1:
            continue  # nothing runs after it: the final probe is the same
        points.setdefault(graded[at], []).append(question)
    return points


def _run_cells(client: _Client, run: Execution, cell_timeout: int, deadline: float,
               early: dict[int, list[str]], probes: dict[str, str]) -> None:
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
        for question in early.get(index, []):
            probe = run.early[question] = _probe(client, run, question, probes[question], cell_timeout)
            probe.after_cell = index + 1
            if run.status != "ok":
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
    client.limit = OUTPUT_LIMIT
    for question, source in probes.items():
        run.probes[question] = _probe(client, run, question, source, cell_timeout)
        if run.status in ("hung", "kernel_died"):
            break


def _probe(client: _Client, run: Execution, question: str, source: str, cell_timeout: int) -> Probe:
    """Run one probe through the answer channel (see channel.py) and return what came back."""
    req = channel.request(source)
    cell = nbformat.v4.new_code_cell("pass")  # what hooks and transformers could see: nothing
    client.nb.cells.append(cell)
    client.timeout = cell_timeout
    replies: list[dict] = []
    kc, real_execute, real_hook = client.kc, client.kc.execute, client.on_cell_executed

    def execute(code: str, **_: Any) -> str:
        return real_execute(code, silent=True, store_history=False, user_expressions=req.expressions,
                            allow_stdin=False, stop_on_error=False)

    started = time.monotonic()
    probe = Probe()
    try:
        kc.execute = execute
        client.on_cell_executed = lambda cell, cell_index, execute_reply: replies.append(execute_reply)
        try:
            client.execute_cell(cell, len(client.nb.cells) - 1)
        finally:  # before any recovery: the ping that checks the kernel must not rerun the probe
            kc.execute, client.on_cell_executed = real_execute, real_hook
        probe.data = req.read(replies[0]["content"] if replies else {})
    except CellTimeoutError:
        probe.error = f"your code did not finish within {cell_timeout} s"
        if not _recover(client):
            run.status, run.detail = "hung", f"the kernel hung while grading {question}"
    except DeadKernelError:
        probe.error = "the kernel died while running your code"
        run.status, run.detail = "kernel_died", f"the kernel died (crash or exit) in {question}"
    except channel.Tampered as exc:
        probe.error = probe.tampered = f"the grader's answer channel was tampered with: {exc}"
    except ValueError as exc:
        probe.error = f"no result could be read back ({exc})"
    finally:
        probe.seconds = time.monotonic() - started
    printed = "".join(str(o.get("text", "")) + str(o.get("data", "")) for o in cell.get("outputs", []))
    if req.seen_in(printed):
        probe.data = None
        probe.error = probe.tampered = "the grader's answer channel was tampered with: its nonce was printed"
    return probe
