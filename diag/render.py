"""Report renderers: terminal (rich), Markdown, JSON, self-contained HTML, JUnit XML.

All renderers take the same ``Report``; none analyses anything. ``ReportView`` is a rich
renderable, so the same object prints in a terminal, a CI log or a Textual widget.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any
from xml.etree import ElementTree as ET

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from diag.findings import Finding, Severity
from diag.report import Report
from diag.units import format_bytes, format_duration
from probes.errors import UsageError

FORMATS = ("term", "md", "json", "html", "junit")
SEVERITY_MARK = {
    Severity.CRITICAL: "!!! CRIT",
    Severity.HIGH: "!!  HIGH",
    Severity.MEDIUM: "!   MED",
    Severity.LOW: ".   LOW",
    Severity.INFO: "    INFO",
}
_SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
SCORE_MEANING = (
    "score = impact points on one scale for every kind: for time, the % of the observed "
    "request/database/CPU time that fixing it could recover; for leaks, how soon the memory "
    "limit is reached (1 h or less = 100)."
)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}"


def _load_totals(report: Report) -> dict[str, Any]:
    return dict((report.load or {}).get("totals") or {})


def _run_line(report: Report) -> str:
    run = report.run
    parts = [f"run {run.get('id', '?')}", f"status {run.get('status', '?')}"]
    if run.get("duration_s") is not None:
        parts.append(f"duration {format_duration(float(run['duration_s']))}")
    if run.get("scenario"):
        parts.append(f"scenario {run['scenario']}")
    if run.get("faults"):
        parts.append(f"faults {run['faults']}")
    return "  ·  ".join(parts)


# ---- terminal ---------------------------------------------------------------------------


class ReportView:
    """The report as a rich renderable."""

    def __init__(self, report: Report, *, limit: int = 15) -> None:
        self.report = report
        self.limit = limit

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        report = self.report
        yield Text(f"archon-diag report — {_run_line(report)}", style="bold")
        totals = _load_totals(report)
        if totals:
            yield Text(
                f"load: {totals.get('requests', 0)} requests, "
                f"{float(totals.get('rps', 0)):.1f} req/s, "
                f"errors {float(totals.get('error_rate', 0)) * 100:.2f} %, "
                f"p50 {_ms(totals.get('p50_ms'))} / p95 {_ms(totals.get('p95_ms'))} / "
                f"p99 {_ms(totals.get('p99_ms'))} ms"
            )
        yield findings_table(report.ranked()[: self.limit])
        yield Text(SCORE_MEANING, style="dim")
        for finding in report.ranked()[: min(self.limit, 8)]:
            yield _finding_panel(finding)
        if report.processes:
            yield processes_table(report.processes)
        if report.kpis:
            yield kpis_table(report.kpis)
        if report.gates:
            gates = Table(title="gates", show_header=True, header_style="bold")
            for col in ("gate", "result", "measured", "detail"):
                gates.add_column(col)
            for g in report.gates:
                gates.add_row(g.expr, "PASS" if g.passed else "FAIL", g.actual, g.detail)
            yield gates
        for note in report.notes:
            yield Text(f"note: {note}", style="yellow")


def findings_table(findings: Sequence[Finding]) -> Table:
    table = Table(title="ranked findings", show_header=True, header_style="bold", expand=True)
    table.add_column("#", justify="right", width=3)
    table.add_column("severity", no_wrap=True, width=9)
    table.add_column("score", justify="right", width=6)
    table.add_column("kind", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("where", ratio=2)
    for i, f in enumerate(findings, 1):
        table.add_row(
            str(i),
            Text(SEVERITY_MARK[f.severity], style=_SEVERITY_STYLE[f.severity]),
            f"{f.score:.1f}",
            f.kind,
            f.title,
            f.location.describe(),
        )
    if not findings:
        table.add_row("", "", "", "", "no findings", "")
    return table


def _finding_panel(f: Finding) -> Panel:
    body = [
        Text(f.score_explanation, style="dim"),
        Text(f"where: {f.location.describe()}"),
    ]
    if f.location.sql:
        body.append(Text(f"sql: {f.location.sql[:300]}", style="cyan"))
    for key, value in list(f.evidence.items())[:6]:
        if isinstance(value, (list, dict)):
            value = json.dumps(value)[:160]
        body.append(Text(f"{key}: {value}"))
    body.append(Text(f"fix: {f.recommendation}", style="green"))
    return Panel(Group(*body), title=f"{SEVERITY_MARK[f.severity]}  {f.title}", title_align="left")


def processes_table(processes: Iterable[dict[str, Any]]) -> Table:
    table = Table(title="processes", show_header=True, header_style="bold")
    for col in ("process", "cpu mean %", "rss start", "rss end", "leak verdict"):
        table.add_column(col)
    for p in processes:
        table.add_row(
            str(p.get("label", p.get("pid"))),
            f"{float(p.get('cpu_mean', 0)):.1f}",
            format_bytes(float(p.get("rss_start", 0))),
            format_bytes(float(p.get("rss_end", 0))),
            str(p.get("leak_verdict", "")),
        )
    return table


_KPI_COLUMNS = ("samples", "mean", "p95", "min", "max", "last")


def _kpi_cells(k: dict[str, Any]) -> list[str]:
    from diag.kpi import format_value

    unit = str(k.get("unit") or "")
    if not k.get("samples"):
        return ["0", "no samples", "", "", "", ""]
    return [str(k.get("samples", 0))] + [format_value(k.get(c), unit) for c in _KPI_COLUMNS[1:]]


def kpis_table(kpis: Iterable[dict[str, Any]]) -> Table:
    table = Table(title="KPIs (measured window)", show_header=True, header_style="bold")
    table.add_column("KPI")
    for col in _KPI_COLUMNS:
        table.add_column(col, justify="right")
    for k in kpis:
        table.add_row(str(k.get("name")), *_kpi_cells(k))
    return table


def render_term(report: Report, width: int | None = None, color: bool = True) -> str:
    console = Console(width=width or 120, record=True, force_terminal=color, no_color=not color)
    with console.capture() as capture:
        console.print(ReportView(report))
    return capture.get()


# ---- Markdown ---------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_md(report: Report) -> str:
    out = [f"# archon-diag report\n\n{_run_line(report)}\n"]
    totals = _load_totals(report)
    if totals:
        out.append(
            "| requests | req/s | errors | p50 ms | p95 ms | p99 ms |\n"
            "|---:|---:|---:|---:|---:|---:|\n"
            f"| {totals.get('requests', 0)} | {float(totals.get('rps', 0)):.1f} | "
            f"{float(totals.get('error_rate', 0)) * 100:.2f} % | {_ms(totals.get('p50_ms'))} | "
            f"{_ms(totals.get('p95_ms'))} | {_ms(totals.get('p99_ms'))} |\n"
        )
    if report.gates:
        out.append("## Gates\n\n| gate | result | measured | detail |\n|---|---|---|---|")
        for g in report.gates:
            mark = "✅ pass" if g.passed else "❌ FAIL"
            out.append(f"| `{g.expr}` | {mark} | {g.actual} | {_md_escape(g.detail)} |")
        out.append("")
    out.append("## Ranked findings\n")
    out.append(f"_{SCORE_MEANING}_\n")
    out.append("| # | severity | score | kind | finding | where |\n|---:|---|---:|---|---|---|")
    for i, f in enumerate(report.ranked(), 1):
        out.append(
            f"| {i} | {f.severity.label.upper()} | {f.score:.1f} | {f.kind} | "
            f"{_md_escape(f.title)} | {_md_escape(f.location.describe())} |"
        )
    out.append("")
    for i, f in enumerate(report.ranked()[:10], 1):
        out.append(f"### {i}. {f.title}\n")
        out.append(
            f"- **severity** {f.severity.label} (score {f.score:.1f}): {f.score_explanation}"
        )
        out.append(f"- **where** {f.location.describe()}")
        if f.location.sql:
            out.append(f"- **sql** `{_md_escape(f.location.sql[:300])}`")
        out.append(f"- **fix** {f.recommendation}\n")
    if report.load and report.load.get("endpoints"):
        out.append("## Endpoints\n\n| endpoint | requests | failures | p50 | p95 | p99 |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for e in report.load["endpoints"]:
            out.append(
                f"| {_md_escape(str(e.get('name')))} | {e.get('requests', 0)} | "
                f"{e.get('failures', 0)} | {_ms(e.get('p50_ms'))} | {_ms(e.get('p95_ms'))} | "
                f"{_ms(e.get('p99_ms'))} |"
            )
        out.append("")
    if report.kpis:
        out.append("## KPIs (measured window)\n")
        out.append("| KPI | " + " | ".join(_KPI_COLUMNS) + " |")
        out.append("|---|" + "---:|" * len(_KPI_COLUMNS))
        for k in report.kpis:
            cells = " | ".join(_md_escape(c) for c in _kpi_cells(k))
            out.append(f"| {_md_escape(str(k.get('name')))} | {cells} |")
        out.append("")
    for note in report.notes:
        out.append(f"> note: {_md_escape(note)}")
    return "\n".join(out) + "\n"


# ---- JSON -------------------------------------------------------------------------------


def render_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, default=str) + "\n"


# ---- JUnit ------------------------------------------------------------------------------


def render_junit(report: Report) -> str:
    suite = ET.Element(
        "testsuite",
        name="archon-diag gates",
        tests=str(len(report.gates)),
        failures=str(sum(not g.passed for g in report.gates)),
    )
    for g in report.gates:
        case = ET.SubElement(suite, "testcase", classname="archon-diag.gates", name=g.expr)
        if not g.passed:
            failure = ET.SubElement(case, "failure", message=f"{g.expr}: measured {g.actual}")
            failure.text = g.detail
        else:
            ET.SubElement(case, "system-out").text = f"measured {g.actual}"
    suites = ET.Element("testsuites")
    suites.append(suite)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


# ---- HTML -------------------------------------------------------------------------------


def _svg_chart(
    title: str, series: dict[str, list[tuple[float, float]]], unit: str, width: int = 560
) -> str:
    """An inline SVG line chart (no scripts, no network)."""
    height, pad = 180, 36
    points = [p for s in series.values() for p in s]
    if not points:
        return f"<figure><figcaption>{html.escape(title)}: no data</figcaption></figure>"
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1.0
    y1 = max(ys) or 1.0
    x1 = x1 if x1 > x0 else x0 + 1

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad + 10 - y / y1 * (height - 2 * pad)

    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    lines = []
    legend = []
    for i, (name, pts) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{path}"/>'
        )
        legend.append(f'<tspan fill="{colour}">■ {html.escape(name)}</tspan> ')
    axis = (
        f'<line x1="{pad}" y1="{height - pad + 10}" x2="{width - pad}" y2="{height - pad + 10}" '
        'stroke="#999"/>'
        f'<text x="{pad}" y="14" font-size="11">{y1:.4g} {html.escape(unit)}</text>'
        f'<text x="{width - pad}" y="{height - 4}" font-size="11" text-anchor="end">'
        f"{x1 - x0:.0f} s</text>"
        f'<text x="{pad}" y="{height - 4}" font-size="11">{"".join(legend)}</text>'
    )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">{axis}{"".join(lines)}</svg></figure>'
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top}
th{background:#f4f4f4}
.critical{background:#fdd}.high{background:#fee8d8}.medium{background:#fff6d8}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
figure{display:inline-block;margin:0 1em 1em 0}
.pass{color:#070}.fail{color:#b00;font-weight:bold}
"""


def render_html(report: Report) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>archon-diag report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>archon-diag report</h1><p>{e(_run_line(report))}</p>",
    ]
    totals = _load_totals(report)
    if totals:
        parts.append(
            f"<p>load: {totals.get('requests', 0)} requests, {float(totals.get('rps', 0)):.1f} "
            f"req/s, errors {float(totals.get('error_rate', 0)) * 100:.2f} %, p50/p95/p99 "
            f"{_ms(totals.get('p50_ms'))}/{_ms(totals.get('p95_ms'))}/"
            f"{_ms(totals.get('p99_ms'))} ms</p>"
        )
    # charts
    timeline = (report.load or {}).get("timeline") or []
    charts = []
    if timeline:
        charts.append(
            _svg_chart(
                "load",
                {
                    "req/s": [(p["t"], p.get("rps") or 0) for p in timeline],
                    "users": [(p["t"], p.get("users") or 0) for p in timeline],
                },
                "",
            )
        )
        charts.append(
            _svg_chart(
                "latency (ms)",
                {
                    name: [(p["t"], p.get(key) or 0) for p in timeline]
                    for name, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"))
                },
                "ms",
            )
        )
    mem = {
        str(p.get("label")): [(s[0], s[2] / 2**20) for s in p.get("series") or []]
        for p in report.processes
    }
    if any(mem.values()):
        charts.append(_svg_chart("memory (RSS, MiB)", mem, "MiB"))
    db_timeline = (report.database or {}).get("timeline") or []
    if db_timeline:
        charts.append(
            _svg_chart(
                "database time (ms per s)", {"db time": [(t, v) for t, v in db_timeline]}, "ms/s"
            )
        )
    parts.extend(charts)
    if report.kpis:
        parts.append(
            "<h2>KPIs (measured window)</h2><table><tr><th>KPI</th>"
            + "".join(f"<th>{c}</th>" for c in _KPI_COLUMNS)
            + "</tr>"
        )
        for k in report.kpis:
            cells = "".join(f"<td>{e(c)}</td>" for c in _kpi_cells(k))
            parts.append(f"<tr><td>{e(str(k.get('name')))}</td>{cells}</tr>")
        parts.append("</table>")
        for k in report.kpis:
            unit = str(k.get("unit") or "")
            title = f"{k.get('name')} ({unit})" if unit else str(k.get("name"))
            series = [(float(t), float(v)) for t, v in k.get("series") or []]
            parts.append(_svg_chart(title, {str(k.get("name")): series}, unit))
    if report.gates:
        parts.append(
            "<h2>Gates</h2><table><tr><th>gate</th><th>result</th><th>measured</th>"
            "<th>detail</th></tr>"
        )
        for g in report.gates:
            cls, word = ("pass", "PASS") if g.passed else ("fail", "FAIL")
            parts.append(
                f"<tr><td><code>{e(g.expr)}</code></td><td class='{cls}'>{word}</td>"
                f"<td>{e(g.actual)}</td><td>{e(g.detail)}</td></tr>"
            )
        parts.append("</table>")
    parts.append(f"<h2>Ranked findings</h2><p><em>{e(SCORE_MEANING)}</em></p>")
    parts.append(
        "<table><tr><th>#</th><th>severity</th><th>score</th><th>kind</th>"
        "<th>finding</th><th>where</th><th>fix</th></tr>"
    )
    for i, f in enumerate(report.ranked(), 1):
        sql = f"<br><code>{e(f.location.sql[:300])}</code>" if f.location.sql else ""
        parts.append(
            f"<tr class='{f.severity.label}'><td>{i}</td><td>{f.severity.label.upper()}</td>"
            f"<td>{f.score:.1f}</td><td>{e(f.kind)}</td><td>{e(f.title)}"
            f"<br><small>{e(f.score_explanation)}</small></td>"
            f"<td>{e(f.location.describe())}{sql}</td><td>{e(f.recommendation)}</td></tr>"
        )
    parts.append("</table>")
    if report.load and report.load.get("endpoints"):
        parts.append(
            "<h2>Endpoints</h2><table><tr><th>endpoint</th><th>requests</th>"
            "<th>failures</th><th>p50</th><th>p95</th><th>p99</th></tr>"
        )
        for ep in report.load["endpoints"]:
            parts.append(
                f"<tr><td>{e(str(ep.get('name')))}</td><td>{ep.get('requests', 0)}</td>"
                f"<td>{ep.get('failures', 0)}</td><td>{_ms(ep.get('p50_ms'))}</td>"
                f"<td>{_ms(ep.get('p95_ms'))}</td><td>{_ms(ep.get('p99_ms'))}</td></tr>"
            )
        parts.append("</table>")
    if report.hotspots:
        parts.append("<h2>Top stacks</h2>")
        for h in report.hotspots[:10]:
            parts.append(
                f"<h3>{e(str(h.get('function')))} — {e(str(h.get('process', '')))} "
                f"({float(h.get('self_percent', 0)):.1f}% self)</h3>"
            )
            stacks = "\n\n".join(str(s).replace(";", "\n  ") for s in h.get("stacks") or [])
            parts.append(f"<pre>{e(stacks)}</pre>")
    if report.plans:
        parts.append("<h2>Plans</h2>")
        for p in report.plans[:10]:
            parts.append(
                f"<h3>queryid {e(str(p.get('queryid')))} ({e(str(p.get('source')))})"
                f"</h3><pre>{e(str(p.get('tree', '')))}</pre>"
            )
            tips = p.get("tips") or []
            if tips:
                parts.append("<ul>" + "".join(f"<li>{e(str(t))}</li>" for t in tips) + "</ul>")
    for note in report.notes:
        parts.append(f"<p><em>note: {e(note)}</em></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(report: Report, fmt: str, *, color: bool = False, width: int | None = None) -> str:
    if fmt == "term":
        return render_term(report, width=width, color=color)
    if fmt == "md":
        return render_md(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "html":
        return render_html(report)
    if fmt == "junit":
        return render_junit(report)
    raise UsageError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


REPORT_FILES = {
    "json": "report.json",
    "md": "report.md",
    "html": "report.html",
    "junit": "junit.xml",
    "term": "report.txt",
}
