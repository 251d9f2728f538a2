"""Load shapes as plain data: a list of timed stages (and, for stress, the limits).

The diag side builds a ``ShapePlan`` here and hands it to the Locust subprocess as JSON
(environment variable ``ARCHON_DIAG_SHAPE``); the shape class in
``probes/locustfiles/archon_diag_plugin.py`` only follows the stages and, when limits are
given, stops at the first stage that crosses them. Pure Python: this module must not
import locust (importing locust monkey-patches the whole process with gevent).

Shapes (``D`` = duration, ``U`` = users):

- ``load``   ramp to U at the spawn rate, hold until D;
- ``step``   ``steps`` equal steps up to U, each D/steps long, no limits;
- ``stress`` the same steps, but the run stops at the first step whose measured window
  crosses ``max_error_rate`` or ``max_p95_ms``; the knee is the last step that met them;
- ``soak``   ramp up over 10 % of D, hold, ramp down over the last 10 %;
- ``spike``  baseline (U/5) for 30 % of D, a sudden burst to U for 20 %, then back to the
  baseline for the remaining 50 % so the recovery can be measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

SHAPES = ("load", "stress", "soak", "spike", "step")
ENV_VAR = "ARCHON_DIAG_SHAPE"


@dataclass(frozen=True)
class Stage:
    """Hold ``users`` (reached at ``spawn_rate`` users/s) until ``until_s`` into the run."""

    name: str
    until_s: float
    users: int
    spawn_rate: float


@dataclass(frozen=True)
class Limits:
    """What "still healthy" means for stress: both must hold over a step's window."""

    max_error_rate: float = 0.01  # fraction of requests, 0.01 = 1 %
    max_p95_ms: float = 1000.0

    def crossed_by(self, error_rate: float, p95_ms: float | None, requests: int) -> str | None:
        """The reason a window fails the limits, or None when it meets them.

        >>> Limits(0.01, 500).crossed_by(0.0, 120, 300) is None
        True
        >>> Limits(0.01, 500).crossed_by(0.05, 120, 300)
        'error rate 5.0% > 1.0%'
        """
        if requests <= 0:
            return "no responses in the window"
        if error_rate > self.max_error_rate:
            return f"error rate {error_rate:.1%} > {self.max_error_rate:.1%}"
        if p95_ms is not None and p95_ms > self.max_p95_ms:
            return f"p95 {p95_ms:.0f} ms > {self.max_p95_ms:.0f} ms"
        return None


@dataclass(frozen=True)
class ShapePlan:
    kind: str
    stages: tuple[Stage, ...]
    limits: Limits | None = None
    settle_s: float = 0.0  # the start of each stage left out of its measured window

    @property
    def duration_s(self) -> float:
        return self.stages[-1].until_s if self.stages else 0.0

    @property
    def max_users(self) -> int:
        return max((s.users for s in self.stages), default=0)

    def stage_at(self, elapsed: float) -> int | None:
        """Index of the stage running ``elapsed`` seconds in, None once the plan is over."""
        for index, stage in enumerate(self.stages):
            if elapsed < stage.until_s:
                return index
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stages": [asdict(s) for s in self.stages],
            "limits": asdict(self.limits) if self.limits else None,
            "settle_s": self.settle_s,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShapePlan:
        limits = data.get("limits")
        return cls(
            kind=str(data["kind"]),
            stages=tuple(Stage(**s) for s in data["stages"]),
            limits=Limits(**limits) if limits else None,
            settle_s=float(data.get("settle_s", 0.0)),
        )


def plan(
    kind: str,
    *,
    users: int,
    duration_s: float,
    spawn_rate: float | None = None,
    steps: int | None = None,
    limits: Limits | None = None,
    baseline_users: int | None = None,
) -> ShapePlan:
    """The stages of one shape, scaled by ``duration_s`` and ``users``.

    >>> [(s.name, s.until_s, s.users) for s in plan("step", users=9, duration_s=12, steps=3).stages]
    [('step 1', 4.0, 3), ('step 2', 8.0, 6), ('step 3', 12.0, 9)]
    >>> [(s.name, s.users) for s in plan("spike", users=50, duration_s=100).stages]
    [('baseline', 10), ('spike', 50), ('recovery', 10)]
    """
    if kind not in SHAPES:
        raise ValueError(f"unknown shape {kind!r} (one of {', '.join(SHAPES)})")
    if users < 1:
        raise ValueError("users must be at least 1")
    if duration_s <= 0:
        raise ValueError("duration must be positive")
    d, u = float(duration_s), int(users)
    if kind == "load":
        rate = spawn_rate or float(max(1, u))
        return ShapePlan(kind, (Stage("hold", d, u, rate),))
    if kind in ("step", "stress"):
        n = max(1, min(steps or 5, u))
        step_s = d / n
        # a step should be reached within ~20 % of its length unless the user asked otherwise
        step_users = [math.ceil(u * (i + 1) / n) for i in range(n)]
        jump = max(b - a for a, b in zip([0, *step_users], step_users, strict=False))
        rate = spawn_rate or max(1.0, jump / max(0.2 * step_s, 0.5))
        stages = tuple(
            Stage(f"step {i + 1}", round(step_s * (i + 1), 3), su, rate)
            for i, su in enumerate(step_users)
        )
        if kind == "step":
            return ShapePlan(kind, stages)
        settle = round(min(max(0.25 * step_s, 1.0), 10.0, 0.5 * step_s), 3)
        return ShapePlan(kind, stages, limits or Limits(), settle)
    if kind == "soak":
        ramp = 0.1 * d
        rate = spawn_rate or u / max(ramp, 1.0)
        return ShapePlan(
            kind,
            (
                Stage("ramp-up", round(ramp, 3), u, rate),
                Stage("hold", round(d - ramp, 3), u, rate),
                Stage("ramp-down", d, 0, rate),
            ),
        )
    # spike
    base = baseline_users if baseline_users is not None else max(1, u // 5)
    rate = spawn_rate or float(max(1, base))
    burst = float(max(u, 50))  # "sudden": the whole burst within about a second
    return ShapePlan(
        kind,
        (
            Stage("baseline", round(0.3 * d, 3), base, rate),
            Stage("spike", round(0.5 * d, 3), u, burst),
            Stage("recovery", d, base, burst),
        ),
        settle_s=round(min(0.05 * d, 5.0), 3),
    )
