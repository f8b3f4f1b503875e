"""Notebook widgets: tune an index with a slider, and search the course knowledge base.

Each widget is a class whose `update()` reads the controls and rewrites its `output`
(an HTML widget), so the callbacks run, and are tested, without a browser.
"""

from __future__ import annotations

import html

import ipywidgets as w
import numpy as np
import psycopg

from .bench import Dataset, ground_truth, mean_recall, run_queries

__all__ = ["IndexTuner", "SearchBox"]

_LIMITS = {"ef_search": (1, 1000), "probes": (1, 100)}  # pgvector caps ef_search at 1000


class _Widget:
    widget: w.Widget
    output: w.HTML

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        # Without a live kernel (a saved notebook, a code host) the widget cannot draw itself:
        # the latest results as plain HTML are what a reader should see instead.
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        return {**bundle, "text/html": self.output.value}


class IndexTuner(_Widget):
    """A slider for hnsw.ef_search or ivfflat.probes that reruns the queries and shows recall and latency.

    The table must already hold `data` (see `load_vectors`) and the index to tune. Every
    setting tried is kept in `history` and shown in a table under the latest one.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        data: Dataset,
        *,
        param: str = "ef_search",
        value: int = 40,
        table: str = "bench_vectors",
        k: int = 10,
        metric: str = "cosine",
    ):
        if param not in _LIMITS:
            raise ValueError(f"param must be 'ef_search' (HNSW) or 'probes' (IVFFlat), not {param!r}")
        self.conn, self.data, self.param, self.table = conn, data, param, table
        self.k, self.metric = k, metric
        self.truth = ground_truth(data.vectors, data.queries, k, metric=metric, ids=data.ids)
        low, high = _LIMITS[param]
        self.slider = w.IntSlider(value=value, min=low, max=high, description=param, continuous_update=False)
        self.output = w.HTML()
        self.history: dict[int, tuple[float, float, float, str]] = {}
        self.widget = w.VBox([self.slider, self.output])
        self.slider.observe(lambda _: self.update(), names="value")
        self.update()

    def update(self) -> None:
        """Run the query batch at the slider's value and show recall, latency and the plan."""
        value = self.slider.value
        run = run_queries(self.conn, self.table, self.data.queries, self.k, metric=self.metric,
                          warmup=min(10, len(self.data.queries)), **{self.param: value})  # fmt: skip
        ms = run.latencies * 1000
        used = ", ".join(run.plan.vector_indexes) or "seq scan"
        recall = mean_recall(run.found, self.truth, self.k)
        self.history[value] = (recall, float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), used)
        self.output.value = self.render(value)

    def render(self, value: int) -> str:
        """Return the HTML shown for the latest `value` and every setting tried so far."""
        recall, p50, p95, used = self.history[value]
        warn = "" if used != "seq scan" else " <b style='color:#b00'>(the planner skipped the index)</b>"
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

    The table is one made by `create_documents_table(..., fulltext=True)` and
    `insert_documents(...)`; keyword and hybrid modes need its `tsv` column.
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
        results = self.results()
        where = f" in {html.escape(self.category.value)}" if self.category.value else ""
        noun = "result" if len(results) == 1 else "results"
        caption = f"<p>{len(results)} {self.mode.value} {noun}{where}</p>"
        self.output.value = caption + results._repr_html_()
