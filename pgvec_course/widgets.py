"""Notebook widgets: tune an index with a slider, and search the course knowledge base.

Each widget is a class whose `update()` reads the controls and rewrites its `output`
(an HTML widget), so the callbacks run, and are tested, without a browser. A callback that
fails shows what went wrong and what to do next in that output, never only in a log.
"""

from __future__ import annotations

import html

import ipywidgets as w
import numpy as np
import psycopg

from .bench import Dataset, ground_truth, mean_recall, run_queries

__all__ = ["IndexTuner", "SearchBox"]

_LIMITS = {"ef_search": (1, 1000), "probes": (1, 100)}  # pgvector caps ef_search at 1000
_KINDS = {"ef_search": "hnsw", "probes": "ivfflat"}
_OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}
_RED = "color:#b00"
_LOAD_FIRST = "load the data first: pvc.load_vectors(conn, data, table=...)"


def problem_html(what: str, fix: str = "") -> str:
    """Return the HTML a widget shows when it cannot do its job: what is wrong, then what to do."""
    tail = f"; {html.escape(fix)}" if fix else ""
    return f"<p style='{_RED}'><b>✘ {html.escape(what)}</b>{tail}</p>"


def _error_html(exc: Exception, table: str, remedy: str) -> str:
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return problem_html(f"table {table} does not exist", remedy)
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return problem_html("the connection to Postgres is closed or broken (did the server restart?)",
                            "run conn = pvc.connect(), then create this widget again with the new conn")
    if isinstance(exc, ValueError):  # the package's own errors already say what to do next
        return problem_html(str(exc))
    return problem_html(f"{type(exc).__name__}: {exc}", remedy)


class _Widget:
    widget: w.Widget
    output: w.HTML

    def _html(self) -> str:
        return self.output.value

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        # Without a live kernel (a saved notebook, a code host) the widget cannot draw itself:
        # the latest results as plain HTML are what a reader should see instead.
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        return {**bundle, "text/html": self._html()}


class IndexTuner(_Widget):
    """A slider (and a box to type in) for hnsw.ef_search or ivfflat.probes; shows recall and latency.

    The table must already hold `data` (see `load_vectors`) and the index to tune. The controls
    stop at the highest setting at which the planner still uses the index (above it, it would
    scan the table exactly), and say so. Every setting tried is kept in `history` and shown in
    a table under the latest one.
    """

    def __init__(self, conn: psycopg.Connection, data: Dataset, *, param: str = "ef_search", value: int = 40,
                 table: str = "bench_vectors", k: int = 10, metric: str = "cosine"):  # fmt: skip
        if param not in _LIMITS:
            raise ValueError(f"param must be 'ef_search' (HNSW) or 'probes' (IVFFlat), not {param!r}")
        if metric not in _OPCLASSES:
            raise ValueError(f"metric must be 'cosine', 'l2' or 'ip', not {metric!r}")
        self.conn, self.data, self.param, self.table = conn, data, param, table
        self.k, self.metric, self.kind = k, metric, _KINDS[param]
        self.truth = ground_truth(data.vectors, data.queries, k, metric=metric, ids=data.ids)
        low, high = _LIMITS[param]
        value = min(max(value, low), high)
        self.slider = w.IntSlider(value=value, min=low, max=high, description=param, continuous_update=False,
                                  layout=w.Layout(width="460px"))  # fmt: skip
        self.box = w.BoundedIntText(value=value, min=low, max=high, layout=w.Layout(width="90px"))
        w.link((self.slider, "value"), (self.box, "value"))  # type a value, or drag: one setting
        self.note, self.output = w.HTML(), w.HTML()
        self.history: dict[int, tuple[float, float, float, str]] = {}
        self.widget = w.VBox([w.HBox([self.slider, self.box]), self.note, self.output])
        self.fit_range()
        self.slider.observe(lambda _: self.update(), names="value")
        self.update()

    def _html(self) -> str:
        return self.note.value + self.output.value

    def _rebuild_hint(self) -> str:
        lists = " WITH (lists = ...)" if self.kind == "ivfflat" else ""
        return (f"build it again: CREATE INDEX ON {self.table} USING {self.kind} "
                f"(embedding {_OPCLASSES[self.metric]}){lists}")  # fmt: skip

    def _index(self) -> tuple[str, int] | None:
        """Return the name of the table's index of the tuned kind and its list count, or None."""
        if self.conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()[0] is None:
            raise psycopg.errors.UndefinedTable(f"relation {self.table} does not exist")
        row = self.conn.execute(
            "SELECT c.relname, c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = to_regclass(%s) AND a.amname = %s "
            "ORDER BY c.relname LIMIT 1", (self.table, self.kind)).fetchone()  # fmt: skip
        if row is None:
            return None
        lists = [int(o.split("=")[1]) for o in row[1] or [] if o.startswith("lists=")]
        return row[0], (lists[0] if lists else 100)  # pgvector's default lists

    def _planned(self, value: int) -> bool:
        """Whether the planner uses a vector index for the queries at this setting."""
        from .bench.runner import _query
        from .index import index_settings
        from .search import explain

        query = _query(self.conn, self.table, self.metric)
        with index_settings(self.conn, **{self.param: value}):
            return explain(self.conn, query, (self.data.queries[0], self.k)).uses_index

    def fit_range(self) -> None:
        """Narrow the controls to the settings at which the planner uses the index, and say why."""
        try:
            found = self._index()
            if found is None:
                self.note.value = ""  # update() reports the missing index
                return
            name, lists = found
            low, high = _LIMITS[self.param]
            if self.kind == "ivfflat":
                high = min(high, lists)  # more probes than lists search the same clusters
            if not self._planned(low):
                self.note.value = problem_html(
                    f"the planner does not use {name} for these queries at any {self.param}: every query "
                    f"is an exact scan of the {len(self.data.vectors):,} rows, cheaper on a table this small",
                    "load more rows, or compare with SET LOCAL enable_seqscan = off")
                return
            top = high if self._planned(high) else self._highest_planned(low, high)
            self.slider.max = self.box.max = top
            if top == high:
                why = "pgvector's limit" if self.kind == "hnsw" else f"{name} has {lists} lists"
            else:
                rows = len(self.data.vectors)
                why = (f"above {top} the planner expects an exact scan of the {rows:,} rows to be cheaper "
                       f"than {name}, so the recall there would be the scan's, not the index's")
            self.note.value = f"<p><i>{self.param} from {low} to {top}: {html.escape(why)}.</i></p>"
        except Exception as exc:  # noqa: BLE001 - shown in the widget, with the fix
            self.note.value = _error_html(exc, self.table, _LOAD_FIRST)

    def _highest_planned(self, low: int, high: int) -> int:
        while high - low > 1:  # invariant: the index is planned at low, not at high
            middle = (low + high) // 2
            low, high = (middle, high) if self._planned(middle) else (low, middle)
        return low

    def update(self) -> None:
        """Run the query batch at the current setting and show recall, latency and the plan."""
        value = self.slider.value
        try:
            found = self._index()
            if found is None:
                self.output.value = problem_html(
                    f"{self.table} has no {self.kind.upper()} index (any more?), so {self.param} changes "
                    "nothing: every query is an exact scan", self._rebuild_hint())
                return
            run = run_queries(self.conn, self.table, self.data.queries, self.k, metric=self.metric,
                              warmup=min(10, len(self.data.queries)), **{self.param: value})  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - shown in the widget, with the fix
            self.output.value = _error_html(exc, self.table, _LOAD_FIRST)
            return
        ms = run.latencies * 1000
        used = ", ".join(run.plan.vector_indexes) or "seq scan"
        recall = mean_recall(run.found, self.truth, self.k)
        self.history[value] = (recall, float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), used)
        self.output.value = self.render(value)

    def render(self, value: int) -> str:
        """Return the HTML shown for the latest `value` and every setting tried so far."""
        recall, p50, p95, used = self.history[value]
        warn = "" if used != "seq scan" else (
            f" <b style='{_RED}'>(the planner skipped the index: these are the exact scan's figures)</b>")
        head = (f"<p><b>{self.param} = {value}</b>: recall@{self.k} {recall:.3f}, p50 {p50:.2f} ms, "
                f"p95 {p95:.2f} ms over {len(self.data.queries)} queries; "
                f"plan: {html.escape(used)}{warn}</p>")  # fmt: skip
        rows = "".join(
            f"<tr><td>{v}</td><td>{r:.3f}</td><td>{a:.2f}</td><td>{b:.2f}</td><td>{html.escape(u)}</td></tr>"
            for v, (r, a, b, u) in sorted(self.history.items())
        )
        table = (f"<table><thead><tr><th>{self.param}</th><th>recall@{self.k}</th><th>p50 ms</th>"
                 f"<th>p95 ms</th><th>plan</th></tr></thead><tbody>{rows}</tbody></table>")  # fmt: skip
        return head + table


class SearchBox(_Widget):
    """A search box over the knowledge base with a category filter and a semantic/keyword/hybrid switch.

    The table is one made by `create_corpus_table(conn, table, fulltext=True)` (or
    `create_documents_table(..., fulltext=True)` and `insert_documents(...)`); keyword and
    hybrid modes need its `tsv` column.
    """

    MODES = ("semantic", "keyword", "hybrid")

    def __init__(self, conn: psycopg.Connection, *, table: str = "documents", k: int = 5, embedder=None):
        from .corpus import categories

        self.conn, self.table, self.k, self.embedder = conn, table, k, embedder
        self.query = w.Text(placeholder="Ask the knowledge base…", description="query",
                            continuous_update=False)  # fmt: skip
        self.category = w.Dropdown(options=[("all categories", None), *((c, c) for c in categories())],
                                   description="category")  # fmt: skip
        self.mode = w.ToggleButtons(options=self.MODES, description="mode")
        self.output = w.HTML()
        self.widget = w.VBox([w.HBox([self.query, self.category]), self.mode, self.output])
        for control in (self.query, self.category, self.mode):
            control.observe(lambda _: self.update(), names="value")
        self.update()

    def results(self):
        """Run the search the controls describe and return its Results."""
        from .hybrid import hybrid_search, keyword_search
        from .search import search

        text, category = self.query.value.strip(), self.category.value
        if self.mode.value == "semantic":
            return search(self.conn, text, self.k, table=self.table, category=category,
                          embedder=self.embedder)  # fmt: skip
        if self.mode.value == "keyword":
            return keyword_search(self.conn, text, self.k, table=self.table, category=category)
        return hybrid_search(self.conn, text, self.k, table=self.table, category=category,
                             embedder=self.embedder)  # fmt: skip

    def update(self) -> None:
        """Search with the current query, category and mode, and show the top results."""
        if not self.query.value.strip():
            self.output.value = "<p><i>Type a question and press Enter.</i></p>"
            return
        try:
            results = self.results()
        except Exception as exc:  # noqa: BLE001 - shown in the widget, with the fix
            remedy = f"create it first: pvc.create_corpus_table(conn, {self.table!r}, fulltext=True)"
            self.output.value = _error_html(exc, self.table, remedy)
            return
        where = f" in {html.escape(self.category.value)}" if self.category.value else ""
        noun = "result" if len(results) == 1 else "results"
        caption = f"<p>{len(results)} {self.mode.value} {noun}{where}</p>"
        self.output.value = caption + results._repr_html_()
