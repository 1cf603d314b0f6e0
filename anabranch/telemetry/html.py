"""The run report people look at: one self-contained HTML file, its charts drawn here as SVG.

No script, no font, no stylesheet from anywhere: the file opens offline, in a browser, in
Jupyter (`RunReport._repr_html_`) or as a mail attachment. It shows the five-stage trace, the
throughput over time, the LLM calls in flight against the concurrency limit, the latency
distribution per agent, the failed attempts and retries by type and over time, the token usage,
and the tasks that did not end ok with why. Everything comes from the `RunReport` (its
`Timeline` for the charts over time), which the journal keeps: a past run draws the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from anabranch.telemetry.timeline import Failure, Timeline, error_counts
from anabranch.types import RunReport

PALETTE = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777")
"""Colours of the series, in order (distinct for the common kinds of colour blindness)."""

W, H = 560, 190
"""A chart's size in pixels."""
_L, _R, _T, _B = 48, 12, 14, 30
"""Margins: left (the y axis' labels), right, top, bottom (the x axis' labels)."""

_CSS = """
.ab-report{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;
 background:#f3f4f6;max-width:1200px;margin:0 auto;padding:20px}
.ab-report h1{font-size:22px;margin:0 0 4px}.ab-report h2{font-size:16px;margin:0 0 8px}
.ab-report .sub{color:#6b7280;margin:0 0 16px}
.ab-report .tiles{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:16px}
.ab-report .tile{background:#fff;border-radius:8px;padding:10px 14px;min-width:120px;
 box-shadow:0 1px 2px #0001}
.ab-report .tile b{display:block;font-size:20px}.ab-report .tile span{color:#6b7280;font-size:12px}
.ab-report .grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
.ab-report section{background:#fff;border-radius:8px;padding:14px;box-shadow:0 1px 2px #0001}
.ab-report table{border-collapse:collapse;width:100%;font-size:13px}
.ab-report td,.ab-report th{text-align:left;padding:4px 6px;border-bottom:1px solid #e5e7eb;
 vertical-align:top}
.ab-report th{color:#6b7280;font-weight:600}
.ab-report td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ab-report .legend{font-size:12px;color:#374151;margin:4px 0 8px}
.ab-report .legend i{display:inline-block;width:10px;height:10px;border-radius:2px;
 margin:0 4px 0 10px}
.ab-report .none{color:#6b7280;font-style:italic}
.ab-report svg text{font:11px system-ui,sans-serif;fill:#4b5563}
"""


def render_html(
    report: RunReport,
    *,
    title: str = "anabranch run",
    failures: Sequence[Failure] | None = None,
    fragment: bool = False,
) -> str:
    """The whole page. `failures`: the tasks to list as failed (default: the timeline's), for a
    past run whose report has no timeline but whose journal has the results. `fragment`: only
    the report's element and its style (scoped to it), to sit inside another page (Jupyter)."""
    timeline = report.timeline
    if failures is None:
        failures = timeline.failures if timeline is not None else []
    more = timeline.more_failures if timeline is not None else 0
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{_subtitle(report)}</p>',
        _tiles(report),
        '<div class="grid">',
        _section("Data flow: the five stages", _stages(report)),
    ]
    if timeline is None:
        body.append(
            _section(
                "Over time",
                '<p class="none">This run\'s report has no timeline '
                "(it was written by an older anabranch).</p>",
            )
        )
    else:
        body += [
            _section("Throughput: tasks delivered per second", _throughput(timeline)),
            _section("LLM calls in flight and the concurrency limit", _in_flight(timeline)),
            _section("Latency per agent (subtasks by duration)", _latency(timeline)),
            _section("Failed attempts and retries over time", _errors_over_time(timeline)),
            _section("Token usage over time", _tokens(timeline)),
        ]
    body += [
        _section("Errors by type", _errors_by_type(report)),
        _section("Tasks that did not end ok", _failures(failures, more)),
        "</div>",
    ]
    content = f'<style>{_CSS}</style><div class="ab-report">{"".join(body)}</div>'
    if fragment:
        return content
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{escape(title)}</title></head><body style="margin:0;background:#f3f4f6">'
        f"{content}</body></html>"
    )


def _subtitle(report: RunReport) -> str:
    run = f"journal run {escape(report.journal_run)} · " if report.journal_run else ""
    return f"{run}wall time {report.wall_seconds:.2f} s"


def _tiles(report: RunReport) -> str:
    u = report.usage
    tiles = [
        (f"{report.tasks_ok:,}", "tasks ok"),
        (f"{report.tasks_partial:,}", "partial"),
        (f"{report.tasks_failed:,}", "failed"),
        (f"{report.tasks_rejected:,}", "rejected"),
        (f"{u.requests:,}", "LLM requests"),
        (f"{u.prompt_tokens:,} + {u.completion_tokens:,}", "tokens in + out"),
    ]
    if (c := report.concurrency) is not None:
        tiles.append((f"{c.overloaded:,}", "answered 429/503"))
        tiles.append((f"{c.per_second:.1f}/s", "requests answered"))
    cells = "".join(f'<div class="tile"><b>{v}</b><span>{k}</span></div>' for v, k in tiles)
    return f'<div class="tiles">{cells}</div>'


def _section(heading: str, content: str) -> str:
    return f"<section><h2>{escape(heading)}</h2>{content}</section>"


def _stages(report: RunReport) -> str:
    longest = max((s.seconds for s in report.stages), default=0.0) or 1.0
    rows, bar_w = [], 56
    for i, s in enumerate(report.stages, start=1):
        width = max(1.0, bar_w * s.seconds / longest)
        bar = (
            f'<svg class="chart" data-chart="stage" width="{bar_w}" height="12" role="img">'
            f'<rect width="{width:.1f}" height="12" rx="2" fill="{PALETTE[0]}"/></svg>'
        )
        rows.append(
            f"<tr><td>{i}</td><td>{escape(s.name)}</td>"
            f'<td class="n">{s.input_count:,} {escape(s.input_unit)}</td>'
            f'<td class="n">{s.output_count:,} {escape(s.output_unit)}</td>'
            f'<td class="n">{s.seconds:.2f} s</td><td>{bar}</td></tr>'
        )
    head = "<tr><th></th><th>stage</th><th>in</th><th>out</th><th>time</th><th></th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


# -- the charts ---------------------------------------------------------------------------------


def _ticks(top: float) -> list[float]:
    """Three or four round values from 0 to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    step = 10 ** len(str(int(top))) / 10 if top >= 1 else 0.1
    while top / step > 4:
        step *= 2
    while top / step < 2:
        step /= 2
    n = int(-(-top // step))
    return [i * step for i in range(n + 1)]


def _fmt(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    return f"{v:.0f}" if v == int(v) else f"{v:.2g}"


def _frame(name: str, top: float, seconds: float, inner: str, y_label: str = "") -> str:
    """Axes, grid lines and labels around `inner` (drawn in chart coordinates)."""
    ticks = _ticks(top)
    ymax = ticks[-1] or 1.0
    plot_h, plot_w = H - _T - _B, W - _L - _R
    parts = [
        f'<svg class="chart" data-chart="{name}" viewBox="0 0 {W} {H}" width="100%" '
        f'role="img" aria-label="{escape(name)}">'
    ]
    for t in ticks:
        y = _T + plot_h * (1 - t / ymax)
        parts.append(f'<line x1="{_L}" x2="{W - _R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in _ticks(seconds)[:6]:
        x = _L + plot_w * (t / (_ticks(seconds)[-1] or 1.0))
        parts.append(f'<text x="{x:.1f}" y="{H - 10}" text-anchor="middle">{_fmt(t)} s</text>')
    if y_label:
        parts.append(f'<text x="4" y="10">{escape(y_label)}</text>')
    parts.append(
        f'<line x1="{_L}" x2="{_L}" y1="{_T}" y2="{H - _B}" stroke="#9ca3af"/>'
        f'<line x1="{_L}" x2="{W - _R}" y1="{H - _B}" y2="{H - _B}" stroke="#9ca3af"/>'
    )
    parts.append(inner)
    parts.append("</svg>")
    return "".join(parts)


def _scale(timeline: Timeline, top: float) -> tuple[float, float, float]:
    """x pixels per bucket, y pixels per unit, and the axis' top value."""
    ticks_x = _ticks(timeline.seconds)
    buckets_shown = (ticks_x[-1] or 1.0) / timeline.step
    ymax = _ticks(top)[-1] or 1.0
    return (W - _L - _R) / buckets_shown, (H - _T - _B) / ymax, ymax


def _bars(stacks: dict[str, list[float]], timeline: Timeline, name: str, label: str) -> str:
    """Stacked bars per bucket, one colour per series."""
    n = len(timeline.tasks)
    totals = [sum(s[i] for s in stacks.values()) for i in range(n)]
    top = max(totals, default=0.0)
    dx, dy, _ = _scale(timeline, top)
    rects = []
    for i in range(n):
        base = float(H - _B)
        for color, series in zip(PALETTE, stacks.values(), strict=False):
            if series[i]:
                h = series[i] * dy
                base -= h
                rects.append(
                    f'<rect x="{_L + i * dx:.1f}" y="{base:.1f}" '
                    f'width="{max(dx - 0.5, 0.5):.1f}" height="{h:.1f}" fill="{color}"/>'
                )
    return _frame(name, top, timeline.seconds, "".join(rects), label) + _legend(list(stacks))


def _lines(series: dict[str, list[float]], timeline: Timeline, name: str, label: str) -> str:
    top = max((max(s, default=0.0) for s in series.values()), default=0.0)
    dx, dy, _ = _scale(timeline, top)
    paths = []
    for color, values in zip(PALETTE, series.values(), strict=False):
        points = " ".join(
            f"{_L + (i + 0.5) * dx:.1f},{H - _B - v * dy:.1f}" for i, v in enumerate(values)
        )
        paths.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" '
            'stroke-width="2" stroke-linejoin="round"/>'
        )
    return _frame(name, top, timeline.seconds, "".join(paths), label) + _legend(list(series))


def _legend(names: list[str]) -> str:
    items = "".join(
        f'<i style="background:{c}"></i>{escape(n)}' for c, n in zip(PALETTE, names, strict=False)
    )
    return f'<div class="legend">{items}</div>'


def _throughput(t: Timeline) -> str:
    per_second = [v / t.step for v in t.tasks]
    return _bars({"tasks delivered / s": per_second}, t, "throughput", "tasks/s")


def _in_flight(t: Timeline) -> str:
    series = {"most calls in flight": [float(v) for v in t.in_flight], "concurrency limit": t.limit}
    return _lines(series, t, "in-flight", "calls")


def _errors_over_time(t: Timeline) -> str:
    if not t.failed_attempts and not any(t.retries):
        return '<p class="none">No attempt failed.</p>'
    stacks = {f"failed: {k}": [float(v) for v in s] for k, s in sorted(t.failed_attempts.items())}
    chart = _bars(stacks, t, "errors-over-time", "attempts")
    retried = _lines({"retries": [float(v) for v in t.retries]}, t, "retries", "retries")
    return chart + retried


def _tokens(t: Timeline) -> str:
    stacks = {
        "input tokens": [float(v) for v in t.input_tokens],
        "output tokens": [float(v) for v in t.output_tokens],
    }
    total_in, total_out = sum(t.input_tokens), sum(t.output_tokens)
    summary = f"<p>{total_in:,} input + {total_out:,} output tokens over {sum(t.calls):,} calls</p>"
    return summary + _bars(stacks, t, "tokens", "tokens")


def _latency(t: Timeline) -> str:
    """Per agent, the share of its subtasks in each duration bin, as grouped bars."""
    if not t.latency:
        return '<p class="none">No agent ran.</p>'
    bins = len(t.latency_bounds) + 1
    used = [i for i in range(bins) if any(c[i] for c in t.latency.values())]
    lo, hi = used[0], used[-1]
    shown = list(range(lo, hi + 1))
    agents = sorted(t.latency)
    shares = {a: [t.latency[a][i] / max(1, sum(t.latency[a])) for i in shown] for a in agents}
    plot_w, plot_h = W - _L - _R, H - _T - _B
    group = plot_w / len(shown)
    bar = max(1.0, (group - 4) / len(agents))
    ymax = _ticks(max(max(s) for s in shares.values()))[-1] or 1.0
    parts = [
        f'<svg class="chart" data-chart="latency" viewBox="0 0 {W} {H}" width="100%" '
        'role="img" aria-label="latency">'
    ]
    for tick in _ticks(ymax):
        y = _T + plot_h * (1 - tick / ymax)
        parts.append(
            f'<line x1="{_L}" x2="{W - _R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{tick * 100:.0f}%</text>"
        )
    for g, i in enumerate(shown):
        x0 = _L + g * group + 2
        for k, a in enumerate(agents):
            h = plot_h * shares[a][g] / ymax
            parts.append(
                f'<rect x="{x0 + k * bar:.1f}" y="{H - _B - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[k % len(PALETTE)]}"/>'
            )
        edge = t.latency_bounds[i] if i < len(t.latency_bounds) else None
        label = f"≤{_seconds(edge)}" if edge is not None else f">{_seconds(t.latency_bounds[-1])}"
        parts.append(
            f'<text x="{x0 + group / 2 - 2:.1f}" y="{H - 10}" text-anchor="middle">{label}</text>'
        )
    parts.append(f'<line x1="{_L}" x2="{W - _R}" y1="{H - _B}" y2="{H - _B}" stroke="#9ca3af"/>')
    parts.append("</svg>")
    rows = "".join(
        f'<tr><td>{escape(a)}</td><td class="n">{sum(t.latency[a]):,}</td>'
        f'<td class="n">{_quantile(t, a, 0.5)}</td><td class="n">{_quantile(t, a, 0.9)}</td>'
        f'<td class="n">{_quantile(t, a, 0.99)}</td></tr>'
        for a in agents
    )
    table = (
        "<table><tr><th>agent</th><th>subtasks</th><th>p50 ≤</th><th>p90 ≤</th>"
        f"<th>p99 ≤</th></tr>{rows}</table>"
    )
    return "".join(parts) + _legend(agents) + table


def _seconds(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.3g} s"


def _quantile(t: Timeline, agent: str, q: float) -> str:
    """The upper bound of the bin holding quantile `q` (a histogram knows no more)."""
    counts = t.latency[agent]
    target, seen = q * sum(counts), 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= target and c:
            return _seconds(t.latency_bounds[i]) if i < len(t.latency_bounds) else "more"
    return "-"


def _errors_by_type(report: RunReport) -> str:
    """Failed attempts (retried or not) and the error records the tasks carry, by type."""
    attempts = error_counts(report.timeline) if report.timeline is not None else {}
    final = report.timeline.call_errors if report.timeline is not None else {}
    records = report.subtask_errors
    kinds = sorted(set(attempts) | set(final) | set(records))  # ties keep a fixed order
    kinds.sort(key=lambda k: -attempts.get(k, 0))
    if not kinds:
        return '<p class="none">No errors.</p>'
    top = max([*attempts.values(), *records.values(), 1])
    rows = []
    for k in kinds:
        n = attempts.get(k, 0)
        bar = (
            f'<svg class="chart" data-chart="error-type" width="160" height="12" role="img">'
            f'<rect width="{max(1.0, 160 * n / top):.1f}" height="12" rx="2" '
            f'fill="{PALETTE[3]}"/></svg>'
        )
        rows.append(
            f'<tr><td>{escape(k)}</td><td class="n">{n:,}</td>'
            f'<td class="n">{final.get(k, 0):,}</td>'
            f'<td class="n">{records.get(k, 0):,}</td><td>{bar}</td></tr>'
        )
    head = (
        "<tr><th>type</th><th>failed attempts</th><th>calls failed for good</th>"
        "<th>error records</th><th></th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _failures(failures: Sequence[Failure], more: int) -> str:
    if not failures:
        return '<p class="none">Every task ended ok.</p>'
    rows = "".join(
        f"<tr><td>{escape(f.task_id)}</td><td>{escape(f.status)}</td>"
        f"<td>{'<br>'.join(escape(r) for r in f.reasons) or '-'}</td></tr>"
        for f in failures
    )
    extra = f"<p>… and {more:,} more.</p>" if more else ""
    return f"<table><tr><th>task</th><th>status</th><th>why</th></tr>{rows}</table>{extra}"
