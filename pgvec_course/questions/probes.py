"""Probe sources: Python run in the learner's namespace that stores plain JSON-able data.

Probes are self-contained (they import nothing from this package unless a question needs the
corpus) so that a notebook which patches pgvec_course cannot change what is read back; scorers
never trust more than they can check again.
"""

from __future__ import annotations

from .spec import RESULT_NAME

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

    out = {}
%(setup)s
    if not %(target)r:
        return out
    target = globals().get(%(target)r)
    if target is None:
        return dict(out, missing=%(target)r)
    if not %(call)r:
        return dict(out, value=plain(target))
    if not callable(target):
        return dict(out, not_callable=type(target).__name__)
    calls = []
    for args in %(args)s:
        try:
            calls.append({"value": plain(target(*args))})
        except Exception as e:
            calls.append(error(e))
    return dict(out, calls=calls)

try:
    %(result)s = __pvc_probe()
except Exception as e:
    %(result)s = {"error": (type(e).__name__ + ": " + str(e))[:500]}
del __pvc_probe
'''


def build_probe(target: str, args: str = "[]", *, call: bool = True, setup: str = "") -> str:
    """Return probe source that calls `target(*a)` for each tuple `a` of the `args` expression.

    `setup` runs first, inside the probe function: it may define names `args` uses and put extra
    data for the scorer in the dict `out`. With `call=False` the probe reads the variable `target`.
    """
    setup = "\n".join("    " + line for line in setup.strip().splitlines())
    return _PROBE % {"target": target, "call": call, "args": args, "setup": setup, "result": RESULT_NAME}


def literal_args(cases) -> str:
    """Return the source of a list of argument tuples for literal inputs."""
    return "[" + ", ".join("(" + "".join(f"{v!r}, " for v in case) + ")" for case in cases) + "]"


# Finds the learner's database connections (psycopg 3 or psycopg2, or cursors of them) among their
# globals and reports those holding a transaction that wrote something. When grading, it commits
# them, so that the rest of the work can be checked; an inline check only reports.
OPEN_TRANSACTIONS = '''
def open_writes(commit):
    seen, found = set(), []
    for name, obj in list(globals().items()):
        kind = type(obj).__module__.split(".")[0]
        if kind not in ("psycopg", "psycopg2") or name.startswith("_"):
            continue
        conn = obj if type(obj).__name__.lower() == "connection" else getattr(obj, "connection", None)
        if conn is None or id(conn) in seen or getattr(conn, "closed", True):
            continue
        seen.add(id(conn))
        status = conn.info.transaction_status if kind == "psycopg" else conn.get_transaction_status()
        if int(status) not in (2, 3):  # INTRANS, INERROR
            continue
        wrote = False
        if int(status) == 2:
            cur = conn.cursor()
            cur.execute("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
            wrote = bool(cur.fetchone()[0])
            cur.close()
        if wrote or int(status) == 3:
            found.append({"name": name, "failed": int(status) == 3})
            if commit:
                conn.commit()
    return found

out["grading"] = %(commit)r
try:
    out["open"] = open_writes(%(commit)r)
except Exception as e:
    out["open_error"] = (type(e).__name__ + ": " + str(e))[:300]
'''


def table_probe(*, grading: bool) -> str:
    """Return the probe of a table question: it reports (and when grading, commits) open writes."""
    return build_probe("", setup=OPEN_TRANSACTIONS % {"commit": grading})
