"""The retrieval-augmented answer: the prompt's exact text, and the chat call against the local stub."""

from __future__ import annotations

import pytest
from openai_stub import OpenAIStub

from pgvec_course.rag import NO_KEY, SYSTEM, Answer, ask_llm, build_prompt, llm_available
from pgvec_course.search import Result

FAKE_KEY = "sk-test-not-a-real-key-rag-0987654321"
PASSAGES = [
    Result(7, "Upserts",
           "INSERT with ON CONFLICT DO UPDATE changes the row that exists. It needs a unique index.", "db"),
    Result(3, "Vacuum", "VACUUM removes dead tuples.", "db"),
]


@pytest.fixture
def env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PGVEC_CHAT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_prompt_numbers_the_passages_and_asks_for_citations():
    prompt = build_prompt("How do I upsert?", PASSAGES)
    assert prompt.user == (
        "Passages:\n\n"
        "[1] Upserts\n"
        "INSERT with ON CONFLICT DO UPDATE changes the row that exists. It needs a unique index.\n\n"
        "[2] Vacuum\nVACUUM removes dead tuples.\n\n"
        "Question: How do I upsert?"
    )
    assert prompt.messages() == [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": prompt.user}]
    assert str(prompt).startswith("[system]\nYou answer questions using only the numbered passages")


def test_bad_prompts_are_explained():
    with pytest.raises(ValueError, match="^the question is empty; pass the text the user asked$"):
        build_prompt("  ", PASSAGES)
    with pytest.raises(ValueError, match=r"^no passages to answer from; retrieve some first"):
        build_prompt("How?", [])


def test_without_a_key_nothing_is_called_and_the_error_says_why(env):
    assert not llm_available()
    with pytest.raises(RuntimeError) as err:
        ask_llm(build_prompt("How do I upsert?", PASSAGES))
    assert str(err.value) == NO_KEY


def test_the_chat_call_sends_the_prompt_and_reads_the_citations(env):
    with OpenAIStub() as stub:
        env.setenv("OPENAI_BASE_URL", stub.url)
        env.setenv("OPENAI_API_KEY", FAKE_KEY)
        env.setenv("PGVEC_CHAT_MODEL", "gpt-test-mini")
        assert llm_available()
        prompt = build_prompt("How do I upsert?", PASSAGES)
        answer = ask_llm(prompt)
    assert answer.text == "INSERT with ON CONFLICT DO UPDATE changes the row that exists. [1]"
    assert answer.model == "gpt-test-mini"
    assert answer.citations() == [1] and answer.cited() == [PASSAGES[0]]
    sent = len(SYSTEM.split()) + len(prompt.user.split())
    assert answer.usage == {"prompt_tokens": sent, "completion_tokens": 12, "total_tokens": sent + 12}
    [request] = stub.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == f"Bearer {FAKE_KEY}"
    assert request["messages"] == prompt.messages() and request["temperature"] == 0
    assert str(answer).splitlines() == [answer.text, "", "cited (gpt-test-mini):", "[1] Upserts (id 7)"]


def test_citations_ignore_numbers_outside_the_passages():
    answer = Answer("Yes [2], see [2] and [9] and [0].", build_prompt("q", PASSAGES), "m")
    assert answer.citations() == [2] and [p.id for p in answer.cited()] == [3]


def test_a_rejected_key_is_reported_without_the_key(env):
    with OpenAIStub() as stub:
        stub.failures.append(401)
        env.setenv("OPENAI_BASE_URL", stub.url)
        env.setenv("OPENAI_API_KEY", FAKE_KEY)
        with pytest.raises(RuntimeError) as err:
            ask_llm(build_prompt("How do I upsert?", PASSAGES))
    assert str(err.value) == "OpenAI rejected the API key (401). Check OPENAI_API_KEY."
    assert FAKE_KEY not in str(err.value)
