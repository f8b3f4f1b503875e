"""Answer a question from retrieved passages: a prompt that cites them, and an OpenAI chat call.

    passages = hybrid_search(conn, question, k=4)
    prompt = build_prompt(question, passages)   # readable: print it, or send it
    answer = ask_llm(prompt)                    # needs OPENAI_API_KEY; otherwise it says so and raises
    answer.cited()                              # the passages the answer cites, by their [n]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import settings

__all__ = ["Prompt", "Answer", "build_prompt", "ask_llm", "llm_available"]

SYSTEM = (
    "You answer questions using only the numbered passages you are given. "
    "After each sentence, cite the passages it relies on as [1], [2], ... "
    "If the passages do not contain the answer, say that you do not know; do not guess."
)
NO_KEY = ("no OPENAI_API_KEY is set, so no chat model is called: the prompt above is exactly what "
          "would be sent; set OPENAI_API_KEY (and restart the kernel) to get an answer")
_CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Prompt:
    """The chat messages for one question: the instructions, and the question with numbered passages."""

    question: str
    passages: tuple[Any, ...]
    system: str = SYSTEM

    @property
    def user(self) -> str:
        blocks = [f"[{n}] {p.title}\n{p.content}" for n, p in enumerate(self.passages, start=1)]
        return "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {self.question}"

    def messages(self) -> list[dict[str, str]]:
        """Return the messages in the shape OpenAI's chat API takes."""
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def __str__(self) -> str:
        return f"[system]\n{self.system}\n\n[user]\n{self.user}"

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(str(self))


def build_prompt(question: str, passages: Sequence[Any]) -> Prompt:
    """Return the prompt that asks a chat model to answer `question` from `passages`, citing them as [n]."""
    if not question.strip():
        raise ValueError("the question is empty; pass the text the user asked")
    if not passages:
        raise ValueError("no passages to answer from; retrieve some first (e.g. pvc.hybrid_search)")
    return Prompt(question, tuple(passages))


@dataclass(frozen=True)
class Answer:
    """A chat model's answer, the prompt it came from, and the token counts the API reported."""

    text: str
    prompt: Prompt
    model: str
    usage: dict[str, int] = field(default_factory=dict)

    def citations(self) -> list[int]:
        """Return the passage numbers the answer cites, in first-cited order, only those that exist."""
        seen: list[int] = []
        for match in _CITATION.finditer(self.text):
            n = int(match.group(1))
            if 1 <= n <= len(self.prompt.passages) and n not in seen:
                seen.append(n)
        return seen

    def cited(self) -> list[Any]:
        """Return the passages the answer cites."""
        return [self.prompt.passages[n - 1] for n in self.citations()]

    def __str__(self) -> str:
        sources = [f"[{n}] {self.prompt.passages[n - 1].title} (id {self.prompt.passages[n - 1].id})"
                   for n in self.citations()]  # fmt: skip
        return "\n".join([self.text, "", f"cited ({self.model}):", *(sources or ["nothing"])])

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(str(self))


def llm_available() -> bool:
    """Return whether a chat model can be called (OPENAI_API_KEY is set)."""
    return settings().openai_api_key is not None


def ask_llm(prompt: Prompt, *, model: str | None = None, timeout: float = 60.0) -> Answer:
    """Send the prompt to an OpenAI chat model and return its answer; needs OPENAI_API_KEY."""
    s = settings()
    if not s.openai_api_key:
        raise RuntimeError(NO_KEY)
    import openai

    client = openai.OpenAI(api_key=s.openai_api_key, base_url=s.openai_base_url, timeout=timeout)
    name = model or s.chat_model
    try:
        response = client.chat.completions.create(model=name, messages=prompt.messages(), temperature=0)
    except openai.AuthenticationError:
        raise RuntimeError("OpenAI rejected the API key (401). Check OPENAI_API_KEY.") from None
    except openai.APIError as exc:
        raise RuntimeError(f"the chat call failed ({exc.__class__.__name__}: {exc.message}); "
                           "try again later, or read the prompt and passages above yourself") from None
    usage = response.usage.model_dump() if response.usage is not None else {}
    tokens = {k: v for k, v in usage.items() if isinstance(v, int)}
    return Answer(response.choices[0].message.content or "", prompt, response.model, tokens)
