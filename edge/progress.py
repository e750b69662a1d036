"""Progress for long work (training, evaluation, flow precomputation, calibration, synthesis), on stderr.

Built on tqdm. On a terminal each bar is redrawn in place at most every MIN_INTERVAL_S, with its rate
and ETA; bars opened inside an open bar nest below it (`eval`: the folds, then each fold's epochs, then
each epoch's batches), and an inner bar clears its line when it is done. Log lines printed meanwhile go
above the bars instead of through them.

In a log (CI, systemd, a pipe) there are no redraws: the outermost bar prints one line every ~10 % (and
its last), and bars nested in it print nothing (the outer line and the commands' own log lines carry the
story; ten lines per epoch would bury it).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

MIN_INTERVAL_S = 0.2  # terminal redraws at most this often (a batch loop updates thousands of times)
# The ETA from the mean rate since the start where there are few steps (folds, epochs: one slow step
# would swing an exponential average), from a moving average where there are many (batches, frames).
FEW_STEPS = 100
SMOOTHING = 0.3
# The log line: no bar glyphs (they mean nothing in a file), the same numbers as the terminal's.
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LOG_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"

_open: list[Progress] = []  # the bars open now, outermost first (their depth is their index)


def _format(info: dict[str, object]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


class Progress:
    """`with Progress(total, "flow") as p: ... p.update(1, loss=0.3)`; `total` None: a count without ETA."""

    def __init__(self, total: int | None, desc: str, stream: IO[str] | None = None, enabled: bool = True,
                 initial: int = 0) -> None:
        # initial: done before this run (a resumed training): counted, but not in the rate and ETA
        self.total, self.desc, self.n, self.initial = total, desc, initial, initial
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self.depth = len(_open)
        self._info: dict[str, object] = {}
        self._last_decile = -1
        self._printed_n = -1
        self._bar: tqdm | None = None
        self._logs = contextlib.ExitStack()
        self._closed = False
        if not enabled:
            return
        _open.append(self)
        if self.tty:
            if self.depth == 0:  # log records would tear the bars: tqdm prints them above instead
                from tqdm.contrib.logging import logging_redirect_tqdm

                self._logs.enter_context(logging_redirect_tqdm())
            self._bar = tqdm(total=total, desc=desc, file=self.stream, position=self.depth,
                             initial=initial, leave=self.depth == 0, mininterval=MIN_INTERVAL_S, dynamic_ncols=True,
                             smoothing=0.0 if total is not None and total <= FEW_STEPS else SMOOTHING)

    def update(self, n: int = 1, **info: object) -> None:
        """`n` more done; `info` (loss=0.31, fold="s03") is shown after the numbers until replaced."""
        self.n += n
        if info:
            self._info = info
        if not self.enabled:
            return
        if self._bar is not None:
            if info:
                self._bar.set_postfix_str(_format(info), refresh=False)
            self._bar.update(n)  # tqdm redraws only when MIN_INTERVAL_S has passed
        else:
            self._log_line()

    def line(self) -> str:
        """The progress as one line of text (as a log shows it)."""
        return tqdm.format_meter(self.n, self.total, time.monotonic() - self.t0, prefix=self.desc,
                                 bar_format=LOG_FORMAT if self.total else LOG_FORMAT_NO_TOTAL,
                                 postfix=_format(self._info) or None, initial=self.initial)

    def _log_line(self, final: bool = False) -> None:
        if self.depth > 0:
            return
        decile = int(10 * self.n / self.total) if self.total else self.n // 100
        if (final and self.n != self._printed_n) or (not final and decile != self._last_decile):
            self._last_decile, self._printed_n = decile, self.n
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._log_line(final=True)
        self._logs.close()
        if self in _open:
            _open.remove(self)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar: `for x in track(xs, "synth"): ...`."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, enabled=enabled) as p:
        for x in items:
            yield x
            p.update(1)
