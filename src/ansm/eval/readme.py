"""Write generated tables into README.md between ``<!-- ansm:NAME -->`` and ``<!-- /ansm:NAME -->`` markers.

Results tables in the README are never typed by hand: a script measures, formats the table with
:func:`markdown_table`, and calls :func:`update_readme_section`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

from ansm.errors import ConfigError
from ansm.utils import write_text_atomic


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def update_readme_section(name: str, content: str, readme: str | os.PathLike = "README.md") -> None:
    """Replace the text between the markers for ``name`` (which must already exist in the README)."""
    path = Path(readme)
    text = path.read_text()
    start, end = f"<!-- ansm:{name} -->", f"<!-- /ansm:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ConfigError(f"{path} has no section markers {start} ... {end}")
    write_text_atomic(path, pattern.sub(lambda _m: f"{start}\n{content.strip()}\n{end}", text))
