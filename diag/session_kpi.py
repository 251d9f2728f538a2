"""The KPI probe: samples every KPI query (``diag.kpi``) at its own interval during a
Session and writes ``{"name", "value", "unit"}`` records to the bundle stream ``kpi``.

All database work runs on a worker thread (``asyncio.to_thread``) over one diagnostic
connection (``probes.pgconn.connect``: read-only, statement_timeout). A KPI whose query
fails (or is refused on the server: a volatile function) is switched off alone, with a
one-line notice; a lost connection is reopened on the next tick.

Must not: execute anything but the checked SELECTs, or analyse the samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from diag.kpi import KpiSample, KpiSpec, check_query, format_value, to_value
from diag.session import ProbeTask, SessionContext
from probes.errors import DiagError
from probes.postgres._common import PROBE_MARKER


@dataclass(frozen=True)
class _Outcome:
    spec: KpiSpec
    sample: KpiSample | None = None
    error: str | None = None  # the KPI is switched off
    lost: str | None = None  # the connection broke: retried next tick


class KpiProbe(ProbeTask):
    name = "kpi"

    def __init__(self, dsn: str, kpis: tuple[KpiSpec, ...] | list[KpiSpec]) -> None:
        self.dsn = dsn
        self.kpis = list(kpis)
        self.active: list[KpiSpec] = []
        self.disabled: dict[str, str] = {}
        self._conn: Any = None
        self._lost = False
        self._busy = asyncio.Lock()

    # -- worker-thread side ---------------------------------------------------------------

    def _connect(self) -> Any:
        from probes import pgconn

        if self._conn is None or self._conn.closed or self._conn.broken:
            with contextlib.suppress(Exception):
                if self._conn is not None:
                    self._conn.close()
            self._conn = pgconn.connect(self.dsn)
        return self._conn

    def _check_all(self) -> dict[str, str]:
        """Connect, and re-check each query's functions on the server: name -> refusal."""
        from probes.postgres.catalog import function_volatility

        conn = self._connect()
        refused: dict[str, str] = {}
        for spec in self.kpis:
            try:
                check_query(spec.name, spec.query, lambda names: function_volatility(conn, names))
            except DiagError as exc:
                refused[spec.name] = str(exc)
        return refused

    def _sample(self, due: list[KpiSpec]) -> list[_Outcome]:
        import psycopg

        try:
            conn = self._connect()
        except DiagError as exc:
            return [_Outcome(spec, lost=str(exc)) for spec in due]
        out: list[_Outcome] = []
        for spec in due:
            # the marker keeps our own statements out of the statement analysis
            text = f"{PROBE_MARKER} kpi {spec.name}\n{spec.query}"
            try:
                with conn.cursor() as cur:
                    cur.execute(text.encode())
                    row = cur.fetchone() if cur.description else None
                t = time.time()
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    out.append(_Outcome(spec, lost=_first_line(exc)))
                    break  # the rest would fail the same way: next tick reconnects
                out.append(_Outcome(spec, error=_first_line(exc)))
                continue
            raw = row[0] if row else None
            try:
                value = to_value(raw)
            except (TypeError, ValueError):
                out.append(_Outcome(spec, error=f"returns a {type(raw).__name__}, not a number"))
                continue
            out.append(_Outcome(spec, KpiSample(spec.name, value, spec.unit, t)))
        return out

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # -- the session side -----------------------------------------------------------------

    async def start(self, ctx: SessionContext) -> None:
        refused = await asyncio.to_thread(self._check_all)
        self.active = [k for k in self.kpis if k.name not in refused]
        for name, reason in refused.items():
            self._disable(ctx, name, reason)
        if not self.active:
            raise DiagError("every KPI query was refused")

    def _disable(self, ctx: SessionContext, name: str, reason: str) -> None:
        self.disabled[name] = reason
        self.active = [k for k in self.active if k.name != name]
        state = "degraded" if self.active else "failed"
        ctx.set_health(self.name, state, f"KPI {name} switched off: {reason}")

    async def run(self, ctx: SessionContext) -> None:
        due_at = {spec.name: 0.0 for spec in self.active}
        latest: dict[str, str] = {}
        while not ctx.stopping.is_set() and self.active:
            now = time.monotonic()
            due = [spec for spec in self.active if due_at[spec.name] <= now]
            if due:
                async with self._busy:
                    if ctx.stopping.is_set():
                        break
                    outcomes = await asyncio.to_thread(self._sample, due)
                self._record(ctx, outcomes, latest)
                for spec in due:
                    due_at[spec.name] = now + spec.interval_s
                ctx.publish("kpi", dict(latest))
            wait = min((due_at[s.name] for s in self.active), default=now + 1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    ctx.stopping.wait(), timeout=max(0.01, wait - time.monotonic())
                )

    def _record(
        self, ctx: SessionContext, outcomes: list[_Outcome], latest: dict[str, str]
    ) -> None:
        lost = next((o.lost for o in outcomes if o.lost is not None), None)
        for outcome in outcomes:
            spec = outcome.spec
            if outcome.sample is not None:
                ctx.bundle.emit("kpi", outcome.sample, t=outcome.sample.t)
                latest[spec.name] = format_value(outcome.sample.value, spec.unit)
            elif outcome.error is not None:
                self._disable(ctx, spec.name, outcome.error)
        if lost is not None and not self._lost:
            ctx.set_health(self.name, "degraded", f"connection lost, reconnecting: {lost}")
        elif lost is None and self._lost:
            ctx.set_health(self.name, "degraded" if self.disabled else "ok", "reconnected")
        self._lost = lost is not None

    async def stop(self, ctx: SessionContext) -> None:
        async with self._busy:  # never close the connection under a running query
            await asyncio.to_thread(self._close)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
