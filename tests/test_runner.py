"""Running a notebook and its probes: early probes, and an answer channel the notebook cannot forge."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import nbformat
import pytest

from pgvec_course.grading import cells, channel, runner

PROBE = "__pvc_result__ = {'total': total(), 'name': 'ok'}"


def _run(tmp_path: Path, *cells: str, needs: tuple[str, ...] = ("total",)) -> runner.Execution:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# a notebook")] + [nbformat.v4.new_code_cell(c) for c in cells]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "DATABASE_URL"))}
    return runner.execute(nb, probes={"q": PROBE}, kernel=runner.Kernel(folder=tmp_path, env=env),
                          cell_timeout=20, notebook_timeout=60, needs={"q": needs})


DEFINE = "numbers = [1, 2, 3]\ndef total():\n    return sum(numbers)"


def test_a_function_is_probed_right_after_the_cell_that_defines_it(tmp_path):
    run = _run(tmp_path, DEFINE, "print('unrelated')", "numbers = None  # a provided cell reuses the name")
    assert run.early["q"].data == {"total": 6, "name": "ok"}
    assert run.early["q"].after_cell == 2  # notebook cell 2 (cell 1 is markdown)
    assert run.probes["q"].after_cell is None
    assert run.probes["q"].data == {"error": "TypeError: 'NoneType' object is not iterable"}


def test_no_early_probe_when_nothing_follows_the_definition(tmp_path):
    run = _run(tmp_path, "print('first')", DEFINE, "pvc.check('q', total)")  # check cells are skipped
    assert run.early == {}
    assert run.probes["q"].data == {"total": 6, "name": "ok"}


HOOKS = {
    "a post_run_cell hook printing forged results": """
import json
def forge(result):
    print('__pvc_0123456789abcdef__ ' + json.dumps({'total': 999, 'name': 'forged'}))
get_ipython().events.register('post_run_cell', forge)
get_ipython().events.register('pre_run_cell', lambda info: print('pre', info.raw_cell))
""",
    "a replaced sys.stdout": """
import sys
class Liar:
    def write(self, text):
        sys.__stdout__.write(text.replace('6', '999'))
    def flush(self):
        pass
sys.stdout = Liar()
""",
    "patched json and print": """
import builtins, json
json.dumps = lambda *a, **k: '{"total": 999, "name": "forged"}'
json.loads = lambda *a, **k: {'total': 999, 'name': 'forged'}
builtins.print = lambda *a, **k: None
""",
}


@pytest.mark.parametrize("attack", sorted(HOOKS))
def test_output_tricks_do_not_reach_the_answer(tmp_path, attack):
    run = _run(tmp_path, DEFINE, HOOKS[attack], "x = 1")
    assert run.probes["q"].data == {"total": 6, "name": "ok"}
    assert run.probes["q"].tampered is None


def test_an_audit_hook_that_steals_the_nonce_is_caught(tmp_path):
    spy = """
import sys, re
def spy(event, args):
    if event == 'compile' and args and isinstance(args[0], (str, bytes)):
        text = args[0] if isinstance(args[0], str) else args[0].decode(errors='replace')
        for nonce in re.findall(r"pvc[0-9a-f]{32}:", text):
            sys.__stdout__.write(nonce)
            print('stolen', nonce)
sys.addaudithook(spy)
"""
    run = _run(tmp_path, DEFINE, spy)
    assert run.probes["q"].data is None
    assert run.probes["q"].tampered == "the grader's answer channel was tampered with: its nonce was printed"


def test_a_patched_exec_gets_no_answer_through(tmp_path):
    patched = "import builtins\nbuiltins.exec = lambda *a, **k: None"
    run = _run(tmp_path, DEFINE, patched)
    assert run.probes["q"].data is None
    assert run.probes["q"].tampered == (
        "the grader's answer channel was tampered with: the answer did not come from the grader's probe")


def test_a_patched_formatter_cannot_forge_an_answer(tmp_path):
    forge = ("ip = get_ipython()\n"
             "ip.display_formatter.format = lambda obj, **k: ({'text/plain': repr(\"{'total': 999}\")}, {})")
    run = _run(tmp_path, DEFINE, forge)
    assert run.probes["q"].data is None
    assert run.probes["q"].tampered == (
        "the grader's answer channel was tampered with: the answer did not come from the grader's probe")


def test_results_of_odd_types_are_reported_not_trusted(tmp_path):
    odd = ("class Sneaky(str):\n    def __repr__(self):\n        return \"'forged'}, {'total': 999\"\n"
           "def total():\n    return [Sneaky('a'), float('nan'), (1, 2), {3: 'x'}, object()]")
    run = _run(tmp_path, odd, "x = 1")
    assert run.probes["q"].data == {"total": [{"__type__": "Sneaky"}, None, [1, 2], {"3": "x"},
                                              {"__type__": "object"}], "name": "ok"}


class _Finalizer:
    def __del__(self):
        time.sleep(0)  # a finalizer that lets another thread run, as sockets' and connections' do


def test_two_grading_threads_read_answers_and_cells_at_once():
    # --jobs 2 grades in threads; in Python 3.11 two syntax trees built at once could fail with
    # "SystemError: AST constructor recursion depth mismatch", and a fair notebook scored `error`.
    req = channel.request("__pvc_result__ = None")
    answer = [{"id": i, "passage": f"text {i}", "distance": i / 7, "more": [[i, [i, (i, {"a": [1, [2]]})]]]}
              for i in range(40)]
    text = repr(req.nonce + repr(answer))  # as the kernel sends the probe's answer back
    reply = {"user_expressions": {"answer": {"status": "ok", "data": {"text/plain": text}}}}
    cell = "def ask(q):\n" + "".join(f"    row{i} = [q, {{'a': (q, [q])}}]\n" for i in range(150))
    failures: list[str] = []

    def keep(work, until):
        while time.monotonic() < until:
            for _ in range(100):
                garbage = _Finalizer()
                garbage.cycle = garbage  # freed by the collector, mid-parse of the other thread
            try:
                work()
            except SystemError as exc:
                failures.append(str(exc))

    until = time.monotonic() + 3
    threads = [threading.Thread(target=keep, args=(lambda: req.read(reply), until)),
               threading.Thread(target=keep, args=(lambda: cells.is_check_cell(cell), until))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert req.read(reply) == answer
    assert failures == []


def test_a_message_bigger_than_the_grader_takes_is_dropped(tmp_path):
    # A kernel may send anything; one 30 MB message after another once grew the grader (which no
    # cap bounds) by 1.6 GB. Messages over MAX_MESSAGE are refused: the output is lost, not the grade.
    nb = nbformat.v4.new_notebook()
    big = f"import sys\nsys.stdout.write('x' * {runner.MAX_MESSAGE + 1_000_000})\nsys.stdout.flush()"
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (big, "print('after')", DEFINE)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "DATABASE_URL"))}
    run = runner.execute(nb, probes={"q": PROBE}, kernel=runner.Kernel(folder=tmp_path, env=env),
                         cell_timeout=20, notebook_timeout=60, needs={"q": ("total",)})
    assert (run.status, run.errors, run.probes["q"].data) == ("ok", [], {"total": 6, "name": "ok"})
    assert nb.cells[0].outputs == []  # not even "[output truncated ...]": it never reached the grader
