"""Every lesson and solution also runs with the OpenAI embedder: 1536 dims, from the tests' own server.

pytest's nbval run executes the notebooks with the local model (384 dims). This runs each of them once
more in a fresh kernel with OPENAI_API_KEY and OPENAI_BASE_URL pointing at tests/openai_stub.py on
127.0.0.1, so `pvc.get_embedder()` is the real `openai` client's embedder, and lesson 12's chat call gets
an answer. The stub's vectors are not a model's, so outputs differ from the committed ones; errors may
not. The run has a database of its own, so its 1536-dim tables never meet nbval's 384-dim ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from openai_stub import OpenAIStub
from psycopg.conninfo import make_conninfo

from pgvec_course import db, notebooks
from pgvec_course.corpus import load_passages, load_queries
from pgvec_course.embed import get_embedder
from pgvec_course.store import document_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "lessons").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
DATABASE = f"pgvec_either_{os.getpid()}"
LOCAL_LINE = "Embedder: local all-MiniLM-L6-v2 (384 dims, offline)"
OPENAI_LINE = "Embedder: OpenAI text-embedding-3-small (1536 dims)"


@pytest.fixture(scope="module")
def openai_env(tmp_path_factory):
    """The kernels' environment: the OpenAI embedder against the stub, a database and a cache of their own."""
    with db.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    with OpenAIStub() as stub:
        env = dict(os.environ)
        env.update(
            OPENAI_API_KEY="sk-test-either-embedder-not-a-key",
            OPENAI_BASE_URL=stub.url,
            PGVEC_EMBEDDER="openai",
            DATABASE_URL=make_conninfo(db.database_url(), dbname=DATABASE),
            # The stub's vectors must never land in a learner's cache of real OpenAI vectors.
            PGVEC_CACHE_DIR=str(tmp_path_factory.mktemp("openai-cache")),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        # The local model's vectors of the corpus ship with the package; OpenAI's are fetched here
        # once, in a few batched requests, as a learner's first lesson would, instead of one question
        # at a time in every kernel.
        with pytest.MonkeyPatch.context() as patch:
            for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PGVEC_EMBEDDER", "PGVEC_CACHE_DIR"):
                patch.setenv(name, env[name])
            passages = load_passages()
            texts = [document_text(p.title, p.content) for p in passages] + [p.content for p in passages]
            get_embedder(quiet=True).embed(texts + [q.query for q in load_queries()])
        yield env, stub
    with db.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def _printed(nb) -> str:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            texts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(texts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_runs_with_the_openai_embedder(path, openai_env):
    env, stub = openai_env
    nb = notebooks.execute(path, env=env, timeout=600)
    errors = notebooks.error_cells(nb)
    assert errors == [], f"{path.name} fails with the OpenAI embedder: cell {errors[0][0]}: {errors[0][1]}"
    printed = _printed(nb)
    if LOCAL_LINE in _printed(notebooks.nbformat.read(path, as_version=4)):
        # Where the committed run names the local model, this run names OpenAI's, and never the local one.
        assert OPENAI_LINE in printed and LOCAL_LINE not in printed
    if path.name == "12_rag_answers.ipynb":
        chats = [r for r in stub.requests if r["path"] == "/v1/chat/completions"]
        assert chats and "cited (gpt-4o-mini):" in printed
