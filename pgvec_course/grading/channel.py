"""The answer channel: how a probe's result gets from the learner's kernel back to the grader.

Printing a marker and reading the last one lets any `post_run_cell` hook or replaced `sys.stdout`
print a forged line after it. Instead a probe travels as a *silent* execute request (IPython runs
no pre/post_run_cell hooks and no input transformers for it) whose code is `pass`; the probe
itself is a `user_expressions` entry, evaluated after that, and its value comes back in the
execute reply, not on the output stream. The value starts with a nonce that appears nowhere
before the probe runs and is encoded with the builtin types' own methods, which no notebook can
patch. Code inside the kernel can still interfere (it can patch `exec` or IPython itself), so a
result without the nonce, or a nonce seen in the output, is reported as tampering, and the
grader scores every answer against references it computes itself.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from ..questions.spec import RESULT_NAME
from . import _syntax

LIMIT = 8_000_000  # characters of one encoded result

# Runs in the learner's namespace; {source} is the question's probe, which sets RESULT_NAME.
_WRAPPER = '''
{result} = None
try:
    exec(compile({source!r}, "<grader probe>", "exec"), globals())
except BaseException as __pvc_exc:
    {result} = {{"error": (type(__pvc_exc).__name__ + ": " + str(__pvc_exc))[:500]}}

def __pvc_encode(x, depth=0):
    # The builtin types, found without a name lookup a notebook could have replaced.
    t, s, i, f, b = ().__class__.__class__, "".__class__, (0).__class__, (0.0).__class__, True.__class__
    kind = t(x)
    if x is None or kind is b or kind is i:
        return i.__repr__(x) if kind is i else ("None" if x is None else ("True" if x else "False"))
    if kind is f:
        return f.__repr__(x) if x == x and x not in (1e999, -1e999) else "None"
    if kind is s:
        return s.__repr__(x)
    if depth < 8 and (kind is [].__class__ or kind is ().__class__):
        return "[" + ", ".join(__pvc_encode(v, depth + 1) for v in x) + "]"
    if depth < 8 and kind is {{}}.__class__:
        pairs = (s.__repr__(s(k)) + ": " + __pvc_encode(v, depth + 1) for k, v in x.items())
        return "{{" + ", ".join(pairs) + "}}"
    return "{{'__type__': " + s.__repr__(kind.__name__) + "}}"

{out} = {nonce!r} + __pvc_encode({result})
del {result}, __pvc_encode
'''


@dataclass(frozen=True)
class Request:
    """One probe's user expression, and the nonce its answer must start with."""

    nonce: str
    expressions: dict[str, str]

    def read(self, reply: dict[str, Any]) -> Any:
        """Return the probe's data from an execute reply's content; raise ValueError saying what is wrong."""
        value = (reply.get("user_expressions") or {}).get("answer")
        if not isinstance(value, dict):
            raise ValueError("the kernel sent no answer back")
        if value.get("status") != "ok":
            raise ValueError(f"the probe failed: {value.get('ename')}: {str(value.get('evalue'))[:300]}")
        text = (value.get("data") or {}).get("text/plain")
        if not isinstance(text, str) or len(text) > LIMIT:
            raise ValueError("the answer was missing or too large")
        try:
            answer = _syntax.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise Tampered("the answer came back in a form the grader's probe never writes") from None
        if not isinstance(answer, str) or not answer.startswith(self.nonce):
            raise Tampered("the answer did not come from the grader's probe")
        try:
            return _syntax.literal_eval(answer[len(self.nonce):])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise Tampered("the answer was not what the grader's probe writes") from None

    def seen_in(self, text: str) -> bool:
        """Return True when the nonce shows up in output: code that should never see it printed it."""
        return self.nonce in text


class Tampered(ValueError):
    """The answer channel was interfered with."""


def request(source: str) -> Request:
    """Return the user expression that runs probe `source` and hands its result back."""
    nonce = f"pvc{secrets.token_hex(16)}:"
    out = f"__pvc_out_{secrets.token_hex(8)}"
    code = _WRAPPER.format(source=source, result=RESULT_NAME, out=out, nonce=nonce)
    run = f"exec(compile({code!r}, '<grader probe>', 'exec'), globals())"
    expression = f"({run}, globals().pop({out!r}, None))[1]"
    return Request(nonce=nonce, expressions={"answer": expression})
