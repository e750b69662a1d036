"""`--json [FILE]`: one meaning on every command that has it (README, "Commands").

    --json          JSON on stdout in place of the text; stdout carries nothing else, so it pipes into
    --json -        jq or a program (a report's table, where there is one besides, goes to stderr)
    --json FILE     the text on stdout as without the option, and the JSON written to FILE as well

A command that streams records (stats, subscribe, events tail / query) writes one JSON object per line;
a command that reports once (doctor, bench) writes one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edge.errors import UserError

STDOUT = "-"


def add_json_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """`--json [FILE]` on `parser`; `what` names what is written ("one JSON line per snapshot")."""
    parser.add_argument("--json", nargs="?", const=STDOUT, metavar="FILE",
                        help=f"{what}: on stdout instead of the text, or with FILE to FILE besides the text")


def _checked(target: str) -> Path:
    """The FILE of `--json FILE`, refused (UserError) before any work where it cannot be written."""
    if "://" in target:  # `--json tcp://...`: the option took the endpoint meant for the positional argument
        raise UserError(f"--json {target}: looks like an endpoint, not a file; put --json after the positional "
                        "arguments, or give its FILE (- for stdout)")
    path = Path(target)
    if path.is_dir():
        raise UserError(f"--json {path}: is a directory")
    if not path.parent.is_dir():
        raise UserError(f"--json {path}: its directory does not exist")
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK):
        raise UserError(f"--json {path}: not writable")
    return path


class JsonOut:
    """Where `--json` sends JSON, from the option's value (None: the option was not given).

    `text`: whether the command prints its usual text on stdout; `enabled`: whether any JSON is wanted.
    Stream records with `line(obj)`; write one report with `document(obj)`."""

    def __init__(self, target: str | None) -> None:
        self.target = target
        self.path = _checked(target) if target not in (None, STDOUT) else None
        self._lines: IO[str] | None = None

    @property
    def enabled(self) -> bool:
        return self.target is not None

    @property
    def to_stdout(self) -> bool:
        return self.target == STDOUT

    @property
    def text(self) -> bool:
        return not self.to_stdout

    def line(self, obj: Any) -> None:
        """One record as one JSON line (flushed: a reader sees it at once)."""
        if not self.enabled:
            return
        if self.to_stdout:
            out = sys.stdout
        else:
            if self._lines is None:
                self._lines = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            out = self._lines
        out.write(json.dumps(obj, default=str) + "\n")
        out.flush()

    def document(self, obj: Any) -> None:
        """The whole report as one indented JSON document (a file is replaced only once it is complete)."""
        if not self.enabled:
            return
        text = json.dumps(obj, indent=2, default=str) + "\n"
        if self.to_stdout:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            tmp = self.path.with_name(self.path.name + ".part")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self.path)

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None

    def __enter__(self) -> JsonOut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def text_to_stderr() -> Iterator[None]:
    """Send what is printed on stdout meanwhile, by this process and by the processes it starts, to stderr
    (a report whose JSON goes on stdout keeps its table in view, out of the JSON's way)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)  # child processes inherit file descriptor 1
        with contextlib.redirect_stdout(sys.stderr):  # and Python's sys.stdout need not be descriptor 1
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
