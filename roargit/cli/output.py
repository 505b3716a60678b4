"""Rendering helpers shared by commands: JSON for scripts, short text for people."""

from __future__ import annotations

import sys
from typing import Any


def emit_json(value: Any) -> None:
    import json

    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, sort_keys=False)
    sys.stdout.write("\n")


def say(text: str = "") -> None:
    print(text)


def warn(text: str) -> None:
    print(f"roar: {text}", file=sys.stderr)


def short(hexid: str, n: int = 12) -> str:
    return hexid[:n]


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_duration(ns: int) -> str:
    s = ns / 1e9
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60)} s"
