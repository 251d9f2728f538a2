"""The one SQL loader: every query the tool runs is a ``.sql`` file, loaded by name.

In a source checkout (and an editable install) the files are in the top-level ``sql/``
folder; in a wheel the build maps that folder to ``probes/sql/``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from probes.errors import DiagError

_HERE = Path(__file__).resolve().parent
_CANDIDATES = (_HERE / "sql", _HERE.parent / "sql")


def sql_dir() -> Path:
    """The folder holding the ``.sql`` files."""
    for candidate in _CANDIDATES:
        if candidate.is_dir():
            return candidate
    raise DiagError("archon-diag is installed without its sql/ folder; reinstall the package")


@cache
def load_sql(name: str) -> str:
    """The text of ``sql/<name>.sql`` (cached; a missing name is a bug, not user input)."""
    path = sql_dir() / f"{name}.sql"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise KeyError(f"no SQL file named {name!r} in {path.parent}") from None


def available() -> list[str]:
    """Names of every shipped query."""
    return sorted(p.stem for p in sql_dir().glob("*.sql"))
