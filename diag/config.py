"""The one run configuration: command-line options over an optional TOML file.

``archon-diag run --config diag.toml`` reads the same names as the long options
(``users = 20``, ``duration = "2m"``, ``target = ["preset:archon"]``, ``fail_on = [...]``);
options given on the command line win. Unknown keys and bad values are one-line errors.

KPI queries (``diag.kpi``) are ``[[kpi]]`` tables (``name``, ``query``, ``interval``,
``unit``) and/or ``kpi_preset = "archon"`` (``--kpi-preset archon``); they end up in
``RunConfig.kpis``, the preset's first.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from diag.kpi import PRESETS, KpiSpec, check_unique, parse_kpi, preset_kpis
from diag.units import duration_arg, parse_duration
from probes.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

SHAPES = ("load", "stress", "soak", "spike", "step")


@dataclass(frozen=True)
class RunConfig:
    targets: tuple[str, ...] = ()
    dsn: str | None = None
    host: str | None = None  # the HTTP service the load hits
    agents_host: str | None = None  # Archon's agents service, for the scenario
    scenario: str | None = "archon"
    locustfile: Path | None = None
    no_load: bool = False
    users: int = 10
    spawn_rate: float = 5.0
    shape: str = "load"
    duration: float = 60.0
    warmup: float = 10.0
    out: Path | None = None
    headless: bool = False
    fail_on: tuple[str, ...] = ()
    baseline: Path | None = None
    rate: int = 100  # py-spy Hz
    pyspy_window: float = 5.0
    nonblocking: bool = True  # py-spy never pauses targets; --blocking pauses them per sample
    memray: bool = True
    memray_window: float = 6.0  # memray costs ~2x while attached: keep windows short
    ash_interval: float = 0.25
    faults: str | None = None  # demo only: which faults were planted (for the report)
    kpis: tuple[KpiSpec, ...] = ()  # KPI queries sampled over the run (needs dsn)

    def validate(self) -> RunConfig:
        if self.users < 1:
            raise UsageError("--users must be at least 1")
        if self.spawn_rate <= 0:
            raise UsageError("--spawn-rate must be positive")
        if self.duration <= 0:
            raise UsageError("--duration must be positive")
        if self.warmup < 0:
            raise UsageError("--warmup cannot be negative")
        if self.shape not in SHAPES:
            raise UsageError(f"unknown --shape {self.shape!r} (one of {', '.join(SHAPES)})")
        if not 1 <= self.rate <= 1000:
            raise UsageError("--rate must be between 1 and 1000 Hz")
        if not self.no_load and self.host is None:
            raise UsageError("no --host to load: pass --host URL, or --no-load")
        if self.locustfile is not None and not self.locustfile.is_file():
            raise UsageError(f"locustfile {self.locustfile} does not exist")
        if not self.targets and not self.dsn and self.no_load:
            raise UsageError("nothing to do: give --target, --dsn or a load (--host)")
        if self.kpis and not self.dsn:
            raise UsageError("KPI queries need the database: pass --dsn (or drop the KPIs)")
        check_unique(self.kpis)
        return self

    def to_json(self) -> dict[str, Any]:
        from probes.redact import redact_dsn

        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [v.to_json() if isinstance(v, KpiSpec) else v for v in value]
            data[f.name] = value
        if self.dsn:
            data["dsn"] = redact_dsn(self.dsn)
        return data


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``run`` and ``tui`` (the contract)."""
    add = parser.add_argument
    add("--config", type=Path, help="TOML file with the same option names")
    add(
        "--target",
        action="append",
        dest="targets",
        metavar="SPEC",
        help="process to profile: PID, match:REGEX, port:N, preset:archon, launch:CMD, scalene:CMD",
    )
    add("--dsn", help="PostgreSQL the service uses (postgresql://user@host:port/db)")
    add("--host", help="base URL the load hits, e.g. http://127.0.0.1:8181")
    add("--agents-host", help="agents service URL for the Archon scenario")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scenario", choices=["archon"], help="shipped load scenario")
    group.add_argument("--locustfile", type=Path, help="your own locustfile")
    group.add_argument("--no-load", action="store_true", default=None, help="profile only")
    add("--users", type=int, help="peak concurrent users (default 10)")
    add("--spawn-rate", type=float, help="users started per second (default 5)")
    add("--shape", choices=SHAPES, help="load shape (default load)")
    add("--duration", type=duration_arg, help="measured window (default 60s)")
    add("--warmup", type=duration_arg, help="warm-up before measuring (default 10s)")
    add("--out", type=Path, help="bundle directory (default runs/<UTC timestamp>)")
    add("--headless", action="store_true", default=None, help="no TUI; progress on stderr")
    add(
        "--fail-on",
        action="append",
        dest="fail_on",
        metavar="EXPR",
        help="gate, e.g. p95>500ms, error_rate>1%%, leak, severity>=critical, regression>20%%",
    )
    add("--baseline", type=Path, help="bundle to compare against (regression gates)")
    add("--rate", type=int, help="py-spy sampling rate in Hz (default 100)")
    add(
        "--blocking",
        dest="nonblocking",
        action="store_false",
        default=None,
        help="py-spy pauses targets for each sample: whole stacks, but a CPU-bound target "
        "loses ~14 %% of its throughput instead of ~2 %%",
    )
    add(
        "--no-memray",
        dest="memray",
        action="store_false",
        default=None,
        help="skip memray attach windows",
    )
    add(
        "--kpi-preset",
        choices=sorted(PRESETS),
        help="sample a shipped set of KPI queries (archon: agent-job queue, LLM latency)",
    )


_ALIASES = {
    "target": "targets",
    "fail-on": "fail_on",
    "spawn-rate": "spawn_rate",
    "no-load": "no_load",
    "agents-host": "agents_host",
    "kpi": "kpis",
    "kpi-preset": "kpi_preset",
}
_DURATIONS = {"duration", "warmup", "pyspy_window", "memray_window", "ash_interval"}


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name: f for f in fields(RunConfig)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key.replace("-", "_"))
        if name == "kpi_preset":
            if not isinstance(value, str) or value not in PRESETS:
                raise UsageError(
                    f"config file {path}: unknown kpi_preset {value!r} "
                    f"(one of {', '.join(sorted(PRESETS))})"
                )
            out[name] = value
            continue
        if name not in known:
            raise UsageError(f"config file {path}: unknown option {key!r}")
        if name == "kpis":
            if not isinstance(value, list):
                raise UsageError(
                    f"config file {path}: write KPIs as [[kpi]] tables (name, query, "
                    "interval, unit)"
                )
            value = tuple(
                parse_kpi(entry, f"config file {path}, [[kpi]] #{i}")
                for i, entry in enumerate(value, 1)
            )
        if name in _DURATIONS and isinstance(value, str):
            value = parse_duration(value)
        if name in ("targets", "fail_on"):
            value = tuple([value] if isinstance(value, str) else value)
        if name in ("locustfile", "out", "baseline") and value is not None:
            value = Path(value)
        out[name] = value
    return out


def from_args(args: argparse.Namespace, **defaults: Any) -> RunConfig:
    """Defaults < config file < command line."""
    values: dict[str, Any] = dict(defaults)
    if getattr(args, "config", None):
        values.update(_from_toml(args.config))
    for f in fields(RunConfig):
        given = getattr(args, f.name, None)
        if given is None:
            continue
        values[f.name] = tuple(given) if isinstance(given, list) else given
    if getattr(args, "locustfile", None) is not None:
        values["scenario"] = None
    preset = getattr(args, "kpi_preset", None) or values.pop("kpi_preset", None)
    values.pop("kpi_preset", None)
    if preset:
        values["kpis"] = preset_kpis(str(preset)) + tuple(values.get("kpis") or ())
    try:
        config = RunConfig(**values)
    except TypeError as exc:
        raise UsageError(f"invalid configuration: {exc}") from None
    return config.validate()
