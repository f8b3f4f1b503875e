"""The learner's path in a real browser: JupyterLab started by `make start`, Chromium driven by Playwright.

Every lesson and exercise gets Kernel > Restart Kernel and Run All Cells through the menus, two
notebooks at a time in two browser tabs (so lessons run side by side), and must finish with every
cell run and no error; the IndexTuner is dragged and typed into, the SearchBox searched and switched.
Screenshots and `timings.md` (Run All seconds per notebook, the first open) go to
test-artefacts/browser/. Chromium comes from the system (Debian: apt-get install -y chromium):
Playwright's own browser download is not used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTEFACTS = ROOT / "test-artefacts" / "browser"
TOKEN = "pgvec-course-browser-test"
OPEN_SECONDS, RUN_SECONDS = 120, 420  # generous for a busy 2-core machine, but bounded
LESSONS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "lessons").glob("*.ipynb"))
EXERCISES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "exercises").glob("*.ipynb"))
# Two notebooks at a time, each in its own browser tab: lessons must not get in each other's way.
LESSON_PAIRS = [tuple(LESSONS[i : i + 2]) for i in range(0, len(LESSONS), 2)]
EXERCISE_PAIRS = [tuple(EXERCISES[i : i + 2]) for i in range(0, len(EXERCISES), 2)]

# The status bar says "Python 3 (ipykernel) | Idle" once the kernel has started and is not busy.
STATUS = "[...document.querySelectorAll('.jp-StatusBar-TextItem')]"
IDLE = f"() => {STATUS}.some(e => e.textContent.endsWith('| Idle'))"
PROMPTS = "[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]"
QUEUED = f"() => {PROMPTS}.some(e => e.textContent.includes('*'))"
FINISHED = f"() => !{PROMPTS}.some(e => e.textContent.includes('*'))"
# Cell number (1-based, all cells), its prompt, and the text of its stderr outputs (tracebacks land there).
CELLS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map((cell, i) => ({
    n: i + 1, code: cell.classList.contains('jp-CodeCell'),
    prompt: (cell.querySelector('.jp-InputArea-prompt') || {}).textContent || '',
    stderr: [...cell.querySelectorAll(".jp-OutputArea-output")]
             .filter(e => e.dataset.mimeType === 'application/vnd.jupyter.stderr').map(e => e.textContent),
    source: (cell.querySelector('.jp-InputArea-editor') || {}).textContent || '',
    text: [...cell.querySelectorAll('.jp-OutputArea-output')].map(e => e.textContent).join('\\n')}))"""


def _require_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "Playwright for Python is not installed (pip install -e '.[test]')"
    else:
        problem = None if CHROMIUM.exists() else f"Chromium is not installed at {CHROMIUM}"
    if problem:
        message = (f"{problem}: the browser tests need both; on Debian or Ubuntu install Chromium with "
                   "'sudo apt-get install -y chromium'")  # fmt: skip
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must run them)", pytrace=False)
        pytest.skip(message)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab started by `make start` on a free port, serving a copy of lessons/ and exercises/."""
    _require_browser()
    home = tmp_path_factory.mktemp("lab")
    root = home / "course"  # a copy: autosave must never rewrite the committed notebooks
    for folder in ("lessons", "exercises"):
        shutil.copytree(ROOT / folder, root / folder)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "ws"))
    log = (home / "jupyter.log").open("w")
    proc = subprocess.Popen(
        ["make", "-s", "start", f"PORT={port}", f"LAB_ROOT={root}",
         f"JUPYTER_ARGS=--no-browser --IdentityProvider.token={TOKEN}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + OPEN_SECONDS
        while True:
            try:
                if _get(f"{base}/api/status?token={TOKEN}")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (home / "jupyter.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # Jupyter shuts its kernels down on SIGTERM
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 900})  # fmt: skip
        yield context
        context.close()


TIMINGS: dict[str, float] = {}
KEPT: dict[str, object] = {}  # notebooks whose widgets later tests use, still open


@pytest.fixture(scope="module", autouse=True)
def timings_report():
    yield
    if TIMINGS:
        lines = ["| notebook | seconds |", "|---|---|", *(f"| {k} | {v:.1f} |" for k, v in TIMINGS.items())]
        (ARTEFACTS / "timings.md").write_text("\n".join(lines) + "\n")


def _open(browser, lab: str, path: str):
    page = browser.new_page()
    started = time.monotonic()
    # A workspace per notebook, reset: each tab shows its notebook alone, whatever ran before.
    page.goto(f"{lab}/lab/workspaces/{Path(path).stem}/tree/{path}?reset&token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=OPEN_SECONDS * 1000)
    page.wait_for_function(IDLE, timeout=OPEN_SECONDS * 1000)
    return page, time.monotonic() - started


def _start_run_all(page) -> float:
    page.click(".lm-MenuBar-item:has-text('Kernel')")
    page.click(".lm-Menu-item:has-text('Restart Kernel and Run All Cells')")
    page.click(".jp-Dialog button.jp-mod-accept:has-text('Restart')")
    started = time.monotonic()
    page.wait_for_function(QUEUED, timeout=60_000, polling=50)
    return started


def _finish(page, started: float) -> float:
    page.wait_for_function(FINISHED, timeout=RUN_SECONDS * 1000, polling=250)
    page.wait_for_function(IDLE, timeout=60_000)
    return time.monotonic() - started


def _problems(page) -> list[str]:
    found = []
    for cell in page.evaluate(CELLS):
        if cell["code"] and "[ ]" in cell["prompt"]:
            found.append(f"cell {cell['n']} never ran")
        # An exercise before the learner writes code: every check runs and reports (✘ says what to do next).
        if "pvc.check(" in cell["source"] and not cell["text"].startswith(("✔ passed", "✘ not yet")):
            found.append(f"cell {cell['n']}: a check that reported nothing: {cell['text'][:200]!r}")
        for text in cell["stderr"]:
            if "Traceback" in text or "Error" in text:
                found.append(f"cell {cell['n']}: {text.strip().splitlines()[-1][:200]}")
    return found


def _close(lab: str, page, path: str) -> None:
    page.close()
    # Closing a tab leaves its kernel running: shut it down through the REST API.
    with urllib.request.urlopen(f"{lab}/api/sessions?token={TOKEN}", timeout=5) as response:
        sessions = json.load(response)
    for session in sessions:
        if session["path"].endswith(path):
            url = f"{lab}/api/sessions/{session['id']}?token={TOKEN}"
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30).close()


def test_first_open_shows_lesson_1_without_news(lab, browser):
    assert json.loads(_get(f"{lab}/lab/api/news?token={TOKEN}")[1]) == {"news": []}
    schema = json.loads(_get(f"{lab}/lab/api/settings/@jupyterlab/apputils-extension:notification"
                             f"?token={TOKEN}")[1])["schema"]["properties"]  # fmt: skip
    assert (schema["fetchNews"]["default"], schema["checkForUpdates"]["default"]) == ("false", False)
    page, seconds = _open(browser, lab, LESSONS[0])
    TIMINGS["first open of lesson 1 (to an idle kernel)"] = seconds
    page.wait_for_timeout(3000)  # the news question used to pop up a moment after the page loaded
    assert page.locator(".jp-toast-container .Toastify__toast").count() == 0
    assert page.get_by_text("official Jupyter news").count() == 0
    title = page.locator(".jp-MarkdownOutput h1").first.text_content()
    assert title.startswith("Lesson 1 · Why keep your vectors in PostgreSQL")
    page.screenshot(path=ARTEFACTS / "00_first_open.png")
    _close(lab, page, LESSONS[0])


def _names(pair: tuple[str, ...]) -> str:
    return "+".join(Path(p).stem[:2] for p in pair)


@pytest.mark.parametrize("pair", LESSON_PAIRS, ids=_names)
def test_run_all_lessons_side_by_side(lab, browser, pair):
    _run_all(lab, browser, pair)


def _run_all(lab, browser, pair: tuple[str, ...]) -> None:
    pages = [_open(browser, lab, path)[0] for path in pair]
    starts = [_start_run_all(page) for page in pages]  # the second starts while the first runs
    problems = {}
    for path, page, started in zip(pair, pages, starts, strict=True):
        beside = ", ".join(p for p in pair if p != path) or "nothing"
        TIMINGS[f"Run All {path} (beside {beside})"] = _finish(page, started)
        problems[path] = _problems(page)
        page.screenshot(path=ARTEFACTS / f"{Path(path).parent.name}_{Path(path).stem}.png")
        if path.endswith(("05_indexing.ipynb", "06_hybrid_search.ipynb")):
            KEPT[path] = page
        else:
            _close(lab, page, path)
    assert problems == {path: [] for path in pair}


def _wait_until(locator, condition: str) -> None:
    """Wait (up to a minute: the kernel reruns queries) until a JS condition on the element `el` holds."""
    locator.page.wait_for_function(f"el => {condition}", arg=locator.element_handle(), timeout=60_000)


def test_index_tuner_follows_the_slider_and_the_box(lab):
    page = KEPT.get("lessons/05_indexing.ipynb")
    if page is None:
        pytest.fail("lesson 5 did not run (see the Run All test)", pytrace=False)
    slider = page.locator(".widget-slider")
    tuner = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=slider).first
    tuner.scroll_into_view_if_needed()
    results = tuner.locator(".widget-html").last
    before = results.text_content()
    assert before.startswith("ef_search = 40: recall@10 ")
    handle = tuner.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    page.screenshot(path=ARTEFACTS / "lessons_05_indexing_tuner_before.png")
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    _wait_until(results, "!el.textContent.startsWith('ef_search = 40:')")
    dragged = int(handle.get_attribute("aria-valuenow").split(".")[0])
    assert dragged > 40 and results.text_content().startswith(f"ef_search = {dragged}: recall@10 ")
    typed = tuner.locator("input[type=number]")
    typed.fill("25")
    typed.press("Enter")
    _wait_until(results, "el.textContent.startsWith('ef_search = 25:')")
    assert handle.get_attribute("aria-valuenow").startswith("25")
    note = tuner.locator(".widget-html").first.text_content()
    assert note.startswith("ef_search from 1 to ") and "the planner expects an exact scan" in note
    page.screenshot(path=ARTEFACTS / "lessons_05_indexing_tuner.png")
    _close(lab, page, "lessons/05_indexing.ipynb")


def test_search_box_answers_typing_and_switches_mode(lab):
    page = KEPT.get("lessons/06_hybrid_search.ipynb")
    if page is None:
        pytest.fail("lesson 6 did not run (see the Run All test)", pytrace=False)
    query = page.locator("input[placeholder='Ask the knowledge base…']")
    query.scroll_into_view_if_needed()
    box = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=query).first
    results = box.locator(".widget-html").last
    assert results.text_content() == "Type a question and press Enter."
    query.fill("SQLSTATE 23505")
    query.press("Enter")
    _wait_until(results, "el.textContent.startsWith('5 semantic results')")
    box.locator("button:has-text('keyword')").click()
    _wait_until(results, "el.textContent.startsWith('1 keyword result')")
    assert "Duplicate keys and upserts" in results.text_content()
    page.screenshot(path=ARTEFACTS / "lessons_06_hybrid_search_box.png")
    _close(lab, page, "lessons/06_hybrid_search.ipynb")


@pytest.mark.parametrize("pair", EXERCISE_PAIRS, ids=_names)
def test_run_all_exercises_before_any_code_is_written(lab, browser, pair):
    _run_all(lab, browser, pair)
