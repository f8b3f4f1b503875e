"""The course's embedder as a ChromaDB embedding function, so `documents=` and `query_texts=` work offline.

    collection = client.create_collection("docs", embedding_function=ChromaEmbeddingFunction())
    collection.add(ids=["1"], documents=["About databases..."])      # embedded by the course's model
    collection.query(query_texts=["How do I store vectors?"], n_results=1)

Chroma's own default embedding function downloads a model on first use; this one never does.
"""

from __future__ import annotations

from typing import Any

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as exc:  # chromadb is the optional "chroma" extra
    raise ImportError(
        "ChromaDB is not installed; run 'make setup' or pip install -e '.[chroma]'"
    ) from exc

__all__ = ["ChromaEmbeddingFunction"]


@register_embedding_function
class ChromaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Embed Chroma's documents and query texts with the course's embedder (local model or OpenAI)."""

    def __init__(self, embedder: Any = None, *, kind: str | None = None) -> None:
        if embedder is None:
            from .embed import get_embedder

            embedder = get_embedder(kind, quiet=True)
        self._embedder = embedder
        self._kind = kind

    def __call__(self, input: Documents) -> Embeddings:
        return list(self._embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return "pgvec-course"

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"  # both course embedders return unit vectors ranked by cosine distance

    def get_config(self) -> dict[str, Any]:
        return {"kind": self._kind}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaEmbeddingFunction:
        return ChromaEmbeddingFunction(kind=config.get("kind"))

    def __repr__(self) -> str:
        return f"<ChromaEmbeddingFunction {self._embedder.name} ({self._embedder.dim} dims)>"
