"""The one way recorded text reaches a page: control characters made visible, then HTML
escaped (quotes included, so the result is safe in an attribute as well as in text)."""

from __future__ import annotations

import html
from urllib.parse import quote

from roargit.pathguard import escape as _inert


def esc(text: object) -> str:
    """`text` for HTML: a control character (a carriage return, an escape sequence, a bidi
    override) shows as `\\r`, `\\x1b`, `\\u202e`; `<`, `&` and quotes as entities."""
    return html.escape(_inert(str(text)), quote=True)


def q(text: str) -> str:
    """`text` as one URL query value or path segment."""
    return quote(text, safe="")


def short(hexid: str, n: int = 12) -> str:
    return hexid[:n]


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
