"""Pieces both stand-in services share: settings from argv/env, JSON-ready rows, serving.

The services are started as ``python -m diag.demo.server`` / ``python -m diag.demo.agents``
(recognisable command lines for profilers); the database DSN comes from the environment
(``ARCHON_DEMO_DSN``) so it never shows in ``ps``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from diag.demo.faults import parse_faults

DSN_ENV = "ARCHON_DEMO_DSN"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def base_parser(description: str, default_port: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address only")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--faults", default=None, help="all|none|a,b (default $ARCHON_DEMO_FAULTS)")
    parser.add_argument("--dsn", default=None, help=f"database DSN (default ${DSN_ENV})")
    return parser


def resolve_common(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, str]:
    """(dsn, host) after checks; exits with a one-line usage error otherwise."""
    dsn = args.dsn or os.environ.get(DSN_ENV)
    if not dsn:
        parser.error(f"no database: pass --dsn or set {DSN_ENV}")
    if not is_loopback(args.host):
        parser.error(f"--host {args.host} is not a loopback address; the stand-in listens locally")
    args.faults = parse_faults(args.faults)
    return dsn, args.host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def jsonable(value: Any) -> Any:
    """Database values -> JSON-ready values (uuid/datetime/decimal to str/float)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: jsonable(value) for key, value in row.items()}


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` on uvicorn in this process (one worker, no reload, no access log)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
