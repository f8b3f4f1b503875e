"""Practice for lessons 9-13: SQLAlchemy and pg_dump, upserts, partial indexes, citations, the whole query."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import Context, NotYet, Task, call
from .basics import exact_top

__all__ = ["TASKS"]

UPSERT_QUESTION = "How do I make an upsert instead of failing on a duplicate key?"


def _ids(value: Any, what: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                       for i in value):
        raise NotYet(f"{what} should give a list of ids (int), not {value!r:.60}")
    return list(value)


# -- lesson 9 ------------------------------------------------------------------------------

def _tools_l2(ctx: Context, statement: Any) -> str:
    from sqlalchemy import Select, create_engine

    from ..tools import sqlalchemy_url

    if not isinstance(statement, Select):
        raise NotYet(f"statement should be a select(...) statement, not {type(statement).__name__}")
    text = str(statement)
    if "<->" not in text:
        raise NotYet("order by the L2 distance: Note.embedding.l2_distance(vector) compiles to <->")
    engine = create_engine(sqlalchemy_url(dbname=ctx.conn.info.dbname))
    try:
        with engine.connect() as conn:
            rows = conn.execute(statement).all()
    finally:
        engine.dispose()
    got = [row[0] if not hasattr(row[0], "id") else row[0].id for row in rows]
    q = ctx.embedder.embed_one(UPSERT_QUESTION)
    # The notes are unit vectors, so L2 ranks exactly like cosine distance.
    want = [i for i, _, _ in exact_top(ctx, "tools_notes", q, 3)]
    if got != want:
        raise NotYet(f"expected the ids {want} (the 3 nearest notes, nearest first), got {got}: "
                     "order_by(...).limit(3), with the question's vector")
    return "ordered by <-> with LIMIT 3, as SQLAlchemy compiles it"


def _tools_dump_option(ctx: Context, option: Any) -> str:
    text = " ".join(str(option).split())
    if text in ("--extension=vector", "--extension vector", "-e vector", "-evector", "-e=vector"):
        return "the dump then carries CREATE EXTENSION vector, and restores into an empty database"
    if "schema" in text or text.startswith("-n"):
        raise NotYet("the extension is not a schema: pg_dump has an option for extensions")
    raise NotYet("pg_dump --help lists an option that selects extensions to dump")


# -- lesson 10 -----------------------------------------------------------------------------

def _fresh_upsert(ctx: Context, upsert: Any) -> str:
    slug = "practice-upsert"
    ctx.conn.execute("DELETE FROM fresh_docs WHERE slug = %s", (slug,))
    try:
        call(upsert, "upsert", slug, "Practice", "First version of the text.", returns=False)
        call(upsert, "upsert", slug, "Practice", "Second version: the text changed.", returns=False)
        rows = ctx.conn.execute("SELECT content, embedding FROM fresh_docs WHERE slug = %s",
                                (slug,)).fetchall()
        if not rows:
            raise NotYet("upsert() stored no row with that slug: write its body (in place of ...)")
        if len(rows) != 1:
            raise NotYet(f"{len(rows)} rows have the slug after two upserts; ON CONFLICT (slug) DO UPDATE "
                         "turns the second insert into an update")
        content, embedding = rows[0]
        if content != "Second version: the text changed.":
            raise NotYet("the row kept the first text: SET content = EXCLUDED.content")
        if embedding is None:
            raise NotYet("the row has no embedding: the upsert must bring the new vector "
                         "(SET embedding = EXCLUDED.embedding), or the trigger marks the row stale")
        want = ctx.embedder.embed_one("Practice\nSecond version: the text changed.")
        got = embedding.to_numpy()
        if float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want))) < 0.999:
            raise NotYet("the embedding is not that of the new text: embed the title and content you upsert")
        return "one row, the new text and its new embedding"
    finally:
        ctx.conn.execute("DELETE FROM fresh_docs WHERE slug = %s", (slug,))


# -- lesson 11 -----------------------------------------------------------------------------

def _production_partial(ctx: Context, index_name: Any) -> str:
    if not isinstance(index_name, str):
        raise NotYet("index_name should be the name you gave the index (a str)")
    row = ctx.conn.execute(
        """SELECT c.relname, a.amname, pg_get_expr(i.indpred, i.indrelid), t.relname
           FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_am a ON a.oid = c.relam
           JOIN pg_class t ON t.oid = i.indrelid
           WHERE c.relname = %s AND pg_table_is_visible(c.oid)""", (index_name,)).fetchone()
    if row is None:
        raise NotYet(f"there is no index {index_name!r}: run your CREATE INDEX first")
    _, method, predicate, table = row
    if table != "production_items" or method != "hnsw":
        raise NotYet(f"{index_name} is a {method} index on {table}; build it USING hnsw on production_items")
    if predicate is None:
        raise NotYet("it is not partial: end the CREATE INDEX with WHERE category = 'support'")
    if "'support'" not in predicate:
        raise NotYet(f"its WHERE is {predicate}; the queries to serve filter on category = 'support'")
    from ..search import explain

    dims = ctx.conn.execute("SELECT vector_dims(embedding) FROM production_items LIMIT 1").fetchone()[0]
    q = np.random.default_rng(1).standard_normal(dims).astype(np.float32)
    plan = explain(ctx.conn, "SELECT id FROM production_items WHERE category = 'support' "
                             "ORDER BY embedding <=> %s LIMIT 10", (q,))
    if index_name not in plan.index_names:
        raise NotYet(f"the planner does not use it for a support query (it used {plan.index_names}): "
                     "is the operator class vector_cosine_ops, and did you ANALYZE the table?")
    return f"{index_name} serves category = 'support' queries: {predicate}"


# -- lesson 12 -----------------------------------------------------------------------------

def _rag_citations(ctx: Context, citations: Any) -> str:
    cases = [("Upsert with ON CONFLICT [2]. It needs a unique index [2][1].", 4, [2, 1]),
             ("No sources here.", 3, []),
             ("See [5] and [0], then [3].", 4, [3]),
             ("Twice [1], [1].", 2, [1])]
    for text, n, want in cases:
        got = call(citations, "citations", text, n)
        if not isinstance(got, (list, tuple)) or list(got) != want:
            hint = ""
            if isinstance(got, (list, tuple)) and 5 in got:
                hint = ": [5] cites a passage the prompt never had; keep 1..n only"
            elif isinstance(got, (list, tuple)) and sorted(set(got)) == sorted(set(want)):
                hint = ": each number once, in the order first cited"
            raise NotYet(f"citations({text!r}, {n}) should be {want}, got {got!r:.40}{hint}")
    return "passage numbers in first-cited order, each once, only those the prompt had"


# -- lesson 13 -----------------------------------------------------------------------------

def _quick_top_ids(ctx: Context, top_ids: Any) -> str:
    for question, k in (("how do I speed up similarity search?", 5), (UPSERT_QUESTION, 3)):
        got = _ids(call(top_ids, "top_ids", question, k), "top_ids()")
        want = [i for i, _, _ in exact_top(ctx, "quick_docs", ctx.embedder.embed_one(question), k)]
        if got != want:
            raise NotYet(f"for {question!r} the {k} nearest are {want}, got {got}")
    return "embed, ORDER BY embedding <=> %s, LIMIT k: the whole pattern"


TASKS = (
    Task("tools.l2_statement", ("statement",), _tools_l2),
    Task("tools.dump_option", ("option",), _tools_dump_option),
    Task("fresh.upsert", ("upsert",), _fresh_upsert),
    Task("production.partial_index", ("index_name",), _production_partial),
    Task("rag.citations", ("citations",), _rag_citations),
    Task("quick.top_ids", ("top_ids",), _quick_top_ids),
)
