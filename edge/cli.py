"""The `facesleuth` command: the parser and dispatch, nothing else.

Each subcommand lives in the module that owns its work. That module defines

    def add_arguments(parser: argparse.ArgumentParser) -> None
    def main(args: argparse.Namespace) -> int

and is imported only when its command runs, so `facesleuth graph validate` never pays for torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge import __version__
from edge.errors import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_FAILED, EXIT_INTERRUPTED, FacesleuthError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("edge.runtime.supervisor", "run a node graph (YAML) until it ends or is stopped"),
    "graph": ("edge.runtime.graph", "validate or show a node graph"),
    "stats": ("edge.runtime.stats", "live per-node metrics of a running graph"),
    "subscribe": ("edge.runtime.subscribe", "print any stream's messages as JSON lines"),
    "keys": ("edge.runtime.keys", "CURVE keys: generate a key directory, allow a client's public key"),
    "doctor": ("edge.doctor", "what this machine offers the pipeline"),
    "bench": ("edge.bench", "benchmarks: transport, classifier, flow, face, pipeline, spotting"),
    "export": ("edge.model.export_cli", "export a model file to TorchScript, ONNX or TensorRT"),
    "calib": ("calib.cli", "calibration: INT8 for TensorRT, spotting thresholds"),
    "synth": ("edge.data.synth_cli", "generate synthetic micro-expression samples and clips"),
    "train": ("edge.train", "train the SOA classifier"),
    "eval": ("edge.evaluate", "evaluate under LOSO / LODO / held-out-domain protocols"),
    "events": ("edge.events.cli", "tail a live event stream or query the event log"),
    "view": ("edge.debug_view", "write an annotated debug video / PNG strip of what the nodes see"),
    "analyze": ("edge.analyze", "videos through configs/video.yaml: events and per-frame CSVs, annotated video, timeline"),
}

# (command, first positional) -> (module, one-line help): a mode of a command with a parser of its own,
# dispatched by that word (`facesleuth eval spotting ...`), so it pays for none of the command's imports.
SUBCOMMANDS: dict[tuple[str, str], tuple[str, str]] = {
    ("eval", "spotting"): ("edge.spotting_eval.cli", "spotting on the long-video datasets (MEGC rule)"),
}

log = logging.getLogger("facesleuth")
VERBOSE_FLAGS = ("-v", "--verbose")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default in its help, unless the help names it already or there is none to show
    (None, False, "", an empty list of a repeatable option, a store_const pair)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        empty = isinstance(action.default, str | list | tuple) and not action.default  # `--set` given no times, ""
        if ("default" in text or empty or action.default in (None, False, argparse.SUPPRESS)
                or (not action.option_strings and action.nargs not in ("?", "*"))
                or isinstance(action, argparse._StoreConstAction)):
            return text
        shown = ",".join(map(str, action.default)) if isinstance(action.default, list | tuple) else "%(default)s"
        return f"{text} (default {shown})"


class Parser(argparse.ArgumentParser):
    """argparse with one dialect: defaults in --help, and a bad argument is ONE line on stderr, exit 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        # argparse prints the whole usage first; the line that says what is wrong is what people read.
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _top_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="facesleuth",
        description="FaceSleuth Edge: real-time micro-expression recognition for edge devices.",
    )
    p.add_argument("--version", action="version", version=f"facesleuth-edge {__version__}")
    p.add_argument(*VERBOSE_FLAGS, action="store_true", help="debug logging (anywhere on the line)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def _pop_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """`argv` without -v/--verbose (before a `--`), and whether one was there: `-v` goes anywhere."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a not in VERBOSE_FLAGS]
    return kept + argv[end:], len(kept) < end


def main(argv: Sequence[str] | None = None) -> int:
    argv, verbose = _pop_verbose(list(sys.argv[1:] if argv is None else argv))
    top = _top_parser()
    # Phase 1: find the command without importing anything heavy.
    ns, rest = top.parse_known_args(argv)
    ns.verbose = verbose
    if ns.command is None:
        top.print_help()
        return EXIT_BAD_INPUT if argv else 0
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        datefmt="%H:%M:%S",
    )
    module_name, help_ = COMMANDS[ns.command]
    name = f"facesleuth {ns.command}"
    if rest and (ns.command, rest[0]) in SUBCOMMANDS:
        module_name, help_ = SUBCOMMANDS[ns.command, rest[0]]
        name, rest = f"{name} {rest[0]}", rest[1:]
    # Phase 2: the command's own parser, from the module that owns the work.
    module = importlib.import_module(module_name)
    parser = Parser(prog=name, description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.verbose = ns.verbose
    try:
        return int(module.main(args) or 0)
    except FacesleuthError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # the file system said no (a path the user gave, a full disk): say so, not "crash"
        log.debug("os error", exc_info=True)
        where = f"{e.filename}: " if e.filename else ""
        print(f"{name}: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # a crash: one line on stderr, the traceback only with -v
        log.debug("crash", exc_info=True)
        print(f"{name}: internal error: {type(e).__name__}: {e} (run with -v for details)",
              file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
