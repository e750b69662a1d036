"""Progress for long work (training, flow precomputation, calibration, synthesis): one line on stderr.

On a terminal the line is redrawn in place; in a log (CI, systemd) a line is printed every ~10 %.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    """`with Progress(total, "flow") as p: ... p.update(1, loss=0.3)`."""

    def __init__(self, total: int | None, desc: str, stream=None, enabled: bool = True) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_decile = -1
        self._printed_n = -1
        self._info = ""

    def update(self, n: int = 1, **info: object) -> None:
        self.n += n
        if info:
            self._info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        self._draw()

    def _line(self) -> str:
        dt = time.monotonic() - self.t0
        rate = self.n / dt if dt > 0 else 0.0
        if self.total:
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            head = f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.0f}%)"
            tail = f"{rate:.1f}/s eta {eta:.0f}s"
        else:
            head, tail = f"{self.desc}: {self.n}", f"{rate:.1f}/s"
        return f"{head} {tail} {self._info}".rstrip()

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K" + self._line() + ("\n" if final else ""))
            self.stream.flush()
            return
        decile = int(10 * self.n / self.total) if self.total else self.n // 100
        if (final and self.n != self._printed_n) or (not final and decile != self._last_decile):
            self._last_decile, self._printed_n = decile, self.n
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        self._draw(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress line: `for x in track(xs, "synth"): ...`."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, enabled=enabled) as p:
        for x in items:
            yield x
            p.update(1)
