"""The helpers the exercises' questions are built from: probes, reading answers back, scoring.

A probe is Python source run in the learner's namespace; it stores plain JSON-able data in
`__pvc_result__`. Scorers turn that data into an `Outcome`, comparing it with references computed
from the database at scoring time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from .spec import RESULT_NAME, Outcome

# Source run in the learner's namespace. Self-contained (no package import) so that a notebook
# which patches pgvec_course cannot change what is read back; output is plain JSON-able data.
_PROBE = '''
def __pvc_probe():
    def plain(x, depth=0):
        if depth > 6:
            return {"__type__": type(x).__name__}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if type(x).__name__ == "Decimal":  # numeric columns: a number all the same
            return float(x)
        if hasattr(x, "tolist") and hasattr(x, "dtype"):
            return plain(x.tolist(), depth + 1)
        if isinstance(x, (list, tuple)):
            return [plain(v, depth + 1) for v in list(x)[:200]]
        if isinstance(x, dict):
            return {str(k): plain(v, depth + 1) for k, v in list(x.items())[:200]}
        return {"__type__": type(x).__name__, "repr": repr(x)[:200]}

    def error(e):
        return {"error": (type(e).__name__ + ": " + str(e))[:500]}
%(setup)s
    target = globals().get(%(target)r)
    if target is None:
        return {"missing": %(target)r}
    if not %(call)r:
        return {"value": plain(target)}
    if not callable(target):
        return {"not_callable": type(target).__name__}
    calls = []
    for make_args in [%(calls)s]:
        try:
            calls.append({"value": plain(target(*make_args()))})
        except Exception as e:
            calls.append(error(e))
    return {"calls": calls}

try:
    %(result)s = __pvc_probe()
except Exception as e:
    %(result)s = {"error": (type(e).__name__ + ": " + str(e))[:500]}
del __pvc_probe
'''


def build_probe(target: str, arg_sources: Sequence[str] = (), *, call: bool = True, setup: str = "") -> str:
    """Return probe source that calls `target(<args>)` for each argument source, or reads a variable."""
    calls = ", ".join(f"lambda: ({a},)" for a in arg_sources)
    setup = "\n".join("    " + line for line in setup.strip().splitlines())
    return _PROBE % {"target": target, "call": call, "calls": calls, "setup": setup, "result": RESULT_NAME}


def call_problem(data: Any, name: str) -> str | None:
    """Return why the probe could not call `name` at all, or None when it could."""
    if not isinstance(data, dict):
        return f"could not read back the result of {name} (got {type(data).__name__})"
    if "missing" in data:
        return f"not yet: no `{data['missing']}` is defined; run the cell that defines it first"
    if "not_callable" in data:
        return f"`{name}` should be a function, but it is a {data['not_callable']}"
    if "error" in data:
        return f"checking {name} failed: {data['error']}"
    return None


def not_started(data: Any, name: str) -> str | None:
    """Return the placeholder hint when every call still raised NotImplementedError, else None."""
    calls = data.get("calls") if isinstance(data, dict) else None
    if calls and all(c.get("error", "").startswith("NotImplementedError") for c in calls):
        return error_feedback(name, calls[0]["error"])
    return None


def error_feedback(name: str, err: str) -> str:
    """Explain an exception the learner's function raised."""
    if err.startswith("NotImplementedError"):
        return f"not yet: {name}() still raises NotImplementedError; replace the placeholder with your code"
    if err.startswith(("UndefinedTable", "UndefinedColumn")) or "does not exist" in err:
        return f"{name}() raised {err.splitlines()[0]}: run the cells that create the table first"
    if "current transaction is aborted" in err:
        return (f"{name}() raised {err.splitlines()[0]}: an earlier statement failed on this connection; "
                "run conn.rollback() and try again")
    return f"{name}() raised {err.splitlines()[0]}"


def as_pairs(value: Any, what: str) -> tuple[list[tuple[int, float]] | None, str | None]:
    """Read a list of (id, number) pairs, or explain why `value` is not one."""
    if isinstance(value, dict) and "__type__" in value:
        return None, f"{what} should return a list of (id, number) tuples, not a {value['__type__']}"
    if not isinstance(value, list):
        return None, f"{what} should return a list of (id, number) tuples, not {type(value).__name__}"
    pairs = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2):
            return None, f"each result of {what} should be an (id, number) tuple; got {str(item)[:60]}"
        pid, num = item
        if isinstance(pid, bool) or not isinstance(pid, int):
            return None, f"the first element of each result should be the passage id (int); got {pid!r:.40}"
        if isinstance(num, bool) or not isinstance(num, (int, float)):
            return None, f"the second element of each result should be a number; got {num!r:.40}"
        pairs.append((pid, float(num)))
    return pairs, None


def grade(question: str, max_points: float, results: Sequence[str | None], ok_text: str) -> Outcome:
    """Turn per-input results (None = passed, else feedback) into an Outcome with partial credit."""
    if not results:
        return Outcome(question, 0.0, max_points, False, "nothing was checked")
    failures = [r for r in results if r is not None]
    points = round(max_points * (len(results) - len(failures)) / len(results), 2)
    if not failures:
        return Outcome(question, max_points, max_points, True, ok_text)
    note = f" ({len(results) - len(failures)} of {len(results)} inputs passed)" if len(results) > 1 else ""
    return Outcome(question, points, max_points, False, failures[0] + note)


def safe_score(question: str, max_points: float, scorer: Callable[[], Outcome]) -> Outcome:
    """Run a scorer, turning an unexpected exception into a failed Outcome (scoring never raises)."""
    try:
        return scorer()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Outcome(question, 0.0, max_points, False, f"the database answered: {first}")
    except Exception as exc:  # noqa: BLE001 - a check explains, it does not crash
        return Outcome(question, 0.0, max_points, False, f"could not check: {type(exc).__name__}: {exc}")


def table_problem(conn: psycopg.Connection, table: str, columns: Sequence[str]) -> str | None:
    """Return what is missing from `table` (the table or some columns), or None."""
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
        return f"there is no table {table}: run the cell that creates it"
    have = {r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (table,))}
    missing = [c for c in columns if c not in have]
    if missing:
        return f"{table} has no column {', '.join(missing)}; the contract at the top lists its columns"
    return None


def column_type(conn: psycopg.Connection, table: str, column: str) -> str:
    """Return the SQL type of a column as Postgres spells it, for example 'vector(384)'."""
    return conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attname = %s", (table, column)).fetchone()[0]


def fetch_vectors(conn: psycopg.Connection, table: str, column: str = "embedding") -> tuple[Any, Any]:
    """Return (ids, matrix) of a table's non-null vectors, ordered by id, as numpy arrays."""
    import numpy as np
    from psycopg import sql

    query = sql.SQL("SELECT id::int8, {} FROM {} WHERE {} IS NOT NULL ORDER BY id").format(
        sql.Identifier(column), sql.Identifier(table), sql.Identifier(column))
    # Binary COPY parsed by numpy takes a quarter of a second for 10,000 x 1536 values, where
    # building a pgvector.Vector per row takes several seconds.
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)) as copy:
        for chunk in copy:
            buf += chunk
    body = bytes(buf[19:-2])  # 19-byte header, 2-byte trailer
    if not body:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    dim = int.from_bytes(body[18:20], "big")
    row = np.dtype([("fields", ">i2"), ("n1", ">i4"), ("id", ">i8"), ("n2", ">i4"), ("dim", ">i2"),
                    ("unused", ">i2"), ("v", ">f4", (dim,))])
    if len(body) % row.itemsize == 0:
        rows = np.frombuffer(body, dtype=row)
        if np.all(rows["dim"] == dim):
            return rows["id"].astype(np.int64), rows["v"].astype(np.float64)
    raise ValueError(f"the vectors in {table}.{column} do not all have the same dimension: "
                     "declare the column with one, for example vector(384)")


def cosine_distances(matrix: Any, query: Any) -> Any:
    """Return the cosine distance of every row of `matrix` to `query`, in float64."""
    import numpy as np

    q = np.asarray(query, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(q)
    return 1.0 - (matrix @ q) / np.where(norms == 0, 1.0, norms)


def ranked(ids: Any, keys: Any) -> Any:
    """Return ids sorted by key ascending, ties broken by the smaller id."""
    import numpy as np

    return ids[np.lexsort((ids, keys))]
