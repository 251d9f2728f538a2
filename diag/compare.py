"""``compare``: what got better or worse between two runs (baseline vs. new).

Load figures side by side, findings that are new, resolved or changed (matched by
``Finding.key()``: kind + queryid or code location), and plan changes for the same
queryid (the plan's shape: node types top-down, and its estimated total cost).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from diag.findings import Finding
from diag.report import Report

LOAD_FIGURES = (
    ("requests", "requests", False),
    ("rps", "req/s", False),
    ("error_rate", "error rate", True),
    ("p50_ms", "p50 ms", True),
    ("p95_ms", "p95 ms", True),
    ("p99_ms", "p99 ms", True),
)


@dataclass(frozen=True)
class FigureDelta:
    name: str
    base: float | None
    new: float | None
    lower_is_better: bool

    @property
    def change_percent(self) -> float | None:
        if self.base in (None, 0) or self.new is None:
            return None
        assert self.base is not None
        return (self.new - self.base) / self.base * 100

    @property
    def verdict(self) -> str:
        change = self.change_percent
        if change is None or abs(change) < 5:
            return "same"
        worse = change > 0 if self.lower_is_better else change < 0
        return "worse" if worse else "better"


@dataclass(frozen=True)
class PlanChange:
    queryid: int
    base_shape: str
    new_shape: str
    base_cost: float | None
    new_cost: float | None


@dataclass(frozen=True)
class Comparison:
    figures: list[FigureDelta]
    new: list[Finding]
    resolved: list[Finding]
    changed: list[tuple[Finding, Finding]]  # (base, new) where the score moved by >= 20 %
    plans: list[PlanChange] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.new) or any(f.verdict == "worse" for f in self.figures)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "archon-diag.compare/1",
            "figures": [
                {
                    "name": f.name,
                    "base": f.base,
                    "new": f.new,
                    "change_percent": f.change_percent,
                    "verdict": f.verdict,
                }
                for f in self.figures
            ],
            "new_findings": [f.to_json() for f in self.new],
            "resolved_findings": [f.to_json() for f in self.resolved],
            "changed_findings": [
                {"key": b.key(), "title": n.title, "base_score": b.score, "new_score": n.score}
                for b, n in self.changed
            ],
            "plan_changes": [p.__dict__ for p in self.plans],
        }


def _plan_shape(plan: dict[str, Any]) -> tuple[str, float | None]:
    """``"Sort > Seq Scan"``-style shape and total cost of a stored plan."""
    root = plan.get("plan") or plan.get("Plan") or plan
    if isinstance(root, dict) and "Plan" in root:
        root = root["Plan"]
    if isinstance(root, dict) and "root" in root:
        root = root["root"]
    names: list[str] = []

    def walk(node: Any, depth: int) -> None:
        if not isinstance(node, dict) or depth > 50:
            return
        name = str(node.get("node_type") or node.get("Node Type") or "?")
        relation = node.get("relation") or node.get("Relation Name")
        index = node.get("index_name") or node.get("Index Name")
        if relation:
            name += f" on {relation}"
        if index:
            name += f" using {index}"
        names.append(name)
        for child in node.get("children") or node.get("Plans") or []:
            walk(child, depth + 1)

    walk(root, 0)
    cost = (root.get("total_cost") or root.get("Total Cost")) if isinstance(root, dict) else None
    return " > ".join(names), (float(cost) if cost is not None else None)


def compare(base: Report, new: Report) -> Comparison:
    bt = dict((base.load or {}).get("totals") or {})
    nt = dict((new.load or {}).get("totals") or {})
    figures = [
        FigureDelta(label, _num(bt.get(key)), _num(nt.get(key)), lower)
        for key, label, lower in LOAD_FIGURES
        if key in bt or key in nt
    ]
    base_by_key = {f.key(): f for f in base.findings}
    new_by_key = {f.key(): f for f in new.findings}
    appeared = [f for k, f in new_by_key.items() if k not in base_by_key]
    resolved = [f for k, f in base_by_key.items() if k not in new_by_key]
    changed = [
        (base_by_key[k], f)
        for k, f in new_by_key.items()
        if k in base_by_key
        and abs(f.score - base_by_key[k].score) >= 0.2 * max(base_by_key[k].score, 1.0)
    ]
    plans = []
    base_plans = {p.get("queryid"): p for p in base.plans if p.get("queryid") is not None}
    for p in new.plans:
        old = base_plans.get(p.get("queryid"))
        if old is None:
            continue
        old_shape, old_cost = _plan_shape(old)
        new_shape, new_cost = _plan_shape(p)
        if old_shape != new_shape:
            plans.append(PlanChange(int(p["queryid"]), old_shape, new_shape, old_cost, new_cost))
    return Comparison(figures, appeared, resolved, changed, plans)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _fmt(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    if name == "error rate":
        return f"{value * 100:.2f} %"
    return f"{value:.1f}" if name == "req/s" else f"{value:.0f}"


def render_comparison(comp: Comparison, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(comp.to_json(), indent=2) + "\n"
    md = fmt == "md"
    lines = ["# archon-diag compare" if md else "archon-diag compare (baseline -> new)", ""]
    if comp.figures:
        lines.append("| figure | baseline | new | change | verdict |" if md else "load:")
        if md:
            lines.append("|---|---:|---:|---:|---|")
        for fig in comp.figures:
            change = "-" if fig.change_percent is None else f"{fig.change_percent:+.0f}%"
            row = (fig.name, _fmt(fig.base, fig.name), _fmt(fig.new, fig.name), change, fig.verdict)
            lines.append(
                "| " + " | ".join(row) + " |"
                if md
                else f"  {row[0]:<11} {row[1]:>10} -> {row[2]:>10}  {row[3]:>6}  {row[4]}"
            )
        lines.append("")
    for title, items in (("new findings", comp.new), ("resolved findings", comp.resolved)):
        lines.append(f"## {title}" if md else f"{title}: {len(items)}")
        for f in items:
            lines.append(
                f"- {f.severity.label.upper()} {f.score:.1f} {f.kind}: {f.title} "
                f"({f.location.describe()})"
            )
        lines.append("")
    if comp.changed:
        lines.append("## changed findings" if md else "changed findings:")
        for b, n in comp.changed:
            lines.append(f"- {n.kind}: {n.title}: score {b.score:.1f} -> {n.score:.1f}")
        lines.append("")
    if comp.plans:
        lines.append("## plan changes" if md else "plan changes:")
        for p in comp.plans:
            lines.append(
                f"- queryid {p.queryid}: {p.base_shape} (cost {p.base_cost}) -> "
                f"{p.new_shape} (cost {p.new_cost})"
            )
        lines.append("")
    lines.append("verdict: " + ("REGRESSED" if comp.regressed else "no regression"))
    return "\n".join(lines) + "\n"
