"""The ``archon-diag`` command line: one module per subcommand in ``diag.commands``.

Each command module exposes ``configure(parser)`` (its arguments) and ``run(args) -> int``.
A subcommand whose module does not exist yet is listed but answers "not built yet" (exit 2).
``main(argv) -> int`` is the only place that turns a ``DiagError`` into one line on stderr
and the contract's exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from diag import __version__
from probes.errors import DiagError

# name -> one-line help. The order is the order of --help.
COMMANDS: dict[str, str] = {
    "demo": "run the full diagnosis against the built-in Archon stand-in",
    "run": "one session: load + profilers + database probes -> one ranked report",
    "tui": "the live dashboard over a session (same options as run)",
    "load": "background Locust load only, with live stats and final figures",
    "profile": "profilers only: CPU hotspots, wall-time breakdown, leak suspects",
    "db": "database only: statements, waits, health, plans",
    "explain": "plan one statement (by queryid or text) with tuning tips",
    "report": "re-render a run bundle offline (term, md, json, html, junit)",
    "compare": "diff two bundles: what got better or worse",
    "doctor": "check every prerequisite and print the exact fix",
    "pg": "the embedded throwaway PostgreSQL: up, down, status",
    "demo-target": "the Archon stand-in (PostgreSQL + services): up, down, status",
}


def _module_name(command: str) -> str:
    return "diag.commands." + command.replace("-", "_")


def _load(command: str) -> ModuleType | None:
    name = _module_name(command)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (the prog, the problem, where to look), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="archon-diag",
        description="Profiling and PostgreSQL diagnostics for Python services under load.",
    )
    parser.add_argument("--version", action="version", version=f"archon-diag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command, help_line in COMMANDS.items():
        module = _load(command)
        cmd_parser = sub.add_parser(command, help=help_line, description=help_line)
        if module is None:
            cmd_parser.set_defaults(_run=_not_built(command))
        else:
            module.configure(cmd_parser)
            cmd_parser.set_defaults(_run=module.run)
    return parser


def _not_built(command: str):  # type: ignore[no-untyped-def]
    def run(_args: argparse.Namespace) -> int:
        raise DiagError("not built yet in this version")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 gate failed, 2 usage, 3 prerequisite)."""
    parser = build_parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = args_list[0] if args_list else ""
    if first in COMMANDS and _load(first) is None and not {"-h", "--help"} & set(args_list):
        print(f"archon-diag {first}: not built yet in this version", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse already printed one usage line
        return int(exc.code) if isinstance(exc.code, int) else 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args))
    except DiagError as exc:
        print(f"archon-diag {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"archon-diag {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script entry point."""
    # A closed pipe (``archon-diag ... | head``) is not an error worth a traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
