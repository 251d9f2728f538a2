"""One measured window on a database: statement snapshots at its start, periodically and
at its end, and activity samples in between.

``WindowCollector`` has the start()/poll()/stop() shape a Session drives from a thread:
``poll()`` does whatever is due (a sample, maybe a snapshot) and returns the new records,
which the caller may write to JSONL as they come; ``stop()`` takes the last snapshot and
returns everything as a ``WindowData``. A caller that writes the records away (a Session:
runs can last hours) passes ``keep=False``: then only the first and the latest snapshot
stay in memory and ``stop()`` returns just those.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from probes.postgres.activity import ActivitySample, ActivitySampler
from probes.postgres.link import PgLink
from probes.postgres.statements import StatementSampler, StatementSnapshot, StatementWindow, diff

Record = ActivitySample | StatementSnapshot


@dataclass(frozen=True)
class WindowData:
    snapshots: tuple[StatementSnapshot, ...]
    samples: tuple[ActivitySample, ...]
    reconnects: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def statements(self) -> StatementWindow:
        """The whole window (first to last snapshot)."""
        return diff(self.snapshots[0], self.snapshots[-1])

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshots": [s.to_json() for s in self.snapshots],
            "samples": [s.to_json() for s in self.samples],
            "reconnects": self.reconnects,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowData:
        return cls(
            snapshots=tuple(StatementSnapshot.from_json(s) for s in data["snapshots"]),
            samples=tuple(ActivitySample.from_json(s) for s in data["samples"]),
            reconnects=int(data.get("reconnects", 0)),
            notes=tuple(data.get("notes", ())),
        )


class WindowCollector:
    """Drives a ``StatementSampler`` and an ``ActivitySampler`` over one connection."""

    def __init__(
        self,
        dsn: str,
        *,
        sample_interval_s: float = 0.2,
        snapshot_interval_s: float = 5.0,
        all_databases: bool = False,
        keep: bool = True,
    ) -> None:
        self.keep = keep
        self.sample_interval_s = sample_interval_s
        self.snapshot_interval_s = snapshot_interval_s
        self._link = PgLink(dsn)
        self._statements = StatementSampler(all_databases=all_databases)
        self._activity = ActivitySampler()
        self._snapshots: list[StatementSnapshot] = []
        self._samples: list[ActivitySample] = []
        self._notes: list[str] = []
        self._next_sample = 0.0
        self._next_snapshot = 0.0

    def start(self) -> StatementSnapshot:
        """The first snapshot (raises ``PrerequisiteError`` without pg_stat_statements)."""
        try:
            snap = self._link.call(self._statements.snapshot)
        except BaseException:
            self._link.close()  # no connection left behind when the window cannot start
            raise
        self._snapshots.append(snap)
        now = time.monotonic()
        self._next_sample = now
        self._next_snapshot = now + self.snapshot_interval_s
        return snap

    def poll(self) -> list[Record]:
        """Take what is due now; returns the new records (possibly none)."""
        out: list[Record] = []
        now = time.monotonic()
        if now >= self._next_sample:
            sample = self._link.call(self._activity.sample)
            if self.keep:
                self._samples.append(sample)
            out.append(sample)
            self._next_sample = max(self._next_sample + self.sample_interval_s, now)
        if now >= self._next_snapshot:
            snap = self._link.call(self._statements.snapshot)
            self._add(snap)
            out.append(snap)
            self._next_snapshot = now + self.snapshot_interval_s
        return out

    def _add(self, snap: StatementSnapshot) -> None:
        if not self.keep and len(self._snapshots) > 1:
            self._snapshots[-1] = snap  # the first and the latest
        else:
            self._snapshots.append(snap)

    @property
    def latest(self) -> StatementSnapshot | None:
        return self._snapshots[-1] if self._snapshots else None

    def seconds_to_next(self) -> float:
        return max(0.0, min(self._next_sample, self._next_snapshot) - time.monotonic())

    def run_for(self, seconds: float) -> None:
        """Poll until ``seconds`` have passed (a blocking helper for the CLI)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            time.sleep(min(self.seconds_to_next(), max(0.0, end - time.monotonic())))

    def stop(self) -> WindowData:
        try:
            snap = self._link.call(self._statements.snapshot)
        finally:
            self._link.close()
        self._add(snap)
        if self._link.reconnects:
            self._notes.append(
                f"reconnected {self._link.reconnects}x during the window (server restart?)"
            )
        return WindowData(
            snapshots=tuple(self._snapshots),
            samples=tuple(self._samples),
            reconnects=self._link.reconnects,
            notes=tuple(self._notes),
        )

    @property
    def link(self) -> PgLink:
        return self._link
