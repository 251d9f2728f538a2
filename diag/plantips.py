"""Plan advice: the heuristics of the best plan analysers, each tip scored by the time it
could save. Pure functions over ``diag.plans.Plan``.

Heuristics (FIELD-NOTES): node exclusive time share; row estimates off by 10/100/1000x;
filters removing most rows read; sorts and hashes spilling to disk; lossy bitmap heap
scans; many heap fetches on index-only scans; nested loops with many inner loops; large
OFFSETs; JIT taking a large share. ``saving_fraction`` is the share of the plan's time a
fix could save (of its cost, for plans without actuals); each tip says how it was derived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from diag.plans import Plan, PlanNode

HOT_SHARE = 0.4
MISESTIMATE_FACTOR = 10.0
FILTER_REMOVED_SHARE = 0.5
MANY_LOOPS = 1000
OFFSET_ROWS = 1000
MIN_SAVING = 0.01  # tips that could save less than 1 % of the plan are noise


@dataclass(frozen=True)
class PlanTip:
    kind: str  # hot_node, misestimate, filter, sort_spill, hash_spill, lossy_bitmap, ...
    node_id: int
    node: str  # the node's label
    message: str  # what is wrong, with the numbers
    advice: str  # what to do
    saving_fraction: float  # 0..1 of the plan's time (or cost) a fix could save
    saving_ms: float | None  # the same in ms when the plan has actuals
    basis: str  # how saving_fraction was derived (one clause)
    relation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _share(node_value: float, total: float) -> float:
    return min(max(node_value / total, 0.0), 1.0) if total > 0 else 0.0


def tips_for(plan: Plan, *, stale_tables: frozenset[str] = frozenset()) -> list[PlanTip]:
    """Tips for a plan, best saving first. ``stale_tables``: relation names whose
    statistics are known to be stale (health), to name ANALYZE in misestimate tips."""
    actual = plan.has_actuals
    total = (plan.root.inclusive_ms or plan.total_ms or 0.0) if actual else plan.root.total_cost
    if total <= 0:
        return []
    tips: list[PlanTip] = []

    def own(node: PlanNode) -> float:
        return node.exclusive_ms if actual else node.exclusive_cost

    def incl(node: PlanNode) -> float:
        return node.inclusive_ms if actual else node.total_cost

    def add(kind: str, node: PlanNode, message: str, advice: str, saved: float, basis: str) -> None:
        fraction = _share(saved, total)
        tips.append(
            PlanTip(
                kind=kind,
                node_id=node.node_id,
                node=node.label(),
                message=message,
                advice=advice,
                saving_fraction=fraction,
                saving_ms=saved if actual else None,
                basis=basis,
                relation=node.relation,
            )
        )

    single = len(plan.nodes()) == 1
    for node in plan.nodes():
        specific_before = len(tips)
        _filter_tip(node, actual, own, add)
        _spill_tips(node, own, incl, add)
        _bitmap_and_heap_tips(node, own, add)
        _loop_and_offset_tips(node, actual, incl, add)
        if actual:
            _misestimate_tip(node, incl, stale_tables, add)
        hot = _share(own(node), total) >= HOT_SHARE
        if len(tips) == specific_before and hot and not single:
            share = _share(own(node), total)
            add(
                "hot_node",
                node,
                f"{share:.0%} of the plan's {'time' if actual else 'cost'} is in this node itself",
                "parallel worker start-up dominates this short query: raise "
                "parallel_setup_cost or lower max_parallel_workers_per_gather"
                if node.node_type.startswith("Gather")
                else "look at this node first: its input size, its index use and its memory",
                own(node) * 0.5,
                "assumed: half of the node's own time could be saved",
            )
    if actual and plan.jit_ms and plan.total_ms and plan.jit_ms >= 0.1 * plan.total_ms:
        add(
            "jit",
            plan.root,
            f"JIT compilation took {plan.jit_ms:.1f} ms of {plan.total_ms:.1f} ms",
            "SET jit = off for this workload, or raise jit_above_cost",
            plan.jit_ms,
            "JIT time is saved entirely",
        )
    return sorted(
        (t for t in tips if t.saving_fraction >= MIN_SAVING), key=lambda t: -t.saving_fraction
    )


def _filter_tip(node: PlanNode, actual: bool, own: Any, add: Any) -> None:
    if "Filter" not in node.conditions or not actual:
        return
    removed = node.rows_removed_by_filter or 0.0
    kept = node.actual_rows or 0.0
    read = removed + kept
    if read <= 0 or removed / read < FILTER_REMOVED_SHARE or removed < 1000:
        return
    share = removed / read
    scan = "Seq Scan" in node.node_type
    add(
        "filter",
        node,
        f"the filter removed {share:.1%} of the {read * (node.actual_loops or 1):,.0f} rows "
        f"read ({node.conditions['Filter']})",
        "an index on the filtered columns, if the filter is selective (see index advice)"
        if scan
        else "an index matching the filter, or move the condition into the index",
        own(node) * share,
        "the time spent reading rows the filter then threw away",
    )


def _spill_tips(node: PlanNode, own: Any, incl: Any, add: Any) -> None:
    if node.sort_space_type == "Disk" or (node.sort_method or "").startswith("external"):
        kb = node.sort_space_kb or 0.0
        add(
            "sort_spill",
            node,
            f"sort spilled to disk ({node.sort_method}, {kb:,.0f} kB)",
            f"raise work_mem above {max(kb * 2, 4096) / 1024:,.0f} MB for this query "
            "(SET LOCAL work_mem), or an index that returns rows already sorted",
            own(node) * 0.5,
            "assumed: an in-memory sort halves the sort's own time",
        )
    batches = node.hash_batches or 0
    if node.node_type == "Hash" and batches > 1:
        peak = node.peak_memory_kb or 0.0
        add(
            "hash_spill",
            node,
            f"hash built in {batches} batches (spilled to disk; peak {peak:,.0f} kB per batch)",
            f"raise work_mem to about {max(peak * batches * 1.5, 4096) / 1024:,.0f} MB so the "
            "hash fits in one batch",
            incl(node) * 0.3,
            "assumed: one batch saves 30% of the hash's time",
        )


def _bitmap_and_heap_tips(node: PlanNode, own: Any, add: Any) -> None:
    lossy = node.lossy_heap_blocks or 0.0
    if lossy > 0:
        exact = node.exact_heap_blocks or 0.0
        share = lossy / (lossy + exact)
        add(
            "lossy_bitmap",
            node,
            f"{share:.0%} of heap blocks were lossy (every row in them rechecked)",
            "raise work_mem so the bitmap stays exact",
            own(node) * share * 0.5,
            "assumed: half the time on lossy blocks is the recheck",
        )
    fetches = node.heap_fetches or 0.0
    rows = node.rows_total
    if node.node_type == "Index Only Scan" and fetches > 1000 and fetches > 0.1 * max(rows, 1):
        add(
            "heap_fetches",
            node,
            f"index-only scan still fetched {fetches:,.0f} heap rows (visibility map stale)",
            f"VACUUM {node.relation or 'the table'} (and let autovacuum keep up)",
            own(node) * 0.5 * min(fetches / max(rows, 1), 1.0),
            "assumed: half of the node's time is the heap fetches",
        )


def _loop_and_offset_tips(node: PlanNode, actual: bool, incl: Any, add: Any) -> None:
    if node.node_type == "Nested Loop" and len(node.children) == 2:
        inner = node.children[1]
        loops = inner.actual_loops if actual else node.children[0].plan_rows
        if loops and loops >= MANY_LOOPS:
            add(
                "nested_loop",
                node,
                f"the inner side ({inner.label()}) ran {loops:,.0f} times",
                "check the row estimate of the outer side; an index on the join key, or a "
                "hash join (fix the estimate with ANALYZE / CREATE STATISTICS)",
                incl(inner) * 0.5,
                "assumed: a better join saves half of the inner side's time",
            )
    if node.node_type == "Limit" and node.children and actual:
        produced = node.children[0].rows_total
        returned = node.rows_total
        if produced - returned >= OFFSET_ROWS and returned < produced * 0.5:
            add(
                "large_offset",
                node,
                f"{produced - returned:,.0f} rows produced and thrown away before the "
                f"{returned:,.0f} returned (large OFFSET)",
                "keyset pagination (WHERE key > last_seen ORDER BY key LIMIT n)",
                incl(node) * (1 - returned / produced) * 0.9,
                "90% of the share of rows produced only to be skipped",
            )


def _misestimate_tip(node: PlanNode, incl: Any, stale_tables: frozenset[str], add: Any) -> None:
    if node.actual_rows is None or node.actual_loops == 0:
        return
    est = max(node.plan_rows, 1.0)
    act = max(node.actual_rows, 1.0)
    factor = max(est / act, act / est)
    # an underestimate matters from 100 rows; an overestimate once it is large
    if factor < MISESTIMATE_FACTOR or (act < 100 if act > est else est < 1000):
        return
    direction = "under" if act > est else "over"
    stale = node.relation in stale_tables if node.relation else False
    advice = (
        f"ANALYZE {node.relation} (its statistics are stale)"
        if stale
        else "ANALYZE the tables involved; for correlated columns CREATE STATISTICS; "
        "raise the column's statistics target"
    )
    weight = 0.3 if factor >= 1000 else 0.2 if factor >= 100 else 0.1
    add(
        "misestimate",
        node,
        f"rows {direction}estimated {factor:,.0f}x (planned {est:,.0f}, got {act:,.0f} per loop)",
        advice,
        incl(node) * weight,
        f"assumed: a {factor:,.0f}x misestimate costs {weight:.0%} of the subtree's time",
    )
