"""Plan model, jsonlog reader and plan tips on plans captured from real PostgreSQL 15 runs
(tests/fixtures/db/plan_*.json: EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag.plans import JsonlogPlans, Plan, parse_jsonlog_line, parse_plan, plan_text
from diag.plantips import tips_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "db"


def _plan(name: str) -> Plan:
    return parse_plan(json.loads((FIXTURES / f"plan_{name}.json").read_text()), source="analyze")


def test_parse_plan_tree_times_and_redacted_conditions() -> None:
    plan = _plan("seqscan_filter")
    assert plan.has_actuals and plan.execution_ms == pytest.approx(52.642)
    nodes = plan.nodes()
    assert [n.node_type for n in nodes] == ["Gather", "Seq Scan"]
    scan = nodes[1]
    assert scan.relation == "tasks" and scan.rows_removed_by_filter == 100000
    # the literals 42 and 'todo' of the real statement are gone
    assert scan.conditions["Filter"] == "((project_id = $?) AND (status = $?::text))"
    assert "todo" not in json.dumps(plan.to_json())
    # a parallel scan's per-loop time is wall time (1 worker + leader overlap)
    assert scan.participants == 2.0
    assert scan.inclusive_ms == pytest.approx(12.935)
    assert plan.root.exclusive_ms == pytest.approx(52.562 - 12.935)


def test_plan_text_renders_every_node() -> None:
    lines = plan_text(_plan("nested_loop"))
    assert lines[0].startswith("Nested Loop")
    assert any("Memoize" in line for line in lines)


def test_sort_spill_and_large_offset_tips() -> None:
    tips = tips_for(_plan("sort_spill"))
    kinds = [t.kind for t in tips]
    assert "sort_spill" in kinds and "large_offset" in kinds
    spill = next(t for t in tips if t.kind == "sort_spill")
    assert "external merge" in spill.message and "work_mem" in spill.advice
    assert spill.saving_ms is not None and 0 < spill.saving_fraction <= 1
    offset = next(t for t in tips if t.kind == "large_offset")
    assert "keyset" in offset.advice
    # best saving first
    assert [t.saving_fraction for t in tips] == sorted(
        (t.saving_fraction for t in tips), reverse=True
    )


def test_hash_spill_tip_reports_batches() -> None:
    tips = tips_for(_plan("hash_spill"))
    spill = next(t for t in tips if t.kind == "hash_spill")
    assert "32 batches" in spill.message


def test_filter_tip_on_seq_scan() -> None:
    tips = tips_for(_plan("seqscan_filter"))
    flt = next(t for t in tips if t.kind == "filter")
    assert flt.relation == "tasks" and "100.0%" in flt.message and "index" in flt.advice


def test_fast_index_scan_has_no_tips() -> None:
    assert tips_for(_plan("index_scan")) == []


def test_estimated_plan_tips_use_cost() -> None:
    raw = json.loads((FIXTURES / "plan_large_offset.json").read_text())
    plan = parse_plan(_strip_actuals(raw), source="generic")
    assert not plan.has_actuals and plan.total_ms is None
    for tip in tips_for(plan):
        assert tip.saving_ms is None


def _strip_actuals(value: object) -> object:
    if isinstance(value, list):
        return [_strip_actuals(v) for v in value]
    if isinstance(value, dict):
        return {
            k: _strip_actuals(v)
            for k, v in value.items()
            if not k.startswith("Actual") and k not in ("Execution Time", "Planning Time")
        }
    return value


def test_jsonlog_reader_joins_by_query_id_and_drops_literals(tmp_path: Path) -> None:
    source = (FIXTURES / "jsonlog_sample.json").read_text()
    log = tmp_path / "postgresql.json"
    lines = source.splitlines(keepends=True)
    # a partial last line waits for the next poll
    log.write_text("".join(lines[:3]) + lines[3][:50])
    reader = JsonlogPlans(log)
    first = reader.poll()
    log.write_text(source)
    second = reader.poll()
    found = first + second
    assert len(found) == 4
    assert 3581592648415654823 in reader.query_ids()
    plan = reader.plan_for(3581592648415654823)
    assert plan is not None and plan.source == "auto_explain" and plan.duration_ms
    assert "review-secret" in source  # the raw log has the literal ...
    assert "review-secret" not in json.dumps([f.plan.to_json() for f in found])  # ... we don't
    # nothing new: nothing returned
    assert reader.poll() == []


def test_parse_jsonlog_line_ignores_other_records() -> None:
    assert parse_jsonlog_line('{"message": "connection received"}') is None
    assert parse_jsonlog_line("not json at all plan:") is None
