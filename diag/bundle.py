"""The run bundle: one directory per run, written incrementally, read back offline.

    runs/<UTC timestamp>/
      manifest.json         versions, targets, options (secrets redacted), status
      events/<stream>.jsonl append-only, one JSON object per line, flushed per line
      artefacts/<probe>/    raw outputs: collapsed stacks, memray captures, plan JSON
      report.{json,md,html,txt}, junit.xml   rendered at the end (or by `report`)

Every line is flushed as it is written, so a run killed at any moment leaves a bundle
that ``archon-diag report`` can analyse (a torn last line is skipped on read). The report
is a pure function of the bundle.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from diag import __version__
from probes.errors import UsageError

BUNDLE_SCHEMA = "archon-diag.bundle/1"
MANIFEST = "manifest.json"


def _now() -> float:
    return dt.datetime.now(dt.timezone.utc).timestamp()


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _default(obj: object) -> object:
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: object) -> str:
    return json.dumps(obj, default=_default, separators=(",", ":"))


def check_new_out(path: Path) -> None:
    """A bundle goes to a new or empty directory (checked before anything slow starts)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"output directory {path} is not empty; pick a new --out")


class BundleWriter:
    """Appends events to a bundle directory; safe to use from several threads."""

    def __init__(self, path: Path, manifest: Mapping[str, Any]) -> None:
        self.path = path
        (path / "events").mkdir(parents=True, exist_ok=True)
        (path / "artefacts").mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, IO[str]] = {}
        # called with (stream, record) after each write: the live view's in-memory tap
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._manifest: dict[str, Any] = {
            "schema": BUNDLE_SCHEMA,
            "tool_version": __version__,
            "started_at": _now(),
            "status": "running",
            **manifest,
        }
        self._write_manifest()

    @classmethod
    def create(cls, out: Path | None, manifest: Mapping[str, Any]) -> BundleWriter:
        """A new bundle at ``out`` (must be new or empty) or ``runs/<UTC timestamp>/``."""
        path = out if out is not None else Path("runs") / _stamp()
        check_new_out(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, manifest)

    def _write_manifest(self) -> None:
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self._manifest, default=_default, indent=2))
        os.replace(tmp, self.path / MANIFEST)

    def update_manifest(self, **fields: Any) -> None:
        with self._lock:
            self._manifest.update(fields)
            self._write_manifest()

    def emit(self, stream: str, record: Any, t: float | None = None) -> None:
        """Append one record (a mapping or an object with ``to_json()``) to a stream."""
        data = record.to_json() if hasattr(record, "to_json") else dict(record)
        data.setdefault("t", _now() if t is None else t)
        line = dumps(data) + "\n"
        with self._lock:
            handle = self._files.get(stream)
            if handle is None:
                handle = (self.path / "events" / f"{stream}.jsonl").open("a", encoding="utf-8")
                self._files[stream] = handle
            handle.write(line)
            handle.flush()
        for listener in self.listeners:
            listener(stream, data)

    @property
    def started_at(self) -> float:
        return float(self._manifest["started_at"])

    def artefact_dir(self, probe: str) -> Path:
        path = self.path / "artefacts" / probe
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self, status: str = "complete") -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()
            self._manifest.update(status=status, ended_at=_now())
            self._write_manifest()


class Bundle:
    """Read access to a bundle directory (complete, interrupted or killed)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise UsageError(f"{self.path} is not a run bundle (no {MANIFEST})")
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
        except ValueError:
            raise UsageError(f"{self.path / MANIFEST} is not valid JSON") from None
        if not isinstance(manifest, dict) or manifest.get("schema") != BUNDLE_SCHEMA:
            raise UsageError(f"{self.path} is not an archon-diag bundle ({BUNDLE_SCHEMA})")
        self.manifest: dict[str, Any] = manifest

    @property
    def status(self) -> str:
        """complete | interrupted | failed, or "killed" when it never closed."""
        status = str(self.manifest.get("status", "running"))
        return "killed" if status == "running" else status

    def streams(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "events").glob("*.jsonl"))

    def events(self, stream: str) -> Iterator[dict[str, Any]]:
        for _, record in self.events_from(stream):
            yield record

    def events_from(self, stream: str, offset: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """(byte offset of its line, record) for the stream's records from ``offset`` on
        (an offset this gave before: streams only grow, so a live reader can skip what
        it has read)."""
        path = self.path / "events" / f"{stream}.jsonl"
        if not path.is_file():
            return
        with path.open("rb") as handle:
            if offset:
                handle.seek(offset)
            at = offset
            for line in handle:
                start, at = at, at + len(line)
                if not line.endswith(b"\n"):
                    break  # torn last line of a killed run (or one being written)
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield start, record

    def artefacts(self, probe: str) -> Path:
        return self.path / "artefacts" / probe

    @property
    def started_at(self) -> float:
        return float(self.manifest.get("started_at", 0.0))

    @property
    def ended_at(self) -> float | None:
        """When it closed; for a killed run, the newest event's time."""
        if "ended_at" in self.manifest:
            return float(self.manifest["ended_at"])
        newest = None
        for stream in self.streams():
            for record in self.events(stream):
                t = record.get("t")
                if isinstance(t, (int, float)) and (newest is None or t > newest):
                    newest = float(t)
        return newest
