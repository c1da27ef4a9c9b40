"""Marked blocks in Markdown pages, rewritten from results files by the scripts/make_*_docs.py scripts.

A block is ``<!-- PREFIX:NAME -->...<!-- /PREFIX:NAME -->``; everything between the markers is generated.
"""

from __future__ import annotations

import re


def render(text: str, prefix: str, values: dict[str, str]) -> str:
    """``text`` with every ``prefix`` block replaced by ``values[name]`` (an unknown name is an error)."""

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in values:
            raise SystemExit(f"unknown {prefix} block {name!r}")
        inner = values[name]
        sep = "\n" if "\n" in inner else ""
        return f"<!-- {prefix}:{name} -->{sep}{inner}{sep}<!-- /{prefix}:{name} -->"

    return re.sub(rf"<!-- {prefix}:(\w+) -->(.*?)<!-- /{prefix}:\1 -->", sub, text, flags=re.S)
