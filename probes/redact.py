"""Redaction of secrets (DSN passwords, tokens) before anything is printed or stored."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_TOKEN_KEYS = re.compile(
    r"(?i)\b([\w-]*(?:token|secret|api[_-]?key|password|passwd)[\w-]*)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (URL or key=value form)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password is not None:
            user = parts.username or ""
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            netloc = f"{user}:***@{host}"
            dsn = urlunsplit(parts._replace(netloc=netloc))
        return re.sub(r"(?i)(password=)[^&]*", r"\1***", dsn)
    return _KV_PASSWORD.sub(r"\1***", dsn)


def redact_text(text: str) -> str:
    """Free text with ``token=...``-style secrets and URL passwords masked."""
    text = re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)
    return _TOKEN_KEYS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
