"""The one Finding model shared by every analysis, the ranking, the renderers and the TUI.

Score: an estimate of impact on one scale for every kind, 0-100 "impact points":
for time-based findings, the percentage of the observed request (or database, or CPU)
time that fixing it could recover; for leaks, a mapping of the growth rate onto the
same scale through the projected time to reach the memory limit (1 h or less -> 100,
a week or more -> ~0). Each finding carries the sentence that explains its own score.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

_FIGURES = re.compile(r"\d+(?:[.,]\d+)*")


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of {names})") from None


def severity_for(score: float) -> Severity:
    """The severity band of a score.

    >>> [severity_for(s).label for s in (0.5, 2, 10, 30, 60)]
    ['info', 'low', 'medium', 'high', 'critical']
    """
    if score >= 50:
        return Severity.CRITICAL
    if score >= 20:
        return Severity.HIGH
    if score >= 5:
        return Severity.MEDIUM
    if score >= 1:
        return Severity.LOW
    return Severity.INFO


# Kinds are plain strings so new probes can add their own; these are the known ones.
KINDS = (
    "cpu_hotspot",
    "memory_leak",
    "fragmentation",
    "fd_leak",
    "thread_leak",
    "slow_query",
    "n_plus_one",
    "missing_index",
    "plan_issue",
    "lock_contention",
    "idle_in_transaction",
    "pool_starvation",
    "event_loop_blocking",
    "error_burst",
    "latency",
    "db_health",
)


@dataclass(frozen=True)
class Location:
    """Where a finding lives: a code location, a statement, and/or a process."""

    code: str | None = None  # "func (path/file.py:123)"
    queryid: int | None = None
    sql: str | None = None  # normalized text: literals already replaced by $n
    process: str | None = None  # e.g. "archon-server (pid 1234)"
    endpoint: str | None = None  # e.g. "GET /api/projects"

    def describe(self) -> str:
        parts = [p for p in (self.code, self.endpoint, self.process) if p]
        if self.queryid is not None:
            parts.insert(0, f"queryid {self.queryid}")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class Finding:
    kind: str
    title: str
    score: float
    score_explanation: str
    recommendation: str
    location: Location = field(default_factory=Location)
    evidence: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the probe family that produced it: pyspy, memray, postgres, ...
    severity_override: Severity | None = None

    @property
    def severity(self) -> Severity:
        return (
            self.severity_override
            if self.severity_override is not None
            else severity_for(self.score)
        )

    def key(self) -> str:
        """A stable identity across runs (for compare): kind + where.

        Without a statement, code location or endpoint the title is the anchor, with its
        figures (shares, sizes, pids) masked: they change from run to run, the finding
        does not.
        """
        where = self.location
        anchor = (
            str(where.queryid)
            if where.queryid is not None
            else where.code or where.endpoint or _FIGURES.sub("#", self.title)
        )
        return f"{self.kind}:{anchor}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("severity_override")
        data["severity"] = self.severity.label
        data["evidence"] = dict(self.evidence)
        data["key"] = self.key()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        loc = Location(**dict(data.get("location") or {}))
        sev = Severity.parse(str(data["severity"])) if "severity" in data else None
        finding = cls(
            kind=str(data["kind"]),
            title=str(data["title"]),
            score=float(data["score"]),
            score_explanation=str(data.get("score_explanation", "")),
            recommendation=str(data.get("recommendation", "")),
            location=loc,
            evidence=dict(data.get("evidence") or {}),
            source=str(data.get("source", "")),
        )
        if sev is not None and sev != finding.severity:
            finding = cls(**{**finding.__dict__, "severity_override": sev})
        return finding


def rank(findings: list[Finding]) -> list[Finding]:
    """Highest score first; ties broken by severity, then title, so the order is stable."""
    return sorted(findings, key=lambda f: (-f.score, -int(f.severity), f.title))
