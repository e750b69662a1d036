"""Errors that the CLI turns into one clear line and an exit code.

Exit codes (every command): 0 ok, 1 failed, 2 bad input, 130 interrupted, 3 internal crash.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CRASH = 3
EXIT_INTERRUPTED = 130


class FacesleuthError(Exception):
    """Base class: an expected failure with a message fit for one line."""

    exit_code = EXIT_FAILED


class UserError(FacesleuthError):
    """Bad input from the user: malformed YAML, a missing file, an unknown name, a bad value."""

    exit_code = EXIT_BAD_INPUT


class NodeFailed(FacesleuthError):
    """A node cannot go on (its durable store keeps failing, every message fails it the same way). Raised
    from process(), it ends the node process (exit 1, then the restart policy), where any other error is
    counted against one message and the stream goes on."""

    exit_code = EXIT_FAILED


class Unavailable(FacesleuthError):
    """A capability this machine lacks (CUDA, NVOF, TensorRT, GStreamer, ...).

    The message says what is missing and what to do, in one line.
    """

    exit_code = EXIT_FAILED
