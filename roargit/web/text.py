"""The one way recorded text reaches a page: control characters made visible, then HTML
escaped (quotes included, so the result is safe in an attribute as well as in text)."""

from __future__ import annotations

import html
from urllib.parse import quote

from roargit.cli.output import human_size as _cli_size
from roargit.cli.output import short as short
from roargit.pathguard import escape as _inert


def esc(text: object) -> str:
    """`text` for HTML: a control character (a carriage return, an escape sequence, a bidi
    override) shows as `\\r`, `\\x1b`, `\\u202e`; `<`, `&` and quotes as entities."""
    return html.escape(_inert(str(text)), quote=True)


def q(text: str) -> str:
    """`text` as one URL query value or path segment."""
    return quote(text, safe="")


def human_size(n: int | None) -> str:
    """A size as the command line shows it; "?" where the record gives none."""
    return "?" if n is None else _cli_size(n)
