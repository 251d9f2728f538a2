"""Terminal rendering of ``archon-diag db`` and ``archon-diag explain`` (rich).

Only presentation: every number comes from ``diag.dbanalysis`` / ``diag.plans`` records.
Fits an 80-column terminal; SQL shown here is already normalized or redacted.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from diag.dbanalysis import DbReport, PlanReport
from diag.findings import Finding, Severity
from diag.plans import Plan, PlanNode
from diag.units import format_duration
from probes.postgres.sqltext import format_sql, one_line

_SEVERITY_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def _ms(value: float) -> str:
    return f"{value / 1000:,.1f} s" if value >= 10_000 else f"{value:,.1f} ms"


def findings_table(findings: list[Finding] | tuple[Finding, ...], limit: int = 15) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("kind")
    table.add_column("finding", overflow="fold")
    for i, f in enumerate(findings[:limit], 1):
        table.add_row(
            str(i),
            Text(f"{f.score:.1f}", style=_SEVERITY_STYLE[f.severity]),
            f.kind,
            f.title,
        )
    return table


def finding_details(findings: list[Finding] | tuple[Finding, ...], limit: int = 8) -> Group:
    parts: list[RenderableType] = []
    for i, f in enumerate(findings[:limit], 1):
        parts.append(Text(f"{i}. [{f.severity.label}] {f.title}", style="bold"))
        parts.append(Text(f"   why {f.score:.1f}: {f.score_explanation}"))
        parts.append(Text(f"   do:  {f.recommendation}", style="green"))
        where = f.location.describe()
        if where != "-":
            parts.append(Text(f"   at:  {where}", style="dim"))
        if f.location.sql:
            parts.append(Text("   sql: " + one_line(f.location.sql, 200), style="dim"))
        parts.append(Text(""))
    return Group(*parts)


def render_db(report: DbReport, console: Console) -> None:
    data = report.to_json()
    window = data["window"]
    console.print(
        Text(
            f"archon-diag db  {report.dsn}  PostgreSQL {report.server_version}\n"
            f"window {format_duration(window['seconds'])}: {window['statements']} statements, "
            f"database time {_ms(window['db_time_ms'])}"
            + (" (statistics reset during the window)" if window["reset_seen"] else ""),
            style="bold",
        )
    )
    if report.findings:
        console.print(Text("\nFindings (score = % of database time recoverable)", style="bold"))
        console.print(findings_table(report.findings))
        console.print()
        console.print(finding_details(report.findings))
    else:
        console.print(Text("\nNo findings in this window.", style="green"))

    top = data["top"]["total_exec_ms"][:8]
    if top:
        table = Table(title="Top statements by total time", box=None, header_style="bold")
        for col, justify in (
            ("queryid", "right"),
            ("calls", "right"),
            ("mean", "right"),
            ("total", "right"),
            ("share", "right"),
            ("statement", "left"),
        ):
            table.add_column(col, justify=justify, overflow="ellipsis", no_wrap=col != "statement")  # type: ignore[arg-type]
        for s in top:
            table.add_row(
                str(s["queryid"]),
                f"{s['calls']:,}",
                _ms(s["mean_exec_ms"]),
                _ms(s["total_exec_ms"]),
                f"{s['share_of_db_time']:.0%}",
                one_line(s["query"] or "?", 60),
            )
        console.print(table)
    waits = data["waits"]
    if waits["samples"]:
        line = ", ".join(f"{w['wait']} {w['samples']}" for w in waits["by_wait"][:5]) or "none"
        console.print(
            Text(
                f"\nActive sessions: {waits['average_active_sessions']:.2f} on average over "
                f"{waits['samples']} samples; waits: {line}; connections peak "
                f"{waits['peak_connections']}/{waits['max_connections']}",
            )
        )
    if report.health and report.health.disabled:
        for d in report.health.disabled:
            console.print(Text(d.hint, style="yellow"))
    for note in report.notes:
        console.print(Text(note, style="dim"))


def _node_line(node: PlanNode, total: float, actual: bool) -> Text:
    text = Text(node.label(), style="bold")
    if actual:
        share = node.exclusive_ms / total if total else 0.0
        style = "red" if share >= 0.4 else "yellow" if share >= 0.1 else ""
        loops = node.actual_loops or 1
        text.append(
            f"  rows {node.actual_rows or 0:,.0f} (est {node.plan_rows:,.0f}) x{loops:,.0f}"
        )
        text.append(f"  {_ms(node.inclusive_ms)}, self {share:.0%}", style=style)
    else:
        share = node.exclusive_cost / total if total else 0.0
        text.append(f"  est rows {node.plan_rows:,.0f}  cost {node.total_cost:,.0f}")
        text.append(f", self {share:.0%}", style="yellow" if share >= 0.4 else "")
    for key, value in node.conditions.items():
        text.append(f"\n{key}: {value}", style="dim")
    if node.sort_space_type:
        text.append(
            f"\nSort: {node.sort_method}, {node.sort_space_type} {node.sort_space_kb or 0:,.0f} kB",
            style="dim",
        )
    if node.hash_batches and node.hash_batches > 1:
        text.append(f"\nHash batches: {node.hash_batches}", style="dim")
    return text


def plan_tree(plan: Plan) -> Tree:
    actual = plan.has_actuals
    total = plan.root.inclusive_ms if actual else plan.root.total_cost

    def add(parent: Tree, node: PlanNode) -> None:
        branch = parent.add(_node_line(node, total, actual))
        for child in node.children:
            add(branch, child)

    head = f"plan ({plan.source}"
    if plan.total_ms is not None:
        head += f", {_ms(plan.total_ms)}"
    else:
        head += f", cost {plan.root.total_cost:,.0f}"
    tree = Tree(Text(head + ")", style="bold"))
    add(tree, plan.root)
    return tree


def render_explain(
    report: PlanReport, query: str | None, console: Console, extra: dict[str, Any]
) -> None:
    if extra.get("queryid"):
        console.print(Text(f"queryid {extra['queryid']}", style="bold"))
    if query:
        console.print(Text(format_sql(query), style="cyan"))
    if report.plan is None:
        console.print(Text(report.note or "no plan", style="yellow"))
        return
    console.print(plan_tree(report.plan))
    for note in report.plan.notes:
        console.print(Text(note, style="dim"))
    if report.tips:
        console.print(Text("\nTips (best saving first)", style="bold"))
        for t in report.tips[:6]:
            saving = (
                f"{t.saving_fraction:.0%} ({_ms(t.saving_ms)})"
                if t.saving_ms is not None
                else f"{t.saving_fraction:.0%} of cost"
            )
            console.print(Text(f"- [{saving}] {t.node}: {t.message}"))
            console.print(Text(f"    {t.advice}  ({t.basis})", style="green"))
    if report.indexes:
        console.print(Text("\nIndex suggestions", style="bold"))
        for idx in report.indexes:
            state = (
                "verified with hypopg" if idx.verified else "unverified (install hypopg to verify)"
            )
            console.print(Text(f"  {idx.statement}", style="green"))
            console.print(
                Text(
                    f"    filter keeps {idx.selectivity:.2%} of {idx.rows_read:,.0f} rows; "
                    f"saves ~{idx.saving_fraction:.0%}; {state}",
                    style="dim",
                )
            )
    for s in report.skipped:
        console.print(
            Text(f"  no index on {s.table} ({', '.join(s.columns)}): {s.reason}", style="dim")
        )
    if not report.tips and not report.indexes:
        console.print(Text("\nNo tips: nothing in this plan stands out.", style="green"))
