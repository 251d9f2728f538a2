"""The exception tree every layer raises for *expected* failures.

    DiagError                 exit 2, base class
    ├── UsageError            exit 2, bad arguments or configuration
    ├── PrerequisiteError     exit 3, missing tool/permission/extension, target gone
    └── GateFailed            exit 1, a --fail-on gate failed

``diag.cli.main`` catches ``DiagError`` and prints ``str(error)`` as one line; anything
else is a bug and keeps its traceback. The tree lives in ``probes`` (the bottom layer)
so probes can raise it without importing ``diag``.
"""

from __future__ import annotations


class DiagError(Exception):
    """An expected failure: one line for the user, an exit code for the shell."""

    exit_code = 2


class UsageError(DiagError):
    """Bad command-line input or configuration."""

    exit_code = 2


class PrerequisiteError(DiagError):
    """Something the run needs is missing: a tool, a permission, an extension, a target."""

    exit_code = 3


class GateFailed(DiagError):
    """A ``--fail-on`` gate failed."""

    exit_code = 1
