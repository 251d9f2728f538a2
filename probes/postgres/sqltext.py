"""SQL text helpers: literal redaction, formatting, placeholder counting.

pg_stat_statements text is already normalized (constants replaced by ``$n``); anything
else (pg_stat_activity, plan conditions, auto_explain's Query Text) may hold literals
and goes through :func:`redact_literals` before it is shown or stored.
"""

from __future__ import annotations

import re

import sqlparse
from sqlparse import tokens as T

_PLACEHOLDER = re.compile(r"\$(\d+)")
# Dollar-quoted strings ($$...$$, $tag$...$tag$) are literals sqlparse may not mark.
_DOLLAR_QUOTED = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*|)\$.*?\$\1\$", re.DOTALL)
REDACTED = "$?"


def redact_literals(text: str) -> str:
    """``text`` with every string, number and bit literal replaced by ``$?``.

    Works on truncated and invalid SQL (a tokenizer, not a parser); ``$n`` placeholders,
    identifiers, keywords and type casts are kept.

    >>> redact_literals("select * from t where a = 'x''y' and b > 42 and c = $1")
    'select * from t where a = $? and b > $? and c = $1'
    >>> redact_literals("(status = 'todo'::text)")
    '(status = $?::text)'
    """
    text = _DOLLAR_QUOTED.sub(REDACTED, text)
    out: list[str] = []
    for token in sqlparse.parse(text)[0].flatten() if text.strip() else []:  # type: ignore[no-untyped-call]
        ttype = token.ttype
        quoted_symbol = ttype in T.Literal.String.Symbol and token.value.startswith("'")
        if ttype in T.Literal.String.Single or ttype in T.Literal.Number or quoted_symbol:
            out.append(REDACTED)
        else:
            out.append(token.value)
    redacted = "".join(out) if out else text
    # An unterminated quote at the cut-off end of a truncated text: drop the rest.
    if redacted.count("'") % 2 == 1:
        redacted = redacted[: redacted.rfind("'")] + REDACTED
    return redacted


def format_sql(text: str) -> str:
    """Readable multi-line SQL (keywords upper-cased, reindented) for reports."""
    return str(sqlparse.format(text, reindent=True, keyword_case="upper")).strip()


def one_line(text: str, limit: int = 160) -> str:
    """Whitespace collapsed, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def placeholders(text: str) -> int:
    """The highest ``$n`` placeholder number in ``text`` (0 when none).

    >>> placeholders("select $1, $3 from t"), placeholders("select 1")
    (3, 0)
    """
    return max((int(m.group(1)) for m in _PLACEHOLDER.finditer(_strip_strings(text))), default=0)


def _strip_strings(text: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", text)
