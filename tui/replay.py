"""A LiveSource that replays recorded snapshots: for tests, benchmarks and a preview.

File format (JSON): ``{"schema": "archon-diag.live-replay/1", "interval_s": 1.0,
"frames": [snapshot, ...]}`` where each snapshot is ``snapshot_to_json(LiveSnapshot)``.

Modes: ``time`` shows the frame for the time since the first ``snapshot()`` call (a
preview at real speed), ``call`` advances one frame per call (deterministic tests, a
fast-changing benchmark), ``fixed`` always shows one frame (SVG snapshots). Actions are
recorded in ``actions`` and reflected as a live session would: the load state follows
stop/pause/resume, and each answer shows up in the next snapshots' ``messages``.

    python -m tui.replay tests/fixtures/tui/demo_session.json [--mode time] [--loop]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from diag.findings import Finding
from diag.live import (
    Action,
    BlockingRow,
    EndpointRow,
    HotspotRow,
    LiveSnapshot,
    LoadPoint,
    PauseLoad,
    PlanView,
    ProbeHealth,
    ProcessPoint,
    ProcessView,
    ResumeLoad,
    StatementRow,
    StopLoad,
    WaitRow,
)

SCHEMA = "archon-diag.live-replay/1"
MODES = ("time", "call", "fixed")


# ---- LiveSnapshot <-> JSON ------------------------------------------------------------


def _row(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _row(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def snapshot_to_json(snap: LiveSnapshot) -> dict[str, Any]:
    """A JSON-ready dict; findings use ``Finding.to_json``, plans are keyed by str(queryid)."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(snap):
        value = getattr(snap, f.name)
        if f.name == "findings":
            data[f.name] = [finding.to_json() for finding in value]
        elif f.name == "plans":
            data[f.name] = {str(qid): _row(plan) for qid, plan in value.items()}
        else:
            data[f.name] = _plain(value)
    return data


def _process(d: Mapping[str, Any]) -> ProcessView:
    return ProcessView(
        label=d["label"],
        pid=int(d["pid"]),
        alive=bool(d["alive"]),
        series=tuple(ProcessPoint(**p) for p in d.get("series", ())),
        leak_verdict=d.get("leak_verdict", ""),
        profilers=tuple(d.get("profilers", ())),
    )


def _plan(d: Mapping[str, Any]) -> PlanView:
    return PlanView(
        queryid=int(d["queryid"]),
        source=d["source"],
        tree=d["tree"],
        tips=tuple(d.get("tips", ())),
        index_advice=tuple(d.get("index_advice", ())),
    )


def snapshot_from_json(data: Mapping[str, Any]) -> LiveSnapshot:
    """The inverse of ``snapshot_to_json``."""
    in_use, max_conn = data.get("connections", (0, 0))
    return LiveSnapshot(
        elapsed_s=float(data["elapsed_s"]),
        phase=data["phase"],
        shape=data["shape"],
        load_state=data["load_state"],
        probes=tuple(ProbeHealth(**p) for p in data.get("probes", ())),
        load=tuple(LoadPoint(**p) for p in data.get("load", ())),
        endpoints=tuple(EndpointRow(**e) for e in data.get("endpoints", ())),
        processes=tuple(_process(p) for p in data.get("processes", ())),
        db_time=tuple((float(t), float(ms)) for t, ms in data.get("db_time", ())),
        waits=tuple(WaitRow(**w) for w in data.get("waits", ())),
        blocking=tuple(
            BlockingRow(**{**b, "blocked_by": tuple(b["blocked_by"])})
            for b in data.get("blocking", ())
        ),
        connections=(int(in_use), int(max_conn)),
        hotspots=tuple(
            HotspotRow(**{**h, "stacks": tuple(h.get("stacks", ()))})
            for h in data.get("hotspots", ())
        ),
        statements=tuple(StatementRow(**s) for s in data.get("statements", ())),
        plans={int(qid): _plan(p) for qid, p in (data.get("plans") or {}).items()},
        findings=tuple(Finding.from_json(f) for f in data.get("findings", ())),
        messages=tuple(data.get("messages", ())),
    )


def save_frames(path: Path, frames: Sequence[LiveSnapshot], interval_s: float = 1.0) -> None:
    doc = {
        "schema": SCHEMA,
        "interval_s": interval_s,
        "frames": [snapshot_to_json(f) for f in frames],
    }
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def load_frames(path: Path) -> tuple[list[LiveSnapshot], float]:
    """The frames of a replay file and their interval; ValueError on a foreign file."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an {SCHEMA} file")
    frames = [snapshot_from_json(f) for f in doc["frames"]]
    if not frames:
        raise ValueError(f"{path}: no frames")
    return frames, float(doc.get("interval_s", 1.0))


# ---- the source ------------------------------------------------------------------------


class ReplaySource:
    """Replays frames as a ``diag.live.LiveSource``; records actions and close() calls."""

    def __init__(
        self,
        frames: Sequence[LiveSnapshot],
        *,
        mode: str = "time",
        interval_s: float = 1.0,
        loop: bool = False,
        start: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not frames:
            raise ValueError("no frames to replay")
        self.frames = list(frames)
        self.mode = mode
        self.interval_s = interval_s
        self.loop = loop
        self._clock = clock
        self._lock = threading.Lock()
        self._index = start
        self._calls = 0
        self._t0: float | None = None
        self._load_state: str | None = None
        self._messages: list[str] = []
        self.actions: list[Action] = []
        self.close_calls = 0
        self.snapshot_calls = 0

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> ReplaySource:
        frames, interval = load_frames(path)
        kwargs.setdefault("interval_s", interval)
        return cls(frames, **kwargs)

    def _frame_index(self) -> int:
        if self.mode == "fixed":
            step = 0
        elif self.mode == "call":
            step = self._calls
        else:
            now = self._clock()
            if self._t0 is None:
                self._t0 = now
            step = int((now - self._t0) / self.interval_s)
        index = self._index + step
        n = len(self.frames)
        return index % n if self.loop else min(index, n - 1)

    def snapshot(self) -> LiveSnapshot:
        with self._lock:
            frame = self.frames[self._frame_index()]
            self._calls += 1
            self.snapshot_calls += 1
            changes: dict[str, Any] = {}
            if self._load_state is not None and frame.load_state != "off":
                changes["load_state"] = self._load_state
            if self._messages:
                changes["messages"] = (*frame.messages, *self._messages[-5:])
            return dataclasses.replace(frame, **changes) if changes else frame

    def act(self, action: Action) -> str:
        with self._lock:
            self.actions.append(action)
            if isinstance(action, StopLoad):
                self._load_state = "stopped"
            elif isinstance(action, PauseLoad):
                self._load_state = "paused"
            elif isinstance(action, ResumeLoad):
                self._load_state = "running"
            message = f"replay: {action!r} recorded"
            self._messages.append(message)
            return message

    def close(self) -> None:
        with self._lock:
            self.close_calls += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tui.replay", description="preview the TUI on a recorded replay file"
    )
    parser.add_argument("file", type=Path)
    parser.add_argument("--mode", choices=MODES, default="time")
    parser.add_argument("--loop", action="store_true", help="start again after the last frame")
    parser.add_argument("--refresh", type=float, default=1.0, help="seconds between polls")
    args = parser.parse_args(argv)
    try:
        source = ReplaySource.from_file(args.file, mode=args.mode, loop=args.loop)
    except (OSError, ValueError, KeyError) as exc:
        print(f"python -m tui.replay: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    from tui.app import run_app

    return run_app(source, title=f"archon-diag replay: {args.file.name}", refresh_s=args.refresh)


if __name__ == "__main__":
    sys.exit(main())
