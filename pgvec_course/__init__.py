"""Helpers for the pgvec-course lessons: connections, embeddings, queries, benchmarks, grading.

Every notebook starts with::

    import pgvec_course as pvc
    conn = pvc.connect()
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Modules load on first use, so `import pgvec_course`
# stays fast and a lesson only pays for what it touches.
_EXPORTS = {
    "connect": "db",
    "database_url": "db",
    "CourseDatabaseError": "db",
    "get_embedder": "embed",
    "load_passages": "corpus",
    "load_queries": "corpus",
    "create_corpus_table": "corpus",
    "create_documents_table": "store",
    "insert_document": "store",
    "insert_documents": "store",
    "copy_vectors": "store",
    "search": "search",
    "search_by_vector": "search",
    "keyword_search": "hybrid",
    "hybrid_search": "hybrid",
    "explain": "search",
    "create_index": "index",
    "drop_indexes": "index",
    "index_settings": "index",
    "estimate_build_memory": "index",
    "recall_at_k": "metrics",
    "precision_at_k": "metrics",
    "mrr": "metrics",
    "ndcg_at_k": "metrics",
    "evaluate": "metrics",
    "make_dataset": "bench",
    "load_vectors": "bench",
    "check_distinct": "bench",
    "ground_truth": "bench",
    "run_benchmark": "bench",
    "save_plots": "plots",
    "plot_recall_latency": "plots",
    "IndexTuner": "widgets",
    "SearchBox": "widgets",
    "check": "grading.checks",
    "sqlalchemy_url": "tools",
    "scratch_database": "tools",
    "drop_database": "tools",
    "extension_allowed": "tools",
    "run_tool": "tools",
    "watch_index_build": "index_build",
    "build_prompt": "rag",
    "ask_llm": "rag",
    "llm_available": "rag",
    "ChromaEmbeddingFunction": "chroma",
}

__all__ = sorted(_EXPORTS)

# `search` is both a module and the function lessons call. Importing the submodule binds the
# module to this name; binding the function now, once, keeps `pvc.search(...)` the function
# whichever module another import touches first.
from .search import search  # noqa: E402, F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pgvec_course' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
