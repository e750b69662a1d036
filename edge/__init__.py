"""FaceSleuth Edge: real-time micro-expression recognition for edge devices.

The Python API (edge.api; docs/analyze.md), imported only when first used, so `import edge` stays cheap:

    import edge
    result = edge.analyze_video("clip.mp4")          # events (and per-frame rows) of a recorded video
    for ev in edge.subscribe():                       # a running graph's live events, gaps repaired
        print(ev.label, ev.confidence)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["Event", "Result", "analyze_video", "subscribe", "__version__"]

if TYPE_CHECKING:
    from edge.api import Event, Result


def analyze_video(path, **params: Any) -> Result:
    """A video through configs/video.yaml's nodes in this process: edge.api.analyze_video."""
    from edge.api import analyze_video as run

    return run(path, **params)


def subscribe(endpoint: str | None = None, since: int | None = None, **options: Any):
    """A running graph's events as an iterator of Event: edge.api.subscribe."""
    from edge.api import subscribe as run

    return run(endpoint, since, **options)


def __getattr__(name: str) -> Any:
    if name in ("Event", "Result"):
        from edge import api

        return getattr(api, name)
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
