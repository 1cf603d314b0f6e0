"""Jupyter helpers: a graph drawn as a picture offline, and a progress bar a notebook keeps.

LangGraph's `draw_mermaid_png` sends the graph to a web service; `graph_svg` lays it out with
Graphviz's `dot` on this machine (Debian's `graphviz` package). `progress` shows a batch's
progress as an HTML bar updated in place: it needs no widget library, and the notebook stores
its last state with the outputs, so a reader on a code host sees how the run ended.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from html import escape
from typing import Any

from anabranch.errors import ConfigError
from anabranch.graphs.runner import BatchRun
from anabranch.graphs.state import Graph
from anabranch.types import TaskResult

_COLOURS = {
    "__start__": "#e5e7eb",
    "__end__": "#e5e7eb",
    "planner": "#bfdbfe",
    "reducer": "#bbf7d0",
}
"""Node fills; an agent node is orange."""


def graph_dot(graph: Graph) -> str:
    """The compiled graph as Graphviz source: its nodes, and its edges (a conditional one, such
    as the planner's Send to each agent, dashed)."""
    drawable = graph.get_graph()
    lines = [
        "digraph G {",
        '  rankdir=TB; bgcolor="transparent";',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12];',
        '  edge [color="#6b7280", arrowsize=0.7, fontname="Helvetica", fontsize=10];',
    ]
    for node in drawable.nodes.values():
        label = {"__start__": "START", "__end__": "END"}.get(node.id, node.name)
        fill = _COLOURS.get(node.id, "#fed7aa")
        lines.append(f'  "{node.id}" [label="{label}", fillcolor="{fill}", color="#9ca3af"];')
    for edge in drawable.edges:
        style = ' [style=dashed, label=" Send"]' if edge.conditional else ""
        lines.append(f'  "{edge.source}" -> "{edge.target}"{style};')
    lines.append("}")
    return "\n".join(lines)


def graph_svg(graph: Graph) -> str:
    """The graph as an SVG picture, laid out by Graphviz here (no network)."""
    dot = shutil.which("dot")
    if dot is None:
        raise ConfigError("drawing a graph needs Graphviz: apt-get install graphviz")
    done = subprocess.run(
        [dot, "-Tsvg"], input=graph_dot(graph), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ConfigError(f"Graphviz could not draw the graph: {done.stderr.strip()}")
    return done.stdout


def _bar(done: int, total: int | None, errors: int, seconds: float) -> str:
    share = done / total if total else 1.0
    of = f" of {total:,}" if total else ""
    issues = f", {errors:,} with errors" if errors else ""
    return (
        '<div style="font:13px system-ui,sans-serif;display:flex;gap:10px;align-items:center">'
        f'<progress value="{done}" max="{total or max(done, 1)}" style="width:320px"></progress>'
        f"<span>{done:,}{of} tasks ({share:.0%}){escape(issues)}, {seconds:.1f} s</span></div>"
    )


async def progress(
    batch: BatchRun, total: int | None = None, *, every: float = 0.2
) -> AsyncIterator[TaskResult]:
    """The batch's results, while a progress bar under the cell shows how many have come:

    results = [r async for r in progress(run_batch(tasks, graph), total=len(tasks))]
    """
    from IPython.display import HTML, display

    start = shown = time.monotonic()
    done = errors = 0
    handle: Any = display(HTML(_bar(0, total, 0, 0.0)), display_id=True)
    async for result in batch:
        done += 1
        errors += result.status != "ok"
        if (now := time.monotonic()) - shown >= every:
            shown = now
            handle.update(HTML(_bar(done, total, errors, now - start)))
        yield result
    handle.update(HTML(_bar(done, total, errors, time.monotonic() - start)))
