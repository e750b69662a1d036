"""Optional extras a command needs, checked when it starts (not after an hour of work, at the plot)."""

from __future__ import annotations

import importlib.util

from edge.errors import Unavailable


def require(command: str, extra: str, *modules: str) -> None:
    """Unavailable (one line with the install command) unless every one of `modules` can be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Unavailable(f"{command} needs {', '.join(missing)} (the '{extra}' extra): "
                          f"pip install 'facesleuth-edge[{extra}]'")
