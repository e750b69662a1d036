"""One way to report a benchmark: an aligned text table on stdout plus the same rows as JSON."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts -> a plain aligned table; floats with 3 significant decimals."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "" if v is None else str(v)

    body = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    out = [line, sep] + ["  ".join(v.rjust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(out)


def emit(title: str, rows: Sequence[dict[str, Any]], json_path: str | None = None,
         extra: dict[str, Any] | None = None, columns: Sequence[str] | None = None,
         json_extra: dict[str, Any] | None = None) -> None:
    """Print `title` and the table; write {title, machine, rows, **extra, **json_extra} to json_path if
    given (json_extra: details for the file only)."""
    print(f"== {title} ==")
    print(format_table(rows, columns))
    if extra:
        for k, v in extra.items():
            print(f"{k}: {v}")
    sys.stdout.flush()
    if json_path:
        doc = {"title": title, "machine": machine(), "rows": list(rows), **(extra or {}), **(json_extra or {})}
        Path(json_path).write_text(json.dumps(doc, indent=2, default=str))
