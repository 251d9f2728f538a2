"""The report model: what every renderer prints and what ``report.json`` holds.

``report.json`` is versioned (``"schema": "archon-diag.report/1"``, documented in
docs/report-schema.md) and only ever grows: new fields may appear, none change meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diag.findings import Finding, rank

REPORT_SCHEMA = "archon-diag.report/1"


@dataclass(frozen=True)
class GateResult:
    expr: str
    passed: bool
    actual: str  # the measured value, as text ("612 ms", "0.4 %", "2 findings")
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "expr": self.expr,
            "passed": self.passed,
            "actual": self.actual,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(
            str(data["expr"]),
            bool(data["passed"]),
            str(data.get("actual", "")),
            str(data.get("detail", "")),
        )


@dataclass(frozen=True)
class Report:
    run: dict[str, Any]
    load: dict[str, Any] | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)
    database: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    hotspots: list[dict[str, Any]] = field(default_factory=list)
    plans: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # probe problems, degraded checks
    kpis: list[dict[str, Any]] = field(default_factory=list)  # KPI query summaries

    def ranked(self) -> list[Finding]:
        return rank(self.findings)

    def kpi(self, name: str) -> dict[str, Any] | None:
        """The summary of the KPI called ``name`` (None when the run had none)."""
        return next((k for k in self.kpis if k.get("name") == name), None)

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "run": self.run,
            "load": self.load,
            "processes": self.processes,
            "database": self.database,
            "findings": [f.to_json() for f in self.ranked()],
            "gates": [g.to_json() for g in self.gates],
            "hotspots": self.hotspots,
            "plans": self.plans,
            "notes": self.notes,
            "kpis": self.kpis,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        return cls(
            run=dict(data.get("run") or {}),
            load=data.get("load"),
            processes=list(data.get("processes") or []),
            database=data.get("database"),
            findings=[Finding.from_json(f) for f in data.get("findings") or []],
            gates=[GateResult.from_json(g) for g in data.get("gates") or []],
            hotspots=list(data.get("hotspots") or []),
            plans=list(data.get("plans") or []),
            notes=list(data.get("notes") or []),
            kpis=list(data.get("kpis") or []),
        )

    def with_gates(self, gates: list[GateResult]) -> Report:
        return Report(
            self.run,
            self.load,
            self.processes,
            self.database,
            self.findings,
            gates,
            self.hotspots,
            self.plans,
            self.notes,
            self.kpis,
        )
