"""Runs side by side in a notebook: what ``run_a.compare(run_b)`` and ``%clarion compare`` show.

The first run is the base: each other run's outputs are shown against it, text as a
word-level diff and JSON values as a structural one (the paths that were added, removed or
changed), so a re-run's effect reads at a glance; the steps that differ come first. Colours
are Lab's theme variables mixed with transparency, so the table reads on a light and a dark
theme alike. ``.to_dataframe()`` has one row per step and run.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import ipywidgets

from ..workflow.compare import ComparedStep, RunComparison
from .markup import Markup, escape, join, tag

Path = tuple[str | int, ...]


class Comparison:
    """A :class:`RunComparison` with its views; displayed, it is its widget."""

    def __init__(self, comparison: RunComparison) -> None:
        self.comparison = comparison

    @property
    def differing(self) -> list[str]:
        """The keys of the steps whose status or output differ between the runs."""
        return [step.key for step in self.comparison.steps if step.differs]

    def to_dataframe(self) -> Any:
        """One row per step and run: key, run_id, differs, status, duration_ms, attempts, tokens, cost_usd, output."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
        runs = [run.run_id for run in self.comparison.runs]
        return pd.DataFrame(
            [
                {"key": step.key, "run_id": run_id, "differs": step.differs, **cell.model_dump(mode="json")}
                for step in self.comparison.steps
                for run_id, cell in zip(runs, step.per_run, strict=True)
            ]
        )

    @property
    def widget(self) -> ipywidgets.HTML:
        return ipywidgets.HTML(value=self.to_html())

    def to_html(self) -> Markup:
        """The runs side by side: the steps that differ first (marked), then the equal ones."""
        runs = self.comparison.runs
        head = tag(
            "tr",
            tag("th", "step"),
            *(tag("th", tag("code", run.run_id), tag("br"), tag("small", run.status)) for run in runs),
        )
        steps = sorted(self.comparison.steps, key=lambda step: not step.differs)
        table = tag(
            "table", tag("thead", head), tag("tbody", *(_row(step) for step in steps)), class_="clarion-compare"
        )
        return join([tag("style", STYLE), table])

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        return {**bundle, "text/html": self.to_html()}

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.comparison.runs)} runs: differing steps {self.differing}>"


STYLE = " ".join(
    [
        ".clarion-compare {border-collapse: collapse; margin: 4px 0; line-height: 1.4}",
        ".clarion-compare th, .clarion-compare td {border: 1px solid var(--jp-border-color2, #ddd);"
        " padding: 4px 8px; text-align: left; vertical-align: top}",
        ".clarion-compare tr.clarion-differs {background: color-mix(in srgb, var(--jp-warn-color1, #f57c00) 14%,"
        " transparent)}",
        ".clarion-compare ins {background: color-mix(in srgb, var(--jp-success-color1, #388e3c) 30%, transparent);"
        " text-decoration: none}",
        ".clarion-compare del {background: color-mix(in srgb, var(--jp-error-color1, #d32f2f) 30%, transparent)}",
    ]
)
"""The table's look, scoped to its class: Lab's theme variables (with fallbacks elsewhere), the
tints mixed with transparency so that they read on a light and a dark theme alike."""


def _row(step: ComparedStep) -> Markup:
    base = step.per_run[0].output
    cells = []
    for index, cell in enumerate(step.per_run):
        shown = _escaped(cell.output) if index == 0 or not step.differs else output_diff(base, cell.output)
        meta = f"{cell.status or '—'}" + (f" · {cell.duration_ms:.0f} ms" if cell.duration_ms else "")
        reused = " · reused" if cell.reused_from else ""
        cells.append(tag("td", tag("small", meta + reused), tag("div", shown)))
    key = tag("th", step.key, tag("br") if step.differs else None, tag("small", "differs") if step.differs else None)
    return tag("tr", key, *cells, class_="clarion-differs" if step.differs else None)


def output_diff(base: Any, other: Any) -> Markup:
    """HTML: text as a word-level diff, anything else as a structural diff of its JSON."""
    if isinstance(base, str) and isinstance(other, str):
        return word_diff(base, other)
    text = _text_of(base), _text_of(other)
    if all(isinstance(t, str) for t in text):
        return word_diff(*text)
    return join(
        (
            join([tag("code", _dotted(path) or "(the value)"), f" {kind} ", _shown(kind, base, path, value)])
            for kind, path, value in structural_diff(base, other)
        ),
        Markup("<br>"),
    )


def _shown(kind: str, base: Any, path: Path, after: Any) -> Markup:
    """A changed text leaf as its word diff; any other value as (short) JSON."""
    if kind == "changed" and isinstance(after, str):
        before = base
        for part in path:
            before = before[part]
        if isinstance(before, str):
            return word_diff(before, after)
    return escape(_short(after))


def _text_of(value: Any) -> str | None:
    """The text of an LLM step's output (``{"text": ...}``), which reads best as words."""
    return value.get("text") if isinstance(value, dict) and isinstance(value.get("text"), str) else None


def word_diff(before: str, after: str) -> Markup:
    """``after`` with the words added marked ``<ins>`` and the ones removed ``<del>``."""
    a, b = before.split(), after.split()
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("replace", "delete"):
            parts.append(tag("del", " ".join(a[i1:i2])))
        if op in ("replace", "insert"):
            parts.append(tag("ins", " ".join(b[j1:j2])))
        if op == "equal":
            parts.append(" ".join(a[i1:i2]))
    return join(parts, " ")


def structural_diff(before: Any, after: Any, path: Path = ()) -> list[tuple[str, Path, Any]]:
    """``(kind, path, value)`` for each place two JSON values differ: ``added``, ``removed``
    (the value it had) or ``changed`` (the new value); equal subtrees are not listed."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in list(dict.fromkeys([*before, *after])):
            if key not in after:
                found.append(("removed", (*path, key), before[key]))
            elif key not in before:
                found.append(("added", (*path, key), after[key]))
            else:
                found += structural_diff(before[key], after[key], (*path, key))
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            change
            for i, (x, y) in enumerate(zip(before, after, strict=True))
            for change in structural_diff(x, y, (*path, i))
        ]
    return [] if before == after else [("changed", path, after)]


def _dotted(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _escaped(value: Any) -> Markup:
    return escape(value if isinstance(value, str) else _text_of(value) or _short(value, 2000))
