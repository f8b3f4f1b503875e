"""Progress bars that appear only when a wait is long enough to notice."""

from __future__ import annotations

from typing import Any

SHOW_AFTER = 2.0  # seconds: shorter waits finish before a bar would help, and leave no output behind


def progress_bar(*, total: int, desc: str, unit: str, show: bool = True, leave: bool = True) -> Any:
    """Return a tqdm bar (a widget in a notebook), hidden until the work has taken SHOW_AFTER seconds."""
    from tqdm.auto import tqdm  # imported late: it loads ipywidgets in a notebook

    return tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=leave, delay=SHOW_AFTER)
