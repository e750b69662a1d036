"""One way to report a benchmark: an aligned text table on stdout plus the same rows as JSON."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.table import format_table


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


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
