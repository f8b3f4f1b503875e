"""Hidden tests of exercise 1 (a knowledge base), kept by the instructor: never in the learner's copy.

Learners choose their own topic, so the grader's questions are derived from their own passages:
one of its sentences, a paraphrase made of another passage's words, and a third passage's title
turned into a question. The function runs in the learner's kernel and again in the grader, which
only accepts answers to the questions it derived itself.
"""


def questions_from_passages(rows):
    """Return the hidden questions for a table's rows [(id, title, content), ...], ordered by id."""
    import hashlib
    import re

    stop = {"about", "after", "also", "because", "before", "being", "between", "could", "every", "from",
            "have", "into", "just", "more", "most", "only", "other", "over", "should", "since", "some",
            "than", "that", "their", "them", "then", "there", "these", "they", "this", "through", "under",
            "very", "what", "when", "where", "which", "while", "with", "without", "would", "your"}
    usable = [r for r in rows if len(str(r[2]).split()) >= 6]
    if not usable:
        return []
    pick = sorted(usable, key=lambda r: hashlib.sha256(f"pgvec-kb-hidden:{r[0]}".encode()).hexdigest())
    first, second, third = (pick[n % len(pick)] for n in range(3))

    sentences = [s for s in re.split(r"(?<=[.!?;])\s+", str(first[2]).strip()) if len(s.split()) >= 4]
    sentence = (sentences[len(sentences) // 2] if sentences else str(first[2])).rstrip(".!?;").lower()

    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]{3,}", str(second[2])) if w.lower() not in stop]
    longest = sorted(dict.fromkeys(w.lower() for w in words), key=lambda w: (-len(w), w))[:6]
    shuffled = sorted(longest, key=lambda w: hashlib.sha256(w.encode()).hexdigest())
    paraphrase = "what about " + " ".join(shuffled) + "?"

    title = str(third[1]).strip() or " ".join(str(third[2]).split()[:8])
    return [sentence, paraphrase, f"What should I know about {title.lower()}?",
            "Which passage explains the basics for a beginner?"]


INPUTS = {
    "kb.table": None,
    "kb.ask": questions_from_passages,
}
